//! TLS-RPT on the command line, through the real binary: the `_smtp._tls` record from `dns`,
//! `ingest-mail` (stdin and Maildir) with its sysexits codes, and `reports`.

use std::ffi::OsStr;
use std::path::Path;

use mta_stsd::tlsrpt::{ReportStore, Source, SqliteStore};

use crate::common::{
    BASE_SERVER_YAML, TestConfig, insert_report, report_json, report_mail, run_binary,
};

const MTA: &str = "mx.operator.example";

fn config(publish: bool) -> TestConfig {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}tlsrpt:\n  report_host: tlsrpt.operator.example\n  publish_endpoint: {publish}\n  mail:\n    trusted_authserv_ids: [{MTA}]\n"
    ));
    cfg.tenant(
        "example.com.yaml",
        "domain: example.com\nmode: testing\nmx: [mx.example.com]\nmax_age: 86400\ntlsrpt:\n  rua: [\"mailto:tls@example.com\"]\n",
    );
    cfg.simple_tenant("example.org");
    cfg
}

fn run(args: &[&str], config: &Path, stdin: &[u8]) -> (i32, String, String) {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push(OsStr::new("--config"));
    all.push(config.as_os_str());
    run_binary(&all, stdin)
}

fn store(cfg: &TestConfig) -> SqliteStore {
    SqliteStore::open(&cfg.path().join("state/tlsrpt.sqlite3")).unwrap()
}

#[test]
fn dns_adds_the_report_endpoint_when_published() {
    let cfg = config(true);
    let (code, out, err) = run(&["dns"], cfg.path(), b"");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("_smtp._tls.example.com. IN TXT \"v=TLSRPTv1; rua=mailto:tls@example.com,https://tlsrpt.operator.example/tlsrpt/example.com\""),
        "{out}"
    );
    // A tenant without rua of its own gets the record with the endpoint alone.
    assert!(
        out.contains("_smtp._tls.example.org. IN TXT \"v=TLSRPTv1; rua=https://tlsrpt.operator.example/tlsrpt/example.org\""),
        "{out}"
    );
    let (_, json, _) = run(&["dns", "--json"], cfg.path(), b"");
    assert!(
        json.contains("https://tlsrpt.operator.example/tlsrpt/example.org"),
        "{json}"
    );

    let cfg = config(false);
    let (code, out, _) = run(&["dns"], cfg.path(), b"");
    assert_eq!(code, 0);
    assert!(
        out.contains("_smtp._tls.example.com. IN TXT \"v=TLSRPTv1; rua=mailto:tls@example.com\""),
        "{out}"
    );
    assert!(!out.contains("_smtp._tls.example.org."), "{out}");
    assert!(!out.contains("tlsrpt.operator.example"), "{out}");
}

fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

#[test]
fn ingest_mail_on_stdin_requires_a_trusted_dkim_pass() {
    let cfg = config(false);
    let json = report_json(
        "Mail Sender",
        "mail-1",
        "example.org",
        today().previous_day().unwrap(),
        50,
        &[],
    );

    let unsigned = report_mail("sender.example", "example.org", &json, None);
    let (code, _, err) = run(&["ingest-mail"], cfg.path(), &unsigned);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("not authenticated"), "{err}");
    // A verdict from an authserv-id the operator did not list is not believed.
    let forged = report_mail("sender.example", "example.org", &json, Some("evil.example"));
    let (code, _, _) = run(&["ingest-mail"], cfg.path(), &forged);
    assert_eq!(code, 65);
    assert!(store(&cfg).get("mail-1").unwrap().is_empty());

    let signed = report_mail("sender.example", "example.org", &json, Some(MTA));
    let (code, out, err) = run(&["ingest-mail"], cfg.path(), &signed);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stored: report \"mail-1\""), "{out}");
    let (code, out, _) = run(&["ingest-mail"], cfg.path(), &signed);
    assert_eq!(code, 0, "a duplicate is a success");
    assert!(out.starts_with("duplicate"), "{out}");
    let got = store(&cfg).get("mail-1").unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].source, Source::Mail);

    // Not a report at all: bounce.
    let (code, _, _) = run(
        &["ingest-mail"],
        cfg.path(),
        b"Subject: hello\r\n\r\nhi\r\n",
    );
    assert_eq!(code, 65);
}

