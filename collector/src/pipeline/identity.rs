//! Call identity: one row per real model call, however many spans describe it.
//!
//! Three things make several rows out of one call, and one thing makes one
//! row out of several calls; this stage tells them apart before the rules
//! count anything and before any store:
//!
//! - **Exporter retries** repeat a span: the same (trace id, span id). The
//!   repeat is dropped.
//! - **Layers describing one call inside one trace**: an instrumentation
//!   library's span around the provider SDK's own span, a framework's span
//!   (LangChain's `ChatOpenAI`) around a client library's span. The two are
//!   parent and child, name the same provider (when both do) and a model of
//!   the same family. They collapse into one row that keeps the best of
//!   each description (see [`merge`]).
//! - **Two tracers that do not share a context** (OpenLLMetry's Anthropic
//!   instrumentation beside the Anthropic SDK's own tracing starts two
//!   traces for one call): the same provider response id, only when that id
//!   is *distinctive* (long and varied, see [`distinctive_response_id`]),
//!   and only when the two spans overlap in time.
//! - **Layers without ids or links** (OpenInference's LangChain and OpenAI
//!   instrumentations: two traces, or two siblings, and no response id):
//!   spans of *different* instrumentation libraries from one application,
//!   naming the same provider, model family and operation, reporting the
//!   very same non-zero usage, that start and end within
//!   [`NESTING_TOLERANCE_NANOS`] of each other. Two spans of one library
//!   are never merged this way, so concurrent identical calls stay apart.
//! - **Provider response ids are not unique**: Ollama draws `chatcmpl-0..998`,
//!   other servers return constant or empty ids. Short or repetitive ids are
//!   never keys, and a distinctive id only joins spans that overlap in time,
//!   so distinct calls that happen to share an id are all kept. Rows the
//!   gateway made (it knows every call it sent) are only ever matched on
//!   their own span, against exporter-style repeats (a Kafka redelivery).
//!
//! **Counting once, at once.** The first description of a call is counted
//! by the rules when it arrives, so the kill-switch does not wait for
//! relatives that may never come. A relative in the same batch is merged
//! before anything counts it. A relative arriving later (another export
//! request, seconds apart, or after a restart: the state is refilled from
//! the store) is merged into the stored row by a [`CallMerge`], and only
//! the usage it adds beyond what was counted is counted ([`Correction`]).
//!
//! **Memory.** Remembered calls live in a bounded map keyed by trace
//! ([`Generations`]), forgetting the least recently used traces past
//! `capacity` calls or `horizon` after their last span; the response ids
//! and usage fingerprints that find calls across traces are kept for a
//! minute ([`LINK_HORIZON`]). A remembered call costs about 340 bytes of
//! resident memory with one call a trace, 450 bytes with ten (measured by
//! `examples/identity_memory.rs`). A trace of more than [`INDEX_FROM`]
//! calls (a long agent run) also keeps an index of its span ids, parent ids
//! and keys, so each arriving span costs lookups, not a scan of the run. A
//! repeat or relative arriving after its call was forgotten is stored as a
//! call of its own.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use tollgate_rules::pricing::{PriceTable, TokenUsage};
use tollgate_rules::{CallRecord, CallStatus, CostSource, Mode};

pub use crate::sinks::{CallMerge, Correction};

/// How close the starts and the ends of two spans of different libraries
/// with the same usage must be to describe one call (a framework's wrapper
/// around a client call adds milliseconds).
pub const NESTING_TOLERANCE_NANOS: i64 = 250_000_000;

/// What became of the calls of one batch.
#[derive(Debug, Default)]
pub struct Sorted {
    /// Repeats of a span already seen (exporter retries, redeliveries).
    pub retries: usize,
    /// Descriptions merged into a call of the same batch.
    pub merged: usize,
    /// Descriptions of calls already passed on: each is a [`CallMerge`].
    pub late: Vec<CallMerge>,
}

/// One span that described a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Description {
    span: u64,
    parent: u64,
}

/// What is remembered of one call.
#[derive(Debug, Clone)]
struct Remembered {
    descriptions: SmallVec<[Description; 2]>,
    /// Hashes; 0 when the span did not say.
    provider: u64,
    operation: u64,
    models: [u64; 2],
    response: u64,
    /// Who and what, with the exact usage (0: no usage, never matched).
    fingerprint: u64,
    /// The instrumentation libraries that described it (0: unknown).
    instrumentations: SmallVec<[u64; 2]>,
    start: i64,
    end: i64,
    gateway: bool,
    /// The stored row's span id (its identity with the trace id).
    row_span: SpanId,
    /// The outermost parent known, so a late merge ties the row to its run.
    outer_parent: SpanId,
    /// Usage and cost counted so far.
    usage: [u64; 5],
    cost: Option<f64>,
    /// Batch and index while the call is in the batch being sorted.
    slot: Option<(u64, usize)>,
}

/// A span id as sent: the usual 16 hex digits kept as their value (no
/// allocation), anything else as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SpanId {
    Hex(u64),
    Other(Box<str>),
}

impl SpanId {
    fn of(span: &str) -> Self {
        match u64::from_str_radix(span, 16) {
            Ok(n) if span.len() == 16 && span.bytes().all(|b| !b.is_ascii_uppercase()) => {
                SpanId::Hex(n)
            }
            _ => SpanId::Other(span.into()),
        }
    }

    fn to_hex(&self) -> String {
        match self {
            SpanId::Hex(n) => format!("{n:016x}"),
            SpanId::Other(s) => s.to_string(),
        }
    }
}

/// How long a response id or usage fingerprint can find its call: they
/// only join spans that overlap in time (or nearly), and the descriptions
/// of one call are exported seconds apart.
const LINK_HORIZON: Duration = Duration::from_secs(60);

/// What [`Generations`] counts against its capacity.
trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for TraceCalls {
    fn weight(&self) -> usize {
        self.calls.len()
    }
}

impl Weight for u64 {
    fn weight(&self) -> usize {
        1
    }
}

