//! Which TXT values the zone answers: the ready gate of RFC 8461 §8.1, applied by the server.
//!
//! A sender that sees a new id fetches the policy at once; if the body it gets is still the
//! old one, it caches that under the new id and never fetches again. So the `_mta-sts` id a
//! tenant's name answers changes only once `publish::is_ready` holds for the new policy (its
//! body is served, over a valid certificate); until then the id last answered stays, and a
//! tenant never answered has no `_mta-sts` record at all.
//!
//! Cost: a snapshot generation change walks every tenant once (a reload already costs that);
//! otherwise a tick only checks the tenants still waiting for their id ("pending"), so a
//! quiet daemon's tick is O(1) and a query never pays for any of it.
//!
//! A removed tenant's records stay until restart: senders may hold its policy for up to its
//! `max_age`, and the offboarding rules belong to the tenant lifecycle.

use std::collections::{HashMap, HashSet};

use super::names::Kind;
use crate::certs::CertBoard;
use crate::publish::{Publishing, is_ready, tenant_records};
use crate::registry::Snapshot;

/// One change to the zone: `value` `None` removes the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// Which record.
    pub kind: Kind,
    /// The tenant domain.
    pub domain: String,
    /// The new TXT value, or `None` to remove it.
    pub value: Option<String>,
}

/// The last values answered per tenant, and the tenants whose id is not answered yet.
#[derive(Debug, Default)]
pub struct Gate {
    /// Domain → the `_mta-sts` id answered.
    published: HashMap<String, String>,
    /// Domain → the `_smtp._tls` value answered.
    tlsrpt: HashMap<String, String>,
    /// Policy hosts whose current id differs from the one answered.
    pending: HashSet<String>,
    /// The snapshot generation last walked.
    generation: Option<u64>,
}

impl Gate {
    /// An empty gate: nothing answered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `_mta-sts` id answered for `domain`, if any.
    pub fn published_id(&self, domain: &str) -> Option<&str> {
        self.published.get(domain).map(String::as_str)
    }

    /// Forgets what was answered for `domain`, so a tenant added back is answered afresh
    /// (the RFC 2136 publisher deletes a removed tenant's records and uses this).
    pub fn forget(&mut self, domain: &str) {
        self.published.remove(domain);
        self.tlsrpt.remove(domain);
    }

    /// How many tenants wait for their new id to be ready.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The updates that bring the zone in line with `snapshot` and `board` at `now`.
    pub fn refresh(
        &mut self,
        snapshot: &Snapshot,
        board: &CertBoard,
        publishing: Publishing<'_>,
        now: i64,
    ) -> Vec<Update> {
        let mut out = Vec::new();
        if self.generation != Some(snapshot.generation) {
            self.walk(snapshot, publishing, &mut out);
            self.generation = Some(snapshot.generation);
        }
        self.pending.retain(|host| {
            let Some(tenant) = snapshot.get(host) else {
                return false;
            };
            if !is_ready(snapshot, board, tenant, now) {
                return true;
            }
            self.published
                .insert(tenant.domain.clone(), tenant.policy.id.clone());
            out.push(Update {
                kind: Kind::Sts,
                domain: tenant.domain.clone(),
                value: Some(format!("v=STSv1; id={}", tenant.policy.id)),
            });
            false
        });
        out
    }

    /// Every tenant of a new snapshot: TLS-RPT values follow the configuration at once (they
    /// name no policy), ids that differ join the pending set.
    fn walk(&mut self, snapshot: &Snapshot, publishing: Publishing<'_>, out: &mut Vec<Update>) {
        self.drop_gone(snapshot, out);
        for tenant in snapshot.tenants() {
            if self.published.get(&tenant.domain) != Some(&tenant.policy.id) {
                self.pending.insert(tenant.host.clone());
            }
            let value = tenant_records(tenant, publishing).tlsrpt.map(|r| r.value);
            if self.tlsrpt.get(&tenant.domain) == value.as_ref() {
                continue;
            }
            match &value {
                Some(v) => self.tlsrpt.insert(tenant.domain.clone(), v.clone()),
                None => self.tlsrpt.remove(&tenant.domain),
            };
            out.push(Update {
                kind: Kind::TlsRpt,
                domain: tenant.domain.clone(),
                value,
            });
        }
    }

