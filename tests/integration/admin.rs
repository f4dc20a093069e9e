//! The admin listener, metrics (checked by promtool and an OpenMetrics parser), SIGHUP on the
//! real binary and `dns --admin`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::common::{
    BASE_SERVER_YAML, Client, TestConfig, admin_get, admin_request, binary, start,
};

const TESTING: &str = "domain: example.com\nmode: testing\nmx: [mail.example.com]\nmax_age: 86400\ntlsrpt:\n  rua: [\"mailto:tlsrpt@example.com\"]\n";

#[tokio::test]
async fn health_and_api_shapes() {
    let cfg = TestConfig::new();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let addr = running.admin_addr;

    let health = admin_get(addr, "/healthz").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "ok\n")
    );
    let client = running.client();
    assert!(
        crate::common::eventually(Duration::from_secs(10), || async {
            admin_get(addr, "/readyz").await.status == StatusCode::OK
        })
        .await
    );
    // The listener really is up once /readyz says so.
    assert!(client.get_policy("mta-sts.example.com").await.is_ok());

    let list = admin_get(addr, "/api/v1/tenants").await;
    assert_eq!(list.headers["content-type"], "application/json");
    let list = list.json();
    assert_eq!(list["count"], 1);
    let t = &list["tenants"][0];
    for key in [
        "domain",
        "policy_host",
        "mode",
        "mx",
        "max_age",
        "id",
        "records",
        "txt",
        "ready",
        "certificate",
        "source",
        "stale",
        "last_error",
        "errors",
    ] {
        assert!(t.get(key).is_some(), "tenant list entry lacks {key}: {t}");
    }

    let detail = admin_get(addr, "/api/v1/tenants/EXAMPLE.com").await.json();
    let body = "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 86400\r\n";
    let id = mta_stsd::policy::policy_id(body.as_bytes());
    assert_eq!(detail["domain"], "example.com");
    assert_eq!(detail["policy_host"], "mta-sts.example.com");
    assert_eq!(detail["mode"], "testing");
    assert_eq!(detail["mx"], serde_json::json!(["mail.example.com"]));
    assert_eq!(detail["max_age"], 86400);
    assert_eq!(detail["id"], id);
    assert_eq!(detail["body"], body);
    assert_eq!(detail["ready"], true);
    assert_eq!(detail["stale"], false);
    assert!(detail["last_error"].is_null());
    assert_eq!(detail["certificate"]["state"], "valid");
    assert_eq!(detail["certificate"]["provider"], "internal");
    assert!(detail["certificate"]["cert"]["not_after"].as_i64().unwrap() > 0);
    assert!(
        detail["source"]["file"]
            .as_str()
            .unwrap()
            .ends_with("tenants/example.com.yaml")
    );
    assert_eq!(detail["source"]["line"], 1);
    assert_eq!(
        detail["records"],
        serde_json::json!([
            {"name": "_mta-sts.example.com.", "type": "TXT", "value": format!("v=STSv1; id={id}")},
            {"name": "_smtp._tls.example.com.", "type": "TXT", "value": "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"},
        ])
    );
    assert_eq!(
        detail["txt"]["tlsrpt"],
        "_smtp._tls.example.com TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@example.com\""
    );

    let missing = admin_get(addr, "/api/v1/tenants/example.org").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"], "no such tenant");
    // Every error is JSON with an `error`, whatever the path or method.
    for (method, path, status) in [
        (Method::GET, "/nope", StatusCode::NOT_FOUND),
        (Method::GET, "/reload", StatusCode::METHOD_NOT_ALLOWED),
        (
            Method::DELETE,
            "/api/v1/tenants/example.com",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/api/v1/tenants",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/api/v1/tenants/example.com/nope",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/v1/tenants/example.org",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let resp = admin_request(addr, method.clone(), path, &[]).await;
        assert_eq!(resp.status, status, "{method} {path}");
        assert_eq!(
            resp.headers
                .get("content-type")
                .map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "{method} {path}"
        );
        assert!(
            resp.json()["error"].is_string(),
            "{method} {path}: {}",
            resp.body
        );
    }

    let reload = admin_request(addr, Method::POST, "/reload", &[]).await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);
    let reload = reload.json();
    assert_eq!(reload["result"], "success");
    assert_eq!(reload["trigger"], "api");
    assert_eq!(reload["tenants"], 1);
    assert!(reload["elapsed_ms"].is_number());

    let status = admin_get(addr, "/api/v1/status").await.json();
    assert_eq!(status["last_trigger"], "api");
    assert!(status["last_success"].as_i64().unwrap() > 0);
    assert_eq!(status["errors"], serde_json::json!([]));
    running.stop().await;
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\n  token_file: admin.token\n"
    ));
    std::fs::write(cfg.path().join("admin.token"), "s3cret-token\n").unwrap();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let addr = running.admin_addr;
    for path in ["/metrics", "/api/v1/tenants", "/api/v1/status"] {
        let resp = admin_get(addr, path).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(resp.headers.contains_key("www-authenticate"));
        assert!(resp.json()["error"].is_string(), "{}", resp.body);
        let wrong = admin_request(
            addr,
            Method::GET,
            path,
            &[("authorization", "Bearer s3cret")],
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        let right = admin_request(
            addr,
            Method::GET,
            path,
            &[("authorization", "Bearer s3cret-token")],
        )
        .await;
        assert_eq!(right.status, StatusCode::OK, "{path}");
        // The scheme is case-insensitive (RFC 9110 §11.1).
        assert_eq!(
            status_with(addr, path, "bearer s3cret-token").await,
            StatusCode::OK,
            "{path}"
        );
    }
    let reload = admin_request(addr, Method::POST, "/reload", &[]).await;
    assert_eq!(reload.status, StatusCode::UNAUTHORIZED);
    // Probes stay open.
    assert_eq!(admin_get(addr, "/healthz").await.status, StatusCode::OK);
    running.stop().await;
}

