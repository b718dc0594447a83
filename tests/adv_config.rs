//! Adversarial tests of the config, the config-driven builders and the operator CLI, written
//! from the promises of the README, not from the implementation.

#[path = "common/bin.rs"]
mod bin;
mod common;

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bin::run_in_process;
use common::{keep_alive, secs, Model};
use poolwarden::cli::Exit;
use poolwarden::config::{Config, ConfigError, PerModel, PolicyRegistry, PolicyScope, PolicySpec};
use poolwarden::policies::{ByteSize, EvictionPolicy, EvictionReason, Proposal, Snapshot};
use poolwarden::{AcquireError, ManualClock, Pool, SpawnError};

// ---- Helpers ----

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "adv.toml", &PolicyRegistry::new())
}

/// The located error of a config that must not load: (line, column, key, whole message).
fn located(text: &str, registry: &PolicyRegistry) -> (usize, usize, String, String) {
    match Config::from_toml(text, "adv.toml", registry) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => {
            let (line, column) = e.position().unwrap_or_else(|| panic!("not located: {e}"));
            (
                line,
                column,
                e.key().unwrap_or("").to_string(),
                e.to_string(),
            )
        }
    }
}

/// A pool of `Model`s whose footprint is `bytes_of(key)`.
fn pool_of(
    config: &Config,
    name: &str,
    clock: &Arc<ManualClock>,
    bytes_of: fn(&str) -> u64,
) -> Pool<Model> {
    config
        .pool_builder(name, move |key: &str| {
            Ok::<_, SpawnError>(Model {
                bytes: bytes_of(key),
            })
        })
        .unwrap()
        .clock(clock.clone())
        .build()
}

/// Ticks once a second from `from` to `to` inclusive: (second, pool, key) of each eviction.
fn tick_through(
    clock: &ManualClock,
    scheduler: &poolwarden::Scheduler,
    from: u64,
    to: u64,
) -> Vec<(u64, String, String)> {
    let mut seen = Vec::new();
    for second in from..=to {
        clock.set(secs(second));
        for event in scheduler.tick_once().evictions {
            seen.push((second, event.pool.to_string(), event.key.to_string()));
        }
    }
    seen
}

fn cli(args: &[&str], input: &[u8]) -> (Exit, String, String) {
    run_in_process(args, &PolicyRegistry::new(), input)
}

fn binary(args: &[&str], stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run poolwarden")
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolwarden-adv-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = temp_dir().join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(contents).unwrap();
    path
}

fn chain_of(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `error`'s own message must not repeat what its sources say.
fn assert_source_not_repeated(error: &dyn Error) {
    let own = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        assert!(
            text.is_empty() || !own.contains(&text),
            "`{own}` repeats its source `{text}`"
        );
        source = cause.source();
    }
}

// ---- Every key of a pool section takes effect at run time ----

#[test]
fn per_model_idle_step_and_min_workers_drive_gradual_lru_evictions() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        r#"
[policy]
kind = "gradual-lru"
idle = "1m"
step = "1m"

[pools.text]
max_workers_per_model = 3

[pools.text.models.slow]
idle = "2m"
step = "30s"

[pools.text.models.pinned]
min_workers = 2
"#,
        "adv.toml",
        &registry,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "text", &clock, |_| 1);
    let scheduler = config
        .scheduler_builder(&registry)
        .unwrap()
        .clock(clock.clone())
        .build();
    scheduler.register(&pool).unwrap();
    // Three workers of each key, all released at 10 s.
    clock.set(secs(0));
    let leases: Vec<_> = ["plain", "slow", "pinned"]
        .iter()
        .flat_map(|key| {
            (0..3)
                .map(|_| pool.acquire(key).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(pool.workers("slow"), 3);
    clock.set(secs(10));
    drop(leases);
    let evictions = tick_through(&clock, &scheduler, 10, 400);
    let at = |key: &str| -> Vec<u64> {
        evictions
            .iter()
            .filter(|e| e.2 == key)
            .map(|e| e.0)
            .collect()
    };
    // plain: idle 1m from 10 s, then one a minute.
    assert_eq!(at("plain"), vec![70, 130, 190]);
    // slow: idle 2m, step 30 s.
    assert_eq!(at("slow"), vec![130, 160, 190]);
    // pinned: the default timing, down to its floor of 2.
    assert_eq!(at("pinned"), vec![70]);
    assert_eq!(pool.workers("pinned"), 2);
}

#[test]
fn per_model_ttl_of_a_pools_own_keep_alive_and_of_a_chain() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        r#"
[policy]
kind = "chain"
[[policy.policies]]
kind = "keep-alive"
ttl = "5m"
[[policy.policies]]
kind = "gradual-lru"
idle = "10m"

[pools.chained.models.short]
ttl = "20s"
[pools.chained.models.long]
idle = "30s"

[pools.own.policy]
kind = "keep-alive"
ttl = "1m"
[pools.own.models.quick]
ttl = "5s"
"#,
        "adv.toml",
        &registry,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let chained = pool_of(&config, "chained", &clock, |_| 1);
    let own = pool_of(&config, "own", &clock, |_| 1);
    let scheduler = config
        .scheduler_builder(&registry)
        .unwrap()
        .clock(clock.clone())
        .build();
    scheduler.register(&chained).unwrap();
    scheduler.register(&own).unwrap();
    for (pool, key) in [
        (&chained, "short"),
        (&chained, "long"),
        (&chained, "plain"),
        (&own, "quick"),
        (&own, "plain"),
    ] {
        drop(pool.acquire(key).unwrap());
    }
    let evictions = tick_through(&clock, &scheduler, 0, 400);
    let expected: Vec<(u64, String, String)> = [
        (5, "own", "quick"),
        (20, "chained", "short"),
        (30, "chained", "long"),
        (60, "own", "plain"),
        (300, "chained", "plain"),
    ]
    .iter()
    .map(|(t, p, k)| (*t, p.to_string(), k.to_string()))
    .collect();
    assert_eq!(evictions, expected);
}

#[test]
fn hybrid_histogram_reads_ttl_and_min_workers_per_model_but_not_idle() {
    let registry = PolicyRegistry::new();
    let ok = "[policy]\nkind = \"hybrid-histogram\"\n[pools.p.models.m]\nttl = \"1m\"\nmin_workers = 1\n";
    let config = Config::from_toml(ok, "adv.toml", &registry).unwrap();
    let overrides = config.pools["p"].models["m"].overrides;
    assert_eq!(overrides.ttl, Some(secs(60)));
    assert_eq!(overrides.min_workers, Some(1));
    let (line, column, key, shown) = located(
        "[policy]\nkind = \"hybrid-histogram\"\n[pools.p.models.m]\nidle = \"1m\"\n",
        &registry,
    );
    assert_eq!((line, column), (4, 1), "{shown}");
    assert_eq!(key, "pools.p.models.m.idle");
    assert!(shown.contains("reads `ttl` and `min_workers`"), "{shown}");
}

#[test]
fn max_workers_in_flight_and_acquire_timeout_from_the_config() {
    let config = load(
        r#"
[pools.p]
max_workers_per_model = 2
max_in_flight_per_worker = 2
acquire_timeout = "100ms"
"#,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "p", &clock, |_| 1);
    let leases: Vec<_> = (0..4).map(|_| pool.acquire("k").unwrap()).collect();
    assert_eq!(pool.workers("k"), 2);
    assert_eq!(pool.in_flight("k"), 4);
    match pool.acquire("k") {
        Err(AcquireError::Timeout { waited, .. }) => {
            assert!(waited >= Duration::from_millis(100), "{waited:?}");
            assert!(waited < Duration::from_secs(25), "{waited:?}");
        }
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    drop(leases);
}

#[test]
fn spawn_timeout_from_the_config_fails_a_slow_load() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        "[pools.p]\nspawn_timeout = \"5s\"\nacquire_timeout = \"1h\"\n",
        "adv.toml",
        &registry,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let pool = config
        .pool_builder("p", move |_key: &str| {
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(30));
            Ok::<_, SpawnError>(Model { bytes: 1 })
        })
        .unwrap()
        .clock(clock.clone())
        .build();
    let scheduler = config
        .scheduler_builder(&registry)
        .unwrap()
        .clock(clock.clone())
        .build();
    scheduler.register(&pool).unwrap();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("slow").map(|_| ()))
    };
    assert!(common::eventually(Duration::from_secs(10), || pool
        .starting("slow")
        == 1));
    clock.set(secs(4));
    scheduler.tick_once();
    assert_eq!(
        pool.starting("slow"),
        1,
        "4 s is within the 5 s spawn_timeout"
    );
    clock.set(secs(6));
    scheduler.tick_once();
    let result = waiter.join().unwrap();
    match result {
        Err(AcquireError::SpawnTimeout { after, .. }) => assert_eq!(after, secs(5)),
        other => panic!("expected SpawnTimeout, got {other:?}"),
    }
    drop(release);
}

