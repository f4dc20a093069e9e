//! The DKIM policy: which `Authentication-Results` headers are trusted, and whose `dkim=pass`
//! vouches for a mailed report.

use std::collections::BTreeSet;

use super::dkim::verify_message;
use super::extract::ExtractedReport;
use super::{MailAuthPolicy, MailError, domain_of};
use crate::tlsrpt::report::normalize_domain;

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

/// Collapses whitespace runs to one space and drops whitespace next to `=`, in one pass.
///
/// RFC 8601 allows CFWS around `=`; gluing it to its neighbours makes `key=value` one token.
/// One pass matters: the header is sender-controlled, and repeated replacing was quadratic.
fn glue_equals(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    let mut pending_space = false;
    for c in segment.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && c != '=' && !out.is_empty() && !out.ends_with('=') {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
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
        let glued = glue_equals(&segment);
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
pub(super) fn signs_for(signer: &str, domain: &str) -> bool {
    signer.contains('.')
        && (signer == domain
            || domain
                .strip_suffix(signer)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// Apply the DKIM policy: some trusted `Authentication-Results` says `dkim=pass` — or, with
/// `verify_dkim`, a signature of `raw` verifies here — with a signing domain equal to or a parent
/// of the submitter's domain (`TLS-Report-Submitter`, or the organization name when it is a
/// domain, or — only without a submitter header — the From domain). Returns that signing
/// domain, or `None` when the policy does not require a pass.
pub fn check_dkim(
    extracted: &ExtractedReport,
    raw: &[u8],
    policy: &MailAuthPolicy,
) -> Result<Option<String>, MailError> {
    if !policy.require_dkim_pass {
        return Ok(None);
    }
    let wanted = wanted_signers(extracted)?;
    let (passed, mut seen) = trusted_results(extracted, policy, &wanted);
    if let Some(signer) = passed {
        return Ok(Some(signer));
    }
    if policy.verify_dkim {
        let verdicts = verify_message(raw, &policy.dns_servers);
        if let Some(signer) = verdicts
            .passed
            .iter()
            .find(|signer| wanted.iter().any(|d| signs_for(signer, d)))
        {
            return Ok(Some(signer.clone()));
        }
        seen.extend(
            verdicts
                .passed
                .iter()
                .map(|signer| format!("dkim=pass header.d={signer} (verified here)")),
        );
        seen.extend(verdicts.failed);
        if verdicts.temporary {
            return Err(MailError::AuthTemporary(format!(
                "DKIM for {} could not be verified now (saw {})",
                join(&wanted),
                seen.join("; ")
            )));
        }
    }
    Err(MailError::Auth(if seen.is_empty() {
        let from = if policy.verify_dkim {
            "no DKIM signature and no DKIM result from a trusted authserv-id"
        } else {
            "no DKIM result from a trusted authserv-id"
        };
        let ids = &policy.trusted_authserv_ids;
        let ids = if ids.is_empty() {
            String::new()
        } else {
            format!(" ({})", ids.join(", "))
        };
        format!("{from}{ids} for {}", join(&wanted))
    } else {
        format!(
            "no dkim=pass for {} (saw {})",
            join(&wanted),
            seen.join("; ")
        )
    }))
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The domains a signature must be for (see [`check_dkim`]).
fn wanted_signers(extracted: &ExtractedReport) -> Result<BTreeSet<String>, MailError> {
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
    Ok(wanted)
}

/// The signing domain a trusted `Authentication-Results` says `dkim=pass` for (a wanted
/// domain), and the other trusted results seen.
fn trusted_results(
    extracted: &ExtractedReport,
    policy: &MailAuthPolicy,
    wanted: &BTreeSet<String>,
) -> (Option<String>, Vec<String>) {
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
                return (Some(signer.to_owned()), seen);
            }
            seen.push(format!(
                "dkim={result} header.d={signer} ({})",
                ar.authserv_id
            ));
        }
    }
    (None, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ar =
            parse_authentication_results("mx;  dkim \t=\r\n pass  header.d =  a.example ").unwrap();
        assert_eq!(
            ar.dkim,
            [("pass".to_string(), Some("a.example".to_string()))]
        );
        assert!(signs_for("google.com", "tls.google.com"));
        assert!(signs_for("google.com", "google.com"));
        assert!(!signs_for("google.com", "notgoogle.com"));
        assert!(!signs_for("com", "google.com"));
    }

    #[test]
    fn spaces_around_equals_cost_linear_time() {
        // Quadratic before: 15 s for 100 000 spaces.
        let value = format!(
            "evil.example; dkim{}= pass header.d=evil.example",
            " ".repeat(100_000)
        );
        let started = std::time::Instant::now();
        let ar = parse_authentication_results(&value).unwrap();
        let took = started.elapsed();
        println!("parsed 100 000 spaces in {took:?}");
        assert_eq!(
            ar.dkim,
            [("pass".to_string(), Some("evil.example".to_string()))]
        );
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    }
}
