//! The keyed worker pool: model key → workers, leased one request at a time.

mod cell;
mod error;
mod lease;
mod shared;
mod threaded;
mod worker;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use poolwarden_policies::{
    EvictionReason, KeyId, KeyView, ModelOverrides, PoolView, WorkerId, WorkerView,
};

use crate::clock::{to_nanos, Clock, TscClock};
use crate::snapshot_buffer::{DeadWorker, SnapshotBuffer};
use cell::{CellState, WorkerCell};
use shared::PoolShared;

pub use error::AcquireError;
pub use lease::Lease;
pub use threaded::{ThreadedWorker, WorkerGone};
pub use worker::{SpawnError, Worker, WorkerFactory};

/// No time recorded.
const NO_TIME: u64 = u64::MAX;

/// One key's workers, the value of the pool's map.
struct ModelEntry<W> {
    id: KeyId,
    workers: Vec<Arc<WorkerCell<W>>>,
    /// Spawns reserved and not yet finished.
    starting: usize,
    last_eviction: Option<Duration>,
    /// Index into the pool's override table plus one; 0 for none.
    overrides: usize,
    /// Arrivals since the last tick that no live worker's state word counts: requests that
    /// gave up (timed out, spawn failed) and requests served by workers that left since.
    arrivals: AtomicU64,
    /// When the first request since the last tick that found no ready worker arrived
    /// (`NO_TIME`: none).
    first_arrival: AtomicU64,
    /// Whether the last tick saw the key with nothing in flight (true for a new key).
    idle_at_tick: AtomicBool,
}

impl<W> ModelEntry<W> {
    fn new(id: KeyId, overrides: usize) -> Self {
        ModelEntry {
            id,
            workers: Vec::new(),
            starting: 0,
            last_eviction: None,
            overrides,
            arrivals: AtomicU64::new(0),
            first_arrival: AtomicU64::new(NO_TIME),
            idle_at_tick: AtomicBool::new(true),
        }
    }
}

/// A worker that has left the pool.
#[derive(Debug, Clone)]
pub struct Eviction {
    /// Its key.
    pub key: Arc<str>,
    /// Its id.
    pub worker: WorkerId,
    /// Why it left.
    pub reason: EvictionReason,
    /// Workers the key has left.
    pub workers_left: usize,
    /// Bytes that left the pool's accounting.
    pub freed_bytes: u64,
}

/// The pool's accounting at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes accounted for live workers.
    pub accounted_bytes: u64,
    /// Live workers per key (keys with none are listed with 0).
    pub workers: BTreeMap<String, usize>,
    /// Workers spawned (pre-warm spawns included).
    pub spawns: u64,
    /// Of those, spawned by a pre-warm rather than for a waiting request.
    pub prewarm_spawns: u64,
    /// Spawns that failed (error or panic).
    pub spawn_failures: u64,
    /// Evictions by reason.
    pub evictions: BTreeMap<String, u64>,
}

impl PoolStats {
    /// Live workers over all keys.
    pub fn total_workers(&self) -> usize {
        self.workers.values().sum()
    }
}

struct PoolInner<W> {
    name: Arc<str>,
    map: DashMap<Arc<str>, ModelEntry<W>>,
    factory: Box<dyn WorkerFactory<W>>,
    shared: Arc<PoolShared>,
    max_workers_per_model: usize,
    max_in_flight_per_worker: u32,
    acquire_timeout: Duration,
    overrides: Vec<(Arc<str>, ModelOverrides)>,
    cold_start: Duration,
    model_cold_starts: Vec<(Arc<str>, Duration)>,
    /// Mean observed load time, nanoseconds (exponentially weighted; 0 until the first spawn).
    observed_load_nanos: AtomicU64,
    next_id: AtomicU64,
    next_key_id: AtomicU64,
    accounted_bytes: AtomicU64,
    spawns: AtomicU64,
    prewarm_spawns: AtomicU64,
    spawn_failures: AtomicU64,
    evictions: Mutex<BTreeMap<EvictionReason, u64>>,
}

