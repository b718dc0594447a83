//! The pool's map from key to entry: a fixed number of shards, each a `RwLock` over a
//! `HashMap`, with the key hashed once per lookup (the shard and the map both use that hash).
//! The request path takes one shard's read lock; everything that changes an entry takes its
//! write lock; the tick walks the shards one at a time.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use crate::sync::RwLock;

/// Shards: enough that a tick walking one shard blocks few new keys, few enough to stay small.
const SHARDS: usize = 64;
/// The shard of a hash: bits the per-shard tables do not use for their index until a shard holds
/// about a million keys, nor for their control bytes (the top seven).
const SHARD_SHIFT: u32 = 20;

/// A key with its hash, as stored.
#[derive(Debug, Clone)]
struct MapKey {
    hash: u64,
    name: Arc<str>,
}

/// What a lookup compares: the stored key, or a borrowed name with its hash.
trait Lookup {
    fn hash(&self) -> u64;
    fn name(&self) -> &str;
}

impl Lookup for MapKey {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn name(&self) -> &str {
        &self.name
    }
}

struct Probe<'a> {
    hash: u64,
    name: &'a str,
}

impl Lookup for Probe<'_> {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn name(&self) -> &str {
        self.name
    }
}

impl<'a> Borrow<dyn Lookup + 'a> for MapKey {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

impl Hash for dyn Lookup + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(Lookup::hash(self));
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        Lookup::hash(self) == Lookup::hash(other) && self.name() == other.name()
    }
}

impl Eq for dyn Lookup + '_ {}

impl Hash for MapKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for MapKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.name == other.name
    }
}

impl Eq for MapKey {}

/// Passes a precomputed `u64` through (the keys are hashed once, by [`KeyMap::hash`]).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in, so that it still hashes.
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard<V> = HashMap<MapKey, V, BuildHasherDefault<PassThrough>>;

/// Keys are hashed with a per-map random key, so clients cannot choose colliding names; under
/// the model checker with a fixed one, so that every execution takes the same shards.
#[cfg(not(loom))]
type Seed = std::hash::RandomState;
#[cfg(loom)]
type Seed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// A sharded map from key name to `V`.
pub(crate) struct KeyMap<V> {
    shards: Box<[RwLock<Shard<V>>]>,
    hasher: Seed,
}

impl<V> KeyMap<V> {
    pub(crate) fn new() -> Self {
        KeyMap {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: Seed::default(),
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        &self.shards[(hash >> SHARD_SHIFT) as usize % SHARDS]
    }

    /// The hash of `key` (keyed per map, so clients cannot choose colliding names).
    #[inline]
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Runs `f` on `key`'s entry under its shard's read lock.
    #[inline]
    pub(crate) fn read<R>(&self, key: &str, f: impl FnOnce(&V) -> R) -> Option<R> {
        let hash = self.hash(key);
        let shard = self.shard(hash).read().unwrap_or_else(|e| e.into_inner());
        let probe = Probe { hash, name: key };
        shard.get(&probe as &dyn Lookup).map(f)
    }

    /// Runs `f` on `key`'s entry under its shard's write lock.
    pub(crate) fn write<R>(&self, key: &str, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write().unwrap_or_else(|e| e.into_inner());
        let probe = Probe { hash, name: key };
        shard.get_mut(&probe as &dyn Lookup).map(f)
    }

    /// Runs `f` on `key`'s entry under its shard's write lock, inserting `make(name)` first if
    /// the key is new.
    pub(crate) fn write_or_insert<R>(
        &self,
        key: &str,
        make: impl FnOnce(Arc<str>) -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write().unwrap_or_else(|e| e.into_inner());
        let probe = Probe { hash, name: key };
        if let Some(value) = shard.get_mut(&probe as &dyn Lookup) {
            return f(value);
        }
        let name: Arc<str> = Arc::from(key);
        let value = shard
            .entry(MapKey {
                hash,
                name: Arc::clone(&name),
            })
            .or_insert_with(|| make(name));
        f(value)
    }

    /// Removes `key`'s entry if `keep` returns false for it, under its shard's write lock.
    pub(crate) fn remove_unless(&self, key: &str, keep: impl FnOnce(&V) -> bool) -> Option<V> {
        let hash = self.hash(key);
        let mut shard = self.shard(hash).write().unwrap_or_else(|e| e.into_inner());
        let probe = Probe { hash, name: key };
        if keep(shard.get(&probe as &dyn Lookup)?) {
            return None;
        }
        shard.remove(&probe as &dyn Lookup)
    }

    /// Calls `f` on every entry, one shard at a time under its read lock.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&V)) {
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for v in shard.values() {
                f(v);
            }
        }
    }

    /// Calls `f` on every entry, one shard at a time under its write lock.
    pub(crate) fn for_each_mut(&self, mut f: impl FnMut(&mut V)) {
        for shard in self.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|e| e.into_inner());
            for v in shard.values_mut() {
                f(v);
            }
        }
    }

    /// Entries in the map.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_updated_and_removed() {
        let map: KeyMap<u32> = KeyMap::new();
        assert!(map.read("a", |v| *v).is_none());
        map.write_or_insert("a", |_| 1, |v| *v += 10);
        map.write_or_insert("b", |_| 2, |_| ());
        assert_eq!(map.read("a", |v| *v), Some(11));
        assert_eq!(map.write("b", |v| std::mem::replace(v, 5)), Some(2));
        assert_eq!(map.len(), 2);
        assert_eq!(map.remove_unless("a", |v| *v > 100), Some(11));
        assert_eq!(map.remove_unless("b", |v| *v == 5), None, "kept");
        let mut seen = Vec::new();
        map.for_each(|v| seen.push(*v));
        assert_eq!(seen, vec![5]);
    }

    #[test]
    fn many_keys_spread_over_shards() {
        let map: KeyMap<usize> = KeyMap::new();
        for i in 0..10_000 {
            map.write_or_insert(&format!("k{i}"), |_| i, |_| ());
        }
        assert_eq!(map.len(), 10_000);
        for i in (0..10_000).step_by(97) {
            assert_eq!(map.read(&format!("k{i}"), |v| *v), Some(i));
        }
        let busiest = map
            .shards
            .iter()
            .map(|s| s.read().unwrap().len())
            .max()
            .unwrap();
        assert!(busiest < 10_000 / SHARDS * 2, "{busiest} keys in one shard");
    }
}
