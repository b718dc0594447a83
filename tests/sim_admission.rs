//! Admission in the simulator: the situations of `tests/admission.rs`, replayed through the
//! simulator with native traces (a `pool` column for several pools), timelines worked out by
//! hand in the comments. Every test uses `noop` (or a keep-alive far longer than the run) so
//! that only admission evicts, and `--until`-style ends so that runs are short.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use poolwarden::cli::Exit;
use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::sim::{simulate, ServiceModel, SimOptions, SimRun, Trace, TraceFormat};

fn config(toml: &str) -> Config {
    Config::from_toml(toml, "test.toml", &PolicyRegistry::new()).expect("config")
}

fn run_config(config: &Config, trace: &str, until: u64) -> SimRun {
    let trace = Trace::parse_native(trace, "test.csv", "test").expect("trace");
    let options = SimOptions {
        until: Some(Duration::from_secs(until)),
        ..SimOptions::default()
    };
    simulate(
        config,
        &PolicyRegistry::new(),
        &config.policy,
        &trace,
        &options,
        None,
    )
    .expect("simulate")
}

fn run(toml: &str, trace: &str, until: u64) -> SimRun {
    run_config(&config(toml), trace, until)
}

/// (time, pool, model, reason) of every eviction.
fn events(run: &SimRun) -> Vec<(f64, &str, &str, &str)> {
    run.events
        .iter()
        .map(|e| {
            (
                e.at_secs,
                e.pool.as_str(),
                e.model.as_str(),
                e.reason.as_str(),
            )
        })
        .collect()
}

/// The most bytes the pools of `budget` held at once, replaying the timeline in order (within
/// an instant too: admission evicts before it reserves).
fn peak_bytes_of_budget(config: &Config, run: &SimRun, budget: &str) -> u64 {
    let mut held: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut peak = 0;
    for point in &run.timeline {
        if config.pools[&point.pool].budget.as_deref() != Some(budget) {
            continue;
        }
        held.insert((&point.pool, &point.model), point.memory_bytes);
        peak = peak.max(held.values().sum());
    }
    peak
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-6,
        "{what}: {actual}, expected {expected}"
    );
}

/// One pool `p` on budget `gpu0` of `limit` bytes, the LIBRARY test's footprints, no load time.
fn one_pool(limit: &str, order: &str, extra: &str) -> String {
    format!(
        r#"
[scheduler]
tick = "1s"
[policy]
kind = "noop"
[budgets.gpu0]
limit = "{limit}"
order = "{order}"
[pools.p]
budget = "gpu0"
max_workers_per_model = 1
{extra}
[pools.p.models.a1]
memory = "30B"
[pools.p.models.a2]
memory = "30B"
[pools.p.models.a3]
memory = "30B"
[pools.p.models.b]
memory = "70B"
[pools.p.models.big]
memory = "150B"
[pools.p.models.c]
memory = "60B"
[pools.p.models.d]
memory = "45B"
[pools.p.models.e]
memory = "20B"
[pools.p.models.f]
memory = "50B"
"#
    )
}

/// a2 is used 0–1, a1 and a3 1–2 (a tie on last use: a1 spawned first, worker 2, goes
/// first). At 10 b needs 70 with 10 free: the two least recently used, a2 then a1, are
/// evicted at 10 with reason admission, and b loads at once. a3 stays; the budget is full.
#[test]
fn several_lru_victims_make_room_at_once() {
    let toml = one_pool("100B", "lru", "");
    let config = config(&toml);
    let run = run_config(
        &config,
        "at,pool,model,duration\n0,p,a2,1\n1,p,a1,1\n1,p,a3,1\n10,p,b,5\n",
        60,
    );
    assert_eq!(
        events(&run),
        [
            (10.0, "p", "a2", "admission"),
            (10.0, "p", "a1", "admission")
        ]
    );
    let s = &run.summary;
    assert_eq!(s.evictions_by_reason.get("admission"), Some(&2));
    assert_eq!((s.requests, s.spawns, s.cold_starts), (4, 4, 4));
    assert_eq!((s.rejected, s.admission_waits), (0, 0), "b fitted at once");
    assert_eq!(s.peak_memory_bytes, 100);
    assert_eq!(peak_bytes_of_budget(&config, &run, "gpu0"), 100);
    assert_eq!(s.workers_at_end, 2, "a3 and b");
    assert_close(s.max_wait_secs, 0.0, "max wait");
}

