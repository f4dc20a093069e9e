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
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
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

    /// [`Policy::new`] with the id derived from the body and `generation` (the number of times
    /// the tenant was retired, RFC 8461 §8.3): a tenant re-added after a retirement gets an id
    /// it never had, even with the same body. Generation 0 is [`Policy::new`].
    pub fn with_generation(mode: Mode, mx: Vec<String>, max_age: u64, generation: u32) -> Policy {
        let mut policy = Policy::new(mode, mx, max_age);
        if generation > 0 {
            let mut salted = policy.body.to_vec();
            salted.extend_from_slice(format!("generation: {generation}\r\n").as_bytes());
            policy.id = policy_id(&salted);
        }
        policy
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
    // By table, not `write!("{:02x}")`: every tenant's id is hashed at load, and the
    // formatter cost more than the hash.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// The fields of a policy body as [`parse`] read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields {
    /// Policy mode.
    pub mode: Mode,
    /// MX patterns in file order, as written (matching ignores case).
    pub mx: Vec<String>,
    /// Seconds the policy may be cached.
    pub max_age: u64,
}

/// Why [`parse`] refused a policy body; `line` counts from 1.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Over [`MAX_BODY_BYTES`], which senders may refuse (§3.3).
    #[error("policy body is {0} bytes, over {MAX_BODY_BYTES}")]
    TooLarge(usize),
    /// Not UTF-8 (extension values may hold UTF-8, nothing else may hold non-ASCII).
    #[error("policy body is not UTF-8")]
    NotUtf8,
    /// A line that is not `key: value` per the §3.2 grammar (also an empty line or a bare CR).
    #[error("line {line}: {why}")]
    Syntax {
        /// The line.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The first field is not `version: STSv1`.
    #[error("the first field must be \"version: STSv1\"")]
    Version,
    /// A field that may appear only once appears again.
    #[error("line {line}: {key} given twice")]
    Duplicate {
        /// The line of the second one.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// A known key with a value its grammar does not allow.
    #[error("line {line}: invalid {key} value")]
    Value {
        /// The line.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// A required field is missing (`mx` is required unless the mode is `none`).
    #[error("{0} is missing")]
    Missing(&'static str),
}

/// Parses a policy body strictly by the RFC 8461 §3.2 grammar: `version: STSv1` first; `mode`
/// (`testing`, `enforce` or `none`) and `max_age` (1 to 10 digits, at most [`MAX_AGE_LIMIT`])
/// exactly once; `mx` (`["*."] Domain`) at least once unless the mode is `none`. Lines end in
/// LF or CRLF (the last one may end the body without), `":" *WSP` after the key, trailing
/// spaces or tabs allowed; no blank lines. Keys are case-sensitive: an unknown key (including
/// `Mode`) is an extension, checked against `sts-policy-ext-name`/`-value` and ignored, as
/// senders must ignore it. Bodies over [`MAX_BODY_BYTES`] are refused. Bytes [`render`]
/// produced always parse back to the same fields.
pub fn parse(body: &[u8]) -> Result<Fields, ParseError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ParseError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| ParseError::NotUtf8)?;
    let (mut mode, mut max_age, mut mx) = (None, None, Vec::new());
    if text.is_empty() {
        return Err(ParseError::Version);
    }
    for (index, raw) in text.split_inclusive('\n').enumerate() {
        let line = index + 1;
        // LF or CRLF ends a line; a CR anywhere else is a control character in the value.
        let content = raw
            .strip_suffix('\n')
            .map_or(raw, |l| l.strip_suffix('\r').unwrap_or(l));
        let (key, value) = split_field(content, line)?;
        match (index, key) {
            (0, "version") if value == "STSv1" => continue,
            (0, _) => return Err(ParseError::Version),
            (_, "version") => {
                return Err(ParseError::Duplicate {
                    line,
                    key: "version",
                });
            }
            (_, "mode") => set_once(&mut mode, parse_mode(value), line, "mode")?,
            (_, "max_age") => set_once(&mut max_age, parse_max_age(value), line, "max_age")?,
            (_, "mx") if is_mx_pattern(value) => mx.push(value.to_owned()),
            (_, "mx") => return Err(ParseError::Value { line, key: "mx" }),
            _ => {}
        }
    }
    let mode = mode.ok_or(ParseError::Missing("mode"))?;
    let max_age = max_age.ok_or(ParseError::Missing("max_age"))?;
    if mx.is_empty() && mode != Mode::None {
        return Err(ParseError::Missing("mx"));
    }
    Ok(Fields { mode, mx, max_age })
}

/// One line (terminator removed) as `sts-policy-field *WSP`: the key and the value without the
/// whitespace around it. A key that is none of the four known ones must be an
/// `sts-policy-ext-name`; every value must be `sts-policy-ext-value` (non-empty, visible
/// characters or UTF-8 with single runs of WSP inside).
fn split_field(raw: &str, line: usize) -> Result<(&str, &str), ParseError> {
    let syntax = |why| ParseError::Syntax { line, why };
    let (key, value) = raw
        .split_once(':')
        .ok_or(syntax("no \":\" after the key"))?;
    let mut chars = key.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !first_ok || !rest_ok || key.len() > 32 {
        return Err(syntax(
            "the key is not a field name (no space before \":\")",
        ));
    }
    let value = value.trim_matches(is_wsp);
    if value.is_empty() {
        return Err(syntax("empty value"));
    }
    if !value.chars().all(|c| is_wsp(c) || is_vchar(c)) {
        return Err(syntax("control character in the value"));
    }
    Ok((key, value))
}

fn is_wsp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `sts-policy-vchar`: visible ASCII or any non-ASCII character (the text is already UTF-8).
fn is_vchar(c: char) -> bool {
    c.is_ascii_graphic() || !c.is_ascii()
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: Option<T>,
    line: usize,
    key: &'static str,
) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::Duplicate { line, key });
    }
    *slot = Some(value.ok_or(ParseError::Value { line, key })?);
    Ok(())
}

