//! Admission against a memory budget: room is made before a spawn, across pools, and the
//! budget is never overcommitted. Timelines under `ManualClock`, computed by hand.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{eventually, secs, Model};
use poolwarden::policies::{KeepAlive, KeepAliveConfig, ModelOverrides, VictimOrder};
use poolwarden::{AcquireError, Budget, ManualClock, Pool, Scheduler, SpawnError, Worker};

/// A pool on `budget` whose model `k` weighs `sizes(k)` bytes (footprint known up front).
fn pool_on(
    name: &str,
    budget: &Budget,
    clock: &Arc<ManualClock>,
    sizes: &'static [(&'static str, u64)],
) -> Pool<Model> {
    let size = move |key: &str| {
        sizes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, b)| *b)
            .unwrap_or_else(|| panic!("no size for {key}"))
    };
    Pool::builder(name, move |key: &str| {
        Ok::<_, SpawnError>(Model { bytes: size(key) })
    })
    .clock(clock.clone())
    .budget(budget)
    .footprint(size)
    .acquire_timeout(Duration::from_secs(60))
    .build()
}

/// Uses `key` once at second `t`.
fn use_at(pool: &Pool<Model>, clock: &ManualClock, key: &str, t: u64) {
    clock.set(secs(t));
    drop(pool.acquire(key).unwrap());
}

/// The admission evictions so far: (key, reason) in order.
fn admitted_out(pool: &Pool<Model>) -> Vec<String> {
    pool.take_admission_evictions()
        .into_iter()
        .map(|(_, e)| {
            assert_eq!(e.reason.as_str(), "admission");
            e.key.to_string()
        })
        .collect()
}

const SIZES: &[(&str, u64)] = &[
    ("a1", 30),
    ("a2", 30),
    ("a3", 30),
    ("b", 70),
    ("big", 150),
    ("c", 60),
    ("d", 45),
    ("e", 20),
    ("f", 50),
];

#[test]
fn several_lru_victims_make_room_at_once() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pool = pool_on("p", &budget, &clock, SIZES);
    use_at(&pool, &clock, "a2", 1);
    use_at(&pool, &clock, "a1", 2);
    use_at(&pool, &clock, "a3", 2);
    // Last used: a2 at 1; a1 and a3 at 2 (a tie: the lower worker id, a1's, goes first).
    // free = 100 - 90 = 10; b needs 70: two victims, a2 then a1.
    assert_eq!(budget.free(), 10);
    use_at(&pool, &clock, "b", 10);
    assert_eq!(admitted_out(&pool), ["a2", "a1"]);
    assert_eq!(pool.workers("a3"), 1, "the most recently used stays");
    assert_eq!(budget.used(), 100);
    assert_eq!(budget.reserved(), 0);
    assert_eq!(budget.stats().admission_evictions, 2);
}

#[test]
fn a_spawn_waits_for_a_busy_worker_to_go_idle() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pool = pool_on("p", &budget, &clock, SIZES);
    let busy = pool.acquire("c").unwrap(); // 60, busy
    let waiting = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("b").map(|l| l.memory_bytes()))
    };
    assert!(eventually(Duration::from_secs(30), || budget
        .waiting_spawns()
        == 1));
    assert_eq!(pool.waiting("b"), 1);
    assert_eq!(pool.workers("c"), 1, "a busy worker is never a victim");
    clock.set(secs(5));
    drop(busy); // idle now: the waiting spawn tries again and evicts it
    assert_eq!(waiting.join().unwrap().unwrap(), 70);
    assert_eq!(admitted_out(&pool), ["c"]);
    assert_eq!(budget.used(), 70);
}

#[test]
fn a_spawn_bigger_than_the_limit_fails_at_once_and_evicts_nothing() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pool = pool_on("p", &budget, &clock, SIZES);
    use_at(&pool, &clock, "a1", 1);
    let start = Instant::now();
    let error = pool.acquire("big").unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10), "at once");
    match &error {
        AcquireError::NoMemory {
            key,
            needed,
            budget: name,
            free,
        } => {
            assert_eq!(
                (key.as_str(), *needed, name.as_str(), *free),
                ("big", 150, "gpu0", 70)
            );
        }
        other => panic!("{other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("big") && message.contains("gpu0"),
        "{message}"
    );
    assert!(admitted_out(&pool).is_empty());
    assert_eq!(pool.workers("a1"), 1);
    assert_eq!(pool.waiting("big"), 0);
}

