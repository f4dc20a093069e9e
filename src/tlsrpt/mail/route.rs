//! Routing a mailed report to a tenant: the JSON's `policy-domain` wins (RFC 8460 §5.6); the
//! headers, subject and file name only when the JSON names none.

use std::collections::BTreeSet;

use super::extract::ExtractedReport;
use super::{MailError, domain_of};
use crate::tlsrpt::intake::{Tenant, check_tenant};
use crate::tlsrpt::report::ReportError;

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

/// Where the mail, outside the JSON, says the report is for: (which part said so, domain).
type Claims = [(&'static str, Option<String>); 3];

/// Pick the tenant: the JSON's policy-domains win (§5.6); headers, subject and file name are
/// used only when the JSON names none. Disagreements are recorded in `notes`.
pub(super) fn route(
    extracted: &ExtractedReport,
    is_tenant: &dyn Fn(&str) -> bool,
    notes: &mut Vec<String>,
) -> Result<Tenant, MailError> {
    let claims = claims(extracted, notes);
    let json_domains = extracted.report.policy_domains();
    if json_domains.is_empty() {
        route_by_claims(&claims, is_tenant, notes)
    } else {
        route_by_json(&json_domains, &claims, is_tenant, notes)
    }
}

/// The domains the headers, subject and file name name; notes a subject whose report-id
/// disagrees with the JSON's.
fn claims(extracted: &ExtractedReport, notes: &mut Vec<String>) -> Claims {
    let (subject_domain, subject_id) = extracted
        .subject
        .as_deref()
        .map(subject_fields)
        .unwrap_or_default();
    let file_domain = extracted.filename.as_deref().and_then(filename_domain);
    if let Some(id) = subject_id
        && id != extracted.report.report_id
    {
        notes.push(format!(
            "subject says report-id {id} but the JSON says {}; using the JSON",
            extracted.report.report_id
        ));
    }
    [
        ("TLS-Report-Domain header", extracted.report_domain.clone()),
        ("subject", subject_domain),
        ("file name", file_domain),
    ]
}

/// A report naming no policy-domain (as Postfix's do) goes where the first claim says.
fn route_by_claims(
    claims: &Claims,
    is_tenant: &dyn Fn(&str) -> bool,
    notes: &mut Vec<String>,
) -> Result<Tenant, MailError> {
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
    Ok(check_tenant(is_tenant, &domain)?)
}

/// The first of the JSON's policy-domains that is a tenant; claims that disagree are noted.
fn route_by_json(
    json_domains: &BTreeSet<&str>,
    claims: &Claims,
    is_tenant: &dyn Fn(&str) -> bool,
    notes: &mut Vec<String>,
) -> Result<Tenant, MailError> {
    for (source, claimed) in claims {
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
    let mut tenants = json_domains
        .iter()
        .filter_map(|d| check_tenant(is_tenant, d).ok());
    let Some(first) = tenants.next() else {
        let named: Vec<&str> = json_domains.iter().copied().collect();
        return Err(ReportError::UnknownDomain(named.join(", ")).into());
    };
    let rest: Vec<Tenant> = tenants.collect();
    if !rest.is_empty() {
        let rest: Vec<&str> = rest.iter().map(Tenant::as_str).collect();
        notes.push(format!(
            "report covers several tenants; stored for {}, not for {}",
            first.as_str(),
            rest.join(", ")
        ));
    }
    Ok(first)
}
