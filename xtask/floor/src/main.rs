//! `bench-floor`: the floor of `cargo xtask bench` — the least a server can
//! spend to answer the benchmark's requests the way `wombat-server` does,
//! so every run can print the daemon's cost beside it (issue 17).
//!
//! # What it does
//!
//! A hyper 1.x server (hyper-util's auto builder: HTTP/1.1 keep-alive and
//! h2c, `TCP_NODELAY`, tokio's multi-threaded runtime, mimalloc like the
//! daemon) answering three routes:
//!
//! - `POST /api/agents/send`: reads and parses the JSON request (`user_id`,
//!   `message`, `task_title`), then makes the daemon's upstream calls, in
//!   order, over hyper-util's pooled keep-alive client: `GET
//!   {BACKEND_URL}/api/mission-control/tasks?limit=50&title=<task_title>`
//!   (parsed; the task whose title matches is used) — skipped, as the
//!   daemon skips it, when the `(user_id, title)` was resolved in the last
//!   5 minutes (the daemon's task cache: without it the floor would make
//!   three calls per send where the daemon makes two, and flatter the
//!   daemon; `WOMBAT_FLOOR_TASK_CACHE=0` turns it off), `POST
//!   {OPENAI_BASE_URL}/chat/completions` with a **fixed, pre-serialised
//!   body** (parsed: reply text and usage), and `POST
//!   {BACKEND_URL}/api/mission-control/messages` (the reply, the task id and
//!   an attachment with model, provider and usage, serialised per request;
//!   the answer is parsed for the message id). Answers `200` with the
//!   daemon's response shape (`status`, `task_id`, `response`, `usage`,
//!   `cost`, `model`, `provider`, `message_id`).
//! - `POST /api/agents/stream`: the same task lookup before the `200`, then,
//!   in a spawned task, `event: start`, the streamed completion (the fixed
//!   streaming body) relayed as the daemon's `event: chunk` frames (one per
//!   content delta, `{"type":"chunk","data":...}`), the message post with the
//!   whole reply, and `event: done` with usage, cost, model, provider, task
//!   and message id — through a 16-frame channel, as the daemon's.
//! - `GET /health`: `{"status":"ok"}`.
//!
//! Upstream URIs other than the task list are built once at start. The
//! backend gets a fixed `Authorization: Bearer` token of a JWT's size and
//! the LLM `Bearer $OPENAI_API_KEY`, so the bytes on the wire match.
//!
//! # What it does not do (on purpose: this is what a floor leaves out)
//!
//! No JWT minting or checking, no API key check, no cost table (`cost`
//! carries the token counts with zero amounts and `priced: false`), no usage
//! ledger, limits, governance or metrics, no webhook, no logging or tracing
//! spans, no timeouts or deadlines, no retries or failover, no request
//! validation beyond parsing, no workspace or prompt building (the chat body
//! is fixed), no idempotency keys, no graceful shutdown. Errors are a plain
//! `502`/`400`/`404` JSON body.
//!
//! # Configuration (the variables the bench sets for the daemon)
//!
//! `WOMBAT_HOST` (default `127.0.0.1`), `WOMBAT_PORT` (default `8080`),
//! `BACKEND_URL`, `OPENAI_BASE_URL` (default `https://api.openai.com/v1`;
//! plain `http://` only), `OPENAI_API_KEY`; `WOMBAT_FLOOR_TASK_CACHE=0`
//! resolves the task on every request. The chat bodies:
//! `WOMBAT_FLOOR_CHAT_BODY` and `WOMBAT_FLOOR_STREAM_BODY` name files whose
//! bytes are sent as they are (the bench writes there what the daemon sent
//! during its warm-up, so both send bodies of the same size and content);
//! without them a built-in body of the daemon's size (~2.3 KB, the default
//! workspace's system prompt is most of it) is used. Everything else in the
//! environment is ignored.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The daemon's SSE channel capacity (frames buffered per stream).
const CHANNEL_CAPACITY: usize = 16;
/// The model named by the built-in chat body and reported back.
const MODEL: &str = "gpt-4o-mini";
const PROVIDER: &str = "openai";
/// The daemon's task cache: entry lifetime and bound (cleared when full).
const TASK_CACHE_TTL: Duration = Duration::from_secs(300);
const TASK_CACHE_CAP: usize = 4096;
/// A bearer token of an HS256 agent JWT's length; never minted, never checked.
const BACKEND_TOKEN: &str = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudDpmbG9vciIsInRlbmFudCI6ImRlZmF1bHQiLCJyb2xlIjoiYWdlbnQiLCJpYXQiOjAsImV4cCI6MH0.Zmxvb3ItZmxvb3ItZmxvb3ItZmxvb3ItZmxvb3ItZmxv";

