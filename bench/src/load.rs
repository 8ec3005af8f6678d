//! The load generator: N requests in flight over OTLP/gRPC or OTLP/HTTP.
//!
//! gRPC uses tonic channels (one HTTP/2 connection each; an SDK exporter
//! has one) and a pass-through codec, so the pre-encoded request is sent as
//! is; senders are spread round-robin over the connections.
//! HTTP uses a reqwest HTTP/1.1 pool (one connection per in-flight request).
//! With keys and TLS on (`tollgate-secure`), connections are TLS trusting
//! the run's CA (gRPC: ALPN h2) and every request carries the ingest key
//! (`authorization: Bearer`: gRPC metadata made once, or a default HTTP
//! header); without them nothing is added to a request.
//! A refusal (gRPC RESOURCE_EXHAUSTED, or UNAVAILABLE with a retry delay;
//! HTTP 503/429: a full queue, or Kafka slow to acknowledge) is
//! counted, not treated as throughput: the sender backs off briefly and
//! resends the same request, as an OTLP exporter retries. Any other error
//! stops the run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::secure::ClientAuth;
use crate::spans::RequestPool;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "gRPC",
            Transport::Http => "HTTP protobuf",
        }
    }
}

/// Sends pre-encoded bytes as the gRPC message; decodes the OTLP response.
#[derive(Debug, Clone, Copy, Default)]
struct PassThroughCodec;

#[derive(Debug, Clone, Copy, Default)]
struct PassThroughEncoder;

#[derive(Debug, Clone, Copy, Default)]
struct ResponseDecoder;

impl Codec for PassThroughCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PassThroughEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PassThroughEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl Encoder for PassThroughEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        let n = src.remaining();
        ExportTraceServiceResponse::decode(src.copy_to_bytes(n))
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

/// A connected exporter.
#[derive(Debug, Clone)]
pub enum Exporter {
    Grpc {
        channels: Vec<tonic::client::Grpc<Channel>>,
        /// `Bearer <key>`, when the server needs a key.
        authorization: Option<AsciiMetadataValue>,
    },
    Http {
        client: reqwest::Client,
        url: Arc<str>,
    },
}

/// What the server said to one request.
enum Answer {
    /// Accepted; spans the server rejected as invalid (OTLP partial success).
    Accepted { rejected_spans: u64 },
    /// Queue full, or Kafka did not acknowledge in time: retry later.
    Refused,
}

fn rejected(response: &ExportTraceServiceResponse) -> u64 {
    response
        .partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

/// RESOURCE_EXHAUSTED, or UNAVAILABLE with a retry delay (the Kafka ingest
/// role's answer). A bare UNAVAILABLE is what tonic reports for a dead
/// connection: that stops the run.
fn is_refusal(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::ResourceExhausted => true,
        tonic::Code::Unavailable => !status.details().is_empty(),
        _ => false,
    }
}

impl Exporter {
    /// Connects to `addr`; over TLS with the key of `auth` when given.
    pub async fn connect(
        transport: Transport,
        addr: SocketAddr,
        concurrency: usize,
        grpc_connections: usize,
        auth: Option<&ClientAuth>,
    ) -> anyhow::Result<Self> {
        let scheme = if auth.is_some() { "https" } else { "http" };
        Ok(match transport {
            Transport::Grpc => {
                let mut channels = Vec::with_capacity(grpc_connections);
                for _ in 0..grpc_connections.max(1) {
                    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
                        .tcp_nodelay(true)
                        .connect_timeout(Duration::from_secs(5));
                    let channel = match auth {
                        None => endpoint.connect().await,
                        Some(auth) => {
                            endpoint
                                .connect_with_connector(auth.grpc_connector()?)
                                .await
                        }
                    }
                    .with_context(|| format!("cannot connect to OTLP/gRPC at {scheme}://{addr}"))?;
                    channels.push(tonic::client::Grpc::new(channel));
                }
                Exporter::Grpc {
                    channels,
                    authorization: auth.map(ClientAuth::grpc_metadata).transpose()?,
                }
            }
            Transport::Http => {
                let builder = reqwest::Client::builder()
                    .http1_only()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(concurrency)
                    .no_proxy();
                Exporter::Http {
                    client: match auth {
                        None => builder.build()?,
                        Some(auth) => auth.https_client(builder)?,
                    },
                    url: format!("{scheme}://{addr}/v1/traces").into(),
                }
            }
        })
    }

    /// The exporter sender number `n` uses.
    fn for_sender(&self, n: usize) -> Self {
        match self {
            Exporter::Grpc {
                channels,
                authorization,
            } => Exporter::Grpc {
                channels: vec![channels[n % channels.len()].clone()],
                authorization: authorization.clone(),
            },
            http => http.clone(),
        }
    }

