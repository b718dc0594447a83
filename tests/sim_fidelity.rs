//! The simulator counts what really happens: scenario tests whose timelines are worked out by
//! hand in the comments. Each of the first four failed on the engine before the fidelity fixes
//! (spawns not held, one spawn per waiting request, only the first request of a fresh worker
//! a cold start, memory-pressure stopping at `high`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::policies::{EvictionPolicy, KeyId, Prewarm, Proposal, Snapshot};
use poolwarden::sim::{simulate, SimOptions, SimRun, Trace};

fn run_with(registry: &PolicyRegistry, config: &str, trace: &str, options: SimOptions) -> SimRun {
    let config = Config::from_toml(config, "test.toml", registry).expect("config");
    let trace = Trace::parse_native(trace, "test.csv", "test").expect("trace");
    simulate(&config, registry, &config.policy, &trace, &options, None).expect("simulate")
}

fn run(config: &str, trace: &str, options: SimOptions) -> SimRun {
    run_with(&PolicyRegistry::new(), config, trace, options)
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-6
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        close(actual, expected),
        "{what}: {actual}, expected {expected}"
    );
}

fn evictions(run: &SimRun) -> Vec<(f64, String)> {
    run.events
        .iter()
        .map(|e| (e.at_secs, e.model.clone()))
        .collect()
}

const LOADING: &str = r#"
[scheduler]
tick = "1s"
[policy]
kind = "keep-alive"
ttl = "5s"
[pools.default]
max_workers_per_model = 1
max_in_flight_per_worker = 1
cold_start = "30s"
memory = "1GiB"
"#;

/// Fault 1: a worker is held, in workers and memory, from the start of its spawn.
///
/// `a` at 0:00 (10 s): loading 0–30, busy 30–40, idle 40–45, evicted at 45.
/// `b` at 0:20 (5 s): loading 20–50, busy 50–55, idle 55–60, evicted at 60.
/// Held: 45 + 40 = 85 worker-seconds; idle only 5 + 5 = 10 (loading is not idle). Both are
/// held from 20 to 45: peak 2 workers, 2 GiB (the old engine counted `a` from 30 and `b` from
/// 50: 25 worker-seconds, peak 1).
#[test]
fn a_spawning_worker_is_held_from_the_start_of_its_spawn() {
    let run = run(
        LOADING,
        "at,model,duration\n0,a,10\n20,b,5\n",
        SimOptions::default(),
    );
    let s = &run.summary;
    assert_eq!(
        evictions(&run),
        vec![(45.0, "a".to_string()), (60.0, "b".to_string())]
    );
    assert_close(s.worker_seconds, 85.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 10.0, "idle worker-seconds");
    assert_close(s.idle_worker_hours, 10.0 / 3600.0, "idle worker-hours");
    assert_eq!(s.peak_workers, 2);
    assert_eq!(s.peak_memory_bytes, 2 << 30);
    assert_eq!((s.requests, s.cold_starts, s.spawns), (2, 2, 2));
    assert_close(s.mean_wait_secs, 30.0, "mean wait");
}

const BATCHING: &str = r#"
[scheduler]
tick = "1s"
[policy]
kind = "keep-alive"
ttl = "10s"
[pools.default]
max_workers_per_model = 4
max_in_flight_per_worker = 16
cold_start = "30s"
"#;

/// Faults 2 and 3: a spawn in progress stands for 16 waiting requests, and every request that
/// waited for a spawn is a cold start.
///
/// 20 requests of 60 s, one every 0.1 s from 0:00. The first starts spawn A (it covers 16);
/// the 17th (at 1.6 s) starts spawn B. A is ready at 30 and takes the first 16, B at 31.6 the
/// last 4: 2 spawns (the old engine: 4), 20 cold starts (the old engine: 2). A is busy 30–90,
/// evicted at 100; B busy 31.6–91.6, evicted at the tick at 102. Held 100 + 100.4; loading
/// 30 + 30; busy 60 + 60; idle 10 + 10.4.
#[test]
fn spawns_in_progress_cover_their_capacity_and_every_waiter_is_a_cold_start() {
    let mut trace = String::from("at,model,duration\n");
    for i in 0..20 {
        trace.push_str(&format!("{}.{},m,60\n", i / 10, i % 10));
    }
    let run = run(BATCHING, &trace, SimOptions::default());
    let s = &run.summary;
    assert_eq!((s.spawns, s.peak_workers), (2, 2));
    assert_eq!((s.requests, s.cold_starts), (20, 20));
    assert_eq!(
        evictions(&run),
        vec![(100.0, "m".to_string()), (102.0, "m".to_string())]
    );
    assert_close(s.worker_seconds, 200.4, "worker-seconds");
    assert_close(s.idle_worker_seconds, 20.4, "idle worker-seconds");
    // Waits: 30 - 0.1 i for the first 16, 31.6 - 0.1 i for the last 4.
    let waits: f64 = (0..16).map(|i| 30.0 - 0.1 * f64::from(i)).sum::<f64>()
        + (16..20).map(|i| 31.6 - 0.1 * f64::from(i)).sum::<f64>();
    assert_close(s.mean_wait_secs, waits / 20.0, "mean wait");
}

