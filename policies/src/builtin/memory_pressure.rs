//! `memory-pressure`: free memory when usage crosses a high watermark, across every pool.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{after, invalid, InvalidParameter};
use crate::byte_size::ByteSize;
use crate::format_duration;
use crate::policy::EvictionPolicy;
use crate::proposal::{EvictionReason, Proposal};
use crate::snapshot::{KeyIndex, Snapshot, WorkerId, WorkerView};

/// Which idle worker goes first under memory pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VictimOrder {
    /// Least recently used first, across all pools (default).
    #[default]
    Lru,
    /// Largest memory footprint first (ties: least recently used).
    Largest,
}

/// Parameters of [`MemoryPressure`] (`kind = "memory-pressure"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryPressureConfig {
    /// Usage (used / limit) at or above which eviction starts. Default `0.90`.
    pub high: f64,
    /// Usage to bring the projected use down to, across as many ticks as it takes, once `high`
    /// was reached. Default `0.80`.
    pub low: f64,
    /// The memory limit to measure against. Default: none, so the probe's limit (the process's
    /// cgroup limit when one is set, else physical RAM). Required by the simulator.
    pub limit: Option<ByteSize>,
    /// Victim order. Default `"lru"`.
    pub order: VictimOrder,
    /// Most evictions in one tick. Default `4`.
    pub max_per_tick: usize,
    /// Never evict a worker idle for less than this. Default `"10s"`.
    #[serde(with = "humantime_serde")]
    pub min_idle: Duration,
    /// After evicting, wait this long for the freed memory to show in the readings before
    /// evicting again, unless at least half of it shows sooner. Default `"5s"`.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
}

impl Default for MemoryPressureConfig {
    fn default() -> Self {
        MemoryPressureConfig {
            high: 0.90,
            low: 0.80,
            limit: None,
            order: VictimOrder::Lru,
            max_per_tick: 4,
            min_idle: Duration::from_secs(10),
            settle: Duration::from_secs(5),
        }
    }
}

/// What the last round of evictions expects to see.
#[derive(Debug, Clone, Copy)]
struct Settling {
    /// When the round was proposed.
    at: Duration,
    /// Used bytes at or below which the freed memory counts as shown.
    shown_at_or_below: u64,
}

/// Evicts idle workers, least recently used first across **all** pools (or largest first),
/// once usage reaches `high`, until the projected usage (current use minus the freed
/// footprints) is at most `low`, at most `max_per_tick` per tick. The two watermarks form a
/// hysteresis: once started, eviction goes on at later ticks, even with usage back below
/// `high`, until the projected usage is at most `low`. Busy workers and workers idle for less
/// than `min_idle` are never chosen. An unknown memory reading means "do nothing". After a
/// round, it waits until half of the freed bytes show in the readings, or `settle` passes,
/// before evicting again: freed memory shows late, and evicting on a stale reading thrashes.
#[derive(Debug, Clone)]
pub struct MemoryPressure {
    config: MemoryPressureConfig,
    settling: Option<Settling>,
    /// Usage reached `high` and has not yet been brought down to `low`.
    relieving: bool,
    /// The victims of the round that was projected to reach `low`: (pool, worker). If one of
    /// them is still there at the next look (the pool kept it: it served a request since the
    /// snapshot), the relief is not over.
    unconfirmed: Vec<(usize, WorkerId)>,
    candidates: Vec<(KeyIndex, WorkerView)>,
}

impl MemoryPressure {
    /// A policy with these parameters; requires `0 < low < high <= 1` and `max_per_tick >= 1`.
    pub fn new(config: MemoryPressureConfig) -> Result<Self, InvalidParameter> {
        let fraction = |v: f64| v > 0.0 && v <= 1.0;
        if !fraction(config.high) {
            return Err(invalid(
                "high",
                format!("must be in (0, 1], got {}", config.high),
            ));
        }
        if !fraction(config.low) {
            return Err(invalid(
                "low",
                format!("must be in (0, 1], got {}", config.low),
            ));
        }
        if config.low >= config.high {
            return Err(invalid(
                "low",
                format!("must be below high ({}), got {}", config.high, config.low),
            ));
        }
        if config.max_per_tick == 0 {
            return Err(invalid("max_per_tick", "must be at least 1"));
        }
        if config.limit == Some(ByteSize(0)) {
            return Err(invalid("limit", "must be greater than 0"));
        }
        Ok(MemoryPressure {
            config,
            settling: None,
            relieving: false,
            unconfirmed: Vec::new(),
            candidates: Vec::new(),
        })
    }

