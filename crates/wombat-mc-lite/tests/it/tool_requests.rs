//! Tool requests in the reference backend, through the client and raw
//! HTTP: create (idempotent), get, list (filters, pagination), resolve
//! (only from pending), the notification a resolution queues, consume
//! (exactly once), tenant isolation and bounded fields.

use std::sync::Arc;

use serde_json::{Value, json};
use wombat_controlplane::{AgentClient, Error, ToolRequestQuery};
use wombat_core::controlplane::{
    NewTask, NewToolRequest, ToolRequest, ToolRequestDecision, ToolRequestStatus,
};
use wombat_mc_lite::RunningMcLite;

use crate::support::*;

async fn task(agent: &AgentClient<'_>, title: &str) -> String {
    agent
        .create_task(NewTask {
            title: title.into(),
            description: None,
            status: None,
            metadata: None,
            idempotency_key: None,
        })
        .await
        .unwrap()
        .id
}

fn new_request(task_id: &str, call_id: &str, key: Option<&str>) -> NewToolRequest {
    NewToolRequest {
        task_id: task_id.into(),
        tool: "files__delete".into(),
        arguments: json!({"path": "/tmp/x"}),
        call_id: call_id.into(),
        agent_role: None,
        idempotency_key: key.map(str::to_owned),
        context: Some(json!({"user_message": "clean up"})),
    }
}

fn decide(status: ToolRequestStatus, reason: Option<&str>) -> ToolRequestDecision {
    ToolRequestDecision {
        status,
        reason: reason.map(str::to_owned),
    }
}

