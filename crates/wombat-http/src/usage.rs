//! The in-process usage ledger behind `GET /usage`: totals since start, with
//! per-model and per-user breakdowns. Costs accumulate as integer
//! micro-dollars, so sums never drift.
//!
//! The per-user map is bounded ([`MAX_TRACKED_USERS`]); usage of users beyond
//! the bound is still counted in the totals and per model, and in one
//! `_other` bucket, so a flood of tenants cannot grow memory without limit.
//! With `WOMBAT_REDIS_URL`, `/usage` comes from the shared store instead
//! (see [`UsageResponse::from_snapshot`]).

use foldhash::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use wombat_core::{Cost, Usage};

/// Most distinct model names with their own breakdown entry; model names can
/// come from requests (`metadata.model`), so they are bounded too.
pub(crate) const MAX_TRACKED_MODELS: usize = 256;

/// The entry for `key`, or the shared `_other` entry once `map` holds
/// `limit` keys.
fn bucket<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str, limit: usize) -> &'m mut V {
    // A known key (every request but a user's or model's first) is found
    // without allocating its `String`, which `entry` would need.
    let key = if map.contains_key(key) {
        return map
            .get_mut(key)
            .unwrap_or_else(|| unreachable!("just found"));
    } else if map.len() < limit {
        key
    } else {
        OTHER_USERS
    };
    map.entry(key.to_owned()).or_default()
}

/// Most distinct users with their own breakdown entry.
pub(crate) const MAX_TRACKED_USERS: usize = 100_000;
const OTHER_USERS: &str = "_other";

#[derive(Default, Clone, Copy)]
struct Totals {
    requests: u64,
    /// Requests whose usage is an estimate (streams abandoned before the
    /// provider reported usage).
    estimated: u64,
    input: u64,
    output: u64,
    total: u64,
    cost_micros: u64,
}

impl Totals {
    fn add(&mut self, usage: &Usage, cost_micros: u64) {
        // Saturating: token counts come from providers and are not trusted.
        self.requests = self.requests.saturating_add(1);
        self.input = self.input.saturating_add(usage.prompt_tokens);
        self.output = self.output.saturating_add(usage.completion_tokens);
        self.total = self.total.saturating_add(usage.total_tokens);
        self.cost_micros = self.cost_micros.saturating_add(cost_micros);
    }

    fn report(&self) -> UsageReport {
        UsageReport {
            request_count: self.requests,
            estimated_request_count: self.estimated,
            total_input_tokens: self.input,
            total_output_tokens: self.output,
            total_tokens: self.total,
            total_cost: self.cost_micros as f64 / 1e6,
            currency: "USD",
        }
    }
}

/// One set of totals in the `/usage` wire shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageReport {
    request_count: u64,
    /// Of `request_count`, those whose tokens are an estimate; only shown
    /// when there are any (an additive key, absent in 0.1.0).
    #[serde(skip_serializing_if = "is_zero")]
    estimated_request_count: u64,
    total_input_tokens: u64,
    total_output_tokens: u64,
    total_tokens: u64,
    total_cost: f64,
    currency: &'static str,
}

/// `GET /usage` response: the 0.1.0 fields, plus breakdowns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageResponse {
    #[serde(flatten)]
    totals: UsageReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    by_model: std::collections::BTreeMap<String, UsageReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by_user: Option<std::collections::BTreeMap<String, UsageReport>>,
    /// Per day (budget time zone), oldest first; only from a shared store.
    #[serde(skip_serializing_if = "Option::is_none")]
    by_day: Option<Vec<DayReport>>,
}

/// One day of the `byDay` series.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DayReport {
    date: String,
    #[serde(flatten)]
    totals: UsageReport,
}

impl From<&wombat_governance::UsageTotals> for Totals {
    fn from(t: &wombat_governance::UsageTotals) -> Self {
        Self {
            requests: t.requests,
            estimated: t.estimated,
            input: t.input,
            output: t.output,
            total: t.total,
            cost_micros: t.cost_micros,
        }
    }
}

impl UsageResponse {
    /// The wire shape of the shared store's ledger.
    pub(crate) fn from_snapshot(
        s: &wombat_governance::UsageSnapshot,
        user_id: Option<&str>,
    ) -> Self {
        let report = |t: &wombat_governance::UsageTotals| Totals::from(t).report();
        Self {
            totals: report(&s.totals),
            user_id: user_id.map(str::to_owned),
            by_model: s
                .by_model
                .iter()
                .map(|(k, t)| (k.clone(), report(t)))
                .collect(),
            by_user: s
                .by_user
                .as_ref()
                .map(|m| m.iter().map(|(k, t)| (k.clone(), report(t))).collect()),
            by_day: Some(
                s.by_day
                    .iter()
                    .map(|(d, t)| DayReport {
                        date: d.clone(),
                        totals: report(t),
                    })
                    .collect(),
            ),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Default)]
struct Ledger {
    all: Totals,
    by_model: HashMap<String, Totals>,
    by_user: HashMap<String, (Totals, HashMap<String, Totals>)>,
}

/// Thread-safe usage ledger.
#[derive(Default)]
pub(crate) struct UsageTracker {
    ledger: Mutex<Ledger>,
}

impl UsageTracker {
    /// Records one completed LLM call for `user_id`.
    pub(crate) fn record(&self, user_id: &str, usage: &Usage, cost: &Cost) {
        self.add(user_id, usage, cost, false);
    }

