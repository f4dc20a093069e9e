//! Live tenant changes against the running daemon: real files in a temp dir, the watcher, the
//! admin API. Every wait polls (`eventually`); nothing sleeps a fixed time.

use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::common::{
    Client, Running, ServeProcess, TestConfig, admin_get, admin_request, eventually, start,
};

/// How long a change may take to show: the issue asks for about one second; the margin is for
/// a loaded CI machine.
const LIMIT: Duration = Duration::from_secs(10);

const TESTING: &str =
    "domain: example.com\nmode: testing\nmx: [mail.example.com]\nmax_age: 86400\n";
const ENFORCE: &str =
    "domain: example.com\nmode: enforce\nmx: [mail.example.com]\nmax_age: 604800\n";
const ENFORCE_BODY: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 604800\r\n";

const TESTING_BODY: &str =
    "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 86400\r\n";

/// The body served for `host`, or `None` when the fetch fails.
async fn body(running: &Running, host: &str) -> Option<String> {
    body_from(&running.client(), host).await
}

/// The body `client`'s server serves for `host`, or `None` when the fetch fails.
async fn body_from(client: &Client, host: &str) -> Option<String> {
    let got = client.get_policy(host).await.ok()?;
    (got.status == StatusCode::OK).then(|| String::from_utf8_lossy(&got.body).into_owned())
}

/// Waits until `host` serves exactly `expected`.
async fn serves(running: &Running, host: &str, expected: &str) -> bool {
    serves_from(&running.client(), host, expected).await
}

/// Waits until `client`'s server serves exactly `expected` for `host`.
async fn serves_from(client: &Client, host: &str, expected: &str) -> bool {
    eventually(LIMIT, || async {
        body_from(client, host).await.as_deref() == Some(expected)
    })
    .await
}

async fn tenant_json(running: &Running, domain: &str) -> serde_json::Value {
    let resp = admin_get(running.admin_addr, &format!("/api/v1/tenants/{domain}")).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    resp.json()
}

#[tokio::test]
async fn in_place_edit_serves_new_body_and_id() {
    let cfg = TestConfig::new();
    let path = cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let before = tenant_json(&running, "example.com").await;
    std::fs::write(&path, ENFORCE).unwrap();
    assert!(serves(&running, "mta-sts.example.com", ENFORCE_BODY).await);
    let after = tenant_json(&running, "example.com").await;
    let id = mta_stsd::policy::policy_id(ENFORCE_BODY.as_bytes());
    assert_eq!(after["id"], id);
    assert_ne!(after["id"], before["id"]);
    assert_eq!(after["body"], ENFORCE_BODY);
    assert_eq!(after["ready"], true);
    assert_eq!(
        after["txt"]["mta_sts"],
        format!("_mta-sts.example.com TXT \"v=STSv1; id={id}\"")
    );
    running.stop().await;
}

#[tokio::test]
async fn rename_save_is_picked_up() {
    let cfg = TestConfig::new();
    let path = cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    // What vim, emacs and most tools do: write a temporary file, rename it over the original.
    let tmp = path.with_file_name(".example.com.yaml.swp");
    std::fs::write(&tmp, ENFORCE).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(serves(&running, "mta-sts.example.com", ENFORCE_BODY).await);
    running.stop().await;
}

#[tokio::test]
async fn added_tenant_is_served_and_deleted_one_is_not() {
    let cfg = TestConfig::new();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let added = cfg.tenant(
        "example.net.yaml",
        "domain: example.net\nmode: none\nmax_age: 86400\n",
    );
    assert!(
        serves(
            &running,
            "mta-sts.example.net",
            "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"
        )
        .await
    );
    std::fs::remove_file(&added).unwrap();
    let client = running.client();
    assert!(
        eventually(LIMIT, || async {
            client
                .handshake("mta-sts.example.net", &[b"http/1.1"])
                .await
                .is_err()
        })
        .await,
        "a removed tenant's certificate is no longer served"
    );
    let gone = admin_get(running.admin_addr, "/api/v1/tenants/example.net").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    // The other tenant was never disturbed.
    assert!(body(&running, "mta-sts.example.com").await.is_some());
    running.stop().await;
}