type Upstream = Client<HttpConnector, Full<Bytes>>;
type TaskCache = Mutex<HashMap<String, (String, Instant)>>;

/// Everything built once at start.
struct Floor {
    client: Upstream,
    /// `{BACKEND_URL}/api/mission-control/tasks?limit=50&title=` (the title is appended per request).
    tasks_prefix: String,
    messages: Uri,
    chat: Uri,
    llm_auth: HeaderValue,
    backend_auth: HeaderValue,
    chat_body: Bytes,
    stream_body: Bytes,
    /// `user_id NUL title → (task id, resolved at)`; `None` when turned off.
    tasks: Option<TaskCache>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-floor: {e}");
        std::process::exit(1);
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn body_file(var: &str, streaming: bool) -> Result<Bytes, String> {
    match std::env::var_os(var) {
        Some(path) => std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| format!("reading {var}={}: {e}", path.to_string_lossy())),
        None => Ok(Bytes::from(default_chat_body(streaming))),
    }
}

fn run() -> Result<(), String> {
    let host = env("WOMBAT_HOST", "127.0.0.1");
    let port = env("WOMBAT_PORT", "8080");
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("WOMBAT_HOST/WOMBAT_PORT {host:?}:{port:?}: {e}"))?;
    let backend = env("BACKEND_URL", "http://127.0.0.1:3000");
    let backend = backend.trim_end_matches('/');
    let llm = env("OPENAI_BASE_URL", "https://api.openai.com/v1");
    let llm = llm.trim_end_matches('/');
    let uri = |s: String| s.parse::<Uri>().map_err(|e| format!("url {s:?}: {e}"));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let floor = Arc::new(Floor {
        client: Client::builder(TokioExecutor::new()).build(connector),
        tasks_prefix: format!("{backend}/api/mission-control/tasks?limit=50&title="),
        messages: uri(format!("{backend}/api/mission-control/messages"))?,
        chat: uri(format!("{llm}/chat/completions"))?,
        llm_auth: HeaderValue::try_from(format!("Bearer {}", env("OPENAI_API_KEY", "")))
            .map_err(|e| format!("OPENAI_API_KEY: {e}"))?,
        backend_auth: HeaderValue::from_static(BACKEND_TOKEN),
        chat_body: body_file("WOMBAT_FLOOR_CHAT_BODY", false)?,
        stream_body: body_file("WOMBAT_FLOOR_STREAM_BODY", true)?,
        tasks: (env("WOMBAT_FLOOR_TASK_CACHE", "1") != "0").then(Mutex::default),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(serve(floor, addr))
}

async fn serve(floor: Arc<Floor>, addr: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding {addr}: {e}"))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors: try again rather than exit.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let floor = floor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let floor = floor.clone();
                async move { Ok::<_, Infallible>(route(floor, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(floor: Arc<Floor>, req: Request<Incoming>) -> Response<FloorBody> {
    let result = match (req.method(), req.uri().path()) {
        (&Method::POST, "/api/agents/send") => send(&floor, req).await,
        (&Method::POST, "/api/agents/stream") => stream(floor, req).await,
        (&Method::GET, "/health") => Ok(json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())),
        _ => Err(Failure(StatusCode::NOT_FOUND, "not found".into())),
    };
    result.unwrap_or_else(|Failure(status, message)| {
        let body = serde_json::to_vec(&ErrorBody {
            error: &message,
            code: if status == StatusCode::BAD_GATEWAY {
                "upstream_failed"
            } else {
                "bad_request"
            },
        })
        .unwrap_or_default();
        json(status, body)
    })
}

/// A failed request: the status and a message for the JSON error body.
struct Failure(StatusCode, String);

fn upstream(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::BAD_GATEWAY, format!("{what}: {e}"))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: &'static str,
}

#[derive(Deserialize)]
struct AgentRequest<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(borrow)]
    task_title: Cow<'a, str>,
}

#[derive(Deserialize)]
struct TaskPage<'a> {
    #[serde(borrow)]
    items: Vec<TaskRef<'a>>,
}

