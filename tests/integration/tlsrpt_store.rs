//! The report store never decides whether policies are served: `mta-stsd serve` starts with a
//! store it cannot open, serves policies, answers the intake 503 + `Retry-After`, shows the
//! state (`/readyz`, `/api/v1/status`, a gauge), and recovers once the path becomes usable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;

use crate::common::{
    BASE_SERVER_YAML, Client, ServeProcess, TestConfig, admin_get, eventually, tlsrpt_fixture,
};

const REPORT_HOST: &str = "tlsrpt.operator.example";

/// The admin address from the `admin listener up` log line.
async fn admin_addr(serve: &ServeProcess) -> SocketAddr {
    let mut found = None;
    let seen = eventually(Duration::from_secs(30), || {
        let lines = serve.log_lines(|v| v["message"] == "admin listener up");
        found = lines.first().and_then(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["admin"].as_str()?.parse().ok()
        });
        std::future::ready(found.is_some())
    })
    .await;
    assert!(
        seen,
        "no admin line:\n{}",
        serve.log.lock().unwrap().join("\n")
    );
    found.unwrap()
}

fn store_up(metrics: &str) -> Option<&str> {
    metrics
        .lines()
        .find(|l| l.starts_with("mta_stsd_tlsrpt_store_up"))
        .and_then(|l| l.split_whitespace().last())
}

/// Starts the binary with `break_store` applied, checks it serves with the store down, applies
/// `repair` and waits for the store to come up.
async fn serves_without_store(database: &str, break_store: impl Fn(&Path), repair: impl Fn(&Path)) {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\ntlsrpt:\n  report_host: {REPORT_HOST}\n  database: {database}\n"
    ));
    cfg.simple_tenant("example.com");
    break_store(cfg.path());
    let serve = ServeProcess::start(cfg.path());
    let client = Client::new(serve.addr, cfg.ca_der());
    let admin = admin_addr(&serve).await;

    let policy = client.get_policy("mta-sts.example.com").await.unwrap();
    assert_eq!(policy.status, StatusCode::OK);
    let rfc = tlsrpt_fixture("rfc-example.json");
    let refused = client
        .post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+json",
            rfc.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    let ready = admin_get(admin, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "policies are served");
    assert!(
        ready.body.contains("report store unavailable"),
        "{}",
        ready.body
    );
    let status = admin_get(admin, "/api/v1/status").await.json();
    assert_eq!(status["tlsrpt_store"]["up"], false, "{status}");
    assert!(status["tlsrpt_store"]["error"].is_string(), "{status}");
    let metrics = admin_get(admin, "/metrics").await.body;
    assert_eq!(store_up(&metrics), Some("0"), "{metrics}");

    repair(cfg.path());
    let recovered = eventually(Duration::from_secs(60), || async {
        store_up(&admin_get(admin, "/metrics").await.body) == Some("1")
    })
    .await;
    assert!(
        recovered,
        "store did not come up:\n{}",
        serve.log.lock().unwrap().join("\n")
    );
    let stored = client
        .post_report(REPORT_HOST, "example.com", "application/tlsrpt+json", rfc)
        .await
        .unwrap();
    assert_eq!(stored.status, StatusCode::OK, "{:?}", stored.body);
    let ready = admin_get(admin, "/readyz").await;
    assert_eq!(ready.body, "ready\n");
    let status = admin_get(admin, "/api/v1/status").await.json();
    assert_eq!(status["tlsrpt_store"]["up"], true, "{status}");
}

#[tokio::test]
async fn a_database_path_that_cannot_be_opened_does_not_stop_serving() {
    serves_without_store(
        "blocked/reports.sqlite3",
        |dir| std::fs::write(dir.join("blocked"), "a file where a directory should be").unwrap(),
        |dir| {
            std::fs::remove_file(dir.join("blocked")).unwrap();
            std::fs::create_dir(dir.join("blocked")).unwrap();
        },
    )
    .await;
}

#[tokio::test]
async fn a_corrupt_database_does_not_stop_serving() {
    serves_without_store(
        "reports.sqlite3",
        |dir| std::fs::write(dir.join("reports.sqlite3"), vec![0x5a; 8192]).unwrap(),
        |dir| std::fs::remove_file(dir.join("reports.sqlite3")).unwrap(),
    )
    .await;
}

/// A report for `domain` padded with `n` bytes of random hex in its `policy-string` (a field
/// RFC 8460 defines, so kept in the raw JSON; large unknown fields are not), as an attacker
/// filling the disk would send.
fn padded_report(report_id: &str, domain: &str, n: usize, seed: &mut u64) -> Vec<u8> {
    let json = crate::common::report_json(
        "filler.example",
        report_id,
        domain,
        time::OffsetDateTime::now_utc().date(),
        1,
        &[],
    );
    let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let mut pad = String::with_capacity(n);
    while pad.len() < n {
        // xorshift64: incompressible enough that gzip cannot shrink the padding away.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        pad.push_str(&format!("{:016x}", *seed));
    }
    value["policies"][0]["policy"]["policy-string"] = serde_json::json!([pad]);
    serde_json::to_vec(&value).unwrap()
}

