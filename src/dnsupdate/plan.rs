//! What each covered tenant's records should be, what the primary was last seen or made to
//! hold, and when to try again: pure bookkeeping, so it is tested without a server.
//!
//! Values come from the same ready gate as the built-in zone (`dns::gate`): a new id is
//! written only once its body is served over a valid certificate, so RFC 8461 §8.1's order
//! (new body first, then the new id) holds here too.

use std::collections::HashMap;

use crate::certs::CertBoard;
use crate::config::UpdateTarget;
use crate::dns::Gate;
use crate::dns::names::Kind;
use crate::publish::Publishing;
use crate::registry::Snapshot;

/// First retry after a failure; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: u64 = 2;
/// Longest wait between two tries: a fixed primary is caught up within minutes.
pub const MAX_BACKOFF: u64 = 300;

/// A tenant record's state, as the metrics and the API report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not written yet: waiting for the policy to be ready, or for the next try.
    Pending,
    /// The primary holds the value.
    Published,
    /// The last try failed: the server's rcode (`NOTAUTH`, `REFUSED`, …) or the failure.
    Error(String),
}

impl State {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Published => "published",
            State::Error(_) => "error",
        }
    }
}

/// What to do at a record's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Nothing yet (the `_mta-sts` id is not ready).
    Wait,
    /// The TXT RRset must be exactly this value.
    Set(String),
    /// Delete the RRset if it still holds this value (what mta-stsd wrote).
    Remove(String),
}

/// One record of one tenant.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Index of the covering target in `dns_update:`.
    pub target: usize,
    /// The covering zone.
    pub zone: String,
    /// What to do.
    pub want: Want,
    /// The value the primary is known to hold from us.
    pub written: Option<String>,
    /// Reported state.
    pub state: State,
    /// Failures in a row.
    pub failures: u32,
    /// Unix time of the next try.
    pub due: i64,
}

