//! The reference backend over raw HTTP: persistence across restarts,
//! tenant isolation, validation, auth and dispatch.

use serde_json::json;
use wombat_controlplane::jwt::{self, AgentClaims};
use wombat_mc_lite::DbLocation;

use crate::support::*;

#[tokio::test]
async fn restart_keeps_data_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let db = DbLocation::File(dir.path().join("nested").join("mc.db"));
    let server = start(config(db.clone())).await;
    let body = json!({"title": "Durable", "idempotency_key": "k-durable"});
    let (status, task) = as_user(&server, "u1", "POST", "tasks", Some(body.clone())).await;
    assert_eq!(status, 200);
    let id = task["id"].as_str().unwrap().to_owned();
    let msg = json!({"task_id": id, "content": "kept", "idempotency_key": "m-1"});
    let (_, first_msg) = as_user(&server, "u1", "POST", "messages", Some(msg.clone())).await;
    server.shutdown().await;

    let server = start(config(db)).await;
    let (status, again) = as_user(&server, "u1", "POST", "tasks", Some(body)).await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], id.as_str());
    let (_, again_msg) = as_user(&server, "u1", "POST", "messages", Some(msg)).await;
    assert_eq!(again_msg, first_msg);
    let (status, err) = as_user(
        &server,
        "u1",
        "POST",
        "tasks",
        Some(json!({"title": "Other", "idempotency_key": "k-durable"})),
    )
    .await;
    assert_eq!(status, 409);
    assert!(err["error"].is_string());
    let (_, list) = as_user(&server, "u1", "GET", "tasks", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, msgs) = as_user(&server, "u1", "GET", &format!("tasks/{id}/messages"), None).await;
    assert_eq!(msgs["items"].as_array().unwrap().len(), 1);
    assert_eq!(msgs["items"][0]["content"], "kept");
}