/// c (60) is busy 0–5.5. b (70) arrives at 1: 40 free, and the only other worker is busy, so
/// b's spawn waits for memory. At 5.5 (between two ticks) c's request ends: in that same
/// instant c is idle, is evicted for b (reason admission) and b loads: b waited 4.5 s, for
/// memory.
#[test]
fn a_spawn_waits_for_a_busy_worker_to_go_idle() {
    let toml = one_pool("100B", "lru", "");
    let config = config(&toml);
    let trace = "at,pool,model,duration\n0,p,c,5.5\n1,p,b,2\n";
    let run = run_config(&config, trace, 60);
    assert_eq!(events(&run), [(5.5, "p", "c", "admission")]);
    let s = &run.summary;
    assert_eq!((s.requests, s.rejected, s.admission_waits), (2, 0, 1));
    assert_eq!(s.cold_starts, 2);
    assert_close(s.max_wait_secs, 4.5, "b's wait");
    assert_close(s.mean_wait_secs, 2.25, "mean of 0 and 4.5");
    assert_eq!(peak_bytes_of_budget(&config, &run, "gpu0"), 70);

    // With acquire_timeout = 3s b gives up at 4, before c is idle: nothing is evicted.
    let toml = one_pool("100B", "lru", "acquire_timeout = \"3s\"");
    let run = self::run(&toml, trace, 60);
    assert!(events(&run).is_empty(), "{:?}", events(&run));
    let s = &run.summary;
    assert_eq!((s.requests, s.rejected, s.admission_waits), (2, 1, 1));
    assert_eq!((s.spawns, s.cold_starts), (1, 1), "only c loaded");
    assert_close(
        s.max_wait_secs,
        0.0,
        "a rejected request's wait is not a wait",
    );
    assert_eq!(s.workers_at_end, 1);
}

/// big (150) can never fit the 100 B budget: its requests at 2 and 3 fail at once, and a1,
/// idle since 1, stays.
#[test]
fn a_spawn_bigger_than_the_limit_fails_at_once_and_evicts_nothing() {
    let toml = one_pool("100B", "lru", "");
    let run = run(
        &toml,
        "at,pool,model,duration\n0,p,a1,1\n2,p,big,1\n3,p,big,1\n",
        60,
    );
    assert!(events(&run).is_empty(), "{:?}", events(&run));
    let s = &run.summary;
    assert_eq!((s.requests, s.rejected, s.admission_waits), (3, 2, 0));
    assert_eq!(s.spawns, 1);
    assert_eq!(s.workers_at_end, 1, "a1 stays");
    assert_close(s.max_wait_secs, 0.0, "rejected at once");
}

/// a1 (30) idle from 1, c (60) busy 1–20. b needs 80 at 2 with 10 free: a1 alone would leave
/// it at 40, so nothing is evicted and b waits; with acquire_timeout = 5s it gives up at 7.
#[test]
fn nothing_is_evicted_when_the_idle_victims_would_not_make_room() {
    let toml = one_pool("100B", "lru", "acquire_timeout = \"5s\"").replace(
        "[pools.p.models.b]\nmemory = \"70B\"",
        "[pools.p.models.b]\nmemory = \"80B\"",
    );
    assert!(toml.contains("memory = \"80B\""));
    let run = run(
        &toml,
        "at,pool,model,duration\n0,p,a1,1\n1,p,c,19\n2,p,b,1\n",
        60,
    );
    assert!(events(&run).is_empty(), "{:?}", events(&run));
    let s = &run.summary;
    assert_eq!((s.requests, s.rejected, s.admission_waits), (3, 1, 1));
    assert_eq!(s.workers_at_end, 2, "a1 and c stay");
}

