//! Per-tenant aggregation over a window and the "ready to enforce" verdict.
//!
//! The store returns a [`WindowData`] (already grouped in SQL); [`summarize`] turns it into a
//! [`TenantSummary`] that the admin API serves as JSON and [`render_table`] prints for the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::report::{PolicyType, ResultType};
use crate::policy::Mode;

pub use crate::config::DEFAULT_MIN_DAYS;

const SECONDS_PER_DAY: i64 = 86_400;

/// Result types that mean an enforcing sender would have refused delivery because of the
/// receiving side's certificate, MX list or policy: these block a switch to enforce.
pub const BLOCKING_RESULT_TYPES: [ResultType; 7] = [
    ResultType::CertificateHostMismatch,
    ResultType::CertificateExpired,
    ResultType::CertificateNotTrusted,
    ResultType::ValidationFailure,
    ResultType::StarttlsNotSupported,
    ResultType::StsPolicyInvalid,
    ResultType::StsWebpkiInvalid,
];

/// Whether a failure of this kind blocks enforcing: an `sts` policy failing with a
/// [`BLOCKING_RESULT_TYPES`] result.
pub fn blocks_enforce(policy_type: &PolicyType, result_type: &ResultType) -> bool {
    *policy_type == PolicyType::Sts && BLOCKING_RESULT_TYPES.contains(result_type)
}

/// One stored report's identity and period, as the store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSpan {
    /// `organization-name`.
    pub organization: String,
    /// Start of the covered period.
    pub start: OffsetDateTime,
    /// End of the covered period (exclusive).
    pub end: OffsetDateTime,
    /// Another report with the same organization and report-id has different content.
    pub conflict: bool,
    /// The DKIM signing domain of a mailed report.
    pub signing_domain: Option<String>,
    /// Its submitter or contact-info domain is not of the signing domain.
    pub submitter_mismatch: bool,
    /// `report-id`: unique only per organization.
    pub report_id: String,
    /// Hex SHA-256 of the canonical JSON: which of the reports under one report-id this is.
    pub digest: String,
    /// Successful sessions of the policies concerning the tenant.
    pub successful: u64,
    /// Failed sessions of the policies concerning the tenant.
    pub failed: u64,
}

/// A reporting organization as named, with the DKIM signing domain that vouched for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Sender {
    /// `organization-name`: chosen by the sender, so only as good as the signature.
    pub organization: String,
    /// The DKIM signing domain (`None` for reports POSTed over HTTPS or mailed without the
    /// DKIM policy).
    pub signing_domain: Option<String>,
    /// The report's `TLS-Report-Submitter` or `contact-info` domain is not the signing domain
    /// nor below it.
    pub submitter_mismatch: bool,
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.organization)?;
        match (&self.signing_domain, self.submitter_mismatch) {
            (Some(d), false) => write!(f, " (DKIM {d})"),
            (Some(d), true) => write!(f, " (DKIM {d}, which is not the submitter's: flagged)"),
            (None, _) => f.write_str(" (unsigned)"),
        }
    }
}

/// Session totals of one policy type, summed over the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTotals {
    /// The policy type these sums are for.
    pub policy_type: PolicyType,
    /// Sum of `total-successful-session-count`.
    pub successful: u64,
    /// Sum of `total-failure-session-count`.
    pub failed: u64,
}

/// Failed sessions grouped by policy type, result type and receiving MX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    /// The policy that was being applied.
    pub policy_type: PolicyType,
    /// Why the sessions failed.
    pub result_type: ResultType,
    /// `receiving-mx-hostname`, when the sender gave one.
    pub receiving_mx: Option<String>,
    /// Sum of `failed-session-count`.
    pub sessions: u64,
}

/// Everything the store knows about one tenant inside a window, pre-grouped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowData {
    /// Reports whose period ends after the window start.
    pub reports: Vec<ReportSpan>,
    /// Totals per policy type.
    pub totals: Vec<PolicyTotals>,
    /// Failure details, grouped.
    pub failures: Vec<FailureGroup>,
}

/// Tunables of the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictConfig {
    /// Distinct days reports must cover before a testing tenant is ready.
    pub min_days: u32,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        VerdictConfig {
            min_days: DEFAULT_MIN_DAYS,
        }
    }
}

