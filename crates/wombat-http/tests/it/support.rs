//! The harness: an in-process mc-lite, a scripted fake OpenAI server, a
//! webhook receiver and the daemon, all on `127.0.0.1:0`, plus small client
//! helpers (JSON calls, an incremental SSE reader, backend reads with a
//! minted agent token).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use wombat_controlplane::{ControlPlane, ControlPlaneConfig, JwtAlgorithm, JwtConfig, jwt};
use wombat_core::Provider;
use wombat_http::config::{DaemonConfig, Settings};
use wombat_http::{Backend, Daemon};
use wombat_llm::{ApiKey, Router, RouterConfig, Sleeper};
use wombat_mc_lite::{DbLocation, McLite, McLiteConfig, RunningMcLite};
use wombat_workspace::{Workspace, WorkspaceOptions};

/// JWT secret shared by the daemon and mc-lite.
pub const SECRET: &str = "e2e-test-secret";
/// Upper bound of any wait for a background effect (never reached when
/// things work; it only turns a bug into a failure instead of a hang).
pub const PATIENCE: Duration = Duration::from_secs(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Awaits `fut` for at most [`PATIENCE`].
pub async fn patiently<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// One HTTP request a fake server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    /// Every header line in order, duplicates included.
    pub raw_headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one HTTP/1.1 request with a `Content-Length` body.
async fn read_request(stream: &mut TcpStream) -> Option<Recorded> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let header_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let raw_headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let headers: HashMap<String, String> = raw_headers.iter().cloned().collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(len);
    Some(Recorded {
        method,
        path,
        headers,
        raw_headers,
        body,
    })
}

