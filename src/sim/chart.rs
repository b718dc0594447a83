//! The simulation chart: per pool, workers over time for each key (the busiest keys, the rest
//! summed), memory held against the limit or budget, one line per policy; a title naming the
//! trace, the config and the window; the legend outside the plots; and with several policies,
//! the summary table underneath.

use std::collections::BTreeMap;
use std::path::Path;

use super::report::{bytes_text, clock_time, duration_text, summary_rows, SimRun};
use super::svg::{
    integer_ticks, legend, nice_duration, number_ticks, panel, series_style, table, time_ticks,
    write_svg, Anchor, Plot, Svg, SvgError, BELOW, HEADING,
};

/// What the simulation chart shows besides the runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartOptions {
    /// Keys drawn one panel each per pool, the busiest by worker-seconds first; the others
    /// are summed in one panel. Default 4.
    pub keys_per_pool: usize,
    /// A memory budget per pool, drawn as a line on that pool's memory panel.
    pub pool_budgets: BTreeMap<String, u64>,
    /// A memory limit drawn on the memory panel of all pools, besides the runs' own
    /// ([`SimRun::memory_limit_bytes`]): the config's memory-pressure `limit` when the runs
    /// replace that policy ([`memory_limit_of`](super::memory_limit_of)).
    pub memory_limit: Option<u64>,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            keys_per_pool: 4,
            pool_budgets: BTreeMap::new(),
            memory_limit: None,
        }
    }
}

/// Width of the chart, px.
const WIDTH: f64 = 1000.0;
const LEFT: f64 = 76.0;
const RIGHT: f64 = 24.0;
const WORKERS_HEIGHT: f64 = 120.0;
const MEMORY_HEIGHT: f64 = 110.0;
const GAP: f64 = 10.0;
/// Windows from this long on are drawn as the maximum per interval.
const LONG_WINDOW: f64 = 6.0 * 3600.0;
/// A series with more changes than this is drawn as the maximum per interval.
const MAX_EXACT_CHANGES: usize = 600;
/// Intervals a long window is cut into, about.
const INTERVALS: f64 = 240.0;

/// A step function: `(time, value from then on)`, starting at 0 from time 0.
type Steps = Vec<(f64, f64)>;

/// Writes the simulation chart of `runs` (replays of trace `trace` with config `config`) to
/// `path` as SVG.
pub fn render_svg(
    path: &Path,
    trace: &str,
    config: &str,
    runs: &[SimRun],
    options: &ChartOptions,
) -> Result<(), SvgError> {
    write_svg(path, &simulation_svg(trace, config, runs, options))
}

