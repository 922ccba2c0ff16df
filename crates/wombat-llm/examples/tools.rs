//! A tool round trip: declare a tool, let the model call it, run it, send
//! the result back, print the answer.
//!
//! Against a local OpenAI-compatible server (vLLM, LM Studio, llama.cpp's
//! `llama-server`, Ollama), no key needed:
//!
//! ```text
//! OPENAI_BASE_URL=http://127.0.0.1:8080/v1 LLM_MODEL_DEFAULT=qwen2.5-7b-instruct \
//!     cargo run -p wombat-llm --example tools -- "What's the weather in Oslo?"
//! ```
//!
//! Offline, with the echo provider scripting the call (`/tool <name> <json>`):
//!
//! ```text
//! LLM_PROVIDER=echo cargo run -p wombat-llm --example tools -- '/tool get_weather {"city":"Oslo"}'
//! ```
//!
//! The configuration is read from the environment like the daemon's
//! (`LLM_PROVIDER`, `LLM_MODEL_DEFAULT`, `<PROVIDER>_BASE_URL`, keys).

use serde_json::{Value, json};
use wombat_llm::{
    ChatMessage, RouteRequest, Router, RouterConfig, Tier, ToolCall, ToolContent, ToolResult,
    ToolSpec,
};

/// Most model turns before giving up (each tool round trip is one).
const MAX_STEPS: usize = 4;

/// The tool's implementation: a canned forecast.
fn get_weather(call: &ToolCall) -> ToolResult {
    match call.arguments.get("city").and_then(Value::as_str) {
        Some(city) => ToolResult::new(
            call.id.clone(),
            ToolContent::Json(json!({"city": city, "sky": "light snow", "celsius": -3})),
        ),
        None => ToolResult::error(call.id.clone(), "missing string argument `city`"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prompt = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "What's the weather in Oslo?".to_owned());
    let config = RouterConfig::from_env_map(&|k: &str| std::env::var(k).ok())?;
    let router = Router::new(config)?;
    let tools = vec![
        ToolSpec::new(
            "get_weather",
            json!({
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"]
            }),
        )
        .with_description("The current weather in a city"),
    ];
    let mut messages = vec![ChatMessage::user(prompt)];
    for _ in 0..MAX_STEPS {
        let mut req = RouteRequest::new(Tier::Default, messages.clone());
        req.tools = tools.clone();
        let routed = router.complete(req).await?;
        let completion = routed.completion;
        if !completion.has_tool_calls() {
            println!("{}/{}: {}", routed.provider, routed.model, completion.text);
            return Ok(());
        }
        if !completion.text.is_empty() {
            println!("model: {}", completion.text);
        }
        // The assistant turn goes into the history first, then one result
        // per call, every call answered (invalid ones with an error).
        messages.push(completion.to_message());
        for call in &completion.tool_calls {
            println!(
                "call {} {}({})",
                call.id,
                call.name,
                Value::Object(call.arguments.clone())
            );
            let result = match call.name.as_str() {
                "get_weather" => get_weather(call),
                other => ToolResult::error(call.id.clone(), format!("unknown tool {other:?}")),
            };
            messages.push(ChatMessage::tool_result(result));
        }
        for bad in &completion.invalid_tool_calls {
            println!("invalid call {} {}: {}", bad.id, bad.name, bad.error);
            messages.push(ChatMessage::tool_result(ToolResult::error(
                bad.id.clone(),
                format!("invalid arguments: {}", bad.error),
            )));
        }
    }
    Err(format!("no answer after {MAX_STEPS} steps").into())
}
