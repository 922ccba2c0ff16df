//! The listener: hyper 1.x with hyper-util's auto (HTTP/1 + HTTP/2)
//! builder, a task per connection and graceful shutdown with a drain
//! deadline. Request handling itself is in `api`.
//!
//! Every phase of a connection has a deadline (the same policy as the
//! daemon's accept loop in `wombat-http`): a new connection must deliver
//! its first request headers within `header_read_timeout` (this covers
//! silence and a partial h2 preface, before hyper-util has picked a
//! protocol); a request (body included) must be handled within
//! `request_timeout` (a trickled body gets 408); a connection with no request
//! in flight for `keep_alive_timeout` is closed; HTTP/2 peers are pinged.
//! At most `max_connections` are open; more clients wait in the backlog.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::api::{self, State};
use crate::config::{ConnectionLimits, McLiteConfig};
use crate::store::Store;

/// The reference backend. Start it with [`McLite::start`].
#[derive(Debug)]
pub struct McLite;

/// A running server. Dropping it also stops the server (without waiting);
/// [`RunningMcLite::shutdown`] stops it and waits for in-flight requests.
#[derive(Debug)]
pub struct RunningMcLite {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl McLite {
    /// Binds `bind` (port 0 picks a free port), opens the database and
    /// serves until shut down. The port is bound first, so a taken port
    /// fails before anything (the database directory) is created.
    pub async fn start(config: McLiteConfig, bind: SocketAddr) -> crate::Result<RunningMcLite> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| crate::Error::Bind { addr: bind, source })?;
        let (db, retention) = (config.db.clone(), config.idempotency_retention);
        let store = tokio::task::spawn_blocking(move || Store::open(&db, retention))
            .await
            .map_err(|e| crate::Error::Join(e.to_string()))??;
        let internal_token = config
            .internal_token
            .filter(|t| !t.is_empty())
            .map(String::into_bytes);
        let state = Arc::new(State {
            store,
            jwt: config.jwt,
            internal_token,
            max_body_bytes: config.max_body_bytes,
            mcp: crate::mcp::McpEndpoint::new(),
        });
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            state,
            stopped,
            config.limits,
            config.drain_timeout,
        ));
        tracing::info!(%addr, "mc-lite listening");
        Ok(RunningMcLite {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

impl RunningMcLite {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, waits for in-flight requests (up to the drain
    /// timeout) and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serves until the server task ends (it ends only on shutdown).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningMcLite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Requests in flight on one connection and since when it has been idle.
struct ConnState {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended; `u64::MAX`
    /// until the first one has ended.
    idle_since_ms: AtomicU64,
}

impl ConnState {
    /// Resolves once the connection has been idle past its deadline.
    async fn expired(&self, first_request: Duration, idle: Duration) {
        loop {
            let since = self.idle_since_ms.load(Ordering::Acquire);
            let deadline = if since == u64::MAX {
                self.opened + first_request
            } else {
                self.opened + Duration::from_millis(since) + idle
            };
            tokio::time::sleep_until(deadline.into()).await;
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            if !busy && self.idle_since_ms.load(Ordering::Acquire) == since {
                return;
            }
            if busy {
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// Counts a request as in flight until dropped.
struct InFlight(Arc<ConnState>);

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

/// 408 for a request that did not finish within the request timeout
/// (in practice: a body that stalls or trickles).
fn timed_out() -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(Bytes::from_static(
        br#"{"error":"request timed out","code":"request_timeout"}"#,
    )));
    *resp.status_mut() = http::StatusCode::REQUEST_TIMEOUT;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
    limits: ConnectionLimits,
    drain_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut cap_logged: Option<Instant> = None;
    let mut accept_logged: Option<Instant> = None;
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if cap_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "mc-lite connection limit reached: new connections wait until one closes"
                    );
                    cap_logged = Some(Instant::now());
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = &mut stopped => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually EMFILE; back off briefly instead of spinning,
                    // and log it at most once a minute.
                    if accept_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "accept failed");
                        accept_logged = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let conn_state = Arc::new(ConnState {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(u64::MAX),
        });
        let state = Arc::clone(&state);
        let service_conn = Arc::clone(&conn_state);
        let request_timeout = limits.request_timeout;
        let service = service_fn(move |req| {
            let state = Arc::clone(&state);
            let in_flight = InFlight::new(&service_conn);
            async move {
                let resp = tokio::time::timeout(request_timeout, api::handle(state, req))
                    .await
                    .unwrap_or_else(|_| timed_out());
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        let (first, idle) = (limits.header_read_timeout, limits.keep_alive_timeout);
        tokio::spawn(async move {
            tokio::select! {
                result = conn => if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                () = conn_state.expired(first, idle) => {
                    tracing::debug!("closing idle connection");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("mc-lite drained"),
        () = tokio::time::sleep(drain_timeout) => tracing::warn!("mc-lite drain deadline reached"),
    }
}
