//! Intake by mail (RFC 8460 §5.3): find the report in an RFC 5322 message, check the DKIM
//! verdict the local MTA recorded, route it to a tenant and store it; plus a Maildir sweep.
//!
//! Results map to sysexits(3) so a pipe transport bounces or defers correctly:
//! accepted or duplicate → 0, bad data or failed authentication → 65, temporary trouble
//! (database locked, I/O) → 75.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mail_parser::{MessageParser, MimeHeaders};
use time::OffsetDateTime;

use super::decode::{Limits, decode};
use super::report::{Report, ReportError, normalize_domain};
use super::store::{InsertOutcome, ReportStore, Source, StoreError, StoredReport};
pub use crate::config::MailAuthPolicy;

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
    /// The DKIM policy.
    pub auth: &'a MailAuthPolicy,
    /// Whether a (normalized) domain is a tenant of this server.
    pub is_tenant: &'a dyn Fn(&str) -> bool,
}

/// What was done with a report mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailReceipt {
    /// The tenant the report was stored for.
    pub tenant: String,
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
    /// The DKIM policy was not met.
    #[error("not authenticated: {0}")]
    Auth(String),
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
            MailError::Io(_) => EX_TEMPFAIL,
            _ => EX_DATAERR,
        }
    }
}

/// The report found in a message and the headers needed to authenticate and route it.
#[derive(Debug, Clone)]
pub struct ExtractedReport {
    /// The validated report.
    pub report: Report,
    /// Its JSON as received (after gunzip).
    pub raw_json: Vec<u8>,
    /// `TLS-Report-Domain`, normalized.
    pub report_domain: Option<String>,
    /// `TLS-Report-Submitter`, normalized.
    pub submitter: Option<String>,
    /// The domain of the `From:` address.
    pub from_domain: Option<String>,
    /// `Subject:`.
    pub subject: Option<String>,
    /// The report part's file name.
    pub filename: Option<String>,
    /// Every `Authentication-Results` value, unfolded, in header order.
    pub authentication_results: Vec<String>,
}

fn domain_of(value: &str) -> Option<String> {
    let value = value.trim().trim_start_matches('<').trim_end_matches('>');
    let domain = value.rsplit_once('@').map_or(value, |(_, d)| d);
    let domain = normalize_domain(domain);
    (!domain.is_empty()).then_some(domain)
}

fn is_report_type(essence_type: &str, subtype: Option<&str>) -> bool {
    essence_type.eq_ignore_ascii_case("application")
        && subtype.is_some_and(|s| {
            s.eq_ignore_ascii_case("tlsrpt+gzip") || s.eq_ignore_ascii_case("tlsrpt+json")
        })
}

fn is_report_filename(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.ends_with(".json") || name.ends_with(".json.gz")
}

