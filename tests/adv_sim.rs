//! Adversarial tests of the simulator's fidelity, the policy API, reliability and
//! `hybrid-histogram`, written from the README's promises. Timelines are worked out by hand in
//! each test's comment.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, keep_alive, model_pool, secs, Model};
use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::policies::{
    HybridHistogram, HybridHistogramConfig, MemoryPressure, MemoryPressureConfig, VictimOrder,
};
use poolwarden::sim::{simulate, SimOptions, SimRun, Trace};
use poolwarden::{
    AcquireError, EvictionPolicy, EvictionReason, KeyId, ManualClock, MemoryProbe, MemoryReading,
    Pool, Prewarm, Proposal, Scheduler, Snapshot, SpawnError, Worker,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn run_with(registry: &PolicyRegistry, config: &str, trace: &str, options: SimOptions) -> SimRun {
    let config = Config::from_toml(config, "adv.toml", registry).expect("config");
    let trace = Trace::parse_native(trace, "adv.csv", "adv").expect("trace");
    simulate(&config, registry, &config.policy, &trace, &options, None).expect("simulate")
}

fn run(config: &str, trace: &str, options: SimOptions) -> SimRun {
    run_with(&PolicyRegistry::new(), config, trace, options)
}

fn until(s: u64) -> SimOptions {
    SimOptions {
        until: Some(secs(s)),
        ..SimOptions::default()
    }
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-6,
        "{what}: {actual}, expected {expected}"
    );
}

