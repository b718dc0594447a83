//! The reusable buffer the scheduler fills with every pool's state at each tick.

use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::{
    KeyView, MemoryReading, ModelOverrides, PoolView, Snapshot, WorkerId, WorkerView,
};

/// A worker found dead while snapshotting, to be removed by its pool.
#[derive(Debug, Clone)]
pub struct DeadWorker {
    /// Index of its pool in the buffer.
    pub pool: usize,
    /// Its key.
    pub key: Arc<str>,
    /// Its id.
    pub worker: WorkerId,
}

/// Flat storage behind a [`Snapshot`]: pools, keys, workers and overrides in vectors that keep
/// their capacity from tick to tick, so a tick allocates nothing once warm.
#[derive(Debug, Default)]
pub struct SnapshotBuffer {
    /// Every pool, in registration order.
    pub pools: Vec<PoolView>,
    /// Every key of every pool.
    pub keys: Vec<KeyView>,
    /// Every ready worker; each key owns a contiguous range.
    pub workers: Vec<WorkerView>,
    /// Per-model overrides; index 0 is the empty set.
    pub overrides: Vec<ModelOverrides>,
    /// Workers found dead during this fill.
    pub dead: Vec<DeadWorker>,
}

impl SnapshotBuffer {
    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.pools.clear();
        self.keys.clear();
        self.workers.clear();
        self.overrides.clear();
        self.overrides.push(ModelOverrides::default());
        self.dead.clear();
    }

    /// A snapshot over the buffer's contents.
    pub fn view<'a>(
        &'a self,
        now: Duration,
        previous: Option<Duration>,
        memory: Option<MemoryReading>,
        governed: &'a [bool],
    ) -> Snapshot<'a> {
        Snapshot {
            now,
            previous,
            memory,
            pools: &self.pools,
            keys: &self.keys,
            workers: &self.workers,
            overrides: &self.overrides,
            governed,
        }
    }
}
