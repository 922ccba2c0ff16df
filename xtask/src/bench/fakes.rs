//! The two upstreams of the daemon, faked in-process for the benchmark: an
//! OpenAI-format LLM (`POST /v1/chat/completions`, plain and streaming) and
//! a control-plane backend (`GET`/`POST /api/mission-control/tasks`,
//! `POST messages`, `POST documents`). Both answer immediately with fixed,
//! valid JSON on keep-alive HTTP/1.1 with `TCP_NODELAY`; neither checks
//! JWTs or API keys. The LLM can be told to hold streams open after the
//! first chunk until released (the open-streams memory test).
//!
//! They also keep a copy of the last request body the daemon sent to each
//! endpoint, so the "fakes alone" runs can replay exactly those requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, mpsc};

/// The task every benchmark request names (`task_title`).
pub(crate) const TASK_TITLE: &str = "Bench";
/// Content chunks in one streamed reply.
pub(crate) const STREAM_CHUNKS: usize = 50;
/// Listen backlog: thousands of connections may arrive at once.
const BACKLOG: u32 = 4096;

/// Request bodies the daemon sent last, replayed by the "fakes alone" runs.
#[derive(Debug, Default, Clone)]
pub(crate) struct Captured {
    pub(crate) chat: Option<Bytes>,
    pub(crate) stream: Option<Bytes>,
    pub(crate) message: Option<Bytes>,
}

/// Shared state of both fakes.
pub(crate) struct FakeState {
    /// When set, streamed replies stop after the first chunk until a permit
    /// of `release` is available.
    pub(crate) hold: AtomicBool,
    pub(crate) release: Semaphore,
    /// Streams currently held open.
    pub(crate) held: AtomicUsize,
    pub(crate) captured: Mutex<Captured>,
    /// Requests served: list tasks, chat completions, post message (to
    /// check that the daemon and the floor do the same upstream work).
    calls: [AtomicU64; 3],
    replies: Replies,
}

impl FakeState {
    /// A copy of the captured request bodies.
    pub(crate) fn captured(&self) -> Captured {
        self.captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Requests served so far: `[list tasks, chat completions, messages]`.
    pub(crate) fn calls(&self) -> [u64; 3] {
        self.calls.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    fn count(&self, which: usize) {
        self.calls[which].fetch_add(1, Ordering::Relaxed);
    }

    fn capture(&self, f: impl FnOnce(&mut Captured)) {
        f(&mut self
            .captured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// The fixed answers, serialised once.
struct Replies {
    chat: Bytes,
    stream_first: Bytes,
    stream_rest: Bytes,
    stream_all: Bytes,
    task_page: Bytes,
    task: Bytes,
    message: Bytes,
    document: Bytes,
    health: Bytes,
    not_found: Bytes,
}

impl Replies {
    fn new() -> Self {
        let usage = serde_json::json!({"prompt_tokens": 1200, "completion_tokens": STREAM_CHUNKS, "total_tokens": 1200 + STREAM_CHUNKS});
        let chat = serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the fake LLM."}, "finish_reason": "stop"}],
            "usage": usage,
        });
        let chunk = |i: usize| {
            let c = serde_json::json!({
                "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": format!("tok{i} ")}, "finish_reason": null}],
                "usage": null,
            });
            format!("data: {c}\n\n")
        };
        let mut rest = String::new();
        for i in 1..STREAM_CHUNKS {
            rest.push_str(&chunk(i));
        }
        let finish = serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": null});
        let tail = serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini",
            "choices": [], "usage": usage});
        rest.push_str(&format!(
            "data: {finish}\n\ndata: {tail}\n\ndata: [DONE]\n\n"
        ));
        let first = chunk(0);
        let task = serde_json::json!({"id": "task-bench", "title": TASK_TITLE, "status": "in_progress", "description": "Agent thread: Bench"});
        Self {
            chat: Bytes::from(chat.to_string()),
            stream_all: Bytes::from(format!("{first}{rest}")),
            stream_first: Bytes::from(first),
            stream_rest: Bytes::from(rest),
            task_page: Bytes::from(
                serde_json::json!({"items": [task], "next_cursor": null}).to_string(),
            ),
            task: Bytes::from(task.to_string()),
            message: Bytes::from_static(
                br#"{"id":"msg-bench","task_id":"task-bench","content":"Hello from the fake LLM."}"#,
            ),
            document: Bytes::from_static(
                br#"{"id":"doc-bench","title":"Plan","doc_type":"plan","task_id":"task-bench"}"#,
            ),
            health: Bytes::from_static(br#"{"status":"ok"}"#),
            not_found: Bytes::from_static(br#"{"error":"not found","code":"not_found"}"#),
        }
    }
}

/// Running fakes; they stop with the runtime.
pub(crate) struct Fakes {
    pub(crate) llm: SocketAddr,
    pub(crate) backend: SocketAddr,
    pub(crate) state: Arc<FakeState>,
}

