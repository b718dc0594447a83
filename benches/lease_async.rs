//! The async request path against the sync one and the async pools Rust services know
//! (deadpool, bb8). One criterion group, `lease_async`, so that every figure comes from one run,
//! side by side; BENCHMARKS.md holds the figures and how to reproduce them.
//!
//! * `acquire`, `acquire_async`, `deadpool`, `bb8`: an uncontended round trip (get a worker,
//!   drop it) on a warm pool of four, one key. All four run the same way: `iters` round trips
//!   in one loop inside one `block_on` of a tokio current-thread runtime (`iter_custom`), so
//!   each pays the same executor cost, which is nothing per iteration: a ready future is
//!   polled once, in place. The sync `acquire` runs in that same loop, as a plain call.
//!   After them, the same round trips (and `acquire_async_noop_waker`) run again interleaved:
//!   301 rounds, each timing 2,000 round trips of each function in turn (a fraction of a
//!   millisecond each), starting with another function each round. The medians of the
//!   per-round ratios are printed to stderr: a check of criterion's ratios that the host's slow
//!   phases, which fall on functions measured seconds apart, cannot skew.
//! * `acquire_async_noop_waker` (context): the same round trip with no runtime at all, the
//!   future polled once by hand with a no-op waker (it is ready at the first poll when a worker
//!   is free).
//! * `handoff_8_tasks`: one worker, eight tasks on a two-thread tokio runtime, each task taking
//!   the worker, holding it across an `.await` (a yield) and dropping it, so that nearly every
//!   acquisition waits in the key's queue and is served by a hand-off from the previous
//!   holder. One iteration is one acquisition; criterion's figure is the throughput. Every wait
//!   (from the call to the lease in hand) is recorded, and the mean, p50, p99 and longest wait
//!   are printed to stderr at the end. `handoff_8_tasks_deadpool` (context) does the same with a
//!   deadpool of one object whose `get` waits at most 30 s, as poolwarden's requests wait at
//!   most `acquire_timeout` (30 s by default).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use poolwarden::{Pool, SpawnError, Worker};

/// The key of every benchmark.
const KEY: &str = "llama-7b";
/// Workers (objects, connections) in the uncontended pools.
const WORKERS: usize = 4;
/// Tasks competing for the one worker of the hand-off benchmarks.
const TASKS: u64 = 8;

/// A worker that is nothing but a footprint.
struct Model {
    bytes: u64,
}

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }
}

/// A pool with `workers` ready, idle workers of [`KEY`].
fn warm_pool(workers: usize) -> Pool<Model> {
    let pool = Pool::builder("bench", |_key: &str| {
        Ok::<_, SpawnError>(Model { bytes: 1 << 20 })
    })
    .max_workers_per_model(workers)
    .build();
    let leases: Vec<_> = (0..workers)
        .map(|_| pool.acquire(KEY).expect("the factory never fails"))
        .collect();
    drop(leases);
    assert_eq!(pool.workers(KEY), workers);
    pool
}

/// A deadpool manager whose objects cost nothing to create or recycle.
struct DeadpoolTrivial;

impl deadpool::managed::Manager for DeadpoolTrivial {
    type Type = u64;
    type Error = std::convert::Infallible;

    async fn create(&self) -> Result<u64, Self::Error> {
        Ok(0)
    }

    async fn recycle(
        &self,
        _object: &mut u64,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Self::Error> {
        Ok(())
    }
}

/// A deadpool of `size` objects, all created (the first `get`s create them). With
/// `wait_timeout`, a `get` waits at most that long (on tokio's timer), as poolwarden's
/// requests wait at most `acquire_timeout`; without it (deadpool's default, and its fastest
/// configuration) it waits for ever.
async fn deadpool_pool(
    size: usize,
    wait_timeout: Option<Duration>,
) -> deadpool::managed::Pool<DeadpoolTrivial> {
    let pool = deadpool::managed::Pool::builder(DeadpoolTrivial)
        .max_size(size)
        .wait_timeout(wait_timeout)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("a deadpool");
    let mut objects = Vec::new();
    for _ in 0..size {
        objects.push(pool.get().await.expect("creating never fails"));
    }
    drop(objects);
    assert_eq!(pool.status().available, size);
    pool
}

/// A bb8 connection manager whose connections cost nothing.
struct Bb8Trivial;

impl bb8::ManageConnection for Bb8Trivial {
    type Connection = u64;
    type Error = std::convert::Infallible;

