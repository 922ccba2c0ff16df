//! The Google Gemini adapter (`{base}/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, key in `x-goog-api-key`).
//!
//! The system prompt goes to `systemInstruction`, roles are `user`/`model`,
//! options go to `generationConfig`, and JSON schemas are converted to the
//! `responseSchema` dialect. Streams have no end marker: one counts as
//! complete when a candidate carried a `finishReason` before the body ended.
//! Wire types are private here; no retries happen in this module.

use std::collections::VecDeque;

use reqwest::Client;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use wombat_core::{Provider, Role, Usage};

use crate::http::{self, CallCtx, ErrorResponse, SseParser, Step};
use crate::sse::SseEvent;
use crate::types::{
    ApiKey, ChatProvider, ChatRequest, Completion, EventStream, FinishReason, ResponseFormat,
    StreamEvent,
};
use crate::{Error, Result};

/// Longest `retryDelay` honoured, as for retry headers.
const MAX_HINT_SECS: f64 = 60.0;

/// Gemini at a base URL such as
/// `https://generativelanguage.googleapis.com/v1beta`.
#[derive(Debug, Clone)]
pub struct GeminiAdapter {
    client: Client,
    base_url: String,
    key: Option<ApiKey>,
}

impl GeminiAdapter {
    /// An adapter using the shared `client`. Without a key, calls fail with
    /// [`Error::MissingApiKey`] naming `GEMINI_API_KEY`.
    pub fn new(client: Client, base_url: impl Into<String>, key: Option<ApiKey>) -> Self {
        Self {
            client,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            key,
        }
    }

    fn prepare(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<(reqwest::RequestBuilder, CallCtx)> {
        let Some(key) = &self.key else {
            return Err(Error::MissingApiKey {
                provider: Provider::Google,
                env: "GEMINI_API_KEY",
            });
        };
        let ctx = CallCtx {
            provider: Provider::Google,
            model: req.model.clone(),
            key: Some(key.clone()),
        };
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
        let builder = self
            .client
            .post(url)
            .header("x-goog-api-key", key.expose())
            .json(&WireRequest::new(req));
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
        let finish = if let Some(candidate) = wire.candidates.into_iter().next() {
            candidate.append_text(&mut text);
            candidate.finish_reason.as_deref().map(finish_reason)
        } else if let Some(reason) = wire.prompt_feedback.and_then(|f| f.block_reason) {
            // A blocked prompt yields no candidates: an empty answer stopped
            // by the content filter.
            tracing::debug!(block_reason = %reason, "gemini blocked the prompt");
            Some(FinishReason::ContentFilter)
        } else {
            return Err(ctx.malformed("response has no candidates"));
        };
        Ok(Completion {
            tool_calls: Vec::new(),
            invalid_tool_calls: Vec::new(),
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
    system_instruction: Option<WireContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct WireContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Serialize, Deserialize)]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    /// Thought summaries of thinking models are not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
}

impl WireRequest {
    fn new(req: &ChatRequest) -> Self {
        let contents = http::merge_same_role(
            req.messages
                .iter()
                .filter(|m| m.role != Role::System)
                .map(|m| (m.role, m.text().into_owned())),
        )
        .into_iter()
        .map(|(role, text)| WireContent {
            role: Some(
                if role == Role::Assistant {
                    "model"
                } else {
                    "user"
                }
                .to_owned(),
            ),
            parts: vec![WirePart {
                text: Some(text),
                thought: None,
            }],
        })
        .collect();
        let system_instruction = http::collect_system(req).map(|text| WireContent {
            role: None,
            parts: vec![WirePart {
                text: Some(text),
                thought: None,
            }],
        });
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
        Self {
            contents,
            system_instruction,
            generation_config: (!config.is_empty()).then_some(Value::Object(config)),
        }
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

// ---- streaming ----

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
        if ev.data.trim().is_empty() {
            return Ok(Step::Continue);
        }
        let chunk: WireResponse = serde_json::from_str(&ev.data)
            .map_err(|e| ctx.malformed(format!("invalid stream chunk: {e}")))?;
        if let Some(err) = chunk.error.as_ref().filter(|e| e.is_object()) {
            return Err(classify_status_object(ctx, None, err, None));
        }
        if let Some(candidate) = chunk.candidates.first() {
            let mut text = String::new();
            candidate.append_text(&mut text);
            if !text.is_empty() {
                out.push_back(StreamEvent::Delta(text));
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
                finish_reason: Some(reason),
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
        Some("RESOURCE_EXHAUSTED") => Error::RateLimited {
            failure,
            retry_after,
        },
        Some("UNAUTHENTICATED") | Some("PERMISSION_DENIED") => Error::auth(failure),
        Some("NOT_FOUND") => Error::ModelNotFound { failure },
        // Gemini answers FAILED_PRECONDITION when the free tier is not
        // available to the account (billing, region): an account problem.
        Some("FAILED_PRECONDITION") => Error::QuotaExceeded { failure },
        Some("INVALID_ARGUMENT") | Some("OUT_OF_RANGE") => Error::InvalidRequest { failure },
        Some("UNAVAILABLE") => Error::Overloaded {
            failure,
            retry_after,
        },
        Some("DEADLINE_EXCEEDED") => Error::Timeout { failure },
        Some("INTERNAL") | Some("UNKNOWN") => Error::Server {
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
        CallCtx {
            provider: Provider::Google,
            model: "gemini-2.0-flash".into(),
            key: None,
        }
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
        assert!(matches!(e, Error::RateLimited { .. }));
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
            classify_status_object(&ctx(), Some(400), &err, None),
            Error::Auth { .. }
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
        assert!(matches!(err, Error::Overloaded { .. }), "{err:?}");
        assert_eq!(err.failure().and_then(|f| f.status), Some(503));
        assert!(out.is_empty());
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
        let body = serde_json::to_value(WireRequest::new(&req)).expect("serialises");
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