fn head(status: u16, headers: &[(String, String)], len: Option<usize>) -> String {
    let mut h = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    match len {
        Some(n) => h.push_str(&format!("content-length: {n}\r\n\r\n")),
        None => h.push_str("transfer-encoding: chunked\r\n\r\n"),
    }
    h
}

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// Waits until the client closes the connection (read returns EOF or fails).
async fn client_gone(stream: &mut TcpStream) {
    let mut tmp = [0u8; 256];
    loop {
        match stream.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A scripted reply of the fake LLM.
#[derive(Clone)]
pub enum Reply {
    /// A completion: non-stream JSON or SSE, as the request asks. With
    /// `hold`, a stream stops after its first chunk (a non-stream reply
    /// before anything is written) until the notify fires.
    Text {
        chunks: Vec<String>,
        prompt_tokens: u64,
        completion_tokens: u64,
        hold: Option<Arc<Notify>>,
    },
    /// Tool calls (id, name, arguments), `finish_reason: "tool_calls"`,
    /// 1000 prompt and 20 completion tokens; streamed as OpenAI does (id and
    /// name first, then argument fragments).
    Calls(Vec<(String, String, Value)>),
    /// An error status with a body and extra headers.
    Status {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
}

impl Reply {
    /// One call per `(id, name, arguments)`.
    pub fn calls(calls: &[(&str, &str, Value)]) -> Self {
        Reply::Calls(
            calls
                .iter()
                .map(|(id, name, args)| ((*id).to_owned(), (*name).to_owned(), args.clone()))
                .collect(),
        )
    }

    /// A completion of `chunks` with 1250 prompt and 150 completion tokens.
    pub fn chunks(chunks: &[&str]) -> Self {
        Reply::Text {
            chunks: chunks.iter().map(|c| (*c).to_owned()).collect(),
            prompt_tokens: 1250,
            completion_tokens: 150,
            hold: None,
        }
    }

    pub fn text(text: &str) -> Self {
        Self::chunks(&[text])
    }

    pub fn tokens(mut self, prompt: u64, completion: u64) -> Self {
        if let Reply::Text {
            prompt_tokens,
            completion_tokens,
            ..
        } = &mut self
        {
            *prompt_tokens = prompt;
            *completion_tokens = completion;
        }
        self
    }

    pub fn held(mut self, release: Arc<Notify>) -> Self {
        if let Reply::Text { hold, .. } = &mut self {
            *hold = Some(release);
        }
        self
    }

    pub fn status(status: u16, message: &str) -> Self {
        Reply::Status {
            status,
            body: json!({"error": {"message": message, "type": "test_error"}}).to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Status { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

struct LlmState {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
    arrived: watch::Sender<usize>,
    closed_early: watch::Sender<usize>,
}

/// A fake OpenAI Chat Completions server.
#[derive(Clone)]
pub struct FakeLlm {
    pub url: String,
    state: Arc<LlmState>,
}

impl FakeLlm {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(LlmState {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::chunks(&["Hello", " from", " the fake"])),
            requests: Mutex::new(Vec::new()),
            arrived: watch::channel(0).0,
            closed_early: watch::channel(0).0,
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_llm(st.clone(), stream));
            }
        });
        Self { url, state }
    }

    /// Queues replies, used before the default one.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.script).extend(replies);
    }

    /// The reply used when the script is empty.
    pub fn always(&self, reply: Reply) {
        *lock(&self.state.default) = reply;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    pub fn last_body(&self) -> Value {
        self.requests().last().expect("an LLM request").json()
    }

    /// Waits until `n` requests have arrived.
    pub async fn wait_requests(&self, n: usize) {
        let mut rx = self.state.arrived.subscribe();
        patiently("LLM requests", rx.wait_for(|c| *c >= n))
            .await
            .expect("fake alive");
    }

    /// Waits until a held reply saw its client go away.
    pub async fn wait_closed_early(&self, n: usize) {
        let mut rx = self.state.closed_early.subscribe();
        patiently("the LLM connection to close", rx.wait_for(|c| *c >= n))
            .await
            .expect("fake alive");
    }
}

async fn serve_llm(st: Arc<LlmState>, mut stream: TcpStream) {
    let Some(req) = read_request(&mut stream).await else {
        return;
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let streaming = body["stream"].as_bool().unwrap_or(false);
    lock(&st.requests).push(req);
    let reply = lock(&st.script)
        .pop_front()
        .unwrap_or_else(|| lock(&st.default).clone());
    st.arrived.send_modify(|n| *n += 1);
    match reply {
        Reply::Calls(calls) => {
            let usage =
                json!({"prompt_tokens": 1000, "completion_tokens": 20, "total_tokens": 1020});
            if !streaming {
                let tool_calls: Vec<Value> = calls
                    .iter()
                    .map(|(id, name, args)| {
                        json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})
                    })
                    .collect();
                let body = json!({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": tool_calls}, "finish_reason": "tool_calls"}],
                    "usage": usage,
                })
                .to_string();
                let headers = [("content-type".to_owned(), "application/json".to_owned())];
                let mut out = head(200, &headers, Some(body.len())).into_bytes();
                out.extend_from_slice(body.as_bytes());
                let _ = stream.write_all(&out).await;
                return;
            }
            let event = |v: Value| format!("data: {v}\n\n");
            let delta = |d: Value, finish: Value| {
                event(json!({
                    "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": model, "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
                }))
            };
            let headers = [("content-type".to_owned(), "text/event-stream".to_owned())];
            let mut out = head(200, &headers, None).into_bytes();
            out.extend(chunk(&delta(
                json!({"role": "assistant", "content": null}),
                Value::Null,
            )));
            for (i, (id, name, args)) in calls.iter().enumerate() {
                out.extend(chunk(&delta(
                    json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                )));
                let text = args.to_string();
                let (a, b) = text.split_at(text.len() / 2);
                for part in [a, b] {
                    out.extend(chunk(&delta(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                        Value::Null,
                    )));
                }
            }
            out.extend(chunk(&delta(json!({}), json!("tool_calls"))));
            out.extend(chunk(&event(json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "choices": [], "usage": usage,
            }))));
            out.extend(chunk("data: [DONE]\n\n"));
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = stream.write_all(&out).await;
        }
        Reply::Status {
            status,
            body,
            headers,
        } => {
            let mut out = head(status, &headers, Some(body.len())).into_bytes();
            out.extend_from_slice(body.as_bytes());
            let _ = stream.write_all(&out).await;
        }
        Reply::Text {
            chunks,
            prompt_tokens,
            completion_tokens,
            hold,
        } => {
            let usage = json!({
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            });
            if !streaming {
                if let Some(release) = &hold {
                    tokio::select! {
                        () = release.notified() => {}
                        () = client_gone(&mut stream) => {
                            st.closed_early.send_modify(|n| *n += 1);
                            return;
                        }
                    }
                }
                let body = json!({
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1_700_000_000,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": chunks.concat()}, "finish_reason": "stop"}],
                    "usage": usage,
                })
                .to_string();
                let headers = [("content-type".to_owned(), "application/json".to_owned())];
                let mut out = head(200, &headers, Some(body.len())).into_bytes();
                out.extend_from_slice(body.as_bytes());
                let _ = stream.write_all(&out).await;
                return;
            }
            let event = |v: Value| format!("data: {v}\n\n");
            let delta = |d: Value, finish: Value| {
                event(json!({
                    "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": model, "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
                }))
            };
            let headers = [("content-type".to_owned(), "text/event-stream".to_owned())];
            let mut first = head(200, &headers, None).into_bytes();
            first.extend(chunk(&delta(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )));
            let mut rest = chunks.iter();
            if let Some(c) = rest.next() {
                first.extend(chunk(&delta(json!({"content": c}), Value::Null)));
            }
            if stream.write_all(&first).await.is_err() {
                return;
            }
            if let Some(release) = &hold {
                tokio::select! {
                    () = release.notified() => {}
                    () = client_gone(&mut stream) => {
                        st.closed_early.send_modify(|n| *n += 1);
                        return;
                    }
                }
            }
            let mut out = Vec::new();
            for c in rest {
                out.extend(chunk(&delta(json!({"content": c}), Value::Null)));
            }
            out.extend(chunk(&delta(json!({}), json!("stop"))));
            out.extend(chunk(&event(json!({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "choices": [], "usage": usage,
            }))));
            out.extend(chunk("data: [DONE]\n\n"));
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = stream.write_all(&out).await;
        }
    }
}

