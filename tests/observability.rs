//! The status view, the event channel and `Scheduler::replace_policy`.

use std::future::Future;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use futures::StreamExt;
use poolwarden::config::PolicyScope;
use poolwarden::events::{PoolEvent, RecvTimeoutError, TryRecvError};
use poolwarden::policies::{KeepAlive, KeepAliveConfig, Noop, Proposal, Snapshot};
use poolwarden::status::{BudgetReport, BudgetStatus, Status};
use poolwarden::{
    EvictionPolicy, FixedProbe, ManualClock, MemoryReading, Pool, Scheduler, SpawnError, Worker,
};

#[derive(Debug)]
struct Model {
    bytes: u64,
}

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }
}

fn keep_alive(ttl: u64) -> Box<dyn EvictionPolicy> {
    Box::new(
        KeepAlive::new(KeepAliveConfig {
            ttl: Duration::from_secs(ttl),
            min_workers: 0,
        })
        .unwrap(),
    )
}

/// A policy that records the arrivals each tick's snapshot counted, per key, and evicts nothing.
struct Arrivals(Arc<Mutex<Vec<KeyArrivals>>>);

/// One tick's arrivals: (key, arrivals) sorted by key.
type KeyArrivals = Vec<(String, u64)>;

impl EvictionPolicy for Arrivals {
    fn name(&self) -> &str {
        "arrivals"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {
        let mut seen: Vec<(String, u64)> = snapshot
            .keys
            .iter()
            .map(|k| (k.key.to_string(), k.arrivals))
            .collect();
        seen.sort();
        self.0.lock().unwrap().push(seen);
    }
}

struct Budget;

impl BudgetReport for Budget {
    fn budget_status(&self) -> BudgetStatus {
        BudgetStatus {
            name: "gpu0".to_string(),
            limit_bytes: 1 << 30,
            used_bytes: 3 << 20,
            free_bytes: (1 << 30) - (3 << 20),
            pools: vec!["text".to_string()],
            waiting_spawns: 0,
        }
    }
}

/// A factory whose loads of `slow` wait until the test lets them go.
fn gated_factory(
    gate: Receiver<()>,
) -> impl Fn(&str) -> Result<Model, SpawnError> + Send + Sync + 'static {
    let gate = Mutex::new(gate);
    move |key: &str| {
        if key == "slow" {
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
        }
        Ok(Model {
            bytes: key.len() as u64 * 1024,
        })
    }
}

