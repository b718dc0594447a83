//! Time sources. Every time in poolwarden is a [`Duration`] since the clock's origin; nothing
//! reads the wall clock for a decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A monotonic time source. Times are offsets from the clock's own origin.
pub trait Clock: Send + Sync + 'static {
    /// The current time since this clock's origin. Never goes backwards.
    fn now(&self) -> Duration;

    /// Whether a pool on this clock reads it at every lease release.
    ///
    /// `true` (the default) stamps each worker's `last_used` with the exact time its request
    /// ended: results under a virtual clock such as [`ManualClock`] are exact. `false` lets the
    /// release path skip the clock: a release only counts itself in the worker's state word,
    /// and each tick stamps the workers it finds released since the previous tick with a time
    /// read after it looked. `last_used` is then late by at most one tick, never early, so
    /// idleness is never overestimated and no worker is evicted before its time. The real
    /// clocks ([`TscClock`], [`SystemClock`]) return `false`: reading them costs as much as the
    /// rest of a lease. A pool on a memory budget stamps every release whatever its clock says:
    /// admission ranks idle workers by `last_used` between ticks.
    fn stamps_every_release(&self) -> bool {
        true
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }

    fn stamps_every_release(&self) -> bool {
        (**self).stamps_every_release()
    }
}

/// The operating system's monotonic clock ([`Instant`]), nanosecond resolution.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// The process-wide system clock: every `SystemClock` shares one origin (the first call),
    /// so two of them always agree.
    pub fn new() -> Self {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        SystemClock {
            origin: *ORIGIN.get_or_init(Instant::now),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn stamps_every_release(&self) -> bool {
        false
    }
}

/// A monotonic clock read from the CPU's time-stamp counter through the `quanta` crate where
/// the counter is invariant and calibrated (a few nanoseconds a read), falling back to the OS
/// clock elsewhere. The default clock of a [`crate::Pool`] and the [`crate::Scheduler`]: the
/// cheapest real clock for the ticks, while lease releases on it read no clock at all (see
/// [`Clock::stamps_every_release`]).
///
/// The counter is read only with the feature `tsc` (on by default); without it, a `TscClock`
/// reads the OS clock, exactly like [`SystemClock`].
#[derive(Debug, Clone)]
pub struct TscClock {
    #[cfg(feature = "tsc")]
    clock: quanta::Clock,
    #[cfg(feature = "tsc")]
    origin: quanta::Instant,
    #[cfg(not(feature = "tsc"))]
    system: SystemClock,
}

impl TscClock {
    /// The process-wide TSC clock: calibrated once, and every `TscClock` shares one origin, so
    /// two of them always agree.
    pub fn new() -> Self {
        static SHARED: OnceLock<TscClock> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                #[cfg(feature = "tsc")]
                {
                    let clock = quanta::Clock::new();
                    let origin = clock.now();
                    TscClock { clock, origin }
                }
                #[cfg(not(feature = "tsc"))]
                TscClock {
                    system: SystemClock::new(),
                }
            })
            .clone()
    }
}

impl Default for TscClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TscClock {
    #[cfg(feature = "tsc")]
    fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin)
    }

    #[cfg(not(feature = "tsc"))]
    fn now(&self) -> Duration {
        self.system.now()
    }

    fn stamps_every_release(&self) -> bool {
        false
    }
}

/// A clock that moves only when told to: tests and the simulator advance it by hand, and every
/// result under it is exact.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(to_nanos(by), Ordering::SeqCst);
    }

    /// Sets the clock to `at`. Setting it backwards is ignored: the clock is monotonic.
    pub fn set(&self, at: Duration) {
        self.nanos.fetch_max(to_nanos(at), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// `d` in whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_secs(5));
        clock.set(Duration::from_secs(2));
        assert_eq!(clock.now(), Duration::from_secs(5));
        clock.set(Duration::from_millis(7500));
        assert_eq!(clock.now(), Duration::from_millis(7500));
    }

    #[test]
    fn real_clocks_are_monotonic() {
        let system = SystemClock::new();
        let tsc = TscClock::new();
        let (a, b) = (system.now(), tsc.now());
        std::thread::sleep(Duration::from_millis(2));
        assert!(system.now() > a);
        assert!(tsc.now() > b);
    }
}
