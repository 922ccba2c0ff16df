//! The Google Gemini adapter (`{base}/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, key in `x-goog-api-key`).
//!
//! The system prompt goes to `systemInstruction`, roles are `user`/`model`,
//! options go to `generationConfig`, and JSON schemas are converted to the
//! `responseSchema` dialect. Streams have no end marker: one counts as
//! complete when a candidate carried a `finishReason` before the body ended.
//! Wire types are private here; no retries happen in this module.
//!
//! Tools: `tools: [{functionDeclarations: [{name, description, parameters}]}]`
//! with parameters in the same OpenAPI-subset dialect, and
//! `toolConfig.functionCallingConfig` (`AUTO`, `NONE`, `ANY`, or `ANY` with
//! `allowedFunctionNames` for a named tool). History: an assistant turn's
//! calls are `functionCall {name, args}` parts carrying their
//! `thoughtSignature`; results are `functionResponse {name, response}` parts
//! of a user turn, the name looked up from the call they answer and the
//! response `{"output": …}` or `{"error": …}`. Replies: each `functionCall`
//! part is a tool call (Gemini's id when it sent one, else a random
//! `call_…`), delivered whole in a stream, and a turn with calls finishes
//! with [`FinishReason::ToolCalls`] although Gemini says `STOP`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ::http::header::HeaderName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use wombat_core::{Part, Provider, Role, ToolCall, ToolContent, ToolResult, Usage};
use wombat_transport::Client;

use crate::escaped::{EscapeCache, OwnedText};
use crate::http::{self, CallCtx, ErrorResponse, SseParser, Step};
use crate::sse::SseEvent;
use crate::types::{
    ApiKey, ChatProvider, ChatRequest, Completion, EventStream, FinishReason, InvalidToolCall,
    ResponseFormat, StreamEvent, ToolChoice, ToolSpec,
};
use crate::{Error, ErrorKind, Result};

/// Longest `retryDelay` honoured, as for retry headers.
const MAX_HINT_SECS: f64 = 60.0;

/// Gemini at a base URL such as
/// `https://generativelanguage.googleapis.com/v1beta`.
#[derive(Debug, Clone)]
pub struct GeminiAdapter {
    client: Client,
    base_url: String,
    key: Option<ApiKey>,
    /// Recent system instructions, already escaped for the body.
    escaped: Arc<EscapeCache>,
}

impl GeminiAdapter {
    /// An adapter using the shared `client`. Without a key, calls fail with
    /// [`ErrorKind::MissingApiKey`] naming `GEMINI_API_KEY`.
    pub fn new(client: Client, base_url: impl Into<String>, key: Option<ApiKey>) -> Self {
        Self {
            client,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            key,
            escaped: Arc::default(),
        }
    }

    fn prepare(&self, req: &ChatRequest, stream: bool) -> Result<(http::Outgoing, CallCtx)> {
        let Some(key) = req.key_override().or(self.key.as_ref()) else {
            return Err(Error::missing_api_key(Provider::Google, "GEMINI_API_KEY"));
        };
        let ctx =
            CallCtx::new(Provider::Google, req.model.clone(), Some(key.clone())).for_request(req);
        let model = req.model.strip_prefix("models/").unwrap_or(&req.model);
        let method = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        let url = format!(
            "{}/models/{}:{method}",
            self.base_url,
            http::path_segment(model)
        );
        let mut body = WireRequest::new(req).map_err(|message| invalid_request(&ctx, message))?;
        if let Some(system) = body.system_instruction.as_mut() {
            let [part] = &mut system.parts;
            part.text.escaped = self.escaped.get(&part.text.text);
        }
        // Parsed per call: the model is part of the path.
        let builder = http::Endpoint::new(&url)
            .post(&self.client)
            .secret_header(HeaderName::from_static("x-goog-api-key"), key.expose())
            .json(&body, req.body_size_hint());
        Ok((builder, ctx))
    }
}