// ---- Budgets from the config ----

fn gib(n: u64) -> u64 {
    n << 30
}

#[test]
fn budget_limit_order_and_memory_from_the_config() {
    for (order, victim) in [("lru", "small"), ("largest", "big")] {
        let config = load(&format!(
            r#"
[budgets.gpu]
limit = "8GiB"
order = "{order}"

[pools.p]
budget = "gpu"
memory = "2Gi"
acquire_timeout = "200ms"

[pools.p.models.big]
memory = "4GiB"
"#
        ))
        .unwrap();
        let clock = Arc::new(ManualClock::new());
        let pool = pool_of(&config, "p", &clock, |key| match key {
            "big" => gib(4),
            _ => gib(2),
        });
        let budget = pool.budget().expect("the pool is on the budget").clone();
        assert_eq!(budget.stats().limit_bytes, gib(8));
        // small is used first (least recently used), then big.
        clock.set(secs(1));
        drop(pool.acquire("small").unwrap());
        clock.set(secs(2));
        drop(pool.acquire("big").unwrap());
        assert_eq!(budget.free(), gib(2));
        // another (the pool's 2 GiB) fits at once; then a third 2 GiB key needs room.
        clock.set(secs(3));
        drop(pool.acquire("other").unwrap());
        assert_eq!(budget.free(), 0);
        clock.set(secs(4));
        drop(pool.acquire("fourth").unwrap());
        assert_eq!(
            pool.workers(victim),
            0,
            "order {order}: {victim} goes first"
        );
    }
}

#[test]
fn a_model_bigger_than_its_budget_fails_at_once_and_check_warns() {
    let text = r#"
[budgets.gpu]
limit = "10GB"

[pools.p]
budget = "gpu"
acquire_timeout = "1h"

[pools.p.models.huge]
memory = "10.5GB"
"#;
    let config = load(text).unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "p", &clock, |_| 1);
    let started = std::time::Instant::now();
    match pool.acquire("huge") {
        Err(AcquireError::NoMemory { needed, .. }) => assert_eq!(needed, 10_500_000_000),
        other => panic!("expected NoMemory, got {:?}", other.map(|_| ())),
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "failed at once"
    );
    let (exit, out, err) = cli(&["check", "-"], text.as_bytes());
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(
        out.contains("huge needs 10500MB, more than budget `gpu` holds (10GB)"),
        "{out}"
    );
}

