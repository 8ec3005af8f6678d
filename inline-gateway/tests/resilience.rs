//! Fallback (500, 429, timeouts, across dialects), retries, circuit
//! breakers, and streams cut by either side: the row still carries the
//! attempt that served, the serving model's cost, and never $0 for a stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::*;
use tollgate_mock_provider::{Endpoint, MockConfig, MockProvider};
use tollgate_rules::{CallStatus, CostSource};

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "What is the weather like?"}]})
}

/// A route `r`: `primary` (on `bad`) first, then `second` (on `good`).
fn chain(bad: &MockProvider, good: &MockProvider, primary_extra: &str, second: &str) -> String {
    format!(
        "{}{}{}[[gateway.routes]]\nname = \"r\"\ntargets = [\n  {{ provider = \"primary\", model = \"gpt-4o-mini\", timeout = \"300ms\" }},\n  {second}\n]\n",
        provider(
            "primary",
            "openai",
            &format!("{}/v1", bad.base_url()),
            primary_extra
        ),
        provider(
            "secondary",
            "openai",
            &format!("{}/v1", good.base_url()),
            ""
        ),
        provider("claude", "anthropic", &good.base_url(), ""),
    )
}

const TO_GPT4O: &str = "{ provider = \"secondary\", model = \"gpt-4o\" }";
const TO_CLAUDE: &str = "{ provider = \"claude\", model = \"claude-3-5-haiku-20241022\" }";

