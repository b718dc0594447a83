//! Policies compared as points on the trade-off between memory held for nothing and cold
//! starts: one point per run, and which of them are on the Pareto front.

use serde::Serialize;

use super::report::SimRun;

/// One run as a point of a Pareto chart: idle worker-hours against the per-key cold-start
/// percentage at the 75th percentile (both lower is better).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParetoPoint {
    /// The run's policy with its parameters, e.g. `keep-alive ttl=5m`.
    pub label: String,
    /// Idle worker-hours over the measured window.
    pub idle_worker_hours: f64,
    /// 75th percentile over keys of the per-key cold-start percentage.
    pub key_cold_start_pct_p75: f64,
    /// Whether no other run is at least as good on both axes and better on one.
    pub on_front: bool,
}

/// One point per run, in the runs' order, with the non-dominated ones marked `on_front`.
///
/// ```
/// use poolwarden::sim::{pareto_points, SimRun, Summary};
///
/// let run = |policy: &str, hours: f64, p75: f64| SimRun {
///     policy: policy.into(),
///     summary: Summary { idle_worker_hours: hours, key_cold_start_pct_p75: p75, ..Summary::default() },
///     ..SimRun::default()
/// };
/// let points = pareto_points(&[run("a", 10.0, 50.0), run("b", 20.0, 10.0), run("c", 25.0, 20.0)]);
/// let front: Vec<bool> = points.iter().map(|p| p.on_front).collect();
/// assert_eq!(front, vec![true, true, false]); // c is worse than b on both axes
/// ```
pub fn pareto_points(runs: &[SimRun]) -> Vec<ParetoPoint> {
    let axes: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| {
            (
                r.summary.idle_worker_hours,
                r.summary.key_cold_start_pct_p75,
            )
        })
        .collect();
    let dominated = |&(x, y): &(f64, f64)| {
        axes.iter()
            .any(|&(ox, oy)| ox <= x && oy <= y && (ox < x || oy < y))
    };
    runs.iter()
        .zip(&axes)
        .map(|(run, point)| ParetoPoint {
            label: run.label(),
            idle_worker_hours: point.0,
            key_cold_start_pct_p75: point.1,
            on_front: !dominated(point),
        })
        .collect()
}
