//! The ledger script against a real Redis server: the same replies as the
//! reference `LeasePool` for random exchanges of several instances, one
//! round trip per exchange, the data layout and its expiry, the server's
//! clock, a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tollgate_redis::testing::{RedisServer, ServerOptions};
use tollgate_redis::{KEY_GRACE, Redis, RedisLedger};
use tollgate_rules::engine::lease::{LeasePool, LeaseReply, LeaseRequest, LeaseWindow};
use tollgate_rules::engine::ledger::CounterKey;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn ledger(server: &RedisServer) -> RedisLedger {
    let redis = Redis::connect(&server.config())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    RedisLedger::new(redis)
}

fn calendar(ends_at_ms: i64) -> LeaseWindow {
    LeaseWindow {
        rolling: false,
        bucket_nanos: 0,
        ends_at: ends_at_ms * 1_000_000,
    }
}

fn request(key: CounterKey, window: LeaseWindow, limit: Option<u64>, want: u64) -> LeaseRequest {
    LeaseRequest {
        key,
        window,
        limit,
        now_bucket: 0,
        from_hold: Vec::new(),
        direct: Vec::new(),
        give_back: 0,
        want,
    }
}

/// One request of a scenario, relative to the scenario's start.
#[derive(Debug, Clone)]
struct Step {
    instance: usize,
    /// Milliseconds after the previous step.
    advance_ms: i64,
    /// Which counters (0: a calendar window, 1: a rolling one) and what.
    requests: Vec<StepRequest>,
}

#[derive(Debug, Clone)]
struct StepRequest {
    counter: usize,
    limit: Option<u64>,
    /// Buckets before "now" of the spend reported (rolling windows).
    from_hold: Vec<(i64, u64)>,
    direct: Vec<(i64, u64)>,
    give_back: u64,
    want: u64,
}

fn step_request() -> impl Strategy<Value = StepRequest> {
    let spend = || prop::collection::vec((0i64..70, 0u64..400), 0..3);
    (
        0usize..2,
        prop_oneof![1 => Just(None), 7 => (0u64..3_000).prop_map(Some)],
        spend(),
        spend(),
        prop_oneof![2 => Just(0u64), 1 => 0u64..600],
        prop_oneof![1 => Just(0u64), 3 => 0u64..900],
    )
        .prop_map(
            |(counter, limit, from_hold, direct, give_back, want)| StepRequest {
                counter,
                limit,
                from_hold,
                direct,
                give_back,
                want,
            },
        )
}

fn scenario() -> impl Strategy<Value = Vec<Step>> {
    let step = (
        0usize..3,
        prop_oneof![2 => 0i64..1_500, 1 => 1_500i64..6_000],
        prop::collection::vec(step_request(), 1..4),
    )
        .prop_map(|(instance, advance_ms, requests)| Step {
            instance,
            advance_ms,
            requests,
        });
    prop::collection::vec(step, 1..40)
}

/// Runs `steps` against Redis (at chosen server times) and the reference
/// pool; every reply must be the same.
async fn same_replies(
    ledger: &RedisLedger,
    rule: u64,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    const TTL_MS: i64 = 3_000;
    // Rolling buckets of one second; times near the real clock, so that
    // the keys' expiry (from the window's end) is in the future.
    let start_ms = unix_ms();
    let keys = [
        CounterKey {
            rule,
            scope: 7,
            window_start: start_ms * 1_000_000,
        },
        CounterKey {
            rule,
            scope: 8,
            window_start: 0,
        },
    ];
    let instances = ["gw-a", "gw-b", "gw:c"];
    let mut pool = LeasePool::new();
    let mut now_ms = start_ms;
    for (n, step) in steps.iter().enumerate() {
        now_ms += step.advance_ms;
        let now_bucket = now_ms.div_euclid(1_000);
        let requests: Vec<LeaseRequest> = step
            .requests
            .iter()
            .map(|r| {
                let rolling = r.counter == 1;
                let window = LeaseWindow {
                    rolling,
                    bucket_nanos: if rolling { 1_000_000_000 } else { 0 },
                    ends_at: (now_ms + 3_600_000) * 1_000_000,
                };
                let bucket = |back: i64| if rolling { now_bucket - back } else { 0 };
                LeaseRequest {
                    key: keys[r.counter],
                    window,
                    limit: r.limit,
                    now_bucket: if rolling { now_bucket } else { 0 },
                    from_hold: r.from_hold.iter().map(|(b, a)| (bucket(*b), *a)).collect(),
                    direct: r.direct.iter().map(|(b, a)| (bucket(*b), *a)).collect(),
                    give_back: r.give_back,
                    want: r.want,
                }
            })
            .collect();
        let instance = instances[step.instance];
        let expected: Vec<LeaseReply> = requests
            .iter()
            .map(|r| pool.apply(instance, now_ms, TTL_MS, r))
            .collect();
        let got = ledger
            .exchange_at(instance, now_ms, TTL_MS, &requests)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, expected, "step {}: {:?}", n, requests);
    }
    Ok(())
}

