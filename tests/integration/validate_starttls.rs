//! Check 6 (`mx-starttls`) of `mta-stsd validate` on the real binary: each tenant's MX
//! resolved through the in-test DNS and probed on one `--smtp-port` at its own loopback
//! address, where a real aiosmtpd holds a certificate the test made (or offers no STARTTLS, or
//! nothing listens).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use crate::certs_files::TestCa;
use crate::common::rr::{a, mx};
use crate::common::{SmtpServer, TestConfig, TestDns, init_crypto, run_binary};

/// Each tenant, its MX host's address and what listens there.
const GOOD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
const EXPIRED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 22);
const MISMATCH: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 23);
const PLAIN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 24);
const CLOSED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 25);
/// One MX host of two tenants, where a listener counts connections and closes each at once.
const SHARED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 26);

fn tenant(cfg: &TestConfig, domain: &str) {
    cfg.tenant(
        &format!("{domain}.yaml"),
        &format!("domain: {domain}\nmode: testing\nmx: [mx.{domain}]\nmax_age: 86400\n"),
    );
}

/// aiosmtpd at `addr` with the certificate `pem` (chain, key) written into `dir`.
async fn tls_mx(dir: &Path, name: &str, pem: &(String, String), addr: SocketAddr) -> SmtpServer {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, &pem.0).unwrap();
    std::fs::write(&key, &pem.1).unwrap();
    SmtpServer::start_on(name, Some((&cert, &key)), addr).await
}

