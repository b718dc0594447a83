//! The replay engine: the real scheduler, pools and policies under a [`ManualClock`], with
//! virtual workers. No threads, no sleeping.
//!
//! What it counts (see the README's "Semantics"):
//! - A worker is held, in the worker count and in memory, from the start of its spawn until it
//!   is evicted. Idle time counts only ready workers with nothing in flight; loading is neither
//!   busy nor idle.
//! - A spawn in progress stands for `max_in_flight_per_worker` waiting requests: a new spawn
//!   starts only while the key has more waiters than its spawns in progress can take.
//! - A cold start is every request that waited and was served by a worker that finished
//!   spawning after the request arrived (it waited for a spawn).
//! - Pre-warms that policies propose are reported by the scheduler when due
//!   ([`crate::SchedulerBuilder::manual_prewarm`]) and started here as virtual spawns that take
//!   the key's `cold_start`; they are counted in `prewarm_spawns`, never as cold starts.
//! - Virtual time jumps over stretches in which no tick could do anything: no waiting request
//!   and no idle ready worker (every worker busy or loading, or none at all), up to the next
//!   arrival, completion, spawn or due pre-warm. It also jumps, up to the next such event, once
//!   nothing at all has happened for a whole horizon: the policies have shown that they keep
//!   the idle workers they have. A policy therefore sees no tick in such a stretch: the
//!   arrivals and the time that passed show at the next tick it sees (`Snapshot::previous`
//!   tells how long ago its last tick was), and a policy that would pre-warm a key on the
//!   clock alone, while no worker is idle and nothing is pending, is asked at the next event.
//! - Every request that waits (for a busy worker, a loading one, or memory) fails once it has
//!   waited its pool's `acquire_timeout` without a worker: it is counted in `rejected` (and
//!   told to the pool with [`Pool::record_abandoned`]); its wait is not in the wait figures.
//!
//! Memory budgets (`[budgets.NAME]`, see [`crate::budget`]) are modelled with the library's
//! own [`Budget`], a fresh one per run, with no probe: used memory is the accounted bytes of
//! the budget's pools (loading workers' reservations included), and the limit is its `limit`.
//! - A spawn goes through [`Pool::try_reserve`], which makes room by evicting idle victims of
//!   other keys (reason `admission`, recorded at the time they happen) when that suffices.
//! - A spawn that does not fit waits for memory in its budget's queue; spawns waiting on one
//!   budget are served first come, first served (a spawn that would fit does not overtake
//!   them). Whenever a worker on the budget becomes idle (a request completes, or a load ends
//!   with nobody waiting) or leaves, and at each tick, the oldest tries again, then the next,
//!   until one does not fit. A spawn whose requests were served or gave up leaves the queue.
//!   Requests that waited while a spawn they needed waited for memory are counted in
//!   `admission_waits`.
//! - A spawn bigger than the budget's whole limit fails at once with the requests that need it
//!   (`rejected`); nothing is evicted for it.
//! - A pre-warm spawn never waits for memory: it starts if it fits now and no spawn waits on
//!   the budget, else it is dropped.
//!
//! Events at one instant run in this order: requests finishing, spawns finishing, requests
//! giving up, arrivals, the tick. A request that completes at `t` frees its worker, as a
//! victim, for a spawn waiting at `t`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolwarden_policies::{
    EvictionPolicy, MemoryReading, Prewarm, Proposal, Snapshot, VictimOrder, WorkerId,
};

use super::report::{
    describe_parameters, own_memory_limit, SimEvent, SimRun, Summary, TimelinePoint,
};
use super::trace::Trace;
use crate::budget::Budget;
use crate::clock::{to_nanos, ManualClock};
use crate::config::{
    min_workers, BuildError, Config, PolicyRegistry, PolicyScope, PolicySpec, PoolConfig, CHAIN,
};
use crate::pool::{Eviction, Lease, Pool, ReserveRefusal, SpawnError, SpawnReservation, Worker};
use crate::probe::MemoryProbe;
use crate::scheduler::{PrewarmStart, Scheduler};

/// A simulated worker: nothing but its footprint.
#[derive(Debug, Clone, Copy)]
pub struct VirtualWorker {
    memory_bytes: u64,
}

impl Worker for VirtualWorker {
    fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
}

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The trace sends requests to a pool the config does not define.
    #[error("{}the trace sends requests to pool `{pool}`, which the config ({config}) does not define; add [pools.{pool}]", location.as_ref().map(|l| format!("{l}: ")).unwrap_or_default())]
    UnknownPool {
        /// The pool.
        pool: String,
        /// The config's source.
        config: String,
        /// `file:line` of the first trace row that names the pool, when the trace knows it.
        location: Option<String>,
    },
    /// A memory-pressure policy has no `limit`, which the simulator needs as total memory.
    #[error("{where_}: memory-pressure needs `limit` in simulation (the total memory that the pools' accounted bytes are measured against), e.g. limit = \"16GiB\"")]
    MissingLimit {
        /// Where the policy is configured.
        where_: String,
    },
    /// A policy could not be built.
    #[error(transparent)]
    Policy(#[from] BuildError),
}

/// How to run a simulation.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Replaces the config's tick.
    pub tick: Option<Duration>,
    /// Stops the run at this virtual time, whatever is left.
    pub until: Option<Duration>,
    /// Once the trace is done, how long to keep ticking without an eviction before concluding
    /// that none can happen. Default: one hour, or twice the longest duration in the config or
    /// in the policies' descriptions (their parameters, defaults included), whichever is longer.
    pub horizon: Option<Duration>,
    /// Start of the measured window: the policies run from 0 (and learn), but requests, cold
    /// starts, waits, spawns, evictions and worker-seconds are counted only from here on.
    /// Default: 0.
    pub from: Option<Duration>,
}

/// Progress callback: (requests arrived so far, total).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize);

/// Replays `trace` once with `policy` as the default policy (per-pool overrides still apply).
pub fn simulate(
    config: &Config,
    registry: &PolicyRegistry,
    policy: &PolicySpec,
    trace: &Trace,
    options: &SimOptions,
    progress: Option<Progress<'_>>,
) -> Result<SimRun, SimError> {
    Engine::new(config, registry, policy, trace, options)?.run(progress)
}