/// The status of `GET path` with `Authorization: <authorization>`.
async fn status_with(addr: SocketAddr, path: &str, authorization: &str) -> StatusCode {
    admin_request(addr, Method::GET, path, &[("authorization", authorization)])
        .await
        .status
}

#[tokio::test]
async fn a_changed_token_file_applies_on_reload() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\n  token_file: admin.token\nreload:\n  watch: false\n"
    ));
    let token_file = cfg.path().join("admin.token");
    std::fs::write(&token_file, "old-token\n").unwrap();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let addr = running.admin_addr;
    let path = "/api/v1/status";
    assert_eq!(
        status_with(addr, path, "Bearer old-token").await,
        StatusCode::OK
    );

    // Rotated on disk: nothing changes until a reload says so.
    std::fs::write(&token_file, "new-token\n").unwrap();
    assert_eq!(
        status_with(addr, path, "Bearer old-token").await,
        StatusCode::OK
    );
    let reload = admin_request(
        addr,
        Method::POST,
        "/reload",
        &[("authorization", "Bearer old-token")],
    )
    .await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);
    assert_eq!(
        status_with(addr, path, "Bearer old-token").await,
        StatusCode::UNAUTHORIZED,
        "the old token is refused after the reload"
    );
    assert_eq!(
        status_with(addr, path, "Bearer new-token").await,
        StatusCode::OK
    );

    // An empty (or missing) token file is an error that keeps the token working.
    std::fs::write(&token_file, "\n").unwrap();
    running
        .reloader
        .reload(mta_stsd::reload::Trigger::Api)
        .await;
    assert_eq!(
        status_with(addr, path, "Bearer new-token").await,
        StatusCode::OK
    );
    assert_eq!(
        status_with(addr, path, "Bearer ").await,
        StatusCode::UNAUTHORIZED
    );
    std::fs::remove_file(&token_file).unwrap();
    running
        .reloader
        .reload(mta_stsd::reload::Trigger::Api)
        .await;
    assert_eq!(
        status_with(addr, path, "Bearer new-token").await,
        StatusCode::OK
    );
    running.stop().await;
}

#[tokio::test]
async fn a_token_file_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\n  token_file: admin.token\n"
    ));
    let token_file = cfg.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let is_warning =
        |v: &serde_json::Value| v["level"] == "WARN" && message(v).contains("admin token file");

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut daemon = Daemon::start(cfg.path());
    let warned = daemon.wait_for("warning about the token file mode", is_warning);
    assert!(message(&warned).contains("0644"), "{warned}");
    assert_eq!(warned["file"], token_file.display().to_string());
    drop(daemon);

    // Owner-only: no warning before the daemon serves.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut daemon = Daemon::start(cfg.path());
    daemon.wait_for("mta-stsd serving", |v| message(v) == "mta-stsd serving");
    assert_eq!(daemon.count(is_warning), 0, "{:#?}", daemon.seen);
}

