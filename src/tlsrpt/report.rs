//! The TLS-RPT report model (RFC 8460 §4.4): parsing, validation and the intake error type.
//!
//! Parsing is two-step: serde reads the JSON into lenient wire structs (unknown fields are
//! skipped without being kept in memory), then [`Report::from_json`] validates them into the
//! model. Lenient where real senders deviate (string or missing `mx-host`, missing
//! `sending-mta-ip`, `contact-info: null`, missing `policy-domain`, unknown `result-type`),
//! strict where a report would otherwise be meaningless (organization, report id, date range,
//! at least one policy with integer counts).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest `organization-name` / `report-id` accepted: real ones are under 100 bytes; this keeps
/// hostile input from becoming huge database keys.
pub const MAX_ID_LEN: usize = 1024;

/// Largest session count accepted in one field: far above any real daily volume, and keeps
/// sums over thousands of reports far from `i64` overflow in SQLite.
pub const MAX_SESSION_COUNT: u64 = 1_000_000_000_000;

/// Deepest JSON nesting accepted. A real report is 4 levels deep; anything stored must stay
/// below serde_json's recursion limit (128) so `reports show` and the API can parse it again.
pub const MAX_JSON_DEPTH: usize = 64;

/// Why a report was refused; each variant maps to one HTTP status (see [`ReportError::http_status`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// The media type is not `application/tlsrpt+gzip` or `application/tlsrpt+json` (415).
    #[error(
        "unsupported media type {0:?}: expected application/tlsrpt+gzip or application/tlsrpt+json"
    )]
    UnsupportedMediaType(String),
    /// The body, or its decompressed form, is over a configured cap (413).
    #[error("report too large: {what} exceeds {limit} bytes")]
    TooLarge {
        /// Which size was exceeded: "compressed body" or "decompressed report".
        what: &'static str,
        /// The cap in bytes.
        limit: usize,
    },
    /// The body cannot be a TLS-RPT report; the text is a one-line reason (400).
    #[error("invalid report: {0}")]
    Invalid(String),
    /// The report concerns a domain that is not a tenant (404).
    #[error("not a tenant of this server: {0}")]
    UnknownDomain(String),
}

impl ReportError {
    /// The HTTP status the HTTPS intake answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ReportError::UnsupportedMediaType(_) => 415,
            ReportError::TooLarge { .. } => 413,
            ReportError::Invalid(_) => 400,
            ReportError::UnknownDomain(_) => 404,
        }
    }
}

/// A validated TLS-RPT report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    /// `organization-name`: who sent the report (free text, not a domain).
    pub organization_name: String,
    /// `date-range`: the period the report covers.
    pub date_range: DateRange,
    /// `contact-info`, if the sender gave one.
    pub contact_info: Option<String>,
    /// `report-id`: unique per organization; with it the deduplication key.
    pub report_id: String,
    /// One entry per evaluated policy; never empty.
    pub policies: Vec<PolicyReport>,
}

/// The period a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    /// `start-datetime`.
    #[serde(rename = "start-datetime", with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// `end-datetime` (often the next day at 00:00:00Z; treated as exclusive).
    #[serde(rename = "end-datetime", with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
}

/// One entry of `policies[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyReport {
    /// The policy that was applied.
    pub policy: Policy,
    /// Session totals for this policy.
    pub summary: Summary,
    /// Failures by kind; may be empty.
    pub failure_details: Vec<FailureDetail>,
}

/// `policies[].policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    /// `policy-type`.
    pub policy_type: PolicyType,
    /// `policy-string`, one line per entry.
    pub policy_string: Vec<String>,
    /// `policy-domain`, lower-cased without a trailing dot; absent in some real reports.
    pub policy_domain: Option<String>,
    /// `mx-host` patterns (the RFC's example sends a string, the prose an array).
    pub mx_host: Vec<String>,
}

/// `policy-type`: the three defined values, anything else kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyType {
    /// `sts`: an MTA-STS policy.
    Sts,
    /// `tlsa`: DANE.
    Tlsa,
    /// `no-policy-found`.
    NoPolicyFound,
    /// A value not defined by RFC 8460.
    Other(String),
}

impl PolicyType {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            PolicyType::Sts => "sts",
            PolicyType::Tlsa => "tlsa",
            PolicyType::NoPolicyFound => "no-policy-found",
            PolicyType::Other(s) => s,
        }
    }
}

