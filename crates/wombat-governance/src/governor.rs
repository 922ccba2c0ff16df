//! [`Governor`]: what the daemon calls around each LLM call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::limits::{Limits, PeriodKind, Periods, RateKind};
use crate::memory::MemoryStore;
use crate::redis_store::RedisStore;
use crate::settler::{self, Job, LeaseSettle, Settler};
use crate::store::{
    Admission, AdmitRequest, Refusal, SettleRequest, Settlement, Store, StoreError, UsageSnapshot,
};

/// What to do when the store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Let the request through (logged, counted). The default: an outage of
    /// the store should not take the product down.
    #[default]
    Open,
    /// Refuse the request (503 `limits_unavailable`).
    Closed,
}

/// Settings of a [`Governor`].
#[derive(Debug, Clone)]
pub struct GovernorConfig {
    /// Limits of every user, unless a request brings its own.
    pub defaults: Limits,
    /// The zone of day and month boundaries.
    pub timezone: TimeZone,
    /// What a store failure means.
    pub on_store_error: FailMode,
    /// Bound of each store call.
    pub store_timeout: Duration,
    /// How long an unsettled reservation holds (the request deadline plus a
    /// margin): a replica that dies mid-request frees its reservations then.
    pub lease_ttl: Duration,
}

/// The estimate reserved before an LLM call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    /// Cost, micro-dollars: prompt tokens × input price + output cap ×
    /// output price.
    pub cost_micros: u64,
    /// Prompt tokens, charged to the tokens-per-minute limit now.
    pub prompt_tokens: u64,
}

impl Estimate {
    /// The estimate of a call to `model` with `prompt_tokens` in and at most
    /// `output_cap` out, from the one pricing table (an unpriced model
    /// reserves nothing: it costs nothing either).
    pub fn of_call(
        pricing: &wombat_core::PricingTable,
        model: &str,
        prompt_tokens: u64,
        output_cap: u64,
    ) -> Self {
        let cost = pricing.cost(model, &wombat_core::Usage::new(prompt_tokens, output_cap));
        Self {
            cost_micros: cost.total_micros(),
            prompt_tokens,
        }
    }
}

/// A soft-limit warning carried by the response, webhook and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetWarning {
    /// The period whose budget is nearly used.
    pub period: PeriodKind,
    /// Its limit, micro-dollars.
    pub limit_micros: u64,
    /// Settled spend plus reservations in flight (this one included).
    pub spent_micros: u64,
    /// The threshold crossed, percent.
    pub soft_percent: f64,
    /// When the period ends.
    pub resets_at: Timestamp,
}

/// Why a request may not call the LLM.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// A hard budget is used up.
    Budget {
        /// Day or month.
        period: PeriodKind,
        /// The limit, micro-dollars.
        limit_micros: u64,
        /// Settled spend, micro-dollars.
        spent_micros: u64,
        /// Reservations in flight, micro-dollars.
        reserved_micros: u64,
        /// When the period ends.
        resets_at: Timestamp,
    },
    /// Over a rate; retry after the given time.
    Rate {
        /// Which rate.
        kind: RateKind,
        /// When to retry.
        retry_after: Duration,
    },
    /// Too many requests of this user in flight.
    Concurrency {
        /// The limit.
        limit: u32,
    },
    /// The store is unreachable and the policy is fail-closed.
    Unavailable,
}

/// An admitted request: the reservation to settle after the LLM call.
#[derive(Debug)]
#[must_use = "settle the reservation after the LLM call"]
pub struct Admitted {
    lease: Option<Arc<Grant>>,
    /// The soft-limit warning, when a threshold is crossed.
    pub warning: Option<BudgetWarning>,
}

/// Most requests one grant covers (see [`Governor::admit`]).
pub const GRANT_UNITS: u32 = 64;
/// How long a replica admits from a grant; then what is left of it is
/// given back (by the next admission of the user, or the background
/// writer's sweep within another [`GRANT_TTL`]).
pub const GRANT_TTL: Duration = Duration::from_secs(1);
/// Most users with a grant held at once by one replica; past it, new
/// users' admissions take one request at a time.
const MAX_GRANTS: usize = 10_000;

