//! TLS-RPT over HTTPS (RFC 8460 §5.4) against a real listener and TLS client: the report
//! host's certificate, storage, dedupe, and every refusal path.

use std::time::{Duration, Instant};

use http::{Method, StatusCode, header};
use mta_stsd::tlsrpt::{IntakeOutcome, ReportStore, Source, SqliteStore};

use crate::common::{BASE_SERVER_YAML, TestConfig, gzip, start, tlsrpt_fixture};

const REPORT_HOST: &str = "tlsrpt.operator.example";
/// Caps small enough that the hostile bodies are cheap to build.
const MAX_COMPRESSED: usize = 64 * 1024;
const MAX_DECOMPRESSED: usize = 1024 * 1024;

fn config() -> TestConfig {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}tlsrpt:\n  report_host: {REPORT_HOST}\n  max_compressed_bytes: {MAX_COMPRESSED}\n  max_decompressed_bytes: {MAX_DECOMPRESSED}\n"
    ));
    cfg.simple_tenant("example.com");
    cfg.simple_tenant("example.org");
    cfg
}

fn store(cfg: &TestConfig) -> SqliteStore {
    SqliteStore::open(&cfg.path().join("state/tlsrpt.sqlite3")).unwrap()
}

/// How many reports are stored for `tenant` (any period).
fn stored_reports(cfg: &TestConfig, tenant: &str) -> usize {
    let since = time::OffsetDateTime::UNIX_EPOCH;
    store(cfg).summary(tenant, since).unwrap().reports.len()
}

#[tokio::test]
async fn gzip_and_json_reports_are_stored_and_acknowledged() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();

    let rfc = tlsrpt_fixture("rfc-example.json");
    let got = client
        .post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+gzip",
            gzip(&rfc),
        )
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    assert_eq!(&got.body[..], b"report stored\n");

    // Google's shape (string mx-host), plain JSON, over h2.
    let google = tlsrpt_fixture("google.json");
    let got = client
        .send(
            REPORT_HOST,
            REPORT_HOST,
            Method::POST,
            "/tlsrpt/example.org",
            &[("content-type", "application/tlsrpt+json")],
            google.into(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    assert_eq!(got.version, http::Version::HTTP_2);

    // Microsoft's shape: no policy-domain on no-policy-found; routed by the path.
    let microsoft = tlsrpt_fixture("microsoft.json");
    let got = client
        .post_report(
            REPORT_HOST,
            "example.org",
            "application/tlsrpt+json",
            microsoft,
        )
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);

    let stored = store(&cfg).get("20250301-example.com-1").unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].raw_json, rfc,
        "the raw report is kept as received"
    );
    assert_eq!(stored[0].tenant, "example.com");
    assert_eq!(stored_reports(&cfg, "example.org"), 2);

    let stats = &running.tlsrpt.stats;
    assert_eq!(stats.get(Source::Https, IntakeOutcome::Stored), 3);
    assert_eq!(stats.get(Source::Https, IntakeOutcome::Duplicate), 0);
    // The policy host still serves its policy next to the report host.
    let policy = client.get_policy("mta-sts.example.com").await.unwrap();
    assert_eq!(policy.status, StatusCode::OK);
    running.stop().await;
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_and_stored_once() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    let rfc = tlsrpt_fixture("rfc-example.json");
    let first = client
        .post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+gzip",
            gzip(&rfc),
        )
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::OK);
    // A sender's retry, this time as plain JSON.
    let again = client
        .post_report(REPORT_HOST, "example.com", "application/tlsrpt+json", rfc)
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&again.body).contains("duplicate"));
    assert_eq!(store(&cfg).get("20250301-example.com-1").unwrap().len(), 1);
    assert_eq!(stored_reports(&cfg, "example.com"), 1);
    running.stop().await;
}