/// A label for a policy: its kind, or a chain's members.
pub fn policy_label(spec: &PolicySpec) -> String {
    if spec.kind == CHAIN {
        let members: Vec<String> = spec.members.iter().map(policy_label).collect();
        format!("chain({})", members.join("+"))
    } else {
        spec.kind.clone()
    }
}

/// The memory-pressure limits in `spec` (error when one has none).
fn limits(spec: &PolicySpec, where_: &str, out: &mut Vec<u64>) -> Result<(), SimError> {
    if spec.kind == CHAIN {
        for (i, member) in spec.members.iter().enumerate() {
            limits(member, &format!("{where_}.policies[{i}]"), out)?;
        }
    } else if spec.kind == "memory-pressure" {
        let limit = own_memory_limit(spec).ok_or_else(|| SimError::MissingLimit {
            where_: where_.to_string(),
        })?;
        out.push(limit);
    }
    Ok(())
}

/// The longest duration written anywhere in `spec`'s parameters.
fn longest_duration(spec: &PolicySpec) -> Duration {
    let own = spec
        .params
        .values()
        .filter_map(|v| v.as_str())
        .filter_map(|s| humantime::parse_duration(s).ok())
        .max()
        .unwrap_or_default();
    spec.members
        .iter()
        .map(longest_duration)
        .max()
        .unwrap_or_default()
        .max(own)
}

/// The longest duration in a built policy's description (`describe()` lists every parameter,
/// defaults included), its members' included.
fn longest_described(policy: &dyn EvictionPolicy) -> Duration {
    let own = policy
        .describe()
        .split_whitespace()
        .map(|token| token.split_once('=').map_or(token, |(_, value)| value))
        .filter_map(|value| humantime::parse_duration(value).ok())
        .max()
        .unwrap_or_default();
    policy
        .children()
        .into_iter()
        .map(longest_described)
        .max()
        .unwrap_or_default()
        .max(own)
}

/// Used = the pools' accounted bytes plus the footprints of the workers still loading;
/// total = the memory-pressure limit.
struct AccountedMemory {
    pools: Vec<Pool<VirtualWorker>>,
    loading: Arc<AtomicU64>,
    total: u64,
}

impl MemoryProbe for AccountedMemory {
    fn read(&mut self) -> Option<MemoryReading> {
        let used: u64 = self
            .pools
            .iter()
            .map(|p| p.accounted_bytes())
            .sum::<u64>()
            .saturating_add(self.loading.load(Ordering::Relaxed));
        Some(MemoryReading {
            total: self.total,
            available: self.total.saturating_sub(used),
            process_rss: None,
        })
    }
}

/// A policy as the engine runs it: unchanged, except that its pre-warm proposals are copied
/// for the engine, which needs to know which are pending (a pending pre-warm is an event that
/// virtual time must not jump over).
struct Observed {
    inner: Box<dyn EvictionPolicy>,
    prewarms: Arc<Mutex<Vec<Prewarm>>>,
}

impl EvictionPolicy for Observed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        self.inner.propose(snapshot, out);
    }

    fn prewarm(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        let start = out.len();
        self.inner.prewarm(snapshot, out);
        if out.len() > start {
            self.prewarms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&out[start..]);
        }
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn children(&self) -> Vec<&dyn EvictionPolicy> {
        self.inner.children()
    }
}

struct KeyState {
    pool: usize,
    model: Arc<str>,
    /// Requests waiting for a worker, first come first served.
    waiting: VecDeque<usize>,
    /// Spawns in progress (for waiting requests or a pre-warm).
    spawning: usize,
    /// Workers held: ready ones plus those spawning.
    held: usize,
    /// Bytes held.
    bytes: u64,
    /// Footprint of one worker.
    memory: u64,
    cold_start: u64,
    /// Requests that arrived in the measured window.
    requests: u64,
    /// Of those, cold starts.
    cold: u64,
    /// Spawns waiting for memory: entries of this key in its budget's queue.
    memory_waits: usize,
    /// Whether a refusal (a footprint bigger than the budget's limit) has been logged.
    refusal_logged: bool,
}

/// A budget as the engine runs it: the library's [`Budget`] (fresh for each run), and the
/// spawns waiting for it to have room, first come first served (one entry per spawn: its key).
struct SimBudget {
    budget: Budget,
    queue: VecDeque<usize>,
}

/// How a request for a spawn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpawnOutcome {
    /// Started: the worker is loading.
    Started,
    /// The key has `max_workers_per_model` workers, loading ones and spawns waiting for memory
    /// included.
    AtLimit,
    /// It does not fit the budget now (or spawns already wait for it).
    NoMemory,
    /// Its footprint is bigger than the budget's whole limit: it never fits.
    TooBig,
}

struct InFlight {
    lease: Lease<VirtualWorker>,
    key: usize,
}

struct Starting {
    reservation: SpawnReservation<VirtualWorker>,
    key: usize,
    /// When the spawn started.
    started: u64,
}

/// Per pool, per worker id (ids are small and never reused within a pool).
#[derive(Default, Clone)]
struct WorkerTable {
    /// Requests in flight.
    in_flight: Vec<u32>,
    /// When the worker finished spawning.
    ready_at: Vec<u64>,
    /// When its spawn started.
    started_at: Vec<u64>,
}

impl WorkerTable {
    /// Requests in flight on worker `id`.
    fn in_flight(&mut self, id: usize) -> &mut u32 {
        self.grow(id);
        &mut self.in_flight[id]
    }

    /// Worker `id`'s spawn, started at `started`, finished at `ready`.
    fn spawned(&mut self, id: usize, started: u64, ready: u64) {
        self.grow(id);
        self.started_at[id] = started;
        self.ready_at[id] = ready;
    }

    fn grow(&mut self, id: usize) {
        if self.in_flight.len() <= id {
            self.in_flight.resize(id + 1, 0);
            self.ready_at.resize(id + 1, 0);
            self.started_at.resize(id + 1, 0);
        }
    }

    /// Whether a request that arrived at `arrival` and waited was waiting for this worker's
    /// spawn: it arrived while the spawn ran (the same-instant order puts a spawn that ends at
    /// `t` before an arrival at `t`), or the spawn started at its arrival (a load of zero time).
    fn waited_for_spawn(&mut self, id: usize, arrival: u64) -> bool {
        self.grow(id);
        self.ready_at[id] > arrival || self.started_at[id] >= arrival
    }
}

