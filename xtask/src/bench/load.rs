//! The load generator: closed-loop workers, each with its own keep-alive
//! HTTP/1.1 connection(s) on a small hyper client, that repeat one scenario
//! until a deadline; and the open-streams test, which opens thousands of SSE
//! streams multiplexed over HTTP/2 (h2c) connections and holds them.
//!
//! It measures what a client sees (latency, time to first chunk, chunks);
//! the caller measures the server process (CPU, memory) around a run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use super::stats::PatternCounter;

/// What one closed-loop iteration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// `POST /api/agents/send` on the daemon.
    Send,
    /// The calls the daemon makes per send, made directly on the fakes:
    /// list tasks, LLM completion, post message.
    FakeSend,
    /// `POST /api/agents/stream` on the daemon, read to the end.
    Stream,
    /// The daemon's calls per stream, made directly: list tasks, streamed
    /// LLM completion read to the end, post message.
    FakeStream,
    /// `GET /health` on the daemon.
    Health,
}

/// Where requests go and what they carry.
pub(crate) struct Targets {
    pub(crate) server: SocketAddr,
    pub(crate) llm: SocketAddr,
    pub(crate) backend: SocketAddr,
    /// Body of `send`/`stream` requests to the daemon.
    pub(crate) agent_body: Bytes,
    /// Bodies the daemon sent upstream, replayed by the fake scenarios.
    pub(crate) chat_body: Bytes,
    pub(crate) stream_body: Bytes,
    pub(crate) message_body: Bytes,
}

/// What a run observed from the client side.
#[derive(Debug, Default)]
pub(crate) struct RunResult {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Per successful iteration, nanoseconds.
    pub(crate) latencies: Vec<u64>,
    /// Time to first content chunk (stream scenarios), nanoseconds.
    pub(crate) ttfc: Vec<u64>,
    pub(crate) chunks: u64,
    pub(crate) elapsed: Duration,
}

type H1 = http1::SendRequest<Full<Bytes>>;

/// Opens one keep-alive HTTP/1.1 connection with `TCP_NODELAY`.
pub(crate) async fn connect_h1(addr: SocketAddr) -> Result<H1> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connect_h2(addr: SocketAddr) -> Result<http2::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(
    method: Method,
    addr: SocketAddr,
    path: &str,
    body: Option<&Bytes>,
) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body.cloned().unwrap_or_default()));
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap_or_default();
    let host = addr.to_string();
    if let Ok(v) = host.parse() {
        req.headers_mut().insert(HOST, v);
    }
    if body.is_some() {
        req.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    req
}

/// What reading one response saw.
#[derive(Debug, Default)]
struct Read {
    /// Matches of the chunk pattern.
    chunks: u64,
    /// Matches of the end pattern (`event: done`).
    ends: u64,
    /// Matches of `event: error`.
    errors: u64,
    first_chunk: Option<Instant>,
}

/// Reads a whole response body, counting `chunk` (and `end`) patterns.
async fn read_body(
    resp: Response<Incoming>,
    chunk: Option<&'static [u8]>,
    end: Option<&'static [u8]>,
) -> Result<Read> {
    let status = resp.status();
    let mut body = resp.into_body();
    let mut chunks = chunk.map(PatternCounter::new);
    let mut ends = end.map(PatternCounter::new);
    let mut errors = PatternCounter::new(b"event: error\n");
    let mut read = Read::default();
    let mut error_text = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the response body")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !status.is_success() && error_text.len() < 300 {
            error_text.extend_from_slice(&data);
        }
        if let Some(c) = &mut chunks {
            let n = c.feed(&data) as u64;
            if n > 0 && read.first_chunk.is_none() {
                read.first_chunk = Some(Instant::now());
            }
            read.chunks += n;
        }
        if let Some(e) = &mut ends {
            read.ends += e.feed(&data) as u64;
        }
        read.errors += errors.feed(&data) as u64;
    }
    if !status.is_success() {
        bail!("status {status}: {}", String::from_utf8_lossy(&error_text));
    }
    Ok(read)
}

async fn exchange(
    conn: &mut H1,
    req: Request<Full<Bytes>>,
    chunk: Option<&'static [u8]>,
    end: Option<&'static [u8]>,
) -> Result<Read> {
    conn.ready().await.context("connection closed")?;
    let resp = conn
        .send_request(req)
        .await
        .context("sending the request")?;
    read_body(resp, chunk, end).await
}

const SSE_CHUNK: &[u8] = b"event: chunk\n";
const SSE_DONE: &[u8] = b"event: done\n";
const OPENAI_CONTENT: &[u8] = b"\"content\":\"";
const OPENAI_DONE: &[u8] = b"data: [DONE]";

/// One measured iteration: latency, time to first chunk, chunks.
struct Sample {
    latency: Duration,
    ttfc: Option<Duration>,
    chunks: u64,
}

