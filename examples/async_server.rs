//! An async model server on tokio: requests lease model workers with `Pool::acquire_async`,
//! models load through an async loader (`Pool::builder_async`), and no runtime thread ever
//! blocks on the pool.
//!
//! ```text
//! cargo run --example async_server
//! ```
//!
//! Two runtime threads serve four models. A burst of 48 requests over three models arrives in
//! under 100 ms, each holding its lease across the `.await` of its inference; the models load
//! (80–300 ms) while the burst queues, first come first served, per model. Then warm traffic,
//! served at once; a request cancelled by a `tokio::time::timeout` while it waits in the queue,
//! and one that times out by the pool's own `acquire_timeout`; and a request cancelled in the
//! middle of the load it started, whose load still completes and serves the next request. A
//! heartbeat task ticks every 10 ms throughout, and its longest gap shows that the runtime never
//! stalled. A summary ends the run, and the program checks what it claims: it exits with an
//! error if any request was lost or the pool's accounting is off. It takes about 1.3 s.

use std::future::Future;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use poolwarden::{AcquireError, Lease, Pool, SpawnError, Worker};

/// A model the server knows: its key, how long it takes to load, and its footprint.
struct Spec {
    key: &'static str,
    load: Duration,
    bytes: u64,
}

const MIB: u64 = 1 << 20;

/// The models. `rerank` gets no burst: it shows a load whose request went away.
const MODELS: [Spec; 4] = [
    Spec {
        key: "embed",
        load: Duration::from_millis(80),
        bytes: 64 * MIB,
    },
    Spec {
        key: "vision",
        load: Duration::from_millis(150),
        bytes: 128 * MIB,
    },
    Spec {
        key: "chat",
        load: Duration::from_millis(300),
        bytes: 256 * MIB,
    },
    Spec {
        key: "rerank",
        load: Duration::from_millis(400),
        bytes: 96 * MIB,
    },
];

/// The models the burst goes to.
const BURST_MODELS: [&str; 3] = ["embed", "vision", "chat"];
/// Requests in the burst, per model.
const BURST_PER_MODEL: usize = 16;
/// Time between two arrivals of the burst (over all models).
const ARRIVAL_GAP: Duration = Duration::from_millis(1);
/// How long one inference takes; the lease is held across it.
const INFERENCE: Duration = Duration::from_millis(20);
/// Most workers per model.
const MAX_WORKERS: usize = 2;

/// A loaded model. The weights are not really allocated: the footprint is what the pool
/// accounts for.
struct Model {
    spec: &'static Spec,
}

impl Model {
    /// Runs one request on the model: an await point, with the lease held across it.
    async fn infer(&self, input: u64) -> u64 {
        tokio::time::sleep(INFERENCE).await;
        input.wrapping_mul(31).wrapping_add(self.spec.bytes)
    }
}

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        self.spec.bytes
    }
}

/// The async loader: reads the "weights" of `key` without blocking a runtime thread.
fn load(key: &str) -> impl Future<Output = Result<Model, SpawnError>> + Send + 'static {
    let spec = MODELS.iter().find(|spec| spec.key == key);
    async move {
        let spec = spec.ok_or("no such model")?;
        tokio::time::sleep(spec.load).await;
        Ok(Model { spec })
    }
}

