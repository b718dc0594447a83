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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolwarden_policies::{EvictionPolicy, MemoryReading, Prewarm, Proposal, Snapshot, WorkerId};

use super::report::{describe_parameters, SimEvent, SimRun, Summary, TimelinePoint};
use super::trace::Trace;
use crate::clock::{to_nanos, ManualClock};
use crate::config::{
    BuildError, Config, PolicyRegistry, PolicyScope, PolicySpec, PoolConfig, CHAIN,
};
use crate::pool::{Lease, Pool, SpawnError, SpawnReservation, Worker};
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
        let limit = spec
            .params
            .get("limit")
            .and_then(|v| match v {
                toml::Value::String(s) => s
                    .parse::<poolwarden_policies::ByteSize>()
                    .ok()
                    .map(|b| b.bytes()),
                toml::Value::Integer(i) => u64::try_from(*i).ok(),
                _ => None,
            })
            .ok_or_else(|| SimError::MissingLimit {
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
}

struct InFlight {
    lease: Lease<VirtualWorker>,
    key: usize,
}

struct Starting {
    reservation: SpawnReservation<VirtualWorker>,
    key: usize,
}

/// Per pool, per worker id (ids are small and never reused within a pool).
#[derive(Default, Clone)]
struct WorkerTable {
    /// Requests in flight.
    in_flight: Vec<u32>,
    /// When the worker finished spawning.
    ready_at: Vec<u64>,
}

impl WorkerTable {
    fn slot(&mut self, id: usize) -> (&mut u32, &mut u64) {
        if self.in_flight.len() <= id {
            self.in_flight.resize(id + 1, 0);
            self.ready_at.resize(id + 1, 0);
        }
        (&mut self.in_flight[id], &mut self.ready_at[id])
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

        let mut pools = Vec::new();
        let mut pool_names = Vec::new();
        let mut pool_configs = Vec::new();
        let mut capacity = Vec::new();
        let mut pool_index = HashMap::new();
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
            .cold_start(pool_config.cold_start);
            for (key, model) in &pool_config.models {
                builder = builder.model_overrides(key, model.overrides);
                if let Some(load) = model.cold_start {
                    builder = builder.model_cold_start(key, load);
                }
            }
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
            let next_event = [next_arrival, next_completion, next_spawn]
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
        self.keys[key].waiting.push_back(request);
        self.queued += 1;
        self.ensure_spawns(key);
        // After the reservation: the pool knows the key, so it records when this came.
        let state = &self.keys[key];
        self.pools[state.pool].record_arrival(&state.model);
    }

    /// Starts spawns while the key has more waiters than its spawns in progress can take
    /// (`max_in_flight_per_worker` each) and room to grow.
    fn ensure_spawns(&mut self, key: usize) {
        loop {
            let state = &self.keys[key];
            let covered = (state.spawning as u64).saturating_mul(self.capacity[state.pool]);
            if state.waiting.len() as u64 <= covered {
                return;
            }
            if !self.start_spawn(key, false) {
                return;
            }
        }
    }

    /// Reserves a spawn of `key` and schedules its end `cold_start` from now; false when the
    /// key is at its limit. The worker is held from now on.
    fn start_spawn(&mut self, key: usize, prewarm: bool) -> bool {
        let state = &self.keys[key];
        let Some(reservation) = self.pools[state.pool].reserve(&state.model) else {
            return false;
        };
        let at = self.now.saturating_add(state.cold_start);
        let memory = state.memory;
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
        let item = Some(Starting { reservation, key });
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
        true
    }

    fn spawned(&mut self, slot: usize) {
        let Some(Starting { reservation, key }) = self.starting[slot].take() else {
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
        *self.worker_tables[pool]
            .slot(worker_index(lease.worker_id()))
            .1 = self.now;
        match self.keys[key].waiting.pop_front() {
            Some(request) => {
                self.queued -= 1;
                self.start(request, key, lease, true);
                self.serve_waiting(key);
            }
            None => drop(lease),
        }
    }

    /// Starts `request` on `lease`'s worker. `waited`: it went through the queue.
    fn start(&mut self, request: usize, key: usize, lease: Lease<VirtualWorker>, waited: bool) {
        let r = &self.trace.requests[request];
        let arrival = to_nanos(r.at);
        let counted = arrival >= self.from;
        let pool = self.keys[key].pool;
        let (in_flight, ready_at) = self.worker_tables[pool].slot(worker_index(lease.worker_id()));
        let cold = waited && *ready_at >= arrival;
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
        let (count, _) = self.worker_tables[pool].slot(id);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.busy_workers -= 1;
        }
        self.last_change = self.now;
        self.serve_waiting(key);
    }

    /// Hands free capacity of `key` to its waiters, first come first served.
    fn serve_waiting(&mut self, key: usize) {
        while !self.keys[key].waiting.is_empty() {
            let state = &self.keys[key];
            let Some(lease) = self.pools[state.pool].try_acquire(&state.model) else {
                return;
            };
            let request = self.keys[key].waiting.pop_front().unwrap_or_default();
            self.queued -= 1;
            self.start(request, key, lease, true);
        }
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
            let key = self.key_index.get(&(pool, event.key.clone())).copied();
            self.workers -= 1;
            self.bytes -= event.freed_bytes;
            self.last_change = self.now;
            if let Some(key) = key {
                let state = &mut self.keys[key];
                state.held = state.held.saturating_sub(1);
                state.bytes = state.bytes.saturating_sub(event.freed_bytes);
                self.note(key);
            }
            if self.in_window() {
                self.summary.evictions += 1;
                *self
                    .summary
                    .evictions_by_reason
                    .entry(event.reason.to_string())
                    .or_insert(0) += 1;
                self.events.push(SimEvent {
                    at_secs: event.at.as_secs_f64(),
                    pool: event.pool.to_string(),
                    model: event.key.to_string(),
                    worker: event.worker.0,
                    reason: event.reason.to_string(),
                    workers_after: event.workers_left,
                });
            }
        }
        self.mirror_prewarms();
        for start in report.prewarms {
            self.prewarm(start);
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

    /// Starts the spawns of a pre-warm that came due.
    fn prewarm(&mut self, start: PrewarmStart) {
        if start.pool >= self.pools.len() {
            return;
        }
        let key = self.key_for(start.pool, &start.key);
        for _ in 0..start.spawns {
            if !self.start_spawn(key, true) {
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
