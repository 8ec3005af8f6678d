//! Hardened under abuse, against the real binary: half-open connections
//! on every port, HTTP/2 stream floods, and more request bytes at once
//! than the memory limit allows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prost::Message;
use support::{Collector, otlp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_mock_provider::{MockConfig, MockProvider};

/// These tests measure latency and memory: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn gateway_config(mock: &MockProvider) -> String {
    format!(
        "[gateway]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\n\
         [[gateway.providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         api_key_env = \"TEST_GATEWAY_OPENAI_KEY\"\n",
        mock.base_url()
    )
}

/// One small OTLP/HTTP export; returns how long it took.
async fn export(client: &reqwest::Client, c: &Collector, id: u64) -> Duration {
    let span = otlp::span(
        id.to_be_bytes().to_vec(),
        vec![
            otlp::string("gen_ai.request.model", "gpt-4o-mini"),
            otlp::int("gen_ai.usage.input_tokens", 10),
        ],
    );
    let body = otlp::request(vec![span]).encode_to_vec();
    let started = Instant::now();
    let r = client
        .post(format!("{}/v1/traces", c.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    started.elapsed()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Opens `n` connections to `addr`, each sending part of a request head;
/// each comes with the moment it was opened.
async fn half_open(addr: SocketAddr, n: usize) -> Vec<(Instant, TcpStream)> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Ty")
            .await
            .unwrap();
        conns.push((Instant::now(), s));
    }
    conns
}

/// Whether the server closed `s` (end of file or reset), waiting up to `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // An answer (408, 400) before the close: keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_are_closed_within_the_header_timeout() {
    let _serial = SERIAL.lock().await;
    const PER_PORT: usize = 2_000;
    // The default header timeout.
    let header_timeout = Duration::from_secs(10);
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let c = Collector::start_full(
        &gateway_config(&mock),
        &[],
        &[("TEST_GATEWAY_OPENAI_KEY", "sk-test")],
    );
    let client = reqwest::Client::new();

    // The same client without the attack, first.
    let mut quiet = Vec::new();
    for i in 0..1_000 {
        quiet.push(export(&client, &c, i + 1).await);
    }

    let ports = [c.grpc, c.http, c.api, c.gateway.unwrap()];
    let attackers: Vec<_> = ports
        .iter()
        .map(|&addr| tokio::spawn(half_open(addr, PER_PORT)))
        .collect();

    let mut attacks = Vec::new();
    for attacker in attackers {
        attacks.push(attacker.await.unwrap());
    }
    let last_opened = attacks.iter().flatten().map(|(at, _)| *at).max().unwrap();
    assert!(
        last_opened.elapsed() < header_timeout / 2,
        "opening the connections took too long for this test"
    );

    // The normal client keeps going while the attack holds its sockets.
    let mut loud = Vec::new();
    for i in 0..1_000 {
        loud.push(export(&client, &c, 10_000 + i).await);
    }

    // Every half-open connection is closed within the header timeout of
    // its opening (plus two seconds for the watchdog's graceful close and
    // this test's own reading).
    let slack = Duration::from_secs(2);
    let mut still_open = 0;
    for attack in attacks {
        for (opened, mut s) in attack {
            let left = (opened + header_timeout + slack).saturating_duration_since(Instant::now());
            if !closed(&mut s, left.max(Duration::from_millis(1))).await {
                still_open += 1;
            }
        }
    }
    assert_eq!(
        still_open,
        0,
        "{still_open} half-open connections were still open {:?} after they opened",
        header_timeout + slack
    );

    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "median without the attack {:?}, with {:?}",
        median(&quiet),
        median(&loud)
    );
    let (quiet, loud) = (p99(quiet), p99(loud));
    assert!(
        loud <= quiet * 2 + Duration::from_millis(2),
        "p99 of a normal client: {loud:?} under attack against {quiet:?} without"
    );
    eprintln!("p99 without the attack {quiet:?}, with {loud:?}");

    let metrics = c.metrics().await;
    for listener in ["otlp_grpc", "otlp_http", "api", "gateway"] {
        let closed = format!(
            "tollgate_listener_connections_closed_total{{listener=\"{listener}\",reason=\"header_timeout\"}}"
        );
        let n: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&closed))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{closed} missing from /metrics"));
        assert!(n >= PER_PORT as f64, "{closed} = {n}");
    }
    assert_eq!(c.calls(5_000).await.len(), 2_000);
}