fn eviction_times(run: &SimRun) -> Vec<f64> {
    run.events.iter().map(|e| e.at_secs).collect()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

// ---------------------------------------------------------------------------------------------
// 1. Simulator fidelity

/// One worker of one request, 30 s load, kept for an hour.
///
/// 0:00 (10 s) starts the spawn: loading 0–30, busy 30–40. 0:30 (5 s) arrives at the very
/// instant the spawn finishes. Same-instant order: finished spawns run before arrivals, so the
/// worker was ready (and busy) when this request came; it waits only for a busy worker (no spawn
/// can start: one worker per key) and is served at 40 by a worker that finished spawning
/// *before* it arrived: not a cold start. Cold starts 1, waits 30 and 10.
#[test]
fn a_request_arriving_as_the_spawn_finishes_that_waits_for_a_busy_worker_is_not_cold() {
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "keep-alive"
ttl = "1h"
[pools.default]
max_workers_per_model = 1
max_in_flight_per_worker = 1
cold_start = "30s"
"#;
    let run = run(config, "at,model,duration\n0,m,10\n30,m,5\n", until(100));
    let s = &run.summary;
    assert_close(s.mean_wait_secs, 20.0, "mean wait (30 + 10)");
    assert_eq!((s.requests, s.spawns), (2, 1));
    assert_eq!(s.cold_starts, 1, "only the first waited for the spawn");
}

const BURST: &str = r#"
[scheduler]
tick = "1s"
[policy]
kind = "keep-alive"
ttl = "10s"
[pools.default]
max_workers_per_model = 4
max_in_flight_per_worker = 16
cold_start = "30s"
memory = "2GiB"
"#;

/// A burst of 10 requests (5 s each) at 0, 1, ..., 9 s during a 30 s load with 16 requests per
/// worker: ONE spawn covers them all. Held 0–45 (loading 0–30, busy 30–35, idle 35–45,
/// evicted at 45). All ten waited for the spawn: 10 cold starts, waits 30 - i.
#[test]
fn a_burst_during_a_load_starts_one_spawn_and_every_request_is_cold() {
    let mut trace = String::from("at,model,duration\n");
    for i in 0..10 {
        trace.push_str(&format!("{i},m,5\n"));
    }
    let run = run(BURST, &trace, SimOptions::default());
    let s = &run.summary;
    assert_eq!((s.requests, s.spawns, s.cold_starts), (10, 1, 10));
    assert_eq!((s.peak_workers, s.peak_memory_bytes), (1, 2 << 30));
    assert_eq!(eviction_times(&run), vec![45.0]);
    assert_close(s.worker_seconds, 45.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 10.0, "idle (loading is not idle)");
    assert_close(s.mean_wait_secs, 25.5, "mean wait");
    assert_close(s.max_wait_secs, 30.0, "max wait");
    assert_close(s.key_cold_start_pct_p50, 100.0, "p50");

    // The same measured from 5 s: the spawn started before the window (not counted), the
    // worker is held (loading) at 5, requests 5..=9 count and all are cold; waits 25..21.
    let run = run_with(
        &PolicyRegistry::new(),
        BURST,
        &trace,
        SimOptions {
            from: Some(secs(5)),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    assert_eq!(
        (s.requests, s.spawns, s.cold_starts, s.evictions),
        (5, 0, 5, 1)
    );
    assert_eq!((s.peak_workers, s.peak_memory_bytes), (1, 2 << 30));
    assert_close(s.worker_seconds, 40.0, "worker-seconds in [5, 45]");
    assert_close(s.idle_worker_seconds, 10.0, "idle in [5, 45]");
    assert_close(s.mean_wait_secs, 23.0, "mean wait");
    assert_close(s.key_cold_start_pct_p90, 100.0, "p90");
}

/// FCFS, `acquire_timeout` and the same-instant order together.
///
/// One worker of one request for `m`, no load time, timeout 10 s. `m`: 0 (10 s) cold, busy
/// 0–10. 1 (3 s), 2 (1 s), 3 (2 s) queue in that order; deadlines 11, 12, 13. At 10 the first
/// waiter (1) is served, wait 9, busy 10–13. At 12 request 2 gives up (rejected). At 13 the
/// completion runs before the giving up: request 3 is served with a wait of exactly 10 s (not
/// longer than the timeout), busy 13–15. `x` at 2 (1 s) is served at once on its own worker: a
/// key's queue does not hold up another key. Served waits 0, 9, 10, 0; held m 0–100, x 2–100;
/// busy m 15 s, x 1 s.
#[test]
fn fcfs_waits_timeouts_and_same_instant_order() {
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "keep-alive"
ttl = "1h"
[pools.default]
max_workers_per_model = 1
max_in_flight_per_worker = 1
cold_start = "0s"
acquire_timeout = "10s"
"#;
    let run = run(
        config,
        "at,model,duration\n0,m,10\n1,m,3\n2,m,1\n2,x,1\n3,m,2\n",
        until(100),
    );
    let s = &run.summary;
    assert_eq!((s.requests, s.rejected), (5, 1));
    assert_eq!(s.cold_starts, 2, "the first of m and of x");
    assert_eq!(s.spawns, 2);
    assert_close(s.mean_wait_secs, 19.0 / 4.0, "mean wait of the served");
    assert_close(s.max_wait_secs, 10.0, "max wait");
    assert_close(s.worker_seconds, 198.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 198.0 - 15.0 - 1.0, "idle");
}

/// `acquire_timeout` applies to a wait for a loading worker too. Load 30 s, timeout 10 s: the
/// request gives up at 10 (rejected, no cold start, no wait figure). The load still finishes
/// at 30; the worker is idle from 30 and the 5 s keep-alive evicts it at 35. Held 0–35, idle
/// 30–35.
#[test]
fn a_request_that_waits_for_a_load_longer_than_its_timeout_is_rejected() {
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "keep-alive"
ttl = "5s"
[pools.default]
max_workers_per_model = 1
cold_start = "30s"
acquire_timeout = "10s"
"#;
    let run = run(config, "at,model,duration\n0,m,1\n", SimOptions::default());
    let s = &run.summary;
    assert_eq!(
        (s.requests, s.rejected, s.cold_starts, s.spawns),
        (1, 1, 0, 1)
    );
    assert_eq!(eviction_times(&run), vec![35.0]);
    assert_close(s.worker_seconds, 35.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 5.0, "idle");
    assert_close(s.max_wait_secs, 0.0, "no served request waited");
}

/// memory-pressure's hysteresis survives ticks with nothing to evict (and the ticks the engine
/// skips while every worker is busy).
///
/// Ten keys of 1 GiB against 10 GiB, all loaded at 0 (no load time): usage 100 %. `k0`, `k1`
/// finish at 1 s; `k2`..`k9` are busy until 20 s. `min_idle` 10 s, 2 per tick, low 0.5.
/// Tick 11: `k0`, `k1` go (80 %, between low and high). Ticks 12–29: nothing is idle long
/// enough; usage stays at 80 %. Tick 30: two more (60 %), tick 31: one more (50 % = low).
#[test]
fn memory_pressure_keeps_evicting_after_ticks_with_no_candidate() {
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "memory-pressure"
limit = "10GiB"
high = 0.9
low = 0.5
max_per_tick = 2
min_idle = "10s"
settle = "5s"
[pools.default]
max_workers_per_model = 1
memory = "1GiB"
"#;
    let mut trace = String::from("at,model,duration\n0,k0,1\n0,k1,1\n");
    for k in 2..10 {
        trace.push_str(&format!("0,k{k},20\n"));
    }
    let run = run(config, &trace, until(120));
    assert_eq!(eviction_times(&run), vec![11.0, 11.0, 30.0, 30.0, 31.0]);
    assert_eq!(run.summary.workers_at_end, 5);
    assert_eq!(run.summary.peak_memory_bytes, 10 << 30);
}

/// Pre-warms two models at 300 s at the first tick; evicts nothing.
struct PrewarmTwo {
    done: bool,
}

impl EvictionPolicy for PrewarmTwo {
    fn name(&self) -> &str {
        "prewarm-two"
    }

    fn propose(&mut self, _snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {}

    fn prewarm(&mut self, _snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        if !std::mem::replace(&mut self.done, true) {
            for key in ["big", "small"] {
                out.push(Prewarm {
                    pool: 0,
                    key: Arc::from(key),
                    workers: 1,
                    at: secs(300),
                });
            }
        }
    }
}

/// A pre-warm of a model with a long per-model `cold_start` starts that much earlier.
///
/// Both wanted at 300: `big` (120 s) loads 180–300, `small` (the pool's 10 s) 290–300; neither
/// is a cold start. The request for `big` at 300 is warm (busy 300–305). Held 220 + 110 s up to
/// 400; loading 130 s, busy 5 s: idle 195 s. `small` is not in the trace.
#[test]
fn a_prewarm_leads_by_the_models_own_cold_start() {
    let mut registry = PolicyRegistry::new();
    registry.register("prewarm-two", |_: NoParams| {
        Ok(Box::new(PrewarmTwo { done: false }) as Box<dyn EvictionPolicy>)
    });
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "prewarm-two"
[pools.default]
max_workers_per_model = 1
cold_start = "10s"
[pools.default.models.big]
cold_start = "2m"
"#;
    let run = run_with(
        &registry,
        config,
        "at,model,duration\n300,big,5\n",
        until(400),
    );
    let s = &run.summary;
    assert_eq!((s.spawns, s.prewarm_spawns, s.cold_starts), (2, 2, 0));
    assert_close(s.mean_wait_secs, 0.0, "warm");
    assert_close(s.worker_seconds, 330.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 195.0, "idle");
    let first = |model: &str| {
        run.timeline
            .iter()
            .find(|p| p.model == model && p.workers > 0)
            .map(|p| p.at_secs)
    };
    assert_eq!(first("big"), Some(180.0));
    assert_eq!(first("small"), Some(290.0));
}

// ---------------------------------------------------------------------------------------------
// 2. Policy API

/// What a policy saw of one key at one tick.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    at: u64,
    key: String,
    id: KeyId,
    workers: usize,
    arrivals: u64,
    first_arrival: Option<Duration>,
}

/// Records every key of every tick, then runs `inner`.
struct Recording {
    seen: Arc<Mutex<Vec<Seen>>>,
    inner: Box<dyn EvictionPolicy>,
}

impl EvictionPolicy for Recording {
    fn name(&self) -> &str {
        "recording"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        {
            let mut seen = self.seen.lock().unwrap();
            for (_, key) in snapshot.governed_keys() {
                seen.push(Seen {
                    at: snapshot.now.as_secs(),
                    key: key.key.to_string(),
                    id: key.id,
                    workers: key.workers.len(),
                    arrivals: key.arrivals,
                    first_arrival: key.first_arrival,
                });
            }
        }
        self.inner.propose(snapshot, out);
    }
}

/// A key keeps its id while its pool knows it; a key that loses its last worker is seen once
/// with no workers, then forgotten; when it comes back, its first arrival is exact.
#[test]
fn a_key_that_loses_its_last_worker_is_seen_once_empty_then_forgotten() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 4, 1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(Recording {
            seen: seen.clone(),
            inner: keep_alive(secs(10)),
        }))
        .build();
    scheduler.register(&pool);
    drop(pool.acquire("m").unwrap());
    let mut evicted_at = None;
    for t in 1..=20 {
        clock.set(secs(t));
        if !scheduler.tick_once().evictions.is_empty() {
            evicted_at.get_or_insert(t);
        }
    }
    let evicted_at = evicted_at.expect("the 10 s keep-alive evicts");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let ids: Vec<KeyId> = seen.iter().map(|s| s.id).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "stable id: {seen:?}");
    let empty: Vec<u64> = seen
        .iter()
        .filter(|s| s.workers == 0)
        .map(|s| s.at)
        .collect();
    assert_eq!(empty, vec![evicted_at + 1], "seen empty exactly once");
    assert!(
        seen.iter().all(|s| s.at <= evicted_at + 1),
        "then forgotten"
    );
    assert_eq!(pool.keys(), 0);
    assert_eq!(seen[0].arrivals, 1);
    assert_eq!(seen[0].first_arrival, Some(secs(0)));
}

