//! Chat messages as they travel between the API, the prompt builder, the run
//! loop and the LLM adapters.
//!
//! A message is a [`Role`] plus content [`Part`]s: text, a tool call the
//! model made, or the result of one. Every part kind is its own struct marked
//! `#[non_exhaustive]`, so per-part data a later provider feature needs (a
//! prompt-caching hint, a provider signature) is a new field, and new kinds
//! of content (images, files) are new variants of [`Part`] — neither is a
//! breaking rewrite.
//!
//! On the wire (the daemon's request history and compaction output) a message
//! uses OpenAI's chat shape, which is also 0.1.0's for text:
//! `{"role":"user","content":"hi"}`; an assistant turn with
//! `tool_calls: [{id, type: "function", function: {name, arguments: "<JSON>"}}]`;
//! and `{"role":"tool","tool_call_id":"…","content":"…"}` for a result.
//! Content may also be OpenAI's array of `{"type":"text","text":…}` parts.

use std::borrow::Cow;
use std::fmt;

use serde::de::Error as _;
use serde::ser::{Error as _, SerializeMap};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions from the operator (system prompt or an injected summary).
    System,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call, answering an assistant's [`ToolCall`].
    Tool,
}

impl Role {
    /// The wire name: `system`, `user`, `assistant` or `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Part {
    /// Text.
    Text(TextPart),
    /// A tool call the model made (assistant messages).
    ToolCall(ToolCall),
    /// The result of a tool call (tool messages).
    ToolResult(ToolResult),
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Part::Text(TextPart::new(text))
    }

    /// The text, when this is a text part.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Part::Text(t) => Some(&t.text),
            _ => None,
        }
    }
}

/// A text part.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextPart {
    /// The text.
    pub text: String,
}

impl TextPart {
    /// A text part holding `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self { text: text.into() }
    }
}

/// A call the model asked for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ToolCall {
    /// The call's id, unique within the conversation; the result names it.
    /// Providers that send none (Gemini) get one made up by the adapter.
    pub id: String,
    /// The tool's name as declared to the model.
    pub name: String,
    /// The arguments, parsed once from the model's JSON.
    pub arguments: Map<String, Value>,
    /// A provider-opaque token that must go back with the call when the
    /// conversation is replayed to the same provider (Gemini's
    /// `thoughtSignature`, which Gemini 3 requires on every function call of
    /// the current turn). Adapters of other providers ignore it; the
    /// OpenAI-shape wire format does not carry it.
    pub signature: Option<String>,
}

impl ToolCall {
    /// A call of `name` with id `id` and these arguments.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: Map<String, Value>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
            signature: None,
        }
    }

    /// The same call carrying a provider signature (see
    /// [`ToolCall::signature`]).
    #[must_use]
    pub fn with_signature(mut self, signature: impl Into<String>) -> Self {
        self.signature = Some(signature.into());
        self
    }
}

/// What a tool returned.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ToolContent {
    /// Plain text.
    Text(String),
    /// A JSON value.
    Json(Value),
}

impl ToolContent {
    /// The content as text: itself, or the JSON serialised compactly.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            ToolContent::Text(t) => Cow::Borrowed(t),
            ToolContent::Json(v) => Cow::Owned(v.to_string()),
        }
    }
}

/// The result of one tool call, fed back to the model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ToolResult {
    /// The [`ToolCall::id`] this answers.
    pub call_id: String,
    /// What the tool returned (or the error, when `is_error`).
    pub content: ToolContent,
    /// The call failed; `content` says why.
    pub is_error: bool,
}

impl ToolResult {
    /// A successful result.
    pub fn new(call_id: impl Into<String>, content: ToolContent) -> Self {
        Self {
            call_id: call_id.into(),
            content,
            is_error: false,
        }
    }

    /// A failed call, with `message` saying why.
    pub fn error(call_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            call_id: call_id.into(),
            content: ToolContent::Text(message.into()),
            is_error: true,
        }
    }
}

