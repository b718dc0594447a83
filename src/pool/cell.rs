//! One worker's slot in the pool: its state, in-flight count and release count in a single
//! atomic word.
//!
//! Layout of the state word: the low 24 bits are the number of requests in flight, bit 24 is
//! `DRAINING` (the worker is leaving the pool), bits 25 to 27 are flags for the release path,
//! and bits 28 to 63 count releases (wrapping).
//! Acquire is one compare-and-swap from "not draining, below the limit" to "in-flight + 1";
//! eviction is one compare-and-swap from "not draining, 0 in flight, exactly the release count
//! the policy saw" to "draining". So a request can never be handed to a worker being evicted, a
//! worker that has just received a request can never be evicted, and neither can one that served
//! a request since the snapshot its eviction was decided from. Release is one `fetch_add` that
//! takes one off the in-flight count and adds one to the release count.
//!
//! Each tick also records the word it saw (`tick_seen`), so that the next tick can count the
//! requests that arrived in between, including those that came and went: the releases since,
//! plus the change in the in-flight count.
//!
//! The flags tell a release to take the slow path: `KEY_WAITERS` (requests of this key are
//! queued: hand this capacity to the oldest), `BUDGET_WAITERS` (a spawn on this worker's memory
//! budget waits for memory: this worker may now be a victim), and `DRAINING` (the worker has
//! left the pool: the last release shuts it down). A waiter sets `KEY_WAITERS` on every worker of
//! its key with a read-modify-write *before* it looks for capacity one last time, and a release
//! learns the flags from the value its own `fetch_add` returns. Both touch the same word, so one
//! of them always sees the other: either the waiter finds the capacity the release freed, or
//! the release finds the flag and hands the capacity over. No fence and no second location are
//! involved, so there is no store-buffering window for a wake-up to be lost in (this is what
//! `tests/loom.rs` model-checks).
//!
//! `last_used` is stamped one of two ways (see [`crate::Clock::stamps_every_release`]): by every
//! release with the clock's exact time, or by the tick, which compares the release count with
//! the one it saw last and stamps a worker released since with a time read after that look.

use std::sync::{Arc, Weak};
use std::time::Duration;

use poolwarden_policies::WorkerId;

use super::shared::PoolShared;
use super::worker::Worker;
use super::PoolInner;
use crate::clock::to_nanos;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// Most requests a worker can have in flight (the width of the in-flight field).
pub(crate) const MAX_IN_FLIGHT: u32 = (1 << 24) - 1;
const IN_FLIGHT_MASK: u64 = MAX_IN_FLIGHT as u64;
const DRAINING: u64 = 1 << 24;
/// Requests of this worker's key are waiting: a release hands its capacity over.
pub(crate) const KEY_WAITERS: u64 = 1 << 25;
/// A spawn on this worker's memory budget waits for room: a release that leaves the worker idle
/// tells the budget.
pub(crate) const BUDGET_WAITERS: u64 = 1 << 26;
/// The flags that send a release down the slow path.
const SLOW: u64 = DRAINING | KEY_WAITERS | BUDGET_WAITERS;
const RELEASE_SHIFT: u32 = 28;
/// The fields that say what the worker did: in flight and releases (not the flags).
const WORK_MASK: u64 = !(((1 << RELEASE_SHIFT) - 1) ^ IN_FLIGHT_MASK);
/// No time recorded (a real time of `u64::MAX` ns is 584 years away).
const NO_TIME: u64 = u64::MAX;

/// The ordering of a release's `fetch_add`: its release half publishes everything the request
/// did with the worker to whoever next takes the word (the next lessee, or the eviction that
/// drains the worker and then shuts it down). `--cfg poolwarden_weaken_release` weakens it to
/// `Relaxed`, for the check that the model checker catches such a mutation
/// (`loom/tests/loom.rs`).
const RELEASE_ORDER: Ordering = if cfg!(poolwarden_weaken_release) {
    Ordering::Relaxed
} else {
    Ordering::AcqRel
};
/// Added by a release: one more release, one less in flight. The in-flight count of a worker
/// being released is at least 1, so the subtraction never borrows from `DRAINING`; the release
/// count's carry out of bit 63 is dropped, so the count wraps without touching the other fields.
const RELEASE: u64 = (1 << RELEASE_SHIFT) - 1;

/// One look at a worker's state word.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CellState(u64);

impl CellState {
    /// Requests in flight.
    #[inline]
    pub(crate) fn in_flight(self) -> u32 {
        (self.0 & IN_FLIGHT_MASK) as u32
    }

    /// Whether the worker is leaving the pool.
    #[inline]
    pub(crate) fn draining(self) -> bool {
        self.0 & DRAINING != 0
    }

