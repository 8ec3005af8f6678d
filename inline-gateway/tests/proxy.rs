//! The endpoints against the mock provider: chat (JSON, SSE), embeddings,
//! messages (JSON, SSE), tool calls, translation both ways, `/v1/models`,
//! auth, request ids. Usage in rows must equal the mock's exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_provider::{Api, Endpoint, Knobs, usage_for};
use tollgate_rules::{CallStatus, CostSource, Mode};

fn chat_body() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something about the weather in Paris today."}
        ]
    })
}

#[tokio::test]
async fn chat_json_is_proxied_and_its_row_has_the_mocks_usage_and_cost() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let reply = gw
        .post_with(
            "/v1/chat/completions",
            &chat_body(),
            &[("x-tollgate-user", "alice"), ("x-tollgate-session", "s-1")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let request_id = reply.header("x-request-id").unwrap().to_owned();
    assert!(request_id.starts_with("tg-"));
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19"
    );

    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::ChatCompletions), 1);
    assert_eq!(stats.last_path.as_deref(), Some("/v1/chat/completions"));
    assert_eq!(
        stats.last_header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str()),
        "the provider key, not the virtual key, goes upstream"
    );
    assert!(stats.last_header("x-tollgate-user").is_none());
    let expected = usage_for(Api::OpenAiChat, &stats.last_body, &Knobs::default(), 20);

    let row = gw.one_row().await;
    assert_eq!(row.mode, Mode::Gateway);
    assert_eq!(row.status, CallStatus::Ok);
    assert_eq!(row.http_status, Some(200));
    assert_eq!(row.decision.as_deref(), Some("allow"));
    assert_eq!(row.attempt, 0);
    assert_eq!(row.provider.as_deref(), Some("openai"));
    assert_eq!(row.operation.as_deref(), Some("chat"));
    assert_eq!(row.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.response_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        row.upstream.as_deref(),
        Some(mock.addr().to_string().as_str())
    );
    assert_eq!(row.input_tokens, u64::from(expected.openai_prompt_tokens()));
    assert_eq!(
        row.output_tokens,
        u64::from(expected.openai_completion_tokens())
    );
    assert_eq!(row.output_tokens, 20);
    assert_eq!(row.cost_source, CostSource::PriceTable);
    assert_close(
        row.cost_usd.unwrap(),
        gw.cost("openai", "gpt-4o-mini", &row),
    );
    assert!(row.cost_usd.unwrap() > 0.0);
    assert_eq!(row.org.as_deref(), Some("acme"));
    assert_eq!(row.project.as_deref(), Some("search"));
    assert_eq!(row.user.as_deref(), Some("alice"));
    assert_eq!(row.session.as_deref(), Some("s-1"));
    assert_eq!(row.labels.get("key").map(String::as_str), Some("key_test"));
    assert_eq!(
        row.labels.get("request_id").map(String::as_str),
        Some(request_id.as_str())
    );
    assert!(!row.labels.contains_key("usage_estimated"));
    assert!(
        row.request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("chatcmpl"))
    );
    assert!(!row.stream);
    assert_eq!(row.finish_reason.as_deref(), Some("stop"));
    assert_eq!(row.span_id.len(), 16);
    assert_eq!(row.trace_id.len(), 32);
}

#[tokio::test]
async fn chat_stream_injects_include_usage_and_strips_the_extra_chunk() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert!(reply.header("x-request-id").is_some());
    let events = reply.events();
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
    let chunks = reply.data_json();
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "the usage chunk the caller did not ask for is not passed on"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19"
    );

    let sent = mock.stats().last_body;
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let expected = usage_for(Api::OpenAiChat, &sent, &Knobs::default(), 20);
    let row = gw.one_row().await;
    assert!(row.stream);
    assert_eq!(row.status, CallStatus::Ok);
    assert_eq!(row.input_tokens, u64::from(expected.openai_prompt_tokens()));
    assert_eq!(row.output_tokens, 20);
    assert!(
        row.ttft_nanos
            .is_some_and(|t| t > 0 && t <= row.duration_nanos)
    );
    assert!(!row.labels.contains_key("usage_estimated"));
    assert_close(
        row.cost_usd.unwrap(),
        gw.cost("openai", "gpt-4o-mini", &row),
    );
}

