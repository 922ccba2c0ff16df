//! The HTTP client of the contract: [`ControlPlane`] (shared connection pool,
//! token cache, dispatch calls) and [`AgentClient`] (calls made as one
//! tenant's agent). Every write carries an idempotency key that stays the same
//! across the retries of one logical call. This module does not serve HTTP.
//!
//! Find-or-create by title is on the daemon's hot path, so the client keeps
//! two small per-process caches (shared by clones of one [`ControlPlane`]):
//! whether the backend offers `task_title_filter` (learned once, lazily,
//! from `capabilities`), and a bounded map `(user_id, title) → task` with a
//! short TTL. A `404` for a message or document on a cached task drops the
//! entry, so the next call resolves the title again (the failed call itself
//! is not retried on another task: its caller decides, with the reply in
//! hand).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use foldhash::HashMap;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument as _;
use url::Url;
use wombat_core::controlplane::{
    Capabilities, Document, ErrorBody, HeartbeatRequest, Message, NewDocument, NewMessage, NewTask,
    NewToolRequest, StandupRequest, Task, TaskPage, ToolRequest, ToolRequestDecision,
    ToolRequestPage, ToolRequestStatus, Undelivered,
};
use wombat_transport::{ErrorKind, Target};

use crate::config::{ControlPlaneConfig, RetryPolicy};
use crate::error::{Error, Result};
use crate::jwt::{self, JwtConfig};

/// Page size used when walking the task list (the contract's default).
pub const PAGE_SIZE: u32 = 50;
/// Most pages [`AgentClient::all_tasks`] and
/// [`AgentClient::find_task_by_title`] read (5 000 tasks at [`PAGE_SIZE`]),
/// so a backend that never stops paginating cannot hang a caller.
pub const MAX_PAGES: usize = 100;
/// A cached token is re-minted when fewer than this many seconds remain.
const TOKEN_REFRESH_MARGIN_SECS: u64 = 300;
/// Bound of the token cache; it is pruned when full.
const TOKEN_CACHE_CAP: usize = 4096;
/// Longest error text kept from a non-JSON error body.
const MAX_ERROR_TEXT: usize = 512;
/// Most `(user_id, title)` entries in the task cache; it is cleared when
/// full (simpler than LRU, and a refill costs one call per title).
pub const TASK_CACHE_CAP: usize = 4096;
/// How long a cached `(user_id, title) → task` entry is trusted. Short, so a
/// task renamed or deleted behind our back is found again soon even without
/// a 404 (the status it reports may be this old).
pub const TASK_CACHE_TTL: Duration = Duration::from_secs(300);
/// Longest tool-request id (bytes) the client puts in a URL.
pub const MAX_TOOL_REQUEST_ID_LEN: usize = 256;
/// After `capabilities` failed, the filter is assumed absent for this long
/// before asking again (a transient failure must not disable it forever).
const CAPABILITIES_RETRY: Duration = Duration::from_secs(60);

/// The idempotency key [`AgentClient::find_or_create_task`] sends: `task:`
/// followed by the hex SHA-256 of `user_id`, a NUL byte and `title`, so two
/// concurrent first messages of one thread create one task.
pub fn task_idempotency_key(user_id: &str, title: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(user_id.as_bytes());
    ctx.update(&[0]);
    ctx.update(title.as_bytes());
    let digest = ctx.finish();
    let mut key = String::with_capacity(5 + 64);
    key.push_str("task:");
    for b in digest.as_ref() {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The request key the daemon uses for the reply to a dispatched
/// notification (its writes send `msg:<key>` and `doc:<key>`): `ntf-`
/// followed by the hex SHA-256 of the notification id. Derived, not random,
/// so a redelivery (the daemon answered but the acknowledgement was lost)
/// cannot store a second message: the backend answers the first one (same
/// reply text) or a 409 (a different reply), never a duplicate. Hashed so an
/// id of any length or alphabet makes a short, plain key.
pub fn notification_message_key(notification_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, notification_id.as_bytes());
    let mut key = String::with_capacity(4 + 64);
    key.push_str("ntf-");
    for b in digest.as_ref() {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    key
}

/// Seconds since the Unix epoch from the system clock.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whose token a cache entry is: tenant, role and agent id.
struct TokenKey {
    user: String,
    role: String,
    agent: Option<String>,
}

/// A token's owner seen through borrowed parts, so that finding a cached
/// token (once per backend call) does not copy them into a [`TokenKey`].
/// Equality and hash are those of the parts, for a key and an agent alike.
trait TokenOwner {
    fn parts(&self) -> (&str, &str, Option<&str>);
}

impl TokenOwner for TokenKey {
    fn parts(&self) -> (&str, &str, Option<&str>) {
        (&self.user, &self.role, self.agent.as_deref())
    }
}

impl TokenOwner for AgentClient<'_> {
    fn parts(&self) -> (&str, &str, Option<&str>) {
        (&self.user_id, &self.role, self.agent_id.as_deref())
    }
}

impl<'a> std::borrow::Borrow<dyn TokenOwner + 'a> for TokenKey {
    fn borrow(&self) -> &(dyn TokenOwner + 'a) {
        self
    }
}

impl std::hash::Hash for dyn TokenOwner + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn TokenOwner + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn TokenOwner + '_ {}

impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for TokenKey {}

struct Inner {
    http: wombat_transport::Client,
    base: Url,
    /// The whole-call bound of one attempt (connect, headers, body).
    request_timeout: Duration,
    jwt: JwtConfig,
    internal_token: Option<HeaderValue>,
    retry: RetryPolicy,
    health_timeout: Duration,
    tokens: Mutex<HashMap<TokenKey, (HeaderValue, u64)>>,
    /// `features.task_title_filter`, with the instant until which a
    /// guess made after a failed `capabilities` call holds.
    title_filter: Mutex<Option<(bool, Option<Instant>)>>,
    tasks: Mutex<TaskCache>,
    /// The targets of the fixed endpoints, parsed once (see [`FIXED`]).
    fixed: Vec<(&'static str, Target)>,
}

/// Endpoints whose URL has no per-call part: their target is built when the
/// client is, not on every call (building a URL and parsing it again cost
/// as much as a tenth of the daemon's own work per call).
const FIXED: [&str; 7] = [
    "capabilities",
    "tasks",
    "messages",
    "documents",
    "heartbeat",
    "standup",
    "tool-requests",
];

/// `user_id → title → (task, cached at)`, nested so a lookup borrows `&str`
/// keys instead of allocating a tuple.
#[derive(Default)]
struct TaskCache {
    by_user: HashMap<String, HashMap<String, (Task, Instant)>>,
    len: usize,
}

impl TaskCache {
    fn get(&self, user_id: &str, title: &str, now: Instant) -> Option<&Task> {
        let (task, at) = self.by_user.get(user_id)?.get(title)?;
        (now.saturating_duration_since(*at) < TASK_CACHE_TTL).then_some(task)
    }

    fn insert(&mut self, user_id: &str, title: &str, task: Task, now: Instant) {
        if self.len >= TASK_CACHE_CAP {
            self.by_user.clear();
            self.len = 0;
        }
        let titles = self.by_user.entry(user_id.to_owned()).or_default();
        if titles.insert(title.to_owned(), (task, now)).is_none() {
            self.len += 1;
        }
    }

    /// Drops every entry of `user_id` that points at `task_id`.
    fn forget(&mut self, user_id: &str, task_id: &str) {
        if let Some(titles) = self.by_user.get_mut(user_id) {
            let before = titles.len();
            titles.retain(|_, (task, _)| task.id != task_id);
            self.len -= before - titles.len();
            if titles.is_empty() {
                self.by_user.remove(user_id);
            }
        }
    }
}

/// A handle on one control-plane backend. Cheap to clone; clones share the
/// connection pool and the token cache.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field(
                "base_url",
                &crate::config::without_credentials(&self.inner.base),
            )
            .finish_non_exhaustive()
    }
}