/// The simulation chart of `runs` as an SVG document.
pub fn simulation_svg(
    trace: &str,
    config: &str,
    runs: &[SimRun],
    options: &ChartOptions,
) -> String {
    let window = runs
        .iter()
        .map(|r| r.summary.window_secs.max(r.summary.end_secs))
        .fold(0.0, f64::max);
    let window = if window > 0.0 { window } else { 1.0 };
    let pools = collect(runs, window);

    let binned = window >= LONG_WINDOW
        || pools.values().any(|p| {
            p.keys
                .values()
                .any(|k| k.workers.iter().any(|s| s.len() > MAX_EXACT_CHANGES))
        });
    let interval = binned.then(|| nice_duration(window / INTERVALS));

    let mut svg = Svg::new(WIDTH);
    let title = format!("poolwarden simulate: trace {trace}, config {config}");
    let mut subtitle = format!(
        "window 0:00:00 to {} ({}); one line per policy",
        clock_time(window),
        duration_text(window)
    );
    if let Some(interval) = interval {
        subtitle.push_str(&format!(
            "; each step is the maximum over {}",
            duration_text(interval)
        ));
    }
    svg.heading(LEFT, WIDTH - LEFT - RIGHT, &title, &subtitle);
    let entries: Vec<(String, (&str, &str, f64))> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.label(), series_style(i, runs.len())))
        .collect();
    let mut y = legend(&mut svg, 58.0, LEFT, WIDTH - RIGHT, &entries) + 14.0;

    let plot_width = WIDTH - LEFT - RIGHT;
    let x_ticks = time_ticks(window, 10);
    let caption = if window >= 3600.0 {
        "time since the trace's start (h:mm)"
    } else {
        "time since the trace's start (m:ss)"
    };
    let mut index = 0;
    let mut draw_workers = |svg: &mut Svg, y: &mut f64, heading: String, series: &[Steps]| {
        let peak = series
            .iter()
            .flat_map(|s| s.iter().map(|(_, v)| *v))
            .fold(1.0, f64::max);
        let y_ticks = integer_ticks(peak, 4);
        let note = interval
            .map(|i| format!("max per {}", duration_text(i)))
            .unwrap_or_default();
        let plot = panel(
            svg,
            index,
            *y,
            LEFT,
            plot_width,
            WORKERS_HEIGHT,
            &heading,
            &note,
            &x_ticks,
            &y_ticks,
            caption,
        );
        draw_series(svg, &plot, series, window, interval);
        index += 1;
        *y += HEADING + WORKERS_HEIGHT + BELOW + GAP;
    };

    if pools.is_empty() {
        draw_workers(
            &mut svg,
            &mut y,
            "no worker was spawned".to_string(),
            &vec![Vec::new(); runs.len()],
        );
    }
    let several_pools = pools.len() > 1;
    let mut memory_panels = Vec::new();
    for (pool, data) in &pools {
        let mut keys: Vec<(&String, &KeyData)> = data.keys.iter().collect();
        keys.sort_by(|a, b| b.1.worker_seconds.total_cmp(&a.1.worker_seconds));
        let shown = if keys.len() > options.keys_per_pool.max(1) + 1 {
            options.keys_per_pool.max(1)
        } else {
            keys.len()
        };
        for (model, key) in &keys[..shown] {
            draw_workers(
                &mut svg,
                &mut y,
                format!("{pool} / {model}: workers"),
                &key.workers,
            );
        }
        if shown < keys.len() {
            let others = sum_steps(keys[shown..].iter().map(|(_, k)| &k.workers), runs.len());
            draw_workers(
                &mut svg,
                &mut y,
                format!(
                    "{pool} / the other {} keys, summed: workers",
                    keys.len() - shown
                ),
                &others,
            );
        }
        let budget = options.pool_budgets.get(pool).copied();
        let limits: Vec<(u64, String)> = match budget {
            Some(b) => vec![(b, format!("budget {}", bytes_text(b)))],
            None if !several_pools => run_limits(runs, options.memory_limit),
            None => Vec::new(),
        };
        memory_panels.push((format!("{pool}: memory held"), data.memory.clone(), limits));
    }
    if several_pools {
        let total = sum_steps(pools.values().map(|p| &p.memory), runs.len());
        memory_panels.push((
            "all pools: memory held".to_string(),
            total,
            run_limits(runs, options.memory_limit),
        ));
    }
    let mut left_out = 0;
    for (heading, series, limits) in memory_panels {
        let peak = series
            .iter()
            .flat_map(|s| s.iter().map(|(_, v)| *v))
            .fold(0.0, f64::max);
        if peak <= 0.0 && limits.is_empty() {
            left_out += 1;
            continue;
        }
        let top = limits
            .iter()
            .map(|(l, _)| *l as f64)
            .fold(peak, f64::max)
            .max(1.0);
        let (unit, name) = memory_unit(top);
        let y_ticks = number_ticks(top / unit, 4, &|v| format!("{} {name}", trim(v)));
        let note = limits
            .iter()
            .map(|(_, l)| format!("- - {l}"))
            .collect::<Vec<_>>()
            .join("   ");
        let plot = panel(
            &mut svg,
            index,
            y,
            LEFT,
            plot_width,
            MEMORY_HEIGHT,
            &heading,
            &note,
            &x_ticks,
            &y_ticks,
            caption,
        );
        let scaled: Vec<Steps> = series
            .iter()
            .map(|s| s.iter().map(|(t, v)| (*t, v / unit)).collect())
            .collect();
        for (limit, _) in &limits {
            let ly = plot.py(*limit as f64 / unit);
            svg.line(plot.x, ly, plot.x + plot.w, ly, "#444444", 1.5, "6 4");
        }
        draw_series(&mut svg, &plot, &scaled, window, interval);
        index += 1;
        y += HEADING + MEMORY_HEIGHT + BELOW + GAP;
    }
    if left_out > 0 {
        svg.text(
            Some("memory-note"),
            LEFT,
            y + 4.0,
            11.0,
            Anchor::Start,
            None,
            None,
            "No memory panel: the config gives the workers no footprint (`memory`) and no limit.",
        );
        y += 18.0;
    }

    if runs.len() > 1 {
        let rows: Vec<(String, Vec<String>)> = summary_rows(runs)
            .into_iter()
            .filter(|r| r.in_chart)
            .map(|r| (r.label, r.values))
            .collect();
        let headers: Vec<(String, (&str, &str, f64))> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.policy.clone(), series_style(i, runs.len())))
            .collect();
        y = table(&mut svg, y + 4.0, LEFT, &headers, &rows);
    }
    svg.finish(y + 12.0)
}

