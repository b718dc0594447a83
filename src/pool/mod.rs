//! The keyed worker pool: model key → workers, leased one request at a time.
//!
//! A request ([`Pool::acquire`], [`Pool::acquire_async`]) takes the ready worker of its key with
//! the most spare capacity. When none has room, it joins the key's waiting room: one queue per
//! key, first come first served, shared by threads and tasks. A release hands its capacity
//! straight to the oldest waiter of that key; a late arrival never overtakes a waiter, and no
//! other key's waiters are woken. The queue reserves as many spawns as it needs (each spawn in
//! progress counts for `max_in_flight_per_worker` waiters), within `max_workers_per_model`;
//! loads run off the caller (a sync factory on a thread of its own, an async one in the waiting
//! task), and a new worker serves the oldest waiters. This is the first-come-first-served order
//! the simulator assumes.

mod acquire;
mod admission;
mod cell;
mod entry;
mod error;
mod inner;
mod key_map;
mod lease;
mod load;
mod managed;
mod reaper;
mod shared;
mod threaded;
mod timer;
mod waiter;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolwarden_policies::{EvictionReason, ModelOverrides, WorkerId};

use crate::clock::{to_nanos, Clock, TscClock};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use entry::{KeyEntry, SpawnTicket};
use inner::{Counters, Enqueued, PoolInner, Removal, TickScratch};
use load::Factory;
use reaper::Reaper;
use shared::PoolShared;
use timer::Timer;
use waiter::{Outcome, Wake};

pub use acquire::Acquire;

/// The most requests a worker can serve at once (16,777,215: the width of the in-flight field
/// of a worker's state word).
pub const MAX_IN_FLIGHT_PER_WORKER: u32 = cell::MAX_IN_FLIGHT;
pub use error::AcquireError;
pub use inner::ADMISSION_LOG;
pub use lease::Lease;
pub use load::{block_on, AsyncWorkerFactory, BoxFuture, Spawner};
pub use managed::ManagedPool;
pub use threaded::{ThreadedWorker, WorkerGone};
pub use worker::{SpawnError, Worker, WorkerFactory};

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
    /// How long it had been idle (as its `last_used` said).
    pub idle_for: Duration,
}

/// Why [`Pool::try_reserve`] found no slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveRefusal {
    /// The key has `max_workers_per_model` workers, counting spawns in progress.
    AtLimit,
    /// The footprint does not fit the pool's budget, and idle victims would not make room (or
    /// spawns already wait for memory).
    NoMemory {
        /// The footprint.
        needed: u64,
        /// The budget's free bytes.
        free: u64,
    },
    /// The footprint is bigger than the budget's whole limit.
    TooBig {
        /// The footprint.
        needed: u64,
        /// The budget's limit.
        limit: u64,
    },
    /// The pool was closed ([`Pool::close`]).
    Closed,
}

/// One key's state at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelStats {
    /// Live workers.
    pub workers: usize,
    /// Requests in flight on them.
    pub in_flight: u64,
    /// Requests waiting for a worker.
    pub waiting: usize,
    /// Spawns in progress.
    pub starting: usize,
    /// Workers spawned for this key since it was last forgotten (a key is forgotten once it
    /// has had nothing for a tick).
    pub spawns: u64,
    /// Requests that waited for a spawn (served by a worker that became ready after they
    /// queued), since the key was last forgotten.
    pub cold_starts: u64,
}

/// The pool's accounting at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Bytes accounted for live workers.
    pub accounted_bytes: u64,
    /// Live workers per key (keys with none, but a spawn or a waiter, are listed with 0).
    pub workers: BTreeMap<String, usize>,
    /// Per key: workers, in flight, waiting, starting.
    pub models: BTreeMap<String, ModelStats>,
    /// Workers spawned (pre-warm spawns included).
    pub spawns: u64,
    /// Of those, spawned by a pre-warm rather than for a waiting request.
    pub prewarm_spawns: u64,
    /// Spawns that failed (error, panic, or past `spawn_timeout`).
    pub spawn_failures: u64,
    /// Of those, spawns past `spawn_timeout`.
    pub spawn_timeouts: u64,
    /// Requests that waited for a spawn: served by a worker that became ready after they
    /// queued (the simulator's definition), whether the load started for them or before.
    pub cold_starts: u64,
    /// Requests that gave up after `acquire_timeout`.
    pub acquire_timeouts: u64,
    /// Evictions by reason.
    pub evictions: BTreeMap<String, u64>,
}

