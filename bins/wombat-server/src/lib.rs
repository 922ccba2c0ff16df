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
    ConfigError, DaemonConfig, Settings, get, parse_bool, resolve_secret_files,
    settings_from_figment, unknown_wombat_vars,
};
use wombat_http::{Backend, Daemon};
use wombat_llm::{Router, RouterConfig};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};
use wombat_mcp::McpConfig;
use wombat_workspace::{SkillEnv, Workspace, WorkspaceOptions};

/// Exit code for invalid configuration (`EX_CONFIG`-style, as RUNTIME.md asks).
pub const EXIT_CONFIG: u8 = 64;

/// The daemon's variables with their defaults, shown by `--help` of
/// `wombat-server` and `wombat serve`.
pub const ENV_HELP: &str = "\
Environment (also read from .env and wombat.toml; the environment wins):
  WOMBAT_HOST [127.0.0.1; 0.0.0.0 when AGENT_DAEMON_API_KEY is set], WOMBAT_PORT [8081]
  BACKEND_URL                 Mission Control URL; unset = embedded reference backend
  WOMBAT_EMBEDDED_BACKEND     [true] start the embedded backend when BACKEND_URL is unset
  MC_LITE_PORT [9001], MC_LITE_DB [<WOMBAT_DATA_DIR>/mc-lite.db], WOMBAT_DATA_DIR [./.wombat-data]
  AGENT_DAEMON_API_KEY        required X-Agent-Daemon-Key when set
  AGENT_JWT_SECRET, AGENT_JWT_ALGORITHM [HS256]
  INTERNAL_TOKEN              dispatch token of the embedded backend
  <SECRET>_FILE               read any secret (keys, tokens) from a file instead
  LLM_PROVIDER [openai], LLM_MODEL_DEFAULT|CHEAP|BEST|FALLBACK (legacy OPENAI_MODEL_*)
  OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY/GOOGLE_API_KEY, XAI_API_KEY,
  GROQ_API_KEY, MISTRAL_API_KEY, OPENROUTER_API_KEY, <PROVIDER>_BASE_URL
  WOMBAT_WORKSPACE [./workspace], WOMBAT_DEFAULT_TASK
  WOMBAT_RETRY_ATTEMPTS [3], WOMBAT_RETRY_DELAY_MS [1000], WOMBAT_RETRY_MAX_DELAY_MS [30000],
  WOMBAT_RETRY_JITTER [0.1]
  WOMBAT_CONTEXT_WARNING_THRESHOLD [75], WOMBAT_DEFAULT_TIMEZONE, WOMBAT_INCLUDE_TIME_CONTEXT [true]
  WOMBAT_MAX_CHARS_PER_FILE [20000], WOMBAT_BOOTSTRAP_MAX_CHARS [150000], WOMBAT_SKILLS_MAX_CHARS [30000]
  WOMBAT_METRICS_PUBLIC [false], WOMBAT_MAX_BODY_BYTES [1048576], WOMBAT_HEADER_TIMEOUT_SECS [10],
  WOMBAT_BODY_TIMEOUT_SECS [30], WOMBAT_KEEP_ALIVE_TIMEOUT_SECS [75], WOMBAT_MAX_CONNECTIONS [1024],
  WOMBAT_REQUEST_TIMEOUT_SECS [300], WOMBAT_SHUTDOWN_TIMEOUT_SECS [30], WOMBAT_MAX_CONCURRENT_LLM [512]
  WOMBAT_WEBHOOK_ALLOWED_HOSTS, WOMBAT_WEBHOOK_ALLOW_PRIVATE [false],
  WOMBAT_WEBHOOK_MAX_IN_FLIGHT [1024], WOMBAT_PRICING_FILE
  WOMBAT_LOG_FORMAT [text|json], RUST_LOG [info]  (logs go to stderr)
  OTEL_EXPORTER_OTLP_ENDPOINT export traces over OTLP/HTTP (unset = off; OTEL_* as usual),
  WOMBAT_OTEL_CAPTURE_CONTENT [false] record prompts and replies on spans
See docs/CONFIGURATION.md for every variable.";