/// HPACK: a literal header field without indexing, new name, no Huffman.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    out.push(u8::try_from(name.len()).unwrap());
    out.extend_from_slice(name.as_bytes());
    out.push(u8::try_from(value.len()).unwrap());
    out.extend_from_slice(value.as_bytes());
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[tokio::test]
async fn streams_past_the_limit_are_refused_and_the_server_stays_healthy() {
    let _serial = SERIAL.lock().await;
    let c = Collector::start("[listeners]\nhttp2_max_concurrent_streams = 4\n");
    let mut s = TcpStream::connect(c.grpc).await.unwrap();
    // A client that ignores the server's SETTINGS: 20 streams opened at
    // once, none finished (no END_STREAM: each waits for its body).
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, 0x4, 0, 0, &[]);
    let mut head = vec![0x83, 0x86]; // :method POST, :scheme http
    literal(
        &mut head,
        ":path",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    literal(&mut head, ":authority", "localhost");
    literal(&mut head, "content-type", "application/grpc");
    literal(&mut head, "te", "trailers");
    for i in 0..20u32 {
        frame(&mut out, 0x1, 0x4, 1 + 2 * i, &head);
    }
    s.write_all(&out).await.unwrap();

    // Read frames for a while: RST_STREAM(REFUSED_STREAM = 7) for the
    // streams past the limit.
    let mut refused = std::collections::BTreeSet::new();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused.len() < 16 && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            if kind == 0x3 && len == 4 {
                let code = u32::from_be_bytes([buf[9], buf[10], buf[11], buf[12]]);
                if code == 7 {
                    refused.insert(stream);
                }
            }
            buf.drain(..9 + len);
        }
    }
    assert_eq!(
        refused.len(),
        16,
        "streams refused with REFUSED_STREAM: {refused:?} (4 of 20 allowed)"
    );
    assert!(refused.iter().all(|&id| id > 7), "{refused:?}");

    // The server is healthy: the normal path still works.
    assert_eq!(c.get("/readyz").await.0, 200);
    let client = reqwest::Client::new();
    export(&client, &c, 1).await;
    assert_eq!(c.wait_calls(1).await.len(), 1);
}

/// A valid OTLP request of `size` bytes or a little more: one model call
/// and one large attribute (not stored) that pads it. The padding is one
/// buffer shared by every request, so 500 of them do not take 2 GiB here.
fn padded_request(id: u64, padding: &bytes::Bytes) -> (u64, reqwest::Body) {
    let marker = "\u{1}".repeat(padding.len());
    let span = otlp::span(
        id.to_be_bytes().to_vec(),
        vec![
            otlp::string("gen_ai.request.model", "gpt-4o-mini"),
            otlp::int("gen_ai.usage.input_tokens", 10),
            otlp::string("http.request.body", &marker),
        ],
    );
    let encoded = otlp::request(vec![span]).encode_to_vec();
    // The run of marker bytes may begin one byte early (the string's
    // length prefix can end in 0x01): the string is the run's last bytes.
    let run = encoded.windows(16).position(|w| w == [1u8; 16]).unwrap();
    let run_end = run + encoded[run..].iter().take_while(|&&b| b == 1).count();
    let at = run_end - marker.len();
    let head = bytes::Bytes::copy_from_slice(&encoded[..at]);
    let tail = bytes::Bytes::copy_from_slice(&encoded[at + marker.len()..]);
    let len = encoded.len() as u64;
    let parts: Vec<Result<bytes::Bytes, std::io::Error>> =
        vec![Ok(head), Ok(padding.clone()), Ok(tail)];
    (
        len,
        reqwest::Body::wrap_stream(futures::stream::iter(parts)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_request_bytes_than_the_memory_limit_are_refused_before_they_are_read() {
    let _serial = SERIAL.lock().await;
    const REQUESTS: u64 = 500;
    const LIMIT_MIB: u64 = 256;
    // Refused bodies are read and dropped: 2 GB in all, which a busy
    // machine may take longer to read than the default body timeout.
    let c = Collector::start(&format!(
        "[memory]\nlimit_mib = {LIMIT_MIB}\n[listeners]\nbody_read_timeout = \"300s\"\n"
    ));
    // Just under the default 4 MiB body limit.
    let padding = bytes::Bytes::from(vec![b'x'; (4 << 20) - 1024]);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/v1/traces", c.http_url());
    // Every request is built first, then all are sent at once.
    let bodies: Vec<_> = (1..=REQUESTS)
        .map(|id| (id, padded_request(id, &padding)))
        .collect();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(bodies.len()));
    let mut sends = tokio::task::JoinSet::new();
    for (id, (len, body)) in bodies {
        let client = client.clone();
        let url = url.clone();
        let start = std::sync::Arc::clone(&start);
        sends.spawn(async move {
            start.wait().await;
            let r = client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .header("content-length", len)
                .body(body)
                .send()
                .await;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r.headers().get("retry-after").is_some();
                    let text = r.text().await.unwrap_or_default();
                    (id, status, retry_after, text)
                }
                Err(e) => (id, 0, false, e.to_string()),
            }
        });
    }
    let mut acknowledged = 0;
    let mut refused = 0;
    while let Some(done) = sends.join_next().await {
        let (id, status, retry_after, text) = done.unwrap();
        match status {
            200 => acknowledged += 1,
            503 => {
                assert!(retry_after, "503 without Retry-After for request {id}");
                refused += 1;
            }
            other => panic!("request {id}: status {other}: {text}"),
        }
    }
    assert!(
        acknowledged > 0 && refused > 0,
        "{acknowledged} acknowledged, {refused} refused\n{}",
        c.metrics().await
    );
    let peak_mib = c.peak_rss_kib() / 1024;
    assert!(
        peak_mib <= LIMIT_MIB * 11 / 10,
        "peak resident memory {peak_mib} MiB against a {LIMIT_MIB} MiB limit"
    );
    eprintln!("{acknowledged} acknowledged, {refused} refused, peak {peak_mib} MiB");
    // Everything acknowledged is stored.
    assert_eq!(c.wait_calls(acknowledged).await.len(), acknowledged);
    let metrics = c.metrics().await;
    assert!(
        metrics.contains("tollgate_memory_refused_in_flight_total"),
        "{metrics}"
    );
}
