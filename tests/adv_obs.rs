//! Adversarial tests of the observability features: metrics after scripted runs with
//! hand-computed values, the status view and its JSON, the event channel (bounded, closed on
//! stop, async under several executors), and `poolwarden status URL` against hostile servers.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::StreamExt;
use poolwarden::events::{PoolEvent, RecvTimeoutError, TryRecvError};
use poolwarden::policies::{MemoryPressure, MemoryPressureConfig};
use poolwarden::status::Status;
use poolwarden::{
    EvictionReason, FixedProbe, ManualClock, MemoryReading, Pool, Scheduler, SpawnError, Worker,
};

mod common;
use common::{eventually, keep_alive, secs};

/// A worker with a footprint and a liveness flag.
struct Model {
    bytes: u64,
    alive: Arc<AtomicBool>,
}

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

fn model(bytes: u64) -> Model {
    Model {
        bytes,
        alive: Arc::new(AtomicBool::new(true)),
    }
}

/// A factory whose loads of keys starting with `slow` wait for one message on the gate each.
fn gated(gate: Receiver<()>) -> impl Fn(&str) -> Result<Model, SpawnError> + Send + Sync {
    let gate = Mutex::new(gate);
    move |key: &str| {
        if key.starts_with("slow") {
            gate.lock().unwrap().recv().unwrap();
        }
        Ok(model(100))
    }
}

fn gated_pool(name: &str, clock: &Arc<ManualClock>, max: usize) -> (Pool<Model>, Sender<()>) {
    let (open, gate) = channel();
    let pool = Pool::builder(name, gated(gate))
        .clock(clock.clone())
        .max_workers_per_model(max)
        .acquire_timeout(Duration::from_secs(60))
        .build();
    (pool, open)
}

fn wait_for(what: &str, condition: impl FnMut() -> bool) {
    assert!(eventually(Duration::from_secs(20), condition), "{what}");
}

#[cfg(feature = "metrics")]
mod metrics_runs {
    use super::*;
    use common::recorder::{observe, registry};

    fn counter(name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        observe().counter(name, labels)
    }

    fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        observe().gauge(name, labels)
    }

    fn histogram(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        observe().histogram(name, labels)
    }

    /// The four per-key gauges.
    fn key_gauges(pool: &str, model: &str) -> [Option<f64>; 4] {
        let l = [("pool", pool), ("model", model)];
        [
            gauge("poolwarden_workers", &l),
            gauge("poolwarden_in_flight", &l),
            gauge("poolwarden_waiting", &l),
            gauge("poolwarden_starting", &l),
        ]
    }

    /// A worker found dead is evicted with reason `dead`: the counter says so, and the gauges
    /// drop to zero at that very tick (not left at the last value).
    #[test]
    fn a_dead_worker_counts_as_a_dead_eviction_and_its_gauges_drop() {
        const POOL: &str = "adv-obs-dead";
        registry();
        let clock = Arc::new(ManualClock::new());
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let pool = Pool::builder(POOL, move |_key: &str| {
            Ok::<_, SpawnError>(Model {
                bytes: 300,
                alive: flag.clone(),
            })
        })
        .clock(clock.clone())
        .build();
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(keep_alive(secs(1000)))
            .build();
        scheduler.register(&pool);
        let events = scheduler.subscribe();
        drop(pool.acquire("m").unwrap());
        scheduler.tick_once();
        assert_eq!(
            key_gauges(POOL, "m"),
            [Some(1.0), Some(0.0), Some(0.0), Some(0.0)]
        );
        assert_eq!(
            gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
            Some(300.0)
        );
        alive.store(false, Ordering::SeqCst);
        clock.advance(Duration::from_secs(1));
        let report = scheduler.tick_once();
        assert_eq!(report.evictions.len(), 1);
        assert_eq!(
            counter(
                "poolwarden_evictions_total",
                &[("pool", POOL), ("reason", "dead")]
            ),
            Some(1)
        );
        assert_eq!(key_gauges(POOL, "m")[0], Some(0.0), "workers after death");
        assert_eq!(
            gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
            Some(0.0)
        );
        let seen: Vec<PoolEvent> = events.try_iter().collect();
        assert_eq!(seen.len(), 2, "{seen:?}");
        let eviction = seen[1].as_eviction().unwrap();
        assert_eq!(eviction.reason, EvictionReason::Dead);
        assert_eq!(eviction.freed_bytes, 300);
        assert_eq!(eviction.workers_left, 0);
    }

    /// A load that panics is a failed spawn (not a spawn), and its request gets an error.
    #[test]
    fn a_panicking_load_counts_as_a_spawn_failure() {
        const POOL: &str = "adv-obs-panic";
        registry();
        let clock = Arc::new(ManualClock::new());
        let pool = Pool::builder(POOL, |key: &str| {
            if key == "boom" {
                panic!("the weights are corrupt");
            }
            Ok::<_, SpawnError>(model(10))
        })
        .clock(clock.clone())
        .acquire_timeout(Duration::from_secs(30))
        .build();
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(keep_alive(secs(1000)))
            .build();
        scheduler.register(&pool);
        assert!(pool.acquire("boom").is_err());
        assert!(pool.acquire("boom").is_err());
        drop(pool.acquire("fine").unwrap());
        scheduler.tick_once();
        let boom = [("pool", POOL), ("model", "boom")];
        let fine = [("pool", POOL), ("model", "fine")];
        assert_eq!(counter("poolwarden_spawn_failures_total", &boom), Some(2));
        assert_eq!(counter("poolwarden_spawns_total", &boom).unwrap_or(0), 0);
        assert_eq!(counter("poolwarden_spawns_total", &fine), Some(1));
        assert_eq!(
            counter("poolwarden_spawn_failures_total", &fine).unwrap_or(0),
            0
        );
        assert_eq!(
            counter("poolwarden_cold_starts_total", &boom).unwrap_or(0),
            0,
            "a request that got an error was not served"
        );
        assert_eq!(counter("poolwarden_cold_starts_total", &fine), Some(1));
        assert_eq!(
            counter("poolwarden_requests_total", &[("pool", POOL)]),
            Some(3)
        );
        // Every one of the three queued (none found a ready worker).
        assert_eq!(
            histogram("poolwarden_acquire_wait_seconds", &[("pool", POOL)]).len(),
            3
        );
        assert_eq!(key_gauges(POOL, "boom")[0].unwrap_or(0.0), 0.0);
    }

    /// Manual and keep-alive evictions are counted by reason; both keys' gauges go to zero and
    /// stay there once forgotten; a key that comes back shows its new value (not a cached 0).
    #[test]
    fn evictions_by_reason_and_a_key_that_comes_back() {
        const POOL: &str = "adv-obs-reasons";
        registry();
        let clock = Arc::new(ManualClock::new());
        let pool = Pool::builder(POOL, |_key: &str| Ok::<_, SpawnError>(model(50)))
            .clock(clock.clone())
            .max_workers_per_model(2)
            .build();
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(keep_alive(secs(10)))
            .build();
        scheduler.register(&pool);
        let a1 = pool.acquire("a").unwrap();
        let a2 = pool.acquire("a").unwrap();
        let b = pool.acquire("b").unwrap();
        let b_id = b.worker_id();
        drop((a1, a2, b));
        scheduler.tick_once();
        assert_eq!(key_gauges(POOL, "a")[0], Some(2.0));
        assert_eq!(key_gauges(POOL, "b")[0], Some(1.0));
        assert_eq!(
            gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
            Some(150.0)
        );

        assert!(pool.evict("b", b_id, EvictionReason::Manual).is_some());
        clock.advance(Duration::from_secs(11));
        scheduler.tick_once(); // keep-alive takes both of `a`
        for _ in 0..3 {
            scheduler.tick_once(); // vacant keys are forgotten
        }
        assert_eq!(
            counter(
                "poolwarden_evictions_total",
                &[("pool", POOL), ("reason", "manual")]
            ),
            Some(1)
        );
        assert_eq!(
            counter(
                "poolwarden_evictions_total",
                &[("pool", POOL), ("reason", "keep-alive")]
            ),
            Some(2)
        );
        for key in ["a", "b"] {
            assert_eq!(
                key_gauges(POOL, key),
                [Some(0.0); 4],
                "{key}: a key with no worker shows zero"
            );
        }
        assert_eq!(
            gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
            Some(0.0)
        );

        // `a` comes back: its gauge must show 1 again.
        drop(pool.acquire("a").unwrap());
        scheduler.tick_once();
        assert_eq!(key_gauges(POOL, "a")[0], Some(1.0));
        assert_eq!(
            counter("poolwarden_spawns_total", &[("pool", POOL), ("model", "a")]),
            Some(3)
        );
        assert_eq!(
            counter("poolwarden_requests_total", &[("pool", POOL)]),
            Some(4)
        );
    }

    /// Memory pressure evicts with reason `memory-pressure`; the budget-free and accounted
    /// gauges follow.
    #[test]
    fn memory_pressure_evictions_are_counted_by_reason() {
        const POOL: &str = "adv-obs-pressure";
        registry();
        let clock = Arc::new(ManualClock::new());
        let pool = Pool::builder(POOL, |_key: &str| Ok::<_, SpawnError>(model(100)))
            .clock(clock.clone())
            .max_workers_per_model(2)
            .build();
        let probe = FixedProbe::new(Some(MemoryReading {
            total: 1000,
            available: 100,
            process_rss: None,
        }));
        let policy = MemoryPressure::new(MemoryPressureConfig {
            high: 0.5,
            low: 0.1,
            min_idle: Duration::ZERO,
            settle: Duration::ZERO,
            ..MemoryPressureConfig::default()
        })
        .unwrap();
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .probe(probe)
            .policy(Box::new(policy))
            .build();
        scheduler.register(&pool);
        let x = pool.acquire("x").unwrap();
        let y = pool.acquire("x").unwrap();
        drop((x, y));
        clock.advance(Duration::from_secs(5));
        scheduler.tick_once();
        assert_eq!(
            counter(
                "poolwarden_evictions_total",
                &[("pool", POOL), ("reason", "memory-pressure")]
            ),
            Some(2)
        );
        assert_eq!(key_gauges(POOL, "x")[0], Some(0.0));
        assert_eq!(
            gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
            Some(0.0)
        );
        let status = scheduler.status();
        assert_eq!(status.evictions.get("memory-pressure"), Some(&2));
        let memory = status.memory.expect("the last reading");
        assert_eq!(
            (
                memory.total_bytes,
                memory.available_bytes,
                memory.used_bytes
            ),
            (1000, 100, 900)
        );
    }

    /// While a load runs: starting 1, waiting 1, workers 0; after it: workers 1, the request
    /// counted as a cold start, the load in the spawn histogram.
    #[test]
    fn gauges_during_a_slow_load_and_the_cold_start_after_it() {
        const POOL: &str = "adv-obs-slow";
        registry();
        let clock = Arc::new(ManualClock::new());
        let (pool, open) = gated_pool(POOL, &clock, 1);
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(keep_alive(secs(1000)))
            .build();
        scheduler.register(&pool);
        let p = pool.clone();
        let request = std::thread::spawn(move || drop(p.acquire("slow").unwrap()));
        wait_for("the load starts", || pool.starting("slow") == 1);
        scheduler.tick_once();
        assert_eq!(
            key_gauges(POOL, "slow"),
            [Some(0.0), Some(0.0), Some(1.0), Some(1.0)],
            "workers, in flight, waiting, starting during the load"
        );
        let status = scheduler.status();
        let m = status.pool(POOL).unwrap().model("slow").unwrap();
        assert_eq!((m.workers, m.waiting, m.starting), (0, 1, 1));
        open.send(()).unwrap();
        request.join().unwrap();
        scheduler.tick_once();
        assert_eq!(
            key_gauges(POOL, "slow"),
            [Some(1.0), Some(0.0), Some(0.0), Some(0.0)]
        );
        let l = [("pool", POOL), ("model", "slow")];
        assert_eq!(counter("poolwarden_cold_starts_total", &l), Some(1));
        assert_eq!(histogram("poolwarden_spawn_seconds", &l).len(), 1);
    }

    /// A request that queued behind a busy worker (no room to spawn) and got it when it was
    /// released did not wait for a load: not a cold start, but it is a queued wait.
    #[test]
    fn waiting_for_a_release_is_not_a_cold_start() {
        const POOL: &str = "adv-obs-release";
        registry();
        let clock = Arc::new(ManualClock::new());
        let pool = Pool::builder(POOL, |_key: &str| Ok::<_, SpawnError>(model(1)))
            .clock(clock.clone())
            .max_workers_per_model(1)
            .acquire_timeout(Duration::from_secs(60))
            .build();
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(keep_alive(secs(1000)))
            .build();
        scheduler.register(&pool);
        let held = pool.acquire("a").unwrap(); // cold start 1
        let p = pool.clone();
        let second = std::thread::spawn(move || drop(p.acquire("a").unwrap()));
        wait_for("the second request queues", || pool.waiting("a") == 1);
        scheduler.tick_once();
        assert_eq!(
            key_gauges(POOL, "a"),
            [Some(1.0), Some(1.0), Some(1.0), Some(0.0)]
        );
        drop(held);
        second.join().unwrap();
        drop(pool.acquire("a").unwrap()); // served at once
        scheduler.tick_once();
        let l = [("pool", POOL), ("model", "a")];
        assert_eq!(counter("poolwarden_cold_starts_total", &l), Some(1));
        assert_eq!(counter("poolwarden_spawns_total", &l), Some(1));
        assert_eq!(
            histogram("poolwarden_acquire_wait_seconds", &[("pool", POOL)]).len(),
            2,
            "the first (load) and the second (release) queued; the third did not"
        );
        assert_eq!(
            counter("poolwarden_requests_total", &[("pool", POOL)]),
            Some(3)
        );
        assert_eq!(
            key_gauges(POOL, "a"),
            [Some(1.0), Some(0.0), Some(0.0), Some(0.0)]
        );
    }

    /// A request that queued while another request's load ran (no room for a second load) and
    /// was served by that new worker waited for a load: both are cold starts.
    #[test]
    fn queued_during_anothers_load_and_served_by_it_is_a_cold_start() {
        const POOL: &str = "adv-obs-shared-load";
        registry();
        let clock = Arc::new(ManualClock::new());
        let (open, gate) = channel();
        let pool = Pool::builder(POOL, gated(gate))
            .clock(clock.clone())
            .max_workers_per_model(1)
            .max_in_flight_per_worker(2)
            .acquire_timeout(Duration::from_secs(60))
            .build();
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(keep_alive(secs(1000)))
            .build();
        scheduler.register(&pool);
        let done = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for _ in 0..2 {
            let p = pool.clone();
            let done = done.clone();
            threads.push(std::thread::spawn(move || {
                let lease = p.acquire("slow").unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                wait_for("both served", || done.load(Ordering::SeqCst) == 2);
                drop(lease);
            }));
        }
        wait_for("two queued, one load", || {
            pool.waiting("slow") == 2 && pool.starting("slow") == 1
        });
        open.send(()).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        scheduler.tick_once();
        let l = [("pool", POOL), ("model", "slow")];
        assert_eq!(counter("poolwarden_spawns_total", &l), Some(1));
        assert_eq!(counter("poolwarden_cold_starts_total", &l), Some(2));
    }
}

