//! The simulator: replays request traces against the real scheduler, pools and policies under a
//! [`crate::ManualClock`], with virtual workers, and measures cold starts, memory held for
//! nothing, and waits.
//!
//! ```
//! use poolwarden::config::{Config, PolicyRegistry};
//! use poolwarden::sim::{simulate, SimOptions, Trace};
//!
//! let registry = PolicyRegistry::new();
//! let config = Config::embedded_default(&registry).unwrap();
//! let run = simulate(&config, &registry, &config.policy, &Trace::scenario5(), &SimOptions::default(), None).unwrap();
//! let times: Vec<f64> = run.events.iter().map(|e| e.at_secs).collect();
//! assert_eq!(times, vec![360.0, 420.0, 570.0, 630.0]);
//! ```

#[cfg(feature = "cli")]
mod chart;
mod engine;
#[cfg(feature = "cli")]
mod pareto;
mod pareto_points;
mod report;
#[cfg(feature = "cli")]
mod svg;
mod trace;

#[cfg(feature = "cli")]
pub use chart::{render_svg, simulation_svg, ChartOptions};
pub use engine::{policy_label, simulate, Progress, SimError, SimOptions, VirtualWorker};
#[cfg(feature = "cli")]
pub use pareto::{pareto_front, pareto_svg, render_pareto};
pub use pareto_points::{pareto_points, ParetoPoint};
pub use report::{
    align_windows, bytes_text, clock_time, count_and_percent, describe_parameters, duration_text,
    memory_limit_of, percent_text, render_csv, render_text, render_text_with, summary_rows,
    worker_hours_text, EventsShown, SimEvent, SimRun, Summary, SummaryRow, TextOptions,
    TimelinePoint, CSV_HEADER,
};
#[cfg(feature = "cli")]
pub use svg::SvgError;
pub use trace::{
    Request, ServiceModel, Trace, TraceError, TraceErrorKind, TraceFormat, DEFAULT_POOL,
};
