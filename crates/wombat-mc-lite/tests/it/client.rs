//! The `wombat-controlplane` client against the reference backend: every
//! call, pagination, races, retries and typed errors.

use serde_json::json;
use wombat_controlplane::{Error, task_idempotency_key};
use wombat_core::controlplane::{ActorType, NewDocument, NewMessage, NewTask};

use crate::support::*;

fn message(task_id: &str, content: &str) -> NewMessage {
    NewMessage {
        task_id: task_id.into(),
        content: content.into(),
        actor_type: Some(ActorType::Agent),
        actor_id: None,
        agent_role: Some("agent".into()),
        attachments: Some(
            wombat_core::json::JsonText::to_json(&json!({"model": "m"})).expect("json"),
        ),
        idempotency_key: None,
    }
}

fn new_task(title: &str) -> NewTask {
    NewTask {
        title: title.into(),
        description: None,
        status: None,
        metadata: None,
        idempotency_key: None,
    }
}

#[tokio::test]
async fn every_call_works_end_to_end() {
    let server = start_memory().await;
    let cp = client(&server.url());
    let agent = cp.agent("alice", "agent");

    let caps = agent.capabilities().await.unwrap();
    assert_eq!(caps.contract_version, "v1");
    assert!(
        caps.features.heartbeat && caps.features.standup && caps.features.notifications_dispatch
    );

    let created = agent.create_task(new_task("Plain")).await.unwrap();
    assert_eq!(created.title, "Plain");
    let page = agent.list_tasks(Some(10), None).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.next_cursor, None);

    let thread = agent
        .find_or_create_task("Launch", None, None)
        .await
        .unwrap();
    assert_eq!(thread.status, "in_progress");
    assert_eq!(thread.description.as_deref(), Some("Agent thread: Launch"));
    assert_eq!(thread.metadata, Some(json!({"type": "agent_thread"})));
    let again = agent
        .find_or_create_task("Launch", None, None)
        .await
        .unwrap();
    assert_eq!(again.id, thread.id);
    assert_eq!(
        agent
            .find_task_by_title("Launch")
            .await
            .unwrap()
            .unwrap()
            .id,
        thread.id
    );
    assert!(agent.find_task_by_title("Nope").await.unwrap().is_none());
    assert_eq!(agent.all_tasks().await.unwrap().len(), 2);

    let msg = agent
        .post_message(message(&thread.id, "hello"))
        .await
        .unwrap();
    assert_eq!(
        (msg.task_id.as_str(), msg.content.as_str()),
        (thread.id.as_str(), "hello")
    );
    let doc = agent
        .post_document(NewDocument {
            title: "Plan".into(),
            content: "# Plan".into(),
            doc_type: Some("plan".into()),
            task_id: thread.id.clone(),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(doc.doc_type.as_deref(), Some("plan"));

    // The writes landed, visible through the tenant-scoped read endpoints.
    let (status, msgs) = as_user(
        &server,
        "alice",
        "GET",
        &format!("tasks/{}/messages", thread.id),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(msgs["items"][0]["content"], "hello");
    assert_eq!(msgs["items"][0]["actor_type"], "agent");
    assert_eq!(msgs["items"][0]["attachments"], json!({"model": "m"}));
    let (_, docs) = as_user(
        &server,
        "alice",
        "GET",
        &format!("tasks/{}/documents", thread.id),
        None,
    )
    .await;
    assert_eq!(docs["items"][0]["id"], doc.id.as_str());

    let hb = agent.heartbeat().await.unwrap();
    assert_eq!(hb["tasks"]["total"], 2);
    assert_eq!(hb["messages"]["total"], 1);
    let standup = agent.standup("Europe/Paris").await.unwrap();
    assert_eq!(standup["timezone"], "Europe/Paris");
    assert_eq!(standup["totals"]["messages"], 1);

    wombat_mc_lite::enqueue_notification(
        &server.url(),
        INTERNAL,
        "alice",
        "user:alice:agent",
        "ping",
    )
    .await
    .unwrap();
    let pending = cp.undelivered(25, 25).await.unwrap();
    assert_eq!(pending.len(), 1);
    let id = pending[0]["notification_id"].as_str().unwrap();
    assert_eq!(pending[0]["content"], "ping");
    cp.acknowledge(id, "alice").await.unwrap();
    assert!(cp.undelivered(25, 25).await.unwrap().is_empty());
    assert!(matches!(
        cp.acknowledge("ntf_unknown", "alice").await,
        Err(Error::Status { status: 404, .. })
    ));

    cp.health_check().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn find_or_create_follows_pages_past_the_first_fifty() {
    let server = start_memory().await;
    let agent = client(&server.url()).agent("bob", "agent");
    let mut ids = Vec::new();
    for i in 1..=80 {
        ids.push(
            agent
                .create_task(new_task(&format!("task #{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let found = agent
        .find_or_create_task("task #73", None, None)
        .await
        .unwrap();
    assert_eq!(found.id, ids[72]);
    let all = agent.all_tasks().await.unwrap();
    assert_eq!(all.len(), 80);
    assert_eq!(all.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn concurrent_find_or_create_makes_one_task() {
    let server = start_memory().await;
    let agent = client(&server.url()).agent("carol", "agent");
    let calls = (0..8).map(|_| agent.find_or_create_task("Race", None, None));
    let results = futures::future::join_all(calls).await;
    let ids: Vec<String> = results.into_iter().map(|r| r.unwrap().id).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let all = agent.all_tasks().await.unwrap();
    assert_eq!(all.iter().filter(|t| t.title == "Race").count(), 1);
}

#[tokio::test]
async fn retry_after_a_503_does_not_duplicate_the_message() {
    let server = start_memory().await;
    let (addr, proxy) = proxy(server.url()).await;
    let agent = client(&format!("http://{addr}")).agent("dave", "agent");
    let task = agent
        .find_or_create_task("Retry", None, None)
        .await
        .unwrap();

    proxy.inject("/api/mission-control/messages", Fault::Forward503);
    let msg = agent
        .post_message(message(&task.id, "exactly once"))
        .await
        .unwrap();

    let attempts = proxy.seen("/api/mission-control/messages");
    assert_eq!(attempts.len(), 2, "one failed attempt, one retry");
    let key = attempts[0].body["idempotency_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(attempts[1].body["idempotency_key"], key.as_str());
    assert_eq!(attempts[0].token, attempts[1].token, "cached token reused");
    let (_, msgs) = as_user(
        &server,
        "dave",
        "GET",
        &format!("tasks/{}/messages", task.id),
        None,
    )
    .await;
    let items = msgs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], msg.id.as_str());
}

#[tokio::test]
async fn a_429_is_retried_and_exhausted_retries_surface_the_status() {
    let server = start_memory().await;
    let (addr, proxy) = proxy(server.url()).await;
    let agent = client(&format!("http://{addr}")).agent("erin", "agent");

    proxy.inject("/api/mission-control/tasks", Fault::Reject429);
    assert!(agent.list_tasks(None, None).await.unwrap().items.is_empty());
    assert_eq!(proxy.seen("/api/mission-control/tasks").len(), 2);

    for _ in 0..3 {
        proxy.inject("/api/mission-control/capabilities", Fault::Reject503);
    }
    match agent.capabilities().await {
        Err(Error::Status {
            status: 503, error, ..
        }) => assert_eq!(error, "unavailable"),
        other => panic!("expected a 503 error, got {other:?}"),
    }
    assert_eq!(
        proxy.seen("/api/mission-control/capabilities").len(),
        3,
        "bounded attempts"
    );
}

#[tokio::test]
async fn errors_are_typed() {
    let server = start_memory().await;
    let wrong = client_with_secret(&server.url(), "not-the-secret").agent("frank", "agent");
    match wrong.capabilities().await {
        Err(Error::Unauthorized { error }) => assert_eq!(error, "agent token signature is invalid"),
        other => panic!("expected Unauthorized, got {other:?}"),
    }

    let agent = client(&server.url()).agent("frank", "agent");
    let mut first = new_task("Keyed");
    first.idempotency_key = Some("k-1".into());
    agent.create_task(first.clone()).await.unwrap();
    first.title = "Keyed, changed".into();
    match agent.create_task(first).await {
        Err(Error::Status {
            status: 409, code, ..
        }) => assert_eq!(code.as_deref(), Some("idempotency_conflict")),
        other => panic!("expected 409, got {other:?}"),
    }
    match agent.post_message(message("task_of_nobody", "x")).await {
        Err(Error::Status {
            status: 404, error, ..
        }) => assert_eq!(error, "task not found"),
        other => panic!("expected 404, got {other:?}"),
    }

    // Without an internal token the dispatch calls refuse locally.
    let jwt = jwt_config();
    let no_internal = wombat_controlplane::ControlPlane::new(
        wombat_controlplane::ControlPlaneConfig::new(server.url(), jwt),
    )
    .unwrap();
    assert!(matches!(
        no_internal.undelivered(1, 1).await,
        Err(Error::NoInternalToken)
    ));

    let url = server.url();
    server.shutdown().await;
    let mut cfg = wombat_controlplane::ControlPlaneConfig::new(url, jwt_config());
    cfg.retry.attempts = 1;
    let dead = wombat_controlplane::ControlPlane::new(cfg).unwrap();
    assert!(matches!(
        dead.health_check().await,
        Err(Error::Transport(_))
    ));
    assert!(matches!(
        dead.agent("x", "agent").capabilities().await,
        Err(Error::Transport(_))
    ));
}

#[tokio::test]
async fn find_or_create_sends_the_deterministic_key() {
    let server = start_memory().await;
    let (addr, proxy) = proxy(server.url()).await;
    let agent = client(&format!("http://{addr}")).agent("gina", "agent");
    agent
        .find_or_create_task("Thread", Some("custom"), Some(json!({"k": 1})))
        .await
        .unwrap();
    let posts: Vec<_> = proxy
        .seen("/api/mission-control/tasks")
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].body["idempotency_key"],
        task_idempotency_key("gina", "Thread").as_str()
    );
    assert_eq!(posts[0].body["description"], "custom");
    assert_eq!(posts[0].body["metadata"], json!({"k": 1}));
    assert_eq!(posts[0].body["status"], "in_progress");
}

/// GET `/tasks` calls the proxy saw, as their query strings.
fn task_lists(proxy: &ProxyState) -> Vec<String> {
    proxy
        .seen("/api/mission-control/tasks")
        .into_iter()
        .filter(|s| s.method == "GET")
        .map(|s| s.query)
        .collect()
}

#[tokio::test]
async fn titled_lookups_use_the_title_filter_and_then_the_cache() {
    let server = start_memory().await;
    let (addr, proxy) = proxy(server.url()).await;
    let cp = client(&format!("http://{addr}"));
    let agent = cp.agent("erin", "agent");
    // 120 tasks: paging would take three list calls to reach the last one.
    for i in 1..=120 {
        agent.create_task(new_task(&format!("t{i}"))).await.unwrap();
    }
    let first = agent.find_or_create_task("t120", None, None).await.unwrap();
    assert_eq!(first.title, "t120");
    assert_eq!(task_lists(&proxy), ["limit=50&title=t120"]);
    assert_eq!(proxy.seen("/api/mission-control/capabilities").len(), 1);

    // The second titled lookup costs no backend call at all.
    let again = agent.find_or_create_task("t120", None, None).await.unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(task_lists(&proxy).len(), 1, "no list call on a cache hit");
    assert_eq!(proxy.seen("/api/mission-control/capabilities").len(), 1);
    // Another tenant does not share the entry.
    let other = cp.agent("frank", "agent");
    let theirs = other.find_or_create_task("t120", None, None).await.unwrap();
    assert_ne!(theirs.id, first.id);
    // Capabilities were learned once per process, not per tenant.
    assert_eq!(proxy.seen("/api/mission-control/capabilities").len(), 1);
    assert_eq!(cp.cached_tasks(), 2);
}

#[tokio::test]
async fn a_404_for_a_cached_task_drops_the_entry() {
    let server = start_memory().await;
    let (addr, proxy) = proxy(server.url()).await;
    let cp = client(&format!("http://{addr}"));
    let agent = cp.agent("gina", "agent");
    let task = agent.find_or_create_task("Gone", None, None).await.unwrap();
    agent.find_or_create_task("Gone", None, None).await.unwrap();
    assert_eq!(task_lists(&proxy).len(), 1);
    assert_eq!(cp.cached_tasks(), 1);

    proxy.inject("/api/mission-control/messages", Fault::Reject404);
    let err = agent
        .post_message(message(&task.id, "to a deleted task"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{err:?}");
    assert_eq!(cp.cached_tasks(), 0);
    // The next titled lookup asks the backend again.
    agent.find_or_create_task("Gone", None, None).await.unwrap();
    assert_eq!(task_lists(&proxy).len(), 2);
}

#[tokio::test]
async fn without_the_filter_the_client_pages_and_checks_titles_itself() {
    // A backend that does not advertise the filter: a proxy that strips
    // `task_title_filter` from the capabilities is overkill; instead a
    // capabilities failure makes the client fall back to paging.
    let server = start_memory().await;
    let (addr, proxy) = proxy(server.url()).await;
    let agent = client(&format!("http://{addr}")).agent("hank", "agent");
    for i in 1..=60 {
        agent.create_task(new_task(&format!("p{i}"))).await.unwrap();
    }
    for _ in 0..3 {
        proxy.inject("/api/mission-control/capabilities", Fault::Reject503);
    }
    let found = agent.find_task_by_title("p60").await.unwrap().unwrap();
    assert_eq!(found.title, "p60");
    let lists = task_lists(&proxy);
    assert_eq!(lists.len(), 2, "{lists:?}");
    assert!(lists.iter().all(|q| !q.contains("title=")), "{lists:?}");
}