/// Lays out `dir` the way the kubelet mounts a ConfigMap: real files in a timestamped hidden
/// folder, `..data` pointing at it, and visible symlinks through `..data`.
fn configmap_version(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let data = dir.join(version);
    std::fs::create_dir(&data).unwrap();
    for (name, text) in files {
        std::fs::write(data.join(name), text).unwrap();
    }
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let cfg = TestConfig::new();
    let tenants = cfg.path().join("tenants");
    configmap_version(
        &tenants,
        "..2026_01_01_00_00_00.1",
        &[("example.com.yaml", TESTING)],
    );
    symlink("..2026_01_01_00_00_00.1", tenants.join("..data")).unwrap();
    symlink("..data/example.com.yaml", tenants.join("example.com.yaml")).unwrap();
    let running = start(&cfg).await;
    assert!(body(&running, "mta-sts.example.com").await.is_some());

    // The kubelet's atomic update: new folder, `..data_tmp` link, rename over `..data`.
    configmap_version(
        &tenants,
        "..2026_01_02_00_00_00.2",
        &[("example.com.yaml", ENFORCE)],
    );
    symlink("..2026_01_02_00_00_00.2", tenants.join("..data_tmp")).unwrap();
    std::fs::rename(tenants.join("..data_tmp"), tenants.join("..data")).unwrap();
    std::fs::remove_dir_all(tenants.join("..2026_01_01_00_00_00.1")).unwrap();
    assert!(serves(&running, "mta-sts.example.com", ENFORCE_BODY).await);
    running.stop().await;
}

#[tokio::test]
async fn broken_yaml_keeps_the_last_good_policy_and_reports_the_error() {
    let cfg = TestConfig::new();
    let path = cfg.tenant("example.com.yaml", TESTING);
    cfg.simple_tenant("example.org");
    let running = start(&cfg).await;
    let old = body(&running, "mta-sts.example.com").await.unwrap();

    std::fs::write(
        &path,
        "domain: example.com\nmode: enforce\nmx: [mail.example.com\n",
    )
    .unwrap();
    // Another tenant's change in the same burst still applies.
    cfg.tenant(
        "example.org.yaml",
        "domain: example.org\nmode: none\nmax_age: 86400\n",
    );
    assert!(
        serves(
            &running,
            "mta-sts.example.org",
            "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"
        )
        .await
    );
    assert!(
        eventually(LIMIT, || async {
            tenant_json(&running, "example.com").await["stale"] == true
        })
        .await
    );
    assert_eq!(body(&running, "mta-sts.example.com").await.unwrap(), old);
    let t = tenant_json(&running, "example.com").await;
    let err = t["last_error"].as_str().expect("last_error is set");
    assert!(err.contains("example.com.yaml:"), "{err}");
    assert_eq!(t["errors"][0]["severity"], "error");
    assert!(t["errors"][0]["line"].as_u64().unwrap() >= 3, "{t}");

    let status = admin_get(running.admin_addr, "/api/v1/status").await.json();
    assert_eq!(status["stale_tenants"][0], "example.com");
    assert_eq!(status["last_result"], "error");

    let metrics = admin_get(running.admin_addr, "/metrics").await.body;
    let file = path.display().to_string();
    assert!(
        metrics.contains(&format!("mta_stsd_config_errors{{file=\"{file}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("mta_stsd_reloads_total{result=\"error\"}"));
    assert!(metrics.contains("mta_stsd_stale_tenants 1"));

    // Fixed: the new policy applies and the error is gone.
    std::fs::write(&path, ENFORCE).unwrap();
    assert!(serves(&running, "mta-sts.example.com", ENFORCE_BODY).await);
    assert!(
        eventually(LIMIT, || async {
            let t = tenant_json(&running, "example.com").await;
            t["stale"] == false && t["last_error"].is_null()
        })
        .await
    );
    running.stop().await;
}

#[tokio::test]
async fn duplicate_domain_keeps_the_first_file() {
    let cfg = TestConfig::new();
    cfg.tenant("a.yaml", TESTING);
    let running = start(&cfg).await;
    let second = cfg.tenant("b.yaml", ENFORCE);
    let outcome = admin_request(running.admin_addr, Method::POST, "/reload", &[]).await;
    assert_eq!(
        outcome.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        outcome.body
    );
    let outcome = outcome.json();
    let errors = outcome["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| {
            let e = e.as_str().unwrap();
            e.starts_with(&second.display().to_string()) && e.contains("a.yaml")
        }),
        "{outcome}"
    );
    assert_eq!(
        body(&running, "mta-sts.example.com").await.unwrap(),
        "version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 86400\r\n"
    );
    running.stop().await;
}