/// A worker counting its shutdowns; fails the test if shut down twice.
struct Counted {
    down: AtomicBool,
    /// Set by a test while it holds a lease on this worker.
    served: AtomicBool,
    shutdowns: Arc<AtomicUsize>,
    /// Shutdowns of workers that had served a request.
    served_shutdowns: Arc<AtomicUsize>,
}

impl Worker for Counted {
    fn memory_bytes(&self) -> u64 {
        7
    }

    fn shutdown(&self) {
        assert!(!self.down.swap(true, Ordering::SeqCst), "shut down twice");
        if self.served.load(Ordering::SeqCst) {
            self.served_shutdowns.fetch_add(1, Ordering::SeqCst);
        }
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the workers of a [`counted_pool`] count.
#[derive(Default)]
struct Counts {
    spawns: AtomicUsize,
    shutdowns: Arc<AtomicUsize>,
    served_shutdowns: Arc<AtomicUsize>,
}

fn counted_pool(counts: &Arc<Counts>) -> Pool<Counted> {
    let counts = counts.clone();
    Pool::builder("p", move |_key: &str| {
        counts.spawns.fetch_add(1, Ordering::SeqCst);
        Ok::<_, SpawnError>(Counted {
            down: AtomicBool::new(false),
            served: AtomicBool::new(false),
            shutdowns: counts.shutdowns.clone(),
            served_shutdowns: counts.served_shutdowns.clone(),
        })
    })
    .max_workers_per_model(2)
    .build()
}

/// Sums the arrivals the policy sees; evicts every idle worker (keep-alive 0).
struct SumArrivals {
    total: Arc<AtomicU64>,
    inner: Box<dyn EvictionPolicy>,
}

impl EvictionPolicy for SumArrivals {
    fn name(&self) -> &str {
        "sum-arrivals"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        let sum: u64 = snapshot.keys.iter().map(|k| k.arrivals).sum();
        self.total.fetch_add(sum, Ordering::SeqCst);
        self.inner.propose(snapshot, out);
    }
}

/// Keys are forgotten safely against concurrent requests for them: four threads hammer three
/// keys while another ticks as fast as it can with a policy that evicts every idle worker (so
/// keys are emptied and forgotten all the time). Every request is seen as an arrival exactly
/// once, the accounting ends at zero, and every worker is shut down exactly once.
#[test]
fn arrivals_are_never_lost_while_keys_are_forgotten_concurrently() {
    let counts = Arc::new(Counts::default());
    let pool = counted_pool(&counts);
    let total = Arc::new(AtomicU64::new(0));
    let scheduler = Arc::new(
        Scheduler::builder()
            .policy(Box::new(SumArrivals {
                total: total.clone(),
                inner: keep_alive(Duration::ZERO),
            }))
            .build(),
    );
    scheduler.register(&pool);
    let done = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let scheduler = scheduler.clone();
        let done = done.clone();
        let ticks = ticks.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                scheduler.tick_once();
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The requests start once the ticker runs, so that ticks and requests overlap.
    assert!(eventually(Duration::from_secs(30), || ticks
        .load(Ordering::SeqCst)
        > 0));
    const THREADS: usize = 4;
    const EACH: usize = 400;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let lease = pool.acquire(&format!("k{}", (i + t) % 3)).unwrap();
                    assert!(!lease.down.load(Ordering::SeqCst), "served after shutdown");
                    drop(lease);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    ticker.join().unwrap();
    // An idle worker goes at the tick after its idle time is seen, and its key at the tick
    // after it was seen empty; a load started for requests that a released worker served
    // first ends on its own thread, and its worker goes the same way.
    assert!(eventually(Duration::from_secs(30), || {
        scheduler.tick_once();
        pool.keys() == 0
    }));
    assert_eq!(
        total.load(Ordering::SeqCst),
        (THREADS * EACH) as u64,
        "every request is one arrival"
    );
    assert_eq!(pool.keys(), 0, "all keys forgotten: {:?}", pool.stats());
    assert_eq!(pool.accounted_bytes(), 0);
    assert!(eventually(Duration::from_secs(30), || {
        counts.shutdowns.load(Ordering::SeqCst) == counts.spawns.load(Ordering::SeqCst)
    }));
}

/// Keeps the view of `m`'s worker from its first tick, and proposes its eviction from that
/// stale view at the next tick; then from the fresh view.
struct StaleThenFresh {
    saved: Option<poolwarden::policies::WorkerView>,
    ticks: usize,
}

impl EvictionPolicy for StaleThenFresh {
    fn name(&self) -> &str {
        "stale-then-fresh"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        self.ticks += 1;
        let Some((index, key)) = snapshot.governed_keys().find(|(_, k)| &*k.key == "m") else {
            return;
        };
        let fresh = snapshot.workers_of(key).first().copied();
        match self.ticks {
            1 => self.saved = fresh,
            2 => out.push(Proposal::evict(
                index,
                self.saved.as_ref().expect("seen at tick 1"),
                EvictionReason::custom("stale"),
            )),
            _ => {
                if let Some(w) = fresh {
                    out.push(Proposal::evict(index, &w, EvictionReason::custom("fresh")));
                }
            }
        }
    }
}

/// A proposal made from a view of an earlier tick carries that tick's release count: a request
/// that came and went since saves the worker. A proposal from the current view evicts it.
#[test]
fn a_proposal_from_an_earlier_ticks_view_does_not_evict_a_worker_used_since() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 4, 1);
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(StaleThenFresh {
            saved: None,
            ticks: 0,
        }))
        .build();
    scheduler.register(&pool);
    drop(pool.acquire("m").unwrap());
    clock.set(secs(1));
    assert!(scheduler.tick_once().evictions.is_empty());
    clock.set(secs(2));
    drop(pool.acquire("m").unwrap()); // comes and goes between the ticks
    clock.set(secs(3));
    let report = scheduler.tick_once();
    assert!(report.evictions.is_empty(), "stale: {:?}", report.evictions);
    assert_eq!(pool.workers("m"), 1);
    clock.set(secs(4));
    let report = scheduler.tick_once();
    assert_eq!(report.evictions.len(), 1, "fresh view evicts");
    assert_eq!(pool.workers("m"), 0);
}

