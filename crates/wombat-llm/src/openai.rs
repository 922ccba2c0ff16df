//! The OpenAI Chat Completions adapter, which also serves every
//! OpenAI-compatible provider (xAI, Groq, Mistral, OpenRouter, Ollama, and
//! any server behind a `<PROVIDER>_BASE_URL` override).
//!
//! Its wire types are private to this module. It does no retries; the
//! router does.
//!
//! Tools: declarations go out as `tools: [{type: "function", function:
//! {name, description, parameters}}]` with `tool_choice` and
//! `parallel_tool_calls` (both only when tools are declared: OpenAI refuses
//! them otherwise). History maps onto OpenAI's chat shape: an assistant turn
//! carries `tool_calls` (arguments as a JSON string, `content: null` when it
//! has no text) and every result is its own `role: "tool"` message naming its
//! `tool_call_id`. The chat format has no error flag for a result, so a
//! failed call's content is sent as `Error: <content>`; JSON content is sent
//! serialised as a string. In a stream the first delta of a call carries its
//! `index`, `id` and name, later ones argument fragments; the fragments are
//! forwarded as they come and the arguments parsed once, when the turn
//! finishes (`finish_reason` or `[DONE]`). A call's arguments are capped at
//! 1 MiB (an over-long call is reported invalid, its text dropped) and a
//! turn at 64 calls (more is a malformed response). A call is announced
//! (`ToolCallStart`) once its name is known, with the arguments buffered
//! until then, as some compatible servers send the id and name after the
//! first fragment; a piece with an id seen before continues that call, and
//! a new id under an `index` whose call already has an id starts a new call
//! (Ollama numbers every call of a turn 0). A compatible server
//! that sends a call without an id gets one made up (`call_…`), and a turn
//! with calls finishes with [`FinishReason::ToolCalls`] even where the
//! server said `stop`.
//!
//! A model that cannot call tools answers a request with tools with an
//! error, reported as [`ErrorKind::ToolsUnsupported`] (not retried; the
//! router fails over) rather than a plain invalid request: OpenAI's
//! `param: "tools"` with an `unsupported_*` code, or, only for errors with
//! no string `code`, the known texts of Ollama, OpenRouter and llama.cpp's
//! server (see `NO_TOOLS_TEXTS`), the one place an error's text is read.

use std::collections::VecDeque;

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wombat_core::{ChatMessage, Provider, Role, ToolCall, ToolResult, Usage};
use wombat_transport::Client;

use crate::escaped::{EscapeCache, Escaped, Text};
use crate::http::{self, CallCtx, Endpoint, ErrorResponse, SseParser, Step};
use crate::sse::SseEvent;
use crate::types::{
    ApiKey, ChatProvider, ChatRequest, Completion, EventStream, FinishReason, InvalidToolCall,
    ResponseFormat, StreamEvent, ToolChoice, ToolSpec,
};
use crate::{Error, ErrorKind, Result};

/// An OpenAI-compatible provider at a base URL such as
/// `https://api.openai.com/v1` (requests go to `{base}/chat/completions`).
#[derive(Debug, Clone)]
pub struct OpenAiAdapter {
    client: Client,
    provider: Provider,
    /// `{base}/chat/completions`.
    endpoint: Endpoint,
    key: Option<ApiKey>,
    /// `Bearer <key>` of `key`, built once.
    bearer: Option<::http::HeaderValue>,
    /// Calls without a key go out without `Authorization` instead of
    /// failing (a local server behind a base URL override).
    key_optional: bool,
    /// A custom endpoint's extra headers (values marked sensitive); empty,
    /// and never cloned, for the built-in providers.
    headers: ::http::header::HeaderMap,
    /// Recent system prompts, already escaped for the body.
    escaped: Arc<EscapeCache>,
}

impl OpenAiAdapter {
    /// An adapter for `provider` (one of the OpenAI-compatible ones) using
    /// the shared `client`. Without a key, calls fail with
    /// [`ErrorKind::MissingApiKey`] unless the provider needs none (Ollama).
    pub fn new(
        client: Client,
        provider: Provider,
        base_url: impl Into<String>,
        key: Option<ApiKey>,
    ) -> Self {
        Self {
            client,
            provider,
            endpoint: Endpoint::new(&format!(
                "{}/chat/completions",
                base_url.into().trim_end_matches('/')
            )),
            bearer: key.as_ref().and_then(|k| http::bearer(k.expose())),
            key,
            key_optional: false,
            headers: ::http::header::HeaderMap::new(),
            escaped: Arc::default(),
        }
    }

