//! Accepting a report: the one path the HTTPS and mail intakes share once each holds a decoded
//! report.
//!
//! The two intakes find the tenant differently (HTTPS from the request path, before reading
//! the body; mail by routing on the JSON and the headers), but both prove it with
//! [`check_tenant`], and both store through [`accept`], which builds the [`StoredReport`],
//! inserts it and answers only once the insert has committed. [`accept`] takes a [`Tenant`],
//! which only [`check_tenant`] makes, so neither path can store a report for a domain it did
//! not check.

use time::OffsetDateTime;

use super::report::{Report, ReportError};
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

/// A report [`accept`] committed, or found already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The tenant it was stored for.
    pub tenant: String,
    /// `organization-name`.
    pub organization: String,
    /// `report-id`.
    pub report_id: String,
    /// Newly stored, or a duplicate of a stored report.
    pub outcome: InsertOutcome,
}

/// Stores `report` for `tenant` unless that would pass `quota`. Only once this returns `Ok`
/// may an intake answer 2xx or exit 0; a duplicate is also `Ok`. Blocking.
pub fn accept(
    store: &dyn ReportStore,
    quota: &ReportQuota,
    tenant: Tenant,
    report: Report,
    raw_json: Vec<u8>,
    source: Source,
    received: OffsetDateTime,
) -> Result<Accepted, StoreError> {
    check_quota(store, quota, &tenant, received)?;
    let organization = report.organization_name.clone();
    let report_id = report.report_id.clone();
    let outcome = store.insert(&StoredReport {
        tenant: tenant.0.clone(),
        source,
        received,
        report,
        raw_json,
    })?;
    Ok(Accepted {
        tenant: tenant.0,
        organization,
        report_id,
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
