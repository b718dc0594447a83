//! Which idle workers to evict to make room for a spawn: a pure function of the candidates.

use std::sync::Arc;

use poolwarden_policies::{VictimOrder, WorkerId};

/// An idle worker that admission may evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// The pool's position in the budget's registration order.
    pub(crate) member: usize,
    pub(crate) key: Arc<str>,
    pub(crate) worker: WorkerId,
    /// Its release count when seen: it is evicted only if it served nothing since.
    pub(crate) releases: u64,
    /// When its last request ended (nanoseconds on the pool's clock).
    pub(crate) last_used: u64,
    pub(crate) bytes: u64,
}

/// Sorts `candidates` in the budget's victim order and returns how many of the first ones make
/// `needed` bytes of room together, or `None` if all of them together do not (then nothing is
/// evicted). `lru`: least recently used first; ties by pool registration order, then worker id.
/// `largest`: largest footprint first, then as `lru`.
pub(crate) fn victims(
    candidates: &mut [Candidate],
    order: VictimOrder,
    needed: u64,
) -> Option<usize> {
    match order {
        VictimOrder::Lru => {
            candidates.sort_by_key(|c| (c.last_used, c.member, c.worker));
        }
        VictimOrder::Largest => {
            candidates
                .sort_by_key(|c| (std::cmp::Reverse(c.bytes), c.last_used, c.member, c.worker));
        }
    }
    let mut freed = 0u64;
    for (taken, candidate) in candidates.iter().enumerate() {
        if freed >= needed {
            return Some(taken);
        }
        freed = freed.saturating_add(candidate.bytes);
    }
    (freed >= needed).then_some(candidates.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(member: usize, worker: u64, last_used: u64, bytes: u64) -> Candidate {
        Candidate {
            member,
            key: Arc::from("k"),
            worker: WorkerId(worker),
            releases: 0,
            last_used,
            bytes,
        }
    }

    #[test]
    fn lru_takes_the_least_recently_used_until_the_spawn_fits() {
        let mut all = vec![
            c(0, 1, 30, 10),
            c(1, 2, 10, 10),
            c(0, 3, 20, 10),
            c(0, 4, 10, 10),
        ];
        assert_eq!(victims(&mut all, VictimOrder::Lru, 15), Some(2));
        // Ties on last use: pool registration order, then worker id.
        assert_eq!((all[0].member, all[0].worker), (0, WorkerId(4)));
        assert_eq!((all[1].member, all[1].worker), (1, WorkerId(2)));
    }

    #[test]
    fn largest_goes_first_then_lru() {
        let mut all = vec![c(0, 1, 10, 5), c(0, 2, 30, 20), c(0, 3, 20, 20)];
        assert_eq!(victims(&mut all, VictimOrder::Largest, 20), Some(1));
        assert_eq!(
            all[0].worker,
            WorkerId(3),
            "the larger ones first, the older of the two"
        );
    }

    #[test]
    fn nothing_when_all_of_them_would_not_make_room() {
        let mut all = vec![c(0, 1, 10, 5), c(0, 2, 30, 5)];
        assert_eq!(victims(&mut all, VictimOrder::Lru, 11), None);
        assert_eq!(victims(&mut all, VictimOrder::Lru, 10), Some(2));
        assert_eq!(victims(&mut [], VictimOrder::Lru, 0), Some(0));
    }
}
