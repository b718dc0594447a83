//! Shared helpers for the integration tests: a virtual worker and a manual-clock harness.
#![allow(dead_code)]

pub mod recorder;

use std::sync::Arc;
use std::time::{Duration, Instant};

use poolwarden::policies::{KeepAlive, KeepAliveConfig};
use poolwarden::{ManualClock, Pool, Scheduler, SpawnError, Worker};

/// A worker that is nothing but a footprint.
pub struct Model {
    pub bytes: u64,
}

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }
}

/// A pool of [`Model`]s of `bytes` each, on `clock`.
pub fn model_pool(
    name: &str,
    clock: &Arc<ManualClock>,
    max_workers: usize,
    bytes: u64,
) -> Pool<Model> {
    Pool::builder(name, move |_key: &str| Ok::<_, SpawnError>(Model { bytes }))
        .clock(clock.clone())
        .max_workers_per_model(max_workers)
        .build()
}

/// Polls `condition` every millisecond until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    condition()
}

/// Keep-alive with `ttl` and no floor.
pub fn keep_alive(ttl: Duration) -> Box<KeepAlive> {
    Box::new(
        KeepAlive::new(KeepAliveConfig {
            ttl,
            min_workers: 0,
        })
        .unwrap(),
    )
}

/// Seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `m:ss` → seconds.
pub fn at(minutes: u64, seconds: u64) -> u64 {
    minutes * 60 + seconds
}

/// One observed eviction: (second, pool, key, worker id, workers left, reason).
pub type Observed = (u64, String, String, u64, usize, String);

/// Ticks `scheduler` at every multiple of `tick` seconds up to `until`, calling `before_tick`
/// first at every whole second (requests start and end there), and returns the evictions.
pub fn drive(
    clock: &ManualClock,
    scheduler: &Scheduler,
    tick: u64,
    until: u64,
    mut before_tick: impl FnMut(u64),
) -> Vec<Observed> {
    let mut seen = Vec::new();
    for t in 0..=until {
        clock.set(secs(t));
        before_tick(t);
        if t % tick == 0 {
            for e in scheduler.tick_once().evictions {
                seen.push((
                    e.at.as_secs(),
                    e.pool.to_string(),
                    e.key.to_string(),
                    e.worker.0,
                    e.workers_left,
                    e.reason.to_string(),
                ));
            }
        }
    }
    seen
}
