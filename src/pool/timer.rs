//! Deadlines for async waiters, under any runtime: one background thread per pool (named
//! `{pool}-timer`, started on first use, gone after a second with nothing to time) wakes the
//! task of a waiter whose `acquire_timeout` has passed, so that its next poll gives up.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long the timer thread lingers with nothing to time before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// Deadline → ids due then.
    due: BTreeMap<(Instant, u64), ()>,
    wakers: HashMap<u64, (Instant, Waker)>,
    next_id: u64,
    thread: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// Wakes tasks at their deadlines.
pub(crate) struct Timer {
    name: String,
    shared: Arc<Shared>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Timer {
    pub(crate) fn new(name: String) -> Self {
        Timer {
            name,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
        }
    }

    /// Wakes `waker` at `deadline`; returns an id to update or cancel it with.
    pub(crate) fn schedule(&self, deadline: Instant, waker: &Waker) -> u64 {
        let mut state = lock(&self.shared.state);
        state.next_id += 1;
        let id = state.next_id;
        state.due.insert((deadline, id), ());
        state.wakers.insert(id, (deadline, waker.clone()));
        let earliest = state.due.keys().next().map(|(at, _)| *at) == Some(deadline);
        if !state.thread {
            state.thread = true;
            drop(state);
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || run(&shared));
            if let Err(e) = spawned {
                lock(&self.shared.state).thread = false;
                log::error!("{}: cannot start the timer thread: {e}", self.name);
            }
        } else if earliest {
            drop(state);
            self.shared.changed.notify_one();
        }
        id
    }

    /// Replaces the waker of timer `id` (a task may move between threads).
    pub(crate) fn update(&self, id: u64, waker: &Waker) {
        let mut state = lock(&self.shared.state);
        if let Some((_, current)) = state.wakers.get_mut(&id) {
            if !current.will_wake(waker) {
                *current = waker.clone();
            }
        }
    }

    /// Forgets timer `id`.
    pub(crate) fn cancel(&self, id: u64) {
        let mut state = lock(&self.shared.state);
        if let Some((deadline, _)) = state.wakers.remove(&id) {
            state.due.remove(&(deadline, id));
        }
    }
}

fn run(shared: &Shared) {
    let mut state = lock(&shared.state);
    let mut idle_since = Instant::now();
    loop {
        let now = Instant::now();
        let mut expired = Vec::new();
        while let Some((&(at, id), _)) = state.due.iter().next() {
            if at > now {
                break;
            }
            state.due.remove(&(at, id));
            if let Some((_, waker)) = state.wakers.remove(&id) {
                expired.push(waker);
            }
        }
        if !expired.is_empty() {
            drop(state);
            expired.into_iter().for_each(Waker::wake);
            state = lock(&shared.state);
            idle_since = Instant::now();
            continue;
        }
        let wait = match state.due.keys().next() {
            Some((at, _)) => {
                idle_since = now;
                *at - now
            }
            None => {
                let idle = now.duration_since(idle_since);
                if idle >= IDLE_EXIT {
                    state.thread = false;
                    return;
                }
                IDLE_EXIT - idle
            }
        };
        state = shared
            .changed
            .wait_timeout(state, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wakes_at_the_deadline_and_not_when_cancelled() {
        let timer = Timer::new("test-timer".into());
        let fired = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(fired.clone());
        let start = Instant::now();
        timer.schedule(start + Duration::from_millis(30), &waker);
        let cancelled = timer.schedule(start + Duration::from_millis(10), &waker);
        timer.cancel(cancelled);
        while fired.0.load(Ordering::SeqCst) == 0 {
            assert!(start.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(start.elapsed() >= Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fired.0.load(Ordering::SeqCst), 1);
    }
}
