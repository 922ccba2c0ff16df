//! Per-request options ([`RequestOptions`]: a tenant's own API key, extra
//! headers, the end user's id, provider-specific body parameters) and the
//! hook around each provider call ([`CallObserver`]).
//!
//! Both are applied in the shared HTTP send path (`http.rs`), so every
//! built-in adapter honours them the same way; a custom [`ChatProvider`]
//! finds the options in [`ChatRequest::options`]. A request without options
//! and a router without a call observer take exactly the path they took
//! before (no parse, copy or allocation is added).
//!
//! [`ChatProvider`]: crate::ChatProvider
//! [`ChatRequest::options`]: crate::ChatRequest::options

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use wombat_core::{Provider, Usage};

use crate::{ApiKey, Error};

/// Options of one request that are not part of the conversation: whose key
/// to use, extra HTTP headers, the end user, and provider-specific body
/// parameters. Build one with [`RequestOptions::new`] and the `with_`
/// methods, and attach it with [`crate::RouteRequest::with_options`].
///
/// Precedence: these options add to what the adapter sends and never
/// replace it. A header the adapter already sets (the provider's key
/// header, `content-type`, `accept`, `anthropic-version`...) or a body
/// field it already sets (`model`, `messages`, `temperature` when the
/// request has one...) makes the call fail with
/// [`crate::ErrorKind::InvalidRequest`] naming it, rather than being
/// silently dropped or silently winning. Only [`RequestOptions::api_key`]
/// replaces something: the configured key of the provider.
#[derive(Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct RequestOptions {
    /// The API key to call the provider with instead of the configured one
    /// (a tenant bringing their own key). Never logged; redacted from
    /// provider messages like the configured key.
    pub api_key: Option<ApiKey>,
    /// Extra HTTP headers (`OpenAI-Organization`, `anthropic-beta`,
    /// OpenRouter's `HTTP-Referer`...). Names and values must be valid HTTP;
    /// their values are treated as secrets (redacted in
    /// [`ProviderRequest::headers`]).
    pub headers: Vec<(String, String)>,
    /// The end user the request is made for, for the provider's abuse
    /// monitoring: OpenAI-compatible `user`, Anthropic `metadata.user_id`;
    /// Gemini has no such field and it is not sent there.
    pub user: Option<String>,
    /// Provider-specific parameters merged into the JSON body at top level
    /// (`{"top_k": 40}`, `{"reasoning_effort": "low"}`). They go to every
    /// model the router tries, so they suit requests that do not fail over
    /// to another provider, or parameters every provider accepts.
    pub provider_params: Map<String, Value>,
}

impl RequestOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls the provider with `key` instead of the configured key.
    #[must_use]
    pub fn with_api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Adds an HTTP header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Names the end user.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Adds a provider-specific body parameter.
    #[must_use]
    pub fn with_provider_param(mut self, name: impl Into<String>, value: Value) -> Self {
        self.provider_params.insert(name.into(), value);
        self
    }

    /// Whether the HTTP request must be rewritten (headers or body).
    pub(crate) fn touches_request(&self) -> bool {
        !self.headers.is_empty() || self.user.is_some() || !self.provider_params.is_empty()
    }
}

impl fmt::Debug for RequestOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: only their names are shown.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("RequestOptions")
            .field("api_key", &self.api_key)
            .field("headers", &names)
            .field("user", &self.user)
            .field("provider_params", &self.provider_params)
            .finish()
    }
}

/// One HTTP request to a provider, as a [`CallObserver`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProviderRequest<'a> {
    /// The provider called.
    pub provider: Provider,
    /// The provider's model id.
    pub model: &'a str,
    /// The HTTP method (`POST`).
    pub method: &'a str,
    /// The URL without credentials: user info and the query string are
    /// replaced by `[redacted]` when present.
    pub url: String,
    /// The request headers; the values of credential headers
    /// (`authorization`, `x-api-key`, `x-goog-api-key`, `cookie`, and every
    /// header from [`RequestOptions::headers`]) are `[redacted]`.
    pub headers: Vec<(String, String)>,
    /// The JSON body as sent.
    pub body: &'a [u8],
}

/// The answer to one HTTP request to a provider: its head arrived, or the
/// call failed before a usable answer.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProviderResponse<'a> {
    /// The provider called.
    pub provider: Provider,
    /// The provider's model id.
    pub model: &'a str,
    /// The HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// Time from sending the request to the response head (or the failure).
    pub latency: Duration,
    /// The error, for a non-2xx answer or a transport failure.
    pub error: Option<&'a Error>,
}

/// How one call of one model ended, as the router saw it: the whole call,
/// body or stream included, for built-in and custom providers alike.
#[derive(Debug)]
#[non_exhaustive]
pub struct CallOutcome<'a> {
    /// The provider called.
    pub provider: Provider,
    /// The provider's model id.
    pub model: &'a str,
    /// The attempt of this model (1-based).
    pub attempt: u32,
    /// Time from the start of the call to its end (for a stream, to its
    /// `Done` event or error).
    pub latency: Duration,
    /// Usage, when the call succeeded.
    pub usage: Option<&'a Usage>,
    /// The error, when it failed.
    pub error: Option<&'a Error>,
}

/// A hook around each provider call, for logging, tracing and tests: sees
/// every HTTP request to a provider and its response, and how each call
/// ended. Set with [`crate::RouterBuilder::call_observer`]; without one
/// nothing is collected.
///
/// The methods are called on the request's task and should return quickly
/// (hand heavy work to a channel).
pub trait CallObserver: Send + Sync {
    /// A request is about to be sent (built-in adapters only).
    fn on_request(&self, request: &ProviderRequest<'_>) {
        let _ = request;
    }

    /// The response head arrived, or the request failed (built-in adapters
    /// only).
    fn on_response(&self, response: &ProviderResponse<'_>) {
        let _ = response;
    }

    /// A call of one model ended, with its usage or error. A call cut
    /// short by the router's deadline, or dropped by the caller, reports no
    /// outcome (the caller gets the deadline error or nothing).
    fn on_outcome(&self, outcome: &CallOutcome<'_>) {
        let _ = outcome;
    }
}

/// The router's call observer, carried by a [`crate::ChatRequest`] to the
/// adapters. Compares equal to any other (it is not part of the request's
/// value).
#[derive(Clone, Default)]
pub(crate) struct ObserverSlot(pub(crate) Option<Arc<dyn CallObserver>>);

impl PartialEq for ObserverSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for ObserverSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "set" } else { "none" })
    }
}
