//! TLS on every listener, end to end against the real binary, with a CA and
//! certificates made by the test (rcgen):
//!
//! - the Rust `opentelemetry-otlp` exporter sends over gRPC and HTTP with
//!   TLS and the spans are stored; the API and the gateway answer over TLS;
//! - plaintext sent to a TLS port fails for the client, is counted as a
//!   protocol error, and the collector keeps serving;
//! - with `tls.client_ca_file` the receivers refuse clients without a
//!   certificate (or with one from another CA) and accept one signed by it;
//!   the API asks for none;
//! - a renewed certificate written over the files is served to new
//!   connections without a restart; a broken one keeps the last good one;
//! - a wrong `[tls]` stops start-up with one line naming the field;
//! - the official OpenTelemetry Python SDK, configured only through
//!   `OTEL_EXPORTER_OTLP_*` variables, sends over TLS with `grpc` and
//!   `http/protobuf` (needs `TOLLGATE_TEST_SDK_PYTHON`, as
//!   `e2e_python_sdk`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use serde_json::Value;
use support::certs::{Issued, TestCa, https_client, write_replacing};
use support::{Collector, bin, otlp, wait_for};
use tollgate_mock_provider::{MockConfig, MockProvider};

const TEST: &str = "e2e_tls";

fn tls_section(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n",
        cert.display(),
        key.display()
    )
}

fn https(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One model call for `project`, as an OTLP request.
fn call_request(id: u64, project: &str) -> ExportTraceServiceRequest {
    let mut span = otlp::span(
        id.to_be_bytes().to_vec(),
        vec![
            otlp::string("gen_ai.request.model", "gpt-4o-mini"),
            otlp::int("gen_ai.usage.input_tokens", 100),
            otlp::string("tollgate.project", project),
        ],
    );
    let now = now_nanos();
    span.trace_id = (id as u128 + 1).to_be_bytes().to_vec();
    span.start_time_unix_nano = now - 1_000_000;
    span.end_time_unix_nano = now;
    otlp::request(vec![span])
}

/// Waits until a call of `project` is stored (read over the TLS API).
async fn wait_project(client: &reqwest::Client, c: &Collector, project: &str) -> Value {
    wait_project_with(client, c, project, None).await
}

/// [`wait_project`], reading with `key` when given.
async fn wait_project_with(
    client: &reqwest::Client,
    c: &Collector,
    project: &str,
    key: Option<&str>,
) -> Value {
    let url = format!("{}/v1/calls?limit=1000", https(c.api));
    let mut found = None;
    wait_for(&format!("a stored call of {project}"), async || {
        let mut request = client.get(&url);
        if let Some(k) = key {
            request = request.bearer_auth(k);
        }
        let Ok(r) = request.send().await else {
            return false;
        };
        let body: Value = r.json().await.unwrap();
        found = body["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["project"] == project).cloned());
        found.is_some()
    })
    .await;
    found.unwrap()
}

/// Exports one span for `project` with the Rust OTLP exporter over
/// `protocol`, trusting `ca`.
async fn export_with_rust_sdk(ca: &TestCa, endpoint: &str, protocol: Protocol, project: &str) {
    let exporter = match protocol {
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem)),
            )
            .build()
            .unwrap(),
        _ => {
            let ca_pem = ca.cert_pem.clone();
            // A blocking client is built (and later dropped) off the runtime.
            let client = std::thread::spawn(move || {
                reqwest::blocking::Client::builder()
                    .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
                    .build()
                    .unwrap()
            })
            .join()
            .unwrap();
            SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_http_client(client)
                .with_endpoint(format!("{endpoint}/v1/traces"))
                .build()
                .unwrap()
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("e2e_tls");
    let mut span = tracer
        .span_builder("chat gpt-4o-mini")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::new("gen_ai.usage.input_tokens", 500),
            KeyValue::new("tollgate.project", project.to_owned()),
        ])
        .start(&tracer);
    span.end();
    tokio::task::spawn_blocking(move || {
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();
    })
    .await
    .unwrap();
}

/// A gRPC client of the OTLP receiver over TLS trusting `ca`, with
/// `identity` if given.
async fn grpc_client(
    ca: &TestCa,
    addr: SocketAddr,
    identity: Option<&Issued>,
) -> Result<TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca.cert_pem));
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            &id.cert_pem,
            &id.key_pem,
        ));
    }
    let channel = tonic::transport::Channel::from_shared(https(addr))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(TraceServiceClient::new(channel))
}

