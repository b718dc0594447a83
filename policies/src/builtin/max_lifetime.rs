//! `max-lifetime`: recycle workers after a lifetime, with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{after, invalid, InvalidParameter};
use crate::format_duration;
use crate::policy::EvictionPolicy;
use crate::proposal::{EvictionReason, Proposal};
use crate::snapshot::{Snapshot, WorkerView};

/// Parameters of [`MaxLifetime`] (`kind = "max-lifetime"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxLifetimeConfig {
    /// How long a worker may live. Default `"1h"`.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// Fraction in `[0, 1)` by which each worker's lifetime is shortened, spread evenly and
    /// deterministically across workers so they do not all expire together. Default `0.1`.
    pub jitter: f64,
}

impl Default for MaxLifetimeConfig {
    fn default() -> Self {
        MaxLifetimeConfig {
            lifetime: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }
}

/// Evicts idle workers older than their (jittered) lifetime. A busy worker waits until it is
/// idle; the next request spawns a fresh one. Ignores `min_workers`: recycling is the point.
#[derive(Debug, Clone)]
pub struct MaxLifetime {
    config: MaxLifetimeConfig,
}

impl MaxLifetime {
    /// A policy with these parameters; `jitter` must lie in `[0, 1)` and `lifetime` be non-zero.
    pub fn new(config: MaxLifetimeConfig) -> Result<Self, InvalidParameter> {
        if !(0.0..1.0).contains(&config.jitter) {
            return Err(invalid(
                "jitter",
                format!("must be in [0, 1), got {}", config.jitter),
            ));
        }
        if config.lifetime.is_zero() {
            return Err(invalid("lifetime", "must be greater than 0"));
        }
        Ok(MaxLifetime { config })
    }

    /// The lifetime of `worker` of the key named `key`, jitter applied.
    pub fn lifetime_of(&self, key: &str, worker: &WorkerView) -> Duration {
        // FNV-1a over the key and the worker id: a stable spread in [0, 1).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes().chain(worker.id.0.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        let spread = (hash >> 11) as f64 / (1u64 << 53) as f64;
        self.config
            .lifetime
            .mul_f64(1.0 - self.config.jitter * spread)
    }
}

impl EvictionPolicy for MaxLifetime {
    fn name(&self) -> &str {
        "max-lifetime"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        for (index, key) in snapshot.governed_keys() {
            for worker in snapshot.workers_of(key) {
                if worker.is_idle()
                    && snapshot.now >= after(worker.spawned_at, self.lifetime_of(&key.key, worker))
                {
                    out.push(Proposal::evict(index, worker, EvictionReason::MaxLifetime));
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "max-lifetime lifetime={} jitter={}",
            format_duration(self.config.lifetime),
            self.config.jitter
        )
    }
}
