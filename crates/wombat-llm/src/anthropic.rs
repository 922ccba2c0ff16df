//! The Anthropic Messages adapter (`POST {base}/v1/messages`,
//! `anthropic-version: 2023-06-01`).
//!
//! The system prompt is the top-level `system` field, consecutive same-role
//! messages are merged, and `max_tokens` is always sent. Structured output
//! with an object schema uses a forced tool whose input is the answer; other
//! JSON requests are made by instruction. Wire types are private here; no
//! retries happen in this module.
//!
//! Tools: the caller's tools are `tools: [{name, description, input_schema}]`
//! with `tool_choice` auto / none / any / tool, and
//! `disable_parallel_tool_use` when parallel calls are turned off. When tools
//! are declared, structured output is asked for by instruction instead of the
//! forced answer tool (forcing it would forbid the caller's tools, and no
//! name can clash). History: an assistant turn is `text` + `tool_use` blocks;
//! tool results are `tool_result` blocks at the start of the next user
//! message (consecutive tool messages and a following user text share that
//! message). A message that is one text block is still sent as a plain
//! string, so requests without tools are unchanged. A streamed `tool_use`
//! block becomes a tool-call start, its `partial_json` fragments deltas, and
//! its `content_block_stop` the call, parsed once (at most 64 calls per turn;
//! a call with more than 1 MiB of arguments is reported invalid without its
//! text, as by the OpenAI adapter). A block without an id gets one made up
//! and one without a name is an invalid call, as in the other adapters.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use ::http::header::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use wombat_core::{Part, Provider, Role, ToolCall, Usage, parse_tool_arguments};
use wombat_transport::Client;

use crate::escaped::{EscapeCache, OwnedText};
use crate::http::{self, CallCtx, Endpoint, ErrorResponse, SseParser, Step};
use crate::sse::SseEvent;
use crate::types::{
    ApiKey, ChatProvider, ChatRequest, Completion, EventStream, FinishReason, InvalidToolCall,
    ResponseFormat, StreamEvent, ToolChoice,
};
use crate::{Error, ErrorKind, Result};

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
    /// Recent system prompts, already escaped for the body.
    escaped: Arc<EscapeCache>,
}

impl AnthropicAdapter {
    /// An adapter using the shared `client`. Without a key, calls fail with
    /// [`ErrorKind::MissingApiKey`].
    pub fn new(client: Client, base_url: impl Into<String>, key: Option<ApiKey>) -> Self {
        Self {
            client,
            endpoint: Endpoint::new(&format!(
                "{}/v1/messages",
                base_url.into().trim_end_matches('/')
            )),
            key,
            escaped: Arc::default(),
        }
    }

