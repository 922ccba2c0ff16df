//! The one error type of a run: every failure maps to a status code and a
//! JSON body `{"error", "code", "details"?}` (`error` first, as in 0.1.0).
//! The HTTP layer turns it into a response or an SSE `error` event; building
//! it has no side effects.

use http::StatusCode;
use serde_json::Value;

/// A failed request, ready to be turned into a response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code (`invalid_request`, `llm_timeout`, …).
    pub code: &'static str,
    /// The human-readable message.
    pub message: String,
    /// Structured details, when there are any.
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 and some 503s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// Adds structured details.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Adds a `Retry-After` in seconds.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// `400 invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}
