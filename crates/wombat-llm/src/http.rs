//! HTTP plumbing shared by the adapters: the one [`Client`], sending a
//! JSON body, reading error bodies and retry hints, turning transport errors
//! into typed errors, and driving an SSE body through a provider parser.
//!
//! Provider-specific payloads and error bodies are parsed in the adapter
//! modules, not here.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use wombat_core::Provider;
use wombat_transport::{Client, Response, Target};

use serde_json::Value;

use crate::call::{CallObserver, ProviderRequest, ProviderResponse, RequestOptions};
use crate::sse::{SseDecoder, SseEvent};
use crate::types::{ApiKey, EventStream, StreamEvent};
use crate::{Error, ErrorKind, Failure, Result};

/// A fixed request URL, parsed once when the adapter is built so that
/// requests do not re-parse it (a request clones its URI: a reference
/// count). A URL that does not parse is kept as the reason: every call then
/// fails with it, as a transport error of kind `Builder`.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint(std::result::Result<Target, String>);

impl Endpoint {
    pub(crate) fn new(url: &str) -> Self {
        Self(Target::parse(url).map_err(|e| {
            let why = std::error::Error::source(&e).map(ToString::to_string);
            why.unwrap_or_else(|| e.to_string())
        }))
    }

    /// A `POST` to this URL on `client`.
    pub(crate) fn post(&self, client: &Client) -> Outgoing {
        match &self.0 {
            Ok(target) => Outgoing::new(client, target),
            Err(why) => Outgoing::invalid(client, why.clone()),
        }
    }
}

/// A request being built by an adapter: headers and a JSON body, then
/// [`send`]. A header or body that cannot be made is kept as the reason
/// and reported by [`send`], as a builder error.
pub(crate) struct Outgoing {
    client: Client,
    request: Request<Bytes>,
    invalid: Option<String>,
}

impl Outgoing {
    pub(crate) fn new(client: &Client, target: &Target) -> Self {
        Self {
            client: client.clone(),
            request: target.new_request(Method::POST, Bytes::new()),
            invalid: None,
        }
    }

    fn invalid(client: &Client, why: String) -> Self {
        Self {
            client: client.clone(),
            request: Request::new(Bytes::new()),
            invalid: Some(why),
        }
    }

    /// Adds `name: value` (a value that is no header value: the send fails).
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(value) => {
                self.request.headers_mut().append(name, value);
            }
            Err(_) => self.fail(format!("the value of header {name} is not valid")),
        }
        self
    }

    /// Adds `value` as a credential (never shown, see [`describe`]).
    pub(crate) fn secret_header(mut self, name: HeaderName, value: &str) -> Self {
        match HeaderValue::from_str(value) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.request.headers_mut().append(name, value);
            }
            Err(_) => self.fail(format!("the value of header {name} is not valid")),
        }
        self
    }

    /// Adds every header of `headers`.
    pub(crate) fn headers(mut self, headers: HeaderMap) -> Self {
        self.request.headers_mut().extend(headers);
        self
    }

    /// Adds a credential built beforehand (marked sensitive).
    pub(crate) fn credential(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.request.headers_mut().append(name, value);
        self
    }

    /// `Authorization: Bearer <token>`, sensitive.
    pub(crate) fn bearer_auth(self, token: &str) -> Self {
        self.secret_header(AUTHORIZATION, &format!("Bearer {token}"))
    }

    /// `body` serialised as the JSON body, into a buffer of `size_hint`
    /// bytes to start with.
    pub(crate) fn json<T: serde::Serialize + ?Sized>(mut self, body: &T, size_hint: usize) -> Self {
        let mut bytes = Vec::with_capacity(size_hint);
        match serde_json::to_writer(&mut bytes, body) {
            Ok(()) => {
                *self.request.body_mut() = Bytes::from(bytes);
                self.request
                    .headers_mut()
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static("application/json"));
            }
            Err(e) => self.fail(format!("the request body does not serialise: {e}")),
        }
        self
    }

    fn fail(&mut self, why: String) {
        self.invalid.get_or_insert(why);
    }
}