    /// The records of tenants no longer in `snapshot` (a retirement that ended, RFC 8461 §8.3)
    /// leave the zone: one removal per record that was answered.
    fn drop_gone(&mut self, snapshot: &Snapshot, out: &mut Vec<Update>) {
        let gone = |d: &String| snapshot.by_domain(d).is_none();
        let sts: Vec<String> = self.published.keys().filter(|d| gone(d)).cloned().collect();
        let tlsrpt: Vec<String> = self.tlsrpt.keys().filter(|d| gone(d)).cloned().collect();
        for (kind, domains) in [(Kind::Sts, sts), (Kind::TlsRpt, tlsrpt)] {
            for domain in domains {
                match kind {
                    Kind::Sts => self.published.remove(&domain),
                    _ => self.tlsrpt.remove(&domain),
                };
                out.push(Update {
                    kind,
                    domain,
                    value: None,
                });
            }
        }
        self.pending.retain(|host| snapshot.get(host).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertState, CertStatus};
    use crate::registry::Registry;

    const A_TESTING: &str = "domain: a.example\nmode: testing\nmx: [mx.a.example]\ntlsrpt: {rua: [\"mailto:r@a.example\"]}\n";
    const A_ENFORCE: &str = "domain: a.example\nmode: enforce\nmx: [mx.a.example]\ntlsrpt: {rua: [\"mailto:r@a.example\"]}\n";

    fn valid(board: &CertBoard, host: &str) {
        crate::certs::mark_valid_for_tests(board, host);
    }

    fn sts(updates: &[Update]) -> Vec<&str> {
        updates
            .iter()
            .filter(|u| u.kind == Kind::Sts)
            .filter_map(|u| u.value.as_deref())
            .collect()
    }

    #[test]
    fn a_new_tenant_has_no_id_until_its_certificate_is_valid() {
        let registry = Registry::new(Snapshot::from_yaml(A_TESTING));
        let board = CertBoard::new();
        let mut gate = Gate::new();
        let first = gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        assert!(sts(&first).is_empty(), "{first:?}");
        assert_eq!(first.len(), 1, "the TLS-RPT record is not gated");
        assert_eq!(gate.pending(), 1);
        assert!(
            gate.refresh(&registry.load(), &board, Publishing::default(), 1000)
                .is_empty()
        );
        valid(&board, "mta-sts.a.example");
        let ready = gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        let id = registry
            .load()
            .by_domain("a.example")
            .unwrap()
            .policy
            .id
            .clone();
        assert_eq!(sts(&ready), vec![format!("v=STSv1; id={id}").as_str()]);
        assert_eq!(gate.published_id("a.example"), Some(id.as_str()));
        assert_eq!(gate.pending(), 0);
        assert!(
            gate.refresh(&registry.load(), &board, Publishing::default(), 1000)
                .is_empty()
        );
    }

    #[test]
    fn a_changed_policy_keeps_the_old_id_until_the_new_one_is_ready() {
        let registry = Registry::new(Snapshot::from_yaml(A_TESTING));
        let board = CertBoard::new();
        valid(&board, "mta-sts.a.example");
        let mut gate = Gate::new();
        gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        let old = gate.published_id("a.example").unwrap().to_owned();
        // The certificate lapses (say, a renewal failed) before the edit is served.
        board.set(
            "mta-sts.a.example",
            CertStatus::new(CertState::Error, "internal"),
        );
        registry.swap(Snapshot::from_yaml(A_ENFORCE));
        let during = gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        assert!(during.is_empty(), "{during:?}");
        assert_eq!(gate.published_id("a.example"), Some(old.as_str()));
        valid(&board, "mta-sts.a.example");
        let after = gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        let new = registry
            .load()
            .by_domain("a.example")
            .unwrap()
            .policy
            .id
            .clone();
        assert_ne!(new, old);
        assert_eq!(sts(&after), vec![format!("v=STSv1; id={new}").as_str()]);
    }

    #[test]
    fn a_removed_tenant_leaves_the_zone_and_the_pending_set() {
        // Removed from the snapshot means its retirement ended (or it only served none):
        // every record it had in the zone goes.
        let registry = Registry::new(Snapshot::from_yaml(A_TESTING));
        let board = CertBoard::new();
        let mut gate = Gate::new();
        valid(&board, "mta-sts.a.example");
        gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        assert!(gate.published_id("a.example").is_some());
        registry.swap(Snapshot::from_yaml(
            "domain: b.example\nmode: testing\nmx: [mx.b.example]\n",
        ));
        let gone = gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        let removed: Vec<(Kind, &str)> = gone
            .iter()
            .filter(|u| u.domain == "a.example")
            .map(|u| (u.kind, u.domain.as_str()))
            .collect();
        assert_eq!(
            removed,
            [(Kind::Sts, "a.example"), (Kind::TlsRpt, "a.example")]
        );
        assert!(
            gone.iter()
                .filter(|u| u.domain == "a.example")
                .all(|u| u.value.is_none())
        );
        assert_eq!(gate.published_id("a.example"), None);
        assert_eq!(gate.pending(), 1, "only b.example waits");
        let again = gate.refresh(&registry.load(), &board, Publishing::default(), 1000);
        assert!(
            again.iter().all(|u| u.domain != "a.example"),
            "once: {again:?}"
        );
    }
}
