//! Admin actions kept in the embedded store.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use super::sink::{SqliteStore, run_blocking};
use crate::admin::{AdminAction, AdminLog};
use crate::query::QueryError;

fn store_err(e: impl std::fmt::Display) -> QueryError {
    QueryError::Store(e.to_string())
}

impl AdminLog for SqliteStore {
    fn record(&self, action: &AdminAction) -> BoxFuture<'_, Result<(), QueryError>> {
        let body = serde_json::to_string(action);
        let until = action.until();
        Box::pin(async move {
            let body = body.map_err(store_err)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            run_blocking(|| {
                let conn = self
                    .inner()
                    .writer
                    .lock()
                    .map_err(|_| store_err("writer lock poisoned"))?;
                conn.execute(
                    "INSERT INTO admin_actions (time_unix_nanos, until_unix_nanos, body) VALUES (?1, ?2, ?3)",
                    rusqlite::params![now, until, body],
                )
                .map(|_| ())
                .map_err(store_err)
            })
        })
    }

    fn load(&self, now_unix_nanos: i64) -> BoxFuture<'_, Result<Vec<AdminAction>, QueryError>> {
        // Read at start-up and on reload: not a query of the API, so not
        // bounded by its timeout.
        Box::pin(self.inner().readers.read(false, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT body FROM admin_actions
                         WHERE until_unix_nanos IS NULL OR until_unix_nanos > ?1 ORDER BY id",
                )
                .map_err(store_err)?;
            let bodies = stmt
                .query_map([now_unix_nanos], |r| r.get::<_, String>(0))
                .map_err(store_err)?;
            let mut out = Vec::new();
            for body in bodies {
                let body = body.map_err(store_err)?;
                match serde_json::from_str(&body) {
                    Ok(a) => out.push(a),
                    Err(e) => tracing::warn!(error = %e, "unreadable admin action skipped"),
                }
            }
            Ok(out)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::killswitch::Scope;

    #[tokio::test]
    async fn actions_in_force_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let scope = Scope {
            project: Some("p".into()),
            ..Default::default()
        };
        let block = AdminAction::Block {
            scope: scope.clone(),
            reason: "audit".into(),
            until_unix_nanos: 0,
        };
        let old = AdminAction::Lift {
            scope: scope.clone(),
            rule_id: None,
            until_unix_nanos: 5,
        };
        let snooze = AdminAction::Override {
            rule_id: "r".into(),
            scope,
            limit: None,
            snooze: true,
            until_unix_nanos: 1_000,
        };
        for a in [&block, &old, &snooze] {
            store.record(a).await.unwrap();
        }
        assert_eq!(store.load(10).await.unwrap(), vec![block.clone(), snooze]);
        assert_eq!(store.load(2_000).await.unwrap(), vec![block]);
    }
}