/// Object safety: policies are used as `Box<dyn EvictionPolicy>` and `&dyn EvictionPolicy`.
#[test]
fn the_policy_trait_is_object_safe() {
    let policies: Vec<Box<dyn EvictionPolicy>> = vec![
        keep_alive(secs(1)),
        Box::new(HybridHistogram::new(HybridHistogramConfig::default()).unwrap()),
        Box::new(StaleThenFresh {
            saved: None,
            ticks: 0,
        }),
    ];
    let names: Vec<&str> = policies
        .iter()
        .map(|p| (p as &dyn EvictionPolicy).name())
        .collect();
    assert_eq!(
        names,
        vec!["keep-alive", "hybrid-histogram", "stale-then-fresh"]
    );
}

/// Reads used = the pool's accounted bytes, total 100.
struct PoolMemory(Pool<Model>);

impl MemoryProbe for PoolMemory {
    fn read(&mut self) -> Option<MemoryReading> {
        let used = self.0.accounted_bytes();
        Some(MemoryReading {
            total: 100,
            available: 100u64.saturating_sub(used),
            process_rss: None,
        })
    }
}

/// memory-pressure, with a request that comes and goes on the last victim it proposes between
/// the snapshot and the eviction (once).
struct TouchLastVictim {
    inner: MemoryPressure,
    pool: Pool<Model>,
    fired: bool,
}

