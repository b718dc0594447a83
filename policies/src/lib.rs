//! # poolwarden-policies
//!
//! The small, stable half of [poolwarden](https://crates.io/crates/poolwarden): the
//! [`EvictionPolicy`] trait, the read-only [`Snapshot`] a policy sees, the [`Proposal`]s it
//! returns with an [`EvictionReason`], and the built-in policies with their serde config structs.
//!
//! This crate is pure: no threads, no clock reads, no I/O, no logging. A policy is a function of
//! a snapshot (plus whatever state it keeps in `&mut self`); the pool re-checks every proposal
//! atomically when it evicts, so a stale proposal can never touch a busy worker.
//!
//! A crate that writes its own policy depends on this crate alone:
//!
//! ```
//! use poolwarden_policies::{EvictionPolicy, EvictionReason, Proposal, Snapshot};
//!
//! /// Evicts every idle worker of a key that has more than two workers.
//! struct AtMostTwo;
//!
//! impl EvictionPolicy for AtMostTwo {
//!     fn name(&self) -> &str {
//!         "at-most-two"
//!     }
//!
//!     fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
//!         for (index, key) in snapshot.governed_keys() {
//!             let workers = snapshot.workers_of(key);
//!             let surplus = workers.len().saturating_sub(2);
//!             for worker in workers.iter().filter(|w| w.is_idle()).take(surplus) {
//!                 out.push(Proposal::new(index, worker.id, EvictionReason::custom("at-most-two")));
//!             }
//!         }
//!     }
//! }
//! ```
#![warn(missing_docs)]

mod builtin;
mod byte_size;
mod policy;
mod proposal;
mod snapshot;

pub use builtin::chain::ChainPolicy;
pub use builtin::gradual_lru::{GradualLru, GradualLruConfig};
pub use builtin::hybrid_histogram::{HybridHistogram, HybridHistogramConfig};
pub use builtin::keep_alive::{KeepAlive, KeepAliveConfig};
pub use builtin::max_lifetime::{MaxLifetime, MaxLifetimeConfig};
pub use builtin::memory_pressure::{MemoryPressure, MemoryPressureConfig, VictimOrder};
pub use builtin::noop::{Noop, NoopConfig};
pub use builtin::InvalidParameter;
pub use byte_size::{ByteSize, ParseByteSizeError};
pub use policy::EvictionPolicy;
pub use proposal::{EvictionReason, Prewarm, Proposal};
pub use snapshot::{
    KeyId, KeyIndex, KeyView, MemoryReading, ModelOverrides, PoolView, Snapshot, WorkerId,
    WorkerView,
};

/// Formats a duration the way configs write it (`1m`, `1h 30m`, `250ms`).
pub fn format_duration(duration: std::time::Duration) -> String {
    humantime_serde::re::humantime::format_duration(duration).to_string()
}
