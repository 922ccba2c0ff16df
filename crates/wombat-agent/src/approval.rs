//! Approvals: a tool call that needs a person's decision becomes a tool
//! request in the backend, and the run stops (`awaiting_approval`); a later
//! send with `metadata.tool_request_id` consumes the decision (exactly once,
//! across replicas and redeliveries) and resumes the turn with the tool's
//! result, or with the rejection.
//!
//! The turn is rebuilt from the request's `context` (our addition to the
//! contract): the conversation of the turn up to the call, stored with the
//! request. On resume the send's own `message` (the notification's text) is
//! not added: the tool result states the decision, and the model continues
//! its turn from there.

use http::StatusCode;
use serde_json::{Value, json};
use wombat_controlplane::AgentClient;
use wombat_core::controlplane::{NewToolRequest, ToolRequest, ToolRequestStatus};
use wombat_core::{ChatMessage, ToolCall};

use crate::ApiError;

/// Largest `context` stored with a request (the contract's bound is 64 KiB).
const MAX_CONTEXT_BYTES: usize = 60 * 1024;

/// `metadata.tool_request_id`, when the send resumes an approval.
pub(crate) fn resume_id(metadata: Option<&serde_json::Map<String, Value>>) -> Option<String> {
    match metadata?.get("tool_request_id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Creates the tool request of `call`, with the turn so far as its context
/// (left out when too large: the resumed model then sees the call and its
/// result only).
pub(crate) async fn create(
    agent: &AgentClient<'_>,
    task_id: &str,
    role: &str,
    call: &ToolCall,
    turn: &[ChatMessage],
    request_key: &str,
) -> Result<ToolRequest, wombat_controlplane::Error> {
    let mut context = json!({"messages": turn});
    if context.to_string().len() > MAX_CONTEXT_BYTES {
        context = json!({"messages": turn.last().map(std::slice::from_ref).unwrap_or_default()});
        if context.to_string().len() > MAX_CONTEXT_BYTES {
            context = json!({"messages": []});
        }
    }
    agent
        .create_tool_request(NewToolRequest {
            task_id: task_id.to_owned(),
            tool: call.name.clone(),
            arguments: Value::Object(call.arguments.clone()),
            call_id: call.id.clone(),
            agent_role: Some(role.to_owned()),
            idempotency_key: Some(format!("toolreq:{request_key}:{}", call.id)),
            context: Some(context),
        })
        .await
}

/// Consumes the decision of `id`: a clear 4xx for a request that is still
/// pending (409 `tool_request_pending`), already consumed (409
/// `tool_request_consumed`), unknown or another tenant's (404).
pub(crate) async fn consume(agent: &AgentClient<'_>, id: &str) -> Result<ToolRequest, ApiError> {
    use wombat_controlplane::Error as E;
    agent.consume_tool_request(id).await.map_err(|e| match &e {
        E::ToolRequestPending { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "tool_request_pending",
            format!("{e}: approve or reject it first"),
        ),
        E::ToolRequestConsumed { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "tool_request_consumed",
            format!("{e}; its decision is not acted on twice"),
        ),
        E::ToolRequestNotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "tool_request_not_found",
            e.to_string(),
        ),
        E::InvalidToolRequestId { .. } => {
            ApiError::bad_request(format!("metadata.tool_request_id: {e}"))
        }
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "backend_error",
            format!("backend failed while consuming the tool request: {e}"),
        ),
    })
}

/// The turn stored with a request (`context.messages`), or nothing when
/// the backend kept none or it does not parse.
pub(crate) fn turn(record: &ToolRequest) -> Vec<ChatMessage> {
    record
        .context
        .as_ref()
        .and_then(|c| c.get("messages"))
        .and_then(|m| serde_json::from_value::<Vec<ChatMessage>>(m.clone()).ok())
        .unwrap_or_default()
}

/// Whether the person approved.
pub(crate) fn approved(record: &ToolRequest) -> bool {
    record.status == ToolRequestStatus::Approved
}