#[tokio::test]
async fn chat_stream_keeps_the_usage_chunk_when_asked_for() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let mut body = chat_body();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = gw.post("/v1/chat/completions", &body).await;
    let chunks = reply.data_json();
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    let row = gw.one_row().await;
    assert_eq!(usage["usage"]["prompt_tokens"], row.input_tokens);
    assert_eq!(usage["usage"]["completion_tokens"], row.output_tokens);
}

#[tokio::test]
async fn embeddings_are_proxied_with_exact_usage() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "again"]});
    let reply = gw.post("/v1/embeddings", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 2);
    let expected = usage_for(
        Api::OpenAiEmbeddings,
        &mock.stats().last_body,
        &Knobs::default(),
        20,
    );
    let row = gw.one_row().await;
    assert_eq!(row.operation.as_deref(), Some("embeddings"));
    assert_eq!(row.input_tokens, u64::from(expected.text_input_tokens));
    assert_eq!(row.output_tokens, 0);
    assert_close(
        row.cost_usd.unwrap(),
        gw.cost("openai", "text-embedding-3-small", &row),
    );
}

fn messages_body() -> Value {
    json!({
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 12,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say something about the weather."}]
    })
}

#[tokio::test]
async fn messages_json_and_stream_are_proxied_with_exact_usage() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let reply = gw
        .post_with(
            "/v1/messages",
            &messages_body(),
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["stop_reason"], "max_tokens");
    let stats = mock.stats();
    assert_eq!(stats.last_path.as_deref(), Some("/v1/messages"));
    assert_eq!(stats.last_header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(stats.last_header("anthropic-version"), Some("2023-06-01"));
    let expected = usage_for(
        Api::AnthropicMessages,
        &stats.last_body,
        &Knobs::default(),
        20,
    );
    let row = gw.one_row().await;
    assert_eq!(row.provider.as_deref(), Some("anthropic"));
    assert_eq!(
        row.input_tokens,
        u64::from(expected.anthropic_input_tokens())
    );
    assert_eq!(row.output_tokens, 12);
    assert_eq!(row.finish_reason.as_deref(), Some("max_tokens"));
    assert_close(
        row.cost_usd.unwrap(),
        gw.cost("anthropic", "claude-3-5-haiku-20241022", &row),
    );

    let mut body = messages_body();
    body["stream"] = json!(true);
    let reply = gw.post("/v1/messages", &body).await;
    assert_eq!(reply.status, 200);
    let names: Vec<String> = reply.events().into_iter().filter_map(|e| e.0).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    assert_eq!(
        names.iter().filter(|n| *n == "content_block_delta").count(),
        12
    );
    let rows = gw.wait_rows(2).await;
    let row = &rows[1];
    assert!(row.stream);
    assert_eq!(
        row.input_tokens,
        u64::from(expected.anthropic_input_tokens())
    );
    assert_eq!(row.output_tokens, 12);
    assert!(row.ttft_nanos.is_some());
}

