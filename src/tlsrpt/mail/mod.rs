//! Intake by mail (RFC 8460 §5.3): find the report in an RFC 5322 message, check the DKIM
//! verdict the local MTA recorded, route it to a tenant and store it; plus a Maildir sweep.
//!
//! One file per step: [`extract`] finds the report part and the routing headers, [`auth`]
//! applies the DKIM policy, `route` picks the tenant, and [`maildir`] sweeps a Maildir;
//! [`command`] is the `ingest-mail` command around them.
//!
//! Results map to sysexits(3) so a pipe transport bounces or defers correctly:
//! accepted or duplicate → 0, bad data or failed authentication → 65, temporary trouble
//! (database locked, I/O) → 75.

pub mod auth;
pub mod command;
pub mod dkim;
pub mod extract;
pub mod maildir;
mod route;
#[cfg(test)]
mod testutil;

use time::OffsetDateTime;

use super::decode::Limits;
use super::intake::{Origin, Tenants, accept};
use super::report::{ReportError, normalize_domain};
use super::store::{InsertOutcome, ReportStore, Source, StoreError};
pub use crate::config::MailAuthPolicy;
use crate::config::ReportQuota;

pub use auth::{AuthResults, check_dkim, parse_authentication_results};
pub use command::{MailTenants, ingest_command};
pub use extract::{ExtractedReport, extract_report};
pub use maildir::{MaildirSummary, process_maildir};
use route::route;

/// sysexits `EX_OK`: accepted or duplicate.
pub const EX_OK: u8 = 0;
/// sysexits `EX_DATAERR`: the message is not an acceptable report; the MTA bounces it.
pub const EX_DATAERR: u8 = 65;
/// sysexits `EX_TEMPFAIL`: try again later; the MTA keeps the message queued.
pub const EX_TEMPFAIL: u8 = 75;

/// Room for headers, a text part and base64 line breaks around a report at the size cap.
pub const MAIL_OVERHEAD: usize = 1024 * 1024;

/// Largest message accepted: a base64-encoded report at `max_compressed` (×4/3, plus CRLF
/// every 76 characters, under ×3/2) and [`MAIL_OVERHEAD`].
pub fn max_message_size(limits: &Limits) -> usize {
    limits
        .max_compressed
        .saturating_mul(3)
        .saturating_div(2)
        .saturating_add(MAIL_OVERHEAD)
}

/// What mail intake needs: where to store, the caps, the DKIM policy and who the tenants are.
pub struct MailIntake<'a> {
    /// Where reports go.
    pub store: &'a dyn ReportStore,
    /// Size caps (the same as for HTTPS).
    pub limits: Limits,
    /// Caps on the bytes stored a day (the same as for HTTPS).
    pub quota: ReportQuota,
    /// The DKIM policy.
    pub auth: &'a MailAuthPolicy,
    /// Whether a (normalized) domain is a tenant of this server.
    pub is_tenant: &'a dyn Fn(&str) -> bool,
}

/// What was done with a report mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailReceipt {
    /// The tenant the report was routed to and stored for.
    pub tenant: String,
    /// The other tenants the report names, which it was stored for too.
    pub also: Vec<String>,
    /// The DKIM-verified signing domain (`None` when the DKIM policy is off).
    pub signing_domain: Option<String>,
    /// `organization-name`.
    pub organization: String,
    /// `report-id`.
    pub report_id: String,
    /// Newly stored, or a duplicate of a stored report.
    pub outcome: InsertOutcome,
    /// Disagreements between subject/filename/headers and the JSON (the JSON won, §5.6).
    pub notes: Vec<String>,
}

impl MailReceipt {
    /// Always [`EX_OK`]: a duplicate is also a success.
    pub fn exit_code(&self) -> u8 {
        EX_OK
    }
}

