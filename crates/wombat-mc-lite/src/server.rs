//! The listener: hyper 1.x with hyper-util's auto (HTTP/1 + HTTP/2)
//! builder, a task per connection and graceful shutdown with a drain
//! deadline. Request handling itself is in `api`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, State};
use crate::config::McLiteConfig;
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
    /// Opens the database, binds `bind` (port 0 picks a free port) and
    /// serves until shut down. Fails before binding if the database cannot
    /// be opened.
    pub async fn start(config: McLiteConfig, bind: SocketAddr) -> crate::Result<RunningMcLite> {
        let db = config.db.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&db))
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
        });
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, state, stopped, config.drain_timeout));
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

async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
    drain_timeout: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => break,
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service = service_fn(move |req| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(api::handle(state, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("mc-lite drained"),
        () = tokio::time::sleep(drain_timeout) => tracing::warn!("mc-lite drain deadline reached"),
    }
}