struct Engine<'a> {
    trace: &'a Trace,
    label: String,
    parameters: String,
    memory_limit: Option<u64>,
    clock: Arc<ManualClock>,
    pools: Vec<Pool<VirtualWorker>>,
    pool_names: Vec<String>,
    pool_configs: Vec<PoolConfig>,
    /// `max_in_flight_per_worker` per pool.
    capacity: Vec<u64>,
    scheduler: Scheduler,
    tick: u64,
    until: Option<u64>,
    from: u64,
    horizon: u64,
    keys: Vec<KeyState>,
    key_of: Vec<usize>,
    key_index: HashMap<(usize, Arc<str>), usize>,
    completions: BinaryHeap<Reverse<(u64, usize)>>,
    in_flight: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    spawns: BinaryHeap<Reverse<(u64, usize)>>,
    starting: Vec<Option<Starting>>,
    free_starting: Vec<usize>,
    worker_tables: Vec<WorkerTable>,
    /// Pre-warm proposals copied from the policies since the last tick.
    proposed_prewarms: Arc<Mutex<Vec<Prewarm>>>,
    /// The scheduler's pending pre-warms, mirrored: (pool, key) → the first time at which a
    /// tick starts it (when it wants the workers ready, less the key's load time).
    pending_prewarms: HashMap<(usize, Arc<str>), u64>,
    /// Footprints of the workers loading now (read by the memory probe).
    loading_bytes: Arc<AtomicU64>,
    /// Workers with at least one request in flight.
    busy_workers: u64,
    /// The budgets of this run, and per pool the index of its budget.
    budgets: Vec<SimBudget>,
    pool_budget: Vec<Option<usize>>,
    /// `acquire_timeout` per pool, nanoseconds.
    acquire_timeout: Vec<u64>,
    /// (deadline, request) of every request that joined a queue; stale once it left it.
    deadlines: BinaryHeap<Reverse<(u64, usize)>>,
    /// Per request: whether it waits in its key's queue now.
    queued_now: Vec<bool>,
    /// Per request: whether it has been counted as waiting for memory.
    memory_waited: Vec<bool>,
    /// Spawns in progress, over all keys.
    spawning: u64,
    summary: Summary,
    events: Vec<SimEvent>,
    timeline: Vec<TimelinePoint>,
    waits: Vec<u64>,
    /// Workers held (ready or spawning), over all keys.
    workers: u64,
    bytes: u64,
    queued: usize,
    held_nanos: u128,
    busy_nanos: u128,
    spawning_nanos: u128,
    last_change: u64,
    now: u64,
}

impl<'a> Engine<'a> {
    fn new(
        config: &Config,
        registry: &PolicyRegistry,
        policy: &PolicySpec,
        trace: &'a Trace,
        options: &SimOptions,
    ) -> Result<Self, SimError> {
        let mut found = Vec::new();
        limits(policy, "the default policy", &mut found)?;
        for (name, pool) in &config.pools {
            if let Some(spec) = &pool.policy {
                limits(spec, &format!("pools.{name}.policy"), &mut found)?;
            }
        }
        let memory_total = found.into_iter().max();

        let clock = Arc::new(ManualClock::new());
        let tick = options
            .tick
            .unwrap_or(config.scheduler.tick)
            .max(Duration::from_millis(1));
        let build = |spec: &PolicySpec, scope: PolicyScope<'_>| {
            config
                .policy_instance(spec, scope, registry)
                .map_err(SimError::Policy)
        };
        let proposed_prewarms = Arc::new(Mutex::new(Vec::new()));
        let mut described = Duration::ZERO;
        let mut observe = |policy: Box<dyn EvictionPolicy>| {
            described = described.max(longest_described(&*policy));
            Box::new(Observed {
                inner: policy,
                prewarms: Arc::clone(&proposed_prewarms),
            }) as Box<dyn EvictionPolicy>
        };

        // Fresh budgets for this run (never `Config::budget`, whose budgets are shared by every
        // pool built from the config): runs must not share state. No probe: used memory is the
        // accounted bytes, the limit the budget's `limit`.
        let mut budgets = Vec::new();
        let mut budget_index = HashMap::new();
        for (name, budget) in &config.budgets {
            budget_index.insert(name.as_str(), budgets.len());
            budgets.push(SimBudget {
                budget: Budget::builder(name, budget.limit.bytes())
                    .order(budget.order)
                    .build(),
                queue: VecDeque::new(),
            });
        }

        let mut pools = Vec::new();
        let mut pool_names = Vec::new();
        let mut pool_configs = Vec::new();
        let mut capacity = Vec::new();
        let mut pool_index = HashMap::new();
        let mut pool_budget = Vec::new();
        let mut acquire_timeout = Vec::new();
        let mut own_policies = Vec::new();
        for (name, pool_config) in &config.pools {
            let defaults = pool_config.clone();
            let mut builder = Pool::builder(name, move |key: &str| {
                Ok::<_, SpawnError>(VirtualWorker {
                    memory_bytes: defaults.memory_of(key),
                })
            })
            .clock(clock.clone())
            .inline_shutdown()
            .max_workers_per_model(pool_config.max_workers_per_model)
            .max_in_flight_per_worker(pool_config.max_in_flight_per_worker)
            .acquire_timeout(pool_config.acquire_timeout)
            .cold_start(pool_config.cold_start)
            .memory(pool_config.memory.bytes())
            .min_workers(min_workers(pool_config.policy.as_ref().unwrap_or(policy)));
            for (key, model) in &pool_config.models {
                builder = builder.model_overrides(key, model.overrides);
                if let Some(load) = model.cold_start {
                    builder = builder.model_cold_start(key, load);
                }
                if let Some(memory) = model.memory {
                    builder = builder.model_memory(key, memory.bytes());
                }
            }
            // The config refuses a pool that names an unknown budget.
            let budget = pool_config
                .budget
                .as_deref()
                .and_then(|b| budget_index.get(b).copied());
            if let Some(b) = budget {
                builder = builder.budget(&budgets[b].budget);
            }
            pool_budget.push(budget);
            acquire_timeout.push(to_nanos(pool_config.acquire_timeout));
            pool_index.insert(name.as_str(), pools.len());
            pools.push(builder.build());
            pool_names.push(name.clone());
            pool_configs.push(pool_config.clone());
            capacity.push(u64::from(pool_config.max_in_flight_per_worker.max(1)));
            own_policies.push(
                pool_config
                    .policy
                    .as_ref()
                    .map(|spec| build(spec, PolicyScope::Pool(name)))
                    .transpose()?
                    .map(&mut observe),
            );
        }

