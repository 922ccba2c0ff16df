//! The crate's one error type, its classification (retryable? fail over?)
//! and the provider/model context every provider failure carries.
//!
//! Classification is done once, where the failure is observed (HTTP status
//! code, the provider's error `type`/`code`/`status` field, transport error
//! kind); nothing here inspects message text.

use std::fmt;
use std::time::Duration;

use wombat_core::Provider;

/// Which provider and model failed, with what the provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The provider that was called.
    pub provider: Provider,
    /// The provider's model id (without the `provider/` prefix).
    pub model: String,
    /// The HTTP status, when the failure came from an HTTP response. A
    /// provider error inside a `200` stream has no status.
    pub status: Option<u16>,
    /// The provider's own message, kept as sent (our API key, should it be
    /// echoed back, is redacted), or a description of the transport failure.
    pub message: String,
    /// The provider's `x-should-retry` header, which overrides the default
    /// retry decision of the variant.
    pub should_retry: Option<bool>,
}

impl Failure {
    /// A failure without HTTP status or retry hint.
    pub fn new(provider: Provider, model: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            status: None,
            message: message.into(),
            should_retry: None,
        }
    }

    /// The same failure with an HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)?;
        if let Some(status) = self.status {
            write!(f, " (http {status})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in this crate.
///
/// Provider failures carry a [`Failure`] naming the provider and model. Use
/// [`Error::is_retryable`], [`Error::should_failover`] and
/// [`Error::retry_after`] rather than matching variants by hand when deciding
/// what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// HTTP 429 (or Gemini `RESOURCE_EXHAUSTED`): slow down.
    #[error("rate limited by {failure}")]
    RateLimited {
        /// Who and what.
        failure: Failure,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The account is out of credit or quota (OpenAI `insufficient_quota`,
    /// HTTP 402, Anthropic `billing_error`, Gemini `FAILED_PRECONDITION`).
    #[error("quota exceeded at {failure}")]
    QuotaExceeded {
        /// Who and what.
        failure: Failure,
    },
    /// The key was rejected (401/403, Anthropic `authentication_error`,
    /// Gemini `API_KEY_INVALID`/`PERMISSION_DENIED`). The failure's message
    /// is ours (see [`Error::auth`]): providers' own texts for this case may
    /// quote part of the key.
    #[error("{}/{}: {}", failure.provider, failure.model, failure.message)]
    Auth {
        /// Who and what.
        failure: Failure,
    },
    /// The model does not exist on this provider (404).
    #[error("model not found at {failure}")]
    ModelNotFound {
        /// Who and what.
        failure: Failure,
    },
    /// The provider rejected the request itself (400, 413, 422). Retrying
    /// or failing over would not help.
    #[error("invalid request to {failure}")]
    InvalidRequest {
        /// Who and what.
        failure: Failure,
    },
    /// The prompt does not fit the model's context window (OpenAI
    /// `context_length_exceeded`).
    #[error("context length exceeded at {failure}")]
    ContextLength {
        /// Who and what.
        failure: Failure,
    },
    /// The provider is overloaded (503, 529, Anthropic `overloaded_error`,
    /// Gemini `UNAVAILABLE`).
    #[error("provider overloaded: {failure}")]
    Overloaded {
        /// Who and what.
        failure: Failure,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// A server-side error (500, 502, 504, Anthropic `api_error`).
    #[error("provider server error: {failure}")]
    Server {
        /// Who and what.
        failure: Failure,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Any other unexpected HTTP status (409 among them, which is retried).
    #[error("unexpected response from {failure}")]
    UnexpectedStatus {
        /// Who and what.
        failure: Failure,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Connecting or reading timed out (or the provider answered 408).
    #[error("timed out talking to {failure}")]
    Timeout {
        /// Who and what.
        failure: Failure,
    },
    /// The connection failed or broke.
    #[error("transport error talking to {failure}")]
    Transport {
        /// Who and what.
        failure: Failure,
    },
    /// The provider answered something we could not parse.
    #[error("malformed response from {failure}")]
    MalformedResponse {
        /// Who and what.
        failure: Failure,
    },
    /// A stream ended without the provider's end marker.
    #[error("stream from {failure} ended before its end marker")]
    Truncated {
        /// Who and what.
        failure: Failure,
    },
    /// The provider needs a key and none is configured.
    #[error("API key not configured for provider \"{provider}\". Set {env}.")]
    MissingApiKey {
        /// The provider.
        provider: Provider,
        /// The env var to set.
        env: &'static str,
    },
    /// The router's total deadline for the request passed.
    #[error("llm request exceeded its deadline of {}ms", deadline.as_millis())]
    DeadlineExceeded {
        /// The deadline that passed.
        deadline: Duration,
    },
    /// Every model the router tried failed; `errors` holds the last error of
    /// each model in the order tried.
    #[error("all {} models failed after {attempts} attempts: {}", errors.len(), ErrorList(errors))]
    Exhausted {
        /// HTTP attempts made across all models.
        attempts: u32,
        /// The last error of each model tried.
        errors: Vec<Error>,
    },
    /// A model string that is empty or names an unknown provider.
    #[error(transparent)]
    InvalidModel(#[from] wombat_core::Error),
    /// A request named a model this router does not serve to requests: a
    /// keyless provider (the offline echo provider, Ollama) that the
    /// configuration does not use.
    #[error(
        "model {model:?} is not available: the echo and ollama providers only answer when the \
         configuration uses them (LLM_PROVIDER=echo or LLM_PROVIDER=ollama, an LLM_MODEL_* \
         variable naming echo/... or ollama/..., or for ollama OLLAMA_BASE_URL)"
    )]
    ModelNotAllowed {
        /// The model string as the request gave it.
        model: String,
    },
    /// A configuration value that is not valid.
    #[error("invalid {var}: {reason}")]
    Config {
        /// The env var (or config field) at fault.
        var: String,
        /// What is wrong, including the offending value for non-secrets.
        reason: String,
    },
    /// The structured-output request cannot be expressed for this provider.
    #[error("unsupported request for {provider}: {reason}")]
    Unsupported {
        /// The provider.
        provider: Provider,
        /// Why.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

struct ErrorList<'a>(&'a [Error]);

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Error {
    /// An [`Error::Auth`] for `failure`, its message replaced by our own
    /// (`provider "openai" rejected the API key (HTTP 401); check
    /// OPENAI_API_KEY`). Providers' texts for a rejected key quote a masked
    /// part of it (`sk-OPENA*****cdef`), which must not reach callers, and
    /// say nothing our message does not.
    pub fn auth(mut failure: Failure) -> Error {
        let provider = failure.provider;
        let status = failure
            .status
            .map(|s| format!(" (HTTP {s})"))
            .unwrap_or_default();
        let check = match provider.api_key_envs() {
            [] => "the credentials the server expects".to_owned(),
            envs => envs.join(" or "),
        };
        failure.message = if failure.status == Some(403) {
            format!(
                "provider \"{provider}\" denied access with the API key{status}; check {check} and its permissions"
            )
        } else {
            format!("provider \"{provider}\" rejected the API key{status}; check {check}")
        };
        Error::Auth { failure }
    }

    /// The provider/model failure this error is about, if any. For
    /// [`Error::Exhausted`] it is the last model's.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Error::RateLimited { failure, .. }
            | Error::QuotaExceeded { failure }
            | Error::Auth { failure }
            | Error::ModelNotFound { failure }
            | Error::InvalidRequest { failure }
            | Error::ContextLength { failure }
            | Error::Overloaded { failure, .. }
            | Error::Server { failure, .. }
            | Error::UnexpectedStatus { failure, .. }
            | Error::Timeout { failure }
            | Error::Transport { failure }
            | Error::MalformedResponse { failure }
            | Error::Truncated { failure } => Some(failure),
            Error::Exhausted { errors, .. } => errors.last().and_then(Error::failure),
            _ => None,
        }
    }

    /// The provider the error is about, if any.
    pub fn provider(&self) -> Option<Provider> {
        match self {
            Error::MissingApiKey { provider, .. } | Error::Unsupported { provider, .. } => {
                Some(*provider)
            }
            _ => self.failure().map(|f| f.provider),
        }
    }

    /// Whether trying the same model again may succeed: connect errors,
    /// timeouts, 408, 409, 429, 5xx, 529, overloaded errors and truncated
    /// streams. A provider's `x-should-retry` header overrides this.
    pub fn is_retryable(&self) -> bool {
        if let Some(hint) = self.failure().and_then(|f| f.should_retry) {
            if !matches!(self, Error::Exhausted { .. }) {
                return hint;
            }
        }
        self.transient_kind()
    }

    /// The retry decision by variant alone, ignoring `x-should-retry`.
    fn transient_kind(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::Overloaded { .. }
            | Error::Server { .. }
            | Error::Timeout { .. }
            | Error::Transport { .. }
            | Error::Truncated { .. } => true,
            Error::UnexpectedStatus { failure, .. } => failure.status == Some(409),
            _ => false,
        }
    }

    /// Whether another model (the fallback) may succeed where this one
    /// failed: every retryable error, plus auth, quota, unknown-model,
    /// context-length, malformed-response and missing-key errors. An invalid
    /// request, the deadline and configuration errors never fail over. A
    /// provider's `x-should-retry: false` stops retries of that model, not
    /// failover to another.
    pub fn should_failover(&self) -> bool {
        match self {
            Error::QuotaExceeded { .. }
            | Error::Auth { .. }
            | Error::ModelNotFound { .. }
            | Error::ContextLength { .. }
            | Error::MalformedResponse { .. }
            | Error::MissingApiKey { .. }
            | Error::UnexpectedStatus { .. } => true,
            Error::InvalidRequest { .. }
            | Error::DeadlineExceeded { .. }
            | Error::Exhausted { .. }
            | Error::InvalidModel(_)
            | Error::ModelNotAllowed { .. }
            | Error::Config { .. }
            | Error::Unsupported { .. } => false,
            _ => self.transient_kind(),
        }
    }

    /// Whether this is a rate limit; for [`Error::Exhausted`], whether every
    /// model tried was rate limited (the daemon then answers 429).
    pub fn is_rate_limited(&self) -> bool {
        match self {
            Error::RateLimited { .. } => true,
            Error::Exhausted { errors, .. } => {
                !errors.is_empty() && errors.iter().all(Error::is_rate_limited)
            }
            _ => false,
        }
    }

    /// The wait the provider asked for. For [`Error::Exhausted`] it is the
    /// longest wait among the models, and only when every model was rate
    /// limited, so the daemon can answer `429` with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. }
            | Error::Overloaded { retry_after, .. }
            | Error::Server { retry_after, .. }
            | Error::UnexpectedStatus { retry_after, .. } => *retry_after,
            Error::Exhausted { errors, .. } if self.is_rate_limited() => {
                errors.iter().filter_map(Error::retry_after).max()
            }
            _ => None,
        }
    }

    /// A stable snake_case code for API error bodies and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Error::RateLimited { .. } => "rate_limited",
            Error::QuotaExceeded { .. } => "quota_exceeded",
            Error::Auth { .. } => "provider_auth",
            Error::ModelNotFound { .. } => "model_not_found",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::ContextLength { .. } => "context_length_exceeded",
            Error::Overloaded { .. } => "provider_overloaded",
            Error::Server { .. } => "provider_error",
            Error::UnexpectedStatus { .. } => "provider_unexpected_status",
            Error::Timeout { .. } => "provider_timeout",
            Error::Transport { .. } => "provider_unreachable",
            Error::MalformedResponse { .. } => "malformed_response",
            Error::Truncated { .. } => "stream_truncated",
            Error::MissingApiKey { .. } => "missing_api_key",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Exhausted { .. } => {
                if self.is_rate_limited() {
                    "rate_limited"
                } else {
                    "llm_unavailable"
                }
            }
            Error::InvalidModel(_) => "invalid_model",
            Error::ModelNotAllowed { .. } => "model_not_allowed",
            Error::Config { .. } => "invalid_config",
            Error::Unsupported { .. } => "unsupported",
        }
    }

    /// Whether the failure was a timeout (a provider timeout or the deadline);
    /// the daemon maps these to 504. For [`Error::Exhausted`], the last
    /// model's error decides.
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::DeadlineExceeded { .. } => true,
            Error::Exhausted { errors, .. } => errors.last().is_some_and(Error::is_timeout),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Failure {
        Failure::new(Provider::OpenAi, "gpt-4o-mini", "slow down").with_status(429)
    }

    #[test]
    fn missing_key_message_is_exact() {
        let e = Error::MissingApiKey {
            provider: Provider::Anthropic,
            env: "ANTHROPIC_API_KEY",
        };
        assert_eq!(
            e.to_string(),
            "API key not configured for provider \"anthropic\". Set ANTHROPIC_API_KEY."
        );
        assert!(e.should_failover());
        assert!(!e.is_retryable());
    }

    #[test]
    fn display_names_provider_model_and_message() {
        let e = Error::RateLimited {
            failure: failure(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            e.to_string(),
            "rate limited by openai/gpt-4o-mini (http 429): slow down"
        );
        assert!(e.is_retryable() && e.should_failover() && e.is_rate_limited());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn should_retry_header_overrides_variant_default() {
        let mut f = failure();
        f.should_retry = Some(false);
        let e = Error::Server {
            failure: f,
            retry_after: None,
        };
        assert!(!e.is_retryable());
        assert!(e.should_failover());
        let mut f = failure();
        f.should_retry = Some(true);
        assert!(Error::InvalidRequest { failure: f }.is_retryable());
    }

    #[test]
    fn exhausted_is_rate_limited_only_when_every_model_was() {
        let limited = |secs| Error::RateLimited {
            failure: failure(),
            retry_after: Some(Duration::from_secs(secs)),
        };
        let all = Error::Exhausted {
            attempts: 6,
            errors: vec![limited(3), limited(7)],
        };
        assert!(all.is_rate_limited());
        assert_eq!(all.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(all.code(), "rate_limited");
        let mixed = Error::Exhausted {
            attempts: 4,
            errors: vec![limited(3), Error::auth(failure())],
        };
        assert!(!mixed.is_rate_limited());
        assert_eq!(mixed.retry_after(), None);
        assert!(!mixed.should_failover());
        assert!(
            mixed
                .to_string()
                .starts_with("all 2 models failed after 4 attempts: ")
        );
    }

    #[test]
    fn auth_errors_carry_our_message_not_the_providers() {
        let leaky = Failure::new(
            Provider::OpenAi,
            "gpt-4o-mini",
            "Incorrect API key provided: sk-OPENA*****cdef.",
        )
        .with_status(401);
        let e = Error::auth(leaky);
        assert_eq!(
            e.to_string(),
            "openai/gpt-4o-mini: provider \"openai\" rejected the API key (HTTP 401); check OPENAI_API_KEY"
        );
        let e = Error::auth(Failure::new(Provider::Google, "gemini", "x").with_status(403));
        assert_eq!(
            e.failure().map(|f| f.message.as_str()),
            Some(
                "provider \"google\" denied access with the API key (HTTP 403); check GEMINI_API_KEY or GOOGLE_API_KEY and its permissions"
            )
        );
        assert_eq!(e.code(), "provider_auth");
    }

    #[test]
    fn invalid_request_neither_retries_nor_fails_over() {
        let e = Error::InvalidRequest { failure: failure() };
        assert!(!e.is_retryable() && !e.should_failover());
        let e = Error::ContextLength { failure: failure() };
        assert!(!e.is_retryable() && e.should_failover());
    }
}
