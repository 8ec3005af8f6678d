//! The ledger: usage counters keyed by (rule, scope key, window).
//!
//! Amounts are integers in the metric's unit (tokens, requests, or
//! nano-dollars for cost) so that sums are exact: the counter of a window is
//! always the sum of what was settled into it. Reservations hold worst-case
//! amounts on several counters at once; [`Ledger::try_reserve`] checks every
//! counter first and applies only if all fit, so a refusal leaves no trace.
//! Callers serialise access (the engine keeps the ledger behind one mutex),
//! which makes reserve-check-apply atomic.
//!
//! The ledger holds at most `capacity` counters. Past it, the least recently
//! used counters whose calls are all stored are evicted: their scope is
//! remembered in a compact set (8 bytes a scope, until its window ends), and
//! the next call of an evicted scope finds its counter missing
//! ([`Ledger::needs_rebuild`]) and has it rebuilt from the stored calls
//! before it is counted or admitted. A counter whose calls are not all
//! stored yet (ticks in [`Ledger::unstored`]) or that holds reservations is
//! never evicted, so a rebuild always finds every call the counter held.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::window::{ROLLING_BUCKETS, Window, WindowKind};

/// Identifies one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// Hash of the rule id (counters outlive reloads that keep the id).
    pub rule: u64,
    /// Hash of the scope values (e.g. project = "search").
    pub scope: u64,
    /// Start of the calendar window; 0 for rolling windows.
    pub window_start: i64,
}

/// Counter keys are made of hashes already: mixing them is enough, and
/// SipHash was a visible share of `admit` with many rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildKeyHasher;

impl std::hash::BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// See [`BuildKeyHasher`].
#[derive(Debug, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // A final avalanche (from splitmix64) so every bit of the state counts.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

/// One counter's state.
#[derive(Debug, Clone)]
pub struct Counter {
    /// Settled usage; for rolling windows, per sub-bucket.
    settled: Settled,
    /// Worst-case amounts reserved by admitted calls not yet settled.
    pub reserved: u64,
    /// When the counter can be forgotten.
    pub expires_at: i64,
    /// Alert thresholds already crossed (bit i = threshold i), so each fires once.
    pub crossed: u32,
    /// When usage first passed 100 % in this window (burst allowance clock).
    pub over_since: Option<i64>,
    /// The ledger's tick at the last reservation or settlement (recency,
    /// and whether the calls counted are stored yet).
    touched: u64,
    /// Counted from zero after its scope was evicted, by a caller that did
    /// not rebuild it first: the stored calls are still to be added.
    partial: bool,
}

#[derive(Debug, Clone)]
enum Settled {
    Calendar(u64),
    /// `total` is the sum of `buckets`, kept so that reading a rolling
    /// counter at the current time is O(1) instead of a sum of 60 buckets.
    Rolling {
        buckets: Box<[u64]>,
        newest: i64,
        total: u64,
        /// The window's length.
        len: i64,
    },
}

impl Settled {
    fn rolling(len: i64) -> Self {
        Settled::Rolling {
            buckets: vec![0; ROLLING_BUCKETS as usize].into_boxed_slice(),
            newest: i64::MIN,
            total: 0,
            len,
        }
    }
}

impl Counter {
    /// A counter with nothing counted.
    pub fn fresh(window: &Window, expires_at: i64) -> Self {
        Self::new(window, expires_at)
    }

    fn new(window: &Window, expires_at: i64) -> Self {
        let settled = match window.kind {
            WindowKind::Calendar(_) => Settled::Calendar(0),
            WindowKind::Rolling => Settled::rolling(window.unit.nominal_nanos()),
        };
        Self {
            settled,
            reserved: 0,
            expires_at,
            crossed: 0,
            over_since: None,
            touched: 0,
            partial: false,
        }
    }