#[test]
fn ingest_mail_defers_when_the_configuration_is_unusable() {
    let cfg = config(false);
    std::fs::write(cfg.path().join("mta-stsd.yaml"), "listen: [\n").unwrap();
    let json = report_json("Mail Sender", "mail-2", "example.org", today(), 1, &[]);
    let (code, _, err) = run(
        &["ingest-mail"],
        cfg.path(),
        &report_mail("sender.example", "example.org", &json, Some(MTA)),
    );
    assert_eq!(code, 75, "{err}");
}

#[test]
fn ingest_mail_sweeps_a_maildir() {
    let cfg = config(false);
    let maildir = cfg.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let day = today().previous_day().unwrap();
    for i in 0..3 {
        let json = report_json(
            "Bulk Sender",
            &format!("bulk-{i}"),
            "example.org",
            day,
            10,
            &[],
        );
        std::fs::write(
            maildir.join("new").join(format!("100{i}.M1P1.host")),
            report_mail("bulk.example", "example.org", &json, Some(MTA)),
        )
        .unwrap();
    }
    let unsigned = report_json("Bulk Sender", "bulk-x", "example.org", day, 10, &[]);
    std::fs::write(
        maildir.join("new/1009.M1P1.host"),
        report_mail("bulk.example", "example.org", &unsigned, None),
    )
    .unwrap();

    let (code, out, err) = run(
        &["ingest-mail", "--maildir", maildir.to_str().unwrap()],
        cfg.path(),
        b"",
    );
    assert_eq!(code, 65, "one message failed: {out}\n{err}");
    assert!(
        out.contains("3 handled, 1 refused (moved to refused/), 0 left in place"),
        "{out}"
    );
    let mut cur: Vec<String> = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cur.sort();
    assert_eq!(
        cur,
        [
            "1000.M1P1.host:2,S",
            "1001.M1P1.host:2,S",
            "1002.M1P1.host:2,S"
        ]
    );
    // The unauthenticated one is moved out of new/, never deleted.
    assert!(!maildir.join("new/1009.M1P1.host").exists());
    assert!(maildir.join("refused/1009.M1P1.host").exists());
    assert!(
        err.contains("refused/1009.M1P1.host: refused, not stored: not authenticated"),
        "{err}"
    );
    for i in 0..3 {
        assert_eq!(store(&cfg).get(&format!("bulk-{i}")).unwrap().len(), 1);
    }
    assert!(store(&cfg).get("bulk-x").unwrap().is_empty());

    // A second sweep parses nothing again.
    let (code, out, _) = run(
        &["ingest-mail", "--maildir", maildir.to_str().unwrap()],
        cfg.path(),
        b"",
    );
    assert_eq!(code, 0);
    assert!(out.contains("0 handled, 0 refused"), "{out}");
}

