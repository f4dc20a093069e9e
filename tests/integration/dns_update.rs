//! RFC 2136 updates against a real BIND 9 primary, driven by the real binary: records appear
//! only once a tenant is ready, follow a policy edit after the new body is served, touch no
//! other record, are not re-sent after a restart, and are deleted (only what was written)
//! when the tenant goes; a wrong TSIG key changes nothing and is reported.

use std::time::Duration;

use crate::certs_files::{TestCa, write_pair};
use crate::common::{
    Bind, Client, ServeProcess, TestConfig, TsigKey, admin_get, eventually, run_binary,
};

const ZONE: &str = "example.test";
const KEY: &str = "mta-stsd";

/// Records of the zone mta-stsd must leave alone, and a stale hand-written id it replaces.
const OTHERS: &str = "www IN A 192.0.2.1\n_mta-sts.manual IN TXT \"v=STSv1; id=manual1\"\nready IN MX 10 mx.ready.example.test.\n_mta-sts.ready IN TXT \"v=STSv1; id=stale\"\n";

fn server_yaml(port: u16) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nadmin:\n  listen: \"127.0.0.1:0\"\nissuer: files\nfiles:\n  dir: certs\ndns_update:\n  - server: \"127.0.0.1:{port}\"\n    zones: [{ZONE}]\n    key_name: {KEY}.\n    algorithm: hmac-sha256\n    secret_file: tsig.key\n    tlsrpt: true\n"
    )
}

fn tenant(domain: &str, mode: &str) -> String {
    format!(
        "domain: {domain}\nmode: {mode}\nmx: [mx.{domain}]\nmax_age: 86400\ntlsrpt: {{rua: [\"mailto:tls@{domain}\"]}}\n"
    )
}

/// A configuration with `ready.example.test` (valid certificate) and `nocert.example.test`
/// (none, so never ready), pointed at `bind` with `secret`.
fn config(bind: &Bind, secret: &str, ca: &TestCa) -> TestConfig {
    let cfg = TestConfig::with_server(&server_yaml(bind.port));
    std::fs::write(cfg.path().join("tsig.key"), format!("{secret}\n")).unwrap();
    cfg.tenant("ready.yaml", &tenant("ready.example.test", "testing"));
    cfg.tenant("nocert.yaml", &tenant("nocert.example.test", "testing"));
    let now = time::OffsetDateTime::now_utc();
    let host = "mta-sts.ready.example.test";
    let pem = ca.leaf_between(
        &[host],
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    );
    write_pair(&cfg.path().join("certs"), host, &pem);
    cfg
}

