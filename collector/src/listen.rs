//! Serving HTTP on a listener with the limits every listener needs: a cap
//! on connections, a deadline for the first request and for each request
//! head, an idle timeout, a deadline for each request body, and HTTP/2's
//! stream limits and flood protections. The receivers, the API and the
//! gateway are all served here, so the rules are the same on every port.
//!
//! What closes a connection (each counted in `/metrics` by reason):
//!
//! - **Header timeout**: no complete request head `header_read_timeout`
//!   after the connection opened, or after the first byte of the next
//!   request on a kept-alive HTTP/1.1 connection (a client that sent part
//!   of its headers and stopped).
//! - **Idle timeout**: no request in flight and nothing received for
//!   `idle_timeout` (HTTP/2: a GOAWAY first).
//! - **Over the cap**: past `max_connections` open connections, a new one
//!   is accepted and closed at once.
//!
//! A request body not received within `body_read_timeout` of its head
//! fails (the handler answers 408, gRPC `DEADLINE_EXCEEDED`). HTTP/2
//! connections allow `http2_max_concurrent_streams` streams (more are
//! refused with `REFUSED_STREAM`), and the h2 protections (reset floods,
//! oversized or endless header blocks) close the connection of a peer that
//! abuses them.
//!
//! With `[tls]` every listener speaks TLS only. The handshake runs in the
//! connection's own task and must finish within `header_read_timeout` of
//! the connection opening (else it is closed as a header timeout; the
//! request head's deadline still counts from the opening). A handshake
//! that fails (plaintext sent to a TLS port, a client certificate missing
//! or not trusted) closes the connection as a protocol error.
//!
//! Each request carries the peer's address as
//! `axum::extract::ConnectInfo<SocketAddr>` in its extensions.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

pub use crate::config::ListenerLimits;
use crate::internal_events::{ConnectionClose, InternalEvents};

/// Which HTTP versions a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 and HTTP/2 (prior knowledge).
    Any,
    /// HTTP/2 only (gRPC).
    Http2Only,
}

/// One listener to serve.
pub struct Listener {
    pub tcp: TcpListener,
    /// Its name in logs and metrics (`otlp_grpc`, `otlp_http`, `api`, `gateway`).
    pub name: &'static str,
    pub protocols: Protocols,
    pub limits: ListenerLimits,
    /// TLS on this listener (see `crate::tls`); `None`: plaintext.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves `app` on `listener` until `shutdown`, then lets the requests in
/// flight finish (each connection is shut down gracefully) and returns
/// once every connection is closed.
pub async fn serve(
    listener: Listener,
    app: axum::Router,
    events: Arc<InternalEvents>,
    shutdown: CancellationToken,
) {
    let Listener {
        tcp,
        name,
        protocols,
        limits,
        tls,
    } = listener;
    let acceptor = tls.map(TlsAcceptor::from);
    let builder = Arc::new(builder(protocols, &limits));
    // A panic in a handler answers that request only (500, gRPC INTERNAL).
    let app = match protocols {
        Protocols::Http2Only => app.layer(CatchPanicLayer::custom(grpc_panic as PanicAnswer)),
        Protocols::Any => app.layer(CatchPanicLayer::custom(http_panic as PanicAnswer)),
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                if !is_connection_error(&e) {
                    tracing::warn!(listener = name, error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            events.connection_closed(name, ConnectionClose::OverCap);
            drop(stream);
            continue;
        };
        let opened = Instant::now();
        let _ = stream.set_nodelay(true);
        events.connection_opened(name);
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let app = app.clone();
        let events = Arc::clone(&events);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let opened = Opened { at: opened, peer };
            let why = match acceptor {
                None => connection(stream, opened, &builder, app, &limits, shutdown).await,
                Some(acceptor) => match handshake(&acceptor, stream, &limits, &shutdown).await {
                    Ok(tls) => connection(tls, opened, &builder, app, &limits, shutdown).await,
                    Err(why) => why,
                },
            };
            events.connection_closed(name, why);
            drop(slot);
        });
    }
    drop(tcp);
    connections.close();
    connections.wait().await;
}

type PanicAnswer = fn(Box<dyn std::any::Any + Send + 'static>) -> Response<Body>;

fn grpc_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a gRPC request handler panicked; the request was answered INTERNAL");
    tonic::Status::internal("internal error while handling the request").into_http()
}

fn http_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    tracing::error!("a request handler panicked; the request was answered 500");
    let mut r = Response::new(Body::from(
        r#"{"error":{"type":"internal_error","message":"internal error while handling the request"}}"#,
    ));
    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn builder(protocols: Protocols, limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // Head deadlines are kept by the connection's watchdog, which
        // (unlike hyper's) does not cut kept-alive connections between
        // requests at the header timeout.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8 * 1024));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.http2_max_pending_accept_reset_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    match protocols {
        Protocols::Any => b,
        Protocols::Http2Only => b.http2_only(),
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// What the watchdog knows of one connection.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Requests whose answer is not finished.
    in_flight: AtomicUsize,
    /// Requests started so far.
    requests: AtomicU64,
    /// Milliseconds after `opened` when the connection last became idle.
    idle_since: AtomicU64,
    /// Whether a byte arrived since then (a request head has begun).
    read_since_idle: AtomicBool,
    /// Milliseconds after `opened` of that first byte.
    first_read: AtomicU64,
    /// The last request was HTTP/2 (bytes between requests are pings and
    /// window updates, not a head).
    http2: AtomicBool,
}