/// Runs `program args` with `input` on stdin; returns (success, stdout + stderr).
fn run_with_stdin(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); CI installs it with apt-get (see the README)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn metrics_pass_promtool_and_an_openmetrics_parser() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}tlsrpt:\n  report_host: reports.operator.test\nmetrics:\n  per_tenant: all\n"
    ));
    cfg.tenant("example.com.yaml", TESTING);
    cfg.tenant(
        "example.net.yaml",
        "domain: example.net\nmode: enforce\nmx: [mail.example.net]\nmax_age: 604800\n",
    );
    cfg.tenant("broken.yaml", "domain: [\n");
    let running = start(&cfg).await;
    let client = running.client();
    for _ in 0..3 {
        client.get_policy("mta-sts.example.com").await.unwrap();
    }
    client
        .request(
            "mta-sts.example.com",
            "mta-sts.example.com",
            Method::GET,
            "/other",
            false,
        )
        .await
        .unwrap();
    // Unknown SNI: refused in the handshake and counted, never a label.
    assert!(
        client
            .handshake("mta-sts.attacker.example", &[b"http/1.1"])
            .await
            .is_err()
    );

    let om = admin_get(running.admin_addr, "/metrics").await;
    assert_eq!(om.status, StatusCode::OK);
    assert_eq!(
        om.headers["content-type"],
        mta_stsd::metrics::OPENMETRICS_CONTENT_TYPE
    );
    assert!(om.body.ends_with("# EOF\n"));
    let body = &om.body;
    for expected in [
        "mta_stsd_requests_total{domain=\"example.com\",class=\"2xx\"} 3",
        "mta_stsd_requests_total{domain=\"example.com\",class=\"4xx\"} 1",
        "mta_stsd_tls_handshakes_total{outcome=\"unknown_sni\"} 1",
        "mta_stsd_tls_handshakes_total{outcome=\"ok\"} 4",
        "mta_stsd_request_duration_seconds_count 4",
        "mta_stsd_open_connections ",
        "mta_stsd_tenants{mode=\"enforce\"} 1",
        "mta_stsd_tenants{mode=\"testing\"} 1",
        "mta_stsd_tenant_ready{domain=\"example.net\"} 1",
        "mta_stsd_certificate_state{domain=\"example.com\",state=\"valid\"} 1",
        "mta_stsd_certificate_expiry_timestamp_seconds{domain=\"example.com\"} ",
        // The report host's certificate, beside the tenants' and labelled as such.
        "mta_stsd_certificate_state{domain=\"reports.operator.test\",role=\"report_host\",state=\"valid\"} 1",
        "mta_stsd_certificate_expiry_timestamp_seconds{domain=\"reports.operator.test\",role=\"report_host\"} ",
        "mta_stsd_certificates{state=\"valid\"} 3",
        "mta_stsd_reloads_total{result=\"error\"} 1",
        "mta_stsd_last_reload_success_timestamp_seconds 0",
        "mta_stsd_restart_required 0",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    let id = mta_stsd::policy::policy_id(
        b"version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 86400\r\n",
    );
    assert!(body.contains(&format!(
        "mta_stsd_policy_info{{domain=\"example.com\",mode=\"testing\",id=\"{id}\"}} 1"
    )));
    // The standard process series (read from /proc at scrape time) and the build.
    let sample = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in\n{body}"))
    };
    assert!(sample("process_cpu_seconds_total") > 0.0);
    assert!(sample("process_resident_memory_bytes") > 1e6);
    assert!(sample("process_virtual_memory_bytes") >= sample("process_resident_memory_bytes"));
    let fds = sample("process_open_fds");
    assert!(fds >= 3.0 && fds <= sample("process_max_fds"), "{fds}");
    let started = sample("process_start_time_seconds");
    let now = mta_stsd::util::unix_now() as f64;
    assert!(
        started <= now && started > now - 86_400.0,
        "{started} vs {now}"
    );
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let build = format!(
        "mta_stsd_build_info{{version=\"{}\",commit=\"{commit}\",dirty=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        mta_stsd::util::build::DIRTY
    );
    assert!(body.contains(&build), "missing {build:?} in\n{body}");

    let tenants = admin_get(running.admin_addr, "/api/v1/tenants")
        .await
        .json();
    assert_eq!(tenants["report_host"]["host"], "reports.operator.test");
    assert_eq!(tenants["report_host"]["certificate"]["state"], "valid");
    let broken = cfg.path().join("tenants/broken.yaml").display().to_string();
    assert!(body.contains(&format!("mta_stsd_config_errors{{file=\"{broken}\"}} 1")));
    assert!(
        !body.contains("attacker"),
        "request input never becomes a label"
    );

    // Debian's interpreter, where python3-prometheus-client installs (a pyenv shim on PATH
    // would not see it).
    let (ok, out) = run_with_stdin(
        "/usr/bin/python3",
        &[
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\nprint(len(list(parse(sys.stdin.read()))))",
        ],
        body,
    );
    assert!(
        ok,
        "OpenMetrics parser (Debian python3-prometheus-client) rejected:\n{out}"
    );

    let text = admin_request(
        running.admin_addr,
        Method::GET,
        "/metrics",
        &[("accept", "text/plain")],
    )
    .await;
    assert_eq!(
        text.headers["content-type"],
        mta_stsd::metrics::PROMETHEUS_TEXT_CONTENT_TYPE
    );
    assert!(text.body.contains("# TYPE mta_stsd_requests_total counter"));
    let (ok, out) = run_with_stdin("promtool", &["check", "metrics"], &text.body);
    assert!(ok, "promtool check metrics failed:\n{out}\n{}", text.body);
    running.stop().await;
}