#[test]
fn nothing_is_evicted_when_the_idle_victims_would_not_make_room() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pool = Pool::builder("p", |key: &str| {
        Ok::<_, SpawnError>(Model {
            bytes: if key == "a1" { 30 } else { 60 },
        })
    })
    .clock(clock.clone())
    .budget(&budget)
    .footprint(|key: &str| match key {
        "a1" => 30,
        "c" => 60,
        _ => 80,
    })
    .acquire_timeout(Duration::from_millis(300))
    .build();
    use_at(&pool, &clock, "a1", 1); // 30, idle
    let busy = pool.acquire("c").unwrap(); // 60, busy
                                           // b needs 80; free 10; the only candidate (a1, 30) would leave it 40: nothing is evicted.
    let error = pool.acquire("b").unwrap_err();
    assert!(
        matches!(
            error,
            AcquireError::NoMemory {
                needed: 80,
                free: 10,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(admitted_out(&pool).is_empty());
    assert_eq!(pool.workers("a1"), 1);
    assert_eq!(
        budget.waiting_spawns(),
        0,
        "the request gave up: its spawn is withdrawn"
    );
    assert_eq!(budget.reserved(), 0);
    drop(busy);
}

#[test]
fn largest_first_takes_the_biggest_idle_worker() {
    let clock = Arc::new(ManualClock::new());
    let largest = Budget::builder("gpu0", 70)
        .order(VictimOrder::Largest)
        .build();
    let pool = pool_on("p", &largest, &clock, SIZES);
    use_at(&pool, &clock, "e", 1); // 20, least recently used
    use_at(&pool, &clock, "f", 2); // 50
    use_at(&pool, &clock, "d", 3); // 45: free 0, deficit 45 -> f alone (50)
    assert_eq!(admitted_out(&pool), ["f"]);
    assert_eq!(pool.workers("e"), 1);

    let clock = Arc::new(ManualClock::new());
    let lru = Budget::builder("gpu0", 70).order(VictimOrder::Lru).build();
    let pool = pool_on("p", &lru, &clock, SIZES);
    use_at(&pool, &clock, "e", 1);
    use_at(&pool, &clock, "f", 2);
    use_at(&pool, &clock, "d", 3); // lru: e (20) is not enough, then f (50)
    assert_eq!(admitted_out(&pool), ["e", "f"]);
}

#[test]
fn pinned_workers_are_never_victims_and_other_pools_are() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pinned = Pool::builder("pinned", |_key: &str| {
        Ok::<_, SpawnError>(Model { bytes: 30 })
    })
    .clock(clock.clone())
    .budget(&budget)
    .memory(30)
    .model_overrides(
        "keep",
        ModelOverrides {
            min_workers: Some(1),
            ..ModelOverrides::default()
        },
    )
    .build();
    let other = pool_on("other", &budget, &clock, SIZES);
    // keep: two workers, one pinned. a1 in the other pool.
    clock.set(secs(1));
    let (k1, k2) = (
        pinned.acquire("keep").unwrap(),
        pinned.acquire("keep").unwrap(),
    );
    drop((k1, k2));
    use_at(&other, &clock, "a1", 2); // 30; used 90, free 10
                                     // b needs 70 = free 10 + 60: keep's unpinned worker (30, older) and a1 (30), across pools.
    use_at(&other, &clock, "b", 5);
    assert_eq!(admitted_out(&pinned), ["keep"]);
    assert_eq!(admitted_out(&other), ["a1"]);
    assert_eq!(pinned.workers("keep"), 1, "min_workers = 1 stays");
    assert_eq!(budget.used(), 100);
    assert_eq!(budget.stats().pools, ["pinned", "other"]);
}

#[test]
fn waiting_spawns_are_served_first_come_first_served() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pool = pool_on("p", &budget, &clock, SIZES);
    let busy = pool.acquire("b").unwrap(); // 70 busy: free 30
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (i, key) in ["c", "a1"].into_iter().enumerate() {
        let pool = pool.clone();
        let order = order.clone();
        threads.push(std::thread::spawn(move || {
            let lease = pool.acquire(key).unwrap();
            order.lock().unwrap().push(key);
            drop(lease);
        }));
        // c (60) waits; a1 (30) would fit the 30 free bytes but queues behind it.
        assert!(eventually(Duration::from_secs(30), || budget
            .waiting_spawns()
            == i + 1));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pool.workers("a1"), 0, "a1 does not overtake c");
    assert_eq!(budget.waiting_spawns(), 2);
    assert_eq!(budget.free(), 30);
    drop(busy); // b idle: evicted for c, then a1 fits too
    for thread in threads {
        thread.join().unwrap();
    }
    let mut served = order.lock().unwrap().clone();
    served.sort();
    assert_eq!(served, ["a1", "c"]);
    assert_eq!(admitted_out(&pool), ["b"]);
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
fn eight_threads_sixteen_keys_one_budget_never_overcommit() {
    const LIMIT: u64 = 10 * 100;
    let budget = Budget::builder("gpu0", LIMIT).build();
    let size = |key: &str| 100 + 10 * (key.len() as u64 % 3);
    let pools: Vec<Pool<Checked>> = (0..2)
        .map(|p| {
            Pool::builder(&format!("p{p}"), move |key: &str| {
                Ok::<_, SpawnError>(Checked {
                    down: AtomicBool::new(false),
                    bytes: size(key),
                })
            })
            .budget(&budget)
            .footprint(size)
            .max_workers_per_model(2)
            .acquire_timeout(Duration::from_secs(120))
            .build()
        })
        .collect();
    let scheduler = Scheduler::builder()
        .tick(Duration::from_millis(2))
        .policy(Box::new(
            KeepAlive::new(KeepAliveConfig {
                ttl: Duration::from_millis(5),
                min_workers: 0,
            })
            .unwrap(),
        ))
        .build();
    for pool in &pools {
        scheduler.register(pool);
    }
    scheduler.start().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (budget, stop, worst) = (budget.clone(), stop.clone(), worst.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                worst.fetch_max(budget.used(), Ordering::SeqCst);
                std::thread::yield_now();
            }
        })
    };
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pools = pools.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for i in 0..150 {
                    let key = format!("model-{}", (t * 7 + i * 3) % 16);
                    let pool = &pools[(t + i) % 2];
                    let lease = pool.acquire(&key).expect("served within the timeout");
                    assert!(
                        !lease.down.load(Ordering::SeqCst),
                        "a busy worker was evicted"
                    );
                    std::thread::sleep(Duration::from_micros(200));
                    assert!(
                        !lease.down.load(Ordering::SeqCst),
                        "a busy worker was evicted"
                    );
                    drop(lease);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    scheduler.stop();
    assert!(
        worst.load(Ordering::SeqCst) <= LIMIT,
        "accounted plus reserved reached {} of {LIMIT}",
        worst.load(Ordering::SeqCst)
    );
    let accounted: u64 = pools.iter().map(|p| p.accounted_bytes()).sum();
    let live: u64 = pools.iter().map(|p| p.live_worker_bytes()).sum();
    assert_eq!(accounted, live);
    assert_eq!(budget.reserved(), 0);
    assert_eq!(budget.used(), accounted, "the budget's accounting is exact");
    assert!(
        budget.stats().admission_evictions > 0,
        "admission made room along the way"
    );
}

