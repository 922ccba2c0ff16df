//! One dispatcher tick: poll the backend for undelivered notifications, hand
//! each to the daemon, acknowledge what the daemon accepted. Also the
//! adaptive poll interval. The loop around ticks and the process glue live
//! in `lib.rs`.
//!
//! Ordering: deliveries of one user are sent one after the other, in the
//! order the backend listed them; when one fails, the rest of that user's
//! deliveries wait for the next tick so they never overtake it. Different
//! users are served in parallel, at most `DISPATCH_CONCURRENCY` at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::watch;
use wombat_controlplane::{ControlPlane, ControlPlaneConfig};

use crate::{DispatcherConfig, Error};

/// Most notification ids whose failures are remembered across ticks.
const FAILURE_MEMORY_CAP: usize = 10_000;

/// What one tick did. `deliveries - delivered - failed` deliveries were
/// deferred to the next tick (held behind a failed delivery of the same
/// user, or not started because of shutdown).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickReport {
    /// Deliveries the backend listed.
    pub deliveries: usize,
    /// Sent to the daemon and acknowledged.
    pub delivered: usize,
    /// Malformed, refused by the daemon, or not acknowledged.
    pub failed: usize,
    /// Wall time of the tick.
    pub duration: Duration,
}

impl TickReport {
    /// The tick's JSON log line:
    /// `{"event":"dispatcher_tick","deliveries","delivered","failed","duration_sec"}`.
    pub fn log_line(&self) -> String {
        json!({
            "event": "dispatcher_tick",
            "deliveries": self.deliveries,
            "delivered": self.delivered,
            "failed": self.failed,
            "duration_sec": round_ms(self.duration),
        })
        .to_string()
    }
}

/// The log line of a tick whose poll failed: the usual fields (all zero)
/// plus `error`.
pub fn failed_poll_line(error: &Error, duration: Duration) -> String {
    json!({
        "event": "dispatcher_tick",
        "deliveries": 0,
        "delivered": 0,
        "failed": 0,
        "duration_sec": round_ms(duration),
        "error": error.to_string(),
    })
    .to_string()
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The interval before the next poll: `min` after a tick that delivered
/// something (or found only work that it deferred without failing), doubled
/// (up to `max`) after an idle tick, a failed poll, or a tick in which
/// nothing could be delivered.
pub fn next_interval(
    previous: Duration,
    outcome: Option<&TickReport>,
    min: Duration,
    max: Duration,
) -> Duration {
    let productive =
        outcome.is_some_and(|r| r.delivered > 0 || (r.deliveries > 0 && r.failed == 0));
    if productive {
        min
    } else {
        previous.saturating_mul(2).clamp(min, max)
    }
}

/// A delivery with every field the daemon call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) notification_id: String,
    pub(crate) user_id: String,
    pub(crate) session_key: String,
    pub(crate) content: String,
}

impl Delivery {
    /// Reads one entry of `deliveries`; `Err` names the first missing or
    /// empty field.
    pub(crate) fn parse(v: &Value) -> Result<Self, &'static str> {
        let text = |field: &'static str| -> Result<String, &'static str> {
            match v.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                // Ids may be numeric in some backends.
                Some(Value::Number(n)) if field == "notification_id" => Ok(n.to_string()),
                _ => Err(field),
            }
        };
        Ok(Self {
            notification_id: text("notification_id")?,
            user_id: text("user_id")?,
            session_key: text("session_key")?,
            content: text("content")?,
        })
    }
}

/// Why one delivery was not delivered.
enum Failure {
    Send(String),
    Acknowledge(String),
}

