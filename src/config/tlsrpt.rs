//! The `tlsrpt:` section: report host, database, size caps, retention, the verdict threshold
//! and the DKIM policy for mailed reports. The values the intake runs on are defined here, in
//! the pure configuration layer, so `tlsrpt` depends on `config` and never the other way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::field::{Bounds, Diags, nameserver, resolve};
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

/// Default cap on the bytes stored for one tenant over 24 h: real reports are kilobytes, so
/// this only stops a sender (or an attacker naming the tenant) from filling the disk.
pub const DEFAULT_TENANT_BYTES_PER_DAY: usize = 16 * 1024 * 1024;
/// Default cap on the bytes stored for all tenants together over 24 h.
pub const DEFAULT_TOTAL_BYTES_PER_DAY: usize = 256 * 1024 * 1024;
/// Largest quota accepted (1 TiB a day).
const MAX_QUOTA: usize = 1 << 40;

/// Caps on the report bytes stored (gzip-compressed raw JSON) over the last 24 h, per tenant
/// and for all tenants: the intake is open to anyone, and the disk is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportQuota {
    /// Per tenant, in bytes.
    pub tenant_bytes_per_day: usize,
    /// For all tenants together, in bytes.
    pub total_bytes_per_day: usize,
}

impl Default for ReportQuota {
    fn default() -> Self {
        ReportQuota {
            tenant_bytes_per_day: DEFAULT_TENANT_BYTES_PER_DAY,
            total_bytes_per_day: DEFAULT_TOTAL_BYTES_PER_DAY,
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
    /// Also verify DKIM signatures here, for MTAs that add no `Authentication-Results`.
    pub verify_dkim: bool,
    /// Name servers for the DKIM key lookups; empty means the system's.
    pub dns_servers: Vec<SocketAddr>,
}

impl Default for MailAuthPolicy {
    /// Require DKIM, trust nobody yet: every mail is refused until the operator names the MTA.
    fn default() -> Self {
        MailAuthPolicy {
            trusted_authserv_ids: Vec::new(),
            require_dkim_pass: true,
            verify_dkim: false,
            dns_servers: Vec::new(),
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsRpt {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    report_host: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    publish_endpoint: Option<Spanned<bool>>,
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    database: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<usize>")]
    max_compressed_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    #[schemars(with = "Option<usize>")]
    max_decompressed_bytes: Option<Spanned<usize>>,
    #[serde(default)]
    #[schemars(with = "Option<usize>")]
    tenant_bytes_per_day: Option<Spanned<usize>>,
    #[serde(default)]
    #[schemars(with = "Option<usize>")]
    total_bytes_per_day: Option<Spanned<usize>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    retention_days: Option<Spanned<u32>>,
    #[serde(default)]
    #[schemars(with = "Option<u32>")]
    min_days_for_enforce: Option<Spanned<u32>>,
    #[serde(default)]
    mail: Option<RawTlsRptMail>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawTlsRptMail {
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    trusted_authserv_ids: Vec<Spanned<String>>,
    #[serde(default)]
    require_dkim_pass: Option<bool>,
    #[serde(default)]
    verify_dkim: Option<bool>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    dns_servers: Vec<Spanned<String>>,
}

/// Name of the report database inside the state directory, unless `tlsrpt.database` says otherwise.
pub const TLSRPT_DATABASE: &str = "tlsrpt.sqlite3";
/// Default report retention: a year and a bit, so last year's same month can be compared.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;
/// Longest retention accepted (ten years); beyond that the database only grows.
const MAX_RETENTION_DAYS: u32 = 3650;
/// Longest observation period before enforce that may be asked for: a year.
const MAX_MIN_DAYS: u32 = 365;
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
    /// Caps on the bytes stored per 24 h.
    pub quota: ReportQuota,
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
            quota: ReportQuota::default(),
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

/// Compiles the `tlsrpt:` section (or its absence) into a [`TlsRptConfig`], part by part in
/// file order, reporting each problem to `d` with the field's position.
pub(super) fn compile_tlsrpt(
    raw: Option<&Spanned<RawTlsRpt>>,
    state_dir: &Path,
    dir: &Path,
    public_hostname: Option<&str>,
    d: &mut Diags,
) -> TlsRptConfig {
    let Some(raw) = raw.map(|r| &r.value) else {
        return TlsRptConfig::defaults(state_dir);
    };
    let cfg = TlsRptConfig {
        report_host: compile_report_host(raw.report_host.as_ref(), d),
        publish_endpoint: compile_publish_endpoint(raw, d),
        database: compile_database(raw.database.as_ref(), state_dir, dir, d),
        limits: compile_report_limits(raw, d),
        quota: compile_quota(raw, d),
        retention_days: d.ranged(
            raw.retention_days.as_ref(),
            "tlsrpt.retention_days",
            Bounds::Within(1, MAX_RETENTION_DAYS),
            DEFAULT_RETENTION_DAYS,
        ),
        min_days_for_enforce: d.ranged(
            raw.min_days_for_enforce.as_ref(),
            "tlsrpt.min_days_for_enforce",
            Bounds::Within(1, MAX_MIN_DAYS),
            DEFAULT_MIN_DAYS,
        ),
        mail: raw
            .mail
            .as_ref()
            .map_or_else(MailAuthPolicy::default, |m| compile_mail(m, d)),
    };
    if let (Some(host), Some(h)) = (&cfg.report_host, &raw.report_host)
        && public_hostname == Some(host.as_str())
    {
        // The report host gets its own certificate; sharing the CNAME target's name would
        // make one host answer both policy and report requests.
        let message = "must differ from public_hostname".into();
        d.error(&h.referenced, "tlsrpt.report_host", message);
    }
    cfg
}

/// The report host: a host name of the operator's own, never a tenant's policy host.
fn compile_report_host(raw: Option<&Spanned<String>>, d: &mut Diags) -> Option<String> {
    let h = raw?;
    match normalize_hostname(&h.value) {
        Ok(host) if host.starts_with("mta-sts.") => {
            d.error(
                &h.referenced,
                "tlsrpt.report_host",
                format!(
                    "{host:?} looks like a tenant policy host; use a host of your own, e.g. tlsrpt.operator.example"
                ),
            );
            None
        }
        Ok(host) => Some(host),
        Err(why) => {
            d.error(&h.referenced, "tlsrpt.report_host", why);
            None
        }
    }
}

/// Whether to publish the endpoint, which only exists with a report host.
fn compile_publish_endpoint(raw: &RawTlsRpt, d: &mut Diags) -> bool {
    let Some(p) = &raw.publish_endpoint else {
        return false;
    };
    if p.value && raw.report_host.is_none() {
        d.error(
            &p.referenced,
            "tlsrpt.publish_endpoint",
            "needs tlsrpt.report_host: the endpoint is https://<report_host>/tlsrpt/<domain>"
                .into(),
        );
    }
    p.value
}

/// The database path; in the state directory unless named.
fn compile_database(
    raw: Option<&Spanned<String>>,
    state_dir: &Path,
    dir: &Path,
    d: &mut Diags,
) -> PathBuf {
    let Some(db) = raw else {
        return state_dir.join(TLSRPT_DATABASE);
    };
    if db.value.is_empty() {
        d.error(&db.referenced, "tlsrpt.database", "is empty".into());
    }
    resolve(dir, &db.value)
}

/// The per-tenant and total quotas; neither below one report's cap of the smallest size.
fn compile_quota(raw: &RawTlsRpt, d: &mut Diags) -> ReportQuota {
    let bounds = Bounds::Within(MIN_REPORT_CAP, MAX_QUOTA);
    ReportQuota {
        tenant_bytes_per_day: d.ranged(
            raw.tenant_bytes_per_day.as_ref(),
            "tlsrpt.tenant_bytes_per_day",
            bounds,
            DEFAULT_TENANT_BYTES_PER_DAY,
        ),
        total_bytes_per_day: d.ranged(
            raw.total_bytes_per_day.as_ref(),
            "tlsrpt.total_bytes_per_day",
            bounds,
            DEFAULT_TOTAL_BYTES_PER_DAY,
        ),
    }
}

/// Both size caps, and the decompressed one no smaller than the compressed one.
fn compile_report_limits(raw: &RawTlsRpt, d: &mut Diags) -> ReportLimits {
    let caps = Bounds::Within(MIN_REPORT_CAP, MAX_REPORT_CAP);
    let limits = ReportLimits {
        max_compressed: d.ranged(
            raw.max_compressed_bytes.as_ref(),
            "tlsrpt.max_compressed_bytes",
            caps,
            DEFAULT_MAX_COMPRESSED,
        ),
        max_decompressed: d.ranged(
            raw.max_decompressed_bytes.as_ref(),
            "tlsrpt.max_decompressed_bytes",
            caps,
            DEFAULT_MAX_DECOMPRESSED,
        ),
    };
    if let (Some(c), Some(z)) = (&raw.max_compressed_bytes, &raw.max_decompressed_bytes)
        && z.value < c.value
    {
        d.error(
            &z.referenced,
            "tlsrpt.max_decompressed_bytes",
            format!(
                "{} is smaller than max_compressed_bytes ({}): a plain JSON report at the compressed cap would be refused",
                z.value, c.value
            ),
        );
    }
    limits
}

/// The DKIM policy for mailed reports.
fn compile_mail(raw: &RawTlsRptMail, d: &mut Diags) -> MailAuthPolicy {
    let trusted_authserv_ids = d.list(
        &raw.trusted_authserv_ids,
        "tlsrpt.mail.trusted_authserv_ids",
        |text| {
            let value = text.trim();
            if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == ';') {
                Err(format!(
                    "{text:?} is not an authserv-id (the first token of an Authentication-Results header, usually the MTA's host name)"
                ))
            } else {
                Ok(value.to_ascii_lowercase())
            }
        },
    );
    MailAuthPolicy {
        trusted_authserv_ids,
        require_dkim_pass: raw
            .require_dkim_pass
            .unwrap_or(MailAuthPolicy::default().require_dkim_pass),
        verify_dkim: raw.verify_dkim.unwrap_or(false),
        dns_servers: d.list(&raw.dns_servers, "tlsrpt.mail.dns_servers", nameserver),
    }
}