/// A bounded map that forgets by generations: entries are put into the
/// current generation; once it holds half the capacity or is half the
/// horizon old, it becomes the previous one and the previous one is
/// dropped. An entry taken and put back moves to the current generation,
/// so an entry lives between half the horizon and the whole of it after
/// its last use, and at most `capacity` (by [`Weight`]) are held.
///
/// Chosen over a moka cache on this path: the writer task sorts every call
/// alone, so no concurrency is needed, and moka's insert with its admission
/// policy cost about 2.7 us a call (`examples/identity_memory`), which took
/// ingest into SQLite from 54 % to 30 % of the decode-only baseline.
struct Generations<V> {
    current: HashMap<u64, V, IdentityHasher>,
    previous: HashMap<u64, V, IdentityHasher>,
    current_weight: usize,
    previous_weight: usize,
    since: Instant,
    half_capacity: usize,
    half_horizon: Duration,
}

impl<V: Weight> Generations<V> {
    fn new(capacity: usize, horizon: Duration) -> Self {
        Self {
            current: HashMap::default(),
            previous: HashMap::default(),
            current_weight: 0,
            previous_weight: 0,
            since: Instant::now(),
            half_capacity: (capacity / 2).max(1),
            half_horizon: horizon / 2,
        }
    }

    fn get(&self, key: u64) -> Option<&V> {
        self.current.get(&key).or_else(|| self.previous.get(&key))
    }

    fn take(&mut self, key: u64) -> Option<V> {
        if let Some(v) = self.current.remove(&key) {
            self.current_weight -= v.weight();
            return Some(v);
        }
        let v = self.previous.remove(&key)?;
        self.previous_weight -= v.weight();
        Some(v)
    }

    fn put(&mut self, key: u64, value: V) {
        let weight = value.weight();
        if weight == 0 {
            return;
        }
        if self.current_weight >= self.half_capacity || self.since.elapsed() >= self.half_horizon {
            self.previous = std::mem::take(&mut self.current);
            self.previous_weight = std::mem::replace(&mut self.current_weight, 0);
            self.since = Instant::now();
        }
        self.current_weight += weight;
        if let Some(old) = self.current.insert(key, value) {
            self.current_weight -= old.weight();
        }
    }

    fn weight(&self) -> usize {
        self.current_weight + self.previous_weight
    }

    /// Bytes of the two tables (their capacity, a control byte a slot),
    /// without what the values point to.
    fn table_bytes(&self) -> usize {
        (self.current.capacity() + self.previous.capacity()) * (std::mem::size_of::<(u64, V)>() + 1)
    }

    fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
        self.current_weight = 0;
        self.previous_weight = 0;
    }
}

/// A trace with more calls than this gets an index of its span ids,
/// parent ids and keys: without one, a long agent run (one trace, many
/// thousands of calls) made every call a scan of the run's calls.
const INDEX_FROM: usize = 16;

/// The calls remembered of one trace.
#[derive(Debug, Default)]
struct TraceCalls {
    calls: Vec<Remembered>,
    index: Option<Box<TraceIndex>>,
}

/// Where to find a trace's calls by what an arriving span may share with
/// them; each value lists call positions, ascending.
#[derive(Debug, Default)]
struct TraceIndex {
    /// A description's span id.
    spans: HashMap<u64, SmallVec<[u32; 1]>, IdentityHasher>,
    /// A description's parent span id.
    parents: HashMap<u64, SmallVec<[u32; 1]>, IdentityHasher>,
    /// A call's response id and usage fingerprint (hashes of their own kinds).
    keys: HashMap<u64, SmallVec<[u32; 1]>, IdentityHasher>,
}

fn add_to(map: &mut HashMap<u64, SmallVec<[u32; 1]>, IdentityHasher>, key: u64, at: u32) {
    if key == 0 {
        return;
    }
    let list = map.entry(key).or_default();
    if list.last() != Some(&at) {
        list.push(at);
    }
}

impl TraceIndex {
    fn add_call(&mut self, at: u32, r: &Remembered) {
        for d in &r.descriptions {
            self.add_description(at, *d);
        }
        add_to(&mut self.keys, r.response, at);
        add_to(&mut self.keys, r.fingerprint, at);
    }

    fn add_description(&mut self, at: u32, d: Description) {
        add_to(&mut self.spans, d.span, at);
        add_to(&mut self.parents, d.parent, at);
    }
}

impl TraceCalls {
    /// Adds `r`. Most traces hold one call: their list is allocated for
    /// exactly one (a `Vec` grows to four at its first push, which made one
    /// remembered call cost 1.1 KB instead of 340 bytes).
    fn push(&mut self, r: Remembered) {
        if self.calls.capacity() == 0 {
            self.calls.reserve_exact(1);
        }
        let at = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
        if let Some(index) = &mut self.index {
            index.add_call(at, &r);
        }
        self.calls.push(r);
        if self.index.is_none() && self.calls.len() > INDEX_FROM {
            let mut index = Box::<TraceIndex>::default();
            for (at, r) in self.calls.iter().enumerate() {
                index.add_call(u32::try_from(at).unwrap_or(u32::MAX), r);
            }
            self.index = Some(index);
        }
    }

    /// Records that the span `d` describes call `at` too.
    fn described(&mut self, at: usize, d: Description) {
        if let Some(r) = self.calls.get_mut(at) {
            r.descriptions.push(d);
            if let Some(index) = &mut self.index {
                index.add_description(u32::try_from(at).unwrap_or(u32::MAX), d);
            }
        }
    }

    /// Whether a call was already described by `span`.
    fn has_span(&self, span: u64) -> bool {
        match &self.index {
            Some(index) => index.spans.contains_key(&span),
            None => self
                .calls
                .iter()
                .any(|r| r.descriptions.iter().any(|d| d.span == span)),
        }
    }

