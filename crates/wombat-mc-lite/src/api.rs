//! The HTTP surface: one infallible [`handle`] with a `match` router, auth
//! (agent JWT or internal token), body limits, validation and the JSON error
//! body of the contract. Persistence lives in `store`; this module holds no
//! data itself.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value, json};
use wombat_controlplane::{JwtConfig, JwtError, jwt};

use crate::store::{
    self, IdemScope, NewDocumentRow, NewMessageRow, NewNotificationRow, NewTaskRow,
    NewToolRequestRow, Resolution, Store,
};

/// Default and largest page sizes of list endpoints.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
pub(crate) const MAX_LIMIT: u32 = 200;
/// Default and largest `limit_users` / `limit_notifications`.
const DEFAULT_DISPATCH_LIMIT: usize = 25;
const MAX_DISPATCH_LIMIT: usize = 500;
/// Longest id (task id of a tool request), tool name and call id, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Largest `arguments` of a tool request, as JSON text.
const MAX_ARGUMENTS_BYTES: usize = 256 * 1024;
/// Longest `reason` of a decision, in bytes.
const MAX_REASON_BYTES: usize = 4096;

/// Shared state of every request.
pub(crate) struct State {
    pub store: Store,
    pub jwt: JwtConfig,
    pub internal_token: Option<Vec<u8>>,
    pub max_body_bytes: usize,
    pub mcp: crate::mcp::McpEndpoint,
}

/// A failed request: status plus the contract's `{"error","code"}` body.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub error: String,
    pub code: &'static str,
}

impl ApiError {
    pub(crate) fn new(status: u16, error: impl Into<String>, code: &'static str) -> Self {
        Self {
            status,
            error: error.into(),
            code,
        }
    }

    pub(crate) fn bad_request(error: impl Into<String>, code: &'static str) -> Self {
        Self::new(400, error, code)
    }

    pub(crate) fn not_found(error: impl Into<String>) -> Self {
        Self::new(404, error, "not_found")
    }

    pub(crate) fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(401, error, "unauthorized")
    }

    /// A server-side failure; the detail is logged, never sent.
    pub(crate) fn internal(detail: String) -> Self {
        Self::new(500, detail, "internal_error")
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let message = if self.status >= 500 {
            // Logged once, here; the client sees a generic text.
            tracing::error!(status = self.status, detail = %self.error, "request failed");
            "internal server error".to_owned()
        } else {
            self.error
        };
        // Written by hand so that `error` comes first, as the contract shows.
        let body = format!(
            "{{\"error\":{},\"code\":{}}}",
            Value::String(message),
            Value::String(self.code.to_owned())
        );
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The endpoints, recognised by path alone (so a wrong method is a 405).
enum Endpoint {
    Health,
    Capabilities,
    Tasks,
    TaskMessages(String),
    TaskDocuments(String),
    Messages,
    Documents,
    Heartbeat,
    Standup,
    Undelivered,
    Enqueue,
    Deliver(String),
    ToolRequests,
    ToolRequest(String),
    ToolRequestConsume(String),
}

impl Endpoint {
    fn route(path: &str) -> Option<Self> {
        if path == "/health" {
            return Some(Self::Health);
        }
        let rest = path.strip_prefix("/api/mission-control/")?;
        let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        Some(match segs.as_slice() {
            ["capabilities"] => Self::Capabilities,
            ["tasks"] => Self::Tasks,
            ["tasks", id, "messages"] if !id.is_empty() => Self::TaskMessages(decode_segment(id)?),
            ["tasks", id, "documents"] if !id.is_empty() => {
                Self::TaskDocuments(decode_segment(id)?)
            }
            ["messages"] => Self::Messages,
            ["documents"] => Self::Documents,
            ["heartbeat"] => Self::Heartbeat,
            ["standup"] => Self::Standup,
            ["dispatch", "undelivered"] => Self::Undelivered,
            ["dispatch", "notifications"] => Self::Enqueue,
            ["dispatch", "notifications", id, "deliver"] if !id.is_empty() => {
                Self::Deliver(decode_segment(id)?)
            }
            ["tool-requests"] => Self::ToolRequests,
            ["tool-requests", id] if !id.is_empty() => Self::ToolRequest(decode_segment(id)?),
            ["tool-requests", id, "consume"] if !id.is_empty() => {
                Self::ToolRequestConsume(decode_segment(id)?)
            }
            _ => return None,
        })
    }

    fn allowed(&self) -> &'static [Method] {
        match self {
            Self::Tasks | Self::ToolRequests => &[Method::GET, Method::POST],
            Self::ToolRequest(_) => &[Method::GET, Method::PATCH],
            Self::Health
            | Self::Capabilities
            | Self::TaskMessages(_)
            | Self::TaskDocuments(_)
            | Self::Undelivered => &[Method::GET],
            Self::Messages
            | Self::Documents
            | Self::Heartbeat
            | Self::Standup
            | Self::Enqueue
            | Self::Deliver(_)
            | Self::ToolRequestConsume(_) => &[Method::POST],
        }
    }
}

