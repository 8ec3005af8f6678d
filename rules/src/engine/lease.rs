//! Budget leases: how several instances enforce one budget exactly.
//!
//! A shared ledger (a Redis-protocol server) keeps, per counter (rule,
//! scope, window), what was spent and what each instance *holds*: a slice
//! of the budget it may admit calls against without asking again. The
//! server grants a slice only from what is neither spent nor held, so
//!
//! ```text
//! spent + Σ holds ≤ limit
//! ```
//!
//! and every call an instance admits is covered by its hold until the call
//! is reported as spent (which moves the amount from the hold to the spent
//! total). What providers bill is therefore at most the limit, however many
//! instances there are, as long as a reservation is an upper bound of the
//! call's usage.
//!
//! - [`LeaseRequest`] / [`LeaseReply`]: one exchange with the server for
//!   one counter: report spend, give back idle capacity, ask for more.
//! - [`LeasePool`]: what the server does with a request, in memory. The
//!   Redis script does the same; this is its reference (and the server of
//!   the property tests).
//! - [`LeaseBook`]: an instance's side: holds, reservations and spend not
//!   reported yet, per counter; admission against it takes no I/O.
//!
//! A hold expires `ttl` after the exchange that last touched it. The
//! instance stops admitting against it earlier (its deadline leaves a
//! margin for clock drift and the exchange's own latency). When the server
//! finds an expired hold it books it as *spent*: the instance may have
//! admitted calls against it that a provider billed, and it is gone before
//! reporting them. A dead instance therefore costs the budget at most the
//! hold it had (an idle slice plus its calls in flight), never an overrun.

use std::collections::HashMap;
use std::sync::Arc;

use super::ledger::{BuildKeyHasher, CounterKey};
use super::window::{ROLLING_BUCKETS, Window, WindowKind};

/// How the shared ledger keeps a counter's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseWindow {
    /// Rolling windows keep 60 buckets of spend; calendar windows one.
    pub rolling: bool,
    /// Width of a bucket (rolling), in nanoseconds; 0 for calendar windows.
    pub bucket_nanos: i64,
    /// When the counter may be forgotten (Unix nanoseconds): the calendar
    /// window's end; for rolling windows, one window length after now.
    pub ends_at: i64,
}

impl LeaseWindow {
    /// The shared ledger's view of `window` at `at` (ending at `end`).
    pub fn of(window: &Window, end: i64) -> Self {
        match window.kind {
            WindowKind::Rolling => Self {
                rolling: true,
                bucket_nanos: window.bucket_nanos(),
                ends_at: end,
            },
            WindowKind::Calendar(_) => Self {
                rolling: false,
                bucket_nanos: 0,
                ends_at: end,
            },
        }
    }

    /// The bucket spend at `at` falls in (always 0 for calendar windows).
    pub fn bucket(&self, at: i64) -> i64 {
        if self.rolling && self.bucket_nanos > 0 {
            at.div_euclid(self.bucket_nanos)
        } else {
            0
        }
    }
}

/// One instance's exchange with the shared ledger for one counter. Applied
/// atomically by the server, in this order: expired holds of other
/// instances are booked as spent; buckets that left a rolling window are
/// dropped; `from_hold` moves from the instance's hold to spent;
/// `direct` is added to spent; `give_back` leaves the hold; then up to
/// `want` is granted from what is neither spent nor held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub key: CounterKey,
    pub window: LeaseWindow,
    /// The limit in force (after overrides and burst). `None`: the counter
    /// has no limit here (nothing is granted; spend is still counted).
    pub limit: Option<u64>,
    /// The bucket of "now" (see [`LeaseWindow::bucket`]): where expired
    /// holds are booked, and what a rolling window still covers.
    pub now_bucket: i64,
    /// Spend of calls admitted against the hold, per bucket.
    pub from_hold: Vec<(i64, u64)>,
    /// Spend not admitted against a hold (calls seen after the fact, in
    /// observe mode), per bucket.
    pub direct: Vec<(i64, u64)>,
    /// Idle capacity returned.
    pub give_back: u64,
    /// Capacity asked for, on top of what is held.
    pub want: u64,
}

