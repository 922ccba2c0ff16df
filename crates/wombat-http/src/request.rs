//! Small request/response helpers shared by every handler: the response body
//! type, JSON responses, reading a JSON body under a size limit, request ids
//! and the constant-time daemon-key check.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::UnsyncBoxBody};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{ApiError, HttpError};

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
    // An agent's answer (reply, usage, cost) is a few hundred bytes and
    // more: starting at 1 KiB saves serde_json's default 128 growing
    // (reallocating and copying) three times or more.
    let mut bytes = Vec::with_capacity(1024);
    match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => json_bytes_response(status, bytes),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("failed to serialise response: {e}"),
        )
        .into_response(),
    }
}

/// A response of JSON text already written.
pub(crate) fn json_bytes_response(status: StatusCode, json: Vec<u8>) -> http::Response<Body> {
    let mut resp = http::Response::new(full(json));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
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

/// The body timeout, when `e` says the body did not arrive in time.
fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> Option<std::time::Duration> {
    match e.downcast_ref::<crate::server::BodyError>() {
        Some(crate::server::BodyError::TimedOut(limit)) => Some(*limit),
        _ => None,
    }
}

/// Reads the whole body (at most `limit` bytes), checking the content type
/// and the declared length first. The request is borrowed, not taken: a
/// handler's future then holds a pointer, not the request (304 bytes), at
/// every level it passes through.
async fn read_body<B>(req: &mut http::Request<B>, limit: usize) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let headers = req.headers();
    check_json_content_type(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::payload_too_large(limit));
    }
    match Limited::new(req.body_mut(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::payload_too_large(limit))
        }
        Err(e) if body_timed_out(&*e).is_some() => {
            let secs = body_timed_out(&*e).map_or(0.0, |d| d.as_secs_f64());
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {secs} s (WOMBAT_BODY_TIMEOUT_SECS)"
                ),
            ))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "failed to read request body: {e}"
        ))),
    }
}

/// The JSON type a top-level field of a 0.1.0 payload had in its zod schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Number,
    Boolean,
    Object,
    Array,
    /// `z.union([z.string(), z.number()])` (ids).
    StringOrNumber,
    /// Anything (`z.any()`), checked later if at all.
    Any,
}

/// One top-level field of a 0.1.0 payload schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) required: bool,
}

impl Field {
    pub(crate) const fn required(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            kind,
            required: true,
        }
    }

    pub(crate) const fn optional(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            kind,
            required: false,
        }
    }
}

/// zod's name of a JSON value's type, as in "Expected string, received number".
fn zod_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String | Kind::StringOrNumber => "string",
        Kind::Number => "number",
        Kind::Boolean => "boolean",
        Kind::Object => "object",
        Kind::Array => "array",
        Kind::Any => "any",
    }
}

fn fits(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::String => v.is_string(),
        Kind::Number => v.is_number(),
        Kind::Boolean => v.is_boolean(),
        Kind::Object => v.is_object(),
        Kind::Array => v.is_array(),
        Kind::StringOrNumber => v.is_string() || v.is_number(),
        Kind::Any => true,
    }
}

/// zod's wording for a serde data error, where there is an obvious match
/// ("Required", "Expected string, received number", "Invalid enum value.
/// …"); any other error keeps serde's text.
fn zod_message(serde_message: &str) -> String {
    if serde_message.starts_with("missing field ") {
        return "Required".to_owned();
    }
    if let Some(rest) = serde_message.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let received = match got.split([' ', '`']).next().unwrap_or("") {
            "integer" | "floating" => "number",
            "string" => "string",
            "boolean" => "boolean",
            "null" | "unit" => "null",
            "map" => "object",
            "sequence" => "array",
            other => other,
        };
        let expected = match expected {
            "a string" => "string",
            "a boolean" => "boolean",
            "a sequence" => "array",
            "a map" => "object",
            e if e.starts_with("struct ") => "object",
            e if ["i", "u", "f"].iter().any(|p| e.starts_with(p)) => "number",
            _ => return format!("Expected {expected}, received {received}"),
        };
        return format!("Expected {expected}, received {received}");
    }
    // serde: "unknown variant `x`, expected `a`", "… expected `a` or `b`",
    // "… expected one of `a`, `b`, `c`".
    if let Some((got, expected)) = serde_message
        .strip_prefix("unknown variant ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        let quote = |s: &str| format!("'{}'", s.trim().trim_matches('`'));
        let expected = expected.strip_prefix("one of ").unwrap_or(expected);
        let options: Vec<String> = expected
            .split(", ")
            .flat_map(|s| s.split(" or "))
            .map(quote)
            .collect();
        return format!(
            "Invalid enum value. Expected {}, received {}",
            options.join(" | "),
            quote(got)
        );
    }
    serde_message.to_owned()
}

/// The 0.1.0 "Invalid payload" error: zod's `flatten()` shape in `details`
/// (`formErrors`, `fieldErrors`), plus a one-line `message` naming the
/// fields for humans.
fn invalid_payload(form_errors: Vec<String>, field_errors: Map<String, Value>) -> ApiError {
    let mut parts: Vec<String> = form_errors.clone();
    for (field, errors) in &field_errors {
        for e in errors.as_array().into_iter().flatten() {
            parts.push(format!("{field}: {}", e.as_str().unwrap_or_default()));
        }
    }
    ApiError::bad_request("Invalid payload").with_details(serde_json::json!({
        "formErrors": form_errors,
        "fieldErrors": field_errors,
        "message": parts.join("; "),
    }))
}