#[tokio::test]
async fn hostile_bodies_are_refused_with_one_line_and_nothing_stored() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    let rfc = tlsrpt_fixture("rfc-example.json");

    // Gzip bomb: 32 MiB of zeros in ~32 KiB (under the compressed cap), far past the 1 MiB
    // decompressed cap. Refused once the cap is reached, not after inflating everything.
    let bomb = gzip(&vec![0u8; 1 << 20]).repeat(32);
    assert!(bomb.len() < MAX_COMPRESSED, "bomb is {} bytes", bomb.len());
    let started = Instant::now();
    let got = client
        .post_report(REPORT_HOST, "example.com", "application/tlsrpt+gzip", bomb)
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", got.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    let gz = gzip(&rfc);
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "truncated gzip",
            "application/tlsrpt+gzip",
            gz[..gz.len() / 2].to_vec(),
            StatusCode::BAD_REQUEST,
            "gzip",
        ),
        (
            "wrong media type",
            "application/json",
            rfc.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "media type",
        ),
        (
            "oversized body",
            "application/tlsrpt+json",
            vec![b' '; MAX_COMPRESSED + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "compressed body",
        ),
        (
            "invalid JSON",
            "application/tlsrpt+json",
            b"{\"organization-name\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "",
        ),
    ];
    for (what, ct, body, want, needle) in cases {
        let got = client
            .post_report(REPORT_HOST, "example.com", ct, body)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&got.body);
        assert_eq!(got.status, want, "{what}: {text}");
        assert_eq!(text.lines().count(), 1, "{what}: one line, got {text:?}");
        assert!(text.contains(needle), "{what}: {text}");
        assert_eq!(
            got.headers[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
    assert_eq!(stored_reports(&cfg, "example.com"), 0);
    let stats = &running.tlsrpt.stats;
    assert_eq!(stats.get(Source::Https, IntakeOutcome::TooLarge), 2);
    assert_eq!(stats.get(Source::Https, IntakeOutcome::Invalid), 2);
    assert_eq!(
        stats.get(Source::Https, IntakeOutcome::UnsupportedMediaType),
        1
    );
    assert_eq!(stats.get(Source::Https, IntakeOutcome::Stored), 0);
    running.stop().await;
}

#[tokio::test]
async fn a_report_for_an_unknown_domain_is_404_and_not_stored() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    let mut rfc = tlsrpt_fixture("rfc-example.json");
    rfc = String::from_utf8(rfc)
        .unwrap()
        .replace("example.com", "stranger.example")
        .into_bytes();
    let got = client
        .post_report(
            REPORT_HOST,
            "stranger.example",
            "application/tlsrpt+json",
            rfc,
        )
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&got.body).contains("stranger.example"));
    assert!(
        store(&cfg)
            .get("20250301-stranger.example-1")
            .unwrap()
            .is_empty()
    );
    running.stop().await;
}

#[tokio::test]
async fn only_the_report_host_takes_posts() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    let get = client
        .request(
            REPORT_HOST,
            REPORT_HOST,
            Method::GET,
            "/tlsrpt/example.com",
            false,
        )
        .await
        .unwrap();
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.headers[header::ALLOW], "POST");
    // The report host serves no policy.
    let policy = client
        .request(
            REPORT_HOST,
            REPORT_HOST,
            Method::GET,
            mta_stsd::http::POLICY_PATH,
            false,
        )
        .await
        .unwrap();
    assert_eq!(policy.status, StatusCode::METHOD_NOT_ALLOWED);
    // A policy host still refuses POST, even to the report path.
    let post = client
        .send(
            "mta-sts.example.com",
            "mta-sts.example.com",
            Method::POST,
            "/tlsrpt/example.com",
            &[("content-type", "application/tlsrpt+json")],
            tlsrpt_fixture("rfc-example.json").into(),
            false,
        )
        .await
        .unwrap();
    assert_ne!(post.status, StatusCode::OK);
    let post = client
        .send(
            "mta-sts.example.com",
            "mta-sts.example.com",
            Method::POST,
            mta_stsd::http::POLICY_PATH,
            &[],
            bytes::Bytes::new(),
            false,
        )
        .await
        .unwrap();
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(stored_reports(&cfg, "example.com"), 0);
    running.stop().await;
}

#[tokio::test]
async fn without_a_report_host_its_name_is_refused_at_the_handshake() {
    let cfg = TestConfig::new();
    cfg.simple_tenant("example.com");
    let running = start(&cfg).await;
    let err = running
        .client()
        .handshake(REPORT_HOST, &[b"http/1.1"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("UnrecognisedName") || err.to_string().contains("unrecognized"),
        "{err}"
    );
    running.stop().await;
}

/// A body of `left` copies of `chunk` with no size hint: sent without Content-Length.
struct Endless {
    chunk: bytes::Bytes,
    left: usize,
    /// Frames handed to the connection so far.
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl hyper::body::Body for Endless {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.clone()))))
    }
}

#[tokio::test]
async fn a_streamed_body_is_stopped_at_the_cap() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    let tls = client.handshake(REPORT_HOST, &[b"h2"]).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // 1 GiB offered in 16 KiB frames; the server must answer long before it is sent.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let body = Endless {
        chunk: bytes::Bytes::from(vec![b' '; 16 * 1024]),
        left: 64 * 1024,
        sent: sent.clone(),
    };
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("https://{REPORT_HOST}/tlsrpt/example.com"))
        .header(header::CONTENT_TYPE, "application/tlsrpt+json")
        .body(body)
        .unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .expect("answered before the body ended")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // h2 flow control only lets the client send what the server reads (plus a window): a
    // server that read on past the cap would have pulled far more than 16 MiB.
    let frames = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(frames < 1024, "client sent {frames} frames of 16 KiB");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(stored_reports(&cfg, "example.com"), 0);
    running.stop().await;
}

