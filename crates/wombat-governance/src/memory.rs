//! [`MemoryStore`]: governance state of one process (today's single-replica
//! behaviour), under one mutex. Same semantics as the Redis store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::{PeriodKind, RateKind};
use crate::store::{
    Admission, AdmitRequest, MAX_MODELS, MAX_USERS, OTHER, Refusal, SettleRequest, Store,
    StoreError, UsageRecord, UsageSnapshot, UsageTotals,
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
    /// GCRA theoretical arrival times, ms since start.
    rpm_tat: f64,
    tpm_tat: f64,
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
        self.leases.is_empty() && self.rpm_tat <= now && self.tpm_tat <= now
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
        if state.users.len() >= SWEEP_AT && !state.users.contains_key(req.user) {
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
        let mut rpm_tat = user.rpm_tat;
        if let Some(rpm) = limits.rpm.filter(|r| *r > 0) {
            rpm_tat = user.rpm_tat.max(now) + WINDOW_MS / f64::from(rpm);
            if rpm_tat - now > WINDOW_MS {
                return Ok(Admission::Refused(Refusal::Rate {
                    kind: RateKind::Requests,
                    retry_after: retry(rpm_tat - now - WINDOW_MS),
                }));
            }
        }
        let mut tpm_tat = user.tpm_tat;
        if let Some(tpm) = limits.tpm.filter(|t| *t > 0) {
            let per_token = WINDOW_MS / tpm as f64;
            tpm_tat = user.tpm_tat.max(now);
            if tpm_tat - now >= WINDOW_MS {
                return Ok(Admission::Refused(Refusal::Rate {
                    kind: RateKind::Tokens,
                    retry_after: retry(tpm_tat - now - WINDOW_MS + per_token),
                }));
            }
            tpm_tat += req.tokens as f64 * per_token;
        }
        user.rpm_tat = rpm_tat;
        user.tpm_tat = tpm_tat;
        let ttl_ms = req.lease_ttl.as_secs_f64() * 1000.0;
        user.leases
            .insert(req.lease.to_owned(), (now + ttl_ms, req.reserve_micros));
        Ok(Admission::Admitted {
            day_spent_micros: day_spent,
            month_spent_micros: month_spent,
            reserved_micros: reserved.saturating_add(req.reserve_micros),
        })
    }

    async fn settle(&self, req: &SettleRequest<'_>) -> Result<(), StoreError> {
        let now = self.now_ms();
        let mut state = self.lock();
        let user = state.users.entry(req.user.to_owned()).or_default();
        user.leases.remove(req.lease);
        for (slot, key) in [
            (&mut user.day, &req.periods.day),
            (&mut user.month, &req.periods.month),
        ] {
            if slot.0 != *key {
                *slot = (key.clone(), 0);
            }
            slot.1 = slot.1.saturating_add(req.cost_micros);
        }
        if let Some(tpm) = req.tpm.filter(|t| *t > 0) {
            let tat = user.tpm_tat.max(now) + req.token_delta as f64 * WINDOW_MS / tpm as f64;
            user.tpm_tat = tat.max(now);
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