/// The dispatcher: a backend client, a daemon client and the per-delivery
/// failure counts kept across ticks. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    config: DispatcherConfig,
    backend: ControlPlane,
    http: reqwest::Client,
    send_url: String,
    /// Consecutive failed ticks per notification id, for the logs.
    failures: Mutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Builds the backend and daemon clients (no I/O).
    pub fn new(config: DispatcherConfig) -> Result<Self, Error> {
        let mut cp = ControlPlaneConfig::new(config.backend_url.clone(), config.jwt.clone());
        cp.internal_token = Some(config.internal_token.clone());
        let backend = ControlPlane::new(cp)
            .map_err(|e| Error::Config(format!("invalid BACKEND_URL: {e}")))?;
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.send_timeout)
            .user_agent(concat!("wombat-dispatcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the daemon client: {e}")))?;
        let send_url = format!("{}/api/agents/send", config.daemon_url);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                backend,
                http,
                send_url,
                failures: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration this dispatcher runs with.
    pub fn config(&self) -> &DispatcherConfig {
        &self.inner.config
    }

    /// One tick that is never asked to stop early.
    pub async fn tick(&self) -> Result<TickReport, Error> {
        let (_keep, stop) = watch::channel(false);
        self.tick_until(stop).await
    }

    /// One tick: poll, deliver, acknowledge. A failed poll is an error;
    /// failed deliveries are counted in the report. When `stop` turns
    /// `true`, deliveries in flight finish and no new one starts.
    pub async fn tick_until(&self, stop: watch::Receiver<bool>) -> Result<TickReport, Error> {
        let started = Instant::now();
        let c = &self.inner.config;
        let raw = self
            .inner
            .backend
            .undelivered(c.limit_users, c.limit_notifications)
            .await
            .map_err(Error::Poll)?;

        let mut failed = 0;
        // Users in the order the backend first lists them, each with its
        // deliveries in listed order.
        let mut groups: Vec<Vec<Delivery>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for entry in &raw {
            match Delivery::parse(entry) {
                Ok(d) => match index.get(&d.user_id) {
                    Some(&i) => groups[i].push(d),
                    None => {
                        index.insert(d.user_id.clone(), groups.len());
                        groups.push(vec![d]);
                    }
                },
                Err(field) => {
                    failed += 1;
                    let id = entry.get("notification_id").map(Value::to_string);
                    tracing::warn!(
                        notification_id = id.as_deref().unwrap_or("?"),
                        field,
                        "malformed delivery skipped"
                    );
                }
            }
        }

        let outcomes: Vec<(usize, usize)> = futures::stream::iter(groups)
            .map(|list| self.deliver_user(list, stop.clone()))
            .buffer_unordered(c.concurrency)
            .collect()
            .await;
        let delivered = outcomes.iter().map(|(d, _)| d).sum();
        failed += outcomes.iter().map(|(_, f)| f).sum::<usize>();
        self.forget_absent(&raw);

        Ok(TickReport {
            deliveries: raw.len(),
            delivered,
            failed,
            duration: started.elapsed(),
        })
    }

    /// Delivers one user's deliveries in order; stops at the first failure
    /// (or when asked to stop). Returns `(delivered, failed)`.
    async fn deliver_user(
        &self,
        list: Vec<Delivery>,
        stop: watch::Receiver<bool>,
    ) -> (usize, usize) {
        let mut delivered = 0;
        for d in list {
            if *stop.borrow() {
                break;
            }
            match self.deliver(&d).await {
                Ok(()) => {
                    delivered += 1;
                    self.record(&d.notification_id, true);
                }
                Err(failure) => {
                    let attempts = self.record(&d.notification_id, false);
                    let (stage, error) = match &failure {
                        Failure::Send(e) => ("send", e),
                        Failure::Acknowledge(e) => ("acknowledge", e),
                    };
                    tracing::warn!(
                        notification_id = %d.notification_id,
                        user_id = %d.user_id,
                        stage,
                        attempts,
                        error = %error,
                        "delivery failed; it and the user's later deliveries are retried next tick"
                    );
                    return (delivered, 1);
                }
            }
        }
        (delivered, 0)
    }

    /// Sends one delivery to the daemon and acknowledges it once the daemon
    /// accepted it (any 2xx).
    async fn deliver(&self, d: &Delivery) -> Result<(), Failure> {
        let body = json!({
            "user_id": d.user_id,
            "session_key": d.session_key,
            "message": d.content,
            "metadata": { "type": "mc.notification", "notification_id": d.notification_id },
        });
        let mut req = self.inner.http.post(&self.inner.send_url).json(&body);
        if let Some(key) = &self.inner.config.daemon_api_key {
            req = req.header("X-Agent-Daemon-Key", key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Send(format!("daemon unreachable: {}", describe(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let error = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(300).collect());
            return Err(Failure::Send(format!("daemon answered {status}: {error}")));
        }
        self.inner
            .backend
            .acknowledge(&d.notification_id, &d.user_id)
            .await
            .map_err(|e| Failure::Acknowledge(e.to_string()))
    }

    /// Updates the failure count of `id`; returns the consecutive failures.
    fn record(&self, id: &str, ok: bool) -> u32 {
        let mut map = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            map.remove(id);
            return 0;
        }
        if map.len() >= FAILURE_MEMORY_CAP && !map.contains_key(id) {
            map.clear();
        }
        let n = map.entry(id.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    /// Drops the counts of notifications the backend no longer lists.
    fn forget_absent(&self, raw: &[Value]) {
        let mut map = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.is_empty() {
            return;
        }
        let listed: Vec<String> = raw
            .iter()
            .filter_map(|v| Delivery::parse(v).ok())
            .map(|d| d.notification_id)
            .collect();
        map.retain(|id, _| listed.contains(id));
    }

    /// Consecutive failed attempts of one notification (0 when it last
    /// succeeded or never failed).
    pub fn failures_of(&self, notification_id: &str) -> u32 {
        self.inner
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(notification_id)
            .copied()
            .unwrap_or(0)
    }
}

/// A reqwest error and its sources on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(30);

    fn report(deliveries: usize, delivered: usize, failed: usize) -> TickReport {
        TickReport {
            deliveries,
            delivered,
            failed,
            duration: Duration::from_millis(1234),
        }
    }

    #[test]
    fn interval_resets_on_work_and_doubles_when_idle_or_failing() {
        let s = Duration::from_secs;
        assert_eq!(next_interval(s(16), Some(&report(3, 1, 2)), MIN, MAX), MIN);
        assert_eq!(next_interval(s(2), Some(&report(0, 0, 0)), MIN, MAX), s(4));
        assert_eq!(next_interval(s(4), None, MIN, MAX), s(8));
        assert_eq!(next_interval(s(16), Some(&report(2, 0, 2)), MIN, MAX), MAX);
        assert_eq!(next_interval(MAX, None, MIN, MAX), MAX);
        // A tick that only deferred work (shutdown) is not a failure.
        assert_eq!(next_interval(s(8), Some(&report(2, 0, 0)), MIN, MAX), MIN);
    }

    #[test]
    fn log_line_has_the_documented_shape() {
        let line = report(3, 2, 1).log_line();
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            v,
            json!({"event":"dispatcher_tick","deliveries":3,"delivered":2,"failed":1,"duration_sec":1.234})
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn parse_names_the_missing_field() {
        let ok = json!({"notification_id": 7, "user_id": "u", "session_key": "s", "content": "hi"});
        assert_eq!(
            Delivery::parse(&ok).map(|d| d.notification_id),
            Ok("7".to_owned())
        );
        let no_session = json!({"notification_id": "n", "user_id": "u", "content": "hi"});
        assert_eq!(Delivery::parse(&no_session), Err("session_key"));
        let blank_user =
            json!({"notification_id": "n", "user_id": " ", "session_key": "s", "content": "hi"});
        assert_eq!(Delivery::parse(&blank_user), Err("user_id"));
        assert_eq!(Delivery::parse(&json!("junk")), Err("notification_id"));
    }
}
