//! Wombat's outbound HTTP client: the one that carries the calls a request
//! makes on its way through the daemon (the LLM providers, the
//! control-plane backend).
//!
//! It is [hyper-util]'s pooled client under [hyper-rustls], the two crates
//! reqwest runs on, without reqwest's per-request layers (URL re-parsing,
//! the redirect policy, boxed bodies): a [`Target`] is parsed once, when an
//! adapter or client is built, and every request to it clones its
//! [`Uri`] (a reference count). What reqwest gave that users need is kept:
//!
//! - **TLS** with rustls (ring, the webpki roots), HTTP/2 to servers that
//!   offer it by ALPN (one connection shared by concurrent requests),
//!   HTTP/1.1 otherwise, connections pooled and kept alive;
//! - **proxies from the environment** (`HTTPS_PROXY`, `HTTP_PROXY`,
//!   `ALL_PROXY`, `NO_PROXY`, upper or lower case, as curl reads them):
//!   `https://` targets through a `CONNECT` tunnel, `http://` targets
//!   forwarded in absolute form; proxy credentials from the proxy URL's user
//!   info; only `http://` proxy URLs. [`Builder::no_proxy`] turns it off;
//! - **timeouts**: connect (TCP, a proxy's `CONNECT` and the TLS
//!   handshake), and a read timeout that bounds the wait for response
//!   headers and each wait for a body chunk after (counted from when the
//!   caller starts waiting; no whole-request timeout: a caller that wants
//!   one wraps the call);
//! - **errors that never contain the URL** (a base URL may carry
//!   credentials or a key), typed by [`ErrorKind`];
//! - **no redirects**: a redirect would carry credential headers to
//!   wherever it points, so a 3xx is returned to the caller as it is.
//!
//! User info in a target URL (`https://user:pass@host/`) becomes an
//! `Authorization: Basic` header and is removed from the URI.
//!
//! ```no_run
//! # async fn run() -> Result<(), wombat_transport::Error> {
//! use std::time::Duration;
//! use wombat_transport::{Client, Target};
//!
//! let client = Client::builder()
//!     .connect_timeout(Duration::from_secs(10))
//!     .read_timeout(Duration::from_secs(60))
//!     .build()?;
//! let target = Target::parse("https://api.example.com/v1/items")?;
//! let request = target
//!     .request(http::Method::GET)
//!     .body(bytes::Bytes::new())
//!     .expect("a request of valid parts");
//! let mut response = client.send(request).await?;
//! while let Some(chunk) = response.chunk().await? {
//!     println!("{} bytes", chunk.len());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [hyper-util]: https://docs.rs/hyper-util
//! [hyper-rustls]: https://docs.rs/hyper-rustls

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, HOST, HeaderValue, PROXY_AUTHORIZATION, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub use http;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The proxy variables [`Builder::build`] looks for before reading proxies
/// from the environment at all (no proxy set: no per-request lookup).
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A pooled HTTP client. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    hyper: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
    read_timeout: Option<Duration>,
    user_agent: Option<HeaderValue>,
    proxy: Option<Arc<Matcher>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("read_timeout", &self.inner.read_timeout)
            .field("proxy", &self.inner.proxy.is_some())
            .finish_non_exhaustive()
    }
}

/// Settings for a [`Client`]; start with [`Client::builder`].
#[derive(Clone)]
pub struct Builder {
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    pool_idle_timeout: Duration,
    user_agent: Option<String>,
    proxy: ProxySource,
    http2: bool,
}

#[derive(Clone)]
enum ProxySource {
    Env,
    All(String),
    Off,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the proxy URL: it may carry credentials.
        let proxy = match self.proxy {
            ProxySource::Env => "from the environment",
            ProxySource::All(_) => "set",
            ProxySource::Off => "off",
        };
        f.debug_struct("Builder")
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("user_agent", &self.user_agent)
            .field("proxy", &proxy)
            .field("http2", &self.http2)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            connect_timeout: None,
            read_timeout: None,
            pool_idle_timeout: Duration::from_secs(90),
            user_agent: None,
            proxy: ProxySource::Env,
            http2: true,
        }
    }
}

impl Builder {
    /// Bounds the TCP connect (per address tried). Default: none.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Bounds the wait for the response headers, and then the wait for
    /// each body chunk (it restarts at every chunk, so a long stream that
    /// keeps sending is never cut). Default: none.
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// How long an idle pooled connection is kept. Default: 90 s.
    #[must_use]
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The `User-Agent` sent when a request has none.
    #[must_use]
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// Never use a proxy, whatever the environment says.
    #[must_use]
    pub fn no_proxy(mut self) -> Self {
        self.proxy = ProxySource::Off;
        self
    }

