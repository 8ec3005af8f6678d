//! The memory limiter: refuse new data before the process grows past its
//! ceiling, as the OpenTelemetry Collector's `memory_limiter` does.
//!
//! Two checks, both made before a request's body is read:
//!
//! - **Resident memory.** A sampler reads the process's resident set size
//!   every `check_interval`. Past the ceiling the limiter refuses; it
//!   accepts again once the process is back below the lower mark
//!   (`resume_below_percent` of the ceiling), so it does not flap.
//! - **Bytes in flight.** Resident memory lags: 500 exports of 4 MiB that
//!   arrive together would all pass a check made before any is read. Every
//!   request body therefore reserves what it will cost (its size plus what
//!   decoding it takes, [`DECODED_PER_BODY_BYTE`]) from a budget
//!   (`requests_percent` of the ceiling) before it is read, and gives it
//!   back when its answer is sent. A request that does not fit is refused
//!   at once (HTTP 503 + `Retry-After`, gRPC `RESOURCE_EXHAUSTED` with
//!   retry info).
//!
//! Refused data was never acknowledged: the sender retries it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::CancellationToken;

/// Bytes a decoded OTLP request takes in memory per byte of its protobuf
/// encoding (strings, attribute vectors and their headers): 1.9 to 4.1 on
/// the golden fixtures (`examples/decoded_size.rs`), rounded up for the
/// allocator's rounding and the rows made from it. Gzip-compressed bodies
/// reserve their decompressed limit.
pub const DECODED_PER_BODY_BYTE: u64 = 6;

/// Seconds a refused sender is told to wait.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The limiter's settings (see `[memory]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryLimits {
    /// Ceiling of resident memory, in bytes.
    pub limit_bytes: u64,
    /// Refusing stops below this many bytes.
    pub resume_bytes: u64,
    /// Budget of request bytes in flight (bodies and their decoding).
    pub requests_bytes: u64,
    /// How often resident memory is read.
    pub check_interval: Duration,
}

impl MemoryLimits {
    /// The default ceiling: 80 % of the memory this process may use (the
    /// cgroup's limit when one is set, else the machine's memory).
    pub fn default_limit_bytes() -> u64 {
        let machine = physical_memory_bytes().unwrap_or(4 << 30);
        let limit = cgroup_limit_bytes().map_or(machine, |c| c.min(machine));
        limit / 10 * 8
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryRefusal {
    /// Resident memory is over the ceiling.
    OverLimit,
    /// The request's bytes do not fit in the in-flight budget now.
    RequestsInFlight,
}

impl MemoryRefusal {
    /// A sentence for the sender.
    pub fn message(self) -> &'static str {
        match self {
            MemoryRefusal::OverLimit => {
                "the collector is over its memory limit (memory.limit_mib); retry later"
            }
            MemoryRefusal::RequestsInFlight => {
                "too many request bytes in flight for the collector's memory limit \
                 (memory.requests_percent); retry later"
            }
        }
    }
}

impl std::fmt::Display for MemoryRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for MemoryRefusal {}

/// Shared by every listener that takes data; cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: MemoryLimits,
    resident: AtomicU64,
    refusing: AtomicBool,
    in_flight: AtomicU64,
    refusals: [AtomicUsize; 2],
}

