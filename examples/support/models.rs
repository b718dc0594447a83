//! The model server's workers and load driver, shared by `examples/model_server.rs` and
//! `tests/model_server.rs` (both include this file with `#[path]`).
//!
//! A "model" is a [`ThreadedWorker`]: its thread allocates the model's declared footprint and
//! writes every page of it, so the process's resident memory really grows; it serves requests
//! from its channel with a short simulated compute time; on shutdown its thread exits and the
//! memory goes back to the operating system (allocations this large are their own `mmap`, so
//! freeing them unmaps them and the RSS drops at once).
#![allow(dead_code)]

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poolwarden::config::{
    BuildError, Config, ConfiguredScheduler, PolicyRegistry, PolicyScope, PoolConfig,
};
use poolwarden::pool::ThreadedWorker;
use poolwarden::{Clock, EvictionPolicy, MemoryProbe, Pool, Scheduler, SpawnError};

/// One inference request: an input, and where the output goes.
pub struct Request {
    /// The input.
    pub input: u64,
    /// Receives the output.
    pub reply: SyncSender<u64>,
}

/// A loaded model: a worker thread that owns the weights.
pub type ModelWorker = ThreadedWorker<Request>;

/// A pool of models, with its name.
pub type NamedPool = (String, Pool<ModelWorker>);

/// Counters shared by every model of every pool, and by the driver.
#[derive(Debug, Default)]
pub struct Counters {
    /// Model threads started and not yet exited.
    pub threads_alive: AtomicUsize,
    /// Model threads started in all.
    pub threads_started: AtomicU64,
    /// Loads of a model that had no other worker loaded or loading in its pool: the requests
    /// behind them waited for a model to load from nothing (scaling out a model that already
    /// has a worker is a spawn, not a cold start).
    pub cold_starts: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests that failed (no worker within the timeout, a failed load, a dead worker).
    pub failures: AtomicU64,
    /// Workers loading or loaded, per (pool, model).
    loaded: Mutex<HashMap<(String, String), usize>>,
}

impl Counters {
    /// Counts a worker of `model` in `pool` as loading; true if it is the model's only one.
    fn starting(&self, pool: &str, model: &str) -> bool {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let count = loaded
            .entry((pool.to_string(), model.to_string()))
            .or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Counts a worker of `model` in `pool` as gone.
    fn gone(&self, pool: &str, model: &str) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = loaded.get_mut(&(pool.to_string(), model.to_string())) {
            *count = count.saturating_sub(1);
        }
    }
}

/// Lives as long as a model thread: counts it alive, and counts it gone when the thread ends
/// (returns, panics, or was never started).
struct ThreadGuard {
    counters: Arc<Counters>,
    pool: String,
    model: String,
}

impl ThreadGuard {
    fn new(counters: &Arc<Counters>, pool: &str, model: &str) -> Self {
        counters.threads_alive.fetch_add(1, Ordering::SeqCst);
        counters.threads_started.fetch_add(1, Ordering::Relaxed);
        ThreadGuard {
            counters: Arc::clone(counters),
            pool: pool.to_string(),
            model: model.to_string(),
        }
    }
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.counters.gone(&self.pool, &self.model);
        self.counters.threads_alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one model needs: its footprint, how long it takes to load, how long a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Bytes of weights.
    pub bytes: u64,
    /// Least time a load takes (reading weights from disk, moving them to the device).
    pub load_time: Duration,
    /// Simulated compute time of one request.
    pub compute_time: Duration,
}

impl ModelSpec {
    /// The spec of `model` in a pool configured by `config`: `memory` and `cold_start` come from
    /// the config; compute time grows with the size, 10 ms plus 1 ms per 4 MiB (26 ms for a
    /// 64 MiB model, 74 ms for 256 MiB).
    pub fn of(config: &PoolConfig, model: &str) -> Self {
        let bytes = config.memory_of(model);
        ModelSpec {
            bytes,
            load_time: config.cold_start_of(model),
            compute_time: Duration::from_millis(10 + bytes / (4 << 20)),
        }
    }
}

/// The weights of a loaded model: real, resident memory.
struct Weights {
    bytes: Vec<u8>,
}

