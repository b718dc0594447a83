//! Reliability under adversarial use: slow shutdowns off the tick, keys that come and go,
//! shutdown when the pool goes, hung loads, and a stress run of sync and async requests against
//! a scheduler that evicts every idle worker.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, keep_alive, secs, Model};
use poolwarden::policies::{GradualLru, GradualLruConfig};
use poolwarden::{AcquireError, ManualClock, Pool, ReserveRefusal, Scheduler, SpawnError, Worker};

/// A worker that knows whether it was shut down, and counts shutdowns.
struct Tracked {
    down: AtomicBool,
    shutdowns: Arc<AtomicUsize>,
    shutdown_takes: Duration,
}

impl Worker for Tracked {
    fn memory_bytes(&self) -> u64 {
        10
    }

    fn shutdown(&self) {
        std::thread::sleep(self.shutdown_takes);
        assert!(!self.down.swap(true, Ordering::SeqCst), "shut down twice");
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

fn tracked_pool(
    name: &str,
    shutdowns: &Arc<AtomicUsize>,
    shutdown_takes: Duration,
) -> Pool<Tracked> {
    let shutdowns = shutdowns.clone();
    Pool::builder(name, move |_key: &str| {
        Ok::<_, SpawnError>(Tracked {
            down: AtomicBool::new(false),
            shutdowns: shutdowns.clone(),
            shutdown_takes,
        })
    })
    .build()
}

#[test]
fn a_slow_shutdown_stalls_neither_the_tick_nor_stats_nor_stop() {
    let slow_done = Arc::new(AtomicUsize::new(0));
    let fast_done = Arc::new(AtomicUsize::new(0));
    // Far above every bound below, so that a stalled path cannot hide in a noisy machine's slack.
    let slow = tracked_pool("slow", &slow_done, Duration::from_secs(8));
    let fast = tracked_pool("fast", &fast_done, Duration::ZERO);
    let scheduler = Scheduler::builder().tick(Duration::from_millis(10)).build();
    scheduler.register_with_policy(&slow, keep_alive(Duration::ZERO));
    scheduler.register_with_policy(&fast, keep_alive(Duration::from_millis(50)));
    // Two workers on the slow pool, whose shutdowns take 8 s each.
    let (a, b) = (slow.acquire("m").unwrap(), slow.acquire("m").unwrap());
    drop((a, b));
    scheduler.start().unwrap();
    assert!(eventually(Duration::from_secs(10), || slow.workers("m") == 0));
    // Meanwhile the other pool's 50 ms keep-alive eviction happens on time.
    let idle_since = Instant::now();
    drop(fast.acquire("m").unwrap());
    assert!(eventually(Duration::from_secs(10), || fast.workers("m") == 0));
    let evicted_after = idle_since.elapsed();
    assert!(
        evicted_after < Duration::from_secs(3),
        "keep-alive 50 ms eviction came after {evicted_after:?}"
    );
    let start = Instant::now();
    let _ = scheduler.stats();
    assert!(start.elapsed() < Duration::from_secs(2), "stats() blocked");
    assert_eq!(slow_done.load(Ordering::SeqCst), 0, "still shutting down");
    // stop() waits for those shutdowns at most its documented 2 s.
    let start = Instant::now();
    scheduler.stop();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "stop() took {took:?}");
    assert!(eventually(Duration::from_secs(30), || slow_done
        .load(Ordering::SeqCst)
        == 2));
}

#[test]
fn keys_that_are_gone_are_forgotten_unknown_names_included() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |key: &str| {
        if key.starts_with("bad") {
            Err::<Model, SpawnError>(format!("no model named {key}").into())
        } else {
            Ok(Model { bytes: 1 })
        }
    })
    .clock(clock.clone())
    .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(keep_alive(Duration::ZERO))
        .build();
    scheduler.register(&pool);
    for i in 0..2_000 {
        drop(pool.acquire(&format!("model-{i}")).unwrap());
        assert!(pool.acquire(&format!("bad-{i}")).is_err());
    }
    assert_eq!(pool.keys(), 4_000);
    clock.set(secs(1));
    scheduler.tick_once(); // evicts every idle worker; forgets the failed names
    assert_eq!(pool.keys(), 2_000);
    clock.set(secs(2));
    scheduler.tick_once(); // the keys that lost their last worker were seen empty once
    assert_eq!(pool.keys(), 0);
    assert_eq!(pool.accounted_bytes(), 0);
    // A forgotten key works as before.
    drop(pool.acquire("model-7").unwrap());
    assert_eq!(pool.workers("model-7"), 1);
}

