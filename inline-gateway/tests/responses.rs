//! `POST /v1/responses` against the mock provider: passed through to a
//! provider that serves the Responses API (JSON, and SSE byte for byte),
//! translated for a chat-only server and for Anthropic (JSON and SSE,
//! function calls both ways), admitted and refused like every call, one
//! priced row per call with the mock's exact usage; and the calls on
//! stored responses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::*;
use tollgate_mock_provider::{Api, Endpoint, Knobs, MockConfig, usage_for};
use tollgate_rules::{CallStatus, CostSource, Mode};

const WORDS: &str = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19";

fn body() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "instructions": "You are terse.",
        "input": "Say something about the weather in Paris today."
    })
}

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}})
}

fn knobs(headers: &[(&str, &str)]) -> Knobs {
    let mut map = http::HeaderMap::new();
    for (n, v) in headers {
        map.insert(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    Knobs::from_headers(&map).unwrap()
}

/// An OpenAI provider (Responses API), a chat-only OpenAI-compatible one
/// and an Anthropic one, all on `mock`.
fn three_kinds(mock: &tollgate_mock_provider::MockProvider) -> String {
    three_kinds_with(mock, "")
}

/// [`three_kinds`], the OpenAI provider's table ending with `openai_extra`
/// (the mock's knobs are headers the gateway sends, never the caller's).
fn three_kinds_with(mock: &tollgate_mock_provider::MockProvider, openai_extra: &str) -> String {
    format!(
        "{}{}{}",
        provider(
            "openai",
            "openai",
            &format!("{}/v1", mock.base_url()),
            openai_extra
        ),
        provider(
            "local",
            "openai_compatible",
            &format!("{}/v1", mock.base_url()),
            "models = [\"llama-*\"]"
        ),
        provider("anthropic", "anthropic", &mock.base_url(), "")
    )
}

#[tokio::test]
async fn responses_json_is_proxied_and_its_row_has_the_mocks_usage_and_cost() {
    let mock = mock().await;
    let knob_table =
        "headers = { \"x-mock-reasoning-tokens\" = \"6\", \"x-mock-cache-read-tokens\" = \"4\" }";
    let gw = start(&three_kinds_with(&mock, knob_table), "").await;
    let headers = [
        ("x-mock-reasoning-tokens", "6"),
        ("x-mock-cache-read-tokens", "4"),
    ];
    let reply = gw
        .post_with("/v1/responses", &body(), &[("x-tollgate-user", "alice")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["output"][0]["type"], "reasoning");
    assert_eq!(answer["output"][1]["content"][0]["text"], WORDS);

    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::Responses), 1);
    assert_eq!(stats.last_path.as_deref(), Some("/v1/responses"));
    assert_eq!(
        stats.last_header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    // No cap from the caller: the gateway's default, in the API's field.
    assert_eq!(stats.last_body["max_output_tokens"], 4096);
    assert_eq!(stats.last_body["instructions"], "You are terse.");
    let expected = usage_for(Api::OpenAiResponses, &stats.last_body, &knobs(&headers), 20);

    let row = gw.one_row().await;
    assert_eq!(row.mode, Mode::Gateway);
    assert_eq!(row.status, CallStatus::Ok);
    assert_eq!(row.operation.as_deref(), Some("chat"));
    assert_eq!(row.provider.as_deref(), Some("openai"));
    assert_eq!(row.response_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.input_tokens, u64::from(expected.openai_prompt_tokens()));
    assert_eq!(row.cache_read_tokens, 4);
    assert_eq!(row.output_tokens, 26, "20 words and 6 reasoning tokens");
    assert_eq!(row.reasoning_tokens, 6);
    assert_eq!(row.user.as_deref(), Some("alice"));
    assert_eq!(row.finish_reason.as_deref(), Some("completed"));
    assert_eq!(row.request_id.as_deref(), answer["id"].as_str());
    assert!(!row.stream);
    assert!(!row.labels.contains_key("usage_estimated"));
    assert_eq!(row.cost_source, CostSource::PriceTable);
    let cost = row.cost_usd.unwrap();
    assert!(cost > 0.0);
    assert_close(cost, gw.cost("openai", "gpt-4o-mini", &row));
}

/// Timestamps differ between two runs of the mock; everything else of a
/// stream must be the same bytes.
fn without_timestamps(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["\"created_at\":", "\"completed_at\":"]
        .iter()
        .filter_map(|k| rest.find(k).map(|i| (i, k.len())))
        .min()
    {
        let (i, len) = at;
        out.push_str(&rest[..i + len]);
        rest = rest[i + len..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('T');
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn responses_stream_passes_every_event_byte_for_byte() {
    let mock = mock().await;
    let knob_table = "headers = { \"x-mock-reasoning-tokens\" = \"3\" }";
    let gw = start(&three_kinds_with(&mock, knob_table), "").await;
    let mut request = body();
    request["stream"] = json!(true);
    request["tools"] = json!([weather_tool()]);
    let reply = gw.post("/v1/responses", &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let sent = mock.stats().last_body;

    // The same request straight to a fresh mock: the same bytes.
    let direct_mock = support::mock().await;
    let direct = read(
        reqwest::Client::new()
            .post(format!("{}/v1/responses", direct_mock.base_url()))
            .header("authorization", format!("Bearer {PROVIDER_KEY}"))
            .header("x-mock-reasoning-tokens", "3")
            .json(&sent),
    )
    .await;
    assert_eq!(direct.status, 200);
    assert_eq!(
        without_timestamps(&reply.text()),
        without_timestamps(&direct.text())
    );
    let names: Vec<String> = reply.events().into_iter().filter_map(|e| e.0).collect();
    assert_eq!(names.first().map(String::as_str), Some("response.created"));
    assert!(
        names
            .iter()
            .any(|n| n == "response.function_call_arguments.delta")
    );
    assert_eq!(names.last().map(String::as_str), Some("response.completed"));

    let completed = reply.data_json().pop().unwrap();
    let usage = &completed["response"]["usage"];
    let row = gw.one_row().await;
    assert!(row.stream);
    assert_eq!(row.status, CallStatus::Ok);
    assert_eq!(row.input_tokens, usage["input_tokens"].as_u64().unwrap());
    assert_eq!(row.output_tokens, usage["output_tokens"].as_u64().unwrap());
    assert_eq!(row.reasoning_tokens, 3);
    assert!(row.ttft_nanos.is_some_and(|t| t > 0));
    assert!(!row.labels.contains_key("usage_estimated"));
    assert!(row.cost_usd.unwrap() > 0.0);
    assert_close(
        row.cost_usd.unwrap(),
        gw.cost("openai", "gpt-4o-mini", &row),
    );
}

#[tokio::test]
async fn a_cut_responses_stream_is_settled_on_an_estimate_never_zero() {
    let mock = mock().await;
    let knob_table = "headers = { \"x-mock-cut-after-chunks\" = \"3\" }";
    let gw = start(&three_kinds_with(&mock, knob_table), "").await;
    let mut request = body();
    request["stream"] = json!(true);
    let reply = gw.post("/v1/responses", &request).await;
    assert_eq!(reply.status, 200);
    assert!(reply.broken, "the caller sees the stream break");
    let row = gw.one_row().await;
    assert_eq!(row.status, CallStatus::Error);
    assert_eq!(
        row.labels.get("usage_estimated").map(String::as_str),
        Some("true")
    );
    assert!(row.output_tokens >= 3, "{row:?}");
    assert!(row.cost_usd.unwrap() > 0.0);
}

#[tokio::test]
async fn a_budget_refuses_a_responses_call_before_the_provider_sees_it() {
    let mock = mock().await;
    let rules = r#"
[[rules]]
type = "budget"
id = "project-tokens"
scope = ["project"]
metric = "tokens"
limit = 1000
window = "day"
action = "block"
"#;
    let gw = start(&three_kinds(&mock), rules).await;
    // 4096 output tokens reserved by default: over the limit.
    let refused = gw.post("/v1/responses", &body()).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let error = &refused.json()["error"];
    assert_eq!(error["type"], "budget_exceeded");
    assert_eq!(error["rule_id"], "project-tokens");
    assert_eq!(mock.stats().requests_to(Endpoint::Responses), 0);
    let row = gw.one_row().await;
    assert_eq!(row.decision.as_deref(), Some("block"));

    // A cap that fits is admitted, and sent.
    let mut capped = body();
    capped["max_output_tokens"] = json!(50);
    let ok = gw.post("/v1/responses", &capped).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(mock.stats().last_body["max_output_tokens"], 50);
}

#[tokio::test]
async fn stored_state_is_passed_to_openai_reserved_and_refused_elsewhere() {
    let mock = mock().await;
    let rules = r#"
[[rules]]
type = "budget"
id = "project-tokens"
scope = ["project"]
metric = "tokens"
limit = 60000
window = "day"
action = "block"
"#;
    let cfg = format!("unseen_input_tokens = 100000\n{}", three_kinds(&mock));
    let gw = start(&cfg, rules).await;
    let mut follow_up = json!({"model": "gpt-4o-mini", "input": "and tomorrow?",
        "previous_response_id": "resp_abc", "max_output_tokens": 20});
    // What the provider keeps is reserved at `unseen_input_tokens`.
    let refused = gw.post("/v1/responses", &follow_up).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(mock.stats().requests_to(Endpoint::Responses), 0);

    let gw = start(&three_kinds(&mock), "").await;
    let ok = gw.post("/v1/responses", &follow_up).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(mock.stats().last_body["previous_response_id"], "resp_abc");
    let row = gw.one_row().await;
    assert!(row.input_tokens > 0 && row.cost_usd.unwrap() > 0.0);

    // Upstreams that keep nothing cannot serve it: a 400 naming the field.
    for model in ["anthropic/claude-3-5-haiku-20241022", "local/llama-3"] {
        follow_up["model"] = json!(model);
        let r = gw.post("/v1/responses", &follow_up).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("`previous_response_id`"), "{message}");
    }
    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::Messages), 0);
    assert_eq!(stats.requests_to(Endpoint::ChatCompletions), 0);
}

#[tokio::test]
async fn responses_are_translated_for_a_chat_only_server_with_a_tool_loop() {
    let mock = mock().await;
    let gw = start(&three_kinds(&mock), "").await;
    let first = json!({"model": "llama-3", "input": "Weather in Paris?",
                       "tools": [weather_tool()], "max_output_tokens": 64});
    let reply = gw.post("/v1/responses", &first).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = mock.stats();
    assert_eq!(stats.requests_to(Endpoint::ChatCompletions), 1);
    assert_eq!(stats.requests_to(Endpoint::Responses), 0);
    assert_eq!(stats.last_body["max_tokens"], 64);
    assert_eq!(
        stats.last_body["tools"][0]["function"]["name"],
        "get_weather"
    );
    let answer = reply.json();
    assert_eq!(answer["object"], "response");
    assert!(answer["id"].as_str().unwrap().starts_with("resp_"));
    let call = &answer["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string());
    let expected = usage_for(Api::OpenAiChat, &stats.last_body, &Knobs::default(), 20);
    assert_eq!(
        answer["usage"]["input_tokens"],
        expected.openai_prompt_tokens()
    );

    // The loop's next turn: the call and its output go back as chat messages.
    let second = json!({"model": "llama-3", "tools": [weather_tool()], "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather",
         "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny, 21C"}
    ]});
    let reply = gw.post("/v1/responses", &second).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.stats().last_body;
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], call["call_id"]);
    assert_eq!(sent["messages"][2]["role"], "tool");
    assert_eq!(sent["messages"][2]["content"], "sunny, 21C");
    let answer = reply.json();
    assert_eq!(answer["output"][0]["type"], "message");
    assert_eq!(answer["output"][0]["content"][0]["text"], WORDS);
    let expected = usage_for(Api::OpenAiChat, &sent, &Knobs::default(), 20);

    let rows = gw.wait_rows(2).await;
    let row = &rows[1];
    assert_eq!(row.provider.as_deref(), Some("local"));
    assert_eq!(row.input_tokens, u64::from(expected.openai_prompt_tokens()));
    assert_eq!(
        answer["usage"]["input_tokens"].as_u64(),
        Some(row.input_tokens)
    );
}

