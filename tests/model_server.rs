//! A short run of the model-server example (`examples/model_server.rs`) with real threads and
//! real memory: five pools scale up under load, back to zero once idle, the accounting returns
//! to zero, and every worker thread is joined.
//!
//! This is the only test in this binary on purpose: it compares the process's thread count and
//! RSS before and after, which other tests running beside it would disturb.

#[path = "../examples/support/models.rs"]
mod models;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::{Clock, FixedProbe, TscClock};

use models::{
    build_pools, build_scheduler, mib, plan, process_rss, thread_count, Counters, Driver,
};

/// Five pools of one 64 MiB model each, at most two workers per model: at most 640 MiB at
/// once, and 640 MiB allocated in all when no worker is evicted in the middle of its burst
/// (`idle` is far longer than a client's pause between requests).
const CONFIG: &str = r#"
[scheduler]
tick = "50ms"

[policy]
kind = "gradual-lru"
idle = "300ms"
step = "100ms"

[pools.image-embedding]
max_workers_per_model = 2
memory = "64MiB"
[pools.image-embedding.models.clip]

[pools.text-embedding]
max_workers_per_model = 2
memory = "64MiB"
[pools.text-embedding.models.minilm]

[pools.text-to-image]
max_workers_per_model = 2
memory = "64MiB"
cold_start = "50ms"
[pools.text-to-image.models.sd-turbo]

[pools.text-to-text]
max_workers_per_model = 2
memory = "64MiB"
[pools.text-to-text.models.flan-t5]

[pools.vision]
max_workers_per_model = 2
memory = "64MiB"
[pools.vision.models.detr]
"#;

/// Polls `done` every 10 ms until it holds or `within` passes; whether it held.
fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn five_pools_scale_up_under_load_then_back_to_zero_and_every_thread_is_joined() {
    let threads_before = thread_count();
    let rss_before = process_rss();
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(CONFIG, "tests/model_server.rs", &registry).unwrap();
    let counters = Arc::new(Counters::default());
    let clock: Arc<dyn Clock> = Arc::new(TscClock::new());
    let pools = build_pools(&config, &clock, &counters);
    assert_eq!(pools.len(), 5);
    let scheduler = build_scheduler(
        &config,
        &registry,
        Box::new(FixedProbe::new(None)),
        &clock,
        &pools,
    )
    .unwrap();
    let events = scheduler.subscribe_with_capacity(4096);
    scheduler.start().unwrap();

    // Bursts of two clients per pool, 800 ms each, 150 ms apart: the load is over in 1.4 s.
    let bursts = plan(
        &config,
        &pools,
        Duration::from_millis(800),
        Duration::from_millis(150),
        Duration::from_millis(5),
    );
    assert_eq!(bursts.len(), 5);
    let mut driver = Driver::start(&pools, &bursts, &counters).unwrap();

    let mut peak_workers = vec![0usize; pools.len()];
    let mut peak_accounted = 0u64;
    let mut peak_rss = 0u64;
    let load_deadline = Instant::now() + Duration::from_secs(30);
    while !driver.is_done() {
        assert!(
            Instant::now() < load_deadline,
            "the load driver did not finish"
        );
        let mut accounted = 0;
        for (i, (_, pool)) in pools.iter().enumerate() {
            peak_workers[i] = peak_workers[i].max(pool.stats().total_workers());
            accounted += pool.accounted_bytes();
        }
        peak_accounted = peak_accounted.max(accounted);
        peak_rss = peak_rss.max(process_rss().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    driver.stop();

    // Scaled up under load: every pool got workers, and pools went past one worker.
    assert_eq!(counters.failures.load(Ordering::SeqCst), 0);
    assert!(counters.requests.load(Ordering::SeqCst) > 0);
    for ((name, _), peak) in pools.iter().zip(&peak_workers) {
        assert!(*peak >= 1, "pool {name} never had a worker");
    }
    assert!(
        peak_workers.iter().any(|p| *p >= 2),
        "no pool scaled past one worker: {peak_workers:?}"
    );
    let spawns: u64 = pools.iter().map(|(_, p)| p.stats().spawns).sum();
    assert!(spawns > pools.len() as u64, "{spawns} spawns");
    assert!(
        spawns <= 16,
        "{spawns} spawns: workers were evicted mid-burst"
    );

    // Back to zero once idle, with the accounting.
    assert!(
        eventually(Duration::from_secs(15), || pools
            .iter()
            .all(|(_, p)| p.stats().total_workers() == 0)),
        "pools did not scale back to zero: {:?}",
        pools.iter().map(|(_, p)| p.stats()).collect::<Vec<_>>()
    );
    scheduler.stop();
    for (name, pool) in &pools {
        assert_eq!(pool.accounted_bytes(), 0, "pool {name}");
        assert_eq!(pool.live_worker_bytes(), 0, "pool {name}");
    }
    // A load the queue started may finish after the request it was for was served by a
    // release: it becomes an idle worker and is evicted too. Count spawns now that all are gone.
    let spawns: u64 = pools.iter().map(|(_, p)| p.stats().spawns).sum();
    assert_eq!(events.dropped(), 0);
    let evicted: Vec<_> = events
        .try_iter()
        .filter_map(|e| e.as_eviction().cloned())
        .collect();
    assert_eq!(evicted.len() as u64, spawns);
    assert!(evicted.iter().all(|e| e.reason.as_str() == "idle"));
    assert_eq!(scheduler.stats().evictions.get("idle"), Some(&spawns));

    // Every worker thread was joined: eviction joins it, so none is left running, and the
    // process is back to its thread count from before the pools.
    drop(scheduler);
    drop(pools);
    assert_eq!(counters.threads_alive.load(Ordering::SeqCst), 0);
    assert_eq!(counters.threads_started.load(Ordering::SeqCst), spawns);
    if let Some(before) = threads_before {
        // A joined thread may leave the kernel's count a moment later: poll.
        let mut now = thread_count();
        let back = eventually(Duration::from_secs(5), || {
            now = thread_count();
            now == Some(before)
        });
        assert!(back, "threads: {before} before, {now:?} after");
    }

    // The memory went back to the operating system.
    let rss_after = process_rss();
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        let dropped = peak_rss.saturating_sub(after);
        eprintln!(
            "RSS: {:.0} MiB before, {:.0} MiB at the peak ({:.0} MiB accounted), {:.0} MiB after: dropped {:.0} MiB",
            mib(before),
            mib(peak_rss),
            mib(peak_accounted),
            mib(after),
            mib(dropped)
        );
        assert!(
            dropped >= peak_accounted / 2,
            "RSS dropped by {:.0} MiB only, of {:.0} MiB accounted at the peak",
            mib(dropped),
            mib(peak_accounted)
        );
    }
}
