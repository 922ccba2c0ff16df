//! One dispatcher tick: poll the backend for undelivered notifications, hand
//! each to the daemon, acknowledge what the daemon accepted. Also the
//! adaptive poll interval. The loop around ticks and the process glue live
//! in `lib.rs`.
//!
//! Ordering: deliveries of one user are sent one after the other, in the
//! order the backend listed them; when one fails for a reason that may pass
//! (daemon unreachable, 5xx, 408, 429, 401/403), the rest of that user's
//! deliveries wait for the next tick so they never overtake it. Different
//! users are served in parallel, at most `DISPATCH_CONCURRENCY` at a time.
//!
//! Giving up: a notification the daemon refuses with any other 4xx (it will
//! never be accepted as it is), one that failed `DISPATCH_MAX_ATTEMPTS`
//! times, and a malformed one that still names its id and user are
//! acknowledged anyway (the contract has no "failed" state, and an entry
//! left pending would keep a slot of its user's queue forever), logged at
//! error level with the reason, and counted as `given_up`. 401/403 from the
//! daemon mean the dispatcher's own key is wrong, so they never count
//! toward giving up. Attempts are remembered in process only (a bounded map,
//! cleared when full), so a restart grants every notification a fresh
//! budget; the daemon's notification-derived idempotency key keeps such a
//! retry from storing a second reply.
//!
//! Acknowledgement failures: when the daemon accepted a delivery but the
//! acknowledgement failed, the id is remembered (bounded) and the next tick
//! only acknowledges it, without sending it to the daemon again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use wombat_controlplane::{ControlPlane, ControlPlaneConfig};

use crate::{DispatcherConfig, Error};

/// Most notification ids whose failures (or pending acknowledgements) are
/// remembered across ticks.
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
    /// Of `failed`: given up for good (acknowledged without a reply:
    /// refused with a permanent 4xx, malformed, or out of attempts).
    pub given_up: usize,
    /// Wall time of the tick.
    pub duration: Duration,
}

impl TickReport {
    /// The tick's JSON log line:
    /// `{"event":"dispatcher_tick","deliveries","delivered","failed","given_up","duration_sec"}`.
    pub fn log_line(&self) -> String {
        json!({
            "event": "dispatcher_tick",
            "deliveries": self.deliveries,
            "delivered": self.delivered,
            "failed": self.failed,
            "given_up": self.given_up,
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
        "given_up": 0,
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
    /// The task the reply belongs on, when the backend names one.
    pub(crate) task_id: Option<String>,
    /// The backend's metadata object, passed through to the daemon.
    pub(crate) metadata: Option<Map<String, Value>>,
}

/// A notification id given as a string or a number.
fn id_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Delivery {
    /// Reads one entry of `deliveries`; `Err` names the first missing,
    /// empty or mistyped field.
    pub(crate) fn parse(v: &Value) -> Result<Self, &'static str> {
        let text = |field: &'static str| -> Result<String, &'static str> {
            match v.get(field) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                _ => Err(field),
            }
        };
        let task_id = match v.get("task_id") {
            None | Some(Value::Null) => None,
            other => Some(id_of(other).ok_or("task_id")?),
        };
        let metadata = match v.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m.clone()),
            Some(_) => return Err("metadata"),
        };
        Ok(Self {
            // Ids may be numeric in some backends.
            notification_id: id_of(v.get("notification_id")).ok_or("notification_id")?,
            user_id: text("user_id")?,
            session_key: text("session_key")?,
            content: text("content")?,
            task_id,
            metadata,
        })
    }

    /// The daemon's `/api/agents/send` body: the delivery's `task_id` when
    /// it has one, else `task_title` (`DISPATCH_TASK_TITLE`, unless empty);
    /// `metadata` is the delivery's object with `type: "mc.notification"`
    /// and `notification_id` set on top (ours win: the daemon derives the
    /// reply's idempotency key from `notification_id`).
    pub(crate) fn send_body(&self, task_title: Option<&str>) -> Value {
        let mut metadata = self.metadata.clone().unwrap_or_default();
        metadata.insert("type".into(), json!("mc.notification"));
        metadata.insert("notification_id".into(), json!(self.notification_id));
        let mut body = json!({
            "user_id": self.user_id,
            "session_key": self.session_key,
            "message": self.content,
            "metadata": metadata,
        });
        if let Some(map) = body.as_object_mut() {
            match (&self.task_id, task_title) {
                (Some(id), _) => {
                    map.insert("task_id".into(), json!(id));
                }
                (None, Some(title)) => {
                    map.insert("task_title".into(), json!(title));
                }
                (None, None) => {}
            }
        }
        body
    }
}

