//! The live tenant table: an immutable [`Snapshot`] behind one swappable pointer.
//!
//! A reload builds a new snapshot off the request path and swaps it in with one atomic store;
//! a request loads the pointer once and sees one consistent table throughout.
//!
//! Incremental: the table is cut into [`SHARDS`] maps by a hash of the policy host, each behind
//! its own `Arc`. [`Snapshot::with_changes`] copies only the shards a change touches and shares
//! the others with the snapshot it replaces, so an edit of one tenant among a million copies
//! about a thousandth of the table, not all of it.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

pub use crate::config::Served;
use crate::config::{Diagnostic, Tenant};
use crate::util::hash::FastSet;

/// Number of shards. With a million tenants a shard holds about a thousand, so copying one
/// (the cost of a one-tenant edit) takes tens of microseconds; with few tenants the empty
/// shards cost a pointer each.
pub const SHARDS: usize = 1024;

/// A tenant keyed by its policy host, so a shard stores no second copy of the host name.
#[derive(Clone, Debug)]
struct ByHost(Arc<Tenant>);

impl PartialEq for ByHost {
    fn eq(&self, other: &Self) -> bool {
        self.0.host == other.0.host
    }
}

impl Eq for ByHost {}

impl Hash for ByHost {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.host.as_str().hash(state)
    }
}

impl Borrow<str> for ByHost {
    fn borrow(&self) -> &str {
        &self.0.host
    }
}

type Shard = FastSet<ByHost>;

/// The shard of `host`: FNV-1a, fixed so it needs no state. Only the shard is chosen by it;
/// inside a shard the map's own keyed hasher applies, so hostile SNI values cannot degrade a
/// lookup.
fn shard_of(host: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// One consistent view of every tenant.
#[derive(Debug)]
pub struct Snapshot {
    shards: Arc<[Arc<Shard>]>,
    len: usize,
    /// Sorted by domain on first use (API pages, metrics), then shared by every reader of
    /// this snapshot: one sort per generation, not one per request, and none on the reload
    /// path.
    sorted: OnceLock<Vec<Arc<Tenant>>>,
    /// Increases by one with every swap; 0 for the first.
    pub generation: u64,
    /// Diagnostics of the configuration this snapshot was built from.
    pub diagnostics: Vec<Diagnostic>,
    /// In cluster mode, which ids every live replica serves; carried from snapshot to
    /// snapshot by [`Registry::swap`], so the ready gate needs nothing beside the snapshot.
    pub cluster: Option<Arc<ClusterGate>>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot::new(Vec::new(), Vec::new())
    }
}

impl Snapshot {
    /// Indexes tenants by policy host (a later tenant with the same host replaces an earlier).
    pub fn new(tenants: Vec<Arc<Tenant>>, diagnostics: Vec<Diagnostic>) -> Self {
        let mut shards: Vec<Shard> = (0..SHARDS).map(|_| Shard::default()).collect();
        for t in tenants {
            shards[shard_of(&t.host)].replace(ByHost(t));
        }
        let len = shards.iter().map(FastSet::len).sum();
        Snapshot {
            shards: shards.into_iter().map(Arc::new).collect(),
            len,
            sorted: OnceLock::new(),
            generation: 0,
            diagnostics,
            cluster: None,
        }
    }

    /// This snapshot with `changes` applied and `diagnostics` in place of its own: only the
    /// shards the changes touch are copied. The generation is set by [`Registry::swap`].
    pub fn with_changes(&self, changes: &[Served], diagnostics: Vec<Diagnostic>) -> Snapshot {
        let mut shards: Vec<Arc<Shard>> = self.shards.to_vec();
        let mut len = self.len;
        for change in changes {
            let shard = Arc::make_mut(&mut shards[shard_of(&change.host)]);
            if shard.remove(change.host.as_str()) {
                len -= 1;
            }
            if let Some(t) = &change.after {
                shard.insert(ByHost(t.clone()));
                len += 1;
            }
        }
        Snapshot {
            shards: shards.into(),
            len,
            sorted: OnceLock::new(),
            generation: self.generation,
            diagnostics,
            cluster: self.cluster.clone(),
        }
    }

    /// The tenant served at `host` (lowercase `mta-sts.<domain>`).
    pub fn get(&self, host: &str) -> Option<&Arc<Tenant>> {
        self.shards[shard_of(host)].get(host).map(|t| &t.0)
    }

    /// The tenant whose policy domain is `domain`.
    pub fn by_domain(&self, domain: &str) -> Option<&Arc<Tenant>> {
        self.get(&format!("mta-sts.{domain}"))
    }

