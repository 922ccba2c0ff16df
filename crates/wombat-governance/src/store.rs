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

/// One admission check and, when it passes, one reservation.
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
    },
    /// Refused; nothing was reserved or charged.
    Refused(Refusal),
}

/// Settles (or releases) one reservation.
#[derive(Debug, Clone)]
pub struct SettleRequest<'a> {
    /// The user.
    pub user: &'a str,
    /// The reservation's id.
    pub lease: &'a str,
    /// What the call really cost (0 when it consumed nothing).
    pub cost_micros: u64,
    /// Tokens really used minus those charged at admission.
    pub token_delta: i64,
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
/// and its usage-ledger record, as [`Store::settle_and_record`] takes them.
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    /// The reservation to settle, if any.
    pub settle: Option<SettleRequest<'a>>,
    /// The call for the ledger.
    pub record: UsageRecord<'a>,
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
    /// [`Store::settle_and_record`] of many calls, in order, in as few
    /// steps as the store can (one round trip to Redis). Each settlement is
    /// atomic on its own; an error means some may not have been applied.
    async fn settle_many(&self, batch: &[Settlement<'_>]) -> Result<(), StoreError> {
        for s in batch {
            self.settle_and_record(s.settle.as_ref(), &s.record).await?;
        }
        Ok(())
    }
    /// The ledger (one user's share when `user` is given), with the series
    /// of `days`.
    async fn usage(&self, user: Option<&str>, days: &[String])
    -> Result<UsageSnapshot, StoreError>;
}
