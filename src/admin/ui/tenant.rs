//! `/ui/tenants/<domain>`: one tenant, from its policy to its TLS-RPT reports.

use std::sync::Arc;

use maud::{Markup, html};
use time::OffsetDateTime;

use super::super::{AdminState, errors_by_file, gated_summary, path_domain, records};
use super::chart;
use super::layout::{self, Section, badge, copyable, facts, percent, when};
use super::tenants::{cert_cell, validation_badge, verdict_badge};
use super::{Answer, encode, html_answer, not_found};
use crate::certs::CertStatus;
use crate::config::{Diagnostic, Tenant};
use crate::publish::Record;
use crate::tlsrpt::TenantSummary;
use crate::tlsrpt::summary::{ReportSpan, WindowData};
use crate::validate::TenantReport;

/// Days of reports the chart and the report list cover.
const HISTORY_DAYS: i64 = 30;

/// Everything the page shows, gathered on a blocking thread.
struct View {
    tenant: Arc<Tenant>,
    ready: bool,
    stale: bool,
    errors: Vec<Diagnostic>,
    records: Vec<Record>,
    cert: Option<CertStatus>,
    validation: Option<Arc<TenantReport>>,
    /// The verdict window's summary (what the API's `/tlsrpt` serves).
    verdict: Result<Option<TenantSummary>, String>,
    /// The last [`HISTORY_DAYS`]: summary and reports.
    history: Result<Option<(TenantSummary, WindowData)>, String>,
    since: OffsetDateTime,
    now: OffsetDateTime,
    /// Whether the validation watchdog runs.
    watchdog: bool,
}

/// `GET /ui/tenants/<domain>`.
pub async fn page(state: &Arc<AdminState>, raw: &str) -> Answer {
    let Some(domain) = path_domain(raw) else {
        return not_found("No such tenant.");
    };
    let st = state.clone();
    let built = tokio::task::spawn_blocking(move || view(&st, &domain).map(|v| render(&v))).await;
    match built {
        Ok(Some(page)) => html_answer(http::StatusCode::OK, &page),
        _ => not_found("No such tenant (a removed tenant's records to delete are in the API)."),
    }
}

/// Blocking: reads the report store.
fn view(state: &AdminState, domain: &str) -> Option<View> {
    let snapshot = state.registry.load();
    let tenant = snapshot.by_domain(domain)?.clone();
    let now = OffsetDateTime::now_utc();
    let unix = now.unix_timestamp();
    let since = now - time::Duration::days(HISTORY_DAYS);
    let errors = errors_by_file(&snapshot)
        .get(&*tenant.source)
        .map(|d| d.iter().map(|&d| d.clone()).collect())
        .unwrap_or_default();
    let verdict_since = now - state.tlsrpt.metrics_window();
    Some(View {
        ready: crate::publish::is_ready(&snapshot, &state.board, &tenant, unix),
        stale: state
            .reloader
            .status()
            .stale_tenants
            .contains(&tenant.domain),
        errors,
        records: records(state, &tenant).list(),
        cert: state.board.get(&tenant.host),
        validation: state.validation.get(&tenant.domain),
        verdict: gated_summary(&state.tlsrpt, &state.validation, domain, verdict_since, now)
            .map_err(|e| e.to_string()),
        history: state
            .tlsrpt
            .tenant_window(domain, since, now)
            .map_err(|e| e.to_string()),
        since,
        now,
        watchdog: state.reloader.running().validation.enabled,
        tenant,
    })
}

fn render(v: &View) -> Markup {
    let t = &v.tenant;
    let body = html! {
        p class="lead" {
            (badge("neutral", t.policy.mode.as_str())) " "
            @if v.ready { (badge("good", "ready")) } @else { (badge("bad", "not ready")) } " "
            @if t.retiring.is_some() { (badge("warn", "retiring")) " " }
            @if v.stale { (badge("warn", "stale: served from its last good file")) " " }
            a href={"/api/v1/tenants/" (t.domain)} { "JSON" }
        }
        (verdict_section(v))
        (policy_section(v))
        (records_section(&v.records))
        (certificate_section(v.cert.as_ref(), v.now.unix_timestamp()))
        (validation_section(v.validation.as_deref(), v.watchdog))
        (tlsrpt_section(v))
    };
    layout::page(&t.domain, Section::Tenants, body)
}

fn verdict_section(v: &View) -> Markup {
    html! {
        section aria-labelledby="verdict" {
            h2 id="verdict" { "Verdict" }
            @match &v.verdict {
                Ok(Some(s)) => {
                    p { (verdict_badge(s)) ": " (s.reports) " report(s) since " (s.since.date())
                        ", covering " (s.days_covered) " day(s)." }
                    @if !s.verdict.reasons.is_empty() {
                        ul class="reasons" { @for r in &s.verdict.reasons { li { (r) } } }
                    }
                }
                Ok(None) => p { "No verdict." },
                Err(why) => p class="problem" { "Report store unavailable: " (why) },
            }
        }
    }
}

fn policy_section(v: &View) -> Markup {
    let t = &v.tenant;
    html! {
        section aria-labelledby="policy" {
            h2 id="policy" { "Policy" }
            (facts(&[
                ("Served id", html! { code { (t.policy.id) } }),
                ("Source", html! { code { (t.source.display()) ":" (t.line) } }),
                ("Retirement", html! {
                    @match t.retiring {
                        Some(r) => { "since " (when(Some(r.since))) ", until " (when(Some(r.until))) }
                        None => "–",
                    }
                }),
            ]))
            pre class="policy" aria-label="Policy body" { (String::from_utf8_lossy(&t.policy.body)) }
            @if !v.errors.is_empty() {
                h3 { "Errors in its file" }
                ul class="problems" { @for d in &v.errors { li { code { (d) } } } }
            }
        }
    }
}