#[test]
fn the_policys_min_workers_pins_workers_against_admission() {
    let config = load(
        r#"
[policy]
kind = "gradual-lru"
min_workers = 1

[budgets.gpu]
limit = "4GiB"

[pools.p]
budget = "gpu"
memory = "4GiB"
acquire_timeout = "100ms"
"#,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "p", &clock, |_| gib(4));
    drop(pool.acquire("a").unwrap());
    match pool.acquire("b") {
        Err(AcquireError::NoMemory { .. }) => {}
        other => panic!("a is pinned at min_workers 1, got {:?}", other.map(|_| ())),
    }
    assert_eq!(pool.workers("a"), 1);
}

#[test]
fn per_model_min_workers_pins_against_admission_too() {
    let config = load(
        r#"
[budgets.gpu]
limit = "4GiB"

[pools.p]
budget = "gpu"
memory = "4GiB"
acquire_timeout = "100ms"

[pools.p.models.a]
min_workers = 1
"#,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "p", &clock, |_| gib(4));
    drop(pool.acquire("a").unwrap());
    assert!(matches!(
        pool.acquire("b"),
        Err(AcquireError::NoMemory { .. })
    ));
    // a's own floor of 1 pins its only worker: nothing was evicted for b.
    assert_eq!(pool.workers("a"), 1);
}

#[test]
fn two_pools_naming_one_budget_share_it() {
    let config = load(
        r#"
[budgets.gpu]
limit = "6GiB"
[pools.a]
budget = "gpu"
memory = "4GiB"
acquire_timeout = "100ms"
[pools.b]
budget = "gpu"
memory = "4GiB"
acquire_timeout = "100ms"
"#,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let a = pool_of(&config, "a", &clock, |_| gib(4));
    let b = pool_of(&config, "b", &clock, |_| gib(4));
    let held = a.acquire("x").unwrap();
    assert!(matches!(b.acquire("y"), Err(AcquireError::NoMemory { .. })));
    drop(held);
    // Now x is idle: admission evicts it for y, across pools.
    drop(b.acquire("y").unwrap());
    assert_eq!(a.workers("x"), 0);
    assert_eq!(b.workers("y"), 1);
}

// ---- Every key applies or is rejected, with its location ----

#[test]
fn unknown_keys_anywhere_are_located_with_their_path() {
    let registry = PolicyRegistry::new();
    let cases: &[(&str, (usize, usize), &str)] = &[
        ("bogus = 1\n", (1, 1), "bogus"),
        ("[scheduler]\ntick = \"1s\"\ntik = \"2s\"\n", (3, 1), "scheduler.tik"),
        (
            "[pools.text]\nmax_workers = 2\n",
            (2, 1),
            "pools.text.max_workers",
        ),
        (
            "[budgets.gpu]\nlimit = \"1GiB\"\nordr = \"lru\"\n",
            (3, 1),
            "budgets.gpu.ordr",
        ),
        (
            "[policy]\nkind = \"gradual-lru\"\nidel = \"1m\"\n",
            (3, 1),
            "policy.idel",
        ),
        (
            "[policy]\nkind = \"chain\"\n[[policy.policies]]\nkind = \"noop\"\n[[policy.policies]]\nkind = \"keep-alive\"\nttll = \"1m\"\n",
            (7, 1),
            "policy.policies[1].ttll",
        ),
        (
            "[pools.text.policy]\nkind = \"keep-alive\"\nttl = \"1m\"\nextra = true\n",
            (4, 1),
            "pools.text.policy.extra",
        ),
        (
            "[pools.text.models.llama]\nidle = \"1m\"\nwhat = 1\n",
            (3, 1),
            "pools.text.models.llama.what",
        ),
        // Inline tables and dotted keys locate the key too.
        (
            "pools = { text = { max_workers_per_model = 1, bogus = 2 } }\n",
            (1, 47),
            "pools.text.bogus",
        ),
        (
            "pools.text.models.llama.wat = 1\n",
            (1, 25),
            "pools.text.models.llama.wat",
        ),
        (
            "[pools.text]\nmodels.llama.idel = \"1m\"\n",
            (2, 14),
            "pools.text.models.llama.idel",
        ),
    ];
    for (text, position, key) in cases {
        let (line, column, got_key, shown) = located(text, &registry);
        assert_eq!(&got_key, key, "{text}\n{shown}");
        assert_eq!((line, column), *position, "{text}\n{shown}");
        assert!(
            shown.starts_with(&format!("adv.toml:{line}:{column}: `{key}`: ")),
            "{shown}"
        );
    }
}

#[test]
fn keys_the_pools_policy_does_not_read_name_what_it_reads() {
    let registry = PolicyRegistry::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[pools.text.policy]\nkind = \"keep-alive\"\n[pools.text.models.llama]\nidle = \"1m\"\n",
            "pools.text.models.llama.idle",
            "pool `text` uses keep-alive, which reads `ttl` and `min_workers`",
        ),
        (
            "[policy]\nkind = \"keep-alive\"\n[pools.text.models.llama]\nstep = \"1m\"\n",
            "pools.text.models.llama.step",
            "pool `text` uses keep-alive (the default policy), which reads `ttl` and `min_workers`",
        ),
        (
            "[pools.text.models.llama]\nttl = \"1m\"\n",
            "pools.text.models.llama.ttl",
            "which reads `idle`, `step` and `min_workers`",
        ),
        (
            "[policy]\nkind = \"noop\"\n[pools.text.models.llama]\nmin_workers = 1\n",
            "pools.text.models.llama.min_workers",
            "which reads no per-model key",
        ),
        (
            "[policy]\nkind = \"chain\"\n[[policy.policies]]\nkind = \"memory-pressure\"\nlimit = \"1GiB\"\n[[policy.policies]]\nkind = \"max-lifetime\"\n[pools.text.models.llama]\nttl = \"1m\"\n",
            "pools.text.models.llama.ttl",
            "which reads no per-model key",
        ),
    ];
    for (text, key, message) in cases {
        let (_, _, got_key, shown) = located(text, &registry);
        assert_eq!(&got_key, key, "{shown}");
        assert!(shown.contains(message), "{shown}");
    }
}

#[test]
fn memory_pressure_in_a_pool_is_rejected_even_inside_nested_chains() {
    let registry = PolicyRegistry::new();
    let text = r#"
[pools.vision.policy]
kind = "chain"
[[pools.vision.policy.policies]]
kind = "keep-alive"
[[pools.vision.policy.policies]]
kind = "chain"
[[pools.vision.policy.policies.policies]]
kind = "memory-pressure"
limit = "1GiB"
"#;
    let (line, _, key, shown) = located(text, &registry);
    assert_eq!(line, 9, "{shown}");
    assert_eq!(key, "pools.vision.policy.policies[1].policies[0].kind");
    assert!(shown.contains("`[policy]`"), "{shown}");
}

#[test]
fn bad_per_model_values_are_located_at_the_value() {
    let registry = PolicyRegistry::new();
    let cases: &[(&str, (usize, &str))] = &[
        (
            "[pools.p.models.m]\nmin_workers = -1\n",
            (2, "pools.p.models.m.min_workers"),
        ),
        (
            "[pools.p.models.m]\nmin_workers = 1.5\n",
            (2, "pools.p.models.m.min_workers"),
        ),
        (
            "[pools.p.models.m]\nidle = 60\n",
            (2, "pools.p.models.m.idle"),
        ),
        (
            "[pools.p.models.m]\nidle = \"soon\"\n",
            (2, "pools.p.models.m.idle"),
        ),
        (
            "[pools.p]\nmax_workers_per_model = 2\n[pools.p.models.m]\nmin_workers = 3\n",
            (4, "pools.p.models.m.min_workers"),
        ),
        (
            "[pools.p.models.m]\nmemory = \"-1Gi\"\n",
            (2, "pools.p.models.m.memory"),
        ),
        (
            "[pools.p.models.m]\ncold_start = \"-1s\"\n",
            (2, "pools.p.models.m.cold_start"),
        ),
        ("[pools.p.models]\nm = 5\n", (2, "pools.p.models.m")),
        ("[pools.p]\nmodels = 5\n", (2, "pools.p.models")),
        ("[pools]\np = 5\n", (2, "pools.p")),
        ("[pools.p]\npolicy = \"noop\"\n", (2, "pools.p.policy")),
        (
            "[pools.p]\nmax_in_flight_per_worker = 4294967296\n",
            (2, "pools.p.max_in_flight_per_worker"),
        ),
        (
            "[pools.p]\nmax_workers_per_model = -3\n",
            (2, "pools.p.max_workers_per_model"),
        ),
        ("[budgets.g]\nlimit = \"0GiB\"\n", (2, "budgets.g.limit")),
        ("[budgets.g]\n", (1, "budgets.g")),
        (
            "[budgets.g]\nlimit = \"1GiB\"\nprobe = \"nvml:-1\"\n",
            (3, "budgets.g.probe"),
        ),
        (
            "[budgets.g]\nlimit = \"1GiB\"\norder = \"random\"\n",
            (3, "budgets.g.order"),
        ),
        ("[pools.p]\nbudget = \"nope\"\n", (2, "pools.p.budget")),
    ];
    for (text, (line, key)) in cases {
        let (got_line, _, got_key, shown) = located(text, &registry);
        assert_eq!(
            (got_line, got_key.as_str()),
            (*line, *key),
            "{text}\n{shown}"
        );
    }
}

// ---- Sizes and durations ----

#[test]
fn sizes_parse_as_kubernetes_and_show_back_as_written() {
    let cases: &[(&str, u64, &str)] = &[
        ("0", 0, "0B"),
        ("0B", 0, "0B"),
        ("4gb", 4_000_000_000, "4GB"),
        ("4G", 4_000_000_000, "4GB"),
        ("4g", 4_000_000_000, "4GB"),
        ("4Gi", 4 << 30, "4GiB"),
        ("4gib", 4 << 30, "4GiB"),
        ("4GIB", 4 << 30, "4GiB"),
        ("1.5Gi", 3 << 29, "1536MiB"),
        ("1.5GB", 1_500_000_000, "1500MB"),
        ("1Ti", 1 << 40, "1TiB"),
        ("1tb", 1_000_000_000_000, "1TB"),
        ("512Ki", 512 << 10, "512KiB"),
        ("2k", 2000, "2KB"),
        ("2KB", 2000, "2KB"),
        ("1000Mi", 1000 << 20, "1000MiB"),
        ("0.5B", 1, "1B"),
        ("1.0000000001Ki", 1025, "1025B"),
        ("16777215Ti", 16_777_215 << 40, "16777215TiB"),
    ];
    for (text, bytes, shown) in cases {
        let config = load(&format!("[pools.p]\nmemory = \"{text}\"\n"))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        let memory = config.pools["p"].memory;
        assert_eq!(memory.bytes(), *bytes, "{text}");
        assert_eq!(memory.to_string(), *shown, "{text}");
        assert_eq!(
            shown.parse::<ByteSize>().unwrap().bytes(),
            *bytes,
            "{shown} reads back"
        );
        let (exit, out, err) = cli(
            &["check", "-"],
            format!("[pools.p]\nmemory = \"{text}\"\n").as_bytes(),
        );
        assert_eq!(exit, Exit::Success, "{err}");
        assert!(out.contains(&format!("memory={shown} ")), "{text}: {out}");
    }
    // A plain TOML integer is bytes.
    assert_eq!(
        load("[pools.p]\nmemory = 4096\n").unwrap().pools["p"].memory,
        ByteSize(4096)
    );
}

#[test]
fn bad_sizes_are_located_errors_not_panics() {
    for text in [
        "\"-1Gi\"",
        "-1",
        "\"18446744073709551616\"",
        "\"16777216Ti\"",
        "\"99999999999999999999999999999999999999999999Ti\"",
        "\"1.5\u{0301}Gi\"",
        "\"\"",
        "\".\"",
        "\"Gi\"",
        "\"1..5Gi\"",
        "\"1e9\"",
        "\"1 PiB\"",
        "\"4 G i\"",
        "1.5e9",
        "true",
        "\"١٢Gi\"",
        "\"4GiBB\"",
    ] {
        let toml = format!("[pools.p]\nmemory = {text}\n");
        let (line, column, key, shown) = located(&toml, &PolicyRegistry::new());
        assert_eq!(
            (line, key.as_str()),
            (2, "pools.p.memory"),
            "{text}: {shown}"
        );
        assert!(column >= 1, "{shown}");
    }
}

#[test]
fn durations_accept_humantime_and_reject_negative_zero_tick_and_overflow() {
    let ok: &[(&str, Duration)] = &[
        ("1h30m", Duration::from_secs(5400)),
        ("1h 30m", Duration::from_secs(5400)),
        ("250ms", Duration::from_millis(250)),
        ("1ns", Duration::from_nanos(1)),
    ];
    for (text, expected) in ok {
        let config = load(&format!("[scheduler]\ntick = \"{text}\"\n"))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(config.scheduler.tick, *expected, "{text}");
    }
    for text in [
        "0s",
        "0ms",
        "0",
        "-1s",
        "soon",
        "",
        "1",
        "99999999999999999999999y",
    ] {
        let (line, _, key, shown) = located(
            &format!("[scheduler]\ntick = \"{text}\"\n"),
            &PolicyRegistry::new(),
        );
        assert_eq!(
            (line, key.as_str()),
            (2, "scheduler.tick"),
            "{text}: {shown}"
        );
    }
    // A huge but valid acquire_timeout and spawn_timeout build a pool that works.
    let config =
        load("[pools.p]\nacquire_timeout = \"500000000y\"\nspawn_timeout = \"500000000y\"\n")
            .unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "p", &clock, |_| 1);
    drop(pool.acquire("k").unwrap());
}

