//! MCP at `/mcp`: the reference backend's own data as tools (search and
//! create tasks; list, read, add and delete documents), over Streamable HTTP
//! through `rmcp`'s tower service in stateless JSON mode.
//!
//! Scoped like every other endpoint: the request needs a valid
//! `X-Agent-Token` (401 otherwise, before MCP sees it), and every tool acts
//! as that token's `user_id` only. `delete_document` is annotated
//! `destructiveHint: true`, so a client that asks for approval of
//! destructive tools (Wombat does) stops before running it.
//!
//! Stateless mode: each POST is served on its own (no session kept between
//! requests), which suits a backend behind a load balancer and keeps no
//! per-client memory. Only POST is served; GET (a server-initiated stream)
//! and DELETE (a session end) are 405, as the transport allows.

use std::sync::Arc;

use bytes::Bytes;
use http::header::ALLOW;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use rusqlite::params;
use serde_json::{Map, Value, json};

use crate::api::{ApiError, State};
use crate::store::{self, NewDocumentRow, NewTaskRow};

/// Longest search query.
const MAX_QUERY_CHARS: usize = 200;
/// Longest task or document title.
const MAX_TITLE_CHARS: usize = 500;
/// Longest task description.
const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Longest document content (the request body limit applies too).
const MAX_CONTENT_CHARS: usize = 200_000;
/// Longest id argument.
const MAX_ID_CHARS: usize = 200;
/// Default and largest number of tasks `search_tasks` returns.
const DEFAULT_SEARCH_LIMIT: u32 = 20;
const MAX_SEARCH_LIMIT: u32 = 50;
/// Documents `list_documents` returns (the first page).
const LIST_DOCUMENTS_LIMIT: u32 = 50;
/// Largest MCP response relayed (tool results are bounded well below it).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The `/mcp` endpoint: the rmcp service, built once.
pub(crate) struct McpEndpoint {
    service: StreamableHttpService<Tools, LocalSessionManager>,
}

impl McpEndpoint {
    pub(crate) fn new() -> Self {
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_sse_keep_alive(None)
            // The Host allow-list guards unauthenticated local servers
            // against DNS rebinding; here every request must carry an agent
            // JWT, which a rebinding page does not have, and the backend is
            // reached under whatever name it is deployed at.
            .disable_allowed_hosts();
        Self {
            service: StreamableHttpService::new(
                || Ok(Tools),
                Arc::new(LocalSessionManager::default()),
                config,
            ),
        }
    }
}

/// The tenant and state of one MCP request, handed to the tool handler
/// through the request's extensions (rmcp passes the HTTP parts along).
#[derive(Clone)]
struct Scope {
    state: Arc<State>,
    user_id: String,
}

/// Answers a request to `/mcp` (auth, body limit, then rmcp).
pub(crate) async fn handle<B>(state: Arc<State>, req: Request<B>) -> Response<Full<Bytes>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if req.method() != Method::POST {
        let mut resp = ApiError::new(
            405,
            format!(
                "method {} not allowed; use POST (this MCP server is stateless and opens no event stream)",
                req.method()
            ),
            "method_not_allowed",
        )
        .into_response();
        resp.headers_mut()
            .insert(ALLOW, http::HeaderValue::from_static("POST"));
        return resp;
    }
    let user_id = match crate::api::agent_user(&state, &req) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, state.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return ApiError::new(
                413,
                format!("body exceeds {} bytes", state.max_body_bytes),
                "payload_too_large",
            )
            .into_response();
        }
        Err(_) => {
            return ApiError::bad_request("could not read the request body", "invalid_body")
                .into_response();
        }
    };
    parts.extensions.insert(Scope {
        state: Arc::clone(&state),
        user_id,
    });
    let resp = state
        .mcp
        .service
        .handle(Request::from_parts(parts, Full::new(body)))
        .await;
    let (parts, body) = resp.into_parts();
    // Stateless JSON mode answers with one complete body; the limit only
    // guards against a stream that would not end.
    match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
        Ok(b) => Response::from_parts(parts, Full::new(b.to_bytes())),
        Err(_) => ApiError::internal("mcp response too large".to_owned()).into_response(),
    }
}

