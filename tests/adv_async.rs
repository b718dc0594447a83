//! Adversarial tests of the async request path: cancellation at random points with a
//! hand-rolled waker, failing and panicking factories (sync and async) while requests queue,
//! `close()` with queued futures and threads, limits changed while requests wait, wakers that
//! move between polls, odd key names. Expectations come from the README's "The async request
//! path", not from the implementation.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::{eventually, Model};
use poolwarden::pool::block_on;
use poolwarden::{AcquireError, Lease, Pool, SpawnError, Worker};

/// A waker that counts its wakes.
struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<CountWakes>, Waker) {
    let count = Arc::new(CountWakes(AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// Yields to the executor once, asking to be polled again.
fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// A gate that loads wait on, from a thread or a task.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, Vec<Waker>)>,
    cv: Condvar,
}

impl Gate {
    fn open(&self) {
        let wakers = {
            let mut state = self.state.lock().unwrap();
            state.0 = true;
            std::mem::take(&mut state.1)
        };
        self.cv.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    fn wait(&self) {
        let mut state = self.state.lock().unwrap();
        while !state.0 {
            state = self.cv.wait(state).unwrap();
        }
    }

    fn wait_async(self: Arc<Self>) -> impl Future<Output = ()> + Send {
        std::future::poll_fn(move |cx| {
            let mut state = self.state.lock().unwrap();
            if state.0 {
                Poll::Ready(())
            } else {
                state.1.push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// Nothing in flight or waiting or starting on `keys`, and the accounting matches the workers.
fn assert_settled(pool: &Pool<Model>, keys: &[&str]) {
    let stats = pool.stats();
    assert_eq!(
        pool.accounted_bytes(),
        pool.live_worker_bytes(),
        "{stats:?}"
    );
    for key in keys {
        assert_eq!(pool.in_flight(key), 0, "in flight on {key:?}: {stats:?}");
        assert_eq!(pool.waiting(key), 0, "waiting on {key:?}: {stats:?}");
        assert_eq!(pool.starting(key), 0, "starting on {key:?}: {stats:?}");
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

type Pending<'a> = Vec<(usize, u64, poolwarden::pool::Acquire<'a, Model>)>;

/// Request `n` of key `k` was served: every older pending request of `k` must hold a grant
/// already (first come, first served). Polls them and keeps their leases.
fn served_older<'a>(
    pending: &mut Pending<'a>,
    leases: &mut Vec<(usize, Lease<Model>)>,
    k: usize,
    n: u64,
    keys: &[&str],
    waker: &Waker,
) {
    let mut j = 0;
    while j < pending.len() {
        if pending[j].0 == k && pending[j].1 < n {
            let (_, m, mut older) = pending.remove(j);
            match poll_once(&mut older, waker) {
                Poll::Ready(r) => leases.push((k, r.expect("a lease"))),
                Poll::Pending => panic!(
                    "request #{n} of {:?} served while the older request #{m} still waits",
                    keys[k]
                ),
            }
        } else {
            j += 1;
        }
    }
}

/// Random steps over `keys`: new futures polled once, pending ones polled or dropped, leases
/// dropped. Whenever a future of a key is served, every older pending future of that key must
/// already be served too (first come, first served), and the accounting always matches.
fn storm(pool: &Pool<Model>, keys: &[&str], seed: u64, steps: usize) {
    let (_count, waker) = counter();
    let mut rng = Rng(seed);
    // (key index, arrival number, future)
    let mut pending: Pending = Vec::new();
    let mut leases: Vec<(usize, Lease<Model>)> = Vec::new();
    let mut arrival = 0u64;
    for _ in 0..steps {
        match rng.below(10) {
            0..=3 => {
                let k = rng.below(keys.len());
                let mut future = pool.acquire_async(keys[k]);
                arrival += 1;
                match poll_once(&mut future, &waker) {
                    Poll::Ready(result) => {
                        let lease = result.expect("a lease");
                        assert_eq!(lease.key(), keys[k]);
                        leases.push((k, lease));
                        // Served at once: every older request of its key holds a grant too.
                        served_older(&mut pending, &mut leases, k, arrival, keys, &waker);
                    }
                    Poll::Pending => pending.push((k, arrival, future)),
                }
            }
            4 | 5 if !pending.is_empty() => {
                let i = rng.below(pending.len());
                let (k, n, mut future) = pending.remove(i);
                match poll_once(&mut future, &waker) {
                    Poll::Ready(result) => {
                        leases.push((k, result.expect("a lease")));
                        served_older(&mut pending, &mut leases, k, n, keys, &waker);
                    }
                    Poll::Pending => pending.push((k, n, future)),
                }
            }
            6 | 7 if !pending.is_empty() => {
                let i = rng.below(pending.len());
                drop(pending.remove(i));
            }
            _ if !leases.is_empty() => {
                let i = rng.below(leases.len());
                drop(leases.remove(i));
            }
            _ => {}
        }
        for (k, key) in keys.iter().enumerate() {
            let queued = pending.iter().filter(|(pk, _, _)| *pk == k).count();
            let held = leases.iter().filter(|(lk, _)| *lk == k).count();
            assert!(pool.waiting(key) <= queued, "a dropped future still waits");
            assert!(pool.in_flight(key) as usize >= held, "a lease not counted");
            assert!(
                pool.in_flight(key) as usize <= held + queued,
                "in flight on {key:?} beyond leases and grants"
            );
        }
        // Loads finish on other threads meanwhile: the two figures meet once they have.
        assert!(
            eventually(Duration::from_secs(30), || pool.accounted_bytes()
                == pool.live_worker_bytes()),
            "accounted {} bytes, live workers {}",
            pool.accounted_bytes(),
            pool.live_worker_bytes()
        );
    }
    drop(pending);
    drop(leases);
    assert!(
        eventually(Duration::from_secs(30), || keys
            .iter()
            .all(|k| pool.starting(k) == 0)),
        "loads left behind: {:?}",
        pool.stats()
    );
    assert_settled(pool, keys);
    let stats = pool.stats();
    assert_eq!(stats.spawn_failures, 0);
    assert_eq!(stats.spawns as usize, stats.total_workers(), "{stats:?}");
    // Liveness afterwards: every key still serves, its idle workers ready at once.
    for key in keys {
        for _ in 0..3 {
            drop(block_on(pool.acquire_async(key)).expect("served after the storm"));
        }
    }
    assert_settled(pool, keys);
}

const ODD_KEYS: &[&str] = &["", "ключ-🦀", "m", "m\0"];

#[test]
fn random_cancellation_storm_with_a_sync_factory() {
    for (seed, in_flight) in [(1, 1), (7, 3), (42, 2)] {
        let pool = Pool::builder("p", |key: &str| {
            Ok::<_, SpawnError>(Model {
                bytes: 10 + key.len() as u64,
            })
        })
        .max_workers_per_model(2)
        .max_in_flight_per_worker(in_flight)
        .acquire_timeout(Duration::from_secs(120))
        .build();
        storm(&pool, ODD_KEYS, seed, 4000);
    }
}

#[test]
fn random_cancellation_storm_with_an_async_factory_driven_by_the_waiters() {
    for (seed, in_flight) in [(3, 1), (11, 2)] {
        let pool = Pool::builder_async("p", |key: &str| {
            let bytes = 10 + key.len() as u64;
            async move {
                // Needs a few polls: the waiting task that started it drives it.
                for _ in 0..3 {
                    yield_now().await;
                }
                Ok::<_, SpawnError>(Model { bytes })
            }
        })
        .max_workers_per_model(2)
        .max_in_flight_per_worker(in_flight)
        .acquire_timeout(Duration::from_secs(120))
        .build();
        storm(&pool, ODD_KEYS, seed, 4000);
    }
}

/// How the first load of a pool fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    SyncErr,
    SyncPanic,
    AsyncErr,
    AsyncPanicInPoll,
    AsyncPanicAtCall,
}

/// A pool whose first load fails as `failure` says (after `gate` opens, if given); later loads
/// succeed at once.
fn failing_pool(failure: Failure, gate: Option<Arc<Gate>>) -> Pool<Model> {
    let calls = Arc::new(AtomicUsize::new(0));
    let builder = match failure {
        Failure::SyncErr | Failure::SyncPanic => Pool::builder("p", move |_key: &str| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            if first {
                if let Some(gate) = &gate {
                    gate.wait();
                }
                if failure == Failure::SyncPanic {
                    panic!("adversarial: the sync factory panics");
                }
                return Err::<Model, SpawnError>("adversarial: the sync factory fails".into());
            }
            Ok(Model { bytes: 5 })
        }),
        _ => Pool::builder_async("p", move |_key: &str| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            if first && failure == Failure::AsyncPanicAtCall {
                panic!("adversarial: the async factory panics when called");
            }
            let gate = gate.clone();
            async move {
                if first {
                    if let Some(gate) = gate {
                        gate.wait_async().await;
                    }
                    if failure == Failure::AsyncPanicInPoll {
                        panic!("adversarial: the async load panics");
                    }
                    return Err::<Model, SpawnError>("adversarial: the async load fails".into());
                }
                Ok(Model { bytes: 5 })
            }
        }),
    };
    builder
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_secs(60))
        .build()
}

fn is_spawn_error(failure: Failure, error: &AcquireError) -> bool {
    match failure {
        Failure::SyncErr | Failure::AsyncErr => matches!(error, AcquireError::Spawn { .. }),
        _ => matches!(error, AcquireError::SpawnPanicked { .. }),
    }
}

#[test]
fn a_first_load_that_fails_or_panics_counts_the_same_on_every_path() {
    let mut counted = Vec::new();
    for failure in [
        Failure::SyncErr,
        Failure::SyncPanic,
        Failure::AsyncErr,
        Failure::AsyncPanicInPoll,
        Failure::AsyncPanicAtCall,
    ] {
        for first_async in [true, false] {
            let pool = failing_pool(failure, None);
            let first = if first_async {
                block_on(pool.acquire_async("m"))
            } else {
                pool.acquire("m")
            };
            let Err(error) = first else {
                panic!("{failure:?}: the first load fails")
            };
            assert!(is_spawn_error(failure, &error), "{failure:?}: {error:?}");
            assert_settled(&pool, &["m"]);
            assert_eq!(pool.accounted_bytes(), 0);
            let second = block_on(pool.acquire_async("m")).expect("the next load works");
            drop(second);
            let third = pool.acquire("m").expect("then the idle worker");
            drop(third);
            assert_settled(&pool, &["m"]);
            let s = pool.stats();
            assert_eq!(
                (s.spawns, s.spawn_failures, s.cold_starts),
                (1, 1, 1),
                "{failure:?} first_async={first_async}: {s:?}"
            );
            counted.push((s.spawns, s.spawn_failures, s.cold_starts));
        }
    }
    assert!(counted.windows(2).all(|w| w[0] == w[1]), "{counted:?}");
}

/// Three requests queue behind the first load of `m` (async, blocking, async, or the other way
/// round); the load fails: the request that called for it (the first) gets the error, the other
/// two are served by a retry, in order; the counters are the same on every path.
#[test]
fn a_load_that_fails_while_requests_queue_fails_its_caller_and_the_rest_are_served_in_order() {
    let mut counted = Vec::new();
    for failure in [
        Failure::SyncErr,
        Failure::SyncPanic,
        Failure::AsyncErr,
        Failure::AsyncPanicInPoll,
    ] {
        for first_async in [true, false] {
            let gate = Arc::new(Gate::default());
            let pool = failing_pool(failure, Some(gate.clone()));
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut threads = Vec::new();
            for i in 0..3 {
                let mine = pool.clone();
                let order = order.clone();
                let use_async = (i % 2 == 0) == first_async;
                threads.push(std::thread::spawn(move || {
                    let result = if use_async {
                        block_on(mine.acquire_async("m"))
                    } else {
                        mine.acquire("m")
                    };
                    match result {
                        Ok(lease) => {
                            order.lock().unwrap().push(i);
                            std::thread::sleep(Duration::from_millis(2));
                            drop(lease);
                            None
                        }
                        Err(error) => Some(error),
                    }
                }));
                assert!(eventually(Duration::from_secs(30), || pool.waiting("m") == i + 1));
            }
            assert_eq!(pool.starting("m"), 1, "one load for a one-worker key");
            gate.open();
            let errors: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let what = format!("{failure:?} first_async={first_async}");
            assert!(
                errors[0]
                    .as_ref()
                    .is_some_and(|e| is_spawn_error(failure, e)),
                "{what}: the first request called for the load: {errors:?}"
            );
            assert!(
                errors[1].is_none() && errors[2].is_none(),
                "{what}: {errors:?}"
            );
            assert_eq!(*order.lock().unwrap(), [1, 2], "{what}");
            assert_settled(&pool, &["m"]);
            let s = pool.stats();
            assert_eq!((s.spawns, s.spawn_failures), (1, 1), "{what}: {s:?}");
            assert_eq!(s.total_workers(), 1);
            counted.push((what, s.spawns, s.spawn_failures, s.cold_starts));
        }
    }
    let first = (counted[0].1, counted[0].2, counted[0].3);
    for c in &counted {
        assert_eq!((c.1, c.2, c.3), first, "{counted:?}");
    }
}

#[test]
fn close_fails_queued_futures_and_threads_and_a_load_in_progress_is_shut_down() {
    struct Counted {
        down: Arc<AtomicUsize>,
    }
    impl Worker for Counted {
        fn memory_bytes(&self) -> u64 {
            9
        }
        fn shutdown(&self) {
            self.down.fetch_add(1, Ordering::SeqCst);
        }
    }
    let gate = Arc::new(Gate::default());
    let down = Arc::new(AtomicUsize::new(0));
    let (g, d) = (gate.clone(), down.clone());
    let pool = Pool::builder_async("p", move |_key: &str| {
        let (gate, down) = (g.clone(), d.clone());
        async move {
            gate.wait_async().await;
            Ok::<_, SpawnError>(Counted { down })
        }
    })
    .max_workers_per_model(1)
    .acquire_timeout(Duration::from_secs(60))
    .build();
    // The first waiter starts (and drives) the load; a blocking thread and another task queue.
    let mut threads = Vec::new();
    for i in 0..3 {
        let mine = pool.clone();
        threads.push(std::thread::spawn(move || {
            if i == 1 {
                mine.acquire("m").map(drop)
            } else {
                block_on(mine.acquire_async("m")).map(drop)
            }
        }));
        assert!(eventually(Duration::from_secs(30), || pool.waiting("m") == i + 1));
    }
    // And one hand-polled future, with a waker that counts.
    let (wakes, waker) = counter();
    let mut polled = pool.acquire_async("m");
    assert!(poll_once(&mut polled, &waker).is_pending());
    assert_eq!(pool.waiting("m"), 4);
    pool.close();
    for thread in threads {
        let result = thread.join().unwrap();
        assert!(
            matches!(result, Err(AcquireError::Closed { .. })),
            "{result:?}"
        );
    }
    assert!(wakes.0.load(Ordering::SeqCst) >= 1, "the task was woken");
    match poll_once(&mut polled, &waker) {
        Poll::Ready(Err(AcquireError::Closed { .. })) => {}
        Poll::Ready(other) => panic!("{:?}", other.map(|_| ())),
        Poll::Pending => panic!("a queued future hangs after close"),
    }
    // New requests are refused, on both paths.
    assert!(matches!(
        block_on(pool.acquire_async("m")),
        Err(AcquireError::Closed { .. })
    ));
    assert!(matches!(
        pool.acquire("m"),
        Err(AcquireError::Closed { .. })
    ));
    // The load goes on off every caller, and its worker is shut down once, not kept.
    gate.open();
    assert!(eventually(Duration::from_secs(30), || down
        .load(Ordering::SeqCst)
        == 1));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(down.load(Ordering::SeqCst), 1);
    assert_eq!(pool.workers("m"), 0);
    assert_eq!(pool.accounted_bytes(), 0);
    assert_eq!(pool.waiting("m"), 0);
    assert_eq!(pool.starting("m"), 0);
}

#[test]
fn the_waker_of_the_latest_poll_is_the_one_woken_by_a_release_and_by_the_timer() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_secs(60))
        .build();
    let held = pool.acquire("m").unwrap();
    let (first, first_waker) = counter();
    let (second, second_waker) = counter();
    let mut future = pool.acquire_async("m");
    assert!(poll_once(&mut future, &first_waker).is_pending());
    // The task moved: polled with another waker.
    assert!(poll_once(&mut future, &second_waker).is_pending());
    drop(held);
    assert_eq!(second.0.load(Ordering::SeqCst), 1, "the current waker");
    assert_eq!(first.0.load(Ordering::SeqCst), 0, "not the stale one");
    assert!(poll_once(&mut future, &second_waker).is_ready());
    drop(future);

    // The timer too wakes the latest waker.
    pool.set_acquire_timeout(Duration::from_millis(100));
    let held = pool.acquire("m").unwrap();
    let (first, first_waker) = counter();
    let (second, second_waker) = counter();
    let mut future = pool.acquire_async("m");
    assert!(poll_once(&mut future, &first_waker).is_pending());
    assert!(poll_once(&mut future, &second_waker).is_pending());
    assert!(
        eventually(Duration::from_secs(30), || second.0.load(Ordering::SeqCst)
            >= 1),
        "the timer never woke the current waker (stale one woken {} times)",
        first.0.load(Ordering::SeqCst)
    );
    match poll_once(&mut future, &second_waker) {
        Poll::Ready(Err(AcquireError::Timeout { .. })) => {}
        other => panic!("{:?}", other.map(|r| r.map(|_| ()))),
    }
    drop(held);
    assert_settled(&pool, &["m"]);
    assert_eq!(pool.stats().acquire_timeouts, 1);
}

#[test]
fn raising_max_workers_while_requests_queue_spawns_for_them_and_lowering_evicts_nothing() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 2 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_secs(60))
        .build();
    let held = pool.acquire("m").unwrap();
    let (_wakes, waker) = counter();
    let mut queued: Vec<_> = (0..4).map(|_| pool.acquire_async("m")).collect();
    for future in &mut queued {
        assert!(poll_once(future, &waker).is_pending());
    }
    assert_eq!(pool.starting("m"), 0, "at the limit: no load");
    pool.set_max_workers_per_model(3); // room for 2 more workers: the 2 oldest are served
    assert!(eventually(Duration::from_secs(30), || pool.workers("m")
        == 3
        && pool.starting("m") == 0));
    assert_eq!(pool.waiting("m"), 2);
    let mut served = Vec::new();
    let mut rest = Vec::new();
    for mut future in queued {
        match poll_once(&mut future, &waker) {
            Poll::Ready(lease) => served.push(lease.unwrap()),
            Poll::Pending => rest.push(future),
        }
    }
    assert_eq!((served.len(), rest.len()), (2, 2));
    pool.set_max_workers_per_model(1);
    assert_eq!(pool.workers("m"), 3, "lowering the limit evicts nothing");
    assert_eq!(pool.starting("m"), 0, "and starts nothing");
    drop(held); // to the oldest of the rest
    let mut third = rest.remove(0);
    let lease = match poll_once(&mut third, &waker) {
        Poll::Ready(lease) => lease.unwrap(),
        Poll::Pending => panic!("the oldest waiter gets the released worker"),
    };
    assert!(poll_once(&mut rest[0], &waker).is_pending());
    drop(served);
    let last = match poll_once(&mut rest[0], &waker) {
        Poll::Ready(lease) => lease.unwrap(),
        Poll::Pending => panic!("served by a released worker"),
    };
    drop((lease, last, third, rest));
    assert_settled(&pool, &["m"]);
    assert_eq!(pool.stats().spawns, 3);
}