    /// Sends `headers` with every call (a custom endpoint's). An
    /// `Authorization` among them gives way to a key, should a call have
    /// one.
    #[must_use]
    pub(crate) fn with_headers(mut self, headers: ::http::header::HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// With `optional`, a provider that normally needs a key is called
    /// without one (no `Authorization` header) when none is configured, as
    /// local OpenAI-compatible servers (vLLM, LM Studio, llama.cpp) expect.
    /// The router sets this when the provider's base URL is overridden.
    #[must_use]
    pub fn key_optional(mut self, optional: bool) -> Self {
        self.key_optional = optional;
        self
    }

    fn prepare(&self, req: &ChatRequest, stream: bool) -> Result<(http::Outgoing, CallCtx)> {
        let key = match (
            req.key_override().or(self.key.as_ref()),
            self.provider.api_key_env(),
        ) {
            (Some(k), _) => Some(k),
            (None, Some(env)) if !self.key_optional => {
                return Err(Error::missing_api_key(self.provider, env));
            }
            (None, _) => None,
        };
        let ctx = CallCtx::new(self.provider, req.model.clone(), key.cloned()).for_request(req);
        let system = req.system.as_deref().and_then(|s| self.escaped.get(s));
        let body = WireRequest::new(self.provider, req, stream, system.as_deref());
        let mut builder = self
            .endpoint
            .post(&self.client)
            .json(&body, req.body_size_hint());
        if !self.headers.is_empty() {
            let mut headers = self.headers.clone();
            if key.is_some() {
                headers.remove(::http::header::AUTHORIZATION);
            }
            builder = builder.headers(headers);
        }
        match (key, &self.bearer) {
            (Some(_), Some(bearer)) if req.key_override().is_none() => {
                builder = builder.credential(::http::header::AUTHORIZATION, bearer.clone());
            }
            (Some(k), _) => builder = builder.bearer_auth(k.expose()),
            (None, _) => {}
        }
        if stream {
            builder = builder.header(::http::header::ACCEPT, "text/event-stream");
        }
        Ok((builder, ctx))
    }
}

#[async_trait::async_trait]
impl ChatProvider for OpenAiAdapter {
    async fn complete(&self, req: &ChatRequest) -> Result<Completion> {
        let (builder, ctx) = self.prepare(req, false)?;
        let resp = http::send(builder, &ctx, classifier(req)).await?;
        let bytes = http::read_success_body(resp, &ctx).await?;
        // The usual answer parses straight into its shape; a body that
        // does not, or that carries an `error`, is read as a JSON value to
        // tell the two apart.
        let wire = match wombat_core::json::from_slice::<WireResponse>(&bytes) {
            Ok(wire) if wire.error.as_ref().is_none_or(Value::is_null) => wire,
            _ => {
                let body: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| ctx.malformed(format!("invalid json body: {e}")))?;
                if let Some(err) = body.get("error").filter(|e| !e.is_null()) {
                    return Err(classify_body_error(&ctx, None, err));
                }
                serde_json::from_value(body)
                    .map_err(|e| ctx.malformed(format!("unexpected response shape: {e}")))?
            }
        };
        let choice = wire
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ctx.malformed("response has no choices"))?;
        let mut calls = ToolCalls::default();
        for call in choice.message.tool_calls.into_iter().flatten() {
            calls.add_whole(call, &ctx)?;
        }
        let (tool_calls, invalid_tool_calls) = calls.finish();
        let finish = choice.finish_reason.as_deref().map(finish_reason);
        let has_calls = !tool_calls.is_empty() || !invalid_tool_calls.is_empty();
        Ok(Completion {
            tool_calls,
            invalid_tool_calls,
            text: choice.message.content.unwrap_or_default(),
            usage: wire.usage.map(Usage::from).unwrap_or_default(),
            finish_reason: with_calls(finish, has_calls),
        })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<EventStream> {
        let (builder, ctx) = self.prepare(req, true)?;
        let resp = http::send(builder, &ctx, classifier(req)).await?;
        Ok(http::sse_stream(resp, ctx, Parser::default()))
    }
}

// ---- request ----

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// OpenAI's reasoning models reject `max_tokens`; OpenAI itself gets the
    /// newer field, compatible servers the older one they all accept.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
}

/// `{type: "function", function: {name, description, parameters}}`.
#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionDecl<'a>,
}

#[derive(Serialize)]
struct WireFunctionDecl<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Value::is_null")]
    parameters: &'a Value,
}

impl<'a> From<&'a ToolSpec> for WireTool<'a> {
    fn from(t: &'a ToolSpec) -> Self {
        Self {
            kind: "function",
            function: WireFunctionDecl {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
            },
        }
    }
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

