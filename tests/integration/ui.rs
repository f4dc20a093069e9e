//! The admin pages (`/ui/`) in a real browser: the real binary with tenants and stored
//! TLS-RPT reports, each page loaded in headless Chromium, its DOM checked for the values the
//! daemon holds, a screenshot taken, and the browser's net log checked for any request that
//! went anywhere but the admin listener.
//!
//! With `MTA_STSD_SCREENSHOTS=<dir>` (e.g. `docs/screenshots`, relative to the checkout),
//! the example configuration's pages are also written there, as the README shows them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::StatusCode;
use mta_stsd::tlsrpt::SqliteStore;

use crate::common::{
    Loaded, ServeProcess, TestConfig, admin_get, admin_request, dump_dom, eventually,
    insert_report, report_json, screenshot,
};

const REPORT_HOST: &str = "tlsrpt.operator.test";
/// A sender-chosen organization name trying to inject markup.
const HOSTILE_ORG: &str = "<script>document.title='owned'</script><b>Evil</b> Corp";
const TOKEN: &str = "ui-admin-token";

/// Where this test's screenshots go.
fn output_dir(test: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui").join(test)
}

fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

/// Two weeks of daily reports for `domain` from two senders, with failures on some days
/// (day `n` back has `n * 10` failed sessions at `mx` on even days), and with `hostile` one
/// report from a sender whose name carries markup. Returns the day with the most failures.
fn seed_reports(database: &Path, domain: &str, mx: &str, hostile: bool) -> time::Date {
    let store = SqliteStore::open(database).unwrap();
    for back in 1..=14u64 {
        let day = today() - time::Duration::days(back as i64);
        let failed = if back % 2 == 0 { back * 10 } else { 0 };
        let failures: Vec<(&str, &str, u64)> = match failed {
            0 => vec![],
            n => vec![("certificate-expired", mx, n)],
        };
        let id = format!("{domain}-big-{back}");
        insert_report(
            &store,
            domain,
            report_json("Big Mail Inc", &id, domain, day, 1000 + back * 7, &failures),
        );
        let id = format!("{domain}-small-{back}");
        insert_report(
            &store,
            domain,
            report_json("Small ISP", &id, domain, day, 200, &[]),
        );
    }
    if !hostile {
        return today() - time::Duration::days(14);
    }
    let day = today() - time::Duration::days(1);
    insert_report(
        &store,
        domain,
        report_json(
            HOSTILE_ORG,
            "<img src=x onerror=alert(1)>",
            domain,
            day,
            5,
            &[("validation-failure", "<i>mx</i>", 2)],
        ),
    );
    today() - time::Duration::days(14)
}