impl Activity {
    fn millis(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn begin(&self, http2: bool) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.http2.store(http2, Ordering::Relaxed);
    }

    fn end(&self) {
        self.idle_since.store(self.millis(), Ordering::Relaxed);
        self.read_since_idle.store(false, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn read(&self) {
        if !self.read_since_idle.load(Ordering::Relaxed) {
            self.first_read.store(self.millis(), Ordering::Relaxed);
            self.read_since_idle.store(true, Ordering::Relaxed);
        }
    }

    /// When the connection must be closed if nothing changes, and why; or
    /// `None` while a request is in flight.
    fn deadline(&self, limits: &ListenerLimits) -> Option<(Instant, ConnectionClose)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |millis: u64, after: Duration| self.opened + Duration::from_millis(millis) + after;
        if self.requests.load(Ordering::Relaxed) == 0 {
            return Some((
                at(0, limits.header_read_timeout),
                ConnectionClose::HeaderTimeout,
            ));
        }
        let idle = at(self.idle_since.load(Ordering::Relaxed), limits.idle_timeout);
        if self.read_since_idle.load(Ordering::Relaxed) && !self.http2.load(Ordering::Relaxed) {
            let head = at(
                self.first_read.load(Ordering::Relaxed),
                limits.header_read_timeout,
            );
            if head < idle {
                return Some((head, ConnectionClose::HeaderTimeout));
            }
        }
        Some((idle, ConnectionClose::IdleTimeout))
    }
}

/// The TLS handshake of a new connection, within `header_read_timeout`;
/// or why the connection closed.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limits: &ListenerLimits,
    shutdown: &CancellationToken,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, ConnectionClose> {
    let accepted = tokio::select! {
        () = shutdown.cancelled() => return Err(ConnectionClose::Shutdown),
        accepted = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => accepted,
    };
    match accepted {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(handshake_failure(&e)),
        Err(_) => Err(ConnectionClose::HeaderTimeout),
    }
}

/// Why a handshake failed: rustls' own errors (not TLS, no or a bad
/// client certificate, no common protocol) are the peer's protocol errors.
fn handshake_failure(e: &std::io::Error) -> ConnectionClose {
    use std::io::ErrorKind::*;
    match e.kind() {
        InvalidData => {
            tracing::debug!(error = %e, "TLS handshake failed");
            ConnectionClose::ProtocolError
        }
        UnexpectedEof => ConnectionClose::Client,
        _ => ConnectionClose::Reset,
    }
}

/// When and from where a connection was accepted.
#[derive(Debug, Clone, Copy)]
struct Opened {
    at: Instant,
    peer: SocketAddr,
}

/// Serves one connection; returns why it closed.
async fn connection<S>(
    stream: S,
    opened: Opened,
    builder: &auto::Builder<TokioExecutor>,
    app: axum::Router,
    limits: &ListenerLimits,
    shutdown: CancellationToken,
) -> ConnectionClose
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        opened: opened.at,
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        idle_since: AtomicU64::new(0),
        read_since_idle: AtomicBool::new(false),
        first_read: AtomicU64::new(0),
        http2: AtomicBool::new(false),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let body_timeout = limits.body_read_timeout;
    let seen = Arc::clone(&activity);
    let peer = ConnectInfo(opened.peer);
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        let activity = Arc::clone(&seen);
        req.extensions_mut().insert(peer);
        activity.begin(req.version() == http::Version::HTTP_2);
        let grpc = is_grpc(&req);
        let req = req.map(|body| {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(body_timeout)),
                timeout: body_timeout,
                grpc,
            })
        });
        let answer = app.clone().oneshot(req);
        async move {
            let Ok(response) = answer.await;
            let (parts, body) = response.into_parts();
            Ok::<_, Infallible>(Response::from_parts(
                parts,
                Body::new(FinishBody {
                    inner: body,
                    activity: Some(activity),
                }),
            ))
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut closing: Option<(Instant, ConnectionClose)> = None;
    loop {
        let next = match closing {
            Some((hard, _)) => Some(hard),
            None => activity.deadline(limits).map(|(at, _)| at),
        };
        // While a request is in flight, look again after the idle timeout.
        let wake = next.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            done = conn.as_mut() => {
                if let Some((_, why)) = closing {
                    return why;
                }
                return match done {
                    Ok(()) => ConnectionClose::Client,
                    Err(e) => close_reason(&*e),
                };
            }
            () = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some((Instant::now() + Duration::from_secs(3_600), ConnectionClose::Shutdown));
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if let Some((_, why)) = closing {
                    // A graceful shutdown that did not finish in time.
                    return why;
                }
                if let Some((at, why)) = activity.deadline(limits)
                    && at <= Instant::now()
                {
                    conn.as_mut().graceful_shutdown();
                    closing = Some((Instant::now() + Duration::from_secs(1), why));
                }
            }
        }
    }
}