#[derive(Deserialize)]
struct TaskRef<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    title: Cow<'a, str>,
}

#[derive(Deserialize, Serialize, Default, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, alias = "delta")]
    message: Option<Content<'a>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Created<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

#[derive(Serialize)]
struct NewMessage<'a> {
    task_id: &'a str,
    content: &'a str,
    actor_type: &'static str,
    agent_role: &'static str,
    attachments: Attachment<'a>,
}

#[derive(Serialize)]
struct Attachment<'a> {
    model: &'static str,
    provider: &'static str,
    usage: &'a Usage,
    cost: Cost,
}

/// The daemon's cost shape, unpriced: the floor has no price table.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cost {
    model: &'static str,
    input_tokens: u64,
    output_tokens: u64,
    input_cost: f64,
    output_cost: f64,
    total_cost: f64,
    currency: &'static str,
    priced: bool,
}

impl Cost {
    fn of(u: &Usage) -> Self {
        Self {
            model: MODEL,
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            input_cost: 0.0,
            output_cost: 0.0,
            total_cost: 0.0,
            currency: "USD",
            priced: false,
        }
    }
}

#[derive(Serialize)]
struct SendResponse<'a> {
    status: &'static str,
    task_id: &'a str,
    response: &'a str,
    usage: &'a Usage,
    cost: Cost,
    model: &'static str,
    provider: &'static str,
    message_id: &'a str,
}

#[derive(Serialize)]
struct Done<'a> {
    r#type: &'static str,
    usage: &'a Usage,
    cost: Cost,
    model: &'static str,
    provider: &'static str,
    task_id: &'a str,
    message_id: &'a str,
    persisted: bool,
}

/// Reads a whole body.
async fn collect(body: Incoming) -> Result<Bytes, hyper::Error> {
    Ok(body.collect().await?.to_bytes())
}

fn upstream_request(
    method: Method,
    uri: Uri,
    auth: &HeaderValue,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.insert(AUTHORIZATION, auth.clone());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    req
}