#[test]
fn forgetting_a_key_is_safe_against_a_concurrent_load() {
    let clock = Arc::new(ManualClock::new());
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    let pool = Pool::builder("p", move |_key: &str| {
        let (open, cv) = &*g;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        Ok::<_, SpawnError>(Model { bytes: 5 })
    })
    .clock(clock.clone())
    .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(keep_alive(Duration::ZERO))
        .build();
    scheduler.register(&pool);
    let requester = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("m").map(|l| l.memory_bytes()))
    };
    assert!(eventually(Duration::from_secs(30), || pool.starting("m") == 1));
    for t in 1..5 {
        clock.set(secs(t));
        scheduler.tick_once();
        assert_eq!(pool.keys(), 1, "a key with a load in progress stays");
    }
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    assert_eq!(requester.join().unwrap().unwrap(), 5);
    assert_eq!(pool.accounted_bytes(), 5);
    assert_eq!(pool.live_worker_bytes(), 5);
}

#[test]
fn dropping_the_last_handle_shuts_every_worker_down_even_one_still_leased() {
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let pool = tracked_pool("p", &shutdowns, Duration::ZERO);
    let leases: Vec<_> = (0..3).map(|_| pool.acquire("m").unwrap()).collect();
    let kept = pool.acquire("other").unwrap();
    drop(leases);
    drop(pool);
    assert!(eventually(Duration::from_secs(30), || shutdowns
        .load(Ordering::SeqCst)
        == 3));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        shutdowns.load(Ordering::SeqCst),
        3,
        "the leased one waits for its lease"
    );
    assert!(!kept.down.load(Ordering::SeqCst));
    drop(kept);
    assert!(eventually(Duration::from_secs(30), || shutdowns
        .load(Ordering::SeqCst)
        == 4));
}

#[test]
fn close_drains_fails_waiters_and_refuses_new_requests() {
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let pool = tracked_pool("p", &shutdowns, Duration::from_millis(20));
    let busy = pool.acquire("m").unwrap();
    drop(pool.acquire("idle").unwrap());
    let closer = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            pool.close();
            start.elapsed()
        })
    };
    assert!(eventually(Duration::from_secs(30), || pool.is_closed()));
    assert!(matches!(
        pool.acquire("m"),
        Err(AcquireError::Closed { .. })
    ));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !closer.is_finished(),
        "close() waits for the request in flight"
    );
    drop(busy);
    closer.join().unwrap();
    assert_eq!(
        shutdowns.load(Ordering::SeqCst),
        2,
        "every worker shut down"
    );
    assert_eq!(pool.accounted_bytes(), 0);
}

/// A reservation made before `close()` and completed after it: no panic, the caller gets its
/// lease, the worker never joins the closed pool and is shut down once the lease ends; a
/// pre-warm completed after close is shut down at once; reservations after close are refused.
#[test]
fn a_reservation_completed_after_close_is_served_then_shut_down() {
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let pool = tracked_pool("p", &shutdowns, Duration::ZERO);
    let served = pool.try_reserve("m").unwrap();
    let idle = pool.try_reserve("w").unwrap();
    pool.close();
    assert_eq!(pool.try_reserve("m").err(), Some(ReserveRefusal::Closed));
    assert!(pool.reserve("x").is_none());
    let lease = served.complete(Tracked {
        down: AtomicBool::new(false),
        shutdowns: shutdowns.clone(),
        shutdown_takes: Duration::ZERO,
    });
    assert!(
        !lease.down.load(Ordering::SeqCst),
        "the caller's request runs"
    );
    assert_eq!((pool.workers("m"), pool.accounted_bytes()), (0, 0));
    idle.complete_idle(Tracked {
        down: AtomicBool::new(false),
        shutdowns: shutdowns.clone(),
        shutdown_takes: Duration::ZERO,
    });
    assert!(eventually(Duration::from_secs(30), || shutdowns
        .load(Ordering::SeqCst)
        == 1));
    drop(lease);
    assert!(eventually(Duration::from_secs(30), || shutdowns
        .load(Ordering::SeqCst)
        == 2));
    assert_eq!((pool.workers("m"), pool.workers("w")), (0, 0));
    assert_eq!(pool.accounted_bytes(), 0);
}