/// A reservation in the store: `units` requests of one size (one, without
/// grants), admitted one by one.
#[derive(Debug)]
pub(crate) struct Grant {
    id: String,
    user: String,
    limits: Limits,
    /// Prompt tokens charged per request.
    unit_tokens: u64,
    /// Micro-dollars reserved per request.
    unit_micros: u64,
    /// Until when requests may be admitted from it.
    expires: Instant,
    /// The warning of the admission that took the grant (its figures count
    /// the whole grant as reserved: this replica's own use never makes it
    /// late; other replicas' spend since is seen at the next grant).
    warning: Option<BudgetWarning>,
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    /// Requests not handed out yet.
    left: u32,
    /// Handed out and not settled yet.
    in_flight: u32,
    /// No more requests are handed out.
    retired: bool,
    /// The release (the lease dropped, unused requests given back) is on
    /// its way: it happens once.
    released: bool,
}

impl Grant {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One request of the grant is settled: whether that ends the grant,
    /// and how many requests it leaves unused.
    fn settle_one(&self) -> (bool, u32) {
        let mut c = self.counts();
        c.in_flight = c.in_flight.saturating_sub(1);
        c.release_if_done()
    }

    /// No more requests from it: whether it can be released now (nothing
    /// in flight), and how many requests it leaves unused. With calls still
    /// in flight the unused requests are given back now all the same (the
    /// lease stays for those calls, released by the last one's settlement).
    fn retire(&self) -> (bool, u32) {
        let mut c = self.counts();
        c.retired = true;
        match c.release_if_done() {
            (false, _) => (false, std::mem::take(&mut c.left)),
            due => due,
        }
    }
}

impl Counts {
    fn release_if_done(&mut self) -> (bool, u32) {
        if self.retired && self.in_flight == 0 && !self.released {
            self.released = true;
            (true, std::mem::take(&mut self.left))
        } else {
            (false, 0)
        }
    }
}

/// Counters for `/metrics` (per replica).
#[derive(Debug, Default)]
pub struct GovernorMetrics {
    /// Requests admitted (including those let through by fail-open).
    pub admitted: AtomicU64,
    /// Refused: budget used up.
    pub rejected_budget: AtomicU64,
    /// Refused: requests per minute.
    pub rejected_rpm: AtomicU64,
    /// Refused: tokens per minute.
    pub rejected_tpm: AtomicU64,
    /// Refused: per-user concurrency.
    pub rejected_concurrency: AtomicU64,
    /// Refused: store unreachable, fail-closed.
    pub rejected_unavailable: AtomicU64,
    /// Store calls that failed or timed out.
    pub store_errors: AtomicU64,
    /// Requests let through while the store was unreachable.
    pub fail_open: AtomicU64,
    /// Responses that carried a budget warning.
    pub warnings: AtomicU64,
    /// Sum of the estimates reserved, micro-dollars.
    pub reserved_micros: AtomicU64,
    /// Sum of the real costs settled, micro-dollars.
    pub settled_micros: AtomicU64,
    /// Finished calls handed to the background writer (shared store).
    pub settle_queued: AtomicU64,
    /// Finished calls settled on the request path because the background
    /// queue was full (shared store).
    pub settle_inline: AtomicU64,
    /// Requests admitted from a grant this replica held, without a store
    /// round trip (shared store; included in `admitted`).
    pub admitted_local: AtomicU64,
}

/// Budgets, rates and concurrency per user, and the shared usage ledger.
pub struct Governor {
    core: Arc<Core>,
    shared: bool,
    config: GovernorConfig,
    /// With a shared store: the background writer of settlements.
    settler: Option<Arc<Settler>>,
}

/// What the governor shares with its background writer.
pub(crate) struct Core {
    store: Arc<dyn Store>,
    store_timeout: Duration,
    metrics: GovernorMetrics,
    /// Seconds (Unix) of the last store-error log line.
    last_error_log: AtomicU64,
    /// The grant each user's next requests are admitted from (shared store).
    grants: Mutex<HashMap<String, Arc<Grant>>>,
    timezone: TimeZone,
}

impl Drop for Governor {
    fn drop(&mut self) {
        if let Some(s) = &self.settler {
            s.close();
        }
    }
}

/// At most one store-error log line per this many seconds.
const ERROR_LOG_EVERY_SECS: u64 = 10;

