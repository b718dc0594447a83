//! Memory pressure across pools, deterministically: a fixed memory probe above `high`, a manual
//! clock, and one tick at a time. The policy is the example's chain (memory-pressure, then a
//! gradual-lru too slow to matter here), built from TOML.

mod common;

use std::sync::Arc;

use common::*;
use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::{FixedProbe, ManualClock, MemoryReading, Pool, Scheduler};

const GIB: u64 = 1 << 30;

/// `limit` is the memory-pressure `limit` parameter (a TOML value), if any.
fn chain(limit: Option<&str>) -> String {
    let limit = limit.map_or(String::new(), |l| format!("limit = {l}\n"));
    format!(
        r#"
[policy]
kind = "chain"

[[policy.policies]]
kind = "memory-pressure"
high = 0.90
low = 0.80
order = "lru"
max_per_tick = 4
min_idle = "10s"
settle = "0s"
{limit}
[[policy.policies]]
kind = "gradual-lru"
idle = "1h"
step = "1h"
"#
    )
}

struct Setup {
    clock: Arc<ManualClock>,
    text: Pool<Model>,
    vision: Pool<Model>,
    probe: FixedProbe,
    scheduler: Scheduler,
}

/// Two pools of 100-byte workers under one scheduler running the chain.
fn setup(limit: Option<&str>, probe: FixedProbe) -> Setup {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(&chain(limit), "memory_pressure.toml", &registry).unwrap();
    let clock = Arc::new(ManualClock::new());
    let text = model_pool("text", &clock, 4, 100);
    let vision = model_pool("vision", &clock, 4, 100);
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .probe(probe.clone())
        .policy(config.policy.build(&registry).unwrap())
        .build();
    scheduler.register(&text);
    scheduler.register(&vision);
    Setup {
        clock,
        text,
        vision,
        probe,
        scheduler,
    }
}

/// Serves one request on `key` at second `t`: the worker's `last_used` becomes `t`.
fn use_at(clock: &ManualClock, pool: &Pool<Model>, key: &str, t: u64) {
    clock.set(secs(t));
    drop(pool.acquire(key).unwrap());
}

/// Ticks at second `t`; the evictions as (pool, key, reason).
fn tick_at(setup: &Setup, t: u64) -> Vec<(String, String, String)> {
    setup.clock.set(secs(t));
    setup
        .scheduler
        .tick_once()
        .evictions
        .into_iter()
        .map(|e| (e.pool.to_string(), e.key.to_string(), e.reason.to_string()))
        .collect()
}

fn evicted(pool: &str, key: &str) -> (String, String, String) {
    (pool.into(), key.into(), "memory-pressure".into())
}

#[test]
fn memory_pressure_evicts_the_least_recently_used_idle_worker_across_pools_never_a_busy_one() {
    let s = setup(None, FixedProbe::used_of(850, 1000));

    // The oldest worker of all is busy for the whole test.
    s.clock.set(secs(0));
    let held = s.text.acquire("held").unwrap();
    // Idle workers, alternating pools, least recently used first.
    use_at(&s.clock, &s.text, "a", 1);
    use_at(&s.clock, &s.vision, "b", 2);
    use_at(&s.clock, &s.text, "c", 3);
    use_at(&s.clock, &s.vision, "d", 4);
    // Idle for less than `min_idle` when the pressure comes.
    use_at(&s.clock, &s.vision, "fresh", 25);

    // 85 % used: below `high`, nothing happens.
    assert_eq!(tick_at(&s, 30), vec![]);

    // 95 % used. Freeing down to `low` (80 %) takes two 100-byte workers: the two least
    // recently used idle ones, one from each pool, never the busy one.
    s.probe.set(Some(MemoryReading {
        total: 1000,
        available: 50,
        process_rss: None,
    }));
    assert_eq!(
        tick_at(&s, 31),
        vec![evicted("text", "a"), evicted("vision", "b")]
    );
    // Still 95 % (the probe is fixed): the next two, in the same order.
    assert_eq!(
        tick_at(&s, 32),
        vec![evicted("text", "c"), evicted("vision", "d")]
    );
    // Left: the busy worker, and one idle for 8 s only.
    assert_eq!(tick_at(&s, 33), vec![]);
    assert_eq!(s.text.workers("held"), 1);
    assert_eq!(s.text.in_flight("held"), 1);
    assert_eq!(s.vision.workers("fresh"), 1);

    // Once idle for `min_idle`, the fresh one goes; the busy one stays while it is busy...
    assert_eq!(tick_at(&s, 35), vec![evicted("vision", "fresh")]);
    assert_eq!(tick_at(&s, 60), vec![]);
    assert_eq!(s.text.workers("held"), 1);

    // ...and goes too once it has been idle for `min_idle`.
    s.clock.set(secs(61));
    drop(held);
    assert_eq!(tick_at(&s, 70), vec![]);
    assert_eq!(tick_at(&s, 71), vec![evicted("text", "held")]);

    assert_eq!(s.text.accounted_bytes() + s.vision.accounted_bytes(), 0);
    assert_eq!(
        s.scheduler.stats().evictions.get("memory-pressure"),
        Some(&6)
    );
}

#[test]
fn the_limit_parameter_overrides_the_probe_total() {
    // The probe sees 1 GiB used of 64 GiB (under 2 %); against a 1.1 GiB limit that is 91 %.
    let reading = || FixedProbe::used_of(GIB, 64 * GIB);
    let without = setup(None, reading());
    let with = setup(Some("\"1.1GiB\""), reading());
    for s in [&without, &with] {
        use_at(&s.clock, &s.text, "a", 1);
        use_at(&s.clock, &s.vision, "b", 2);
    }
    assert_eq!(tick_at(&without, 20), vec![]);
    // Freeing one 100-byte worker cannot reach `low`, so every idle one goes, oldest first.
    assert_eq!(
        tick_at(&with, 20),
        vec![evicted("text", "a"), evicted("vision", "b")]
    );
}