    /// Sends everything through the `http://` proxy at `url` instead of
    /// the one the environment names (user info in it authenticates).
    #[must_use]
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = ProxySource::All(url.into());
        self
    }

    /// Offer HTTP/1.1 only in TLS's ALPN (default: HTTP/2 too).
    #[must_use]
    pub fn http1_only(mut self) -> Self {
        self.http2 = false;
        self
    }

    /// Builds the client. It must be used inside a Tokio runtime (its
    /// connections are driven by spawned tasks).
    ///
    /// # Errors
    /// [`ErrorKind::Builder`] when the user agent is not a valid header
    /// value, a proxy URL (given or from the environment) is not
    /// `http://` (the error names the variable, not its value), or TLS
    /// cannot be set up.
    pub fn build(self) -> Result<Client, Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        self.build_with_roots(roots)
    }

    /// [`Builder::build`] trusting `roots` (tests hand their own CA).
    fn build_with_roots(self, roots: rustls::RootCertStore) -> Result<Client, Error> {
        let user_agent = self
            .user_agent
            .map(|a| {
                HeaderValue::try_from(a).map_err(|e| Error::new(ErrorKind::Builder, Some(e.into())))
            })
            .transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // ALPN is left to hyper-rustls, which offers what it is told to
        // speak (`tls_over`).
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Builder, Some(e.into())))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(self.connect_timeout);
        let proxy = match self.proxy {
            ProxySource::Env => {
                let mut set = false;
                for var in PROXY_VARS {
                    let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
                        continue;
                    };
                    if !plain_http_proxy(&value.to_string_lossy()) {
                        // Named, not quoted: the value may carry credentials.
                        return Err(Error::builder(&format!(
                            "{var}: only http:// proxy URLs are supported"
                        )));
                    }
                    set = true;
                }
                set.then(|| Arc::new(Matcher::from_env()))
            }
            ProxySource::All(url) => {
                if !plain_http_proxy(&url) {
                    return Err(Error::builder("only http:// proxy URLs are supported"));
                }
                Some(Arc::new(Matcher::builder().all(url).build()))
            }
            ProxySource::Off => None,
        };
        let tls = Arc::new(tls);
        let direct = tls_over(&tls, self.http2, http.clone());
        let connector = Connector {
            http,
            direct,
            tls,
            http2: self.http2,
            proxy: proxy.clone(),
            connect_timeout: self.connect_timeout,
        };
        let hyper = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Client {
            inner: Arc::new(Inner {
                hyper,
                read_timeout: self.read_timeout,
                user_agent,
                proxy,
            }),
        })
    }
}

impl Client {
    /// Settings for a new client.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Sends `request` and waits (within the read timeout) for the
    /// response headers. Any status is a response, 3xx included: redirects
    /// are never followed.
    ///
    /// # Errors
    /// [`ErrorKind::Connect`] when no connection could be made,
    /// [`ErrorKind::Timeout`] when the connect or read timeout passed,
    /// [`ErrorKind::Request`] when the exchange failed otherwise. None of
    /// them contains the URL.
    pub async fn send(&self, mut request: Request<Bytes>) -> Result<Response, Error> {
        let inner = &*self.inner;
        let headers = request.headers_mut();
        if let Some(agent) = &inner.user_agent {
            headers.entry(USER_AGENT).or_insert_with(|| agent.clone());
        }
        // As reqwest sent it: some servers refuse a request without one.
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        if let Some(matcher) = &inner.proxy {
            // A forwarding proxy reads its credentials from the request;
            // a tunnel's `CONNECT` carries them (see `Connector`).
            if request.uri().scheme() == Some(&Scheme::HTTP) {
                if let Some(auth) = matcher
                    .intercept(request.uri())
                    .and_then(|i| i.basic_auth().cloned())
                {
                    request.headers_mut().insert(PROXY_AUTHORIZATION, auth);
                }
            }
        }
        let pending = inner.hyper.request(request.map(Full::new));
        let answer = match inner.read_timeout {
            Some(limit) => tokio::time::timeout(limit, pending)
                .await
                .map_err(|_| Error::new(ErrorKind::Timeout, None))?,
            None => pending.await,
        };
        let response = answer.map_err(Error::from_client)?;
        let (parts, body) = response.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: Body::new(body, inner.read_timeout),
        })
    }
}

