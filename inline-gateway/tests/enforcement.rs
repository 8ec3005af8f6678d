//! Synchronous enforcement: admit before the provider, settle after;
//! refusals (429/403) with the rule's figures in each dialect's envelope;
//! kill-switch blocks; the key's model list and limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tollgate_gateway::{Block, KeyLimits, VirtualKey};
use tollgate_mock_provider::{Endpoint, MockConfig};
use tollgate_rules::CallStatus;
use tollgate_rules::engine::{CallIntent, Scope};

const BUDGET: &str = r#"
[[rules]]
type = "budget"
id = "project-tokens"
scope = ["project"]
metric = "tokens"
limit = LIMIT
window = "day"
action = "block"
"#;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn search() -> CallIntent {
    CallIntent {
        scope: Scope {
            project: Some("search".into()),
            ..Scope::default()
        },
        ..CallIntent::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_against_a_budget_for_ten_never_overrun_it() {
    // Slow enough that every call is admitted before the first one settles.
    let mock = mock_with(MockConfig {
        latency: Duration::from_millis(1500),
        ..MockConfig::default()
    })
    .await;
    let body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello there"}]
    });
    // What one call reserves: its input bound + max_tokens.
    let reserve = one_message_bound("hello there".len() as u64) + 50;
    let limit = reserve * 10 + reserve / 2;
    let gw = start(
        &openai_and_anthropic(&mock),
        &BUDGET.replace("LIMIT", &limit.to_string()),
    )
    .await;

    let calls = (0..50).map(|_| {
        let r = gw
            .request("/v1/chat/completions", Some(&gw.key))
            .json(&body);
        tokio::spawn(read(r))
    });
    let replies: Vec<Reply> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok.len() + refused.len(), 50);
    assert_eq!(ok.len(), 10, "exactly what the budget holds at worst case");
    for r in &refused {
        assert!(r.header("x-request-id").is_some());
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry > 0);
        let e = &r.json()["error"];
        assert_eq!(e["type"], "budget_exceeded");
        assert_eq!(e["code"], "budget_exceeded");
        assert_eq!(e["rule_id"], "project-tokens");
        assert_eq!(e["limit"], limit as f64);
        assert!(e["used"].as_f64().unwrap() + reserve as f64 > limit as f64);
        assert_eq!(e["retry_after_s"], retry);
        assert!(e["message"].as_str().unwrap().contains("project-tokens"));
    }
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 10);

    let rows = gw.wait_rows(50).await;
    let served: u64 = rows
        .iter()
        .filter(|r| r.status == CallStatus::Ok)
        .map(|r| r.input_tokens + r.output_tokens)
        .sum();
    let (settled, reserved) = gw.engine.usage("project-tokens", &search(), now()).unwrap();
    assert_eq!(reserved, 0.0, "every reservation was settled or released");
    assert_eq!(settled, served as f64, "settled at the actual usage");
    assert!(settled <= limit as f64, "overrun: {settled} > {limit}");
    let blocked: Vec<_> = rows
        .iter()
        .filter(|r| r.decision.as_deref() == Some("block"))
        .collect();
    assert_eq!(blocked.len(), 40);
    for r in blocked {
        assert_eq!(r.http_status, Some(429));
        assert_eq!(r.rules_fired, ["project-tokens"]);
        assert_eq!(r.error_type.as_deref(), Some("budget_exceeded"));
        assert_eq!(r.input_tokens + r.output_tokens, 0);
    }
    assert_eq!(gw.gateway.stats().refused, 40);
}

#[tokio::test]
async fn refusals_on_messages_use_the_anthropic_envelope() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), &BUDGET.replace("LIMIT", "10")).await;
    let body = json!({
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}]
    });
    let reply = gw.post("/v1/messages", &body).await;
    assert_eq!(reply.status, 429);
    let v = reply.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "budget_exceeded");
    assert_eq!(v["error"]["rule_id"], "project-tokens");
    assert_eq!(v["error"]["limit"], 10.0);
    assert_eq!(v["error"]["used"], 0.0);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(mock.stats().requests_to(Endpoint::Messages), 0);
}

