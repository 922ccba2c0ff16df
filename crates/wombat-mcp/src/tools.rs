//! [`McpTools`]: the configured servers' tools for one tenant — listed
//! (cached per server and tenant), validated and called over Streamable
//! HTTP with the tenant's agent JWT.
//!
//! An initialised client is kept per (server, tenant, agent JWT) and reused
//! (see [`crate::pool`]), so after the first operation a list or call is one
//! HTTP request; no client, session or header set is ever shared between
//! tenants or tokens. Failures are outcomes, not errors: the run loop feeds
//! them back to the model.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, PaginatedRequestParams, RequestMetaObject,
    Tool,
};
use rmcp::service::ServiceError;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, ServiceExt};
use serde_json::{Map, Value};
pub use wombat_core::ToolContent;

use crate::config::{McpConfig, McpServerConfig};
use crate::pool::{Client, ClientKey, ClientPool, TracedHttp};

/// Separator of server and tool in an exposed tool name (`<server>__<tool>`).
pub const NAME_SEPARATOR: &str = "__";

/// Longest exposed tool name: 64 bytes, what model providers accept.
pub const MAX_TOOL_NAME: usize = 64;

/// Most tools taken from one server's list; more are dropped (and logged).
pub const MAX_TOOLS_PER_SERVER: usize = 256;

/// Longest tool description passed on, in bytes (longer ones are cut).
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// Largest MCP response body read (a list or a call result): 4 MiB. The
/// text fed back to the model is cut much shorter
/// ([`McpOptions::max_result_bytes`]); this only bounds what is read.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Start of the marker appended to a result cut to the budget.
pub const TRUNCATION_MARKER: &str = "[truncated: ";

/// Longest error detail (from a server or the transport) put in an outcome.
const MAX_ERROR_DETAIL: usize = 512;

/// Tuning of [`McpTools`]; the defaults suit most deployments.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// How long a tenant's tool list of one server is reused (default 60 s).
    pub cache_ttl: Duration,
    /// Most cached lists (server × tenant) kept; the oldest is evicted
    /// first (default 1024).
    pub cache_capacity: usize,
    /// Most bytes of a tool result returned; longer results are cut at a
    /// character boundary and end with a [`TRUNCATION_MARKER`] line
    /// (default 16 KiB).
    pub max_result_bytes: usize,
    /// How long a failed list (unreachable server, rejected token, timeout)
    /// is remembered for a tenant before it is tried again (default 5 s);
    /// meanwhile that server's tools are left out without a request.
    pub failure_ttl: Duration,
    /// How long an initialised client (one per server, tenant and agent
    /// JWT) is kept unused before it is closed (default 60 s, well under
    /// an agent JWT's lifetime). Zero opens a client per operation.
    pub client_idle_ttl: Duration,
    /// Most initialised clients kept; the least recently used one is
    /// closed first (default 1024). Zero opens a client per operation.
    pub client_capacity: usize,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 1024,
            max_result_bytes: 16 * 1024,
            failure_ttl: Duration::from_secs(5),
            client_idle_ttl: Duration::from_secs(60),
            client_capacity: 1024,
        }
    }
}

/// Who a tool runs as: the request's `user_id` and its agent JWT, sent as
/// `X-Agent-Token` on every MCP request (and as `Authorization: Bearer`
/// where the server is configured with `bearer`).
#[derive(Clone)]
pub struct McpTenant {
    user_id: String,
    agent_jwt: String,
    traceparent: Option<String>,
}

impl fmt::Debug for McpTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTenant")
            .field("user_id", &self.user_id)
            .field("agent_jwt", &"<redacted>")
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

impl McpTenant {
    /// The tenant `user_id` with its agent JWT (minted by the caller).
    pub fn new(user_id: impl Into<String>, agent_jwt: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            agent_jwt: agent_jwt.into(),
            traceparent: None,
        }
    }

    /// Also sends this W3C `traceparent` on every MCP request.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// The tenant's `user_id`.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
}

/// One tool as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// Exposed name, `<server>__<tool>`.
    pub name: String,
    /// The configured server's name.
    pub server: String,
    /// The tool's own name on its server.
    pub tool: String,
    /// What the tool does (empty when the server gives none).
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub input_schema: Value,
    /// The server annotated the tool `destructiveHint: true`.
    pub destructive: bool,
    /// A call needs a person's approval: the server's `approval`
    /// configuration, else `destructive`.
    pub requires_approval: bool,
}