#[test]
fn pools_built_from_one_config_share_its_budget_and_footprints() {
    let registry = poolwarden::PolicyRegistry::new();
    let config = poolwarden::Config::from_toml(
        r#"
[budgets.gpu0]
limit = "100B"

[pools.text]
budget = "gpu0"
memory = "60B"

[pools.vision]
budget = "gpu0"

[pools.vision.models.clip]
memory = "50B"
"#,
        "budgets.toml",
        &registry,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let text = config
        .pool_builder("text", |_key: &str| {
            Ok::<_, SpawnError>(Model { bytes: 60 })
        })
        .unwrap()
        .clock(clock.clone())
        .build();
    let vision = config
        .pool_builder("vision", |_key: &str| {
            Ok::<_, SpawnError>(Model { bytes: 50 })
        })
        .unwrap()
        .clock(clock.clone())
        .build();
    assert!(text.budget().unwrap().same(vision.budget().unwrap()));
    use_at(&text, &clock, "llama", 1); // 60 of 100
    use_at(&vision, &clock, "clip", 2); // needs 50: evicts llama (the other pool's, idle)
    assert_eq!(admitted_out(&text), ["llama"]);
    assert_eq!(config.budget("gpu0").unwrap().used(), 50);
    assert!(config.never_fits("vision", "clip").is_none());
}

#[test]
fn the_scheduler_reports_its_pools_budget_once() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let a = pool_on("a", &budget, &clock, SIZES);
    let b = pool_on("b", &budget, &clock, SIZES);
    let scheduler = Scheduler::builder().clock(clock.clone()).build();
    scheduler.register(&a);
    scheduler.register(&b);
    use_at(&a, &clock, "a1", 1);
    let status = scheduler.status();
    assert_eq!(status.budgets.len(), 1, "{:?}", status.budgets);
    let gpu0 = &status.budgets[0];
    assert_eq!((gpu0.name.as_str(), gpu0.limit_bytes), ("gpu0", 100));
    assert_eq!((gpu0.used_bytes, gpu0.free_bytes), (30, 70));
    assert_eq!(gpu0.pools, ["a", "b"]);
}

#[test]
fn a_dropped_pool_leaves_its_budget_with_its_bytes() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let a = pool_on("a", &budget, &clock, &[("x", 60)]);
    let b = pool_on("b", &budget, &clock, &[("y", 70)]);
    drop(a.acquire("x").unwrap());
    assert_eq!(budget.stats().pools, ["a", "b"]);
    assert_eq!(budget.stats().accounted_bytes, 60);
    drop(a);
    // The dropped pool's worker is shut down off the caller, and its bytes go back.
    assert!(eventually(Duration::from_secs(30), || budget
        .stats()
        .accounted_bytes
        == 0));
    let stats = budget.stats();
    assert_eq!(stats.pools, ["b"], "{stats:?}");
    // All of the limit is there for the pool that is left.
    drop(b.acquire("y").unwrap());
    assert_eq!(budget.stats().accounted_bytes, 70);
    assert_eq!(budget.stats().admission_evictions, 0);
}
