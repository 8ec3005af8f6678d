//! The lease algorithm under any interleaving: admitted ≤ limit, and leases
//! always return or expire.

use proptest::prelude::*;

use super::*;

const KEY: CounterKey = CounterKey {
    rule: 7,
    scope: 11,
    window_start: 0,
};

const WINDOW: LeaseWindow = LeaseWindow {
    rolling: false,
    bucket_nanos: 0,
    ends_at: i64::MAX,
};

fn policy() -> LeasePolicy {
    LeasePolicy {
        ttl_ms: 1_000,
        margin_ms: 200,
        horizon_ms: 500,
        max_share: 0.2,
        idle_ms: 300,
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Instance i admits a call reserving `amount`, asking for a lease first
    /// when its lease is short.
    Take { i: usize, amount: u64 },
    /// Instance i's oldest open call settles at `pct` % of its reservation.
    Settle { i: usize, pct: u64 },
    /// Instance i's open call does not run.
    Release { i: usize },
    /// Instance i sends what is due (report, give back, extend).
    Sync { i: usize },
    /// The server answers instance i's exchange on its way.
    Deliver { i: usize },
    /// Instance i's exchange is lost before the server sees it.
    Lose { i: usize },
    /// The server applies instance i's exchange, but the reply is lost.
    LoseReply { i: usize },
    /// Instance i dies: its open calls are billed in full.
    Crash { i: usize },
    /// Time passes.
    Wait { ms: i64 },
}

fn op(instances: usize) -> impl Strategy<Value = Op> {
    let i = 0..instances;
    prop_oneof![
        4 => (i.clone(), 1u64..60).prop_map(|(i, amount)| Op::Take { i, amount }),
        3 => (i.clone(), 0u64..=100).prop_map(|(i, pct)| Op::Settle { i, pct }),
        1 => i.clone().prop_map(|i| Op::Release { i }),
        2 => i.clone().prop_map(|i| Op::Sync { i }),
        3 => i.clone().prop_map(|i| Op::Deliver { i }),
        1 => i.clone().prop_map(|i| Op::Lose { i }),
        1 => i.clone().prop_map(|i| Op::LoseReply { i }),
        1 => i.clone().prop_map(|i| Op::Crash { i }),
        2 => (1i64..700).prop_map(|ms| Op::Wait { ms }),
    ]
}

struct Instance {
    name: String,
    book: LeaseBook,
    /// Reservations of admitted calls not settled yet.
    open: Vec<u64>,
    /// The exchange on its way, with when it was sent.
    in_flight: Option<(LeaseRequest, i64)>,
    alive: bool,
}

struct World {
    pool: LeasePool,
    instances: Vec<Instance>,
    now_ms: i64,
    limit: u64,
    /// Billed by providers: settled usage, plus the full reservation of
    /// calls open on an instance that died.
    billed: u64,
    generation: usize,
    /// Spent after the last exchange: the next one's `spent_before`.
    spent: u64,
}

impl World {
    fn new(instances: usize, limit: u64) -> Self {
        Self {
            pool: LeasePool::new(),
            instances: (0..instances)
                .map(|i| Instance {
                    name: format!("i{i}"),
                    book: LeaseBook::new(policy()),
                    open: Vec::new(),
                    in_flight: None,
                    alive: true,
                })
                .collect(),
            now_ms: 1_000_000,
            limit,
            billed: 0,
            generation: 0,
            spent: 0,
        }
    }

    /// Applies `req` of `name` on the server: every increase of the spend
    /// is in exactly one exchange's `spent_before..spent`.
    fn apply(&mut self, name: &str, req: &LeaseRequest) -> LeaseReply {
        let reply = self.pool.apply(name, self.now_ms, policy().ttl_ms, req);
        assert_eq!(reply.spent_before, self.spent, "{reply:?}");
        assert!(reply.spent >= reply.spent_before);
        self.spent = reply.spent;
        reply
    }

    /// Usage providers may still bill: open calls of live instances.
    fn open(&self) -> u64 {
        self.instances
            .iter()
            .filter(|x| x.alive)
            .flat_map(|x| x.open.iter())
            .sum()
    }

    fn deliver(&mut self, i: usize, reply_lost: bool) {
        let Some((req, sent)) = self.instances[i].in_flight.take() else {
            return;
        };
        let name = self.instances[i].name.clone();
        let reply = self.apply(&name, &req);
        let x = &mut self.instances[i];
        if reply_lost {
            x.book.failed(&KEY, req);
        } else {
            x.book.reply(&KEY, &reply, sent);
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now_ms;
        match *op {
            Op::Take { i, amount } => {
                let limit = self.limit;
                let x = &mut self.instances[i];
                if !x.alive {
                    return;
                }
                match x.book.try_take(&[(KEY, WINDOW, Some(limit), amount)], now) {
                    Ok(()) => x.open.push(amount),
                    Err(short) => {
                        assert_eq!(short.len(), 1);
                        if x.in_flight.is_none()
                            && let Some(req) = x.book.request(&KEY, amount, now, 0)
                        {
                            x.in_flight = Some((req, now));
                        }
                    }
                }
            }
            Op::Settle { i, pct } => {
                let x = &mut self.instances[i];
                if !x.alive || x.open.is_empty() {
                    return;
                }
                let reserved = x.open.remove(0);
                let actual = reserved * pct / 100;
                x.book.settle(&KEY, reserved, actual, 0);
                self.billed += actual;
            }
            Op::Release { i } => {
                let x = &mut self.instances[i];
                if let Some(r) = x.open.pop().filter(|_| x.alive) {
                    x.book.release(&KEY, r);
                }
            }
            Op::Sync { i } => {
                let x = &mut self.instances[i];
                if x.alive
                    && x.in_flight.is_none()
                    && x.book.need(&KEY, now) == SyncNeed::Due
                    && let Some(req) = x.book.request(&KEY, 0, now, 0)
                {
                    x.in_flight = Some((req, now));
                }
            }
            Op::Deliver { i } => self.deliver(i, false),
            Op::LoseReply { i } => self.deliver(i, true),
            Op::Lose { i } => {
                let x = &mut self.instances[i];
                if let Some((req, _)) = x.in_flight.take() {
                    x.book.failed(&KEY, req);
                }
            }
            Op::Crash { i } => {
                let x = &mut self.instances[i];
                if !x.alive {
                    return;
                }
                // An exchange already sent may still reach the server.
                let open: u64 = x.open.drain(..).sum();
                self.billed += open;
                x.alive = false;
                if let Some((req, _)) = x.in_flight.take() {
                    let name = x.name.clone();
                    self.apply(&name, &req);
                }
                // A new instance takes its place under a new name.
                self.generation += 1;
                let name = format!("i{i}-{}", self.generation);
                self.instances[i] = Instance {
                    name,
                    book: LeaseBook::new(policy()),
                    open: Vec::new(),
                    in_flight: None,
                    alive: true,
                };
            }
            Op::Wait { ms } => self.now_ms += ms,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the interleaving, providers never bill more than the limit.
    #[test]
    fn admitted_never_exceeds_the_limit(
        instances in 1usize..5,
        limit in 1u64..500,
        ops in proptest::collection::vec(op(4), 1..300),
    ) {
        let mut w = World::new(instances, limit);
        for op in &ops {
            let op = match op.clone() {
                Op::Take { i, amount } => Op::Take { i: i % instances, amount },
                Op::Settle { i, pct } => Op::Settle { i: i % instances, pct },
                Op::Release { i } => Op::Release { i: i % instances },
                Op::Sync { i } => Op::Sync { i: i % instances },
                Op::Deliver { i } => Op::Deliver { i: i % instances },
                Op::Lose { i } => Op::Lose { i: i % instances },
                Op::LoseReply { i } => Op::LoseReply { i: i % instances },
                Op::Crash { i } => Op::Crash { i: i % instances },
                Op::Wait { ms } => Op::Wait { ms },
            };
            w.step(&op);
            let may_bill = w.billed + w.open();
            prop_assert!(
                may_bill <= limit,
                "billed {} + open {} > limit {limit} after {op:?}",
                w.billed,
                w.open()
            );
            prop_assert!(w.pool.committed(&KEY) >= may_bill.min(w.pool.committed(&KEY)));
        }

        // Wind down: every call ends, exchanges arrive, idle leases go back.
        for i in 0..instances {
            w.deliver(i, false);
            while let Some(r) = w.instances[i].open.pop() {
                w.instances[i].book.settle(&KEY, r, r, 0);
                w.billed += r;
            }
        }
        prop_assert!(w.billed <= limit);
        w.now_ms += policy().idle_ms;
        for i in 0..instances {
            for _ in 0..3 {
                w.step(&Op::Sync { i });
                w.deliver(i, false);
            }
            prop_assert_eq!(w.instances[i].book.need(&KEY, w.now_ms), SyncNeed::Nothing);
            prop_assert_eq!(w.instances[i].book.hold(&KEY), 0);
        }
        // What is still held belongs to instances that died, and expires.
        w.now_ms += policy().ttl_ms;
        let probe = LeaseRequest {
            key: KEY,
            window: WINDOW,
            limit: Some(limit),
            now_bucket: 0,
            from_hold: Vec::new(),
            direct: Vec::new(),
            give_back: 0,
            want: 0,
        };
        w.pool.apply("probe", w.now_ms, policy().ttl_ms, &probe);
        prop_assert_eq!(w.pool.holds(&KEY), 0);
        prop_assert!(w.pool.spent(&KEY) >= w.billed);
    }
}

/// A live instance that stops calling gives its idle lease back, and the
/// capacity is there for another instance.
#[test]
fn idle_lease_returns_and_serves_another_instance() {
    let mut w = World::new(2, 100);
    w.step(&Op::Take { i: 0, amount: 10 });
    w.step(&Op::Deliver { i: 0 });
    w.step(&Op::Take { i: 0, amount: 10 });
    assert_eq!(w.instances[0].open, vec![10]);
    let held = w.pool.hold(&KEY, "i0");
    assert!(held >= 10, "held {held}");
    w.step(&Op::Settle { i: 0, pct: 50 });
    w.step(&Op::Wait { ms: 400 });
    w.step(&Op::Sync { i: 0 });
    w.step(&Op::Deliver { i: 0 });
    assert_eq!(w.pool.hold(&KEY, "i0"), 0);
    assert_eq!(w.pool.spent(&KEY), 5);
    // The other instance can now take all but what was spent.
    w.step(&Op::Take { i: 1, amount: 95 });
    w.step(&Op::Deliver { i: 1 });
    w.step(&Op::Take { i: 1, amount: 95 });
    assert_eq!(w.instances[1].open, vec![95]);
    w.step(&Op::Take { i: 1, amount: 1 });
    w.step(&Op::Deliver { i: 1 });
    w.step(&Op::Take { i: 1, amount: 1 });
    assert_eq!(w.instances[1].open, vec![95], "the budget is used up");
}

/// A dead instance's hold is booked as spent once it expires: never
/// handed out again while its calls may have been billed.
#[test]
fn dead_hold_expires_into_spent() {
    let mut w = World::new(2, 100);
    w.step(&Op::Take { i: 0, amount: 30 });
    w.step(&Op::Deliver { i: 0 });
    w.step(&Op::Take { i: 0, amount: 30 });
    let held = w.pool.hold(&KEY, "i0");
    assert!(held >= 30);
    w.step(&Op::Crash { i: 0 });
    // Before the TTL the hold is still there: nobody can take it.
    w.step(&Op::Take {
        i: 1,
        amount: 100 - held + 1,
    });
    w.step(&Op::Deliver { i: 1 });
    assert_eq!(w.pool.hold(&KEY, "i1"), 100 - held);
    // i1 keeps its hold alive; i0's runs out.
    w.step(&Op::Wait { ms: 600 });
    w.step(&Op::Sync { i: 1 });
    w.step(&Op::Deliver { i: 1 });
    assert_eq!(w.pool.hold(&KEY, "i0"), held, "not expired yet");
    w.step(&Op::Wait { ms: 401 });
    w.step(&Op::Take { i: 1, amount: 1 });
    w.step(&Op::Deliver { i: 1 });
    assert_eq!(w.pool.hold(&KEY, "i0"), 0);
    assert_eq!(w.pool.spent(&KEY), held);
    // The rest is there for the living.
    let rest = 100 - held;
    w.step(&Op::Release { i: 1 });
    w.step(&Op::Take { i: 1, amount: rest });
    w.step(&Op::Deliver { i: 1 });
    w.step(&Op::Take { i: 1, amount: rest });
    assert_eq!(w.instances[1].open, vec![rest]);
}

/// The lease an instance asks for follows its spend rate, capped at
/// `max_share` of the limit.
#[test]
fn lease_size_follows_the_spend_rate() {
    let mut book = LeaseBook::new(policy());
    let mut pool = LeasePool::new();
    let limit = 10_000;
    let mut now = 0;
    let mut asked = Vec::new();
    for _ in 0..40 {
        if book
            .try_take(&[(KEY, WINDOW, Some(limit), 10)], now)
            .is_err()
        {
            let req = book.request(&KEY, 10, now, 0).unwrap();
            asked.push(req.want);
            let reply = pool.apply("a", now, 1_000, &req);
            book.reply(&KEY, &reply, now);
            book.try_take(&[(KEY, WINDOW, Some(limit), 10)], now)
                .unwrap();
        }
        book.settle(&KEY, 10, 10, 0);
        now += 10;
    }
    // First a bare call's worth; later about half a second of 1,000/s.
    assert!(asked[0] <= 20, "{asked:?}");
    assert!(asked.iter().all(|w| *w <= 10 + limit / 5), "{asked:?}");
    assert!(asked.len() < 20, "leases grew with the rate: {asked:?}");
}

/// Rolling windows: spend leaves the window bucket by bucket, and the room
/// comes back.
#[test]
fn rolling_spend_leaves_the_window() {
    let w = LeaseWindow {
        rolling: true,
        bucket_nanos: 1_000_000_000,
        ends_at: i64::MAX,
    };
    let mut pool = LeasePool::new();
    let req = |bucket: i64, from_hold: Vec<(i64, u64)>, want: u64| LeaseRequest {
        key: KEY,
        window: w,
        limit: Some(100),
        now_bucket: bucket,
        from_hold,
        direct: Vec::new(),
        give_back: 0,
        want,
    };
    let r = pool.apply("a", 0, 10_000, &req(1_000, vec![], 100));
    assert_eq!(r.granted, 100);
    let r = pool.apply("a", 0, 10_000, &req(1_000, vec![(1_000, 100)], 10));
    assert_eq!((r.granted, r.spent, r.hold), (0, 100, 0));
    let r = pool.apply("a", 0, 10_000, &req(1_059, vec![], 10));
    assert_eq!(r.granted, 0, "still within the minute");
    let r = pool.apply("a", 0, 10_000, &req(1_060, vec![], 10));
    assert_eq!((r.granted, r.spent), (10, 0));
}
