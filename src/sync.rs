//! The synchronisation primitives of the request-path protocol, from `std` normally and from
//! `loom` when built with `--cfg loom`, so that the model checker runs the real code (see
//! `tests/loom.rs`). Reference counts (`Arc`, `Weak`) stay `std`: they are not part of the
//! protocol.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock};
#[cfg(loom)]
pub(crate) use loom::thread::{current as current_thread, park, Thread};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock};
#[cfg(not(loom))]
pub(crate) use std::thread::{current as current_thread, park, Thread};

pub(crate) use std::sync::atomic::Ordering;

/// Locks `mutex`, ignoring poisoning: every critical section of the pool leaves its data
/// consistent before anything that can panic runs.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