/// A keyed pool of workers. Cheap to clone: clones share the same pool.
///
/// ```
/// use poolwarden::{Pool, SpawnError, Worker};
///
/// struct Model { bytes: u64 }
/// impl Worker for Model {
///     fn memory_bytes(&self) -> u64 { self.bytes }
/// }
///
/// let pool = Pool::builder("text", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 << 20 }))
///     .max_workers_per_model(4)
///     .build();
/// let lease = pool.acquire("llama-7b").unwrap();
/// assert_eq!(lease.memory_bytes(), 1 << 20);
/// drop(lease);
/// assert_eq!(pool.workers("llama-7b"), 1);
/// ```
pub struct Pool<W> {
    inner: Arc<PoolInner<W>>,
}

impl<W> Clone for Pool<W> {
    fn clone(&self) -> Self {
        Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Builds a [`Pool`].
pub struct PoolBuilder<W> {
    name: String,
    factory: Box<dyn WorkerFactory<W>>,
    clock: Option<Arc<dyn Clock>>,
    max_workers_per_model: usize,
    max_in_flight_per_worker: u32,
    acquire_timeout: Duration,
    overrides: Vec<(Arc<str>, ModelOverrides)>,
    cold_start: Duration,
    model_cold_starts: Vec<(Arc<str>, Duration)>,
}

impl<W: Worker> PoolBuilder<W> {
    /// How long a worker takes to load, for keys without their own: a pre-warm starts this
    /// much ahead of the time its workers are wanted. Default: zero, which means the pool's
    /// observed mean load time.
    pub fn cold_start(mut self, load_time: Duration) -> Self {
        self.cold_start = load_time;
        self
    }

    /// How long a worker of `key` takes to load (see [`PoolBuilder::cold_start`]).
    pub fn model_cold_start(mut self, key: &str, load_time: Duration) -> Self {
        self.model_cold_starts.retain(|(k, _)| &**k != key);
        self.model_cold_starts.push((Arc::from(key), load_time));
        self
    }

    /// Most workers per key. Default 4; at least 1.
    pub fn max_workers_per_model(mut self, n: usize) -> Self {
        self.max_workers_per_model = n.max(1);
        self
    }

    /// Requests a worker serves at once. Default 1; at least 1, at most 16,777,215.
    pub fn max_in_flight_per_worker(mut self, n: u32) -> Self {
        self.max_in_flight_per_worker = n.clamp(1, cell::MAX_IN_FLIGHT);
        self
    }

    /// How long [`Pool::acquire`] waits for a worker when the key is at its limit. Default 30 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The clock that stamps `last_used`. It must be the scheduler's clock. Default: the
    /// process-wide [`TscClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Per-model overrides that policies see for `key`.
    pub fn model_overrides(mut self, key: &str, overrides: ModelOverrides) -> Self {
        self.overrides.retain(|(k, _)| &**k != key);
        self.overrides.push((Arc::from(key), overrides));
        self
    }

    /// The pool.
    pub fn build(self) -> Pool<W> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(TscClock::default()));
        Pool {
            inner: Arc::new(PoolInner {
                name: Arc::from(self.name),
                map: DashMap::new(),
                factory: self.factory,
                shared: Arc::new(PoolShared::new(clock)),
                max_workers_per_model: self.max_workers_per_model,
                max_in_flight_per_worker: self.max_in_flight_per_worker,
                acquire_timeout: self.acquire_timeout,
                overrides: self.overrides,
                cold_start: self.cold_start,
                model_cold_starts: self.model_cold_starts,
                observed_load_nanos: AtomicU64::new(0),
                next_id: AtomicU64::new(1),
                next_key_id: AtomicU64::new(1),
                accounted_bytes: AtomicU64::new(0),
                spawns: AtomicU64::new(0),
                prewarm_spawns: AtomicU64::new(0),
                spawn_failures: AtomicU64::new(0),
                evictions: Mutex::new(BTreeMap::new()),
            }),
        }
    }
}

