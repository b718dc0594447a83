//! `chain`: the union of several policies' proposals.

use std::collections::HashSet;

use crate::policy::EvictionPolicy;
use crate::proposal::{Prewarm, Proposal};
use crate::snapshot::{Snapshot, WorkerId};

/// Runs each member in order and returns the union of their proposals, each worker at most
/// once (the first member to propose it gives the reason).
pub struct ChainPolicy {
    members: Vec<Box<dyn EvictionPolicy>>,
    scratch: Vec<Proposal>,
    seen: HashSet<(usize, WorkerId)>,
}

impl ChainPolicy {
    /// A chain of these members, run in order.
    pub fn new(members: Vec<Box<dyn EvictionPolicy>>) -> Self {
        ChainPolicy {
            members,
            scratch: Vec::new(),
            seen: HashSet::new(),
        }
    }
}

impl EvictionPolicy for ChainPolicy {
    fn name(&self) -> &str {
        "chain"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        self.seen.clear();
        for member in &mut self.members {
            self.scratch.clear();
            member.propose(snapshot, &mut self.scratch);
            for proposal in self.scratch.drain(..) {
                if self.seen.insert((proposal.key, proposal.worker)) {
                    out.push(proposal);
                }
            }
        }
    }

    fn prewarm(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        for member in &mut self.members {
            member.prewarm(snapshot, out);
        }
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.members.iter().map(|m| m.name()).collect();
        format!("chain [{}]", names.join(", "))
    }

    fn children(&self) -> Vec<&dyn EvictionPolicy> {
        self.members
            .iter()
            .map(|m| m.as_ref() as &dyn EvictionPolicy)
            .collect()
    }
}
