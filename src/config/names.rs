//! Validation and normalisation of host names, MX patterns and TLS-RPT URIs.
//!
//! Each function returns the canonical form (lowercase A-labels) or a one-line reason that the
//! caller prefixes with file, line and field.

use std::net::IpAddr;

/// Longest host name in presentation form without the root dot (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Normalises a host name to lowercase A-labels and checks it is a usable public DNS name.
pub fn normalize_hostname(input: &str) -> Result<String, String> {
    if input.is_empty() {
        return Err("is empty".into());
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{input:?} contains white space"));
    }
    if input.ends_with('.') {
        return Err(format!("{input:?} must not end with a dot"));
    }
    let unbracketed = input.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{input:?} is an IP address; a host name is required"
        ));
    }
    if input.contains(':') {
        return Err(format!("{input:?} must not contain a port"));
    }
    if input.contains('*') {
        return Err(format!(
            "{input:?} contains '*'; a wildcard is not allowed here"
        ));
    }
    let ascii = idna::domain_to_ascii_strict(input)
        .map_err(|_| format!("{input:?} is not a valid host name (IDNA conversion failed)"))?;
    check_ldh(&ascii).map_err(|why| format!("{input:?} is not a valid host name: {why}"))?;
    Ok(ascii)
}

/// Normalises an MX pattern: a host name, or `*.` followed by a host name (RFC 8461 §3.2).
pub fn normalize_mx_pattern(input: &str) -> Result<String, String> {
    match input.strip_prefix("*.") {
        Some(rest) => {
            if rest.contains('*') {
                return Err(format!(
                    "{input:?}: a wildcard is allowed only as the whole left-most label"
                ));
            }
            let host = normalize_hostname(rest)?;
            Ok(format!("*.{host}"))
        }
        None if input.contains('*') => Err(format!(
            "{input:?}: a wildcard is allowed only as the whole left-most label (\"*.example.com\")"
        )),
        None => normalize_hostname(input),
    }
}

fn check_ldh(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least two labels (e.g. example.com)".into());
    }
    for label in &labels {
        if label.is_empty() {
            return Err("has an empty label".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "label {label:?} is longer than {MAX_LABEL_LEN} characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label {label:?} has characters other than letters, digits and '-'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    let tld = labels[labels.len() - 1];
    if tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the top-level label is numeric".into());
    }
    Ok(())
}

/// Checks a TLS-RPT reporting URI (RFC 8460 §3): `mailto:` or `https:`; `,`, `!` and `;` must
/// be percent-encoded because they delimit the record. The domain (mailto) or host (https) is
/// returned as lowercase A-labels, so `mailto:tls@bücher.example` is published as
/// `mailto:tls@xn--bcher-kva.example` (RFC 6068 §2 prefers A-labels in mailto domains).
pub fn validate_rua(input: &str) -> Result<String, String> {
    for (c, enc) in [(',', "%2C"), ('!', "%21"), (';', "%3B")] {
        if input.contains(c) {
            return Err(format!(
                "{input:?} contains '{c}', which must be percent-encoded as {enc} in a TLS-RPT URI (RFC 8460 §3)"
            ));
        }
    }
    if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{input:?} contains spaces or control characters; percent-encode them"
        ));
    }
    if let Some(rest) = strip_scheme(input, "mailto:") {
        mailto_rua(input, rest)
    } else if let Some(rest) = strip_scheme(input, "https://") {
        https_rua(input, rest)
    } else {
        Err(format!("{input:?} must be a mailto: or https: URI"))
    }
}

/// `input` without `scheme`, compared without regard to ASCII case.
fn strip_scheme<'a>(input: &'a str, scheme: &str) -> Option<&'a str> {
    let head = input.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &input[scheme.len()..])
}

/// Outside the domain, a URI must be ASCII: non-ASCII text there is percent-encoded UTF-8.
fn ascii_part(input: &str, part: &str, what: &str) -> Result<(), String> {
    if part.is_ascii() {
        Ok(())
    } else {
        Err(format!(
            "{input:?}: the {what} has non-ASCII characters; percent-encode them as UTF-8 (only the domain may be written as a U-label)"
        ))
    }
}