/// Why a report mail was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The message holds no usable report part.
    #[error("no TLS-RPT report in the message: {0}")]
    NoReport(String),
    /// The report part was refused (size, media type, JSON, unknown domain).
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A header the intake reads is longer than [`extract::MAX_HEADER_LEN`].
    #[error(
        "the {name} header is {len} bytes long, over the cap of {} bytes",
        extract::MAX_HEADER_LEN
    )]
    HeaderTooLong {
        /// The header's name.
        name: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The DKIM policy was not met.
    #[error("not authenticated: {0}")]
    Auth(String),
    /// The DKIM policy could not be checked now (a key lookup timed out or failed).
    #[error("not authenticated yet: {0}")]
    AuthTemporary(String),
    /// Storage failed; retrying later may work unless the store rejected the report.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the message failed.
    #[error("reading message: {0}")]
    Io(String),
}

impl MailError {
    /// The sysexits code a pipe transport should see.
    pub fn exit_code(&self) -> u8 {
        match self {
            MailError::Store(e) if e.is_temporary() => EX_TEMPFAIL,
            MailError::Io(_) | MailError::AuthTemporary(_) => EX_TEMPFAIL,
            _ => EX_DATAERR,
        }
    }
}

/// The normalized domain of an address (`user@domain`, `<…>`) or of a bare domain.
fn domain_of(value: &str) -> Option<String> {
    let value = value.trim().trim_start_matches('<').trim_end_matches('>');
    let domain = value.rsplit_once('@').map_or(value, |(_, d)| d);
    let domain = normalize_domain(domain);
    (!domain.is_empty()).then_some(domain)
}

/// Why the report's submitter (`TLS-Report-Submitter`) or `contact-info` domain is not the
/// DKIM signing domain `signer` or below it, if it is not: the DKIM pass then vouches only
/// for the signer, not for the name the report gives.
fn submitter_mismatch(extracted: &ExtractedReport, signer: &str) -> Option<String> {
    let contact = extracted
        .report
        .contact_info
        .as_deref()
        .and_then(contact_domain);
    let named = [
        ("TLS-Report-Submitter", extracted.submitter.clone()),
        ("contact-info", contact),
    ];
    let off: Vec<String> = named
        .into_iter()
        .filter_map(|(what, d)| d.map(|d| (what, d)))
        .filter(|(_, d)| !auth::signs_for(signer, d))
        .map(|(what, d)| format!("{what} {d}"))
        .collect();
    (!off.is_empty()).then(|| {
        format!(
            "{} not at or below the DKIM signing domain {signer}: flagged",
            off.join(" and ")
        )
    })
}

/// The domain of a `contact-info`: an address (`mailto:` or bare) or a URI's host.
fn contact_domain(contact: &str) -> Option<String> {
    let contact = contact.trim();
    if let Some((_, rest)) = contact.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = host.split(':').next().unwrap_or(host);
        let host = normalize_domain(host);
        return (!host.is_empty()).then_some(host);
    }
    domain_of(contact.strip_prefix("mailto:").unwrap_or(contact))
}

