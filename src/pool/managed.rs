//! What the scheduler needs from a pool, whatever its worker type.

use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::{EvictionReason, KeyView, PoolView, WorkerId, WorkerView};

use super::cell::{CellState, WorkerCell};
use super::entry::NO_TIME;
use super::inner::Removal;
use super::shared::PoolShared;
use super::worker::Worker;
use super::{Eviction, Pool};
use crate::clock::to_nanos;
use crate::events::EventSink;
use crate::snapshot_buffer::{DeadWorker, SnapshotBuffer};
use crate::status::{ModelStatus, PoolStatus, WorkerStatus};
use crate::sync::Ordering;

/// What the scheduler needs from a pool, whatever its worker type. Implemented by [`Pool`].
pub trait ManagedPool: Send + Sync + 'static {
    /// The pool's name.
    fn name(&self) -> &str;

    /// Appends the pool's keys and ready workers to `buffer` as pool number `pool_index`, and
    /// records dead workers in `buffer.dead` instead of listing them. It also counts each key's
    /// arrivals since the previous call: call it once per tick (the scheduler does).
    fn snapshot_into(&self, buffer: &mut SnapshotBuffer, pool_index: usize);

    /// The end of a tick: forgets the keys the snapshot saw with nothing left (no worker, no
    /// spawn, no waiter) if they still have nothing, and fails spawns it saw past their
    /// deadline.
    fn end_tick(&self);

    /// Evicts the worker if it is idle at this instant and, when `releases` is given, has
    /// finished exactly that many requests (it was not used since the snapshot).
    fn evict(
        &self,
        key: &str,
        worker: WorkerId,
        reason: EvictionReason,
        releases: Option<u64>,
    ) -> Option<Eviction>;

    /// Starts up to `workers` spawns of `key` off the caller's thread, for a pre-warm, as far
    /// as the key's limit allows. Returns how many it started.
    fn prewarm(&self, key: &str, workers: usize) -> usize;

    /// Ready plus starting workers of `key`.
    fn ready_or_starting(&self, key: &str) -> usize;

    /// How long a worker of `key` is expected to take to load.
    fn cold_start_of(&self, key: &str) -> Duration;

    /// Removes a dead worker whatever its in-flight count.
    fn remove_dead(&self, key: &str, worker: WorkerId) -> Option<Eviction>;

    /// Bytes accounted for live workers.
    fn accounted_bytes(&self) -> u64;

    /// Live workers over all keys.
    fn total_workers(&self) -> usize;

    /// Waits until no worker shutdown is queued or running, at most `timeout`; returns whether
    /// none is left.
    fn wait_shutdowns(&self, timeout: Duration) -> bool;

    /// The evictions admission made since the last call (between ticks), with their times.
    fn take_admission_evictions(&self) -> Vec<(Duration, Eviction)>;

    /// The memory budget the pool's spawns are admitted against, if any (the scheduler reports
    /// it in its status and metrics).
    fn budget(&self) -> Option<crate::budget::Budget> {
        None
    }

    /// The pool's state at `now` for a status view: every key with its workers, requests in
    /// flight and waiting, spawns in progress, and each live worker. Read-only: unlike
    /// [`ManagedPool::snapshot_into`] it counts no arrivals and stamps nothing, so it may be
    /// called at any time from any thread. `policy` is left empty for the caller to fill.
    fn status(&self, now: Duration) -> PoolStatus {
        let _ = now;
        PoolStatus {
            name: self.name().to_string(),
            policy: String::new(),
            accounted_bytes: self.accounted_bytes(),
            max_workers_per_model: 0,
            acquire_timeout: Duration::ZERO,
            models: Vec::new(),
        }
    }

    /// Sends the pool's spawn events to `sink` (the scheduler attaches its own when the pool is
    /// registered). The default does nothing.
    fn attach_events(&self, sink: EventSink) {
        let _ = sink;
    }
}