async fn create(agent: &AgentClient<'_>, task_id: &str, call_id: &str) -> ToolRequest {
    agent
        .create_tool_request(new_request(task_id, call_id, None))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_resource_works_end_to_end_through_the_client() {
    let server = start_memory().await;
    let cp = client(&server.url());
    let alice = cp.agent("alice", "agent");
    let caps = alice.capabilities().await.unwrap();
    assert!(caps.features.tool_requests && caps.features.tool_requests_consume);
    let t1 = task(&alice, "One").await;

    let first = alice
        .create_tool_request(new_request(&t1, "call-1", Some("k1")))
        .await
        .unwrap();
    assert_eq!(first.status, ToolRequestStatus::Pending);
    assert_eq!(
        (
            first.task_id.as_str(),
            first.tool.as_str(),
            first.call_id.as_str()
        ),
        (t1.as_str(), "files__delete", "call-1")
    );
    assert_eq!(first.arguments, json!({"path": "/tmp/x"}));
    // The role defaults to the token's: the session the daemon used.
    assert_eq!(first.agent_role.as_deref(), Some("agent"));
    assert_eq!(first.context, Some(json!({"user_message": "clean up"})));
    assert!(first.resolved_at.is_none() && first.consumed_at.is_none());
    assert!(!first.created_at.is_empty());

    // Same key and payload: the same record; another payload: 409.
    let again = alice
        .create_tool_request(new_request(&t1, "call-1", Some("k1")))
        .await
        .unwrap();
    assert_eq!(again.id, first.id);
    match alice
        .create_tool_request(new_request(&t1, "call-2", Some("k1")))
        .await
    {
        Err(Error::Status {
            status: 409, code, ..
        }) => assert_eq!(code.as_deref(), Some("idempotency_conflict")),
        other => panic!("expected 409, got {other:?}"),
    }

    assert_eq!(alice.get_tool_request(&first.id).await.unwrap(), first);

    // Consuming a pending request is refused; nothing changes.
    assert!(matches!(
        alice.consume_tool_request(&first.id).await,
        Err(Error::ToolRequestPending { id }) if id == first.id
    ));

    let approved = alice
        .resolve_tool_request(&first.id, &decide(ToolRequestStatus::Approved, Some("ok")))
        .await
        .unwrap();
    assert_eq!(approved.status, ToolRequestStatus::Approved);
    assert_eq!(approved.reason.as_deref(), Some("ok"));
    assert!(approved.resolved_at.is_some() && approved.consumed_at.is_none());
    // Only from pending: a second decision (either way) is a 409.
    for status in [ToolRequestStatus::Approved, ToolRequestStatus::Rejected] {
        assert!(matches!(
            alice
                .resolve_tool_request(&first.id, &decide(status, None))
                .await,
            Err(Error::ToolRequestResolved { .. })
        ));
    }

    let consumed = alice.consume_tool_request(&first.id).await.unwrap();
    assert_eq!(consumed.status, ToolRequestStatus::Approved);
    assert!(consumed.consumed_at.is_some());
    assert!(matches!(
        alice.consume_tool_request(&first.id).await,
        Err(Error::ToolRequestConsumed { .. })
    ));
    assert_eq!(
        alice.get_tool_request(&first.id).await.unwrap().consumed_at,
        consumed.consumed_at
    );

    // A rejection can be consumed too (the run tells the model).
    let second = create(&alice, &t1, "call-2").await;
    alice
        .resolve_tool_request(&second.id, &decide(ToolRequestStatus::Rejected, None))
        .await
        .unwrap();
    let consumed = alice.consume_tool_request(&second.id).await.unwrap();
    assert_eq!(consumed.status, ToolRequestStatus::Rejected);

    // Unknown ids are 404 everywhere.
    assert!(matches!(
        alice.get_tool_request("tr_nope").await,
        Err(Error::ToolRequestNotFound { .. })
    ));
    assert!(matches!(
        alice.consume_tool_request("tr_nope").await,
        Err(Error::ToolRequestNotFound { .. })
    ));
    // An id that would change the path is refused before any I/O.
    assert!(matches!(
        alice.get_tool_request("..").await,
        Err(Error::InvalidToolRequestId { .. })
    ));
}

#[tokio::test]
async fn another_tenant_sees_and_touches_nothing() {
    let server = start_memory().await;
    let cp = client(&server.url());
    let (alice, mallory) = (cp.agent("alice", "agent"), cp.agent("mallory", "agent"));
    let t1 = task(&alice, "One").await;
    let req = create(&alice, &t1, "c1").await;

    assert!(matches!(
        mallory.get_tool_request(&req.id).await,
        Err(Error::ToolRequestNotFound { .. })
    ));
    assert!(matches!(
        mallory
            .resolve_tool_request(&req.id, &decide(ToolRequestStatus::Approved, None))
            .await,
        Err(Error::ToolRequestNotFound { .. })
    ));
    assert!(
        mallory
            .list_tool_requests(&ToolRequestQuery::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Nor can a request be created on another tenant's task.
    match mallory
        .create_tool_request(new_request(&t1, "c1", None))
        .await
    {
        Err(Error::Status { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    // Alice's request is untouched; after her approval mallory still
    // cannot consume it.
    alice
        .resolve_tool_request(&req.id, &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    assert!(matches!(
        mallory.consume_tool_request(&req.id).await,
        Err(Error::ToolRequestNotFound { .. })
    ));
    assert!(alice.consume_tool_request(&req.id).await.is_ok());

    // The same idempotency key in two tenants makes two records.
    let t2 = task(&mallory, "Two").await;
    let a = alice
        .create_tool_request(new_request(&t1, "k", Some("shared")))
        .await
        .unwrap();
    let m = mallory
        .create_tool_request(new_request(&t2, "k", Some("shared")))
        .await
        .unwrap();
    assert_ne!(a.id, m.id);
}

#[tokio::test]
async fn lists_filter_by_status_and_task_and_paginate() {
    let server = start_memory().await;
    let cp = client(&server.url());
    let alice = cp.agent("alice", "agent");
    let (t1, t2) = (task(&alice, "One").await, task(&alice, "Two").await);
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = if i % 2 == 0 { &t1 } else { &t2 };
        ids.push(create(&alice, t, &format!("c{i}")).await.id);
    }
    alice
        .resolve_tool_request(&ids[0], &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    alice
        .resolve_tool_request(&ids[1], &decide(ToolRequestStatus::Rejected, None))
        .await
        .unwrap();

    // Every request once, oldest first, over pages of two.
    let mut seen = Vec::new();
    let mut query = ToolRequestQuery {
        limit: Some(2),
        ..ToolRequestQuery::default()
    };
    let mut pages = 0;
    loop {
        let page = alice.list_tool_requests(&query).await.unwrap();
        assert!(page.items.len() <= 2);
        pages += 1;
        seen.extend(page.items.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!((seen, pages), (ids.clone(), 3));

    let only = |status, task_id: Option<&str>| ToolRequestQuery {
        status,
        task_id: task_id.map(str::to_owned),
        ..ToolRequestQuery::default()
    };
    let listed = |page: wombat_core::controlplane::ToolRequestPage| -> Vec<String> {
        page.items.into_iter().map(|r| r.id).collect()
    };
    let pending = alice
        .list_tool_requests(&only(Some(ToolRequestStatus::Pending), None))
        .await
        .unwrap();
    assert_eq!(listed(pending), ids[2..].to_vec());
    let on_t1 = alice
        .list_tool_requests(&only(None, Some(&t1)))
        .await
        .unwrap();
    assert_eq!(
        listed(on_t1),
        vec![ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );
    let rejected_on_t2 = alice
        .list_tool_requests(&only(Some(ToolRequestStatus::Rejected), Some(&t2)))
        .await
        .unwrap();
    assert_eq!(listed(rejected_on_t2), vec![ids[1].clone()]);

    let (status, body) = as_user(&server, "alice", "GET", "tool-requests?status=done", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("status"), "{body}");
}

/// Pending deliveries of `user` on the server.
async fn deliveries_of(server: &RunningMcLite, user: &str) -> Vec<Value> {
    let (status, body) = call(
        "GET",
        &format!("{}/api/mission-control/dispatch/undelivered", server.url()),
        &[("x-internal-token", INTERNAL)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["user_id"] == user)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_resolution_queues_a_notification_for_the_runs_session() {
    let server = start_memory().await;
    let cp = client(&server.url());
    let alice = cp.agent("alice", "agent");
    let t1 = task(&alice, "One").await;
    let approved = create(&alice, &t1, "c1").await;
    let mut planner = new_request(&t1, "c2", None);
    planner.agent_role = Some("planner".into());
    let rejected = alice.create_tool_request(planner).await.unwrap();
    assert!(
        deliveries_of(&server, "alice").await.is_empty(),
        "nothing before a decision"
    );

    alice
        .resolve_tool_request(&approved.id, &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    alice
        .resolve_tool_request(
            &rejected.id,
            &decide(ToolRequestStatus::Rejected, Some("not on Fridays")),
        )
        .await
        .unwrap();
    let deliveries = deliveries_of(&server, "alice").await;
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    let (a, r) = (&deliveries[0], &deliveries[1]);
    assert_eq!(a["session_key"], "user:alice:agent");
    assert_eq!(a["task_id"], t1.as_str());
    assert_eq!(a["metadata"], json!({"tool_request_id": approved.id}));
    let text = a["content"].as_str().unwrap();
    assert!(
        text.contains("files__delete") && text.contains("approved"),
        "{text}"
    );
    assert_eq!(r["session_key"], "user:alice:planner");
    assert_eq!(r["metadata"], json!({"tool_request_id": rejected.id}));
    let text = r["content"].as_str().unwrap();
    assert!(
        text.contains("rejected") && text.contains("not on Fridays"),
        "{text}"
    );

    // A refused second decision queues nothing more.
    let _ = alice
        .resolve_tool_request(&approved.id, &decide(ToolRequestStatus::Rejected, None))
        .await;
    assert_eq!(deliveries_of(&server, "alice").await.len(), 2);
}

#[tokio::test]
async fn without_dispatch_a_resolution_queues_nothing() {
    let mut cfg = config(wombat_mc_lite::DbLocation::Memory);
    cfg.internal_token = None;
    let server = start(cfg).await;
    let alice = client(&server.url()).agent("alice", "agent");
    let t1 = task(&alice, "One").await;
    let req = create(&alice, &t1, "c1").await;
    alice
        .resolve_tool_request(&req.id, &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    // Checked in the heartbeat's own count (dispatch is off).
    let (status, body) = as_user(
        &server,
        "alice",
        "POST",
        "heartbeat",
        Some(json!({"user_id": "alice"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["notifications"]["pending"], 0);
}

#[tokio::test]
async fn bad_payloads_are_400_naming_the_field() {
    let server = start_memory().await;
    let alice = client(&server.url()).agent("alice", "agent");
    let t1 = task(&alice, "One").await;
    let valid = json!({
        "task_id": t1, "tool": "t", "arguments": {}, "call_id": "c",
    });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let big = "x".repeat(257);
    let cases = [
        ("tool", without("tool")),
        ("call_id", without("call_id")),
        ("task_id", without("task_id")),
        ("arguments", without("arguments")),
        ("arguments", with("arguments", json!("{}"))),
        ("tool", with("tool", json!(big))),
        ("call_id", with("call_id", json!(big))),
        ("agent_role", with("agent_role", json!("../etc"))),
        (
            "context",
            with("context", json!({"x": "y".repeat(64 * 1024)})),
        ),
        ("context", with("context", json!([1]))),
    ];
    for (field, body) in cases {
        let (status, answer) = as_user(&server, "alice", "POST", "tool-requests", Some(body)).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{field}: {answer}"
        );
    }
    let (status, answer) = as_user(
        &server,
        "alice",
        "POST",
        "tool-requests",
        Some(with("task_id", json!("task_missing"))),
    )
    .await;
    assert_eq!(status, 404, "{answer}");

    let req = create(&alice, &t1, "c").await;
    let path = format!("tool-requests/{}", req.id);
    for (field, body) in [
        ("status", json!({})),
        ("status", json!({"status": "pending"})),
        ("status", json!({"status": "maybe"})),
        (
            "reason",
            json!({"status": "approved", "reason": "r".repeat(4097)}),
        ),
    ] {
        let (status, answer) = as_user(&server, "alice", "PATCH", &path, Some(body)).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(field),
            "{field}: {answer}"
        );
    }
    // None of that changed the request.
    assert_eq!(
        alice.get_tool_request(&req.id).await.unwrap().status,
        ToolRequestStatus::Pending
    );
}

#[tokio::test]
async fn consume_over_raw_http_is_exactly_once_and_keyed() {
    let server = start_memory().await;
    let alice = client(&server.url()).agent("alice", "agent");
    let t1 = task(&alice, "One").await;
    let req = create(&alice, &t1, "c").await;
    let path = format!("tool-requests/{}/consume", req.id);
    let consume = |body: Option<&'static str>| {
        let (url, t) = (
            format!("{}/api/mission-control/{path}", server.url()),
            token("alice"),
        );
        async move { call("POST", &url, &[("x-agent-token", &t)], body).await }
    };
    let (status, body) = consume(None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("tool_request_pending"))
    );
    alice
        .resolve_tool_request(&req.id, &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    // No body at all is fine; a key makes a retry answer the record again.
    let (status, first) = consume(Some(r#"{"idempotency_key":"k1"}"#)).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["consumed_at"].is_string());
    let (status, retry) = consume(Some(r#"{"idempotency_key":"k1"}"#)).await;
    assert_eq!((status, &retry), (200, &first));
    for other in [None, Some(r#"{"idempotency_key":"k2"}"#), Some("{}")] {
        let (status, body) = consume(other).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("tool_request_consumed")),
            "{other:?}"
        );
    }
    let (status, body) = consume(Some("[1]")).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn concurrent_consumers_get_one_success() {
    let server = start_memory().await;
    let cp = client(&server.url());
    let alice = cp.agent("alice", "agent");
    let t1 = task(&alice, "One").await;
    let req = create(&alice, &t1, "c").await;
    alice
        .resolve_tool_request(&req.id, &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    let id = Arc::new(req.id.clone());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (agent, id) = (cp.agent("alice", "agent"), Arc::clone(&id));
            tokio::spawn(async move { agent.consume_tool_request(&id).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(30), t)
            .await
            .expect("consume must not hang")
            .unwrap()
        {
            Ok(_) => ok += 1,
            Err(Error::ToolRequestConsumed { .. }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test]
async fn a_consume_whose_answer_is_lost_is_retried_to_success() {
    let server = start_memory().await;
    let (addr, proxy_state) = proxy(server.url()).await;
    let via_proxy = client(&format!("http://{addr}")).agent("alice", "agent");
    let alice = client(&server.url()).agent("alice", "agent");
    let t1 = task(&alice, "One").await;
    let req = create(&alice, &t1, "c").await;
    alice
        .resolve_tool_request(&req.id, &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    let path = format!("/api/mission-control/tool-requests/{}/consume", req.id);
    // The backend consumes, the answer is lost (503); the client's retry
    // carries the same key and gets the record, not "consumed".
    proxy_state.inject(&path, Fault::Forward503);
    let consumed = via_proxy.consume_tool_request(&req.id).await.unwrap();
    assert!(consumed.consumed_at.is_some());
    let seen = proxy_state.seen(&path);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, seen[1].body, "one key across the retries");
    // A new call is a new consumer.
    assert!(matches!(
        via_proxy.consume_tool_request(&req.id).await,
        Err(Error::ToolRequestConsumed { .. })
    ));
}

#[tokio::test]
async fn tool_requests_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = wombat_mc_lite::DbLocation::File(dir.path().join("mc.db"));
    let server = start(config(db.clone())).await;
    let alice = client(&server.url()).agent("alice", "agent");
    let t1 = task(&alice, "One").await;
    let req = create(&alice, &t1, "c").await;
    alice
        .resolve_tool_request(&req.id, &decide(ToolRequestStatus::Approved, None))
        .await
        .unwrap();
    server.shutdown().await;
    let server = start(config(db)).await;
    let alice = client(&server.url()).agent("alice", "agent");
    let after = alice.get_tool_request(&req.id).await.unwrap();
    assert_eq!(after.status, ToolRequestStatus::Approved);
    assert!(alice.consume_tool_request(&req.id).await.is_ok());
}
