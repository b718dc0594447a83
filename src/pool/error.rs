//! Errors of the request path.

use std::time::Duration;

use super::worker::SpawnError;

/// Why [`crate::Pool::acquire`] returned no lease.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// The factory failed to create a worker; the pool's accounting is unchanged. The
    /// factory's error is the [`source`](std::error::Error::source), not part of the message.
    #[error("spawning a worker for `{key}` failed")]
    Spawn {
        /// The key.
        key: String,
        /// The factory's error.
        #[source]
        source: SpawnError,
    },
    /// The factory panicked; the pool's accounting is unchanged.
    #[error("the worker factory panicked while spawning for `{key}`")]
    SpawnPanicked {
        /// The key.
        key: String,
    },
    /// Every worker of the key stayed busy and no more could be spawned within the timeout.
    #[error("no worker for `{key}` became free within {waited:?}")]
    Timeout {
        /// The key.
        key: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The load this request called for took longer than the pool's `spawn_timeout`; it counts
    /// as a failed spawn.
    #[error("loading a worker for `{key}` took longer than the spawn timeout ({after:?})")]
    SpawnTimeout {
        /// The key.
        key: String,
        /// The pool's `spawn_timeout`.
        after: Duration,
    },
    /// No memory for the worker this request needed: its footprint did not fit its pool's
    /// memory budget within `acquire_timeout` (the idle workers that admission may evict did
    /// not make room), or it is bigger than the budget's whole limit (then it fails at once).
    #[error("no memory for `{key}`: a worker needs {} and budget `{budget}` has {} free", poolwarden_policies::ByteSize(*needed), poolwarden_policies::ByteSize(*free))]
    NoMemory {
        /// The key.
        key: String,
        /// The worker's footprint, in bytes.
        needed: u64,
        /// The budget.
        budget: String,
        /// Its free bytes when the request failed.
        free: u64,
    },
    /// The pool was closed ([`crate::Pool::close`]) or dropped.
    #[error("pool `{pool}` is closed")]
    Closed {
        /// The pool.
        pool: String,
    },
}
