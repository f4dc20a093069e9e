//! `mta-stsd validate` against the real binary serving the tenants and an in-test
//! authoritative DNS: a correct tenant passes every check, and each broken one is named.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::rr::{a, cname, mx, txt};
use crate::common::{ServeProcess, TestConfig, TestDns, TestRecord, init_crypto, run_binary};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Where the fake servers of the redirect and wrong-certificate tenants listen.
const REDIRECT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const WRONG_CERT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// `domain`'s tenant file: testing mode, these MX patterns, a mailto rua.
fn tenant(cfg: &TestConfig, domain: &str, patterns: &[&str]) {
    cfg.tenant(
        &format!("{domain}.yaml"),
        &format!(
            "domain: {domain}\nmode: testing\nmx: [{}]\nmax_age: 86400\ntlsrpt:\n  rua: [\"mailto:tlsrpt@{domain}\"]\n",
            patterns.join(", ")
        ),
    );
}

/// The records of a tenant whose DNS is right, given its served id.
fn correct_records(domain: &str, id: &str) -> Vec<TestRecord> {
    vec![
        cname(&format!("mta-sts.{domain}"), "sts.op.test"),
        txt(&format!("_mta-sts.{domain}"), &format!("v=STSv1; id={id}")),
        txt(
            &format!("_smtp._tls.{domain}"),
            &format!("v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"),
        ),
        mx(domain, 10, &format!("mx.{domain}")),
    ]
}

/// A CA of the test's own and a certificate it signs for `names`.
struct TestCa {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    fn server_config(&self, name: &str) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], der)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A one-answer HTTPS server on `addr`: every request gets `response`.
async fn fake_https(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, response: &'static str) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
}

/// Runs `mta-stsd validate` with `extra` arguments off the runtime's threads.
async fn validate(
    config: &Path,
    dns: SocketAddr,
    port: u16,
    ca: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args: Vec<std::ffi::OsString> = vec![
        "validate".into(),
        "--config".into(),
        config.into(),
        "--nameserver".into(),
        dns.to_string().into(),
        "--https-port".into(),
        port.to_string().into(),
        "--ca-file".into(),
        ca.into(),
    ];
    args.extend(extra.iter().map(Into::into));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_binary(&refs, b"")
    })
    .await
    .unwrap()
}

