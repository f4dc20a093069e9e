//! The `tlsrpt:` section: report host, database, size caps, retention, the verdict threshold
//! and the DKIM policy for mailed reports. The values the intake runs on are defined here, in
//! the pure configuration layer, so `tlsrpt` depends on `config` and never the other way.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::names::normalize_hostname;

/// Path prefix of the HTTPS intake; the tenant domain follows.
pub const REPORT_PATH_PREFIX: &str = "/tlsrpt/";

/// Default number of days reports must cover before a testing tenant may enforce: one week
/// sees every weekday's senders, the usual advice before switching to enforce.
pub const DEFAULT_MIN_DAYS: u32 = 7;

/// Default cap on the body as received: RFC 8460 §5 notes ~10 MB is a common receiver limit.
pub const DEFAULT_MAX_COMPRESSED: usize = 10 * 1024 * 1024;

/// Default cap on the decompressed JSON: large senders' daily reports are a few MB; 50 MiB
/// leaves room for them while bounding the memory one report can cost.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 50 * 1024 * 1024;

/// Size caps applied to every report, whatever the intake path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    /// Largest body accepted as received (gzip or JSON), in bytes.
    pub max_compressed: usize,
    /// Largest decompressed JSON accepted, in bytes.
    pub max_decompressed: usize,
}

impl Default for ReportLimits {
    fn default() -> Self {
        ReportLimits {
            max_compressed: DEFAULT_MAX_COMPRESSED,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
        }
    }
}

/// Which mails count as authentic (RFC 8460 §5.3: reports without a valid DKIM signature from
/// the reporting domain MUST be ignored).
///
/// mta-stsd does not verify DKIM itself: it trusts the `Authentication-Results` header (RFC
/// 8601) added by the local MTA, and only from the authserv-ids listed here. The MTA must
/// remove such headers carrying its own authserv-id from incoming mail (RFC 8601 §5), or a
/// sender could forge the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAuthPolicy {
    /// authserv-ids (usually the MTA's hostname) whose `Authentication-Results` are believed.
    pub trusted_authserv_ids: Vec<String>,
    /// Require `dkim=pass` for the submitter's domain; `false` accepts unauthenticated reports.
    pub require_dkim_pass: bool,
}