#[tokio::test]
async fn a_call_settles_its_actual_usage_and_thresholds_reach_the_row_sink() {
    let mock = mock().await;
    let gw = start(
        &openai_and_anthropic(&mock),
        &BUDGET.replace("LIMIT", "100000"),
    )
    .await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 5000,
                      "messages": [{"role": "user", "content": "hi"}]});
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200);
    let row = gw.one_row().await;
    let (settled, reserved) = gw.engine.usage("project-tokens", &search(), now()).unwrap();
    assert_eq!(reserved, 0.0);
    assert_eq!(settled, (row.input_tokens + row.output_tokens) as f64);

    // Most of the worst case is output the call then uses: the actual
    // usage is over 80 % of a limit that just fits the worst case.
    let mock = mock_with(MockConfig {
        default_output_tokens: 500,
        ..MockConfig::default()
    })
    .await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 500,
                      "messages": [{"role": "user", "content": "hi"}]});
    let worst = one_message_bound(2) + 500;
    let gw = start(
        &openai_and_anthropic(&mock),
        &BUDGET.replace("LIMIT", &(worst + 2).to_string()),
    )
    .await;
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
    let submitted = gw.rows.submitted();
    let (row, violations) = &submitted[0];
    assert!(
        !violations.is_empty(),
        "crossing 80 % of the budget is reported"
    );
    assert_eq!(row.rules_fired, ["project-tokens"]);
}

#[tokio::test]
async fn the_keys_model_list_and_model_rules_refuse_with_403() {
    let mock = mock().await;
    let rules = r#"
[[rules]]
type = "model_access"
id = "no-big-models"
deny = ["openai/gpt-4o"]
"#;
    let gw = start(&openai_and_anthropic(&mock), rules).await;
    let body = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}]});
    let denied = gw.post("/v1/chat/completions", &body("gpt-4o")).await;
    assert_eq!(denied.status, 403);
    assert!(denied.header("retry-after").is_none());
    assert_eq!(denied.json()["error"]["type"], "model_not_allowed");
    assert_eq!(denied.json()["error"]["rule_id"], "no-big-models");

    let mut key = VirtualKey::new("key_mini", "tg-mini-only");
    key.project = Some("search".into());
    key.allowed_models = vec!["gpt-4o-mini".into()];
    gw.keys.insert(key);
    let r = read(
        gw.request("/v1/chat/completions", Some("tg-mini-only"))
            .json(&body("claude-3-5-haiku-20241022")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "model_not_allowed");
    assert_eq!(r.json()["error"]["rule_id"], "key.allowed_models");
    let r = read(
        gw.request("/v1/chat/completions", Some("tg-mini-only"))
            .json(&body("gpt-4o-mini")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 1);
    let rows = gw.wait_rows(3).await;
    assert_eq!(rows[0].decision.as_deref(), Some("block"));
    assert_eq!(rows[0].rules_fired, ["no-big-models"]);
    assert_eq!(rows[1].rules_fired, ["key.allowed_models"]);
    assert_eq!(
        rows[1].labels.get("key").map(String::as_str),
        Some("key_mini")
    );
    assert_eq!(rows[2].decision.as_deref(), Some("allow"));
}

#[tokio::test]
async fn kill_switch_blocks_refuse_before_any_provider_is_called() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    gw.blocks.block(
        &[("project", "search"), ("user", "bob")],
        Block {
            rule_id: "daily-cost".into(),
            scope: "project=search,user=bob".into(),
            reason: "limit_exceeded".into(),
            until_unix_nanos: now() + 120 * 1_000_000_000,
            limit: 5.0,
            used: 5.2,
            metric: "cost_usd".into(),
            dims: Vec::new(),
        },
    );
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let alice = gw
        .post_with(
            "/v1/chat/completions",
            &body,
            &[("x-tollgate-user", "alice")],
        )
        .await;
    assert_eq!(
        alice.status, 200,
        "another user of the project is not blocked"
    );
    let bob = gw
        .post_with("/v1/chat/completions", &body, &[("x-tollgate-user", "bob")])
        .await;
    assert_eq!(bob.status, 429);
    let retry: u64 = bob.header("retry-after").unwrap().parse().unwrap();
    assert!((119..=120).contains(&retry), "{retry}");
    let e = &bob.json()["error"];
    assert_eq!(e["type"], "blocked");
    assert_eq!(e["rule_id"], "daily-cost");
    assert_eq!(e["limit"], 5.0);
    assert_eq!(e["used"], 5.2);
    let msg = gw
        .post_with(
            "/v1/messages",
            &json!({"model": "claude-3-5-haiku-20241022", "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}]}),
            &[("x-tollgate-user", "bob")],
        )
        .await;
    assert_eq!(msg.status, 429);
    assert_eq!(msg.json()["error"]["type"], "blocked");
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 1);
    assert_eq!(mock.stats().requests_to(Endpoint::Messages), 0);
}

#[tokio::test]
async fn a_key_bound_to_a_user_cannot_be_moved_by_the_header() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let mut key = VirtualKey::new("key_carol", "tg-carol");
    key.user = Some("carol".into());
    gw.keys.insert(key);
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = read(
        gw.request("/v1/chat/completions", Some("tg-carol"))
            .header("x-tollgate-user", "someone-else")
            .json(&body),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(gw.one_row().await.user.as_deref(), Some("carol"));
}

#[tokio::test]
async fn key_limits_are_enforced_per_key() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let mut key = VirtualKey::new("key_small", "tg-small");
    key.limits = KeyLimits {
        tokens_per_day: Some(200),
        ..KeyLimits::default()
    };
    gw.keys.insert(key);
    let body: Value = json!({"model": "gpt-4o-mini", "max_tokens": 160,
                             "messages": [{"role": "user", "content": "hi"}]});
    let worst = one_message_bound(2) + 160;
    assert!(worst <= 200 && worst + 21 > 200, "{worst}");
    let first = read(
        gw.request("/v1/chat/completions", Some("tg-small"))
            .json(&body),
    )
    .await;
    assert_eq!(first.status, 200);
    // 200 - (first call's actual usage) < a second call's worst case.
    let second = read(
        gw.request("/v1/chat/completions", Some("tg-small"))
            .json(&body),
    )
    .await;
    assert_eq!(second.status, 429);
    assert_eq!(second.json()["error"]["rule_id"], "key.tokens_per_day");
    assert_eq!(second.json()["error"]["limit"], 200.0);
    // Another key is not limited by it.
    assert_eq!(gw.post("/v1/chat/completions", &body).await.status, 200);
}

