//! Webhook delivery: `agent.completed` / `agent.error` events POSTed to the
//! caller's URL, signed with HMAC-SHA256, retried with backoff on 5xx and
//! transport failures, never blocking the API response.
//!
//! Deliveries run as detached tasks bounded by a semaphore; when it is full a
//! delivery is dropped and counted rather than queued without limit.
//!
//! A request must not be able to steer Wombat at internal addresses (SSRF):
//! redirects are never followed, loopback / private / link-local targets are
//! refused unless explicitly allowed, and that check is made both on literal
//! IPs in the URL and on every address a host name resolves to, at connect
//! time, so DNS rebinding cannot get round it. An optional host allowlist
//! narrows targets further.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ring::hmac;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Per-attempt timeout (0.1.0: 10 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per delivery, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// Backoff before the second attempt; doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

pub(crate) use wombat_agent::WebhookSpec;

/// Whether `ip` is a public unicast address (not loopback, private,
/// link-local, shared, documentation, multicast or unspecified).
///
/// IPv6 forms that carry an IPv4 address are judged by that address, since
/// the packet ends up there: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002:AABB:CCDD::/48`).
/// The local-use NAT64 prefix `64:ff9b:1::/48` is never public (its IPv4
/// address sits wherever the local network's prefix length puts it). Teredo (`2001::/32`) hides its IPv4
/// target and is refused outright, as are the deprecated site-local
/// (`fec0::/10`) and discard-only (`100::/64`) ranges.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // The local-use NAT64 prefix (RFC 8215) may be used with any
            // prefix length, so where its IPv4 address sits is the local
            // network's choice: never public.
            let nat64_local = s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 0x0001;
            !(nat64_local
                || v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x2001 && s[1] == 0)
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0))
        }
    }
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms
/// that embed one (see [`is_public`]). `::` and `::1` are left alone.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    use std::net::Ipv4Addr;
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-compatible (deprecated): 96 zero bits, then the address.
    if s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1) {
        return Some(low(s[6], s[7]));
    }
    // NAT64, well-known prefix (RFC 6052, always a /96). The local-use
    // prefix is refused outright in `is_public`.
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) {
        return Some(low(s[6], s[7]));
    }
    // 6to4 (RFC 3056): 2002:AABB:CCDD::/48.
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

/// Resolves webhook host names, dropping non-public addresses unless the
/// host is allowlisted or private targets are allowed.
struct GuardedResolver {
    allowed_hosts: Option<Vec<String>>,
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let unrestricted = self.allow_private
            || self
                .allowed_hosts
                .as_ref()
                .is_some_and(|hosts| hosts.contains(&host));
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| unrestricted || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "webhook host {host:?} resolves to no public address (set WOMBAT_WEBHOOK_ALLOW_PRIVATE or WOMBAT_WEBHOOK_ALLOWED_HOSTS to allow it)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Finishes a webhook client: no redirects, the guarded resolver, and no
/// proxy of any kind. An `HTTP(S)_PROXY` from the environment (or any proxy
/// set on `builder`) would resolve the host itself, so the address check
/// would never see where the request really goes.
fn guarded_client(
    builder: reqwest::ClientBuilder,
    allowed_hosts: Option<Vec<String>>,
    allow_private: bool,
) -> Result<reqwest::Client, reqwest::Error> {
    builder
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .dns_resolver(Arc::new(GuardedResolver {
            allowed_hosts,
            allow_private,
        }))
        .build()
}

/// A validated webhook target.
#[derive(Clone)]
pub(crate) struct Target {
    url: reqwest::Url,
    secret: Option<String>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.url.host_str())
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

/// Sends webhooks in the background.
pub(crate) struct Webhooks {
    client: reqwest::Client,
    allowed_hosts: Option<Vec<String>>,
    allow_private: bool,
    in_flight: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// Lowercase hex HMAC-SHA256 of `data` under `secret`.
pub(crate) fn sign(secret: &str, data: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, data);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Webhooks {
    /// Builds the webhook client: its own connection pool, no redirects,
    /// the guarded resolver.
    pub(crate) fn new(
        allowed_hosts: Option<Vec<String>>,
        allow_private: bool,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = guarded_client(
            reqwest::Client::builder(),
            allowed_hosts.clone(),
            allow_private,
        )?;
        Ok(Self {
            client,
            allowed_hosts,
            allow_private,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            metrics,
        })
    }

    /// Checks a request's webhook before any work is done, so a bad URL is a
    /// 400 rather than a silent failure later.
    pub(crate) fn validate(&self, spec: &WebhookSpec) -> Result<Target, ApiError> {
        let bad = |msg: String| ApiError::bad_request(msg);
        let url =
            reqwest::Url::parse(&spec.url).map_err(|e| bad(format!("invalid webhook.url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "invalid webhook.url: scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad("invalid webhook.url: no host".to_owned()))?
            .to_ascii_lowercase();
        let allowlisted = match &self.allowed_hosts {
            Some(allowed) if !allowed.contains(&host) => {
                return Err(ApiError::new(
                    http::StatusCode::BAD_REQUEST,
                    "webhook_host_not_allowed",
                    format!("webhook host {host:?} is not in WOMBAT_WEBHOOK_ALLOWED_HOSTS"),
                ));
            }
            Some(_) => true,
            None => false,
        };
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if let Some(ip) =
            literal.filter(|ip| !allowlisted && !self.allow_private && !is_public(*ip))
        {
            return Err(ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "webhook_host_not_allowed",
                format!(
                    "webhook host {ip} is not a public address; allow it with WOMBAT_WEBHOOK_ALLOW_PRIVATE=true or WOMBAT_WEBHOOK_ALLOWED_HOSTS"
                ),
            ));
        }
        let mut headers = Vec::new();
        for (name, value) in spec.headers.iter().flatten() {
            let Some(text) = value.as_str() else {
                return Err(bad(format!(
                    "invalid webhook.headers.{name}: value must be a string"
                )));
            };
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("invalid webhook header name {name:?}")))?;
            // Framing and routing are the HTTP client's business.
            if matches!(
                name.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                return Err(bad(format!("webhook header {name} cannot be set")));
            }
            let value = http::HeaderValue::from_str(text)
                .map_err(|_| bad(format!("invalid value for webhook header {name}")))?;
            headers.push((name, value));
        }
        Ok(Target {
            url,
            secret: spec.secret.clone().filter(|s| !s.is_empty()),
            headers,
        })
    }