/// The first link fails as `bad` does; the second serves. Returns the
/// `rows` rows, the served call's last.
async fn falls_back(
    bad: MockProvider,
    primary_extra: &str,
    rows: usize,
) -> Vec<tollgate_rules::CallRecord> {
    let good = mock().await;
    let gw = start(&chain(&bad, &good, primary_extra, TO_GPT4O), "").await;
    let started = Instant::now();
    let reply = gw.post("/v1/chat/completions", &chat("r")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(reply.json()["model"], "gpt-4o");
    assert_eq!(bad.stats().requests_to(Endpoint::ChatCompletions), 1);
    assert_eq!(good.stats().requests_to(Endpoint::ChatCompletions), 1);
    let rows = gw.wait_rows(rows).await;
    let row = rows.last().unwrap().clone();
    assert_eq!(row.status, CallStatus::Ok);
    assert_eq!(row.attempt, 1);
    assert_eq!(row.route.as_deref(), Some("r"));
    assert_eq!(row.request_model.as_deref(), Some("gpt-4o"));
    assert_eq!(row.response_model.as_deref(), Some("gpt-4o"));
    assert_eq!(
        row.upstream.as_deref(),
        Some(good.addr().to_string().as_str())
    );
    let cost = row.cost_usd.unwrap();
    assert_close(cost, gw.cost("openai", "gpt-4o", &row));
    assert!(
        cost > gw.cost("openai", "gpt-4o-mini", &row),
        "priced at the model that served, not the first link's"
    );
    assert_eq!(gw.gateway.stats().fallbacks, 1);
    rows
}

#[tokio::test]
async fn a_500_falls_back_to_the_next_link() {
    let bad = mock_with(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let rows = falls_back(bad, "", 1).await;
    assert_eq!(rows.len(), 1, "a refused attempt is not billed: {rows:#?}");
}

#[tokio::test]
async fn a_429_falls_back_to_the_next_link() {
    let bad = mock_with(MockConfig {
        rate_limit_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let rows = falls_back(bad, "", 1).await;
    assert_eq!(rows.len(), 1, "a refused attempt is not billed: {rows:#?}");
}

#[tokio::test]
async fn a_link_hanging_past_its_timeout_falls_back() {
    let bad = mock().await;
    let rows = falls_back(bad, "headers = { \"x-mock-hang\" = \"1\" }", 2).await;
    // The provider had the request and may bill it: the attempt that timed
    // out is a row of its own, settled at the worst case it reserved.
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let timed_out = &rows[0];
    assert_eq!(timed_out.attempt, 0);
    assert_eq!(timed_out.status, CallStatus::Error);
    assert_eq!(timed_out.error_type.as_deref(), Some("upstream_timeout"));
    assert_eq!(timed_out.http_status, Some(504));
    assert_eq!(timed_out.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        timed_out.labels.get("usage_estimated").map(String::as_str),
        Some("true")
    );
    assert_eq!(timed_out.output_tokens, 4096, "the default cap it reserved");
    // 16 + 4 per message, "role" "user" "content" and the 25-byte question.
    assert_eq!(timed_out.input_tokens, 16 + 4 + 4 + 4 + 7 + 25);
    assert_ne!(timed_out.span_id, rows[1].span_id);
    assert_eq!(timed_out.trace_id, rows[1].trace_id);
    assert!(timed_out.cost_usd.unwrap() > 0.0);
}

#[tokio::test]
async fn an_openai_request_falls_back_to_an_anthropic_link() {
    let bad = mock_with(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let good = mock().await;
    let gw = start(&chain(&bad, &good, "", TO_CLAUDE), "").await;
    let reply = gw.post("/v1/chat/completions", &chat("r")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let out = reply.json();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["model"], "claude-3-5-haiku-20241022");
    assert!(
        out["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("w0 w1")
    );
    assert_eq!(good.stats().requests_to(Endpoint::Messages), 1);
    let row = gw.one_row().await;
    assert_eq!(row.attempt, 1);
    assert_eq!(row.provider.as_deref(), Some("anthropic"));
    assert_eq!(
        row.request_model.as_deref(),
        Some("claude-3-5-haiku-20241022")
    );
    assert_close(
        row.cost_usd.unwrap(),
        gw.cost("anthropic", "claude-3-5-haiku-20241022", &row),
    );

    // Streamed: the primary's 500 arrives before any event, so it falls back too.
    let mut body = chat("r");
    body["stream"] = json!(true);
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .data_json()
            .iter()
            .all(|c| c["model"] == "claude-3-5-haiku-20241022")
    );
    let rows = gw.wait_rows(2).await;
    assert_eq!(rows[1].attempt, 1);
    assert_eq!(rows[1].output_tokens, 20);
}

#[tokio::test]
async fn a_stream_that_stalls_before_its_first_event_falls_back() {
    let bad = mock_with(MockConfig {
        ttft: Duration::from_secs(10),
        ..MockConfig::default()
    })
    .await;
    let good = mock().await;
    let gw = start(&chain(&bad, &good, "", TO_GPT4O), "").await;
    let mut body = chat("r");
    body["stream"] = json!(true);
    let started = Instant::now();
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(reply.data_json().iter().all(|c| c["model"] == "gpt-4o"));
    let rows = gw.wait_rows(2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    // The stalled stream had the request: its attempt is settled apart.
    assert_eq!(rows[0].attempt, 0);
    assert_eq!(rows[0].error_type.as_deref(), Some("upstream_timeout"));
    assert_eq!(rows[0].output_tokens, 4096);
    assert_eq!(rows[1].attempt, 1);
    assert_eq!(rows[1].status, CallStatus::Ok);
}

#[tokio::test]
async fn retries_stay_on_a_link_with_backoff_then_move_on() {
    let bad = mock_with(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let good = mock().await;
    let cfg = chain(&bad, &good, "", TO_GPT4O).replace(
        "name = \"r\"\n",
        "name = \"r\"\nretries = 2\nbackoff = \"50ms\"\n",
    );
    let gw = start(&cfg, "").await;
    let started = Instant::now();
    let reply = gw.post("/v1/chat/completions", &chat("r")).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "50 + 100 ms of backoff"
    );
    assert_eq!(bad.stats().requests_to(Endpoint::ChatCompletions), 3);
    assert_eq!(gw.one_row().await.attempt, 3);
}

#[tokio::test]
async fn when_every_link_fails_the_caller_gets_the_last_error_and_a_row() {
    let bad = mock_with(MockConfig {
        rate_limit_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let gw = start(
        &provider("primary", "openai", &format!("{}/v1", bad.base_url()), ""),
        "",
    )
    .await;
    let reply = gw
        .post("/v1/chat/completions", &chat("primary/gpt-4o-mini"))
        .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
    assert!(reply.header("retry-after").is_some());
    let row = gw.one_row().await;
    assert_eq!(row.status, CallStatus::Error);
    assert_eq!(row.http_status, Some(429));
    assert_eq!(row.error_type.as_deref(), Some("upstream_rate_limited"));
    assert_eq!(row.decision.as_deref(), Some("allow"));

    let dead = provider("dead", "openai", "http://127.0.0.1:9/v1", "");
    let gw = start(&dead, "").await;
    let reply = gw
        .post("/v1/chat/completions", &chat("dead/gpt-4o-mini"))
        .await;
    assert_eq!(reply.status, 502);
    assert_eq!(
        gw.one_row().await.error_type.as_deref(),
        Some("upstream_unreachable")
    );
}

#[tokio::test]
async fn an_open_breaker_skips_the_failing_provider() {
    let bad = mock_with(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let good = mock().await;
    let cfg = format!(
        "circuit_breaker = {{ failure_threshold = 2, cooldown = \"60s\" }}\n{}",
        chain(&bad, &good, "", TO_GPT4O)
    );
    let gw = start(&cfg, "").await;
    for _ in 0..4 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("r")).await.status,
            200
        );
    }
    assert_eq!(
        bad.stats().requests_to(Endpoint::ChatCompletions),
        2,
        "skipped once its breaker opened"
    );
    let rows = gw.wait_rows(4).await;
    let attempts: Vec<u32> = rows.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 1, 1, 1], "the second link served each time");
    assert_eq!(gw.gateway.stats().breakers_opened, 1);
}

#[tokio::test]
async fn a_client_cutting_a_stream_leaves_a_row_with_estimated_usage() {
    let slow = mock_with(MockConfig {
        inter_chunk: Duration::from_millis(40),
        ..MockConfig::default()
    })
    .await;
    let gw = start(&openai_and_anthropic(&slow), "").await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true,
                   "messages": [{"role": "user", "content": "Tell me a long story please."}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-3-5-haiku-20241022", "stream": true, "max_tokens": 20,
                   "messages": [{"role": "user", "content": "Tell me a long story please."}]}),
        ),
    ] {
        let before = gw.rows.len();
        let resp = gw
            .request(path, Some(&gw.key))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let mut seen = String::new();
        while seen.matches(" w").count() < 3 {
            let chunk = stream.next().await.unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(stream);
        let rows = gw.wait_rows(before + 1).await;
        let row = rows.last().unwrap();
        assert_eq!(row.status, CallStatus::Error);
        assert_eq!(row.error_type.as_deref(), Some("client_disconnected"));
        assert_eq!(
            row.labels.get("usage_estimated").map(String::as_str),
            Some("true")
        );
        assert!(row.input_tokens > 0, "{row:?}");
        assert!(row.output_tokens > 0 && row.output_tokens < 20, "{row:?}");
        assert_eq!(row.cost_source, CostSource::PriceTable);
        assert!(
            row.cost_usd.unwrap() > 0.0,
            "a stream is never recorded as $0"
        );
    }
    assert_eq!(gw.gateway.stats().streams_cut, 2);
}

#[tokio::test]
async fn a_provider_cutting_a_stream_leaves_a_row_with_estimated_usage() {
    let mock = mock().await;
    let cfg = provider(
        "openai",
        "openai",
        &format!("{}/v1", mock.base_url()),
        "headers = { \"x-mock-cut-after-chunks\" = \"5\" }",
    );
    let gw = start(&cfg, "").await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "Tell me a story."}]});
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.broken,
        "the caller sees the stream break, as it did upstream"
    );
    let row = gw.one_row().await;
    assert_eq!(row.error_type.as_deref(), Some("upstream_stream_cut"));
    assert_eq!(
        row.labels.get("usage_estimated").map(String::as_str),
        Some("true")
    );
    // "w0 w1 w2 w3 w4": 14 bytes of text, at most 14 tokens.
    assert_eq!(row.output_tokens, 14);
    // The input bound: 16 + 4 per message, "role" "user" "content" and
    // the 16 bytes of "Tell me a story.".
    assert_eq!(row.input_tokens, 16 + 4 + 4 + 4 + 7 + 16);
    assert!(row.cost_usd.unwrap() > 0.0);
}

