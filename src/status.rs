//! A status view of a running system: [`crate::Scheduler::status`] returns a [`Status`], a
//! plain serializable snapshot of every registered pool and model (workers, requests in flight
//! and waiting, spawns in progress, each worker's idle time and footprint), the memory
//! budgets, and the last memory reading. It reads the pools without disturbing the tick: it
//! takes no part in counting arrivals and stamps nothing.
//!
//! In JSON every duration is a number of seconds (fields ending in `_secs`) and every size a
//! number of bytes (fields ending in `_bytes`). The types also implement `Deserialize`, so a
//! client reads back exactly what a server wrote (`poolwarden status URL` does).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use poolwarden_policies::MemoryReading;

/// Everything [`crate::Scheduler::status`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// When the status was taken (the scheduler's clock, since its origin).
    #[serde(rename = "at_secs", with = "serde_secs")]
    pub at: Duration,
    /// Whether the maintenance thread is running.
    pub running: bool,
    /// The tick interval.
    #[serde(rename = "tick_secs", with = "serde_secs")]
    pub tick: Duration,
    /// Ticks run so far.
    pub ticks: u64,
    /// When the last tick ran (`None` before the first).
    #[serde(rename = "last_tick_secs", with = "serde_secs_opt")]
    pub last_tick: Option<Duration>,
    /// The memory reading of the last tick (`None`: no tick yet, no probe, or unknown).
    pub memory: Option<MemoryStatus>,
    /// Memory budgets, as their owners report them.
    pub budgets: Vec<BudgetStatus>,
    /// Every registered pool, in registration order.
    pub pools: Vec<PoolStatus>,
    /// Evictions by reason since the scheduler was built.
    pub evictions: BTreeMap<String, u64>,
    /// Policy calls that panicked.
    pub policy_panics: u64,
}

impl Status {
    /// Live workers over every pool.
    pub fn total_workers(&self) -> usize {
        self.pools.iter().map(|p| p.total_workers()).sum()
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolStatus> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// One memory reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStatus {
    /// The limit that applies to the process.
    pub total_bytes: u64,
    /// Bytes still available under it.
    pub available_bytes: u64,
    /// `total - available`.
    pub used_bytes: u64,
    /// The process's resident set size, when the probe knows it.
    pub process_rss_bytes: Option<u64>,
}

impl From<MemoryReading> for MemoryStatus {
    fn from(reading: MemoryReading) -> Self {
        MemoryStatus {
            total_bytes: reading.total,
            available_bytes: reading.available,
            used_bytes: reading.used(),
            process_rss_bytes: reading.process_rss,
        }
    }
}

/// One memory budget: what its owner reports through [`BudgetReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The budget's name (`[budgets.NAME]`).
    pub name: String,
    /// Its limit.
    pub limit_bytes: u64,
    /// Bytes held against it: live workers plus reservations of spawns in progress.
    pub used_bytes: u64,
    /// `limit - used`.
    pub free_bytes: u64,
    /// The pools that spend it.
    pub pools: Vec<String>,
    /// Spawns waiting for room.
    pub waiting_spawns: usize,
}

/// Something that reports a memory budget: registered with
/// [`crate::Scheduler::register_budget`], it is read for [`Status::budgets`] and, at every tick,
/// for the `poolwarden_budget_free_bytes{budget}` gauge.
pub trait BudgetReport: Send + Sync + 'static {
    /// The budget now.
    fn budget_status(&self) -> BudgetStatus;
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Its name.
    pub name: String,
    /// The policy that governs it, with its parameters (`gradual-lru idle=1m step=1m ...`).
    pub policy: String,
    /// Bytes accounted for its live workers.
    pub accounted_bytes: u64,
    /// Its `max_workers_per_model` now.
    pub max_workers_per_model: usize,
    /// Its `acquire_timeout` now.
    #[serde(rename = "acquire_timeout_secs", with = "serde_secs")]
    pub acquire_timeout: Duration,
    /// Every key it knows, by name.
    pub models: Vec<ModelStatus>,
}

impl PoolStatus {
    /// Live workers over its keys.
    pub fn total_workers(&self) -> usize {
        self.models.iter().map(|m| m.workers).sum()
    }

    /// The key named `model`.
    pub fn model(&self, model: &str) -> Option<&ModelStatus> {
        self.models.iter().find(|m| m.model == model)
    }
}

/// One key (model) of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// The key.
    pub model: String,
    /// Live workers (ready; not those being evicted).
    pub workers: usize,
    /// Requests in flight on them.
    pub in_flight: u64,
    /// Requests waiting for a worker.
    pub waiting: usize,
    /// Spawns in progress.
    pub starting: usize,
    /// Bytes accounted for its live workers.
    pub memory_bytes: u64,
    /// Each live worker, by id.
    pub instances: Vec<WorkerStatus>,
}

/// One live worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Its id in the pool.
    pub id: u64,
    /// Requests in flight on it.
    pub in_flight: u32,
    /// How long it has been idle: `None` while it serves a request. Under the real clocks a
    /// release is stamped by the tick, so a worker released since the last tick shows 0.
    #[serde(rename = "idle_secs", with = "serde_secs_opt")]
    pub idle: Option<Duration>,
    /// How long since it was spawned.
    #[serde(rename = "age_secs", with = "serde_secs")]
    pub age: Duration,
    /// Its footprint.
    pub memory_bytes: u64,
    /// Requests it has finished.
    pub releases: u64,
    /// Whether its `Worker::is_alive` says so (a dead one is removed at the next tick).
    pub alive: bool,
}

/// A [`Duration`] as a number of seconds (`f64`) in serde formats.
pub mod serde_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(d.as_secs_f64())
    }

    /// Reads seconds; a negative, infinite or too large number is an error.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// An optional [`Duration`] as a number of seconds or `null`.
pub mod serde_secs_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as seconds, or `null`.
    pub fn serialize<S: Serializer>(
        d: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serializer.serialize_f64(d.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }

    /// Reads seconds or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(deserializer)? {
            Some(secs) => Duration::try_from_secs_f64(secs)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}
