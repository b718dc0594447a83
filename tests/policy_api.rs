//! What a policy sees and can ask for beyond evictions: arrivals counted between ticks, the first
//! arrival after a quiet spell, stable key ids, pre-warms, and evictions that a request made
//! after the snapshot cancels.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{model_pool, secs, Model};
use poolwarden::policies::{GradualLru, GradualLruConfig};
use poolwarden::{
    Clock, EvictionPolicy, EvictionReason, KeyId, ManualClock, Pool, Prewarm, Proposal, Scheduler,
    Snapshot, SpawnError,
};

/// What a recording policy saw of one key at one tick.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    at: u64,
    key: String,
    id: KeyId,
    workers: usize,
    arrivals: u64,
    first_arrival: Option<Duration>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl EvictionPolicy for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {
        let mut seen = self.0.lock().unwrap();
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
}

impl Recorder {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn recorded(clock: &Arc<ManualClock>) -> (Pool<Model>, Scheduler, Recorder) {
    let pool = model_pool("p", clock, 4, 1);
    let recorder = Recorder::default();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(recorder.clone()))
        .build();
    scheduler.register(&pool);
    (pool, scheduler, recorder)
}

#[test]
fn arrivals_between_ticks_are_counted_even_when_they_came_and_went() {
    let clock = Arc::new(ManualClock::new());
    let (pool, scheduler, recorder) = recorded(&clock);
    scheduler.tick_once();
    assert!(recorder.take().is_empty(), "no key yet");

    clock.set(secs(5));
    drop(pool.acquire("m").unwrap()); // spawns, serves, releases
    clock.set(secs(10));
    scheduler.tick_once();
    let seen = recorder.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].arrivals, 1);
    assert_eq!(seen[0].first_arrival, Some(secs(5)));
    let id = seen[0].id;

    clock.set(secs(12));
    for _ in 0..3 {
        drop(pool.acquire("m").unwrap());
    }
    clock.set(secs(15));
    scheduler.tick_once();
    let seen = recorder.take();
    assert_eq!(
        (seen[0].arrivals, seen[0].first_arrival, seen[0].id),
        (3, Some(secs(12)), id),
        "three came and went; the key keeps its id"
    );

    clock.set(secs(16));
    let held = pool.acquire("m").unwrap();
    clock.set(secs(20));
    scheduler.tick_once();
    assert_eq!(recorder.take()[0].first_arrival, Some(secs(16)));

    clock.set(secs(21));
    drop(pool.acquire("m").unwrap()); // a second worker, while the first is busy
    clock.set(secs(25));
    scheduler.tick_once();
    let seen = recorder.take();
    assert_eq!(seen[0].arrivals, 1);
    assert_eq!(
        seen[0].first_arrival, None,
        "the key was busy at the previous tick: not an arrival after a quiet spell"
    );
    assert_eq!(seen[0].workers, 2);
    drop(held);

    clock.set(secs(30));
    scheduler.tick_once();
    assert_eq!(
        recorder.take()[0].arrivals,
        0,
        "a release alone is no arrival"
    );
}

#[test]
fn requests_that_give_up_count_as_arrivals() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |key: &str| {
        if key == "bad" {
            Err::<Model, SpawnError>("no such model".into())
        } else {
            Ok(Model { bytes: 1 })
        }
    })
    .clock(clock.clone())
    .build();
    let recorder = Recorder::default();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(recorder.clone()))
        .build();
    scheduler.register(&pool);
    clock.set(secs(3));
    assert!(pool.acquire("bad").is_err());
    assert!(pool.acquire("bad").is_err());
    clock.set(secs(4));
    scheduler.tick_once();
    let seen: Vec<Seen> = recorder
        .take()
        .into_iter()
        .filter(|s| s.key == "bad")
        .collect();
    assert_eq!(seen[0].arrivals, 2);
    assert_eq!(seen[0].first_arrival, Some(secs(3)));
}

/// A manual clock that the request path does not read, like the real clocks.
struct TickStamped(ManualClock);

impl Clock for TickStamped {
    fn now(&self) -> Duration {
        self.0.now()
    }