/// A worker's connections.
enum Conns {
    Server(H1),
    Fakes { backend: H1, llm: H1 },
}

async fn iteration(s: Scenario, t: &Targets, conns: &mut Conns) -> Result<Sample> {
    let start = Instant::now();
    let tasks_path = "/api/mission-control/tasks?limit=50";
    let (read, ttfc_from) = match (s, conns) {
        (Scenario::Send, Conns::Server(c)) => {
            let req = request(
                Method::POST,
                t.server,
                "/api/agents/send",
                Some(&t.agent_body),
            );
            (exchange(c, req, None, None).await?, None)
        }
        (Scenario::Health, Conns::Server(c)) => {
            let req = request(Method::GET, t.server, "/health", None);
            (exchange(c, req, None, None).await?, None)
        }
        (Scenario::Stream, Conns::Server(c)) => {
            let req = request(
                Method::POST,
                t.server,
                "/api/agents/stream",
                Some(&t.agent_body),
            );
            let read = exchange(c, req, Some(SSE_CHUNK), Some(SSE_DONE)).await?;
            if read.errors > 0 || read.ends != 1 {
                bail!(
                    "stream ended without a single done event ({} error events)",
                    read.errors
                );
            }
            (read, Some(start))
        }
        (Scenario::FakeSend, Conns::Fakes { backend, llm }) => {
            exchange(
                backend,
                request(Method::GET, t.backend, tasks_path, None),
                None,
                None,
            )
            .await?;
            let chat = request(
                Method::POST,
                t.llm,
                "/v1/chat/completions",
                Some(&t.chat_body),
            );
            exchange(llm, chat, None, None).await?;
            let msg = request(
                Method::POST,
                t.backend,
                "/api/mission-control/messages",
                Some(&t.message_body),
            );
            (exchange(backend, msg, None, None).await?, None)
        }
        (Scenario::FakeStream, Conns::Fakes { backend, llm }) => {
            exchange(
                backend,
                request(Method::GET, t.backend, tasks_path, None),
                None,
                None,
            )
            .await?;
            let chat = request(
                Method::POST,
                t.llm,
                "/v1/chat/completions",
                Some(&t.stream_body),
            );
            let read = exchange(llm, chat, Some(OPENAI_CONTENT), Some(OPENAI_DONE)).await?;
            if read.ends != 1 {
                bail!("fake stream ended without [DONE]");
            }
            let msg = request(
                Method::POST,
                t.backend,
                "/api/mission-control/messages",
                Some(&t.message_body),
            );
            exchange(backend, msg, None, None).await?;
            (read, Some(start))
        }
        (s, _) => bail!("scenario {s:?} got the wrong connections"),
    };
    Ok(Sample {
        latency: start.elapsed(),
        ttfc: ttfc_from.and_then(|from| read.first_chunk.map(|at| at - from)),
        chunks: read.chunks,
    })
}

async fn connect_for(s: Scenario, t: &Targets) -> Result<Conns> {
    Ok(match s {
        Scenario::Send | Scenario::Stream | Scenario::Health => {
            Conns::Server(connect_h1(t.server).await?)
        }
        Scenario::FakeSend | Scenario::FakeStream => Conns::Fakes {
            backend: connect_h1(t.backend).await?,
            llm: connect_h1(t.llm).await?,
        },
    })
}

/// Workers connected and waiting for the start signal.
pub(crate) struct Ready {
    go: watch::Sender<Option<(Instant, Instant)>>,
    workers: Vec<JoinHandle<RunResult>>,
}

/// Spawns `concurrency` workers for `scenario`; returns once every one of
/// them has connected, so connection setup is outside the measured window.
pub(crate) async fn prepare(
    scenario: Scenario,
    targets: Arc<Targets>,
    concurrency: usize,
) -> Result<Ready> {
    let (go, go_rx) = watch::channel(None::<(Instant, Instant)>);
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<()>>(concurrency.max(1));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let targets = targets.clone();
        let mut go_rx = go_rx.clone();
        let ready_tx = ready_tx.clone();
        workers.push(tokio::spawn(async move {
            let mut out = RunResult::default();
            let mut conns = match connect_for(scenario, &targets).await {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(())).await;
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e)).await;
                    return out;
                }
            };
            drop(ready_tx);
            let go = match go_rx.wait_for(Option::is_some).await {
                Ok(signal) => *signal,
                Err(_) => None,
            };
            let Some((start, deadline)) = go else {
                return out;
            };
            while Instant::now() < deadline {
                match iteration(scenario, &targets, &mut conns).await {
                    Ok(s) => {
                        out.ok += 1;
                        out.latencies.push(s.latency.as_nanos() as u64);
                        if let Some(t) = s.ttfc {
                            out.ttfc.push(t.as_nanos() as u64);
                        }
                        out.chunks += s.chunks;
                    }
                    Err(e) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(format!("{e:#}"));
                        }
                        // The connection may be unusable: start a new one.
                        match connect_for(scenario, &targets).await {
                            Ok(c) => conns = c,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            out.elapsed = start.elapsed();
            out
        }));
    }
    drop(ready_tx);
    for _ in 0..concurrency {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e.context(format!("connecting {scenario:?} workers"))),
            None => bail!("a {scenario:?} worker stopped before connecting"),
        }
    }
    Ok(Ready { go, workers })
}