/// The server's answer to a [`LeaseRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseReply {
    /// Added to the hold by this exchange.
    pub granted: u64,
    /// The instance's hold after the exchange.
    pub hold: u64,
    /// Spent within the window, every instance together.
    pub spent: u64,
    /// What other instances hold.
    pub held_elsewhere: u64,
    /// Spent within the window before this exchange added to it (expired
    /// holds booked, spend reported): the exchanges of every instance,
    /// applied one at a time, cover each increase of the spend exactly
    /// once, so the one whose `spent_before..spent` contains a threshold
    /// is the one that crossed it.
    pub spent_before: u64,
}

/// One instance's hold on one counter, as the server keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    amount: u64,
    /// Unix milliseconds.
    expires_ms: i64,
}

#[derive(Debug, Default, Clone)]
struct PoolCounter {
    /// Spend per bucket (one bucket, 0, for calendar windows).
    spent: HashMap<i64, u64>,
    holds: HashMap<String, Hold>,
}

/// The shared ledger's logic, in memory: the reference the Redis script
/// follows, step by step.
#[derive(Debug, Default, Clone)]
pub struct LeasePool {
    counters: HashMap<CounterKey, PoolCounter, BuildKeyHasher>,
}

impl LeasePool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `req` from `instance` at server time `now_ms`; the hold it
    /// leaves expires `ttl_ms` later.
    pub fn apply(
        &mut self,
        instance: &str,
        now_ms: i64,
        ttl_ms: i64,
        req: &LeaseRequest,
    ) -> LeaseReply {
        let c = self.counters.entry(req.key).or_default();
        // 1. Expired holds (any instance's, this one's too) count as spent.
        let mut expired = 0u64;
        c.holds.retain(|_, h| {
            let live = h.expires_ms > now_ms;
            if !live {
                expired = expired.saturating_add(h.amount);
            }
            live
        });
        if expired > 0 {
            let b = c.spent.entry(req.now_bucket).or_default();
            *b = b.saturating_add(expired);
        }
        // 2. Buckets that left a rolling window.
        if req.window.rolling {
            let oldest = req.now_bucket - (ROLLING_BUCKETS - 1);
            c.spent.retain(|b, _| *b >= oldest);
        }
        // 3. Spend reported.
        let mut own = c.holds.get(instance).map_or(0, |h| h.amount);
        let mut reported = 0u64;
        for (bucket, amount) in &req.from_hold {
            let b = c.spent.entry(*bucket).or_default();
            *b = b.saturating_add(*amount);
            own = own.saturating_sub(*amount);
            reported = reported.saturating_add(*amount);
        }
        for (bucket, amount) in &req.direct {
            let b = c.spent.entry(*bucket).or_default();
            *b = b.saturating_add(*amount);
            reported = reported.saturating_add(*amount);
        }
        // 4. Capacity returned.
        own = own.saturating_sub(req.give_back);
        // 5. Capacity granted.
        let spent = c.spent.values().fold(0u64, |a, b| a.saturating_add(*b));
        let held_elsewhere = c
            .holds
            .iter()
            .filter(|(i, _)| i.as_str() != instance)
            .fold(0u64, |a, (_, h)| a.saturating_add(h.amount));
        let room = req.limit.map_or(0, |limit| {
            limit.saturating_sub(spent.saturating_add(held_elsewhere).saturating_add(own))
        });
        let granted = req.want.min(room);
        own = own.saturating_add(granted);
        if own > 0 {
            c.holds.insert(
                instance.to_owned(),
                Hold {
                    amount: own,
                    expires_ms: now_ms.saturating_add(ttl_ms),
                },
            );
        } else {
            c.holds.remove(instance);
        }
        LeaseReply {
            granted,
            hold: own,
            spent,
            held_elsewhere,
            spent_before: spent.saturating_sub(expired.saturating_add(reported)),
        }
    }

    /// Spent on `key` plus every live or expired hold: what providers may
    /// have billed at most.
    pub fn committed(&self, key: &CounterKey) -> u64 {
        self.counters.get(key).map_or(0, |c| {
            let spent = c.spent.values().fold(0u64, |a, b| a.saturating_add(*b));
            c.holds
                .values()
                .fold(spent, |a, h| a.saturating_add(h.amount))
        })
    }

    /// Spent on `key` (every bucket kept).
    pub fn spent(&self, key: &CounterKey) -> u64 {
        self.counters.get(key).map_or(0, |c| {
            c.spent.values().fold(0u64, |a, b| a.saturating_add(*b))
        })
    }

    /// What `instance` holds on `key`, expired or not.
    pub fn hold(&self, key: &CounterKey, instance: &str) -> u64 {
        self.counters
            .get(key)
            .and_then(|c| c.holds.get(instance))
            .map_or(0, |h| h.amount)
    }

    /// Holds on `key`, expired or not.
    pub fn holds(&self, key: &CounterKey) -> u64 {
        self.counters.get(key).map_or(0, |c| {
            c.holds
                .values()
                .fold(0u64, |a, h| a.saturating_add(h.amount))
        })
    }
}

