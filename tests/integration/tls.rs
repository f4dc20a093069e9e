//! TLS settings: `tls.session_resumption` (on by default; off makes every connection a full
//! handshake) and the server's cipher-suite preference.

use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::{BASE_SERVER_YAML, Running, TestConfig, start};

const HOST: &str = "mta-sts.resume.example";

/// Connects, fetches the policy (so the client reads the server's tickets), returns the kind
/// of handshake that connection had.
async fn fetch(running: &Running, tls: Arc<rustls::ClientConfig>) -> HandshakeKind {
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    let stream = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
    let kind = stream.get_ref().1.handshake_kind().unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri(mta_stsd::http::POLICY_PATH)
        .header(http::header::HOST, HOST)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    kind
}

/// The kinds of two handshakes in a row by one client (one session cache).
async fn two_handshakes(server_yaml: &str) -> (HandshakeKind, HandshakeKind) {
    let cfg = TestConfig::with_server(server_yaml);
    cfg.simple_tenant("resume.example");
    let running = start(&cfg).await;
    let tls = running.client().tls_config(&[b"http/1.1"]);
    let first = fetch(&running, tls.clone()).await;
    let second = fetch(&running, tls).await;
    running.stop().await;
    (first, second)
}

#[tokio::test]
async fn resumption_is_on_by_default() {
    let (first, second) = two_handshakes(BASE_SERVER_YAML).await;
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(second, HandshakeKind::Resumed);
}

#[tokio::test]
async fn resumption_off_makes_every_handshake_full() {
    let yaml = format!("{BASE_SERVER_YAML}tls:\n  session_resumption: false\n");
    let (first, second) = two_handshakes(&yaml).await;
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(second, HandshakeKind::Full);
}

#[tokio::test]
async fn server_prefers_aes_128_gcm_over_the_clients_first_choice() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("resume.example");
    let running = start(&cfg).await;
    let client = running.client();
    // rustls clients list AES-256-GCM-SHA384 first.
    let default = client.tls_config(&[b"http/1.1"]);
    assert_eq!(
        default.crypto_provider().cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    // A client that only speaks ChaCha20 still gets it.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(running.ca.clone()).unwrap();
    let mut only_chacha = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    only_chacha.alpn_protocols = vec![b"http/1.1".to_vec()];
    for (config, expected) in [
        (default, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
        (
            Arc::new(only_chacha),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let tcp = TcpStream::connect(running.addr).await.unwrap();
        let name = ServerName::try_from(HOST).unwrap();
        let stream = TlsConnector::from(config).connect(name, tcp).await.unwrap();
        let suite = stream.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(suite.suite(), expected);
    }
    running.stop().await;
}

/// A ClientHello larger than one TLS record (big ALPN lists and post-quantum key shares make
/// these real), written in one burst as 16 KiB records: the server must read both records
/// before it looks at the hello.
#[tokio::test]
async fn a_client_hello_over_16_kib_in_one_write_completes() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("resume.example");
    let running = start(&cfg).await;
    let mut config = (*running.client().tls_config(&[])).clone();
    // 80 protocol names of 240 bytes: about 19 KB of ALPN, then the one the server speaks.
    config.alpn_protocols = (0..80u8)
        .map(|i| {
            let mut name = vec![b'x'; 240];
            name[0] = i;
            name
        })
        .chain([b"http/1.1".to_vec()])
        .collect();
    let addr = running.addr;
    let response = tokio::task::spawn_blocking(move || big_hello_fetch(addr, config))
        .await
        .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200 OK\r\n"),
        "got {response:?}"
    );
    running.stop().await;
}

/// Writes the whole first flight of `config`'s ClientHello in one `write_all`, finishes the
/// handshake over the same socket and returns the answer to one policy request.
fn big_hello_fetch(addr: std::net::SocketAddr, config: rustls::ClientConfig) -> String {
    use std::io::{Read, Write};
    let name = ServerName::try_from(HOST).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    // rustls fragments at 16 KiB: the hello spans two full-size-limit records.
    assert!(
        hello.len() > 16 * 1024 + 5,
        "hello is {} bytes",
        hello.len()
    );
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    tcp.write_all(&hello).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n",
        mta_stsd::http::POLICY_PATH
    );
    if let Err(e) = tls.write_all(request.as_bytes()) {
        return format!("handshake failed: {e}");
    }
    let mut out = Vec::new();
    if let Err(e) = tls.read_to_end(&mut out) {
        return format!("read failed after {} bytes: {e}", out.len());
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bulk_tenants(n: usize) -> String {
    (0..n)
        .map(|i| format!("- {{domain: t{i:04}.example, mode: testing, mx: [mx.example.net]}}\n"))
        .collect()
}

/// A bulk of tenants is queued for the internal CA, not issued on the start-up path; the
/// first handshake of a queued host issues its certificate there and then (here with no
/// background worker running, so only that path can serve it), and the host is ready only
/// once its certificate is served.
#[tokio::test]
async fn a_queued_certificate_is_issued_at_the_first_handshake() {
    let cfg = TestConfig::new();
    cfg.tenant("bulk.yaml", &bulk_tenants(1000));
    crate::common::init_crypto();
    let daemon = mta_stsd::daemon::Daemon::build(cfg.path()).expect("daemon builds");
    let (board, registry) = (daemon.board().clone(), daemon.registry().clone());
    let host = "mta-sts.t0999.example";
    assert_eq!(
        board.get(host).unwrap().state,
        mta_stsd::certs::CertState::Pending
    );
    let snapshot = registry.load();
    let tenant = snapshot.get(host).unwrap();
    let now = mta_stsd::util::unix_now();
    assert!(!mta_stsd::publish::is_ready(&snapshot, &board, tenant, now));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(mta_stsd::server::run(
        listener,
        daemon.server().clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = crate::common::Client::new(addr, cfg.ca_der());
    let got = client.get_policy(host).await.expect("served after issuing");
    assert!(String::from_utf8_lossy(&got.body).starts_with("version: STSv1\r\n"));
    assert_eq!(
        board.get(host).unwrap().state,
        mta_stsd::certs::CertState::Valid
    );
    assert!(mta_stsd::publish::is_ready(&snapshot, &board, tenant, now));
    // The others still wait for the workers (not started here).
    let pending = board
        .all()
        .into_iter()
        .filter(|(_, s)| s.state == mta_stsd::certs::CertState::Pending)
        .count();
    assert_eq!(pending, 999);
    let _ = stop.send(());
    serve.await.unwrap();
}

/// With the daemon running, the background workers issue every queued certificate.
#[tokio::test]
async fn the_workers_issue_every_queued_certificate() {
    let cfg = TestConfig::new();
    cfg.tenant("bulk.yaml", &bulk_tenants(1000));
    let running = start(&cfg).await;
    let all_valid = crate::common::eventually(std::time::Duration::from_secs(60), || async {
        let board = running.board.all();
        board.len() == 1000
            && board
                .iter()
                .all(|(_, s)| s.state == mta_stsd::certs::CertState::Valid)
    })
    .await;
    assert!(all_valid, "certificates still pending");
    let not_ready = crate::common::admin_get(running.admin_addr, "/api/v1/tenants?ready=false")
        .await
        .json();
    assert_eq!(not_ready["total"], 0);
    running
        .client()
        .get_policy("mta-sts.t0500.example")
        .await
        .unwrap();
    running.stop().await;
}
