//! `/ui/`: every tenant in one table, filtered, sorted and paged on the server.
//!
//! In domain order the page is the API list's own page ([`super::super::list::page_where`],
//! cursor after the last domain); sorted by expiry or failure rate, the filtered tenants are
//! ranked and cut by page number. Either way one request walks the tenant table once, and
//! the store is asked once for the window's totals (only when a filter or sort needs them)
//! and once per shown tenant for its verdict.

use std::sync::Arc;

use maud::{Markup, html};

use super::super::list::{self, ListQuery};
use super::super::{AdminState, gated_summary};
use super::layout::{self, Section, badge, percent};
use super::{bad_request, encode, html_answer, query_pairs};
use crate::certs::{CertState, CertStatus};
use crate::config::Tenant;
use crate::tlsrpt::TenantSummary;
use crate::util::hash::FastMap;
use crate::validate::Status;

/// Tenants per page without `limit`.
const PAGE_SIZE: usize = 50;

/// Which tenants to show besides the API's filters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Show {
    All,
    NotReady,
    /// Certificate not valid, missing, or expiring within `PROBLEM_EXPIRY_DAYS`.
    Expiring,
    /// TLS-RPT failures in the verdict window, or a validation check in error.
    Failing,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sort {
    Domain,
    /// Soonest certificate expiry first (none at all before any).
    Expiry,
    /// Highest TLS-RPT failure rate first.
    Failures,
}

/// The parsed query of one list page.
#[derive(Debug)]
struct PageQuery {
    list: ListQuery,
    show: Show,
    sort: Sort,
    /// 0-based page number, for the sorts other than by domain.
    page: usize,
}

impl PageQuery {
    fn parse(query: Option<&str>) -> Result<PageQuery, String> {
        let mut out = PageQuery {
            list: ListQuery {
                limit: PAGE_SIZE,
                ..ListQuery::default()
            },
            show: Show::All,
            sort: Sort::Domain,
            page: 0,
        };
        for (key, value) in query_pairs(query)? {
            match (key.as_str(), value.as_str()) {
                ("show", "all") => out.show = Show::All,
                ("show", "not-ready") => out.show = Show::NotReady,
                ("show", "expiring") => out.show = Show::Expiring,
                ("show", "failing") => out.show = Show::Failing,
                ("show", other) => {
                    return Err(format!(
                        "show: {other:?} is not all, not-ready, expiring or failing"
                    ));
                }
                ("sort", "domain") => out.sort = Sort::Domain,
                ("sort", "expiry") => out.sort = Sort::Expiry,
                ("sort", "failures") => out.sort = Sort::Failures,
                ("sort", other) => {
                    return Err(format!("sort: {other:?} is not domain, expiry or failures"));
                }
                ("page", n) => {
                    out.page = n
                        .parse()
                        .map_err(|_| format!("page: {n:?} is not a number"))?;
                }
                ("limit" | "cursor" | "mode" | "ready" | "q", _) => out.list.set(&key, value)?,
                _ => return Err(format!("unknown parameter {key:?}")),
            }
        }
        if out.show == Show::NotReady {
            out.list.ready = Some(false);
        }
        Ok(out)
    }

    fn needs_totals(&self) -> bool {
        self.show == Show::Failing || self.sort == Sort::Failures
    }

    /// The query string of this view with `extra` (`cursor=…` or `page=…`) added.
    fn link(&self, extra: &str) -> String {
        let mut parts = Vec::new();
        if let Some(q) = self.list.q.as_ref().and_then(|q| q.first()) {
            parts.push(format!("q={}", encode(q)));
        }
        if let Some(m) = self.list.mode {
            parts.push(format!("mode={m}"));
        }
        parts.push(format!("show={}", show_value(self.show)));
        parts.push(format!("sort={}", sort_value(self.sort)));
        if self.list.limit != PAGE_SIZE {
            parts.push(format!("limit={}", self.list.limit));
        }
        parts.push(extra.to_owned());
        format!("/ui/?{}", parts.join("&"))
    }
}

fn show_value(show: Show) -> &'static str {
    match show {
        Show::All => "all",
        Show::NotReady => "not-ready",
        Show::Expiring => "expiring",
        Show::Failing => "failing",
    }
}

