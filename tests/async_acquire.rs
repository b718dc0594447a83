//! The request path of an async server: `acquire_async` under tokio and other executors, the
//! per-key first-come-first-served waiting room shared with `acquire`, cancellation at every
//! await point, and async loading.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{eventually, Model};
use poolwarden::{AcquireError, Pool, SpawnError, Worker};

/// The pool's accounting matches its live workers, and nothing is in flight or waiting.
fn assert_settled(pool: &Pool<Model>, keys: &[&str]) {
    let stats = pool.stats();
    assert_eq!(
        pool.accounted_bytes(),
        pool.live_worker_bytes(),
        "{stats:?}"
    );
    for key in keys {
        assert_eq!(pool.in_flight(key), 0, "in flight on {key}: {stats:?}");
        assert_eq!(pool.waiting(key), 0, "waiting on {key}: {stats:?}");
    }
}

/// A waker that counts its wakes.
struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
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

fn poll_once<F: Future + Unpin>(future: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

#[test]
fn sixty_four_tasks_on_two_runtime_threads_hold_leases_across_awaits_and_nothing_stalls() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    // A 1 s model load: it runs off the runtime, so the runtime keeps serving meanwhile.
    let pool = Pool::builder("text", |_key: &str| {
        std::thread::sleep(Duration::from_secs(1));
        Ok::<_, SpawnError>(Model { bytes: 1 << 20 })
    })
    .max_workers_per_model(2)
    .acquire_timeout(Duration::from_secs(60))
    .build();
    let served = Arc::new(AtomicU64::new(0));
    let worst_gap = runtime.block_on(async {
        // A heartbeat: how late a 5 ms timer fires tells whether a runtime thread was blocked.
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    worst = worst.max(start.elapsed().saturating_sub(Duration::from_millis(5)));
                }
                worst
            })
        };
        let mut tasks = Vec::new();
        for task in 0..64 {
            let pool = pool.clone();
            let served = served.clone();
            tasks.push(tokio::spawn(async move {
                let key = ["a", "b", "c", "d"][task % 4];
                for _ in 0..20 {
                    let lease = pool.acquire_async(key).await.expect("a lease");
                    // Held across an await, as a real handler does.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    assert_eq!(lease.key(), key);
                    drop(lease);
                    served.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        heartbeat.await.unwrap()
    });
    assert_eq!(served.load(Ordering::SeqCst), 64 * 20);
    assert!(
        worst_gap < Duration::from_millis(800),
        "a runtime thread stalled for {worst_gap:?} (a load takes 1 s)"
    );
    assert_settled(&pool, &["a", "b", "c", "d"]);
    assert_eq!(pool.stats().spawns, 8, "two workers per key, no more");
}

#[test]
fn waiters_are_served_in_arrival_order_whether_threads_or_tasks() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .build();
    let first = pool.acquire("m").unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    // Alternate threads and tasks (each task on its own executor thread); each joins the queue
    // only once the previous one is in it.
    for i in 0..8 {
        let mine = pool.clone();
        let order = order.clone();
        threads.push(std::thread::spawn(move || {
            let lease = if i % 2 == 0 {
                mine.acquire("m").unwrap()
            } else {
                futures::executor::block_on(mine.acquire_async("m")).unwrap()
            };
            order.lock().unwrap().push(i);
            std::thread::sleep(Duration::from_millis(2));
            drop(lease);
        }));
        assert!(eventually(Duration::from_secs(30), || pool.waiting("m") == i + 1));
    }
    // A late arrival never overtakes the queue.
    assert!(pool.try_acquire("m").is_none());
    drop(first);
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    assert_settled(&pool, &["m"]);
    assert_eq!(pool.stats().spawns, 1);
}

#[test]
fn a_release_wakes_only_its_own_keys_waiters() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .build();
    let a = pool.acquire("a").unwrap();
    let b = pool.acquire("b").unwrap();
    let wakes_a = Arc::new(CountWakes(AtomicUsize::new(0)));
    let wakes_b = Arc::new(CountWakes(AtomicUsize::new(0)));
    let (waker_a, waker_b) = (Waker::from(wakes_a.clone()), Waker::from(wakes_b.clone()));
    let mut wait_a = pool.acquire_async("a");
    let mut wait_b = pool.acquire_async("b");
    assert!(poll_once(&mut wait_a, &waker_a).is_pending());
    assert!(poll_once(&mut wait_b, &waker_b).is_pending());
    drop(a);
    assert_eq!(wakes_a.0.load(Ordering::SeqCst), 1, "a's waiter woken once");
    assert_eq!(wakes_b.0.load(Ordering::SeqCst), 0, "b's waiter not woken");
    let lease = match poll_once(&mut wait_a, &waker_a) {
        Poll::Ready(lease) => lease.unwrap(),
        Poll::Pending => panic!("handed the released worker"),
    };
    assert_eq!(lease.key(), "a");
    drop((lease, b));
    assert!(poll_once(&mut wait_b, &waker_b).is_ready());
}