#[test]
fn a_zero_acquire_timeout_fails_at_once_and_the_load_it_started_becomes_idle() {
    for use_async_factory in [false, true] {
        let builder = if use_async_factory {
            Pool::builder_async("p", |_key: &str| async {
                yield_now().await;
                Ok::<_, SpawnError>(Model { bytes: 4 })
            })
        } else {
            Pool::builder("p", |_key: &str| {
                std::thread::sleep(Duration::from_millis(20));
                Ok::<_, SpawnError>(Model { bytes: 4 })
            })
        };
        let pool = builder.acquire_timeout(Duration::ZERO).build();
        let result = block_on(pool.acquire_async("m"));
        assert!(
            matches!(result, Err(AcquireError::Timeout { .. })),
            "{:?}",
            result.map(|_| ())
        );
        assert!(eventually(Duration::from_secs(30), || pool.workers("m") == 1));
        assert_settled(&pool, &["m"]);
        // The idle worker serves the next request at once, under either timeout.
        let (_w, waker) = counter();
        let mut next = pool.acquire_async("m");
        assert!(poll_once(&mut next, &waker).is_ready());
        let s = pool.stats();
        assert_eq!(
            (s.spawns, s.acquire_timeouts),
            (1, 1),
            "async factory: {use_async_factory}"
        );
    }
}

