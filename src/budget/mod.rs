//! Memory budgets: admission before a spawn, across every pool that shares a device.
//!
//! A [`Budget`] has a `limit` in bytes and the pools that opted into it
//! ([`crate::PoolBuilder::budget`]). Before a worker of key `k` is loaded, its footprint `m_k`
//! (known before the factory runs: see [`crate::PoolBuilder::model_memory`]) must fit:
//!
//! - **Fit.** `free = limit − accounted bytes of the budget's pools − bytes reserved by spawns
//!   in progress`. A spawn that fits reserves `m_k` with one compare-and-swap, so two concurrent
//!   spawns never count the same free bytes; the reservation turns into the worker's accounted
//!   bytes in one step when it loads (its reported `memory_bytes`), or goes back if the load
//!   fails. With a probe ([`BudgetBuilder::probe`]), a spawn also needs `m_k ≤ available` in the
//!   probe's reading (other processes use the device too); an unknown reading is ignored.
//! - **Make room.** When `m_k > free`, the candidates are the idle workers (nothing in flight,
//!   not leaving) of other keys on the budget, in any of its pools; a key's workers at or below
//!   its `min_workers` are pinned. They are taken in the budget's order (`lru`: least recently
//!   used first, ties by pool registration order, then worker id; `largest`: largest footprint
//!   first, then as `lru`) until the spawn fits, and evicted with reason `admission` — only if
//!   together they make room; otherwise nothing is evicted and the spawn waits. Each eviction
//!   goes through the pool's atomic evict: a worker that turned busy (or served a request since
//!   it was looked at) stays, and admission looks again.
//! - **Waiting.** Spawns waiting for memory on one budget are served first come, first served
//!   (the requests behind them wait in their keys' queues as usual). Whenever a worker on the
//!   budget becomes idle or leaves, a load fails, or a tick passes, the oldest waiting spawn
//!   tries again as above.
//! - **Rejection.** A request still waiting for memory after `acquire_timeout` fails with
//!   [`crate::AcquireError::NoMemory`], which names the key, the bytes needed, the budget and
//!   its free bytes. A spawn bigger than the whole `limit` fails at once, and nothing is
//!   evicted for it.

mod plan;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use poolwarden_policies::{MemoryReading, VictimOrder, WorkerId};
use serde::Serialize;

use crate::probe::{sane, MemoryProbe};
pub(crate) use plan::{victims, Candidate};

/// What the budget needs from a pool that opted into it (implemented by the pool).
pub(crate) trait BudgetMember: Send + Sync {
    /// The pool's name; `None` once the pool is gone.
    fn pool_name(&self) -> Option<String>;

    /// Appends the pool's idle, unpinned workers, except those of `except` (the key being
    /// spawned, when it is this pool's), as candidates of member number `member`.
    fn candidates(&self, member: usize, except: Option<&str>, out: &mut Vec<Candidate>);

    /// Evicts a candidate with reason `admission` if it is still idle and unused since.
    fn evict_for_room(&self, key: &str, worker: WorkerId, releases: u64) -> bool;

    /// Sets (or clears) the flag that makes a release that leaves a worker idle tell the budget.
    fn flag_releases(&self, on: bool);

    /// Whether spawn `ticket` of `key` still waits for memory (its requests may have gone).
    fn still_waiting(&self, key: &str, ticket: u64) -> bool;

    /// Spawn `ticket` of `key` was admitted with `bytes` reserved: start its load. False if the
    /// ticket is gone (the budget then takes the bytes back).
    fn admitted(&self, key: &str, ticket: u64, bytes: u64) -> bool;
}

/// A spawn waiting for memory.
#[derive(Clone)]
struct Pending {
    member: usize,
    key: Arc<str>,
    ticket: u64,
    bytes: u64,
}

struct State {
    members: Vec<Arc<dyn BudgetMember>>,
    waiting: VecDeque<Pending>,
    probe: Option<Box<dyn MemoryProbe>>,
}

struct Inner {
    name: Arc<str>,
    limit: u64,
    order: VictimOrder,
    /// Accounted bytes of the member pools plus bytes reserved by spawns in progress.
    used: AtomicU64,
    /// Of `used`, the bytes reserved by spawns in progress.
    reserved: AtomicU64,
    /// Whether the members' workers carry the flag that reports releases.
    flagged: AtomicBool,
    waiting: AtomicUsize,
    /// One pump at a time; a request during a pump makes it look again.
    pumping: AtomicBool,
    again: AtomicBool,
    admission_evictions: AtomicU64,
    rejected: AtomicU64,
    last_reading: Mutex<Option<MemoryReading>>,
    state: Mutex<State>,
}

