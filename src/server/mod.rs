//! The HTTPS listener: bounded accept, TLS with SNI checked before any certificate is chosen
//! (in `tls`), HTTP/1.1 or h2 picked from ALPN, per-connection timeouts, graceful shutdown.
//!
//! Each accepted connection is handshaken, then served by one `Handler` that owns its TLS
//! stream, the stop signal and its activity tracking. A connection whose SNI is the TLS-RPT
//! report host is served by the async [`HttpsIntake`]; every other connection by the
//! synchronous [`crate::http::handle`] over pre-rendered bytes. The choice is made once per
//! connection, so the policy path pays one branch on an `Option` and nothing more.

mod slots;
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

use crate::accept::AcceptBackoff;
use crate::certs::CertResolver;
use crate::config::{Limits, TlsSettings};
use crate::http::Body;
use crate::registry::Registry;
use crate::stats::{ClassCounters, Stats};
use crate::tlsrpt::HttpsIntake;
use slots::{SlotHandle, Slots};
use tls::{Handshaker, Refused};

/// After a graceful close is requested, a peer that neither finishes nor reads is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// At the cap with no connection to evict, look again this often: a connection going idle
/// is not signalled.
const EVICT_RECHECK: Duration = Duration::from_millis(100);
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

    /// Lets a handshake for a tenant whose certificate is still queued have it issued at once
    /// by `provider` (the internal CA) instead of being refused.
    pub fn with_issuer(mut self, provider: Arc<dyn crate::certs::CertProvider>) -> Self {
        self.tls.set_issuer(provider);
        self
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
    let slots = Arc::new(Slots::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut backoff = AcceptBackoff::new("https");
    tokio::pin!(shutdown);
    while let Some(tcp) = next_connection(&listener, &mut backoff, shutdown.as_mut()).await {
        let Some(permit) = admit(&permits, &slots, shutdown.as_mut()).await else {
            break;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_connection(
            server.clone(),
            tcp,
            slots.register(),
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

/// The next accepted connection, or `None` once `shutdown` completes.
async fn next_connection(
    listener: &TcpListener,
    backoff: &mut AcceptBackoff,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<TcpStream> {
    loop {
        tokio::select! {
            _ = &mut shutdown => return None,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    backoff.succeeded();
                    return Some(tcp);
                }
                Err(err) => tokio::time::sleep(backoff.failed(&err)).await,
            },
        }
    }
}

/// A slot for a connection just accepted: a free one, else the one [`Slots::evict_one`] frees,
/// else the first to end. `None` once `shutdown` completes. The newcomer is held meanwhile, so
/// at most one connection beyond the cap is open.
async fn admit(
    permits: &Arc<Semaphore>,
    slots: &Slots,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        // After an eviction the evicted connection's permit is the one to wait for.
        let look_again = match slots.evict_one() {
            Ok(()) => None,
            Err(next) => {
                let soon = Instant::now() + EVICT_RECHECK;
                Some(next.map_or(soon, |n| n.min(soon)))
            }
        };
        tokio::select! {
            _ = &mut shutdown => return None,
            permit = permits.clone().acquire_owned() => return permit.ok(),
            _ = sleep_until(look_again.unwrap_or_else(Instant::now)), if look_again.is_some() => {}
        }
    }
}

/// One connection from accept to close (or eviction); its permit is released when it ends.
async fn serve_connection(
    server: Arc<Server>,
    tcp: TcpStream,
    slot: SlotHandle,
    stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) {
    let open = &server.stats.open_connections;
    open.fetch_add(1, Ordering::Relaxed);
    let mut stopping = stop.clone();
    let handshaken = tokio::select! {
        stream = handshake(&server, tcp, &slot) => stream,
        // A connection still in its handshake has nothing to finish at shutdown.
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    if let Some(stream) = handshaken {
        slot.opened();
        Handler::new(server.clone(), stream, stop, slot).run().await;
    }
    open.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// The TLS handshake within `limits.handshake_timeout`, counted by outcome; one evicted
/// before it finished counts as an error, like one that timed out.
async fn handshake(
    server: &Server,
    tcp: TcpStream,
    slot: &SlotHandle,
) -> Option<TlsStream<TcpStream>> {
    let stats = &server.stats;
    let attempt = async {
        // Tells the evictor this client speaks; a read error surfaces in the handshake.
        // (A peek, since readiness alone fires for sockets that have sent nothing.)
        let _ = tcp.peek(&mut [0u8; 1]).await;
        slot.heard();
        server.tls.handshake(tcp, &server.registry).await
    };
    let outcome = tokio::select! {
        outcome = timeout(server.limits.handshake_timeout, attempt) => outcome
            .unwrap_or_else(|_| Err(Refused::Error("handshake timed out".into()))),
        _ = slot.evicted() => Err(Refused::Error("evicted at the connection cap".into())),
    };
    let counter = match &outcome {
        Ok(_) => &stats.handshakes_ok,
        Err(Refused::UnknownSni) => &stats.handshakes_unknown_sni,
        Err(Refused::NoCertificate) => &stats.handshakes_no_certificate,
        Err(Refused::Error(error)) => {
            // Scanners and clients that give up make these all day: counted, not warned.
            tracing::debug!(%error, "TLS handshake failed");
            &stats.handshakes_error
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
    outcome.ok()
}

/// One handshaken connection: its TLS stream, the shared server, the stop signal, and the
/// activity that drives its idle and age deadlines.
struct Handler {
    server: Arc<Server>,
    stream: TlsStream<TcpStream>,
    stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
    slot: Arc<SlotHandle>,
}

impl Handler {
    /// A handler for `stream`; its idle and age clocks start now, at the end of the handshake.
    fn new(
        server: Arc<Server>,
        stream: TlsStream<TcpStream>,
        stop: watch::Receiver<bool>,
        slot: SlotHandle,
    ) -> Self {
        Handler {
            server,
            stream,
            stop,
            activity: Arc::new(Activity::new()),
            slot: Arc::new(slot),
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
        let watch = Watch {
            activity: &self.activity,
            limits: &self.server.limits,
            slot: &self.slot,
            stop: self.stop,
        };
        if h2 {
            let conn = http2_builder(watch.limits).serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), watch).await;
        } else {
            let conn = http1_builder(watch.limits).serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), watch).await;
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
        // Uploads are capped per client address; an unknown peer (rare) shares one place.
        let peer = self.stream.get_ref().0.peer_addr().ok();
        Responder {
            peer: peer.map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |p| p.ip()),
            registry: server.registry.clone(),
            stats: server.stats.clone(),
            sni,
            tenant_counts,
            intake,
            activity: self.activity.clone(),
            slot: self.slot.clone(),
        }
    }
}

/// The HTTP/1.1 settings: header read timeout and size cap, keep-alive. Public so the HTTP
/// fuzz targets parse requests with exactly the settings the server uses.
pub fn http1_builder(limits: &Limits) -> http1::Builder {
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
    peer: std::net::IpAddr,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    sni: Option<Arc<str>>,
    tenant_counts: Arc<ClassCounters>,
    intake: Option<Arc<HttpsIntake>>,
    activity: Arc<Activity>,
    slot: Arc<SlotHandle>,
}

impl Responder {
    /// One request, counted by status class (and for the policy path, by tenant and duration).
    fn respond(&self, req: hyper::Request<Incoming>) -> Reply {
        let started = std::time::Instant::now();
        self.activity.touch();
        let busy = self.slot.busy();
        if let Some(intake) = &self.intake {
            let (intake, stats, act) = (intake.clone(), self.stats.clone(), self.activity.clone());
            let peer = self.peer;
            return Reply::Later(Box::pin(async move {
                let resp = intake.handle(req, peer, || act.keep_alive()).await;
                count_response(&stats, &resp);
                drop(busy);
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

/// What ends a connection besides itself: its deadlines, eviction and the server's stop.
struct Watch<'a> {
    activity: &'a Activity,
    limits: &'a Limits,
    slot: &'a SlotHandle,
    stop: watch::Receiver<bool>,
}

impl Watch<'_> {
    /// Whether a deadline has passed: the first request (the h2 preface included) is due
    /// within `header_read_timeout`, then no request for `idle_timeout`, or the maximum age.
    fn expired(&self, now: Instant) -> bool {
        now >= self.next_deadline()
    }

    fn next_deadline(&self) -> Instant {
        let (activity, limits) = (self.activity, self.limits);
        let mut idle = limits.idle_timeout;
        if activity.requests.load(Ordering::Relaxed) == 0 {
            // hyper bounds an HTTP/1.1 request head by header_read_timeout, but an h2 client
            // that never sends its preface only met the idle timeout.
            idle = idle.min(limits.header_read_timeout);
        }
        activity
            .idle_deadline(idle)
            .min(activity.start + limits.max_connection_age)
    }
}

/// Runs a connection until it ends, is idle too long, reaches its maximum age, or the server
/// shuts down; the last three ask it to close gracefully and drop it after [`CLOSE_GRACE`]. An
/// evicted connection (idle at the cap) is dropped at once.
async fn drive<C: Future>(conn: C, graceful: impl FnOnce(Pin<&mut C>), mut watch: Watch<'_>) {
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = sleep_until(watch.next_deadline()) => {
                if watch.expired(Instant::now()) {
                    break;
                }
            }
            _ = watch.slot.evicted() => return,
            changed = watch.stop.changed() => {
                if changed.is_err() || *watch.stop.borrow() {
                    break;
                }
            }
        }
    }
    // A client that never sent a request has nothing to finish: hyper's h2 graceful close
    // would wait for a preface that may never come, so drop it at once.
    if watch.activity.requests.load(Ordering::Relaxed) == 0 {
        return;
    }
    graceful(conn.as_mut());
    let _ = timeout(CLOSE_GRACE, conn).await;
}
