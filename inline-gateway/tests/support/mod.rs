//! Shared by the gateway's integration tests: start mock providers and a
//! gateway in front of them (real sockets on loopback), send requests, read
//! SSE, and wait for the rows the gateway submits.

// Each test binary uses a subset of the helpers; a failed setup is a failed test.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_gateway::{
    Gateway, GatewayConfig, GatewayDeps, MemoryKeyStore, MemoryRows, StaticBlocks, VirtualKey,
    generate_key,
};
use tollgate_mock_provider::{MockConfig, MockProvider};
use tollgate_rules::CallRecord;
use tollgate_rules::engine::{Engine, compile, parse_rules};
use tollgate_rules::pricing::{PriceTable, TokenUsage};

pub const PROVIDER_KEY: &str = "sk-test-provider-key-0000";

pub async fn mock() -> MockProvider {
    MockProvider::start(MockConfig::default()).await.unwrap()
}

pub async fn mock_with(config: MockConfig) -> MockProvider {
    MockProvider::start(config).await.unwrap()
}

/// A `[[gateway.providers]]` table; `extra` is more TOML lines.
pub fn provider(name: &str, kind: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[[gateway.providers]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\napi_key_file = \"{{key_file}}\"\n{extra}\n"
    )
}

/// The usual pair: an OpenAI and an Anthropic provider on one mock.
pub fn openai_and_anthropic(mock: &MockProvider) -> String {
    format!(
        "{}{}",
        provider("openai", "openai", &format!("{}/v1", mock.base_url()), ""),
        provider("anthropic", "anthropic", &mock.base_url(), "")
    )
}

pub struct Gw {
    pub base: String,
    pub rows: Arc<MemoryRows>,
    pub keys: Arc<MemoryKeyStore>,
    pub blocks: Arc<StaticBlocks>,
    pub engine: Engine,
    pub prices: Arc<PriceTable>,
    /// A valid virtual key (org `acme`, project `search`).
    pub key: String,
    pub gateway: Gateway,
    pub client: reqwest::Client,
    _key_file: tempfile::NamedTempFile,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn engine(rules_toml: &str) -> Engine {
    let v: toml::Value = toml::from_str(rules_toml).unwrap();
    let tables = v
        .get("rules")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    Engine::new(compile(&parse_rules(tables).unwrap()).unwrap())
}

/// A gateway configured by `gateway_toml` (the `[gateway]` tables, where
/// `{key_file}` names a file holding [`PROVIDER_KEY`]) and `rules_toml`.
pub async fn start(gateway_toml: &str, rules_toml: &str) -> Gw {
    start_with(gateway_toml, rules_toml, PROVIDER_KEY, &generate_key()).await
}

pub async fn start_with(
    gateway_toml: &str,
    rules_toml: &str,
    provider_key: &str,
    virtual_key: &str,
) -> Gw {
    let mut key_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(key_file, "{provider_key}").unwrap();
    let text = format!("[gateway]\nenabled = true\n{gateway_toml}")
        .replace("{key_file}", &key_file.path().display().to_string());
    #[derive(serde::Deserialize)]
    struct File {
        gateway: GatewayConfig,
    }
    let config = toml::from_str::<File>(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .gateway;
    let rows = Arc::new(MemoryRows::new());
    let keys = Arc::new(MemoryKeyStore::new());
    let blocks = Arc::new(StaticBlocks::new());
    let engine = engine(rules_toml);
    let prices = Arc::new(PriceTable::builtin().unwrap());
    let mut vk = VirtualKey::new("key_test", virtual_key);
    vk.org = Some("acme".into());
    vk.project = Some("search".into());
    keys.insert(vk);
    let deps = GatewayDeps {
        engine: engine.clone(),
        prices: Arc::clone(&prices),
        rows: rows.clone(),
        keys: keys.clone(),
        blocks: blocks.clone(),
        rebuild: None,
        leases: None,
    };
    let gateway = Gateway::new(&config, deps).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = gateway.router();
    tokio::spawn(async move {
        let _ = tollgate_gateway::serve(listener, app, async move {
            let _ = stopped.await;
        })
        .await;
    });
    Gw {
        base: format!("http://{addr}"),
        rows,
        keys,
        blocks,
        engine,
        prices,
        key: virtual_key.to_owned(),
        gateway,
        client: reqwest::Client::new(),
        _key_file: key_file,
        stop: Some(stop),
    }
}

/// The reply to one request, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub broken: bool,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn events(&self) -> Vec<(Option<String>, String)> {
        parse_sse(&self.text())
    }

    /// The `data` of every event parsed as JSON, `[DONE]` excluded.
    pub fn data_json(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|(_, data)| data != "[DONE]")
            .map(|(_, data)| serde_json::from_str(&data).unwrap())
            .collect()
    }
}

pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(name) = line.strip_prefix("event:") {
                    event = Some(name.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                }
            }
            (event, data.join("\n"))
        })
        .collect()
}

impl Gw {
    pub fn request(&self, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self.client.post(format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        r
    }

    /// POSTs `body` with the default key as a bearer token.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_with(path, body, &[]).await
    }

    pub async fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut r = self.request(path, Some(&self.key)).json(body);
        for (n, v) in headers {
            r = r.header(*n, *v);
        }
        read(r).await
    }

    /// Waits until `n` rows were submitted (rows of streams arrive when the
    /// stream ends) and returns them.
    pub async fn wait_rows(&self, n: usize) -> Vec<CallRecord> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = self.rows.records();
            if rows.len() >= n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} rows, got {}: {rows:#?}",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The only row, once there is one.
    pub async fn one_row(&self) -> CallRecord {
        let rows = self.wait_rows(1).await;
        assert_eq!(rows.len(), 1, "{rows:#?}");
        rows.into_iter().next().unwrap()
    }

    pub fn cost(&self, provider: &str, model: &str, r: &CallRecord) -> f64 {
        self.prices
            .cost(
                Some(provider),
                model,
                &TokenUsage {
                    input: r.input_tokens,
                    output: r.output_tokens,
                    cache_read: r.cache_read_tokens,
                    cache_write: r.cache_write_tokens,
                },
            )
            .unwrap()
    }
}

pub async fn read(r: reqwest::RequestBuilder) -> Reply {
    let mut response = r.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    let mut broken = false;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    Reply {
        status,
        headers,
        body,
        broken,
    }
}

pub fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}
