//! Accepting a report: the one path the HTTPS and mail intakes share once each holds a decoded
//! report.
//!
//! The two intakes find the tenant differently (HTTPS from the request path, before reading
//! the body; mail by routing on the JSON and the headers), but both prove it with
//! [`check_tenant`], and both store through [`accept`], which builds the [`StoredReport`],
//! inserts it and answers only once the insert has committed. [`accept`] takes a [`Tenant`],
//! which only [`check_tenant`] makes, so neither path can store a report for a domain it did
//! not check.
//!
//! A report is stored once for every configured tenant among its policy-domains, whatever
//! path or mailbox it arrived by ([`Tenants::of`]): the checked tenant first, which must be
//! among them (else the store rejects it), then the others it names.

use time::OffsetDateTime;

use super::report::{Report, ReportError, trim_unknown_fields};
use super::store::{InsertOutcome, ReportStore, Source, StoreError, StoredReport};
use crate::config::ReportQuota;

/// A domain [`check_tenant`] found to be a tenant of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(String);

impl Tenant {
    /// The tenant domain (normalized).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The tenant check both intakes apply: `domain` (normalized) must be a tenant, else
/// [`ReportError::UnknownDomain`] (404 over HTTPS, 65 by mail).
pub fn check_tenant(is_tenant: &dyn Fn(&str) -> bool, domain: &str) -> Result<Tenant, ReportError> {
    if is_tenant(domain) {
        Ok(Tenant(domain.to_owned()))
    } else {
        Err(ReportError::UnknownDomain(domain.to_owned()))
    }
}

/// The tenants a report is stored for: the one the intake checked, then the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenants {
    first: Tenant,
    others: Vec<Tenant>,
}

impl Tenants {
    /// `first`, plus every other domain among the report's policy-domains that `is_tenant`.
    pub fn of(first: Tenant, report: &Report, is_tenant: &dyn Fn(&str) -> bool) -> Tenants {
        let others = report
            .policy_domains()
            .into_iter()
            .filter(|d| *d != first.as_str() && is_tenant(d))
            .map(|d| Tenant(d.to_owned()))
            .collect();
        Tenants { first, others }
    }

    fn iter(&self) -> impl Iterator<Item = &Tenant> {
        std::iter::once(&self.first).chain(&self.others)
    }
}

/// How a report arrived, beyond its tenant: recorded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Intake path.
    pub source: Source,
    /// The DKIM-verified signing domain of a mail (see [`StoredReport::signing_domain`]).
    pub signing_domain: Option<String>,
    /// See [`StoredReport::submitter_mismatch`].
    pub submitter_mismatch: bool,
}

impl Origin {
    /// A report POSTed over HTTPS: no signature to record.
    pub fn https() -> Origin {
        Origin {
            source: Source::Https,
            signing_domain: None,
            submitter_mismatch: false,
        }
    }
}

/// A report [`accept`] committed, or found already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The tenant the intake checked, which it was stored for.
    pub tenant: String,
    /// The other tenants the report names, which it was stored for too.
    pub also: Vec<String>,
    /// `organization-name`.
    pub organization: String,
    /// `report-id`.
    pub report_id: String,
    /// Over all its tenants: conflicting if any row conflicts, else stored if any row was
    /// new, else a duplicate.
    pub outcome: InsertOutcome,
}

/// Stores `report` for each of `tenants` unless that would pass `quota`. Only once this
/// returns `Ok` may an intake answer 2xx or exit 0; a duplicate is also `Ok`. Each tenant's
/// row is its own transaction: after a crash between them the sender's retry stores the rest
/// (the stored ones are duplicates). Blocking.
pub fn accept(
    store: &dyn ReportStore,
    quota: &ReportQuota,
    tenants: Tenants,
    report: Report,
    raw_json: Vec<u8>,
    origin: Origin,
    received: OffsetDateTime,
) -> Result<Accepted, StoreError> {
    for tenant in tenants.iter() {
        check_quota(store, quota, tenant, received)?;
    }
    let raw_json = match trim_unknown_fields(&raw_json) {
        Some((trimmed, dropped)) => {
            tracing::warn!(
                organization = %report.organization_name,
                report_id = %report.report_id,
                dropped = %dropped.join(", "),
                "large unknown fields left out of the stored report"
            );
            trimmed
        }
        None => raw_json,
    };
    let mut stored = StoredReport {
        tenant: String::new(),
        source: origin.source,
        received,
        report,
        raw_json,
        signing_domain: origin.signing_domain,
        submitter_mismatch: origin.submitter_mismatch,
    };
    let mut outcome = InsertOutcome::Duplicate;
    for tenant in tenants.iter() {
        stored.tenant = tenant.0.clone();
        outcome = match (outcome, store.insert(&stored)?) {
            (InsertOutcome::Conflicting, _) | (_, InsertOutcome::Conflicting) => {
                InsertOutcome::Conflicting
            }
            (InsertOutcome::Inserted, _) | (_, InsertOutcome::Inserted) => InsertOutcome::Inserted,
            _ => InsertOutcome::Duplicate,
        };
    }
    Ok(Accepted {
        tenant: tenants.first.0,
        also: tenants.others.into_iter().map(|t| t.0).collect(),
        organization: stored.report.organization_name,
        report_id: stored.report.report_id,
        outcome,
    })
}

