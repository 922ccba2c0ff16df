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
            "task_title": "Notifications",
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
async fn malformed_deliveries_are_given_up_when_they_can_be_acknowledged() {
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
        (
            report.deliveries,
            report.delivered,
            report.failed,
            report.given_up
        ),
        (6, 2, 4, 2)
    );
    let messages: Vec<Value> = daemon
        .seen("/api/agents/send")
        .iter()
        .map(|s| s.body["message"].clone())
        .collect();
    assert_eq!(messages, [json!("one"), json!("two")]);
    let mut acks = acked(&backend);
    acks.sort();
    // The two that name an id and a user are acknowledged (given up), so
    // they stop taking a slot of u1's and u2's queues.
    assert_eq!(
        acks,
        [
            "/api/mission-control/dispatch/notifications/bad-1/deliver?user_id=u1",
            "/api/mission-control/dispatch/notifications/bad-3/deliver?user_id=u2",
            "/api/mission-control/dispatch/notifications/n1/deliver?user_id=u1",
            "/api/mission-control/dispatch/notifications/n2/deliver?user_id=u1",
        ]
    );

    // The two that cannot be acknowledged stay queued and fail again,
    // never sent.
    let again = d.tick().await.unwrap();
    assert_eq!(
        (
            again.deliveries,
            again.delivered,
            again.failed,
            again.given_up
        ),
        (2, 0, 2, 0)
    );
    assert_eq!(daemon.seen("/api/agents/send").len(), 2);
}

#[tokio::test]
async fn an_already_answered_notification_counts_as_delivered() {
    let backend = fake_backend(vec![delivery("b1", "bob", "again")]).await;
    // What the daemon answers to a redelivery whose reply is already stored.
    let daemon = Fake::start(|_| {
        (
            409,
            json!({"error": "a reply to notification \"b1\" is already stored; this one was not",
                   "code": "notification_already_answered"}),
        )
    })
    .await;
    let d = dispatcher(&backend.url, &daemon.url, &[]);
    let report = d.tick().await.unwrap();
    assert_eq!(
        (report.delivered, report.failed, report.given_up),
        (1, 0, 0)
    );
    assert_eq!(
        acked(&backend),
        ["/api/mission-control/dispatch/notifications/b1/deliver?user_id=bob"]
    );
}