/// A memory budget shared by pools. Cheap to clone: clones share the budget. See the
/// [module docs](self) for the semantics.
///
/// ```
/// use poolwarden::{Budget, Pool, SpawnError, Worker};
/// use poolwarden::policies::VictimOrder;
///
/// struct Model { bytes: u64 }
/// impl Worker for Model {
///     fn memory_bytes(&self) -> u64 { self.bytes }
/// }
///
/// let gpu0 = Budget::builder("gpu0", 70 << 30).order(VictimOrder::Lru).build();
/// let text = Pool::builder("text", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 14 << 30 }))
///     .budget(&gpu0)
///     .memory(14 << 30) // the footprint admission reserves before a load
///     .build();
/// drop(text.acquire("llama-13b").unwrap());
/// assert_eq!(gpu0.free(), 56 << 30);
/// ```
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("name", &self.inner.name)
            .field("limit", &self.inner.limit)
            .field("used", &self.used())
            .finish()
    }
}

/// Builds a [`Budget`].
pub struct BudgetBuilder {
    name: String,
    limit: u64,
    order: VictimOrder,
    probe: Option<Box<dyn MemoryProbe>>,
}

impl BudgetBuilder {
    /// Victim order when making room: `Lru` (default) or `Largest`.
    pub fn order(mut self, order: VictimOrder) -> Self {
        self.order = order;
        self
    }

    /// A probe of the device the budget stands for (`SysinfoProbe` for RAM or a cgroup,
    /// `NvmlProbe` for a GPU): a spawn also needs its footprint available in the probe's
    /// reading, since other processes use the device too. Default: none.
    pub fn probe(mut self, probe: impl MemoryProbe) -> Self {
        self.probe = Some(Box::new(probe));
        self
    }

    /// The budget.
    pub fn build(self) -> Budget {
        Budget {
            inner: Arc::new(Inner {
                name: Arc::from(self.name),
                limit: self.limit,
                order: self.order,
                used: AtomicU64::new(0),
                reserved: AtomicU64::new(0),
                flagged: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
                pumping: AtomicBool::new(false),
                again: AtomicBool::new(false),
                admission_evictions: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                last_reading: Mutex::new(None),
                state: Mutex::new(State {
                    members: Vec::new(),
                    waiting: VecDeque::new(),
                    probe: self.probe,
                }),
            }),
        }
    }
}

/// A budget's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetStats {
    /// Its name.
    pub name: String,
    /// Its limit in bytes.
    pub limit_bytes: u64,
    /// Bytes accounted for the workers of its pools.
    pub accounted_bytes: u64,
    /// Bytes reserved by spawns in progress.
    pub reserved_bytes: u64,
    /// `limit − accounted − reserved`.
    pub free_bytes: u64,
    /// Spawns waiting for memory.
    pub waiting_spawns: usize,
    /// Workers evicted with reason `admission` to make room.
    pub admission_evictions: u64,
    /// Spawns refused at once (bigger than the limit).
    pub rejected_spawns: u64,
    /// Its pools that are still alive (a dropped pool leaves the list), in registration order.
    pub pools: Vec<String>,
    /// The probe's latest reading, if it has a probe and the reading made sense.
    pub last_reading: Option<ProbeReading>,
}

/// A probe reading, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProbeReading {
    /// The device's total.
    pub total_bytes: u64,
    /// What is still available on it.
    pub available_bytes: u64,
}

