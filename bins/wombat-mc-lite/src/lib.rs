//! The program behind `wombat-mc-lite` and `wombat mc-lite`: the reference
//! Mission Control backend. Reads flags and env, starts the library server,
//! stops on SIGINT/SIGTERM. `notify` queues a notification on a running
//! server (for testing the dispatcher); `approve` approves or rejects a
//! pending tool request as a person would. Bad configuration exits with
//! code 64.
//!
//! This is binary glue; the backend itself is the `wombat-mc-lite` library.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use wombat_controlplane::{ControlPlane, ControlPlaneConfig, JwtAlgorithm, JwtConfig};
use wombat_core::controlplane::{ToolRequestDecision, ToolRequestStatus};
use wombat_mc_lite::{DEFAULT_DB_PATH, DEFAULT_PORT, DbLocation, McLite, McLiteConfig};

/// Exit code for invalid configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Command-line flags (each also readable from its environment variable).
#[derive(Parser)]
#[command(
    name = "wombat-mc-lite",
    version,
    about = "Reference Mission Control backend (Control Plane Contract v1)",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "MC_LITE_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on (default: this machine only; 0.0.0.0 exposes
    /// it to the network).
    #[arg(long, env = "MC_LITE_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// SQLite database file, or `:memory:`.
    #[arg(long, env = "MC_LITE_DB", default_value = DEFAULT_DB_PATH)]
    db: String,
    /// Shared secret agent tokens are verified with.
    #[arg(long, env = "AGENT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// HS256, HS384 or HS512.
    #[arg(long, env = "AGENT_JWT_ALGORITHM", default_value = "HS256")]
    jwt_algorithm: String,
    /// Token of the dispatch endpoints (dispatch is disabled without one).
    #[arg(long, env = "INTERNAL_TOKEN", hide_env_values = true)]
    internal_token: Option<String>,
    /// Seconds idempotency records are kept (the contract asks for 24 h or more).
    #[arg(
        long,
        env = "MC_LITE_IDEMPOTENCY_RETENTION_SECS",
        default_value_t = 86_400,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    idempotency_retention_secs: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the backend (the default).
    Serve,
    /// Queue a notification on a running server for dispatch.
    Notify {
        /// Base URL of the running server.
        #[arg(
            long,
            env = "CONTROL_PLANE_URL",
            default_value = "http://127.0.0.1:9001"
        )]
        url: String,
        /// Tenant.
        #[arg(long)]
        user_id: String,
        /// Session, e.g. `user:<id>:agent`.
        #[arg(long)]
        session_key: String,
        /// Text handed to the agent.
        #[arg(long)]
        content: String,
        /// Task the agent's reply belongs on (the delivery's `task_id`).
        #[arg(long)]
        task_id: Option<String>,
        /// A JSON object passed through to the daemon (the delivery's `metadata`).
        #[arg(long, value_parser = parse_object)]
        metadata: Option<serde_json::Value>,
    },
    /// Approve (or reject) a pending tool request on a running server, as
    /// the person the agent is waiting for. Signs a token for `--user` with
    /// AGENT_JWT_SECRET; prints the resolved request.
    Approve {
        /// The tool request's id.
        id: String,
        /// Tenant the request belongs to.
        #[arg(long)]
        user: String,
        /// Reject instead of approve.
        #[arg(long)]
        reject: bool,
        /// Why (the model is told the reason of a rejection).
        #[arg(long)]
        reason: Option<String>,
        /// Base URL of the running server.
        #[arg(
            long,
            env = "CONTROL_PLANE_URL",
            default_value = "http://127.0.0.1:9001"
        )]
        url: String,
    },
}

/// Role claimed by the token `approve` signs (the backend only reads the
/// tenant from it).
const APPROVER_ROLE: &str = "approver";

/// Parses the process arguments and runs (the binary's `main`).
pub fn main_entry() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    run(cli)
}