#[test]
fn half_a_second_is_a_duration_or_a_located_error() {
    // humantime has no decimals; whatever the answer, it must be exact or located.
    match load("[scheduler]\ntick = \"0.5s\"\n") {
        Ok(config) => assert_eq!(config.scheduler.tick, Duration::from_millis(500)),
        Err(e) => assert_eq!(e.key(), Some("scheduler.tick"), "{e}"),
    }
}

#[test]
fn huge_durations_in_a_simulation_do_not_panic() {
    let config = "[policy]\nkind = \"keep-alive\"\nttl = \"500000000y\"\n[pools.default]\nacquire_timeout = \"500000000y\"\ncold_start = \"100000y\"\n";
    let (exit, out, err) = cli(
        &["simulate", "--config", "-", "--until", "1h", "--json"],
        config.as_bytes(),
    );
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(out.contains("\"requests\":5"), "{out}");
}

// ---- check shows what is used ----

#[test]
fn check_shows_the_values_in_force_and_where_they_come_from() {
    let text = r#"
[policy]
kind = "chain"
[[policy.policies]]
kind = "keep-alive"
ttl = "2m"
[[policy.policies]]
kind = "gradual-lru"
min_workers = 1

[pools.p]
memory = "1Gi"
cold_start = "5s"

[pools.p.models.m]
ttl = "30s"
memory = "4gb"
"#;
    let (exit, out, err) = cli(&["check", "-"], text.as_bytes());
    assert_eq!(exit, Exit::Success, "{err}");
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{out}"))
            .to_string()
    };
    let m = line("model m:");
    assert!(m.contains("ttl=30s (model)"), "{m}");
    assert!(m.contains("memory=4GB (model)"), "{m}");
    assert!(m.contains("cold_start=5s (pool)"), "{m}");
    assert!(m.contains("idle=1m (gradual-lru default)"), "{m}");
    // min_workers: keep-alive's default 0, gradual-lru's 1.
    assert!(
        m.contains("min_workers=0 (keep-alive default) / 1 (gradual-lru)"),
        "{m}"
    );
    let other = line("any other model:");
    assert!(other.contains("ttl=2m (keep-alive)"), "{other}");
    assert!(other.contains("memory=1GiB (pool)"), "{other}");
}

#[test]
fn check_shows_hybrid_histograms_value_in_force_for_ttl() {
    // hybrid-histogram reads `ttl` per model (it replaces `fallback_keep_alive`): for a model
    // without one, the value in force is the fallback keep-alive, 4h by default.
    let text = "[policy]\nkind = \"hybrid-histogram\"\n[pools.p]\n";
    let (exit, out, err) = cli(&["check", "-"], text.as_bytes());
    assert_eq!(exit, Exit::Success, "{err}");
    let every = out
        .lines()
        .find(|l| l.contains("every model:"))
        .unwrap()
        .to_string();
    assert!(
        !every.contains("unset"),
        "a value in force is shown: {every}"
    );
}

// ---- Custom policies ----

/// `[policy] kind = "cap"`: at most `workers` workers per key; per model `workers` and `note`.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct CapConfig {
    workers: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CapModel {
    workers: Option<usize>,
    #[allow(dead_code)]
    note: Option<String>,
}

struct Cap {
    workers: usize,
    per_model: BTreeMap<(String, String), usize>,
}

impl EvictionPolicy for Cap {
    fn name(&self) -> &str {
        "cap"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, out: &mut Vec<Proposal>) {
        for (index, key) in snapshot.governed_keys() {
            let pool = snapshot.pool_of(key).name.to_string();
            let limit = self
                .per_model
                .get(&(pool, key.key.to_string()))
                .copied()
                .unwrap_or(self.workers);
            let workers = snapshot.workers_of(key);
            let surplus = workers.len().saturating_sub(limit);
            for worker in workers.iter().filter(|w| w.is_idle()).take(surplus) {
                out.push(Proposal::new(
                    index,
                    worker.id,
                    EvictionReason::custom("cap"),
                ));
            }
        }
    }

    fn describe(&self) -> String {
        format!("cap workers={}", self.workers)
    }
}