/// The verdict of `check` for `domain` in the JSON output.
pub(crate) fn verdict<'a>(
    json: &'a serde_json::Value,
    domain: &str,
    check: &str,
) -> &'a serde_json::Value {
    let tenant = json
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["domain"] == domain)
        .unwrap_or_else(|| panic!("{domain} missing in {json:#}"));
    tenant["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["check"] == check)
        .unwrap_or_else(|| panic!("{domain} {check} missing in {tenant:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_class_is_named_and_a_correct_tenant_passes() {
    init_crypto();
    let cfg = TestConfig::with_server(&format!(
        "{}public_hostname: sts.op.test\n",
        crate::common::BASE_SERVER_YAML
    ));
    let domains = [
        "good.test",
        "elsewhere.test",
        "redirect.test",
        "wrongcert.test",
        "stale.test",
        "twice.test",
        "uncovered.test",
        "unused.test",
    ];
    for d in domains {
        tenant(&cfg, d, &[&format!("mx.{d}")]);
    }
    tenant(
        &cfg,
        "unused.test",
        &["mx.unused.test", "backup.unused.test"],
    );
    let (_, set) = mta_stsd::reload::load(cfg.path()).unwrap();
    let id = |d: &str| {
        set.tenants
            .iter()
            .find(|t| t.domain == d)
            .unwrap()
            .policy
            .id
            .clone()
    };

    let daemon = ServeProcess::start(cfg.path());
    let port = daemon.addr.port();
    let mut records = vec![a("sts.op.test", LOCAL), a("web.elsewhere.test", LOCAL)];
    for d in domains {
        let mut own = correct_records(d, &id(d));
        match d {
            "elsewhere.test" => own[0] = cname("mta-sts.elsewhere.test", "web.elsewhere.test"),
            "redirect.test" => own[0] = a("mta-sts.redirect.test", REDIRECT_IP),
            "wrongcert.test" => own[0] = a("mta-sts.wrongcert.test", WRONG_CERT_IP),
            "stale.test" => own[1] = txt("_mta-sts.stale.test", "v=STSv1; id=old1"),
            "twice.test" => own.push(txt("_mta-sts.twice.test", "v=STSv1; id=other2")),
            "uncovered.test" => own[3] = mx("uncovered.test", 10, "mail.uncovered.test"),
            _ => {}
        }
        records.extend(own);
    }
    let dns = TestDns::start("test", &records).await;

    // The fake servers: one answers 301, the other has a certificate for another name; both
    // from a CA the command is told to trust, so only the fault under test shows.
    let fake_ca = TestCa::new();
    let moved = "HTTP/1.1 301 Moved Permanently\r\nLocation: https://www.redirect.test/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    fake_https(
        SocketAddr::from((REDIRECT_IP, port)),
        fake_ca.server_config("mta-sts.redirect.test"),
        moved,
    )
    .await;
    fake_https(
        SocketAddr::from((WRONG_CERT_IP, port)),
        fake_ca.server_config("mta-sts.other.test"),
        moved,
    )
    .await;
    let ca_file = cfg.path().join("trusted.pem");
    let daemon_ca = std::fs::read_to_string(cfg.path().join("state/ca/ca.crt")).unwrap();
    std::fs::write(&ca_file, format!("{daemon_ca}\n{}", fake_ca.cert.pem())).unwrap();

    let (_, human, _) = validate(cfg.path(), dns.addr, port, &ca_file, &[]).await;
    eprintln!("{human}");
    let (code, out, err) = validate(cfg.path(), dns.addr, port, &ca_file, &["--json"]).await;
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(code, 3, "{out}\n{err}");
    let expect = |d: &str, check: &str, status: &str, seen: &str| {
        let v = verdict(&json, d, check);
        assert_eq!(v["status"], status, "{d} {check}: {v:#}");
        assert!(
            v["observed"].as_str().unwrap().contains(seen),
            "{d} {check}: {v:#}"
        );
    };
    for check in [
        "policy-host",
        "policy-fetch",
        "sts-record",
        "tlsrpt-record",
        "mx",
    ] {
        let v = verdict(&json, "good.test", check);
        assert_eq!(v["status"], "ok", "{v:#}");
        assert!(v["action"].is_null(), "{v:#}");
    }
    expect(
        "good.test",
        "policy-host",
        "ok",
        "mta-sts.good.test → sts.op.test",
    );
    expect(
        "elsewhere.test",
        "policy-host",
        "error",
        "web.elsewhere.test",
    );
    expect(
        "redirect.test",
        "policy-fetch",
        "error",
        "301 redirect to https://www.redirect.test/",
    );
    expect("wrongcert.test", "policy-fetch", "error", "certificate");
    expect(
        "stale.test",
        "sts-record",
        "error",
        &format!(
            "stale id: DNS has id=old1, the served policy has id={}",
            id("stale.test")
        ),
    );
    expect("twice.test", "sts-record", "error", "2 v=STSv1 records");
    expect(
        "uncovered.test",
        "mx",
        "error",
        "not covered: mail.uncovered.test",
    );
    let v = verdict(&json, "uncovered.test", "mx");
    assert!(
        v["action"].as_str().unwrap().contains("would refuse"),
        "{v:#}"
    );
    expect(
        "unused.test",
        "mx",
        "warning",
        "patterns matching no MX: backup.unused.test",
    );
    // Each broken tenant fails only where it is broken.
    for d in ["stale.test", "twice.test", "uncovered.test", "unused.test"] {
        expect(d, "policy-fetch", "ok", "200 text/plain");
    }

    // The human form of one good tenant: one line per check, exit 0.
    let (code, out, err) = validate(
        cfg.path(),
        dns.addr,
        port,
        &ca_file,
        &["--domain", "good.test", "--no-starttls"],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("good.test "))
        .collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(
        lines[5].contains("mx-starttls ok: not probed: the STARTTLS probe is off"),
        "{out}"
    );
    assert!(lines.iter().all(|l| l.contains(" ok: ")), "{out}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_certificate_from_an_untrusted_ca_is_an_error() {
    init_crypto();
    let cfg = TestConfig::with_server(&format!(
        "{}public_addresses: [\"127.0.0.1\"]\n",
        crate::common::BASE_SERVER_YAML
    ));
    tenant(&cfg, "good.test", &["mx.good.test"]);
    let (_, set) = mta_stsd::reload::load(cfg.path()).unwrap();
    let id = set.tenants[0].policy.id.clone();
    let daemon = ServeProcess::start(cfg.path());
    let mut records = correct_records("good.test", &id);
    records[0] = a("mta-sts.good.test", LOCAL);
    let dns = TestDns::start("test", &records).await;
    let other = cfg.path().join("other.pem");
    std::fs::write(&other, TestCa::new().cert.pem()).unwrap();
    let (code, out, err) = validate(
        cfg.path(),
        dns.addr,
        daemon.addr.port(),
        &other,
        &["--json"],
    )
    .await;
    assert_eq!(code, 3, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(verdict(&json, "good.test", "policy-host")["status"], "ok");
    let v = verdict(&json, "good.test", "policy-fetch");
    assert_eq!(v["status"], "error", "{v:#}");
    assert!(
        v["observed"].as_str().unwrap().contains("UnknownIssuer"),
        "{v:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_publishes_verdicts_in_the_api_and_metrics() {
    init_crypto();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let records_for = |good_id: &str, bad_id: &str| {
        let mut r = vec![a("sts.op.test", LOCAL)];
        r.extend(correct_records("good.test", good_id));
        let mut bad = correct_records("bad.test", bad_id);
        bad[3] = mx("bad.test", 10, "mail.bad.test");
        r.extend(bad);
        r
    };
    // The ids are known once the tenants are loaded; the DNS must be up before the daemon.
    let cfg = TestConfig::new();
    tenant(&cfg, "good.test", &["mx.good.test"]);
    tenant(&cfg, "bad.test", &["mx.bad.test"]);
    let (_, set) = mta_stsd::reload::load(cfg.path()).unwrap();
    let id = |d: &str| {
        set.tenants
            .iter()
            .find(|t| t.domain == d)
            .unwrap()
            .policy
            .id
            .clone()
    };
    let dns = TestDns::start("test", &records_for(&id("good.test"), &id("bad.test"))).await;
    std::fs::write(
        cfg.path().join("mta-stsd.yaml"),
        format!(
            "{}public_hostname: sts.op.test\nvalidation:\n  interval: 10s\n  timeout: 2s\n  nameservers: [\"{}\"]\n  https_port: {port}\n  ca_file: state/ca/ca.crt\n  starttls: false\n",
            crate::common::BASE_SERVER_YAML,
            dns.addr
        ),
    )
    .unwrap();
    let daemon = mta_stsd::daemon::Daemon::build(cfg.path()).expect("daemon builds");
    let running = crate::common::run_daemon(daemon, listener, cfg.ca_der()).await;
    let admin = running.admin_addr;
    let validation = |d: &'static str| async move {
        let r = crate::common::admin_get(admin, &format!("/api/v1/tenants/{d}")).await;
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["validation"].clone()
    };
    let both = crate::common::eventually(std::time::Duration::from_secs(60), || async {
        !validation("good.test").await.is_null() && !validation("bad.test").await.is_null()
    })
    .await;
    assert!(both, "the watchdog did not report both tenants");
    let good = validation("good.test").await;
    assert!(
        good["checked_at"].as_str().unwrap().ends_with('Z'),
        "{good:#}"
    );
    let checks = good["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 6, "{good:#}");
    assert!(checks.iter().all(|c| c["status"] == "ok"), "{good:#}");
    let bad = validation("bad.test").await;
    let mx = bad["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "mx")
        .unwrap();
    assert_eq!(mx["status"], "error", "{bad:#}");

    let metrics = crate::common::admin_get(admin, "/metrics").await;
    let text = metrics.body;
    assert!(
        text.contains("mta_stsd_validation{domain=\"bad.test\",check=\"mx\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("mta_stsd_validation{domain=\"bad.test\",check=\"sts-record\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mta_stsd_validation_errors{check=\"mx\"} 1"),
        "{text}"
    );
    // metrics.per_tenant defaults to problems: a tenant that passes has no series of its own.
    assert!(
        !text.contains("mta_stsd_validation{domain=\"good.test\""),
        "{text}"
    );
    running.stop().await;
}

/// A server that accepts TLS and then says nothing.
async fn silent_https(tls: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(tcp).await {
                held.push(tls);
            }
        }
    });
    addr
}

/// What a sender refuses besides redirects: a body over 64 KiB, another media type, a body
/// that is not the policy configured, a server that never answers (within the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_mistyped_foreign_and_silent_answers_are_errors() {
    init_crypto();
    let cfg = TestConfig::with_server(&format!(
        "{}public_addresses: [\"127.0.0.1\"]\nvalidation:\n  timeout: 1s\n",
        crate::common::BASE_SERVER_YAML
    ));
    let cases = ["big.test", "html.test", "foreign.test", "silent.test"];
    let mut records = Vec::new();
    for d in cases {
        tenant(&cfg, d, &[&format!("mx.{d}")]);
        let mut own = correct_records(d, "x");
        own[0] = a(&format!("mta-sts.{d}"), LOCAL);
        records.extend(own);
    }
    let dns = TestDns::start("test", &records).await;
    let ca = TestCa::new();
    let ca_file = cfg.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let big: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 70000\r\nConnection: close\r\n\r\n{}",
            "x".repeat(70_000)
        )
        .into_boxed_str(),
    );
    let answers = [
        ("big.test", big, "body over 65536 bytes"),
        (
            "html.test",
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            "Content-Type \"text/html\"",
        ),
        (
            "foreign.test",
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 40\r\nConnection: close\r\n\r\nversion: STSv1\r\nmode: none\r\nmax_age: 1\r\n",
            "is not the policy configured",
        ),
    ];
    for (d, answer, seen) in answers {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        fake_https(addr, ca.server_config(&format!("mta-sts.{d}")), answer).await;
        let (code, out, err) = validate(
            cfg.path(),
            dns.addr,
            addr.port(),
            &ca_file,
            &["--json", "--domain", d],
        )
        .await;
        assert_eq!(code, 3, "{out}\n{err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let v = verdict(&json, d, "policy-fetch");
        assert_eq!(v["status"], "error", "{v:#}");
        assert!(v["observed"].as_str().unwrap().contains(seen), "{d}: {v:#}");
    }
    let addr = silent_https(ca.server_config("mta-sts.silent.test")).await;
    let (code, out, err) = validate(
        cfg.path(),
        dns.addr,
        addr.port(),
        &ca_file,
        &["--json", "--domain", "silent.test"],
    )
    .await;
    assert_eq!(code, 3, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = verdict(&json, "silent.test", "policy-fetch");
    assert!(
        v["observed"]
            .as_str()
            .unwrap()
            .contains("did not answer within"),
        "{v:#}"
    );
}