/// The result of [`McpTools::call`]: a result or an error to show the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// The content, already cut to [`McpOptions::max_result_bytes`].
    pub content: ToolContent,
    /// The tool failed (a tool error, a timeout, an MCP or transport error,
    /// invalid arguments, an unknown tool).
    pub is_error: bool,
}

impl ToolOutcome {
    fn error(message: String) -> Self {
        Self {
            content: ToolContent::Text(message),
            is_error: true,
        }
    }
}

/// The setup of [`McpTools`] failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The HTTP client could not be built.
    #[error("cannot build the MCP http client: {0}")]
    Client(String),
}

/// One tool of a cached list, with its argument validator compiled on
/// first use.
struct CachedTool {
    info: ToolInfo,
    validator: OnceLock<Result<Arc<jsonschema::Validator>, String>>,
}

struct CacheEntry {
    fetched: Instant,
    /// The list, or why it could not be fetched (kept for the shorter
    /// [`McpOptions::failure_ttl`]).
    tools: Result<Arc<[CachedTool]>, String>,
}

/// Tool lists by (server index, user_id).
type Cache = HashMap<(usize, String), CacheEntry>;

struct Inner {
    config: McpConfig,
    options: McpOptions,
    http: reqwest013::Client,
    cache: Mutex<Cache>,
    /// Per server: its last list failed (so a failure is logged once, not
    /// on every request, and the recovery once).
    failing: Vec<AtomicBool>,
    /// Initialised clients by (server, tenant, token).
    pool: Arc<ClientPool>,
}

/// The configured MCP servers' tools. Cheap to clone (shared state).
///
/// Tool lists are cached per server and tenant for
/// [`McpOptions::cache_ttl`]; calls always go to the server.
#[derive(Clone)]
pub struct McpTools {
    inner: Arc<Inner>,
}

