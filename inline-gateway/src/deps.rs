//! What the gateway needs from the process that mounts it: the shared rules
//! engine and price table, somewhere to hand rows, the virtual keys, and the
//! kill-switch. One trait per role; each says what must not block.

use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use tollgate_rules::CallRecord;
use tollgate_rules::engine::lease::LeaseShort;
use tollgate_rules::engine::{CallFacts, Engine, RebuildPlan, Unstored, Violation};
use tollgate_rules::pricing::PriceTable;

use crate::keys::KeyStore;

/// The collaborators of [`crate::router`].
#[derive(Clone)]
pub struct GatewayDeps {
    /// The collector's engine: same rules, same counters. The gateway calls
    /// `admit` before and `settle` after every call; rows it submits are
    /// already counted (the collector must not `observe` gateway rows).
    pub engine: Engine,
    /// Prices for worst-case reservations and for the rows' `cost_usd`.
    pub prices: Arc<PriceTable>,
    /// Where finished calls go.
    pub rows: Arc<dyn RowSink>,
    /// Virtual keys by hash.
    pub keys: Arc<dyn KeyStore>,
    /// The kill-switch: scopes blocked in observe mode are refused here too.
    pub blocks: Arc<dyn BlockCheck>,
    /// Reads counters the engine evicted back from the store before a call
    /// of their scope is admitted. `None`: the engine never evicts.
    pub rebuild: Option<Arc<dyn CounterRebuild>>,
    /// Leases of budgets shared with other instances, when the engine
    /// shares them (`[ledger] type = "redis"`).
    pub leases: Option<Arc<dyn BudgetLeases>>,
}

/// Gets more of a shared budget from the shared ledger.
pub trait BudgetLeases: Send + Sync {
    /// Asks for enough lease to cover `short` and puts the answer in the
    /// engine's lease book; returns once it is there, or with the reason
    /// the shared ledger could not be asked (unreachable, timed out).
    fn lease<'a>(&'a self, short: &'a [LeaseShort]) -> BoxFuture<'a, Result<Leased, String>>;
}

/// What asking for more lease came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leased {
    /// The server granted what was asked (or another call's exchange was
    /// awaited): admit again.
    Granted,
    /// The server had less room than asked: a budget is used up.
    Exhausted,
}

/// Rebuilds evicted counters from the stored calls.
pub trait CounterRebuild: Send + Sync {
    /// Feeds `plan` every stored call it may need (see
    /// [`Engine::plan_rebuild`]) and installs it in `engine`; returns how
    /// many counters were installed. Must not block the runtime.
    fn rebuild<'a>(
        &'a self,
        engine: &'a Engine,
        plan: RebuildPlan,
    ) -> BoxFuture<'a, Result<usize, String>>;

    /// Counts into `engine`, a virtual key's own limits just set up, the
    /// stored calls made with key `key_id` in its open windows; returns how
    /// many. Called once per key and process, before its first call.
    fn replay_key<'a>(
        &'a self,
        engine: &'a Engine,
        key_id: &'a str,
    ) -> BoxFuture<'a, Result<u64, String>>;
}

impl std::fmt::Debug for GatewayDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayDeps")
            .field("prices", &self.prices)
            .finish_non_exhaustive()
    }
}

/// Room for one call's row, reserved before the call reaches a provider
/// and handed back with the row to [`RowSink::submit`].
pub struct RowRoom(Option<Box<dyn std::any::Any + Send + Sync>>);

impl RowRoom {
    /// Room held by `inner` (what the sink needs back at `submit`).
    pub fn new(inner: impl std::any::Any + Send + Sync) -> Self {
        Self(Some(Box::new(inner)))
    }

    /// Room that holds nothing (a sink that is never full).
    pub fn unbounded() -> Self {
        Self(None)
    }

    /// What the sink put in, if it is a `T`.
    pub fn take<T: 'static>(self) -> Option<T> {
        self.0?.downcast::<T>().ok().map(|b| *b)
    }
}

impl std::fmt::Debug for RowRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowRoom")
    }
}

/// Hands finished calls to the collector's pipeline.
pub trait RowSink: Send + Sync {
    /// Reserves room for one row before the call reaches a provider, so a
    /// served call's row is never dropped; `None` when the sink is full
    /// (the store is behind): the gateway answers 503 instead.
    fn reserve(&self) -> Option<RowRoom> {
        Some(RowRoom::unbounded())
    }

    /// Called once per call, on the request's task (or when a response body
    /// is dropped): must not block — enqueue, or drop and count when full.
    /// `violations` are what `settle` reported for the call (thresholds
    /// crossed, limits exceeded): the collector turns them into rule events,
    /// alerts and kill-switch blocks, as its rules stage does for OTLP rows.
    /// Their ids are already in `record.rules_fired`. `unstored` (taken
    /// before the call was counted) is to be dropped once the row is stored
    /// or lost: until then the engine keeps the call's counters in memory.
    fn submit(
        &self,
        record: CallRecord,
        violations: Vec<Violation>,
        unstored: Unstored,
        room: RowRoom,
    );
}

/// A kill-switch block: the rules crate's, as the collector's kill-switch
/// holds it.
pub use tollgate_rules::blocks::Block;
use tollgate_rules::blocks::BlockTable;

/// The kill-switch, asked before every call.
pub trait BlockCheck: Send + Sync {
    /// The block that applies to the caller `who` (the call's row so far:
    /// its org, project, user, key, route...), if any. Called on every
    /// request: answer from memory, never block on I/O.
    fn blocked(&self, who: &dyn CallFacts) -> Option<Block>;
}

/// A kill-switch that never blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBlocks;

impl BlockCheck for NoBlocks {
    fn blocked(&self, _who: &dyn CallFacts) -> Option<Block> {
        None
    }
}

/// A [`RowSink`] that keeps everything, for tests and embedding.
#[derive(Debug, Default)]
pub struct MemoryRows {
    rows: Mutex<Vec<(CallRecord, Vec<Violation>)>>,
}

impl MemoryRows {
    pub fn new() -> Self {
        Self::default()
    }

    /// The records submitted so far, in order.
    pub fn records(&self) -> Vec<CallRecord> {
        self.lock().iter().map(|(r, _)| r.clone()).collect()
    }

    /// The records and violations submitted so far.
    pub fn submitted(&self) -> Vec<(CallRecord, Vec<Violation>)> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(CallRecord, Vec<Violation>)>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RowSink for MemoryRows {
    fn submit(
        &self,
        record: CallRecord,
        violations: Vec<Violation>,
        _unstored: Unstored,
        _room: RowRoom,
    ) {
        self.lock().push((record, violations));
    }
}

/// A [`BlockCheck`] over a block table of its own, for tests: a block
/// applies when each of its `(dimension, value)` pairs matches the caller.
#[derive(Debug, Default)]
pub struct StaticBlocks {
    blocks: Mutex<BlockTable>,
}

impl StaticBlocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks every caller whose `dims` have these values.
    pub fn block(&self, dims: &[(&str, &str)], mut block: Block) {
        block.dims = dims
            .iter()
            .map(|(d, v)| ((*d).to_owned(), (*v).to_owned()))
            .collect();
        self.blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(block);
    }

    /// Lifts every block.
    pub fn clear(&self) {
        *self.blocks.lock().unwrap_or_else(PoisonError::into_inner) = BlockTable::default();
    }
}

impl BlockCheck for StaticBlocks {
    fn blocked(&self, who: &dyn CallFacts) -> Option<Block> {
        let blocks = self.blocks.lock().unwrap_or_else(PoisonError::into_inner);
        blocks.applying(who, i64::MIN).into_iter().next()
    }
}