/// The status under a `ManualClock`: idle time, busy (`null`), age, footprint, in JSON too.
#[test]
fn status_reports_idle_busy_age_and_footprint_in_json() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("adv-status", |key: &str| {
        Ok::<_, SpawnError>(model(if key == "big" { 7000 } else { 10 }))
    })
    .clock(clock.clone())
    .max_workers_per_model(2)
    .build();
    let probe = FixedProbe::new(Some(MemoryReading {
        total: 4000,
        available: 1000,
        process_rss: Some(123),
    }));
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .probe(probe)
        .policy(keep_alive(secs(1000)))
        .build();
    scheduler.register(&pool);
    clock.set(Duration::from_secs(3));
    let busy = pool.acquire("big").unwrap();
    drop(pool.acquire("big").unwrap()); // the second worker, released at t=3
    clock.set(Duration::from_secs(10));
    scheduler.tick_once();
    clock.set(Duration::from_secs(12));
    let status = scheduler.status();
    let json = serde_json::to_value(&status).unwrap();
    let big = status.pool("adv-status").unwrap().model("big").unwrap();
    assert_eq!(
        (big.workers, big.in_flight, big.waiting, big.starting),
        (2, 1, 0, 0)
    );
    assert_eq!(big.memory_bytes, 14000);
    let mut idles: Vec<Option<Duration>> = big.instances.iter().map(|w| w.idle).collect();
    idles.sort();
    assert_eq!(idles, vec![None, Some(Duration::from_secs(9))]);
    for w in &big.instances {
        assert_eq!(w.age, Duration::from_secs(9));
        assert_eq!(w.memory_bytes, 7000);
        assert!(w.alive);
    }
    assert_eq!(
        status.pool("adv-status").unwrap().accounted_bytes,
        14000,
        "{status:?}"
    );
    // JSON: the documented names, seconds and bytes.
    assert_eq!(json["at_secs"], 12.0);
    assert_eq!(json["last_tick_secs"], 10.0);
    assert_eq!(json["ticks"], 1);
    assert_eq!(json["memory"]["used_bytes"], 3000);
    assert_eq!(json["memory"]["process_rss_bytes"], 123);
    let model = &json["pools"][0]["models"][0];
    assert_eq!(model["model"], "big");
    for field in [
        "workers",
        "in_flight",
        "waiting",
        "starting",
        "memory_bytes",
        "instances",
    ] {
        assert!(model.get(field).is_some(), "{field} in {model}");
    }
    let instances = model["instances"].as_array().unwrap();
    let mut idle_json: Vec<String> = instances
        .iter()
        .map(|w| w["idle_secs"].to_string())
        .collect();
    idle_json.sort();
    assert_eq!(idle_json, vec!["9.0".to_string(), "null".to_string()]);
    for w in instances {
        for field in ["id", "in_flight", "age_secs", "memory_bytes", "releases"] {
            assert!(w.get(field).is_some(), "{field} in {w}");
        }
    }
    // It reads back exactly.
    let back: Status = serde_json::from_value(json).unwrap();
    assert_eq!(back, status);
    drop(busy);
    // status() stamps nothing: a later status sees the same idle time for the released one.
    let again = scheduler.status();
    let big = again.pool("adv-status").unwrap().model("big").unwrap();
    assert_eq!(big.in_flight, 0);
    assert!(big
        .instances
        .iter()
        .any(|w| w.idle == Some(Duration::from_secs(9))));
}

