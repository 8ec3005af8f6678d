//! [`SharingLog`]: the store's admin log, which also hands every key and
//! override recorded through it to the state stream. The admin API and the
//! key cache record through it; what comes from other instances is
//! recorded in the store's own log, so it is not shared again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::wire::is_shared;
use crate::admin::{AdminAction, AdminLog};
use crate::query::QueryError;

/// Most actions waiting to be appended (an outage of the server); past it,
/// actions are applied and stored here but not shared, and counted.
pub const QUEUE: usize = 1_024;

/// An admin log that shares what it records.
pub struct SharingLog {
    store: Arc<dyn AdminLog>,
    tx: mpsc::Sender<AdminAction>,
    dropped: AtomicU64,
}

impl SharingLog {
    /// Wraps the store's log; the receiver is for [`super::StateSync`].
    pub fn new(store: Arc<dyn AdminLog>) -> (Arc<Self>, mpsc::Receiver<AdminAction>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = Arc::new(Self {
            store,
            tx,
            dropped: AtomicU64::new(0),
        });
        (log, rx)
    }

    /// Actions not shared because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn share(&self, action: &AdminAction) {
        if !is_shared(action) {
            return;
        }
        match self.tx.try_send(action.clone()) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(
                        "admin action applied here but not shared with the other instances: \
                         too many wait for the state stream"
                    );
                }
            }
        }
    }
}

impl AdminLog for SharingLog {
    fn record(&self, action: &AdminAction) -> BoxFuture<'_, Result<(), QueryError>> {
        let action = action.clone();
        Box::pin(async move {
            let stored = self.store.record(&action).await;
            // A key that could not be stored was not created (nor revoked):
            // nothing to share. An override is in force here whether or not
            // it was stored, so it is in force everywhere.
            if stored.is_ok() || matches!(action, AdminAction::Override { .. }) {
                self.share(&action);
            }
            stored
        })
    }

    fn load(&self, now_unix_nanos: i64) -> BoxFuture<'_, Result<Vec<AdminAction>, QueryError>> {
        self.store.load(now_unix_nanos)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::killswitch::Scope;

    #[derive(Default)]
    struct Memory(Mutex<Vec<AdminAction>>);

    impl AdminLog for Memory {
        fn record(&self, action: &AdminAction) -> BoxFuture<'_, Result<(), QueryError>> {
            self.0.lock().unwrap().push(action.clone());
            Box::pin(async { Ok(()) })
        }
        fn load(&self, _: i64) -> BoxFuture<'_, Result<Vec<AdminAction>, QueryError>> {
            let all = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(all) })
        }
    }

    #[tokio::test]
    async fn stores_everything_and_shares_keys_and_overrides_only() {
        let store = Arc::new(Memory::default());
        let (log, mut rx) = SharingLog::new(store.clone());
        let scope = Scope {
            project: Some("p".into()),
            ..Default::default()
        };
        let block = AdminAction::Block {
            scope: scope.clone(),
            reason: "admin".into(),
            until_unix_nanos: 0,
        };
        let snooze = AdminAction::Override {
            rule_id: "r".into(),
            scope,
            limit: None,
            snooze: true,
            until_unix_nanos: 5,
        };
        log.record(&block).await.unwrap();
        log.record(&snooze).await.unwrap();
        assert_eq!(log.load(0).await.unwrap(), vec![block, snooze.clone()]);
        assert_eq!(rx.try_recv().unwrap(), snooze);
        assert!(rx.try_recv().is_err());
    }
}
