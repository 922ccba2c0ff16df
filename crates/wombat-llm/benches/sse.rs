//! Throughput of the SSE decoder on a realistic OpenAI stream, fed whole and
//! in small TCP-sized pieces; a full streamed completion through the router
//! against a keep-alive fake on loopback (per-request overhead and MB/s);
//! and the cost of one pricing-table lookup.
//!
//! Run with `cargo bench -p wombat-llm --bench sse`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wombat_core::{PricingTable, Usage};
use wombat_llm::sse::{SseDecoder, SseEvent};

/// About 500 chunks of a streamed reply, with the usage tail and `[DONE]`.
fn openai_stream() -> Vec<u8> {
    let mut body = String::new();
    for i in 0..500 {
        body.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i} 世界\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    body.push_str("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":500,\"total_tokens\":512}}\n\ndata: [DONE]\n\n");
    body.into_bytes()
}

fn decode(bytes: &[u8], piece: usize) -> usize {
    let mut decoder = SseDecoder::new();
    let mut out: Vec<SseEvent> = Vec::with_capacity(16);
    let mut events = 0;
    for chunk in bytes.chunks(piece) {
        decoder
            .feed(chunk, &mut out)
            .expect("benchmark events are far below the limit");
        events += out.len();
        out.clear();
    }
    decoder.finish(&mut out);
    events + out.len()
}

fn sse(c: &mut Criterion) {
    let bytes = openai_stream();
    let mut group = c.benchmark_group("sse_decode");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    for piece in [16 * 1024, 1460, 7] {
        group.bench_function(format!("piece_{piece}"), |b| {
            b.iter(|| decode(black_box(&bytes), piece));
        });
    }
    group.finish();
}

fn cost(c: &mut Criterion) {
    let table = PricingTable::builtin();
    let usage = Usage::new(1250, 150);
    c.bench_function("cost/exact_name", |b| {
        b.iter(|| table.cost(black_box("gpt-4o-mini"), black_box(&usage)));
    });
    c.bench_function("cost/dated_snapshot", |b| {
        b.iter(|| table.cost(black_box("claude-3-5-sonnet-20241022"), black_box(&usage)));
    });
    c.bench_function("cost/unknown_model", |b| {
        b.iter(|| table.cost(black_box("my-local-model"), black_box(&usage)));
    });
}

/// A keep-alive HTTP/1.1 fake that answers every request with `body` as an
/// SSE response. Returns its base URL.
async fn fake_provider(body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(8192);
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let header_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < header_end + len {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..header_end + len);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if socket.write_all(head.as_bytes()).await.is_err()
                        || socket.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn small_stream() -> Vec<u8> {
    let mut body = String::new();
    for word in ["Hello", " there", ", how", " can", " I", " help", "?"] {
        body.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    body.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19}}\n\ndata: [DONE]\n\n");
    body.into_bytes()
}

fn streamed_completion(c: &mut Criterion) {
    use futures::StreamExt;
    use wombat_core::{ChatMessage, Provider};
    use wombat_llm::{ApiKey, RouteRequest, Router, RouterConfig, Tier};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("stream_local_fake");
    for (name, body) in [
        ("7_chunks", small_stream()),
        ("502_chunks", openai_stream()),
    ] {
        let base = rt.block_on(fake_provider(body.clone()));
        let mut config = RouterConfig::default();
        config.base_urls.insert(Provider::OpenAi, base);
        config
            .api_keys
            .insert(Provider::OpenAi, ApiKey::new("sk-bench"));
        let router = Router::new(config).expect("router");
        let request = RouteRequest::new(Tier::Default, vec![ChatMessage::user("Hi")]);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut stream = router.stream(request.clone()).await.expect("stream opens");
                    let mut events = 0;
                    while let Some(ev) = stream.next().await {
                        ev.expect("event");
                        events += 1;
                    }
                    events
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, sse, streamed_completion, cost);
criterion_main!(benches);