/// The real binary, killed when dropped, with its JSON log lines on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Daemon {
    fn start(dir: &std::path::Path) -> Daemon {
        let mut child = Command::new(binary())
            .args(["--log-format", "json", "serve", "-c"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mta-stsd");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 20 s) for a log line matching `pred`; returns it.
    fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no log line {what} within 20 s; saw:\n{:#?}", self.seen),
            }
        }
    }

    fn count(&self, pred: impl Fn(&serde_json::Value) -> bool) -> usize {
        self.seen.iter().filter(|v| pred(v)).count()
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(v: &serde_json::Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn sighup_reloads_the_real_binary_and_logs_the_txt_record_once() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}admin:\n  listen: \"127.0.0.1:0\"\nreload:\n  watch: false\n"
    ));
    let path = cfg.tenant("example.com.yaml", TESTING);
    let mut daemon = Daemon::start(cfg.path());
    let serving = daemon.wait_for("mta-stsd serving", |v| message(v) == "mta-stsd serving");
    let https: SocketAddr = serving["https"].as_str().unwrap().parse().unwrap();
    let client = Client::new(https, cfg.ca_der());

    let enforce = TESTING.replace("mode: testing", "mode: enforce");
    std::fs::write(&path, &enforce).unwrap();
    let new_body = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 86400\r\n";
    let id = mta_stsd::policy::policy_id(new_body.as_bytes());
    let record = format!("_mta-sts.example.com TXT \"v=STSv1; id={id}\"");
    daemon.hup();
    let logged = daemon.wait_for("with the new TXT record", |v| message(v) == record);
    assert_eq!(logged["level"], "INFO");
    assert_eq!(logged["domain"], "example.com");
    assert_eq!(logged["ready"], true);
    daemon.wait_for("configuration reloaded", |v| {
        message(v) == "configuration reloaded"
    });
    let got = client.get_policy("mta-sts.example.com").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&got.body), new_body);

    // A second SIGHUP with nothing changed logs no record again.
    daemon.hup();
    daemon.wait_for("second reload", |v| {
        message(v) == "configuration reloaded" && v["trigger"] == "Signal"
    });
    assert_eq!(daemon.count(|v| message(v) == record), 1);
    assert_eq!(
        daemon.count(|v| message(v).starts_with("_smtp._tls.")),
        0,
        "the TLS-RPT record did not change"
    );
}