/// Reads the body of a 0.1.0 endpoint (`send`, `stream`, `/compact`,
/// `/llm-task`) like [`read_json`], but answers a payload that fails the
/// endpoint's schema the way 0.1.0 (zod) did: 400 `{"error":"Invalid
/// payload","details":{"formErrors":[…],"fieldErrors":{"<field>":[…]}}}`.
///
/// Every top-level field of `schema` is checked, so several problems are
/// reported at once, as zod does; a problem inside a field (say
/// `messages[0].role`) is reported under that top-level field. An empty body
/// is read as `{}`, as 0.1.0's body parser did. Bodies that are not JSON at
/// all get `invalid JSON body: …` (0.1.0 never reached its schema then).
///
/// A body over the limit is a 413 and a wrong content type a 415.
pub(crate) async fn read_payload<T, B>(
    req: &mut http::Request<B>,
    limit: usize,
    schema: &[Field],
) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = read_body(req, limit).await?;
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    // The happy path parses once, typed; only a body that fails is parsed
    // again (as a `Value`, then with path tracking) to name the problems.
    if let Ok(value) = wombat_core::json::from_slice(bytes) {
        return Ok(value);
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(invalid_payload(
            vec![format!("Expected object, received {}", zod_type(&value))],
            Map::new(),
        ));
    };
    let mut field_errors = Map::new();
    for field in schema {
        let message = match object.get(field.name) {
            None => field.required.then(|| "Required".to_owned()),
            // Beyond 0.1.0, `null` stands for an absent optional field.
            Some(Value::Null) if !field.required => None,
            Some(v) if fits(field.kind, v) => None,
            Some(v) if field.kind == Kind::StringOrNumber => Some(format!(
                "Expected string or number, received {}",
                zod_type(v)
            )),
            Some(v) => Some(format!(
                "Expected {}, received {}",
                kind_name(field.kind),
                zod_type(v)
            )),
        };
        if let Some(m) = message {
            field_errors.insert(field.name.to_owned(), Value::Array(vec![Value::String(m)]));
        }
    }
    // The top level fits: the problem is inside a field; serde names it.
    match serde_path_to_error::deserialize::<_, T>(&value) {
        Ok(parsed) if field_errors.is_empty() => Ok(parsed),
        Ok(_) => Err(invalid_payload(Vec::new(), field_errors)),
        Err(e) => {
            let field = match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
                _ => None,
            };
            let message = zod_message(&e.inner().to_string());
            let mut form_errors = Vec::new();
            match field {
                Some(f) => {
                    field_errors
                        .entry(f)
                        .or_insert_with(|| Value::Array(vec![Value::String(message)]));
                }
                // A missing field has no path: serde names it in the text.
                None => match e.inner().to_string().strip_prefix("missing field `") {
                    Some(rest) => {
                        let f = rest.trim_end_matches('`').to_owned();
                        field_errors
                            .entry(f)
                            .or_insert_with(|| Value::Array(vec![Value::String(message)]));
                    }
                    None if field_errors.is_empty() => form_errors.push(message),
                    None => {}
                },
            }
            Err(invalid_payload(form_errors, field_errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn request(ct: Option<&str>, body: &'static str) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(Bytes::from_static(body.as_bytes())));
        if let Some(ct) = ct {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).expect("valid"),
            );
        }
        req
    }

    async fn read(
        ct: Option<&str>,
        body: &'static str,
        limit: usize,
    ) -> Result<serde_json::Value, ApiError> {
        read_payload(&mut request(ct, body), limit, &[]).await
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
        // 0.1.0's body parser read an empty body as `{}`.
        assert_eq!(read(None, "", 100).await, Ok(serde_json::json!({})));
    }

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "only the parse outcome matters")]
    struct Payload {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        count: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Item {
        Red,
        Blue,
    }

    const SCHEMA: &[Field] = &[
        Field::required("name", Kind::String),
        Field::optional("items", Kind::Array),
        Field::optional("count", Kind::Number),
    ];

    async fn payload(body: &'static str) -> serde_json::Value {
        let err = read_payload::<Payload, _>(&mut request(None, body), 1000, SCHEMA)
            .await
            .expect_err("invalid payload");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.message, "Invalid payload");
        err.details.expect("details")
    }

    #[tokio::test]
    async fn schema_failures_have_zods_flattened_shape() {
        assert_eq!(
            payload(r#"{"count": "3"}"#).await,
            serde_json::json!({
                "formErrors": [],
                "fieldErrors": {"name": ["Required"], "count": ["Expected number, received string"]},
                "message": "count: Expected number, received string; name: Required",
            })
        );
        assert_eq!(
            payload(r#"{"name": "n", "items": ["green"]}"#).await["fieldErrors"],
            serde_json::json!({"items": ["Invalid enum value. Expected 'red' | 'blue', received 'green'"]})
        );
        assert_eq!(
            payload(r#"{"name": null}"#).await["fieldErrors"],
            serde_json::json!({"name": ["Expected string, received null"]})
        );
        assert_eq!(
            payload(r#"{"name": "n", "count": -1}"#).await["fieldErrors"],
            serde_json::json!({"count": ["invalid value: integer `-1`, expected u32"]})
        );
        assert_eq!(
            payload("[1]").await["formErrors"],
            serde_json::json!(["Expected object, received array"])
        );
        assert_eq!(
            payload("").await["fieldErrors"],
            serde_json::json!({"name": ["Required"]})
        );
    }

    #[test]
    fn serde_messages_in_zods_words() {
        assert_eq!(
            zod_message("invalid type: integer `5`, expected a string"),
            "Expected string, received number"
        );
        assert_eq!(
            zod_message("invalid type: string \"x\", expected a boolean"),
            "Expected boolean, received string"
        );
        assert_eq!(
            zod_message("invalid type: map, expected a sequence"),
            "Expected array, received object"
        );
        assert_eq!(zod_message("missing field `content`"), "Required");
        assert_eq!(zod_message("something else"), "something else");
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
