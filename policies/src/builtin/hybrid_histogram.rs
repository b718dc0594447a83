//! `hybrid-histogram`: the hybrid histogram policy of Shahrad et al. (see [`HybridHistogram`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{after, invalid, InvalidParameter};
use crate::format_duration;
use crate::policy::EvictionPolicy;
use crate::proposal::{EvictionReason, Prewarm, Proposal};
use crate::snapshot::{KeyId, KeyView, ModelOverrides, Snapshot, WorkerId, WorkerView};

/// Most bins a histogram may have (`range / bin_width`).
pub const MAX_BINS: u64 = 100_000;

/// Parameters of [`HybridHistogram`] (`kind = "hybrid-histogram"`). The defaults are the
/// paper's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HybridHistogramConfig {
    /// The histogram's range: idle times longer than this are counted as out of bounds.
    /// Default `"4h"`.
    #[serde(with = "humantime_serde")]
    pub range: Duration,
    /// Width of one bin of the histogram. Default `"1m"`.
    #[serde(with = "humantime_serde")]
    pub bin_width: Duration,
    /// Percentile of the idle times (0–100) taken as the head: when to have the workers back
    /// after the key went idle. Default `5`.
    pub head_percentile: f64,
    /// Percentile of the idle times (0–100) taken as the tail: until when to keep them.
    /// Default `99`.
    pub tail_percentile: f64,
    /// Safety margin, a fraction in [0, 1): the pre-warm comes this much earlier than the head
    /// (the lower edge of its bin), and the workers stay this much longer than the tail (the
    /// upper edge of its bin). Default `0.1`.
    pub margin: f64,
    /// Fewest idle times in range before the histogram is trusted; until then the fallback
    /// keep-alive applies. Default `10`.
    pub min_samples: u32,
    /// Least coefficient of variation (standard deviation over mean) of the bin counts for the
    /// histogram to count as representative: evenly spread idle times carry no pattern. Default
    /// `2`.
    pub cv_threshold: f64,
    /// Keep-alive while the histogram is not representative. Default `"4h"`, the range.
    #[serde(with = "humantime_serde")]
    pub fallback_keep_alive: Duration,
    /// Margin, a fraction in [0, 1), either side of the forecast of an idle time beyond the
    /// range: the pre-warm comes this much before it, the workers stay this much after.
    /// Default `0.15` (the paper's margin for its ARIMA forecasts).
    pub forecast_margin: f64,
    /// Floor: never scale a key below this many workers. Default `0`.
    pub min_workers: usize,
}

impl Default for HybridHistogramConfig {
    fn default() -> Self {
        HybridHistogramConfig {
            range: Duration::from_secs(4 * 3600),
            bin_width: Duration::from_secs(60),
            head_percentile: 5.0,
            tail_percentile: 99.0,
            margin: 0.1,
            min_samples: 10,
            cv_threshold: 2.0,
            fallback_keep_alive: Duration::from_secs(4 * 3600),
            forecast_margin: 0.15,
            min_workers: 0,
        }
    }
}

impl HybridHistogramConfig {
    /// The parameters for one key: these, with the key's per-model overrides applied
    /// (`[pools.NAME.models.KEY]`: `ttl` replaces `fallback_keep_alive`, `min_workers` the
    /// floor).
    pub fn for_key(&self, overrides: &ModelOverrides) -> HybridHistogramConfig {
        HybridHistogramConfig {
            fallback_keep_alive: overrides.ttl.unwrap_or(self.fallback_keep_alive),
            min_workers: overrides.min_workers.unwrap_or(self.min_workers),
            ..*self
        }
    }

    fn bins(&self) -> usize {
        let width = self.bin_width.as_nanos().max(1);
        usize::try_from(self.range.as_nanos().div_ceil(width)).unwrap_or(usize::MAX)
    }
}

/// The idle times of one key: counts per bin, and how many fell beyond the range.
#[derive(Debug, Clone)]
struct Histogram {
    bins: Box<[u32]>,
    /// Idle times in range.
    total: u64,
    /// Sum of the squared bin counts (for the coefficient of variation).
    squares: u64,
    /// Idle times beyond the range.
    out_of_bounds: u64,
}