/// The timeout error says how long the request waited. A request that queued under a 100 ms
/// timeout and gave up after it must not report a timeout set later for new requests
/// (`set_acquire_timeout` applies "for requests that start from now on").
#[test]
fn the_timeout_error_of_acquire_async_reports_the_time_it_waited() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_millis(100))
        .build();
    let held = pool.acquire("m").unwrap();
    let waiting = {
        let pool = pool.clone();
        std::thread::spawn(move || block_on(pool.acquire_async("m")).map(drop))
    };
    assert!(eventually(Duration::from_secs(30), || pool.waiting("m") == 1));
    pool.set_acquire_timeout(Duration::from_secs(3600));
    let result = waiting.join().unwrap();
    match result {
        Err(AcquireError::Timeout { waited, .. }) => assert!(
            waited < Duration::from_secs(60),
            "waited about 100 ms, the error says {waited:?}"
        ),
        other => panic!("{other:?}"),
    }
    drop(held);
}

/// The same through the blocking path, which does report what it waited (a passing property).
#[test]
fn the_timeout_error_of_acquire_reports_the_time_it_waited() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_millis(100))
        .build();
    let held = pool.acquire("m").unwrap();
    let waiting = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("m").map(drop))
    };
    assert!(eventually(Duration::from_secs(30), || pool.waiting("m") == 1));
    pool.set_acquire_timeout(Duration::from_secs(3600));
    match waiting.join().unwrap() {
        Err(AcquireError::Timeout { waited, .. }) => {
            assert!(waited < Duration::from_secs(60), "{waited:?}")
        }
        other => panic!("{other:?}"),
    }
    drop(held);
}