/// Percent-decodes one path segment (ids are opaque to clients and may
/// have been escaped).
fn decode_segment(seg: &str) -> Option<String> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Query parameters, percent-decoded (`+` is a space).
fn query(req_query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = req_query else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode_segment(&k.replace('+', " "))?;
            let v = decode_segment(&v.replace('+', " "))?;
            Some((k, v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn int_param(
    params: &[(String, String)],
    name: &str,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    match param(params, name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                format!("{name} must be an integer between 1 and {max}, got {v:?}"),
                "invalid_parameter",
            )),
        },
    }
}

/// `cursor` (as the sequence number to start after) and `limit` of a list
/// endpoint.
fn page_params(params: &[(String, String)]) -> Result<(i64, u32), ApiError> {
    let limit = int_param(params, "limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let after = match param(params, "cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => store::decode_cursor(c)?,
    };
    Ok((after, limit))
}

/// Answers one request; never fails (every error becomes a JSON response).
pub(crate) async fn handle<B>(state: Arc<State>, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if req.uri().path() == "/mcp" {
        return crate::mcp::handle(state, req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = dispatch(&state, req).await;
    let resp = match result {
        Ok((status, body)) => json_response(status, &body),
        Err(e) => with_allow(&path, e.into_response()),
    };
    tracing::debug!(%method, path, status = resp.status().as_u16(), "request");
    resp
}

async fn dispatch<B>(state: &State, req: Request<B>) -> Result<(StatusCode, Value), ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(endpoint) = Endpoint::route(req.uri().path()) else {
        return Err(ApiError::not_found(format!(
            "no route for {}",
            req.uri().path()
        )));
    };
    let allowed = endpoint.allowed();
    if !allowed.contains(req.method()) {
        let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        return Err(ApiError::new(
            405,
            format!(
                "method {} not allowed; use {}",
                req.method(),
                list.join(", ")
            ),
            "method_not_allowed",
        ));
    }
    let params = query(req.uri().query());
    let ok = |v: Value| Ok((StatusCode::OK, v));
    match endpoint {
        Endpoint::Health => {
            let v = state
                .store
                .read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                .await?;
            ok(json!({ "status": "ok", "database": v == 1 }))
        }
        Endpoint::Capabilities => {
            agent_user(state, &req)?;
            ok(json!({
                "contract_version": wombat_core::controlplane::CONTRACT_VERSION,
                "features": {
                    "tasks": true,
                    "messages": true,
                    "documents": true,
                    "notifications_dispatch": state.internal_token.is_some(),
                    "events_sse": false,
                    "heartbeat": true,
                    "standup": true,
                    "tool_requests": true,
                    "tool_requests_consume": true,
                    "task_title_filter": true,
                },
            }))
        }
        Endpoint::Tasks if req.method() == Method::GET => {
            let user = agent_user(state, &req)?;
            let (after, limit) = page_params(&params)?;
            // `title` (exact match) is the optional task_title_filter; an
            // empty value filters nothing, like an absent one.
            let title = param(&params, "title")
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            ok(state
                .store
                .read(move |conn| store::list_tasks(conn, &user, title.as_deref(), after, limit))
                .await?)
        }
        Endpoint::Tasks => {
            let user = agent_user(state, &req)?;
            let body = read_json(state, req).await?;
            let key = idempotency_key(&body)?;
            let row = NewTaskRow {
                title: required_str(&body, "title")?,
                description: optional_str(&body, "description")?,
                status: optional_str(&body, "status")?.unwrap_or_else(|| "open".into()),
                metadata: optional_object(&body, "metadata")?,
            };
            let fp = fingerprint(&body);
            let now = now_ms();
            let expired_before = now.saturating_sub(state.store.retention_ms());
            ok(state
                .store
                .write(move |conn| {
                    let scope = IdemScope {
                        user_id: &user,
                        endpoint: "tasks",
                        key: key.as_deref(),
                        fingerprint: &fp,
                        now,
                        expired_before,
                    };
                    store::idempotent(conn, &scope, |tx| store::insert_task(tx, &user, &row, now))
                })
                .await?)
        }
        Endpoint::TaskMessages(task_id) => {
            let user = agent_user(state, &req)?;
            let (after, limit) = page_params(&params)?;
            ok(state
                .store
                .read(move |conn| store::list_messages(conn, &user, &task_id, after, limit))
                .await?)
        }
        Endpoint::TaskDocuments(task_id) => {
            let user = agent_user(state, &req)?;
            let (after, limit) = page_params(&params)?;
            ok(state
                .store
                .read(move |conn| store::list_documents(conn, &user, &task_id, after, limit))
                .await?)
        }
        Endpoint::Messages => {
            let user = agent_user(state, &req)?;
            let body = read_json(state, req).await?;
            let key = idempotency_key(&body)?;
            let actor_type = optional_str(&body, "actor_type")?;
            if let Some(t) = actor_type.as_deref()
                && t != "agent"
                && t != "user"
            {
                return Err(ApiError::bad_request(
                    format!("actor_type must be \"agent\" or \"user\", got {t:?}"),
                    "invalid_payload",
                ));
            }
            let row = NewMessageRow {
                task_id: required_id(&body, "task_id")?,
                content: required_str(&body, "content")?,
                actor_type,
                actor_id: optional_str(&body, "actor_id")?,
                agent_role: optional_str(&body, "agent_role")?,
                attachments: body.get("attachments").filter(|v| !v.is_null()).cloned(),
            };
            let fp = fingerprint(&body);
            let now = now_ms();
            let expired_before = now.saturating_sub(state.store.retention_ms());
            ok(state
                .store
                .write(move |conn| {
                    let scope = IdemScope {
                        user_id: &user,
                        endpoint: "messages",
                        key: key.as_deref(),
                        fingerprint: &fp,
                        now,
                        expired_before,
                    };
                    store::idempotent(conn, &scope, |tx| {
                        store::insert_message(tx, &user, &row, now)
                    })
                })
                .await?)
        }
        Endpoint::Documents => {
            let user = agent_user(state, &req)?;
            let body = read_json(state, req).await?;
            let key = idempotency_key(&body)?;
            let row = NewDocumentRow {
                task_id: required_id(&body, "task_id")?,
                title: required_str(&body, "title")?,
                content: required_str(&body, "content")?,
                doc_type: optional_str(&body, "doc_type")?.unwrap_or_else(|| "document".into()),
            };
            let fp = fingerprint(&body);
            let now = now_ms();
            let expired_before = now.saturating_sub(state.store.retention_ms());
            ok(state
                .store
                .write(move |conn| {
                    let scope = IdemScope {
                        user_id: &user,
                        endpoint: "documents",
                        key: key.as_deref(),
                        fingerprint: &fp,
                        now,
                        expired_before,
                    };
                    store::idempotent(conn, &scope, |tx| {
                        store::insert_document(tx, &user, &row, now)
                    })
                })
                .await?)
        }
        Endpoint::Heartbeat => {
            let user = agent_user(state, &req)?;
            let body = read_json(state, req).await?;
            check_body_user(&body, &user)?;
            let now = now_ms();
            ok(state
                .store
                .read(move |conn| store::heartbeat(conn, &user, now))
                .await?)
        }
        Endpoint::Standup => {
            let user = agent_user(state, &req)?;
            let body = read_json(state, req).await?;
            check_body_user(&body, &user)?;
            let tz_name = optional_str(&body, "timezone")?.unwrap_or_else(|| "UTC".into());
            let tz = jiff::tz::TimeZone::get(&tz_name).map_err(|_| {
                ApiError::bad_request(format!("unknown timezone {tz_name:?}"), "invalid_timezone")
            })?;
            let now = now_ms();
            let date = jiff::Timestamp::from_millisecond(now)
                .map(|t| tz.to_datetime(t).date().to_string())
                .map_err(|e| ApiError::internal(format!("clock out of range: {e}")))?;
            ok(state
                .store
                .read(move |conn| store::standup(conn, &user, &tz_name, &date, now))
                .await?)
        }
        Endpoint::ToolRequests if req.method() == Method::GET => {
            let user = agent_user(state, &req)?;
            let (after, limit) = page_params(&params)?;
            let status = match param(&params, "status").filter(|s| !s.is_empty()) {
                None => None,
                Some(s @ ("pending" | "approved" | "rejected")) => Some(s.to_owned()),
                Some(other) => {
                    return Err(ApiError::bad_request(
                        format!(
                            "status must be \"pending\", \"approved\" or \"rejected\", got {other:?}"
                        ),
                        "invalid_parameter",
                    ));
                }
            };
            let task_id = param(&params, "task_id")
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            ok(state
                .store
                .read(move |conn| {
                    store::list_tool_requests(
                        conn,
                        &user,
                        status.as_deref(),
                        task_id.as_deref(),
                        after,
                        limit,
                    )
                })
                .await?)
        }
        Endpoint::ToolRequests => {
            let (user, token_role) = agent_claims(state, &req)?;
            let body = read_json(state, req).await?;
            let key = idempotency_key(&body)?;
            let row = tool_request_row(&body, token_role)?;
            let fp = fingerprint(&body);
            let now = now_ms();
            let expired_before = now.saturating_sub(state.store.retention_ms());
            ok(state
                .store
                .write(move |conn| {
                    let scope = IdemScope {
                        user_id: &user,
                        endpoint: "tool_requests",
                        key: key.as_deref(),
                        fingerprint: &fp,
                        now,
                        expired_before,
                    };
                    store::idempotent(conn, &scope, |tx| {
                        store::insert_tool_request(tx, &user, &row, now)
                    })
                })
                .await?)
        }
        Endpoint::ToolRequest(id) if req.method() == Method::GET => {
            let user = agent_user(state, &req)?;
            ok(state
                .store
                .read(move |conn| store::get_tool_request(conn, &user, &id))
                .await?)
        }
        Endpoint::ToolRequest(id) => {
            let user = agent_user(state, &req)?;
            let body = read_json(state, req).await?;
            let status = match optional_str(&body, "status")?.as_deref() {
                Some("approved") => "approved",
                Some("rejected") => "rejected",
                None => {
                    return Err(ApiError::bad_request(
                        "missing required field: status",
                        "invalid_payload",
                    ));
                }
                Some(other) => {
                    return Err(ApiError::bad_request(
                        format!("status must be \"approved\" or \"rejected\", got {other:?}"),
                        "invalid_payload",
                    ));
                }
            };
            let reason = optional_str(&body, "reason")?;
            check_len("reason", reason.as_deref(), MAX_REASON_BYTES)?;
            let decision = Resolution {
                status,
                reason,
                // Without dispatch nobody would ever collect it.
                notify: state.internal_token.is_some(),
            };
            let now = now_ms();
            ok(state
                .store
                .write(move |conn| store::resolve_tool_request(conn, &user, &id, &decision, now))
                .await?)
        }
        Endpoint::ToolRequestConsume(id) => {
            let user = agent_user(state, &req)?;
            // The body is optional: `{}` or nothing consumes without a key.
            let body = read_json_or_empty(state, req).await?;
            let key = idempotency_key(&body)?;
            let now = now_ms();
            ok(state
                .store
                .write(move |conn| {
                    store::consume_tool_request(conn, &user, &id, key.as_deref(), now)
                })
                .await?)
        }
        Endpoint::Undelivered => {
            internal_auth(state, &req)?;
            let users = int_param(
                &params,
                "limit_users",
                DEFAULT_DISPATCH_LIMIT as u32,
                MAX_DISPATCH_LIMIT as u32,
            )?;
            let per_user = int_param(
                &params,
                "limit_notifications",
                DEFAULT_DISPATCH_LIMIT as u32,
                MAX_DISPATCH_LIMIT as u32,
            )?;
            ok(state
                .store
                .read(move |conn| store::undelivered(conn, users as usize, per_user as usize))
                .await?)
        }
        Endpoint::Deliver(id) => {
            internal_auth(state, &req)?;
            let user = param(&params, "user_id")
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request("missing query parameter user_id", "invalid_parameter")
                })?
                .to_owned();
            let now = now_ms();
            ok(state
                .store
                .write(move |conn| store::mark_delivered(conn, &id, &user, now))
                .await?)
        }
        Endpoint::Enqueue => {
            internal_auth(state, &req)?;
            let body = read_json(state, req).await?;
            let key = idempotency_key(&body)?;
            let user = required_str(&body, "user_id")?;
            let row = NewNotificationRow {
                session_key: required_str(&body, "session_key")?,
                content: required_str(&body, "content")?,
                task_id: optional_id(&body, "task_id")?,
                metadata: optional_object(&body, "metadata")?,
            };
            let fp = fingerprint(&body);
            let now = now_ms();
            let expired_before = now.saturating_sub(state.store.retention_ms());
            let v = state
                .store
                .write(move |conn| {
                    let scope = IdemScope {
                        user_id: &user,
                        endpoint: "notifications",
                        key: key.as_deref(),
                        fingerprint: &fp,
                        now,
                        expired_before,
                    };
                    store::idempotent(conn, &scope, |tx| {
                        store::insert_notification(tx, &user, &row, now)
                    })
                })
                .await?;
            Ok((StatusCode::CREATED, v))
        }
    }
}

