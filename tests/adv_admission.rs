//! Adversarial tests of admission against a memory budget: LRU ties across three pools,
//! `largest` with equal sizes, the same key name in two pools, first come first served among
//! waiting spawns when the head gives up (timeout or a dropped future), a waiting spawn whose
//! request is served otherwise, a spawn bigger than the limit while others wait, LRU under the
//! default clock, and a hammer with async tasks, cancellations and failing loads. Expectations
//! come from the README's "Memory budgets (admission)", not from the implementation.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::{eventually, secs, Model};
use poolwarden::policies::{KeepAlive, KeepAliveConfig, VictimOrder};
use poolwarden::{AcquireError, Budget, ManualClock, Pool, Scheduler, SpawnError, Worker};

struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let waker = Waker::from(Arc::new(NoWake));
    Pin::new(future).poll(&mut Context::from_waker(&waker))
}

/// A pool named `name` on `budget` whose every worker weighs `bytes` (footprint known up front).
fn pool_of(name: &str, budget: &Budget, clock: &Arc<ManualClock>, bytes: u64) -> Pool<Model> {
    Pool::builder(name, move |_key: &str| Ok::<_, SpawnError>(Model { bytes }))
        .clock(clock.clone())
        .budget(budget)
        .memory(bytes)
        .acquire_timeout(Duration::from_secs(60))
        .build()
}

/// The admission evictions of `pool` so far: keys, in order.
fn admitted_out(pool: &Pool<Model>) -> Vec<String> {
    pool.take_admission_evictions()
        .into_iter()
        .map(|(_, e)| {
            assert_eq!(e.reason.as_str(), "admission");
            e.key.to_string()
        })
        .collect()
}

fn use_now(pool: &Pool<Model>, key: &str) {
    drop(pool.acquire(key).unwrap());
}

/// Three pools registered zz, mm, aa (names and keys in reverse alphabetical order, worker ids
/// all equal): with every worker last used at the same instant, victims go by registration order.
/// The same under `largest` with equal sizes.
#[test]
fn lru_ties_across_three_pools_go_by_registration_order_and_so_does_largest_with_equal_sizes() {
    for order in [VictimOrder::Lru, VictimOrder::Largest] {
        let clock = Arc::new(ManualClock::new());
        let budget = Budget::builder("gpu0", 100).order(order).build();
        let p0 = pool_of("zz", &budget, &clock, 30);
        let p1 = pool_of("mm", &budget, &clock, 30);
        let p2 = pool_of("aa", &budget, &clock, 30);
        clock.set(secs(1));
        use_now(&p2, "k"); // the first used, in wall order, but the same instant
        use_now(&p1, "k");
        use_now(&p0, "k");
        assert_eq!(budget.free(), 10);
        clock.set(secs(2));
        use_now(&p2, "new"); // deficit 20: one victim, pool zz's
        assert_eq!(admitted_out(&p0), ["k"], "{order:?}");
        assert!(admitted_out(&p1).is_empty() && admitted_out(&p2).is_empty());
        clock.set(secs(3));
        use_now(&p0, "new"); // mm's k (t=1) before aa's k (t=1) and aa's new (t=2)
        assert_eq!(admitted_out(&p1), ["k"], "{order:?}");
        assert!(admitted_out(&p2).is_empty());
        clock.set(secs(4));
        use_now(&p1, "new"); // aa's k (t=1), the least recently used left
        assert_eq!(admitted_out(&p2), ["k"], "{order:?}");
        assert_eq!(budget.used(), 90);
        assert_eq!(budget.stats().admission_evictions, 3);
        assert_eq!(budget.stats().pools, ["zz", "mm", "aa"]);
    }
}

