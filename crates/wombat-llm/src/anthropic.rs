//! The Anthropic Messages adapter (`POST {base}/v1/messages`,
//! `anthropic-version: 2023-06-01`).
//!
//! The system prompt is the top-level `system` field, consecutive same-role
//! messages are merged, and `max_tokens` is always sent. Structured output
//! with an object schema uses a forced tool whose input is the answer; other
//! JSON requests are made by instruction. Wire types are private here; no
//! retries happen in this module.

use std::collections::VecDeque;

use reqwest::Client;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wombat_core::{Provider, Role, Usage};

use crate::http::{self, CallCtx, Endpoint, ErrorResponse, SseParser, Step};
use crate::sse::SseEvent;
use crate::types::{
    ApiKey, ChatProvider, ChatRequest, Completion, EventStream, FinishReason, ResponseFormat,
    StreamEvent,
};
use crate::{Error, Result};

/// `max_tokens` sent when the request sets none (Anthropic requires it).
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

const API_VERSION: &str = "2023-06-01";

/// Anthropic Messages at a base URL such as `https://api.anthropic.com`.
#[derive(Debug, Clone)]
pub struct AnthropicAdapter {
    client: Client,
    /// `{base}/v1/messages`.
    endpoint: Endpoint,
    key: Option<ApiKey>,
}

impl AnthropicAdapter {
    /// An adapter using the shared `client`. Without a key, calls fail with
    /// [`Error::MissingApiKey`].
    pub fn new(client: Client, base_url: impl Into<String>, key: Option<ApiKey>) -> Self {
        Self {
            client,
            endpoint: Endpoint::new(format!(
                "{}/v1/messages",
                base_url.into().trim_end_matches('/')
            )),
            key,
        }
    }

    fn prepare(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<(reqwest::RequestBuilder, CallCtx, bool)> {
        let Some(key) = &self.key else {
            return Err(Error::MissingApiKey {
                provider: Provider::Anthropic,
                env: "ANTHROPIC_API_KEY",
            });
        };
        let ctx = CallCtx {
            provider: Provider::Anthropic,
            model: req.model.clone(),
            key: Some(key.clone()),
        };
        let body = WireRequest::new(req, stream);
        let forced_tool = body.tool_choice.is_some();
        let builder = self
            .endpoint
            .post(&self.client)
            .header("x-api-key", key.expose())
            .header("anthropic-version", API_VERSION)
            .json(&body);
        Ok((builder, ctx, forced_tool))
    }
}

#[async_trait::async_trait]
impl ChatProvider for AnthropicAdapter {
    async fn complete(&self, req: &ChatRequest) -> Result<Completion> {
        let (builder, ctx, forced_tool) = self.prepare(req, false)?;
        let resp = http::send(builder, &ctx, classify).await?;
        let wire: WireResponse = http::read_json(resp, &ctx).await?;
        let mut text = String::new();
        let mut tool_json = None;
        for block in wire.content {
            match block {
                WireBlock::Text { text: t } => text.push_str(&t),
                WireBlock::ToolUse { input } if forced_tool => {
                    tool_json = Some(
                        serde_json::to_string(&input)
                            .map_err(|e| ctx.malformed(format!("tool input: {e}")))?,
                    );
                }
                WireBlock::ToolUse { .. } | WireBlock::Other => {}
            }
        }
        // With a forced tool the answer is the tool input; any text beside
        // it is commentary, not the JSON asked for.
        if let Some(json) = tool_json {
            text = json;
        }
        Ok(Completion {
            tool_calls: Vec::new(),
            invalid_tool_calls: Vec::new(),
            text,
            usage: wire.usage.map(WireUsage::into_usage).unwrap_or_default(),
            finish_reason: wire
                .stop_reason
                .as_deref()
                .map(|r| stop_reason(r, forced_tool)),
        })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<EventStream> {
        let (builder, ctx, forced_tool) = self.prepare(req, true)?;
        let resp = http::send(builder, &ctx, classify).await?;
        Ok(http::sse_stream(
            resp,
            ctx,
            Parser {
                forced_tool,
                ..Parser::default()
            },
        ))
    }
}

// ---- request ----

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: String,
}

const JSON_INSTRUCTION: &str =
    "Respond with only a valid JSON value: no prose, no Markdown code fences.";

impl<'a> WireRequest<'a> {
    fn new(req: &'a ChatRequest, stream: bool) -> Self {
        let mut system = http::collect_system(req);
        let messages = http::merge_same_role(
            req.messages
                .iter()
                .filter(|m| m.role != Role::System)
                .map(|m| (m.role, m.text().into_owned())),
        )
        .into_iter()
        .map(|(role, content)| WireMessage {
            role: if role == Role::Assistant {
                "assistant"
            } else {
                "user"
            },
            content,
        })
        .collect();
        let mut tools = None;
        let mut tool_choice = None;
        let mut instruction = None;
        match &req.response_format {
            Some(ResponseFormat::JsonSchema { name, schema })
                if schema.get("type").and_then(Value::as_str) == Some("object") =>
            {
                let name = crate::schema::tool_name(name);
                tools = Some(json!([{
                    "name": name,
                    "description": "Record the answer. Its input is the complete response.",
                    "input_schema": schema,
                }]));
                tool_choice = Some(json!({"type": "tool", "name": name}));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                instruction = Some(format!(
                    "{JSON_INSTRUCTION} It must conform to this JSON Schema:\n{schema}"
                ));
            }
            Some(ResponseFormat::Json) => instruction = Some(JSON_INSTRUCTION.to_owned()),
            None => {}
        }
        if let Some(instruction) = instruction {
            system = Some(match system {
                Some(s) => format!("{s}\n\n{instruction}"),
                None => instruction,
            });
        }
        Self {
            model: &req.model,
            max_tokens: req.max_tokens.unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS),
            system,
            messages,
            // Anthropic accepts 0..=1 and answers 400 outside it, while the
            // other providers (and the daemon API) accept up to 2.
            temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
            tools,
            tool_choice,
            stream,
        }
    }
}