/// `wombat-server`'s command line: only `--help` and `--version`;
/// everything else is configured through the environment.
#[derive(Debug, clap::Parser)]
#[command(
    name = "wombat-server",
    version,
    about = "The Wombat daemon: the agent HTTP API (with no BACKEND_URL, also an embedded reference backend)",
    after_help = ENV_HELP
)]
pub struct Cli {}

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
    // `<SECRET>_FILE` (Docker/Kubernetes secrets) becomes `<SECRET>`.
    resolve_secret_files(&mut settings, |p| std::fs::read_to_string(p))?;
    Ok(settings)
}

/// Installs the tracing subscriber on stderr (stdout carries only the
/// banner): human-readable by default, coloured only when stderr is a
/// terminal; JSON with `WOMBAT_LOG_FORMAT=json`; level from `RUST_LOG`
/// (default `info`).
///
/// With an OTLP endpoint in the environment (`OTEL_EXPORTER_OTLP_ENDPOINT`
/// or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), spans are also exported over
/// OTLP/HTTP (see [`Telemetry`]); without one, nothing of OpenTelemetry is
/// installed. Call [`Telemetry::shutdown`] on the way out to flush.
pub fn init_tracing(settings: &Settings) -> Telemetry {
    use std::io::IsTerminal as _;
    let json = get(settings, "WOMBAT_LOG_FORMAT") == Some("json");
    let telemetry = match otlp_tracer(settings) {
        Ok(Some(t)) => t,
        Ok(None) => {
            init_logs_only(json);
            return Telemetry { provider: None };
        }
        Err(e) => {
            // Traces are an aid, not a dependency: a bad exporter setting
            // must not keep the daemon from serving. Said once, loudly.
            init_logs_only(json);
            tracing::warn!(error = %e, "OpenTelemetry traces disabled");
            return Telemetry { provider: None };
        }
    };
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (provider, tracer, capture) = telemetry;
    // Its own level: `RUST_LOG=warn` quietens the logs, not the traces.
    // Only Wombat's own spans: a library's (the MCP client's session
    // tasks, say) would each be a trace of its own, not part of a request.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target("wombat", tracing::Level::INFO),
        );
    let registry = tracing_subscriber::registry().with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    .json()
                    .with_filter(env_filter()),
            )
            .try_init()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .fmt_fields(escaped_fields())
                    .with_filter(env_filter()),
            )
            .try_init()
    };
    if result.is_err() {
        // Another subscriber was installed first (tests, an embedding
        // program): our spans would never reach the exporter.
        let _ = provider.shutdown();
        return Telemetry { provider: None };
    }
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    wombat_telemetry::enable(capture);
    Telemetry {
        provider: Some(provider),
    }
}

/// The log subscriber alone: exactly what runs when traces are off.
/// Installs only the log subscriber, as [`init_tracing`] does without an
/// OTLP endpoint: stderr, control characters escaped in the human format,
/// colour only on a terminal, JSON with `WOMBAT_LOG_FORMAT=json`. For the
/// other binaries (the dispatcher), which export no traces.
pub fn init_logs(settings: &Settings) {
    init_logs_only(get(settings, "WOMBAT_LOG_FORMAT") == Some("json"));
}

fn init_logs_only(json: bool) {
    use std::io::IsTerminal as _;
    let result = if json {
        tracing_subscriber::fmt()
            .with_env_filter(env_filter())
            .with_target(false)
            .with_writer(std::io::stderr)
            .json()
            .try_init()
            .map_err(|e| e.to_string())
    } else {
        let ansi = std::io::stderr().is_terminal();
        tracing::subscriber::set_global_default(human_subscriber(ansi, std::io::stderr))
            .map_err(|e| e.to_string())
    };
    // A subscriber may already be installed (tests, `wombat` CLI); keep it.
    let _ = result;
}

