//! Prometheus metrics, served on the admin listener at `/metrics`.
//!
//! Two kinds of data:
//! - event counters kept in [`crate::stats`] ([`Metrics`]: reloads, ACME orders; and on the
//!   request path [`crate::stats::TenantRequests`], [`crate::stats::DurationHistogram`], inside
//!   [`crate::stats::Stats`]), which this module only reads;
//! - per-tenant state (policy info, certificate expiry and state, readiness, tenants by mode,
//!   configuration errors) produced at scrape time by [`Exporter`] from the live snapshot, the
//!   certificate board and the reloader, so 100 000 tenants cost nothing between scrapes;
//!   which tenants get series of their own is `metrics.per_tenant` ([`select`]).
//!
//! Labels only ever come from configuration (tenant domains, file names) or fixed sets, never
//! from request input. The output is OpenMetrics text; [`to_prometheus_text`] rewrites it for
//! scrapers that ask for the classic `text/plain; version=0.0.4` format (and `promtool`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::certs::{CertBoard, CertState, CertStatus};
use crate::config::Tenant;
use crate::policy::Mode;
use crate::registry::Registry;
use crate::reload::{ReloadStatus, Reloader};
use crate::stats::{CLASSES, Metrics, Stats};

mod process;
mod select;

use crate::util::hash::FastMap;
use select::Chosen;

/// The version and commit this binary was built from (`build.rs` embeds the commit).
const BUILD: [(&str, &str); 3] = [
    ("version", crate::util::build::VERSION),
    ("commit", crate::util::build::COMMIT),
    ("dirty", crate::util::build::DIRTY_LABEL),
];

/// `Content-Type` of the OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic Prometheus text exposition.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric on demand.
pub struct Exporter {
    registry: prometheus_client::registry::Registry,
}

/// What the scrape-time collector reads.
#[derive(Clone)]
pub struct Sources {
    /// Event counters.
    pub metrics: Arc<Metrics>,
    /// Live tenant table.
    pub registry: Arc<Registry>,
    /// Certificate status per host.
    pub board: Arc<CertBoard>,
    /// Listener counters.
    pub stats: Arc<Stats>,
    /// Reload status (errors per file, restart needed).
    pub reloader: Arc<Reloader>,
    /// TLS-RPT intake counters and stored reports, when the daemon has them.
    pub tlsrpt: Option<Arc<crate::tlsrpt::TlsRpt>>,
    /// The watchdog's validation results, when the daemon has them.
    pub validation: Option<Arc<crate::validate::Board>>,
    /// Cluster mode's role and replicas (`store: postgres:`).
    pub cluster: Option<Arc<crate::pgstore::cluster::ClusterStatus>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

impl Exporter {
    /// An exporter over `sources`.
    pub fn new(sources: Sources) -> Self {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            "mta_stsd_acme_orders",
            "ACME orders finished, by result",
            sources.metrics.acme_orders_family(),
        );
        registry.register(
            "mta_stsd_reloads",
            "Configuration loads (the first at start, then every reload), by result (error: some file has errors; the rest applied)",
            sources.metrics.reloads_family(),
        );
        registry.register(
            "mta_stsd_build",
            "The version and commit mta-stsd was built from, and whether the tree had uncommitted changes (always 1)",
            prometheus_client::metrics::info::Info::new(BUILD),
        );
        if sources.reloader.running().dns.is_some() {
            register_dns(&mut registry, sources.metrics.dns());
        }
        if !sources.reloader.running().dns_update.is_empty() {
            register_dns_update(&mut registry, sources.metrics.dns());
        }
        registry.register_collector(Box::new(StateCollector(sources)));
        Exporter { registry }
    }

    /// The OpenMetrics text exposition.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition in the format `accept` asks for, with its content type.
    pub fn render(&self, accept: Option<&str>) -> (String, &'static str) {
        let om = self.render_openmetrics();
        if wants_openmetrics(accept) {
            (om, OPENMETRICS_CONTENT_TYPE)
        } else {
            (to_prometheus_text(&om), PROMETHEUS_TEXT_CONTENT_TYPE)
        }
    }
}

/// Whether a scraper's `Accept` header takes OpenMetrics. Prometheus lists it first; a client
/// that names only `text/plain` (curl scripts, older tools) gets the classic format. No header:
/// OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    match accept {
        None => true,
        Some(a) => a.contains("application/openmetrics-text") || !a.contains("text/plain"),
    }
}