/// `PoolStats::cold_starts` is documented as "requests served by a worker spawned while they
/// waited", and the simulator counts "every request that waited and was served by a worker that
/// finished spawning after the request arrived". A request that arrives while a load is in
/// progress (max_in_flight_per_worker = 2, so no second load is started for it) and is served by
/// that new worker waited for a spawn. The library does not count it.
#[test]
fn a_request_that_arrives_during_a_load_and_is_served_by_it_is_a_cold_start() {
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let pool = Pool::builder("p", move |_key: &str| {
        g.wait();
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .max_workers_per_model(1)
    .max_in_flight_per_worker(2)
    .build();
    let (_w, waker) = counter();
    let mut first = pool.acquire_async("m");
    assert!(poll_once(&mut first, &waker).is_pending());
    let mut second = pool.acquire_async("m");
    assert!(poll_once(&mut second, &waker).is_pending());
    assert_eq!((pool.starting("m"), pool.waiting("m")), (1, 2));
    gate.open();
    let a = block_on(first).unwrap();
    let b = block_on(second).unwrap();
    assert_eq!(
        a.worker_id(),
        b.worker_id(),
        "both served by the new worker"
    );
    drop((a, b));
    assert_eq!(pool.stats().cold_starts, 2, "{:?}", pool.stats());
}
