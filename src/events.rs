//! Spawn and eviction events, delivered to each subscriber over a bounded channel of its own.
//!
//! [`crate::Scheduler::subscribe`] returns an [`EventReceiver`]. Publishing never blocks and
//! never allocates past the channel's capacity: when a subscriber falls behind, its oldest
//! event is dropped to make room for the new one, and [`EventReceiver::dropped`] counts how
//! many it lost. [`crate::Scheduler::stop`] closes every channel: a receiver still gets the
//! events already queued, then sees the end (`recv` returns `None`, the stream ends).
//!
//! A receiver is read by blocking ([`EventReceiver::recv`], [`EventReceiver::recv_timeout`]),
//! without blocking ([`EventReceiver::try_recv`], [`EventReceiver::try_iter`]), or as an
//! async stream ([`EventReceiver::recv_async`], or the `futures_core::Stream` it implements)
//! under any runtime: the channel wakes the task's own waker and needs no timer or reactor.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use poolwarden::events::PoolEvent;
//! use poolwarden::policies::{GradualLru, GradualLruConfig};
//! use poolwarden::{ManualClock, Pool, Scheduler, SpawnError, Worker};
//!
//! struct Model;
//! impl Worker for Model {
//!     fn memory_bytes(&self) -> u64 { 1 << 20 }
//! }
//!
//! let clock = Arc::new(ManualClock::new());
//! let pool = Pool::builder("text", |_key: &str| Ok::<_, SpawnError>(Model))
//!     .clock(clock.clone())
//!     .build();
//! let scheduler = Scheduler::builder()
//!     .clock(clock.clone())
//!     .policy(Box::new(GradualLru::new(GradualLruConfig::default()).unwrap()))
//!     .build();
//! scheduler.register(&pool);
//! let events = scheduler.subscribe();
//!
//! drop(pool.acquire("llama").unwrap());
//! match events.try_recv() {
//!     Ok(PoolEvent::Spawn(e)) => assert_eq!((&*e.pool, &*e.key), ("text", "llama")),
//!     other => panic!("{other:?}"),
//! }
//! clock.advance(Duration::from_secs(61));
//! scheduler.tick_once();
//! match events.try_recv() {
//!     Ok(PoolEvent::Eviction(e)) => assert_eq!((&*e.pool, &*e.key), ("text", "llama")),
//!     other => panic!("{other:?}"),
//! }
//! scheduler.stop();
//! assert!(events.recv().is_none(), "closed on stop");
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use poolwarden_policies::WorkerId;
use serde::Serialize;

pub use crate::scheduler::EvictionEvent;

/// The capacity of a channel from [`crate::Scheduler::subscribe`].
pub const DEFAULT_CAPACITY: usize = 1024;

/// A worker that joined a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpawnEvent {
    /// When it joined (the pool's clock, since its origin); seconds in JSON.
    #[serde(
        rename = "at_secs",
        serialize_with = "crate::status::serde_secs::serialize"
    )]
    pub at: Duration,
    /// The pool's name.
    pub pool: Arc<str>,
    /// The key.
    #[serde(rename = "model")]
    pub key: Arc<str>,
    /// The new worker.
    #[serde(serialize_with = "serialize_worker")]
    pub worker: WorkerId,
    /// Bytes the pool accounts for it.
    pub memory_bytes: u64,
    /// How long its load took; seconds in JSON.
    #[serde(
        rename = "load_secs",
        serialize_with = "crate::status::serde_secs::serialize"
    )]
    pub load_time: Duration,
    /// Started by a pre-warm rather than for a waiting request.
    pub prewarm: bool,
}

/// What a subscriber receives. In JSON, an object with `"event": "spawn"` or
/// `"event": "eviction"` and the fields of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PoolEvent {
    /// A worker joined a pool.
    Spawn(SpawnEvent),
    /// A worker was evicted by the scheduler (every eviction carries its reason).
    Eviction(EvictionEvent),
}

impl PoolEvent {
    /// The pool the event happened in.
    pub fn pool(&self) -> &str {
        match self {
            PoolEvent::Spawn(e) => &e.pool,
            PoolEvent::Eviction(e) => &e.pool,
        }
    }

    /// The eviction, if it is one.
    pub fn as_eviction(&self) -> Option<&EvictionEvent> {
        match self {
            PoolEvent::Eviction(e) => Some(e),
            PoolEvent::Spawn(_) => None,
        }
    }

    /// The spawn, if it is one.
    pub fn as_spawn(&self) -> Option<&SpawnEvent> {
        match self {
            PoolEvent::Spawn(e) => Some(e),
            PoolEvent::Eviction(_) => None,
        }
    }
}

