//! The crate's one error type, its classification (retryable? fail over?)
//! and the provider/model context every provider failure carries.
//!
//! An [`Error`] is an [`ErrorKind`] plus shared fields: the [`Failure`]
//! (provider, model, HTTP status, the provider's redacted message, the
//! `x-should-retry` hint) for errors a provider call produced, the retry
//! wait, and a few kind-specific details (the errors of every model for
//! [`ErrorKind::Exhausted`], the variable for [`ErrorKind::Config`]...).
//! Decisions (retry, fail over, the stable [`Error::code`], the `Display`
//! text) are made from the kind, each in one `match` below; adding a kind
//! means adding one arm to each.
//!
//! Classification is done once, where the failure is observed (HTTP status
//! code, the provider's error `type`/`code`/`status` field, transport error
//! kind); nothing here inspects message text.

use std::fmt;
use std::time::Duration;

use wombat_core::Provider;

/// Which provider and model failed, with what the provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// retry decision of the kind.
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

/// What went wrong, independent of who it happened to. Match on
/// [`Error::kind`] for this; the enum grows (tool errors were added in
/// 0.2), so a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// HTTP 429 (or Gemini `RESOURCE_EXHAUSTED`): slow down.
    RateLimited,
    /// The account is out of credit or quota (OpenAI `insufficient_quota`,
    /// HTTP 402, Anthropic `billing_error`, Gemini `FAILED_PRECONDITION`).
    QuotaExceeded,
    /// The key was rejected (401/403, Anthropic `authentication_error`,
    /// Gemini `API_KEY_INVALID`/`PERMISSION_DENIED`). The failure's message
    /// is ours (see [`Error::auth`]): providers' own texts for this case may
    /// quote part of the key.
    Auth,
    /// The model does not exist on this provider (404).
    ModelNotFound,
    /// The provider rejected the request itself (400, 413, 422). Retrying
    /// or failing over would not help.
    InvalidRequest,
    /// The prompt does not fit the model's context window (OpenAI
    /// `context_length_exceeded`).
    ContextLength,
    /// The provider is overloaded (503, 529, Anthropic `overloaded_error`,
    /// Gemini `UNAVAILABLE`).
    Overloaded,
    /// A server-side error (500, 502, 504, Anthropic `api_error`).
    Server,
    /// Any other unexpected HTTP status (409 among them, which is retried).
    UnexpectedStatus,
    /// Connecting or reading timed out (or the provider answered 408).
    Timeout,
    /// The connection failed or broke.
    Transport,
    /// The provider answered something we could not parse.
    MalformedResponse,
    /// A stream ended without the provider's end marker.
    Truncated,
    /// The request has tools but this provider or model cannot call tools.
    /// Another model may: the router fails over.
    ToolsUnsupported,
    /// The provider needs a key and none is configured.
    MissingApiKey,
    /// The router's total deadline for the request passed.
    DeadlineExceeded,
    /// Every model the router tried failed; [`Error::errors`] holds the last
    /// error of each model in the order tried.
    Exhausted,
    /// A model string that is empty or names an unknown provider.
    InvalidModel,
    /// A request named a model this router does not serve to requests: a
    /// keyless provider (the offline echo provider, Ollama) that the
    /// configuration does not use.
    ModelNotAllowed,
    /// A configuration value that is not valid.
    Config,
    /// The request cannot be expressed for this provider (a structured
    /// output it cannot do, no backend for the provider).
    Unsupported,
}