/// How an instance sizes and keeps its leases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeasePolicy {
    /// How long the server keeps a hold after the exchange that last
    /// touched it (milliseconds).
    pub ttl_ms: i64,
    /// The instance stops admitting against a hold this long before the
    /// server would let it expire (clock drift, the exchange's latency).
    pub margin_ms: i64,
    /// A lease covers about this much of the local spend rate.
    pub horizon_ms: i64,
    /// The most idle capacity one instance asks for, as a share of the
    /// limit (on top of the call that needs it).
    pub max_share: f64,
    /// Idle capacity unused this long is given back.
    pub idle_ms: i64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            ttl_ms: 10_000,
            margin_ms: 2_000,
            horizon_ms: 1_000,
            max_share: 0.1,
            idle_ms: 2_000,
        }
    }
}

/// What a shared counter is about, for the events of the thresholds its
/// spend crosses: which call of this instance counted on it last.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterSubject {
    pub rule_id: Arc<str>,
    /// `project=search,user=alice`.
    pub scope: String,
    pub scope_dims: Vec<(String, String)>,
    /// End of the counter's window (Unix nanoseconds).
    pub window_end: i64,
    /// The last call of this instance counted on the counter.
    pub call: CallRef,
}

/// A call an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRef {
    pub trace_id: String,
    pub span_id: String,
    /// When it ended, Unix nanoseconds.
    pub ended_at: i64,
}

/// The spend of a shared counter moved in an exchange: from `before` to
/// `after`, every instance together (see [`LeaseReply::spent_before`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SpendMoved {
    pub key: CounterKey,
    pub before: u64,
    pub after: u64,
    pub subject: CounterSubject,
}

/// One counter as an instance sees it.
#[derive(Debug, Clone)]
struct Entry {
    window: LeaseWindow,
    limit: Option<u64>,
    /// The server-side hold as of the last reply, less what was reported or
    /// given back since.
    hold: u64,
    /// Worst cases of admitted calls not settled yet (covered by `hold`).
    reserved: u64,
    /// Spend of settled calls admitted against the hold, not reported yet.
    from_hold: Vec<(i64, u64)>,
    /// Sum of `from_hold` (also covered by `hold`).
    unreported: u64,
    /// Spend seen after the fact, not reported yet.
    direct: Vec<(i64, u64)>,
    /// No admission against the hold at or after this (monotonic ms).
    deadline_ms: i64,
    /// An exchange for this counter is on its way.
    syncing: bool,
    /// What calls waiting for that exchange need: asked for in the next.
    demand: u64,
    /// When the counter was last taken from (monotonic ms).
    last_take_ms: i64,
    /// Spend rate, amount per second (exponentially weighted).
    rate: f64,
    rate_at_ms: i64,
    /// The last reply's view of the whole budget.
    spent: u64,
    held_elsewhere: u64,
    /// Set by the first call counted.
    subject: Option<CounterSubject>,
}

