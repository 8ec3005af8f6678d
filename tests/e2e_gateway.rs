//! End to end with `gateway.enabled = true`: the real binary starts the
//! inline gateway beside the collector. Virtual keys come from the admin
//! API (shown once, stored hashed, surviving a restart, revocable); calls
//! through the gateway are admitted and settled on the collector's rules
//! engine, stored as rows with mode `gateway` and the provider's exact
//! usage, and refused with 429 once their project's budget is spent. The
//! provider is the shared mock (the only mocked component).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::Collector;
use tollgate_mock_provider::{MockConfig, MockProvider};

const ADMIN: &str = "admin-token-for-the-gateway-test";
const PROVIDER_KEY: &str = "sk-canary-provider-key-7f3a9c";

fn config(mock: &MockProvider, budget: u64) -> String {
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
base_url = "{}/v1"
api_key_env = "TEST_GATEWAY_OPENAI_KEY"

[[rules]]
id = "gw-daily"
type = "budget"
metric = "tokens"
limit = {budget}
scope = ["project"]
match = {{ project = "gw" }}
window = "day"
action = "block"
"#,
        mock.base_url()
    )
}

async fn admin(
    c: &Collector,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", c.api_url()))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn chat(gateway: &str, key: &str, stream: bool) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({
            "model": "gpt-4o-mini",
            "max_tokens": 40,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello to the gateway test."}],
        }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    if stream && status == 200 {
        return (status, Value::String(text));
    }
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_calls_use_virtual_keys_and_the_collectors_budgets() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let envs = [
        ("TEST_GATEWAY_OPENAI_KEY", PROVIDER_KEY),
        ("RUST_LOG", "debug"),
    ];
    let mut c = Collector::start_full(&config(&mock, 1500), &[], &envs);
    let gateway = format!("http://{}", c.gateway.expect("the gateway is listening"));

    // A key, shown once; the listing shows neither the secret nor its hash.
    let (status, created) = admin(
        &c,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "search bot", "org": "acme", "project": "gw"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tg-"));
    let id = created["info"]["id"].as_str().unwrap().to_owned();
    let (_, listed) = admin(&c, reqwest::Method::GET, "/admin/v1/keys", None).await;
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    assert_eq!(listed["keys"][0]["roles"], json!(["gateway"]));
    assert_eq!(listed["keys"][0]["project"], "gw");
    assert!(!listed.to_string().contains(&key));
    assert!(
        !listed
            .to_string()
            .contains(&tollgate_gateway::hash_key(&key))
    );

    // A bad key: 401, nothing forwarded.
    let (status, _) = chat(&gateway, "tg-not-a-key", false).await;
    assert_eq!(status, 401);
    assert_eq!(mock.stats().total_requests, 0);
    // A key without the gateway role (it may only send spans): 401 too.
    let (status, ingest) = admin(
        &c,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"roles": ["ingest"], "org": "acme", "project": "gw"})),
    )
    .await;
    assert_eq!(status, 201, "{ingest}");
    let (status, refused) = chat(&gateway, ingest["key"].as_str().unwrap(), false).await;
    assert_eq!(status, 401, "{refused}");
    assert!(refused.to_string().contains("gateway` role"), "{refused}");
    assert_eq!(mock.stats().total_requests, 0);

    // A call: the provider's usage, exactly, in a gateway row of the key's project.
    let (status, answer) = chat(&gateway, &key, false).await;
    assert_eq!(status, 200, "{answer}");
    let usage = &answer["usage"];
    let rows = c.wait_gateway_rows(1).await;
    let row = &rows[0];
    assert_eq!(row["project"], "gw");
    assert_eq!(row["org"], "acme");
    assert_eq!(row["input_tokens"], usage["prompt_tokens"]);
    assert_eq!(row["output_tokens"], usage["completion_tokens"]);
    assert!(row["cost_usd"].as_f64().unwrap() > 0.0, "{row}");

    // A stream: usage counted too (the gateway asked the provider for it).
    let (status, body) = chat(&gateway, &key, true).await;
    assert_eq!(status, 200);
    assert!(body.as_str().unwrap().contains("[DONE]"));
    let rows = c.wait_gateway_rows(2).await;
    assert!(
        rows.iter()
            .all(|r| r["output_tokens"].as_u64().unwrap() > 0),
        "{rows:?}"
    );

    // The key survives a restart (stored hashed), the budget's usage too:
    // calls go on until the 1,500-token budget refuses one with 429. Each
    // reserves 105 tokens (its input bound and max_tokens) and uses 28, so
    // the budget's 80 % alert is crossed before the refusal.
    c.restart();
    let gateway = format!("http://{}", c.gateway.expect("the gateway is listening"));
    let mut refused = None;
    for _ in 0..80 {
        let (status, body) = chat(&gateway, &key, false).await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the budget never refused a call");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(body["error"]["rule_id"], "gw-daily", "{body}");
    let (_, events) = c.get("/v1/events?limit=100").await;
    assert!(events.to_string().contains("gw-daily"), "{events}");

    // Revoked: refused at once.
    let (status, _) = admin(
        &c,
        reqwest::Method::DELETE,
        &format!("/admin/v1/keys/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = chat(&gateway, &key, false).await;
    assert_eq!(status, 401);

    // Neither the provider key nor the virtual key is in any log line or row.
    let calls = c.calls(1000).await;
    let stderr = c.stderr();
    for secret in [PROVIDER_KEY, key.as_str()] {
        assert!(!stderr.contains(secret), "a secret in the logs");
        assert!(!format!("{calls:?}").contains(secret), "a secret in a row");
    }
}

/// `tollgate gateway enable|disable|status` flips the flag in the file,
/// keeps its comments, refuses a flip that would make the file invalid,
/// and `serve` then starts (or not) the gateway accordingly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_flips_the_gateway_flag_and_serve_follows_it() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    let config = format!(
        "# our collector\n[gateway]\n# flipped by the CLI\nenabled = false\nlisten = \"127.0.0.1:0\"\n\n\
         [[gateway.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         api_key_env = \"TEST_GATEWAY_OPENAI_KEY\"\n",
        mock.base_url()
    );
    std::fs::write(&path, &config).unwrap();
    let file = path.to_str().unwrap();

    let (ok, out, _) = support::cli(&["gateway", "status", "--config", file]);
    assert!(ok && out.contains("disabled"), "{out}");
    // Without the provider key in the environment the result would be invalid.
    let (ok, _, err) = support::cli(&["gateway", "enable", "--config", file]);
    assert!(!ok && err.contains("TEST_GATEWAY_OPENAI_KEY"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        config,
        "file unchanged"
    );

    let out = std::process::Command::new(support::bin())
        .args(["gateway", "enable", "--config", file])
        .env("TEST_GATEWAY_OPENAI_KEY", PROVIDER_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let flipped = std::fs::read_to_string(&path).unwrap();
    assert_eq!(flipped, config.replace("enabled = false", "enabled = true"));
    assert!(flipped.contains("# flipped by the CLI"));

    // The flipped file is what serve runs: the gateway is up.
    let c = Collector::start_full(&flipped, &[], &[("TEST_GATEWAY_OPENAI_KEY", PROVIDER_KEY)]);
    assert!(c.gateway.is_some(), "serve did not start the gateway");
    drop(c);

    let (ok, out, _) = support::cli(&["gateway", "disable", "--config", file]);
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), config);
    let c = Collector::start_full(&config, &[], &[]);
    assert!(c.gateway.is_none(), "the gateway runs although disabled");
}

