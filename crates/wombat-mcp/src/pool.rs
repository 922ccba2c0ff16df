//! Initialised MCP clients kept for reuse, one per (server, tenant, agent
//! JWT), so an operation after the first costs one HTTP request instead of
//! three (`initialize`, `notifications/initialized`, then the request).
//!
//! Isolation: a client's transport carries one tenant's headers (its
//! `X-Agent-Token`, its bearer) for its whole life, so it is only ever
//! handed out for exactly that server, `user_id` and token. The key holds
//! the token itself (hashed by the map, compared in full on lookup), so
//! neither another tenant nor a new token of the same user can ever get
//! it; a new token opens its own session.
//!
//! Lifetime: a client unused for the idle TTL (default 60 s, well under
//! an agent JWT's lifetime) is closed, as is the least recently used one
//! when the pool is full. Closing drops the last handle of the client:
//! rmcp then cancels its worker, which ends the session (a `DELETE` to a
//! stateful server) in the background. An operation still using an
//! evicted client keeps it alive until it finishes.
//!
//! The `traceparent` of each request: the transport's headers are fixed
//! when a client is created, so the W3C trace context of an operation
//! travels in the request's `_meta.traceparent` (SEP-414) and
//! [`TracedHttp`] lifts it into that POST's `traceparent` header. Requests
//! the transport makes on its own (the handshake, a session's `DELETE`)
//! carry the trace of the operation that opened the client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetMeta};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};

/// A running MCP client (its handshake done).
pub(crate) type Client = RunningService<RoleClient, ()>;

/// Who a pooled client belongs to: server index, `user_id`, agent JWT.
pub(crate) type ClientKey = (usize, String, String);

struct Pooled {
    client: Arc<Client>,
    last_used: Instant,
}

/// The pool of initialised clients. Bounded; see the module docs.
pub(crate) struct ClientPool {
    entries: Mutex<HashMap<ClientKey, Pooled>>,
    capacity: usize,
    idle_ttl: Duration,
    /// Whether the background sweeper runs (started with the first pooled
    /// client, so building [`crate::McpTools`] needs no runtime).
    sweeping: Mutex<bool>,
}

impl ClientPool {
    pub(crate) fn new(capacity: usize, idle_ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            idle_ttl,
            sweeping: Mutex::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Pooled>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the pool keeps clients at all.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0 && !self.idle_ttl.is_zero()
    }

    /// The live client of `key`, marked used; an idle-expired or closed
    /// one is removed (and so closed) instead.
    pub(crate) fn get(&self, key: &ClientKey) -> Option<Arc<Client>> {
        let stale;
        {
            let mut entries = self.lock();
            let entry = entries.get_mut(key)?;
            if entry.last_used.elapsed() < self.idle_ttl && !entry.client.is_transport_closed() {
                entry.last_used = Instant::now();
                return Some(Arc::clone(&entry.client));
            }
            stale = entries.remove(key);
        }
        // Dropped outside the lock: closing only cancels a token, but
        // nothing else should run under it.
        drop(stale);
        None
    }

    /// Keeps `client` for `key`, first closing idle and closed clients and
    /// then the least recently used ones beyond the capacity. A client
    /// already pooled for the key (opened concurrently) is replaced; the
    /// operation using it keeps it until it finishes.
    pub(crate) fn put(self: &Arc<Self>, key: ClientKey, client: &Arc<Client>) {
        if !self.enabled() {
            return;
        }
        let mut closed = Vec::new();
        {
            let mut entries = self.lock();
            if entries.len() >= self.capacity && !entries.contains_key(&key) {
                closed.extend(self.expired(&mut entries));
                while entries.len() >= self.capacity {
                    let Some(oldest) = entries
                        .iter()
                        .min_by_key(|(_, e)| e.last_used)
                        .map(|(k, _)| k.clone())
                    else {
                        break;
                    };
                    closed.extend(entries.remove(&oldest));
                }
            }
            closed.extend(entries.insert(
                key,
                Pooled {
                    client: Arc::clone(client),
                    last_used: Instant::now(),
                },
            ));
        }
        drop(closed);
        self.start_sweeper();
    }

    /// Drops `client` from the pool if it is still the one kept for `key`
    /// (after a transport failure: the next operation opens a fresh one).
    pub(crate) fn discard(&self, key: &ClientKey, client: &Arc<Client>) {
        let removed = {
            let mut entries = self.lock();
            match entries.get(key) {
                Some(e) if Arc::ptr_eq(&e.client, client) => entries.remove(key),
                _ => None,
            }
        };
        drop(removed);
    }

