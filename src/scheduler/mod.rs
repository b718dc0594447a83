//! The maintenance scheduler: one thread for every registered pool.
//!
//! Every tick it (1) takes one memory reading, (2) snapshots every pool and runs each policy
//! on it, (3) applies the proposals through the pools' atomic evict, (4) logs and publishes
//! each eviction with its reason, (5) sets the metrics' gauges (feature `metrics`), and (6) logs
//! the memory reading and each pool's accounted memory at debug level.
//! [`Scheduler::tick_once`] runs exactly one tick on the caller's thread, for tests and the
//! simulator; [`Scheduler::start`] runs ticks on a thread named `pool-maintenance`.
//!
//! Subscribers ([`Scheduler::subscribe`]) receive every spawn and eviction over a bounded
//! channel; [`Scheduler::status`] is a serializable view of everything registered;
//! [`Scheduler::replace_policy`] swaps a policy between two ticks.

mod event;

use std::collections::{HashMap, HashSet};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poolwarden_policies::{EvictionPolicy, Noop, Prewarm, Proposal, WorkerId};

use crate::clock::{Clock, TscClock};
use crate::config::PolicyScope;
use crate::events::{EventReceiver, EventSink, PoolEvent, DEFAULT_CAPACITY};
use crate::metrics::TickMetrics;
use crate::pool::{Eviction, ManagedPool, Pool, Worker};
use crate::probe::{sane, MemoryProbe};
use crate::snapshot_buffer::SnapshotBuffer;
use crate::status::{BudgetReport, MemoryStatus, Status};

pub use event::{EvictionEvent, PrewarmStart, SchedulerStats, TickReport};

/// The name of the maintenance thread.
pub const THREAD_NAME: &str = "pool-maintenance";

/// One policy instance and the pools it governs.
struct PolicySlot {
    policy: Box<dyn EvictionPolicy>,
    /// Per registered pool: governed by this instance?
    governed: Vec<bool>,
    panics: u64,
}

struct Registered {
    pool: Arc<dyn ManagedPool>,
}

/// Everything a tick touches, behind one lock that the request path never takes.
struct Core {
    pools: Vec<Registered>,
    slots: Vec<PolicySlot>,
    /// `None`: no probe, memory is always unknown.
    probe: Option<Box<dyn MemoryProbe>>,
    buffer: SnapshotBuffer,
    proposals: Vec<Proposal>,
    applied: HashSet<(usize, WorkerId)>,
    prewarms: Vec<Prewarm>,
    /// Pre-warms not yet due, one per (pool, key): (workers wanted, when).
    pending_prewarms: HashMap<(usize, Arc<str>), (usize, Duration)>,
    /// Report due pre-warms instead of starting them.
    manual_prewarm: bool,
    /// The previous tick's time.
    previous: Option<Duration>,
    events: EventSink,
    stats: SchedulerStats,
    budgets: Vec<Arc<dyn BudgetReport>>,
    /// The budgets of registered pools, reported among `budgets`.
    budget_handles: Vec<crate::budget::Budget>,
    metrics: TickMetrics,
    /// Per key of the snapshot: workers evicted by this tick's proposals (for the gauges).
    evicted: Vec<u32>,
    /// Per pool: accounted bytes at the end of the tick.
    accounted: Vec<u64>,
}

/// The stop signal of the maintenance thread: set, then notified.
type StopSignal = Arc<(Mutex<bool>, Condvar)>;

struct Running {
    stop: StopSignal,
    thread: JoinHandle<()>,
}

/// [`Scheduler::replace_policy`] was given a pool that is not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no pool `{pool}` is registered with the scheduler")]
pub struct UnknownPool {
    /// The name given.
    pub pool: String,
}

/// Runs eviction policies over registered pools. See the [module docs](self).
pub struct Scheduler {
    core: Arc<Mutex<Core>>,
    events: EventSink,
    clock: Arc<dyn Clock>,
    tick: Duration,
    shutdown_wait: Duration,
    running: Mutex<Option<Running>>,
}

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder {
    clock: Option<Arc<dyn Clock>>,
    tick: Duration,
    probe: Option<Box<dyn MemoryProbe>>,
    policy: Option<Box<dyn EvictionPolicy>>,
    manual_prewarm: bool,
    shutdown_wait: Duration,
}