#[test]
fn reports_table_and_json_give_the_verdict() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("clean.example");
    cfg.simple_tenant("failing.example");
    cfg.tenant(
        "quiet.example.yaml",
        "domain: quiet.example\nmode: enforce\nmx: [mx.quiet.example]\nmax_age: 86400\n",
    );
    std::fs::create_dir_all(cfg.path().join("state")).unwrap();
    let store = store(&cfg);
    // Eight full days of reports ending yesterday: the 7-day window is covered.
    for back in 1..=8 {
        let day = today() - time::Duration::days(back);
        insert_report(
            &store,
            "clean.example",
            report_json(
                "Good Org",
                &format!("clean-{back}"),
                "clean.example",
                day,
                500,
                &[],
            ),
        );
        insert_report(
            &store,
            "failing.example",
            report_json(
                "Good Org",
                &format!("failing-{back}"),
                "failing.example",
                day,
                400,
                &[("certificate-host-mismatch", "mx.failing.example", 5)],
            ),
        );
    }
    drop(store);

    let (code, table, err) = run(&["reports"], cfg.path(), b"");
    assert_eq!(code, 0, "{err}");
    let row = |tenant: &str| {
        table
            .lines()
            .find(|l| l.starts_with(tenant))
            .unwrap_or_else(|| panic!("no row for {tenant} in\n{table}"))
            .to_owned()
    };
    assert!(
        row("clean.example").ends_with("ready to enforce"),
        "{table}"
    );
    assert!(row("failing.example").ends_with("not ready"), "{table}");
    assert!(
        row("failing.example").contains("1.23%"),
        "35 of 2835 sessions: {table}"
    );
    assert!(
        table.contains("certificate-host-mismatch") && table.contains("mx.failing.example"),
        "{table}"
    );
    assert!(table.contains("organizations: Good Org"), "{table}");

    let (code, json, err) = run(&["reports", "--json", "--since", "30d"], cfg.path(), b"");
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let by = |t: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|s| s["tenant"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(by("clean.example")["verdict"]["status"], "ready-to-enforce");
    assert_eq!(by("clean.example")["reports"], 8);
    assert_eq!(by("failing.example")["verdict"]["status"], "not-ready");
    assert_eq!(by("failing.example")["failed_sessions"], 40);
    assert_eq!(
        by("failing.example")["failures_by_result_type"]["certificate-host-mismatch"],
        40
    );
    assert_eq!(by("quiet.example")["mode"], "enforce");
    assert_eq!(by("quiet.example")["reports"], 0);
    // Enforcing with nothing reported is not known to be fine.
    assert_eq!(by("quiet.example")["verdict"]["status"], "no-reports");
    assert!(row("quiet.example").ends_with("no reports"), "{table}");

    let (code, one, _) = run(
        &["reports", "--json", "--domain", "Clean.Example"],
        cfg.path(),
        b"",
    );
    assert_eq!(code, 0);
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (code, _, err) = run(&["reports", "--domain", "nobody.example"], cfg.path(), b"");
    assert_eq!(code, 1);
    assert!(err.contains("not a tenant"), "{err}");
    let (code, _, err) = run(&["reports", "--since", "yesterday"], cfg.path(), b"");
    assert_eq!(code, 1);
    assert!(err.contains("--since"), "{err}");

    let (code, shown, err) = run(&["reports", "show", "failing-3"], cfg.path(), b"");
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["report-id"], "failing-3");
    let (code, _, err) = run(&["reports", "show", "no-such-id"], cfg.path(), b"");
    assert_eq!(code, 1);
    assert!(err.contains("no stored report"), "{err}");
}

fn enforcing(cfg: &TestConfig, domain: &str) {
    cfg.tenant(
        &format!("{domain}.yaml"),
        &format!("domain: {domain}\nmode: enforce\nmx: [mx.{domain}]\nmax_age: 604800\n"),
    );
}

/// Exit 3 when a shown tenant needs attention (an enforcing tenant with failures), and
/// `--verdict` to pick tenants by verdict among many.
#[test]
fn reports_exit_status_and_verdict_filter() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("trial.example");
    enforcing(&cfg, "fine.example");
    enforcing(&cfg, "quiet.example");
    enforcing(&cfg, "warn.example");
    cfg.tenant("off.example.yaml", "domain: off.example\nmode: none\n");
    std::fs::create_dir_all(cfg.path().join("state")).unwrap();
    let store = store(&cfg);
    let day = today().previous_day().unwrap();
    insert_report(
        &store,
        "fine.example",
        report_json("Good Org", "fine-1", "fine.example", day, 100, &[]),
    );
    insert_report(
        &store,
        "warn.example",
        report_json(
            "Good Org",
            "warn-1",
            "warn.example",
            day,
            100,
            &[("certificate-expired", "mx.warn.example", 3)],
        ),
    );
    drop(store);

    let (code, table, err) = run(&["reports"], cfg.path(), b"");
    assert_eq!(code, 3, "a warning needs attention: {table}{err}");
    let verdict = |tenant: &str| {
        let line = table
            .lines()
            .find(|l| l.starts_with(tenant))
            .unwrap_or_else(|| panic!("no row for {tenant} in\n{table}"));
        line.rsplit("  ").next().unwrap().to_owned()
    };
    assert_eq!(verdict("warn.example"), "WARNING: failures", "{table}");
    assert_eq!(verdict("fine.example"), "ok", "{table}");
    assert_eq!(verdict("quiet.example"), "no reports", "{table}");
    assert_eq!(verdict("trial.example"), "not ready", "{table}");
    assert_eq!(verdict("off.example"), "-", "{table}");

    let tenants = |args: &[&str]| {
        let mut all = vec!["reports", "--json"];
        all.extend_from_slice(args);
        let (code, json, err) = run(&all, cfg.path(), b"");
        let list: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{args:?}: {e}: {err}"));
        let names: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["tenant"].as_str().unwrap().to_owned())
            .collect();
        (code, names)
    };
    assert_eq!(
        tenants(&["--verdict", "warning"]),
        (3, vec!["warn.example".to_owned()])
    );
    // Only the shown tenants count for the exit status.
    assert_eq!(
        tenants(&["--verdict", "ok,no-reports"]),
        (
            0,
            vec!["fine.example".to_owned(), "quiet.example".to_owned()]
        )
    );
    assert_eq!(
        tenants(&["--verdict", "not-ready", "--verdict", "not-applicable"]),
        (
            0,
            vec!["off.example".to_owned(), "trial.example".to_owned()]
        )
    );
    assert_eq!(tenants(&["--verdict", "ready"]), (0, Vec::new()));
    assert_eq!(
        tenants(&["--verdict", "healthy", "--domain", "fine.example"]),
        (0, vec!["fine.example".to_owned()])
    );

    let (code, _, err) = run(&["reports", "--verdict", "great"], cfg.path(), b"");
    assert_ne!(code, 0);
    assert!(
        err.contains("not-ready") && err.contains("no-reports"),
        "{err}"
    );
}