    fn prepare(&self, req: &ChatRequest, stream: bool) -> Result<(http::Outgoing, CallCtx, bool)> {
        let Some(key) = req.key_override().or(self.key.as_ref()) else {
            return Err(Error::missing_api_key(
                Provider::Anthropic,
                "ANTHROPIC_API_KEY",
            ));
        };
        let ctx = CallCtx::new(Provider::Anthropic, req.model.clone(), Some(key.clone()))
            .for_request(req);
        let mut body = WireRequest::new(req, stream);
        if let Some(system) = body.system.as_mut() {
            system.escaped = self.escaped.get(&system.text);
        }
        let forced_tool = body.answer_tool;
        let builder = self
            .endpoint
            .post(&self.client)
            .secret_header(HeaderName::from_static("x-api-key"), key.expose())
            .header(HeaderName::from_static("anthropic-version"), API_VERSION)
            .json(&body, req.body_size_hint());
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
        let mut tool_calls = Vec::new();
        let mut invalid_tool_calls = Vec::new();
        for block in wire.content {
            match block {
                WireBlock::Text { text: t } => text.push_str(&t),
                WireBlock::ToolUse { input, .. } if forced_tool => {
                    tool_json = Some(
                        serde_json::to_string(&input)
                            .map_err(|e| ctx.malformed(format!("tool input: {e}")))?,
                    );
                }
                WireBlock::ToolUse { id, name, input } => {
                    let index = tool_calls.len() + invalid_tool_calls.len();
                    if index >= MAX_STREAM_CALLS {
                        return Err(ctx.malformed(format!(
                            "more than {MAX_STREAM_CALLS} tool calls in one turn"
                        )));
                    }
                    let id = call_id(id);
                    let invalid = |id, name, raw_arguments, error: &str| InvalidToolCall {
                        index,
                        id,
                        name,
                        raw_arguments,
                        error: error.to_owned(),
                    };
                    match input {
                        _ if name.is_empty() => {
                            invalid_tool_calls.push(invalid(id, name, input.to_string(), NO_NAME))
                        }
                        Value::Object(arguments) => {
                            tool_calls.push(ToolCall::new(id, name, arguments));
                        }
                        // Absent input is no arguments, as in a stream.
                        Value::Null => tool_calls.push(ToolCall::new(id, name, Map::new())),
                        other => invalid_tool_calls.push(invalid(
                            id,
                            name,
                            other.to_string(),
                            "tool arguments must be a JSON object",
                        )),
                    }
                }
                WireBlock::Other => {}
            }
        }
        // With a forced tool the answer is the tool input; any text beside
        // it is commentary, not the JSON asked for.
        if let Some(json) = tool_json {
            text = json;
        }
        Ok(Completion {
            tool_calls,
            invalid_tool_calls,
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
    system: Option<OwnedText>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// The only tool is the structured-output one, forced: its input is the
    /// answer (not a tool call for the caller).
    #[serde(skip)]
    answer_tool: bool,
}

/// Fields in sorted order, as 0.1.0's `json!` sent the answer tool: a
/// structured-output request without tools stays byte-identical.
#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
    name: Cow<'a, str>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: WireContent<'a>,
}

/// A message's content: a plain string when it is one text block (the shape
/// requests without tools always had), content blocks otherwise.
#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(String),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text {
        text: String,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Map<String, Value>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Cow<'a, str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

const JSON_INSTRUCTION: &str =
    "Respond with only a valid JSON value: no prose, no Markdown code fences.";

/// Appends `text` to the blocks, joining it to a trailing text block with a
/// blank line (how consecutive same-role messages were always merged).
fn push_text(blocks: &mut Vec<OutBlock<'_>>, text: &str) {
    if let Some(OutBlock::Text { text: acc }) = blocks.last_mut() {
        acc.push_str("\n\n");
        acc.push_str(text);
    } else {
        blocks.push(OutBlock::Text {
            text: text.to_owned(),
        });
    }
}

/// The conversation as Anthropic wants it: roles alternate (consecutive
/// same-role messages merge; tool results are `user` content), assistant
/// tool calls are `tool_use` blocks, and every `tool_result` block comes
/// before any other content of its user message, as Anthropic requires.
fn wire_messages(req: &ChatRequest) -> Vec<WireMessage<'_>> {
    let mut out: Vec<(&'static str, Vec<OutBlock<'_>>)> = Vec::new();
    for m in req.messages.iter().filter(|m| m.role != Role::System) {
        let role = if m.role == Role::Assistant {
            "assistant"
        } else {
            "user"
        };
        let blocks = match out.last_mut() {
            Some((last, blocks)) if *last == role => blocks,
            _ => {
                out.push((role, Vec::new()));
                match out.last_mut() {
                    Some((_, blocks)) => blocks,
                    None => continue,
                }
            }
        };
        let text_only = m.parts.iter().all(|p| matches!(p, Part::Text(_)));
        let text = m.text();
        // Anthropic rejects empty text blocks beside other content; a text
        // message is kept as it always was, even when empty.
        if text_only || !text.is_empty() {
            push_text(blocks, &text);
        }
        for part in &m.parts {
            match part {
                Part::ToolCall(c) => blocks.push(OutBlock::ToolUse {
                    id: &c.id,
                    name: &c.name,
                    input: &c.arguments,
                }),
                Part::ToolResult(r) => {
                    let at = blocks
                        .iter()
                        .take_while(|b| matches!(b, OutBlock::ToolResult { .. }))
                        .count();
                    blocks.insert(
                        at,
                        OutBlock::ToolResult {
                            tool_use_id: &r.call_id,
                            content: r.content.to_text(),
                            is_error: r.is_error,
                        },
                    );
                }
                // Text was handled above; kinds added later are not sent.
                _ => {}
            }
        }
    }
    out.into_iter()
        .map(|(role, mut blocks)| {
            let content = match (blocks.len(), blocks.pop()) {
                (1, Some(OutBlock::Text { text })) => WireContent::Text(text),
                (_, Some(last)) => {
                    blocks.push(last);
                    WireContent::Blocks(blocks)
                }
                (_, None) => WireContent::Text(String::new()),
            };
            WireMessage { role, content }
        })
        .collect()
}

/// Anthropic's `tool_choice` for the caller's tools. `disable_parallel_tool_use`
/// rides on it (on an `auto` choice when none was asked for); a `none`
/// choice takes no options.
fn wire_tool_choice(choice: Option<&ToolChoice>, parallel: Option<bool>) -> Option<Value> {
    let disable_parallel = parallel == Some(false);
    let mut value = match choice {
        None if !disable_parallel => return None,
        None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => json!({"type": "any"}),
        Some(ToolChoice::Tool(name)) => json!({"type": "tool", "name": name}),
    };
    if disable_parallel {
        value["disable_parallel_tool_use"] = Value::Bool(true);
    }
    Some(value)
}

impl<'a> WireRequest<'a> {
    fn new(req: &'a ChatRequest, stream: bool) -> Self {
        let mut system = http::collect_system(req);
        let messages = wire_messages(req);
        let mut tools: Vec<WireTool<'a>> = req
            .tools
            .iter()
            .map(|t| WireTool {
                name: Cow::Borrowed(&t.name),
                description: t.description.as_deref(),
                input_schema: &t.parameters,
            })
            .collect();
        let mut tool_choice = if tools.is_empty() {
            None
        } else {
            wire_tool_choice(req.tool_choice.as_ref(), req.parallel_tool_calls)
        };
        let mut answer_tool = false;
        let mut instruction = None;
        match &req.response_format {
            // A forced answer tool would keep the model from calling the
            // caller's tools, so with tools declared a schema is asked for by
            // instruction instead, and there is no name to clash.
            Some(ResponseFormat::JsonSchema { name, schema })
                if tools.is_empty()
                    && schema.get("type").and_then(Value::as_str) == Some("object") =>
            {
                let name = crate::schema::tool_name(name);
                tool_choice = Some(json!({"type": "tool", "name": name}));
                tools.push(WireTool {
                    name: Cow::Owned(name),
                    description: Some("Record the answer. Its input is the complete response."),
                    input_schema: schema,
                });
                answer_tool = true;
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
            system: system.map(OwnedText::new),
            messages,
            // Anthropic accepts 0..=1 and answers 400 outside it, while the
            // other providers (and the daemon API) accept up to 2.
            temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
            tools,
            tool_choice,
            stream,
            answer_tool,
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
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
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

/// Most tool calls accepted in one turn, streamed or not (as by the OpenAI
/// adapter); more is a malformed response.
const MAX_STREAM_CALLS: usize = 64;
/// Most argument bytes accumulated for one streamed tool call; a longer
/// call is reported invalid without its text (as by the OpenAI adapter).
const MAX_CALL_ARGUMENT_BYTES: usize = 1024 * 1024;

/// Why a `tool_use` block without a name is an invalid call (the OpenAI
/// adapter's words).
const NO_NAME: &str = "the tool call names no tool";

/// The block's id, or one made up when Anthropic sent none (every call
/// needs one for its result to name).
fn call_id(id: String) -> String {
    if id.is_empty() {
        crate::openai::made_up_call_id()
    } else {
        id
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: usize,
        content_block: WireStartBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: usize,
        delta: WireDelta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: usize,
    },
    MessageDelta {
        delta: WireMessageDelta,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: Value,
    },
    /// `ping` and event types added later carry nothing we need.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireStartMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireStartBlock {
    ToolUse {
        #[serde(default)]
        id: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        input: Option<Map<String, Value>>,
    },
    /// Text, thinking and server-side tool blocks: their deltas say enough.
    #[serde(other)]
    Other,
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

/// A `tool_use` block being streamed.
struct OpenCall {
    /// Anthropic's content block index.
    block: usize,
    /// Our per-turn call index.
    index: usize,
    id: String,
    name: String,
    /// The `partial_json` fragments so far.
    arguments: String,
    /// The input the start event carried, used when no fragment follows.
    start_input: Option<Map<String, Value>>,
    /// The arguments passed [`MAX_CALL_ARGUMENT_BYTES`] and were dropped.
    too_long: bool,
}

impl OpenCall {
    /// The complete call, its arguments parsed once (no text is `{}`).
    fn finish(self) -> StreamEvent {
        let invalid = |raw_arguments: String, error: String| {
            StreamEvent::ToolCallInvalid(Box::new(InvalidToolCall {
                index: self.index,
                id: self.id.clone(),
                name: self.name.clone(),
                raw_arguments,
                error,
            }))
        };
        if self.too_long {
            return invalid(
                String::new(),
                format!("tool call arguments exceed the {MAX_CALL_ARGUMENT_BYTES}-byte limit"),
            );
        }
        if self.name.is_empty() {
            return invalid(self.arguments, NO_NAME.to_owned());
        }
        if self.arguments.is_empty() {
            let arguments = self.start_input.unwrap_or_default();
            return StreamEvent::ToolCall {
                index: self.index,
                call: Box::new(ToolCall::new(self.id, self.name, arguments)),
            };
        }
        match parse_tool_arguments(&self.arguments) {
            Ok(arguments) => StreamEvent::ToolCall {
                index: self.index,
                call: Box::new(ToolCall::new(self.id, self.name, arguments)),
            },
            Err(error) => invalid(self.arguments, error),
        }
    }
}

#[derive(Default)]
struct Parser {
    forced_tool: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
    finish_reason: Option<FinishReason>,
    /// Tool calls started this turn.
    calls: usize,
    /// Calls whose block has not stopped yet, in start order.
    open: Vec<OpenCall>,
    /// The block index of every `tool_use` block started this turn (at
    /// most [`MAX_STREAM_CALLS`]): a block started twice, or arguments for
    /// one that already stopped, are a malformed stream.
    tool_blocks: Vec<usize>,
}

impl Parser {
    fn start_call(
        &mut self,
        block: usize,
        id: String,
        name: String,
        start_input: Option<Map<String, Value>>,
        ctx: &CallCtx,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<()> {
        if self.calls >= MAX_STREAM_CALLS {
            return Err(ctx.malformed(format!(
                "more than {MAX_STREAM_CALLS} tool calls in one turn"
            )));
        }
        if self.tool_blocks.contains(&block) {
            return Err(ctx.malformed(format!("tool_use block {block} started twice")));
        }
        self.tool_blocks.push(block);
        let index = self.calls;
        self.calls += 1;
        let id = call_id(id);
        out.push_back(StreamEvent::ToolCallStart {
            index,
            id: id.clone(),
            name: name.clone(),
        });
        self.open.push(OpenCall {
            block,
            index,
            id,
            name,
            arguments: String::new(),
            start_input: start_input.filter(|m| !m.is_empty()),
            too_long: false,
        });
        Ok(())
    }

    fn call_fragment(
        &mut self,
        block: usize,
        fragment: String,
        ctx: &CallCtx,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<()> {
        // Fragments of blocks we do not track (server-side tools) are not
        // the caller's calls; those of a call already emitted cannot be
        // applied (as in the OpenAI adapter, the stream is malformed).
        let Some(call) = self.open.iter_mut().find(|c| c.block == block) else {
            if self.tool_blocks.contains(&block) && !fragment.is_empty() {
                return Err(ctx.malformed("tool call arguments arrived after the call finished"));
            }
            return Ok(());
        };
        if fragment.is_empty() || call.too_long {
            return Ok(());
        }
        if call.arguments.len() + fragment.len() > MAX_CALL_ARGUMENT_BYTES {
            call.too_long = true;
            call.arguments = String::new();
            return Ok(());
        }
        call.arguments.push_str(&fragment);
        out.push_back(StreamEvent::ToolCallDelta {
            index: call.index,
            fragment,
        });
        Ok(())
    }
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
            WireEvent::ContentBlockStart {
                index,
                content_block: WireStartBlock::ToolUse { id, name, input },
            } if !self.forced_tool => self.start_call(index, id, name, input, ctx, out)?,
            WireEvent::ContentBlockStart { .. } => {}
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                // With a forced tool only its JSON input is the answer.
                WireDelta::TextDelta { text } if !self.forced_tool && !text.is_empty() => {
                    out.push_back(StreamEvent::Delta(text));
                }
                WireDelta::InputJsonDelta { partial_json } if self.forced_tool => {
                    if !partial_json.is_empty() {
                        out.push_back(StreamEvent::Delta(partial_json));
                    }
                }
                WireDelta::InputJsonDelta { partial_json } => {
                    self.call_fragment(index, partial_json, ctx, out)?;
                }
                WireDelta::TextDelta { .. } | WireDelta::Other => {}
            },
            WireEvent::ContentBlockStop { index } => {
                if let Some(at) = self.open.iter().position(|c| c.block == index) {
                    out.push_back(self.open.remove(at).finish());
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
                // A block the provider never stopped is complete at the end
                // of the message.
                for call in self.open.drain(..) {
                    out.push_back(call.finish());
                }
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
            Error::new(ErrorKind::InvalidRequest, failure)
        }
        Some("authentication_error") | Some("permission_error") => Error::auth(failure),
        Some("billing_error") => Error::new(ErrorKind::QuotaExceeded, failure),
        Some("not_found_error") => Error::new(ErrorKind::ModelNotFound, failure),
        Some("rate_limit_error") => {
            Error::new(ErrorKind::RateLimited, failure).with_retry_after(retry_after)
        }
        Some("overloaded_error") => {
            Error::new(ErrorKind::Overloaded, failure).with_retry_after(retry_after)
        }
        Some("api_error") | Some("timeout_error") => {
            Error::new(ErrorKind::Server, failure).with_retry_after(retry_after)
        }
        _ => match status {
            Some(s) => http::classify_status(s, failure, retry_after),
            None => Error::new(ErrorKind::Server, failure).with_retry_after(retry_after),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wombat_core::ChatMessage;

    #[test]
    fn a_cached_system_prompt_gives_the_same_body_byte_for_byte() {
        let cache = EscapeCache::default();
        let mut req = ChatRequest::new("claude", vec![ChatMessage::user("hi")]);
        req.system = Some("# Soul\n\nBe \"brief\"\t\\ ✓\u{7}\n".repeat(64));
        let plain = serde_json::to_string(&WireRequest::new(&req, true)).expect("serialises");
        let mut body = WireRequest::new(&req, true);
        let system = body.system.as_mut().expect("system");
        system.escaped = cache.get(&system.text);
        assert!(system.escaped.is_some());
        assert_eq!(serde_json::to_string(&body).expect("serialises"), plain);
    }

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

    fn ctx() -> CallCtx {
        CallCtx::new(Provider::Anthropic, "claude".into(), None)
    }

    fn sse(name: &str, data: Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    /// A streamed turn: text, then two `tool_use` blocks whose arguments
    /// arrive as `partial_json` fragments cut inside keys, strings and a
    /// multi-byte character, then one whose fragments do not parse.
    fn tool_stream() -> String {
        let mut body = sse(
            "message_start",
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}),
        );
        body += &sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        body += &sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Looking 🦀"}}),
        );
        body += &sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        );
        let calls: [(&str, &str, &[&str]); 3] = [
            (
                "toolu_1",
                "get_weather",
                &["", "{\"ci", "ty\": \"Zü", "rich\", \"days\"", ": 3}"],
            ),
            ("toolu_2", "search", &["{\"q\":", " \"天气\"}"]),
            ("toolu_3", "broken", &["{\"a\": ", "tru"]),
        ];
        for (i, (id, name, fragments)) in calls.iter().enumerate() {
            let block = i + 1;
            body += &sse(
                "content_block_start",
                json!({"type": "content_block_start", "index": block,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            );
            for f in *fragments {
                body += &sse(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": block,
                        "delta": {"type": "input_json_delta", "partial_json": f}}),
                );
            }
            body += &sse(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": block}),
            );
        }
        body += &sse(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 40}}),
        );
        body += &sse("message_stop", json!({"type": "message_stop"}));
        body
    }

    /// Decodes `chunks` and runs the parser over the events.
    fn parse_chunks(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut decoder = crate::sse::SseDecoder::new();
        let mut parser = Parser::default();
        let mut events = Vec::new();
        let mut out = VecDeque::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut events).expect("small events");
            for ev in events.drain(..) {
                parser.on_event(ev, &ctx(), &mut out).expect("parses");
            }
        }
        decoder.finish(&mut events);
        for ev in events.drain(..) {
            parser.on_event(ev, &ctx(), &mut out).expect("parses");
        }
        out.into()
    }