struct HookState {
    statuses: Mutex<VecDeque<u16>>,
    requests: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
}

/// A webhook receiver: answers scripted statuses (then 200), records all.
#[derive(Clone)]
pub struct Hooks {
    pub url: String,
    state: Arc<HookState>,
}

impl Hooks {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let state = Arc::new(HookState {
            statuses: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut stream).await else {
                        return;
                    };
                    let status = lock(&st.statuses).pop_front().unwrap_or(200);
                    lock(&st.requests).push(req);
                    let _ = stream
                        .write_all(head(status, &[], Some(0)).as_bytes())
                        .await;
                    st.count.send_modify(|n| *n += 1);
                });
            }
        });
        Self { url, state }
    }

    pub fn answer(&self, statuses: &[u16]) {
        lock(&self.state.statuses).extend(statuses);
    }

    /// Deliveries received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Waits for `n` deliveries and returns all recorded so far.
    pub async fn wait(&self, n: usize) -> Vec<Recorded> {
        let mut rx = self.state.count.subscribe();
        patiently("webhook deliveries", rx.wait_for(|c| *c >= n))
            .await
            .expect("receiver alive");
        lock(&self.state.requests).clone()
    }
}

/// Retries without waiting.
struct NoWait;

impl Sleeper for NoWait {
    fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

pub fn jwt_config() -> JwtConfig {
    JwtConfig::new(SECRET, JwtAlgorithm::HS256).expect("jwt config")
}

/// What a [`BackendProxy`] does to the requests that match
/// `(method, path fragment)`; an empty method or fragment matches any.
#[derive(Clone, Default)]
pub struct Faults {
    /// Held this long, then forwarded whether or not the daemon still
    /// waits (a slow backend that commits after its client gave up).
    pub slow: Vec<(&'static str, &'static str, Duration)>,
    /// Never answered nor forwarded (a hung backend).
    pub hang: Vec<(&'static str, &'static str)>,
    /// The first matching request is forwarded (so stored), but the daemon
    /// gets a 503 instead of the answer (a lost acknowledgement).
    pub lose_first_ack: Option<(&'static str, &'static str)>,
}

fn matches(rule: (&str, &str), req: &Recorded) -> bool {
    (rule.0.is_empty() || rule.0 == req.method) && req.path.contains(rule.1)
}

struct ProxyState {
    ack_lost: std::sync::atomic::AtomicBool,
    forwarded: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
}

/// A fault-injecting HTTP proxy in front of mc-lite, on loopback.
#[derive(Clone)]
pub struct BackendProxy {
    pub url: String,
    state: Arc<ProxyState>,
}

impl BackendProxy {
    async fn start(upstream: String, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(ProxyState {
            ack_lost: std::sync::atomic::AtomicBool::new(false),
            forwarded: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let st = state.clone();
        let http = reqwest::Client::new();
        let faults = Arc::new(faults);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (st, http, faults, upstream) =
                    (st.clone(), http.clone(), faults.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut stream).await else {
                        return;
                    };
                    if faults.hang.iter().any(|r| matches(*r, &req)) {
                        client_gone(&mut stream).await;
                        return;
                    }
                    if let Some((_, _, d)) = faults.slow.iter().find(|r| matches((r.0, r.1), &req))
                    {
                        tokio::time::sleep(*d).await;
                    }
                    let method =
                        reqwest::Method::from_bytes(req.method.as_bytes()).expect("method");
                    let mut fwd = http.request(method, format!("{upstream}{}", req.path));
                    for (k, v) in &req.raw_headers {
                        if !["host", "content-length", "connection"].contains(&k.as_str()) {
                            fwd = fwd.header(k, v);
                        }
                    }
                    let resp = fwd
                        .body(req.body.clone())
                        .send()
                        .await
                        .expect("mc-lite answers");
                    let status = resp.status().as_u16();
                    let ct = resp
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/json")
                        .to_owned();
                    let body = resp.bytes().await.expect("mc-lite body");
                    let lose = faults.lose_first_ack.is_some_and(|r| matches(r, &req))
                        && !st.ack_lost.swap(true, std::sync::atomic::Ordering::SeqCst);
                    lock(&st.forwarded).push(req);
                    st.count.send_modify(|n| *n += 1);
                    let (status, body) = if lose {
                        (503, Bytes::from_static(br#"{"error":"ack lost"}"#))
                    } else {
                        (status, body)
                    };
                    let mut out =
                        head(status, &[("content-type".into(), ct)], Some(body.len())).into_bytes();
                    out.extend_from_slice(&body);
                    let _ = stream.write_all(&out).await;
                });
            }
        });
        Self { url, state }
    }

