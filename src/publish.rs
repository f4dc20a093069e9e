//! What operators publish in DNS: the TXT records a change calls for, and whether a tenant is
//! ready for its `_mta-sts` id to be published.
//!
//! RFC 8461 §8.1: a sender that sees a new id fetches the policy; if the body it gets is still
//! the old one it caches that under the new id. So a new id may be published only once the
//! body it names is served, over a valid certificate. Records are therefore logged after the
//! snapshot swap (the body is live) with the certificate state alongside.

use crate::certs::{CertBoard, CertState, CertStatus};
use crate::config::Tenant;
use crate::policy::{Mode, zone_quote};
use crate::registry::Snapshot;

/// Whether a certificate status means the policy host can be fetched by a sender: valid (or
/// being renewed while the old one is served) and not expired.
pub fn cert_ready(status: Option<&CertStatus>, now: i64) -> bool {
    status.is_some_and(|s| {
        matches!(s.state, CertState::Valid | CertState::Renewing)
            && s.cert.as_ref().is_some_and(|c| c.not_after > now)
    })
}

/// Whether `tenant`'s policy is the one being served and its certificate is valid: only then
/// may its id be published.
pub fn is_ready(snapshot: &Snapshot, board: &CertBoard, tenant: &Tenant, now: i64) -> bool {
    snapshot
        .get(&tenant.host)
        .is_some_and(|served| served.policy.id == tenant.policy.id)
        && cert_ready(board.get(&tenant.host).as_ref(), now)
}

/// The `_mta-sts` record as the operator enters it: `_mta-sts.example.com TXT "v=STSv1; id=…"`.
pub fn sts_record(tenant: &Tenant) -> String {
    format!(
        "_mta-sts.{} TXT {}",
        tenant.domain,
        zone_quote(&tenant.policy.txt_value())
    )
}

/// The `_smtp._tls` record, when the tenant has reporting addresses.
pub fn tlsrpt_record(tenant: &Tenant) -> Option<String> {
    tenant
        .tlsrpt_txt_value()
        .map(|v| format!("_smtp._tls.{} TXT {}", tenant.domain, zone_quote(&v)))
}

/// One DNS-relevant change between two snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new or changed policy id: publish this `_mta-sts` record.
    StsId {
        /// Tenant domain.
        domain: String,
        /// The record line.
        record: String,
        /// The tenant was not served before.
        added: bool,
    },
    /// A new or changed `_smtp._tls` record.
    TlsRpt {
        /// Tenant domain.
        domain: String,
        /// The record line.
        record: String,
    },
    /// The tenant no longer has TLS-RPT addresses configured.
    TlsRptRemoved {
        /// Tenant domain.
        domain: String,
    },
    /// The tenant is no longer served.
    Removed {
        /// Tenant domain.
        domain: String,
        /// Its last mode: anything but `none` means senders still hold a live policy.
        mode: Mode,
    },
}

/// The changes from `old` to `new`, sorted by domain. O(tenants).
pub fn changes(old: &Snapshot, new: &Snapshot) -> Vec<Change> {
    let mut out = Vec::new();
    for t in new.tenants() {
        let before = old.get(&t.host);
        if before.is_none_or(|b| b.policy.id != t.policy.id) {
            out.push(Change::StsId {
                domain: t.domain.clone(),
                record: sts_record(t),
                added: before.is_none(),
            });
        }
        let old_rpt = before.and_then(|b| b.tlsrpt_txt_value());
        let new_rpt = t.tlsrpt_txt_value();
        if old_rpt != new_rpt {
            match tlsrpt_record(t) {
                Some(record) => out.push(Change::TlsRpt {
                    domain: t.domain.clone(),
                    record,
                }),
                None => out.push(Change::TlsRptRemoved {
                    domain: t.domain.clone(),
                }),
            }
        }
    }
    for t in old.tenants() {
        if new.get(&t.host).is_none() {
            out.push(Change::Removed {
                domain: t.domain.clone(),
                mode: t.policy.mode,
            });
        }
    }
    out.sort_by(|a, b| domain_of(a).cmp(domain_of(b)));
    out
}

fn domain_of(c: &Change) -> &str {
    match c {
        Change::StsId { domain, .. }
        | Change::TlsRpt { domain, .. }
        | Change::TlsRptRemoved { domain }
        | Change::Removed { domain, .. } => domain,
    }
}

