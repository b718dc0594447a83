//! A policy written outside the library crates, registered by name, selected from TOML, and
//! shown evicting under a manual clock.
//!
//! `learned-keep-alive` learns each key's quiet periods (the time between the key going idle
//! and its next request) across ticks, and keeps a quiet key's workers only as long as the
//! chosen percentile of those periods: a model called every 30 s keeps its workers through the
//! gaps, while one whose traffic stopped is released soon after.
//!
//! Run with `cargo run --example custom_policy`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::policies::{EvictionPolicy, EvictionReason, InvalidParameter, Proposal, Snapshot};
use poolwarden::{Lease, ManualClock, Pool, Scheduler, SpawnError, Worker};
use serde::Deserialize;

/// Parameters of `learned-keep-alive`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnedKeepAliveConfig {
    /// Which percentile of the observed quiet periods to keep workers for (0, 1].
    #[serde(default = "default_percentile")]
    percentile: f64,
    /// Never keep a quiet key for less than this.
    #[serde(with = "humantime_serde", default = "default_floor")]
    floor: Duration,
    /// Never keep a quiet key for more than this (also the keep-alive before anything is learnt).
    #[serde(with = "humantime_serde", default = "default_ceiling")]
    ceiling: Duration,
}

fn default_percentile() -> f64 {
    0.9
}
fn default_floor() -> Duration {
    Duration::from_secs(10)
}
fn default_ceiling() -> Duration {
    Duration::from_secs(600)
}

/// What the policy remembers of one key between ticks.
#[derive(Default)]
struct KeyHistory {
    /// When the key last went quiet, if it is quiet now.
    quiet_since: Option<Duration>,
    /// Lengths of past quiet periods that ended in a request.
    gaps: Vec<Duration>,
}

struct LearnedKeepAlive {
    config: LearnedKeepAliveConfig,
    keys: HashMap<(Arc<str>, Arc<str>), KeyHistory>,
}

impl LearnedKeepAlive {
    fn new(config: LearnedKeepAliveConfig) -> Result<Self, InvalidParameter> {
        if !(config.percentile > 0.0 && config.percentile <= 1.0) {
            return Err(InvalidParameter::new("percentile", "must be in (0, 1]"));
        }
        if config.floor > config.ceiling {
            return Err(InvalidParameter::new("floor", "must not exceed ceiling"));
        }
        Ok(LearnedKeepAlive {
            config,
            keys: HashMap::new(),
        })
    }
}

/// How long a quiet key keeps its workers: the configured percentile of its past quiet periods,
/// clamped to [floor, ceiling]; the ceiling until one has been observed.
fn keep_alive(config: &LearnedKeepAliveConfig, history: &KeyHistory) -> Duration {
    if history.gaps.is_empty() {
        return config.ceiling;
    }
    let mut gaps = history.gaps.clone();
    gaps.sort_unstable();
    let rank = ((config.percentile * gaps.len() as f64).ceil() as usize).clamp(1, gaps.len());
    gaps[rank - 1].clamp(config.floor, config.ceiling)
}

impl EvictionPolicy for LearnedKeepAlive {
    fn name(&self) -> &str {
        "learned-keep-alive"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        for (index, key) in snapshot.governed_keys() {
            let workers = snapshot.workers_of(key);
            let pool = snapshot.pool_of(key).name.clone();
            let history = self.keys.entry((pool, key.key.clone())).or_default();
            let busy = workers.iter().any(|w| !w.is_idle());
            let quiet_since = workers.iter().map(|w| w.last_used).max();
            match (busy, history.quiet_since) {
                // A request ended a quiet period: learn its length.
                (true, Some(since)) => {
                    history.gaps.push(snapshot.now.saturating_sub(since));
                    history.quiet_since = None;
                }
                (false, _) => history.quiet_since = quiet_since,
                (true, None) => {}
            }
            let (Some(since), false) = (history.quiet_since, busy) else {
                continue;
            };
            if snapshot.now.saturating_sub(since) >= keep_alive(&self.config, history) {
                if let Some(victim) = workers.iter().min_by_key(|w| (w.last_used, w.id)) {
                    out.push(Proposal::new(
                        index,
                        victim.id,
                        EvictionReason::custom("learned-keep-alive"),
                    ));
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "learned-keep-alive percentile={} floor={} ceiling={}",
            self.config.percentile,
            poolwarden::policies::format_duration(self.config.floor),
            poolwarden::policies::format_duration(self.config.ceiling)
        )
    }
}

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
    // 1. Register the kind next to the built-ins.
    let mut registry = PolicyRegistry::new();
    registry.register("learned-keep-alive", |config: LearnedKeepAliveConfig| {
        Ok(Box::new(LearnedKeepAlive::new(config)?) as Box<dyn EvictionPolicy>)
    });

    // 2. Operators select it in TOML.
    let config = Config::from_toml(CONFIG, "custom.toml", &registry).unwrap_or_else(|e| {
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
}
