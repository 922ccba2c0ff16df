//! One non-streaming call through the router: the answer, which model gave
//! it, the usage and the cost.
//!
//! Against a local OpenAI-compatible server (vLLM, LM Studio, llama.cpp's
//! `llama-server`, Ollama), no key needed:
//!
//! ```text
//! OPENAI_BASE_URL=http://127.0.0.1:8080/v1 LLM_MODEL_DEFAULT=qwen2.5-7b-instruct \
//!     cargo run -p wombat-llm --example complete -- "Name three marsupials."
//! ```
//!
//! Offline: `LLM_PROVIDER=echo cargo run -p wombat-llm --example complete`.
//! The configuration is read from the environment like the daemon's
//! (`LLM_PROVIDER`, `LLM_MODEL_DEFAULT`, `<PROVIDER>_BASE_URL`, keys).
//! `WOMBAT_EXAMPLE_USER` names the end user sent to the provider
//! (per-request options).

use wombat_llm::{ChatMessage, RequestOptions, RouteRequest, Router, RouterConfig, Tier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prompt = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Name three marsupials.".to_owned());
    let config = RouterConfig::from_env_map(&|k: &str| std::env::var(k).ok())?;
    let router = Router::new(config)?;

    let mut request = RouteRequest::new(Tier::Default, vec![ChatMessage::user(prompt)]);
    request.system = Some("You answer in one short paragraph.".to_owned());
    request.max_tokens = Some(300);
    if let Ok(user) = std::env::var("WOMBAT_EXAMPLE_USER") {
        request = request.with_options(RequestOptions::new().with_user(user));
    }

    match router.complete(request).await {
        Ok(routed) => {
            println!("{}", routed.completion.text);
            eprintln!(
                "-- {}/{}: {} prompt + {} completion tokens, ${:.6}, {} attempt(s)",
                routed.provider,
                routed.model,
                routed.completion.usage.prompt_tokens,
                routed.completion.usage.completion_tokens,
                routed.cost.total_cost,
                routed.attempts,
            );
            Ok(())
        }
        Err(e) => {
            // The kind tells what happened; the code is stable for machines.
            eprintln!("failed ({:?}, {}): {e}", e.kind(), e.code());
            std::process::exit(1);
        }
    }
}
