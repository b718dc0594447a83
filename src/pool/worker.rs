//! What the pool needs from a worker, and how it makes one.

use std::error::Error;

/// A pooled worker: a loaded model instance, a connection, anything expensive.
///
/// Methods take `&self`: leases hand out shared references, and the pool calls
/// [`Worker::shutdown`] exactly once, after the worker has left the pool and no lease is in
/// flight on it.
pub trait Worker: Send + Sync + 'static {
    /// The worker's memory footprint in bytes, counted in the pool's accounting from spawn to
    /// eviction.
    fn memory_bytes(&self) -> u64;

    /// Whether the worker can still serve (false once its thread panicked or exited). Checked at
    /// every tick; a dead worker is removed with reason `dead`. Default: always alive.
    fn is_alive(&self) -> bool {
        true
    }

    /// Stops the worker: signal it, and join its thread if it owns one. Called once, outside any
    /// pool lock. Default: nothing (dropping the worker is enough).
    fn shutdown(&self) {}
}

/// The error a factory returns when it cannot create a worker.
pub type SpawnError = Box<dyn Error + Send + Sync + 'static>;

/// Creates a worker for a key. It may take seconds (loading a model); the pool never holds a
/// lock while it runs. Any `Fn(&str) -> Result<W, SpawnError>` closure is a factory.
pub trait WorkerFactory<W>: Send + Sync + 'static {
    /// Creates a worker for `key`.
    fn spawn(&self, key: &str) -> Result<W, SpawnError>;
}

impl<W, F> WorkerFactory<W> for F
where
    F: Fn(&str) -> Result<W, SpawnError> + Send + Sync + 'static,
{
    fn spawn(&self, key: &str) -> Result<W, SpawnError> {
        self(key)
    }
}
