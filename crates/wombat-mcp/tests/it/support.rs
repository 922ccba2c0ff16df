//! Shared helpers: the reference backend, agent JWTs, and a recording MCP
//! server built with rmcp's own server side.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wombat_controlplane::{JwtAlgorithm, JwtConfig, jwt};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};
use wombat_mcp::{McpConfig, McpOptions, McpTools};

pub const SECRET: &str = "mcp-integration-secret";

pub fn jwt_config() -> JwtConfig {
    JwtConfig::new(SECRET, JwtAlgorithm::HS256).unwrap()
}

pub fn token(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jwt::mint(&jwt_config(), user, "agent", None, now).unwrap()
}

pub async fn start_mc_lite() -> RunningMcLite {
    let cfg = McLiteConfig::new(jwt_config(), DbLocation::Memory);
    McLite::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `McpTools` over `{"mcpServers": <servers>}`.
pub fn tools(servers: Value, options: McpOptions) -> McpTools {
    let config = McpConfig::parse(&json!({ "mcpServers": servers }).to_string(), "test").unwrap();
    McpTools::new(config, options).unwrap()
}

/// Bounds a test step so a hang fails instead of blocking the suite.
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("step did not finish within 60 s")
}

/// What one HTTP request to the recording server carried.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub jsonrpc_method: Option<String>,
    pub agent_token: Option<String>,
    pub authorization: Option<String>,
    pub traceparent: Option<String>,
    pub api_key: Option<String>,
    /// `Mcp-Session-Id` (only with a stateful server).
    pub session_id: Option<String>,
    /// `params.arguments.text` of a `tools/call`.
    pub text_argument: Option<String>,
}

/// An MCP server on 127.0.0.1:0 with test tools, recording every request.
pub struct RecordingServer {
    pub url: String,
    pub log: Arc<Mutex<Vec<Recorded>>>,
    /// The `text` of every `echo` the server actually ran.
    pub executed: Arc<Mutex<Vec<String>>>,
    /// The stateful server's sessions (to expire one by hand).
    pub sessions: Arc<LocalSessionManager>,
}

impl RecordingServer {
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, jsonrpc_method: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.jsonrpc_method.as_deref() == Some(jsonrpc_method))
            .count()
    }

    /// Requests with this JSON-RPC method.
    pub fn with_method(&self, jsonrpc_method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.jsonrpc_method.as_deref() == Some(jsonrpc_method))
            .collect()
    }
}

/// A stateless recording server (no sessions).
pub async fn start_recording() -> RecordingServer {
    start_recording_mode(false).await
}

/// A recording server with sessions (`Mcp-Session-Id`, `DELETE` to end one).
pub async fn start_stateful_recording() -> RecordingServer {
    start_recording_mode(true).await
}

async fn start_recording_mode(stateful: bool) -> RecordingServer {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(stateful)
        .with_json_response(true)
        .with_sse_keep_alive(None);
    let executed: Arc<Mutex<Vec<String>>> = Arc::default();
    let tools = TestTools {
        executed: Arc::clone(&executed),
    };
    let sessions = Arc::new(LocalSessionManager::default());
    let service = Arc::new(StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::clone(&sessions),
        config,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let server_log = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = Arc::clone(&service);
            let log = Arc::clone(&server_log);
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let service = Arc::clone(&service);
                    let log = Arc::clone(&log);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let header = |name: &str| {
                            parts
                                .headers
                                .get(name)
                                .map(|v| v.to_str().unwrap().to_owned())
                        };
                        log.lock().unwrap().push(Recorded {
                            method: parts.method.to_string(),
                            jsonrpc_method: parsed["method"].as_str().map(str::to_owned),
                            agent_token: header("x-agent-token"),
                            authorization: header("authorization"),
                            traceparent: header("traceparent"),
                            api_key: header("x-api-key"),
                            session_id: header("mcp-session-id"),
                            text_argument: parsed["params"]["arguments"]["text"]
                                .as_str()
                                .map(str::to_owned),
                        });
                        let resp = service
                            .handle(hyper::Request::from_parts(parts, Full::new(body)))
                            .await;
                        let (parts, body) = resp.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        Ok::<_, Infallible>(hyper::Response::from_parts(
                            parts,
                            Full::<Bytes>::new(body),
                        ))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    RecordingServer {
        url: format!("http://{addr}/mcp"),
        log,
        executed,
        sessions,
    }
}

/// The recording server's tools.
#[derive(Clone)]
struct TestTools {
    executed: Arc<Mutex<Vec<String>>>,
}

fn object(v: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(v.as_object().unwrap().clone())
}

impl ServerHandler for TestTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let text = object(json!({
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        }));
        let empty = object(json!({"type": "object"}));
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("echo", "Echoes text.", Arc::clone(&text)),
            Tool::new(
                "whoami",
                "The X-Agent-Token this call carried.",
                Arc::clone(&text),
            ),
            Tool::new("slow", "Takes 30 seconds.", Arc::clone(&empty)),
            Tool::new("big", "100 KB of text.", Arc::clone(&empty)),
            Tool::new("fail", "Always fails.", Arc::clone(&empty)),
            Tool::new("structured", "A JSON result.", Arc::clone(&empty)),
            Tool::new("wipe", "Destroys things.", empty)
                .annotate(ToolAnnotations::new().destructive(true)),
            // Not exposable (a dot); must be left out, not break the list.
            Tool::new("bad.name", "Left out.", object(json!({"type": "object"}))),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = match request.name.as_ref() {
            "echo" => {
                let text = args["text"].as_str().unwrap_or_default();
                self.executed.lock().unwrap().push(text.to_owned());
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            "whoami" => {
                let token = context
                    .extensions
                    .get::<http::request::Parts>()
                    .and_then(|p| p.headers.get("x-agent-token"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                CallToolResult::success(vec![ContentBlock::text(token)])
            }
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                CallToolResult::success(vec![ContentBlock::text("finally")])
            }
            "big" => CallToolResult::success(vec![ContentBlock::text("x".repeat(100_000))]),
            "fail" => CallToolResult::error(vec![ContentBlock::text("it broke")]),
            "structured" => CallToolResult::structured(json!({"answer": 42})),
            "wipe" => CallToolResult::success(vec![ContentBlock::text("wiped")]),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}