fn close_reason(e: &(dyn std::error::Error + 'static)) -> ConnectionClose {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return ConnectionClose::HeaderTimeout;
            }
            if h.is_parse() || h.is_parse_too_large() {
                return ConnectionClose::ProtocolError;
            }
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return ConnectionClose::Reset;
        }
        source = e.source();
    }
    ConnectionClose::ProtocolError
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The connection's stream (TCP, or TLS over TCP), telling the watchdog
/// when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that must arrive whole within `timeout` of its head.
struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    grpc: bool,
}

/// A request body that did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?} (listeners.body_read_timeout)")]
pub struct BodyTimeout(pub Duration);

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let timeout = BodyTimeout(this.timeout);
                    let err: Self::Error = if this.grpc {
                        Box::new(tonic::Status::deadline_exceeded(timeout.to_string()))
                    } else {
                        Box::new(timeout)
                    };
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that tells the watchdog when the answer is finished
/// (sent whole, or dropped).
struct FinishBody {
    inner: Body,
    activity: Option<Arc<Activity>>,
}

impl FinishBody {
    fn finish(&mut self) {
        if let Some(a) = self.activity.take() {
            a.end();
        }
    }
}

impl Drop for FinishBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for FinishBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn started(app: axum::Router, limits: ListenerLimits) -> (SocketAddr, CancellationToken) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            Listener {
                tcp,
                name: "test",
                protocols: Protocols::Any,
                limits,
                tls: None,
            },
            app,
            InternalEvents::new(),
            stop.clone(),
        ));
        (addr, stop)
    }

    /// A TLS listener with a self-signed certificate; its events.
    async fn started_tls(
        limits: ListenerLimits,
    ) -> (SocketAddr, Arc<InternalEvents>, CancellationToken) {
        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        let settings =
            crate::tls::ServerTlsSettings::load(cert, key, None, Duration::from_secs(5)).unwrap();
        let tls = crate::tls::ServerTls::new(&settings)
            .server_config(crate::tls::ListenerRole::Service, false)
            .unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let stop = CancellationToken::new();
        let events = InternalEvents::new();
        tokio::spawn(serve(
            Listener {
                tcp,
                name: "test",
                protocols: Protocols::Any,
                limits,
                tls: Some(tls),
            },
            axum::Router::new().route("/ok", axum::routing::get(|| async { "fine" })),
            Arc::clone(&events),
            stop.clone(),
        ));
        (addr, events, stop)
    }

    /// Waits (5 s at most) for the server to close `s`.
    async fn closed_by_server(s: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    #[tokio::test]
    async fn an_unfinished_handshake_is_a_header_timeout_and_plaintext_a_protocol_error() {
        use tokio::io::AsyncWriteExt;
        let limits = ListenerLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ListenerLimits::default()
        };
        let (addr, events, stop) = started_tls(limits).await;

        // Connects and never says hello.
        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut silent).await);
        assert!(started.elapsed() < Duration::from_secs(3));

        // Plaintext HTTP to the TLS port.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(closed_by_server(&mut plain).await);

        let line = |reason: &str| {
            format!(
                "tollgate_listener_connections_closed_total{{listener=\"test\",reason=\"{reason}\"}} 1"
            )
        };
        // Counted once the connection's task has returned.
        let counted = || {
            let m = events.encode();
            m.contains(&line("header_timeout")) && m.contains(&line("protocol_error"))
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !counted() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(counted(), "{}", events.encode());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_listener_keeps_serving() {
        #[allow(clippy::panic)]
        async fn boom() -> &'static str {
            panic!("a bug")
        }
        let app = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .route("/ok", axum::routing::get(|| async { "fine" }));
        let (addr, stop) = started(app, ListenerLimits::default()).await;
        let client = reqwest::Client::new();
        let r = client
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
        assert!(r.text().await.unwrap().contains("internal_error"));
        let r = client
            .get(format!("http://{addr}/ok"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "fine");
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once() {
        use tokio::io::AsyncReadExt;
        let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "fine" }));
        let limits = ListenerLimits {
            max_connections: 2,
            ..ListenerLimits::default()
        };
        let (addr, stop) = started(app, limits).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_slow_body_fails_at_its_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        async fn echo(body: axum::body::Bytes) -> String {
            body.len().to_string()
        }
        let app = axum::Router::new().route("/echo", axum::routing::post(echo));
        let limits = ListenerLimits {
            body_read_timeout: Duration::from_millis(300),
            ..ListenerLimits::default()
        };
        let (addr, stop) = started(app, limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
            .await
            .unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        // axum's `Bytes` extractor answers a body error with 400.
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(2));
        stop.cancel();
    }
}
