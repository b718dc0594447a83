//! A million keys used once: the pool forgets a key once it has nothing left (no worker, no
//! spawn, no waiter), so memory and the tick's cost stay flat however many distinct keys
//! clients send (model names are client input).
//!
//! ```text
//! cargo run --release --example many_keys -- [KEYS]
//! ```
//!
//! For each of `KEYS` keys (default 1,000,000), one worker is loaded (through a reservation, as
//! the simulator does: no load thread per key) and its request ends; every 10,000 keys a tick
//! under `keep-alive` with a zero ttl evicts the idle workers, and the next tick forgets the
//! keys. It prints the process's RSS and the time of a tick with no workers before and after,
//! and the keys the pool still knows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poolwarden::policies::{KeepAlive, KeepAliveConfig};
use poolwarden::{ManualClock, Pool, Scheduler, SpawnError, Worker};

struct Model;

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        1
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The median time of `n` ticks.
fn tick_time(scheduler: &Scheduler, clock: &ManualClock, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            clock.advance(Duration::from_secs(1));
            let start = Instant::now();
            scheduler.tick_once();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

fn main() {
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let clock = Arc::new(ManualClock::new());
    let pool = Pool::builder("many", |_key: &str| Ok::<_, SpawnError>(Model))
        .clock(clock.clone())
        .inline_shutdown()
        .build();
    let scheduler = Scheduler::builder()
        .clock(clock.clone())
        .policy(Box::new(
            KeepAlive::new(KeepAliveConfig {
                ttl: Duration::ZERO,
                min_workers: 0,
            })
            .unwrap(),
        ))
        .build();
    scheduler.register(&pool);
    let rss_before = rss_kib();
    let tick_before = tick_time(&scheduler, &clock, 101);
    let start = Instant::now();
    let mut most_keys = 0;
    for i in 0..keys {
        let key = format!("model-{i:07}");
        let lease = pool.reserve(&key).expect("a slot").complete(Model);
        drop(lease);
        if (i + 1) % 10_000 == 0 {
            most_keys = most_keys.max(pool.keys());
            clock.advance(Duration::from_secs(1));
            scheduler.tick_once(); // evicts the idle workers
            clock.advance(Duration::from_secs(1));
            scheduler.tick_once(); // forgets the keys seen empty
        }
    }
    clock.advance(Duration::from_secs(1));
    scheduler.tick_once();
    clock.advance(Duration::from_secs(1));
    scheduler.tick_once();
    let took = start.elapsed();
    let tick_after = tick_time(&scheduler, &clock, 101);
    let rss_after = rss_kib();
    println!("keys used once:        {keys}");
    println!("keys known at most:    {most_keys}");
    println!("keys known at the end: {}", pool.keys());
    println!("workers at the end:    {}", pool.stats().total_workers());
    println!(
        "RSS:                   {:.1} MiB before, {:.1} MiB after",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "tick with no workers:  {:.1} µs before, {:.1} µs after (median of 101)",
        tick_before.as_secs_f64() * 1e6,
        tick_after.as_secs_f64() * 1e6
    );
    println!("run:                   {:.1} s", took.as_secs_f64());
    assert_eq!(pool.keys(), 0, "every key was forgotten");
}
