//! `/ui/reports/<digest>?id=<report-id>`: one stored report as highlighted JSON, and
//! `/ui/reports/<digest>.json?id=…` the same, pretty-printed, as a download.
//!
//! A report-id is unique only per organization and chosen by the sender, so the path names
//! the report by its content digest (hex, safe in a path and a file name) and the query
//! carries the report-id the store looks it up by.

use std::sync::Arc;

use http::header::{CONTENT_DISPOSITION, HeaderValue};
use maud::html;

use super::super::AdminState;
use super::layout::{self, Section, badge, facts};
use super::{Answer, bad_request, html_answer, json, not_found, query_pairs, secure};
use crate::tlsrpt::ReportRecord;

/// `GET /ui/reports/…`.
pub async fn page(state: &Arc<AdminState>, rest: &str, query: Option<&str>) -> Answer {
    let (digest, download) = match rest.strip_suffix(".json") {
        Some(d) => (d.to_owned(), true),
        None => (rest.to_owned(), false),
    };
    if digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found("No such report.");
    }
    let id = match query_pairs(query) {
        Ok(pairs) => pairs.into_iter().find(|(k, _)| k == "id").map(|(_, v)| v),
        Err(why) => return bad_request(&why),
    };
    let Some(id) = id else {
        return bad_request("id: the report-id is missing");
    };
    let st = state.clone();
    let found = tokio::task::spawn_blocking(move || {
        let stored = st.tlsrpt.store()?.get(&id)?;
        Ok::<_, crate::tlsrpt::StoreError>(stored.into_iter().find(|r| r.digest == digest))
    })
    .await;
    match found {
        Ok(Ok(Some(record))) if download => attachment(&record),
        Ok(Ok(Some(record))) => html_answer(http::StatusCode::OK, &view(&record)),
        Ok(Ok(None)) => not_found("No such report (it may have passed the retention)."),
        Ok(Err(e)) => html_answer(
            http::StatusCode::SERVICE_UNAVAILABLE,
            &super::problem(&format!("Report store unavailable: {e}")),
        ),
        Err(_) => not_found("No such report."),
    }
}

fn parsed(record: &ReportRecord) -> serde_json::Value {
    // Stored reports were parsed as JSON on the way in; a row that no longer parses is shown
    // as the string it holds rather than not at all.
    serde_json::from_slice(&record.raw_json).unwrap_or_else(|_| {
        String::from_utf8_lossy(&record.raw_json)
            .into_owned()
            .into()
    })
}

fn attachment(record: &ReportRecord) -> Answer {
    let body = json::pretty(&parsed(record));
    let mut resp = secure(
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body))),
        "application/json",
    );
    // The digest, not the sender's report-id, names the file: it is hex, so nothing in the
    // header comes from the sender.
    let name = format!(
        "attachment; filename=\"tlsrpt-{}.json\"",
        &record.digest[..record.digest.len().min(16)]
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, value);
    }
    resp
}

pub(super) fn view(record: &ReportRecord) -> maud::Markup {
    let download = format!(
        "/ui/reports/{}.json?id={}",
        record.digest,
        super::encode(&record.report_id)
    );
    let body = html! {
        (facts(&[
            ("Organization", html! { (record.organization) }),
            ("Report id", html! { code { (record.report_id) } }),
            ("Tenant", html! { a href={"/ui/tenants/" (record.tenant)} { (record.tenant) } }),
            ("Period", html! { (record.start) " – " (record.end) }),
            ("Received", html! { (record.received) " over " (record.source.as_str()) }),
            ("Signed by", html! { (record.signing_domain.as_deref().unwrap_or("– (not signed or not checked)")) }),
            ("Flags", html! {
                @if record.conflict { (badge("bad", "conflict: another report has this organization and id")) " " }
                @if record.submitter_mismatch { (badge("warn", "submitter is not the signer's")) }
                @if !record.conflict && !record.submitter_mismatch { "none" }
            }),
        ]))
        p { a href=(download) download { "Download the JSON" } }
        pre class="json" aria-label="Report JSON" { (json::highlighted(&parsed(record))) }
    };
    layout::page("TLS-RPT report", Section::Tenants, body)
}