/// OpenAI's reasoning models, which take no `temperature`: the o-series
/// (`o1`, `o3-mini`, `o4-mini`, ...) and `gpt-5` (but not the non-reasoning
/// `gpt-5-chat-*`).
/// Compared ignoring ASCII case, without a lowercased copy (once per call).
fn is_reasoning_model(model: &str) -> bool {
    let m = model.as_bytes();
    let o_series = matches!(m, [b'o' | b'O', digit, ..] if digit.is_ascii_digit());
    let gpt5 = m.get(..5).is_some_and(|p| p.eq_ignore_ascii_case(b"gpt-5"));
    let chat = m.windows(5).any(|w| w.eq_ignore_ascii_case(b"-chat"));
    o_series || (gpt5 && !chat)
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `null` only for an assistant turn that calls tools and says nothing.
    content: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    fn text(role: &'static str, content: Cow<'a, str>) -> Self {
        Self {
            role,
            content: Some(Text::Plain(content)),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A call in an assistant turn of the history.
#[derive(Serialize)]
struct WireCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionOut<'a>,
}

#[derive(Serialize)]
struct WireFunctionOut<'a> {
    name: &'a str,
    /// The arguments object as a JSON string (OpenAI's convention).
    arguments: String,
}

/// Appends `m` in OpenAI's shape: each tool result as its own `tool`
/// message (first, so results placed in a user message, Anthropic's
/// convention, still directly follow the calls they answer), then the text
/// and calls, if any.
fn push_message<'a>(out: &mut Vec<WireMessage<'a>>, m: &'a ChatMessage) {
    let mut results = 0;
    for r in m.tool_results() {
        results += 1;
        out.push(WireMessage {
            tool_call_id: Some(&r.call_id),
            ..WireMessage::text("tool", tool_result_content(r))
        });
    }
    if m.role == Role::Tool {
        return;
    }
    let tool_calls: Vec<WireCallOut<'a>> = m
        .tool_calls()
        .map(|c| WireCallOut {
            id: &c.id,
            kind: "function",
            function: WireFunctionOut {
                name: &c.name,
                arguments: serde_json::to_string(&c.arguments).unwrap_or_else(|_| "{}".into()),
            },
        })
        .collect();
    let text = m.text();
    if tool_calls.is_empty() {
        // A message that only carried results has nothing more to say.
        if results == 0 || !text.is_empty() {
            out.push(WireMessage::text(m.role.as_str(), text));
        }
    } else {
        out.push(WireMessage {
            role: m.role.as_str(),
            content: (!text.is_empty()).then_some(Text::Plain(text)),
            tool_calls,
            tool_call_id: None,
        });
    }
}

/// A result's content as text; a failed call's gets an `Error: ` prefix, the
/// chat format having no flag for it.
fn tool_result_content(r: &ToolResult) -> Cow<'_, str> {
    let content = r.content.to_text();
    if r.is_error {
        Cow::Owned(format!("Error: {content}"))
    } else {
        content
    }
}

impl<'a> WireRequest<'a> {
    /// The body for `req`; `system` is the cached escaped form of its
    /// system prompt, if there is one.
    fn new(
        provider: Provider,
        req: &'a ChatRequest,
        stream: bool,
        system: Option<&'a Escaped>,
    ) -> Self {
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if let Some(s) = &req.system {
            messages.push(WireMessage {
                content: Some(Text::of(s, system)),
                ..WireMessage::text("system", Cow::Borrowed(""))
            });
        }
        for m in &req.messages {
            push_message(&mut messages, m);
        }
        // `tool_choice` and `parallel_tool_calls` without tools are refused
        // by OpenAI ("only allowed when 'tools' are specified"): they are
        // sent only with tools.
        let has_tools = !req.tools.is_empty();
        let (max_tokens, max_completion_tokens) = if provider == Provider::OpenAi {
            (None, req.max_tokens)
        } else {
            (req.max_tokens, None)
        };
        let response_format = req.response_format.as_ref().map(|f| match f {
            ResponseFormat::Json => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema { name, schema } => json!({
                "type": "json_schema",
                "json_schema": {"name": crate::schema::tool_name(name), "schema": schema},
            }),
        });
        // Mistral streams usage on its last chunk unasked and is documented
        // without `stream_options`, so it is not sent there.
        let stream_options =
            (stream && provider != Provider::Mistral).then(|| json!({"include_usage": true}));
        // OpenAI's reasoning models refuse any temperature but their
        // default (400 "Unsupported value"), and the daemon sends one on
        // every request (0.1.0's 0.4): leave it out for them.
        let temperature = req
            .temperature
            .filter(|_| !(provider == Provider::OpenAi && is_reasoning_model(&req.model)));
        Self {
            model: &req.model,
            messages,
            temperature,
            max_tokens,
            max_completion_tokens,
            response_format,
            stream,
            stream_options,
            tools: req.tools.iter().map(WireTool::from).collect(),
            tool_choice: req
                .tool_choice
                .as_ref()
                .filter(|_| has_tools)
                .map(tool_choice),
            parallel_tool_calls: req.parallel_tool_calls.filter(|_| has_tools),
        }
    }
}

// ---- response ----

#[derive(Deserialize)]
struct WireResponse {
    /// An error some compatible servers send with a 200.
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireResponseMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireResponseMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCallIn>>,
}

/// A tool call in a reply, or a piece of one in a stream delta (where only
/// the first piece carries `id` and the name).
#[derive(Deserialize)]
struct WireCallIn {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionIn>,
}

#[derive(Deserialize)]
struct WireFunctionIn {
    #[serde(default)]
    name: Option<String>,
    /// A JSON string (fragment) per OpenAI; some compatible servers send
    /// the arguments as an object, accepted too.
    #[serde(default)]
    arguments: Option<Value>,
}

impl WireCallIn {
    fn name(&mut self) -> Option<String> {
        self.function
            .as_mut()
            .and_then(|f| f.name.take())
            .filter(|n| !n.is_empty())
    }

