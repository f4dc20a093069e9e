//! The real binary: `check`, `dns`, `--help`, and `serve` with signals and JSON logs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;

use crate::common::{Client, ServeProcess, TestConfig, binary};

fn run(args: &[&str], cfg: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn shipped_example_config_checks_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let (code, out, _) = run(&["check"], &dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("3 tenant(s) valid, 0 error(s), 0 warning(s)"),
        "{out}"
    );
}

#[test]
fn check_lists_every_error_in_every_file_and_fails() {
    let cfg = TestConfig::new();
    cfg.tenant(
        "a.yaml",
        "domain: a.example\nmode: testing\nmxx: [mx.a.example]\n",
    );
    cfg.tenant(
        "b.yaml",
        "domain: b.example.\nmode: enforce\nmx: [\"mx.*.b.example\"]\nmax_age: 99999999\n",
    );
    cfg.simple_tenant("good.example");
    let (code, out, _) = run(&["check"], cfg.path());
    assert_eq!(code, Some(1));
    let a = cfg.path().join("tenants/a.yaml");
    let b = cfg.path().join("tenants/b.yaml");
    for line in [
        format!("{}:3:1: error: mxx: unknown field `mxx`", a.display()),
        format!(
            "{}:1:9: error: domain: \"b.example.\" must not end with a dot",
            b.display()
        ),
        format!(
            "{}:3:6: error: mx[0]: \"mx.*.b.example\": a wildcard",
            b.display()
        ),
        format!(
            "{}:4:10: error: max_age: 99999999 is above the RFC 8461 limit",
            b.display()
        ),
        "1 tenant(s) valid, 4 error(s), 0 warning(s)".to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn check_reports_server_file_errors() {
    let cfg = TestConfig::with_server(
        "listen: localhost\nstate_dir: state\nissuer: internal\nlimitz: {}\n",
    );
    let (code, out, _) = run(&["check"], cfg.path());
    assert_eq!(code, Some(1));
    assert!(
        out.contains("mta-stsd.yaml:4:1: error: limitz: unknown field `limitz`"),
        "{out}"
    );
}

#[test]
fn dns_prints_zone_lines_and_json() {
    let cfg = TestConfig::with_server(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\npublic_hostname: sts.operator.example\n",
    );
    cfg.tenant(
        "e.yaml",
        "domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: 86400\ntlsrpt:\n  rua: [\"mailto:tls@example.com\"]\n",
    );
    let id = mta_stsd::policy::policy_id(
        b"version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n",
    );
    let (code, out, _) = run(&["dns"], cfg.path());
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with(';')).collect();
    assert_eq!(
        lines,
        vec![
            format!("_mta-sts.example.com. IN TXT \"v=STSv1; id={id}\""),
            "_smtp._tls.example.com. IN TXT \"v=TLSRPTv1; rua=mailto:tls@example.com\"".to_owned(),
            "mta-sts.example.com. IN CNAME sts.operator.example.".to_owned(),
        ]
    );
    let (code, out, _) = run(&["dns", "--json"], cfg.path());
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["domain"], "example.com");
    assert_eq!(v[0]["id"], id.as_str());
    assert_eq!(v[0]["records"][0]["name"], "_mta-sts.example.com.");
    assert_eq!(v[0]["records"][0]["value"], format!("v=STSv1; id={id}"));
}

#[test]
fn help_explains_every_subcommand() {
    for (sub, needle) in [
        ("serve", "--config <DIR>"),
        ("check", "Exit status 0"),
        ("dns", "--json"),
        ("reports", "3 when a tenant shown needs attention"),
        ("certs", "3 when a certificate needs attention"),
    ] {
        let out = Command::new(binary())
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(needle),
            "{sub} --help lacks {needle:?}:\n{text}"
        );
        assert!(
            text.contains("MTA_STSD_CONFIG"),
            "{sub} --help should name the env var"
        );
    }
}

/// The real daemon: JSON startup line, a policy over HTTPS, SIGTERM → exit 0.
#[tokio::test]
async fn serve_logs_json_serves_and_exits_cleanly_on_sigterm() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("example.com");
    let mut child = Command::new(binary())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(cfg.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    while addr.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("startup line");
        let v: serde_json::Value = serde_json::from_str(&line).expect("every log line is JSON");
        if v["message"] == "mta-stsd serving" {
            assert_eq!(v["tenants"], 1);
            assert_eq!(v["issuer"], "internal");
            addr = Some(
                v["https"]
                    .as_str()
                    .unwrap()
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
            );
        }
    }
    let client = Client::new(addr.unwrap(), cfg.ca_der());
    assert_eq!(
        client
            .get_policy("mta-sts.example.com")
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("mta-stsd stopped")),
        "{rest:?}"
    );
}

