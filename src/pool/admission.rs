//! The pool's side of a memory budget: its idle workers as candidates, evictions to make room,
//! and the start of a spawn once it is admitted.

use std::sync::{Arc, Weak};

use poolwarden_policies::{EvictionReason, WorkerId};

use super::cell::BUDGET_WAITERS;
use super::inner::{PoolInner, Removal};
use super::worker::Worker;
use crate::budget::{BudgetMember, Candidate};

/// A pool as a member of its budget (a weak handle: the budget does not keep the pool alive).
pub(crate) struct MemberHandle<W: Worker>(pub(crate) Weak<PoolInner<W>>);

impl<W: Worker> BudgetMember for MemberHandle<W> {
    fn pool_name(&self) -> Option<String> {
        self.0.upgrade().map(|pool| pool.name.to_string())
    }

    fn candidates(&self, member: usize, except: Option<&str>, out: &mut Vec<Candidate>) {
        let Some(pool) = self.0.upgrade() else {
            return;
        };
        pool.map.for_each(|entry| {
            if except == Some(&*entry.name) {
                return;
            }
            let removable = entry
                .workers
                .len()
                .saturating_sub(pool.min_workers_of(entry));
            if removable == 0 {
                return;
            }
            let start = out.len();
            for cell in &entry.workers {
                let state = cell.state();
                if state.draining() || state.in_flight() > 0 {
                    continue;
                }
                out.push(Candidate {
                    member,
                    key: Arc::clone(&entry.name),
                    worker: cell.id,
                    releases: state.releases(),
                    last_used: cell.last_used_nanos(),
                    bytes: cell.memory_bytes,
                });
            }
            // The key's most recently used workers are the pinned ones: keep only the oldest
            // `removable` of its idle workers as candidates.
            out[start..].sort_by_key(|c| (c.last_used, c.worker));
            out.truncate(start + removable.min(out.len() - start));
        });
    }

    fn evict_for_room(&self, key: &str, worker: WorkerId, releases: u64) -> bool {
        let Some(pool) = self.0.upgrade() else {
            return false;
        };
        match pool.remove(
            key,
            worker,
            EvictionReason::Admission,
            Removal::IfIdle(Some(releases)),
        ) {
            Some(eviction) => {
                log::info!(
                    "pool {}: evicted worker {} of `{}` (admission) after {} idle, {} freed, {} left",
                    pool.name,
                    eviction.worker,
                    eviction.key,
                    poolwarden_policies::format_duration(std::time::Duration::from_millis(
                        eviction.idle_for.as_millis() as u64
                    )),
                    poolwarden_policies::ByteSize(eviction.freed_bytes),
                    eviction.workers_left
                );
                pool.note_admission_eviction(eviction);
                true
            }
            None => false,
        }
    }

    fn flag_releases(&self, on: bool) {
        let Some(pool) = self.0.upgrade() else {
            return;
        };
        pool.map.for_each(|entry| {
            for cell in &entry.workers {
                if on {
                    cell.set_flag(BUDGET_WAITERS);
                } else {
                    cell.clear_flag(BUDGET_WAITERS);
                }
            }
        });
    }

    fn still_waiting(&self, key: &str, ticket: u64) -> bool {
        self.0.upgrade().is_some_and(|pool| {
            pool.map
                .read(key, |e| {
                    e.spawns.iter().any(|t| t.id == ticket && !t.admitted)
                })
                .unwrap_or(false)
        })
    }

    fn admitted(&self, key: &str, ticket: u64, bytes: u64) -> bool {
        let Some(pool) = self.0.upgrade() else {
            return false;
        };
        let now = pool.now();
        let name = pool.map.write(key, |entry| {
            let ticket = entry
                .spawns
                .iter_mut()
                .find(|t| t.id == ticket && !t.admitted)?;
            ticket.admitted = true;
            ticket.reserved_bytes = bytes;
            ticket.started = now;
            Some(Arc::clone(&entry.name))
        });
        let Some(name) = name.flatten() else {
            return false;
        };
        if let Some(task) = pool.start_loads(&name, &[ticket], false) {
            task.detach(&pool.thread_name("load"), pool.spawner.as_ref());
        }
        true
    }
}