    async fn send(&mut self, body: Bytes) -> anyhow::Result<Answer> {
        match self {
            Exporter::Grpc {
                channels,
                authorization,
            } => {
                let grpc = channels.first_mut().context("no gRPC connection")?;
                grpc.ready().await.context("gRPC channel not ready")?;
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
                let mut request = tonic::Request::new(body);
                if let Some(value) = authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", value.clone());
                }
                match grpc.unary(request, path, PassThroughCodec).await {
                    Ok(response) => Ok(Answer::Accepted {
                        rejected_spans: rejected(response.get_ref()),
                    }),
                    Err(status) if is_refusal(&status) => Ok(Answer::Refused),
                    Err(status) => bail!("gRPC export failed: {status}"),
                }
            }
            Exporter::Http { client, url } => {
                let response = client
                    .post(&**url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await
                    .context("HTTP export failed")?;
                let status = response.status();
                // Read the whole body so the connection goes back to the pool.
                let bytes = response.bytes().await.context("HTTP export failed")?;
                match status.as_u16() {
                    200 => Ok(Answer::Accepted {
                        rejected_spans: ExportTraceServiceResponse::decode(bytes)
                            .map(|r| rejected(&r))
                            .unwrap_or(0),
                    }),
                    429 | 503 => Ok(Answer::Refused),
                    _ => bail!(
                        "HTTP export answered {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    ),
                }
            }
        }
    }
}

/// One load phase: requests `first_seq..first_seq + requests`.
#[derive(Debug, Clone, Copy)]
pub struct LoadPlan {
    pub first_seq: u64,
    pub requests: u64,
    pub concurrency: usize,
    /// Wait after a refusal, doubled on each refusal of the same request up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Senders stop taking new requests after this instant.
    pub deadline: Instant,
}

/// What a load phase achieved.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOutcome {
    /// Spans in requests the server acknowledged.
    pub accepted_spans: u64,
    pub accepted_requests: u64,
    /// Requests refused because the server's queue was full (each resent).
    pub refused_requests: u64,
    /// Spans acknowledged but reported invalid (OTLP partial success).
    pub rejected_spans: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// The deadline stopped the phase before every request was sent.
    pub timed_out: bool,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Sends the plan's requests with `concurrency` in flight; returns when all are answered.
pub async fn drive(
    exporter: &Exporter,
    pool: &Arc<RequestPool>,
    plan: LoadPlan,
) -> anyhow::Result<LoadOutcome> {
    let next = Arc::new(AtomicU64::new(plan.first_seq));
    let end = plan.first_seq + plan.requests;
    let spans = pool.spans_per_request() as u64;
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for n in 0..plan.concurrency.max(1) {
        let mut exporter = exporter.for_sender(n);
        let pool = Arc::clone(pool);
        let next = Arc::clone(&next);
        senders.spawn(async move {
            let mut out = LoadOutcome::default();
            loop {
                if Instant::now() >= plan.deadline {
                    out.timed_out = true;
                    break;
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= end {
                    break;
                }
                let body = pool.render(seq, unix_nanos());
                let mut backoff = plan.first_backoff;
                loop {
                    match exporter.send(body.clone()).await? {
                        Answer::Accepted { rejected_spans } => {
                            out.accepted_requests += 1;
                            out.accepted_spans += spans - rejected_spans.min(spans);
                            out.rejected_spans += rejected_spans;
                            break;
                        }
                        Answer::Refused => {
                            out.refused_requests += 1;
                            if Instant::now() >= plan.deadline {
                                out.timed_out = true;
                                return Ok(out);
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(plan.max_backoff);
                        }
                    }
                }
            }
            anyhow::Ok(out)
        });
    }
    let mut total = LoadOutcome::default();
    while let Some(joined) = senders.join_next().await {
        let out = joined??;
        total.accepted_spans += out.accepted_spans;
        total.accepted_requests += out.accepted_requests;
        total.refused_requests += out.refused_requests;
        total.rejected_spans += out.rejected_spans;
        total.timed_out |= out.timed_out;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retryable_answers_are_refusals() {
        use tonic::Code;
        assert!(is_refusal(&tonic::Status::resource_exhausted("full")));
        let with_retry = tonic::Status::with_details(
            Code::Unavailable,
            "Kafka did not acknowledge",
            Bytes::from_static(b"retry-info"),
        );
        assert!(is_refusal(&with_retry));
        // A dead connection, or a server shutting down.
        assert!(!is_refusal(&tonic::Status::unavailable("transport error")));
        assert!(!is_refusal(&tonic::Status::internal("bug")));
    }
}
