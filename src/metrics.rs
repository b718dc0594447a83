//! What the pool and the scheduler export through the [`metrics`](https://docs.rs/metrics)
//! facade, with the feature `metrics` (on by default). Nothing is recorded until the
//! application installs a recorder (for example `metrics-exporter-prometheus`); without the
//! feature every call here is a no-op and the `metrics` crate is not built.
//!
//! [`METRICS`] lists every metric with its kind, labels and purpose; [`describe`] hands those
//! descriptions to the installed recorder (the scheduler does it when it starts).
//!
//! * **Counters** are incremented where the event happens: a spawn, a failed spawn, a cold
//!   start and an acquire timeout in the pool; an eviction in the pool's removal, which every
//!   eviction goes through.
//! * **Gauges** are set by the tick, from the snapshot it takes anyway, less what it evicted:
//!   workers, requests in flight and waiting, spawns in progress per pool and model, and the
//!   accounted bytes per pool. A key the pool has forgotten is set to zero once.
//! * **Requests**: `poolwarden_requests_total{pool}` counts every request (served at once,
//!   after a wait, or given up), added by the tick in one step from the arrivals it counts
//!   anyway, so the lease fast path takes no lock and reads no clock, and the tick's cost does
//!   not grow with the request rate.
//! * **Histograms**: `poolwarden_acquire_wait_seconds{pool}` gets the wait of each request
//!   that queued (it found no ready worker), when it gets its worker or its error; a request
//!   served at once waited nothing and is not recorded, so the histogram's count is the queued
//!   requests and `poolwarden_requests_total` less that count the ones served at once. A
//!   request that timed out counts in `poolwarden_acquire_timeouts_total` instead.
//!   `poolwarden_spawn_seconds` gets each load's time, and `poolwarden_tick_seconds` each
//!   tick's wall-clock time.
//!
//! Metrics are keyed by pool name: give each pool of a process its own name.

use std::time::Duration;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// A value set at each tick.
    Gauge,
    /// A distribution of values.
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    /// Its name.
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it is for (its description).
    pub help: &'static str,
}

/// Workers per pool and model (gauge).
pub const WORKERS: &str = "poolwarden_workers";
/// Requests in flight per pool and model (gauge).
pub const IN_FLIGHT: &str = "poolwarden_in_flight";
/// Requests waiting per pool and model (gauge).
pub const WAITING: &str = "poolwarden_waiting";
/// Spawns in progress per pool and model (gauge).
pub const STARTING: &str = "poolwarden_starting";
/// Bytes accounted per pool (gauge).
pub const ACCOUNTED_BYTES: &str = "poolwarden_accounted_bytes";
/// Free bytes per memory budget (gauge).
pub const BUDGET_FREE_BYTES: &str = "poolwarden_budget_free_bytes";
/// Spawns per pool and model (counter).
pub const SPAWNS: &str = "poolwarden_spawns_total";
/// Failed spawns per pool and model (counter).
pub const SPAWN_FAILURES: &str = "poolwarden_spawn_failures_total";
/// Cold starts per pool and model (counter).
pub const COLD_STARTS: &str = "poolwarden_cold_starts_total";
/// Acquire timeouts per pool and model (counter).
pub const ACQUIRE_TIMEOUTS: &str = "poolwarden_acquire_timeouts_total";
/// Evictions per pool and reason (counter).
pub const EVICTIONS: &str = "poolwarden_evictions_total";
/// Requests per pool (counter).
pub const REQUESTS: &str = "poolwarden_requests_total";
/// Time queued requests waited for a worker, per pool (histogram, seconds).
pub const ACQUIRE_WAIT: &str = "poolwarden_acquire_wait_seconds";
/// Load time per pool and model (histogram, seconds).
pub const SPAWN_SECONDS: &str = "poolwarden_spawn_seconds";
/// Wall-clock time of each tick (histogram, seconds).
pub const TICK_SECONDS: &str = "poolwarden_tick_seconds";

