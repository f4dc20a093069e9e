//! The daemon's TLS-RPT state: the open store, the configuration, intake counters, retention,
//! and the read hooks the admin API and metrics call.
//!
//! # Metrics: gauges over a window, computed from the database at scrape time
//! Session and failure counts come from the reports' own date ranges, not from when a report
//! arrived, and a report for yesterday may arrive today or be retried tomorrow. Counters
//! incremented at intake would therefore count a day's sessions on the wrong day, and counters
//! seeded at startup would jump when retention deletes old reports. So the per-tenant numbers
//! are gauges: [`TlsRpt::window_totals`] sums the stored reports whose period ended within
//! [`TlsRpt::metrics_window`] (the verdict window, `min_days_for_enforce` days) with two
//! grouped queries on an indexed column; a restart changes nothing because the database is
//! the state. Call it on a blocking thread (`spawn_blocking`): it takes the store lock.
//!
//! Intake events (reports received by source and outcome) are real counters kept in memory in
//! [`IntakeStats`]: they describe this process's traffic, and reset on restart like any
//! Prometheus counter. Mail arrives through separate `ingest-mail` processes, so the daemon
//! exports these counters for HTTPS only; the reports stored by source (mail included) are a
//! gauge over the same window, counted in the database ([`TlsRpt::received_by_source`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;

use super::intake::{self, Accepted, Origin, Tenant, Tenants};
use super::report::{Report, ReportError, ResultType};
use super::store::{
    InsertOutcome, ReportStore, Source, StoreError, TenantTotals, open_store, retention_cutoff,
};
use super::summary::{self, TenantSummary, VerdictConfig, WindowData};
use crate::config::TlsRptConfig;
use crate::policy::Mode;
use crate::registry::Registry;

/// How often the retention task deletes expired reports.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Label for result types this build does not know: client input must not create metric series.
pub const OTHER_RESULT_TYPE: &str = "other";

/// What became of one report that reached the intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Newly stored.
    Stored,
    /// Already stored (same organization and report-id); acknowledged.
    Duplicate,
    /// Refused: wrong media type (415).
    UnsupportedMediaType,
    /// Refused: over a size cap (413).
    TooLarge,
    /// Refused: not a usable report (400).
    Invalid,
    /// Refused: not for a tenant of this server (404).
    UnknownDomain,
    /// Refused: a quota on stored bytes per day is reached (429).
    OverQuota,
    /// Not stored because of a server-side problem (5xx / temporary failure); senders retry.
    Failed,
    /// Refused: the body arrived too slowly or not in time (408).
    TimedOut,
    /// Refused: too many uploads from the sender's address at once (429).
    Throttled,
}