/// The `mx-starttls` verdict of `domain` in `validate --json` output.
fn starttls<'a>(json: &'a serde_json::Value, domain: &str) -> &'a serde_json::Value {
    crate::validate::verdict(json, domain, "mx-starttls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mx_certificate_problem_names_the_result_type_a_sender_reports() {
    init_crypto();
    let cfg = TestConfig::with_server(crate::common::BASE_SERVER_YAML);
    let domains = [
        ("good.test", GOOD),
        ("expired.test", EXPIRED),
        ("mismatch.test", MISMATCH),
        ("plain.test", PLAIN),
        ("closed.test", CLOSED),
    ];
    let mut records = Vec::new();
    for (d, ip) in domains {
        tenant(&cfg, d);
        records.push(mx(d, 10, &format!("mx.{d}")));
        records.push(a(&format!("mx.{d}"), ip));
    }
    for d in ["one.test", "two.test"] {
        cfg.tenant(
            &format!("{d}.yaml"),
            &format!("domain: {d}\nmode: testing\nmx: [mx.shared.test]\nmax_age: 86400\n"),
        );
        records.push(mx(d, 10, "mx.shared.test"));
    }
    records.push(a("mx.shared.test", SHARED));
    let dns = TestDns::start("test", &records).await;

    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let good_pem = ca.leaf(&["mx.good.test"], -1, 30);
    let good = tls_mx(dir.path(), "mx.good.test", &good_pem, (GOOD, 0).into()).await;
    // Every MX is probed on one port: the others take the port the first one got.
    let port = good.addr.port();
    let expired_pem = ca.leaf(&["mx.expired.test"], -30, -1);
    let _expired = tls_mx(
        dir.path(),
        "mx.expired.test",
        &expired_pem,
        (EXPIRED, port).into(),
    )
    .await;
    let other_pem = ca.leaf(&["mx.elsewhere.test"], -1, 30);
    let _mismatch = tls_mx(
        dir.path(),
        "mx.mismatch.test",
        &other_pem,
        (MISMATCH, port).into(),
    )
    .await;
    let _plain = SmtpServer::start_on("mx.plain.test", None, (PLAIN, port).into()).await;
    let shared = std::net::TcpListener::bind((SHARED, port)).unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in shared.incoming() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();

    let args: Vec<std::ffi::OsString> = vec![
        "validate".into(),
        "--config".into(),
        cfg.path().into(),
        "--nameserver".into(),
        dns.addr.to_string().into(),
        "--smtp-port".into(),
        port.to_string().into(),
        "--ca-file".into(),
        ca_file.into(),
        "--json".into(),
    ];
    let (_, out, err) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_binary(&refs, b"")
    })
    .await
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let expect = |d: &str, status: &str, seen: &str| {
        let v = starttls(&json, d);
        assert_eq!(v["status"], status, "{d}: {v:#}");
        let text = format!("{} {}", v["observed"], v["action"]);
        assert!(text.contains(seen), "{d}: {seen:?} not in {v:#}");
    };
    expect("good.test", "ok", "mx.good.test: ok: TLSv1.3");
    expect(
        "expired.test",
        "error",
        "certificate-expired for mx.expired.test",
    );
    expect(
        "mismatch.test",
        "error",
        "certificate-host-mismatch for mx.mismatch.test",
    );
    expect(
        "plain.test",
        "error",
        "starttls-not-supported for mx.plain.test",
    );
    expect("closed.test", "warning", "no verdict (connect)");
    expect("closed.test", "warning", &format!("port {port}"));
    // Two tenants, one MX host: one probe, one outcome for both.
    expect(
        "one.test",
        "warning",
        "mx.shared.test: no verdict (greeting)",
    );
    expect(
        "two.test",
        "warning",
        "mx.shared.test: no verdict (greeting)",
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_probes_mx_hosts_and_a_failing_certificate_blocks_enforce() {
    init_crypto();
    const OK_MX: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 31);
    const BAD_MX: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 32);
    let cfg = TestConfig::new();
    let mut records = Vec::new();
    for (d, ip) in [("good.test", OK_MX), ("expired.test", BAD_MX)] {
        tenant(&cfg, d);
        records.push(mx(d, 10, &format!("mx.{d}")));
        records.push(a(&format!("mx.{d}"), ip));
    }
    let dns = TestDns::start("test", &records).await;
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let good_pem = ca.leaf(&["mx.good.test"], -1, 30);
    let good = tls_mx(dir.path(), "mx.good.test", &good_pem, (OK_MX, 0).into()).await;
    let port = good.addr.port();
    let expired_pem = ca.leaf(&["mx.expired.test"], -30, -1);
    let _bad = tls_mx(
        dir.path(),
        "mx.expired.test",
        &expired_pem,
        (BAD_MX, port).into(),
    )
    .await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    std::fs::write(
        cfg.path().join("mta-stsd.yaml"),
        format!(
            "{}validation:\n  interval: 10s\n  timeout: 2s\n  nameservers: [\"{}\"]\n  smtp_port: {port}\n  ca_file: {}\n  ehlo_name: watchdog.op.test\n",
            crate::common::BASE_SERVER_YAML,
            dns.addr,
            ca_file.display()
        ),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daemon = mta_stsd::daemon::Daemon::build(cfg.path()).expect("daemon builds");
    let running = crate::common::run_daemon(daemon, listener, cfg.ca_der()).await;
    let admin = running.admin_addr;
    let get = |path: String| async move {
        let r = crate::common::admin_get(admin, &path).await;
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()
    };
    let both = crate::common::eventually(std::time::Duration::from_secs(60), || async {
        let good = get("/api/v1/tenants/good.test".into()).await;
        let bad = get("/api/v1/tenants/expired.test".into()).await;
        !good["validation"].is_null() && !bad["validation"].is_null()
    })
    .await;
    assert!(both, "the watchdog did not report both tenants");
    let check6 = |v: &serde_json::Value| {
        v["validation"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "mx-starttls")
            .cloned()
            .unwrap_or_else(|| panic!("no mx-starttls in {v:#}"))
    };
    let good_v = check6(&get("/api/v1/tenants/good.test".into()).await);
    assert_eq!(good_v["status"], "ok", "{good_v:#}");
    let bad_v = check6(&get("/api/v1/tenants/expired.test".into()).await);
    assert_eq!(bad_v["status"], "error", "{bad_v:#}");
    assert!(
        bad_v["action"]
            .as_str()
            .unwrap()
            .contains("certificate-expired for mx.expired.test"),
        "{bad_v:#}"
    );

    // The verdict: both are testing without reports (not ready either way); only the tenant
    // whose MX certificate fails has that blocker among its reasons.
    let reasons = |d: &'static str| async move {
        let s = get(format!("/api/v1/tenants/{d}/tlsrpt")).await;
        assert_eq!(s["verdict"]["status"], "not-ready", "{s:#}");
        s["verdict"]["reasons"].to_string()
    };
    let bad_reasons = reasons("expired.test").await;
    assert!(
        bad_reasons.contains("an MX host's STARTTLS certificate fails (mx-starttls: "),
        "{bad_reasons}"
    );
    let good_reasons = reasons("good.test").await;
    assert!(!good_reasons.contains("mx-starttls"), "{good_reasons}");

    let metrics = crate::common::admin_get(admin, "/metrics").await.body;
    assert!(
        metrics.contains("mta_stsd_validation{domain=\"expired.test\",check=\"mx-starttls\"} 0"),
        "{metrics}"
    );
    running.stop().await;
}