fn sort_value(sort: Sort) -> &'static str {
    match sort {
        Sort::Domain => "domain",
        Sort::Expiry => "expiry",
        Sort::Failures => "failures",
    }
}

/// One tenant's row.
struct Row {
    tenant: Arc<Tenant>,
    ready: bool,
    cert: Option<CertStatus>,
    validation: Option<Status>,
    /// The verdict-window summary, or why the store could not give it.
    summary: Result<Option<TenantSummary>, String>,
}

/// What one list page shows.
struct Listing {
    rows: Vec<Row>,
    /// Tenants that pass the filters, on every page.
    total: usize,
    /// Tenants served.
    tenants: usize,
    /// The next page's query, when there is one.
    next: Option<String>,
    /// The previous page's query (page-number sorts only).
    prev: Option<String>,
    /// Why TLS-RPT numbers are missing, when the store is unavailable.
    store_error: Option<String>,
    /// Whether the validation watchdog runs.
    watchdog: bool,
}

/// `GET /ui/`.
pub async fn page(state: &Arc<AdminState>, query: Option<&str>) -> super::Answer {
    let query = match PageQuery::parse(query) {
        Ok(q) => q,
        Err(why) => return bad_request(&why),
    };
    let st = state.clone();
    match tokio::task::spawn_blocking(move || {
        let listing = listing(&st, &query);
        render(&query, &listing, crate::util::unix_now())
    })
    .await
    {
        Ok(page) => html_answer(http::StatusCode::OK, &page),
        Err(_) => bad_request("The tenant list could not be built."),
    }
}

/// Failed and total sessions per tenant over the verdict window, from one grouped query.
type Totals = FastMap<String, (u64, u64)>;

fn window_totals(state: &AdminState) -> Result<Totals, String> {
    let now = time::OffsetDateTime::now_utc();
    let rows = state
        .tlsrpt
        .window_totals(now, state.tlsrpt.metrics_window())
        .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|t| (t.tenant, (t.failed, t.successful + t.failed)))
        .collect())
}

/// The failure rate a tenant is ranked by.
fn failure_rate(totals: &Totals, domain: &str) -> f64 {
    match totals.get(domain) {
        Some(&(failed, total)) if total > 0 => failed as f64 / total as f64,
        _ => 0.0,
    }
}

/// Blocking: reads the store.
fn listing(state: &AdminState, query: &PageQuery) -> Listing {
    let snapshot = state.registry.load();
    let now = crate::util::unix_now();
    let (totals, store_error) = match query.needs_totals() {
        true => match window_totals(state) {
            Ok(t) => (t, None),
            Err(e) => (Totals::default(), Some(e)),
        },
        false => (Totals::default(), None),
    };
    let failing_checks = match query.show {
        Show::Failing => state.validation.failing(),
        _ => Default::default(),
    };
    let ready = |t: &Tenant| crate::publish::is_ready(&snapshot, &state.board, t, now);
    let keep = |t: &Tenant| match query.show {
        Show::All | Show::NotReady => true,
        Show::Expiring => state
            .board
            .with_status(&t.host, |s| crate::metrics::cert_problem(s, now)),
        Show::Failing => {
            failing_checks.contains(&t.domain) || totals.get(&t.domain).is_some_and(|f| f.0 > 0)
        }
    };
    let keep_ref: Option<&dyn Fn(&Tenant) -> bool> = match query.show {
        Show::All | Show::NotReady => None,
        _ => Some(&keep),
    };
    let (tenants, total, next, prev) = match query.sort {
        Sort::Domain => {
            let page = list::page_where(snapshot.sorted(), &query.list, &ready, keep_ref);
            let next = page.next_cursor.map(|c| query.link(&format!("cursor={c}")));
            (
                page.tenants.into_iter().cloned().collect(),
                page.total,
                next,
                None,
            )
        }
        sort => ranked(state, &snapshot, query, sort, &totals, &|t| {
            query.list.matches(t) && query.list.ready.is_none_or(|r| ready(t) == r) && keep(t)
        }),
    };
    let rows = tenants.into_iter().map(|t| row(state, t, &ready)).collect();
    let first_error = |rows: &Vec<Row>| rows.iter().find_map(|r| r.summary.as_ref().err().cloned());
    let store_error = store_error.or_else(|| first_error(&rows));
    Listing {
        rows,
        total,
        tenants: snapshot.len(),
        next,
        prev,
        store_error,
        watchdog: state.reloader.running().validation.enabled,
    }
}