#[test]
fn serve_refuses_a_broken_server_file_with_the_location() {
    let cfg = TestConfig::with_server("listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: acmee\n");
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mta-stsd.yaml:3:9: error: issuer: unknown variant `acmee`"),
        "{err}"
    );
}

#[test]
fn container_config_checks_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = TestConfig::with_server(
        &std::fs::read_to_string(root.join("deploy/docker/mta-stsd.yaml")).unwrap(),
    );
    for entry in std::fs::read_dir(root.join("config/tenants")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            cfg.path().join("tenants").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let (code, out, _) = run(&["check"], cfg.path());
    assert_eq!(code, Some(0), "{out}");
}

/// A config with `n` tenants in one list file: enough output to overflow a pipe's buffer.
fn many_tenants(n: usize) -> TestConfig {
    let cfg = TestConfig::new();
    let list: String = (0..n)
        .map(|i| format!("- domain: t{i}.example\n  mode: testing\n  mx: [mx.t{i}.example]\n"))
        .collect();
    cfg.tenant("bulk.yaml", &list);
    cfg
}

/// `mta-stsd dns | head -1`: the reader goes away after one line; the writer must stop
/// quietly instead of printing "Broken pipe" (Rust ignores SIGPIPE, so writes get EPIPE).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let cfg = many_tenants(5000);
    for args in [&["dns"][..], &["dns", "--json"], &["reports", "--json"]] {
        let mut child = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(cfg.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "{args:?}: no output");
        // Closing our end is what `head` does after its line.
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("error") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        if args[0] == "dns" {
            assert_eq!(err, "", "{args:?}");
        }
    }
}

/// A self-signed (chain PEM, key PEM) for `host`, valid until `days` from now (negative:
/// already expired).
fn self_signed(host: &str, days: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(days);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// `certs` exits 3 when a certificate is in error, backing off or expired, so a cron job or
/// monitoring check notices without parsing the table; 0 when all are fine or on their way.
#[test]
fn certs_exit_status_says_when_a_certificate_needs_attention() {
    let cfg = TestConfig::with_server(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: files\nfiles:\n  dir: certs\n",
    );
    cfg.simple_tenant("good.example");
    let (chain, key) = self_signed("mta-sts.good.example", 60);
    let folder = cfg.path().join("certs/mta-sts.good.example");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tls.crt"), chain).unwrap();
    std::fs::write(folder.join("tls.key"), key).unwrap();
    let (code, out, err) = run(&["certs"], cfg.path());
    assert_eq!(code, Some(0), "{out}{err}");
    cfg.simple_tenant("missing.example");
    let (code, out, err) = run(&["certs"], cfg.path());
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("mta-sts.missing.example  error")),
        "{out}"
    );

    use mta_stsd::certs::CertState;
    use mta_stsd::certs::store::{CertMeta, CertStore, FileStore, StatusRecord, StoredCert};
    let cfg = TestConfig::with_server(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: acme\nacme:\n  directory: letsencrypt-staging\n  preflight:\n    enabled: false\n",
    );
    cfg.simple_tenant("new.example");
    cfg.simple_tenant("old.example");
    let store = FileStore::new(&cfg.path().join("state"));
    let status = |state| StatusRecord {
        state,
        last_error: None,
        next_attempt: None,
        updated: mta_stsd::util::unix_now(),
    };
    let (chain_pem, key_pem) = self_signed("mta-sts.old.example", -1);
    store
        .save_cert(
            "mta-sts.old.example",
            &StoredCert {
                chain_pem,
                key_pem,
                meta: CertMeta::default(),
            },
        )
        .unwrap();
    // The daemon last saw it valid, then stopped; the certificate ran out since.
    store
        .save_status("mta-sts.old.example", &status(CertState::Valid))
        .unwrap();
    let (code, out, err) = run(&["certs"], cfg.path());
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("mta-sts.old.example  expired")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("mta-sts.new.example  pending")),
        "a new tenant waiting for its first certificate is no alarm: {out}"
    );
    let (chain_pem, key_pem) = self_signed("mta-sts.old.example", 60);
    let fresh = StoredCert {
        chain_pem,
        key_pem,
        meta: CertMeta::default(),
    };
    store.save_cert("mta-sts.old.example", &fresh).unwrap();
    let (code, out, err) = run(&["certs"], cfg.path());
    assert_eq!(code, Some(0), "{out}{err}");
    store
        .save_status("mta-sts.new.example", &status(CertState::Backoff))
        .unwrap();
    let (code, out, err) = run(&["certs"], cfg.path());
    assert_eq!(code, Some(3), "{out}{err}");
}

