//! What a policy returns: which worker to evict, and why.

use std::sync::Arc;

use crate::snapshot::{KeyIndex, WorkerId};

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
/// then, or already gone, is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The key, as an index into [`crate::Snapshot::keys`].
    pub key: KeyIndex,
    /// The worker to evict.
    pub worker: WorkerId,
    /// Why.
    pub reason: EvictionReason,
}

impl Proposal {
    /// A proposal to evict `worker` of the key at `key` for `reason`.
    pub fn new(key: KeyIndex, worker: WorkerId, reason: EvictionReason) -> Self {
        Proposal {
            key,
            worker,
            reason,
        }
    }
}