/// Runs parsed flags: serves until SIGINT/SIGTERM, or queues one
/// notification with `notify`. Exit code 64 on bad configuration, 1 on
/// other failures.
pub fn run(cli: Cli) -> ExitCode {
    // `try_init`: a caller (the `wombat` CLI) may already have a subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: escape codes in a
        // container's or journald's log are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Notify {
            url,
            user_id,
            session_key,
            content,
            task_id,
            metadata,
        }) => {
            let Some(token) = cli.serve.internal_token.filter(|t| !t.is_empty()) else {
                eprintln!("error: INTERNAL_TOKEN is required for notify");
                return ExitCode::from(EXIT_CONFIG);
            };
            match runtime.block_on(wombat_mc_lite::enqueue_notification_with(
                &url,
                &token,
                &user_id,
                &session_key,
                &content,
                task_id.as_deref().filter(|t| !t.is_empty()),
                metadata.as_ref(),
            )) {
                Ok(reply) => {
                    println!("{reply}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Approve {
            id,
            user,
            reject,
            reason,
            url,
        }) => {
            let jwt = match secret(cli.serve.jwt_secret, "AGENT_JWT_SECRET")
                .and_then(|s| jwt_config(s, &cli.serve.jwt_algorithm))
            {
                Ok(jwt) => jwt,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let status = if reject {
                ToolRequestStatus::Rejected
            } else {
                ToolRequestStatus::Approved
            };
            let decision = ToolRequestDecision { status, reason };
            match runtime.block_on(approve(&url, jwt, &user, &id, &decision)) {
                Ok(record) => {
                    println!("{record}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Serve) | None => {
            let (config, addr) = match validate(cli.serve) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match runtime.block_on(serve(config, addr)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A secret from its flag/variable, or from the file named by
/// `<var>_FILE` (Docker/Kubernetes secrets; one trailing newline trimmed).
/// Both set is an error naming both; an unreadable file names the variable
/// and the path, never the content.
fn secret(value: Option<String>, var: &str) -> Result<Option<String>> {
    let value = value.filter(|v| !v.is_empty());
    let file_var = format!("{var}_FILE");
    let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) else {
        return Ok(value);
    };
    if value.is_some() {
        anyhow::bail!("invalid {file_var}: set either {var} or {file_var}, not both");
    }
    let path = std::path::PathBuf::from(path);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "invalid {file_var}: cannot read {}: {}",
            path.display(),
            e.kind()
        )
    })?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.is_empty() {
        anyhow::bail!("invalid {file_var}: {} is empty", path.display());
    }
    Ok(Some(text.to_owned()))
}

/// The token config from the secret (already read, see [`secret`]) and the
/// algorithm's name.
fn jwt_config(secret: Option<String>, algorithm: &str) -> Result<JwtConfig> {
    let secret = secret.context("AGENT_JWT_SECRET is required")?;
    let algorithm: JwtAlgorithm = algorithm.parse().context("invalid AGENT_JWT_ALGORITHM")?;
    JwtConfig::new(secret, algorithm).context("invalid AGENT_JWT_SECRET")
}

/// `PATCH tool-requests/{id}` as tenant `user`; the resolved record as JSON.
async fn approve(
    url: &str,
    jwt: JwtConfig,
    user: &str,
    id: &str,
    decision: &ToolRequestDecision,
) -> Result<serde_json::Value> {
    let cp = ControlPlane::new(ControlPlaneConfig::new(url, jwt))
        .context("invalid CONTROL_PLANE_URL")?;
    let record = cp
        .agent(user, APPROVER_ROLE)
        .resolve_tool_request(id, decision)
        .await?;
    Ok(serde_json::to_value(record)?)
}

/// Turns raw flags into a validated config before anything is bound.
fn validate(args: ServeArgs) -> Result<(McLiteConfig, SocketAddr)> {
    let secret_value = secret(args.jwt_secret, "AGENT_JWT_SECRET")?;
    let internal_token = secret(args.internal_token, "INTERNAL_TOKEN")?;
    let jwt = jwt_config(secret_value, &args.jwt_algorithm)?;
    let mut config = McLiteConfig::new(jwt, DbLocation::parse(&args.db));
    config.internal_token = internal_token;
    config.idempotency_retention = std::time::Duration::from_secs(args.idempotency_retention_secs);
    Ok((config, SocketAddr::new(args.host, args.port)))
}

/// `--metadata`: a JSON object.
fn parse_object(text: &str) -> std::result::Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("must be a JSON object, e.g. '{\"source\":\"ci\"}'".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

async fn serve(config: McLiteConfig, addr: SocketAddr) -> Result<()> {
    // Handlers first: a script that sees the banner may signal at once.
    let shutdown = shutdown_signal();
    let server = McLite::start(config, addr)
        .await
        .context("cannot start mc-lite (MC_LITE_HOST/MC_LITE_PORT)")?;
    // The first stdout line is the address, for scripts and `cargo xtask`.
    println!("mc-lite listening on {}", server.url());
    shutdown.await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Installs the SIGINT/SIGTERM handlers now (inside the runtime) and
/// resolves when either arrives. Eager, so that a signal sent right after
/// the banner is never met by the default action (process killed).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