fn weather_tool_openai() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn tool_calls_pass_through_and_translate_both_ways() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;

    // OpenAI caller, OpenAI provider.
    let mut body = chat_body();
    body["tools"] = weather_tool_openai();
    let reply = gw.post("/v1/chat/completions", &body).await;
    let msg = &reply.json()["choices"][0];
    assert_eq!(msg["finish_reason"], "tool_calls");
    assert_eq!(
        msg["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(
        msg["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"value\"}"
    );

    // OpenAI caller, Anthropic provider: tools and the call are translated.
    body["model"] = json!("anthropic/claude-3-5-haiku-20241022");
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.stats().last_body;
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    assert_eq!(sent["system"], "You are terse.");
    let out = reply.json();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    let call = &out["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "value"}));

    // ... streamed.
    body["stream"] = json!(true);
    let reply = gw.post("/v1/chat/completions", &body).await;
    let chunks = reply.data_json();
    let opening = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
        .unwrap();
    assert_eq!(
        opening["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"value\"}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    // Anthropic caller, OpenAI provider.
    let body = json!({
        "model": "openai/gpt-4o-mini",
        "max_tokens": 30,
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    });
    let reply = gw.post("/v1/messages", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.stats().last_body;
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(sent["max_completion_tokens"], 30);
    let out = reply.json();
    assert_eq!(out["type"], "message");
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(out["content"][0]["type"], "tool_use");
    assert_eq!(out["content"][0]["name"], "get_weather");
    assert_eq!(out["content"][0]["input"], json!({"city": "value"}));
    let rows = gw.wait_rows(4).await;
    assert!(
        rows.iter()
            .all(|r| r.status == CallStatus::Ok && r.output_tokens > 0)
    );
}

#[tokio::test]
async fn openai_requests_served_by_anthropic_report_anthropics_usage() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let mut body = chat_body();
    body["model"] = json!("claude-3-5-haiku-20241022");
    body["max_tokens"] = json!(7);
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let out = reply.json();
    assert_eq!(
        out["choices"][0]["message"]["content"],
        "w0 w1 w2 w3 w4 w5 w6"
    );
    assert_eq!(out["choices"][0]["finish_reason"], "length");
    let sent = mock.stats().last_body;
    let expected = usage_for(Api::AnthropicMessages, &sent, &Knobs::default(), 20);
    assert_eq!(
        out["usage"]["prompt_tokens"],
        expected.anthropic_input_tokens()
    );
    assert_eq!(out["usage"]["completion_tokens"], 7);
    let row = gw.one_row().await;
    assert_eq!(row.provider.as_deref(), Some("anthropic"));
    assert_eq!(
        row.input_tokens,
        u64::from(expected.anthropic_input_tokens())
    );
    assert_eq!(row.output_tokens, 7);

    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = gw.post("/v1/chat/completions", &body).await;
    let chunks = reply.data_json();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "w0 w1 w2 w3 w4 w5 w6");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 7);
    assert_eq!(reply.events().last().map(|e| e.1.as_str()), Some("[DONE]"));
    let rows = gw.wait_rows(2).await;
    assert_eq!(rows[1].output_tokens, 7);
    assert_eq!(
        rows[1].input_tokens,
        u64::from(expected.anthropic_input_tokens())
    );
}

#[tokio::test]
async fn messages_served_by_openai_are_anthropic_shaped_json_and_stream() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let mut body = messages_body();
    body["model"] = json!("gpt-4o-mini");
    let reply = gw.post("/v1/messages", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let out = reply.json();
    assert_eq!(out["type"], "message");
    assert_eq!(
        out["content"][0]["text"],
        "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11"
    );
    let sent = mock.stats().last_body;
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are terse."})
    );
    let expected = usage_for(Api::OpenAiChat, &sent, &Knobs::default(), 20);
    assert_eq!(
        out["usage"]["input_tokens"],
        expected.openai_prompt_tokens()
    );
    assert_eq!(out["usage"]["output_tokens"], 12);

    body["stream"] = json!(true);
    let reply = gw.post("/v1/messages", &body).await;
    let events = reply.events();
    let names: Vec<&str> = events.iter().filter_map(|e| e.0.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let sent = mock.stats().last_body;
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let delta: Value = serde_json::from_str(
        &events
            .iter()
            .find(|e| e.0.as_deref() == Some("message_delta"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 12);
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    let rows = gw.wait_rows(2).await;
    for r in &rows {
        assert_eq!(r.provider.as_deref(), Some("openai"));
        assert_eq!(r.input_tokens, u64::from(expected.openai_prompt_tokens()));
        assert_eq!(r.output_tokens, 12);
    }
}

#[tokio::test]
async fn routes_and_models_resolve_and_list_what_the_key_may_use() {
    let mock = mock().await;
    let providers = format!(
        "{}{}",
        provider(
            "openai",
            "openai",
            &format!("{}/v1", mock.base_url()),
            "models = [\"gpt-4o-mini\", \"gpt-4o\"]"
        ),
        provider("anthropic", "anthropic", &mock.base_url(), "")
    );
    let cfg = format!(
        "{providers}[[gateway.routes]]\nname = \"support-chat\"\ntargets = [{{ provider = \"openai\", model = \"gpt-4o\" }}]\n"
    );
    let gw = start(&cfg, "").await;
    let mut body = chat_body();
    body["model"] = json!("support-chat");
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(mock.stats().last_body["model"], "gpt-4o");
    let row = gw.one_row().await;
    assert_eq!(row.route.as_deref(), Some("support-chat"));
    assert_eq!(row.request_model.as_deref(), Some("gpt-4o"));

    body["model"] = json!("no-such-model");
    let reply = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "model_not_found");

    let list = read(
        gw.client
            .get(format!("{}/v1/models", gw.base))
            .bearer_auth(&gw.key),
    )
    .await;
    let ids: Vec<String> = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["support-chat", "gpt-4o-mini", "gpt-4o"]);

    let mut limited = tollgate_gateway::VirtualKey::new("key_limited", "tg-limited-key");
    limited.allowed_models = vec!["support-*".into()];
    gw.keys.insert(limited);
    let list = read(
        gw.client
            .get(format!("{}/v1/models", gw.base))
            .header("x-api-key", "tg-limited-key")
            .header("anthropic-version", "2023-06-01"),
    )
    .await;
    let v = list.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["id"], "support-chat");
    assert_eq!(v["data"][0]["type"], "model");
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused_in_each_dialect() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let no_key = read(gw.request("/v1/chat/completions", None).json(&chat_body())).await;
    assert_eq!(no_key.status, 401);
    assert_eq!(no_key.json()["error"]["code"], "invalid_api_key");
    assert!(no_key.header("x-request-id").is_some());
    let wrong = read(
        gw.request("/v1/chat/completions", Some("tg-nope"))
            .json(&chat_body()),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let anthropic = read(
        gw.client
            .post(format!("{}/v1/messages", gw.base))
            .header("x-api-key", "tg-nope")
            .json(&messages_body()),
    )
    .await;
    assert_eq!(anthropic.status, 401);
    assert_eq!(anthropic.json()["type"], "error");
    assert_eq!(anthropic.json()["error"]["type"], "authentication_error");

    // x-api-key with the valid key works on both endpoints.
    let ok = read(
        gw.client
            .post(format!("{}/v1/messages", gw.base))
            .header("x-api-key", &gw.key)
            .header("x-request-id", "caller-id-1")
            .json(&messages_body()),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("x-request-id"), Some("caller-id-1"));
    assert_eq!(ok.header("request-id"), Some("caller-id-1"));

    assert!(gw.keys.revoke("key_test", 1));
    let revoked = gw.post("/v1/chat/completions", &chat_body()).await;
    assert_eq!(revoked.status, 401);
    assert!(
        revoked.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 0);
    assert_eq!(gw.gateway.stats().auth_failures, 4);

    let unknown = read(gw.client.get(format!("{}/nope", gw.base))).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.header("x-request-id").is_some());
}

#[tokio::test]
async fn azure_and_openai_compatible_providers_get_their_own_urls_and_auth() {
    let mock = mock().await;
    let cfg = format!(
        "{}{}",
        provider(
            "azure",
            "azure",
            &mock.base_url(),
            "api_version = \"2024-10-21\"\nmodels = [\"gpt-4o*\"]"
        ),
        "[[gateway.providers]]\nname = \"local\"\nkind = \"openai_compatible\"\nbase_url = \"BASE/v1\"\nmodels = [\"llama-*\"]\n"
            .replace("BASE", &mock.base_url()),
    );
    let gw = start(&cfg, "").await;
    let reply = gw.post("/v1/chat/completions", &chat_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = mock.stats();
    assert_eq!(
        stats.last_path.as_deref(),
        Some("/openai/deployments/gpt-4o-mini/chat/completions")
    );
    assert_eq!(stats.last_header("api-key"), Some(PROVIDER_KEY));
    assert!(stats.last_header("authorization").is_none());
    let row = gw.one_row().await;
    assert_eq!(row.provider.as_deref(), Some("azure.ai.openai"));
    assert_close(
        row.cost_usd.unwrap(),
        gw.cost("azure.ai.openai", "gpt-4o-mini", &row),
    );

    let mut body = chat_body();
    body["model"] = json!("llama-3.3-70b");
    let reply = gw.post("/v1/chat/completions", &body).await;
    // No key configured: none is sent. The mock insists on one and answers
    // 401, which the gateway reports as its own credentials problem (502),
    // not as the caller's key being wrong.
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "upstream_auth_error");
    let stats = mock.stats();
    assert_eq!(stats.last_path.as_deref(), Some("/v1/chat/completions"));
    assert!(stats.last_header("authorization").is_none());
    let rows = gw.wait_rows(2).await;
    assert_eq!(rows[1].provider.as_deref(), Some("local"));
    assert_eq!(rows[1].http_status, Some(502));
    assert_eq!(rows[1].error_type.as_deref(), Some("upstream_auth_error"));
}

#[tokio::test]
async fn an_overlong_model_name_is_refused_before_any_matching() {
    let mock = mock().await;
    let gw = start(&openai_and_anthropic(&mock), "").await;
    let mut body = chat_body();
    body["model"] = Value::from(format!("gpt-{}", "4".repeat(100_000)));
    let reply = gw.post_with("/v1/chat/completions", &body, &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("at most 512"), "{}", reply.text());
    assert_eq!(mock.stats().total_requests, 0);
}
