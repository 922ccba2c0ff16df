//! The `echo` provider: an offline wiring check for demos and tests, never a
//! real model. It makes no network call.
//!
//! It answers `echo: <last user message>` (`echo: ` alone when there is no
//! user message). Usage counts whitespace-separated words: the prompt is the
//! system prompt plus every message, the completion is the reply. Streaming
//! yields the reply in word-sized deltas. With a response format it returns
//! JSON instead: `{"echo": "<last user message>"}` for plain JSON, and for a
//! schema the smallest instance of the schema's shape with every string set
//! to the last user message (see `schema::sample_instance`), so
//! schema-checking callers can be exercised offline.
//!
//! The router selects it only when the configuration uses it:
//! `LLM_PROVIDER=echo`, or a tier or fallback model `echo/<anything>`. A
//! request may then also name `echo/<anything>`; otherwise a request naming
//! echo is refused ([`crate::Error::ModelNotAllowed`]). The schema sample is
//! bounded in depth and size whatever the schema (see `schema`).

use futures::StreamExt;
use wombat_core::{Role, Usage};

use crate::Result;
use crate::types::{
    ChatProvider, ChatRequest, Completion, EventStream, FinishReason, ResponseFormat, StreamEvent,
};

/// The offline echo provider (see the module docs for exactly what it says).
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoProvider;

impl EchoProvider {
    fn answer(req: &ChatRequest) -> Completion {
        let last_user = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or(
                std::borrow::Cow::Borrowed(""),
                wombat_core::ChatMessage::text,
            );
        let text = match &req.response_format {
            None => format!("echo: {last_user}"),
            Some(ResponseFormat::Json) => serde_json::json!({ "echo": last_user }).to_string(),
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                crate::schema::sample_instance(schema, &last_user).to_string()
            }
        };
        let words = |s: &str| s.split_whitespace().count() as u64;
        let prompt = req.system.as_deref().map_or(0, words)
            + req.messages.iter().map(|m| words(&m.text())).sum::<u64>();
        let usage = Usage::new(prompt, words(&text));
        Completion::text(text, usage, Some(FinishReason::Stop))
    }
}

#[async_trait::async_trait]
impl ChatProvider for EchoProvider {
    async fn complete(&self, req: &ChatRequest) -> Result<Completion> {
        Ok(Self::answer(req))
    }

    async fn stream(&self, req: &ChatRequest) -> Result<EventStream> {
        let completion = Self::answer(req);
        // Each delta is a word with its following whitespace, so the deltas
        // concatenate back to the exact text.
        let mut deltas = Vec::new();
        let mut start = 0;
        let text = &completion.text;
        let mut in_space = false;
        for (i, c) in text.char_indices() {
            if c.is_whitespace() {
                in_space = true;
            } else if in_space {
                deltas.push(Ok(StreamEvent::Delta(text[start..i].to_owned())));
                start = i;
                in_space = false;
            }
        }
        if start < text.len() {
            deltas.push(Ok(StreamEvent::Delta(text[start..].to_owned())));
        }
        deltas.push(Ok(StreamEvent::Done {
            usage: completion.usage,
            finish_reason: completion.finish_reason,
        }));
        Ok(futures::stream::iter(deltas).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use wombat_core::ChatMessage;

    fn req(text: &str) -> ChatRequest {
        let mut r = ChatRequest::new(
            "test",
            vec![
                ChatMessage::user("first one"),
                ChatMessage::assistant("ok"),
                ChatMessage::user(text),
            ],
        );
        r.system = Some("be nice".into());
        r
    }

    #[tokio::test]
    async fn echoes_last_user_message_with_word_usage() {
        let c = EchoProvider
            .complete(&req("hello  wide world"))
            .await
            .expect("echo works");
        assert_eq!(c.text, "echo: hello  wide world");
        assert_eq!(c.usage, Usage::new(2 + 2 + 1 + 3, 4));
    }

    #[tokio::test]
    async fn streams_word_deltas_that_join_to_the_text() {
        let events: Vec<StreamEvent> = EchoProvider
            .stream(&req("a b  c"))
            .await
            .expect("stream starts")
            .try_collect()
            .await
            .expect("stream ends well");
        let deltas: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Delta(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, ["echo: ", "a ", "b  ", "c"]);
        assert!(matches!(events.last(), Some(StreamEvent::Done { .. })));
    }

    #[tokio::test]
    async fn structured_output_is_valid_json() {
        let mut r = req("hi there");
        r.response_format = Some(ResponseFormat::Json);
        let c = EchoProvider.complete(&r).await.expect("echo works");
        assert_eq!(c.text, r#"{"echo":"hi there"}"#);
        r.response_format = Some(ResponseFormat::JsonSchema {
            name: "s".into(),
            schema: serde_json::json!({"type":"object","properties":{"reply":{"type":"string"}},"required":["reply"]}),
        });
        let c = EchoProvider.complete(&r).await.expect("echo works");
        assert_eq!(c.text, r#"{"reply":"hi there"}"#);
    }
}
