//! [`ClickhouseStore`]: writes batches and answers queries on ClickHouse.

use std::hash::Hasher;

use clickhouse::{Client, Compression};
use futures::future::BoxFuture;
use tollgate_rules::{CallRecord, RuleEvent};

use super::config::{ClickhouseCompression, ClickhouseConfig};
use super::row::{CallRow, EventRow};
use super::schema;
use crate::sinks::outbox::{
    AlertOutbox, DeliveryState, OutboxEntry, Outcome, Pending, alert_identity,
};
use crate::sinks::{Batch, CallMerge, Sink, SinkError};

/// The ClickHouse store. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct ClickhouseStore {
    pub(super) client: Client,
    pub(super) database: String,
    pub(super) timeout: std::time::Duration,
    pub(super) query_timeout: std::time::Duration,
}

impl std::fmt::Debug for ClickhouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("ClickhouseStore")
            .field("database", &self.database)
            .finish()
    }
}

/// A ClickHouse error as the writer sees it: a failed insert is retried
/// (the server may be restarting, overloaded, unreachable); a row that does
/// not fit the schema is not.
pub(super) fn sink_err(e: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error as E;
    match e {
        E::SchemaMismatch(_) | E::InvalidParams(_) | E::Unsupported(_) => {
            SinkError::Rejected(format!("ClickHouse: {e}"))
        }
        other => SinkError::Unavailable(format!("ClickHouse: {other}")),
    }
}

/// The crate's own client, or, with extra roots, one whose TLS trusts them
/// too (hyper-rustls on ring, as the crate's own).
fn http_client(config: &ClickhouseConfig) -> Result<Client, SinkError> {
    if config.extra_roots.is_empty() {
        return Ok(Client::default());
    }
    let tls = config
        .extra_roots
        .client_config()
        .map_err(|e| SinkError::Unavailable(format!("ClickHouse TLS: {e}")))?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_keepalive(Some(std::time::Duration::from_secs(60)));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    // As the crate's default: idle connections dropped before the
    // server's keep-alive timeout (3 s before 23.11) closes them.
    let pool = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .build(connector);
    Ok(Client::with_http_client(pool))
}