/// `PoolStats`, `SchedulerStats` and both events serialize with their figures.
#[test]
fn stats_and_events_serialize() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("adv-ser", |_key: &str| Ok::<_, SpawnError>(model(64)))
        .clock(clock.clone())
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(keep_alive(secs(5)))
        .build();
    scheduler.register(&pool);
    let events = scheduler.subscribe();
    drop(pool.acquire("m").unwrap());
    clock.advance(Duration::from_secs(6));
    scheduler.tick_once();
    let stats = serde_json::to_value(pool.stats()).unwrap();
    assert_eq!(stats["spawns"], 1);
    assert_eq!(stats["cold_starts"], 1);
    assert_eq!(stats["evictions"]["keep-alive"], 1);
    let sched = serde_json::to_value(scheduler.stats()).unwrap();
    assert_eq!(sched["ticks"], 1);
    assert_eq!(sched["evictions"]["keep-alive"], 1);
    let spawn = serde_json::to_value(events.try_recv().unwrap()).unwrap();
    assert_eq!(spawn["event"], "spawn");
    assert_eq!(spawn["pool"], "adv-ser");
    assert_eq!(spawn["model"], "m");
    assert_eq!(spawn["memory_bytes"], 64);
    assert_eq!(spawn["prewarm"], false);
    let eviction = serde_json::to_value(events.try_recv().unwrap()).unwrap();
    assert_eq!(eviction["event"], "eviction");
    assert_eq!(eviction["model"], "m", "{eviction}");
    assert_eq!(eviction["reason"], "keep-alive", "{eviction}");
    assert_eq!(eviction["freed_bytes"], 64, "{eviction}");
}

