//! Entry point of the Wombat daemon, shared by the `wombat-server` binary and
//! `wombat serve`: reads settings, validates them before binding anything,
//! composes workspace, LLM router and backend client, optionally starts the
//! embedded reference backend, and serves until SIGINT/SIGTERM.
//!
//! This is binary glue: it is the one place that reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Format, Toml};
use tokio::net::TcpListener;
use wombat_controlplane::{ControlPlane, ControlPlaneConfig, JwtConfig};
use wombat_http::config::{
    ConfigError, DaemonConfig, Settings, get, parse_bool, settings_from_figment,
};
use wombat_http::{Backend, Daemon};
use wombat_llm::{Router, RouterConfig};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};
use wombat_workspace::{SkillEnv, Workspace, WorkspaceOptions};

/// Exit code for invalid configuration (`EX_CONFIG`-style, as RUNTIME.md asks).
pub const EXIT_CONFIG: u8 = 64;

/// Why the server did not run.
#[derive(Debug)]
pub enum RunError {
    /// A setting is invalid; the message names it. Exit code 64.
    Config(String),
    /// Anything else (port in use, database unusable...). Exit code 1.
    Other(anyhow::Error),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => EXIT_CONFIG,
            RunError::Other(_) => 1,
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Config(m) => f.write_str(m),
            RunError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        RunError::Config(e.to_string())
    }
}

/// Merges `wombat.toml` (optional, in the working directory), `.env` and
/// the process environment, environment last (it wins).
///
/// Only the TOML file goes through figment. Environment values are taken
/// verbatim: figment would parse them as TOML-like data, turning a key like
/// `0123` into `123` and rejecting unrelated variables shaped like arrays.
pub fn load_settings() -> Result<Settings, RunError> {
    // `.env` fills in variables the environment does not already set.
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            return Err(RunError::Config(format!("invalid .env file: {e}")));
        }
    }
    let mut settings = settings_from_figment(&Figment::new().merge(Toml::file("wombat.toml")))?;
    // Variables that are not valid UTF-8 cannot be Wombat settings; skip them.
    settings.extend(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    );
    Ok(settings)
}

/// Installs the tracing subscriber: human-readable by default, JSON with
/// `WOMBAT_LOG_FORMAT=json`, level from `RUST_LOG` (default `info`).
pub fn init_tracing(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if get(settings, "WOMBAT_LOG_FORMAT") == Some("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A subscriber may already be installed (tests, `wombat` CLI); keep it.
    let _ = result;
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Everything validated and built, nothing bound yet.
struct Plan {
    config: DaemonConfig,
    router: Router,
    workspace: Workspace,
    embedded: Option<EmbeddedPlan>,
}

struct EmbeddedPlan {
    port: u16,
    db: DbLocation,
    jwt: JwtConfig,
    internal_token: Option<String>,
}

fn plan(settings: &Settings) -> Result<Plan, RunError> {
    let config = DaemonConfig::from_settings(settings)?;
    let mut llm = RouterConfig::from_env_map(&|k: &str| settings.get(k).cloned())
        .map_err(|e| RunError::Config(e.to_string()))?;
    if let Some(path) = &config.pricing_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RunError::Config(format!(
                "invalid WOMBAT_PRICING_FILE: cannot read {}: {e}",
                path.display()
            ))
        })?;
        llm.pricing
            .merge_json(&text)
            .map_err(|e| RunError::Config(format!("invalid WOMBAT_PRICING_FILE: {e}")))?;
    }
    // One deadline for the whole request: the router's (retries, failover
    // and streaming included) is the daemon's request deadline.
    llm.deadline = config.request_timeout;
    let router = Router::new(llm).map_err(|e| RunError::Config(e.to_string()))?;
    let options = WorkspaceOptions {
        max_chars_per_file: config.max_chars_per_file,
        total_budget_chars: config.bootstrap_max_chars,
        skills_budget_chars: config.skills_max_chars,
        include_time_context: config.include_time_context,
        default_timezone: config.default_timezone.clone(),
        skill_env: SkillEnv::from_process(),
        state_dir: config.state_dir.clone(),
        ..WorkspaceOptions::default()
    };
    let workspace = Workspace::open(&config.workspace, options).map_err(|e| match e {
        wombat_workspace::Error::UnknownTimeZone { .. } => {
            RunError::Config(format!("invalid WOMBAT_DEFAULT_TIMEZONE: {e}"))
        }
        other => RunError::Other(other.into()),
    })?;

    let embedded_allowed = match get(settings, "WOMBAT_EMBEDDED_BACKEND") {
        None => true,
        Some(v) => parse_bool(v).map_err(|r| ConfigError::new("WOMBAT_EMBEDDED_BACKEND", r))?,
    };
    let embedded = if config.backend_url.is_none() && embedded_allowed {
        let secret = match &config.jwt_secret {
            Some(s) => s.expose().to_owned(),
            None => {
                let secret: String = std::iter::repeat_with(fastrand::alphanumeric)
                    .take(40)
                    .collect();
                tracing::warn!(
                    "AGENT_JWT_SECRET is not set: using a generated secret (dev only; set it for anything real)"
                );
                secret
            }
        };
        let jwt = JwtConfig::new(secret, config.jwt_algorithm)
            .map_err(|e| RunError::Config(e.to_string()))?;
        let port = match get(settings, "MC_LITE_PORT") {
            None => wombat_mc_lite::DEFAULT_PORT,
            Some(v) => v.parse::<u16>().map_err(|_| {
                ConfigError::new("MC_LITE_PORT", format!("{v:?} is not a port number"))
            })?,
        };
        let data_dir = PathBuf::from(get(settings, "WOMBAT_DATA_DIR").unwrap_or("./.wombat-data"));
        let db = match get(settings, "MC_LITE_DB") {
            Some(v) => DbLocation::parse(v),
            None => DbLocation::File(data_dir.join("mc-lite.db")),
        };
        Some(EmbeddedPlan {
            port,
            db,
            jwt,
            internal_token: get(settings, "INTERNAL_TOKEN").map(str::to_owned),
        })
    } else {
        None
    };
    Ok(Plan {
        config,
        router,
        workspace,
        embedded,
    })
}

