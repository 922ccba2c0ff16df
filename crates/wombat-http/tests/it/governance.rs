//! Per-user budgets, rate limits and shared usage end to end: two daemons
//! on one real `redis-server`, a restart, Redis going away and coming back,
//! and the in-memory default.

use std::time::Duration;

use serde_json::{Value, json};

use crate::redis_server::RedisServer;
use crate::support::{Harness, Reply, Resp, send_body, setup};

/// gpt-4o-mini (the harness's default model) at the fake's 1250 prompt and
/// 150 completion tokens: 188 + 90 micro-dollars.
const CALL_MICROS: u64 = 278;

async fn daemon(redis: &RedisServer, extra: &[(&str, &str)]) -> Harness {
    let mut s = setup().env("WOMBAT_REDIS_URL", &redis.url());
    for (k, v) in extra {
        s = s.env(k, v);
    }
    s.start().await
}

fn body(user: &str, limits: Value) -> Value {
    send_body(
        user,
        json!({"task_title": "T", "metadata": {"limits": limits}}),
    )
}

fn micros(usd: &Value) -> u64 {
    (usd.as_f64().expect("a number") * 1e6).round() as u64
}

async fn metric(h: &Harness, line: &str) -> u64 {
    let text = h.get("/metrics").await.text;
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in {text}"))
}

/// `/usage` of `h` once it counts `requests` calls (other replicas write
/// theirs in the background, within their 10 ms batch and a round trip).
async fn usage_reaching(h: &Harness, requests: u64) -> serde_json::Value {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let u = h.get("/usage").await.json();
        match u["requestCount"].as_u64() {
            Some(n) if n == requests => return u,
            Some(n) if n < requests && std::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => panic!("usage never reached {requests} calls: {u}"),
        }
    }
}