    /// The arguments text this piece adds.
    fn arguments(&mut self) -> Option<String> {
        match self.function.as_mut().and_then(|f| f.arguments.take()) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    total_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        let mut usage = Usage::new(u.prompt_tokens, u.completion_tokens);
        if let Some(total) = u.total_tokens {
            usage.total_tokens = total;
        }
        usage
    }
}

/// A turn with tool calls finished because of them, whatever the server
/// said (some compatible servers answer `stop`).
fn with_calls(reason: Option<FinishReason>, has_calls: bool) -> Option<FinishReason> {
    match reason {
        Some(FinishReason::Stop) | None if has_calls => Some(FinishReason::ToolCalls),
        other => other,
    }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        other => FinishReason::Other(other.to_owned()),
    }
}

// ---- streaming ----

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    /// `null` on every chunk but the usage tail when `include_usage` is set.
    usage: Option<WireUsage>,
    /// Groq reports usage here on the last chunk.
    x_groq: Option<WireGroq>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireGroq {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCallIn>>,
}

/// Most bytes of one call's arguments kept (and forwarded); a longer call is
/// reported as an [`InvalidToolCall`] without its text.
pub(crate) const MAX_TOOL_ARGUMENT_BYTES: usize = 1024 * 1024;

/// Most tool calls in one turn; a reply with more is a malformed response.
pub(crate) const MAX_TOOL_CALLS: usize = 64;

/// One call being assembled.
struct CallAcc {
    /// The provider's id, or one made up when the call is announced
    /// without one; empty before that.
    id: String,
    /// `id` came from the provider (not made up).
    provider_id: bool,
    name: String,
    arguments: String,
    /// The arguments passed [`MAX_TOOL_ARGUMENT_BYTES`] and were dropped.
    too_long: bool,
    /// `ToolCallStart` was emitted. A call is announced once its name is
    /// known (some compatible servers send the id and name after the
    /// first arguments fragment), or at the end of the turn.
    announced: bool,
    /// `ToolCall`/`ToolCallInvalid` was emitted.
    complete: bool,
}

impl CallAcc {
    /// Takes the id and name a piece carries while the call is not yet
    /// announced (afterwards they could contradict the start event).
    fn learn(&mut self, id: Option<String>, name: Option<String>) {
        if self.announced {
            return;
        }
        if let Some(id) = id.filter(|i| !i.is_empty()) {
            self.id = id;
            self.provider_id = true;
        }
        if let Some(name) = name {
            self.name = name;
        }
    }

    /// Emits `ToolCallStart` and the arguments buffered so far.
    fn announce(&mut self, index: usize, out: &mut VecDeque<StreamEvent>) {
        self.announced = true;
        if self.id.is_empty() {
            self.id = made_up_call_id();
        }
        out.push_back(StreamEvent::ToolCallStart {
            index,
            id: self.id.clone(),
            name: self.name.clone(),
        });
        if !self.arguments.is_empty() {
            out.push_back(StreamEvent::ToolCallDelta {
                index,
                fragment: self.arguments.clone(),
            });
        }
    }

    /// Adds an arguments fragment; false when it was dropped (too long).
    fn push(&mut self, fragment: &str) -> bool {
        if self.too_long {
            return false;
        }
        if self.arguments.len() + fragment.len() > MAX_TOOL_ARGUMENT_BYTES {
            self.too_long = true;
            self.arguments = String::new();
            return false;
        }
        self.arguments.push_str(fragment);
        true
    }

    /// The finished call: parsed once, here.
    fn finish(&mut self, index: usize) -> Result<ToolCall, InvalidToolCall> {
        self.complete = true;
        if self.id.is_empty() {
            self.id = made_up_call_id();
        }
        let arguments = std::mem::take(&mut self.arguments);
        let invalid = |raw_arguments: String, error: String| InvalidToolCall {
            index,
            id: self.id.clone(),
            name: self.name.clone(),
            raw_arguments,
            error,
        };
        if self.too_long {
            return Err(invalid(
                String::new(),
                format!("tool call arguments exceed the {MAX_TOOL_ARGUMENT_BYTES}-byte limit"),
            ));
        }
        if self.name.is_empty() {
            return Err(invalid(arguments, "the tool call names no tool".into()));
        }
        match wombat_core::parse_tool_arguments(&arguments) {
            Ok(map) => Ok(ToolCall::new(self.id.clone(), self.name.clone(), map)),
            Err(error) => Err(invalid(arguments, error)),
        }
    }
}

/// The tool calls of one turn, in per-turn order.
#[derive(Default)]
struct ToolCalls {
    calls: Vec<CallAcc>,
    /// The provider's `index` of each call → its position in `calls`.
    by_index: Vec<(u64, usize)>,
    /// The turn finished; no call may start any more.
    finished: bool,
}

