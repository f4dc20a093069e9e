//! The HTTPS listener: bounded accept, TLS with SNI checked before any certificate is chosen
//! (in `tls`), HTTP/1.1 or h2 picked from ALPN, per-connection timeouts, graceful shutdown.
//!
//! Each accepted connection is handshaken, then served by one `Handler` that owns its TLS
//! stream, the stop signal and its activity tracking. A connection whose SNI is the TLS-RPT
//! report host is served by the async [`HttpsIntake`]; every other connection by the
//! synchronous [`crate::http::handle`] over pre-rendered bytes. The choice is made once per
//! connection, so the policy path pays one branch on an `Option` and nothing more.

mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::server::TlsStream;

use crate::certs::CertResolver;
use crate::config::{Limits, TlsSettings};
use crate::http::Body;
use crate::registry::Registry;
use crate::stats::{ClassCounters, Stats};
use crate::tlsrpt::HttpsIntake;
use tls::{Handshaker, Refused};

/// After a graceful close is requested, a peer that neither finishes nor reads is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Concurrent h2 streams per connection: a policy fetch needs one.
const H2_MAX_STREAMS: u32 = 32;

/// What every connection shares.
pub struct Server {
    tls: Handshaker,
    registry: Arc<Registry>,
    limits: Limits,
    report_intake: Option<Arc<HttpsIntake>>,
    /// Listener counters.
    pub stats: Arc<Stats>,
}

impl Server {
    /// Builds the TLS configuration around `resolver`.
    pub fn new(
        resolver: Arc<CertResolver>,
        registry: Arc<Registry>,
        limits: Limits,
        settings: &TlsSettings,
    ) -> anyhow::Result<Self> {
        Ok(Server {
            tls: Handshaker::new(resolver, settings)?,
            registry,
            limits,
            report_intake: None,
            stats: Arc::new(Stats::default()),
        })
    }

    /// Serves TLS-RPT reports on connections to the intake's report host.
    pub fn with_report_intake(mut self, intake: Option<Arc<HttpsIntake>>) -> Self {
        self.report_intake = intake;
        self
    }
}

/// A response now (the policy path) or later (the report intake), as one future type.
enum Reply {
    Ready(Option<hyper::Response<Body>>),
    Later(Pin<Box<dyn Future<Output = hyper::Response<Body>> + Send>>),
}