fn config(token: bool) -> TestConfig {
    let token_line = if token {
        "  token_file: admin.token\n"
    } else {
        ""
    };
    let cfg = TestConfig::with_server(&format!(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\nadmin:\n  listen: \"127.0.0.1:0\"\n  external_url: https://mta-stsd.admin.test/\n{token_line}tlsrpt:\n  report_host: {REPORT_HOST}\n  publish_endpoint: true\nvalidation:\n  enabled: false\n"
    ));
    std::fs::write(cfg.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    cfg.tenant(
        "example.com.yaml",
        "domain: example.com\nmode: testing\nmx: [mx1.example.com, mx2.example.com]\nmax_age: 86400\n",
    );
    cfg.tenant(
        "example.net.yaml",
        "domain: example.net\nmode: enforce\nmx: [mx.example.net]\nmax_age: 604800\n",
    );
    cfg.tenant(
        "example.org.yaml",
        "domain: example.org\nmode: none\nmx: [mx.example.org]\n",
    );
    std::fs::create_dir_all(cfg.path().join("state")).unwrap();
    cfg
}

/// Waits until every tenant is ready (the internal CA issues at start).
async fn all_ready(addr: SocketAddr, auth: &[(&str, &str)]) {
    let ready = eventually(Duration::from_secs(30), || async {
        let list = admin_request(addr, http::Method::GET, "/api/v1/tenants", auth).await;
        list.status == StatusCode::OK
            && list.json()["tenants"]
                .as_array()
                .is_some_and(|t| t.iter().all(|t| t["ready"] == true))
    })
    .await;
    assert!(ready, "tenants never became ready");
}

/// Every URL the browser requested is on the admin listener.
fn stays_home(loaded: &Loaded, addr: SocketAddr) {
    let home = format!("http://{addr}/");
    assert!(!loaded.requested.is_empty(), "the net log recorded nothing");
    for url in &loaded.requested {
        assert!(
            url.starts_with(&home),
            "the browser asked for {url}, which is not on the admin listener {home}"
        );
    }
}

/// `/ui/`: DOM, screenshot, net log.
fn check_list(base: &str, addr: SocketAddr, out: &Path) {
    let page = dump_dom(&format!("{base}/ui/"));
    stays_home(&page, addr);
    let dom = &page.dom;
    for needle in [
        ">example.com</a>",
        ">example.net</a>",
        ">example.org</a>",
        "enforce",
        ">valid</span>",
        "3 shown of 3 matching",
    ] {
        assert!(dom.contains(needle), "/ui/ lacks {needle}:\n{dom}");
    }
    // The 14 days of example.com's verdict window: sessions and a failure rate.
    assert!(dom.contains("not ready"), "{dom}");
    screenshot(&format!("{base}/ui/"), &out.join("tenants.png"), 1280, 900);
    // Filters run on the server.
    let enforcing = dump_dom(&format!("{base}/ui/?mode=enforce"));
    assert!(enforcing.dom.contains(">example.net</a>"));
    assert!(
        !enforcing.dom.contains(">example.com</a>"),
        "{}",
        enforcing.dom
    );
    let failing = dump_dom(&format!("{base}/ui/?show=failing&sort=failures"));
    assert!(failing.dom.contains(">example.com</a>"), "{}", failing.dom);
    assert!(!failing.dom.contains(">example.org</a>"), "{}", failing.dom);
    let paged = dump_dom(&format!("{base}/ui/?limit=1"));
    assert!(paged.dom.contains("cursor=example.com"), "{}", paged.dom);
}

/// `/ui/tenants/example.com`: policy, records, certificate, chart, reports, escaping.
fn check_tenant(base: &str, addr: SocketAddr, out: &Path, worst_day: time::Date) -> String {
    let url = format!("{base}/ui/tenants/example.com");
    let page = dump_dom(&url);
    stays_home(&page, addr);
    let dom = &page.dom;
    for needle in [
        "version: STSv1",
        "mx: mx2.example.com",
        "_mta-sts.example.com",
        "_smtp._tls.example.com",
        "class=\"copy\"",
        "mta-stsd internal CA",
        "Big Mail Inc",
        "Small ISP",
        "certificate-expired",
        "mx1.example.com",
        "<svg class=\"chart\"",
        "not ready",
    ] {
        assert!(
            dom.contains(needle),
            "the tenant page lacks {needle}:\n{dom}"
        );
    }
    // The chart's tallest failed bar is on the day with 140 failed sessions.
    let bar = format!("data-day=\"{worst_day}\"");
    assert!(dom.contains(&bar), "no bar for {worst_day}");
    assert!(dom.contains(&format!("{worst_day}: 140 failed")), "{dom}");
    // The sender's markup is text: no element it named exists, the title is untouched.
    assert!(!dom.contains("<b>Evil</b>"), "{dom}");
    assert!(!dom.contains("<i>mx</i>"), "{dom}");
    assert!(dom.contains("&lt;b&gt;Evil&lt;/b&gt; Corp"), "{dom}");
    assert!(
        dom.contains("<title>example.com · mta-stsd</title>"),
        "{dom}"
    );
    screenshot(&url, &out.join("tenant.png"), 1280, 2200);
    dom.split("href=\"/ui/reports/")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(|s| s.replace("&amp;", "&"))
        .expect("a report link")
}

/// One report: highlighted JSON in the page, pretty JSON as the download.
async fn check_report(base: &str, addr: SocketAddr, auth: &[(&str, &str)], link: &str) {
    let page = dump_dom(&format!("{base}/ui/reports/{link}"));
    stays_home(&page, addr);
    assert!(page.dom.contains("<pre class=\"json\""), "{}", page.dom);
    assert!(
        page.dom
            .contains("<span class=\"k\">\"organization-name\"</span>")
    );
    let (digest, query) = link.split_once('?').unwrap();
    let download = admin_request(
        addr,
        http::Method::GET,
        &format!("/ui/reports/{digest}.json?{query}"),
        auth,
    )
    .await;
    assert_eq!(download.status, StatusCode::OK);
    let disposition = download.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"tlsrpt-"),
        "{disposition}"
    );
    assert!(
        download.body.contains("\n  \"organization-name\": "),
        "{}",
        download.body
    );
    let _: serde_json::Value = serde_json::from_str(&download.body).unwrap();
}

fn check_status(base: &str, addr: SocketAddr, out: &Path) {
    let url = format!("{base}/ui/status");
    let page = dump_dom(&url);
    stays_home(&page, addr);
    for needle in [
        "Service status",
        "no errors",
        "internal CA",
        REPORT_HOST,
        ">up</span>",
    ] {
        assert!(
            page.dom.contains(needle),
            "/ui/status lacks {needle}:\n{}",
            page.dom
        );
    }
    screenshot(&url, &out.join("status.png"), 1280, 900);
}