/// The Responses event sequence a translated stream must follow, and its
/// text; returns the `response.completed` event's response.
fn check_translated_stream(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let events = reply.events();
    let names: Vec<&str> = events.iter().filter_map(|e| e.0.as_deref()).collect();
    assert_eq!(names.len(), events.len(), "every event is named");
    let data = reply.data_json();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["sequence_number"], i, "{d}");
        assert_eq!(d["type"], names[i]);
    }
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    let tail = &names[names.len() - 4..];
    assert_eq!(
        tail,
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, WORDS);
    let done = data.last().unwrap()["response"].clone();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], WORDS);
    done
}

#[tokio::test]
async fn responses_streams_are_translated_from_chat_and_from_anthropic() {
    let mock = mock().await;
    let gw = start(&three_kinds(&mock), "").await;
    for (n, model) in ["llama-3", "claude-3-5-haiku-20241022"].iter().enumerate() {
        let request = json!({"model": model, "input": "Weather in Paris?", "stream": true});
        let reply = gw.post("/v1/responses", &request).await;
        let done = check_translated_stream(&reply);
        let rows = gw.wait_rows(n + 1).await;
        let row = &rows[n];
        assert!(row.stream);
        assert_eq!(row.status, CallStatus::Ok);
        assert!(!row.labels.contains_key("usage_estimated"));
        assert_eq!(
            done["usage"]["input_tokens"].as_u64(),
            Some(row.input_tokens)
        );
        assert_eq!(done["usage"]["output_tokens"].as_u64(), Some(20));
        assert_eq!(row.output_tokens, 20);
        let sent = mock.stats().last_body;
        let expected = if *model == "llama-3" {
            usage_for(Api::OpenAiChat, &sent, &Knobs::default(), 20).openai_prompt_tokens()
        } else {
            usage_for(Api::AnthropicMessages, &sent, &Knobs::default(), 20).anthropic_input_tokens()
        };
        assert_eq!(row.input_tokens, u64::from(expected));
    }
    let row = &gw.wait_rows(2).await[1];
    assert_eq!(row.provider.as_deref(), Some("anthropic"));
    assert!(row.cost_usd.unwrap() > 0.0);
}