    /// Queues one event for delivery and returns at once.
    pub(crate) fn fire(&self, target: Target, event: Value) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.metrics.webhook_dropped.fetch_add(1, Relaxed);
            tracing::warn!(host = ?target.url.host_str(), "webhook dropped: too many deliveries in flight");
            return;
        };
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let delivery = async move {
            let ok = deliver(&client, &target, &event).await;
            let counter = if ok {
                &metrics.webhook_ok
            } else {
                &metrics.webhook_failed
            };
            counter.fetch_add(1, Relaxed);
            drop(permit);
        };
        // With traces on, the delivery is a client span of the request's
        // trace (it may end after the request's own span).
        let span = if wombat_telemetry::enabled() {
            tracing::info_span!("webhook", otel.kind = "client", otel.name = "webhook POST")
        } else {
            tracing::Span::current()
        };
        tokio::spawn(delivery.instrument(span));
    }
}

/// The headers of every attempt of one delivery. The caller's headers
/// replace the defaults (as 0.1.0's object spread did) but never the
/// delivery, timestamp and signature headers, and no name is sent twice.
fn delivery_headers(
    target: &Target,
    delivery_id: &str,
    timestamp: &str,
    body: &[u8],
) -> http::HeaderMap {
    use http::HeaderValue;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("Wombat-Webhook/1.0"),
    );
    for (name, value) in &target.headers {
        headers.insert(name.clone(), value.clone());
    }
    let mut ours = vec![
        ("x-wombat-delivery", delivery_id.to_owned()),
        ("x-wombat-timestamp", timestamp.to_owned()),
    ];
    if let Some(secret) = &target.secret {
        // The 0.1.0 signature covers the body only. The second one also
        // covers the timestamp, so receivers can reject replays.
        let mut material = Vec::with_capacity(timestamp.len() + 1 + body.len());
        material.extend_from_slice(timestamp.as_bytes());
        material.push(b'.');
        material.extend_from_slice(body);
        ours.push(("x-wombat-signature", sign(secret, body)));
        ours.push((
            "x-wombat-signature-v2",
            format!("t={timestamp},v1={}", sign(secret, &material)),
        ));
    }
    for (name, value) in ours {
        // Uuids, digits and hex are always valid header values.
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    headers
}