impl ErrorKind {
    /// The stable snake_case code of the kind, as [`Error::code`] gives it
    /// (which differs only for [`ErrorKind::Exhausted`]).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Auth => "provider_auth",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ContextLength => "context_length_exceeded",
            ErrorKind::Overloaded => "provider_overloaded",
            ErrorKind::Server => "provider_error",
            ErrorKind::UnexpectedStatus => "provider_unexpected_status",
            ErrorKind::Timeout => "provider_timeout",
            ErrorKind::Transport => "provider_unreachable",
            ErrorKind::MalformedResponse => "malformed_response",
            ErrorKind::Truncated => "stream_truncated",
            ErrorKind::ToolsUnsupported => "tools_unsupported",
            ErrorKind::MissingApiKey => "missing_api_key",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Exhausted => "llm_unavailable",
            ErrorKind::InvalidModel => "invalid_model",
            ErrorKind::ModelNotAllowed => "model_not_allowed",
            ErrorKind::Config => "invalid_config",
            ErrorKind::Unsupported => "unsupported",
        }
    }

    /// Whether trying the same model again may succeed, by kind alone.
    fn transient(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::Server
                | ErrorKind::Timeout
                | ErrorKind::Transport
                | ErrorKind::Truncated
        )
    }

    /// Whether another model may succeed, for kinds that are not transient.
    fn fails_over(self) -> bool {
        match self {
            ErrorKind::QuotaExceeded
            | ErrorKind::Auth
            | ErrorKind::ModelNotFound
            | ErrorKind::ContextLength
            | ErrorKind::MalformedResponse
            | ErrorKind::MissingApiKey
            | ErrorKind::UnexpectedStatus
            | ErrorKind::ToolsUnsupported => true,
            ErrorKind::InvalidRequest
            | ErrorKind::DeadlineExceeded
            | ErrorKind::Exhausted
            | ErrorKind::InvalidModel
            | ErrorKind::ModelNotAllowed
            | ErrorKind::Config
            | ErrorKind::Unsupported => false,
            ErrorKind::RateLimited
            | ErrorKind::Overloaded
            | ErrorKind::Server
            | ErrorKind::Timeout
            | ErrorKind::Transport
            | ErrorKind::Truncated => self.transient(),
        }
    }

    /// The text around a [`Failure`] in `Display` (`rate limited by
    /// openai/gpt-4o (http 429): ...`).
    fn around_failure(self) -> (&'static str, &'static str) {
        match self {
            ErrorKind::RateLimited => ("rate limited by ", ""),
            ErrorKind::QuotaExceeded => ("quota exceeded at ", ""),
            ErrorKind::ModelNotFound => ("model not found at ", ""),
            ErrorKind::InvalidRequest => ("invalid request to ", ""),
            ErrorKind::ContextLength => ("context length exceeded at ", ""),
            ErrorKind::Overloaded => ("provider overloaded: ", ""),
            ErrorKind::Server => ("provider server error: ", ""),
            ErrorKind::UnexpectedStatus => ("unexpected response from ", ""),
            ErrorKind::Timeout => ("timed out talking to ", ""),
            ErrorKind::Transport => ("transport error talking to ", ""),
            ErrorKind::MalformedResponse => ("malformed response from ", ""),
            ErrorKind::Truncated => ("stream from ", " ended before its end marker"),
            ErrorKind::ToolsUnsupported => ("tool calling is not supported by ", ""),
            // Kinds normally built without a failure; should one carry a
            // failure anyway, its code names the kind.
            ErrorKind::Auth
            | ErrorKind::MissingApiKey
            | ErrorKind::DeadlineExceeded
            | ErrorKind::Exhausted
            | ErrorKind::InvalidModel
            | ErrorKind::ModelNotAllowed
            | ErrorKind::Config
            | ErrorKind::Unsupported => ("", ""),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Everything that can go wrong in this crate: an [`ErrorKind`] with the
/// provider/model context and retry hints it came with.
///
/// Use [`Error::kind`] to tell failures apart, and [`Error::is_retryable`],
/// [`Error::should_failover`] and [`Error::retry_after`] rather than
/// deciding by hand what to do next. Errors from a provider call carry a
/// [`Failure`] naming the provider and model ([`Error::failure`]).
///
/// The error is one pointer wide (its fields are boxed), so `Result`s stay
/// small on the success path.
#[derive(Debug)]
pub struct Error(Box<Repr>);

#[derive(Debug)]
struct Repr {
    kind: ErrorKind,
    failure: Option<Failure>,
    retry_after: Option<Duration>,
    detail: Detail,
}

/// What some kinds carry beyond the shared fields.
#[derive(Debug)]
enum Detail {
    None,
    MissingApiKey {
        provider: Provider,
        env: &'static str,
    },
    Deadline(Duration),
    Exhausted {
        attempts: u32,
        errors: Vec<Error>,
    },
    Core(wombat_core::Error),
    Model(String),
    Config {
        var: String,
        reason: String,
    },
    Unsupported {
        provider: Provider,
        reason: String,
    },
}

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn with(kind: ErrorKind, failure: Option<Failure>, detail: Detail) -> Error {
        Error(Box::new(Repr {
            kind,
            failure,
            retry_after: None,
            detail,
        }))
    }

    /// An error of `kind` from a provider call, with its [`Failure`]. For a
    /// rejected key use [`Error::auth`], which replaces the provider's text.
    pub fn new(kind: ErrorKind, failure: Failure) -> Error {
        Error::with(kind, Some(failure), Detail::None)
    }

    /// The same error with the wait the provider asked for
    /// (`retry-after`); `None` clears it.
    #[must_use]
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Error {
        self.0.retry_after = wait;
        self
    }

    /// An [`ErrorKind::Auth`] error for `failure`, its message replaced by
    /// our own (`provider "openai" rejected the API key (HTTP 401); check
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
        Error::new(ErrorKind::Auth, failure)
    }

    /// [`ErrorKind::MissingApiKey`]: `provider` needs a key, to be set in `env`.
    pub fn missing_api_key(provider: Provider, env: &'static str) -> Error {
        Error::with(
            ErrorKind::MissingApiKey,
            None,
            Detail::MissingApiKey { provider, env },
        )
    }

    /// [`ErrorKind::DeadlineExceeded`]: the router's total `deadline` passed.
    pub fn deadline_exceeded(deadline: Duration) -> Error {
        Error::with(
            ErrorKind::DeadlineExceeded,
            None,
            Detail::Deadline(deadline),
        )
    }

    /// [`ErrorKind::Exhausted`]: every model failed, after `attempts` HTTP
    /// attempts in all; `errors` is the last error of each model, in order.
    pub fn exhausted(attempts: u32, errors: Vec<Error>) -> Error {
        Error::with(
            ErrorKind::Exhausted,
            None,
            Detail::Exhausted { attempts, errors },
        )
    }

    /// [`ErrorKind::ModelNotAllowed`] for the model string as the request
    /// gave it.
    pub fn model_not_allowed(model: impl Into<String>) -> Error {
        Error::with(
            ErrorKind::ModelNotAllowed,
            None,
            Detail::Model(model.into()),
        )
    }

    /// [`ErrorKind::Config`]: `var` (an env var or config field) is not
    /// valid, for `reason` (which names the offending value unless secret).
    pub fn config(var: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::with(
            ErrorKind::Config,
            None,
            Detail::Config {
                var: var.into(),
                reason: reason.into(),
            },
        )
    }

    /// [`ErrorKind::Unsupported`]: the request cannot be expressed for
    /// `provider`, for `reason`.
    pub fn unsupported(provider: Provider, reason: impl Into<String>) -> Error {
        Error::with(
            ErrorKind::Unsupported,
            None,
            Detail::Unsupported {
                provider,
                reason: reason.into(),
            },
        )
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// The provider/model failure this error is about, if any. For
    /// [`ErrorKind::Exhausted`] it is the last model's.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.0.detail {
            Detail::Exhausted { errors, .. } => errors.last().and_then(Error::failure),
            _ => self.0.failure.as_ref(),
        }
    }

    /// The provider the error is about, if any.
    pub fn provider(&self) -> Option<Provider> {
        match &self.0.detail {
            Detail::MissingApiKey { provider, .. } | Detail::Unsupported { provider, .. } => {
                Some(*provider)
            }
            _ => self.failure().map(|f| f.provider),
        }
    }

    /// For [`ErrorKind::Exhausted`], the last error of each model tried, in
    /// order; empty for other kinds.
    pub fn errors(&self) -> &[Error] {
        match &self.0.detail {
            Detail::Exhausted { errors, .. } => errors,
            _ => &[],
        }
    }

    /// For [`ErrorKind::Exhausted`], the HTTP attempts made across all models.
    pub fn attempts(&self) -> Option<u32> {
        match &self.0.detail {
            Detail::Exhausted { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }

    /// For [`ErrorKind::Config`], the env var (or config field) at fault;
    /// for [`ErrorKind::MissingApiKey`], the env var to set.
    pub fn config_var(&self) -> Option<&str> {
        match &self.0.detail {
            Detail::Config { var, .. } => Some(var),
            Detail::MissingApiKey { env, .. } => Some(env),
            _ => None,
        }
    }

    /// For [`ErrorKind::DeadlineExceeded`], the deadline that passed.
    pub fn deadline(&self) -> Option<Duration> {
        match &self.0.detail {
            Detail::Deadline(d) => Some(*d),
            _ => None,
        }
    }

    /// Applies the provider's `x-should-retry` header.
    pub(crate) fn set_should_retry(&mut self, hint: bool) {
        if let Some(f) = self.0.failure.as_mut() {
            f.should_retry = Some(hint);
        }
    }

    /// Whether trying the same model again may succeed: connect errors,
    /// timeouts, 408, 409, 429, 5xx, 529, overloaded errors and truncated
    /// streams. A provider's `x-should-retry` header overrides this.
    pub fn is_retryable(&self) -> bool {
        if self.0.kind != ErrorKind::Exhausted {
            if let Some(hint) = self.0.failure.as_ref().and_then(|f| f.should_retry) {
                return hint;
            }
        }
        self.transient_kind()
    }

    /// The retry decision by kind alone, ignoring `x-should-retry`.
    fn transient_kind(&self) -> bool {
        match self.0.kind {
            ErrorKind::UnexpectedStatus => {
                self.0.failure.as_ref().and_then(|f| f.status) == Some(409)
            }
            kind => kind.transient(),
        }
    }

    /// Whether another model (the fallback) may succeed where this one
    /// failed: every retryable error, plus auth, quota, unknown-model,
    /// context-length, malformed-response, tools-unsupported and
    /// missing-key errors. An invalid request, the deadline and
    /// configuration errors never fail over. A provider's
    /// `x-should-retry: false` stops retries of that model, not failover to
    /// another.
    pub fn should_failover(&self) -> bool {
        self.0.kind.fails_over()
    }

    /// Whether this is a rate limit; for [`ErrorKind::Exhausted`], whether
    /// every model tried was rate limited (the daemon then answers 429).
    pub fn is_rate_limited(&self) -> bool {
        match self.0.kind {
            ErrorKind::RateLimited => true,
            ErrorKind::Exhausted => {
                let errors = self.errors();
                !errors.is_empty() && errors.iter().all(Error::is_rate_limited)
            }
            _ => false,
        }
    }

    /// The wait the provider asked for. For [`ErrorKind::Exhausted`] it is
    /// the longest wait among the models, and only when every model was
    /// rate limited, so the daemon can answer `429` with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.0.kind {
            ErrorKind::Exhausted if self.is_rate_limited() => {
                self.errors().iter().filter_map(Error::retry_after).max()
            }
            ErrorKind::Exhausted => None,
            _ => self.0.retry_after,
        }
    }

    /// A stable snake_case code for API error bodies and metric labels:
    /// the kind's [`ErrorKind::code`], except that an
    /// [`ErrorKind::Exhausted`] where every model was rate limited is
    /// `rate_limited`.
    pub fn code(&self) -> &'static str {
        if self.0.kind == ErrorKind::Exhausted && self.is_rate_limited() {
            return ErrorKind::RateLimited.code();
        }
        self.0.kind.code()
    }

    /// Whether the failure was a timeout (a provider timeout or the deadline);
    /// the daemon maps these to 504. For [`ErrorKind::Exhausted`], the last
    /// model's error decides.
    pub fn is_timeout(&self) -> bool {
        match self.0.kind {
            ErrorKind::Timeout | ErrorKind::DeadlineExceeded => true,
            ErrorKind::Exhausted => self.errors().last().is_some_and(Error::is_timeout),
            _ => false,
        }
    }
}

