//! The HTTPS listener: bounded accept, TLS with SNI checked before any certificate is chosen,
//! HTTP/1.1 or h2 picked from ALPN, per-connection timeouts, graceful shutdown.
//!
//! A connection whose SNI is the TLS-RPT report host is served by the async
//! [`HttpsIntake`]; every other connection by the synchronous [`crate::http::handle`] over
//! pre-rendered bytes. The choice is made once per connection, so the policy path pays one
//! branch on an `Option` and nothing more.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::Acceptor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

use crate::certs::{CertResolver, offers_acme_alpn};
use crate::config::{Limits, TlsSettings};
use crate::http::Body;
use crate::registry::Registry;
use crate::stats::Stats;
use crate::tlsrpt::HttpsIntake;

/// TLS alert `unrecognized_name` (RFC 6066 §3): the client asked for a host we do not serve.
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `internal_error`: the host is ours but has no certificate yet.
const ALERT_INTERNAL_ERROR: u8 = 80;
/// After a graceful close is requested, a peer that neither finishes nor reads is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Concurrent h2 streams per connection: a policy fetch needs one.
const H2_MAX_STREAMS: u32 = 32;

/// What every connection shares.
pub struct Server {
    tls: Arc<rustls::ServerConfig>,
    resolver: Arc<CertResolver>,
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
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: preferred_cipher_suites(),
            ..rustls::crypto::aws_lc_rs::default_provider()
        };
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        tls.ignore_client_order = true;
        tls.alpn_protocols = vec![
            b"h2".to_vec(),
            b"http/1.1".to_vec(),
            crate::certs::ACME_TLS_ALPN.to_vec(),
        ];
        if settings.session_resumption {
            tls.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        } else {
            // No tickets (the builder's default ticketer issues none), no TLS 1.3 stateful
            // tickets, no TLS 1.2 session-id cache: every connection is a full handshake.
            tls.send_tls13_tickets = 0;
            tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
        Ok(Server {
            tls: Arc::new(tls),
            resolver,
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

/// aws-lc-rs's suites with AES-128-GCM first. Clients commonly list AES-256-GCM-SHA384 first;
/// its SHA-384 key schedule cost about 15 % of a full handshake's CPU (perf), while SHA-256 runs
/// on the SHA extensions of current CPUs. Both are standard TLS 1.3 AEADs; ChaCha20 stays
/// available for clients without AES.
fn preferred_cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS13_AES_128_GCM_SHA256,
    };
    let mut suites = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
    // Stable: everything else keeps aws-lc-rs's order.
    suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    suites
}

/// Serves `listener` until `shutdown` completes, then stops accepting and gives open
/// connections `limits.shutdown_grace` to finish.
pub async fn run(listener: TcpListener, server: Arc<Server>, shutdown: impl Future<Output = ()>) {
    let max = server.limits.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // Taking the permit before accepting keeps excess connections in the kernel backlog
        // instead of accepting and dropping them.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let server = server.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            server
                .stats
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            serve_connection(&server, tcp, stop).await;
            server
                .stats
                .open_connections
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
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

/// Why a handshake did not complete.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    UnknownSni,
    NoCertificate,
    Error,
}

async fn serve_connection(server: &Server, tcp: TcpStream, stop: watch::Receiver<bool>) {
    let stats = &server.stats;
    let tls = match timeout(server.limits.handshake_timeout, handshake(server, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(Refused::UnknownSni)) => {
            stats.handshakes_unknown_sni.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok(Err(Refused::NoCertificate)) => {
            stats
                .handshakes_no_certificate
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok(Err(Refused::Error)) | Err(_) => {
            stats.handshakes_error.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
    let (_, conn) = tls.get_ref();
    let h2 = conn.alpn_protocol() == Some(b"h2");
    if conn.alpn_protocol() == Some(crate::certs::ACME_TLS_ALPN) {
        // RFC 8737 §3: the challenge connection carries no application data.
        return;
    }
    let sni: Option<Arc<str>> = conn
        .server_name()
        .map(|s| Arc::from(s.to_ascii_lowercase()));
    let activity = Arc::new(Activity::new());

    let registry = server.registry.clone();
    let stats_svc = server.stats.clone();
    // The handshake only succeeds for a configured tenant's SNI, so the connection's tenant is
    // known here: the metric label comes from configuration, never from the Host header.
    let tenant_counts = {
        let snapshot = registry.load();
        let domain = sni
            .as_deref()
            .and_then(|s| snapshot.get(s))
            .map(|t| t.domain.as_str());
        server.stats.tenant_requests.for_domain(domain)
    };
    let act = activity.clone();
    let intake = server
        .report_intake
        .clone()
        .filter(|i| sni.as_deref() == Some(i.host()));
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let started = std::time::Instant::now();
        act.touch();
        if let Some(intake) = &intake {
            let (intake, stats, act) = (intake.clone(), stats_svc.clone(), act.clone());
            return Reply::Later(Box::pin(async move {
                let resp = intake.handle(req, || act.keep_alive()).await;
                count_response(&stats, &resp);
                resp
            }));
        }
        let resp = crate::http::handle(&registry, sni.as_deref(), &req);
        count_response(&stats_svc, &resp);
        tenant_counts.count(resp.status().as_u16());
        stats_svc.request_duration.observe(started.elapsed());
        Reply::Ready(Some(resp))
    });
    let io = TokioIo::new(tls);
    let limits = &server.limits;
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        let conn = builder.serve_connection(io, service);
        drive(conn, |c| c.graceful_shutdown(), &activity, limits, stop).await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service);
        drive(conn, |c| c.graceful_shutdown(), &activity, limits, stop).await;
    }
}

fn count_response(stats: &Stats, resp: &hyper::Response<Body>) {
    let class = usize::from(resp.status().as_u16() / 100).min(5);
    stats.responses[class].fetch_add(1, Ordering::Relaxed);
}

/// Reads the ClientHello, refuses unknown names with `unrecognized_name` before any
/// certificate is chosen, then completes the handshake.
async fn handshake(server: &Server, mut tcp: TcpStream) -> Result<TlsStream<TcpStream>, Refused> {
    let mut acceptor = Acceptor::default();
    let mut buf = [0u8; 4096];
    let accepted = loop {
        let n = tcp.read(&mut buf).await.map_err(|_| Refused::Error)?;
        if n == 0 {
            return Err(Refused::Error);
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            acceptor.read_tls(&mut chunk).map_err(|_| Refused::Error)?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => break accepted,
            Ok(None) => continue,
            Err((_, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = tcp.write_all(&out).await;
                return Err(Refused::Error);
            }
        }
    };
    let hello = accepted.client_hello();
    let name = hello.server_name().map(str::to_ascii_lowercase);
    let acme = offers_acme_alpn(&hello);
    let refused = match &name {
        None => Some(Refused::UnknownSni),
        Some(host) if server.resolver.can_serve(host, acme) => None,
        Some(host) if server.registry.load().get(host).is_some() => Some(Refused::NoCertificate),
        Some(_) => Some(Refused::UnknownSni),
    };
    if let Some(refused) = refused {
        let description = match refused {
            Refused::NoCertificate => ALERT_INTERNAL_ERROR,
            _ => ALERT_UNRECOGNIZED_NAME,
        };
        // Plaintext fatal alert record: nothing has been negotiated yet, so no keys exist.
        let _ = tcp
            .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description])
            .await;
        let _ = tcp.shutdown().await;
        return Err(refused);
    }
    StartHandshake::from_parts(accepted, tcp)
        .into_stream(server.tls.clone())
        .await
        .map_err(|_| Refused::Error)
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
