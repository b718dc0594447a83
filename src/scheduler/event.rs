//! What the scheduler publishes and counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::{EvictionReason, MemoryReading, WorkerId};

/// One eviction, as subscribers receive it. Every eviction carries its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionEvent {
    /// The tick's time (since the clock's origin).
    pub at: Duration,
    /// The pool's name.
    pub pool: Arc<str>,
    /// The key.
    pub key: Arc<str>,
    /// The evicted worker.
    pub worker: WorkerId,
    /// Why.
    pub reason: EvictionReason,
    /// Workers the key has left.
    pub workers_left: usize,
    /// Bytes that left the pool's accounting.
    pub freed_bytes: u64,
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// The tick's time.
    pub at: Duration,
    /// The memory reading it used (`None`: unknown).
    pub memory: Option<MemoryReading>,
    /// The evictions it made, in order.
    pub evictions: Vec<EvictionEvent>,
    /// Policies that panicked during it.
    pub policy_panics: usize,
    /// Pre-warms that came due: started by the scheduler, or, with
    /// [`crate::SchedulerBuilder::manual_prewarm`], for the caller to start.
    pub prewarms: Vec<PrewarmStart>,
}

/// A pre-warm that came due at a tick: `spawns` more workers of `key` in pool `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrewarmStart {
    /// Index of the pool in registration order.
    pub pool: usize,
    /// The key.
    pub key: Arc<str>,
    /// Spawns to start (started, unless pre-warms are manual).
    pub spawns: usize,
}

/// The scheduler's counters since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Ticks run.
    pub ticks: u64,
    /// Evictions by reason.
    pub evictions: BTreeMap<String, u64>,
    /// Policy calls that panicked.
    pub policy_panics: u64,
    /// The latest memory reading.
    pub last_memory: Option<MemoryReading>,
}
