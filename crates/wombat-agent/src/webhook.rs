//! The payload of the request's webhook.

use serde_json::{Value, json};

use crate::host::Host;
use crate::run::{Answer, RequiresAction, RunInfo};

/// A webhook event: `agent.completed` when `error` is `None`, else
/// `agent.error`. The reply, usage and cost are included whenever the LLM
/// answered, so a receiver can still keep a reply whose write failed.
pub(crate) fn event<H: Host>(
    p: &RunInfo<H>,
    task_id: Option<&str>,
    answer: Option<&Answer>,
    error: Option<&str>,
) -> Value {
    let mut event = json!({
        "event": if error.is_none() { "agent.completed" } else { "agent.error" },
        "timestamp": jiff::Timestamp::now().to_string(),
        "task_id": task_id,
        "user_id": p.key.user_id(),
        "role": p.key.role(),
        "metadata": p.req.metadata,
    });
    if let Some(a) = answer {
        event["response"] = json!(a.text);
        event["usage"] = json!(a.usage);
        event["cost"] = json!(a.cost);
        if let Some(w) = &a.budget_warning {
            event["budget_warning"] = (**w).clone();
        }
        if !a.trace.is_empty() {
            event["tools"] = json!(a.trace);
        }
        if let Some(requests) = &a.tool_requests {
            if error.is_none() {
                event["event"] = json!("agent.awaiting_approval");
            }
            event["tool_requests"] = requests.clone();
        }
    }
    if let Some(error) = error {
        event["error"] = json!(error);
    }
    event
}

/// `agent.requires_action`: the run stopped for the caller's tools; nothing
/// was written to the backend for this turn.
pub(crate) fn requires_action<H: Host>(
    p: &RunInfo<H>,
    task_id: Option<&str>,
    answer: &Answer,
    action: &RequiresAction,
) -> Value {
    let mut e = event(p, task_id, Some(answer), None);
    e["event"] = json!("agent.requires_action");
    e["tool_calls"] = action.tool_calls.clone();
    e
}