/// A reservation held past `spawn_timeout` is expired by the tick (a failed spawn, its slot
/// free again); completing it afterwards does not panic: the caller's request is served, the
/// worker stays out of the pool and is shut down when the lease ends.
#[test]
fn a_reservation_completed_after_its_spawn_timed_out_is_served_then_shut_down() {
    let clock = Arc::new(ManualClock::new());
    let shutdowns = Arc::new(AtomicUsize::new(0));
    let s = shutdowns.clone();
    let pool = Pool::builder("p", move |_key: &str| {
        Ok::<_, SpawnError>(Tracked {
            down: AtomicBool::new(false),
            shutdowns: s.clone(),
            shutdown_takes: Duration::ZERO,
        })
    })
    .clock(clock.clone())
    .max_workers_per_model(1)
    .spawn_timeout(Duration::from_secs(10))
    .build();
    let scheduler = Scheduler::builder().clock(clock.clone()).build();
    scheduler.register_with_policy(&pool, keep_alive(Duration::from_secs(3600)));
    let late = pool.try_reserve("m").unwrap();
    assert_eq!(pool.try_reserve("m").err(), Some(ReserveRefusal::AtLimit));
    clock.set(secs(11));
    scheduler.tick_once();
    assert_eq!(pool.stats().spawn_timeouts, 1);
    let lease = late.complete(Tracked {
        down: AtomicBool::new(false),
        shutdowns: shutdowns.clone(),
        shutdown_takes: Duration::ZERO,
    });
    assert!(!lease.down.load(Ordering::SeqCst));
    assert_eq!((pool.workers("m"), pool.accounted_bytes()), (0, 0));
    drop(lease);
    assert!(eventually(Duration::from_secs(30), || shutdowns
        .load(Ordering::SeqCst)
        == 1));
    // The slot is free: the next request loads a worker that joins the pool.
    drop(pool.acquire("m").unwrap());
    assert_eq!(pool.workers("m"), 1);
}