/// Who a request authenticates as.
enum Auth<'a> {
    Agent(&'a AgentClient<'a>),
    Internal,
}

impl ControlPlane {
    /// Validates the config and builds the shared HTTP client.
    pub fn new(config: ControlPlaneConfig) -> Result<Self> {
        // The URL may carry credentials (`https://user:secret@…`): errors
        // name it without them.
        let base = Url::parse(&config.base_url)
            .map_err(|e| Error::Config(format!("base_url is not a valid URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "base_url must be an http(s) URL, not a {:?} one",
                base.scheme()
            )));
        }
        if config.retry.attempts == 0 {
            return Err(Error::Config("retry attempts must be at least 1".into()));
        }
        let internal_token = match config.internal_token {
            Some(t) if !t.is_empty() => {
                let mut v = HeaderValue::from_str(&t).map_err(|_| {
                    Error::Config("internal token is not a valid header value".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        // wombat-transport never follows a redirect: one would carry
        // X-Agent-Token / X-Internal-Token to another host.
        let http = wombat_transport::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("wombat-controlplane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {}", e.describe())))?;
        let fixed = FIXED
            .iter()
            .map(|&segment| {
                let url = contract_url(&base, &[segment])?;
                let target = Target::parse(url.as_str()).map_err(|e| {
                    Error::Config(format!("base_url is not usable: {}", e.describe()))
                })?;
                Ok((segment, target))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                fixed,
                request_timeout: config.request_timeout,
                jwt: config.jwt,
                internal_token,
                retry: config.retry,
                health_timeout: config.health_timeout,
                tokens: Mutex::new(HashMap::default()),
                title_filter: Mutex::new(None),
                tasks: Mutex::new(TaskCache::default()),
            }),
        })
    }