const CANARY_PROVIDER_KEY: &str = "sk-CANARY-binary-provider-4d2e8f";
const CANARY_WRONG_KEY: &str = "tg-CANARYwrongBINARYkey0123456789abcdefghijklm";

/// A canary provider key and the virtual key, pushed through every path of
/// the real binary (success, streams, fallback, upstream 500 / timeout /
/// the provider rejecting the gateway's key, unknown model, bad request,
/// wrong key, a budget refusal) with trace logging on, appear in no log
/// line, row, rule event, metrics line, key listing, error body, response
/// header, nor anywhere in the store's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_keys_leak_nowhere_in_the_binary() {
    let good = MockProvider::start(MockConfig::default()).await.unwrap();
    let failing = MockProvider::start(MockConfig {
        error_rate: 1.0,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let provider = |name: &str, base: &str, extra: &str| {
        format!(
            "[[gateway.providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{base}/v1\"\n\
             api_key_env = \"BINARY_TEST_OPENAI_KEY\"\n{extra}\n"
        )
    };
    let config = format!(
        "[admin]\ntoken = \"{ADMIN}\"\n\n[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n{}{}{}{}\
         [[gateway.routes]]\nname = \"fallback\"\ntargets = [{{ provider = \"failing\", model = \"gpt-4o-mini\" }}, {{ provider = \"openai\", model = \"gpt-4o-mini\" }}]\n\n\
         [[rules]]\nid = \"canary-budget\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = 600\n\
         scope = [\"project\"]\nwindow = \"day\"\naction = \"block\"\n",
        provider("openai", &good.base_url(), ""),
        provider("failing", &failing.base_url(), ""),
        provider(
            "hanging",
            &good.base_url(),
            "timeout = \"200ms\"\nheaders = { \"x-mock-hang\" = \"1\" }"
        ),
        provider(
            "rejecting",
            &good.base_url(),
            "headers = { \"x-mock-status\" = \"401\" }"
        ),
    );
    let envs = [
        ("BINARY_TEST_OPENAI_KEY", CANARY_PROVIDER_KEY),
        ("RUST_LOG", "trace"),
    ];
    let c = Collector::start_full(&config, &[], &envs);
    let gateway = format!("http://{}", c.gateway.expect("the gateway is listening"));
    let (status, created) = admin(
        &c,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "canary", "project": "canary"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();

    let client = reqwest::Client::new();
    let chat = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream, "max_tokens": 5,
               "messages": [{"role": "user", "content": "hello"}]})
    };
    let mut replies: Vec<(u16, String, String)> = Vec::new();
    let mut send = async |path: &str, auth: &str, body: Value| {
        let r = client
            .post(format!("{gateway}{path}"))
            .bearer_auth(auth)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = format!("{:?}", r.headers());
        replies.push((status, headers, r.text().await.unwrap()));
        status
    };
    let mut statuses = Vec::new();
    for (path, body) in [
        ("/v1/chat/completions", chat("gpt-4o-mini", false)),
        ("/v1/chat/completions", chat("gpt-4o-mini", true)),
        ("/v1/chat/completions", chat("fallback", false)),
        ("/v1/chat/completions", chat("failing/gpt-4o-mini", false)),
        ("/v1/chat/completions", chat("hanging/gpt-4o-mini", false)),
        ("/v1/chat/completions", chat("rejecting/gpt-4o-mini", true)),
        ("/v1/chat/completions", chat("no-such-model", false)),
        ("/v1/chat/completions", json!({"messages": []})),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x"}),
        ),
    ] {
        statuses.push(send(path, &key, body).await);
    }
    assert_eq!(statuses, [200, 200, 200, 500, 504, 502, 404, 400, 200]);
    assert_eq!(
        send(
            "/v1/chat/completions",
            CANARY_WRONG_KEY,
            chat("gpt-4o-mini", false)
        )
        .await,
        401
    );
    // Spend the project's budget until a call is refused (each call
    // reserves 45 tokens and uses 7: its 80 % alert fires first).
    let mut refused = false;
    for _ in 0..120 {
        if send("/v1/chat/completions", &key, chat("gpt-4o-mini", false)).await == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the budget never refused a call");
    // The provider did receive the canary (so it was in play).
    assert_eq!(
        good.stats().last_header("authorization").map(str::to_owned),
        Some(format!("Bearer {CANARY_PROVIDER_KEY}"))
    );

    let rows = c.wait_gateway_rows(10).await;
    let stderr = c.stderr();
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "trace logging was on"
    );
    let mut haystacks: Vec<(String, String)> = vec![
        ("collector logs".to_owned(), stderr),
        ("rows".to_owned(), serde_json::to_string(&rows).unwrap()),
        ("metrics".to_owned(), c.metrics().await),
    ];
    let (_, events) = c.get("/v1/events?limit=1000").await;
    assert!(events.to_string().contains("canary-budget"), "{events}");
    haystacks.push(("rule events".to_owned(), events.to_string()));
    let (_, keys) = admin(&c, reqwest::Method::GET, "/admin/v1/keys", None).await;
    haystacks.push(("key listing".to_owned(), keys.to_string()));
    for (i, (status, headers, body)) in replies.iter().enumerate() {
        haystacks.push((format!("reply {i} ({status}) headers"), headers.clone()));
        haystacks.push((format!("reply {i} ({status}) body"), body.clone()));
    }
    // Every file of the data directory (database, its WAL and shared
    // memory, the write-ahead log's segments), as bytes.
    let mut dirs = vec![c.db_path().parent().unwrap().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            haystacks.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    assert!(
        haystacks.iter().any(|(what, _)| what.contains("seg-")),
        "the write-ahead log's segments were read"
    );
    for (what, text) in &haystacks {
        for canary in [
            CANARY_PROVIDER_KEY,
            key.as_str(),
            CANARY_WRONG_KEY,
            "CANARY",
        ] {
            assert!(
                !text.contains(canary),
                "{canary} leaked into {what}: {}",
                text.chars().take(2000).collect::<String>()
            );
        }
    }
    // The gateway's own counters are exported.
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_gateway_auth_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_gateway_fallbacks_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_gateway_refused_total 1"),
        "{metrics}"
    );
}

