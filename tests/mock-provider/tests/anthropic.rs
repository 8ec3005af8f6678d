//! The Anthropic dialect against a running mock: the message shape, the
//! streaming event sequence, cache accounting (input excludes cache),
//! tool use, token counting, model listing and error envelopes.

mod support;

use serde_json::{Value, json};
use support::{Auth, post, send, start};
use tollgate_mock_provider::{Endpoint, output_text};

fn body() -> Value {
    json!({
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 100,
        "system": "Be kind.",                                   // 8 chars
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there!"}]}] // 12
    })
}

#[tokio::test]
async fn message_has_the_exact_anthropic_shape() {
    let mock = start().await;
    let reply = post(
        &format!("{}/v1/messages", mock.base_url()),
        Auth::Anthropic,
        &[
            ("x-mock-cache-read-tokens", "300"),
            ("x-mock-cache-write-tokens", "40"),
        ],
        &body(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("request-id")
            .is_some_and(|id| id.starts_with("req_"))
    );
    let message = reply.json();
    let id = message["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msg_"), "{id}");
    // ceil(20 / 4) = 5; cache tokens are NOT part of input_tokens.
    assert_eq!(
        message,
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": output_text(20)}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 5,
                "cache_creation_input_tokens": 40,
                "cache_read_input_tokens": 300,
                "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 0},
                "output_tokens": 20,
                "service_tier": "standard"
            }
        })
    );
    assert_eq!(mock.stats().requests_to(Endpoint::Messages), 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn max_tokens_limits_output_and_sets_stop_reason() {
    let mock = start().await;
    let mut request = body();
    request["max_tokens"] = json!(4);
    let message = post(
        &format!("{}/v1/messages", mock.base_url()),
        Auth::Anthropic,
        &[],
        &request,
    )
    .await
    .json();
    assert_eq!(message["content"][0]["text"], "w0 w1 w2 w3");
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(message["usage"]["output_tokens"], 4);
    mock.shutdown().await;
}

#[tokio::test]
async fn stream_follows_the_real_event_sequence() {
    let mock = start().await;
    let mut request = body();
    request["stream"] = json!(true);
    let reply = post(
        &format!("{}/v1/messages", mock.base_url()),
        Auth::Anthropic,
        &[
            ("x-mock-output-tokens", "3"),
            ("x-mock-cache-read-tokens", "10"),
        ],
        &request,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data = reply.data_json();
    for ((name, _), payload) in events.iter().zip(&data) {
        assert_eq!(
            payload["type"].as_str(),
            name.as_deref(),
            "type matches event name"
        );
    }
    let start = &data[0]["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 10);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let texts: Vec<&str> = data[3..6]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(texts.concat(), "w0 w1 w2");
    assert_eq!(
        data[7],
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": 3}})
    );
    mock.shutdown().await;
}

fn tool_request() -> Value {
    let mut request = body();
    request["tools"] = json!([{
        "name": "lookup",
        "description": "Find a thing",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}}
    }]);
    request
}

#[tokio::test]
async fn tools_are_answered_with_tool_use() {
    let mock = start().await;
    let url = format!("{}/v1/messages", mock.base_url());
    let message = post(&url, Auth::Anthropic, &[], &tool_request())
        .await
        .json();
    assert_eq!(message["stop_reason"], "tool_use");
    let block = &message["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "lookup");
    assert_eq!(block["input"], json!({"limit": 1, "query": "value"}));

    let mut streamed = tool_request();
    streamed["stream"] = json!(true);
    let reply = post(&url, Auth::Anthropic, &[], &streamed).await;
    let data = reply.data_json();
    assert_eq!(data[1]["content_block"]["type"], "tool_use");
    assert_eq!(data[1]["content_block"]["input"], json!({}));
    let partial: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        block["input"]
    );
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    mock.shutdown().await;
}

#[tokio::test]
async fn errors_use_the_anthropic_envelope() {
    let mock = start().await;
    let url = format!("{}/v1/messages", mock.base_url());

    let reply = post(&url, Auth::None, &[], &body()).await;
    assert_eq!(reply.status, 401);
    let error = reply.json();
    assert_eq!(error["type"], "error");
    assert_eq!(
        error["error"],
        json!({"type": "authentication_error", "message": "x-api-key header is required"})
    );

    for (status, kind) in [
        ("429", "rate_limit_error"),
        ("500", "api_error"),
        ("529", "overloaded_error"),
        ("503", "overloaded_error"),
        ("400", "invalid_request_error"),
    ] {
        let reply = post(&url, Auth::Anthropic, &[("x-mock-status", status)], &body()).await;
        assert_eq!(reply.status.to_string(), status);
        let error = reply.json();
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], kind, "status {status}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(error["request_id"].as_str(), reply.header("request-id"));
        if status == "429" {
            assert_eq!(reply.header("retry-after"), Some("1"));
        }
    }

    let mut missing = body();
    missing.as_object_mut().unwrap().remove("max_tokens");
    let reply = post(&url, Auth::Anthropic, &[], &missing).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["error"],
        json!({"type": "invalid_request_error", "message": "max_tokens: Field required"})
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn count_tokens_and_models() {
    let mock = start().await;
    let mut request = body();
    request.as_object_mut().unwrap().remove("max_tokens");
    let counted = post(
        &format!("{}/v1/messages/count_tokens", mock.base_url()),
        Auth::Anthropic,
        &[],
        &request,
    )
    .await
    .json();
    assert_eq!(counted, json!({"input_tokens": 5}));

    let models = send(
        reqwest::Method::GET,
        &format!("{}/v1/models", mock.base_url()),
        Auth::Anthropic,
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(models["has_more"], false);
    assert_eq!(models["data"][0]["type"], "model");
    assert!(models["data"][0]["display_name"].is_string());
    assert_eq!(models["first_id"], models["data"][0]["id"]);
    assert_eq!(mock.stats().requests_to(Endpoint::CountTokens), 1);
    assert_eq!(mock.stats().requests_to(Endpoint::Models), 1);
    mock.shutdown().await;
}
