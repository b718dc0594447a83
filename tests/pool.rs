//! The pool's contract: routing, spawning, failures, eviction, dead workers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use poolwarden::policies::{MemoryPressure, MemoryPressureConfig, MemoryReading, Noop};
use poolwarden::pool::ThreadedWorker;
use poolwarden::{
    AcquireError, EvictionReason, FixedProbe, ManualClock, Pool, Scheduler, SpawnError, Worker,
};

#[test]
fn routing_prefers_fewest_in_flight_then_the_most_recently_used() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .clock(clock.clone())
        .max_workers_per_model(3)
        .max_in_flight_per_worker(2)
        .build();
    // Two workers, spawned through reservations (with 2 in flight allowed, a second acquire
    // would share the first worker instead of spawning).
    let a = pool.reserve("m").unwrap().complete(Model { bytes: 1 });
    let b = pool.reserve("m").unwrap().complete(Model { bytes: 1 });
    let (id_a, id_b) = (a.worker_id(), b.worker_id());
    clock.set(secs(10));
    drop(a);
    clock.set(secs(20));
    drop(b); // b is now the most recently used
    let first = pool.try_acquire("m").unwrap();
    assert_eq!(
        first.worker_id(),
        id_b,
        "ties on load go to the most recently used"
    );
    let second = pool.try_acquire("m").unwrap();
    assert_eq!(
        second.worker_id(),
        id_a,
        "then the one with fewer requests in flight"
    );
    let third = pool.try_acquire("m").unwrap();
    assert_eq!(pool.in_flight("m"), 3);
    drop((first, second, third));
    assert_eq!(pool.in_flight("m"), 0);
}

#[test]
fn a_failed_spawn_reaches_the_caller_and_changes_no_accounting() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let pool = Pool::builder("p", move |key: &str| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Err::<Model, SpawnError>(format!("cannot load {key}").into())
        } else {
            Ok(Model { bytes: 7 })
        }
    })
    .build();
    let error = pool.acquire("m").unwrap_err();
    assert!(matches!(error, AcquireError::Spawn { .. }), "{error}");
    // The factory's error is the source, printed once by whoever prints the chain.
    let source = std::error::Error::source(&error).map(|s| s.to_string());
    assert_eq!(source.as_deref(), Some("cannot load m"));
    assert!(!error.to_string().contains("cannot load m"), "{error}");
    let stats = pool.stats();
    assert_eq!(
        (stats.spawns, stats.spawn_failures, stats.accounted_bytes),
        (0, 1, 0)
    );
    assert_eq!(pool.workers("m"), 0);
    // The reservation was given back: the next acquire spawns.
    let lease = pool.acquire("m").unwrap();
    assert_eq!(lease.memory_bytes(), 7);
    assert_eq!(pool.accounted_bytes(), 7);
}

#[test]
fn a_panicking_factory_is_an_error_not_a_crash() {
    let pool = Pool::builder("p", |_key: &str| -> Result<Model, SpawnError> {
        panic!("boom")
    })
    .build();
    assert!(matches!(
        pool.acquire("m"),
        Err(AcquireError::SpawnPanicked { .. })
    ));
    assert_eq!(pool.stats().spawn_failures, 1);
    assert_eq!(pool.workers("m"), 0);
}

#[test]
fn concurrent_acquires_on_a_starting_key_never_spawn_past_the_limit() {
    let live = Arc::new(AtomicUsize::new(0));
    let l = live.clone();
    let pool = Pool::builder("p", move |_key: &str| {
        std::thread::sleep(Duration::from_millis(30)); // loading a model
        l.fetch_add(1, Ordering::SeqCst);
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .max_workers_per_model(3)
    .acquire_timeout(Duration::from_secs(30))
    .build();
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let pool = pool.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..5 {
                    let lease = pool.acquire("m").expect("acquire");
                    std::thread::sleep(Duration::from_millis(1));
                    drop(lease);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        live.load(Ordering::SeqCst),
        3,
        "exactly the limit was spawned"
    );
    assert_eq!(pool.workers("m"), 3);
    assert_eq!(pool.stats().spawns, 3);
    assert_eq!(pool.in_flight("m"), 0);
}

#[test]
fn acquire_times_out_when_the_key_is_saturated() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_millis(50))
        .build();
    let held = pool.acquire("m").unwrap();
    assert!(matches!(
        pool.acquire("m"),
        Err(AcquireError::Timeout { .. })
    ));
    assert_eq!(pool.workers("m"), 1, "a timed-out acquire spawns nothing");
    drop(held);
    assert!(pool.acquire("m").is_ok());
}

