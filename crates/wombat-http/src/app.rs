//! The daemon's state and its one request entry point: request id, daemon
//! key, routing, deadline, access log and metrics, composed in one visible
//! order in [`handle`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode, header};
use http_body::Body as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;
use wombat_controlplane::ControlPlane;
use wombat_governance::{Governor, GovernorConfig};
use wombat_llm::{LlmSummary, Router};
use wombat_workspace::Workspace;

use crate::config::DaemonConfig;
use crate::error::{ApiError, HttpError};
use crate::metrics::Metrics;
use crate::request::{Body, REQUEST_ID, constant_time_eq, full, request_id};
use crate::server::{RequestBody as Incoming, ServerLimits, serve};
use crate::usage::UsageTracker;
use crate::webhook::Webhooks;
use crate::{agent, info, tasks};

/// The backend ("Mission Control") the daemon writes to.
#[derive(Clone)]
pub struct Backend {
    /// Its base URL, shown by `/health`.
    pub url: String,
    /// The contract client.
    pub client: ControlPlane,
}

/// Everything a handler can reach. Built once; shared by every request.
pub(crate) struct App {
    pub(crate) config: DaemonConfig,
    pub(crate) workspace: Workspace,
    pub(crate) llm: Router,
    pub(crate) llm_summary: LlmSummary,
    pub(crate) backend: Option<Backend>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) usage: UsageTracker,
    pub(crate) webhooks: Webhooks,
    /// Caps concurrent LLM calls; a request that finds it full gets 429.
    pub(crate) llm_permits: Arc<Semaphore>,
    /// Turns `true` when the drain deadline passes: open SSE streams then
    /// end with an `error` event.
    pub(crate) stream_cut: watch::Receiver<bool>,
    /// Per-user limits and, with `WOMBAT_REDIS_URL`, the shared ledger.
    pub(crate) governor: Governor,
    /// The run loop's settings (from `config`).
    pub(crate) agent: wombat_agent::Settings,
    /// The tools the daemon runs itself ([`Daemon::with_tool_source`]).
    pub(crate) tool_source: Option<Arc<dyn wombat_agent::tools::ToolSource>>,
}

/// How long a governance store call may take before it counts as a failure
/// (then `WOMBAT_LIMITS_ON_STORE_ERROR` decides). A healthy Redis answers in
/// well under a millisecond; this only bounds an outage.
const STORE_TIMEOUT: Duration = Duration::from_millis(250);

/// How long shutdown waits for the settlements still queued for Redis.
const SETTLE_FLUSH_BOUND: Duration = Duration::from_secs(5);

/// How long a reservation outlives the request deadline when it is never
/// settled (a replica that died mid-request).
const LEASE_MARGIN: Duration = Duration::from_secs(60);

fn governor(config: &DaemonConfig) -> Result<Governor, crate::Error> {
    let gc = GovernorConfig {
        defaults: config.limits,
        timezone: config.budget_timezone.clone(),
        on_store_error: config.limits_on_store_error,
        store_timeout: STORE_TIMEOUT,
        lease_ttl: config.request_timeout + LEASE_MARGIN,
    };
    match &config.redis_url {
        None => Ok(Governor::memory(gc)),
        Some(url) => {
            Governor::redis(url.expose(), gc).map_err(|e| crate::Error::Governance(e.to_string()))
        }
    }
}

/// The MCP servers of `WOMBAT_MCP_SERVERS` and the workspace's `mcp.json`
/// (merged; a name in both is an error) as the run loop's tool source;
/// `None` when neither names a server.
fn mcp_source(
    config: &DaemonConfig,
    workspace: &Workspace,
) -> Result<Option<Arc<dyn wombat_agent::tools::ToolSource>>, crate::Error> {
    let mut servers = config.mcp_servers.clone().unwrap_or_default();
    let file = workspace.path().join("mcp.json");
    if file.is_file() {
        let from_file = wombat_mcp::McpConfig::from_file(&file)
            .map_err(|e| crate::Error::Mcp(e.to_string()))?;
        servers = servers
            .merge(from_file)
            .map_err(|e| crate::Error::Mcp(e.to_string()))?;
    }
    if servers.is_empty() {
        return Ok(None);
    }
    let options = wombat_mcp::McpOptions {
        max_result_bytes: config.tool_limits.max_result_bytes,
        ..wombat_mcp::McpOptions::default()
    };
    let tools = wombat_mcp::McpTools::new(servers, options)
        .map_err(|e| crate::Error::Mcp(e.to_string()))?;
    Ok(Some(Arc::new(wombat_agent::tools::mcp::McpSource::new(
        tools,
    ))))
}

/// A configured daemon, ready to serve.
pub struct Daemon {
    app: Arc<App>,
    stream_cut: watch::Sender<bool>,
}

