//! DNS-01 through the built-in delegated zone, against Pebble: a tenant migrating from
//! another provider, whose `mta-sts.<domain>` does not resolve to mta-stsd at all, gets its
//! certificate because its `_acme-challenge` CNAME (as `mta-stsd dns` prints it) leads into
//! the zone mta-stsd answers. Pebble asks a real recursive resolver (unbound) that serves the
//! customers' zones and reaches the delegated zone through a stub zone, as a CA would.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mta_stsd::certs::CertState;
use tokio::net::TcpListener;

use crate::acme::all_valid;
use crate::common::{
    Client, Unbound, admin_get, dns_json, eventually, free_dns_port, init_crypto, run_daemon,
};
use crate::pebble::{Pebble, Targets, free_port};

const ZONE: &str = "sts.operator.test";
/// Has the challenge CNAME; `mta-sts.moving.test` does not exist.
const MOVING: &str = "moving.test";
/// Has neither: no order may be placed for it.
const STUCK: &str = "stuck.test";
/// No challenge CNAME, but `mta-sts.pointed.test` is here: TLS-ALPN-01, the fallback.
const POINTED: &str = "pointed.test";

/// A customer zone with SOA, NS and `extra` lines.
fn customer_zone(origin: &str, extra: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 60\n@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 60\n\
         @ IN NS ns.{origin}.\nns IN A 127.0.0.1\n{extra}"
    )
}

/// The `_acme-challenge` CNAME `mta-stsd dns --json` prints for `domain`.
fn printed_challenge_cname(config: &Path, domain: &str) -> String {
    let list = dns_json(config);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["domain"] == domain)
        .unwrap();
    let name = format!("_acme-challenge.mta-sts.{domain}.");
    let cname = entry["cnames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name.as_str() && r["type"] == "CNAME")
        .unwrap_or_else(|| panic!("no {name} CNAME printed: {entry}"));
    cname["value"].as_str().unwrap().to_owned()
}

fn server_yaml(pebble: &Pebble, resolver: SocketAddr, dns: SocketAddr) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: acme\nacme:\n  directory: \"{dir}\"\n  \
         contact: [ops@example.net]\n  trusted_roots: [\"{ca}\"]\n  challenges: [dns-01, tls-alpn-01]\n  \
         preflight:\n    public_addresses: [127.0.0.1]\n    nameservers: [\"{resolver}\"]\n    recheck: 300ms\n  \
         schedule:\n    backoff_base: 200ms\n    backoff_cap: 2s\n\
         dns:\n  listen: \"{dns}\"\n  zone: {ZONE}\n  nameservers: [ns1.operator.test]\n  \
         hostmaster: hostmaster.operator.test\n  ttl: 60\n",
        dir = pebble.directory(),
        ca = pebble.api_ca_path().display(),
    )
}

#[tokio::test]
async fn a_tenant_not_pointing_here_gets_its_certificate_by_dns01_through_the_zone() {
    init_crypto();
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("config");
    std::fs::create_dir_all(config.join("tenants")).unwrap();
    let resolver = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let dns = SocketAddr::from(([127, 0, 0, 1], free_dns_port()));
    let https_port = free_port();
    let mut pebble = Pebble::prepare(Targets {
        tls_port: https_port,
        http_port: free_port(),
        dns: resolver,
    });
    std::fs::write(
        config.join("mta-stsd.yaml"),
        server_yaml(&pebble, resolver, dns),
    )
    .unwrap();
    for d in [MOVING, STUCK, POINTED] {
        std::fs::write(
            config.join("tenants").join(format!("{d}.yaml")),
            format!("domain: {d}\nmode: testing\nmx: [mx.{d}]\nmax_age: 86400\n"),
        )
        .unwrap();
    }

    let target = printed_challenge_cname(&config, MOVING);
    assert_eq!(target, format!("mta-sts.{MOVING}._acme-challenge.{ZONE}."));
    let moving_zone = cwd.path().join("moving.zone");
    std::fs::write(
        &moving_zone,
        customer_zone(
            MOVING,
            &format!("_acme-challenge.mta-sts IN CNAME {target}\n"),
        ),
    )
    .unwrap();
    let stuck_zone = cwd.path().join("stuck.zone");
    std::fs::write(&stuck_zone, customer_zone(STUCK, "")).unwrap();
    let pointed_zone = cwd.path().join("pointed.zone");
    std::fs::write(
        &pointed_zone,
        customer_zone(POINTED, "mta-sts IN A 127.0.0.1\n"),
    )
    .unwrap();
    let mut unbound = Unbound::start_on(
        resolver.port(),
        cwd.path(),
        &[
            (MOVING, &moving_zone),
            (STUCK, &stuck_zone),
            (POINTED, &pointed_zone),
        ],
        (ZONE, dns),
    );
    unbound.started().await;
    pebble.start().await;

    let daemon = mta_stsd::daemon::Daemon::build(&config).expect("daemon builds");
    let https = TcpListener::bind(("127.0.0.1", https_port)).await.unwrap();
    let root = pebble.root().await;
    let running = run_daemon(daemon, https, root.clone()).await;
    assert_eq!(running.dns_addr, Some(dns));

    let issued = all_valid(&running, &[MOVING, POINTED], Duration::from_secs(60)).await;
    unbound.alive_or_panic();
    assert!(
        issued,
        "{:?} {:?}\nPebble:\n{}",
        running.board.get(&format!("mta-sts.{MOVING}")),
        running.board.get(&format!("mta-sts.{POINTED}")),
        pebble.log_text()
    );
    // The certificates chain to Pebble's root and name their hosts: a sender switching the
    // CNAME now gets a valid policy at once.
    let client = Client::new(running.addr, root);
    for d in [MOVING, POINTED] {
        let got = client.get_policy(&format!("mta-sts.{d}")).await.unwrap();
        assert_eq!(got.status, http::StatusCode::OK, "{d}");
    }

    // Without the CNAME, and not pointing here, nothing is ordered; the error says what to add.
    let stuck_host = format!("mta-sts.{STUCK}");
    let not_ready = eventually(Duration::from_secs(20), || async {
        running
            .board
            .get(&stuck_host)
            .is_some_and(|s| s.state == CertState::DnsNotReady)
    })
    .await;
    let status = running.board.get(&stuck_host);
    assert!(not_ready, "{status:?}");
    let orders = running.acme.as_ref().unwrap().recent_orders();
    assert!(
        orders.iter().all(|(h, _)| *h != stuck_host),
        "no order for {stuck_host}: {orders:?}"
    );
    assert_eq!(pebble.orders_received(), 2, "{orders:?}");
    // The CA's resolver asked the built-in zone for the challenge TXT (the only way in:
    // `mta-sts.moving.test` has no address, so TLS-ALPN-01 and HTTP-01 cannot reach it).
    let metrics = admin_get(running.admin_addr, "/metrics").await.body;
    let txt_answers = metrics
        .lines()
        .find(|l| {
            l.starts_with("mta_stsd_dns_queries_total{")
                && l.contains("type=\"TXT\"")
                && l.contains("rcode=\"NOERROR\"")
        })
        .unwrap_or_else(|| panic!("no TXT answers counted:\n{metrics}"));
    assert!(!txt_answers.ends_with(" 0"), "{txt_answers}");
    running.stop().await;
}
