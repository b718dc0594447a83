//! Definition of done 3, 4 and 5 of the core issue: the race test, stop, panic isolation.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use poolwarden::policies::{GradualLru, GradualLruConfig, KeepAlive, KeepAliveConfig};
use poolwarden::{
    EvictionPolicy, ManualClock, Pool, Proposal, Scheduler, Snapshot, SpawnError, SystemClock,
    Worker,
};

/// A worker that checks it is never used after its eviction started.
struct Guarded {
    evicted: AtomicBool,
    violations: Arc<AtomicU64>,
    served: AtomicU64,
}

impl Guarded {
    fn serve(&self) {
        if self.evicted.load(Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        std::hint::spin_loop();
        if self.evicted.load(Ordering::SeqCst) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Worker for Guarded {
    fn memory_bytes(&self) -> u64 {
        1000
    }
    fn shutdown(&self) {
        self.evicted.store(true, Ordering::SeqCst);
    }
}

#[test]
fn leases_never_reach_an_evicted_worker_while_the_scheduler_ticks_every_millisecond() {
    let violations = Arc::new(AtomicU64::new(0));
    let v = violations.clone();
    let clock = Arc::new(SystemClock::new());
    let pool = Pool::builder("race", move |_key: &str| {
        Ok::<_, SpawnError>(Guarded {
            evicted: AtomicBool::new(false),
            violations: v.clone(),
            served: AtomicU64::new(0),
        })
    })
    .clock(clock.clone())
    .max_workers_per_model(4)
    .build();
    let scheduler = Scheduler::builder()
        .clock(clock)
        .tick(Duration::from_millis(1))
        .policy(Box::new(
            GradualLru::new(GradualLruConfig {
                idle: Duration::ZERO,
                step: Duration::ZERO,
                min_workers: 0,
            })
            .unwrap(),
        ))
        .build();
    scheduler.register(&pool);
    let events = scheduler.subscribe();
    scheduler.start().unwrap();

    const THREADS: usize = 4;
    const REQUESTS: u64 = 20_000;
    let completed = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            let completed = completed.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let keys = ["a", "b"];
                for i in 0..REQUESTS {
                    let lease = pool.acquire(keys[(i as usize + t) % 2]).expect("acquire");
                    lease.serve();
                    drop(lease);
                    completed.fetch_add(1, Ordering::Relaxed);
                    if i % 512 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    // Let a few more ticks run against the now-idle pool.
    std::thread::sleep(Duration::from_millis(30));
    scheduler.stop();

    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "a lease reached an evicted worker"
    );
    assert_eq!(completed.load(Ordering::SeqCst), THREADS as u64 * REQUESTS);
    assert_eq!(pool.in_flight("a"), 0);
    assert_eq!(pool.in_flight("b"), 0);
    assert_eq!(pool.accounted_bytes(), pool.live_worker_bytes());
    let evicted = events
        .try_iter()
        .filter(|e| e.as_eviction().is_some())
        .count();
    assert!(
        evicted > 0,
        "the scheduler should have evicted idle workers during the run"
    );
    let stats = pool.stats();
    assert_eq!(
        stats.spawns - stats.evictions.values().sum::<u64>(),
        stats.total_workers() as u64
    );
}

#[test]
fn stop_returns_promptly_with_a_sixty_second_tick() {
    let scheduler = Scheduler::builder().tick(Duration::from_secs(60)).build();
    let clock = Arc::new(ManualClock::new());
    scheduler.register(&model_pool("p", &clock, 1, 1));
    scheduler.start().unwrap();
    assert!(scheduler.is_running());
    std::thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    scheduler.stop();
    let took = started.elapsed();
    assert!(!scheduler.is_running());
    // Generous: a stop that waited for the tick would take 60 s.
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
}

#[test]
fn dropping_the_scheduler_stops_its_thread() {
    let scheduler = Scheduler::builder().tick(Duration::from_secs(60)).build();
    scheduler.start().unwrap();
    let started = Instant::now();
    drop(scheduler);
    assert!(started.elapsed() < Duration::from_secs(10), "60 s tick");
}

struct Panicky;

impl EvictionPolicy for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn propose(&mut self, _snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {
        panic!("this policy always panics");
    }
}

#[test]
fn a_panicking_policy_leaves_the_other_pools_running() {
    let clock = Arc::new(ManualClock::new());
    let broken = model_pool("broken", &clock, 2, 5);
    let healthy = model_pool("healthy", &clock, 2, 7);
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(
            KeepAlive::new(KeepAliveConfig {
                ttl: secs(10),
                min_workers: 0,
            })
            .unwrap(),
        ))
        .build();
    scheduler.register_with_policy(&broken, Box::new(Panicky));
    scheduler.register(&healthy);
    drop(broken.acquire("x").unwrap());
    drop(healthy.acquire("y").unwrap());
    drop(healthy.acquire("z").unwrap());

    let mut evicted = Vec::new();
    for t in 0..=30 {
        clock.set(secs(t));
        let report = scheduler.tick_once();
        assert_eq!(
            report.policy_panics, 1,
            "the broken pool's policy runs (and panics) every tick"
        );
        evicted.extend(
            report
                .evictions
                .into_iter()
                .map(|e| (e.at.as_secs(), e.pool.to_string())),
        );
    }
    assert_eq!(
        evicted,
        vec![(10, "healthy".to_string()), (10, "healthy".to_string())]
    );
    assert_eq!(healthy.workers("y") + healthy.workers("z"), 0);
    assert_eq!(broken.workers("x"), 1);
    assert_eq!(scheduler.stats().policy_panics, 31);

    // The threaded scheduler survives the panics too.
    scheduler.start().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(scheduler.is_running());
    scheduler.stop();
}

#[test]
fn each_pool_is_governed_by_its_own_policy_whatever_the_registration_order() {
    let clock = Arc::new(ManualClock::new());
    let keep = |ttl| {
        Box::new(
            KeepAlive::new(KeepAliveConfig {
                ttl: secs(ttl),
                min_workers: 0,
            })
            .unwrap(),
        )
    };
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(keep(100))
        .build();
    let first = model_pool("first", &clock, 1, 1);
    let own = model_pool("own", &clock, 1, 1);
    let last = model_pool("last", &clock, 1, 1);
    scheduler.register(&first);
    scheduler.register_with_policy(&own, keep(10));
    scheduler.register(&last);
    for pool in [&first, &own, &last] {
        drop(pool.acquire("k").unwrap());
    }
    let mut evicted = Vec::new();
    for t in 0..=100 {
        clock.set(secs(t));
        evicted.extend(
            scheduler
                .tick_once()
                .evictions
                .into_iter()
                .map(|e| (e.at.as_secs(), e.pool.to_string())),
        );
    }
    assert_eq!(
        evicted,
        vec![
            (10, "own".to_string()),
            (100, "first".to_string()),
            (100, "last".to_string())
        ]
    );
}