impl<W: Worker> ManagedPool for Pool<W> {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn snapshot_into(&self, buffer: &mut SnapshotBuffer, pool_index: usize) {
        let inner = &*self.inner;
        let overrides_base = buffer.overrides.len();
        buffer
            .overrides
            .extend(inner.overrides.iter().map(|(_, o)| *o));
        buffer.pools.push(PoolView {
            name: Arc::clone(&inner.name),
            max_workers_per_model: inner.max_workers_per_model.load(Ordering::Relaxed),
            accounted_bytes: inner.accounted_bytes.load(Ordering::Acquire),
        });
        let tick_stamps = !inner.shared.stamps_every_release;
        let now = inner.now();
        let deadline = now.checked_sub(inner.spawn_timeout);
        let mut scratch = inner.tick_scratch.lock().unwrap_or_else(|e| e.into_inner());
        scratch.vacant.clear();
        scratch.expired.clear();
        inner.map.for_each(|entry| {
            let start = buffer.workers.len();
            let mut unstamped = false;
            let mut arrivals = entry.arrivals.swap(0, Ordering::AcqRel);
            let mut first = entry.first_arrival.swap(NO_TIME, Ordering::AcqRel);
            let mut in_flight = 0u64;
            for cell in &entry.workers {
                let state = cell.state();
                if state.draining() {
                    continue;
                }
                let (came, first_lease) = cell.take_arrivals(state);
                arrivals += came;
                first = first.min(first_lease.unwrap_or(NO_TIME));
                in_flight += u64::from(state.in_flight());
                if !cell.worker.is_alive() {
                    buffer.dead.push(DeadWorker {
                        pool: pool_index,
                        key: Arc::clone(&entry.name),
                        worker: cell.id,
                    });
                    continue;
                }
                unstamped |= tick_stamps && cell.released_since_stamp(state);
                buffer.workers.push(WorkerView {
                    id: cell.id,
                    releases: state.releases(),
                    in_flight: state.in_flight(),
                    last_used: Duration::from_nanos(cell.last_used_nanos()),
                    spawned_at: cell.spawned_at,
                    memory_bytes: cell.memory_bytes,
                });
            }
            if unstamped {
                stamp_released(&inner.shared, &entry.workers, &mut buffer.workers[start..]);
            }
            let was_idle = if arrivals == 0 && first != NO_TIME {
                // A request arrived but is not served yet (its worker is loading): keep its
                // arrival time, and the key's quiet state, for the tick that sees it served.
                entry.first_arrival.fetch_min(first, Ordering::AcqRel);
                false
            } else {
                entry
                    .idle_at_tick
                    .swap(in_flight == 0 && entry.waiters.is_empty(), Ordering::AcqRel)
            };
            let first_arrival = (was_idle && arrivals > 0).then(|| {
                if first == NO_TIME {
                    // Served at once by a ready worker under a clock that is not read on the
                    // request path: seen now, at most one tick late.
                    first = to_nanos(now);
                }
                Duration::from_nanos(first)
            });
            if let Some(deadline) = deadline {
                for ticket in &entry.spawns {
                    if ticket.admitted && ticket.started < deadline {
                        scratch.expired.push((Arc::clone(&entry.name), ticket.id));
                    }
                }
            }
            if entry.is_vacant() {
                scratch.vacant.push(Arc::clone(&entry.name));
            }
            buffer.keys.push(KeyView {
                pool: pool_index,
                key: Arc::clone(&entry.name),
                id: entry.id,
                workers: start..buffer.workers.len(),
                starting: entry.spawns.len(),
                waiting: entry.waiters.len(),
                arrivals,
                first_arrival,
                last_eviction: entry.last_eviction,
                overrides: if entry.overrides == 0 {
                    0
                } else {
                    overrides_base + entry.overrides - 1
                },
            });
        });
    }

    fn end_tick(&self) {
        let inner = &self.inner;
        let (vacant, expired) = {
            let mut scratch = inner.tick_scratch.lock().unwrap_or_else(|e| e.into_inner());
            (
                std::mem::take(&mut scratch.vacant),
                std::mem::take(&mut scratch.expired),
            )
        };
        for (key, ticket) in &expired {
            inner.expire_spawn(key, *ticket);
        }
        for key in &vacant {
            inner.map.remove_unless(key, |entry| !entry.is_vacant());
        }
        // Spawns waiting on a probe's reading look again each tick.
        if let Some((budget, _)) = &inner.budget {
            budget.notify();
        }
        let mut scratch = inner.tick_scratch.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the capacity for the next tick.
        scratch.vacant = vacant;
        scratch.expired = expired;
        scratch.vacant.clear();
        scratch.expired.clear();
    }