/// The verdict's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictStatus {
    /// Testing, enough clean coverage: switching to enforce is safe.
    ReadyToEnforce,
    /// Testing, but `reasons` lists what blocks enforcing.
    NotReady,
    /// Enforcing, reports received, none with failures.
    Healthy,
    /// Enforcing and senders report failures (mail may be refused).
    Warning,
    /// Enforcing and no report in the window: nothing says it works (is `_smtp._tls`
    /// published?).
    NoReports,
    /// Mode `none`: nothing to judge.
    NotApplicable,
}

impl VerdictStatus {
    /// Whether an operator should look now: senders report failures on an enforcing tenant.
    /// `reports` exits non-zero when a tenant it shows has such a verdict.
    pub fn needs_attention(self) -> bool {
        self == VerdictStatus::Warning
    }
}

/// A verdict with the reasons behind it (blockers or warnings), one line each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The outcome.
    pub status: VerdictStatus,
    /// Why, one human sentence per entry; empty when there is nothing to say.
    pub reasons: Vec<String>,
}

impl Verdict {
    /// A short label for tables.
    pub fn label(&self) -> &'static str {
        match self.status {
            VerdictStatus::ReadyToEnforce => "ready to enforce",
            VerdictStatus::NotReady => "not ready",
            VerdictStatus::Healthy => "ok",
            VerdictStatus::Warning => "WARNING: failures",
            VerdictStatus::NoReports => "no reports",
            VerdictStatus::NotApplicable => "-",
        }
    }
}

/// One tenant's TLS-RPT picture over a window: what the CLI prints and the admin API serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantSummary {
    /// The tenant domain.
    pub tenant: String,
    /// The tenant's policy mode.
    pub mode: Mode,
    /// Window start.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Reports in the window.
    pub reports: usize,
    /// Successful sessions over all policies.
    pub successful_sessions: u64,
    /// Failed sessions over all policies.
    pub failed_sessions: u64,
    /// `failed / (successful + failed)`, 0 when there were no sessions.
    pub failure_rate: f64,
    /// Failed sessions by `result-type`.
    pub failures_by_result_type: BTreeMap<String, u64>,
    /// Failed sessions by `receiving-mx-hostname` (`(unknown)` when not reported).
    pub failures_by_mx: BTreeMap<String, u64>,
    /// Distinct reporting organizations, sorted.
    pub organizations: Vec<String>,
    /// Distinct (organization, signing domain, flag) triples, sorted: who vouched for each
    /// organization name.
    pub senders: Vec<Sender>,
    /// Distinct UTC days inside the window that some report covers.
    pub days_covered: u32,
    /// Reports in the window that conflict with another report under the same organization
    /// and report-id: at least one of them is not what it claims, so none is trusted.
    pub conflicting_reports: usize,
    /// Whether the tenant can enforce / is healthy.
    pub verdict: Verdict,
}

/// Label used in [`TenantSummary::failures_by_mx`] when a sender did not name the MX.
pub const UNKNOWN_MX: &str = "(unknown)";

/// Aggregate one tenant's window and judge it.
pub fn summarize(
    tenant: &str,
    mode: Mode,
    data: &WindowData,
    since: OffsetDateTime,
    now: OffsetDateTime,
    config: &VerdictConfig,
) -> TenantSummary {
    let successful: u64 = data.totals.iter().map(|t| t.successful).sum();
    let failed: u64 = data.totals.iter().map(|t| t.failed).sum();
    let mut by_type = BTreeMap::new();
    let mut by_mx = BTreeMap::new();
    for f in &data.failures {
        *by_type.entry(f.result_type.to_string()).or_insert(0) += f.sessions;
        let mx = f.receiving_mx.as_deref().unwrap_or(UNKNOWN_MX).to_string();
        *by_mx.entry(mx).or_insert(0) += f.sessions;
    }
    let organizations: BTreeSet<&str> = data
        .reports
        .iter()
        .map(|r| r.organization.as_str())
        .collect();
    let days_covered = days_covered(&data.reports, since, now);
    let total = successful + failed;
    let failure_rate = if total == 0 {
        0.0
    } else {
        failed as f64 / total as f64
    };
    let verdict = verdict(
        mode,
        data,
        days_covered,
        organizations.len(),
        failed,
        config,
    );
    TenantSummary {
        tenant: tenant.to_string(),
        mode,
        since,
        reports: data.reports.len(),
        successful_sessions: successful,
        failed_sessions: failed,
        failure_rate,
        failures_by_result_type: by_type,
        failures_by_mx: by_mx,
        organizations: organizations.into_iter().map(str::to_string).collect(),
        senders: senders(data),
        days_covered,
        conflicting_reports: conflicting(data),
        verdict,
    }
}