#[test]
fn check_warns_like_serve_about_an_admin_listener_open_to_all() {
    let cfg = TestConfig::with_server(&format!(
        "{}admin:\n  listen: \"0.0.0.0:9180\"\n",
        crate::common::BASE_SERVER_YAML
    ));
    cfg.simple_tenant("example.com");
    let (code, out, _) = run(&["check"], cfg.path());
    assert_eq!(code, Some(0), "a warning does not fail check: {out}");
    let file = cfg.path().join("mta-stsd.yaml");
    for line in [
        format!(
            "{}:5:11: warning: admin.listen: not a loopback address and no admin.token_file: anyone who can reach it can read metrics and tenant data and trigger reloads",
            file.display()
        ),
        "1 tenant(s) valid, 0 error(s), 1 warning(s)".to_owned(),
    ] {
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn check_reads_yml_and_warns_about_every_other_skipped_file() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("a.example");
    cfg.tenant(
        "b.yml",
        "domain: b.example\nmode: testing\nmx: [mx.b.example]\nmax_age: 86400\n",
    );
    cfg.tenant(
        "c.YAML",
        "domain: c.example\nmode: testing\nmx: [mx.c.example]\nmax_age: 86400\n",
    );
    cfg.tenant("notes.txt", "not a tenant\n");
    cfg.tenant(".hidden.yaml.swp", "editor state\n");
    let (code, out, _) = run(&["check"], cfg.path());
    assert_eq!(code, Some(0), "{out}");
    let tenants = cfg.path().join("tenants");
    for name in ["c.YAML", "notes.txt"] {
        let line = format!(
            "{}:0:0: warning: skipped: tenant files are named *.yaml or *.yml",
            tenants.join(name).display()
        );
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
    assert!(
        !out.contains(".hidden"),
        "hidden names are skipped silently: {out}"
    );
    assert!(
        out.contains("2 tenant(s) valid, 0 error(s), 2 warning(s)"),
        "{out}"
    );
}

#[test]
fn reports_since_takes_the_server_file_duration_units() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("example.com");
    for window in ["90m", "36h", "1w", "2026-01-01"] {
        let (code, _, err) = run(&["reports", "--since", window], cfg.path());
        assert_eq!(code, Some(0), "{window}: {err}");
    }
    let (code, _, err) = run(&["reports", "--since", "7"], cfg.path());
    assert_eq!(code, Some(1), "a bare number is ambiguous");
    assert!(err.contains("--since"), "{err}");
}

/// `systemctl reload` during a long first load (the unit's `ExecReload` sends SIGHUP): the
/// daemon must not die of it, and the signal becomes one reload once it serves.
#[tokio::test]
async fn sighup_during_the_first_load_is_one_reload_after_it() {
    let cfg = TestConfig::new();
    let mut bulk = String::with_capacity(20_000 * 80);
    for i in 0..20_000 {
        bulk.push_str(&format!(
            "- domain: t{i}.example\n  mode: testing\n  mx: [mx.t{i}.example]\n  max_age: 86400\n"
        ));
    }
    cfg.tenant("bulk.yaml", &bulk);
    let mut starting = ServeProcess::spawn(None, cfg.path());
    // Logged once the server file is read, before the tenants get their certificates.
    let loading = starting.wait_for(Duration::from_secs(60), |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("internal CA"))
    });
    assert!(loading.is_some(), "no startup line");
    let sent = Command::new("kill")
        .args(["-HUP", &starting.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut serve = starting.serving();
    let reloaded = serve.wait_for(Duration::from_secs(60), |v| {
        v["message"] == "configuration reloaded" && v["trigger"] == "Signal"
    });
    assert!(
        reloaded.is_some(),
        "no reload for the SIGHUP; log:\n{}",
        serve.log.lock().unwrap().join("\n")
    );
    assert_eq!(serve.exited(), None);
    let client = Client::new(serve.addr, cfg.ca_der());
    let got = client.get_policy("mta-sts.t19999.example").await.unwrap();
    assert_eq!(got.status, StatusCode::OK);
    let log = serve.log.lock().unwrap().clone();
    let hups = log
        .iter()
        .filter(|l| l.contains("SIGHUP: reloading"))
        .count();
    assert_eq!(hups, 1, "one signal, one reload");
}
