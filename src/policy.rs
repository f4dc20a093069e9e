//! The MTA-STS policy model: rendering (RFC 8461 §3.2), the policy id, and the TXT records.
//!
//! Everything here is pure and runs once per tenant at load time; the request path only copies
//! the bytes it produced.

use std::fmt;

use bytes::Bytes;

/// Largest `max_age` RFC 8461 §3.2 allows (about one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// Largest policy body senders must accept: RFC 8461 §3.3 lets them refuse a larger one as a
/// fetch error (postfix-mta-sts-resolver does), so such a policy would not protect anything.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Length of the policy id: 32 is the most the `sts-id` ABNF (§3.1) allows, and 32 hex digits
/// keep 128 bits of the digest.
pub const ID_LEN: usize = 32;

/// The policy mode (RFC 8461 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Senders refuse delivery that fails validation.
    Enforce,
    /// Senders deliver anyway and report failures (TLS-RPT).
    Testing,
    /// The domain has no active policy (used to withdraw one, §8.3).
    None,
}

impl Mode {
    /// The token used in the policy body.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated policy and its rendered form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Policy mode.
    pub mode: Mode,
    /// MX patterns, already validated and in A-label form.
    pub mx: Vec<String>,
    /// Seconds senders may cache the policy.
    pub max_age: u64,
    /// The exact bytes served at `/.well-known/mta-sts.txt`.
    pub body: Bytes,
    /// Digest-derived id for the `_mta-sts` TXT record.
    pub id: String,
}

impl Policy {
    /// Renders the body and computes its id. Inputs must already be validated.
    pub fn new(mode: Mode, mx: Vec<String>, max_age: u64) -> Policy {
        let body = render(mode, &mx, max_age);
        let id = policy_id(&body);
        Policy {
            mode,
            mx,
            max_age,
            body: Bytes::from(body),
            id,
        }
    }

    /// The value of the `_mta-sts.<domain>` TXT record.
    pub fn txt_value(&self) -> String {
        format!("v=STSv1; id={}", self.id)
    }
}

/// Renders a policy body: `version` first, one `mx` line per pattern, CRLF endings, no blank
/// lines (RFC 8461 §3.2 and erratum 6253).
pub fn render(mode: Mode, mx: &[String], max_age: u64) -> Vec<u8> {
    let mut out = String::with_capacity(48 + mx.iter().map(|m| m.len() + 6).sum::<usize>());
    out.push_str("version: STSv1\r\n");
    out.push_str("mode: ");
    out.push_str(mode.as_str());
    out.push_str("\r\n");
    for pattern in mx {
        out.push_str("mx: ");
        out.push_str(pattern);
        out.push_str("\r\n");
    }
    out.push_str("max_age: ");
    out.push_str(&max_age.to_string());
    out.push_str("\r\n");
    out.into_bytes()
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// SHA-256 of the body as lowercase hex, cut to [`ID_LEN`]: stable across machines, restarts and
/// Rust versions, and only `[0-9a-f]`, which the `sts-id` grammar accepts.
pub fn policy_id(body: &[u8]) -> String {
    let mut id = sha256_hex(body);
    id.truncate(ID_LEN);
    id
}

/// The value of the `_smtp._tls.<domain>` TXT record (RFC 8460 §3), or `None` without addresses.
pub fn tlsrpt_txt_value(rua: &[String]) -> Option<String> {
    if rua.is_empty() {
        None
    } else {
        Some(format!("v=TLSRPTv1; rua={}", rua.join(",")))
    }
}

/// Whether `host` matches an MX `pattern` per RFC 8461 §4.1: a wildcard covers exactly one
/// left-most label.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(suffix) => match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
            None => false,
        },
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Quotes a TXT value for a zone file: RFC 1035 character-strings hold at most 255 bytes, so a
/// longer value is split into several quoted strings that resolvers concatenate.
pub fn zone_quote(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut parts = Vec::new();
    for chunk in bytes.chunks(255) {
        let text = String::from_utf8_lossy(chunk)
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        parts.push(format!("\"{text}\""));
    }
    if parts.is_empty() {
        parts.push("\"\"".to_owned());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn renders_exact_bytes() {
        let p = Policy::new(
            Mode::Enforce,
            mx(&["mail.example.com", "*.mx.example.net"]),
            604800,
        );
        assert_eq!(
            &p.body[..],
            b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.mx.example.net\r\nmax_age: 604800\r\n"
        );
    }

    #[test]
    fn none_mode_without_mx() {
        let p = Policy::new(Mode::None, vec![], 86400);
        assert_eq!(
            &p.body[..],
            b"version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"
        );
    }

    #[test]
    fn id_is_stable_and_alphanumeric() {
        let a = Policy::new(Mode::Testing, mx(&["mx.example.com"]), 86400);
        let b = Policy::new(Mode::Testing, mx(&["mx.example.com"]), 86400);
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), ID_LEN);
        assert!(a.id.chars().all(|c| c.is_ascii_alphanumeric()));
        // A known vector: if this changes, every deployed id changes, so it must never drift.
        assert_eq!(
            a.id,
            policy_id(
                b"version: STSv1\r\nmode: testing\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"
            )
        );
        let c = Policy::new(Mode::Testing, mx(&["mx.example.com"]), 86401);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn id_known_answer() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(policy_id(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn txt_values() {
        let p = Policy::new(Mode::Testing, mx(&["mx.example.com"]), 86400);
        assert_eq!(p.txt_value(), format!("v=STSv1; id={}", p.id));
        assert_eq!(tlsrpt_txt_value(&[]), None);
        assert_eq!(
            tlsrpt_txt_value(&mx(&["mailto:a@example.com", "https://r.example.com/x"])).unwrap(),
            "v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/x"
        );
    }

    #[test]
    fn wildcard_matching_rfc8461_4_1() {
        assert!(mx_matches("*.example.com", "mail.example.com"));
        assert!(mx_matches("*.example.com", "MAIL.example.com."));
        assert!(!mx_matches("*.example.com", "example.com"));
        assert!(!mx_matches("*.example.com", "a.b.example.com"));
        assert!(mx_matches("mx.example.com", "mx.example.com"));
        assert!(!mx_matches("mx.example.com", "mx2.example.com"));
    }

    #[test]
    fn zone_quote_splits_long_strings() {
        assert_eq!(zone_quote("v=STSv1; id=1"), "\"v=STSv1; id=1\"");
        let long = "a".repeat(300);
        let q = zone_quote(&long);
        assert_eq!(q, format!("\"{}\" \"{}\"", "a".repeat(255), "a".repeat(45)));
    }
}
