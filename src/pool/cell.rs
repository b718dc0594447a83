//! One worker's slot in the pool: its state and in-flight count in a single atomic word.
//!
//! Layout of the state word: bit 63 is `DRAINING` (the worker is leaving the pool), the low 32
//! bits are the number of requests in flight. Acquire is one compare-and-swap from "not draining,
//! below the limit" to "in-flight + 1"; eviction is one compare-and-swap from "not draining,
//! 0 in flight" to "draining". So a request can never be handed to a worker being evicted, and
//! a worker that has just received a request can never be evicted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::WorkerId;

use super::shared::PoolShared;
use crate::clock::to_nanos;

const DRAINING: u64 = 1 << 63;
const IN_FLIGHT_MASK: u64 = u32::MAX as u64;

/// A worker and its bookkeeping.
pub(crate) struct WorkerCell<W> {
    pub(crate) id: WorkerId,
    pub(crate) key: Arc<str>,
    state: AtomicU64,
    last_used_nanos: AtomicU64,
    pub(crate) spawned_at: Duration,
    pub(crate) memory_bytes: u64,
    pub(crate) worker: W,
    pub(crate) shared: Arc<PoolShared>,
}

impl<W> WorkerCell<W> {
    /// A ready worker, already leased once to the caller that spawned it.
    pub(crate) fn new_leased(
        id: WorkerId,
        key: Arc<str>,
        worker: W,
        memory_bytes: u64,
        shared: Arc<PoolShared>,
    ) -> Self {
        let now = shared.clock.now();
        WorkerCell {
            id,
            key,
            state: AtomicU64::new(1),
            last_used_nanos: AtomicU64::new(to_nanos(now)),
            spawned_at: now,
            memory_bytes,
            worker,
            shared,
        }
    }

    /// Requests in flight and whether the worker is draining, read together.
    #[inline]
    pub(crate) fn load(&self) -> (u32, bool) {
        let word = self.state.load(Ordering::Acquire);
        ((word & IN_FLIGHT_MASK) as u32, word & DRAINING != 0)
    }

    /// When the last request finished (or the spawn time).
    #[inline]
    pub(crate) fn last_used_nanos(&self) -> u64 {
        self.last_used_nanos.load(Ordering::Acquire)
    }

    /// In-flight + 1 if the worker is not draining and below `limit`. One CAS attempt per
    /// observed word; retries only while the word keeps changing under a valid state.
    #[inline]
    pub(crate) fn try_lease(&self, limit: u32) -> bool {
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            if word & DRAINING != 0 || (word & IN_FLIGHT_MASK) as u32 >= limit {
                return false;
            }
            match self.state.compare_exchange_weak(
                word,
                word + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Ends a lease: stamps `last_used`, then in-flight - 1.
    #[inline]
    pub(crate) fn release(&self) {
        let now = to_nanos(self.shared.clock.now());
        self.last_used_nanos.fetch_max(now, Ordering::AcqRel);
        self.state.fetch_sub(1, Ordering::AcqRel);
        self.shared.wake_waiters();
    }

    /// Draining if idle at this instant; false if busy or already draining.
    pub(crate) fn try_begin_drain(&self) -> bool {
        self.state
            .compare_exchange(0, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Draining whatever its load (used for dead workers); no new lease can reach it.
    pub(crate) fn force_drain(&self) {
        self.state.fetch_or(DRAINING, Ordering::AcqRel);
    }
}
