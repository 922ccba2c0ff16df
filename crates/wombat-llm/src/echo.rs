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
//! **Scripted tool calls.** When the request declares tools, lines of the
//! last user message of the form
//!
//! ```text
//! /tool <name> <json-arguments>
//! ```
//!
//! (the arguments optional, `{}` when absent) make the echo call those tools
//! instead: one call per line, in order (several lines are parallel calls),
//! ids `call_<n>` numbered on from the calls already in the conversation,
//! finish reason `tool_calls`. The message's other non-blank lines, if any,
//! are echoed as the turn's text (`echo: …`), so a turn can mix text and
//! calls. A line naming a tool the request does not declare is plain text;
//! with `tool_choice: none`, or without tools, every line is. Arguments that
//! are not a JSON object give an invalid call ([`crate::InvalidToolCall`]),
//! to exercise that path. At most 64 calls are made; further lines are
//! ignored.
//!
//! When the conversation ends with tool results (the answer to those calls),
//! the echo answers in text quoting them, one line each:
//! `echo: tool results:` then `- <tool>: <content>` (`- <tool> failed:
//! <content>` for an error result). A stream yields the same in order: text
//! deltas, then per call a start, its arguments in fragments of at most 16
//! bytes, and the complete (or invalid) call, then done.
//!
//! The router selects it only when the configuration uses it:
//! `LLM_PROVIDER=echo`, or a tier or fallback model `echo/<anything>`. A
//! request may then also name `echo/<anything>`; otherwise a request naming
//! echo is refused ([`crate::ErrorKind::ModelNotAllowed`]). The schema sample is
//! bounded in depth and size whatever the schema (see `schema`).

use std::borrow::Cow;
use std::fmt::Write as _;

use futures::StreamExt;
use wombat_core::{ChatMessage, Part, Role, ToolCall, Usage};

use crate::Result;
use crate::types::{
    ChatProvider, ChatRequest, Completion, EventStream, FinishReason, InvalidToolCall,
    ResponseFormat, StreamEvent, ToolChoice,
};

/// The directive that scripts a tool call (see the module docs).
const TOOL_DIRECTIVE: &str = "/tool ";
/// Most calls one scripted turn makes.
const MAX_SCRIPTED_CALLS: usize = 64;
/// Largest argument fragment of a streamed scripted call.
const FRAGMENT_BYTES: usize = 16;

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
            .map_or(Cow::Borrowed(""), ChatMessage::text);
        if let Some(text) = quote_results(req) {
            return Self::finish(
                req,
                Completion::text(text, Usage::default(), Some(FinishReason::Stop)),
            );
        }
        if let Some(scripted) = script_calls(req, &last_user) {
            return Self::finish(req, scripted);
        }
        let text = match &req.response_format {
            None => format!("echo: {last_user}"),
            Some(ResponseFormat::Json) => serde_json::json!({ "echo": last_user }).to_string(),
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                crate::schema::sample_instance(schema, &last_user).to_string()
            }
        };
        Self::finish(
            req,
            Completion::text(text, Usage::default(), Some(FinishReason::Stop)),
        )
    }

    /// Sets the word-count usage: the prompt is the system prompt and every
    /// message's text and tool results; the completion is the reply's text
    /// and call arguments.
    fn finish(req: &ChatRequest, mut completion: Completion) -> Completion {
        let words = |s: &str| s.split_whitespace().count() as u64;
        let message_words = |m: &ChatMessage| {
            m.parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => words(&t.text),
                    Part::ToolResult(r) => words(&r.content.to_text()),
                    _ => 0,
                })
                .sum::<u64>()
        };
        let prompt = req.system.as_deref().map_or(0, words)
            + req.messages.iter().map(message_words).sum::<u64>();
        let completion_words = words(&completion.text)
            + completion
                .tool_calls
                .iter()
                .map(|c| words(&serde_json::Value::Object(c.arguments.clone()).to_string()))
                .sum::<u64>()
            + completion
                .invalid_tool_calls
                .iter()
                .map(|c| words(&c.raw_arguments))
                .sum::<u64>();
        completion.usage = Usage::new(prompt, completion_words);
        completion
    }
}