impl EvictionPolicy for TouchLastVictim {
    fn name(&self) -> &str {
        "touch-last-victim"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        let start = out.len();
        self.inner.propose(snapshot, out);
        if out.len() > start && !std::mem::replace(&mut self.fired, true) {
            let key = &snapshot.keys[out.last().unwrap().key].key;
            drop(self.pool.try_acquire(key).expect("the idle victim"));
        }
    }
}

/// The hysteresis promise: once above `high`, memory-pressure keeps evicting until usage is at
/// or below `low`. Here one of its evictions is refused by the pool's CAS (a request came and
/// went between snapshot and eviction, as promised): usage stays above `low`, so the next ticks
/// must go on evicting.
///
/// Ten keys of 10 bytes against 100: 100 %. Tick 1 proposes five (projected 50 = low); the
/// fifth is used in between and stays: four go, usage 60 %, between low (50 %) and high (90 %).
/// Expected: one more eviction at a later tick.
#[test]
fn memory_pressure_goes_on_to_low_when_one_of_its_evictions_is_refused() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 1, 10);
    let policy = TouchLastVictim {
        inner: MemoryPressure::new(MemoryPressureConfig {
            high: 0.9,
            low: 0.5,
            limit: None,
            order: VictimOrder::Lru,
            max_per_tick: 5,
            min_idle: Duration::ZERO,
            settle: Duration::ZERO,
        })
        .unwrap(),
        pool: pool.clone(),
        fired: false,
    };
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .probe(PoolMemory(pool.clone()))
        .policy(Box::new(policy))
        .build();
    scheduler.register(&pool);
    for k in 0..10 {
        drop(pool.acquire(&format!("k{k}")).unwrap());
    }
    clock.set(secs(1));
    assert_eq!(scheduler.tick_once().evictions.len(), 4, "one saved by CAS");
    assert_eq!(pool.accounted_bytes(), 60);
    let mut later = 0;
    for t in 2..30 {
        clock.set(secs(t));
        later += scheduler.tick_once().evictions.len();
    }
    assert_eq!(pool.accounted_bytes(), 50, "usage back at low");
    assert_eq!(later, 1);
}

// ---------------------------------------------------------------------------------------------
// 3. Reliability

/// How long a [`Slow`] worker takes to shut down: far above every bound the test checks, so
/// that a fault (waiting for a shutdown) cannot hide in a noisy machine's slack.
const SLOW_SHUTDOWN: Duration = Duration::from_secs(6);

