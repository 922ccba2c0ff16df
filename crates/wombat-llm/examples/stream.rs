//! A streaming call: text printed as it arrives, then the usage and cost
//! from the final `Done` event.
//!
//! Against a local OpenAI-compatible server, no key needed:
//!
//! ```text
//! OPENAI_BASE_URL=http://127.0.0.1:8080/v1 LLM_MODEL_DEFAULT=qwen2.5-7b-instruct \
//!     cargo run -p wombat-llm --example stream -- "Tell me about wombats."
//! ```
//!
//! Offline: `LLM_PROVIDER=echo cargo run -p wombat-llm --example stream`.

use std::io::Write;

use futures::StreamExt;
use wombat_llm::{ChatMessage, RouteRequest, RoutedEvent, Router, RouterConfig, Tier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prompt = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Tell me about wombats.".to_owned());
    let config = RouterConfig::from_env_map(&|k: &str| std::env::var(k).ok())?;
    let router = Router::new(config)?;

    // Retries and failover happen until the first event; after that an
    // error ends the stream.
    let mut stream = router
        .stream(RouteRequest::new(
            Tier::Default,
            vec![ChatMessage::user(prompt)],
        ))
        .await?;
    let mut out = std::io::stdout();
    while let Some(event) = stream.next().await {
        match event? {
            RoutedEvent::Delta(text) => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            RoutedEvent::Done {
                usage,
                cost,
                provider,
                model,
                ..
            } => {
                println!();
                eprintln!(
                    "-- {provider}/{model}: {} tokens, ${:.6}",
                    usage.total_tokens, cost.total_cost
                );
            }
            // Tool-call events (no tools are declared here) and kinds added
            // later.
            _ => {}
        }
    }
    Ok(())
}
