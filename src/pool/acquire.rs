//! [`Pool::acquire_async`]: a request that waits in its key's queue without blocking a thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::error::AcquireError;
use super::inner::Enqueued;
use super::lease::Lease;
use super::load::LoadTask;
use super::waiter::{Outcome, Waiter, Wake};
use super::worker::Worker;
use super::Pool;

enum State<W: Worker> {
    Start,
    Waiting {
        waiter: Arc<Waiter<W>>,
        queued_at: Instant,
        /// The pool's `acquire_timeout` when the request queued (a later change leaves it be).
        timeout: Duration,
        timer: Option<u64>,
        /// An async load this request started and drives while it waits.
        load: Option<LoadTask<W>>,
    },
    Done,
}

/// The future of [`Pool::acquire_async`]: a lease for one request, or why there is none.
///
/// It is `Send`, needs no particular runtime, and can be dropped at any point (a timeout, a
/// `select!`, a cancelled task) without losing anything: see [`Pool::acquire_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct Acquire<'a, W: Worker> {
    pool: &'a Pool<W>,
    key: &'a str,
    state: State<W>,
}

impl<'a, W: Worker> Acquire<'a, W> {
    pub(crate) fn new(pool: &'a Pool<W>, key: &'a str) -> Self {
        Acquire {
            pool,
            key,
            state: State::Start,
        }
    }

    /// Forgets the timer and hands an unfinished load over; the request is over.
    fn wind_up(&mut self) {
        let inner = &self.pool.inner;
        if let State::Waiting { timer, load, .. } = std::mem::replace(&mut self.state, State::Done)
        {
            if let Some(id) = timer {
                inner.timer.cancel(id);
            }
            if let Some(task) = load {
                task.detach(&inner.thread_name("load"), inner.spawner.as_ref());
            }
        }
    }
}

fn settle<W: Worker>(outcome: Outcome<W>) -> Result<Lease<W>, AcquireError> {
    match outcome {
        Outcome::Granted { lease, .. } => Ok(lease),
        Outcome::Failed(error) => Err(error),
    }
}

impl<W: Worker> Future for Acquire<'_, W> {
    type Output = Result<Lease<W>, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = &this.pool.inner;
        loop {
            match &mut this.state {
                State::Start => {
                    if let Some(lease) = this.pool.try_acquire(this.key) {
                        this.state = State::Done;
                        return Poll::Ready(Ok(lease));
                    }
                    let queued_at = Instant::now();
                    let timeout = inner.acquire_timeout();
                    match inner.enqueue(this.key, Wake::Task(cx.waker().clone())) {
                        Err(error) => {
                            this.state = State::Done;
                            return Poll::Ready(Err(error));
                        }
                        Ok(Enqueued::Served(lease)) => {
                            this.state = State::Done;
                            return Poll::Ready(Ok(lease));
                        }
                        Ok(Enqueued::Waiting { waiter, key, after }) => {
                            let load = inner.launch(&key, after, true);
                            let timer = queued_at
                                .checked_add(timeout)
                                .map(|d| inner.timer.schedule(d, cx.waker()));
                            this.state = State::Waiting {
                                waiter,
                                queued_at,
                                timeout,
                                timer,
                                load,
                            };
                        }
                    }
                }
                State::Waiting {
                    waiter,
                    queued_at,
                    timeout,
                    timer,
                    load,
                } => {
                    if let Some(task) = load {
                        if task.poll(cx).is_ready() {
                            *load = None;
                        }
                    }
                    if let Some(outcome) = waiter.take() {
                        crate::metrics::acquire_waited(&inner.name, queued_at.elapsed());
                        this.wind_up();
                        return Poll::Ready(settle(outcome));
                    }
                    if queued_at.elapsed() >= *timeout {
                        let waiter = Arc::clone(waiter);
                        let timeout = *timeout;
                        let gave_up = inner.give_up(this.key, &waiter, true);
                        this.wind_up();
                        return Poll::Ready(match gave_up.outcome {
                            Some(outcome) => settle(outcome),
                            None => Err(inner.timeout_error(this.key, timeout, gave_up.for_memory)),
                        });
                    }
                    waiter.update_waker(cx.waker());
                    if let Some(id) = timer {
                        inner.timer.update(*id, cx.waker());
                    }
                    // A grant between `take` and `update_waker` woke the previous waker, which
                    // belongs to this same task: it is polled again.
                    return Poll::Pending;
                }
                State::Done => panic!("`Acquire` polled after it completed"),
            }
        }
    }
}

impl<W: Worker> Drop for Acquire<'_, W> {
    fn drop(&mut self) {
        if let State::Waiting { waiter, .. } = &self.state {
            let waiter = Arc::clone(waiter);
            // Out of the queue first: nothing can be granted to it after this. A lease granted
            // just before is dropped here, which hands it to the next waiter.
            drop(self.pool.inner.give_up(self.key, &waiter, false).outcome);
        }
        self.wind_up();
    }
}
