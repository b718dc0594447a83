//! The text report as an operator reads it: the summary first, each policy headed with its
//! parameters, columns sized to their content, one time format, rates that stay non-zero, and
//! the timeline only on request.

#[path = "common/bin.rs"]
mod bin;

use bin::poolwarden;
use poolwarden::config::{Config, PolicyRegistry, PolicySpec};
use poolwarden::sim::{
    align_windows, render_text, render_text_with, simulate, EventsShown, SimOptions, SimRun,
    TextOptions, Trace,
};

const LONG_POOL: &str = "a-pool-with-a-long-name";

/// 30 keys of a pool with a long name, one request each, replayed with `specs`.
fn runs(specs: &[PolicySpec]) -> Vec<SimRun> {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        &format!("[pools.{LONG_POOL}]\nmemory = \"1GiB\"\n"),
        "c.toml",
        &registry,
    )
    .unwrap();
    let mut text = String::from("at,model,duration,pool\n");
    for k in 0..30 {
        text.push_str(&format!("{k},model-with-a-long-name-{k},5,{LONG_POOL}\n"));
    }
    let trace = Trace::parse_native(&text, "t.csv", "t").unwrap();
    let mut runs: Vec<SimRun> = specs
        .iter()
        .map(|spec| {
            simulate(
                &config,
                &registry,
                spec,
                &trace,
                &SimOptions::default(),
                None,
            )
            .unwrap()
        })
        .collect();
    align_windows(&mut runs);
    runs
}

fn keep_alive(ttl: &str) -> PolicySpec {
    let mut spec = PolicySpec::of_kind("keep-alive");
    spec.params
        .insert("ttl".into(), toml::Value::String(ttl.to_string()));
    spec
}

#[test]
fn the_summary_comes_first_and_the_timeline_only_on_request() {
    let runs = runs(&[keep_alive("1m"), PolicySpec::of_kind("gradual-lru")]);
    assert_eq!(runs[0].events.len(), 30);

    let text = render_text("t", &runs);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("trace t, window 0:00:00 to "),
        "{text}"
    );
    assert!(lines[2].starts_with("summary"), "{text}");
    assert!(!text.contains("== "), "no timeline by default:\n{text}");
    // One line per run counts its evictions by reason.
    assert!(
        text.contains(
            "keep-alive ttl=1m min_workers=0: 30 evictions (keep-alive 30), 0:01:05 to 0:01:34"
        ),
        "{text}"
    );
    assert!(text.contains("gradual-lru idle=1m step=1m min_workers=0: 30 evictions (idle 30)"));

    let first = render_text_with(
        "t",
        &runs,
        &TextOptions {
            config: Some("c.toml".into()),
            events: EventsShown::First(5),
        },
    );
    assert!(
        first.starts_with("trace t, config c.toml, window"),
        "{first}"
    );
    let summary_at = first.find("summary").unwrap();
    let timeline_at = first.find("== keep-alive ttl=1m").unwrap();
    assert!(summary_at < timeline_at, "the summary comes first");
    let rows = first
        .lines()
        .filter(|l| l.contains(LONG_POOL) && l.contains("model-with"))
        .count();
    assert_eq!(rows, 10, "5 per run:\n{first}");
    assert_eq!(
        first
            .matches("... 25 more (--events all lists every one)")
            .count(),
        2
    );

    let all = render_text_with(
        "t",
        &runs,
        &TextOptions {
            config: None,
            events: EventsShown::All,
        },
    );
    let rows = all
        .lines()
        .filter(|l| l.contains(LONG_POOL) && l.contains("model-with"))
        .count();
    assert_eq!(rows, 60);
    assert!(!all.contains(" more (--events all"));
}

#[test]
fn timeline_columns_size_to_their_content() {
    let runs = runs(&[keep_alive("1m")]);
    let text = render_text_with(
        "t",
        &runs,
        &TextOptions {
            config: None,
            events: EventsShown::All,
        },
    );
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("== "))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    let header = table[0];
    let reason_at = header.find("reason").unwrap();
    let model_at = header.find("model").unwrap();
    assert_eq!(table.len(), 31);
    for row in &table[1..] {
        // Every row's model and reason start under their headings, however long the names.
        assert_eq!(row.find("model-with").unwrap(), model_at, "{row}\n{text}");
        assert_eq!(row.find("keep-alive").unwrap(), reason_at, "{row}\n{text}");
        assert!(row.trim_start().starts_with("0:01:"), "h:mm:ss: {row}");
    }
}

