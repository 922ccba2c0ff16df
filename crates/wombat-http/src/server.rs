//! The accept loop: hyper-util's auto builder (HTTP/1.1 and h2c), a task per
//! connection, a deadline for every phase of a connection, a cap on open
//! connections, and graceful shutdown with a drain deadline. It knows
//! nothing about routes; it calls one handler.
//!
//! Deadlines, phase by phase (every one configurable, see CONFIGURATION.md):
//! - first request: a connection that has not delivered complete request
//!   headers within `header_read_timeout` of being accepted is closed. This
//!   covers a socket that sends nothing, part of the h2 preface, or h2
//!   SETTINGS and then nothing — the phase before hyper-util has even picked
//!   a protocol, which hyper's own header timeout does not cover;
//! - headers of later HTTP/1 requests: hyper's `header_read_timeout`;
//! - request body: the whole body must arrive within `body_timeout` of the
//!   request's start ([`RequestBody`]; the handler answers 408);
//! - idle: a connection with no request in flight (handler running or
//!   response body being sent) for `keep_alive_timeout` is closed, HTTP/1
//!   keep-alive and HTTP/2 alike;
//! - HTTP/2 liveness: a PING every [`H2_PING_INTERVAL`]; a peer that does not
//!   answer within [`H2_PING_TIMEOUT`] is dropped (dead peers under a long
//!   stream);
//! - the time a request may take once its body is read is the handlers'
//!   business (`WOMBAT_REQUEST_TIMEOUT_SECS`).
//!
//! All of it costs one shared state and one timer per connection; a request
//! adds two atomic updates and no allocation or timer unless its body stalls.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::request::Body;

/// Interval of the HTTP/2 keep-alive PING.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long an HTTP/2 peer has to answer a PING before it is dropped.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// At most one "connection limit reached" log line per this interval.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Connection-level limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// How long a new connection may take to deliver its first complete
    /// request headers (and each later HTTP/1 request its headers).
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive in full.
    pub body_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub keep_alive_timeout: Duration,
    /// Open connections at most; further clients wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests and streams.
    pub drain_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_connections: 1024,
            drain_deadline: Duration::from_secs(30),
        }
    }
}

/// What a connection's watchdog needs to know: requests in flight and
/// since when the connection has been idle.
struct ConnState {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when a request last ended;
    /// `u64::MAX` until the first request has ended.
    idle_since_ms: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Resolves when the connection has been idle past its deadline: the
    /// header timeout before the first request, the keep-alive timeout
    /// after the last one.
    async fn expired(&self, first_request: Duration, idle: Duration) {
        loop {
            let since = self.idle_since_ms.load(Ordering::Acquire);
            let deadline = if since == u64::MAX {
                self.opened + first_request
            } else {
                self.opened + Duration::from_millis(since) + idle
            };
            tokio::time::sleep_until(deadline.into()).await;
            if self.in_flight.load(Ordering::Acquire) == 0
                && self.idle_since_ms.load(Ordering::Acquire) == since
            {
                return;
            }
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: a request's own deadlines bound it; look again
                // one idle period later.
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// Counts one request as in flight until dropped (with its response body).
pub(crate) struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The end time is stored before the count drops, so a watchdog that
        // sees no request in flight also sees a fresh idle start (and waits
        // a full idle period) rather than a stale one.
        let ms = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.idle_since_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it
/// has been sent (or dropped), so a long SSE stream is never "idle".
pub(crate) struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The connection failed or the client sent a malformed body.
    #[error(transparent)]
    Read(#[from] hyper::Error),
    /// The body did not arrive in full within the body timeout (the value).
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
}

/// A request body with a whole-body deadline. The timer is only made when
/// the body actually stalls (a poll that finds no data), so a body that
/// arrives with its headers costs no timer and no allocation. `Unpin`, so
/// that handlers can read it through the `&mut` of a borrowed request.
pub(crate) struct RequestBody {
    inner: Incoming,
    /// When the whole body must have arrived (from the request's start).
    due: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
}

impl RequestBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        // As `tokio::time::sleep` does: a limit too far to add is ~30 years.
        let due = now
            .checked_add(limit)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        Self {
            inner,
            due,
            timer: None,
            limit,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(BodyError::Read))),
            Poll::Pending => {
                let due = this.due;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TimedOut(this.limit)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves connections from `listener` with `handler` until `shutdown`
/// resolves, then stops accepting and waits up to the drain deadline for
/// open connections (including SSE streams) to finish. When the deadline
/// passes, `cut` fires (open SSE streams then end with an `error` event)
/// and connections get a short grace to flush it before they are dropped.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    limits: ServerLimits,
    handler: F,
    shutdown: impl Future<Output = ()>,
    cut: &tokio::sync::watch::Sender<bool>,
) where
    F: Fn(http::Request<RequestBody>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut cap_logged: Option<Instant> = None;
    let (mut accept_logged, mut accept_failures): (Option<Instant>, u64) = (None, 0);
    tokio::pin!(shutdown);

    loop {
        // A slot first: at the cap, new clients wait in the kernel's backlog
        // instead of being accepted into a process that has no room.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if cap_logged.is_none_or(|t| t.elapsed() >= CAP_LOG_INTERVAL) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached (WOMBAT_MAX_CONNECTIONS): new connections wait until one closes"
                    );
                    cap_logged = Some(Instant::now());
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of
                    // spinning or giving up on the listener, and say so
                    // once a minute rather than 20 times a second.
                    accept_failures += 1;
                    if accept_logged.is_none_or(|t| t.elapsed() >= CAP_LOG_INTERVAL) {
                        tracing::warn!(
                            error = %e,
                            failures = accept_failures,
                            "accept failed (out of file descriptors? keep WOMBAT_MAX_CONNECTIONS below the limit)"
                        );
                        accept_logged = Some(Instant::now());
                        accept_failures = 0;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let state = Arc::new(ConnState::new());
        let handler = handler.clone();
        let body_timeout = limits.body_timeout;
        let service_state = Arc::clone(&state);
        let service = service_fn(move |req: http::Request<Incoming>| {
            let in_flight = InFlight::new(&service_state);
            // Boxed: the spawned connection task then holds a pointer, not
            // the whole handler future, which keeps thousands of idle
            // HTTP/2 streams small (about 37 KB → 29 KB each, measured).
            let fut = Box::pin(handler(
                req.map(|b| RequestBody::new(b, body_timeout)),
                peer,
            ));
            async move {
                let resp = fut.await;
                Ok::<_, Infallible>(resp.map(|inner| TrackedBody {
                    inner,
                    _in_flight: in_flight,
                }))
            }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let (first, idle) = (limits.header_read_timeout, limits.keep_alive_timeout);
        tokio::spawn(async move {
            tokio::select! {
                result = conn => if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                },
                () = state.expired(first, idle) => {
                    tracing::debug!(%peer, "closing idle connection");
                }
            }
            drop(slot);
        });
    }

    drop(listener);
    tracing::info!(
        deadline_secs = limits.drain_deadline.as_secs(),
        "draining connections"
    );
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => tracing::info!("all connections drained"),
        () = tokio::time::sleep(limits.drain_deadline) => {
            tracing::warn!("drain deadline passed; ending open streams and closing remaining connections");
            // Streams still open end with an `error` event rather than a
            // bare close; give them a moment to flush it.
            let _ = cut.send(true);
            tokio::select! {
                () = &mut drained => {}
                () = tokio::time::sleep(STREAM_CUT_GRACE) => {}
            }
        }
    }
}

/// How long cut streams get to flush their final `error` event.
const STREAM_CUT_GRACE: Duration = Duration::from_secs(1);
