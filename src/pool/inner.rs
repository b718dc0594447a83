//! The pool's state and the protocol every request, load and eviction goes through.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use poolwarden_policies::{EvictionReason, KeyId, ModelOverrides, WorkerId};

use super::cell::{CellState, WorkerCell, BUDGET_WAITERS};
use super::entry::{KeyEntry, Limits, SpawnTicket, NO_TIME};
use super::error::AcquireError;
use super::key_map::KeyMap;
use super::lease::Lease;
use super::load::{run_sync, Factory, LoadResult, LoadTask, Spawner};
use super::shared::PoolShared;
use super::timer::Timer;
use super::waiter::{Outcome, Waiter, Wake};
use super::worker::Worker;
use super::Eviction;
use crate::budget::{Budget, Request};
use crate::clock::to_nanos;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};

/// A footprint computed from the key, in bytes.
pub(crate) type Footprint = Box<dyn Fn(&str) -> u64 + Send + Sync>;

/// Pool-wide counters.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) spawns: AtomicU64,
    pub(crate) prewarm_spawns: AtomicU64,
    pub(crate) spawn_failures: AtomicU64,
    pub(crate) spawn_timeouts: AtomicU64,
    pub(crate) cold_starts: AtomicU64,
    pub(crate) acquire_timeouts: AtomicU64,
}

/// What the tick leaves for its end: keys seen vacant, spawns seen past their deadline.
#[derive(Default)]
pub(crate) struct TickScratch {
    pub(crate) vacant: Vec<Arc<str>>,
    pub(crate) expired: Vec<(Arc<str>, u64)>,
}

/// Everything a pool is; [`super::Pool`] is a handle on it.
pub(crate) struct PoolInner<W: Worker> {
    pub(crate) name: Arc<str>,
    pub(crate) map: KeyMap<KeyEntry<W>>,
    pub(crate) factory: Factory<W>,
    pub(crate) spawner: Option<Spawner>,
    pub(crate) shared: Arc<PoolShared>,
    pub(crate) timer: Timer,
    pub(crate) max_workers_per_model: AtomicUsize,
    pub(crate) max_in_flight_per_worker: u32,
    pub(crate) acquire_timeout_nanos: AtomicU64,
    pub(crate) spawn_timeout: Duration,
    pub(crate) overrides: Vec<(Arc<str>, ModelOverrides)>,
    pub(crate) cold_start: Duration,
    pub(crate) model_cold_starts: Vec<(Arc<str>, Duration)>,
    /// Mean observed load time, nanoseconds (exponentially weighted; 0 until the first spawn).
    pub(crate) observed_load_nanos: AtomicU64,
    pub(crate) next_worker_id: AtomicU64,
    pub(crate) next_key_id: AtomicU64,
    /// Spawn tickets, and the spawn number a waiter records when it queues.
    pub(crate) next_ticket: AtomicU64,
    pub(crate) accounted_bytes: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) evictions: Mutex<BTreeMap<EvictionReason, u64>>,
    pub(crate) closed: AtomicBool,
    pub(crate) tick_scratch: Mutex<TickScratch>,
    /// The memory budget the pool's spawns are admitted against, and the pool's registration
    /// number in it.
    pub(crate) budget: Option<(Budget, usize)>,
    /// Footprints known before a load: per model, else the pool's, else `footprint(key)`.
    pub(crate) memory: u64,
    pub(crate) model_memory: Vec<(Arc<str>, u64)>,
    pub(crate) footprint: Option<Footprint>,
    /// The floor below which admission never takes a key's workers, for keys without their own
    /// `min_workers` override.
    pub(crate) min_workers: usize,
    /// Evictions made by admission (between ticks), for the scheduler to publish: the most
    /// recent [`ADMISSION_LOG`] with their times.
    pub(crate) admission_log: Mutex<std::collections::VecDeque<(Duration, Eviction)>>,
}

/// How many admission evictions a pool keeps for the scheduler to publish at its next tick (older
/// ones are dropped).
pub const ADMISSION_LOG: usize = 4096;

