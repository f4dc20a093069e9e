//! Fixtures: config dirs in temp dirs, the internal CA certificate, TLS-RPT reports and mails.

use std::path::{Path, PathBuf};

use mta_stsd::tlsrpt::{InsertOutcome, Report, ReportStore, Source, StoredReport};
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// A configuration directory in a temp dir.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
}

/// The server file every test starts from: loopback, ephemeral port, internal CA.
pub const BASE_SERVER_YAML: &str = "listen: \"127.0.0.1:0\"\nstate_dir: state\nissuer: internal\n";

impl TestConfig {
    /// A config with the base server file and no tenants.
    pub fn new() -> Self {
        Self::with_server(BASE_SERVER_YAML)
    }

    /// A config with the given server file.
    pub fn with_server(server_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tenants")).unwrap();
        std::fs::write(dir.path().join("mta-stsd.yaml"), server_yaml).unwrap();
        TestConfig { dir }
    }

    /// The configuration directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `tenants/<name>` with `yaml`.
    pub fn tenant(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join("tenants").join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Writes a simple testing-mode tenant for `domain`.
    pub fn simple_tenant(&self, domain: &str) -> PathBuf {
        self.tenant(
            &format!("{domain}.yaml"),
            &format!("domain: {domain}\nmode: testing\nmx: [mx.{domain}]\nmax_age: 86400\n"),
        )
    }

    /// The internal CA certificate (exists once the daemon was built).
    pub fn ca_der(&self) -> CertificateDer<'static> {
        let pem = std::fs::read(self.dir.path().join("state/ca/ca.crt")).expect("CA certificate");
        CertificateDer::from_pem_slice(&pem).expect("CA PEM")
    }
}

/// Gzip `data` in memory.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Reads `tests/fixtures/tlsrpt/<name>`.
pub fn tlsrpt_fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/tlsrpt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// A one-policy `sts` report for `domain` covering the UTC day `day`, with `failures` of
/// (result-type, MX, sessions).
pub fn report_json(
    org: &str,
    report_id: &str,
    domain: &str,
    day: time::Date,
    successful: u64,
    failures: &[(&str, &str, u64)],
) -> Vec<u8> {
    let start = day.midnight().assume_utc();
    let end = start + time::Duration::days(1);
    let fmt = &time::format_description::well_known::Rfc3339;
    let failed: u64 = failures.iter().map(|f| f.2).sum();
    let details: Vec<serde_json::Value> = failures
        .iter()
        .map(|(kind, mx, n)| {
            serde_json::json!({"result-type": kind, "receiving-mx-hostname": mx,
                "failed-session-count": n})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "organization-name": org,
        "date-range": {"start-datetime": start.format(fmt).unwrap(),
                       "end-datetime": end.format(fmt).unwrap()},
        "contact-info": null,
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain,
                       "policy-string": ["version: STSv1", "mode: testing"],
                       "mx-host": [format!("mx.{domain}")]},
            "summary": {"total-successful-session-count": successful,
                        "total-failure-session-count": failed},
            "failure-details": details,
        }]
    }))
    .unwrap()
}

fn base64(data: &[u8]) -> String {
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

/// An RFC 8460 §5.3 report mail from `submitter` carrying `json` gzipped; with
/// `authserv_id`, an Authentication-Results header from it saying dkim=pass for the submitter.
pub fn report_mail(
    submitter: &str,
    domain: &str,
    json: &[u8],
    authserv_id: Option<&str>,
) -> Vec<u8> {
    let auth = authserv_id
        .map(|id| {
            format!(
                "Authentication-Results: {id};\r\n\tdkim=pass header.d={submitter} header.s=s1\r\n"
            )
        })
        .unwrap_or_default();
    format!(
        "{auth}From: TLS reports <tlsrpt@{submitter}>\r\n\
         To: tlsrpt@operator.example\r\n\
         Subject: Report Domain: {domain} Submitter: {submitter}\r\n\
         TLS-Report-Domain: {domain}\r\n\
         TLS-Report-Submitter: {submitter}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"\r\n\
         \r\n\
         --b1\r\n\
         Content-Type: text/plain\r\n\
         \r\n\
         An aggregate TLS report.\r\n\
         --b1\r\n\
         Content-Type: application/tlsrpt+gzip\r\n\
         Content-Disposition: attachment; filename=\"{submitter}!{domain}!1!2.json.gz\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {}\r\n\
         --b1--\r\n",
        base64(&gzip(json))
    )
    .into_bytes()
}

/// Stores `json` for `tenant` as an HTTPS report received now; it must be new.
pub fn insert_report(store: &dyn ReportStore, tenant: &str, json: Vec<u8>) {
    let report = Report::from_json(&json).unwrap();
    let outcome = store
        .insert(&StoredReport {
            tenant: tenant.into(),
            source: Source::Https,
            received: time::OffsetDateTime::now_utc(),
            report,
            raw_json: json,
            signing_domain: None,
            submitter_mismatch: false,
        })
        .unwrap();
    assert_eq!(outcome, InsertOutcome::Inserted);
}