/// Rewrites prometheus-client's OpenMetrics text into the classic text format: counter
/// families are named with their `_total` suffix, `info` becomes a `gauge` named `…_info`,
/// `# UNIT` and `# EOF` lines go. Label and value syntax is the same in both formats.
pub fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut lines = om.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = lines
                .peek()
                .and_then(|next| next.strip_prefix("# TYPE "))
                .and_then(|t| t.split_once(' '))
                .filter(|(n, _)| *n == name)
                .map(|(_, k)| k);
            let renamed = family_name(name, kind.unwrap_or("unknown"));
            out.push_str(&format!("# HELP {renamed} {help}\n"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let renamed = family_name(name, kind);
            let kind = match kind {
                "info" => "gauge",
                "unknown" => "untyped",
                other => other,
            };
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn family_name(name: &str, kind: &str) -> String {
    match kind {
        "counter" => format!("{name}_total"),
        "info" => format!("{name}_info"),
        _ => name.to_owned(),
    }
}

/// The built-in DNS server's families, when the server file has a `dns:` section.
fn register_dns(
    registry: &mut prometheus_client::registry::Registry,
    dns: &crate::stats::DnsMetrics,
) {
    registry.register(
        "mta_stsd_dns_queries",
        "DNS answers of the built-in zone, by query type and response code",
        dns.queries.clone(),
    );
    registry.register(
        "mta_stsd_dns_rate_limited",
        "UDP answers held back by the per-source rate limit: slip (empty, TC set) or drop",
        dns.limited.clone(),
    );
    registry.register(
        "mta_stsd_dns_zone_serial",
        "The SOA serial of the built-in zone",
        dns.serial.clone(),
    );
    registry.register(
        "mta_stsd_dns_zone_records",
        "TXT record sets the built-in zone answers",
        dns.records.clone(),
    );
}

/// The RFC 2136 publisher's families, when the server file has a `dns_update:` section.
fn register_dns_update(
    registry: &mut prometheus_client::registry::Registry,
    dns: &crate::stats::DnsMetrics,
) {
    registry.register(
        "mta_stsd_dns_updates",
        "RFC 2136 tries by result: the primary's rcode, unchanged (it already held the value) or failed (timeout, TSIG check)",
        dns.updates.clone(),
    );
    registry.register(
        "mta_stsd_dns_update_state",
        "Tenant records kept by RFC 2136, by state: published, pending (not ready or not tried yet), error",
        dns.update_state.clone(),
    );
}

/// Writes one family: its descriptor, then one sample per `(labels, value)`.
fn family<S: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (S, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one family with a single unlabelled sample.
fn single(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(enc.encode_descriptor(name, help, None, kind)?)
}

/// A gauge holding a count, saturated at `i64::MAX`.
fn count_gauge(n: impl TryInto<i64>) -> ConstGauge {
    ConstGauge::new(n.try_into().unwrap_or(i64::MAX))
}

/// Produces the state metrics at scrape time.
#[derive(Debug)]
struct StateCollector(Sources);

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let now = crate::util::unix_now();
        process::encode(&mut enc)?;
        encode_listener(&mut enc, &s.stats)?;

        let snapshot = s.registry.load();
        let tenants = snapshot.sorted();
        // Read before the board's lock is taken: the store may be slow.
        let totals = s.tlsrpt.as_deref().map(window_totals).unwrap_or_default();
        let per_tenant = s.reloader.running().metrics.per_tenant;
        let report_host = s.reloader.running().tlsrpt.report_host.as_deref();
        let failing = s
            .validation
            .as_ref()
            .map(|v| v.failing())
            .unwrap_or_default();
        let chosen = s.board.with_all(|certs| {
            let chosen = Chosen::new(per_tenant, tenants, certs, &totals, now, &failing);
            encode_requests(&mut enc, &s.stats, chosen.per_domain_requests())?;
            encode_tenants_by_mode(&mut enc, tenants)?;
            encode_policy_info(&mut enc, &chosen.tenants)?;
            encode_readiness(&mut enc, tenants, &chosen, certs, now)?;
            let subjects = Subject::all(tenants, report_host);
            encode_certificates(&mut enc, &subjects, &chosen, certs)?;
            Ok::<_, std::fmt::Error>(chosen)
        })?;

        encode_reload_status(&mut enc, &s.reloader.status())?;
        if let Some(tlsrpt) = &s.tlsrpt {
            encode_tlsrpt_intake(&mut enc, tlsrpt)?;
            let totals: Vec<_> = totals.iter().filter(|t| chosen.has(&t.tenant)).collect();
            encode_tlsrpt_window(&mut enc, tlsrpt, &totals)?;
        }
        if let Some(validation) = &s.validation {
            encode_validation(&mut enc, validation, &chosen)?;
        }
        if let Some(cluster) = &s.cluster {
            encode_cluster(&mut enc, cluster)?;
        }
        Ok(())
    }
}

/// This replica's role (1 for the current one, 0 for the others) and the live replicas.
fn encode_cluster(
    enc: &mut DescriptorEncoder,
    cluster: &crate::pgstore::cluster::ClusterStatus,
) -> Result<(), std::fmt::Error> {
    let role = cluster.role();
    family(
        enc,
        "mta_stsd_cluster_role",
        "1 for this replica's cluster role: leader (orders certificates), follower, or disconnected from PostgreSQL",
        MetricType::Gauge,
        ["leader", "follower", "disconnected"].into_iter().map(|r| {
            (
                [("role", r)],
                ConstGauge::new(i64::from(role.as_str() == r)),
            )
        }),
    )?;
    let live = cluster.replicas().len();
    single(
        enc,
        "mta_stsd_cluster_replicas",
        "Replicas heard from in the last 15 s at the last cluster sync, this one included",
        MetricType::Gauge,
        count_gauge(live),
    )
}

/// Open connections and handshake outcomes of the HTTPS listener.
fn encode_listener(enc: &mut DescriptorEncoder, stats: &Stats) -> Result<(), std::fmt::Error> {
    single(
        enc,
        "mta_stsd_open_connections",
        "HTTPS connections currently open",
        MetricType::Gauge,
        count_gauge(stats.open_connections.load(Ordering::Relaxed)),
    )?;
    let outcomes = [
        ("ok", &stats.handshakes_ok),
        ("unknown_sni", &stats.handshakes_unknown_sni),
        ("no_certificate", &stats.handshakes_no_certificate),
        ("error", &stats.handshakes_error),
    ];
    family(
        enc,
        "mta_stsd_tls_handshakes",
        "TLS handshakes by outcome (unknown_sni: SNI missing or not a tenant; no_certificate: tenant without a certificate yet)",
        MetricType::Counter,
        outcomes.map(|(outcome, counter)| {
            (
                [("outcome", outcome)],
                ConstCounter::new(counter.load(Ordering::Relaxed)),
            )
        }),
    )
}

/// Responses per tenant and status class, and the request duration histogram.
fn encode_requests(
    enc: &mut DescriptorEncoder,
    stats: &Stats,
    per_domain: bool,
) -> Result<(), std::fmt::Error> {
    if !per_domain {
        // One sum per class, without the domain label (`metrics.per_tenant` is not `all`).
        let sum = stats.tenant_requests.totals();
        let samples = CLASSES
            .iter()
            .zip(sum)
            .map(|(class, n)| ([("class", *class)], ConstCounter::new(n)));
        family(
            enc,
            "mta_stsd_requests",
            REQUESTS_HELP,
            MetricType::Counter,
            samples,
        )?;
    } else {
        let per_tenant = stats.tenant_requests.values();
        let samples = per_tenant.iter().flat_map(|(domain, counts)| {
            CLASSES
                .iter()
                .zip(counts)
                // Zero series of rare classes would multiply the output by five.
                .filter(|(class, value)| **value != 0 || **class == "2xx")
                .map(move |(class, value)| {
                    (
                        [("domain", domain.as_str()), ("class", *class)],
                        ConstCounter::new(*value),
                    )
                })
        });
        family(
            enc,
            "mta_stsd_requests",
            REQUESTS_HELP,
            MetricType::Counter,
            samples,
        )?;
    }
    encode_duration(enc, stats)
}

const REQUESTS_HELP: &str = "HTTPS responses by status class, and by tenant domain with metrics.per_tenant: all (domain=\"\": tenant no longer configured)";

/// The request duration histogram.
fn encode_duration(enc: &mut DescriptorEncoder, stats: &Stats) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(
        "mta_stsd_request_duration_seconds",
        "Time from a request's arrival to its response being ready",
        None,
        MetricType::Histogram,
    )?;
    let (sum, count, buckets) = stats.request_duration.values();
    m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

/// How many tenants are served in each policy mode.
fn encode_tenants_by_mode(
    enc: &mut DescriptorEncoder,
    tenants: &[Arc<Tenant>],
) -> Result<(), std::fmt::Error> {
    let modes = [Mode::Enforce, Mode::Testing, Mode::None];
    family(
        enc,
        "mta_stsd_tenants",
        "Tenants served, by policy mode",
        MetricType::Gauge,
        modes.map(|mode| {
            let n = tenants.iter().filter(|t| t.policy.mode == mode).count();
            ([("mode", mode.as_str())], count_gauge(n))
        }),
    )?;
    // One series, no domain label: which tenants are retiring is in the API.
    let retiring = tenants.iter().filter(|t| t.retiring.is_some()).count();
    single(
        enc,
        "mta_stsd_tenants_retiring",
        "Tenants being retired (RFC 8461 §8.3): serving mode none until the longest max_age served has passed",
        MetricType::Gauge,
        count_gauge(retiring),
    )
}

/// The mode and id of each tenant's served policy, as an info-style gauge.
fn encode_policy_info(
    enc: &mut DescriptorEncoder,
    tenants: &[&Arc<Tenant>],
) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "mta_stsd_policy_info",
        "The policy served per tenant: mode and the id to publish in _mta-sts TXT (always 1)",
        MetricType::Gauge,
        tenants.iter().map(|t| {
            let labels = [
                ("domain", t.domain.as_str()),
                ("mode", t.policy.mode.as_str()),
                ("id", crate::publish::sts_id(t)),
            ];
            (labels, ConstGauge::new(1i64))
        }),
    )
}

