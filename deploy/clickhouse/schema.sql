-- Tollgate ClickHouse schema, version 7. The collector creates and
-- migrates it by itself; this file is for DBAs who create it by hand.
-- Generated from collector/src/sinks/clickhouse/schema.rs.

CREATE DATABASE IF NOT EXISTS tollgate;

-- 1: calls
CREATE TABLE IF NOT EXISTS tollgate.calls (
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
SETTINGS non_replicated_deduplication_window = 10000;

-- 2: rule_events
CREATE TABLE IF NOT EXISTS tollgate.rule_events (
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
SETTINGS non_replicated_deduplication_window = 10000;

-- 3: admin_actions
CREATE TABLE IF NOT EXISTS tollgate.admin_actions (
    time_unix_nanos   Int64,
    until_unix_nanos  Nullable(Int64),
    body              String
)
ENGINE = MergeTree
ORDER BY time_unix_nanos;

-- 4: calls_1m
CREATE TABLE IF NOT EXISTS tollgate.calls_1m (
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
SETTINGS non_replicated_deduplication_window = 10000;
CREATE MATERIALIZED VIEW IF NOT EXISTS tollgate.calls_1m_mv TO tollgate.calls_1m AS
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
FROM tollgate.calls AS c
GROUP BY minute, org, project, app, environment, provider, model, user_id;

-- 5: calls_model_as_asked
ALTER TABLE tollgate.calls
    UPDATE model = coalesce(request_model, response_model)
    WHERE request_model IS NOT NULL AND response_model IS NOT NULL
      AND request_model != response_model;

-- 6: calls_parent_span
ALTER TABLE tollgate.calls ADD COLUMN IF NOT EXISTS parent_span_id String DEFAULT '' CODEC(ZSTD(1));

-- 7: alert_outbox
CREATE TABLE IF NOT EXISTS tollgate.alert_outbox (
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
ORDER BY (webhook, key);