// ---- response ----

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Prompt tokens include cache writes and reads, which Anthropic counts
    /// separately from `input_tokens`.
    fn prompt(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b))
        })
    }

    fn into_usage(self) -> Usage {
        Usage::new(self.prompt().unwrap_or(0), self.output_tokens.unwrap_or(0))
    }
}

fn stop_reason(s: &str, forced_tool: bool) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" if forced_tool => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

// ---- streaming ----

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockDelta {
        delta: WireDelta,
    },
    MessageDelta {
        delta: WireMessageDelta,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: Value,
    },
    /// `ping`, `content_block_start`, `content_block_stop` and event types
    /// added later carry nothing we need.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireStartMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireMessageDelta {
    stop_reason: Option<String>,
}

#[derive(Default)]
struct Parser {
    forced_tool: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
    finish_reason: Option<FinishReason>,
}

impl SseParser for Parser {
    fn on_event(
        &mut self,
        ev: SseEvent,
        ctx: &CallCtx,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Step> {
        let event: WireEvent = serde_json::from_str(&ev.data)
            .map_err(|e| ctx.malformed(format!("invalid {:?} event: {e}", ev.event)))?;
        match event {
            WireEvent::MessageStart { message } => {
                if let Some(u) = message.usage {
                    self.prompt_tokens = u.prompt().unwrap_or(0);
                    self.completion_tokens = u.output_tokens.unwrap_or(0);
                }
            }
            WireEvent::ContentBlockDelta { delta } => {
                let text = match delta {
                    // With a forced tool only its JSON input is the answer.
                    WireDelta::TextDelta { text } if !self.forced_tool => text,
                    WireDelta::InputJsonDelta { partial_json } if self.forced_tool => partial_json,
                    WireDelta::TextDelta { .. }
                    | WireDelta::InputJsonDelta { .. }
                    | WireDelta::Other => String::new(),
                };
                if !text.is_empty() {
                    out.push_back(StreamEvent::Delta(text));
                }
            }
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.finish_reason = Some(stop_reason(&reason, self.forced_tool));
                }
                // `message_delta` usage is cumulative: assign, never add.
                if let Some(u) = usage {
                    if let Some(output) = u.output_tokens {
                        self.completion_tokens = output;
                    }
                    if let Some(prompt) = u.prompt() {
                        self.prompt_tokens = prompt;
                    }
                }
            }
            WireEvent::MessageStop => {
                out.push_back(StreamEvent::Done {
                    usage: Usage::new(self.prompt_tokens, self.completion_tokens),
                    finish_reason: self.finish_reason.take(),
                });
                return Ok(Step::Finished);
            }
            WireEvent::Error { error } => {
                return Err(classify_error_object(ctx, None, &error, None));
            }
            WireEvent::Other => {}
        }
        Ok(Step::Continue)
    }
}