    /// A client acting as `role` for tenant `user_id`. Cheap: no I/O, the
    /// token is minted (and cached) on first use.
    pub fn agent<'a>(
        &self,
        user_id: impl Into<Cow<'a, str>>,
        role: impl Into<Cow<'a, str>>,
    ) -> AgentClient<'a> {
        AgentClient {
            cp: self.clone(),
            user_id: user_id.into(),
            role: role.into(),
            agent_id: None,
        }
    }

    /// `GET dispatch/undelivered` with the internal token: pending
    /// deliveries as raw JSON (a malformed entry is the caller's to skip).
    pub async fn undelivered(
        &self,
        limit_users: u32,
        limit_notifications: u32,
    ) -> Result<Vec<Value>> {
        let mut url = self.url(&["dispatch", "undelivered"])?;
        url.query_pairs_mut()
            .append_pair("limit_users", &limit_users.to_string())
            .append_pair("limit_notifications", &limit_notifications.to_string());
        let body = self
            .send(
                Method::GET,
                &target(&url)?,
                Auth::Internal,
                None,
                "undelivered",
            )
            .await?;
        Ok(decode::<Undelivered>(&body)?.deliveries)
    }

    /// `POST dispatch/notifications/{id}/deliver?user_id=` with the internal
    /// token. Any 2xx counts, whatever its body.
    pub async fn acknowledge(&self, notification_id: &str, user_id: &str) -> Result<()> {
        let mut url = self.url(&["dispatch", "notifications", notification_id, "deliver"])?;
        url.query_pairs_mut().append_pair("user_id", user_id);
        self.send(
            Method::POST,
            &target(&url)?,
            Auth::Internal,
            None,
            "acknowledge",
        )
        .await?;
        Ok(())
    }

    /// `GET <base>/health` once, with the short health timeout and no
    /// retries (for the daemon's deep health check).
    pub async fn health_check(&self) -> Result<()> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Config("base_url cannot have a path".into()))?
            .pop_if_empty()
            .push("health");
        let request = request(&Method::GET, &target(&url)?, None);
        let exchange = async {
            let mut resp = self.inner.http.send(request).await?;
            let status = resp.status();
            if status.is_success() {
                return Ok(Ok(()));
            }
            let body = read_body(&mut resp).await.unwrap_or_default();
            Ok::<_, wombat_transport::Error>(Err(status_error(status, &body)))
        };
        match tokio::time::timeout(self.inner.health_timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => Err(Error::Transport(e.describe())),
            Err(_) => Err(Error::Timeout("no answer within the health timeout".into())),
        }
    }

    /// Whether the backend filters `GET tasks` by `title`: asked once (as
    /// `agent`), then cached for the life of the process. A failed
    /// `capabilities` call counts as "no" for [`CAPABILITIES_RETRY`].
    /// Concurrent first callers may each ask; the answers agree.
    async fn title_filter(&self, agent: &AgentClient<'_>) -> bool {
        let now = Instant::now();
        if let Some((known, until)) = *self
            .inner
            .title_filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            && until.is_none_or(|u| now < u)
        {
            return known;
        }
        let learned = match agent.capabilities().await {
            Ok(caps) => (caps.features.task_title_filter, None),
            Err(e) => {
                tracing::debug!(error = %e, "capabilities unavailable; listing tasks without a title filter");
                (false, Some(now + CAPABILITIES_RETRY))
            }
        };
        *self
            .inner
            .title_filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(learned);
        learned.0
    }

    /// `read` of the cached task of `(user_id, title)`, if fresh (a caller
    /// takes only what it needs: the task, or just its id).
    fn cached_task<R>(
        &self,
        user_id: &str,
        title: &str,
        read: impl FnOnce(&Task) -> R,
    ) -> Option<R> {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(user_id, title, Instant::now())
            .map(read)
    }

    fn cache_task(&self, user_id: &str, title: &str, task: &Task) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(user_id, title, task.clone(), Instant::now());
    }

    /// Forgets cached titles of `user_id` that resolve to `task_id` (the
    /// backend said the task does not exist).
    fn forget_task(&self, user_id: &str, task_id: &str) {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget(user_id, task_id);
    }

    /// Number of `(user_id, title)` entries in the task cache (for tests
    /// and diagnostics).
    pub fn cached_tasks(&self) -> usize {
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }

    /// `<base>/api/mission-control/<segments...>`, each segment escaped.
    fn url(&self, segments: &[&str]) -> Result<Url> {
        contract_url(&self.inner.base, segments)
    }

    /// The target of a fixed endpoint (one of [`FIXED`]).
    fn fixed(&self, segment: &str) -> Result<&Target> {
        self.inner
            .fixed
            .iter()
            .find_map(|(s, target)| (*s == segment).then_some(target))
            .ok_or_else(|| Error::Config(format!("no fixed endpoint {segment:?}")))
    }

    /// The cached token of `(user, role, agent_id)`, minted when missing or
    /// close to expiry.
    fn token(&self, agent: &AgentClient<'_>) -> Result<HeaderValue> {
        let now = unix_now();
        let mut cache = self
            .inner
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, exp)) = cache.get(agent as &dyn TokenOwner)
            && exp.saturating_sub(now) > TOKEN_REFRESH_MARGIN_SECS
        {
            return Ok(token.clone());
        }
        let raw = jwt::mint(
            &self.inner.jwt,
            &agent.user_id,
            &agent.role,
            agent.agent_id.as_deref(),
            now,
        )?;
        let mut value = HeaderValue::from_str(&raw).map_err(|_| crate::JwtError::Encode)?;
        value.set_sensitive(true);
        if cache.len() >= TOKEN_CACHE_CAP {
            cache.retain(|_, (_, exp)| exp.saturating_sub(now) > TOKEN_REFRESH_MARGIN_SECS);
            if cache.len() >= TOKEN_CACHE_CAP {
                cache.clear();
            }
        }
        let key = TokenKey {
            user: agent.user_id.clone().into_owned(),
            role: agent.role.clone().into_owned(),
            agent: agent.agent_id.clone(),
        };
        cache.insert(key, (value.clone(), now + jwt::TOKEN_TTL_SECS));
        Ok(value)
    }

    /// Sends one logical call with retries and returns the success body.
    async fn send(
        &self,
        method: Method,
        target: &Target,
        auth: Auth<'_>,
        body: Option<Bytes>,
        op: &'static str,
    ) -> Result<Bytes> {
        // One client span per logical call (retries are its events); only
        // when traces are exported.
        let span = wombat_telemetry::otel_span!(
            "backend",
            otel.name = %format_args!("backend {op}"),
            otel.kind = "client",
            http.request.method = %method,
            otel.status_code = tracing::field::Empty,
        );
        let result = self
            .send_with_retries(method, target, auth, body, op)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "error");
        }
        result
    }

    async fn send_with_retries(
        &self,
        method: Method,
        target: &Target,
        auth: Auth<'_>,
        body: Option<Bytes>,
        op: &'static str,
    ) -> Result<Bytes> {
        let policy = self.inner.retry;
        let mut attempt: u32 = 1;
        loop {
            let (error, retry_after) =
                match self.attempt(&method, target, &auth, body.clone()).await {
                    Attempt::Done(result) => return result,
                    Attempt::Retryable(error, retry_after) => (error, retry_after),
                };
            if attempt >= policy.attempts {
                return Err(error);
            }
            let delay =
                retry_after.map_or_else(|| backoff(&policy, attempt), |d| d.min(policy.max_delay));
            tracing::debug!(op, attempt, delay_ms = delay.as_millis() as u64, error = %error, "control plane call retried");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        target: &Target,
        auth: &Auth<'_>,
        body: Option<Bytes>,
    ) -> Attempt {
        let mut req = request(method, target, body);
        let headers = req.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        match auth {
            Auth::Agent(agent) => match self.token(agent) {
                Ok(token) => {
                    headers.insert(HeaderName::from_static("x-agent-token"), token);
                }
                Err(e) => return Attempt::Done(Err(e)),
            },
            Auth::Internal => match &self.inner.internal_token {
                Some(token) => {
                    headers.insert(HeaderName::from_static("x-internal-token"), token.clone());
                }
                None => return Attempt::Done(Err(Error::NoInternalToken)),
            },
        }
        if let Some(trace) = wombat_telemetry::outgoing_headers() {
            headers.extend(trace);
        }
        let exchange = async {
            let mut resp = self.inner.http.send(req).await?;
            let bytes = read_body(&mut resp).await?;
            Ok::<_, wombat_transport::Error>((resp, bytes))
        };
        let (resp, bytes) = match tokio::time::timeout(self.inner.request_timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return transport_failure(&e),
            Err(_) => {
                let error = Error::Timeout("no answer within the request timeout".into());
                return Attempt::Retryable(error, None);
            }
        };
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        if status.is_success() {
            return Attempt::Done(Ok(bytes));
        }
        let error = status_error(status, &bytes);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Attempt::Retryable(error, retry_after)
        } else {
            Attempt::Done(Err(error))
        }
    }
}