    /// Settled usage within the window as seen at `now`.
    pub fn settled(&self, window: &Window, now: i64) -> u64 {
        match &self.settled {
            Settled::Calendar(n) => *n,
            Settled::Rolling {
                buckets,
                newest,
                total,
                ..
            } => {
                let width = window.bucket_nanos();
                let current = now.div_euclid(width);
                if *newest == i64::MIN {
                    return 0;
                }
                if current >= *newest {
                    // The buckets that left the window since the newest one
                    // was written: newest-59 ..= current-60.
                    let gone = (current - *newest).min(ROLLING_BUCKETS);
                    return (0..gone)
                        .map(|i| {
                            buckets[(*newest - (ROLLING_BUCKETS - 1) + i)
                                .rem_euclid(ROLLING_BUCKETS)
                                as usize]
                        })
                        .fold(*total, u64::saturating_sub);
                }
                // Reading at a time before the newest bucket (late data).
                (0..ROLLING_BUCKETS)
                    .map(|back| current - back)
                    .filter(|b| *b <= *newest && *b > current - ROLLING_BUCKETS)
                    .map(|b| buckets[b.rem_euclid(ROLLING_BUCKETS) as usize])
                    .fold(0u64, u64::saturating_add)
            }
        }
    }

    /// Settled plus reserved.
    pub fn committed(&self, window: &Window, now: i64) -> u64 {
        self.settled(window, now).saturating_add(self.reserved)
    }

    fn add_settled(&mut self, window: &Window, at: i64, amount: u64) {
        match &mut self.settled {
            Settled::Calendar(n) => *n = n.saturating_add(amount),
            Settled::Rolling {
                buckets,
                newest,
                total,
                ..
            } => {
                let b = at.div_euclid(window.bucket_nanos());
                if *newest == i64::MIN {
                    *newest = b;
                }
                // Clear the buckets the window moved past.
                if b > *newest {
                    let steps = (b - *newest).min(ROLLING_BUCKETS);
                    for i in 1..=steps {
                        let slot = &mut buckets[(*newest + i).rem_euclid(ROLLING_BUCKETS) as usize];
                        *total = total.saturating_sub(*slot);
                        *slot = 0;
                    }
                    *newest = b;
                }
                // Late data older than the window is not counted.
                if b > *newest - ROLLING_BUCKETS {
                    let slot = &mut buckets[b.rem_euclid(ROLLING_BUCKETS) as usize];
                    let before = *slot;
                    *slot = slot.saturating_add(amount);
                    *total = total.saturating_add(*slot - before);
                }
            }
        }
    }
}

/// A counter a reservation asks for, with the most it may reach.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub key: CounterKey,
    pub window: Window,
    pub amount: u64,
    /// Settled + reserved + amount must stay at or below this.
    pub ceiling: u64,
    pub expires_at: i64,
}

/// The first counter that did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom {
    /// Index into the asks.
    pub index: usize,
    /// What the counter already holds (settled + reserved).
    pub used: u64,
}

/// Scopes of one rule whose counters were evicted, in one window (calendar)
/// or one window-length generation (rolling).
#[derive(Debug)]
struct EvictedGroup {
    /// When every counter of the group would have ended anyway.
    expires_at: i64,
    scopes: HashSet<u64, BuildKeyHasher>,
}

/// What the ledger did to stay within its capacity, since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Live counters.
    pub counters: usize,
    /// Scopes evicted and not rebuilt yet (their windows still open).
    pub evicted_scopes: usize,
    /// Counters evicted to stay within the capacity.
    pub evictions: u64,
    /// Counters rebuilt from the store after an eviction.
    pub rebuilds: u64,
    /// Times the ledger was over capacity with nothing it could evict (every
    /// counter held reservations or calls not stored yet).
    pub evictions_deferred: u64,
    /// Evicted counters counted into before being rebuilt (a race lost):
    /// rebuilt, with the stored calls added, once their calls are stored.
    pub counted_before_rebuild: u64,
}

/// All counters.
#[derive(Debug)]
pub struct Ledger {
    counters: HashMap<CounterKey, Counter, BuildKeyHasher>,
    ops_since_sweep: u32,
    capacity: usize,
    /// Past this many counters, try evicting (raised when nothing could be).
    evict_at: usize,
    tick: u64,
    /// Ticks taken before calls were counted whose rows are not stored yet
    /// (a multiset): counters touched at or after the oldest are kept.
    unstored: BTreeMap<u64, u32>,
    evicted: HashMap<(u64, i64), EvictedGroup>,
    /// Counters marked `partial`.
    partials: usize,
    stats: LedgerStats,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::with_capacity(usize::MAX)
    }
}