impl Daemon {
    /// Composes the daemon from its validated config and its parts.
    /// `backend` is `None` when no backend is configured: agent endpoints
    /// then answer 503, everything else works.
    ///
    /// Fails if the webhook HTTP client cannot be built (TLS setup) or the
    /// Redis URL is not usable. Redis itself is reached lazily: a daemon
    /// starts while it is down (and follows `WOMBAT_LIMITS_ON_STORE_ERROR`).
    pub fn new(
        config: DaemonConfig,
        workspace: Workspace,
        llm: Router,
        backend: Option<Backend>,
    ) -> Result<Self, crate::Error> {
        let metrics = Arc::new(Metrics::default());
        let webhooks = Webhooks::new(
            config.webhook_allowed_hosts.clone(),
            config.webhook_allow_private,
            config.webhook_max_in_flight,
            metrics.clone(),
        )
        .map_err(|e| crate::Error::HttpClient(e.to_string()))?;
        let (stream_cut, cut_rx) = watch::channel(false);
        let governor = governor(&config)?;
        let agent = wombat_agent::Settings {
            request_timeout: config.request_timeout,
            temperature: config.temperature,
            default_task: config.default_task.clone(),
            context_warning_threshold: config.context_warning_threshold,
            tools: config.tool_limits,
        };
        let tool_source = mcp_source(&config, &workspace)?;
        let app = App {
            tool_source,
            agent,
            stream_cut: cut_rx,
            governor,
            llm_summary: llm.summary(),
            llm_permits: Arc::new(Semaphore::new(config.max_concurrent_llm)),
            config,
            workspace,
            llm,
            backend,
            metrics,
            usage: UsageTracker::default(),
            webhooks,
        };
        Ok(Self {
            app: Arc::new(app),
            stream_cut,
        })
    }

    /// Adds the tools the daemon runs itself (MCP servers, or any
    /// [`wombat_agent::tools::ToolSource`] an embedding program provides):
    /// the model of every agent request sees the tenant's tools from it.
    #[must_use]
    pub fn with_tool_source(mut self, source: Arc<dyn wombat_agent::tools::ToolSource>) -> Self {
        if let Some(app) = Arc::get_mut(&mut self.app) {
            app.tool_source = Some(source);
        }
        self
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let config = &self.app.config;
        let limits = ServerLimits {
            header_read_timeout: config.header_read_timeout,
            body_timeout: config.body_timeout,
            keep_alive_timeout: config.keep_alive_timeout,
            max_connections: config.max_connections,
            drain_deadline: config.shutdown_timeout,
        };
        let app = self.app;
        let governor = app.clone();
        serve(
            listener,
            limits,
            move |req, peer| handle(app.clone(), req, peer),
            shutdown,
            &self.stream_cut,
        )
        .await;
        // Settlements still queued for the shared store are written before
        // the process ends (bounded: a store that is down must not hold the
        // exit; their reservations then expire with their leases).
        governor.governor.flush(SETTLE_FLUSH_BOUND).await;
    }
}

/// The routes, for 404/405 decisions and metric labels.
const ROUTES: &[(&str, &[Method])] = &[
    ("/api/agents/send", &[Method::POST]),
    ("/api/agents/stream", &[Method::POST]),
    ("/compact", &[Method::POST]),
    ("/llm-task", &[Method::POST]),
    ("/usage", &[Method::GET]),
    ("/health", &[Method::GET]),
    ("/context", &[Method::GET]),
    ("/skills", &[Method::GET]),
    ("/boot", &[Method::GET]),
    ("/boot/complete", &[Method::POST]),
    ("/metrics", &[Method::GET]),
];

