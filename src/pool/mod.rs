//! The keyed worker pool: model key → workers, leased one request at a time.

mod cell;
mod error;
mod lease;
mod shared;
mod threaded;
mod worker;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use poolwarden_policies::{
    EvictionReason, KeyView, ModelOverrides, PoolView, WorkerId, WorkerView,
};

use crate::clock::{to_nanos, Clock, TscClock};
use crate::snapshot_buffer::{DeadWorker, SnapshotBuffer};
use cell::{CellState, WorkerCell};
use shared::PoolShared;

pub use error::AcquireError;
pub use lease::Lease;
pub use threaded::{ThreadedWorker, WorkerGone};
pub use worker::{SpawnError, Worker, WorkerFactory};

/// One key's workers, the value of the pool's map.
struct ModelEntry<W> {
    workers: Vec<Arc<WorkerCell<W>>>,
    /// Spawns reserved and not yet finished.
    starting: usize,
    last_eviction: Option<Duration>,
    /// Index into the pool's override table plus one; 0 for none.
    overrides: usize,
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
    /// Workers spawned.
    pub spawns: u64,
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
    next_id: AtomicU64,
    accounted_bytes: AtomicU64,
    spawns: AtomicU64,
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
}

impl<W: Worker> PoolBuilder<W> {
    /// Most workers per key. Default 4; at least 1.
    pub fn max_workers_per_model(mut self, n: usize) -> Self {
        self.max_workers_per_model = n.max(1);
        self
    }

    /// Requests a worker serves at once. Default 1; at least 1.
    pub fn max_in_flight_per_worker(mut self, n: u32) -> Self {
        self.max_in_flight_per_worker = n.max(1);
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
                next_id: AtomicU64::new(1),
                accounted_bytes: AtomicU64::new(0),
                spawns: AtomicU64::new(0),
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
        let next = match self.try_acquire_or_reserve(key) {
            Some(next) => next,
            None => {
                let timeout = self.inner.acquire_timeout;
                self.inner
                    .shared
                    .wait_for(timeout, || self.try_acquire_or_reserve(key))
                    .ok_or_else(|| AcquireError::Timeout {
                        key: key.to_string(),
                        waited: timeout,
                    })?
            }
        };
        match next {
            Next::Leased(lease) => Ok(lease),
            Next::Spawn(reservation) => self.spawn_into(reservation),
        }
    }

    /// Runs the factory for a reservation, with no lock held.
    fn spawn_into(&self, reservation: SpawnReservation<W>) -> Result<Lease<W>, AcquireError> {
        let key = reservation.key().to_string();
        let factory = &self.inner.factory;
        match catch_unwind(AssertUnwindSafe(|| factory.spawn(&key))) {
            Ok(Ok(worker)) => Ok(reservation.complete(worker)),
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
                let mut entry =
                    self.inner
                        .map
                        .entry(Arc::clone(&key))
                        .or_insert_with(|| ModelEntry {
                            workers: Vec::new(),
                            starting: 0,
                            last_eviction: None,
                            overrides,
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
        self.remove(key, worker, reason, false)
    }

    fn remove(
        &self,
        key: &str,
        worker: WorkerId,
        reason: EvictionReason,
        dead: bool,
    ) -> Option<Eviction> {
        let now = self.inner.shared.clock.now();
        let (cell, workers_left, key) = {
            let mut entry = self.inner.map.get_mut(key)?;
            let position = entry.workers.iter().position(|c| c.id == worker)?;
            let cell = &entry.workers[position];
            if dead {
                cell.force_drain();
            } else if !cell.try_begin_drain() {
                return None;
            }
            let cell = entry.workers.swap_remove(position);
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

    /// Evicts the worker if it is idle at this instant.
    fn evict(&self, key: &str, worker: WorkerId, reason: EvictionReason) -> Option<Eviction>;

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
        for entry in inner.map.iter() {
            let start = buffer.workers.len();
            let mut unstamped = false;
            for cell in &entry.workers {
                let state = cell.state();
                if state.draining() {
                    continue;
                }
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
                    in_flight: state.in_flight(),
                    last_used: Duration::from_nanos(cell.last_used_nanos()),
                    spawned_at: cell.spawned_at,
                    memory_bytes: cell.memory_bytes,
                });
            }
            if unstamped {
                stamp_released(&inner.shared, &entry.workers, &mut buffer.workers[start..]);
            }
            buffer.keys.push(KeyView {
                pool: pool_index,
                key: Arc::clone(entry.key()),
                workers: start..buffer.workers.len(),
                starting: entry.starting,
                last_eviction: entry.last_eviction,
                overrides: if entry.overrides == 0 {
                    0
                } else {
                    overrides_base + entry.overrides - 1
                },
            });
        }
    }

    fn evict(&self, key: &str, worker: WorkerId, reason: EvictionReason) -> Option<Eviction> {
        Pool::evict(self, key, worker, reason)
    }

    fn remove_dead(&self, key: &str, worker: WorkerId) -> Option<Eviction> {
        self.remove(key, worker, EvictionReason::Dead, true)
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
