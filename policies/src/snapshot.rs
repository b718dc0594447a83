//! The read-only view of every registered pool that a policy sees at one tick.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Identifies a worker within its pool. Ids start at 1 and are never reused by a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

/// Identifies a key (model) of a pool for as long as the pool knows it: the same key keeps the
/// same id from tick to tick, so a policy can keep per-key state in a map keyed by it (or by
/// `id.0` in a table) instead of hashing the key's name every tick.
///
/// A pool forgets a key once it has no worker, no spawn in progress and no waiting request:
/// the key then appears in one last snapshot with no workers (see [`KeyView::workers`]) and
/// leaves the snapshots. If it is used again, it comes back under a new id; a policy that keeps
/// state across such gaps links the new id to its state by ([`KeyView::pool`],
/// [`KeyView::key`]) once, when it first sees the new id. Ids start at 1 and are never reused
/// by a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u64);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Index of a key in [`Snapshot::keys`]; proposals name their key by it.
pub type KeyIndex = usize;

/// One memory reading, in bytes. `total` is the limit that applies to this process (its cgroup
/// limit inside a container, physical RAM otherwise); `available` is what can still be used,
/// counting reclaimable page cache as available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    /// The limit that applies to this process, in bytes.
    pub total: u64,
    /// Bytes still available under that limit.
    pub available: u64,
    /// The process's resident set size, when the probe knows it.
    pub process_rss: Option<u64>,
}

impl MemoryReading {
    /// Bytes in use: `total - available` (never negative).
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
}

/// Per-model settings from `[pools.NAME.models.KEY]` that policies honour. `None` means "use
/// the policy's own parameter".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelOverrides {
    /// Idle time before `gradual-lru` starts scaling this key down.
    pub idle: Option<Duration>,
    /// Minimum time between two `gradual-lru` evictions of this key.
    pub step: Option<Duration>,
    /// Keep-alive of each worker of this key (`keep-alive`).
    pub ttl: Option<Duration>,
    /// Floor that idle policies never go below.
    pub min_workers: Option<usize>,
}

/// One registered pool.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    /// The pool's name (`[pools.NAME]`).
    pub name: Arc<str>,
    /// Most workers a key of this pool may have.
    pub max_workers_per_model: usize,
    /// Bytes the pool accounts for its live workers.
    pub accounted_bytes: u64,
}

/// One key (model) of one pool.
#[derive(Debug, Clone, Default)]
pub struct KeyView {
    /// Index of the key's pool in [`Snapshot::pools`].
    pub pool: usize,
    /// The key itself.
    pub key: Arc<str>,
    /// The key's identity while its pool knows it (see [`KeyId`]).
    pub id: KeyId,
    /// The key's ready workers in [`Snapshot::workers`]. Empty when the key has just lost its
    /// last worker: that snapshot is the last one the key appears in unless it is used again,
    /// or a spawn or a request is still pending for it.
    pub workers: Range<usize>,
    /// Workers being spawned right now (for waiting requests, or a pre-warm).
    pub starting: usize,
    /// Requests waiting for a worker of this key right now.
    pub waiting: usize,
    /// Requests that arrived for this key since the previous tick: served (whether still in
    /// flight or already finished), or given up (timed out, failed). A request that is still
    /// waiting is counted when it is served or gives up. Requests that came and went between two
    /// ticks are counted too.
    pub arrivals: u64,
    /// When the first request arrived after the key went idle: set when the key had no request
    /// in flight or waiting at the previous tick (or did not exist) and `arrivals > 0`. Exact
    /// under a clock that stamps every release (`ManualClock`, the simulator); under the real
    /// clocks, a request served at once by a ready worker is seen at the tick (late by at most
    /// one tick), and one that waited is stamped when it arrived.
    pub first_arrival: Option<Duration>,
    /// When a worker of this key was last evicted, for any reason.
    pub last_eviction: Option<Duration>,
    /// Index of this key's overrides in [`Snapshot::overrides`]; 0 is "no overrides".
    pub overrides: usize,
}

/// One ready worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerView {
    /// The worker's id, unique within its pool.
    pub id: WorkerId,
    /// How many requests the worker had finished when the snapshot was taken (modulo 2^36).
    /// A proposal made from this view carries it ([`crate::Proposal::evict`]), and the pool
    /// evicts only if the worker is idle and has finished exactly as many requests: a request
    /// that came and went after the snapshot saves the worker.
    pub releases: u64,
    /// Requests in flight on it at the moment of the snapshot.
    pub in_flight: u32,
    /// When its last request finished (its spawn time if it never served one).
    pub last_used: Duration,
    /// When it was spawned.
    pub spawned_at: Duration,
    /// Its memory footprint in bytes, as reported when it was spawned.
    pub memory_bytes: u64,
}

impl WorkerView {
    /// No request in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0
    }

    /// How long it has been idle at `now` (zero while busy).
    pub fn idle_for(&self, now: Duration) -> Duration {
        if self.in_flight > 0 {
            Duration::ZERO
        } else {
            now.saturating_sub(self.last_used)
        }
    }
}

/// Everything a policy sees at one tick. Times are offsets from the clock's origin.
///
/// The snapshot covers **every** registered pool, so that global policies (memory pressure)
/// can pick a victim anywhere. [`Snapshot::governed_keys`] yields only the keys of the pools
/// this policy instance governs: the default policy governs every pool without an override, an
/// override governs its own pool. Per-key policies iterate governed keys; global ones iterate
/// [`Snapshot::keys`].
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The tick's time.
    pub now: Duration,
    /// The previous tick's time (`None` at the first tick): [`KeyView::arrivals`] counts the
    /// requests since then.
    pub previous: Option<Duration>,
    /// This tick's memory reading; `None` when the probe failed or read nonsense.
    pub memory: Option<MemoryReading>,
    /// Every registered pool.
    pub pools: &'a [PoolView],
    /// Every key of every pool.
    pub keys: &'a [KeyView],
    /// Every ready worker; each key owns a contiguous range.
    pub workers: &'a [WorkerView],
    /// Per-model overrides; index 0 is the empty set.
    pub overrides: &'a [ModelOverrides],
    /// For each pool, whether this policy instance governs it.
    pub governed: &'a [bool],
}

impl<'a> Snapshot<'a> {
    /// The ready workers of `key`.
    pub fn workers_of(&self, key: &KeyView) -> &'a [WorkerView] {
        &self.workers[key.workers.clone()]
    }

    /// The overrides of `key` (all `None` when it has none).
    pub fn overrides_of(&self, key: &KeyView) -> ModelOverrides {
        self.overrides
            .get(key.overrides)
            .copied()
            .unwrap_or_default()
    }

    /// The pool `key` belongs to.
    pub fn pool_of(&self, key: &KeyView) -> &'a PoolView {
        &self.pools[key.pool]
    }

    /// Whether this policy instance governs `key`'s pool.
    pub fn governs(&self, key: &KeyView) -> bool {
        self.governed.get(key.pool).copied().unwrap_or(false)
    }

    /// The keys of the pools this policy instance governs, with their indices.
    pub fn governed_keys(&self) -> impl Iterator<Item = (KeyIndex, &'a KeyView)> + '_ {
        let keys: &'a [KeyView] = self.keys;
        keys.iter()
            .enumerate()
            .filter(move |(_, key)| self.governs(key))
    }

    /// Total number of ready workers.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }
}