    /// Whether requests of the worker's key were waiting (`KEY_WAITERS`).
    #[inline]
    pub(crate) fn key_waiters(self) -> bool {
        self.0 & KEY_WAITERS != 0
    }

    /// Whether a spawn on the worker's budget was waiting for memory (`BUDGET_WAITERS`).
    #[allow(dead_code)] // admission
    #[inline]
    pub(crate) fn budget_waiters(self) -> bool {
        self.0 & BUDGET_WAITERS != 0
    }

    /// Releases so far, modulo 2^36. A tick tells a released worker by a count that differs
    /// from the one it stamped; only a worker released a multiple of 2^36 times between two ticks
    /// and idle at both could pass unseen.
    #[inline]
    pub(crate) fn releases(self) -> u64 {
        self.0 >> RELEASE_SHIFT
    }

    /// Requests that started between `earlier` and this look: the releases since, plus the
    /// change in the in-flight count.
    #[inline]
    pub(crate) fn leases_since(self, earlier: CellState) -> u64 {
        let released =
            self.releases().wrapping_sub(earlier.releases()) & (u64::MAX >> RELEASE_SHIFT);
        (released + u64::from(self.in_flight())).saturating_sub(u64::from(earlier.in_flight()))
    }
}

/// A worker and its bookkeeping. `repr(C)` keeps the fields a lease and a tick touch at the
/// front, next to the `Arc` counts, so that they share as few cache lines as possible.
#[repr(C)]
pub(crate) struct WorkerCell<W: Worker> {
    state: AtomicU64,
    last_used_nanos: AtomicU64,
    /// The release count when a tick last stamped `last_used` (tick stamping only).
    stamped_releases: AtomicU64,
    /// The state word (work fields only) the last tick saw; a new worker starts from zero, so
    /// that the request it was spawned for counts as an arrival.
    tick_seen: AtomicU64,
    /// Under exact clocks: when the first request since the last tick found the worker idle
    /// (`NO_TIME` if none did).
    first_lease_nanos: AtomicU64,
    pub(crate) id: WorkerId,
    /// The pool's spawn counter when it became ready: a waiter that queued before that (its
    /// [`super::waiter::Waiter::seq`] is not above this) waited for its load, and is served cold
    /// by it.
    pub(crate) ready_seq: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) spawned_at: Duration,
    pub(crate) shared: Arc<PoolShared>,
    /// The pool, for the slow path of a release (gone once every handle of the pool is).
    pub(crate) owner: Weak<PoolInner<W>>,
    /// Whether `Worker::shutdown` was handed out (exactly once).
    shut_down: AtomicBool,
    /// Whether `Worker::shutdown` has returned (or panicked).
    shutdown_finished: AtomicBool,
    pub(crate) key: Arc<str>,
    pub(crate) worker: W,
}