impl Governor {
    /// A governor over `store`; `shared` says whether the store is shared
    /// by replicas (then `/usage` should come from it).
    ///
    /// With a shared store, finished calls are settled and recorded by a
    /// background task (spawned on first use, on the caller's runtime), in
    /// batches; see [`Governor::settle_and_record`].
    pub fn new(store: Arc<dyn Store>, shared: bool, config: GovernorConfig) -> Self {
        Self {
            core: Arc::new(Core {
                store,
                store_timeout: config.store_timeout,
                metrics: GovernorMetrics::default(),
                last_error_log: AtomicU64::new(0),
                grants: Mutex::new(HashMap::new()),
                timezone: config.timezone.clone(),
            }),
            shared,
            config,
            settler: shared.then(|| Arc::new(Settler::new(settler::CAPACITY))),
        }
    }

    /// The same governor with room for `capacity` settlements in the
    /// background queue (default 8192); past it, finished calls settle on
    /// the request path. Takes effect only before the first call.
    #[must_use]
    pub fn with_settle_queue(mut self, capacity: usize) -> Self {
        if self.settler.is_some() {
            self.settler = Some(Arc::new(Settler::new(capacity)));
        }
        self
    }

    /// In this process only.
    pub fn memory(config: GovernorConfig) -> Self {
        Self::new(Arc::new(MemoryStore::new()), false, config)
    }

    /// On the Redis server at `url` (connected lazily).
    pub fn redis(url: &str, config: GovernorConfig) -> Result<Self, StoreError> {
        Ok(Self::new(Arc::new(RedisStore::new(url)?), true, config))
    }

    /// The configured defaults.
    pub fn defaults(&self) -> &Limits {
        &self.config.defaults
    }

    /// Whether the store is shared by replicas.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The counters.
    pub fn metrics(&self) -> &GovernorMetrics {
        &self.core.metrics
    }

    /// The current periods.
    pub fn periods(&self) -> Periods {
        Periods::at(Timestamp::now(), &self.config.timezone)
    }

    /// Waits until the settlements this replica queued so far are written
    /// (or failed), at most `bound`; whether they all were. Call it on
    /// shutdown, after the last request finished, so that no settlement is
    /// left in memory. Without a shared store there is never anything to
    /// wait for.
    pub async fn flush(&self, bound: Duration) -> bool {
        let Some(s) = &self.settler else {
            return true;
        };
        // The grants held go back first.
        let released = self.core.retire_grants(|_| true);
        if !released.is_empty() {
            for job in released {
                if let Some(job) = s.push(&self.core, job) {
                    self.core
                        .settle_jobs(std::slice::from_ref(&job), "releasing a grant")
                        .await;
                }
            }
        }
        let flushed = s.flush(bound).await;
        if !flushed {
            tracing::error!(
                left = s.backlog(),
                "governance settlements not written within {bound:?}; their reservations expire with their leases"
            );
        }
        flushed
    }
}