fn backend_client(
    url: &str,
    jwt: JwtConfig,
    internal_token: Option<String>,
) -> Result<Backend, RunError> {
    let mut cp = ControlPlaneConfig::new(url, jwt);
    cp.internal_token = internal_token;
    // `/health?deep=true` allows the backend 5 s (API.md).
    cp.health_timeout = Duration::from_secs(5);
    let client =
        ControlPlane::new(cp).map_err(|e| RunError::Config(format!("invalid BACKEND_URL: {e}")))?;
    Ok(Backend {
        url: url.to_owned(),
        client,
    })
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let plan = plan(&settings)?;
    let config = plan.config.clone();

    let mut embedded: Option<RunningMcLite> = None;
    let backend = match (&config.backend_url, plan.embedded) {
        (Some(url), _) => {
            let secret = config.jwt_secret.as_ref().ok_or_else(|| {
                RunError::Config(
                    "invalid AGENT_JWT_SECRET: required when BACKEND_URL is set".to_owned(),
                )
            })?;
            let jwt = JwtConfig::new(secret.expose(), config.jwt_algorithm)
                .map_err(|e| RunError::Config(e.to_string()))?;
            Some(backend_client(
                url,
                jwt,
                get(&settings, "INTERNAL_TOKEN").map(str::to_owned),
            )?)
        }
        (None, Some(e)) => {
            let mut mc = McLiteConfig::new(e.jwt.clone(), e.db.clone());
            mc.internal_token = e.internal_token.clone();
            let bind = SocketAddr::from(([127, 0, 0, 1], e.port));
            let running = McLite::start(mc, bind)
                .await
                .with_context(|| format!("starting the embedded backend on {bind}"))
                .map_err(RunError::Other)?;
            let url = running.url();
            tracing::info!(%url, db = ?e.db, "embedded reference backend started (BACKEND_URL not set)");
            embedded = Some(running);
            Some(backend_client(&url, e.jwt, e.internal_token)?)
        }
        (None, None) => {
            tracing::warn!(
                "no backend: BACKEND_URL is not set and WOMBAT_EMBEDDED_BACKEND=false; agent endpoints answer 503"
            );
            None
        }
    };

    if config.daemon_api_key.is_none() {
        tracing::warn!(
            "AGENT_DAEMON_API_KEY is not set: the API is open to anyone who can reach it"
        );
    }
    let summary = plan.router.summary();
    if !summary
        .keys
        .get(&summary.default_provider)
        .copied()
        .unwrap_or(true)
    {
        let envs = summary.default_provider.api_key_envs().join(" or ");
        tracing::warn!(
            provider = summary.default_provider.as_str(),
            "no API key for the default LLM provider: set {envs}, or LLM_PROVIDER=echo for an offline round trip"
        );
    }

    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
        .map_err(RunError::Other)?;
    let local = listener
        .local_addr()
        .map_err(|e| RunError::Other(e.into()))?;
    print_banner(
        local,
        &config,
        backend.as_ref().map(|b| b.url.as_str()),
        &summary.model,
    );

    let daemon = Daemon::new(config, plan.workspace, plan.router, backend)
        .map_err(|e| RunError::Other(e.into()))?;
    daemon.serve(listener, shutdown).await;
    if let Some(mc) = embedded {
        mc.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(addr: SocketAddr, config: &DaemonConfig, backend: Option<&str>, model: &str) {
    let host = if addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        addr.ip().to_string()
    };
    let base = format!("http://{host}:{}", addr.port());
    let key_header = if config.daemon_api_key.is_some() {
        " -H 'X-Agent-Daemon-Key: <your AGENT_DAEMON_API_KEY>'"
    } else {
        ""
    };
    tracing::info!(%addr, backend = backend.unwrap_or("none"), model, workspace = %config.workspace.display(), "wombat listening");
    println!(
        "\nWombat is listening on {base}\n  health:  {base}/health\n  backend: {}\n  model:   {model}\n\nTry it:\n  curl -s {base}/api/agents/send -H 'Content-Type: application/json'{key_header} \\\n    -d '{{\"user_id\":\"demo\",\"session_key\":\"user:demo:agent\",\"message\":\"Hello!\",\"task_title\":\"Quickstart\"}}'\n",
        backend.unwrap_or("none (agent endpoints answer 503)")
    );
}