impl From<wombat_core::Error> for Error {
    fn from(e: wombat_core::Error) -> Self {
        Error::with(ErrorKind::InvalidModel, None, Detail::Core(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.0.kind;
        if let Some(failure) = &self.0.failure {
            if kind == ErrorKind::Auth {
                // Our own message (see `auth`), which names the status.
                return write!(
                    f,
                    "{}/{}: {}",
                    failure.provider, failure.model, failure.message
                );
            }
            return match kind.around_failure() {
                ("", _) => write!(f, "{}: {failure}", kind.code()),
                (before, after) => write!(f, "{before}{failure}{after}"),
            };
        }
        match &self.0.detail {
            Detail::MissingApiKey { provider, env } => write!(
                f,
                "API key not configured for provider \"{provider}\". Set {env}."
            ),
            Detail::Deadline(deadline) => write!(
                f,
                "llm request exceeded its deadline of {}ms",
                deadline.as_millis()
            ),
            Detail::Exhausted { attempts, errors } => {
                write!(
                    f,
                    "all {} models failed after {attempts} attempts: ",
                    errors.len()
                )?;
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            Detail::Core(e) => write!(f, "{e}"),
            Detail::Model(model) => write!(
                f,
                "model {model:?} is not available: the echo and ollama providers only answer when the \
                 configuration uses them (LLM_PROVIDER=echo or LLM_PROVIDER=ollama, an LLM_MODEL_* \
                 variable naming echo/... or ollama/..., or for ollama OLLAMA_BASE_URL)"
            ),
            Detail::Config { var, reason } => write!(f, "invalid {var}: {reason}"),
            Detail::Unsupported { provider, reason } => {
                write!(f, "unsupported request for {provider}: {reason}")
            }
            Detail::None => f.write_str(kind.code()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.detail {
            // Shown as the error itself (it was `#[error(transparent)]`).
            Detail::Core(e) => std::error::Error::source(e),
            _ => None,
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
        let e = Error::missing_api_key(Provider::Anthropic, "ANTHROPIC_API_KEY");
        assert_eq!(
            e.to_string(),
            "API key not configured for provider \"anthropic\". Set ANTHROPIC_API_KEY."
        );
        assert!(e.should_failover());
        assert!(!e.is_retryable());
        assert_eq!(e.provider(), Some(Provider::Anthropic));
        assert_eq!(e.code(), "missing_api_key");
    }

    #[test]
    fn display_names_provider_model_and_message() {
        let e = Error::new(ErrorKind::RateLimited, failure())
            .with_retry_after(Some(Duration::from_secs(2)));
        assert_eq!(
            e.to_string(),
            "rate limited by openai/gpt-4o-mini (http 429): slow down"
        );
        assert!(e.is_retryable() && e.should_failover() && e.is_rate_limited());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let e = Error::new(ErrorKind::Truncated, Failure::new(Provider::Groq, "m", ""));
        assert_eq!(
            e.to_string(),
            "stream from groq/m ended before its end marker"
        );
    }

    #[test]
    fn should_retry_header_overrides_kind_default() {
        let mut e = Error::new(ErrorKind::Server, failure());
        e.set_should_retry(false);
        assert!(!e.is_retryable());
        assert!(e.should_failover());
        let mut e = Error::new(ErrorKind::InvalidRequest, failure());
        e.set_should_retry(true);
        assert!(e.is_retryable());
    }

    #[test]
    fn exhausted_is_rate_limited_only_when_every_model_was() {
        let limited = |secs| {
            Error::new(ErrorKind::RateLimited, failure())
                .with_retry_after(Some(Duration::from_secs(secs)))
        };
        let all = Error::exhausted(6, vec![limited(3), limited(7)]);
        assert!(all.is_rate_limited());
        assert_eq!(all.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(all.code(), "rate_limited");
        assert_eq!(all.kind(), ErrorKind::Exhausted);
        let mixed = Error::exhausted(4, vec![limited(3), Error::auth(failure())]);
        assert!(!mixed.is_rate_limited());
        assert_eq!(mixed.retry_after(), None);
        assert!(!mixed.should_failover());
        assert_eq!(mixed.code(), "llm_unavailable");
        assert_eq!(mixed.attempts(), Some(4));
        assert_eq!(mixed.errors().len(), 2);
        assert_eq!(mixed.failure().map(|f| f.status), Some(Some(429)));
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
        let e = Error::new(ErrorKind::InvalidRequest, failure());
        assert!(!e.is_retryable() && !e.should_failover());
        let e = Error::new(ErrorKind::ContextLength, failure());
        assert!(!e.is_retryable() && e.should_failover());
        let e = Error::new(ErrorKind::ToolsUnsupported, failure());
        assert!(!e.is_retryable() && e.should_failover());
        assert_eq!(e.code(), "tools_unsupported");
    }

    /// The codes are API: the daemon puts them in error bodies and metric
    /// labels. This pins every one.
    #[test]
    fn codes_are_stable() {
        let f = failure;
        let cases = [
            (Error::new(ErrorKind::RateLimited, f()), "rate_limited"),
            (Error::new(ErrorKind::QuotaExceeded, f()), "quota_exceeded"),
            (Error::auth(f()), "provider_auth"),
            (Error::new(ErrorKind::ModelNotFound, f()), "model_not_found"),
            (
                Error::new(ErrorKind::InvalidRequest, f()),
                "invalid_request",
            ),
            (
                Error::new(ErrorKind::ContextLength, f()),
                "context_length_exceeded",
            ),
            (
                Error::new(ErrorKind::Overloaded, f()),
                "provider_overloaded",
            ),
            (Error::new(ErrorKind::Server, f()), "provider_error"),
            (
                Error::new(ErrorKind::UnexpectedStatus, f()),
                "provider_unexpected_status",
            ),
            (Error::new(ErrorKind::Timeout, f()), "provider_timeout"),
            (
                Error::new(ErrorKind::Transport, f()),
                "provider_unreachable",
            ),
            (
                Error::new(ErrorKind::MalformedResponse, f()),
                "malformed_response",
            ),
            (Error::new(ErrorKind::Truncated, f()), "stream_truncated"),
            (
                Error::missing_api_key(Provider::OpenAi, "OPENAI_API_KEY"),
                "missing_api_key",
            ),
            (
                Error::deadline_exceeded(Duration::from_secs(1)),
                "deadline_exceeded",
            ),
            (
                Error::exhausted(1, vec![Error::new(ErrorKind::Server, f())]),
                "llm_unavailable",
            ),
            (
                Error::from(wombat_core::Error::InvalidModel { model: "".into() }),
                "invalid_model",
            ),
            (Error::model_not_allowed("echo/x"), "model_not_allowed"),
            (Error::config("LLM_PROVIDER", "bad"), "invalid_config"),
            (Error::unsupported(Provider::Echo, "no"), "unsupported"),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e:?}");
        }
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