/// Awaits `future` and says whether it was ready at its first poll (a request served at once)
/// or had to wait (it queued).
async fn first_poll<F: Future>(future: F) -> (F::Output, bool) {
    let mut future = pin!(future);
    let mut polls = 0u32;
    std::future::poll_fn(|cx| {
        polls += 1;
        match future.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready((output, polls == 1)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// What one served request saw.
struct Served {
    key: &'static str,
    at_once: bool,
    wait: Duration,
}

/// Every request's outcome, for the summary.
#[derive(Default)]
struct Log {
    served: Vec<Served>,
    failed: Vec<String>,
}

/// One request: lease a worker of `key`, run the inference across an await, release.
async fn request(pool: Pool<Model>, key: &'static str, input: u64, log: Arc<Mutex<Log>>) {
    let asked = Instant::now();
    let (lease, at_once) = first_poll(pool.acquire_async(key)).await;
    let wait = asked.elapsed();
    match lease {
        Ok(model) => {
            std::hint::black_box(model.infer(input).await);
            drop(model);
            lock(&log).served.push(Served { key, at_once, wait });
        }
        Err(error) => lock(&log).failed.push(format!("{key}: {error}")),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds, rounded, for the report.
fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// The `q` quantile of `waits` (nearest rank).
fn quantile(waits: &[Duration], q: f64) -> Duration {
    let mut sorted = waits.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// A task that ticks every 10 ms until `stop`, and returns the longest gap between two ticks:
/// a runtime thread blocked by a load or a lock would show here.
fn heartbeat(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, Duration)> {
    tokio::spawn(async move {
        let mut ticks = 0;
        let mut longest = Duration::ZERO;
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = Instant::now();
            longest = longest.max(now - last);
            last = now;
            ticks += 1;
        }
        (ticks, longest)
    })
}

/// Waits until `condition` holds, for at most `limit`.
async fn until(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("error: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), String> {
    let start = Instant::now();
    let detached_loads = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&detached_loads);
    let pool = Pool::builder_async("models", load)
        // Every load runs as a task of this runtime, so a load whose request went away goes on.
        .spawner(move |load| {
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(load);
        })
        .max_workers_per_model(MAX_WORKERS)
        .acquire_timeout(Duration::from_secs(5))
        .build();
    let stop = Arc::new(AtomicBool::new(false));
    let beat = heartbeat(Arc::clone(&stop));
    let log = Arc::new(Mutex::new(Log::default()));

    // 1. The burst: 48 requests, one every ARRIVAL_GAP, round robin over three cold models.
    println!(
        "burst: {} requests over {} cold models, {} ms apart; at most {} workers per model, \
         {} ms of inference",
        BURST_PER_MODEL * BURST_MODELS.len(),
        BURST_MODELS.len(),
        ARRIVAL_GAP.as_millis(),
        MAX_WORKERS,
        INFERENCE.as_millis()
    );
    let mut tasks = Vec::new();
    let arrivals = Instant::now();
    for i in 0..BURST_PER_MODEL * BURST_MODELS.len() {
        let key = BURST_MODELS[i % BURST_MODELS.len()];
        tasks.push(tokio::spawn(request(
            pool.clone(),
            key,
            i as u64,
            Arc::clone(&log),
        )));
        tokio::time::sleep(ARRIVAL_GAP).await;
    }
    let arrived = arrivals.elapsed();
    for task in tasks {
        task.await
            .map_err(|e| format!("a request task failed: {e}"))?;
    }
    let burst_done = start.elapsed();
    {
        let log = lock(&log);
        for key in BURST_MODELS {
            let spec = MODELS.iter().find(|s| s.key == key).expect("a known model");
            let waits: Vec<Duration> = log
                .served
                .iter()
                .filter(|s| s.key == key)
                .map(|s| s.wait)
                .collect();
            let queued = log
                .served
                .iter()
                .filter(|s| s.key == key && !s.at_once)
                .count();
            println!(
                "  {key:<7} load {:>6}: {} served, {queued} queued, {} loads; wait p50 {}, max {}",
                ms(spec.load),
                waits.len(),
                pool.stats().models.get(key).map_or(0, |m| m.spawns),
                ms(quantile(&waits, 0.5)),
                ms(quantile(&waits, 1.0)),
            );
        }
    }
    println!(
        "  all arrived within {}; the last request ended at {}",
        ms(arrived),
        ms(burst_done)
    );

    // 2. Warm traffic: every model has idle workers now, and nobody waits.
    let before = lock(&log).served.len();
    for round in 0..4u64 {
        for key in BURST_MODELS {
            request(pool.clone(), key, round, Arc::clone(&log)).await;
        }
    }
    let warm: Vec<bool> = lock(&log).served[before..]
        .iter()
        .map(|s| s.at_once)
        .collect();
    println!(
        "warm: {} requests, {} served at once (ready at the first poll), no load",
        warm.len(),
        warm.iter().filter(|&&at_once| at_once).count()
    );

    // 3. Cancelled while queued: both chat workers are busy, and the caller's own timeout drops
    //    the future. Its place in the queue goes with it.
    let busy: Vec<Lease<Model>> = vec![
        pool.acquire_async("chat")
            .await
            .map_err(|e| e.to_string())?,
        pool.acquire_async("chat")
            .await
            .map_err(|e| e.to_string())?,
    ];
    let cancelled =
        tokio::time::timeout(Duration::from_millis(50), pool.acquire_async("chat")).await;
    let cancelled_queued = cancelled.is_err();
    println!(
        "cancel while queued: a chat request under tokio::time::timeout(50 ms), both workers busy"
    );
    println!(
        "  {}; chat requests waiting afterwards: {}",
        if cancelled_queued {
            "cancelled"
        } else {
            "served (unexpected)"
        },
        pool.waiting("chat")
    );

    // 4. The pool's own deadline, under tokio: `acquire_timeout` (100 ms for this request).
    pool.set_acquire_timeout(Duration::from_millis(100));
    let timed_out = pool.acquire_async("chat").await;
    pool.set_acquire_timeout(Duration::from_secs(5));
    let pool_timeout = matches!(timed_out, Err(AcquireError::Timeout { .. }));
    println!("timeout: a chat request with acquire_timeout = 100 ms, both workers busy");
    println!(
        "  {}",
        match &timed_out {
            Ok(_) => "served (unexpected)".to_string(),
            Err(error) => format!("AcquireError: {error}"),
        }
    );
    drop(timed_out);
    drop(busy);

    // 5. Cancelled during its load: the first request for `rerank` starts a 400 ms load and
    //    gives up after 100 ms. The load goes on (on the spawner) and becomes an idle worker,
    //    which the next request gets at once.
    let cancelled =
        tokio::time::timeout(Duration::from_millis(100), pool.acquire_async("rerank")).await;
    let cancelled_loading = cancelled.is_err();
    let starting = pool.starting("rerank");
    let loaded = until(Duration::from_secs(5), || pool.workers("rerank") == 1).await;
    let (next, at_once) = first_poll(pool.acquire_async("rerank")).await;
    let next_ok = next.is_ok();
    drop(next);
    println!(
        "cancel during a load: the first rerank request (a 400 ms load) under a 100 ms timeout"
    );
    println!(
        "  {}; the load went on ({starting} starting), {}, and served the next request {}",
        if cancelled_loading {
            "cancelled"
        } else {
            "served (unexpected)"
        },
        if loaded {
            "completed"
        } else {
            "did not complete (unexpected)"
        },
        if next_ok && at_once {
            "at once"
        } else {
            "only after a wait (unexpected)"
        },
    );

    stop.store(true, Ordering::Relaxed);
    let (ticks, longest_gap) = beat.await.map_err(|e| e.to_string())?;

    // The summary, and the checks behind it.
    let stats = pool.stats();
    let log = std::mem::take(&mut *lock(&log));
    let waits: Vec<Duration> = log
        .served
        .iter()
        .filter(|s| !s.at_once)
        .map(|s| s.wait)
        .collect();
    let served = log.served.len() + usize::from(next_ok);
    println!();
    println!("summary");
    println!(
        "  requests:    {served} served ({} at once, {} queued), {} cancelled by the caller, \
         {} timed out, {} failed",
        served - waits.len(),
        waits.len(),
        usize::from(cancelled_queued) + usize::from(cancelled_loading),
        stats.acquire_timeouts,
        log.failed.len(),
    );
    println!(
        "  loads:       {} ({} cold starts, {} failed, {} run on the spawner)",
        stats.spawns,
        stats.cold_starts,
        stats.spawn_failures,
        detached_loads.load(Ordering::Relaxed),
    );
    println!(
        "  waits:       p50 {}, p99 {}, max {} (queued requests)",
        ms(quantile(&waits, 0.5)),
        ms(quantile(&waits, 0.99)),
        ms(quantile(&waits, 1.0)),
    );
    println!(
        "  workers:     {} ({} MiB accounted)",
        stats.total_workers(),
        pool.accounted_bytes() / MIB
    );
    println!(
        "  runtime:     {ticks} heartbeats, longest gap {} (10 ms when nothing holds it up)",
        ms(longest_gap)
    );

    // Close from a blocking thread: `close` waits for requests in flight.
    let closing = pool.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "  closed:      {} workers, {} bytes accounted, after {}",
        pool.stats().total_workers(),
        pool.accounted_bytes(),
        ms(start.elapsed())
    );

    let burst = BURST_PER_MODEL * BURST_MODELS.len();
    let mut problems = Vec::new();
    if !log.failed.is_empty() {
        problems.push(format!("requests failed: {:?}", log.failed));
    }
    if served != burst + 4 * BURST_MODELS.len() + 1 {
        problems.push(format!("{served} requests served"));
    }
    if stats.spawns != (BURST_MODELS.len() * MAX_WORKERS + 1) as u64 {
        problems.push(format!("{} loads", stats.spawns));
    }
    if !cancelled_queued || !cancelled_loading || !pool_timeout {
        problems.push("a cancellation or a timeout did not happen".into());
    }
    if starting != 1 || !loaded || !next_ok || !at_once {
        problems.push("the cancelled load did not serve the next request".into());
    }
    if warm.iter().any(|&at_once| !at_once) {
        problems.push("a warm request waited".into());
    }
    if stats
        .models
        .values()
        .any(|m| m.waiting != 0 || m.in_flight != 0)
    {
        problems.push(format!("requests left behind: {:?}", stats.models));
    }
    let expected_bytes: u64 = MODELS
        .iter()
        .map(|s| {
            let workers = if BURST_MODELS.contains(&s.key) {
                MAX_WORKERS
            } else {
                1
            };
            s.bytes * workers as u64
        })
        .sum();
    if stats.accounted_bytes != expected_bytes {
        problems.push(format!("{} bytes accounted", stats.accounted_bytes));
    }
    if pool.accounted_bytes() != 0 {
        problems.push("bytes still accounted after close".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