fn senders(data: &WindowData) -> Vec<Sender> {
    let set: BTreeSet<Sender> = data
        .reports
        .iter()
        .map(|r| Sender {
            organization: r.organization.clone(),
            signing_domain: r.signing_domain.clone(),
            submitter_mismatch: r.submitter_mismatch,
        })
        .collect();
    set.into_iter().collect()
}

fn conflicting(data: &WindowData) -> usize {
    data.reports.iter().filter(|r| r.conflict).count()
}

/// The reason a window with conflicting reports cannot be trusted, if it has any.
fn conflict_reason(data: &WindowData) -> Option<String> {
    let n = conflicting(data);
    (n > 0).then(|| {
        format!(
            "{n} reports conflict with another report of the same organization-name and \
             report-id: one may be forged, so the counts cannot be trusted (see `reports show`)"
        )
    })
}

/// Distinct UTC days in `[since, now)` that overlap some report's `[start, end)`.
pub fn days_covered(reports: &[ReportSpan], since: OffsetDateTime, now: OffsetDateTime) -> u32 {
    let (since, now) = (since.unix_timestamp(), now.unix_timestamp());
    let mut days = BTreeSet::new();
    for r in reports {
        let start = r.start.unix_timestamp().max(since);
        let end = r.end.unix_timestamp().min(now);
        if end <= start {
            continue;
        }
        let first = start.div_euclid(SECONDS_PER_DAY);
        // `end` is exclusive: a report ending at next-day 00:00:00 covers one day, not two.
        let last = (end - 1).div_euclid(SECONDS_PER_DAY);
        days.extend(first..=last);
    }
    u32::try_from(days.len()).unwrap_or(u32::MAX)
}

fn verdict(
    mode: Mode,
    data: &WindowData,
    days_covered: u32,
    organizations: usize,
    failed: u64,
    config: &VerdictConfig,
) -> Verdict {
    match mode {
        Mode::None => Verdict {
            status: VerdictStatus::NotApplicable,
            reasons: Vec::new(),
        },
        Mode::Testing => testing_verdict(data, days_covered, organizations, config),
        Mode::Enforce => enforce_verdict(data, failed),
    }
}

/// Testing: ready once reports cover enough days and nothing would have blocked delivery.
fn testing_verdict(
    data: &WindowData,
    days_covered: u32,
    organizations: usize,
    config: &VerdictConfig,
) -> Verdict {
    let mut reasons = Vec::new();
    if organizations == 0 {
        reasons.push("no reports received in the window".to_string());
    } else if days_covered < config.min_days {
        reasons.push(format!(
            "reports cover {days_covered} of the {} days needed",
            config.min_days
        ));
    }
    reasons.extend(blocking_reasons(&data.failures));
    reasons.extend(conflict_reason(data));
    Verdict {
        status: if reasons.is_empty() {
            VerdictStatus::ReadyToEnforce
        } else {
            VerdictStatus::NotReady
        },
        reasons,
    }
}

/// Enforcing: any failed session is a warning, broken down by policy and result type; no
/// report at all is not "ok", since silence proves nothing.
fn enforce_verdict(data: &WindowData, failed: u64) -> Verdict {
    if data.reports.is_empty() {
        return Verdict {
            status: VerdictStatus::NoReports,
            reasons: vec!["no reports received in the window".to_string()],
        };
    }
    if let Some(reason) = conflict_reason(data) {
        return Verdict {
            status: VerdictStatus::Warning,
            reasons: vec![reason],
        };
    }
    if failed == 0 {
        return Verdict {
            status: VerdictStatus::Healthy,
            reasons: Vec::new(),
        };
    }
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for f in &data.failures {
        *by_type
            .entry(format!("{} {}", f.policy_type, f.result_type))
            .or_insert(0) += f.sessions;
    }
    let mut reasons = vec![format!(
        "{failed} sessions failed while enforcing: senders may be refusing mail"
    )];
    reasons.extend(
        by_type
            .into_iter()
            .map(|(kind, n)| format!("{n} sessions failed with {kind}")),
    );
    Verdict {
        status: VerdictStatus::Warning,
        reasons,
    }
}

