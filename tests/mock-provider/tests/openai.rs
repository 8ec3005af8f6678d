//! The OpenAI dialect against a running mock: exact response shapes, the
//! chunk sequence with and without `include_usage`, tool calls, embeddings,
//! model listing, path aliases and error envelopes.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::{Auth, post, send, start};
use tollgate_mock_provider::{
    Api, DEFAULT_EMBEDDING_DIMENSIONS, Endpoint, Knobs, output_text, usage_for,
};

fn chat_body() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},   // 14 chars
            {"role": "user", "content": "Say hello to me"}      // 15 chars
        ]
    })
}

/// Drops the one field that depends on the clock.
fn without_created(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        let created = object.remove("created");
        assert!(created.is_some_and(|c| c.as_u64().is_some_and(|t| t > 1_700_000_000)));
    }
    value
}

#[tokio::test]
async fn chat_completion_has_the_exact_openai_shape() {
    let mock = start().await;
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[],
        &chat_body(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| id.starts_with("req_"))
    );
    let body = reply.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    // ceil(29 / 4) = 8 input tokens; 20 output tokens by default.
    assert_eq!(
        without_created(body),
        json!({
            "id": id,
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": output_text(20), "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 8,
                "completion_tokens": 20,
                "total_tokens": 28,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            },
            "service_tier": "default",
            "system_fingerprint": "fp_tollgate_mock"
        })
    );
    let usage = usage_for(Api::OpenAiChat, &chat_body(), &Knobs::default(), 20);
    assert_eq!(usage.openai_prompt_tokens(), 8);
    mock.shutdown().await;
}

#[tokio::test]
async fn output_length_follows_max_tokens_and_the_knob() {
    let mock = start().await;
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let mut body = chat_body();
    body["max_completion_tokens"] = json!(5);
    let reply = post(&url, Auth::OpenAi, &[], &body).await.json();
    assert_eq!(reply["choices"][0]["message"]["content"], "w0 w1 w2 w3 w4");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["completion_tokens"], 5);

    let reply = post(&url, Auth::OpenAi, &[("x-mock-output-tokens", "2")], &body)
        .await
        .json();
    assert_eq!(reply["choices"][0]["message"]["content"], "w0 w1");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    mock.shutdown().await;
}

#[tokio::test]
async fn cached_and_reasoning_tokens_are_inside_prompt_and_completion() {
    let mock = start().await;
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[
            ("x-mock-cache-read-tokens", "1024"),
            ("x-mock-reasoning-tokens", "7"),
            ("x-mock-output-tokens", "3"),
        ],
        &chat_body(),
    )
    .await
    .json();
    assert_eq!(
        reply["usage"],
        json!({
            "prompt_tokens": 1032,
            "completion_tokens": 10,
            "total_tokens": 1042,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 7, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    );
    assert_eq!(reply["choices"][0]["message"]["content"], "w0 w1 w2");
    mock.shutdown().await;
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_anywhere() {
    let mock = start().await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[("x-mock-output-tokens", "3")],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(!reply.broken);
    let events = reply.events();
    assert!(
        events.iter().all(|(name, _)| name.is_none()),
        "OpenAI sends data-only events"
    );
    assert_eq!(events.last().map(|(_, d)| d.as_str()), Some("[DONE]"));
    let chunks = reply.data_json();
    assert_eq!(chunks.len(), 5, "role, 3 tokens, finish");
    let id = chunks[0]["id"].clone();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert_eq!(chunk["id"], id);
        assert!(chunk.get("usage").is_none(), "{chunk}");
    }
    assert_eq!(
        chunks[0]["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                "logprobs": null, "finish_reason": null}])
    );
    let deltas: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, vec!["w0", " w1", " w2"]);
    assert_eq!(
        chunks[4]["choices"],
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk() {
    let mock = start().await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(
        &format!("{}/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[
            ("x-mock-output-tokens", "2"),
            ("x-mock-cache-read-tokens", "4"),
        ],
        &body,
    )
    .await;
    let chunks = reply.data_json();
    assert_eq!(chunks.len(), 5, "role, 2 tokens, finish, usage");
    for chunk in &chunks[..4] {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.get("usage").is_some());
    }
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["prompt_tokens"], 12);
    assert_eq!(chunks[4]["usage"]["completion_tokens"], 2);
    assert_eq!(chunks[4]["usage"]["total_tokens"], 14);
    assert_eq!(
        chunks[4]["usage"]["prompt_tokens_details"]["cached_tokens"],
        4
    );
    assert_eq!(reply.events().last().unwrap().1, "[DONE]");
    mock.shutdown().await;
}

fn tool_body() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}]
    })
}

#[tokio::test]
async fn tools_are_answered_with_a_tool_call() {
    let mock = start().await;
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let reply = post(&url, Auth::OpenAi, &[], &tool_body()).await.json();
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"value"}"#);

    // Once the tool has answered, the model answers in text.
    let mut answered = tool_body();
    answered["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    ]);
    let reply = post(&url, Auth::OpenAi, &[], &answered).await.json();
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(reply["choices"][0]["message"]["content"], output_text(20));
    mock.shutdown().await;
}