struct Slow {
    shutdowns: Arc<AtomicUsize>,
}

impl Worker for Slow {
    fn memory_bytes(&self) -> u64 {
        1
    }

    fn shutdown(&self) {
        std::thread::sleep(SLOW_SHUTDOWN);
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

/// Six slow (6 s) shutdowns in one pool at once: another pool's keep-alive eviction is on time,
/// `stats()` answers at once, `stop()` returns after its `shutdown_wait` (0.5 s here) rather
/// than the shutdowns, and each of the six shutdowns runs exactly once. The bounds are
/// generous, each well below the 6 s a stalled path would take.
#[test]
fn many_slow_shutdowns_stall_nothing() {
    let slow_done = Arc::new(AtomicUsize::new(0));
    let done = slow_done.clone();
    let slow = Pool::builder("slow", move |_key: &str| {
        Ok::<_, SpawnError>(Slow {
            shutdowns: done.clone(),
        })
    })
    .max_workers_per_model(6)
    .build();
    let fast_done = Arc::new(AtomicUsize::new(0));
    let done = fast_done.clone();
    let fast = Pool::builder("fast", move |_key: &str| {
        Ok::<_, SpawnError>(Slow {
            shutdowns: done.clone(),
        })
    })
    .build();
    let scheduler = Scheduler::builder()
        .tick(Duration::from_millis(10))
        .shutdown_wait(Duration::from_millis(500))
        .build();
    scheduler.register_with_policy(&slow, keep_alive(Duration::ZERO));
    let fast_policy = Box::new(
        poolwarden::policies::GradualLru::new(poolwarden::policies::GradualLruConfig {
            idle: Duration::from_millis(50),
            step: Duration::ZERO,
            min_workers: 0,
        })
        .unwrap(),
    );
    scheduler.register_with_policy(&fast, fast_policy);
    let leases: Vec<_> = (0..6).map(|_| slow.acquire("m").unwrap()).collect();
    drop(leases);
    scheduler.start().unwrap();
    assert!(eventually(Duration::from_secs(10), || slow.workers("m") == 0));
    let idle_since = Instant::now();
    drop(fast.acquire("m").unwrap());
    assert!(eventually(Duration::from_secs(10), || fast.workers("m") == 0));
    let after = idle_since.elapsed();
    assert!(
        after < Duration::from_secs(3),
        "50 ms eviction after {after:?}"
    );
    let start = Instant::now();
    let _ = scheduler.stats();
    let _ = slow.stats();
    assert!(start.elapsed() < Duration::from_secs(2), "stats blocked");
    let start = Instant::now();
    scheduler.stop();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "stop() took {took:?}");
    assert!(eventually(Duration::from_secs(60), || slow_done
        .load(Ordering::SeqCst)
        == 6));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(slow_done.load(Ordering::SeqCst), 6, "each exactly once");
}

/// 100,000 keys used once (through the non-blocking reservation path, no load threads) are
/// all forgotten two ticks later, twice over; a forgotten key still works.
#[test]
fn a_hundred_thousand_one_shot_keys_leave_nothing_behind() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 1, 3);
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(keep_alive(Duration::ZERO))
        .build();
    scheduler.register(&pool);
    let mut t = 0;
    for round in 0..2 {
        for i in 0..100_000 {
            let key = format!("r{round}-k{i}");
            let reservation = pool.try_reserve(&key).expect("a slot");
            drop(reservation.complete(Model { bytes: 3 }));
        }
        assert_eq!(pool.keys(), 100_000);
        assert_eq!(pool.accounted_bytes(), 300_000);
        for _ in 0..2 {
            t += 1;
            clock.set(secs(t));
            scheduler.tick_once();
        }
        assert_eq!(pool.keys(), 0, "round {round}");
        assert_eq!(pool.accounted_bytes(), 0);
    }
    drop(pool.acquire("r0-k7").unwrap());
    assert_eq!(pool.workers("r0-k7"), 1);
}

