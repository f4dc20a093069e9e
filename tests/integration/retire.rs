//! Retirement (RFC 8461 §8.3) on the real binary, with `--config config` relative as the
//! README runs it: `retire: true` and a deleted file serve `mode: none` under a new id until
//! the longest `max_age` served has passed, across restarts, then stop and report the records
//! to remove. Every wait polls; nothing asserts on timing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::common::{Client, ServeProcess, admin_get, admin_request, eventually, run_binary};

const LIMIT: Duration = Duration::from_secs(30);

/// Loopback listeners, an admin API, a 2-second `mode: none` policy while retiring.
const SERVER: &str = "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\nadmin:\n  listen: \"127.0.0.1:0\"\nretire_max_age: 2\n";

/// A folder holding `config/` (server file and tenants), the daemon run from it.
struct Setup {
    cwd: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(cwd.path().join("config/tenants")).unwrap();
        std::fs::write(cwd.path().join("config/mta-stsd.yaml"), SERVER).unwrap();
        Setup { cwd }
    }

    fn tenant(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.cwd.path().join("config/tenants").join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn start(&self) -> Daemon {
        let serve = ServeProcess::spawn(Some(self.cwd.path()), Path::new("config")).serving();
        let ca = std::fs::read(self.cwd.path().join("config/state/ca/ca.crt")).unwrap();
        let client = Client::new(serve.addr, CertificateDer::from_pem_slice(&ca).unwrap());
        let lines = serve.log_lines(|v| v["message"] == "admin listener up");
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let admin = line["admin"].as_str().unwrap().parse().unwrap();
        Daemon {
            serve,
            client,
            admin,
        }
    }
}

struct Daemon {
    serve: ServeProcess,
    client: Client,
    admin: SocketAddr,
}

impl Daemon {
    fn log(&self) -> String {
        self.serve.log.lock().unwrap().join("\n")
    }

    /// The body served for `domain`'s policy host, `None` when nothing is served.
    async fn body(&self, domain: &str) -> Option<String> {
        let got = self
            .client
            .get_policy(&format!("mta-sts.{domain}"))
            .await
            .ok()?;
        (got.status == StatusCode::OK).then(|| String::from_utf8_lossy(&got.body).into_owned())
    }

    /// `GET /api/v1/tenants/<domain>`: status and JSON.
    async fn api(&self, domain: &str) -> (StatusCode, serde_json::Value) {
        let resp = admin_get(self.admin, &format!("/api/v1/tenants/{domain}")).await;
        let json = serde_json::from_str(&resp.body).unwrap_or_default();
        (resp.status, json)
    }