/// A U-label is the same domain as its A-label: `--domain` and the `rua` of a tenant file take
/// either, and the published record carries the A-label.
#[test]
fn u_labels_are_accepted_wherever_a_domain_is_typed() {
    let cfg = TestConfig::new();
    cfg.tenant(
        "mueller.yaml",
        "domain: müller.example\nmode: testing\nmx: [mx.müller.example]\nmax_age: 86400\ntlsrpt:\n  rua: [\"mailto:TLS@Bücher.example\", \"https://bücher.example:8443/tlsrpt?x=1\"]\n",
    );
    let (code, out, err) = run(&["check"], cfg.path(), b"");
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["dns"], cfg.path(), b"");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("_smtp._tls.xn--mller-kva.example. IN TXT \"v=TLSRPTv1; rua=mailto:TLS@xn--bcher-kva.example,https://xn--bcher-kva.example:8443/tlsrpt?x=1\""),
        "{out}"
    );
    for typed in [
        "müller.example",
        "MÜLLER.example",
        "xn--mller-kva.example",
        "müller.example.",
    ] {
        let (code, json, err) = run(&["reports", "--json", "--domain", typed], cfg.path(), b"");
        assert_eq!(code, 0, "--domain {typed}: {err}");
        let list: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(list[0]["tenant"], "xn--mller-kva.example", "{typed}");
    }
    let (code, _, err) = run(&["reports", "--domain", "m_ller.example"], cfg.path(), b"");
    assert_eq!(code, 1);
    assert!(
        err.contains("--domain") && err.contains("m_ller.example"),
        "{err}"
    );

    // Non-ASCII outside the domain still has to be percent-encoded, and the message says where.
    cfg.tenant(
        "mueller.yaml",
        "domain: müller.example\nmode: testing\nmx: [mx.müller.example]\nmax_age: 86400\ntlsrpt:\n  rua: [\"mailto:jörg@müller.example\"]\n",
    );
    let (code, out, _) = run(&["check"], cfg.path(), b"");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tlsrpt.rua[0]: \"mailto:jörg@müller.example\": the local part"),
        "{out}"
    );
}

/// The admin API takes the tenant in the path as a U-label too (percent-encoded UTF-8, as
/// every HTTP client sends it).
#[tokio::test]
async fn admin_api_finds_a_tenant_by_its_u_label() {
    let cfg = TestConfig::new();
    cfg.tenant(
        "mueller.yaml",
        "domain: müller.example\nmode: testing\nmx: [mx.müller.example]\nmax_age: 86400\n",
    );
    let running = crate::common::start(&cfg).await;
    for path in [
        "/api/v1/tenants/m%C3%BCller.example",
        "/api/v1/tenants/M%C3%9CLLER.example.",
        "/api/v1/tenants/xn--mller-kva.example",
    ] {
        let detail = crate::common::admin_get(running.admin_addr, path).await;
        assert_eq!(
            detail.status,
            http::StatusCode::OK,
            "{path}: {}",
            detail.body
        );
        assert_eq!(detail.json()["domain"], "xn--mller-kva.example");
        let summary = crate::common::admin_get(running.admin_addr, &format!("{path}/tlsrpt")).await;
        assert_eq!(
            summary.status,
            http::StatusCode::OK,
            "{path}/tlsrpt: {}",
            summary.body
        );
        assert_eq!(summary.json()["tenant"], "xn--mller-kva.example");
    }
    let bad =
        crate::common::admin_get(running.admin_addr, "/api/v1/tenants/m%FFller.example").await;
    assert_eq!(bad.status, http::StatusCode::NOT_FOUND);
    running.stop().await;
}