/// A server that answers every request with `307 Temporary Redirect` to
/// `location`, and counts them.
async fn redirecting(location: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

#[tokio::test]
async fn a_redirect_is_never_followed_and_the_key_stays_home() {
    // Where the redirect points: a provider (a mock on another port) that
    // would answer if the gateway followed, so following cannot hide.
    let elsewhere = mock().await;
    let (moved, redirects) = redirecting(format!("{}/v1/messages", elsewhere.base_url())).await;
    let good = mock().await;
    let providers = format!(
        // Retries on a link do not repeat a redirect: it will not change.
        "{}{}[[gateway.routes]]\nname = \"r\"\nretries = 2\nbackoff = \"1s\"\ntargets = [\n  {{ provider = \"moved\", model = \"claude-3-5-haiku-20241022\" }},\n  {{ provider = \"claude\", model = \"claude-3-5-haiku-20241022\" }}\n]\n",
        // Anthropic's key goes in `x-api-key`, which an HTTP client following
        // a redirect to another host keeps sending.
        provider("moved", "anthropic", &format!("http://{moved}"), ""),
        provider("claude", "anthropic", &good.base_url(), ""),
    );
    let gw = start(&providers, "").await;
    let messages = |model: &str| {
        json!({"model": model, "max_tokens": 32,
               "messages": [{"role": "user", "content": "What is the weather like?"}]})
    };

    // A chain moves on to its next link.
    let reply = gw.post("/v1/messages", &messages("r")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(good.stats().requests_to(Endpoint::Messages), 1);
    let row = gw.one_row().await;
    assert_eq!(row.status, CallStatus::Ok);
    assert_eq!(row.attempt, 1, "the redirect was tried again on its link");
    assert_eq!(redirects.load(Ordering::SeqCst), 1);

    // Alone, the provider's redirect is a 502 that says what happened.
    let reply = gw
        .post("/v1/messages", &messages("moved/claude-3-5-haiku-20241022"))
        .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["type"], "error");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redirect"),
        "{}",
        reply.text()
    );
    assert!(reply.header("location").is_none());
    let rows = gw.wait_rows(2).await;
    assert_eq!(rows[1].error_type.as_deref(), Some("upstream_redirect"));
    assert_eq!(rows[1].http_status, Some(502));

    assert_eq!(
        elsewhere.stats().requests_to(Endpoint::Messages),
        0,
        "the gateway followed a redirect with the provider key"
    );
}
