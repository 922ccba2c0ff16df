//! Heartbeat and standup calls shared by the `wombat-heartbeat` binary and
//! `wombat heartbeat` / `wombat standup`: mints an agent token for
//! `USER_ID`/`AGENT_ROLE`, posts `heartbeat {user_id}` or
//! `standup {user_id, timezone}` to the backend, prints the JSON reply and
//! then `heartbeat_ok` or `standup_ok`.
//!
//! It does not retry beyond the control-plane client's own policy and does
//! not schedule anything (run it from cron). Settings are read exactly like
//! the daemon's (`wombat_server::load_settings`).

use std::io::Write;
use std::process::ExitCode;

use wombat_controlplane::{ControlPlane, ControlPlaneConfig, JwtAlgorithm, JwtConfig};
use wombat_http::config::{Settings, get};

/// Exit code for invalid configuration.
pub const EXIT_CONFIG: u8 = 64;
/// Default of `BACKEND_URL`: the reference backend `wombat serve` embeds
/// (port `MC_LITE_PORT`, 9001), so heartbeat and standup work against a
/// local `wombat serve` with no setting. (RUNTIME.md's `localhost:8000` is
/// the default of 0.1.0's separate backend; nothing listens there in the
/// local loop.)
pub const DEFAULT_BACKEND_URL: &str = "http://localhost:9001";
/// Default of `AGENT_ROLE`.
pub const DEFAULT_ROLE: &str = "agent";
/// Default of `STANDUP_TIMEZONE`.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// The environment variables read, with defaults, for `--help` texts.
pub const ENV_HELP: &str = "\
Environment (also read from .env and wombat.toml; the environment wins):
  USER_ID              tenant the agent token is minted for (required)
  AGENT_JWT_SECRET     shared secret that signs the agent token (required)
  AGENT_JWT_ALGORITHM  HS256, HS384 or HS512 [default: HS256]
  AGENT_ROLE           agent_role claim [default: agent]
  BACKEND_URL          Mission Control base URL [default: http://localhost:9001]
  STANDUP_TIMEZONE     IANA time zone of the standup [default: UTC]

Prints the backend's JSON reply, then heartbeat_ok (or standup_ok).
Exit codes: 0 ok, 1 backend error (the message names the HTTP status),
64 invalid configuration.";

/// Which call to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `POST /api/mission-control/heartbeat {user_id}`.
    #[default]
    Heartbeat,
    /// `POST /api/mission-control/standup {user_id, timezone}`.
    Standup,
}

impl Mode {
    /// The word printed after a successful call: `heartbeat_ok` or
    /// `standup_ok`.
    pub fn ok_marker(self) -> &'static str {
        match self {
            Mode::Heartbeat => "heartbeat_ok",
            Mode::Standup => "standup_ok",
        }
    }
}

/// Why a heartbeat or standup did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or invalid; the message names it. Exit code 64.
    #[error("{0}")]
    Config(String),
    /// The backend call failed; the message names the HTTP status when
    /// there was one. Exit code 1.
    #[error("{mode} failed ({url}): {source}")]
    Backend {
        /// `heartbeat` or `standup`.
        mode: &'static str,
        /// The backend's base URL, without credentials or query.
        url: String,
        /// The client error.
        #[source]
        source: wombat_controlplane::Error,
    },
    /// The reply could not be printed, or the runtime could not start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The process exit code: 64 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => EXIT_CONFIG,
            Error::Backend { .. } | Error::Io(_) => 1,
        }
    }
}

/// Validated settings.
#[derive(Clone)]
pub struct HeartbeatConfig {
    /// `BACKEND_URL`.
    pub backend_url: String,
    /// `AGENT_JWT_SECRET` and `AGENT_JWT_ALGORITHM`.
    pub jwt: JwtConfig,
    /// `USER_ID`.
    pub user_id: String,
    /// `AGENT_ROLE`.
    pub role: String,
    /// `STANDUP_TIMEZONE`.
    pub timezone: String,
}

impl std::fmt::Debug for HeartbeatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatConfig")
            .field("backend_url", &self.backend_url)
            .field("jwt", &self.jwt)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("timezone", &self.timezone)
            .finish()
    }
}

