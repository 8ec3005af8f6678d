//! End to end: keys on the real binary. Spans need an `ingest` key and are
//! counted under its tenant; reads need a `read` key and see only its
//! tenant; the admin API takes the admin token or an `admin` key; a
//! collector reachable from other machines does not start open by accident.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::{Value, json};
use support::{Collector, otlp};
use tollgate_proto::enforcement::v1 as pb;
use tollgate_proto::enforcement::v1::enforcement_client::EnforcementClient;

const ADMIN: &str = "admin-token-for-tests-0123456789";
const METRICS: &str = "metrics-token-for-tests-012345";

fn config() -> String {
    format!(
        r#"
[admin]
token = "{ADMIN}"

[auth]
mode = "keys"
metrics_token = "{METRICS}"

[[rules]]
id = "monthly-cost"
type = "budget"
metric = "cost_usd"
limit = 1.0
scope = ["project"]
window = "month"
action = "block"

[[rules]]
id = "daily-tokens"
type = "budget"
metric = "tokens"
limit = 1000
scope = ["project"]
window = "day"
action = "block"
"#
    )
}

async fn create_key(c: &Collector, token: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys", c.api_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn key(c: &Collector, body: Value) -> (String, String) {
    let (status, body) = create_key(c, ADMIN, body).await;
    assert_eq!(status, 201, "{body}");
    (
        body["key"].as_str().unwrap().to_owned(),
        body["info"]["id"].as_str().unwrap().to_owned(),
    )
}

/// One call of `tokens` input tokens of gpt-4o ending now, with `attrs`.
fn span(
    id: u64,
    tokens: i64,
    attrs: &[(&str, &str)],
) -> opentelemetry_proto::tonic::trace::v1::Span {
    let mut kv = vec![
        otlp::string("gen_ai.request.model", "gpt-4o"),
        otlp::int("gen_ai.usage.input_tokens", tokens),
    ];
    kv.extend(attrs.iter().map(|(k, v)| otlp::string(k, v)));
    let mut span = otlp::span(id.to_be_bytes().to_vec(), kv);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    span.start_time_unix_nano = now - 1_000_000;
    span.end_time_unix_nano = now;
    span
}

