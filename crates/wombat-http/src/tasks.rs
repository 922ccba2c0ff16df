//! `POST /compact` (history summarisation) and `POST /llm-task` (JSON-only
//! tasks with schema validation and one repair retry).

use std::sync::Arc;

use crate::server::RequestBody as Incoming;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wombat_core::{ChatMessage, Cost, Role, Usage};
use wombat_llm::{ModelChoice, ResponseFormat, RouteRequest, Tier};

use crate::agent::llm_permit;
use crate::app::App;
use crate::error::ApiError;
use crate::request::{Body, Field, Kind, json_response, read_payload};
use wombat_agent::llm_error;

const SUMMARY_PREFIX: &str = "[Previous conversation summary]\n";

const COMPACT_SYSTEM: &str = "You summarise conversations so they can continue with less context. \
Write a concise summary of the conversation below that keeps every fact, decision, open question, \
commitment and user preference needed to continue it. Write it as plain prose or short bullet points, \
without preamble.";

/// The top level of 0.1.0's zod schema for `/compact`.
const COMPACT_SCHEMA: &[Field] = &[
    Field::required("messages", Kind::Array),
    Field::optional("instructions", Kind::String),
    Field::optional("keep_recent", Kind::Number),
];

#[derive(Deserialize)]
struct CompactRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    keep_recent: Option<i64>,
}

#[derive(Serialize)]
struct CompactResponse<'a> {
    status: &'static str,
    compacted_messages: &'a [ChatMessage],
    usage: Usage,
    original_count: usize,
    compacted_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<&'a Cost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
}

/// `POST /compact`.
pub(crate) async fn compact(
    app: &Arc<App>,
    req: &mut http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let body: CompactRequest = read_payload(req, app.config.max_body_bytes, COMPACT_SCHEMA).await?;
    if body.messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages must contain at least one message",
        ));
    }
    let keep = match body.keep_recent {
        None => 2,
        Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "keep_recent must be >= 0, got {n}"
            )));
        }
    };
    let original_count = body.messages.len();
    if original_count <= keep {
        return Ok(json_response(
            StatusCode::OK,
            &CompactResponse {
                status: "ok",
                compacted_messages: &body.messages,
                usage: Usage::default(),
                original_count,
                compacted_count: original_count,
                cost: None,
                model: None,
            },
        ));
    }
    let (older, recent) = body.messages.split_at(original_count - keep);
    let mut transcript = String::new();
    for m in older {
        transcript.push_str(m.role.as_str());
        transcript.push_str(": ");
        transcript.push_str(&m.text());
        for call in m.tool_calls() {
            transcript.push_str(&format!(
                "[called {}({})]",
                call.name,
                serde_json::Value::Object(call.arguments.clone())
            ));
        }
        for result in m.tool_results() {
            transcript.push_str(&result.content.to_text());
        }
        transcript.push_str("\n\n");
    }
    let mut system = COMPACT_SYSTEM.to_owned();
    if let Some(extra) = body
        .instructions
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        system.push_str("\n\nAdditional instructions: ");
        system.push_str(extra);
    }
    let mut route = RouteRequest::new(
        ModelChoice::Tier(Tier::Cheap),
        vec![ChatMessage::user(format!(
            "Conversation to summarise:\n\n{}",
            transcript.trim_end()
        ))],
    );
    route.system = Some(system);
    // 0.1.0's value by default (0.3): summaries should be faithful, not creative.
    route.temperature = Some(app.config.compact_temperature);
    let permit = llm_permit(app)?;
    let routed = call(app, &route, "_compact").await?;
    drop(permit);
    let mut compacted = Vec::with_capacity(keep + 1);
    compacted.push(ChatMessage::new(
        Role::System,
        format!("{SUMMARY_PREFIX}{}", routed.completion.text.trim()),
    ));
    compacted.extend_from_slice(recent);
    Ok(json_response(
        StatusCode::OK,
        &CompactResponse {
            status: "ok",
            compacted_count: compacted.len(),
            compacted_messages: &compacted,
            usage: routed.completion.usage,
            original_count,
            cost: Some(&routed.cost),
            model: Some(&routed.model),
        },
    ))
}

/// The top level of 0.1.0's zod schema for `/llm-task`.
const LLM_TASK_SCHEMA: &[Field] = &[
    Field::required("prompt", Kind::String),
    Field::optional("input", Kind::Any),
    Field::optional("schema", Kind::Any),
    Field::optional("model", Kind::String),
    Field::optional("temperature", Kind::Number),
    Field::optional("max_tokens", Kind::Number),
];

#[derive(Deserialize)]
struct LlmTaskRequest {
    prompt: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<i64>,
}

#[derive(Serialize)]
struct LlmTaskResponse<'a> {
    status: &'static str,
    output: &'a Value,
    usage: Usage,
    cost: &'a Cost,
    validated: bool,
    model: &'a str,
    provider: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation_errors: Option<Vec<String>>,
}

/// Parses model output as JSON, tolerating a Markdown code fence around it.
fn parse_json_output(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(v) = serde_json::from_str(t) {
        return Some(v);
    }
    let inner = t.strip_prefix("```")?.strip_suffix("```")?;
    let inner = inner.strip_prefix("json").unwrap_or(inner);
    serde_json::from_str(inner.trim()).ok()
}

/// At most this many validation errors are reported back.
const MAX_REPORTED_ERRORS: usize = 10;

fn validation_errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .take(MAX_REPORTED_ERRORS)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("{path}: {e}")
            }
        })
        .collect()
}