/// Reports show up in the admin API's per-tenant summary and in the metrics gauges.
#[tokio::test]
async fn reports_reach_the_admin_api_and_metrics() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    let today = time::OffsetDateTime::now_utc().date();
    for (i, failures) in [
        vec![],
        vec![("certificate-expired", "mx.example.com", 3u64)],
    ]
    .into_iter()
    .enumerate()
    {
        let body = crate::common::report_json(
            "Sender Org",
            &format!("r-{i}"),
            "example.com",
            today.previous_day().unwrap(),
            100,
            &failures,
        );
        let got = client
            .post_report(REPORT_HOST, "example.com", "application/tlsrpt+json", body)
            .await
            .unwrap();
        assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    }
    let summary = crate::common::admin_get(
        running.admin_addr,
        "/api/v1/tenants/example.com/tlsrpt?since=7d",
    )
    .await;
    assert_eq!(summary.status, StatusCode::OK, "{}", summary.body);
    let v = summary.json();
    assert_eq!(v["successful_sessions"], 200, "{v}");
    assert_eq!(v["failed_sessions"], 3, "{v}");
    assert_eq!(v["verdict"]["status"], "not-ready", "{v}");
    let bad = crate::common::admin_get(
        running.admin_addr,
        "/api/v1/tenants/example.com/tlsrpt?since=soon",
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown =
        crate::common::admin_get(running.admin_addr, "/api/v1/tenants/nope.example/tlsrpt").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let metrics = crate::common::admin_get(running.admin_addr, "/metrics")
        .await
        .body;
    for line in [
        "mta_stsd_tlsrpt_reports_received_total{source=\"https\",outcome=\"stored\"} 2",
        "mta_stsd_tlsrpt_sessions{domain=\"example.com\",result=\"success\"} 200",
        "mta_stsd_tlsrpt_sessions{domain=\"example.com\",result=\"failure\"} 3",
        "mta_stsd_tlsrpt_failures{domain=\"example.com\",result_type=\"certificate-expired\"} 3",
        "mta_stsd_tlsrpt_window_seconds 604800",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in:\n{metrics}");
    }
    running.stop().await;
}

/// One slow upload from `from`: an HTTP/1.1 POST with a chunked body of one byte a second,
/// until the server answers or closes. The status answered, or `None` if closed unanswered.
async fn slow_upload(
    client: crate::common::Client,
    from: std::net::IpAddr,
    sending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = client
        .handshake_from(from, REPORT_HOST, &[b"http/1.1"])
        .await
        .ok()?;
    let (mut rx, mut tx) = tokio::io::split(tls);
    let head = format!(
        "POST /tlsrpt/example.com HTTP/1.1\r\nHost: {REPORT_HOST}\r\nContent-Type: application/tlsrpt+json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n \r\n"
    );
    tx.write_all(head.as_bytes()).await.ok()?;
    sending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            n = rx.read(&mut buf) => {
                let n = n.ok().filter(|&n| n > 0)?;
                let line = String::from_utf8_lossy(&buf[..n]);
                return line.split(' ').nth(1).and_then(|s| s.parse().ok());
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if tx.write_all(b"1\r\n \r\n").await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Issue 10: slow uploads held the report slots while trickling their bodies, so a real
/// sender waited 30 s for a 503. Now bodies are read outside the slots, under a minimum rate,
/// and at most a few at once per client address.
#[tokio::test]
async fn slow_uploads_neither_block_a_good_post_nor_stay_open() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    // 6 addresses × 8 uploads: twice the per-client cap from each, and more readers at once
    // than twice the report slots. The good POST comes from 127.0.0.1, another address.
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for a in 2..=7u8 {
        for _ in 0..8 {
            let from = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, a));
            let task = slow_upload(client.clone(), from, sending.clone());
            attackers.push(tokio::spawn(tokio::time::timeout(
                Duration::from_secs(60),
                task,
            )));
        }
    }
    let all_sending = crate::common::eventually(Duration::from_secs(20), || {
        let n = sending.load(std::sync::atomic::Ordering::SeqCst);
        async move { n == 48 }
    })
    .await;
    assert!(all_sending, "every slow upload started");

    let started = Instant::now();
    let good = tokio::time::timeout(
        Duration::from_secs(5),
        client.post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+json",
            tlsrpt_fixture("rfc-example.json"),
        ),
    )
    .await
    .expect("a good POST is answered within 5 s during the attack")
    .unwrap();
    assert_eq!(good.status, StatusCode::OK, "{:?}", good.body);
    eprintln!("good POST answered in {:?}", started.elapsed());

    let mut statuses = Vec::new();
    for a in attackers {
        statuses.push(
            a.await
                .unwrap()
                .expect("every slow upload is answered within 60 s"),
        );
    }
    let count = |code| statuses.iter().filter(|s| **s == Some(code)).count();
    assert_eq!(count(429), 24, "{statuses:?}");
    assert_eq!(count(408), 24, "{statuses:?}");
    eprintln!("slow uploads all answered after {:?}", started.elapsed());
    running.stop().await;
}

