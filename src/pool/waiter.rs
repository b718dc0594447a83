//! One queued request in a key's waiting room, and how to wake it.
//!
//! A waiter sits in its key's first-come-first-served queue until the pool grants it a lease
//! (from a release or a finished spawn), fails it (its spawn failed, the pool closed), or it gives
//! up (timeout, a dropped future). Granting and failing happen under the key's shard lock, with
//! the waiter still in the queue; giving up takes it out of the queue under that lock first, so
//! a waiter is never granted after it left.

use std::sync::Arc;
use std::task::Waker;

use super::error::AcquireError;
use super::lease::Lease;
use super::worker::Worker;
use crate::sync::{lock, Mutex, Thread};

/// How to wake a waiter: unpark its thread, or wake its task.
pub(crate) enum Wake {
    /// A thread parked in [`crate::Pool::acquire`].
    Thread(Thread),
    /// A task polling [`crate::pool::Acquire`].
    Task(Waker),
}

impl Wake {
    /// Wakes it. Call with no lock held: a waker may run arbitrary code.
    pub(crate) fn wake(self) {
        match self {
            Wake::Thread(thread) => thread.unpark(),
            Wake::Task(waker) => waker.wake(),
        }
    }
}

/// What a waiter ended with.
pub(crate) enum Outcome<W: Worker> {
    /// A lease; `cold` when its worker was spawned while the request waited.
    Granted {
        lease: Lease<W>,
        #[allow(dead_code)] // read by the metrics (feature `metrics`)
        cold: bool,
    },
    /// An error (its spawn failed, the pool closed).
    Failed(AcquireError),
}

enum Slot<W: Worker> {
    Waiting(Wake),
    Done(Outcome<W>),
    Taken,
}

/// A queued request.
pub(crate) struct Waiter<W: Worker> {
    slot: Mutex<Slot<W>>,
    /// The pool's spawn counter when the request queued: a worker that became ready after that
    /// (its `ready_seq` is at least this) finished loading while the request waited, and serves
    /// it cold.
    pub(crate) seq: u64,
}

impl<W: Worker> Waiter<W> {
    pub(crate) fn new(wake: Wake, seq: u64) -> Arc<Self> {
        Arc::new(Waiter {
            slot: Mutex::new(Slot::Waiting(wake)),
            seq,
        })
    }

    /// Ends the wait with `outcome` and returns what to wake (after the caller's locks are
    /// released). A waiter that already ended keeps its first outcome; the new one is returned
    /// to be disposed of, with no lock held.
    pub(crate) fn finish(&self, outcome: Outcome<W>) -> Result<Wake, Outcome<W>> {
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Waiting(wake) => {
                *slot = Slot::Done(outcome);
                Ok(wake)
            }
            other => {
                *slot = other;
                Err(outcome)
            }
        }
    }

    /// The outcome, once: `None` while still waiting (or when already taken).
    pub(crate) fn take(&self) -> Option<Outcome<W>> {
        let mut slot = lock(&self.slot);
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Done(outcome) => Some(outcome),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Replaces the task waker of a waiting request (a task may move between threads).
    pub(crate) fn update_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.slot);
        if let Slot::Waiting(wake) = &mut *slot {
            match wake {
                Wake::Task(current) if current.will_wake(waker) => {}
                _ => *wake = Wake::Task(waker.clone()),
            }
        }
    }
}