/// `close()` while requests are running and a 1 ms scheduler evicts every idle worker: close
/// returns only when every worker that joined the pool (here: every worker that served a
/// request) is shut down; each worker is shut down exactly once (also when close races with an
/// eviction), none serves after its shutdown, and requests after close fail with `Closed`. A
/// load still running at close is not waited for (documented): its worker is shut down when
/// the load ends, so the count of all spawns is checked with a generous bound.
#[test]
fn close_racing_evictions_shuts_every_worker_down_exactly_once() {
    let counts = Arc::new(Counts::default());
    let served_workers = Arc::new(AtomicUsize::new(0));
    let pool = counted_pool(&counts);
    let scheduler = Scheduler::builder().tick(Duration::from_millis(1)).build();
    scheduler.register_with_policy(&pool, keep_alive(Duration::ZERO));
    scheduler.start().unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            let served_workers = served_workers.clone();
            std::thread::spawn(move || {
                let mut served = 0usize;
                for i in 0.. {
                    match pool.acquire(&format!("k{}", (i + t) % 3)) {
                        Ok(lease) => {
                            assert!(!lease.down.load(Ordering::SeqCst), "served after shutdown");
                            if !lease.served.swap(true, Ordering::SeqCst) {
                                served_workers.fetch_add(1, Ordering::SeqCst);
                            }
                            served += 1;
                        }
                        Err(AcquireError::Closed { .. }) => return served,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                served
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    pool.close();
    assert_eq!(
        counts.served_shutdowns.load(Ordering::SeqCst),
        served_workers.load(Ordering::SeqCst),
        "close() returned with workers not shut down"
    );
    let served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 0);
    assert!(served_workers.load(Ordering::SeqCst) > 0);
    assert!(matches!(
        pool.acquire("k0"),
        Err(AcquireError::Closed { .. })
    ));
    scheduler.stop();
    drop(pool);
    assert!(
        eventually(Duration::from_secs(30), || {
            counts.shutdowns.load(Ordering::SeqCst) == counts.spawns.load(Ordering::SeqCst)
        }),
        "a worker was never shut down: {} spawns, {} shutdowns",
        counts.spawns.load(Ordering::SeqCst),
        counts.shutdowns.load(Ordering::SeqCst)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. hybrid-histogram

const FUNCTIONS: &str = include_str!("../config/functions.toml");

fn periodic(every: u64, hours: u64) -> String {
    let mut trace = String::from("at,model,duration\n");
    let mut t = 0;
    while t < hours * 3600 {
        trace.push_str(&format!("{t},m,1\n"));
        t += every;
    }
    trace
}

/// A request of 1 s every 10 minutes for 24 h, measured over 6–24 h. Each idle time is 599 s
/// (bin 9): once learnt, the worker goes when the request ends and is pre-warmed 486 s into the
/// 599 s gap. Expected: no cold start in the window, a pre-warm per request, and the worker
/// held about a fifth of the time (114 of 600 s), far below keep-alive's all of it.
#[test]
fn a_ten_minute_periodic_key_is_prewarmed_and_not_held_in_between() {
    let run = run(
        FUNCTIONS,
        &periodic(600, 24),
        SimOptions {
            from: Some(secs(6 * 3600)),
            until: Some(secs(24 * 3600)),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    let window = 18.0 * 3600.0;
    assert_eq!(s.requests, 108);
    assert_eq!(s.cold_starts, 0, "{s:?}");
    assert!(s.prewarm_spawns >= 100, "pre-warms: {}", s.prewarm_spawns);
    assert!(
        s.worker_seconds < 0.3 * window,
        "held {} of {window} s",
        s.worker_seconds
    );
    assert!(s.idle_worker_seconds < 0.25 * window);
}

/// The same key on a model that takes 60 s to load, one request per worker: the pre-warm starts
/// a minute earlier, so the requests are still warm (the first one only is cold, before the
/// window).
#[test]
fn a_periodic_key_with_a_long_load_is_prewarmed_that_much_earlier() {
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "hybrid-histogram"
[pools.default]
max_workers_per_model = 1
cold_start = "1m"
"#;
    let run = run(
        config,
        &periodic(600, 24),
        SimOptions {
            from: Some(secs(6 * 3600)),
            until: Some(secs(24 * 3600)),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    let window = 18.0 * 3600.0;
    assert_eq!(s.requests, 108);
    assert_eq!(s.cold_starts, 0, "{s:?}");
    assert_close(s.max_wait_secs, 0.0, "no request waited for a load");
    assert!(s.prewarm_spawns >= 100, "pre-warms: {}", s.prewarm_spawns);
    assert!(s.worker_seconds < 0.4 * window, "held {}", s.worker_seconds);
}

/// A single request on a model that takes 30 s to load: held from the start of its spawn (0)
/// until the fallback keep-alive (4 h) after it ended (31): evicted at 14431, idle 14400 s.
#[test]
fn a_single_request_holds_the_fallback_keep_alive() {
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "hybrid-histogram"
[pools.default]
max_workers_per_model = 1
cold_start = "30s"
"#;
    let run = run(config, "at,model,duration\n0,m,1\n", SimOptions::default());
    assert_eq!(eviction_times(&run), vec![14431.0]);
    assert_close(run.summary.worker_seconds, 14431.0, "held");
    assert_close(run.summary.idle_worker_seconds, 14400.0, "idle");
}

/// Every parameter has its documented default; bad values are located errors naming the key.
#[test]
fn hybrid_histogram_parameters_have_their_defaults_and_are_validated() {
    let c = HybridHistogramConfig::default();
    assert_eq!(c.range, secs(4 * 3600));
    assert_eq!(c.bin_width, secs(60));
    assert_eq!((c.head_percentile, c.tail_percentile), (5.0, 99.0));
    assert_eq!(
        (c.margin, c.forecast_margin, c.cv_threshold),
        (0.1, 0.15, 2.0)
    );
    assert_eq!((c.min_samples, c.min_workers), (10, 0));
    assert_eq!(c.fallback_keep_alive, secs(4 * 3600));
    let registry = PolicyRegistry::new();
    let bad = [
        ("bin_width = \"0s\"", "bin_width"),
        ("range = \"30s\"", "range"),
        ("range = \"100h\"\nbin_width = \"1s\"", "bin_width"),
        ("head_percentile = 101", "head_percentile"),
        (
            "head_percentile = 60\ntail_percentile = 50",
            "head_percentile",
        ),
        ("margin = 1.0", "margin"),
        ("forecast_margin = -0.1", "forecast_margin"),
        ("min_samples = 0", "min_samples"),
        ("cv_threshold = -1", "cv_threshold"),
        ("cv_threshold = nan", "cv_threshold"),
    ];
    for (line, key) in bad {
        let toml = format!("[policy]\nkind = \"hybrid-histogram\"\n{line}\n");
        let err = Config::from_toml(&toml, "hh.toml", &registry)
            .err()
            .unwrap_or_else(|| panic!("`{line}` accepted"))
            .to_string();
        assert!(
            err.contains(&format!("policy.{key}")) && err.contains("hh.toml:"),
            "`{line}`: {err}"
        );
    }
    // The boundaries themselves are accepted: 100,000 bins exactly, head = tail.
    let ok = "[policy]\nkind = \"hybrid-histogram\"\nrange = \"100000s\"\nbin_width = \"1s\"\nhead_percentile = 50\ntail_percentile = 50\n";
    Config::from_toml(ok, "hh.toml", &registry).expect("boundaries");
}

/// Memory per key with a million one-shot keys: the pool forgets them, but does the policy?
/// Feeds `hybrid-histogram` synthetic snapshots of a million distinct keys, each seen once
/// with one request and then once empty, and measures the process's resident memory.
#[test]
#[ignore = "KNOWN LIMIT (README, hybrid-histogram): it keeps a state per key ever seen, also \
            after the pool forgot the key, so that a key that comes back keeps its history; a \
            million one-shot keys grow its memory by hundreds of bytes each. Run alone: \
            cargo test --test adv_sim -- --ignored hybrid_histogram_state"]
fn hybrid_histogram_state_stays_flat_with_a_million_one_shot_keys() {
    fn rss() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
    let mut policy = HybridHistogram::new(HybridHistogramConfig::default()).unwrap();
    let pools = [poolwarden::policies::PoolView {
        name: Arc::from("p"),
        max_workers_per_model: 1,
        accounted_bytes: 0,
    }];
    let overrides = [poolwarden::policies::ModelOverrides::default()];
    let mut out = Vec::new();
    let mut prewarms = Vec::new();
    let mut tick = |keys: &[poolwarden::policies::KeyView], now: u64| {
        let governed = vec![true; keys.len()];
        let snapshot = Snapshot {
            now: secs(now),
            previous: None,
            memory: None,
            pools: &pools,
            keys,
            workers: &[],
            overrides: &overrides,
            governed: &governed,
        };
        out.clear();
        prewarms.clear();
        policy.propose(&snapshot, &mut out);
        policy.prewarm(&snapshot, &mut prewarms);
    };
    let key = |i: u64, arrivals: u64| poolwarden::policies::KeyView {
        pool: 0,
        key: Arc::from(format!("key-{i}").as_str()),
        id: KeyId(i + 1),
        workers: 0..0,
        starting: 0,
        waiting: 0,
        arrivals,
        first_arrival: (arrivals > 0).then_some(secs(1)),
        last_eviction: None,
        overrides: 0,
    };
    // Warm up the allocator with a first batch.
    let batch: Vec<_> = (0..10_000).map(|i| key(i, 1)).collect();
    tick(&batch, 1);
    let before = rss();
    let mut now = 2;
    for chunk in 0..100u64 {
        let batch: Vec<_> = (0..10_000)
            .map(|i| key(10_000 * (chunk + 1) + i, 1))
            .collect();
        tick(&batch, now);
        now += 1;
        let gone: Vec<_> = (0..10_000)
            .map(|i| key(10_000 * (chunk + 1) + i, 0))
            .collect();
        tick(&gone, now);
        now += 1;
    }
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "a million forgotten keys grew the policy by {} MiB",
        grown >> 20
    );
}