/// A request that waits only for a busy worker is no cold start.
///
/// One worker of one request, 10 s to load, kept for an hour. 0:00 (5 s) spawns: ready at 10,
/// busy 10–15. 0:02 (5 s) waits for that spawn: served at 15, cold. 0:20 (5 s) finds the
/// worker idle: warm, busy 20–25. 0:21 (1 s) waits for it: served at 25, not cold.
/// (0:02 is served 15–20, so the worker is busy from 10 to 26 without a break.)
#[test]
fn waiting_for_a_busy_worker_is_not_a_cold_start() {
    let config = LOADING
        .replace("ttl = \"5s\"", "ttl = \"1h\"")
        .replace("cold_start = \"30s\"", "cold_start = \"10s\"");
    let run = run(
        &config,
        "at,model,duration\n0,m,5\n2,m,5\n20,m,5\n21,m,1\n",
        SimOptions {
            until: Some(Duration::from_secs(100)),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    assert_eq!((s.requests, s.cold_starts, s.spawns), (4, 2, 1));
    // Waits 10 + 13 + 0 + 4.
    assert_close(s.mean_wait_secs, 27.0 / 4.0, "mean wait");
    // Held 0–100, loading 0–10, busy 10–26 (four requests back to back).
    assert_close(s.worker_seconds, 100.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 100.0 - 10.0 - 16.0, "idle");
}

/// Fault 4, in the simulator: memory-pressure goes on until `low`, one victim per tick.
///
/// Ten keys of 1 GiB each get one 1 s request at 0:00 (no load time) against a 10 GiB limit:
/// usage 100 %. Every worker is idle from 1 s, so from 11 s (`min_idle` 10 s) one goes per
/// tick: usage 90 % after 11 s, 80 % after 12 s; with hysteresis it goes on to 50 %, five
/// evictions at 11..=15 (the old policy stopped after two, below `high`).
#[test]
fn memory_pressure_goes_on_to_low_across_ticks() {
    let config = r#"
[scheduler]
tick = "1s"
[policy]
kind = "memory-pressure"
limit = "10GiB"
high = 0.9
low = 0.5
max_per_tick = 1
min_idle = "10s"
settle = "5s"
[pools.default]
max_workers_per_model = 1
memory = "1GiB"
"#;
    let mut trace = String::from("at,model,duration\n");
    for k in 0..10 {
        trace.push_str(&format!("0,k{k},1\n"));
    }
    let run = run(
        config,
        &trace,
        SimOptions {
            until: Some(Duration::from_secs(60)),
            ..SimOptions::default()
        },
    );
    let times: Vec<f64> = run.events.iter().map(|e| e.at_secs).collect();
    assert_eq!(times, vec![11.0, 12.0, 13.0, 14.0, 15.0]);
    assert_eq!(run.summary.workers_at_end, 5);
}

/// Proposes one pre-warm, for `m` at 100 s, at its first tick; evicts nothing.
struct PrewarmAt100 {
    done: bool,
}

impl EvictionPolicy for PrewarmAt100 {
    fn name(&self) -> &str {
        "prewarm-at-100"
    }

    fn propose(&mut self, _snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {}

    fn prewarm(&mut self, _snapshot: &Snapshot<'_>, out: &mut Vec<Prewarm>) {
        if !std::mem::replace(&mut self.done, true) {
            out.push(Prewarm {
                pool: 0,
                key: Arc::from("m"),
                workers: 1,
                at: Duration::from_secs(100),
            });
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn prewarm_registry() -> PolicyRegistry {
    let mut registry = PolicyRegistry::new();
    registry.register("prewarm-at-100", |_: NoParams| {
        Ok(Box::new(PrewarmAt100 { done: false }) as Box<dyn EvictionPolicy>)
    });
    registry
}

const PREWARMED: &str = r#"
[scheduler]
tick = "1s"
[policy]
kind = "prewarm-at-100"
[pools.default]
max_workers_per_model = 1
cold_start = "30s"
"#;

/// A pre-warm for 100 s on a 30 s load starts at the tick at 70, with nothing else going on
/// before (virtual time must not jump over it), and the request at 100 finds the worker ready:
/// warm, no wait. Held 70–105 (loading 70–100, busy 100–105); the run ends at its last change.
#[test]
fn a_prewarm_starts_its_load_time_ahead_and_the_request_is_warm() {
    let run = run_with(
        &prewarm_registry(),
        PREWARMED,
        "at,model,duration\n100,m,5\n",
        SimOptions::default(),
    );
    let s = &run.summary;
    assert_eq!((s.spawns, s.prewarm_spawns, s.cold_starts), (1, 1, 0));
    assert_close(s.mean_wait_secs, 0.0, "wait");
    assert_close(s.worker_seconds, 35.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 0.0, "idle");
}

/// A request at 90 finds the pre-warm still loading: it waits for that spawn (no second one:
/// the spawn in progress covers it) and is a cold start, served at 100.
#[test]
fn a_request_that_waits_for_a_prewarm_spawn_is_a_cold_start() {
    let run = run_with(
        &prewarm_registry(),
        PREWARMED,
        "at,model,duration\n90,m,5\n",
        SimOptions::default(),
    );
    let s = &run.summary;
    assert_eq!((s.spawns, s.prewarm_spawns, s.cold_starts), (1, 1, 1));
    assert_close(s.mean_wait_secs, 10.0, "wait");
}

/// What a recording policy saw of one key: (tick, key id, arrivals, first arrival).
type Seen = (f64, KeyId, u64, Option<Duration>);

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl EvictionPolicy for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn propose(&mut self, snapshot: &Snapshot<'_>, _out: &mut Vec<Proposal>) {
        let mut seen = self.0.lock().unwrap();
        for (_, key) in snapshot.governed_keys() {
            seen.push((
                snapshot.now.as_secs_f64(),
                key.id,
                key.arrivals,
                key.first_arrival,
            ));
        }
    }
}

/// Arrivals between two ticks reach the policy, those that came and went included, and the
/// first arrival after a quiet spell is exact even when the request waited for a spawn.
///
/// Tick 10 s, load 5 s. Requests at 1, 2 and 3 (0.5 s each): the first waits for the spawn
/// (ready at 6), the others wait behind it; all done by 7.5. Tick 10: 3 arrivals, the first at
/// 1 (not 6). Tick 20: none. A request at 25 finds the worker ready: tick 30 sees 1 arrival,
/// first at 25.
#[test]
fn the_simulator_counts_arrivals_between_ticks_and_when_the_first_came() {
    let recorder = Recorder::default();
    let mut registry = PolicyRegistry::new();
    let shared = recorder.clone();
    registry.register("recorder", move |_: NoParams| {
        Ok(Box::new(shared.clone()) as Box<dyn EvictionPolicy>)
    });
    let config = r#"
[scheduler]
tick = "10s"
[policy]
kind = "recorder"
[pools.default]
max_workers_per_model = 1
cold_start = "5s"
"#;
    run_with(
        &registry,
        config,
        "at,model,duration\n1,m,0.5\n2,m,0.5\n3,m,0.5\n25,m,0.5\n",
        SimOptions {
            until: Some(Duration::from_secs(30)),
            ..SimOptions::default()
        },
    );
    let seen = recorder.0.lock().unwrap().clone();
    let at = |t: f64| seen.iter().find(|s| s.0 == t).cloned();
    let secs = Duration::from_secs;
    let (_, id, arrivals, first) = at(10.0).expect("tick 10");
    assert_eq!((arrivals, first), (3, Some(secs(1))));
    assert_eq!(at(20.0).map(|s| (s.1, s.2, s.3)), Some((id, 0, None)));
    assert_eq!(
        at(30.0).map(|s| (s.1, s.2, s.3)),
        Some((id, 1, Some(secs(25))))
    );
}

/// `--from`: policies run from 0, only [from, end] is measured.
///
/// The loading scenario measured from 40: `a` is held 40–45 (idle 40–45 counts: it became idle
/// at 40), `b` 40–60 (loading until 50, busy 50–55, idle 55–60): 25 worker-seconds, 10 idle.
/// No request and no spawn start in the window; both evictions are in it; 2 workers held at 40.
#[test]
fn from_measures_only_the_window() {
    let run = run(
        LOADING,
        "at,model,duration\n0,a,10\n20,b,5\n",
        SimOptions {
            from: Some(Duration::from_secs(40)),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    assert_close(s.from_secs, 40.0, "from");
    assert_close(s.worker_seconds, 25.0, "worker-seconds");
    assert_close(s.idle_worker_seconds, 10.0, "idle");
    assert_eq!(
        (s.requests, s.cold_starts, s.spawns, s.evictions),
        (0, 0, 0, 2)
    );
    assert_eq!(s.peak_workers, 2);
}

/// The per-key cold-start distribution covers the keys with a request in the window.
///
/// Measured from 50, keep-alive 1 h, no load time. `a`: 60 (cold), 70 (warm) → 50 %.
/// `b`: 60 → 100 %. `c`: 61 → 100 %. `d`: 0 (cold, before the window), 60 (warm) → 0 %.
/// Sorted [0, 50, 100, 100]: nearest-rank p50 = 50, p75 = 100, p90 = 100 (without `d`, p50
/// would be 100).
#[test]
fn per_key_cold_start_percentiles_cover_the_keys_seen_in_the_window() {
    let config = LOADING
        .replace("ttl = \"5s\"", "ttl = \"1h\"")
        .replace("cold_start = \"30s\"", "cold_start = \"0s\"");
    let run = run(
        &config,
        "at,model,duration\n0,d,1\n60,a,1\n70,a,1\n60,b,1\n61,c,1\n60,d,1\n",
        SimOptions {
            from: Some(Duration::from_secs(50)),
            until: Some(Duration::from_secs(100)),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    assert_eq!((s.requests, s.cold_starts), (5, 3));
    assert_close(s.key_cold_start_pct_p50, 50.0, "p50");
    assert_close(s.key_cold_start_pct_p75, 100.0, "p75");
    assert_close(s.key_cold_start_pct_p90, 100.0, "p90");
}

/// A native trace that starts at 1.7e9 s (a Unix timestamp) does not tick through 54 years of
/// nothing: with no worker there is nothing a tick could do.
#[test]
fn a_trace_that_starts_at_a_unix_timestamp_replays_at_once() {
    let started = Instant::now();
    let run = run(
        include_str!("../config/default.toml"),
        "at,model,duration\n1700000000,m,5\n1700000030,m,5\n",
        SimOptions::default(),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // gradual-lru idle 1m: the worker, idle from 1700000035, goes at 1700000095.
    assert_eq!(evictions(&run), vec![(1_700_000_095.0, "m".to_string())]);
    assert_eq!((run.summary.requests, run.summary.cold_starts), (2, 1));
    assert_close(run.summary.worker_seconds, 95.0, "worker-seconds");
}

/// A request of 1e9 s keeps its worker busy: no tick can evict it, so time jumps to its end.
/// And with `noop` keeping another key's idle worker, once nothing has happened for a
/// horizon, time jumps to the next event too.
#[test]
fn a_request_of_a_billion_seconds_does_not_hang_the_replay() {
    let started = Instant::now();
    let long = run(
        include_str!("../config/default.toml"),
        "at,model,duration\n0,m,1000000000\n",
        SimOptions::default(),
    );
    assert_eq!(evictions(&long), vec![(1_000_000_060.0, "m".to_string())]);
    assert_close(
        long.summary.worker_seconds,
        1_000_000_060.0,
        "worker-seconds",
    );
    assert_close(long.summary.idle_worker_seconds, 60.0, "idle");

    let noop = include_str!("../config/noop.toml");
    let run = run(
        noop,
        "at,model,duration\n0,idle,1\n0,long,1000000000\n",
        SimOptions::default(),
    );
    assert!(run.events.is_empty());
    assert_close(run.summary.end_secs, 1e9, "end");
    assert_close(run.summary.idle_worker_seconds, 1e9 - 1.0, "idle");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
