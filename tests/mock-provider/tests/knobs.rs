//! Per-request knobs and server-wide fault rates: latency, TTFT, hangs, cut
//! streams, forced statuses in each envelope, deterministic error rates,
//! and that shutdown is not held up by hung requests or slow streams.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Auth, KEY, post, start};
use tollgate_mock_provider::{Endpoint, MockConfig, MockProvider};

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]
    })
}

fn message(stream: bool) -> Value {
    json!({
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}]
    })
}

#[tokio::test]
async fn latency_delays_the_response() {
    let mock = start().await;
    let started = Instant::now();
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[("x-mock-latency-ms", "200")],
        &chat(false),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn server_defaults_pace_the_stream() {
    let mock = MockProvider::start(MockConfig {
        ttft: Duration::from_millis(150),
        inter_chunk: Duration::from_millis(40),
        default_output_tokens: 4,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let reply = post(
        &format!("{}/v1/messages", mock.base_url()),
        Auth::Anthropic,
        &[],
        &message(true),
    )
    .await;
    // 150 ms TTFT + 3 gaps of 40 ms between the 4 tokens.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(270), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(reply.events().len(), 10);
    mock.shutdown().await;
}

#[tokio::test]
async fn ttft_knob_delays_only_the_first_event() {
    let mock = start().await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut response = client
        .post(format!("{}/v1/chat/completions", mock.base_url()))
        .bearer_auth(KEY)
        .header("x-mock-ttft-ms", "250")
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    let headers_after = started.elapsed();
    let first = response.chunk().await.unwrap().unwrap();
    let first_after = started.elapsed();
    assert!(
        headers_after < Duration::from_millis(200),
        "{headers_after:?}"
    );
    assert!(first_after >= Duration::from_millis(250), "{first_after:?}");
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    mock.shutdown().await;
}

#[tokio::test]
async fn cut_openai_stream_has_no_finish_usage_or_done() {
    let mock = start().await;
    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[("x-mock-cut-after-chunks", "3")],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.broken, "the connection must break: {}", reply.text());
    let events = reply.events();
    assert!(events.iter().all(|(_, data)| data != "[DONE]"));
    let chunks = reply.data_json();
    assert_eq!(chunks.len(), 4, "role + 3 content chunks");
    assert!(chunks.iter().all(|c| c["usage"].is_null()));
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn cut_anthropic_stream_stops_inside_the_block() {
    let mock = start().await;
    let reply = post(
        &format!("{}/v1/messages", mock.base_url()),
        Auth::Anthropic,
        &[("x-mock-cut-after-chunks", "2")],
        &message(true),
    )
    .await;
    assert!(reply.broken);
    let names: Vec<String> = reply.events().into_iter().filter_map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta"
        ]
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn forced_statuses_use_the_openai_envelope() {
    let mock = start().await;
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let reply = post(
        &url,
        Auth::OpenAi,
        &[("x-mock-status", "429")],
        &chat(false),
    )
    .await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("1"));
    let error = reply.json();
    assert_eq!(error["error"]["type"], "requests");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert_eq!(error["error"]["param"], Value::Null);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit reached")
    );

    for (status, kind) in [
        ("500", "server_error"),
        ("503", "server_error"),
        ("400", "invalid_request_error"),
    ] {
        let reply = post(
            &url,
            Auth::OpenAi,
            &[("x-mock-status", status)],
            &chat(true),
        )
        .await;
        assert_eq!(reply.status.to_string(), status);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let error = reply.json();
        assert_eq!(error["error"]["type"], kind);
        assert_eq!(error["error"]["code"], Value::Null);
        assert!(reply.header("retry-after").is_none());
    }
    // Forced errors still go through auth first, like the real edge.
    let reply = post(&url, Auth::None, &[("x-mock-status", "500")], &chat(false)).await;
    assert_eq!(reply.status, 401);
    mock.shutdown().await;
}

#[tokio::test]
async fn unreadable_knob_is_a_400_naming_the_header() {
    let mock = start().await;
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[("x-mock-output-tokens", "lots")],
        &chat(false),
    )
    .await;
    assert_eq!(reply.status, 400);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("x-mock-output-tokens"), "{message}");
    mock.shutdown().await;
}

#[tokio::test]
async fn error_and_rate_limit_rates_are_deterministic() {
    // u_k = frac(k / φ) for k = 1..=10 is 0.618 0.236 0.854 0.472 0.090
    // 0.708 0.326 0.944 0.562 0.180: five below 0.5, three below 0.3.
    let statuses = |mock: &MockProvider| {
        let url = format!("{}/v1/chat/completions", mock.base_url());
        async move {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                statuses.push(post(&url, Auth::OpenAi, &[], &chat(false)).await.status);
            }
            statuses
        }
    };
    let errors = MockProvider::start(MockConfig {
        error_rate: 0.5,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        statuses(&errors).await,
        vec![200, 500, 200, 500, 500, 200, 500, 200, 200, 500]
    );
    errors.shutdown().await;

    let limited = MockProvider::start(MockConfig {
        rate_limit_rate: 0.3,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(
        statuses(&limited).await,
        vec![200, 429, 200, 200, 429, 200, 200, 200, 200, 429]
    );
    // Listing models is not a model call and never fails.
    let models = support::send(
        reqwest::Method::GET,
        &format!("{}/v1/models", limited.base_url()),
        Auth::OpenAi,
        &[],
        None,
    )
    .await;
    assert_eq!(models.status, 200);
    limited.shutdown().await;
}

#[tokio::test]
async fn hang_never_answers_and_does_not_block_shutdown() {
    let mock = start().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let result = client
        .post(format!("{}/v1/messages", mock.base_url()))
        .header("x-api-key", KEY)
        .header("x-mock-hang", "1")
        .json(&message(false))
        .send()
        .await;
    assert!(result.is_err_and(|err| err.is_timeout()));

    // A second hung request that is still open while the mock shuts down.
    let url = format!("{}/v1/messages", mock.base_url());
    let pending = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("x-api-key", KEY)
            .header("x-mock-hang", "true")
            .json(&message(false))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.stats().requests_to(Endpoint::Messages), 2);
    let started = Instant::now();
    mock.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The hung request is released with a 503 (or its connection closed).
    let outcome = pending.await.unwrap();
    assert!(matches!(outcome, Ok(503) | Err(_)), "{outcome:?}");
}

#[tokio::test]
async fn stats_record_the_last_request() {
    let mock = start().await;
    post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[("x-trace", "abc")],
        &chat(false),
    )
    .await;
    let stats = mock.stats();
    assert_eq!(stats.total_requests, 1);
    assert_eq!(stats.last_path.as_deref(), Some("/v1/chat/completions"));
    assert_eq!(stats.last_header("X-Trace"), Some("abc"));
    assert_eq!(
        stats.last_header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(stats.last_body, chat(false));
    mock.shutdown().await;
}
