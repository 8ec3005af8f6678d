//! Admin actions kept in ClickHouse.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use super::row::AdminRow;
use super::sink::ClickhouseStore;
use crate::admin::{AdminAction, AdminLog};
use crate::query::QueryError;

fn store_err(e: impl std::fmt::Display) -> QueryError {
    QueryError::Store(format!("ClickHouse: {e}"))
}

impl AdminLog for ClickhouseStore {
    fn record(&self, action: &AdminAction) -> BoxFuture<'_, Result<(), QueryError>> {
        let body = serde_json::to_string(action);
        let until = action.until();
        Box::pin(async move {
            let body = body.map_err(store_err)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            let mut insert = self
                .client
                .insert::<AdminRow>("admin_actions")
                .await
                .map_err(store_err)?;
            insert
                .write(&AdminRow {
                    time_unix_nanos: now,
                    until_unix_nanos: until,
                    body,
                })
                .await
                .map_err(store_err)?;
            insert.end().await.map_err(store_err)
        })
    }

    fn load(&self, now_unix_nanos: i64) -> BoxFuture<'_, Result<Vec<AdminAction>, QueryError>> {
        Box::pin(async move {
            let rows = self
                .client
                .query(
                    "SELECT ?fields FROM admin_actions
                     WHERE until_unix_nanos IS NULL OR until_unix_nanos > ?
                     ORDER BY time_unix_nanos",
                )
                .bind(now_unix_nanos)
                .fetch_all::<AdminRow>()
                .await
                .map_err(store_err)?;
            let mut out = Vec::new();
            for row in rows {
                match serde_json::from_str(&row.body) {
                    Ok(a) => out.push(a),
                    Err(e) => tracing::warn!(error = %e, "unreadable admin action skipped"),
                }
            }
            Ok(out)
        })
    }
}