impl ToolCalls {
    fn start(&mut self, ctx: &CallCtx) -> Result<usize> {
        if self.finished {
            return Err(ctx.malformed("a tool call started after the turn finished"));
        }
        if self.calls.len() >= MAX_TOOL_CALLS {
            return Err(ctx.malformed(format!("more than {MAX_TOOL_CALLS} tool calls in one turn")));
        }
        self.calls.push(CallAcc {
            id: String::new(),
            provider_id: false,
            name: String::new(),
            arguments: String::new(),
            too_long: false,
            announced: false,
            complete: false,
        });
        Ok(self.calls.len() - 1)
    }

    /// A whole call of a non-streaming reply.
    fn add_whole(&mut self, mut call: WireCallIn, ctx: &CallCtx) -> Result<()> {
        let position = self.start(ctx)?;
        if let Some(acc) = self.calls.get_mut(position) {
            acc.learn(call.id.take(), call.name());
            if let Some(args) = call.arguments() {
                acc.push(&args);
            }
        }
        Ok(())
    }

    /// A stream delta's piece of a call: starts the call (its first piece)
    /// and/or adds an arguments fragment.
    fn on_delta(
        &mut self,
        mut piece: WireCallIn,
        ctx: &CallCtx,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<()> {
        let id = piece.id.take().filter(|i| !i.is_empty());
        let position = match self.find(piece.index, id.as_deref()) {
            Some(p) => p,
            None => {
                let p = self.start(ctx)?;
                if let Some(i) = piece.index {
                    // A reused index now names the newest call.
                    self.by_index.retain(|(k, _)| *k != i);
                    self.by_index.push((i, p));
                }
                p
            }
        };
        let Some(acc) = self.calls.get_mut(position) else {
            return Ok(());
        };
        acc.learn(id, piece.name());
        if let Some(fragment) = piece.arguments().filter(|f| !f.is_empty()) {
            if acc.complete {
                return Err(ctx.malformed("tool call arguments arrived after the call finished"));
            }
            if acc.push(&fragment) && acc.announced {
                out.push_back(StreamEvent::ToolCallDelta {
                    index: position,
                    fragment,
                });
            }
        }
        if !acc.announced && !acc.name.is_empty() {
            acc.announce(position, out);
        }
        Ok(())
    }

    /// The call a stream piece continues, if any. An id seen before decides;
    /// otherwise the provider's `index`, unless the piece brings a new id
    /// for a call that already has one (Ollama numbers every call of a turn
    /// 0, each whole with its own id); a piece with neither continues the
    /// last call (servers that omit `index` send a call whole or id-first).
    fn find(&self, index: Option<u64>, id: Option<&str>) -> Option<usize> {
        if let Some(id) = id {
            if let Some(p) = self.calls.iter().position(|c| c.provider_id && c.id == id) {
                return Some(p);
            }
        }
        let by_index = match index {
            Some(i) => self.by_index.iter().find(|(k, _)| *k == i).map(|&(_, p)| p),
            None => self.calls.len().checked_sub(1),
        }?;
        let acc = self.calls.get(by_index)?;
        match id {
            // An id-less call announced under its index keeps it; without
            // an index a new id is a new call, as it always was.
            Some(_) if acc.provider_id || (acc.announced && index.is_none()) => None,
            _ => Some(by_index),
        }
    }

    /// Emits every call not yet complete, in order.
    fn finish_stream(&mut self, out: &mut VecDeque<StreamEvent>) {
        self.finished = true;
        for (index, acc) in self.calls.iter_mut().enumerate() {
            if acc.complete {
                continue;
            }
            if !acc.announced {
                acc.announce(index, out);
            }
            out.push_back(match acc.finish(index) {
                Ok(call) => StreamEvent::ToolCall {
                    index,
                    call: Box::new(call),
                },
                Err(bad) => StreamEvent::ToolCallInvalid(Box::new(bad)),
            });
        }
    }

    /// The valid and the invalid calls of a non-streaming reply.
    fn finish(mut self) -> (Vec<ToolCall>, Vec<InvalidToolCall>) {
        let mut valid = Vec::with_capacity(self.calls.len());
        let mut invalid = Vec::new();
        for (index, acc) in self.calls.iter_mut().enumerate() {
            match acc.finish(index) {
                Ok(call) => valid.push(call),
                Err(bad) => invalid.push(bad),
            }
        }
        (valid, invalid)
    }

    fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// An id for a call a compatible server sent without one: `call_` and 24
/// random alphanumerics, unlikely to collide within a conversation.
pub(crate) fn made_up_call_id() -> String {
    let mut id = String::with_capacity(29);
    id.push_str("call_");
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(24));
    id
}

#[derive(Default)]
struct Parser {
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    calls: ToolCalls,
}

impl SseParser for Parser {
    fn on_event(
        &mut self,
        ev: SseEvent,
        ctx: &CallCtx,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Step> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            self.calls.finish_stream(out);
            out.push_back(StreamEvent::Done {
                usage: self.usage.unwrap_or_default(),
                finish_reason: with_calls(self.finish_reason.take(), !self.calls.is_empty()),
            });
            return Ok(Step::Finished);
        }
        if data.is_empty() {
            return Ok(Step::Continue);
        }
        let chunk: WireChunk = serde_json::from_str(data)
            .map_err(|e| ctx.malformed(format!("invalid stream chunk: {e}")))?;
        if let Some(err) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            return Err(classify_body_error(ctx, None, err));
        }
        for choice in chunk.choices {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push_back(StreamEvent::Delta(text));
                }
                for piece in delta.tool_calls.into_iter().flatten() {
                    self.calls.on_delta(piece, ctx, out)?;
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(finish_reason(&reason));
                // The turn is over: complete the calls now rather than
                // after the usage tail.
                self.calls.finish_stream(out);
            }
        }
        if let Some(u) = chunk.usage.or(chunk.x_groq.and_then(|g| g.usage)) {
            self.usage = Some(u.into());
        }
        Ok(Step::Continue)
    }
}

