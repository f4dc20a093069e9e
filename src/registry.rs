//! The live tenant table: an immutable [`Snapshot`] behind one swappable pointer.
//!
//! A reload builds a complete new snapshot off the request path and swaps it in with one
//! atomic store; a request loads the pointer once and sees one consistent table throughout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::config::{Diagnostic, Tenant};

/// One consistent view of every tenant.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_host: HashMap<String, Arc<Tenant>>,
    /// Sorted by domain on first use (API pages, metrics), then shared by every reader of
    /// this snapshot: one sort per generation, not one per request.
    sorted: OnceLock<Vec<Arc<Tenant>>>,
    /// Increases by one with every swap; 0 for the first.
    pub generation: u64,
    /// Diagnostics of the configuration this snapshot was built from.
    pub diagnostics: Vec<Diagnostic>,
}

impl Snapshot {
    /// Indexes tenants by policy host.
    pub fn new(tenants: Vec<Arc<Tenant>>, diagnostics: Vec<Diagnostic>) -> Self {
        let by_host = tenants.into_iter().map(|t| (t.host.clone(), t)).collect();
        Snapshot {
            by_host,
            sorted: OnceLock::new(),
            generation: 0,
            diagnostics,
        }
    }

    /// The tenant served at `host` (lowercase `mta-sts.<domain>`).
    pub fn get(&self, host: &str) -> Option<&Arc<Tenant>> {
        self.by_host.get(host)
    }

    /// The tenant whose policy domain is `domain`.
    pub fn by_domain(&self, domain: &str) -> Option<&Arc<Tenant>> {
        self.by_host.get(&format!("mta-sts.{domain}"))
    }

    /// All tenants, in no particular order.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_host.values()
    }

    /// All tenants sorted by domain, for stable output.
    pub fn sorted(&self) -> &[Arc<Tenant>] {
        self.sorted.get_or_init(|| {
            let mut list: Vec<_> = self.by_host.values().cloned().collect();
            list.sort_by(|a, b| a.domain.cmp(&b.domain));
            list
        })
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    /// Whether there are no tenants.
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
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
        next.generation = self.current.load().generation + 1;
        self.current.swap(Arc::new(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
