//! The [`Store`] trait: the few atomic operations governance needs, and the
//! usage ledger.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::limits::{Limits, PeriodKind, Periods, RateKind};

/// The store could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A Redis error (connection refused, reset, script error...).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The store did not answer within the configured timeout.
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answered something this version does not understand.
    #[error("unexpected store reply: {0}")]
    Protocol(String),
}

/// One admission check and, when it passes, one reservation: a *grant* of
/// up to [`AdmitRequest::units`] requests of this request's size, so that a
/// replica can admit the next ones locally (see [`grant_units`]).
#[derive(Debug, Clone)]
pub struct AdmitRequest<'a> {
    /// The user (`user_id`).
    pub user: &'a str,
    /// A unique id for this reservation (released by [`SettleRequest`]).
    pub lease: &'a str,
    /// How long the reservation holds if it is never settled (a replica
    /// that died mid-request): then it expires on its own.
    pub lease_ttl: Duration,
    /// The estimated cost to reserve, in micro-dollars.
    pub reserve_micros: u64,
    /// Tokens charged to the tokens-per-minute limit now (the prompt
    /// estimate); the rest is charged when settling.
    pub tokens: u64,
    /// How many requests of this size to admit at once (at least 1). The
    /// store grants fewer near a limit ([`grant_units`]); the lease then
    /// reserves `units × reserve_micros` and charges `units` requests and
    /// `units × tokens` tokens to the rates.
    pub units: u32,
    /// The limits that apply.
    pub limits: &'a Limits,
    /// The current periods.
    pub periods: &'a Periods,
    /// Seconds the day counter must live.
    pub day_ttl_secs: u64,
    /// Seconds the month counter must live.
    pub month_ttl_secs: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The user already has `limit` requests in flight.
    Concurrency {
        /// The limit.
        limit: u32,
    },
    /// The budget of a period is used up (settled plus reserved).
    Budget {
        /// Day or month.
        period: PeriodKind,
        /// The limit, micro-dollars.
        limit_micros: u64,
        /// Settled spend in the period, micro-dollars.
        spent_micros: u64,
        /// Reservations in flight, micro-dollars.
        reserved_micros: u64,
    },
    /// Over a rate.
    Rate {
        /// Which one.
        kind: RateKind,
        /// When a request would be admitted again.
        retry_after: Duration,
    },
}

/// What an admission check decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Admitted; the reservation is held. The figures are those at admission.
    Admitted {
        /// Settled spend of the day, micro-dollars.
        day_spent_micros: u64,
        /// Settled spend of the month, micro-dollars.
        month_spent_micros: u64,
        /// Reservations in flight for the user, this one included.
        reserved_micros: u64,
        /// Requests granted (1 ..= the units asked for).
        units: u32,
    },
    /// Refused; nothing was reserved or charged.
    Refused(Refusal),
}

/// Settles one request of a grant and, with [`SettleRequest::release`],
/// ends the grant.
#[derive(Debug, Clone)]
pub struct SettleRequest<'a> {
    /// The user.
    pub user: &'a str,
    /// The reservation's id.
    pub lease: &'a str,
    /// What the call really cost (0 when it consumed nothing).
    pub cost_micros: u64,
    /// Tokens really used minus those charged at admission (and, on
    /// release, minus the tokens of the unused units).
    pub token_delta: i64,
    /// The reservation taken off the lease when it is not released: the
    /// settled request's, plus the given-back requests'.
    pub unit_micros: u64,
    /// Whether this ends the grant: the lease is dropped.
    pub release: bool,
    /// Requests of the grant never used, given back to the
    /// requests-per-minute limit (their tokens are in `token_delta`).
    pub unused_units: u32,
    /// The requests-per-minute limit the grant was admitted under.
    pub rpm: Option<u32>,
    /// The tokens-per-minute limit the request was admitted under.
    pub tpm: Option<u64>,
    /// The periods the cost is counted in.
    pub periods: &'a Periods,
    /// Seconds the day counter must live.
    pub day_ttl_secs: u64,
    /// Seconds the month counter must live.
    pub month_ttl_secs: u64,
}

/// One LLM call for the usage ledger.
#[derive(Debug, Clone)]
pub struct UsageRecord<'a> {
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
    /// The day (`YYYY-MM-DD`, budget time zone) it counts in.
    pub day: &'a str,
}

/// One finished call: its settlement (when it was admitted under a limit)
/// and its usage-ledger record, as [`Store::settle_and_record`] takes them;
/// or a grant's release alone (no record).
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    /// The reservation to settle, if any.
    pub settle: Option<SettleRequest<'a>>,
    /// The call for the ledger (none for a release alone).
    pub record: Option<UsageRecord<'a>>,
}

/// Fraction of the headroom left under a limit that one grant may take:
/// a grant is at most 1/`GRANT_SHARE` of what is left.
pub const GRANT_SHARE: u64 = 16;