impl SchedulerBuilder {
    /// How long [`Scheduler::stop`] waits for worker shutdowns still in progress (evicted
    /// workers are shut down off the tick, on each pool's reaper thread). Default 2 s; a
    /// shutdown that takes longer goes on in the background.
    pub fn shutdown_wait(mut self, wait: Duration) -> Self {
        self.shutdown_wait = wait;
        self
    }

    /// Pre-warms that come due are not started by the scheduler but listed in
    /// [`TickReport::prewarms`] for the caller to start (the simulator does, in virtual time).
    /// Default: the scheduler starts them, off the maintenance thread.
    pub fn manual_prewarm(mut self) -> Self {
        self.manual_prewarm = true;
        self
    }

    /// How often the maintenance thread ticks. Default 1 s. Zero is raised to 1 ms.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(1));
        self
    }

    /// The clock; it must be the pools' clock. Default: the process-wide [`TscClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The memory probe. Default: a probe that always reads "unknown" (memory pressure off).
    pub fn probe(mut self, probe: impl MemoryProbe) -> Self {
        self.probe = Some(Box::new(probe));
        self
    }

    /// The default policy, for every pool registered without its own. Default: `noop`.
    pub fn policy(mut self, policy: Box<dyn EvictionPolicy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The scheduler, not yet ticking.
    pub fn build(self) -> Scheduler {
        let events = EventSink::default();
        let core = Core {
            pools: Vec::new(),
            slots: vec![PolicySlot {
                policy: self.policy.unwrap_or_else(|| Box::new(Noop)),
                governed: Vec::new(),
                panics: 0,
            }],
            probe: self.probe,
            buffer: SnapshotBuffer::default(),
            proposals: Vec::new(),
            applied: HashSet::new(),
            prewarms: Vec::new(),
            pending_prewarms: HashMap::new(),
            manual_prewarm: self.manual_prewarm,
            previous: None,
            events: events.clone(),
            stats: SchedulerStats::default(),
            budgets: Vec::new(),
            budget_handles: Vec::new(),
            metrics: TickMetrics::default(),
            evicted: Vec::new(),
            accounted: Vec::new(),
        };
        Scheduler {
            core: Arc::new(Mutex::new(core)),
            events,
            clock: self.clock.unwrap_or_else(|| Arc::new(TscClock::default())),
            tick: self.tick,
            shutdown_wait: self.shutdown_wait,
            running: Mutex::new(None),
        }
    }
}