impl ClickhouseStore {
    /// Connects, creates the database if needed and migrates the schema.
    /// Fails with one line when ClickHouse cannot be reached or refuses.
    pub async fn open(config: &ClickhouseConfig) -> Result<Self, SinkError> {
        let mut client = http_client(config)?
            .with_url(config.url.clone())
            .with_database(config.database.clone())
            .with_compression(match config.compression {
                ClickhouseCompression::None => Compression::None,
                ClickhouseCompression::Lz4 => Compression::Lz4,
            });
        if let Some(user) = &config.user {
            client = client.with_user(user.clone());
        }
        if let Some(password) = &config.password {
            client = client.with_password(password.expose().to_owned());
        }
        let migrated = tokio::time::timeout(
            config.timeout,
            schema::migrate(&client, &config.database, config.retention_days),
        )
        .await;
        match migrated {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(SinkError::Unavailable(format!(
                    "cannot prepare the ClickHouse schema at {}: {e}",
                    config.url
                )));
            }
            Err(_) => {
                return Err(SinkError::Unavailable(format!(
                    "ClickHouse at {} did not answer within {:?}",
                    config.url, config.timeout
                )));
            }
        }
        Ok(Self {
            client,
            database: config.database.clone(),
            timeout: config.timeout,
            query_timeout: config.query_timeout,
        })
    }

    async fn insert_calls(&self, calls: &[CallRecord], token: &str) -> Result<(), SinkError> {
        let mut insert = self
            .client
            .insert::<CallRow>("calls")
            .await
            .map_err(sink_err)?
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for r in calls {
            insert
                .write(&CallRow::from_record(r))
                .await
                .map_err(sink_err)?;
        }
        insert.end().await.map_err(sink_err)
    }

    /// Applies a later description of a stored call as a mutation (rare:
    /// descriptions of one call exported in the same request or batch are
    /// merged before they are written). It sets absolute values, so a
    /// retried batch applies it again harmlessly. The sorting key's columns
    /// (org, project, app) cannot change, and the minute rollup keeps the
    /// first description's values.
    async fn merge(&self, m: &CallMerge) -> Result<(), SinkError> {
        let d = &m.description;
        self.client
            .query(
                "ALTER TABLE calls UPDATE
                    ttft_nanos = coalesce(ttft_nanos, ?),
                    request_id = coalesce(request_id, ?),
                    response_model = coalesce(response_model, ?),
                    finish_reason = coalesce(finish_reason, ?),
                    user_id = coalesce(user_id, ?),
                    session_id = coalesce(session_id, ?),
                    agent_id = coalesce(agent_id, ?),
                    agent_name = coalesce(agent_name, ?),
                    route = coalesce(route, ?),
                    environment = coalesce(environment, ?),
                    input_tokens = ?, output_tokens = ?, cache_read_tokens = ?,
                    cache_write_tokens = ?, reasoning_tokens = ?,
                    cost_usd = coalesce(?, cost_usd),
                    stream = stream OR ?,
                    parent_span_id = if(? = '', parent_span_id, ?)
                 WHERE start_unix_nanos = ? AND trace_id = ? AND span_id = ?",
            )
            .bind(d.ttft_nanos)
            .bind(d.request_id.as_deref())
            .bind(d.response_model.as_deref())
            .bind(d.finish_reason.as_deref())
            .bind(d.user.as_deref())
            .bind(d.session.as_deref())
            .bind(d.agent_id.as_deref())
            .bind(d.agent_name.as_deref())
            .bind(d.route.as_deref())
            .bind(d.environment.as_deref())
            .bind(d.input_tokens)
            .bind(d.output_tokens)
            .bind(d.cache_read_tokens)
            .bind(d.cache_write_tokens)
            .bind(d.reasoning_tokens)
            .bind(d.cost_usd)
            .bind(d.stream)
            .bind(d.parent_span_id.as_str())
            .bind(d.parent_span_id.as_str())
            .bind(m.start_unix_nanos)
            .bind(m.trace_id.as_str())
            .bind(m.span_id.as_str())
            .with_setting("mutations_sync", "0")
            .execute()
            .await
            .map_err(sink_err)
    }

    /// Puts alerts in the outbox (version 0: an entry already there keeps
    /// its state).
    async fn insert_alerts(&self, alerts: &[OutboxEntry]) -> Result<(), SinkError> {
        let values = vec!["(?, ?, ?, ?, ?, 'pending', 0, '', 0)"; alerts.len()].join(", ");
        let mut query = self.client.query(&format!(
            "INSERT INTO alert_outbox
             (webhook, key, identity, event, created_unix_nanos, state, attempts, last_error, version)
             VALUES {values}"
        ));
        for a in alerts {
            let event =
                serde_json::to_string(&a.event).map_err(|e| SinkError::Rejected(e.to_string()))?;
            query = query
                .bind(a.webhook.as_str())
                .bind(a.key.as_str())
                .bind(alert_identity(&a.event))
                .bind(event)
                .bind(a.created_unix_nanos);
        }
        query.execute().await.map_err(sink_err)
    }

    async fn insert_events(&self, events: &[RuleEvent], token: &str) -> Result<(), SinkError> {
        let mut insert = self
            .client
            .insert::<EventRow>("rule_events")
            .await
            .map_err(sink_err)?
            .with_setting("insert_deduplication_token", token)
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for e in events {
            insert
                .write(&EventRow::from_event(e))
                .await
                .map_err(sink_err)?;
        }
        insert.end().await.map_err(sink_err)
    }
}