impl From<&str> for PolicyType {
    fn from(s: &str) -> Self {
        match s {
            "sts" => PolicyType::Sts,
            "tlsa" => PolicyType::Tlsa,
            "no-policy-found" => PolicyType::NoPolicyFound,
            other => PolicyType::Other(other.to_string()),
        }
    }
}

impl fmt::Display for PolicyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PolicyType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `policies[].summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// `total-successful-session-count`.
    pub total_successful_session_count: u64,
    /// `total-failure-session-count`.
    pub total_failure_session_count: u64,
}

/// `result-type` values registered by RFC 8460 §4.3; unknown ones are kept as [`ResultType::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResultType {
    /// `starttls-not-supported`.
    StarttlsNotSupported,
    /// `certificate-host-mismatch`.
    CertificateHostMismatch,
    /// `certificate-expired`.
    CertificateExpired,
    /// `certificate-not-trusted`.
    CertificateNotTrusted,
    /// `validation-failure`.
    ValidationFailure,
    /// `tlsa-invalid`.
    TlsaInvalid,
    /// `dnssec-invalid`.
    DnssecInvalid,
    /// `dane-required`.
    DaneRequired,
    /// `sts-policy-fetch-error`.
    StsPolicyFetchError,
    /// `sts-policy-invalid`.
    StsPolicyInvalid,
    /// `sts-webpki-invalid`.
    StsWebpkiInvalid,
    /// A value not (yet) known to this build: the IANA registry grows.
    Other(String),
}

impl ResultType {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ResultType::Other(s) => s,
            registered => registered.registered_name().unwrap_or_default(),
        }
    }

    /// The name of a type in the IANA registry; `None` for one this build does not know.
    pub fn registered_name(&self) -> Option<&'static str> {
        Some(match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
            ResultType::Other(_) => return None,
        })
    }
}