impl Histogram {
    fn new(bins: usize) -> Self {
        Histogram {
            bins: vec![0; bins.max(1)].into_boxed_slice(),
            total: 0,
            squares: 0,
            out_of_bounds: 0,
        }
    }

    /// Counts one idle time; false when it is beyond the range.
    fn add(&mut self, idle: Duration, width: Duration) -> bool {
        let bin = idle.as_nanos() / width.as_nanos().max(1);
        match usize::try_from(bin).ok().filter(|b| *b < self.bins.len()) {
            Some(bin) => {
                if self.bins[bin] == u32::MAX {
                    self.halve();
                }
                let count = u64::from(self.bins[bin]);
                self.squares += 2 * count + 1;
                self.bins[bin] += 1;
                self.total += 1;
                true
            }
            None => {
                self.out_of_bounds += 1;
                false
            }
        }
    }

    /// Halves every count (rounding up), so that counts stay bounded; the shape is kept.
    fn halve(&mut self) {
        self.total = 0;
        self.squares = 0;
        for count in self.bins.iter_mut() {
            *count = count.div_ceil(2);
            self.total += u64::from(*count);
            self.squares += u64::from(*count) * u64::from(*count);
        }
        self.out_of_bounds = self.out_of_bounds.div_ceil(2);
    }

    /// Coefficient of variation of the bin counts (sample standard deviation over mean).
    fn cv(&self) -> f64 {
        let n = self.bins.len() as f64;
        if self.total == 0 || n < 2.0 {
            return 0.0;
        }
        let mean = self.total as f64 / n;
        let variance = (self.squares as f64 - n * mean * mean).max(0.0) / (n - 1.0);
        variance.sqrt() / mean
    }

    /// The first bin at which the cumulative count reaches `percentile` % of the total.
    fn percentile_bin(&self, percentile: f64) -> usize {
        let wanted = (percentile / 100.0 * self.total as f64).max(1.0);
        let mut seen = 0u64;
        for (bin, count) in self.bins.iter().enumerate() {
            seen += u64::from(*count);
            if seen as f64 >= wanted {
                return bin;
            }
        }
        self.bins.len() - 1
    }
}

/// What to do with a key while it is idle, measured from the moment it went idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Windows {
    /// Keep the workers this long (zero: unload them at once).
    keep: Duration,
    /// Then have them back from the first time until the second (a pre-warm).
    prewarm: Option<(Duration, Duration)>,
}

impl Windows {
    /// How long an idle worker of a busy key is kept, and until when a pre-warmed one is.
    fn hold(&self) -> Duration {
        self.prewarm
            .map_or(self.keep, |(_, until)| until.max(self.keep))
    }
}

fn windows(
    histogram: Option<&Histogram>,
    forecast: Option<Duration>,
    config: &HybridHistogramConfig,
) -> Windows {
    let around = forecast.map(|f| {
        (
            f.mul_f64(1.0 - config.forecast_margin),
            f.mul_f64(1.0 + config.forecast_margin),
        )
    });
    let (total, out_of_bounds) = histogram.map_or((0, 0), |h| (h.total, h.out_of_bounds));
    if out_of_bounds > total {
        if let Some(around) = around {
            // Mostly beyond the range: unload, and pre-warm for the forecast.
            return Windows {
                keep: Duration::ZERO,
                prewarm: Some(around),
            };
        }
    }
    let representative = histogram
        .filter(|h| h.total >= u64::from(config.min_samples) && h.cv() >= config.cv_threshold);
    let Some(h) = representative else {
        // The fallback keep-alive, then a pre-warm for the forecast if there is one.
        let keep = config.fallback_keep_alive;
        return match around {
            Some((from, until)) if from > keep => Windows {
                keep,
                prewarm: Some((from, until)),
            },
            Some((_, until)) => Windows {
                keep: keep.max(until),
                prewarm: None,
            },
            None => Windows {
                keep,
                prewarm: None,
            },
        };
    };
    let head = h.percentile_bin(config.head_percentile);
    let tail = h.percentile_bin(config.tail_percentile).max(head);
    let width = config.bin_width.as_secs_f64();
    let from = Duration::from_secs_f64(head as f64 * width * (1.0 - config.margin));
    let until = Duration::from_secs_f64((tail + 1) as f64 * width * (1.0 + config.margin));
    if from.is_zero() {
        Windows {
            keep: until,
            prewarm: None,
        }
    } else {
        Windows {
            keep: Duration::ZERO,
            prewarm: Some((from, until)),
        }
    }
}