/// The tenant of a request, from a verified `X-Agent-Token`.
pub(crate) fn agent_user<B>(state: &State, req: &Request<B>) -> Result<String, ApiError> {
    agent_claims(state, req).map(|(user, _)| user)
}

/// The tenant and agent role of a verified `X-Agent-Token`.
fn agent_claims<B>(state: &State, req: &Request<B>) -> Result<(String, String), ApiError> {
    let token = req
        .headers()
        .get("x-agent-token")
        .ok_or_else(|| ApiError::unauthorized("missing X-Agent-Token header"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed agent token"))?;
    let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
    match jwt::verify(token.trim(), &state.jwt, now) {
        Ok(claims) => Ok((claims.user_id, claims.agent_role)),
        Err(
            e @ (JwtError::Malformed
            | JwtError::BadSignature
            | JwtError::Expired
            | JwtError::NotAgent
            | JwtError::NoUser
            | JwtError::UnsupportedAlgorithm(_)
            | JwtError::Encode),
        ) => Err(ApiError::unauthorized(e.to_string())),
    }
}

/// Checks `X-Internal-Token` in constant time; dispatch is 403 when the
/// server has no internal token configured.
fn internal_auth<B>(state: &State, req: &Request<B>) -> Result<(), ApiError> {
    let Some(expected) = &state.internal_token else {
        return Err(ApiError::new(
            403,
            "dispatch is disabled: no internal token configured",
            "forbidden",
        ));
    };
    let given = req
        .headers()
        .get("x-internal-token")
        .ok_or_else(|| ApiError::unauthorized("missing X-Internal-Token header"))?;
    if jwt::constant_time_eq(given.as_bytes(), expected) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid internal token"))
    }
}

/// Reads the body (413 beyond the limit) and parses a JSON object (400).
async fn read_json<B>(state: &State, req: Request<B>) -> Result<Map<String, Value>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    parse_object(&read_body(state, req).await?)
}