/// `Bearer <token>` as a sensitive header value, built once per configured
/// key; `None` if it is no header value (each call then fails the way
/// [`Outgoing::bearer_auth`] does).
pub(crate) fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Error bodies larger than this are cut; providers' are a few hundred bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Builds the shared client ([`wombat_transport`]): rustls, HTTP/2 when
/// offered, `TCP_NODELAY`, proxies from the environment, a connect timeout
/// and a per-read timeout (which also bounds the wait for response headers
/// and for each stream chunk). There is deliberately no whole-request
/// timeout: long generations stream for minutes, and the router's total
/// deadline covers the whole call. Redirects are never followed: one would
/// carry provider key headers (x-api-key, x-goog-api-key) to another host.
pub fn build_client(connect_timeout: Duration, read_timeout: Duration) -> Result<Client> {
    Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("wombat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::config("http client", e.describe()))
}

/// Who a call goes to, for error context and key redaction, with the
/// request's options and the router's call observer (both `None` on the
/// plain path).
#[derive(Clone)]
pub(crate) struct CallCtx {
    pub(crate) provider: Provider,
    pub(crate) model: String,
    pub(crate) key: Option<ApiKey>,
    options: Option<Arc<RequestOptions>>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl fmt::Debug for CallCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallCtx")
            .field("provider", &self.provider)
            .field("model", &self.model)
            .field("key", &self.key)
            .field("options", &self.options)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl CallCtx {
    /// A call to `model` of `provider` with `key`.
    pub(crate) fn new(provider: Provider, model: String, key: Option<ApiKey>) -> Self {
        Self {
            provider,
            model,
            key,
            options: None,
            observer: None,
        }
    }

    /// The same context with `req`'s options and call observer.
    #[must_use]
    pub(crate) fn for_request(mut self, req: &crate::ChatRequest) -> Self {
        self.options = req.options.clone();
        self.observer = req.observer.0.clone();
        self
    }

    /// A failure with `message`, our key and anything that looks like key
    /// material scrubbed from it (see [`scrub_secrets`]) and its length
    /// capped: provider texts reach API callers.
    pub(crate) fn failure(&self, status: Option<u16>, message: impl Into<String>) -> Failure {
        let mut message = message.into();
        let key = self
            .key
            .as_ref()
            .map(ApiKey::expose)
            .filter(|k| !k.is_empty());
        if let Some(k) = key {
            if message.contains(k) {
                message = message.replace(k, "[redacted]");
            }
        }
        let mut message = scrub_secrets(&message, key);
        if message.len() > MAX_FAILURE_MESSAGE {
            let mut cut = MAX_FAILURE_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        Failure {
            provider: self.provider,
            model: self.model.clone(),
            status,
            message,
            should_retry: None,
        }
    }

    pub(crate) fn malformed(&self, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::MalformedResponse, self.failure(None, message))
    }

    pub(crate) fn truncated(&self) -> Error {
        Error::new(ErrorKind::Truncated, self.failure(None, ""))
    }

    /// Classifies a transport error. Its messages never contain the URL or
    /// request headers, so neither the key nor a URL's credentials can leak
    /// through them.
    pub(crate) fn transport(&self, err: &wombat_transport::Error) -> Error {
        let failure = self.failure(None, err.describe());
        if err.is_timeout() {
            Error::new(ErrorKind::Timeout, failure)
        } else {
            Error::new(ErrorKind::Transport, failure)
        }
    }
}

/// Longest provider message kept in a [`Failure`] (they reach API callers
/// and logs; providers' real messages are a few hundred bytes).
const MAX_FAILURE_MESSAGE: usize = 1024;

/// Shortest part of our key that, found in a provider message, marks the
/// word holding it as key material.
const KEY_FRAGMENT: usize = 8;

/// Prefixes of the key formats of the providers we talk to (OpenAI,
/// Anthropic, OpenRouter, Groq, xAI, Google).
const KEY_PREFIXES: &[&str] = &["sk-", "sk_", "gsk_", "xai-", "AIza"];

/// Replaces every word of `message` that may be key material by
/// `[redacted]`: a masked key as providers print it (`sk-OPENA*****cdef`:
/// any word with `**`), a word starting like a known key format
/// (`sk-...`, `AIza...`), and a word sharing the first or last
/// [`KEY_FRAGMENT`] characters of our `key`. Other text (the useful part:
/// "model not found", parameter names) is kept as is.
pub(crate) fn scrub_secrets(message: &str, key: Option<&str>) -> String {
    let key_parts: Vec<&str> = key
        .filter(|k| k.len() >= 2 * KEY_FRAGMENT)
        .into_iter()
        .flat_map(|k| {
            let head = k.get(..KEY_FRAGMENT);
            let tail = k.get(k.len() - KEY_FRAGMENT..);
            head.into_iter().chain(tail)
        })
        .collect();
    let secret = |word: &str| {
        let core = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '*');
        core.contains("**")
            || KEY_PREFIXES
                .iter()
                .any(|p| core.starts_with(p) && core.len() >= p.len() + 4)
            || key_parts.iter().any(|part| core.contains(part))
    };
    if !message.split_whitespace().any(secret) {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let space = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..space]);
        rest = &rest[space..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        if secret(word) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out
}

/// Retry hints from response headers: the wait (`retry-after-ms`, then
/// `retry-after` as seconds or an HTTP date) and `x-should-retry`.
pub(crate) fn retry_hints(headers: &HeaderMap) -> (Option<Duration>, Option<bool>) {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let wait = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| secs_to_duration(ms / 1000.0))
        .or_else(|| {
            text("retry-after").and_then(|v| match v.parse::<f64>() {
                Ok(secs) => secs_to_duration(secs),
                Err(_) => httpdate::parse_http_date(v).ok().map(|at| {
                    at.duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO)
                }),
            })
        });
    let should_retry = match text("x-should-retry") {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    (wait, should_retry)
}