/// How many of `want` requests a store grants at once: at least one (the
/// request itself, admitted by the usual checks), and never more than
/// 1/[`GRANT_SHARE`] of the headroom left under any limit, counted in
/// requests of this size. So far from every limit a replica takes a slice
/// and admits the next requests without a round trip; near a limit grants
/// shrink to one request and every admission is checked in the store, as
/// if there were no grants. `headroom` gives, per limit that is set, what
/// is left and what one request takes of it (a request that takes nothing
/// is not bounded by that limit). A request that reserves nothing against
/// a budget (an unpriced model) must be granted alone, since its real cost
/// is not bounded by its estimate: [`budget_headroom`] says so.
pub fn grant_units(want: u32, headroom: &[(f64, f64)]) -> u32 {
    let mut n = f64::from(want.max(1));
    for &(left, per_request) in headroom {
        if per_request > 0.0 {
            n = n.min((left / (per_request * GRANT_SHARE as f64)).floor().max(1.0));
        }
    }
    // `n` is between 1 and `want`.
    n as u32
}

/// The [`grant_units`] entry of a budget with `left` micro-dollars left,
/// for requests that reserve `reserve` each: one that reserves nothing
/// counts as taking all that is left (granted alone).
pub fn budget_headroom(left: u64, reserve: u64) -> (f64, f64) {
    if reserve == 0 {
        (0.0, 1.0)
    } else {
        (left as f64, reserve as f64)
    }
}

/// Totals of a set of LLM calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Calls.
    pub requests: u64,
    /// Calls whose tokens are estimates.
    pub estimated: u64,
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Total tokens.
    pub total: u64,
    /// Cost, micro-dollars.
    pub cost_micros: u64,
}

impl UsageTotals {
    /// Adds one record.
    pub fn add(&mut self, r: &UsageRecord<'_>) {
        self.requests = self.requests.saturating_add(1);
        self.estimated = self.estimated.saturating_add(u64::from(r.estimated));
        self.input = self.input.saturating_add(r.input);
        self.output = self.output.saturating_add(r.output);
        self.total = self.total.saturating_add(r.total);
        self.cost_micros = self.cost_micros.saturating_add(r.cost_micros);
    }
}

/// The usage ledger, everything or one user's share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSnapshot {
    /// Totals.
    pub totals: UsageTotals,
    /// Per model.
    pub by_model: BTreeMap<String, UsageTotals>,
    /// Per user (only for the whole ledger).
    pub by_user: Option<BTreeMap<String, UsageTotals>>,
    /// Per day, for the days asked for that have any usage, oldest first.
    pub by_day: Vec<(String, UsageTotals)>,
}

/// Most distinct model names with their own ledger entry (names can come
/// from requests); later ones share `_other`.
pub const MAX_MODELS: u64 = 256;
/// Most distinct users with their own ledger entry; later ones share
/// `_other`.
pub const MAX_USERS: u64 = 100_000;
/// The shared bucket beyond [`MAX_MODELS`] / [`MAX_USERS`].
pub const OTHER: &str = "_other";

/// Where governance state lives. Every method is one atomic step in the
/// store: concurrent callers (on any replica) never lose an update.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks every limit and, if all pass, reserves and charges the rates.
    async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Admission, StoreError>;
    /// Adds the real cost to the periods, corrects the token charge, and
    /// releases the reservation.
    async fn settle(&self, req: &SettleRequest<'_>) -> Result<(), StoreError>;
    /// Adds one call to the usage ledger.
    async fn record(&self, rec: &UsageRecord<'_>) -> Result<(), StoreError>;
    /// [`Store::settle`] (when given) and [`Store::record`] of one finished
    /// call, in one step where the store can (one round trip to Redis).
    async fn settle_and_record(
        &self,
        settle: Option<&SettleRequest<'_>>,
        rec: &UsageRecord<'_>,
    ) -> Result<(), StoreError> {
        if let Some(s) = settle {
            self.settle(s).await?;
        }
        self.record(rec).await
    }
    /// [`Store::settle_and_record`] of many calls (or [`Store::settle`]
    /// alone, for entries without a record), in order, in as few steps as
    /// the store can (one round trip to Redis). Each settlement is atomic
    /// on its own; an error means some may not have been applied.
    async fn settle_many(&self, batch: &[Settlement<'_>]) -> Result<(), StoreError> {
        for s in batch {
            match (&s.settle, &s.record) {
                (settle, Some(rec)) => self.settle_and_record(settle.as_ref(), rec).await?,
                (Some(settle), None) => self.settle(settle).await?,
                (None, None) => {}
            }
        }
        Ok(())
    }
    /// The ledger (one user's share when `user` is given), with the series
    /// of `days`.
    async fn usage(&self, user: Option<&str>, days: &[String])
    -> Result<UsageSnapshot, StoreError>;
}
