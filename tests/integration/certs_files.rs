//! `issuer: files`: PEM pairs per host, served when good, clear errors when not.

use std::path::Path;
use std::process::Command;

use http::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;

use crate::common::{Client, TestConfig, binary, start};

/// A throwaway CA that signs leaves for the test (the delegated-DNS tests use it too).
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) der: CertificateDer<'static>,
    /// The CA certificate as PEM, for a `--ca-file`.
    pub(crate) pem: String,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (chain PEM, key PEM) for `names`, valid from `from` to `to` (Unix days offsets).
    pub(crate) fn leaf(&self, names: &[&str], days_from: i64, days_to: i64) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        self.leaf_between(
            names,
            now + time::Duration::days(days_from),
            now + time::Duration::days(days_to),
        )
    }

    /// (chain PEM, key PEM) for `names`, valid from `not_before` to `not_after`.
    pub(crate) fn leaf_between(
        &self,
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub(crate) fn write_pair(dir: &Path, host: &str, pem: &(String, String)) {
    let folder = dir.join(host);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tls.crt"), &pem.0).unwrap();
    std::fs::write(folder.join("tls.key"), &pem.1).unwrap();
}

fn files_config() -> TestConfig {
    let cfg = TestConfig::with_server(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: files\nfiles:\n  dir: certs\n",
    );
    for d in [
        "good.example",
        "missing.example",
        "mismatch.example",
        "expired.example",
        "wrongname.example",
    ] {
        cfg.simple_tenant(d);
    }
    cfg
}

#[tokio::test]
async fn good_pairs_are_served_and_bad_ones_leave_only_that_tenant_pending() {
    let cfg = files_config();
    let ca = TestCa::new();
    let certs = cfg.path().join("certs");
    write_pair(
        &certs,
        "mta-sts.good.example",
        &ca.leaf(&["mta-sts.good.example"], -1, 30),
    );
    let other = ca.leaf(&["mta-sts.mismatch.example"], -1, 30);
    let third = ca.leaf(&["mta-sts.mismatch.example"], -1, 30);
    write_pair(&certs, "mta-sts.mismatch.example", &(other.0, third.1));
    write_pair(
        &certs,
        "mta-sts.expired.example",
        &ca.leaf(&["mta-sts.expired.example"], -30, -1),
    );
    write_pair(
        &certs,
        "mta-sts.wrongname.example",
        &ca.leaf(&["mta-sts.other.example"], -1, 30),
    );

    // `check` names every problem and fails.
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let base = cfg.path().join("certs");
    let expect = [
        format!(
            "certificate for mta-sts.missing.example: {}: No such file or directory",
            base.join("mta-sts.missing.example/tls.crt").display()
        ),
        "the private key does not match the certificate".to_owned(),
        format!(
            "{}: certificate expired at",
            base.join("mta-sts.expired.example/tls.crt").display()
        ),
        format!(
            "{}: certificate is not valid for mta-sts.wrongname.example",
            base.join("mta-sts.wrongname.example/tls.crt").display()
        ),
    ];
    for e in &expect {
        assert!(text.contains(e.as_str()), "missing {e:?} in:\n{text}");
    }
    assert!(!text.contains("mta-sts.good.example"), "{text}");

    let running = start_with_ca(&cfg, ca.der.clone()).await;
    let client = Client::new(running.0, ca.der.clone());
    assert_eq!(
        client
            .get_policy("mta-sts.good.example")
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    for bad in [
        "mta-sts.missing.example",
        "mta-sts.mismatch.example",
        "mta-sts.expired.example",
        "mta-sts.wrongname.example",
    ] {
        let err = client.handshake(bad, &[b"http/1.1"]).await.expect_err(bad);
        assert!(
            err.to_string().to_lowercase().contains("internalerror"),
            "{bad}: {err}"
        );
    }
    let _ = running.1.send(());
}

/// Like `common::start`, but the files issuer has no internal CA to read.
async fn start_with_ca(
    cfg: &TestConfig,
    _ca: CertificateDer<'static>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    crate::common::init_crypto();
    let daemon = mta_stsd::daemon::Daemon::build(cfg.path()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listeners = mta_stsd::daemon::Listeners {
        https: listener,
        admin: None,
        dns: None,
    };
    tokio::spawn(daemon.run(listeners, async move {
        let _ = rx.await;
    }));
    (addr, tx)
}

#[tokio::test]
async fn internal_ca_is_reused_across_restarts() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("example.com");
    let first = start(&cfg).await;
    let ca1 = first.ca.clone();
    first.stop().await;
    let second = start(&cfg).await;
    assert_eq!(ca1, second.ca, "the CA is created once and reused");
    assert_eq!(
        second
            .client()
            .get_policy("mta-sts.example.com")
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cfg.path().join("state/ca/ca.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    second.stop().await;
}
