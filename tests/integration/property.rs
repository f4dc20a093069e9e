//! Random valid tenants rendered and parsed back by an independent, strict RFC 8461 parser.

use std::path::Path;

use proptest::prelude::*;

/// A policy as parsed from the wire.
#[derive(Debug, PartialEq)]
struct Parsed {
    mode: String,
    mx: Vec<String>,
    max_age: u64,
}

/// Strict parser for RFC 8461 §3.2 as we emit it: ASCII only, every line ends with CRLF, no
/// blank lines, `version: STSv1` first, `mode` and `max_age` exactly once, `mx` only as
/// allowed, no leading white space, no space before the colon.
fn strict_parse(body: &[u8]) -> Result<Parsed, String> {
    if !body.is_ascii() {
        return Err("non-ASCII byte".into());
    }
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    if !text.ends_with("\r\n") {
        return Err("body does not end with CRLF".into());
    }
    let lines: Vec<&str> = text[..text.len() - 2].split("\r\n").collect();
    let (mut mode, mut max_age, mut mx) = (None, None, Vec::new());
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() || line.contains('\n') || line.contains('\r') {
            return Err(format!("line {i}: blank line or bare CR/LF"));
        }
        let (key, value) = line
            .split_once(": ")
            .ok_or(format!("line {i}: no \": \""))?;
        if key.trim() != key || value.trim() != value || value.is_empty() {
            return Err(format!("line {i}: stray white space"));
        }
        match (i, key) {
            (0, "version") if value == "STSv1" => {}
            (0, _) => return Err("first line is not version: STSv1".into()),
            (_, "version") => return Err("version twice".into()),
            (_, "mode") if mode.is_none() && ["enforce", "testing", "none"].contains(&value) => {
                mode = Some(value.to_owned())
            }
            (_, "max_age") if max_age.is_none() => {
                if !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 10 {
                    return Err("max_age not 1*10DIGIT".into());
                }
                max_age = Some(value.parse::<u64>().map_err(|e| e.to_string())?);
            }
            (_, "mx") => {
                let host = value.strip_prefix("*.").unwrap_or(value);
                let ok = host.split('.').count() >= 2
                    && host.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                            && !l.starts_with('-')
                            && !l.ends_with('-')
                    });
                if !ok {
                    return Err(format!("bad mx {value:?}"));
                }
                mx.push(value.to_owned());
            }
            (_, other) => return Err(format!("unexpected or repeated key {other:?}")),
        }
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if max_age > 31_557_600 {
        return Err("max_age above limit".into());
    }
    if mode != "none" && mx.is_empty() {
        return Err("no mx".into());
    }
    Ok(Parsed { mode, mx, max_age })
}

fn label() -> impl Strategy<Value = String> {
    // No "--": labels with hyphens in positions 3-4 are reserved (IDNA), which we reject.
    "[a-z0-9]([a-z0-9]|-[a-z0-9]){0,5}"
}

fn hostname() -> impl Strategy<Value = String> {
    (prop::collection::vec(label(), 1..4), "[a-z]{2,6}")
        .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")))
}

fn mx_pattern() -> impl Strategy<Value = String> {
    (any::<bool>(), hostname())
        .prop_map(|(wild, host)| if wild { format!("*.{host}") } else { host })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn rendered_policy_parses_back(
        domain in hostname(),
        mode in prop::sample::select(vec!["enforce", "testing", "none"]),
        mx in prop::collection::btree_set(mx_pattern(), 1..6),
        max_age in 0u64..=31_557_600,
    ) {
        let mx: Vec<String> = mx.into_iter().collect();
        let yaml = format!(
            "domain: {domain}\nmode: {mode}\nmx:\n{}max_age: {max_age}\n",
            mx.iter().map(|m| format!("  - \"{m}\"\n")).collect::<String>()
        );
        let file = mta_stsd::config::parse_tenants(Path::new("p.yaml"), &yaml);
        let errors: Vec<_> = file.diagnostics.iter().filter(|d| d.is_error()).collect();
        prop_assert!(errors.is_empty(), "{errors:?} for {yaml}");
        let tenant = &file.tenants[0];
        let parsed = strict_parse(&tenant.policy.body).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", tenant.policy.body)))?;
        prop_assert_eq!(parsed, Parsed { mode: mode.to_owned(), mx: mx.clone(), max_age });
        prop_assert_eq!(&tenant.policy.id, &mta_stsd::policy::policy_id(&tenant.policy.body));
    }
}

#[test]
fn strict_parser_rejects_what_it_should() {
    assert!(strict_parse(b"version: STSv1\r\nmode: none\r\nmax_age: 1\r\n").is_ok());
    assert!(strict_parse(b"version: STSv1\nmode: none\nmax_age: 1\n").is_err());
    assert!(strict_parse(b"mode: none\r\nversion: STSv1\r\nmax_age: 1\r\n").is_err());
    assert!(strict_parse(b"version: STSv1\r\nmode: none\r\nmode: none\r\nmax_age: 1\r\n").is_err());
    assert!(strict_parse(b"version: STSv1\r\nmode: testing\r\nmax_age: 1\r\n").is_err());
    assert!(strict_parse(b"version: STSv1\r\n\r\nmode: none\r\nmax_age: 1\r\n").is_err());
    assert!(
        strict_parse(b"version: STSv1\r\nmode: enforce\r\nmx: a..b\r\nmax_age: 1\r\n").is_err()
    );
}