/// The watchdog's verdicts: per check, how many tenants fail it (every tenant), and per chosen
/// tenant and check 1 (ok or warning) or 0 (error).
fn encode_validation(
    enc: &mut DescriptorEncoder,
    board: &crate::validate::Board,
    chosen: &Chosen<'_>,
) -> Result<(), std::fmt::Error> {
    let counts = board.errors_by_check();
    family(
        enc,
        "mta_stsd_validation_errors",
        "Tenants whose last validation has this check in error",
        MetricType::Gauge,
        counts
            .iter()
            .map(|(c, n)| ([("check", c.as_str())], count_gauge(*n))),
    )?;
    let reports = board.picked(|d| chosen.has(d));
    family(
        enc,
        "mta_stsd_validation",
        "1 when the tenant's last validation passed this check (ok or warning), 0 when it is an error",
        MetricType::Gauge,
        reports.iter().flat_map(|(domain, statuses)| {
            crate::validate::Check::ALL
                .iter()
                .zip(statuses)
                .map(move |(check, status)| {
                    let passed = *status != crate::validate::Status::Error;
                    (
                        [("domain", domain.as_str()), ("check", check.as_str())],
                        ConstGauge::new(i64::from(passed)),
                    )
                })
        }),
    )
}

/// Whether each tenant may have its TXT id published (the rule lives in [`crate::publish`]).
fn encode_readiness(
    enc: &mut DescriptorEncoder,
    tenants: &[Arc<Tenant>],
    chosen: &Chosen<'_>,
    certs: &FastMap<String, CertStatus>,
    now: i64,
) -> Result<(), std::fmt::Error> {
    let not_ready = tenants
        .iter()
        .filter(|t| !crate::publish::cert_ready(certs.get(&t.host), now))
        .count();
    single(
        enc,
        "mta_stsd_tenants_not_ready",
        "Tenants whose current policy is not yet served with a valid certificate (their TXT ids must wait)",
        MetricType::Gauge,
        count_gauge(not_ready),
    )?;
    family(
        enc,
        "mta_stsd_tenant_ready",
        "1 when the tenant's current policy is served with a valid certificate, so its TXT id may be published",
        MetricType::Gauge,
        chosen.tenants.iter().map(|t| {
            let ready = crate::publish::cert_ready(certs.get(&t.host), now);
            (
                [("domain", t.domain.as_str())],
                ConstGauge::new(i64::from(ready)),
            )
        }),
    )
}