/// A reserved spawn slot for a key: the pool counts the worker as starting, so concurrent
/// acquires never spawn past the limit. Complete it with the new worker, or drop it to give the
/// slot back.
#[must_use = "dropping a reservation gives the slot back"]
pub struct SpawnReservation<W: Worker> {
    pool: Pool<W>,
    key: Arc<str>,
    done: bool,
}

impl<W: Worker> SpawnReservation<W> {
    /// The key the slot is for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds `worker` to the pool and returns a lease on it for the caller that spawned it.
    pub fn complete(mut self, worker: W) -> Lease<W> {
        self.done = true;
        let inner = &self.pool.inner;
        let memory = worker.memory_bytes();
        let id = WorkerId(inner.next_id.fetch_add(1, Ordering::Relaxed));
        let cell = Arc::new(WorkerCell::new_leased(
            id,
            Arc::clone(&self.key),
            worker,
            memory,
            Arc::clone(&inner.shared),
        ));
        inner.accounted_bytes.fetch_add(memory, Ordering::AcqRel);
        inner.spawns.fetch_add(1, Ordering::Relaxed);
        if let Some(mut entry) = inner.map.get_mut(&*self.key) {
            entry.starting -= 1;
            entry.workers.push(Arc::clone(&cell));
        }
        inner.shared.wake_waiters();
        Lease { cell }
    }
}

impl<W: Worker> Drop for SpawnReservation<W> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(mut entry) = self.pool.inner.map.get_mut(&*self.key) {
                entry.starting -= 1;
            }
            self.pool.inner.shared.wake_waiters();
        }
    }
}

/// How [`Pool::remove`] takes a worker out.
#[derive(Clone, Copy)]
enum Removal {
    /// Only if idle (and, with a count, released exactly that many times).
    IfIdle(Option<u64>),
    /// Whatever its load: it is dead.
    Dead,
}

enum Next<W: Worker> {
    Leased(Lease<W>),
    Spawn(SpawnReservation<W>),
}

