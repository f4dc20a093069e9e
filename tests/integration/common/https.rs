//! The HTTPS client: tokio-rustls + hyper, trusting only one CA, sending any SNI.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::init_crypto;

/// What a fetch returned.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

/// An HTTPS client that trusts only one CA and connects to one address whatever the name.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub ca: CertificateDer<'static>,
}

impl Client {
    pub fn new(addr: SocketAddr, ca: CertificateDer<'static>) -> Self {
        init_crypto();
        Client { addr, ca }
    }

    /// A rustls client config trusting only the CA, offering `alpn`.
    pub fn tls_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// Performs a TLS handshake with `sni`; returns the negotiated ALPN or the error.
    pub async fn handshake(
        &self,
        sni: &str,
        alpn: &[&[u8]],
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        TlsConnector::from(self.tls_config(alpn))
            .connect(name, tcp)
            .await
    }

    /// Like [`Client::handshake`], from the loopback address `from` (any of 127.0.0.0/8), so
    /// one test can be several clients.
    pub async fn handshake_from(
        &self,
        from: std::net::IpAddr,
        sni: &str,
        alpn: &[&[u8]],
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let tcp = socket.connect(self.addr).await?;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        TlsConnector::from(self.tls_config(alpn))
            .connect(name, tcp)
            .await
    }

    /// GET the policy of `host` (SNI and Host both `host`) over HTTP/1.1.
    pub async fn get_policy(&self, host: &str) -> Result<Fetched, String> {
        self.request(host, host, Method::GET, mta_stsd::http::POLICY_PATH, false)
            .await
    }

    /// One request on a fresh connection. `h2` selects HTTP/2 by ALPN.
    pub async fn request(
        &self,
        sni: &str,
        host_header: &str,
        method: Method,
        path: &str,
        h2: bool,
    ) -> Result<Fetched, String> {
        self.send(sni, host_header, method, path, &[], Bytes::new(), h2)
            .await
    }

    /// POSTs a TLS-RPT report to `https://<report_host>/tlsrpt/<domain>` over HTTP/1.1.
    pub async fn post_report(
        &self,
        report_host: &str,
        domain: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Fetched, String> {
        self.send(
            report_host,
            report_host,
            Method::POST,
            &format!("/tlsrpt/{domain}"),
            &[("content-type", content_type)],
            Bytes::from(body),
            false,
        )
        .await
    }

    /// One request with headers and a body on a fresh connection.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        sni: &str,
        host_header: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        h2: bool,
    ) -> Result<Fetched, String> {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = self
            .handshake(sni, alpn)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let io = TokioIo::new(tls);
        let mut builder = if h2 {
            Request::builder()
                .method(method)
                .uri(format!("https://{host_header}{path}"))
        } else {
            Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, host_header)
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder.body(Full::new(body)).unwrap();
        let resp = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            send.send_request(req)
                .await
                .map_err(|e| format!("request: {e}"))?
        };
        let status = resp.status();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Fetched {
            status,
            headers,
            body,
            version,
        })
    }
}