impl PoolStats {
    /// Live workers over all keys.
    pub fn total_workers(&self) -> usize {
        self.workers.values().sum()
    }
}

/// A keyed pool of workers. Cheap to clone: clones share the same pool. When the last handle
/// goes (the scheduler holds one while the pool is registered), every worker is shut down; a
/// worker whose lease outlives the pool is shut down when that lease ends.
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
pub struct Pool<W: Worker> {
    inner: Arc<PoolInner<W>>,
}

impl<W: Worker> Clone for Pool<W> {
    fn clone(&self) -> Self {
        Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Builds a [`Pool`].
pub struct PoolBuilder<W: Worker> {
    name: String,
    factory: Factory<W>,
    spawner: Option<Spawner>,
    clock: Option<Arc<dyn Clock>>,
    max_workers_per_model: usize,
    max_in_flight_per_worker: u32,
    acquire_timeout: Duration,
    spawn_timeout: Duration,
    inline_shutdown: bool,
    overrides: Vec<(Arc<str>, ModelOverrides)>,
    cold_start: Duration,
    model_cold_starts: Vec<(Arc<str>, Duration)>,
    budget: Option<crate::budget::Budget>,
    memory: u64,
    model_memory: Vec<(Arc<str>, u64)>,
    footprint: Option<inner::Footprint>,
    min_workers: usize,
}

impl<W: Worker> PoolBuilder<W> {
    /// Admits this pool's spawns against `budget`, shared with other pools: a worker loads only
    /// once its footprint fits, making room by evicting idle workers of other keys if they
    /// would (see [`crate::budget`]). Default: no budget (every spawn is let in). Such a pool
    /// stamps `last_used` at every release whatever its clock (see
    /// [`crate::Clock::stamps_every_release`]), so that admission's LRU order is exact between
    /// ticks.
    pub fn budget(mut self, budget: &crate::budget::Budget) -> Self {
        self.budget = Some(budget.clone());
        self
    }

    /// The footprint of a worker, in bytes, for keys without their own: what admission
    /// reserves before the factory runs (the accounting switches to the worker's reported
    /// `memory_bytes` once it exists). Default 0: unknown, see [`PoolBuilder::footprint`].
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// The footprint of a worker of `key` (see [`PoolBuilder::memory`]).
    pub fn model_memory(mut self, key: &str, bytes: u64) -> Self {
        self.model_memory.retain(|(k, _)| &**k != key);
        self.model_memory.push((Arc::from(key), bytes));
        self
    }

    /// The footprint of keys with neither their own nor the pool's, computed from the key in
    /// code. Default: none (0 bytes).
    pub fn footprint(mut self, footprint: impl Fn(&str) -> u64 + Send + Sync + 'static) -> Self {
        self.footprint = Some(Box::new(footprint));
        self
    }

    /// The floor below which admission never evicts a key's workers, for keys without their
    /// own `min_workers` override (see [`PoolBuilder::model_overrides`]). Default 0.
    pub fn min_workers(mut self, n: usize) -> Self {
        self.min_workers = n;
        self
    }

    /// Most workers per key. Default 4; at least 1.
    pub fn max_workers_per_model(mut self, n: usize) -> Self {
        self.max_workers_per_model = n.max(1);
        self
    }

    /// Requests a worker serves at once. Default 1; at least 1, at most
    /// [`MAX_IN_FLIGHT_PER_WORKER`].
    pub fn max_in_flight_per_worker(mut self, n: u32) -> Self {
        self.max_in_flight_per_worker = n.clamp(1, cell::MAX_IN_FLIGHT);
        self
    }

    /// How long a request waits in its key's queue for a worker before it fails with
    /// [`AcquireError::Timeout`], in [`Pool::acquire`] and [`Pool::acquire_async`] alike (real
    /// time, under any runtime). Default 30 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long a load may take before it counts as failed: the spawn is no longer counted as
    /// starting (policies and the queue see it gone), the request that called for it fails with
    /// [`AcquireError::SpawnTimeout`], and a worker that arrives later is shut down. Checked at
    /// each tick of the scheduler, on the pool's clock. Default 10 minutes.
    pub fn spawn_timeout(mut self, timeout: Duration) -> Self {
        self.spawn_timeout = timeout;
        self
    }

    /// Runs `Worker::shutdown` on the thread that evicts, instead of the pool's reaper thread.
    /// Only for workers whose shutdown is instant (the simulator's). Default: off.
    pub fn inline_shutdown(mut self) -> Self {
        self.inline_shutdown = true;
        self
    }

    /// Where async loads run when the task that started one goes away before it ends, for
    /// example `|f| { tokio::spawn(f); }`. Without a spawner such a load finishes on a thread of
    /// the pool with a minimal executor: enough for runtime-agnostic futures, and for tokio
    /// futures whose timers and I/O were created while the task still polled them. With a
    /// spawner, every async load runs there from the start.
    pub fn spawner(mut self, spawner: impl Fn(BoxFuture<()>) + Send + Sync + 'static) -> Self {
        self.spawner = Some(Arc::new(spawner));
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

    /// The pool.
    pub fn build(self) -> Pool<W> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(TscClock::default()));
        let reaper = Reaper::new(format!("{}-reaper", self.name), self.inline_shutdown);
        let budget = self.budget;
        // Admission picks its LRU victims by `last_used` at any moment, not only after a tick.
        let exact = budget.is_some();
        Pool {
            inner: Arc::new_cyclic(|me| PoolInner {
                budget: budget.map(|budget| {
                    let member = budget.join(Arc::new(admission::MemberHandle(me.clone())));
                    (budget, member)
                }),
                memory: self.memory,
                model_memory: self.model_memory,
                footprint: self.footprint,
                min_workers: self.min_workers,
                admission_log: Mutex::new(std::collections::VecDeque::new()),
                timer: Timer::new(format!("{}-timer", self.name)),
                name: Arc::from(self.name),
                map: key_map::KeyMap::new(),
                factory: self.factory,
                spawner: self.spawner,
                shared: Arc::new(PoolShared::new(clock, reaper, exact)),
                max_workers_per_model: AtomicUsize::new(self.max_workers_per_model),
                max_in_flight_per_worker: self.max_in_flight_per_worker,
                acquire_timeout_nanos: AtomicU64::new(to_nanos(self.acquire_timeout)),
                spawn_timeout: self.spawn_timeout,
                overrides: self.overrides,
                cold_start: self.cold_start,
                model_cold_starts: self.model_cold_starts,
                observed_load_nanos: AtomicU64::new(0),
                next_worker_id: AtomicU64::new(1),
                next_key_id: AtomicU64::new(1),
                next_ticket: AtomicU64::new(1),
                accounted_bytes: AtomicU64::new(0),
                counters: Counters::default(),
                evictions: Mutex::new(BTreeMap::new()),
                closed: AtomicBool::new(false),
                tick_scratch: Mutex::new(TickScratch::default()),
            }),
        }
    }
}

/// A reserved spawn slot for a key, for callers that run loads and queue requests themselves
/// (the simulator): the pool counts the worker as starting, so concurrent acquires never spawn
/// past the limit. Complete it with the new worker, or drop it to give the slot back.
#[must_use = "dropping a reservation gives the slot back"]
pub struct SpawnReservation<W: Worker> {
    pool: Pool<W>,
    key: Arc<str>,
    ticket: u64,
    started: Duration,
    done: bool,
}

impl<W: Worker> SpawnReservation<W> {
    /// The key the slot is for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Adds `worker` to the pool and returns a lease on it for the caller that reserved it.
    ///
    /// If the slot is gone (the pool was closed, or the reservation was held past
    /// `spawn_timeout` and counted as a failed spawn), the worker does not join the pool: the
    /// lease still serves the caller's request, and the worker is shut down when it ends.
    pub fn complete(self, worker: W) -> Lease<W> {
        let cell = self.add(worker, 1);
        Lease { cell }
    }

