//! Report mails and a store for the mail intake's unit tests.

use time::OffsetDateTime;
use time::macros::datetime;

use super::{MailAuthPolicy, MailError, MailIntake, MailReceipt, ingest_message};
use crate::tlsrpt::decode::Limits;
use crate::tlsrpt::store::SqliteStore;
use crate::tlsrpt::testutil::gzip;

/// The fixed "now" the tests ingest at.
pub(crate) const NOW: OffsetDateTime = datetime!(2025-03-02 08:00 UTC);
/// The authserv-id the tests trust.
pub(crate) const MTA: &str = "mx.operator.example";

/// Base64 with 76-character lines, as MTAs encode attachments.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    // 76-character lines (RFC 2045 §6.8); base64 text is ASCII, so byte chunks are whole.
    encoded
        .as_bytes()
        .chunks(76)
        .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// A §5.3 report mail carrying `json` gzipped, with the given extra headers.
pub(crate) fn report_mail(extra_headers: &str, json: &[u8], filename: &str) -> Vec<u8> {
    format!(
        "{extra_headers}From: TLS Reporting <noreply-smtp-tls-reporting@google.com>\r\n\
         To: tlsrpt@operator.example\r\n\
         Subject: Report Domain: example.org Submitter: google.com Report-ID: <2025-03-01T00:00:00Z_example.org>\r\n\
         TLS-Report-Domain: example.org\r\n\
         TLS-Report-Submitter: google.com\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is an aggregate TLS report from google.com\r\n\
         --b1\r\n\
         Content-Type: application/tlsrpt+gzip\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\
         \r\n\
         {}\r\n\
         --b1--\r\n",
        base64(&gzip(json))
    )
    .into_bytes()
}

/// A trusted `dkim=pass` for google.com, folded as a real MTA writes it.
pub(crate) const GOOD_AR: &str = "Authentication-Results: mx.operator.example;\r\n\
    \tdkim=pass (2048-bit key; unprotected) header.d=google.com header.i=@google.com header.s=20230601 header.b=AbCdEf12;\r\n\
    \tspf=pass (mx.operator.example: domain of x@google.com designates 209.85.220.41 as permitted sender) smtp.mailfrom=google.com\r\n";
/// A §5.3 file name routing to example.org.
pub(crate) const GOOGLE_NAME: &str = "google.com!example.org!1740787200!1740873600!001.json.gz";

/// A fresh store, a DKIM policy trusting [`MTA`], and tenants example.org and example.com.
pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) store: SqliteStore,
    pub(crate) auth: MailAuthPolicy,
}

impl Fixture {
    /// An empty store in a temporary directory.
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("reports.db")).unwrap();
        Fixture {
            _dir: dir,
            store,
            auth: MailAuthPolicy {
                trusted_authserv_ids: vec![MTA.to_string()],
                require_dkim_pass: true,
                ..MailAuthPolicy::default()
            },
        }
    }

    /// Ingests one message at [`NOW`].
    pub(crate) fn ingest(&self, raw: &[u8]) -> Result<MailReceipt, MailError> {
        ingest_message(raw, &self.intake(), NOW)
    }

    /// The intake over this fixture.
    pub(crate) fn intake(&self) -> MailIntake<'_> {
        MailIntake {
            store: &self.store,
            limits: Limits::default(),
            quota: crate::config::ReportQuota::default(),
            auth: &self.auth,
            is_tenant: &|d| d == "example.org" || d == "example.com",
        }
    }
}