/// The real `curl` over h2 POSTing `body` as `content_type`: (exit code, what `-w` printed,
/// stderr).
async fn curl_h2(
    cfg: &TestConfig,
    port: u16,
    content_type: &str,
    body: Vec<u8>,
) -> (Option<i32>, String, String) {
    let body_file = cfg.path().join("curl-body");
    std::fs::write(&body_file, body).unwrap();
    let ca = cfg.path().join("state/ca/ca.crt");
    let args: Vec<std::ffi::OsString> = vec![
        "--http2".into(),
        "-sS".into(),
        "--max-time".into(),
        "30".into(),
        "--cacert".into(),
        ca.into(),
        "--resolve".into(),
        format!("{REPORT_HOST}:{port}:127.0.0.1").into(),
        "-H".into(),
        format!("Content-Type: {content_type}").into(),
        "--data-binary".into(),
        format!("@{}", body_file.display()).into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        format!("https://{REPORT_HOST}:{port}/tlsrpt/example.com").into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/curl")
            .args(&args)
            // This machine points curl at other CAs globally; trust only the test CA.
            .env_remove("CURL_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 10: on h2 an early refusal was followed by RST_STREAM(NO_ERROR) while curl was still
/// uploading, and curl 7.88 reported a stream error instead of the status. The server now
/// drains a bounded body before answering, so curl reads 415 and 413.
#[tokio::test]
async fn curl_over_h2_reads_early_refusals() {
    let cfg = config();
    let running = start(&cfg).await;
    let port = running.addr.port();
    let cases = [
        ("application/json", vec![b' '; 2 << 20], "415"),
        (
            "application/tlsrpt+json",
            vec![b' '; 4 * MAX_COMPRESSED],
            "413",
        ),
    ];
    for (content_type, body, want) in cases {
        let (code, printed, stderr) = curl_h2(&cfg, port, content_type, body).await;
        assert_eq!(
            (code, printed.as_str()),
            (Some(0), want),
            "{content_type}: {stderr}"
        );
    }
    running.stop().await;
}

/// Issue 10, defect 3: an unauthenticated POST under a genuine report's key must not suppress
/// it, and a report naming two tenants counts for both.
#[tokio::test]
async fn a_forged_report_under_a_genuine_key_conflicts_instead_of_suppressing_it() {
    let cfg = config();
    let running = start(&cfg).await;
    let client = running.client();
    let day = time::OffsetDateTime::now_utc()
        .date()
        .previous_day()
        .unwrap();
    let forged = crate::common::report_json("Google Inc.", "g-1", "example.com", day, 500, &[]);
    let genuine = crate::common::report_json(
        "Google Inc.",
        "g-1",
        "example.com",
        day,
        498,
        &[("certificate-expired", "mx.example.com", 2)],
    );
    let got = client
        .post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+json",
            forged,
        )
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"report stored\n");
    let got = client
        .post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+json",
            genuine,
        )
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK);
    let body = String::from_utf8_lossy(&got.body).into_owned();
    assert!(body.contains("differs, both are flagged"), "{body}");
    let stored = store(&cfg).get("g-1").unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|r| r.conflict));

    let v = crate::common::admin_get(
        running.admin_addr,
        "/api/v1/tenants/example.com/tlsrpt?since=7d",
    )
    .await
    .json();
    assert_eq!(v["conflicting_reports"], 2, "{v}");
    assert_eq!(v["verdict"]["status"], "not-ready", "{v}");
    let reasons = v["verdict"]["reasons"].to_string();
    assert!(reasons.contains("2 reports conflict"), "{v}");

    // One report covering both tenants, POSTed for one of them, counts for each.
    let mut both: serde_json::Value = serde_json::from_slice(&crate::common::report_json(
        "Sender Org",
        "two-1",
        "example.com",
        day,
        10,
        &[],
    ))
    .unwrap();
    let policies = both["policies"].as_array_mut().unwrap();
    let mut other = policies[0].clone();
    other["policy"]["policy-domain"] = "example.org".into();
    policies.push(other);
    let got = client
        .post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+json",
            serde_json::to_vec(&both).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    let mut tenants: Vec<String> = store(&cfg)
        .get("two-1")
        .unwrap()
        .into_iter()
        .map(|r| r.tenant)
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["example.com", "example.org"]);
    assert_eq!(stored_reports(&cfg, "example.org"), 1);
    running.stop().await;
}
