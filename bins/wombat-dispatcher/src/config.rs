//! The dispatcher's settings, validated from the same flat settings map the
//! daemon uses (`.env`, `wombat.toml`, environment). Reading the sources is
//! the caller's job; this module only validates.

use std::fmt;
use std::time::Duration;

use wombat_controlplane::{JwtAlgorithm, JwtConfig};
use wombat_http::config::{Settings, get};

use crate::Error;

/// Default of `AGENT_DAEMON_URL`.
pub const DEFAULT_DAEMON_URL: &str = "http://localhost:8081";
/// Default of `DISPATCH_LIMIT_USERS` and `DISPATCH_LIMIT_NOTIFICATIONS`.
pub const DEFAULT_LIMIT: u32 = 25;
/// Default of `DISPATCH_MIN_INTERVAL_SEC`.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Default of `DISPATCH_MAX_INTERVAL_SEC`.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(30);
/// Default of `DISPATCH_CONCURRENCY`: users served in parallel.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Default of `DISPATCH_SEND_TIMEOUT_SEC`: a little more than the daemon's
/// own request deadline (`WOMBAT_REQUEST_TIMEOUT_SECS`, 300), so the daemon
/// answers before the dispatcher gives up.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(330);
/// Default of `DISPATCH_MAX_ATTEMPTS`: failed attempts after which a
/// notification is given up (acknowledged without a reply). With the
/// default intervals that is at least a few minutes of daemon trouble.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default of `DISPATCH_TASK_TITLE`: the task a notification's reply goes to
/// when the delivery names no `task_id`.
pub const DEFAULT_TASK_TITLE: &str = "Notifications";

