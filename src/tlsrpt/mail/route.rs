//! Routing a mailed report to a tenant: the JSON's `policy-domain` wins (RFC 8460 §5.6); the
//! headers, subject and file name only when the JSON names none.

use super::extract::ExtractedReport;
use super::{MailError, domain_of};
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

/// Pick the tenant: the JSON's policy-domains win (§5.6); headers, subject and file name are
/// used only when the JSON names none. Disagreements are recorded in `notes`.
pub(super) fn route(
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