/// Wall-clock now, for eviction: spans may claim any time, so the time of
/// the call that made the ledger full is not used to decide what ended.
fn wall_now() -> i64 {
    crate::clock::now_unix_nanos()
}

impl Ledger {
    /// A ledger holding at most `capacity` counters (at least 16).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(16);
        Self {
            counters: HashMap::default(),
            ops_since_sweep: 0,
            capacity,
            evict_at: capacity,
            tick: 0,
            unstored: BTreeMap::new(),
            evicted: HashMap::default(),
            partials: 0,
            stats: LedgerStats::default(),
        }
    }

    pub fn get(&self, key: &CounterKey) -> Option<&Counter> {
        self.counters.get(key)
    }

    pub fn get_mut(&mut self, key: &CounterKey) -> Option<&mut Counter> {
        self.counters.get_mut(key)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Marks calls about to be counted whose rows are not stored yet;
    /// [`Ledger::stored`] with the returned tick once they are (or lost).
    pub fn unstored_from(&mut self) -> u64 {
        let t = self.next_tick();
        *self.unstored.entry(t).or_insert(0) += 1;
        t
    }

    /// The rows marked at `tick` are stored.
    pub fn stored(&mut self, tick: u64) {
        if let Some(n) = self.unstored.get_mut(&tick) {
            *n -= 1;
            if *n == 0 {
                self.unstored.remove(&tick);
                if self.unstored.is_empty() {
                    // Every counted call is stored: all counters may go.
                    self.trim();
                }
            }
        }
    }

    /// Whether any counter may need a rebuild (cheap pre-check).
    pub fn may_need_rebuild(&self) -> bool {
        !self.evicted.is_empty() || self.partials > 0
    }

    /// Removes and returns a counter (a rebuild's scratch ledger).
    pub fn take(&mut self, key: &CounterKey) -> Option<Counter> {
        self.counters.remove(key)
    }

    /// Whether the counter `key` of `window` was evicted (or counted only
    /// partly since) and must be rebuilt from the store before use at `now`.
    pub fn needs_rebuild(&self, key: &CounterKey, window: &Window, now: i64) -> bool {
        if let Some(c) = self.counters.get(key) {
            return c.partial;
        }
        self.is_evicted(key, window, now)
    }

    fn is_evicted(&self, key: &CounterKey, window: &Window, now: i64) -> bool {
        if self.evicted.is_empty() {
            return false;
        }
        let has = |group: i64| {
            self.evicted
                .get(&(key.rule, group))
                .is_some_and(|g| g.scopes.contains(&key.scope))
        };
        match window.kind {
            WindowKind::Calendar(_) => has(key.window_start),
            // The generation of the counter's latest usage: `now`'s or a
            // neighbour's (a late or early span).
            WindowKind::Rolling => {
                let g = now.div_euclid(window.unit.nominal_nanos());
                has(g) || has(g.saturating_sub(1)) || has(g.saturating_add(1))
            }
        }
    }

    fn forget_evicted(&mut self, key: &CounterKey, window: &Window, now: i64) -> bool {
        let groups: &[i64] = match window.kind {
            WindowKind::Calendar(_) => &[key.window_start],
            WindowKind::Rolling => {
                let g = now.div_euclid(window.unit.nominal_nanos());
                &[g, g.saturating_sub(1), g.saturating_add(1)]
            }
        };
        let mut found = false;
        for g in groups {
            if let Some(group) = self.evicted.get_mut(&(key.rule, *g)) {
                found |= group.scopes.remove(&key.scope);
                if group.scopes.is_empty() {
                    self.evicted.remove(&(key.rule, *g));
                }
            }
        }
        found
    }

    /// Installs a counter rebuilt from the stored calls, if `key` still
    /// needs it; `false` if another caller rebuilt it first, or if the
    /// partial counter there holds calls not stored yet (try again later).
    pub fn install(&mut self, key: CounterKey, window: &Window, now: i64, mut c: Counter) -> bool {
        let safe = self.safe_tick();
        match self.counters.get(&key) {
            Some(existing) if !existing.partial => return false,
            Some(existing) if existing.touched >= safe => return false,
            Some(existing) => {
                c.reserved = existing.reserved;
                self.partials -= 1;
            }
            None => {
                if !self.forget_evicted(&key, window, now) {
                    return false;
                }
            }
        }
        c.touched = self.next_tick();
        c.partial = false;
        self.counters.insert(key, c);
        self.stats.rebuilds += 1;
        self.make_room(Some(&key));
        true
    }

    /// The oldest tick whose calls are not stored: counters touched before
    /// it hold only stored calls.
    fn safe_tick(&self) -> u64 {
        self.unstored.keys().next().copied().unwrap_or(u64::MAX)
    }

    fn entry(
        &mut self,
        key: CounterKey,
        window: &Window,
        now: i64,
        expires_at: i64,
    ) -> &mut Counter {
        let tick = self.next_tick();
        let mut partial = false;
        if !self.counters.contains_key(&key) {
            // Room is made before the new counter is in, so it is not a victim.
            self.make_room(None);
            // Counted before its rebuild: a bug of the caller, or a race
            // lost; the stored calls are added when it is rebuilt.
            partial = self.forget_evicted(&key, window, now);
            if partial {
                self.partials += 1;
                self.stats.counted_before_rebuild += 1;
            }
        }
        let c = self.counters.entry(key).or_insert_with(|| {
            let mut c = Counter::new(window, expires_at);
            c.partial = partial;
            c
        });
        c.touched = tick;
        c.expires_at = c.expires_at.max(expires_at);
        c
    }

    /// Evicts down to 90 % of the capacity if over it, now that calls
    /// holding counters were stored.
    pub fn trim(&mut self) {
        if self.counters.len() > self.capacity {
            self.evict_at = self.capacity;
            self.make_room(None);
        }
    }

    /// Evicts least recently used counters down to 90 % of the capacity
    /// when over it. Counters whose window ended are dropped first.
    fn make_room(&mut self, keep: Option<&CounterKey>) {
        if self.counters.len() <= self.evict_at {
            return;
        }
        let now = wall_now();
        self.drop_ended(now, keep);
        self.evicted.retain(|_, g| g.expires_at > now);
        let target = self.capacity - self.capacity / 10;
        let excess = self.counters.len().saturating_sub(target);
        if excess > 0 {
            let safe = self.safe_tick();
            let mut victims: Vec<(u64, CounterKey)> = self
                .counters
                .iter()
                .filter(|(k, c)| {
                    c.reserved == 0 && c.touched < safe && !c.partial && Some(*k) != keep
                })
                .map(|(k, c)| (c.touched, *k))
                .collect();
            if victims.len() > excess {
                victims.select_nth_unstable_by_key(excess, |(touched, _)| *touched);
                victims.truncate(excess);
            }
            if victims.is_empty() {
                self.stats.evictions_deferred += 1;
            }
            for (_, key) in victims {
                if let Some(c) = self.counters.remove(&key) {
                    self.remember_evicted(key, &c);
                }
            }
        }
        // Nothing evictable: wait for a tenth more before scanning again.
        self.evict_at = if self.counters.len() > self.capacity {
            self.counters.len() + self.capacity / 10
        } else {
            self.capacity
        };
    }

    fn remember_evicted(&mut self, key: CounterKey, c: &Counter) {
        let (group, expires_at) = match &c.settled {
            Settled::Calendar(_) => (key.window_start, c.expires_at),
            Settled::Rolling { len, .. } => {
                let g = (c.expires_at - *len).div_euclid(*len);
                (g, g.saturating_add(2).saturating_mul(*len))
            }
        };
        self.evicted
            .entry((key.rule, group))
            .or_insert_with(|| EvictedGroup {
                expires_at,
                scopes: HashSet::default(),
            })
            .scopes
            .insert(key.scope);
        self.stats.evictions += 1;
    }

    /// Reserves every ask, or none: returns the first that does not fit.
    pub fn try_reserve(&mut self, asks: &[Ask], now: i64) -> Result<(), NoRoom> {
        for (index, ask) in asks.iter().enumerate() {
            let used = self
                .counters
                .get(&ask.key)
                .map_or(0, |c| c.committed(&ask.window, now));
            if used.saturating_add(ask.amount) > ask.ceiling {
                return Err(NoRoom { index, used });
            }
        }
        for ask in asks {
            let c = self.entry(ask.key, &ask.window, now, ask.expires_at);
            c.reserved = c.reserved.saturating_add(ask.amount);
        }
        Ok(())
    }

    /// Gives back reserved amounts.
    pub fn release(&mut self, key: &CounterKey, amount: u64) {
        if let Some(c) = self.counters.get_mut(key) {
            c.reserved = c.reserved.saturating_sub(amount);
        }
    }

    /// Adds settled usage at time `at`; returns the counter for threshold checks.
    pub fn settle(
        &mut self,
        key: CounterKey,
        window: &Window,
        at: i64,
        amount: u64,
        expires_at: i64,
    ) -> &mut Counter {
        let c = self.entry(key, window, at, expires_at);
        c.add_settled(window, at, amount);
        c
    }

    /// Forgets counters whose window ended, every few thousand operations.
    pub fn maybe_sweep(&mut self, now: i64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep >= 4096 {
            self.ops_since_sweep = 0;
            self.drop_ended(now, None);
        }
    }

    /// Forgets counters whose window ended and that hold no reservation.
    fn drop_ended(&mut self, now: i64, keep: Option<&CounterKey>) {
        self.counters
            .retain(|k, c| c.expires_at > now || c.reserved > 0 || Some(k) == keep);
        if self.partials > 0 {
            self.partials = self.counters.values().filter(|c| c.partial).count();
        }
    }

    /// Drops every counter's settled usage (and crossed thresholds); a
    /// counter holding reservations keeps them.
    pub fn forget_settled(&mut self) {
        self.counters.retain(|_, c| c.reserved > 0);
        self.evicted.clear();
        self.partials = 0;
        for c in self.counters.values_mut() {
            c.settled = match &c.settled {
                Settled::Calendar(_) => Settled::Calendar(0),
                Settled::Rolling { len, .. } => Settled::rolling(*len),
            };
            c.crossed = 0;
            c.over_since = None;
            c.partial = false;
        }
    }

    /// Number of live counters.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            counters: self.counters.len(),
            evicted_scopes: self.evicted.values().map(|g| g.scopes.len()).sum(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::engine::window::WindowUnit;

    /// A rolling counter read the slow way: every bucket in the window.
    fn summed(c: &Counter, window: &Window, now: i64) -> u64 {
        let Settled::Rolling {
            buckets, newest, ..
        } = &c.settled
        else {
            return 0;
        };
        if *newest == i64::MIN {
            return 0;
        }
        let current = now.div_euclid(window.bucket_nanos());
        (0..ROLLING_BUCKETS)
            .map(|back| current - back)
            .filter(|b| *b <= *newest && *b > current - ROLLING_BUCKETS)
            .map(|b| buckets[b.rem_euclid(ROLLING_BUCKETS) as usize])
            .fold(0u64, u64::saturating_add)
    }

    proptest! {
        /// The running total answers what summing the buckets answers.
        #[test]
        fn rolling_total_equals_the_bucket_sum(
            steps in proptest::collection::vec((0i64..3_000, 0u64..1_000, 0i64..4_000), 1..200)
        ) {
            let window = Window { unit: WindowUnit::Minute, kind: WindowKind::Rolling };
            let mut c = Counter::new(&window, i64::MAX);
            let mut at = 1_000_000_000_000i64;
            for (advance_ms, amount, read_ahead_ms) in steps {
                at += advance_ms * 1_000_000;
                c.add_settled(&window, at, amount);
                let now = at + read_ahead_ms * 1_000_000;
                prop_assert_eq!(c.settled(&window, now), summed(&c, &window, now));
            }
        }
    }
}