impl fmt::Debug for McpTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTools")
            .field("servers", &self.inner.config.servers())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl McpTools {
    /// Tools of `config`'s servers. Nothing is contacted until the first
    /// [`list`](Self::list) or [`call`](Self::call).
    pub fn new(config: McpConfig, options: McpOptions) -> Result<Self, McpError> {
        let http = http_client()?;
        let failing = config
            .servers()
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect();
        let pool = Arc::new(ClientPool::new(
            options.client_capacity,
            options.client_idle_ttl,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                options,
                http,
                cache: Mutex::new(HashMap::new()),
                failing,
                pool,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &McpConfig {
        &self.inner.config
    }

    /// Whether no server is configured (then `list` is always empty).
    pub fn is_empty(&self) -> bool {
        self.inner.config.is_empty()
    }

    /// How many initialised clients (open MCP sessions) are kept for reuse.
    pub fn open_clients(&self) -> usize {
        self.inner.pool.len()
    }

    /// Every tool the tenant may use, server by server in configuration
    /// order. A server that cannot be reached (or answers badly) adds no
    /// tools; the others are still listed.
    pub async fn list(&self, tenant: &McpTenant) -> Vec<ToolInfo> {
        let servers = self.inner.config.servers();
        let lists =
            futures::future::join_all((0..servers.len()).map(|index| self.tools_of(index, tenant)))
                .await;
        lists
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|tools| tools.iter().map(|t| t.info.clone()).collect::<Vec<_>>())
            .collect()
    }

    /// Calls the tool named `name` (`<server>__<tool>`) with `arguments` as
    /// the tenant. The arguments are checked against the tool's input
    /// schema first; nothing is sent when they do not match. Never panics
    /// and never returns an error: every failure is an error outcome.
    pub async fn call(&self, tenant: &McpTenant, name: &str, arguments: Value) -> ToolOutcome {
        let Some((index, server, tool_name)) = self.resolve(name) else {
            return ToolOutcome::error(format!("unknown tool {name:?}"));
        };
        let tools = match self.tools_of(index, tenant).await {
            Ok(tools) => tools,
            Err(e) => {
                return ToolOutcome::error(format!(
                    "tool {name:?} is unavailable: MCP server {:?} failed: {e}",
                    server.name()
                ));
            }
        };
        let Some(tool) = tools.iter().find(|t| t.info.tool == tool_name) else {
            return ToolOutcome::error(format!("unknown tool {name:?}"));
        };
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return ToolOutcome::error(format!(
                    "invalid arguments for {name}: expected a JSON object, got {}",
                    json_kind(&other)
                ));
            }
        };
        if let Err(problem) = validate(tool, &arguments) {
            return ToolOutcome::error(format!("invalid arguments for {name}: {problem}"));
        }
        let timeout = server.timeout();
        let mut params = CallToolRequestParams::new(tool_name.to_owned()).with_arguments(arguments);
        params.meta = trace_meta(tenant);
        // Never retried once handed to the transport: the tool may have run.
        let call = self.with_client(index, server, tenant, false, |client| {
            let params = params.clone();
            async move { client.call_tool(params).await }
        });
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(result)) => self.outcome(result),
            Ok(Err(e)) => ToolOutcome::error(format!("tool {name} failed: {e}")),
            Err(_) => ToolOutcome::error(format!(
                "tool {name} timed out after {} s",
                timeout.as_secs_f64()
            )),
        }
    }

    /// The server and the server's own tool name of an exposed name.
    fn resolve<'a>(&self, name: &'a str) -> Option<(usize, &McpServerConfig, &'a str)> {
        let (server_name, tool) = name.split_once(NAME_SEPARATOR)?;
        let (index, server) = self
            .inner
            .config
            .servers()
            .iter()
            .enumerate()
            .find(|(_, s)| s.name() == server_name)?;
        Some((index, server, tool))
    }

    /// The tenant's cached list of server `index`, fetched when missing or
    /// older than the TTL.
    async fn tools_of(
        &self,
        index: usize,
        tenant: &McpTenant,
    ) -> Result<Arc<[CachedTool]>, String> {
        let key = (index, tenant.user_id.clone());
        if let Some(entry) = self.lock_cache().get(&key) {
            let age = entry.fetched.elapsed();
            match &entry.tools {
                Ok(tools) if age < self.inner.options.cache_ttl => return Ok(Arc::clone(tools)),
                Err(e) if age < self.inner.options.failure_ttl => return Err(e.clone()),
                _ => {}
            }
        }
        let Some(server) = self.inner.config.servers().get(index) else {
            return Err("no such server".to_owned());
        };
        let fetched = tokio::time::timeout(server.timeout(), self.fetch(index, server, tenant))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "tools/list timed out after {} s",
                    server.timeout().as_secs_f64()
                ))
            });
        let failing = &self.inner.failing[index];
        match fetched {
            Ok(tools) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(server = server.name(), "mcp server reachable again");
                }
                let tools: Arc<[CachedTool]> = tools.into();
                self.insert(key, Ok(Arc::clone(&tools)));
                Ok(tools)
            }
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    // Logged once per outage; `{:?}` escapes whatever the
                    // server or the network put in the message.
                    tracing::warn!(
                        server = server.name(),
                        error = ?e,
                        "mcp server unavailable: its tools are left out"
                    );
                }
                // Remembered briefly, so a server that is down (or a
                // black hole that only times out) does not cost every
                // request of this tenant a connection attempt.
                if !self.inner.options.failure_ttl.is_zero() {
                    self.insert(key, Err(e.clone()));
                }
                Err(e)
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches a list, evicting expired entries and then the oldest ones
    /// beyond the capacity.
    fn insert(&self, key: (usize, String), tools: Result<Arc<[CachedTool]>, String>) {
        let capacity = self.inner.options.cache_capacity;
        if capacity == 0 {
            return;
        }
        let ttl = self
            .inner
            .options
            .cache_ttl
            .max(self.inner.options.failure_ttl);
        let mut cache = self.lock_cache();
        if cache.len() >= capacity && !cache.contains_key(&key) {
            cache.retain(|_, e| e.fetched.elapsed() < ttl);
            while cache.len() >= capacity {
                let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.fetched)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            CacheEntry {
                fetched: Instant::now(),
                tools,
            },
        );
    }

    /// Runs `op` on the tenant's client of server `index`: the pooled one,
    /// else a new one (then pooled). An MCP error answer leaves the client
    /// pooled; a transport failure, a timeout or a cancelled operation
    /// drops it, so the next operation starts a fresh session. With
    /// `retry`, an operation that failed in the transport on a reused
    /// client runs once more on a fresh one (only for operations that are
    /// safe to repeat: `tools/list`).
    ///
    /// A call is never repeated here. What provably did not reach the
    /// server is handled before or below: a pooled client whose transport
    /// has closed is never used, and a stateful server's "session expired"
    /// (HTTP 404, so the request was not processed) makes rmcp open a new
    /// session and resend that request once.
    async fn with_client<T, F, Fut>(
        &self,
        index: usize,
        server: &McpServerConfig,
        tenant: &McpTenant,
        retry: bool,
        op: F,
    ) -> Result<T, String>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let pool = &self.inner.pool;
        let key: ClientKey = (index, tenant.user_id.clone(), tenant.agent_jwt.clone());
        let pooled = if pool.enabled() { pool.get(&key) } else { None };
        let reused = pooled.is_some();
        let client = match pooled {
            Some(client) => client,
            None => self.open(server, tenant, &key).await?,
        };
        match self.run_on(&key, client, &op).await {
            Err(Failure::Transport(e)) if retry && reused => {
                tracing::debug!(server = server.name(), error = ?e, "mcp client failed; retrying on a new one");
                let client = self.open(server, tenant, &key).await?;
                self.run_on(&key, client, &op)
                    .await
                    .map_err(Failure::into_message)
            }
            result => result.map_err(Failure::into_message),
        }
    }

    /// A new client for the tenant, pooled for the next operations.
    async fn open(
        &self,
        server: &McpServerConfig,
        tenant: &McpTenant,
        key: &ClientKey,
    ) -> Result<Arc<Client>, String> {
        let client = Arc::new(self.connect(server, tenant).await?);
        self.inner.pool.put(key.clone(), &client);
        Ok(client)
    }

    /// `op` on `client`; the client leaves the pool unless the operation
    /// ended with a result or an MCP error answer (also when the future is
    /// dropped half way, e.g. by the per-tool timeout).
    async fn run_on<T, F, Fut>(
        &self,
        key: &ClientKey,
        client: Arc<Client>,
        op: &F,
    ) -> Result<T, Failure>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, ServiceError>>,
    {
        let mut guard = DiscardUnlessHealthy {
            pool: &self.inner.pool,
            key,
            client: Arc::clone(&client),
            healthy: false,
        };
        match op(client).await {
            Ok(value) => {
                guard.healthy = true;
                Ok(value)
            }
            Err(ServiceError::McpError(e)) => {
                guard.healthy = true;
                Err(Failure::Mcp(e))
            }
            Err(e) => Err(Failure::Transport(e)),
        }
    }

    /// Lists the server's tools as the tenant.
    async fn fetch(
        &self,
        index: usize,
        server: &McpServerConfig,
        tenant: &McpTenant,
    ) -> Result<Vec<CachedTool>, String> {
        let listed = self
            .with_client(index, server, tenant, true, |client| async move {
                list_all(&client, tenant).await
            })
            .await?;
        if listed.len() > MAX_TOOLS_PER_SERVER {
            tracing::warn!(
                server = server.name(),
                tools = listed.len(),
                kept = MAX_TOOLS_PER_SERVER,
                "mcp server lists too many tools; the rest are left out"
            );
        }
        Ok(listed
            .into_iter()
            .take(MAX_TOOLS_PER_SERVER)
            .filter_map(|tool| to_info(server, tool))
            .map(|info| CachedTool {
                info,
                validator: OnceLock::new(),
            })
            .collect())
    }

    /// A new MCP client for this server and tenant only: its transport
    /// carries this tenant's headers (and token) for its whole life.
    async fn connect(
        &self,
        server: &McpServerConfig,
        tenant: &McpTenant,
    ) -> Result<Client, String> {
        let mut headers: HashMap<HeaderName, HeaderValue> = server
            .headers()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut token = HeaderValue::from_str(&tenant.agent_jwt)
            .map_err(|_| "the agent token is not a valid header value".to_owned())?;
        token.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-agent-token"), token);
        // Not a fixed header: each request carries its operation's trace
        // (see `TracedHttp`); this one is for the handshake and cleanup.
        let opened_in = tenant
            .traceparent
            .as_deref()
            .and_then(|tp| HeaderValue::from_str(tp).ok());
        let mut config = StreamableHttpClientTransportConfig::with_uri(server.url())
            .custom_headers(headers)
            .max_json_response_size(MAX_RESPONSE_BYTES)
            .max_sse_event_size(MAX_RESPONSE_BYTES);
        if server.bearer() {
            config = config.auth_header(tenant.agent_jwt.clone());
        }
        let http = TracedHttp {
            http: self.inner.http.clone(),
            opened_in,
        };
        let transport = StreamableHttpClientTransport::with_client(http, config);
        // Connected in a task of its own, outside the caller's span: rmcp's
        // session loop keeps the span that is current when it starts, and a
        // pooled session outlives the request that opened it, which would
        // keep that request's span (its trace's root) open, and unexported,
        // for the session's whole life. Aborted if the caller gives up.
        let connecting = AbortOnDrop(tokio::spawn(async move { ().serve(transport).await }));
        match connecting.await {
            Ok(connected) => connected.map_err(|e| bounded(&format!("cannot connect: {e}"))),
            Err(e) => Err(bounded(&format!("cannot connect: {e}"))),
        }
    }

    /// A call result as an outcome, cut to the budget.
    fn outcome(&self, result: CallToolResult) -> ToolOutcome {
        let budget = self.inner.options.max_result_bytes;
        let is_error = result.is_error.unwrap_or(false);
        let content = match result.structured_content {
            Some(value) if !is_error => {
                let text = value.to_string();
                if text.len() <= budget {
                    ToolContent::Json(value)
                } else {
                    ToolContent::Text(truncate(text, budget))
                }
            }
            _ => ToolContent::Text(truncate(text_of(&result.content), budget)),
        };
        ToolOutcome { content, is_error }
    }
}

