//! The `metadata` keys the daemon understands, type-checked, and the
//! tenant's limits (`metadata.limits`, see GOVERNANCE.md).

use serde_json::{Map, Value, json};
use wombat_governance::{BudgetWarning, Limits};
use wombat_llm::{ModelChoice, Tier};
use wombat_workspace::PromptMode;

use crate::ApiError;

/// `metadata` keys the daemon understands, type-checked.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) system_prompt: Option<String>,
    pub(crate) kickoff_plan: bool,
    pub(crate) kickoff_note: Option<String>,
    pub(crate) plan_title: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) mode: PromptMode,
    pub(crate) model: ModelChoice,
    /// `metadata.temperature`; `None` means `WOMBAT_TEMPERATURE`.
    pub(crate) temperature: Option<f32>,
    /// `metadata.limits`: the tenant's plan limits, from the trusted caller.
    /// Boxed (80 bytes, mostly absent): the options live as long as the run.
    pub(crate) limits: Option<Box<wombat_governance::Limits>>,
}

pub(crate) fn options(metadata: Option<&Map<String, Value>>) -> Result<Options, ApiError> {
    let mut o = Options {
        system_prompt: None,
        kickoff_plan: false,
        kickoff_note: None,
        plan_title: None,
        timezone: None,
        mode: PromptMode::Full,
        model: ModelChoice::Tier(Tier::Default),
        temperature: None,
        limits: None,
    };
    let Some(m) = metadata else {
        return Ok(o);
    };
    let string = |key: &str| -> Result<Option<String>, ApiError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!(
                "metadata.{key} must be a string"
            ))),
        }
    };
    o.system_prompt = string("system_prompt")?;
    o.kickoff_plan = match m.get("kickoff_plan") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "metadata.kickoff_plan must be a boolean",
            ));
        }
    };
    o.kickoff_note = string("kickoff_note")?;
    o.plan_title = string("plan_title")?;
    o.timezone = string("timezone")?.filter(|s| !s.trim().is_empty());
    o.mode = match string("prompt_mode")?.as_deref() {
        None | Some("full") => PromptMode::Full,
        Some("minimal") => PromptMode::Minimal,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "metadata.prompt_mode must be \"full\" or \"minimal\", got {other:?}"
            )));
        }
    };
    let tier = match string("model_tier")?.as_deref() {
        None | Some("default") => Tier::Default,
        Some("cheap") => Tier::Cheap,
        Some("best") => Tier::Best,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "metadata.model_tier must be \"cheap\", \"default\" or \"best\", got {other:?}"
            )));
        }
    };
    o.model = match string("model")?.filter(|s| !s.trim().is_empty()) {
        Some(model) => ModelChoice::Explicit(model),
        None => ModelChoice::Tier(tier),
    };
    o.temperature = match m.get("temperature") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => Some(t as f32),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "metadata.temperature must be a number between 0 and 2, got {n}"
                )));
            }
        },
        Some(_) => {
            return Err(ApiError::bad_request(
                "metadata.temperature must be a number between 0 and 2",
            ));
        }
    };
    o.limits = parse_limits(m)?.map(Box::new);
    Ok(o)
}

/// `metadata.limits`, validated: every key optional, unknown keys refused
/// (a typo must not silently lift a tenant's limit).
fn parse_limits(m: &Map<String, Value>) -> Result<Option<Limits>, ApiError> {
    let obj = match m.get("limits") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::bad_request("metadata.limits must be an object")),
    };
    let mut l = Limits::default();
    for (key, value) in obj {
        let bad = |what: &str| {
            ApiError::bad_request(format!("metadata.limits.{key} must be {what}, got {value}"))
        };
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "budget_usd_day" | "budget_usd_month" => {
                let usd = value
                    .as_f64()
                    .filter(|n| n.is_finite() && (0.0..=1e9).contains(n))
                    .ok_or_else(|| bad("a number of USD between 0 and 1e9"))?;
                let micros = Some((usd * 1e6).round() as u64);
                if key == "budget_usd_day" {
                    l.budget_day_micros = micros;
                } else {
                    l.budget_month_micros = micros;
                }
            }
            "soft_percent" => {
                l.soft_percent = Some(
                    value
                        .as_f64()
                        .filter(|n| *n > 0.0 && *n <= 100.0)
                        .ok_or_else(|| bad("a percentage in (0, 100]"))?,
                );
            }
            "rpm" | "concurrency" => {
                let n = value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("a positive integer below 2^32"))?;
                if key == "rpm" {
                    l.rpm = Some(n);
                } else {
                    l.concurrency = Some(n);
                }
            }
            "tpm" => {
                l.tpm = Some(
                    value
                        .as_u64()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("a positive integer"))?,
                );
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "metadata.limits.{other} is not a known limit (budget_usd_day, budget_usd_month, soft_percent, rpm, tpm, concurrency)"
                )));
            }
        }
    }
    Ok(Some(l))
}

fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// The `budget_warning` of responses, `done` events and webhooks.
pub fn warning_json(w: &BudgetWarning) -> Value {
    json!({
        "period": w.period.as_str(),
        "limit": usd(w.limit_micros),
        "spent": usd(w.spent_micros),
        "soft_percent": w.soft_percent,
        "resets_at": w.resets_at.to_string(),
    })
}