impl Core {
    async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = match tokio::time::timeout(self.store_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.store_timeout)),
        };
        if let Err(e) = &result {
            self.metrics.store_errors.fetch_add(1, Relaxed);
            let now = Timestamp::now().as_second().unsigned_abs();
            let last = self.last_error_log.load(Relaxed);
            if now >= last + ERROR_LOG_EVERY_SECS
                && self
                    .last_error_log
                    .compare_exchange(last, now, Relaxed, Relaxed)
                    .is_ok()
            {
                tracing::error!(
                    error = %e,
                    during = what,
                    "governance store failed; requests follow WOMBAT_LIMITS_ON_STORE_ERROR (logged at most every 10 s)"
                );
            }
        }
        result
    }

    /// Settles and records `jobs` in one store step. A failure is logged
    /// and counted; the reservations then expire with their leases.
    pub(crate) async fn settle_jobs(&self, jobs: &[Job], what: &str) {
        let batch: Vec<Settlement<'_>> = jobs.iter().map(Job::view).collect();
        let _ = self.call(what, self.store.settle_many(&batch)).await;
    }

    fn grants(&self) -> MutexGuard<'_, HashMap<String, Arc<Grant>>> {
        // Plain data, each update complete: a panic elsewhere cannot leave
        // it half-updated.
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether any grant is held.
    pub(crate) fn holds_grants(&self) -> bool {
        !self.grants().is_empty()
    }

    /// One request for `user` under `limits` from the grant held, when it
    /// has one left that fits `estimate`.
    fn take_local(&self, user: &str, limits: &Limits, estimate: &Estimate) -> Option<Arc<Grant>> {
        let mut grants = self.grants();
        let g = grants.get(user)?;
        if g.limits != *limits
            || estimate.prompt_tokens > g.unit_tokens
            || estimate.cost_micros > g.unit_micros
            || Instant::now() >= g.expires
        {
            return None;
        }
        let mut c = g.counts();
        if c.retired || c.left == 0 {
            return None;
        }
        c.left -= 1;
        c.in_flight += 1;
        let last = c.left == 0;
        c.retired |= last;
        drop(c);
        let g = g.clone();
        if last {
            grants.remove(user);
        }
        Some(g)
    }

    /// Whether a grant for `user` could be held (the map has room, or holds
    /// one of theirs): if not, admissions take one request at a time.
    fn may_hold(&self, user: &str) -> bool {
        let grants = self.grants();
        grants.len() < MAX_GRANTS || grants.contains_key(user)
    }

    /// Holds `grant` for its user's next requests (retiring the one held
    /// before): what the retired one gives back now, if anything.
    fn hold(&self, grant: &Arc<Grant>) -> Option<Job> {
        let mut grants = self.grants();
        if grants.len() >= MAX_GRANTS && !grants.contains_key(&grant.user) {
            drop(grants);
            // Not held (the map filled up since `may_hold`): what it has
            // left goes back now.
            return self.release_job(grant, grant.retire());
        }
        let old = grants.insert(grant.user.clone(), grant.clone())?;
        drop(grants);
        self.release_job(&old, old.retire())
    }

    /// Retires the grants `which` selects: the releases due now.
    pub(crate) fn retire_grants(&self, which: impl Fn(&Grant) -> bool) -> Vec<Job> {
        let retired: Vec<Arc<Grant>> = {
            let mut grants = self.grants();
            let mut out = Vec::new();
            grants.retain(|_, g| {
                if which(g) {
                    out.push(g.clone());
                    false
                } else {
                    true
                }
            });
            out
        };
        retired
            .iter()
            .filter_map(|g| self.release_job(g, g.retire()))
            .collect()
    }

    /// Retires the grants past their time: the releases due now.
    pub(crate) fn sweep_grants(&self) -> Vec<Job> {
        let now = Instant::now();
        self.retire_grants(|g| now >= g.expires)
    }

    /// What `grant` gives back per `(due, unused)`: the release (the lease
    /// dropped) when due, and the `unused` requests (their reservation and
    /// rate charges) either way; nothing when there is neither.
    fn release_job(&self, grant: &Grant, (due, unused): (bool, u32)) -> Option<Job> {
        (due || unused > 0).then(|| {
            self.lease_job(LeaseSettle {
                user: grant.user.clone(),
                id: grant.id.clone(),
                cost_micros: 0,
                token_delta: token_delta(0, grant.unit_tokens.saturating_mul(u64::from(unused))),
                unit_micros: grant.unit_micros.saturating_mul(u64::from(unused)),
                release: due,
                unused_units: unused,
                rpm: grant.limits.rpm,
                tpm: grant.limits.tpm,
            })
        })
    }

    /// A queued settlement of `lease` alone (no ledger record), in the
    /// current periods.
    fn lease_job(&self, lease: LeaseSettle) -> Job {
        let now = Timestamp::now();
        let periods = Periods::at(now, &self.timezone);
        Job {
            lease: Some(lease),
            record: false,
            user: String::new(),
            model: String::new(),
            input: 0,
            output: 0,
            total: 0,
            cost_micros: 0,
            estimated: false,
            day_ttl_secs: periods.ttl_secs(PeriodKind::Day, now),
            month_ttl_secs: periods.ttl_secs(PeriodKind::Month, now),
            periods,
        }
    }
}

