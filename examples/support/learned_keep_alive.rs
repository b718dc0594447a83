//! `learned-keep-alive`, a policy written outside the library crates, shared by
//! `examples/custom_policy.rs` and `examples/custom_cli.rs` (both include this file with
//! `#[path]`).
//!
//! It learns each key's quiet periods (the time between the key going idle and its next
//! request) across ticks, and keeps a quiet key's workers only as long as the chosen percentile
//! of those periods: a model called every 30 s keeps its workers through the gaps, while one
//! whose traffic stopped is released soon after.
//!
//! Its three parameters can be overridden per model: `[pools.X.models.K]` accepts
//! `percentile`, `floor` and `ceiling` for the pools it governs, because it is registered with
//! [`PolicyRegistry::register_with_models`] and its per-model struct has those fields.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use poolwarden::config::{PerModel, PolicyRegistry};
use poolwarden::policies::{
    format_duration, EvictionPolicy, EvictionReason, InvalidParameter, Proposal, Snapshot,
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

/// What the policy remembers of one key between ticks.
#[derive(Default)]
struct KeyHistory {
    /// When the key last went quiet, if it is quiet now.
    quiet_since: Option<Duration>,
    /// Lengths of past quiet periods that ended in a request.
    gaps: Vec<Duration>,
}

/// The policy.
pub struct LearnedKeepAlive {
    config: LearnedKeepAliveConfig,
    /// Each overridden model's parameters, overrides applied: pool → model → parameters.
    models: BTreeMap<String, BTreeMap<String, LearnedKeepAliveConfig>>,
    keys: HashMap<(Arc<str>, Arc<str>), KeyHistory>,
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
            keys: HashMap::new(),
        })
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
        KIND
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        for (index, key) in snapshot.governed_keys() {
            let workers = snapshot.workers_of(key);
            let pool = snapshot.pool_of(key).name.clone();
            let config = *self.config_of(&pool, &key.key);
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
            if snapshot.now.saturating_sub(since) >= keep_alive(&config, history) {
                if let Some(victim) = workers.iter().min_by_key(|w| (w.last_used, w.id)) {
                    out.push(Proposal::new(
                        index,
                        victim.id,
                        EvictionReason::custom(KIND),
                    ));
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
