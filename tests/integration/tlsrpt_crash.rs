//! Crash safety of the report store, end to end: the real `mta-stsd serve` acknowledges a
//! report, is killed with SIGKILL right after the 2xx, and the report is there after a restart.

use std::ffi::OsStr;

use http::StatusCode;

use crate::common::{
    BASE_SERVER_YAML, Client, ServeProcess, TestConfig, gzip, run_binary, tlsrpt_fixture,
};

const REPORT_HOST: &str = "tlsrpt.operator.example";

#[tokio::test]
async fn an_acknowledged_report_survives_kill_9() {
    let cfg = TestConfig::with_server(&format!(
        "{BASE_SERVER_YAML}tlsrpt:\n  report_host: {REPORT_HOST}\n"
    ));
    cfg.simple_tenant("example.com");
    let rfc = tlsrpt_fixture("rfc-example.json");

    let serve = ServeProcess::start(cfg.path());
    let client = Client::new(serve.addr, cfg.ca_der());
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
    // At once after the 2xx: no graceful shutdown, no WAL checkpoint, no destructor.
    serve.kill_9();

    // The restarted daemon opens the same state directory (running the WAL recovery) and
    // still serves; the report is stored exactly once.
    let serve = ServeProcess::start(cfg.path());
    let client = Client::new(serve.addr, cfg.ca_der());
    let again = client
        .post_report(
            REPORT_HOST,
            "example.com",
            "application/tlsrpt+json",
            rfc.clone(),
        )
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&again.body).contains("duplicate"),
        "the report from before the kill is known: {:?}",
        again.body
    );
    drop(serve);

    let (code, stdout, stderr) = run_binary(
        &[
            OsStr::new("reports"),
            OsStr::new("show"),
            OsStr::new("20250301-example.com-1"),
            OsStr::new("--config"),
            cfg.path().as_os_str(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let original: serde_json::Value = serde_json::from_slice(&rfc).unwrap();
    assert_eq!(shown, original);
}