/// The environment variables the dispatcher reads, with their defaults, for
/// `--help` texts.
pub const ENV_HELP: &str = "\
Environment (also read from .env and wombat.toml; the environment wins):
  BACKEND_URL                   Mission Control base URL (required)
  INTERNAL_TOKEN                X-Internal-Token of the dispatch endpoints (required)
  AGENT_DAEMON_URL              daemon base URL [default: http://localhost:8081]
  AGENT_DAEMON_API_KEY          sent as X-Agent-Daemon-Key when set
  AGENT_JWT_SECRET              optional: dispatch calls use the internal token only
  AGENT_JWT_ALGORITHM           HS256, HS384 or HS512 [default: HS256]
  DISPATCH_LIMIT_USERS          users per poll [default: 25]
  DISPATCH_LIMIT_NOTIFICATIONS  notifications per user per poll [default: 25]
  DISPATCH_MIN_INTERVAL_SEC     poll interval after work [default: 2]
  DISPATCH_MAX_INTERVAL_SEC     longest interval when idle or failing [default: 30]
  DISPATCH_CONCURRENCY          users delivered in parallel [default: 8]
  DISPATCH_SEND_TIMEOUT_SEC     timeout of one daemon call [default: 330]
  DISPATCH_MAX_ATTEMPTS         failed attempts before a notification is given up [default: 5]
  DISPATCH_TASK_TITLE           task of replies to deliveries without task_id
                                [default: Notifications; empty: the daemon's WOMBAT_DEFAULT_TASK]
  WOMBAT_LOG_FORMAT             json for JSON diagnostics on stderr
  RUST_LOG                      log level [default: info]

stdout carries one JSON line per tick:
  {\"event\":\"dispatcher_tick\",\"deliveries\":N,\"delivered\":N,\"failed\":N,\"given_up\":N,\"duration_sec\":F}

Exit codes: 0 on a clean stop (or a --once tick whose poll succeeded, even if
some deliveries failed), 1 if the --once poll failed, 64 on invalid configuration.";

/// Validated dispatcher configuration.
#[derive(Clone)]
pub struct DispatcherConfig {
    /// `BACKEND_URL`, without a trailing slash.
    pub backend_url: String,
    /// `INTERNAL_TOKEN`.
    pub internal_token: String,
    /// The control-plane client needs a JWT config even though dispatch calls
    /// authenticate with the internal token only: `AGENT_JWT_SECRET` when set,
    /// otherwise a random per-process secret that signs nothing.
    pub jwt: JwtConfig,
    /// `AGENT_DAEMON_URL`, without a trailing slash.
    pub daemon_url: String,
    /// `AGENT_DAEMON_API_KEY`.
    pub daemon_api_key: Option<String>,
    /// `DISPATCH_LIMIT_USERS`.
    pub limit_users: u32,
    /// `DISPATCH_LIMIT_NOTIFICATIONS`.
    pub limit_notifications: u32,
    /// `DISPATCH_MIN_INTERVAL_SEC`.
    pub min_interval: Duration,
    /// `DISPATCH_MAX_INTERVAL_SEC` (at least `min_interval`).
    pub max_interval: Duration,
    /// `DISPATCH_CONCURRENCY`: users delivered in parallel.
    pub concurrency: usize,
    /// `DISPATCH_SEND_TIMEOUT_SEC`: timeout of one `POST /api/agents/send`.
    pub send_timeout: Duration,
    /// `DISPATCH_MAX_ATTEMPTS`: failed attempts before giving up.
    pub max_attempts: u32,
    /// `DISPATCH_TASK_TITLE`: sent as `task_title` for deliveries without a
    /// `task_id`; empty sends none (the daemon's `WOMBAT_DEFAULT_TASK`
    /// applies).
    pub task_title: String,
}

impl fmt::Debug for DispatcherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherConfig")
            .field("backend_url", &self.backend_url)
            .field("internal_token", &"<redacted>")
            .field("jwt", &self.jwt)
            .field("daemon_url", &self.daemon_url)
            .field(
                "daemon_api_key",
                &self.daemon_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("limit_users", &self.limit_users)
            .field("limit_notifications", &self.limit_notifications)
            .field("min_interval", &self.min_interval)
            .field("max_interval", &self.max_interval)
            .field("concurrency", &self.concurrency)
            .field("send_timeout", &self.send_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("task_title", &self.task_title)
            .finish()
    }
}

fn invalid(var: &str, reason: impl fmt::Display) -> Error {
    Error::Config(format!("invalid {var}: {reason}"))
}

fn http_url(s: &Settings, var: &str, default: Option<&str>) -> Result<String, Error> {
    let Some(v) = get(s, var).or(default) else {
        return Err(invalid(var, "required (an http(s) URL)"));
    };
    let ok = (v.starts_with("http://") || v.starts_with("https://"))
        && v.len() > "https://".len()
        && !v.contains(char::is_whitespace);
    if ok {
        Ok(v.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(var, format!("{v:?} is not an http(s) URL")))
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default + Copy>(
    s: &Settings,
    var: &str,
    default: T,
) -> Result<T, Error> {
    match get(s, var) {
        None => Ok(default),
        Some(v) => match v.parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(invalid(var, format!("{v:?} is not a positive integer"))),
        },
    }
}

fn seconds(s: &Settings, var: &str, default: Duration) -> Result<Duration, Error> {
    match get(s, var) {
        None => Ok(default),
        Some(v) => match v.parse::<f64>() {
            Ok(n) if n.is_finite() && n > 0.0 && n <= 86_400.0 => Ok(Duration::from_secs_f64(n)),
            _ => Err(invalid(
                var,
                format!("{v:?} is not a number of seconds in (0, 86400]"),
            )),
        },
    }
}

impl DispatcherConfig {
    /// Validates every setting; the first invalid one is returned as
    /// [`Error::Config`] naming the variable (secrets are never quoted).
    pub fn from_settings(s: &Settings) -> Result<Self, Error> {
        let backend_url = http_url(s, "BACKEND_URL", None)?;
        let internal_token = get(s, "INTERNAL_TOKEN")
            .ok_or_else(|| invalid("INTERNAL_TOKEN", "required for the dispatch endpoints"))?
            .to_owned();
        let algorithm = match get(s, "AGENT_JWT_ALGORITHM") {
            None => JwtAlgorithm::HS256,
            Some(v) => v.parse().map_err(|_| {
                invalid(
                    "AGENT_JWT_ALGORITHM",
                    format!("{v:?} is not one of HS256, HS384, HS512"),
                )
            })?,
        };
        let secret = match get(s, "AGENT_JWT_SECRET") {
            Some(secret) => secret.to_owned(),
            // Dispatch calls never mint an agent token; the client still
            // wants a key, so it gets one nobody knows.
            None => std::iter::repeat_with(fastrand::alphanumeric)
                .take(48)
                .collect(),
        };
        let jwt = JwtConfig::new(secret, algorithm).map_err(|e| invalid("AGENT_JWT_SECRET", e))?;
        let min_interval = seconds(s, "DISPATCH_MIN_INTERVAL_SEC", DEFAULT_MIN_INTERVAL)?;
        let max_interval = seconds(s, "DISPATCH_MAX_INTERVAL_SEC", DEFAULT_MAX_INTERVAL)?;
        if max_interval < min_interval {
            return Err(invalid(
                "DISPATCH_MAX_INTERVAL_SEC",
                format!(
                    "{}s is below DISPATCH_MIN_INTERVAL_SEC ({}s)",
                    max_interval.as_secs_f64(),
                    min_interval.as_secs_f64()
                ),
            ));
        }
        Ok(Self {
            backend_url,
            internal_token,
            jwt,
            daemon_url: http_url(s, "AGENT_DAEMON_URL", Some(DEFAULT_DAEMON_URL))?,
            daemon_api_key: get(s, "AGENT_DAEMON_API_KEY").map(str::to_owned),
            limit_users: positive(s, "DISPATCH_LIMIT_USERS", DEFAULT_LIMIT)?,
            limit_notifications: positive(s, "DISPATCH_LIMIT_NOTIFICATIONS", DEFAULT_LIMIT)?,
            min_interval,
            max_interval,
            concurrency: positive(s, "DISPATCH_CONCURRENCY", DEFAULT_CONCURRENCY)?,
            send_timeout: seconds(s, "DISPATCH_SEND_TIMEOUT_SEC", DEFAULT_SEND_TIMEOUT)?,
            max_attempts: positive(s, "DISPATCH_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)?,
            // `get` drops blank values, so an explicitly empty title is
            // read from the raw map.
            task_title: match s.get("DISPATCH_TASK_TITLE") {
                Some(v) => v.trim().to_owned(),
                None => DEFAULT_TASK_TITLE.to_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let mut s: Settings = [("BACKEND_URL", "http://mc:9001/"), ("INTERNAL_TOKEN", "it")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in pairs {
            s.insert((*k).to_owned(), (*v).to_owned());
        }
        s
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        DispatcherConfig::from_settings(&settings(pairs))
            .expect_err("invalid")
            .to_string()
    }

    #[test]
    fn defaults() {
        let c = DispatcherConfig::from_settings(&settings(&[])).expect("valid");
        assert_eq!(c.backend_url, "http://mc:9001");
        assert_eq!(c.daemon_url, DEFAULT_DAEMON_URL);
        assert_eq!((c.limit_users, c.limit_notifications), (25, 25));
        assert_eq!(
            (c.min_interval, c.max_interval),
            (DEFAULT_MIN_INTERVAL, DEFAULT_MAX_INTERVAL)
        );
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.task_title, "Notifications");
        let none = DispatcherConfig::from_settings(&settings(&[("DISPATCH_TASK_TITLE", "")]))
            .expect("valid");
        assert_eq!(none.task_title, "");
        assert!(c.daemon_api_key.is_none());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let mut missing = settings(&[]);
        missing.remove("BACKEND_URL");
        assert_eq!(
            DispatcherConfig::from_settings(&missing)
                .expect_err("missing")
                .to_string(),
            "invalid BACKEND_URL: required (an http(s) URL)"
        );
        let mut missing = settings(&[]);
        missing.insert("INTERNAL_TOKEN".into(), "  ".into());
        assert!(
            DispatcherConfig::from_settings(&missing)
                .expect_err("blank")
                .to_string()
                .starts_with("invalid INTERNAL_TOKEN")
        );
        assert_eq!(
            err(&[("DISPATCH_LIMIT_USERS", "0")]),
            r#"invalid DISPATCH_LIMIT_USERS: "0" is not a positive integer"#
        );
        assert!(
            err(&[("DISPATCH_MIN_INTERVAL_SEC", "abc")])
                .starts_with("invalid DISPATCH_MIN_INTERVAL_SEC")
        );
        assert!(
            err(&[
                ("DISPATCH_MIN_INTERVAL_SEC", "10"),
                ("DISPATCH_MAX_INTERVAL_SEC", "5")
            ])
            .starts_with("invalid DISPATCH_MAX_INTERVAL_SEC")
        );
        assert!(
            err(&[("AGENT_DAEMON_URL", "localhost:8081")]).starts_with("invalid AGENT_DAEMON_URL")
        );
        assert!(
            err(&[("AGENT_JWT_ALGORITHM", "RS256")]).starts_with("invalid AGENT_JWT_ALGORITHM")
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c =
            DispatcherConfig::from_settings(&settings(&[("AGENT_DAEMON_API_KEY", "dk-secret")]))
                .expect("valid");
        let text = format!("{c:?}");
        assert!(
            !text.contains("dk-secret") && !text.contains("\"it\""),
            "{text}"
        );
    }
}