impl Entry {
    fn new(window: LeaseWindow, limit: Option<u64>) -> Self {
        Self {
            window,
            limit,
            hold: 0,
            reserved: 0,
            from_hold: Vec::new(),
            unreported: 0,
            direct: Vec::new(),
            deadline_ms: i64::MIN,
            syncing: false,
            demand: 0,
            last_take_ms: i64::MIN,
            rate: 0.0,
            rate_at_ms: i64::MIN,
            spent: 0,
            held_elsewhere: 0,
            subject: None,
        }
    }

    /// What the hold still covers, usable at `now_ms`.
    fn free(&self, now_ms: i64) -> u64 {
        if now_ms >= self.deadline_ms {
            return 0;
        }
        self.hold
            .saturating_sub(self.reserved)
            .saturating_sub(self.unreported)
    }

    fn note_rate(&mut self, amount: u64, now_ms: i64) {
        const HALF_LIFE_MS: f64 = 2_000.0;
        if self.rate_at_ms == i64::MIN {
            self.rate_at_ms = now_ms;
        }
        let dt = (now_ms - self.rate_at_ms).max(0) as f64;
        let decay = (-dt / HALF_LIFE_MS * std::f64::consts::LN_2).exp();
        // Amount per second over the half-life.
        self.rate = self.rate * decay + amount as f64 * (1000.0 / HALF_LIFE_MS);
        self.rate_at_ms = now_ms;
    }
}

/// A counter that needs more lease before a call can be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseShort {
    pub key: CounterKey,
    /// What the call needs on this counter.
    pub amount: u64,
}

/// An instance's leases, reservations and unreported spend, per counter.
/// Pure bookkeeping: the caller does the I/O (see [`LeaseBook::request`]
/// and [`LeaseBook::reply`]) and passes monotonic milliseconds as `now_ms`.
#[derive(Debug, Clone, Default)]
pub struct LeaseBook {
    entries: HashMap<CounterKey, Entry, BuildKeyHasher>,
    policy: LeasePolicy,
    /// Shutting down: every idle hold is due to go back.
    closing: bool,
}

/// What a counter needs from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncNeed {
    /// Nothing to report, nothing to give back, the hold is fresh.
    Nothing,
    /// Spend to report, idle capacity to give back, or a hold to extend.
    Due,
}

impl LeaseBook {
    pub fn new(policy: LeasePolicy) -> Self {
        Self {
            entries: HashMap::default(),
            policy,
            closing: false,
        }
    }

    /// The instance is stopping: from now on every idle hold is due to go
    /// back and no lease is asked for beyond what a call needs.
    pub fn close(&mut self) {
        self.closing = true;
    }

    pub fn policy(&self) -> &LeasePolicy {
        &self.policy
    }

    /// Takes `amount` from the lease of every counter, or nothing: returns
    /// the counters whose lease does not cover the call. `limits` gives each
    /// counter's window and limit in force (kept for the next exchange).
    pub fn try_take(
        &mut self,
        asks: &[(CounterKey, LeaseWindow, Option<u64>, u64)],
        now_ms: i64,
    ) -> Result<(), Vec<LeaseShort>> {
        let mut short = Vec::new();
        for (key, window, limit, amount) in asks {
            let e = self
                .entries
                .entry(*key)
                .or_insert_with(|| Entry::new(*window, *limit));
            e.window = *window;
            e.limit = *limit;
            if e.free(now_ms) < *amount {
                short.push(LeaseShort {
                    key: *key,
                    amount: *amount,
                });
            }
        }
        if !short.is_empty() {
            return Err(short);
        }
        for (key, _, _, amount) in asks {
            if let Some(e) = self.entries.get_mut(key) {
                e.reserved = e.reserved.saturating_add(*amount);
                e.last_take_ms = now_ms;
                e.note_rate(*amount, now_ms);
            }
        }
        Ok(())
    }

