//! What admission adds to a spawn that has to make room: side by side in one group,
//!
//! * `load_and_evict`: no budget; each iteration loads a worker for a new key (the sync factory
//!   runs on a thread of its own, as every load does) and then evicts the previous key's idle
//!   worker by hand: one load plus one eviction;
//! * `admission_makes_room`: a budget with room for one worker; each iteration asks for a new
//!   key, and admission evicts the previous key's idle worker to make room before the load:
//!   the same load and eviction, plus admission's fit check, candidate scan and victim choice;
//! * `admission_fits`: a budget with room to spare; the load only (the previous worker is
//!   evicted by hand, outside the measured time).
//!
//! `cargo bench --bench admission`; BENCHMARKS.md holds the figures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use poolwarden::{Budget, EvictionReason, Pool, SpawnError, Worker};

struct Model;

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        1 << 30
    }
}

fn pool(budget: Option<&Budget>) -> Pool<Model> {
    let mut builder = Pool::builder("bench", |_key: &str| Ok::<_, SpawnError>(Model))
        .memory(1 << 30)
        .max_workers_per_model(1);
    if let Some(budget) = budget {
        builder = builder.budget(budget);
    }
    builder.build()
}

/// Loads a worker for key `i` (alternating keys), returning it idle.
fn load(pool: &Pool<Model>, i: u64) -> poolwarden::WorkerId {
    let key = if i.is_multiple_of(2) { "even" } else { "odd" };
    let lease = pool.acquire(key).expect("a worker");
    let id = lease.worker_id();
    drop(lease);
    id
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("load_and_evict", |b| {
        let pool = pool(None);
        let mut previous = (1u64, load(&pool, 1));
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let n = previous.0 + 1 + i;
                let id = load(&pool, n);
                let old_key = if (n - 1).is_multiple_of(2) {
                    "even"
                } else {
                    "odd"
                };
                black_box(pool.evict(old_key, previous.1, EvictionReason::Manual));
                previous.1 = id;
            }
            previous.0 += iters;
            start.elapsed()
        });
    });

    group.bench_function("admission_makes_room", |b| {
        let budget = Budget::builder("gpu0", 1 << 30).build();
        let pool = pool(Some(&budget));
        let mut next = 1u64;
        load(&pool, next);
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                next += 1;
                black_box(load(&pool, next)); // evicts the other key's idle worker first
            }
            start.elapsed()
        });
        assert!(budget.stats().admission_evictions > 0);
        assert_eq!(budget.used(), 1 << 30);
    });

    group.bench_function("admission_fits", |b| {
        let budget = Budget::builder("gpu0", 4 << 30).build();
        let pool = pool(Some(&budget));
        let mut previous = (1u64, load(&pool, 1));
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let n = previous.0 + 1;
                let start = Instant::now();
                let id = load(&pool, n);
                total += start.elapsed();
                let old_key = if previous.0.is_multiple_of(2) {
                    "even"
                } else {
                    "odd"
                };
                pool.evict(old_key, previous.1, EvictionReason::Manual);
                previous = (n, id);
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, admission);
criterion_main!(benches);