/// The tool handler (state comes with each request; see [`Scope`]).
#[derive(Clone, Copy)]
struct Tools;

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "wombat-mc-lite",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Tasks and documents of the Mission Control tenant named by the agent token.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tool_list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let scope = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Scope>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("request has no tenant", None))?;
        let args = request.arguments.unwrap_or_default();
        let result = match request.name.as_ref() {
            "search_tasks" => search_tasks(&scope, &args).await,
            "create_task" => create_task(&scope, &args).await,
            "list_documents" => list_documents(&scope, &args).await,
            "read_document" => read_document(&scope, &args).await,
            "add_document" => add_document(&scope, &args).await,
            "delete_document" => delete_document(&scope, &args).await,
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other:?}"),
                    None,
                ));
            }
        };
        Ok(match result {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => {
                // A 5xx detail is logged here, once, and not shown.
                let message = if e.status >= 500 {
                    tracing::error!(detail = %e.error, "mcp tool failed");
                    "internal error".to_owned()
                } else {
                    e.error
                };
                CallToolResult::error(vec![ContentBlock::text(message)])
            }
        }
        .into())
    }
}

fn schema(v: Value) -> Arc<Map<String, Value>> {
    match v {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(Map::new()),
    }
}

/// The six tools and their argument schemas.
fn tool_list() -> Vec<Tool> {
    let read_only = ToolAnnotations::new().read_only(true).destructive(false);
    let additive = ToolAnnotations::new().read_only(false).destructive(false);
    vec![
        Tool::new(
            "search_tasks",
            "Find the tenant's tasks whose title or description contains the query (newest first); without a query, the newest tasks.",
            schema(json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "maxLength": MAX_QUERY_CHARS},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_LIMIT},
                },
                "additionalProperties": false,
            })),
        )
        .annotate(read_only.clone()),
        Tool::new(
            "create_task",
            "Create a task for the tenant.",
            schema(json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS},
                    "description": {"type": "string", "maxLength": MAX_DESCRIPTION_CHARS},
                },
                "required": ["title"],
                "additionalProperties": false,
            })),
        )
        .annotate(additive.clone()),
        Tool::new(
            "list_documents",
            "List the documents of one of the tenant's tasks (first 50, oldest first), with their content.",
            schema(json!({
                "type": "object",
                "properties": {"task_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}},
                "required": ["task_id"],
                "additionalProperties": false,
            })),
        )
        .annotate(read_only.clone()),
        Tool::new(
            "read_document",
            "Read one of the tenant's documents by id.",
            schema(json!({
                "type": "object",
                "properties": {"document_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}},
                "required": ["document_id"],
                "additionalProperties": false,
            })),
        )
        .annotate(read_only),
        Tool::new(
            "add_document",
            "Add a document to one of the tenant's tasks.",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                    "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS},
                    "content": {"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS},
                    "doc_type": {"type": "string", "minLength": 1, "maxLength": 50},
                },
                "required": ["task_id", "title", "content"],
                "additionalProperties": false,
            })),
        )
        .annotate(additive),
        Tool::new(
            "delete_document",
            "Delete one of the tenant's documents for good. Destructive: needs approval.",
            schema(json!({
                "type": "object",
                "properties": {"document_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}},
                "required": ["document_id"],
                "additionalProperties": false,
            })),
        )
        .annotate(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(true),
        ),
    ]
}

/// Rejects arguments a tool does not take (clients should have checked
/// the schema; this server does not trust them to).
fn only(args: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match args.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(
            format!(
                "unknown argument {k:?}; this tool takes {}",
                allowed.join(", ")
            ),
            "invalid_arguments",
        )),
        None => Ok(()),
    }
}

