//! The OpenAI Chat Completions adapter, which also serves every
//! OpenAI-compatible provider (xAI, Groq, Mistral, OpenRouter, Ollama, and
//! any server behind a `<PROVIDER>_BASE_URL` override).
//!
//! Its wire types are private to this module. It does no retries; the
//! router does.

use std::collections::VecDeque;

use reqwest::Client;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wombat_core::{Provider, Usage};

use crate::http::{self, CallCtx, Endpoint, ErrorResponse, SseParser, Step};
use crate::sse::SseEvent;
use crate::types::{
    ApiKey, ChatProvider, ChatRequest, Completion, EventStream, FinishReason, ResponseFormat,
    StreamEvent,
};
use crate::{Error, Result};

/// An OpenAI-compatible provider at a base URL such as
/// `https://api.openai.com/v1` (requests go to `{base}/chat/completions`).
#[derive(Debug, Clone)]
pub struct OpenAiAdapter {
    client: Client,
    provider: Provider,
    /// `{base}/chat/completions`.
    endpoint: Endpoint,
    key: Option<ApiKey>,
    /// Calls without a key go out without `Authorization` instead of
    /// failing (a local server behind a base URL override).
    key_optional: bool,
}

impl OpenAiAdapter {
    /// An adapter for `provider` (one of the OpenAI-compatible ones) using
    /// the shared `client`. Without a key, calls fail with
    /// [`Error::MissingApiKey`] unless the provider needs none (Ollama).
    pub fn new(
        client: Client,
        provider: Provider,
        base_url: impl Into<String>,
        key: Option<ApiKey>,
    ) -> Self {
        Self {
            client,
            provider,
            endpoint: Endpoint::new(format!(
                "{}/chat/completions",
                base_url.into().trim_end_matches('/')
            )),
            key,
            key_optional: false,
        }
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

    fn prepare(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<(reqwest::RequestBuilder, CallCtx)> {
        let key = match (&self.key, self.provider.api_key_env()) {
            (Some(k), _) => Some(k),
            (None, Some(env)) if !self.key_optional => {
                return Err(Error::MissingApiKey {
                    provider: self.provider,
                    env,
                });
            }
            (None, _) => None,
        };
        let ctx = CallCtx {
            provider: self.provider,
            model: req.model.clone(),
            key: key.cloned(),
        };
        let body = WireRequest::new(self.provider, req, stream);
        let mut builder = self.endpoint.post(&self.client).json(&body);
        if let Some(k) = key {
            builder = builder.bearer_auth(k.expose());
        }
        if stream {
            builder = builder.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        Ok((builder, ctx))
    }
}

#[async_trait::async_trait]
impl ChatProvider for OpenAiAdapter {
    async fn complete(&self, req: &ChatRequest) -> Result<Completion> {
        let (builder, ctx) = self.prepare(req, false)?;
        let resp = http::send(builder, &ctx, classify).await?;
        let body: Value = http::read_json(resp, &ctx).await?;
        if let Some(err) = body.get("error").filter(|e| !e.is_null()) {
            return Err(classify_body_error(&ctx, None, err));
        }
        let wire: WireResponse = serde_json::from_value(body)
            .map_err(|e| ctx.malformed(format!("unexpected response shape: {e}")))?;
        let choice = wire
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ctx.malformed("response has no choices"))?;
        Ok(Completion {
            tool_calls: Vec::new(),
            invalid_tool_calls: Vec::new(),
            text: choice.message.content.unwrap_or_default(),
            usage: wire.usage.map(Usage::from).unwrap_or_default(),
            finish_reason: choice.finish_reason.as_deref().map(finish_reason),
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
}

/// OpenAI's reasoning models, which take no `temperature`: the o-series
/// (`o1`, `o3-mini`, `o4-mini`, ...) and `gpt-5` (but not the non-reasoning
/// `gpt-5-chat-*`).
fn is_reasoning_model(model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    let o_series = m
        .strip_prefix('o')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    o_series || (m.starts_with("gpt-5") && !m.contains("-chat"))
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: std::borrow::Cow<'a, str>,
}

impl<'a> WireRequest<'a> {
    fn new(provider: Provider, req: &'a ChatRequest, stream: bool) -> Self {
        let messages = req
            .system
            .iter()
            .map(|s| WireMessage {
                role: "system",
                content: std::borrow::Cow::Borrowed(s.as_str()),
            })
            .chain(req.messages.iter().map(|m| WireMessage {
                role: m.role.as_str(),
                content: m.text(),
            }))
            .collect();
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
        }
    }
}

// ---- response ----

#[derive(Deserialize)]
struct WireResponse {
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
}

#[derive(Default)]
struct Parser {
    usage: Option<Usage>,
    finish_reason: Option<FinishReason>,
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
            out.push_back(StreamEvent::Done {
                usage: self.usage.unwrap_or_default(),
                finish_reason: self.finish_reason.take(),
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
            if let Some(text) = choice.delta.and_then(|d| d.content) {
                if !text.is_empty() {
                    out.push_back(StreamEvent::Delta(text));
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(finish_reason(&reason));
            }
        }
        if let Some(u) = chunk.usage.or(chunk.x_groq.and_then(|g| g.usage)) {
            self.usage = Some(u.into());
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
        .filter(|e| !e.is_null())
    {
        Some(err) => {
            let mut e = classify_body_error(ctx, Some(resp.status), err);
            set_retry_after(&mut e, resp.retry_after);
            e
        }
        None => http::classify_status(
            resp.status,
            ctx.failure(Some(resp.status), resp.body_text()),
            resp.retry_after,
        ),
    }
}

fn set_retry_after(e: &mut Error, wait: Option<std::time::Duration>) {
    if let Error::RateLimited { retry_after, .. }
    | Error::Overloaded { retry_after, .. }
    | Error::Server { retry_after, .. }
    | Error::UnexpectedStatus { retry_after, .. } = e
    {
        *retry_after = wait;
    }
}

/// Classifies an OpenAI `error` object (`{"message","type","code"}`; some
/// compatible servers send a bare string) by its `code`/`type` fields, then
/// by status. An error inside a `200` stream has no status: its type decides,
/// and an unknown one counts as a server error.
fn classify_body_error(ctx: &CallCtx, status: Option<u16>, err: &Value) -> Error {
    let field = |name: &str| err.get(name).and_then(Value::as_str);
    let message = match err {
        Value::String(s) => s.clone(),
        _ => field("message").map_or_else(|| err.to_string(), str::to_owned),
    };
    let failure = ctx.failure(status, message);
    let kind = [field("code"), field("type")];
    let has = |name: &str| kind.contains(&Some(name));
    if has("context_length_exceeded") || has("string_above_max_length") {
        return Error::ContextLength { failure };
    }
    if has("insufficient_quota") {
        return Error::QuotaExceeded { failure };
    }
    if has("invalid_api_key") || has("authentication_error") {
        return Error::auth(failure);
    }
    if has("model_not_found") {
        return Error::ModelNotFound { failure };
    }
    if has("rate_limit_exceeded") || has("rate_limit_error") {
        return Error::RateLimited {
            failure,
            retry_after: None,
        };
    }
    if has("server_error") || has("overloaded_error") || has("service_unavailable") {
        return Error::Overloaded {
            failure,
            retry_after: None,
        };
    }
    match status {
        Some(s) => http::classify_status(s, failure, None),
        None => Error::Server {
            failure,
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallCtx {
        CallCtx {
            provider: Provider::OpenAi,
            model: "gpt-4o-mini".into(),
            key: None,
        }
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
        assert!(matches!(
            err(
                400,
                r#"{"error":{"message":"too long","type":"invalid_request_error","code":"context_length_exceeded"}}"#
            ),
            Error::ContextLength { .. }
        ));
        assert!(matches!(
            err(
                429,
                r#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#
            ),
            Error::QuotaExceeded { .. }
        ));
        assert!(matches!(
            err(
                429,
                r#"{"error":{"message":"rate limit exceeded","type":"requests"}}"#
            ),
            Error::RateLimited { .. }
        ));
        assert!(matches!(
            err(
                400,
                r#"{"error":{"message":"context_length_exceeded","type":"invalid_request_error"}}"#
            ),
            Error::InvalidRequest { .. }
        ));
        assert!(matches!(
            err(502, "<html>bad gateway</html>"),
            Error::Server { .. }
        ));
        let e = err(404, r#"{"error":"model 'x' not found"}"#);
        assert!(matches!(e, Error::ModelNotFound { .. }));
        assert!(e.to_string().contains("model 'x' not found"));
    }

    #[test]
    fn request_shape_per_provider() {
        let mut req = ChatRequest::new("m", vec![wombat_core::ChatMessage::user("hi")]);
        req.system = Some("be brief".into());
        req.max_tokens = Some(10);
        let openai = serde_json::to_value(WireRequest::new(Provider::OpenAi, &req, true))
            .expect("serialises");
        assert_eq!(openai["max_completion_tokens"], 10);
        assert!(openai.get("max_tokens").is_none());
        assert_eq!(openai["stream_options"]["include_usage"], true);
        assert_eq!(openai["messages"][0]["role"], "system");
        let mistral = serde_json::to_value(WireRequest::new(Provider::Mistral, &req, true))
            .expect("serialises");
        assert_eq!(mistral["max_tokens"], 10);
        assert!(mistral.get("stream_options").is_none());
        let plain = serde_json::to_value(WireRequest::new(Provider::Groq, &req, false))
            .expect("serialises");
        assert!(plain.get("stream").is_none() && plain.get("stream_options").is_none());
    }
}
