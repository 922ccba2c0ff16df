//! The governor with Redis going away and coming back.

use std::time::Duration;

use wombat_governance::{Estimate, FailMode, Governor, GovernorConfig, Limits, Refused};

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