    /// Waits until the API shows `domain` with `field` equal to `value`.
    async fn shows(&self, domain: &str, field: &str, value: &str) -> serde_json::Value {
        let last = std::sync::Mutex::new(serde_json::Value::Null);
        let ok = eventually(LIMIT, || async {
            let got = self.api(domain).await.1;
            let hit = got[field] == value;
            *last.lock().unwrap() = got;
            hit
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(
            ok,
            "{domain}: {field} never {value}: {last}\nlog:\n{}",
            self.log()
        );
        last
    }

    /// Waits until the body served for `domain` contains `text`.
    async fn serves(&self, domain: &str, text: &str) -> String {
        let last = std::sync::Mutex::new(None);
        let ok = eventually(LIMIT, || async {
            let got = self.body(domain).await;
            let hit = got.as_deref().is_some_and(|b| b.contains(text));
            *last.lock().unwrap() = got;
            hit
        })
        .await;
        let last = last.into_inner().unwrap();
        assert!(
            ok,
            "{domain} never served {text:?} (last {last:?}); log:\n{}",
            self.log()
        );
        last.unwrap()
    }

    /// Waits until nothing is served for `domain`.
    async fn gone(&self, domain: &str) {
        let ok = eventually(LIMIT, || async { self.body(domain).await.is_none() }).await;
        assert!(ok, "{domain} still served; log:\n{}", self.log());
    }
}

fn enforce(domain: &str, max_age: u64) -> String {
    format!("domain: {domain}\nmode: enforce\nmx: [mx.{domain}]\nmax_age: {max_age}\n")
}

#[tokio::test]
async fn retire_true_serves_none_with_a_new_id_across_a_restart_then_reports_the_records() {
    crate::common::init_crypto();
    let setup = Setup::new();
    // A long window first, so a restart falls inside it.
    let file = setup.tenant("a.yaml", &enforce("a.example", 3600));
    let daemon = setup.start();
    daemon.serves("a.example", "mode: enforce").await;
    let before = daemon.shows("a.example", "state", "serving").await;
    std::fs::write(
        &file,
        format!("{}retire: true\n", enforce("a.example", 3600)),
    )
    .unwrap();
    daemon.serves("a.example", "mode: none").await;
    let retiring = daemon.shows("a.example", "state", "retiring").await;
    assert_ne!(retiring["id"], before["id"], "a new id at once");
    assert_eq!(retiring["max_age"], 2);
    let (since, until) = (
        retiring["retirement"]["since"].as_i64().unwrap(),
        retiring["retirement"]["until"].as_i64().unwrap(),
    );
    assert_eq!(
        until - since,
        3600,
        "the longest max_age served: {retiring}"
    );
    let metrics = admin_get(daemon.admin, "/metrics").await.body;
    assert!(metrics.contains("mta_stsd_tenants_retiring 1"), "{metrics}");
    drop(daemon);

    // After a restart inside the window: still retiring, same window, same id.
    let daemon = setup.start();
    daemon.serves("a.example", "mode: none").await;
    let again = daemon.shows("a.example", "state", "retiring").await;
    assert_eq!(again["id"], retiring["id"]);
    assert_eq!(again["retirement"], retiring["retirement"]);
    drop(daemon);

    // A short window: the tenant goes once it has passed, and the records are reported.
    let setup = Setup::new();
    let file = setup.tenant("b.yaml", &enforce("b.example", 3));
    let daemon = setup.start();
    daemon.serves("b.example", "mode: enforce").await;
    std::fs::write(&file, format!("{}retire: true\n", enforce("b.example", 3))).unwrap();
    daemon.serves("b.example", "mode: none").await;
    daemon.gone("b.example").await;
    let retired = daemon.shows("b.example", "state", "retired").await;
    let remove = retired["remove"].to_string();
    assert!(remove.contains("_mta-sts.b.example TXT"), "{retired}");
    let logged = eventually(LIMIT, || async {
        !daemon
            .serve
            .log_lines(|v| {
                v["message"] == "retired: no longer served; remove these records"
                    && v["domain"] == "b.example"
            })
            .is_empty()
    })
    .await;
    assert!(logged, "{}", daemon.log());
}

#[tokio::test]
async fn a_deleted_enforcing_tenant_is_retired_and_a_none_tenant_goes_at_once() {
    crate::common::init_crypto();
    let setup = Setup::new();
    let live = setup.tenant("live.yaml", &enforce("live.example", 3600));
    let none = setup.tenant(
        "none.yaml",
        "domain: none.example\nmode: none\nmax_age: 86400\n",
    );
    let daemon = setup.start();
    let first = daemon.serves("live.example", "mode: enforce").await;
    daemon.serves("none.example", "mode: none").await;
    let id = daemon.shows("live.example", "state", "serving").await["id"].clone();

    std::fs::remove_file(&live).unwrap();
    std::fs::remove_file(&none).unwrap();
    daemon.serves("live.example", "mode: none").await;
    let retiring = daemon.shows("live.example", "state", "retiring").await;
    assert_eq!(retiring["retirement"]["file_removed"], true);
    assert_ne!(retiring["id"], id);
    // `dns`, from the running daemon and from the configuration and state directory, says so.
    let admin = format!("http://{}", daemon.admin);
    let (code, out, err) = run_binary(&["dns".as_ref(), "--admin".as_ref(), admin.as_ref()], b"");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("; live.example: retiring: serves mode none until"),
        "{out}"
    );
    let config = setup.cwd.path().join("config");
    let (_, out, err) = run_binary(&["dns".as_ref(), "-c".as_ref(), config.as_os_str()], b"");
    assert!(
        out.contains("; live.example: retiring: serves mode none until"),
        "{out}{err}"
    );
    let id_line = format!("id={}", retiring["id"].as_str().unwrap());
    assert!(out.contains(&id_line), "the state directory's id: {out}");
    daemon.gone("none.example").await;
    drop(daemon);

    // The state directory remembers it across a restart.
    let daemon = setup.start();
    daemon.serves("live.example", "mode: none").await;
    let after = daemon.shows("live.example", "state", "retiring").await;
    assert_eq!(after["retirement"], retiring["retirement"]);

    // Re-added: served as written again, under an id it never had.
    setup.tenant("live.yaml", &enforce("live.example", 3600));
    let body = daemon.serves("live.example", "mode: enforce").await;
    assert_eq!(body, first, "the same body");
    let back = daemon.shows("live.example", "state", "serving").await;
    assert_ne!(back["id"], id, "a new id after a retirement");
    assert_ne!(back["id"], retiring["id"]);

    // Deleted again, then the operator confirms: gone at once (the CLI calls the API).
    std::fs::remove_file(setup.cwd.path().join("config/tenants/live.yaml")).unwrap();
    daemon.shows("live.example", "state", "retiring").await;
    let admin = format!("http://{}", daemon.admin);
    let (code, out, err) = run_binary(
        &[
            "forget".as_ref(),
            "--admin".as_ref(),
            admin.as_ref(),
            "live.example".as_ref(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("live.example"), "{out}");
    daemon.gone("live.example").await;
    let retired = daemon.shows("live.example", "state", "retired").await;
    assert!(
        retired["remove"]
            .to_string()
            .contains("_mta-sts.live.example"),
        "{retired}"
    );
    // Nothing to forget any more.
    let again = admin_request(
        daemon.admin,
        Method::POST,
        "/api/v1/tenants/live.example/forget",
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
}