impl Future for Reply {
    type Output = Result<hyper::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both variants are Unpin (an Option and a Pin<Box>), so no projection is needed.
        match self.get_mut() {
            Reply::Ready(resp) => Poll::Ready(Ok(resp.take().unwrap_or_else(|| {
                crate::http::text(
                    hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    "response polled twice\n",
                )
            }))),
            Reply::Later(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting and gives open
/// connections `limits.shutdown_grace` to finish.
pub async fn run(listener: TcpListener, server: Arc<Server>, shutdown: impl Future<Output = ()>) {
    let max = server.limits.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    while let Some((tcp, permit)) = next_connection(&listener, &permits, shutdown.as_mut()).await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            server.clone(),
            tcp,
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if timeout(
        server.limits.shutdown_grace + CLOSE_GRACE,
        permits.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// The next accepted connection with its permit, or `None` once `shutdown` completes.
async fn next_connection(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    loop {
        // Taking the permit before accepting keeps excess connections in the kernel backlog
        // instead of accepting and dropping them.
        let permit = tokio::select! {
            _ = &mut shutdown => return None,
            permit = permits.clone().acquire_owned() => permit.ok()?,
        };
        tokio::select! {
            _ = &mut shutdown => return None,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => return Some((tcp, permit)),
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
        }
    }
}

/// One connection from accept to close; its permit is released when it ends.
async fn serve_connection(
    server: Arc<Server>,
    tcp: TcpStream,
    stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let open = &server.stats.open_connections;
    open.fetch_add(1, Ordering::Relaxed);
    if let Some(stream) = handshake(&server, tcp).await {
        Handler::new(server.clone(), stream, stop).run().await;
    }
    open.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// The TLS handshake within `limits.handshake_timeout`, counted by outcome; failures are
/// logged at debug only.
async fn handshake(server: &Server, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
    let stats = &server.stats;
    let outcome = timeout(
        server.limits.handshake_timeout,
        server.tls.handshake(tcp, &server.registry),
    )
    .await;
    let counter = match &outcome {
        Ok(Ok(_)) => &stats.handshakes_ok,
        Ok(Err(Refused::UnknownSni)) => &stats.handshakes_unknown_sni,
        Ok(Err(Refused::NoCertificate)) => &stats.handshakes_no_certificate,
        Ok(Err(Refused::Error(error))) => {
            // Scanners and clients that give up make these all day: counted, not warned.
            tracing::debug!(%error, "TLS handshake failed");
            &stats.handshakes_error
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            &stats.handshakes_error
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
    outcome.ok()?.ok()
}

/// One handshaken connection: its TLS stream, the shared server, the stop signal, and the
/// activity that drives its idle and age deadlines.
struct Handler {
    server: Arc<Server>,
    stream: TlsStream<TcpStream>,
    stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
}

impl Handler {
    /// A handler for `stream`; its idle and age clocks start now, at the end of the handshake.
    fn new(server: Arc<Server>, stream: TlsStream<TcpStream>, stop: watch::Receiver<bool>) -> Self {
        Handler {
            server,
            stream,
            stop,
            activity: Arc::new(Activity::new()),
        }
    }

    /// Serves HTTP on the connection until it ends, idles out, ages out or the server stops.
    async fn run(self) {
        let alpn = self.stream.get_ref().1.alpn_protocol();
        if alpn == Some(crate::certs::ACME_TLS_ALPN) {
            // RFC 8737 §3: the challenge connection carries no application data.
            return;
        }
        let h2 = alpn == Some(b"h2");
        let responder = self.responder();
        let service = service_fn(move |req| responder.respond(req));
        // hyper takes the stream; the deadlines below watch the rest of the handler.
        let io = TokioIo::new(self.stream);
        let (activity, limits) = (&self.activity, &self.server.limits);
        if h2 {
            let conn = http2_builder(limits).serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), activity, limits, self.stop).await;
        } else {
            let conn = http1_builder(limits).serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), activity, limits, self.stop).await;
        }
    }

    /// What answers this connection's requests, chosen once from its SNI.
    fn responder(&self) -> Responder {
        let server = &self.server;
        let sni: Option<Arc<str>> = self
            .stream
            .get_ref()
            .1
            .server_name()
            .map(|s| Arc::from(s.to_ascii_lowercase()));
        // The handshake only succeeds for a configured tenant's SNI, so the connection's tenant
        // is known here: the metric label comes from configuration, never from the Host header.
        let tenant_counts = {
            let snapshot = server.registry.load();
            let domain = sni
                .as_deref()
                .and_then(|s| snapshot.get(s))
                .map(|t| t.domain.as_str());
            server.stats.tenant_requests.for_domain(domain)
        };
        let intake = server
            .report_intake
            .clone()
            .filter(|i| sni.as_deref() == Some(i.host()));
        Responder {
            registry: server.registry.clone(),
            stats: server.stats.clone(),
            sni,
            tenant_counts,
            intake,
            activity: self.activity.clone(),
        }
    }
}

/// The HTTP/1.1 settings: header read timeout and size cap, keep-alive.
fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
}

/// The h2 settings: stream count and header list size caps.
fn http2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Answers the requests of one connection: the report intake on the report host, the policy
/// path everywhere else.
struct Responder {
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    sni: Option<Arc<str>>,
    tenant_counts: Arc<ClassCounters>,
    intake: Option<Arc<HttpsIntake>>,
    activity: Arc<Activity>,
}

impl Responder {
    /// One request, counted by status class (and for the policy path, by tenant and duration).
    fn respond(&self, req: hyper::Request<Incoming>) -> Reply {
        let started = std::time::Instant::now();
        self.activity.touch();
        if let Some(intake) = &self.intake {
            let (intake, stats, act) = (intake.clone(), self.stats.clone(), self.activity.clone());
            return Reply::Later(Box::pin(async move {
                let resp = intake.handle(req, || act.keep_alive()).await;
                count_response(&stats, &resp);
                resp
            }));
        }
        let resp = crate::http::handle(&self.registry, self.sni.as_deref(), &req);
        count_response(&self.stats, &resp);
        self.tenant_counts.count(resp.status().as_u16());
        self.stats.request_duration.observe(started.elapsed());
        Reply::Ready(Some(resp))
    }
}

fn count_response(stats: &Stats, resp: &hyper::Response<Body>) {
    let class = usize::from(resp.status().as_u16() / 100).min(5);
    stats.responses[class].fetch_add(1, Ordering::Relaxed);
}

/// Last-request time of one connection, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.keep_alive();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the connection active without counting a request (a report body arriving).
    fn keep_alive(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Runs a connection until it ends, is idle too long, reaches its maximum age, or the server
/// shuts down; the last three ask it to close gracefully and drop it after [`CLOSE_GRACE`].
async fn drive<C: Future>(
    conn: C,
    graceful: impl FnOnce(Pin<&mut C>),
    activity: &Activity,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) {
    tokio::pin!(conn);
    let age_deadline = activity.start + limits.max_connection_age;
    loop {
        let idle_deadline = activity.idle_deadline(limits.idle_timeout);
        let wake = idle_deadline.min(age_deadline);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = sleep_until(wake) => {
                let now = Instant::now();
                if now >= age_deadline || now >= activity.idle_deadline(limits.idle_timeout) {
                    break;
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    // A client that never sent a request has nothing to finish: hyper's h2 graceful close
    // would wait for a preface that may never come, so drop it at once.
    if activity.requests.load(Ordering::Relaxed) == 0 {
        return;
    }
    graceful(conn.as_mut());
    let _ = timeout(CLOSE_GRACE, conn).await;
}