/// A URL parsed once, to send many requests to.
#[derive(Clone, Debug)]
pub struct Target {
    uri: Uri,
    /// `Authorization: Basic` from the URL's user info.
    basic: Option<HeaderValue>,
    /// `Host` of a plain `http` target, made once. Such a connection always
    /// speaks HTTP/1.1, which needs the header; hyper-util would otherwise
    /// format and allocate it on every request. An `https` target may
    /// negotiate HTTP/2, where the authority travels as `:authority`, so
    /// its `Host` is left to hyper-util (per connection version).
    host: Option<HeaderValue>,
}

impl Target {
    /// Parses an absolute `http` or `https` URL. User info becomes a basic
    /// authorization header (percent-decoded) and leaves the URI.
    ///
    /// # Errors
    /// [`ErrorKind::Builder`] naming what is wrong (not the URL itself,
    /// which may hold credentials).
    pub fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::builder(why);
        let uri: Uri = url.parse().map_err(|_| invalid("not a valid URL"))?;
        let scheme = uri
            .scheme()
            .ok_or_else(|| invalid("URL without a scheme"))?;
        if scheme != &Scheme::HTTP && scheme != &Scheme::HTTPS {
            return Err(invalid("URL scheme is not http or https"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("URL without a host"))?;
        if authority.host().is_empty() {
            return Err(invalid("URL without a host"));
        }
        let Some((info, host)) = authority.as_str().rsplit_once('@') else {
            let host = host_header(&uri);
            return Ok(Self {
                uri,
                basic: None,
                host,
            });
        };
        let (user, pass) = info.split_once(':').unwrap_or((info, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let basic = basic_auth(&decode(user), &decode(pass))?;
        let host = Authority::try_from(host).map_err(|_| invalid("URL host is not valid"))?;
        let mut parts = uri.into_parts();
        parts.authority = Some(host);
        let uri = Uri::from_parts(parts).map_err(|_| invalid("not a valid URL"))?;
        Ok(Self {
            host: host_header(&uri),
            uri,
            basic: Some(basic),
        })
    }

    /// The URI (without user info).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// A request builder for `method` to this target, with the user info's
    /// `Authorization` header when the URL had one.
    pub fn request(&self, method: Method) -> http::request::Builder {
        let mut builder = Request::builder().method(method).uri(self.uri.clone());
        if let Some(headers) = builder.headers_mut() {
            self.fixed_headers(headers);
        }
        builder
    }

    /// A `method` request to this target with `body`: [`Target::request`]
    /// without a builder's checks, which have nothing to check here.
    pub fn new_request<B>(&self, method: Method, body: B) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = self.uri.clone();
        self.fixed_headers(request.headers_mut());
        request
    }

    /// The headers every request to this target carries: the user info's
    /// `Authorization`, and `Host` for a plain `http` target. Values made
    /// once: inserting them copies no bytes.
    fn fixed_headers(&self, headers: &mut HeaderMap) {
        if let Some(auth) = &self.basic {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
    }

    /// The basic authorization header from the URL's user info, if any.
    pub fn basic_auth(&self) -> Option<&HeaderValue> {
        self.basic.as_ref()
    }
}

/// The `Host` header of a plain `http` URI: what hyper-util would write,
/// the authority without a default port 80. `None` for `https`.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme() != Some(&Scheme::HTTP) {
        return None;
    }
    let authority = uri.authority()?;
    let host = match authority.port_u16() {
        Some(80) => authority.host(),
        _ => authority.as_str(),
    };
    HeaderValue::from_str(host).ok()
}

/// `Basic base64(user:pass)`, marked sensitive.
fn basic_auth(user: &str, pass: &str) -> Result<HeaderValue, Error> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| Error::builder("URL user info is not valid"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// A response: status and headers, and the body still to read.
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
}

impl Response {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// `Content-Length`, when the server sent a valid one.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// The next chunk of the body; `None` at its end.
    ///
    /// # Errors
    /// [`ErrorKind::Body`] when reading failed, [`ErrorKind::Timeout`]
    /// when no chunk came within the read timeout.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        self.body.chunk().await
    }

    /// The body alone (the headers are dropped).
    pub fn into_body(self) -> Body {
        self.body
    }
}