    /// All tenants, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.shards.iter().flat_map(|s| s.iter().map(|t| &t.0))
    }

    /// All tenants sorted by domain, for stable output.
    pub fn sorted(&self) -> &[Arc<Tenant>] {
        self.sorted.get_or_init(|| {
            let mut list: Vec<_> = self.tenants().cloned().collect();
            list.sort_unstable_by(|a, b| a.domain.cmp(&b.domain));
            list
        })
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no tenants.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of the tenants in one YAML text, for unit tests; panics on any error.
    pub(crate) fn from_yaml(yaml: &str) -> Snapshot {
        let file = crate::config::parse_tenants(std::path::Path::new("t.yaml"), yaml);
        assert!(
            file.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            file.diagnostics
        );
        Snapshot::new(file.tenants.into_iter().map(Arc::new).collect(), vec![])
    }
}

/// Holder of the current snapshot. The generation lives in the snapshot alone; swaps are
/// serialized so each one numbers its snapshot from the one it replaces.
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<Snapshot>,
    swapping: Mutex<()>,
}

impl Registry {
    /// Starts with `first`.
    pub fn new(first: Snapshot) -> Self {
        Registry {
            current: ArcSwap::from_pointee(first),
            swapping: Mutex::new(()),
        }
    }

    /// The current snapshot. Cheap; hold it for the length of one request.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot as a whole and returns the previous one.
    pub fn swap(&self, mut next: Snapshot) -> Arc<Snapshot> {
        let _one_at_a_time = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.current.load();
        next.generation = current.generation + 1;
        if next.cluster.is_none() {
            next.cluster = current.cluster.clone();
        }
        self.current.swap(Arc::new(next))
    }
}

/// Cluster mode's half of the ready gate (RFC 8461 §8.1 across replicas): the policy id of
/// each host that every live replica serves over a valid certificate. Filled by the cluster
/// sync; a host's entry only moves forward (to the id this replica serves), so an id once
/// ready stays ready while a new replica catches up.
#[derive(Debug, Default)]
pub struct ClusterGate {
    confirmed: std::sync::RwLock<crate::util::hash::FastMap<String, String>>,
}

impl ClusterGate {
    /// An empty gate: no id is ready until confirmed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether every live replica was seen serving `id` at `host`.
    pub fn confirms(&self, host: &str, id: &str) -> bool {
        let map = self.confirmed.read().unwrap_or_else(|e| e.into_inner());
        map.get(host).is_some_and(|confirmed| confirmed == id)
    }

    /// Records that every live replica serves `id` at `host`; true if that is news.
    pub fn confirm(&self, host: &str, id: &str) -> bool {
        let mut map = self.confirmed.write().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(host) {
            Some(known) if known == id => false,
            Some(known) => {
                id.clone_into(known);
                true
            }
            None => {
                map.insert(host.to_owned(), id.to_owned());
                true
            }
        }
    }

    /// Drops hosts that are no longer tenants.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.confirmed.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|host, _| keep(host));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_changes_copies_only_the_shards_it_touches() {
        let old = Snapshot::from_yaml(
            "- {domain: a.example, mode: testing, mx: [mx.a.example]}\n- {domain: b.example, mode: testing, mx: [mx.b.example]}\n",
        );
        let c = Snapshot::from_yaml("domain: c.example\nmode: none\n");
        let c = c.by_domain("c.example").unwrap().clone();
        let changes = [
            Served {
                host: "mta-sts.a.example".into(),
                before: old.by_domain("a.example").cloned(),
                after: None,
            },
            Served {
                host: c.host.clone(),
                before: None,
                after: Some(c.clone()),
            },
        ];
        let new = old.with_changes(&changes, vec![]);
        assert_eq!((old.len(), new.len()), (2, 2));
        assert!(new.by_domain("a.example").is_none());
        assert!(Arc::ptr_eq(new.by_domain("c.example").unwrap(), &c));
        assert!(Arc::ptr_eq(
            new.by_domain("b.example").unwrap(),
            old.by_domain("b.example").unwrap()
        ));
        let shared = (0..SHARDS)
            .filter(|&i| Arc::ptr_eq(&old.shards[i], &new.shards[i]))
            .count();
        assert!(shared >= SHARDS - 2, "{shared} shards shared");
        let sorted: Vec<&str> = new.sorted().iter().map(|t| t.domain.as_str()).collect();
        assert_eq!(sorted, ["b.example", "c.example"]);
    }

    #[test]
    fn every_swap_numbers_its_snapshot_from_the_one_it_replaces() {
        let registry = Arc::new(Registry::new(Snapshot::default()));
        assert_eq!(registry.load().generation, 0);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let r = registry.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| r.swap(Snapshot::default()).generation)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut replaced: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        replaced.sort_unstable();
        assert_eq!(
            replaced,
            (0..400).collect::<Vec<u64>>(),
            "no number twice, none skipped"
        );
        assert_eq!(registry.load().generation, 400);
    }
}
