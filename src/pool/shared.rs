//! What every worker cell of a pool shares: the clock, the reaper that shuts workers down, and
//! where spawn events go.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cell::WorkerCell;
use super::reaper::Reaper;
use super::worker::Worker;
use crate::clock::Clock;
use crate::events::{EventSink, PoolEvent, SpawnEvent};

/// Shared by a pool and all its cells (a cell may outlive its pool: a lease held past the last
/// pool handle still releases, and its worker is still shut down).
pub(crate) struct PoolShared {
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether every release stamps `last_used` with the clock (and a lease of an idle worker
    /// notes its time): `clock.stamps_every_release()`, or a pool on a memory budget, whose
    /// admission ranks victims by `last_used` between ticks.
    pub(crate) stamps_every_release: bool,
    pub(crate) reaper: Reaper,
    /// The scheduler's subscribers, once the pool is registered (spawn events).
    events: Mutex<Option<EventSink>>,
}

impl PoolShared {
    /// `exact`: stamp every release whatever the clock (a pool on a budget).
    pub(crate) fn new(clock: Arc<dyn Clock>, reaper: Reaper, exact: bool) -> Self {
        PoolShared {
            stamps_every_release: exact || clock.stamps_every_release(),
            clock,
            reaper,
            events: Mutex::new(None),
        }
    }

    /// Spawn events go to `sink` from now on (the scheduler attaches its own at registration).
    pub(crate) fn attach_events(&self, sink: EventSink) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Publishes the spawn of `cell` (it has just joined its key) to the subscribers, if any.
    /// The pool calls it once per new worker, from `PoolInner::add_worker`, which every spawn
    /// path goes through (a finished load, `SpawnReservation::complete`).
    pub(crate) fn publish_spawn<W: Worker>(
        &self,
        pool: &Arc<str>,
        cell: &WorkerCell<W>,
        load_time: Duration,
        prewarm: bool,
    ) {
        let sink = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(sink) = sink else {
            return;
        };
        if !sink.has_subscribers() {
            return;
        }
        sink.publish(PoolEvent::Spawn(SpawnEvent {
            at: cell.spawned_at,
            pool: Arc::clone(pool),
            key: Arc::clone(&cell.key),
            worker: cell.id,
            memory_bytes: cell.memory_bytes,
            load_time,
            prewarm,
        }));
    }
}
