//! The TLS side of the HTTPS listener: the ClientHello is read and its SNI checked before any
//! certificate is chosen, so a name we do not serve is refused with an alert and costs no
//! signature; then the handshake completes with the rustls configuration built here.

use std::sync::Arc;

use rustls::server::{Acceptor, ClientHello};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake};

use crate::certs::{CertProvider, CertResolver, offers_acme_alpn};
use crate::config::TlsSettings;
use crate::registry::Registry;

/// TLS alert `unrecognized_name` (RFC 6066 §3): the client asked for a host we do not serve.
const ALERT_UNRECOGNIZED_NAME: u8 = 112;
/// TLS alert `internal_error`: the host is ours but has no certificate yet.
const ALERT_INTERNAL_ERROR: u8 = 80;

/// Why a handshake did not complete.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// No SNI, or a name that is not a tenant's.
    UnknownSni,
    /// A tenant's name, but its certificate is not there yet.
    NoCertificate,
    /// A malformed or abandoned handshake, with what rustls or the socket said.
    Error(String),
}

/// Certificates issued for handshakes at once: each is ~100 µs of one core, and a burst of
/// first handshakes for queued hosts must leave the runtime's blocking pool for others.
const ISSUE_NOW_AT_ONCE: usize = 4;

/// The rustls configuration and the certificate resolver the SNI check asks first.
pub(super) struct Handshaker {
    config: Arc<rustls::ServerConfig>,
    resolver: Arc<CertResolver>,
    /// Issues a queued host's certificate at its first handshake (internal CA).
    issuer: Option<Arc<dyn CertProvider>>,
    issuing: Arc<tokio::sync::Semaphore>,
}

impl Handshaker {
    /// Builds the TLS configuration around `resolver`.
    pub(super) fn new(resolver: Arc<CertResolver>, settings: &TlsSettings) -> anyhow::Result<Self> {
        Ok(Handshaker {
            config: Arc::new(server_config(resolver.clone(), settings)?),
            resolver,
            issuer: None,
            issuing: Arc::new(tokio::sync::Semaphore::new(ISSUE_NOW_AT_ONCE)),
        })
    }

    pub(super) fn set_issuer(&mut self, provider: Arc<dyn CertProvider>) {
        self.issuer = Some(provider);
    }

    /// Has `hello`'s host issued now if it is a tenant whose certificate is only queued.
    async fn issue_now(&self, hello: &ClientHello<'_>) -> bool {
        let (Some(issuer), Some(host)) = (&self.issuer, hello.server_name()) else {
            return false;
        };
        let Ok(_permit) = self.issuing.acquire().await else {
            return false;
        };
        let (issuer, host) = (issuer.clone(), host.to_ascii_lowercase());
        tokio::task::spawn_blocking(move || issuer.issue_now(&host))
            .await
            .unwrap_or(false)
    }

    /// Reads the ClientHello, refuses unknown names with `unrecognized_name` (and tenants
    /// without a certificate with `internal_error`) before any certificate is chosen, then
    /// completes the handshake.
    pub(super) async fn handshake(
        &self,
        tcp: TcpStream,
        registry: &Registry,
    ) -> Result<TlsStream<TcpStream>, Refused> {
        let mut start = read_client_hello(tcp).await?;
        let mut refused = self.refusal(&start.client_hello(), registry);
        if refused == Some(Refused::NoCertificate) && self.issue_now(&start.client_hello()).await {
            refused = self.refusal(&start.client_hello(), registry);
        }
        if let Some(refused) = refused {
            send_alert(&mut start.io, &refused).await;
            return Err(refused);
        }
        start
            .into_stream(self.config.clone())
            .await
            .map_err(|e| Refused::Error(e.to_string()))
    }

    /// Whether the name in `hello` is refused, and why.
    fn refusal(&self, hello: &ClientHello<'_>, registry: &Registry) -> Option<Refused> {
        let acme = offers_acme_alpn(hello);
        match hello.server_name().map(str::to_ascii_lowercase) {
            None => Some(Refused::UnknownSni),
            Some(host) if self.resolver.can_serve(&host, acme) => None,
            Some(host) if registry.load().get(&host).is_some() => Some(Refused::NoCertificate),
            Some(_) => Some(Refused::UnknownSni),
        }
    }
}

/// TLS 1.3 and 1.2 over [`preferred_cipher_suites`], certificates from `resolver`, ALPN for
/// h2, HTTP/1.1 and the ACME TLS-ALPN-01 challenge, and session resumption as configured.
fn server_config(
    resolver: Arc<CertResolver>,
    settings: &TlsSettings,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: preferred_cipher_suites(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
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
    Ok(tls)
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

/// Reads from `tcp` until rustls has the whole ClientHello; a malformed one is answered with
/// the alert rustls chose. rustls reads straight from the socket and is asked for the hello
/// after every read: it only lets its buffer grow past one record once it has seen the start
/// of a handshake message, so feeding it a burst of several records before asking (a hello
/// over 16 KiB in one write) filled the buffer and dropped the connection.
async fn read_client_hello(tcp: TcpStream) -> Result<StartHandshake<TcpStream>, Refused> {
    LazyConfigAcceptor::new(Acceptor::default(), tcp)
        .await
        .map_err(|e| Refused::Error(e.to_string()))
}

/// Sends the fatal alert for `refused` and closes the write side.
async fn send_alert(tcp: &mut TcpStream, refused: &Refused) {
    let description = match refused {
        Refused::NoCertificate => ALERT_INTERNAL_ERROR,
        _ => ALERT_UNRECOGNIZED_NAME,
    };
    // Plaintext fatal alert record: nothing has been negotiated yet, so no keys exist.
    let _ = tcp
        .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description])
        .await;
    let _ = tcp.shutdown().await;
}
