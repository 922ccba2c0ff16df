//! [`MemoryStore`]: governance state of one process (today's single-replica
//! behaviour), under one mutex. Same semantics as the Redis store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{PeriodKind, RateKind};
use crate::store::{
    Admission, AdmitRequest, MAX_MODELS, MAX_USERS, OTHER, Refusal, SettleRequest, Store,
    StoreError, UsageRecord, UsageSnapshot, UsageTotals, budget_headroom, grant_units,
};

/// The rate window: limits are per minute.
const WINDOW_MS: f64 = 60_000.0;

/// Users with limit state beyond which idle entries are swept.
const SWEEP_AT: usize = 100_000;

#[derive(Default)]
struct UserState {
    /// Lease id → (expiry in ms since start, reserved micros).
    leases: HashMap<String, (f64, u64)>,
    day: (String, u64),
    month: (String, u64),
    /// Leaky buckets (requests, tokens): level and when it was measured.
    rpm: Bucket,
    tpm: Bucket,
}

/// A level that drains at `limit` per minute. The level is kept, not the
/// rate, so a tenant whose plan changes is judged by what it really used.
#[derive(Default, Clone, Copy)]
struct Bucket {
    level: f64,
    at: f64,
}

impl Bucket {
    fn level(&self, now: f64, limit: f64) -> f64 {
        (self.level - (now - self.at).max(0.0) * limit / WINDOW_MS).max(0.0)
    }

    /// Whether the bucket may be forgotten by the sweep: empty, or idle for
    /// ten minutes (at any realistic limit it has drained by then; at an
    /// absurdly low one, forgetting it only forgives a little).
    fn empty(&self, now: f64) -> bool {
        self.level <= 0.0 || now - self.at > 10.0 * WINDOW_MS
    }
}

impl UserState {
    fn purge(&mut self, now: f64) {
        self.leases.retain(|_, (expires, _)| *expires > now);
    }

    fn spent(&self, kind: PeriodKind, key: &str) -> u64 {
        let (k, v) = match kind {
            PeriodKind::Day => &self.day,
            PeriodKind::Month => &self.month,
        };
        if k == key { *v } else { 0 }
    }

    fn idle(&self, now: f64) -> bool {
        self.leases.is_empty() && self.rpm.empty(now) && self.tpm.empty(now)
    }
}

#[derive(Default)]
struct Ledger {
    all: UsageTotals,
    by_model: BTreeMap<String, UsageTotals>,
    by_user: HashMap<String, (UsageTotals, BTreeMap<String, UsageTotals>)>,
    by_day: BTreeMap<String, UsageTotals>,
    by_user_day: HashMap<(String, String), UsageTotals>,
}

#[derive(Default)]
struct State {
    users: HashMap<String, UserState>,
    ledger: Ledger,
    /// When idle users were last swept (ms since start).
    last_sweep: f64,
}

/// Governance state in this process only.
pub struct MemoryStore {
    started: Instant,
    state: Mutex<State>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update below completes or leaves the state as it was.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn retry(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(1.0) / 1000.0)
}

