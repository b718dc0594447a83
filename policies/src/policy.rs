//! The trait every eviction policy implements.

use crate::proposal::{Prewarm, Proposal};
use crate::snapshot::Snapshot;

/// Decides which workers to evict, given a snapshot of the pools.
///
/// A policy is called once per tick by the scheduler's maintenance thread (or by a deterministic
/// tick in tests and the simulator). It may keep state across ticks in `&mut self` (a learnt
/// idle-time histogram, a settle timer), but it never mutates the pool: it only proposes. The
/// pool re-checks every proposal atomically, so proposing a worker that has since become busy
/// is harmless.
///
/// The trait is object-safe and used as `Box<dyn EvictionPolicy>`. Implementations must not
/// block, sleep, read a clock or do I/O: everything they need is in the [`Snapshot`].
pub trait EvictionPolicy: Send {
    /// The policy's kind as operators write it (`"gradual-lru"`); used in logs.
    fn name(&self) -> &str;

    /// Appends this tick's proposals to `out`. Proposing the same worker twice is allowed; the
    /// scheduler evicts it at most once.
    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>);

    /// Appends this tick's pre-warm proposals to `out`: keys to have workers ready for before
    /// requests arrive (see [`Prewarm`]). Called once per tick right after
    /// [`propose`](Self::propose), with the same snapshot. Default: none.
    fn prewarm(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        let _ = (snapshot, out);
    }

    /// A one-line description with every parameter, defaults included, for `poolwarden check`.
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// The policies this one is made of (a chain's members); empty for a simple policy.
    fn children(&self) -> Vec<&dyn EvictionPolicy> {
        Vec::new()
    }
}

impl<P: EvictionPolicy + ?Sized> EvictionPolicy for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        (**self).propose(snapshot, out)
    }
    fn prewarm(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        (**self).prewarm(snapshot, out)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn children(&self) -> Vec<&dyn EvictionPolicy> {
        (**self).children()
    }
}