/// Whose certificate a series describes: a tenant, labelled by its domain, or the TLS-RPT
/// report host, labelled by the host itself and `role="report_host"` (so the per-domain alerts
/// cover it too, while tenant series keep their labels).
struct Subject<'a> {
    domain: &'a str,
    host: &'a str,
    report_host: bool,
}

impl<'a> Subject<'a> {
    /// Every tenant, then the report host if one is configured.
    fn all(tenants: &'a [Arc<Tenant>], report_host: Option<&'a str>) -> Vec<Subject<'a>> {
        let tenants = tenants.iter().map(|t| Subject {
            domain: &t.domain,
            host: &t.host,
            report_host: false,
        });
        let report = report_host.map(|h| Subject {
            domain: h,
            host: h,
            report_host: true,
        });
        tenants.chain(report).collect()
    }

    fn labels(&self) -> Vec<(&'static str, &'a str)> {
        let mut labels = vec![("domain", self.domain)];
        if self.report_host {
            labels.push(("role", "report_host"));
        }
        labels
    }
}

/// Certificate expiry and state per tenant and of the report host, and the count in each state.
fn encode_certificates(
    enc: &mut DescriptorEncoder,
    subjects: &[Subject<'_>],
    chosen: &Chosen<'_>,
    certs: &FastMap<String, CertStatus>,
) -> Result<(), std::fmt::Error> {
    let exported = |s: &&Subject<'_>| s.report_host || chosen.has(s.domain);
    family(
        enc,
        "mta_stsd_certificate_expiry_timestamp_seconds",
        "Unix time at which the served certificate of each tenant (and of the report host, role=\"report_host\") expires",
        MetricType::Gauge,
        subjects.iter().filter(exported).filter_map(|s| {
            let cert = certs.get(s.host)?.cert.as_ref()?;
            Some((s.labels(), ConstGauge::new(cert.not_after)))
        }),
    )?;

    // A host the board does not know yet has its first certificate still to come.
    let states: Vec<&'static str> = subjects
        .iter()
        .map(|s| {
            let state = certs.get(s.host).map(|c| c.state);
            state.unwrap_or(CertState::Pending).as_str()
        })
        .collect();
    family(
        enc,
        "mta_stsd_certificate_state",
        "Certificate state per tenant and of the report host (one series with value 1, labelled with the current state)",
        MetricType::Gauge,
        subjects
            .iter()
            .zip(&states)
            .filter(|(s, _)| exported(s))
            .map(|(s, &state)| {
                let mut labels = s.labels();
                labels.push(("state", state));
                (labels, ConstGauge::new(1i64))
            }),
    )?;

    let mut by_state: BTreeMap<&'static str, i64> =
        CertState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for state in &states {
        *by_state.entry(state).or_default() += 1;
    }
    family(
        enc,
        "mta_stsd_certificates",
        "Certificates by state: the tenants' and the report host's",
        MetricType::Gauge,
        by_state
            .into_iter()
            .map(|(state, n)| ([("state", state)], ConstGauge::new(n))),
    )
}

/// The outcome of the last reload: when it last applied cleanly, errors per file, stale
/// tenants, and whether a restart is pending.
fn encode_reload_status(
    enc: &mut DescriptorEncoder,
    status: &ReloadStatus,
) -> Result<(), std::fmt::Error> {
    single(
        enc,
        "mta_stsd_last_reload_success_timestamp_seconds",
        "Unix time of the last reload (or start) that applied without configuration errors",
        MetricType::Gauge,
        ConstGauge::new(status.last_success.unwrap_or(0)),
    )?;
    let errors = status.errors_per_file();
    family(
        enc,
        "mta_stsd_config_errors",
        "Configuration errors per file at the last reload (a broken tenant file keeps its last good tenants)",
        MetricType::Gauge,
        errors
            .iter()
            .map(|(file, n)| ([("file", file.as_str())], count_gauge(*n))),
    )?;
    single(
        enc,
        "mta_stsd_stale_tenants",
        "Tenants served from their last good definition because their file now has errors",
        MetricType::Gauge,
        count_gauge(status.stale_tenants.len()),
    )?;
    single(
        enc,
        "mta_stsd_restart_required",
        "1 when the server file changed in a way that only applies after a restart",
        MetricType::Gauge,
        ConstGauge::new(i64::from(!status.restart_required.is_empty())),
    )
}

// TLS-RPT families. Intake outcomes are counters kept in memory since start. Sessions and
// failures are gauges over the trailing window (the verdict's minimum days) computed from the
// database at scrape time, so a restart never zeroes them and old reports age out; labels are
// configured tenant domains and the known result types (unknown ones sum under `other`).

/// TLS-RPT intake outcomes since start, by source.
fn encode_tlsrpt_intake(
    enc: &mut DescriptorEncoder,
    tlsrpt: &crate::tlsrpt::TlsRpt,
) -> Result<(), std::fmt::Error> {
    family(
        enc,
        "mta_stsd_tlsrpt_reports_received",
        "TLS-RPT reports received over HTTPS since start, by source and outcome",
        MetricType::Counter,
        // Only HTTPS: mail is counted by other processes (see the stored-reports gauge).
        tlsrpt
            .stats
            .all(&[crate::tlsrpt::Source::Https])
            .into_iter()
            .map(|(source, outcome, n)| {
                (
                    [("source", source.as_str()), ("outcome", outcome.as_str())],
                    ConstCounter::new(n),
                )
            }),
    )
}

/// Reports stored over the window by source, from the database: `ingest-mail` runs in other
/// processes, so only the store knows how many mailed reports came in.
fn encode_tlsrpt_stored(
    enc: &mut DescriptorEncoder,
    tlsrpt: &crate::tlsrpt::TlsRpt,
    window: std::time::Duration,
) -> Result<(), std::fmt::Error> {
    let counts = tlsrpt
        .received_by_source(time::OffsetDateTime::now_utc(), window)
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "TLS-RPT stored report counts unavailable for this scrape");
            Vec::new()
        });
    family(
        enc,
        "mta_stsd_tlsrpt_reports_stored",
        "TLS-RPT reports stored (HTTPS and mail) and received within the window, by source",
        MetricType::Gauge,
        counts
            .into_iter()
            .map(|(source, n)| ([("source", source.as_str())], count_gauge(n))),
    )
}

