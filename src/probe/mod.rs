//! The STARTTLS probe: one MX host, tried as a sending MTA would (RFC 8461 §5, RFC 3207).
//!
//! [`probe_mx`] connects to an address the caller resolved, reads the greeting, says EHLO with
//! the configured name, asks for STARTTLS, and verifies the server's chain against the trusted
//! roots and its names against the MX host, exactly as a sender applying an `enforce` policy
//! does. The answer is the RFC 8460 §4.3 result-type that sender would report
//! ([`ProbeOutcome::Failed`]), or [`ProbeOutcome::Unreachable`] when no TLS question was
//! reached (no connection, a timeout, a reply that is not SMTP). Every step has a timeout and
//! the whole probe a deadline. [`Prober`] adds the limits a daemon needs: few connections at
//! once and one probe per MX host per interval.

mod classify;
mod guard;
mod smtp;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub use crate::tlsrpt::report::ResultType;
pub use classify::result_type;
pub use guard::{Prober, Throttled};

/// The roots a probe trusts.
#[derive(Debug, Clone)]
pub enum TrustRoots {
    /// The system's roots (rustls-native-certs: `SSL_CERT_FILE`, `SSL_CERT_DIR` or the
    /// platform's store), as a sending MTA on this machine would use.
    System,
    /// Only these CA certificates (private networks, tests).
    Only(Vec<CertificateDer<'static>>),
}

/// How probes are made; build once, share between probes.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    ehlo_name: String,
    tls: Arc<rustls::ClientConfig>,
    /// Limit for the TCP connect.
    pub connect_timeout: Duration,
    /// Limit for each later step (greeting, EHLO, STARTTLS, handshake).
    pub step_timeout: Duration,
    /// Limit for the whole probe; a step gets what is left when that is less.
    pub total_timeout: Duration,
}

impl ProbeOptions {
    /// Options saying `EHLO <ehlo_name>` and trusting `roots`; timeouts 10 s per step
    /// (RFC 5321 §4.5.3.2 allows servers far more; a probe need not wait that long), 30 s
    /// in all.
    pub fn new(ehlo_name: &str, roots: TrustRoots) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !ehlo_name.is_empty()
                && ehlo_name.len() <= 255
                && ehlo_name.bytes().all(|b| b.is_ascii_graphic()),
            "EHLO name {ehlo_name:?}: must be a domain name or address literal"
        );
        let mut store = rustls::RootCertStore::empty();
        match roots {
            TrustRoots::System => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system bundle may hold a certificate rustls cannot use; skip it.
                    let _ = store.add(cert);
                }
            }
            TrustRoots::Only(certs) => {
                for cert in certs {
                    store.add(cert)?;
                }
            }
        }
        anyhow::ensure!(!store.is_empty(), "no trusted roots for the STARTTLS probe");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // TLS 1.2 and 1.3 only: RFC 8461 §5 requires TLS 1.2 or later.
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(ProbeOptions {
            ehlo_name: ehlo_name.to_string(),
            tls: Arc::new(tls),
            connect_timeout: Duration::from_secs(10),
            step_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(30),
        })
    }

    /// The name sent in EHLO.
    pub fn ehlo_name(&self) -> &str {
        &self.ehlo_name
    }
}

/// What a successful STARTTLS negotiated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsSession {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The end-entity certificate's not-after, Unix seconds.
    pub not_after: i64,
}

/// The step a probe stopped at without reaching a TLS verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The MX host is not a DNS name a certificate could be checked against.
    HostName,
    /// TCP connect.
    Connect,
    /// The 220 greeting.
    Greeting,
    /// EHLO and its reply.
    Ehlo,
    /// STARTTLS and its reply.
    Starttls,
    /// The TLS handshake (a timeout; other failures are result-types).
    Handshake,
}

impl Step {
    /// Lower-case name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::HostName => "host-name",
            Step::Connect => "connect",
            Step::Greeting => "greeting",
            Step::Ehlo => "ehlo",
            Step::Starttls => "starttls",
            Step::Handshake => "handshake",
        }
    }
}

/// The verdict on one MX host at one address. As JSON: `{"outcome": "ok", "version", "cipher",
/// "not_after"}`, `{"outcome": "failed", "result_type", "detail"}` or
/// `{"outcome": "unreachable", "step", "detail"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ProbeOutcome {
    /// STARTTLS worked and the certificate is valid for the MX host.
    Ok(TlsSession),
    /// A sender would fail and report `result_type` (RFC 8460 §4.3).
    Failed {
        /// One of `starttls-not-supported`, `certificate-host-mismatch`,
        /// `certificate-expired`, `certificate-not-trusted`, `validation-failure`.
        result_type: ResultType,
        /// What was seen (the server's reply, the rustls error).
        detail: String,
    },
    /// No TLS verdict: could not connect, a timeout, or a reply that is not SMTP.
    Unreachable {
        /// Where it stopped.
        step: Step,
        /// Why.
        detail: String,
    },
}