#[tokio::test]
async fn two_daemons_share_one_budget_and_overshoot_at_most_the_calls_in_flight() {
    let redis = RedisServer::start();
    let (a, b) = (daemon(&redis, &[]).await, daemon(&redis, &[]).await);
    // 2,000 micro-dollars a day, at most 4 calls in flight for the user.
    let limits = json!({"budget_usd_day": 0.002, "concurrency": 4});
    let mut ok = 0u64;
    let mut exhausted = false;
    for _ in 0..30 {
        let wave = (0..8).map(|i| {
            let h = if i % 2 == 0 { &a } else { &b };
            let body = body("alice", limits.clone());
            async move { h.post("/api/agents/send", &body).await }
        });
        let replies: Vec<Resp> = futures::future::join_all(wave).await;
        let mut budget_refusals = 0;
        for r in &replies {
            match r.status {
                200 => ok += 1,
                429 => {
                    let v = r.json();
                    match v["code"].as_str() {
                        Some("budget_exceeded") => budget_refusals += 1,
                        Some("concurrency_limited") => {}
                        _ => panic!("unexpected refusal: {v}"),
                    }
                }
                other => panic!("status {other}: {}", r.text),
            }
        }
        if budget_refusals == replies.len() {
            exhausted = true;
            break;
        }
    }
    assert!(exhausted, "the budget never ran out");
    let spent = ok * CALL_MICROS;
    assert!(spent >= 2000, "stopped before the budget was used: {spent}");
    assert!(
        spent <= 2000 + 4 * CALL_MICROS,
        "spent {spent}: more than the budget plus the calls in flight"
    );
    // Every call reached the LLM of one daemon or the other; refused ones
    // never did.
    let llm_calls = a.llm.requests().len() + b.llm.requests().len();
    assert_eq!(llm_calls as u64, ok);
    // Either daemon refuses now, with the figures.
    for h in [&a, &b] {
        let r = h
            .post("/api/agents/send", &body("alice", limits.clone()))
            .await;
        let v = r.assert_error(429, "budget_exceeded");
        assert_eq!(v["details"]["limit"], 0.002);
        assert_eq!(micros(&v["details"]["spent"]), spent);
        assert_eq!(v["details"]["period"], "day");
        assert!(
            v["details"]["resets_at"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z'))
        );
        assert!(r.header("retry-after").is_some());
    }
    // Another user has their own budget; /usage on either shows the sum.
    let r = a
        .post("/api/agents/send", &body("bob", limits.clone()))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for h in [&a, &b] {
        // The other daemon's last calls arrive with its next batch (10 ms).
        let u = usage_reaching(h, ok + 1).await;
        assert_eq!(u["byUser"]["alice"]["requestCount"], ok);
        assert_eq!(micros(&u["byUser"]["alice"]["totalCost"]), spent);
        assert_eq!(u["byModel"]["gpt-4o-mini"]["requestCount"], ok + 1);
        let days = u["byDay"].as_array().expect("byDay");
        assert_eq!(days.len(), 1, "{u}");
        assert_eq!(days[0]["requestCount"], ok + 1);
        let alice = h.get("/usage?user_id=alice").await.json();
        assert_eq!(alice["requestCount"], ok);
        assert_eq!(alice["userId"], "alice");
    }
    assert!(metric(&a, "wombat_limits_rejected_total{reason=\"budget\"}").await >= 1);
}

#[tokio::test]
async fn requests_per_minute_hold_across_daemons_and_usage_survives_a_restart() {
    let redis = RedisServer::start();
    let (a, b) = (
        daemon(&redis, &[("WOMBAT_RATE_RPM", "4")]).await,
        daemon(&redis, &[("WOMBAT_RATE_RPM", "4")]).await,
    );
    for i in 0..4 {
        let h = if i % 2 == 0 { &a } else { &b };
        let r = h
            .post(
                "/api/agents/send",
                &send_body("carol", json!({"task_title": "T"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for h in [&a, &b] {
        let r = h
            .post(
                "/api/agents/send",
                &send_body("carol", json!({"task_title": "T"})),
            )
            .await;
        let v = r.assert_error(429, "rate_limited");
        assert_eq!(v["details"]["limit"], "rpm");
        let secs: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("secs");
        assert!((1..=60).contains(&secs), "{secs}");
    }
    // A per-request limit overrides the default for that tenant.
    let r = a
        .post("/api/agents/send", &body("carol", json!({"rpm": 1000})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // a's own calls are in its /usage at once; b's once b's background
    // writer wrote them.
    usage_reaching(&a, 5).await;
    drop((a, b));
    // A new daemon on the same Redis: the ledger is still there.
    let c = daemon(&redis, &[]).await;
    let u = c.get("/usage").await.json();
    assert_eq!(u["requestCount"], 5, "{u}");
    assert_eq!(u["byUser"]["carol"]["requestCount"], 5);
}

#[tokio::test]
async fn redis_going_away_fails_open_or_closed_and_recovers() {
    let mut redis = RedisServer::start();
    let open = daemon(&redis, &[("WOMBAT_RATE_RPM", "1000")]).await;
    let closed = daemon(
        &redis,
        &[
            ("WOMBAT_RATE_RPM", "1000"),
            ("WOMBAT_LIMITS_ON_STORE_ERROR", "closed"),
        ],
    )
    .await;
    let send = |h: &'static str| send_body(h, json!({"task_title": "T"}));
    for h in [&open, &closed] {
        assert_eq!(h.post("/api/agents/send", &send("dave")).await.status, 200);
    }
    redis.kill();
    // A user with no grant held on the replica (dave may still have one for
    // up to a second: requests admitted from it need no store).
    let r = open.post("/api/agents/send", &send("erin")).await;
    assert_eq!(r.status, 200, "fail-open proceeds: {}", r.text);
    assert_eq!(metric(&open, "wombat_limits_fail_open_total").await, 1);
    assert!(metric(&open, "wombat_limits_store_errors_total").await >= 1);
    let r = closed.post("/api/agents/send", &send("erin")).await;
    r.assert_error(503, "limits_unavailable");
    assert_eq!(
        metric(
            &closed,
            "wombat_limits_rejected_total{reason=\"store_unavailable\"}"
        )
        .await,
        1
    );
    open.get("/usage")
        .await
        .assert_error(503, "usage_unavailable");
    // The LLM was not called for the refused request.
    assert_eq!(closed.llm.requests().len(), 1);

    redis.restart();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = closed.post("/api/agents/send", &send("erin")).await;
        if r.status == 200 {
            break;
        }
        r.assert_error(503, "limits_unavailable");
        assert!(std::time::Instant::now() < until, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open.get("/usage").await.status, 200);
}

#[tokio::test]
async fn soft_limit_warns_in_the_response_the_stream_and_the_webhook() {
    // No Redis: the in-memory store.
    let h = setup().start().await;
    let limits = json!({"budget_usd_day": 1.0, "soft_percent": 0.1});
    let mut b = body("erin", limits.clone());
    b["webhook"] = json!({"url": h.hooks.url});
    let r = h.post("/api/agents/send", &b).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let w = &v["budget_warning"];
    assert_eq!(w["period"], "day", "{v}");
    assert_eq!(w["limit"], 1.0);
    assert_eq!(w["soft_percent"], 0.1);
    assert!(micros(&w["spent"]) > 0);
    let hooks = h.hooks.wait(1).await;
    assert_eq!(hooks[0].json()["budget_warning"], *w);
    let events = h
        .sse("/api/agents/stream", &body("erin", limits))
        .await
        .rest()
        .await;
    let (_, done) = events.iter().find(|(e, _)| e == "done").expect("done");
    assert_eq!(done["budget_warning"]["period"], "day", "{done}");
    // Below the threshold, or with no limits: no key at all.
    let r = h
        .post(
            "/api/agents/send",
            &body("erin", json!({"budget_usd_day": 1.0, "soft_percent": 90})),
        )
        .await;
    assert!(r.json().get("budget_warning").is_none(), "{}", r.text);
    let r = h
        .post(
            "/api/agents/send",
            &send_body("erin", json!({"task_title": "T"})),
        )
        .await;
    assert!(r.json().get("budget_warning").is_none(), "{}", r.text);
    assert!(h.get("/usage").await.json().get("byDay").is_none());
}

#[tokio::test]
async fn in_memory_default_budget_and_bad_limits() {
    let h = setup().env("WOMBAT_BUDGET_USD_DAY", "0.0001").start().await;
    let send = send_body("frank", json!({"task_title": "T"}));
    assert_eq!(h.post("/api/agents/send", &send).await.status, 200);
    h.post("/api/agents/send", &send)
        .await
        .assert_error(429, "budget_exceeded");
    h.post("/api/agents/stream", &send)
        .await
        .assert_error(429, "budget_exceeded");
    assert_eq!(h.llm.requests().len(), 1, "refused before any LLM call");
    for (limits, needle) in [
        (json!({"rpm": "ten"}), "metadata.limits.rpm"),
        (
            json!({"budget_usd_day": -1}),
            "metadata.limits.budget_usd_day",
        ),
        (json!({"concurrency": 0}), "metadata.limits.concurrency"),
        (json!({"soft_percent": 150}), "metadata.limits.soft_percent"),
        (json!({"rmp": 1}), "metadata.limits.rmp"),
        (json!(5), "metadata.limits must be an object"),
    ] {
        let r = h.post("/api/agents/send", &body("gina", limits)).await;
        let v = r.assert_error(400, "invalid_request");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{v}"
        );
    }
}

#[tokio::test]
async fn per_user_concurrency() {
    let h = std::sync::Arc::new(setup().env("WOMBAT_USER_CONCURRENCY", "1").start().await);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    h.llm.script([Reply::text("slow").held(release.clone())]);
    let first = tokio::spawn({
        let h = h.clone();
        async move {
            h.post(
                "/api/agents/send",
                &send_body("hank", json!({"task_title": "T"})),
            )
            .await
        }
    });
    h.llm.wait_requests(1).await;
    let r = h
        .post(
            "/api/agents/send",
            &send_body("hank", json!({"task_title": "T"})),
        )
        .await;
    let v = r.assert_error(429, "concurrency_limited");
    assert_eq!(v["details"]["concurrency"], 1);
    // Another user is not held up.
    let r = h
        .post(
            "/api/agents/send",
            &send_body("ivy", json!({"task_title": "T"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    release.notify_one();
    let r = crate::support::patiently("the held send", first)
        .await
        .expect("joined");
    assert_eq!(r.status, 200, "{}", r.text);
    // Settled: the slot is free again.
    let r = h
        .post(
            "/api/agents/send",
            &send_body("hank", json!({"task_title": "T"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
