//! The metrics poolwarden exports (feature `metrics`), recorded by a recorder over
//! `metrics-util`'s registry, installed once for this test binary: it keeps every counter,
//! gauge and histogram value, and reading them changes nothing. Each test uses pools of its own
//! names and reads only its own series.
#![cfg(feature = "metrics")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::recorder::{observe, registry};
use poolwarden::metrics::{MetricKind as Kind, METRICS};
use poolwarden::policies::{GradualLru, GradualLruConfig};
use poolwarden::status::{BudgetReport, BudgetStatus};
use poolwarden::{AcquireError, ManualClock, Pool, Scheduler, SpawnError, Worker};

/// Held by each test for its whole run (`tick_seconds` has no pool label to tell them apart).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Model;

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        100
    }
}

fn gradual_lru(idle: u64) -> Box<GradualLru> {
    Box::new(
        GradualLru::new(GradualLruConfig {
            idle: Duration::from_secs(idle),
            step: Duration::ZERO,
            min_workers: 0,
        })
        .unwrap(),
    )
}

/// A budget that reports fixed figures.
struct FixedBudget;

impl BudgetReport for FixedBudget {
    fn budget_status(&self) -> BudgetStatus {
        BudgetStatus {
            name: "metrics-gpu".to_string(),
            limit_bytes: 1000,
            used_bytes: 300,
            free_bytes: 700,
            pools: vec!["metrics-scripted".to_string()],
            waiting_spawns: 0,
        }
    }
}

/// A scripted run under a `ManualClock`: every counter and gauge equals what the script did.
#[test]
fn a_scripted_run_exports_the_known_counts_and_gauges() {
    const POOL: &str = "metrics-scripted";
    let _serial = one_at_a_time();
    registry();
    let clock = Arc::new(ManualClock::new());
    let loads = clock.clone();
    let fail = Arc::new(AtomicBool::new(false));
    let failing = fail.clone();
    // Every load takes 2 s of the manual clock; `bad` always fails.
    let pool = Pool::builder(POOL, move |key: &str| {
        loads.advance(Duration::from_secs(2));
        if key == "bad" || failing.load(Ordering::SeqCst) {
            return Err::<Model, SpawnError>("no weights".into());
        }
        Ok(Model)
    })
    .clock(clock.clone())
    .max_workers_per_model(2)
    .acquire_timeout(Duration::from_millis(50))
    .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(gradual_lru(10))
        .build();
    scheduler.register(&pool);
    scheduler.register_budget(Arc::new(FixedBudget));

    // Two requests of `a` at once: each waits for a load of its own (2 spawns, 2 cold starts,
    // 2 waits recorded where they happen).
    let first = pool.acquire("a").unwrap();
    let second = pool.acquire("a").unwrap();
    // A third waits, no room to spawn (max 2), and times out after 50 ms.
    assert!(matches!(
        pool.acquire("a"),
        Err(AcquireError::Timeout { .. })
    ));
    // A load of `bad` fails: its request waited for it, and got the error.
    assert!(pool.acquire("bad").is_err());
    scheduler.tick_once();
    {
        let seen = observe();
        let a = [("pool", POOL), ("model", "a")];
        assert_eq!(seen.gauge("poolwarden_workers", &a), Some(2.0));
        assert_eq!(seen.gauge("poolwarden_in_flight", &a), Some(2.0));
        assert_eq!(seen.gauge("poolwarden_waiting", &a), Some(0.0));
        assert_eq!(seen.gauge("poolwarden_starting", &a), Some(0.0));
        assert_eq!(
            seen.gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
            Some(200.0)
        );
        assert_eq!(
            seen.gauge("poolwarden_budget_free_bytes", &[("budget", "metrics-gpu")]),
            Some(700.0)
        );
    }

    // Released; then three requests find a ready worker at once.
    drop((first, second));
    for _ in 0..3 {
        drop(pool.acquire("a").unwrap());
    }
    scheduler.tick_once();
    {
        let seen = observe();
        let a = [("pool", POOL), ("model", "a")];
        assert_eq!(seen.gauge("poolwarden_in_flight", &a), Some(0.0));
        assert_eq!(seen.gauge("poolwarden_workers", &a), Some(2.0));
    }

    // Idle for 10 s: gradual-lru (step 0) takes one worker per tick.
    clock.advance(Duration::from_secs(11));
    scheduler.tick_once();
    {
        let seen = observe();
        let a = [("pool", POOL), ("model", "a")];
        assert_eq!(seen.gauge("poolwarden_workers", &a), Some(1.0));
        assert_eq!(
            seen.gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
            Some(100.0)
        );
    }
    scheduler.tick_once();
    scheduler.tick_once(); // the key, vacant, is forgotten: its gauges stay at zero

    let seen = observe();
    let a = [("pool", POOL), ("model", "a")];
    let bad = [("pool", POOL), ("model", "bad")];
    assert_eq!(seen.counter("poolwarden_spawns_total", &a), Some(2));
    assert_eq!(seen.counter("poolwarden_cold_starts_total", &a), Some(2));
    assert_eq!(
        seen.counter("poolwarden_acquire_timeouts_total", &a),
        Some(1)
    );
    assert_eq!(seen.counter("poolwarden_spawn_failures_total", &a), Some(0));
    assert_eq!(
        seen.counter("poolwarden_spawn_failures_total", &bad),
        Some(1)
    );
    assert_eq!(
        seen.counter(
            "poolwarden_evictions_total",
            &[("pool", POOL), ("reason", "idle")]
        ),
        Some(2)
    );
    for gauge in [
        "poolwarden_workers",
        "poolwarden_in_flight",
        "poolwarden_waiting",
        "poolwarden_starting",
    ] {
        assert_eq!(seen.gauge(gauge, &a), Some(0.0), "{gauge}");
    }
    assert_eq!(
        seen.gauge("poolwarden_accounted_bytes", &[("pool", POOL)]),
        Some(0.0)
    );
    // Each load took 2 s of the manual clock.
    assert_eq!(
        seen.histogram("poolwarden_spawn_seconds", &a),
        vec![2.0, 2.0]
    );
    // Waits: the two cold requests and the one whose load failed queued and waited (in real
    // time, so more than zero); the three served at once did not queue and are not recorded,
    // and the timed-out request is a timeout, not a wait. Every one of the seven is a request.
    let waits = seen.histogram("poolwarden_acquire_wait_seconds", &[("pool", POOL)]);
    assert_eq!(waits.len(), 3, "{waits:?}");
    assert!(waits.iter().all(|w| *w > 0.0), "{waits:?}");
    assert_eq!(
        seen.counter("poolwarden_requests_total", &[("pool", POOL)]),
        Some(7)
    );
    assert!(seen.histogram("poolwarden_tick_seconds", &[]).len() >= 5);
}