/// Like [`read_json`], but an empty body reads as `{}`.
async fn read_json_or_empty<B>(
    state: &State,
    req: Request<B>,
) -> Result<Map<String, Value>, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = read_body(state, req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    parse_object(&bytes)
}

/// Reads the body, 413 beyond the limit.
async fn read_body<B>(state: &State, req: Request<B>) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        ApiError::new(
            413,
            format!("request body exceeds {} bytes", state.max_body_bytes),
            "payload_too_large",
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(req.into_body(), state.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(ApiError::bad_request(
                format!("cannot read request body: {e}"),
                "invalid_body",
            ));
        }
    };
    Ok(bytes)
}

/// Parses a JSON object (400 otherwise).
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "request body must be a JSON object",
            "invalid_payload",
        )),
        Err(e) => Err(ApiError::bad_request(
            format!("malformed JSON: {e}"),
            "invalid_json",
        )),
    }
}

fn required_str(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(ApiError::bad_request(
            format!("{field} must not be empty"),
            "invalid_payload",
        )),
        None | Some(Value::Null) => Err(ApiError::bad_request(
            format!("missing required field: {field}"),
            "invalid_payload",
        )),
        Some(_) => Err(ApiError::bad_request(
            format!("{field} must be a string"),
            "invalid_payload",
        )),
    }
}