#[async_trait::async_trait]
impl ChatProvider for GeminiAdapter {
    async fn complete(&self, req: &ChatRequest) -> Result<Completion> {
        let (builder, ctx) = self.prepare(req, false)?;
        let resp = http::send(builder, &ctx, classify).await?;
        let wire: WireResponse = http::read_json(resp, &ctx).await?;
        let mut text = String::new();
        let mut turn = TurnCalls::default();
        let finish = if let Some(candidate) = wire.candidates.into_iter().next() {
            candidate.append_text(&mut text);
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                if let Some(call) = part.function_call {
                    if turn.len() >= MAX_STREAM_CALLS {
                        return Err(ctx.malformed(format!(
                            "more than {MAX_STREAM_CALLS} tool calls in one turn"
                        )));
                    }
                    turn.add(call, part.thought_signature);
                }
            }
            candidate
                .finish_reason
                .as_deref()
                .map(|r| turn.finish_reason(finish_reason(r)))
        } else if let Some(reason) = wire.prompt_feedback.and_then(|f| f.block_reason) {
            // A blocked prompt yields no candidates: an empty answer stopped
            // by the content filter.
            tracing::debug!(block_reason = %reason, "gemini blocked the prompt");
            Some(FinishReason::ContentFilter)
        } else {
            return Err(ctx.malformed("response has no candidates"));
        };
        Ok(Completion {
            tool_calls: turn.calls,
            invalid_tool_calls: turn.invalid,
            text,
            usage: wire.usage_metadata.map(Usage::from).unwrap_or_default(),
            finish_reason: finish,
        })
    }

    async fn stream(&self, req: &ChatRequest) -> Result<EventStream> {
        let (builder, ctx) = self.prepare(req, true)?;
        let resp = http::send(builder, &ctx, classify).await?;
        Ok(http::sse_stream(resp, ctx, Parser::default()))
    }
}

// ---- request ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    contents: Vec<WireContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<Value>,
}

/// `systemInstruction`: one text part, which may carry its cached escaped
/// form.
#[derive(Serialize)]
struct SystemInstruction {
    parts: [SystemPart; 1],
}

#[derive(Serialize)]
struct SystemPart {
    text: OwnedText,
}