/// The tenants of one page in `sort` order, with the links to the pages around it.
fn ranked(
    state: &AdminState,
    snapshot: &crate::registry::Snapshot,
    query: &PageQuery,
    sort: Sort,
    totals: &Totals,
    passes: &dyn Fn(&Tenant) -> bool,
) -> (Vec<Arc<Tenant>>, usize, Option<String>, Option<String>) {
    let mut picked: Vec<&Arc<Tenant>> = snapshot.sorted().iter().filter(|t| passes(t)).collect();
    match sort {
        Sort::Expiry => state.board.with_all(|certs| {
            // No certificate sorts first: it is the most urgent.
            let expiry = |t: &Tenant| {
                certs
                    .get(&t.host)
                    .and_then(|s| s.cert.as_ref())
                    .map_or(i64::MIN, |c| c.not_after)
            };
            picked.sort_by_key(|t| expiry(t));
        }),
        _ => picked.sort_by(|a, b| {
            failure_rate(totals, &b.domain).total_cmp(&failure_rate(totals, &a.domain))
        }),
    }
    let total = picked.len();
    let start = query.page.saturating_mul(query.list.limit);
    let tenants = picked
        .into_iter()
        .skip(start)
        .take(query.list.limit)
        .cloned()
        .collect();
    let next =
        (start + query.list.limit < total).then(|| query.link(&format!("page={}", query.page + 1)));
    let prev = (query.page > 0).then(|| query.link(&format!("page={}", query.page - 1)));
    (tenants, total, next, prev)
}

fn row(state: &AdminState, tenant: Arc<Tenant>, ready: &dyn Fn(&Tenant) -> bool) -> Row {
    let since = time::OffsetDateTime::now_utc() - state.tlsrpt.metrics_window();
    let summary = gated_summary(
        &state.tlsrpt,
        &state.validation,
        &tenant.domain,
        since,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string());
    Row {
        ready: ready(&tenant),
        cert: state.board.get(&tenant.host),
        validation: state.validation.get(&tenant.domain).map(|r| r.status()),
        summary,
        tenant,
    }
}

