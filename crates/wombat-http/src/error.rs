//! The daemon's one API error type: every failure a handler can meet maps to
//! a status code and a JSON body `{"error", "code", "details"?}`, with
//! `error` first as in 0.1.0. Building the response has no side effects;
//! logging 5xx happens once, centrally, in the access log. The type itself
//! is `wombat-agent`'s (a run reports its failures with it).

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::Value;

use crate::request::{Body, full};

pub(crate) use wombat_agent::ApiError;

#[derive(Serialize)]
struct WireError<'a> {
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a Value>,
}

/// The errors only the HTTP layer produces, and the response of any error.
pub(crate) trait HttpError: Sized {
    fn not_found(path: &str) -> Self;
    fn method_not_allowed(method: &http::Method, path: &str) -> Self;
    fn invalid_daemon_key() -> Self;
    fn payload_too_large(limit: usize) -> Self;
    fn unsupported_media_type(got: Option<&str>) -> Self;
    /// The response for this error.
    fn into_response(self) -> http::Response<Body>;
}

impl HttpError for ApiError {
    fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )
    }

    fn method_not_allowed(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method {method} is not allowed on {path}"),
        )
    }

    fn invalid_daemon_key() -> Self {
        // The exact 0.1.0 message; backends may match on it.
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_daemon_key",
            "Invalid daemon key",
        )
    }

    fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    fn unsupported_media_type(got: Option<&str>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            match got {
                Some(ct) => format!("expected content-type application/json, got {ct}"),
                None => "expected content-type application/json".to_owned(),
            },
        )
    }

    /// The response for this error.
    fn into_response(self) -> http::Response<Body> {
        let body = serde_json::to_vec(&WireError {
            error: &self.message,
            code: self.code,
            details: self.details.as_ref(),
        })
        .unwrap_or_else(|_| br#"{"error":"internal error","code":"internal"}"#.to_vec());
        let mut resp = http::Response::new(full(Bytes::from(body)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_has_error_first_and_retry_after_header() {
        let resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .with_retry_after(3)
            .with_details(serde_json::json!({"provider": "openai"}))
            .into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            br#"{"error":"slow down","code":"rate_limited","details":{"provider":"openai"}}"#
        );
    }
}