/// Where a request stands after joining its key's waiting room.
pub(crate) enum Enqueued<W: Worker> {
    /// Served at once (nobody was waiting and a worker had room).
    Served(Lease<W>),
    /// Queued; what the queue's pump left (spawns to start) goes to [`PoolInner::launch`].
    Waiting {
        waiter: Arc<Waiter<W>>,
        key: Arc<str>,
        after: AfterLock<W>,
    },
}

/// Wakes, leases and spawns to hand out once the shard lock is released.
pub(crate) struct AfterLock<W: Worker> {
    pub(crate) wakes: Vec<Wake>,
    pub(crate) leftovers: Vec<Outcome<W>>,
    /// New spawn tickets: to start, or (with a budget) to ask admission for.
    pub(crate) tickets: Vec<u64>,
    /// Spawn tickets still waiting for memory that the queue no longer needs.
    pub(crate) withdrawn: Vec<SpawnTicket<W>>,
    /// Bytes of reservations to give back to the budget.
    pub(crate) give_back: u64,
}

impl<W: Worker> AfterLock<W> {
    pub(crate) fn new() -> Self {
        AfterLock {
            wakes: Vec::new(),
            leftovers: Vec::new(),
            tickets: Vec::new(),
            withdrawn: Vec::new(),
            give_back: 0,
        }
    }
}

