//! A policy written outside the library crates (`examples/support/learned_keep_alive.rs`),
//! registered by name, selected from TOML, and shown evicting under a manual clock.
//!
//! `learned-keep-alive` learns each key's quiet periods (the time between the key going idle
//! and its next request) across ticks, and keeps a quiet key's workers only as long as the
//! chosen percentile of those periods: a model called every 30 s keeps its workers through the
//! gaps, while one whose traffic stopped is released soon after.
//!
//! Run with `cargo run --example custom_policy`.

#[path = "support/learned_keep_alive.rs"]
mod learned_keep_alive;

use std::sync::Arc;
use std::time::Duration;

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::{Lease, ManualClock, SpawnError, Worker};

struct Model;

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        1 << 30
    }
}

const CONFIG: &str = r#"
[scheduler]
tick = "1s"

[policy]
kind = "learned-keep-alive"
percentile = 0.9
floor = "20s"
ceiling = "5m"

[pools.chat]
max_workers_per_model = 2
"#;

fn main() {
    // 1. Register the kind next to the built-ins (`registry.register_with_models`).
    let mut registry = PolicyRegistry::new();
    learned_keep_alive::register(&mut registry);

    // 2. Operators select it in TOML.
    let config = Config::from_toml(CONFIG, "custom.toml", &registry).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    println!("policy: {}", config.policy.describe(&registry));

    // 3. Run it under a manual clock, with the pool and scheduler the config describes.
    let clock = Arc::new(ManualClock::new());
    let pool = config
        .pool_builder("chat", |_key: &str| Ok::<_, SpawnError>(Model))
        .expect("[pools.chat] is in the config")
        .clock(clock.clone())
        .build();
    let scheduler = config
        .scheduler_builder(&registry)
        .expect("validated at load")
        .clock(clock.clone())
        .build();
    scheduler
        .register(&pool)
        .expect("[pools.chat] is in the config");

    // A request of 5 s every 40 s for ten minutes, then silence.
    let mut lease: Option<Lease<Model>> = None;
    let mut evictions = Vec::new();
    for second in 0..=900u64 {
        clock.set(Duration::from_secs(second));
        if second < 600 && second % 40 == 0 {
            lease = Some(pool.acquire("assistant").expect("spawn"));
        }
        if second % 40 == 5 {
            lease = None;
        }
        for event in scheduler.tick_once().evictions {
            println!(
                "{:>4}s  evicted worker {} of {}/{} ({}), {} left",
                event.at.as_secs(),
                event.worker,
                event.pool,
                event.key,
                event.reason,
                event.workers_left
            );
            evictions.push(event.at.as_secs());
        }
    }
    drop(lease);
    // The 35 s gaps were learnt, so the workers stayed through them; after the last request
    // (560 s, done at 565 s) the key was released 35 s later, not after the 5 min ceiling.
    assert_eq!(evictions, vec![600], "learned keep-alive evictions");
    assert_eq!(pool.workers("assistant"), 0);
    println!("ok: no eviction during the 35 s gaps; released 35 s after traffic stopped");
}