#[test]
fn redis_agrees_with_the_reference_pool() {
    let Some(server) = RedisServer::start("redis_agrees_with_the_reference_pool") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ledger = rt.block_on(ledger(&server));
    let case = AtomicU64::new(1);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&scenario(), |steps| {
        // Fresh counters for every case (and every shrinking attempt).
        let rule = case.fetch_add(1, Ordering::Relaxed);
        rt.block_on(same_replies(&ledger, rule, &steps))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test]
async fn one_round_trip_for_any_number_of_requests() {
    let Some(server) = RedisServer::start("one_round_trip_for_any_number_of_requests") else {
        return;
    };
    let ledger = ledger(&server).await;
    let redis = ledger.redis().clone();
    ledger.load_script().await.unwrap();
    let window = calendar(unix_ms() + 60_000);
    for n in [1u64, 10, 200] {
        let requests: Vec<LeaseRequest> = (0..n)
            .map(|i| {
                let key = CounterKey {
                    rule: n,
                    scope: i,
                    window_start: 0,
                };
                request(key, window, Some(1_000), 100 + i)
            })
            .collect();
        let before = redis.round_trips();
        let replies = ledger.exchange("gw-a", 10_000, &requests).await.unwrap();
        assert_eq!(redis.round_trips() - before, 1, "{n} requests");
        assert_eq!(replies.len() as u64, n);
        for (i, r) in replies.iter().enumerate() {
            let want = (100 + i).min(1_000) as u64;
            assert_eq!(
                *r,
                LeaseReply {
                    granted: want,
                    hold: want,
                    spent: 0,
                    held_elsewhere: 0,
                    spent_before: 0,
                }
            );
        }
    }
    // A server that lost the script (restart, SCRIPT FLUSH): loaded again
    // and the calls sent again, once.
    let mut flush = redis::pipe();
    flush.cmd("SCRIPT").arg("FLUSH").ignore();
    let () = redis.query(&flush).await.unwrap();
    let key = CounterKey {
        rule: 999,
        scope: 1,
        window_start: 0,
    };
    let before = redis.round_trips();
    let replies = ledger
        .exchange("gw-a", 10_000, &[request(key, window, Some(50), 80)])
        .await
        .unwrap();
    assert_eq!(replies[0].granted, 50);
    assert_eq!(
        redis.round_trips() - before,
        3,
        "EVALSHA, SCRIPT LOAD, EVALSHA"
    );
    assert_eq!(ledger.exchange("gw-a", 10_000, &[]).await.unwrap(), vec![]);
}

#[tokio::test]
async fn the_counter_is_one_hash_that_expires_after_its_window() {
    let Some(server) = RedisServer::start("the_counter_is_one_hash_that_expires_after_its_window")
    else {
        return;
    };
    let ledger = ledger(&server).await;
    let key = CounterKey {
        rule: 0xab,
        scope: 0xcd,
        window_start: 1_700_000_000_000_000_000,
    };
    let ends_ms = unix_ms() + 3_600_000;
    let mut req = request(key, calendar(ends_ms), Some(1_000), 300);
    req.direct = vec![(0, 25)];
    let reply = ledger.exchange("gw-a", 10_000, &[req]).await.unwrap();
    assert_eq!(
        reply,
        vec![LeaseReply {
            granted: 300,
            hold: 300,
            spent: 25,
            held_elsewhere: 0,
            spent_before: 0,
        }]
    );
    let name = ledger.key(&key);
    assert!(
        name.ends_with("ledger:00000000000000ab:00000000000000cd:1700000000000000000"),
        "{name}"
    );
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL").arg(&name).cmd("PEXPIRETIME").arg(&name);
    let (mut fields, expire_at): (Vec<(String, String)>, i64) =
        ledger.redis().query(&pipe).await.unwrap();
    fields.sort();
    assert_eq!(fields.len(), 3, "{fields:?}");
    assert_eq!(fields[0], ("h:gw-a".to_owned(), "300".to_owned()));
    assert_eq!(fields[1], ("s:0".to_owned(), "25".to_owned()));
    assert_eq!(fields[2].0, "x:gw-a");
    let grace = KEY_GRACE.as_millis() as i64;
    assert_eq!(expire_at, ends_ms + grace);
}

#[tokio::test]
async fn amounts_stay_exact_up_to_2_pow_53() {
    let Some(server) = RedisServer::start("amounts_stay_exact_up_to_2_pow_53") else {
        return;
    };
    let ledger = ledger(&server).await;
    let key = CounterKey {
        rule: 1,
        scope: 2,
        window_start: 3,
    };
    let window = calendar(unix_ms() + 60_000);
    // 2^53 - 1 and its neighbours lose digits in tostring's 14 digits.
    let big = (1u64 << 53) - 1;
    let mut req = request(key, window, Some(big), big - 2);
    req.direct = vec![(0, 1)];
    let r = ledger.exchange("gw-a", 10_000, &[req]).await.unwrap()[0];
    assert_eq!((r.granted, r.hold, r.spent), (big - 2, big - 2, 1));
    let mut req = request(key, window, Some(u64::MAX), u64::MAX);
    req.give_back = 1;
    let r = ledger.exchange("gw-a", 10_000, &[req]).await.unwrap()[0];
    // The limit is clamped to 2^53: three more than the hold and spend.
    assert_eq!((r.granted, r.hold, r.spent), (3, big, 1));
}

#[tokio::test]
async fn holds_expire_by_the_servers_clock() {
    let Some(server) = RedisServer::start("holds_expire_by_the_servers_clock") else {
        return;
    };
    let ledger = ledger(&server).await;
    let key = CounterKey {
        rule: 5,
        scope: 5,
        window_start: 0,
    };
    let window = calendar(unix_ms() + 60_000);
    let r = ledger
        .exchange("gw-a", 300, &[request(key, window, Some(1_000), 400)])
        .await
        .unwrap()[0];
    assert_eq!(r.hold, 400);
    let r = ledger
        .exchange("gw-b", 300, &[request(key, window, Some(1_000), 1_000)])
        .await
        .unwrap()[0];
    assert_eq!((r.granted, r.held_elsewhere, r.spent), (600, 400, 0));
    tokio::time::sleep(Duration::from_millis(450)).await;
    // Both holds expired: booked as spent, nothing left to grant.
    let r = ledger
        .exchange("gw-c", 300, &[request(key, window, Some(1_000), 10)])
        .await
        .unwrap()[0];
    assert_eq!(
        r,
        LeaseReply {
            granted: 0,
            hold: 0,
            spent: 1_000,
            held_elsewhere: 0,
            spent_before: 0,
        }
    );
}

#[tokio::test]
async fn a_restarted_server_keeps_the_ledger() {
    let Some(mut server) = RedisServer::start_own(
        "a_restarted_server_keeps_the_ledger",
        ServerOptions {
            persistent: true,
            ..ServerOptions::default()
        },
    ) else {
        return;
    };
    let ledger = ledger(&server).await;
    let key = CounterKey {
        rule: 9,
        scope: 9,
        window_start: 0,
    };
    let window = calendar(unix_ms() + 60_000);
    let r = ledger
        .exchange("gw-a", 60_000, &[request(key, window, Some(1_000), 700)])
        .await
        .unwrap()[0];
    assert_eq!(r.hold, 700);
    server.stop();
    let e = ledger
        .exchange("gw-b", 60_000, &[request(key, window, Some(1_000), 700)])
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    server.start_again();
    // The connection comes back by itself; the script is loaded again.
    let mut last = None;
    for _ in 0..50 {
        match ledger
            .exchange("gw-b", 60_000, &[request(key, window, Some(1_000), 700)])
            .await
        {
            Ok(r) => {
                last = Some(r[0]);
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let r = last.unwrap_or_else(|| panic!("no answer after the restart"));
    assert_eq!((r.granted, r.held_elsewhere), (300, 700));
}