impl Weights {
    /// Allocates `size` bytes and writes every page, taking at least `load_time`.
    fn load(size: u64, load_time: Duration) -> Result<Self, String> {
        let started = Instant::now();
        let size = usize::try_from(size).map_err(|_| format!("{size} bytes do not fit"))?;
        // A non-zero fill (one `memset`) writes every page: the memory is resident, not merely
        // reserved as a zeroed allocation would be.
        let bytes = vec![0x5a_u8; size];
        if let Some(rest) = load_time.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        Ok(Weights { bytes })
    }

    /// One "inference": reads a spread of the weights, then computes for `compute_time`.
    fn infer(&self, input: u64, compute_time: Duration) -> u64 {
        let mut sum = input;
        for byte in self.bytes.iter().step_by(64 << 10) {
            sum = sum.wrapping_mul(31).wrapping_add(u64::from(*byte));
        }
        std::thread::sleep(compute_time);
        std::hint::black_box(sum)
    }
}

/// Starts a model thread for `model` of `pool` and waits until its weights are loaded, so that
/// the pool counts the worker as starting for the whole load. A failed load is a spawn error;
/// the half-started thread is joined before the error returns.
pub fn spawn_model(
    pool: &str,
    model: &str,
    spec: ModelSpec,
    counters: &Arc<Counters>,
) -> Result<ModelWorker, SpawnError> {
    let cold = counters.starting(pool, model);
    let guard = ThreadGuard::new(counters, pool, model);
    let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
    let worker = ThreadedWorker::spawn_with(model, spec.bytes, move || {
        let guard = guard;
        let weights = match Weights::load(spec.bytes, spec.load_time) {
            Ok(weights) => {
                let _ = ready_tx.send(Ok(()));
                Some(weights)
            }
            Err(message) => {
                let _ = ready_tx.send(Err(message));
                None
            }
        };
        move |request: Request| {
            let _alive = &guard;
            if let Some(weights) = &weights {
                let _ = request
                    .reply
                    .send(weights.infer(request.input, spec.compute_time));
            }
        }
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {
            if cold {
                counters.cold_starts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(worker)
        }
        Ok(Err(message)) => Err(format!("loading `{model}` failed: {message}").into()),
        Err(_) => Err(format!("the thread of `{model}` died while loading").into()),
    }
}

/// One pool per `[pools.NAME]` of `config`, on `clock` (the scheduler's), each with every key
/// of its section applied by [`Config::pool_builder`].
pub fn build_pools(
    config: &Config,
    clock: &Arc<dyn Clock>,
    counters: &Arc<Counters>,
) -> Vec<NamedPool> {
    config
        .pools
        .iter()
        .filter_map(|(name, pool_config)| {
            let pool_name = name.clone();
            let specs = pool_config.clone();
            let counters = Arc::clone(counters);
            let factory = move |model: &str| {
                spawn_model(&pool_name, model, ModelSpec::of(&specs, model), &counters)
            };
            // Every name comes from the config, so the pool exists.
            let builder = config.pool_builder(name, factory).ok()?;
            Some((name.clone(), builder.clock(Arc::clone(clock)).build()))
        })
        .collect()
}

/// A scheduler on `clock` with `config`'s tick, default policy and pool policies
/// ([`Config::scheduler_builder`]), `probe`, and every pool registered (under its own policy
/// where the config gives it one). Not started.
pub fn build_scheduler(
    config: &Config,
    registry: &PolicyRegistry,
    probe: Box<dyn MemoryProbe>,
    clock: &Arc<dyn Clock>,
    pools: &[NamedPool],
) -> Result<ConfiguredScheduler, BuildError> {
    let scheduler = config
        .scheduler_builder(registry)?
        .clock(Arc::clone(clock))
        .probe(probe)
        .build();
    for (_, pool) in pools {
        scheduler.register(pool)?;
    }
    Ok(scheduler)
}

/// What a reload applied, and what it could not apply without a restart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// What changed at run time, one line each.
    pub applied: Vec<String>,
    /// What differs in the new config but only takes effect after a restart, one line each.
    pub needs_restart: Vec<String>,
}

/// Applies `new` over the running `old` config: the default policy and every pool's own
/// policy through [`Scheduler::replace_policy`] (swapped between two ticks), and each pool's
/// `max_workers_per_model` and `acquire_timeout`. Every policy is built before anything
/// changes: on an error nothing is applied. Lists what needs a restart: pools added or
/// removed, the tick, `max_in_flight_per_worker`, and per-model tables (the built-in policies
/// read per-model values from the pool, which keeps those it was built with; the footprints
/// and load times are the example's factory's).
pub fn apply_reload(
    old: &Config,
    new: &Config,
    registry: &PolicyRegistry,
    scheduler: &Scheduler,
    pools: &[NamedPool],
) -> Result<Reloaded, BuildError> {
    let default = new.default_policy(registry)?;
    let mut own: Vec<(&str, Option<Box<dyn EvictionPolicy>>)> = Vec::new();
    for (name, _) in pools {
        if new.pools.contains_key(name) {
            own.push((name, new.pool_policy(name, registry)?));
        }
    }
    let mut report = Reloaded::default();
    // A policy is replaced when its table changed, or a per-model table it may read did (a
    // policy receives its per-model values when it is built); otherwise it keeps its state.
    let models_changed = |name: &str| {
        old.pools.get(name).map(|p| &p.models) != new.pools.get(name).map(|p| &p.models)
    };
    if new.policy != old.policy || pools.iter().any(|(name, _)| models_changed(name)) {
        report
            .applied
            .push(format!("default policy: {}", describe_all(&*default)));
        // Unknown pools cannot happen here: every name comes from the registered pools.
        let _ = scheduler.replace_policy(PolicyScope::Default, Some(default));
    }
    for (name, policy) in own {
        let (old_pool, new_pool) = (old.pools.get(name), &new.pools[name]);
        if old_pool.map(|p| &p.policy) != Some(&new_pool.policy) || models_changed(name) {
            report.applied.push(match &policy {
                Some(p) => format!("pool {name}: policy {}", describe_all(&**p)),
                None => format!("pool {name}: under the default policy"),
            });
            let _ = scheduler.replace_policy(PolicyScope::Pool(name), policy);
        }
    }
    for (name, pool) in pools {
        let Some(new_pool) = new.pools.get(name) else {
            report
                .needs_restart
                .push(format!("pool {name} is gone from the config"));
            continue;
        };
        pool.set_max_workers_per_model(new_pool.max_workers_per_model);
        pool.set_acquire_timeout(new_pool.acquire_timeout);
        let Some(old_pool) = old.pools.get(name) else {
            continue;
        };
        if old_pool.max_workers_per_model != new_pool.max_workers_per_model {
            report.applied.push(format!(
                "pool {name}: max_workers_per_model {} -> {}",
                old_pool.max_workers_per_model, new_pool.max_workers_per_model
            ));
        }
        if old_pool.acquire_timeout != new_pool.acquire_timeout {
            report.applied.push(format!(
                "pool {name}: acquire_timeout {:?} -> {:?}",
                old_pool.acquire_timeout, new_pool.acquire_timeout
            ));
        }
        if old_pool.max_in_flight_per_worker != new_pool.max_in_flight_per_worker {
            report
                .needs_restart
                .push(format!("pool {name}: max_in_flight_per_worker"));
        }
        if old_pool.models != new_pool.models
            || old_pool.memory != new_pool.memory
            || old_pool.cold_start != new_pool.cold_start
        {
            report.needs_restart.push(format!(
                "pool {name}: per-model overrides of the built-in policies, memory, cold_start"
            ));
        }
    }
    for name in new.pools.keys() {
        if !pools.iter().any(|(n, _)| n == name) {
            report
                .needs_restart
                .push(format!("pool {name} is new in the config"));
        }
    }
    if old.scheduler != new.scheduler {
        report.needs_restart.push("[scheduler] tick".to_string());
    }
    Ok(report)
}

/// A policy with its parameters, a chain with each member's.
fn describe_all(policy: &dyn EvictionPolicy) -> String {
    let children = policy.children();
    if children.is_empty() {
        return policy.describe();
    }
    let members: Vec<String> = children.into_iter().map(describe_all).collect();
    format!("{} [{}]", policy.name(), members.join("; "))
}

/// Sends one request to a worker of `model` and waits for the answer, holding the lease (the
/// worker is busy, and cannot be evicted) until it comes.
pub fn infer(
    pool: &Pool<ModelWorker>,
    model: &str,
    input: u64,
) -> Result<u64, Box<dyn Error + Send + Sync>> {
    let lease = pool.acquire(model)?;
    let (reply, answer) = sync_channel(1);
    lease.send(Request { input, reply })?;
    Ok(answer.recv_timeout(Duration::from_secs(30))?)
}

/// One burst of load: `clients` callers send requests to `model` of pool number `pool`, one
/// at a time each, from `start` for `length`; client `c` joins `c × ramp` after the start, so
/// the pool scales up worker by worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// Index of the pool.
    pub pool: usize,
    /// The model.
    pub model: String,
    /// When the burst starts, after the driver starts.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// Concurrent callers at its peak.
    pub clients: usize,
    /// Delay between two clients joining.
    pub ramp: Duration,
    /// Pause between a client's requests.
    pub think: Duration,
}