    /// The first call (in order) that `pick` accepts, among those sharing
    /// one of `spans`, `parents` or `keys` when indexed, else among all.
    fn first(
        &self,
        spans: &[u64],
        parents: &[u64],
        keys: &[u64],
        pick: impl Fn(&Remembered) -> bool,
    ) -> Option<usize> {
        let Some(index) = &self.index else {
            return self.calls.iter().position(pick);
        };
        let mut candidates: SmallVec<[u32; 8]> = SmallVec::new();
        let lists = [
            (&index.spans, spans),
            (&index.parents, parents),
            (&index.keys, keys),
        ];
        for (map, wanted) in lists {
            for key in wanted.iter().filter(|k| **k != 0) {
                if let Some(list) = map.get(key) {
                    candidates.extend_from_slice(list);
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .map(|at| at as usize)
            .find(|&at| self.calls.get(at).is_some_and(&pick))
    }
}

/// Keys are already hashes: the maps use them as they are.
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
        // Only `write_u64` is used by `HashMap<u64, _>`; fold anything else.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The identity stage's memory. One per writer.
pub struct CallIdentity {
    /// Trace -> the calls remembered in it.
    traces: Generations<TraceCalls>,
    /// Distinctive response ids and usage fingerprints (their hashes are
    /// kept apart by a kind byte) -> the trace that holds the call.
    links: Generations<u64>,
    hasher: foldhash::quality::RandomState,
    prices: Option<Arc<PriceTable>>,
    generation: u64,
    /// The calls of the batch being sorted that are not sorted yet.
    unsorted: Vec<CallRecord>,
}

impl std::fmt::Debug for CallIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallIdentity")
            .field("calls", &self.traces.weight())
            .finish_non_exhaustive()
    }
}

impl CallIdentity {
    /// Remembers about `capacity` calls, each for `horizon` after its trace
    /// was last seen (at least half of each, see [`Generations`]).
    pub fn new(capacity: usize, horizon: Duration) -> Self {
        let capacity = capacity.max(2);
        Self {
            traces: Generations::new(capacity, horizon),
            links: Generations::new(capacity, LINK_HORIZON),
            hasher: foldhash::quality::RandomState::default(),
            prices: None,
            generation: 0,
            unsorted: Vec::new(),
        }
    }

    /// Re-prices merged usage with `prices` (else the higher of the two costs).
    pub fn with_prices(mut self, prices: Arc<PriceTable>) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Calls remembered now.
    pub fn remembered_calls(&self) -> u64 {
        self.traces.weight() as u64
    }

    /// Bytes the identity's maps hold: both generations of both tables at
    /// their capacity, and one [`Remembered`] a call (the rare spilled
    /// small vectors and non-hex span ids are not counted, nor is the
    /// allocator's overhead: resident memory is about twice this, see the
    /// module's documentation). Constant time: read after every batch.
    pub fn heap_bytes(&self) -> usize {
        self.traces.table_bytes()
            + self.traces.weight() * std::mem::size_of::<Remembered>()
            + self.links.table_bytes()
    }

    /// After a panic in [`CallIdentity::sort`]: puts the calls it had not
    /// sorted yet back after those it had, and forgets everything (the
    /// state may be half updated). Only the call being sorted when it
    /// panicked is missing.
    pub fn recover(&mut self, calls: &mut Vec<CallRecord>) {
        self.unsorted.reverse();
        calls.append(&mut self.unsorted);
        self.clear();
    }

    /// Forgets everything (before a refill from the store).
    pub fn clear(&mut self) {
        self.traces.clear();
        self.links.clear();
    }

    /// Remembers a stored call (refill at start-up); nothing is dropped.
    pub fn remember_stored(&mut self, call: &CallRecord) {
        let trace = self.hash(b'T', &[&call.trace_id]);
        let facts = self.facts(call);
        let mut own = self.traces.take(trace).unwrap_or_default();
        let r = self.remembered(call, &facts, None);
        self.link(&r, trace);
        own.push(r);
        self.traces.put(trace, own);
    }

    /// Sorts one batch in place: drops retries, merges relatives into the
    /// calls of this batch, and returns the descriptions of calls passed on
    /// in earlier batches as merges.
    pub fn sort(&mut self, calls: &mut Vec<CallRecord>) -> Sorted {
        self.generation += 1;
        let generation = self.generation;
        let mut sorted = Sorted::default();
        // Calls not sorted yet wait in `self.unsorted` (oldest last), so a
        // panic while sorting loses at most the call being sorted (see
        // [`CallIdentity::recover`]).
        self.unsorted.clear();
        self.unsorted.append(calls);
        self.unsorted.reverse();
        calls.reserve(self.unsorted.len());
        while let Some(call) = self.unsorted.pop() {
            let trace = self.hash(b'T', &[&call.trace_id]);
            let span = self.span_key(&call.span_id);
            let parent = self.span_key(&call.parent_span_id);
            let mut own = self.traces.take(trace).unwrap_or_default();

            // An exact repeat of a span already described.
            if span != 0 && own.has_span(span) {
                sorted.retries += 1;
                self.traces.put(trace, own);
                continue;
            }
            let facts = self.facts(&call);
            let relative = if call.mode == Mode::Gateway {
                None
            } else if let Some(i) = find_relative(&own, span, parent, &facts) {
                Some((trace, i))
            } else {
                self.across_traces(&facts, trace, &own)
                    .or_else(|| self.same_usage(&facts, trace, &own))
            };
            let Some((in_trace, index)) = relative else {
                // A call of its own.
                let r = self.remembered(&call, &facts, Some((generation, calls.len())));
                self.link(&r, trace);
                own.push(r);
                self.traces.put(trace, own);
                calls.push(call);
                continue;
            };
            // A relative, in this trace or another one.
            if in_trace != trace {
                self.traces.put(trace, own);
                own = self.traces.take(in_trace).unwrap_or_default();
            }
            match own.calls.get_mut(index) {
                Some(r) => {
                    self.absorb(r, call, span, &facts, calls, generation, &mut sorted);
                    own.described(index, Description { span, parent });
                }
                // Not reachable (the index comes from that list): the call
                // is then kept as a call of its own, never lost.
                None => {
                    let r = self.remembered(&call, &facts, Some((generation, calls.len())));
                    self.link(&r, in_trace);
                    own.push(r);
                    calls.push(call);
                }
            }
            self.traces.put(in_trace, own);
        }
        sorted
    }

