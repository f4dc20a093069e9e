//! Counters and histograms the daemon's parts increment: the listener's connection and
//! response counts, per-tenant requests, request durations, reloads and ACME orders.
//!
//! Every part is handed these at construction and only writes them; the metrics module is
//! the one reader. Nothing here knows the snapshot, the reloader or the exposition format.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::util::hash::FastMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Upper bounds of the request duration buckets, seconds. A policy response is built from
/// pre-rendered bytes in microseconds; the upper buckets catch a stalled runtime.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01, 0.05, 0.25,
    1.0,
];

/// Status classes counted per tenant: `1xx` … `5xx`.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Label set type of the counters kept in [`Metrics`]: fixed keys and values from a fixed set.
pub type StaticLabels = Vec<(&'static str, &'static str)>;

/// Responses by status class for one tenant.
#[derive(Debug, Default)]
pub struct ClassCounters([AtomicU64; 5]);

impl ClassCounters {
    /// Counts one response with `status`.
    pub fn count(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.0[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts, `1xx` first.
    pub fn values(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Requests per tenant. A connection looks its tenant's counters up once (its SNI names a
/// configured tenant, or the handshake was refused); each request then costs one atomic add.
#[derive(Debug, Default)]
pub struct TenantRequests {
    by_domain: RwLock<FastMap<String, Arc<ClassCounters>>>,
    /// Requests on a connection whose tenant is gone from the configuration; exported with
    /// `domain=""`.
    unknown: Arc<ClassCounters>,
}

impl TenantRequests {
    /// The counters of `domain` (a configured tenant domain), or the shared unknown counters.
    pub fn for_domain(&self, domain: Option<&str>) -> Arc<ClassCounters> {
        let Some(domain) = domain else {
            return self.unknown.clone();
        };
        if let Some(c) = self
            .by_domain
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
        {
            return c.clone();
        }
        self.by_domain
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(domain.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets the counters of removed tenants, so the series set follows the configuration.
    /// Costs the number removed (a swap used to look at every counted tenant).
    pub fn forget<'a>(&self, domains: impl IntoIterator<Item = &'a str>) {
        let mut map = self.by_domain.write().unwrap_or_else(|e| e.into_inner());
        for domain in domains {
            map.remove(domain);
        }
        crate::util::hash::shrink_sparse(&mut map);
    }

    /// The counts summed over every tenant and the unknown counters.
    pub fn totals(&self) -> [u64; 5] {
        let map = self.by_domain.read().unwrap_or_else(|e| e.into_inner());
        let mut sum = self.unknown.values();
        for counters in map.values() {
            for (total, n) in sum.iter_mut().zip(counters.values()) {
                *total += n;
            }
        }
        sum
    }

    /// Every tenant's counts sorted by domain, the unknown counters as domain `""`.
    pub fn values(&self) -> Vec<(String, [u64; 5])> {
        let map = self.by_domain.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = map.iter().map(|(d, c)| (d.clone(), c.values())).collect();
        list.push((String::new(), self.unknown.values()));
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }
}

/// A lock-free histogram of request durations over [`DURATION_BUCKETS`].
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts). The buckets are not cumulative:
    /// prometheus-client's encoder accumulates them (and a parser checked that it does).
    pub fn values(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
        for (i, slot) in self.buckets.iter().enumerate() {
            let n = slot.load(Ordering::Relaxed);
            count += n;
            let le = DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, n));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// Event counters other parts of the daemon increment.
#[derive(Debug, Default)]
pub struct Metrics {
    acme_orders: Family<StaticLabels, Counter>,
    reloads: Family<StaticLabels, Counter>,
    dns: DnsMetrics,
}

/// What the built-in DNS server counts: answers by query type and rcode (both from fixed
/// sets, never the query name), and the zone's serial and TXT sets.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    /// Answers by `type` and `rcode`.
    pub queries: Family<StaticLabels, Counter>,
    /// UDP answers held back by the per-source rate limit, by `action` (`slip`, `drop`).
    pub limited: Family<StaticLabels, Counter>,
    /// The SOA serial.
    pub serial: Gauge,
    /// TXT record sets the zone answers.
    pub records: Gauge,
    /// RFC 2136 tries (`dns_update:`) by `result`: an rcode, `unchanged` or `failed`.
    pub updates: Family<StaticLabels, Counter>,
    /// Records written by RFC 2136, by `state` (`published`, `pending`, `error`).
    pub update_state: Family<StaticLabels, Gauge>,
}

/// How a reload ended, for `mta_stsd_reloads_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// Changes applied, no configuration errors.
    Success,
    /// Nothing changed (e.g. an editor touched a file); nothing swapped.
    Unchanged,
    /// Some file has errors: the rest applied and the broken file's last good tenants stay.
    Error,
}

impl ReloadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Error => "error",
        }
    }
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one finished ACME order by `result` (`"success"` or `"failure"`): a
    /// `&'static str`, so the label set stays fixed at compile time.
    pub fn acme_order(&self, result: &'static str) {
        self.acme_orders
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// Creates both ACME order series at zero, so `increase()` sees the first failure and the
    /// family exists from the start when the issuer is ACME.
    pub fn init_acme_orders(&self) {
        for result in ["success", "failure"] {
            let _ = self.acme_orders.get_or_create(&vec![("result", result)]);
        }
    }

    /// Counts one reload. (The time of the last clean one is the reloader's
    /// `ReloadStatus::last_success`, its one owner.)
    pub fn reload(&self, result: ReloadResult) {
        self.reloads
            .get_or_create(&vec![("result", result.as_str())])
            .inc();
    }

    /// Counts one DNS answer; `qtype` and `rcode` are from fixed sets (see `dns`).
    pub fn dns_query(&self, qtype: &'static str, rcode: &'static str) {
        self.dns
            .queries
            .get_or_create(&vec![("type", qtype), ("rcode", rcode)])
            .inc();
    }

    /// Counts one UDP answer the rate limit held back: `"slip"` or `"drop"`.
    pub fn dns_limited(&self, action: &'static str) {
        self.dns
            .limited
            .get_or_create(&vec![("action", action)])
            .inc();
    }

    /// Records the zone's serial and size after a change.
    pub fn dns_zone(&self, serial: u32, records: usize) {
        self.dns.serial.set(i64::from(serial));
        self.dns
            .records
            .set(i64::try_from(records).unwrap_or(i64::MAX));
    }

    /// Counts one RFC 2136 try; `result` is from a fixed set (see `dnsupdate::plan`).
    pub fn dns_update(&self, result: &'static str) {
        self.dns
            .updates
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// Sets how many RFC 2136 records are in each state.
    pub fn dns_update_states(&self, counts: &[(&'static str, usize)]) {
        for (state, n) in counts {
            self.dns
                .update_state
                .get_or_create(&vec![("state", *state)])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// The DNS server's metrics, for the exporter to register.
    pub fn dns(&self) -> &DnsMetrics {
        &self.dns
    }

    /// The ACME order counters, for the exporter to register.
    pub fn acme_orders_family(&self) -> Family<StaticLabels, Counter> {
        self.acme_orders.clone()
    }

    /// The reload counters, for the exporter to register.
    pub fn reloads_family(&self) -> Family<StaticLabels, Counter> {
        self.reloads.clone()
    }
}

/// Counters the listener keeps; the metrics endpoint reads them.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections currently open.
    pub open_connections: AtomicUsize,
    /// Completed handshakes.
    pub handshakes_ok: AtomicU64,
    /// Handshakes aborted because SNI was missing or named no tenant.
    pub handshakes_unknown_sni: AtomicU64,
    /// Handshakes aborted because the tenant has no certificate yet.
    pub handshakes_no_certificate: AtomicU64,
    /// Handshakes that failed for any other reason (bad TLS, timeout, reset).
    pub handshakes_error: AtomicU64,
    /// Responses sent, by status class 1xx..5xx (index 0 unused).
    pub responses: [AtomicU64; 6],
    /// Responses per tenant and status class.
    pub tenant_requests: TenantRequests,
    /// Time to answer a request.
    pub request_duration: DurationHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_secs(3));
        let (sum, count, buckets) = h.values();
        assert_eq!(count, 3);
        assert!((sum - 3.000_035).abs() < 1e-9);
        assert_eq!(buckets[0], (0.000_01, 1));
        assert_eq!(buckets[1], (0.000_025, 0));
        assert_eq!(buckets[2], (0.000_05, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
        assert_eq!(buckets.last().unwrap().1, 1);
        assert!(buckets.last().unwrap().0.is_infinite());
    }

    #[test]
    fn class_counters() {
        let c = ClassCounters::default();
        c.count(200);
        c.count(404);
        c.count(421);
        c.count(999);
        assert_eq!(c.values(), [0, 1, 0, 2, 1]);
    }

    #[test]
    fn tenant_counters_are_shared_and_pruned() {
        let r = TenantRequests::default();
        r.for_domain(Some("a.example")).count(200);
        r.for_domain(Some("a.example")).count(200);
        r.for_domain(None).count(404);
        r.for_domain(Some("b.example")).count(200);
        r.forget(["b.example", "never.example"]);
        let v = r.values();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], (String::new(), [0, 0, 0, 1, 0]));
        assert_eq!(v[1], ("a.example".to_owned(), [0, 2, 0, 0, 0]));
        r.forget(["a.example"]);
        assert_eq!(r.values().len(), 1);
    }
}
