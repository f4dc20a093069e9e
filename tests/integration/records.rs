//! One record builder: the admin API's `records` and `txt`, `dns --json` (offline),
//! `dns --admin` and `mta_stsd_policy_info` must agree for every tenant, with and without its
//! own rua, with the HTTPS report endpoint published and not.

use std::ffi::{OsStr, OsString};

use crate::common::{TestConfig, admin_get, run_binary, start};

const WITH_RUA: &str = "domain: own.example\nmode: testing\nmx: [mx.own.example]\ntlsrpt:\n  rua: [\"mailto:r@own.example\"]\n";
const WITHOUT_RUA: &str = "domain: bare.example\nmode: enforce\nmx: [mx.bare.example]\n";

fn server_yaml(publish_endpoint: bool) -> String {
    format!(
        "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\npublic_hostname: sts.operator.example\ntlsrpt:\n  report_host: tlsrpt.operator.example\n  publish_endpoint: {publish_endpoint}\nmetrics:\n  per_tenant: all\n"
    )
}

/// `(domain, records)` from a JSON list of tenants, sorted by domain.
fn records_of(list: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<_> = list
        .as_array()
        .expect("a list of tenants")
        .iter()
        .map(|t| {
            (
                t["domain"].as_str().unwrap().to_owned(),
                t["records"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The console form of the `_smtp._tls` record in `records`, as the API's `txt.tlsrpt` shows it.
fn tlsrpt_console(records: &serde_json::Value) -> serde_json::Value {
    records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str().unwrap().starts_with("_smtp._tls."))
        .map(|r| {
            let name = r["name"].as_str().unwrap().trim_end_matches('.');
            serde_json::Value::String(format!("{name} TXT \"{}\"", r["value"].as_str().unwrap()))
        })
        .unwrap_or(serde_json::Value::Null)
}

/// Runs the real binary off the runtime's threads: the daemon it may ask runs on them.
async fn cli(args: Vec<OsString>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
        run_binary(&args, b"")
    })
    .await
    .unwrap()
}

async fn check_agreement(publish_endpoint: bool) {
    let cfg = TestConfig::with_server(&server_yaml(publish_endpoint));
    cfg.tenant("own.example.yaml", WITH_RUA);
    cfg.tenant("bare.example.yaml", WITHOUT_RUA);
    let running = start(&cfg).await;

    let api = admin_get(running.admin_addr, "/api/v1/tenants")
        .await
        .json();
    let api_records = records_of(&api["tenants"]);
    let (code, offline, err) = cli(vec![
        "dns".into(),
        "--json".into(),
        "--config".into(),
        cfg.path().into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let offline: serde_json::Value = serde_json::from_str(&offline).unwrap();
    assert_eq!(records_of(&offline), api_records, "dns --json vs the API");

    let url = format!("http://{}", running.admin_addr);
    let (code, live, err) = cli(vec![
        "dns".into(),
        "--json".into(),
        "--admin".into(),
        url.into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let live: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert_eq!(records_of(&live), api_records, "dns --admin vs the API");

    let metrics = admin_get(running.admin_addr, "/metrics").await.body;
    for t in api["tenants"].as_array().unwrap() {
        let domain = t["domain"].as_str().unwrap();
        let records = &t["records"];
        // The console forms the API shows are the records it lists.
        assert_eq!(t["txt"]["tlsrpt"], tlsrpt_console(records), "{domain}");
        let sts = &records[0];
        assert_eq!(sts["name"], format!("_mta-sts.{domain}."));
        assert_eq!(
            t["txt"]["mta_sts"],
            format!(
                "_mta-sts.{domain} TXT \"{}\"",
                sts["value"].as_str().unwrap()
            )
        );
        // The id in the metric is the id of the record.
        let id = sts["value"]
            .as_str()
            .unwrap()
            .strip_prefix("v=STSv1; id=")
            .unwrap();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("mta_stsd_policy_info{")
                    && l.contains(&format!("domain=\"{domain}\""))
                    && l.contains(&format!("id=\"{id}\""))),
            "no policy_info for {domain} with id {id}:\n{metrics}"
        );
        let endpoint = format!("https://tlsrpt.operator.example/tlsrpt/{domain}");
        let tlsrpt = t["txt"]["tlsrpt"].as_str();
        match (domain, publish_endpoint) {
            ("bare.example", false) => assert!(tlsrpt.is_none(), "{t}"),
            (_, true) => assert!(tlsrpt.unwrap().contains(&endpoint), "{t}"),
            (_, false) => assert!(!tlsrpt.unwrap().contains("https://"), "{t}"),
        }
    }
    running.stop().await;
}

#[tokio::test]
async fn every_consumer_shows_the_same_records_with_the_endpoint_published() {
    check_agreement(true).await;
}

#[tokio::test]
async fn every_consumer_shows_the_same_records_without_the_endpoint() {
    check_agreement(false).await;
}