/// Handle one report mail end to end: extract, authenticate, route, then [`accept`] like any
/// other intake.
pub fn ingest_message(
    raw: &[u8],
    intake: &MailIntake<'_>,
    now: OffsetDateTime,
) -> Result<MailReceipt, MailError> {
    let extracted = extract_report(raw, &intake.limits)?;
    let signing_domain = check_dkim(&extracted, raw, intake.auth)?;
    let mut notes = Vec::new();
    let tenant = route(&extracted, intake.is_tenant, &mut notes)?;
    let tenants = Tenants::of(tenant, &extracted.report, intake.is_tenant);
    let mismatch = signing_domain
        .as_deref()
        .and_then(|signer| submitter_mismatch(&extracted, signer));
    notes.extend(mismatch.clone());
    let origin = Origin {
        source: Source::Mail,
        signing_domain: signing_domain.clone(),
        submitter_mismatch: mismatch.is_some(),
    };
    let accepted = accept(
        intake.store,
        &intake.quota,
        tenants,
        extracted.report,
        extracted.raw_json,
        origin,
        now,
    )?;
    Ok(MailReceipt {
        tenant: accepted.tenant,
        also: accepted.also,
        signing_domain,
        organization: accepted.organization,
        report_id: accepted.report_id,
        outcome: accepted.outcome,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::testutil::{Fixture, GOOD_AR, GOOGLE_NAME, MTA, NOW, report_mail};
    use super::*;
    use crate::tlsrpt::store::SqliteStore;
    use crate::tlsrpt::testutil::fixture;

    #[test]
    fn multipart_report_with_passing_dkim_is_stored_then_duplicate() {
        let f = Fixture::new();
        let mail = report_mail(GOOD_AR, &fixture("google.json"), GOOGLE_NAME);
        let receipt = f.ingest(&mail).unwrap();
        assert_eq!(receipt.tenant, "example.org");
        assert_eq!(receipt.organization, "Google Inc.");
        assert_eq!(receipt.outcome, InsertOutcome::Inserted);
        assert!(receipt.notes.is_empty(), "{:?}", receipt.notes);
        assert_eq!(receipt.exit_code(), EX_OK);
        let stored = f.store.get("2025-03-01T00:00:00Z_example.org").unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].source, Source::Mail);
        assert_eq!(stored[0].raw_json, fixture("google.json"));

        let again = f.ingest(&mail).unwrap();
        assert_eq!(again.outcome, InsertOutcome::Duplicate);
        assert_eq!(again.exit_code(), EX_OK);
    }

    #[test]
    fn the_signing_domain_is_recorded_and_a_pass_for_another_domain_is_flagged() {
        let f = Fixture::new();
        let genuine = f
            .ingest(&report_mail(GOOD_AR, &fixture("google.json"), GOOGLE_NAME))
            .unwrap();
        assert_eq!(genuine.signing_domain.as_deref(), Some("google.com"));
        assert!(genuine.notes.is_empty(), "{:?}", genuine.notes);
        // A valid signature of evil.example on a report that names Google.
        let json = String::from_utf8(fixture("google.json"))
            .unwrap()
            .replace("example.org", "example.com");
        let evil_ar = GOOD_AR.replace("google.com", "evil.example");
        let mail = String::from_utf8(report_mail(&evil_ar, json.as_bytes(), "r.json.gz"))
            .unwrap()
            .replace(
                "TLS-Report-Submitter: google.com",
                "TLS-Report-Submitter: evil.example",
            )
            .replace("example.org", "example.com");
        let receipt = f.ingest(mail.as_bytes()).unwrap();
        assert_eq!(receipt.organization, "Google Inc.");
        assert_eq!(receipt.signing_domain.as_deref(), Some("evil.example"));
        assert_eq!(
            receipt.notes,
            [
                "contact-info google.com not at or below the DKIM signing domain evil.example: flagged"
            ]
        );
        let stored = f.store.get("2025-03-01T00:00:00Z_example.com").unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].signing_domain.as_deref(), Some("evil.example"));
        assert!(stored[0].submitter_mismatch);
        let stored = f.store.get("2025-03-01T00:00:00Z_example.org").unwrap();
        assert_eq!(stored[0].signing_domain.as_deref(), Some("google.com"));
        assert!(!stored[0].submitter_mismatch);
    }

    #[test]
    fn contact_info_domains_of_addresses_and_uris() {
        assert_eq!(
            contact_domain("mailto:a@Tls.Google.com").as_deref(),
            Some("tls.google.com")
        );
        assert_eq!(contact_domain("a@b.example").as_deref(), Some("b.example"));
        assert_eq!(
            contact_domain("https://u@reports.example:8443/x?y").as_deref(),
            Some("reports.example")
        );
    }

    #[test]
    fn a_report_naming_two_tenants_is_stored_for_both() {
        let f = Fixture::new();
        let mut value: serde_json::Value = serde_json::from_slice(&fixture("google.json")).unwrap();
        let policies = value["policies"].as_array_mut().unwrap();
        let mut other = policies[0].clone();
        other["policy"]["policy-domain"] = "example.com".into();
        policies.push(other);
        let json = serde_json::to_vec(&value).unwrap();
        let receipt = f.ingest(&report_mail(GOOD_AR, &json, GOOGLE_NAME)).unwrap();
        let mut both = receipt.also.clone();
        both.push(receipt.tenant.clone());
        both.sort();
        assert_eq!(both, ["example.com", "example.org"]);
        let stored = f.store.get("2025-03-01T00:00:00Z_example.org").unwrap();
        let tenants: Vec<&str> = stored.iter().map(|r| r.tenant.as_str()).collect();
        assert_eq!(tenants.len(), 2);
        assert!(tenants.contains(&"example.org") && tenants.contains(&"example.com"));
        assert!(stored.iter().all(|r| !r.conflict));
        assert_eq!(
            f.ingest(&report_mail(GOOD_AR, &json, GOOGLE_NAME))
                .unwrap()
                .outcome,
            InsertOutcome::Duplicate
        );
    }

    #[test]
    fn the_eml_fixture_is_accepted() {
        let f = Fixture::new();
        let receipt = f.ingest(&fixture("google-report.eml")).unwrap();
        assert_eq!(receipt.report_id, "2025-03-01T00:00:00Z_example.org");
        assert_eq!(receipt.outcome, InsertOutcome::Inserted);
    }

    #[test]
    fn mail_without_passing_dkim_is_refused_with_65_and_not_stored() {
        let f = Fixture::new();
        let json = fixture("google.json");
        let cases = [
            ("", "no DKIM result from a trusted authserv-id"),
            (
                "Authentication-Results: mx.operator.example; dkim=fail header.d=google.com\r\n",
                "saw dkim=fail header.d=google.com",
            ),
            // A pass from an authserv-id we do not trust (e.g. forged upstream) is ignored.
            (
                "Authentication-Results: evil.example; dkim=pass header.d=google.com\r\n",
                "no DKIM result from a trusted authserv-id",
            ),
            // A pass for the wrong domain does not vouch for google.com.
            (
                "Authentication-Results: mx.operator.example; dkim=pass header.d=notgoogle.com\r\n",
                "saw dkim=pass header.d=notgoogle.com",
            ),
        ];
        for (header, expected) in cases {
            let err = f
                .ingest(&report_mail(header, &json, GOOGLE_NAME))
                .unwrap_err();
            assert!(
                matches!(err, MailError::Auth(ref m) if m.contains(expected)),
                "{header:?}: {err}"
            );
            assert_eq!(err.exit_code(), EX_DATAERR);
        }
        assert!(
            f.store
                .get("2025-03-01T00:00:00Z_example.org")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn dkim_can_be_switched_off_explicitly() {
        let mut f = Fixture::new();
        f.auth.require_dkim_pass = false;
        let receipt = f
            .ingest(&report_mail("", &fixture("google.json"), GOOGLE_NAME))
            .unwrap();
        assert_eq!(receipt.outcome, InsertOutcome::Inserted);
    }

    #[test]
    fn json_wins_over_subject_filename_and_headers() {
        let f = Fixture::new();
        // Headers, subject and file name all say example.org; the JSON says example.com.
        let json = fixture("rfc-example.json");
        let ar = "Authentication-Results: mx.operator.example; dkim=pass header.d=google.com\r\n";
        let receipt = f.ingest(&report_mail(ar, &json, GOOGLE_NAME)).unwrap();
        assert_eq!(receipt.tenant, "example.com");
        assert_eq!(receipt.report_id, "20250301-example.com-1");
        assert!(
            receipt.notes.iter().any(|n| n
                == "TLS-Report-Domain header says example.org but the JSON says example.com; using the JSON"),
            "{:?}",
            receipt.notes
        );
        assert!(
            receipt
                .notes
                .iter()
                .any(|n| n.starts_with("file name says example.org"))
        );
        assert!(
            receipt
                .notes
                .iter()
                .any(|n| n.starts_with("subject says report-id"))
        );
        assert_eq!(
            f.store.get("20250301-example.com-1").unwrap()[0].tenant,
            "example.com"
        );
    }

    #[test]
    fn report_without_policy_domain_is_routed_by_the_header() {
        let f = Fixture::new();
        let json = String::from_utf8(fixture("google.json"))
            .unwrap()
            .replace(r#""policy-domain":"example.org","#, "");
        let receipt = f
            .ingest(&report_mail(GOOD_AR, json.as_bytes(), "report.json.gz"))
            .unwrap();
        assert_eq!(receipt.tenant, "example.org");
        assert_eq!(
            receipt.notes,
            ["report names no policy-domain; routed by the TLS-Report-Domain header"]
        );
    }

    #[test]
    fn report_for_an_unknown_domain_is_65_and_not_stored() {
        let f = Fixture::new();
        let json = String::from_utf8(fixture("google.json"))
            .unwrap()
            .replace("example.org", "stranger.example");
        let err = f
            .ingest(&report_mail(GOOD_AR, json.as_bytes(), GOOGLE_NAME))
            .unwrap_err();
        assert!(
            matches!(err, MailError::Report(ReportError::UnknownDomain(ref d)) if d == "stranger.example"),
            "{err}"
        );
        assert_eq!(err.exit_code(), EX_DATAERR);
        assert!(
            f.store
                .get("2025-03-01T00:00:00Z_stranger.example")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn plain_json_attachment_by_filename_is_found() {
        let f = Fixture::new();
        let json = fixture("google.json");
        let mail = format!(
            "{GOOD_AR}From: reports@google.com\r\nTLS-Report-Submitter: google.com\r\nSubject: report\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n\
             --x\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n\
             --x\r\nContent-Type: application/octet-stream; name=\"google.com!example.org!1740787200!1740873600.json\"\r\n\
             Content-Disposition: attachment; filename=\"google.com!example.org!1740787200!1740873600.json\"\r\n\r\n\
             {}\r\n--x--\r\n",
            String::from_utf8(json).unwrap()
        );
        let receipt = f.ingest(mail.as_bytes()).unwrap();
        assert_eq!(receipt.tenant, "example.org");
        assert_eq!(receipt.outcome, InsertOutcome::Inserted);
    }

    #[test]
    fn mail_without_a_report_or_with_a_broken_one_is_65() {
        let f = Fixture::new();
        let plain = format!("{GOOD_AR}From: a@google.com\r\nSubject: hi\r\n\r\nhello\r\n");
        let err = f.ingest(plain.as_bytes()).unwrap_err();
        assert!(matches!(err, MailError::NoReport(_)), "{err}");
        assert_eq!(err.exit_code(), EX_DATAERR);

        let broken = report_mail(GOOD_AR, b"{\"organization-name\":", GOOGLE_NAME);
        let err = f.ingest(&broken).unwrap_err();
        assert!(
            matches!(err, MailError::Report(ReportError::Invalid(_))),
            "{err}"
        );
        assert_eq!(err.exit_code(), EX_DATAERR);
    }

    #[test]
    fn locked_database_is_75() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.db");
        let store =
            SqliteStore::open_with_timeout(&path, std::time::Duration::from_millis(50)).unwrap();
        let blocker = rusqlite::Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let auth = MailAuthPolicy {
            trusted_authserv_ids: vec![MTA.into()],
            require_dkim_pass: true,
            ..MailAuthPolicy::default()
        };
        let intake = MailIntake {
            store: &store,
            limits: Limits::default(),
            quota: crate::config::ReportQuota::default(),
            auth: &auth,
            is_tenant: &|_| true,
        };
        let mail = report_mail(GOOD_AR, &fixture("google.json"), GOOGLE_NAME);
        let err = ingest_message(&mail, &intake, NOW).unwrap_err();
        assert!(
            matches!(err, MailError::Store(StoreError::Busy(_))),
            "{err}"
        );
        assert_eq!(err.exit_code(), EX_TEMPFAIL);
    }
}