/// When the conversation ends with tool results: a text quoting each, named
/// after the call it answers.
fn quote_results(req: &ChatRequest) -> Option<String> {
    let trailing = req
        .messages
        .iter()
        .rev()
        .take_while(|m| m.tool_results().next().is_some())
        .count();
    if trailing == 0 {
        return None;
    }
    let start = req.messages.len() - trailing;
    let name_of = |call_id: &str| {
        req.messages[..start]
            .iter()
            .rev()
            .flat_map(ChatMessage::tool_calls)
            .find(|c| c.id == call_id)
            .map_or_else(|| call_id.to_owned(), |c| c.name.clone())
    };
    let mut text = String::from("echo: tool results:");
    for r in req.messages[start..]
        .iter()
        .flat_map(ChatMessage::tool_results)
    {
        let content = r.content.to_text();
        let failed = if r.is_error { " failed" } else { "" };
        let _ = write!(text, "\n- {}{failed}: {content}", name_of(&r.call_id));
    }
    Some(text)
}

/// The calls the last user message scripts, with its other lines as text;
/// `None` when it scripts none the request allows.
fn script_calls(req: &ChatRequest, last_user: &str) -> Option<Completion> {
    if req.tools.is_empty() || req.tool_choice == Some(ToolChoice::None) {
        return None;
    }
    let declared = |name: &str| req.tools.iter().any(|t| t.name == name);
    let mut text_lines = Vec::new();
    let mut scripted = Vec::new();
    for line in last_user.lines() {
        let directive = line
            .trim_start()
            .strip_prefix(TOOL_DIRECTIVE)
            .map(|rest| {
                let rest = rest.trim();
                rest.split_once(char::is_whitespace)
                    .map_or((rest, ""), |(name, args)| (name, args.trim()))
            })
            .filter(|(name, _)| declared(name));
        match directive {
            Some(call) if scripted.len() < MAX_SCRIPTED_CALLS => scripted.push(call),
            Some(_) => {}
            None if line.trim().is_empty() => {}
            None => text_lines.push(line),
        }
    }
    if scripted.is_empty() {
        return None;
    }
    // Ids continue the conversation's numbering so they never repeat in it.
    let earlier = req
        .messages
        .iter()
        .flat_map(ChatMessage::tool_calls)
        .count();
    let mut completion = Completion::default();
    if !text_lines.is_empty() {
        completion.text = format!("echo: {}", text_lines.join("\n"));
    }
    for (index, (name, raw)) in scripted.into_iter().enumerate() {
        let id = format!("call_{}", earlier + index + 1);
        match wombat_core::parse_tool_arguments(raw) {
            Ok(arguments) => completion
                .tool_calls
                .push(ToolCall::new(id, name, arguments)),
            Err(error) => completion.invalid_tool_calls.push(InvalidToolCall {
                index,
                id,
                name: name.to_owned(),
                raw_arguments: raw.to_owned(),
                error,
            }),
        }
    }
    completion.finish_reason = Some(FinishReason::ToolCalls);
    Some(completion)
}

