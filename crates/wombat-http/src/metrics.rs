//! Process metrics, rendered in the Prometheus text format by
//! `GET /metrics`. Hand-rolled on atomics and two small maps: the daemon
//! needs a dozen series, not a metrics framework.
//!
//! Per-request cost: one map update under an uncontended mutex plus a few
//! relaxed atomic adds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Most distinct (provider, model) label pairs; later ones share `other`.
const MAX_LLM_SERIES: usize = 256;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

#[derive(Default, Clone, Copy)]
struct LlmSeries {
    calls: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_micros: u64,
}

/// Calls of one tool.
#[derive(Default, Clone, Copy)]
struct ToolSeries {
    calls: u64,
    errors: u64,
    micros: u64,
}

/// Distinct tool names tracked before further ones are counted as `other`
/// (tool names come from tool servers and requests: the label set is
/// bounded).
const MAX_TOOL_SERIES: usize = 256;

/// LLM call series: provider → model → series (nested, so a lookup borrows
/// the names instead of allocating a key per call), with their number.
#[derive(Default)]
struct LlmTable {
    series: BTreeMap<String, BTreeMap<String, LlmSeries>>,
    len: usize,
}

/// All counters of one daemon process.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, std::sync::Arc<Histogram>>>,
    llm: Mutex<LlmTable>,
    tools: Mutex<BTreeMap<String, ToolSeries>>,
    pub(crate) llm_retries: AtomicU64,
    pub(crate) llm_failovers: AtomicU64,
    pub(crate) webhook_ok: AtomicU64,
    pub(crate) webhook_failed: AtomicU64,
    pub(crate) webhook_dropped: AtomicU64,
    pub(crate) backend_errors: AtomicU64,
    pub(crate) streams_open: AtomicU64,
    pub(crate) llm_rejected: AtomicU64,
    /// LLM calls whose token counts are estimates (streams abandoned before
    /// the provider reported usage); their tokens and cost are included in
    /// the per-model series.
    pub(crate) llm_usage_estimated: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock cannot leave the counters in a
    // state worse than slightly off, so poisoning is ignored.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Records one finished request.
    pub(crate) fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        *lock(&self.requests).entry((route, status)).or_default() += 1;
        let hist = lock(&self.latency).entry(route).or_default().clone();
        hist.observe(elapsed);
    }

    /// Records one LLM call (successful or not) against the model that
    /// answered or failed.
    pub(crate) fn observe_llm(
        &self,
        provider: &str,
        model: &str,
        ok: bool,
        prompt_tokens: u64,
        completion_tokens: u64,
        cost_micros: u64,
    ) {
        let mut guard = lock(&self.llm);
        let LlmTable { series: map, len } = &mut *guard;
        let known = map.get(provider).is_some_and(|m| m.contains_key(model));
        // Model names can come from requests: bound the label set.
        let (provider, model) = if known || *len < MAX_LLM_SERIES {
            (provider, model)
        } else {
            ("other", "other")
        };
        if !map.get(provider).is_some_and(|m| m.contains_key(model)) {
            *len += 1;
        }
        let models = match map.get_mut(provider) {
            Some(models) => models,
            None => map.entry(provider.to_owned()).or_default(),
        };
        let s = match models.get_mut(model) {
            Some(s) => s,
            None => models.entry(model.to_owned()).or_default(),
        };
        s.calls = s.calls.saturating_add(1);
        if !ok {
            s.errors = s.errors.saturating_add(1);
        }
        s.prompt_tokens = s.prompt_tokens.saturating_add(prompt_tokens);
        s.completion_tokens = s.completion_tokens.saturating_add(completion_tokens);
        s.cost_micros = s.cost_micros.saturating_add(cost_micros);
    }

    /// Records one tool call of the run loop.
    pub(crate) fn observe_tool(&self, name: &str, is_error: bool, elapsed: Duration) {
        let mut map = lock(&self.tools);
        let key = if map.len() < MAX_TOOL_SERIES || map.contains_key(name) {
            name
        } else {
            "other"
        };
        let s = match map.get_mut(key) {
            Some(s) => s,
            None => map.entry(key.to_owned()).or_default(),
        };
        s.calls = s.calls.saturating_add(1);
        if is_error {
            s.errors = s.errors.saturating_add(1);
        }
        s.micros = s
            .micros
            .saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records the retries and failovers of one successful routed call.
    pub(crate) fn observe_route(&self, attempts: u32, failovers: u32) {
        if attempts > 1 {
            self.llm_retries.fetch_add(u64::from(attempts - 1), Relaxed);
        }
        self.llm_failovers.fetch_add(u64::from(failovers), Relaxed);
    }

    /// The Prometheus text exposition of every series.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP wombat_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE wombat_http_requests_total counter\n");
        for ((route, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "wombat_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP wombat_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE wombat_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "wombat_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(
                out,
                "wombat_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "wombat_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum_micros.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "wombat_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        let llm: Vec<((String, String), LlmSeries)> = lock(&self.llm)
            .series
            .iter()
            .flat_map(|(provider, models)| {
                models
                    .iter()
                    .map(|(model, s)| ((provider.clone(), model.clone()), *s))
            })
            .collect();
        type Series = (
            &'static str,
            &'static str,
            &'static str,
            fn(&LlmSeries) -> String,
        );
        let series: [Series; 5] = [
            (
                "wombat_llm_calls_total",
                "counter",
                "LLM calls by provider and model.",
                |s| s.calls.to_string(),
            ),
            (
                "wombat_llm_errors_total",
                "counter",
                "Failed LLM calls by provider and model.",
                |s| s.errors.to_string(),
            ),
            (
                "wombat_llm_prompt_tokens_total",
                "counter",
                "Prompt tokens by provider and model.",
                |s| s.prompt_tokens.to_string(),
            ),
            (
                "wombat_llm_completion_tokens_total",
                "counter",
                "Completion tokens by provider and model.",
                |s| s.completion_tokens.to_string(),
            ),
            (
                "wombat_llm_cost_usd_total",
                "counter",
                "Cost in USD by provider and model.",
                |s| (s.cost_micros as f64 / 1e6).to_string(),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((provider, model), s) in &llm {
                let _ = writeln!(
                    out,
                    "{name}{{provider=\"{}\",model=\"{}\"}} {}",
                    escape(provider),
                    escape(model),
                    value(s)
                );
            }
        }
        let tools = lock(&self.tools).clone();
        type ToolValue = (&'static str, &'static str, fn(&ToolSeries) -> String);
        let tool_series: [ToolValue; 3] = [
            (
                "wombat_tool_calls_total",
                "Tool calls of the run loop by tool.",
                |s| s.calls.to_string(),
            ),
            (
                "wombat_tool_errors_total",
                "Tool calls that failed (error result, timeout, invalid arguments) by tool.",
                |s| s.errors.to_string(),
            ),
            (
                "wombat_tool_duration_seconds_total",
                "Time spent in tool calls by tool.",
                |s| (s.micros as f64 / 1e6).to_string(),
            ),
        ];
        for (name, help, value) in tool_series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (tool, s) in &tools {
                let _ = writeln!(out, "{name}{{tool=\"{}\"}} {}", escape(tool), value(s));
            }
        }
        let scalars: [(&str, &str, &str, &AtomicU64); 9] = [
            (
                "wombat_llm_retries_total",
                "counter",
                "LLM attempts beyond the first.",
                &self.llm_retries,
            ),
            (
                "wombat_llm_failovers_total",
                "counter",
                "Requests answered by a fallback model.",
                &self.llm_failovers,
            ),
            (
                "wombat_llm_usage_estimated_total",
                "counter",
                "LLM calls whose tokens are estimated (streams abandoned before the provider reported usage).",
                &self.llm_usage_estimated,
            ),
            (
                "wombat_llm_rejected_total",
                "counter",
                "Requests refused because the LLM concurrency cap was full.",
                &self.llm_rejected,
            ),
            (
                "wombat_webhook_delivered_total",
                "counter",
                "Webhook deliveries acknowledged with 2xx.",
                &self.webhook_ok,
            ),
            (
                "wombat_webhook_failed_total",
                "counter",
                "Webhook deliveries that failed after retries.",
                &self.webhook_failed,
            ),
            (
                "wombat_webhook_dropped_total",
                "counter",
                "Webhooks dropped because too many were in flight.",
                &self.webhook_dropped,
            ),
            (
                "wombat_backend_errors_total",
                "counter",
                "Control-plane calls that failed after retries.",
                &self.backend_errors,
            ),
            (
                "wombat_streams_open",
                "gauge",
                "SSE streams currently open.",
                &self.streams_open,
            ),
        ];
        for (name, kind, help, v) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                v.load(Relaxed)
            );
        }
        out
    }
}