    fn evict(
        &self,
        key: &str,
        worker: WorkerId,
        reason: EvictionReason,
        releases: Option<u64>,
    ) -> Option<Eviction> {
        self.inner
            .remove(key, worker, reason, Removal::IfIdle(releases))
    }

    fn prewarm(&self, key: &str, workers: usize) -> usize {
        let (name, tickets) = self.inner.reserve_prewarm(key, workers);
        if !tickets.is_empty() {
            if let Some(task) = self.inner.start_loads(&name, &tickets, false) {
                task.detach(&self.inner.thread_name("load"), self.inner.spawner.as_ref());
            }
        }
        tickets.len()
    }

    fn ready_or_starting(&self, key: &str) -> usize {
        self.inner
            .map
            .read(key, |e| e.workers.len() + e.spawns.len())
            .unwrap_or(0)
    }

    fn cold_start_of(&self, key: &str) -> Duration {
        let inner = &self.inner;
        let configured = inner
            .model_cold_starts
            .iter()
            .find(|(k, _)| &**k == key)
            .map_or(inner.cold_start, |(_, d)| *d);
        if configured.is_zero() {
            Duration::from_nanos(inner.observed_load_nanos.load(Ordering::Relaxed))
        } else {
            configured
        }
    }

    fn remove_dead(&self, key: &str, worker: WorkerId) -> Option<Eviction> {
        self.inner
            .remove(key, worker, EvictionReason::Dead, Removal::Dead)
    }

    fn accounted_bytes(&self) -> u64 {
        Pool::accounted_bytes(self)
    }

    fn total_workers(&self) -> usize {
        let mut total = 0;
        self.inner.map.for_each(|e| total += e.workers.len());
        total
    }

    fn wait_shutdowns(&self, timeout: Duration) -> bool {
        self.inner.shared.reaper.wait_idle(Some(timeout))
    }

    fn take_admission_evictions(&self) -> Vec<(Duration, Eviction)> {
        Pool::take_admission_evictions(self)
    }

    fn budget(&self) -> Option<crate::budget::Budget> {
        Pool::budget(self).cloned()
    }

    fn status(&self, now: Duration) -> PoolStatus {
        let inner = &*self.inner;
        let now_nanos = to_nanos(now);
        let tick_stamps = !inner.shared.stamps_every_release;
        let mut models = Vec::new();
        inner.map.for_each(|entry| {
            let mut model = ModelStatus {
                model: entry.name.to_string(),
                workers: 0,
                in_flight: 0,
                waiting: entry.waiters.len(),
                starting: entry.spawns.len(),
                memory_bytes: 0,
                instances: Vec::with_capacity(entry.workers.len()),
            };
            for cell in &entry.workers {
                let state = cell.state();
                if state.draining() {
                    continue;
                }
                let in_flight = state.in_flight();
                let idle = if in_flight > 0 {
                    None
                } else if tick_stamps && cell.released_since_stamp(state) {
                    // Released since the last tick's stamp: idle for less than a tick.
                    Some(Duration::ZERO)
                } else {
                    Some(Duration::from_nanos(
                        now_nanos.saturating_sub(cell.last_used_nanos()),
                    ))
                };
                model.workers += 1;
                model.in_flight += u64::from(in_flight);
                model.memory_bytes += cell.memory_bytes;
                model.instances.push(WorkerStatus {
                    id: cell.id.0,
                    in_flight,
                    idle,
                    age: now.saturating_sub(cell.spawned_at),
                    memory_bytes: cell.memory_bytes,
                    releases: state.releases(),
                    alive: cell.worker.is_alive(),
                });
            }
            model.instances.sort_by_key(|w| w.id);
            models.push(model);
        });
        models.sort_by(|a, b| a.model.cmp(&b.model));
        PoolStatus {
            name: inner.name.to_string(),
            policy: String::new(),
            accounted_bytes: inner.accounted_bytes.load(Ordering::Acquire),
            max_workers_per_model: inner.max_workers_per_model.load(Ordering::Relaxed),
            acquire_timeout: inner.acquire_timeout(),
            models,
        }
    }