/// The issue this bound was made for: 40 concurrent calls with Chinese
/// prompts (the mock bills a token a CJK character, as real tokenizers
/// about do) against a 3,000-token budget. At four bytes a token the
/// gateway reserved too little and the provider billed 3,556 tokens; with
/// the input bound it bills at most the limit, and the store agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chinese_prompts_never_overrun_a_token_budget() {
    let mock = MockProvider::start(MockConfig {
        latency: std::time::Duration::from_millis(1500),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let limit = 3000;
    let cfg = config(&mock, limit).replace(
        "api_key_env = \"TEST_GATEWAY_OPENAI_KEY\"\n",
        "api_key_env = \"TEST_GATEWAY_OPENAI_KEY\"\nheaders = { \"x-mock-wide-char-tokens\" = \"1\" }\n",
    );
    let c = Collector::start_full(&cfg, &[], &[("TEST_GATEWAY_OPENAI_KEY", PROVIDER_KEY)]);
    let gateway = format!("http://{}", c.gateway.expect("the gateway is listening"));
    let (status, created) = admin(
        &c,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "cjk", "org": "acme", "project": "gw"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let prompt: String = "请总结这份季度报告的要点并给出建议"
        .chars()
        .cycle()
        .take(150)
        .collect();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 20,
                      "messages": [{"role": "user", "content": prompt}]});
    let client = reqwest::Client::new();
    let calls = (0..40).map(|_| {
        let r = client
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send();
        async move { r.await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count() as u64,
        40 - ok,
        "{statuses:?}"
    );
    // Reserved per call: 16 + 4 + "role" "user" "content" + 450 bytes of
    // prompt, and 20 of output.
    let reserve = 16 + 4 + 4 + 4 + 7 + 450 + 20;
    assert_eq!(ok, limit / reserve);
    let billed = mock.stats().billed_tokens;
    assert_eq!(billed, ok * (150 + 20));
    assert!(billed <= limit, "the provider billed {billed} > {limit}");
    let rows = c.wait_gateway_rows(40).await;
    let stored: u64 = rows
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(stored, billed, "the rows carry what the provider billed");
}