impl<W: Worker> Pool<W> {
    /// A builder for a pool named `name` whose workers `factory` creates.
    pub fn builder(name: &str, factory: impl WorkerFactory<W>) -> PoolBuilder<W> {
        PoolBuilder {
            name: name.to_string(),
            factory: Box::new(factory),
            clock: None,
            max_workers_per_model: 4,
            max_in_flight_per_worker: 1,
            acquire_timeout: Duration::from_secs(30),
            overrides: Vec::new(),
            cold_start: Duration::ZERO,
            model_cold_starts: Vec::new(),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Leases a worker for `key`: the ready worker with the fewest requests in flight (ties:
    /// the most recently used, as its `last_used` says; then the highest id), else a newly
    /// spawned one if the key is below `max_workers_per_model`, else waits up to the acquire
    /// timeout for one to free up.
    pub fn acquire(&self, key: &str) -> Result<Lease<W>, AcquireError> {
        if let Some(lease) = self.try_acquire(key) {
            return Ok(lease);
        }
        let arrived = to_nanos(self.inner.shared.clock.now());
        let next = match self.try_acquire_or_reserve(key) {
            Some(next) => next,
            None => {
                self.note_slow_arrival(key, arrived, false);
                let timeout = self.inner.acquire_timeout;
                self.inner
                    .shared
                    .wait_for(timeout, || self.try_acquire_or_reserve(key))
                    .ok_or_else(|| {
                        self.note_slow_arrival(key, arrived, true);
                        AcquireError::Timeout {
                            key: key.to_string(),
                            waited: timeout,
                        }
                    })?
            }
        };
        self.note_slow_arrival(key, arrived, false);
        match next {
            Next::Leased(lease) => Ok(lease),
            Next::Spawn(reservation) => self.spawn_into(reservation, false),
        }
    }

    /// For callers that queue requests themselves (the simulator): records that a request for
    /// `key` arrived now and found no ready worker, so that policies see when it arrived (see
    /// [`KeyView::first_arrival`]). The key must be known to the pool (a worker, or a
    /// reservation from [`Pool::reserve`]); otherwise this does nothing. The request is counted
    /// in [`KeyView::arrivals`] when it is served (its lease), or by
    /// [`Pool::record_abandoned`] if it gives up.
    pub fn record_arrival(&self, key: &str) {
        let now = to_nanos(self.inner.shared.clock.now());
        self.note_slow_arrival(key, now, false);
    }

    /// For callers that queue requests themselves: records that a request for `key` gave up
    /// without a lease (timed out, rejected), so that it still counts as an arrival.
    pub fn record_abandoned(&self, key: &str) {
        self.note_slow_arrival(key, NO_TIME, true);
    }

    /// Records a request that found no ready worker: when it arrived, and whether it gave up
    /// (then no worker's state word will count it).
    fn note_slow_arrival(&self, key: &str, arrived: u64, gave_up: bool) {
        if let Some(entry) = self.inner.map.get(key) {
            entry.first_arrival.fetch_min(arrived, Ordering::AcqRel);
            if gave_up {
                entry.arrivals.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Runs the factory for a reservation, with no lock held.
    fn spawn_into(
        &self,
        reservation: SpawnReservation<W>,
        prewarm: bool,
    ) -> Result<Lease<W>, AcquireError> {
        let key = reservation.key().to_string();
        let factory = &self.inner.factory;
        let started = self.inner.shared.clock.now();
        let outcome = catch_unwind(AssertUnwindSafe(|| factory.spawn(&key)));
        if !prewarm && !matches!(outcome, Ok(Ok(_))) {
            self.note_slow_arrival(&key, NO_TIME, true);
        }
        match outcome {
            Ok(Ok(worker)) => {
                let took = to_nanos(self.inner.shared.clock.now().saturating_sub(started));
                let mean = self.inner.observed_load_nanos.load(Ordering::Relaxed);
                let mean = if mean == 0 {
                    took
                } else {
                    mean - mean / 4 + took / 4
                };
                self.inner
                    .observed_load_nanos
                    .store(mean.max(1), Ordering::Relaxed);
                if prewarm {
                    self.inner.prewarm_spawns.fetch_add(1, Ordering::Relaxed);
                }
                Ok(reservation.complete(worker))
            }
            Ok(Err(source)) => {
                self.inner.spawn_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "pool {}: spawning for `{key}` failed: {source}",
                    self.name()
                );
                Err(AcquireError::Spawn { key, source })
            }
            Err(_) => {
                self.inner.spawn_failures.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "pool {}: the factory panicked spawning for `{key}`",
                    self.name()
                );
                Err(AcquireError::SpawnPanicked { key })
            }
        }
    }

    fn try_acquire_or_reserve(&self, key: &str) -> Option<Next<W>> {
        if let Some(lease) = self.try_acquire(key) {
            return Some(Next::Leased(lease));
        }
        self.reserve(key).map(Next::Spawn)
    }

    /// A lease on a ready worker of `key` with spare capacity, without spawning or waiting.
    #[inline]
    pub fn try_acquire(&self, key: &str) -> Option<Lease<W>> {
        let limit = self.inner.max_in_flight_per_worker;
        let entry = self.inner.map.get(key)?;
        loop {
            // Fewest in flight; ties go to the most recently used, so surplus workers age out.
            let mut best: Option<(&Arc<WorkerCell<W>>, u32, u64)> = None;
            for cell in &entry.workers {
                let (in_flight, draining) = cell.load();
                if draining || in_flight >= limit {
                    continue;
                }
                let last_used = cell.last_used_nanos();
                let better = match best {
                    None => true,
                    Some((b, f, l)) => {
                        in_flight < f
                            || (in_flight == f
                                && (last_used > l || (last_used == l && cell.id > b.id)))
                    }
                };
                if better {
                    best = Some((cell, in_flight, last_used));
                }
            }
            let (cell, _, _) = best?;
            if cell.try_lease(limit) {
                return Some(Lease {
                    cell: Arc::clone(cell),
                });
            }
        }
    }

    /// Reserves a spawn slot for `key` if it has fewer than `max_workers_per_model` workers,
    /// counting those already starting.
    pub fn reserve(&self, key: &str) -> Option<SpawnReservation<W>> {
        let max = self.inner.max_workers_per_model;
        let key: Arc<str> = match self.inner.map.get_mut(key) {
            Some(mut entry) => {
                if entry.workers.len() + entry.starting >= max {
                    return None;
                }
                entry.starting += 1;
                Arc::clone(entry.key())
            }
            None => {
                let key: Arc<str> = Arc::from(key);
                let overrides = self
                    .inner
                    .overrides
                    .iter()
                    .position(|(k, _)| *k == key)
                    .map_or(0, |i| i + 1);
                let mut entry = self.inner.map.entry(Arc::clone(&key)).or_insert_with(|| {
                    let id = KeyId(self.inner.next_key_id.fetch_add(1, Ordering::Relaxed));
                    ModelEntry::new(id, overrides)
                });
                if entry.workers.len() + entry.starting >= max {
                    return None;
                }
                entry.starting += 1;
                Arc::clone(entry.key())
            }
        };
        Some(SpawnReservation {
            pool: self.clone(),
            key,
            done: false,
        })
    }

    /// Evicts `worker` of `key` if it is idle at this instant; `None` if it is busy or gone.
    /// The worker leaves the map, is shut down (outside any lock), and its bytes leave the
    /// accounting.
    pub fn evict(&self, key: &str, worker: WorkerId, reason: EvictionReason) -> Option<Eviction> {
        self.remove(key, worker, reason, Removal::IfIdle(None))
    }

    /// Evicts `worker` of `key` if it is idle at this instant and has finished exactly
    /// `releases` requests (its [`WorkerView::releases`] in the snapshot a policy decided from):
    /// a worker used since that snapshot stays.
    pub fn evict_unused_since(
        &self,
        key: &str,
        worker: WorkerId,
        releases: u64,
        reason: EvictionReason,
    ) -> Option<Eviction> {
        self.remove(key, worker, reason, Removal::IfIdle(Some(releases)))
    }

    fn remove(
        &self,
        key: &str,
        worker: WorkerId,
        reason: EvictionReason,
        how: Removal,
    ) -> Option<Eviction> {
        let now = self.inner.shared.clock.now();
        let (cell, workers_left, key) = {
            let mut entry = self.inner.map.get_mut(key)?;
            let position = entry.workers.iter().position(|c| c.id == worker)?;
            let cell = &entry.workers[position];
            match how {
                Removal::Dead => cell.force_drain(),
                Removal::IfIdle(releases) => {
                    if !cell.try_begin_drain(releases) {
                        return None;
                    }
                }
            }
            let cell = entry.workers.swap_remove(position);
            entry
                .arrivals
                .fetch_add(cell.arrivals_since_tick(), Ordering::AcqRel);
            entry.last_eviction = Some(now);
            (cell, entry.workers.len(), Arc::clone(entry.key()))
        };
        cell.worker.shutdown();
        self.inner
            .accounted_bytes
            .fetch_sub(cell.memory_bytes, Ordering::AcqRel);
        *self
            .inner
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.clone())
            .or_insert(0) += 1;
        self.inner.shared.wake_waiters();
        Some(Eviction {
            key,
            worker,
            reason,
            workers_left,
            freed_bytes: cell.memory_bytes,
        })
    }

    /// Live workers of `key`.
    pub fn workers(&self, key: &str) -> usize {
        self.inner.map.get(key).map_or(0, |e| e.workers.len())
    }

    /// Requests in flight on `key`'s workers.
    pub fn in_flight(&self, key: &str) -> u32 {
        self.inner
            .map
            .get(key)
            .map_or(0, |e| e.workers.iter().map(|c| c.load().0).sum())
    }

    /// Bytes accounted for live workers.
    pub fn accounted_bytes(&self) -> u64 {
        self.inner.accounted_bytes.load(Ordering::Acquire)
    }

    /// The pool's accounting.
    pub fn stats(&self) -> PoolStats {
        let workers = self
            .inner
            .map
            .iter()
            .map(|e| (e.key().to_string(), e.workers.len()))
            .collect();
        let evictions = self
            .inner
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        PoolStats {
            accounted_bytes: self.accounted_bytes(),
            workers,
            spawns: self.inner.spawns.load(Ordering::Relaxed),
            prewarm_spawns: self.inner.prewarm_spawns.load(Ordering::Relaxed),
            spawn_failures: self.inner.spawn_failures.load(Ordering::Relaxed),
            evictions,
        }
    }

    /// The sum of the footprints of the live workers, counted worker by worker (the pool's
    /// accounting must always equal it).
    pub fn live_worker_bytes(&self) -> u64 {
        self.inner
            .map
            .iter()
            .map(|e| e.workers.iter().map(|c| c.memory_bytes).sum::<u64>())
            .sum()
    }

    /// The pool as the scheduler sees it.
    pub fn managed(&self) -> Arc<dyn ManagedPool> {
        Arc::new(self.clone())
    }
}

/// What the scheduler needs from a pool, whatever its worker type. Implemented by [`Pool`].
pub trait ManagedPool: Send + Sync + 'static {
    /// The pool's name.
    fn name(&self) -> &str;

    /// Appends the pool's keys and ready workers to `buffer` as pool number `pool_index`, and
    /// records dead workers in `buffer.dead` instead of listing them.
    fn snapshot_into(&self, buffer: &mut SnapshotBuffer, pool_index: usize);

    /// Evicts the worker if it is idle at this instant and, when `releases` is given, has
    /// finished exactly that many requests (it was not used since the snapshot).
    fn evict(
        &self,
        key: &str,
        worker: WorkerId,
        reason: EvictionReason,
        releases: Option<u64>,
    ) -> Option<Eviction>;

    /// Starts up to `workers` spawns of `key` off the caller's thread, for a pre-warm, as far
    /// as the key's limit allows. Returns how many it started.
    fn prewarm(&self, key: &str, workers: usize) -> usize;

    /// Ready plus starting workers of `key`.
    fn ready_or_starting(&self, key: &str) -> usize;

    /// How long a worker of `key` is expected to take to load.
    fn cold_start_of(&self, key: &str) -> Duration;

    /// Removes a dead worker whatever its in-flight count.
    fn remove_dead(&self, key: &str, worker: WorkerId) -> Option<Eviction>;

    /// Bytes accounted for live workers.
    fn accounted_bytes(&self) -> u64;

    /// Live workers over all keys.
    fn total_workers(&self) -> usize;
}

impl<W: Worker> ManagedPool for Pool<W> {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn snapshot_into(&self, buffer: &mut SnapshotBuffer, pool_index: usize) {
        let inner = &*self.inner;
        let overrides_base = buffer.overrides.len();
        buffer
            .overrides
            .extend(inner.overrides.iter().map(|(_, o)| *o));
        buffer.pools.push(PoolView {
            name: Arc::clone(&inner.name),
            max_workers_per_model: inner.max_workers_per_model,
            accounted_bytes: inner.accounted_bytes.load(Ordering::Acquire),
        });
        let tick_stamps = !inner.shared.stamps_every_release;
        let mut now: Option<u64> = None;
        for entry in inner.map.iter() {
            let start = buffer.workers.len();
            let mut unstamped = false;
            let mut arrivals = entry.arrivals.swap(0, Ordering::AcqRel);
            let mut first = entry.first_arrival.swap(NO_TIME, Ordering::AcqRel);
            let mut in_flight = 0u64;
            for cell in &entry.workers {
                let state = cell.state();
                if state.draining() {
                    continue;
                }
                let (came, first_lease) = cell.take_arrivals(state);
                arrivals += came;
                first = first.min(first_lease.unwrap_or(NO_TIME));
                in_flight += u64::from(state.in_flight());
                if !cell.worker.is_alive() {
                    buffer.dead.push(DeadWorker {
                        pool: pool_index,
                        key: Arc::clone(entry.key()),
                        worker: cell.id,
                    });
                    continue;
                }
                unstamped |= tick_stamps && cell.released_since_stamp(state);
                buffer.workers.push(WorkerView {
                    id: cell.id,
                    releases: state.releases(),
                    in_flight: state.in_flight(),
                    last_used: Duration::from_nanos(cell.last_used_nanos()),
                    spawned_at: cell.spawned_at,
                    memory_bytes: cell.memory_bytes,
                });
            }
            if unstamped {
                stamp_released(&inner.shared, &entry.workers, &mut buffer.workers[start..]);
            }
            let was_idle = entry.idle_at_tick.swap(in_flight == 0, Ordering::AcqRel);
            let first_arrival = (was_idle && arrivals > 0).then(|| {
                if first == NO_TIME {
                    // Served at once by a ready worker under a clock that is not read on the
                    // request path: seen now, at most one tick late.
                    first = *now.get_or_insert_with(|| to_nanos(inner.shared.clock.now()));
                }
                Duration::from_nanos(first)
            });
            buffer.keys.push(KeyView {
                pool: pool_index,
                key: Arc::clone(entry.key()),
                id: entry.id,
                workers: start..buffer.workers.len(),
                starting: entry.starting,
                waiting: 0,
                arrivals,
                first_arrival,
                last_eviction: entry.last_eviction,
                overrides: if entry.overrides == 0 {
                    0
                } else {
                    overrides_base + entry.overrides - 1
                },
            });
        }
    }

    fn evict(
        &self,
        key: &str,
        worker: WorkerId,
        reason: EvictionReason,
        releases: Option<u64>,
    ) -> Option<Eviction> {
        self.remove(key, worker, reason, Removal::IfIdle(releases))
    }

    fn prewarm(&self, key: &str, workers: usize) -> usize {
        let mut started = 0;
        while started < workers {
            let Some(reservation) = self.reserve(key) else {
                break;
            };
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name("pool-prewarm".to_string())
                .spawn(move || {
                    // The new worker's first lease is dropped at once: it waits, idle, for
                    // the requests the pre-warm expects.
                    if let Ok(lease) = pool.spawn_into(reservation, true) {
                        drop(lease);
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    log::warn!(
                        "pool {}: cannot start a pre-warm of `{key}`: {e}",
                        self.name()
                    );
                    break;
                }
            }
        }
        started
    }

    fn ready_or_starting(&self, key: &str) -> usize {
        self.inner
            .map
            .get(key)
            .map_or(0, |e| e.workers.len() + e.starting)
    }

    fn cold_start_of(&self, key: &str) -> Duration {
        let configured = self
            .inner
            .model_cold_starts
            .iter()
            .find(|(k, _)| &**k == key)
            .map_or(self.inner.cold_start, |(_, d)| *d);
        if configured.is_zero() {
            Duration::from_nanos(self.inner.observed_load_nanos.load(Ordering::Relaxed))
        } else {
            configured
        }
    }

    fn remove_dead(&self, key: &str, worker: WorkerId) -> Option<Eviction> {
        self.remove(key, worker, EvictionReason::Dead, Removal::Dead)
    }

    fn accounted_bytes(&self) -> u64 {
        Pool::accounted_bytes(self)
    }

    fn total_workers(&self) -> usize {
        self.inner.map.iter().map(|e| e.workers.len()).sum()
    }
}

/// Tick stamping of one key: every worker of `cells` released since its last stamp gets a
/// `last_used` read from the clock after its state word was (so the stamp is never earlier than
/// the release), in the cell and in its view. `views` are the key's views, in the order of
/// `cells` with the draining and dead ones left out. One clock read per eight workers.
fn stamp_released<W>(shared: &PoolShared, cells: &[Arc<WorkerCell<W>>], views: &mut [WorkerView]) {
    const CHUNK: usize = 8;
    let mut views = views.iter_mut().peekable();
    for chunk in cells.chunks(CHUNK) {
        let mut released: [Option<(CellState, &mut WorkerView)>; CHUNK] = [const { None }; CHUNK];
        for (slot, cell) in released.iter_mut().zip(chunk) {
            let Some(view) = views.next_if(|v| v.id == cell.id) else {
                continue;
            };
            let state = cell.state();
            if cell.released_since_stamp(state) {
                *slot = Some((state, view));
            }
        }
        if released.iter().all(Option::is_none) {
            continue;
        }
        let at = to_nanos(shared.clock.now());
        for (slot, cell) in released.iter_mut().zip(chunk) {
            if let Some((state, view)) = slot.take() {
                view.last_used = Duration::from_nanos(cell.stamp(state, at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A manual clock that lets the tick stamp releases, like the real clocks do.
    struct TickStamped(ManualClock);

    impl Clock for TickStamped {
        fn now(&self) -> Duration {
            self.0.now()
        }

        fn stamps_every_release(&self) -> bool {
            false
        }
    }

    struct Unit;

    impl Worker for Unit {
        fn memory_bytes(&self) -> u64 {
            1
        }
    }

    fn last_used(pool: &Pool<Unit>, buffer: &mut SnapshotBuffer) -> Vec<u64> {
        buffer.clear();
        pool.snapshot_into(buffer, 0);
        buffer
            .workers
            .iter()
            .map(|w| w.last_used.as_secs())
            .collect()
    }

    #[test]
    fn the_tick_stamps_a_release_no_earlier_than_it_happened() {
        let clock = Arc::new(TickStamped(ManualClock::new()));
        let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Unit))
            .clock(clock.clone())
            .build();
        let mut buffer = SnapshotBuffer::default();
        clock.0.set(Duration::from_secs(10));
        let lease = pool.acquire("m").unwrap();
        assert_eq!(last_used(&pool, &mut buffer), [10], "spawned at 10");
        clock.0.set(Duration::from_secs(15));
        drop(lease); // at 15, without reading the clock
        clock.0.set(Duration::from_secs(20));
        assert_eq!(last_used(&pool, &mut buffer), [20], "seen released at 20");
        clock.0.set(Duration::from_secs(30));
        assert_eq!(last_used(&pool, &mut buffer), [20], "no release since");
        // Routing sees the stamp too: the tick-stamped worker is the most recently used.
        let lease = pool.try_acquire("m").unwrap();
        assert_eq!(lease.cell.last_used_nanos(), 20_000_000_000);
    }

    #[test]
    fn an_exact_clock_stamps_every_release_and_the_tick_leaves_it() {
        let clock = Arc::new(ManualClock::new());
        let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Unit))
            .clock(clock.clone())
            .build();
        let mut buffer = SnapshotBuffer::default();
        let lease = pool.acquire("m").unwrap();
        clock.set(Duration::from_secs(15));
        drop(lease);
        clock.set(Duration::from_secs(20));
        assert_eq!(last_used(&pool, &mut buffer), [15]);
    }
}