enum Attempt {
    Done(Result<Bytes>),
    Retryable(Error, Option<Duration>),
}

/// Largest response body read from the backend: the contract's answers
/// are small JSON documents (a page of 50 tasks is a few KiB); this only
/// stops a broken or hostile backend from making the daemon buffer
/// without limit.
const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// `base` with `/api/mission-control/` and `segments` (each escaped) as
/// its path.
fn contract_url(base: &Url, segments: &[&str]) -> Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| Error::Config("base_url cannot have a path".into()))?
        .pop_if_empty()
        .extend(["api", "mission-control"])
        .extend(segments);
    Ok(url)
}

/// The target of a URL built for one call. Not expected to fail (the URL
/// was built from a base that parsed when the client was made); if it
/// does, the call fails as an unusable request would, without the URL.
fn target(url: &Url) -> Result<Target> {
    Target::parse(url.as_str()).map_err(|e| Error::Transport(e.describe()))
}

/// A request to `target` (its user info as basic auth), with `body` as
/// JSON.
fn request(method: &Method, target: &Target, body: Option<Bytes>) -> Request<Bytes> {
    let json = body.is_some();
    let mut req = target.new_request(method.clone(), body.unwrap_or_default());
    if json {
        let headers = req.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    req
}

/// The whole body, at most [`MAX_RESPONSE_BODY`] bytes.
async fn read_body(
    resp: &mut wombat_transport::Response,
) -> std::result::Result<Bytes, wombat_transport::Error> {
    let first = resp.chunk().await?;
    let Some(first) = first else {
        return Ok(Bytes::new());
    };
    // Most answers come in one chunk: no copy then.
    let Some(second) = resp.chunk().await? else {
        return Ok(first);
    };
    let mut body = Vec::with_capacity(first.len() + second.len());
    body.extend_from_slice(&first);
    body.extend_from_slice(&second);
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BODY {
            return Err(wombat_transport::Error::too_large("more than 16 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// A failed exchange: retried unless the request could not be built or the
/// answer was too large (it would be again). The transport's texts never
/// contain the URL (the base URL may carry credentials).
fn transport_failure(e: &wombat_transport::Error) -> Attempt {
    let error = if e.is_timeout() {
        Error::Timeout(e.describe())
    } else {
        Error::Transport(e.describe())
    };
    if matches!(e.kind(), ErrorKind::Builder | ErrorKind::TooLarge) {
        Attempt::Done(Err(error))
    } else {
        Attempt::Retryable(error, None)
    }
}

/// Maps a non-success response to a typed error, keeping the backend's
/// `error` and `code` when the body is the contract's error JSON.
fn status_error(status: StatusCode, body: &[u8]) -> Error {
    let (error, code) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error, b.code),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let cut = text
                .char_indices()
                .nth(MAX_ERROR_TEXT)
                .map_or(text.len(), |(i, _)| i);
            let text = if text.is_empty() {
                status.canonical_reason().unwrap_or("error")
            } else {
                &text[..cut]
            };
            (text.to_owned(), None)
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        Error::Unauthorized { error }
    } else {
        Error::Status {
            status: status.as_u16(),
            error,
            code,
        }
    }
}

/// `Retry-After` as delta seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Exponential backoff for retry number `attempt` (1-based), with jitter,
/// capped at `max_delay`.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    let base = policy
        .base_delay
        .saturating_mul(factor)
        .min(policy.max_delay);
    let jitter = policy.jitter.clamp(0.0, 1.0);
    let spread = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    base.mul_f64(spread).min(policy.max_delay)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    wombat_core::json::from_slice(body).map_err(|e| Error::Decode(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Bytes> {
    // A message (the reply and its attachments) is usually some hundreds of
    // bytes: start there rather than at serde_json's 128.
    let mut bytes = Vec::with_capacity(1024);
    serde_json::to_writer(&mut bytes, value)
        .map_err(|e| Error::Decode(format!("cannot encode request: {e}")))?;
    Ok(Bytes::from(bytes))
}

/// Calls made as one tenant's agent (`X-Agent-Token` for `user_id`/`role`).
/// Cheap to create and clone; given borrowed strings, it borrows the user
/// and role instead of copying them (one per request on the daemon's path).
#[derive(Clone)]
pub struct AgentClient<'a> {
    cp: ControlPlane,
    user_id: Cow<'a, str>,
    role: Cow<'a, str>,
    agent_id: Option<String>,
}

impl std::fmt::Debug for AgentClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("agent_id", &self.agent_id)
            .finish()
    }
}

impl AgentClient<'_> {
    /// Adds the optional `agent_id` claim to this client's tokens.
    #[must_use]
    pub fn with_agent_id(mut self, agent_id: impl Into<String>) -> Self {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// The tenant this client acts for.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The agent role of this client's tokens.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// This client's agent JWT (what `X-Agent-Token` carries), for other
    /// services that scope by it, such as MCP servers. Cached like the
    /// token of the client's own calls.
    ///
    /// # Errors
    /// When the token cannot be signed.
    pub fn token(&self) -> Result<String> {
        let value = self.cp.token(self)?;
        value
            .to_str()
            .map(str::to_owned)
            .map_err(|_| crate::JwtError::Encode.into())
    }

    async fn get<T: DeserializeOwned>(&self, target: &Target, op: &'static str) -> Result<T> {
        let body = self
            .cp
            .send(Method::GET, target, Auth::Agent(self), None, op)
            .await?;
        decode(&body)
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        segment: &str,
        body: &B,
        op: &'static str,
    ) -> Result<T> {
        self.post_bytes(segment, encode(body)?, op).await
    }

    /// [`post`](Self::post) with the body already encoded.
    async fn post_bytes<T: DeserializeOwned>(
        &self,
        segment: &str,
        body: Bytes,
        op: &'static str,
    ) -> Result<T> {
        let target = self.cp.fixed(segment)?;
        let body = self
            .cp
            .send(Method::POST, target, Auth::Agent(self), Some(body), op)
            .await?;
        decode(&body)
    }

    /// `GET capabilities`.
    pub async fn capabilities(&self) -> Result<Capabilities> {
        self.get(self.cp.fixed("capabilities")?, "capabilities")
            .await
    }

    /// One page of `GET tasks`.
    pub async fn list_tasks(&self, limit: Option<u32>, cursor: Option<&str>) -> Result<TaskPage> {
        self.list_page(limit, cursor, None).await
    }

    /// One page of `GET tasks?title=<title>`: only tasks with exactly that
    /// title, on a backend that advertises `task_title_filter` (others
    /// ignore the parameter and list every task).
    pub async fn list_tasks_titled(
        &self,
        title: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<TaskPage> {
        self.list_page(limit, cursor, Some(title)).await
    }

    async fn list_page(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
        title: Option<&str>,
    ) -> Result<TaskPage> {
        let mut url = self.cp.url(&["tasks"])?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(limit) = limit {
                q.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = cursor {
                q.append_pair("cursor", cursor);
            }
            if let Some(title) = title {
                q.append_pair("title", title);
            }
        }
        self.get(&target(&url)?, "list_tasks").await
    }

    /// Walks the task list (filtered by `title` when given) page by page
    /// until `visit` returns `true` (then the matching task is returned) or
    /// the list ends. `Ok(Err(pages))` means the page budget ran out.
    async fn walk_tasks(
        &self,
        title: Option<&str>,
        mut visit: impl FnMut(&Task) -> bool,
        mut keep: impl FnMut(Task),
    ) -> Result<Result<Option<Task>, usize>> {
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .list_page(Some(PAGE_SIZE), cursor.as_deref(), title)
                .await?;
            for task in page.items {
                if visit(&task) {
                    return Ok(Ok(Some(task)));
                }
                keep(task);
            }
            match page.next_cursor.filter(|c| !c.is_empty()) {
                None => return Ok(Ok(None)),
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(Error::Decode(
                        "backend returned the same next_cursor twice".into(),
                    ));
                }
                Some(next) => cursor = Some(next),
            }
        }
        Ok(Err(MAX_PAGES))
    }

    /// Every task of the tenant, following `next_cursor` for at most
    /// [`MAX_PAGES`] pages ([`Error::TooManyPages`] beyond that).
    pub async fn all_tasks(&self) -> Result<Vec<Task>> {
        let mut all = Vec::new();
        match self.walk_tasks(None, |_| false, |t| all.push(t)).await? {
            Ok(_) => Ok(all),
            Err(max_pages) => Err(Error::TooManyPages { max_pages }),
        }
    }

    /// The first task whose title equals `title` exactly. When the backend
    /// advertises `task_title_filter` it asks for that title only (one call
    /// for any number of tasks); otherwise it searches every page (at most
    /// [`MAX_PAGES`]; beyond that it answers `None` with a warning, and a
    /// following create is still deduplicated by its key). Titles are
    /// compared here either way, so a backend that ignores the filter
    /// cannot return a wrong task.
    pub async fn find_task_by_title(&self, title: &str) -> Result<Option<Task>> {
        let filter = self.cp.title_filter(self).await.then_some(title);
        match self.walk_tasks(filter, |t| t.title == title, drop).await? {
            Ok(found) => Ok(found),
            Err(max_pages) => {
                tracing::warn!(max_pages, "task search stopped at the page budget");
                Ok(None)
            }
        }
    }

    /// Finds the task titled `title` or creates it with `description`
    /// (default `"Agent thread: <title>"`), status `in_progress` and
    /// `metadata` (default `{"type":"agent_thread"}`). The create carries
    /// [`task_idempotency_key`], so concurrent callers get one task; a 409
    /// (same key, different payload) falls back to searching again.
    ///
    /// The answer is cached per `(user_id, title)` for [`TASK_CACHE_TTL`]
    /// (at most [`TASK_CACHE_CAP`] entries), so a repeat costs no backend
    /// call; a 404 on a message or document for that task drops the entry.
    /// `description` and `metadata` only matter when the task is created.
    pub async fn find_or_create_task(
        &self,
        title: &str,
        description: Option<&str>,
        metadata: Option<Value>,
    ) -> Result<Task> {
        if let Some(task) = self.cp.cached_task(&self.user_id, title, Task::clone) {
            return Ok(task);
        }
        // Boxed: the lookup and creation calls (~2.8 KB of futures) would
        // otherwise be laid out in this future, and so in every caller's,
        // though a cached title (the usual case) never awaits them.
        let task = Box::pin(self.find_or_create_uncached(title, description, metadata)).await?;
        self.cp.cache_task(&self.user_id, title, &task);
        Ok(task)
    }

    /// [`AgentClient::find_or_create_task`] for a caller that needs only
    /// the task's id: a cached title copies the id, not the whole task.
    ///
    /// # Errors
    /// As [`AgentClient::find_or_create_task`].
    pub async fn find_or_create_task_id(
        &self,
        title: &str,
        description: Option<&str>,
        metadata: Option<Value>,
    ) -> Result<String> {
        if let Some(id) = self
            .cp
            .cached_task(&self.user_id, title, |task| task.id.clone())
        {
            return Ok(id);
        }
        Box::pin(self.find_or_create_task(title, description, metadata))
            .await
            .map(|task| task.id)
    }

    async fn find_or_create_uncached(
        &self,
        title: &str,
        description: Option<&str>,
        metadata: Option<Value>,
    ) -> Result<Task> {
        if let Some(task) = self.find_task_by_title(title).await? {
            return Ok(task);
        }
        let new = NewTask {
            title: title.to_owned(),
            description: Some(
                description.map_or_else(|| format!("Agent thread: {title}"), str::to_owned),
            ),
            status: Some("in_progress".into()),
            metadata: Some(metadata.unwrap_or_else(|| serde_json::json!({"type": "agent_thread"}))),
            idempotency_key: Some(task_idempotency_key(&self.user_id, title)),
        };
        match self.create_task(new).await {
            Err(Error::Status {
                status: 409,
                error,
                code,
            }) => match self.find_task_by_title(title).await? {
                Some(task) => Ok(task),
                None => Err(Error::Status {
                    status: 409,
                    error,
                    code,
                }),
            },
            other => other,
        }
    }

    /// `POST tasks`; a UUID idempotency key is added when none is given.
    pub async fn create_task(&self, mut task: NewTask) -> Result<Task> {
        task.idempotency_key.get_or_insert_with(new_key);
        self.post("tasks", &task, "create_task").await
    }

    /// `POST messages`; a UUID idempotency key is added when none is given.
    /// A 404 (the task is gone) drops cached titles resolving to it.
    pub async fn post_message(&self, mut message: NewMessage) -> Result<Message> {
        message.idempotency_key.get_or_insert_with(new_key);
        // Written by hand (`NewMessage::write_json`, the same bytes as
        // serde): a message per send, whose keys serde would escape one by
        // one. A reply is usually some hundreds of bytes: start there.
        let mut body = Vec::with_capacity(1024);
        message.write_json(&mut body);
        let result = self
            .post_bytes("messages", Bytes::from(body), "post_message")
            .await;
        self.forget_on_404(&result, &message.task_id);
        result
    }

    /// `POST documents`; a UUID idempotency key is added when none is given.
    /// A 404 (the task is gone) drops cached titles resolving to it.
    pub async fn post_document(&self, mut document: NewDocument) -> Result<Document> {
        document.idempotency_key.get_or_insert_with(new_key);
        let result = self.post("documents", &document, "post_document").await;
        self.forget_on_404(&result, &document.task_id);
        result
    }

    fn forget_on_404<T>(&self, result: &Result<T>, task_id: &str) {
        if let Err(Error::Status { status: 404, .. }) = result {
            self.cp.forget_task(&self.user_id, task_id);
        }
    }

    /// `POST heartbeat {user_id}`; returns the backend's JSON reply.
    pub async fn heartbeat(&self) -> Result<Value> {
        let body = HeartbeatRequest {
            user_id: self.user_id.clone().into_owned(),
        };
        self.post("heartbeat", &body, "heartbeat").await
    }

    /// `POST standup {user_id, timezone}`; returns the backend's JSON reply.
    pub async fn standup(&self, timezone: &str) -> Result<Value> {
        let body = StandupRequest {
            user_id: self.user_id.clone().into_owned(),
            timezone: timezone.to_owned(),
        };
        self.post("standup", &body, "standup").await
    }
}

/// Filters and page of [`AgentClient::list_tool_requests`]; `None` leaves
/// a parameter out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolRequestQuery {
    /// Only requests in this state.
    pub status: Option<ToolRequestStatus>,
    /// Only requests of this task.
    pub task_id: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Checks that a tool-request id (often read back from a backend or a
/// caller's metadata) is fit to be one escaped path segment: non-empty, at
/// most [`MAX_TOOL_REQUEST_ID_LEN`] bytes, not `.` or `..` (which URL
/// normalisation would drop, turning `tool-requests/..` into another
/// resource) and without control characters.
pub fn check_tool_request_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "must not be empty"
    } else if id.len() > MAX_TOOL_REQUEST_ID_LEN {
        "longer than 256 bytes"
    } else if id == "." || id == ".." {
        "must not be a dot segment"
    } else if id.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidToolRequestId {
        id: id.chars().take(64).collect(),
        reason,
    })
}

