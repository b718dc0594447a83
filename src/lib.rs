//! # poolwarden
//!
//! Keeps pools of expensive workers (ML model instances above all) at the right size: scales
//! each model's workers back to zero gradually when traffic stops, frees memory under
//! pressure, and never touches a worker in the middle of a request.
//!
//! * [`Pool`]: model key → workers, leased one request at a time ([`Lease`]).
//! * [`Scheduler`]: one maintenance thread for every registered pool; each tick it reads memory
//!   once, snapshots the pools, runs the policies and applies their proposals.
//! * Policies ([`EvictionPolicy`] and the built-ins) live in the `poolwarden-policies` crate,
//!   re-exported here as [`policies`].
//! * [`config`]: TOML configuration and the policy [`PolicyRegistry`].
//! * Observability: [`metrics`] (the `metrics` facade, feature `metrics`), [`status`]
//!   ([`Scheduler::status`]) and [`events`] ([`Scheduler::subscribe`]).
//!
//! Features: `cli` (the `poolwarden` command; implies `sim`), `sim` (the simulator), `tsc`
//! (`TscClock` on the CPU's counter), `metrics` — all on by default — and `nvml`.
//! `default-features = false` leaves the pool, the scheduler, the probes and the config.
//!
//! Policies propose, the pool enforces, the scheduler acts.
#![warn(missing_docs)]

pub mod budget;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod events;
pub mod metrics;
pub mod pool;
pub mod probe;
pub mod scheduler;
#[cfg(feature = "sim")]
pub mod sim;
mod snapshot_buffer;
pub mod status;
mod sync;

pub use poolwarden_policies as policies;
pub use poolwarden_policies::{
    EvictionPolicy, EvictionReason, KeyId, Prewarm, Proposal, Snapshot, WorkerId,
};

pub use budget::{Budget, BudgetBuilder, BudgetStats};
pub use clock::{Clock, ManualClock, SystemClock, TscClock};
pub use config::{BuildError, Config, ConfigError, PolicyRegistry};
pub use events::{EventReceiver, PoolEvent, SpawnEvent};
pub use pool::{
    AcquireError, Eviction, Lease, ManagedPool, Pool, PoolBuilder, PoolStats, ReserveRefusal,
    SpawnError, SpawnReservation, Worker, WorkerFactory,
};
pub use probe::{FixedProbe, MemoryProbe, MemoryReading, SysinfoProbe};
pub use scheduler::{
    EvictionEvent, PrewarmStart, Scheduler, SchedulerBuilder, SchedulerStats, TickReport,
    UnknownPool,
};
pub use snapshot_buffer::{DeadWorker, SnapshotBuffer};
pub use status::Status;

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
