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
