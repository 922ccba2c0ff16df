//! Per-tenant governance for Wombat: budgets in USD per day and month, rate
//! limits (requests and tokens per minute), per-user concurrency, and the
//! usage ledger shared by every replica.
//!
//! The state lives behind the small async [`Store`] trait, with two
//! implementations that pass the same test suite: [`MemoryStore`] (one
//! process, today's single-replica behaviour) and [`RedisStore`] (any
//! Redis-protocol server; every check-and-update is one server-side Lua
//! script, so replicas never race, and every key expires).
//!
//! [`Governor`] is what the daemon calls: it computes the budget periods in
//! the configured time zone, bounds every store call with a timeout, applies
//! the fail-open/fail-closed policy when the store is unreachable, and
//! counts admissions, refusals and reservations.
//!
//! Budgets work by reservation: before an LLM call the caller reserves an
//! estimate; a request is admitted while the settled spend plus the
//! reservations in flight is below the limit; after the call the real cost
//! is settled and the reservation released. Concurrent requests can thus
//! overshoot a budget by at most the reservations in flight.
//!
//! With a shared store, settlements leave the request path: the governor
//! queues them and one background task writes them in batches (see
//! `settler.rs`); a reservation holds until its settlement is written.
//!
//! With a shared store, admissions mostly leave it too: an admission takes
//! a *grant* of up to 64 requests of its size (at most 1/16 of the headroom
//! left under any limit, one near a limit; see [`grant_units`]), and the
//! replica admits the user's next requests from it locally for up to a
//! second, then gives back what is left ([`Governor::admit`]).

mod governor;
mod limits;
mod memory;
mod redis_store;
mod settler;
mod store;

pub use governor::{
    Admitted, BudgetWarning, Call, Estimate, FailMode, GRANT_TTL, GRANT_UNITS, Governor,
    GovernorConfig, GovernorMetrics, Refused,
};
pub use limits::{Limits, PeriodKind, Periods, RateKind};
pub use memory::MemoryStore;
pub use redis_store::RedisStore;
pub use store::{
    Admission, AdmitRequest, GRANT_SHARE, Refusal, SettleRequest, Settlement, Store, StoreError,
    UsageRecord, UsageSnapshot, UsageTotals, budget_headroom, grant_units,
};