/// A response body, read chunk by chunk within the read timeout.
pub struct Body {
    incoming: Incoming,
    read_timeout: Option<Duration>,
    /// When the wait in progress began: the first poll that found nothing
    /// after a chunk (a caller that pauses between chunks is not charged
    /// for its pause). `None` between waits, so a body that is already
    /// there when it is read never reads the clock.
    wait_start: Option<Instant>,
    /// Created on the first wait, then moved to `since + read_timeout` at
    /// each new wait (a deadline change, not a new timer).
    timer: Option<Pin<Box<Sleep>>>,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Body {
    fn new(incoming: Incoming, read_timeout: Option<Duration>) -> Self {
        Self {
            incoming,
            read_timeout,
            wait_start: None,
            timer: None,
        }
    }

    /// The next chunk; `None` at the end of the body.
    ///
    /// # Errors
    /// As [`Response::chunk`].
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Polls for the next chunk (trailers are skipped); `Ready(None)` at
    /// the end of the body.
    ///
    /// # Errors
    /// As [`Response::chunk`].
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.wait_start = None;
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Ok(Some(data))),
                        _ => continue,
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(Error::new(ErrorKind::Body, Some(e.into()))));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(None)),
                Poll::Pending => return self.poll_timer(cx),
            }
        }
    }

    /// Whether the server has sent the whole body.
    pub fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    /// Pending, with the timer armed; a timeout error once it passed.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        let Some(limit) = self.read_timeout else {
            return Poll::Pending;
        };
        let since = *self.wait_start.get_or_insert_with(Instant::now);
        let Some(due) = since.checked_add(limit) else {
            // A timeout too large to reach: none.
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Error::new(ErrorKind::Timeout, None))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What went wrong, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request or client could not be built (a bad URL, header or
    /// TLS setup).
    Builder,
    /// No connection could be made (DNS, TCP, TLS, proxy).
    Connect,
    /// The connect or read timeout passed.
    Timeout,
    /// The request failed after connecting (the connection closed, the
    /// server broke the protocol).
    Request,
    /// Reading the response body failed.
    Body,
    /// The body is larger than the caller accepts ([`Error::too_large`]).
    TooLarge,
}

/// A transport error. Its text (and its sources') never contains the URL.
pub struct Error {
    kind: ErrorKind,
    source: Option<BoxError>,
}

impl Error {
    fn new(kind: ErrorKind, source: Option<BoxError>) -> Self {
        Self { kind, source }
    }

    /// A [`ErrorKind::Builder`] error saying `why`.
    pub fn builder(why: &str) -> Self {
        Self::new(ErrorKind::Builder, Some(why.to_owned().into()))
    }

    /// A [`ErrorKind::TooLarge`] error saying `why` (for a caller's own
    /// bound on a body's size).
    pub fn too_large(why: &str) -> Self {
        Self::new(ErrorKind::TooLarge, Some(why.to_owned().into()))
    }

    /// hyper-util's error, kept as the source; its own top line ("client
    /// error (Connect)") says less than its kind here.
    fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        let kind = if e.is_connect() {
            ErrorKind::Connect
        } else {
            ErrorKind::Request
        };
        let mut error = Self::new(kind, Some(e.into()));
        if error.chain_timed_out() {
            error.kind = ErrorKind::Timeout;
        }
        error
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error and its sources on one line (`connection failed: tcp
    /// connect error: Connection refused (os error 111)`), for logs and
    /// error bodies: no URL in it.
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut source = StdError::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// Whether a timeout (connect or read) ended the call.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout || self.chain_timed_out()
    }

    fn chain_timed_out(&self) -> bool {
        let mut source = self.source();
        while let Some(s) = source {
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return true;
            }
            source = s.source();
        }
        false
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ErrorKind::Builder => "invalid request",
            ErrorKind::Connect => "connection failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Request => "request failed",
            ErrorKind::Body => "reading the response body failed",
            ErrorKind::TooLarge => "response body too large",
        })
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let source: &(dyn StdError + 'static) = self.source.as_deref()?;
        // hyper-util's top line only repeats the kind: start below it.
        if source
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some()
        {
            return source.source().or(Some(source));
        }
        Some(source)
    }
}

/// Connects to a target: directly, through a `CONNECT` tunnel (`https`
/// behind a proxy), or to a forwarding proxy (`http` behind a proxy).
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    direct: HttpsConnector<HttpConnector>,
    tls: Arc<rustls::ClientConfig>,
    http2: bool,
    proxy: Option<Arc<Matcher>>,
    /// Bounds the whole connect: TCP, a proxy's `CONNECT`, the TLS
    /// handshake (the TCP part alone is also bounded per address).
    connect_timeout: Option<Duration>,
}