    /// Adds `worker` to the pool idle, with no request on it (a pre-warm): no arrival is
    /// counted for it. If the slot is gone (see [`SpawnReservation::complete`]), the worker is
    /// shut down instead.
    pub fn complete_idle(self, worker: W) {
        self.add(worker, 0);
    }

    fn add(mut self, worker: W, in_flight: u32) -> Arc<cell::WorkerCell<W>> {
        self.done = true;
        let inner = &self.pool.inner;
        let took = inner.now().saturating_sub(self.started);
        let ticket = self.ticket;
        let mut worker = Some(worker);
        let cell = inner.map.write(&self.key, |entry| {
            let position = entry.spawns.iter().position(|t| t.id == ticket)?;
            let ticket = entry.spawns.remove(position);
            let worker = worker.take()?;
            Some(inner.add_worker(entry, worker, &ticket, took, in_flight))
        });
        if let Some((budget, _)) = &inner.budget {
            budget.notify();
        }
        match (cell.flatten(), worker) {
            (Some(cell), _) => cell,
            (None, None) => unreachable!("the worker joined the pool"),
            (None, Some(worker)) => {
                log::warn!(
                    "pool {}: a reserved spawn of `{}` completed after the pool closed or its spawn timed out; the worker stays out of the pool and is shut down {}",
                    inner.name,
                    self.key,
                    if in_flight == 0 { "now" } else { "when its lease ends" }
                );
                inner.detached_worker(&self.key, worker, in_flight)
            }
        }
    }
}

impl<W: Worker> Drop for SpawnReservation<W> {
    fn drop(&mut self) {
        if !self.done {
            let ticket = self.ticket;
            let mut reserved = 0;
            self.pool.inner.map.write(&self.key, |entry| {
                if let Some(position) = entry.spawns.iter().position(|t| t.id == ticket) {
                    reserved = entry.spawns.remove(position).reserved_bytes;
                }
            });
            if let Some((budget, _)) = &self.pool.inner.budget {
                budget.give_back(reserved);
            }
            self.pool.inner.pump_key(&self.key);
        }
    }
}

impl<W: Worker> Pool<W> {
    /// A builder for a pool named `name` whose workers `factory` creates (each load runs on a
    /// thread of its own).
    pub fn builder(name: &str, factory: impl WorkerFactory<W>) -> PoolBuilder<W> {
        Self::builder_with(name, Factory::Sync(Box::new(factory)))
    }