/// A required id given as a string or an integer.
fn required_id(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => required_str(body, field),
    }
}

/// An optional id given as a string or an integer (`null` reads as absent;
/// an empty string is refused like a missing required id would be).
fn optional_id(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => required_id(body, field).map(Some),
    }
}

fn optional_str(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(
            format!("{field} must be a string"),
            "invalid_payload",
        )),
    }
}

fn optional_object(body: &Map<String, Value>, field: &str) -> Result<Option<Value>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(ApiError::bad_request(
            format!("{field} must be an object"),
            "invalid_payload",
        )),
    }
}

/// 400 naming `field` when `value` is longer than `max` bytes.
fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::bad_request(
            format!("{field} must be at most {max} bytes"),
            "invalid_payload",
        )),
        _ => Ok(()),
    }
}

/// An optional object whose JSON text is at most `max` bytes.
fn bounded_object(
    body: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<Value>, ApiError> {
    let v = optional_object(body, field)?;
    if v.as_ref().is_some_and(|v| v.to_string().len() > max) {
        return Err(ApiError::bad_request(
            format!("{field} must be at most {max} bytes as JSON"),
            "invalid_payload",
        ));
    }
    Ok(v)
}

/// Validates a tool-request create body. `agent_role` defaults to the
/// token's role (the daemon's session role) when that is a valid role.
fn tool_request_row(
    body: &Map<String, Value>,
    token_role: String,
) -> Result<NewToolRequestRow, ApiError> {
    let task_id = required_id(body, "task_id")?;
    check_len("task_id", Some(&task_id), MAX_NAME_BYTES)?;
    let tool = required_str(body, "tool")?;
    check_len("tool", Some(&tool), MAX_NAME_BYTES)?;
    let call_id = required_str(body, "call_id")?;
    check_len("call_id", Some(&call_id), MAX_NAME_BYTES)?;
    let arguments = bounded_object(body, "arguments", MAX_ARGUMENTS_BYTES)?.ok_or_else(|| {
        ApiError::bad_request("missing required field: arguments", "invalid_payload")
    })?;
    let agent_role = match optional_str(body, "agent_role")? {
        Some(role) if wombat_core::is_valid_role(&role) => Some(role),
        Some(_) => {
            return Err(ApiError::bad_request(
                "agent_role must be 1 to 64 characters: letters, digits, '_', '.' or '-', starting with a letter or digit",
                "invalid_payload",
            ));
        }
        None => wombat_core::is_valid_role(&token_role).then_some(token_role),
    };
    let context = bounded_object(
        body,
        "context",
        wombat_core::controlplane::TOOL_REQUEST_CONTEXT_MAX_BYTES,
    )?;
    Ok(NewToolRequestRow {
        task_id,
        tool,
        arguments,
        call_id,
        agent_role,
        context,
    })
}

fn idempotency_key(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let key = optional_str(body, "idempotency_key")?;
    match key {
        Some(k) if k.is_empty() || k.len() > 255 => Err(ApiError::bad_request(
            "idempotency_key must be 1 to 255 characters",
            "invalid_payload",
        )),
        other => Ok(other),
    }
}

/// The body's `user_id`, if given, must be the token's.
fn check_body_user(body: &Map<String, Value>, user: &str) -> Result<(), ApiError> {
    match optional_str(body, "user_id")? {
        Some(u) if u != user => Err(ApiError::new(
            403,
            "user_id does not match the agent token",
            "forbidden",
        )),
        _ => Ok(()),
    }
}

/// SHA-256 of the canonical JSON of the payload without its key, so "same
/// payload" ignores key order and whitespace.
fn fingerprint(body: &Map<String, Value>) -> String {
    let mut canonical = String::new();
    let mut without_key = body.clone();
    without_key.remove("idempotency_key");
    write_canonical(&Value::Object(without_key), &mut canonical);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(k) {
                    write_canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Header value listing allowed methods (for 405 answers).
pub(crate) fn allow_header(path: &str) -> Option<String> {
    Endpoint::route(path).map(|e| {
        e.allowed()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Adds `Allow` to 405 answers.
pub(crate) fn with_allow(path: &str, mut resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allow_header(path)
        && let Ok(v) = http::HeaderValue::from_str(&allow)
    {
        resp.headers_mut().insert(ALLOW, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_key_and_order() {
        let a: Map<String, Value> = serde_json::from_str(
            r#"{"title":"t","metadata":{"a":1,"b":[1,2]},"idempotency_key":"k1"}"#,
        )
        .expect("json");
        let b: Map<String, Value> = serde_json::from_str(
            r#"{"metadata":{"b":[1,2],"a":1},"title":"t","idempotency_key":"k2"}"#,
        )
        .expect("json");
        let c: Map<String, Value> =
            serde_json::from_str(r#"{"title":"u","metadata":{"a":1,"b":[1,2]}}"#).expect("json");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn routes_and_queries() {
        assert!(
            matches!(Endpoint::route("/api/mission-control/tasks/t%2F1/messages"), Some(Endpoint::TaskMessages(id)) if id == "t/1")
        );
        assert!(
            matches!(Endpoint::route("/api/mission-control/tool-requests/tr%2F1/consume"), Some(Endpoint::ToolRequestConsume(id)) if id == "tr/1")
        );
        assert_eq!(
            allow_header("/api/mission-control/tool-requests/tr_1").as_deref(),
            Some("GET, PATCH")
        );
        assert!(Endpoint::route("/api/mission-control/tool-requests//consume").is_none());
        assert!(Endpoint::route("/api/mission-control/nope").is_none());
        assert!(Endpoint::route("/api/mission-control/tasks//messages").is_none());
        assert_eq!(
            allow_header("/api/mission-control/tasks").as_deref(),
            Some("GET, POST")
        );
        let q = query(Some("user_id=a%20b&limit=3&x"));
        assert_eq!(param(&q, "user_id"), Some("a b"));
        assert_eq!(int_param(&q, "limit", 50, 200).ok(), Some(3));
        assert!(int_param(&query(Some("limit=0")), "limit", 50, 200).is_err());
        assert!(int_param(&query(Some("limit=201")), "limit", 50, 200).is_err());
    }
}