#[tokio::test]
async fn tenants_cannot_read_or_write_each_other() {
    let server = start_memory().await;
    let (_, task) = as_user(
        &server,
        "alice",
        "POST",
        "tasks",
        Some(json!({"title": "Secret plans", "idempotency_key": "same"})),
    )
    .await;
    let id = task["id"].as_str().unwrap();

    let (_, list) = as_user(&server, "mallory", "GET", "tasks", None).await;
    assert_eq!(list["items"], json!([]));
    for path in [
        format!("tasks/{id}/messages"),
        format!("tasks/{id}/documents"),
    ] {
        let (status, body) = as_user(&server, "mallory", "GET", &path, None).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "task not found");
    }
    let (status, _) = as_user(
        &server,
        "mallory",
        "POST",
        "messages",
        Some(json!({"task_id": id, "content": "x"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = as_user(
        &server,
        "mallory",
        "POST",
        "documents",
        Some(json!({"task_id": id, "title": "x", "content": "x"})),
    )
    .await;
    assert_eq!(status, 404);
    // The same key in another tenant is another task.
    let (_, theirs) = as_user(
        &server,
        "mallory",
        "POST",
        "tasks",
        Some(json!({"title": "Secret plans", "idempotency_key": "same"})),
    )
    .await;
    assert_ne!(theirs["id"], task["id"]);
    let (_, msgs) = as_user(
        &server,
        "alice",
        "GET",
        &format!("tasks/{id}/messages"),
        None,
    )
    .await;
    assert_eq!(msgs["items"], json!([]));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let mut cfg = config(DbLocation::Memory);
    cfg.max_body_bytes = 1024;
    let server = start(cfg).await;
    let t = token("u1");
    let url = |p: &str| format!("{}/api/mission-control/{p}", server.url());
    let auth = [("x-agent-token", t.as_str())];

    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "POST",
            url("tasks"),
            Some("{\"title\": ".into()),
            400,
            "invalid_json",
        ),
        (
            "POST",
            url("tasks"),
            Some("[1]".into()),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            url("tasks"),
            Some("{}".into()),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            url("tasks"),
            Some(r#"{"title": 5}"#.into()),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            url("tasks"),
            Some(r#"{"title": "t", "metadata": "x"}"#.into()),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            url("messages"),
            Some(r#"{"task_id": "t"}"#.into()),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            url("messages"),
            Some(r#"{"task_id": "t", "content": "c", "actor_type": "bot"}"#.into()),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            url("documents"),
            Some(r#"{"task_id": "t", "content": "c"}"#.into()),
            400,
            "invalid_payload",
        ),
        (
            "POST",
            url("tasks"),
            Some(format!("{{\"title\": \"{}\"}}", "x".repeat(2000))),
            413,
            "payload_too_large",
        ),
        (
            "GET",
            url("tasks?limit=500"),
            None,
            400,
            "invalid_parameter",
        ),
        (
            "GET",
            url("tasks?cursor=bogus"),
            None,
            400,
            "invalid_cursor",
        ),
        ("DELETE", url("tasks"), None, 405, "method_not_allowed"),
        ("GET", url("unknown"), None, 404, "not_found"),
        (
            "GET",
            format!("{}/nowhere", server.url()),
            None,
            404,
            "not_found",
        ),
    ];
    for (method, u, body, status, code) in cases {
        let (got, err) = call(method, &u, &auth, body.as_deref()).await;
        assert_eq!(
            (got, err["code"].as_str()),
            (status, Some(code)),
            "{method} {u}"
        );
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {u}"
        );
    }
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let server = start_memory().await;
    let url = format!("{}/api/mission-control/tasks", server.url());
    let cfg = jwt_config();
    let mut expired = AgentClaims::new("u1", "agent", None, now() - 10_000);
    expired.exp = now() - 1;
    let mut not_agent = AgentClaims::new("u1", "agent", None, now());
    not_agent.token_type = "user".into();
    let other =
        wombat_controlplane::JwtConfig::new("other", wombat_controlplane::JwtAlgorithm::HS256)
            .unwrap();
    let cases = [
        (None, "missing X-Agent-Token header"),
        (Some("garbage".to_owned()), "malformed agent token"),
        (
            Some(jwt::mint(&other, "u1", "agent", None, now()).unwrap()),
            "agent token signature is invalid",
        ),
        (
            Some(jwt::mint_claims(&cfg, &expired).unwrap()),
            "agent token has expired",
        ),
        (
            Some(jwt::mint_claims(&cfg, &not_agent).unwrap()),
            "token is not an agent token",
        ),
    ];
    for (token, message) in cases {
        let headers: Vec<(&str, &str)> = token
            .iter()
            .map(|t| ("x-agent-token", t.as_str()))
            .collect();
        let (status, body) = call("GET", &url, &headers, None).await;
        assert_eq!(status, 401, "{message}");
        assert_eq!(body["error"], message);
        assert_eq!(body["code"], "unauthorized");
    }
}

#[tokio::test]
async fn pagination_uses_opaque_cursors() {
    let server = start_memory().await;
    for i in 0..5 {
        as_user(
            &server,
            "p",
            "POST",
            "tasks",
            Some(json!({"title": format!("t{i}")})),
        )
        .await;
    }
    let mut titles = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("tasks?limit=2&cursor={c}"),
            None => "tasks?limit=2".into(),
        };
        let (status, page) = as_user(&server, "p", "GET", &path, None).await;
        assert_eq!(status, 200);
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            titles.push(item["title"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(titles, ["t0", "t1", "t2", "t3", "t4"]);
    let (_, default_page) = as_user(&server, "p", "GET", "tasks", None).await;
    assert_eq!(default_page["items"].as_array().unwrap().len(), 5);
    assert!(default_page["next_cursor"].is_null());
}

#[tokio::test]
async fn dispatch_queue_is_guarded_and_limited() {
    let server = start_memory().await;
    let base = server.url();
    let undelivered = |q: &str| format!("{base}/api/mission-control/dispatch/undelivered{q}");
    let internal = [("x-internal-token", INTERNAL)];

    let (status, _) = call("GET", &undelivered(""), &[], None).await;
    assert_eq!(status, 401);
    let (status, _) = call(
        "GET",
        &undelivered(""),
        &[("x-internal-token", "nope")],
        None,
    )
    .await;
    assert_eq!(status, 401);
    let t = token("u1");
    let (status, _) = call("GET", &undelivered(""), &[("x-agent-token", &t)], None).await;
    assert_eq!(status, 401, "an agent token is not an internal token");

    for (user, content) in [("u1", "a"), ("u1", "b"), ("u2", "c")] {
        wombat_mc_lite::enqueue_notification(
            &base,
            INTERNAL,
            user,
            &format!("user:{user}:agent"),
            content,
        )
        .await
        .unwrap();
    }
    let (_, all) = call("GET", &undelivered(""), &internal, None).await;
    assert_eq!(all["deliveries"].as_array().unwrap().len(), 3);
    let (_, one_user) = call("GET", &undelivered("?limit_users=1"), &internal, None).await;
    let contents: Vec<_> = one_user["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["content"].clone())
        .collect();
    assert_eq!(contents, [json!("a"), json!("b")]);
    let (_, one_each) = call(
        "GET",
        &undelivered("?limit_notifications=1"),
        &internal,
        None,
    )
    .await;
    let contents: Vec<_> = one_each["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["content"].clone())
        .collect();
    assert_eq!(contents, [json!("a"), json!("c")]);

    let id = all["deliveries"][0]["notification_id"].as_str().unwrap();
    let deliver = |u: &str| {
        format!("{base}/api/mission-control/dispatch/notifications/{id}/deliver?user_id={u}")
    };
    let (status, _) = call("POST", &deliver("u2"), &internal, None).await;
    assert_eq!(status, 404, "wrong user");
    let (status, body) = call("POST", &deliver("u1"), &internal, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("delivered")));
    let (status, _) = call("POST", &deliver("u1"), &internal, None).await;
    assert_eq!(status, 200, "acknowledging twice is harmless");
    let (_, rest) = call("GET", &undelivered(""), &internal, None).await;
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 2);

    // Without an internal token, dispatch is neither offered nor served.
    let closed = start(wombat_mc_lite::McLiteConfig::new(
        jwt_config(),
        DbLocation::Memory,
    ))
    .await;
    let (_, caps) = as_user(&closed, "u1", "GET", "capabilities", None).await;
    assert_eq!(caps["features"]["notifications_dispatch"], false);
    let (status, _) = call(
        "GET",
        &format!("{}/api/mission-control/dispatch/undelivered", closed.url()),
        &internal,
        None,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn heartbeat_and_standup_summarise_the_tenant() {
    let server = start_memory().await;
    let (_, task) = as_user(
        &server,
        "h",
        "POST",
        "tasks",
        Some(json!({"title": "Work", "status": "in_progress"})),
    )
    .await;
    as_user(
        &server,
        "h",
        "POST",
        "messages",
        Some(json!({"task_id": task["id"], "content": "hi"})),
    )
    .await;
    as_user(
        &server,
        "other",
        "POST",
        "tasks",
        Some(json!({"title": "Not mine"})),
    )
    .await;

    let (status, hb) = as_user(
        &server,
        "h",
        "POST",
        "heartbeat",
        Some(json!({"user_id": "h"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        hb["tasks"],
        json!({"total": 1, "by_status": {"in_progress": 1}})
    );
    assert_eq!(hb["messages"]["total"], 1);
    let (status, _) = as_user(
        &server,
        "h",
        "POST",
        "heartbeat",
        Some(json!({"user_id": "other"})),
    )
    .await;
    assert_eq!(status, 403);

    let (status, standup) = as_user(
        &server,
        "h",
        "POST",
        "standup",
        Some(json!({"user_id": "h", "timezone": "Asia/Tokyo"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(standup["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(standup["tasks"][0]["messages"], 1);
    assert_eq!(standup["totals"]["tasks_created"], 1);
    assert_eq!(standup["date"].as_str().unwrap().len(), 10);
    let (status, err) = as_user(
        &server,
        "h",
        "POST",
        "standup",
        Some(json!({"user_id": "h", "timezone": "Mars/Olympus"})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_timezone"))
    );
}