    /// Requests forwarded to mc-lite so far (so: stored, for writes).
    pub fn forwarded(&self) -> Vec<Recorded> {
        lock(&self.state.forwarded).clone()
    }

    /// Waits until `n` requests have been forwarded.
    pub async fn wait_forwarded(&self, n: usize) -> Vec<Recorded> {
        let mut rx = self.state.count.subscribe();
        patiently("forwarded backend requests", rx.wait_for(|c| *c >= n))
            .await
            .expect("proxy alive");
        self.forwarded()
    }
}

/// Where the daemon's backend is.
pub enum BackendKind {
    McLite,
    /// mc-lite behind a [`BackendProxy`] with these faults.
    Faulty(Faults),
    /// A loopback port nobody listens on.
    Closed,
    /// No backend configured at all.
    None,
}

/// A private copy of `workspace-examples/default` in a temporary folder:
/// tests never read (or, through `POST /boot/complete`, write) the
/// repository's own files, which a user may have changed.
pub fn example_workspace() -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workspace-examples/default");
    let copy = tempfile::tempdir().expect("tempdir");
    copy_tree(&source, copy.path());
    // A marker a user left in the example is not part of the example.
    let _ = std::fs::remove_file(copy.path().join(".boot-complete"));
    copy
}

/// Copies the folder `from` into `to` (files and folders only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// How to build a [`Harness`].
pub struct Setup {
    settings: Vec<(String, String)>,
    workspace: Option<PathBuf>,
    backend: BackendKind,
    llm_attempts: u32,
    time_context: bool,
    fallback: Option<String>,
    default_model: Option<String>,
    llm_deadline: Option<Duration>,
    tools: Option<Arc<dyn wombat_agent::tools::ToolSource>>,
    mcp: bool,
}

pub fn setup() -> Setup {
    Setup {
        // The webhook receiver listens on loopback.
        settings: vec![("WOMBAT_WEBHOOK_ALLOW_PRIVATE".into(), "true".into())],
        workspace: None,
        backend: BackendKind::McLite,
        llm_attempts: 2,
        time_context: false,
        fallback: None,
        default_model: None,
        llm_deadline: None,
        tools: None,
        mcp: false,
    }
}

impl Setup {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    pub fn workspace(mut self, path: &Path) -> Self {
        self.workspace = Some(path.to_owned());
        self
    }

    pub fn backend(mut self, kind: BackendKind) -> Self {
        self.backend = kind;
        self
    }

    pub fn llm_attempts(mut self, n: u32) -> Self {
        self.llm_attempts = n;
        self
    }

    /// `LLM_MODEL_DEFAULT` (the harness has only an OpenAI key).
    pub fn default_model(mut self, model: &str) -> Self {
        self.default_model = Some(model.to_owned());
        self
    }

