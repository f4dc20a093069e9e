//! Shared test harness: configurations in temp dirs, the daemon on 127.0.0.1:0, and a real
//! HTTPS client (tokio-rustls + hyper) that trusts only the test CA and sends any SNI.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
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
    /// The admin listener (always started by the harness, on 127.0.0.1:0).
    pub admin_addr: SocketAddr,
    pub reloader: Arc<mta_stsd::reload::Reloader>,
    pub board: Arc<mta_stsd::certs::CertBoard>,
    pub resolver: Arc<mta_stsd::certs::CertResolver>,
    /// The ACME provider, when the issuer is `acme`.
    pub acme: Option<Arc<mta_stsd::certs::acme::AcmeProvider>>,
    pub tlsrpt: Arc<mta_stsd::tlsrpt::TlsRpt>,
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
    run_daemon(daemon, listener, config.ca_der()).await
}

/// Runs a built daemon on a pre-bound listener (and an admin listener on 127.0.0.1:0); clients
/// trust `ca`. Returns once `/readyz` answers 200.
pub async fn run_daemon(
    mut daemon: mta_stsd::daemon::Daemon,
    listener: tokio::net::TcpListener,
    ca: CertificateDer<'static>,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    daemon.set_admin_listener(admin);
    let daemon_server = daemon.server.clone();
    let registry = daemon.registry.clone();
    let reloader = daemon.reloader.clone();
    let board = daemon.board.clone();
    let resolver = daemon.resolver.clone();
    let acme = daemon.acme.as_ref().map(|a| a.provider.clone());
    let tlsrpt = daemon.tlsrpt.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(listener, async move {
        let _ = rx.await;
    }));
    // Ready means the watcher, SIGHUP handler and listeners are all in place.
    let ready = eventually(Duration::from_secs(10), || async {
        admin_get(admin_addr, "/readyz").await.status == StatusCode::OK
    })
    .await;
    assert!(ready, "daemon did not become ready");
    Running {
        addr,
        ca,
        daemon_server,
        registry,
        admin_addr,
        reloader,
        board,
        resolver,
        acme,
        tlsrpt,
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

/// A plain-HTTP response from the admin listener.
#[derive(Debug)]
pub struct AdminResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl AdminResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request to the admin listener at `addr`, with optional extra headers.
pub async fn admin_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> AdminResponse {
    let tcp = TcpStream::connect(addr).await.expect("admin connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("admin handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("admin request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    AdminResponse {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
    }
}

/// `GET path` on the admin listener.
pub async fn admin_get(addr: SocketAddr, path: &str) -> AdminResponse {
    admin_request(addr, Method::GET, path, &[]).await
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

/// `mta-stsd serve` as a child process, logging JSON; killed when dropped.
pub struct ServeProcess {
    child: std::process::Child,
    /// The HTTPS address from the `mta-stsd serving` log line.
    pub addr: SocketAddr,
    /// Every log line so far, for failure messages.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts the real binary on `config` and waits (up to 60 s, reading its log, no sleeps)
    /// for the `mta-stsd serving` line with the bound address.
    pub fn start(config: &Path) -> ServeProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary())
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn mta-stsd serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let lines = log.clone();
        // Keeps draining stderr after the address is known, so the child never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "mta-stsd serving"
                    && let Some(addr) = v["https"].as_str().and_then(|a| a.parse().ok())
                {
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => ServeProcess { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mta-stsd serve did not log its address; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// SIGKILL: no destructors, no shutdown, no checkpoint.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real binary with `args` and `stdin`; returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&std::ffi::OsStr], stdin: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(binary())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mta-stsd");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Gzip `data` in memory.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Reads `tests/fixtures/tlsrpt/<name>`.
pub fn tlsrpt_fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/tlsrpt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A one-policy `sts` report for `domain` covering the UTC day `day`, with `failures` of
/// (result-type, MX, sessions).
pub fn report_json(
    org: &str,
    report_id: &str,
    domain: &str,
    day: time::Date,
    successful: u64,
    failures: &[(&str, &str, u64)],
) -> Vec<u8> {
    let start = day.midnight().assume_utc();
    let end = start + time::Duration::days(1);
    let fmt = &time::format_description::well_known::Rfc3339;
    let failed: u64 = failures.iter().map(|f| f.2).sum();
    let details: Vec<serde_json::Value> = failures
        .iter()
        .map(|(kind, mx, n)| {
            serde_json::json!({"result-type": kind, "receiving-mx-hostname": mx,
                "failed-session-count": n})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "organization-name": org,
        "date-range": {"start-datetime": start.format(fmt).unwrap(),
                       "end-datetime": end.format(fmt).unwrap()},
        "contact-info": null,
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain,
                       "policy-string": ["version: STSv1", "mode: testing"],
                       "mx-host": [format!("mx.{domain}")]},
            "summary": {"total-successful-session-count": successful,
                        "total-failure-session-count": failed},
            "failure-details": details,
        }]
    }))
    .unwrap()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for j in 0..4 {
            if j <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * j)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An RFC 8460 §5.3 report mail from `submitter` carrying `json` gzipped; with
/// `authserv_id`, an Authentication-Results header from it saying dkim=pass for the submitter.
pub fn report_mail(
    submitter: &str,
    domain: &str,
    json: &[u8],
    authserv_id: Option<&str>,
) -> Vec<u8> {
    let auth = authserv_id
        .map(|id| {
            format!(
                "Authentication-Results: {id};\r\n\tdkim=pass header.d={submitter} header.s=s1\r\n"
            )
        })
        .unwrap_or_default();
    format!(
        "{auth}From: TLS reports <tlsrpt@{submitter}>\r\n\
         To: tlsrpt@operator.example\r\n\
         Subject: Report Domain: {domain} Submitter: {submitter}\r\n\
         TLS-Report-Domain: {domain}\r\n\
         TLS-Report-Submitter: {submitter}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         An aggregate TLS report.\r\n\
         --b1\r\n\
         Content-Type: application/tlsrpt+gzip\r\n\
         Content-Disposition: attachment; filename=\"{submitter}!{domain}!1!2.json.gz\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {}\r\n\
         --b1--\r\n",
        base64(&gzip(json))
    )
    .into_bytes()
}