fn cap_registry() -> PolicyRegistry {
    let mut registry = PolicyRegistry::new();
    registry.register_with_models("cap", |c: CapConfig, models: PerModel<CapModel>| {
        let mut per_model = BTreeMap::new();
        for (pool, model, values) in models.iter() {
            if let Some(workers) = values.workers {
                if workers > 100 {
                    return Err(poolwarden::policies::InvalidParameter::new(
                        "workers",
                        "at most 100",
                    ));
                }
                per_model.insert((pool.to_string(), model.to_string()), workers);
            }
        }
        Ok(Box::new(Cap {
            workers: c.workers,
            per_model,
        }) as _)
    });
    registry
}

const CAP_TOML: &str = r#"
[policy]
kind = "cap"
workers = 3

[pools.p]
max_workers_per_model = 4
[pools.p.models.m]
workers = 1
note = "small"
memory = "1GiB"

[pools.q.policy]
kind = "keep-alive"
[pools.q.models.n]
ttl = "1m"
"#;

#[test]
fn a_custom_policy_gets_its_per_model_keys_and_other_keys_stay_errors() {
    let registry = cap_registry();
    assert_eq!(registry.model_keys("cap"), Some(&["workers", "note"][..]));
    let config = Config::from_toml(CAP_TOML, "cap.toml", &registry).unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "p", &clock, |_| 1);
    let scheduler = config
        .scheduler_builder(&registry)
        .unwrap()
        .clock(clock.clone())
        .build();
    scheduler.register(&pool).unwrap();
    let leases: Vec<_> = (0..4)
        .flat_map(|_| [pool.acquire("m").unwrap(), pool.acquire("x").unwrap()])
        .collect();
    drop(leases);
    clock.set(secs(1));
    scheduler.tick_once();
    assert_eq!(pool.workers("m"), 1, "m's own cap");
    assert_eq!(pool.workers("x"), 3, "the policy's cap");

    // `workers` in the pool that keep-alive governs is an error; so is a typo next to it.
    let bad = CAP_TOML.replace("ttl = \"1m\"", "workers = 1");
    let error = Config::from_toml(&bad, "cap.toml", &registry).unwrap_err();
    assert_eq!(error.key(), Some("pools.q.models.n.workers"), "{error}");
    let bad = CAP_TOML.replace("note = \"small\"", "nots = \"small\"");
    let error = Config::from_toml(&bad, "cap.toml", &registry).unwrap_err();
    assert_eq!(error.key(), Some("pools.p.models.m.nots"), "{error}");
    assert!(
        error.to_string().contains("`workers` and `note`"),
        "{error}"
    );
    // A wrong type and a value the factory refuses are located at the model's key.
    let bad = CAP_TOML.replace("workers = 1\n", "workers = \"one\"\n");
    let error = Config::from_toml(&bad, "cap.toml", &registry).unwrap_err();
    assert_eq!(error.key(), Some("pools.p.models.m.workers"), "{error}");
    assert_eq!(error.position().map(|p| p.0), Some(9), "{error}");
    let bad = CAP_TOML.replace("workers = 1\n", "workers = 101\n");
    let error = Config::from_toml(&bad, "cap.toml", &registry).unwrap_err();
    assert_eq!(error.key(), Some("pools.p.models.m.workers"), "{error}");
    assert_eq!(error.position().map(|p| p.0), Some(9), "{error}");
}

#[test]
fn the_cli_checks_and_simulates_with_a_custom_registry() {
    let registry = cap_registry();
    let (exit, out, err) = run_in_process(&["check", "-"], &registry, CAP_TOML.as_bytes());
    assert_eq!(exit, Exit::Success, "{err}");
    let m = out.lines().find(|l| l.contains("model m:")).unwrap();
    assert!(m.contains("workers=1 (model)"), "{out}");
    assert!(m.contains("memory=1GiB (model)"), "{out}");
    let other = out
        .lines()
        .find(|l| l.contains("any other model:"))
        .unwrap();
    assert!(other.contains("workers=3 (cap)"), "{out}");
    // The plain registry does not know `cap`.
    let (exit, _, err) = cli(&["check", "-"], CAP_TOML.as_bytes());
    assert_eq!(exit, Exit::BadConfig);
    assert!(err.contains("unknown policy kind `cap`"), "{err}");
    // simulate with the custom registry, the custom kind on the command line.
    let trace = "at,model,duration,pool\n0,m,1,p\n0,m,1,p\n";
    let (exit, out, err) = run_in_process(
        &[
            "simulate",
            "--config",
            temp_file("cap.toml", CAP_TOML.as_bytes()).to_str().unwrap(),
            "--trace",
            "-",
            "--policy",
            "cap:workers=2",
            "--json",
        ],
        &registry,
        trace.as_bytes(),
    );
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(out.contains("\"policy\":\"cap\""), "{out}");
}

// ---- The service's own file ----

#[test]
fn a_sub_table_locates_errors_with_the_path_from_the_files_root() {
    let registry = PolicyRegistry::new();
    let service =
        |poolwarden: &str| format!("[server]\nport = 8080\nname = \"svc\"\n\n{poolwarden}");
    let load_in = |text: &str, table: &str| {
        Config::loader(&registry)
            .table(table)
            .from_toml(text, "service.toml")
    };
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "[tool.poolwarden.pools.text]\nbogus = 1\n",
            "tool.poolwarden",
            (6, 1),
            "tool.poolwarden.pools.text.bogus",
        ),
        (
            "[poolwarden]\nbogus = 1\n",
            "poolwarden",
            (6, 1),
            "poolwarden.bogus",
        ),
        (
            "[poolwarden.pools.text.policy]\nkind = \"memory-pressure\"\n",
            "poolwarden",
            (6, 8),
            "poolwarden.pools.text.policy.kind",
        ),
        (
            "[poolwarden.pools.text.policy]\nkind = \"keep-alive\"\n[poolwarden.pools.text.models.m]\nidle = \"1m\"\n",
            "poolwarden",
            (8, 1),
            "poolwarden.pools.text.models.m.idle",
        ),
        (
            "[poolwarden.budgets.g]\nlimit = \"0Gi\"\n",
            "poolwarden",
            (6, 1),
            "poolwarden.budgets.g.limit",
        ),
        (
            "[poolwarden.pools.text]\nmemory = \"1XB\"\n",
            "poolwarden",
            (6, 10),
            "poolwarden.pools.text.memory",
        ),
    ];
    for (section, table, position, key) in cases {
        let text = service(section);
        let error = load_in(&text, table).unwrap_err();
        assert_eq!(error.key(), Some(*key), "{error}");
        assert_eq!(error.position(), Some(*position), "{error}");
        assert!(
            error.to_string().starts_with(&format!(
                "service.toml:{}:{}: `{key}`: ",
                position.0, position.1
            )),
            "{error}"
        );
    }
    // An inline table at the top of the file, and a dotted key, locate the key too.
    let error = load_in(
        "poolwarden = { scheduler = { tick = \"0s\" } }\n[server]\nport = 1\n",
        "poolwarden",
    )
    .unwrap_err();
    assert_eq!(error.key(), Some("poolwarden.scheduler.tick"), "{error}");
    assert_eq!(error.position(), Some((1, 30)), "{error}");
    let error = load_in(
        "[server]\nport = 1\n[tool]\npoolwarden.pools.text.max_workers_per_model = 0\n",
        "tool.poolwarden",
    )
    .unwrap_err();
    assert_eq!(
        error.key(),
        Some("tool.poolwarden.pools.text.max_workers_per_model"),
        "{error}"
    );
    assert_eq!(error.position(), Some((4, 23)), "{error}");
    // A table path that crosses an array of tables is not a table of poolwarden's.
    let error = load_in("[[tool]]\nx = 1\n", "tool.poolwarden").unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::MissingTable { .. } | ConfigError::Invalid { .. }
        ),
        "{error}"
    );
    // The memory-pressure hint names the table where the default policy goes.
    let error = load_in(
        &service("[poolwarden.pools.text.policy]\nkind = \"memory-pressure\"\n"),
        "poolwarden",
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("`[poolwarden.policy]`"),
        "{error}"
    );
    // The rest of the file is the service's: anything goes there.
    let config = load_in(
        &service("[poolwarden.pools.text]\n[other]\nx = 1\n"),
        "poolwarden",
    )
    .unwrap();
    assert!(config.pools.contains_key("text"));
    // The CLI reads the same table.
    let (exit, out, err) = cli(
        &["check", "-", "--table", "tool.poolwarden"],
        service("[tool.poolwarden.pools.text]\nmax_workers_per_model = 2\n").as_bytes(),
    );
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(out.contains("max_workers_per_model=2"), "{out}");
    let (exit, _, err) = cli(
        &["check", "-", "--table", "tool.poolwarden"],
        service("[tool.poolwarden.pools.text]\nmax_workers_per_model = 0\n").as_bytes(),
    );
    assert_eq!(exit, Exit::BadConfig);
    assert_eq!(
        err,
        "error: <stdin>:6:1: `tool.poolwarden.pools.text.max_workers_per_model`: must be at least 1\n"
    );
}