/// A policy with its parameters, a chain with each member's (`chain [a x=1; b y=2]`).
fn describe_all(policy: &dyn EvictionPolicy) -> String {
    let children = policy.children();
    if children.is_empty() {
        policy.describe()
    } else {
        let members: Vec<String> = children.into_iter().map(describe_all).collect();
        format!("{} [{}]", policy.name(), members.join("; "))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scheduler {
    /// A builder with the defaults: 1 s tick, process-wide TSC clock, no memory probe, `noop`.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder {
            clock: None,
            tick: Duration::from_secs(1),
            probe: None,
            policy: None,
            manual_prewarm: false,
            shutdown_wait: Duration::from_secs(2),
        }
    }

    /// The tick interval.
    pub fn tick_interval(&self) -> Duration {
        self.tick
    }

    /// Registers a pool under the default policy.
    pub fn register<W: Worker>(&self, pool: &Pool<W>) {
        self.register_managed(pool.managed(), None);
    }

    /// Registers a pool with its own policy, which governs this pool's keys only (a global
    /// policy such as memory-pressure still looks at every pool).
    pub fn register_with_policy<W: Worker>(&self, pool: &Pool<W>, policy: Box<dyn EvictionPolicy>) {
        self.register_managed(pool.managed(), Some(policy));
    }

    /// Registers any [`ManagedPool`], with an optional policy of its own. Its spawns are
    /// published to this scheduler's subscribers from now on.
    pub fn register_managed(
        &self,
        pool: Arc<dyn ManagedPool>,
        policy: Option<Box<dyn EvictionPolicy>>,
    ) {
        pool.attach_events(self.events.clone());
        let mut core = lock(&self.core);
        // A pool's budget is reported once, however many of its pools are registered.
        if let Some(budget) = pool.budget() {
            if !core.budget_handles.iter().any(|b| b.same(&budget)) {
                core.budgets.push(Arc::new(budget.clone()));
                core.budget_handles.push(budget);
            }
        }
        let index = core.pools.len();
        let slot = match policy {
            None => 0,
            Some(policy) => {
                core.slots.push(PolicySlot {
                    policy,
                    // Governs none of the pools registered before it.
                    governed: vec![false; index],
                    panics: 0,
                });
                core.slots.len() - 1
            }
        };
        for (i, s) in core.slots.iter_mut().enumerate() {
            s.governed.push(i == slot);
        }
        debug_assert!(core.slots.iter().all(|s| s.governed.len() == index + 1));
        core.pools.push(Registered { pool });
    }

    /// A channel that receives every spawn in the registered pools and every eviction by this
    /// scheduler from now on, holding at most [`DEFAULT_CAPACITY`] events (see
    /// [`Scheduler::subscribe_with_capacity`]). It is closed by [`Scheduler::stop`].
    pub fn subscribe(&self) -> EventReceiver {
        self.subscribe_with_capacity(DEFAULT_CAPACITY)
    }

    /// Like [`Scheduler::subscribe`], with a queue of at most `capacity` events (at least 1).
    /// Publishing never waits for a subscriber: when its queue is full, its oldest event is
    /// dropped to make room, and [`EventReceiver::dropped`] counts the losses.
    pub fn subscribe_with_capacity(&self, capacity: usize) -> EventReceiver {
        self.events.subscribe(capacity)
    }

    /// The counters so far.
    pub fn stats(&self) -> SchedulerStats {
        lock(&self.core).stats.clone()
    }

    /// Replaces a policy; it applies from the next tick on (a tick in progress finishes with
    /// the old one). `PolicyScope::Default` replaces the default policy of every pool without
    /// its own (`None`: `noop`). `PolicyScope::Pool(name)` gives that pool its own policy, or
    /// with `None` puts it back under the default. The replaced policy's state (what it
    /// learnt across ticks) is dropped with it.
    pub fn replace_policy(
        &self,
        scope: PolicyScope<'_>,
        policy: Option<Box<dyn EvictionPolicy>>,
    ) -> Result<(), UnknownPool> {
        let mut core = lock(&self.core);
        match scope {
            PolicyScope::Default => {
                let policy = policy.unwrap_or_else(|| Box::new(Noop));
                log::info!(
                    "{THREAD_NAME}: default policy replaced: {}",
                    policy.describe()
                );
                let slot = &mut core.slots[0];
                slot.policy = policy;
                slot.panics = 0;
            }
            PolicyScope::Pool(name) => {
                let Some(index) = core.pools.iter().position(|r| r.pool.name() == name) else {
                    return Err(UnknownPool {
                        pool: name.to_string(),
                    });
                };
                let current = core
                    .slots
                    .iter()
                    .position(|s| s.governed[index])
                    .unwrap_or(0);
                match (current, policy) {
                    (0, None) => {}
                    (0, Some(policy)) => {
                        log::info!("pool {name}: policy replaced: {}", policy.describe());
                        core.slots[0].governed[index] = false;
                        let mut governed = vec![false; core.pools.len()];
                        governed[index] = true;
                        core.slots.push(PolicySlot {
                            policy,
                            governed,
                            panics: 0,
                        });
                    }
                    (own, policy) => {
                        core.slots[own].governed[index] = false;
                        if !core.slots[own].governed.iter().any(|g| *g) {
                            core.slots.remove(own);
                        }
                        match policy {
                            Some(policy) => {
                                log::info!("pool {name}: policy replaced: {}", policy.describe());
                                let mut governed = vec![false; core.pools.len()];
                                governed[index] = true;
                                core.slots.push(PolicySlot {
                                    policy,
                                    governed,
                                    panics: 0,
                                });
                            }
                            None => {
                                log::info!("pool {name}: back under the default policy");
                                core.slots[0].governed[index] = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reports a memory budget in [`Scheduler::status`] and, at every tick, in the
    /// `poolwarden_budget_free_bytes{budget}` gauge.
    pub fn register_budget(&self, budget: Arc<dyn BudgetReport>) {
        lock(&self.core).budgets.push(budget);
    }

    /// What every registered pool holds now, the budgets and the last memory reading, as a
    /// plain serializable value (see [`crate::status`]). It reads the pools without touching
    /// what the tick counts, so it may be called at any time; it waits for a tick in progress.
    pub fn status(&self) -> Status {
        let running = self.is_running();
        let now = self.clock.now();
        let core = lock(&self.core);
        let pools = core
            .pools
            .iter()
            .enumerate()
            .map(|(index, registered)| {
                let mut status = registered.pool.status(now);
                if let Some(slot) = core.slots.iter().find(|s| s.governed[index]) {
                    status.policy = describe_all(&*slot.policy);
                }
                status
            })
            .collect();
        Status {
            at: now,
            running,
            tick: self.tick,
            ticks: core.stats.ticks,
            last_tick: core.previous,
            memory: core.stats.last_memory.map(MemoryStatus::from),
            budgets: core.budgets.iter().map(|b| b.budget_status()).collect(),
            pools,
            evictions: core.stats.evictions.clone(),
            policy_panics: core.stats.policy_panics,
        }
    }

    /// Runs exactly one tick now, on this thread, at the clock's current time.
    pub fn tick_once(&self) -> TickReport {
        let now = self.clock.now();
        lock(&self.core).tick(now)
    }

    /// Starts the maintenance thread. Starting a running scheduler does nothing.
    pub fn start(&self) -> io::Result<()> {
        let mut running = lock(&self.running);
        if running.is_some() {
            return Ok(());
        }
        crate::metrics::describe();
        let stop: StopSignal = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let core = Arc::clone(&self.core);
        let clock = Arc::clone(&self.clock);
        let interval = self.tick;
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || {
                let (stopped, changed) = &*signal;
                let mut next = Instant::now() + interval;
                loop {
                    let mut guard = lock(stopped);
                    loop {
                        if *guard {
                            log::debug!("{THREAD_NAME}: stopped");
                            return;
                        }
                        let now = Instant::now();
                        if now >= next {
                            break;
                        }
                        guard = changed
                            .wait_timeout(guard, next - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    drop(guard);
                    let now = clock.now();
                    lock(&core).tick(now);
                    // A tick that overran skips the ticks it missed rather than bunching them.
                    next += interval;
                    let now = Instant::now();
                    if next < now {
                        next = now + interval;
                    }
                }
            })?;
        log::info!(
            "{THREAD_NAME}: started, ticking every {}",
            poolwarden_policies::format_duration(interval)
        );
        *running = Some(Running { stop, thread });
        Ok(())
    }

    /// Whether the maintenance thread is running.
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// Stops the maintenance thread and joins it, then waits for worker shutdowns still in
    /// progress, at most [`SchedulerBuilder::shutdown_wait`] (default 2 s). The thread waits on a
    /// condition variable, never in a sleep, and no tick waits on a worker's shutdown, so `stop`
    /// returns within the tick in progress (if any) plus that bound, whatever the tick interval.
    /// Every subscriber's channel is closed (also when the thread was not running): receivers
    /// get the events already queued, then the end.
    pub fn stop(&self) {
        let running = lock(&self.running).take();
        let Some(Running { stop, thread }) = running else {
            self.events.close_all();
            return;
        };
        *lock(&stop.0) = true;
        stop.1.notify_all();
        if thread.join().is_err() {
            log::error!("{THREAD_NAME}: the maintenance thread panicked");
        }
        let pools: Vec<Arc<dyn ManagedPool>> = lock(&self.core)
            .pools
            .iter()
            .map(|r| Arc::clone(&r.pool))
            .collect();
        let deadline = Instant::now() + self.shutdown_wait;
        for pool in pools {
            let left = deadline.saturating_duration_since(Instant::now());
            if !pool.wait_shutdowns(left) {
                log::warn!(
                    "{THREAD_NAME}: pool {}: worker shutdowns still running after {:?}; they go on in the background",
                    pool.name(),
                    self.shutdown_wait
                );
            }
        }
        self.events.close_all();
        log::info!("{THREAD_NAME}: stopped");
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Core {
    fn tick(&mut self, now: Duration) -> TickReport {
        let started = crate::metrics::ENABLED.then(Instant::now);
        let memory = self.probe.as_mut().and_then(|probe| {
            sane(
                catch_unwind(AssertUnwindSafe(|| probe.read())).unwrap_or_else(|_| {
                    log::error!(
                        "{THREAD_NAME}: the memory probe panicked; memory is unknown this tick"
                    );
                    None
                }),
            )
        });
        let mut report = TickReport {
            at: now,
            memory,
            ..TickReport::default()
        };

        self.buffer.clear();
        for (index, registered) in self.pools.iter().enumerate() {
            registered.pool.snapshot_into(&mut self.buffer, index);
        }

        let dead = std::mem::take(&mut self.buffer.dead);
        for worker in &dead {
            let pool = &self.pools[worker.pool].pool;
            if let Some(eviction) = pool.remove_dead(&worker.key, worker.worker) {
                self.record(now, worker.pool, eviction, &mut report);
            }
        }
        self.buffer.dead = dead;

        self.proposals.clear();
        self.prewarms.clear();
        let previous = self.previous.replace(now);
        for slot in &mut self.slots {
            if !slot.governed.iter().any(|g| *g) {
                continue;
            }
            let snapshot = self.buffer.view(now, previous, memory, &slot.governed);
            let before = self.proposals.len();
            let prewarms_before = self.prewarms.len();
            let policy = &mut slot.policy;
            let proposals = &mut self.proposals;
            let prewarms = &mut self.prewarms;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                policy.propose(&snapshot, proposals);
                policy.prewarm(&snapshot, prewarms);
            }));
            if outcome.is_err() {
                self.proposals.truncate(before);
                self.prewarms.truncate(prewarms_before);
                slot.panics += 1;
                report.policy_panics += 1;
                self.stats.policy_panics += 1;
                let pools: Vec<&str> = self
                    .pools
                    .iter()
                    .zip(&slot.governed)
                    .filter(|(_, governed)| **governed)
                    .map(|(p, _)| p.pool.name())
                    .collect();
                if slot.panics == 1 || slot.panics.is_power_of_two() {
                    log::error!(
                        "{THREAD_NAME}: policy `{}` for pool(s) {} panicked ({} time(s)); its proposals were dropped, other pools are unaffected",
                        slot.policy.name(),
                        pools.join(", "),
                        slot.panics
                    );
                }
            }
        }

        self.applied.clear();
        self.evicted.clear();
        self.evicted.resize(self.buffer.keys.len(), 0);
        let proposals = std::mem::take(&mut self.proposals);
        for proposal in &proposals {
            let Some(key) = self.buffer.keys.get(proposal.key) else {
                log::warn!("{THREAD_NAME}: dropped a proposal for key index {} that is not in the snapshot", proposal.key);
                continue;
            };
            if !self.applied.insert((proposal.key, proposal.worker)) {
                continue;
            }
            let pool_index = key.pool;
            let pool = &self.pools[pool_index].pool;
            // The count the policy saw: a worker used since that snapshot stays.
            let releases = proposal.releases.or_else(|| {
                self.buffer.workers[key.workers.clone()]
                    .iter()
                    .find(|w| w.id == proposal.worker)
                    .map(|w| w.releases)
            });
            let Some(releases) = releases else {
                continue; // not a ready worker of that key in the snapshot
            };
            if let Some(eviction) = pool.evict(
                &key.key,
                proposal.worker,
                proposal.reason.clone(),
                Some(releases),
            ) {
                self.evicted[proposal.key] += 1;
                self.record(now, pool_index, eviction, &mut report);
            }
        }
        self.proposals = proposals;
        self.start_due_prewarms(now, &mut report);
        for registered in &self.pools {
            registered.pool.end_tick();
        }
        // Evictions admission made between ticks, published with their own times.
        for pool_index in 0..self.pools.len() {
            for (at, eviction) in self.pools[pool_index].pool.take_admission_evictions() {
                self.record(at, pool_index, eviction, &mut report);
            }
        }

        self.stats.ticks += 1;
        self.stats.last_memory = memory;
        if crate::metrics::ENABLED {
            self.accounted.clear();
            self.accounted
                .extend(self.pools.iter().map(|r| r.pool.accounted_bytes()));
            self.metrics
                .update(&self.buffer, &self.evicted, &self.accounted);
            for budget in &self.budgets {
                let status = budget.budget_status();
                self.metrics.budget(&status.name, status.free_bytes);
            }
        }
        if log::log_enabled!(log::Level::Debug) {
            match memory {
                Some(m) => log::debug!(
                    "tick: memory {} used of {} ({} available{})",
                    poolwarden_policies::ByteSize(m.used()),
                    poolwarden_policies::ByteSize(m.total),
                    poolwarden_policies::ByteSize(m.available),
                    m.process_rss
                        .map(|rss| format!(", process RSS {}", poolwarden_policies::ByteSize(rss)))
                        .unwrap_or_default()
                ),
                None => log::debug!("tick: memory unknown"),
            }
            let mut total = 0u64;
            for registered in &self.pools {
                let bytes = registered.pool.accounted_bytes();
                total += bytes;
                log::debug!(
                    "pool {}: {} workers, {:.1} MiB accounted",
                    registered.pool.name(),
                    registered.pool.total_workers(),
                    bytes as f64 / (1024.0 * 1024.0)
                );
            }
            log::debug!(
                "all pools: {:.1} MiB accounted",
                total as f64 / (1024.0 * 1024.0)
            );
        }
        if let Some(started) = started {
            self.metrics.tick_took(started.elapsed());
        }
        report
    }

    /// Records this tick's pre-warm proposals and starts (or reports) those that are due: a
    /// pre-warm for time `at` is due once `now + load time >= at`.
    fn start_due_prewarms(&mut self, now: Duration, report: &mut TickReport) {
        for prewarm in self.prewarms.drain(..) {
            if prewarm.pool >= self.pools.len() {
                log::warn!(
                    "{THREAD_NAME}: dropped a pre-warm for pool index {} that is not registered",
                    prewarm.pool
                );
                continue;
            }
            let slot = (prewarm.pool, prewarm.key);
            if prewarm.workers == 0 {
                self.pending_prewarms.remove(&slot);
            } else {
                self.pending_prewarms
                    .insert(slot, (prewarm.workers, prewarm.at));
            }
        }
        if self.pending_prewarms.is_empty() {
            return;
        }
        let pools = &self.pools;
        let manual = self.manual_prewarm;
        self.pending_prewarms
            .retain(|(pool_index, key), (workers, at)| {
                let pool = &pools[*pool_index].pool;
                if now.saturating_add(pool.cold_start_of(key)) < *at {
                    return true;
                }
                let missing = workers.saturating_sub(pool.ready_or_starting(key));
                let spawns = if manual || missing == 0 {
                    missing
                } else {
                    pool.prewarm(key, missing)
                };
                if spawns > 0 {
                    log::debug!(
                        "pool {}: pre-warm of `{key}`: {spawns} spawn(s) for {workers} worker(s)",
                        pool.name()
                    );
                    report.prewarms.push(PrewarmStart {
                        pool: *pool_index,
                        key: Arc::clone(key),
                        spawns,
                    });
                }
                false
            });
    }

    fn record(
        &mut self,
        now: Duration,
        pool_index: usize,
        eviction: Eviction,
        report: &mut TickReport,
    ) {
        let pool = &self.pools[pool_index].pool;
        // Admission logs its evictions when it makes them, between ticks.
        if eviction.reason != poolwarden_policies::EvictionReason::Admission {
            log::info!(
                "pool {}: evicted worker {} of `{}` ({}) after {} idle, {} freed, {} left",
                pool.name(),
                eviction.worker,
                eviction.key,
                eviction.reason,
                poolwarden_policies::format_duration(Duration::from_millis(
                    eviction.idle_for.as_millis() as u64
                )),
                poolwarden_policies::ByteSize(eviction.freed_bytes),
                eviction.workers_left
            );
        }
        *self
            .stats
            .evictions
            .entry(eviction.reason.to_string())
            .or_insert(0) += 1;
        let event = EvictionEvent {
            at: now,
            pool: Arc::clone(&self.buffer.pools[pool_index].name),
            key: eviction.key,
            worker: eviction.worker,
            reason: eviction.reason,
            workers_left: eviction.workers_left,
            freed_bytes: eviction.freed_bytes,
            idle_for: eviction.idle_for,
        };
        if self.events.has_subscribers() {
            self.events.publish(PoolEvent::Eviction(event.clone()));
        }
        report.evictions.push(event);
    }
}