/// What the policy remembers of one key.
#[derive(Debug)]
struct KeyState {
    pool: usize,
    id: KeyId,
    histogram: Option<Box<Histogram>>,
    /// Forecast of the next idle time beyond the range.
    forecast: Option<Duration>,
    windows: Windows,
    /// A request was in flight (or arrived) at the last look, and no idle spell has begun.
    active: bool,
    /// When the key's last request finished, while it is idle.
    idle_since: Option<Duration>,
    /// Workers the key had when it went idle: how many to pre-warm.
    wanted: usize,
    /// When the pending pre-warm wants the workers ready.
    prewarm_at: Option<Duration>,
    /// Workers a pre-warm brought that no request has used yet.
    prewarmed: Vec<WorkerId>,
    /// The highest worker id seen on this key (ids only grow within a pool).
    newest_worker: WorkerId,
}

/// A hasher for key ids, which are small distinct integers: one multiply.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type IdMap<V> = HashMap<(usize, KeyId), V, BuildHasherDefault<IdHasher>>;

/// `hybrid-histogram`: the hybrid histogram policy of Shahrad et al., "Serverless in the Wild:
/// Characterizing and Optimizing the Serverless Workload at a Large Cloud Provider" (USENIX
/// ATC 2020), on poolwarden's snapshots.
///
/// Per key it learns the distribution of *idle times*: from the moment the key's last request
/// finished (nothing left in flight) to the next request. From a range-limited histogram of
/// them (1-minute bins up to 4 hours by default) it takes a head (5th percentile) and a tail
/// (99th percentile):
///
/// - If the head is above zero, the key's workers are unloaded as soon as it goes idle, and a
///   pre-warm brings them back a margin before the head; they are then kept until a margin
///   after the tail.
/// - If the head is zero, nothing is unloaded early; the workers are kept until a margin after
///   the tail.
/// - While the histogram is not representative (fewer idle times in range than `min_samples`,
///   or bin counts too even: their coefficient of variation below `cv_threshold`), it falls
///   back to a fixed keep-alive.
/// - Idle times beyond the range are forecast instead, as the paper does with ARIMA: here by
///   an exponentially weighted mean of those idle times (the newest weighs half). When most of
///   a key's idle times are beyond the range, its workers are unloaded as soon as it goes idle
///   and pre-warmed for the forecast, `forecast_margin` either side of it. When some are, the
///   fallback keep-alive is followed by such a pre-warm.
///
/// The state per key is one histogram of `range / bin_width` counters (allocated at the first
/// idle time) and a few fields; the work per tick is one look at each key, plus one pass over a
/// key's bins when it learns a new idle time, so it does not grow with the history.
/// It remembers every key it has seen, also once the pool has forgotten it (a key that comes
/// back keeps its history), so its memory grows with the number of distinct keys.
///
/// Per-model overrides of `ttl` (the fallback keep-alive) and `min_workers` apply.
#[derive(Debug)]
pub struct HybridHistogram {
    config: HybridHistogramConfig,
    states: Vec<KeyState>,
    /// (pool, key id) → index in `states`, for the ids seen at their latest look.
    by_id: IdMap<usize>,
    /// (pool, key name) → index in `states`: links a key that comes back under a new id.
    by_name: HashMap<(usize, Arc<str>), usize>,
    /// This tick's pre-warm proposals, handed out by `prewarm`.
    prewarms: Vec<Prewarm>,
    idle: Vec<WorkerView>,
}

