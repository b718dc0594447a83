//! Model checks of the request-path protocol with loom, on the real code: the pool's atomics,
//! locks and parking come from `loom` when built with `--cfg loom`.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p poolwarden-loom --release
//! # and the check that a weakened ordering is caught: with the release's `fetch_add` weakened to
//! # `Relaxed`, the shutdown test must fail (it is marked `should_panic` under that cfg):
//! RUSTFLAGS="--cfg loom --cfg poolwarden_weaken_release" CARGO_TARGET_DIR=target/loom-mutant \
//!     cargo test -p poolwarden-loom --release
//! ```
//!
//! What is checked, over every interleaving loom explores:
//! - the waiting-room hand-off: a request that queues while the only worker is being released is
//!   always served (no lost wake-up: the release and the waiter meet in the worker's state word);
//! - eviction from the release count a policy saw: a worker that served a request after that
//!   look is never evicted, and a lease never reaches a draining worker;
//! - a worker's shutdown sees everything its last request did: the release publishes it to the
//!   eviction that drains the worker (the ordering `--cfg poolwarden_weaken_release` weakens);
//! - tick stamping: a tick that sees another tick's stamp also sees the `last_used` it covers.
#![cfg(loom)]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use loom::thread;
use poolwarden::{
    Clock, EvictionReason, ManagedPool, ManualClock, Pool, SnapshotBuffer, SpawnError, Worker,
};

struct Unit;

impl Worker for Unit {
    fn memory_bytes(&self) -> u64 {
        1
    }
}

/// A manual clock the request path does not read (like the real clocks): the tick stamps.
struct TickStamped(ManualClock);

impl Clock for TickStamped {
    fn now(&self) -> Duration {
        self.0.now()
    }

    fn stamps_every_release(&self) -> bool {
        false
    }
}

/// Runs `body` under loom with at most `preemptions` preemptions per execution (the bound keeps
/// the larger models to seconds; the protocol's races need one or two).
fn model(preemptions: usize, body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(body);
}

fn pool(clock: Arc<dyn Clock>) -> Pool<Unit> {
    Pool::builder("loom", |_key: &str| Ok::<_, SpawnError>(Unit))
        .clock(clock)
        .max_workers_per_model(1)
        .inline_shutdown()
        .acquire_timeout(Duration::from_secs(3600))
        .build()
}

#[test]
fn a_request_that_queues_while_the_worker_is_released_is_always_served() {
    model(3, || {
        let pool = pool(Arc::new(ManualClock::new()));
        // The key's only worker, leased by the main thread.
        let lease = pool.reserve("m").expect("a slot").complete(Unit);
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || {
                let lease = pool.acquire("m").expect("served");
                drop(lease);
            })
        };
        drop(lease);
        waiter.join().unwrap();
        assert_eq!(pool.in_flight("m"), 0);
        assert_eq!(pool.waiting("m"), 0);
    });
}

#[test]
fn two_waiters_and_two_releases_are_all_served() {
    model(2, || {
        let pool = Pool::builder("loom", |_key: &str| Ok::<_, SpawnError>(Unit))
            .clock(Arc::new(ManualClock::new()))
            .max_workers_per_model(1)
            .max_in_flight_per_worker(2)
            .inline_shutdown()
            .acquire_timeout(Duration::from_secs(3600))
            .build();
        let first = pool.reserve("m").expect("a slot").complete(Unit);
        let second = pool.try_acquire("m").expect("room for two");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || drop(pool.acquire("m").expect("served")))
            })
            .collect();
        let releaser = thread::spawn(move || drop(first));
        drop(second);
        releaser.join().unwrap();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(pool.in_flight("m"), 0);
    });
}

#[test]
fn an_eviction_decided_before_a_request_never_takes_the_worker_after_it() {
    model(3, || {
        let pool = pool(Arc::new(ManualClock::new()));
        let lease = pool.reserve("m").expect("a slot").complete(Unit);
        let id = lease.worker_id();
        drop(lease); // idle, one request finished: the policy saw release count 1
        let request = {
            let pool = pool.clone();
            thread::spawn(move || match pool.try_acquire("m") {
                Some(lease) => {
                    drop(lease);
                    true
                }
                None => false,
            })
        };
        let evicted = pool
            .evict_unused_since("m", id, 1, EvictionReason::Idle)
            .is_some();
        let served = request.join().unwrap();
        assert!(
            !(evicted && served),
            "a worker used after the policy's look was evicted"
        );
        assert_eq!(pool.accounted_bytes(), if evicted { 0 } else { 1 });
    });
}

/// A worker whose requests write to it, and whose shutdown records what it saw.
struct Witness {
    written: loom::sync::atomic::AtomicUsize,
    seen_at_shutdown: Arc<loom::sync::atomic::AtomicUsize>,
}

impl Worker for Witness {
    fn memory_bytes(&self) -> u64 {
        1
    }

    fn shutdown(&self) {
        let written = self.written.load(Relaxed);
        self.seen_at_shutdown.store(written + 1, Relaxed);
    }
}

#[test]
#[cfg_attr(poolwarden_weaken_release, should_panic)]
fn a_shutdown_sees_what_the_last_request_did() {
    model(3, || {
        let seen = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let pool = Pool::builder("loom", |_key: &str| -> Result<Witness, SpawnError> {
            Err("loads are not used here".into())
        })
        .clock(Arc::new(ManualClock::new()))
        .inline_shutdown()
        .build();
        let lease = pool.reserve("m").expect("a slot").complete(Witness {
            written: loom::sync::atomic::AtomicUsize::new(0),
            seen_at_shutdown: seen.clone(),
        });
        let id = lease.worker_id();
        drop(lease);
        let request = {
            let pool = pool.clone();
            thread::spawn(move || match pool.try_acquire("m") {
                Some(lease) => {
                    lease.written.store(1, Relaxed); // the request's effect on the worker
                    drop(lease);
                    true
                }
                None => false,
            })
        };
        let evicted = pool.evict("m", id, EvictionReason::Manual).is_some();
        let served = request.join().unwrap();
        if evicted && served {
            // It was drained after the request's release, and shut down here, inline.
            assert_eq!(
                seen.load(Relaxed),
                2,
                "the shutdown missed the request's write"
            );
        }
    });
}

#[test]
fn a_tick_that_sees_a_stamp_sees_the_time_it_covers() {
    model(3, || {
        let clock = Arc::new(TickStamped(ManualClock::new()));
        let pool = pool(clock.clone());
        drop(pool.reserve("m").expect("a slot").complete(Unit)); // released at 0, unstamped
        clock.0.set(Duration::from_secs(5));
        let other_tick = {
            let pool = pool.clone();
            thread::spawn(move || {
                let mut buffer = SnapshotBuffer::default();
                buffer.clear();
                pool.snapshot_into(&mut buffer, 0);
                buffer.workers[0].last_used
            })
        };
        let mut buffer = SnapshotBuffer::default();
        buffer.clear();
        pool.snapshot_into(&mut buffer, 0);
        assert_eq!(buffer.workers[0].last_used, Duration::from_secs(5));
        assert_eq!(
            other_tick.join().unwrap(),
            Duration::from_secs(5),
            "saw the stamp's count without the time it covers"
        );
    });
}