/// Why one delivery was not delivered.
enum Failure {
    /// The daemon did not take it, for a reason that may pass (unreachable,
    /// 5xx, 408, 429): retried next tick, counted toward giving up.
    Transient(String),
    /// The daemon refused our credentials (401/403): retried, never counted
    /// against the notification.
    Unauthorized(String),
    /// The daemon refused the delivery itself (another 4xx): given up now.
    Permanent(String),
    /// The daemon accepted it; the acknowledgement failed.
    Acknowledge(String),
}

/// What happened to one delivery.
enum Outcome {
    Delivered,
    /// Failed; `blocks` means the user's later deliveries wait.
    Failed {
        blocks: bool,
    },
    GivenUp,
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
    /// Consecutive failed attempts per notification id.
    failures: Mutex<HashMap<String, u32>>,
    /// Notifications the daemon accepted whose acknowledgement failed: the
    /// next tick only acknowledges them.
    unacked: Mutex<HashSet<String>>,
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
                unacked: Mutex::new(HashSet::new()),
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

        let (mut failed, mut given_up) = (0, 0);
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
                    if self.give_up_malformed(entry, field).await {
                        given_up += 1;
                    }
                }
            }
        }

        let outcomes: Vec<(usize, usize, usize)> = futures::stream::iter(groups)
            .map(|list| self.deliver_user(list, stop.clone()))
            .buffer_unordered(c.concurrency)
            .collect()
            .await;
        let delivered = outcomes.iter().map(|(d, _, _)| d).sum();
        failed += outcomes.iter().map(|(_, f, _)| f).sum::<usize>();
        given_up += outcomes.iter().map(|(_, _, g)| g).sum::<usize>();
        self.forget_absent(&raw);

        Ok(TickReport {
            deliveries: raw.len(),
            delivered,
            failed,
            given_up,
            duration: started.elapsed(),
        })
    }

    /// A malformed delivery never becomes valid: when it names its id and
    /// user it is acknowledged (given up) so it stops taking a slot of its
    /// user's queue; otherwise it can only be skipped. Returns whether it
    /// was given up.
    async fn give_up_malformed(&self, entry: &Value, field: &'static str) -> bool {
        let id = id_of(entry.get("notification_id"));
        let user = entry
            .get("user_id")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty());
        let (Some(id), Some(user)) = (id, user) else {
            tracing::warn!(
                field,
                "malformed delivery skipped: it names no notification_id or user_id to acknowledge"
            );
            return false;
        };
        match self.inner.backend.acknowledge(&id, user).await {
            Ok(()) => {
                tracing::error!(notification_id = %id, user_id = user, field, "malformed delivery given up");
                true
            }
            Err(e) => {
                tracing::warn!(notification_id = %id, field, error = %e, "malformed delivery skipped; acknowledging it failed");
                false
            }
        }
    }

    /// Delivers one user's deliveries in order; a failure that may pass
    /// stops the user's batch (or a request to stop does), a permanent one
    /// does not. Returns `(delivered, failed, given_up)`.
    async fn deliver_user(
        &self,
        list: Vec<Delivery>,
        stop: watch::Receiver<bool>,
    ) -> (usize, usize, usize) {
        let (mut delivered, mut failed, mut given_up) = (0, 0, 0);
        for d in list {
            if *stop.borrow() {
                break;
            }
            match self.deliver_one(&d).await {
                Outcome::Delivered => delivered += 1,
                Outcome::GivenUp => {
                    failed += 1;
                    given_up += 1;
                }
                Outcome::Failed { blocks } => {
                    failed += 1;
                    if blocks {
                        break;
                    }
                }
            }
        }
        (delivered, failed, given_up)
    }

    /// Delivers (or only acknowledges, when the daemon already accepted it)
    /// one delivery and decides what its failure means.
    async fn deliver_one(&self, d: &Delivery) -> Outcome {
        let id = &d.notification_id;
        let result = if self.take_unacked(id) {
            self.acknowledge(d).await
        } else {
            match self.send(d).await {
                Ok(()) => self.acknowledge(d).await,
                Err(e) => Err(e),
            }
        };
        let failure = match result {
            Ok(()) => {
                self.record(id, true);
                return Outcome::Delivered;
            }
            Err(f) => f,
        };
        let max = self.inner.config.max_attempts;
        let (stage, error, attempts, give_up, blocks) = match &failure {
            Failure::Acknowledge(e) => {
                // Delivered; only the acknowledgement is missing. Later
                // deliveries may go ahead: this one is not lost.
                self.remember_unacked(id);
                ("acknowledge", e, self.record(id, false), false, false)
            }
            Failure::Unauthorized(e) => ("send", e, self.failures_of(id), false, true),
            Failure::Permanent(e) => ("send", e, self.record(id, false), true, false),
            Failure::Transient(e) => {
                let n = self.record(id, false);
                ("send", e, n, n >= max, true)
            }
        };
        if give_up && self.acknowledge(d).await.is_ok() {
            self.record(id, true);
            tracing::error!(
                notification_id = %id,
                user_id = %d.user_id,
                attempts,
                error = %error,
                "delivery given up: acknowledged without a reply"
            );
            return Outcome::GivenUp;
        }
        tracing::warn!(
            notification_id = %id,
            user_id = %d.user_id,
            stage,
            attempts,
            error = %error,
            "delivery failed; retried next tick"
        );
        // A delivery that should have been given up but could not be
        // acknowledged (backend trouble) does not hold the user's others.
        Outcome::Failed {
            blocks: blocks && !give_up,
        }
    }

    /// Sends one delivery to the daemon; any 2xx is acceptance.
    async fn send(&self, d: &Delivery) -> Result<(), Failure> {
        let title = Some(self.inner.config.task_title.as_str()).filter(|t| !t.is_empty());
        let body = d.send_body(title);
        let mut req = self.inner.http.post(&self.inner.send_url).json(&body);
        if let Some(key) = &self.inner.config.daemon_api_key {
            req = req.header("X-Agent-Daemon-Key", key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Transient(format!("daemon unreachable: {}", describe(&e))))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str::<Value>(&text).ok();
        // A reply to this notification is already stored (an earlier send
        // whose acknowledgement was lost): it was delivered.
        if status == reqwest::StatusCode::CONFLICT
            && body
                .as_ref()
                .and_then(|v| v.get("code"))
                .and_then(Value::as_str)
                == Some("notification_already_answered")
        {
            return Ok(());
        }
        let error = body
            .as_ref()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(300).collect());
        let message = format!("daemon answered {status}: {error}");
        Err(match status.as_u16() {
            401 | 403 => Failure::Unauthorized(message),
            408 | 429 => Failure::Transient(message),
            400..=499 => Failure::Permanent(message),
            _ => Failure::Transient(message),
        })
    }

    async fn acknowledge(&self, d: &Delivery) -> Result<(), Failure> {
        self.inner
            .backend
            .acknowledge(&d.notification_id, &d.user_id)
            .await
            .map_err(|e| Failure::Acknowledge(e.to_string()))
    }

    fn remember_unacked(&self, id: &str) {
        let mut set = self
            .inner
            .unacked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if set.len() >= FAILURE_MEMORY_CAP {
            set.clear();
        }
        set.insert(id.to_owned());
    }

    fn take_unacked(&self, id: &str) -> bool {
        let mut set = self
            .inner
            .unacked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        !set.is_empty() && set.remove(id)
    }

    /// Updates the failure count of `id`; returns the consecutive failures.
    fn record(&self, id: &str, ok: bool) -> u32 {
        let mut map = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
        if map.is_empty()
            && self
                .inner
                .unacked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        {
            return;
        }
        let listed: Vec<String> = raw
            .iter()
            .filter_map(|v| Delivery::parse(v).ok())
            .map(|d| d.notification_id)
            .collect();
        map.retain(|id, _| listed.contains(id));
        drop(map);
        self.inner
            .unacked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id| listed.contains(id));
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
            given_up: 0,
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
            json!({"event":"dispatcher_tick","deliveries":3,"delivered":2,"failed":1,"given_up":0,"duration_sec":1.234})
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
