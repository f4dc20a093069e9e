//! The ACME issuer against a real ACME server (Pebble) with a DNS responder the test controls.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use http::StatusCode;
use mta_stsd::certs::{CertState, CertStatus};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;

use crate::common::{Client, Running, TestConfig, eventually, init_crypto, run_daemon};
use crate::dns::{Answer, Dns};
use crate::pebble::{Pebble, Targets, free_port};

/// Generous bound for Pebble to issue a handful of certificates on a busy 2-core machine.
const ISSUE_LIMIT: Duration = Duration::from_secs(60);

/// Pebble, DNS and a configuration directory wired together for one test.
pub(crate) struct Setup {
    dns: Dns,
    pub(crate) pebble: Pebble,
    pub(crate) cfg: TestConfig,
    https_port: u16,
}

impl Setup {
    /// Starts DNS and Pebble; writes a server file with `schedule` lines added to
    /// `acme.schedule` (indented by four spaces) and one tenant per domain.
    pub(crate) async fn new(domains: &[&str], schedule: &str, http01: bool) -> Setup {
        init_crypto();
        let dns = Dns::start().await;
        let https_port = free_port();
        let http_port = free_port();
        let mut pebble = Pebble::prepare(Targets {
            tls_port: https_port,
            http_port,
            dns: dns.addr,
        });
        let challenges = if http01 {
            format!("  challenges: [http-01]\n  http_listen: \"127.0.0.1:{http_port}\"\n")
        } else {
            "  challenges: [tls-alpn-01]\n".to_owned()
        };
        let server = format!(
            "listen: \"127.0.0.1:0\"\nstate_dir: state\npublic_hostname: sts.operator.test\nissuer: acme\nacme:\n  directory: \"{}\"\n  contact: [ops@example.net]\n  trusted_roots: [\"{}\"]\n{challenges}  preflight:\n    public_addresses: [127.0.0.1]\n    nameservers: [\"{}\"]\n    recheck: 300ms\n  schedule:\n    backoff_base: 200ms\n    backoff_cap: 2s\n{schedule}",
            pebble.directory(),
            pebble.api_ca_path().display(),
            dns.addr,
        );
        let cfg = TestConfig::with_server(&server);
        for d in domains {
            cfg.simple_tenant(d);
        }
        pebble.start().await;
        Setup {
            dns,
            pebble,
            cfg,
            https_port,
        }
    }