// ---- errors ----

fn classify(ctx: &CallCtx, resp: &ErrorResponse) -> Error {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    match body
        .as_ref()
        .and_then(|b| b.get("error"))
        .filter(|e| e.is_object())
    {
        Some(err) => classify_error_object(ctx, Some(resp.status), err, resp.retry_after),
        None => http::classify_status(
            resp.status,
            ctx.failure(Some(resp.status), resp.body_text()),
            resp.retry_after,
        ),
    }
}

/// Classifies `{"type": "...", "message": "..."}` by its type, which also
/// works for an `event: error` inside a `200` stream.
fn classify_error_object(
    ctx: &CallCtx,
    status: Option<u16>,
    err: &Value,
    retry_after: Option<std::time::Duration>,
) -> Error {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| err.to_string(), str::to_owned);
    let failure = ctx.failure(status, message);
    match err.get("type").and_then(Value::as_str) {
        Some("invalid_request_error") | Some("request_too_large") => {
            Error::InvalidRequest { failure }
        }
        Some("authentication_error") | Some("permission_error") => Error::auth(failure),
        Some("billing_error") => Error::QuotaExceeded { failure },
        Some("not_found_error") => Error::ModelNotFound { failure },
        Some("rate_limit_error") => Error::RateLimited {
            failure,
            retry_after,
        },
        Some("overloaded_error") => Error::Overloaded {
            failure,
            retry_after,
        },
        Some("api_error") | Some("timeout_error") => Error::Server {
            failure,
            retry_after,
        },
        _ => match status {
            Some(s) => http::classify_status(s, failure, retry_after),
            None => Error::Server {
                failure,
                retry_after,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wombat_core::ChatMessage;

    #[test]
    fn object_schema_becomes_a_forced_tool_and_others_an_instruction() {
        let mut req = ChatRequest::new("claude", vec![ChatMessage::user("hi")]);
        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object", "properties": {"a": {"type": "string"}}}),
        });
        let body = serde_json::to_value(WireRequest::new(&req, false)).expect("serialises");
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "answer"})
        );
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
        assert!(body.get("system").is_none());

        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "list".into(),
            schema: json!({"type": "array"}),
        });
        let body = serde_json::to_value(WireRequest::new(&req, false)).expect("serialises");
        assert!(body.get("tools").is_none());
        let system = body["system"].as_str().expect("system instruction");
        assert!(system.starts_with(JSON_INSTRUCTION) && system.contains("\"array\""));
    }

    #[test]
    fn error_types_decide_over_status() {
        let ctx = CallCtx {
            provider: Provider::Anthropic,
            model: "claude".into(),
            key: None,
        };
        let e = classify_error_object(
            &ctx,
            None,
            &json!({"type": "overloaded_error", "message": "Overloaded"}),
            None,
        );
        assert!(matches!(e, Error::Overloaded { .. }) && e.is_retryable());
        let e = classify_error_object(
            &ctx,
            Some(400),
            &json!({"type": "billing_error", "message": "credit"}),
            None,
        );
        assert!(matches!(e, Error::QuotaExceeded { .. }));
    }
}