#[tokio::test]
async fn anthropic_serves_responses_with_function_calls_both_ways() {
    let mock = mock().await;
    let gw = start(&three_kinds(&mock), "").await;
    let request = json!({"model": "claude-3-5-haiku-20241022", "instructions": "Be brief.",
        "input": "Weather in Paris?", "tools": [weather_tool()]});
    let reply = gw.post("/v1/responses", &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let sent = mock.stats().last_body;
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
    let answer = reply.json();
    let call = &answer["output"][0];
    assert_eq!(call["type"], "function_call");
    assert!(call["call_id"].as_str().unwrap().starts_with("toolu_"));

    let mut streamed = json!({"model": "claude-3-5-haiku-20241022", "stream": true,
        "tools": [weather_tool()], "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call["call_id"], "name": "get_weather",
         "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    ]});
    let reply = gw.post("/v1/responses", &streamed).await;
    check_translated_stream(&reply);
    let sent = mock.stats().last_body;
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(
        sent["messages"][2]["content"][0]["tool_use_id"],
        call["call_id"]
    );

    // A tool call streamed: function call items and argument deltas.
    streamed["input"] = json!("Weather in Rome?");
    let reply = gw.post("/v1/responses", &streamed).await;
    let data = reply.data_json();
    let added = data
        .iter()
        .find(|d| d["type"] == "response.output_item.added")
        .unwrap();
    assert_eq!(added["item"]["type"], "function_call");
    let args: String = data
        .iter()
        .filter(|d| d["type"] == "response.function_call_arguments.delta")
        .map(|d| d["delta"].as_str().unwrap().to_owned())
        .collect();
    let done = &data.last().unwrap()["response"];
    assert_eq!(done["output"][0]["arguments"], args.as_str());
    assert!(serde_json::from_str::<Value>(&args).unwrap()["city"].is_string());
    assert_eq!(gw.wait_rows(3).await.len(), 3);
}

#[tokio::test]
async fn untranslatable_responses_requests_get_a_precise_400() {
    let mock = mock().await;
    let gw = start(&three_kinds(&mock), "").await;
    let r = gw
        .post(
            "/v1/responses",
            &json!({"model": "llama-3", "input": "news?", "tools": [{"type": "web_search"}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`web_search`")
    );
    let r = gw.post("/v1/responses", &json!({"input": "x"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["message"], "`model` is required");
    let r = gw
        .request("/v1/responses", Some(&gw.key))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(mock.stats().requests_to(Endpoint::ChatCompletions), 0);
}

#[tokio::test]
async fn calls_on_stored_responses_go_to_the_responses_provider_without_rows() {
    let mock = mock_with(MockConfig::default()).await;
    let gw = start(&three_kinds(&mock), "").await;
    let url = |p: &str| format!("{}{p}", gw.base);
    let auth = format!("Bearer {}", gw.key);
    let created = gw.post("/v1/responses", &body()).await.json();
    let id = created["id"].as_str().unwrap().to_owned();

    let got = read(
        gw.client
            .get(url(&format!("/v1/responses/{id}")))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], id.as_str());
    assert_eq!(got.json()["usage"], created["usage"]);
    let stats = mock.stats();
    assert_eq!(
        stats.last_path.as_deref(),
        Some(format!("/v1/responses/{id}").as_str())
    );
    assert_eq!(
        stats.last_header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );

    let items = read(
        gw.client
            .get(url(&format!("/v1/responses/{id}/input_items?limit=5")))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(items.status, 200, "{}", items.text());
    assert_eq!(items.json()["object"], "list");
    assert_eq!(
        items.json()["data"][0]["content"][0]["text"],
        body()["input"]
    );

    let counted = gw
        .post(
            "/v1/responses/input_tokens",
            &json!({"model": "gpt-4o-mini", "input": "abcdefgh"}),
        )
        .await;
    assert_eq!(counted.status, 200, "{}", counted.text());
    assert_eq!(counted.json()["object"], "response.input_tokens");
    assert_eq!(counted.json()["input_tokens"], 2);

    let deleted = read(
        gw.client
            .delete(url(&format!("/v1/responses/{id}")))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json()["deleted"], true);
    let gone = read(
        gw.client
            .get(url(&format!("/v1/responses/{id}")))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(gone.status, 404, "{}", gone.text());
    assert!(gone.json()["error"]["message"].is_string());

    let bad = read(
        gw.client
            .get(url("/v1/responses/resp_1%2F..%2Ffiles"))
            .header("authorization", &auth),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let unauthenticated = read(gw.client.get(url(&format!("/v1/responses/{id}")))).await;
    assert_eq!(unauthenticated.status, 401);
    let named = read(
        gw.client
            .get(url(&format!("/v1/responses/{id}")))
            .header("authorization", &auth)
            .header("x-tollgate-provider", "anthropic"),
    )
    .await;
    assert_eq!(named.status, 400, "{}", named.text());

    // Only the model call made a row.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(gw.rows.records().len(), 1);
}
