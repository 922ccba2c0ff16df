//! Per-user limits around each LLM call, and the shared usage ledger (see
//! `wombat-governance` and GOVERNANCE.md).
//!
//! Admission runs right before the LLM call (after validation and task
//! resolution, after the global LLM slot was taken), settlement right after
//! it, on every path: answered, failed, abandoned. With no limit configured
//! and none in the request, admission is one branch on data already in
//! hand: no store call, no allocation, no lock.

use std::sync::atomic::Ordering::Relaxed;

use http::StatusCode;
use serde_json::json;
use wombat_core::{Cost, Usage};
use wombat_governance::{Admitted, Estimate, Limits, Refused};
use wombat_llm::RouteRequest;

use crate::app::App;
use crate::error::ApiError;

/// Output tokens reserved for a call that sets no `max_tokens`: enough for
/// a long reply. A reply longer than this is still settled at its real cost;
/// only the reservation (and so the possible overshoot) is bounded by it.
pub(crate) const DEFAULT_OUTPUT_RESERVE: u64 = 4096;

/// Prompt tokens of a route, estimated as 0.1.0 did (`ceil(chars / 4)`).
pub(crate) fn prompt_tokens(route: &RouteRequest) -> u64 {
    let chars = route.system.as_deref().map_or(0, str::len)
        + route
            .messages
            .iter()
            .map(wombat_core::ChatMessage::text_len)
            .sum::<usize>();
    chars.div_ceil(4) as u64
}

/// Checks `user`'s limits before an LLM call to `model` and reserves its
/// estimate. `Ok(None)`: no limit applies (nothing to settle).
pub(crate) async fn admit(
    app: &App,
    user: &str,
    requested: Option<&Limits>,
    route: &RouteRequest,
    model: &str,
) -> Result<Option<Admitted>, ApiError> {
    let defaults = app.governor.defaults();
    let limits = match requested {
        Some(l) => l.or(defaults),
        None if defaults.is_empty() => return Ok(None),
        None => *defaults,
    };
    if limits.is_empty() {
        return Ok(None);
    }
    let output_cap = route.max_tokens.map_or(DEFAULT_OUTPUT_RESERVE, u64::from);
    let estimate = Estimate::of_call(app.llm.pricing(), model, prompt_tokens(route), output_cap);
    // Boxed: the request's future (a stream's task lives as long as the
    // stream) stays as small as without limits; only a limited request pays.
    Box::pin(app.governor.admit(user, &limits, estimate))
        .await
        .map(Some)
        .map_err(refusal)
}

/// Releases an admission whose call consumed nothing known (it failed, or
/// the deadline cut it before any usage was reported).
pub(crate) async fn release(app: &App, admitted: Option<Admitted>) {
    if let Some(a) = admitted {
        Box::pin(app.governor.settle(a, 0, 0)).await;
    }
}

/// Settles `admitted` with the real usage of a finished call and, with a
/// shared store, adds the call to its ledger: one store step, queued and
/// written in the background with a shared store. The per-process ledger is written by the caller either
/// way.
pub(crate) async fn account(
    app: &App,
    admitted: Option<Admitted>,
    user: &str,
    usage: &Usage,
    cost: &Cost,
    estimated: bool,
) {
    if admitted.is_none() && !app.governor.is_shared() {
        return;
    }
    let call = wombat_governance::Call {
        user,
        model: &cost.model,
        input: usage.prompt_tokens,
        output: usage.completion_tokens,
        total: usage.total_tokens,
        cost_micros: cost.total_micros(),
        estimated,
    };
    Box::pin(app.governor.settle_and_record(admitted, &call)).await;
}