#[test]
fn a_blocked_acquire_gets_the_worker_when_it_is_released() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_secs(20))
        .build();
    let held = pool.acquire("m").unwrap();
    let id = held.worker_id();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("m").map(|l| l.worker_id()))
    };
    std::thread::sleep(Duration::from_millis(20));
    drop(held);
    assert_eq!(waiter.join().unwrap().unwrap(), id);
}

#[test]
fn evict_takes_only_idle_workers_and_settles_the_accounting() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 2, 100);
    let busy = pool.acquire("m").unwrap();
    let id = busy.worker_id();
    assert!(
        pool.evict("m", id, EvictionReason::Manual).is_none(),
        "busy workers stay"
    );
    drop(busy);
    let eviction = pool.evict("m", id, EvictionReason::Manual).unwrap();
    assert_eq!((eviction.workers_left, eviction.freed_bytes), (0, 100));
    assert!(
        pool.evict("m", id, EvictionReason::Manual).is_none(),
        "already gone"
    );
    assert_eq!(pool.accounted_bytes(), 0);
    assert_eq!(pool.stats().evictions.get("manual"), Some(&1));
    let again = pool.acquire("m").unwrap();
    assert_ne!(again.worker_id(), id, "ids are never reused");
}

#[test]
fn dead_worker_threads_are_removed_at_the_next_tick_with_their_own_reason() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("threads", |key: &str| {
        ThreadedWorker::spawn(&format!("model-{key}"), 64, |request: u32| {
            if request == 13 {
                panic!("the model crashed");
            }
        })
        .map_err(|e| Box::new(e) as SpawnError)
    })
    .clock(clock.clone())
    .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(Noop))
        .build();
    scheduler.register(&pool);
    let lease = pool.acquire("m").unwrap();
    lease.send(13).unwrap();
    drop(lease);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lease_alive(&pool) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = scheduler.tick_once();
    assert_eq!(report.evictions.len(), 1);
    assert_eq!(report.evictions[0].reason, EvictionReason::Dead);
    assert_eq!(pool.workers("m"), 0);
    assert_eq!(pool.accounted_bytes(), 0);
    assert_eq!(scheduler.stats().evictions.get("dead"), Some(&1));
}

fn lease_alive(pool: &Pool<ThreadedWorker<u32>>) -> bool {
    pool.try_acquire("m").is_some_and(|l| l.is_alive())
}

#[test]
fn an_unknown_or_nonsense_memory_reading_evicts_nothing() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 2, 1 << 30);
    let probe = FixedProbe::new(None);
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .probe(probe.clone())
        .policy(Box::new(
            MemoryPressure::new(MemoryPressureConfig::default()).unwrap(),
        ))
        .build();
    scheduler.register(&pool);
    drop(pool.acquire("m").unwrap());
    clock.set(secs(60));
    assert!(
        scheduler.tick_once().evictions.is_empty(),
        "unknown reading"
    );
    probe.set(Some(MemoryReading {
        total: 100,
        available: 500,
        process_rss: None,
    }));
    let report = scheduler.tick_once();
    assert!(report.memory.is_none(), "nonsense is unknown");
    assert!(report.evictions.is_empty());
    probe.set(Some(MemoryReading {
        total: 0,
        available: 0,
        process_rss: None,
    }));
    assert!(scheduler.tick_once().evictions.is_empty());
    // A real reading above `high` does evict.
    probe.set(Some(MemoryReading {
        total: 100,
        available: 5,
        process_rss: None,
    }));
    assert_eq!(scheduler.tick_once().evictions.len(), 1);
}

struct Counting(Arc<AtomicUsize>);

impl Worker for Counting {
    fn memory_bytes(&self) -> u64 {
        1
    }
    fn shutdown(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn eviction_shuts_each_worker_down_exactly_once() {
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let s = shutdowns.clone();
    let pool = Pool::builder("p", move |_key: &str| {
        Ok::<_, SpawnError>(Counting(s.clone()))
    })
    .build();
    let id = pool.acquire("m").unwrap().worker_id();
    pool.evict("m", id, EvictionReason::Manual).unwrap();
    pool.evict("m", id, EvictionReason::Manual);
    // Shutdowns run on the pool's reaper thread, off the evicting thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while shutdowns.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(pool); // the last handle: nothing left to shut down
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(shutdowns.load(Ordering::SeqCst), 1);
}