/// The OpenTelemetry exporter, while the daemon runs.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter (bounded by
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`). Blocks: call it once, on the way out.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "OpenTelemetry exporter did not flush cleanly");
            }
        }
    }
}

/// Whether an OTLP traces endpoint is configured, and not switched off
/// with `OTEL_SDK_DISABLED=true`. Read from the process environment (which
/// `.env` feeds) like every OpenTelemetry SDK, not from `wombat.toml`.
fn otlp_configured() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

type OtelParts = (
    opentelemetry_sdk::trace::SdkTracerProvider,
    opentelemetry_sdk::trace::Tracer,
    bool,
);

/// The provider and tracer when an endpoint is configured. The exporter
/// reads the standard variables itself: endpoint, `OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (and their `_TRACES_` forms); the batch
/// processor reads `OTEL_BSP_*` (queue bound 2048 spans by default: when
/// full, new spans are dropped rather than memory growing).
fn otlp_tracer(settings: &Settings) -> Result<Option<OtelParts>, String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    if !otlp_configured() {
        return Ok(None);
    }
    let capture = match get(settings, "WOMBAT_OTEL_CAPTURE_CONTENT") {
        Some(v) => parse_bool(v).map_err(|e| format!("WOMBAT_OTEL_CAPTURE_CONTENT: {e}"))?,
        None => false,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("wombat");
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("wombat");
    Ok(Some((provider, tracer, capture)))
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// The human log format. Field values (and messages) have their control
/// characters escaped: request-controlled text inside an error (a model
/// name, say) must not forge a log line with a newline nor reach the
/// operator's terminal as an escape sequence. The JSON format escapes by
/// construction.
fn human_subscriber<W>(ansi: bool, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fields = escaped_fields();
    tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer)
        .fmt_fields(fields)
        .finish()
}

/// Field formatting of the human log format: control characters escaped.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static
{
    use std::fmt::Write as _;
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        if field.name() != "message" {
            write!(w, "{field}=")?;
        }
        write!(EscapeControls(w), "{value:?}")
    })
    .delimited(" ")
}

/// Writes through to `W`, escaping control characters (and the bidi
/// overrides that reorder what a terminal shows) as `\n`, `\u{1b}`, ...
struct EscapeControls<W>(W);

impl<W: std::fmt::Write> std::fmt::Write for EscapeControls<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let risky = |c: char| {
            c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        };
        if !s.contains(risky) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            if risky(c) {
                for e in c.escape_default() {
                    self.0.write_char(e)?;
                }
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that
/// resolves when either signal arrives. Must be called inside a Tokio
/// runtime.
///
/// The handlers are installed eagerly, not on the future's first poll: a
/// program that starts work before it first polls this future (a
/// dispatcher tick, say) would otherwise die from a signal that arrives in
/// between (measured: ~1 in 100 runs of "start, first tick, SIGTERM").
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(interrupt) => {},
                () = recv(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}

/// Everything validated and built, nothing bound yet.
struct Plan {
    config: DaemonConfig,
    router: Router,
    workspace: Workspace,
    embedded: Option<EmbeddedPlan>,
    /// Warnings to log once tracing is up and before serving.
    warnings: Vec<String>,
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
    let mut warnings = missing_key_warnings(&llm);
    let unknown = unknown_wombat_vars(settings);
    if !unknown.is_empty() {
        warnings.push(format!(
            "unknown WOMBAT_* settings ignored (misspelled?): {}",
            unknown.join(", ")
        ));
    }
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
        warnings,
    })
}