#[tokio::test]
async fn a_permanent_refusal_is_given_up_and_does_not_block_the_user() {
    let backend = fake_backend(vec![
        delivery("a1", "alice", "refused"),
        delivery("a2", "alice", "fine"),
    ])
    .await;
    let daemon = Fake::start(|req| {
        if req.body["message"] == "refused" {
            (400, json!({"error": "message must not be empty"}))
        } else {
            (200, json!({"status": "ok"}))
        }
    })
    .await;
    let d = dispatcher(&backend.url, &daemon.url, &[]);
    let report = d.tick().await.unwrap();
    assert_eq!(
        (
            report.deliveries,
            report.delivered,
            report.failed,
            report.given_up
        ),
        (2, 1, 1, 1)
    );
    // Both are off the queue: a1 given up at once, a2 delivered after it.
    assert_eq!(
        acked(&backend),
        [
            "/api/mission-control/dispatch/notifications/a1/deliver?user_id=alice",
            "/api/mission-control/dispatch/notifications/a2/deliver?user_id=alice",
        ]
    );
    let line: Value = serde_json::from_str(&report.log_line()).unwrap();
    assert_eq!(line["given_up"], 1);
    // Nothing is left to retry.
    let again = d.tick().await.unwrap();
    assert_eq!(again.deliveries, 0);
    assert_eq!(daemon.seen("/api/agents/send").len(), 2);
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_is_given_up_after_max_attempts() {
    let backend = fake_backend(vec![delivery("n1", "u1", "boom")]).await;
    let daemon = Fake::start(|_| (500, json!({"error": "llm exploded"}))).await;
    let d = dispatcher(&backend.url, &daemon.url, &[("DISPATCH_MAX_ATTEMPTS", "3")]);
    for attempt in 1..=2 {
        let r = d.tick().await.unwrap();
        assert_eq!((r.failed, r.given_up), (1, 0), "attempt {attempt}");
        assert!(acked(&backend).is_empty());
        assert_eq!(d.failures_of("n1"), attempt);
    }
    let third = d.tick().await.unwrap();
    assert_eq!((third.failed, third.given_up), (1, 1));
    assert_eq!(
        acked(&backend),
        ["/api/mission-control/dispatch/notifications/n1/deliver?user_id=u1"]
    );
    assert_eq!(d.failures_of("n1"), 0);
    assert_eq!(d.tick().await.unwrap().deliveries, 0);
}

#[tokio::test]
async fn refused_credentials_never_give_a_notification_up() {
    let backend = fake_backend(vec![delivery("n1", "u1", "hi")]).await;
    let daemon = Fake::start(|_| (401, json!({"error": "invalid daemon key"}))).await;
    let d = dispatcher(&backend.url, &daemon.url, &[("DISPATCH_MAX_ATTEMPTS", "1")]);
    for _ in 0..3 {
        let r = d.tick().await.unwrap();
        assert_eq!((r.failed, r.given_up), (1, 0));
    }
    assert!(acked(&backend).is_empty(), "a wrong key must not drop work");
}

#[tokio::test]
async fn after_a_lost_acknowledgement_the_next_tick_only_acknowledges() {
    let daemon = ok_daemon().await;
    let acks = Arc::new(Mutex::new(0u32));
    let seen_acks = Arc::clone(&acks);
    let backend = Fake::start(move |req| {
        if req.path_and_query.contains("/undelivered") {
            return (200, json!({"deliveries": [delivery("n1", "u1", "hi")]}));
        }
        let mut n = seen_acks.lock().unwrap();
        *n += 1;
        if *n == 1 {
            (404, json!({"error": "lost"}))
        } else {
            (200, json!({"status": "delivered"}))
        }
    })
    .await;
    let d = dispatcher(&backend.url, &daemon.url, &[]);
    let first = d.tick().await.unwrap();
    assert_eq!((first.delivered, first.failed), (0, 1));
    let second = d.tick().await.unwrap();
    assert_eq!((second.delivered, second.failed), (1, 0));
    assert_eq!(*acks.lock().unwrap(), 2);
    assert_eq!(
        daemon.seen("/api/agents/send").len(),
        1,
        "the daemon already answered; it is not asked twice"
    );
}

#[tokio::test]
async fn task_id_and_metadata_of_a_delivery_are_forwarded() {
    let mut with_task = delivery("n1", "u1", "on a task");
    with_task["task_id"] = json!(42);
    with_task["metadata"] = json!({"source": "ci", "type": "spoofed", "notification_id": "x"});
    let backend = fake_backend(vec![with_task, delivery("n2", "u1", "plain")]).await;
    let daemon = ok_daemon().await;
    let d = dispatcher(
        &backend.url,
        &daemon.url,
        &[("DISPATCH_TASK_TITLE", "Inbox")],
    );
    assert_eq!(d.tick().await.unwrap().delivered, 2);
    let sends = daemon.seen("/api/agents/send");
    assert_eq!(sends[0].body["task_id"], "42");
    assert!(sends[0].body.get("task_title").is_none());
    // Ours win: the daemon keys the reply by notification_id.
    assert_eq!(
        sends[0].body["metadata"],
        json!({"source": "ci", "type": "mc.notification", "notification_id": "n1"})
    );
    assert_eq!(sends[1].body["task_title"], "Inbox");
    assert!(sends[1].body.get("task_id").is_none());

    // An empty DISPATCH_TASK_TITLE sends no title (the daemon's default applies).
    let backend = fake_backend(vec![delivery("n3", "u1", "plain")]).await;
    let daemon = ok_daemon().await;
    dispatcher(&backend.url, &daemon.url, &[("DISPATCH_TASK_TITLE", "")])
        .tick()
        .await
        .unwrap();
    let body = &daemon.seen("/api/agents/send")[0].body;
    assert!(body.get("task_title").is_none() && body.get("task_id").is_none());
}

/// The delivery a reference backend queues when a tool request is
/// resolved: its `task_id` and `metadata.tool_request_id` reach the daemon's
/// send, which resumes the run; the body's `user_id` is always the
/// delivery's, whatever the metadata says.
#[tokio::test]
async fn a_tool_request_resolution_reaches_the_daemon_with_its_id() {
    let mut resolved = delivery("n1", "u1", "The tool call fs__rm was approved.");
    resolved["session_key"] = json!("user:u1:planner");
    resolved["task_id"] = json!("task_9");
    resolved["metadata"] = json!({"tool_request_id": "tr_42", "user_id": "someone-else"});
    let backend = fake_backend(vec![resolved]).await;
    let daemon = ok_daemon().await;
    let d = dispatcher(&backend.url, &daemon.url, &[]);
    assert_eq!(d.tick().await.unwrap().delivered, 1);
    let sends = daemon.seen("/api/agents/send");
    let body = &sends[0].body;
    assert_eq!(body["user_id"], "u1");
    assert_eq!(body["session_key"], "user:u1:planner");
    assert_eq!(body["task_id"], "task_9");
    assert!(body.get("task_title").is_none());
    assert_eq!(body["metadata"]["tool_request_id"], "tr_42");
    assert_eq!(body["metadata"]["notification_id"], "n1");
    assert_eq!(acked(&backend).len(), 1);
}

/// The chain with the real reference backend: a tool request approved
/// there becomes a delivery that reaches the daemon's send with the run's
/// session, task and `metadata.tool_request_id`, once.
#[tokio::test]
async fn an_approval_in_the_reference_backend_reaches_the_daemon() {
    use wombat_controlplane::{ControlPlane, ControlPlaneConfig};
    use wombat_core::controlplane::{
        NewTask, NewToolRequest, ToolRequestDecision, ToolRequestStatus,
    };

    let backend = crate::support::start_backend().await;
    let agent = ControlPlane::new(ControlPlaneConfig::new(
        backend.url(),
        crate::support::jwt_config(),
    ))
    .unwrap()
    .agent("ivy", "planner");
    let task = agent
        .create_task(NewTask {
            title: "Cleanup".into(),
            description: None,
            status: None,
            metadata: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let req = agent
        .create_tool_request(NewToolRequest {
            task_id: task.id.clone(),
            tool: "fs__rm".into(),
            arguments: json!({"path": "/tmp/x"}),
            call_id: "call_1".into(),
            agent_role: None,
            idempotency_key: None,
            context: None,
        })
        .await
        .unwrap();
    agent
        .resolve_tool_request(
            &req.id,
            &ToolRequestDecision {
                status: ToolRequestStatus::Approved,
                reason: None,
            },
        )
        .await
        .unwrap();

    let daemon = ok_daemon().await;
    let d = dispatcher(&backend.url(), &daemon.url, &[]);
    assert_eq!(d.tick().await.unwrap().delivered, 1);
    assert_eq!(d.tick().await.unwrap().deliveries, 0, "acknowledged");
    let sends = daemon.seen("/api/agents/send");
    assert_eq!(sends.len(), 1);
    let body = &sends[0].body;
    assert_eq!(body["user_id"], "ivy");
    assert_eq!(body["session_key"], "user:ivy:planner");
    assert_eq!(body["task_id"], task.id.as_str());
    assert_eq!(body["metadata"]["tool_request_id"], req.id.as_str());
    assert!(
        body["message"].as_str().unwrap().contains("fs__rm"),
        "{body}"
    );
    backend.shutdown().await;
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