#[test]
fn a_spawn_in_progress_counts_for_max_in_flight_waiters() {
    let started = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (s, g) = (started.clone(), gate.clone());
    let pool = Pool::builder("p", move |_key: &str| {
        s.fetch_add(1, Ordering::SeqCst);
        let (open, cv) = &*g;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .max_workers_per_model(8)
    .max_in_flight_per_worker(4)
    .build();
    let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
    let mut waiting: Vec<_> = (0..10).map(|_| pool.acquire_async("m")).collect();
    for future in &mut waiting {
        assert!(poll_once(future, &waker).is_pending());
    }
    assert!(eventually(Duration::from_secs(30), || started
        .load(Ordering::SeqCst)
        == 3));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        started.load(Ordering::SeqCst),
        3,
        "10 waiters / 4 per worker = 3 loads"
    );
    assert_eq!(pool.starting("m"), 3);
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let leases: Vec<_> = waiting
        .into_iter()
        .map(|f| futures::executor::block_on(f).unwrap())
        .collect();
    assert_eq!(pool.workers("m"), 3);
    assert_eq!(pool.in_flight("m"), 10);
    drop(leases);
    assert_settled(&pool, &["m"]);
}

#[test]
fn dropping_a_queued_future_leaves_no_trace() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .build();
    let held = pool.acquire("m").unwrap();
    let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
    let mut queued = pool.acquire_async("m");
    assert!(poll_once(&mut queued, &waker).is_pending());
    assert_eq!(pool.waiting("m"), 1);
    drop(queued);
    assert_eq!(pool.waiting("m"), 0, "its place in the queue is gone");
    drop(held);
    assert_eq!(pool.in_flight("m"), 0);
    // The worker is free for the next request, at once.
    assert!(pool.try_acquire("m").is_some());
    assert_settled(&pool, &["m"]);
}

#[test]
fn a_worker_handed_to_a_dropped_future_goes_to_the_next_waiter() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .build();
    let held = pool.acquire("m").unwrap();
    let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
    let mut first = pool.acquire_async("m");
    let mut second = pool.acquire_async("m");
    assert!(poll_once(&mut first, &waker).is_pending());
    assert!(poll_once(&mut second, &waker).is_pending());
    drop(held); // handed to `first`, which is never polled again
    assert_eq!(pool.waiting("m"), 1);
    assert_eq!(pool.in_flight("m"), 1, "granted to the first waiter");
    drop(first);
    let lease = match poll_once(&mut second, &waker) {
        Poll::Ready(lease) => lease.unwrap(),
        Poll::Pending => panic!("the next waiter gets the worker"),
    };
    drop(lease);
    // With nobody waiting, a granted-then-dropped worker goes back to idle.
    let held = pool.acquire("m").unwrap();
    let mut third = pool.acquire_async("m");
    assert!(poll_once(&mut third, &waker).is_pending());
    drop(held);
    drop(third);
    assert_eq!(pool.in_flight("m"), 0);
    assert!(pool.try_acquire("m").is_some());
    assert_settled(&pool, &["m"]);
}