// ---- errors ----

/// The error classifier for `req`: with tools declared, a provider's answer
/// that the model cannot call tools is [`ErrorKind::ToolsUnsupported`].
fn classifier(req: &ChatRequest) -> fn(&CallCtx, &ErrorResponse) -> Error {
    if req.tools.is_empty() {
        classify
    } else {
        classify_with_tools
    }
}

/// [`classify`] for a request that declared tools. An answer saying the
/// model cannot call tools becomes [`ErrorKind::ToolsUnsupported`] (not
/// retried; the router fails over, another model may have tools) instead
/// of a plain invalid request.
fn classify_with_tools(ctx: &CallCtx, resp: &ErrorResponse) -> Error {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    if let Some(err) = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .filter(|e| says_tools_unsupported(resp.status, e))
    {
        let failure = ctx.failure(Some(resp.status), error_message(err));
        return Error::new(ErrorKind::ToolsUnsupported, failure).with_retry_after(resp.retry_after);
    }
    classify(ctx, resp)
}

/// Texts of servers that answer "no tools for this model" without a
/// machine-readable code: Ollama (400, `"<model> does not support tools"`),
/// OpenRouter (404, `"No endpoints found that support tool use"`),
/// llama.cpp's server without a tool template (500, `"Unsupported param:
/// tools"`).
const NO_TOOLS_TEXTS: [&str; 3] = [
    "does not support tools",
    "support tool use",
    "Unsupported param: tools",
];

/// Whether an error object answering a request with tools says the model
/// cannot call tools. OpenAI names the parameter and an `unsupported_*`
/// code; that decides where a string `code` exists. Only an error without
/// one (`null`, absent, or the HTTP status as a number) is recognised by the
/// known texts above, and only on a status those servers use for it.
fn says_tools_unsupported(status: u16, err: &Value) -> bool {
    let field = |name: &str| err.get(name).and_then(Value::as_str);
    if let Some(code) = field("code") {
        return field("param") == Some("tools")
            && matches!(code, "unsupported_parameter" | "unsupported_value");
    }
    matches!(status, 400 | 404 | 422 | 500) && {
        let message = error_message(err);
        NO_TOOLS_TEXTS.iter().any(|t| message.contains(t))
    }
}

/// An error object's message (`message`, or the bare string some compatible
/// servers send, or the object itself).
fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        _ => err
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| err.to_string(), str::to_owned),
    }
}

fn classify(ctx: &CallCtx, resp: &ErrorResponse) -> Error {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    match body
        .as_ref()
        .and_then(|b| b.get("error"))
        .filter(|e| !e.is_null())
    {
        Some(err) => {
            classify_body_error(ctx, Some(resp.status), err).with_retry_after(resp.retry_after)
        }
        None => http::classify_status(
            resp.status,
            ctx.failure(Some(resp.status), resp.body_text()),
            resp.retry_after,
        ),
    }
}