pub(crate) fn serialize_worker<S: serde::Serializer>(
    worker: &WorkerId,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(worker.0)
}

/// [`EventReceiver::try_recv`] found no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// None is queued now; more may come.
    #[error("no event queued")]
    Empty,
    /// None is queued and the channel is closed (the scheduler stopped): none will come.
    #[error("the event channel is closed")]
    Closed,
}

/// [`EventReceiver::recv_timeout`] got no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// None came within the timeout.
    #[error("no event within the timeout")]
    Timeout,
    /// The channel is closed and empty.
    #[error("the event channel is closed")]
    Closed,
}

struct State {
    queue: VecDeque<PoolEvent>,
    capacity: usize,
    dropped: u64,
    closed: bool,
    waker: Option<Waker>,
}

/// One subscriber's channel.
struct Channel {
    state: Mutex<State>,
    ready: Condvar,
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `event`, dropping the oldest when full; never blocks beyond the channel's own
    /// short lock.
    fn push(&self, event: PoolEvent) {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if state.queue.len() >= state.capacity {
                state.queue.pop_front();
                state.dropped += 1;
            }
            state.queue.push_back(event);
            state.waker.take()
        };
        self.ready.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waker.take()
        };
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving end of one subscription: a bounded queue of [`PoolEvent`]s. Dropping it
/// unsubscribes.
pub struct EventReceiver {
    channel: Arc<Channel>,
}

impl std::fmt::Debug for EventReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.channel.lock();
        f.debug_struct("EventReceiver")
            .field("queued", &state.queue.len())
            .field("capacity", &state.capacity)
            .field("dropped", &state.dropped)
            .field("closed", &state.closed)
            .finish()
    }
}

impl EventReceiver {
    /// The next event, without waiting.
    pub fn try_recv(&self) -> Result<PoolEvent, TryRecvError> {
        let mut state = self.channel.lock();
        match state.queue.pop_front() {
            Some(event) => Ok(event),
            None if state.closed => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }

    /// The next event, waiting for one; `None` once the channel is closed and empty.
    pub fn recv(&self) -> Option<PoolEvent> {
        let mut state = self.channel.lock();
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Some(event);
            }
            if state.closed {
                return None;
            }
            state = self
                .channel
                .ready
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<PoolEvent, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.channel.lock();
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Ok(event);
            }
            if state.closed {
                return Err(RecvTimeoutError::Closed);
            }
            let wait = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    deadline - now
                }
                None => Duration::from_secs(3600),
            };
            state = self
                .channel
                .ready
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The events queued now, without waiting.
    pub fn try_iter(&self) -> impl Iterator<Item = PoolEvent> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }

    /// Every event until the channel is closed, waiting for each.
    pub fn iter(&self) -> impl Iterator<Item = PoolEvent> + '_ {
        std::iter::from_fn(|| self.recv())
    }

    /// Events this subscriber lost because its queue was full when they came (the oldest
    /// queued event goes to make room for the new one).
    pub fn dropped(&self) -> u64 {
        self.channel.lock().dropped
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        self.channel.lock().queue.len()
    }

    /// Whether no event is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most events the queue holds.
    pub fn capacity(&self) -> usize {
        self.channel.lock().capacity
    }

    /// Whether the channel is closed (the scheduler stopped). Events queued before are still
    /// delivered.
    pub fn is_closed(&self) -> bool {
        self.channel.lock().closed
    }

    /// Polls for the next event: `Ready(None)` once the channel is closed and empty. The
    /// task's waker is woken by the next event or by the close.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        let mut state = self.channel.lock();
        if let Some(event) = state.queue.pop_front() {
            return Poll::Ready(Some(event));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next event, as a future for any runtime; `None` once the channel is closed and
    /// empty.
    pub fn recv_async(&mut self) -> Recv<'_> {
        Recv { receiver: self }
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        // The publisher forgets a channel whose receiver is gone at its next event.
        self.channel.lock().closed = true;
    }
}

impl futures_core::Stream for EventReceiver {
    type Item = PoolEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        self.get_mut().poll_recv(cx)
    }
}

/// The future of [`EventReceiver::recv_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct Recv<'a> {
    receiver: &'a mut EventReceiver,
}

impl Future for Recv<'_> {
    type Output = Option<PoolEvent>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        self.get_mut().receiver.poll_recv(cx)
    }
}

/// Where events are published: the scheduler's subscribers. Pools hold a handle on it
/// (attached when they are registered) to publish their spawns.
#[derive(Clone, Default)]
pub struct EventSink {
    hub: Arc<Hub>,
}