fn parse_mode(value: &str) -> Option<Mode> {
    match value {
        "enforce" => Some(Mode::Enforce),
        "testing" => Some(Mode::Testing),
        "none" => Some(Mode::None),
        _ => None,
    }
}

/// `1*10(DIGIT)`, and no more than [`MAX_AGE_LIMIT`].
fn parse_max_age(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|&v| v <= MAX_AGE_LIMIT)
}

/// `["*."] Domain` (RFC 5321 §4.1.2): labels of letters, digits and inner hyphens, each 1 to
/// 63 characters, at most 253 in all.
fn is_mx_pattern(value: &str) -> bool {
    let domain = value.strip_prefix("*.").unwrap_or(value);
    domain.len() <= 253
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
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

    #[test]
    fn sha256_hex_matches_the_fips_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

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

    fn fields(mode: Mode, mx_list: &[&str], max_age: u64) -> Fields {
        Fields {
            mode,
            mx: mx(mx_list),
            max_age,
        }
    }

    #[test]
    fn parse_reads_what_render_wrote() {
        let body = render(
            Mode::Enforce,
            &mx(&["mx.example.com", "*.example.net"]),
            604800,
        );
        assert_eq!(
            parse(&body),
            Ok(fields(
                Mode::Enforce,
                &["mx.example.com", "*.example.net"],
                604800
            ))
        );
        assert_eq!(
            parse(&render(Mode::None, &[], 0)),
            Ok(fields(Mode::None, &[], 0))
        );
    }

    #[test]
    fn parse_accepts_what_the_grammar_allows() {
        // LF endings, no final terminator, trailing WSP, tabs after ":", extensions ignored.
        let body = b"version: STSv1\nmode:\ttesting \nmx: MX.Example.COM\nfoo-bar.1: any value \xc3\xa9\nMode: whatever\nmax_age: 31557600";
        assert_eq!(
            parse(body),
            Ok(fields(Mode::Testing, &["MX.Example.COM"], MAX_AGE_LIMIT))
        );
        assert_eq!(
            parse(b"version:STSv1\r\nmode:none\r\nmax_age:0000000001\r\n"),
            Ok(fields(Mode::None, &[], 1))
        );
    }

    #[test]
    fn parse_refuses_what_the_grammar_does_not() {
        use ParseError::*;
        let cases: &[(&[u8], ParseError)] = &[
            (b"", Version),
            (
                b"mode: enforce\nversion: STSv1\nmx: a.b\nmax_age: 1\n",
                Version,
            ),
            (b"version: STSv2\nmode: none\nmax_age: 1\n", Version),
            (
                b"\xef\xbb\xbfversion: STSv1\nmode: none\nmax_age: 1\n",
                Syntax {
                    line: 1,
                    why: "the key is not a field name (no space before \":\")",
                },
            ),
            (
                b"version: STSv1\n\nmode: none\nmax_age: 1\n",
                Syntax {
                    line: 2,
                    why: "no \":\" after the key",
                },
            ),
            (
                b"version: STSv1\nmode : none\nmax_age: 1\n",
                Syntax {
                    line: 2,
                    why: "the key is not a field name (no space before \":\")",
                },
            ),
            (
                b" version: STSv1\nmode: none\nmax_age: 1\n",
                Syntax {
                    line: 1,
                    why: "the key is not a field name (no space before \":\")",
                },
            ),
            (
                b"version: STSv1\nmode: none\rmax_age: 1\n",
                Syntax {
                    line: 2,
                    why: "control character in the value",
                },
            ),
            (
                b"version: STSv1\nmode:\nmax_age: 1\n",
                Syntax {
                    line: 2,
                    why: "empty value",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 1\n\n",
                Syntax {
                    line: 4,
                    why: "no \":\" after the key",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 1\r",
                Syntax {
                    line: 3,
                    why: "control character in the value",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmode: none\nmax_age: 1\n",
                Duplicate {
                    line: 3,
                    key: "mode",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 1\nmax_age: 1\n",
                Duplicate {
                    line: 4,
                    key: "max_age",
                },
            ),
            (
                b"version: STSv1\nversion: STSv1\nmode: none\nmax_age: 1\n",
                Duplicate {
                    line: 2,
                    key: "version",
                },
            ),
            (
                b"version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1\n",
                Value {
                    line: 2,
                    key: "mode",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 31557601\n",
                Value {
                    line: 3,
                    key: "max_age",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 00000000001\n",
                Value {
                    line: 3,
                    key: "max_age",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: -1\n",
                Value {
                    line: 3,
                    key: "max_age",
                },
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: mx.example.com.\nmax_age: 1\n",
                Value { line: 3, key: "mx" },
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.*.example.com\nmax_age: 1\n",
                Value { line: 3, key: "mx" },
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: -a.example.com\nmax_age: 1\n",
                Value { line: 3, key: "mx" },
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: 192.0.2.1:25\nmax_age: 1\n",
                Value { line: 3, key: "mx" },
            ),
            (
                b"version: STSv1\nmode: enforce\nmax_age: 1\n",
                Missing("mx"),
            ),
            (b"version: STSv1\nmx: a.b\nmax_age: 1\n", Missing("mode")),
            (
                b"version: STSv1\nmode: testing\nmx: a.b\n",
                Missing("max_age"),
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 1\n\xff: x\n",
                NotUtf8,
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 1\n_x: y\n",
                Syntax {
                    line: 4,
                    why: "the key is not a field name (no space before \":\")",
                },
            ),
            (
                b"version: STSv1\nmode: none\nmax_age: 1\nx: a\x01b\n",
                Syntax {
                    line: 4,
                    why: "control character in the value",
                },
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                parse(body).as_ref(),
                Err(want),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = vec![b'a'; MAX_BODY_BYTES + 1];
        assert_eq!(parse(&big), Err(TooLarge(MAX_BODY_BYTES + 1)));
        let long_key = format!(
            "version: STSv1\nmode: none\nmax_age: 1\n{}: x\n",
            "k".repeat(33)
        );
        assert!(matches!(
            parse(long_key.as_bytes()),
            Err(Syntax { line: 4, .. })
        ));
    }
}