    /// Merges `call`, a description of `r`'s call, into the row of this
    /// batch (`calls`) or, when the row was passed on already, into a
    /// [`CallMerge`] for the store. (The caller records the description:
    /// [`TraceCalls::described`].)
    #[allow(clippy::too_many_arguments)]
    fn absorb(
        &self,
        r: &mut Remembered,
        call: CallRecord,
        span: u64,
        facts: &Facts,
        calls: &mut [CallRecord],
        generation: u64,
        sorted: &mut Sorted,
    ) {
        let child = span != 0 && r.descriptions.iter().any(|d| d.parent == span);
        if child {
            // The newcomer is the parent of a description: its parent is
            // further out.
            r.outer_parent = SpanId::of(&call.parent_span_id);
        }
        if facts.instrumentation != 0 && !r.instrumentations.contains(&facts.instrumentation) {
            r.instrumentations.push(facts.instrumentation);
        }
        match r
            .slot
            .and_then(|(g, i)| calls.get_mut(i).filter(|_| g == generation))
        {
            Some(kept) => {
                merge(kept, call, !child, self.prices.as_deref());
                r.usage = usage_of(kept);
                r.cost = kept.cost_usd;
                // An outer span may start the row earlier: late merges find
                // the row by its start.
                r.start = kept.start_unix_nanos;
                r.end = kept.start_unix_nanos.saturating_add(kept.duration_nanos);
                sorted.merged += 1;
            }
            None => {
                let mut description = call;
                let counted_tokens = r.usage[0].saturating_add(r.usage[1]);
                let counted_cost = r.cost.unwrap_or(0.0);
                let usage = max_usage(r.usage, usage_of(&description));
                set_usage(&mut description, usage);
                let cost = merged_cost(r.cost, &description, self.prices.as_deref());
                description.cost_usd = cost;
                if cost.is_some() && description.cost_source == CostSource::Unpriced {
                    description.cost_source = CostSource::PriceTable;
                }
                description.parent_span_id = r.outer_parent.to_hex();
                let correction = Correction {
                    tokens: usage[0]
                        .saturating_add(usage[1])
                        .saturating_sub(counted_tokens),
                    cost_usd: (cost.unwrap_or(0.0) - counted_cost).max(0.0),
                };
                r.usage = usage;
                r.cost = cost.or(r.cost);
                sorted.late.push(CallMerge {
                    trace_id: description.trace_id.clone(),
                    span_id: r.row_span.to_hex(),
                    start_unix_nanos: r.start,
                    description,
                    correction,
                });
            }
        }
    }

    /// A call of another trace with the same distinctive response id, the
    /// same provider, overlapping in time.
    fn across_traces(
        &self,
        facts: &Facts,
        own_trace: u64,
        own: &TraceCalls,
    ) -> Option<(u64, usize)> {
        if facts.response == 0 {
            return None;
        }
        let trace = *self.links.get(facts.response)?;
        let calls = self.calls_of(trace, own_trace, own)?;
        let index = calls.first(&[], &[], &[facts.response], |r| {
            !r.gateway
                && r.response == facts.response
                && another_library(r, facts)
                && same_or_unknown(r.provider, facts.provider)
                && r.start <= facts.end
                && facts.start <= r.end
        })?;
        Some((trace, index))
    }

    /// A call described by another library of the same application, with
    /// the very same usage, starting and ending at nearly the same times.
    fn same_usage(&self, facts: &Facts, own_trace: u64, own: &TraceCalls) -> Option<(u64, usize)> {
        if facts.fingerprint == 0 || facts.instrumentation == 0 {
            return None;
        }
        let trace = *self.links.get(facts.fingerprint)?;
        let calls = self.calls_of(trace, own_trace, own)?;
        let index = calls.first(&[], &[], &[facts.fingerprint], |r| {
            !r.gateway
                && r.fingerprint == facts.fingerprint
                && another_library(r, facts)
                && !r.instrumentations.contains(&0)
                && (r.response == 0 || facts.response == 0 || r.response == facts.response)
                && r.start.abs_diff(facts.start) <= NESTING_TOLERANCE_NANOS as u64
                && r.end.abs_diff(facts.end) <= NESTING_TOLERANCE_NANOS as u64
        })?;
        Some((trace, index))
    }

