//! Behaviour at scale and over time: concurrent readers and writers on the
//! pooled file database, idempotency records that expire, dispatch that is
//! fair across tenants, and the `title` filter of the task list.

use std::time::Duration;

use serde_json::{Value, json};
use wombat_mc_lite::DbLocation;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_and_writers_keep_data_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(config(DbLocation::File(dir.path().join("mc.db")))).await;
    let (_, task) = as_user(
        &server,
        "u1",
        "POST",
        "tasks",
        Some(json!({"title": "busy"})),
    )
    .await;
    let task_id = task["id"].as_str().unwrap().to_owned();
    let server = std::sync::Arc::new(server);
    // 8 writers post 25 messages each; every key is posted twice at once, so
    // the idempotency lookup-then-insert races with itself; 8 readers list
    // tasks and messages meanwhile.
    let mut jobs = Vec::new();
    for w in 0..8 {
        let (server, task_id) = (std::sync::Arc::clone(&server), task_id.clone());
        jobs.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let body = json!({"task_id": task_id, "content": format!("m{w}-{i}"), "idempotency_key": format!("k{w}-{i}")});
                let (a, b) = tokio::join!(
                    as_user(&server, "u1", "POST", "messages", Some(body.clone())),
                    as_user(&server, "u1", "POST", "messages", Some(body)),
                );
                assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
                assert_eq!(a.1["id"], b.1["id"], "one message per key");
                ids.push(a.1["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..8 {
        let (server, task_id) = (std::sync::Arc::clone(&server), task_id.clone());
        readers.push(tokio::spawn(async move {
            let mut last = 0;
            for _ in 0..25 {
                let (status, tasks) = as_user(&server, "u1", "GET", "tasks", None).await;
                assert_eq!(status, 200);
                assert_eq!(tasks["items"].as_array().unwrap().len(), 1);
                let (status, page) = as_user(
                    &server,
                    "u1",
                    "GET",
                    &format!("tasks/{task_id}/messages?limit=200"),
                    None,
                )
                .await;
                assert_eq!(status, 200);
                // Readers see committed rows only, and never fewer later.
                let n = page["items"].as_array().unwrap().len();
                assert!(n >= last, "{n} < {last}");
                last = n;
            }
        }));
    }
    let mut all_ids = std::collections::HashSet::new();
    for job in jobs {
        all_ids.extend(job.await.unwrap());
    }
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(all_ids.len(), 200);
    let mut stored = 0;
    let mut cursor = String::new();
    loop {
        let (_, page) = as_user(
            &server,
            "u1",
            "GET",
            &format!("tasks/{task_id}/messages?limit=200{cursor}"),
            None,
        )
        .await;
        stored += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(stored, 200, "exactly one message per idempotency key");
}

#[tokio::test]
async fn idempotency_records_expire_after_the_retention() {
    let mut cfg = config(DbLocation::Memory);
    cfg.idempotency_retention = Duration::from_millis(1);
    let short = start(cfg).await;
    let first = json!({"title": "A", "idempotency_key": "k"});
    let (_, a) = as_user(&short, "u1", "POST", "tasks", Some(first)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // After the retention the key is free again: no 409, a new task.
    let (status, b) = as_user(
        &short,
        "u1",
        "POST",
        "tasks",
        Some(json!({"title": "B", "idempotency_key": "k"})),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_ne!(a["id"], b["id"]);

    // With the default (24 h) the same sequence is a conflict.
    let default = start_memory().await;
    as_user(
        &default,
        "u1",
        "POST",
        "tasks",
        Some(json!({"title": "A", "idempotency_key": "k"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _) = as_user(
        &default,
        "u1",
        "POST",
        "tasks",
        Some(json!({"title": "B", "idempotency_key": "k"})),
    )
    .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn one_tenant_with_many_stuck_notifications_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mc.db");
    // Create the schema, then queue 10,001 notifications for one tenant
    // directly (fast) and one for another tenant after them.
    start(config(DbLocation::File(path.clone())))
        .await
        .shutdown()
        .await;
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..10_001 {
            tx.execute(
                "INSERT INTO notifications (id, user_id, session_key, content, created_at)
                 VALUES (?1, 'hog', 'user:hog:agent', 'stuck', ?2)",
                rusqlite::params![format!("ntf_hog_{i}"), i],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let server = start(config(DbLocation::File(path))).await;
    wombat_mc_lite::enqueue_notification(
        &server.url(),
        INTERNAL,
        "quiet",
        "user:quiet:agent",
        "hello",
    )
    .await
    .unwrap();
    let (status, list) = call(
        "GET",
        &format!(
            "{}/api/mission-control/dispatch/undelivered?limit_users=25&limit_notifications=3",
            server.url()
        ),
        &[("x-internal-token", INTERNAL)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let users: Vec<&str> = list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["user_id"].as_str().unwrap())
        .collect();
    // The oldest tenant first, at most 3 of its notifications, then the other.
    assert_eq!(users, ["hog", "hog", "hog", "quiet"]);
}

#[tokio::test]
async fn deliveries_carry_task_id_and_metadata_when_queued_with_them() {
    let server = start_memory().await;
    wombat_mc_lite::enqueue_notification_with(
        &server.url(),
        INTERNAL,
        "u1",
        "user:u1:agent",
        "with a task",
        Some("task_123"),
        Some(&json!({"source": "ci", "n": 1})),
    )
    .await
    .unwrap();
    wombat_mc_lite::enqueue_notification(&server.url(), INTERNAL, "u1", "user:u1:agent", "plain")
        .await
        .unwrap();
    let (_, list) = call(
        "GET",
        &format!("{}/api/mission-control/dispatch/undelivered", server.url()),
        &[("x-internal-token", INTERNAL)],
        None,
    )
    .await;
    let d = list["deliveries"].as_array().unwrap();
    assert_eq!(d[0]["task_id"], "task_123");
    assert_eq!(d[0]["metadata"], json!({"source": "ci", "n": 1}));
    assert!(d[1].get("task_id").is_none() && d[1].get("metadata").is_none());
    // A metadata that is not an object is refused.
    let (status, body) = call(
        "POST",
        &format!(
            "{}/api/mission-control/dispatch/notifications",
            server.url()
        ),
        &[("x-internal-token", INTERNAL)],
        Some(r#"{"user_id":"u1","session_key":"s","content":"c","metadata":"x"}"#),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("metadata"),
        "{body}"
    );
}

#[tokio::test]
async fn the_task_list_filters_by_exact_title_within_the_tenant() {
    let server = start_memory().await;
    for (user, title) in [
        ("u1", "Standup"),
        ("u1", "standup"),
        ("u1", "Standup notes"),
        ("u1", "Standup"),
        ("u2", "Standup"),
    ] {
        as_user(
            &server,
            user,
            "POST",
            "tasks",
            Some(json!({"title": title})),
        )
        .await;
    }
    let (_, caps) = as_user(&server, "u1", "GET", "capabilities", None).await;
    assert_eq!(caps["features"]["task_title_filter"], true);
    let titles = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, page) = as_user(&server, "u1", "GET", "tasks?title=Standup", None).await;
    assert_eq!(status, 200);
    assert_eq!(titles(&page), ["Standup", "Standup"]);
    // Paginated like the plain list.
    let (_, first) = as_user(&server, "u1", "GET", "tasks?title=Standup&limit=1", None).await;
    assert_eq!(titles(&first), ["Standup"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = as_user(
        &server,
        "u1",
        "GET",
        &format!("tasks?title=Standup&limit=1&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(titles(&second), ["Standup"]);
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    assert!(second["next_cursor"].is_null());
    // Percent-encoded titles, no match, and an empty filter (= no filter).
    let (_, notes) = as_user(&server, "u1", "GET", "tasks?title=Standup%20notes", None).await;
    assert_eq!(titles(&notes), ["Standup notes"]);
    let (_, none) = as_user(&server, "u1", "GET", "tasks?title=Nope", None).await;
    assert!(titles(&none).is_empty());
    let (_, all) = as_user(&server, "u1", "GET", "tasks?title=", None).await;
    assert_eq!(titles(&all).len(), 4);
    let (_, other) = as_user(&server, "u2", "GET", "tasks?title=Standup", None).await;
    assert_eq!(titles(&other), ["Standup"]);
}
