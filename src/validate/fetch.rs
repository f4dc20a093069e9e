//! The policy fetched the way a sender fetches it (RFC 8461 §3.3): HTTPS to the resolved
//! address with SNI `mta-sts.<domain>`, the certificate checked against the trusted roots and
//! the host name, no redirect followed, the body read under the 64 KiB cap.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::time::timeout;

use crate::policy::MAX_BODY_BYTES;

/// What the server answered.
#[derive(Debug)]
pub struct Fetched {
    /// The address that answered.
    pub addr: SocketAddr,
    /// HTTP status.
    pub status: u16,
    /// `Location`, for a redirect.
    pub location: Option<String>,
    /// `Content-Type`, as sent.
    pub content_type: Option<String>,
    /// The body, or `None` when it was longer than [`MAX_BODY_BYTES`].
    pub body: Option<Bytes>,
}

/// The client TLS settings: the roots in `ca_file` when given (only those, so a test or a
/// private CA means exactly what it says), else the system's.
pub fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            for cert in read_roots(file)? {
                roots.add(cert).context("adding a trusted root")?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file of trusted roots; none is an error.
pub fn read_roots(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .with_context(|| format!("reading {}", file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate in it", file.display());
    }
    Ok(certs)
}

/// GET `https://<host>/.well-known/mta-sts.txt` from `ip:port`, every step within `limit`.
pub async fn fetch(
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    ip: IpAddr,
    port: u16,
    limit: Duration,
) -> Result<Fetched, String> {
    let addr = SocketAddr::new(ip, port);
    let tcp = timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
    let stream = timeout(
        limit,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    .map_err(|_| format!("TLS handshake with {addr} timed out"))?
    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP with {addr}: {e}"))?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get("/.well-known/mta-sts.txt")
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "mta-stsd-validate")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = timeout(limit, read(&mut sender, request, addr)).await;
    driver.abort();
    result.map_err(|_| format!("{addr} did not answer within {limit:?}"))?
}

async fn read(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    request: http::Request<http_body_util::Empty<Bytes>>,
    addr: SocketAddr,
) -> Result<Fetched, String> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request to {addr}: {e}"))?;
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let location = header(http::header::LOCATION);
    let content_type = header(http::header::CONTENT_TYPE);
    let status = response.status().as_u16();
    // One byte over the cap tells "too long" from "exactly the cap".
    let limited = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES + 1);
    let body = match limited.collect().await {
        Ok(collected) => Some(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => None,
        Err(e) => return Err(format!("reading the body from {addr}: {e}")),
    };
    let body = body.filter(|b| b.len() <= MAX_BODY_BYTES);
    Ok(Fetched {
        addr,
        status,
        location,
        content_type,
        body,
    })
}
