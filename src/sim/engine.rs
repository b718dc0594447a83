//! The replay engine: the real scheduler, pools and policies under a [`ManualClock`], with
//! virtual workers. No threads, no sleeping.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::{MemoryReading, WorkerId};

use super::report::{describe_parameters, SimEvent, SimRun, Summary, TimelinePoint};
use super::trace::Trace;
use crate::clock::{to_nanos, ManualClock};
use crate::config::{BuildError, Config, PolicyRegistry, PolicyScope, PolicySpec, CHAIN};
use crate::pool::{Lease, Pool, SpawnError, SpawnReservation, Worker};
use crate::probe::MemoryProbe;
use crate::scheduler::Scheduler;

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
    /// that none can happen. Default: one hour, or twice the longest duration in the config,
    /// whichever is longer.
    pub horizon: Option<Duration>,
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

/// Used = the pools' accounted bytes; total = the memory-pressure limit.
struct AccountedMemory {
    pools: Vec<Pool<VirtualWorker>>,
    total: u64,
}

impl MemoryProbe for AccountedMemory {
    fn read(&mut self) -> Option<MemoryReading> {
        let used: u64 = self.pools.iter().map(|p| p.accounted_bytes()).sum();
        Some(MemoryReading {
            total: self.total,
            available: self.total.saturating_sub(used),
            process_rss: None,
        })
    }
}

struct KeyState {
    pool: usize,
    model: Arc<str>,
    waiting: VecDeque<usize>,
    spawning: usize,
    workers: usize,
    bytes: u64,
    /// Footprint of one worker.
    memory: u64,
    cold_start: u64,
}

struct InFlight {
    lease: Lease<VirtualWorker>,
    key: usize,
}

struct Starting {
    reservation: SpawnReservation<VirtualWorker>,
    key: usize,
}