impl From<&str> for ResultType {
    fn from(s: &str) -> Self {
        match s {
            "starttls-not-supported" => ResultType::StarttlsNotSupported,
            "certificate-host-mismatch" => ResultType::CertificateHostMismatch,
            "certificate-expired" => ResultType::CertificateExpired,
            "certificate-not-trusted" => ResultType::CertificateNotTrusted,
            "validation-failure" => ResultType::ValidationFailure,
            "tlsa-invalid" => ResultType::TlsaInvalid,
            "dnssec-invalid" => ResultType::DnssecInvalid,
            "dane-required" => ResultType::DaneRequired,
            "sts-policy-fetch-error" => ResultType::StsPolicyFetchError,
            "sts-policy-invalid" => ResultType::StsPolicyInvalid,
            "sts-webpki-invalid" => ResultType::StsWebpkiInvalid,
            other => ResultType::Other(other.to_string()),
        }
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResultType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One entry of `policies[].failure-details[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetail {
    /// `result-type`.
    pub result_type: ResultType,
    /// `sending-mta-ip` (Microsoft omits it).
    pub sending_mta_ip: Option<String>,
    /// `receiving-mx-hostname`.
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-mx-helo`.
    pub receiving_mx_helo: Option<String>,
    /// `receiving-ip`.
    pub receiving_ip: Option<String>,
    /// `failed-session-count`.
    pub failed_session_count: u64,
    /// `additional-information` (a URI).
    pub additional_information: Option<String>,
    /// `failure-reason-code`.
    pub failure_reason_code: Option<String>,
}

// ---- wire structs: what serde reads before validation ----

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WireReport {
    organization_name: String,
    date_range: WireDateRange,
    #[serde(default)]
    contact_info: Option<String>,
    report_id: String,
    policies: Vec<WirePolicyReport>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WireDateRange {
    start_datetime: String,
    end_datetime: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WirePolicyReport {
    policy: WirePolicy,
    summary: Summary,
    #[serde(default)]
    failure_details: Option<Vec<WireFailureDetail>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WirePolicy {
    policy_type: String,
    #[serde(default)]
    policy_string: Option<OneOrMany>,
    #[serde(default)]
    policy_domain: Option<String>,
    #[serde(default)]
    mx_host: Option<OneOrMany>,
}

/// A field that real senders send either as one string or as an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WireFailureDetail {
    result_type: String,
    #[serde(default)]
    sending_mta_ip: Option<String>,
    #[serde(default)]
    receiving_mx_hostname: Option<String>,
    #[serde(default)]
    receiving_mx_helo: Option<String>,
    #[serde(default)]
    receiving_ip: Option<String>,
    failed_session_count: u64,
    #[serde(default)]
    additional_information: Option<String>,
    #[serde(default)]
    failure_reason_code: Option<String>,
}

/// Lower-case a domain and drop the whitespace around it and its trailing dots, so
/// `Example.COM.` and `example.com` compare equal. Normalizing twice changes nothing: a space
/// before a trailing dot (`example.com .`) goes too, instead of being left at the end.
pub fn normalize_domain(domain: &str) -> String {
    domain
        .trim_start()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        .to_ascii_lowercase()
}

fn parse_time(field: &str, value: &str) -> Result<OffsetDateTime, ReportError> {
    OffsetDateTime::parse(value.trim(), &Rfc3339).map_err(|e| {
        ReportError::Invalid(format!("date-range.{field} {value:?} is not RFC 3339: {e}"))
    })
}

fn check_count(path: &str, n: u64) -> Result<u64, ReportError> {
    if n > MAX_SESSION_COUNT {
        return Err(ReportError::Invalid(format!(
            "{path} = {n} is larger than {MAX_SESSION_COUNT}"
        )));
    }
    Ok(n)
}

fn required_text(field: &str, value: String) -> Result<String, ReportError> {
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(ReportError::Invalid(format!("{field} is empty")));
    }
    if value.len() > MAX_ID_LEN {
        return Err(ReportError::Invalid(format!(
            "{field} is longer than {MAX_ID_LEN} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ReportError::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(value)
}

/// A domain normalized, or `None` when nothing is left (`"."` names no domain, as `""`).
fn non_empty_domain(value: Option<String>) -> Option<String> {
    value
        .map(|d| normalize_domain(&d))
        .filter(|d| !d.is_empty())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Validates `policies[i]`.
fn validate_policy(i: usize, p: WirePolicyReport) -> Result<PolicyReport, ReportError> {
    let policy_type = p.policy.policy_type.trim();
    if policy_type.is_empty() {
        return Err(ReportError::Invalid(format!(
            "policies[{i}].policy.policy-type is empty"
        )));
    }
    let summary = Summary {
        total_successful_session_count: check_count(
            &format!("policies[{i}].summary.total-successful-session-count"),
            p.summary.total_successful_session_count,
        )?,
        total_failure_session_count: check_count(
            &format!("policies[{i}].summary.total-failure-session-count"),
            p.summary.total_failure_session_count,
        )?,
    };
    let failure_details = p
        .failure_details
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, f)| validate_failure(i, j, f))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PolicyReport {
        policy: Policy {
            policy_type: PolicyType::from(policy_type),
            policy_string: p
                .policy
                .policy_string
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            policy_domain: non_empty_domain(p.policy.policy_domain),
            mx_host: p
                .policy
                .mx_host
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|h| non_empty(Some(h)))
                .collect(),
        },
        summary,
        failure_details,
    })
}

/// Validates `policies[i].failure-details[j]`.
fn validate_failure(
    i: usize,
    j: usize,
    f: WireFailureDetail,
) -> Result<FailureDetail, ReportError> {
    let result_type = f.result_type.trim();
    if result_type.is_empty() {
        return Err(ReportError::Invalid(format!(
            "policies[{i}].failure-details[{j}].result-type is empty"
        )));
    }
    Ok(FailureDetail {
        result_type: ResultType::from(result_type),
        sending_mta_ip: non_empty(f.sending_mta_ip),
        receiving_mx_hostname: non_empty_domain(f.receiving_mx_hostname),
        receiving_mx_helo: non_empty(f.receiving_mx_helo),
        receiving_ip: non_empty(f.receiving_ip),
        failed_session_count: check_count(
            &format!("policies[{i}].failure-details[{j}].failed-session-count"),
            f.failed_session_count,
        )?,
        additional_information: non_empty(f.additional_information),
        failure_reason_code: non_empty(f.failure_reason_code),
    })
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`], in one linear pass before parsing.
///
/// Needed because serde skips unknown fields without a depth limit, so a report could be
/// stored that no later reader (bounded by serde_json's recursion limit) can open.
fn check_depth(json: &[u8]) -> Result<(), ReportError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(ReportError::Invalid(format!(
                        "JSON is nested deeper than {MAX_JSON_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

impl Report {
    /// Parse and validate report JSON (a UTF-8 byte order mark is tolerated).
    pub fn from_json(json: &[u8]) -> Result<Report, ReportError> {
        let json = json.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(json);
        check_depth(json)?;
        let wire: WireReport = serde_json::from_slice(json)
            .map_err(|e| ReportError::Invalid(format!("not a TLS-RPT JSON report: {e}")))?;
        Report::validate(wire)
    }

    fn validate(wire: WireReport) -> Result<Report, ReportError> {
        let organization_name = required_text("organization-name", wire.organization_name)?;
        let report_id = required_text("report-id", wire.report_id)?;
        let start = parse_time("start-datetime", &wire.date_range.start_datetime)?;
        let end = parse_time("end-datetime", &wire.date_range.end_datetime)?;
        if end <= start {
            return Err(ReportError::Invalid(format!(
                "date-range ends ({}) before it starts ({})",
                wire.date_range.end_datetime, wire.date_range.start_datetime
            )));
        }
        if wire.policies.is_empty() {
            return Err(ReportError::Invalid("policies is empty".to_string()));
        }
        let policies = wire
            .policies
            .into_iter()
            .enumerate()
            .map(|(i, p)| validate_policy(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Report {
            organization_name,
            date_range: DateRange { start, end },
            contact_info: non_empty(wire.contact_info),
            report_id,
            policies,
        })
    }

    /// The distinct `policy-domain` values the report names (normalized), in sorted order.
    pub fn policy_domains(&self) -> BTreeSet<&str> {
        self.policies
            .iter()
            .filter_map(|p| p.policy.policy_domain.as_deref())
            .collect()
    }

    /// The policies that concern `tenant`: those naming it, and those naming no domain at all
    /// (attributed to the tenant the report was routed to, as Postfix-style reports require).
    pub fn policies_for<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a PolicyReport> {
        let tenant = normalize_domain(tenant);
        self.policies
            .iter()
            .filter(move |p| match &p.policy.policy_domain {
                Some(d) => *d == tenant,
                None => true,
            })
    }
}

/// Largest unknown field kept in the stored copy of a report, serialized: a real report's
/// extensions are small, and whatever a sender pads a report with would otherwise be stored
/// (and count against the quota) for the whole retention.
pub const MAX_UNKNOWN_FIELD_BYTES: usize = 4096;

/// The RFC 8460 §4.4 field names of each object of a report, by the key that holds it.
fn known_fields(parent: &str) -> &'static [&'static str] {
    match parent {
        "" => &[
            "organization-name",
            "date-range",
            "contact-info",
            "report-id",
            "policies",
        ],
        "date-range" => &["start-datetime", "end-datetime"],
        "policies" => &["policy", "summary", "failure-details"],
        "policy" => &["policy-type", "policy-string", "policy-domain", "mx-host"],
        "summary" => &[
            "total-successful-session-count",
            "total-failure-session-count",
        ],
        "failure-details" => &[
            "result-type",
            "sending-mta-ip",
            "receiving-mx-hostname",
            "receiving-mx-helo",
            "receiving-ip",
            "failed-session-count",
            "additional-information",
            "failure-reason-code",
        ],
        _ => &[],
    }
}

/// The report JSON without its unknown fields of more than [`MAX_UNKNOWN_FIELD_BYTES`]
/// (serialized), and the paths of the fields dropped; `None` when there are none, so the JSON
/// is kept exactly as received. Known fields and small extensions are always kept.
pub fn trim_unknown_fields(raw_json: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    let mut value: serde_json::Value = serde_json::from_slice(raw_json).ok()?;
    let mut dropped = Vec::new();
    trim_object(&mut value, "", "", &mut dropped);
    if dropped.is_empty() {
        return None;
    }
    Some((serde_json::to_vec(&value).ok()?, dropped))
}

/// Trims `value`, held under the key `parent`, at `path`; recurses into known fields only
/// (an unknown field is kept or dropped whole).
fn trim_object(value: &mut serde_json::Value, parent: &str, path: &str, dropped: &mut Vec<String>) {
    match value {
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                trim_object(item, parent, &format!("{path}[{i}]"), dropped);
            }
        }
        serde_json::Value::Object(map) => {
            let known = known_fields(parent);
            map.retain(|key, field| {
                let big = !known.contains(&key.as_str())
                    && serde_json::to_vec(field).map_or(0, |v| v.len()) > MAX_UNKNOWN_FIELD_BYTES;
                if big {
                    dropped.push(format!("{path}/{key}"));
                }
                !big
            });
            for (key, field) in map.iter_mut() {
                if known.contains(&key.as_str()) {
                    trim_object(field, key, &format!("{path}/{key}"), dropped);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlsrpt::testutil::fixture;

    #[test]
    fn normalize_domain_is_idempotent() {
        // Found by the mail fuzz target: "example.com ." became "example.com ", which a second
        // normalization (or a tenant lookup) did not match.
        for (raw, want) in [
            ("Example.COM.", "example.com"),
            ("example.com .", "example.com"),
            (" example.com\t. \n", "example.com"),
            ("example.com..", "example.com"),
            (" . ", ""),
            ("", ""),
        ] {
            let once = normalize_domain(raw);
            assert_eq!(once, want, "{raw:?}");
            assert_eq!(normalize_domain(&once), once, "{raw:?}");
        }
    }

    fn invalid(json: &str) -> String {
        match Report::from_json(json.as_bytes()) {
            Err(ReportError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn json_nested_past_the_cap_is_400_wherever_it_is() {
        let base = String::from_utf8(fixture("rfc-example.json")).unwrap();
        let with = |depth: usize| {
            let mut s = base.clone();
            // Brackets inside a string do not count.
            let x = format!(
                r#""x":["[[[{{\"",{}1{}],"#,
                r#"{"a":"#.repeat(depth),
                "}".repeat(depth)
            );
            s.insert_str(base.find('{').unwrap() + 1, &x);
            s
        };
        Report::from_json(with(MAX_JSON_DEPTH - 2).as_bytes()).unwrap();
        assert!(Report::from_json(with(MAX_JSON_DEPTH - 1).as_bytes()).is_err());
        let err = Report::from_json(with(100_000).as_bytes()).unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert_eq!(
            err.to_string(),
            format!("invalid report: JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        );
    }

    /// The RFC-shaped example from the checklist, with a given tail replacing the policies.
    fn with_policies(policies: &str) -> String {
        format!(
            r#"{{"organization-name":"Org","date-range":{{"start-datetime":"2025-03-01T00:00:00Z","end-datetime":"2025-03-02T00:00:00Z"}},"contact-info":"x","report-id":"r1","policies":{policies}}}"#
        )
    }

    #[test]
    fn rfc_example_parses_every_field() {
        let r = Report::from_json(&fixture("rfc-example.json")).unwrap();
        assert_eq!(r.organization_name, "Sender Org");
        assert_eq!(r.report_id, "20250301-example.com-1");
        assert_eq!(r.contact_info.as_deref(), Some("tlsrpt@sender.example"));
        assert_eq!(r.date_range.start.unix_timestamp(), 1_740_787_200);
        assert_eq!(r.date_range.end.unix_timestamp(), 1_740_873_599);
        assert_eq!(r.policies.len(), 1);
        let p = &r.policies[0];
        assert_eq!(p.policy.policy_type, PolicyType::Sts);
        assert_eq!(p.policy.policy_domain.as_deref(), Some("example.com"));
        assert_eq!(p.policy.mx_host, vec!["mx1.example.com"]);
        assert_eq!(p.policy.policy_string.len(), 4);
        assert_eq!(p.summary.total_successful_session_count, 980);
        assert_eq!(p.summary.total_failure_session_count, 2);
        let f = &p.failure_details[0];
        assert_eq!(f.result_type, ResultType::CertificateExpired);
        assert_eq!(f.sending_mta_ip.as_deref(), Some("192.0.2.10"));
        assert_eq!(f.receiving_mx_hostname.as_deref(), Some("mx1.example.com"));
        assert_eq!(f.receiving_ip.as_deref(), Some("198.51.100.25"));
        assert_eq!(f.failed_session_count, 2);
        assert_eq!(
            f.failure_reason_code.as_deref(),
            Some("X509_V_ERR_CERT_HAS_EXPIRED")
        );
        assert_eq!(
            r.policy_domains().into_iter().collect::<Vec<_>>(),
            ["example.com"]
        );
    }

    #[test]
    fn google_shaped_report_with_string_mx_host_and_next_day_end() {
        let r = Report::from_json(&fixture("google.json")).unwrap();
        assert_eq!(r.organization_name, "Google Inc.");
        assert_eq!(
            r.contact_info.as_deref(),
            Some("smtp-tls-reporting@google.com")
        );
        // End at next-day 00:00:00Z is accepted as-is (exclusive end).
        assert_eq!(
            r.date_range.end - r.date_range.start,
            time::Duration::days(1)
        );
        let p = &r.policies[0];
        assert_eq!(p.policy.mx_host, vec!["mx.example.org"]);
        assert_eq!(p.policy.policy_domain.as_deref(), Some("example.org"));
        assert_eq!(p.summary.total_successful_session_count, 41);
        assert!(p.failure_details.is_empty());
    }

    #[test]
    fn microsoft_shaped_report_with_null_contact_and_missing_fields() {
        let r = Report::from_json(&fixture("microsoft.json")).unwrap();
        assert_eq!(r.organization_name, "Microsoft Corporation");
        assert_eq!(r.contact_info, None);
        let p = &r.policies[0];
        assert!(p.policy.mx_host.is_empty());
        assert_eq!(p.policy.policy_type, PolicyType::Sts);
        let f = &p.failure_details[0];
        assert_eq!(f.sending_mta_ip, None);
        assert_eq!(f.result_type, ResultType::ValidationFailure);
        assert_eq!(f.failed_session_count, 3);
        // The second policy is no-policy-found without a policy-domain.
        assert_eq!(r.policies[1].policy.policy_type, PolicyType::NoPolicyFound);
        assert_eq!(r.policies[1].policy.policy_domain, None);
    }

    #[test]
    fn large_unknown_fields_are_trimmed_small_ones_and_known_ones_kept() {
        assert_eq!(trim_unknown_fields(&fixture("google.json")), None);
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("rfc-example.json")).unwrap();
        let pad = "x".repeat(100_000);
        v["padding"] = pad.clone().into();
        v["small-extension"] = "kept".into();
        v["policies"][0]["failure-details"][0]["junk"] = pad.into();
        let raw = serde_json::to_vec(&v).unwrap();
        let (trimmed, dropped) = trim_unknown_fields(&raw).unwrap();
        assert_eq!(
            dropped,
            ["/padding", "/policies[0]/failure-details[0]/junk"]
        );
        assert!(trimmed.len() < 2000, "{}", trimmed.len());
        let back: serde_json::Value = serde_json::from_slice(&trimmed).unwrap();
        assert_eq!(back["small-extension"], "kept");
        assert_eq!(
            Report::from_json(&trimmed).unwrap(),
            Report::from_json(&raw).unwrap()
        );
    }

    #[test]
    fn unknown_result_type_and_unknown_fields_are_kept_or_ignored() {
        let json = with_policies(
            r#"[{"policy":{"policy-type":"sts","policy-domain":"Example.COM.","future-field":{"a":[1,2]}},
                "summary":{"total-successful-session-count":1,"total-failure-session-count":5},
                "failure-details":[{"result-type":"quantum-tls-mismatch","failed-session-count":5,"sending-mta-ip":null}],
                "extra":true}]"#,
        );
        let r = Report::from_json(json.as_bytes()).unwrap();
        let p = &r.policies[0];
        assert_eq!(p.policy.policy_domain.as_deref(), Some("example.com"));
        assert_eq!(
            p.failure_details[0].result_type,
            ResultType::Other("quantum-tls-mismatch".into())
        );
        assert_eq!(
            p.failure_details[0].result_type.as_str(),
            "quantum-tls-mismatch"
        );
    }

    #[test]
    fn strict_fields_are_rejected_with_a_one_line_reason() {
        let no_org = r#"{"date-range":{"start-datetime":"2025-03-01T00:00:00Z","end-datetime":"2025-03-02T00:00:00Z"},"report-id":"r","policies":[]}"#;
        assert!(
            invalid(no_org).contains("organization-name"),
            "{}",
            invalid(no_org)
        );

        let bad_date = r#"{"organization-name":"O","date-range":{"start-datetime":"yesterday","end-datetime":"2025-03-02T00:00:00Z"},"report-id":"r","policies":[]}"#;
        assert!(invalid(bad_date).contains("not RFC 3339"));

        let backwards = r#"{"organization-name":"O","date-range":{"start-datetime":"2025-03-02T00:00:00Z","end-datetime":"2025-03-01T00:00:00Z"},"report-id":"r","policies":[{"policy":{"policy-type":"sts"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}"#;
        assert!(invalid(backwards).contains("before it starts"));

        assert!(invalid(&with_policies("[]")).contains("policies is empty"));

        let negative = with_policies(
            r#"[{"policy":{"policy-type":"sts"},"summary":{"total-successful-session-count":-1,"total-failure-session-count":0}}]"#,
        );
        assert!(invalid(&negative).contains("-1"), "{}", invalid(&negative));

        let float = with_policies(
            r#"[{"policy":{"policy-type":"sts"},"summary":{"total-successful-session-count":1.5,"total-failure-session-count":0}}]"#,
        );
        assert!(invalid(&float).contains("1.5"));

        let no_summary = with_policies(r#"[{"policy":{"policy-type":"sts"}}]"#);
        assert!(invalid(&no_summary).contains("summary"));

        let huge = with_policies(&format!(
            r#"[{{"policy":{{"policy-type":"sts"}},"summary":{{"total-successful-session-count":{},"total-failure-session-count":0}}}}]"#,
            MAX_SESSION_COUNT + 1
        ));
        assert!(invalid(&huge).contains("larger than"));

        let empty_id = with_policies("[]").replace(r#""report-id":"r1""#, r#""report-id":"  ""#);
        assert!(invalid(&empty_id).contains("report-id is empty"));

        for reason in [invalid("not json"), invalid("[]"), invalid(&negative)] {
            assert!(!reason.contains('\n'), "reason spans lines: {reason}");
        }
    }

    #[test]
    fn policies_for_keeps_the_tenant_and_domainless_policies() {
        let json = with_policies(
            r#"[{"policy":{"policy-type":"sts","policy-domain":"a.example"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}},
                {"policy":{"policy-type":"sts","policy-domain":"b.example"},"summary":{"total-successful-session-count":2,"total-failure-session-count":0}},
                {"policy":{"policy-type":"no-policy-found"},"summary":{"total-successful-session-count":4,"total-failure-session-count":0}}]"#,
        );
        let r = Report::from_json(json.as_bytes()).unwrap();
        let counts: Vec<u64> = r
            .policies_for("A.example.")
            .map(|p| p.summary.total_successful_session_count)
            .collect();
        assert_eq!(counts, [1, 4]);
    }

    #[test]
    fn error_statuses_match_the_http_contract() {
        assert_eq!(
            ReportError::UnsupportedMediaType("x".into()).http_status(),
            415
        );
        assert_eq!(
            ReportError::TooLarge {
                what: "compressed body",
                limit: 1
            }
            .http_status(),
            413
        );
        assert_eq!(ReportError::Invalid("x".into()).http_status(), 400);
        assert_eq!(ReportError::UnknownDomain("x".into()).http_status(), 404);
    }

    #[test]
    fn report_serializes_back_to_rfc_field_names() {
        let r = Report::from_json(&fixture("rfc-example.json")).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["organization-name"], "Sender Org");
        assert_eq!(v["date-range"]["start-datetime"], "2025-03-01T00:00:00Z");
        assert_eq!(v["policies"][0]["policy"]["policy-type"], "sts");
        assert_eq!(
            v["policies"][0]["failure-details"][0]["result-type"],
            "certificate-expired"
        );
    }

    #[test]
    fn a_domain_of_only_dots_is_no_domain() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("rfc-example.json")).unwrap();
        v["policies"][0]["policy"]["policy-domain"] = ". ".into();
        v["policies"][0]["failure-details"][0]["receiving-mx-hostname"] = "..".into();
        let r = Report::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(r.policies[0].policy.policy_domain, None);
        assert_eq!(r.policies[0].failure_details[0].receiving_mx_hostname, None);
        assert!(r.policy_domains().is_empty());
    }
}
