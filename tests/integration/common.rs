//! Shared test harness: configurations in temp dirs, the daemon on 127.0.0.1:0, and a real
//! HTTPS client (tokio-rustls + hyper) that trusts only the test CA and sends any SNI.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Installs the process-wide crypto provider once (tests share one process).
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Daemon logs in test output (shown for failing tests), filtered by RUST_LOG.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mta_stsd=info".into()),
        )
        .try_init();
}

/// A configuration directory in a temp dir.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
}

/// The server file every test starts from: loopback, ephemeral port, internal CA.
pub const BASE_SERVER_YAML: &str = "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\n";

impl TestConfig {
    /// A config with the base server file and no tenants.
    pub fn new() -> Self {
        Self::with_server(BASE_SERVER_YAML)
    }

    /// A config with the given server file.
    pub fn with_server(server_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
        std::fs::write(dir.path().join("mta-stsd.yaml"), server_yaml).unwrap();
        TestConfig { dir }
    }

    /// The configuration directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `tenants/<name>` with `yaml`.
    pub fn tenant(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join("tenants").join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Writes a simple testing-mode tenant for `domain`.
    pub fn simple_tenant(&self, domain: &str) -> PathBuf {
        self.tenant(
            &format!("{domain}.yaml"),
            &format!("domain: {domain}\nmode: testing\nmx: [mx.{domain}]\nmax_age: 86400\n"),
        )
    }

    /// The internal CA certificate (exists once the daemon was built).
    pub fn ca_der(&self) -> CertificateDer<'static> {
        let pem = std::fs::read(self.dir.path().join("state/ca/ca.crt")).expect("CA certificate");
        CertificateDer::from_pem_slice(&pem).expect("CA PEM")
    }
}

/// A daemon running in this process on a pre-bound loopback listener.
pub struct Running {
    pub addr: SocketAddr,
    pub ca: CertificateDer<'static>,
    pub daemon_server: Arc<mta_stsd::server::Server>,
    pub registry: Arc<mta_stsd::registry::Registry>,
    pub board: Arc<mta_stsd::certs::CertBoard>,
    pub resolver: Arc<mta_stsd::certs::CertResolver>,
    /// The ACME provider, when the issuer is `acme`.
    pub acme: Option<Arc<mta_stsd::certs::acme::AcmeProvider>>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl Running {
    /// Asks the daemon to stop and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("daemon stops within 30 s")
                .unwrap();
        }
    }

    /// A client for this daemon.
    pub fn client(&self) -> Client {
        Client::new(self.addr, self.ca.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Builds and starts the daemon for `config` on 127.0.0.1:0.
pub async fn start(config: &TestConfig) -> Running {
    init_crypto();
    let daemon = mta_stsd::daemon::Daemon::build(config.path()).expect("daemon builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    run_daemon(daemon, listener, config.ca_der())
}

/// Runs a built daemon on a pre-bound listener; clients trust `ca`.
pub fn run_daemon(
    daemon: mta_stsd::daemon::Daemon,
    listener: tokio::net::TcpListener,
    ca: CertificateDer<'static>,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let daemon_server = daemon.server.clone();
    let registry = daemon.registry.clone();
    let board = daemon.board.clone();
    let resolver = daemon.resolver.clone();
    let acme = daemon.acme.as_ref().map(|a| a.provider.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(listener, async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        ca,
        daemon_server,
        registry,
        board,
        resolver,
        acme,
        stop: Some(tx),
        task: Some(task),
    }
}

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
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = self
            .handshake(sni, alpn)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let io = TokioIo::new(tls);
        let req = if h2 {
            Request::builder()
                .method(method)
                .uri(format!("https://{host_header}{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap()
        } else {
            Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, host_header)
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
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

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The path of the real binary built by cargo for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mta-stsd"))
}
