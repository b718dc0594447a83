//! `noop`: never evicts.

use serde::{Deserialize, Serialize};

use crate::policy::EvictionPolicy;
use crate::proposal::Proposal;
use crate::snapshot::Snapshot;

/// Parameters of [`Noop`] (`kind = "noop"`): there are none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopConfig {}

/// Never evicts anything. Dead workers are still removed by the pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

impl EvictionPolicy for Noop {
    fn name(&self) -> &str {
        "noop"
    }

    fn propose(&mut self, _snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {}
}