impl HybridHistogram {
    /// A policy with these parameters; requires `0 < bin_width <= range`, at most
    /// 100,000 bins, `0 <= head_percentile <= tail_percentile <= 100`, `margin` and
    /// `forecast_margin` in [0, 1), `min_samples >= 1` and a finite `cv_threshold >= 0`.
    pub fn new(config: HybridHistogramConfig) -> Result<Self, InvalidParameter> {
        if config.bin_width.is_zero() {
            return Err(invalid("bin_width", "must be greater than 0"));
        }
        if config.range < config.bin_width {
            return Err(invalid(
                "range",
                format!(
                    "must be at least bin_width ({}), got {}",
                    format_duration(config.bin_width),
                    format_duration(config.range)
                ),
            ));
        }
        if config.bins() as u64 > MAX_BINS {
            return Err(invalid(
                "bin_width",
                format!(
                    "range / bin_width must be at most {MAX_BINS} bins, got {}",
                    config.bins()
                ),
            ));
        }
        let percent = |v: f64| (0.0..=100.0).contains(&v);
        if !percent(config.head_percentile) {
            return Err(invalid(
                "head_percentile",
                format!("must be in [0, 100], got {}", config.head_percentile),
            ));
        }
        if !percent(config.tail_percentile) {
            return Err(invalid(
                "tail_percentile",
                format!("must be in [0, 100], got {}", config.tail_percentile),
            ));
        }
        if config.head_percentile > config.tail_percentile {
            return Err(invalid(
                "head_percentile",
                format!(
                    "must not exceed tail_percentile ({}), got {}",
                    config.tail_percentile, config.head_percentile
                ),
            ));
        }
        if !(0.0..1.0).contains(&config.margin) {
            return Err(invalid(
                "margin",
                format!("must be in [0, 1), got {}", config.margin),
            ));
        }
        if !(0.0..1.0).contains(&config.forecast_margin) {
            return Err(invalid(
                "forecast_margin",
                format!("must be in [0, 1), got {}", config.forecast_margin),
            ));
        }
        if config.min_samples == 0 {
            return Err(invalid("min_samples", "must be at least 1"));
        }
        if !(config.cv_threshold.is_finite() && config.cv_threshold >= 0.0) {
            return Err(invalid(
                "cv_threshold",
                format!("must be a finite number >= 0, got {}", config.cv_threshold),
            ));
        }
        Ok(HybridHistogram {
            config,
            states: Vec::new(),
            by_id: IdMap::default(),
            by_name: HashMap::new(),
            prewarms: Vec::new(),
            idle: Vec::new(),
        })
    }

    /// Its parameters.
    pub fn config(&self) -> &HybridHistogramConfig {
        &self.config
    }

    /// The state of `key`, found by its id, else by its name (a key that came back under a
    /// new id), else new (with `config`, the key's parameters).
    fn state_of(&mut self, key: &KeyView, config: &HybridHistogramConfig) -> usize {
        if let Some(&index) = self.by_id.get(&(key.pool, key.id)) {
            return index;
        }
        let index = match self.by_name.get(&(key.pool, Arc::clone(&key.key))) {
            Some(&index) => {
                let state = &mut self.states[index];
                self.by_id.remove(&(state.pool, state.id));
                state.id = key.id;
                index
            }
            None => {
                let index = self.states.len();
                self.states.push(KeyState {
                    pool: key.pool,
                    id: key.id,
                    histogram: None,
                    forecast: None,
                    windows: windows(None, None, config),
                    active: false,
                    idle_since: None,
                    wanted: 1,
                    prewarm_at: None,
                    prewarmed: Vec::new(),
                    newest_worker: WorkerId(0),
                });
                self.by_name.insert((key.pool, Arc::clone(&key.key)), index);
                index
            }
        };
        self.by_id.insert((key.pool, key.id), index);
        index
    }

