//! Schema of the ClickHouse store, created and migrated by the collector.
//!
//! Migrations run once each, in order, and are recorded in
//! `tollgate_migrations`. Never edit a released migration: add the next one.
//! `{db}` stands for the configured database. The same statements, for the
//! database `tollgate`, are in `deploy/clickhouse/schema.sql` for DBAs who
//! create the schema themselves (`schema_sql()` writes that file; a test
//! keeps it in step).

use clickhouse::Client;

/// Migrations by version (index + 1); each is a list of statements.
const MIGRATIONS: &[(&str, &[&str])] = &[
    (
        "calls",
        &[
            // One row per model call. No content columns exist.
            "CREATE TABLE IF NOT EXISTS {db}.calls (
                time               DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
                start_unix_nanos   Int64 CODEC(Delta, ZSTD(1)),
                duration_nanos     Int64 CODEC(T64, ZSTD(1)),
                ttft_nanos         Nullable(Int64) CODEC(ZSTD(1)),
                trace_id           String CODEC(ZSTD(1)),
                span_id            String CODEC(ZSTD(1)),
                request_id         Nullable(String) CODEC(ZSTD(1)),
                org                LowCardinality(String),
                project            LowCardinality(String),
                app                LowCardinality(String),
                environment        LowCardinality(Nullable(String)),
                route              LowCardinality(Nullable(String)),
                user_id            Nullable(String) CODEC(ZSTD(1)),
                session_id         Nullable(String) CODEC(ZSTD(1)),
                agent_id           Nullable(String) CODEC(ZSTD(1)),
                agent_name         LowCardinality(Nullable(String)),
                provider           LowCardinality(Nullable(String)),
                operation          LowCardinality(Nullable(String)),
                request_model      LowCardinality(Nullable(String)),
                response_model     LowCardinality(Nullable(String)),
                model              LowCardinality(Nullable(String)),
                input_tokens       UInt64 CODEC(T64, ZSTD(1)),
                output_tokens      UInt64 CODEC(T64, ZSTD(1)),
                cache_read_tokens  UInt64 CODEC(T64, ZSTD(1)),
                cache_write_tokens UInt64 CODEC(T64, ZSTD(1)),
                reasoning_tokens   UInt64 CODEC(T64, ZSTD(1)),
                cost_usd           Nullable(Float64) CODEC(Gorilla, ZSTD(1)),
                cost_source        LowCardinality(String),
                price_version      LowCardinality(Nullable(String)),
                status             LowCardinality(String),
                error_type         LowCardinality(Nullable(String)),
                http_status        Nullable(UInt16),
                stream             Bool,
                finish_reason      LowCardinality(Nullable(String)),
                mode               LowCardinality(String),
                decision           LowCardinality(Nullable(String)),
                rules_fired        Array(LowCardinality(String)),
                attempt            UInt32,
                upstream           LowCardinality(Nullable(String)),
                labels             Map(LowCardinality(String), String) CODEC(ZSTD(1))
            )
            ENGINE = MergeTree
            PARTITION BY toDate(time)
            ORDER BY (org, project, app, time)
            SETTINGS non_replicated_deduplication_window = 10000",
        ],
    ),
    (
        "rule_events",
        &[
            // What rules did: threshold crossings, exceeded limits, denials.
            "CREATE TABLE IF NOT EXISTS {db}.rule_events (
                time                   DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
                time_unix_nanos        Int64 CODEC(Delta, ZSTD(1)),
                rule_id                LowCardinality(String),
                kind                   LowCardinality(String),
                scope                  String CODEC(ZSTD(1)),
                metric                 LowCardinality(Nullable(String)),
                limit_value            Nullable(Float64),
                used                   Nullable(Float64),
                threshold              Nullable(Float64),
                action                 LowCardinality(String),
                window_end_unix_nanos  Nullable(Int64),
                trace_id               String CODEC(ZSTD(1)),
                span_id                String CODEC(ZSTD(1))
            )
            ENGINE = MergeTree
            PARTITION BY toYYYYMM(time)
            ORDER BY (rule_id, time)
            SETTINGS non_replicated_deduplication_window = 10000",
        ],
    ),
    (
        "admin_actions",
        &[
            // Overrides, blocks and lifts, re-applied at start-up.
            "CREATE TABLE IF NOT EXISTS {db}.admin_actions (
                time_unix_nanos   Int64,
                until_unix_nanos  Nullable(Int64),
                body              String
            )
            ENGINE = MergeTree
            ORDER BY time_unix_nanos",
        ],
    ),
    (
        "calls_1m",
        &[
            // Per-minute rollup the dashboards read: totals plus latency and
            // time-to-first-token quantile states. The view names columns as
            // `c.x`: ClickHouse resolves a bare `x` to the alias `x` first.
            // The rollup has a deduplication window of its own: without it a
            // retried insert dropped from `calls` would still be added here.
            "CREATE TABLE IF NOT EXISTS {db}.calls_1m (
                minute             DateTime('UTC'),
                org                LowCardinality(String),
                project            LowCardinality(String),
                app                LowCardinality(String),
                environment        LowCardinality(String),
                provider           LowCardinality(String),
                model              LowCardinality(String),
                user_id            String,
                requests           SimpleAggregateFunction(sum, UInt64),
                errors             SimpleAggregateFunction(sum, UInt64),
                streamed           SimpleAggregateFunction(sum, UInt64),
                fallbacks          SimpleAggregateFunction(sum, UInt64),
                unpriced           SimpleAggregateFunction(sum, UInt64),
                input_tokens       SimpleAggregateFunction(sum, UInt64),
                output_tokens      SimpleAggregateFunction(sum, UInt64),
                cache_read_tokens  SimpleAggregateFunction(sum, UInt64),
                cost_usd           SimpleAggregateFunction(sum, Float64),
                latency_ms         AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
                ttft_ms            AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64)
            )
            ENGINE = AggregatingMergeTree
            PARTITION BY toYYYYMM(minute)
            ORDER BY (org, project, app, environment, provider, model, user_id, minute)
            SETTINGS non_replicated_deduplication_window = 10000",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.calls_1m_mv TO {db}.calls_1m AS
            SELECT
                toStartOfMinute(c.time) AS minute,
                c.org AS org, c.project AS project, c.app AS app,
                ifNull(c.environment, '') AS environment,
                ifNull(c.provider, '') AS provider,
                ifNull(c.model, '') AS model,
                ifNull(c.user_id, '') AS user_id,
                count() AS requests,
                countIf(c.status = 'error') AS errors,
                countIf(c.stream) AS streamed,
                countIf(c.attempt > 0) AS fallbacks,
                countIf(c.cost_usd IS NULL) AS unpriced,
                sum(c.input_tokens) AS input_tokens,
                sum(c.output_tokens) AS output_tokens,
                sum(c.cache_read_tokens) AS cache_read_tokens,
                sum(ifNull(c.cost_usd, 0)) AS cost_usd,
                quantilesState(0.5, 0.95, 0.99)(c.duration_nanos / 1e6) AS latency_ms,
                quantilesStateIf(0.5, 0.95, 0.99)(ifNull(c.ttft_nanos, 0) / 1e6, c.ttft_nanos IS NOT NULL) AS ttft_ms
            FROM {db}.calls AS c
            GROUP BY minute, org, project, app, environment, provider, model, user_id",
        ],
    ),
    (
        "calls_model_as_asked",
        &[
            // `model` is the model asked for, else the one that answered, as
            // in the embedded store and the rules; rows written before this
            // version named the answering model first. The rollup's earlier
            // minutes keep the names they were added up under.
            "ALTER TABLE {db}.calls
                UPDATE model = coalesce(request_model, response_model)
                WHERE request_model IS NOT NULL AND response_model IS NOT NULL
                  AND request_model != response_model",
        ],
    ),
    (
        "calls_parent_span",
        &[
            // The span's parent: ties a call to its run, and lets a later
            // description of the call find its row.
            "ALTER TABLE {db}.calls ADD COLUMN IF NOT EXISTS parent_span_id String DEFAULT '' CODEC(ZSTD(1))",
        ],
    ),
    (
        "alert_outbox",
        &[
            // An alert per (crossing, webhook), stored with its rule event
            // and kept until delivered or given up. Each attempt adds a row
            // with a higher version; read with FINAL. An entry stored again
            // (a batch replayed) has version 0 and never hides its state.
            "CREATE TABLE IF NOT EXISTS {db}.alert_outbox (
                webhook            LowCardinality(String),
                key                String,
                identity           String,
                event              String CODEC(ZSTD(1)),
                created_unix_nanos Int64,
                state              LowCardinality(String),
                attempts           UInt32,
                last_error         String,
                version            UInt64
            )
            ENGINE = ReplacingMergeTree(version)
            ORDER BY (webhook, key)",
        ],
    ),
];

