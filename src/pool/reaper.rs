//! Where workers are shut down: off the tick and off the request path.
//!
//! `Worker::shutdown` can take seconds (freeing a GPU, joining a thread). The pool hands each
//! shutdown to its reaper, which runs it on a background thread named `{pool}-reaper`; while
//! every reaper thread is busy, a new shutdown gets a thread of its own, up to
//! [`MAX_THREADS`], so one slow shutdown never delays the next (a burst of many quick ones, a
//! pool dropped with thousands of workers, queues for those threads rather than starting one
//! each). Threads exit after a second with nothing to do. A pool built
//! with [`crate::PoolBuilder::inline_shutdown`] runs shutdowns on the evicting thread instead
//! (for workers whose shutdown is instant, like the simulator's).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A shutdown to run.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle reaper thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(1);

/// Most reaper threads of one pool at once.
pub(crate) const MAX_THREADS: usize = 8;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Jobs running now.
    running: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Shutdowns promised ([`Reaper::promise`]) and not yet submitted: an atomic, so that a
    /// promise made under a key's lock takes no other lock.
    promised: AtomicUsize,
    /// Signals a new job to an idle thread.
    work: Condvar,
    /// Signals a finished job to `wait_idle`.
    done: Condvar,
}

/// Runs shutdowns in the background (or inline).
pub(crate) struct Reaper {
    name: String,
    inline: bool,
    shared: Arc<Shared>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(job: Job, name: &str) {
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        log::error!("{name}: a worker's shutdown panicked");
    }
}

impl Reaper {
    /// A reaper whose threads are named `name`; `inline` runs every job on the caller's thread.
    pub(crate) fn new(name: String, inline: bool) -> Self {
        Reaper {
            name,
            inline,
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                promised: AtomicUsize::new(0),
                work: Condvar::new(),
                done: Condvar::new(),
            }),
        }
    }

    /// Runs `job` soon, on a reaper thread (or now, inline).
    pub(crate) fn submit(&self, job: Job) {
        if self.inline {
            run(job, &self.name);
            return;
        }
        let mut state = lock(&self.shared.state);
        state.jobs.push_back(job);
        if state.idle >= state.jobs.len() || state.threads >= MAX_THREADS {
            // An idle thread takes it, or the busy ones will.
            drop(state);
            self.shared.work.notify_one();
            return;
        }
        state.threads += 1;
        drop(state);
        let shared = Arc::clone(&self.shared);
        let name = self.name.clone();
        let spawned = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || work(&shared, &name));
        if let Err(e) = spawned {
            log::error!(
                "{}: cannot start a thread ({e}); shutting down inline",
                self.name
            );
            let mut state = lock(&self.shared.state);
            state.threads -= 1;
            let job = if state.threads == 0 {
                state.jobs.pop_back()
            } else {
                None
            };
            drop(state);
            if let Some(job) = job {
                run(job, &self.name);
            }
        }
    }

    /// Counts a shutdown about to be submitted (a worker just left its pool) until the returned
    /// promise is dropped, so that [`Reaper::wait_idle`] waits for it too. Submit first, then
    /// drop the promise.
    pub(crate) fn promise(&self) -> Promise<'_> {
        self.shared.promised.fetch_add(1, Ordering::AcqRel);
        Promise { reaper: self }
    }

    /// Waits until no shutdown is promised, queued or running, at most `timeout` (`None`: no limit).
    /// Returns whether it got there.
    pub(crate) fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = lock(&self.shared.state);
        while !state.jobs.is_empty()
            || state.running > 0
            || self.shared.promised.load(Ordering::Acquire) > 0
        {
            let wait = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return false;
                    }
                    deadline - now
                }
                None => Duration::from_secs(1),
            };
            state = self
                .shared
                .done
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Shutdowns queued or running.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        let state = lock(&self.shared.state);
        state.jobs.len() + state.running
    }
}

/// A shutdown the reaper waits for before it is submitted ([`Reaper::promise`]).
pub(crate) struct Promise<'a> {
    reaper: &'a Reaper,
}

impl Drop for Promise<'_> {
    fn drop(&mut self) {
        let shared = &self.reaper.shared;
        shared.promised.fetch_sub(1, Ordering::AcqRel);
        // Through the lock, so that a `wait_idle` between its check and its wait is not missed.
        drop(lock(&shared.state));
        shared.done.notify_all();
    }
}

fn work(shared: &Shared, name: &str) {
    let mut state = lock(&shared.state);
    loop {
        if let Some(job) = state.jobs.pop_front() {
            state.running += 1;
            drop(state);
            run(job, name);
            state = lock(&shared.state);
            state.running -= 1;
            shared.done.notify_all();
            continue;
        }
        state.idle += 1;
        let (next, timeout) = shared
            .work
            .wait_timeout(state, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.jobs.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_slow_shutdown_does_not_hold_up_the_next() {
        let reaper = Reaper::new("test-reaper".into(), false);
        let done = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        reaper.submit(Box::new(|| std::thread::sleep(Duration::from_secs(5))));
        let d = done.clone();
        reaper.submit(Box::new(move || {
            d.fetch_add(1, Ordering::SeqCst);
        }));
        while done.load(Ordering::SeqCst) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "waited for the slow one"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!reaper.wait_idle(Some(Duration::from_millis(1))));
        assert!(reaper.wait_idle(Some(Duration::from_secs(30))));
        assert_eq!(reaper.pending(), 0);
    }

    #[test]
    fn a_burst_of_shutdowns_uses_a_bounded_number_of_threads() {
        let reaper = Reaper::new("burst-reaper".into(), false);
        let done = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(0));
        for _ in 0..2_000 {
            let (d, m, a) = (done.clone(), most.clone(), alive.clone());
            reaper.submit(Box::new(move || {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(50));
                a.fetch_sub(1, Ordering::SeqCst);
                d.fetch_add(1, Ordering::SeqCst);
            }));
        }
        assert!(reaper.wait_idle(Some(Duration::from_secs(60))));
        assert_eq!(done.load(Ordering::SeqCst), 2_000);
        assert!(most.load(Ordering::SeqCst) <= MAX_THREADS);
        assert!(lock(&reaper.shared.state).threads <= MAX_THREADS);
    }

    #[test]
    fn inline_runs_on_the_caller() {
        let reaper = Reaper::new("inline".into(), true);
        let caller = std::thread::current().id();
        let ran_on = Arc::new(Mutex::new(None));
        let r = ran_on.clone();
        reaper.submit(Box::new(move || {
            *r.lock().unwrap() = Some(std::thread::current().id());
        }));
        assert_eq!(*ran_on.lock().unwrap(), Some(caller));
    }
}