/// The entry for `key`, or the shared `_other` one once `map` holds `limit`.
fn bounded<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str, limit: u64) -> &'m mut V {
    let key = if map.contains_key(key) || (map.len() as u64) < limit {
        key
    } else {
        OTHER
    };
    map.entry(key.to_owned()).or_default()
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn admit(&self, req: &AdmitRequest<'_>) -> Result<Admission, StoreError> {
        let now = self.now_ms();
        let mut state = self.lock();
        // At most once a minute: with many active users a sweep per new
        // user would make every admission O(users).
        if state.users.len() >= SWEEP_AT
            && now - state.last_sweep > WINDOW_MS
            && !state.users.contains_key(req.user)
        {
            state.last_sweep = now;
            let (day, month) = (&req.periods.day, &req.periods.month);
            state.users.retain(|_, u| {
                u.purge(now);
                !(u.idle(now) && u.day.0 != *day && u.month.0 != *month)
            });
        }
        let user = state.users.entry(req.user.to_owned()).or_default();
        user.purge(now);
        let limits = req.limits;
        if let Some(limit) = limits.concurrency {
            if user.leases.len() >= limit as usize {
                return Ok(Admission::Refused(Refusal::Concurrency { limit }));
            }
        }
        let reserved: u64 = user.leases.values().map(|(_, r)| *r).sum();
        let day_spent = user.spent(PeriodKind::Day, &req.periods.day);
        let month_spent = user.spent(PeriodKind::Month, &req.periods.month);
        for (period, limit, spent) in [
            (PeriodKind::Day, limits.budget_day_micros, day_spent),
            (PeriodKind::Month, limits.budget_month_micros, month_spent),
        ] {
            if let Some(limit) = limit {
                if spent.saturating_add(reserved) >= limit {
                    return Ok(Admission::Refused(Refusal::Budget {
                        period,
                        limit_micros: limit,
                        spent_micros: spent,
                        reserved_micros: reserved,
                    }));
                }
            }
        }
        // What is left under each limit, and what one request takes of it.
        let mut headroom = [(0.0, 0.0); 4];
        for (slot, limit, spent) in [
            (0, limits.budget_day_micros, day_spent),
            (1, limits.budget_month_micros, month_spent),
        ] {
            if let Some(limit) = limit {
                let left = limit.saturating_sub(spent.saturating_add(reserved));
                headroom[slot] = budget_headroom(left, req.reserve_micros);
            }
        }
        let mut rpm_level = None;
        if let Some(limit) = limits.rpm.filter(|r| *r > 0).map(f64::from) {
            let level = user.rpm.level(now, limit);
            if level + 1.0 > limit {
                return Ok(Admission::Refused(Refusal::Rate {
                    kind: RateKind::Requests,
                    retry_after: retry((level + 1.0 - limit) * WINDOW_MS / limit),
                }));
            }
            headroom[2] = (limit - level, 1.0);
            rpm_level = Some(level);
        }
        let mut tpm_level = None;
        if let Some(limit) = limits.tpm.filter(|t| *t > 0).map(|t| t as f64) {
            let level = user.tpm.level(now, limit);
            if level >= limit {
                return Ok(Admission::Refused(Refusal::Rate {
                    kind: RateKind::Tokens,
                    retry_after: retry((level - limit + 1.0) * WINDOW_MS / limit),
                }));
            }
            headroom[3] = (limit - level, req.tokens as f64);
            tpm_level = Some(level);
        }
        // A concurrency limit counts leases: one request per lease.
        let units = if limits.concurrency.is_some() {
            1
        } else {
            grant_units(req.units, &headroom)
        };
        let n = f64::from(units);
        if let Some(level) = rpm_level {
            user.rpm = Bucket {
                level: level + n,
                at: now,
            };
        }
        if let Some(level) = tpm_level {
            user.tpm = Bucket {
                level: level + n * req.tokens as f64,
                at: now,
            };
        }
        let reserve = req.reserve_micros.saturating_mul(u64::from(units));
        let ttl_ms = req.lease_ttl.as_secs_f64() * 1000.0;
        user.leases
            .insert(req.lease.to_owned(), (now + ttl_ms, reserve));
        Ok(Admission::Admitted {
            day_spent_micros: day_spent,
            month_spent_micros: month_spent,
            reserved_micros: reserved.saturating_add(reserve),
            units,
        })
    }

    async fn settle(&self, req: &SettleRequest<'_>) -> Result<(), StoreError> {
        let now = self.now_ms();
        let mut state = self.lock();
        let user = state.users.entry(req.user.to_owned()).or_default();
        if req.release {
            user.leases.remove(req.lease);
        } else if let Some((_, reserved)) = user.leases.get_mut(req.lease) {
            *reserved = reserved.saturating_sub(req.unit_micros);
        }
        if let Some(limit) = req.rpm.filter(|r| *r > 0 && req.unused_units > 0) {
            let limit = f64::from(limit);
            user.rpm = Bucket {
                level: (user.rpm.level(now, limit) - f64::from(req.unused_units)).max(0.0),
                at: now,
            };
        }
        for (slot, key) in [
            (&mut user.day, &req.periods.day),
            (&mut user.month, &req.periods.month),
        ] {
            if slot.0 != *key {
                *slot = (key.clone(), 0);
            }
            slot.1 = slot.1.saturating_add(req.cost_micros);
        }
        if let Some(limit) = req.tpm.filter(|t| *t > 0) {
            let level = user.tpm.level(now, limit as f64) + req.token_delta as f64;
            user.tpm = Bucket {
                level: level.max(0.0),
                at: now,
            };
        }
        Ok(())
    }

    async fn record(&self, rec: &UsageRecord<'_>) -> Result<(), StoreError> {
        let mut state = self.lock();
        let l = &mut state.ledger;
        l.all.add(rec);
        bounded(&mut l.by_model, rec.model, MAX_MODELS).add(rec);
        let user = if l.by_user.contains_key(rec.user) || (l.by_user.len() as u64) < MAX_USERS {
            rec.user
        } else {
            OTHER
        };
        let (totals, models) = l.by_user.entry(user.to_owned()).or_default();
        totals.add(rec);
        bounded(models, rec.model, MAX_MODELS).add(rec);
        l.by_day.entry(rec.day.to_owned()).or_default().add(rec);
        l.by_user_day
            .entry((rec.day.to_owned(), user.to_owned()))
            .or_default()
            .add(rec);
        // Keep the series as Redis does: a bounded number of recent days.
        while l.by_day.len() > 400 {
            if let Some(oldest) = l.by_day.keys().next().cloned() {
                l.by_day.remove(&oldest);
                l.by_user_day.retain(|(d, _), _| *d != oldest);
            }
        }
        Ok(())
    }

    async fn usage(
        &self,
        user: Option<&str>,
        days: &[String],
    ) -> Result<UsageSnapshot, StoreError> {
        let state = self.lock();
        let l = &state.ledger;
        let by_day = |get: &dyn Fn(&String) -> Option<UsageTotals>| {
            days.iter()
                .filter_map(|d| get(d).map(|t| (d.clone(), t)))
                .collect()
        };
        Ok(match user {
            Some(u) => {
                let (totals, by_model) = l.by_user.get(u).cloned().unwrap_or_default();
                UsageSnapshot {
                    totals,
                    by_model,
                    by_user: None,
                    by_day: by_day(&|d| l.by_user_day.get(&(d.clone(), u.to_owned())).copied()),
                }
            }
            None => UsageSnapshot {
                totals: l.all,
                by_model: l.by_model.clone(),
                by_user: Some(
                    l.by_user
                        .iter()
                        .map(|(k, (t, _))| (k.clone(), *t))
                        .collect(),
                ),
                by_day: by_day(&|d| l.by_day.get(d).copied()),
            },
        })
    }
}