/// The deduplication token of a batch: the same rows give the same token,
/// so ClickHouse drops a retried insert whose first attempt did land.
pub(super) fn batch_token(calls: &[CallRecord], events: &[RuleEvent]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    let mut g = std::hash::DefaultHasher::new();
    g.write_u8(0x5a);
    for c in calls {
        for hasher in [&mut h, &mut g] {
            hasher.write_i64(c.start_unix_nanos);
            hasher.write(c.trace_id.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(c.span_id.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(c.request_id.as_deref().unwrap_or("").as_bytes());
            hasher.write_u8(0xff);
        }
    }
    for e in events {
        for hasher in [&mut h, &mut g] {
            hasher.write_i64(e.time_unix_nanos);
            hasher.write(e.rule_id.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(e.scope.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(e.kind.as_bytes());
            hasher.write_u8(0xff);
            // Two thresholds of one budget crossed at the same instant (by
            // calls of one request counted on two instances) are two events.
            hasher.write_u64(e.threshold.map_or(u64::MAX, f64::to_bits));
            hasher.write_i64(e.window_end_unix_nanos.unwrap_or(0));
            hasher.write(e.trace_id.as_bytes());
            hasher.write_u8(0xff);
            hasher.write(e.span_id.as_bytes());
            hasher.write_u8(0xff);
        }
    }
    format!(
        "tollgate-{:016x}{:016x}-{}-{}",
        h.finish(),
        g.finish(),
        calls.len(),
        events.len()
    )
}

impl Sink for ClickhouseStore {
    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let token = batch_token(&batch.calls, &batch.events);
            // Alerts, then events, then calls: a writer killed between two
            // inserts leaves alerts without their events (stored again, by
            // key, when the events are made again) or events without their
            // calls, which whoever reads the calls again recognises
            // (pipeline::event_key); never events without their alerts nor
            // calls without their events.
            if !batch.alerts.is_empty() {
                self.insert_alerts(&batch.alerts).await?;
            }
            if !batch.events.is_empty() {
                self.insert_events(&batch.events, &format!("{token}-events"))
                    .await?;
            }
            if !batch.calls.is_empty() {
                self.insert_calls(&batch.calls, &format!("{token}-calls"))
                    .await?;
            }
            for m in batch.merges.iter() {
                self.merge(m).await?;
            }
            Ok(())
        })
    }
}

impl AlertOutbox for ClickhouseStore {
    fn pending<'a>(
        &'a self,
        webhook: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Pending>, SinkError>> {
        Box::pin(async move {
            let rows = self
                .client
                .query(
                    "SELECT key, event, created_unix_nanos, attempts FROM alert_outbox FINAL
                     WHERE webhook = ? AND state = 'pending'
                     ORDER BY created_unix_nanos, key LIMIT ?",
                )
                .bind(webhook)
                .bind(limit as u64)
                .fetch_all::<(String, String, i64, u32)>()
                .await
                .map_err(sink_err)?;
            Ok(rows
                .into_iter()
                .filter_map(|(key, event, created, attempts)| {
                    Some(Pending {
                        entry: OutboxEntry {
                            webhook: webhook.to_owned(),
                            key,
                            event: serde_json::from_str(&event).ok()?,
                            created_unix_nanos: created,
                        },
                        attempts,
                    })
                })
                .collect())
        })
    }

    fn record<'a>(
        &'a self,
        webhook: &'a str,
        key: &'a str,
        outcome: Outcome,
        at_unix_nanos: i64,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.client
                .query(
                    "INSERT INTO alert_outbox
                     (webhook, key, identity, event, created_unix_nanos, state, attempts, last_error, version)
                     SELECT webhook, key, identity, event, created_unix_nanos, ?, ?, ?, ?
                     FROM alert_outbox FINAL WHERE webhook = ? AND key = ?",
                )
                .bind(outcome.state())
                .bind(outcome.attempts())
                .bind(outcome.error())
                .bind(u64::try_from(at_unix_nanos).unwrap_or(1).max(1))
                .bind(webhook)
                .bind(key)
                .execute()
                .await
                .map_err(sink_err)
        })
    }

    fn deliveries<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<(String, DeliveryState)>, SinkError>> {
        Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let list = vec!["?"; keys.len()].join(", ");
            let mut query = self.client.query(&format!(
                "SELECT identity, webhook, state, attempts FROM alert_outbox FINAL
                 WHERE identity IN ({list}) ORDER BY webhook"
            ));
            for k in keys {
                query = query.bind(k.as_str());
            }
            let rows = query
                .fetch_all::<(String, String, String, u32)>()
                .await
                .map_err(sink_err)?;
            Ok(rows
                .into_iter()
                .map(|(identity, webhook, state, attempts)| {
                    (
                        identity,
                        DeliveryState {
                            webhook,
                            state,
                            attempts,
                        },
                    )
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(span: &str) -> CallRecord {
        CallRecord {
            trace_id: "t".into(),
            span_id: span.into(),
            start_unix_nanos: 1,
            ..Default::default()
        }
    }

    #[test]
    fn the_token_is_a_function_of_the_rows() {
        let a = vec![call("1"), call("2")];
        let b = vec![call("1"), call("3")];
        assert_eq!(batch_token(&a, &[]), batch_token(&a.clone(), &[]));
        assert_ne!(batch_token(&a, &[]), batch_token(&b, &[]));
        assert_ne!(batch_token(&a, &[]), batch_token(&a[..1], &[]));
        // Events-only batches of two thresholds crossed at the same instant.
        let event = |threshold: f64| RuleEvent {
            time_unix_nanos: 7,
            rule_id: "org-daily".into(),
            kind: "threshold".into(),
            scope: "org=acme".into(),
            metric: Some("tokens".into()),
            limit: Some(10_000.0),
            used: Some(10_000.0),
            threshold: Some(threshold),
            action: "block".into(),
            window_end_unix_nanos: Some(86_400),
            trace_id: "t".into(),
            span_id: "s".into(),
        };
        assert_ne!(
            batch_token(&[], &[event(0.6)]),
            batch_token(&[], &[event(0.9)])
        );
    }

    /// A server with a certificate no public root vouches for, answering
    /// every request as ClickHouse answers `SELECT 1` in RowBinary: the
    /// store's client reaches it over https only with `tls.ca_file`.
    #[tokio::test]
    async fn extra_roots_are_trusted_over_https() {
        use crate::internal_events::InternalEvents;
        use crate::listen::{Listener, ListenerLimits, Protocols, serve};
        use crate::tls::{ListenerRole, OutboundRoots, ServerTls, ServerTlsSettings};

        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("ch.crt"), dir.path().join("ch.key"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        let settings =
            ServerTlsSettings::load(cert.clone(), key, None, std::time::Duration::from_secs(5))
                .unwrap();
        let tls = ServerTls::new(&settings)
            .server_config(ListenerRole::Service, false)
            .unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", tcp.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let app = axum::Router::new().fallback(|| async { bytes::Bytes::from_static(&[1]) });
        tokio::spawn(serve(
            Listener {
                tcp,
                name: "clickhouse",
                protocols: Protocols::Any,
                limits: ListenerLimits::default(),
                tls: Some(tls),
            },
            app,
            InternalEvents::new(),
            stop.clone(),
        ));

        let select_one = |extra_roots: OutboundRoots| {
            let config = ClickhouseConfig {
                url: url.clone(),
                database: "default".into(),
                user: None,
                password: None,
                compression: ClickhouseCompression::None,
                retention_days: None,
                timeout: std::time::Duration::from_secs(5),
                query_timeout: std::time::Duration::from_secs(5),
                extra_roots,
            };
            let client = http_client(&config)
                .unwrap()
                .with_url(config.url.clone())
                .with_compression(Compression::None)
                .with_validation(false);
            async move { client.query("SELECT 1").fetch_one::<u8>().await }
        };
        assert_eq!(
            select_one(OutboundRoots::load(&cert).unwrap())
                .await
                .unwrap(),
            1
        );
        let untrusted = select_one(OutboundRoots::default()).await;
        assert!(untrusted.is_err(), "{untrusted:?}");
        stop.cancel();
    }
}