    /// A builder for a pool named `name` whose workers the async `factory` creates: no runtime
    /// thread is blocked while a model loads (see [`AsyncWorkerFactory`]).
    pub fn builder_async(name: &str, factory: impl AsyncWorkerFactory<W>) -> PoolBuilder<W> {
        Self::builder_with(name, Factory::Async(Box::new(factory)))
    }

    fn builder_with(name: &str, factory: Factory<W>) -> PoolBuilder<W> {
        PoolBuilder {
            name: name.to_string(),
            factory,
            spawner: None,
            clock: None,
            max_workers_per_model: 4,
            max_in_flight_per_worker: 1,
            acquire_timeout: Duration::from_secs(30),
            spawn_timeout: Duration::from_secs(600),
            inline_shutdown: false,
            overrides: Vec::new(),
            cold_start: Duration::ZERO,
            model_cold_starts: Vec::new(),
            budget: None,
            memory: 0,
            model_memory: Vec::new(),
            footprint: None,
            min_workers: 0,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Leases a worker for `key`, blocking this thread while it waits: the ready worker with
    /// the fewest requests in flight (ties: the most recently used, as its `last_used` says;
    /// then the highest id) if nobody is waiting, else a place in the key's
    /// first-come-first-served queue, where a released or newly spawned worker is handed to the
    /// oldest waiter. Fails after `acquire_timeout`, when the load the request called for
    /// fails, or when the pool is closed. Do not call it on an async runtime's thread: use
    /// [`Pool::acquire_async`] there.
    pub fn acquire(&self, key: &str) -> Result<Lease<W>, AcquireError> {
        if let Some(lease) = self.try_acquire(key) {
            return Ok(lease);
        }
        let timeout = self.inner.acquire_timeout();
        let queued_at = Instant::now();
        let deadline = queued_at.checked_add(timeout);
        let waiter = match self
            .inner
            .enqueue(key, Wake::Thread(crate::sync::current_thread()))?
        {
            Enqueued::Served(lease) => return Ok(lease),
            Enqueued::Waiting { waiter, key, after } => {
                self.inner.settle(&key, after);
                waiter
            }
        };
        loop {
            if let Some(outcome) = waiter.take() {
                crate::metrics::acquire_waited(&self.inner.name, queued_at.elapsed());
                return finish(&self.inner, outcome);
            }
            let now = Instant::now();
            match deadline {
                Some(deadline) if now >= deadline => {
                    let gave_up = self.inner.give_up(key, &waiter, true);
                    return match gave_up.outcome {
                        Some(outcome) => finish(&self.inner, outcome),
                        None => Err(self.inner.timeout_error(key, timeout, gave_up.for_memory)),
                    };
                }
                Some(deadline) => park_timeout(deadline - now),
                None => crate::sync::park(),
            }
        }
    }

    /// Leases a worker for `key` without blocking a thread: the same queue, order and timeout
    /// as [`Pool::acquire`], as a future that works under any runtime (tokio, smol,
    /// `futures::executor`). Dropping it at any point leaves no trace: its place in the queue
    /// is gone, a worker handed to it at that moment goes to the next waiter (or back to idle),
    /// and a load it started still completes and serves the next waiter (or becomes an idle
    /// worker).
    pub fn acquire_async<'a>(&'a self, key: &'a str) -> Acquire<'a, W> {
        Acquire::new(self, key)
    }

    /// A lease on a ready worker of `key` with spare capacity, without spawning or waiting;
    /// `None` also when requests of the key are waiting (they go first).
    #[inline]
    pub fn try_acquire(&self, key: &str) -> Option<Lease<W>> {
        let limit = self.inner.max_in_flight_per_worker;
        self.inner
            .map
            .read(key, |entry| {
                if entry.waiters.is_empty() {
                    entry.lease_ready(limit)
                } else {
                    None
                }
            })
            .flatten()
    }

    /// Reserves a spawn slot for `key` if it has fewer than `max_workers_per_model` workers,
    /// counting those already starting, and (with a budget) its footprint fits now or once
    /// idle victims are evicted; for callers that run the load themselves (see
    /// [`SpawnReservation`]). [`Pool::try_reserve`] says why when it cannot.
    pub fn reserve(&self, key: &str) -> Option<SpawnReservation<W>> {
        self.try_reserve(key).ok()
    }

    /// [`Pool::reserve`], with the reason when there is no slot. With a budget, evictions made
    /// to make room are listed by [`Pool::take_admission_evictions`].
    pub fn try_reserve(&self, key: &str) -> Result<SpawnReservation<W>, ReserveRefusal> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ReserveRefusal::Closed);
        }
        let max = inner.max_workers_per_model.load(Ordering::Relaxed);
        let at_limit = inner
            .map
            .read(key, |e| e.workers.len() + e.spawns.len() >= max)
            .unwrap_or(false);
        if at_limit {
            return Err(ReserveRefusal::AtLimit);
        }
        let mut reserved_bytes = 0;
        if let Some((budget, member)) = &inner.budget {
            let needed = inner.footprint_of(key);
            if needed > budget.limit() {
                return Err(ReserveRefusal::TooBig {
                    needed,
                    limit: budget.limit(),
                });
            }
            if !budget.admit_now(*member, key, needed) {
                return Err(ReserveRefusal::NoMemory {
                    needed,
                    free: budget.free(),
                });
            }
            reserved_bytes = needed;
        }
        let started = inner.now();
        let (key, ticket) = inner.map.write_or_insert(
            key,
            |name| {
                let id =
                    poolwarden_policies::KeyId(inner.next_key_id.fetch_add(1, Ordering::Relaxed));
                let overrides = inner
                    .overrides
                    .iter()
                    .position(|(k, _)| *k == name)
                    .map_or(0, |i| i + 1);
                KeyEntry::new(name, id, overrides)
            },
            |entry| {
                if inner.closed.load(Ordering::Acquire)
                    || entry.workers.len() + entry.spawns.len() >= max
                {
                    return (Arc::clone(&entry.name), None);
                }
                let id = inner.next_ticket.fetch_add(1, Ordering::Relaxed);
                entry.spawns.push(SpawnTicket {
                    id,
                    started,
                    prewarm: false,
                    trigger: None,
                    admitted: true,
                    reserved_bytes,
                });
                (Arc::clone(&entry.name), Some(id))
            },
        );
        match ticket {
            Some(ticket) => Ok(SpawnReservation {
                pool: self.clone(),
                key,
                ticket,
                started,
                done: false,
            }),
            None => {
                // Filled up, or closed, meanwhile.
                if let Some((budget, _)) = &inner.budget {
                    budget.give_back(reserved_bytes);
                }
                if inner.closed.load(Ordering::Acquire) {
                    Err(ReserveRefusal::Closed)
                } else {
                    Err(ReserveRefusal::AtLimit)
                }
            }
        }
    }