/// Every metric poolwarden exports.
pub const METRICS: &[MetricInfo] = &[
    MetricInfo {
        name: WORKERS,
        kind: MetricKind::Gauge,
        labels: &["pool", "model"],
        help: "Live workers of a model: what it holds loaded now.",
    },
    MetricInfo {
        name: IN_FLIGHT,
        kind: MetricKind::Gauge,
        labels: &["pool", "model"],
        help: "Requests being served by a model's workers: its load.",
    },
    MetricInfo {
        name: WAITING,
        kind: MetricKind::Gauge,
        labels: &["pool", "model"],
        help: "Requests queued for a worker of a model: demand the replica cannot serve now (scale-up signal).",
    },
    MetricInfo {
        name: STARTING,
        kind: MetricKind::Gauge,
        labels: &["pool", "model"],
        help: "Workers of a model being loaded: capacity on its way.",
    },
    MetricInfo {
        name: ACCOUNTED_BYTES,
        kind: MetricKind::Gauge,
        labels: &["pool"],
        help: "Bytes the pool accounts for its live workers.",
    },
    MetricInfo {
        name: BUDGET_FREE_BYTES,
        kind: MetricKind::Gauge,
        labels: &["budget"],
        help: "Bytes left in a memory budget before a spawn has to wait or evict.",
    },
    MetricInfo {
        name: SPAWNS,
        kind: MetricKind::Counter,
        labels: &["pool", "model"],
        help: "Workers loaded (pre-warms included): churn, with the evictions.",
    },
    MetricInfo {
        name: SPAWN_FAILURES,
        kind: MetricKind::Counter,
        labels: &["pool", "model"],
        help: "Loads that failed, panicked or passed spawn_timeout: alert on it.",
    },
    MetricInfo {
        name: COLD_STARTS,
        kind: MetricKind::Counter,
        labels: &["pool", "model"],
        help: "Requests that waited for a worker to load: the price of scaling down.",
    },
    MetricInfo {
        name: ACQUIRE_TIMEOUTS,
        kind: MetricKind::Counter,
        labels: &["pool", "model"],
        help: "Requests that gave up after acquire_timeout: unserved demand.",
    },
    MetricInfo {
        name: EVICTIONS,
        kind: MetricKind::Counter,
        labels: &["pool", "reason"],
        help: "Workers evicted, by reason (idle, memory-pressure, dead, ...): what the policies do.",
    },
    MetricInfo {
        name: REQUESTS,
        kind: MetricKind::Counter,
        labels: &["pool"],
        help: "Requests for a pool's workers, served at once, after a wait or given up: the request rate (scale-to-zero signal).",
    },
    MetricInfo {
        name: ACQUIRE_WAIT,
        kind: MetricKind::Histogram,
        labels: &["pool"],
        help: "Seconds each request that found no ready worker waited for one: latency added by the pool (scale-up signal).",
    },
    MetricInfo {
        name: SPAWN_SECONDS,
        kind: MetricKind::Histogram,
        labels: &["pool", "model"],
        help: "Seconds each load took: what a cold start costs, and how early to pre-warm.",
    },
    MetricInfo {
        name: TICK_SECONDS,
        kind: MetricKind::Histogram,
        labels: &[],
        help: "Wall-clock seconds of each maintenance tick: the scheduler's own cost.",
    },
];

