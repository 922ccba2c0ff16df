//! The governor with Redis going away and coming back.

use std::time::Duration;

use wombat_governance::{Call, Estimate, FailMode, Governor, GovernorConfig, Limits, Refused};

use crate::redis_server::RedisServer;

fn config(mode: FailMode) -> GovernorConfig {
    GovernorConfig {
        defaults: Limits::default(),
        timezone: jiff::tz::TimeZone::UTC,
        on_store_error: mode,
        store_timeout: Duration::from_millis(500),
        lease_ttl: Duration::from_secs(60),
    }
}

fn limits() -> Limits {
    Limits {
        budget_day_micros: Some(1_000_000),
        soft_percent: Some(50.0),
        ..Limits::default()
    }
}

async fn admit(g: &Governor) -> Result<wombat_governance::Admitted, Refused> {
    tokio::time::timeout(
        Duration::from_secs(10),
        g.admit("alice", &limits(), Estimate::default()),
    )
    .await
    .expect("admission never hangs")
}

#[tokio::test]
async fn store_outage_fails_open_or_closed_and_recovers() {
    let mut redis = RedisServer::start();
    let open = Governor::redis(&redis.url(), config(FailMode::Open)).expect("url");
    let closed = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    for g in [&open, &closed] {
        let a = admit(g).await.expect("admitted");
        g.settle(a, 400_000, 10).await;
    }
    // Both governors see the spend of both (one Redis): a warning past 50%.
    let a = admit(&open).await.expect("admitted");
    let w = a.warning.clone().expect("soft limit crossed");
    assert_eq!(w.spent_micros, 800_000);
    open.settle(a, 400_000, 0).await;
    assert!(matches!(admit(&closed).await, Err(Refused::Budget { .. })));

    redis.kill();
    let a = admit(&open)
        .await
        .expect("fail-open lets the request through");
    assert!(a.warning.is_none());
    open.settle(a, 5, 5).await;
    assert_eq!(
        open.metrics()
            .fail_open
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        open.metrics()
            .store_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert_eq!(
        admit(&closed).await.expect_err("fail-closed"),
        Refused::Unavailable
    );
    assert!(open.usage(None, 3).await.is_err());

    // A new server on the same port (empty: no persistence): recovery.
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match admit(&closed).await {
            Ok(a) => {
                closed.settle(a, 0, 0).await;
                break;
            }
            Err(Refused::Unavailable) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("did not recover: {e:?}"),
        }
    }
}