/// `report_json` with an unknown field `x` nested `depth` arrays deep.
fn nested_report(report_id: &str, depth: usize) -> Vec<u8> {
    let json = report_json(
        "Deep Sender",
        report_id,
        "example.org",
        today().previous_day().unwrap(),
        5,
        &[],
    );
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let mut text = String::from_utf8(json).unwrap();
    text.insert_str(1, &format!("\"x\":{nested},"));
    text.into_bytes()
}

#[test]
fn a_deeply_nested_report_is_refused_and_everything_stored_can_be_shown() {
    let cfg = config(false);
    let deep = nested_report("deep-1", 100_000);
    let mail = report_mail("sender.example", "example.org", &deep, Some(MTA));
    let (code, _, err) = run(&["ingest-mail"], cfg.path(), &mail);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("nested deeper than 64 levels"), "{err}");
    assert!(store(&cfg).get("deep-1").unwrap().is_empty());

    // Just under the cap is stored, and `reports show` can print it back.
    let ok = nested_report("deep-2", 60);
    let mail = report_mail("sender.example", "example.org", &ok, Some(MTA));
    let (code, _, err) = run(&["ingest-mail"], cfg.path(), &mail);
    assert_eq!(code, 0, "{err}");
    let (code, shown, err) = run(&["reports", "show", "deep-2"], cfg.path(), b"");
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("\"deep-2\""), "{shown}");
}

/// A report mail whose `Authentication-Results` has `spaces` spaces before `= pass`.
fn spaced_out_mail(report_id: &str, spaces: usize) -> Vec<u8> {
    let json = report_json(
        "Spaced Sender",
        report_id,
        "example.org",
        today().previous_day().unwrap(),
        5,
        &[],
    );
    let mail = report_mail("evil.example", "example.org", &json, None);
    let header = format!(
        "Authentication-Results: {MTA}; dkim{}= pass header.d=evil.example\r\n",
        " ".repeat(spaces)
    );
    [header.as_bytes(), &mail].concat()
}

#[test]
fn a_megabyte_header_is_refused_fast_and_never_parsed_again() {
    let cfg = config(false);
    let mail = spaced_out_mail("spaced-1", 1 << 20);
    let started = std::time::Instant::now();
    let (code, _, err) = run(&["ingest-mail"], cfg.path(), &mail);
    let took = started.elapsed();
    println!("1 MiB Authentication-Results header refused in {took:?}");
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("the Authentication-Results header is 1048"),
        "{err}"
    );
    // Over 20 s before the fix; the bound is generous for a loaded machine.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");

    // Under the cap, many spaces around "=" still parse (and in linear time).
    let mail = spaced_out_mail("spaced-2", 16_000);
    let (code, out, err) = run(&["ingest-mail"], cfg.path(), &mail);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stored: report \"spaced-2\""), "{out}");

    // In a Maildir the refused message leaves new/ and the next sweep does not see it.
    let maildir = cfg.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let big = spaced_out_mail("spaced-3", 1 << 20);
    std::fs::write(maildir.join("new/2000.M1P1.host"), &big).unwrap();
    let sweep = || {
        run(
            &["ingest-mail", "--maildir", maildir.to_str().unwrap()],
            cfg.path(),
            b"",
        )
    };
    let (code, out, err) = sweep();
    assert_eq!(code, 65, "{out}\n{err}");
    assert!(out.contains("0 handled, 1 refused"), "{out}");
    assert_eq!(
        std::fs::read(maildir.join("refused/2000.M1P1.host")).unwrap(),
        big
    );
    let (code, out, _) = sweep();
    assert_eq!(code, 0);
    assert!(
        out.contains("0 handled, 0 refused (moved to refused/), 0 left in place"),
        "{out}"
    );
}