pub(crate) fn secs_to_duration(secs: f64) -> Option<Duration> {
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

/// The default mapping of an HTTP error status, used when the provider's
/// error type field does not decide.
pub(crate) fn classify_status(
    status: u16,
    mut failure: Failure,
    retry_after: Option<Duration>,
) -> Error {
    failure.status = Some(status);
    match status {
        400 | 413 | 422 => Error::new(ErrorKind::InvalidRequest, failure),
        401 | 403 => Error::auth(failure),
        402 => Error::new(ErrorKind::QuotaExceeded, failure),
        404 => Error::new(ErrorKind::ModelNotFound, failure),
        408 => Error::new(ErrorKind::Timeout, failure),
        429 => Error::new(ErrorKind::RateLimited, failure).with_retry_after(retry_after),
        503 | 529 => Error::new(ErrorKind::Overloaded, failure).with_retry_after(retry_after),
        500..=599 => Error::new(ErrorKind::Server, failure).with_retry_after(retry_after),
        _ => Error::new(ErrorKind::UnexpectedStatus, failure).with_retry_after(retry_after),
    }
}

/// An HTTP error response, read and handed to the adapter's classifier.
pub(crate) struct ErrorResponse {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Bytes,
}

impl ErrorResponse {
    /// The body as text, for when the provider sent no parseable error.
    pub(crate) fn body_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.is_empty() {
            "(empty body)".to_owned()
        } else {
            text.to_owned()
        }
    }
}

/// Sends `req`; a non-2xx answer is read (bounded) and turned into an error
/// by `classify`, which the `x-should-retry` hint is then applied to. The
/// request's [`RequestOptions`] (headers, user, provider parameters) are
/// applied here, and the call observer told, when there are any.
pub(crate) async fn send(
    req: Outgoing,
    ctx: &CallCtx,
    classify: fn(&CallCtx, &ErrorResponse) -> Error,
) -> Result<Response> {
    let Outgoing {
        client,
        mut request,
        invalid,
    } = req;
    if let Some(why) = invalid {
        return Err(ctx.transport(&wombat_transport::Error::builder(&why)));
    }
    // The provider joins the caller's trace (W3C `traceparent`) when
    // traces are exported; otherwise nothing is added.
    if let Some(trace) = wombat_telemetry::outgoing_headers() {
        request.headers_mut().extend(trace);
    }
    if let Some(options) = ctx.options.as_deref().filter(|o| o.touches_request()) {
        apply_options(&mut request, options, ctx)?;
    }
    let Some(observer) = ctx.observer.as_deref() else {
        let resp = client.send(request).await.map_err(|e| ctx.transport(&e))?;
        return check_status(resp, ctx, classify).await;
    };
    observer.on_request(&describe(&request, ctx));
    let started = Instant::now();
    let answer = match client.send(request).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let result = check_status(resp, ctx, classify).await;
            (Some(status), result)
        }
        Err(e) => (None, Err(ctx.transport(&e))),
    };
    let (status, result) = answer;
    observer.on_response(&ProviderResponse {
        provider: ctx.provider,
        model: &ctx.model,
        status,
        latency: started.elapsed(),
        error: result.as_ref().err(),
    });
    result
}

