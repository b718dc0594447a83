//! The built-in policies as pure functions of hand-made snapshots.

use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// A hand-made world: pools, keys and workers.
struct World {
    pools: Vec<PoolView>,
    keys: Vec<KeyView>,
    workers: Vec<WorkerView>,
    overrides: Vec<ModelOverrides>,
    governed: Vec<bool>,
}

impl World {
    fn new(pools: &[&str]) -> Self {
        World {
            pools: pools
                .iter()
                .map(|p| PoolView {
                    name: Arc::from(*p),
                    max_workers_per_model: 4,
                    accounted_bytes: 0,
                })
                .collect(),
            keys: Vec::new(),
            workers: Vec::new(),
            overrides: vec![ModelOverrides::default()],
            governed: vec![true; pools.len()],
        }
    }

    /// Adds a key whose workers are (id, in_flight, last_used secs, bytes).
    fn key(&mut self, pool: usize, key: &str, workers: &[(u64, u32, u64, u64)]) -> &mut Self {
        let start = self.workers.len();
        for &(id, in_flight, last_used, bytes) in workers {
            self.workers.push(WorkerView {
                id: WorkerId(id),
                in_flight,
                last_used: s(last_used),
                spawned_at: Duration::ZERO,
                memory_bytes: bytes,
                ..WorkerView::default()
            });
        }
        self.keys.push(KeyView {
            pool,
            key: Arc::from(key),
            workers: start..self.workers.len(),
            starting: 0,
            last_eviction: None,
            overrides: 0,
            ..KeyView::default()
        });
        self
    }

    fn run(
        &self,
        policy: &mut dyn EvictionPolicy,
        now: u64,
        memory: Option<MemoryReading>,
    ) -> Vec<(String, u64)> {
        let snapshot = Snapshot {
            now: s(now),
            previous: None,
            memory,
            pools: &self.pools,
            keys: &self.keys,
            workers: &self.workers,
            overrides: &self.overrides,
            governed: &self.governed,
        };
        let mut out = Vec::new();
        policy.propose(&snapshot, &mut out);
        out.iter()
            .map(|p| (self.keys[p.key].key.to_string(), p.worker.0))
            .collect()
    }
}

fn used(used: u64, total: u64) -> Option<MemoryReading> {
    Some(MemoryReading {
        total,
        available: total - used,
        process_rss: None,
    })
}

fn pressure(config: MemoryPressureConfig) -> MemoryPressure {
    MemoryPressure::new(config).unwrap()
}

#[test]
fn memory_pressure_takes_the_lru_idle_worker_across_pools_never_a_busy_one() {
    let mut world = World::new(&["text", "vision"]);
    world
        .key(0, "a", &[(1, 0, 100, 10), (2, 1, 10, 10)]) // worker 2 is the oldest but busy
        .key(1, "b", &[(1, 0, 50, 10), (2, 0, 80, 10)]);
    world.governed = vec![false, true]; // a pool override elsewhere: pressure is still global
    let mut policy = pressure(MemoryPressureConfig {
        min_idle: Duration::ZERO,
        ..MemoryPressureConfig::default()
    });
    // 95 of 100 used: free down to 80 → two victims of 10 bytes.
    let proposed = world.run(&mut policy, 200, used(95, 100));
    assert_eq!(proposed, vec![("b".into(), 1), ("b".into(), 2)]);
}

#[test]
fn memory_pressure_stops_at_low_respects_max_per_tick_and_min_idle() {
    let mut world = World::new(&["p"]);
    world.key(
        0,
        "a",
        &[
            (1, 0, 10, 10),
            (2, 0, 20, 10),
            (3, 0, 30, 10),
            (4, 0, 195, 10),
        ],
    );
    let mut limited = pressure(MemoryPressureConfig {
        max_per_tick: 1,
        ..MemoryPressureConfig::default()
    });
    assert_eq!(
        world.run(&mut limited, 200, used(100, 100)),
        vec![("a".into(), 1)]
    );
    let mut policy = pressure(MemoryPressureConfig::default());
    // 100 used → 80 target needs two; worker 4 idle for 5 s < min_idle 10 s is never chosen.
    assert_eq!(
        world.run(&mut policy, 200, used(100, 100)),
        vec![("a".into(), 1), ("a".into(), 2)]
    );
    let mut below_high = pressure(MemoryPressureConfig::default());
    assert!(world.run(&mut below_high, 200, used(89, 100)).is_empty());
    assert!(
        world.run(&mut below_high, 200, None).is_empty(),
        "unknown memory: nothing"
    );
}