    /// The calls of `trace`: `own`'s, taken out of the map while sorted, or
    /// the map's.
    fn calls_of<'a>(
        &'a self,
        trace: u64,
        own_trace: u64,
        own: &'a TraceCalls,
    ) -> Option<&'a TraceCalls> {
        if trace == own_trace {
            Some(own)
        } else {
            self.traces.get(trace)
        }
    }

    /// Lets spans of other traces find `r`'s call, in `trace`.
    fn link(&mut self, r: &Remembered, trace: u64) {
        if r.gateway {
            return;
        }
        if r.response != 0 {
            self.links.put(r.response, trace);
        }
        if r.fingerprint != 0 {
            self.links.put(r.fingerprint, trace);
        }
    }

    fn facts(&self, call: &CallRecord) -> Facts {
        let model = call
            .request_model
            .as_deref()
            .or(call.response_model.as_deref())
            .map_or("", model_family);
        let fingerprint = if call.total_tokens() == 0 {
            0
        } else {
            let mut h = self.hasher.build_hasher();
            h.write_u8(b'F');
            for part in [
                call.app.as_deref().unwrap_or(""),
                call.provider.as_deref().unwrap_or(""),
                call.operation.as_deref().unwrap_or(""),
                model,
            ] {
                h.write(part.as_bytes());
                h.write_u8(0xff);
            }
            for n in usage_of(call) {
                h.write_u64(n);
            }
            h.finish().max(1)
        };
        Facts {
            fingerprint,
            instrumentation: call.instrumentation,
            provider: self.opt_hash(b'P', call.provider.as_deref()),
            operation: self.opt_hash(b'O', call.operation.as_deref()),
            models: [
                self.opt_hash(b'M', call.request_model.as_deref().map(model_family)),
                self.opt_hash(b'M', call.response_model.as_deref().map(model_family)),
            ],
            response: call
                .request_id
                .as_deref()
                .filter(|id| distinctive_response_id(id))
                .map_or(0, |id| {
                    self.hash(b'R', &[call.provider.as_deref().unwrap_or(""), id])
                }),
            start: call.start_unix_nanos,
            end: call.start_unix_nanos.saturating_add(call.duration_nanos),
        }
    }

    fn remembered(
        &self,
        call: &CallRecord,
        facts: &Facts,
        slot: Option<(u64, usize)>,
    ) -> Remembered {
        let gateway = call.mode == Mode::Gateway;
        Remembered {
            descriptions: smallvec::smallvec![Description {
                span: self.span_key(&call.span_id),
                parent: self.span_key(&call.parent_span_id),
            }],
            provider: facts.provider,
            operation: facts.operation,
            models: facts.models,
            response: if gateway { 0 } else { facts.response },
            fingerprint: if gateway { 0 } else { facts.fingerprint },
            instrumentations: smallvec::smallvec![facts.instrumentation],
            start: facts.start,
            end: facts.end,
            gateway,
            row_span: SpanId::of(&call.span_id),
            outer_parent: SpanId::of(&call.parent_span_id),
            usage: usage_of(call),
            cost: call.cost_usd,
            slot,
        }
    }

    /// A span id as a key: the id itself when it is the usual 16 hex digits.
    fn span_key(&self, span: &str) -> u64 {
        if span.is_empty() {
            return 0;
        }
        if span.len() == 16
            && let Ok(n) = u64::from_str_radix(span, 16)
            && n != 0
        {
            return n;
        }
        self.hash(b'S', &[span]).max(1)
    }

    fn opt_hash(&self, kind: u8, value: Option<&str>) -> u64 {
        value
            .filter(|v| !v.is_empty())
            .map_or(0, |v| self.hash(kind, &[v]).max(1))
    }

    fn hash(&self, kind: u8, parts: &[&str]) -> u64 {
        // The kind byte keeps kinds of keys apart; 0xff (never in UTF-8)
        // ends each part, so ("ab", "c") != ("a", "bc").
        let mut h = self.hasher.build_hasher();
        h.write_u8(kind);
        for p in parts {
            h.write(p.as_bytes());
            h.write_u8(0xff);
        }
        h.finish()
    }
}

/// The facts of an arriving description its relatives are matched on.
struct Facts {
    fingerprint: u64,
    instrumentation: u64,
    provider: u64,
    operation: u64,
    models: [u64; 2],
    response: u64,
    start: i64,
    end: i64,
}

/// Whether `facts` come from another library than every description of `r`
/// (unknown libraries count as another).
fn another_library(r: &Remembered, facts: &Facts) -> bool {
    facts.instrumentation == 0 || !r.instrumentations.contains(&facts.instrumentation)
}

fn same_or_unknown(a: u64, b: u64) -> bool {
    a == 0 || b == 0 || a == b
}

/// The call of `known` that the arriving span describes too: its parent or
/// child (same provider, operation and model family, where both say), or
/// the same distinctive response id.
fn find_relative(known: &TraceCalls, span: u64, parent: u64, facts: &Facts) -> Option<usize> {
    // Related calls have a description whose span is our parent, or whose
    // parent is our span, or the same response id.
    known.first(&[parent], &[span], &[facts.response], |r| {
        if r.gateway {
            return false;
        }
        if facts.response != 0 && r.response == facts.response {
            return same_or_unknown(r.provider, facts.provider);
        }
        let related = r
            .descriptions
            .iter()
            .any(|d| (parent != 0 && d.span == parent) || (span != 0 && d.parent == span));
        related
            && same_or_unknown(r.provider, facts.provider)
            && same_or_unknown(r.operation, facts.operation)
            && models_agree(r.models, facts.models)
    })
}

/// Whether two descriptions' models (request, response) can be one call's:
/// one of each side's named models is of the same family, or a side names none.
fn models_agree(a: [u64; 2], b: [u64; 2]) -> bool {
    let named = |m: [u64; 2]| m.iter().any(|x| *x != 0);
    if !named(a) || !named(b) {
        return true;
    }
    a.iter().any(|x| *x != 0 && b.contains(x))
}

/// A model name without its release date (`gpt-4o-mini-2024-07-18`,
/// `claude-3-5-haiku-20241022`) or provider prefix (`openai/gpt-4o`,
/// `models/gemini-2.0-flash`), lowercased: the same model reported by
/// its request name and its answering snapshot.
pub fn model_family(model: &str) -> &str {
    let model = model.rsplit('/').next().unwrap_or(model);
    let bytes = model.as_bytes();
    // `-YYYY-MM-DD`
    if bytes.len() > 11 {
        let tail = &bytes[bytes.len() - 11..];
        if tail[0] == b'-'
            && tail[5] == b'-'
            && tail[8] == b'-'
            && tail
                .iter()
                .enumerate()
                .all(|(i, b)| matches!(i, 0 | 5 | 8) || b.is_ascii_digit())
        {
            return &model[..model.len() - 11];
        }
    }
    // `-YYYYMMDD`
    if bytes.len() > 9 {
        let tail = &bytes[bytes.len() - 9..];
        if tail[0] == b'-' && tail[1..].iter().all(u8::is_ascii_digit) {
            return &model[..model.len() - 9];
        }
    }
    model
}

/// Whether a provider response id is distinctive enough to join two spans
/// that describe one call: after its usual prefix (`chatcmpl-`, `msg_`,
/// `resp_`, `gen-`...), at least 12 characters drawn from at least 5
/// different ones. Ollama's `chatcmpl-123`, `0`, `null`, repeated
/// characters and empty ids are not.
pub fn distinctive_response_id(id: &str) -> bool {
    let body = id
        .rsplit_once(['-', '_'])
        .map_or(id, |(_, rest)| rest)
        .trim();
    if body.len() < 12 {
        return false;
    }
    let mut seen = [false; 256];
    let mut distinct = 0;
    for b in body.bytes() {
        if !seen[b as usize] {
            seen[b as usize] = true;
            distinct += 1;
        }
    }
    distinct >= 5
}

fn usage_of(call: &CallRecord) -> [u64; 5] {
    [
        call.input_tokens,
        call.output_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.reasoning_tokens,
    ]
}