impl Governor {
    async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.core.call(what, f).await
    }

    /// Checks `limits` for `user` and reserves `estimate`. Refusals reserve
    /// nothing. With the store unreachable: admitted without a reservation
    /// (fail-open) or [`Refused::Unavailable`] (fail-closed).
    ///
    /// With a shared store and no concurrency limit, an admission takes a
    /// *grant*: the store admits up to [`GRANT_UNITS`] requests of this
    /// one's size at once (never more than 1/16 of what is left under any
    /// limit; one near a limit), each counted against the rates and the
    /// budget as if admitted then. The user's next requests on this replica
    /// are admitted from it without a round trip while they fit its size
    /// and limits, for at most [`GRANT_TTL`]; what is left then goes back
    /// to the store. The overshoot bound is unchanged: a grant is a
    /// reservation, so spend stays within the budget plus the reservations
    /// held. What it costs: other replicas see up to 1/16 of a user's
    /// headroom taken by this one until it is used or given back, so they
    /// may refuse a little early (never late). A user under a concurrency
    /// limit is admitted one request at a time, as is every user without a
    /// shared store.
    pub async fn admit(
        &self,
        user: &str,
        limits: &Limits,
        estimate: Estimate,
    ) -> Result<Admitted, Refused> {
        let m = &self.core.metrics;
        let grants = self.shared && limits.concurrency.is_none();
        if grants && let Some(g) = self.core.take_local(user, limits, &estimate) {
            m.admitted.fetch_add(1, Relaxed);
            m.admitted_local.fetch_add(1, Relaxed);
            m.reserved_micros.fetch_add(g.unit_micros, Relaxed);
            return Ok(Admitted {
                warning: g.warning.clone(),
                lease: Some(g),
            });
        }
        if limits.concurrency.is_some()
            && let Some(s) = &self.settler
            && s.pending()
        {
            // The slots of this replica's finished calls are released by
            // queued settlements: let them reach the store first, so that
            // a user who waits for one reply before sending the next is
            // never refused for a call that has ended. Bounded like any
            // store call; past it the admission goes ahead.
            s.flush(self.config.store_timeout).await;
        }
        // A grant's requests are sized with room to grow (a conversation's
        // prompt grows by a message each time), so the next ones still fit.
        // Past MAX_GRANTS users, one request at a time.
        let grants = grants && self.core.may_hold(user);
        let (units, unit) = if grants {
            (
                GRANT_UNITS,
                Estimate {
                    cost_micros: estimate
                        .cost_micros
                        .saturating_add(estimate.cost_micros / 2),
                    prompt_tokens: estimate
                        .prompt_tokens
                        .saturating_add(estimate.prompt_tokens / 2),
                },
            )
        } else {
            (1, estimate)
        };
        let now = Timestamp::now();
        let periods = Periods::at(now, &self.config.timezone);
        let lease = lease_id();
        let req = AdmitRequest {
            user,
            lease: &lease,
            // A grant's last request may start just before it expires.
            lease_ttl: self.config.lease_ttl + if grants { GRANT_TTL } else { Duration::ZERO },
            reserve_micros: unit.cost_micros,
            tokens: unit.prompt_tokens,
            units,
            limits,
            periods: &periods,
            day_ttl_secs: periods.ttl_secs(PeriodKind::Day, now),
            month_ttl_secs: periods.ttl_secs(PeriodKind::Month, now),
        };
        match self
            .call("admitting a request", self.core.store.admit(&req))
            .await
        {
            Ok(Admission::Admitted {
                day_spent_micros,
                month_spent_micros,
                reserved_micros,
                units,
            }) => {
                m.admitted.fetch_add(1, Relaxed);
                m.reserved_micros.fetch_add(unit.cost_micros, Relaxed);
                let warning = limits.soft_percent.and_then(|pct| {
                    [
                        (
                            PeriodKind::Day,
                            limits.budget_day_micros,
                            day_spent_micros,
                            periods.day_resets_at,
                        ),
                        (
                            PeriodKind::Month,
                            limits.budget_month_micros,
                            month_spent_micros,
                            periods.month_resets_at,
                        ),
                    ]
                    .into_iter()
                    .find_map(|(period, limit, spent, resets_at)| {
                        let limit = limit?;
                        let spent = spent.saturating_add(reserved_micros);
                        (spent as f64 * 100.0 >= pct * limit as f64).then_some(BudgetWarning {
                            period,
                            limit_micros: limit,
                            spent_micros: spent,
                            soft_percent: pct,
                            resets_at,
                        })
                    })
                });
                if warning.is_some() {
                    m.warnings.fetch_add(1, Relaxed);
                }
                let units = units.max(1);
                let grant = Arc::new(Grant {
                    id: lease,
                    user: user.to_owned(),
                    limits: *limits,
                    unit_tokens: unit.prompt_tokens,
                    unit_micros: unit.cost_micros,
                    expires: Instant::now() + GRANT_TTL,
                    warning: warning.clone(),
                    counts: Mutex::new(Counts {
                        left: units - 1,
                        in_flight: 1,
                        retired: units == 1,
                        released: false,
                    }),
                });
                if units > 1 {
                    let job = self.core.hold(&grant);
                    if let Some(s) = &self.settler {
                        // The worker sweeps held grants: make sure it runs.
                        s.start(&self.core);
                    }
                    if let Some(job) = job {
                        self.release(job).await;
                    }
                }
                Ok(Admitted {
                    lease: Some(grant),
                    warning,
                })
            }
            Ok(Admission::Refused(r)) => Err(match r {
                Refusal::Concurrency { limit } => {
                    m.rejected_concurrency.fetch_add(1, Relaxed);
                    Refused::Concurrency { limit }
                }
                Refusal::Budget {
                    period,
                    limit_micros,
                    spent_micros,
                    reserved_micros,
                } => {
                    m.rejected_budget.fetch_add(1, Relaxed);
                    Refused::Budget {
                        period,
                        limit_micros,
                        spent_micros,
                        reserved_micros,
                        resets_at: match period {
                            PeriodKind::Day => periods.day_resets_at,
                            PeriodKind::Month => periods.month_resets_at,
                        },
                    }
                }
                Refusal::Rate { kind, retry_after } => {
                    match kind {
                        RateKind::Requests => &m.rejected_rpm,
                        RateKind::Tokens => &m.rejected_tpm,
                    }
                    .fetch_add(1, Relaxed);
                    Refused::Rate { kind, retry_after }
                }
            }),
            Err(_) => match self.config.on_store_error {
                FailMode::Open => {
                    m.admitted.fetch_add(1, Relaxed);
                    m.fail_open.fetch_add(1, Relaxed);
                    Ok(Admitted {
                        lease: None,
                        warning: None,
                    })
                }
                FailMode::Closed => {
                    m.rejected_unavailable.fetch_add(1, Relaxed);
                    Err(Refused::Unavailable)
                }
            },
        }
    }

    /// Queues (or, when the queue cannot take it, writes) a grant's release.
    async fn release(&self, job: Job) {
        let job = match &self.settler {
            Some(s) => match s.push(&self.core, job) {
                None => return,
                Some(job) => job,
            },
            None => job,
        };
        self.core
            .settle_jobs(std::slice::from_ref(&job), "releasing a grant")
            .await;
    }

    /// Settles an admitted request: adds `cost_micros` (what the call really
    /// cost; 0 when it failed before consuming anything) to the budgets,
    /// corrects the token charge by `tokens_used`, and releases the
    /// reservation. A store failure is logged and counted; the reservation
    /// then expires with its lease.
    ///
    /// With a shared store the settlement goes through the background queue
    /// like [`Governor::settle_and_record`]'s (without a ledger record), so
    /// it never overtakes the settlements queued before it, and this waits
    /// (bounded by the store timeout) until the queue is written that far.
    pub async fn settle(&self, admitted: Admitted, cost_micros: u64, tokens_used: u64) {
        let Some(grant) = admitted.lease else {
            return;
        };
        self.core
            .metrics
            .settled_micros
            .fetch_add(cost_micros, Relaxed);
        if let Some(settler) = self.settler.as_ref().filter(|_| self.shared) {
            let job = self
                .core
                .lease_job(lease_settle(&grant, cost_micros, tokens_used));
            match settler.push(&self.core, job) {
                // Written when this returns, as without a queue (bounded).
                None => {
                    settler.flush(self.config.store_timeout).await;
                }
                Some(job) => {
                    self.core
                        .settle_jobs(std::slice::from_ref(&job), "settling a request")
                        .await;
                }
            }
            return;
        }
        let now = Timestamp::now();
        let periods = Periods::at(now, &self.config.timezone);
        let req = settle_request(&grant, cost_micros, tokens_used, &periods, now);
        let _ = self
            .call("settling a request", self.core.store.settle(&req))
            .await;
    }

    /// Settles `admitted` (when given) with the real figures of `call` and,
    /// with a shared store, adds the call to its usage ledger, in one store
    /// step. Failures are logged and counted.
    ///
    /// With a shared store the step is queued and written in the background
    /// (batched with other calls'), so this returns without a round trip;
    /// the reservation is held until it is written. A full queue settles
    /// inline, counted by `settle_inline`.
    pub async fn settle_and_record(&self, admitted: Option<Admitted>, call: &Call<'_>) {
        let tokens = call.input.saturating_add(call.output);
        let Some(settler) = self.settler.as_ref().filter(|_| self.shared) else {
            if let Some(a) = admitted {
                self.settle(a, call.cost_micros, tokens).await;
            }
            return;
        };
        let now = Timestamp::now();
        let periods = Periods::at(now, &self.config.timezone);
        let m = &self.core.metrics;
        let lease = admitted.and_then(|a| a.lease).map(|g| {
            m.settled_micros.fetch_add(call.cost_micros, Relaxed);
            lease_settle(&g, call.cost_micros, tokens)
        });
        let job = Job {
            lease,
            record: true,
            user: call.user.to_owned(),
            model: call.model.to_owned(),
            input: call.input,
            output: call.output,
            total: call.total,
            cost_micros: call.cost_micros,
            estimated: call.estimated,
            day_ttl_secs: periods.ttl_secs(PeriodKind::Day, now),
            month_ttl_secs: periods.ttl_secs(PeriodKind::Month, now),
            periods,
        };
        match settler.push(&self.core, job) {
            None => {
                m.settle_queued.fetch_add(1, Relaxed);
            }
            Some(job) => {
                m.settle_inline.fetch_add(1, Relaxed);
                self.core
                    .settle_jobs(std::slice::from_ref(&job), "settling and recording a call")
                    .await;
            }
        }
    }

    /// The ledger with the series of the last `days` days (budget time zone).
    pub async fn usage(&self, user: Option<&str>, days: u16) -> Result<UsageSnapshot, StoreError> {
        let today = Timestamp::now()
            .to_zoned_datetime(self.config.timezone.clone())
            .date();
        let mut series = Vec::with_capacity(usize::from(days));
        let mut d = today;
        for _ in 0..days {
            series.push(d.strftime("%Y-%m-%d").to_string());
            match d.yesterday() {
                Ok(y) => d = y,
                Err(_) => break,
            }
        }
        series.reverse();
        // This replica's own finished calls are in the answer.
        if let Some(s) = &self.settler {
            s.flush(self.config.store_timeout).await;
        }
        self.call("reading usage", self.core.store.usage(user, &series))
            .await
    }
}

