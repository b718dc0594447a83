//! One key's state in the pool: its workers, its spawns in progress, and its waiting room.
//!
//! Everything here changes under the key's shard write lock, except the atomics the tick
//! updates under a read lock. The request path reads `workers` and `waiters` under the read
//! lock: a ready worker is leased only when nobody waits, so a late arrival never overtakes a
//! queued request.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use poolwarden_policies::KeyId;

use super::cell::{WorkerCell, KEY_WAITERS};
use super::lease::Lease;
use super::waiter::{Outcome, Waiter, Wake};
use super::worker::Worker;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// No time recorded.
pub(crate) const NO_TIME: u64 = u64::MAX;

/// A spawn in progress for a key.
pub(crate) struct SpawnTicket<W: Worker> {
    /// Unique in the pool, from the counter that also orders waiters and ready workers (see
    /// [`Waiter::seq`]).
    pub(crate) id: u64,
    /// When it started (the pool's clock).
    pub(crate) started: Duration,
    /// Started by a pre-warm rather than for waiting requests.
    pub(crate) prewarm: bool,
    /// The waiter whose arrival called for it: told if it fails.
    pub(crate) trigger: Option<Weak<Waiter<W>>>,
    /// Whether it may load: always without a budget; with one, once the budget admitted it
    /// (until then it waits for memory, and `started` is when it was admitted).
    pub(crate) admitted: bool,
    /// Bytes reserved for it on the pool's memory budget (0 without a budget).
    pub(crate) reserved_bytes: u64,
}

/// Per-key counters, for stats and metrics.
#[derive(Default)]
pub(crate) struct KeyCounters {
    pub(crate) spawns: AtomicU64,
    pub(crate) spawn_failures: AtomicU64,
    pub(crate) cold_starts: AtomicU64,
    pub(crate) acquire_timeouts: AtomicU64,
}

/// One key's workers, spawns and waiters: the value of the pool's map.
pub(crate) struct KeyEntry<W: Worker> {
    pub(crate) name: Arc<str>,
    pub(crate) id: KeyId,
    pub(crate) workers: Vec<Arc<WorkerCell<W>>>,
    pub(crate) spawns: Vec<SpawnTicket<W>>,
    pub(crate) waiters: VecDeque<Arc<Waiter<W>>>,
    /// Whether `KEY_WAITERS` is set on the workers (it is while anyone waits).
    flagged: bool,
    pub(crate) last_eviction: Option<Duration>,
    /// Index into the pool's override table plus one; 0 for none.
    pub(crate) overrides: usize,
    /// Arrivals since the last tick that no live worker's state word counts: requests that
    /// gave up (timed out, spawn failed) and requests served by workers that left since.
    pub(crate) arrivals: AtomicU64,
    /// When the first request since the last tick that found no ready worker arrived
    /// (`NO_TIME`: none).
    pub(crate) first_arrival: AtomicU64,
    /// Whether the last tick saw the key with nothing in flight and nobody waiting (true for a
    /// new key).
    pub(crate) idle_at_tick: AtomicBool,
    pub(crate) counters: KeyCounters,
}

/// The limits a pump works within.
pub(crate) struct Limits {
    pub(crate) max_in_flight: u32,
    pub(crate) max_workers: usize,
    /// Whether spawns need a memory budget's admission before they load.
    pub(crate) budgeted: bool,
}

impl<W: Worker> KeyEntry<W> {
    pub(crate) fn new(name: Arc<str>, id: KeyId, overrides: usize) -> Self {
        KeyEntry {
            name,
            id,
            workers: Vec::new(),
            spawns: Vec::new(),
            waiters: VecDeque::new(),
            flagged: false,
            last_eviction: None,
            overrides,
            arrivals: AtomicU64::new(0),
            first_arrival: AtomicU64::new(NO_TIME),
            idle_at_tick: AtomicBool::new(true),
            counters: KeyCounters::default(),
        }
    }

    /// Whether nothing is left of the key: no worker, no spawn, no waiter (the tick may then
    /// forget it).
    pub(crate) fn is_vacant(&self) -> bool {
        self.workers.is_empty() && self.spawns.is_empty() && self.waiters.is_empty()
    }

    /// Whether `KEY_WAITERS` is set on the workers (new workers must start with it).
    pub(crate) fn flags(&self) -> u64 {
        if self.flagged {
            KEY_WAITERS
        } else {
            0
        }
    }

    /// Whether one of its spawns waits for memory.
    pub(crate) fn waits_for_memory(&self) -> bool {
        self.spawns.iter().any(|t| !t.admitted)
    }

