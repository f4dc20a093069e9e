//! `GET /api/v1/tenants?limit=&cursor=&mode=&ready=&q=`: the tenant list in pages.
//!
//! One answer of 1 005 tenants was 1.5 MB; at a million tenants one answer would be a gigabyte.
//! Pages follow the domain order, and the cursor is the last domain of the previous page, so
//! paging stays correct across reloads: a tenant added behind the cursor shows up on a later
//! page, one removed is skipped, nothing is returned twice.

use std::sync::Arc;

use crate::config::Tenant;
use crate::policy::Mode;

/// Tenants per page without `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// The parsed query of one list request.
#[derive(Debug, PartialEq)]
pub struct ListQuery {
    /// Tenants per page.
    pub limit: usize,
    /// Start after this domain (A-label).
    pub cursor: Option<String>,
    /// Only tenants in this mode.
    pub mode: Option<Mode>,
    /// Only tenants that are (or are not) ready.
    pub ready: Option<bool>,
    /// Only domains containing this text (lowercase; a U-label is matched as its A-label too).
    pub q: Option<Vec<String>>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: DEFAULT_LIMIT,
            cursor: None,
            mode: None,
            ready: None,
            q: None,
        }
    }
}

impl ListQuery {
    /// Parses `query` (already split from the path); an error names the parameter.
    pub fn parse(query: Option<&str>) -> Result<ListQuery, String> {
        let mut out = ListQuery::default();
        for (key, value) in query_pairs(query)? {
            out.set(&key, value)?;
        }
        Ok(out)
    }

    /// Sets one parameter; an error names it. The admin pages parse their own parameters
    /// and hand these on.
    pub(super) fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        match key {
            "limit" => {
                self.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!("limit: {value:?} is not a number from 1 to {MAX_LIMIT}")
                    })?;
            }
            "cursor" => self.cursor = Some(value.to_ascii_lowercase()),
            "mode" => {
                self.mode = Some(match value.as_str() {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err(format!("mode: {value:?} is not enforce, testing or none")),
                });
            }
            "ready" => {
                self.ready = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("ready: {value:?} is not true or false")),
                });
            }
            "q" => self.q = Some(search_terms(&value)),
            _ => {
                return Err(format!(
                    "unknown parameter {key:?} (known: limit, cursor, mode, ready, q)"
                ));
            }
        }
        Ok(())
    }

    /// Whether `tenant` passes every filter but readiness, which costs a board lookup.
    pub(super) fn matches(&self, tenant: &Tenant) -> bool {
        self.mode.is_none_or(|m| tenant.policy.mode == m)
            && self
                .q
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| tenant.domain.contains(t.as_str())))
    }
}

/// The text as typed (lowercased) and, when it converts, as A-labels: `müller` finds
/// `xn--mller-kva.example`.
fn search_terms(value: &str) -> Vec<String> {
    let lower = value.trim().to_lowercase();
    let mut terms = vec![lower.clone()];
    if let Ok(ascii) = idna::domain_to_ascii(&lower)
        && ascii != lower
        && !ascii.is_empty()
    {
        terms.push(ascii);
    }
    terms
}

/// One page of tenants.
pub struct Page<'a> {
    /// The tenants of this page, in domain order.
    pub tenants: Vec<&'a Arc<Tenant>>,
    /// Every tenant that passes the filters, on all pages.
    pub total: usize,
    /// The cursor of the next page, when there is one.
    pub next_cursor: Option<String>,
}

/// The page of `sorted` (tenants sorted by domain) that `query` asks for; `ready` tells
/// whether a tenant is ready. O(tenants) with filters, as every filter needs a full count.
pub fn page<'a>(
    sorted: &'a [Arc<Tenant>],
    query: &ListQuery,
    ready: &dyn Fn(&Tenant) -> bool,
) -> Page<'a> {
    page_where(sorted, query, ready, None)
}

