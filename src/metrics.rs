//! Where the pool and the scheduler report what the `metrics` facade exports. Every function is
//! a no-op unless the feature `metrics` is on (see the README's metrics section for the names).
//!
//! Call sites sit on slow paths only (spawns, timeouts, evictions, requests that waited, the
//! tick): the lease fast path reports nothing and reads no clock.

use std::time::Duration;

/// A worker of `model` finished loading in `took` (a pre-warm if `prewarm`).
pub(crate) fn spawned(pool: &str, model: &str, took: Duration, prewarm: bool) {
    let _ = (pool, model, took, prewarm);
}

/// A load of `model` failed (error, panic or past `spawn_timeout`).
pub(crate) fn spawn_failed(pool: &str, model: &str) {
    let _ = (pool, model);
}

/// `n` requests of `model` were served by a worker spawned while they waited.
pub(crate) fn cold_starts(pool: &str, model: &str, n: u64) {
    let _ = (pool, model, n);
}

/// A request of `model` gave up after `acquire_timeout`.
pub(crate) fn acquire_timeout(pool: &str, model: &str) {
    let _ = (pool, model);
}

/// A request that found no ready worker got one after `waited`.
pub(crate) fn acquire_waited(pool: &str, waited: Duration) {
    let _ = (pool, waited);
}

/// A worker left `pool` for `reason`.
pub(crate) fn evicted(pool: &str, reason: &str) {
    let _ = (pool, reason);
}