/// Find and decode the report in a raw RFC 5322 message.
///
/// An `application/tlsrpt+gzip`/`+json` part wins (normally inside `multipart/report;
/// report-type=tlsrpt`); failing that, an attachment named `*.json` or `*.json.gz`.
pub fn extract_report(raw: &[u8], limits: &Limits) -> Result<ExtractedReport, MailError> {
    if raw.len() > max_message_size(limits) {
        return Err(ReportError::TooLarge {
            what: "mail message",
            limit: max_message_size(limits),
        }
        .into());
    }
    let message = MessageParser::default()
        .parse(raw)
        .ok_or_else(|| MailError::NoReport("not an RFC 5322 message".to_string()))?;

    let typed = message.parts.iter().find(|p| {
        p.content_type()
            .is_some_and(|ct| is_report_type(ct.ctype(), ct.subtype()))
    });
    let part = typed
        .or_else(|| {
            message
                .parts
                .iter()
                .find(|p| p.attachment_name().is_some_and(is_report_filename))
        })
        .ok_or_else(|| {
            MailError::NoReport(
                "no application/tlsrpt+gzip or +json part and no *.json[.gz] attachment"
                    .to_string(),
            )
        })?;
    let filename = part.attachment_name().map(str::to_string);
    let content_type = match part.content_type() {
        Some(ct) if is_report_type(ct.ctype(), ct.subtype()) => {
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
        }
        // A named attachment: its label (often application/gzip or octet-stream) says nothing
        // useful; decode() sniffs gzip by its magic bytes either way.
        _ if filename
            .as_deref()
            .is_some_and(|n| n.to_ascii_lowercase().ends_with(".gz")) =>
        {
            "application/tlsrpt+gzip".to_string()
        }
        _ => "application/tlsrpt+json".to_string(),
    };
    let (report, raw_json) = decode(part.contents(), &content_type, limits)?;

    let mut report_domain = None;
    let mut submitter = None;
    let mut authentication_results = Vec::new();
    for (name, value) in message.headers_raw() {
        let value = value.replace("\r\n", "").replace('\n', "");
        if name.eq_ignore_ascii_case("TLS-Report-Domain") {
            report_domain = report_domain.or_else(|| domain_of(&value));
        } else if name.eq_ignore_ascii_case("TLS-Report-Submitter") {
            submitter = submitter.or_else(|| domain_of(&value));
        } else if name.eq_ignore_ascii_case("Authentication-Results") {
            authentication_results.push(value.trim().to_string());
        }
    }
    let from_domain = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(domain_of);
    Ok(ExtractedReport {
        report,
        raw_json,
        report_domain,
        submitter,
        from_domain,
        subject: message.subject().map(str::to_string),
        filename,
        authentication_results,
    })
}

/// One `Authentication-Results` header, reduced to what the DKIM policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    /// The authserv-id (lower-cased).
    pub authserv_id: String,
    /// Every `dkim=` result as (result, signing domain from `header.d` or `header.i`).
    pub dkim: Vec<(String, Option<String>)>,
}

/// Remove RFC 5322 comments (nested, with quoted-pairs) outside quoted strings.
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push(' '); // a comment separates tokens like whitespace
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Split on `;` outside quoted strings.
fn split_resinfo(value: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                parts.last_mut().expect("never empty").push(c);
            }
            ';' if !quoted => parts.push(String::new()),
            _ => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

/// Parse one `Authentication-Results` value (RFC 8601 §2.2); `None` if it has no authserv-id.
pub fn parse_authentication_results(value: &str) -> Option<AuthResults> {
    let value = strip_comments(value);
    let mut segments = split_resinfo(&value).into_iter();
    let authserv_id = segments
        .next()?
        .split_whitespace()
        .next()?
        .to_ascii_lowercase();
    let mut dkim = Vec::new();
    for segment in segments {
        // Allow CFWS around "=" (RFC 8601 grammar) by gluing it to its neighbours.
        let mut glued = segment.trim().to_string();
        while glued.contains(" =") || glued.contains("= ") {
            glued = glued.replace(" =", "=").replace("= ", "=");
        }
        let mut tokens = glued.split_whitespace();
        let Some((method, result)) = tokens.next().and_then(|t| t.split_once('=')) else {
            continue;
        };
        let method = method.split('/').next().unwrap_or(method);
        if !method.eq_ignore_ascii_case("dkim") {
            continue;
        }
        // header.d is the signing domain; header.i (the AUID, `@domain`) only as a fallback.
        let (mut d, mut i) = (None, None);
        for token in tokens {
            let Some((key, val)) = token.split_once('=') else {
                continue;
            };
            let val = val.trim_matches('"');
            if key.eq_ignore_ascii_case("header.d") {
                d = domain_of(val);
            } else if key.eq_ignore_ascii_case("header.i") {
                i = domain_of(val);
            }
        }
        dkim.push((result.to_ascii_lowercase(), d.or(i)));
    }
    Some(AuthResults { authserv_id, dkim })
}