/// Every metric the pool and the scheduler emit is in the published list with its kind and
/// labels, and every listed one is emitted by a run that exercises it.
#[test]
fn every_emitted_metric_is_listed_with_its_labels() {
    const POOL: &str = "metrics-listed";
    let _serial = one_at_a_time();
    registry();
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder(POOL, |_key: &str| Ok::<_, SpawnError>(Model))
        .clock(clock.clone())
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(gradual_lru(1))
        .build();
    scheduler.register(&pool);
    scheduler.register_budget(Arc::new(FixedBudget));
    drop(pool.acquire("m").unwrap());
    clock.advance(Duration::from_secs(5));
    scheduler.tick_once();
    let seen = observe();
    let mut emitted: Vec<(String, Kind, Vec<String>)> = Vec::new();
    for (name, labels) in seen.counters.keys() {
        emitted.push((
            name.clone(),
            Kind::Counter,
            labels.iter().map(|l| l.0.clone()).collect(),
        ));
    }
    for (name, labels) in seen.gauges.keys() {
        emitted.push((
            name.clone(),
            Kind::Gauge,
            labels.iter().map(|l| l.0.clone()).collect(),
        ));
    }
    for (name, labels) in seen.histograms.keys() {
        emitted.push((
            name.clone(),
            Kind::Histogram,
            labels.iter().map(|l| l.0.clone()).collect(),
        ));
    }
    for (name, kind, labels) in &emitted {
        let info = METRICS
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} is emitted but not listed"));
        assert_eq!(info.kind, *kind, "{name}");
        let mut listed: Vec<&str> = info.labels.to_vec();
        listed.sort();
        assert_eq!(listed, *labels, "{name}");
    }
    for info in METRICS {
        assert!(
            emitted.iter().any(|(name, _, _)| name == info.name),
            "{} is listed but was not emitted",
            info.name
        );
    }
}