impl HeartbeatConfig {
    /// Validates the settings; errors name the variable.
    pub fn from_settings(s: &Settings) -> Result<Self, Error> {
        let user_id = get(s, "USER_ID")
            .ok_or_else(|| Error::Config("USER_ID is required (the tenant to act for)".into()))?
            .to_owned();
        let secret = get(s, "AGENT_JWT_SECRET").ok_or_else(|| {
            Error::Config("AGENT_JWT_SECRET is required (it signs the agent token)".into())
        })?;
        let algorithm = match get(s, "AGENT_JWT_ALGORITHM") {
            None => JwtAlgorithm::HS256,
            Some(v) => v.parse().map_err(|_| {
                Error::Config(format!(
                    "invalid AGENT_JWT_ALGORITHM: {v:?} is not one of HS256, HS384, HS512"
                ))
            })?,
        };
        let jwt = JwtConfig::new(secret, algorithm)
            .map_err(|e| Error::Config(format!("invalid AGENT_JWT_SECRET: {e}")))?;
        let backend_url = get(s, "BACKEND_URL").unwrap_or(DEFAULT_BACKEND_URL);
        if !(backend_url.starts_with("http://") || backend_url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "invalid BACKEND_URL: {backend_url:?} is not an http(s) URL"
            )));
        }
        Ok(Self {
            backend_url: backend_url.trim_end_matches('/').to_owned(),
            jwt,
            user_id,
            role: get(s, "AGENT_ROLE").unwrap_or(DEFAULT_ROLE).to_owned(),
            timezone: get(s, "STANDUP_TIMEZONE")
                .unwrap_or(DEFAULT_TIMEZONE)
                .to_owned(),
        })
    }
}

/// Makes the call and returns the backend's JSON reply.
pub async fn call(config: &HeartbeatConfig, mode: Mode) -> Result<serde_json::Value, Error> {
    let cp = ControlPlane::new(ControlPlaneConfig::new(
        config.backend_url.clone(),
        config.jwt.clone(),
    ))
    .map_err(|e| Error::Config(format!("invalid BACKEND_URL: {e}")))?;
    let agent = cp.agent(config.user_id.clone(), config.role.clone());
    let (name, result) = match mode {
        Mode::Heartbeat => ("heartbeat", agent.heartbeat().await),
        Mode::Standup => ("standup", agent.standup(&config.timezone).await),
    };
    result.map_err(|source| Error::Backend {
        mode: name,
        url: display_url(&config.backend_url),
        source,
    })
}

/// `url` for messages: scheme, host, port and path, without a
/// `user:password@` part, query or fragment (they may carry secrets).
pub fn display_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// Validates `settings`, makes the call and writes the reply (one JSON line)
/// and the ok marker to `out`.
pub async fn run(settings: &Settings, mode: Mode, out: &mut impl Write) -> Result<(), Error> {
    let config = HeartbeatConfig::from_settings(settings)?;
    let reply = call(&config, mode).await?;
    writeln!(out, "{reply}")?;
    writeln!(out, "{}", mode.ok_marker())?;
    out.flush()?;
    Ok(())
}

/// The whole program behind `wombat-heartbeat` and `wombat heartbeat` /
/// `wombat standup`: loads settings like the daemon, runs the call, prints
/// to stdout, and maps errors to exit codes (64 configuration, 1 backend).
pub fn main_entry(program: &str, mode: Mode) -> ExitCode {
    let result = wombat_server::load_settings()
        .map_err(|e| Error::Config(e.to_string()))
        .and_then(|settings| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run(&settings, mode, &mut std::io::stdout().lock()))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_required_variables() {
        let c = HeartbeatConfig::from_settings(&settings(&[
            ("USER_ID", "u1"),
            ("AGENT_JWT_SECRET", "s3cret"),
        ]))
        .expect("valid");
        // The embedded backend of `wombat serve` (MC_LITE_PORT 9001), not
        // 0.1.0's separate backend on 8000.
        assert_eq!(
            (c.backend_url.as_str(), c.role.as_str(), c.timezone.as_str()),
            ("http://localhost:9001", "agent", "UTC")
        );
        let e = HeartbeatConfig::from_settings(&settings(&[("AGENT_JWT_SECRET", "s")]))
            .expect_err("no user");
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("USER_ID"));
        let e =
            HeartbeatConfig::from_settings(&settings(&[("USER_ID", "u")])).expect_err("no secret");
        assert!(e.to_string().contains("AGENT_JWT_SECRET"));
        let e = HeartbeatConfig::from_settings(&settings(&[
            ("USER_ID", "u"),
            ("AGENT_JWT_SECRET", "s3cret"),
            ("BACKEND_URL", "localhost:8000"),
        ]))
        .expect_err("bad url");
        assert!(e.to_string().starts_with("invalid BACKEND_URL"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn display_url_drops_credentials_and_query() {
        assert_eq!(
            display_url("https://me:pw@mc.example.com:8443/base?token=x#f"),
            "https://mc.example.com:8443/base"
        );
        assert_eq!(
            display_url("http://localhost:9001"),
            "http://localhost:9001"
        );
        assert_eq!(display_url("http://a@b@host/p"), "http://host/p");
    }
}