/// The certificate a new connection to `addr` is served (DER).
async fn served_certificate(ca: &TestCa, addr: SocketAddr) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn closed(metrics: &str, listener: &str, reason: &str) -> u64 {
    let prefix = format!(
        "tollgate_listener_connections_closed_total{{listener=\"{listener}\",reason=\"{reason}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_speaks_tls_and_plaintext_is_refused() {
    let ca = TestCa::new("tollgate test CA");
    let (cert, key) = ca.write("server", &ca.server("tollgate"));
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let config = format!(
        "{}\n[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n\
         [[gateway.providers]]\nname = \"openai\"\nkind = \"openai\"\n\
         base_url = \"{}/v1\"\napi_key_env = \"TEST_TLS_OPENAI_KEY\"\n",
        tls_section(&cert, &key, ""),
        mock.base_url()
    );
    let c = Collector::start_full(&config, &[], &[("TEST_TLS_OPENAI_KEY", "sk-test")]);
    let client = https_client(&ca, None);

    // The Rust exporter, over gRPC and over HTTP/protobuf.
    export_with_rust_sdk(&ca, &https(c.grpc), Protocol::Grpc, "tls-grpc").await;
    export_with_rust_sdk(&ca, &https(c.http), Protocol::HttpBinary, "tls-http").await;
    let grpc_row = wait_project(&client, &c, "tls-grpc").await;
    let http_row = wait_project(&client, &c, "tls-http").await;
    for row in [&grpc_row, &http_row] {
        assert_eq!(row["request_model"], "gpt-4o-mini", "{row}");
        assert_eq!(row["input_tokens"], 500, "{row}");
    }

    // The API and the gateway answer over TLS.
    for addr in [c.api, c.gateway.unwrap()] {
        let r = client
            .get(format!("{}/healthz", https(addr)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{addr}");
    }

    // Plaintext to each TLS port: the client gets an error.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = call_request(1, "plaintext").encode_to_vec();
    let sent = plain
        .post(format!("http://{}/v1/traces", c.http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await;
    assert!(sent.is_err(), "plaintext HTTP was answered: {sent:?}");
    let sent = plain.get(format!("http://{}/healthz", c.api)).send().await;
    assert!(sent.is_err(), "plaintext HTTP was answered: {sent:?}");
    let exported = match TraceServiceClient::connect(format!("http://{}", c.grpc)).await {
        Ok(mut grpc) => grpc
            .export(call_request(2, "plaintext"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(exported.is_err(), "plaintext gRPC was answered");

    // ... is counted, and the collector keeps serving over TLS.
    let metrics = client
        .get(format!("{}/metrics", https(c.api)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for listener in ["otlp_http", "api", "otlp_grpc"] {
        assert!(
            closed(&metrics, listener, "protocol_error") >= 1,
            "{listener}: no protocol_error counted:\n{metrics}"
        );
    }
    let r = client
        .post(format!("{}/v1/traces", https(c.http)))
        .header("content-type", "application/x-protobuf")
        .body(call_request(3, "after-plaintext").encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_project(&client, &c, "after-plaintext").await;
    let calls = reqwest::get(format!("{}/v1/calls", c.api_url())).await;
    assert!(calls.is_err(), "the API answered plaintext");
    assert!(
        !client
            .get(format!("{}/v1/calls?limit=1000", https(c.api)))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("\"plaintext\""),
        "a plaintext request was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_require_a_client_certificate_signed_by_the_client_ca() {
    let ca = TestCa::new("tollgate test CA");
    let (cert, key) = ca.write("server", &ca.server("tollgate"));
    let config = tls_section(
        &cert,
        &key,
        &format!("client_ca_file = \"{}\"", ca.ca_path().display()),
    );
    let c = Collector::start(&config);
    let agent = ca.client("agent-1");
    let stranger_ca = TestCa::new("another CA");
    let stranger = stranger_ca.client("agent-2");
    let post = |client: reqwest::Client, id: u64, project: &'static str| {
        let url = format!("{}/v1/traces", https(c.http));
        async move {
            client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(call_request(id, project).encode_to_vec())
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };

    // OTLP/HTTP: no certificate, or one of another CA: refused.
    let refused = post(https_client(&ca, None), 10, "mtls-none").await;
    assert!(
        refused.is_err(),
        "accepted without a certificate: {refused:?}"
    );
    let refused = post(https_client(&ca, Some(&stranger)), 11, "mtls-stranger").await;
    assert!(
        refused.is_err(),
        "accepted another CA's client: {refused:?}"
    );
    // Signed by the client CA: accepted.
    let accepted = post(https_client(&ca, Some(&agent)), 12, "mtls-http").await;
    assert_eq!(accepted.unwrap(), 200);

    // OTLP/gRPC, the same.
    let refused = match grpc_client(&ca, c.grpc, None).await {
        Ok(mut g) => g
            .export(call_request(13, "mtls-none"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(refused.is_err(), "gRPC accepted without a certificate");
    let mut grpc = grpc_client(&ca, c.grpc, Some(&agent)).await.unwrap();
    grpc.export(call_request(14, "mtls-grpc")).await.unwrap();

    // The API asks for no certificate.
    let api = https_client(&ca, None);
    wait_project(&api, &c, "mtls-http").await;
    wait_project(&api, &c, "mtls-grpc").await;
    let rows = api
        .get(format!("{}/v1/calls?limit=1000", https(c.api)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !rows.contains("mtls-none") && !rows.contains("mtls-stranger"),
        "{rows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let ca = TestCa::new("tollgate test CA");
    let first = ca.server("tollgate-1");
    let (cert, key) = ca.write("server", &first);
    let c = Collector::start(&tls_section(&cert, &key, "reload_interval = \"200ms\""));
    for addr in [c.api, c.http, c.grpc] {
        assert_eq!(served_certificate(&ca, addr).await, first.der, "{addr}");
    }

    // Renewed: new connections get the new certificate, on every listener.
    let second = ca.server("tollgate-2");
    ca.write("server", &second);
    wait_for("the renewed certificate", async || {
        served_certificate(&ca, c.api).await == second.der
    })
    .await;
    for addr in [c.http, c.grpc] {
        assert_eq!(served_certificate(&ca, addr).await, second.der, "{addr}");
    }
    assert!(
        c.stderr().contains("TLS certificate renewed"),
        "{}",
        c.stderr()
    );

    // A broken renewal keeps the last good certificate, warned about once.
    let warnings = |s: String| s.matches("cannot be used; still serving").count();
    let before = warnings(c.stderr());
    write_replacing(
        &cert,
        "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(served_certificate(&ca, c.api).await, second.der);
    assert_eq!(warnings(c.stderr()), before + 1, "{}", c.stderr());

    // Mended: served again.
    let third = ca.server("tollgate-3");
    ca.write("server", &third);
    wait_for("the mended certificate", async || {
        served_certificate(&ca, c.api).await == third.der
    })
    .await;
}

/// `tollgate serve` with `toml`: its exit code and stderr.
fn serve_fails(dir: &Path, toml: &str) -> (Option<i32>, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn a_wrong_tls_section_stops_start_up_with_one_line_naming_the_field() {
    let ca = TestCa::new("tollgate test CA");
    let (cert, key) = ca.write("server", &ca.server("tollgate"));
    let (_, other_key) = ca.write("other", &ca.server("other"));
    let missing = ca.dir.path().join("missing.crt");
    let cases = [
        (
            format!("[tls]\ncert_file = \"{}\"\n", cert.display()),
            "`tls.key_file`: must be set with tls.cert_file",
        ),
        (
            format!("[tls]\nkey_file = \"{}\"\n", key.display()),
            "`tls.cert_file`: must be set with tls.key_file",
        ),
        (
            tls_section(&missing, &key, ""),
            "`tls.cert_file`: cannot read",
        ),
        (
            tls_section(&cert, &other_key, ""),
            "`tls.key_file`: the key in",
        ),
        (
            tls_section(
                &cert,
                &key,
                &format!("client_ca_file = \"{}\"", missing.display()),
            ),
            "`tls.client_ca_file`: cannot read",
        ),
        (
            format!("[tls]\nca_file = \"{}\"\n", key.display()),
            "`tls.ca_file`:",
        ),
    ];
    for (toml, expected) in cases {
        let (code, stderr) = serve_fails(ca.dir.path(), &toml);
        assert_eq!(code, Some(2), "{toml}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{toml}: {stderr}");
        assert!(stderr.contains(expected), "{toml}: {stderr}");
    }
}

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
                "{TEST}: Python SDK part skipped (run scripts/test, or set TOLLGATE_TEST_SDK_PYTHON to `tests/python-sdk/launch.sh python`)"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_exporter_sends_over_tls_configured_by_env_alone() {
    let Some(python) = sdk_python() else {
        return;
    };
    let ca = TestCa::new("tollgate test CA");
    let (cert, key) = ca.write("server", &ca.server("tollgate"));
    // Keys required: the exporter sends an `ingest` key of org acme.
    const AGENT_KEY: &str = "tg-python-exporter-key-0123456789abcdef";
    let c = Collector::start(&format!(
        "{}\n[auth]\nmode = \"keys\"\n[[auth.keys]]\nname = \"agents\"\n\
         roles = [\"ingest\", \"read\"]\norg = \"acme\"\nsecret = \"{AGENT_KEY}\"\n",
        tls_section(&cert, &key, "")
    ));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python-sdk/otlp_export.py");
    let api = https_client(&ca, None);
    let export = |protocol: &str, addr, project: &str, key: &str| {
        Command::new(&python)
            .arg(&script)
            .arg(project)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", https(addr))
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.ca_path())
            .env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("authorization=Bearer%20{key}"),
            )
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")
            // `requests` lets these replace the exporter's own CA file
            // (psf/requests#3829); an exporter run by hand has neither.
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .unwrap_or_else(|e| panic!("{TEST}: cannot run {python}: {e}"))
    };
    for (protocol, addr, project) in [
        ("grpc", c.grpc, "python-grpc"),
        ("http/protobuf", c.http, "python-http"),
    ] {
        // A wrong key: the export fails (401 / UNAUTHENTICATED).
        let refused = export(protocol, addr, project, "tg-not-a-key-0123456789abcdef");
        assert!(
            !refused.status.success(),
            "{protocol}: a wrong key was accepted"
        );
        let out = export(protocol, addr, project, AGENT_KEY);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{protocol}: otlp_export.py failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        let sent: Value = serde_json::from_str(stdout.trim()).unwrap();
        let row = wait_project_with(&api, &c, project, Some(AGENT_KEY)).await;
        assert_eq!(row["org"], "acme", "{protocol}: {row}");
        assert_eq!(
            row["trace_id"], sent["trace_id"],
            "{protocol}: {row} {sent}"
        );
        assert_eq!(row["span_id"], sent["span_id"], "{protocol}: {row} {sent}");
        assert_eq!(row["input_tokens"], 1200, "{protocol}: {row}");
        assert_eq!(row["output_tokens"], 300, "{protocol}: {row}");
    }
}

/// A local webhook receiver (plaintext; put behind a TLS front): every JSON
/// body POSTed to it.
async fn webhook_sink() -> (SocketAddr, Arc<std::sync::Mutex<Vec<Value>>>) {
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_connections_trust_the_extra_ca_of_tls_ca_file() {
    // A provider and a webhook reachable only over TLS, with certificates
    // of a private CA.
    let ca = TestCa::new("private upstream CA");
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let provider = support::certs::tls_front(&ca, mock.addr()).await;
    let (hook, bodies) = webhook_sink().await;
    let hook = support::certs::tls_front(&ca, hook).await;
    let config = |ca_file: &str| {
        format!(
            "[tls]\n{ca_file}\n\
             [[alerts.webhooks]]\nname = \"ops\"\nurl = \"https://localhost:{}/hook\"\n\
             [[rules]]\nid = \"tiny\"\ntype = \"budget\"\nmetric = \"tokens\"\nlimit = 10\n\
             scope = [\"project\"]\nwindow = \"day\"\naction = \"alert\"\n\
             [gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n\
             [[gateway.providers]]\nname = \"openai\"\nkind = \"openai\"\n\
             base_url = \"https://localhost:{}/v1\"\napi_key_env = \"TEST_TLS_OPENAI_KEY\"\n\
             [admin]\ntoken = \"admin-token-for-tests-0123456789\"\n",
            hook.port(),
            provider.port()
        )
    };
    let call = async |c: &Collector| {
        let admin = reqwest::Client::new();
        let created: Value = admin
            .post(format!("{}/admin/v1/keys", c.api_url()))
            .bearer_auth("admin-token-for-tests-0123456789")
            .json(&serde_json::json!({"project": "tls-out"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = reqwest::Client::new()
            .post(format!("http://{}/v1/chat/completions", c.gateway.unwrap()))
            .bearer_auth(created["key"].as_str().unwrap())
            .json(&serde_json::json!({
                "model": "gpt-4o-mini",
                "max_tokens": 40,
                "messages": [{"role": "user", "content": "Hello over TLS."}],
            }))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    };

    // Without the CA the provider's certificate is not trusted: no call.
    let c = Collector::start_full(&config(""), &[], &[("TEST_TLS_OPENAI_KEY", "sk-test")]);
    assert_eq!(call(&c).await, 502);
    assert_eq!(mock.stats().total_requests, 0);
    drop(c);

    // With tls.ca_file: the call goes through, and its alert reaches the webhook.
    let ca_file = format!("ca_file = \"{}\"", ca.ca_path().display());
    let c = Collector::start_full(
        &config(&ca_file),
        &[],
        &[("TEST_TLS_OPENAI_KEY", "sk-test")],
    );
    assert_eq!(call(&c).await, 200);
    assert_eq!(mock.stats().total_requests, 1);
    wait_for("the alert delivered over TLS", async || {
        !bodies.lock().unwrap().is_empty()
    })
    .await;
    let alert = bodies.lock().unwrap()[0].to_string();
    assert!(alert.contains("\"tiny\""), "{alert}");
}