    pub fn fallback(mut self, model: &str) -> Self {
        self.fallback = Some(model.to_owned());
        self
    }

    /// The router's total deadline per request.
    pub fn llm_deadline(mut self, deadline: Duration) -> Self {
        self.llm_deadline = Some(deadline);
        self
    }

    /// The in-process mc-lite's `/mcp` as the daemon's MCP server `mc`
    /// (`WOMBAT_MCP_SERVERS`).
    pub fn mcp(mut self) -> Self {
        self.mcp = true;
        self
    }

    /// Tools the daemon runs itself.
    pub fn tools(mut self, source: Arc<dyn wombat_agent::tools::ToolSource>) -> Self {
        self.tools = Some(source);
        self
    }

    pub fn time_context(mut self) -> Self {
        self.time_context = true;
        self
    }

    pub async fn start(self) -> Harness {
        let llm = FakeLlm::start().await;
        let hooks = Hooks::start().await;
        let mc = McLite::start(
            McLiteConfig::new(jwt_config(), DbLocation::Memory),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await
        .expect("mc-lite starts");
        let mut proxy = None;
        let backend_url = match self.backend {
            BackendKind::McLite | BackendKind::None => mc.url(),
            BackendKind::Faulty(ref faults) => {
                let p = BackendProxy::start(mc.url(), faults.clone()).await;
                let url = p.url.clone();
                proxy = Some(p);
                url
            }
            BackendKind::Closed => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let url = format!("http://{}", l.local_addr().expect("addr"));
                drop(l);
                url
            }
        };
        let configured = !matches!(self.backend, BackendKind::None);
        let mut cp = ControlPlaneConfig::new(backend_url.clone(), jwt_config());
        cp.retry = wombat_controlplane::RetryPolicy {
            attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            jitter: 0.0,
        };
        let backend = Backend {
            url: backend_url,
            client: ControlPlane::new(cp).expect("control plane"),
        };

        let mut router = RouterConfig::default();
        router
            .base_urls
            .insert(Provider::OpenAi, format!("{}/v1", llm.url));
        router
            .api_keys
            .insert(Provider::OpenAi, ApiKey::new("sk-test-key"));
        router.retry = wombat_llm::RetryPolicy {
            attempts: self.llm_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            jitter: 0.0,
        };
        router.fallback_model = self.fallback;
        if let Some(m) = self.default_model {
            router.default_model = m;
        }
        if let Some(d) = self.llm_deadline {
            router.deadline = d;
        }
        let router = Router::builder(router)
            .sleeper(Arc::new(NoWait))
            .build()
            .expect("router");

        let mut settings: Settings = self.settings.iter().cloned().collect();
        if self.mcp {
            settings.insert(
                "WOMBAT_MCP_SERVERS".into(),
                json!({"mcpServers": {"mc": {"url": format!("{}/mcp", mc.url())}}}).to_string(),
            );
        }
        let config = DaemonConfig::from_settings(&settings).expect("valid settings");
        let daemon_key = config
            .daemon_api_key
            .as_ref()
            .map(|k| k.expose().to_owned());
        let example = self.workspace.is_none().then(example_workspace);
        let workspace_dir = match (&self.workspace, &example) {
            (Some(dir), _) => dir.clone(),
            (None, Some(copy)) => copy.path().to_owned(),
            (None, None) => unreachable!("example copied when no workspace is given"),
        };
        let options = WorkspaceOptions {
            include_time_context: self.time_context,
            refresh_interval: Duration::ZERO,
            // As the binary does.
            state_dir: config.state_dir.clone(),
            ..WorkspaceOptions::default()
        };
        let workspace = Workspace::open(&workspace_dir, options).expect("workspace");
        let mut daemon =
            Daemon::new(config, workspace, router, configured.then_some(backend)).expect("daemon");
        if let Some(source) = self.tools {
            daemon = daemon.with_tool_source(source);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(daemon.serve(listener, async {
            let _ = rx.await;
        }));
        Harness {
            url,
            http: reqwest::Client::new(),
            llm,
            hooks,
            mc: Some(mc),
            proxy,
            daemon_key,
            shutdown: Some(tx),
            served: Some(served),
            _example: example,
        }
    }
}

/// A running daemon with its fakes.
pub struct Harness {
    pub url: String,
    pub http: reqwest::Client,
    pub llm: FakeLlm,
    pub hooks: Hooks,
    pub mc: Option<RunningMcLite>,
    /// The proxy in front of mc-lite, with [`BackendKind::Faulty`].
    pub proxy: Option<BackendProxy>,
    pub daemon_key: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The copy of the example workspace, removed with the harness.
    _example: Option<tempfile::TempDir>,
    served: Option<tokio::task::JoinHandle<()>>,
}

/// A buffered response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error response: status, `error` first, `code`.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert!(
            self.text.starts_with("{\"error\":\""),
            "error must come first: {}",
            self.text
        );
        let v = self.json();
        assert!(v["error"].is_string(), "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(self.header("content-type"), Some("application/json"), "{v}");
        v
    }
}

