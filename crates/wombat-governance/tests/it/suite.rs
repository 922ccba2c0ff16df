//! One suite, two stores: every test runs against [`MemoryStore`] and a
//! [`RedisStore`] on a real `redis-server`.

use std::time::Duration;

use wombat_governance::{
    Admission, AdmitRequest, Limits, MemoryStore, PeriodKind, Periods, RateKind, RedisStore,
    Refusal, SettleRequest, Settlement, Store, UsageRecord,
};

use crate::redis_server::RedisServer;

fn periods(day: &str) -> Periods {
    let ts: jiff::Timestamp = format!("{day}T12:00:00Z").parse().expect("ts");
    Periods::at(ts, &jiff::tz::TimeZone::UTC)
}

struct Call<'a> {
    user: &'a str,
    lease: &'a str,
    reserve: u64,
    tokens: u64,
    units: u32,
    limits: Limits,
    periods: Periods,
    ttl: Duration,
}

fn call<'a>(user: &'a str, lease: &'a str, limits: Limits) -> Call<'a> {
    Call {
        user,
        lease,
        reserve: 0,
        tokens: 0,
        units: 1,
        limits,
        periods: periods("2026-12-01"),
        ttl: Duration::from_secs(60),
    }
}

async fn admit(store: &dyn Store, c: &Call<'_>) -> Admission {
    store
        .admit(&AdmitRequest {
            user: c.user,
            lease: c.lease,
            lease_ttl: c.ttl,
            reserve_micros: c.reserve,
            tokens: c.tokens,
            units: c.units,
            limits: &c.limits,
            periods: &c.periods,
            day_ttl_secs: 90_000,
            month_ttl_secs: 3_000_000,
        })
        .await
        .expect("store answers")
}

async fn settle(store: &dyn Store, c: &Call<'_>, cost: u64, delta: i64) {
    settle_unit(store, c, cost, delta, Some(0)).await;
}

/// Settles one request of `c`'s grant; `release` ends the grant with that
/// many requests unused.
async fn settle_unit(store: &dyn Store, c: &Call<'_>, cost: u64, delta: i64, release: Option<u32>) {
    store
        .settle(&SettleRequest {
            user: c.user,
            lease: c.lease,
            cost_micros: cost,
            token_delta: delta,
            unit_micros: c.reserve,
            release: release.is_some(),
            unused_units: release.unwrap_or(0),
            rpm: c.limits.rpm,
            tpm: c.limits.tpm,
            periods: &c.periods,
            day_ttl_secs: 90_000,
            month_ttl_secs: 3_000_000,
        })
        .await
        .expect("store answers");
}

fn admitted(a: &Admission) -> bool {
    matches!(a, Admission::Admitted { .. })
}

/// A fresh store of each kind; the Redis server lives as long as the guard.
fn stores() -> Vec<(Box<dyn Store>, Option<RedisServer>)> {
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url()).expect("url");
    vec![
        (Box::new(MemoryStore::new()), None),
        (Box::new(store), Some(redis)),
    ]
}

#[tokio::test]
async fn budget_admits_while_spend_plus_reservations_is_below_the_limit() {
    for (store, _redis) in stores() {
        let store = &*store;
        let limits = Limits {
            budget_day_micros: Some(1000),
            ..Limits::default()
        };
        let mut calls: Vec<Call<'_>> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|l| Call {
                reserve: 400,
                ..call("alice", l, limits)
            })
            .collect();
        // 0, 400, 800 reserved: admitted; 1200: refused.
        for c in &calls[..3] {
            assert!(admitted(&admit(store, c).await));
        }
        assert_eq!(
            admit(store, &calls[3]).await,
            Admission::Refused(Refusal::Budget {
                period: PeriodKind::Day,
                limit_micros: 1000,
                spent_micros: 0,
                reserved_micros: 1200,
            })
        );
        // Another user is not affected.
        assert!(admitted(&admit(store, &call("bob", "x", limits)).await));
        for c in &calls[..3] {
            settle(store, c, 300, 0).await;
        }
        // 900 spent, nothing reserved: one more.
        assert_eq!(
            admit(store, &calls[3]).await,
            Admission::Admitted {
                day_spent_micros: 900,
                month_spent_micros: 900,
                reserved_micros: 400,
                units: 1,
            }
        );
        settle(store, &calls[3], 300, 0).await;
        calls[0].lease = "e";
        let Admission::Refused(Refusal::Budget { spent_micros, .. }) =
            admit(store, &calls[0]).await
        else {
            panic!("over budget")
        };
        assert_eq!(spent_micros, 1200);
        // The next day starts from zero; the month does not.
        let tomorrow = Call {
            periods: periods("2026-12-02"),
            ..call("alice", "f", limits)
        };
        assert!(admitted(&admit(store, &tomorrow).await));
        let monthly = Call {
            periods: periods("2026-12-02"),
            ..call(
                "alice",
                "g",
                Limits {
                    budget_month_micros: Some(1200),
                    ..Limits::default()
                },
            )
        };
        assert!(matches!(
            admit(store, &monthly).await,
            Admission::Refused(Refusal::Budget {
                period: PeriodKind::Month,
                ..
            })
        ));
    }
}