/// e (20) used 0–1, f (50) 1–2; d (45) at 3 with 0 free. `largest`: f alone makes room and
/// goes; `lru`: e first (20, not enough), then f.
#[test]
fn largest_first_takes_the_biggest_idle_worker() {
    let trace = "at,pool,model,duration\n0,p,e,1\n1,p,f,1\n3,p,d,1\n";
    let largest = run(&one_pool("70B", "largest", ""), trace, 60);
    assert_eq!(events(&largest), [(3.0, "p", "f", "admission")]);
    assert_eq!(largest.summary.workers_at_end, 2, "e and d");

    let lru = run(&one_pool("70B", "lru", ""), trace, 60);
    assert_eq!(
        events(&lru),
        [(3.0, "p", "e", "admission"), (3.0, "p", "f", "admission")]
    );
    assert_eq!(lru.summary.workers_at_end, 1, "d");
}

/// Two pools on one budget. `keep` (pool `pinned`, 30 each, min_workers = 1) has two workers,
/// both last used at 2 (worker 1 and 2); a1 (pool `other`, 30) is last used at 3: 90 of 100.
/// b (70) at 5 needs 60 more: keep's one unpinned worker (the lower id) and a1, across pools,
/// least recently used first. keep keeps its pinned worker.
#[test]
fn pinned_workers_are_never_victims_and_other_pools_are() {
    let toml = r#"
[scheduler]
tick = "1s"
[policy]
kind = "keep-alive"
ttl = "1h"
[budgets.gpu0]
limit = "100B"
[pools.pinned]
budget = "gpu0"
memory = "30B"
[pools.pinned.models.keep]
min_workers = 1
[pools.other]
budget = "gpu0"
max_workers_per_model = 1
[pools.other.models.a1]
memory = "30B"
[pools.other.models.b]
memory = "70B"
"#;
    let config = config(toml);
    let run = run_config(
        &config,
        "at,pool,model,duration\n1,pinned,keep,1\n1,pinned,keep,1\n2,other,a1,1\n5,other,b,1\n",
        60,
    );
    assert_eq!(
        events(&run),
        [
            (5.0, "pinned", "keep", "admission"),
            (5.0, "other", "a1", "admission")
        ]
    );
    assert_eq!(run.events[0].worker, 1);
    assert_eq!(run.events[0].workers_after, 1, "the pinned worker stays");
    assert_eq!(peak_bytes_of_budget(&config, &run, "gpu0"), 100);
    assert_eq!(run.summary.workers_at_end, 2, "keep's pinned worker and b");
}

/// b (70) busy 0–10. c (60) at 1 waits for memory; a1 (30) at 2 would fit the 30 free bytes
/// but queues behind c. At 10 b is idle: evicted for c, then a1 fits too. Both load at 10.
#[test]
fn waiting_spawns_are_served_first_come_first_served() {
    let toml = one_pool("100B", "lru", "");
    let config = config(&toml);
    let run = run_config(
        &config,
        "at,pool,model,duration\n0,p,b,10\n1,p,c,1\n2,p,a1,1\n",
        60,
    );
    assert_eq!(events(&run), [(10.0, "p", "b", "admission")]);
    let s = &run.summary;
    assert_eq!((s.rejected, s.admission_waits, s.spawns), (0, 2, 3));
    assert_close(s.max_wait_secs, 9.0, "c waited 1–10");
    assert_close(s.mean_wait_secs, (0.0 + 9.0 + 8.0) / 3.0, "a1 waited 2–10");
    assert_eq!(peak_bytes_of_budget(&config, &run, "gpu0"), 90);
}

/// One spawn waiting for memory stands for `max_in_flight_per_worker` requests. b serves 2 at
/// once and has at most 1 worker; its three requests at 1 (2 s each) wait behind one spawn
/// that waits for c (busy 0–5). At 5 c goes for b's worker, which takes two of them at once;
/// the third gets the first free slot at 7. Waits 4, 4 and 6; all three waited for memory.
#[test]
fn one_waiting_spawn_stands_for_a_worker_s_capacity() {
    let toml = one_pool("100B", "lru", "max_in_flight_per_worker = 2");
    let run = run(
        &toml,
        "at,pool,model,duration\n0,p,c,5\n1,p,b,2\n1,p,b,2\n1,p,b,2\n",
        60,
    );
    assert_eq!(events(&run), [(5.0, "p", "c", "admission")]);
    let s = &run.summary;
    assert_eq!((s.requests, s.rejected, s.admission_waits), (4, 0, 3));
    assert_eq!(s.spawns, 2, "c, then one worker of b");
    assert_close(s.max_wait_secs, 6.0, "the third request of b");
    assert_close(s.mean_wait_secs, (0.0 + 4.0 + 4.0 + 6.0) / 4.0, "mean wait");
}