    /// A lease on the ready worker with spare capacity that has the fewest requests in flight
    /// (ties: the most recently used, then the highest id), so that surplus workers age out.
    #[inline]
    pub(crate) fn lease_ready(&self, limit: u32) -> Option<Lease<W>> {
        loop {
            let mut best: Option<(&Arc<WorkerCell<W>>, u32, u64)> = None;
            for cell in &self.workers {
                let (in_flight, draining) = cell.load();
                if draining || in_flight >= limit {
                    continue;
                }
                let last_used = cell.last_used_nanos();
                let better = match best {
                    None => true,
                    Some((b, f, l)) => {
                        in_flight < f
                            || (in_flight == f
                                && (last_used > l || (last_used == l && cell.id > b.id)))
                    }
                };
                if better {
                    best = Some((cell, in_flight, last_used));
                }
            }
            let (cell, _, _) = best?;
            if cell.try_lease(limit) {
                return Some(Lease {
                    cell: Arc::clone(cell),
                });
            }
        }
    }

    /// Serves the waiting room: sets `KEY_WAITERS` while anyone waits (before looking for
    /// capacity, so that a release racing with this either is seen here or sees the flag),
    /// grants free capacity to the oldest waiters, and reserves the spawns the rest need: each
    /// spawn in progress counts for `max_in_flight` waiters, within `max_workers`. Wakes go to
    /// `wakes` (to be woken with no lock held); the new spawn tickets are appended to
    /// `self.spawns` for the caller to start (or to ask the budget for). Spawns still waiting
    /// for memory that the queue no longer needs (their requests gave up) are dropped into
    /// `withdrawn`. Returns (spawns started, cold starts granted).
    pub(crate) fn pump(
        &mut self,
        limits: &Limits,
        next_ticket: &AtomicU64,
        now: Duration,
        wakes: &mut Vec<Wake>,
        leftovers: &mut Vec<Outcome<W>>,
        withdrawn: &mut Vec<SpawnTicket<W>>,
    ) -> (usize, u64) {
        let mut cold_starts = 0;
        if !self.waiters.is_empty() && !self.flagged {
            self.flagged = true;
            for cell in &self.workers {
                cell.set_flag(KEY_WAITERS);
            }
        }
        while !self.waiters.is_empty() {
            let Some(lease) = self.lease_ready(limits.max_in_flight) else {
                break;
            };
            let Some(waiter) = self.waiters.pop_front() else {
                leftovers.push(Outcome::Granted { lease, cold: false });
                break;
            };
            let cold = lease.cell.ready_seq >= waiter.seq;
            if cold {
                cold_starts += 1;
                self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
            }
            match waiter.finish(Outcome::Granted { lease, cold }) {
                Ok(wake) => wakes.push(wake),
                // Not reachable: a queued waiter is still waiting. Keep the lease for release
                // after the lock.
                Err(outcome) => leftovers.push(outcome),
            }
        }
        let per_spawn = limits.max_in_flight as usize;
        // Spawns waiting for memory beyond what the queue needs now are withdrawn.
        let wanted = self.waiters.len().div_ceil(per_spawn);
        while self.spawns.len() > wanted {
            let Some(position) = self.spawns.iter().rposition(|t| !t.admitted && !t.prewarm) else {
                break;
            };
            withdrawn.push(self.spawns.remove(position));
        }
        let mut started = 0;
        let capacity = self.spawns.len() * per_spawn;
        let mut needed = self.waiters.len().saturating_sub(capacity);
        while needed > 0 && self.workers.len() + self.spawns.len() < limits.max_workers {
            self.spawns.push(SpawnTicket {
                id: next_ticket.fetch_add(1, Ordering::Relaxed),
                started: now,
                prewarm: false,
                trigger: self.waiters.back().map(Arc::downgrade),
                admitted: !limits.budgeted,
                reserved_bytes: 0,
            });
            started += 1;
            needed = needed.saturating_sub(per_spawn);
        }
        if self.waiters.is_empty() && self.flagged {
            self.flagged = false;
            for cell in &self.workers {
                cell.clear_flag(KEY_WAITERS);
            }
        }
        (started, cold_starts)
    }

    /// Takes `waiter` out of the queue; false if it was not in it (it was granted or failed).
    pub(crate) fn remove_waiter(&mut self, waiter: &Arc<Waiter<W>>) -> bool {
        match self.waiters.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            Some(position) => {
                self.waiters.remove(position);
                true
            }
            None => false,
        }
    }
}
