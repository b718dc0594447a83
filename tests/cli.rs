//! The operator CLI contract: `poolwarden check` and `poolwarden simulate`.

#[path = "common/bin.rs"]
mod bin;
#[path = "../examples/support/learned_keep_alive.rs"]
mod learned_keep_alive;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bin::{poolwarden, run_in_process};
use poolwarden::cli::Exit;
use poolwarden::PolicyRegistry;
use proptest::prelude::*;

/// Runs the binary with `input` on its standard input and `env` set.
fn poolwarden_with(args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_poolwarden"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("run poolwarden");
    let mut stdin = child.stdin.take().unwrap();
    // A command that does not read its input may close it first.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait for poolwarden")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn files_in(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
    files.sort();
    files
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolwarden-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The conv trace, cut to its first `rows` requests (None if the shared traces are absent).
fn conv_slice(rows: usize) -> Option<PathBuf> {
    let conv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces/azure-llm-2023/conv.csv");
    let text = std::fs::read_to_string(conv).ok()?;
    let slice: Vec<&str> = text.lines().take(rows + 1).collect();
    Some(temp_file("conv.csv", slice.join("\n").as_bytes()))
}

#[test]
fn simulate_without_arguments_prints_scenario5() {
    let output = poolwarden(&["simulate", "--events"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let timeline: Vec<(String, String, String)> = text
        .lines()
        .filter(|l| l.contains(" default ") && l.contains(" idle "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[3].to_string(), f[5].to_string())
        })
        .collect();
    let expected = [
        ("0:06:00", "3"),
        ("0:07:00", "2"),
        ("0:09:30", "1"),
        ("0:10:30", "0"),
    ];
    assert_eq!(timeline.len(), 4, "{text}");
    for ((time, _, left), (want_time, want_left)) in timeline.iter().zip(expected) {
        assert_eq!(
            (time.as_str(), left.as_str()),
            (want_time, want_left),
            "{text}"
        );
    }
    // The 10:30 victim served the 7:30 request; the 9:30 one had been idle since 5:00.
    assert_ne!(timeline[2].1, timeline[3].1);
    assert!(text.contains("summary"), "{text}");
}

#[test]
fn simulate_json_follows_the_contract() {
    let output = poolwarden(&["simulate", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    let runs = value["policies"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["policy"], "gradual-lru");
    let s = &run["summary"];
    assert_eq!(s["requests"], 5);
    assert_eq!(s["cold_starts"], 4);
    assert_eq!(s["spawns"], 4);
    assert_eq!(s["evictions"], 4);
    assert_eq!(s["worker_seconds"].as_f64(), Some(1980.0));
    assert_eq!(s["idle_worker_seconds"].as_f64(), Some(720.0));
    assert_eq!(s["peak_workers"], 4);
    assert!(s["peak_memory_bytes"].is_u64());
    let events = run["events"].as_array().unwrap();
    let first = &events[0];
    assert_eq!(first["at_secs"].as_f64(), Some(360.0));
    assert_eq!(first["pool"], "default");
    assert_eq!(first["model"], "m");
    assert_eq!(first["worker"], 1);
    assert_eq!(first["reason"], "idle");
    assert_eq!(first["workers_after"], 3);
    let times: Vec<f64> = events
        .iter()
        .map(|e| e["at_secs"].as_f64().unwrap())
        .collect();
    assert_eq!(times, vec![360.0, 420.0, 570.0, 630.0]);
}

#[test]
fn a_sixty_second_tick_lands_each_eviction_within_one_tick() {
    let output = poolwarden(&["simulate", "--json", "--tick", "60s"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let times: Vec<f64> = value["policies"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at_secs"].as_f64().unwrap())
        .collect();
    assert_eq!(times.len(), 4);
    for (seen, table) in times.iter().zip([360.0, 420.0, 570.0, 630.0]) {
        assert!(*seen >= table && *seen < table + 60.0, "{times:?}");
    }
}

#[test]
fn three_policies_side_by_side_on_a_slice_of_the_conv_trace() {
    let Some(slice) = conv_slice(2000) else {
        eprintln!("skipped: ../shared/traces is not present");
        return;
    };
    let slice = slice.to_str().unwrap();
    let args = [
        "simulate",
        "--trace",
        slice,
        "--format",
        "azure-llm",
        "--policy",
        "gradual-lru",
        "--policy",
        "keep-alive",
        "--policy",
        "noop",
    ];
    let output = poolwarden(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let header = text
        .lines()
        .find(|l| l.starts_with("summary"))
        .expect(&text);
    let columns: Vec<&str> = header.split_whitespace().skip(1).collect();
    assert_eq!(columns, vec!["gradual-lru", "keep-alive", "noop"]);
    let requests = text.lines().find(|l| l.starts_with("requests")).unwrap();
    assert_eq!(
        requests.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec!["2000"; 3]
    );

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let value: serde_json::Value = serde_json::from_slice(&poolwarden(&json_args).stdout).unwrap();
    let runs = value["policies"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    for run in runs {
        let s = &run["summary"];
        assert_eq!(s["requests"], 2000);
        assert!(
            s["worker_seconds"].as_f64().unwrap() >= s["idle_worker_seconds"].as_f64().unwrap()
        );
        assert_eq!(
            run["events"].as_array().unwrap().len() as u64,
            s["evictions"].as_u64().unwrap()
        );
    }
    assert_eq!(runs[0]["events"][0]["reason"], "idle");
    assert_eq!(runs[1]["events"][0]["reason"], "keep-alive");
    assert_eq!(runs[2]["summary"]["evictions"], 0);
    assert_eq!(runs[0]["events"][0]["model"], "conv");
}

#[test]
fn the_svg_is_written_and_well_formed() {
    let svg = std::env::temp_dir().join(format!("poolwarden-{}.svg", std::process::id()));
    let csv = svg.with_extension("csv");
    let output = poolwarden(&[
        "simulate",
        "--policy",
        "gradual-lru",
        "--policy",
        "keep-alive",
        "--svg",
        svg.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&svg).unwrap();
    let document = roxmltree::Document::parse(&text).expect("well-formed SVG");
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let lines = document
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .count();
    assert!(lines >= 2, "one line per policy, found {lines}");
    assert!(text.contains("default / m"));
    let csv_text = std::fs::read_to_string(&csv).unwrap();
    assert!(csv_text.starts_with("policy,parameters,pool,model,at_secs,workers,memory_bytes\n"));
    assert!(
        csv_text.contains("gradual-lru,idle=1m step=1m min_workers=0,default,m,360,3,"),
        "{csv_text}"
    );
    assert!(
        csv_text.contains("keep-alive,ttl=5m min_workers=0,default,m,"),
        "{csv_text}"
    );
}

#[test]
fn check_accepts_every_preset() {
    let presets = files_in("config", "toml");
    assert!(presets.len() >= 4);
    for preset in presets {
        let output = poolwarden(&["check", preset.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{}: {}",
            preset.display(),
            stderr(&output)
        );
        let text = stdout(&output);
        assert!(text.contains(": ok"), "{text}");
        assert!(text.contains("default policy:"), "{text}");
    }
    let output = poolwarden(&["check", "config/memory-pressure.toml"]);
    let text = stdout(&output);
    assert!(text.contains("memory-pressure high=0.9 low=0.8 limit=16GiB order=lru max_per_tick=4 min_idle=10s settle=5s"), "{text}");
    assert!(
        text.contains("gradual-lru idle=5m step=1m min_workers=0"),
        "{text}"
    );
}

#[test]
fn check_rejects_every_malformed_file_with_a_located_message() {
    let files = files_in("tests/malformed", "toml");
    assert!(files.len() >= 20);
    for file in files {
        let name = file
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string();
        let output = poolwarden(&["check", &name]);
        assert_eq!(output.status.code(), Some(78), "{name}");
        let err = stderr(&output);
        let first = err.lines().next().unwrap_or_default();
        let prefix = format!("error: {name}:");
        assert!(first.starts_with(&prefix), "{first}");
        let position: Vec<&str> = first[prefix.len()..].splitn(3, ':').collect();
        assert!(
            position[0].parse::<usize>().is_ok() && position[1].parse::<usize>().is_ok(),
            "{first}"
        );
    }
    let output = poolwarden(&["check", "/nonexistent/x.toml"]);
    assert_eq!(output.status.code(), Some(66));
    assert!(stderr(&output).starts_with("error: /nonexistent/x.toml: cannot read: "));
}

#[test]
fn simulate_errors_exit_with_their_sysexits_status_and_a_clear_message() {
    let bad_trace = temp_file("bad.csv", b"at,model,duration\n0,m,1\n5,m,oops\n");
    let output = poolwarden(&["simulate", "--trace", bad_trace.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(65));
    assert!(
        stderr(&output).contains("bad.csv:3: `duration`"),
        "{}",
        stderr(&output)
    );

    let output = poolwarden(&["simulate", "--policy", "memory-pressure"]);
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("needs `limit` in simulation"),
        "{}",
        stderr(&output)
    );

    let output = poolwarden(&["simulate", "--policy", "lfu"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("known kinds"),
        "{}",
        stderr(&output)
    );

    let pools = temp_file("pools.csv", b"at,model,duration,pool\n0,m,1,vision\n");
    let output = poolwarden(&["simulate", "--trace", pools.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(65));
    assert!(
        stderr(&output).contains("pool `vision`"),
        "{}",
        stderr(&output)
    );

    let output = poolwarden(&["simulate", "--tick", "soon"]);
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn native_traces_merge_one_key_per_file() {
    let a = temp_file(
        "a.csv",
        b"# two requests\nat,model,duration\n0,a,10\n0,a,10\n",
    );
    let b = temp_file("b.csv", b"at,model,duration\n5,b,1\n");
    let output = poolwarden(&[
        "simulate",
        "--json",
        "--trace",
        a.to_str().unwrap(),
        "--trace",
        b.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let s = &value["policies"][0]["summary"];
    assert_eq!(s["requests"], 3);
    assert_eq!(s["spawns"], 3);
    let models: std::collections::BTreeSet<String> = value["policies"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(models.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
}

/// Almost-valid configs: a valid preset with one line replaced, duplicated or cut.
fn almost_valid() -> impl Strategy<Value = String> {
    let base = include_str!("../config/memory-pressure.toml");
    let lines: Vec<String> = base.lines().map(str::to_string).collect();
    let n = lines.len();
    (0..n, 0..4u8, "[ -~]{0,24}").prop_map(move |(at, how, junk)| {
        let mut lines = lines.clone();
        match how {
            0 => lines[at] = junk,
            1 => lines.insert(at, junk),
            2 => {
                let cut = lines[at].len() / 2;
                lines[at].truncate(cut);
            }
            _ => lines[at] = lines[at].replace('=', &format!("= {junk}")),
        }
        lines.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_loader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let registry = poolwarden::PolicyRegistry::new();
        if let Ok(config) = poolwarden::Config::from_bytes(&bytes, "fuzz.toml", &registry) {
            config.default_policy(&registry).unwrap();
        }
    }

    #[test]
    fn almost_valid_configs_load_or_give_a_located_error(text in almost_valid()) {
        let registry = poolwarden::PolicyRegistry::new();
        match poolwarden::Config::from_toml(&text, "fuzz.toml", &registry) {
            Ok(config) => {
                config.default_policy(&registry).unwrap();
                let _ = config.policy.describe(&registry);
            }
            Err(e) => prop_assert!(e.position().is_some(), "{}", e),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_check_binary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), text in almost_valid()) {
        for (i, contents) in [bytes, text.into_bytes()].into_iter().enumerate() {
            let path = temp_file(&format!("fuzz-{i}.toml"), &contents);
            let output = poolwarden(&["check", path.to_str().unwrap()]);
            let code = output.status.code();
            prop_assert!(code == Some(0) || code == Some(78), "exit {:?}: {}", code, stderr(&output));
            if code == Some(78) {
                let prefix = format!("error: {}:", path.display());
                prop_assert!(stderr(&output).starts_with(&prefix));
            }
        }
    }
}

#[test]
fn a_pool_policy_governs_only_its_own_keys_in_simulation() {
    let config = temp_file(
        "two-pools.toml",
        br#"
[policy]
kind = "gradual-lru"
idle = "1m"
step = "1m"

[pools.default]
max_workers_per_model = 2

[pools.vision]
max_workers_per_model = 2
[pools.vision.policy]
kind = "keep-alive"
ttl = "30s"
"#,
    );
    let trace = temp_file(
        "two-pools.csv",
        b"at,model,duration,pool\n0,m,10,\n0,m,10,\n0,v,10,vision\n0,v,10,vision\n",
    );
    let output = poolwarden(&[
        "simulate",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let events: Vec<(f64, String, String)> = value["policies"][0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at_secs"].as_f64().unwrap(),
                e["pool"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // vision: keep-alive, both workers 30 s after they went idle at 10 s;
    // default: gradual-lru, one at 70 s, the next a step later.
    let expected = [
        (40.0, "vision", "keep-alive"),
        (40.0, "vision", "keep-alive"),
        (70.0, "default", "idle"),
        (130.0, "default", "idle"),
    ];
    assert_eq!(events.len(), expected.len(), "{events:?}");
    for (seen, want) in events.iter().zip(expected) {
        assert_eq!(
            (seen.0, seen.1.as_str(), seen.2.as_str()),
            want,
            "{events:?}"
        );
    }
}

#[test]
fn until_stops_the_run_and_windows_align_across_policies() {
    let output = poolwarden(&[
        "simulate",
        "--json",
        "--until",
        "8m",
        "--policy",
        "gradual-lru",
        "--policy",
        "noop",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let runs = value["policies"].as_array().unwrap();
    let gradual = &runs[0]["summary"];
    let noop = &runs[1]["summary"];
    assert_eq!(gradual["end_secs"].as_f64(), Some(480.0));
    assert_eq!(gradual["evictions"], 2, "6:00 and 7:00 only");
    assert_eq!(gradual["workers_at_end"], 2);
    // Up to 8:00: 4 workers to 6:00, 3 to 7:00, 2 to 8:00 = 1440 + 180 + 120.
    assert_eq!(gradual["worker_seconds"].as_f64(), Some(1740.0));
    assert_eq!(noop["worker_seconds"].as_f64(), Some(1920.0));
    assert_eq!(noop["window_secs"].as_f64(), Some(480.0));

    // Without --until, noop ends with the trace (8:30) and holds its four workers, idle, until
    // gradual-lru's end (10:30) in the common window.
    let output = poolwarden(&[
        "simulate",
        "--json",
        "--policy",
        "gradual-lru",
        "--policy",
        "noop",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let noop = &value["policies"][1]["summary"];
    assert_eq!(noop["end_secs"].as_f64(), Some(510.0));
    assert_eq!(noop["window_secs"].as_f64(), Some(630.0));
    assert_eq!(noop["worker_seconds"].as_f64(), Some(4.0 * 630.0));
    assert_eq!(
        noop["idle_worker_seconds"].as_f64(),
        Some(4.0 * 630.0 - 1260.0)
    );
    assert_eq!(
        value["policies"][0]["summary"]["idle_worker_seconds"].as_f64(),
        Some(720.0)
    );
}

#[test]
fn exit_statuses_follow_sysexits() {
    let bad_trace = temp_file("bad-row.csv", b"at,model,duration\n0,m,1\n5,m,oops\n");
    let bad_trace = bad_trace.to_str().unwrap();
    let cases: [(&[&str], i32, &str); 10] = [
        (&["frobnicate"], 64, "unrecognized subcommand"),
        (&["simulate", "--polcy", "noop"], 64, "--polcy"),
        (
            &["simulate", "--tick", "0s"],
            64,
            "`0s`: must be greater than 0",
        ),
        (
            &["simulate", "--config", "-", "--trace", "-"],
            64,
            "standard input (`-`) can be read once",
        ),
        (
            &["check", "/nonexistent/x.toml"],
            66,
            "/nonexistent/x.toml: cannot read: ",
        ),
        (
            &["simulate", "--trace", "/nonexistent/t.csv"],
            66,
            "/nonexistent/t.csv: cannot read: ",
        ),
        (&["simulate", "--trace", bad_trace], 65, "bad-row.csv:3: "),
        (
            &["check", "tests/malformed/31-idle-under-keep-alive.toml"],
            78,
            "uses keep-alive, which reads `ttl`",
        ),
        (
            &["simulate", "--svg", "/nonexistent/dir/out.svg"],
            73,
            "--svg /nonexistent/dir/out.svg: cannot write: ",
        ),
        (&["simulate", "--json"], 0, ""),
    ];
    for (args, code, message) in cases {
        let output = poolwarden_with(args, b"", &[]);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(message),
            "{args:?}: {}",
            stderr(&output)
        );
        if code != 0 {
            assert!(stdout(&output).is_empty(), "{args:?}: {}", stdout(&output));
        }
    }
}

#[test]
fn help_documents_the_exit_statuses() {
    for args in [
        &["--help"][..],
        &["check", "--help"],
        &["simulate", "--help"],
    ] {
        let output = poolwarden(args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        let text = stdout(&output);
        for line in [
            "64  usage",
            "65  bad data",
            "66  no input",
            "73  cannot write",
            "78  bad configuration",
        ] {
            assert!(text.contains(line), "{args:?}: {text}");
        }
    }
}

#[test]
fn a_zero_tick_is_rejected_on_the_command_line_as_in_toml() {
    for tick in ["0s", "0ms", "0"] {
        let output = poolwarden(&["simulate", "--tick", tick]);
        assert_eq!(output.status.code(), Some(64), "{tick}");
        assert!(
            stderr(&output).contains("must be greater than 0"),
            "{}",
            stderr(&output)
        );
    }
    let output = poolwarden_with(&["check", "-"], b"[scheduler]\ntick = \"0s\"\n", &[]);
    assert_eq!(output.status.code(), Some(78));
    assert!(stderr(&output).contains("`scheduler.tick`: must be greater than 0"));
}

#[test]
fn output_paths_are_checked_before_the_run() {
    let dir = std::env::temp_dir().join(format!("poolwarden-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("fresh.csv");
    let _ = std::fs::remove_file(&csv);
    // A directory is not a file; the check leaves no empty --csv file behind.
    let output = poolwarden(&[
        "simulate",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(73), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is a directory"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());
    assert!(!csv.exists());
    // The check does not truncate an existing file.
    std::fs::write(&csv, "kept").unwrap();
    let output = poolwarden(&[
        "simulate",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        "/nonexistent/x.svg",
    ]);
    assert_eq!(output.status.code(), Some(73));
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "kept");
}

#[test]
fn a_dash_reads_the_config_or_the_trace_from_standard_input() {
    let config = b"[policy]\nkind = \"keep-alive\"\nttl = \"30s\"\n[pools.default]\n";
    let output = poolwarden_with(&["check", "-"], config, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("<stdin>: ok\n"),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains("keep-alive ttl=30s"));

    let output = poolwarden_with(&["check", "-"], b"[pools.x]\nmemory = \"lots\"\n", &[]);
    assert_eq!(output.status.code(), Some(78));
    assert!(stderr(&output).starts_with("error: <stdin>:2:10: `pools.x.memory`: "));

    let output = poolwarden_with(&["simulate", "--json", "--config", "-"], config, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["config"], "<stdin>");
    assert_eq!(value["policies"][0]["policy"], "keep-alive");

    let trace = b"at,model,duration\n0,a,10\n0,a,10\n";
    let output = poolwarden_with(&["simulate", "--json", "--trace", "-"], trace, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["policies"][0]["summary"]["requests"], 2);
    assert_eq!(value["policies"][0]["events"][0]["model"], "a");
}

#[test]
fn check_shows_each_models_values_in_force_and_where_they_come_from() {
    let config = br#"
[policy]
kind = "gradual-lru"
step = "30s"

[pools.text]
memory = "4gb"
[pools.text.models.llama]
idle = "5m"
memory = "16Gi"

[pools.chat.policy]
kind = "keep-alive"
"#;
    let output = poolwarden_with(&["check", "-"], config, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for line in [
        "pool text: max_workers_per_model=4 max_in_flight_per_worker=1 acquire_timeout=30s spawn_timeout=10m memory=4GB cold_start=0s budget=none",
        "  model llama: idle=5m (model), step=30s (gradual-lru), min_workers=0 (gradual-lru default), memory=16GiB (model), cold_start=0s (pool)",
        "  any other model: idle=1m (gradual-lru default), step=30s (gradual-lru), min_workers=0 (gradual-lru default), memory=4GB (pool), cold_start=0s (pool)",
        "  every model: ttl=5m (keep-alive default), min_workers=0 (keep-alive default), memory=0B (pool), cold_start=0s (pool)",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn check_reads_poolwardens_table_of_a_services_file() {
    let file = temp_file(
        "service.toml",
        b"[server]\nport = 8080\n\n[poolwarden.pools.text]\nmax_workers_per_model = 0\n",
    );
    let file = file.to_str().unwrap();
    let output = poolwarden(&["check", "--table", "poolwarden", file]);
    assert_eq!(output.status.code(), Some(78));
    assert_eq!(
        stderr(&output),
        format!("error: {file}:5:1: `poolwarden.pools.text.max_workers_per_model`: must be at least 1\n")
    );
    let output = poolwarden(&["check", file]);
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn a_service_runs_the_cli_with_its_own_registry() {
    let mut registry = PolicyRegistry::new();
    learned_keep_alive::register(&mut registry);
    let (exit, out, err) = run_in_process(&["check", "examples/custom_cli.toml"], &registry, b"");
    assert_eq!(exit, Exit::Success, "{err}");
    assert!(
        out.contains("  learned-keep-alive percentile=0.9 floor=20s ceiling=5m\n"),
        "{out}"
    );
    assert!(
        out.contains("  model m: percentile=0.9 (learned-keep-alive), floor=20s (learned-keep-alive), ceiling=2m (model), memory=0B (pool), cold_start=0s (pool)\n"),
        "{out}"
    );

    let args = [
        "simulate",
        "--json",
        "--config",
        "examples/custom_cli.toml",
        "--policy",
        "learned-keep-alive",
        "--policy",
        "gradual-lru",
    ];
    let (exit, out, err) = run_in_process(&args, &registry, b"");
    assert_eq!(exit, Exit::Success, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["policies"][0]["policy"], "learned-keep-alive");
    // The model's ceiling of 2m after the workers went quiet at 5:00.
    assert_eq!(
        value["policies"][0]["events"][0]["at_secs"].as_f64(),
        Some(420.0)
    );
    assert_eq!(
        value["policies"][1]["events"][0]["at_secs"].as_f64(),
        Some(360.0)
    );

    // The built-in registry does not know the kind.
    let (exit, _, err) = run_in_process(
        &["check", "examples/custom_cli.toml"],
        &PolicyRegistry::new(),
        b"",
    );
    assert_eq!(exit, Exit::BadConfig);
    assert!(
        err.contains("unknown policy kind `learned-keep-alive`"),
        "{err}"
    );
}

#[test]
fn the_binary_logs_through_rust_log_and_the_simulator_does_not_flood_info() {
    // No RUST_LOG: info, but the simulated pool and scheduler stay quiet.
    let output = poolwarden_with(&["simulate"], b"", &[]);
    assert!(output.status.success());
    assert_eq!(stderr(&output), "");
    // RUST_LOG=info: the scheduler's evictions.
    let output = poolwarden_with(&["simulate"], b"", &[("RUST_LOG", "info")]);
    assert!(output.status.success());
    let err = stderr(&output);
    assert_eq!(
        err.lines().filter(|l| l.contains("evicted worker")).count(),
        4,
        "{err}"
    );
    assert!(err.lines().all(|l| l.contains(" INFO ")), "{err}");
    // RUST_LOG=debug: per-tick accounting too.
    let output = poolwarden_with(
        &["simulate", "--until", "10s"],
        b"",
        &[("RUST_LOG", "debug")],
    );
    assert!(output.status.success());
    assert!(
        stderr(&output).contains("MiB accounted"),
        "{}",
        stderr(&output)
    );
}

/// The `$ poolwarden ...` commands in the README's text blocks, with the lines shown after
/// each: (command, shown output).
fn readme_commands() -> Vec<(String, Vec<String>)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut lines = readme.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(command) = line.strip_prefix("$ poolwarden") else {
            continue;
        };
        let mut command = format!("poolwarden{command}");
        while command.ends_with('\\') {
            command.pop();
            command.push(' ');
            command.push_str(lines.next().unwrap_or_default().trim());
        }
        let mut shown = Vec::new();
        while let Some(next) = lines.peek() {
            if next.starts_with("```") || next.starts_with("$ ") {
                break;
            }
            shown.push(lines.next().unwrap().to_string());
        }
        commands.push((command, shown));
    }
    commands
}

#[test]
fn every_poolwarden_command_in_the_readme_runs_as_written() {
    let commands = readme_commands();
    assert!(commands.len() >= 5, "{commands:?}");
    for (command, shown) in commands {
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let missing = args.iter().find(|a| {
            a.starts_with("../shared/") && !Path::new(env!("CARGO_MANIFEST_DIR")).join(a).exists()
        });
        if let Some(missing) = missing {
            eprintln!("skipped `{command}`: {missing} is not present");
            continue;
        }
        let output = poolwarden(&args);
        let expects_error = shown.first().is_some_and(|l| l.starts_with("error: "));
        if expects_error {
            assert!(!output.status.success(), "`{command}` succeeded");
        } else {
            assert!(output.status.success(), "`{command}`: {}", stderr(&output));
        }
        // `check` prints a config's resolution: the README shows it exactly.
        if args.first() == Some(&"check") {
            let printed = format!("{}{}", stdout(&output), stderr(&output));
            let printed: Vec<&str> = printed.lines().collect();
            assert_eq!(printed, shown, "`{command}`");
        }
    }
}