/// Sends `req` and returns the response if it is a success.
async fn call(
    floor: &Floor,
    what: &str,
    req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, Failure> {
    let resp = floor
        .client
        .request(req)
        .await
        .map_err(|e| upstream(what, e))?;
    if !resp.status().is_success() {
        return Err(upstream(what, resp.status()));
    }
    Ok(resp)
}

async fn call_whole(
    floor: &Floor,
    what: &str,
    req: Request<Full<Bytes>>,
) -> Result<Bytes, Failure> {
    let resp = call(floor, what, req).await?;
    collect(resp.into_body())
        .await
        .map_err(|e| upstream(what, e))
}

/// Reads and parses the caller's request, then finds its task.
async fn resolve(floor: &Floor, req: Request<Incoming>) -> Result<String, Failure> {
    let body = collect(req.into_body())
        .await
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
    let parsed: AgentRequest<'_> = serde_json::from_slice(&body)
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    if parsed.message.is_empty() {
        return Err(Failure(StatusCode::BAD_REQUEST, "message is empty".into()));
    }
    // One allocation for the key. A user id or title containing NUL could
    // collide with another pair; the floor only serves the benchmark.
    let mut key = String::with_capacity(parsed.user_id.len() + 1 + parsed.task_title.len());
    key.push_str(&parsed.user_id);
    key.push('\0');
    key.push_str(&parsed.task_title);
    if let Some(cache) = &floor.tasks {
        let cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((id, _)) = cache
            .get(&key)
            .filter(|(_, at)| at.elapsed() < TASK_CACHE_TTL)
        {
            return Ok(id.clone());
        }
    }
    let mut url = floor.tasks_prefix.clone();
    url.extend(form_urlencoded::byte_serialize(
        parsed.task_title.as_bytes(),
    ));
    let uri = url
        .parse::<Uri>()
        .map_err(|e| Failure(StatusCode::BAD_REQUEST, format!("task_title: {e}")))?;
    let req = upstream_request(Method::GET, uri, &floor.backend_auth, Bytes::new());
    let page = call_whole(floor, "listing tasks", req).await?;
    let page: TaskPage<'_> =
        serde_json::from_slice(&page).map_err(|e| upstream("listing tasks", e))?;
    let task = page
        .items
        .iter()
        .find(|t| t.title == parsed.task_title)
        .ok_or_else(|| Failure(StatusCode::BAD_REQUEST, "no task with that title".into()))?;
    let id = task.id.clone().into_owned();
    if let Some(cache) = &floor.tasks {
        let mut cache = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= TASK_CACHE_CAP {
            cache.clear();
        }
        cache.insert(key, (id.clone(), Instant::now()));
    }
    Ok(id)
}

/// Posts the reply as a message; returns the message id.
async fn persist(
    floor: &Floor,
    task_id: &str,
    text: &str,
    usage: &Usage,
) -> Result<String, Failure> {
    let body = serde_json::to_vec(&NewMessage {
        task_id,
        content: text,
        actor_type: "agent",
        agent_role: "agent",
        attachments: Attachment {
            model: MODEL,
            provider: PROVIDER,
            usage,
            cost: Cost::of(usage),
        },
    })
    .map_err(|e| upstream("posting the message", e))?;
    let req = upstream_request(
        Method::POST,
        floor.messages.clone(),
        &floor.backend_auth,
        Bytes::from(body),
    );
    let created = call_whole(floor, "posting the message", req).await?;
    let created: Created<'_> =
        serde_json::from_slice(&created).map_err(|e| upstream("posting the message", e))?;
    Ok(created.id.into_owned())
}

async fn send(floor: &Floor, req: Request<Incoming>) -> Result<Response<FloorBody>, Failure> {
    let task_id = resolve(floor, req).await?;
    let chat = upstream_request(
        Method::POST,
        floor.chat.clone(),
        &floor.llm_auth,
        floor.chat_body.clone(),
    );
    let reply = call_whole(floor, "calling the LLM", chat).await?;
    let reply: Completion<'_> =
        serde_json::from_slice(&reply).map_err(|e| upstream("calling the LLM", e))?;
    let text = reply
        .choices
        .first()
        .and_then(|c| c.message.as_ref())
        .and_then(|m| m.content.as_deref())
        .unwrap_or_default();
    let usage = reply.usage.unwrap_or_default();
    let message_id = persist(floor, &task_id, text, &usage).await?;
    let body = serde_json::to_vec(&SendResponse {
        status: "ok",
        task_id: &task_id,
        response: text,
        usage: &usage,
        cost: Cost::of(&usage),
        model: MODEL,
        provider: PROVIDER,
        message_id: &message_id,
    })
    .map_err(|e| upstream("answering", e))?;
    Ok(json(StatusCode::OK, body))
}

async fn stream(floor: Arc<Floor>, req: Request<Incoming>) -> Result<Response<FloorBody>, Failure> {
    let task_id = resolve(&floor, req).await?;
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(async move {
        let last = match relay(&floor, &task_id, &tx).await {
            Ok(done) => frame("done", &done),
            Err(Failure(_, message)) => frame(
                "error",
                &ErrorBody {
                    error: &message,
                    code: "upstream_failed",
                },
            ),
        };
        let _ = tx.send(last).await;
    });
    let mut resp = Response::new(FloorBody::Channel(rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(resp)
}

/// The body of `done`, serialised here so `relay` returns an owned value.
struct DoneOwned {
    usage: Usage,
    task_id: String,
    message_id: String,
}

impl Serialize for DoneOwned {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Done {
            r#type: "done",
            usage: &self.usage,
            cost: Cost::of(&self.usage),
            model: MODEL,
            provider: PROVIDER,
            task_id: &self.task_id,
            message_id: &self.message_id,
            persisted: true,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    r#type: &'static str,
    data: &'a str,
}

/// Streams the completion to `tx` as `chunk` events and stores the reply.
async fn relay(
    floor: &Floor,
    task_id: &str,
    tx: &mpsc::Sender<Bytes>,
) -> Result<DoneOwned, Failure> {
    let gone = || Failure(StatusCode::BAD_GATEWAY, "client went away".into());
    tx.send(Bytes::from_static(
        b"event: start\ndata: {\"type\":\"start\"}\n\n",
    ))
    .await
    .map_err(|_| gone())?;
    let chat = upstream_request(
        Method::POST,
        floor.chat.clone(),
        &floor.llm_auth,
        floor.stream_body.clone(),
    );
    let mut body = call(floor, "calling the LLM", chat).await?.into_body();
    let mut buf = BytesMut::new();
    let mut text = String::new();
    let mut usage = Usage::default();
    let mut finished = false;
    while !finished {
        let Some(piece) = body.frame().await else {
            break;
        };
        let piece = piece.map_err(|e| upstream("reading the LLM stream", e))?;
        let Ok(data) = piece.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = find(&buf, b"\n\n") {
            let event = buf.split_to(end + 2);
            let Some(payload) = event[..end].strip_prefix(b"data: ") else {
                continue;
            };
            if payload == b"[DONE]" {
                finished = true;
                break;
            }
            let chunk: Completion<'_> = serde_json::from_slice(payload)
                .map_err(|e| upstream("reading the LLM stream", e))?;
            if let Some(u) = chunk.usage {
                usage = u;
            }
            let delta = chunk
                .choices
                .first()
                .and_then(|c| c.message.as_ref())
                .and_then(|m| m.content.as_deref());
            if let Some(delta) = delta.filter(|d| !d.is_empty()) {
                text.push_str(delta);
                let event = frame(
                    "chunk",
                    &Chunk {
                        r#type: "chunk",
                        data: delta,
                    },
                );
                tx.send(event).await.map_err(|_| gone())?;
            }
        }
    }
    if !finished {
        return Err(upstream("reading the LLM stream", "ended before [DONE]"));
    }
    let message_id = persist(floor, task_id, &text, &usage).await?;
    Ok(DoneOwned {
        usage,
        task_id: task_id.to_owned(),
        message_id,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `event: <name>\ndata: <json>\n\n`.
fn frame<T: Serialize>(event: &str, data: &T) -> Bytes {
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // Serialising these plain structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, data);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<FloorBody> {
    let mut resp = Response::new(FloorBody::Full(Some(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A response body: one buffer, or SSE frames from a channel.
enum FloorBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl Body for FloorBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FloorBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FloorBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, FloorBody::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            FloorBody::Full(b) => {
                hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            FloorBody::Channel(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// A chat body like the daemon's for the default workspace: a system prompt
/// of ~2.1 KB, the user message, the model and the output cap. Used when the
/// bench did not hand over what the daemon really sent.
fn default_chat_body(streaming: bool) -> Vec<u8> {
    let mut system = String::from(
        "You are the agent of this workspace. Answer the user's message helpfully and concisely. ",
    );
    while system.len() < 2_100 {
        system.push_str(
            "Follow the workspace's instructions, keep to the task, and say when you are unsure. ",
        );
    }
    let mut body = serde_json::json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "Hello from the benchmark"},
        ],
        "max_tokens": 4096,
    });
    if streaming {
        body["stream"] = serde_json::json!(true);
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bodies_are_the_daemons_size_and_flagged() {
        let plain = default_chat_body(false);
        let streaming = default_chat_body(true);
        assert!((2_100..2_600).contains(&plain.len()), "{}", plain.len());
        let v: serde_json::Value = serde_json::from_slice(&streaming).expect("json");
        assert_eq!(v["stream"], true);
        assert!(!plain.windows(13).any(|w| w == br#""stream":true"#));
    }

    #[test]
    fn frames_are_sse_events() {
        let f = frame(
            "chunk",
            &Chunk {
                r#type: "chunk",
                data: "a\"b",
            },
        );
        assert_eq!(
            &f[..],
            b"event: chunk\ndata: {\"type\":\"chunk\",\"data\":\"a\\\"b\"}\n\n"
        );
    }

    #[test]
    fn completion_chunks_parse_as_message_or_delta() {
        let whole: Completion<'_> = serde_json::from_slice(
            br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        )
        .expect("completion");
        assert_eq!(
            whole.choices[0]
                .message
                .as_ref()
                .and_then(|m| m.content.as_deref()),
            Some("hi")
        );
        assert_eq!(whole.usage.map(|u| u.total_tokens), Some(3));
        let delta: Completion<'_> =
            serde_json::from_slice(br#"{"choices":[{"delta":{"content":"x\ny"}}],"usage":null}"#)
                .expect("chunk");
        assert_eq!(
            delta.choices[0]
                .message
                .as_ref()
                .and_then(|m| m.content.as_deref()),
            Some("x\ny")
        );
        let tail: Completion<'_> = serde_json::from_slice(
            br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        )
        .expect("tail");
        assert!(tail.choices.is_empty());
    }
}