#[tokio::test]
async fn streamed_tool_call_arguments_reassemble() {
    let mock = start().await;
    let mut body = tool_body();
    body["stream"] = json!(true);
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::OpenAi,
        &[],
        &body,
    )
    .await;
    let chunks = reply.data_json();
    let opening = &chunks[0]["choices"][0]["delta"];
    assert_eq!(opening["role"], "assistant");
    assert_eq!(opening["tool_calls"][0]["index"], 0);
    assert_eq!(opening["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(opening["tool_calls"][0]["function"]["arguments"], "");
    let arguments: String = chunks[1..chunks.len() - 1]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(arguments, r#"{"city":"value"}"#);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn azure_path_uses_the_deployment_and_is_counted_as_chat() {
    let mock = start().await;
    let body = json!({"messages": [{"role": "user", "content": "abcd"}]});
    let reply = post(
        &format!(
            "{}/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
            mock.base_url()
        ),
        Auth::None,
        &[("api-key", "azure-key")],
        &body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["model"], "my-gpt");
    assert_eq!(reply.json()["usage"]["prompt_tokens"], 1);
    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::ChatCompletions), 1);
    assert_eq!(
        stats.last_path.as_deref(),
        Some("/openai/deployments/my-gpt/chat/completions")
    );
    assert_eq!(stats.last_header("api-key"), Some("azure-key"));
    assert_eq!(stats.last_body, body);
    mock.shutdown().await;
}

#[tokio::test]
async fn embeddings_as_floats_and_base64_agree() {
    let mock = start().await;
    let url = format!("{}/v1/embeddings", mock.base_url());
    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "abc"]});
    let floats = post(&url, Auth::OpenAi, &[], &body).await.json();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "text-embedding-3-small");
    // ceil((11 + 3) / 4) = 4
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    let first: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(first.len(), DEFAULT_EMBEDDING_DIMENSIONS);

    let mut b64_body = body.clone();
    b64_body["encoding_format"] = json!("base64");
    let encoded = post(&url, Auth::OpenAi, &[], &b64_body).await.json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, first);

    let mut sized = body;
    sized["dimensions"] = json!(3);
    let sized = post(&url, Auth::OpenAi, &[], &sized).await.json();
    assert_eq!(sized["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(mock.stats().requests_to(Endpoint::Embeddings), 3);
    mock.shutdown().await;
}

#[tokio::test]
async fn models_are_listed_in_openai_format() {
    let mock = start().await;
    let reply = send(
        reqwest::Method::GET,
        &format!("{}/v1/models", mock.base_url()),
        Auth::OpenAi,
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(reply["object"], "list");
    let ids: Vec<&str> = reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini"));
    assert_eq!(reply["data"][0]["object"], "model");
    assert_eq!(reply["data"][0]["owned_by"], "system");
    mock.shutdown().await;
}

#[tokio::test]
async fn missing_key_is_a_401_in_the_openai_envelope() {
    let mock = start().await;
    let reply = post(
        &format!("{}/v1/chat/completions", mock.base_url()),
        Auth::None,
        &[],
        &chat_body(),
    )
    .await;
    assert_eq!(reply.status, 401);
    let error = reply.json();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["param"], Value::Null);
    assert_eq!(error["error"]["code"], Value::Null);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("You didn't provide an API key")
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_400s() {
    let mock = start().await;
    let url = format!("{}/v1/chat/completions", mock.base_url());
    let mut body = chat_body();
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&url, Auth::OpenAi, &[], &body).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["error"]["message"],
        "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    );
    let reply = post(&url, Auth::OpenAi, &[], &json!({"messages": []})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["error"]["message"],
        "you must provide a model parameter"
    );

    let reply = post(
        &format!("{}/v1/nope", mock.base_url()),
        Auth::OpenAi,
        &[],
        &body,
    )
    .await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json()["error"]["message"],
        "Invalid URL (POST /v1/nope)"
    );
    assert_eq!(mock.stats().requests_to(Endpoint::Unknown), 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn response_ids_can_repeat_as_real_servers_do() {
    use tollgate_mock_provider::ResponseIds;
    for (ids, want) in [
        (
            ResponseIds::Cycle(2),
            ["chatcmpl-1", "chatcmpl-0", "chatcmpl-1"],
        ),
        (
            ResponseIds::Constant("chatcmpl-same".into()),
            ["chatcmpl-same", "chatcmpl-same", "chatcmpl-same"],
        ),
    ] {
        let mock =
            tollgate_mock_provider::MockProvider::start(tollgate_mock_provider::MockConfig {
                response_ids: ids,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let reply = post(
                &format!("{}/v1/chat/completions", mock.base_url()),
                Auth::OpenAi,
                &[],
                &chat_body(),
            )
            .await;
            got.push(reply.json()["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(got, want);
        mock.shutdown().await;
    }
}