/// A report mail signed with a fresh Ed25519 key for `submitter` (selector `s1`, with `l=` if
/// `body_length`), and the TXT record publishing that key.
fn dkim_signed_with(submitter: &str, json: &[u8], body_length: bool) -> (Vec<u8>, String) {
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    let key = Ed25519Key::from_pkcs8_der(&Ed25519Key::generate_pkcs8().unwrap()).unwrap();
    let record = format!(
        "v=DKIM1; k=ed25519; p={}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.public_key())
    );
    let mail = report_mail(submitter, "example.org", json, None);
    let signature = DkimSigner::from_key(key)
        .domain(submitter)
        .selector("s1")
        .headers([
            "From",
            "To",
            "Subject",
            "TLS-Report-Domain",
            "TLS-Report-Submitter",
            "Content-Type",
        ])
        .body_length(body_length)
        .sign(&mail)
        .unwrap();
    let mut signed = signature.to_header().into_bytes();
    signed.extend_from_slice(&mail);
    (signed, record)
}

fn dkim_signed_mail(submitter: &str, json: &[u8]) -> (Vec<u8>, String) {
    dkim_signed_with(submitter, json, false)
}

fn dkim_config(dns: std::net::SocketAddr) -> TestConfig {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}tlsrpt:\n  mail:\n    verify_dkim: true\n    dns_servers: [\"{dns}\"]\n"
    ));
    cfg.simple_tenant("example.org");
    cfg
}