impl ProbeOutcome {
    /// Whether a sender would deliver over verified TLS.
    pub fn is_ok(&self) -> bool {
        matches!(self, ProbeOutcome::Ok(_))
    }

    /// The TLS-RPT result-type, for [`ProbeOutcome::Failed`].
    pub fn result_type(&self) -> Option<&ResultType> {
        match self {
            ProbeOutcome::Failed { result_type, .. } => Some(result_type),
            _ => None,
        }
    }

    fn failed(result_type: ResultType, detail: impl Into<String>) -> Self {
        ProbeOutcome::Failed {
            result_type,
            detail: detail.into(),
        }
    }

    fn unreachable(step: Step, detail: impl Into<String>) -> Self {
        ProbeOutcome::Unreachable {
            step,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeOutcome::Ok(s) => write!(
                f,
                "ok: {} {}, certificate valid until {}",
                s.version,
                s.cipher,
                crate::util::format_unix(s.not_after)
            ),
            ProbeOutcome::Failed {
                result_type,
                detail,
            } => write!(f, "{result_type}: {detail}"),
            ProbeOutcome::Unreachable { step, detail } => {
                write!(f, "no verdict ({}): {detail}", step.as_str())
            }
        }
    }
}

/// Probes `mx_host` at `addr` (resolving the host is the caller's job).
pub async fn probe_mx(opts: &ProbeOptions, mx_host: &str, addr: SocketAddr) -> ProbeOutcome {
    let started = Instant::now();
    let name = match server_name(mx_host) {
        Ok(name) => name,
        Err(detail) => return ProbeOutcome::unreachable(Step::HostName, detail),
    };
    let limit = opts.connect_timeout.min(opts.total_timeout);
    let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return ProbeOutcome::unreachable(Step::Connect, format!("{addr}: {e}")),
        Err(_) => {
            return ProbeOutcome::unreachable(
                Step::Connect,
                format!("{addr}: no connection within {limit:?}"),
            );
        }
    };
    let clock = Clock {
        deadline: started + opts.total_timeout,
        step: opts.step_timeout,
    };
    probe_stream(opts, name, stream, &clock).await
}

/// The MX host as the name its certificate must carry (RFC 8461 §5: the MX host name; an
/// absolute name's final dot is not part of it).
fn server_name(mx_host: &str) -> Result<ServerName<'static>, String> {
    let host = mx_host.strip_suffix('.').unwrap_or(mx_host);
    match ServerName::try_from(host.to_ascii_lowercase()) {
        Ok(name @ ServerName::DnsName(_)) => Ok(name),
        _ => Err(format!("MX host {mx_host:?} is not a DNS name")),
    }
}

/// The time limits of one probe.
struct Clock {
    deadline: Instant,
    step: Duration,
}

impl Clock {
    /// Runs `fut` for at most one step's time, or what is left of the whole probe.
    async fn step<T>(
        &self,
        step: Step,
        fut: impl Future<Output = Result<T, String>>,
    ) -> Result<T, ProbeOutcome> {
        let limit = self
            .step
            .min(self.deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(detail)) => Err(ProbeOutcome::unreachable(step, detail)),
            Err(_) => Err(ProbeOutcome::unreachable(
                step,
                format!("no answer within {limit:?}"),
            )),
        }
    }
}

/// The SMTP dialogue and the handshake over a connected stream.
async fn probe_stream<S>(
    opts: &ProbeOptions,
    name: ServerName<'static>,
    stream: S,
    clock: &Clock,
) -> ProbeOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = BufReader::new(stream);
    match negotiate(opts, &mut conn, clock).await {
        Ok(()) => {}
        Err(Refusal::Quit(outcome)) => {
            quit(&mut conn, clock).await;
            return outcome;
        }
        Err(Refusal::Drop(outcome)) => return outcome,
    }
    // Anything the server sent after its 220 would be read as if it came over TLS (the
    // STARTTLS command injection of CVE-2011-0411); a sender must not accept it.
    if !conn.buffer().is_empty() {
        return ProbeOutcome::unreachable(
            Step::Starttls,
            "the server sent data after its 220 to STARTTLS, before the handshake",
        );
    }
    handshake(opts, name, conn.into_inner(), clock).await
}

/// How a dialogue ended early: with a polite QUIT, or by hanging up.
enum Refusal {
    Quit(ProbeOutcome),
    Drop(ProbeOutcome),
}