/// The settlement of one request of `grant`: its real cost and tokens and,
/// when it is the grant's last, the release.
fn lease_settle(grant: &Grant, cost_micros: u64, tokens_used: u64) -> LeaseSettle {
    let (release, unused) = grant.settle_one();
    let charged = grant.unit_tokens.saturating_mul(1 + u64::from(unused));
    LeaseSettle {
        user: grant.user.clone(),
        id: grant.id.clone(),
        cost_micros,
        token_delta: token_delta(tokens_used, charged),
        unit_micros: grant.unit_micros.saturating_mul(1 + u64::from(unused)),
        release,
        unused_units: unused,
        rpm: grant.limits.rpm,
        tpm: grant.limits.tpm,
    }
}

/// The settlement of one request of `grant` at `now`.
fn settle_request<'a>(
    grant: &'a Grant,
    cost_micros: u64,
    tokens_used: u64,
    periods: &'a Periods,
    now: Timestamp,
) -> SettleRequest<'a> {
    let (release, unused) = grant.settle_one();
    SettleRequest {
        user: &grant.user,
        lease: &grant.id,
        cost_micros,
        token_delta: token_delta(
            tokens_used,
            grant.unit_tokens.saturating_mul(1 + u64::from(unused)),
        ),
        unit_micros: grant.unit_micros.saturating_mul(1 + u64::from(unused)),
        release,
        unused_units: unused,
        rpm: grant.limits.rpm,
        tpm: grant.limits.tpm,
        periods,
        day_ttl_secs: periods.ttl_secs(PeriodKind::Day, now),
        month_ttl_secs: periods.ttl_secs(PeriodKind::Month, now),
    }
}

/// Tokens really used minus those charged at admission.
fn token_delta(tokens_used: u64, charged: u64) -> i64 {
    i64::try_from(tokens_used)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(charged).unwrap_or(i64::MAX))
}

/// One finished LLM call: what it used and cost.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The user.
    pub user: &'a str,
    /// The model that answered.
    pub model: &'a str,
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Total tokens.
    pub total: u64,
    /// Cost, micro-dollars.
    pub cost_micros: u64,
    /// Whether the tokens are an estimate (an abandoned stream).
    pub estimated: bool,
}

/// A unique lease id: time, process and a counter (no RNG dependency).
fn lease_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Relaxed);
    let t = Timestamp::now().as_nanosecond();
    format!("{:x}-{:x}-{n:x}", std::process::id(), t)
}