/// Spawns `n` workers of distinct keys `k0..k{n-1}` (each one event).
fn spawn_keys(pool: &Pool<Model>, n: usize) {
    for i in 0..n {
        drop(pool.acquire(&format!("k{i}")).unwrap());
    }
}

fn simple_pool(name: &str, clock: &Arc<ManualClock>) -> Pool<Model> {
    Pool::builder(name, |_key: &str| Ok::<_, SpawnError>(model(1)))
        .clock(clock.clone())
        .build()
}

fn scheduler_for(pool: &Pool<Model>, clock: &Arc<ManualClock>) -> Scheduler {
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(keep_alive(secs(1)))
        .build();
    scheduler.register(pool);
    scheduler
}

/// A full queue loses its OLDEST events: the newest `capacity` remain, in order, and the
/// counter says how many went.
#[test]
fn a_slow_subscriber_keeps_the_newest_events_and_counts_the_rest() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-drop", &clock);
    let scheduler = scheduler_for(&pool, &clock);
    let slow = scheduler.subscribe_with_capacity(3);
    let fast = scheduler.subscribe();
    spawn_keys(&pool, 5);
    assert_eq!(slow.len(), 3);
    assert_eq!(slow.dropped(), 2);
    let keys: Vec<String> = slow
        .try_iter()
        .map(|e| e.as_spawn().unwrap().key.to_string())
        .collect();
    assert_eq!(keys, ["k2", "k3", "k4"]);
    assert_eq!(fast.try_iter().count(), 5);
    assert_eq!(fast.dropped(), 0);
    // Capacity 0 is taken as 1.
    let tiny = scheduler.subscribe_with_capacity(0);
    assert_eq!(tiny.capacity(), 1);
    clock.advance(Duration::from_secs(5));
    scheduler.tick_once(); // five keep-alive evictions
    assert_eq!(tiny.len(), 1);
    assert_eq!(tiny.dropped(), 4);
    assert_eq!(
        tiny.try_recv().unwrap().as_eviction().unwrap().workers_left,
        0
    );
    assert!(matches!(tiny.try_recv(), Err(TryRecvError::Empty)));
}