pub async fn buffer(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Resp {
        status,
        headers,
        text,
    }
}

impl Harness {
    /// Signals shutdown (like SIGTERM) and returns the serve task, which
    /// ends once in-flight requests have drained.
    pub fn shut_down(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.served.take().expect("served once")
    }

    /// A request with the daemon key, when one is configured.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(k) = &self.daemon_key {
            req = req.header("x-agent-daemon-key", k);
        }
        req
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        buffer(
            self.request(reqwest::Method::POST, path)
                .json(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<Bytes>) -> Resp {
        let body: Bytes = body.into();
        buffer(
            self.request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        buffer(
            self.request(reqwest::Method::GET, path)
                .send()
                .await
                .expect("send"),
        )
        .await
    }

    /// Starts an SSE request and checks the response head.
    pub async fn sse(&self, path: &str, body: &Value) -> Sse {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        Sse {
            stream: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    fn mc_url(&self) -> String {
        self.mc.as_ref().expect("mc-lite running").url()
    }

    /// `GET /api/mission-control/<path>` as tenant `user`.
    pub async fn mc_get(&self, user: &str, path: &str) -> Value {
        let now = jiff::Timestamp::now().as_second().unsigned_abs();
        let token = jwt::mint(&jwt_config(), user, "agent", None, now).expect("token");
        let resp = self
            .http
            .get(format!("{}/api/mission-control/{path}", self.mc_url()))
            .header("x-agent-token", token)
            .send()
            .await
            .expect("mc-lite answers");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }

    pub async fn tasks(&self, user: &str) -> Vec<Value> {
        let v = self.mc_get(user, "tasks?limit=100").await;
        v["items"].as_array().expect("items").clone()
    }

    pub async fn messages(&self, user: &str, task_id: &str) -> Vec<Value> {
        let v = self
            .mc_get(user, &format!("tasks/{task_id}/messages"))
            .await;
        v["items"].as_array().expect("items").clone()
    }

    pub async fn documents(&self, user: &str, task_id: &str) -> Vec<Value> {
        let v = self
            .mc_get(user, &format!("tasks/{task_id}/documents"))
            .await;
        v["items"].as_array().expect("items").clone()
    }

    /// Creates a task directly in the backend and returns its id.
    pub async fn create_task(&self, user: &str, title: &str) -> String {
        let now = jiff::Timestamp::now().as_second().unsigned_abs();
        let token = jwt::mint(&jwt_config(), user, "agent", None, now).expect("token");
        let resp = self
            .http
            .post(format!("{}/api/mission-control/tasks", self.mc_url()))
            .header("x-agent-token", token)
            .json(&json!({"title": title}))
            .send()
            .await
            .expect("mc-lite answers");
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        v["id"].as_str().expect("id").to_owned()
    }
}

/// An SSE response read event by event.
pub struct Sse {
    stream: BoxStream<'static, reqwest::Result<Bytes>>,
    buf: String,
}

impl Sse {
    /// The next `(event, data)`, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return Some((event, data));
            }
            let bytes = patiently("the next SSE bytes", self.stream.next())
                .await?
                .expect("stream body");
            self.buf
                .push_str(std::str::from_utf8(&bytes).expect("utf-8"));
        }
    }

    /// Every remaining event.
    pub async fn rest(mut self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

/// A minimal valid send body.
pub fn send_body(user: &str, extra: Value) -> Value {
    let mut body = json!({
        "user_id": user,
        "session_key": format!("user:{user}:agent"),
        "message": "Hello there",
    });
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    body
}

/// Lowercase hex HMAC-SHA256.
pub fn hmac_hex(secret: &str, data: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