    fn look(
        &mut self,
        snapshot: &Snapshot<'_>,
        index: usize,
        key: &KeyView,
        out: &mut Vec<Proposal>,
    ) {
        let now = snapshot.now;
        let workers = snapshot.workers_of(key);
        let config = self.config.for_key(&snapshot.overrides_of(key));
        let slot = self.state_of(key, &config);
        let state = &mut self.states[slot];

        // A worker that appeared since the last look, ready no earlier than our pending
        // pre-warm asked, and that never served a request, came from that pre-warm. The pool
        // counts the lease a new worker is created with as an arrival; that one is no
        // request. (A worker ready before then was spawned for a request that came early.)
        // The pending pre-warm is then consumed.
        let mut phantom = 0u64;
        let newest_before = state.newest_worker;
        let pending = state.prewarm_at;
        for worker in workers {
            if worker.id > newest_before {
                state.newest_worker = state.newest_worker.max(worker.id);
                let from_prewarm = pending.is_some_and(|at| worker.spawned_at >= at);
                if from_prewarm && worker.in_flight == 0 && worker.releases <= 1 {
                    phantom += worker.releases;
                    state.prewarmed.push(worker.id);
                    state.prewarm_at = None;
                }
            }
        }
        // A pre-warm that never came (the key already had its workers) is over with the
        // spell's keep-alive.
        if let (Some(_), Some(since)) = (state.prewarm_at, state.idle_since) {
            if now >= after(since, state.windows.hold()) {
                state.prewarm_at = None;
            }
        }
        let arrivals = key.arrivals.saturating_sub(phantom);
        let in_flight = workers.iter().any(|w| w.in_flight > 0) || key.waiting > 0;

        if arrivals > 0 {
            if let Some(since) = state.idle_since.take() {
                let came = key.first_arrival.unwrap_or(now).max(since);
                let bins = config.bins();
                let histogram = state
                    .histogram
                    .get_or_insert_with(|| Box::new(Histogram::new(bins)));
                let idle = came - since;
                if !histogram.add(idle, config.bin_width) {
                    state.forecast = Some(match state.forecast {
                        Some(previous) => (previous + idle) / 2,
                        None => idle,
                    });
                }
                state.windows = windows(state.histogram.as_deref(), state.forecast, &config);
            }
            if state.prewarm_at.take().is_some() {
                // Came before the pre-warm: cancel it.
                self.prewarms.push(Prewarm {
                    pool: key.pool,
                    key: Arc::clone(&key.key),
                    workers: 0,
                    at: now,
                });
            }
            state.prewarmed.clear();
            state.active = true;
        }
        if in_flight {
            state.active = true;
            state.idle_since = None;
        } else if state.active {
            // The last request finished since the last look: an idle spell begins.
            state.active = false;
            let since = workers.iter().map(|w| w.last_used).max().unwrap_or(now);
            state.idle_since = Some(since);
            state.wanted = workers
                .len()
                .clamp(1, snapshot.pool_of(key).max_workers_per_model.max(1));
            if let Some((from, _)) = state.windows.prewarm {
                let at = after(since, from);
                state.prewarm_at = Some(at);
                self.prewarms.push(Prewarm {
                    pool: key.pool,
                    key: Arc::clone(&key.key),
                    workers: state.wanted,
                    at,
                });
            }
        }

        let mut removable = workers.len().saturating_sub(config.min_workers);
        if removable == 0 {
            return;
        }
        let windows = state.windows;
        let idle_since = state.idle_since;
        self.idle.clear();
        self.idle
            .extend(workers.iter().filter(|w| w.is_idle()).copied());
        if self.idle.len() > 1 {
            self.idle.sort_by_key(|w| (w.last_used, w.id));
        }
        let state = &self.states[slot];
        for worker in &self.idle {
            if removable == 0 {
                break;
            }
            let (deadline, reason) = match idle_since {
                // Brought by a pre-warm for this idle spell: kept to the window's end.
                Some(since) if state.prewarmed.contains(&worker.id) => {
                    (after(since, windows.hold()), EvictionReason::KeepAlive)
                }
                // The key is idle: keep-alive, or unload at once (`keep` zero).
                Some(_) => {
                    let reason = if windows.keep.is_zero() {
                        EvictionReason::Idle
                    } else {
                        EvictionReason::KeepAlive
                    };
                    (after(worker.last_used, windows.keep), reason)
                }
                // A surplus worker of a busy key.
                None => (
                    after(worker.last_used, windows.hold()),
                    EvictionReason::KeepAlive,
                ),
            };
            if now >= deadline {
                out.push(Proposal::evict(index, worker, reason));
                removable -= 1;
            }
        }
    }
}