#[tokio::test]
async fn a_store_that_was_never_up_fails_open_without_hanging() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let g = Governor::redis(&url, config(FailMode::Open)).expect("url");
    let a = admit(&g).await.expect("fail-open");
    g.settle(a, 1, 1).await;
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while g
        .metrics()
        .admitted
        .load(std::sync::atomic::Ordering::Relaxed)
        == g.metrics()
            .fail_open
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        assert!(std::time::Instant::now() < deadline, "never reconnected");
        let a = admit(&g).await.expect("admitted");
        g.settle(a, 0, 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn estimates_price_the_prompt_and_the_output_cap() {
    let pricing = wombat_core::PricingTable::builtin();
    let e = Estimate::of_call(&pricing, "gpt-4o-mini", 1_000_000, 1_000_000);
    // gpt-4o-mini: $0.15 in, $0.60 out per million tokens.
    assert_eq!((e.cost_micros, e.prompt_tokens), (750_000, 1_000_000));
    assert_eq!(
        Estimate::of_call(&pricing, "no-such-model", 10, 10).cost_micros,
        0
    );
}

fn relaxed(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

fn call(user: &str, cost_micros: u64) -> Call<'_> {
    Call {
        user,
        model: "gpt-4o-mini",
        input: 10,
        output: 5,
        total: 15,
        cost_micros,
        estimated: false,
    }
}

/// Polls `g`'s ledger until `user` has `requests` calls (bounded).
async fn wait_for_requests(g: &Governor, user: &str, requests: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let u = g.usage(Some(user), 1).await.expect("usage");
        if u.totals.requests == requests {
            return;
        }
        assert!(
            u.totals.requests < requests,
            "more calls than made: {:?}",
            u.totals
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the ledger never reached {requests} calls: {:?}",
            u.totals
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn background_settlements_reach_the_other_replicas_after_a_bounded_flush() {
    let redis = RedisServer::start();
    let a = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    let b = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    let admitted = admit(&a).await.expect("admitted");
    a.settle_and_record(Some(admitted), &call("alice", 600_000))
        .await;
    assert_eq!(relaxed(&a.metrics().settle_queued), 1);
    assert_eq!(relaxed(&a.metrics().settle_inline), 0);
    // The other replica sees the spend once the queue is written.
    assert!(a.flush(Duration::from_secs(10)).await, "flushed in time");
    let w = admit(&b)
        .await
        .expect("admitted")
        .warning
        .clone()
        .expect("past the soft limit");
    assert_eq!(w.spent_micros, 600_000);
    let u = b.usage(Some("alice"), 1).await.expect("usage");
    assert_eq!((u.totals.requests, u.totals.cost_micros), (1, 600_000));
    assert_eq!(relaxed(&a.metrics().store_errors), 0);
}

#[tokio::test]
async fn a_replica_reads_its_own_settlements_and_frees_the_slot_first() {
    // On this single-threaded runtime the background writer runs only when
    // the test waits: without the ordering the governor guarantees, the
    // next admission or usage read would reach Redis before the queued
    // settlement and see the slot still taken and the call missing.
    let redis = RedisServer::start();
    let g = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    let one_at_a_time = Limits {
        concurrency: Some(1),
        ..limits()
    };
    for i in 1..=3 {
        let a = g
            .admit("erin", &one_at_a_time, Estimate::default())
            .await
            .unwrap_or_else(|e| panic!("call {i} refused: {e:?}"));
        g.settle_and_record(Some(a), &call("erin", 1)).await;
    }
    let u = g.usage(Some("erin"), 1).await.expect("usage");
    assert_eq!(u.totals.requests, 3);
    assert_eq!(relaxed(&g.metrics().settle_queued), 3);
}

#[tokio::test]
async fn a_full_queue_settles_inline_and_loses_nothing() {
    let redis = RedisServer::start();
    let g = Governor::redis(&redis.url(), config(FailMode::Closed))
        .expect("url")
        .with_settle_queue(1);
    let other = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    let (first, second) = (
        admit(&g).await.expect("admitted"),
        admit(&g).await.expect("admitted"),
    );
    // The writer has not run yet (single-threaded runtime, no await in
    // between): the first call fills the queue, the second settles inline.
    g.settle_and_record(Some(first), &call("alice", 300_000))
        .await;
    g.settle_and_record(Some(second), &call("alice", 300_000))
        .await;
    assert_eq!(relaxed(&g.metrics().settle_queued), 1);
    assert_eq!(relaxed(&g.metrics().settle_inline), 1);
    assert!(g.flush(Duration::from_secs(10)).await);
    let w = admit(&other)
        .await
        .expect("admitted")
        .warning
        .clone()
        .expect("past the soft limit");
    assert_eq!(w.spent_micros, 600_000, "both settled, nothing reserved");
    wait_for_requests(&other, "alice", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_what_is_queued() {
    let redis = RedisServer::start();
    let reader = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    // Flushed explicitly, as the daemon does after its last request.
    let g = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    for _ in 0..500 {
        g.settle_and_record(None, &call("frank", 1)).await;
    }
    assert!(g.flush(Duration::from_secs(20)).await, "flushed in time");
    assert_eq!(
        reader
            .usage(Some("frank"), 1)
            .await
            .expect("usage")
            .totals
            .requests,
        500
    );
    assert_eq!(relaxed(&g.metrics().store_errors), 0);
    // Dropped with a queue: the writer finishes it.
    let g = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    for _ in 0..500 {
        g.settle_and_record(None, &call("gina", 1)).await;
    }
    drop(g);
    wait_for_requests(&reader, "gina", 500).await;
}

#[tokio::test]
async fn a_flush_with_the_store_down_is_bounded() {
    let mut redis = RedisServer::start();
    let g = Governor::redis(&redis.url(), config(FailMode::Open)).expect("url");
    redis.kill();
    g.settle_and_record(None, &call("hal", 1)).await;
    // The store call fails (or times out) and is counted; the flush ends.
    let flushed = tokio::time::timeout(Duration::from_secs(20), g.flush(Duration::from_secs(10)))
        .await
        .expect("flush is bounded");
    assert!(flushed, "a failed write still finishes the queue");
    assert!(relaxed(&g.metrics().store_errors) >= 1);
}

#[tokio::test]
async fn background_settlements_reload_scripts_the_server_forgot() {
    let redis = RedisServer::start();
    let g = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    g.settle_and_record(None, &call("iris", 1)).await;
    assert!(g.flush(Duration::from_secs(10)).await);
    // As after a restart: the server no longer knows the scripts.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("script flush");
    for _ in 0..3 {
        g.settle_and_record(None, &call("iris", 1)).await;
    }
    assert!(g.flush(Duration::from_secs(10)).await);
    assert_eq!(relaxed(&g.metrics().store_errors), 0);
    wait_for_requests(&g, "iris", 4).await;
}

fn rpm(n: u32) -> Limits {
    Limits {
        rpm: Some(n),
        ..Limits::default()
    }
}

#[tokio::test]
async fn replicas_admit_from_grants_and_the_rate_holds_across_them() {
    let redis = RedisServer::start();
    let a = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    let b = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    // 160 a minute: the first admission takes 10 (1/16 of the headroom),
    // the next 9 need no round trip.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(
            a.admit("alice", &rpm(160), Estimate::default())
                .await
                .expect("admitted"),
        );
    }
    assert_eq!(relaxed(&a.metrics().admitted_local), 9);
    held.push(
        a.admit("alice", &rpm(160), Estimate::default())
            .await
            .expect("admitted"),
    );
    assert_eq!(relaxed(&a.metrics().admitted_local), 9, "a new grant");
    // Spread over both replicas, never more than the limit in the minute.
    let mut admitted = 11;
    for i in 0..400 {
        let g = if i % 2 == 0 { &b } else { &a };
        if let Ok(x) = g.admit("alice", &rpm(160), Estimate::default()).await {
            admitted += 1;
            held.push(x);
        }
    }
    assert!(admitted <= 160, "{admitted} admitted");
    // Grants near the limit are of one request: nearly all of it is usable.
    assert!(admitted >= 158, "only {admitted} admitted");
    for x in held {
        a.settle_and_record(Some(x), &call("alice", 0)).await;
    }
    assert!(a.flush(Duration::from_secs(10)).await);
    assert!(b.flush(Duration::from_secs(10)).await);
    assert_eq!(
        relaxed(&a.metrics().store_errors) + relaxed(&b.metrics().store_errors),
        0
    );
}

#[tokio::test]
async fn an_unused_grant_goes_back_after_its_time_with_a_call_still_in_flight() {
    let redis = RedisServer::start();
    let a = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    let b = Governor::redis(&redis.url(), config(FailMode::Closed)).expect("url");
    // 320 a minute: a takes 20 and uses one.
    let x = a
        .admit("alice", &rpm(320), Estimate::default())
        .await
        .expect("admitted");
    // Past the grant's time the background writer gives back the 19 unused,
    // though the one call is still in flight (its lease stays for it).
    // The bucket drains 320 a minute: after 2.5 s it is empty if they came
    // back (b's grant: 1/16 of 320, 20), at ~6.7 if not (1/16 of 313, 19).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let y = b
        .admit("alice", &rpm(320), Estimate::default())
        .await
        .expect("admitted");
    let mut held = Vec::new();
    for _ in 0..19 {
        held.push(
            b.admit("alice", &rpm(320), Estimate::default())
                .await
                .expect("admitted"),
        );
    }
    assert_eq!(relaxed(&b.metrics().admitted_local), 19);
    held.push(
        b.admit("alice", &rpm(320), Estimate::default())
            .await
            .expect("admitted"),
    );
    assert_eq!(
        relaxed(&b.metrics().admitted_local),
        19,
        "the 21st takes a new grant"
    );
    held.push(y);
    held.push(x);
    for x in held {
        b.settle_and_record(Some(x), &call("alice", 0)).await;
    }
}
