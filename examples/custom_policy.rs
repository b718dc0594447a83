//! A policy written outside the library crates (`examples/support/learned_keep_alive.rs`),
//! registered by name, selected from TOML, and shown evicting under a manual clock, then judged
//! against the baselines on real traffic.
//!
//! `learned-keep-alive` learns each key's quiet periods (the time between the key going idle
//! and its next request, including requests that came and went between two ticks) across
//! ticks, and keeps a quiet key's workers only as long as the chosen percentile of the latest
//! 64 of them: a model called every 30 s keeps its workers through the gaps, while one whose
//! traffic stopped is released soon after. It uses the policy API as a learning policy should:
//! stable key ids (relinked by name when a key comes back), the first arrival after a quiet
//! spell, bounded state per key, and evictions from the release count it saw.
//!
//! On the shared multi-tenant trace it is not better than a fixed keep-alive, and the example
//! says so with the figures; the built-in `hybrid-histogram` is the learning policy to use.
//!
//! Run with `cargo run --release --example custom_policy` (the comparison replays 12 h of
//! traffic five times; it is skipped when `../shared/traces` is absent).

#[path = "support/learned_keep_alive.rs"]
mod learned_keep_alive;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::sim::{simulate, ServiceModel, SimOptions, Summary, Trace, TraceFormat};
use poolwarden::{Lease, ManualClock, Pool, Scheduler, SpawnError, Worker};

struct Model;

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        1 << 30
    }
}

/// The policy table of the demo (also used in the comparison).
const POLICY: &str = r#"kind = "learned-keep-alive"
percentile = 0.9
floor = "20s"
ceiling = "5m""#;

const CONFIG: &str = r#"
[scheduler]
tick = "1s"

[pools.chat]
max_workers_per_model = 2
"#;

/// The functions preset without its policy: one worker per key, no limit on requests in
/// flight, no load time, tick 1 s.
const FUNCTIONS: &str = r#"
[scheduler]
tick = "1s"

[pools.default]
max_workers_per_model = 1
max_in_flight_per_worker = 16777215
"#;

fn main() {
    // 1. Register the kind next to the built-ins.
    let mut registry = PolicyRegistry::new();
    learned_keep_alive::register(&mut registry);

    // 2. Operators select it in TOML.
    let text = format!("{CONFIG}\n[policy]\n{POLICY}\n");
    let config = Config::from_toml(&text, "custom.toml", &registry).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    println!("policy: {}", config.policy.describe(&registry));

    // 3. Run it under a manual clock.
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("chat", |_key: &str| Ok::<_, SpawnError>(Model))
        .clock(clock.clone())
        .max_workers_per_model(config.pools["chat"].max_workers_per_model)
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .tick(config.scheduler.tick)
        .policy(config.default_policy(&registry).expect("validated at load"))
        .build();
    scheduler.register(&pool);

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

    // 4. Judge it against the baselines on real traffic before trusting it.
    compare(&registry);
}

/// Replays the shared multi-tenant trace (when it is here) with fixed keep-alives, this policy
/// and `hybrid-histogram`, and says plainly where this policy stands.
fn compare(registry: &PolicyRegistry) {
    let path = Path::new("../shared/traces/azure-functions-2019/functions-675.csv");
    if !path.exists() {
        println!("(no {}: no comparison on real traffic)", path.display());
        return;
    }
    let trace = Trace::load(path, TraceFormat::Native, None, ServiceModel::default())
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2);
        });
    // The first 12 h: the policies learn on 0–6 h and are measured over 6–12 h.
    let options = SimOptions {
        from: Some(Duration::from_secs(6 * 3600)),
        until: Some(Duration::from_secs(12 * 3600)),
        ..SimOptions::default()
    };
    let candidates = [
        ("keep-alive 1m", "kind = \"keep-alive\"\nttl = \"1m\""),
        ("keep-alive 5m", "kind = \"keep-alive\"\nttl = \"5m\""),
        ("keep-alive 1h", "kind = \"keep-alive\"\nttl = \"1h\""),
        ("learned-keep-alive", POLICY),
        ("hybrid-histogram", "kind = \"hybrid-histogram\""),
    ];
    let mut runs = Vec::new();
    for (label, policy) in candidates {
        let text = format!("{FUNCTIONS}\n[policy]\n{policy}\n");
        let config = Config::from_toml(&text, label, registry).expect("valid");
        let mut run =
            simulate(&config, registry, &config.policy, &trace, &options, None).expect("replay");
        run.policy = label.to_string();
        runs.push(run);
    }
    println!("\n{} over 6-12 h (policies run from 0):", path.display());
    println!(
        "{:<20} {:>12} {:>18} {:>18}",
        "policy", "cold starts", "per-key p75 (%)", "idle worker-hours"
    );
    for run in &runs {
        let s = &run.summary;
        println!(
            "{:<20} {:>11.2}% {:>18.1} {:>18.0}",
            run.policy,
            100.0 * s.cold_starts as f64 / s.requests.max(1) as f64,
            s.key_cold_start_pct_p75,
            s.idle_worker_hours
        );
    }
    // Against keep-alive at its ceiling (the same policy without learning), on all three axes.
    let (mine, fixed) = (&runs[3].summary, &runs[1].summary);
    let cold = |s: &Summary| s.cold_starts as f64 / s.requests.max(1) as f64;
    println!(
        "learned-keep-alive against keep-alive 5m (its ceiling, without learning): {:+.0} % idle worker-hours, {:.1}x the cold starts, per-key p75 {:.1} against {:.1}.",
        100.0 * (mine.idle_worker_hours / fixed.idle_worker_hours.max(f64::MIN_POSITIVE) - 1.0),
        cold(mine) / cold(fixed).max(f64::MIN_POSITIVE),
        mine.key_cold_start_pct_p75,
        fixed.key_cold_start_pct_p75
    );
    let better = cold(mine) <= cold(fixed)
        && mine.key_cold_start_pct_p75 <= fixed.key_cold_start_pct_p75
        && mine.idle_worker_hours <= fixed.idle_worker_hours;
    if better {
        println!("It is better than fixed keep-alive on every axis here.");
    } else {
        println!(
            "It is not better than fixed keep-alive: a demonstration of the policy API, not a policy to deploy; the built-in hybrid-histogram is the learning policy to use."
        );
    }
}