#[tokio::test]
async fn requests_per_minute() {
    for (store, _redis) in stores() {
        let store = &*store;
        let limits = Limits {
            rpm: Some(3),
            ..Limits::default()
        };
        for lease in ["1", "2", "3"] {
            assert!(admitted(&admit(store, &call("alice", lease, limits)).await));
        }
        let Admission::Refused(Refusal::Rate { kind, retry_after }) =
            admit(store, &call("alice", "4", limits)).await
        else {
            panic!("over rate")
        };
        assert_eq!(kind, RateKind::Requests);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
        assert!(admitted(&admit(store, &call("bob", "5", limits)).await));
        // A bigger plan: judged by the 3 requests really made, not the old rate.
        let bigger = Limits {
            rpm: Some(1000),
            ..Limits::default()
        };
        assert!(admitted(&admit(store, &call("alice", "6", bigger)).await));
    }
}

#[tokio::test]
async fn tokens_per_minute_are_charged_and_corrected() {
    for (store, _redis) in stores() {
        let store = &*store;
        let limits = Limits {
            tpm: Some(1000),
            ..Limits::default()
        };
        let first = Call {
            tokens: 600,
            ..call("alice", "1", limits)
        };
        assert!(admitted(&admit(store, &first).await));
        let second = Call {
            tokens: 600,
            ..call("alice", "2", limits)
        };
        assert!(admitted(&admit(store, &second).await));
        let third = Call {
            tokens: 10,
            ..call("alice", "3", limits)
        };
        let Admission::Refused(Refusal::Rate { kind, .. }) = admit(store, &third).await else {
            panic!("over tokens")
        };
        assert_eq!(kind, RateKind::Tokens);
        // The calls used fewer tokens than charged: capacity comes back.
        settle(store, &first, 0, -500).await;
        settle(store, &second, 0, -500).await;
        assert!(admitted(&admit(store, &third).await));
    }
}

#[tokio::test]
async fn concurrency_and_lease_expiry() {
    for (store, _redis) in stores() {
        let store = &*store;
        let limits = Limits {
            concurrency: Some(2),
            ..Limits::default()
        };
        let a = call("alice", "a", limits);
        assert!(admitted(&admit(store, &a).await));
        assert!(admitted(&admit(store, &call("alice", "b", limits)).await));
        assert_eq!(
            admit(store, &call("alice", "c", limits)).await,
            Admission::Refused(Refusal::Concurrency { limit: 2 })
        );
        settle(store, &a, 0, 0).await;
        assert!(admitted(&admit(store, &call("alice", "c", limits)).await));
        // A lease nobody settles (a replica died) frees itself.
        let one = Limits {
            concurrency: Some(1),
            ..Limits::default()
        };
        let lost = Call {
            ttl: Duration::from_millis(100),
            ..call("carol", "lost", one)
        };
        assert!(admitted(&admit(store, &lost).await));
        assert!(!admitted(&admit(store, &call("carol", "next", one)).await));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(admitted(&admit(store, &call("carol", "next", one)).await));
    }
}

#[tokio::test]
async fn usage_ledger() {
    for (store, _redis) in stores() {
        let store = &*store;
        let rec =
            |user: &'static str, model: &'static str, day: &'static str, estimated| UsageRecord {
                user,
                model,
                input: 100,
                output: 10,
                total: 110,
                cost_micros: 7,
                estimated,
                day,
            };
        for r in [
            rec("alice", "gpt-4o", "2026-11-30", false),
            rec("alice", "gpt-4o-mini", "2026-12-01", false),
            rec("bob", "gpt-4o", "2026-12-01", true),
        ] {
            store.record(&r).await.expect("recorded");
        }
        let days: Vec<String> = ["2026-11-29", "2026-11-30", "2026-12-01"]
            .map(String::from)
            .to_vec();
        let all = store.usage(None, &days).await.expect("usage");
        assert_eq!(all.totals.requests, 3);
        assert_eq!(all.totals.estimated, 1);
        assert_eq!((all.totals.input, all.totals.cost_micros), (300, 21));
        assert_eq!(all.by_model["gpt-4o"].requests, 2);
        assert_eq!(all.by_model["gpt-4o-mini"].total, 110);
        let by_user = all.by_user.expect("by user");
        assert_eq!((by_user["alice"].requests, by_user["bob"].requests), (2, 1));
        let series: Vec<(&str, u64)> = all
            .by_day
            .iter()
            .map(|(d, t)| (d.as_str(), t.requests))
            .collect();
        assert_eq!(series, [("2026-11-30", 1), ("2026-12-01", 2)]);
        let alice = store.usage(Some("alice"), &days).await.expect("usage");
        assert_eq!(alice.totals.requests, 2);
        assert!(alice.by_user.is_none());
        assert_eq!(alice.by_model.len(), 2);
        assert_eq!(alice.by_day.len(), 2);
        let nobody = store.usage(Some("nobody"), &days).await.expect("usage");
        assert_eq!(nobody.totals.requests, 0);
    }
}

