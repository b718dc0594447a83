//! What every worker cell of a pool shares: the clock, and the waiting room of blocked
//! acquires.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::clock::Clock;

/// Shared by a pool and all its cells.
pub(crate) struct PoolShared {
    pub(crate) clock: Arc<dyn Clock>,
    /// `clock.stamps_every_release()`, read once.
    pub(crate) stamps_every_release: bool,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    ready: Condvar,
}

impl PoolShared {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        PoolShared {
            stamps_every_release: clock.stamps_every_release(),
            clock,
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            ready: Condvar::new(),
        }
    }

    /// Wakes blocked acquires, if there are any (one atomic load otherwise).
    #[inline]
    pub(crate) fn wake_waiters(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.ready.notify_all();
        }
    }

    /// Waits until `retry` succeeds or `timeout` passes; `retry` runs under the waiting-room
    /// lock after registering as a waiter, so no wake-up between check and wait is lost.
    pub(crate) fn wait_for<T>(
        &self,
        timeout: Duration,
        mut retry: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let start = std::time::Instant::now();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = loop {
            if let Some(found) = retry() {
                break Some(found);
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                break None;
            }
            // Bounded waits: a wake-up is never lost, but a spawn that fails elsewhere only
            // frees a reservation, so look again now and then.
            let wait = (timeout - elapsed).min(Duration::from_millis(50));
            guard = self
                .ready
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }
}
