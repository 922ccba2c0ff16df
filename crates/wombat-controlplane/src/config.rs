//! Client configuration: base URL, JWT settings, internal token, retry policy
//! and timeouts. Built by the caller (libraries do not read the environment).

use std::fmt;
use std::time::Duration;

use crate::jwt::JwtConfig;

/// How failed calls are retried: connect errors, timeouts, 429 and 5xx.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts per logical call, including the first (at least 1).
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further retry.
    pub base_delay: Duration,
    /// Upper bound of any single delay, including a `Retry-After`.
    pub max_delay: Duration,
    /// Random spread applied to computed delays, 0.0..=1.0 (0.1 = ±10 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// Three attempts, 1 s doubling up to 30 s, ±10 % jitter (the
    /// `WOMBAT_RETRY_*` defaults).
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(30_000),
            jitter: 0.1,
        }
    }
}

/// Everything [`crate::ControlPlane::new`] needs.
#[derive(Clone)]
pub struct ControlPlaneConfig {
    /// Backend root, e.g. `http://localhost:8000` (a path prefix is kept).
    pub base_url: String,
    /// Secret and algorithm used to mint agent tokens.
    pub jwt: JwtConfig,
    /// `X-Internal-Token` for the dispatch endpoints, if any.
    pub internal_token: Option<String>,
    /// Retry policy of every call except [`crate::ControlPlane::health_check`].
    pub retry: RetryPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout of one attempt.
    pub request_timeout: Duration,
    /// Timeout of the health probe.
    pub health_timeout: Duration,
}

impl ControlPlaneConfig {
    /// A config with default retries and timeouts (connect 5 s, request
    /// 30 s, health 2 s) and no internal token.
    pub fn new(base_url: impl Into<String>, jwt: JwtConfig) -> Self {
        Self {
            base_url: base_url.into(),
            jwt,
            internal_token: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(2),
        }
    }
}

impl fmt::Debug for ControlPlaneConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneConfig")
            .field(
                "base_url",
                &url::Url::parse(&self.base_url)
                    .map_or_else(|_| "<not a URL>".to_owned(), |u| without_credentials(&u)),
            )
            .field("jwt", &self.jwt)
            .field(
                "internal_token",
                &self.internal_token.as_ref().map(|_| "<redacted>"),
            )
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("health_timeout", &self.health_timeout)
            .finish()
    }
}

/// `url` as text with any user name and password replaced by `***`, for
/// `Debug` and errors.
pub(crate) fn without_credentials(url: &url::Url) -> String {
    // `mailto:user@host` and the like keep their "user" in the path.
    if url.cannot_be_a_base() {
        return format!("{}:***", url.scheme());
    }
    if url.username().is_empty() && url.password().is_none() {
        return url.as_str().to_owned();
    }
    let mut shown = url.clone();
    if shown.set_username("***").is_err() || shown.set_password(None).is_err() {
        return format!("{}://***", url.scheme());
    }
    shown.into()
}