/// The `_mta-sts` value `mta-stsd dns` gives for `domain` from the files as they are now.
fn sts_value(cfg: &TestConfig, domain: &str) -> String {
    let (code, out, err) = run_binary(
        &[
            "dns".as_ref(),
            "--json".as_ref(),
            "--config".as_ref(),
            cfg.path().as_os_str(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["domain"] == domain)
        .unwrap();
    format!("v=STSv1; id={}", entry["id"].as_str().unwrap())
}

fn in_step(v: &serde_json::Value) -> bool {
    v["message"] == "dns_update: records in step"
}

/// Waits until `name` holds exactly `want` at `bind`.
async fn eventually_txt(bind: &Bind, name: &str, want: &[String]) -> bool {
    eventually(Duration::from_secs(30), || async { bind.txt(name) == want }).await
}

fn others_untouched(bind: &Bind) {
    assert_eq!(
        bind.dig(&format!("www.{ZONE}"), "A").unwrap(),
        vec!["192.0.2.1"]
    );
    assert_eq!(
        bind.txt(&format!("_mta-sts.manual.{ZONE}")),
        vec!["v=STSv1; id=manual1"]
    );
    assert_eq!(
        bind.dig(&format!("ready.{ZONE}"), "MX").unwrap(),
        vec!["10 mx.ready.example.test."]
    );
}

fn updates_logged(bind: &Bind) -> usize {
    bind.log().matches("updating zone").count()
}

#[tokio::test]
async fn records_follow_the_ready_gate_survive_a_restart_and_go_with_the_tenant() {
    let key = TsigKey::random(KEY);
    let bind = Bind::start(ZONE, &key, OTHERS);
    let ca = TestCa::new();
    let cfg = config(&bind, &key.secret, &ca);
    let ready_sts = sts_value(&cfg, "ready.example.test");
    let daemon = ServeProcess::start(cfg.path());
    assert!(
        daemon.wait_for(Duration::from_secs(60), in_step).is_some(),
        "{}",
        bind.log()
    );

    // The ready tenant's records replaced the stale id; the one without a certificate has
    // its (ungated) TLS-RPT record but no `_mta-sts` id yet.
    assert_eq!(
        bind.txt("_mta-sts.ready.example.test"),
        vec![ready_sts.clone()]
    );
    let rua = |d: &str| vec![format!("v=TLSRPTv1; rua=mailto:tls@{d}")];
    assert_eq!(
        bind.txt("_smtp._tls.ready.example.test"),
        rua("ready.example.test")
    );
    assert!(bind.txt("_mta-sts.nocert.example.test").is_empty());
    assert_eq!(
        bind.txt("_smtp._tls.nocert.example.test"),
        rua("nocert.example.test")
    );
    others_untouched(&bind);
    let detail = admin_get(daemon.admin_addr(), "/api/v1/tenants/nocert.example.test")
        .await
        .json();
    let states: Vec<_> = detail["dns_update"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [("_mta-sts", "pending"), ("_smtp._tls", "published")]
        .map(|(n, s)| (format!("{n}.nocert.example.test"), s.to_owned()));
    assert_eq!(states, want, "{detail}");

    // A restart compares first and sends nothing: no update in BIND's log, same serial.
    let (serial, logged) = (bind.serial(ZONE), updates_logged(&bind));
    drop(daemon);
    let starting = ServeProcess::spawn(None, cfg.path());
    let pid = starting.pid();
    let daemon = starting.serving();
    assert!(daemon.wait_for(Duration::from_secs(60), in_step).is_some());
    assert_eq!(bind.serial(ZONE), serial);
    assert_eq!(updates_logged(&bind), logged, "{}", bind.log());

    // A policy edit: once the new id is in the zone, the new body is already served.
    cfg.tenant("ready.yaml", &tenant("ready.example.test", "enforce"));
    let new_sts = sts_value(&cfg, "ready.example.test");
    assert_ne!(new_sts, ready_sts);
    assert!(eventually_txt(&bind, "_mta-sts.ready.example.test", &[new_sts]).await);
    let client = Client::new(daemon.addr, ca.der.clone());
    let body = client
        .get_policy("mta-sts.ready.example.test")
        .await
        .unwrap()
        .body;
    assert!(String::from_utf8_lossy(&body).contains("mode: enforce"));

    // nocert's certificate arrives: only now is its id written.
    let host = "mta-sts.nocert.example.test";
    let now = time::OffsetDateTime::now_utc();
    let pem = ca.leaf_between(
        &[host],
        now - time::Duration::days(1),
        now + time::Duration::days(30),
    );
    write_pair(&cfg.path().join("certs"), host, &pem);
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status();
    assert!(hup.unwrap().success());
    let nocert_sts = sts_value(&cfg, "nocert.example.test");
    assert!(eventually_txt(&bind, "_mta-sts.nocert.example.test", &[nocert_sts]).await);

    // Someone edits nocert's TLS-RPT record by hand: when the tenant goes, it is not ours
    // any more and stays; ready's records, which mta-stsd wrote, are deleted.
    nsupdate(
        &bind,
        &key,
        "update delete _smtp._tls.nocert.example.test TXT\nupdate add _smtp._tls.nocert.example.test 300 TXT \"v=TLSRPTv1; rua=mailto:hand@example.test\"\n",
    );
    std::fs::remove_file(cfg.tenant("ready.yaml", &tenant("ready.example.test", "enforce")))
        .unwrap();
    std::fs::remove_file(cfg.tenant("nocert.yaml", &tenant("nocert.example.test", "testing")))
        .unwrap();
    // Their files are gone while they served testing and enforce: retired (RFC 8461 §8.3), the
    // zone gets the mode-none id; the operator confirms the removal, and the records go.
    let ready_now = bind.txt("_mta-sts.ready.example.test");
    assert!(
        eventually(Duration::from_secs(30), || async {
            let now = bind.txt("_mta-sts.ready.example.test");
            !now.is_empty() && now != ready_now
        })
        .await,
        "{}",
        bind.log()
    );
    let admin = daemon.admin_addr();
    for domain in ["ready.example.test", "nocert.example.test"] {
        let path = format!("/api/v1/tenants/{domain}/forget");
        let forgotten = eventually(Duration::from_secs(30), || async {
            let resp = crate::common::admin_request(admin, http::Method::POST, &path, &[]).await;
            resp.status == http::StatusCode::OK
        })
        .await;
        assert!(forgotten, "{domain}");
    }
    assert!(eventually_txt(&bind, "_mta-sts.ready.example.test", &[]).await);
    assert!(eventually_txt(&bind, "_smtp._tls.ready.example.test", &[]).await);
    assert!(eventually_txt(&bind, "_mta-sts.nocert.example.test", &[]).await);
    assert!(daemon.wait_for(Duration::from_secs(30), in_step).is_some());
    assert_eq!(
        bind.txt("_smtp._tls.nocert.example.test"),
        vec!["v=TLSRPTv1; rua=mailto:hand@example.test"]
    );
    others_untouched(&bind);
}

/// One `nsupdate` session against `bind` signed with `key`.
fn nsupdate(bind: &Bind, key: &TsigKey, commands: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("nsupdate")
        .arg("-y")
        .arg(format!("hmac-sha256:{}:{}", key.name, key.secret))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nsupdate (bind9-dnsutils) is not installed");
    let script = format!(
        "server 127.0.0.1 {}\nzone {ZONE}\n{commands}send\n",
        bind.port
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn a_wrong_key_changes_nothing_and_is_reported() {
    let key = TsigKey::random(KEY);
    let bind = Bind::start(ZONE, &key, OTHERS);
    let ca = TestCa::new();
    let wrong = TsigKey::random(KEY);
    let cfg = config(&bind, &wrong.secret, &ca);
    let serial = bind.serial(ZONE);
    let daemon = ServeProcess::start(cfg.path());
    let failed = daemon
        .wait_for(Duration::from_secs(60), |v| {
            v["message"] == "dns_update: the primary did not take the update; retrying later"
        })
        .expect("the rejected update is logged");
    let error = failed["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.starts_with("NOTAUTH: the server rejected the TSIG signature"),
        "{failed}"
    );
    assert_eq!(bind.serial(ZONE), serial);
    assert_eq!(
        bind.txt("_mta-sts.ready.example.test"),
        vec!["v=STSv1; id=stale"]
    );
    assert!(bind.txt("_smtp._tls.ready.example.test").is_empty());
    others_untouched(&bind);
    assert!(
        !daemon
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&wrong.secret)),
        "the secret is never logged"
    );
    eprintln!("rejected update reported as: {error}");

    // The admin API and the metrics show the error with the rcode.
    let admin = daemon.admin_addr();
    let detail = admin_get(admin, "/api/v1/tenants/ready.example.test")
        .await
        .json();
    let states = detail["dns_update"]
        .as_array()
        .expect("dns_update states")
        .clone();
    let sts = states
        .iter()
        .find(|r| r["name"] == "_mta-sts.ready.example.test")
        .unwrap();
    assert_eq!(sts["state"], "error", "{detail}");
    assert!(
        sts["error"].as_str().unwrap().starts_with("NOTAUTH"),
        "{detail}"
    );
    let metrics = admin_get(admin, "/metrics").await.body;
    assert!(
        metrics.contains("mta_stsd_dns_updates_total{result=\"NOTAUTH\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mta_stsd_dns_update_state{state=\"error\"}"),
        "{metrics}"
    );
}