/// One line per blocking result type: how many sessions, on which MX hosts.
fn blocking_reasons(failures: &[FailureGroup]) -> Vec<String> {
    let mut by_type: BTreeMap<&str, (u64, BTreeSet<&str>)> = BTreeMap::new();
    for f in failures {
        if f.sessions > 0 && blocks_enforce(&f.policy_type, &f.result_type) {
            let entry = by_type.entry(f.result_type.as_str()).or_default();
            entry.0 += f.sessions;
            entry
                .1
                .insert(f.receiving_mx.as_deref().unwrap_or(UNKNOWN_MX));
        }
    }
    by_type
        .into_iter()
        .map(|(kind, (n, mxs))| {
            let mxs: Vec<&str> = mxs.into_iter().collect();
            format!(
                "{n} sts sessions failed with {kind} (MX: {})",
                mxs.join(", ")
            )
        })
        .collect()
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// Render summaries as a fixed-width table followed by one detail block per tenant.
pub fn render_table(summaries: &[TenantSummary]) -> String {
    let mut out = String::new();
    let width = summaries
        .iter()
        .map(|s| s.tenant.len())
        .max()
        .unwrap_or(0)
        .max("TENANT".len());
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:>7}  {:>4}  {:>4}  {:>10}  {:>8}  {:>7}  VERDICT",
        "TENANT", "MODE", "REPORTS", "ORGS", "DAYS", "SUCCESSFUL", "FAILED", "RATE"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}  {:>7}  {:>4}  {:>4}  {:>10}  {:>8}  {:>7}  {}",
            s.tenant,
            s.mode.as_str(),
            s.reports,
            s.organizations.len(),
            s.days_covered,
            s.successful_sessions,
            s.failed_sessions,
            percent(s.failure_rate),
            s.verdict.label()
        );
    }
    for s in summaries {
        let since = s.since.format(&Rfc3339).unwrap_or_default();
        let _ = writeln!(out, "\n{} ({}) since {since}", s.tenant, s.mode.as_str());
        if !s.senders.is_empty() {
            let senders: Vec<String> = s.senders.iter().map(Sender::to_string).collect();
            let _ = writeln!(out, "  organizations: {}", senders.join(", "));
        }
        if !s.failures_by_result_type.is_empty() {
            let _ = writeln!(out, "  failures by result-type:");
            for (kind, n) in &s.failures_by_result_type {
                let _ = writeln!(out, "    {kind:<28} {n:>8}");
            }
            let _ = writeln!(out, "  failures by receiving MX:");
            for (mx, n) in &s.failures_by_mx {
                let _ = writeln!(out, "    {mx:<28} {n:>8}");
            }
        }
        let _ = writeln!(out, "  verdict: {}", s.verdict.label());
        for reason in &s.verdict.reasons {
            let _ = writeln!(out, "    - {reason}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn day_report(org: &str, day: u8) -> ReportSpan {
        let start = datetime!(2025-03-01 00:00 UTC) + time::Duration::days(i64::from(day));
        ReportSpan {
            organization: org.to_string(),
            start,
            // Half the senders end at 23:59:59, half at next-day 00:00: both are one day.
            end: if day.is_multiple_of(2) {
                start + time::Duration::days(1)
            } else {
                start + time::Duration::seconds(86_399)
            },
            conflict: false,
            signing_domain: None,
            submitter_mismatch: false,
            report_id: format!("{org}-{day}"),
            digest: String::new(),
            successful: 0,
            failed: 0,
        }
    }

    fn clean_week() -> WindowData {
        WindowData {
            reports: (0..7)
                .map(|d| day_report("Google Inc.", d))
                .chain((0..7).map(|d| day_report("Microsoft Corporation", d)))
                .collect(),
            totals: vec![PolicyTotals {
                policy_type: PolicyType::Sts,
                successful: 9_998,
                failed: 2,
            }],
            failures: vec![FailureGroup {
                // Fetch errors are about reaching our policy host: not a reason to hold back.
                policy_type: PolicyType::Sts,
                result_type: ResultType::StsPolicyFetchError,
                receiving_mx: None,
                sessions: 2,
            }],
        }
    }

    const SINCE: OffsetDateTime = datetime!(2025-03-01 00:00 UTC);
    const NOW: OffsetDateTime = datetime!(2025-03-08 12:00 UTC);

    #[test]
    fn clean_testing_tenant_is_ready_to_enforce() {
        let s = summarize(
            "example.com",
            Mode::Testing,
            &clean_week(),
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.days_covered, 7);
        assert_eq!(s.reports, 14);
        assert_eq!(s.organizations, ["Google Inc.", "Microsoft Corporation"]);
        assert_eq!(s.successful_sessions, 9_998);
        assert_eq!(s.failed_sessions, 2);
        assert!((s.failure_rate - 0.0002).abs() < 1e-12);
        assert_eq!(s.failures_by_mx.get(UNKNOWN_MX), Some(&2));
        assert_eq!(s.verdict.status, VerdictStatus::ReadyToEnforce);
        assert!(s.verdict.reasons.is_empty());
    }

    #[test]
    fn certificate_failures_block_enforcing_and_are_named() {
        let mut data = clean_week();
        data.failures.push(FailureGroup {
            policy_type: PolicyType::Sts,
            result_type: ResultType::CertificateExpired,
            receiving_mx: Some("mx1.example.com".into()),
            sessions: 5,
        });
        data.failures.push(FailureGroup {
            policy_type: PolicyType::Sts,
            result_type: ResultType::CertificateExpired,
            receiving_mx: Some("mx2.example.com".into()),
            sessions: 1,
        });
        // A DANE failure is not an sts failure: it does not block MTA-STS enforce.
        data.failures.push(FailureGroup {
            policy_type: PolicyType::Tlsa,
            result_type: ResultType::ValidationFailure,
            receiving_mx: Some("mx1.example.com".into()),
            sessions: 9,
        });
        let s = summarize(
            "example.com",
            Mode::Testing,
            &data,
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.verdict.status, VerdictStatus::NotReady);
        assert_eq!(
            s.verdict.reasons,
            [
                "6 sts sessions failed with certificate-expired (MX: mx1.example.com, mx2.example.com)"
            ]
        );
        assert_eq!(
            s.failures_by_result_type.get("certificate-expired"),
            Some(&6)
        );
        assert_eq!(
            s.failures_by_result_type.get("validation-failure"),
            Some(&9)
        );
        assert_eq!(s.failures_by_mx.get("mx1.example.com"), Some(&14));
    }

    #[test]
    fn too_few_days_or_no_reports_block_enforcing() {
        let mut data = clean_week();
        data.reports
            .retain(|r| r.start < datetime!(2025-03-04 00:00 UTC));
        let s = summarize(
            "example.com",
            Mode::Testing,
            &data,
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.days_covered, 3);
        assert_eq!(s.verdict.status, VerdictStatus::NotReady);
        assert_eq!(s.verdict.reasons, ["reports cover 3 of the 7 days needed"]);

        let cfg = VerdictConfig { min_days: 3 };
        let s = summarize("example.com", Mode::Testing, &data, SINCE, NOW, &cfg);
        assert_eq!(s.verdict.status, VerdictStatus::ReadyToEnforce);

        let s = summarize(
            "example.com",
            Mode::Testing,
            &WindowData::default(),
            SINCE,
            NOW,
            &cfg,
        );
        assert_eq!(s.verdict.reasons, ["no reports received in the window"]);
        assert_eq!(s.failure_rate, 0.0);
    }

    #[test]
    fn enforcing_tenant_warns_on_failures() {
        let s = summarize(
            "example.com",
            Mode::Enforce,
            &clean_week(),
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.verdict.status, VerdictStatus::Warning);
        assert_eq!(
            s.verdict.reasons,
            [
                "2 sessions failed while enforcing: senders may be refusing mail",
                "2 sessions failed with sts sts-policy-fetch-error"
            ]
        );
        let mut data = clean_week();
        data.totals[0].failed = 0;
        data.failures.clear();
        let s = summarize(
            "example.com",
            Mode::Enforce,
            &data,
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.verdict.status, VerdictStatus::Healthy);
        assert_eq!(s.verdict.label(), "ok");

        let s = summarize(
            "example.com",
            Mode::Enforce,
            &WindowData::default(),
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.verdict.status, VerdictStatus::NoReports);
        assert_eq!(s.verdict.label(), "no reports");
        assert_eq!(s.verdict.reasons, ["no reports received in the window"]);
        assert!(!s.verdict.status.needs_attention());
    }

    #[test]
    fn conflicting_reports_are_counted_and_block_or_warn() {
        let mut data = clean_week();
        data.reports[0].conflict = true;
        data.reports[1].conflict = true;
        let s = summarize(
            "example.com",
            Mode::Testing,
            &data,
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.conflicting_reports, 2);
        assert_eq!(s.verdict.status, VerdictStatus::NotReady);
        assert_eq!(s.verdict.reasons.len(), 1, "{:?}", s.verdict.reasons);
        assert!(s.verdict.reasons[0].starts_with("2 reports conflict"));
        data.failures.clear();
        data.totals[0].failed = 0;
        let s = summarize(
            "example.com",
            Mode::Enforce,
            &data,
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        assert_eq!(s.verdict.status, VerdictStatus::Warning, "not healthy");
        assert!(s.verdict.reasons[0].contains("cannot be trusted"));
    }

    #[test]
    fn days_are_clipped_to_the_window_and_counted_once() {
        let reports = vec![
            // Overlapping reports of the same day count once.
            day_report("A", 2),
            day_report("B", 2),
            // Before the window.
            ReportSpan {
                organization: "C".into(),
                start: datetime!(2025-02-01 00:00 UTC),
                end: datetime!(2025-02-02 00:00 UTC),
                conflict: false,
                signing_domain: None,
                submitter_mismatch: false,
                report_id: String::new(),
                digest: String::new(),
                successful: 0,
                failed: 0,
            },
            // A multi-day report straddling the window start covers only in-window days.
            ReportSpan {
                organization: "D".into(),
                start: datetime!(2025-02-27 00:00 UTC),
                end: datetime!(2025-03-02 00:00 UTC),
                conflict: false,
                signing_domain: None,
                submitter_mismatch: false,
                report_id: String::new(),
                digest: String::new(),
                successful: 0,
                failed: 0,
            },
        ];
        assert_eq!(days_covered(&reports, SINCE, NOW), 2); // Mar 1 and Mar 3
    }

    #[test]
    fn summary_serializes_for_the_admin_api() {
        let s = summarize(
            "example.com",
            Mode::Testing,
            &clean_week(),
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["tenant"], "example.com");
        assert_eq!(v["mode"], "testing");
        assert_eq!(v["since"], "2025-03-01T00:00:00Z");
        assert_eq!(v["verdict"]["status"], "ready-to-enforce");
        assert_eq!(v["failures_by_result_type"]["sts-policy-fetch-error"], 2);
    }

    #[test]
    fn table_lists_each_tenant_and_its_blockers() {
        let clean = summarize(
            "clean.example",
            Mode::Testing,
            &clean_week(),
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        let mut data = clean_week();
        data.failures.push(FailureGroup {
            policy_type: PolicyType::Sts,
            result_type: ResultType::CertificateHostMismatch,
            receiving_mx: Some("mx.failing.example".into()),
            sessions: 4,
        });
        let failing = summarize(
            "failing.example",
            Mode::Testing,
            &data,
            SINCE,
            NOW,
            &VerdictConfig::default(),
        );
        let table = render_table(&[clean, failing]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TENANT"), "{table}");
        assert!(lines[1].starts_with("clean.example"), "{table}");
        assert!(lines[1].ends_with("ready to enforce"), "{table}");
        assert!(lines[1].contains("  0.02%"), "{table}");
        assert!(lines[2].starts_with("failing.example"), "{table}");
        assert!(lines[2].ends_with("not ready"), "{table}");
        assert!(
            table.contains("    - 4 sts sessions failed with certificate-host-mismatch (MX: mx.failing.example)"),
            "{table}"
        );
        assert!(
            table.contains("    certificate-host-mismatch           4"),
            "{table}"
        );
    }
}
