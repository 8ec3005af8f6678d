//! The ledger: usage counters keyed by (rule, scope key, window).
//!
//! Amounts are integers in the metric's unit (tokens, requests, or
//! nano-dollars for cost) so that sums are exact: the counter of a window is
//! always the sum of what was settled into it. Reservations hold worst-case
//! amounts on several counters at once; [`Ledger::try_reserve`] checks every
//! counter first and applies only if all fit, so a refusal leaves no trace.
//! Callers serialise access (the engine keeps the ledger behind one mutex),
//! which makes reserve-check-apply atomic.

use std::collections::HashMap;

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
    },
}

impl Counter {
    fn new(window: &Window, expires_at: i64) -> Self {
        let settled = match window.kind {
            WindowKind::Calendar(_) => Settled::Calendar(0),
            WindowKind::Rolling => Settled::Rolling {
                buckets: vec![0; ROLLING_BUCKETS as usize].into_boxed_slice(),
                newest: i64::MIN,
                total: 0,
            },
        };
        Self {
            settled,
            reserved: 0,
            expires_at,
            crossed: 0,
            over_since: None,
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

/// All counters.
#[derive(Debug, Default)]
pub struct Ledger {
    counters: HashMap<CounterKey, Counter, BuildKeyHasher>,
    ops_since_sweep: u32,
}

impl Ledger {
    pub fn get(&self, key: &CounterKey) -> Option<&Counter> {
        self.counters.get(key)
    }

    pub fn get_mut(&mut self, key: &CounterKey) -> Option<&mut Counter> {
        self.counters.get_mut(key)
    }

    fn entry(&mut self, key: CounterKey, window: &Window, expires_at: i64) -> &mut Counter {
        self.counters
            .entry(key)
            .or_insert_with(|| Counter::new(window, expires_at))
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
            let c = self.entry(ask.key, &ask.window, ask.expires_at);
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
        let c = self.entry(key, window, expires_at);
        c.add_settled(window, at, amount);
        c
    }

    /// Forgets counters whose window ended, every few thousand operations.
    pub fn maybe_sweep(&mut self, now: i64) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep >= 4096 {
            self.ops_since_sweep = 0;
            self.counters
                .retain(|_, c| c.expires_at > now || c.reserved > 0);
        }
    }

    /// Drops every counter's settled usage (and crossed thresholds); a
    /// counter holding reservations keeps them.
    pub fn forget_settled(&mut self) {
        self.counters.retain(|_, c| c.reserved > 0);
        for c in self.counters.values_mut() {
            c.settled = match c.settled {
                Settled::Calendar(_) => Settled::Calendar(0),
                Settled::Rolling { .. } => Settled::Rolling {
                    buckets: vec![0; ROLLING_BUCKETS as usize].into_boxed_slice(),
                    newest: i64::MIN,
                    total: 0,
                },
            };
            c.crossed = 0;
            c.over_since = None;
        }
    }

    /// Number of live counters.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
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