// ---- Reload ----

#[test]
fn replace_policy_swaps_the_default_and_a_pools_policy_between_ticks() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        "[policy]\nkind = \"noop\"\n[pools.a]\n[pools.b]\n",
        "adv.toml",
        &registry,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let a = pool_of(&config, "a", &clock, |_| 1);
    let b = pool_of(&config, "b", &clock, |_| 1);
    let scheduler = config
        .scheduler_builder(&registry)
        .unwrap()
        .clock(clock.clone())
        .build();
    scheduler.register(&a).unwrap();
    scheduler.register(&b).unwrap();
    drop(a.acquire("x").unwrap());
    drop(b.acquire("y").unwrap());
    assert!(tick_through(&clock, &scheduler, 0, 100).is_empty());
    // b gets keep-alive 10s of its own: only b's key goes.
    scheduler
        .replace_policy(PolicyScope::Pool("b"), Some(keep_alive(secs(10))))
        .unwrap();
    let evictions = tick_through(&clock, &scheduler, 101, 200);
    assert_eq!(evictions, vec![(101, "b".to_string(), "y".to_string())]);
    assert_eq!(a.workers("x"), 1);
    // The default becomes keep-alive 10s: a's key goes at the next tick.
    scheduler
        .replace_policy(PolicyScope::Default, Some(keep_alive(secs(10))))
        .unwrap();
    let evictions = tick_through(&clock, &scheduler, 201, 300);
    assert_eq!(evictions, vec![(201, "a".to_string(), "x".to_string())]);
    // b back under the default (now keep-alive), a's new worker... b's new worker goes at +10s.
    scheduler
        .replace_policy(PolicyScope::Pool("b"), None)
        .unwrap();
    clock.set(secs(300));
    drop(b.acquire("y").unwrap());
    let evictions = tick_through(&clock, &scheduler, 300, 400);
    assert_eq!(evictions, vec![(310, "b".to_string(), "y".to_string())]);
    assert!(scheduler
        .replace_policy(PolicyScope::Pool("nope"), None)
        .is_err());
}

#[test]
fn raising_max_workers_at_run_time_lets_a_waiter_spawn_and_timeout_changes() {
    let config = load("[pools.p]\nmax_workers_per_model = 1\nacquire_timeout = \"30s\"\n").unwrap();
    let clock = Arc::new(ManualClock::new());
    let pool = pool_of(&config, "p", &clock, |_| 1);
    let held = pool.acquire("k").unwrap();
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire("k").map(drop))
    };
    assert!(common::eventually(Duration::from_secs(10), || pool
        .waiting("k")
        == 1));
    pool.set_max_workers_per_model(2);
    waiter.join().unwrap().expect("a second worker spawned");
    assert_eq!(pool.workers("k"), 2);
    // Lowered to 1 with both held: a new request now times out after the new timeout.
    let second = pool.acquire("k").unwrap();
    pool.set_max_workers_per_model(1);
    pool.set_acquire_timeout(Duration::from_millis(50));
    let third = pool.acquire("k");
    match third {
        Err(AcquireError::Timeout { waited, .. }) => {
            assert!(waited < Duration::from_secs(20), "{waited:?}")
        }
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    drop((held, second));
    assert_eq!(pool.workers("k"), 2, "lowering evicts nothing");
}

// ---- Typed errors print their source once ----