impl MemoryLimiter {
    pub fn new(limits: MemoryLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                resident: AtomicU64::new(resident_bytes().unwrap_or(0)),
                refusing: AtomicBool::new(false),
                in_flight: AtomicU64::new(0),
                refusals: [AtomicUsize::new(0), AtomicUsize::new(0)],
            }),
        }
    }

    pub fn limits(&self) -> MemoryLimits {
        self.inner.limits
    }

    /// Reads resident memory every `check_interval` until `stop`.
    pub async fn sample(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.limits.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Some(rss) = resident_bytes() {
                        self.observe(rss);
                    }
                }
            }
        }
    }

    /// Takes one reading of resident memory.
    pub fn observe(&self, resident: u64) {
        let i = &self.inner;
        i.resident.store(resident, Ordering::Relaxed);
        let was = i.refusing.load(Ordering::Relaxed);
        let now = if was {
            resident >= i.limits.resume_bytes
        } else {
            resident >= i.limits.limit_bytes
        };
        if now != was {
            i.refusing.store(now, Ordering::Relaxed);
            if now {
                tracing::warn!(
                    resident_mib = resident >> 20,
                    limit_mib = i.limits.limit_bytes >> 20,
                    "memory limit reached: refusing new data"
                );
            } else {
                tracing::info!(
                    resident_mib = resident >> 20,
                    "memory back below the lower mark: accepting data again"
                );
            }
        }
    }

    /// Whether resident memory is over the ceiling (and not yet back below
    /// the lower mark).
    pub fn over_limit(&self) -> bool {
        self.inner.refusing.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` for a request in flight, or says why not. A single
    /// request larger than the whole budget is admitted when nothing else
    /// is in flight (it would otherwise never be), so the budget can be
    /// exceeded by at most one request.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, MemoryRefusal> {
        if self.over_limit() {
            self.count(MemoryRefusal::OverLimit);
            return Err(MemoryRefusal::OverLimit);
        }
        let i = &self.inner;
        let budget = i.limits.requests_bytes;
        let taken = i
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let after = held.saturating_add(bytes);
                (after <= budget || held == 0).then_some(after)
            });
        match taken {
            Ok(_) => Ok(Reservation {
                limiter: self.clone(),
                bytes: AtomicU64::new(bytes),
            }),
            Err(_) => {
                self.count(MemoryRefusal::RequestsInFlight);
                Err(MemoryRefusal::RequestsInFlight)
            }
        }
    }

    fn count(&self, why: MemoryRefusal) {
        let i = match why {
            MemoryRefusal::OverLimit => 0,
            MemoryRefusal::RequestsInFlight => 1,
        };
        self.inner.refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    /// What `/metrics` shows.
    pub fn stats(&self) -> MemoryStats {
        let i = &self.inner;
        MemoryStats {
            resident_bytes: i.resident.load(Ordering::Relaxed),
            limit_bytes: i.limits.limit_bytes,
            requests_in_flight_bytes: i.in_flight.load(Ordering::Relaxed),
            refusing: i.refusing.load(Ordering::Relaxed),
            refused_over_limit: i.refusals[0].load(Ordering::Relaxed) as u64,
            refused_in_flight: i.refusals[1].load(Ordering::Relaxed) as u64,
        }
    }
}

/// A snapshot of the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    pub resident_bytes: u64,
    pub limit_bytes: u64,
    pub requests_in_flight_bytes: u64,
    pub refusing: bool,
    pub refused_over_limit: u64,
    pub refused_in_flight: u64,
}

/// Bytes held for one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    limiter: MemoryLimiter,
    bytes: AtomicU64,
}

impl Reservation {
    /// Gives back what the request turned out not to need.
    pub fn shrink_to(&self, bytes: u64) {
        let held = self.bytes.load(Ordering::Relaxed);
        if bytes < held {
            self.bytes.store(bytes, Ordering::Relaxed);
            self.limiter
                .inner
                .in_flight
                .fetch_sub(held - bytes, Ordering::AcqRel);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let held = *self.bytes.get_mut();
        self.limiter
            .inner
            .in_flight
            .fetch_sub(held, Ordering::AcqRel);
    }
}

/// What a request body will cost once read and decoded, from its declared
/// length; `max_body` (its decompressed limit) when it declares none or is
/// compressed.
pub fn request_cost(content_length: Option<u64>, compressed: bool, max_body: u64) -> u64 {
    let body = match content_length {
        Some(n) if !compressed => n.min(max_body),
        Some(n) => n.min(max_body).saturating_add(max_body),
        None => max_body,
    };
    body.saturating_mul(1 + DECODED_PER_BODY_BYTE)
}

/// A gRPC request body that reserves its message's cost from the limiter
/// once the 5-byte message prefix says how large the message is (gRPC
/// requests declare no length), and fails with `RESOURCE_EXHAUSTED` when it
/// does not fit, before the message is read.
pub struct GrpcMeteredBody<B> {
    inner: B,
    limiter: MemoryLimiter,
    max_message: u64,
    /// Bytes seen until the prefix was complete (then `None`).
    prefix: Option<Vec<u8>>,
    reservation: Arc<std::sync::OnceLock<Reservation>>,
}

impl<B> GrpcMeteredBody<B> {
    pub fn new(
        inner: B,
        limiter: MemoryLimiter,
        max_message: u64,
        reservation: Arc<std::sync::OnceLock<Reservation>>,
    ) -> Self {
        Self {
            inner,
            limiter,
            max_message,
            prefix: Some(Vec::with_capacity(5)),
            reservation,
        }
    }
}

impl<B> Body for GrpcMeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let (Some(prefix), Some(data)) = (&mut this.prefix, frame.data_ref()) {
            let mut chunk = data.clone();
            while prefix.len() < 5 && chunk.has_remaining() {
                prefix.push(chunk.get_u8());
            }
            if prefix.len() == 5 {
                let compressed = prefix[0] == 1;
                let len = u64::from(u32::from_be_bytes([
                    prefix[1], prefix[2], prefix[3], prefix[4],
                ]));
                this.prefix = None;
                let cost = request_cost(Some(len), compressed, this.max_message);
                match this.limiter.reserve(cost) {
                    Ok(r) => {
                        let _ = this.reservation.set(r);
                    }
                    Err(why) => {
                        let status = <tonic::Status as tonic_types::StatusExt>::with_error_details(
                            tonic::Code::ResourceExhausted,
                            why.message(),
                            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(
                                RETRY_AFTER_SECS,
                            ))),
                        );
                        return Poll::Ready(Some(Err(Box::new(status))));
                    }
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a refused request is answered (each listener speaks its own dialect).
pub type Refuse = fn(&http::request::Parts, MemoryRefusal) -> axum::response::Response;

/// Puts `router`'s request bodies under the limiter: each request reserves
/// its cost before its body is read (its declared length, else `max_body`),
/// or is answered by `refuse` at once. The body of a refused HTTP/1.1
/// request is read and dropped first (up to `max_body`, at no memory cost)
/// so the client reads the answer instead of a reset connection.
pub fn admit_http(
    router: axum::Router,
    limiter: MemoryLimiter,
    max_body: u64,
    refuse: Refuse,
) -> axum::Router {
    let gate = HttpGate {
        limiter,
        max_body,
        refuse,
    };
    router.layer(axum::middleware::from_fn_with_state(
        gate,
        admit_http_request,
    ))
}

#[derive(Clone)]
struct HttpGate {
    limiter: MemoryLimiter,
    max_body: u64,
    refuse: Refuse,
}

async fn admit_http_request(
    axum::extract::State(gate): axum::extract::State<HttpGate>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let headers = req.headers();
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let compressed = headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    // Requests without a body (GET, HEAD) cost nothing.
    let cost = if declared == Some(0) || (declared.is_none() && bodiless(req.method())) {
        0
    } else {
        request_cost(declared, compressed, gate.max_body)
    };
    match gate.limiter.reserve(cost) {
        Ok(held) => {
            let answer = next.run(req).await;
            drop(held);
            answer
        }
        Err(why) => {
            let (parts, body) = req.into_parts();
            if parts.version < http::Version::HTTP_2 {
                drain(body, gate.max_body).await;
            }
            (gate.refuse)(&parts, why)
        }
    }
}

fn bodiless(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::DELETE
    )
}

/// Reads and drops up to `max` bytes of `body`.
async fn drain(body: axum::body::Body, max: u64) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > max {
                return;
            }
        }
    }
}

/// Puts a gRPC router's request messages under the limiter: refused at
/// once while resident memory is over the ceiling, else each message
/// reserves its cost once its length prefix arrives ([`GrpcMeteredBody`]).
pub fn admit_grpc(router: axum::Router, limiter: MemoryLimiter, max_message: u64) -> axum::Router {
    let gate = GrpcGate {
        limiter,
        max_message,
    };
    router.layer(axum::middleware::from_fn_with_state(
        gate,
        admit_grpc_request,
    ))
}

#[derive(Clone)]
struct GrpcGate {
    limiter: MemoryLimiter,
    max_message: u64,
}

async fn admit_grpc_request(
    axum::extract::State(gate): axum::extract::State<GrpcGate>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if gate.limiter.over_limit() {
        gate.limiter.count(MemoryRefusal::OverLimit);
        let status = <tonic::Status as tonic_types::StatusExt>::with_error_details(
            tonic::Code::ResourceExhausted,
            MemoryRefusal::OverLimit.message(),
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(RETRY_AFTER_SECS))),
        );
        return status.into_http();
    }
    let held = Arc::new(std::sync::OnceLock::new());
    let req = req.map(|body| {
        axum::body::Body::new(GrpcMeteredBody::new(
            body,
            gate.limiter.clone(),
            gate.max_message,
            Arc::clone(&held),
        ))
    });
    let answer = next.run(req).await;
    drop(held);
    answer
}

/// Resident set size of this process, from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Total memory of the machine, from `/proc/meminfo`.
fn physical_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The memory limit of this process's cgroup (v2, then v1), if any.
fn cgroup_limit_bytes() -> Option<u64> {
    for path in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Ok(text) = std::fs::read_to_string(path) {
            let text = text.trim();
            if let Ok(n) = text.parse::<u64>() {
                // cgroup v1 writes "no limit" as a huge number.
                if n < (1 << 60) {
                    return Some(n);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limit: u64, budget: u64) -> MemoryLimiter {
        MemoryLimiter::new(MemoryLimits {
            limit_bytes: limit,
            resume_bytes: limit / 10 * 9,
            requests_bytes: budget,
            check_interval: Duration::from_millis(100),
        })
    }

    #[test]
    fn refuses_over_the_ceiling_until_below_the_lower_mark() {
        let l = limiter(1_000, 10_000);
        l.observe(999);
        assert!(l.reserve(1).is_ok());
        l.observe(1_000);
        assert_eq!(l.reserve(1).unwrap_err(), MemoryRefusal::OverLimit);
        // Between the marks: still refusing.
        l.observe(950);
        assert!(l.over_limit());
        l.observe(899);
        assert!(!l.over_limit());
        assert!(l.reserve(1).is_ok());
        assert_eq!(l.stats().refused_over_limit, 1);
    }

    #[test]
    fn the_budget_holds_bytes_until_requests_end() {
        let l = limiter(u64::MAX, 100);
        let a = l.reserve(60).unwrap();
        assert_eq!(l.reserve(50).unwrap_err(), MemoryRefusal::RequestsInFlight);
        let b = l.reserve(40).unwrap();
        assert_eq!(l.stats().requests_in_flight_bytes, 100);
        a.shrink_to(10);
        assert_eq!(l.stats().requests_in_flight_bytes, 50);
        drop(a);
        drop(b);
        assert_eq!(l.stats().requests_in_flight_bytes, 0);
        // One request larger than the whole budget passes alone.
        let big = l.reserve(1_000).unwrap();
        assert!(l.reserve(1).is_err());
        drop(big);
        assert_eq!(l.stats().refused_in_flight, 2);
    }

    #[test]
    fn request_cost_counts_decoding_and_compression() {
        let per = 1 + DECODED_PER_BODY_BYTE;
        assert_eq!(request_cost(Some(100), false, 1_000), 100 * per);
        assert_eq!(request_cost(None, false, 1_000), 1_000 * per);
        assert_eq!(request_cost(Some(100), true, 1_000), 1_100 * per);
        assert_eq!(request_cost(Some(u64::MAX), false, 1_000), 1_000 * per);
    }

    #[test]
    fn resident_memory_and_the_default_ceiling_are_read() {
        assert!(resident_bytes().unwrap() > 1 << 20);
        let limit = MemoryLimits::default_limit_bytes();
        assert!(limit > 64 << 20, "{limit}");
    }

    #[tokio::test]
    async fn a_grpc_body_reserves_its_message_or_fails_before_it_is_read() {
        use http_body_util::BodyExt;
        let message = |len: u32| {
            let mut b = vec![0u8];
            b.extend_from_slice(&len.to_be_bytes());
            b.extend(std::iter::repeat_n(7u8, len as usize));
            Bytes::from(b)
        };
        let l = limiter(u64::MAX, 70_000);
        let held = Arc::new(std::sync::OnceLock::new());
        let body = GrpcMeteredBody::new(
            http_body_util::Full::new(message(1_000)),
            l.clone(),
            4 << 20,
            Arc::clone(&held),
        );
        let read = body.collect().await.unwrap().to_bytes();
        assert_eq!(read.len(), 1_005);
        assert_eq!(
            l.stats().requests_in_flight_bytes,
            1_000 * (1 + DECODED_PER_BODY_BYTE)
        );
        // The next does not fit while the first is held.
        let refused = GrpcMeteredBody::new(
            http_body_util::Full::new(message(10_000)),
            l.clone(),
            4 << 20,
            Arc::new(std::sync::OnceLock::new()),
        );
        let err = refused.collect().await.unwrap_err();
        let status = err.downcast_ref::<tonic::Status>().unwrap();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        drop(held);
        assert_eq!(l.stats().requests_in_flight_bytes, 0);
    }
}