/// A subscriber that never reads neither blocks the ticks nor grows its queue.
#[test]
fn a_subscriber_that_never_reads_blocks_nothing() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-never", &clock);
    let scheduler = scheduler_for(&pool, &clock);
    let never = scheduler.subscribe_with_capacity(8);
    for round in 0..200 {
        spawn_keys(&pool, 5);
        clock.advance(Duration::from_secs(5));
        let report = scheduler.tick_once();
        assert_eq!(report.evictions.len(), 5, "round {round}");
    }
    assert_eq!(never.len(), 8);
    assert_eq!(never.dropped(), 2000 - 8);
}

/// `stop()` from another thread ends a blocking `recv` and `iter`, after the queued events.
#[test]
fn stop_ends_a_blocked_receiver() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-stop", &clock);
    let scheduler = scheduler_for(&pool, &clock);
    let events = scheduler.subscribe();
    let blocked = scheduler.subscribe();
    let reader = std::thread::spawn(move || blocked.iter().count());
    spawn_keys(&pool, 2);
    std::thread::sleep(Duration::from_millis(50));
    scheduler.stop();
    assert_eq!(reader.join().unwrap(), 2);
    assert_eq!(events.iter().count(), 2);
    assert!(events.recv().is_none());
    assert!(matches!(
        events.recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Closed)
    ));
    assert!(matches!(events.try_recv(), Err(TryRecvError::Closed)));
    // Nothing is delivered after the close.
    spawn_keys(&pool, 1);
    assert!(events.try_recv().is_err());
}

/// Doubtful: a subscription taken after `stop()` is never closed (a blocking `recv` would wait
/// forever), although the scheduler is stopped.
#[test]
/// A scheduler can start again after `stop()`, and `tick_once` publishes without the thread,
/// so a subscription taken after `stop()` is open: it gets the events from then on, and the
/// next `stop()` closes it (README, Events).
fn a_subscription_after_stop_gets_later_events_and_the_next_stop_closes_it() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-late", &clock);
    let scheduler = scheduler_for(&pool, &clock);
    scheduler.stop();
    let late = scheduler.subscribe();
    drop(pool.acquire("k").unwrap());
    assert!(matches!(
        late.recv_timeout(Duration::from_secs(30)),
        Ok(PoolEvent::Spawn(_))
    ));
    scheduler.stop();
    assert!(matches!(
        late.recv_timeout(Duration::from_millis(200)),
        Err(RecvTimeoutError::Closed)
    ));
}

/// A waker that counts its wakes.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The waker of the latest poll is the one woken (a task moved between threads or executors
/// changes its waker), and the close wakes it too.
#[test]
fn the_latest_waker_is_woken_by_an_event_and_by_the_close() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-waker", &clock);
    let scheduler = scheduler_for(&pool, &clock);
    let mut events = scheduler.subscribe();
    let first = Arc::new(CountingWaker::default());
    let second = Arc::new(CountingWaker::default());
    let w1 = Waker::from(first.clone());
    let w2 = Waker::from(second.clone());
    assert!(events.poll_recv(&mut Context::from_waker(&w1)).is_pending());
    assert!(events.poll_recv(&mut Context::from_waker(&w2)).is_pending());
    let p = pool.clone();
    std::thread::spawn(move || spawn_keys(&p, 1))
        .join()
        .unwrap();
    assert_eq!(second.0.load(Ordering::SeqCst), 1, "the latest waker");
    assert!(matches!(
        events.poll_recv(&mut Context::from_waker(&w2)),
        Poll::Ready(Some(_))
    ));
    assert!(events.poll_recv(&mut Context::from_waker(&w1)).is_pending());
    let s = std::thread::spawn(move || scheduler.stop());
    s.join().unwrap();
    assert!(first.0.load(Ordering::SeqCst) >= 1, "woken by the close");
    assert!(matches!(
        events.poll_recv(&mut Context::from_waker(&w1)),
        Poll::Ready(None)
    ));
    assert!(matches!(
        events.poll_recv(&mut Context::from_waker(&w1)),
        Poll::Ready(None)
    ));
}