/// One message of a conversation.
///
/// By convention a [`Role::Tool`] message carries exactly one
/// [`Part::ToolResult`] (OpenAI's shape); adapters whose provider groups
/// results differently (Anthropic, Gemini) merge consecutive tool messages.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The content, in order.
    pub parts: Vec<Part>,
}

impl ChatMessage {
    /// A message with the given role and one text part.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![Part::text(content)],
        }
    }

    /// A message with the given role and parts.
    pub fn with_parts(role: Role, parts: Vec<Part>) -> Self {
        Self { role, parts }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A `tool` message carrying one result.
    pub fn tool_result(result: ToolResult) -> Self {
        Self {
            role: Role::Tool,
            parts: vec![Part::ToolResult(result)],
        }
    }

    /// The text parts joined (borrowed when there is exactly one).
    pub fn text(&self) -> Cow<'_, str> {
        let mut texts = self.parts.iter().filter_map(Part::as_text);
        match (texts.next(), texts.next()) {
            (None, _) => Cow::Borrowed(""),
            (Some(one), None) => Cow::Borrowed(one),
            (Some(a), Some(b)) => {
                let mut s = String::with_capacity(a.len() + b.len());
                s.push_str(a);
                s.push_str(b);
                texts.for_each(|t| s.push_str(t));
                Cow::Owned(s)
            }
        }
    }

    /// Length in bytes of the content as a provider would receive it (text,
    /// call names and arguments, results), for size estimates and limits.
    pub fn text_len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.text.len(),
                Part::ToolCall(c) => c.id.len() + c.name.len() + json_len(&c.arguments),
                Part::ToolResult(r) => match &r.content {
                    ToolContent::Text(t) => t.len(),
                    ToolContent::Json(v) => v.to_string().len(),
                },
            })
            .sum()
    }

    /// The tool calls in this message.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.parts.iter().filter_map(|p| match p {
            Part::ToolCall(c) => Some(c),
            _ => None,
        })
    }

    /// The tool results in this message.
    pub fn tool_results(&self) -> impl Iterator<Item = &ToolResult> {
        self.parts.iter().filter_map(|p| match p {
            Part::ToolResult(r) => Some(r),
            _ => None,
        })
    }
}

// ---- wire shape (OpenAI chat, a superset of 0.1.0's) ----

#[derive(Deserialize)]
struct WireMessage {
    role: Role,
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    is_error: Option<bool>,
}

enum WireContent {
    Text(String),
    Parts(Vec<WireContentPart>),
}

