//! TLS to the PostgreSQL server through rustls, the stack the rest of the daemon uses.
//!
//! tokio-postgres negotiates TLS as the URL's `sslmode` says (`prefer` by default: TLS when the
//! server offers it) and hands the stream to this connector. Unlike libpq's `require`, the
//! server's certificate is always verified, against `ca_file` or the system's roots, and its
//! name must match the URL's host: a database holding private keys is not worth an
//! unauthenticated channel. No channel binding is offered (SCRAM without `-PLUS`), which
//! PostgreSQL accepts unless the role is set to require it.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Where the database is and how to reach it: the URL and the TLS roots.
#[derive(Clone)]
pub struct Endpoint {
    /// The connection URL (holds the password: never printed).
    pub url: String,
    /// The TLS connector used when the server offers or the URL requires TLS.
    pub tls: Tls,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

impl Endpoint {
    /// `url`, trusting `ca_file` (PEM) when given, else the system's roots.
    pub fn new(url: &str, ca_file: Option<&Path>) -> io::Result<Endpoint> {
        Ok(Endpoint {
            url: url.to_owned(),
            tls: Tls::new(ca_file)?,
        })
    }
}

impl From<String> for Endpoint {
    /// `url` with the system's roots.
    fn from(url: String) -> Endpoint {
        Endpoint {
            url,
            tls: Tls::new(None).unwrap_or_else(|_| Tls::empty()),
        }
    }
}

impl From<&str> for Endpoint {
    fn from(url: &str) -> Endpoint {
        Endpoint::from(url.to_owned())
    }
}

impl From<&String> for Endpoint {
    fn from(url: &String) -> Endpoint {
        Endpoint::from(url.clone())
    }
}

/// A rustls client configuration as tokio-postgres's connector.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Trusts the certificates of `ca_file`, or the system's roots when `None`.
    pub fn new(ca_file: Option<&Path>) -> io::Result<Tls> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for cert in read_pem(path)? {
                    roots.add(cert).map_err(|e| bad_ca(path, e.to_string()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // One unusable system root must not take the others with it.
                    let _ = roots.add(cert);
                }
            }
        }
        Ok(Tls::with_roots(roots))
    }

    /// A connector that trusts nothing: TLS fails, plaintext (`sslmode=disable`) works.
    fn empty() -> Tls {
        Tls::with_roots(rustls::RootCertStore::empty())
    }

    fn with_roots(roots: rustls::RootCertStore) -> Tls {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Tls {
            config: Arc::new(config),
        }
    }
}

fn bad_ca(path: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("store.postgres.ca_file {}: {why}", path.display()),
    )
}

fn read_pem(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| bad_ca(path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_ca(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad_ca(path, "no CERTIFICATE block".into()));
    }
    Ok(certs)
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, Self::Error> {
        Ok(Connect {
            config: self.config.clone(),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One connection's TLS handshake.
pub struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(TlsStream(connector.connect(self.name, stream).await?))
        })
    }
}

/// A TLS stream to the server.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}