    /// Number of clients kept (open sessions).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Removes the idle-expired and closed entries, returning them so the
    /// caller drops (closes) them outside the lock.
    fn expired(&self, entries: &mut HashMap<ClientKey, Pooled>) -> Vec<Pooled> {
        let stale: Vec<ClientKey> = entries
            .iter()
            .filter(|(_, e)| {
                e.last_used.elapsed() >= self.idle_ttl || e.client.is_transport_closed()
            })
            .map(|(k, _)| k.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|k| entries.remove(&k))
            .collect()
    }

    /// Starts (once) a task that closes idle clients every half idle TTL,
    /// so a tenant that does not come back does not keep a session open.
    /// It holds only a weak reference and ends with the pool.
    fn start_sweeper(self: &Arc<Self>) {
        {
            let mut sweeping = self.sweeping.lock().unwrap_or_else(PoisonError::into_inner);
            if *sweeping {
                return;
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return;
            };
            *sweeping = true;
            let pool: Weak<Self> = Arc::downgrade(self);
            let period = (self.idle_ttl / 2).max(Duration::from_millis(10));
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    let Some(pool) = pool.upgrade() else {
                        return;
                    };
                    let closed = {
                        let mut entries = pool.lock();
                        pool.expired(&mut entries)
                    };
                    drop(closed);
                }
            });
        }
    }
}

/// The HTTP client of every pooled transport: reqwest, plus a
/// `traceparent` header per POST taken from the request's
/// `_meta.traceparent`, else the one the client was opened with.
#[derive(Clone)]
pub(crate) struct TracedHttp {
    pub(crate) http: reqwest013::Client,
    /// The trace of the operation that opened the client, for requests
    /// that carry none of their own (handshake, `DELETE`, streams).
    pub(crate) opened_in: Option<HeaderValue>,
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

impl TracedHttp {
    fn with_trace(
        &self,
        message: &ClientJsonRpcMessage,
        mut headers: HashMap<HeaderName, HeaderValue>,
    ) -> HashMap<HeaderName, HeaderValue> {
        let own = traceparent_of(message).and_then(|tp| HeaderValue::from_str(tp).ok());
        if let Some(tp) = own.or_else(|| self.opened_in.clone()) {
            headers.insert(TRACEPARENT, tp);
        }
        headers
    }

    fn with_opened_trace(
        &self,
        mut headers: HashMap<HeaderName, HeaderValue>,
    ) -> HashMap<HeaderName, HeaderValue> {
        if let Some(tp) = &self.opened_in {
            headers.insert(TRACEPARENT, tp.clone());
        }
        headers
    }
}

/// The `_meta.traceparent` of a request: set through the extensions or in
/// the typed params (how [`crate::McpTools`] sets it for `tools/list` and
/// `tools/call`).
fn traceparent_of(message: &ClientJsonRpcMessage) -> Option<&str> {
    let ClientJsonRpcMessage::Request(request) = message else {
        return None;
    };
    let request = &request.request;
    if let Some(tp) = request.get_meta().get_traceparent() {
        return Some(tp);
    }
    let params = match request {
        ClientRequest::CallToolRequest(call) => call.params.meta.as_ref(),
        ClientRequest::ListToolsRequest(list) => list.params.as_ref()?.meta.as_ref(),
        _ => None,
    };
    params?.get_traceparent()
}

type HttpError = StreamableHttpError<reqwest013::Error>;

impl StreamableHttpClient for TracedHttp {
    type Error = reqwest013::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let headers = self.with_trace(&message, custom_headers);
        self.http
            .post_message(uri, message, session_id, auth_header, headers)
            .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let headers = self.with_trace(&message, custom_headers);
        self.http
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                headers,
                max_sse_event_size,
            )
            .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let headers = self.with_trace(&message, custom_headers);
        self.http
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                headers,
                limits,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), HttpError> {
        let headers = self.with_opened_trace(custom_headers);
        self.http
            .delete_session(uri, session_id, auth_header, headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<sse_stream::Sse, SseError>>, HttpError> {
        let headers = self.with_opened_trace(custom_headers);
        self.http
            .get_stream(uri, session_id, last_event_id, auth_header, headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<sse_stream::Sse, SseError>>, HttpError> {
        let headers = self.with_opened_trace(custom_headers);
        self.http
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                headers,
                max_sse_event_size,
            )
            .await
    }
}
