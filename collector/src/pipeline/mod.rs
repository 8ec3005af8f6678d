//! The row pipeline: a bounded queue between the receivers and the store,
//! and the writer task that drains it in batches, making one call of the
//! spans that describe one (`identity`) and running the rules on it.

mod enforcer;
mod identity;
mod queue;
mod restore;
mod rules_stage;
pub mod wal;
mod writer;

pub use enforcer::{Enforcer, Followed};
pub use identity::{CallIdentity, Sorted};
pub use queue::{Enqueued, QueueError, RoomForOne, RowQueue, RowReceiver, row_queue};
pub use restore::{CounterRebuilder, Restore};
pub use rules_stage::RuleStage;
pub use writer::{Writer, WriterHandle};
