//! The official `openai` and `anthropic` Python SDKs, unmodified but for
//! their base URL and key, against the real binary's inline gateway (on the
//! shared mock provider): chat JSON, chat streams with and without
//! `include_usage`, embeddings, tool calls, messages JSON and stream, tool
//! use. Every call must succeed in the SDK and leave a gateway row whose
//! tokens are the usage the SDK parsed (the mock's own figures) and whose
//! cost is the price table's for the model that served it.
//!
//! `tests/python-sdk/sdk_calls.py` makes the calls; the venv comes from
//! `tests/python-sdk/launch.sh python`, which `scripts/test` exports as
//! `TOLLGATE_TEST_SDK_PYTHON`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::Collector;
use tollgate_mock_provider::{
    Api, DEFAULT_OUTPUT_TOKENS, Endpoint, Knobs, MockConfig, MockProvider, usage_for,
};
use tollgate_rules::pricing::{PriceTable, TokenUsage};

const ADMIN: &str = "admin-token-for-the-python-sdk-test";
const TEST: &str = "e2e_python_sdk";

/// The calls `sdk_calls.py` makes, in its order, with the provider each
/// must reach and whether it streams.
const CALLS: [(&str, &str, bool); 8] = [
    ("chat_json", "openai", false),
    ("chat_stream", "openai", true),
    ("chat_stream_usage", "openai", true),
    ("embeddings", "openai", false),
    ("chat_tools", "openai", false),
    ("messages_json", "anthropic", false),
    ("messages_stream", "anthropic", true),
    ("messages_tools", "anthropic", false),
];

/// The venv's python, or `None` (with a notice) when the environment has
/// none; under `scripts/test` that is a failure.
fn sdk_python() -> Option<String> {
    match std::env::var("TOLLGATE_TEST_SDK_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("TOLLGATE_TEST_STRICT").is_some() => panic!(
            "{TEST}: TOLLGATE_TEST_SDK_PYTHON is not set: scripts/test installs the Python SDKs"
        ),
        _ => {
            eprintln!(
                "{TEST}: skipped, no Python SDKs (run scripts/test, or set TOLLGATE_TEST_SDK_PYTHON to `tests/python-sdk/launch.sh python`)"
            );
            None
        }
    }
}