impl Ready {
    /// Starts the workers, lets them run for `duration` (each finishes the
    /// iteration in flight), and merges their results.
    pub(crate) async fn run(self, duration: Duration) -> RunResult {
        let start = Instant::now();
        let _ = self.go.send(Some((start, start + duration)));
        let mut total = RunResult::default();
        for w in self.workers {
            let Ok(r) = w.await else {
                total.errors += 1;
                continue;
            };
            total.ok += r.ok;
            total.errors += r.errors;
            if total.first_error.is_none() {
                total.first_error = r.first_error;
            }
            total.latencies.extend(r.latencies);
            total.ttfc.extend(r.ttfc);
            total.chunks += r.chunks;
            total.elapsed = total.elapsed.max(r.elapsed);
        }
        total
    }
}

/// Streams opened by [`open_streams`], each held by the fake LLM.
pub(crate) struct OpenStreams {
    /// Streams that have delivered their first chunk.
    pub(crate) opened: Arc<AtomicUsize>,
    /// Streams that failed before or after opening.
    pub(crate) failed: Arc<AtomicUsize>,
    pub(crate) first_error: Arc<std::sync::Mutex<Option<String>>>,
    tasks: Vec<JoinHandle<bool>>,
}

/// Streams per HTTP/2 connection (hyper's server allows 200).
pub(crate) const STREAMS_PER_CONNECTION: usize = 100;
/// Streams being opened at once (connection bursts beyond the listen
/// backlogs only cause SYN retransmits and noise).
const OPENING_AT_ONCE: usize = 256;

/// Opens `n` streams to the daemon over ⌈n/100⌉ h2c connections and keeps
/// reading each until it ends.
pub(crate) async fn open_streams(server: SocketAddr, body: Bytes, n: usize) -> Result<OpenStreams> {
    let conns = n.div_ceil(STREAMS_PER_CONNECTION);
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(
            connect_h2(server)
                .await
                .context("opening an h2c connection to the daemon")?,
        );
    }
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let uri: hyper::Uri = format!("http://{server}/api/agents/stream").parse()?;
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let mut sender = senders[i / STREAMS_PER_CONNECTION].clone();
        let (opened, failed, first_error, gate) = (
            opened.clone(),
            failed.clone(),
            first_error.clone(),
            gate.clone(),
        );
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        tasks.push(tokio::spawn(async move {
            let result: Result<bool> = async {
                let permit = gate.acquire().await?;
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                if !resp.status().is_success() {
                    bail!("status {}", resp.status());
                }
                let mut body = resp.into_body();
                let mut chunk = PatternCounter::new(SSE_CHUNK);
                let mut done = PatternCounter::new(SSE_DONE);
                let mut seen_chunk = false;
                let mut permit = Some(permit);
                let mut ends = 0;
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame?.into_data() else {
                        continue;
                    };
                    if !seen_chunk && chunk.feed(&data) > 0 {
                        seen_chunk = true;
                        opened.fetch_add(1, Ordering::AcqRel);
                        permit = None;
                    }
                    ends += done.feed(&data);
                }
                drop(permit);
                if !seen_chunk {
                    return Err(anyhow!("stream ended before its first chunk"));
                }
                Ok(ends == 1)
            }
            .await;
            match result {
                Ok(done) => done,
                Err(e) => {
                    failed.fetch_add(1, Ordering::AcqRel);
                    let mut slot = first_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    slot.get_or_insert_with(|| format!("{e:#}"));
                    false
                }
            }
        }));
    }
    Ok(OpenStreams {
        opened,
        failed,
        first_error,
        tasks,
    })
}

impl OpenStreams {
    /// Waits (at most `timeout`) for every stream to end; returns how many
    /// ended with their `done` event.
    pub(crate) async fn finish(self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut done = 0;
        let mut tasks = self.tasks.into_iter();
        for t in tasks.by_ref() {
            let abort = t.abort_handle();
            match tokio::time::timeout_at(deadline, t).await {
                Ok(Ok(true)) => done += 1,
                Ok(_) => {}
                Err(_) => {
                    abort.abort();
                    break;
                }
            }
        }
        // Past the deadline: stop the rest rather than leave them running.
        for t in tasks {
            t.abort();
        }
        done
    }
}