/// Refuses a report once the bytes stored over the 24 h before `now` have reached a quota. The
/// report that crosses a quota is still stored, so a single report is never refused for ever
/// (its compressed size is only known once stored); the overshoot is at most one report per
/// concurrent intake.
fn check_quota(
    store: &dyn ReportStore,
    quota: &ReportQuota,
    tenant: &Tenant,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let used = store.stored_bytes(now - time::Duration::days(1), tenant.as_str())?;
    if used.tenant >= quota.tenant_bytes_per_day as u64 {
        return Err(StoreError::OverQuota(format!(
            "{} has reached its quota of {} bytes of reports a day; retry later",
            tenant.as_str(),
            quota.tenant_bytes_per_day
        )));
    }
    if used.total >= quota.total_bytes_per_day as u64 {
        return Err(StoreError::OverQuota(format!(
            "this server has reached its quota of {} bytes of reports a day; retry later",
            quota.total_bytes_per_day
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http::header::{CONTENT_TYPE, HOST};
    use http::{Method, Request};
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::config::{MailAuthPolicy, TlsRptConfig};
    use crate::registry::{Registry, Snapshot};
    use crate::tlsrpt::https::HttpsIntake;
    use crate::tlsrpt::mail::{MailError, MailIntake, MailReceipt, ingest_message};
    use crate::tlsrpt::service::TlsRpt;
    use crate::tlsrpt::testutil::fixture;

    const REPORT_HOST: &str = "tlsrpt.operator.example";

    /// TLS-RPT with one tenant, example.com, and a report host.
    fn tlsrpt(dir: &tempfile::TempDir) -> Arc<TlsRpt> {
        let registry = Arc::new(Registry::new(Snapshot::from_yaml(
            "domain: example.com\nmode: testing\nmx: [mx1.example.com]\nmax_age: 86400\n",
        )));
        let mut config = TlsRptConfig::defaults(dir.path());
        config.report_host = Some(REPORT_HOST.into());
        Arc::new(TlsRpt::open(&config, registry).unwrap())
    }

    async fn post(tlsrpt: &Arc<TlsRpt>, domain: &str, json: &[u8]) -> (u16, String) {
        let intake = HttpsIntake::new(tlsrpt.clone()).unwrap();
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/tlsrpt/{domain}"))
            .header(HOST, REPORT_HOST)
            .header(CONTENT_TYPE, "application/tlsrpt+json")
            .body(Full::new(Bytes::copy_from_slice(json)))
            .unwrap();
        let resp = intake
            .handle(req, std::net::Ipv4Addr::LOCALHOST.into(), || {})
            .await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Mails `json` as a §5.3 report to the same store and tenants, DKIM not required.
    fn mail(tlsrpt: &TlsRpt, json: &[u8]) -> Result<MailReceipt, MailError> {
        let raw = format!(
            "From: reports@google.com\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=tlsrpt; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: application/tlsrpt+json\r\n\r\n{}\r\n--b--\r\n",
            String::from_utf8_lossy(json)
        );
        let auth = MailAuthPolicy {
            trusted_authserv_ids: Vec::new(),
            require_dkim_pass: false,
            ..MailAuthPolicy::default()
        };
        let store = tlsrpt.store().unwrap();
        let intake = MailIntake {
            store: store.as_ref(),
            limits: tlsrpt.config.limits,
            quota: tlsrpt.config.quota,
            auth: &auth,
            is_tenant: &|d| tlsrpt.is_tenant(d),
        };
        ingest_message(raw.as_bytes(), &intake, OffsetDateTime::now_utc())
    }

    #[tokio::test]
    async fn a_report_posted_then_mailed_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let tlsrpt = tlsrpt(&dir);
        let json = fixture("rfc-example.json");
        assert_eq!(
            post(&tlsrpt, "example.com", &json).await,
            (200, "report stored\n".into())
        );
        let receipt = mail(&tlsrpt, &json).unwrap();
        assert_eq!(receipt.outcome, InsertOutcome::Duplicate);
        assert_eq!(receipt.tenant, "example.com");
        let stored = tlsrpt
            .store()
            .unwrap()
            .get("20250301-example.com-1")
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].source, Source::Https);
    }

    #[tokio::test]
    async fn a_padded_report_is_stored_without_its_large_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let tlsrpt = tlsrpt(&dir);
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("rfc-example.json")).unwrap();
        v["padding"] = "x".repeat(500_000).into();
        let json = serde_json::to_vec(&v).unwrap();
        assert_eq!(post(&tlsrpt, "example.com", &json).await.0, 200);
        let stored = tlsrpt
            .store()
            .unwrap()
            .get("20250301-example.com-1")
            .unwrap();
        let raw = String::from_utf8(stored[0].raw_json.clone()).unwrap();
        assert!(!raw.contains("padding"), "{} bytes stored", raw.len());
        assert!(raw.contains("X509_V_ERR_CERT_HAS_EXPIRED"));
        // The same padded report again is a duplicate, not a conflict.
        assert!(
            post(&tlsrpt, "example.com", &json)
                .await
                .1
                .contains("duplicate")
        );
    }

    #[tokio::test]
    async fn an_unknown_tenant_is_refused_alike_by_https_and_mail() {
        let dir = tempfile::tempdir().unwrap();
        let tlsrpt = tlsrpt(&dir);
        let json = String::from_utf8(fixture("rfc-example.json"))
            .unwrap()
            .replace("example.com", "stranger.example");
        let expected = check_tenant(&|_| false, "stranger.example").unwrap_err();
        let (status, text) = post(&tlsrpt, "stranger.example", json.as_bytes()).await;
        assert_eq!((status, text), (404, format!("{expected}\n")));
        let err = mail(&tlsrpt, json.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, MailError::Report(e) if e.to_string() == expected.to_string()),
            "{err}"
        );
        assert!(
            tlsrpt
                .store()
                .unwrap()
                .get("20250301-stranger.example-1")
                .unwrap()
                .is_empty()
        );
    }
}