#[test]
fn no_error_repeats_its_source() {
    let registry = PolicyRegistry::new();
    // A config that cannot be read.
    let error = Config::load("/nonexistent/dir/p.toml", &registry).unwrap_err();
    assert_source_not_repeated(&error);
    // A directory as a config.
    let error = Config::load(temp_dir(), &registry).unwrap_err();
    assert_source_not_repeated(&error);
    // An invalid parameter.
    let mut spec = PolicySpec::of_kind("memory-pressure");
    spec.params.insert("high".into(), toml::Value::Float(2.0));
    let error = spec.build(&registry).err().unwrap();
    assert_source_not_repeated(&error);
    // A failing factory.
    let pool = Pool::builder("p", |_key: &str| {
        Err::<Model, SpawnError>("no weights".into())
    })
    .build();
    let error = pool.acquire("k").err().unwrap();
    assert_source_not_repeated(&error);
    assert_eq!(chain_of(&error).matches("no weights").count(), 1);
    // The status client's errors.
    let error = poolwarden::cli::fetch_status("http://127.0.0.1:1/", Duration::from_secs(2))
        .err()
        .unwrap();
    assert_source_not_repeated(&error);
    let error = poolwarden::cli::fetch_status("ftp://x", Duration::from_secs(2))
        .err()
        .unwrap();
    assert_source_not_repeated(&error);
    // A trace that cannot be read.
    let error = poolwarden::sim::Trace::load(
        Path::new("/nonexistent/t.csv"),
        poolwarden::sim::TraceFormat::Native,
        None,
        poolwarden::sim::ServiceModel::default(),
    )
    .err()
    .unwrap();
    assert_source_not_repeated(&error);
    // The CLI prints each cause once.
    let (exit, _, err) = cli(&["check", "/nonexistent/dir/p.toml"], b"");
    assert_eq!(exit, Exit::NoInput);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

// ---- The CLI ----

#[test]
fn exit_codes_follow_sysexits() {
    let dir = temp_dir();
    let dir_s = dir.to_str().unwrap();
    let trace = temp_file("ok.csv", b"at,model,duration\n0,m,1\n");
    let trace_s = trace.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &[u8], Exit)> = vec![
        (vec!["check"], b"", Exit::Usage),
        (vec!["check", "-", "--bogus"], b"", Exit::Usage),
        (vec!["frobnicate"], b"", Exit::Usage),
        (vec!["check", "/nonexistent/p.toml"], b"", Exit::NoInput),
        (vec!["check", dir_s], b"", Exit::NoInput),
        (
            vec!["check", "-"],
            b"[pools.p]\nbogus = 1\n",
            Exit::BadConfig,
        ),
        (vec!["check", "-"], b"\xff\xfe", Exit::BadConfig),
        (vec!["check", "-"], b"", Exit::Success),
        (vec!["simulate", "--tick", "0s"], b"", Exit::Usage),
        (vec!["simulate", "--tick", "0ms"], b"", Exit::Usage),
        (vec!["simulate", "--tick", "-1s"], b"", Exit::Usage),
        (vec!["simulate", "--tick", ""], b"", Exit::Usage),
        (vec!["simulate", "--until", "1x"], b"", Exit::Usage),
        (
            vec!["simulate", "--from", "5s", "--until", "5s"],
            b"",
            Exit::Usage,
        ),
        (vec!["simulate", "--policy", "lfu"], b"", Exit::Usage),
        (
            vec!["simulate", "--policy", "keep-alive:ttl"],
            b"",
            Exit::Usage,
        ),
        (
            vec!["simulate", "--policy", "keep-alive:ttl=-5"],
            b"",
            Exit::Usage,
        ),
        (
            vec!["simulate", "--policy", "keep-alive:bogus=1"],
            b"",
            Exit::Usage,
        ),
        (
            vec!["simulate", "--config", "-", "--trace", "-"],
            b"",
            Exit::Usage,
        ),
        (vec!["simulate", "--table", "x"], b"", Exit::Usage),
        (
            vec!["simulate", "--config", "/nonexistent/p.toml"],
            b"",
            Exit::NoInput,
        ),
        (
            vec!["simulate", "--trace", "/nonexistent/t.csv"],
            b"",
            Exit::NoInput,
        ),
        (vec!["simulate", "--trace", "-"], b"", Exit::BadData),
        (
            vec!["simulate", "--trace", "-"],
            b"at,model,duration\n",
            Exit::BadData,
        ),
        (
            vec!["simulate", "--trace", "-"],
            b"at,model,duration\n# only a comment\n",
            Exit::BadData,
        ),
        (
            vec!["simulate", "--trace", "-"],
            b"at,model,duration\n0,m,-1\n",
            Exit::BadData,
        ),
        (
            vec!["simulate", "--trace", "-"],
            b"at,model,duration,pool\n0,m,1,nope\n",
            Exit::BadData,
        ),
        (
            vec!["simulate", "--trace", "-", "--format", "azure-llm"],
            b"TIMESTAMP,ContextTokens,GeneratedTokens\n",
            Exit::BadData,
        ),
        (
            vec!["simulate", "--config", "-"],
            b"[scheduler]\ntick = \"0s\"\n",
            Exit::BadConfig,
        ),
        (
            vec!["simulate", "--config", "-", "--trace", trace_s],
            b"[pools.default]\n",
            Exit::Success,
        ),
        (
            vec!["simulate", "--csv", "/nonexistent/dir/out.csv"],
            b"",
            Exit::CannotWrite,
        ),
        (vec!["simulate", "--svg", dir_s], b"", Exit::CannotWrite),
        (
            vec!["simulate", "--pareto", "/nonexistent/dir/p.svg"],
            b"",
            Exit::CannotWrite,
        ),
    ];
    for (args, input, expected) in cases {
        let (exit, _, err) = cli(&args, input);
        assert_eq!(exit, expected, "{args:?}: {err}");
        if expected != Exit::Success && !err.is_empty() {
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
}

#[test]
fn a_trace_that_is_a_directory_is_missing_input() {
    let dir = temp_dir();
    let (exit, _, err) = cli(&["check", dir.to_str().unwrap()], b"");
    assert_eq!(exit, Exit::NoInput, "{err}");
    let (exit, _, err) = cli(&["simulate", "--trace", dir.to_str().unwrap()], b"");
    assert_eq!(exit, Exit::NoInput, "{err}");
}

/// `probe = "nvml:0"` in a build without the `nvml` feature: the config is valid (the simulator
/// reads no probe, and the same file serves a GPU build), so `check` exits 0 but warns at the
/// budget's key that a pool on it will not build here; building one fails with a typed error.
#[test]
fn check_warns_of_a_probe_this_build_cannot_open() {
    let text = "[budgets.g]\nlimit = \"1Gi\"\nprobe = \"nvml:0\"\n[pools.p]\nbudget = \"g\"\n";
    let config = load(text).unwrap();
    let built = config.pool_builder("p", |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }));
    let (exit, out, err) = cli(&["check", "-"], text.as_bytes());
    assert_eq!(exit, Exit::Success, "{err}");
    if cfg!(feature = "nvml") {
        assert!(!out.contains("warning: budgets.g"), "{out}");
    } else {
        assert!(built.is_err(), "no NVML in this build");
        assert!(
            out.contains("warning: budgets.g: probe nvml:0 needs the `nvml` feature"),
            "{out}"
        );
    }
}

#[test]
fn output_paths_are_checked_before_the_run_and_bad_config_does_not_create_them() {
    let dir = temp_dir();
    let csv = dir.join("never.csv");
    let _ = std::fs::remove_file(&csv);
    // A bad output path fails before a bad trace is even read: 73, not 65.
    let (exit, _, err) = cli(
        &[
            "simulate",
            "--trace",
            "-",
            "--svg",
            "/nonexistent/dir/x.svg",
        ],
        b"garbage",
    );
    assert_eq!(exit, Exit::CannotWrite, "{err}");
    // A good output path is not left behind by a run that fails.
    let (exit, _, err) = cli(
        &["simulate", "--trace", "-", "--csv", csv.to_str().unwrap()],
        b"garbage",
    );
    assert_eq!(exit, Exit::BadData, "{err}");
    assert!(!csv.exists(), "a failed run leaves no empty CSV behind");
}

#[test]
fn standard_output_that_cannot_be_written_is_73() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = binary(&["check", "config/default.toml"], Stdio::from(full));
    assert_eq!(output.status.code(), Some(73), "{:?}", output);
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = binary(&["simulate", "--json"], Stdio::from(full));
    assert_eq!(output.status.code(), Some(73), "{:?}", output);
    let output = binary(&["simulate", "--csv", "/dev/full"], Stdio::piped());
    assert_eq!(output.status.code(), Some(73), "{:?}", output);
}

