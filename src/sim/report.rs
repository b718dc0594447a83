//! What a simulation run measures, and how it is shown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Requests that arrived in the measured window.
    pub requests: u64,
    /// Of those, requests that waited for a spawn (served by a worker that finished spawning
    /// after they arrived).
    pub cold_starts: u64,
    /// Workers spawned (spawns started in the window), pre-warms included.
    pub spawns: u64,
    /// Of those, spawns started by a policy's pre-warm rather than for a waiting request.
    pub prewarm_spawns: u64,
    /// Evictions of any reason.
    pub evictions: u64,
    /// Evictions by reason.
    pub evictions_by_reason: BTreeMap<String, u64>,
    /// Integral of live workers over time, in worker-seconds.
    pub worker_seconds: f64,
    /// Worker-seconds of ready workers with no request in flight: memory held for nothing
    /// (loading time is neither busy nor idle).
    pub idle_worker_seconds: f64,
    /// The same in worker-hours.
    pub idle_worker_hours: f64,
    /// Median over the keys with at least one request in the window of each key's cold-start
    /// percentage (nearest rank); 0 when no key had a request.
    pub key_cold_start_pct_p50: f64,
    /// 75th percentile of the per-key cold-start percentage (nearest rank).
    pub key_cold_start_pct_p75: f64,
    /// 90th percentile of the per-key cold-start percentage (nearest rank).
    pub key_cold_start_pct_p90: f64,
    /// Most live workers at once, over all pools.
    pub peak_workers: u64,
    /// Most accounted bytes at once, over all pools.
    pub peak_memory_bytes: u64,
    /// Mean time from arrival to getting a worker, seconds.
    pub mean_wait_secs: f64,
    /// 99th percentile of that wait (nearest rank), seconds.
    pub p99_wait_secs: f64,
    /// Virtual time at which the run ended, seconds: the trace was done and no further
    /// eviction could happen (or `--until`).
    pub end_secs: f64,
    /// Workers still live when the run ended.
    pub workers_at_end: u64,
    /// The end of the window the figures cover, seconds: the run's own end, or after
    /// [`align_windows`], the latest end among the runs compared.
    pub window_secs: f64,
    /// The start of the measured window, seconds (`--from`; 0 by default). Policies run from
    /// 0; only what happens from here on is counted.
    pub from_secs: f64,
}

/// Puts runs compared side by side on one window: from 0 to the latest end among them. A run
/// that ended earlier holds its final workers, idle, until then (nothing more would have been
/// evicted), so a policy that never lets go is charged for it.
pub fn align_windows(runs: &mut [SimRun]) {
    let window = runs.iter().map(|r| r.summary.end_secs).fold(0.0, f64::max);
    for run in runs {
        let s = &mut run.summary;
        let extra = (window - s.end_secs.max(s.from_secs)).max(0.0) * s.workers_at_end as f64;
        s.worker_seconds += extra;
        s.idle_worker_seconds += extra;
        s.idle_worker_hours = s.idle_worker_seconds / 3600.0;
        s.window_secs = window;
    }
}

/// One eviction in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimEvent {
    /// When, seconds from the trace's start.
    pub at_secs: f64,
    /// The pool.
    pub pool: String,
    /// The key.
    pub model: String,
    /// The worker's id.
    pub worker: u64,
    /// Why.
    pub reason: String,
    /// Workers the key had left.
    pub workers_after: usize,
}

/// A change of one key's worker count (the CSV and SVG timeline).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// When, seconds.
    pub at_secs: f64,
    /// The pool.
    pub pool: String,
    /// The key.
    pub model: String,
    /// Its live workers from then on.
    pub workers: usize,
    /// Its accounted bytes from then on.
    pub memory_bytes: u64,
}

/// One policy's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimRun {
    /// The policy's label (its kind; a chain lists its members).
    pub policy: String,
    /// The figures.
    pub summary: Summary,
    /// Every eviction, in order.
    pub events: Vec<SimEvent>,
    /// Worker-count changes per key.
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
}