/// Escapes a label value (`\`, `"` and newlines).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_series() {
        let m = Metrics::default();
        m.observe_request("/api/agents/send", 200, Duration::from_micros(700));
        m.observe_request("/api/agents/send", 200, Duration::from_secs(2));
        m.observe_llm("openai", "gpt-4o-mini", true, 10, 5, 278);
        m.observe_llm("openai", "we\"ird", false, 0, 0, 0);
        let text = m.render();
        assert!(
            text.contains(
                "wombat_http_requests_total{route=\"/api/agents/send\",status=\"200\"} 2"
            )
        );
        assert!(text.contains(
            "wombat_http_request_duration_seconds_bucket{route=\"/api/agents/send\",le=\"0.001\"} 1"
        ));
        assert!(text.contains(
            "wombat_http_request_duration_seconds_bucket{route=\"/api/agents/send\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "wombat_llm_cost_usd_total{provider=\"openai\",model=\"gpt-4o-mini\"} 0.000278"
        ));
        assert!(
            text.contains("wombat_llm_errors_total{provider=\"openai\",model=\"we\\\"ird\"} 1")
        );
        assert!(text.contains("wombat_streams_open 0"));
    }

    /// Model names can come from requests: past the bound, new ones are
    /// counted as `other`, known ones still on their own.
    #[test]
    fn llm_series_are_bounded() {
        let m = Metrics::default();
        for i in 0..MAX_LLM_SERIES + 10 {
            m.observe_llm("openai", &format!("m{i}"), true, 1, 1, 1);
        }
        m.observe_llm("openai", "m0", true, 1, 1, 1);
        let text = m.render();
        let calls = |labels: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("wombat_llm_calls_total{{{labels}}} ")))
                .map(str::to_owned)
        };
        assert_eq!(
            calls("provider=\"openai\",model=\"m0\"").as_deref(),
            Some("2")
        );
        let last = MAX_LLM_SERIES - 1;
        assert_eq!(
            calls(&format!("provider=\"openai\",model=\"m{last}\"")).as_deref(),
            Some("1")
        );
        assert_eq!(
            calls(&format!("provider=\"openai\",model=\"m{MAX_LLM_SERIES}\"")),
            None
        );
        assert_eq!(
            calls("provider=\"other\",model=\"other\"").as_deref(),
            Some("10")
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("wombat_llm_calls_total{"))
            .count();
        assert_eq!(series, MAX_LLM_SERIES + 1);
    }
}