#[test]
fn a_load_started_by_a_dropped_future_completes_and_serves_the_next_waiter() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let loads = Arc::new(AtomicUsize::new(0));
    let l = loads.clone();
    let pool = Pool::builder_async("p", move |_key: &str| {
        let gate = g.clone();
        l.fetch_add(1, Ordering::SeqCst);
        async move {
            // A load that takes a while (runtime-agnostic).
            while !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
                yield_now().await;
            }
            Ok::<_, SpawnError>(Model { bytes: 7 })
        }
    })
    .max_workers_per_model(1)
    .build();
    let waker = Waker::from(Arc::new(CountWakes(AtomicUsize::new(0))));
    let mut starter = pool.acquire_async("m");
    assert!(poll_once(&mut starter, &waker).is_pending());
    let mut next = pool.acquire_async("m");
    assert!(poll_once(&mut next, &waker).is_pending());
    assert_eq!(pool.starting("m"), 1);
    drop(starter); // mid-load
    gate.store(true, Ordering::SeqCst);
    let lease = futures::executor::block_on(next).unwrap();
    assert_eq!(lease.memory_bytes(), 7);
    assert_eq!(loads.load(Ordering::SeqCst), 1, "one load, not a second");
    drop(lease);

    // With nobody left waiting, the load becomes an idle worker.
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let pool = Pool::builder_async("p", move |_key: &str| {
        let gate = g.clone();
        async move {
            while !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
                yield_now().await;
            }
            Ok::<_, SpawnError>(Model { bytes: 7 })
        }
    })
    .build();
    let mut only = pool.acquire_async("m");
    assert!(poll_once(&mut only, &waker).is_pending());
    drop(only);
    assert_eq!(pool.waiting("m"), 0);
    gate.store(true, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(30), || pool.workers("m") == 1));
    assert_eq!(pool.in_flight("m"), 0);
    assert_eq!(pool.accounted_bytes(), 7);
    assert_settled(&pool, &["m"]);
}

#[test]
fn async_loading_under_tokio_with_cancellation_during_the_load() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let pool = Pool::builder_async("p", |_key: &str| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, SpawnError>(Model { bytes: 3 })
    })
    .build();
    runtime.block_on(async {
        let cancelled =
            tokio::time::timeout(Duration::from_millis(20), pool.acquire_async("m")).await;
        assert!(cancelled.is_err(), "timed out mid-load");
        // The load goes on and becomes an idle worker.
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.workers("m") == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.workers("m"), 1);
        let lease = pool.acquire_async("m").await.unwrap();
        assert_eq!(lease.memory_bytes(), 3);
    });
    assert_settled(&pool, &["m"]);
    assert_eq!(pool.stats().spawns, 1);
}

#[test]
fn the_acquire_timeout_applies_under_any_executor() {
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_millis(100))
        .build();
    let held = pool.acquire("m").unwrap();
    let start = Instant::now();
    let result = futures::executor::block_on(pool.acquire_async("m"));
    assert!(
        matches!(result, Err(AcquireError::Timeout { .. })),
        "{result:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let result = runtime.block_on(pool.acquire_async("m"));
    assert!(
        matches!(result, Err(AcquireError::Timeout { .. })),
        "{result:?}"
    );
    assert_eq!(pool.waiting("m"), 0);
    assert_eq!(pool.stats().acquire_timeouts, 2);
    drop(held);
}