/// The reqwest client every MCP transport shares: rustls with ring and the
/// webpki roots (no system verifier, no aws-lc), HTTP/1.1, no redirects
/// (a redirect would carry the tenant's token to wherever it points).
fn http_client() -> Result<reqwest013::Client, McpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| McpError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest013::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest013::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| McpError::Client(e.to_string()))
}

/// Why an operation on a client failed.
enum Failure {
    /// The server answered with an MCP error: the client is fine.
    Mcp(ErrorData),
    /// The transport failed (or the answer made no sense).
    Transport(ServiceError),
}

impl Failure {
    fn into_message(self) -> String {
        match self {
            Self::Mcp(e) => bounded(&ServiceError::McpError(e).to_string()),
            Self::Transport(e) => bounded(&e.to_string()),
        }
    }
}

/// Takes a client out of the pool when dropped, unless the operation
/// using it ended healthily. A drop guard, so a timed-out (dropped)
/// operation also discards its client: a server that does not answer in
/// time is not trusted with the next request of the tenant.
struct DiscardUnlessHealthy<'a> {
    pool: &'a ClientPool,
    key: &'a ClientKey,
    client: Arc<Client>,
    healthy: bool,
}

impl Drop for DiscardUnlessHealthy<'_> {
    fn drop(&mut self) {
        if !self.healthy {
            self.pool.discard(self.key, &self.client);
        }
    }
}

