//! DNS-01 (RFC 8555 §8.4) through the built-in delegated zone.
//!
//! The customer (or a migration script) creates one CNAME per host,
//! `_acme-challenge.<host> CNAME <host>._acme-challenge.<zone>`, before `<host>` points here;
//! the CA follows it into the zone mta-stsd answers, so a certificate can be issued while
//! senders still reach the old provider. The issuer publishes the TXT value in [`Answers`]
//! and the zone (`dns::zone`, a layer up) reads it on every query; nothing here knows DNS
//! wire formats.

use std::collections::HashMap;
use std::sync::RwLock;

/// The label below the zone under which every challenge target lives (and the one CAs look
/// up below the host, RFC 8555 §8.4).
pub const CHALLENGE_LABEL: &str = "_acme-challenge";

/// `<host>._acme-challenge.<zone>`, lower case, without the final dot: where the customer's
/// `_acme-challenge.<host>` CNAME points. A host is LDH (no `_`), so the mapping is one to one
/// and disjoint from the zone's `_mta-sts` and `_smtp._tls` subtrees.
pub fn target(host: &str, zone: &str) -> String {
    format!("{host}.{CHALLENGE_LABEL}.{zone}").to_ascii_lowercase()
}

/// The name CAs query for `host`: `_acme-challenge.<host>`.
pub fn challenge_name(host: &str) -> String {
    format!("{CHALLENGE_LABEL}.{host}")
}

/// The TXT values of the DNS-01 challenges in flight, by [`target`] name.
#[derive(Debug, Default)]
pub struct Answers {
    map: RwLock<HashMap<String, Vec<String>>>,
}

impl Answers {
    /// Answers `name` with `value` (beside any value already there) until [`Answers::remove`].
    pub fn insert(&self, name: &str, value: &str) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let values = map.entry(name.to_ascii_lowercase()).or_default();
        if !values.iter().any(|v| v == value) {
            values.push(value.to_owned());
        }
    }

    /// Stops answering `value` at `name`.
    pub fn remove(&self, name: &str, value: &str) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let name = name.to_ascii_lowercase();
        if let Some(values) = map.get_mut(&name) {
            values.retain(|v| v != value);
            if values.is_empty() {
                map.remove(&name);
            }
        }
    }

    /// The values published at `name` (lower case, no final dot), empty when none.
    pub fn get(&self, name: &str) -> Vec<String> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_lower_case_and_below_the_challenge_label() {
        assert_eq!(
            target("MTA-STS.Example.com", "sts.op.example"),
            "mta-sts.example.com._acme-challenge.sts.op.example"
        );
        assert_eq!(
            challenge_name("mta-sts.example.com"),
            "_acme-challenge.mta-sts.example.com"
        );
    }

    #[test]
    fn values_come_and_go_one_by_one() {
        let answers = Answers::default();
        let name = target("mta-sts.a.example", "z.example");
        answers.insert(&name, "one");
        answers.insert(&name.to_ascii_uppercase(), "two");
        answers.insert(&name, "one");
        assert_eq!(answers.get(&name), ["one", "two"]);
        answers.remove(&name, "one");
        assert_eq!(answers.get(&name), ["two"]);
        answers.remove(&name, "two");
        assert!(answers.get(&name).is_empty());
        assert!(answers.map.read().unwrap().is_empty());
    }
}