/// Logs every change once, at info: the exact record to publish, and whether the tenant is
/// ready (certificate valid) for it to be published now.
pub fn log_changes(old: &Snapshot, new: &Snapshot, board: &CertBoard) {
    let now = crate::util::unix_now();
    for change in changes(old, new) {
        match change {
            Change::StsId {
                domain,
                record,
                added,
            } => {
                let ready = new
                    .by_domain(&domain)
                    .is_some_and(|t| is_ready(new, board, t, now));
                tracing::info!(%domain, ready, added, "{record}");
            }
            Change::TlsRpt { domain, record } => tracing::info!(%domain, "{record}"),
            Change::TlsRptRemoved { domain } => {
                tracing::info!(%domain, "_smtp._tls.{domain} TXT record is no longer configured; remove it")
            }
            Change::Removed { domain, mode } if mode != Mode::None => tracing::warn!(
                %domain, %mode,
                "tenant removed while its policy was {mode}: senders keep the cached policy until max_age passes; RFC 8461 §8.3 withdraws with mode none and a new id first"
            ),
            Change::Removed { domain, .. } => tracing::info!(
                %domain,
                "tenant removed; its _mta-sts.{domain} TXT record can go once the earlier policies' max_age has passed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_tenants;
    use std::path::Path;
    use std::sync::Arc;

    fn snap(yaml: &str) -> Snapshot {
        let f = parse_tenants(Path::new("t.yaml"), yaml);
        assert!(
            f.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            f.diagnostics
        );
        Snapshot::new(f.tenants.into_iter().map(Arc::new).collect(), vec![])
    }

    #[test]
    fn records_and_changes() {
        let old = snap(
            "- {domain: a.example, mode: testing, mx: [mx.a.example], max_age: 86400}\n- {domain: b.example, mode: enforce, mx: [mx.b.example], max_age: 604800}\n",
        );
        let new = snap(
            "- {domain: a.example, mode: enforce, mx: [mx.a.example], max_age: 604800, tlsrpt: {rua: [\"mailto:r@a.example\"]}}\n- {domain: c.example, mode: testing, mx: [mx.c.example], max_age: 86400}\n",
        );
        let a = new.by_domain("a.example").unwrap();
        assert_eq!(
            sts_record(a),
            format!("_mta-sts.a.example TXT \"v=STSv1; id={}\"", a.policy.id)
        );
        let got = changes(&old, &new);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            matches!(&got[0], Change::StsId { domain, added: false, .. } if domain == "a.example")
        );
        assert_eq!(
            got[1],
            Change::TlsRpt {
                domain: "a.example".into(),
                record: "_smtp._tls.a.example TXT \"v=TLSRPTv1; rua=mailto:r@a.example\"".into()
            }
        );
        assert_eq!(
            got[2],
            Change::Removed {
                domain: "b.example".into(),
                mode: Mode::Enforce
            }
        );
        assert!(
            matches!(&got[3], Change::StsId { domain, added: true, .. } if domain == "c.example")
        );
        assert!(changes(&new, &new).is_empty());
    }

    #[test]
    fn readiness_needs_a_valid_unexpired_certificate() {
        let s = snap("domain: a.example\nmode: testing\nmx: [mx.a.example]\n");
        let t = s.by_domain("a.example").unwrap().clone();
        let board = CertBoard::new();
        assert!(!is_ready(&s, &board, &t, 1000));
        let mut status = CertStatus::new(CertState::Valid, "internal");
        status.cert = Some(crate::certs::CertInfo {
            issuer: "ca".into(),
            serial: "01".into(),
            not_before: 0,
            not_after: 2000,
        });
        board.set(&t.host, status.clone());
        assert!(is_ready(&s, &board, &t, 1000));
        assert!(!is_ready(&s, &board, &t, 2000), "expired");
        status.state = CertState::Pending;
        board.set(&t.host, status);
        assert!(!is_ready(&s, &board, &t, 1000));
        let other = snap("domain: a.example\nmode: enforce\nmx: [mx.a.example]\n");
        let newer = other.by_domain("a.example").unwrap();
        assert!(!is_ready(&s, &board, newer, 1000), "body not served yet");
    }
}
