//! What every worker cell of a pool shares: the clock, and the reaper that shuts workers down.

use std::sync::Arc;

use super::reaper::Reaper;
use crate::clock::Clock;

/// Shared by a pool and all its cells (a cell may outlive its pool: a lease held past the last
/// pool handle still releases, and its worker is still shut down).
pub(crate) struct PoolShared {
    pub(crate) clock: Arc<dyn Clock>,
    /// `clock.stamps_every_release()`, read once.
    pub(crate) stamps_every_release: bool,
    pub(crate) reaper: Reaper,
}

impl PoolShared {
    pub(crate) fn new(clock: Arc<dyn Clock>, reaper: Reaper) -> Self {
        PoolShared {
            stamps_every_release: clock.stamps_every_release(),
            clock,
            reaper,
        }
    }
}