struct Engine<'a> {
    trace: &'a Trace,
    label: String,
    parameters: String,
    memory_limit: Option<u64>,
    clock: Arc<ManualClock>,
    pools: Vec<Pool<VirtualWorker>>,
    pool_names: Vec<String>,
    scheduler: Scheduler,
    tick: u64,
    until: Option<u64>,
    horizon: u64,
    keys: Vec<KeyState>,
    key_of: Vec<usize>,
    key_index: HashMap<(usize, Arc<str>), usize>,
    completions: BinaryHeap<Reverse<(u64, usize)>>,
    in_flight: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    spawns: BinaryHeap<Reverse<(u64, usize)>>,
    starting: Vec<Option<Starting>>,
    /// Requests in flight per worker: `in_flight_of[pool][worker id]` (ids are small and
    /// never reused within a pool).
    in_flight_of: Vec<Vec<u32>>,
    /// Workers with at least one request in flight.
    busy_workers: u64,
    summary: Summary,
    events: Vec<SimEvent>,
    timeline: Vec<TimelinePoint>,
    waits: Vec<u64>,
    workers: u64,
    bytes: u64,
    queued: usize,
    held_nanos: u128,
    busy_nanos: u128,
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

        let mut pools = Vec::new();
        let mut pool_names = Vec::new();
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
            .max_in_flight_per_worker(pool_config.max_in_flight_per_worker);
            for (key, model) in &pool_config.models {
                builder = builder.model_overrides(key, model.overrides);
            }
            pool_index.insert(name.as_str(), pools.len());
            pools.push(builder.build());
            pool_names.push(name.clone());
            own_policies.push(
                pool_config
                    .policy
                    .as_ref()
                    .map(|spec| build(spec, PolicyScope::Pool(name)))
                    .transpose()?,
            );
        }

        let default_policy = build(policy, PolicyScope::Default)?;
        let parameters = describe_parameters(default_policy.as_ref(), policy);
        let mut builder = Scheduler::builder()
            .clock(clock.clone())
            .tick(tick)
            .policy(default_policy);
        if let Some(total) = memory_total {
            builder = builder.probe(AccountedMemory {
                pools: pools.clone(),
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
                let pool_config = &config.pools[&pool_names[pool]];
                keys.push(KeyState {
                    pool,
                    model: request.model.clone(),
                    waiting: VecDeque::new(),
                    spawning: 0,
                    workers: 0,
                    bytes: 0,
                    memory: pool_config.memory_of(&request.model),
                    cold_start: to_nanos(pool_config.cold_start_of(&request.model)),
                });
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
            .chain(std::iter::once(longest_duration(policy)))
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
            scheduler,
            tick: to_nanos(tick),
            until: options.until.map(to_nanos),
            horizon: to_nanos(horizon).saturating_add(to_nanos(tick)),
            keys,
            key_of,
            key_index,
            completions: BinaryHeap::new(),
            in_flight: Vec::new(),
            free_slots: Vec::new(),
            spawns: BinaryHeap::new(),
            starting: Vec::new(),
            in_flight_of: vec![Vec::new(); config.pools.len()],
            busy_workers: 0,
            summary: Summary::default(),
            events: Vec::new(),
            timeline: Vec::new(),
            waits: Vec::with_capacity(trace.requests.len()),
            workers: 0,
            bytes: 0,
            queued: 0,
            held_nanos: 0,
            busy_nanos: 0,
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
            let busy = next_arrival.is_some()
                || next_completion.is_some()
                || next_spawn.is_some()
                || self.queued > 0;
            let t = [next_arrival, next_completion, next_spawn, Some(next_tick)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_tick);
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
                    // ends at its last change; undo the idle time counted since.
                    end = self.last_change;
                    let extra = u128::from(self.now - end) * u128::from(self.workers);
                    self.held_nanos -= extra;
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

    /// Moves time to `t`, integrating held and busy workers.
    fn advance(&mut self, t: u64) {
        if t > self.now {
            let dt = u128::from(t - self.now);
            self.held_nanos += dt * u128::from(self.workers);
            self.busy_nanos += dt * u128::from(self.busy_workers);
            self.now = t;
        }
    }

    fn arrive(&mut self, request: usize) {
        self.summary.requests += 1;
        let key = self.key_of[request];
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
    }

    /// Starts spawns while the key has more waiters than spawns under way and room to grow.
    fn ensure_spawns(&mut self, key: usize) {
        loop {
            let state = &self.keys[key];
            if state.waiting.len() <= state.spawning {
                return;
            }
            let Some(reservation) = self.pools[state.pool].reserve(&state.model) else {
                return;
            };
            let at = self.now.saturating_add(state.cold_start);
            self.keys[key].spawning += 1;
            let slot = self.starting.len();
            self.starting.push(Some(Starting { reservation, key }));
            self.spawns.push(Reverse((at, slot)));
        }
    }

    fn spawned(&mut self, slot: usize) {
        let Some(Starting { reservation, key }) = self.starting[slot].take() else {
            return;
        };
        let memory = self.keys[key].memory;
        let lease = reservation.complete(VirtualWorker {
            memory_bytes: memory,
        });
        self.summary.spawns += 1;
        self.workers += 1;
        self.bytes += memory;
        self.summary.peak_workers = self.summary.peak_workers.max(self.workers);
        self.summary.peak_memory_bytes = self.summary.peak_memory_bytes.max(self.bytes);
        let state = &mut self.keys[key];
        state.spawning -= 1;
        state.workers += 1;
        state.bytes += memory;
        self.note(key);
        match self.keys[key].waiting.pop_front() {
            Some(request) => {
                self.queued -= 1;
                self.start(request, key, lease, true);
                self.serve_waiting(key);
            }
            None => drop(lease),
        }
    }

    fn start(&mut self, request: usize, key: usize, lease: Lease<VirtualWorker>, cold: bool) {
        let r = &self.trace.requests[request];
        let arrival = to_nanos(r.at);
        self.waits.push(self.now - arrival);
        if cold {
            self.summary.cold_starts += 1;
        }
        let (pool, id) = (self.keys[key].pool, worker_index(lease.worker_id()));
        let counts = &mut self.in_flight_of[pool];
        if counts.len() <= id {
            counts.resize(id + 1, 0);
        }
        counts[id] += 1;
        if counts[id] == 1 {
            self.busy_workers += 1;
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
        if let Some(count) = self.in_flight_of[pool].get_mut(id) {
            *count -= 1;
            if *count == 0 {
                self.busy_workers -= 1;
            }
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
            self.start(request, key, lease, false);
        }
    }

    fn tick_once(&mut self) {
        let report = self.scheduler.tick_once();
        for event in report.evictions {
            let key = self.key_index.get(&(
                self.pool_names
                    .iter()
                    .position(|n| **n == *event.pool)
                    .unwrap_or(0),
                event.key.clone(),
            ));
            self.workers -= 1;
            self.bytes -= event.freed_bytes;
            self.summary.evictions += 1;
            *self
                .summary
                .evictions_by_reason
                .entry(event.reason.to_string())
                .or_insert(0) += 1;
            self.last_change = self.now;
            if let Some(&key) = key {
                let state = &mut self.keys[key];
                state.workers = state.workers.saturating_sub(1);
                state.bytes = state.bytes.saturating_sub(event.freed_bytes);
                self.note(key);
            }
            self.events.push(SimEvent {
                at_secs: event.at.as_secs_f64(),
                pool: event.pool.to_string(),
                model: event.key.to_string(),
                worker: event.worker.0,
                reason: event.reason.to_string(),
                workers_after: event.workers_left,
            });
        }
        if self.queued > 0 {
            for key in 0..self.keys.len() {
                if !self.keys[key].waiting.is_empty() {
                    self.ensure_spawns(key);
                }
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
            workers: state.workers,
            memory_bytes: state.bytes,
        });
    }

    fn finish(mut self, end: u64) -> SimRun {
        let held = self.held_nanos as f64 / 1e9;
        let busy = self.busy_nanos as f64 / 1e9;
        self.summary.worker_seconds = held;
        self.summary.idle_worker_seconds = (held - busy).max(0.0);
        self.summary.end_secs = end as f64 / 1e9;
        self.summary.window_secs = self.summary.end_secs;
        self.summary.workers_at_end = self.workers;
        if !self.waits.is_empty() {
            let n = self.waits.len();
            let sum: u128 = self.waits.iter().map(|w| u128::from(*w)).sum();
            self.summary.mean_wait_secs = sum as f64 / n as f64 / 1e9;
            self.waits.sort_unstable();
            let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
            self.summary.p99_wait_secs = self.waits[rank - 1] as f64 / 1e9;
            self.summary.max_wait_secs = self.waits[n - 1] as f64 / 1e9;
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

/// A worker id as an index into a per-pool table.
fn worker_index(id: WorkerId) -> usize {
    usize::try_from(id.0).unwrap_or(usize::MAX)
}