#[test]
fn memory_pressure_largest_first_and_configured_limit() {
    let mut world = World::new(&["p"]);
    world.key(0, "a", &[(1, 0, 10, 5), (2, 0, 20, 30), (3, 0, 30, 10)]);
    let mut policy = pressure(MemoryPressureConfig {
        order: VictimOrder::Largest,
        limit: Some(ByteSize(100)),
        ..MemoryPressureConfig::default()
    });
    // The probe says 1000 total, but the configured limit of 100 applies: 95/100 ≥ 0.9.
    assert_eq!(
        world.run(&mut policy, 100, used(95, 1000)),
        vec![("a".into(), 2)]
    );
}

#[test]
fn memory_pressure_waits_for_freed_memory_to_show_or_settle_to_pass() {
    let mut world = World::new(&["p"]);
    world.key(0, "a", &[(1, 0, 10, 20), (2, 0, 20, 20), (3, 0, 30, 20)]);
    let mut policy = pressure(MemoryPressureConfig {
        max_per_tick: 1,
        ..MemoryPressureConfig::default()
    });
    assert_eq!(
        world.run(&mut policy, 100, used(100, 100)),
        vec![("a".into(), 1)]
    );
    // Worker 1 is gone, but the reading has not dropped yet: wait.
    world.workers.remove(0);
    world.keys[0].workers = 0..2;
    assert!(world.run(&mut policy, 101, used(100, 100)).is_empty());
    assert!(world.run(&mut policy, 104, used(100, 100)).is_empty());
    // Settle (5 s) passed: evict again even on the stale reading.
    assert_eq!(
        world.run(&mut policy, 105, used(100, 100)),
        vec![("a".into(), 2)]
    );
    // Half of the freed bytes showing is enough to go on at once.
    world.workers.remove(0);
    world.keys[0].workers = 0..1;
    assert!(
        world.run(&mut policy, 106, used(95, 100)).is_empty(),
        "5 of 20 freed bytes shown"
    );
    assert_eq!(
        world.run(&mut policy, 107, used(90, 100)),
        vec![("a".into(), 3)]
    );
}

#[test]
fn memory_pressure_rejects_bad_parameters() {
    let bad = |c: MemoryPressureConfig| MemoryPressure::new(c).unwrap_err().key;
    let d = MemoryPressureConfig::default();
    assert_eq!(bad(MemoryPressureConfig { low: 0.95, ..d }), "low");
    assert_eq!(bad(MemoryPressureConfig { high: 0.0, ..d }), "high");
    assert_eq!(
        bad(MemoryPressureConfig {
            max_per_tick: 0,
            ..d
        }),
        "max_per_tick"
    );
    assert_eq!(
        bad(MemoryPressureConfig {
            limit: Some(ByteSize(0)),
            ..d
        }),
        "limit"
    );
}

#[test]
fn keep_alive_evicts_each_worker_after_its_ttl_down_to_the_floor() {
    let mut world = World::new(&["p"]);
    world.key(0, "a", &[(1, 0, 0, 1), (2, 0, 50, 1), (3, 1, 0, 1)]);
    let mut policy = KeepAlive::new(KeepAliveConfig {
        ttl: s(60),
        min_workers: 0,
    })
    .unwrap();
    assert!(world.run(&mut policy, 59, None).is_empty());
    assert_eq!(world.run(&mut policy, 60, None), vec![("a".into(), 1)]);
    assert_eq!(
        world.run(&mut policy, 110, None),
        vec![("a".into(), 1), ("a".into(), 2)]
    );
    let mut floored = KeepAlive::new(KeepAliveConfig {
        ttl: s(60),
        min_workers: 2,
    })
    .unwrap();
    assert_eq!(world.run(&mut floored, 500, None), vec![("a".into(), 1)]);
    world.overrides.push(ModelOverrides {
        ttl: Some(s(5)),
        ..ModelOverrides::default()
    });
    world.keys[0].overrides = 1;
    assert_eq!(world.run(&mut policy, 5, None), vec![("a".into(), 1)]);
}