    /// The evictions admission made to make room since the last call, with their times (the
    /// scheduler publishes them at its tick; the simulator records them).
    pub fn take_admission_evictions(&self) -> Vec<(Duration, Eviction)> {
        self.inner
            .admission_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// The memory budget the pool's spawns are admitted against, if any.
    pub fn budget(&self) -> Option<&crate::budget::Budget> {
        self.inner.budget.as_ref().map(|(b, _)| b)
    }

    /// Evicts `worker` of `key` if it is idle at this instant; `None` if it is busy or gone.
    /// The worker leaves the map and its bytes leave the accounting now; it is shut down on the
    /// pool's reaper thread (never on the caller's).
    pub fn evict(&self, key: &str, worker: WorkerId, reason: EvictionReason) -> Option<Eviction> {
        self.inner
            .remove(key, worker, reason, Removal::IfIdle(None))
    }

    /// Evicts `worker` of `key` if it is idle at this instant and has finished exactly
    /// `releases` requests (its `WorkerView::releases` in the snapshot a policy decided from):
    /// a worker used since that snapshot stays.
    pub fn evict_unused_since(
        &self,
        key: &str,
        worker: WorkerId,
        releases: u64,
        reason: EvictionReason,
    ) -> Option<Eviction> {
        self.inner
            .remove(key, worker, reason, Removal::IfIdle(Some(releases)))
    }

    /// For callers that queue requests themselves (the simulator): records that a request for
    /// `key` arrived now and found no ready worker, so that policies see when it arrived
    /// (`KeyView::first_arrival`). The key must be known to the pool (a worker, or a reservation
    /// from [`Pool::reserve`]); otherwise this does nothing. The request is counted in
    /// `KeyView::arrivals` when it is served (its lease), or by [`Pool::record_abandoned`] if it
    /// gives up.
    pub fn record_arrival(&self, key: &str) {
        let now = to_nanos(self.inner.now());
        self.inner.note_slow_arrival(key, now, false);
    }

    /// For callers that queue requests themselves: records that a request for `key` gave up
    /// without a lease (timed out, rejected), so that it still counts as an arrival.
    pub fn record_abandoned(&self, key: &str) {
        self.inner.note_slow_arrival(key, entry::NO_TIME, true);
    }

    /// Changes `max_workers_per_model` from now on. Lowering it evicts nothing (policies scale
    /// down idle workers as usual); raising it lets waiting requests spawn at once.
    pub fn set_max_workers_per_model(&self, n: usize) {
        self.inner
            .max_workers_per_model
            .store(n.max(1), Ordering::Relaxed);
        let mut keys = Vec::new();
        self.inner.map.for_each(|e| {
            if !e.waiters.is_empty() {
                keys.push(Arc::clone(&e.name));
            }
        });
        for key in keys {
            self.inner.pump_key(&key);
        }
    }

    /// Changes `acquire_timeout` for requests that start from now on.
    pub fn set_acquire_timeout(&self, timeout: Duration) {
        self.inner
            .acquire_timeout_nanos
            .store(to_nanos(timeout), Ordering::Relaxed);
    }

    /// Closes the pool: requests from now on, and those waiting, fail with
    /// [`AcquireError::Closed`]; every worker leaves the pool; this waits until every request in
    /// flight has ended and every worker is shut down. Loads still running are shut down when
    /// they finish, without being waited for. Dropping the last handle does the same without
    /// waiting.
    pub fn close(&self) {
        let cells = self.inner.shut_everything();
        // Each worker's shutdown is handed to the reaper by whoever ends its last request, a
        // moment after that request's in-flight count went to zero: wait for the shutdown
        // itself. Workers evicted just before are counted by the reaper (promised or queued).
        for cell in &cells {
            while !cell.shutdown_finished() {
                park_timeout(Duration::from_millis(1));
            }
        }
        self.inner.shared.reaper.wait_idle(None);
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Live workers of `key`.
    pub fn workers(&self, key: &str) -> usize {
        self.inner.map.read(key, |e| e.workers.len()).unwrap_or(0)
    }

    /// Requests in flight on `key`'s workers.
    pub fn in_flight(&self, key: &str) -> u32 {
        self.inner
            .map
            .read(key, |e| e.workers.iter().map(|c| c.load().0).sum())
            .unwrap_or(0)
    }

    /// Requests of `key` waiting for a worker.
    pub fn waiting(&self, key: &str) -> usize {
        self.inner.map.read(key, |e| e.waiters.len()).unwrap_or(0)
    }

    /// Spawns of `key` in progress.
    pub fn starting(&self, key: &str) -> usize {
        self.inner.map.read(key, |e| e.spawns.len()).unwrap_or(0)
    }

    /// Keys the pool knows (with a worker, a spawn or a waiter, or seen so since the last tick).
    pub fn keys(&self) -> usize {
        self.inner.map.len()
    }

    /// Bytes accounted for live workers.
    pub fn accounted_bytes(&self) -> u64 {
        self.inner.accounted_bytes.load(Ordering::Acquire)
    }

    /// The pool's accounting.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let mut workers = BTreeMap::new();
        let mut models = BTreeMap::new();
        inner.map.for_each(|e| {
            workers.insert(e.name.to_string(), e.workers.len());
            models.insert(
                e.name.to_string(),
                ModelStats {
                    workers: e.workers.len(),
                    in_flight: e.workers.iter().map(|c| u64::from(c.load().0)).sum(),
                    waiting: e.waiters.len(),
                    starting: e.spawns.len(),
                    spawns: e.counters.spawns.load(Ordering::Relaxed),
                    cold_starts: e.counters.cold_starts.load(Ordering::Relaxed),
                },
            );
        });
        let evictions = inner
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(r, n)| (r.to_string(), *n))
            .collect();
        let c = &inner.counters;
        PoolStats {
            accounted_bytes: self.accounted_bytes(),
            workers,
            models,
            spawns: c.spawns.load(Ordering::Relaxed),
            prewarm_spawns: c.prewarm_spawns.load(Ordering::Relaxed),
            spawn_failures: c.spawn_failures.load(Ordering::Relaxed),
            spawn_timeouts: c.spawn_timeouts.load(Ordering::Relaxed),
            cold_starts: c.cold_starts.load(Ordering::Relaxed),
            acquire_timeouts: c.acquire_timeouts.load(Ordering::Relaxed),
            evictions,
        }
    }

    /// The sum of the footprints of the live workers, counted worker by worker (the pool's
    /// accounting must always equal it).
    pub fn live_worker_bytes(&self) -> u64 {
        let mut total = 0;
        self.inner
            .map
            .for_each(|e| total += e.workers.iter().map(|c| c.memory_bytes).sum::<u64>());
        total
    }

    /// The pool as the scheduler sees it.
    pub fn managed(&self) -> Arc<dyn ManagedPool> {
        Arc::new(self.clone())
    }
}

/// Turns a waiter's outcome into the caller's result.
fn finish<W: Worker>(
    _inner: &Arc<PoolInner<W>>,
    outcome: Outcome<W>,
) -> Result<Lease<W>, AcquireError> {
    match outcome {
        Outcome::Granted { lease, .. } => Ok(lease),
        Outcome::Failed(error) => Err(error),
    }
}

#[cfg(not(loom))]
fn park_timeout(timeout: Duration) {
    std::thread::park_timeout(timeout);
}

#[cfg(loom)]
fn park_timeout(_timeout: Duration) {
    crate::sync::park();
}