fn config(mock: &MockProvider) -> String {
    format!(
        r#"
[admin]
token = "{ADMIN}"

[gateway]
enabled = true
listen = "127.0.0.1:0"

[[gateway.providers]]
name = "openai"
kind = "openai"
base_url = "{url}/v1"
api_key_env = "TEST_SDK_OPENAI_KEY"

[[gateway.providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{url}"
api_key_env = "TEST_SDK_ANTHROPIC_KEY"
"#,
        url = mock.base_url()
    )
}

async fn create_key(c: &Collector) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys", c.api_url()))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "python sdks", "org": "acme", "project": "sdk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let created: Value = r.json().await.unwrap();
    created["key"].as_str().unwrap().to_owned()
}

/// Runs `sdk_calls.py`; returns its JSON lines by call name.
fn run_sdk_calls(python: &str, gateway: &str, key: &str) -> Vec<Value> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python-sdk/sdk_calls.py");
    let out = Command::new(python)
        .arg(script)
        .args([gateway, key])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("{TEST}: cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk_calls.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_work_and_their_usage_is_priced_exactly() {
    let Some(python) = sdk_python() else {
        return;
    };
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let envs = [
        ("TEST_SDK_OPENAI_KEY", "sk-test-openai"),
        ("TEST_SDK_ANTHROPIC_KEY", "sk-ant-test"),
    ];
    let c = Collector::start_full(&config(&mock), &[], &envs);
    let gateway = format!("http://{}", c.gateway.expect("the gateway is listening"));
    let key = create_key(&c).await;

    let lines = run_sdk_calls(&python, &gateway, &key);
    for line in &lines {
        eprintln!("sdk: {line}");
    }
    let seen: Vec<&Value> = lines.iter().filter(|l| l["call"] != "versions").collect();
    let names: Vec<&str> = seen.iter().map(|l| l["call"].as_str().unwrap()).collect();
    assert_eq!(names, CALLS.map(|(name, _, _)| name), "the script's calls");
    let stats = mock.stats();
    assert_eq!(stats.total_requests, CALLS.len() as u64);
    assert_eq!(stats.requests_to(Endpoint::ChatCompletions), 4);
    assert_eq!(stats.requests_to(Endpoint::Embeddings), 1);
    assert_eq!(stats.requests_to(Endpoint::Messages), 3);
    // The SDK's usage is the mock's own rule applied to what it received
    // (checked on the last call, whose body the mock keeps).
    let mock_usage = usage_for(
        Api::AnthropicMessages,
        &stats.last_body,
        &Knobs::default(),
        DEFAULT_OUTPUT_TOKENS,
    );
    let last = seen.last().unwrap();
    assert_eq!(
        last["usage"],
        json!({"input": mock_usage.anthropic_input_tokens(), "output": mock_usage.anthropic_output_tokens()}),
        "{last}"
    );

    let rows = c.wait_gateway_rows(CALLS.len()).await;
    assert_eq!(rows.len(), CALLS.len(), "one row per call: {rows:?}");
    let prices = PriceTable::builtin().unwrap();
    for ((name, provider, stream), sdk) in CALLS.iter().zip(&seen) {
        let request_id = sdk["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: the SDK saw no request id: {sdk}"));
        let row = rows
            .iter()
            .find(|r| r["labels"]["request_id"] == request_id)
            .unwrap_or_else(|| panic!("{name}: no row for request {request_id}: {rows:?}"));
        assert_eq!(row["project"], "sdk", "{name}: {row}");
        assert_eq!(row["provider"], *provider, "{name}: {row}");
        assert_eq!(row["status"], "ok", "{name}: {row}");
        assert_eq!(row["stream"], *stream, "{name}: {row}");
        assert!(
            row["labels"].get("usage_estimated").is_none(),
            "{name}: usage estimated although the provider sent it: {row}"
        );

        // Tokens: exactly what the SDK parsed, which is what the mock sent.
        // The stream without include_usage carried no usage to the caller
        // (the gateway asked for it and stripped it), yet the row has it.
        let input = u64_of(&row["input_tokens"]);
        let output = u64_of(&row["output_tokens"]);
        if *name == "chat_stream" {
            assert_eq!(
                sdk["usage_chunks"], 0,
                "{name}: a usage chunk leaked: {sdk}"
            );
            assert_eq!(sdk["usage"], Value::Null, "{name}: {sdk}");
            assert!(input > 0 && output > 0, "{name}: {row}");
        } else {
            if *name == "chat_stream_usage" {
                assert_eq!(sdk["usage_chunks"], 1, "{name}: {sdk}");
            }
            assert_eq!(input, u64_of(&sdk["usage"]["input"]), "{name}: {row} {sdk}");
            assert_eq!(
                output,
                u64_of(&sdk["usage"]["output"]),
                "{name}: {row} {sdk}"
            );
        }
        assert!(input > 0, "{name}: {row}");
        if *name != "embeddings" {
            // max_tokens is above the mock's default answer length.
            assert_eq!(output, u64::from(DEFAULT_OUTPUT_TOKENS), "{name}: {row}");
        }

        // Cost: the built-in price of the model that served, for those tokens.
        let model = row["response_model"]
            .as_str()
            .or(row["request_model"].as_str())
            .unwrap_or_else(|| panic!("{name}: no model: {row}"));
        let usage = TokenUsage {
            input,
            output,
            ..TokenUsage::default()
        };
        let expected = prices
            .cost(Some(provider), model, &usage)
            .unwrap_or_else(|| panic!("{name}: {model} is not in the price table"));
        let cost = row["cost_usd"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: unpriced: {row}"));
        assert!(cost > 0.0, "{name}: recorded as $0: {row}");
        assert!(
            (cost - expected).abs() <= expected * 1e-9,
            "{name}: cost {cost} but {model} at {input}/{output} tokens costs {expected}: {row}"
        );

        // What the SDK parsed beyond usage.
        match *name {
            "chat_tools" | "messages_tools" => {
                let calls = sdk["tool_calls"].as_array().unwrap();
                assert_eq!(calls.len(), 1, "{name}: {sdk}");
                assert_eq!(calls[0]["name"], "get_weather", "{name}: {sdk}");
                assert!(calls[0]["arguments"]["city"].is_string(), "{name}: {sdk}");
                let stop = if *name == "chat_tools" {
                    "tool_calls"
                } else {
                    "tool_use"
                };
                assert_eq!(sdk["finish_reason"], stop, "{name}: {sdk}");
            }
            "embeddings" => {
                assert_eq!(sdk["vectors"], 2, "{name}: {sdk}");
            }
            "chat_stream" | "chat_stream_usage" => {
                assert_eq!(sdk["ids"].as_array().unwrap().len(), 1, "{name}: {sdk}");
                assert_eq!(sdk["finish_reason"], "stop", "{name}: {sdk}");
            }
            "chat_json" => assert_eq!(sdk["finish_reason"], "stop", "{name}: {sdk}"),
            _ => assert_eq!(sdk["finish_reason"], "end_turn", "{name}: {sdk}"),
        }
    }
}