    /// Takes `amount` from every counter whether its lease covers it or
    /// not (the shared ledger is unreachable and the budget allows): what
    /// the lease lacks is owed, and reported with the call's spend.
    pub fn take_anyway(
        &mut self,
        asks: &[(CounterKey, LeaseWindow, Option<u64>, u64)],
        now_ms: i64,
    ) {
        for (key, window, limit, amount) in asks {
            let e = self
                .entries
                .entry(*key)
                .or_insert_with(|| Entry::new(*window, *limit));
            e.reserved = e.reserved.saturating_add(*amount);
            e.last_take_ms = now_ms;
        }
    }

    /// Gives back what an admitted call reserved (it did not run).
    pub fn release(&mut self, key: &CounterKey, amount: u64) {
        if let Some(e) = self.entries.get_mut(key) {
            e.reserved = e.reserved.saturating_sub(amount);
        }
    }

    /// Replaces a call's reservation by its usage, spent at `at` (Unix
    /// nanoseconds).
    pub fn settle(&mut self, key: &CounterKey, reserved: u64, actual: u64, at: i64) {
        if let Some(e) = self.entries.get_mut(key) {
            e.reserved = e.reserved.saturating_sub(reserved);
            if actual > 0 {
                push_bucket(&mut e.from_hold, e.window.bucket(at), actual);
                e.unreported = e.unreported.saturating_add(actual);
            }
        }
    }

    /// Counts usage not admitted against a lease (a call seen after the
    /// fact), to be reported.
    pub fn observe(
        &mut self,
        key: CounterKey,
        window: LeaseWindow,
        limit: Option<u64>,
        actual: u64,
        at: i64,
    ) {
        if actual == 0 {
            return;
        }
        let e = self
            .entries
            .entry(key)
            .or_insert_with(|| Entry::new(window, limit));
        push_bucket(&mut e.direct, e.window.bucket(at), actual);
    }