#[tokio::test]
async fn region_rules_skip_links_outside_the_approved_regions() {
    let mock = mock().await;
    let base = format!("{}/v1", mock.base_url());
    let cfg = format!(
        "{}{}[[gateway.routes]]\nname = \"r\"\ntargets = [{{ provider = \"us\", model = \"gpt-4o-mini\" }}, {{ provider = \"eu\", model = \"gpt-4o\" }}]\n",
        provider("us", "openai", &base, "region = \"us-east\""),
        provider("eu", "openai", &base, "region = \"eu-west\""),
    );
    let rules = r#"
[[rules]]
type = "region"
id = "eu-only"
allowed = ["eu-*"]
"#;
    let gw = start(&cfg, rules).await;
    let body = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/chat/completions", &body("r")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(mock.stats().last_body["model"], "gpt-4o");
    let r = gw
        .post("/v1/chat/completions", &body("us/gpt-4o-mini"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["type"], "region_not_allowed");
    let rows = gw.wait_rows(2).await;
    assert_eq!(rows[0].upstream.as_deref(), Some("eu-west"));
    assert_eq!(rows[0].attempt, 1);
    assert_eq!(rows[1].upstream.as_deref(), Some("us-east"));
    assert_eq!(rows[1].rules_fired, ["eu-only"]);
}

#[tokio::test]
async fn a_caller_leaving_before_the_answer_still_leaves_a_settled_row() {
    let mock = mock_with(MockConfig {
        latency: Duration::from_millis(600),
        ..MockConfig::default()
    })
    .await;
    let gw = start(
        &openai_and_anthropic(&mock),
        &BUDGET.replace("LIMIT", "100000"),
    )
    .await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "hello there"}]});
    let sent = gw
        .request("/v1/chat/completions", Some(&gw.key))
        .timeout(Duration::from_millis(150))
        .json(&body)
        .send()
        .await;
    assert!(sent.is_err(), "the caller gave up");
    let row = gw.one_row().await;
    let (settled, reserved) = gw.engine.usage("project-tokens", &search(), now()).unwrap();
    assert_eq!(reserved, 0.0, "nothing stays reserved");
    assert_eq!(settled, (row.input_tokens + row.output_tokens) as f64);
    // hyper drops the handler when the connection closes: the row is
    // settled on the estimated input, not lost.
    assert_eq!(row.error_type.as_deref(), Some("client_disconnected"));
    assert_eq!(
        row.labels.get("usage_estimated").map(String::as_str),
        Some("true")
    );
    assert!(row.input_tokens > 0);
    assert_eq!(row.output_tokens, 0);
}