/// Whether `url` names a plain `http://` proxy (a bare `host:port` is one).
fn plain_http_proxy(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("http"),
        None => true,
    }
}

/// `connecting`, bounded by `limit` when there is one.
fn bounded(connecting: Connecting, limit: Option<Duration>) -> Connecting {
    let Some(limit) = limit else {
        return connecting;
    };
    Box::pin(async move {
        match tokio::time::timeout(limit, connecting).await {
            Ok(done) => done,
            Err(_) => {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out").into())
            }
        }
    })
}

/// TLS (for `https` targets) over `connector`, offering HTTP/2 by ALPN
/// when `http2`, HTTP/1.1 always.
fn tls_over<C>(tls: &rustls::ClientConfig, http2: bool, connector: C) -> HttpsConnector<C> {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http();
    if http2 {
        builder.enable_all_versions().wrap_connector(connector)
    } else {
        builder.enable_http1().wrap_connector(connector)
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        bounded(self.connect(dst), self.connect_timeout)
    }
}

impl Connector {
    fn connect(&mut self, dst: Uri) -> Connecting {
        use tower_service::Service as _;
        let intercept = self.proxy.as_ref().and_then(|m| m.intercept(&dst));
        let Some(intercept) = intercept else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move {
                Ok(Conn {
                    io: Io::from(connecting.await?),
                    forward: false,
                })
            });
        };
        let proxy = intercept.uri().clone();
        if proxy.scheme() != Some(&Scheme::HTTP) {
            return Box::pin(async {
                Err(
                    "only http:// proxy URLs are supported (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY)"
                        .into(),
                )
            });
        }
        if dst.scheme() == Some(&Scheme::HTTPS) {
            let mut tunnel = Tunnel::new(proxy, self.http.clone());
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let mut tls = tls_over(&self.tls, self.http2, tunnel);
            let connecting = tls.call(dst);
            return Box::pin(async move {
                Ok(Conn {
                    io: Io::from(connecting.await?),
                    forward: false,
                })
            });
        }
        let connecting = self.http.call(proxy);
        Box::pin(async move {
            Ok(Conn {
                io: Io::Plain(connecting.await?),
                forward: true,
            })
        })
    }
}

/// A connection; `forward` marks one to a forwarding proxy, so requests
/// on it are written in absolute form.
struct Conn {
    io: Io,
    forward: bool,
}

/// A connection's stream. The TLS one is boxed: rustls' session state is
/// about 1 KiB, and hyper's task that drives a connection holds the stream
/// inline for the connection's whole life, so in place it would make every
/// plain-HTTP connection (an Ollama or a backend on the same network, a held
/// stream's provider call) carry that room too. One box per TLS connection,
/// not per request.
enum Io {
    Plain(TokioIo<TcpStream>),
    Tls(Box<MaybeHttpsStream<TokioIo<TcpStream>>>),
}

impl From<MaybeHttpsStream<TokioIo<TcpStream>>> for Io {
    fn from(io: MaybeHttpsStream<TokioIo<TcpStream>>) -> Self {
        match io {
            MaybeHttpsStream::Http(plain) => Io::Plain(plain),
            tls @ MaybeHttpsStream::Https(_) => Io::Tls(Box::new(tls)),
        }
    }
}

/// Forwards a `hyper::rt` I/O call to the stream inside [`Io`].
macro_rules! on_io {
    ($this:expr, $io:ident => $call:expr) => {
        match $this {
            Io::Plain($io) => $call,
            Io::Tls($io) => $call,
        }
    };
}