    /// What a consumer keeps of a stream: text, per-call fragments joined,
    /// and the final calls.
    fn summary(events: &[StreamEvent]) -> (String, Vec<String>, Vec<StreamEvent>) {
        let mut text = String::new();
        let mut fragments = vec![String::new(); 3];
        let mut finals = Vec::new();
        for ev in events {
            match ev {
                StreamEvent::Delta(t) => text.push_str(t),
                StreamEvent::ToolCallDelta { index, fragment } => {
                    fragments[*index].push_str(fragment);
                }
                StreamEvent::ToolCallStart { .. } => {}
                other => finals.push(other.clone()),
            }
        }
        (text, fragments, finals)
    }

    #[test]
    fn partial_json_split_at_every_byte_boundary_gives_the_same_calls() {
        let body = tool_stream();
        let bytes = body.as_bytes();
        let whole = parse_chunks(&[bytes]);
        let (text, fragments, finals) = summary(&whole);
        assert_eq!(text, "Looking 🦀");
        assert_eq!(
            fragments,
            [
                "{\"city\": \"Zürich\", \"days\": 3}",
                "{\"q\": \"天气\"}",
                "{\"a\": tru"
            ]
        );
        let call = |index: usize, id: &str, name: &str, args: Value| StreamEvent::ToolCall {
            index,
            call: Box::new(ToolCall::new(
                id,
                name,
                args.as_object().cloned().unwrap_or_default(),
            )),
        };
        assert_eq!(finals.len(), 4, "{finals:?}");
        assert_eq!(
            finals[0],
            call(
                0,
                "toolu_1",
                "get_weather",
                json!({"city": "Zürich", "days": 3})
            )
        );
        assert_eq!(
            finals[1],
            call(1, "toolu_2", "search", json!({"q": "天气"}))
        );
        let StreamEvent::ToolCallInvalid(bad) = &finals[2] else {
            panic!("the third call is invalid: {:?}", finals[2]);
        };
        assert_eq!(
            (
                bad.index,
                bad.id.as_str(),
                bad.name.as_str(),
                bad.raw_arguments.as_str()
            ),
            (2, "toolu_3", "broken", "{\"a\": tru")
        );
        assert_eq!(
            finals[3],
            StreamEvent::Done {
                usage: Usage::new(12, 40),
                finish_reason: Some(FinishReason::ToolCalls),
            }
        );
        // Every single cut point, every three-way cut over a stride, and
        // one byte at a time: the same text, fragments and calls.
        for i in 0..=bytes.len() {
            let got = parse_chunks(&[&bytes[..i], &bytes[i..]]);
            assert_eq!(
                summary(&got),
                (text.clone(), fragments.clone(), finals.clone()),
                "cut at {i}"
            );
        }
        for i in (0..=bytes.len()).step_by(7) {
            for j in (i..=bytes.len()).step_by(13) {
                let got = parse_chunks(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(summary(&got).2, finals, "cuts at {i} and {j}");
            }
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&singles), whole);
    }