/// Under `futures::executor`: a task parked on the stream is woken by events published from
/// other threads, and the stream ends when another thread stops the scheduler.
#[test]
fn the_stream_under_futures_executor_is_woken_from_other_threads() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-futures", &clock);
    let scheduler = Arc::new(scheduler_for(&pool, &clock));
    let mut events = scheduler.subscribe();
    let p = pool.clone();
    let s = scheduler.clone();
    let publisher = std::thread::spawn(move || {
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(2));
            drop(p.acquire(&format!("f{i}")).unwrap());
        }
        s.stop();
    });
    let keys: Vec<String> = futures::executor::block_on(async {
        let mut keys = Vec::new();
        while let Some(event) = events.next().await {
            keys.push(event.as_spawn().unwrap().key.to_string());
        }
        keys
    });
    publisher.join().unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    assert_eq!(keys, expected);
}

/// Under tokio's current-thread runtime: the only worker thread parks, and events from a plain
/// thread must wake it; `recv_async` ends on the close.
#[tokio::test(flavor = "current_thread")]
async fn the_stream_under_a_current_thread_tokio_runtime_is_woken_from_other_threads() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-tokio", &clock);
    let scheduler = Arc::new(scheduler_for(&pool, &clock));
    let mut events = scheduler.subscribe();
    let p = pool.clone();
    let s = scheduler.clone();
    let publisher = std::thread::spawn(move || {
        for i in 0..10 {
            std::thread::sleep(Duration::from_millis(5));
            drop(p.acquire(&format!("t{i}")).unwrap());
        }
        std::thread::sleep(Duration::from_millis(5));
        s.stop();
    });
    let collected = tokio::time::timeout(Duration::from_secs(30), async {
        let mut n = 0;
        while let Some(event) = events.recv_async().await {
            assert!(event.as_spawn().is_some());
            n += 1;
        }
        n
    })
    .await
    .expect("the task was woken");
    assert_eq!(collected, 10);
    publisher.join().unwrap();
}

/// Under tokio's multi-thread runtime, a spawned task reading the stream while another task
/// publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_in_a_spawned_multi_thread_task() {
    let clock = Arc::new(ManualClock::new());
    let pool = simple_pool("adv-ev-tokio-mt", &clock);
    let scheduler = Arc::new(scheduler_for(&pool, &clock));
    let mut events = scheduler.subscribe_with_capacity(1000);
    let reader = tokio::spawn(async move {
        let mut n = 0u32;
        while let Some(_event) = events.next().await {
            n += 1;
        }
        (n, events.dropped())
    });
    let p = pool.clone();
    tokio::task::spawn_blocking(move || spawn_keys(&p, 300))
        .await
        .unwrap();
    let s = scheduler.clone();
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    let (n, dropped) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reader ends")
        .unwrap();
    assert_eq!(u64::from(n) + dropped, 300);
    assert_eq!(dropped, 0);
}

#[cfg(feature = "cli")]
mod cli_status {
    use super::*;
    use std::process::{Command, Output};

