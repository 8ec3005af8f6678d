//! Helpers shared by the integration tests: a reqwest client that talks to a
//! started mock, and a small SSE parser to check event order and payloads.

// Each test binary uses a different subset of the helpers, and they are
// called only from tests, where a failed request is a failed test.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::panic)]

use reqwest::header::HeaderMap;
use serde_json::Value;
use tollgate_mock_provider::{MockConfig, MockProvider};

pub const KEY: &str = "sk-test-not-a-secret";

pub async fn start() -> MockProvider {
    MockProvider::start(MockConfig::default()).await.unwrap()
}

/// The reply to one request, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The connection broke before the body ended.
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

    /// `(event name, data)` pairs in order.
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

pub enum Auth {
    OpenAi,
    Anthropic,
    None,
}

pub async fn send(
    method: reqwest::Method,
    url: &str,
    auth: Auth,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    request = match auth {
        Auth::OpenAi => request.header("authorization", format!("Bearer {KEY}")),
        Auth::Anthropic => request
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01"),
        Auth::None => request,
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let mut response = request.send().await.unwrap();
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

pub async fn post(url: &str, auth: Auth, headers: &[(&str, &str)], body: &Value) -> Reply {
    send(reqwest::Method::POST, url, auth, headers, Some(body)).await
}
