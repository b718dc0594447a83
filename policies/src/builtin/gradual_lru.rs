//! `gradual-lru`: scale each key down one worker at a time once it has gone quiet.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{after, idle_lru_first, InvalidParameter};
use crate::format_duration;
use crate::policy::EvictionPolicy;
use crate::proposal::{EvictionReason, Proposal};
use crate::snapshot::Snapshot;

/// Parameters of [`GradualLru`] (`kind = "gradual-lru"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GradualLruConfig {
    /// How long every worker of a key must have been idle before the first eviction.
    /// Default `"1m"`.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Least time between two evictions of the same key. Default `"1m"`.
    #[serde(with = "humantime_serde")]
    pub step: Duration,
    /// Floor: never scale a key below this many workers. Default `0` (scale to zero).
    pub min_workers: usize,
}

impl Default for GradualLruConfig {
    fn default() -> Self {
        GradualLruConfig {
            idle: Duration::from_secs(60),
            step: Duration::from_secs(60),
            min_workers: 0,
        }
    }
}

/// Evicts one least-recently-used worker of a key when **every** worker of the key has been
/// idle at least `idle` and at least `step` has passed since the key's previous eviction.
///
/// A request restarts the key's idle clock, so after any traffic the scale-down starts over:
/// the next eviction comes `idle` after the key goes quiet again. The tick only decides how
/// often we look; the cadence of scale-down is `step`, whatever the tick. Per-model overrides
/// of `idle`, `step` and `min_workers` apply.
#[derive(Debug, Clone)]
pub struct GradualLru {
    config: GradualLruConfig,
}

impl GradualLru {
    /// A policy with these parameters.
    pub fn new(config: GradualLruConfig) -> Result<Self, InvalidParameter> {
        Ok(GradualLru { config })
    }

    /// Its parameters.
    pub fn config(&self) -> &GradualLruConfig {
        &self.config
    }
}

impl EvictionPolicy for GradualLru {
    fn name(&self) -> &str {
        "gradual-lru"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        let now = snapshot.now;
        for (index, key) in snapshot.governed_keys() {
            let overrides = snapshot.overrides_of(key);
            let min_workers = overrides.min_workers.unwrap_or(self.config.min_workers);
            let workers = snapshot.workers_of(key);
            if workers.len() <= min_workers || key.starting > 0 {
                continue;
            }
            if workers.iter().any(|w| !w.is_idle()) {
                continue;
            }
            let Some(quiet_since) = workers.iter().map(|w| w.last_used).max() else {
                continue;
            };
            let idle = overrides.idle.unwrap_or(self.config.idle);
            if now < after(quiet_since, idle) {
                continue;
            }
            let step = overrides.step.unwrap_or(self.config.step);
            if key.last_eviction.is_some_and(|at| now < after(at, step)) {
                continue;
            }
            if let Some(victim) = idle_lru_first(snapshot, key).first() {
                out.push(Proposal::evict(index, victim, EvictionReason::Idle));
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "gradual-lru idle={} step={} min_workers={}",
            format_duration(self.config.idle),
            format_duration(self.config.step),
            self.config.min_workers
        )
    }
}