/// The tenant's trace for a request's `_meta.traceparent` (SEP-414).
fn trace_meta(tenant: &McpTenant) -> Option<RequestMetaObject> {
    let tp = tenant.traceparent.as_deref()?;
    let mut meta = RequestMetaObject::new();
    meta.set_traceparent(tp);
    Some(meta)
}

/// Most pages of a `tools/list` followed (a server that keeps returning
/// cursors is cut off; the timeout bounds it too).
const MAX_LIST_PAGES: usize = 32;

/// Every page of the server's tool list, each request carrying the
/// tenant's trace; stops early once more tools than are kept arrived.
async fn list_all(client: &Client, tenant: &McpTenant) -> Result<Vec<Tool>, ServiceError> {
    let mut tools = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_LIST_PAGES {
        let mut params = PaginatedRequestParams::default().with_cursor(cursor);
        params.meta = trace_meta(tenant);
        let page = client.list_tools(Some(params)).await?;
        tools.extend(page.tools);
        cursor = page.next_cursor;
        if cursor.is_none() || tools.len() > MAX_TOOLS_PER_SERVER {
            break;
        }
    }
    Ok(tools)
}

/// A listed tool as exposed to the model, or `None` (logged) when its name
/// cannot be exposed or its schema is unusable.
fn to_info(server: &McpServerConfig, tool: Tool) -> Option<ToolInfo> {
    let name = format!("{}{NAME_SEPARATOR}{}", server.name(), tool.name);
    let valid_name = !tool.name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && tool
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        tracing::warn!(
            server = server.name(),
            tool = ?tool.name,
            "mcp tool name is not [A-Za-z0-9_-] or too long; tool left out"
        );
        return None;
    }
    let input_schema = Value::Object((*tool.input_schema).clone());
    if let Err(e) = wombat_core::schema::check_schema_size(&input_schema) {
        tracing::warn!(server = server.name(), tool = %tool.name, error = %e, "mcp tool schema too large; tool left out");
        return None;
    }
    let destructive = tool
        .annotations
        .as_ref()
        .and_then(|a| a.destructive_hint)
        .unwrap_or(false);
    let mut description = tool.description.map(|d| d.into_owned()).unwrap_or_default();
    if description.len() > MAX_DESCRIPTION_BYTES {
        description.truncate(floor_char_boundary(&description, MAX_DESCRIPTION_BYTES));
    }
    Some(ToolInfo {
        requires_approval: server.requires_approval(&tool.name, destructive),
        name,
        server: server.name().to_owned(),
        tool: tool.name.into_owned(),
        description,
        input_schema,
        destructive,
    })
}