/// Classifies an OpenAI `error` object (`{"message","type","code"}`; some
/// compatible servers send a bare string) by its `code`/`type` fields, then
/// by status. An error inside a `200` stream has no status: its type decides,
/// and an unknown one counts as a server error.
fn classify_body_error(ctx: &CallCtx, status: Option<u16>, err: &Value) -> Error {
    let field = |name: &str| err.get(name).and_then(Value::as_str);
    let failure = ctx.failure(status, error_message(err));
    let kind = [field("code"), field("type")];
    let has = |name: &str| kind.contains(&Some(name));
    if has("context_length_exceeded") || has("string_above_max_length") {
        return Error::new(ErrorKind::ContextLength, failure);
    }
    if has("insufficient_quota") {
        return Error::new(ErrorKind::QuotaExceeded, failure);
    }
    if has("invalid_api_key") || has("authentication_error") {
        return Error::auth(failure);
    }
    if has("model_not_found") {
        return Error::new(ErrorKind::ModelNotFound, failure);
    }
    if has("rate_limit_exceeded") || has("rate_limit_error") {
        return Error::new(ErrorKind::RateLimited, failure);
    }
    if has("server_error") || has("overloaded_error") || has("service_unavailable") {
        return Error::new(ErrorKind::Overloaded, failure);
    }
    match status {
        Some(s) => http::classify_status(s, failure, None),
        None => Error::new(ErrorKind::Server, failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models_are_told_apart_in_any_case() {
        for model in ["o1", "o3-mini", "O4-mini", "gpt-5", "GPT-5-mini", "gpt-5.1"] {
            assert!(is_reasoning_model(model), "{model}");
        }
        for model in [
            "gpt-5-chat-latest",
            "GPT-5-CHAT",
            "gpt-4o",
            "omni",
            "o",
            "",
            "gpt-",
        ] {
            assert!(!is_reasoning_model(model), "{model}");
        }
    }

    fn ctx() -> CallCtx {
        CallCtx::new(Provider::OpenAi, "gpt-4o-mini".into(), None)
    }

    fn err(status: u16, body: &str) -> Error {
        classify(
            &ctx(),
            &ErrorResponse {
                status,
                retry_after: None,
                body: bytes::Bytes::from(body.to_owned()),
            },
        )
    }

    #[test]
    fn classifies_by_code_and_type_not_message() {
        assert!(matches!(err(
                400,
                r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#
            ).kind(), ErrorKind::ContextLength));
        assert!(matches!(err(
                429,
                r#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#
            ).kind(), ErrorKind::QuotaExceeded));
        assert!(matches!(
            err(
                429,
                r#"{"error":{"message":"rate limit exceeded","type":"requests"}}"#
            )
            .kind(),
            ErrorKind::RateLimited
        ));
        assert!(matches!(
            err(
                400,
                r#"{"error":{"message":"context_length_exceeded","type":"invalid_request_error"}}"#
            )
            .kind(),
            ErrorKind::InvalidRequest
        ));
        assert!(matches!(
            err(502, "<html>bad gateway</html>").kind(),
            ErrorKind::Server
        ));
        let e = err(404, r#"{"error":"model 'x' not found"}"#);
        assert!(matches!(e.kind(), ErrorKind::ModelNotFound));
        assert!(e.to_string().contains("model 'x' not found"));
    }

    #[test]
    fn request_shape_per_provider() {
        let mut req = ChatRequest::new("m", vec![wombat_core::ChatMessage::user("hi")]);
        req.system = Some("be brief".into());
        req.max_tokens = Some(10);
        let openai = serde_json::to_value(WireRequest::new(Provider::OpenAi, &req, true, None))
            .expect("serialises");
        assert_eq!(openai["max_completion_tokens"], 10);
        assert!(openai.get("max_tokens").is_none());
        assert_eq!(openai["stream_options"]["include_usage"], true);
        assert_eq!(openai["messages"][0]["role"], "system");
        let mistral = serde_json::to_value(WireRequest::new(Provider::Mistral, &req, true, None))
            .expect("serialises");
        assert_eq!(mistral["max_tokens"], 10);
        assert!(mistral.get("stream_options").is_none());
        let plain = serde_json::to_value(WireRequest::new(Provider::Groq, &req, false, None))
            .expect("serialises");
        assert!(plain.get("stream").is_none() && plain.get("stream_options").is_none());
    }

    #[test]
    fn a_cached_system_prompt_gives_the_same_body_byte_for_byte() {
        let cache = EscapeCache::default();
        let mut req = ChatRequest::new("m", vec![wombat_core::ChatMessage::user("hi \"there\"")]);
        req.system = Some("# Soul\n\nBe \"brief\"\t\\ ✓\u{7}\n".repeat(64));
        let plain = serde_json::to_string(&WireRequest::new(Provider::OpenAi, &req, true, None))
            .expect("serialises");
        for _ in 0..2 {
            let system = cache
                .get(req.system.as_deref().expect("system"))
                .expect("kept");
            let cached = serde_json::to_string(&WireRequest::new(
                Provider::OpenAi,
                &req,
                true,
                Some(&system),
            ))
            .expect("serialises");
            assert_eq!(cached, plain);
        }
    }

    /// Two parallel calls whose arguments arrive in fragments, text first,
    /// a multi-byte character inside the arguments and the usage tail.
    const CALLS: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"On it\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \\\"Tromsø\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":5,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    );

    /// Runs the SSE decoder and the parser over `chunks` as the HTTP layer
    /// would, returning every event.
    fn parse_chunks(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut decoder = crate::sse::SseDecoder::new();
        let mut parser = Parser::default();
        let mut sse = Vec::new();
        let mut out = VecDeque::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut sse).expect("events are small");
            for ev in sse.drain(..) {
                parser.on_event(ev, &ctx(), &mut out).expect("parses");
            }
        }
        out.into()
    }

    /// The calls and text the events add up to, fragments joined.
    fn summary(events: &[StreamEvent]) -> (String, Vec<String>, Vec<String>) {
        let mut text = String::new();
        let mut fragments = vec![String::new(); 2];
        let mut calls = Vec::new();
        for e in events {
            match e {
                StreamEvent::Delta(d) => text.push_str(d),
                StreamEvent::ToolCallDelta { index, fragment } => {
                    fragments[*index].push_str(fragment);
                }
                StreamEvent::ToolCall { index, call } => calls.push(format!(
                    "{index} {} {} {}",
                    call.id,
                    call.name,
                    Value::Object(call.arguments.clone())
                )),
                StreamEvent::Done {
                    usage,
                    finish_reason,
                } => calls.push(format!("done {usage:?} {finish_reason:?}")),
                StreamEvent::ToolCallStart { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        (text, fragments, calls)
    }

    #[test]
    fn every_split_point_of_the_stream_gives_the_same_calls() {
        let bytes = CALLS.as_bytes();
        let whole = parse_chunks(&[bytes]);
        let (text, fragments, calls) = summary(&whole);
        assert_eq!(text, "On it");
        assert_eq!(fragments, ["{\"city\": \"Tromsø\"}", "{}"]);
        assert_eq!(
            calls,
            [
                "0 call_a get_weather {\"city\":\"Tromsø\"}",
                "1 call_b now {}",
                "done Usage { prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 } Some(ToolCalls)",
            ]
        );
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(parse_chunks(&[a, b]), whole, "split at byte {cut}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&single), whole);
        // Random splits into many pieces.
        let mut rng = fastrand::Rng::with_seed(14);
        for _ in 0..200 {
            let mut pieces = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let (a, b) = rest.split_at(rng.usize(1..=rest.len().min(40)));
                pieces.push(a);
                rest = b;
            }
            assert_eq!(parse_chunks(&pieces), whole);
        }
    }

    #[test]
    fn history_messages_map_onto_the_chat_shape() {
        use wombat_core::{Part, ToolContent};
        let call = ToolCall::new("c1", "now", serde_json::Map::new());
        let mut req = ChatRequest::new(
            "m",
            vec![
                ChatMessage::with_parts(Role::Assistant, vec![Part::ToolCall(call)]),
                // A result placed in a user message (Anthropic's way) still
                // becomes a tool message, ahead of the user's text.
                ChatMessage::with_parts(
                    Role::User,
                    vec![
                        Part::ToolResult(ToolResult::new("c1", ToolContent::Text("noon".into()))),
                        Part::text("thanks"),
                    ],
                ),
            ],
        );
        req.tools = vec![ToolSpec::new("now", Value::Null)];
        let body = serde_json::to_value(WireRequest::new(Provider::Groq, &req, false, None))
            .expect("serialises");
        assert_eq!(
            body["messages"],
            json!([
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
                {"role": "tool", "content": "noon", "tool_call_id": "c1"},
                {"role": "user", "content": "thanks"}
            ])
        );
        // A null schema is left out rather than sent as `null`.
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {"name": "now"}}])
        );
    }

    /// A compatible server that sends a call's id and name after its first
    /// arguments fragment: the call keeps them (announced once they are
    /// known) instead of becoming a nameless invalid call.
    #[test]
    fn a_call_whose_id_and_name_arrive_late_keeps_them() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_x\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\":\\\"Oslo\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let events = parse_chunks(&[body.as_bytes()]);
        let mut arguments = serde_json::Map::new();
        arguments.insert("city".into(), json!("Oslo"));
        assert_eq!(
            events,
            [
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_x".into(),
                    name: "get_weather".into(),
                },
                // The text buffered until the announcement comes with it.
                StreamEvent::ToolCallDelta {
                    index: 0,
                    fragment: "{\"city\":\"Oslo\"}".into(),
                },
                StreamEvent::ToolCall {
                    index: 0,
                    call: Box::new(ToolCall::new("call_x", "get_weather", arguments)),
                },
                StreamEvent::Done {
                    usage: Usage::default(),
                    finish_reason: Some(FinishReason::ToolCalls),
                },
            ]
        );
    }

    /// A call whose name never comes is still announced (once, before its
    /// completion) and reported invalid, with a made-up id.
    #[test]
    fn a_call_that_never_names_its_tool_is_announced_then_invalid() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let events = parse_chunks(&[body.as_bytes()]);
        let [
            StreamEvent::ToolCallStart { index: 0, id, name },
            StreamEvent::ToolCallDelta { index: 0, fragment },
            StreamEvent::ToolCallInvalid(bad),
            StreamEvent::Done { .. },
        ] = events.as_slice()
        else {
            panic!("unexpected events {events:?}");
        };
        assert!(id.starts_with("call_") && name.is_empty() && fragment == "{}");
        assert_eq!((&bad.id, bad.index), (id, 0));
    }

    /// Ollama labels every call of a turn `index: 0`, each whole with its
    /// own id: a new id under a known index is a new call, not more
    /// arguments for the first one.
    #[test]
    fn calls_that_share_an_index_but_not_an_id_are_separate() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Rome\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"arguments\":\"\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let events = parse_chunks(&[body.as_bytes()]);
        let (_, fragments, calls) = summary(&events);
        assert_eq!(fragments, ["{\"city\":\"Oslo\"}", "{\"city\":\"Rome\"}"]);
        assert_eq!(
            calls,
            [
                "0 call_a get_weather {\"city\":\"Oslo\"}",
                "1 call_b get_weather {\"city\":\"Rome\"}",
                "done Usage { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } Some(ToolCalls)",
            ]
        );
    }
}
