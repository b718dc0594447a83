//! Definition of done 1 and 2 of the core issue: the cooldown table in virtual time.

mod common;

use std::sync::Arc;

use common::*;
use poolwarden::policies::{GradualLru, GradualLruConfig, ModelOverrides};
use poolwarden::{Lease, ManualClock, Pool, Scheduler, SpawnError};

fn gradual(idle: u64, step: u64, min_workers: usize) -> Box<GradualLru> {
    Box::new(
        GradualLru::new(GradualLruConfig {
            idle: secs(idle),
            step: secs(step),
            min_workers,
        })
        .unwrap(),
    )
}

/// 4 requests of 5 minutes at 0:00, one of 60 s at 7:30, on one key; returns the evictions and
/// the worker that served 7:30.
fn scenario5(tick: u64) -> (Vec<Observed>, u64) {
    let clock = Arc::new(ManualClock::new());
    let pool = model_pool("default", &clock, 4, 1 << 30);
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .tick(secs(tick))
        .policy(gradual(60, 60, 0))
        .build();
    scheduler.register(&pool);

    let mut first: Vec<Lease<Model>> = Vec::new();
    let mut late: Option<Lease<Model>> = None;
    let mut late_worker = 0;
    let evictions = drive(&clock, &scheduler, tick, at(15, 0), |t| match t {
        0 => first.extend((0..4).map(|_| pool.acquire("m").unwrap())),
        300 => first.clear(),
        450 => {
            let lease = pool.acquire("m").unwrap();
            late_worker = lease.worker_id().0;
            late = Some(lease);
        }
        510 => late = None,
        _ => {}
    });
    assert!(late.is_none());
    assert_eq!(pool.workers("m"), 0);
    assert_eq!(pool.accounted_bytes(), 0);
    (evictions, late_worker)
}

#[test]
fn scenario5_cooldown_table_with_a_one_second_tick() {
    let (evictions, late_worker) = scenario5(1);
    let table: Vec<(u64, usize)> = evictions.iter().map(|e| (e.0, e.4)).collect();
    assert_eq!(
        table,
        vec![
            (at(6, 0), 3),
            (at(7, 0), 2),
            (at(9, 30), 1),
            (at(10, 30), 0)
        ]
    );
    assert!(evictions.iter().all(|e| e.5 == "idle" && e.2 == "m"));
    // The 9:30 victim is the worker idle since 5:00, not the one that served 7:30.
    let victim_930 = evictions[2].3;
    assert_ne!(victim_930, late_worker);
    assert_eq!(evictions[3].3, late_worker);
}

#[test]
fn scenario5_with_a_sixty_second_tick_lands_within_one_tick() {
    let (evictions, _) = scenario5(60);
    let table = [
        (at(6, 0), 3),
        (at(7, 0), 2),
        (at(9, 30), 1),
        (at(10, 30), 0),
    ];
    assert_eq!(evictions.len(), table.len(), "{evictions:?}");
    for (seen, (when, left)) in evictions.iter().zip(table) {
        assert_eq!(seen.4, left);
        assert!(
            seen.0 >= when && seen.0 < when + 60,
            "eviction leaving {left} at {}s, table says {when}s",
            seen.0
        );
    }
}

/// Two keys with different parameters and a floor, worked out by hand:
///
/// * `fast`: per-model overrides idle 30s, step 20s, min_workers 1; 3 requests from 0:00 to
///   1:00. Quiet from 1:00: evictions at 1:30 (3→2) and 1:50 (2→1); the floor keeps one.
/// * `slow`: the policy's idle 2m, step 1m; 2 requests from 0:00 to 0:40, one from 2:00 to 2:10.
///   Quiet from 0:40 → the 2:40 eviction would come, but the 2:00 request resets the idle clock:
///   quiet again from 2:10, evictions at 4:10 (2→1) and 5:10 (1→0).
#[test]
fn two_keys_with_their_own_parameters_and_a_floor() {
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 10 }))
        .clock(clock.clone())
        .max_workers_per_model(4)
        .model_overrides(
            "fast",
            ModelOverrides {
                idle: Some(secs(30)),
                step: Some(secs(20)),
                min_workers: Some(1),
                ..ModelOverrides::default()
            },
        )
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(gradual(120, 60, 0))
        .build();
    scheduler.register(&pool);

    let mut fast: Vec<Lease<Model>> = Vec::new();
    let mut slow: Vec<Lease<Model>> = Vec::new();
    let evictions = drive(&clock, &scheduler, 1, at(10, 0), |t| match t {
        0 => {
            fast.extend((0..3).map(|_| pool.acquire("fast").unwrap()));
            slow.extend((0..2).map(|_| pool.acquire("slow").unwrap()));
        }
        40 => slow.clear(),
        60 => fast.clear(),
        120 => slow.push(pool.acquire("slow").unwrap()),
        130 => slow.clear(),
        _ => {}
    });
    let table: Vec<(u64, &str, usize)> =
        evictions.iter().map(|e| (e.0, e.2.as_str(), e.4)).collect();
    assert_eq!(
        table,
        vec![
            (at(1, 30), "fast", 2),
            (at(1, 50), "fast", 1),
            (at(4, 10), "slow", 1),
            (at(5, 10), "slow", 0),
        ]
    );
    assert_eq!(pool.workers("fast"), 1);
    assert_eq!(pool.accounted_bytes(), 10);
}