/// Hands the description of every metric to the installed recorder (exporters show it as
/// `# HELP`). [`crate::Scheduler::start`] calls it; call it yourself when you install a
/// recorder later, or never start the scheduler's thread. A no-op without the feature.
pub fn describe() {
    #[cfg(feature = "metrics")]
    for metric in METRICS {
        let unit = match metric.name {
            ACCOUNTED_BYTES | BUDGET_FREE_BYTES => Some(::metrics::Unit::Bytes),
            ACQUIRE_WAIT | SPAWN_SECONDS | TICK_SECONDS => Some(::metrics::Unit::Seconds),
            _ => None,
        };
        let name = metric.name;
        let help = metric.help;
        match (metric.kind, unit) {
            (MetricKind::Counter, _) => ::metrics::describe_counter!(name, help),
            (MetricKind::Gauge, Some(unit)) => ::metrics::describe_gauge!(name, unit, help),
            (MetricKind::Gauge, None) => ::metrics::describe_gauge!(name, help),
            (MetricKind::Histogram, Some(unit)) => {
                ::metrics::describe_histogram!(name, unit, help)
            }
            (MetricKind::Histogram, None) => ::metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(feature = "metrics")]
mod on {
    //! The recording side, with the feature.

    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;
    use std::sync::Arc;
    use std::time::Duration;

    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
    use poolwarden_policies::KeyId;

    use super::*;
    use crate::snapshot_buffer::SnapshotBuffer;

    /// One key's gauges, registered once, with the values last set (a gauge is written only
    /// when its value changes, so that a tick over many quiet keys touches no handle).
    struct KeySlot {
        pool: usize,
        id: KeyId,
        /// workers, in flight, waiting, starting, as last set.
        last: [u64; 4],
        gauges: [Gauge; 4],
    }

    impl KeySlot {
        fn new(pool_name: &str, pool: usize, id: KeyId, model: &str) -> Self {
            let (pool_name, model) = (pool_name.to_string(), model.to_string());
            // The key's counters start at zero, so that rates work from its first tick.
            for name in [SPAWNS, SPAWN_FAILURES, COLD_STARTS, ACQUIRE_TIMEOUTS] {
                counter!(name, "pool" => pool_name.clone(), "model" => model.clone()).increment(0);
            }
            let gauges = [WORKERS, IN_FLIGHT, WAITING, STARTING]
                .map(|name| gauge!(name, "pool" => pool_name.clone(), "model" => model.clone()));
            KeySlot {
                pool,
                id,
                last: [u64::MAX; 4],
                gauges,
            }
        }

        fn set(&mut self, values: [u64; 4]) {
            for ((last, gauge), value) in self.last.iter_mut().zip(&self.gauges).zip(values) {
                if *last != value {
                    *last = value;
                    gauge.set(value as f64);
                }
            }
        }
    }

    /// One pool's handles.
    struct PoolHandles {
        name: Arc<str>,
        accounted: Gauge,
        requests: Counter,
    }

    /// Hashes the (pool index, key id) pairs of the gauge map: two integers, mixed by a
    /// multiply (SipHash would cost more than the rest of a key's update).
    #[derive(Default)]
    struct IdHasher(u64);

    impl std::hash::Hasher for IdHasher {
        fn finish(&self) -> u64 {
            self.0
        }

        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.write_u64(u64::from(*b));
            }
        }

        fn write_u64(&mut self, n: u64) {
            self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }

        fn write_usize(&mut self, n: usize) {
            self.write_u64(n as u64);
        }
    }

    /// What the scheduler's tick keeps for the metrics: handles, and each key's last tick.
    #[derive(Default)]
    pub(crate) struct TickMetrics {
        pools: Vec<PoolHandles>,
        /// One per key of the last snapshot, in its order (which stays the same from tick to
        /// tick while no key comes or goes).
        keys: Vec<KeySlot>,
        tick_seconds: Option<Histogram>,
        /// Scratch: arrivals per pool this tick.
        arrivals: Vec<u64>,
    }

    impl TickMetrics {
        /// Sets the gauges from this tick's snapshot `buffer`, less `evicted[k]` workers of key
        /// `k`; `accounted[p]` is pool `p`'s accounted bytes after the tick. Adds the requests
        /// that arrived since the last tick to each pool's `poolwarden_requests_total`.
        pub(crate) fn update(
            &mut self,
            buffer: &SnapshotBuffer,
            evicted: &[u32],
            accounted: &[u64],
        ) {
            for (index, view) in buffer.pools.iter().enumerate() {
                match self.pools.get(index) {
                    Some(handles) if Arc::ptr_eq(&handles.name, &view.name) => {}
                    _ => {
                        let pool = view.name.to_string();
                        let handles = PoolHandles {
                            name: Arc::clone(&view.name),
                            accounted: gauge!(ACCOUNTED_BYTES, "pool" => pool.clone()),
                            requests: counter!(REQUESTS, "pool" => pool),
                        };
                        if index < self.pools.len() {
                            self.pools[index] = handles;
                        } else {
                            self.pools.push(handles);
                        }
                    }
                }
            }
            self.arrivals.clear();
            self.arrivals.resize(buffer.pools.len(), 0);
            let aligned = self.keys.len() == buffer.keys.len()
                && self
                    .keys
                    .iter()
                    .zip(&buffer.keys)
                    .all(|(slot, key)| slot.pool == key.pool && slot.id == key.id);
            if !aligned {
                // Keys came or went: line the slots up with this snapshot; a key gone is set
                // to zero once.
                let mut old: HashMap<(usize, KeyId), KeySlot, BuildHasherDefault<IdHasher>> =
                    self.keys.drain(..).map(|s| ((s.pool, s.id), s)).collect();
                for key in &buffer.keys {
                    let slot = old.remove(&(key.pool, key.id)).unwrap_or_else(|| {
                        KeySlot::new(&buffer.pools[key.pool].name, key.pool, key.id, &key.key)
                    });
                    self.keys.push(slot);
                }
                for (_, mut gone) in old {
                    gone.set([0; 4]);
                }
            }
            for (k, (slot, key)) in self.keys.iter_mut().zip(&buffer.keys).enumerate() {
                let views = &buffer.workers[key.workers.clone()];
                let workers = views
                    .len()
                    .saturating_sub(evicted.get(k).copied().unwrap_or(0) as usize);
                let in_flight: u64 = views.iter().map(|w| u64::from(w.in_flight)).sum();
                slot.set([
                    workers as u64,
                    in_flight,
                    key.waiting as u64,
                    key.starting as u64,
                ]);
                self.arrivals[key.pool] += key.arrivals;
            }
            for (index, handles) in self.pools.iter_mut().enumerate().take(buffer.pools.len()) {
                handles
                    .accounted
                    .set(accounted.get(index).copied().unwrap_or(0) as f64);
                handles.requests.increment(self.arrivals[index]);
            }
        }

        /// Records one tick's wall-clock time.
        pub(crate) fn tick_took(&mut self, took: Duration) {
            self.tick_seconds
                .get_or_insert_with(|| histogram!(TICK_SECONDS))
                .record(took.as_secs_f64());
        }

        /// Sets `poolwarden_budget_free_bytes{budget}` for each budget reported this tick.
        pub(crate) fn budget(&mut self, name: &str, free: u64) {
            super::budget_free(name, free);
        }
    }

    pub(super) fn counter_of(name: &'static str, pool: &str, model: &str) -> Counter {
        counter!(name, "pool" => pool.to_string(), "model" => model.to_string())
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::TickMetrics;

/// Without the feature: the tick's metrics state is empty and every update does nothing.
#[cfg(not(feature = "metrics"))]
#[derive(Default)]
pub(crate) struct TickMetrics {}

#[cfg(not(feature = "metrics"))]
impl TickMetrics {
    #[inline]
    pub(crate) fn update(
        &mut self,
        _buffer: &crate::snapshot_buffer::SnapshotBuffer,
        _evicted: &[u32],
        _accounted: &[u64],
    ) {
    }

    #[inline]
    pub(crate) fn tick_took(&mut self, _took: Duration) {}

    #[inline]
    pub(crate) fn budget(&mut self, _name: &str, _free: u64) {}
}

/// Whether the tick should measure itself and fill the gauges.
pub(crate) const ENABLED: bool = cfg!(feature = "metrics");

/// A worker of `model` finished loading in `took` (a pre-warm if `prewarm`).
pub(crate) fn spawned(pool: &str, model: &str, took: Duration, prewarm: bool) {
    #[cfg(feature = "metrics")]
    {
        let _ = prewarm;
        on::counter_of(SPAWNS, pool, model).increment(1);
        ::metrics::histogram!(SPAWN_SECONDS, "pool" => pool.to_string(), "model" => model.to_string())
            .record(took.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (pool, model, took, prewarm);
}

/// A load of `model` failed (error, panic or past `spawn_timeout`).
pub(crate) fn spawn_failed(pool: &str, model: &str) {
    #[cfg(feature = "metrics")]
    on::counter_of(SPAWN_FAILURES, pool, model).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (pool, model);
}

/// `n` requests of `model` were served by a worker spawned while they waited.
pub(crate) fn cold_starts(pool: &str, model: &str, n: u64) {
    #[cfg(feature = "metrics")]
    on::counter_of(COLD_STARTS, pool, model).increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = (pool, model, n);
}

/// A request of `model` gave up after `acquire_timeout`.
pub(crate) fn acquire_timeout(pool: &str, model: &str) {
    #[cfg(feature = "metrics")]
    on::counter_of(ACQUIRE_TIMEOUTS, pool, model).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (pool, model);
}

/// A request that found no ready worker got one after `waited`.
pub(crate) fn acquire_waited(pool: &str, waited: Duration) {
    #[cfg(feature = "metrics")]
    {
        ::metrics::histogram!(ACQUIRE_WAIT, "pool" => pool.to_string())
            .record(waited.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (pool, waited);
}

/// A worker left `pool` for `reason`.
pub(crate) fn evicted(pool: &str, reason: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(EVICTIONS, "pool" => pool.to_string(), "reason" => reason.to_string())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (pool, reason);
}

/// The memory budget `budget` has `bytes` free: sets `poolwarden_budget_free_bytes{budget}`.
/// The budgets' owner calls it whenever the figure changes (or the scheduler, at each tick,
/// for budgets registered with [`crate::Scheduler::register_budget`]).
#[allow(dead_code)] // admission
pub(crate) fn budget_free(budget: &str, bytes: u64) {
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(BUDGET_FREE_BYTES, "budget" => budget.to_string()).set(bytes as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = (budget, bytes);
}