fn reports_show(cfg: &TestConfig, report_id: &str) -> serde_json::Value {
    let (code, stdout, stderr) = crate::common::run_binary(
        &[
            std::ffi::OsStr::new("reports"),
            std::ffi::OsStr::new("show"),
            std::ffi::OsStr::new(report_id),
            std::ffi::OsStr::new("--config"),
            cfg.path().as_os_str(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test]
async fn reports_beyond_the_daily_quota_are_refused_and_earlier_ones_kept() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\ntlsrpt:\n  report_host: {REPORT_HOST}\n  tenant_bytes_per_day: 100000\n  total_bytes_per_day: 150000\n"
    ));
    cfg.simple_tenant("example.com");
    cfg.simple_tenant("example.net");
    let serve = ServeProcess::start(cfg.path());
    let client = Client::new(serve.addr, cfg.ca_der());
    let admin = admin_addr(&serve).await;
    let mut seed = 0x9e37_79b9_7f4a_7c15;

    // Each report stores about 20 kB (40 kB of hex, gzipped): a few fit, then the tenant's
    // quota of 100 kB a day is reached.
    let mut stored = Vec::new();
    let refused = loop {
        assert!(stored.len() < 20, "never refused: {} stored", stored.len());
        let id = format!("quota-{}", stored.len());
        let json = padded_report(&id, "example.com", 40_000, &mut seed);
        let got = client
            .post_report(
                REPORT_HOST,
                "example.com",
                "application/tlsrpt+json",
                json.clone(),
            )
            .await
            .unwrap();
        if got.status != StatusCode::OK {
            break got;
        }
        stored.push((id, json));
    };
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    let text = String::from_utf8_lossy(&refused.body);
    assert!(
        text.contains("example.com") && text.contains("quota"),
        "{text}"
    );
    assert!(
        stored.len() >= 3,
        "only {} stored before the quota",
        stored.len()
    );

    // Another tenant still has its own quota, until the server's total is reached.
    let other = padded_report("other-0", "example.net", 40_000, &mut seed);
    let got = client
        .post_report(REPORT_HOST, "example.net", "application/tlsrpt+json", other)
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    let mut total_refused = None;
    for i in 1..10 {
        let json = padded_report(&format!("other-{i}"), "example.net", 40_000, &mut seed);
        let got = client
            .post_report(REPORT_HOST, "example.net", "application/tlsrpt+json", json)
            .await
            .unwrap();
        if got.status != StatusCode::OK {
            total_refused = Some(got);
            break;
        }
    }
    let total_refused = total_refused.expect("the total quota refuses at last");
    assert_eq!(total_refused.status, StatusCode::TOO_MANY_REQUESTS);
    let text = String::from_utf8_lossy(&total_refused.body);
    assert!(text.contains("server"), "{text}");

    let metrics = admin_get(admin, "/metrics").await.body;
    assert!(
        metrics.contains(
            "mta_stsd_tlsrpt_reports_received_total{source=\"https\",outcome=\"over_quota\"} 2"
        ),
        "{metrics}"
    );
    drop(serve);
    for (id, json) in &stored {
        let original: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(&reports_show(&cfg, id), &original, "{id} intact");
    }
}

#[tokio::test]
async fn mailed_reports_show_in_the_daemons_metrics() {
    const MTA: &str = "mx.operator.example";
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\ntlsrpt:\n  report_host: {REPORT_HOST}\n  mail:\n    trusted_authserv_ids: [{MTA}]\n"
    ));
    cfg.simple_tenant("example.com");
    let serve = ServeProcess::start(cfg.path());
    let admin = admin_addr(&serve).await;
    let json = crate::common::report_json(
        "sender.example",
        "mailed-1",
        "example.com",
        time::OffsetDateTime::now_utc().date(),
        5,
        &[],
    );
    let mail = crate::common::report_mail("sender.example", "example.com", &json, Some(MTA));
    // ingest-mail runs in its own process, as an MTA's pipe transport would start it.
    let (code, _, stderr) = crate::common::run_binary(
        &[
            std::ffi::OsStr::new("ingest-mail"),
            std::ffi::OsStr::new("--config"),
            cfg.path().as_os_str(),
        ],
        &mail,
    );
    assert_eq!(code, 0, "{stderr}");
    let metrics = admin_get(admin, "/metrics").await.body;
    for sample in [
        "mta_stsd_tlsrpt_reports_stored{source=\"mail\"} 1",
        "mta_stsd_tlsrpt_reports_stored{source=\"https\"} 0",
    ] {
        assert!(metrics.contains(sample), "no {sample:?} in:\n{metrics}");
    }
    // The daemon's own counters only see HTTPS: no mail series that never moves.
    assert!(
        !metrics.contains("mta_stsd_tlsrpt_reports_received_total{source=\"mail\""),
        "{metrics}"
    );
}

#[test]
fn the_state_directory_and_database_are_made_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TestConfig::new();
    cfg.simple_tenant("example.com");
    let state = cfg.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let serve = ServeProcess::start(cfg.path());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("tlsrpt.sqlite3")), 0o600);
    drop(serve);
}
