//! The validation's part of the "ready to enforce" verdict: TLS-RPT reports say what senders
//! saw under `testing`; the checks say what `enforce` would break now. A testing tenant is not
//! ready while a check below is in error, whatever the reports say.

use super::{Check, Status, TenantReport};
use crate::tlsrpt::{Verdict, VerdictStatus};

/// The checks whose error blocks enforcing, and what each error means for senders.
const BLOCKERS: [(Check, &str); 5] = [
    (Check::Mx, "an MX host is not covered by the policy"),
    (Check::StsRecord, "the _mta-sts record is stale or invalid"),
    (
        Check::PolicyHost,
        "the policy host does not point to this service",
    ),
    (
        Check::PolicyFetch,
        "the policy is unreachable as senders fetch it",
    ),
    (Check::MxStarttls, "an MX host's STARTTLS certificate fails"),
];

/// What `mta-stsd reports` (which runs no check) says of a testing tenant.
pub const NOT_RUN_OFFLINE: &str = "validation not run: run mta-stsd validate (MX coverage, the _mta-sts id, the policy fetch and the MX certificates are not judged from reports)";

/// What the daemon says of a testing tenant its watchdog has no result for.
pub const NOT_RUN_YET: &str =
    "validation has no result for this tenant yet (watchdog off, or not yet reached it)";

/// One reason per blocking check in error: `validation: <meaning> (<check>: <observed>)`.
pub fn blockers(report: &TenantReport) -> Vec<String> {
    BLOCKERS
        .iter()
        .filter_map(|(check, meaning)| {
            let v = report
                .checks
                .iter()
                .find(|v| v.check == *check && v.status == Status::Error)?;
            Some(format!(
                "validation: {meaning} ({}: {})",
                check.as_str(),
                v.observed
            ))
        })
        .collect()
}

/// Combines a testing tenant's TLS-RPT `verdict` with its latest validation: a blocker makes
/// it not ready and is named in the reasons; no validation is said (`not_run`) without
/// changing the status. Verdicts of `enforce` and `none` tenants are left as they are.
pub fn gate(verdict: &mut Verdict, report: Option<&TenantReport>, not_run: &str) {
    if !matches!(
        verdict.status,
        VerdictStatus::ReadyToEnforce | VerdictStatus::NotReady
    ) {
        return;
    }
    let Some(report) = report else {
        verdict.reasons.push(not_run.to_owned());
        return;
    };
    let blockers = blockers(report);
    if !blockers.is_empty() {
        verdict.status = VerdictStatus::NotReady;
        verdict.reasons.extend(blockers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Verdict as Check6;

    fn report(bad: &[(Check, Status)]) -> TenantReport {
        let checks = Check::ALL
            .iter()
            .map(|&check| Check6 {
                check,
                status: bad
                    .iter()
                    .find(|(c, _)| *c == check)
                    .map_or(Status::Ok, |(_, s)| *s),
                observed: format!("seen by {}", check.as_str()),
                action: None,
            })
            .collect();
        TenantReport {
            domain: "example.com".into(),
            checks,
            checked_at: "1970-01-01T00:00:00Z".into(),
        }
    }

    fn ready() -> Verdict {
        Verdict {
            status: VerdictStatus::ReadyToEnforce,
            reasons: Vec::new(),
        }
    }

    #[test]
    fn each_blocking_error_makes_a_ready_tenant_not_ready_and_is_named() {
        for (check, meaning) in BLOCKERS {
            let mut v = ready();
            gate(
                &mut v,
                Some(&report(&[(check, Status::Error)])),
                NOT_RUN_YET,
            );
            assert_eq!(v.status, VerdictStatus::NotReady, "{check:?}");
            assert_eq!(v.reasons.len(), 1, "{:?}", v.reasons);
            assert!(v.reasons[0].contains(meaning), "{:?}", v.reasons);
            let seen = format!("({}: seen by {})", check.as_str(), check.as_str());
            assert!(v.reasons[0].ends_with(&seen), "{:?}", v.reasons);
        }
    }

    #[test]
    fn warnings_and_the_tlsrpt_record_do_not_block_and_reasons_add_up() {
        let mut v = ready();
        let mild = report(&[
            (Check::Mx, Status::Warning),
            (Check::MxStarttls, Status::Warning),
            (Check::TlsRptRecord, Status::Error),
        ]);
        gate(&mut v, Some(&mild), NOT_RUN_YET);
        assert_eq!(v, ready());
        let mut v = Verdict {
            status: VerdictStatus::NotReady,
            reasons: vec!["reports cover 3 of the 7 days needed".into()],
        };
        let two = report(&[
            (Check::Mx, Status::Error),
            (Check::MxStarttls, Status::Error),
        ]);
        gate(&mut v, Some(&two), NOT_RUN_YET);
        assert_eq!(v.status, VerdictStatus::NotReady);
        assert_eq!(v.reasons.len(), 3, "{:?}", v.reasons);
        assert!(v.reasons[1].contains("(mx: "));
        assert!(v.reasons[2].contains("(mx-starttls: "));
    }

    #[test]
    fn no_validation_is_said_and_enforce_verdicts_are_left_alone() {
        let mut v = ready();
        gate(&mut v, None, NOT_RUN_OFFLINE);
        assert_eq!(v.status, VerdictStatus::ReadyToEnforce);
        assert_eq!(v.reasons, [NOT_RUN_OFFLINE]);
        for status in [
            VerdictStatus::Healthy,
            VerdictStatus::Warning,
            VerdictStatus::NoReports,
            VerdictStatus::NotApplicable,
        ] {
            let mut v = Verdict {
                status,
                reasons: Vec::new(),
            };
            gate(
                &mut v,
                Some(&report(&[(Check::Mx, Status::Error)])),
                NOT_RUN_YET,
            );
            gate(&mut v, None, NOT_RUN_YET);
            assert_eq!((v.status, v.reasons.len()), (status, 0));
        }
    }
}