fn render(query: &PageQuery, listing: &Listing, now: i64) -> Markup {
    let shown = listing.rows.len();
    let body = html! {
        (filters(query))
        p class="summary" role="status" {
            (shown) " shown of " (listing.total) " matching (" (listing.tenants) " tenants served)."
        }
        @if let Some(why) = &listing.store_error {
            p class="problem" { "TLS-RPT figures unavailable: " (why) }
        }
        div class="scroll" {
            table class="tenants" {
                caption { "Tenants; TLS-RPT figures over the verdict window" }
                thead { tr {
                    th scope="col" { "Domain" } th scope="col" { "Mode" } th scope="col" { "Ready" }
                    th scope="col" { "Served id" } th scope="col" { "Certificate" }
                    th scope="col" { "Validation" } th scope="col" class="num" { "Sessions" }
                    th scope="col" class="num" { "Failure rate" } th scope="col" { "Verdict" }
                } }
                tbody { @for r in &listing.rows { (tenant_row(r, now, listing.watchdog)) } }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if let Some(prev) = &listing.prev { a rel="prev" href=(prev) { "← Previous page" } }
            @if let Some(next) = &listing.next { a rel="next" href=(next) { "Next page →" } }
        }
    };
    layout::page("Tenants", Section::Tenants, body)
}

fn filters(query: &PageQuery) -> Markup {
    let q = query
        .list
        .q
        .as_ref()
        .and_then(|q| q.first())
        .cloned()
        .unwrap_or_default();
    let mode = query.list.mode.map(|m| m.as_str()).unwrap_or("");
    let option = |value: &'static str, label: &'static str, current: &str| {
        html! { option value=(value) selected[value == current] { (label) } }
    };
    html! {
        form class="filters" method="get" action="/ui/" role="search" {
            label { "Search " input type="search" name="q" value=(q) placeholder="domain"; }
            label { "Mode " select name="mode" {
                (option("", "any", mode)) (option("enforce", "enforce", mode))
                (option("testing", "testing", mode)) (option("none", "none", mode))
            } }
            label { "Show " select name="show" {
                @let s = show_value(query.show);
                (option("all", "all", s)) (option("not-ready", "not ready", s))
                (option("expiring", "certificate expiring or failing", s))
                (option("failing", "TLS-RPT or validation failing", s))
            } }
            label { "Sort " select name="sort" {
                @let s = sort_value(query.sort);
                (option("domain", "domain", s)) (option("expiry", "certificate expiry", s))
                (option("failures", "failure rate", s))
            } }
            button type="submit" { "Apply" }
        }
    }
}

fn tenant_row(r: &Row, now: i64, watchdog: bool) -> Markup {
    let t = &r.tenant;
    html! {
        tr {
            th scope="row" { a href={"/ui/tenants/" (t.domain)} { (t.domain) } }
            td { (t.policy.mode.as_str()) @if t.retiring.is_some() { " " (badge("warn", "retiring")) } }
            td { @if r.ready { (badge("good", "ready")) } @else { (badge("bad", "not ready")) } }
            td { code { (t.policy.id) } }
            td { (cert_cell(r.cert.as_ref(), now)) }
            td { (validation_badge(r.validation, watchdog)) }
            @match &r.summary {
                Ok(Some(s)) => {
                    td class="num" { (s.successful_sessions + s.failed_sessions) }
                    td class="num" { (percent(s.failure_rate)) }
                    td { (verdict_badge(s)) }
                }
                _ => { td class="num" { "–" } td class="num" { "–" } td { "–" } }
            }
        }
    }
}

/// State and days left, e.g. "valid, 89 days".
pub fn cert_cell(cert: Option<&CertStatus>, now: i64) -> Markup {
    let Some(c) = cert else {
        return badge("bad", "none");
    };
    let kind = match c.state {
        CertState::Valid => "good",
        CertState::Renewing | CertState::Pending | CertState::DnsNotReady => "warn",
        CertState::Backoff | CertState::Error => "bad",
    };
    let days = c
        .cert
        .as_ref()
        .map(|i| (i.not_after - now).div_euclid(86_400));
    html! {
        (badge(kind, c.state.as_str()))
        @if let Some(d) = days { " " span class="days" { (d) " days" } }
    }
}

/// ok / warning / error, "not run" before the watchdog's first look, "off" without one.
pub fn validation_badge(status: Option<Status>, watchdog: bool) -> Markup {
    match status {
        Some(Status::Ok) => badge("good", "ok"),
        Some(Status::Warning) => badge("warn", "warning"),
        Some(Status::Error) => badge("bad", "error"),
        None if watchdog => badge("neutral", "not run"),
        None => badge("neutral", "off"),
    }
}

/// The verdict's label in a badge coloured by how urgent it is.
pub fn verdict_badge(s: &TenantSummary) -> Markup {
    use crate::tlsrpt::summary::VerdictStatus as V;
    let kind = match s.verdict.status {
        V::ReadyToEnforce | V::Healthy => "good",
        V::NotReady | V::NoReports => "warn",
        V::Warning => "bad",
        V::NotApplicable => "neutral",
    };
    badge(kind, s.verdict.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_queries_name_what_is_wrong() {
        let q = PageQuery::parse(Some("show=not-ready&sort=expiry&page=2&q=Ex&mode=")).unwrap();
        assert_eq!(q.show, Show::NotReady);
        assert_eq!(q.list.ready, Some(false));
        assert_eq!((q.sort, q.page, q.list.limit), (Sort::Expiry, 2, PAGE_SIZE));
        assert_eq!(q.list.mode, None, "an empty field means any");
        assert_eq!(
            q.link("page=3"),
            "/ui/?q=ex&show=not-ready&sort=expiry&page=3"
        );
        for (bad, needle) in [
            ("show=x", "show: \"x\""),
            ("sort=x", "sort: \"x\""),
            ("page=x", "page: \"x\""),
            ("mode=x", "mode: \"x\""),
            ("nope=1", "unknown parameter \"nope\""),
        ] {
            let err = PageQuery::parse(Some(bad)).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
