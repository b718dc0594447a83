//! `hybrid-histogram` as a function of hand-made snapshots: what it learns survives a key
//! leaving the pool and coming back under a new id, and the lease a pre-warmed worker is
//! created with is not taken for a request.

use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// One tick's view of pool `p` with key `name` (id `id`) and at most one worker.
struct Tick {
    now: u64,
    id: u64,
    name: &'static str,
    worker: Option<WorkerView>,
    arrivals: u64,
    first_arrival: Option<u64>,
}

fn worker(id: u64, releases: u64, last_used: u64, spawned_at: u64) -> WorkerView {
    WorkerView {
        id: WorkerId(id),
        releases,
        in_flight: 0,
        last_used: s(last_used),
        spawned_at: s(spawned_at),
        memory_bytes: 0,
    }
}

fn tick(policy: &mut HybridHistogram, t: Tick) -> (Vec<Proposal>, Vec<Prewarm>) {
    let pools = [PoolView {
        name: Arc::from("p"),
        max_workers_per_model: 1,
        accounted_bytes: 0,
    }];
    let workers: Vec<WorkerView> = t.worker.into_iter().collect();
    let keys = [KeyView {
        pool: 0,
        key: Arc::from(t.name),
        id: KeyId(t.id),
        workers: 0..workers.len(),
        arrivals: t.arrivals,
        first_arrival: t.first_arrival.map(s),
        ..KeyView::default()
    }];
    let overrides = [ModelOverrides::default()];
    let snapshot = Snapshot {
        now: s(t.now),
        previous: None,
        memory: None,
        pools: &pools,
        keys: &keys,
        workers: &workers,
        overrides: &overrides,
        governed: &[true],
    };
    let (mut proposals, mut prewarms) = (Vec::new(), Vec::new());
    policy.propose(&snapshot, &mut proposals);
    policy.prewarm(&snapshot, &mut prewarms);
    (proposals, prewarms)
}

/// A request at `at` (1 s) on a fresh worker, seen by the tick at `at + 1`, under key id `id`.
fn request(policy: &mut HybridHistogram, at: u64, id: u64, name: &'static str) -> Vec<Prewarm> {
    let (proposals, prewarms) = tick(
        policy,
        Tick {
            now: at + 1,
            id,
            name,
            worker: Some(worker(id, 1, at + 1, at)),
            arrivals: 1,
            first_arrival: Some(at),
        },
    );
    if prewarms.iter().any(|p| p.workers > 0) {
        assert_eq!(
            proposals.len(),
            1,
            "unloaded at once when a pre-warm follows"
        );
    }
    prewarms
}

#[test]
fn learning_survives_a_key_coming_back_under_a_new_id() {
    let mut policy = HybridHistogram::new(HybridHistogramConfig::default()).unwrap();
    // A request every 30 minutes; each time the key comes back under a new id (the pool
    // forgot it while it had no worker). The tenth idle time of 1799 s comes with request 10.
    for k in 0..10u64 {
        let prewarms = request(&mut policy, k * 1800, k + 1, "m");
        assert!(
            prewarms.is_empty(),
            "request {k}: fallback, no pre-warm yet"
        );
    }
    let prewarms = request(&mut policy, 10 * 1800, 11, "m");
    assert_eq!(
        prewarms,
        vec![Prewarm {
            pool: 0,
            key: Arc::from("m"),
            workers: 1,
            at: s(10 * 1800 + 1 + 1566),
        }],
        "29 min x 0.9 after the key went idle"
    );
    // Another key name starts from nothing.
    assert!(request(&mut policy, 10 * 1800, 100, "other").is_empty());
}

#[test]
fn a_prewarmed_worker_is_not_a_request_and_stays_until_the_tail() {
    let mut policy = HybridHistogram::new(HybridHistogramConfig::default()).unwrap();
    for k in 0..=11u64 {
        request(&mut policy, k * 1800, 1, "m");
    }
    // Went idle at 19801; the pre-warm for 21367 brings worker 50, whose creation lease shows
    // as one arrival at the next tick.
    let (proposals, prewarms) = tick(
        &mut policy,
        Tick {
            now: 21368,
            id: 1,
            name: "m",
            worker: Some(worker(50, 1, 21367, 21367)),
            arrivals: 1,
            first_arrival: Some(21367),
        },
    );
    assert!(
        proposals.is_empty(),
        "kept: it was pre-warmed for this spell"
    );
    assert!(
        prewarms.is_empty(),
        "not taken for a request: no cancellation, nothing learnt"
    );
    // Still idle at 19801 + 30 min x 1.1 = 21781: evicted then, not before.
    let idle = |now| Tick {
        now,
        id: 1,
        name: "m",
        worker: Some(worker(50, 1, 21367, 21367)),
        arrivals: 0,
        first_arrival: None,
    };
    assert!(tick(&mut policy, idle(21780)).0.is_empty());
    let (proposals, _) = tick(&mut policy, idle(21781));
    assert_eq!(proposals.len(), 1);
    assert_eq!(proposals[0].reason, EvictionReason::KeepAlive);
    assert_eq!(proposals[0].releases, Some(1));
}