/// Checks arguments against the tool's schema (compiled once per cached
/// list). A schema the validator cannot compile rejects every call rather
/// than letting unchecked arguments through.
fn validate(tool: &CachedTool, arguments: &Map<String, Value>) -> Result<(), String> {
    let validator = tool
        .validator
        .get_or_init(|| {
            jsonschema::validator_for(&tool.info.input_schema)
                .map(Arc::new)
                .map_err(|e| bounded(&format!("the tool's input schema is invalid: {e}")))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let instance = Value::Object(arguments.clone());
    let problems: Vec<String> = validator
        .iter_errors(&instance)
        .take(5)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(bounded(&problems.join("; ")))
    }
}

/// Text blocks joined by newlines; other blocks named, not inlined.
fn text_of(blocks: &[ContentBlock]) -> String {
    let mut out = String::new();
    for block in blocks {
        if !out.is_empty() {
            out.push('\n');
        }
        match block {
            ContentBlock::Text(t) => out.push_str(&t.text),
            ContentBlock::Image(_) => out.push_str("[image content omitted]"),
            ContentBlock::Audio(_) => out.push_str("[audio content omitted]"),
            ContentBlock::Resource(_) => out.push_str("[embedded resource omitted]"),
            ContentBlock::ResourceLink(r) => {
                out.push_str("[resource link: ");
                out.push_str(&r.uri);
                out.push(']');
            }
            _ => out.push_str("[content omitted]"),
        }
    }
    out
}

/// `text` cut to `budget` bytes (at a character boundary) plus a marker
/// line saying how much was kept.
pub(crate) fn truncate(text: String, budget: usize) -> String {
    if text.len() <= budget {
        return text;
    }
    let cut = floor_char_boundary(&text, budget);
    format!(
        "{}\n{TRUNCATION_MARKER}{cut} of {} bytes shown]",
        &text[..cut],
        text.len()
    )
}

fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// An error detail cut to [`MAX_ERROR_DETAIL`] bytes.
fn bounded(detail: &str) -> String {
    if detail.len() <= MAX_ERROR_DETAIL {
        detail.to_owned()
    } else {
        format!(
            "{}...",
            &detail[..floor_char_boundary(detail, MAX_ERROR_DETAIL)]
        )
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_at_a_char_boundary_with_a_marker() {
        assert_eq!(truncate("short".into(), 10), "short");
        let t = truncate("ééééé".into(), 3);
        assert_eq!(t, "é\n[truncated: 2 of 10 bytes shown]");
    }

    #[test]
    fn tenant_debug_hides_the_token() {
        let t = McpTenant::new("u1", "eyJsecret");
        assert!(!format!("{t:?}").contains("eyJsecret"));
    }
}
