//! A policy written outside the library crates, registered by name, selected from TOML, and
//! shown evicting under a manual clock, then judged against the baselines on real traffic.
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

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::policies::{
    EvictionPolicy, EvictionReason, InvalidParameter, KeyId, Proposal, Snapshot,
};
use poolwarden::sim::{simulate, ServiceModel, SimOptions, Summary, Trace, TraceFormat};
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

/// Quiet periods remembered per key: the latest ones, so that memory and work stay bounded.
const HISTORY: usize = 64;

/// What the policy remembers of one key between ticks.
#[derive(Default)]
struct KeyHistory {
    /// The key's id when last seen.
    id: KeyId,
    /// When the key last went quiet (its last request finished); kept after its last worker
    /// goes, so that the next request still ends the quiet period.
    quiet_since: Option<Duration>,
    /// The latest quiet periods that ended in a request, oldest first.
    gaps: VecDeque<Duration>,
    /// The keep-alive they give, recomputed when one is added (not every tick).
    keep_alive: Option<Duration>,
}

struct LearnedKeepAlive {
    config: LearnedKeepAliveConfig,
    /// Histories, found by the key's stable id; a key that comes back under a new id is linked
    /// to its history by (pool, name) once.
    keys: Vec<KeyHistory>,
    by_id: HashMap<(usize, KeyId), usize>,
    by_name: HashMap<(usize, Arc<str>), usize>,
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
            keys: Vec::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
        })
    }

    fn history(&mut self, pool: usize, id: KeyId, name: &Arc<str>) -> &mut KeyHistory {
        if let Some(&index) = self.by_id.get(&(pool, id)) {
            return &mut self.keys[index];
        }
        let next = self.keys.len();
        let index = *self.by_name.entry((pool, Arc::clone(name))).or_insert(next);
        if index == next {
            self.keys.push(KeyHistory::default());
        }
        let old = std::mem::replace(&mut self.keys[index].id, id);
        self.by_id.remove(&(pool, old));
        self.by_id.insert((pool, id), index);
        &mut self.keys[index]
    }
}

/// How long a quiet key keeps its workers: the configured percentile of its past quiet periods,
/// clamped to [floor, ceiling]; the ceiling until one has been observed.
fn keep_alive(config: &LearnedKeepAliveConfig, gaps: &VecDeque<Duration>) -> Duration {
    if gaps.is_empty() {
        return config.ceiling;
    }
    let mut sorted: Vec<Duration> = gaps.iter().copied().collect();
    sorted.sort_unstable();
    let rank = ((config.percentile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].clamp(config.floor, config.ceiling)
}

impl EvictionPolicy for LearnedKeepAlive {
    fn name(&self) -> &str {
        "learned-keep-alive"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        let config = self.config.clone();
        for (index, key) in snapshot.governed_keys() {
            let workers = snapshot.workers_of(key);
            let history = self.history(key.pool, key.id, &key.key);
            // The first request after a quiet period ends it, even one that came and went
            // between two ticks: learn its length.
            if let (Some(arrived), Some(since)) = (key.first_arrival, history.quiet_since) {
                if history.gaps.len() == HISTORY {
                    history.gaps.pop_front();
                }
                history.gaps.push_back(arrived.saturating_sub(since));
                history.keep_alive = Some(keep_alive(&config, &history.gaps));
                history.quiet_since = None;
            }
            let busy = workers.iter().any(|w| !w.is_idle());
            if busy {
                history.quiet_since = None;
            } else if key.arrivals > 0 || history.quiet_since.is_none() {
                if let Some(last) = workers.iter().map(|w| w.last_used).max() {
                    history.quiet_since = Some(last);
                }
            }
            let (Some(since), false) = (history.quiet_since, busy) else {
                continue;
            };
            let keep = history.keep_alive.unwrap_or(config.ceiling);
            if snapshot.now.saturating_sub(since) >= keep {
                if let Some(victim) = workers.iter().min_by_key(|w| (w.last_used, w.id)) {
                    out.push(Proposal::evict(
                        index,
                        victim,
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
    registry.register("learned-keep-alive", |config: LearnedKeepAliveConfig| {
        Ok(Box::new(LearnedKeepAlive::new(config)?) as Box<dyn EvictionPolicy>)
    });

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