/// One warning per model (default, then fallback) whose provider needs an
/// API key that is not configured. A provider whose base URL is overridden
/// (a local OpenAI-compatible server, say) may need no key, so it is not
/// warned about.
fn missing_key_warnings(llm: &RouterConfig) -> Vec<String> {
    let summary = llm.summary();
    let mut models = vec![("default", summary.model.clone())];
    if let Some(f) = &summary.fallback_model {
        models.push(("fallback", f.clone()));
    }
    let mut warnings = Vec::new();
    for (role, model) in models {
        let Some(provider) = model
            .split_once('/')
            .and_then(|(p, _)| p.parse::<wombat_core::Provider>().ok())
        else {
            continue;
        };
        let missing = summary.keys.get(&provider).is_some_and(|has| !has);
        if missing && !llm.base_urls.contains_key(&provider) {
            let envs = provider.api_key_envs().join(" or ");
            warnings.push(format!(
                "no API key for the {role} model {model}: set {envs} (or LLM_PROVIDER=echo for an offline round trip)"
            ));
        }
    }
    warnings
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

/// The name the embedded backend's MCP server gets (its tools reach the
/// model as `mc__<tool>`).
const EMBEDDED_MCP_SERVER: &str = "mc";

/// The configured MCP servers plus the embedded backend's `/mcp` as server
/// `mc`, so the tools quickstart (docs/TOOLS.md) needs no configuration: with
/// the embedded backend the tenant's own tasks and documents are the tools.
/// A server already named `mc` (in `WOMBAT_MCP_SERVERS` or the workspace's
/// `mcp.json`) is the operator's choice and wins; an unreadable `mcp.json`
/// is left for the daemon to report.
fn with_embedded_mcp(
    configured: Option<McpConfig>,
    workspace: &Workspace,
    backend_url: &str,
) -> Option<McpConfig> {
    let named_mc = |c: &McpConfig| c.servers().iter().any(|s| s.name() == EMBEDDED_MCP_SERVER);
    let file = workspace.path().join("mcp.json");
    let in_file = file.is_file() && McpConfig::from_file(&file).map_or(true, |c| named_mc(&c));
    if in_file || configured.as_ref().is_some_and(named_mc) {
        return configured;
    }
    // The URL is ours (a loopback address and a port number): no quoting
    // beyond JSON's is needed.
    let document =
        format!(r#"{{"mcpServers": {{"{EMBEDDED_MCP_SERVER}": {{"url": "{backend_url}/mcp"}}}}}}"#);
    let embedded = match McpConfig::parse(&document, "the embedded backend") {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "the embedded backend's MCP server is not registered");
            return configured;
        }
    };
    tracing::info!(
        url = %format!("{backend_url}/mcp"),
        "embedded backend's MCP server registered as \"{EMBEDDED_MCP_SERVER}\" (tools mc__*)"
    );
    match configured {
        None => Some(embedded),
        Some(c) => match c.clone().merge(embedded) {
            Ok(merged) => Some(merged),
            Err(e) => {
                tracing::warn!(error = %e, "the embedded backend's MCP server is not registered");
                Some(c)
            }
        },
    }
}