#[test]
fn the_status_shows_every_model_and_worker_and_serializes() {
    let clock = Arc::new(ManualClock::new());
    let (release, gate): (SyncSender<()>, Receiver<()>) = sync_channel(1);
    let pool = Pool::builder("text", gated_factory(gate))
        .clock(clock.clone())
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_secs(7))
        .build();
    let probe = FixedProbe::new(Some(MemoryReading {
        total: 8 << 30,
        available: 6 << 30,
        process_rss: Some(1 << 30),
    }));
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .probe(probe)
        .policy(keep_alive(300))
        .build();
    scheduler.register(&pool);
    scheduler.register_budget(Arc::new(Budget));

    // `idle`: one worker, idle since 10 s. `busy`: one worker serving a request, and one
    // request waiting for it. `slow`: a load in progress, its request waiting.
    clock.set(Duration::from_secs(10));
    drop(pool.acquire("idle").unwrap());
    let busy = pool.acquire("busy").unwrap();
    let mut queued = Box::pin(pool.acquire_async("busy"));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(queued.as_mut().poll(&mut cx).is_pending());
    let mut loading = Box::pin(pool.acquire_async("slow"));
    assert!(loading.as_mut().poll(&mut cx).is_pending());
    clock.set(Duration::from_secs(25));
    scheduler.tick_once();
    clock.set(Duration::from_secs(30));

    let status = scheduler.status();
    assert_eq!(status.at, Duration::from_secs(30));
    assert!(!status.running);
    assert_eq!(status.ticks, 1);
    assert_eq!(status.last_tick, Some(Duration::from_secs(25)));
    let memory = status.memory.unwrap();
    assert_eq!(
        (memory.used_bytes, memory.process_rss_bytes),
        (2 << 30, Some(1 << 30))
    );
    assert_eq!(status.budgets.len(), 1);
    assert_eq!(status.budgets[0].name, "gpu0");
    let text = &status.pools[0];
    assert_eq!(text.name, "text");
    assert_eq!(text.policy, "keep-alive ttl=5m min_workers=0");
    assert_eq!(text.max_workers_per_model, 1);
    assert_eq!(text.acquire_timeout, Duration::from_secs(7));
    assert_eq!(text.accounted_bytes, (4 + 4) * 1024);
    let names: Vec<&str> = text.models.iter().map(|m| m.model.as_str()).collect();
    assert_eq!(names, ["busy", "idle", "slow"]);
    let idle = text.model("idle").unwrap();
    assert_eq!(
        (idle.workers, idle.in_flight, idle.waiting, idle.starting),
        (1, 0, 0, 0)
    );
    assert_eq!(idle.instances[0].idle, Some(Duration::from_secs(20)));
    assert_eq!(idle.instances[0].age, Duration::from_secs(20));
    assert_eq!(idle.instances[0].memory_bytes, 4 * 1024);
    assert_eq!(idle.instances[0].releases, 1);
    let busy_status = text.model("busy").unwrap();
    assert_eq!(
        (
            busy_status.workers,
            busy_status.in_flight,
            busy_status.waiting,
            busy_status.starting
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(busy_status.instances[0].idle, None);
    let slow = text.model("slow").unwrap();
    assert_eq!(
        (slow.workers, slow.in_flight, slow.waiting, slow.starting),
        (0, 0, 1, 1)
    );

    // JSON: seconds and bytes, and it reads back to the same value.
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["at_secs"], 30.0);
    assert_eq!(json["tick_secs"], 1.0);
    assert_eq!(json["memory"]["total_bytes"], 8u64 << 30);
    assert_eq!(json["budgets"][0]["free_bytes"], (1u64 << 30) - (3 << 20));
    assert_eq!(json["pools"][0]["acquire_timeout_secs"], 7.0);
    assert_eq!(json["pools"][0]["models"][1]["model"], "idle");
    assert_eq!(
        json["pools"][0]["models"][1]["instances"][0]["idle_secs"],
        20.0
    );
    assert_eq!(
        json["pools"][0]["models"][0]["instances"][0]["idle_secs"],
        serde_json::Value::Null
    );
    let back: Status = serde_json::from_value(json).unwrap();
    assert_eq!(back, status);

    drop(busy);
    release.send(()).unwrap();
    drop(queued);
    drop(loading);
}

#[test]
fn the_status_leaves_the_ticks_arrival_count_alone() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .clock(clock.clone())
        .build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(Arrivals(seen.clone())))
        .build();
    scheduler.register(&pool);
    for _ in 0..3 {
        drop(pool.acquire("m").unwrap());
        let _ = scheduler.status();
    }
    let _ = scheduler.status();
    scheduler.tick_once();
    drop(pool.acquire("m").unwrap());
    let _ = scheduler.status();
    scheduler.tick_once();
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        vec![vec![("m".to_string(), 3)], vec![("m".to_string(), 1)]]
    );
}

/// `n` keys with one idle worker each in `pool`, evicted at the next tick by keep-alive ttl 0.
fn idle_keys(pool: &Pool<Model>, n: usize) {
    for k in 0..n {
        drop(pool.acquire(&format!("k{k}")).unwrap());
    }
}

#[test]
fn a_slow_subscriber_loses_its_oldest_events_counts_them_and_never_blocks_the_tick() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .clock(clock.clone())
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(keep_alive(0))
        .build();
    scheduler.register(&pool);
    idle_keys(&pool, 2_000); // their spawns are published before anyone subscribes
    let slow = scheduler.subscribe_with_capacity(4);
    let all = scheduler.subscribe_with_capacity(10_000);
    clock.advance(Duration::from_secs(1));
    // Nobody reads `slow`: the tick still evicts all 2,000 at once.
    let started = Instant::now();
    let report = scheduler.tick_once();
    assert_eq!(report.evictions.len(), 2_000);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the tick waited on a subscriber"
    );
    assert_eq!(slow.len(), 4, "bounded");
    assert_eq!(slow.dropped(), 1_996);
    let kept: Vec<u64> = slow
        .try_iter()
        .map(|e| e.as_eviction().unwrap().worker.0)
        .collect();
    let last: Vec<u64> = report.evictions[1_996..]
        .iter()
        .map(|e| e.worker.0)
        .collect();
    assert_eq!(kept, last, "the newest events stay, in order");
    assert_eq!(all.dropped(), 0);
    assert_eq!(all.try_iter().count(), 2_000);
    assert_eq!(slow.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn every_channel_is_closed_on_stop_after_what_was_queued() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .clock(clock.clone())
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .tick(Duration::from_secs(3600))
        .policy(keep_alive(0))
        .build();
    scheduler.register(&pool);
    idle_keys(&pool, 1); // its spawn is published before anyone subscribes
    let blocking = scheduler.subscribe();
    let mut stream = scheduler.subscribe();
    clock.advance(Duration::from_secs(1));
    scheduler.tick_once();
    scheduler.start().unwrap();
    // A reader blocked in `recv` is woken by the close.
    let waiting = {
        let drained = scheduler.subscribe();
        std::thread::spawn(move || drained.recv())
    };
    scheduler.stop();
    assert_eq!(waiting.join().unwrap(), None);
    assert!(blocking.is_closed());
    assert!(matches!(blocking.recv(), Some(PoolEvent::Eviction(_))));
    assert_eq!(blocking.recv(), None);
    assert_eq!(
        blocking.recv_timeout(Duration::from_secs(1)),
        Err(RecvTimeoutError::Closed)
    );
    futures::executor::block_on(async {
        assert!(matches!(stream.next().await, Some(PoolEvent::Eviction(_))));
        assert_eq!(stream.next().await, None, "the stream ends");
    });
    // A scheduler that never started closes its channels on stop too.
    let idle = Scheduler::builder().build();
    let receiver = idle.subscribe();
    idle.stop();
    assert_eq!(receiver.try_recv(), Err(TryRecvError::Closed));
}

