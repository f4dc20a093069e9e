//! MX drift: the domain's MX hosts against the policy's `mx:` patterns (RFC 8461 §4.1).

use crate::policy::mx_matches;

/// How an MX set and a pattern list fit together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// MX hosts no pattern covers: senders enforcing the policy refuse to deliver to them.
    pub uncovered: Vec<String>,
    /// Patterns that match no MX host: stale or mistyped.
    pub unused: Vec<String>,
}

/// Compares `hosts` (the MX exchanges, with or without the trailing dot) with `patterns`.
pub fn drift(hosts: &[String], patterns: &[String]) -> Drift {
    let uncovered = hosts
        .iter()
        .filter(|h| !patterns.iter().any(|p| mx_matches(p, h)))
        .map(|h| h.trim_end_matches('.').to_owned())
        .collect();
    let unused = patterns
        .iter()
        .filter(|p| !hosts.iter().any(|h| mx_matches(p, h)))
        .cloned()
        .collect();
    Drift { uncovered, unused }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_wildcard_covers_exactly_one_left_label() {
        let patterns = s(&["*.example.com"]);
        assert_eq!(
            drift(&s(&["mx1.example.com."]), &patterns),
            Drift::default()
        );
        let d = drift(&s(&["a.b.example.com", "example.com"]), &patterns);
        assert_eq!(d.uncovered, s(&["a.b.example.com", "example.com"]));
        assert_eq!(d.unused, s(&["*.example.com"]));
    }

    #[test]
    fn exact_patterns_ignore_case_and_the_trailing_dot() {
        let d = drift(&s(&["MX.Example.COM."]), &s(&["mx.example.com"]));
        assert_eq!(d, Drift::default());
    }

    #[test]
    fn uncovered_hosts_and_unused_patterns_are_both_named() {
        let d = drift(
            &s(&["mail.example.com", "mx.example.com"]),
            &s(&["mx.example.com", "mx.elsewhere.example"]),
        );
        assert_eq!(d.uncovered, s(&["mail.example.com"]));
        assert_eq!(d.unused, s(&["mx.elsewhere.example"]));
    }
}
