//! How long `Scheduler::stop` takes while the maintenance thread waits on a 60 s tick.
//!
//! Starts a scheduler with a 60 s tick over three pools (each with a warm worker), lets the
//! maintenance thread settle into its wait, stops it, and prints `stop_ms=<milliseconds>` as
//! the last line. `stop` must not wait for the next tick: the thread waits on its ticker and a
//! shutdown channel together.
//!
//! ```text
//! cargo run --release --example stop_latency
//! ```

use std::time::{Duration, Instant};

use poolwarden::policies::{GradualLru, GradualLruConfig};
use poolwarden::{Pool, Scheduler, SpawnError, Worker};

/// A worker that is nothing but a footprint.
struct Model;

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        1 << 20
    }
}

fn main() {
    let scheduler = Scheduler::builder()
        .tick(Duration::from_secs(60))
        .policy(Box::new(
            GradualLru::new(GradualLruConfig::default()).expect("the default config is valid"),
        ))
        .build();
    let pools: Vec<Pool<Model>> = ["text", "vision", "audio"]
        .into_iter()
        .map(|name| Pool::builder(name, |_key: &str| Ok::<_, SpawnError>(Model)).build())
        .collect();
    for pool in &pools {
        drop(pool.acquire("model").expect("the factory never fails"));
        scheduler.register(pool);
    }
    scheduler
        .start()
        .expect("the maintenance thread should start");
    // Long enough for the thread to be parked in its wait; the first tick is 60 s away.
    std::thread::sleep(Duration::from_millis(200));
    assert!(scheduler.is_running());

    let started = Instant::now();
    scheduler.stop();
    let took = started.elapsed();
    assert!(!scheduler.is_running());

    println!("pools={} tick={:?}", pools.len(), scheduler.tick_interval());
    println!("stop_ms={:.3}", took.as_secs_f64() * 1e3);
}