impl Default for MailAuthPolicy {
    /// Require DKIM, trust nobody yet: every mail is refused until the operator names the MTA.
    fn default() -> Self {
        MailAuthPolicy {
            trusted_authserv_ids: Vec::new(),
            require_dkim_pass: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsRpt {
    #[serde(default)]
    pub(super) report_host: Option<Spanned<String>>,
    #[serde(default)]
    publish_endpoint: Option<Spanned<bool>>,
    #[serde(default)]
    database: Option<Spanned<String>>,
    #[serde(default)]
    max_compressed_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    max_decompressed_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    retention_days: Option<Spanned<u32>>,
    #[serde(default)]
    min_days_for_enforce: Option<Spanned<u32>>,
    #[serde(default)]
    mail: Option<RawTlsRptMail>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsRptMail {
    #[serde(default)]
    trusted_authserv_ids: Vec<Spanned<String>>,
    #[serde(default)]
    require_dkim_pass: Option<bool>,
}

/// Name of the report database inside the state directory, unless `tlsrpt.database` says otherwise.
pub const TLSRPT_DATABASE: &str = "tlsrpt.sqlite3";
/// Default report retention: a year and a bit, so last year's same month can be compared.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;
/// Longest retention accepted (ten years); beyond that the database only grows.
const MAX_RETENTION_DAYS: u32 = 3650;
/// Smallest cap on a report body: the RFC's example report gzips to a few hundred bytes, and
/// a cap below this would refuse real reports.
const MIN_REPORT_CAP: usize = 4096;
/// Largest cap accepted for either size: one report must never cost gigabytes of memory.
const MAX_REPORT_CAP: usize = 1 << 30;

/// TLS-RPT intake (RFC 8460): the report host, the database, size caps, retention, the
/// verdict threshold and the DKIM policy for mailed reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRptConfig {
    /// Host that receives `POST /tlsrpt/<tenant domain>`; `None` disables HTTPS intake.
    pub report_host: Option<String>,
    /// Whether `dns` adds `https://<report_host>/tlsrpt/<domain>` to every tenant's rua.
    pub publish_endpoint: bool,
    /// The SQLite report database.
    pub database: PathBuf,
    /// Size caps for one report, the same for HTTPS and mail.
    pub limits: ReportLimits,
    /// Reports received more than this many days ago are deleted.
    pub retention_days: u32,
    /// Days of clean reports a testing tenant needs before "ready to enforce".
    pub min_days_for_enforce: u32,
    /// Which mailed reports count as authentic.
    pub mail: MailAuthPolicy,
}

impl TlsRptConfig {
    /// The defaults for a state directory: no report host, database in the state directory.
    pub fn defaults(state_dir: &Path) -> Self {
        TlsRptConfig {
            report_host: None,
            publish_endpoint: false,
            database: state_dir.join(TLSRPT_DATABASE),
            limits: ReportLimits::default(),
            retention_days: DEFAULT_RETENTION_DAYS,
            min_days_for_enforce: DEFAULT_MIN_DAYS,
            mail: MailAuthPolicy::default(),
        }
    }

    /// The URI senders POST `domain`'s reports to, when the endpoint is published.
    pub fn published_endpoint(&self, domain: &str) -> Option<String> {
        let host = self
            .report_host
            .as_deref()
            .filter(|_| self.publish_endpoint)?;
        Some(report_uri(host, domain))
    }
}

/// `https://<report_host>/tlsrpt/<domain>`: the HTTPS intake URI of one tenant.
pub fn report_uri(report_host: &str, domain: &str) -> String {
    format!("https://{report_host}{REPORT_PATH_PREFIX}{domain}")
}

/// Compiles the `tlsrpt:` section (or its absence) into a [`TlsRptConfig`], reporting each
/// problem through `err` with the field's position.
pub(super) fn compile_tlsrpt(
    raw: Option<&Spanned<RawTlsRpt>>,
    state_dir: &Path,
    resolve: &dyn Fn(&str) -> PathBuf,
    err: &mut dyn FnMut(&serde_saphyr::Location, &str, String),
) -> TlsRptConfig {
    let mut cfg = TlsRptConfig::defaults(state_dir);
    let Some(raw) = raw.map(|r| &r.value) else {
        return cfg;
    };
    if let Some(h) = &raw.report_host {
        match normalize_hostname(&h.value) {
            Ok(host) if host.starts_with("mta-sts.") => err(
                &h.referenced,
                "tlsrpt.report_host",
                format!(
                    "{host:?} looks like a tenant policy host; use a host of your own, e.g. tlsrpt.operator.example"
                ),
            ),
            Ok(host) => cfg.report_host = Some(host),
            Err(why) => err(&h.referenced, "tlsrpt.report_host", why),
        }
    }
    if let Some(p) = &raw.publish_endpoint {
        cfg.publish_endpoint = p.value;
        if p.value && raw.report_host.is_none() {
            err(
                &p.referenced,
                "tlsrpt.publish_endpoint",
                "needs tlsrpt.report_host: the endpoint is https://<report_host>/tlsrpt/<domain>"
                    .into(),
            );
        }
    }
    if let Some(d) = &raw.database {
        if d.value.is_empty() {
            err(&d.referenced, "tlsrpt.database", "is empty".into());
        }
        cfg.database = resolve(&d.value);
    }
    for (value, field, slot) in [
        (
            &raw.max_compressed_bytes,
            "tlsrpt.max_compressed_bytes",
            &mut cfg.limits.max_compressed,
        ),
        (
            &raw.max_decompressed_bytes,
            "tlsrpt.max_decompressed_bytes",
            &mut cfg.limits.max_decompressed,
        ),
    ] {
        if let Some(v) = value {
            if !(MIN_REPORT_CAP..=MAX_REPORT_CAP).contains(&v.value) {
                err(
                    &v.referenced,
                    field,
                    format!("{} is outside {MIN_REPORT_CAP}..={MAX_REPORT_CAP}", v.value),
                );
            }
            *slot = v.value.clamp(MIN_REPORT_CAP, MAX_REPORT_CAP);
        }
    }
    if let (Some(c), Some(d)) = (&raw.max_compressed_bytes, &raw.max_decompressed_bytes)
        && d.value < c.value
    {
        err(
            &d.referenced,
            "tlsrpt.max_decompressed_bytes",
            format!(
                "{} is smaller than max_compressed_bytes ({}): a plain JSON report at the compressed cap would be refused",
                d.value, c.value
            ),
        );
    }
    if let Some(v) = &raw.retention_days {
        if v.value == 0 || v.value > MAX_RETENTION_DAYS {
            err(
                &v.referenced,
                "tlsrpt.retention_days",
                format!("{} is outside 1..={MAX_RETENTION_DAYS}", v.value),
            );
        }
        cfg.retention_days = v.value.clamp(1, MAX_RETENTION_DAYS);
    }
    if let Some(v) = &raw.min_days_for_enforce {
        if v.value == 0 || v.value > 365 {
            err(
                &v.referenced,
                "tlsrpt.min_days_for_enforce",
                format!("{} is outside 1..=365", v.value),
            );
        }
        cfg.min_days_for_enforce = v.value.clamp(1, 365);
    }
    if let Some(mail) = &raw.mail {
        for (i, id) in mail.trusted_authserv_ids.iter().enumerate() {
            let value = id.value.trim();
            if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == ';') {
                err(
                    &id.referenced,
                    &format!("tlsrpt.mail.trusted_authserv_ids[{i}]"),
                    format!(
                        "{:?} is not an authserv-id (the first token of an Authentication-Results header, usually the MTA's host name)",
                        id.value
                    ),
                );
            } else {
                cfg.mail
                    .trusted_authserv_ids
                    .push(value.to_ascii_lowercase());
            }
        }
        if let Some(require) = mail.require_dkim_pass {
            cfg.mail.require_dkim_pass = require;
        }
    }
    cfg
}