impl<W: Worker> PoolInner<W> {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_in_flight: self.max_in_flight_per_worker,
            max_workers: self.max_workers_per_model.load(Ordering::Relaxed),
            budgeted: self.budget.is_some(),
        }
    }

    /// The footprint of a worker of `key`, known before it loads.
    pub(crate) fn footprint_of(&self, key: &str) -> u64 {
        if let Some((_, bytes)) = self.model_memory.iter().find(|(k, _)| &**k == key) {
            return *bytes;
        }
        if self.memory > 0 {
            return self.memory;
        }
        self.footprint.as_ref().map_or(0, |f| f(key))
    }

    /// The floor admission leaves `entry`'s workers at.
    pub(crate) fn min_workers_of(&self, entry: &KeyEntry<W>) -> usize {
        entry
            .overrides
            .checked_sub(1)
            .and_then(|i| self.overrides.get(i))
            .and_then(|(_, o)| o.min_workers)
            .unwrap_or(self.min_workers)
    }

    pub(crate) fn now(&self) -> Duration {
        self.shared.clock.now()
    }

    pub(crate) fn acquire_timeout(&self) -> Duration {
        Duration::from_nanos(self.acquire_timeout_nanos.load(Ordering::Relaxed))
    }

    fn overrides_index(&self, key: &str) -> usize {
        self.overrides
            .iter()
            .position(|(k, _)| &**k == key)
            .map_or(0, |i| i + 1)
    }

    /// A new entry for `name`.
    fn new_entry(&self, name: Arc<str>) -> KeyEntry<W> {
        let id = KeyId(self.next_key_id.fetch_add(1, Ordering::Relaxed));
        let overrides = self.overrides_index(&name);
        KeyEntry::new(name, id, overrides)
    }

    /// Serves the key's waiting room after a change (see [`KeyEntry::pump`]).
    fn pump(&self, entry: &mut KeyEntry<W>, after: &mut AfterLock<W>) {
        let withdrawn_before = after.withdrawn.len();
        let (started, cold_starts) = entry.pump(
            &self.limits(),
            &self.next_ticket,
            self.now(),
            &mut after.wakes,
            &mut after.leftovers,
            &mut after.withdrawn,
        );
        let before = entry.spawns.len() - started;
        after.give_back += after.withdrawn[withdrawn_before..]
            .iter()
            .map(|t| t.reserved_bytes)
            .sum::<u64>();
        if cold_starts > 0 {
            self.counters
                .cold_starts
                .fetch_add(cold_starts, Ordering::Relaxed);
            crate::metrics::cold_starts(&self.name, &entry.name, cold_starts);
        }
        after
            .tickets
            .extend(entry.spawns[before..before + started].iter().map(|t| t.id));
    }

    /// Runs what a locked section left: wakes, stray leases, and loads to start (with a
    /// budget: admission to ask for, and withdrawn spawns to forget).
    pub(crate) fn settle(self: &Arc<Self>, key: &Arc<str>, after: AfterLock<W>) {
        if let Some(task) = self.launch(key, after, false) {
            task.detach(&self.thread_name("load"), self.spawner.as_ref());
        }
    }

    /// [`PoolInner::settle`], returning the first async load for the caller to drive when
    /// `adopt` (and the pool has no budget: admitted loads start wherever admission happens).
    pub(crate) fn launch(
        self: &Arc<Self>,
        key: &Arc<str>,
        after: AfterLock<W>,
        adopt: bool,
    ) -> Option<LoadTask<W>> {
        let mut after = after;
        loop {
            std::mem::take(&mut after.wakes)
                .into_iter()
                .for_each(Wake::wake);
            drop(std::mem::take(&mut after.leftovers));
            let Some((budget, member)) = &self.budget else {
                return if after.tickets.is_empty() {
                    None
                } else {
                    self.start_loads(key, &after.tickets, adopt)
                };
            };
            for ticket in std::mem::take(&mut after.withdrawn) {
                if !ticket.admitted {
                    budget.withdraw(*member, key, ticket.id);
                }
            }
            budget.give_back(std::mem::take(&mut after.give_back));
            let tickets = std::mem::take(&mut after.tickets);
            let bytes = self.footprint_of(key);
            let mut refused = AfterLock::new();
            for ticket in tickets {
                if let Request::TooBig { free } =
                    budget.request(*member, Arc::clone(key), ticket, bytes)
                {
                    self.refuse_spawn(key, ticket, bytes, free, &mut refused);
                }
            }
            if refused.wakes.is_empty()
                && refused.tickets.is_empty()
                && refused.withdrawn.is_empty()
            {
                return None;
            }
            after = refused;
        }
    }

    /// A spawn bigger than the budget's whole limit: it fails at once, and so does the request
    /// that called for it.
    fn refuse_spawn(
        self: &Arc<Self>,
        key: &Arc<str>,
        ticket: u64,
        needed: u64,
        free: u64,
        after: &mut AfterLock<W>,
    ) {
        let Some((budget, _)) = &self.budget else {
            return;
        };
        let mut failed = None;
        self.map.write(key, |entry| {
            let Some(position) = entry.spawns.iter().position(|t| t.id == ticket) else {
                return;
            };
            let ticket = entry.spawns.remove(position);
            if let Some(trigger) = ticket.trigger.as_ref().and_then(|t| t.upgrade()) {
                if entry.remove_waiter(&trigger) {
                    entry.arrivals.fetch_add(1, Ordering::AcqRel);
                    failed = Some(trigger);
                }
            }
            self.pump(entry, after);
        });
        log::warn!(
            "pool {}: a worker of `{key}` needs {}, more than budget `{}` holds ({}); refused",
            self.name,
            poolwarden_policies::ByteSize(needed),
            budget.name(),
            poolwarden_policies::ByteSize(budget.limit())
        );
        if let Some(waiter) = failed {
            let error = AcquireError::NoMemory {
                key: key.to_string(),
                needed,
                budget: budget.name().to_string(),
                free,
            };
            if let Ok(wake) = waiter.finish(Outcome::Failed(error)) {
                after.wakes.push(wake);
            }
        }
    }

    /// The error for a request of `key` that waited `waited` in vain: out of memory if a spawn
    /// of its key was still waiting for the budget, else a plain timeout.
    pub(crate) fn timeout_error(
        &self,
        key: &str,
        waited: Duration,
        for_memory: bool,
    ) -> AcquireError {
        match (&self.budget, for_memory) {
            (Some((budget, _)), true) => AcquireError::NoMemory {
                key: key.to_string(),
                needed: self.footprint_of(key),
                budget: budget.name().to_string(),
                free: budget.free(),
            },
            _ => AcquireError::Timeout {
                key: key.to_string(),
                waited,
            },
        }
    }

    pub(crate) fn thread_name(&self, what: &str) -> String {
        format!("{}-{what}", self.name)
    }

    /// Joins `key`'s waiting room with a request woken by `wake`: served at once if nobody
    /// waits and a worker has room, else queued (reserving the spawns the queue now needs).
    pub(crate) fn enqueue(&self, key: &str, wake: Wake) -> Result<Enqueued<W>, AcquireError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(AcquireError::Closed {
                pool: self.name.to_string(),
            });
        }
        let arrived = to_nanos(self.now());
        let mut after = AfterLock::new();
        let outcome = self.map.write_or_insert(
            key,
            |name| self.new_entry(name),
            |entry| {
                // Checked again under the key's lock: `close()` sets the flag before it empties
                // each key under the same lock, so a request that gets here after close() went
                // by sees it, and one that got here before is failed by close().
                if self.closed.load(Ordering::Acquire) {
                    return None;
                }
                entry.first_arrival.fetch_min(arrived, Ordering::AcqRel);
                if entry.waiters.is_empty() {
                    if let Some(lease) = entry.lease_ready(self.max_in_flight_per_worker) {
                        return Some(Enqueued::Served(lease));
                    }
                }
                let waiter = Waiter::new(wake, self.next_ticket.load(Ordering::Relaxed));
                entry.waiters.push_back(Arc::clone(&waiter));
                self.pump(entry, &mut after);
                Some(Enqueued::Waiting {
                    waiter,
                    key: Arc::clone(&entry.name),
                    after: AfterLock::new(),
                })
            },
        );
        Ok(match outcome {
            None => {
                return Err(AcquireError::Closed {
                    pool: self.name.to_string(),
                })
            }
            Some(Enqueued::Waiting { waiter, key, .. }) => Enqueued::Waiting { waiter, key, after },
            Some(served) => served,
        })
    }

    /// Takes `waiter` out of `key`'s queue (it timed out or its future was dropped) and counts
    /// it as a request that gave up. Returns its outcome if it was granted or failed just
    /// before.
    pub(crate) fn give_up(
        self: &Arc<Self>,
        key: &str,
        waiter: &Arc<Waiter<W>>,
        timed_out: bool,
    ) -> GiveUp<W> {
        let mut after = AfterLock::new();
        let mut name = None;
        let mut for_memory = false;
        self.map.write(key, |entry| {
            for_memory = entry.waits_for_memory();
            if entry.remove_waiter(waiter) {
                entry.arrivals.fetch_add(1, Ordering::AcqRel);
                if timed_out {
                    entry
                        .counters
                        .acquire_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                }
                self.pump(entry, &mut after);
            }
            name = Some(Arc::clone(&entry.name));
        });
        if let Some(name) = name {
            self.settle(&name, after);
        }
        let outcome = waiter.take();
        if timed_out && outcome.is_none() {
            self.counters
                .acquire_timeouts
                .fetch_add(1, Ordering::Relaxed);
            crate::metrics::acquire_timeout(&self.name, key);
        }
        GiveUp {
            outcome,
            for_memory,
        }
    }

    /// Serves `key`'s waiting room (a worker freed capacity, a spawn ended, a limit changed).
    pub(crate) fn pump_key(self: &Arc<Self>, key: &str) {
        let mut after = AfterLock::new();
        let name = self.map.write(key, |entry| {
            self.pump(entry, &mut after);
            Arc::clone(&entry.name)
        });
        if let Some(name) = name {
            self.settle(&name, after);
        }
    }

    /// The slow path of a release whose word carried a flag.
    pub(crate) fn after_release(self: &Arc<Self>, cell: &Arc<WorkerCell<W>>, before: CellState) {
        if before.key_waiters() {
            self.pump_key(&cell.key);
        }
        if before.budget_waiters() && before.in_flight() == 1 {
            // The worker just went idle while a spawn waits for memory: it may be a victim.
            if let Some((budget, _)) = &self.budget {
                budget.notify();
            }
        }
    }

    /// Starts the loads of `tickets` for `key`. With an async factory and `adopt`, the first
    /// load is returned for the caller (an async waiter) to drive; every other load runs
    /// detached.
    pub(crate) fn start_loads(
        self: &Arc<Self>,
        key: &Arc<str>,
        tickets: &[u64],
        adopt: bool,
    ) -> Option<LoadTask<W>> {
        let mut adopted = None;
        for &ticket in tickets {
            let pool = Arc::clone(self);
            let finish_key = Arc::clone(key);
            let started = self.now();
            let finish: Box<dyn FnOnce(LoadResult<W>) + Send> = Box::new(move |result| {
                pool.finish_spawn(&finish_key, ticket, started, result);
            });
            match &self.factory {
                Factory::Sync(_) => {
                    let pool = Arc::clone(self);
                    let load_key = Arc::clone(key);
                    run_sync(
                        &self.thread_name("load"),
                        move || match &pool.factory {
                            Factory::Sync(factory) => factory.spawn(&load_key),
                            Factory::Async(_) => unreachable!("a sync pool"),
                        },
                        finish,
                    );
                }
                Factory::Async(factory) => {
                    let future = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        factory.spawn(key)
                    }));
                    match future {
                        Ok(future) => {
                            let task = LoadTask::new(future, finish);
                            // With a spawner, every async load runs there from the start.
                            if adopt && adopted.is_none() && self.spawner.is_none() {
                                adopted = Some(task);
                            } else {
                                task.detach(&self.thread_name("load"), self.spawner.as_ref());
                            }
                        }
                        Err(_) => finish(Err(())),
                    }
                }
            }
        }
        adopted
    }

    /// A load ended: the worker joins the key (its capacity goes to the oldest waiters), or the
    /// failure is counted and told to the request that called for it.
    pub(crate) fn finish_spawn(
        self: &Arc<Self>,
        key: &Arc<str>,
        ticket: u64,
        started: Duration,
        result: LoadResult<W>,
    ) {
        let took = self.now().saturating_sub(started);
        let mut after = AfterLock::new();
        let mut result = Some(result);
        let mut failure: Option<(Arc<Waiter<W>>, AcquireError)> = None;
        let mut failure_note: Option<String> = None;
        let mut reserved = 0;
        let mut loaded = None;
        self.map.write(key, |entry| {
            let Some(position) = entry.spawns.iter().position(|t| t.id == ticket) else {
                return; // expired, or the pool closed: the worker is not wanted
            };
            let ticket = entry.spawns.remove(position);
            reserved = ticket.reserved_bytes;
            match result.take() {
                Some(Ok(Ok(worker))) => {
                    loaded = Some(
                        self.add_worker(entry, worker, &ticket, took, 0)
                            .memory_bytes,
                    );
                }
                Some(outcome) => {
                    self.counters.spawn_failures.fetch_add(1, Ordering::Relaxed);
                    entry
                        .counters
                        .spawn_failures
                        .fetch_add(1, Ordering::Relaxed);
                    let error = match outcome {
                        Ok(Err(source)) => {
                            failure_note = Some(source.to_string());
                            AcquireError::Spawn {
                                key: key.to_string(),
                                source,
                            }
                        }
                        _ => {
                            failure_note = Some("the factory panicked".to_string());
                            AcquireError::SpawnPanicked {
                                key: key.to_string(),
                            }
                        }
                    };
                    if let Some(trigger) = ticket.trigger.as_ref().and_then(|t| t.upgrade()) {
                        if entry.remove_waiter(&trigger) {
                            entry.arrivals.fetch_add(1, Ordering::AcqRel);
                            failure = Some((trigger, error));
                        }
                    }
                }
                None => {}
            }
            self.pump(entry, &mut after);
        });
        if let Some(note) = failure_note {
            crate::metrics::spawn_failed(&self.name, key);
            log::warn!("pool {}: loading `{key}` failed: {note}", self.name);
        }
        if let Some((budget, _)) = &self.budget {
            match loaded {
                Some(_) => budget.notify(),
                None => budget.give_back(reserved),
            }
        }
        if let Some(Ok(Ok(worker))) = result {
            // Nobody wants this worker any more: shut it down.
            log::warn!(
                "pool {}: a load of `{key}` finished after its spawn timed out or the pool closed; shutting the worker down",
                self.name
            );
            self.shared
                .reaper
                .submit(Box::new(move || worker.shutdown()));
        }
        if let Some((waiter, error)) = failure {
            if let Ok(wake) = waiter.finish(Outcome::Failed(error)) {
                after.wakes.push(wake);
            }
        }
        self.settle(key, after);
    }

    /// Keeps an admission eviction for the scheduler (and the simulator) to publish.
    pub(crate) fn note_admission_eviction(&self, eviction: Eviction) {
        let mut log = self.admission_log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == ADMISSION_LOG {
            log.pop_front();
        }
        log.push_back((self.now(), eviction));
    }

    /// `BUDGET_WAITERS` while spawns wait on the pool's budget (new workers start with it).
    fn budget_flags(&self) -> u64 {
        match &self.budget {
            Some((budget, _)) if budget.flagged() => BUDGET_WAITERS,
            _ => 0,
        }
    }

    /// Adds a loaded worker to `entry` with `in_flight` requests already on it.
    pub(crate) fn add_worker(
        self: &Arc<Self>,
        entry: &mut KeyEntry<W>,
        worker: W,
        ticket: &SpawnTicket<W>,
        took: Duration,
        in_flight: u32,
    ) -> Arc<WorkerCell<W>> {
        let memory = worker.memory_bytes();
        let id = WorkerId(self.next_worker_id.fetch_add(1, Ordering::Relaxed));
        let cell = Arc::new(WorkerCell::new(
            id,
            Arc::clone(&entry.name),
            worker,
            memory,
            Arc::clone(&self.shared),
            Arc::downgrade(self),
            in_flight,
            // A number from the waiters' counter, taken under the key's lock: every waiter
            // queued before this instant has a `seq` not above it.
            self.next_ticket.fetch_add(1, Ordering::Relaxed),
            entry.flags() | self.budget_flags(),
        ));
        self.accounted_bytes.fetch_add(memory, Ordering::AcqRel);
        if let Some((budget, _)) = &self.budget {
            budget.convert(ticket.reserved_bytes, memory);
        }
        self.counters.spawns.fetch_add(1, Ordering::Relaxed);
        entry.counters.spawns.fetch_add(1, Ordering::Relaxed);
        if ticket.prewarm {
            self.counters.prewarm_spawns.fetch_add(1, Ordering::Relaxed);
        }
        let took = to_nanos(took);
        let mean = self.observed_load_nanos.load(Ordering::Relaxed);
        let mean = if mean == 0 {
            took
        } else {
            mean - mean / 4 + took / 4
        };
        self.observed_load_nanos
            .store(mean.max(1), Ordering::Relaxed);
        entry.workers.push(Arc::clone(&cell));
        self.shared.publish_spawn(
            &self.name,
            &cell,
            Duration::from_nanos(took),
            ticket.prewarm,
        );
        crate::metrics::spawned(
            &self.name,
            &entry.name,
            Duration::from_nanos(took),
            ticket.prewarm,
        );
        log::info!(
            "pool {}: loaded worker {} of `{}`{} in {}, {}",
            self.name,
            id,
            entry.name,
            if ticket.prewarm { " (pre-warm)" } else { "" },
            poolwarden_policies::format_duration(Duration::from_millis(took / 1_000_000)),
            poolwarden_policies::ByteSize(memory)
        );
        cell
    }

    /// A worker that may not join the pool (its spawn slot is gone) with `in_flight` requests on
    /// it: draining from the start, so it is shut down once they end (now, with none).
    pub(crate) fn detached_worker(
        &self,
        key: &Arc<str>,
        worker: W,
        in_flight: u32,
    ) -> Arc<WorkerCell<W>> {
        let memory = worker.memory_bytes();
        let cell = Arc::new(WorkerCell::new(
            WorkerId(self.next_worker_id.fetch_add(1, Ordering::Relaxed)),
            Arc::clone(key),
            worker,
            memory,
            Arc::clone(&self.shared),
            Weak::new(),
            in_flight,
            0,
            0,
        ));
        WorkerCell::force_drain(&cell);
        cell
    }

    /// Takes a worker out of `key`: only if idle (and, with a count, not used since), or whatever
    /// its load if it is dead. Its bytes leave the accounting now; its shutdown runs on the
    /// reaper once nothing is in flight on it.
    pub(crate) fn remove(
        self: &Arc<Self>,
        key: &str,
        worker: WorkerId,
        reason: EvictionReason,
        how: Removal,
    ) -> Option<Eviction> {
        let now = self.now();
        let mut after = AfterLock::new();
        let (cell, workers_left, name, promise) = self.map.write(key, |entry| {
            let position = entry.workers.iter().position(|c| c.id == worker)?;
            let cell = &entry.workers[position];
            match how {
                Removal::Dead => {}
                Removal::IfIdle(releases) => {
                    if !cell.try_begin_drain(releases) {
                        return None;
                    }
                }
            }
            let cell = entry.workers.swap_remove(position);
            // Until its shutdown is handed over below, `close()` waiting on the reaper counts it.
            let promise = self.shared.reaper.promise();
            entry.last_eviction = Some(now);
            entry
                .arrivals
                .fetch_add(cell.arrivals_since_tick(), Ordering::AcqRel);
            if !entry.waiters.is_empty() {
                self.pump(entry, &mut after);
            }
            Some((cell, entry.workers.len(), Arc::clone(&entry.name), promise))
        })??;
        match how {
            Removal::Dead => WorkerCell::force_drain(&cell),
            Removal::IfIdle(_) => WorkerCell::finish_drain(&cell),
        }
        drop(promise);
        self.accounted_bytes
            .fetch_sub(cell.memory_bytes, Ordering::AcqRel);
        if let Some((budget, _)) = &self.budget {
            budget.freed(cell.memory_bytes);
        }
        *self
            .evictions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.clone())
            .or_insert(0) += 1;
        crate::metrics::evicted(&self.name, reason.as_str());
        self.settle(&name, after);
        let idle_for = Duration::from_nanos(
            to_nanos(now).saturating_sub(cell.last_used_nanos().min(to_nanos(now))),
        );
        Some(Eviction {
            key: name,
            worker,
            reason,
            workers_left,
            freed_bytes: cell.memory_bytes,
            idle_for,
        })
    }

    /// Expires spawns past `spawn_timeout` (seen by the tick): each counts as a failed spawn,
    /// the request that called for it is told, and the queue may start another.
    pub(crate) fn expire_spawn(self: &Arc<Self>, key: &Arc<str>, ticket: u64) {
        let mut after = AfterLock::new();
        let mut failure = None;
        self.map.write(key, |entry| {
            let Some(position) = entry.spawns.iter().position(|t| t.id == ticket) else {
                return;
            };
            let ticket = entry.spawns.remove(position);
            after.give_back += ticket.reserved_bytes;
            self.counters.spawn_failures.fetch_add(1, Ordering::Relaxed);
            self.counters.spawn_timeouts.fetch_add(1, Ordering::Relaxed);
            entry
                .counters
                .spawn_failures
                .fetch_add(1, Ordering::Relaxed);
            if let Some(trigger) = ticket.trigger.as_ref().and_then(|t| t.upgrade()) {
                if entry.remove_waiter(&trigger) {
                    entry.arrivals.fetch_add(1, Ordering::AcqRel);
                    failure = Some(trigger);
                }
            }
            self.pump(entry, &mut after);
        });
        crate::metrics::spawn_failed(&self.name, key);
        log::warn!(
            "pool {}: loading `{key}` took longer than spawn_timeout ({:?}); counted as failed",
            self.name,
            self.spawn_timeout
        );
        if let Some(waiter) = failure {
            let error = AcquireError::SpawnTimeout {
                key: key.to_string(),
                after: self.spawn_timeout,
            };
            if let Ok(wake) = waiter.finish(Outcome::Failed(error)) {
                after.wakes.push(wake);
            }
        }
        self.settle(key, after);
    }

    /// Reserves up to `workers` pre-warm spawns of `key` within its limit; returns the tickets.
    pub(crate) fn reserve_prewarm(&self, key: &str, workers: usize) -> (Arc<str>, Vec<u64>) {
        let now = self.now();
        let max = self.max_workers_per_model.load(Ordering::Relaxed);
        self.map.write_or_insert(
            key,
            |name| self.new_entry(name),
            |entry| {
                let mut tickets = Vec::new();
                if self.closed.load(Ordering::Acquire) {
                    return (Arc::clone(&entry.name), tickets);
                }
                while tickets.len() < workers && entry.workers.len() + entry.spawns.len() < max {
                    let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
                    entry.spawns.push(SpawnTicket {
                        id,
                        started: now,
                        prewarm: true,
                        trigger: None,
                        admitted: self.budget.is_none(),
                        reserved_bytes: 0,
                    });
                    tickets.push(id);
                }
                (Arc::clone(&entry.name), tickets)
            },
        )
    }

    /// Ends the pool's service: fails every waiter with `Closed`, takes every worker out and
    /// drains it (idle ones are shut down now, busy ones when their last request ends).
    /// Returns the workers taken out.
    pub(crate) fn shut_everything(&self) -> Vec<Arc<WorkerCell<W>>> {
        self.closed.store(true, Ordering::Release);
        let mut cells = Vec::new();
        let mut wakes = Vec::new();
        let mut reserved = 0;
        let mut withdrawn = Vec::new();
        self.map.for_each_mut(|entry| {
            for waiter in entry.waiters.drain(..) {
                let error = AcquireError::Closed {
                    pool: self.name.to_string(),
                };
                if let Ok(wake) = waiter.finish(Outcome::Failed(error)) {
                    wakes.push(wake);
                }
            }
            for ticket in entry.spawns.drain(..) {
                reserved += ticket.reserved_bytes;
                if !ticket.admitted {
                    withdrawn.push((Arc::clone(&entry.name), ticket.id));
                }
            }
            cells.append(&mut entry.workers);
        });
        wakes.into_iter().for_each(Wake::wake);
        let mut freed = 0;
        for cell in &cells {
            self.accounted_bytes
                .fetch_sub(cell.memory_bytes, Ordering::AcqRel);
            freed += cell.memory_bytes;
            WorkerCell::force_drain(cell);
        }
        if let Some((budget, member)) = &self.budget {
            for (key, ticket) in &withdrawn {
                budget.withdraw(*member, key, *ticket);
            }
            budget.give_back(reserved);
            budget.freed(freed);
        }
        cells
    }

    /// Records a request that found no ready worker: when it arrived, and whether it gave up
    /// (then no worker's state word will count it).
    pub(crate) fn note_slow_arrival(&self, key: &str, arrived: u64, gave_up: bool) {
        self.map.read(key, |entry| {
            if arrived != NO_TIME {
                entry.first_arrival.fetch_min(arrived, Ordering::AcqRel);
            }
            if gave_up {
                entry.arrivals.fetch_add(1, Ordering::AcqRel);
            }
        });
    }
}

/// What a request that gave up left: an outcome granted just before, and whether a spawn of its
/// key was waiting for memory.
pub(crate) struct GiveUp<W: Worker> {
    pub(crate) outcome: Option<Outcome<W>>,
    pub(crate) for_memory: bool,
}

/// How [`PoolInner::remove`] takes a worker out.
#[derive(Clone, Copy)]
pub(crate) enum Removal {
    /// Only if idle (and, with a count, released exactly that many times).
    IfIdle(Option<u64>),
    /// Whatever its load: it is dead.
    Dead,
}

impl<W: Worker> Drop for PoolInner<W> {
    fn drop(&mut self) {
        // The last handle is gone: every worker is shut down (a busy one when its last lease
        // ends), as `Worker` promises.
        let cells = self.shut_everything();
        if !cells.is_empty() {
            log::debug!(
                "pool {}: dropped with {} worker(s); shutting them down",
                self.name,
                cells.len()
            );
        }
    }
}
