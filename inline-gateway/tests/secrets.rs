//! A canary provider key and a canary virtual key, pushed through every
//! path (success, stream, upstream errors, fallback, timeout, the provider
//! rejecting the gateway's key, bad requests, a wrong key) with debug logging
//! on, appear in no log line, row, error body or response header.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;
use tollgate_mock_provider::MockConfig;

const PROVIDER_CANARY: &str = "sk-CANARY-provider-7f3a9c1e5b";
const VIRTUAL_CANARY: &str = "tg-CANARYvirtualKEY0123456789abcdefghijklmnopq";
const WRONG_CANARY: &str = "tg-CANARYwrongKEY0123456789abcdefghijklmnopqrs";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn canary_keys_never_leak_into_logs_rows_or_answers() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let good = mock().await;
    let failing = mock_with(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let providers = [
        provider("openai", "openai", &format!("{}/v1", good.base_url()), ""),
        provider("anthropic", "anthropic", &good.base_url(), ""),
        provider(
            "failing",
            "openai",
            &format!("{}/v1", failing.base_url()),
            "",
        ),
        provider(
            "hanging",
            "openai",
            &format!("{}/v1", good.base_url()),
            "timeout = \"200ms\"\nheaders = { \"x-mock-hang\" = \"1\" }",
        ),
        provider(
            "rejecting",
            "openai",
            &format!("{}/v1", good.base_url()),
            "headers = { \"x-mock-status\" = \"401\" }",
        ),
        provider(
            "picky",
            "anthropic",
            &good.base_url(),
            "headers = { \"x-mock-status\" = \"400\" }",
        ),
    ]
    .concat();
    let cfg = format!(
        "{providers}[[gateway.routes]]\nname = \"fallback\"\ntargets = [{{ provider = \"failing\", model = \"gpt-4o-mini\" }}, {{ provider = \"hanging\", model = \"gpt-4o\" }}, {{ provider = \"anthropic\", model = \"claude-3-5-haiku-20241022\" }}]\n"
    );
    let gw = start_with(&cfg, "", PROVIDER_CANARY, VIRTUAL_CANARY).await;

    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "max_tokens": 5,
               "messages": [{"role": "user", "content": "hello"}]})
    };
    let mut replies = Vec::new();
    for (path, body) in [
        ("/v1/chat/completions", chat("gpt-4o-mini", false)),
        ("/v1/chat/completions", chat("gpt-4o-mini", true)),
        ("/v1/chat/completions", chat("fallback", false)),
        ("/v1/chat/completions", chat("fallback", true)),
        ("/v1/chat/completions", chat("failing/gpt-4o-mini", false)),
        ("/v1/chat/completions", chat("hanging/gpt-4o", false)),
        ("/v1/chat/completions", chat("rejecting/gpt-4o", false)),
        (
            "/v1/messages",
            chat("picky/claude-3-5-haiku-20241022", false),
        ),
        ("/v1/messages", chat("rejecting/gpt-4o", true)),
        ("/v1/chat/completions", chat("no-such-model", false)),
        ("/v1/chat/completions", json!({"messages": []})),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x"}),
        ),
    ] {
        replies.push(gw.post(path, &body).await);
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 500, 504, 502, 400, 502, 404, 400, 200]
    );
    // The provider rejecting the gateway's key is not the caller's 401.
    assert_eq!(replies[6].json()["error"]["type"], "server_error");
    replies.push(
        read(
            gw.request("/v1/chat/completions", Some(WRONG_CANARY))
                .json(&chat("gpt-4o-mini", false)),
        )
        .await,
    );
    replies.push(
        read(
            gw.client
                .post(format!("{}/v1/messages", gw.base))
                .header("x-api-key", WRONG_CANARY)
                .json(&chat("claude-3-5-haiku-20241022", false)),
        )
        .await,
    );
    assert_eq!(replies[12].status, 401);
    assert_eq!(replies[13].status, 401);

    // The provider did get the provider key (so the canary was in play).
    assert_eq!(
        good.stats().last_header("authorization").map(str::to_owned),
        Some(format!("Bearer {PROVIDER_CANARY}"))
    );

    let rows = gw.wait_rows(11).await;
    let logs = String::from_utf8_lossy(
        &logs
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(
        logs.contains("gateway: upstream attempt failed"),
        "debug logs were captured"
    );
    let mut haystacks = vec![("logs".to_owned(), logs)];
    for r in &rows {
        haystacks.push(("row".to_owned(), serde_json::to_string(r).unwrap()));
        haystacks.push(("row debug".to_owned(), format!("{r:?}")));
    }
    for (i, r) in replies.iter().enumerate() {
        haystacks.push((format!("reply {i} body"), r.text()));
        haystacks.push((format!("reply {i} headers"), format!("{:?}", r.headers)));
    }
    haystacks.push(("gateway debug".to_owned(), format!("{:?}", gw.gateway)));
    for (what, text) in &haystacks {
        for canary in [PROVIDER_CANARY, VIRTUAL_CANARY, WRONG_CANARY, "CANARY"] {
            assert!(
                !text.contains(canary),
                "{canary} leaked into {what}: {text}"
            );
        }
    }
}