/// "Idle workers of other keys": a model of the same name in another pool is another pool's
/// worker, so it is a candidate (a spawn never evicts its own key's workers in its own pool).
/// The spec says "other keys"; this is the reading where a key belongs to its pool.
#[test]
fn the_same_key_name_in_another_pool_is_a_candidate_but_not_in_its_own_pool() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let p0 = pool_of("p0", &budget, &clock, 60);
    let p1 = pool_of("p1", &budget, &clock, 60);
    clock.set(secs(1));
    use_now(&p1, "x");
    clock.set(secs(2));
    use_now(&p0, "x"); // deficit 20: p1's x, another pool's worker
    assert_eq!(admitted_out(&p1), ["x"]);
    assert_eq!((p0.workers("x"), p1.workers("x")), (1, 0));
    // A second worker of p0's x (both held): its own idle worker is no victim, nothing else is
    // idle, so it waits and fails with NoMemory, naming all it should.
    p0.set_acquire_timeout(Duration::from_millis(200));
    let first = p0.acquire("x").unwrap();
    let error = p0.acquire("x").unwrap_err();
    match error {
        AcquireError::NoMemory {
            key,
            needed,
            budget: name,
            free,
        } => {
            assert_eq!(
                (key.as_str(), needed, name.as_str(), free),
                ("x", 60, "gpu0", 40)
            );
        }
        other => panic!("{other:?}"),
    }
    drop(first);
    assert_eq!(budget.waiting_spawns(), 0);
    assert_eq!(budget.reserved(), 0);
    assert!(admitted_out(&p0).is_empty());
}

/// A big spawn waits at the head; a small one that would fit queues behind it (first come,
/// first served). When the head's request gives up, by its timeout or by a dropped future, the
/// small one is admitted at once: no release, no tick needed.
#[test]
fn when_the_head_waiting_spawn_gives_up_the_next_one_is_admitted_at_once() {
    for by_timeout in [true, false] {
        let clock = Arc::new(ManualClock::new());
        let budget = Budget::builder("gpu0", 100).build();
        let pool = Pool::builder("p", |key: &str| {
            Ok::<_, SpawnError>(Model {
                bytes: if key == "big" { 70 } else { 20 },
            })
        })
        .clock(clock.clone())
        .budget(&budget)
        .footprint(|key: &str| if key == "big" { 70 } else { 20 })
        .acquire_timeout(Duration::from_secs(60))
        .build();
        let busy = Pool::builder("busy", |_key: &str| {
            Ok::<_, SpawnError>(Model { bytes: 60 })
        })
        .clock(clock.clone())
        .budget(&budget)
        .memory(60)
        .build();
        let held = busy.acquire("c").unwrap(); // 60, busy: free 40
        let mut head_future = None;
        let head_thread = if by_timeout {
            pool.set_acquire_timeout(Duration::from_millis(300));
            let mine = pool.clone();
            Some(std::thread::spawn(move || mine.acquire("big").map(drop)))
        } else {
            let mut future = pool.acquire_async("big");
            assert!(poll_once(&mut future).is_pending());
            head_future = Some(future);
            None
        };
        assert!(eventually(Duration::from_secs(30), || budget
            .waiting_spawns()
            == 1));
        pool.set_acquire_timeout(Duration::from_secs(60));
        let small = {
            let mine = pool.clone();
            std::thread::spawn(move || mine.acquire("small").map(|l| l.memory_bytes()))
        };
        assert!(eventually(Duration::from_secs(30), || budget
            .waiting_spawns()
            == 2));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            pool.workers("small"),
            0,
            "the small spawn does not overtake"
        );
        assert_eq!(budget.free(), 40);
        if let Some(thread) = head_thread {
            match thread.join().unwrap() {
                Err(AcquireError::NoMemory {
                    key,
                    needed,
                    budget: name,
                    free,
                }) => assert_eq!(
                    (key.as_str(), needed, name.as_str()),
                    ("big", 70, "gpu0"),
                    "free {free}"
                ),
                other => panic!("{other:?}"),
            }
        } else {
            drop(head_future.take());
        }
        assert_eq!(
            small.join().unwrap().unwrap(),
            20,
            "by_timeout={by_timeout}"
        );
        assert_eq!(budget.waiting_spawns(), 0);
        assert_eq!(budget.reserved(), 0);
        assert_eq!(budget.used(), 80);
        assert_eq!(pool.workers("big"), 0, "the withdrawn spawn never loaded");
        assert!(admitted_out(&busy).is_empty(), "nothing was evicted");
        drop(held);
    }
}