    /// Names `call` as the last counted on `key`; `subject` describes the
    /// counter the first time.
    pub fn note_call(
        &mut self,
        key: &CounterKey,
        subject: impl FnOnce() -> CounterSubject,
        trace_id: &str,
        span_id: &str,
        ended_at: i64,
    ) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        match &mut e.subject {
            Some(s) => {
                // Reuses the strings' room: this runs for every call.
                s.call.trace_id.clear();
                s.call.trace_id.push_str(trace_id);
                s.call.span_id.clear();
                s.call.span_id.push_str(span_id);
                s.call.ended_at = ended_at;
            }
            None => {
                let mut s = subject();
                s.call = CallRef {
                    trace_id: trace_id.to_owned(),
                    span_id: span_id.to_owned(),
                    ended_at,
                };
                e.subject = Some(s);
            }
        }
    }

    /// How the reply to an exchange moved the spend of `key`, when it did
    /// and a call of this instance was counted on it.
    pub fn moved(&self, key: &CounterKey, reply: &LeaseReply) -> Option<SpendMoved> {
        if reply.spent <= reply.spent_before {
            return None;
        }
        let subject = self.entries.get(key)?.subject.clone()?;
        Some(SpendMoved {
            key: *key,
            before: reply.spent_before,
            after: reply.spent,
            subject,
        })
    }

    /// Whether `key` has anything for the server at `now_ms` (spend to
    /// report, idle capacity to give back, a hold to extend), and is not
    /// already being exchanged.
    pub fn need(&self, key: &CounterKey, now_ms: i64) -> SyncNeed {
        let Some(e) = self.entries.get(key) else {
            return SyncNeed::Nothing;
        };
        if e.syncing {
            return SyncNeed::Nothing;
        }
        let reported = e.unreported > 0 || !e.direct.is_empty();
        let idle = e.hold > e.reserved.saturating_add(e.unreported)
            && (self.closing || now_ms.saturating_sub(e.last_take_ms) >= self.policy.idle_ms);
        // Extend a hold still covering calls in flight before it expires.
        let stale = e.hold > 0 && now_ms >= e.deadline_ms.saturating_sub(self.policy.ttl_ms / 2);
        if reported || idle || stale {
            SyncNeed::Due
        } else {
            SyncNeed::Nothing
        }
    }

    /// Counters with spend counted after the fact not reported yet
    /// (whether an exchange is on its way or not).
    pub fn observed(&self) -> Vec<CounterKey> {
        self.entries
            .iter()
            .filter(|(_, e)| !e.direct.is_empty())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Counters with something for the server at `now_ms`.
    pub fn due(&self, now_ms: i64) -> Vec<CounterKey> {
        self.entries
            .keys()
            .filter(|k| self.need(k, now_ms) == SyncNeed::Due)
            .copied()
            .collect()
    }

    /// A call needs `amount` more on `key` while an exchange is on its way:
    /// the next request asks for it too, so that a burst of calls costs
    /// two round trips rather than one each.
    pub fn note_demand(&mut self, key: &CounterKey, amount: u64) {
        if let Some(e) = self.entries.get_mut(key) {
            e.demand = e.demand.saturating_add(amount);
        }
    }

    /// Whether the lease of `key` covers `amount` more at `now_ms` (what
    /// [`LeaseBook::try_take`] checks; read only).
    pub fn covers(&self, key: &CounterKey, amount: u64, now_ms: i64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.free(now_ms) >= amount)
    }

    /// Whether an exchange for `key` is on its way.
    pub fn syncing(&self, key: &CounterKey) -> bool {
        self.entries.get(key).is_some_and(|e| e.syncing)
    }

    /// The request for `key`, asking for `need` more than the lease covers
    /// now (0: only report, give back idle capacity and extend), and marks
    /// the counter as being exchanged: what the request reports or gives
    /// back leaves the local hold now, so nothing can be admitted against
    /// it meanwhile. `None` when an exchange is already on its way.
    /// `wall_nanos` is the Unix time (which bucket of a rolling window is
    /// "now" on the server).
    pub fn request(
        &mut self,
        key: &CounterKey,
        need: u64,
        now_ms: i64,
        wall_nanos: i64,
    ) -> Option<LeaseRequest> {
        let policy = self.policy;
        let closing = self.closing;
        let e = self.entries.get_mut(key)?;
        if e.syncing {
            return None;
        }
        e.syncing = true;
        let from_hold = std::mem::take(&mut e.from_hold);
        let direct = std::mem::take(&mut e.direct);
        let reported = std::mem::replace(&mut e.unreported, 0);
        e.hold = e.hold.saturating_sub(reported);
        // Calls that waited on the last exchange need their share too.
        let need = need.saturating_add(std::mem::take(&mut e.demand));
        // The lease to keep: about `horizon` of the local spend rate, at
        // most `max_share` of the limit, nothing once unused for `idle`.
        let active =
            !closing && (now_ms.saturating_sub(e.last_take_ms) < policy.idle_ms || need > 0);
        let target = match (active, e.limit) {
            (true, Some(limit)) => {
                // At least one more call like this one: before the rate is
                // known (a cold start) a lease of exactly the call's need
                // is taken by whichever concurrent call admits first, and
                // a call short on several counters can lose every round.
                let by_rate = (e.rate * policy.horizon_ms as f64 / 1000.0)
                    .ceil()
                    .max(need as f64);
                let cap = (limit as f64 * policy.max_share).floor();
                by_rate.min(cap).max(0.0) as u64
            }
            _ => 0,
        };
        let idle = e.free_ignoring_deadline();
        let (give_back, want) = if need > 0 {
            // Ask for what the call lacks plus the target idle slice.
            (0, need.saturating_sub(idle).saturating_add(target))
        } else if idle > target {
            (idle - target, 0)
        } else {
            (0, if active { target - idle } else { 0 })
        };
        e.hold = e.hold.saturating_sub(give_back);
        Some(LeaseRequest {
            key: *key,
            window: e.window,
            limit: e.limit,
            now_bucket: e.window.bucket(wall_nanos),
            from_hold,
            direct,
            give_back,
            want,
        })
    }

    /// Applies the server's reply to the request for `key` sent at
    /// `sent_ms`: the hold is what the server says, admissible until
    /// `sent_ms + ttl - margin`.
    pub fn reply(&mut self, key: &CounterKey, reply: &LeaseReply, sent_ms: i64) {
        let valid = self.policy.ttl_ms - self.policy.margin_ms;
        if let Some(e) = self.entries.get_mut(key) {
            e.syncing = false;
            e.hold = reply.hold;
            e.deadline_ms = if reply.hold > 0 {
                sent_ms.saturating_add(valid)
            } else {
                i64::MIN
            };
            e.spent = reply.spent;
            e.held_elsewhere = reply.held_elsewhere;
        }
    }

    /// The request for `key` failed (the server was unreachable): what it
    /// reported is kept to be sent again; the hold is not trusted past its
    /// deadline, and what it gave back stays given back.
    pub fn failed(&mut self, key: &CounterKey, req: LeaseRequest) {
        if let Some(e) = self.entries.get_mut(key) {
            e.syncing = false;
            let reported: u64 = req.from_hold.iter().map(|(_, a)| a).sum();
            // Still covered by the server-side hold until it expires.
            e.hold = e.hold.saturating_add(reported);
            e.unreported = e.unreported.saturating_add(reported);
            for (b, a) in req.from_hold {
                push_bucket(&mut e.from_hold, b, a);
            }
            for (b, a) in req.direct {
                push_bucket(&mut e.direct, b, a);
            }
        }
    }

    /// The whole budget as the last reply saw it: (spent, held elsewhere).
    pub fn seen(&self, key: &CounterKey) -> Option<(u64, u64)> {
        self.entries.get(key).map(|e| (e.spent, e.held_elsewhere))
    }

    /// What this instance holds on `key` (server-side, as last known).
    pub fn hold(&self, key: &CounterKey) -> u64 {
        self.entries.get(key).map_or(0, |e| e.hold)
    }

    /// Forgets counters that hold nothing, owe nothing and whose window
    /// ended before `now_unix_nanos`.
    pub fn sweep(&mut self, now_unix_nanos: i64) {
        self.entries.retain(|_, e| {
            e.syncing
                || e.hold > 0
                || e.reserved > 0
                || e.unreported > 0
                || !e.direct.is_empty()
                || e.window.ends_at > now_unix_nanos
        });
    }

    /// Counters known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Entry {
    fn free_ignoring_deadline(&self) -> u64 {
        self.hold
            .saturating_sub(self.reserved)
            .saturating_sub(self.unreported)
    }
}

/// Milliseconds on this process's monotonic clock: what [`LeaseBook`]
/// deadlines are measured in.
pub fn monotonic_ms() -> i64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    // Offset so that "never" (i64::MIN) and "just started" stay apart.
    i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX / 2) + 1_000_000
}

fn push_bucket(v: &mut Vec<(i64, u64)>, bucket: i64, amount: u64) {
    match v.iter_mut().find(|(b, _)| *b == bucket) {
        Some((_, a)) => *a = a.saturating_add(amount),
        None => v.push((bucket, amount)),
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