fn mailto_rua(input: &str, rest: &str) -> Result<String, String> {
    let (addr, query) = match rest.split_once('?') {
        Some((addr, query)) => (addr, Some(query)),
        None => (rest, None),
    };
    let (local, domain) = addr
        .rsplit_once('@')
        .ok_or_else(|| format!("{input:?} is not a mailto: address (no '@')"))?;
    if local.is_empty() {
        return Err(format!("{input:?} has an empty local part"));
    }
    ascii_part(input, local, "local part")?;
    ascii_part(input, query.unwrap_or_default(), "query")?;
    let domain = normalize_hostname(domain).map_err(|why| format!("{input:?}: domain {why}"))?;
    // Keep the operator's spelling of the local part: it may be case-sensitive.
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(format!("mailto:{local}@{domain}{query}"))
}

fn https_rua(input: &str, rest: &str) -> Result<String, String> {
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if authority.contains('@') {
        return Err(format!("{input:?} must not contain user information"));
    }
    ascii_part(input, tail, "path")?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>()
                .map_err(|_| format!("{input:?} has an invalid port {port:?}"))?;
            (host, &authority[host.len()..])
        }
        None => (authority, ""),
    };
    let host = normalize_hostname(host).map_err(|why| format!("{input:?}: host {why}"))?;
    Ok(format!("https://{host}{port}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(normalize_hostname("Example.COM").unwrap(), "example.com");
        assert_eq!(
            normalize_hostname("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert!(
            normalize_hostname("example.com.")
                .unwrap_err()
                .contains("must not end with a dot")
        );
        assert!(
            normalize_hostname("192.0.2.1")
                .unwrap_err()
                .contains("IP address")
        );
        assert!(
            normalize_hostname("[2001:db8::1]")
                .unwrap_err()
                .contains("IP address")
        );
        assert!(
            normalize_hostname("mx.example.com:25")
                .unwrap_err()
                .contains("port")
        );
        assert!(
            normalize_hostname("localhost")
                .unwrap_err()
                .contains("two labels")
        );
        assert!(normalize_hostname("a..example").is_err());
        assert!(normalize_hostname("-a.example").is_err());
        assert!(normalize_hostname("under_score.example").is_err());
        assert!(normalize_hostname(&format!("{}.example", "a".repeat(64))).is_err());
        assert!(normalize_hostname("1.2.3.4444").is_err());
    }

    #[test]
    fn mx_patterns() {
        assert_eq!(
            normalize_mx_pattern("*.MX.example.net").unwrap(),
            "*.mx.example.net"
        );
        assert!(
            normalize_mx_pattern("mx.*.example.net")
                .unwrap_err()
                .contains("left-most")
        );
        assert!(
            normalize_mx_pattern("*mx.example.net")
                .unwrap_err()
                .contains("left-most")
        );
        assert!(
            normalize_mx_pattern("*.*.example.net")
                .unwrap_err()
                .contains("left-most")
        );
        assert!(normalize_mx_pattern("*.com").is_err());
    }

    #[test]
    fn rua_uris() {
        assert_eq!(
            validate_rua("mailto:TLS@example.com").unwrap(),
            "mailto:TLS@example.com"
        );
        assert_eq!(
            validate_rua("https://r.example.com/tlsrpt").unwrap(),
            "https://r.example.com/tlsrpt"
        );
        assert!(
            validate_rua("mailto:a,b@example.com")
                .unwrap_err()
                .contains("%2C")
        );
        assert!(
            validate_rua("mailto:a!b@example.com")
                .unwrap_err()
                .contains("%21")
        );
        assert!(
            validate_rua("https://r.example.com/a;b")
                .unwrap_err()
                .contains("%3B")
        );
        assert!(
            validate_rua("http://r.example.com/")
                .unwrap_err()
                .contains("mailto: or https:")
        );
        assert!(
            validate_rua("mailto:nobody")
                .unwrap_err()
                .contains("no '@'")
        );
        assert!(validate_rua("https://u@r.example.com/").is_err());
        assert_eq!(
            validate_rua("MAILTO:tls@Bücher.example?subject=x").unwrap(),
            "mailto:tls@xn--bcher-kva.example?subject=x"
        );
        assert_eq!(
            validate_rua("https://Bücher.example:8443/r%C3%BC").unwrap(),
            "https://xn--bcher-kva.example:8443/r%C3%BC"
        );
        assert!(
            validate_rua("mailto:jörg@example.com")
                .unwrap_err()
                .contains("the local part has non-ASCII characters; percent-encode")
        );
        assert!(
            validate_rua("https://r.example.com/rü")
                .unwrap_err()
                .contains("the path has non-ASCII")
        );
        assert!(
            validate_rua("mailto:a@b\u{e9}\u{301}..example")
                .unwrap_err()
                .contains("domain")
        );
        assert!(
            validate_rua("mailto:a b@example.com")
                .unwrap_err()
                .contains("spaces")
        );
    }
}