impl Connection for Conn {
    /// What the pool needs and nothing else: hyper-util's TCP connector
    /// would also attach the socket addresses as an "extra", which hyper-util
    /// then copies into every response's extensions (three allocations per
    /// response), for no reader here.
    fn connected(&self) -> Connected {
        let connected = Connected::new().proxy(self.forward);
        match &self.io {
            Io::Tls(tls) => match &**tls {
                MaybeHttpsStream::Https(stream)
                    if stream.inner().get_ref().1.alpn_protocol() == Some(b"h2") =>
                {
                    connected.negotiated_h2()
                }
                _ => connected,
            },
            Io::Plain(_) => connected,
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        on_io!(&mut self.get_mut().io, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        on_io!(&mut self.get_mut().io, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_io!(&mut self.get_mut().io, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_io!(&mut self.get_mut().io, io => Pin::new(io).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        on_io!(&self.io, io => io.is_write_vectored())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        on_io!(&mut self.get_mut().io, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` (valid until 2126) and its
    /// key, made for this test only.
    const TEST_CERT: &str = include_str!("../tests/tls/localhost-cert.pem");
    const TEST_KEY: &str = include_str!("../tests/tls/localhost-key.pem");

    /// Serves one TLS connection on a loopback port, offering `alpn`, and
    /// answers each request with the HTTP version it came in on.
    async fn tls_server(alpn: &[&[u8]]) -> std::net::SocketAddr {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let tls = acceptor.accept(tcp).await.expect("handshake");
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        version,
                    ))))
                },
            );
            let io = TokioIo::new(tls);
            if h2 {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
        addr
    }

    fn test_roots() -> rustls::RootCertStore {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).expect("cert"))
            .expect("root");
        roots
    }

    /// TLS end to end: the handshake against a trusted root, then HTTP/2
    /// when the server picks it by ALPN (the boxed TLS stream must still
    /// report the negotiated protocol), HTTP/1.1 when it offers only that,
    /// and both connections reused for a second request.
    #[tokio::test]
    async fn https_speaks_what_alpn_negotiated_and_reuses_the_connection() {
        for (alpn, want) in [
            (&[&b"h2"[..], b"http/1.1"][..], "HTTP/2.0"),
            (&[&b"http/1.1"[..]][..], "HTTP/1.1"),
        ] {
            let addr = tls_server(alpn).await;
            let client = Client::builder()
                .no_proxy()
                .build_with_roots(test_roots())
                .expect("client");
            let target =
                Target::parse(&format!("https://localhost:{}/v1/x", addr.port())).expect("target");
            // The server accepts one connection: the second request only
            // succeeds on the pooled one.
            for _ in 0..2 {
                let req = target
                    .request(Method::GET)
                    .body(Bytes::new())
                    .expect("request");
                let mut resp = client.send(req).await.expect("response");
                assert_eq!(resp.status(), StatusCode::OK);
                let mut body = Vec::new();
                while let Some(chunk) = resp.body.chunk().await.expect("chunk") {
                    body.extend_from_slice(&chunk);
                }
                assert_eq!(String::from_utf8(body).expect("utf-8"), want);
            }
        }
    }

    /// A plain `http` target's `Host` is made once, as hyper-util would
    /// write it; an `https` target leaves it to the connection's version.
    #[test]
    fn plain_http_targets_carry_their_host() {
        for (url, want) in [
            ("http://127.0.0.1:8080/v1/x", Some("127.0.0.1:8080")),
            ("http://example.com/v1/x", Some("example.com")),
            ("http://example.com:80/v1/x", Some("example.com")),
            ("http://[::1]:9000/", Some("[::1]:9000")),
            ("http://u:p@example.com:81/", Some("example.com:81")),
            ("https://example.com:8443/v1/x", None),
        ] {
            let target = Target::parse(url).expect("target");
            let built = target.request(Method::GET).body(()).expect("request");
            let direct = target.new_request(Method::GET, ());
            for req in [built, direct] {
                let host = req.headers().get(HOST).map(|v| v.to_str().expect("ascii"));
                assert_eq!(host, want, "{url}");
            }
        }
    }

    #[test]
    fn user_info_becomes_basic_auth_and_leaves_the_uri() {
        let t = Target::parse("http://us%40er:p%3Ass@127.0.0.1:8080/v1/x?q=1").expect("target");
        let auth = t.basic_auth().expect("user info");
        assert_eq!(t.uri().to_string(), "http://127.0.0.1:8080/v1/x?q=1");
        // base64("us@er:p:ss")
        assert_eq!(auth.to_str().expect("ascii"), "Basic dXNAZXI6cDpzcw==");
        assert!(auth.is_sensitive());
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in [
            "not a url",
            "ftp://host/x",
            "/relative/path",
            "http://",
            "https://sk-secret@/x",
        ] {
            let e = Target::parse(url).expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::Builder, "{url}");
            let text = format!(
                "{e}: {}",
                e.source().map(ToString::to_string).unwrap_or_default()
            );
            assert!(
                !text.contains("sk-secret") && !text.contains("ftp:"),
                "{text}"
            );
        }
    }
}