/// `POST /llm-task`.
pub(crate) async fn llm_task(
    app: &Arc<App>,
    req: &mut http::Request<Incoming>,
) -> Result<http::Response<Body>, ApiError> {
    let body: LlmTaskRequest =
        read_payload(req, app.config.max_body_bytes, LLM_TASK_SCHEMA).await?;
    if body.prompt.trim().is_empty() {
        return Err(ApiError::bad_request("prompt must not be empty"));
    }
    let temperature = body.temperature.unwrap_or(0.3);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request(format!(
            "temperature must be between 0 and 2, got {temperature}"
        )));
    }
    let max_tokens = match body.max_tokens {
        None => None,
        Some(n) if n > 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "max_tokens must be positive, got {n}"
            )));
        }
    };
    let validator = match &body.schema {
        None | Some(Value::Null) => None,
        Some(schema @ Value::Object(_)) => {
            // Bounded before anything (the validator, the adapters, the
            // echo sample) walks it.
            wombat_llm::check_schema_size(schema).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_schema",
                    format!("schema is too large: {e}"),
                )
            })?;
            Some(jsonschema::validator_for(schema).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_schema",
                    format!("schema is not a valid JSON Schema: {e}"),
                )
            })?)
        }
        Some(_) => return Err(ApiError::bad_request("schema must be a JSON object")),
    };
    let model = match body.model.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(m) => ModelChoice::Explicit(m.to_owned()),
        None => ModelChoice::Tier(Tier::Default),
    };
    app.llm
        .resolve(&model)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;

    let mut system = String::from(
        "You are a JSON-only function. Reply with a single valid JSON value and nothing else: \
         no prose, no Markdown, no code fences.",
    );
    let schema = validator.as_ref().and(body.schema.as_ref());
    if let Some(schema) = schema {
        system.push_str("\n\nThe JSON must conform to this JSON Schema:\n");
        system.push_str(&schema.to_string());
    }
    let mut user = body.prompt.clone();
    if let Some(input) = body.input.as_ref().filter(|v| !v.is_null()) {
        user.push_str("\n\nInput:\n");
        user.push_str(&input.to_string());
    }
    let format = match schema {
        Some(s) => ResponseFormat::JsonSchema {
            name: "llm_task_output".to_owned(),
            schema: s.clone(),
        },
        None => ResponseFormat::Json,
    };
    let mut route = RouteRequest::new(model, vec![ChatMessage::user(user)]);
    route.system = Some(system);
    route.temperature = Some(temperature as f32);
    route.max_tokens = max_tokens;
    route.response_format = Some(format);

    let permit = llm_permit(app)?;
    let first = call(app, &route, "_llm_task").await?;
    let mut usage = first.completion.usage;
    let mut cost = first.cost.clone();
    let mut output = parse_json_output(&first.completion.text);
    let mut errors = match (&validator, &output) {
        (Some(v), Some(out)) => validation_errors(v, out),
        _ => Vec::new(),
    };
    let mut last = first;
    // One repair retry: on output that is not JSON, or not valid against the schema.
    if output.is_none() || !errors.is_empty() {
        let complaint = if output.is_none() {
            "That reply was not valid JSON.".to_owned()
        } else {
            format!(
                "That JSON does not conform to the schema: {}.",
                errors.join("; ")
            )
        };
        route
            .messages
            .push(ChatMessage::assistant(last.completion.text.clone()));
        route.messages.push(ChatMessage::user(format!(
            "{complaint} Reply again with corrected JSON only."
        )));
        let second = call(app, &route, "_llm_task").await?;
        usage += second.completion.usage;
        cost = cost.combine(&second.cost);
        if let Some(repaired) = parse_json_output(&second.completion.text) {
            errors = validator
                .as_ref()
                .map(|v| validation_errors(v, &repaired))
                .unwrap_or_default();
            output = Some(repaired);
        }
        last = second;
    }
    drop(permit);
    let Some(output) = output else {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "llm_invalid_json",
            "the model did not reply with valid JSON, even after a repair request",
        )
        .with_details(json!({"response": last.completion.text, "usage": usage})));
    };
    let validated = validator.is_some() && errors.is_empty();
    Ok(json_response(
        StatusCode::OK,
        &LlmTaskResponse {
            status: "ok",
            output: &output,
            usage,
            cost: &cost,
            validated,
            model: &last.model,
            provider: last.provider.as_str(),
            validation_errors: (!errors.is_empty()).then_some(errors),
        },
    ))
}

/// One routed call, with its usage recorded under `ledger_user` as soon as it
/// succeeds (so a failing repair call does not lose the first one's usage).
async fn call(
    app: &App,
    route: &RouteRequest,
    ledger_user: &str,
) -> Result<wombat_llm::Routed, ApiError> {
    match tokio::time::timeout(app.config.request_timeout, app.llm.complete(route.clone())).await {
        Ok(Ok(r)) => {
            app.metrics.observe_llm(
                r.provider.as_str(),
                &r.model,
                true,
                r.completion.usage.prompt_tokens,
                r.completion.usage.completion_tokens,
                r.cost.total_micros(),
            );
            app.metrics.observe_route(r.attempts, r.failovers);
            app.usage.record(ledger_user, &r.completion.usage, &r.cost);
            crate::governance::record_shared(app, ledger_user, &r.completion.usage, &r.cost, false)
                .await;
            Ok(r)
        }
        Ok(Err(e)) => Err(llm_error(app, &e)),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline_exceeded",
            "the LLM call did not finish in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_tolerates_fences() {
        assert_eq!(parse_json_output(" {\"a\":1} "), Some(json!({"a": 1})));
        assert_eq!(
            parse_json_output("```json\n{\"a\":1}\n```"),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse_json_output("```\n[1]\n```"), Some(json!([1])));
        assert_eq!(parse_json_output("Sure! {\"a\":1}"), None);
    }
}