/// Runs the daemon until `shutdown` resolves.
///
/// Nothing is created on disk before both ports are bound: a taken port
/// fails first, naming the variable that chooses it.
pub async fn run(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let plan = plan(&settings)?;
    let config = plan.config.clone();
    for warning in &plan.warnings {
        tracing::warn!("{warning}");
    }

    let addr = SocketAddr::new(config.host, config.port);
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        RunError::Other(anyhow::anyhow!(
            "cannot listen on {addr} (WOMBAT_HOST/WOMBAT_PORT): {e}"
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| RunError::Other(e.into()))?;

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
                .with_context(|| "starting the embedded backend (MC_LITE_PORT)".to_owned())
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
    print_banner(
        local,
        &config,
        backend.as_ref().map(|b| b.url.as_str()),
        &summary.model,
    );

    let mut config = config;
    if let Some(mc) = &embedded {
        config.mcp_servers =
            with_embedded_mcp(config.mcp_servers.take(), &plan.workspace, &mc.url());
    }
    let daemon = Daemon::new(config, plan.workspace, plan.router, backend)
        .map_err(|e| RunError::Other(e.into()))?;
    daemon.serve(listener, shutdown).await;
    if let Some(mc) = embedded {
        mc.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The banner goes to stdout (logs go to stderr): it is the one thing a
/// person starting the server needs to read, and scripts can wait for it.
fn print_banner(addr: SocketAddr, config: &DaemonConfig, backend: Option<&str>, model: &str) {
    let host = if addr.ip().is_unspecified() || addr.ip().is_loopback() {
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
    let access = if !addr.ip().is_loopback() {
        format!("all interfaces ({})", addr.ip())
    } else if config.host_defaulted {
        "this machine only; to expose it set AGENT_DAEMON_API_KEY (or WOMBAT_HOST=0.0.0.0)"
            .to_owned()
    } else {
        format!("this machine only ({})", addr.ip())
    };
    tracing::info!(%addr, backend = backend.unwrap_or("none"), model, workspace = %config.workspace.display(), "wombat listening");
    println!(
        "\nWombat is listening on {base}\n  access:  {access}\n  health:  {base}/health\n  backend: {}\n  model:   {model}\n\nTry it:\n  curl -s {base}/api/agents/send -H 'Content-Type: application/json'{key_header} \\\n    -d '{{\"user_id\":\"demo\",\"session_key\":\"user:demo:agent\",\"message\":\"Hello!\",\"task_title\":\"Quickstart\"}}'\n",
        backend.unwrap_or("none (agent endpoints answer 503)")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn human_logs_escape_control_characters() {
        let buf = Buf::default();
        let subscriber = human_subscriber(false, buf.clone());
        tracing::subscriber::with_default(subscriber, || {
            let model = "gpt\nERROR forged line\u{1b}[31m";
            let span = tracing::info_span!("request", path = "/x\ny");
            let _enter = span.enter();
            let message = format!("unknown model {model}");
            tracing::error!(status = 400, error = %message, "request failed: {model}");
        });
        let out = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(
            out.contains(r"request failed: gpt\nERROR forged line\u{1b}[31m"),
            "{out:?}"
        );
        assert!(
            out.contains(r"error=unknown model gpt\nERROR forged line\u{1b}[31m"),
            "{out:?}"
        );
        assert!(out.contains("status=400"), "{out:?}");
    }

    #[test]
    fn the_embedded_mcp_server_yields_to_an_operators_mc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || Workspace::open(dir.path(), WorkspaceOptions::default()).expect("workspace");
        let backend = "http://127.0.0.1:9001";
        let urls = |c: &Option<McpConfig>| -> Vec<(String, String)> {
            c.iter()
                .flat_map(|c| c.servers())
                .map(|s| (s.name().to_owned(), s.url().to_owned()))
                .collect()
        };
        // Nothing configured: `mc` is the embedded backend's /mcp.
        let got = with_embedded_mcp(None, &open(), backend);
        assert_eq!(urls(&got), [("mc".to_owned(), format!("{backend}/mcp"))]);
        // Other servers are kept beside it.
        let other = McpConfig::parse(
            r#"{"mcpServers": {"app": {"url": "https://app.example.com/mcp"}}}"#,
            "test",
        )
        .expect("valid");
        let got = with_embedded_mcp(Some(other), &open(), backend);
        assert_eq!(urls(&got).len(), 2);
        // An operator's `mc` (environment) wins.
        let mine = McpConfig::parse(
            r#"{"mcpServers": {"mc": {"url": "https://mc.example.com/mcp"}}}"#,
            "test",
        )
        .expect("valid");
        let got = with_embedded_mcp(Some(mine), &open(), backend);
        assert_eq!(
            urls(&got),
            [("mc".to_owned(), "https://mc.example.com/mcp".to_owned())]
        );
        // So does the workspace's.
        std::fs::write(
            dir.path().join("mcp.json"),
            r#"{"mcpServers": {"mc": {"url": "https://mc.example.com/mcp"}}}"#,
        )
        .expect("write");
        assert!(with_embedded_mcp(None, &open(), backend).is_none());
    }

    #[test]
    fn missing_keys_are_judged_by_the_models_providers() {
        let cfg = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            RouterConfig::from_env_map(&|k: &str| map.get(k).cloned()).expect("valid")
        };
        // The provider variable says openai, the model says ollama: no key needed.
        assert!(
            missing_key_warnings(&cfg(&[
                ("LLM_PROVIDER", "openai"),
                ("LLM_MODEL_DEFAULT", "ollama/llama3")
            ]))
            .is_empty()
        );
        let w = missing_key_warnings(&cfg(&[("LLM_MODEL_DEFAULT", "anthropic/claude-x")]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("default model anthropic/claude-x"), "{w:?}");
        let w = missing_key_warnings(&cfg(&[
            ("LLM_PROVIDER", "echo"),
            ("LLM_MODEL_FALLBACK", "openai/gpt-4o-mini"),
        ]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("fallback model openai/gpt-4o-mini"), "{w:?}");
        // A base URL override (a local server) may need no key.
        assert!(
            missing_key_warnings(&cfg(&[
                ("LLM_MODEL_DEFAULT", "openai/local"),
                ("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
            ]))
            .is_empty()
        );
    }
}