        let default_policy = observe(build(policy, PolicyScope::Default)?);
        let parameters = describe_parameters(default_policy.as_ref(), policy);
        let loading_bytes = Arc::new(AtomicU64::new(0));
        let mut builder = Scheduler::builder()
            .clock(clock.clone())
            .tick(tick)
            .manual_prewarm()
            .policy(default_policy);
        if let Some(total) = memory_total {
            builder = builder.probe(AccountedMemory {
                pools: pools.clone(),
                loading: Arc::clone(&loading_bytes),
                total,
            });
        }
        let scheduler = builder.build();
        for (pool, own) in pools.iter().zip(own_policies) {
            scheduler.register_managed(pool.managed(), own);
        }

        let mut keys: Vec<KeyState> = Vec::new();
        let mut key_index: HashMap<(usize, Arc<str>), usize> = HashMap::new();
        let mut key_of = Vec::with_capacity(trace.requests.len());
        for request in &trace.requests {
            let Some(&pool) = pool_index.get(&*request.pool) else {
                return Err(SimError::UnknownPool {
                    pool: request.pool.to_string(),
                    config: config.source.clone(),
                    location: trace.pool_origin(&request.pool),
                });
            };
            let next = keys.len();
            let index = *key_index
                .entry((pool, request.model.clone()))
                .or_insert(next);
            if index == next {
                keys.push(new_key(pool, &request.model, &pool_configs[pool]));
            }
            key_of.push(index);
        }

        let longest = config
            .pools
            .values()
            .flat_map(|p| {
                p.models
                    .values()
                    .flat_map(|m| [m.overrides.idle, m.overrides.step, m.overrides.ttl])
                    .chain(std::iter::once(p.policy.as_ref().map(longest_duration)))
            })
            .flatten()
            .chain([longest_duration(policy), described])
            .max()
            .unwrap_or_default();
        let horizon = options
            .horizon
            .unwrap_or_else(|| Duration::from_secs(3600).max(longest.saturating_mul(2)));