#[tokio::test]
async fn settle_and_record_in_one_step() {
    for (store, _redis) in stores() {
        let store = &*store;
        let limits = Limits {
            budget_day_micros: Some(100),
            concurrency: Some(1),
            ..Limits::default()
        };
        let c = Call {
            reserve: 10,
            ..call("alice", "a", limits)
        };
        assert!(admitted(&admit(store, &c).await));
        let rec = UsageRecord {
            user: "alice",
            model: "gpt-4o",
            input: 5,
            output: 5,
            total: 10,
            cost_micros: 100,
            estimated: false,
            day: "2026-12-01",
        };
        let settle = SettleRequest {
            user: "alice",
            lease: "a",
            cost_micros: 100,
            token_delta: 0,
            unit_micros: 10,
            release: true,
            unused_units: 0,
            rpm: None,
            tpm: None,
            periods: &c.periods,
            day_ttl_secs: 90_000,
            month_ttl_secs: 3_000_000,
        };
        store
            .settle_and_record(Some(&settle), &rec)
            .await
            .expect("store answers");
        // Settled (the lease is free, the budget spent) and recorded.
        let Admission::Refused(Refusal::Budget { spent_micros, .. }) =
            admit(store, &call("alice", "b", limits)).await
        else {
            panic!("over budget")
        };
        assert_eq!(spent_micros, 100);
        store
            .settle_and_record(None, &UsageRecord { user: "bob", ..rec })
            .await
            .expect("store answers");
        let all = store.usage(None, &[]).await.expect("usage");
        assert_eq!(all.totals.requests, 2);
        assert_eq!(all.by_user.expect("by user").len(), 2);
    }
}

fn units(a: &Admission) -> u32 {
    match a {
        Admission::Admitted { units, .. } => *units,
        Admission::Refused(r) => panic!("refused: {r:?}"),
    }
}

#[tokio::test]
async fn grants_take_a_sixteenth_of_the_headroom_and_give_back_what_is_unused() {
    for (store, _redis) in stores() {
        let store = &*store;
        let grant = |lease, limits| Call {
            units: 64,
            ..call("alice", lease, limits)
        };
        // Requests per minute: 160 left, a grant takes 10 of them.
        let rpm = Limits {
            rpm: Some(160),
            ..Limits::default()
        };
        let first = grant("r1", rpm);
        assert_eq!(units(&admit(store, &first).await), 10);
        // Given back unused: the next grant finds the same headroom.
        settle_unit(store, &first, 0, 0, Some(10)).await;
        let second = grant("r2", rpm);
        assert_eq!(units(&admit(store, &second).await), 10);
        // Not given back: 150 left, 9 granted.
        assert_eq!(units(&admit(store, &grant("r3", rpm)).await), 9);
        // Near the limit, one request at a time; never more than asked.
        let tight = Limits {
            rpm: Some(3),
            ..Limits::default()
        };
        let t1 = Call {
            units: 64,
            ..call("dave", "t1", tight)
        };
        assert_eq!(units(&admit(store, &t1).await), 1);
        assert_eq!(units(&admit(store, &call("carol", "c1", rpm)).await), 1);

        // Budget: 1,600 left at 10 per request: 10 requests, 100 reserved.
        let budget = Limits {
            budget_day_micros: Some(1600),
            ..Limits::default()
        };
        let b = Call {
            reserve: 10,
            ..grant("b1", budget)
        };
        let Admission::Admitted {
            reserved_micros,
            units: n,
            ..
        } = admit(store, &b).await
        else {
            panic!("admitted")
        };
        assert_eq!((n, reserved_micros), (10, 100));
        // One request settled: its 10 leave the reservation, its cost is spent.
        settle_unit(store, &b, 5, 0, None).await;
        let probe = Call {
            reserve: 10,
            ..call("alice", "b2", budget)
        };
        let Admission::Admitted {
            day_spent_micros,
            reserved_micros,
            ..
        } = admit(store, &probe).await
        else {
            panic!("admitted")
        };
        assert_eq!((day_spent_micros, reserved_micros), (5, 100));
        // The grant ends with 9 unused: only the probe is reserved now.
        settle_unit(store, &b, 0, 0, Some(9)).await;
        let Admission::Admitted {
            reserved_micros, ..
        } = admit(
            store,
            &Call {
                reserve: 0,
                ..call("alice", "b3", budget)
            },
        )
        .await
        else {
            panic!("admitted")
        };
        assert_eq!(reserved_micros, 10);

        // A request that reserves nothing against a budget is granted alone.
        assert_eq!(units(&admit(store, &grant("b4", budget)).await), 1);
        // Tokens per minute: 10,000 left at 100 per request: 6 requests.
        let tpm = Limits {
            tpm: Some(10_000),
            ..Limits::default()
        };
        let t = Call {
            tokens: 100,
            ..grant("k1", tpm)
        };
        assert_eq!(units(&admit(store, &t).await), 6);
        // A concurrency limit counts leases: one request per lease.
        let conc = Limits {
            concurrency: Some(100),
            ..Limits::default()
        };
        assert_eq!(units(&admit(store, &grant("n1", conc)).await), 1);
        // No limit bounds it: the whole grant.
        assert_eq!(
            units(
                &admit(
                    store,
                    &grant(
                        "u1",
                        Limits {
                            rpm: Some(1_000_000_000),
                            ..Limits::default()
                        }
                    )
                )
                .await
            ),
            64
        );
    }
}