#[test]
fn each_column_is_headed_with_its_parameters_and_the_table_stays_aligned() {
    let runs = runs(&[keep_alive("1m"), keep_alive("5m")]);
    let text = render_text("t", &runs);
    let header: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("summary"))
        .take_while(|l| !l.starts_with("requests"))
        .collect();
    assert_eq!(
        header[0].split_whitespace().collect::<Vec<_>>(),
        vec!["summary", "keep-alive", "keep-alive"]
    );
    let parameters = header[1..].join(" ");
    assert!(parameters.contains("ttl=1m"), "{text}");
    assert!(parameters.contains("ttl=5m"), "{text}");
    assert_eq!(runs[0].label(), "keep-alive ttl=1m min_workers=0");
    assert_ne!(runs[0].label(), runs[1].label());
    // Every row of the table ends at the same column (values are right-aligned).
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("requests"))
        .take_while(|l| !l.is_empty())
        .collect();
    let width = body[0].chars().count();
    for row in &body {
        assert_eq!(row.chars().count(), width, "{row}\n{text}");
    }
    for label in ["ended at", "window", "max wait", "worker-hours"] {
        assert!(body.iter().any(|r| r.starts_with(label)), "{label}: {text}");
    }
}

#[test]
fn times_durations_rates_and_sizes_read_as_a_person_writes_them() {
    let mut runs = runs(&[keep_alive("1m")]);
    let s = &mut runs[0].summary;
    s.requests = 19_366;
    s.cold_starts = 4;
    s.mean_wait_secs = 0.044;
    s.p99_wait_secs = 0.0;
    s.max_wait_secs = 58_333.367;
    s.end_secs = 3509.843;
    let text = render_text("t", &runs);
    let row = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("{label}: {text}"))
            .split_whitespace()
            .skip(label.split_whitespace().count())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(row("cold starts"), "4 (0.02 %)");
    assert_eq!(row("mean wait"), "44ms");
    assert_eq!(row("p99 wait"), "0s");
    assert_eq!(row("max wait"), "16h 12m 13s");
    assert_eq!(row("ended at"), "0:58:29.843");
    assert_eq!(row("peak memory"), "30.0 GiB");
}

#[test]
fn json_carries_the_parameters_and_the_longest_wait() {
    let runs = runs(&[keep_alive("1m")]);
    let value = serde_json::to_value(&runs[0]).unwrap();
    assert_eq!(value["policy"], "keep-alive");
    assert_eq!(value["parameters"], "ttl=1m min_workers=0");
    assert!(value["summary"]["max_wait_secs"].is_f64());
    assert!(value["memory_limit_bytes"].is_null());
}

#[test]
fn a_chain_is_labelled_with_each_member_and_its_parameters() {
    let registry = PolicyRegistry::new();
    let config = Config::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/memory-pressure.toml"),
        &registry,
    )
    .unwrap();
    let run = simulate(
        &config,
        &registry,
        &config.policy,
        &Trace::scenario5(),
        &SimOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(run.policy, "chain(memory-pressure+gradual-lru)");
    assert!(
        run.parameters
            .starts_with("memory-pressure high=0.9 low=0.8 limit=16GiB"),
        "{}",
        run.parameters
    );
    assert!(
        run.parameters
            .ends_with(" + gradual-lru idle=5m step=1m min_workers=0"),
        "{}",
        run.parameters
    );
    assert!(run.label().starts_with("chain(memory-pressure high="));
    assert_eq!(run.memory_limit_bytes, Some(16 << 30));
}

#[test]
fn the_events_flag_lists_the_timeline() {
    let count = |args: &[&str]| {
        let output = poolwarden(args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines()
            .filter(|l| l.trim_start().starts_with("0:") && l.contains(" idle "))
            .count()
    };
    assert_eq!(count(&["simulate"]), 0);
    assert_eq!(count(&["simulate", "--events"]), 4);
    assert_eq!(count(&["simulate", "--events", "all"]), 4);
    assert_eq!(count(&["simulate", "--events", "2"]), 2);
    let bad = poolwarden(&["simulate", "--events", "some"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected `all` or a number"));
}