/// Requests racing `close()` on many threads: a lease alive after `close()` returned would
/// be one that close() never saw (it waits for every request in flight on the workers it
/// took). None is.
#[test]
fn no_request_is_served_once_close_has_returned() {
    for _ in 0..20 {
        let shutdowns = Arc::new(AtomicUsize::new(0));
        let pool = tracked_pool("p", &shutdowns, Duration::ZERO);
        let closed = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (pool, closed, late) = (pool.clone(), closed.clone(), late.clone());
                std::thread::spawn(move || {
                    for i in 0.. {
                        let key = format!("k{}-{}", t, i % 50);
                        match pool.acquire(&key) {
                            Ok(lease) => {
                                // Checked while the lease is held.
                                if closed.load(Ordering::SeqCst) {
                                    late.fetch_add(1, Ordering::SeqCst);
                                }
                                assert!(!lease.down.load(Ordering::SeqCst));
                            }
                            Err(AcquireError::Closed { .. }) => return,
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        pool.close();
        closed.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(late.load(Ordering::SeqCst), 0, "served after close()");
    }
}

#[test]
fn a_hung_load_times_out_and_no_longer_pins_its_key() {
    let clock = Arc::new(ManualClock::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (c, g) = (calls.clone(), gate.clone());
    let pool = Pool::builder("p", move |_key: &str| {
        if c.fetch_add(1, Ordering::SeqCst) >= 2 {
            // The third load hangs until the gate opens.
            let (open, cv) = &*g;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .clock(clock.clone())
    .max_workers_per_model(3)
    .spawn_timeout(Duration::from_secs(60))
    .acquire_timeout(Duration::from_secs(120))
    .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(
            GradualLru::new(GradualLruConfig::default()).unwrap(),
        ))
        .build();
    scheduler.register(&pool);
    let (a, b) = (pool.acquire("m").unwrap(), pool.acquire("m").unwrap());
    // A third request calls for a third load, which hangs.
    let third = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("m").map(|_| ()))
    };
    assert!(eventually(Duration::from_secs(30), || pool.starting("m")
        == 1
        && pool.waiting("m") == 1));
    drop((a, b)); // the third request takes a released worker; the load still hangs
    third.join().unwrap().unwrap();
    assert_eq!((pool.workers("m"), pool.starting("m")), (2, 1));

    // gradual-lru leaves a key with a spawn in progress alone; past spawn_timeout the spawn
    // counts as failed, and the idle workers go.
    let mut evicted = 0;
    for minute in 1..=60 * 60 {
        clock.set(secs(minute * 60));
        evicted += scheduler.tick_once().evictions.len();
        if evicted == 2 {
            break;
        }
    }
    assert_eq!(evicted, 2, "the idle workers were scaled down");
    let stats = pool.stats();
    assert_eq!((stats.spawn_failures, stats.spawn_timeouts), (1, 1));
    assert_eq!(pool.starting("m"), 0);
    // The late worker is not added.
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.workers("m"), 0);
    assert_eq!(pool.accounted_bytes(), 0);
}

#[test]
fn the_request_behind_a_hung_load_fails_with_spawn_timeout() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| {
        std::thread::sleep(Duration::from_secs(3600));
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .clock(clock.clone())
    .spawn_timeout(Duration::from_secs(30))
    .acquire_timeout(Duration::from_secs(120))
    .build();
    let scheduler = Scheduler::builder().clock(clock.clone()).build();
    scheduler.register(&pool);
    let requester = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("m").map(|_| ()))
    };
    assert!(eventually(Duration::from_secs(30), || pool.starting("m") == 1));
    clock.set(secs(31));
    scheduler.tick_once();
    let result = requester.join().unwrap();
    assert!(
        matches!(result, Err(AcquireError::SpawnTimeout { .. })),
        "{result:?}"
    );
}

/// A worker that checks it never serves after its shutdown.
struct Checked {
    down: AtomicBool,
    bytes: u64,
}

impl Worker for Checked {
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }

    fn shutdown(&self) {
        assert!(!self.down.swap(true, Ordering::SeqCst), "shut down twice");
    }
}

#[test]
fn stress_sync_and_async_requests_against_a_tick_that_evicts_every_idle_worker() {
    stress(2_000, 500);
}

/// The long stress run: `cargo test --release --test reliability -- --ignored` (scale it with
/// `POOLWARDEN_STRESS_ROUNDS`, default 100: 100 times the leases of the quick run).
#[test]
#[ignore = "long: run on demand"]
fn long_stress_run() {
    let rounds: usize = std::env::var("POOLWARDEN_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    stress(2_000 * rounds, 500 * rounds);
}

/// Two threads with `thread_leases` blocking acquires each and eight tasks with `task_leases`
/// async acquires each, on three keys, against a 1 ms tick that evicts every idle worker.
fn stress(thread_leases: usize, task_leases: usize) {
    let spawned = Arc::new(AtomicU64::new(0));
    let s = spawned.clone();
    let pool = Pool::builder("stress", move |key: &str| {
        s.fetch_add(1, Ordering::SeqCst);
        Ok::<_, SpawnError>(Checked {
            down: AtomicBool::new(false),
            bytes: 100 + key.len() as u64,
        })
    })
    .max_workers_per_model(2)
    .max_in_flight_per_worker(2)
    .acquire_timeout(Duration::from_secs(60))
    .build();
    let scheduler = Scheduler::builder()
        .tick(Duration::from_millis(1))
        .policy(keep_alive(Duration::ZERO))
        .build();
    scheduler.register(&pool);
    // Large enough that no event is dropped: this test counts every eviction.
    let evictions = scheduler.subscribe_with_capacity(1 << 20);
    scheduler.start().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let keys = ["a", "bb", "ccc"];
    let mut threads = Vec::new();
    for t in 0..2 {
        let pool = pool.clone();
        let served = served.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..thread_leases {
                let lease = pool.acquire(keys[(t + i) % 3]).unwrap();
                assert!(
                    !lease.down.load(Ordering::SeqCst),
                    "leased a shut-down worker"
                );
                if i % 7 == 0 {
                    std::thread::yield_now();
                }
                drop(lease);
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..8 {
            let pool = pool.clone();
            let served = served.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..task_leases {
                    let lease = pool.acquire_async(keys[(t + i) % 3]).await.unwrap();
                    assert!(
                        !lease.down.load(Ordering::SeqCst),
                        "leased a shut-down worker"
                    );
                    if i % 5 == 0 {
                        tokio::task::yield_now().await;
                    }
                    drop(lease);
                    served.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        (2 * thread_leases + 8 * task_leases) as u64
    );
    assert!(eventually(Duration::from_secs(30), || pool
        .stats()
        .total_workers()
        == 0));
    scheduler.stop();
    assert_eq!(evictions.dropped(), 0);
    let evicted = evictions
        .try_iter()
        .filter(|e| e.as_eviction().is_some())
        .count() as u64;
    assert!(evicted > 0, "the tick evicted along the way");
    for key in keys {
        assert_eq!(pool.in_flight(key), 0);
        assert_eq!(pool.waiting(key), 0);
        assert_eq!(pool.starting(key), 0);
    }
    assert_eq!(pool.accounted_bytes(), pool.live_worker_bytes());
    assert_eq!(pool.accounted_bytes(), 0);
    assert_eq!(
        evicted,
        spawned.load(Ordering::SeqCst),
        "every spawned worker was evicted"
    );
    assert_eq!(pool.stats().spawns, spawned.load(Ordering::SeqCst));
}
