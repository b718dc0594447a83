//! `keep-alive`: the fixed keep-alive of Ollama and llama-swap, as a baseline.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{after, idle_lru_first, InvalidParameter};
use crate::format_duration;
use crate::policy::EvictionPolicy;
use crate::proposal::{EvictionReason, Proposal};
use crate::snapshot::Snapshot;

/// Parameters of [`KeepAlive`] (`kind = "keep-alive"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepAliveConfig {
    /// How long a worker may stay idle before it is evicted. Default `"5m"` (Ollama's default).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Floor: never scale a key below this many workers. Default `0`.
    pub min_workers: usize,
}

impl Default for KeepAliveConfig {
    fn default() -> Self {
        KeepAliveConfig {
            ttl: Duration::from_secs(300),
            min_workers: 0,
        }
    }
}

/// Evicts each worker once it has been idle `ttl`, independently of its siblings. Per-model
/// overrides of `ttl` and `min_workers` apply.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    config: KeepAliveConfig,
}

impl KeepAlive {
    /// A policy with these parameters.
    pub fn new(config: KeepAliveConfig) -> Result<Self, InvalidParameter> {
        Ok(KeepAlive { config })
    }
}

impl EvictionPolicy for KeepAlive {
    fn name(&self) -> &str {
        "keep-alive"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        let now = snapshot.now;
        for (index, key) in snapshot.governed_keys() {
            let overrides = snapshot.overrides_of(key);
            let ttl = overrides.ttl.unwrap_or(self.config.ttl);
            let min_workers = overrides.min_workers.unwrap_or(self.config.min_workers);
            let mut removable = snapshot.workers_of(key).len().saturating_sub(min_workers);
            for worker in idle_lru_first(snapshot, key) {
                if removable == 0 || now < after(worker.last_used, ttl) {
                    break;
                }
                out.push(Proposal::evict(index, worker, EvictionReason::KeepAlive));
                removable -= 1;
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "keep-alive ttl={} min_workers={}",
            format_duration(self.config.ttl),
            self.config.min_workers
        )
    }
}
