//! What the scheduler publishes and counts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::{EvictionReason, MemoryReading, WorkerId};
use serde::{Serialize, Serializer};

use crate::events::serialize_worker;
use crate::status::{serde_secs, MemoryStatus};

/// One eviction, as subscribers receive it. Every eviction carries its reason. In JSON, times
/// are seconds (`at_secs`, `idle_secs`), the key is `model` and the reason its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvictionEvent {
    /// The tick's time (since the clock's origin).
    #[serde(rename = "at_secs", serialize_with = "serde_secs::serialize")]
    pub at: Duration,
    /// The pool's name.
    pub pool: Arc<str>,
    /// The key.
    #[serde(rename = "model")]
    pub key: Arc<str>,
    /// The evicted worker.
    #[serde(serialize_with = "serialize_worker")]
    pub worker: WorkerId,
    /// Why.
    #[serde(serialize_with = "serialize_reason")]
    pub reason: EvictionReason,
    /// Workers the key has left.
    pub workers_left: usize,
    /// Bytes that left the pool's accounting.
    pub freed_bytes: u64,
    /// How long the worker had been idle (as its `last_used` said).
    #[serde(rename = "idle_secs", serialize_with = "serde_secs::serialize")]
    pub idle_for: Duration,
}

fn serialize_reason<S: Serializer>(
    reason: &EvictionReason,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(reason.as_str())
}

fn serialize_memory<S: Serializer>(
    memory: &Option<MemoryReading>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    memory.map(MemoryStatus::from).serialize(serializer)
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SchedulerStats {
    /// Ticks run.
    pub ticks: u64,
    /// Evictions by reason.
    pub evictions: BTreeMap<String, u64>,
    /// Policy calls that panicked.
    pub policy_panics: u64,
    /// The latest memory reading.
    #[serde(serialize_with = "serialize_memory")]
    pub last_memory: Option<MemoryReading>,
}
