//! poolwarden against its floor and the alternatives (r2d2, moka). Every comparison runs side by
//! side in one group of one run; BENCHMARKS.md holds the figures and how to reproduce them.
//!
//! Groups (keep the IDs: `target/criterion/<group>/<function>/` must stay stable):
//!
//! * `lease_1t`, `lease_2t`: a lease round trip on a warm pool (one key, four workers), on one
//!   thread and on two, against the floor, r2d2 and moka.
//! * `tick_40k`: one deterministic tick over 10,000 keys × 4 workers under `gradual-lru`.
//! * `lease_under_tick`: lease throughput on two threads over 40,000 workers, with the
//!   maintenance thread idle and ticking every millisecond.
//! * `probe`: one memory reading against `System::new_all()` plus `refresh_memory`.
//! * `clock_read`: what each time source costs (context for the lease figures).
//! * `simulate`: replaying the hour of Azure conversation traffic with `gradual-lru`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use dashmap::DashMap;
use poolwarden::policies::{
    GradualLru, GradualLruConfig, KeyView, ModelOverrides, PoolView, WorkerView,
};
use poolwarden::{
    Clock, EvictionPolicy, ManualClock, MemoryProbe, Pool, Scheduler, Snapshot, SpawnError,
    SysinfoProbe, TscClock, Worker, WorkerId,
};

/// The key of the lease benchmarks.
const KEY: &str = "llama-7b";
/// Workers per key everywhere.
const WORKERS: usize = 4;
/// Keys of the 40,000-worker pools.
const KEYS_40K: usize = 10_000;

/// A worker that is nothing but a footprint.
struct Model {
    bytes: u64,
}

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }
}

/// A pool of [`Model`]s on `clock`, with `WORKERS` ready workers for each key.
fn warm_pool(keys: &[String], clock: Arc<dyn Clock>) -> Pool<Model> {
    let pool = Pool::builder("bench", |_key: &str| {
        Ok::<_, SpawnError>(Model { bytes: 1 << 20 })
    })
    .clock(clock)
    .max_workers_per_model(WORKERS)
    .build();
    fill(&pool, keys);
    pool
}

/// Brings every key of `keys` up to `WORKERS` ready workers, all idle.
fn fill(pool: &Pool<Model>, keys: &[String]) {
    for key in keys {
        let leases: Vec<_> = (0..WORKERS)
            .map(|_| pool.acquire(key).expect("the factory never fails"))
            .collect();
        drop(leases);
    }
}

/// `model-00000` … : the keys of the large pools.
fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("model-{i:05}")).collect()
}

