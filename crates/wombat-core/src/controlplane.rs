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
    d.deserialize_any(IdVisitor)
}

/// Deserialises an optional identifier given as a JSON string or number
/// (`null` reads as absent).
fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptIdVisitor)
}

/// A string or integer id, read straight from the input: an untagged enum
/// buffered every id (and allocated) before trying its variants, about
/// four times the work per id, and said only "did not match any variant"
/// for a wrong type.
struct IdVisitor;

impl<'de> serde::de::Visitor<'de> for IdVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or integer id")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

struct OptIdVisitor;

impl<'de> serde::de::Visitor<'de> for OptIdVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or integer id, or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        id(d).map(Some)
    }
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
    /// `/tool-requests`: create, list, get and resolve (`PATCH`) tool
    /// requests that wait for a human's approval.
    pub tool_requests: bool,
    /// `POST /tool-requests/{id}/consume` marks a resolved request consumed
    /// exactly once (beyond v1, optional).
    pub tool_requests_consume: bool,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Free-form attachments, as JSON text (sent as they are, so a
    /// caller serialises them once, straight from its own types:
    /// [`JsonText::to_json`](crate::json::JsonText::to_json) or
    /// [`JsonText::object`](crate::json::JsonText::object)); Wombat sends
    /// `{cost, model, provider, usage}` and, after tool calls, `tools` and
    /// `tool_requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<crate::json::JsonText>,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl NewMessage {
    /// Appends this message as JSON to `out`: the bytes `serde_json` writes
    /// for it (attachments as they are), written without going through
    /// `Serialize` — one per send, so worth the few lines.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut obj = crate::json::ObjectWriter::new(out);
        obj.str("task_id", &self.task_id)
            .str("content", &self.content);
        if let Some(actor) = self.actor_type {
            obj.str(
                "actor_type",
                match actor {
                    ActorType::Agent => "agent",
                    ActorType::User => "user",
                },
            );
        }
        obj.opt_str("actor_id", self.actor_id.as_deref())
            .opt_str("agent_role", self.agent_role.as_deref());
        if let Some(attachments) = &self.attachments {
            obj.json("attachments", attachments);
        }
        obj.opt_str("idempotency_key", self.idempotency_key.as_deref());
        obj.end();
    }
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

/// Largest `context` of a tool request, in bytes of its JSON text (64 KiB).
pub const TOOL_REQUEST_CONTEXT_MAX_BYTES: usize = 64 * 1024;

/// Where a tool request stands. `pending` until a person resolves it;
/// consumption is recorded separately (`consumed_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolRequestStatus {
    /// Waiting for a decision.
    Pending,
    /// A person allowed the call.
    Approved,
    /// A person refused the call.
    Rejected,
}