/// The input bound of a one-message chat request whose content is
/// `content_bytes` long: 16 per request, 4 per message, and the bytes of
/// "role", "user", "content" and the content.
fn one_message_bound(content_bytes: u64) -> u64 {
    16 + 4 + 4 + 4 + 7 + content_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_chinese_prompts_never_overrun_a_token_budget() {
    // The mock counts a token a CJK character, as real tokenizers about do;
    // every call is admitted before the first one settles.
    let mock = mock_with(MockConfig {
        latency: Duration::from_millis(1500),
        ..MockConfig::default()
    })
    .await;
    let gateway = provider(
        "openai",
        "openai",
        &format!("{}/v1", mock.base_url()),
        "headers = { \"x-mock-wide-char-tokens\" = \"1\" }",
    );
    let limit = 3000u64;
    let gw = start(&gateway, &BUDGET.replace("LIMIT", &limit.to_string())).await;
    let prompt: String = "请用中文详细解释预算控制的原理"
        .chars()
        .cycle()
        .take(200)
        .collect();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 20,
                      "messages": [{"role": "user", "content": prompt}]});
    let billed_per_call = 200 + 20;
    let reserve = one_message_bound(prompt.len() as u64) + 20;

    let calls = (0..40).map(|_| {
        let r = gw
            .request("/v1/chat/completions", Some(&gw.key))
            .json(&body);
        tokio::spawn(read(r))
    });
    let replies: Vec<Reply> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ok = replies.iter().filter(|r| r.status == 200).count() as u64;
    assert_eq!(ok, limit / reserve, "what the budget holds at the bound");
    assert_eq!(
        replies.iter().filter(|r| r.status == 429).count() as u64,
        40 - ok
    );
    let billed = mock.stats().billed_tokens;
    assert_eq!(billed, ok * billed_per_call);
    assert!(billed <= limit, "the provider billed {billed} > {limit}");
    let rows = gw.wait_rows(40).await;
    let (settled, reserved) = gw.engine.usage("project-tokens", &search(), now()).unwrap();
    assert_eq!(reserved, 0.0);
    assert_eq!(settled, billed as f64, "settled at the provider's figures");
    assert_eq!(
        rows.iter().filter(|r| r.status == CallStatus::Ok).count() as u64,
        ok
    );
    // The same calls at four bytes a token, the estimate this replaced,
    // would have let the provider bill past the limit.
    let body_len = serde_json::to_vec(&body).unwrap().len() as u64;
    let guessed = body_len.div_ceil(4) + 20;
    assert!((limit / guessed) * billed_per_call > limit);
}

#[tokio::test]
async fn n_choices_reserve_the_cap_n_times() {
    let mock = mock().await;
    let one = one_message_bound(2) + 10;
    let limit = one + 15;
    let gw = start(
        &openai_and_anthropic(&mock),
        &BUDGET.replace("LIMIT", &limit.to_string()),
    )
    .await;
    let three = json!({"model": "gpt-4o-mini", "max_tokens": 10, "n": 3,
                       "messages": [{"role": "user", "content": "hi"}]});
    let reply = gw.post("/v1/chat/completions", &three).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.json()["error"]["rule_id"], "project-tokens");
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 0);
    let mut single = three.clone();
    single["n"] = json!(1);
    let reply = gw.post("/v1/chat/completions", &single).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 1);
}

#[tokio::test]
async fn a_call_without_a_cap_gets_the_default_in_the_providers_field() {
    let mock = mock().await;
    let cfg = format!(
        "default_max_tokens = 77\n{}{}",
        openai_and_anthropic(&mock),
        provider(
            "local",
            "openai_compatible",
            &format!("{}/v1", mock.base_url()),
            "models = [\"llama-*\"]"
        )
    );
    let gw = start(&cfg, "").await;
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            "/v1/chat/completions",
            "gpt-4o-mini",
            "max_completion_tokens",
        ),
        ("/v1/chat/completions", "llama-3", "max_tokens"),
        (
            "/v1/chat/completions",
            "claude-3-5-haiku-20241022",
            "max_tokens",
        ),
        ("/v1/messages", "claude-3-5-haiku-20241022", "max_tokens"),
        ("/v1/messages", "gpt-4o-mini", "max_completion_tokens"),
        ("/v1/messages", "llama-3", "max_tokens"),
    ];
    for (path, model, field) in cases {
        let reply = gw
            .post(path, &json!({"model": model, "messages": user}))
            .await;
        assert_eq!(reply.status, 200, "{path} {model}: {}", reply.text());
        let sent = mock.stats().last_body;
        assert_eq!(sent[field], 77, "{path} {model}: {sent}");
        let other = if field == "max_tokens" {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        assert!(sent.get(other).is_none(), "{path} {model}: {sent}");
    }
    // The caller's own cap goes as it was sent.
    let reply = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": user}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let sent = mock.stats().last_body;
    assert_eq!(sent["max_tokens"], 5);
    assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
}