#[test]
fn csv_output_quotes_pool_model_and_trace_names() {
    let dir = temp_dir();
    let config = temp_file("weird.toml", b"[pools.\"we,ird\"]\n[pools.\"q\\\"uote\"]\n");
    let trace = temp_file(
        "we,ird.csv",
        b"at,model,duration,pool\n0,\"a,b\",1,\"we,ird\"\n0,\"say \"\"hi\"\"\",1,\"q\"\"uote\"\n",
    );
    let out_csv = dir.join("we,ird out.csv");
    let (exit, _, err) = cli(
        &[
            "simulate",
            "--config",
            config.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--csv",
            out_csv.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(exit, Exit::Success, "{err}");
    let text = std::fs::read_to_string(&out_csv).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "policy",
            "parameters",
            "pool",
            "model",
            "at_secs",
            "workers",
            "memory_bytes"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert!(rows.iter().all(|r| r.len() == 7), "{text}");
    assert!(
        rows.iter().any(|r| &r[2] == "we,ird" && &r[3] == "a,b"),
        "{text}"
    );
    assert!(
        rows.iter()
            .any(|r| &r[2] == "q\"uote" && &r[3] == "say \"hi\""),
        "{text}"
    );
    // An azure-llm trace named `we,ird.csv` has the key `we,ird`.
    let azure = temp_file(
        "we,ird.csv",
        b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n",
    );
    let (exit, _, err) = cli(
        &[
            "simulate",
            "--trace",
            azure.to_str().unwrap(),
            "--format",
            "azure-llm",
            "--csv",
            out_csv.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(exit, Exit::Success, "{err}");
    let text = std::fs::read_to_string(&out_csv).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert!(rows.iter().all(|r| r.len() == 7), "{text}");
    assert!(rows.iter().any(|r| &r[3] == "we,ird"), "{text}");
}

#[test]
fn a_conv_header_without_azure_format_gets_a_hint() {
    let (exit, _, err) = cli(
        &["simulate", "--trace", "-"],
        b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n",
    );
    assert_eq!(exit, Exit::BadData, "{err}");
    assert!(err.contains("--format azure-llm"), "{err}");
    assert!(err.contains("<stdin>:1"), "located: {err}");
}

#[test]
fn stdin_reads_a_config_or_a_trace() {
    let (exit, out, err) = cli(
        &["simulate", "--config", "-", "--json"],
        b"[policy]\nkind = \"keep-alive\"\nttl = \"10s\"\n[pools.default]\n",
    );
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(out.contains("\"config\":\"<stdin>\""), "{out}");
    assert!(out.contains("\"policy\":\"keep-alive\""), "{out}");
    let (exit, out, err) = cli(
        &["simulate", "--trace", "-", "--json"],
        b"at,model,duration\n0,m,1\n1,m,1\n",
    );
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(out.contains("\"requests\":2"), "{out}");
}

#[test]
fn cli_tick_zero_is_rejected_like_the_configs() {
    let (exit, _, cli_err) = cli(&["simulate", "--tick", "0s"], b"");
    assert_eq!(exit, Exit::Usage);
    assert!(cli_err.contains("must be greater than 0"), "{cli_err}");
    let (exit, _, config_err) = cli(&["check", "-"], b"[scheduler]\ntick = \"0s\"\n");
    assert_eq!(exit, Exit::BadConfig);
    assert!(
        config_err.contains("must be greater than 0"),
        "{config_err}"
    );
    // A tick of 1ns is accepted by both.
    let (exit, _, err) = cli(&["check", "-"], b"[scheduler]\ntick = \"1ns\"\n");
    assert_eq!(exit, Exit::Success, "{err}");
}

// ---- Nothing panics ----

#[test]
fn odd_names_and_shapes_never_panic_and_errors_are_located() {
    let registry = PolicyRegistry::new();
    let inputs = [
        "[pools.\"\"]\n",
        "[pools.\"a.b\"]\nmax_workers_per_model = 0\n",
        "[pools.\"a.b\".models.\"x.y\"]\nttl = \"1m\"\n",
        "[pools.\"\u{1F600}\".models.\"\u{1F600}\"]\nbogus = \"\u{1F600}\"\n",
        "[[pools]]\n",
        "pools = []\n",
        "policy = []\n",
        "policy = { kind = 5 }\n",
        "[policy]\nkind = \"chain\"\npolicies = [1]\n",
        "[policy]\nkind = \"chain\"\npolicies = []\n",
        "[policy]\nkind = \"chain\"\n",
        "[policy]\nkind = \"chain\"\npolicies = [{kind = \"chain\", policies = [{kind = \"chain\", policies = []}]}]\n",
        "[policy]\n",
        "[scheduler]\ntick = 5\n",
        "[pools.p]\nmax_workers_per_model = 9223372036854775807\nmax_in_flight_per_worker = 4294967295\n",
        "[pools.p.models.m]\nmin_workers = 9223372036854775807\n",
        "[budgets.g]\nlimit = 18446744073709551615\n",
        "[budgets.g]\nlimit = \"16EiB\"\n",
        "[budgets.g]\nlimit = \"1Gi\"\nprobe = \"nvml:99999999999\"\n",
        "a = 1\na = 2\n",
        "[pools.p]\n[pools.p]\n",
    ];
    for text in inputs {
        match Config::from_toml(text, "odd.toml", &registry) {
            Ok(config) => {
                // Whatever loads builds, or fails to build with a typed error.
                for name in config.pools.keys() {
                    let _ = config
                        .pool_builder(name, |_key: &str| Ok::<_, SpawnError>(Model { bytes: 1 }));
                }
                let _ = config.scheduler_builder(&registry);
                let (exit, _, err) = cli(&["check", "-"], text.as_bytes());
                assert_eq!(exit, Exit::Success, "{text}: {err}");
            }
            Err(e) => {
                assert!(e.position().is_some(), "{text}: not located: {e}");
                assert!(e.to_string().starts_with("odd.toml:"), "{e}");
            }
        }
    }
}

#[test]
fn key_paths_quote_names_that_are_not_bare_keys() {
    let (_, _, key, shown) = located(
        "[pools.\"a.b\"]\nmax_workers_per_model = 0\n",
        &PolicyRegistry::new(),
    );
    // `pools.a.b.max_workers_per_model` would name another pool; the path must tell them apart.
    assert_ne!(key, "pools.a.b.max_workers_per_model", "{shown}");
    assert!(key.contains("\"a.b\""), "{shown}");
}

/// Runs the binary on `args` for at most `limit`: its exit code, or `None` when it had to be
/// killed.
fn binary_within(args: &[&str], limit: Duration) -> Option<i32> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run poolwarden");
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_trace_far_in_the_future_replays_at_once() {
    // Well inside the 584 years a trace may span.
    let trace = temp_file("far.csv", b"at,model,duration\n1e10,m,1\n0,m,1e9\n");
    assert_eq!(
        binary_within(&["simulate", "--trace", trace.to_str().unwrap()], secs(60)),
        Some(0)
    );
}

#[test]
fn a_trace_at_the_edge_of_its_range_does_not_hang_the_simulator() {
    for (name, rows) in [
        ("edge-at.csv", "at,model,duration\n18446744073,m,0\n"),
        ("edge-duration.csv", "at,model,duration\n0,m,18446744073\n"),
        ("edge-both.csv", "at,model,duration\n18446744072,m,1\n"),
    ] {
        let trace = temp_file(name, rows.as_bytes());
        let code = binary_within(&["simulate", "--trace", trace.to_str().unwrap()], secs(60));
        // Replayed (0) or refused as out of range (65); never a hang.
        assert!(
            matches!(code, Some(0) | Some(65)),
            "{rows}: exit {code:?} (None: still running after 60 s)"
        );
    }
}

/// A parameter given twice in one `--policy KIND:KEY=VALUE,...` is a usage error, not the last
/// value silently.
#[test]
fn a_policy_parameter_given_twice_is_a_usage_error() {
    let (exit, _, err) = cli(&["simulate", "--policy", "keep-alive:ttl=1m,ttl=2m"], b"");
    assert_eq!(exit, Exit::Usage, "{err}");
    assert!(err.contains("`ttl` is given twice"), "{err}");
    let (exit, _, err) = cli(&["simulate", "--policy", "keep-alive:ttl=1m"], b"");
    assert_eq!(exit, Exit::Success, "{err}");
}