/// Records by state: `pending`, `published`, `error`, in that order.
pub type Counts = [(&'static str, usize); 3];

/// A record's key: which record of which tenant domain.
pub type Key = (Kind, String);

/// Every covered tenant's records and the gate that decides the `_mta-sts` values.
#[derive(Debug, Default)]
pub struct Plan {
    gate: Gate,
    entries: HashMap<Key, Entry>,
    generation: Option<u64>,
}

/// The target and zone covering `domain`: the longest configured zone it lies in (a zone
/// `example.com` covers `example.com` itself and every name below it).
pub fn covering(targets: &[UpdateTarget], domain: &str) -> Option<(usize, String)> {
    let mut best: Option<(usize, &String)> = None;
    for (i, target) in targets.iter().enumerate() {
        for zone in &target.zones {
            let inside = domain == zone || domain.ends_with(&format!(".{zone}"));
            if inside && best.is_none_or(|(_, b)| zone.len() > b.len()) {
                best = Some((i, zone));
            }
        }
    }
    best.map(|(i, z)| (i, z.clone()))
}

/// The doubling wait after `failures` failures in a row.
pub fn backoff(failures: u32) -> i64 {
    let secs = FIRST_BACKOFF.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    i64::try_from(secs.min(MAX_BACKOFF)).unwrap_or(300)
}

impl Plan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// The records of `domain` and their states.
    pub fn entries(&self) -> &HashMap<Key, Entry> {
        &self.entries
    }

    /// Brings the wanted values in line with `snapshot` and `board` at `now`.
    pub fn refresh(
        &mut self,
        targets: &[UpdateTarget],
        snapshot: &Snapshot,
        board: &CertBoard,
        publishing: Publishing<'_>,
        now: i64,
    ) {
        if self.generation != Some(snapshot.generation) {
            self.walk(targets, snapshot, now);
            self.generation = Some(snapshot.generation);
        }
        for update in self.gate.refresh(snapshot, board, publishing, now) {
            let Some((target, zone)) = covering(targets, &update.domain) else {
                continue;
            };
            if update.kind == Kind::TlsRpt && !targets[target].tlsrpt {
                continue;
            }
            let key = (update.kind, update.domain);
            let entry = self
                .entries
                .entry(key)
                .or_insert_with(|| Entry::new(target, zone, now));
            entry.want = match (update.value, &entry.written) {
                (Some(value), _) => Want::Set(value),
                (None, Some(written)) => Want::Remove(written.clone()),
                (None, None) => Want::Wait,
            };
            entry.retry_now(now);
        }
    }

    /// A new snapshot: every covered tenant has an entry (pending until its id is ready),
    /// and the records of a removed tenant are deleted if they still hold what was written.
    fn walk(&mut self, targets: &[UpdateTarget], snapshot: &Snapshot, now: i64) {
        for tenant in snapshot.tenants() {
            if let Some((target, zone)) = covering(targets, &tenant.domain) {
                let key = (Kind::Sts, tenant.domain.clone());
                self.entries
                    .entry(key)
                    .or_insert_with(|| Entry::new(target, zone, now));
            }
        }
        let mut forget = Vec::new();
        self.entries.retain(|(_, domain), entry| {
            if snapshot.by_domain(domain).is_some() {
                return true;
            }
            forget.push(domain.clone());
            let Some(written) = entry.written.clone() else {
                return false;
            };
            entry.want = Want::Remove(written);
            entry.retry_now(now);
            true
        });
        // A tenant added back later is written again from scratch.
        for domain in forget {
            self.gate.forget(&domain);
        }
    }

    /// The entries due at `now`, at most `limit`, oldest failures last.
    pub fn due(&self, now: i64, limit: usize) -> Vec<(Key, Entry)> {
        let mut due: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.want != Want::Wait && e.due <= now && e.state != State::Published)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        due.sort_by_key(|(_, e)| (e.failures, e.due));
        due.truncate(limit);
        due
    }

    /// Records how a try of `key` for `want` ended; a try whose want changed meanwhile is
    /// ignored (the new want is tried next).
    pub fn finish(&mut self, key: &Key, want: &Want, result: Result<(), String>, now: i64) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if entry.want != *want {
            return;
        }
        match (result, want) {
            (Ok(()), Want::Remove(_)) => {
                self.entries.remove(key);
            }
            (Ok(()), Want::Set(value)) => {
                entry.written = Some(value.clone());
                entry.state = State::Published;
                entry.failures = 0;
            }
            (Ok(()), Want::Wait) => {}
            (Err(why), _) => {
                entry.failures += 1;
                entry.state = State::Error(why);
                entry.due = now + backoff(entry.failures);
            }
        }
    }

    /// How many records are in each state.
    pub fn counts(&self) -> Counts {
        let mut counts = [("pending", 0), ("published", 0), ("error", 0)];
        for entry in self.entries.values() {
            let label = entry.state.label();
            if let Some(c) = counts.iter_mut().find(|(l, _)| *l == label) {
                c.1 += 1;
            }
        }
        counts
    }
}

impl Entry {
    fn new(target: usize, zone: String, now: i64) -> Entry {
        Entry {
            target,
            zone,
            want: Want::Wait,
            written: None,
            state: State::Pending,
            failures: 0,
            due: now,
        }
    }

    fn retry_now(&mut self, now: i64) {
        if !matches!(self.state, State::Error(_)) {
            self.state = State::Pending;
        }
        self.failures = 0;
        self.due = now;
    }
}

