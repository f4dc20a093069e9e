//! Raw HTTP/1.1 request bytes → hyper's server (the daemon's settings) → the TLS-RPT HTTPS
//! intake (`tlsrpt::HttpsIntake::handle`: routing, tenant check, media type, body caps,
//! decode, quota, store), as a connection to the report host runs after the handshake.
//!
//! The report store is a real SQLite database in a temporary directory under `TMPDIR` (the
//! scripts put that on /dev/shm, so its fsyncs cost nothing, and remove it), opened once per
//! process; reports the fuzzer finds are stored, so duplicates and quotas are reached too.
//!
//! Properties: every status is one of 200, 400, 404, 405, 408, 413, 415, 421, 429, 503 (a
//! 500 would mean the store failed on a sender's input); a 200 says stored, duplicate or
//! conflicting; 405 names `POST`; 429 and 503 carry `Retry-After`; every answer is one line.
#![no_main]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use http::header::{ALLOW, RETRY_AFTER};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use libfuzzer_sys::fuzz_target;
use mta_stsd::config::TlsRptConfig;
use mta_stsd::tlsrpt::{HttpsIntake, TlsRpt};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn intake() -> &'static HttpsIntake {
    static INTAKE: OnceLock<(tempfile::TempDir, HttpsIntake)> = OnceLock::new();
    let (_, intake) = INTAKE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = TlsRptConfig::defaults(dir.path());
        config.report_host = Some("tlsrpt.operator.example".into());
        let tlsrpt = TlsRpt::open(&config, common::registry().clone()).expect("report store");
        let intake = HttpsIntake::new(Arc::new(tlsrpt)).expect("report host configured");
        (dir, intake)
    });
    intake
}

fuzz_target!(|data: &[u8]| {
    common::serve(data, |req: Request<Incoming>| async move {
        let resp = intake().handle(req, CLIENT, || {}).await;
        let (parts, body) = common::body_bytes(resp).await;
        check(&parts, &body);
        http::Response::from_parts(parts, http_body_util::Full::new(body))
    });
});

fn check(parts: &http::response::Parts, body: &[u8]) {
    let status = parts.status;
    let text = String::from_utf8_lossy(body);
    common::trace(format_args!("{status} {text:?}"));
    assert!(
        [200, 400, 404, 405, 408, 413, 415, 421, 429, 503].contains(&status.as_u16()),
        "unexpected {status}: {text}"
    );
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "{text:?}"
    );
    match status {
        StatusCode::OK => assert!(
            text.starts_with("report stored")
                || text.starts_with("duplicate report")
                || text.contains("both are flagged"),
            "{text:?}"
        ),
        StatusCode::METHOD_NOT_ALLOWED => assert_eq!(parts.headers[ALLOW], "POST"),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            assert!(parts.headers.contains_key(RETRY_AFTER))
        }
        _ => {}
    }
}