/// The stream of a scripted turn after its text: each call as start,
/// argument fragments and its completion, in per-turn order (an invalid
/// call's `index` is its position; the valid ones fill the others in order).
fn call_events(completion: &Completion, out: &mut Vec<Result<StreamEvent>>) {
    let mut valid = completion.tool_calls.iter();
    let total = completion.tool_calls.len() + completion.invalid_tool_calls.len();
    for index in 0..total {
        let (id, name, raw, done) = match completion
            .invalid_tool_calls
            .iter()
            .find(|c| c.index == index)
        {
            Some(bad) => (
                &bad.id,
                &bad.name,
                bad.raw_arguments.clone(),
                StreamEvent::ToolCallInvalid(Box::new(bad.clone())),
            ),
            None => {
                let Some(call) = valid.next() else { break };
                (
                    &call.id,
                    &call.name,
                    serde_json::Value::Object(call.arguments.clone()).to_string(),
                    StreamEvent::ToolCall {
                        index,
                        call: Box::new(call.clone()),
                    },
                )
            }
        };
        out.push(Ok(StreamEvent::ToolCallStart {
            index,
            id: id.clone(),
            name: name.clone(),
        }));
        let mut rest = raw.as_str();
        while !rest.is_empty() {
            let mut cut = FRAGMENT_BYTES.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            let (fragment, tail) = rest.split_at(cut);
            out.push(Ok(StreamEvent::ToolCallDelta {
                index,
                fragment: fragment.to_owned(),
            }));
            rest = tail;
        }
        out.push(Ok(done));
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
        call_events(&completion, &mut deltas);
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

    fn tool_req(text: &str) -> ChatRequest {
        let mut r = ChatRequest::new("test", vec![ChatMessage::user(text)]);
        r.tools = vec![
            crate::ToolSpec::new("get_weather", serde_json::json!({"type": "object"})),
            crate::ToolSpec::new("now", serde_json::json!({"type": "object"})),
        ];
        r
    }

    #[tokio::test]
    async fn tool_directives_script_parallel_calls_with_text() {
        let r = tool_req(
            "Checking.\n/tool get_weather {\"city\": \"Oslo\"}\n/tool now\n/tool missing {}\n/tool get_weather {oops",
        );
        let c = EchoProvider.complete(&r).await.expect("echo works");
        assert_eq!(c.text, "echo: Checking.\n/tool missing {}");
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.tool_calls.len(), 2);
        assert_eq!(
            (c.tool_calls[0].id.as_str(), c.tool_calls[0].name.as_str()),
            ("call_1", "get_weather")
        );
        assert_eq!(c.tool_calls[0].arguments["city"], "Oslo");
        assert!(c.tool_calls[1].arguments.is_empty());
        assert_eq!(c.invalid_tool_calls.len(), 1);
        let bad = &c.invalid_tool_calls[0];
        assert_eq!((bad.index, bad.id.as_str()), (2, "call_3"));
        assert_eq!(bad.raw_arguments, "{oops");
        assert!(bad.error.contains("not valid JSON"), "{}", bad.error);

        // Without tools, or with tool_choice none, the directive is text.
        let mut plain = r.clone();
        plain.tool_choice = Some(ToolChoice::None);
        let c = EchoProvider.complete(&plain).await.expect("echo works");
        assert!(!c.has_tool_calls() && c.text.starts_with("echo: Checking.\n/tool get_weather"));
        let c = EchoProvider
            .complete(&req("/tool now"))
            .await
            .expect("echo works");
        assert_eq!(c.text, "echo: /tool now");
    }

    #[tokio::test]
    async fn streamed_calls_are_start_fragments_complete_in_order() {
        let r = tool_req("/tool get_weather {\"city\": \"Reykjavík, Iceland\"}\n/tool now [1]");
        let events: Vec<StreamEvent> = EchoProvider
            .stream(&r)
            .await
            .expect("stream starts")
            .try_collect()
            .await
            .expect("stream ends well");
        let mut args = String::new();
        let mut kinds = Vec::new();
        for e in &events {
            match e {
                StreamEvent::ToolCallStart { index, id, name } => {
                    kinds.push(format!("start {index} {id} {name}"));
                }
                StreamEvent::ToolCallDelta { index, fragment } => {
                    assert!(fragment.len() <= FRAGMENT_BYTES + 3);
                    if *index == 0 {
                        args.push_str(fragment);
                    }
                }
                StreamEvent::ToolCall { index, call } => {
                    kinds.push(format!("call {index} {}", call.name));
                }
                StreamEvent::ToolCallInvalid(bad) => {
                    kinds.push(format!("invalid {} {}", bad.index, bad.raw_arguments));
                }
                StreamEvent::Done { finish_reason, .. } => {
                    kinds.push(format!("done {finish_reason:?}"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            kinds,
            [
                "start 0 call_1 get_weather",
                "call 0 get_weather",
                "start 1 call_2 now",
                "invalid 1 [1]",
                "done Some(ToolCalls)",
            ]
        );
        assert_eq!(args, r#"{"city":"Reykjavík, Iceland"}"#);
    }

    #[tokio::test]
    async fn tool_results_are_quoted_and_ids_continue() {
        let first = EchoProvider
            .complete(&tool_req(
                "/tool get_weather {\"city\":\"Oslo\"}\n/tool now",
            ))
            .await
            .expect("echo works");
        let mut r = tool_req("/tool get_weather {\"city\":\"Oslo\"}\n/tool now");
        r.messages.push(first.to_message());
        r.messages
            .push(ChatMessage::tool_result(wombat_core::ToolResult::new(
                "call_1",
                wombat_core::ToolContent::Json(serde_json::json!({"sky": "rain"})),
            )));
        r.messages
            .push(ChatMessage::tool_result(wombat_core::ToolResult::error(
                "call_2",
                "clock broken",
            )));
        let c = EchoProvider.complete(&r).await.expect("echo works");
        assert_eq!(
            c.text,
            "echo: tool results:\n- get_weather: {\"sky\":\"rain\"}\n- now failed: clock broken"
        );
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        assert!(!c.has_tool_calls());
        // A new scripted turn numbers its calls after the earlier ones.
        r.messages.push(ChatMessage::user("/tool now"));
        let c = EchoProvider.complete(&r).await.expect("echo works");
        assert_eq!(c.tool_calls[0].id, "call_3");
    }
}