/// Sessions and failures per tenant over the trailing window, from the store.
fn window_totals(tlsrpt: &crate::tlsrpt::TlsRpt) -> Vec<crate::tlsrpt::TenantWindowTotals> {
    let window = tlsrpt.metrics_window();
    match tlsrpt.window_totals(time::OffsetDateTime::now_utc(), window) {
        Ok(totals) => totals,
        Err(err) => {
            tracing::warn!(error = %err, "TLS-RPT metrics unavailable for this scrape");
            Vec::new()
        }
    }
}

/// The trailing window's length, and the sessions and failures reported within it per tenant.
fn encode_tlsrpt_window(
    enc: &mut DescriptorEncoder,
    tlsrpt: &crate::tlsrpt::TlsRpt,
    totals: &[&crate::tlsrpt::TenantWindowTotals],
) -> Result<(), std::fmt::Error> {
    single(
        enc,
        "mta_stsd_tlsrpt_store_up",
        "1 when the TLS-RPT report store is open, 0 while it cannot be opened (intake answers 503)",
        MetricType::Gauge,
        count_gauge(u64::from(tlsrpt.store_status().up)),
    )?;
    let window = tlsrpt.metrics_window();
    single(
        enc,
        "mta_stsd_tlsrpt_window_seconds",
        "Length of the trailing window the TLS-RPT session and failure gauges cover",
        MetricType::Gauge,
        count_gauge(window.as_secs()),
    )?;
    encode_tlsrpt_stored(enc, tlsrpt, window)?;
    family(
        enc,
        "mta_stsd_tlsrpt_sessions",
        "TLS sessions reported by senders per tenant over the window, by result",
        MetricType::Gauge,
        totals.iter().flat_map(|t| {
            [("success", t.successful), ("failure", t.failed)].map(|(result, n)| {
                (
                    [("domain", t.tenant.as_str()), ("result", result)],
                    count_gauge(n),
                )
            })
        }),
    )?;
    family(
        enc,
        "mta_stsd_tlsrpt_failures",
        "Failed TLS sessions reported per tenant over the window, by result type",
        MetricType::Gauge,
        totals.iter().flat_map(|t| {
            t.failures_by_result_type.iter().map(|(result_type, n)| {
                (
                    [("domain", t.tenant.as_str()), ("result_type", *result_type)],
                    count_gauge(*n),
                )
            })
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_to_text() {
        let om = "# HELP a_orders Orders.\n# TYPE a_orders counter\na_orders_total{result=\"ok\"} 1\n# HELP b_seconds B.\n# TYPE b_seconds gauge\n# UNIT b_seconds seconds\nb_seconds 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_orders_total Orders.\n# TYPE a_orders_total counter\na_orders_total{result=\"ok\"} 1\n# HELP b_seconds B.\n# TYPE b_seconds gauge\nb_seconds 2\n"
        );
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(None));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(wants_openmetrics(Some("*/*")));
    }
}