#[tokio::test]
async fn a_batch_of_settlements_adds_up_like_one_by_one() {
    for (store, _redis) in stores() {
        let store = &*store;
        let limits = Limits {
            budget_day_micros: Some(16_000),
            ..Limits::default()
        };
        // A grant of 10 requests at 100 each (1,000 reserved).
        let g = Call {
            reserve: 100,
            units: 64,
            ..call("alice", "g", limits)
        };
        let Admission::Admitted { units: 10, .. } = admit(store, &g).await else {
            panic!("a grant of 10")
        };
        let settle = |cost, release: Option<u32>| SettleRequest {
            user: "alice",
            lease: "g",
            cost_micros: cost,
            token_delta: 0,
            unit_micros: 100,
            release: release.is_some(),
            unused_units: release.unwrap_or(0),
            rpm: None,
            tpm: None,
            periods: &g.periods,
            day_ttl_secs: 90_000,
            month_ttl_secs: 3_000_000,
        };
        let rec = |user, model, estimated| UsageRecord {
            user,
            model,
            input: 10,
            output: 5,
            total: 15,
            cost_micros: 7,
            estimated,
            day: "2026-12-01",
        };
        // Three requests of the grant settled, the last one ending it with
        // 7 unused; four ledger records of two users and two models.
        let batch = [
            Settlement {
                settle: Some(settle(40, None)),
                record: Some(rec("alice", "m1", false)),
            },
            Settlement {
                settle: Some(settle(50, None)),
                record: Some(rec("alice", "m1", true)),
            },
            Settlement {
                settle: None,
                record: Some(rec("bob", "m1", false)),
            },
            Settlement {
                settle: Some(settle(60, Some(7))),
                record: Some(rec("alice", "m2", false)),
            },
        ];
        store.settle_many(&batch).await.expect("store answers");
        // Spent 150; the grant's reservation is gone.
        let Admission::Admitted {
            day_spent_micros,
            reserved_micros,
            ..
        } = admit(store, &call("alice", "next", limits)).await
        else {
            panic!("admitted")
        };
        assert_eq!((day_spent_micros, reserved_micros), (150, 0));
        let all = store
            .usage(None, &["2026-12-01".into()])
            .await
            .expect("usage");
        assert_eq!(
            (
                all.totals.requests,
                all.totals.estimated,
                all.totals.cost_micros
            ),
            (4, 1, 28)
        );
        assert_eq!(all.by_model["m1"].requests, 3);
        assert_eq!(all.by_model["m1"].estimated, 1);
        assert_eq!(all.by_model["m2"].input, 10);
        let users = all.by_user.expect("by user");
        assert_eq!((users["alice"].requests, users["bob"].requests), (3, 1));
        assert_eq!(all.by_day[0].1.total, 60);
        let alice = store
            .usage(Some("alice"), &["2026-12-01".into()])
            .await
            .expect("usage");
        assert_eq!(
            (alice.totals.requests, alice.by_model["m1"].output),
            (3, 10)
        );
    }
}