    fn attach_events(&self, sink: EventSink) {
        self.inner.shared.attach_events(sink);
    }
}

/// Tick stamping of one key: every worker of `cells` released since its last stamp gets a
/// `last_used` read from the clock after its state word was (so the stamp is never earlier than
/// the release), in the cell and in its view. `views` are the key's views, in the order of
/// `cells` with the draining and dead ones left out. One clock read per eight workers.
fn stamp_released<W: Worker>(
    shared: &PoolShared,
    cells: &[Arc<WorkerCell<W>>],
    views: &mut [WorkerView],
) {
    const CHUNK: usize = 8;
    let mut views = views.iter_mut().peekable();
    for chunk in cells.chunks(CHUNK) {
        let mut released: [Option<(CellState, &mut WorkerView)>; CHUNK] = [const { None }; CHUNK];
        for (slot, cell) in released.iter_mut().zip(chunk) {
            let Some(view) = views.next_if(|v| v.id == cell.id) else {
                continue;
            };
            let state = cell.state();
            if cell.released_since_stamp(state) {
                *slot = Some((state, view));
            }
        }
        if released.iter().all(Option::is_none) {
            continue;
        }
        let at = to_nanos(shared.clock.now());
        for (slot, cell) in released.iter_mut().zip(chunk) {
            if let Some((state, view)) = slot.take() {
                view.last_used = Duration::from_nanos(cell.stamp(state, at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::pool::SpawnError;

    /// A manual clock that lets the tick stamp releases, like the real clocks do.
    struct TickStamped(ManualClock);

    impl Clock for TickStamped {
        fn now(&self) -> Duration {
            self.0.now()
        }

        fn stamps_every_release(&self) -> bool {
            false
        }
    }

    struct Unit;

    impl Worker for Unit {
        fn memory_bytes(&self) -> u64 {
            1
        }
    }

    fn last_used(pool: &Pool<Unit>, buffer: &mut SnapshotBuffer) -> Vec<u64> {
        buffer.clear();
        pool.snapshot_into(buffer, 0);
        buffer
            .workers
            .iter()
            .map(|w| w.last_used.as_secs())
            .collect()
    }

    #[test]
    fn the_tick_stamps_a_release_no_earlier_than_it_happened() {
        let clock = Arc::new(TickStamped(ManualClock::new()));
        let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Unit))
            .clock(clock.clone())
            .build();
        let mut buffer = SnapshotBuffer::default();
        clock.0.set(Duration::from_secs(10));
        let lease = pool.acquire("m").unwrap();
        assert_eq!(last_used(&pool, &mut buffer), [10], "spawned at 10");
        clock.0.set(Duration::from_secs(15));
        drop(lease); // at 15, without reading the clock
        clock.0.set(Duration::from_secs(20));
        assert_eq!(last_used(&pool, &mut buffer), [20], "seen released at 20");
        clock.0.set(Duration::from_secs(30));
        assert_eq!(last_used(&pool, &mut buffer), [20], "no release since");
        // Routing sees the stamp too: the tick-stamped worker is the most recently used.
        let lease = pool.try_acquire("m").unwrap();
        assert_eq!(lease.cell.last_used_nanos(), 20_000_000_000);
    }

    #[test]
    fn an_exact_clock_stamps_every_release_and_the_tick_leaves_it() {
        let clock = Arc::new(ManualClock::new());
        let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Unit))
            .clock(clock.clone())
            .build();
        let mut buffer = SnapshotBuffer::default();
        let lease = pool.acquire("m").unwrap();
        clock.set(Duration::from_secs(15));
        drop(lease);
        clock.set(Duration::from_secs(20));
        assert_eq!(last_used(&pool, &mut buffer), [15]);
    }
}