/// The bursts for `pools` (configured by `config`): pool `i` starts at `i × stagger`, every
/// model it configures (or a model named `default` if none) gets `max_workers_per_model`
/// clients, which join over the first half of the burst.
pub fn plan(
    config: &Config,
    pools: &[NamedPool],
    length: Duration,
    stagger: Duration,
    think: Duration,
) -> Vec<Burst> {
    let mut bursts = Vec::new();
    for (index, (name, _)) in pools.iter().enumerate() {
        let Some(pool_config) = config.pools.get(name) else {
            continue;
        };
        let clients = pool_config.max_workers_per_model;
        let models: Vec<String> = if pool_config.models.is_empty() {
            vec!["default".to_string()]
        } else {
            pool_config.models.keys().cloned().collect()
        };
        for model in models {
            bursts.push(Burst {
                pool: index,
                model,
                start: stagger * index as u32,
                length,
                clients,
                ramp: length / (2 * clients as u32),
                think,
            });
        }
    }
    bursts
}

/// Client threads running bursts against the pools.
pub struct Driver {
    stop: Arc<StopFlag>,
    clients: Vec<JoinHandle<()>>,
}

/// Set once to stop the clients; they wait on it between requests.
#[derive(Default)]
struct StopFlag {
    stopped: Mutex<bool>,
    changed: Condvar,
}

