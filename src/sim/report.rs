//! What a simulation run measures, and how it is shown: the text report, the CSV timeline, and
//! the formats (times, durations, rates, sizes) that the text report and the charts share.
//!
//! The summary table is driven by one list of rows ([`summary_rows`]): a new [`Summary`] field
//! is shown in the text report and under the chart by adding one entry to that list.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use poolwarden_policies::EvictionPolicy;
use serde::Serialize;

use crate::config::{PolicySpec, CHAIN};

/// One run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Requests that arrived in the measured window.
    pub requests: u64,
    /// Of those, requests that failed without a worker: they waited the pool's
    /// `acquire_timeout` in vain, or their model's footprint is bigger than its budget's whole
    /// limit (they fail at once). Their waits are not in the wait figures.
    pub rejected: u64,
    /// Of those, requests that waited for a spawn (served by a worker that finished spawning
    /// after they arrived).
    pub cold_starts: u64,
    /// Workers spawned (spawns started in the window), pre-warms included.
    pub spawns: u64,
    /// Of those, spawns started by a policy's pre-warm rather than for a waiting request.
    pub prewarm_spawns: u64,
    /// Requests (of those that arrived in the window) that waited for memory: while they
    /// waited, a spawn of their key that they needed waited for its budget to have room.
    pub admission_waits: u64,
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
    /// The longest wait, seconds. With few cold starts among many requests, the mean can be
    /// well above the p99: this shows where it comes from.
    pub max_wait_secs: f64,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SimRun {
    /// The policy's kind (a chain: `chain(a+b)`, its members' kinds).
    pub policy: String,
    /// The policy's parameters, defaults included, as `poolwarden check` shows them but
    /// without the kind: `ttl=5m min_workers=0`. A chain lists each member with its
    /// parameters, joined by ` + `. Empty for a policy without parameters.
    pub parameters: String,
    /// The total memory the pools' accounted bytes were measured against: the memory-pressure
    /// `limit`, when a policy in the run has one.
    pub memory_limit_bytes: Option<u64>,
    /// The figures.
    pub summary: Summary,
    /// Every eviction, in order.
    pub events: Vec<SimEvent>,
    /// Worker-count changes per key.
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
}

impl SimRun {
    /// The policy with its parameters, e.g. `keep-alive ttl=5m min_workers=0`, or
    /// `chain(memory-pressure high=0.9 … + gradual-lru idle=5m …)`: what a column, a legend
    /// entry and a CSV row are headed with, so that two runs of one kind with different
    /// parameters can be told apart.
    pub fn label(&self) -> String {
        if self.parameters.is_empty() {
            self.policy.clone()
        } else if self.policy.starts_with("chain(") {
            format!("chain({})", self.parameters)
        } else {
            format!("{} {}", self.policy, self.parameters)
        }
    }
}