/// Adds a call that was admitted by no limit to the shared ledger, when
/// there is one.
pub(crate) async fn record_shared(
    app: &App,
    user: &str,
    usage: &Usage,
    cost: &Cost,
    estimated: bool,
) {
    account(app, None, user, usage, cost, estimated).await;
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

fn refusal(r: Refused) -> ApiError {
    match r {
        Refused::Budget {
            period,
            limit_micros,
            spent_micros,
            reserved_micros,
            resets_at,
        } => {
            let secs = resets_at
                .as_second()
                .saturating_sub(jiff::Timestamp::now().as_second())
                .max(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "budget_exceeded",
                format!(
                    "the {} budget of {} USD is used up ({} USD spent, {} USD reserved by requests in flight)",
                    match period {
                        wombat_governance::PeriodKind::Day => "daily",
                        wombat_governance::PeriodKind::Month => "monthly",
                    },
                    usd(limit_micros),
                    usd(spent_micros),
                    usd(reserved_micros),
                ),
            )
            .with_details(json!({
                "period": period.as_str(),
                "limit": usd(limit_micros),
                "spent": usd(spent_micros),
                "reserved": usd(reserved_micros),
                "resets_at": resets_at.to_string(),
            }))
            .with_retry_after(secs.unsigned_abs())
        }
        Refused::Rate { kind, retry_after } => {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "over the {} limit of this user; retry in {secs}s",
                    match kind {
                        wombat_governance::RateKind::Requests => "requests-per-minute",
                        wombat_governance::RateKind::Tokens => "tokens-per-minute",
                    }
                ),
            )
            .with_details(json!({"limit": kind.as_str(), "retry_after": secs}))
            .with_retry_after(secs)
        }
        Refused::Concurrency { limit } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "concurrency_limited",
            format!("this user already has {limit} requests in flight"),
        )
        .with_details(json!({"limit": "concurrency", "concurrency": limit}))
        .with_retry_after(1),
        Refused::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "limits_unavailable",
            "the limits store is unreachable and WOMBAT_LIMITS_ON_STORE_ERROR=closed",
        )
        .with_retry_after(1),
    }
}

/// The governance series of `/metrics`.
pub(crate) fn render_metrics(app: &App, out: &mut String) {
    use std::fmt::Write as _;
    let m = app.governor.metrics();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    let _ = writeln!(
        out,
        "# HELP wombat_limits_admitted_total LLM calls admitted by the per-user limits (fail-open included).\n# TYPE wombat_limits_admitted_total counter\nwombat_limits_admitted_total {}",
        get(&m.admitted)
    );
    let _ = writeln!(
        out,
        "# HELP wombat_limits_rejected_total Requests refused by the per-user limits, by reason.\n# TYPE wombat_limits_rejected_total counter"
    );
    for (reason, n) in [
        ("budget", &m.rejected_budget),
        ("rpm", &m.rejected_rpm),
        ("tpm", &m.rejected_tpm),
        ("concurrency", &m.rejected_concurrency),
        ("store_unavailable", &m.rejected_unavailable),
    ] {
        let _ = writeln!(
            out,
            "wombat_limits_rejected_total{{reason=\"{reason}\"}} {}",
            get(n)
        );
    }
    for (name, help, n) in [
        (
            "wombat_limits_store_errors_total",
            "Governance store calls that failed or timed out.",
            &m.store_errors,
        ),
        (
            "wombat_limits_admitted_local_total",
            "LLM calls admitted from a grant this replica held, without a store round trip (included in wombat_limits_admitted_total).",
            &m.admitted_local,
        ),
        (
            "wombat_limits_fail_open_total",
            "Requests let through while the store was unreachable.",
            &m.fail_open,
        ),
        (
            "wombat_budget_warnings_total",
            "Responses that carried a budget_warning.",
            &m.warnings,
        ),
        (
            "wombat_budget_reserved_usd_micros_total",
            "Estimates reserved before LLM calls, micro-dollars.",
            &m.reserved_micros,
        ),
        (
            "wombat_budget_settled_usd_micros_total",
            "Real costs settled after LLM calls, micro-dollars.",
            &m.settled_micros,
        ),
        (
            "wombat_limits_settle_queued_total",
            "Finished LLM calls handed to the background writer of the shared store.",
            &m.settle_queued,
        ),
        (
            "wombat_limits_settle_inline_total",
            "Finished LLM calls settled on the request path because the background queue was full.",
            &m.settle_inline,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            get(n)
        );
    }
}
