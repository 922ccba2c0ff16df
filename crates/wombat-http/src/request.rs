//! Small request/response helpers shared by every handler: the response body
//! type, JSON responses, reading a JSON body under a size limit, request ids
//! and the constant-time daemon-key check.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body of every response: a full buffer or an SSE stream.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Header carrying the request id, both ways.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Longest caller-supplied request id we echo; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A body from a complete buffer.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    UnsyncBoxBody::new(Full::new(bytes.into()))
}

/// A JSON response with the given status.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> http::Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut resp = http::Response::new(full(bytes));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("failed to serialise response: {e}"),
        )
        .into_response(),
    }
}

/// The caller's request id when it is short printable ASCII, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

/// Compares a presented secret with the expected one without an early exit
/// on the first differing byte.
pub(crate) fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    let diff = presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// Checks that the request declares a JSON body (`application/json` or a
/// `+json` type). A request with no content type at all is accepted, as
/// 0.1.0's clients did not always send one; any other declared type (for
/// example curl's default form encoding) is a 415.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence[..essence.len() - 5].contains('/')
            && essence.to_ascii_lowercase().ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(Some(text)))
    }
}

/// Reads the whole body (at most `limit` bytes) and parses it as JSON.
///
/// A body over the limit is a 413, a wrong content type a 415, and JSON that
/// does not parse or does not fit `T` a 400 naming the problem.
pub(crate) async fn read_json<T, B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    check_json_content_type(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::payload_too_large(limit));
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "failed to read request body: {e}"
            )));
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty: expected a JSON object",
        ));
    }
    // The happy path parses once without path tracking (which allocates per
    // field); only a body that fails is parsed again to name the field.
    if let Ok(value) = serde_json::from_slice(&bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn headers(ct: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(ct) = ct {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).expect("valid"),
            );
        }
        h
    }

    async fn read(
        ct: Option<&str>,
        body: &'static str,
        limit: usize,
    ) -> Result<serde_json::Value, ApiError> {
        read_json(
            &headers(ct),
            Full::new(Bytes::from_static(body.as_bytes())),
            limit,
        )
        .await
    }

    #[tokio::test]
    async fn json_bodies() {
        assert!(read(Some("application/json"), "{}", 10).await.is_ok());
        assert!(
            read(Some("application/json; charset=utf-8"), "{}", 10)
                .await
                .is_ok()
        );
        assert!(
            read(Some("application/vnd.api+json"), "{}", 10)
                .await
                .is_ok()
        );
        assert!(read(None, "{}", 10).await.is_ok());
        assert_eq!(
            read(Some("text/plain"), "{}", 10)
                .await
                .map_err(|e| e.status),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            read(Some("+json"), "{}", 10).await.map_err(|e| e.status),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            read(None, "{\"a\": 12345}", 5).await.map_err(|e| e.status),
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let err = read(None, "{nope", 100).await.expect_err("invalid");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.message.starts_with("invalid JSON body: "),
            "{}",
            err.message
        );
        assert_eq!(
            read(None, "", 100).await.map_err(|e| e.status),
            Err(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(
            REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(129)).expect("valid"),
        );
        assert_eq!(request_id(&h).len(), 32);
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret1", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
