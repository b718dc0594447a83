//! `hybrid-histogram` in the simulator: it learns a key's idle times, unloads it and pre-warms
//! it for the next request, forecasts idle times beyond its range, falls back to a keep-alive
//! while it knows too little, and honours per-model overrides. Timelines worked out by hand.

use std::process::Command;
use std::time::Duration;

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::sim::{simulate, SimOptions, SimRun, Trace};

/// The functions preset: one worker per key, no limit on requests in flight, no load time.
const FUNCTIONS: &str = include_str!("../config/functions.toml");

fn run(config: &str, trace: &str, options: SimOptions) -> SimRun {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(config, "test.toml", &registry).expect("config");
    let trace = Trace::parse_native(trace, "test.csv", "test").expect("trace");
    simulate(&config, &registry, &config.policy, &trace, &options, None).expect("simulate")
}

fn secs(s: u64) -> Option<Duration> {
    Some(Duration::from_secs(s))
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 1e-6,
        "{what}: {actual}, expected {expected}"
    );
}

fn events(run: &SimRun) -> Vec<(f64, &str, &str)> {
    run.events
        .iter()
        .map(|e| (e.at_secs, e.model.as_str(), e.reason.as_str()))
        .collect()
}

/// A request of 1 s every 30 minutes. Each idle time is 1799 s, bin 29. Until ten are known,
/// the 4 h fallback keeps the worker; from then on head = tail = bin 29: the worker is unloaded
/// when the request ends (the tick at t + 1), pre-warmed at 29 min × 0.9 = 1566 s after that
/// (t + 1567) and kept until 30 min × 1.1. Measured over [8 h, 12 h]: the requests at
/// 16..=23 × 30 min are all warm; 8 pre-warms (the last at 42967 s) each leave the worker idle
/// 233 s before its request (or before 12 h); 8 s busy.
#[test]
fn a_periodic_key_is_unloaded_after_use_and_prewarmed_for_the_next_request() {
    let mut trace = String::from("at,model,duration\n");
    for k in 0..24 {
        trace.push_str(&format!("{},p,1\n", k * 1800));
    }
    let run = run(
        FUNCTIONS,
        &trace,
        SimOptions {
            from: secs(8 * 3600),
            until: secs(12 * 3600),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    assert_eq!((s.requests, s.cold_starts), (8, 0));
    assert_eq!((s.spawns, s.prewarm_spawns), (8, 8));
    assert_close(s.idle_worker_seconds, 8.0 * 233.0, "idle");
    assert_close(s.worker_seconds, 8.0 * 233.0 + 8.0, "held");
    let unloads: Vec<f64> = run
        .events
        .iter()
        .filter(|e| e.reason == "idle")
        .map(|e| e.at_secs)
        .collect();
    let expected: Vec<f64> = (16..24).map(|k| f64::from(k * 1800 + 1)).collect();
    assert_eq!(unloads, expected, "unloaded when each request ends");
}

/// Idle times of 10 h are beyond the 4 h range: the key is unloaded after use and pre-warmed
/// for the forecast (the last such idle time), 15 % either side.
///
/// 0:00 (1 s): nothing known, the 4 h fallback: evicted at 14401. 10:00 is cold; idle time
/// 35999 s, forecast 35999: unloaded at 36001, pre-warmed at 36001 + 0.85 × 35999 =
/// 66600.15, so from the tick at 66601. 20:00 is warm. Until 22:13:20: idle 14400 + 5399 s.
#[test]
fn idle_times_beyond_the_range_are_forecast_and_prewarmed() {
    let run = run(
        FUNCTIONS,
        "at,model,duration\n0,d,1\n36000,d,1\n72000,d,1\n",
        SimOptions {
            until: secs(80_000),
            ..SimOptions::default()
        },
    );
    let s = &run.summary;
    assert_eq!((s.requests, s.cold_starts, s.prewarm_spawns), (3, 2, 1));
    assert_eq!(
        events(&run),
        vec![
            (14401.0, "d", "keep-alive"),
            (36001.0, "d", "idle"),
            (72001.0, "d", "idle")
        ]
    );
    assert_close(s.idle_worker_seconds, 14400.0 + 5399.0, "idle");
}

/// With fewer than `min_samples` idle times the fallback keep-alive applies, per key: a
/// per-model `ttl` replaces it for that model, and `min_workers` keeps a floor.
#[test]
fn the_fallback_keep_alive_and_per_model_overrides_apply() {
    let config = format!(
        "{FUNCTIONS}\n[pools.default.models.short]\nttl = \"1m\"\n\n[pools.default.models.kept]\nmin_workers = 1\n"
    );
    let run = run(
        &config,
        "at,model,duration\n0,short,1\n0,plain,1\n0,kept,1\n",
        SimOptions {
            until: secs(6 * 3600),
            ..SimOptions::default()
        },
    );
    assert_eq!(
        events(&run),
        vec![
            (61.0, "short", "keep-alive"),
            (14401.0, "plain", "keep-alive")
        ]
    );
    assert_eq!(run.summary.workers_at_end, 1, "`kept` keeps its floor");
}

/// Selectable from TOML and with `--policy`, with every parameter shown by `check`; a bad
/// parameter is a located error.
#[test]
fn selectable_from_toml_and_the_command_line_with_located_errors() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(FUNCTIONS, "functions.toml", &registry).unwrap();
    assert_eq!(config.policy.kind, "hybrid-histogram");
    let described = config.policy.describe(&registry);
    for parameter in [
        "range=4h",
        "bin_width=1m",
        "head_percentile=5",
        "tail_percentile=99",
        "margin=0.1",
        "min_samples=10",
        "cv_threshold=2",
        "fallback_keep_alive=4h",
        "forecast_margin=0.15",
        "min_workers=0",
    ] {
        assert!(described.contains(parameter), "{parameter} in {described}");
    }

    let bad = "[policy]\nkind = \"hybrid-histogram\"\nmargin = 1.5\n";
    let error = Config::from_toml(bad, "bad.toml", &registry)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("bad.toml:3:") && error.contains("margin"),
        "{error}"
    );
    let bad = "[policy]\nkind = \"hybrid-histogram\"\nrange = \"1s\"\nbin_width = \"1m\"\n";
    let error = Config::from_toml(bad, "bad.toml", &registry)
        .unwrap_err()
        .to_string();
    assert!(error.contains("range"), "{error}");

    let output = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["simulate", "--policy", "hybrid-histogram", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["policies"][0]["policy"], "hybrid-histogram");
    // Scenario 5 (four requests at 0:00, one at 7:30): nothing learnt, the 4 h fallback
    // keeps all four workers (the run ends at its last change).
    assert_eq!(json["policies"][0]["summary"]["cold_starts"], 4);
}