#[tokio::test]
async fn every_page_shows_the_daemons_state_in_a_real_browser() {
    let cfg = config(false);
    let database = cfg.path().join("state/tlsrpt.sqlite3");
    let worst = seed_reports(&database, "example.com", "mx1.example.com", true);
    let daemon = ServeProcess::start(cfg.path());
    let addr = daemon.admin_addr();
    all_ready(addr, &[]).await;
    let base = format!("http://{addr}");
    let out = output_dir("every_page");
    check_list(&base, addr, &out);
    let link = check_tenant(&base, addr, &out, worst);
    check_report(&base, addr, &[], &link).await;
    check_status(&base, addr, &out);
    // Every answer carries the strict policy the no-external-request rule rests on.
    let page = admin_get(addr, "/ui/").await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    // The API links each tenant to its page under the configured external URL.
    let tenant = admin_get(addr, "/api/v1/tenants/example.com").await.json();
    assert_eq!(
        tenant["html_url"],
        "https://mta-stsd.admin.test/ui/tenants/example.com"
    );
    for file in ["tenants.png", "tenant.png", "status.png"] {
        let png = std::fs::read(out.join(file)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{file} is not a PNG");
    }
    // Pages only read.
    let post = admin_request(addr, http::Method::POST, "/ui/", &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        admin_get(addr, "/ui/tenants/nope.example").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin_get(addr, "/ui/?sort=sideways").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn with_a_token_no_page_is_shown_without_it() {
    let cfg = config(true);
    let daemon = ServeProcess::start(cfg.path());
    let addr = daemon.admin_addr();
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    all_ready(addr, &auth).await;
    for path in [
        "/ui",
        "/ui/",
        "/ui/status",
        "/ui/tenants/example.com",
        "/ui/reports/ab?id=x",
        "/ui/assets/style.css",
        "/ui/nope",
    ] {
        let bare = admin_get(addr, path).await;
        assert_eq!(bare.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!bare.body.contains("example.com"), "{path}: {}", bare.body);
        let offered: Vec<_> = bare.headers.get_all("www-authenticate").iter().collect();
        assert!(
            offered
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("Basic ")),
            "{path}: {offered:?}"
        );
        let wrong = admin_request(
            addr,
            http::Method::GET,
            path,
            &[("authorization", "Bearer nope")],
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let page = admin_request(addr, http::Method::GET, "/ui/", &auth).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(">example.com</a>"));
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{TOKEN}"))
    );
    let page = admin_request(
        addr,
        http::Method::GET,
        "/ui/status",
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    // The API itself keeps to bearer tokens.
    let api = admin_request(
        addr,
        http::Method::GET,
        "/api/v1/status",
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    // A browser without the token sees no tenant; with it (as the Basic password) it does.
    let bare = dump_dom(&format!("http://{addr}/ui/"));
    assert!(!bare.dom.contains("example.com"), "{}", bare.dom);
    let with = dump_dom(&format!("http://admin:{TOKEN}@{addr}/ui/"));
    assert!(with.dom.contains(">example.com</a>"), "{}", with.dom);
}

/// Copies the checkout's example configuration (`config/`) into `dir/config`, on ephemeral
/// ports, without its state.
fn example_config(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dst = dir.join("config");
    std::fs::create_dir_all(dst.join("tenants")).unwrap();
    let server = std::fs::read_to_string(src.join("mta-stsd.yaml")).unwrap();
    assert!(
        server.contains("listen: \"127.0.0.1:9180\""),
        "the README's admin address moved"
    );
    let server = server
        .replace("listen: \"127.0.0.1:8443\"", "listen: \"127.0.0.1:0\"")
        .replace("listen: \"127.0.0.1:9180\"", "listen: \"127.0.0.1:0\"");
    std::fs::write(dst.join("mta-stsd.yaml"), server).unwrap();
    for entry in std::fs::read_dir(src.join("tenants")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join("tenants").join(entry.file_name())).unwrap();
    }
    std::fs::create_dir_all(dst.join("state")).unwrap();
    dst
}

/// The README's quick start: the example configuration, started as `--config config`,
/// shows its tenants at `/ui/`. With `MTA_STSD_SCREENSHOTS`, its three pages (with
/// generated reports for the testing tenant) are written there for the README.
#[tokio::test]
async fn the_example_configuration_shows_its_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let database = config.join("state/tlsrpt.sqlite3");
    seed_reports(&database, "example.com", "mail.example.com", false);
    let daemon = ServeProcess::spawn(Some(dir.path()), Path::new("config")).serving();
    let addr = daemon.admin_addr();
    all_ready(addr, &[]).await;
    let base = format!("http://{addr}");
    let list = dump_dom(&format!("{base}/ui/"));
    stays_home(&list, addr);
    let tenants = ["example.com", "example.net", "example.org"];
    for t in tenants {
        assert!(
            list.dom.contains(&format!(">{t}</a>")),
            "{t}:\n{}",
            list.dom
        );
    }
    let out = match std::env::var_os("MTA_STSD_SCREENSHOTS") {
        Some(d) => Path::new(env!("CARGO_MANIFEST_DIR")).join(d),
        None => output_dir("example"),
    };
    screenshot(&format!("{base}/ui/"), &out.join("tenants.png"), 1280, 720);
    screenshot(
        &format!("{base}/ui/tenants/example.com"),
        &out.join("tenant.png"),
        1280,
        2200,
    );
    screenshot(
        &format!("{base}/ui/status"),
        &out.join("status.png"),
        1280,
        1000,
    );
    for file in ["tenants.png", "tenant.png", "status.png"] {
        let size = std::fs::metadata(out.join(file)).unwrap().len();
        assert!(size < 300 * 1024, "{file} is {size} bytes");
    }
}