/// `m:ss`, or `h:mm:ss` past an hour; fractions of a second when there are any.
pub fn clock_time(secs: f64) -> String {
    let whole = secs.floor();
    let fraction = secs - whole;
    let total = whole as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    let mut out = if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    };
    if fraction > 1e-9 {
        let millis = format!("{:.3}", fraction);
        out.push_str(millis.trim_start_matches('0').trim_end_matches('0'));
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// The eviction timeline and the side-by-side summary table, as text.
pub fn render_text(trace_name: &str, runs: &[SimRun]) -> String {
    let mut out = String::new();
    for run in runs {
        let _ = writeln!(
            out,
            "== {} on {trace_name}: {} evictions",
            run.policy,
            run.events.len()
        );
        if !run.events.is_empty() {
            let _ = writeln!(
                out,
                "{:>9}  {:<12} {:<16} {:>6}  {:<16} {:>4}",
                "time", "pool", "model", "worker", "reason", "left"
            );
        }
        for e in &run.events {
            let _ = writeln!(
                out,
                "{:>9}  {:<12} {:<16} {:>6}  {:<16} {:>4}",
                clock_time(e.at_secs),
                e.pool,
                e.model,
                e.worker,
                e.reason,
                e.workers_after
            );
        }
        out.push('\n');
    }

    let mut reasons: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.summary.evictions_by_reason.keys().map(String::as_str))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();

    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let column =
        |f: &dyn Fn(&Summary) -> String| runs.iter().map(|r| f(&r.summary)).collect::<Vec<_>>();
    rows.push(("requests".into(), column(&|s| s.requests.to_string())));
    rows.push((
        "cold starts".into(),
        column(&|s| {
            let pct = if s.requests > 0 {
                100.0 * s.cold_starts as f64 / s.requests as f64
            } else {
                0.0
            };
            format!("{} ({pct:.1}%)", s.cold_starts)
        }),
    ));
    rows.push((
        "key cold-start % p50/75/90".into(),
        column(&|s| {
            format!(
                "{:.1}/{:.1}/{:.1}",
                s.key_cold_start_pct_p50, s.key_cold_start_pct_p75, s.key_cold_start_pct_p90
            )
        }),
    ));
    rows.push(("spawns".into(), column(&|s| s.spawns.to_string())));
    rows.push((
        "  pre-warm".into(),
        column(&|s| s.prewarm_spawns.to_string()),
    ));
    rows.push(("evictions".into(), column(&|s| s.evictions.to_string())));
    for reason in reasons {
        rows.push((
            format!("  {reason}"),
            column(&|s| {
                s.evictions_by_reason
                    .get(reason)
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            }),
        ));
    }
    rows.push((
        "worker-seconds".into(),
        column(&|s| format!("{:.1}", s.worker_seconds)),
    ));
    rows.push((
        "idle worker-seconds".into(),
        column(&|s| format!("{:.1}", s.idle_worker_seconds)),
    ));
    rows.push((
        "idle worker-hours".into(),
        column(&|s| format!("{:.1}", s.idle_worker_hours)),
    ));
    rows.push((
        "peak workers".into(),
        column(&|s| s.peak_workers.to_string()),
    ));
    rows.push((
        "peak memory".into(),
        column(&|s| human_bytes(s.peak_memory_bytes)),
    ));
    rows.push((
        "mean wait".into(),
        column(&|s| format!("{:.3}s", s.mean_wait_secs)),
    ));
    rows.push((
        "p99 wait".into(),
        column(&|s| format!("{:.3}s", s.p99_wait_secs)),
    ));
    rows.push(("ended at".into(), column(&|s| clock_time(s.end_secs))));
    rows.push((
        "window".into(),
        column(&|s| {
            if s.from_secs > 0.0 {
                format!("{}-{}", clock_time(s.from_secs), clock_time(s.window_secs))
            } else {
                clock_time(s.window_secs)
            }
        }),
    ));

    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(6);
    let widths: Vec<usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            rows.iter()
                .map(|(_, v)| v[i].len())
                .chain(std::iter::once(r.policy.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = write!(out, "{:<label_width$}", "summary");
    for (run, w) in runs.iter().zip(&widths) {
        let _ = write!(out, "  {:>w$}", run.policy);
    }
    out.push('\n');
    for (label, values) in &rows {
        let _ = write!(out, "{label:<label_width$}");
        for (v, w) in values.iter().zip(&widths) {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
    out
}

/// The worker-count and memory timeline as CSV: `policy,pool,model,at_secs,workers,memory_bytes`.
pub fn render_csv(runs: &[SimRun]) -> String {
    let mut out = String::from("policy,pool,model,at_secs,workers,memory_bytes\n");
    for run in runs {
        for p in &run.timeline {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                run.policy, p.pool, p.model, p.at_secs, p.workers, p.memory_bytes
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_time_formats_minutes_hours_and_fractions() {
        assert_eq!(clock_time(360.0), "6:00");
        assert_eq!(clock_time(570.0), "9:30");
        assert_eq!(clock_time(3725.0), "1:02:05");
        assert_eq!(clock_time(61.5), "1:01.5");
    }
}