#[tokio::test]
async fn dns_reads_the_running_state_from_the_admin_api() {
    let cfg = TestConfig::new();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let url = format!("http://{}", running.admin_addr);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = Command::new(binary()).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let json = run(vec![
        "dns".into(),
        "--admin".into(),
        url.clone(),
        "--json".into(),
    ])
    .await
    .unwrap();
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list[0]["domain"], "example.com");
    assert_eq!(list[0]["ready"], true);
    let zone = run(vec!["dns".into(), "--admin".into(), url])
        .await
        .unwrap();
    let id = list[0]["id"].as_str().unwrap();
    assert!(
        zone.contains(&format!(
            "_mta-sts.example.com. IN TXT \"v=STSv1; id={id}\""
        )),
        "{zone}"
    );
    assert!(!zone.contains("not ready"), "{zone}");
    // Offline, the readiness is unknown.
    let offline = run(vec![
        "dns".into(),
        "--json".into(),
        "-c".into(),
        cfg.path().display().to_string(),
    ])
    .await
    .unwrap();
    let offline: serde_json::Value = serde_json::from_str(&offline).unwrap();
    assert!(offline[0]["ready"].is_null());
    assert_eq!(offline[0]["id"], id);
    running.stop().await;
}

/// A bulk change is one summary line, not a line per tenant (a 200 000-tenant file once wrote
/// 46 MB of log), and a bulk removal of live policies is still a warning.
#[tokio::test]
async fn a_bulk_reload_logs_one_summary_line() {
    let cfg = TestConfig::with_server(&format!("{BASE_SERVER_YAML}reload:\n  watch: false\n"));
    cfg.tenant("example.com.yaml", TESTING);
    let mut daemon = Daemon::start(cfg.path());
    daemon.wait_for("mta-stsd serving", |v| message(v) == "mta-stsd serving");
    let bulk: String = (0..25)
        .map(|i| {
            format!("- {{domain: bulk{i:02}.example, mode: testing, mx: [mx.bulk.example]}}\n")
        })
        .collect();
    let path = cfg.tenant("bulk.yaml", &bulk);
    daemon.hup();
    let summary = daemon.wait_for("the summary", |v| {
        message(v).starts_with("DNS records changed:")
    });
    assert_eq!(summary["level"], "INFO");
    assert_eq!(summary["changes"], 25);
    let text = message(&summary);
    assert!(
        text.starts_with("DNS records changed: 25 new _mta-sts ids (25 new tenants), 0 _smtp._tls records changed, 0 removed; 0 tenants removed; first: bulk00.example, bulk01.example, bulk02.example, bulk03.example, bulk04.example;"),
        "{text}"
    );
    daemon.wait_for("reloaded", |v| message(v) == "configuration reloaded");
    assert_eq!(daemon.count(|v| message(v).starts_with("_mta-sts.")), 0);

    // A bulk removal of live policies retires them (RFC 8461 §8.3): 25 new ids (mode none),
    // nothing removed yet, one warning line for all of them.
    std::fs::remove_file(&path).unwrap();
    daemon.hup();
    let retiring = daemon.wait_for("the retirement summary", |v| {
        message(v).starts_with("25 tenants retiring")
    });
    assert_eq!(retiring["level"], "WARN");
    let summary = daemon.wait_for("the removal summary", |v| {
        message(v).starts_with("DNS records changed: 25 new")
    });
    assert!(message(&summary).contains("0 tenants removed"), "{summary}");
    daemon.wait_for("reloaded again", |v| message(v) == "configuration reloaded");
    assert_eq!(
        daemon.count(
            |v| message(v).starts_with("tenant removed") || message(v).starts_with("retiring:")
        ),
        0
    );
}