    fn stamps_every_release(&self) -> bool {
        false
    }
}

#[test]
fn under_a_clock_the_request_path_does_not_read_the_first_arrival_is_seen_at_the_tick() {
    let clock = Arc::new(TickStamped(ManualClock::new()));
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .clock(clock.clone())
        .build();
    let recorder = Recorder::default();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(recorder.clone()))
        .build();
    scheduler.register(&pool);
    clock.0.set(secs(1));
    drop(pool.acquire("m").unwrap()); // a spawn: stamped on the slow path
    clock.0.set(secs(2));
    scheduler.tick_once();
    assert_eq!(recorder.take()[0].first_arrival, Some(secs(1)));
    clock.0.set(secs(7));
    drop(pool.acquire("m").unwrap()); // served at once by the ready worker
    clock.0.set(secs(9));
    scheduler.tick_once();
    let seen = recorder.take();
    assert_eq!(seen[0].arrivals, 1);
    assert_eq!(
        seen[0].first_arrival,
        Some(secs(9)),
        "seen at the tick: late by at most one tick, never early"
    );
}

/// gradual-lru, with a request that comes and goes on the victim between the snapshot and the
/// eviction (the policy runs in between, so this reproduces the race deterministically).
struct RequestDuringDecision {
    inner: Box<dyn EvictionPolicy>,
    pool: Pool<Model>,
    clock: Arc<ManualClock>,
    fired: bool,
}

impl EvictionPolicy for RequestDuringDecision {
    fn name(&self) -> &str {
        "request-during-decision"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        self.inner.propose(snapshot, out);
        if !out.is_empty() && !self.fired {
            self.fired = true;
            // The request ends at this very second.
            let lease = self.pool.try_acquire("m").expect("the idle worker");
            self.clock.set(snapshot.now);
            drop(lease);
        }
    }
}

#[test]
fn a_request_after_the_snapshot_saves_the_worker_from_a_stale_eviction() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 4, 1);
    let policy = RequestDuringDecision {
        inner: Box::new(GradualLru::new(GradualLruConfig::default()).unwrap()),
        pool: pool.clone(),
        clock: clock.clone(),
        fired: false,
    };
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(policy))
        .build();
    scheduler.register(&pool);
    drop(pool.acquire("m").unwrap());
    clock.set(secs(60));
    let report = scheduler.tick_once();
    assert!(
        report.evictions.is_empty(),
        "the worker served a request after the snapshot: {:?}",
        report.evictions
    );
    assert_eq!(pool.workers("m"), 1);
    // Idle for a full minute after that request, it goes.
    clock.set(secs(120));
    assert_eq!(scheduler.tick_once().evictions.len(), 1);
    assert_eq!(pool.workers("m"), 0);
}

#[test]
fn a_proposal_carries_the_release_count_it_was_made_from() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 4, 1);
    let lease = pool.acquire("m").unwrap();
    let id = lease.worker_id();
    drop(lease);
    // One request finished: count 1. Another comes and goes: count 2.
    drop(pool.acquire("m").unwrap());
    assert!(pool
        .evict_unused_since("m", id, 1, EvictionReason::Manual)
        .is_none());
    assert!(pool
        .evict_unused_since("m", id, 2, EvictionReason::Manual)
        .is_some());
}

/// Proposes one pre-warm at the first tick.
struct PrewarmOnce(Option<Prewarm>);

impl EvictionPolicy for PrewarmOnce {
    fn name(&self) -> &str {
        "prewarm-once"
    }