fn records_section(records: &[Record]) -> Markup {
    html! {
        section aria-labelledby="records" {
            h2 id="records" { "DNS records to publish" }
            div class="scroll" { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Type" } th scope="col" { "Value" } } }
                tbody { @for r in records {
                    tr {
                        td { (copyable(r.name.trim_end_matches('.'))) }
                        td { (if r.rtype == crate::publish::RecordType::Txt { "TXT" } else { "CNAME" }) }
                        td { (copyable(&r.value)) }
                    }
                } }
            } }
        }
    }
}

fn certificate_section(cert: Option<&CertStatus>, now: i64) -> Markup {
    html! {
        section aria-labelledby="certificate" {
            h2 id="certificate" { "Certificate" }
            @match cert {
                None => p { (badge("bad", "none")) " No certificate has been requested yet." },
                Some(c) => (facts(&[
                    ("State", cert_cell(Some(c), now)),
                    ("Provider", html! { (c.provider) }),
                    ("Issuer", html! { (c.cert.as_ref().map_or("–", |i| i.issuer.as_str())) }),
                    ("Serial", html! { code { (c.cert.as_ref().map_or("–", |i| i.serial.as_str())) } }),
                    ("Not after", html! { (when(c.cert.as_ref().map(|i| i.not_after))) }),
                    ("Next renewal or attempt", html! { (when(c.next_attempt)) }),
                    ("Last error", html! { (c.last_error.as_deref().unwrap_or("–")) }),
                ])),
            }
        }
    }
}

fn validation_section(report: Option<&TenantReport>, watchdog: bool) -> Markup {
    html! {
        section aria-labelledby="validation" {
            h2 id="validation" { "Checks from the outside" }
            @match report {
                None if watchdog => p { (validation_badge(None, true)) " The watchdog has not checked this tenant yet." },
                None => p { (validation_badge(None, false)) " The watchdog is off (" code { "validation.enabled" } ")." },
                Some(r) => {
                    p { (validation_badge(Some(r.status()), true)) " checked at " (r.checked_at) }
                    div class="scroll" { table {
                        thead { tr { th scope="col" { "Check" } th scope="col" { "Status" }
                            th scope="col" { "Observed" } th scope="col" { "What to do" } } }
                        tbody { @for c in &r.checks {
                            tr {
                                th scope="row" { (c.check.as_str()) }
                                td { (validation_badge(Some(c.status), true)) }
                                td { (c.observed) }
                                td { (c.action.as_deref().unwrap_or("–")) }
                            }
                        } }
                    } }
                }
            }
        }
    }
}

fn tlsrpt_section(v: &View) -> Markup {
    html! {
        section aria-labelledby="tlsrpt" {
            h2 id="tlsrpt" { "TLS-RPT, last " (HISTORY_DAYS) " days" }
            @match &v.history {
                Err(why) => p class="problem" { "Report store unavailable: " (why) },
                Ok(None) => p { "No reports." },
                Ok(Some((summary, data))) => {
                    p { (summary.successful_sessions) " successful and " (summary.failed_sessions)
                        " failed sessions (" (percent(summary.failure_rate)) " failed) in "
                        (summary.reports) " report(s) from " (summary.organizations.len()) " organization(s)." }
                    figure {
                        (chart::sessions_chart(&chart::days(&data.reports, v.since, v.now)))
                        figcaption { "Sessions per day (UTC): successful in green, failed in red on top." }
                    }
                    div class="columns" {
                        (counts_table("Failures by result type", "Result type", &summary.failures_by_result_type))
                        (counts_table("Failures by MX host", "MX host", &summary.failures_by_mx))
                    }
                    (reports_table(&data.reports))
                }
            }
        }
    }
}

fn counts_table(
    title: &str,
    what: &str,
    counts: &std::collections::BTreeMap<String, u64>,
) -> Markup {
    html! {
        div { table {
            caption { (title) }
            thead { tr { th scope="col" { (what) } th scope="col" class="num" { "Sessions" } } }
            tbody {
                @for (k, n) in counts { tr { td { (k) } td class="num" { (n) } } }
                @if counts.is_empty() { tr { td colspan="2" { "none" } } }
            }
        } }
    }
}

pub(super) fn reports_table(reports: &[ReportSpan]) -> Markup {
    html! {
        div class="scroll" { table class="reports" {
            caption { "Reports (newest first)" }
            thead { tr {
                th scope="col" { "Organization" } th scope="col" { "Period" }
                th scope="col" class="num" { "Successful" } th scope="col" class="num" { "Failed" }
                th scope="col" { "Flags" } th scope="col" { "JSON" }
            } }
            tbody { @for r in reports.iter().rev() {
                @let link = format!("/ui/reports/{}?id={}", r.digest, encode(&r.report_id));
                tr {
                    td { (r.organization) }
                    td { (period(r)) }
                    td class="num" { (r.successful) }
                    td class="num" { (r.failed) }
                    td {
                        @if r.conflict { (badge("bad", "conflict")) " " }
                        @if r.submitter_mismatch { (badge("warn", "submitter mismatch")) }
                    }
                    td { a href=(link) { "view" } " · "
                        a href=(format!("/ui/reports/{}.json?id={}", r.digest, encode(&r.report_id))) download { "download" } }
                }
            } }
        } }
    }
}

/// A daily report's day, or the first and last day of a longer one (the end is exclusive).
fn period(r: &ReportSpan) -> String {
    let last = (r.end - time::Duration::seconds(1))
        .date()
        .max(r.start.date());
    match last == r.start.date() {
        true => r.start.date().to_string(),
        false => format!("{} – {last}", r.start.date()),
    }
}
