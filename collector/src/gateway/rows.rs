//! What the gateway writes and asks: its rows (with the rule events their
//! settlements produced) go through the collector's row queue, and every
//! call asks the collector's kill-switch first.

use std::sync::Arc;

use tollgate_gateway::{BlockCheck, RowRoom, RowSink};
use tollgate_rules::CallRecord;
use tollgate_rules::engine::CallFacts;
use tollgate_rules::engine::{Unstored, Violation};

use crate::internal_events::InternalEvents;
use crate::killswitch::{Block, KillSwitch};
use crate::pipeline::{Enforcer, Followed, RoomForOne, RowQueue};

/// Gateway calls into the row queue, their rule events with them.
pub struct QueueRows {
    pub queue: RowQueue,
    /// Events, alerts and blocks of violations, as for observed spans.
    pub enforcer: Enforcer,
    pub events: Arc<InternalEvents>,
}

impl RowSink for QueueRows {
    fn reserve(&self) -> Option<RowRoom> {
        self.queue.reserve_one().map(RowRoom::new)
    }

    fn submit(
        &self,
        mut record: CallRecord,
        violations: Vec<Violation>,
        unstored: Unstored,
        room: RowRoom,
    ) {
        let Followed {
            events: rule_events,
            alerts,
        } = self.enforcer.follow_settled(&mut record, &violations);
        let queued = match room.take::<RoomForOne>() {
            Some(room) => {
                self.queue
                    .push_reserved(vec![record], rule_events, alerts, Some(unstored), room)
            }
            None => self
                .queue
                .try_push_with_events(vec![record], rule_events, alerts, Some(unstored))
                .map(|_| ()),
        };
        if queued.is_err() {
            self.events.rows_lost(
                1,
                "a gateway call was not stored: the collector is shutting down",
            );
        }
    }
}

/// The kill-switch as the gateway asks it.
pub struct KillSwitchBlocks(pub KillSwitch);

impl BlockCheck for KillSwitchBlocks {
    fn blocked(&self, who: &dyn CallFacts) -> Option<Block> {
        self.0.state_for(who).blocks.into_iter().next()
    }
}
