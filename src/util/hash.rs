//! Hash maps for the per-tenant tables (snapshot shards, certificate board and resolver,
//! issue queue, counters): std's maps with foldhash instead of SipHash.
//!
//! The keys of these maps are host names from the operator's files; a lookup with a key from
//! the network (SNI, Host) only probes, it never inserts, so the keyed, per-process-seeded
//! foldhash is enough, at a fraction of SipHash's cost on short keys.

/// The hasher of [`FastMap`] and [`FastSet`].
pub type FastHash = foldhash::fast::RandomState;
/// A `HashMap` with [`FastHash`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHash>;
/// A `HashSet` with [`FastHash`].
pub type FastSet<K> = std::collections::HashSet<K, FastHash>;
