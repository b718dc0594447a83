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

mod engine;
mod pareto;
mod report;
#[cfg(feature = "cli")]
mod svg;
mod trace;

pub use engine::{policy_label, simulate, Progress, SimError, SimOptions, VirtualWorker};
pub use pareto::{pareto_points, ParetoPoint};
pub use report::{
    align_windows, clock_time, render_csv, render_text, SimEvent, SimRun, Summary, TimelinePoint,
};
#[cfg(feature = "cli")]
pub use svg::{render_svg, SvgError};
pub use trace::{Request, ServiceModel, Trace, TraceError, TraceFormat, DEFAULT_POOL};