/// [`page`] with one more filter, `keep` (the admin pages' "expiring" and "failing").
pub fn page_where<'a>(
    sorted: &'a [Arc<Tenant>],
    query: &ListQuery,
    ready: &dyn Fn(&Tenant) -> bool,
    keep: Option<&dyn Fn(&Tenant) -> bool>,
) -> Page<'a> {
    let start = match &query.cursor {
        Some(cursor) => sorted.partition_point(|t| t.domain.as_str() <= cursor.as_str()),
        None => 0,
    };
    let passes = |t: &Arc<Tenant>| {
        query.matches(t) && query.ready.is_none_or(|r| ready(t) == r) && keep.is_none_or(|k| k(t))
    };
    let unfiltered =
        query.mode.is_none() && query.ready.is_none() && query.q.is_none() && keep.is_none();
    let total = if unfiltered {
        sorted.len()
    } else {
        sorted.iter().filter(|t| passes(t)).count()
    };
    let mut tenants = Vec::with_capacity(query.limit.min(sorted.len()));
    let mut rest = sorted[start..].iter().filter(|t| passes(t));
    tenants.extend(rest.by_ref().take(query.limit));
    let next_cursor = match (rest.next(), tenants.last()) {
        (Some(_), Some(last)) => Some(last.domain.clone()),
        _ => None,
    };
    Page {
        tenants,
        total,
        next_cursor,
    }
}

/// `k=v&…` of a query string, decoded (`+` is a space in form submissions), in order; an
/// error names the parameter that is not UTF-8.
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&raw.replace('+', " "))
            .decode_utf8()
            .map_err(|_| format!("{key}: not UTF-8"))?
            .into_owned();
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Snapshot;

    fn snapshot() -> Snapshot {
        let yaml: String = ["c", "a", "e", "b", "d", "xn--mller-kva"]
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mode = if i % 2 == 0 { "enforce" } else { "testing" };
                format!("- {{domain: {d}.example, mode: {mode}, mx: [mx.example]}}\n")
            })
            .collect();
        Snapshot::from_yaml(&yaml)
    }

    fn domains(page: &Page<'_>) -> Vec<String> {
        page.tenants.iter().map(|t| t.domain.clone()).collect()
    }

    #[test]
    fn pages_follow_the_domain_order_and_end() {
        let s = snapshot();
        let mut query = ListQuery::parse(Some("limit=2")).unwrap();
        let mut seen = Vec::new();
        loop {
            let page = page(s.sorted(), &query, &|_| true);
            assert_eq!(page.total, 6);
            assert!(page.tenants.len() <= 2);
            seen.extend(domains(&page));
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["a", "b", "c", "d", "e", "xn--mller-kva"].map(|d| format!("{d}.example"))
        );
        // The last page ends exactly: no empty page after it.
        let last = page(
            s.sorted(),
            &ListQuery::parse(Some("limit=6")).unwrap(),
            &|_| true,
        );
        assert_eq!(last.next_cursor, None);
        assert_eq!(last.tenants.len(), 6);
    }

    #[test]
    fn a_cursor_that_is_no_longer_a_tenant_still_continues_after_it() {
        let s = snapshot();
        let q = ListQuery::parse(Some("cursor=bb.example&limit=1")).unwrap();
        let p = page(s.sorted(), &q, &|_| true);
        assert_eq!(domains(&p), ["c.example"]);
        assert_eq!(p.next_cursor.as_deref(), Some("c.example"));
    }

    #[test]
    fn filters_combine_and_count_every_page() {
        let s = snapshot();
        let q = ListQuery::parse(Some("mode=testing&limit=1")).unwrap();
        let p = page(s.sorted(), &q, &|_| true);
        assert_eq!(p.total, 3);
        assert_eq!(domains(&p), ["a.example"]);
        let not_ready = |t: &Tenant| t.domain != "b.example";
        let q = ListQuery::parse(Some("mode=testing&ready=false")).unwrap();
        assert_eq!(domains(&page(s.sorted(), &q, &not_ready)), ["b.example"]);
        let q = ListQuery::parse(Some("q=M%C3%BCller")).unwrap();
        assert_eq!(
            domains(&page(s.sorted(), &q, &|_| true)),
            ["xn--mller-kva.example"]
        );
        let q = ListQuery::parse(Some("q=E.EX")).unwrap();
        assert_eq!(domains(&page(s.sorted(), &q, &|_| true)), ["e.example"]);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, needle) in [
            ("limit=0", "limit: \"0\" is not a number from 1 to 1000"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("mode=strict", "mode: \"strict\""),
            ("ready=yes", "ready: \"yes\""),
            ("page=2", "unknown parameter \"page\""),
            ("q=%FF", "q: not UTF-8"),
        ] {
            let err = ListQuery::parse(Some(query)).unwrap_err();
            assert!(err.contains(needle), "{query}: {err}");
        }
        assert_eq!(ListQuery::parse(None).unwrap(), ListQuery::default());
    }
}