impl ToolRequestStatus {
    /// The wire name: `pending`, `approved` or `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for ToolRequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/mission-control/tool-requests` body: a tool call that waits
/// for a person's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewToolRequest {
    /// Task the run belongs to.
    pub task_id: String,
    /// Tool name as the model called it (e.g. `server__tool`).
    pub tool: String,
    /// The call's arguments (a JSON object).
    pub arguments: Value,
    /// The model's id of the call, so the result can be fed back to it.
    pub call_id: String,
    /// Agent role of the run (its session is `user:<user_id>:<role>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_role: Option<String>,
    /// Makes retries safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Beyond v1: an object (at most [`TOOL_REQUEST_CONTEXT_MAX_BYTES`] as
    /// JSON) the backend stores and returns as is, so a resumed run can
    /// rebuild the turn. A backend that ignores it still works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// A tool request as the backend stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRequest {
    /// Backend id.
    #[serde(deserialize_with = "id")]
    pub id: String,
    /// Task the run belongs to.
    #[serde(deserialize_with = "id")]
    pub task_id: String,
    /// Tool name.
    pub tool: String,
    /// The call's arguments.
    #[serde(default)]
    pub arguments: Value,
    /// The model's id of the call.
    #[serde(default)]
    pub call_id: String,
    /// Agent role of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_role: Option<String>,
    /// Decision state.
    pub status: ToolRequestStatus,
    /// Why it was approved or rejected, when the person said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    /// When it was approved or rejected (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// When a run consumed the decision (RFC 3339; `tool_requests_consume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_at: Option<String>,
    /// The object given at creation, if the backend keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// `GET /api/mission-control/tool-requests` page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRequestPage {
    /// Requests of this page, oldest first.
    pub items: Vec<ToolRequest>,
    /// Cursor of the next page; absent or null on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `PATCH /api/mission-control/tool-requests/{id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRequestDecision {
    /// `approved` or `rejected` (`pending` is refused by the backend).
    pub status: ToolRequestStatus,
    /// Why; shown to the model on a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    fn a_new_message_writes_what_serde_writes() {
        let full = NewMessage {
            task_id: "t\"1".into(),
            content: "line\nnext é \u{1}".into(),
            actor_type: Some(ActorType::Agent),
            actor_id: Some("wombat".into()),
            agent_role: Some("ceo".into()),
            attachments: Some(
                crate::json::JsonText::parse(r#"{"model":"m","usage":{"prompt_tokens":1}}"#.into())
                    .expect("JSON"),
            ),
            idempotency_key: Some("k-1".into()),
        };
        let user = NewMessage {
            actor_type: Some(ActorType::User),
            attachments: None,
            agent_role: None,
            ..full.clone()
        };
        let bare = NewMessage {
            task_id: "t".into(),
            content: String::new(),
            actor_type: None,
            actor_id: None,
            agent_role: None,
            attachments: None,
            idempotency_key: None,
        };
        for message in [full, user, bare] {
            let mut out = Vec::new();
            message.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out).expect("UTF-8"),
                serde_json::to_string(&message).expect("serialises")
            );
        }
    }

    #[test]
    fn an_id_of_another_type_is_named_in_the_error() {
        for body in [
            r#"{"id":1.5,"task_id":2,"content":"c"}"#,
            r#"{"id":true,"task_id":2,"content":"c"}"#,
            r#"{"id":{"x":1},"task_id":2,"content":"c"}"#,
        ] {
            let e = serde_json::from_str::<Message>(body).expect_err(body);
            assert!(e.to_string().contains("a string or integer id"), "{e}");
        }
        let m: Message = serde_json::from_str(r#"{"id":-3,"task_id":"t","content":"c"}"#)
            .expect("a negative id");
        assert_eq!(m.id, "-3");
        let m: Message = serde_json::from_str(
            r#"{"id":"\u0041b","task_id":18446744073709551615,"content":"c"}"#,
        )
        .expect("escaped and large ids");
        assert_eq!(
            (m.id.as_str(), m.task_id.as_str()),
            ("Ab", "18446744073709551615")
        );
    }

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
        assert!(!caps.features.tool_requests_consume);
    }

    #[test]
    fn tool_requests_round_trip() {
        let tr: ToolRequest = serde_json::from_str(
            r#"{"id":5,"task_id":"t1","tool":"fs__rm","arguments":{"path":"/x"},"call_id":"c1",
                "status":"approved","reason":null,"created_at":"2026-01-01T00:00:00Z","extra":1}"#,
        )
        .expect("parses");
        assert_eq!(
            (tr.id.as_str(), tr.status),
            ("5", ToolRequestStatus::Approved)
        );
        assert_eq!(tr.reason, None);
        assert!(
            serde_json::from_str::<ToolRequest>(
                r#"{"id":"a","task_id":"t","tool":"x","status":"maybe"}"#
            )
            .is_err()
        );
        let new = NewToolRequest {
            task_id: "t1".into(),
            tool: "fs__rm".into(),
            arguments: serde_json::json!({}),
            call_id: "c1".into(),
            agent_role: None,
            idempotency_key: None,
            context: None,
        };
        assert_eq!(
            serde_json::to_string(&new).expect("serialises"),
            r#"{"task_id":"t1","tool":"fs__rm","arguments":{},"call_id":"c1"}"#
        );
        let decision = ToolRequestDecision {
            status: ToolRequestStatus::Rejected,
            reason: Some("no".into()),
        };
        assert_eq!(
            serde_json::to_string(&decision).expect("serialises"),
            r#"{"status":"rejected","reason":"no"}"#
        );
    }
}