/// The comparison from the command line: `--from`, `--policy KIND:KEY=VALUE`, the per-key
/// cold-start percentiles, pre-warm spawns, idle worker-hours and the Pareto points in JSON.
#[test]
fn the_command_line_compares_policies_over_a_window_with_pareto_points() {
    let dir = std::env::temp_dir().join(format!("poolwarden-hh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("periodic.csv");
    let mut rows = String::from("at,model,duration\n");
    for k in 0..24 {
        rows.push_str(&format!("{},p,1\n", k * 1800));
    }
    std::fs::write(&trace, rows).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["simulate", "--config", "config/functions.toml", "--trace"])
        .arg(&trace)
        .args(["--from", "8h", "--until", "12h", "--json", "--pareto"])
        .arg(dir.join("pareto.svg"))
        .args([
            "--policy",
            "keep-alive:ttl=10m",
            "--policy",
            "hybrid-histogram",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let runs = json["policies"].as_array().unwrap();
    assert_eq!(runs[0]["policy"], "keep-alive");
    assert!(
        runs[0]["parameters"].as_str().unwrap().contains("ttl=10m"),
        "{}",
        runs[0]["parameters"]
    );
    let (keep_alive, hybrid) = (&runs[0]["summary"], &runs[1]["summary"]);
    // Every 30 min: a 10 min keep-alive misses every request of the window; the hybrid none.
    assert_eq!(keep_alive["requests"], 8);
    assert_eq!(keep_alive["cold_starts"], 8);
    assert_eq!(keep_alive["key_cold_start_pct_p75"], 100.0);
    assert_eq!(hybrid["cold_starts"], 0);
    assert_eq!(hybrid["prewarm_spawns"], 8);
    assert_eq!(hybrid["key_cold_start_pct_p75"], 0.0);
    assert_eq!(hybrid["from_secs"], 28800.0);
    // Keep-alive holds each worker 600 s after its 1 s request; the hybrid 233 s before it.
    let hours = |s: &serde_json::Value| s["idle_worker_hours"].as_f64().unwrap();
    assert!((hours(keep_alive) - 8.0 * 600.0 / 3600.0).abs() < 1e-6);
    assert!((hours(hybrid) - 8.0 * 233.0 / 3600.0).abs() < 1e-6);
    let pareto = json["pareto"].as_array().unwrap();
    assert!(pareto[1]["label"]
        .as_str()
        .unwrap()
        .starts_with("hybrid-histogram"));
    assert_eq!(pareto[1]["on_front"], true);
    assert_eq!(pareto[0]["on_front"], false, "worse on both axes");
    let chart = std::fs::read_to_string(dir.join("pareto.svg")).unwrap();
    assert!(chart.starts_with("<svg"), "{chart}");
    assert!(chart.contains("hybrid-histogram") && chart.contains("keep-alive ttl=10m"));
    std::fs::remove_dir_all(&dir).ok();
}
