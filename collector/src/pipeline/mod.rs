//! The row pipeline: a bounded queue between the receivers and the store,
//! and the writer task that drains it in batches, dropping duplicate calls
//! and running the rules on the rest.

mod dedup;
mod queue;
mod restore;
mod rules_stage;
mod writer;

pub use dedup::DedupWindow;
pub use queue::{Enqueued, QueueError, RowQueue, RowReceiver, row_queue};
pub use restore::Restore;
pub use rules_stage::RuleStage;
pub use writer::{Writer, WriterHandle};