/// Tables that retention (TTL) applies to, with their time column.
pub(super) const RETAINED: &[(&str, &str)] = &[
    ("calls", "time"),
    ("rule_events", "time"),
    ("calls_1m", "minute"),
];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

fn statements(db: &str) -> impl Iterator<Item = (u32, &'static str, String)> + '_ {
    MIGRATIONS
        .iter()
        .enumerate()
        .flat_map(move |(i, (name, stmts))| {
            stmts
                .iter()
                .map(move |s| (i as u32 + 1, *name, s.replace("{db}", db)))
        })
}

/// The whole schema as one SQL file, for database `db`.
pub fn schema_sql(db: &str) -> String {
    let mut out = format!(
        "-- Tollgate ClickHouse schema, version {SCHEMA_VERSION}. The collector creates and\n\
         -- migrates it by itself; this file is for DBAs who create it by hand.\n\
         -- Generated from collector/src/sinks/clickhouse/schema.rs.\n\n\
         CREATE DATABASE IF NOT EXISTS {db};\n"
    );
    let mut last = 0;
    for (version, name, sql) in statements(db) {
        if version != last {
            out.push_str(&format!("\n-- {version}: {name}\n"));
            last = version;
        }
        out.push_str(&dedent(&sql));
        out.push_str(";\n");
    }
    out
}

fn dedent(sql: &str) -> String {
    sql.lines()
        .map(|l| l.strip_prefix("            ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Creates the database and brings its schema to [`SCHEMA_VERSION`];
/// refuses a newer one. Then applies the configured retention.
pub(super) async fn migrate(
    client: &Client,
    db: &str,
    retention_days: Option<u32>,
) -> clickhouse::error::Result<()> {
    // The database may not exist yet: these run without a default database.
    let admin = client.clone().with_database("default");
    admin
        .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await?;
    admin
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.tollgate_migrations (
                version UInt32, name String, applied_at DateTime DEFAULT now()
             ) ENGINE = MergeTree ORDER BY version"
        ))
        .execute()
        .await?;
    let current: u32 = admin
        .query(&format!(
            "SELECT toUInt32(max(version)) FROM {db}.tollgate_migrations"
        ))
        .fetch_one()
        .await?;
    if current > SCHEMA_VERSION {
        return Err(clickhouse::error::Error::Custom(format!(
            "ClickHouse schema version {current} is newer than this tollgate ({SCHEMA_VERSION}); upgrade tollgate"
        )));
    }
    for (version, _, sql) in statements(db) {
        if version > current {
            admin.query(&sql).execute().await?;
        }
    }
    // Recorded once every statement ran: they are idempotent (`IF NOT
    // EXISTS`), so a crash in between only repeats them at the next start.
    for (i, (name, _)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        record(&admin, db, i as u32 + 1, name).await?;
        tracing::info!(version = i + 1, name, "ClickHouse schema migrated");
    }
    if let Some(days) = retention_days {
        for (table, column) in RETAINED {
            admin
                .query(&format!(
                    "ALTER TABLE {db}.{table} MODIFY TTL toDateTime({column}) + INTERVAL {days} DAY"
                ))
                .with_setting("materialize_ttl_after_modify", "0")
                .execute()
                .await?;
        }
    }
    Ok(())
}

async fn record(
    client: &Client,
    db: &str,
    version: u32,
    name: &str,
) -> clickhouse::error::Result<()> {
    client
        .query(&format!(
            "INSERT INTO {db}.tollgate_migrations (version, name) VALUES (?, ?)"
        ))
        .bind(version)
        .bind(name)
        .execute()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/clickhouse/schema.sql` is what the collector creates.
    /// `TOLLGATE_BLESS=1 cargo test` rewrites it after a schema change.
    #[test]
    fn the_exported_schema_file_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/clickhouse/schema.sql");
        let expected = schema_sql("tollgate");
        if std::env::var_os("TOLLGATE_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &expected).unwrap();
        }
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            found == expected,
            "{} is stale: run `TOLLGATE_BLESS=1 cargo test -p tollgate-collector schema` and commit it",
            path.display()
        );
    }

    #[test]
    fn every_statement_names_the_database() {
        for (_, _, sql) in statements("analytics") {
            assert!(sql.contains("analytics."), "{sql}");
            assert!(!sql.contains("{db}"), "{sql}");
        }
        assert_eq!(SCHEMA_VERSION, 7);
    }
}