fn set_usage(call: &mut CallRecord, usage: [u64; 5]) {
    [
        call.input_tokens,
        call.output_tokens,
        call.cache_read_tokens,
        call.cache_write_tokens,
        call.reasoning_tokens,
    ] = usage;
}

/// Two descriptions of one call report the same usage, or one of them
/// leaves parts out (cache tokens, reasoning): the larger of each part.
fn max_usage(a: [u64; 5], b: [u64; 5]) -> [u64; 5] {
    std::array::from_fn(|i| a[i].max(b[i]))
}

/// The merged call's cost: priced from the table on the merged usage when
/// the table knows its model (a description without cache details priced
/// its cached tokens as plain input: the merged usage is the exact one),
/// else the larger of the costs reported.
fn merged_cost(
    counted: Option<f64>,
    call: &CallRecord,
    prices: Option<&PriceTable>,
) -> Option<f64> {
    let usage = TokenUsage {
        input: call.input_tokens,
        output: call.output_tokens,
        cache_read: call.cache_read_tokens,
        cache_write: call.cache_write_tokens,
    };
    let priced = (call.cost_source != CostSource::Provider)
        .then(|| {
            let prices = prices?;
            [
                call.response_model.as_deref(),
                call.request_model.as_deref(),
            ]
            .into_iter()
            .flatten()
            .find_map(|m| prices.cost(call.provider.as_deref(), m, &usage))
        })
        .flatten();
    if priced.is_some() {
        return priced;
    }
    match (call.cost_usd, counted) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Merges `other` into `kept`, two descriptions of one call. `other_inner`:
/// `other` is the inner description (closer to the wire, e.g. the SDK's own
/// span), whose provider facts win; scope facts keep whatever was set.
pub fn merge(
    kept: &mut CallRecord,
    other: CallRecord,
    other_inner: bool,
    prices: Option<&PriceTable>,
) {
    fn fact<T>(kept: &mut Option<T>, other: Option<T>, other_wins: bool) {
        if other.is_some() && (other_wins || kept.is_none()) {
            *kept = other;
        }
    }
    let counted = kept.cost_usd;
    let usage = max_usage(usage_of(kept), usage_of(&other));
    if !other_inner {
        // `other` is the outer span: the call belongs to its parent's run.
        kept.parent_span_id = other.parent_span_id.clone();
    }
    let w = other_inner;
    fact(&mut kept.ttft_nanos, other.ttft_nanos, w);
    fact(&mut kept.request_id, other.request_id, w);
    fact(&mut kept.provider, other.provider, w);
    fact(&mut kept.operation, other.operation, w);
    fact(&mut kept.request_model, other.request_model, w);
    fact(&mut kept.response_model, other.response_model, w);
    fact(&mut kept.http_status, other.http_status, w);
    fact(&mut kept.finish_reason, other.finish_reason, w);
    fact(&mut kept.upstream, other.upstream, w);
    fact(&mut kept.error_type, other.error_type, w);
    for (k, v) in [
        (&mut kept.org, other.org),
        (&mut kept.project, other.project),
        (&mut kept.app, other.app),
        (&mut kept.environment, other.environment),
        (&mut kept.route, other.route),
        (&mut kept.user, other.user),
        (&mut kept.session, other.session),
        (&mut kept.agent_id, other.agent_id),
        (&mut kept.agent_name, other.agent_name),
    ] {
        fact(k, v, false);
    }
    if other.status == CallStatus::Error || kept.error_type.is_some() {
        kept.status = CallStatus::Error;
    }
    kept.stream |= other.stream;
    for (k, v) in other.labels {
        kept.labels.entry(k).or_insert(v);
    }
    // The outer span lasted at least as long as the call.
    if other.start_unix_nanos < kept.start_unix_nanos && !other_inner {
        let end = kept.start_unix_nanos.saturating_add(kept.duration_nanos);
        kept.start_unix_nanos = kept.start_unix_nanos.min(other.start_unix_nanos);
        kept.duration_nanos = end
            .saturating_sub(kept.start_unix_nanos)
            .max(kept.duration_nanos);
    }
    if other.cost_source == CostSource::Provider && kept.cost_source != CostSource::Provider {
        kept.cost_source = CostSource::Provider;
        kept.cost_usd = other.cost_usd;
    }
    set_usage(kept, usage);
    let cost = merged_cost(counted, kept, prices);
    if cost.is_some() && kept.cost_source == CostSource::Unpriced {
        kept.cost_source = CostSource::PriceTable;
    }
    kept.cost_usd = cost;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(trace: &str, span: &str, parent: &str) -> CallRecord {
        CallRecord {
            trace_id: trace.into(),
            span_id: span.into(),
            parent_span_id: parent.into(),
            provider: Some("openai".into()),
            operation: Some("chat".into()),
            request_model: Some("gpt-4o-mini".into()),
            input_tokens: 100,
            output_tokens: 10,
            start_unix_nanos: 1_000,
            duration_nanos: 500,
            cost_usd: Some(0.001),
            cost_source: CostSource::PriceTable,
            ..CallRecord::default()
        }
    }

    fn identity() -> CallIdentity {
        CallIdentity::new(10_000, Duration::from_secs(600))
    }

    #[test]
    fn a_retried_span_is_dropped() {
        let mut id = identity();
        let mut batch = vec![
            call("t1", "s1", ""),
            call("t1", "s2", ""),
            call("t1", "s1", ""),
        ];
        let sorted = id.sort(&mut batch);
        assert_eq!((batch.len(), sorted.retries), (2, 1));
        let mut again = vec![call("t1", "s2", ""), call("t2", "s1", "")];
        let sorted = id.sort(&mut again);
        assert_eq!(sorted.retries, 1);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].trace_id, "t2");
    }

    #[test]
    fn a_span_and_its_child_describing_one_call_are_one_row_with_both_fields() {
        let mut id = identity();
        // The SDK's own span (child) has cache tokens and a response id;
        // the instrumentation's span (parent) has the user and its run's parent.
        let mut sdk = call("t1", "child", "outer");
        sdk.cache_write_tokens = 40;
        sdk.request_id = Some("msg_01XFDUDYJgAACzvnptvVoYEL".into());
        sdk.ttft_nanos = Some(77);
        let mut lib = call("t1", "outer", "run");
        lib.user = Some("u-17".into());
        lib.request_model = Some("gpt-4o-mini-2024-07-18".into());
        let mut batch = vec![sdk, lib];
        let sorted = id.sort(&mut batch);
        assert_eq!(sorted.merged, 1);
        assert_eq!(batch.len(), 1);
        let row = &batch[0];
        assert_eq!(row.cache_write_tokens, 40);
        assert_eq!(row.user.as_deref(), Some("u-17"));
        assert_eq!(row.ttft_nanos, Some(77));
        assert_eq!(
            row.parent_span_id, "run",
            "tied to the run, not to the wrapper"
        );
    }

    #[test]
    fn descriptions_in_two_batches_in_either_order_merge_into_the_stored_row() {
        for child_first in [true, false] {
            let mut id = identity();
            let mut child = call("t1", "child", "outer");
            child.cache_read_tokens = 50;
            child.input_tokens = 150;
            let mut parent = call("t1", "outer", "");
            parent.session = Some("s-9".into());
            let (first, second) = if child_first {
                (child, parent)
            } else {
                (parent, child)
            };
            let first_span = first.span_id.clone();
            let mut b1 = vec![first];
            assert!(id.sort(&mut b1).late.is_empty());
            assert_eq!(b1.len(), 1);
            let mut b2 = vec![second];
            let sorted = id.sort(&mut b2);
            assert!(b2.is_empty(), "child_first={child_first}");
            assert_eq!(sorted.late.len(), 1);
            let m = &sorted.late[0];
            assert_eq!(m.span_id, first_span, "the stored row is updated");
            assert_eq!(m.description.input_tokens, 150);
            assert_eq!(m.description.cache_read_tokens, 50);
            // The second description adds 50 input tokens only when it came second.
            let extra = if child_first { 0 } else { 50 };
            assert_eq!(m.correction.tokens, extra, "child_first={child_first}");
            // And a retry of the second is a retry, not another call.
            let mut retry = vec![if child_first {
                call("t1", "outer", "")
            } else {
                call("t1", "child", "outer")
            }];
            let sorted = id.sort(&mut retry);
            assert!(retry.is_empty());
            assert_eq!(sorted.retries, 1);
        }
    }

    #[test]
    fn a_late_merge_finds_the_row_at_the_start_an_outer_span_gave_it() {
        let mut id = identity();
        let inner = call("t", "inner", "outer");
        let mut outer = call("t", "outer", "run");
        outer.start_unix_nanos = 900;
        outer.duration_nanos = 700;
        let mut batch = vec![inner, outer];
        id.sort(&mut batch);
        assert_eq!(
            batch[0].start_unix_nanos, 900,
            "the row starts with the outer span"
        );
        // A third layer, inside the first, arrives in a later batch.
        let mut late = vec![call("t", "innermost", "inner")];
        let sorted = id.sort(&mut late);
        assert_eq!(sorted.late.len(), 1);
        assert_eq!(sorted.late[0].start_unix_nanos, 900);
        assert_eq!(sorted.late[0].span_id, "inner");
    }

    #[test]
    fn reused_provider_ids_never_merge_distinct_calls() {
        let mut id = identity();
        // Ollama draws chatcmpl-0..998: 2,000 calls, one trace each.
        let mut batch: Vec<CallRecord> = (0..2_000)
            .map(|i| {
                let mut c = call(&format!("t{i}"), "s1", "");
                c.request_id = Some(format!("chatcmpl-{}", i % 999));
                c
            })
            .collect();
        id.sort(&mut batch);
        assert_eq!(batch.len(), 2_000);
        // Calls of one agent run (one trace), siblings with a constant id.
        let mut batch: Vec<CallRecord> = (0..50)
            .map(|i| {
                let mut c = call("run", &format!("{i:016x}"), "agent");
                c.request_id = Some("chatcmpl-xxxxxxxxxxxxxxxx".into());
                c
            })
            .collect();
        id.sort(&mut batch);
        assert_eq!(batch.len(), 50, "siblings of one run are distinct calls");
        // A distinctive id in two traces: the same call only when they overlap in time.
        let mut a = call("ta", "s1", "");
        a.request_id = Some("msg_01XFDUDYJgAACzvnptvVoYEL".into());
        let mut b = a.clone();
        b.trace_id = "tb".into();
        let mut later = a.clone();
        later.trace_id = "tc".into();
        later.start_unix_nanos = 10_000_000;
        let mut batch = vec![a, b, later];
        id.sort(&mut batch);
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn gateway_rows_are_never_dropped_against_provider_ids() {
        let mut id = identity();
        let mut batch: Vec<CallRecord> = (0..15)
            .map(|i| {
                let mut c = call(&format!("t{i}"), &format!("{:016x}", i + 1), "");
                c.mode = Mode::Gateway;
                c.request_id = Some("chatcmpl-constant-id-0123456789".into());
                c
            })
            .collect();
        id.sort(&mut batch);
        assert_eq!(batch.len(), 15);
        // Only a redelivery of the very same row is.
        let mut again = vec![batch[3].clone()];
        assert_eq!(id.sort(&mut again).retries, 1);
    }

    #[test]
    fn different_providers_models_or_operations_are_different_calls() {
        let mut id = identity();
        let parent = call("t", "a", "");
        let mut other_model = call("t", "b", "a");
        other_model.request_model = Some("gpt-4.1".into());
        let mut embedding = call("t", "c", "a");
        embedding.operation = Some("embeddings".into());
        let mut other_provider = call("t", "d", "a");
        other_provider.provider = Some("anthropic".into());
        let mut batch = vec![parent, other_model, embedding, other_provider];
        id.sort(&mut batch);
        assert_eq!(batch.len(), 4);
    }

    #[test]
    fn model_families_and_distinctive_ids() {
        assert_eq!(model_family("gpt-4o-mini-2024-07-18"), "gpt-4o-mini");
        assert_eq!(
            model_family("claude-3-5-haiku-20241022"),
            "claude-3-5-haiku"
        );
        assert_eq!(model_family("openai/gpt-4o"), "gpt-4o");
        assert_eq!(model_family("gpt-4o"), "gpt-4o");
        for weak in [
            "",
            "0",
            "chatcmpl-123",
            "chatcmpl-998",
            "null",
            "chatcmpl-aaaaaaaaaaaaaaaa",
        ] {
            assert!(!distinctive_response_id(weak), "{weak}");
        }
        for strong in [
            "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "msg_01XFDUDYJgAACzvnptvVoYEL",
            "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        ] {
            assert!(distinctive_response_id(strong), "{strong}");
        }
    }

    #[test]
    fn generations_hold_at_most_capacity_and_forget_by_age() {
        let mut links = Generations::new(20, Duration::from_secs(600));
        for k in 1..=100u64 {
            links.put(k, k * 2);
        }
        assert!(links.current.len() + links.previous.len() <= 20);
        assert_eq!(links.weight(), links.current.len() + links.previous.len());
        assert_eq!(links.get(100), Some(&200));
        assert_eq!(
            links.get(85),
            Some(&170),
            "the previous generation still answers"
        );
        assert_eq!(links.get(1), None);
        // Taken and put back, an entry moves to the current generation.
        let v = links.take(85).unwrap();
        links.put(85, v);
        for k in 101..=109u64 {
            links.put(k, k);
        }
        assert_eq!(links.get(85), Some(&170));
        // And age forgets too.
        let mut short = Generations::new(1_000, Duration::ZERO);
        short.put(1, 1u64);
        short.put(2, 2);
        short.put(3, 3);
        assert_eq!(short.get(1), None);
        assert_eq!(short.weight(), 2);
    }

    #[test]
    fn span_ids_round_trip_as_sent() {
        for id in ["00f067aa0ba902b7", "s1", "", "ABCDEF0123456789"] {
            assert_eq!(SpanId::of(id).to_hex(), id);
        }
        assert!(matches!(SpanId::of("00f067aa0ba902b7"), SpanId::Hex(_)));
    }

    #[test]
    fn after_a_panic_the_calls_not_sorted_yet_are_kept_in_order() {
        let mut id = CallIdentity::new(1_000, Duration::from_secs(600));
        let mut batch = vec![call("t1", "s1", "")];
        id.sort(&mut batch);
        // As `sort` leaves them when it panics on the fourth of five calls:
        // three sorted, the fifth waiting (oldest last), the fourth taken.
        let mut calls = vec![
            call("t2", "s1", ""),
            call("t2", "s2", ""),
            call("t2", "s3", ""),
        ];
        id.unsorted = vec![call("t2", "s5", "")];
        id.recover(&mut calls);
        let spans: Vec<&str> = calls.iter().map(|c| c.span_id.as_str()).collect();
        assert_eq!(spans, ["s1", "s2", "s3", "s5"]);
        // The state was forgotten: t1's call is not a retry any more.
        assert_eq!(id.remembered_calls(), 0);
        let mut again = vec![call("t1", "s1", "")];
        assert_eq!(id.sort(&mut again).retries, 0);
    }

    /// One long run: many calls in one trace (its index is built past
    /// `INDEX_FROM` calls), then retries, relatives and new calls, each in
    /// a batch of its own and all in one, must sort as with a short trace.
    #[test]
    fn a_trace_with_many_calls_sorts_as_a_short_one() {
        const CALLS: usize = 2_000;
        let run = |split: bool| {
            let mut id = identity();
            let mut batch: Vec<CallRecord> = (0..CALLS)
                .map(|i| {
                    let mut c = call("run", &format!("s{i}"), "agent");
                    c.request_id = Some(format!("chatcmpl-B9MBs8Cjcv{i:016x}"));
                    c
                })
                .collect();
            let first = id.sort(&mut batch);
            assert_eq!((batch.len(), first.retries, first.merged), (CALLS, 0, 0));
            // A retry of an early span and of a late one; the child of call
            // 7 (its SDK span); another trace's span with call 1,500's
            // response id; and a new call.
            let mut child = call("run", "sdk-7", "s7");
            child.cache_read_tokens = 30;
            let mut other = call("sdk-trace", "x", "");
            other.request_id = Some(format!("chatcmpl-B9MBs8Cjcv{:016x}", 1_500));
            other.instrumentation = 9;
            let later = vec![
                call("run", "s3", "agent"),
                call("run", &format!("s{}", CALLS - 1), "agent"),
                child,
                other,
                call("run", "new", "agent"),
            ];
            let mut late = Vec::new();
            let (mut retries, mut kept) = (0, 0);
            if split {
                for c in later {
                    let mut b = vec![c];
                    let sorted = id.sort(&mut b);
                    retries += sorted.retries;
                    kept += b.len();
                    late.extend(sorted.late);
                }
            } else {
                let mut b = later;
                let sorted = id.sort(&mut b);
                retries += sorted.retries;
                kept += b.len();
                late.extend(sorted.late);
            }
            assert_eq!(retries, 2);
            assert_eq!(kept, 1, "only the new call is a row of its own");
            let mut merged: Vec<&str> = late.iter().map(|m| m.span_id.as_str()).collect();
            merged.sort_unstable();
            assert_eq!(merged, ["s1500", "s7"]);
            assert!(
                id.traces
                    .get(id.hash(b'T', &["run"]))
                    .unwrap()
                    .index
                    .is_some()
            );
        };
        run(true);
        run(false);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut id = CallIdentity::new(1_000, Duration::from_secs(600));
        for i in 0..10_000 {
            let mut batch = vec![call(&format!("t{i}"), "s", "")];
            id.sort(&mut batch);
        }
        assert!(id.remembered_calls() <= 1_000, "{}", id.remembered_calls());
        // What the maps hold stays bounded with them, and counts every call.
        let per_call = id.heap_bytes() / id.remembered_calls() as usize;
        assert!(
            (std::mem::size_of::<Remembered>()..2_000).contains(&per_call),
            "{per_call} bytes a call"
        );
        let empty = CallIdentity::new(1_000, Duration::from_secs(600));
        assert_eq!(empty.heap_bytes(), 0);
    }
}