/// Waits until `deadline`; false if the driver was stopped first.
fn wait_until(stop: &StopFlag, deadline: Instant) -> bool {
    let mut stopped = stop.stopped.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if *stopped {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        stopped = stop
            .changed
            .wait_timeout(stopped, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

impl Driver {
    /// Starts one thread per client of every burst; times count from now.
    pub fn start(
        pools: &[NamedPool],
        bursts: &[Burst],
        counters: &Arc<Counters>,
    ) -> std::io::Result<Driver> {
        let started = Instant::now();
        let stopped = Arc::new(StopFlag::default());
        let mut driver = Driver {
            stop: Arc::clone(&stopped),
            clients: Vec::new(),
        };
        for (b, burst) in bursts.iter().enumerate() {
            let (_, pool) = &pools[burst.pool];
            for client in 0..burst.clients {
                let pool = pool.clone();
                let burst = burst.clone();
                let stopped = Arc::clone(&stopped);
                let counters = Arc::clone(counters);
                let begin = started + burst.start + burst.ramp * client as u32;
                let end = started + burst.start + burst.length;
                let handle = std::thread::Builder::new()
                    .name(format!("client-{b}-{client}"))
                    .spawn(move || {
                        if !wait_until(&stopped, begin) {
                            return;
                        }
                        let mut input = (b * 1000 + client) as u64;
                        while Instant::now() < end {
                            match infer(&pool, &burst.model, input) {
                                Ok(_) => counters.requests.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    eprintln!("request to `{}` failed: {e}", burst.model);
                                    counters.failures.fetch_add(1, Ordering::Relaxed)
                                }
                            };
                            input += 1;
                            if !wait_until(&stopped, Instant::now() + burst.think) {
                                return;
                            }
                        }
                    });
                match handle {
                    Ok(handle) => driver.clients.push(handle),
                    Err(e) => {
                        driver.stop();
                        return Err(e);
                    }
                }
            }
        }
        Ok(driver)
    }

    /// Whether every burst is over.
    pub fn is_done(&self) -> bool {
        self.clients.iter().all(JoinHandle::is_finished)
    }

    /// Stops the clients after their current request, and joins them.
    pub fn stop(&mut self) {
        *self.stop.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.changed.notify_all();
        for client in self.clients.drain(..) {
            if client.join().is_err() {
                eprintln!("a client thread panicked");
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A field of `/proc/self/status` (Linux only), as its first number.
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// The process's resident set size in bytes (`VmRSS`), on Linux.
pub fn process_rss() -> Option<u64> {
    proc_status("VmRSS:").map(|kib| kib * 1024)
}

/// The process's number of threads (`Threads`), on Linux.
pub fn thread_count() -> Option<u64> {
    proc_status("Threads:")
}

/// `bytes` in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
