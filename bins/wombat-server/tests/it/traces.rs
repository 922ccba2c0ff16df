//! OpenTelemetry traces, end to end on the real binary: a loopback OTLP/HTTP
//! receiver decodes what `wombat-server` exports with the official protobuf
//! types (`opentelemetry-proto`), and a fake OpenAI-compatible provider
//! records the `traceparent` it was sent. Checks the span tree (server span
//! → prompt, task resolution, `chat`, backend writes), the GenAI attributes,
//! that the caller's `traceparent` names the exported trace and is forwarded
//! to the provider, and that prompt text is not recorded by default.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

pub(super) type Log = Arc<Mutex<Vec<(String, http::HeaderMap, Bytes)>>>;

/// A loopback HTTP/1 server answering every request with `answer(path)`
/// and logging path, headers and body.
pub(super) async fn serve(answer: fn(&str, &[u8]) -> (&'static str, Vec<u8>)) -> (SocketAddr, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let headers = req.headers().clone();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (content_type, out) = answer(&path, &body);
                        seen.lock().expect("log").push((path, headers, body));
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", content_type)
                                .body(Full::new(Bytes::from(out)))
                                .expect("response"),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, log)
}

fn otlp_answer(_: &str, _: &[u8]) -> (&'static str, Vec<u8>) {
    (
        "application/x-protobuf",
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// OpenAI Chat Completions: JSON, or SSE when the request asks to stream
/// (deltas, a finish chunk, the usage tail, `[DONE]`).
pub(super) fn openai_answer(_: &str, request: &[u8]) -> (&'static str, Vec<u8>) {
    let request: serde_json::Value = serde_json::from_slice(request).unwrap_or_default();
    if request["stream"] == true {
        let chunk = |v: serde_json::Value| format!("data: {v}\n\n");
        let body = [
            chunk(serde_json::json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi from "}}]})),
            chunk(serde_json::json!({"choices": [{"index": 0, "delta": {"content": "the fake."}}]})),
            chunk(serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})),
            chunk(serde_json::json!({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 5, "total_tokens": 45}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        return ("text/event-stream", body.into_bytes());
    }
    let body = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hi from the fake."},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}
    });
    ("application/json", body.to_string().into_bytes())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Starts the server in a temp dir with `vars`; returns it and its port.
pub(super) async fn start(dir: &Path, vars: &[(&str, String)]) -> (Child, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    copy_tree(&root.join("workspace-examples/default"), &dir.join("ws"));
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wombat-server"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .env("WOMBAT_PORT", port.to_string())
        .env("MC_LITE_PORT", free_port().to_string())
        .env("WOMBAT_DATA_DIR", dir.join("data"))
        .env("WOMBAT_WORKSPACE", dir.join("ws"))
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn wombat-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Wombat is listening on") {
                return;
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server never printed its banner");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

pub(super) async fn stop(mut child: Child) {
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("stops within a minute")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
}

pub(super) async fn send(port: u16, traceparent: &str) -> serde_json::Value {
    let text = post(port, "send", traceparent).await;
    serde_json::from_str(&text).expect("json")
}

async fn post(port: u16, route: &str, traceparent: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/agents/{route}"))
        .header("traceparent", traceparent)
        .json(&serde_json::json!({
            "user_id": "demo",
            "session_key": "user:demo:agent",
            "message": "A secret prompt about pelicans",
            "task_title": "Traces"
        }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.text().await.expect("body")
}

fn spans(log: &Log) -> Vec<Span> {
    let mut out = Vec::new();
    for (path, _, body) in log.lock().expect("log").iter() {
        assert_eq!(path, "/v1/traces");
        let req = ExportTraceServiceRequest::decode(body.clone()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let resource = rs.resource.expect("resource");
            let service = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.clone()?.value);
            assert_eq!(service, Some(AnyValue::StringValue("wombat".into())));
            for ss in rs.scope_spans {
                out.extend(ss.spans);
            }
        }
    }
    out
}

fn attrs(span: &Span) -> HashMap<String, AnyValue> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

fn text(v: Option<&AnyValue>) -> Option<&str> {
    match v {
        Some(AnyValue::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int(v: Option<&AnyValue>) -> Option<i64> {
    match v {
        Some(AnyValue::IntValue(i)) => Some(*i),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exports_a_span_tree_joined_to_the_callers_trace() {
    let (otlp, exported) = serve(otlp_answer).await;
    let (llm, llm_log) = serve(openai_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, port) = start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
            ("LLM_PROVIDER", "openai".into()),
            ("OPENAI_API_KEY", "sk-test-not-a-key".into()),
            ("OPENAI_BASE_URL", format!("http://{llm}/v1")),
        ],
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let answer = send(port, &format!("00-{trace_id}-{caller_span}-01")).await;
    assert_eq!(answer["status"], "ok", "{answer}");
    stop(child).await;

    // The provider was called within the caller's trace.
    let llm_calls = llm_log.lock().expect("log").clone();
    assert_eq!(llm_calls.len(), 1);
    let tp = llm_calls[0]
        .1
        .get("traceparent")
        .expect("traceparent to the provider");
    let tp = tp.to_str().expect("ascii");
    assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");

    let spans = spans(&exported);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for s in &spans {
        assert_eq!(
            hex(&s.trace_id),
            trace_id,
            "span {} is in another trace",
            s.name
        );
    }
    let by_name = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no {name} span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let server = by_name("POST /api/agents/send");
    assert_eq!(
        hex(&server.parent_span_id),
        caller_span,
        "the server span's parent is the caller's"
    );
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        int(attrs(server).get("http.response.status_code")),
        Some(200),
        "{:?}",
        attrs(server)
    );
    for child in ["build_prompt", "resolve_task", "chat gpt-4o-mini"] {
        assert_eq!(
            by_name(child).parent_span_id,
            server.span_id,
            "{child} is a child of the server span"
        );
    }
    // The provider saw the chat span as its parent.
    let chat = by_name("chat gpt-4o-mini");
    assert_eq!(tp, format!("00-{trace_id}-{}-01", hex(&chat.span_id)));
    assert_eq!(chat.kind, 3, "SPAN_KIND_CLIENT");
    let a = attrs(chat);
    assert_eq!(text(a.get("gen_ai.operation.name")), Some("chat"));
    assert_eq!(text(a.get("gen_ai.provider.name")), Some("openai"));
    assert_eq!(text(a.get("gen_ai.request.model")), Some("gpt-4o-mini"));
    assert_eq!(text(a.get("gen_ai.response.model")), Some("gpt-4o-mini"));
    assert_eq!(int(a.get("gen_ai.usage.input_tokens")), Some(42));
    assert_eq!(int(a.get("gen_ai.usage.output_tokens")), Some(7));
    match a.get("gen_ai.response.finish_reasons") {
        Some(AnyValue::ArrayValue(arr)) => {
            let v: Vec<_> = arr
                .values
                .iter()
                .filter_map(|v| text(v.value.as_ref()))
                .collect();
            assert_eq!(v, ["stop"]);
        }
        other => panic!("finish_reasons: {other:?}"),
    }
    // Backend writes: client spans under the server span (directly or via
    // task resolution), in the same trace.
    let ids: Vec<_> = [server, by_name("resolve_task")]
        .iter()
        .map(|s| s.span_id.clone())
        .collect();
    let writes: Vec<_> = spans
        .iter()
        .filter(|s| s.name.starts_with("backend "))
        .collect();
    assert!(writes.len() >= 2, "task resolution and the message write");
    for w in &writes {
        assert!(
            ids.contains(&w.parent_span_id),
            "{} hangs off the request",
            w.name
        );
        assert_eq!(w.kind, 3);
    }
    // Content is off by default: the prompt and reply are nowhere.
    let dump = format!("{spans:?}");
    assert!(
        !dump.contains("pelicans") && !dump.contains("Hi from the fake"),
        "content recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_recorded_only_when_enabled() {
    let (otlp, exported) = serve(otlp_answer).await;
    let (llm, _) = serve(openai_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, port) = start(
        dir.path(),
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("http://{otlp}/v1/traces"),
            ),
            ("WOMBAT_OTEL_CAPTURE_CONTENT", "true".into()),
            ("LLM_PROVIDER", "openai".into()),
            ("OPENAI_API_KEY", "sk-test-not-a-key".into()),
            ("OPENAI_BASE_URL", format!("http://{llm}/v1")),
        ],
    )
    .await;
    send(
        port,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .await;
    stop(child).await;
    let spans = spans(&exported);
    let chat = spans
        .iter()
        .find(|s| s.name.starts_with("chat "))
        .expect("chat span");
    let a = attrs(chat);
    assert!(text(a.get("gen_ai.input.messages")).is_some_and(|m| m.contains("pelicans")));
    assert_eq!(
        text(a.get("gen_ai.output.messages")),
        Some("Hi from the fake.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_or_propagated() {
    let (otlp, exported) = serve(otlp_answer).await;
    let (llm, llm_log) = serve(openai_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Everything else set, the endpoint not: traces stay off.
    let (child, port) = start(
        dir.path(),
        &[
            ("OTEL_SERVICE_NAME", format!("unused-{otlp}")),
            ("LLM_PROVIDER", "openai".into()),
            ("OPENAI_API_KEY", "sk-test-not-a-key".into()),
            ("OPENAI_BASE_URL", format!("http://{llm}/v1")),
        ],
    )
    .await;
    send(
        port,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .await;
    stop(child).await;
    let calls = llm_log.lock().expect("log").clone();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0].1.get("traceparent").is_none(),
        "no propagation when traces are off"
    );
    assert!(exported.lock().expect("log").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_has_its_chat_span_with_usage() {
    let (otlp, exported) = serve(otlp_answer).await;
    let (llm, llm_log) = serve(openai_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, port) = start(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
            ("LLM_PROVIDER", "openai".into()),
            ("OPENAI_API_KEY", "sk-test-not-a-key".into()),
            ("OPENAI_BASE_URL", format!("http://{llm}/v1")),
        ],
    )
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let body = post(
        port,
        "stream",
        &format!("00-{trace_id}-b7ad6b7169203331-01"),
    )
    .await;
    assert!(body.contains("event: done"), "{body}");
    stop(child).await;

    let calls = llm_log.lock().expect("log").clone();
    let tp = calls[0]
        .1
        .get("traceparent")
        .expect("traceparent")
        .to_str()
        .expect("ascii")
        .to_owned();
    let spans = spans(&exported);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server = spans
        .iter()
        .find(|s| s.name == "POST /api/agents/stream")
        .expect("server span");
    assert_eq!(hex(&server.trace_id), trace_id);
    let chat = spans
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini")
        .expect("chat span");
    assert_eq!(hex(&chat.trace_id), trace_id);
    assert_eq!(tp, format!("00-{trace_id}-{}-01", hex(&chat.span_id)));
    let a = attrs(chat);
    assert_eq!(int(a.get("gen_ai.usage.input_tokens")), Some(40));
    assert_eq!(int(a.get("gen_ai.usage.output_tokens")), Some(5));
    assert_eq!(text(a.get("gen_ai.response.model")), Some("gpt-4o-mini"));
    match a.get("gen_ai.response.finish_reasons") {
        Some(AnyValue::ArrayValue(arr)) => {
            let v: Vec<_> = arr
                .values
                .iter()
                .filter_map(|v| text(v.value.as_ref()))
                .collect();
            assert_eq!(v, ["length"]);
        }
        other => panic!("finish_reasons: {other:?}"),
    }
}