    /// Rewrites the server file with `edit` (before [`Setup::start`]).
    pub(crate) fn edit_server(&self, edit: impl FnOnce(String) -> String) {
        let path = self.cfg.path().join("mta-stsd.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
    }

    /// Builds and runs the daemon on the HTTPS port Pebble validates against.
    pub(crate) async fn start(&self) -> Running {
        self.start_trusting(self.pebble.root().await).await
    }

    /// Like [`Setup::start`], with `running.client()` trusting `ca` (Pebble may be down).
    async fn start_trusting(&self, ca: CertificateDer<'static>) -> Running {
        let daemon = mta_stsd::daemon::Daemon::build(self.cfg.path()).expect("daemon builds");
        let listener = TcpListener::bind(("127.0.0.1", self.https_port))
            .await
            .expect("HTTPS port free");
        run_daemon(daemon, listener, ca).await
    }
}

/// `mta-stsd certs` on `config`, run by the real binary without the daemon; it must succeed.
pub(crate) fn certs_table(config: &std::path::Path) -> String {
    let out = std::process::Command::new(crate::common::binary())
        .args(["certs", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn host(domain: &str) -> String {
    format!("mta-sts.{domain}")
}

fn status(running: &Running, domain: &str) -> Option<CertStatus> {
    running.board.get(&host(domain))
}

/// Waits until every domain's certificate is `Valid` on the board.
pub(crate) async fn all_valid(running: &Running, domains: &[&str], limit: Duration) -> bool {
    eventually(limit, || async {
        domains.iter().all(|d| {
            status(running, d).is_some_and(|s| s.state == CertState::Valid && s.cert.is_some())
        })
    })
    .await
}

/// The leaf certificate served for `domain`, verified against `root` (the handshake fails
/// unless the chain leads to it and names the host), and the policy fetched over it.
async fn served_leaf(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    domain: &str,
) -> Result<CertificateDer<'static>, String> {
    let client = Client::new(addr, root.clone());
    let tls = client
        .handshake(&host(domain), &[b"http/1.1"])
        .await
        .map_err(|e| format!("handshake for {domain}: {e}"))?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let got = client.get_policy(&host(domain)).await?;
    if got.status != StatusCode::OK {
        return Err(format!("policy for {domain}: {}", got.status));
    }
    Ok(leaf)
}

fn serial(der: &CertificateDer<'_>) -> String {
    mta_stsd::certs::cert_info(der).unwrap().serial
}

fn order_count(running: &Running) -> usize {
    running.acme.as_ref().unwrap().recent_orders().len()
}

#[tokio::test]
async fn three_tenants_get_own_certificates_by_tls_alpn_and_restart_serves_the_cache() {
    let domains = ["alpha.test", "beta.test", "gamma.test"];
    let setup = Setup::new(&domains, "", false).await;
    let running = setup.start().await;
    assert!(
        all_valid(&running, &domains, ISSUE_LIMIT).await,
        "not all valid: {:?}\n{}",
        running.board.all(),
        setup.pebble.log_text()
    );
    let root = setup.pebble.root().await;
    let mut serials = Vec::new();
    for d in domains {
        let leaf = served_leaf(running.addr, &root, d).await.unwrap();
        assert!(
            mta_stsd::certs::cert_covers_host(&leaf, &host(d)).unwrap(),
            "{d}: leaf does not name its host"
        );
        for other in domains.iter().filter(|o| **o != d) {
            assert!(
                !mta_stsd::certs::cert_covers_host(&leaf, &host(other)).unwrap(),
                "{d}: one certificate per tenant, not a SAN certificate"
            );
        }
        serials.push(serial(&leaf));
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 3, "three distinct certificates");
    assert_eq!(order_count(&running), 3);
    assert_eq!(setup.pebble.orders_received(), 3);
    let metrics = crate::common::admin_get(running.admin_addr, "/metrics")
        .await
        .body;
    assert!(
        metrics.contains("mta_stsd_acme_orders_total{result=\"success\"} 3"),
        "{metrics}"
    );

    // Storage: keys and account owner-only, chain readable.
    let state = setup.cfg.path().join("state");
    let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(state.join("acme/account.json")), 0o600);
    for d in domains {
        let dir = state.join("certs").join(host(d));
        assert_eq!(mode(dir.join("privkey.pem")), 0o600);
        assert_eq!(mode(dir.join("fullchain.pem")), 0o644);
        assert!(dir.join("meta.json").is_file());
    }
    running.stop().await;

    // `mta-stsd certs` reads the state directory without the daemon.
    let table = certs_table(setup.cfg.path());
    assert!(table.starts_with("HOST"), "{table}");
    for (d, line) in domains.iter().zip(table.lines().skip(1)) {
        assert!(line.starts_with(&host(d)), "{table}");
        assert!(
            line.contains(" valid ") && line.contains("Pebble"),
            "{table}"
        );
    }

    // Restart on the same state directory: served at once from the cache, no new order.
    let running = setup.start().await;
    for d in domains {
        assert!(
            running.resolver.contains(&host(d)),
            "{d} served before any ACME work"
        );
    }
    for (d, old) in domains.iter().zip(serials.iter()) {
        let leaf = served_leaf(running.addr, &root, d).await.unwrap();
        assert!(serials.contains(&serial(&leaf)), "{d}: {old} from cache");
    }
    // The scheduler has looked at every host once it has put its next attempt at renewal time.
    let month = mta_stsd::util::unix_now() + 30 * 86_400;
    let settled = eventually(Duration::from_secs(20), || async {
        domains.iter().all(|d| {
            status(&running, d).is_some_and(|s| {
                s.state == CertState::Valid && s.next_attempt.is_some_and(|n| n > month)
            })
        })
    })
    .await;
    assert!(settled, "{:?}", running.board.all());
    assert_eq!(order_count(&running), 0, "no order for a valid cached cert");
    assert_eq!(setup.pebble.orders_received(), 3);
    running.stop().await;
}

#[tokio::test]
async fn http01_issues_through_the_plain_http_listener() {
    let domains = ["web.test"];
    let setup = Setup::new(&domains, "", true).await;
    let running = setup.start().await;
    assert!(
        all_valid(&running, &domains, ISSUE_LIMIT).await,
        "{:?}\n{}",
        running.board.all(),
        setup.pebble.log_text()
    );
    let root = setup.pebble.root().await;
    served_leaf(running.addr, &root, "web.test").await.unwrap();
    assert!(
        setup
            .pebble
            .log_text()
            .contains("/.well-known/acme-challenge/"),
        "Pebble validated over HTTP-01"
    );
    assert!(
        !setup.pebble.log_text().contains("tls-alpn-01 challenge"),
        "no TLS-ALPN-01 validation"
    );
    running.stop().await;
}

#[tokio::test]
async fn tenant_pointing_elsewhere_fails_preflight_without_an_order() {
    let domains = ["good.test", "fine.test", "elsewhere.test"];
    let setup = Setup::new(&domains, "", false).await;
    setup.dns.set(
        &host("elsewhere.test"),
        Answer::Ip("192.0.2.7".parse().unwrap()),
    );
    // The customer's way: a CNAME to the operator's public host name.
    setup.dns.set(
        &host("fine.test"),
        Answer::Cname("sts.operator.test".into()),
    );
    let running = setup.start().await;
    assert!(all_valid(&running, &["good.test", "fine.test"], ISSUE_LIMIT).await);
    let not_ready = eventually(Duration::from_secs(10), || async {
        status(&running, "elsewhere.test").is_some_and(|s| s.state == CertState::DnsNotReady)
    })
    .await;
    let s = status(&running, "elsewhere.test").unwrap();
    assert!(not_ready, "{s:?}");
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("192.0.2.7"),
        "{s:?}"
    );
    assert!(s.cert.is_none());
    let orders = running.acme.as_ref().unwrap().recent_orders();
    assert!(
        orders.iter().all(|(h, _)| h != &host("elsewhere.test")),
        "no order for a host that does not point here: {orders:?}"
    );
    assert_eq!(setup.pebble.orders_received(), 2);
    // The handshake for it is refused cleanly; the others are served.
    let root = setup.pebble.root().await;
    assert!(
        served_leaf(running.addr, &root, "elsewhere.test")
            .await
            .is_err()
    );
    served_leaf(running.addr, &root, "good.test").await.unwrap();

    // The customer fixes the DNS: the slow re-check picks it up.
    setup.dns.set(
        &host("elsewhere.test"),
        Answer::Ip("127.0.0.1".parse().unwrap()),
    );
    assert!(all_valid(&running, &["elsewhere.test"], ISSUE_LIMIT).await);
    served_leaf(running.addr, &root, "elsewhere.test")
        .await
        .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn ca_down_keeps_serving_backs_off_and_recovers() {
    let setup = Setup::new(&["kept.test"], "", false).await;
    let running = setup.start().await;
    assert!(all_valid(&running, &["kept.test"], ISSUE_LIMIT).await);
    let old_root = setup.pebble.root().await;
    running.stop().await;

    // The CA goes away, and a new tenant arrives.
    let mut setup = setup;
    setup.pebble.stop();
    setup.cfg.simple_tenant("new.test");
    let running = setup.start_trusting(old_root.clone()).await;
    served_leaf(running.addr, &old_root, "kept.test")
        .await
        .expect("cached certificate served while the CA is down");
    let backing_off = eventually(Duration::from_secs(20), || async {
        status(&running, "new.test").is_some_and(|s| {
            s.state == CertState::Backoff && s.last_error.is_some() && s.next_attempt.is_some()
        })
    })
    .await;
    assert!(backing_off, "{:?}", status(&running, "new.test"));
    let metrics = crate::common::admin_get(running.admin_addr, "/metrics")
        .await
        .body;
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mta_stsd_acme_orders_total{result=\"failure\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no failure series in {metrics}"));
    assert!(failures >= 1.0, "{metrics}");
    assert_eq!(
        status(&running, "kept.test").unwrap().state,
        CertState::Valid
    );
    served_leaf(running.addr, &old_root, "kept.test")
        .await
        .unwrap();

    // The CA comes back (a fresh Pebble: new root, forgotten account).
    setup.pebble.start().await;
    assert!(
        all_valid(&running, &["new.test"], ISSUE_LIMIT).await,
        "{:?}\n{}",
        status(&running, "new.test"),
        setup.pebble.log_text()
    );
    let new_root = setup.pebble.root().await;
    served_leaf(running.addr, &new_root, "new.test")
        .await
        .unwrap();
    served_leaf(running.addr, &old_root, "kept.test")
        .await
        .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn renewal_replaces_the_certificate_without_a_dropped_request() {
    // A renewal fraction of one billionth makes every certificate due at once; the order limit
    // of 2 per hour allows exactly the first issuance and one renewal.
    let extra = "    renew_fraction: 0.000000001\n    orders_per_window: 2\n    window: 1h\n";
    let setup = Setup::new(&["renew.test"], extra, false).await;
    let running = setup.start().await;
    let root = setup.pebble.root().await;
    let first = eventually(ISSUE_LIMIT, || async {
        served_leaf(running.addr, &root, "renew.test").await.is_ok()
    })
    .await;
    assert!(first, "{:?}", running.board.all());
    let first = served_leaf(running.addr, &root, "renew.test")
        .await
        .unwrap();

    // Fetch continuously on new connections until the served certificate changes.
    let mut fetched = 0;
    let deadline = tokio::time::Instant::now() + ISSUE_LIMIT;
    let second = loop {
        let leaf = served_leaf(running.addr, &root, "renew.test")
            .await
            .unwrap_or_else(|e| panic!("request {fetched} failed during renewal: {e}"));
        fetched += 1;
        if leaf != first {
            break leaf;
        }
        assert!(tokio::time::Instant::now() < deadline, "never renewed");
    };
    assert_ne!(serial(&first), serial(&second));
    assert_eq!(order_count(&running), 2);
    // The next renewal waits for the order window instead of ordering again.
    let waiting = eventually(Duration::from_secs(10), || async {
        status(&running, "renew.test").is_some_and(|s| {
            s.next_attempt
                .is_some_and(|n| n > mta_stsd::util::unix_now() + 1800)
        })
    })
    .await;
    assert!(waiting, "{:?}", status(&running, "renew.test"));
    assert_eq!(order_count(&running), 2);
    running.stop().await;
}

#[tokio::test]
async fn order_limit_caps_orders_per_window() {
    const N: usize = 2;
    const WINDOW: Duration = Duration::from_secs(3);
    let domains = [
        "r1.test", "r2.test", "r3.test", "r4.test", "r5.test", "r6.test",
    ];
    let extra = format!(
        "    orders_per_window: {N}\n    window: {}ms\n    max_concurrent: 6\n",
        WINDOW.as_millis()
    );
    let setup = Setup::new(&domains, &extra, false).await;
    let running = setup.start().await;
    assert!(
        all_valid(&running, &domains, ISSUE_LIMIT).await,
        "{:?}",
        running.board.all()
    );
    let orders = running.acme.as_ref().unwrap().recent_orders();
    assert_eq!(orders.len(), 3 * N);
    for (i, (_, start)) in orders.iter().enumerate() {
        let in_window = orders[i..]
            .iter()
            .filter(|(_, t)| t.duration_since(*start) < WINDOW)
            .count();
        assert!(
            in_window <= N,
            "{in_window} orders within {WINDOW:?} of order {i}: {orders:?}"
        );
    }
    let spread = orders[3 * N - 1].1.duration_since(orders[0].1);
    assert!(
        spread >= WINDOW * 2,
        "drained over two windows, took {spread:?}"
    );
    assert_eq!(setup.pebble.orders_received(), 3 * N);
    running.stop().await;
}

#[tokio::test]
async fn a_ca_that_forgot_the_account_gets_the_order_again_at_once() {
    let setup = Setup::new(&["first.test"], "", false).await;
    // A backoff would show: at least 5 minutes (10 minutes, at most halved by jitter).
    setup.edit_server(|s| {
        s.replace("backoff_base: 200ms", "backoff_base: 10m")
            .replace("backoff_cap: 2s", "backoff_cap: 1h")
    });
    let running = setup.start().await;
    assert!(
        all_valid(&running, &["first.test"], ISSUE_LIMIT).await,
        "{:?}\n{}",
        running.board.all(),
        setup.pebble.log_text()
    );

    // Pebble keeps accounts in memory: a restart forgets ours (as a reset staging CA does).
    let mut setup = setup;
    setup.pebble.stop();
    let log_before = setup.pebble.log.lock().unwrap().len();
    setup.pebble.start().await;
    setup.cfg.simple_tenant("second.test");
    let added = std::time::Instant::now();
    running
        .reloader
        .reload(mta_stsd::reload::Trigger::Api)
        .await;
    assert!(
        all_valid(&running, &["second.test"], ISSUE_LIMIT).await,
        "{:?}\n{}",
        status(&running, "second.test"),
        setup.pebble.log_text()
    );
    let took = added.elapsed();
    eprintln!("second.test valid {took:?} after its file was added");
    let new_accounts = setup.pebble.log.lock().unwrap()[log_before..]
        .iter()
        .filter(|l| l.contains("POST /sign-me-up"))
        .count();
    assert!(
        new_accounts >= 1,
        "the daemon made a new account:\n{}",
        setup.pebble.log_text()
    );
    let metrics = crate::common::admin_get(running.admin_addr, "/metrics")
        .await
        .body;
    assert!(
        metrics.contains("mta_stsd_acme_orders_total{result=\"failure\"} 0"),
        "a forgotten account is no failed order:\n{metrics}"
    );
    let root = setup.pebble.root().await;
    served_leaf(running.addr, &root, "second.test")
        .await
        .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn the_report_host_certificate_is_listed_and_exported_as_the_report_host() {
    const REPORT_HOST: &str = "reports.test";
    let setup = Setup::new(&["tenant.test"], "", false).await;
    // Every tenant's series (the default exports only tenants needing attention).
    setup.edit_server(|s| {
        format!("{s}tlsrpt:\n  report_host: {REPORT_HOST}\nmetrics:\n  per_tenant: all\n")
    });
    let running = setup.start().await;
    let valid = eventually(ISSUE_LIMIT, || async {
        [host("tenant.test"), REPORT_HOST.to_owned()]
            .iter()
            .all(|h| {
                running
                    .board
                    .get(h)
                    .is_some_and(|s| s.state == CertState::Valid)
            })
    })
    .await;
    assert!(
        valid,
        "{:?}\n{}",
        running.board.all(),
        setup.pebble.log_text()
    );
    let metrics = crate::common::admin_get(running.admin_addr, "/metrics")
        .await
        .body;
    for expected in [
        format!(
            "mta_stsd_certificate_state{{domain=\"{REPORT_HOST}\",role=\"report_host\",state=\"valid\"}} 1"
        ),
        format!(
            "mta_stsd_certificate_expiry_timestamp_seconds{{domain=\"{REPORT_HOST}\",role=\"report_host\"}} "
        ),
        "mta_stsd_certificate_state{domain=\"tenant.test\",state=\"valid\"} 1".to_owned(),
        "mta_stsd_certificates{state=\"valid\"} 2".to_owned(),
    ] {
        assert!(
            metrics.contains(&expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
    running.stop().await;

    let table = certs_table(setup.cfg.path());
    let line = table
        .lines()
        .find(|l| l.starts_with(REPORT_HOST))
        .unwrap_or_else(|| panic!("no row for the report host:\n{table}"));
    assert!(line.contains("(report host)"), "{table}");
    assert!(
        line.contains(" valid ") && line.contains("Pebble"),
        "{table}"
    );
    assert!(!table.contains("removed"), "{table}");
}