    async fn connect(&self) -> Result<u64, Self::Error> {
        Ok(0)
    }

    async fn is_valid(&self, _connection: &mut u64) -> Result<(), Self::Error> {
        Ok(())
    }

    fn has_broken(&self, _connection: &mut u64) -> bool {
        false
    }
}

/// A bb8 pool of `WORKERS` connections, all open, in its fastest configuration (no test on
/// check-out, as r2d2 in the sync benchmarks).
async fn bb8_pool() -> bb8::Pool<Bb8Trivial> {
    let pool = bb8::Pool::builder()
        .max_size(WORKERS as u32)
        .min_idle(Some(WORKERS as u32))
        .test_on_check_out(false)
        .build(Bb8Trivial)
        .await
        .expect("connecting never fails");
    let mut connections = Vec::new();
    for _ in 0..WORKERS {
        connections.push(pool.get().await.expect("connecting never fails"));
    }
    drop(connections);
    assert_eq!(pool.state().idle_connections, WORKERS as u32);
    pool
}

/// Polls `future` once with a no-op waker; it must be ready.
#[inline(always)]
fn ready_now<F: Future>(future: F) -> F::Output {
    let future = pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an uncontended acquire is ready at the first poll"),
    }
}

/// The uncontended round trips, all in one current-thread runtime.
fn uncontended(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pool = warm_pool(WORKERS);
    let deadpool = runtime.block_on(deadpool_pool(WORKERS, None));
    let bb8 = runtime.block_on(bb8_pool());

    let mut group = c.benchmark_group("lease_async");
    group.bench_function("acquire", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(pool.acquire(black_box(KEY))));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("acquire_async", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(pool.acquire_async(black_box(KEY)).await));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("acquire_async_noop_waker", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                drop(black_box(ready_now(pool.acquire_async(black_box(KEY)))));
            }
            start.elapsed()
        })
    });
    group.bench_function("deadpool", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(deadpool.get().await));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("bb8", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(bb8.get().await));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    interleaved(&runtime, &pool, &deadpool, &bb8);
}

/// Rounds of the interleaved comparison, and round trips per function in each: a token run
/// when criterion only tests the benchmarks (`cargo bench -- --test`, or `cargo test`, which
/// runs the bench without `--bench`).
fn rounds() -> (usize, u64) {
    let mut args = std::env::args();
    let measuring = args.any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test");
    if measuring {
        (301, 2_000)
    } else {
        (1, 100)
    }
}

/// The uncontended round trips again, interleaved: each round times a short block of each of
/// the five in turn, so that the host's slow phases (which move criterion's medians, measured
/// seconds apart, by up to 60 %) fall on all of them alike. Prints the median over the rounds of
/// each per-round ratio to stderr.
fn interleaved(
    runtime: &tokio::runtime::Runtime,
    pool: &Pool<Model>,
    deadpool: &deadpool::managed::Pool<DeadpoolTrivial>,
    bb8: &bb8::Pool<Bb8Trivial>,
) {
    let (rounds, n) = rounds();
    let mut ratios: [Vec<f64>; 4] = Default::default();
    let mut sync_ns = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Each round starts with another function, so that none is always first.
        let mut times = [0.0f64; 5];
        for turn in 0..times.len() {
            let function = (round + turn) % times.len();
            times[function] = runtime.block_on(async {
                let start = Instant::now();
                match function {
                    0 => {
                        for _ in 0..n {
                            drop(black_box(pool.acquire(black_box(KEY))));
                        }
                    }
                    1 => {
                        for _ in 0..n {
                            drop(black_box(pool.acquire_async(black_box(KEY)).await));
                        }
                    }
                    2 => {
                        for _ in 0..n {
                            drop(black_box(deadpool.get().await));
                        }
                    }
                    3 => {
                        for _ in 0..n {
                            drop(black_box(bb8.get().await));
                        }
                    }
                    _ => {
                        for _ in 0..n {
                            drop(black_box(ready_now(pool.acquire_async(black_box(KEY)))));
                        }
                    }
                }
                start.elapsed().as_secs_f64()
            });
        }
        let [sync, asynchronous, deadpool, bb8, noop] = times;
        sync_ns.push(sync * 1e9 / n as f64);
        ratios[0].push(asynchronous / sync);
        ratios[1].push(deadpool / asynchronous);
        ratios[2].push(bb8 / asynchronous);
        ratios[3].push(noop / sync);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let sync = median(&mut sync_ns);
    let [a, d, b, noop] = &mut ratios;
    eprintln!(
        "lease_async interleaved ({rounds} rounds of {n} round trips each; medians of the per-round \
         ratios): acquire_async/acquire {:.2}, deadpool/acquire_async {:.2}, \
         bb8/acquire_async {:.2}, acquire_async_noop_waker/acquire {:.2} (acquire {sync:.1} ns)",
        median(a),
        median(d),
        median(b),
        median(noop),
    );
}