    #[test]
    fn streamed_arguments_and_calls_are_bounded() {
        let start = |block: usize| {
            serde_json::to_string(&json!({"type": "content_block_start", "index": block,
                "content_block": {"type": "tool_use", "id": format!("t{block}"), "name": "f", "input": {}}}))
            .expect("json")
        };
        let ev = |data: String| SseEvent {
            event: String::new(),
            data,
        };
        let mut parser = Parser::default();
        let mut out = VecDeque::new();
        for block in 0..MAX_STREAM_CALLS {
            parser
                .on_event(ev(start(block)), &ctx(), &mut out)
                .expect("within the call limit");
        }
        let err = parser
            .on_event(ev(start(MAX_STREAM_CALLS)), &ctx(), &mut out)
            .err()
            .expect("one call too many");
        assert!(err.to_string().contains("more than 64 tool calls"), "{err}");

        let mut parser = Parser::default();
        parser
            .on_event(ev(start(0)), &ctx(), &mut out)
            .expect("starts");
        let fragment = |n: usize| {
            ev(
                serde_json::to_string(&json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "x".repeat(n)}}))
                .expect("json"),
            )
        };
        parser
            .on_event(fragment(MAX_CALL_ARGUMENT_BYTES), &ctx(), &mut out)
            .expect("exactly the limit");
        // One byte over: the call is reported invalid without its text (as
        // the OpenAI adapter does) and the stream goes on.
        out.clear();
        parser
            .on_event(fragment(1), &ctx(), &mut out)
            .expect("an over-long call is not a stream error");
        assert!(out.is_empty(), "the dropped fragment is not forwarded");
        parser
            .on_event(
                ev(r#"{"type":"content_block_stop","index":0}"#.into()),
                &ctx(),
                &mut out,
            )
            .expect("stops");
        let Some(StreamEvent::ToolCallInvalid(bad)) = out.pop_front() else {
            panic!("an invalid call, got {out:?}");
        };
        assert!(bad.raw_arguments.is_empty(), "the text is dropped");
        assert!(bad.error.contains("limit"), "{}", bad.error);
        assert_eq!((bad.index, bad.id.as_str()), (0, "t0"));
    }

    /// A `tool_use` block without an id gets one made up, and one without a
    /// name is an invalid call, as in the other adapters.
    #[test]
    fn a_tool_use_without_id_or_name_is_consistent_with_the_other_adapters() {
        let body = sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "", "name": "", "input": {}}}),
        ) + &sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ) + &sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "name": "now", "input": {}}}),
        ) + &sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ) + &sse("message_stop", json!({"type": "message_stop"}));
        let events = parse_chunks(&[body.as_bytes()]);
        let [
            StreamEvent::ToolCallStart { id: id0, .. },
            StreamEvent::ToolCallInvalid(bad),
            StreamEvent::ToolCallStart { id: id1, .. },
            StreamEvent::ToolCall { call, .. },
            StreamEvent::Done { .. },
        ] = events.as_slice()
        else {
            panic!("unexpected events {events:?}");
        };
        assert!(!id0.is_empty() && &bad.id == id0, "{id0:?} {bad:?}");
        assert!(bad.error.contains("names no tool"), "{}", bad.error);
        assert!(!id1.is_empty() && &call.id == id1 && id0 != id1);
        assert_eq!(call.name, "now");
    }

    /// Arguments for a `tool_use` block that already stopped (its call was
    /// emitted) are a malformed stream, as in the OpenAI adapter, not
    /// silently dropped; so is a block index started twice.
    #[test]
    fn fragments_after_a_call_stopped_and_restarted_blocks_are_errors() {
        let start = sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "now", "input": {}}}),
        );
        let stop = sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        );
        let late = sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
        );
        for (body, want) in [
            (format!("{start}{stop}{late}"), "after the call finished"),
            (format!("{start}{start}"), "started twice"),
        ] {
            let mut decoder = crate::sse::SseDecoder::new();
            let mut parser = Parser::default();
            let mut events = Vec::new();
            let mut out = VecDeque::new();
            decoder.feed(body.as_bytes(), &mut events).expect("small");
            let err = events
                .drain(..)
                .find_map(|ev| parser.on_event(ev, &ctx(), &mut out).err())
                .expect("an error");
            assert_eq!(err.code(), "malformed_response", "{err:?}");
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    /// A structured-output request without the caller's tools sends the
    /// forced answer tool byte for byte as before tools existed (0.1.0 built
    /// it with `json!`, whose keys are sorted).
    #[test]
    fn the_answer_tool_is_sent_byte_identical_to_before() {
        let mut req = ChatRequest::new("claude", vec![ChatMessage::user("hi")]);
        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: json!({"type": "object"}),
        });
        let body = serde_json::to_string(&WireRequest::new(&req, false)).expect("serialises");
        assert_eq!(
            body,
            concat!(
                r#"{"model":"claude","max_tokens":4096,"messages":[{"role":"user","content":"hi"}],"#,
                r#""tools":[{"description":"Record the answer. Its input is the complete response.","#,
                r#""input_schema":{"type":"object"},"name":"answer"}],"#,
                r#""tool_choice":{"name":"answer","type":"tool"}}"#
            )
        );
    }

    #[test]
    fn error_types_decide_over_status() {
        let ctx = CallCtx::new(Provider::Anthropic, "claude".into(), None);
        let e = classify_error_object(
            &ctx,
            None,
            &json!({"type": "overloaded_error", "message": "Overloaded"}),
            None,
        );
        assert!(matches!(e.kind(), ErrorKind::Overloaded) && e.is_retryable());
        let e = classify_error_object(
            &ctx,
            Some(400),
            &json!({"type": "billing_error", "message": "credit"}),
            None,
        );
        assert!(matches!(e.kind(), ErrorKind::QuotaExceeded));
    }
}
