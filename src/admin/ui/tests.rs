//! What the pages make of hostile report data, and the cluster hook.

use time::macros::datetime;

use crate::tlsrpt::summary::ReportSpan;
use crate::tlsrpt::{ReportRecord, Source};

const HOSTILE: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";

fn record() -> ReportRecord {
    let json = serde_json::json!({
        "organization-name": HOSTILE,
        "report-id": HOSTILE,
        "policies": [{"failure-details": [{"receiving-mx-hostname": HOSTILE}]}],
    });
    ReportRecord {
        organization: HOSTILE.into(),
        report_id: HOSTILE.into(),
        tenant: "example.com".into(),
        source: Source::Mail,
        received: datetime!(2025-03-02 01:00 UTC),
        start: datetime!(2025-03-01 00:00 UTC),
        end: datetime!(2025-03-02 00:00 UTC),
        raw_json: serde_json::to_vec(&json).unwrap(),
        digest: "ab12".into(),
        conflict: true,
        signing_domain: Some(HOSTILE.into()),
        submitter_mismatch: true,
    }
}

fn assert_inert(html: &str) {
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
}

#[test]
fn a_report_page_shows_outsiders_markup_as_text() {
    let html = super::report::view(&record()).into_string();
    assert_inert(&html);
    // The page's own script tag is the only one, and it is external.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(
        html.contains("<script src=\"/ui/assets/app.js\" defer>"),
        "{html}"
    );
    // The download link percent-encodes the report-id.
    assert!(
        html.contains("/ui/reports/ab12.json?id=%3Cscript%3Ealert%281%29"),
        "{html}"
    );
}

#[test]
fn the_report_list_shows_outsiders_markup_as_text() {
    let span = ReportSpan {
        organization: HOSTILE.into(),
        start: datetime!(2025-03-01 00:00 UTC),
        end: datetime!(2025-03-02 00:00 UTC),
        conflict: false,
        signing_domain: None,
        submitter_mismatch: false,
        report_id: HOSTILE.into(),
        digest: "ab12".into(),
        successful: 3,
        failed: 1,
    };
    let html = super::tenant::reports_table(&[span]).into_string();
    assert_inert(&html);
    assert!(!html.contains("id=<"), "{html}");
}

#[test]
fn the_status_page_shows_a_cluster_only_when_the_status_has_one() {
    assert!(super::status::cluster_section(&serde_json::json!({"generation": 1})).is_none());
    // The shape cluster mode's status has: this replica, its role, the replicas seen.
    let status = serde_json::json!({"cluster": {
        "replica": "replica-b",
        "role": "leader",
        "detail": null,
        "replicas": [
            {"name": "replica-a", "seen_secs_ago": 2.5},
            {"name": "replica-b", "seen_secs_ago": 0.1},
        ],
    }});
    let html = super::status::cluster_section(&status)
        .unwrap()
        .into_string();
    assert!(
        html.contains("<dd><strong>replica-b</strong></dd>"),
        "{html}"
    );
    assert!(html.contains("<td>replica-a</td><td>2.5</td>"), "{html}");
    let follower =
        serde_json::json!({"cluster": {"replica": "a", "role": "follower", "replicas": []}});
    let html = super::status::cluster_section(&follower)
        .unwrap()
        .into_string();
    assert!(html.contains("<strong>another replica</strong>"), "{html}");
}
