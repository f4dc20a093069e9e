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

/// Gives a map's memory back once it is mostly empty (a HashMap never shrinks by itself: a
/// removed 200 000-tenant file left its tables allocated). Amortized O(1) per removal.
pub fn shrink_sparse<K: Eq + std::hash::Hash, V>(map: &mut FastMap<K, V>) {
    if map.capacity() > 1024 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mostly_emptied_map_gives_its_memory_back_and_a_small_one_is_left_alone() {
        let mut map: FastMap<u32, u32> = (0..100_000).map(|i| (i, i)).collect();
        let full = map.capacity();
        map.retain(|k, _| *k < 1000);
        shrink_sparse(&mut map);
        assert!(map.capacity() < full / 16, "{} of {full}", map.capacity());
        assert_eq!(map.len(), 1000);
        let mut small: FastMap<u32, u32> = (0..500).map(|i| (i, i)).collect();
        small.retain(|k, _| *k < 10);
        shrink_sparse(&mut small);
        // Shrunk, it would hold about 20.
        assert!(
            small.capacity() > 400,
            "small maps are not worth reallocating"
        );
    }
}