#[derive(Serialize, Deserialize)]
struct WireContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// Thought summaries of thinking models are not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_call: Option<WireFunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_response: Option<WireFunctionResponse>,
    /// Opaque; on a `functionCall` part it must be sent back with the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl WirePart {
    fn text(text: String) -> Self {
        Self {
            text: Some(text),
            ..Self::default()
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WireFunctionCall {
    /// Sent by some Gemini deployments; never sent back (see
    /// [`WireRequest::new`]).
    #[serde(default, skip_serializing)]
    id: Option<String>,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct WireFunctionResponse {
    name: String,
    response: Value,
}

/// The signature sent on a replayed function call that has none (the call
/// came from another provider, or through a wire format that drops it).
/// Gemini documents this value for exactly that case; without it Gemini 3
/// answers 400 for a function call missing its `thought_signature`.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Appends `text` to the parts, joining it to a trailing plain text part with
/// a blank line (how consecutive same-role messages were always merged).
fn push_text(parts: &mut Vec<WirePart>, text: &str) {
    match parts.last_mut() {
        Some(WirePart {
            text: Some(acc),
            thought: None,
            function_call: None,
            function_response: None,
            thought_signature: None,
        }) => {
            acc.push_str("\n\n");
            acc.push_str(text);
        }
        _ => parts.push(WirePart::text(text.to_owned())),
    }
}

/// A tool result as a `functionResponse.response`, which must be an object:
/// `{"output": …}` on success and `{"error": …}` on failure, the keys
/// Gemini's API reference names for the two cases.
fn function_response(result: &ToolResult) -> Value {
    let value = match &result.content {
        ToolContent::Text(t) => Value::String(t.clone()),
        ToolContent::Json(v) => v.clone(),
        other => Value::String(other.to_text().into_owned()),
    };
    let key = if result.is_error { "error" } else { "output" };
    let mut map = Map::with_capacity(1);
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

/// `toolConfig.functionCallingConfig` for a tool choice.
fn tool_config(choice: &ToolChoice) -> Value {
    let config = match choice {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    };
    json!({ "functionCallingConfig": config })
}

/// A function declaration. Parameters use the `parameters` field in the
/// OpenAPI-subset dialect (the same conversion as `responseSchema`), which
/// every Gemini model and Vertex accept, rather than the newer
/// `parametersJsonSchema`. A schema without properties is left out: Gemini
/// refuses an `OBJECT` whose `properties` are empty.
fn function_declaration(tool: &ToolSpec) -> Value {
    let mut decl = Map::new();
    decl.insert("name".to_owned(), Value::String(tool.name.clone()));
    if let Some(d) = &tool.description {
        decl.insert("description".to_owned(), Value::String(d.clone()));
    }
    let parameters = crate::schema::gemini_schema(&tool.parameters);
    let has_properties = parameters
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty());
    if has_properties {
        decl.insert("parameters".to_owned(), parameters);
    }
    Value::Object(decl)
}

impl WireRequest {
    /// The request body. Fails when a tool result answers a call id no
    /// earlier assistant message made: Gemini matches results to calls by
    /// function name, which only the call knows.
    fn new(req: &ChatRequest) -> std::result::Result<Self, String> {
        let mut contents: Vec<WireContent> = Vec::new();
        // Call id → function name, from the assistant messages seen so far.
        let mut call_names: HashMap<&str, &str> = HashMap::new();
        for m in req.messages.iter().filter(|m| m.role != Role::System) {
            let role = if m.role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            if contents.last().and_then(|c| c.role.as_deref()) != Some(role) {
                contents.push(WireContent {
                    role: Some(role.to_owned()),
                    parts: Vec::new(),
                });
            }
            let Some(content) = contents.last_mut() else {
                continue;
            };
            let parts = &mut content.parts;
            let text_only = m.parts.iter().all(|p| matches!(p, Part::Text(_)));
            let text = m.text();
            if text_only || !text.is_empty() {
                push_text(parts, &text);
            }
            for part in &m.parts {
                match part {
                    Part::ToolCall(c) => {
                        call_names.insert(&c.id, &c.name);
                        // Gemini 3 checks the first call of each step.
                        let first = !parts.iter().any(|p| p.function_call.is_some());
                        let signature = c
                            .signature
                            .clone()
                            .or_else(|| first.then(|| SKIP_SIGNATURE.to_owned()));
                        parts.push(WirePart {
                            function_call: Some(WireFunctionCall {
                                id: None,
                                name: c.name.clone(),
                                args: Some(Value::Object(c.arguments.clone())),
                            }),
                            thought_signature: signature,
                            ..WirePart::default()
                        });
                    }
                    Part::ToolResult(r) => {
                        let Some(name) = call_names.get(r.call_id.as_str()) else {
                            return Err(format!(
                                "tool result for call id {:?} answers no earlier tool call",
                                r.call_id
                            ));
                        };
                        parts.push(WirePart {
                            function_response: Some(WireFunctionResponse {
                                name: (*name).to_owned(),
                                response: function_response(r),
                            }),
                            ..WirePart::default()
                        });
                    }
                    // Text was handled above; kinds added later are not sent.
                    _ => {}
                }
            }
        }
        let system_instruction = http::collect_system(req).map(|text| SystemInstruction {
            parts: [SystemPart {
                text: OwnedText::new(text),
            }],
        });
        let (tools, tool_config) = if req.tools.is_empty() {
            (Vec::new(), None)
        } else {
            let declarations: Vec<Value> = req.tools.iter().map(function_declaration).collect();
            (
                vec![json!({ "functionDeclarations": declarations })],
                req.tool_choice.as_ref().map(tool_config),
            )
        };
        let mut config = serde_json::Map::new();
        if let Some(t) = req.temperature {
            config.insert("temperature".into(), json!(t));
        }
        if let Some(n) = req.max_tokens {
            config.insert("maxOutputTokens".into(), json!(n));
        }
        match &req.response_format {
            Some(ResponseFormat::Json) => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                config.insert("responseMimeType".into(), json!("application/json"));
                config.insert(
                    "responseSchema".into(),
                    crate::schema::gemini_schema(schema),
                );
            }
            None => {}
        }
        Ok(Self {
            contents,
            system_instruction,
            tools,
            tool_config,
            generation_config: (!config.is_empty()).then_some(Value::Object(config)),
        })
    }
}

// ---- response ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    usage_metadata: Option<WireUsage>,
    prompt_feedback: Option<WireFeedback>,
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    content: Option<WireContent>,
    finish_reason: Option<String>,
}

impl WireCandidate {
    fn append_text(&self, out: &mut String) {
        for part in self.content.iter().flat_map(|c| &c.parts) {
            if part.thought != Some(true) {
                if let Some(t) = &part.text {
                    out.push_str(t);
                }
            }
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    total_token_count: Option<u64>,
}

impl From<WireUsage> for Usage {
    /// Thinking tokens are billed as output, so they count as completion.
    fn from(u: WireUsage) -> Self {
        let mut usage = Usage::new(
            u.prompt_token_count,
            u.candidates_token_count
                .saturating_add(u.thoughts_token_count),
        );
        if let Some(total) = u.total_token_count {
            usage.total_tokens = total;
        }
        usage
    }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

/// The function calls of one model turn.
#[derive(Default)]
struct TurnCalls {
    calls: Vec<ToolCall>,
    invalid: Vec<InvalidToolCall>,
}

impl TurnCalls {
    fn len(&self) -> usize {
        self.calls.len() + self.invalid.len()
    }

    /// Adds a call: Gemini's id when it sent one, else a made-up one; its
    /// `args` object (absent is `{}`); its part's signature.
    fn add(&mut self, call: WireFunctionCall, signature: Option<String>) -> StreamEvent {
        let index = self.len();
        let id = call
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(new_call_id);
        match call.args {
            // As in the other adapters, a call must name its tool.
            args if call.name.is_empty() => {
                self.push_invalid(index, id, call.name, args, "the tool call names no tool")
            }
            None | Some(Value::Null) => {
                self.push_valid(index, id, call.name, Map::new(), signature)
            }
            Some(Value::Object(arguments)) => {
                self.push_valid(index, id, call.name, arguments, signature)
            }
            other => self.push_invalid(
                index,
                id,
                call.name,
                other,
                "tool arguments must be a JSON object",
            ),
        }
    }

    fn push_invalid(
        &mut self,
        index: usize,
        id: String,
        name: String,
        args: Option<Value>,
        error: &str,
    ) -> StreamEvent {
        let bad = InvalidToolCall {
            index,
            id,
            name,
            raw_arguments: args.map(|a| a.to_string()).unwrap_or_default(),
            error: error.to_owned(),
        };
        self.invalid.push(bad.clone());
        StreamEvent::ToolCallInvalid(Box::new(bad))
    }

    fn push_valid(
        &mut self,
        index: usize,
        id: String,
        name: String,
        arguments: Map<String, Value>,
        signature: Option<String>,
    ) -> StreamEvent {
        let mut call = ToolCall::new(id, name, arguments);
        call.signature = signature;
        self.calls.push(call.clone());
        StreamEvent::ToolCall {
            index,
            call: Box::new(call),
        }
    }

    /// Gemini says `STOP` for a turn that called functions; the caller
    /// needs to know it must run them.
    fn finish_reason(&self, reason: FinishReason) -> FinishReason {
        if reason == FinishReason::Stop && self.len() > 0 {
            FinishReason::ToolCalls
        } else {
            reason
        }
    }
}

/// A call id for a Gemini call that came without one: `call_` and 96 random
/// bits, unique within any conversation in practice (Gemini's REST API
/// matches results by name, so the id is ours alone).
fn new_call_id() -> String {
    format!("call_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

/// A request this adapter cannot express (found before anything is sent).
fn invalid_request(ctx: &CallCtx, message: String) -> Error {
    Error::new(ErrorKind::InvalidRequest, ctx.failure(None, message))
}

// ---- streaming ----

/// Most function calls accepted in one turn, streamed or not (as by the
/// OpenAI adapter); more is a malformed response.
const MAX_STREAM_CALLS: usize = 64;

#[derive(Default)]
struct Parser {
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
    /// The turn's calls so far (kept for their count and the finish reason).
    turn: TurnCalls,
}

impl SseParser for Parser {
    fn on_event(
        &mut self,
        ev: SseEvent,
        ctx: &CallCtx,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Step> {
        if ev.data.trim().is_empty() {
            return Ok(Step::Continue);
        }
        let chunk: WireResponse = serde_json::from_str(&ev.data)
            .map_err(|e| ctx.malformed(format!("invalid stream chunk: {e}")))?;
        if let Some(err) = chunk.error.as_ref().filter(|e| e.is_object()) {
            return Err(classify_status_object(ctx, None, err, None));
        }
        if let Some(candidate) = chunk.candidates.into_iter().next() {
            let mut text = String::new();
            candidate.append_text(&mut text);
            if !text.is_empty() {
                out.push_back(StreamEvent::Delta(text));
            }
            // Gemini delivers each call whole: a start and the call at once.
            for part in candidate.content.into_iter().flat_map(|c| c.parts) {
                let Some(call) = part.function_call else {
                    continue;
                };
                if self.turn.len() >= MAX_STREAM_CALLS {
                    return Err(ctx.malformed(format!(
                        "more than {MAX_STREAM_CALLS} tool calls in one turn"
                    )));
                }
                let index = self.turn.len();
                let done = self.turn.add(call, part.thought_signature);
                let (id, name) = match &done {
                    StreamEvent::ToolCall { call, .. } => (call.id.clone(), call.name.clone()),
                    StreamEvent::ToolCallInvalid(bad) => (bad.id.clone(), bad.name.clone()),
                    _ => continue,
                };
                out.push_back(StreamEvent::ToolCallStart { index, id, name });
                out.push_back(done);
            }
            if let Some(reason) = &candidate.finish_reason {
                self.finish_reason = Some(finish_reason(reason));
            }
        } else if chunk.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            self.finish_reason = Some(FinishReason::ContentFilter);
        }
        // `usageMetadata` is cumulative: the last one wins.
        if let Some(u) = chunk.usage_metadata {
            self.usage = Some(u.into());
        }
        Ok(Step::Continue)
    }

    fn on_eof(&mut self, ctx: &CallCtx) -> Result<StreamEvent> {
        match self.finish_reason.take() {
            Some(reason) => Ok(StreamEvent::Done {
                usage: self.usage.unwrap_or_default(),
                finish_reason: Some(self.turn.finish_reason(reason)),
            }),
            None => Err(ctx.truncated()),
        }
    }
}

// ---- errors ----

fn classify(ctx: &CallCtx, resp: &ErrorResponse) -> Error {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    // Some proxies wrap the error in a one-element array.
    let err = body.as_ref().and_then(|b| match b {
        Value::Array(items) => items.first().and_then(|i| i.get("error")),
        other => other.get("error"),
    });
    match err.filter(|e| e.is_object()) {
        Some(err) => classify_status_object(ctx, Some(resp.status), err, resp.retry_after),
        None => http::classify_status(
            resp.status,
            ctx.failure(Some(resp.status), resp.body_text()),
            resp.retry_after,
        ),
    }
}

/// Classifies a `google.rpc.Status` (`{"code","message","status","details"}`)
/// by its `status` and detail types; the wait comes from a `RetryInfo`
/// detail's `retryDelay` (`"37s"`) when no header gave one and it is ≤ 60 s.
fn classify_status_object(
    ctx: &CallCtx,
    status: Option<u16>,
    err: &Value,
    header_wait: Option<std::time::Duration>,
) -> Error {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| err.to_string(), str::to_owned);
    let status = status.or_else(|| {
        err.get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
    });
    let failure = ctx.failure(status, message);
    let details: &[Value] = err
        .get("details")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let detail_type = |d: &Value, suffix: &str| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(suffix))
    };
    let retry_after = header_wait.or_else(|| {
        details
            .iter()
            .filter(|d| detail_type(d, "google.rpc.RetryInfo"))
            .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
            .and_then(parse_proto_duration)
            .filter(|d| d.as_secs_f64() <= MAX_HINT_SECS)
    });
    let key_invalid = details.iter().any(|d| {
        detail_type(d, "google.rpc.ErrorInfo")
            && d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID")
    });
    if key_invalid {
        return Error::auth(failure);
    }
    match err.get("status").and_then(Value::as_str) {
        Some("RESOURCE_EXHAUSTED") => {
            Error::new(ErrorKind::RateLimited, failure).with_retry_after(retry_after)
        }
        Some("UNAUTHENTICATED") | Some("PERMISSION_DENIED") => Error::auth(failure),
        Some("NOT_FOUND") => Error::new(ErrorKind::ModelNotFound, failure),
        // Gemini answers FAILED_PRECONDITION when the free tier is not
        // available to the account (billing, region): an account problem.
        Some("FAILED_PRECONDITION") => Error::new(ErrorKind::QuotaExceeded, failure),
        Some("INVALID_ARGUMENT") | Some("OUT_OF_RANGE") => {
            Error::new(ErrorKind::InvalidRequest, failure)
        }
        Some("UNAVAILABLE") => {
            Error::new(ErrorKind::Overloaded, failure).with_retry_after(retry_after)
        }
        Some("DEADLINE_EXCEEDED") => Error::new(ErrorKind::Timeout, failure),
        Some("INTERNAL") | Some("UNKNOWN") => {
            Error::new(ErrorKind::Server, failure).with_retry_after(retry_after)
        }
        _ => match status {
            Some(s) => http::classify_status(s, failure, retry_after),
            None => Error::new(ErrorKind::Server, failure).with_retry_after(retry_after),
        },
    }
}

/// Parses a protobuf JSON duration such as `"37s"` or `"1.5s"`.
fn parse_proto_duration(s: &str) -> Option<std::time::Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    http::secs_to_duration(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wombat_core::ChatMessage;

    fn ctx() -> CallCtx {
        CallCtx::new(Provider::Google, "gemini-2.0-flash".into(), None)
    }

    #[test]
    fn resource_exhausted_reads_retry_delay_up_to_a_minute() {
        let body = |delay: &str| {
            json!({"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
            ]})
        };
        let e = classify_status_object(&ctx(), Some(429), &body("37s"), None);
        assert!(matches!(e.kind(), ErrorKind::RateLimited));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(37)));
        let e = classify_status_object(&ctx(), Some(429), &body("0.5s"), None);
        assert_eq!(e.retry_after(), Some(Duration::from_millis(500)));
        let e = classify_status_object(&ctx(), Some(429), &body("3600s"), None);
        assert_eq!(e.retry_after(), None);
    }

    #[test]
    fn invalid_key_is_auth_even_though_status_is_invalid_argument() {
        let err = json!({"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]});
        assert!(matches!(
            classify_status_object(&ctx(), Some(400), &err, None).kind(),
            ErrorKind::Auth
        ));
    }

    #[test]
    fn error_inside_a_stream_is_typed_by_its_status() {
        let mut parser = Parser::default();
        let mut out = VecDeque::new();
        let ev = SseEvent {
            event: String::new(),
            data: r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#
                .into(),
        };
        let err = parser
            .on_event(ev, &ctx(), &mut out)
            .err()
            .expect("an error chunk is an error");
        assert!(matches!(err.kind(), ErrorKind::Overloaded), "{err:?}");
        assert_eq!(err.failure().and_then(|f| f.status), Some(503));
        assert!(out.is_empty());
    }

    #[test]
    fn non_object_args_are_an_invalid_call_and_calls_are_bounded() {
        let chunk = |parts: Value| SseEvent {
            event: String::new(),
            data: json!({"candidates": [{"content": {"role": "model", "parts": parts}}]})
                .to_string(),
        };
        let mut parser = Parser::default();
        let mut out = VecDeque::new();
        parser
            .on_event(
                chunk(json!([{"functionCall": {"name": "f", "args": [1, 2]}}])),
                &ctx(),
                &mut out,
            )
            .expect("parses");
        assert!(matches!(
            out.pop_front(),
            Some(StreamEvent::ToolCallStart { index: 0, .. })
        ));
        let Some(StreamEvent::ToolCallInvalid(bad)) = out.pop_front() else {
            panic!("an invalid call");
        };
        assert_eq!((bad.index, bad.raw_arguments.as_str()), (0, "[1,2]"));
        let many: Vec<Value> = (1..MAX_STREAM_CALLS)
            .map(|_| json!({"functionCall": {"name": "f"}}))
            .collect();
        parser
            .on_event(chunk(Value::Array(many)), &ctx(), &mut out)
            .expect("exactly the limit");
        let err = parser
            .on_event(
                chunk(json!([{"functionCall": {"name": "f"}}])),
                &ctx(),
                &mut out,
            )
            .err()
            .expect("one call too many");
        assert!(err.to_string().contains("more than 64 tool calls"), "{err}");
    }

    #[test]
    fn a_cached_system_instruction_gives_the_same_body_byte_for_byte() {
        let cache = EscapeCache::default();
        let mut req = ChatRequest::new("gemini-2.0-flash", vec![ChatMessage::user("hi")]);
        req.system = Some("# Soul\n\nBe \"brief\"\t\\ ✓\u{7}\n".repeat(64));
        let plain =
            serde_json::to_string(&WireRequest::new(&req).expect("builds")).expect("serialises");
        let mut body = WireRequest::new(&req).expect("builds");
        let [part] = &mut body.system_instruction.as_mut().expect("system").parts;
        part.text.escaped = cache.get(&part.text.text);
        assert!(part.text.escaped.is_some());
        assert_eq!(serde_json::to_string(&body).expect("serialises"), plain);
    }

    #[test]
    fn request_shape() {
        let mut req = ChatRequest::new(
            "gemini-2.0-flash",
            vec![
                ChatMessage::system("extra rule"),
                ChatMessage::user("a"),
                ChatMessage::user("b"),
                ChatMessage::assistant("c"),
            ],
        );
        req.system = Some("sys".into());
        req.temperature = Some(0.5);
        req.max_tokens = Some(100);
        let body =
            serde_json::to_value(WireRequest::new(&req).expect("builds")).expect("serialises");
        assert_eq!(
            body,
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "a\n\nb"}]},
                    {"role": "model", "parts": [{"text": "c"}]}
                ],
                "systemInstruction": {"parts": [{"text": "sys\n\nextra rule"}]},
                "generationConfig": {"temperature": 0.5, "maxOutputTokens": 100}
            })
        );
    }
}
