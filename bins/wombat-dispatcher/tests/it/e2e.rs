//! End to end: the reference backend and the real daemon (echo provider),
//! both in-process.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Daemon, INTERNAL, dispatcher, enqueue, free_port, messages_of, read_as, settings,
    start_backend, undelivered,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_is_delivered_once_and_acknowledged() {
    let backend = start_backend().await;
    let daemon = Daemon::start(&backend.url()).await;
    let ids = [
        enqueue(&backend, "alice", "first for alice").await,
        enqueue(&backend, "bob", "only one for bob").await,
        enqueue(&backend, "alice", "second for alice").await,
        enqueue(&backend, "alice", "third for alice").await,
    ];
    assert_eq!(undelivered(&backend).await.len(), 4);

    let d = dispatcher(&backend.url(), &daemon.url, &[]);
    let report = d.tick().await.unwrap();
    assert_eq!(
        (report.deliveries, report.delivered, report.failed),
        (4, 4, 0)
    );
    assert!(undelivered(&backend).await.is_empty());
    for id in &ids {
        assert_eq!(d.failures_of(id), 0);
    }

    // The agent's replies are in each tenant's default task, in order.
    let alice = messages_of(&backend, "alice", "Notifications").await;
    let position = |needle: &str| {
        alice
            .iter()
            .position(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("no message with {needle:?} in {alice:?}"))
    };
    assert!(position("first for alice") < position("second for alice"));
    assert!(position("second for alice") < position("third for alice"));
    let bob = messages_of(&backend, "bob", "Notifications").await;
    assert!(
        bob.iter().any(|m| m.contains("only one for bob")),
        "{bob:?}"
    );
    assert!(
        !bob.iter().any(|m| m.contains("alice")),
        "tenant leak: {bob:?}"
    );

    // Nothing is delivered twice.
    let again = d.tick().await.unwrap();
    assert_eq!((again.deliveries, again.delivered, again.failed), (0, 0, 0));
    assert_eq!(messages_of(&backend, "alice", "Notifications").await, alice);

    daemon.stop().await;
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_the_daemon_is_down() {
    let backend = start_backend().await;
    let port = free_port();
    let daemon_url = format!("http://127.0.0.1:{port}");
    let first = enqueue(&backend, "carol", "hello while down").await;
    enqueue(&backend, "carol", "and a second one").await;
    let d = dispatcher(&backend.url(), &daemon_url, &[]);

    let down = d.tick().await.unwrap();
    // The first fails; the second waits behind it so the order holds.
    assert_eq!((down.deliveries, down.delivered, down.failed), (2, 0, 1));
    assert_eq!(undelivered(&backend).await.len(), 2);
    assert_eq!(d.failures_of(&first), 1);
    let still_down = d.tick().await.unwrap();
    assert_eq!(still_down.failed, 1);
    assert_eq!(d.failures_of(&first), 2);

    let daemon = Daemon::start_on(&backend.url(), port).await;
    let up = d.tick().await.unwrap();
    assert_eq!((up.deliveries, up.delivered, up.failed), (2, 2, 0));
    assert!(undelivered(&backend).await.is_empty());
    assert_eq!(d.failures_of(&first), 0);
    let carol = messages_of(&backend, "carol", "Notifications").await;
    assert!(
        carol.iter().any(|m| m.contains("hello while down")),
        "{carol:?}"
    );
    assert!(
        carol.iter().any(|m| m.contains("and a second one")),
        "{carol:?}"
    );

    daemon.stop().await;
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_runs_a_single_tick_and_succeeds_even_with_failed_deliveries() {
    let backend = start_backend().await;
    let daemon = Daemon::start(&backend.url()).await;
    enqueue(&backend, "dave", "delivered by --once").await;
    let s = settings(&[
        ("BACKEND_URL", &backend.url()),
        ("INTERNAL_TOKEN", INTERNAL),
        ("AGENT_DAEMON_URL", &daemon.url),
    ]);
    // `once` returns without the shutdown future ever resolving, after
    // exactly one tick line.
    let mut out = Vec::new();
    wombat_dispatcher::run(&s, true, std::future::pending(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let tick: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(tick["event"], "dispatcher_tick");
    assert_eq!(tick["delivered"], 1);
    assert!(undelivered(&backend).await.is_empty());
    daemon.stop().await;

    // Daemon gone: the delivery fails, but the poll worked, so Ok.
    enqueue(&backend, "dave", "stays queued").await;
    wombat_dispatcher::run(&s, true, std::future::pending(), &mut std::io::sink())
        .await
        .unwrap();
    assert_eq!(undelivered(&backend).await.len(), 1);

    // A refused poll is an error with exit code 1.
    let mut wrong = s.clone();
    wrong.insert("INTERNAL_TOKEN".into(), "wrong-token".into());
    let mut out = Vec::new();
    let err = wombat_dispatcher::run(&wrong, true, std::future::pending(), &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("401"), "{err}");
    // The failed poll still gets its tick line, with the error.
    let tick: serde_json::Value =
        serde_json::from_str(String::from_utf8(out).unwrap().trim()).unwrap();
    assert_eq!(
        (&tick["deliveries"], &tick["failed"]),
        (&0.into(), &0.into())
    );
    assert!(tick["error"].as_str().unwrap().contains("401"), "{tick}");
    assert!(!tick["error"].as_str().unwrap().contains("wrong-token"));

    // Invalid configuration is exit code 64 and names the variable.
    let mut bad = s.clone();
    bad.remove("INTERNAL_TOKEN");
    let err = wombat_dispatcher::run(&bad, true, std::future::pending(), &mut std::io::sink())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("INTERNAL_TOKEN"), "{err}");
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_keeps_polling_until_shutdown() {
    let backend = start_backend().await;
    let daemon = Daemon::start(&backend.url()).await;
    let d = dispatcher(
        &backend.url(),
        &daemon.url,
        &[
            ("DISPATCH_MIN_INTERVAL_SEC", "0.01"),
            ("DISPATCH_MAX_INTERVAL_SEC", "0.02"),
        ],
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loop_task = tokio::spawn({
        let d = d.clone();
        async move {
            let mut out = Vec::new();
            let last = wombat_dispatcher::serve(
                &d,
                false,
                async {
                    let _ = stopped.await;
                },
                &mut out,
            )
            .await;
            // One JSON line per tick.
            let text = String::from_utf8(out).unwrap();
            assert!(!text.is_empty());
            for line in text.lines() {
                let tick: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(tick["event"], "dispatcher_tick");
            }
            last
        }
    });
    // Work queued while the loop runs is picked up.
    enqueue(&backend, "erin", "queued while the loop runs").await;
    let mut delivered = false;
    for _ in 0..500 {
        if undelivered(&backend).await.is_empty() {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(delivered, "the loop never delivered the notification");
    let _ = stop.send(());
    let last = loop_task.await.unwrap().unwrap();
    assert!(last.is_some());
    daemon.stop().await;
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_without_a_default_task_gets_the_reply_on_the_right_task() {
    let backend = start_backend().await;
    let daemon = Daemon::start_without_default_task(&backend.url()).await;
    // A task the backend wants the reply on.
    let token = wombat_controlplane::jwt::mint(
        &crate::support::jwt_config(),
        "ivy",
        "agent",
        None,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let task: Value = reqwest::Client::new()
        .post(format!("{}/api/mission-control/tasks", backend.url()))
        .header("X-Agent-Token", token)
        .json(&json!({"title": "Release 1.2"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task_id = task["id"].as_str().unwrap();
    wombat_mc_lite::enqueue_notification_with(
        &backend.url(),
        INTERNAL,
        "ivy",
        "user:ivy:agent",
        "about the release",
        Some(task_id),
        Some(&json!({"source": "ci"})),
    )
    .await
    .unwrap();
    enqueue(&backend, "ivy", "a plain notification").await;

    let d = dispatcher(&backend.url(), &daemon.url, &[]);
    let report = d.tick().await.unwrap();
    assert_eq!(
        (report.deliveries, report.delivered, report.failed),
        (2, 2, 0),
        "first try, no WOMBAT_DEFAULT_TASK"
    );
    let on_task = read_as(&backend, "ivy", &format!("tasks/{task_id}/messages")).await;
    let contents: Vec<&str> = on_task["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(
        contents.len() == 1 && contents[0].contains("about the release"),
        "{contents:?}"
    );
    let default = messages_of(&backend, "ivy", "Notifications").await;
    assert!(
        default.len() == 1 && default[0].contains("a plain notification"),
        "{default:?}"
    );
    daemon.stop().await;
    backend.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_notification_stores_one_reply() {
    let backend = start_backend().await;
    let daemon = Daemon::start(&backend.url()).await;
    let id = enqueue(&backend, "jo", "answer me once").await;
    let d = dispatcher(&backend.url(), &daemon.url, &[]);
    assert_eq!(d.tick().await.unwrap().delivered, 1);
    // The acknowledgement was lost and the dispatcher restarted: it sends
    // the same delivery again, as it would.
    let body = json!({
        "user_id": "jo",
        "session_key": "user:jo:agent",
        "message": "answer me once",
        "metadata": {"type": "mc.notification", "notification_id": id},
        "task_title": "Notifications",
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/api/agents/send", daemon.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{status} {text}");
    let replies = messages_of(&backend, "jo", "Notifications").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    // A model that answers differently the second time (most do): the
    // backend refuses the second reply under the same key, and the daemon
    // says the notification is already answered (not a 502 that the
    // dispatcher would retry, paying for the LLM again), reply included.
    let mut different = body.clone();
    different["message"] = json!("answer me once, differently");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/agents/send", daemon.url))
        .json(&different)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["code"], "notification_already_answered", "{answer}");
    assert_eq!(
        answer["details"]["response"],
        "echo: answer me once, differently"
    );
    let replies = messages_of(&backend, "jo", "Notifications").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    daemon.stop().await;
    backend.shutdown().await;
}