/// A spawn waiting for memory whose request is then served by a released worker of its own key
/// leaves the budget's queue, and the next waiting spawn (another pool's) is admitted.
#[test]
fn a_waiting_spawn_whose_request_is_served_otherwise_leaves_the_queue() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pool = pool_of("p", &budget, &clock, 30);
    let other = pool_of("q", &budget, &clock, 10);
    let busy_big = Pool::builder("big", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 60 }))
        .clock(clock.clone())
        .budget(&budget)
        .memory(60)
        .build();
    let big = busy_big.acquire("c").unwrap(); // 60 busy
    let first = pool.acquire("a").unwrap(); // 30 busy: free 10
    let second = {
        let mine = pool.clone();
        std::thread::spawn(move || mine.acquire("a").map(|l| l.worker_id()))
    };
    assert!(eventually(Duration::from_secs(30), || budget
        .waiting_spawns()
        == 1));
    // q's spawn (10) would fit, but queues behind a's.
    let late = {
        let mine = other.clone();
        std::thread::spawn(move || mine.acquire("z").map(|l| l.memory_bytes()))
    };
    assert!(eventually(Duration::from_secs(30), || budget
        .waiting_spawns()
        == 2));
    let first_id = first.worker_id();
    drop(first); // to the waiting request of a: its spawn is no longer needed
    assert_eq!(second.join().unwrap().unwrap(), first_id);
    assert_eq!(late.join().unwrap().unwrap(), 10);
    assert_eq!(budget.waiting_spawns(), 0);
    assert_eq!(budget.reserved(), 0);
    assert_eq!(pool.workers("a"), 1, "the second load never ran");
    assert_eq!(budget.used(), 100);
    assert!(admitted_out(&pool).is_empty() && admitted_out(&busy_big).is_empty());
    drop(big);
}

/// A spawn bigger than the whole limit fails at once even while other spawns wait (it does not
/// queue behind them), and nothing is evicted for it.
#[test]
fn a_spawn_bigger_than_the_limit_fails_at_once_even_behind_waiting_spawns() {
    let clock = Arc::new(ManualClock::new());
    let budget = Budget::builder("gpu0", 100).build();
    let pool = Pool::builder("p", |key: &str| {
        Ok::<_, SpawnError>(Model {
            bytes: if key == "huge" { 101 } else { 70 },
        })
    })
    .clock(clock.clone())
    .budget(&budget)
    .footprint(|key: &str| if key == "huge" { 101 } else { 70 })
    .acquire_timeout(Duration::from_secs(60))
    .build();
    let idle = pool_of("idle", &budget, &clock, 20);
    use_now(&idle, "i"); // 20 idle: a candidate, but not enough for b
    let held = pool.acquire("a").unwrap(); // 70 busy: free 10
    let waiting = {
        let mine = pool.clone();
        std::thread::spawn(move || mine.acquire("b").map(|l| l.memory_bytes()))
    };
    assert!(eventually(Duration::from_secs(30), || budget
        .waiting_spawns()
        == 1));
    let done = Arc::new(AtomicBool::new(false));
    let huge = {
        let mine = pool.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let r = mine.acquire("huge").map(drop);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    assert!(
        eventually(Duration::from_secs(30), || done.load(Ordering::SeqCst)),
        "the too-big spawn waits instead of failing at once"
    );
    assert!(matches!(
        huge.join().unwrap(),
        Err(AcquireError::NoMemory { needed: 101, .. })
    ));
    assert_eq!(idle.workers("i"), 1, "nothing evicted for it");
    assert_eq!(
        budget.waiting_spawns(),
        1,
        "the waiting spawn keeps its place"
    );
    assert_eq!(budget.stats().rejected_spawns, 1);
    drop(held); // a idle (70): a victim that makes room for b
    assert_eq!(waiting.join().unwrap().unwrap(), 70);
    assert_eq!(budget.reserved(), 0);
    assert_eq!(budget.waiting_spawns(), 0);
}

/// Under the default clock (no scheduler, so no tick), the least recently used idle worker is
/// the victim: `a` loaded first but used again after `b` loaded, so `b` is the LRU one.
#[test]
fn lru_under_the_default_clock_without_a_tick_evicts_the_least_recently_used() {
    // Both ways round, so that neither the keys' order in the map nor worker ids decide.
    for (first, second) in [("a", "b"), ("b", "a")] {
        let budget = Budget::builder("gpu0", 100).build();
        let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 40 }))
            .budget(&budget)
            .memory(40)
            .build();
        use_now(&pool, first);
        std::thread::sleep(Duration::from_millis(20));
        use_now(&pool, second);
        std::thread::sleep(Duration::from_millis(20));
        use_now(&pool, first); // now the most recently used
        std::thread::sleep(Duration::from_millis(20));
        use_now(&pool, "c"); // free 20, needs 40: one victim, the LRU one: `second`
        let out: Vec<_> = pool
            .take_admission_evictions()
            .into_iter()
            .map(|(_, e)| e.key.to_string())
            .collect();
        assert_eq!(out, [second], "{first} was used after {second}");
    }
}

