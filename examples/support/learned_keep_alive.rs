//! `learned-keep-alive`, a policy written outside the library crates, shared by
//! `examples/custom_policy.rs` and `examples/custom_cli.rs` (both include this file with
//! `#[path]`).
//!
//! It learns each key's quiet periods (the time between the key going idle and its next
//! request, including requests that came and went between two ticks) across ticks, and keeps a
//! quiet key's workers only as long as the chosen percentile of the latest [`HISTORY`] of them:
//! a model called every 30 s keeps its workers through the gaps, while one whose traffic stopped
//! is released soon after. It uses the policy API as a learning policy should: stable key ids
//! (relinked by name when a key comes back), the first arrival after a quiet spell, bounded
//! state per key, work only when something is learnt, and evictions from the release count it
//! saw. On real multi-tenant traffic it is not better than a fixed keep-alive
//! (`examples/custom_policy.rs` shows the figures); the built-in `hybrid-histogram` is the
//! learning policy to use.
//!
//! Its three parameters can be overridden per model: `[pools.X.models.K]` accepts
//! `percentile`, `floor` and `ceiling` for the pools it governs, because it is registered with
//! [`PolicyRegistry::register_with_models`] and its per-model struct has those fields.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use poolwarden::config::{PerModel, PolicyRegistry};
use poolwarden::policies::{
    format_duration, EvictionPolicy, EvictionReason, InvalidParameter, KeyId, Proposal, Snapshot,
};
use serde::{Deserialize, Serialize};

/// The kind operators write: `kind = "learned-keep-alive"`.
pub const KIND: &str = "learned-keep-alive";

/// Parameters of `learned-keep-alive`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedKeepAliveConfig {
    /// Which percentile of the observed quiet periods to keep workers for (0, 1].
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// Never keep a quiet key for less than this.
    #[serde(with = "humantime_serde", default = "default_floor")]
    pub floor: Duration,
    /// Never keep a quiet key for more than this (also the keep-alive before anything is
    /// learnt).
    #[serde(with = "humantime_serde", default = "default_ceiling")]
    pub ceiling: Duration,
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

/// Per-model overrides of the three parameters (`[pools.X.models.K]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedKeepAliveModel {
    /// This model's percentile.
    #[serde(default)]
    pub percentile: Option<f64>,
    /// This model's floor.
    #[serde(default, with = "humantime_serde::option")]
    pub floor: Option<Duration>,
    /// This model's ceiling.
    #[serde(default, with = "humantime_serde::option")]
    pub ceiling: Option<Duration>,
}

impl LearnedKeepAliveConfig {
    /// These parameters with a model's overrides applied.
    fn with(self, model: &LearnedKeepAliveModel) -> Self {
        LearnedKeepAliveConfig {
            percentile: model.percentile.unwrap_or(self.percentile),
            floor: model.floor.unwrap_or(self.floor),
            ceiling: model.ceiling.unwrap_or(self.ceiling),
        }
    }

    fn validate(&self) -> Result<(), InvalidParameter> {
        if !(self.percentile > 0.0 && self.percentile <= 1.0) {
            return Err(InvalidParameter::new(
                "percentile",
                format!("must be in (0, 1], got {}", self.percentile),
            ));
        }
        if self.floor > self.ceiling {
            return Err(InvalidParameter::new(
                "floor",
                format!(
                    "must not exceed ceiling ({}), got {}",
                    format_duration(self.ceiling),
                    format_duration(self.floor)
                ),
            ));
        }
        Ok(())
    }
}

/// Quiet periods remembered per key: the latest ones, so that memory and work stay bounded.
pub const HISTORY: usize = 64;

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

/// The policy.
pub struct LearnedKeepAlive {
    config: LearnedKeepAliveConfig,
    /// Each overridden model's parameters, overrides applied: pool → model → parameters.
    models: BTreeMap<String, BTreeMap<String, LearnedKeepAliveConfig>>,
    /// Histories with their parameters, found by the key's stable id; a key that comes back
    /// under a new id is linked to its history by (pool, name) once.
    keys: Vec<(KeyHistory, LearnedKeepAliveConfig)>,
    by_id: HashMap<(usize, KeyId), usize>,
    by_name: HashMap<(usize, Arc<str>), usize>,
}

impl LearnedKeepAlive {
    /// A policy with these parameters and per-model overrides.
    pub fn new(
        config: LearnedKeepAliveConfig,
        models: PerModel<LearnedKeepAliveModel>,
    ) -> Result<Self, InvalidParameter> {
        config.validate()?;
        let mut resolved: BTreeMap<String, BTreeMap<String, LearnedKeepAliveConfig>> =
            BTreeMap::new();
        for (pool, model, overrides) in models.iter() {
            let own = config.with(overrides);
            own.validate()?;
            resolved
                .entry(pool.to_string())
                .or_default()
                .insert(model.to_string(), own);
        }
        Ok(LearnedKeepAlive {
            config,
            models: resolved,
            keys: Vec::new(),
            by_id: HashMap::new(),
            by_name: HashMap::new(),
        })
    }

    /// The history of key `id` (`name` in pool number `pool`, named `pool_name`), found by id,
    /// else linked by name (a hash of the name only when a key is new or came back).
    fn history(
        &mut self,
        pool: usize,
        pool_name: &str,
        id: KeyId,
        name: &Arc<str>,
    ) -> &mut (KeyHistory, LearnedKeepAliveConfig) {
        if let Some(&index) = self.by_id.get(&(pool, id)) {
            return &mut self.keys[index];
        }
        let next = self.keys.len();
        let index = *self.by_name.entry((pool, Arc::clone(name))).or_insert(next);
        if index == next {
            let config = *self.config_of(pool_name, name);
            self.keys.push((KeyHistory::default(), config));
        }
        let old = std::mem::replace(&mut self.keys[index].0.id, id);
        self.by_id.remove(&(pool, old));
        self.by_id.insert((pool, id), index);
        &mut self.keys[index]
    }

    /// The parameters in force for `model` of `pool`.
    pub fn config_of(&self, pool: &str, model: &str) -> &LearnedKeepAliveConfig {
        self.models
            .get(pool)
            .and_then(|models| models.get(model))
            .unwrap_or(&self.config)
    }
}

/// Registers `learned-keep-alive`, with its per-model keys, in `registry`.
pub fn register(registry: &mut PolicyRegistry) {
    registry.register_with_models(
        KIND,
        |config: LearnedKeepAliveConfig, models: PerModel<LearnedKeepAliveModel>| {
            Ok(Box::new(LearnedKeepAlive::new(config, models)?) as Box<dyn EvictionPolicy>)
        },
    );
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
        KIND
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        for (index, key) in snapshot.governed_keys() {
            let workers = snapshot.workers_of(key);
            let pool_name = snapshot.pool_of(key).name.clone();
            let (history, config) = self.history(key.pool, &pool_name, key.id, &key.key);
            // The first request after a quiet period ends it, even one that came and went
            // between two ticks: learn its length.
            if let (Some(arrived), Some(since)) = (key.first_arrival, history.quiet_since) {
                if history.gaps.len() == HISTORY {
                    history.gaps.pop_front();
                }
                history.gaps.push_back(arrived.saturating_sub(since));
                history.keep_alive = Some(keep_alive(config, &history.gaps));
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
                    out.push(Proposal::evict(index, victim, EvictionReason::custom(KIND)));
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{KIND} percentile={} floor={} ceiling={}",
            self.config.percentile,
            format_duration(self.config.floor),
            format_duration(self.config.ceiling)
        )
    }
}