impl EvictionPolicy for HybridHistogram {
    fn name(&self) -> &str {
        "hybrid-histogram"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        self.prewarms.clear();
        for (index, key) in snapshot.governed_keys() {
            self.look(snapshot, index, key, out);
        }
    }

    fn prewarm(&mut self, _snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        out.append(&mut self.prewarms);
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "hybrid-histogram range={} bin_width={} head_percentile={} tail_percentile={} margin={} min_samples={} cv_threshold={} fallback_keep_alive={} forecast_margin={} min_workers={}",
            format_duration(c.range),
            format_duration(c.bin_width),
            c.head_percentile,
            c.tail_percentile,
            c.margin,
            c.min_samples,
            c.cv_threshold,
            format_duration(c.fallback_keep_alive),
            c.forecast_margin,
            c.min_workers
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HybridHistogramConfig {
        HybridHistogramConfig::default()
    }

    #[test]
    fn percentiles_take_the_bin_where_the_count_is_reached() {
        let mut h = Histogram::new(240);
        let minute = Duration::from_secs(60);
        for m in [10u64, 10, 10, 11, 12, 12, 12, 12, 30, 30] {
            h.add(Duration::from_secs(m * 60 + 5), minute);
        }
        assert_eq!(h.percentile_bin(5.0), 10);
        assert_eq!(h.percentile_bin(50.0), 12);
        assert_eq!(h.percentile_bin(99.0), 30);
        h.add(Duration::from_secs(5 * 3600), minute);
        assert_eq!((h.total, h.out_of_bounds), (10, 1));
    }

    #[test]
    fn the_cv_is_kept_exactly_as_counts_grow() {
        let mut h = Histogram::new(4);
        let second = Duration::from_secs(1);
        for s in [0u64, 0, 0, 1] {
            h.add(Duration::from_secs(s), second);
        }
        // Counts 3, 1, 0, 0: mean 1, sample variance (4 + 0 + 1 + 1) / 3 = 2.
        assert!((h.cv() - 2f64.sqrt()).abs() < 1e-12);
        h.halve();
        assert_eq!(&*h.bins, &[2, 1, 0, 0]);
        assert_eq!((h.total, h.squares), (3, 5));
    }

    #[test]
    fn windows_follow_the_head_and_tail_with_margins_or_fall_back() {
        let c = config();
        let mut h = Histogram::new(c.bins());
        let fallback = Windows {
            keep: c.fallback_keep_alive,
            prewarm: None,
        };
        assert_eq!(windows(Some(&h), None, &c), fallback);
        for _ in 0..10 {
            h.add(Duration::from_secs(30 * 60 + 20), c.bin_width);
        }
        // Head and tail in bin 30: unload, pre-warm at 30 min - 10 %, keep until 31 min + 10 %.
        assert_eq!(
            windows(Some(&h), None, &c),
            Windows {
                keep: Duration::ZERO,
                prewarm: Some((
                    Duration::from_secs(27 * 60),
                    Duration::from_secs_f64(31.0 * 60.0 * 1.1)
                )),
            }
        );
        // Mostly beyond the range: unload, pre-warm 15 % either side of the forecast.
        for _ in 0..11 {
            h.add(Duration::from_secs(5 * 3600), c.bin_width);
        }
        let forecast = Duration::from_secs(10 * 3600);
        assert_eq!(
            windows(Some(&h), Some(forecast), &c),
            Windows {
                keep: Duration::ZERO,
                prewarm: Some((forecast.mul_f64(0.85), forecast.mul_f64(1.15))),
            }
        );
        // Too few idle times in range: the fallback, then the forecast.
        let mut few = Histogram::new(c.bins());
        few.add(Duration::from_secs(60), c.bin_width);
        few.add(Duration::from_secs(10 * 3600), c.bin_width);
        assert_eq!(
            windows(Some(&few), Some(forecast), &c),
            Windows {
                keep: c.fallback_keep_alive,
                prewarm: Some((forecast.mul_f64(0.85), forecast.mul_f64(1.15))),
            }
        );
    }
}
