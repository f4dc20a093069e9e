//! Which tenants get their own series (`metrics.per_tenant`).
//!
//! With every tenant exported, a scrape at 100 000 tenants was 30 MB; at a million it would be
//! hundreds. By default only tenants that need attention are exported one by one, and
//! aggregates (tenants by mode, certificates by state, tenants not ready) cover everyone, so
//! the alerts still see every tenant that can fire one.

use std::sync::Arc;

use crate::certs::{CertState, CertStatus};
use crate::config::{PROBLEM_EXPIRY_DAYS, PerTenant, Tenant};
use crate::tlsrpt::TenantWindowTotals;
use crate::util::hash::{FastMap, FastSet};

/// The tenants of one scrape that get their own series.
pub(super) struct Chosen<'a> {
    mode: PerTenant,
    /// In domain order.
    pub tenants: Vec<&'a Arc<Tenant>>,
    /// The same, for lookups (only filled for `problems`).
    domains: FastSet<&'a str>,
}

impl<'a> Chosen<'a> {
    /// Picks from `sorted` (every tenant, in domain order).
    pub fn new(
        mode: PerTenant,
        sorted: &'a [Arc<Tenant>],
        certs: &FastMap<String, CertStatus>,
        totals: &[TenantWindowTotals],
        now: i64,
        validation_failing: &FastSet<String>,
    ) -> Chosen<'a> {
        let tenants: Vec<&Arc<Tenant>> = match mode {
            PerTenant::All => sorted.iter().collect(),
            PerTenant::None => Vec::new(),
            PerTenant::Problems => {
                let failing: FastSet<&str> = totals
                    .iter()
                    .filter(|t| t.failed > 0)
                    .map(|t| t.tenant.as_str())
                    .collect();
                sorted
                    .iter()
                    .filter(|t| {
                        failing.contains(t.domain.as_str())
                            || validation_failing.contains(&t.domain)
                            || cert_problem(certs.get(&t.host), now)
                    })
                    .collect()
            }
        };
        let domains = match mode {
            PerTenant::Problems => tenants.iter().map(|t| t.domain.as_str()).collect(),
            _ => FastSet::default(),
        };
        Chosen {
            mode,
            tenants,
            domains,
        }
    }

    /// Whether `domain` gets its own series.
    pub fn has(&self, domain: &str) -> bool {
        match self.mode {
            PerTenant::All => true,
            PerTenant::None => false,
            PerTenant::Problems => self.domains.contains(domain),
        }
    }

    /// Whether request counters keep their `domain` label.
    pub fn per_domain_requests(&self) -> bool {
        self.mode == PerTenant::All
    }
}

/// Not ready (no certificate, not valid, expired), or expiring within
/// [`PROBLEM_EXPIRY_DAYS`].
pub fn cert_problem(status: Option<&CertStatus>, now: i64) -> bool {
    let Some(status) = status else { return true };
    let valid = matches!(status.state, CertState::Valid | CertState::Renewing);
    let soon = now + PROBLEM_EXPIRY_DAYS * 86_400;
    !valid || status.cert.as_ref().is_none_or(|c| c.not_after <= soon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertInfo;
    use crate::registry::Snapshot;

    fn status(state: CertState, not_after: i64) -> CertStatus {
        let mut s = CertStatus::new(state, "internal");
        s.cert = Some(CertInfo {
            issuer: "ca".into(),
            serial: "01".into(),
            not_before: 0,
            not_after,
        });
        s
    }

    #[test]
    fn problems_are_the_tenants_an_alert_can_fire_for() {
        let yaml: String = ["fine", "expiring", "backoff", "pending", "failing"]
            .iter()
            .map(|d| format!("- {{domain: {d}.example, mode: testing, mx: [mx.example]}}\n"))
            .collect();
        let snap = Snapshot::from_yaml(&yaml);
        let now = 1_000_000;
        let year = now + 365 * 86_400;
        let mut certs = FastMap::default();
        certs.insert(
            "mta-sts.fine.example".into(),
            status(CertState::Valid, year),
        );
        certs.insert(
            "mta-sts.failing.example".into(),
            status(CertState::Valid, year),
        );
        let in_20_days = now + 20 * 86_400;
        certs.insert(
            "mta-sts.expiring.example".into(),
            status(CertState::Renewing, in_20_days),
        );
        certs.insert(
            "mta-sts.backoff.example".into(),
            status(CertState::Backoff, year),
        );
        let totals = [TenantWindowTotals {
            tenant: "failing.example".into(),
            successful: 10,
            failed: 1,
            failures_by_result_type: Vec::new(),
        }];
        let names = |mode| {
            let chosen = Chosen::new(
                mode,
                snap.sorted(),
                &certs,
                &totals,
                now,
                &FastSet::default(),
            );
            let names: Vec<String> = chosen.tenants.iter().map(|t| t.domain.clone()).collect();
            assert!(names.iter().all(|d| chosen.has(d)));
            (names, chosen.has("fine.example"))
        };
        let (problems, fine) = names(PerTenant::Problems);
        assert_eq!(
            problems,
            [
                "backoff.example",
                "expiring.example",
                "failing.example",
                "pending.example"
            ]
        );
        assert!(!fine);
        assert_eq!(names(PerTenant::All).0.len(), 5);
        assert!(names(PerTenant::All).1);
        assert_eq!(names(PerTenant::None), (Vec::new(), false));
    }
}