    fn propose(&mut self, _snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {}

    fn prewarm(&mut self, _snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        out.extend(self.0.take());
    }
}

fn prewarm_of(key: &str, workers: usize, at: u64) -> Box<PrewarmOnce> {
    Box::new(PrewarmOnce(Some(Prewarm {
        pool: 0,
        key: Arc::from(key),
        workers,
        at: secs(at),
    })))
}

#[test]
fn a_prewarm_starts_its_load_time_ahead_and_off_the_tick() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .clock(clock.clone())
        .model_cold_start("big", secs(30))
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(prewarm_of("big", 2, 100))
        .build();
    scheduler.register(&pool);
    for t in [0, 60, 69] {
        clock.set(secs(t));
        assert!(scheduler.tick_once().prewarms.is_empty(), "not due at {t}");
    }
    clock.set(secs(70));
    let report = scheduler.tick_once();
    assert_eq!(report.prewarms.len(), 1);
    assert_eq!(report.prewarms[0].spawns, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.workers("big") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(pool.workers("big"), 2);
    assert_eq!(pool.in_flight("big"), 0, "pre-warmed workers wait idle");
    let stats = pool.stats();
    assert_eq!((stats.spawns, stats.prewarm_spawns), (2, 2));
    clock.set(secs(71));
    assert!(scheduler.tick_once().prewarms.is_empty(), "fires once");
}

#[test]
fn manual_prewarms_are_reported_for_the_caller_and_a_zero_cancels() {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 4, 1);
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .manual_prewarm()
        .policy(prewarm_of("m", 3, 10))
        .build();
    scheduler.register(&pool);
    drop(pool.acquire("m").unwrap()); // one ready already
    clock.set(secs(10));
    let report = scheduler.tick_once();
    assert_eq!(report.prewarms.len(), 1);
    assert_eq!(report.prewarms[0].spawns, 2, "one of the three is ready");
    assert_eq!(pool.workers("m"), 1, "manual: nothing started");

    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("p", &clock, 4, 1);
    let mut cancel = PrewarmOnce(None);
    cancel.0 = Some(Prewarm {
        pool: 0,
        key: Arc::from("m"),
        workers: 0,
        at: secs(0),
    });
    struct Both(Box<PrewarmOnce>, PrewarmOnce);
    impl EvictionPolicy for Both {
        fn name(&self) -> &str {
            "both"
        }
        fn propose(&mut self, _s: &Snapshot<'_>, _o: &mut Vec<Proposal>) {}
        fn prewarm(&mut self, s: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
            self.0.prewarm(s, out);
            self.1.prewarm(s, out);
        }
    }
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .manual_prewarm()
        .policy(Box::new(Both(prewarm_of("m", 1, 50), cancel)))
        .build();
    scheduler.register(&pool);
    for t in [0, 50, 60] {
        clock.set(secs(t));
        assert!(scheduler.tick_once().prewarms.is_empty(), "cancelled");
    }
}

#[test]
fn a_request_that_waits_through_a_tick_for_its_load_keeps_its_arrival_time() {
    let clock = Arc::new(ManualClock::new());
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let g = gate.clone();
    let pool = Pool::builder("p", move |_key: &str| {
        let (open, cv) = &*g;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .clock(clock.clone())
    .build();
    let recorder = Recorder::default();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(recorder.clone()))
        .build();
    scheduler.register(&pool);
    clock.set(secs(1));
    let request = {
        let pool = pool.clone();
        std::thread::spawn(move || drop(pool.acquire("m").unwrap()))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.starting("m") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    clock.set(secs(2));
    scheduler.tick_once(); // the request still waits for its load
    let seen = recorder.take();
    assert_eq!((seen[0].arrivals, seen[0].first_arrival), (0, None));
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    request.join().unwrap();
    clock.set(secs(3));
    scheduler.tick_once();
    let seen = recorder.take();
    assert_eq!(seen[0].arrivals, 1);
    assert_eq!(
        seen[0].first_arrival,
        Some(secs(1)),
        "when it arrived, not when it was served"
    );
}

#[test]
fn a_worker_added_idle_counts_no_arrival() {
    let clock = Arc::new(ManualClock::new());
    let (pool, scheduler, recorder) = recorded(&clock);
    pool.reserve("m").unwrap().complete_idle(Model { bytes: 1 });
    assert_eq!((pool.workers("m"), pool.in_flight("m")), (1, 0));
    clock.set(secs(1));
    scheduler.tick_once();
    let seen = recorder.take();
    assert_eq!((seen[0].arrivals, seen[0].first_arrival), (0, None));
}