/// Maps the typed answers of the tool-request calls: 404 → not found, 409
/// by its `code` (a `PATCH` 409 is always "already resolved").
fn tool_request_error(error: Error, id: &str, patch: bool) -> Error {
    match error {
        Error::Status { status: 404, .. } => Error::ToolRequestNotFound { id: id.to_owned() },
        Error::Status { status: 409, .. } if patch => {
            Error::ToolRequestResolved { id: id.to_owned() }
        }
        Error::Status {
            status: 409,
            code: Some(code),
            error,
        } => match code.as_str() {
            "tool_request_pending" => Error::ToolRequestPending { id: id.to_owned() },
            "tool_request_consumed" => Error::ToolRequestConsumed { id: id.to_owned() },
            _ => Error::Status {
                status: 409,
                error,
                code: Some(code),
            },
        },
        other => other,
    }
}

impl AgentClient<'_> {
    /// `POST tool-requests` (answers 200 or 201 alike); a UUID idempotency
    /// key is added when none is given. The record comes back `pending`,
    /// or as it stands now for a repeated key and payload.
    pub async fn create_tool_request(&self, mut request: NewToolRequest) -> Result<ToolRequest> {
        request.idempotency_key.get_or_insert_with(new_key);
        self.post("tool-requests", &request, "create_tool_request")
            .await
    }

    /// `GET tool-requests/{id}` (tenant-scoped by the token). 404 is
    /// [`Error::ToolRequestNotFound`]; an unusable id is
    /// [`Error::InvalidToolRequestId`] before any I/O.
    pub async fn get_tool_request(&self, id: &str) -> Result<ToolRequest> {
        check_tool_request_id(id)?;
        let url = self.cp.url(&["tool-requests", id])?;
        self.get(&target(&url)?, "get_tool_request")
            .await
            .map_err(|e| tool_request_error(e, id, false))
    }

    /// One page of `GET tool-requests` with the query's filters.
    pub async fn list_tool_requests(&self, query: &ToolRequestQuery) -> Result<ToolRequestPage> {
        let mut url = self.cp.url(&["tool-requests"])?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(status) = query.status {
                q.append_pair("status", status.as_str());
            }
            if let Some(task_id) = &query.task_id {
                q.append_pair("task_id", task_id);
            }
            if let Some(limit) = query.limit {
                q.append_pair("limit", &limit.to_string());
            }
            if let Some(cursor) = &query.cursor {
                q.append_pair("cursor", cursor);
            }
        }
        self.get(&target(&url)?, "list_tool_requests").await
    }

    /// `PATCH tool-requests/{id}` `{status, reason?}`: approve or reject a
    /// pending request (what a person does in the backend; used by tests
    /// and the reference backend's CLI). 409 is
    /// [`Error::ToolRequestResolved`], 404 [`Error::ToolRequestNotFound`].
    pub async fn resolve_tool_request(
        &self,
        id: &str,
        decision: &ToolRequestDecision,
    ) -> Result<ToolRequest> {
        check_tool_request_id(id)?;
        let url = self.cp.url(&["tool-requests", id])?;
        let body = encode(decision)?;
        let body = self
            .cp
            .send(
                Method::PATCH,
                &target(&url)?,
                Auth::Agent(self),
                Some(body),
                "resolve_tool_request",
            )
            .await
            .map_err(|e| tool_request_error(e, id, true))?;
        decode(&body)
    }

    /// `POST tool-requests/{id}/consume` (beyond v1; only on a backend that
    /// advertises `tool_requests_consume`): atomically marks an approved or
    /// rejected request consumed and returns it, so its decision is acted
    /// on at most once across replicas and redeliveries. Still pending →
    /// [`Error::ToolRequestPending`]; consumed before →
    /// [`Error::ToolRequestConsumed`]; unknown or another tenant's →
    /// [`Error::ToolRequestNotFound`].
    ///
    /// The body carries a fresh idempotency key that stays the same across
    /// this call's retries, so a retry after a lost answer gets the record
    /// again instead of "consumed"; a second call is a second consumer and
    /// gets the 409.
    pub async fn consume_tool_request(&self, id: &str) -> Result<ToolRequest> {
        check_tool_request_id(id)?;
        let url = self.cp.url(&["tool-requests", id, "consume"])?;
        let body = encode(&serde_json::json!({ "idempotency_key": new_key() }))?;
        let body = self
            .cp
            .send(
                Method::POST,
                &target(&url)?,
                Auth::Agent(self),
                Some(body),
                "consume_tool_request",
            )
            .await
            .map_err(|e| tool_request_error(e, id, false))?;
        decode(&body)
    }
}

fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_key_is_deterministic_and_separates_fields() {
        let a = task_idempotency_key("u1", "Launch");
        assert_eq!(a, task_idempotency_key("u1", "Launch"));
        assert_eq!(a.len(), 5 + 64);
        assert!(a.starts_with("task:"));
        assert_ne!(a, task_idempotency_key("u2", "Launch"));
        // The NUL separator keeps ("u1", "xLaunch") and ("u1x", "Launch") apart.
        assert_ne!(
            task_idempotency_key("u1", "xLaunch"),
            task_idempotency_key("u1x", "Launch")
        );
        // SHA-256 of "u\0t", computed independently.
        assert_eq!(
            task_idempotency_key("u", "t"),
            "task:f6b213d0b73316b268b530748df8dc5bda9295c2928a7b6628cebfd1c284e03d"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            jitter: 0.0,
        };
        assert_eq!(backoff(&policy, 1), Duration::from_millis(100));
        assert_eq!(backoff(&policy, 2), Duration::from_millis(200));
        assert_eq!(backoff(&policy, 3), Duration::from_millis(350));
        assert_eq!(backoff(&policy, 40), Duration::from_millis(350));
        let jittery = RetryPolicy {
            jitter: 0.5,
            ..policy
        };
        for _ in 0..100 {
            let d = backoff(&jittery, 1);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(150),
                "{d:?}"
            );
        }
    }

    #[test]
    fn status_errors_keep_backend_text() {
        match status_error(
            StatusCode::CONFLICT,
            br#"{"error":"key reused","code":"idempotency_conflict"}"#,
        ) {
            Error::Status {
                status,
                error,
                code,
            } => {
                assert_eq!(status, 409);
                assert_eq!(error, "key reused");
                assert_eq!(code.as_deref(), Some("idempotency_conflict"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            status_error(StatusCode::UNAUTHORIZED, b"{\"error\":\"bad token\"}"),
            Error::Unauthorized { error } if error == "bad token"
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_GATEWAY, b""),
            Error::Status { status: 502, error, code: None } if error == "Bad Gateway"
        ));
    }

    #[test]
    fn config_is_validated_and_redacted() {
        let jwt = JwtConfig::new("topsecret", crate::JwtAlgorithm::HS256).expect("jwt");
        let mut cfg = ControlPlaneConfig::new("ftp://x", jwt.clone());
        assert!(matches!(
            ControlPlane::new(cfg.clone()),
            Err(Error::Config(_))
        ));
        cfg.base_url = "http://localhost:1/prefix/".into();
        cfg.internal_token = Some("internal-secret".into());
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains("topsecret") && !debug.contains("internal-secret"),
            "{debug}"
        );
        let cp = ControlPlane::new(cfg).expect("valid");
        // Credentials in the URL appear in no Debug output or error.
        for bad in [
            "ftp://u:s3cr3t@x/",
            "http://u:s3cr3t@[::1",
            "mailto:s3cr3t@x",
        ] {
            let cfg = ControlPlaneConfig::new(bad, jwt.clone());
            let error = ControlPlane::new(cfg.clone()).expect_err(bad).to_string();
            assert!(!error.contains("s3cr3t"), "{error}");
            assert!(!format!("{cfg:?}").contains("s3cr3t"), "{cfg:?}");
        }
        let with_password = ControlPlaneConfig::new("http://u:s3cr3t@localhost:1/", jwt.clone());
        assert!(!format!("{with_password:?}").contains("s3cr3t"));
        let shown = format!("{:?}", ControlPlane::new(with_password).expect("valid"));
        assert!(
            !shown.contains("s3cr3t") && shown.contains("***@localhost:1"),
            "{shown}"
        );
        assert_eq!(
            cp.url(&["dispatch", "notifications", "a/b", "deliver"])
                .expect("url")
                .as_str(),
            "http://localhost:1/prefix/api/mission-control/dispatch/notifications/a%2Fb/deliver"
        );
    }

    #[test]
    fn tool_request_ids_are_checked_and_escaped() {
        for bad in [
            "",
            ".",
            "..",
            "a\nb",
            &"x".repeat(MAX_TOOL_REQUEST_ID_LEN + 1),
        ] {
            assert!(
                matches!(
                    check_tool_request_id(bad),
                    Err(Error::InvalidToolRequestId { .. })
                ),
                "{bad:?}"
            );
        }
        check_tool_request_id(&"x".repeat(MAX_TOOL_REQUEST_ID_LEN)).expect("long but fine");
        let jwt = JwtConfig::new("k", crate::JwtAlgorithm::HS256).expect("jwt");
        let cp =
            ControlPlane::new(ControlPlaneConfig::new("http://localhost:1", jwt)).expect("valid");
        assert_eq!(
            cp.url(&["tool-requests", "../tasks?x=1#f", "consume"])
                .expect("url")
                .as_str(),
            "http://localhost:1/api/mission-control/tool-requests/..%2Ftasks%3Fx=1%23f/consume"
        );
    }

    #[test]
    fn tool_request_errors_are_typed_by_code() {
        let status = |status: u16, code: Option<&str>| Error::Status {
            status,
            error: "e".into(),
            code: code.map(str::to_owned),
        };
        assert!(matches!(
            tool_request_error(status(404, None), "a", false),
            Error::ToolRequestNotFound { id } if id == "a"
        ));
        assert!(matches!(
            tool_request_error(status(409, Some("tool_request_pending")), "a", false),
            Error::ToolRequestPending { .. }
        ));
        assert!(matches!(
            tool_request_error(status(409, Some("tool_request_consumed")), "a", false),
            Error::ToolRequestConsumed { .. }
        ));
        assert!(matches!(
            tool_request_error(status(409, Some("idempotency_conflict")), "a", false),
            Error::Status { status: 409, .. }
        ));
        assert!(matches!(
            tool_request_error(status(409, None), "a", true),
            Error::ToolRequestResolved { .. }
        ));
        assert!(matches!(
            tool_request_error(status(500, None), "a", true),
            Error::Status { status: 500, .. }
        ));
    }

    #[test]
    fn tokens_are_cached_per_user_and_role() {
        let jwt = JwtConfig::new("k", crate::JwtAlgorithm::HS256).expect("jwt");
        let cp = ControlPlane::new(ControlPlaneConfig::new("http://localhost:1", jwt.clone()))
            .expect("valid");
        let a = cp.agent("u1", "agent");
        let t1 = cp.token(&a).expect("token");
        let t2 = cp.token(&a).expect("token");
        assert_eq!(t1, t2);
        assert!(t1.is_sensitive());
        let other = cp.token(&cp.agent("u2", "agent")).expect("token");
        assert_ne!(t1, other);
        let claims = jwt::verify(t1.to_str().expect("ascii"), &jwt, unix_now()).expect("valid");
        assert_eq!(
            (claims.user_id.as_str(), claims.agent_role.as_str()),
            ("u1", "agent")
        );
        // One entry per (user, role, agent id); a new client of the same
        // three finds it (looked up through borrowed parts).
        let ceo = cp.token(&cp.agent("u1", "ceo")).expect("token");
        let with_id = cp
            .token(&cp.agent("u1", "agent").with_agent_id("a-7"))
            .expect("token");
        assert_eq!(cp.token(&cp.agent("u1", "agent")).expect("token"), t1);
        assert_eq!(cp.inner.tokens.lock().expect("cache").len(), 4);
        for (token, role, agent_id) in [(ceo, "ceo", None), (with_id, "agent", Some("a-7"))] {
            let claims =
                jwt::verify(token.to_str().expect("ascii"), &jwt, unix_now()).expect("valid");
            assert_eq!(claims.user_id, "u1");
            assert_eq!(claims.agent_role, role);
            assert_eq!(claims.agent_id.as_deref(), agent_id);
        }
    }
}