        Ok(Engine {
            trace,
            label: policy_label(policy),
            parameters,
            memory_limit: memory_total,
            clock,
            pools,
            pool_names,
            pool_configs,
            capacity,
            scheduler,
            tick: to_nanos(tick),
            until: options.until.map(to_nanos),
            from: options.from.map_or(0, to_nanos),
            horizon: to_nanos(horizon).saturating_add(to_nanos(tick)),
            keys,
            key_of,
            key_index,
            completions: BinaryHeap::new(),
            in_flight: Vec::new(),
            free_slots: Vec::new(),
            spawns: BinaryHeap::new(),
            starting: Vec::new(),
            free_starting: Vec::new(),
            worker_tables: vec![WorkerTable::default(); config.pools.len()],
            proposed_prewarms,
            pending_prewarms: HashMap::new(),
            loading_bytes,
            busy_workers: 0,
            budgets,
            pool_budget,
            acquire_timeout,
            deadlines: BinaryHeap::new(),
            queued_now: vec![false; trace.requests.len()],
            memory_waited: vec![false; trace.requests.len()],
            spawning: 0,
            summary: Summary::default(),
            events: Vec::new(),
            timeline: Vec::new(),
            waits: Vec::with_capacity(trace.requests.len()),
            workers: 0,
            bytes: 0,
            queued: 0,
            held_nanos: 0,
            busy_nanos: 0,
            spawning_nanos: 0,
            last_change: 0,
            now: 0,
        })
    }

    fn run(mut self, mut progress: Option<Progress<'_>>) -> Result<SimRun, SimError> {
        let requests = &self.trace.requests;
        let total = requests.len();
        let mut next_request = 0usize;
        let mut next_tick = 0u64;
        let report_every = (total / 100).max(1);
        let end;
        loop {
            let next_arrival = requests.get(next_request).map(|r| to_nanos(r.at));
            let next_completion = self.completions.peek().map(|Reverse((t, _))| *t);
            let next_spawn = self.spawns.peek().map(|Reverse((t, _))| *t);
            let next_deadline = self.next_deadline();
            let next_event = [next_arrival, next_completion, next_spawn, next_deadline]
                .into_iter()
                .flatten()
                .min();
            let busy = next_event.is_some() || self.queued > 0 || !self.pending_prewarms.is_empty();
            next_tick = self.jump(next_tick, next_event);
            let t = next_event.map_or(next_tick, |e| e.min(next_tick));
            if let Some(until) = self.until {
                if t > until {
                    self.advance(until);
                    end = until;
                    break;
                }
            }
            if !busy {
                if self.workers == 0 {
                    end = self.now;
                    break;
                }
                if t > self.last_change.saturating_add(self.horizon) {
                    // Nothing was evicted for a whole horizon: nothing more will be. The run
                    // ends at its last change; undo the idle time counted since (every worker
                    // is idle: nothing is in flight or loading).
                    end = self.last_change;
                    let counted_from = end.max(self.from);
                    if self.now > counted_from {
                        self.held_nanos -=
                            u128::from(self.now - counted_from) * u128::from(self.workers);
                    }
                    break;
                }
            }
            self.advance(t);
            self.clock.set(Duration::from_nanos(t));

            while let Some(&Reverse((at, slot))) = self.completions.peek() {
                if at != t {
                    break;
                }
                self.completions.pop();
                self.complete(slot);
            }
            while let Some(&Reverse((at, slot))) = self.spawns.peek() {
                if at != t {
                    break;
                }
                self.spawns.pop();
                self.spawned(slot);
            }
            while let Some(&Reverse((at, request))) = self.deadlines.peek() {
                if at > t {
                    break;
                }
                self.deadlines.pop();
                self.time_out(request);
            }
            while next_request < total && to_nanos(requests[next_request].at) == t {
                self.arrive(next_request);
                next_request += 1;
                if let Some(report) = progress.as_mut() {
                    if next_request.is_multiple_of(report_every) || next_request == total {
                        report(next_request, total);
                    }
                }
            }
            if t == next_tick {
                self.tick_once();
                next_tick = next_tick.saturating_add(self.tick);
            }
            if t == u64::MAX {
                // Virtual time is at the end of its range (a trace at the edge of what it may
                // hold): nothing can happen later.
                end = t;
                break;
            }
        }
        Ok(self.finish(end))
    }

    /// The next tick to run, moved over virtual time in which no tick could do anything: no
    /// request waits, and no ready worker is idle (so no policy can evict one), or nothing at
    /// all happened for a whole horizon. It stops at the next event and at the first tick at
    /// which a pending pre-warm comes due; ticks stay on the grid of multiples of the tick. The
    /// first tick, at 0, always runs.
    fn jump(&self, next_tick: u64, next_event: Option<u64>) -> u64 {
        if self.queued > 0 || next_tick == 0 {
            return next_tick;
        }
        let idle_ready = self.workers - self.spawning - self.busy_workers;
        let quiet = next_tick > self.last_change.saturating_add(self.horizon);
        if idle_ready > 0 && !quiet {
            return next_tick;
        }
        let due = self.pending_prewarms.values().copied().min();
        match next_event.into_iter().chain(due).min() {
            Some(target) if target > next_tick => {
                // The first tick at or after `target`.
                let steps = target.div_ceil(self.tick);
                steps.saturating_mul(self.tick).max(next_tick)
            }
            _ => next_tick,
        }
    }

    /// Moves time to `t`, integrating held, busy and loading workers over the part of
    /// `[now, t]` inside the measured window.
    fn advance(&mut self, t: u64) {
        if t <= self.now {
            return;
        }
        let start = self.now.max(self.from);
        if t > start {
            let dt = u128::from(t - start);
            self.held_nanos += dt * u128::from(self.workers);
            self.busy_nanos += dt * u128::from(self.busy_workers);
            self.spawning_nanos += dt * u128::from(self.spawning);
        }
        if self.now < self.from && t >= self.from {
            self.note_peaks();
        }
        self.now = t;
    }

    fn in_window(&self) -> bool {
        self.now >= self.from
    }

    fn note_peaks(&mut self) {
        self.summary.peak_workers = self.summary.peak_workers.max(self.workers);
        self.summary.peak_memory_bytes = self.summary.peak_memory_bytes.max(self.bytes);
    }

    fn cold_start_of(&self, pool: usize, key: &Arc<str>) -> u64 {
        match self.key_index.get(&(pool, Arc::clone(key))) {
            Some(&index) => self.keys[index].cold_start,
            None => to_nanos(self.pool_configs[pool].cold_start_of(key)),
        }
    }

    fn arrive(&mut self, request: usize) {
        let key = self.key_of[request];
        self.last_change = self.now;
        if to_nanos(self.trace.requests[request].at) >= self.from {
            self.summary.requests += 1;
            self.keys[key].requests += 1;
        }
        let state = &self.keys[key];
        if state.waiting.is_empty() {
            if let Some(lease) = self.pools[state.pool].try_acquire(&state.model) {
                self.start(request, key, lease, false);
                return;
            }
        }
        let pool = self.keys[key].pool;
        self.keys[key].waiting.push_back(request);
        self.queued += 1;
        self.queued_now[request] = true;
        let deadline = self.now.saturating_add(self.acquire_timeout[pool]);
        self.deadlines.push(Reverse((deadline, request)));
        self.ensure_spawns(key);
        // Behind a spawn that waits for memory (a spawn queued just now has marked it).
        let state = &self.keys[key];
        if state.memory_waits > 0 && self.queued_now[request] && !self.memory_waited[request] {
            let covered = (state.spawning as u64).saturating_mul(self.capacity[state.pool]);
            if state.waiting.len() as u64 > covered {
                self.mark_memory_wait(request);
            }
        }
        // After the reservation: the pool knows the key, so it records when this came.
        let state = &self.keys[key];
        self.pools[state.pool].record_arrival(&state.model);
    }

    /// Starts spawns while the key has more waiters than its spawns in progress and its spawns
    /// waiting for memory can take (`max_in_flight_per_worker` each) and room to grow. A spawn
    /// that does not fit its budget waits for memory in the budget's queue.
    fn ensure_spawns(&mut self, key: usize) {
        loop {
            let state = &self.keys[key];
            let spawns = (state.spawning + state.memory_waits) as u64;
            let covered = spawns.saturating_mul(self.capacity[state.pool]);
            if state.waiting.len() as u64 <= covered {
                return;
            }
            match self.request_spawn(key) {
                SpawnOutcome::Started | SpawnOutcome::NoMemory => {}
                SpawnOutcome::AtLimit => return,
                SpawnOutcome::TooBig => {
                    self.refuse(key);
                    return;
                }
            }
        }
    }

    /// A spawn of `key` for its waiting requests: started now, or queued behind the spawns that
    /// already wait for the budget (first come, first served), or queued because it does not
    /// fit (`NoMemory`: it waits for memory).
    fn request_spawn(&mut self, key: usize) -> SpawnOutcome {
        let pool = self.keys[key].pool;
        if let Some(b) = self.pool_budget[pool] {
            if !self.budgets[b].queue.is_empty() {
                let state = &self.keys[key];
                if state.held + state.memory_waits >= self.pool_configs[pool].max_workers_per_model
                {
                    return SpawnOutcome::AtLimit;
                }
                self.wait_for_memory(b, key);
                return SpawnOutcome::NoMemory;
            }
        }
        let outcome = self.start_spawn(key, false);
        if outcome == SpawnOutcome::NoMemory {
            if let Some(b) = self.pool_budget[pool] {
                self.wait_for_memory(b, key);
            }
        }
        outcome
    }

    /// Queues a spawn of `key` on budget `b` and marks the requests that wait for it.
    fn wait_for_memory(&mut self, b: usize, key: usize) {
        self.budgets[b].queue.push_back(key);
        self.keys[key].memory_waits += 1;
        self.note_memory_waits(key);
    }

    /// While `key` has spawns waiting for memory, its waiting requests beyond those that its
    /// loading spawns take wait for memory: count each once (in the window).
    fn note_memory_waits(&mut self, key: usize) {
        let state = &self.keys[key];
        if state.memory_waits == 0 {
            return;
        }
        let covered = (state.spawning as u64).saturating_mul(self.capacity[state.pool]);
        let skip = usize::try_from(covered).unwrap_or(usize::MAX);
        for position in skip..state.waiting.len() {
            let request = self.keys[key].waiting[position];
            self.mark_memory_wait(request);
        }
    }

    /// Counts `request` (once, in the window) as one that waited for memory.
    fn mark_memory_wait(&mut self, request: usize) {
        if !self.memory_waited[request] {
            self.memory_waited[request] = true;
            if to_nanos(self.trace.requests[request].at) >= self.from {
                self.summary.admission_waits += 1;
            }
        }
    }

    /// Withdraws `key`'s spawns waiting for memory that its queue no longer needs (requests
    /// were served or gave up), youngest first; the budget's next spawn then tries again.
    fn trim_memory_waits(&mut self, key: usize) {
        let pool = self.keys[key].pool;
        let Some(b) = self.pool_budget[pool] else {
            return;
        };
        let mut withdrawn = false;
        loop {
            let state = &self.keys[key];
            if state.memory_waits == 0 {
                break;
            }
            let spawns = (state.spawning + state.memory_waits - 1) as u64;
            if state.waiting.len() as u64 > spawns.saturating_mul(self.capacity[pool]) {
                break;
            }
            let queue = &mut self.budgets[b].queue;
            if let Some(position) = queue.iter().rposition(|&k| k == key) {
                queue.remove(position);
            }
            self.keys[key].memory_waits -= 1;
            withdrawn = true;
        }
        if withdrawn {
            self.pump(b);
        }
    }

    /// Lets the spawns waiting on budget `b` try again, oldest first, until one does not fit:
    /// each may evict idle victims to make room (reason `admission`).
    fn pump(&mut self, b: usize) {
        while let Some(key) = self.budgets[b].queue.pop_front() {
            self.keys[key].memory_waits -= 1;
            match self.start_spawn(key, false) {
                SpawnOutcome::Started | SpawnOutcome::AtLimit => {}
                SpawnOutcome::NoMemory => {
                    self.budgets[b].queue.push_front(key);
                    self.keys[key].memory_waits += 1;
                    return;
                }
                SpawnOutcome::TooBig => self.refuse(key),
            }
        }
    }

    /// The key's footprint is bigger than its budget's whole limit: its waiting requests fail
    /// at once, and nothing is evicted for them.
    fn refuse(&mut self, key: usize) {
        if !self.keys[key].refusal_logged {
            self.keys[key].refusal_logged = true;
            let state = &self.keys[key];
            let budget = self.pool_budget[state.pool].map(|b| &self.budgets[b].budget);
            log::warn!(
                "pool {}: a worker of `{}` needs {}, more than budget `{}` holds ({}): its requests are rejected",
                self.pool_names[state.pool],
                state.model,
                poolwarden_policies::ByteSize(state.memory),
                budget.map_or("", |b| b.name()),
                poolwarden_policies::ByteSize(budget.map_or(0, |b| b.limit()))
            );
        }
        while let Some(request) = self.keys[key].waiting.pop_front() {
            self.queued -= 1;
            self.reject(request, key);
        }
        self.trim_memory_waits(key);
    }

    /// `request` of `key`, already out of its key's queue, fails without a worker.
    fn reject(&mut self, request: usize, key: usize) {
        self.queued_now[request] = false;
        self.last_change = self.now;
        if to_nanos(self.trace.requests[request].at) >= self.from {
            self.summary.rejected += 1;
        }
        let state = &self.keys[key];
        self.pools[state.pool].record_abandoned(&state.model);
    }

    /// `request`'s `acquire_timeout` has passed: if it still waits, it fails.
    fn time_out(&mut self, request: usize) {
        if !self.queued_now[request] {
            return;
        }
        let key = self.key_of[request];
        let waiting = &mut self.keys[key].waiting;
        let Some(position) = waiting.iter().position(|&r| r == request) else {
            return;
        };
        waiting.remove(position);
        self.queued -= 1;
        self.reject(request, key);
        self.trim_memory_waits(key);
    }

    /// The earliest deadline of a request that still waits (stale ones are dropped).
    fn next_deadline(&mut self) -> Option<u64> {
        while let Some(&Reverse((at, request))) = self.deadlines.peek() {
            if self.queued_now[request] {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Reserves a spawn of `key` (with a budget: evicting idle victims if that makes room) and
    /// schedules its end `cold_start` from now. The worker is held from now on.
    fn start_spawn(&mut self, key: usize, prewarm: bool) -> SpawnOutcome {
        let state = &self.keys[key];
        let pool = state.pool;
        let result = self.pools[pool].try_reserve(&state.model);
        if let Some(b) = self.pool_budget[pool] {
            self.record_admission_evictions(b);
        }
        let reservation = match result {
            Ok(reservation) => reservation,
            // The simulator never closes its pools.
            Err(ReserveRefusal::AtLimit | ReserveRefusal::Closed) => return SpawnOutcome::AtLimit,
            Err(ReserveRefusal::NoMemory { .. }) => return SpawnOutcome::NoMemory,
            Err(ReserveRefusal::TooBig { .. }) => return SpawnOutcome::TooBig,
        };
        let at = self.now.saturating_add(self.keys[key].cold_start);
        let memory = self.keys[key].memory;
        let state = &mut self.keys[key];
        state.spawning += 1;
        state.held += 1;
        state.bytes += memory;
        self.workers += 1;
        self.bytes += memory;
        self.spawning += 1;
        self.loading_bytes.fetch_add(memory, Ordering::Relaxed);
        self.last_change = self.now;
        if self.in_window() {
            self.summary.spawns += 1;
            if prewarm {
                self.summary.prewarm_spawns += 1;
            }
            self.note_peaks();
        }
        let item = Some(Starting {
            reservation,
            key,
            started: self.now,
        });
        let slot = match self.free_starting.pop() {
            Some(slot) => {
                self.starting[slot] = item;
                slot
            }
            None => {
                self.starting.push(item);
                self.starting.len() - 1
            }
        };
        self.spawns.push(Reverse((at, slot)));
        self.note(key);
        SpawnOutcome::Started
    }

    /// Records the evictions that admission made on budget `b` to make room, at their time.
    /// Each pool lists its own; across pools they are put back in the order admission took
    /// them, the budget's victim order (`lru`: least recently used first, ties by pool
    /// registration order, then worker id; `largest`: largest footprint first, then as `lru`).
    fn record_admission_evictions(&mut self, b: usize) {
        let mut made: Vec<(usize, Duration, Eviction)> = Vec::new();
        for pool in 0..self.pools.len() {
            if self.pool_budget[pool] == Some(b) {
                made.extend(
                    self.pools[pool]
                        .take_admission_evictions()
                        .into_iter()
                        .map(|(at, eviction)| (pool, at, eviction)),
                );
            }
        }
        if made.len() > 1 {
            // Pools join their budget in `self.pools` order, so the pool index orders ties as
            // registration does. Last used = `at - idle_for`.
            let largest = self.budgets[b].budget.order() == VictimOrder::Largest;
            made.sort_by_key(|(pool, at, e)| {
                let size = if largest { e.freed_bytes } else { 0 };
                (
                    *at,
                    Reverse(size),
                    at.saturating_sub(e.idle_for),
                    *pool,
                    e.worker,
                )
            });
        }
        for (pool, at, eviction) in made {
            self.evicted(pool, at, &eviction);
        }
    }

    /// A worker of pool `pool` left at `at`: counts, timeline and event.
    fn evicted(&mut self, pool: usize, at: Duration, eviction: &Eviction) {
        let key = self
            .key_index
            .get(&(pool, Arc::clone(&eviction.key)))
            .copied();
        self.workers -= 1;
        self.bytes -= eviction.freed_bytes;
        self.last_change = self.now;
        if let Some(key) = key {
            let state = &mut self.keys[key];
            state.held = state.held.saturating_sub(1);
            state.bytes = state.bytes.saturating_sub(eviction.freed_bytes);
            self.note(key);
        }
        if self.in_window() {
            self.summary.evictions += 1;
            *self
                .summary
                .evictions_by_reason
                .entry(eviction.reason.to_string())
                .or_insert(0) += 1;
            self.events.push(SimEvent {
                at_secs: at.as_secs_f64(),
                pool: self.pool_names[pool].clone(),
                model: eviction.key.to_string(),
                worker: eviction.worker.0,
                reason: eviction.reason.to_string(),
                workers_after: eviction.workers_left,
            });
        }
    }

    fn spawned(&mut self, slot: usize) {
        let Some(Starting {
            reservation,
            key,
            started,
        }) = self.starting[slot].take()
        else {
            return;
        };
        self.free_starting.push(slot);
        let memory = self.keys[key].memory;
        let lease = reservation.complete(VirtualWorker {
            memory_bytes: memory,
        });
        self.keys[key].spawning -= 1;
        self.spawning -= 1;
        self.loading_bytes.fetch_sub(memory, Ordering::Relaxed);
        self.last_change = self.now;
        let pool = self.keys[key].pool;
        let id = worker_index(lease.worker_id());
        self.worker_tables[pool].spawned(id, started, self.now);
        match self.keys[key].waiting.pop_front() {
            Some(request) => {
                self.queued -= 1;
                self.queued_now[request] = false;
                self.start(request, key, lease, true);
                self.serve_waiting(key);
            }
            None => {
                // Its requests went (served or gave up): it is idle from the start.
                drop(lease);
                self.went_idle(pool, id);
            }
        }
    }

    /// Starts `request` on `lease`'s worker. `waited`: it went through the queue.
    fn start(&mut self, request: usize, key: usize, lease: Lease<VirtualWorker>, waited: bool) {
        let r = &self.trace.requests[request];
        let arrival = to_nanos(r.at);
        let counted = arrival >= self.from;
        let pool = self.keys[key].pool;
        let id = worker_index(lease.worker_id());
        let cold = waited && self.worker_tables[pool].waited_for_spawn(id, arrival);
        let in_flight = self.worker_tables[pool].in_flight(id);
        *in_flight += 1;
        if *in_flight == 1 {
            self.busy_workers += 1;
        }
        if counted {
            self.waits.push(self.now - arrival);
            if cold {
                self.summary.cold_starts += 1;
                self.keys[key].cold += 1;
            }
        }
        let done = self.now.saturating_add(to_nanos(r.duration));
        let item = InFlight { lease, key };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.in_flight[slot] = Some(item);
                slot
            }
            None => {
                self.in_flight.push(Some(item));
                self.in_flight.len() - 1
            }
        };
        self.completions.push(Reverse((done, slot)));
    }

    fn complete(&mut self, slot: usize) {
        let Some(InFlight { lease, key }) = self.in_flight[slot].take() else {
            return;
        };
        self.free_slots.push(slot);
        let (pool, id) = (self.keys[key].pool, worker_index(lease.worker_id()));
        drop(lease);
        let count = self.worker_tables[pool].in_flight(id);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.busy_workers -= 1;
        }
        self.last_change = self.now;
        self.serve_waiting(key);
        self.went_idle(pool, id);
    }

    /// If worker `id` of `pool` has nothing in flight, the spawns waiting on the pool's budget
    /// try again: it may be the victim that makes room.
    fn went_idle(&mut self, pool: usize, id: usize) {
        let Some(b) = self.pool_budget[pool] else {
            return;
        };
        if *self.worker_tables[pool].in_flight(id) == 0 {
            self.pump(b);
        }
    }

    /// Hands free capacity of `key` to its waiters, first come first served.
    fn serve_waiting(&mut self, key: usize) {
        while !self.keys[key].waiting.is_empty() {
            let state = &self.keys[key];
            let Some(lease) = self.pools[state.pool].try_acquire(&state.model) else {
                break;
            };
            let request = self.keys[key].waiting.pop_front().unwrap_or_default();
            self.queued -= 1;
            self.queued_now[request] = false;
            self.start(request, key, lease, true);
        }
        self.trim_memory_waits(key);
    }

    /// The engine's index of `key` in pool `pool`, created for a key the trace never uses (a
    /// pre-warm may name one).
    fn key_for(&mut self, pool: usize, key: &Arc<str>) -> usize {
        if let Some(&index) = self.key_index.get(&(pool, Arc::clone(key))) {
            return index;
        }
        let index = self.keys.len();
        self.keys.push(new_key(pool, key, &self.pool_configs[pool]));
        self.key_index.insert((pool, Arc::clone(key)), index);
        index
    }

    fn tick_once(&mut self) {
        let report = self.scheduler.tick_once();
        for event in report.evictions {
            let pool = self
                .pool_names
                .iter()
                .position(|n| **n == *event.pool)
                .unwrap_or(0);
            let eviction = Eviction {
                key: event.key,
                worker: event.worker,
                reason: event.reason,
                workers_left: event.workers_left,
                freed_bytes: event.freed_bytes,
                idle_for: Duration::ZERO,
            };
            self.evicted(pool, event.at, &eviction);
        }
        self.mirror_prewarms();
        for start in report.prewarms {
            self.prewarm(start);
        }
        // Spawns waiting for memory go first (the tick's evictions may have made room), then
        // the keys whose waiters need more spawns.
        for b in 0..self.budgets.len() {
            self.pump(b);
        }
        if self.queued > 0 {
            for key in 0..self.keys.len() {
                if !self.keys[key].waiting.is_empty() {
                    self.ensure_spawns(key);
                }
            }
        }
    }

    /// Keeps the engine's copy of the scheduler's pending pre-warms: this tick's proposals
    /// replace (or, with 0 workers, cancel) a key's pending one, and those due at this tick
    /// have fired.
    fn mirror_prewarms(&mut self) {
        let proposed = std::mem::take(
            &mut *self
                .proposed_prewarms
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for prewarm in proposed {
            if prewarm.pool >= self.pools.len() {
                continue;
            }
            if prewarm.workers == 0 {
                self.pending_prewarms.remove(&(prewarm.pool, prewarm.key));
            } else {
                let load = self.cold_start_of(prewarm.pool, &prewarm.key);
                let due = to_nanos(prewarm.at).saturating_sub(load);
                self.pending_prewarms
                    .insert((prewarm.pool, prewarm.key), due);
            }
        }
        // The scheduler starts a pre-warm at the first tick at which `now + load >= at`.
        let now = self.now;
        self.pending_prewarms.retain(|_, due| now < *due);
    }

    /// Starts the spawns of a pre-warm that came due. With a budget, a pre-warm spawn never
    /// waits for memory: it starts if it fits now (evicting idle victims if that makes room)
    /// and no spawn waits on the budget before it; otherwise it is dropped.
    fn prewarm(&mut self, start: PrewarmStart) {
        if start.pool >= self.pools.len() {
            return;
        }
        let key = self.key_for(start.pool, &start.key);
        if let Some(b) = self.pool_budget[start.pool] {
            if !self.budgets[b].queue.is_empty() {
                log::debug!(
                    "pool {}: pre-warm of `{}` dropped: spawns wait for budget `{}`",
                    self.pool_names[start.pool],
                    start.key,
                    self.budgets[b].budget.name()
                );
                return;
            }
        }
        for _ in 0..start.spawns {
            let outcome = self.start_spawn(key, true);
            if outcome != SpawnOutcome::Started {
                if outcome != SpawnOutcome::AtLimit {
                    log::debug!(
                        "pool {}: pre-warm of `{}` dropped: {outcome:?}",
                        self.pool_names[start.pool],
                        start.key
                    );
                }
                break;
            }
        }
    }

    /// Records `key`'s worker count and bytes on the timeline.
    fn note(&mut self, key: usize) {
        let state = &self.keys[key];
        self.timeline.push(TimelinePoint {
            at_secs: self.now as f64 / 1e9,
            pool: self.pool_names[state.pool].clone(),
            model: state.model.to_string(),
            workers: state.held,
            memory_bytes: state.bytes,
        });
    }

    fn finish(mut self, end: u64) -> SimRun {
        let held = self.held_nanos as f64 / 1e9;
        let busy = self.busy_nanos as f64 / 1e9;
        let loading = self.spawning_nanos as f64 / 1e9;
        let s = &mut self.summary;
        s.worker_seconds = held;
        s.idle_worker_seconds = (held - busy - loading).max(0.0);
        s.idle_worker_hours = s.idle_worker_seconds / 3600.0;
        s.from_secs = self.from as f64 / 1e9;
        s.end_secs = end as f64 / 1e9;
        s.window_secs = s.end_secs;
        s.workers_at_end = self.workers;
        if !self.waits.is_empty() {
            let n = self.waits.len();
            let sum: u128 = self.waits.iter().map(|w| u128::from(*w)).sum();
            s.mean_wait_secs = sum as f64 / n as f64 / 1e9;
            self.waits.sort_unstable();
            s.p99_wait_secs = self.waits[nearest_rank(0.99, n)] as f64 / 1e9;
            s.max_wait_secs = self.waits[n - 1] as f64 / 1e9;
        }
        let mut per_key: Vec<f64> = self
            .keys
            .iter()
            .filter(|k| k.requests > 0)
            .map(|k| 100.0 * k.cold as f64 / k.requests as f64)
            .collect();
        if !per_key.is_empty() {
            per_key.sort_unstable_by(f64::total_cmp);
            let n = per_key.len();
            s.key_cold_start_pct_p50 = per_key[nearest_rank(0.50, n)];
            s.key_cold_start_pct_p75 = per_key[nearest_rank(0.75, n)];
            s.key_cold_start_pct_p90 = per_key[nearest_rank(0.90, n)];
        }
        SimRun {
            policy: self.label,
            parameters: self.parameters,
            memory_limit_bytes: self.memory_limit,
            summary: self.summary,
            events: self.events,
            timeline: self.timeline,
        }
    }
}

fn new_key(pool: usize, model: &Arc<str>, config: &PoolConfig) -> KeyState {
    KeyState {
        pool,
        model: Arc::clone(model),
        waiting: VecDeque::new(),
        spawning: 0,
        held: 0,
        bytes: 0,
        memory: config.memory_of(model),
        cold_start: to_nanos(config.cold_start_of(model)),
        requests: 0,
        cold: 0,
        memory_waits: 0,
        refusal_logged: false,
    }
}

/// The 0-based index of the `q` quantile of `n` sorted values, by nearest rank.
fn nearest_rank(q: f64, n: usize) -> usize {
    ((q * n as f64).ceil() as usize).clamp(1, n) - 1
}

/// A worker id as an index into a per-pool table.
fn worker_index(id: WorkerId) -> usize {
    usize::try_from(id.0).unwrap_or(usize::MAX)
}