/// The distinct memory limits of the runs, and the config's when none of the runs has it,
/// labelled.
fn run_limits(runs: &[SimRun], config: Option<u64>) -> Vec<(u64, String)> {
    let mut limits: Vec<u64> = runs.iter().filter_map(|r| r.memory_limit_bytes).collect();
    limits.sort_unstable();
    limits.dedup();
    let mut labelled: Vec<(u64, String)> = limits
        .iter()
        .map(|&l| (l, format!("limit {}", bytes_text(l))))
        .collect();
    if let Some(c) = config.filter(|c| !limits.contains(c)) {
        labelled.push((c, format!("limit {} (config)", bytes_text(c))));
    }
    labelled
}

/// The unit memory ticks are labelled in.
fn memory_unit(top: f64) -> (f64, &'static str) {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    const KIB: f64 = 1024.0;
    if top >= GIB {
        (GIB, "GiB")
    } else if top >= MIB {
        (MIB, "MiB")
    } else if top >= KIB {
        (KIB, "KiB")
    } else {
        (1.0, "B")
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Draws one step line per series into `plot`: exact, or the maximum per `interval`.
fn draw_series(svg: &mut Svg, plot: &Plot, series: &[Steps], window: f64, interval: Option<f64>) {
    for (i, steps) in series.iter().enumerate() {
        let style = series_style(i, series.len());
        let points = match interval {
            Some(interval) => binned(steps, window, interval),
            None => exact(steps, window),
        };
        let mut pixels: Vec<(f64, f64)> = Vec::with_capacity(points.len());
        for (t, v) in points {
            let p = (plot.px(t), plot.py(v));
            if pixels.last() != Some(&p) {
                pixels.push(p);
            }
        }
        let (colour, dash, width) = style;
        svg.polyline(&pixels, colour, width, dash);
    }
}

/// The corners of a step line through `steps` up to `window`.
fn exact(steps: &Steps, window: f64) -> Vec<(f64, f64)> {
    let mut points = vec![(0.0, 0.0)];
    let mut last = 0.0;
    for (t, v) in steps {
        points.push((*t, last));
        points.push((*t, *v));
        last = *v;
    }
    points.push((window, last));
    points
}

/// A step line of the maximum of `steps` in each `interval` of `[0, window]`.
fn binned(steps: &Steps, window: f64, interval: f64) -> Vec<(f64, f64)> {
    let bins = (window / interval).ceil().max(1.0) as usize;
    let mut points = Vec::with_capacity(2 * bins);
    let mut current = 0.0;
    let mut next = 0;
    for b in 0..bins {
        let start = b as f64 * interval;
        let end = ((b + 1) as f64 * interval).min(window);
        let mut max: f64 = current;
        while next < steps.len() && steps[next].0 < end {
            current = steps[next].1;
            max = max.max(current);
            next += 1;
        }
        points.push((start, max));
        points.push((end, max));
    }
    points
}

/// One key's data: its workers per run, and its worker-seconds over all runs (to rank keys).
struct KeyData {
    workers: Vec<Steps>,
    worker_seconds: f64,
}

/// One pool's data: its keys, and its memory per run.
struct PoolData {
    keys: BTreeMap<String, KeyData>,
    memory: Vec<Steps>,
}

/// Splits the runs' timelines into step functions per pool and key.
fn collect(runs: &[SimRun], window: f64) -> BTreeMap<String, PoolData> {
    let mut pools: BTreeMap<String, PoolData> = BTreeMap::new();
    for (r, run) in runs.iter().enumerate() {
        let mut points: Vec<&super::report::TimelinePoint> = run.timeline.iter().collect();
        points.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
        // Memory per pool: the sum over its keys, after each change.
        let mut bytes: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut pool_bytes: BTreeMap<&str, u64> = BTreeMap::new();
        for p in points {
            let pool = pools.entry(p.pool.clone()).or_insert_with(|| PoolData {
                keys: BTreeMap::new(),
                memory: vec![Vec::new(); runs.len()],
            });
            let key = pool.keys.entry(p.model.clone()).or_insert_with(|| KeyData {
                workers: vec![Vec::new(); runs.len()],
                worker_seconds: 0.0,
            });
            key.workers[r].push((p.at_secs, p.workers as f64));
            let old = bytes
                .insert((&p.pool, &p.model), p.memory_bytes)
                .unwrap_or(0);
            let total = pool_bytes.entry(&p.pool).or_insert(0);
            *total = (*total + p.memory_bytes).saturating_sub(old);
            pool.memory[r].push((p.at_secs, *total as f64));
        }
    }
    for pool in pools.values_mut() {
        for key in pool.keys.values_mut() {
            key.worker_seconds = key.workers.iter().map(|s| integral(s, window)).sum();
        }
    }
    pools
}

/// The integral of a step function over `[0, window]`.
fn integral(steps: &Steps, window: f64) -> f64 {
    let mut total = 0.0;
    let mut last = (0.0, 0.0);
    for &(t, v) in steps {
        total += (t.min(window) - last.0).max(0.0) * last.1;
        last = (t, v);
    }
    total + (window - last.0).max(0.0) * last.1
}

/// The sum of several step functions, per run.
fn sum_steps<'a>(series: impl Iterator<Item = &'a Vec<Steps>>, runs: usize) -> Vec<Steps> {
    let mut merged: Vec<Vec<(f64, usize, f64)>> = vec![Vec::new(); runs];
    for (k, per_run) in series.enumerate() {
        for (r, steps) in per_run.iter().enumerate() {
            if let Some(m) = merged.get_mut(r) {
                m.extend(steps.iter().map(|&(t, v)| (t, k, v)));
            }
        }
    }
    merged
        .into_iter()
        .map(|mut changes| {
            changes.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut current: BTreeMap<usize, f64> = BTreeMap::new();
            let mut total = 0.0;
            let mut out: Steps = Vec::with_capacity(changes.len());
            for (t, k, v) in changes {
                total += v - current.insert(k, v).unwrap_or(0.0);
                match out.last_mut() {
                    Some(last) if last.0 == t => last.1 = total,
                    _ => out.push((t, total)),
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binned_steps_keep_each_interval_maximum() {
        // A burst to 5 for one second inside the second interval.
        let steps = vec![(1.0, 1.0), (15.0, 5.0), (16.0, 1.0), (25.0, 0.0)];
        let points = binned(&steps, 30.0, 10.0);
        let maxima: Vec<f64> = points.iter().step_by(2).map(|p| p.1).collect();
        assert_eq!(maxima, vec![1.0, 5.0, 1.0]);
    }

    #[test]
    fn sums_and_integrals_of_steps() {
        let a = vec![vec![(0.0, 1.0), (10.0, 0.0)]];
        let b = vec![vec![(5.0, 2.0), (20.0, 0.0)]];
        let sum = sum_steps([&a, &b].into_iter(), 1);
        assert_eq!(
            sum[0],
            vec![(0.0, 1.0), (5.0, 3.0), (10.0, 2.0), (20.0, 0.0)]
        );
        assert_eq!(integral(&sum[0], 30.0), 5.0 + 15.0 + 20.0);
    }
}
