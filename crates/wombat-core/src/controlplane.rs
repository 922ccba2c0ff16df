//! DTOs of the Control Plane Contract v1 (`CONTROL_PLANE.md`): what Wombat
//! sends to a backend and what it reads back.
//!
//! These are wire contracts: field names are exact. Optional fields that are
//! `None` are left out when serialising. Identifiers are strings on our side,
//! but real backends often use integer ids, so every `id` field also accepts
//! a JSON number when deserialising.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The contract version this crate speaks.
pub const CONTRACT_VERSION: &str = "v1";

/// Deserialises an identifier given as a JSON string or number.
fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Str(String),
        Int(i64),
        Uint(u64),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Str(s) => s,
        Raw::Int(n) => n.to_string(),
        Raw::Uint(n) => n.to_string(),
    })
}

/// Deserialises an optional identifier given as a JSON string or number
/// (`null` reads as absent).
fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Str(String),
        Int(i64),
        Uint(u64),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Str(s) => s,
        Raw::Int(n) => n.to_string(),
        Raw::Uint(n) => n.to_string(),
    }))
}

/// `GET /api/mission-control/capabilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `"v1"`.
    pub contract_version: String,
    /// What the backend offers beyond the required endpoints.
    pub features: Features,
}

/// Feature flags of [`Capabilities`]. Missing flags read as `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Features {
    /// Task endpoints (required).
    pub tasks: bool,
    /// Message endpoint (required).
    pub messages: bool,
    /// Document endpoint (required).
    pub documents: bool,
    /// `dispatch/undelivered` and `dispatch/notifications/{id}/deliver`.
    pub notifications_dispatch: bool,
    /// `GET /events` (SSE).
    pub events_sse: bool,
    /// `POST /heartbeat`.
    pub heartbeat: bool,
    /// `POST /standup`.
    pub standup: bool,
    /// `/tool-requests`.
    pub tool_requests: bool,
    /// `GET /tasks?title=<exact title>` returns only tasks with that title
    /// (beyond v1, optional).
    pub task_title_filter: bool,
}

/// A task as listed or created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Backend id.
    #[serde(deserialize_with = "id")]
    pub id: String,
    /// Title; Wombat finds threads by exact title. A backend task without
    /// one reads as an empty title rather than failing the whole page.
    #[serde(default)]
    pub title: String,
    /// Free-form status such as `in_progress`.
    #[serde(default)]
    pub status: String,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Optional metadata object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `GET /api/mission-control/tasks` page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// Tasks of this page.
    pub items: Vec<Task>,
    /// Cursor of the next page; absent or null on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/mission-control/tasks` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// Title (required).
    pub title: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Status, e.g. `in_progress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Metadata object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Makes retries and concurrent creates safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Who wrote a control-plane message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorType {
    /// An agent (Wombat).
    Agent,
    /// A human user.
    User,
}

/// `POST /api/mission-control/messages` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Task the message belongs to.
    pub task_id: String,
    /// Text.
    pub content: String,
    /// Author kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_type: Option<ActorType>,
    /// Author id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// Agent role when `actor_type` is `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_role: Option<String>,
    /// Free-form attachments; Wombat sends `{model, provider, usage, cost}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Value>,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A created message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Backend id.
    #[serde(deserialize_with = "id")]
    pub id: String,
    /// Task id.
    #[serde(deserialize_with = "id")]
    pub task_id: String,
    /// Text.
    #[serde(default)]
    pub content: String,
}

/// `POST /api/mission-control/documents` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDocument {
    /// Title.
    pub title: String,
    /// Markdown content.
    pub content: String,
    /// Kind of document, e.g. `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_type: Option<String>,
    /// Task the document belongs to.
    pub task_id: String,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A created document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Backend id.
    #[serde(deserialize_with = "id")]
    pub id: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Kind of document.
    #[serde(default)]
    pub doc_type: Option<String>,
    /// Task id.
    #[serde(deserialize_with = "id")]
    pub task_id: String,
}

/// One notification waiting to be delivered to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Notification id, used to acknowledge.
    #[serde(deserialize_with = "id")]
    pub notification_id: String,
    /// Tenant.
    pub user_id: String,
    /// Session the agent answers in.
    pub session_key: String,
    /// Text handed to the agent.
    pub content: String,
    /// Task the reply belongs on, when the backend names one (optional).
    #[serde(
        default,
        deserialize_with = "opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub task_id: Option<String>,
    /// Object the dispatcher passes through to the daemon (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `GET /api/mission-control/dispatch/undelivered` response. Deliveries are
/// kept as raw JSON so that one malformed entry can be counted as failed
/// instead of failing the whole batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Undelivered {
    /// Pending deliveries, oldest first.
    #[serde(default)]
    pub deliveries: Vec<Value>,
}

/// `POST /api/mission-control/heartbeat` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Tenant.
    pub user_id: String,
}

/// `POST /api/mission-control/standup` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandupRequest {
    /// Tenant.
    pub user_id: String,
    /// IANA zone the standup is for.
    pub timezone: String,
}

/// The error body of the contract (and of the daemon API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Human message; always first.
    pub error: String,
    /// Stable snake_case code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Extra detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_may_be_numbers() {
        let page: TaskPage = serde_json::from_str(
            r#"{"items":[{"id":7,"title":"t","status":"open"},{"id":"x","title":"u"}],"next_cursor":null}"#,
        )
        .expect("parses");
        assert_eq!(page.items[0].id, "7");
        assert_eq!(page.items[1].id, "x");
        assert_eq!(page.next_cursor, None);
        let m: Message =
            serde_json::from_str(r#"{"id":1,"task_id":2,"content":"c"}"#).expect("parses");
        assert_eq!((m.id.as_str(), m.task_id.as_str()), ("1", "2"));
    }

    #[test]
    fn optional_fields_are_omitted() {
        let body = NewMessage {
            task_id: "t1".into(),
            content: "hi".into(),
            actor_type: Some(ActorType::Agent),
            actor_id: None,
            agent_role: Some("agent".into()),
            attachments: None,
            idempotency_key: Some("k".into()),
        };
        assert_eq!(
            serde_json::to_string(&body).expect("serialises"),
            r#"{"task_id":"t1","content":"hi","actor_type":"agent","agent_role":"agent","idempotency_key":"k"}"#
        );
    }

    #[test]
    fn capabilities_tolerate_missing_flags() {
        let caps: Capabilities = serde_json::from_str(
            r#"{"contract_version":"v1","features":{"tasks":true,"extra":1}}"#,
        )
        .expect("parses");
        assert!(caps.features.tasks && !caps.features.heartbeat);
    }
}