impl IntakeOutcome {
    /// Every outcome, in label order.
    pub const ALL: [IntakeOutcome; 10] = [
        IntakeOutcome::Stored,
        IntakeOutcome::Duplicate,
        IntakeOutcome::UnsupportedMediaType,
        IntakeOutcome::TooLarge,
        IntakeOutcome::Invalid,
        IntakeOutcome::UnknownDomain,
        IntakeOutcome::OverQuota,
        IntakeOutcome::Failed,
        IntakeOutcome::TimedOut,
        IntakeOutcome::Throttled,
    ];

    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            IntakeOutcome::Stored => "stored",
            IntakeOutcome::Duplicate => "duplicate",
            IntakeOutcome::UnsupportedMediaType => "unsupported_media_type",
            IntakeOutcome::TooLarge => "too_large",
            IntakeOutcome::Invalid => "invalid",
            IntakeOutcome::UnknownDomain => "unknown_domain",
            IntakeOutcome::OverQuota => "over_quota",
            IntakeOutcome::Failed => "failed",
            IntakeOutcome::TimedOut => "timed_out",
            IntakeOutcome::Throttled => "throttled",
        }
    }

    /// The outcome an HTTP status answered to a report stands for; `None` for statuses that
    /// are not about a report (405, 421).
    pub fn from_status(status: u16) -> Option<IntakeOutcome> {
        Some(match status {
            415 => IntakeOutcome::UnsupportedMediaType,
            413 => IntakeOutcome::TooLarge,
            400 => IntakeOutcome::Invalid,
            404 => IntakeOutcome::UnknownDomain,
            408 => IntakeOutcome::TimedOut,
            429 => IntakeOutcome::Throttled,
            500..=599 => IntakeOutcome::Failed,
            _ => return None,
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<InsertOutcome> for IntakeOutcome {
    fn from(outcome: InsertOutcome) -> Self {
        match outcome {
            InsertOutcome::Inserted | InsertOutcome::Conflicting => IntakeOutcome::Stored,
            InsertOutcome::Duplicate => IntakeOutcome::Duplicate,
        }
    }
}

/// Every source, in label order.
pub const SOURCES: [Source; 2] = [Source::Https, Source::Mail];

/// Reports received by source and outcome since this process started.
#[derive(Debug, Default)]
pub struct IntakeStats {
    counts: [[AtomicU64; IntakeOutcome::ALL.len()]; SOURCES.len()],
}

impl IntakeStats {
    /// Counts one report.
    pub fn record(&self, source: Source, outcome: IntakeOutcome) {
        self.counts[source_index(source)][outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for one source and outcome.
    pub fn get(&self, source: Source, outcome: IntakeOutcome) -> u64 {
        self.counts[source_index(source)][outcome.index()].load(Ordering::Relaxed)
    }

    /// Every (source, outcome, count) for `sources`, zeros included, for exporting one
    /// series each.
    pub fn all(&self, sources: &[Source]) -> Vec<(Source, IntakeOutcome, u64)> {
        sources
            .iter()
            .flat_map(|&s| {
                IntakeOutcome::ALL
                    .iter()
                    .map(move |&o| (s, o, self.get(s, o)))
            })
            .collect()
    }
}

fn source_index(source: Source) -> usize {
    match source {
        Source::Https => 0,
        Source::Mail => 1,
    }
}

/// One tenant's summary over `[since, now)`: the one builder behind the admin API's JSON and
/// `mta-stsd reports`. `store` is `None` when no store exists yet, which means no reports.
/// Blocking: call it on a blocking thread.
pub fn tenant_summary(
    store: Option<&dyn ReportStore>,
    domain: &str,
    mode: Mode,
    since: OffsetDateTime,
    now: OffsetDateTime,
    verdict: &VerdictConfig,
) -> Result<TenantSummary, StoreError> {
    let data = match store {
        Some(store) => store.summary(domain, since)?,
        None => WindowData::default(),
    };
    Ok(summary::summarize(domain, mode, &data, since, now, verdict))
}

/// TLS-RPT as the daemon runs it: shared by the HTTPS intake, the retention task, the admin
/// API and metrics.
///
/// The store may be unavailable (unopenable, corrupt, locked, disk full): policies are the
/// product and never wait for it, so the daemon starts without it, the intake answers 503 +
/// `Retry-After`, and [`reopen_task`] retries in the background.
pub struct TlsRpt {
    /// The `tlsrpt:` section of the server file.
    pub config: TlsRptConfig,
    store: RwLock<StoreState>,
    /// Intake counters.
    pub stats: Arc<IntakeStats>,
    registry: Arc<Registry>,
}

/// The open store, or why there is none.
enum StoreState {
    Open(Arc<dyn ReportStore>),
    Unavailable(String),
}

/// Whether the report store is open, for `/api/v1/status` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreStatus {
    /// The store is open.
    pub up: bool,
    /// Why it could not be opened (the last attempt), when it is not.
    pub error: Option<String>,
}

impl std::fmt::Debug for TlsRpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRpt")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TlsRpt {
    /// Opens (creating and migrating) the report store named by `config`; fails if it cannot.
    pub fn open(config: &TlsRptConfig, registry: Arc<Registry>) -> Result<TlsRpt, StoreError> {
        Ok(TlsRpt::new(config, open_store(config)?, registry))
    }

    /// [`TlsRpt::open`] that never fails: when the store cannot be opened the error is logged
    /// and kept, and [`reopen_task`] retries.
    pub fn open_or_unavailable(config: &TlsRptConfig, registry: Arc<Registry>) -> TlsRpt {
        let state = match open_store(config) {
            Ok(store) => StoreState::Open(store),
            Err(e) => {
                tracing::error!(database = %config.database.display(), error = %e, "cannot open the report database; serving policies without it, TLS-RPT intake answers 503 until it opens");
                StoreState::Unavailable(e.to_string())
            }
        };
        TlsRpt {
            config: config.clone(),
            store: RwLock::new(state),
            stats: Arc::new(IntakeStats::default()),
            registry,
        }
    }

    /// TLS-RPT over an already open store.
    pub fn new(
        config: &TlsRptConfig,
        store: Arc<dyn ReportStore>,
        registry: Arc<Registry>,
    ) -> Self {
        TlsRpt {
            config: config.clone(),
            store: RwLock::new(StoreState::Open(store)),
            stats: Arc::new(IntakeStats::default()),
            registry,
        }
    }

    /// The open store, or [`StoreError::Unavailable`] while it could not be opened.
    pub fn store(&self) -> Result<Arc<dyn ReportStore>, StoreError> {
        match &*self.store.read().unwrap_or_else(|e| e.into_inner()) {
            StoreState::Open(store) => Ok(store.clone()),
            StoreState::Unavailable(why) => Err(StoreError::Unavailable(why.clone())),
        }
    }

    /// Whether the store is open, and if not, why.
    pub fn store_status(&self) -> StoreStatus {
        match &*self.store.read().unwrap_or_else(|e| e.into_inner()) {
            StoreState::Open(_) => StoreStatus {
                up: true,
                error: None,
            },
            StoreState::Unavailable(why) => StoreStatus {
                up: false,
                error: Some(why.clone()),
            },
        }
    }

    /// Tries to open the store if it is not open; returns whether it is open now. Blocking.
    pub fn try_reopen(&self) -> Result<(), StoreError> {
        if self.store_status().up {
            return Ok(());
        }
        let opened = open_store(&self.config);
        let mut state = self.store.write().unwrap_or_else(|e| e.into_inner());
        match opened {
            Ok(store) => {
                *state = StoreState::Open(store);
                Ok(())
            }
            Err(e) => {
                *state = StoreState::Unavailable(e.to_string());
                Err(e)
            }
        }
    }

    /// The verdict settings from the configuration.
    pub fn verdict_config(&self) -> VerdictConfig {
        VerdictConfig {
            min_days: self.config.min_days_for_enforce,
        }
    }

    /// The window per-tenant gauges are computed over: the verdict window.
    pub fn metrics_window(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.min_days_for_enforce) * 86_400)
    }

    /// Whether `domain` (normalized) is a tenant of the current snapshot.
    pub fn is_tenant(&self, domain: &str) -> bool {
        self.registry.load().by_domain(domain).is_some()
    }

    /// The tenant check ([`intake::check_tenant`]) against the current snapshot.
    pub fn check_tenant(&self, domain: &str) -> Result<Tenant, ReportError> {
        intake::check_tenant(&|d| self.is_tenant(d), domain)
    }

    /// Stores a report for a checked tenant, received now ([`intake::accept`]). Blocking.
    pub fn accept(
        &self,
        tenant: Tenant,
        report: Report,
        raw_json: Vec<u8>,
        origin: Origin,
    ) -> Result<Accepted, StoreError> {
        let tenants = Tenants::of(tenant, &report, &|d| self.is_tenant(d));
        intake::accept(
            self.store()?.as_ref(),
            &self.config.quota,
            tenants,
            report,
            raw_json,
            origin,
            OffsetDateTime::now_utc(),
        )
    }

    /// Deletes reports older than the retention; returns how many went. Blocking.
    pub fn prune_expired(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        self.store()?
            .prune(retention_cutoff(now, self.config.retention_days))
    }

    /// A tenant's summary since `since`; `Ok(None)` when `domain` is not a current tenant.
    /// Blocking.
    pub fn tenant_summary(
        &self,
        domain: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<TenantSummary>, StoreError> {
        let domain = super::report::normalize_domain(domain);
        let Some(tenant) = self.registry.load().by_domain(&domain).cloned() else {
            return Ok(None);
        };
        tenant_summary(
            Some(self.store()?.as_ref()),
            &domain,
            tenant.policy.mode,
            since,
            now,
            &self.verdict_config(),
        )
        .map(Some)
    }

    /// The admin API's `GET /api/v1/tenants/{domain}/tlsrpt?since=`: the summary as JSON, or
    /// `Ok(None)` (404) when `domain` is not a current tenant. Blocking.
    pub fn tenant_summary_json(
        &self,
        domain: &str,
        since: OffsetDateTime,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let Some(summary) = self.tenant_summary(domain, since, OffsetDateTime::now_utc())? else {
            return Ok(None);
        };
        serde_json::to_value(&summary)
            .map(Some)
            .map_err(|e| StoreError::Db(format!("serializing summary: {e}")))
    }

    /// Reports stored by source whose receipt falls in the `window` before `now`, read from the
    /// store so the `ingest-mail` processes' reports count too. Blocking.
    pub fn received_by_source(
        &self,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<Vec<(Source, u64)>, StoreError> {
        self.store()?.received_by_source(now - window)
    }

    /// Per-tenant gauges for metrics: sessions and failures by result type over reports whose
    /// period ended after `now - window`. Only current tenants appear (a removed tenant's
    /// stored reports do not keep a series alive), and result types this build does not know
    /// are summed under [`OTHER_RESULT_TYPE`] so client input cannot add series. Blocking.
    pub fn window_totals(
        &self,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<Vec<TenantWindowTotals>, StoreError> {
        let since = now - window;
        let snapshot = self.registry.load();
        let mut out = Vec::new();
        for t in self.store()?.window_totals(since)? {
            if snapshot.by_domain(&t.tenant).is_none() {
                continue;
            }
            out.push(TenantWindowTotals::from_totals(t));
        }
        Ok(out)
    }
}

/// One tenant's gauges with bounded result-type labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantWindowTotals {
    /// The tenant domain (a configured tenant: a bounded label).
    pub tenant: String,
    /// Successful sessions.
    pub successful: u64,
    /// Failed sessions.
    pub failed: u64,
    /// Failed sessions by result type (`other` for unknown types), sorted by label.
    pub failures_by_result_type: Vec<(&'static str, u64)>,
}

impl TenantWindowTotals {
    fn from_totals(t: TenantTotals) -> Self {
        let mut by_type: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for (result_type, n) in t.failures_by_result_type {
            *by_type.entry(result_type_label(&result_type)).or_default() += n;
        }
        TenantWindowTotals {
            tenant: t.tenant,
            successful: t.successful,
            failed: t.failed,
            failures_by_result_type: by_type.into_iter().collect(),
        }
    }
}

/// The metric label of a result type: the registered name, or [`OTHER_RESULT_TYPE`].
pub fn result_type_label(result_type: &ResultType) -> &'static str {
    result_type.registered_name().unwrap_or(OTHER_RESULT_TYPE)
}

/// First wait before retrying to open the store; doubled after each failure.
const REOPEN_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between attempts to open the store: a repaired disk is noticed within this.
const REOPEN_MAX: Duration = Duration::from_secs(10);

/// Retries opening the store, with backoff, until it opens or `stop` turns true. Returns at
/// once when the store is already open; the store is never closed once open (SQLite recovers
/// from a full disk or an I/O error by itself, the intake answering 503 meanwhile).
pub async fn reopen_task(tlsrpt: Arc<TlsRpt>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut wait = REOPEN_FIRST;
    while !tlsrpt.store_status().up {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let t = tlsrpt.clone();
        match tokio::task::spawn_blocking(move || t.try_reopen()).await {
            Ok(Ok(())) => tracing::info!(
                task = "tlsrpt-store-reopen",
                database = %tlsrpt.config.database.display(),
                "report database opened; TLS-RPT intake accepts reports again"
            ),
            Ok(Err(e)) => tracing::warn!(
                task = "tlsrpt-store-reopen",
                error = %e,
                retry_in_s = (wait * 2).min(REOPEN_MAX).as_secs(),
                "report database still unavailable"
            ),
            Err(e) => {
                tracing::error!(task = "tlsrpt-store-reopen", error = %e, "reopen attempt panicked")
            }
        }
        wait = (wait * 2).min(REOPEN_MAX);
    }
}

/// The retention task: prunes at start, then every [`RETENTION_INTERVAL`]. Runs until aborted;
/// the daemon starts it next to the listener and aborts it on shutdown. In cluster mode
/// `prunes` says whether this replica leads: only the leader prunes the shared store.
pub async fn retention_task(
    tlsrpt: Arc<TlsRpt>,
    prunes: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let mut tick = tokio::time::interval(RETENTION_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if prunes.as_ref().is_some_and(|p| !*p.borrow()) {
            continue;
        }
        let t = tlsrpt.clone();
        let result =
            tokio::task::spawn_blocking(move || t.prune_expired(OffsetDateTime::now_utc())).await;
        match result {
            Ok(Ok(n)) => tracing::info!(
                task = "tlsrpt-retention",
                deleted = n,
                retention_days = tlsrpt.config.retention_days,
                "expired reports pruned"
            ),
            Ok(Err(e)) => {
                tracing::error!(task = "tlsrpt-retention", error = %e, "pruning reports failed")
            }
            Err(e) => {
                tracing::error!(task = "tlsrpt-retention", error = %e, "pruning task panicked")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_by_source_and_outcome() {
        let stats = IntakeStats::default();
        stats.record(Source::Https, IntakeOutcome::Stored);
        stats.record(Source::Https, IntakeOutcome::Stored);
        stats.record(Source::Mail, IntakeOutcome::Invalid);
        assert_eq!(stats.get(Source::Https, IntakeOutcome::Stored), 2);
        assert_eq!(stats.get(Source::Mail, IntakeOutcome::Invalid), 1);
        assert_eq!(stats.get(Source::Mail, IntakeOutcome::Stored), 0);
        assert_eq!(stats.all(&SOURCES).len(), 2 * IntakeOutcome::ALL.len());
        assert_eq!(stats.all(&[Source::Https]).len(), IntakeOutcome::ALL.len());
    }

    #[test]
    fn unknown_result_types_share_one_label() {
        let t = TenantWindowTotals::from_totals(TenantTotals {
            tenant: "example.com".into(),
            successful: 1,
            failed: 6,
            failures_by_result_type: vec![
                (ResultType::Other("new-kind".into()), 1),
                (ResultType::Other("another".into()), 2),
                (ResultType::CertificateExpired, 3),
            ],
        });
        assert_eq!(
            t.failures_by_result_type,
            [("certificate-expired", 3), (OTHER_RESULT_TYPE, 3)]
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(
            IntakeOutcome::from_status(415),
            Some(IntakeOutcome::UnsupportedMediaType)
        );
        assert_eq!(IntakeOutcome::from_status(503), Some(IntakeOutcome::Failed));
        assert_eq!(
            IntakeOutcome::from_status(408),
            Some(IntakeOutcome::TimedOut)
        );
        assert_eq!(
            IntakeOutcome::from_status(429),
            Some(IntakeOutcome::Throttled)
        );
        assert_eq!(IntakeOutcome::from_status(405), None);
    }
}
