//! Clients: TLS (trusting only the soak's internal CA) with HTTP/1.1 or h2 over hyper, and the
//! plain-HTTP admin client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Client TLS configurations: with and without session resumption, per ALPN.
pub struct Tls {
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
    h1_full: Arc<rustls::ClientConfig>,
    h2_full: Arc<rustls::ClientConfig>,
}

fn config(ca: &CertificateDer<'static>, alpn: &[u8], resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("CA certificate");
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

impl Tls {
    pub fn new(ca: &CertificateDer<'static>) -> Self {
        Tls {
            h1: config(ca, b"http/1.1", true),
            h2: config(ca, b"h2", true),
            h1_full: config(ca, b"http/1.1", false),
            h2_full: config(ca, b"h2", false),
        }
    }

    pub fn pick(&self, h2: bool, resume: bool) -> Arc<rustls::ClientConfig> {
        match (h2, resume) {
            (false, true) => self.h1.clone(),
            (true, true) => self.h2.clone(),
            (false, false) => self.h1_full.clone(),
            (true, false) => self.h2_full.clone(),
        }
    }
}

/// A TCP connection to `addr` from the loopback address `from` (when given).
pub async fn tcp(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(from) = from {
        socket.bind(SocketAddr::new(from, 0))?;
    }
    socket.connect(addr).await
}

/// A TLS connection with `sni`.
pub async fn tls(
    addr: SocketAddr,
    from: Option<IpAddr>,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = tcp(addr, from).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// An HTTP connection to one host (SNI and Host are the same name).
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// Opens an HTTP/1.1 or h2 connection to `host`.
pub async fn open(
    addr: SocketAddr,
    from: Option<IpAddr>,
    host: &str,
    tls_cfg: Arc<rustls::ClientConfig>,
    h2: bool,
) -> Result<Conn, String> {
    let stream = tls(addr, from, host, tls_cfg).await?;
    let io = TokioIo::new(stream);
    if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn::H2(send))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn::H1(send))
    }
}

/// A response: status and body.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Conn {
    /// Whether the connection can take another request (false once the server closed it).
    pub async fn ready(&mut self) -> bool {
        match self {
            Conn::H1(s) => s.ready().await.is_ok(),
            Conn::H2(s) => s.ready().await.is_ok(),
        }
    }

    /// Sends one request and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let mut b = match self {
            Conn::H1(_) => Request::builder()
                .uri(path)
                .header(http::header::HOST, host),
            Conn::H2(_) => Request::builder().uri(format!("https://{host}{path}")),
        }
        .method(method);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
        let resp = match self {
            Conn::H1(s) => s.send_request(req).await,
            Conn::H2(s) => s.send_request(req).await,
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    /// Another handle on the same h2 connection (streams multiplexed), or `None` for HTTP/1.1.
    pub fn h2_clone(&self) -> Option<Conn> {
        match self {
            Conn::H2(s) => Some(Conn::H2(s.clone())),
            Conn::H1(_) => None,
        }
    }
}

/// One plain-HTTP request to the admin listener.
pub async fn admin(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Bytes), String> {
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("admin connect: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("admin handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "admin")
            .header(http::header::ACCEPT, "text/plain")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("admin request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("admin body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| "admin request timed out".to_string())?
}

/// GET an admin path as JSON.
pub async fn admin_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let (status, body) = admin(addr, Method::GET, path).await?;
    if status != StatusCode::OK {
        return Err(format!("{path}: {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
}