/// Headers a caller's extra headers may never set: hop-by-hop and framing
/// headers the HTTP client owns.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// Headers whose values [`describe`] always redacts.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
];

/// Applies a request's extra headers, end user and provider parameters to
/// the built request. Each may only add to what the adapter set: a header
/// or top-level body field that is already there is refused (an
/// [`ErrorKind::InvalidRequest`] naming it), never silently replaced.
fn apply_options(
    request: &mut Request<Bytes>,
    options: &RequestOptions,
    ctx: &CallCtx,
) -> Result<()> {
    let invalid =
        |message: String| Error::new(ErrorKind::InvalidRequest, ctx.failure(None, message));
    for (name, value) in &options.headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            invalid(format!(
                "extra header name {name:?} is not a valid header name"
            ))
        })?;
        if RESERVED_HEADERS.contains(&header.as_str()) || request.headers().contains_key(&header) {
            return Err(invalid(format!(
                "extra header {header} would replace a header the adapter sets"
            )));
        }
        // The value is not quoted: it may be a credential.
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("the value of extra header {header} is not valid")))?;
        value.set_sensitive(true);
        request.headers_mut().append(header, value);
    }
    let user = options
        .user
        .as_deref()
        .filter(|_| has_user_field(ctx.provider));
    if user.is_none() && options.provider_params.is_empty() {
        return Ok(());
    }
    let bytes = request.body();
    let mut body: serde_json::Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("the request body is not a JSON object: {e}")))?;
    for (key, value) in &options.provider_params {
        if body.contains_key(key) {
            return Err(invalid(format!(
                "provider parameter {key:?} would override a field the adapter sets"
            )));
        }
        body.insert(key.clone(), value.clone());
    }
    if let Some(user) = user {
        let conflict =
            || invalid("the end user would override a field the adapter sets".to_owned());
        if ctx.provider == Provider::Anthropic {
            let metadata = body
                .entry("metadata")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            match metadata {
                Value::Object(m) if !m.contains_key("user_id") => {
                    m.insert("user_id".to_owned(), Value::String(user.to_owned()));
                }
                _ => return Err(conflict()),
            }
        } else {
            if body.contains_key("user") {
                return Err(conflict());
            }
            body.insert("user".to_owned(), Value::String(user.to_owned()));
        }
    }
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| invalid(format!("the request body does not serialise: {e}")))?;
    *request.body_mut() = Bytes::from(bytes);
    Ok(())
}

/// Whether the provider's format has an end-user field: OpenAI-compatible
/// `user` and Anthropic `metadata.user_id`; Gemini has none.
fn has_user_field(provider: Provider) -> bool {
    !matches!(provider, Provider::Google | Provider::Echo)
}

/// The request as a [`CallObserver`] sees it, credentials redacted.
fn describe<'a>(request: &'a Request<Bytes>, ctx: &'a CallCtx) -> ProviderRequest<'a> {
    // The URI never holds user info: `Target` turned it into a header.
    let url = request.uri();
    let mut shown = format!("{}://", url.scheme_str().unwrap_or("http"));
    shown.push_str(url.host().unwrap_or_default());
    if let Some(port) = url.port_u16() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    if url.query().is_some() {
        shown.push_str("?[redacted]");
    }
    let extra: Vec<&str> = ctx
        .options
        .iter()
        .flat_map(|o| o.headers.iter().map(|(n, _)| n.as_str()))
        .collect();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let secret = value.is_sensitive()
                || CREDENTIAL_HEADERS.contains(&name.as_str())
                || extra.iter().any(|e| name.as_str().eq_ignore_ascii_case(e));
            let value = if secret {
                "[redacted]".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    ProviderRequest {
        provider: ctx.provider,
        model: &ctx.model,
        method: request.method().as_str(),
        url: shown,
        headers,
        body: request.body(),
    }
}

/// A 2xx answer as is; anything else read (bounded) and classified.
async fn check_status(
    resp: Response,
    ctx: &CallCtx,
    classify: fn(&CallCtx, &ErrorResponse) -> Error,
) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let (retry_after, should_retry) = retry_hints(resp.headers());
    let body = read_bounded(resp, ctx).await?;
    let err = ErrorResponse {
        status: status.as_u16(),
        retry_after,
        body,
    };
    let mut error = classify(ctx, &err);
    if let Some(hint) = should_retry {
        error.set_should_retry(hint);
    }
    Err(error)
}