/// Greeting, EHLO, STARTTLS up to the server's 220.
async fn negotiate<S>(
    opts: &ProbeOptions,
    conn: &mut BufReader<S>,
    clock: &Clock,
) -> Result<(), Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let greeting = clock
        .step(Step::Greeting, smtp::read_reply(conn))
        .await
        .map_err(Refusal::Drop)?;
    if greeting.code != 220 {
        let detail = format!("greeting is not 220: {}", greeting.summary());
        return Err(Refusal::Quit(ProbeOutcome::unreachable(
            Step::Greeting,
            detail,
        )));
    }
    let ehlo = format!("EHLO {}", opts.ehlo_name);
    let reply = clock
        .step(Step::Ehlo, command(conn, &ehlo))
        .await
        .map_err(Refusal::Drop)?;
    match reply.code {
        250 if reply.has_extension("STARTTLS") => {}
        250 => {
            let detail = format!("EHLO reply lists no STARTTLS: {}", reply.summary());
            return Err(Refusal::Quit(ProbeOutcome::failed(
                ResultType::StarttlsNotSupported,
                detail,
            )));
        }
        // A sender falls back to HELO, which has no extensions: no STARTTLS either.
        500..=599 => {
            let detail = format!("EHLO refused: {}", reply.summary());
            return Err(Refusal::Quit(ProbeOutcome::failed(
                ResultType::StarttlsNotSupported,
                detail,
            )));
        }
        _ => {
            let detail = format!("EHLO not accepted: {}", reply.summary());
            return Err(Refusal::Quit(ProbeOutcome::unreachable(Step::Ehlo, detail)));
        }
    }
    starttls(conn, clock).await
}

/// STARTTLS: 220 goes on; 4xx/5xx is `starttls-not-supported` (RFC 3207 §4).
async fn starttls<S>(conn: &mut BufReader<S>, clock: &Clock) -> Result<(), Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = clock
        .step(Step::Starttls, command(conn, "STARTTLS"))
        .await
        .map_err(Refusal::Drop)?;
    match reply.code {
        220 => Ok(()),
        400..=599 => Err(Refusal::Quit(ProbeOutcome::failed(
            ResultType::StarttlsNotSupported,
            format!("STARTTLS refused: {}", reply.summary()),
        ))),
        _ => Err(Refusal::Drop(ProbeOutcome::unreachable(
            Step::Starttls,
            format!("unexpected reply to STARTTLS: {}", reply.summary()),
        ))),
    }
}

async fn command<S>(conn: &mut BufReader<S>, line: &str) -> Result<smtp::Reply, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    smtp::send(conn.get_mut(), line).await?;
    smtp::read_reply(conn).await
}

/// QUIT and its 221, best effort and short: the verdict is already made.
async fn quit<S>(conn: &mut BufReader<S>, clock: &Clock)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let polite = Clock {
        deadline: clock.deadline,
        step: clock.step.min(Duration::from_secs(2)),
    };
    // The step label is unused: a failed QUIT changes nothing.
    let _ = polite.step(Step::Ehlo, command(conn, "QUIT")).await;
    let _ = tokio::time::timeout(polite.step, conn.get_mut().shutdown()).await;
}

/// The TLS handshake with the MX host as server name, then QUIT over TLS.
async fn handshake<S>(
    opts: &ProbeOptions,
    name: ServerName<'static>,
    stream: S,
    clock: &Clock,
) -> ProbeOutcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(opts.tls.clone());
    let connect = async {
        connector
            .connect(name, stream)
            .await
            .map_err(|e| match classify::rustls_error(&e) {
                Some(error) => ProbeOutcome::failed(result_type(error), error.to_string()),
                None => {
                    ProbeOutcome::failed(ResultType::ValidationFailure, format!("handshake: {e}"))
                }
            })
    };
    let tls = match clock
        .step(Step::Handshake, async { Ok(connect.await) })
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(outcome)) | Err(outcome) => return outcome,
    };
    let session = session(tls.get_ref().1);
    quit(&mut BufReader::new(tls), clock).await;
    match session {
        Ok(session) => ProbeOutcome::Ok(session),
        Err(detail) => ProbeOutcome::failed(ResultType::ValidationFailure, detail),
    }
}

/// Version, cipher and the leaf's not-after of an established connection.
fn session(conn: &rustls::ClientConnection) -> Result<TlsSession, String> {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let suite = s.suite();
            suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_string)
        })
        .unwrap_or_default();
    let leaf = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or("the server sent no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the server's certificate does not parse: {e}"))?;
    Ok(TlsSession {
        version,
        cipher,
        not_after: cert.validity().not_after.timestamp(),
    })
}

#[cfg(test)]
mod tests;
