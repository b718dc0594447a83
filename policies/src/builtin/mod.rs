//! The built-in policies.

pub mod chain;
pub mod gradual_lru;
pub mod hybrid_histogram;
pub mod keep_alive;
pub mod max_lifetime;
pub mod memory_pressure;
pub mod noop;

use std::time::Duration;

use crate::snapshot::{KeyView, Snapshot, WorkerView};

/// A parameter that failed validation: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParameter {
    /// The config key at fault (`"low"`).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidParameter {
    /// A parameter `key` that is invalid because of `message`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        InvalidParameter {
            key,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for InvalidParameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for InvalidParameter {}

pub(crate) fn invalid(key: &'static str, message: impl Into<String>) -> InvalidParameter {
    InvalidParameter {
        key,
        message: message.into(),
    }
}

/// The key's workers that are idle, least recently used first (ties: lowest id first).
pub(crate) fn idle_lru_first<'a>(snapshot: &Snapshot<'a>, key: &KeyView) -> Vec<&'a WorkerView> {
    let mut idle: Vec<&WorkerView> = snapshot
        .workers_of(key)
        .iter()
        .filter(|w| w.is_idle())
        .collect();
    idle.sort_by_key(|w| (w.last_used, w.id));
    idle
}

/// `at + by`, saturating instead of overflowing.
pub(crate) fn after(at: Duration, by: Duration) -> Duration {
    at.saturating_add(by)
}