#[tokio::test]
async fn server_file_changes_that_need_a_restart_are_reported() {
    let cfg = TestConfig::new();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    std::fs::write(
        cfg.path().join("mta-stsd.yaml"),
        format!(
            "{}public_hostname: sts.operator.example\n",
            crate::common::BASE_SERVER_YAML.replace("127.0.0.1:0", "127.0.0.1:1")
        ),
    )
    .unwrap();
    assert!(
        eventually(LIMIT, || async {
            let s = admin_get(running.admin_addr, "/api/v1/status").await.json();
            s["restart_required"] == serde_json::json!(["listen"])
        })
        .await
    );
    // public_hostname applies live: the CNAME record appears.
    let t = tenant_json(&running, "example.com").await;
    assert!(
        t["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "CNAME" && r["value"] == "sts.operator.example."),
        "{t}"
    );
    let metrics = admin_get(running.admin_addr, "/metrics").await.body;
    assert!(metrics.contains("mta_stsd_restart_required 1"), "{metrics}");
    // Still serving on the old listener.
    assert!(body(&running, "mta-sts.example.com").await.is_some());
    running.stop().await;
}

/// The README's quick start, `serve --config config` from the folder holding `config/`: the
/// watcher reports absolute paths, and every kind of change must still apply.
#[tokio::test]
async fn a_relative_config_dir_applies_every_change_on_the_real_binary() {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let cwd = tempfile::tempdir().unwrap();
    let tenants = cwd.path().join("config/tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    std::fs::write(
        cwd.path().join("config/mta-stsd.yaml"),
        crate::common::BASE_SERVER_YAML,
    )
    .unwrap();
    let victim = tenants.join("example.com.yaml");
    std::fs::write(&victim, TESTING).unwrap();
    let serve = ServeProcess::spawn(Some(cwd.path()), Path::new("config")).serving();
    let ca = std::fs::read(cwd.path().join("config/state/ca/ca.crt")).unwrap();
    let client = Client::new(serve.addr, CertificateDer::from_pem_slice(&ca).unwrap());
    let log = || serve.log.lock().unwrap().join("\n");
    assert_eq!(
        body_from(&client, "mta-sts.example.com").await.as_deref(),
        Some(TESTING_BODY)
    );

    let added = tenants.join("example.net.yaml");
    std::fs::write(&added, "domain: example.net\nmode: none\nmax_age: 86400\n").unwrap();
    let none = "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n";
    assert!(
        serves_from(&client, "mta-sts.example.net", none).await,
        "added file not applied; log:\n{}",
        log()
    );

    std::fs::write(&victim, ENFORCE).unwrap();
    assert!(
        serves_from(&client, "mta-sts.example.com", ENFORCE_BODY).await,
        "in-place edit not applied; log:\n{}",
        log()
    );

    let swap = tenants.join(".example.com.yaml.swp");
    std::fs::write(&swap, TESTING).unwrap();
    std::fs::rename(&swap, &victim).unwrap();
    assert!(
        serves_from(&client, "mta-sts.example.com", TESTING_BODY).await,
        "rename-save not applied; log:\n{}",
        log()
    );

    std::fs::remove_file(&added).unwrap();
    assert!(
        eventually(LIMIT, || async {
            client
                .handshake("mta-sts.example.net", &[b"http/1.1"])
                .await
                .is_err()
        })
        .await,
        "deleted file still served; log:\n{}",
        log()
    );
}

/// Replaces `path` (a tenant file) by something that is not a regular file.
fn replace_with(path: &Path, kind: &str) {
    use std::os::unix::fs::symlink;
    std::fs::remove_file(path).unwrap();
    let dir = path.parent().unwrap();
    let mkfifo = |at: &Path| {
        let ok = std::process::Command::new("mkfifo")
            .arg(at)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    match kind {
        "fifo" => mkfifo(path),
        "symlink to a fifo" => {
            let fifo = dir.join(".pipe");
            let _ = std::fs::remove_file(&fifo);
            mkfifo(&fifo);
            symlink(".pipe", path).unwrap();
        }
        "symlink to /dev/zero" => symlink("/dev/zero", path).unwrap(),
        "directory" => std::fs::create_dir(path).unwrap(),
        "dangling symlink" => symlink("nowhere.yaml", path).unwrap(),
        other => unreachable!("{other}"),
    }
}

#[tokio::test]
async fn a_tenant_file_replaced_by_a_non_file_keeps_its_last_good_policy() {
    let cfg = TestConfig::new();
    let path = cfg.tenant("victim.yaml", TESTING);
    let running = start(&cfg).await;
    for kind in [
        "fifo",
        "symlink to a fifo",
        "symlink to /dev/zero",
        "directory",
        "dangling symlink",
    ] {
        replace_with(&path, kind);
        let t = eventually(LIMIT, || async {
            let resp = admin_get(running.admin_addr, "/api/v1/tenants/example.com").await;
            resp.status == StatusCode::OK && resp.json()["stale"] == true
        })
        .await;
        assert!(t, "{kind}: the tenant is not kept as stale");
        let t = tenant_json(&running, "example.com").await;
        let err = t["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("victim.yaml:0:0: error: "), "{kind}: {err}");
        assert_eq!(
            body(&running, "mta-sts.example.com").await.as_deref(),
            Some(TESTING_BODY),
            "{kind}: the last good policy and its certificate are served"
        );
        // A valid file again: applies (a FIFO opened for reading would have hung the reloader).
        if kind == "directory" {
            std::fs::remove_dir(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        std::fs::write(&path, ENFORCE).unwrap();
        assert!(
            serves(&running, "mta-sts.example.com", ENFORCE_BODY).await,
            "{kind}"
        );
        std::fs::write(&path, TESTING).unwrap();
        assert!(
            serves(&running, "mta-sts.example.com", TESTING_BODY).await,
            "{kind}"
        );
    }
    running.stop().await;
}

#[tokio::test]
async fn links_to_keys_and_outside_files_are_refused_and_never_quoted() {
    use std::os::unix::fs::symlink;
    let cfg = TestConfig::new();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let tenants = cfg.path().join("tenants");
    let outside = tempfile::tempdir().unwrap();
    let shadow = outside.path().join("shadow");
    std::fs::write(
        &shadow,
        "root:$y$j9T$SALTSALTSALT$HASHHASHHASHHASH:19000:0:99999:7:::\n",
    )
    .unwrap();
    symlink("../state/ca/ca.key", tenants.join("leak.yaml")).unwrap();
    symlink(&shadow, tenants.join("shadow.yaml")).unwrap();
    let outcome = admin_request(running.admin_addr, Method::POST, "/reload", &[]).await;
    let status = admin_get(running.admin_addr, "/api/v1/status").await;
    for text in [&outcome.body, &status.body] {
        for secret in ["PRIVATE KEY", "BEGIN", "SALTSALT", "HASHHASH", "root"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
    }
    let errors: Vec<String> = status.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("refused")), "{errors:?}");
    // The regular tenant is unaffected.
    assert_eq!(
        body(&running, "mta-sts.example.com").await.as_deref(),
        Some(TESTING_BODY)
    );
    running.stop().await;
}

/// A bulk file that takes a while to parse and check (5 000 entries, seconds in a debug build)
/// and adds one tenant: every entry but the first has an error, so the file costs a full parse
/// but only one certificate.
fn slow_bulk_file() -> String {
    let mut text = String::from("- {domain: big0.example, mode: none, max_age: 86400}\n");
    for i in 1..5_000 {
        text.push_str(&format!(
            "- {{domain: big{i}.example, mode: none, max_age: 99999999999}}\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_big_file_being_parsed_does_not_hold_up_another_files_change() {
    let cfg = TestConfig::new();
    cfg.tenant("example.com.yaml", TESTING);
    let running = start(&cfg).await;
    let big = slow_bulk_file();
    // Both in one burst of events: the watcher's reload reads both, the small one is applied
    // as soon as it is parsed.
    cfg.tenant("big.yaml", &big);
    cfg.tenant("example.com.yaml", ENFORCE);
    let registry = running.registry.clone();
    let applied = eventually(LIMIT, || async {
        let snapshot = registry.load();
        snapshot
            .by_domain("example.com")
            .is_some_and(|t| t.policy.mode == mta_stsd::policy::Mode::Enforce)
    })
    .await;
    assert!(applied, "the small file's change is served");
    assert!(
        registry.load().by_domain("big0.example").is_none(),
        "served before the big file was parsed"
    );
    assert!(
        serves(
            &running,
            "mta-sts.big0.example",
            "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"
        )
        .await
    );
    assert!(serves(&running, "mta-sts.example.com", ENFORCE_BODY).await);
    running.stop().await;
}