/// The same with a scheduler that ticks between the uses: then the tick's stamps make it right
/// (a passing property, within the documented one-tick lateness).
#[test]
fn lru_under_the_default_clock_with_ticks_between_uses_evicts_the_least_recently_used() {
    let budget = Budget::builder("gpu0", 100).build();
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 40 }))
        .budget(&budget)
        .memory(40)
        .build();
    let scheduler = Scheduler::builder()
        .policy(Box::new(
            KeepAlive::new(KeepAliveConfig {
                ttl: Duration::from_secs(3600),
                min_workers: 0,
            })
            .unwrap(),
        ))
        .build();
    scheduler.register(&pool);
    for key in ["a", "b", "a"] {
        use_now(&pool, key);
        scheduler.tick_once();
        std::thread::sleep(Duration::from_millis(20));
    }
    use_now(&pool, "c");
    let out: Vec<_> = pool
        .take_admission_evictions()
        .into_iter()
        .map(|(_, e)| e.key.to_string())
        .collect();
    assert_eq!(out, ["b"]);
}

/// Async tasks and blocking threads over two pools on one budget, a ticking scheduler, requests
/// cancelled at random by `tokio::time::timeout`, and a factory that fails or panics now and
/// then: accounted plus reserved never exceed the limit, and at the end nothing is reserved,
/// nothing waits, and the budget's figures are exactly its pools'.
#[test]
fn tasks_threads_cancellations_and_failing_loads_never_overcommit_or_leak_a_reservation() {
    const LIMIT: u64 = 600;
    let budget = Budget::builder("gpu0", LIMIT).build();
    let loads = Arc::new(AtomicUsize::new(0));
    let size = |key: &str| 100 + 25 * (key.len() as u64 % 3);
    let pools: Vec<Pool<Model>> = (0..2)
        .map(|p| {
            let loads = loads.clone();
            Pool::builder(&format!("p{p}"), move |key: &str| {
                let n = loads.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(300));
                match n % 11 {
                    3 => Err("adversarial: load failed".into()),
                    7 => panic!("adversarial: load panicked"),
                    _ => Ok::<_, SpawnError>(Model { bytes: size(key) }),
                }
            })
            .budget(&budget)
            .footprint(size)
            .max_workers_per_model(2)
            .acquire_timeout(Duration::from_secs(120))
            .build()
        })
        .collect();
    let scheduler = Scheduler::builder()
        .tick(Duration::from_millis(3))
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
                let s = budget.stats();
                worst.fetch_max(s.accounted_bytes + s.reserved_bytes, Ordering::SeqCst);
                worst.fetch_max(budget.used(), Ordering::SeqCst);
                std::thread::yield_now();
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let pools = pools.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                for i in 0..60 {
                    let key = format!("m{}", (t * 5 + i * 3) % 9);
                    if let Ok(lease) = pools[(t + i) % 2].acquire(&key) {
                        std::thread::sleep(Duration::from_micros(200));
                        drop(lease);
                        served += 1;
                    }
                }
                served
            })
        })
        .collect();
    let cancelled = runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..12 {
            let pools = pools.clone();
            tasks.push(tokio::spawn(async move {
                let mut cancelled = 0;
                for i in 0..40 {
                    let key = format!("m{}", (t * 7 + i) % 9);
                    let pool = &pools[(t + i) % 2];
                    // Every third request is cancelled after 0–2 ms, at whatever point it is.
                    let limit = if i % 3 == 0 {
                        Duration::from_micros(((t * 131 + i * 17) % 2000) as u64)
                    } else {
                        Duration::from_secs(120)
                    };
                    match tokio::time::timeout(limit, pool.acquire_async(&key)).await {
                        Ok(Ok(lease)) => {
                            tokio::time::sleep(Duration::from_micros(300)).await;
                            drop(lease);
                        }
                        Ok(Err(_)) => {} // a failed load: the request that called for it
                        Err(_) => cancelled += 1,
                    }
                }
                cancelled
            }));
        }
        let mut cancelled = 0;
        for task in tasks {
            cancelled += task.await.unwrap();
        }
        cancelled
    });
    let served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 0);
    assert!(
        eventually(Duration::from_secs(30), || pools.iter().all(|p| p
            .stats()
            .models
            .values()
            .all(|m| m.starting == 0 && m.waiting == 0 && m.in_flight == 0))),
        "{:?}",
        pools.iter().map(|p| p.stats()).collect::<Vec<_>>()
    );
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    scheduler.stop();
    assert!(
        worst.load(Ordering::SeqCst) <= LIMIT,
        "accounted plus reserved reached {} of {LIMIT}",
        worst.load(Ordering::SeqCst)
    );
    assert_eq!(budget.reserved(), 0, "a reservation leaked");
    assert_eq!(budget.waiting_spawns(), 0);
    let accounted: u64 = pools.iter().map(|p| p.accounted_bytes()).sum();
    let live: u64 = pools.iter().map(|p| p.live_worker_bytes()).sum();
    assert_eq!(accounted, live);
    assert_eq!(budget.used(), accounted, "the budget's accounting is exact");
    let failures: u64 = pools.iter().map(|p| p.stats().spawn_failures).sum();
    assert!(
        failures > 0,
        "the factory failed along the way ({cancelled} cancelled)"
    );
}