#[derive(Default)]
struct Hub {
    subscribers: Mutex<Vec<Arc<Channel>>>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("subscribers", &self.subscribers())
            .finish()
    }
}

impl EventSink {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Channel>>> {
        self.hub
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscriber whose queue holds at most `capacity` events (at least 1).
    pub(crate) fn subscribe(&self, capacity: usize) -> EventReceiver {
        let channel = Arc::new(Channel {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity: capacity.max(1),
                dropped: 0,
                closed: false,
                waker: None,
            }),
            ready: Condvar::new(),
        });
        self.lock().push(Arc::clone(&channel));
        EventReceiver { channel }
    }

    /// Whether anyone listens (publishers may skip building an event otherwise).
    pub(crate) fn has_subscribers(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Subscribers now.
    pub(crate) fn subscribers(&self) -> usize {
        self.lock().len()
    }

    /// Delivers `event` to every subscriber; forgets those whose receiver is gone.
    pub(crate) fn publish(&self, event: PoolEvent) {
        let mut subscribers = self.lock();
        subscribers.retain(|channel| Arc::strong_count(channel) > 1);
        if let Some((last, rest)) = subscribers.split_last() {
            for channel in rest {
                channel.push(event.clone());
            }
            last.push(event);
        }
    }

    /// Closes every subscriber's channel and forgets them; later subscribers get new
    /// channels.
    pub(crate) fn close_all(&self) {
        let subscribers = std::mem::take(&mut *self.lock());
        for channel in subscribers {
            channel.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(n: u64) -> PoolEvent {
        PoolEvent::Spawn(SpawnEvent {
            at: Duration::from_secs(n),
            pool: Arc::from("p"),
            key: Arc::from("m"),
            worker: WorkerId(n),
            memory_bytes: 0,
            load_time: Duration::ZERO,
            prewarm: false,
        })
    }

    fn worker_of(event: &PoolEvent) -> u64 {
        event.as_spawn().unwrap().worker.0
    }

    #[test]
    fn a_full_queue_drops_its_oldest_event_and_counts_it() {
        let sink = EventSink::default();
        let slow = sink.subscribe(3);
        let fast = sink.subscribe(100);
        for n in 1..=10 {
            sink.publish(spawn(n));
        }
        assert_eq!(slow.len(), 3);
        assert_eq!(slow.dropped(), 7);
        let kept: Vec<u64> = slow.try_iter().map(|e| worker_of(&e)).collect();
        assert_eq!(kept, [8, 9, 10], "the newest three stay, in order");
        assert_eq!(fast.dropped(), 0);
        assert_eq!(fast.try_iter().count(), 10);
        assert_eq!(slow.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_dropped_receiver_is_forgotten_at_the_next_event() {
        let sink = EventSink::default();
        let gone = sink.subscribe(4);
        let kept = sink.subscribe(4);
        assert_eq!(sink.subscribers(), 2);
        drop(gone);
        sink.publish(spawn(1));
        assert_eq!(sink.subscribers(), 1);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn close_delivers_what_is_queued_then_ends() {
        let sink = EventSink::default();
        let receiver = sink.subscribe(4);
        sink.publish(spawn(1));
        sink.close_all();
        sink.publish(spawn(2)); // no subscriber left: goes nowhere
        assert!(receiver.is_closed());
        assert_eq!(receiver.recv().map(|e| worker_of(&e)), Some(1));
        assert_eq!(receiver.recv(), None);
        assert_eq!(receiver.try_recv(), Err(TryRecvError::Closed));
        assert_eq!(
            receiver.recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Closed)
        );
        assert!(!sink.has_subscribers());
    }

    #[test]
    fn recv_timeout_times_out_on_an_open_empty_channel() {
        let sink = EventSink::default();
        let receiver = sink.subscribe(4);
        assert_eq!(
            receiver.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
    }

    #[test]
    fn a_blocked_receiver_wakes_on_an_event_from_another_thread() {
        let sink = EventSink::default();
        let receiver = sink.subscribe(4);
        let publisher = {
            let sink = sink.clone();
            std::thread::spawn(move || sink.publish(spawn(7)))
        };
        assert_eq!(receiver.recv().map(|e| worker_of(&e)), Some(7));
        publisher.join().unwrap();
    }

    #[test]
    fn events_serialize_with_their_kind() {
        let json = serde_json::to_value(spawn(3)).unwrap();
        assert_eq!(json["event"], "spawn");
        assert_eq!(json["worker"], 3);
        assert_eq!(json["at_secs"], 3.0);
        assert_eq!(json["model"], "m");
    }
}