async fn ingest(cfg: &TestConfig, mail: Vec<u8>) -> (i32, String, String) {
    let path = cfg.path().to_path_buf();
    tokio::task::spawn_blocking(move || run(&["ingest-mail"], &path, &mail))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_mail_verifies_dkim_itself_when_asked() {
    use crate::dns::{Answer, Dns};
    let dns = Dns::start().await;
    let cfg = dkim_config(dns.addr);
    let report = |id: &str| {
        let day = today().previous_day().unwrap();
        report_json("Signer", id, "example.org", day, 5, &[])
    };

    // A signature whose key is in DNS: stored, though no Authentication-Results says anything.
    let (good, record) = dkim_signed_mail("sender.example", &report("dkim-good"));
    dns.set("s1._domainkey.sender.example", Answer::Txt(vec![record]));
    let (code, out, err) = ingest(&cfg, good.clone()).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stored: report \"dkim-good\""), "{out}");

    // The same signature over a changed body: refused.
    let text = String::from_utf8(good).unwrap();
    let tampered = text.replace("An aggregate TLS report.", "An aggregate TLS report!");
    let (code, _, err) = ingest(&cfg, tampered.into_bytes()).await;
    assert_eq!(code, 65, "{err}");
    assert!(
        err.contains("dkim=neutral header.d=sender.example"),
        "{err}"
    );

    // Signed with a key other than the one published: refused.
    let (other, _) = dkim_signed_mail("sender.example", &report("dkim-other-key"));
    let (code, _, err) = ingest(&cfg, other).await;
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("dkim=fail header.d=sender.example"), "{err}");

    // A valid signature by a domain that is not the submitter's vouches for nothing.
    let (bystander, record) = dkim_signed_mail("bystander.example", &report("dkim-bystander"));
    dns.set("s1._domainkey.bystander.example", Answer::Txt(vec![record]));
    let text = String::from_utf8(bystander).unwrap();
    let claimed = text.replace(
        "TLS-Report-Submitter: bystander.example",
        "TLS-Report-Submitter: victim.example",
    );
    let (code, _, err) = ingest(&cfg, claimed.into_bytes()).await;
    assert_eq!(code, 65, "{err}");

    // l= signs a prefix of the body only, so a forged report part could follow it.
    let (partial, record) = dkim_signed_with("partial.example", &report("dkim-partial"), true);
    dns.set("s1._domainkey.partial.example", Answer::Txt(vec![record]));
    let (code, _, err) = ingest(&cfg, partial).await;
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("'l=' tag"), "{err}");

    // A broken name server for the key: deferred, not bounced.
    let (broken, _) = dkim_signed_mail("servfail.example", &report("dkim-servfail"));
    dns.set("s1._domainkey.servfail.example", Answer::ServFail);
    let (code, _, err) = ingest(&cfg, broken).await;
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("not authenticated yet"), "{err}");

    let store = store(&cfg);
    assert_eq!(store.get("dkim-good").unwrap().len(), 1);
    for id in [
        "dkim-other-key",
        "dkim-bystander",
        "dkim-partial",
        "dkim-servfail",
    ] {
        assert!(store.get(id).unwrap().is_empty(), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_mail_defers_when_the_dkim_key_lookup_times_out() {
    // A name server that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = dkim_config(silent.local_addr().unwrap());
    let day = today().previous_day().unwrap();
    let (mail, _) = dkim_signed_mail(
        "sender.example",
        &report_json("Signer", "dkim-timeout", "example.org", day, 5, &[]),
    );
    let started = std::time::Instant::now();
    let (code, _, err) = ingest(&cfg, mail).await;
    let took = started.elapsed();
    println!("a silent name server deferred the mail after {took:?}");
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("not authenticated yet"), "{err}");
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    assert!(store(&cfg).get("dkim-timeout").unwrap().is_empty());
}

/// Issue 10, defect 3, by mail through the binary: a forged report stored first (as an
/// unauthenticated POST would) no longer makes the genuine signed one a "duplicate"; the
/// verdict says the counts cannot be trusted; a DKIM pass for another domain than the one
/// the report names is recorded and flagged.
#[test]
fn a_genuine_mail_after_a_forgery_conflicts_and_signers_are_shown() {
    let cfg = config(false);
    let day = today().previous_day().unwrap();
    let forged = report_json("Google Inc.", "g-1", "example.org", day, 500, &[]);
    std::fs::create_dir_all(cfg.path().join("state")).unwrap();
    insert_report(&store(&cfg), "example.org", forged);
    let mut genuine: serde_json::Value = serde_json::from_slice(&report_json(
        "Google Inc.",
        "g-1",
        "example.org",
        day,
        498,
        &[("certificate-expired", "mx.example.org", 2)],
    ))
    .unwrap();
    genuine["contact-info"] = "smtp-tls-reporting@google.com".into();
    let genuine = serde_json::to_vec(&genuine).unwrap();
    let mail = report_mail("google.com", "example.org", &genuine, Some(MTA));
    let (code, out, err) = run(&["ingest-mail"], cfg.path(), &mail);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stored, conflicting"), "{out}");
    assert!(out.contains("(DKIM google.com)"), "{out}");

    let (_, json, _) = run(&["reports", "--json"], cfg.path(), b"");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let org = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tenant"] == "example.org")
        .unwrap();
    assert_eq!(org["conflicting_reports"], 2, "{org}");
    assert_eq!(org["verdict"]["status"], "not-ready", "{org}");
    let (code, shown, err) = run(&["reports", "show", "g-1"], cfg.path(), b"");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 different reports"), "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let signers: Vec<&serde_json::Value> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["signing-domain"])
        .collect();
    assert_eq!(signers, [&serde_json::Value::Null, &"google.com".into()]);

    // A valid signature of evil.example on a report whose contact-info is Google's.
    let mut evil: serde_json::Value = serde_json::from_slice(&report_json(
        "Google Inc.",
        "e-1",
        "example.org",
        day,
        5,
        &[],
    ))
    .unwrap();
    evil["contact-info"] = "smtp-tls-reporting@google.com".into();
    let evil = serde_json::to_vec(&evil).unwrap();
    let mail = report_mail("evil.example", "example.org", &evil, Some(MTA));
    let (code, out, err) = run(&["ingest-mail"], cfg.path(), &mail);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "contact-info google.com not at or below the DKIM signing domain evil.example"
        ),
        "{out}"
    );
    let (_, _, err) = run(&["reports", "show", "e-1"], cfg.path(), b"");
    assert!(
        err.contains("DKIM signing domain evil.example (flagged"),
        "{err}"
    );
    let (_, table, _) = run(&["reports", "--domain", "example.org"], cfg.path(), b"");
    assert!(
        table.contains("Google Inc. (DKIM evil.example, which is not the submitter's: flagged)"),
        "{table}"
    );
    assert!(table.contains("Google Inc. (DKIM google.com)"), "{table}");
    assert!(table.contains("Google Inc. (unsigned)"), "{table}");
}
