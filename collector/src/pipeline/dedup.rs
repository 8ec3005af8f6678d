//! The dedup window: a call seen twice is counted and stored once.
//!
//! Two things send the same call twice: an exporter retrying a request it
//! got no answer for (same trace and span ids), and two instrumentations of
//! one call (a provider SDK's own tracing plus an instrumentation library:
//! different spans, the same provider response id). Both must be dropped
//! *before* the rules engine, or a budget would count the call twice.
//!
//! The window remembers the identities of the last `capacity` calls, so it
//! costs a bounded amount of memory (about 40 bytes per identity) and no
//! random-key index in the store. Identities are 64-bit hashes (foldhash,
//! seeded at random per process: a sender cannot aim collisions at other
//! calls): with the default window a false "seen" is about one in 10^14
//! lookups. The window is the only guard on every store (a unique key in
//! SQLite cost a third of its write time, since calls arrive out of start
//! order): a repeat arriving after `capacity` newer calls is stored again.
//! The window is refilled from the store at start-up with at least the
//! calls of the last ten minutes (see `restore`), so a restart does not
//! open a gap.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};

use tollgate_rules::CallRecord;

/// Identities of recently seen calls, oldest evicted first.
#[derive(Debug)]
pub struct DedupWindow {
    seen: HashSet<u64, IdentityHasher>,
    order: VecDeque<u64>,
    capacity: usize,
    hasher: foldhash::quality::RandomState,
}

impl DedupWindow {
    /// A window remembering the identities of about `calls` calls.
    pub fn new(calls: usize) -> Self {
        // A call has up to two identities (span, provider response).
        let capacity = calls.saturating_mul(2).max(2);
        // Grown on demand: an idle collector does not hold the full window.
        Self {
            seen: HashSet::with_hasher(IdentityHasher),
            order: VecDeque::new(),
            capacity,
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// Records `call`; `false` if it was already seen (then nothing changes).
    pub fn insert(&mut self, call: &CallRecord) -> bool {
        // One probe per identity (a look-up and an insert would be two,
        // each a likely cache miss in a window of this size).
        let span = self.span_identity(call);
        if let Some(k) = span
            && !self.seen.insert(k)
        {
            return false;
        }
        let response = self.response_identity(call);
        if let Some(k) = response
            && !self.seen.insert(k)
        {
            if let Some(k) = span {
                self.seen.remove(&k);
            }
            return false;
        }
        for key in [span, response].into_iter().flatten() {
            self.remember(key);
        }
        true
    }

    /// Keeps only the calls of `calls` not seen before (nor earlier in `calls`);
    /// returns how many were dropped.
    pub fn retain_new(&mut self, calls: &mut Vec<CallRecord>) -> usize {
        let before = calls.len();
        calls.retain(|c| self.insert(c));
        before - calls.len()
    }

    /// Forgets every identity (before a refill from the store).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
    }

    /// Identities remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Queues `key`, just added to `seen`, for eviction.
    fn remember(&mut self, key: u64) {
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
    }

    /// (trace id, span id); none for calls without a span id.
    fn span_identity(&self, call: &CallRecord) -> Option<u64> {
        if call.span_id.is_empty() {
            return None;
        }
        Some(self.hash(b'S', &[&call.trace_id, &call.span_id]))
    }

    /// (provider, response id); none when the provider gave no id.
    fn response_identity(&self, call: &CallRecord) -> Option<u64> {
        let id = call.request_id.as_deref().filter(|id| !id.is_empty())?;
        Some(self.hash(b'R', &[call.provider.as_deref().unwrap_or(""), id]))
    }

    fn hash(&self, kind: u8, parts: &[&str]) -> u64 {
        // The kind byte keeps span and response identities apart; 0xff
        // (never in UTF-8) ends each part, so ("ab", "c") != ("a", "bc").
        let mut h = self.hasher.build_hasher();
        h.write_u8(kind);
        for p in parts {
            h.write(p.as_bytes());
            h.write_u8(0xff);
        }
        h.finish()
    }
}

/// Keys are already hashes: the set uses them as they are.
#[derive(Debug, Clone, Copy, Default)]
struct IdentityHasher;

impl BuildHasher for IdentityHasher {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

#[derive(Debug, Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `HashSet<u64>`; fold anything else.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(trace: &str, span: &str, provider: &str, response: Option<&str>) -> CallRecord {
        CallRecord {
            trace_id: trace.into(),
            span_id: span.into(),
            provider: Some(provider.into()),
            request_id: response.map(Into::into),
            ..CallRecord::default()
        }
    }

    #[test]
    fn a_retried_span_is_dropped() {
        let mut w = DedupWindow::new(10);
        let mut batch = vec![
            call("t1", "s1", "openai", None),
            call("t1", "s2", "openai", None),
            call("t1", "s1", "openai", None),
        ];
        assert_eq!(w.retain_new(&mut batch), 1);
        assert_eq!(batch.len(), 2);
        let mut again = vec![
            call("t1", "s2", "openai", None),
            call("t2", "s1", "openai", None),
        ];
        assert_eq!(w.retain_new(&mut again), 1);
        assert_eq!(again[0].trace_id, "t2");
    }

    #[test]
    fn two_instrumentations_of_one_response_are_one_call() {
        let mut w = DedupWindow::new(10);
        assert!(w.insert(&call("t1", "sdk", "openai", Some("chatcmpl-1"))));
        assert!(!w.insert(&call("t1", "lib", "openai", Some("chatcmpl-1"))));
        // A refused call leaves nothing behind: its span is still new.
        assert!(w.insert(&call("t1", "lib", "openai", None)));
        // The same id from another provider is another call.
        assert!(w.insert(&call("t1", "x", "anthropic", Some("chatcmpl-1"))));
        // Calls without ids are never merged.
        assert!(w.insert(&call("t9", "", "openai", None)));
        assert!(w.insert(&call("t9", "", "openai", None)));
    }

    #[test]
    fn the_window_forgets_the_oldest_and_stays_bounded() {
        let mut w = DedupWindow::new(3);
        for i in 0..100 {
            assert!(w.insert(&call("t", &format!("s{i}"), "openai", None)));
        }
        assert!(w.len() <= 6, "{}", w.len());
        // Recent identities are still known, the first ones forgotten.
        assert!(!w.insert(&call("t", "s99", "openai", None)));
        assert!(w.insert(&call("t", "s0", "openai", None)));
    }
}