/// A domain-looking `organization-name` (some senders put their domain there).
fn domain_like(s: &str) -> Option<String> {
    let s = normalize_domain(s);
    let ok = s.contains('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    ok.then_some(s)
}

/// `signer` may vouch for `domain`: equal, or a parent (`google.com` for `tls.google.com`).
/// A signer without a dot (a TLD) vouches for nothing.
fn signs_for(signer: &str, domain: &str) -> bool {
    signer.contains('.')
        && (signer == domain
            || domain
                .strip_suffix(signer)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// Apply the DKIM policy: some trusted `Authentication-Results` says `dkim=pass` with a signing
/// domain equal to or a parent of the submitter's domain (`TLS-Report-Submitter`, or the
/// organization name when it is a domain, or — only without a submitter header — the From domain).
pub fn check_dkim(extracted: &ExtractedReport, policy: &MailAuthPolicy) -> Result<(), MailError> {
    if !policy.require_dkim_pass {
        return Ok(());
    }
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    wanted.extend(extracted.submitter.clone());
    wanted.extend(domain_like(&extracted.report.organization_name));
    if extracted.submitter.is_none() {
        wanted.extend(extracted.from_domain.clone());
    }
    if wanted.is_empty() {
        return Err(MailError::Auth(
            "no TLS-Report-Submitter or From domain to check DKIM against".to_string(),
        ));
    }
    let trusted: Vec<String> = policy
        .trusted_authserv_ids
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut seen = Vec::new();
    for header in &extracted.authentication_results {
        let Some(ar) = parse_authentication_results(header) else {
            continue;
        };
        if !trusted.contains(&ar.authserv_id) {
            continue;
        }
        for (result, signer) in &ar.dkim {
            let signer = signer.as_deref().unwrap_or("?");
            if result == "pass" && wanted.iter().any(|d| signs_for(signer, d)) {
                return Ok(());
            }
            seen.push(format!("dkim={result} header.d={signer}"));
        }
    }
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    Err(MailError::Auth(if seen.is_empty() {
        format!(
            "no DKIM result from a trusted authserv-id ({}) for {}",
            policy.trusted_authserv_ids.join(", "),
            wanted.join(", ")
        )
    } else {
        format!(
            "no dkim=pass for {} from a trusted authserv-id (saw {})",
            wanted.join(", "),
            seen.join("; ")
        )
    }))
}

/// The policy-domain field of a §5.3 file name `sender!policy-domain!begin!end[!id].json[.gz]`.
fn filename_domain(name: &str) -> Option<String> {
    let mut fields = name.split('!');
    let _sender = fields.next()?;
    let domain = fields.next()?;
    fields.next()?; // a real §5.3 name has at least begin and end after the domain
    domain_of(domain)
}

/// The `Report Domain:` and `Report-ID:` values of a §5.3 subject, if present.
fn subject_fields(subject: &str) -> (Option<String>, Option<String>) {
    let after = |key: &str| -> Option<&str> {
        let i = subject
            .to_ascii_lowercase()
            .find(&key.to_ascii_lowercase())?;
        Some(subject[i + key.len()..].trim_start())
    };
    let domain = after("Report Domain:")
        .and_then(|s| s.split_whitespace().next())
        .and_then(domain_of);
    let id = after("Report-ID:")
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.trim_start_matches('<').trim_end_matches('>').to_string());
    (domain, id)
}

/// Pick the tenant: the JSON's policy-domains win (§5.6); headers, subject and file name are
/// used only when the JSON names none. Disagreements are recorded in `notes`.
fn route(
    extracted: &ExtractedReport,
    is_tenant: &dyn Fn(&str) -> bool,
    notes: &mut Vec<String>,
) -> Result<String, MailError> {
    let json_domains = extracted.report.policy_domains();
    let (subject_domain, subject_id) = extracted
        .subject
        .as_deref()
        .map(subject_fields)
        .unwrap_or_default();
    let file_domain = extracted.filename.as_deref().and_then(filename_domain);
    let claims = [
        ("TLS-Report-Domain header", extracted.report_domain.clone()),
        ("subject", subject_domain),
        ("file name", file_domain),
    ];
    if let Some(id) = subject_id
        && id != extracted.report.report_id
    {
        notes.push(format!(
            "subject says report-id {id} but the JSON says {}; using the JSON",
            extracted.report.report_id
        ));
    }
    if json_domains.is_empty() {
        let (source, domain) = claims
            .iter()
            .find_map(|(source, d)| d.clone().map(|d| (*source, d)))
            .ok_or_else(|| {
                ReportError::Invalid(
                    "the report names no policy-domain and the mail does not say which domain it is for"
                        .to_string(),
                )
            })?;
        notes.push(format!(
            "report names no policy-domain; routed by the {source}"
        ));
        return if is_tenant(&domain) {
            Ok(domain)
        } else {
            Err(ReportError::UnknownDomain(domain).into())
        };
    }
    for (source, claimed) in &claims {
        if let Some(d) = claimed
            && !json_domains.contains(d.as_str())
        {
            let json: Vec<&str> = json_domains.iter().copied().collect();
            notes.push(format!(
                "{source} says {d} but the JSON says {}; using the JSON",
                json.join(", ")
            ));
        }
    }
    let tenants: Vec<&str> = json_domains
        .iter()
        .copied()
        .filter(|d| is_tenant(d))
        .collect();
    match tenants.as_slice() {
        [] => Err(ReportError::UnknownDomain(
            json_domains.into_iter().collect::<Vec<_>>().join(", "),
        )
        .into()),
        [one] => Ok((*one).to_string()),
        [first, rest @ ..] => {
            notes.push(format!(
                "report covers several tenants; stored for {first}, not for {}",
                rest.join(", ")
            ));
            Ok((*first).to_string())
        }
    }
}

/// Handle one report mail end to end: extract, authenticate, route, store.
pub fn ingest_message(
    raw: &[u8],
    intake: &MailIntake<'_>,
    now: OffsetDateTime,
) -> Result<MailReceipt, MailError> {
    let extracted = extract_report(raw, &intake.limits)?;
    check_dkim(&extracted, intake.auth)?;
    let mut notes = Vec::new();
    let tenant = route(&extracted, intake.is_tenant, &mut notes)?;
    let outcome = intake.store.insert(&StoredReport {
        tenant: tenant.clone(),
        source: Source::Mail,
        received: now,
        report: extracted.report.clone(),
        raw_json: extracted.raw_json,
    })?;
    Ok(MailReceipt {
        tenant,
        organization: extracted.report.organization_name,
        report_id: extracted.report.report_id,
        outcome,
        notes,
    })
}

/// What a Maildir sweep did.
#[derive(Debug, Default)]
pub struct MaildirSummary {
    /// Messages stored (or recognized as duplicates) and moved to `cur/` with the `S` flag.
    pub handled: Vec<(PathBuf, MailReceipt)>,
    /// Messages left where they were, with the reason.
    pub failed: Vec<(PathBuf, MailError)>,
}

impl MaildirSummary {
    /// 75 if any failure may be temporary, else 65 if anything failed, else 0.
    pub fn exit_code(&self) -> u8 {
        if self
            .failed
            .iter()
            .any(|(_, e)| e.exit_code() == EX_TEMPFAIL)
        {
            EX_TEMPFAIL
        } else if !self.failed.is_empty() {
            EX_DATAERR
        } else {
            EX_OK
        }
    }
}

/// Split a Maildir file name into its unique part and its flags (`None` without `:2,`).
fn maildir_flags(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once(":2,") {
        Some((base, flags)) => (base, Some(flags)),
        None => (name, None),
    }
}

/// Sorted regular, non-hidden files of a Maildir subdirectory.
fn list(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type()?.is_file() {
            continue;
        }
        out.push((entry.path(), name));
    }
    out.sort();
    Ok(out)
}

/// Process every message in `dir/new` and every not-yet-seen one (no `S` flag) in `dir/cur`.
///
/// A handled message (stored or duplicate) is renamed into `cur/` with the `S` flag added, after
/// the report is committed: a crash in between only means a duplicate on the next sweep.
/// Messages that fail stay where they are and are listed in the result; nothing is deleted.
pub fn process_maildir(
    dir: &Path,
    intake: &MailIntake<'_>,
    now: OffsetDateTime,
) -> std::io::Result<MaildirSummary> {
    let cur = dir.join("cur");
    let mut todo = list(&dir.join("new"))?;
    todo.extend(
        list(&cur)?
            .into_iter()
            .filter(|(_, name)| !maildir_flags(name).1.is_some_and(|f| f.contains('S'))),
    );
    let max = u64::try_from(max_message_size(&intake.limits)).unwrap_or(u64::MAX);
    let mut summary = MaildirSummary::default();
    for (path, name) in todo {
        let result = read_capped(&path, max).and_then(|raw| ingest_message(&raw, intake, now));
        match result {
            Ok(receipt) => {
                let (base, flags) = maildir_flags(&name);
                let mut flags: Vec<char> = flags.unwrap_or("").chars().collect();
                flags.push('S');
                flags.sort_unstable();
                flags.dedup();
                let target = cur.join(format!(
                    "{base}:2,{}",
                    flags.into_iter().collect::<String>()
                ));
                match std::fs::rename(&path, &target) {
                    Ok(()) => summary.handled.push((target, receipt)),
                    Err(e) => summary.failed.push((
                        path,
                        MailError::Io(format!("stored but not moved to cur/: {e}")),
                    )),
                }
            }
            Err(e) => summary.failed.push((path, e)),
        }
    }
    Ok(summary)
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, MailError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| MailError::Io(e.to_string()))?;
    let mut raw = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut raw)
        .map_err(|e| MailError::Io(e.to_string()))?;
    if raw.len() as u64 > max {
        return Err(ReportError::TooLarge {
            what: "mail message",
            limit: usize::try_from(max).unwrap_or(usize::MAX),
        }
        .into());
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::tlsrpt::store::SqliteStore;
    use crate::tlsrpt::testutil::{fixture, gzip};

    const NOW: OffsetDateTime = datetime!(2025-03-02 08:00 UTC);
    const MTA: &str = "mx.operator.example";

    fn base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for (i, chunk) in data.chunks(3).enumerate() {
            if i > 0 && i % 19 == 0 {
                out.push_str("\r\n"); // 76-character lines
            }
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for j in 0..4 {
                if j <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * j) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// A §5.3 report mail carrying `json` gzipped, with the given extra headers.
    fn report_mail(extra_headers: &str, json: &[u8], filename: &str) -> Vec<u8> {
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

    const GOOD_AR: &str = "Authentication-Results: mx.operator.example;\r\n\
        \tdkim=pass (2048-bit key; unprotected) header.d=google.com header.i=@google.com header.s=20230601 header.b=AbCdEf12;\r\n\
        \tspf=pass (mx.operator.example: domain of x@google.com designates 209.85.220.41 as permitted sender) smtp.mailfrom=google.com\r\n";
    const GOOGLE_NAME: &str = "google.com!example.org!1740787200!1740873600!001.json.gz";

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SqliteStore,
        auth: MailAuthPolicy,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("reports.db")).unwrap();
            Fixture {
                _dir: dir,
                store,
                auth: MailAuthPolicy {
                    trusted_authserv_ids: vec![MTA.to_string()],
                    require_dkim_pass: true,
                },
            }
        }

        fn ingest(&self, raw: &[u8]) -> Result<MailReceipt, MailError> {
            ingest_message(raw, &self.intake(), NOW)
        }

        fn intake(&self) -> MailIntake<'_> {
            MailIntake {
                store: &self.store,
                limits: Limits::default(),
                auth: &self.auth,
                is_tenant: &|d| d == "example.org" || d == "example.com",
            }
        }
    }

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
    fn authentication_results_parsing() {
        let ar = parse_authentication_results(
            "MX.Operator.Example 1; dkim = pass (good) header.d=\"Google.com\"; dkim=fail header.i=@bad.example; spf=pass smtp.mailfrom=x",
        )
        .unwrap();
        assert_eq!(ar.authserv_id, "mx.operator.example");
        assert_eq!(
            ar.dkim,
            [
                ("pass".to_string(), Some("google.com".to_string())),
                ("fail".to_string(), Some("bad.example".to_string()))
            ]
        );
        // A ";" inside a comment does not start a new result.
        let ar =
            parse_authentication_results("mx; dkim=pass (a;(b;c)) header.d=x.example").unwrap();
        assert_eq!(
            ar.dkim,
            [("pass".to_string(), Some("x.example".to_string()))]
        );
        assert_eq!(parse_authentication_results("   "), None);
        assert!(signs_for("google.com", "tls.google.com"));
        assert!(signs_for("google.com", "google.com"));
        assert!(!signs_for("google.com", "notgoogle.com"));
        assert!(!signs_for("com", "google.com"));
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
        };
        let intake = MailIntake {
            store: &store,
            limits: Limits::default(),
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

    #[test]
    fn oversized_mail_is_refused_before_parsing() {
        let limits = Limits {
            max_compressed: 1000,
            max_decompressed: 1000,
        };
        let raw = vec![b'a'; max_message_size(&limits) + 1];
        let err = extract_report(&raw, &limits).unwrap_err();
        assert!(
            matches!(err, MailError::Report(ReportError::TooLarge { .. })),
            "{err}"
        );
    }

    #[test]
    fn maildir_sweep_moves_handled_mail_and_leaves_failures() {
        let f = Fixture::new();
        let maildir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(maildir.path().join(sub)).unwrap();
        }
        let put = |sub: &str, name: &str, data: &[u8]| {
            std::fs::write(maildir.path().join(sub).join(name), data).unwrap()
        };
        let google = report_mail(GOOD_AR, &fixture("google.json"), GOOGLE_NAME);
        put("new", "1.a.host", &google);
        put("new", "2.b.host", &google); // the same report again: duplicate, still handled
        put(
            "new",
            "3.c.host",
            &report_mail("", &fixture("google.json"), GOOGLE_NAME),
        ); // no DKIM
        let ar = "Authentication-Results: mx.operator.example; dkim=pass header.d=google.com\r\n";
        put(
            "cur",
            "4.d.host:2,F",
            &report_mail(ar, &fixture("rfc-example.json"), GOOGLE_NAME),
        ); // unseen
        put(
            "cur",
            "5.e.host:2,S",
            b"already handled: must not be touched",
        );
        put("tmp", "6.f.host", b"being delivered: must not be touched");

        let summary = process_maildir(maildir.path(), &f.intake(), NOW).unwrap();
        let handled: Vec<String> = summary
            .handled
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(handled, ["1.a.host:2,S", "2.b.host:2,S", "4.d.host:2,FS"]);
        let outcomes: Vec<InsertOutcome> = summary.handled.iter().map(|(_, r)| r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                InsertOutcome::Inserted,
                InsertOutcome::Duplicate,
                InsertOutcome::Inserted
            ]
        );
        assert_eq!(summary.failed.len(), 1);
        assert!(summary.failed[0].0.ends_with("new/3.c.host"));
        assert!(matches!(summary.failed[0].1, MailError::Auth(_)));
        assert_eq!(summary.exit_code(), EX_DATAERR);

        let names = |sub: &str| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(maildir.path().join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names("new"), ["3.c.host"]);
        assert_eq!(
            names("cur"),
            [
                "1.a.host:2,S",
                "2.b.host:2,S",
                "4.d.host:2,FS",
                "5.e.host:2,S"
            ]
        );
        assert_eq!(names("tmp"), ["6.f.host"]);
        assert_eq!(
            std::fs::read(maildir.path().join("cur/1.a.host:2,S")).unwrap(),
            google,
            "a moved message keeps its content"
        );

        // A second sweep retries only the failure.
        let again = process_maildir(maildir.path(), &f.intake(), NOW).unwrap();
        assert!(again.handled.is_empty());
        assert_eq!(again.failed.len(), 1);
    }
}