/// Delivers one event with retries; true when the receiver answered 2xx.
async fn deliver(client: &reqwest::Client, target: &Target, event: &Value) -> bool {
    let body = match serde_json::to_vec(event) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "webhook body failed to serialise");
            return false;
        }
    };
    let delivery_id = uuid::Uuid::new_v4().to_string();
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let mut headers = delivery_headers(target, &delivery_id, &timestamp, &body);
    if let Some(trace) = wombat_telemetry::outgoing_headers() {
        headers.extend(trace);
    }
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        let req = client
            .post(target.url.clone())
            .timeout(ATTEMPT_TIMEOUT)
            .headers(headers.clone());
        let retryable = match req.body(body.clone()).send().await {
            Ok(resp) if resp.status().is_success() => return true,
            Ok(resp) => {
                let status = resp.status();
                tracing::warn!(%status, attempt, host = ?target.url.host_str(), "webhook rejected");
                status.is_server_error()
                    || status == http::StatusCode::TOO_MANY_REQUESTS
                    || status == http::StatusCode::REQUEST_TIMEOUT
            }
            Err(e) => {
                tracing::warn!(error = %e.without_url(), attempt, host = ?target.url.host_str(), "webhook delivery failed");
                true
            }
        };
        if !retryable || attempt == MAX_ATTEMPTS {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(allowed: Option<Vec<String>>) -> Webhooks {
        Webhooks::new(allowed, false, 4, Arc::default()).expect("client")
    }

    fn spec(url: &str) -> WebhookSpec {
        WebhookSpec {
            url: url.into(),
            secret: None,
            headers: None,
        }
    }

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn validation() {
        let h = hooks(Some(vec!["hooks.example.com".into()]));
        assert!(h.validate(&spec("https://hooks.example.com/x")).is_ok());
        assert!(h.validate(&spec("https://HOOKS.example.com/x")).is_ok());
        let err = h
            .validate(&spec("http://169.254.169.254/latest"))
            .expect_err("refused");
        assert_eq!(err.code, "webhook_host_not_allowed");
        assert!(hooks(None).validate(&spec("ftp://x/")).is_err());
        assert!(hooks(None).validate(&spec("not a url")).is_err());
        let mut s = spec("http://127.0.0.1:1/");
        s.headers = Some(serde_json::from_str(r#"{"x-a": 1}"#).expect("json"));
        assert!(hooks(None).validate(&s).is_err());
        s.headers = Some(serde_json::from_str(r#"{"bad header": "v"}"#).expect("json"));
        assert!(hooks(None).validate(&s).is_err());
        s.headers = Some(serde_json::from_str(r#"{"Content-Length": "1"}"#).expect("json"));
        assert!(hooks(None).validate(&s).is_err());
    }

    #[test]
    fn public_addresses() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4_address() {
        let private = [
            // IPv4-mapped.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            // IPv4-compatible.
            "::127.0.0.1",
            "::10.1.2.3",
            "::169.254.169.254",
            // NAT64, well-known and local-use prefixes.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "64:ff9b:1::7f00:1",
            // 6to4.
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::",
            // Teredo hides its target; site-local and discard-only.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "100::1",
        ];
        for ip in private {
            assert!(
                !is_public(ip.parse().expect("ip")),
                "{ip} must not be public"
            );
        }
        // The local-use NAT64 prefix may be used with any prefix length
        // (RFC 8215), so where the IPv4 address sits is the network's
        // choice: with a /48 this is 127.0.0.1 (its low bits are ignored).
        assert!(!is_public(
            "64:ff9b:1:7f00:0:100:808:808".parse().expect("ip")
        ));
        let public = [
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700::1111",
        ];
        for ip in public {
            assert!(is_public(ip.parse().expect("ip")), "{ip} must be public");
        }
    }

    #[tokio::test]
    async fn webhook_client_ignores_proxies() {
        use std::sync::atomic::AtomicUsize;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A fake proxy that records every connection and answers 200, as a
        // forwarding proxy would after resolving the host itself.
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let proxy_url = format!("http://{}", proxy.local_addr().expect("addr"));
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = proxy.accept().await {
                counter.fetch_add(1, Relaxed);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        // The builder path the daemon uses, with a proxy configured the way
        // the environment would (without mutating the process environment).
        let builder =
            reqwest::Client::builder().proxy(reqwest::Proxy::all(&proxy_url).expect("proxy url"));
        let client = guarded_client(builder, None, false).expect("client");
        // A name the guard refuses (it resolves to loopback only).
        let target = hooks(None)
            .validate(&spec("http://localhost:9/hook"))
            .expect("a host name passes validation; the resolver decides");
        let delivered = deliver(&client, &target, &serde_json::json!({"event": "x"})).await;
        assert!(!delivered, "the guarded resolver must refuse localhost");
        assert_eq!(
            seen.load(Relaxed),
            0,
            "the webhook client must never go through a proxy"
        );
    }

    #[test]
    fn caller_headers_replace_defaults_but_not_ours() {
        let mut s = spec("https://hooks.example.com/");
        s.secret = Some("k".into());
        s.headers = Some(
            serde_json::from_str(
                r#"{"User-Agent": "Custom/1", "x-wombat-signature": "forged", "x-extra": "1"}"#,
            )
            .expect("json"),
        );
        let target = hooks(None).validate(&s).expect("valid");
        let h = delivery_headers(&target, "d-1", "1700000000", b"{}");
        assert_eq!(h.get_all("user-agent").iter().count(), 1);
        assert_eq!(h["user-agent"], "Custom/1");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-extra"], "1");
        assert_eq!(h.get_all("x-wombat-signature").iter().count(), 1);
        assert_eq!(h["x-wombat-signature"], sign("k", b"{}").as_str());
        assert_eq!(h["x-wombat-delivery"], "d-1");
        assert_eq!(h["x-wombat-timestamp"], "1700000000");
    }
}