    /// Its parameters.
    pub fn config(&self) -> &MemoryPressureConfig {
        &self.config
    }
}

impl EvictionPolicy for MemoryPressure {
    fn name(&self) -> &str {
        "memory-pressure"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        let Some(reading) = snapshot.memory else {
            return;
        };
        let limit = self.config.limit.map_or(reading.total, ByteSize::bytes);
        if limit == 0 || reading.total == 0 || reading.available > reading.total {
            return;
        }
        let used = reading.used();
        let now = snapshot.now;
        if let Some(settling) = self.settling {
            if used > settling.shown_at_or_below && now < after(settling.at, self.config.settle) {
                return;
            }
            self.settling = None;
        }
        let limit_f = limit as f64;
        let target = self.config.low * limit_f;
        if (used as f64) >= self.config.high * limit_f {
            self.relieving = true;
        }
        if !self.unconfirmed.is_empty() {
            // A victim of the last round that is still there was kept by its pool: go on.
            let kept = snapshot.keys.iter().any(|key| {
                snapshot
                    .workers_of(key)
                    .iter()
                    .any(|worker| self.unconfirmed.contains(&(key.pool, worker.id)))
            });
            self.unconfirmed.clear();
            if kept {
                self.relieving = true;
            }
        }
        if (used as f64) <= target {
            self.relieving = false;
        }
        if !self.relieving {
            return;
        }

        self.candidates.clear();
        for (index, key) in snapshot.keys.iter().enumerate() {
            for worker in snapshot.workers_of(key) {
                if worker.is_idle() && worker.idle_for(now) >= self.config.min_idle {
                    self.candidates.push((index, *worker));
                }
            }
        }
        match self.config.order {
            VictimOrder::Lru => self
                .candidates
                .sort_by_key(|(key, w)| (w.last_used, *key, w.id)),
            VictimOrder::Largest => self.candidates.sort_by_key(|(key, w)| {
                (std::cmp::Reverse(w.memory_bytes), w.last_used, *key, w.id)
            }),
        }

        let mut projected = used;
        let mut freed = 0u64;
        let mut proposed = 0usize;
        for (key, worker) in &self.candidates {
            if (projected as f64) <= target || proposed == self.config.max_per_tick {
                break;
            }
            out.push(Proposal::evict(
                *key,
                worker,
                EvictionReason::MemoryPressure,
            ));
            projected = projected.saturating_sub(worker.memory_bytes);
            freed = freed.saturating_add(worker.memory_bytes);
            proposed += 1;
        }
        if (projected as f64) <= target {
            // Done once these evictions land (checked at the next look); a later rise starts
            // again at `high`.
            self.relieving = false;
            let proposals = &out[out.len() - proposed..];
            self.unconfirmed.extend(
                proposals
                    .iter()
                    .map(|p| (snapshot.keys[p.key].pool, p.worker)),
            );
        }
        if proposed > 0 {
            self.settling = Some(Settling {
                at: now,
                shown_at_or_below: used.saturating_sub(freed / 2),
            });
        }
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "memory-pressure high={} low={} limit={} order={} max_per_tick={} min_idle={} settle={}",
            c.high,
            c.low,
            c.limit.map_or_else(|| "probe".to_string(), |l| l.to_string()),
            match c.order {
                VictimOrder::Lru => "lru",
                VictimOrder::Largest => "largest",
            },
            c.max_per_tick,
            format_duration(c.min_idle),
            format_duration(c.settle)
        )
    }
}