/// Yields to the runtime once (the holder keeps its lease across this `.await`).
async fn yield_now() {
    tokio::task::yield_now().await;
}

/// Splits `iters` acquisitions over [`TASKS`] tasks: the share of task `task`.
fn share(iters: u64, task: u64) -> u64 {
    iters / TASKS + u64::from(task < iters % TASKS)
}

/// Waits in nanoseconds, recorded over every iteration of one benchmark.
#[derive(Default)]
struct Waits(Mutex<Vec<u64>>);

impl Waits {
    fn add(&self, waits: Vec<u64>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(waits);
    }

    /// Prints the count, mean, p50, p99 and longest wait to stderr.
    fn report(&self, name: &str) {
        let mut waits = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        if waits.is_empty() {
            return;
        }
        waits.sort_unstable();
        let at = |q: f64| {
            let rank = ((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len());
            Duration::from_nanos(waits[rank - 1])
        };
        let mean = waits.iter().map(|&w| u128::from(w)).sum::<u128>() / waits.len() as u128;
        eprintln!(
            "lease_async/{name}: {} waits recorded: mean {:?}, p50 {:?}, p99 {:?}, max {:?}",
            waits.len(),
            Duration::from_nanos(mean as u64),
            at(0.50),
            at(0.99),
            at(1.0),
        );
    }
}

/// Runs `iters` acquisitions over [`TASKS`] tasks on `runtime`, each from `acquire`, and
/// returns the wall time; every wait goes to `waits`.
fn handoff<A, F, L>(
    runtime: &tokio::runtime::Runtime,
    iters: u64,
    waits: &Waits,
    acquire: A,
) -> Duration
where
    A: Fn() -> F + Clone + Send + 'static,
    F: Future<Output = L> + Send,
    L: Send,
{
    runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let acquire = acquire.clone();
                tokio::spawn(async move {
                    let n = share(iters, task);
                    let mut recorded = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let asked = Instant::now();
                        let lease = acquire().await;
                        recorded.push(asked.elapsed().as_nanos() as u64);
                        yield_now().await;
                        drop(lease);
                    }
                    recorded
                })
            })
            .collect();
        let mut all = Vec::with_capacity(iters as usize);
        for task in tasks {
            all.extend(task.await.expect("a hand-off task panicked"));
        }
        let elapsed = start.elapsed();
        waits.add(all);
        elapsed
    })
}

/// The contended hand-off: one worker, eight tasks on two runtime threads.
fn contended(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pool = warm_pool(1);
    // Both wait at most 30 s: poolwarden's default `acquire_timeout`, and deadpool's
    // `wait_timeout`.
    let deadpool = runtime.block_on(deadpool_pool(1, Some(Duration::from_secs(30))));
    let pool_waits = Waits::default();
    let deadpool_waits = Waits::default();

    let mut group = c.benchmark_group("lease_async");
    group.throughput(Throughput::Elements(1));
    group.bench_function("handoff_8_tasks", |b| {
        b.iter_custom(|iters| {
            let pool = pool.clone();
            handoff(&runtime, iters, &pool_waits, move || {
                let pool = pool.clone();
                async move {
                    pool.acquire_async(KEY)
                        .await
                        .expect("the one worker is handed off")
                }
            })
        })
    });
    group.bench_function("handoff_8_tasks_deadpool", |b| {
        b.iter_custom(|iters| {
            let deadpool = deadpool.clone();
            handoff(&runtime, iters, &deadpool_waits, move || {
                let deadpool = deadpool.clone();
                async move { deadpool.get().await.expect("the one object is handed off") }
            })
        })
    });
    group.finish();
    assert_eq!(pool.in_flight(KEY), 0);
    assert_eq!(pool.waiting(KEY), 0);
    assert_eq!(pool.workers(KEY), 1);
    pool_waits.report("handoff_8_tasks");
    deadpool_waits.report("handoff_8_tasks_deadpool");
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = uncontended, contended
}
criterion_main!(benches);
