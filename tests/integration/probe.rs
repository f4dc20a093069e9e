//! The STARTTLS probe against a real SMTP server (aiosmtpd) with certificates made here: each
//! certificate problem gives the result-type a sending MTA would report (RFC 8460 §4.3).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mta_stsd::probe::{ProbeOptions, ProbeOutcome, Prober, Step, TrustRoots, probe_mx};

use crate::certs_files::TestCa;
use crate::common::{SmtpServer, init_crypto};

const MX: &str = "mx.probe.test";

fn options(ca: &TestCa) -> ProbeOptions {
    let mut opts = ProbeOptions::new(
        "probe.operator.test",
        TrustRoots::Only(vec![ca.der.clone()]),
    )
    .unwrap();
    opts.step_timeout = Duration::from_secs(10);
    opts
}

/// aiosmtpd offering STARTTLS with `pem` (chain, key), files in `dir`.
async fn tls_server(dir: &Path, pem: &(String, String)) -> SmtpServer {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, &pem.0).unwrap();
    std::fs::write(&key, &pem.1).unwrap();
    SmtpServer::start(MX, Some((&cert, &key))).await
}

/// The probe's verdict on `MX` at `server`, with the certificate `pem` and trusting `ca`.
async fn probe_with(ca: &TestCa, pem: &(String, String)) -> ProbeOutcome {
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), pem).await;
    probe_mx(&options(ca), MX, server.addr).await
}

fn result_type(outcome: &ProbeOutcome) -> &str {
    outcome.result_type().map_or("none", |r| r.as_str())
}

#[tokio::test]
async fn a_valid_certificate_for_the_mx_host_is_ok() {
    let ca = TestCa::new();
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let not_after = now + time::Duration::days(30);
    let pem = ca.leaf_between(&[MX], now - time::Duration::days(1), not_after);
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), &pem).await;
    // An MX answer is an absolute name: its final dot is not part of the certificate's name.
    let outcome = probe_mx(&options(&ca), "MX.probe.test.", server.addr).await;
    let ProbeOutcome::Ok(session) = &outcome else {
        panic!("expected ok, got {outcome}");
    };
    assert_eq!(session.version, "TLSv1.3");
    assert!(session.cipher.starts_with("TLS13_"), "{}", session.cipher);
    assert_eq!(session.not_after, not_after.unix_timestamp());
    assert!(outcome.to_string().starts_with("ok: TLSv1.3"), "{outcome}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_host_mismatch() {
    let ca = TestCa::new();
    let outcome = probe_with(&ca, &ca.leaf(&["mx.elsewhere.test"], -1, 30)).await;
    assert_eq!(
        result_type(&outcome),
        "certificate-host-mismatch",
        "{outcome}"
    );
}

#[tokio::test]
async fn an_expired_certificate_is_expired() {
    let ca = TestCa::new();
    let outcome = probe_with(&ca, &ca.leaf(&[MX], -30, -1)).await;
    assert_eq!(result_type(&outcome), "certificate-expired", "{outcome}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_not_trusted() {
    let ca = TestCa::new();
    let other = TestCa::new();
    // Both CAs carry rcgen's default name, so the chain reaches the trusted one by name and
    // its signature check fails.
    let outcome = probe_with(&ca, &other.leaf(&[MX], -1, 30)).await;
    assert_eq!(
        result_type(&outcome),
        "certificate-not-trusted",
        "{outcome}"
    );
    assert!(outcome.to_string().contains("BadSignature"), "{outcome}");
}

#[tokio::test]
async fn a_self_signed_certificate_is_not_trusted() {
    let ca = TestCa::new();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![MX.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, MX);
    let cert = params.self_signed(&key).unwrap();
    let outcome = probe_with(&ca, &(cert.pem(), key.serialize_pem())).await;
    assert_eq!(
        result_type(&outcome),
        "certificate-not-trusted",
        "{outcome}"
    );
    assert!(outcome.to_string().contains("UnknownIssuer"), "{outcome}");
}

#[tokio::test]
async fn a_server_without_starttls_is_starttls_not_supported() {
    init_crypto();
    let ca = TestCa::new();
    let server = SmtpServer::start(MX, None).await;
    let outcome = probe_mx(&options(&ca), MX, server.addr).await;
    assert_eq!(result_type(&outcome), "starttls-not-supported", "{outcome}");
    assert!(outcome.to_string().contains("no STARTTLS"), "{outcome}");
}

#[tokio::test]
async fn a_refused_starttls_is_starttls_not_supported() {
    init_crypto();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let pem = ca.leaf(&[MX], -1, 30);
    std::fs::write(&cert, &pem.0).unwrap();
    std::fs::write(&key, &pem.1).unwrap();
    let server = SmtpServer::start_refusing_starttls(MX, &cert, &key).await;
    let outcome = probe_mx(&options(&ca), MX, server.addr).await;
    assert_eq!(result_type(&outcome), "starttls-not-supported", "{outcome}");
    assert!(
        outcome.to_string().contains("STARTTLS refused: 454"),
        "{outcome}"
    );
}

/// A loopback port nobody listens on.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_closed_port_is_no_verdict() {
    init_crypto();
    let ca = TestCa::new();
    let outcome = probe_mx(&options(&ca), MX, closed_port()).await;
    assert!(
        matches!(
            outcome,
            ProbeOutcome::Unreachable {
                step: Step::Connect,
                ..
            }
        ),
        "{outcome}"
    );
    assert_eq!(outcome.result_type(), None);
}

#[tokio::test]
async fn the_prober_tries_the_next_address_and_then_waits_an_interval() {
    let ca = TestCa::new();
    init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), &ca.leaf(&[MX], -1, 30)).await;
    let prober = Prober::new(Arc::new(options(&ca)), 2, Duration::from_secs(3600));
    let addrs = [closed_port(), server.addr];
    let outcome = prober
        .probe(MX, &addrs)
        .await
        .expect("first probe of the host");
    assert!(matches!(outcome, ProbeOutcome::Ok(_)), "{outcome}");
    assert!(
        prober.probe(MX, &addrs).await.is_err(),
        "second probe within the interval"
    );
}