#[test]
fn gradual_lru_needs_every_worker_idle_and_the_step_since_the_last_eviction() {
    let mut world = World::new(&["p", "other"]);
    world
        .key(0, "a", &[(1, 0, 0, 1), (2, 0, 30, 1)])
        .key(1, "b", &[(1, 0, 0, 1)]);
    world.governed = vec![true, false];
    let mut policy = GradualLru::new(GradualLruConfig::default()).unwrap();
    assert!(
        world.run(&mut policy, 89, None).is_empty(),
        "quiet since 30 s only"
    );
    assert_eq!(
        world.run(&mut policy, 90, None),
        vec![("a".into(), 1)],
        "the LRU, governed keys only"
    );
    world.keys[0].last_eviction = Some(s(60));
    assert!(
        world.run(&mut policy, 119, None).is_empty(),
        "step not yet passed"
    );
    world.keys[0].starting = 1;
    assert!(
        world.run(&mut policy, 500, None).is_empty(),
        "a spawn under way means demand"
    );
}

#[test]
fn max_lifetime_recycles_idle_workers_with_a_deterministic_jitter() {
    let mut world = World::new(&["p"]);
    world.key(0, "a", &[(1, 0, 0, 1), (2, 1, 0, 1)]);
    let mut policy = MaxLifetime::new(MaxLifetimeConfig {
        lifetime: s(100),
        jitter: 0.5,
    })
    .unwrap();
    let lifetime = policy.lifetime_of("a", &world.workers[0]);
    assert!(lifetime > s(50) && lifetime <= s(100), "{lifetime:?}");
    assert_eq!(
        lifetime,
        policy.lifetime_of("a", &world.workers[0]),
        "deterministic"
    );
    let at = lifetime.as_secs() + 1;
    assert_eq!(world.run(&mut policy, at, None), vec![("a".into(), 1)]);
    assert!(
        world
            .run(&mut policy, 1000, None)
            .iter()
            .all(|(_, id)| *id == 1),
        "busy workers wait"
    );
    assert!(MaxLifetime::new(MaxLifetimeConfig {
        lifetime: s(1),
        jitter: 1.0
    })
    .is_err());
}

#[test]
fn chain_unions_proposals_each_worker_once() {
    let mut world = World::new(&["p"]);
    world.key(0, "a", &[(1, 0, 0, 10), (2, 0, 5, 10)]);
    let mut chain = ChainPolicy::new(vec![
        Box::new(
            KeepAlive::new(KeepAliveConfig {
                ttl: s(10),
                min_workers: 0,
            })
            .unwrap(),
        ),
        Box::new(pressure(MemoryPressureConfig {
            min_idle: Duration::ZERO,
            ..MemoryPressureConfig::default()
        })),
        Box::new(Noop),
    ]);
    let proposed = world.run(&mut chain, 100, used(100, 100));
    assert_eq!(proposed, vec![("a".into(), 1), ("a".into(), 2)]);
    assert_eq!(chain.children().len(), 3);
}

#[test]
fn memory_pressure_goes_on_below_high_until_low_then_waits_for_high_again() {
    let mut world = World::new(&["p"]);
    let workers: Vec<(u64, u32, u64, u64)> = (1..=7).map(|id| (id, 0, id, 10)).collect();
    world.key(0, "a", &workers);
    let mut policy = pressure(MemoryPressureConfig {
        high: 0.9,
        low: 0.5,
        max_per_tick: 1,
        ..MemoryPressureConfig::default()
    });
    let mut evicted = Vec::new();
    // Each eviction shows at the next reading: 100, 90, 80, 70, 60 used; projected 50 after
    // the fifth, which is `low`.
    for (tick, used_now) in [(100, 100), (101, 90), (102, 80), (103, 70), (104, 60)] {
        let proposed = world.run(&mut policy, tick, used(used_now, 100));
        assert_eq!(proposed.len(), 1, "tick {tick} at {used_now} % used");
        evicted.push(proposed[0].1);
        let gone = world.workers.iter().position(|w| w.id.0 == proposed[0].1);
        world.workers.remove(gone.unwrap());
        world.keys[0].workers = 0..world.workers.len();
    }
    assert_eq!(evicted, vec![1, 2, 3, 4, 5], "least recently used first");
    assert!(
        world.run(&mut policy, 105, used(50, 100)).is_empty(),
        "at low"
    );
    assert!(
        world.run(&mut policy, 106, used(85, 100)).is_empty(),
        "a rise below high does not restart it"
    );
    assert_eq!(
        world.run(&mut policy, 107, used(90, 100)).len(),
        1,
        "high again"
    );
    let mut fresh = pressure(MemoryPressureConfig {
        high: 0.9,
        low: 0.5,
        ..MemoryPressureConfig::default()
    });
    assert!(world.run(&mut fresh, 108, used(85, 100)).is_empty());
}