async fn read_bounded(mut resp: Response, ctx: &CallCtx) -> Result<Bytes> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ctx.transport(&e))? {
        let room = MAX_ERROR_BODY.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    Ok(Bytes::from(buf))
}

/// Largest non-streaming success body read from a provider: 16 MiB. A
/// completion is text of at most a few hundred thousand tokens (about 1 MiB
/// of JSON); the cap only stops a broken or hostile server from making the
/// daemon buffer without limit.
pub const MAX_SUCCESS_BODY: usize = 16 * 1024 * 1024;

/// Reads a successful JSON body (at most [`MAX_SUCCESS_BODY`] bytes, else a
/// [`ErrorKind::MalformedResponse`]) and parses it as `T`.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    resp: Response,
    ctx: &CallCtx,
) -> Result<T> {
    let body = read_success_body(resp, ctx).await?;
    wombat_core::json::from_slice(&body)
        .map_err(|e| ctx.malformed(format!("invalid json body: {e}")))
}

/// Reads a successful body, at most [`MAX_SUCCESS_BODY`] bytes (else a
/// [`ErrorKind::MalformedResponse`]).
pub(crate) async fn read_success_body(mut resp: Response, ctx: &CallCtx) -> Result<Vec<u8>> {
    let too_large = || {
        ctx.malformed(format!(
            "response body exceeds the {} MiB limit",
            MAX_SUCCESS_BODY / (1024 * 1024)
        ))
    };
    let declared = resp.content_length().unwrap_or(0);
    if declared > MAX_SUCCESS_BODY as u64 {
        return Err(too_large());
    }
    // The declared length (when sane) sizes the buffer once.
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await.map_err(|e| ctx.transport(&e))? {
        if body.len() + chunk.len() > MAX_SUCCESS_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a provider parser makes of one SSE event.
pub(crate) enum Step {
    /// Keep reading.
    Continue,
    /// The provider's end marker arrived; the parser has pushed `Done`.
    Finished,
}

/// A provider's stream parser: turns SSE events into [`StreamEvent`]s.
pub(crate) trait SseParser: Send + 'static {
    /// Handles one event, pushing any deltas (and, at the end marker, `Done`)
    /// to `out`. An `Err` ends the stream with that error.
    fn on_event(
        &mut self,
        ev: SseEvent,
        ctx: &CallCtx,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Step>;

    /// The body ended before [`Step::Finished`]. The default is a truncation
    /// error; formats without an end marker (Gemini) decide from what they saw.
    fn on_eof(&mut self, ctx: &CallCtx) -> Result<StreamEvent> {
        Err(ctx.truncated())
    }
}

struct SseState<P> {
    /// `None` once the body (and so its connection) was let go.
    body: Option<wombat_transport::Body>,
    decoder: SseDecoder,
    parser: P,
    ctx: CallCtx,
    events: Vec<SseEvent>,
    queue: VecDeque<StreamEvent>,
    error: Option<Error>,
    done: bool,
}

impl<P: SseParser> SseState<P> {
    /// Feeds decoded events to the parser; stops at the end marker or error.
    fn drain_events(&mut self) {
        for ev in self.events.drain(..) {
            if self.done {
                break;
            }
            match self.parser.on_event(ev, &self.ctx, &mut self.queue) {
                Ok(Step::Continue) => {}
                Ok(Step::Finished) => self.done = true,
                Err(e) => {
                    self.error = Some(e);
                    self.done = true;
                }
            }
        }
    }
}

/// How long to wait for the rest of a body after the provider's end marker.
/// The terminating chunk normally arrives in the same packet; reading it lets
/// the connection go back to the pool instead of being closed.
const TAIL_WAIT: Duration = Duration::from_millis(50);
/// Most bytes read after the end marker before giving up on reuse.
const TAIL_LIMIT: usize = 16 * 1024;

impl<P> SseState<P> {
    /// Reads what is left of the body after the end marker (bounded in time
    /// and size) in a background task, so that hyper can reuse the
    /// connection without delaying the final events.
    fn finish_body(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            // Already read to its end: the connection is back in the pool.
            return;
        }
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TAIL_WAIT, async {
                let mut read = 0;
                while let Ok(Some(bytes)) = body.chunk().await {
                    read += bytes.len();
                    if read > TAIL_LIMIT {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

/// Drives a streaming response body through the SSE decoder and `parser`.
/// After the end marker the rest of the body is read briefly so the
/// connection can be reused; on an error, or when the returned stream is
/// dropped, the body (and so the connection) is dropped at once.
pub(crate) fn sse_stream<P: SseParser + Unpin>(
    resp: Response,
    ctx: CallCtx,
    parser: P,
) -> EventStream {
    let state = SseState {
        body: Some(resp.into_body()),
        decoder: SseDecoder::new(),
        parser,
        ctx,
        events: Vec::new(),
        queue: VecDeque::new(),
        error: None,
        done: false,
    };
    futures::StreamExt::boxed(state)
}

/// The stream itself: a hand-written [`Stream`] rather than an `unfold`
/// over an async block, whose future would keep a second copy of the state
/// (a held stream's memory is mostly this).
impl<P: SseParser + Unpin> futures::Stream for SseState<P> {
    type Item = Result<StreamEvent>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let st = self.get_mut();
        loop {
            if let Some(ev) = st.queue.pop_front() {
                return Poll::Ready(Some(Ok(ev)));
            }
            if let Some(e) = st.error.take() {
                // `done` is set with every error: the next poll ends it.
                // The body (and its connection) goes at once, not with
                // the stream (a boxed empty stream allocates nothing).
                st.body = None;
                return Poll::Ready(Some(Err(e)));
            }
            if st.done {
                return Poll::Ready(None);
            }
            let Some(body) = st.body.as_mut() else {
                // Let go after the end marker: nothing more will come.
                st.done = true;
                continue;
            };
            let Poll::Ready(next) = body.poll_chunk(cx).map(Result::transpose) else {
                // Idle until the provider sends more (for a held stream, a
                // long time): the emptied buffers go back now rather than
                // with the stream. One allocation per chunk gap at most.
                if st.queue.capacity() > 0 {
                    st.queue = VecDeque::new();
                }
                if st.events.capacity() > 0 {
                    st.events = Vec::new();
                }
                return Poll::Pending;
            };
            match next {
                Some(Ok(bytes)) => {
                    let fed = st.decoder.feed(&bytes, &mut st.events);
                    // Events completed before the oversized one still count.
                    st.drain_events();
                    if let Err(e) = fed {
                        if !st.done {
                            st.error = Some(st.ctx.malformed(e.to_string()));
                            st.done = true;
                        }
                    }
                    if st.done && st.error.is_none() {
                        st.finish_body();
                    }
                }
                Some(Err(e)) => {
                    st.error = Some(st.ctx.transport(&e));
                    st.done = true;
                }
                None => {
                    st.decoder.finish(&mut st.events);
                    st.drain_events();
                    if !st.done {
                        match st.parser.on_eof(&st.ctx) {
                            Ok(ev) => st.queue.push_back(ev),
                            Err(e) => st.error = Some(e),
                        }
                        st.done = true;
                    }
                }
            }
        }
    }
}

/// Percent-encodes a path segment (a model id in a Gemini URL) so that an
/// untrusted model string can never change the path or add a query.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The system prompt for providers without a system role: `system` followed
/// by any `System` messages of the conversation, blank-line separated.
pub(crate) fn collect_system(req: &crate::ChatRequest) -> Option<String> {
    let parts: Vec<std::borrow::Cow<'_, str>> = req
        .system
        .iter()
        .map(|s| std::borrow::Cow::Borrowed(s.as_str()))
        .chain(
            req.messages
                .iter()
                .filter(|m| m.role == wombat_core::Role::System)
                .map(wombat_core::ChatMessage::text),
        )
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("valid header"));
        }
        h
    }

    #[test]
    fn retry_hint_precedence_and_formats() {
        let (wait, hint) = retry_hints(&headers(&[
            ("retry-after-ms", "250"),
            ("retry-after", "7"),
            ("x-should-retry", "true"),
        ]));
        assert_eq!(wait, Some(Duration::from_millis(250)));
        assert_eq!(hint, Some(true));
        assert_eq!(
            retry_hints(&headers(&[("retry-after", "1.5")])).0,
            Some(Duration::from_millis(1500))
        );
        let past = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH);
        assert_eq!(
            retry_hints(&headers(&[("retry-after", &past)])).0,
            Some(Duration::ZERO)
        );
        let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let wait = retry_hints(&headers(&[("retry-after", &future)]))
            .0
            .expect("date parses");
        assert!(wait > Duration::from_secs(3000));
        assert_eq!(
            retry_hints(&headers(&[("retry-after", "soon")])),
            (None, None)
        );
        assert_eq!(retry_hints(&headers(&[("retry-after", "-1")])).0, None);
    }

    #[test]
    fn status_mapping() {
        let f = || Failure::new(Provider::OpenAi, "m", "x");
        assert!(matches!(
            classify_status(400, f(), None).kind(),
            ErrorKind::InvalidRequest
        ));
        assert!(matches!(
            classify_status(401, f(), None).kind(),
            ErrorKind::Auth
        ));
        assert!(matches!(
            classify_status(404, f(), None).kind(),
            ErrorKind::ModelNotFound
        ));
        assert!(matches!(
            classify_status(408, f(), None).kind(),
            ErrorKind::Timeout
        ));
        assert!(matches!(
            classify_status(429, f(), None).kind(),
            ErrorKind::RateLimited
        ));
        assert!(matches!(
            classify_status(529, f(), None).kind(),
            ErrorKind::Overloaded
        ));
        assert!(matches!(
            classify_status(502, f(), None).kind(),
            ErrorKind::Server
        ));
        let conflict = classify_status(409, f(), None);
        assert!(conflict.is_retryable());
        assert!(!classify_status(418, f(), None).is_retryable());
    }

    #[test]
    fn key_is_redacted_from_provider_messages() {
        let ctx = CallCtx::new(
            Provider::OpenAi,
            "m".into(),
            Some(ApiKey::new("sk-live-abc")),
        );
        let f = ctx.failure(Some(401), "Incorrect API key provided: sk-live-abc.");
        assert_eq!(f.message, "Incorrect API key provided: [redacted].");
    }

    #[test]
    fn key_material_is_scrubbed_but_useful_text_kept() {
        let key = Some("sk-OPENAIabcdefgh0123456789cdef");
        assert_eq!(
            scrub_secrets(
                "Incorrect API key provided: sk-OPENA*****cdef. See docs.",
                key
            ),
            "Incorrect API key provided: [redacted] See docs."
        );
        assert_eq!(
            scrub_secrets("key AIzaSyD-abcdef is invalid", None),
            "key [redacted] is invalid"
        );
        assert_eq!(
            scrub_secrets("bad key (sk-OPENAIab...)", key),
            "bad key [redacted]"
        );
        assert_eq!(
            scrub_secrets("ends in ...23456789cdef", key),
            "ends in [redacted]"
        );
        let plain = "The model `gpt-5-nano` does not exist or you do not have access to it.";
        assert_eq!(scrub_secrets(plain, key), plain);
        assert_eq!(scrub_secrets("a  b\n c", None), "a  b\n c");
        let ctx = CallCtx::new(Provider::OpenAi, "m".into(), None);
        let long = ctx.failure(None, "é".repeat(2000));
        assert!(long.message.len() <= MAX_FAILURE_MESSAGE + 3);
        assert!(long.message.ends_with("..."));
    }

    #[test]
    fn observed_requests_hide_credentials() {
        let client = Client::builder().build().expect("client");
        let request = Endpoint::new("https://user:pw@api.example.com:8443/v1/chat?key=AIza-secret")
            .post(&client)
            .header(HeaderName::from_static("x-goog-api-key"), "AIza-secret")
            .header(HeaderName::from_static("x-trace"), "visible")
            .header(HeaderName::from_static("x-tenant"), "tenant-secret")
            .json(&serde_json::json!({}), 0);
        assert!(request.invalid.is_none());
        let request = request.request;
        let mut ctx = CallCtx::new(Provider::Google, "m".into(), None);
        ctx.options = Some(Arc::new(
            RequestOptions::new().with_header("X-Tenant", "tenant-secret"),
        ));
        let seen = describe(&request, &ctx);
        // The URL's user info became a basic-auth header.
        assert_eq!(seen.url, "https://api.example.com:8443/v1/chat?[redacted]");
        let header = |name: &str| {
            seen.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("authorization"), Some("[redacted]"));
        assert_eq!(header("x-goog-api-key"), Some("[redacted]"));
        assert_eq!(header("x-tenant"), Some("[redacted]"));
        assert_eq!(header("x-trace"), Some("visible"));
        assert_eq!((seen.method, seen.body), ("POST", &b"{}"[..]));
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("gemini-2.0-flash"), "gemini-2.0-flash");
        assert_eq!(path_segment("../x?y=1"), "..%2Fx%3Fy%3D1");
    }
}
