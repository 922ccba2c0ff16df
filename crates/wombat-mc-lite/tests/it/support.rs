//! Shared helpers: an in-process backend, raw HTTP calls, and a faulty
//! proxy that can fail requests before or after forwarding them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use wombat_controlplane::{
    ControlPlane, ControlPlaneConfig, JwtAlgorithm, JwtConfig, RetryPolicy, jwt,
};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};

pub const SECRET: &str = "integration-test-secret";
pub const INTERNAL: &str = "integration-internal-token";

pub fn jwt_config() -> JwtConfig {
    JwtConfig::new(SECRET, JwtAlgorithm::HS256).unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(user: &str) -> String {
    jwt::mint(&jwt_config(), user, "agent", None, now()).unwrap()
}

pub fn config(db: DbLocation) -> McLiteConfig {
    let mut cfg = McLiteConfig::new(jwt_config(), db);
    cfg.internal_token = Some(INTERNAL.into());
    cfg
}

pub async fn start(cfg: McLiteConfig) -> RunningMcLite {
    McLite::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub async fn start_memory() -> RunningMcLite {
    start(config(DbLocation::Memory)).await
}

/// A client with fast retries (no real waiting in tests).
pub fn client(base_url: &str) -> ControlPlane {
    client_with_secret(base_url, SECRET)
}

pub fn client_with_secret(base_url: &str, secret: &str) -> ControlPlane {
    let mut cfg = ControlPlaneConfig::new(
        base_url,
        JwtConfig::new(secret, JwtAlgorithm::HS256).unwrap(),
    );
    cfg.internal_token = Some(INTERNAL.into());
    cfg.retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        jitter: 0.0,
    };
    ControlPlane::new(cfg).unwrap()
}

/// One raw request; answers `(status, JSON body or Null)`.
pub async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `call` as tenant `user` against `/api/mission-control/<path>`.
pub async fn as_user(
    server: &RunningMcLite,
    user: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let t = token(user);
    let body = body.map(|b| b.to_string());
    call(
        method,
        &format!("{}/api/mission-control/{path}", server.url()),
        &[("x-agent-token", &t)],
        body.as_deref(),
    )
    .await
}

/// What the proxy does with the next request to a given path.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Forward it, then answer 503 instead of the upstream's response.
    Forward503,
    /// Answer 429 with `Retry-After: 0` without forwarding.
    Reject429,
    /// Answer 503 without forwarding.
    Reject503,
    /// Answer 404 `task not found` without forwarding.
    Reject404,
}

/// A request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    pub body: Value,
    pub token: Option<String>,
}

#[derive(Default)]
pub struct ProxyState {
    pub faults: Mutex<VecDeque<(String, Fault)>>,
    pub seen: Mutex<Vec<Seen>>,
}

impl ProxyState {
    pub fn inject(&self, path: &str, fault: Fault) {
        self.faults
            .lock()
            .unwrap()
            .push_back((path.to_owned(), fault));
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// Starts a proxy in front of `upstream`; answers its address and state.
pub async fn proxy(upstream: String) -> (SocketAddr, Arc<ProxyState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(ProxyState::default());
    let st = Arc::clone(&state);
    let http = reqwest::Client::new();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (st, http, upstream) = (Arc::clone(&st), http.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (st, http, upstream) = (Arc::clone(&st), http.clone(), upstream.clone());
                    async move { Ok::<_, Infallible>(forward(&st, &http, &upstream, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, state)
}

async fn forward(
    st: &ProxyState,
    http: &reqwest::Client,
    upstream: &str,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let req_query = req.uri().query().unwrap_or_default().to_owned();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let token = headers
        .get("x-agent-token")
        .map(|v| v.to_str().unwrap().to_owned());
    st.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: req_query,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        token,
    });
    let fault = {
        let mut faults = st.faults.lock().unwrap();
        match faults.front() {
            Some((p, _)) if *p == path => faults.pop_front().map(|(_, f)| f),
            _ => None,
        }
    };
    let unavailable = || {
        Response::builder()
            .status(503)
            .body(Full::new(Bytes::from_static(br#"{"error":"unavailable"}"#)))
            .unwrap()
    };
    match fault {
        Some(Fault::Reject503) => return unavailable(),
        Some(Fault::Reject404) => {
            return Response::builder()
                .status(404)
                .body(Full::new(Bytes::from_static(
                    br#"{"error":"task not found","code":"not_found"}"#,
                )))
                .unwrap();
        }
        Some(Fault::Reject429) => {
            return Response::builder()
                .status(429)
                .header("retry-after", "0")
                .body(Full::new(Bytes::from_static(br#"{"error":"slow down"}"#)))
                .unwrap();
        }
        _ => {}
    }
    let mut up = http.request(method, format!("{upstream}{path_and_query}"));
    for name in ["x-agent-token", "x-internal-token", "content-type"] {
        if let Some(v) = headers.get(name) {
            up = up.header(name, v.as_bytes());
        }
    }
    let resp = up.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    if matches!(fault, Some(Fault::Forward503)) {
        return unavailable();
    }
    Response::builder()
        .status(status)
        .body(Full::new(bytes))
        .unwrap()
}