/// POSTs spans over OTLP/HTTP (protobuf) with `key`; the status and body.
async fn post(
    c: &Collector,
    key: Option<&str>,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> (u16, Vec<u8>) {
    let mut r = reqwest::Client::new()
        .post(format!("{}/v1/traces", c.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(otlp::request(spans).encode_to_vec());
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn get(c: &Collector, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(format!("{}{path}", c.api_url()));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn column(rows: &Value, field: &str) -> Vec<String> {
    let mut v: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].as_str().unwrap_or("").to_owned())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scope_what_is_written_and_what_is_read() {
    let c = Collector::start(&config());
    let (ingest_a, ingest_a_id) = key(
        &c,
        json!({"roles": ["ingest"], "org": "acme", "project": "a", "name": "agents a"}),
    )
    .await;
    let (ingest_b, _) = key(
        &c,
        json!({"roles": ["ingest"], "org": "acme", "project": "b"}),
    )
    .await;
    let (read_a, _) = key(
        &c,
        json!({"roles": ["read"], "org": "acme", "project": "a"}),
    )
    .await;
    let (read_all, _) = key(&c, json!({"roles": ["read"]})).await;

    // A span without a key: 401 over HTTP, UNAUTHENTICATED over gRPC, with
    // a message saying how to send one.
    let (status, body) = post(&c, None, vec![span(1, 10, &[])]).await;
    assert_eq!(status, 401);
    let refusal = tonic_types::Status::decode(&body[..]).unwrap();
    assert_eq!(refusal.code, tonic::Code::Unauthenticated as i32);
    assert!(
        refusal
            .message
            .contains("OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<key>"),
        "{}",
        refusal.message
    );
    let mut grpc = TraceServiceClient::connect(c.grpc_url()).await.unwrap();
    let refused = grpc
        .export(otlp::request(vec![span(2, 10, &[])]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("ingest"),
        "{}",
        refused.message()
    );
    // A made-up key, and a read key sending spans.
    let (status, _) = post(
        &c,
        Some("tg-not-a-key-at-all-000000000000"),
        vec![span(3, 10, &[])],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(&c, Some(&read_a), vec![span(4, 10, &[])]).await;
    assert_eq!(status, 403);

    // The forged span: 5M tokens of gpt-4o claiming project `victim`, which
    // would trip its monthly $1 block. Without a key it is refused (above);
    // with project a's key it is refused through partial success.
    let forged = span(5, 5_000_000, &[("tollgate.project", "victim")]);
    let (status, body) = post(&c, Some(&ingest_a), vec![forged.clone()]).await;
    assert_eq!(status, 200);
    let answer = ExportTraceServiceResponse::decode(&body[..]).unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("project `victim`"),
        "{}",
        partial.error_message
    );
    let mut request = tonic::Request::new(otlp::request(vec![forged]));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ingest_a}").parse().unwrap(),
    );
    let answer = grpc.export(request).await.unwrap().into_inner();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 1);

    // Each project's key sends 2,000 tokens: a's spans name no project (the
    // key's is used), b's name their own. Both cross the daily block.
    let (status, body) = post(&c, Some(&ingest_a), vec![span(10, 2_000, &[])]).await;
    assert_eq!(status, 200);
    assert!(
        ExportTraceServiceResponse::decode(&body[..])
            .unwrap()
            .partial_success
            .is_none()
    );
    let (status, _) = post(
        &c,
        Some(&ingest_b),
        vec![span(11, 2_000, &[("tollgate.project", "b")])],
    )
    .await;
    assert_eq!(status, 200);
    support::wait_for("both calls stored", async || {
        get(&c, Some(&read_all), "/v1/calls").await.1["rows"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    })
    .await;

    // The forged span was never counted: no victim row, no victim block.
    let (status, usage) = get(&c, Some(&read_all), "/v1/usage?by=org,project&since=1h").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(column(&usage["rows"], "project"), ["a", "b"]);
    assert_eq!(column(&usage["rows"], "org"), ["acme"]);
    let (_, state) = get(&c, Some(&read_all), "/v1/enforcement?project=victim").await;
    assert_eq!(state["blocked"], false, "{state}");

    // Project a's read key sees project a only, wherever it reads.
    let (status, usage) = get(&c, Some(&read_a), "/v1/usage?by=project&since=1h").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(column(&usage["rows"], "project"), ["a"]);
    let (status, body) = get(&c, Some(&read_a), "/v1/usage?by=project&since=1h&project=b").await;
    assert_eq!(status, 403, "{body}");
    let (_, calls) = get(&c, Some(&read_a), "/v1/calls").await;
    assert_eq!(column(&calls["rows"], "project"), ["a"]);
    let (_, calls) = get(&c, Some(&read_all), "/v1/calls?project=b").await;
    assert_eq!(column(&calls["rows"], "project"), ["b"]);
    let (_, events) = get(&c, Some(&read_a), "/v1/events?since=1h").await;
    assert_eq!(column(&events["rows"], "scope"), ["project=a"]);
    let (_, events) = get(&c, Some(&read_all), "/v1/events?since=1h").await;
    assert_eq!(column(&events["rows"], "scope"), ["project=a", "project=b"]);
    let (_, state) = get(&c, Some(&read_a), "/v1/enforcement").await;
    assert_eq!(state["blocked"], true, "{state}");
    assert_eq!(column(&state["blocks"], "scope"), ["project=a"]);
    let (status, _) = get(&c, Some(&read_a), "/v1/enforcement?project=b").await;
    assert_eq!(status, 403);
    let (status, _) = get(&c, None, "/v1/enforcement?project=a").await;
    assert_eq!(status, 401);

    // The SSE stream: the key's scope only.
    let mut sse = reqwest::Client::new()
        .get(format!("{}/v1/enforcement/stream", c.api_url()))
        .bearer_auth(&read_a)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let chunk = String::from_utf8(sse.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(chunk.contains("\"scope\":\"project=a\""), "{chunk}");
    assert!(!chunk.contains("project=b"), "{chunk}");
    let sse = reqwest::get(format!("{}/v1/enforcement/stream", c.api_url()))
        .await
        .unwrap();
    assert_eq!(sse.status(), 401);

    // The gRPC stream: a read key, its own scope; another project refused.
    let mut ks = EnforcementClient::connect(c.grpc_url()).await.unwrap();
    let watch = |key: Option<&str>, project: &str| {
        let mut r = tonic::Request::new(pb::WatchRequest {
            scope: Some(pb::Scope {
                project: project.into(),
                ..Default::default()
            }),
        });
        if let Some(k) = key {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    };
    let first = ks
        .watch(watch(Some(&read_a), ""))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(first.blocked);
    assert!(
        first.blocks.iter().all(|b| b.scope == "project=a"),
        "{first:?}"
    );
    let refused = ks.watch(watch(Some(&read_a), "b")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let refused = ks.watch(watch(None, "a")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let refused = ks.watch(watch(Some(&ingest_a), "a")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // /metrics: its own token or an unscoped read key.
    assert_eq!(get(&c, None, "/metrics").await.0, 401);
    assert_eq!(get(&c, Some(&read_a), "/metrics").await.0, 403);
    assert_eq!(get(&c, Some(METRICS), "/metrics").await.0, 200);
    let (status, metrics) = get(&c, Some(&read_all), "/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics
            .contains("tollgate_auth_failures_total{listener=\"otlp_http\",reason=\"missing\"} 1"),
        "{metrics}"
    );
    for secret in [&ingest_a, &read_a, &read_all] {
        assert!(!metrics.contains(secret.as_str()));
    }
    // Health checks stay open for probes; where the gateway is, any key.
    assert_eq!(get(&c, None, "/healthz").await.0, 200);
    let (gateway_key, _) = key(&c, json!({"roles": ["gateway"], "org": "acme"})).await;
    assert_eq!(get(&c, Some(&gateway_key), "/v1/gateway").await.0, 200);
    assert_eq!(get(&c, None, "/v1/gateway").await.0, 401);
    assert_eq!(get(&c, Some(&gateway_key), "/v1/calls").await.0, 403);

    // A revoked key stops working within a second.
    let r = reqwest::Client::new()
        .delete(format!("{}/admin/v1/keys/{ingest_a_id}", c.api_url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    loop {
        let (status, _) = post(&c, Some(&ingest_a), vec![span(20, 1, &[])]).await;
        if status == 401 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "still accepted: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(revoked.elapsed() < Duration::from_secs(1));

    // No secret reached the logs.
    let logs = c.stderr();
    for secret in [&ingest_a, &ingest_b, &read_a, &read_all] {
        assert!(!logs.contains(secret.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_wrong_tokens_and_slows_down_guessing() {
    let c = Collector::start(&config());
    // A wrong token of the right length, and a key without the admin role.
    let wrong: String = ADMIN
        .chars()
        .map(|ch| if ch == 'a' { 'b' } else { ch })
        .collect();
    assert_eq!(wrong.len(), ADMIN.len());
    let (status, body) = create_key(&c, &wrong, json!({"roles": ["read"]})).await;
    assert_eq!(status, 401, "{body}");
    let (read, _) = key(&c, json!({"roles": ["read"]})).await;
    let (status, _) = create_key(&c, &read, json!({"roles": ["read"]})).await;
    assert_eq!(status, 403);
    // An admin key is accepted; a scoped admin key cannot be made.
    let (admin_key, _) = key(&c, json!({"roles": ["admin"], "name": "ops"})).await;
    let (status, _) = create_key(&c, &admin_key, json!({"roles": ["ingest"], "org": "acme"})).await;
    assert_eq!(status, 201);
    let (status, body) = create_key(&c, ADMIN, json!({"roles": ["admin"], "org": "acme"})).await;
    assert_eq!(status, 400, "{body}");
    // Listing shows no secret and no hash.
    let r = reqwest::Client::new()
        .get(format!("{}/admin/v1/keys", c.api_url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let listed = r.text().await.unwrap();
    assert!(
        !listed.contains(&admin_key) && !listed.contains("hash"),
        "{listed}"
    );

    // Ten failures from one address within a minute: further attempts,
    // the right token included, get 429 until the minute is over.
    for _ in 0..8 {
        assert_eq!(
            create_key(&c, &wrong, json!({"roles": ["read"]})).await.0,
            401
        );
    }
    let (status, body) = create_key(&c, ADMIN, json!({"roles": ["read"]})).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many failed attempts")
    );
    // Reads with a key are not affected.
    assert_eq!(get(&c, Some(&read), "/v1/calls").await.0, 200);
    let metrics = get(&c, Some(METRICS), "/metrics").await.1;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("tollgate_auth_failures_total{listener=\"api\",reason=\"throttled\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_listener_off_loopback_needs_keys_or_an_explicit_open_mode() {
    let dir = tempfile::tempdir().unwrap();
    let write = |extra: &str| {
        let path = dir.path().join("tollgate.toml");
        std::fs::write(
            &path,
            format!(
                "[receivers.otlp]\ngrpc_listen = \"0.0.0.0:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
                 [api]\nlisten = \"127.0.0.1:0\"\n[storage]\ntype = \"sqlite\"\npath = \"{}\"\n{extra}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        path
    };
    let out = std::process::Command::new(support::bin())
        .args(["serve", "--config"])
        .arg(write(""))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("receivers.otlp.grpc_listen") && stderr.contains("auth.mode"),
        "{stderr}"
    );
    // `config check` says the same.
    let out = std::process::Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(write(""))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // With keys it starts; so does an explicit open mode, with a warning.
    for (extra, warns) in [
        (
            format!("[admin]\ntoken = \"{ADMIN}\"\n[auth]\nmode = \"keys\"\n"),
            false,
        ),
        ("[auth]\nmode = \"open\"\n".to_owned(), true),
    ] {
        let path = write(&extra);
        let out = std::process::Command::new(support::bin())
            .args(["config", "check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let c = Collector::start_full(
            "",
            &[],
            &[
                ("TOLLGATE_RECEIVERS__OTLP__GRPC_LISTEN", "0.0.0.0:0"),
                ("TOLLGATE_AUTH__MODE", if warns { "open" } else { "keys" }),
                ("TOLLGATE_ADMIN__TOKEN", ADMIN),
            ],
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            c.stderr().contains("auth.mode = \"open\""),
            warns,
            "{}",
            c.stderr()
        );
    }
    // Keys mode with no way to make a key does not start.
    let out = std::process::Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(write("[auth]\nmode = \"keys\"\n"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key can ever be made"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_in_the_config_work_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("ingest.key");
    let secret = "tg-config-key-for-tests-0123456789abcdef";
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let c = Collector::start(&format!(
        r#"
[auth]
mode = "keys"

[[auth.keys]]
name = "agents"
roles = ["ingest", "read"]
org = "acme"
project = "search"
secret_file = "{}"
"#,
        secret_file.display()
    ));
    let (status, _) = post(&c, Some(secret), vec![span(1, 10, &[])]).await;
    assert_eq!(status, 200);
    let (status, _) = post(&c, None, vec![span(2, 10, &[])]).await;
    assert_eq!(status, 401);
    support::wait_for("the call stored", async || {
        get(&c, Some(secret), "/v1/calls").await.1["rows"]
            .as_array()
            .is_some_and(|r| r.len() == 1)
    })
    .await;
    let (_, calls) = get(&c, Some(secret), "/v1/calls").await;
    assert_eq!(calls["rows"][0]["project"], "search");
    assert_eq!(calls["rows"][0]["org"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_lists_and_revokes_keys_over_tls() {
    use support::certs::TestCa;
    let ca = TestCa::new("tollgate test CA");
    let (cert, cert_key) = ca.write("server", &ca.server("tollgate"));
    let c = Collector::start(&format!(
        "{}\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        config(),
        cert.display(),
        cert_key.display()
    ));
    let api = format!("https://{}", c.api_url().trim_start_matches("http://"));
    let ca_file = ca.ca_path().display().to_string();
    let admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--api", &api, "--admin-token", ADMIN, "--ca-file", &ca_file]);
        support::cli(&all)
    };
    // Without the CA the certificate is not trusted.
    let (ok, _, err) = support::cli(&["keys", "list", "--api", &api, "--admin-token", ADMIN]);
    assert!(!ok && err.contains("cannot reach"), "{err}");

    let (ok, out, err) = admin(&[
        "keys",
        "create",
        "--role",
        "read",
        "--org",
        "acme",
        "--project",
        "a",
        "--name",
        "ci",
    ]);
    assert!(ok, "{err}");
    let secret = out.lines().next().unwrap().trim().to_owned();
    assert!(secret.starts_with("tg-"), "{out}");
    let (ok, listed, _) = admin(&["keys", "list"]);
    assert!(ok);
    assert!(
        listed.contains("read") && listed.contains("acme") && !listed.contains(&secret),
        "{listed}"
    );
    let (ok, _, err) = admin(&["keys", "create", "--role", "owner"]);
    assert!(!ok && err.contains("unknown role `owner`"), "{err}");

    // The read key reads through `tollgate usage`; a wrong admin token does not list.
    let (ok, out, err) = support::cli(&[
        "usage",
        "--api",
        &api,
        "--key",
        &secret,
        "--ca-file",
        &ca_file,
        "--json",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("rows"), "{out}");
    let (ok, _, err) = support::cli(&[
        "keys",
        "list",
        "--api",
        &api,
        "--admin-token",
        "not-the-admin-token-0000",
        "--ca-file",
        &ca_file,
    ]);
    assert!(!ok && err.contains("401"), "{err}");

    let (_, listed, _) = admin(&["keys", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let id = listed["keys"][0]["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = admin(&["keys", "revoke", &id]);
    assert!(ok, "{err}");
    let (ok, _, err) = support::cli(&[
        "usage",
        "--api",
        &api,
        "--key",
        &secret,
        "--ca-file",
        &ca_file,
    ]);
    assert!(!ok && err.contains("401"), "{err}");
}
