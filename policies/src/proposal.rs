//! What a policy returns: which worker to evict, and why.

use std::sync::Arc;

use std::time::Duration;

use crate::snapshot::{KeyIndex, WorkerId, WorkerView};

/// Why a worker was (or should be) evicted. Every eviction carries one, in logs, events and
/// counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EvictionReason {
    /// Scaled down after the key went idle (`gradual-lru`).
    Idle,
    /// Idle longer than its keep-alive (`keep-alive`).
    KeepAlive,
    /// Recycled after its lifetime (`max-lifetime`).
    MaxLifetime,
    /// Freed because memory use crossed the high watermark (`memory-pressure`).
    MemoryPressure,
    /// Evicted to make room for a spawn under a memory budget (admission).
    Admission,
    /// Its thread panicked or exited; removed by the pool.
    Dead,
    /// Evicted by an explicit call from the application.
    Manual,
    /// A reason named by a custom policy.
    Custom(Arc<str>),
}

impl EvictionReason {
    /// A custom reason with the given name.
    pub fn custom(name: &str) -> Self {
        EvictionReason::Custom(Arc::from(name))
    }

    /// The reason's name as it appears in logs, counters and JSON (`"idle"`, `"memory-pressure"`).
    pub fn as_str(&self) -> &str {
        match self {
            EvictionReason::Idle => "idle",
            EvictionReason::KeepAlive => "keep-alive",
            EvictionReason::MaxLifetime => "max-lifetime",
            EvictionReason::MemoryPressure => "memory-pressure",
            EvictionReason::Admission => "admission",
            EvictionReason::Dead => "dead",
            EvictionReason::Manual => "manual",
            EvictionReason::Custom(name) => name,
        }
    }
}

impl std::fmt::Display for EvictionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proposal to evict one worker. The pool re-checks it atomically: a worker that is busy by
/// then, already gone, or used since the snapshot the policy decided from, is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The key, as an index into [`crate::Snapshot::keys`].
    pub key: KeyIndex,
    /// The worker to evict.
    pub worker: WorkerId,
    /// Why.
    pub reason: EvictionReason,
    /// The worker's [`WorkerView::releases`] as the policy saw it. The pool evicts only if the
    /// worker still has exactly this count (no request came and went since). `None`: the count
    /// in the snapshot of this tick, which the scheduler fills in.
    pub releases: Option<u64>,
}

impl Proposal {
    /// A proposal to evict `worker` of the key at `key` for `reason`, as of this tick's
    /// snapshot.
    pub fn new(key: KeyIndex, worker: WorkerId, reason: EvictionReason) -> Self {
        Proposal {
            key,
            worker,
            reason,
            releases: None,
        }
    }

    /// A proposal to evict the worker seen as `worker` of the key at `key` for `reason`: the
    /// pool evicts it only if it has served no request since that view was taken.
    pub fn evict(key: KeyIndex, worker: &WorkerView, reason: EvictionReason) -> Self {
        Proposal {
            key,
            worker: worker.id,
            reason,
            releases: Some(worker.releases),
        }
    }
}

/// A proposal to have `workers` ready workers of `key` in pool `pool` from time `at`: the
/// scheduler starts the missing spawns early enough for them to be ready by `at` (the key's
/// expected load time ahead of it), off the maintenance thread. Spawns it starts are counted as
/// pre-warm spawns, apart from cold starts.
///
/// The scheduler keeps one pending pre-warm per key: a new proposal for the same key replaces
/// the pending one, and one with `workers: 0` cancels it. A pending pre-warm fires once; the
/// workers it brings are then governed like any other (an idle policy may evict them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prewarm {
    /// Index of the key's pool in [`crate::Snapshot::pools`].
    pub pool: usize,
    /// The key (it need not be in the snapshot: a key with no worker can be pre-warmed).
    pub key: Arc<str>,
    /// Ready workers wanted (counting those already ready or starting).
    pub workers: usize,
    /// When they should be ready.
    pub at: Duration,
}