    /// Records an LLM call whose usage the provider never reported (a
    /// stream abandoned mid-generation): `usage` is an estimate, counted in
    /// the totals like any other and in `estimatedRequestCount`.
    pub(crate) fn record_estimate(&self, user_id: &str, usage: &Usage, cost: &Cost) {
        self.add(user_id, usage, cost, true);
    }

    fn add(&self, user_id: &str, usage: &Usage, cost: &Cost, estimated: bool) {
        let micros = cost.total_micros();
        let mut l = self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let add = |t: &mut Totals| {
            t.add(usage, micros);
            if estimated {
                t.estimated = t.estimated.saturating_add(1);
            }
        };
        add(&mut l.all);
        add(bucket(&mut l.by_model, &cost.model, MAX_TRACKED_MODELS));
        let (user_totals, user_models) = bucket(&mut l.by_user, user_id, MAX_TRACKED_USERS);
        add(user_totals);
        add(bucket(user_models, &cost.model, MAX_TRACKED_MODELS));
    }

    /// The report: everything, or one user's share when `user_id` is given.
    pub(crate) fn report(&self, user_id: Option<&str>) -> UsageResponse {
        let l = self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let to_reports =
            |m: &HashMap<String, Totals>| m.iter().map(|(k, t)| (k.clone(), t.report())).collect();
        match user_id {
            Some(user) => {
                let (totals, models) = l
                    .by_user
                    .get(user)
                    .map(|(t, m)| (*t, to_reports(m)))
                    .unwrap_or_default();
                UsageResponse {
                    totals: totals.report(),
                    user_id: Some(user.to_owned()),
                    by_model: models,
                    by_user: None,
                    by_day: None,
                }
            }
            None => UsageResponse {
                totals: l.all.report(),
                user_id: None,
                by_model: to_reports(&l.by_model),
                by_user: Some(
                    l.by_user
                        .iter()
                        .map(|(k, (t, _))| (k.clone(), t.report()))
                        .collect(),
                ),
                by_day: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wombat_core::PricingTable;

    #[test]
    fn breakdowns_are_bounded() {
        let t = UsageTracker::default();
        let pricing = PricingTable::builtin();
        let u = Usage::new(1, 1);
        for i in 0..MAX_TRACKED_MODELS + 10 {
            t.record("alice", &u, &pricing.cost(&format!("model-{i}"), &u));
        }
        let all = serde_json::to_value(t.report(None)).expect("json");
        let by_model = all["byModel"].as_object().expect("byModel");
        assert_eq!(by_model.len(), MAX_TRACKED_MODELS + 1);
        assert_eq!(by_model["_other"]["requestCount"], 10);
        assert_eq!(all["requestCount"], MAX_TRACKED_MODELS as u64 + 10);
    }

    #[test]
    fn totals_and_breakdowns() {
        let t = UsageTracker::default();
        let pricing = PricingTable::builtin();
        let u = Usage::new(1250, 150);
        t.record("alice", &u, &pricing.cost("gpt-4o-mini", &u));
        t.record("alice", &u, &pricing.cost("gpt-4o-mini", &u));
        t.record("bob", &u, &pricing.cost("unknown-model", &u));
        let all = serde_json::to_value(t.report(None)).expect("json");
        assert_eq!(all["requestCount"], 3);
        assert_eq!(all["totalInputTokens"], 3750);
        assert_eq!(all["totalCost"], 0.000556);
        assert_eq!(all["currency"], "USD");
        assert_eq!(all["byModel"]["gpt-4o-mini"]["requestCount"], 2);
        assert_eq!(all["byUser"]["bob"]["totalCost"], 0.0);
        let alice = serde_json::to_value(t.report(Some("alice"))).expect("json");
        assert_eq!(alice["requestCount"], 2);
        assert_eq!(alice["userId"], "alice");
        assert!(alice.get("byUser").is_none());
        let nobody = serde_json::to_value(t.report(Some("nobody"))).expect("json");
        assert_eq!(nobody["requestCount"], 0);
        assert!(all.get("estimatedRequestCount").is_none(), "{all}");
        t.record_estimate("bob", &u, &pricing.cost("gpt-4o-mini", &u));
        let all = serde_json::to_value(t.report(None)).expect("json");
        assert_eq!(all["requestCount"], 4);
        assert_eq!(all["estimatedRequestCount"], 1);
        assert_eq!(all["byUser"]["bob"]["estimatedRequestCount"], 1);
        assert!(
            all["byUser"]["alice"]
                .get("estimatedRequestCount")
                .is_none()
        );
    }
}
