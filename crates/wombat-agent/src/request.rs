//! The request body of `send` and `stream` (wire types only).

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use wombat_core::ChatMessage;

/// Accepts an id given as a JSON string or number.
fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "task_id must be a string or a number, got {other}"
            )));
        }
    })
}

/// The request body of `send` and `stream`.
#[derive(Debug, Deserialize)]
pub struct SendRequest {
    /// The tenant.
    pub user_id: String,
    /// `agent:<role>:<user_id>`.
    pub session_key: String,
    /// The new user message.
    pub message: String,
    /// History before `message` (0.1.0 shape or OpenAI's tool turns).
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    /// The task thread to answer in.
    #[serde(default, deserialize_with = "opt_id")]
    pub task_id: Option<String>,
    /// Find-or-create the task by this title.
    #[serde(default)]
    pub task_title: Option<String>,
    /// Description of a task created by title.
    #[serde(default)]
    pub task_description: Option<String>,
    /// Metadata of a task created by title.
    #[serde(default)]
    pub task_metadata: Option<Value>,
    /// Options (`model`, `prompt_mode`, `limits`, …) and pass-through data.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    /// `send` with `stream: true` streams.
    #[serde(default)]
    pub stream: bool,
    /// Where to announce the result. Boxed: most requests have none, and
    /// the request lives as long as the run (a held stream's included).
    #[serde(default)]
    pub webhook: Option<Box<WebhookSpec>>,
    /// Caller tools (OpenAI's shape): the model may call them, and the run
    /// then stops with `requires_action` for the caller to execute them.
    #[serde(default)]
    pub tools: Option<Vec<CallerTool>>,
}

/// One entry of the request's `tools`:
/// `{"type": "function", "function": {name, description?, parameters?}}`.
#[derive(Debug, Deserialize)]
pub struct CallerTool {
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: CallerFunction,
}

/// The `function` of a caller tool.
#[derive(Debug, Deserialize)]
pub struct CallerFunction {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of its arguments (an object schema; `{}` when absent).
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// The `webhook` object of a request.
#[derive(Clone, Deserialize)]
pub struct WebhookSpec {
    /// Where to POST the event.
    pub url: String,
    /// HMAC secret for the signature header.
    #[serde(default)]
    pub secret: Option<String>,
    /// Extra headers.
    #[serde(default)]
    pub headers: Option<Map<String, Value>>,
}

impl std::fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSpec")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}
