//! Finding the report in an RFC 5322 message: the report part, and the headers needed to
//! authenticate and route it.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};

use super::{MailError, domain_of, max_message_size};
use crate::tlsrpt::decode::{Limits, decode};
use crate::tlsrpt::report::{Report, ReportError};

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

/// Longest value accepted for a header this intake reads (`Authentication-Results`,
/// `TLS-Report-*`, `Subject`, `From`): real ones are well under 4 KiB, and the cap bounds the
/// work any sender-controlled header can cause.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

/// The headers the intake reads, as spelled in the size error.
const READ_HEADERS: [&str; 5] = [
    "Authentication-Results",
    "TLS-Report-Domain",
    "TLS-Report-Submitter",
    "Subject",
    "From",
];

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

    let headers = ReportHeaders::of(&message)?;
    let part = report_part(&message)?;
    let filename = part.attachment_name().map(str::to_string);
    let content_type = media_type_of(part, filename.as_deref());
    let (report, raw_json) = decode(part.contents(), &content_type, limits)?;
    let from_domain = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .and_then(domain_of);
    Ok(ExtractedReport {
        report,
        raw_json,
        report_domain: headers.report_domain,
        submitter: headers.submitter,
        from_domain,
        subject: message.subject().map(str::to_string),
        filename,
        authentication_results: headers.authentication_results,
    })
}

/// The part holding the report: a typed one, else a `*.json[.gz]` attachment.
fn report_part<'m>(message: &'m Message<'m>) -> Result<&'m MessagePart<'m>, MailError> {
    let typed = message.parts.iter().find(|p| {
        p.content_type()
            .is_some_and(|ct| is_report_type(ct.ctype(), ct.subtype()))
    });
    typed
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
        })
}

/// The media type [`decode`] should see for the report part.
fn media_type_of(part: &MessagePart<'_>, filename: Option<&str>) -> String {
    match part.content_type() {
        Some(ct) if is_report_type(ct.ctype(), ct.subtype()) => {
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
        }
        // A named attachment: its label (often application/gzip or octet-stream) says nothing
        // useful; decode() sniffs gzip by its magic bytes either way.
        _ if filename.is_some_and(|n| n.to_ascii_lowercase().ends_with(".gz")) => {
            "application/tlsrpt+gzip".to_string()
        }
        _ => "application/tlsrpt+json".to_string(),
    }
}

/// The §3 report headers and the `Authentication-Results` the DKIM policy reads.
struct ReportHeaders {
    report_domain: Option<String>,
    submitter: Option<String>,
    authentication_results: Vec<String>,
}

impl ReportHeaders {
    /// Reads them unfolded; the first `TLS-Report-Domain` and `TLS-Report-Submitter` count.
    /// Any header it reads longer than [`MAX_HEADER_LEN`] refuses the message.
    fn of(message: &Message<'_>) -> Result<Self, MailError> {
        let mut headers = ReportHeaders {
            report_domain: None,
            submitter: None,
            authentication_results: Vec::new(),
        };
        for (name, value) in message.headers_raw() {
            if value.len() > MAX_HEADER_LEN
                && let Some(read) = READ_HEADERS.iter().find(|h| name.eq_ignore_ascii_case(h))
            {
                return Err(MailError::HeaderTooLong {
                    name: read,
                    len: value.len(),
                });
            }
            let value = value.replace("\r\n", "").replace('\n', "");
            if name.eq_ignore_ascii_case("TLS-Report-Domain") {
                headers.report_domain = headers.report_domain.or_else(|| domain_of(&value));
            } else if name.eq_ignore_ascii_case("TLS-Report-Submitter") {
                headers.submitter = headers.submitter.or_else(|| domain_of(&value));
            } else if name.eq_ignore_ascii_case("Authentication-Results") {
                headers
                    .authentication_results
                    .push(value.trim().to_string());
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_domain_with_a_space_before_its_dot_is_normalized() {
        // The fuzz target's crash: `TLS-Report-Domain: Example.org .` was read as "example.org "
        // and routed nowhere.
        let json = crate::tlsrpt::testutil::fixture("google.json");
        let raw = crate::tlsrpt::mail::testutil::report_mail(
            "TLS-Report-Domain: Example.org .\r\nTLS-Report-Submitter: google.com. \r\n",
            &json,
            "report.json.gz",
        );
        let extracted = extract_report(&raw, &Limits::default()).unwrap();
        assert_eq!(extracted.report_domain.as_deref(), Some("example.org"));
        assert_eq!(extracted.submitter.as_deref(), Some("google.com"));
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
}