    fn poolwarden(args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_poolwarden"))
            .args(args)
            .output()
            .unwrap()
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A one-shot server: answers the first request with `answer`, then holds the connection
    /// for `hold` before closing.
    fn serve(answer: Vec<u8>, hold: Duration) -> (String, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let _ = stream.write_all(&answer);
            let _ = stream.flush();
            std::thread::sleep(hold);
        });
        (url, handle)
    }

    fn a_status_json() -> String {
        let clock = Arc::new(ManualClock::new());
        let pool = Pool::builder("srv", |_key: &str| Ok::<_, SpawnError>(model(1 << 20)))
            .clock(clock.clone())
            .build();
        let scheduler = Scheduler::builder()
            .clock(clock.clone())
            .policy(keep_alive(secs(60)))
            .build();
        scheduler.register(&pool);
        drop(pool.acquire("llama").unwrap());
        clock.advance(Duration::from_secs(4));
        scheduler.tick_once();
        serde_json::to_string(&scheduler.status()).unwrap()
    }

    fn ok_response(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_good_server_gives_a_table() {
        let (url, server) = serve(ok_response(&a_status_json()), Duration::ZERO);
        let out = poolwarden(&["status", &url]);
        server.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with("srv"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            row.contains("llama") && row.contains("1.00 MiB") && row.contains("4s"),
            "{row}"
        );
    }

    /// Bad answers: 76 with a one-line error, never a panic.
    #[test]
    fn bad_answers_exit_76_with_a_clear_error() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not json", ok_response("<html>hello</html>")),
            ("truncated json", ok_response("{\"at_secs\": 1.0, \"running\"")),
            ("negative seconds", ok_response(&a_status_json().replacen("\"at_secs\":", "\"at_secs\":-5.0,\"x\":", 1))),
            ("a 404", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()),
            ("not HTTP", b"SSH-2.0-OpenSSH_9.0\r\n".to_vec()),
            ("nothing", Vec::new()),
            (
                "bad chunks",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(),
            ),
            (
                "huge chunk size",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n{}\r\n0\r\n\r\n".to_vec(),
            ),
            ("binary", ok_response("\u{0}\u{1}\u{2}\u{fffd}")),
        ];
        for (name, answer) in cases {
            let (url, server) = serve(answer, Duration::ZERO);
            let out = poolwarden(&["status", "--timeout", "5s", &url]);
            server.join().unwrap();
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(76), "{name}: {err}");
            assert!(err.starts_with("error: "), "{name}: {err}");
            assert!(!err.contains("panicked"), "{name}: {err}");
        }
    }

    /// Extreme but valid values render without a panic.
    #[test]
    fn extreme_values_render() {
        let mut status: serde_json::Value = serde_json::from_str(&a_status_json()).unwrap();
        status["tick_secs"] = serde_json::json!(1.0e19);
        status["ticks"] = serde_json::json!(u64::MAX);
        let model = &mut status["pools"][0]["models"][0];
        model["memory_bytes"] = serde_json::json!(u64::MAX);
        model["model"] = serde_json::json!("模型\twith\u{200b}odd name");
        model["instances"][0]["idle_secs"] = serde_json::json!(1.8e19);
        model["instances"][0]["memory_bytes"] = serde_json::json!(u64::MAX);
        let (url, server) = serve(ok_response(&status.to_string()), Duration::ZERO);
        let out = poolwarden(&["status", &url]);
        server.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }

    #[test]
    fn an_unreachable_server_exits_69() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // closed again when the listener drops
        let out = poolwarden(&["status", &format!("http://127.0.0.1:{port}")]);
        assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error: cannot reach"),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn bad_urls_exit_64() {
        for url in [
            "ftp://x:1",
            "https://x:1",
            "http://",
            "http://user@x:1",
            "x:port",
        ] {
            let out = poolwarden(&["status", url]);
            assert_eq!(out.status.code(), Some(64), "{url}: {}", stderr(&out));
            assert!(stderr(&out).starts_with("error: "), "{url}");
        }
    }

    /// A URL whose port is out of range, or whose host is malformed, is a bad argument (64),
    /// not an unreachable server (69).
    #[test]
    fn malformed_authorities_exit_64() {
        for url in ["http://127.0.0.1:99999", "http://[::1", "http://:8080"] {
            let out = poolwarden(&["status", url]);
            assert_eq!(out.status.code(), Some(64), "{url}: {}", stderr(&out));
        }
    }

    /// `--timeout 0s` is a bad option (64, like `--tick 0s`); it must not claim the server is
    /// unreachable when it is up.
    #[test]
    fn a_zero_timeout_is_a_usage_error() {
        let (url, server) = serve(ok_response(&a_status_json()), Duration::ZERO);
        let out = poolwarden(&["status", "--timeout", "0s", &url]);
        drop(server);
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    }

    /// A server that sends a complete answer (Content-Length) but keeps the connection open:
    /// the answer is complete, so the status is shown.
    #[test]
    fn a_complete_answer_on_a_connection_left_open_is_shown() {
        let (url, server) = serve(ok_response(&a_status_json()), Duration::from_secs(5));
        let out = poolwarden(&["status", "--timeout", "1s", &url]);
        server.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }

    #[test]
    fn json_output_reads_back_as_the_same_status() {
        let body = a_status_json();
        let (url, server) = serve(ok_response(&body), Duration::ZERO);
        let out = poolwarden(&["status", "--json", &url]);
        server.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let printed: Status = serde_json::from_slice(&out.stdout).unwrap();
        let sent: Status = serde_json::from_str(&body).unwrap();
        assert_eq!(printed, sent);
    }
}
