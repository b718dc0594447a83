//! The RAII handle on a leased worker.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use poolwarden_policies::WorkerId;

use super::cell::WorkerCell;
use super::worker::Worker;

/// A worker leased for one request. While it lives, the worker counts one request in flight and
/// cannot be evicted; dropping it ends the request, which the worker's `last_used` then reflects
/// (at once or from the next tick: see [`crate::Clock::stamps_every_release`]).
#[must_use = "dropping a lease ends the request at once"]
pub struct Lease<W: Worker> {
    pub(crate) cell: Arc<WorkerCell<W>>,
}

impl<W: Worker> Lease<W> {
    /// The leased worker's id.
    pub fn worker_id(&self) -> WorkerId {
        self.cell.id
    }

    /// The key (model) the worker serves.
    pub fn key(&self) -> &str {
        &self.cell.key
    }
}

impl<W: Worker> Deref for Lease<W> {
    type Target = W;

    fn deref(&self) -> &W {
        &self.cell.worker
    }
}

impl<W: Worker> Drop for Lease<W> {
    fn drop(&mut self) {
        WorkerCell::release(&self.cell);
    }
}

impl<W: Worker> fmt::Debug for Lease<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.cell.key)
            .field("worker", &self.cell.id)
            .finish()
    }
}