/// `GET /api/v1/tenants` in pages, with filters; `dns --admin` follows the pages to the end.
#[tokio::test]
async fn the_tenant_list_pages_filters_and_dns_follows_every_page() {
    let cfg = TestConfig::new();
    let bulk: String = (0..1005)
        .map(|i| {
            let mode = if i % 5 == 0 { "enforce" } else { "testing" };
            format!("- {{domain: t{i:04}.example, mode: {mode}, mx: [mx.example.net]}}\n")
        })
        .collect();
    cfg.tenant("bulk.yaml", &bulk);
    let running = start(&cfg).await;
    let addr = running.admin_addr;
    // So many certificates are issued in the background: wait for them before `ready=`.
    let issued = crate::common::eventually(Duration::from_secs(60), || async {
        admin_get(addr, "/api/v1/tenants?ready=false&limit=1")
            .await
            .json()["total"]
            == 0
    })
    .await;
    assert!(issued, "certificates still pending");

    let first = admin_get(addr, "/api/v1/tenants").await.json();
    assert_eq!(first["count"], 100, "the default page");
    assert_eq!(first["total"], 1005);
    assert_eq!(first["next_cursor"], "t0099.example");
    let mut seen = Vec::new();
    let mut path = "/api/v1/tenants?limit=400&mode=enforce".to_string();
    loop {
        let page = admin_get(addr, &path).await.json();
        assert_eq!(page["total"], 201);
        for t in page["tenants"].as_array().unwrap() {
            assert_eq!(t["mode"], "enforce");
            seen.push(t["domain"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/tenants?limit=400&mode=enforce&cursor={c}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..1005)
        .step_by(5)
        .map(|i| format!("t{i:04}.example"))
        .collect();
    assert_eq!(seen, expected);

    let found = admin_get(addr, "/api/v1/tenants?q=T100&ready=true")
        .await
        .json();
    let names: Vec<&str> = found["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["domain"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "t1000.example",
            "t1001.example",
            "t1002.example",
            "t1003.example",
            "t1004.example"
        ]
    );
    let none = admin_get(addr, "/api/v1/tenants?ready=false").await.json();
    assert_eq!(
        (none["total"].clone(), none["next_cursor"].clone()),
        (0.into(), serde_json::Value::Null)
    );

    let bad = admin_get(addr, "/api/v1/tenants?limit=5000").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json()["error"].as_str().unwrap().starts_with("limit:"),
        "{}",
        bad.body
    );

    let url = format!("http://{addr}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(["dns", "--admin", &url, "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1005);
    assert_eq!(all[1004]["domain"], "t1004.example");
}

/// Scrapes the daemon `cfg` describes after one policy fetch.
async fn scrape_after_one_fetch(cfg: &TestConfig) -> String {
    let running = start(cfg).await;
    running
        .client()
        .get_policy("mta-sts.example.com")
        .await
        .unwrap();
    let body = admin_get(running.admin_addr, "/metrics").await.body;
    running.stop().await;
    body
}

/// `metrics.per_tenant`: by default only tenants needing attention get series of their own;
/// the aggregates count everyone in every mode.
#[tokio::test]
async fn per_tenant_series_follow_the_metrics_mode() {
    let scrape = |server: &str| {
        // No watchdog: these test domains do not resolve, which would make every tenant a
        // problem (validation.rs tests that rule).
        let cfg = TestConfig::with_server(&format!(
            "{BASE_SERVER_YAML}validation:\n  enabled: false\n{server}"
        ));
        cfg.tenant("example.com.yaml", TESTING);
        cfg.simple_tenant("example.org");
        async move { scrape_after_one_fetch(&cfg).await }
    };
    let per_domain = |body: &str| {
        body.lines()
            .filter(|l| l.contains("domain=\"example."))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let aggregates = [
        "mta_stsd_tenants{mode=\"testing\"} 2",
        "mta_stsd_certificates{state=\"valid\"} 2",
        "mta_stsd_requests_total{class=\"2xx\"} 1",
    ];

    // Healthy tenants with the default: aggregates only.
    let healthy = scrape("").await;
    assert_eq!(per_domain(&healthy), Vec::<String>::new());
    for line in aggregates.iter().chain(&["mta_stsd_tenants_not_ready 0"]) {
        assert!(healthy.contains(line), "missing {line:?} in\n{healthy}");
    }

    // Certificates that expire within three weeks make both tenants problems.
    let short = "internal:\n  leaf_validity_days: 10\n";
    let expiring = scrape(short).await;
    for d in ["example.com", "example.org"] {
        for family in [
            "mta_stsd_certificate_expiry_timestamp_seconds",
            "mta_stsd_certificate_state",
            "mta_stsd_tenant_ready",
            "mta_stsd_policy_info",
        ] {
            let prefix = format!("{family}{{domain=\"{d}\"");
            assert!(
                expiring.lines().any(|l| l.starts_with(&prefix)),
                "no {prefix} in\n{expiring}"
            );
        }
    }
    for line in aggregates {
        assert!(expiring.contains(line), "missing {line:?} in\n{expiring}");
    }
    assert!(!expiring.contains("mta_stsd_requests_total{domain="));

    let none = scrape(&format!("{short}metrics:\n  per_tenant: none\n")).await;
    assert_eq!(per_domain(&none), Vec::<String>::new());
    let all = scrape("metrics:\n  per_tenant: all\n").await;
    assert!(all.contains("mta_stsd_requests_total{domain=\"example.com\",class=\"2xx\"} 1"));
    assert_eq!(
        per_domain(&all)
            .iter()
            .filter(|l| l.starts_with("mta_stsd_tenant_ready{"))
            .count(),
        2
    );
}
