//! The model-server example's pools on one memory budget, with real threads and real memory:
//! a model of a new burst loads only after idle workers of earlier bursts were evicted with
//! reason `admission`, the accounted bytes never exceed the budget, and neither does the
//! process's resident memory beyond what the process held before and the allocator's slack.
//!
//! Alone in its binary: it measures the process's RSS.

#[path = "../examples/support/models.rs"]
mod models;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::{Clock, FixedProbe, PoolEvent, TscClock};

use models::{build_pools, build_scheduler, mib, plan, process_rss, Counters, Driver};

/// The five 64 MiB pools of tests/model_server.rs, on one budget of three workers.
const CONFIG: &str = r#"
[scheduler]
tick = "50ms"

[budgets.gpu]
limit = "192MiB"

[policy]
kind = "gradual-lru"
idle = "300ms"
step = "100ms"

[pools.image-embedding]
budget = "gpu"
max_workers_per_model = 2
memory = "64MiB"
[pools.image-embedding.models.clip]

[pools.text-embedding]
budget = "gpu"
max_workers_per_model = 2
memory = "64MiB"
[pools.text-embedding.models.minilm]

[pools.text-to-image]
budget = "gpu"
max_workers_per_model = 2
memory = "64MiB"
cold_start = "50ms"
[pools.text-to-image.models.sd-turbo]

[pools.text-to-text]
budget = "gpu"
max_workers_per_model = 2
memory = "64MiB"
[pools.text-to-text.models.flan-t5]

[pools.vision]
budget = "gpu"
max_workers_per_model = 2
memory = "64MiB"
[pools.vision.models.detr]
"#;

#[test]
fn five_pools_on_one_budget_load_only_after_admission_made_room() {
    let rss_before = process_rss().unwrap_or(0);
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(CONFIG, "tests/model_server_budget.rs", &registry).unwrap();
    let counters = Arc::new(Counters::default());
    let clock: Arc<dyn Clock> = Arc::new(TscClock::new());
    let pools = build_pools(&config, &clock, &counters);
    let budget = config.budget("gpu").unwrap();
    assert!(pools
        .iter()
        .all(|(_, p)| p.budget().is_some_and(|b| b.same(&budget))));
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
    let bursts = plan(
        &config,
        &pools,
        Duration::from_millis(800),
        Duration::from_millis(150),
        Duration::from_millis(5),
    );
    let mut driver = Driver::start(&pools, &bursts, &counters).unwrap();
    let limit = budget.limit();
    let (mut peak_used, mut peak_accounted, mut peak_rss) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !driver.is_done() {
        assert!(Instant::now() < deadline, "the load driver did not finish");
        peak_used = peak_used.max(budget.used());
        let accounted: u64 = pools.iter().map(|(_, p)| p.accounted_bytes()).sum();
        peak_accounted = peak_accounted.max(accounted);
        peak_rss = peak_rss.max(process_rss().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(5));
    }
    driver.stop();
    scheduler.stop();
    assert_eq!(
        counters.failures.load(Ordering::SeqCst),
        0,
        "every request was served"
    );
    assert!(
        peak_used <= limit,
        "accounted plus reserved reached {} MiB",
        mib(peak_used)
    );
    assert!(
        peak_accounted <= limit,
        "accounted reached {} MiB",
        mib(peak_accounted)
    );
    // The weights are single large allocations: the allocator's slack over the budget is a few
    // MiB, not a worker. Allow one 64 MiB worker for the process's own growth and a thread's
    // teardown racing with the sample.
    let over = peak_rss.saturating_sub(rss_before);
    assert!(
        over <= limit + (64 << 20),
        "RSS grew by {} MiB on a {} MiB budget",
        mib(over),
        mib(limit)
    );
    let admissions = events
        .try_iter()
        .filter(|e| matches!(e, PoolEvent::Eviction(ev) if ev.reason.as_str() == "admission"))
        .count();
    assert!(admissions > 0, "admission made room for later bursts");
    // Admission evictions are published at the tick after them: those of the last instants
    // before `stop` may be left out.
    assert!(admissions <= budget.stats().admission_evictions as usize);
    assert_eq!(budget.reserved(), 0);
}