impl<W: Worker> WorkerCell<W> {
    /// A ready worker with `in_flight` requests already leased (1 for a caller that spawned it
    /// for itself, 0 for one that joins the waiting room's hand-off) and `flags` set.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: WorkerId,
        key: Arc<str>,
        worker: W,
        memory_bytes: u64,
        shared: Arc<PoolShared>,
        owner: Weak<PoolInner<W>>,
        in_flight: u32,
        ready_seq: u64,
        flags: u64,
    ) -> Self {
        let now = shared.clock.now();
        WorkerCell {
            state: AtomicU64::new(u64::from(in_flight) | flags),
            last_used_nanos: AtomicU64::new(to_nanos(now)),
            stamped_releases: AtomicU64::new(0),
            tick_seen: AtomicU64::new(0),
            first_lease_nanos: AtomicU64::new(if shared.stamps_every_release && in_flight > 0 {
                to_nanos(now)
            } else {
                NO_TIME
            }),
            id,
            ready_seq,
            memory_bytes,
            spawned_at: now,
            shared,
            owner,
            shut_down: AtomicBool::new(false),
            shutdown_finished: AtomicBool::new(false),
            key,
            worker,
        }
    }

    /// The state word, read once.
    #[inline]
    pub(crate) fn state(&self) -> CellState {
        CellState(self.state.load(Ordering::Acquire))
    }

    /// Requests in flight and whether the worker is draining, read together.
    #[inline]
    pub(crate) fn load(&self) -> (u32, bool) {
        let state = self.state();
        (state.in_flight(), state.draining())
    }

    /// When the last request finished (or the spawn time). Under tick stamping, as of the last
    /// tick: never earlier than the truth.
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
                Ok(_) => {
                    if word & IN_FLIGHT_MASK == 0 && self.shared.stamps_every_release {
                        self.note_first_lease();
                    }
                    return true;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Under exact clocks, records when a request first found this worker idle since the last
    /// tick (the tick then knows when a quiet key's first request came).
    #[cold]
    fn note_first_lease(&self) {
        let now = to_nanos(self.shared.clock.now());
        let _ = self.first_lease_nanos.compare_exchange(
            NO_TIME,
            now,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// For the tick: the requests that started since the previous tick's look, and (under exact
    /// clocks) when the first of them found the worker idle. Records this look for the next.
    pub(crate) fn take_arrivals(&self, state: CellState) -> (u64, Option<u64>) {
        let seen = CellState(self.tick_seen.swap(state.0 & WORK_MASK, Ordering::AcqRel));
        let first = self.first_lease_nanos.swap(NO_TIME, Ordering::AcqRel);
        (
            state.leases_since(seen),
            (first != NO_TIME).then_some(first),
        )
    }

    /// The requests that started since the last tick's look, without recording a look (for a
    /// worker leaving the pool between ticks).
    pub(crate) fn arrivals_since_tick(&self) -> u64 {
        let seen = CellState(self.tick_seen.load(Ordering::Acquire));
        self.state().leases_since(seen)
    }

    /// Ends a lease: in-flight - 1 and release count + 1, after stamping `last_used` when the
    /// pool stamps every release. One `fetch_add`; the flags in the word it returns say whether
    /// anything else is owed (a waiter to hand the capacity to, a budget to tell, a shutdown).
    #[inline]
    pub(crate) fn release(this: &Arc<Self>) {
        let shared = &*this.shared;
        if shared.stamps_every_release {
            // `fetch_max`: with several requests in flight, two releases may stamp out of order.
            let now = to_nanos(shared.clock.now());
            this.last_used_nanos.fetch_max(now, Ordering::AcqRel);
        }
        let before = this.state.fetch_add(RELEASE, RELEASE_ORDER);
        if before & SLOW != 0 {
            Self::release_slow(this, CellState(before));
        }
    }

    #[cold]
    fn release_slow(this: &Arc<Self>, before: CellState) {
        if before.draining() {
            if before.in_flight() == 1 {
                Self::finish_drain(this);
            }
            return;
        }
        if let Some(pool) = this.owner.upgrade() {
            pool.after_release(this, before);
        }
    }

    /// Hands `Worker::shutdown` to the pool's reaper, exactly once, for a draining worker with
    /// nothing in flight.
    pub(crate) fn finish_drain(this: &Arc<Self>) {
        if this.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let cell = Arc::clone(this);
        this.shared.reaper.submit(Box::new(move || {
            /// Marks the shutdown finished also when it panics.
            struct Finished<'a>(&'a AtomicBool);
            impl Drop for Finished<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _finished = Finished(&cell.shutdown_finished);
            cell.worker.shutdown();
        }));
    }

    /// Whether `Worker::shutdown` has returned (or panicked).
    pub(crate) fn shutdown_finished(&self) -> bool {
        self.shutdown_finished.load(Ordering::Acquire)
    }

    /// Sets `flag` (`KEY_WAITERS` or `BUDGET_WAITERS`) on the word; returns the word before.
    pub(crate) fn set_flag(&self, flag: u64) -> CellState {
        CellState(self.state.fetch_or(flag, Ordering::AcqRel))
    }

    /// Clears `flag` on the word.
    pub(crate) fn clear_flag(&self, flag: u64) {
        self.state.fetch_and(!flag, Ordering::AcqRel);
    }

    /// Whether a release happened after the last tick stamp, given `state` read just now.
    #[inline]
    pub(crate) fn released_since_stamp(&self, state: CellState) -> bool {
        self.stamped_releases.load(Ordering::Acquire) != state.releases()
    }

    /// Tick stamping: records that every release counted in `state` ended by `at` (a time read
    /// after `state` was), and returns the worker's `last_used` from now on.
    pub(crate) fn stamp(&self, state: CellState, at: u64) -> u64 {
        let previous = self.last_used_nanos.fetch_max(at, Ordering::AcqRel);
        // After the stamp: whoever sees this count also sees a `last_used` that covers it.
        self.stamped_releases
            .store(state.releases(), Ordering::Release);
        previous.max(at)
    }

    /// Draining if idle at this instant and, when `releases` is given, released exactly that
    /// many times (modulo 2^36); false if busy, already draining, or used since.
    pub(crate) fn try_begin_drain(&self, releases: Option<u64>) -> bool {
        let mut word = self.state.load(Ordering::Acquire);
        loop {
            if word & (DRAINING | IN_FLIGHT_MASK) != 0 {
                return false;
            }
            if releases
                .is_some_and(|r| CellState(word).releases() != r & (u64::MAX >> RELEASE_SHIFT))
            {
                return false;
            }
            // Fails when a lease came (or came and went) in between, or a flag changed: look
            // again.
            match self.state.compare_exchange_weak(
                word,
                word | DRAINING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// Draining whatever its load (a dead worker, a closing pool): no new lease can reach it,
    /// and it is shut down once nothing is in flight (now, or by the last release).
    pub(crate) fn force_drain(this: &Arc<Self>) {
        let before = CellState(this.state.fetch_or(DRAINING, Ordering::AcqRel));
        if !before.draining() && before.in_flight() == 0 {
            Self::finish_drain(this);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::pool::reaper::Reaper;

    struct Unit;

    impl Worker for Unit {
        fn memory_bytes(&self) -> u64 {
            1
        }
    }

    fn cell() -> Arc<WorkerCell<Unit>> {
        let reaper = Reaper::new("test".into(), true);
        let shared = Arc::new(PoolShared::new(Arc::new(ManualClock::new()), reaper, false));
        Arc::new(WorkerCell::new(
            WorkerId(1),
            Arc::from("k"),
            Unit,
            1,
            shared,
            Weak::new(),
            1,
            0,
            0,
        ))
    }

    #[test]
    fn a_release_counts_itself_and_ends_one_request() {
        let cell = cell();
        assert!(cell.try_lease(2));
        WorkerCell::release(&cell);
        let state = cell.state();
        assert_eq!(
            (state.in_flight(), state.draining(), state.releases()),
            (1, false, 1)
        );
        WorkerCell::release(&cell);
        assert_eq!(cell.state().releases(), 2);
        assert_eq!(cell.state().in_flight(), 0);
    }

    #[test]
    fn the_release_count_wraps_without_touching_the_other_fields() {
        let cell = cell();
        let top = u64::MAX >> RELEASE_SHIFT;
        cell.state
            .store((top << RELEASE_SHIFT) | DRAINING | 2, Ordering::SeqCst);
        WorkerCell::release(&cell);
        let state = cell.state();
        assert_eq!(
            (state.in_flight(), state.draining(), state.releases()),
            (1, true, 0)
        );
        cell.state.store(top << RELEASE_SHIFT | 1, Ordering::SeqCst);
        WorkerCell::release(&cell);
        let state = cell.state();
        assert_eq!(
            (state.in_flight(), state.draining(), state.releases()),
            (0, false, 0)
        );
    }

    #[test]
    fn drain_needs_an_idle_worker_whatever_its_release_count() {
        let cell = cell();
        assert!(!cell.try_begin_drain(None), "busy: leased to its spawner");
        WorkerCell::release(&cell);
        assert!(cell.try_begin_drain(None));
        assert!(!cell.try_lease(1), "no lease reaches a draining worker");
        assert!(!cell.try_begin_drain(None), "already draining");
    }

    #[test]
    fn drain_from_a_stale_release_count_fails() {
        let cell = cell();
        WorkerCell::release(&cell);
        let seen = cell.state().releases();
        assert!(cell.try_lease(1));
        WorkerCell::release(&cell); // a request came and went after the look
        assert!(!cell.try_begin_drain(Some(seen)), "used since the snapshot");
        assert!(cell.try_begin_drain(Some(seen + 1)));
    }

    #[test]
    fn a_tick_counts_the_requests_that_came_and_went_since_its_last_look() {
        let cell = cell(); // spawned for one request, still in flight
        let (arrivals, _) = cell.take_arrivals(cell.state());
        assert_eq!(arrivals, 1);
        WorkerCell::release(&cell);
        for _ in 0..3 {
            assert!(cell.try_lease(2));
            WorkerCell::release(&cell);
        }
        assert!(cell.try_lease(2));
        assert_eq!(
            cell.arrivals_since_tick(),
            4,
            "3 came and went, 1 in flight"
        );
        let (arrivals, first) = cell.take_arrivals(cell.state());
        assert_eq!(arrivals, 4);
        assert_eq!(
            first,
            Some(0),
            "exact clock: the first lease that found it idle"
        );
        WorkerCell::release(&cell);
        let (arrivals, first) = cell.take_arrivals(cell.state());
        assert_eq!(
            (arrivals, first),
            (0, None),
            "a release alone is no arrival"
        );
    }

    #[test]
    fn a_stamp_covers_the_releases_it_saw_and_never_moves_back() {
        let cell = cell();
        WorkerCell::release(&cell);
        let seen = cell.state();
        assert!(cell.released_since_stamp(seen));
        assert_eq!(cell.stamp(seen, 50), 50);
        assert!(!cell.released_since_stamp(cell.state()));
        assert_eq!(cell.last_used_nanos(), 50);
        // A release after the look is not covered by that stamp.
        assert!(cell.try_lease(1));
        WorkerCell::release(&cell);
        assert!(cell.released_since_stamp(cell.state()));
        assert_eq!(cell.stamp(cell.state(), 40), 50, "stamps only move forward");
    }
}