/// Runs `op(thread, i)` for `i in 0..iters` on two threads started together, and returns the
/// longer of the two threads' times: the wall time in which each thread did `iters` operations.
fn on_two_threads(iters: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|thread| {
                let (barrier, op) = (&barrier, &op);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        op(thread, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a benchmark thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

// --- 1. Lease round trip -------------------------------------------------------------------

/// The floor of a lease: a `DashMap<String, AtomicU64>` lookup by `&str`, then `fetch_add`,
/// `fetch_sub`, and a store of a timestamp already in hand (no clock read).
struct Floor {
    map: DashMap<String, AtomicU64>,
    last_used: AtomicU64,
}

impl Floor {
    fn new() -> Self {
        let map = DashMap::new();
        map.insert(KEY.to_string(), AtomicU64::new(0));
        Floor {
            map,
            last_used: AtomicU64::new(0),
        }
    }

    #[inline]
    fn round_trip(&self, key: &str, stamp: u64) {
        if let Some(in_flight) = self.map.get(key) {
            in_flight.fetch_add(1, Ordering::AcqRel);
            in_flight.fetch_sub(1, Ordering::AcqRel);
            self.last_used.store(stamp, Ordering::Release);
        }
    }
}

/// An r2d2 connection manager whose connections cost nothing.
struct Trivial;

impl r2d2::ManageConnection for Trivial {
    type Connection = u64;
    type Error = std::io::Error;

    fn connect(&self) -> Result<u64, std::io::Error> {
        Ok(0)
    }

    fn is_valid(&self, _: &mut u64) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

/// The four contenders of the lease groups, warm.
struct Contenders {
    pool: Pool<Model>,
    floor: Floor,
    r2d2: r2d2::Pool<Trivial>,
    moka: moka::sync::Cache<String, u64>,
}

impl Contenders {
    fn new() -> Self {
        let pool = warm_pool(&[KEY.to_string()], Arc::new(TscClock::new()));
        assert_eq!(pool.workers(KEY), WORKERS);
        // No check-out test: the fastest r2d2 configuration.
        let r2d2 = r2d2::Pool::builder()
            .max_size(WORKERS as u32)
            .min_idle(Some(WORKERS as u32))
            .test_on_check_out(false)
            .build(Trivial)
            .expect("a trivial r2d2 pool");
        // No capacity bound: time-to-idle is the only policy moka tracks.
        let moka = moka::sync::Cache::builder()
            .time_to_idle(Duration::from_secs(60))
            .build();
        moka.insert(KEY.to_string(), 7);
        Contenders {
            pool,
            floor: Floor::new(),
            r2d2,
            moka,
        }
    }

    #[inline]
    fn poolwarden(&self) {
        drop(black_box(
            self.pool.acquire(black_box(KEY)).expect("a warm worker"),
        ));
    }

    #[inline]
    fn floor(&self, stamp: u64) {
        self.floor.round_trip(black_box(KEY), black_box(stamp));
    }

    #[inline]
    fn r2d2(&self) {
        drop(black_box(self.r2d2.get().expect("an idle connection")));
    }

    #[inline]
    fn moka(&self) {
        black_box(self.moka.get(black_box(KEY)));
    }
}

fn lease(c: &mut Criterion) {
    // With the `metrics` feature, a real recorder is installed, as in a service that exports
    // them; the lease path records nothing either way (see BENCHMARKS.md, "lease_1t with and
    // without metrics").
    #[cfg(feature = "metrics")]
    let _ = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder();
    let it = Contenders::new();

    let mut group = c.benchmark_group("lease_1t");
    group.bench_function("poolwarden", |b| b.iter(|| it.poolwarden()));
    group.bench_function("floor", |b| {
        let mut stamp = 0;
        b.iter(|| {
            stamp += 1;
            it.floor(stamp)
        })
    });
    group.bench_function("r2d2", |b| b.iter(|| it.r2d2()));
    group.bench_function("moka", |b| b.iter(|| it.moka()));
    group.finish();

    // Each iteration is one round trip on each of two threads at once.
    let mut group = c.benchmark_group("lease_2t");
    group.bench_function("poolwarden", |b| {
        b.iter_custom(|iters| on_two_threads(iters, |_, _| it.poolwarden()))
    });
    group.bench_function("floor", |b| {
        b.iter_custom(|iters| on_two_threads(iters, |_, i| it.floor(i)))
    });
    group.bench_function("r2d2", |b| {
        b.iter_custom(|iters| on_two_threads(iters, |_, _| it.r2d2()))
    });
    group.bench_function("moka", |b| {
        b.iter_custom(|iters| on_two_threads(iters, |_, _| it.moka()))
    });
    group.finish();
}

// --- 2. Tick cost ---------------------------------------------------------------------------

/// The per-worker fields a tick reads, laid out flat: the floor of a tick.
struct FlatWorker {
    id: u64,
    state: AtomicU64,
    last_used: AtomicU64,
    spawned_at: Duration,
    memory_bytes: u64,
}

/// The views of `keys` keys × `WORKERS` idle workers last used at 0, as a tick would see them.
fn snapshot_views(keys: usize) -> (Vec<PoolView>, Vec<KeyView>, Vec<WorkerView>) {
    let pools = vec![PoolView {
        name: Arc::from("bench"),
        max_workers_per_model: WORKERS,
        accounted_bytes: (keys * WORKERS) as u64 * (1 << 20),
    }];
    let workers: Vec<WorkerView> = (0..keys * WORKERS)
        .map(|i| WorkerView {
            id: WorkerId(i as u64 + 1),
            in_flight: 0,
            last_used: Duration::ZERO,
            spawned_at: Duration::ZERO,
            memory_bytes: 1 << 20,
            ..WorkerView::default()
        })
        .collect();
    let keys = (0..keys)
        .map(|k| KeyView {
            pool: 0,
            key: Arc::from(format!("model-{k:05}")),
            workers: k * WORKERS..(k + 1) * WORKERS,
            starting: 0,
            last_eviction: None,
            overrides: 0,
            ..KeyView::default()
        })
        .collect();
    (pools, keys, workers)
}

fn gradual_lru() -> Box<GradualLru> {
    Box::new(GradualLru::new(GradualLruConfig::default()).expect("the default config is valid"))
}

fn tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("tick_40k");
    group.sample_size(30);

    // 40,000 idle workers, idle for 30 s of the policy's 60 s: nothing to evict.
    {
        let clock = Arc::new(ManualClock::new());
        let pool = warm_pool(&keys(KEYS_40K), clock.clone());
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(gradual_lru())
            .build();
        scheduler.register(&pool);
        clock.set(Duration::from_secs(30));
        group.bench_function("poolwarden", |b| {
            b.iter(|| {
                let report = scheduler.tick_once();
                debug_assert!(report.evictions.is_empty());
                report
            })
        });
    }

    {
        let workers: Vec<FlatWorker> = (0..KEYS_40K * WORKERS)
            .map(|i| FlatWorker {
                id: i as u64 + 1,
                state: AtomicU64::new(0),
                last_used: AtomicU64::new(i as u64),
                spawned_at: Duration::from_nanos(i as u64),
                memory_bytes: 1 << 20,
            })
            .collect();
        group.bench_function("floor", |b| {
            b.iter(|| {
                let mut sum = 0u64;
                for w in black_box(&workers) {
                    let state = w.state.load(Ordering::Acquire);
                    let last_used = w.last_used.load(Ordering::Acquire);
                    sum = sum
                        .wrapping_add(w.id ^ state)
                        .wrapping_add(last_used ^ w.memory_bytes)
                        .wrapping_add(w.spawned_at.as_nanos() as u64);
                }
                sum
            })
        });
    }

    // The policy alone over a ready 40,000-worker snapshot: the part of a tick that no pool
    // layout can speed up (gradual-lru must look at every worker).
    {
        let views = snapshot_views(KEYS_40K);
        let governed = [true];
        let snapshot = Snapshot {
            now: Duration::from_secs(30),
            previous: None,
            memory: None,
            pools: &views.0,
            keys: &views.1,
            workers: &views.2,
            overrides: &[ModelOverrides::default()],
            governed: &governed,
        };
        let mut policy = gradual_lru();
        let mut out = Vec::new();
        group.bench_function("policy_only", |b| {
            b.iter(|| {
                out.clear();
                policy.propose(black_box(&snapshot), &mut out);
                debug_assert!(out.is_empty());
            })
        });
    }

    // The same pool, but 1% of the keys (every hundredth) evict one worker at every tick: their
    // overrides say idle 0 and step 0. Before each tick they are refilled to four workers.
    {
        let clock = Arc::new(ManualClock::new());
        let keys = keys(KEYS_40K);
        let cold: Vec<String> = keys.iter().step_by(100).cloned().collect();
        let mut builder = Pool::builder("bench", |_key: &str| {
            Ok::<_, SpawnError>(Model { bytes: 1 << 20 })
        })
        .clock(clock.clone())
        .max_workers_per_model(WORKERS);
        for key in &cold {
            builder = builder.model_overrides(
                key,
                ModelOverrides {
                    idle: Some(Duration::ZERO),
                    step: Some(Duration::ZERO),
                    ..ModelOverrides::default()
                },
            );
        }
        let pool = builder.build();
        fill(&pool, &keys);
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(gradual_lru())
            .build();
        scheduler.register(&pool);
        clock.set(Duration::from_secs(30));
        group.bench_function("poolwarden_1pct", |b| {
            b.iter_batched(
                || fill(&pool, &cold),
                |()| {
                    let report = scheduler.tick_once();
                    debug_assert_eq!(report.evictions.len(), cold.len());
                    report
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

// --- 3. Request path under maintenance ------------------------------------------------------

fn lease_under_tick(c: &mut Criterion) {
    let keys = keys(KEYS_40K);
    let pool = warm_pool(&keys, Arc::new(TscClock::new()));
    let mut group = c.benchmark_group("lease_under_tick");
    // Every sample long enough to hold many ticks.
    group.sampling_mode(SamplingMode::Flat).sample_size(20);

    // Each iteration is one lease round trip on each of two threads; both walk through all the
    // keys, one from the first key, the other from the middle one.
    for (name, tick) in [
        ("idle_scheduler", Duration::from_secs(3600)),
        ("ticking_1ms", Duration::from_millis(1)),
    ] {
        let scheduler = Scheduler::builder()
            .tick(tick)
            .policy(gradual_lru())
            .build();
        scheduler.register(&pool);
        let started = Instant::now();
        scheduler.start().expect("the maintenance thread starts");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                on_two_threads(iters, |thread, i| {
                    let key = &keys[(i as usize + thread * KEYS_40K / 2) % KEYS_40K];
                    drop(black_box(pool.acquire(key).expect("a warm worker")));
                })
            })
        });
        scheduler.stop();
        // How busy the maintenance thread was: ticks that ran while this function was measured
        // (warm-up included), over its wall time.
        eprintln!(
            "lease_under_tick/{name}: {} ticks in {:.2} s",
            scheduler.stats().ticks,
            started.elapsed().as_secs_f64()
        );
    }
    group.finish();
}

// --- 4. Memory probe ------------------------------------------------------------------------

fn probe(c: &mut Criterion) {
    let mut group = c.benchmark_group("probe");
    group.sample_size(20);
    let mut probe = SysinfoProbe::new();
    group.bench_function("poolwarden", |b| b.iter(|| probe.read()));
    group.bench_function("new_all", |b| {
        b.iter(|| {
            let mut system = sysinfo::System::new_all();
            system.refresh_memory();
            (system.total_memory(), system.available_memory())
        })
    });
    group.finish();
}

// --- Time sources (context) -----------------------------------------------------------------

fn clock_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock_read");
    group.bench_function("instant_now", |b| b.iter(Instant::now));
    let tsc = TscClock::new();
    group.bench_function("tsc_clock_now", |b| b.iter(|| tsc.now()));
    let dynamic: Arc<dyn Clock> = Arc::new(TscClock::new());
    group.bench_function("dyn_tsc_clock_now", |b| b.iter(|| dynamic.now()));
    let quanta = quanta::Clock::new();
    group.bench_function("quanta_raw", |b| b.iter(|| quanta.raw()));
    group.finish();
}

// --- 6. Simulator speed (group `simulate`, function `conv_1h`) ------------------------------

/// Replays the hour of Azure conversation traffic with `gradual-lru` on the embedded default
/// config: parsing is done once outside the measurement; each iteration is one whole run
/// (scheduler, pool and policy under a manual clock). Throughput is in requests.
fn simulate(c: &mut Criterion) {
    use poolwarden::config::{Config, PolicyRegistry};
    use poolwarden::sim::{ServiceModel, SimOptions, Trace, TraceFormat};

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/traces/azure-llm-2023/conv.csv");
    let trace = match Trace::load(&path, TraceFormat::AzureLlm, None, ServiceModel::default()) {
        Ok(trace) => trace,
        Err(e) => {
            eprintln!("simulate/conv_1h skipped: {e}");
            return;
        }
    };
    let registry = PolicyRegistry::new();
    let config = Config::embedded_default(&registry).expect("the embedded default loads");
    assert_eq!(config.policy.kind, "gradual-lru");
    let options = SimOptions::default();
    let mut group = c.benchmark_group("simulate");
    group.throughput(criterion::Throughput::Elements(trace.requests.len() as u64));
    group.sample_size(20);
    group.bench_function("conv_1h", |b| {
        b.iter(|| {
            let run = poolwarden::sim::simulate(
                &config,
                &registry,
                &config.policy,
                &trace,
                &options,
                None,
            )
            .expect("simulate");
            black_box(run.summary.requests)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = lease, tick, lease_under_tick, probe, clock_read, simulate
}
criterion_main!(benches);