/// The parameters of a built `policy` configured by `spec`, as [`SimRun::parameters`] shows
/// them: what the policy's `describe` prints after its name (the spec's own parameters for a
/// policy whose `describe` is only its name); a chain's members each with their kind.
pub fn describe_parameters(policy: &dyn EvictionPolicy, spec: &PolicySpec) -> String {
    let children = policy.children();
    if spec.kind == CHAIN || !children.is_empty() {
        return children
            .iter()
            .zip(spec.members.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(child, member)| {
                let empty = PolicySpec::of_kind(child.name());
                let params = describe_parameters(*child, member.unwrap_or(&empty));
                let name = if child.children().is_empty() {
                    child.name().to_string()
                } else {
                    "chain".to_string()
                };
                match (params.is_empty(), name == CHAIN) {
                    (true, _) => name,
                    (false, true) => format!("chain({params})"),
                    (false, false) => format!("{name} {params}"),
                }
            })
            .collect::<Vec<_>>()
            .join(" + ");
    }
    let described = policy.describe();
    let name = policy.name();
    match described.strip_prefix(name) {
        Some("") => spec
            .params
            .iter()
            .map(|(k, v)| match v {
                toml::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(rest) => rest.trim().to_string(),
        None => described,
    }
}

/// The memory-pressure `limit` configured in `spec` (in a chain, the largest of its
/// members'), in bytes.
pub fn memory_limit_of(spec: &PolicySpec) -> Option<u64> {
    let own = own_memory_limit(spec);
    spec.members
        .iter()
        .filter_map(memory_limit_of)
        .chain(own)
        .max()
}

/// The `limit` of `spec` itself when it is a memory-pressure policy, in bytes.
pub(crate) fn own_memory_limit(spec: &PolicySpec) -> Option<u64> {
    if spec.kind != "memory-pressure" {
        return None;
    }
    match spec.params.get("limit")? {
        toml::Value::String(s) => s
            .parse::<poolwarden_policies::ByteSize>()
            .ok()
            .map(|b| b.bytes()),
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Formats shared by the text report and the charts.

/// A point in time from the trace's start, always `h:mm:ss`, with decimals only when the
/// time has a fraction of a second (to the millisecond): `0:06:00`, `1:02:05`, `0:58:29.843`.
pub fn clock_time(secs: f64) -> String {
    let secs = if secs.is_finite() { secs.max(0.0) } else { 0.0 };
    let millis_total = (secs * 1000.0).round() as u64;
    let (total, millis) = (millis_total / 1000, millis_total % 1000);
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    let mut out = format!("{h}:{m:02}:{s:02}");
    if millis > 0 {
        let fraction = format!(".{millis:03}");
        out.push_str(fraction.trim_end_matches('0'));
    }
    out
}

/// A length of time: `0s`, `350µs`, `44ms`, `4.2s`, `58s`, `2m 5s`, `2h 25m 12s`. From a
/// minute on, whole seconds.
pub fn duration_text(secs: f64) -> String {
    if !secs.is_finite() || secs <= 0.0 {
        return "0s".to_string();
    }
    if secs < 1e-3 {
        return format!("{}µs", trim_decimals(secs * 1e6, 1));
    }
    if secs < 1.0 {
        let ms = secs * 1e3;
        return format!("{}ms", trim_decimals(ms, if ms < 10.0 { 1 } else { 0 }));
    }
    if secs < 60.0 {
        return format!("{}s", trim_decimals(secs, if secs < 10.0 { 2 } else { 1 }));
    }
    let total = secs.round() as u64;
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if h > 0 || m > 0 {
        parts.push(format!("{m}m"));
    }
    parts.push(format!("{s}s"));
    // Drop trailing zero parts: `1h 0m 0s` reads as `1h`.
    while parts.len() > 1 && parts.last().is_some_and(|p| p.starts_with('0')) {
        parts.pop();
    }
    parts.join(" ")
}

/// A rate in percent, precise enough to be non-zero when it is: `0 %`, `0.02 %`, `0.15 %`,
/// `4.1 %`, `100.0 %`.
pub fn percent_text(pct: f64) -> String {
    if !pct.is_finite() || pct <= 0.0 {
        return "0 %".to_string();
    }
    if pct >= 1.0 {
        return format!("{pct:.1} %");
    }
    // The position of the first significant decimal, at least two decimals.
    let first = (-pct.log10()).ceil().max(1.0) as usize;
    let decimals = first.clamp(2, 12);
    format!("{pct:.decimals$} %")
}

/// `count (rate %)` of `total`.
pub fn count_and_percent(count: u64, total: u64) -> String {
    let pct = if total > 0 {
        100.0 * count as f64 / total as f64
    } else {
        0.0
    };
    format!("{count} ({})", percent_text(pct))
}

/// Bytes in binary units with three significant figures: `0 B`, `512 MiB`, `1.50 GiB`,
/// `56.0 GiB`.
pub fn bytes_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return format!("{} {name}", significant(value, 3));
        }
    }
    format!("{bytes} B")
}

/// Worker-seconds as worker-hours with three significant figures (one decimal from 100 on).
pub fn worker_hours_text(worker_seconds: f64) -> String {
    let hours = worker_seconds / 3600.0;
    if hours >= 100.0 {
        format!("{hours:.1}")
    } else if hours <= 0.0 {
        "0".to_string()
    } else {
        significant(hours, 3)
    }
}

/// `value` with `figures` significant figures (never in exponent form).
fn significant(value: f64, figures: i32) -> String {
    if value == 0.0 || !value.is_finite() {
        return "0".to_string();
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (figures - 1 - magnitude).max(0) as usize;
    format!("{value:.decimals$}")
}

/// `value` with at most `decimals` decimals, trailing zeros dropped.
fn trim_decimals(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------------
// The summary table.

/// How a row of the summary table gets its cells.
enum Cells {
    /// One value per run.
    Value(fn(&Summary) -> String),
    /// One row per eviction reason seen in any run.
    ByReason,
}

/// A row of the summary table: its label, whether the chart's small table shows it too, and
/// how its cells are made. To show a new [`Summary`] field, add an entry here.
struct RowSpec {
    label: &'static str,
    in_chart: bool,
    cells: Cells,
}

const ROWS: &[RowSpec] = &[
    RowSpec {
        label: "requests",
        in_chart: true,
        cells: Cells::Value(|s| s.requests.to_string()),
    },
    RowSpec {
        label: "rejected",
        in_chart: true,
        cells: Cells::Value(|s| count_and_percent(s.rejected, s.requests)),
    },
    RowSpec {
        label: "cold starts",
        in_chart: true,
        cells: Cells::Value(|s| count_and_percent(s.cold_starts, s.requests)),
    },
    RowSpec {
        label: "key cold-start % p50/p75/p90",
        in_chart: true,
        cells: Cells::Value(|s| {
            format!(
                "{} / {} / {}",
                percent_text(s.key_cold_start_pct_p50),
                percent_text(s.key_cold_start_pct_p75),
                percent_text(s.key_cold_start_pct_p90)
            )
        }),
    },
    RowSpec {
        label: "admission waits",
        in_chart: false,
        cells: Cells::Value(|s| count_and_percent(s.admission_waits, s.requests)),
    },
    RowSpec {
        label: "spawns",
        in_chart: false,
        cells: Cells::Value(|s| s.spawns.to_string()),
    },
    RowSpec {
        label: "  pre-warm",
        in_chart: false,
        cells: Cells::Value(|s| s.prewarm_spawns.to_string()),
    },
    RowSpec {
        label: "evictions",
        in_chart: true,
        cells: Cells::Value(|s| s.evictions.to_string()),
    },
    RowSpec {
        label: "",
        in_chart: false,
        cells: Cells::ByReason,
    },
    RowSpec {
        label: "worker-hours",
        in_chart: true,
        cells: Cells::Value(|s| worker_hours_text(s.worker_seconds)),
    },
    RowSpec {
        label: "idle worker-hours",
        in_chart: true,
        cells: Cells::Value(|s| worker_hours_text(s.idle_worker_seconds)),
    },
    RowSpec {
        label: "peak workers",
        in_chart: true,
        cells: Cells::Value(|s| s.peak_workers.to_string()),
    },
    RowSpec {
        label: "peak memory",
        in_chart: true,
        cells: Cells::Value(|s| bytes_text(s.peak_memory_bytes)),
    },
    RowSpec {
        label: "mean wait",
        in_chart: false,
        cells: Cells::Value(|s| duration_text(s.mean_wait_secs)),
    },
    RowSpec {
        label: "p99 wait",
        in_chart: true,
        cells: Cells::Value(|s| duration_text(s.p99_wait_secs)),
    },
    RowSpec {
        label: "max wait",
        in_chart: false,
        cells: Cells::Value(|s| duration_text(s.max_wait_secs)),
    },
    RowSpec {
        label: "ended at",
        in_chart: false,
        cells: Cells::Value(|s| clock_time(s.end_secs)),
    },
    RowSpec {
        label: "window",
        in_chart: false,
        cells: Cells::Value(|s| {
            if s.from_secs > 0.0 {
                format!(
                    "{} to {} ({})",
                    clock_time(s.from_secs),
                    clock_time(s.window_secs),
                    duration_text(s.window_secs - s.from_secs)
                )
            } else {
                duration_text(s.window_secs)
            }
        }),
    },
];

/// One row of the summary table, its cells formatted, one per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// The row's label (`cold starts`); eviction reasons are indented by two spaces.
    pub label: String,
    /// One cell per run, in the runs' order.
    pub values: Vec<String>,
    /// Whether the chart's small table shows this row (the text report shows every row).
    pub in_chart: bool,
}

/// The summary table of `runs`, row by row, as both the text report and the chart show it.
pub fn summary_rows(runs: &[SimRun]) -> Vec<SummaryRow> {
    let mut reasons: Vec<&str> = runs
        .iter()
        .flat_map(|r| r.summary.evictions_by_reason.keys().map(String::as_str))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    let mut rows = Vec::new();
    for spec in ROWS {
        match spec.cells {
            Cells::Value(cell) => rows.push(SummaryRow {
                label: spec.label.to_string(),
                values: runs.iter().map(|r| cell(&r.summary)).collect(),
                in_chart: spec.in_chart,
            }),
            Cells::ByReason => {
                for reason in &reasons {
                    rows.push(SummaryRow {
                        label: format!("  {reason}"),
                        values: runs
                            .iter()
                            .map(|r| {
                                let n = r.summary.evictions_by_reason.get(*reason);
                                n.copied().unwrap_or(0).to_string()
                            })
                            .collect(),
                        in_chart: spec.in_chart,
                    });
                }
            }
        }
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// The text report.

/// How much of the eviction timeline the text report lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventsShown {
    /// None: one line per run counts its evictions by reason.
    #[default]
    Counts,
    /// The first this many evictions of each run, then how many more there are.
    First(usize),
    /// Every eviction.
    All,
}

/// What the text report shows besides the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// The config's name, for the heading.
    pub config: Option<String>,
    /// How much of the timeline to list.
    pub events: EventsShown,
}

/// The text report with the default options: the summary table, then one line per run with
/// its evictions by reason.
pub fn render_text(trace_name: &str, runs: &[SimRun]) -> String {
    render_text_with(trace_name, runs, &TextOptions::default())
}

/// The text report: a heading, the summary table (one column per run, headed with the policy
/// and its parameters), then the eviction timeline as `options.events` says.
pub fn render_text_with(trace_name: &str, runs: &[SimRun], options: &TextOptions) -> String {
    let mut out = String::new();
    let window = runs
        .iter()
        .map(|r| r.summary.window_secs)
        .fold(0.0, f64::max);
    let _ = write!(out, "trace {trace_name}");
    if let Some(config) = &options.config {
        let _ = write!(out, ", config {config}");
    }
    let _ = writeln!(
        out,
        ", window 0:00:00 to {} ({})",
        clock_time(window),
        duration_text(window)
    );
    out.push('\n');
    out.push_str(&summary_table(runs));
    out.push('\n');
    match options.events {
        EventsShown::Counts => {
            for run in runs {
                let _ = writeln!(out, "{}", eviction_counts(run));
            }
            if runs.iter().any(|r| !r.events.is_empty()) {
                out.push_str("(--events lists the evictions, --events all every one)\n");
            }
        }
        EventsShown::First(limit) => {
            for run in runs {
                out.push_str(&timeline(run, limit));
            }
        }
        EventsShown::All => {
            for run in runs {
                out.push_str(&timeline(run, usize::MAX));
            }
        }
    }
    out
}

/// The side-by-side summary table. Each column is headed with its policy's kind on the
/// header line, and its parameters on the lines below, wrapped to the column's width.
fn summary_table(runs: &[SimRun]) -> String {
    let rows = summary_rows(runs);
    let label_width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .chain(std::iter::once("summary".len()))
        .max()
        .unwrap_or(0);
    // Width of each column: its values, its kind, and its longest parameter.
    let widths: Vec<usize> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            rows.iter()
                .map(|r| r.values[i].chars().count())
                .chain(std::iter::once(run.policy.chars().count()))
                .chain(run.parameters.split_whitespace().map(|p| p.chars().count()))
                .chain(std::iter::once(15))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let headers: Vec<Vec<String>> = runs
        .iter()
        .zip(&widths)
        .map(|(run, &w)| {
            let mut lines = vec![run.policy.clone()];
            lines.extend(wrap(&run.parameters, w));
            lines
        })
        .collect();
    let header_lines = headers.iter().map(Vec::len).max().unwrap_or(1);
    let mut out = String::new();
    for line in 0..header_lines {
        let first = if line == 0 { "summary" } else { "" };
        let mut text = format!("{first:<label_width$}");
        for (header, &w) in headers.iter().zip(&widths) {
            let cell = header.get(line).map(String::as_str).unwrap_or("");
            let _ = write!(text, "  {cell:>w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    for row in &rows {
        let mut text = format!("{:<label_width$}", row.label);
        for (value, &w) in row.values.iter().zip(&widths) {
            let _ = write!(text, "  {value:>w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// Packs the words of `text` into lines of at most `width` characters (a longer word gets a
/// line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// `gradual-lru idle=1m …: 4 evictions (idle 4), 0:06:00 to 0:10:30`.
fn eviction_counts(run: &SimRun) -> String {
    let n = run.events.len();
    let mut line = format!(
        "{}: {n} eviction{}",
        run.label(),
        if n == 1 { "" } else { "s" }
    );
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &run.events {
        *by_reason.entry(e.reason.as_str()).or_insert(0) += 1;
    }
    if !by_reason.is_empty() {
        let parts: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = write!(line, " ({})", parts.join(", "));
    }
    if let (Some(first), Some(last)) = (run.events.first(), run.events.last()) {
        let _ = write!(
            line,
            ", {} to {}",
            clock_time(first.at_secs),
            clock_time(last.at_secs)
        );
    }
    line
}

/// One run's eviction timeline, at most `limit` lines, columns sized to their content.
fn timeline(run: &SimRun, limit: usize) -> String {
    let mut out = String::new();
    let n = run.events.len();
    let _ = writeln!(
        out,
        "== {}: {n} eviction{}",
        run.label(),
        if n == 1 { "" } else { "s" }
    );
    if n == 0 {
        out.push('\n');
        return out;
    }
    let shown = &run.events[..n.min(limit)];
    let header = ["time", "pool", "model", "worker", "reason", "left"];
    let cells: Vec<[String; 6]> = shown
        .iter()
        .map(|e| {
            [
                clock_time(e.at_secs),
                e.pool.clone(),
                e.model.clone(),
                e.worker.to_string(),
                e.reason.clone(),
                e.workers_after.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Times, workers and counts right-aligned; names left-aligned.
    let right = [true, false, false, true, false, true];
    let mut line = |row: [&str; 6]| {
        let mut text = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let w = widths[i];
            if right[i] {
                let _ = write!(text, "{cell:>w$}");
            } else {
                let _ = write!(text, "{cell:<w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &cells {
        line([
            row[0].as_str(),
            row[1].as_str(),
            row[2].as_str(),
            row[3].as_str(),
            row[4].as_str(),
            row[5].as_str(),
        ]);
    }
    if n > shown.len() {
        let _ = writeln!(
            out,
            "... {} more (--events all lists every one)",
            n - shown.len()
        );
    }
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------------------
// CSV.

/// The columns of [`render_csv`].
pub const CSV_HEADER: [&str; 7] = [
    "policy",
    "parameters",
    "pool",
    "model",
    "at_secs",
    "workers",
    "memory_bytes",
];

/// The worker-count and memory timeline as CSV, quoted where a field needs it (a pool or key
/// with a comma or a quote stays one field): `policy,parameters,pool,model,at_secs,workers,
/// memory_bytes`.
pub fn render_csv(runs: &[SimRun]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    // Writing records into a Vec cannot fail: the only errors are I/O errors of the sink.
    let _ = writer.write_record(CSV_HEADER);
    for run in runs {
        for p in &run.timeline {
            let _ = writer.write_record([
                run.policy.as_str(),
                run.parameters.as_str(),
                p.pool.as_str(),
                p.model.as_str(),
                &p.at_secs.to_string(),
                &p.workers.to_string(),
                &p.memory_bytes.to_string(),
            ]);
        }
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_time_is_always_h_mm_ss_with_optional_decimals() {
        assert_eq!(clock_time(360.0), "0:06:00");
        assert_eq!(clock_time(570.0), "0:09:30");
        assert_eq!(clock_time(3725.0), "1:02:05");
        assert_eq!(clock_time(61.5), "0:01:01.5");
        assert_eq!(clock_time(3509.843), "0:58:29.843");
        assert_eq!(clock_time(86_745.0), "24:05:45");
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(duration_text(0.0), "0s");
        assert_eq!(duration_text(0.044), "44ms");
        assert_eq!(duration_text(0.0044), "4.4ms");
        assert_eq!(duration_text(0.00035), "350µs");
        assert_eq!(duration_text(4.25), "4.25s");
        assert_eq!(duration_text(30.06), "30.1s");
        assert_eq!(duration_text(58_333.367), "16h 12m 13s");
        assert_eq!(duration_text(3810.0), "1h 3m 30s");
        assert_eq!(duration_text(3600.0), "1h");
        assert_eq!(duration_text(125.0), "2m 5s");
    }

    #[test]
    fn small_rates_stay_non_zero() {
        assert_eq!(count_and_percent(4, 19_366), "4 (0.02 %)");
        assert_eq!(count_and_percent(0, 19_366), "0 (0 %)");
        assert_eq!(count_and_percent(4, 5), "4 (80.0 %)");
        assert_eq!(percent_text(0.15), "0.15 %");
        assert_eq!(percent_text(0.0012), "0.001 %");
        assert_eq!(percent_text(4.08), "4.1 %");
    }

    #[test]
    fn sizes_and_worker_hours() {
        assert_eq!(bytes_text(0), "0 B");
        assert_eq!(bytes_text(56 << 30), "56.0 GiB");
        assert_eq!(bytes_text(512 << 20), "512 MiB");
        assert_eq!(bytes_text(3 << 29), "1.50 GiB");
        assert_eq!(worker_hours_text(14_506.4), "4.03");
        assert_eq!(worker_hours_text(11_707_634.1), "3252.1");
        assert_eq!(worker_hours_text(720.0), "0.200");
    }

    #[test]
    fn wrap_packs_words_to_the_width() {
        assert_eq!(
            wrap("idle=1m step=1m min_workers=0", 15),
            vec!["idle=1m step=1m", "min_workers=0"]
        );
        assert_eq!(wrap("", 10), Vec::<String>::new());
    }
}