impl Fakes {
    /// Binds both fakes on loopback ports and starts serving.
    pub(crate) async fn start() -> Result<Self> {
        let state = Arc::new(FakeState {
            hold: AtomicBool::new(false),
            release: Semaphore::new(0),
            held: AtomicUsize::new(0),
            captured: Mutex::new(Captured::default()),
            calls: Default::default(),
            replies: Replies::new(),
        });
        let llm = serve(state.clone(), Upstream::Llm).await?;
        let backend = serve(state.clone(), Upstream::Backend).await?;
        Ok(Self {
            llm,
            backend,
            state,
        })
    }
}

#[derive(Clone, Copy)]
enum Upstream {
    Llm,
    Backend,
}

async fn serve(state: Arc<FakeState>, which: Upstream) -> Result<SocketAddr> {
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(BACKLOG).context("listening")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        Ok::<_, Infallible>(match which {
                            Upstream::Llm => llm(&state, req).await,
                            Upstream::Backend => backend(&state, req).await,
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A response body: a buffer, or chunks from a channel (held streams).
pub(crate) enum FakeBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FakeBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Channel(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, FakeBody::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            FakeBody::Full(b) => {
                hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            FakeBody::Channel(_) => hyper::body::SizeHint::default(),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: FakeBody) -> Response<FakeBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(status: StatusCode, body: &Bytes) -> Response<FakeBody> {
    reply(
        status,
        "application/json",
        FakeBody::Full(Some(body.clone())),
    )
}

/// Reads the whole request body (an error counts as empty).
async fn body_of(req: Request<Incoming>) -> Bytes {
    match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn llm(state: &Arc<FakeState>, req: Request<Incoming>) -> Response<FakeBody> {
    let r = &state.replies;
    if req.method() != Method::POST || req.uri().path() != "/v1/chat/completions" {
        return json(StatusCode::NOT_FOUND, &r.not_found);
    }
    let body = body_of(req).await;
    state.count(1);
    let streaming = contains(&body, br#""stream":true"#);
    if !streaming {
        state.capture(|c| c.chat = Some(body));
        return json(StatusCode::OK, &r.chat);
    }
    state.capture(|c| c.stream = Some(body));
    if !state.hold.load(Ordering::Acquire) {
        return reply(
            StatusCode::OK,
            "text/event-stream",
            FakeBody::Full(Some(r.stream_all.clone())),
        );
    }
    let (tx, rx) = mpsc::channel(2);
    let first = r.stream_first.clone();
    let rest = r.stream_rest.clone();
    let state = state.clone();
    tokio::spawn(async move {
        if tx.send(first).await.is_err() {
            return;
        }
        state.held.fetch_add(1, Ordering::AcqRel);
        if let Ok(permit) = state.release.acquire().await {
            permit.forget();
        }
        state.held.fetch_sub(1, Ordering::AcqRel);
        let _ = tx.send(rest).await;
    });
    reply(StatusCode::OK, "text/event-stream", FakeBody::Channel(rx))
}

async fn backend(state: &Arc<FakeState>, req: Request<Incoming>) -> Response<FakeBody> {
    let r = &state.replies;
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = body_of(req).await;
    match (method, path.as_str()) {
        (Method::GET, "/api/mission-control/tasks") => {
            state.count(0);
            json(StatusCode::OK, &r.task_page)
        }
        (Method::POST, "/api/mission-control/tasks") => json(StatusCode::OK, &r.task),
        (Method::POST, "/api/mission-control/messages") => {
            state.count(2);
            state.capture(|c| c.message = Some(body));
            json(StatusCode::OK, &r.message)
        }
        (Method::POST, "/api/mission-control/documents") => json(StatusCode::OK, &r.document),
        (Method::GET, "/health") => json(StatusCode::OK, &r.health),
        _ => json(StatusCode::NOT_FOUND, &r.not_found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_reply_is_openai_sse_with_usage_and_done() {
        let r = Replies::new();
        let text = String::from_utf8(r.stream_all.to_vec()).expect("utf-8");
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("data line"))
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("json chunk"))
            .collect();
        let contents = chunks
            .iter()
            .filter(|c| c["choices"][0]["delta"]["content"].is_string())
            .count();
        assert_eq!(contents, STREAM_CHUNKS);
        assert_eq!(
            chunks.last().map(|c| c["usage"]["total_tokens"].as_u64()),
            Some(Some(1250))
        );
        assert_eq!(
            r.stream_all.len(),
            r.stream_first.len() + r.stream_rest.len()
        );
    }

    #[test]
    fn backend_replies_fit_the_contract() {
        let r = Replies::new();
        let page: serde_json::Value = serde_json::from_slice(&r.task_page).expect("json");
        assert_eq!(page["items"][0]["title"], TASK_TITLE);
        for body in [&r.task, &r.message, &r.document, &r.chat] {
            let v: serde_json::Value = serde_json::from_slice(body).expect("json");
            assert!(v.is_object());
        }
        assert!(contains(br#"{"a":1,"stream":true}"#, br#""stream":true"#));
        assert!(!contains(br#"{"stream":false}"#, br#""stream":true"#));
    }
}