#[test]
fn a_thread_pool_executor_serves_many_tasks() {
    let executor = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    let pool = Pool::builder_async("p", |_key: &str| async {
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .max_workers_per_model(2)
    .build();
    let done = Arc::new(AtomicUsize::new(0));
    for task in 0..32 {
        let pool = pool.clone();
        let done = done.clone();
        executor.spawn_ok(async move {
            for _ in 0..50 {
                let key = if task % 2 == 0 { "x" } else { "y" };
                let lease = pool.acquire_async(key).await.unwrap();
                yield_now().await; // yield while holding it
                drop(lease);
            }
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    assert!(eventually(Duration::from_secs(60), || done
        .load(Ordering::SeqCst)
        == 32));
    assert_settled(&pool, &["x", "y"]);
}

#[test]
fn acquire_async_is_send() {
    fn send<T: Send>(_: &T) {}
    let pool = Pool::builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 })).build();
    let future = pool.acquire_async("m");
    send(&future);
}

#[test]
fn with_a_spawner_every_async_load_runs_there() {
    let spawned = Arc::new(AtomicUsize::new(0));
    let s = spawned.clone();
    let pool = Pool::builder_async("p", |_key: &str| async {
        Ok::<_, SpawnError>(Model { bytes: 1 })
    })
    .spawner(move |load| {
        s.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || poolwarden::pool::block_on(load));
    })
    .build();
    let lease = futures::executor::block_on(pool.acquire_async("m")).unwrap();
    assert_eq!(
        spawned.load(Ordering::SeqCst),
        1,
        "the load ran on the spawner"
    );
    drop(lease);
}

#[test]
fn smol_tasks_share_a_key_with_an_async_loader_on_smols_timer() {
    // A loader that awaits smol's own timer: the load runs as a future off the caller's task.
    let loads = Arc::new(AtomicUsize::new(0));
    let counted = loads.clone();
    let pool = Pool::builder_async("p", move |_key: &str| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            smol::Timer::after(Duration::from_millis(50)).await;
            Ok::<_, SpawnError>(Model { bytes: 3 })
        }
    })
    .max_workers_per_model(2)
    .acquire_timeout(Duration::from_secs(30))
    .build();
    let executor = Arc::new(smol::Executor::new());
    let served = Arc::new(AtomicUsize::new(0));
    let (stop, shutdown) = smol::channel::unbounded::<()>();
    // Two threads run the executor, as a multi-threaded smol service would.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let executor = executor.clone();
            let shutdown = shutdown.clone();
            std::thread::spawn(move || smol::block_on(executor.run(shutdown.recv())))
        })
        .collect();
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let pool = pool.clone();
            let served = served.clone();
            executor.spawn(async move {
                for _ in 0..10 {
                    let key = if task % 2 == 0 { "a" } else { "b" };
                    let lease = pool.acquire_async(key).await.unwrap();
                    // Hold the lease across an await on smol's timer.
                    smol::Timer::after(Duration::from_millis(1)).await;
                    drop(lease);
                    served.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    smol::block_on(async {
        for task in tasks {
            task.await;
        }
    });
    drop(stop);
    for thread in threads {
        // Each executor thread ran until the channel closed.
        assert!(thread.join().unwrap().is_err());
    }
    assert_eq!(served.load(Ordering::SeqCst), 160);
    // Never more loads than the two keys' limits allow.
    let loads = loads.load(Ordering::SeqCst);
    assert!((2..=4).contains(&loads), "{loads} loads");
    assert_eq!(pool.stats().spawns as usize, loads);
    assert_settled(&pool, &["a", "b"]);

    // The pool's acquire_timeout holds under smol too, and a timed-out waiter leaves no trace.
    let short = Pool::builder("q", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }))
        .max_workers_per_model(1)
        .acquire_timeout(Duration::from_millis(100))
        .build();
    let held = short.acquire("m").unwrap();
    let start = Instant::now();
    let result = smol::block_on(short.acquire_async("m"));
    assert!(
        matches!(result, Err(AcquireError::Timeout { .. })),
        "{result:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(short.waiting("m"), 0);
    drop(held);
    assert_settled(&short, &["m"]);
}