const COST_BUDGET: &str = r#"
[[rules]]
type = "budget"
id = "monthly-cost"
scope = ["project"]
metric = "cost_usd"
limit = 5.0
window = "month"
action = "block"
"#;

fn local(mock: &tollgate_mock_provider::MockProvider, top: &str) -> String {
    format!(
        "{top}\n{}",
        provider(
            "local",
            "openai_compatible",
            &format!("{}/v1", mock.base_url()),
            "models = [\"my-llm\"]"
        )
    )
}

#[tokio::test]
async fn an_unpriced_model_under_a_cost_budget_is_refused() {
    let mock = mock().await;
    let body = json!({"model": "my-llm", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]});
    let gw = start(&local(&mock, ""), COST_BUDGET).await;
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let e = &reply.json()["error"];
    assert_eq!(e["type"], "model_unpriced");
    assert_eq!(e["code"], "model_unpriced");
    assert_eq!(e["rule_id"], "monthly-cost");
    assert_eq!(e["metric"], "cost_usd");
    assert!(e["message"].as_str().unwrap().contains("`my-llm`"), "{e}");
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 0);
    let row = gw.one_row().await;
    assert_eq!(row.decision.as_deref(), Some("block"));
    assert_eq!(row.rules_fired, ["monthly-cost"]);
    assert_eq!(row.error_type.as_deref(), Some("model_unpriced"));

    // No budget on cost: nothing to escape, the call goes through unpriced.
    let gw = start(&local(&mock, ""), &BUDGET.replace("LIMIT", "100000")).await;
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(gw.one_row().await.cost_usd, None);
}

#[tokio::test]
async fn a_configured_unpriced_price_reserves_and_settles_the_call() {
    let mock = mock().await;
    let gw = start(
        &local(&mock, "unpriced_cost_per_mtok = 1000.0"),
        COST_BUDGET,
    )
    .await;
    let body = json!({"model": "my-llm", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "hi"}]});
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let row = gw.one_row().await;
    let tokens = row.input_tokens + row.output_tokens;
    assert_eq!((row.input_tokens, row.output_tokens), (1, 10));
    assert_close(row.cost_usd.unwrap(), tokens as f64 * 1000.0 / 1e6);
    assert_eq!(
        row.labels.get("unpriced_price").map(String::as_str),
        Some("true")
    );
    let (settled, reserved) = gw.engine.usage("monthly-cost", &search(), now()).unwrap();
    assert_eq!(reserved, 0.0);
    assert_close(settled, row.cost_usd.unwrap());

    // Reserved at the same price: a worst case over the budget is refused.
    // (16 + 4 + 4 + 4 + 7 + 2) input + 5,000 output tokens at $1,000 a
    // million is more than $5.
    let mut big = body.clone();
    big["max_tokens"] = json!(5_000);
    let reply = gw.post("/v1/chat/completions", &big).await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.json()["error"]["rule_id"], "monthly-cost");
}

#[tokio::test]
async fn a_call_that_timed_out_after_it_was_sent_stays_counted() {
    let mock = mock().await;
    let gw = start(
        &provider(
            "openai",
            "openai",
            &format!("{}/v1", mock.base_url()),
            "timeout = \"300ms\"\nheaders = { \"x-mock-hang\" = \"1\" }",
        ),
        &BUDGET.replace("LIMIT", "100000"),
    )
    .await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "hello there"}]});
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    let row = gw.one_row().await;
    assert_eq!(row.error_type.as_deref(), Some("upstream_timeout"));
    assert_eq!(
        row.labels.get("usage_estimated").map(String::as_str),
        Some("true")
    );
    let worst = one_message_bound(11) + 50;
    assert_eq!(row.input_tokens + row.output_tokens, worst);
    let (settled, reserved) = gw.engine.usage("project-tokens", &search(), now()).unwrap();
    assert_eq!(
        (settled, reserved),
        (worst as f64, 0.0),
        "not released at 0"
    );
}