/// A string argument within `max` characters (`min_one`: non-blank).
fn str_arg(
    args: &Map<String, Value>,
    name: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, ApiError> {
    match args.get(name) {
        None | Some(Value::Null) if required => Err(ApiError::bad_request(
            format!("{name} is required"),
            "invalid_arguments",
        )),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => Err(ApiError::bad_request(
            format!("{name} must not be empty"),
            "invalid_arguments",
        )),
        Some(Value::String(s)) if s.chars().count() > max => Err(ApiError::bad_request(
            format!("{name} is longer than {max} characters"),
            "invalid_arguments",
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(
            format!("{name} must be a string"),
            "invalid_arguments",
        )),
    }
}

fn required(args: &Map<String, Value>, name: &str, max: usize) -> Result<String, ApiError> {
    str_arg(args, name, max, true)?
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required"), "invalid_arguments"))
}

/// `%`, `_` and `\` escaped for `LIKE ... ESCAPE '\'`.
fn like_pattern(query: &str) -> String {
    let mut out = String::with_capacity(query.len() + 2);
    out.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

async fn search_tasks(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ApiError> {
    only(args, &["query", "limit"])?;
    let query = str_arg(args, "query", MAX_QUERY_CHARS, false)?.unwrap_or_default();
    let limit = match args.get("limit") {
        None | Some(Value::Null) => DEFAULT_SEARCH_LIMIT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_SEARCH_LIMIT)).contains(&n) => {
                u32::try_from(n).unwrap_or(MAX_SEARCH_LIMIT)
            }
            _ => {
                return Err(ApiError::bad_request(
                    format!("limit must be an integer between 1 and {MAX_SEARCH_LIMIT}"),
                    "invalid_arguments",
                ));
            }
        },
    };
    let user = scope.user_id.clone();
    let pattern = like_pattern(query.trim());
    scope
        .state
        .store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT * FROM tasks WHERE user_id = ?1
                 AND (title LIKE ?2 ESCAPE '\\' OR COALESCE(description, '') LIKE ?2 ESCAPE '\\')
                 ORDER BY seq DESC LIMIT ?3",
            )?;
            let items = stmt
                .query_map(params![user, pattern, i64::from(limit)], store::task_json)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({ "items": items }))
        })
        .await
}

async fn create_task(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ApiError> {
    only(args, &["title", "description"])?;
    let row = NewTaskRow {
        title: required(args, "title", MAX_TITLE_CHARS)?,
        description: str_arg(args, "description", MAX_DESCRIPTION_CHARS, false)?,
        status: "open".to_owned(),
        metadata: None,
    };
    let user = scope.user_id.clone();
    let now = crate::api::now_ms();
    scope
        .state
        .store
        .write(move |conn| {
            let tx = conn.transaction()?;
            let task = store::insert_task(&tx, &user, &row, now)?;
            tx.commit()?;
            Ok(task)
        })
        .await
}

async fn list_documents(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ApiError> {
    only(args, &["task_id"])?;
    let task_id = required(args, "task_id", MAX_ID_CHARS)?;
    let user = scope.user_id.clone();
    scope
        .state
        .store
        .read(move |conn| store::list_documents(conn, &user, &task_id, 0, LIST_DOCUMENTS_LIMIT))
        .await
}

async fn read_document(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ApiError> {
    only(args, &["document_id"])?;
    let id = required(args, "document_id", MAX_ID_CHARS)?;
    let user = scope.user_id.clone();
    scope
        .state
        .store
        .read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT * FROM documents WHERE id = ?1 AND user_id = ?2")?;
            let mut rows = stmt.query_map(params![id, user], store::document_json)?;
            match rows.next() {
                Some(doc) => Ok(doc?),
                None => Err(ApiError::not_found("document not found")),
            }
        })
        .await
}

async fn add_document(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ApiError> {
    only(args, &["task_id", "title", "content", "doc_type"])?;
    let row = NewDocumentRow {
        task_id: required(args, "task_id", MAX_ID_CHARS)?,
        title: required(args, "title", MAX_TITLE_CHARS)?,
        content: required(args, "content", MAX_CONTENT_CHARS)?,
        doc_type: str_arg(args, "doc_type", 50, false)?.unwrap_or_else(|| "document".into()),
    };
    let user = scope.user_id.clone();
    let now = crate::api::now_ms();
    scope
        .state
        .store
        .write(move |conn| {
            let tx = conn.transaction()?;
            let doc = store::insert_document(&tx, &user, &row, now)?;
            tx.commit()?;
            Ok(doc)
        })
        .await
}

async fn delete_document(scope: &Scope, args: &Map<String, Value>) -> Result<Value, ApiError> {
    only(args, &["document_id"])?;
    let id = required(args, "document_id", MAX_ID_CHARS)?;
    let user = scope.user_id.clone();
    scope
        .state
        .store
        .write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM documents WHERE id = ?1 AND user_id = ?2")?
                .execute(params![id, user])?;
            if deleted == 0 {
                // Another tenant's document is indistinguishable from a
                // missing one.
                return Err(ApiError::not_found("document not found"));
            }
            Ok(json!({ "id": id, "deleted": true }))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn exactly_one_tool_is_destructive() {
        let destructive: Vec<_> = tool_list()
            .into_iter()
            .filter(|t| t.annotations.as_ref().and_then(|a| a.destructive_hint) == Some(true))
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(destructive, ["delete_document"]);
    }
}
