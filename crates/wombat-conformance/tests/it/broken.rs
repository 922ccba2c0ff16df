//! The runner against deliberately broken backends: the relevant checks must
//! fail with a clear message.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use wombat_conformance::Outcome;
use wombat_controlplane::jwt;

use crate::support::*;

/// A backend that stores tasks globally and accepts anything. With
/// `check_auth`, it verifies tokens but answers errors in plain text.
#[derive(Default)]
struct Lenient {
    check_auth: bool,
    /// Advertise `task_title_filter` (and still ignore `?title=`).
    title_filter: bool,
    /// Advertise `tool_requests` and `tool_requests_consume`, and serve them
    /// without tenancy, payload checks, pagination or state rules.
    tool_requests: bool,
    tasks: Mutex<Vec<(String, String, Option<String>)>>,
    /// `(key, record)` of every tool request.
    tool_requests_made: Mutex<Vec<(Option<String>, Value)>>,
}

async fn start_lenient(check_auth: bool) -> String {
    start_lenient_with(Lenient {
        check_auth,
        ..Lenient::default()
    })
    .await
}

async fn start_lenient_with(state: Lenient) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(state);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(lenient(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn lenient(state: &Lenient, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
    let token = req
        .headers()
        .get("x-agent-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if state.check_auth {
        let ok = token.is_some_and(|t| jwt::verify(&t, &jwt(), jwt_now()).is_ok());
        if !ok {
            return reply(401, "unauthorized".into());
        }
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let text = |v: &Value, k: &str| v[k].as_str().map(str::to_owned);
    match (method.as_str(), path.trim_start_matches("/api/mission-control/")) {
        ("GET", "capabilities") => reply(200, json!({"contract_version": "v1", "features": {"tasks": true, "messages": true, "documents": true, "task_title_filter": state.title_filter, "tool_requests": state.tool_requests, "tool_requests_consume": state.tool_requests}}).to_string()),
        (_, p) if state.tool_requests && p.starts_with("tool-requests") => lenient_tool_requests(state, &method, p, &body),
        ("GET", "tasks") => {
            let items: Vec<Value> = state.tasks.lock().unwrap().iter().map(|(id, title, _)| json!({"id": id, "title": title, "status": "open"})).collect();
            reply(200, json!({"items": items}).to_string())
        }
        ("POST", "tasks") => {
            let key = text(&body, "idempotency_key");
            let mut tasks = state.tasks.lock().unwrap();
            if let Some((id, title, _)) = tasks.iter().find(|(_, _, k)| key.is_some() && *k == key) {
                return reply(200, json!({"id": id, "title": title, "status": "open"}).to_string());
            }
            let id = format!("t{}", tasks.len() + 1);
            let title = text(&body, "title").unwrap_or_default();
            tasks.push((id.clone(), title.clone(), key));
            reply(200, json!({"id": id, "title": title, "status": "open"}).to_string())
        }
        ("POST", "messages") => reply(200, json!({"id": "m1", "task_id": body["task_id"], "content": body["content"]}).to_string()),
        ("POST", "documents") => reply(200, json!({"id": "d1", "task_id": body["task_id"], "title": body["title"]}).to_string()),
        _ => reply(404, "not found".into()),
    }
}

/// Tool requests as a careless backend might serve them: keys deduplicate
/// without comparing payloads, every tenant sees everything, lists ignore
/// `limit`, any PATCH and any consume succeeds.
fn lenient_tool_requests(
    state: &Lenient,
    method: &str,
    path: &str,
    body: &Value,
) -> Response<Full<Bytes>> {
    let mut made = state.tool_requests_made.lock().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    let find = |made: &mut Vec<(Option<String>, Value)>, id: &str| {
        made.iter().position(|(_, r)| r["id"] == id)
    };
    match (method, segments.as_slice()) {
        ("POST", ["tool-requests"]) => {
            let key = body["idempotency_key"].as_str().map(str::to_owned);
            if let Some((_, r)) = made.iter().find(|(k, _)| key.is_some() && *k == key) {
                return reply(200, r.to_string());
            }
            let record = json!({
                "id": format!("tr{}", made.len() + 1), "task_id": body["task_id"],
                "tool": body["tool"], "arguments": body["arguments"], "call_id": body["call_id"],
                "status": "pending", "created_at": "2026-01-01T00:00:00Z",
            });
            made.push((key, record.clone()));
            reply(200, record.to_string())
        }
        ("GET", ["tool-requests"]) => {
            let items: Vec<&Value> = made.iter().map(|(_, r)| r).collect();
            reply(200, json!({"items": items}).to_string())
        }
        ("GET", ["tool-requests", id]) => match find(&mut made, id) {
            Some(i) => reply(200, made[i].1.to_string()),
            None => reply(404, json!({"error": "nope"}).to_string()),
        },
        ("PATCH", ["tool-requests", id]) => match find(&mut made, id) {
            Some(i) => {
                made[i].1["status"] = body["status"].clone();
                reply(200, made[i].1.to_string())
            }
            None => reply(404, json!({"error": "nope"}).to_string()),
        },
        ("POST", ["tool-requests", id, "consume"]) => match find(&mut made, id) {
            Some(i) => {
                made[i].1["consumed_at"] = json!("2026-01-01T00:00:01Z");
                reply(200, made[i].1.to_string())
            }
            None => reply(404, json!({"error": "nope"}).to_string()),
        },
        _ => reply(404, json!({"error": "nope"}).to_string()),
    }
}

fn jwt_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn ignoring_auth_tenancy_and_validation_fails_those_checks() {
    let url = start_lenient(false).await;
    let report = wombat_conformance::run(&secret_config(&url)).await.unwrap();
    assert!(!report.is_success());
    for name in [
        "capabilities",
        "create_task",
        "create_task_idempotent",
        "list_contains_task",
        "post_message",
        "post_document",
    ] {
        assert_eq!(
            outcome(&report, name),
            Outcome::Pass,
            "{name}: {}",
            message(&report, name)
        );
    }
    let expected_failures = [
        ("auth_missing_token", "expected 401"),
        ("auth_malformed_token", "expected 401"),
        ("auth_wrong_signature", "expected 401"),
        ("auth_expired_token", "expected 401"),
        ("tenant_isolation_read", "tenant B sees tenant A's task"),
        (
            "tenant_isolation_write",
            "tenant B wrote to tenant A's task",
        ),
        ("idempotency_conflict", "expected 409"),
        ("missing_fields_400", "expected 400"),
        ("malformed_json_400", "expected 400"),
    ];
    for (name, text) in expected_failures {
        assert_eq!(outcome(&report, name), Outcome::Fail, "{name}");
        assert!(
            message(&report, name).contains(text),
            "{name}: {}",
            message(&report, name)
        );
    }
    assert_eq!(
        outcome(&report, "pagination"),
        Outcome::Skip,
        "{}",
        message(&report, "pagination")
    );
    for name in ["heartbeat", "standup", "notifications_dispatch"] {
        assert_eq!(outcome(&report, name), Outcome::Skip, "{name}");
    }
    let dir = tempfile::tempdir().unwrap();
    report.write(dir.path()).unwrap();
    let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(xml.matches("<failure ").count(), 9, "{xml}");
}

#[tokio::test]
async fn an_advertised_title_filter_that_filters_nothing_fails() {
    let url = start_lenient_with(Lenient {
        title_filter: true,
        ..Lenient::default()
    })
    .await;
    let report = wombat_conformance::run(&secret_config(&url)).await.unwrap();
    assert_eq!(outcome(&report, "task_title_filter"), Outcome::Fail);
    let text = message(&report, "task_title_filter");
    assert!(text.contains("GET tasks?title="), "{text}");
    // Not advertised (the other lenient backend): skipped, not failed.
    let plain = start_lenient(false).await;
    let report = wombat_conformance::run(&secret_config(&plain))
        .await
        .unwrap();
    assert_eq!(outcome(&report, "task_title_filter"), Outcome::Skip);
}

#[tokio::test]
async fn plain_text_errors_fail_the_error_body_check() {
    let url = start_lenient(true).await;
    let report = wombat_conformance::run(&secret_config(&url)).await.unwrap();
    assert_eq!(outcome(&report, "auth_missing_token"), Outcome::Pass);
    assert_eq!(outcome(&report, "error_bodies"), Outcome::Fail);
    assert!(
        message(&report, "error_bodies").contains("without a JSON `error` string"),
        "{}",
        message(&report, "error_bodies")
    );
}

#[tokio::test]
async fn careless_tool_requests_fail_the_right_checks() {
    let url = start_lenient_with(Lenient {
        tool_requests: true,
        ..Lenient::default()
    })
    .await;
    let report = wombat_conformance::run(&secret_config(&url)).await.unwrap();
    assert_eq!(
        outcome(&report, "tool_requests"),
        Outcome::Pass,
        "{}",
        message(&report, "tool_requests")
    );
    for (name, text) in [
        ("tool_requests_idempotent", "expected 409"),
        ("tool_requests_isolation", "expected 404"),
        ("tool_requests_list", "limit=2"),
        ("tool_requests_resolve", "second PATCH"),
        ("tool_requests_consume", "tool_request_pending"),
    ] {
        assert_eq!(outcome(&report, name), Outcome::Fail, "{name}");
        assert!(
            message(&report, name).contains(text),
            "{name}: {}",
            message(&report, name)
        );
    }
    // Not advertised (the plain lenient backend): skipped, not failed.
    let plain = start_lenient(false).await;
    let report = wombat_conformance::run(&secret_config(&plain))
        .await
        .unwrap();
    for name in [
        "tool_requests",
        "tool_requests_resolve",
        "tool_requests_consume",
    ] {
        assert_eq!(outcome(&report, name), Outcome::Skip, "{name}");
        assert_eq!(message(&report, name), "not advertised", "{name}");
    }
}