#[test]
fn the_async_stream_wakes_for_events_from_the_maintenance_thread() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 })).build();
    let scheduler = Scheduler::builder()
        .tick(Duration::from_millis(5))
        .policy(keep_alive(0))
        .build();
    scheduler.register(&pool);
    let mut events = scheduler.subscribe();
    scheduler.start().unwrap();
    idle_keys(&pool, 3);
    let evicted = futures::executor::block_on(async {
        let mut keys = Vec::new();
        while keys.len() < 3 {
            match events.next().await {
                Some(PoolEvent::Eviction(e)) => keys.push(e.key.to_string()),
                Some(_) => {}
                None => break,
            }
        }
        keys
    });
    scheduler.stop();
    let mut evicted = evicted;
    evicted.sort();
    assert_eq!(evicted, ["k0", "k1", "k2"]);
}

#[test]
fn a_spawn_through_a_reservation_is_published() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("sim", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 5 }))
        .clock(clock.clone())
        .build();
    let scheduler = Scheduler::builder().clock(clock.clone()).build();
    scheduler.register(&pool);
    let events = scheduler.subscribe();
    clock.set(Duration::from_secs(3));
    let reservation = pool.reserve("m").unwrap();
    clock.set(Duration::from_secs(8));
    let lease = reservation.complete(Model { bytes: 5 });
    match events.try_recv() {
        Ok(PoolEvent::Spawn(spawn)) => {
            assert_eq!((&*spawn.pool, &*spawn.key), ("sim", "m"));
            assert_eq!(spawn.worker, lease.worker_id());
            assert_eq!(spawn.memory_bytes, 5);
            assert_eq!(spawn.at, Duration::from_secs(8));
            assert_eq!(spawn.load_time, Duration::from_secs(5));
            assert!(!spawn.prewarm);
            let json = serde_json::to_value(PoolEvent::Spawn(spawn)).unwrap();
            assert_eq!(json["event"], "spawn");
            assert_eq!(json["load_secs"], 5.0);
        }
        other => panic!("expected a spawn, got {other:?}"),
    }
}

/// A load that a waiting request called for is published too (every spawn path goes through
/// the same place).
#[test]
fn a_spawn_for_a_waiting_request_is_published() {
    let pool = Pool::builder("live", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 7 })).build();
    let scheduler = Scheduler::builder().build();
    scheduler.register(&pool);
    let events = scheduler.subscribe();
    let lease = pool.acquire("m").unwrap();
    match events.recv_timeout(Duration::from_secs(10)) {
        Ok(PoolEvent::Spawn(spawn)) => {
            assert_eq!(spawn.worker, lease.worker_id());
            assert_eq!(spawn.memory_bytes, 7);
        }
        other => panic!("expected a spawn, got {other:?}"),
    }
}