/// Handles one request. Infallible: every failure is a JSON response.
///
/// `HEAD` on a GET route is served as that GET, then its body is dropped
/// (status and headers, `content-length` included, are the GET's).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice (see the body)"
)]
fn handle(
    app: Arc<App>,
    mut req: http::Request<Incoming>,
    peer: SocketAddr,
) -> impl Future<Output = http::Response<Body>> {
    // Not an `async fn`: its arguments would be stored twice in the
    // future (as captured and as locals), and `req` alone is 304 bytes. The
    // request stays here; the handlers below borrow it.
    async move {
        let started = Instant::now();
        let rid = request_id(req.headers());
        let method = req.method().clone();
        // A trailing slash names the same route, as Express (0.1.0) treated it.
        let path = req.uri().path();
        let path = if path.len() > 1 {
            path.strip_suffix('/').unwrap_or(path)
        } else {
            path
        };
        let route = ROUTES
            .iter()
            .find(|(p, _)| *p == path)
            .map_or("unmatched", |(p, _)| *p);
        let head = req.method() == Method::HEAD && allows(route, &Method::GET);
        let span = tracing::info_span!(
            "request",
            id = rid.to_str().unwrap_or("-"),
            %method,
            path = req.uri().path(),
            %peer,
            otel.kind = tracing::field::Empty,
            otel.name = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if wombat_telemetry::enabled() {
            // The server span of the trace; it joins the caller's trace when
            // the request carries a W3C `traceparent`.
            span.record("otel.kind", "server");
            span.record("otel.name", format!("{method} {route}"));
            wombat_telemetry::set_remote_parent(&span, req.headers());
        }
        if head {
            *req.method_mut() = Method::GET;
        }
        let result = dispatch(&app, &mut req, route)
            .instrument(span.clone())
            .await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                let _enter = span.enter();
                if err.status.is_server_error() {
                    tracing::error!(status = err.status.as_u16(), code = err.code, error = %err.message, "request failed");
                } else {
                    tracing::debug!(status = err.status.as_u16(), code = err.code, error = %err.message, "request refused");
                }
                err.into_response()
            }
        };
        resp.headers_mut().insert(REQUEST_ID, rid);
        if head {
            strip_body(&mut resp);
        }
        let elapsed = started.elapsed();
        app.metrics
            .observe_request(route, resp.status().as_u16(), elapsed);
        let _enter = span.enter();
        if wombat_telemetry::enabled() {
            span.record(
                "http.response.status_code",
                i64::from(resp.status().as_u16()),
            );
            if resp.status().is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        tracing::info!(
            status = resp.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "served"
        );
        resp
    }
}

/// Whether `route` answers `method`.
fn allows(route: &str, method: &Method) -> bool {
    ROUTES
        .iter()
        .any(|(path, methods)| *path == route && methods.contains(method))
}

/// The answer to a `HEAD`: the GET's status and headers, no body.
fn strip_body(resp: &mut http::Response<Body>) {
    if let Some(len) = resp.body().size_hint().exact() {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *resp.body_mut() = full(bytes::Bytes::new());
}

/// Auth, then the `match (method, path)` router. Auth comes first so that a
/// caller without the daemon key learns nothing about which routes and
/// methods exist (403, not 404/405).
async fn dispatch(
    app: &Arc<App>,
    req: &mut http::Request<Incoming>,
    route: &'static str,
) -> Result<http::Response<Body>, ApiError> {
    check_daemon_key(app, req, route)?;
    let Some((_, methods)) = ROUTES.iter().find(|(path, _)| *path == route) else {
        return Err(ApiError::not_found(req.uri().path()));
    };
    if !methods.contains(req.method()) {
        let mut allow = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        if methods.contains(&Method::GET) {
            allow.push_str(", HEAD");
        }
        let mut resp = ApiError::method_not_allowed(req.method(), route).into_response();
        if let Ok(v) = HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return Ok(resp);
    }

    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    match (req.method().clone(), route) {
        (Method::POST, "/api/agents/send") => agent::send(app, req).await,
        (Method::POST, "/api/agents/stream") => agent::stream(app, req).await,
        // Boxed: an arm's future sizes the whole handler future, which every
        // request moves into a box (a copy of its size); these two hold an
        // LLM call in place, and are not the hot path.
        (Method::POST, "/compact") => Box::pin(tasks::compact(app, req)).await,
        (Method::POST, "/llm-task") => Box::pin(tasks::llm_task(app, req)).await,
        (Method::GET, "/health") => {
            let deep = param("deep").is_some_and(|v| v == "true" || v == "1");
            Ok(info::health(app, deep).await)
        }
        (Method::GET, "/usage") => info::usage(app, param("user_id").as_deref()).await,
        (Method::GET, "/context") => info::context(app, param("role").as_deref()),
        (Method::GET, "/skills") => Ok(info::skills(app)),
        (Method::GET, "/boot") => Ok(info::boot(app)),
        (Method::POST, "/boot/complete") => info::boot_complete(app).await,
        (Method::GET, "/metrics") => Ok(info::metrics(app)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        )),
    }
}

/// `X-Agent-Daemon-Key`, when a key is configured. `/health` is always
/// open; `/metrics` is open when `WOMBAT_METRICS_PUBLIC=true`.
fn check_daemon_key(app: &App, req: &http::Request<Incoming>, route: &str) -> Result<(), ApiError> {
    let Some(key) = &app.config.daemon_api_key else {
        return Ok(());
    };
    if route == "/health" || (route == "/metrics" && app.config.metrics_public) {
        return Ok(());
    }
    let presented = req
        .headers()
        .get("x-agent-daemon-key")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if constant_time_eq(presented, key.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::invalid_daemon_key())
    }
}
