//! Wire details against fake servers: the exact daemon request, what is and
//! is not acknowledged, malformed deliveries, per-user ordering, and the
//! clean stop after the delivery in flight.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{Fake, INTERNAL, dispatcher, fake_backend};

fn delivery(id: &str, user: &str, content: &str) -> Value {
    json!({
        "notification_id": id,
        "user_id": user,
        "session_key": format!("user:{user}:agent"),
        "content": content,
    })
}

async fn ok_daemon() -> Fake {
    Fake::start(|_| {
        (
            200,
            json!({"status": "ok", "task_id": "t1", "response": "fine"}),
        )
    })
    .await
}

fn acked(backend: &Fake) -> Vec<String> {
    backend
        .seen("/api/mission-control/dispatch/notifications/")
        .iter()
        .map(|s| {
            assert_eq!(s.method, "POST");
            assert_eq!(s.header("x-internal-token"), Some(INTERNAL));
            s.path_and_query.clone()
        })
        .collect()
}

#[tokio::test]
async fn sends_the_documented_request_and_acknowledges_after_acceptance() {
    let backend = fake_backend(vec![delivery("n 1", "u/1", "hello")]).await;
    let daemon = ok_daemon().await;
    let d = dispatcher(
        &backend.url,
        &daemon.url,
        &[
            ("AGENT_DAEMON_API_KEY", "daemon-key"),
            ("DISPATCH_LIMIT_USERS", "7"),
            ("DISPATCH_LIMIT_NOTIFICATIONS", "3"),
        ],
    );
    let report = d.tick().await.unwrap();
    assert_eq!(
        (report.deliveries, report.delivered, report.failed),
        (1, 1, 0)
    );

    let polls = backend.seen("/api/mission-control/dispatch/undelivered");
    assert_eq!(
        polls[0].path_and_query,
        "/api/mission-control/dispatch/undelivered?limit_users=7&limit_notifications=3"
    );
    assert_eq!(polls[0].method, "GET");
    let sends = daemon.seen("/api/agents/send");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].method, "POST");
    assert_eq!(sends[0].header("x-agent-daemon-key"), Some("daemon-key"));
    assert_eq!(
        sends[0].body,
        json!({
            "user_id": "u/1",
            "session_key": "user:u/1:agent",
            "message": "hello",
            "metadata": {"type": "mc.notification", "notification_id": "n 1"},
        })
    );
    assert_eq!(
        acked(&backend),
        ["/api/mission-control/dispatch/notifications/n%201/deliver?user_id=u%2F1"]
    );
}

#[tokio::test]
async fn no_daemon_key_header_without_a_key() {
    let backend = fake_backend(vec![delivery("n1", "u1", "hi")]).await;
    let daemon = ok_daemon().await;
    dispatcher(&backend.url, &daemon.url, &[])
        .tick()
        .await
        .unwrap();
    assert_eq!(
        daemon.seen("/api/agents/send")[0].header("x-agent-daemon-key"),
        None
    );
}

#[tokio::test]
async fn malformed_deliveries_count_as_failed_and_are_skipped() {
    let backend = fake_backend(vec![
        delivery("n1", "u1", "one"),
        json!({"notification_id": "bad-1", "user_id": "u1", "content": "no session"}),
        delivery("n2", "u1", "two"),
        json!({"notification_id": "bad-2", "session_key": "s", "content": "no user"}),
        json!({"user_id": "u2", "session_key": "s", "content": "no id"}),
        json!({"notification_id": "bad-3", "user_id": "u2", "session_key": "s", "content": ""}),
    ])
    .await;
    let daemon = ok_daemon().await;
    let d = dispatcher(&backend.url, &daemon.url, &[]);
    let report = d.tick().await.unwrap();
    assert_eq!(
        (report.deliveries, report.delivered, report.failed),
        (6, 2, 4)
    );
    let messages: Vec<Value> = daemon
        .seen("/api/agents/send")
        .iter()
        .map(|s| s.body["message"].clone())
        .collect();
    assert_eq!(messages, [json!("one"), json!("two")]);
    assert_eq!(
        acked(&backend),
        [
            "/api/mission-control/dispatch/notifications/n1/deliver?user_id=u1",
            "/api/mission-control/dispatch/notifications/n2/deliver?user_id=u1",
        ]
    );

    // The malformed ones stay queued and fail again, never sent or acked.
    let again = d.tick().await.unwrap();
    assert_eq!((again.deliveries, again.delivered, again.failed), (4, 0, 4));
    assert_eq!(daemon.seen("/api/agents/send").len(), 2);
}

#[tokio::test]
async fn a_refused_delivery_holds_back_that_user_only() {
    let backend = fake_backend(vec![
        delivery("a1", "alice", "a1"),
        delivery("b1", "bob", "b1"),
        delivery("a2", "alice", "a2"),
    ])
    .await;
    let daemon = Fake::start(|req| {
        if req.body["message"] == "a1" {
            (500, json!({"error": "llm exploded"}))
        } else {
            (200, json!({"status": "ok"}))
        }
    })
    .await;
    let d = dispatcher(&backend.url, &daemon.url, &[]);
    let report = d.tick().await.unwrap();
    assert_eq!(
        (report.deliveries, report.delivered, report.failed),
        (3, 1, 1)
    );
    let sent: Vec<Value> = daemon
        .seen("/api/agents/send")
        .iter()
        .map(|s| s.body["message"].clone())
        .collect();
    // a2 is never sent before a1 succeeded.
    assert_eq!(sent.len(), 2);
    assert!(sent.contains(&json!("a1")) && sent.contains(&json!("b1")));
    assert_eq!(
        acked(&backend),
        ["/api/mission-control/dispatch/notifications/b1/deliver?user_id=bob"]
    );
    assert_eq!(d.failures_of("a1"), 1);
    assert_eq!(d.failures_of("a2"), 0);
}

#[tokio::test]
async fn a_failed_acknowledgement_is_a_failure() {
    let daemon = ok_daemon().await;
    let backend = Fake::start(|req| {
        if req.path_and_query.contains("/undelivered") {
            (200, json!({"deliveries": [delivery("n1", "u1", "hi")]}))
        } else {
            (404, json!({"error": "unknown notification"}))
        }
    })
    .await;
    let report = dispatcher(&backend.url, &daemon.url, &[])
        .tick()
        .await
        .unwrap();
    assert_eq!(
        (report.deliveries, report.delivered, report.failed),
        (1, 0, 1)
    );
}

#[tokio::test]
async fn shutdown_lets_the_delivery_in_flight_finish_and_starts_no_other() {
    let backend = fake_backend(vec![
        delivery("n1", "u1", "in flight"),
        delivery("n2", "u1", "not started"),
    ])
    .await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stop = Arc::new(Mutex::new(Some(stop)));
    // The daemon receives the first delivery and, while it is in flight,
    // the process is asked to stop.
    let daemon = Fake::start(move |_| {
        if let Some(stop) = stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        (200, json!({"status": "ok"}))
    })
    .await;
    let d = dispatcher(&backend.url, &daemon.url, &[]);
    let mut out = Vec::new();
    let last = wombat_dispatcher::serve(
        &d,
        false,
        async {
            let _ = stopped.await;
        },
        &mut out,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!((last.deliveries, last.delivered, last.failed), (2, 1, 0));
    // The loop ended after that tick.
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    assert_eq!(daemon.seen("/api/agents/send").len(), 1);
    assert_eq!(
        acked(&backend),
        ["/api/mission-control/dispatch/notifications/n1/deliver?user_id=u1"]
    );
}