/// The simulator's "ties by pool": three pools declared zz, mm, aa in the file, each with one
/// worker of `k` last used at the same instant; at 5 a spawn in aa needs one victim. The
/// simulator registers a config's pools in name order (as the README says), whatever the
/// file's order, so the tie goes to aa's worker.
#[test]
fn the_simulator_breaks_lru_ties_across_pools_in_name_order() {
    use poolwarden::config::{Config, PolicyRegistry};
    use poolwarden::sim::{simulate, SimOptions, Trace};
    let mut toml = String::from(
        "[scheduler]\ntick = \"1s\"\n[policy]\nkind = \"noop\"\n[budgets.gpu0]\nlimit = \"100B\"\n",
    );
    for pool in ["zz", "mm", "aa"] {
        toml.push_str(&format!(
            "[pools.{pool}]\nbudget = \"gpu0\"\nmemory = \"30B\"\nmax_workers_per_model = 1\n"
        ));
    }
    let config = Config::from_toml(&toml, "test.toml", &PolicyRegistry::new()).expect("config");
    let trace = "at,pool,model,duration\n0,zz,k,1\n0,mm,k,1\n0,aa,k,1\n5,aa,new,1\n";
    let trace = Trace::parse_native(trace, "test.csv", "test").expect("trace");
    let options = SimOptions {
        until: Some(Duration::from_secs(20)),
        ..SimOptions::default()
    };
    let run = simulate(
        &config,
        &PolicyRegistry::new(),
        &config.policy,
        &trace,
        &options,
        None,
    )
    .expect("simulate");
    let evicted: Vec<_> = run
        .events
        .iter()
        .map(|e| {
            (
                e.at_secs,
                e.pool.as_str(),
                e.model.as_str(),
                e.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(evicted, [(5.0, "aa", "k", "admission")]);
}