#[test]
fn replace_policy_swaps_the_default_and_a_pools_own_between_ticks() {
    let clock = Arc::new(ManualClock::new());
    let build = |name: &str| {
        Pool::builder(name, |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
            .clock(clock.clone())
            .build()
    };
    let (a, b) = (build("a"), build("b"));
    let scheduler = Scheduler::builder().clock(clock.clone()).build(); // noop
    scheduler.register(&a);
    scheduler.register(&b);
    let evicted = |report: poolwarden::TickReport| -> Vec<String> {
        let mut pools: Vec<String> = report
            .evictions
            .iter()
            .map(|e| e.pool.to_string())
            .collect();
        pools.sort();
        pools
    };
    drop(a.acquire("m").unwrap());
    drop(b.acquire("m").unwrap());
    clock.advance(Duration::from_secs(10));
    assert!(evicted(scheduler.tick_once()).is_empty(), "noop");

    // The default: both pools.
    scheduler
        .replace_policy(PolicyScope::Default, Some(keep_alive(5)))
        .unwrap();
    assert_eq!(evicted(scheduler.tick_once()), ["a", "b"]);
    assert_eq!(
        scheduler.status().pools[1].policy,
        "keep-alive ttl=5s min_workers=0"
    );

    // Pool `b` gets its own policy, which keeps workers; `a` stays under the default.
    scheduler
        .replace_policy(PolicyScope::Pool("b"), Some(Box::new(Noop)))
        .unwrap();
    drop(a.acquire("m").unwrap());
    drop(b.acquire("m").unwrap());
    clock.advance(Duration::from_secs(10));
    assert_eq!(evicted(scheduler.tick_once()), ["a"]);
    let status = scheduler.status();
    assert_eq!(status.pools[0].policy, "keep-alive ttl=5s min_workers=0");
    assert_eq!(status.pools[1].policy, "noop");

    // Replaced again, then back under the default.
    scheduler
        .replace_policy(PolicyScope::Pool("b"), Some(keep_alive(60)))
        .unwrap();
    assert!(
        evicted(scheduler.tick_once()).is_empty(),
        "b's worker is idle for 10 s only"
    );
    scheduler
        .replace_policy(PolicyScope::Pool("b"), None)
        .unwrap();
    assert_eq!(evicted(scheduler.tick_once()), ["b"]);

    let unknown = scheduler.replace_policy(PolicyScope::Pool("c"), None);
    assert_eq!(
        unknown.unwrap_err().to_string(),
        "no pool `c` is registered with the scheduler"
    );
}

#[test]
fn replace_policy_waits_for_the_tick_in_progress() {
    // A policy that takes a while: the replacement lands after its tick, never during it.
    struct Slow(Arc<Mutex<Vec<&'static str>>>);
    impl EvictionPolicy for Slow {
        fn name(&self) -> &str {
            "slow"
        }
        fn propose(&mut self, _snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {
            self.0.lock().unwrap().push("slow tick start");
            std::thread::sleep(Duration::from_millis(100));
            self.0.lock().unwrap().push("slow tick end");
        }
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 })).build();
    let scheduler = Arc::new(
        Scheduler::builder()
            .policy(Box::new(Slow(log.clone())))
            .build(),
    );
    scheduler.register(&pool);
    let ticking = {
        let scheduler = scheduler.clone();
        std::thread::spawn(move || scheduler.tick_once())
    };
    while log.lock().unwrap().is_empty() {
        std::thread::yield_now();
    }
    scheduler
        .replace_policy(PolicyScope::Default, Some(Box::new(Noop)))
        .unwrap();
    log.lock().unwrap().push("replaced");
    ticking.join().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["slow tick start", "slow tick end", "replaced"]
    );
}

#[test]
fn pool_and_scheduler_stats_serialize() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 3 }))
        .clock(clock.clone())
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .probe(FixedProbe::new(Some(MemoryReading {
            total: 100,
            available: 40,
            process_rss: None,
        })))
        .policy(keep_alive(0))
        .build();
    scheduler.register(&pool);
    drop(pool.acquire("m").unwrap());
    let stats = serde_json::to_value(pool.stats()).unwrap();
    assert_eq!(stats["accounted_bytes"], 3);
    assert_eq!(stats["models"]["m"]["workers"], 1);
    assert_eq!(stats["spawns"], 1);
    clock.advance(Duration::from_secs(1));
    let report = scheduler.tick_once();
    let stats = serde_json::to_value(scheduler.stats()).unwrap();
    assert_eq!(stats["ticks"], 1);
    assert_eq!(stats["evictions"]["keep-alive"], 1);
    assert_eq!(stats["last_memory"]["used_bytes"], 60);
    let event = serde_json::to_value(PoolEvent::Eviction(report.evictions[0].clone())).unwrap();
    assert_eq!(event["event"], "eviction");
    assert_eq!(event["pool"], "p");
    assert_eq!(event["model"], "m");
    assert_eq!(event["reason"], "keep-alive");
    assert_eq!(event["idle_secs"], 1.0);
    assert_eq!(event["freed_bytes"], 3);
}