/// A string or an array of parts. Not `#[serde(untagged)]`: a content of
/// another type must keep 0.1.0's error, `invalid type: …, expected a
/// string` (the daemon answers it with "Expected string, received …"),
/// rather than untagged's "data did not match any variant".
impl<'de> Deserialize<'de> for WireContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = WireContent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WireContent, E> {
                Ok(WireContent::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<WireContent, E> {
                Ok(WireContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<WireContent, A::Error> {
                // Bounded by the request body; no capacity taken from a hint.
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(WireContent::Parts(parts))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
struct WireContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct WireToolCall {
    id: String,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: WireFunction,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Deserialize, Serialize)]
struct WireFunction {
    name: String,
    /// A JSON object serialised as a string (OpenAI's convention).
    #[serde(default)]
    arguments: String,
}

/// Why a wire message was refused. The text names the field and the value's
/// problem, never the value.
#[derive(Debug)]
enum WireError {
    /// A required field is absent (reported as serde's `missing field`, which
    /// the daemon answers with 0.1.0's `"Required"`).
    Missing(&'static str),
    /// A field is present but wrong.
    Invalid(&'static str, String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Missing(field) => write!(f, "missing field `{field}`"),
            WireError::Invalid(field, why) => write!(f, "{field}: {why}"),
        }
    }
}

/// Parses OpenAI's `arguments` string into an object (an empty string is `{}`).
pub fn parse_tool_arguments(raw: &str) -> std::result::Result<Map<String, Value>, String> {
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "tool arguments must be a JSON object, got {}",
            json_kind(&other)
        )),
        Err(e) => Err(format!("tool arguments are not valid JSON: {e}")),
    }
}

fn json_len(map: &Map<String, Value>) -> usize {
    serde_json::to_vec(map).map_or(0, |v| v.len())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl TryFrom<WireMessage> for ChatMessage {
    type Error = WireError;

    fn try_from(w: WireMessage) -> Result<Self, WireError> {
        let mut parts = Vec::with_capacity(1);
        let text = match w.content {
            None => None,
            Some(WireContent::Text(t)) => Some(t),
            Some(WireContent::Parts(ps)) => {
                let mut joined = String::new();
                for p in ps {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => joined.push_str(&t),
                        ("text", None) => {
                            return Err(WireError::Invalid(
                                "content",
                                "a text part needs `text`".into(),
                            ));
                        }
                        _ => {
                            return Err(WireError::Invalid(
                                "content",
                                "only parts of type \"text\" are supported".into(),
                            ));
                        }
                    }
                }
                Some(joined)
            }
        };
        if w.role == Role::Tool {
            let call_id = w.tool_call_id.ok_or(WireError::Missing("tool_call_id"))?;
            parts.push(Part::ToolResult(ToolResult {
                call_id,
                content: ToolContent::Text(text.unwrap_or_default()),
                is_error: w.is_error.unwrap_or(false),
            }));
            return Ok(ChatMessage::with_parts(Role::Tool, parts));
        }
        let calls = w.tool_calls.unwrap_or_default();
        if !calls.is_empty() && w.role != Role::Assistant {
            return Err(WireError::Invalid(
                "tool_calls",
                "only assistant messages carry tool calls".into(),
            ));
        }
        match text {
            // An assistant turn that only calls tools has no text part.
            Some(t) if !t.is_empty() || calls.is_empty() => parts.push(Part::text(t)),
            Some(_) => {}
            None if calls.is_empty() => {
                return Err(WireError::Missing("content"));
            }
            None => {}
        }
        for c in calls {
            if c.kind != "function" {
                return Err(WireError::Invalid(
                    "tool_calls",
                    "only calls of type \"function\" are supported".into(),
                ));
            }
            let arguments = parse_tool_arguments(&c.function.arguments)
                .map_err(|e| WireError::Invalid("tool_calls", e))?;
            parts.push(Part::ToolCall(ToolCall::new(
                c.id,
                c.function.name,
                arguments,
            )));
        }
        Ok(ChatMessage::with_parts(w.role, parts))
    }
}

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = WireMessage::deserialize(d)?;
        ChatMessage::try_from(wire).map_err(|e| match e {
            WireError::Missing(field) => D::Error::missing_field(field),
            invalid @ WireError::Invalid(..) => D::Error::custom(invalid),
        })
    }
}

impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("role", self.role.as_str())?;
        if self.role == Role::Tool {
            let mut results = self.tool_results();
            let (Some(r), None) = (results.next(), results.next()) else {
                return Err(S::Error::custom(
                    "a tool message must carry exactly one tool result",
                ));
            };
            map.serialize_entry("tool_call_id", &r.call_id)?;
            map.serialize_entry("content", &r.content.to_text())?;
            if r.is_error {
                map.serialize_entry("is_error", &true)?;
            }
            return map.end();
        }
        let calls: Vec<WireToolCall> = self
            .tool_calls()
            .map(|c| WireToolCall {
                id: c.id.clone(),
                kind: function_type(),
                function: WireFunction {
                    name: c.name.clone(),
                    arguments: Value::Object(c.arguments.clone()).to_string(),
                },
            })
            .collect();
        if calls.is_empty() {
            map.serialize_entry("content", &self.text())?;
        } else {
            let text = self.text();
            if text.is_empty() {
                map.serialize_entry("content", &Value::Null)?;
            } else {
                map.serialize_entry("content", &text)?;
            }
            map.serialize_entry("tool_calls", &calls)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_messages_keep_the_0_1_0_shape() {
        let m: ChatMessage =
            serde_json::from_str(r#"{"role":"assistant","content":"hi"}"#).expect("parses");
        assert_eq!(m, ChatMessage::assistant("hi"));
        assert_eq!(
            serde_json::to_value(&m).expect("serialises"),
            json!({"role":"assistant","content":"hi"})
        );
        assert_eq!(Role::System.as_str(), "system");
        let empty: ChatMessage =
            serde_json::from_str(r#"{"role":"user","content":""}"#).expect("parses");
        assert_eq!(empty.text(), "");
    }

    #[test]
    fn openai_tool_turns_round_trip() {
        let wire = json!([
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}},
                {"id":"c2","type":"function","function":{"name":"now","arguments":""}}
            ]},
            {"role":"tool","tool_call_id":"c1","content":"rain"},
            {"role":"tool","tool_call_id":"c2","content":"noon"}
        ]);
        let msgs: Vec<ChatMessage> = serde_json::from_value(wire).expect("parses");
        let calls: Vec<_> = msgs[0].tool_calls().collect();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments["city"], "Oslo");
        assert!(calls[1].arguments.is_empty());
        assert!(msgs[0].parts.iter().all(|p| p.as_text().is_none()));
        assert_eq!(msgs[1].role, Role::Tool);
        let r = msgs[1].tool_results().next().expect("a result");
        assert_eq!((r.call_id.as_str(), r.is_error), ("c1", false));
        let back = serde_json::to_value(&msgs).expect("serialises");
        assert_eq!(back[0]["content"], Value::Null);
        assert_eq!(
            back[0]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(
            back[2],
            json!({"role":"tool","tool_call_id":"c2","content":"noon"})
        );
    }

    #[test]
    fn bad_tool_turns_are_refused_with_the_field_named() {
        let cases = [
            (json!({"role":"tool","content":"x"}), "tool_call_id"),
            (json!({"role":"user"}), "content"),
            (
                json!({"role":"user","content":"x","tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}}]}),
                "tool_calls",
            ),
            (
                json!({"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"[1]"}}]}),
                "tool_calls",
            ),
            (
                json!({"role":"assistant","tool_calls":[{"id":"a","function":{"name":"f","arguments":"{"}}]}),
                "tool_calls",
            ),
            (
                json!({"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}),
                "content",
            ),
            (json!({"role":"robot","content":"x"}), "unknown variant"),
        ];
        for (wire, field) in cases {
            let err = serde_json::from_value::<ChatMessage>(wire.clone())
                .expect_err("refused")
                .to_string();
            assert!(err.contains(field), "{wire}: {err}");
        }
    }

    /// 0.1.0's history error for a content of the wrong type was serde's
    /// `invalid type: …, expected a string` (which the daemon turns into
    /// "Expected string, received number"); the content-parts extension
    /// must not change it.
    #[test]
    fn wrong_content_types_keep_the_0_1_0_error() {
        for (content, got) in [
            (json!(5), "integer `5`"),
            (json!(true), "boolean `true`"),
            (json!({"text": "x"}), "map"),
        ] {
            let err =
                serde_json::from_value::<ChatMessage>(json!({"role": "user", "content": content}))
                    .expect_err("refused")
                    .to_string();
            assert_eq!(err, format!("invalid type: {got}, expected a string"));
        }
    }

    #[test]
    fn content_arrays_of_text_are_joined() {
        let m: ChatMessage = serde_json::from_value(
            json!({"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}),
        )
        .expect("parses");
        assert_eq!(m.text(), "ab");
    }
}