/// A result as a metric label from a fixed set: rcodes keep their mnemonic, anything else
/// (timeouts, failed TSIG checks, unreachable servers) is `failed`, so no free text becomes a
/// label.
pub fn result_label(text: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "NOERROR",
        "unchanged",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "YXDOMAIN",
        "YXRRSET",
        "NXRRSET",
        "NOTAUTH",
        "NOTZONE",
        "BADSIG",
        "BADKEY",
    ];
    let code = text.split(':').next().unwrap_or_default();
    KNOWN.into_iter().find(|k| *k == code).unwrap_or("failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{TsigAlg, TsigSecret};
    use crate::registry::Registry;

    fn target(zones: &[&str], tlsrpt: bool) -> UpdateTarget {
        UpdateTarget {
            server: "127.0.0.1:53".parse().unwrap(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            key_name: "k".into(),
            algorithm: TsigAlg::HmacSha256,
            secret: TsigSecret(vec![0; 32]),
            tlsrpt,
        }
    }

    fn valid(board: &CertBoard, host: &str) {
        crate::certs::mark_valid_for_tests(board, host);
    }

    const A: &str = "domain: a.example.com\nmode: testing\nmx: [mx.a.example.com]\ntlsrpt: {rua: [\"mailto:r@a.example.com\"]}\n";

    fn key(kind: Kind) -> Key {
        (kind, "a.example.com".into())
    }

    #[test]
    fn the_longest_covering_zone_wins() {
        let targets = [
            target(&["example.com"], false),
            target(&["a.example.com", "org"], false),
        ];
        assert_eq!(
            covering(&targets, "a.example.com"),
            Some((1, "a.example.com".into()))
        );
        assert_eq!(
            covering(&targets, "b.example.com"),
            Some((0, "example.com".into()))
        );
        assert_eq!(covering(&targets, "x.org"), Some((1, "org".into())));
        assert_eq!(
            covering(&targets, "notexample.com"),
            None,
            "a suffix must be whole labels"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let waits: Vec<i64> = (1..=10).map(backoff).collect();
        assert_eq!(&waits[..5], &[2, 4, 8, 16, 32]);
        assert_eq!(waits[9], 300);
    }

    #[test]
    fn an_id_is_wanted_once_ready_and_a_removed_tenant_loses_only_what_was_written() {
        let targets = [target(&["example.com"], true)];
        let registry = Registry::new(Snapshot::from_yaml(A));
        let board = CertBoard::new();
        let mut plan = Plan::new();
        let refresh = |plan: &mut Plan, now| {
            plan.refresh(
                &targets,
                &registry.load(),
                &board,
                Publishing::default(),
                now,
            );
        };
        refresh(&mut plan, 1000);
        assert_eq!(
            plan.entries()[&key(Kind::Sts)].want,
            Want::Wait,
            "not ready"
        );
        assert_eq!(plan.counts()[0], ("pending", 2));
        let due = plan.due(1000, 10);
        assert_eq!(due.len(), 1, "only the TLS-RPT record: {due:?}");
        let tlsrpt = due[0].1.want.clone();
        plan.finish(&key(Kind::TlsRpt), &tlsrpt, Err("REFUSED".into()), 1000);
        assert_eq!(
            plan.entries()[&key(Kind::TlsRpt)].state,
            State::Error("REFUSED".into())
        );
        assert!(plan.due(1001, 10).is_empty(), "backing off");
        assert_eq!(plan.due(1002, 10).len(), 1);
        plan.finish(&key(Kind::TlsRpt), &tlsrpt, Ok(()), 1002);

        valid(&board, "mta-sts.a.example.com");
        refresh(&mut plan, 1003);
        let id = registry
            .load()
            .by_domain("a.example.com")
            .unwrap()
            .policy
            .id
            .clone();
        let sts = Want::Set(format!("v=STSv1; id={id}"));
        assert_eq!(plan.entries()[&key(Kind::Sts)].want, sts);
        plan.finish(&key(Kind::Sts), &sts, Ok(()), 1003);
        assert_eq!(plan.counts()[1], ("published", 2));
        assert!(plan.due(2000, 10).is_empty());

        registry.swap(Snapshot::from_yaml(
            "domain: b.example.net\nmode: testing\nmx: [mx.b.example.net]\n",
        ));
        refresh(&mut plan, 2000);
        let Want::Remove(written) = plan.entries()[&key(Kind::Sts)].want.clone() else {
            panic!("{:?}", plan.entries());
        };
        assert_eq!(
            Want::Set(written.clone()),
            sts,
            "deletes exactly what it wrote"
        );
        for kind in [Kind::Sts, Kind::TlsRpt] {
            let want = plan.entries()[&key(kind)].want.clone();
            plan.finish(&key(kind), &want, Ok(()), 2000);
        }
        assert!(plan.entries().is_empty(), "b.example.net is not covered");
    }

    #[test]
    fn results_become_labels_from_a_fixed_set() {
        assert_eq!(
            result_label("NOTAUTH: the server rejected the TSIG signature"),
            "NOTAUTH"
        );
        assert_eq!(result_label("REFUSED"), "REFUSED");
        assert_eq!(result_label("timeout"), "failed");
        assert_eq!(
            result_label("io error: connection refused by 127.0.0.1"),
            "failed"
        );
    }
}