/// What a spawn's request for memory came to.
pub(crate) enum Request {
    /// Admitted at once or queued: the budget calls `admitted` when it fits.
    Queued,
    /// Bigger than the limit: refused, nothing evicted.
    TooBig { free: u64 },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one look at the oldest waiting spawn decided.
enum Step {
    Admitted(Arc<dyn BudgetMember>, Pending),
    Evict(Vec<Arc<dyn BudgetMember>>, Vec<Candidate>),
    Dropped,
    Retry,
    Wait,
}

impl Budget {
    /// A builder for a budget named `name` of `limit` bytes.
    pub fn builder(name: &str, limit: u64) -> BudgetBuilder {
        BudgetBuilder {
            name: name.to_string(),
            limit,
            order: VictimOrder::Lru,
            probe: None,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its limit in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Its victim order.
    pub fn order(&self) -> VictimOrder {
        self.inner.order
    }

    /// Accounted plus reserved bytes (what `limit` is compared with).
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Bytes reserved by spawns in progress.
    pub fn reserved(&self) -> u64 {
        self.inner.reserved.load(Ordering::Acquire)
    }

    /// `limit − accounted − reserved`.
    pub fn free(&self) -> u64 {
        self.inner.limit.saturating_sub(self.used())
    }

    /// Spawns waiting for memory.
    pub fn waiting_spawns(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Its figures.
    pub fn stats(&self) -> BudgetStats {
        let inner = &self.inner;
        let pools = lock(&inner.state)
            .members
            .iter()
            .filter_map(|m| m.pool_name())
            .collect();
        let reserved = self.reserved();
        let used = self.used();
        BudgetStats {
            name: inner.name.to_string(),
            limit_bytes: inner.limit,
            accounted_bytes: used.saturating_sub(reserved),
            reserved_bytes: reserved,
            free_bytes: inner.limit.saturating_sub(used),
            waiting_spawns: self.waiting_spawns(),
            admission_evictions: inner.admission_evictions.load(Ordering::Relaxed),
            rejected_spawns: inner.rejected.load(Ordering::Relaxed),
            pools,
            last_reading: lock(&inner.last_reading).map(|r| ProbeReading {
                total_bytes: r.total,
                available_bytes: r.available,
            }),
        }
    }

    /// Whether `self` and `other` are the same budget.
    pub fn same(&self, other: &Budget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Adds a pool; returns its registration number.
    pub(crate) fn join(&self, member: Arc<dyn BudgetMember>) -> usize {
        let mut state = lock(&self.inner.state);
        state.members.push(member);
        state.members.len() - 1
    }

    /// Whether releases must report to the budget (set while spawns wait for memory).
    pub(crate) fn flagged(&self) -> bool {
        self.inner.flagged.load(Ordering::Acquire)
    }

    /// A reservation of `reserved` bytes (0 for a worker that loaded without one) became a
    /// worker of `actual` bytes, in one step. Atomics only: callable under a pool's lock; call
    /// [`Budget::notify`] after it.
    pub(crate) fn convert(&self, reserved: u64, actual: u64) {
        self.inner
            .used
            .fetch_add(actual.wrapping_sub(reserved), Ordering::AcqRel);
        self.inner.reserved.fetch_sub(reserved, Ordering::AcqRel);
    }

    /// For callers that run loads and queue requests themselves (the simulator): reserves
    /// `bytes` for a spawn of `key` in member pool `member` now, evicting idle victims if they
    /// make room; never waits. Fails if spawns already wait for memory (they go first), if the
    /// victims would not make room, or if `bytes` exceed the limit.
    pub(crate) fn admit_now(&self, member: usize, key: &str, bytes: u64) -> bool {
        let inner = &self.inner;
        if bytes > inner.limit {
            inner.rejected.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        loop {
            let mut state = lock(&inner.state);
            if !state.waiting.is_empty() {
                return false;
            }
            let reading = state.probe.as_mut().and_then(|probe| sane(probe.read()));
            *lock(&inner.last_reading) = reading;
            if self.try_reserve(bytes, reading.map(|r| r.available)) {
                return true;
            }
            let deficit = bytes.saturating_sub(self.free());
            if deficit == 0 {
                return false; // the probe says no: nothing of ours to evict for that
            }
            let mut candidates = Vec::new();
            for (index, m) in state.members.iter().enumerate() {
                let except = (index == member).then_some(key);
                m.candidates(index, except, &mut candidates);
            }
            let Some(n) = victims(&mut candidates, inner.order, deficit) else {
                return false;
            };
            candidates.truncate(n);
            let members = state.members.clone();
            drop(state);
            let mut evicted = 0;
            for victim in &candidates {
                if members[victim.member].evict_for_room(
                    &victim.key,
                    victim.worker,
                    victim.releases,
                ) {
                    inner.admission_evictions.fetch_add(1, Ordering::Relaxed);
                    evicted += 1;
                }
            }
            if evicted == 0 {
                return false;
            }
        }
    }

    /// A reservation went back (the load failed or was not needed).
    pub(crate) fn give_back(&self, reserved: u64) {
        if reserved == 0 {
            return;
        }
        self.inner.used.fetch_sub(reserved, Ordering::AcqRel);
        self.inner.reserved.fetch_sub(reserved, Ordering::AcqRel);
        self.notify();
    }

    /// A worker left a member pool: its bytes are free.
    pub(crate) fn freed(&self, bytes: u64) {
        self.inner.used.fetch_sub(bytes, Ordering::AcqRel);
        self.notify();
    }

    /// Reserves `bytes` if they fit, in one compare-and-swap (and, with a probe, if the probe
    /// has them available).
    fn try_reserve(&self, bytes: u64, available: Option<u64>) -> bool {
        if available.is_some_and(|a| bytes > a) {
            return false;
        }
        let inner = &self.inner;
        let fits = inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= inner.limit)
            })
            .is_ok();
        if fits {
            inner.reserved.fetch_add(bytes, Ordering::AcqRel);
        }
        fits
    }

    /// Asks for `bytes` for spawn `ticket` of `key` in member pool `member`. Admitted now (the
    /// member's `admitted` runs before this returns) or queued behind the spawns already
    /// waiting; refused at once if bigger than the limit.
    pub(crate) fn request(&self, member: usize, key: Arc<str>, ticket: u64, bytes: u64) -> Request {
        let inner = &self.inner;
        if bytes > inner.limit {
            inner.rejected.fetch_add(1, Ordering::Relaxed);
            return Request::TooBig { free: self.free() };
        }
        {
            let mut state = lock(&inner.state);
            state.waiting.push_back(Pending {
                member,
                key,
                ticket,
                bytes,
            });
            inner.waiting.store(state.waiting.len(), Ordering::Release);
        }
        self.pump();
        Request::Queued
    }

    /// Forgets spawn `ticket` of `key` of member `member` if it still waits (its requests
    /// went away). Returns whether it was waiting.
    pub(crate) fn withdraw(&self, member: usize, key: &str, ticket: u64) -> bool {
        let inner = &self.inner;
        let mut state = lock(&inner.state);
        let before = state.waiting.len();
        state
            .waiting
            .retain(|p| !(p.member == member && p.ticket == ticket && &*p.key == key));
        inner.waiting.store(state.waiting.len(), Ordering::Release);
        let withdrawn = state.waiting.len() < before;
        drop(state);
        if withdrawn {
            self.notify();
        }
        withdrawn
    }

    /// Something changed that may let the oldest waiting spawn in: look again.
    pub(crate) fn notify(&self) {
        if self.inner.waiting.load(Ordering::Acquire) > 0 {
            self.pump();
        }
    }

    /// Admits waiting spawns, oldest first, making room where victims allow; one pump at a
    /// time (a call during a pump makes it look once more).
    fn pump(&self) {
        let inner = &self.inner;
        inner.again.store(true, Ordering::Release);
        loop {
            if inner.pumping.swap(true, Ordering::AcqRel) {
                return; // the running pump sees `again`
            }
            while inner.again.swap(false, Ordering::AcqRel) {
                loop {
                    match self.step() {
                        Step::Admitted(member, pending) => {
                            if !member.admitted(&pending.key, pending.ticket, pending.bytes) {
                                self.give_back(pending.bytes);
                            }
                        }
                        Step::Evict(members, chosen) => {
                            for victim in &chosen {
                                let member = &members[victim.member];
                                if member.evict_for_room(
                                    &victim.key,
                                    victim.worker,
                                    victim.releases,
                                ) {
                                    inner.admission_evictions.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Step::Dropped | Step::Retry => {}
                        Step::Wait => break,
                    }
                }
            }
            inner.pumping.store(false, Ordering::Release);
            if !inner.again.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// One decision about the oldest waiting spawn.
    fn step(&self) -> Step {
        let inner = &self.inner;
        let mut state = lock(&inner.state);
        let Some(head) = state.waiting.front().cloned() else {
            if inner.flagged.swap(false, Ordering::AcqRel) {
                for member in &state.members {
                    member.flag_releases(false);
                }
            }
            return Step::Wait;
        };
        let member = Arc::clone(&state.members[head.member]);
        if !member.still_waiting(&head.key, head.ticket) {
            state.waiting.pop_front();
            inner.waiting.store(state.waiting.len(), Ordering::Release);
            return Step::Dropped;
        }
        let reading = state.probe.as_mut().and_then(|probe| sane(probe.read()));
        *lock(&inner.last_reading) = reading;
        if self.try_reserve(head.bytes, reading.map(|r| r.available)) {
            state.waiting.pop_front();
            inner.waiting.store(state.waiting.len(), Ordering::Release);
            return Step::Admitted(member, head);
        }
        let deficit = head.bytes.saturating_sub(self.free());
        if deficit > 0 {
            let mut candidates = Vec::new();
            for (index, m) in state.members.iter().enumerate() {
                let except = (index == head.member).then_some(&*head.key);
                m.candidates(index, except, &mut candidates);
            }
            if let Some(n) = victims(&mut candidates, inner.order, deficit) {
                if n > 0 {
                    candidates.truncate(n);
                    return Step::Evict(state.members.clone(), candidates);
                }
            }
        }
        // It must wait: from now on, a release that leaves a worker idle tells the budget. Set
        // the flags before one more look, so that no such release is missed in between.
        if !inner.flagged.swap(true, Ordering::AcqRel) {
            for member in &state.members {
                member.flag_releases(true);
            }
            return Step::Retry;
        }
        Step::Wait
    }
}

impl crate::status::BudgetReport for Budget {
    fn budget_status(&self) -> crate::status::BudgetStatus {
        let stats = self.stats();
        crate::status::BudgetStatus {
            name: stats.name,
            limit_bytes: stats.limit_bytes,
            used_bytes: stats.accounted_bytes + stats.reserved_bytes,
            free_bytes: stats.free_bytes,
            pools: stats.pools,
            waiting_spawns: stats.waiting_spawns,
        }
    }
}