/// A spawn whose requests gave up leaves the budget's queue, and the next one tries at once.
/// Tick 1h: only the first tick (at 0) runs, so nothing here depends on a tick. b (70) is
/// busy 0–20; c (60) at 1 waits for memory, a1 (30) at 2 queues behind it. c's request gives
/// up at 6 (acquire_timeout 5s): its spawn is withdrawn, and a1 fits the 30 free bytes at 6,
/// after 4 s (it would give up at 7).
#[test]
fn a_withdrawn_spawn_lets_the_next_one_in() {
    let toml = one_pool("100B", "lru", "acquire_timeout = \"5s\"").replace("\"1s\"", "\"1h\"");
    assert!(toml.contains("tick = \"1h\""));
    let run = run(
        &toml,
        "at,pool,model,duration\n0,p,b,20\n1,p,c,1\n2,p,a1,1\n",
        30,
    );
    assert!(events(&run).is_empty(), "{:?}", events(&run));
    let s = &run.summary;
    assert_eq!((s.rejected, s.admission_waits, s.spawns), (1, 2, 2));
    assert_close(s.max_wait_secs, 4.0, "a1 waited 2–6");
}

/// A spawn waiting for memory tries again at each tick. keep (30) is used 0–1 and pinned
/// (the chain's keep-alive has min_workers = 1), c (60) is busy 0–20; b (40) at 2 finds 10
/// free and no victim, and waits. max-lifetime (5s, no jitter) evicts keep, idle and spawned
/// at 0, at the tick at 5 (it ignores the floor): that tick lets b in, 3 s after it came.
#[test]
fn a_tick_that_evicts_lets_the_waiting_spawn_in() {
    let toml = r#"
[scheduler]
tick = "1s"
[policy]
kind = "chain"
[[policy.policies]]
kind = "keep-alive"
ttl = "1h"
min_workers = 1
[[policy.policies]]
kind = "max-lifetime"
lifetime = "5s"
jitter = 0.0
[budgets.gpu0]
limit = "100B"
[pools.p]
budget = "gpu0"
[pools.p.models.keep]
memory = "30B"
[pools.p.models.c]
memory = "60B"
[pools.p.models.b]
memory = "40B"
"#;
    let config = config(toml);
    let run = run_config(
        &config,
        "at,pool,model,duration\n0,p,keep,1\n0,p,c,20\n2,p,b,1\n",
        15,
    );
    // b (spawned at 5, idle from 6) reaches its lifetime at 10; c is busy until 20.
    assert_eq!(
        events(&run),
        [
            (5.0, "p", "keep", "max-lifetime"),
            (10.0, "p", "b", "max-lifetime")
        ]
    );
    let s = &run.summary;
    assert_eq!((s.rejected, s.admission_waits), (0, 1));
    assert_close(s.max_wait_secs, 3.0, "b waited 2–5");
    assert_eq!(peak_bytes_of_budget(&config, &run, "gpu0"), 100);
}

/// The issue's case (`config/llm-budget.toml`): one conversation service on GPUs with 200 GiB
/// between them, up to 47 replicas of 14 GiB serving one request each, 30 s loads. Without its
/// budget, memory-pressure (limit 200 GiB) sees the overshoot only after the loads and evicts
/// idle replicas over and over; with it, the accounted bytes never exceed 200 GiB (14
/// replicas), and there are no more loads than replicas.
#[test]
fn conv_on_a_200_gib_budget_never_overcommits_and_does_not_thrash() {
    let path = Path::new("../shared/traces/azure-llm-2023/conv.csv");
    if !path.exists() {
        eprintln!("skipped: {} is not present", path.display());
        return;
    }
    let trace =
        Trace::load(path, TraceFormat::AzureLlm, None, ServiceModel::default()).expect("trace");
    let registry = PolicyRegistry::new();
    let budgeted = Config::load("config/llm-budget.toml", &registry).expect("config");
    let mut unbudgeted = budgeted.clone();
    unbudgeted.pools.get_mut("default").unwrap().budget = None;
    let replay = |config: &Config| {
        simulate(
            config,
            &registry,
            &config.policy,
            &trace,
            &SimOptions::default(),
            None,
        )
        .expect("simulate")
    };
    let (with, without) = (replay(&budgeted), replay(&unbudgeted));
    eprintln!(
        "conv, 200 GiB: without the budget {:?}\nwith it {:?}",
        without.summary, with.summary
    );

    let limit = 200u64 << 30;
    let (s, w) = (&with.summary, &without.summary);
    assert_eq!(
        w.peak_memory_bytes,
        47 * (14 << 30),
        "without: all 47 replicas"
    );
    assert!(peak_bytes_of_budget(&budgeted, &with, "gpu") <= limit);
    assert_eq!(
        s.peak_memory_bytes,
        14 * (14 << 30),
        "with: the 14 replicas that fit"
    );
    assert_eq!(s.peak_workers, 14);
    assert!(
        s.spawns <= 14,
        "no load is undone and redone: {} loads",
        s.spawns
    );
    assert_eq!(
        s.evictions_by_reason.get("admission"),
        None,
        "one model: no victims"
    );
    assert!(
        w.spawns > 20 * s.spawns && w.evictions_by_reason["memory-pressure"] > 20 * s.spawns,
        "without the budget memory-pressure thrashes: {} loads against {}",
        w.spawns,
        s.spawns
    );
    assert!(
        w.cold_starts > 2 * s.cold_starts,
        "{} cold starts against {}",
        w.cold_starts,
        s.cold_starts
    );
    // The price: 14 replicas serve fewer requests at once than the hour needs (about 23), so
    // requests queue, wait for memory, and some give up after acquire_timeout (30 s).
    assert!(s.rejected > 0 && s.admission_waits > s.rejected);
    assert_eq!(
        s.admission_waits,
        s.requests - s.spawns,
        "every request but those that called for the 14 loads queued behind a load waiting \
         for memory"
    );
    assert_eq!(w.rejected, 0);
}

fn cli(args: &[&str], stdin: &str) -> (Exit, String, String) {
    let mut argv = vec!["poolwarden"];
    argv.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = poolwarden::cli::run(
        argv,
        &PolicyRegistry::new(),
        &mut stdin.as_bytes(),
        &mut out,
        &mut err,
    );
    (
        exit,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

/// A model that can never fit its budget: `check` warns (exit 0), and `simulate` still runs,
/// rejecting its requests (Scenario 5's five requests of `m`).
#[test]
fn simulate_runs_a_config_whose_model_can_never_fit() {
    let toml = r#"
[budgets.gpu0]
limit = "1GiB"
[pools.default]
budget = "gpu0"
memory = "2GiB"
"#;
    let (exit, out, err) = cli(&["check", "-"], toml);
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(
        format!("{out}{err}").contains("can never load"),
        "{out}{err}"
    );

    let (exit, out, err) = cli(&["simulate", "--config", "-", "--json"], toml);
    assert_eq!(exit, Exit::Success, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let summary = &value["policies"][0]["summary"];
    assert_eq!(summary["requests"], 5);
    assert_eq!(summary["rejected"], 5);
    assert_eq!(summary["admission_waits"], 0);
    assert_eq!(summary["spawns"], 0);

    let (exit, out, err) = cli(&["simulate", "--config", "-"], toml);
    assert_eq!(exit, Exit::Success, "{err}");
    let rejected = out
        .lines()
        .find(|l| l.starts_with("rejected"))
        .unwrap_or("");
    assert!(rejected.ends_with("5 (100.0 %)"), "{out}");
    assert!(out.contains("\nadmission waits"), "{out}");
}

/// The chart draws each pool's budget on its memory panel.
#[test]
fn the_chart_shows_the_budget_of_each_pool() {
    let dir = std::env::temp_dir().join(format!("poolwarden-sim-admission-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("budget.svg");
    let toml = r#"
[budgets.gpu0]
limit = "48GiB"
[pools.default]
budget = "gpu0"
memory = "14GiB"
cold_start = "30s"
"#;
    let (exit, _, err) = cli(
        &["simulate", "--config", "-", "--svg", svg.to_str().unwrap()],
        toml,
    );
    assert_eq!(exit, Exit::Success, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.contains("budget 48.0 GiB"), "{text}");
}
