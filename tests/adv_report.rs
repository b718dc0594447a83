//! Adversarial tests of `poolwarden simulate`'s reports, written as an operator would use the
//! command: hostile names, many pools and keys, extreme windows, many policies, budgets on some
//! pools only, and the consistency of text, JSON and CSV for one run.

#[path = "common/bin.rs"]
mod bin;
#[path = "common/svg_layout.rs"]
mod svg_layout;

use std::path::{Path, PathBuf};

use bin::poolwarden;
use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg;
use svg_layout::{options, Box2};

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolwarden-advrep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(name: &str, text: &str) -> String {
    let path = temp_dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn ok(args: &[&str]) -> String {
    let out = poolwarden(args);
    assert!(
        out.status.success(),
        "{args:?}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `simulate ARGS --svg FILE` and returns (stdout, svg).
fn simulate_svg(name: &str, args: &[&str]) -> (String, String) {
    let svg = temp_dir().join(format!("{name}.svg"));
    let mut all: Vec<&str> = vec!["simulate"];
    all.extend_from_slice(args);
    all.push("--svg");
    all.push(svg.to_str().unwrap());
    let text = ok(&all);
    (text, std::fs::read_to_string(&svg).unwrap())
}

fn json(args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = vec!["simulate"];
    all.extend_from_slice(args);
    all.push("--json");
    let text = ok(&all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"))
}

/// Every text node's box, with its text.
fn text_boxes(group: &usvg::Group, out: &mut Vec<(String, Box2)>) {
    for node in group.children() {
        match node {
            usvg::Node::Group(g) => text_boxes(g, out),
            usvg::Node::Text(t) => {
                let text: String = t.chunks().iter().map(|c| c.text()).collect();
                out.push((text, Box2::from(node.abs_bounding_box())));
            }
            _ => {}
        }
    }
}

/// Parses and renders the SVG; checks: well-formed XML, no NaN/inf in any attribute, every
/// labelled element (titles, legend, headings, table) apart from every plot and from each
/// other, and every text inside the canvas.
fn check_svg(name: &str, svg: &str) -> usvg::Tree {
    if let Some(dir) = std::env::var_os("ADV_RENDER_DIR") {
        std::fs::write(Path::new(&dir).join(format!("{name}.svg")), svg).unwrap();
    }
    let document = roxmltree::Document::parse(svg)
        .unwrap_or_else(|e| panic!("{name}: not well-formed XML: {e}"));
    for node in document.descendants() {
        for attr in node.attributes() {
            let v = attr.value().to_ascii_lowercase();
            assert!(
                !v.contains("nan") && !v.contains("inf"),
                "{name}: {}={} on <{}>",
                attr.name(),
                attr.value(),
                node.tag_name().name()
            );
        }
    }
    let ids: Vec<String> = document
        .descendants()
        .filter_map(|n| n.attribute("id"))
        .map(str::to_string)
        .collect();
    let tree = usvg::Tree::from_str(svg, &options())
        .unwrap_or_else(|e| panic!("{name}: invalid SVG: {e}"));
    let size = tree.size().to_int_size();
    let mut pixmap = Pixmap::new(size.width(), size.height()).expect("a canvas");
    resvg::render(&tree, Transform::default(), &mut pixmap.as_mut());
    let canvas = Box2 {
        left: 0.0,
        top: 0.0,
        right: size.width() as f32,
        bottom: size.height() as f32,
    };
    let boxes: Vec<(String, Box2)> = ids
        .iter()
        .filter_map(|id| {
            tree.node_by_id(id)
                .map(|n| (id.clone(), Box2::from(n.abs_bounding_box())))
        })
        .collect();
    let (plots, labels): (Vec<_>, Vec<_>) =
        boxes.iter().partition(|(id, _)| id.starts_with("plot-"));
    assert!(
        tree.node_by_id("title").is_some(),
        "{name}: no title rendered"
    );
    for (i, (a, box_a)) in labels.iter().enumerate() {
        for (p, box_p) in &plots {
            assert!(
                !box_a.overlaps(box_p),
                "{name}: {a} {box_a:?} overlaps {p} {box_p:?}"
            );
        }
        for (b, box_b) in &labels[i + 1..] {
            assert!(
                !box_a.overlaps(box_b),
                "{name}: {a} {box_a:?} overlaps {b} {box_b:?}"
            );
        }
    }
    for (i, (a, box_a)) in plots.iter().enumerate() {
        for (b, box_b) in &plots[i + 1..] {
            assert!(!box_a.overlaps(box_b), "{name}: {a} overlaps {b}");
        }
    }
    let mut texts = Vec::new();
    text_boxes(tree.root(), &mut texts);
    for (text, b) in &texts {
        assert!(
            b.left >= canvas.left - 0.5
                && b.top >= canvas.top - 0.5
                && b.right <= canvas.right + 0.5
                && b.bottom <= canvas.bottom + 0.5,
            "{name}: text {text:?} {b:?} leaves the canvas {canvas:?}"
        );
    }
    tree
}

/// The x-axis tick labels: texts that read as `a:bb` (h:mm or m:ss, maybe with tenths).
fn time_labels(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).unwrap();
    document
        .descendants()
        .filter(|n| n.tag_name().name() == "text")
        .filter_map(|n| n.text())
        .filter(|t| {
            let mut parts = t.split(':');
            let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                return false;
            };
            !a.is_empty()
                && a.chars().all(|c| c.is_ascii_digit())
                && b.len() >= 2
                && b.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(str::to_string)
        .collect()
}

/// (stroke, dash) of each policy's series, in order of first appearance.
fn series_styles(svg: &str) -> Vec<(String, String)> {
    let document = roxmltree::Document::parse(svg).unwrap();
    let mut styles: Vec<(String, String)> = Vec::new();
    for node in document
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
    {
        let style = (
            node.attribute("stroke").unwrap_or("").to_string(),
            node.attribute("stroke-dasharray").unwrap_or("").to_string(),
        );
        if !styles.contains(&style) {
            styles.push(style);
        }
    }
    styles
}

const HOSTILE: &str = "<b>&amp; \"q\" 'a' ünïcødé 模型 🚀";

#[test]
fn many_pools_many_keys_and_hostile_names_render_cleanly() {
    // 11 pools; pool p0 has 120 keys; names with XML specials, unicode and 150 wide letters.
    // Long names of average-width letters (wide letters: see `a_long_title_stays_inside_the_image`).
    let long = "pool-name-".repeat(15);
    let pools: Vec<String> = (0..11)
        .map(|i| match i {
            0 => "p0".to_string(),
            1 => format!("{HOSTILE} pool"),
            2 => long.clone(),
            _ => format!("pool-{i}"),
        })
        .collect();
    let mut config =
        String::from("[policy]\nkind = \"gradual-lru\"\nidle = \"1m\"\nstep = \"1m\"\n");
    for p in &pools {
        config.push_str(&format!("[pools.{}]\nmemory = \"1GiB\"\n", toml_key(p)));
    }
    let mut trace = String::from("at,pool,model,duration\n");
    for k in 0..120 {
        trace.push_str(&format!("{},p0,key-{k},{}\n", k, 5 + k % 7));
    }
    for (i, p) in pools.iter().enumerate().skip(1) {
        let model = if i == 1 {
            HOSTILE.to_string()
        } else if i == 2 {
            format!("{long}-model")
        } else {
            format!("m{i}")
        };
        trace.push_str(&format!(
            "{},{},{},30\n",
            i * 10,
            csv_field(p),
            csv_field(&model)
        ));
    }
    let config = write("hostile.toml", &config);
    let trace = write(&format!("{HOSTILE} {long}.csv").replace('/', "_"), &trace);
    let (_, svg) = simulate_svg(
        "hostile",
        &[
            "--config",
            &config,
            "--trace",
            &trace,
            "--policy",
            "gradual-lru",
            "--policy",
            "keep-alive:ttl=2m",
        ],
    );
    check_svg("hostile", &svg);
    assert!(
        svg.contains("the other 116 keys, summed"),
        "others panel for 120 keys"
    );
    assert!(svg.contains("&lt;b&gt;&amp;amp;"), "escaped names");
}

fn toml_key(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn csv_field(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[test]
fn a_long_title_stays_inside_the_image() {
    // A trace whose name is long and made of wide letters: the title must be cut to fit.
    let name = format!("{}.csv", "W".repeat(120));
    let trace = write(&name, "at,model,duration\n0,m,1\n");
    let (_, svg) = simulate_svg("long-title", &["--trace", &trace]);
    check_svg("long-title", &svg);
}

#[test]
fn a_long_cjk_model_name_stays_inside_the_image() {
    // Full-width characters are about twice as wide as the estimate of a Latin letter.
    let model = "模".repeat(80);
    let trace = write("cjk.csv", &format!("at,model,duration\n0,{model},1\n"));
    let (_, svg) = simulate_svg("cjk", &["--trace", &trace]);
    check_svg("cjk", &svg);
}

#[test]
fn a_one_second_window_reads_as_minutes_and_seconds() {
    let trace = write("one-second.csv", "at,model,duration\n0,m,0.5\n");
    let (text, svg) = simulate_svg("one-second", &["--trace", &trace, "--until", "1s"]);
    check_svg("one-second", &svg);
    let labels = time_labels(&svg);
    assert!(labels.len() >= 2, "time ticks: {labels:?}");
    for l in &labels {
        let minutes: u32 = l.split(':').next().unwrap().parse().unwrap();
        assert_eq!(minutes, 0, "m:ss labels for a 1 s window: {labels:?}");
    }
    assert!(text.contains("window 0:00:00 to 0:00:01"), "{text}");
}

#[test]
fn a_single_request_renders() {
    let trace = write("single.csv", "at,model,duration\n0,m,1\n");
    let (text, svg) = simulate_svg("single", &["--trace", &trace]);
    check_svg("single", &svg);
    assert!(text.starts_with("trace single"), "{text}");
    let v = json(&["--trace", &trace]);
    let s = &v["policies"][0]["summary"];
    assert_eq!(s["requests"], 1);
    assert_eq!(s["cold_starts"], 1);
    assert_eq!(s["spawns"], 1);
}

#[test]
fn a_thirty_day_window_is_drawn_as_maxima_in_hours() {
    let day = 86_400u64;
    let mut trace = String::from("at,model,duration\n");
    for d in 0..=30 {
        trace.push_str(&format!("{},m,60\n", d * day));
        trace.push_str(&format!("{},n,600\n", d * day + 3600));
    }
    let trace = write("month.csv", &trace);
    let (text, svg) = simulate_svg(
        "month",
        &[
            "--trace",
            &trace,
            "--policy",
            "gradual-lru",
            "--policy",
            "noop",
        ],
    );
    check_svg("month", &svg);
    assert!(svg.contains("max per"), "a long window drawn as maxima");
    let labels = time_labels(&svg);
    assert!(labels.len() >= 2, "{labels:?}");
    // h:mm: the last label is hundreds of hours.
    let hours: Vec<u32> = labels
        .iter()
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert!(hours.iter().any(|h| *h >= 600), "{labels:?}");
    assert!(text.contains("window 0:00:00 to 7"), "{text}");
    // Worker ticks are whole numbers.
    let document = roxmltree::Document::parse(&svg).unwrap();
    for t in document
        .descendants()
        .filter(|n| n.tag_name().name() == "text")
        .filter_map(|n| n.text())
    {
        assert!(!t.ends_with(".5"), "a fractional tick {t}");
    }
}

#[test]
fn zero_workers_ever_renders_and_reports_finite_numbers() {
    // A model bigger than its pool's budget never loads: every request is rejected.
    let config = write(
        "never.toml",
        "[budgets.gpu]\nlimit = \"1GiB\"\n[pools.default]\nbudget = \"gpu\"\nmemory = \"2GiB\"\n",
    );
    let trace = write("never.csv", "at,model,duration\n0,m,1\n5,m,1\n");
    let (text, svg) = simulate_svg("never", &["--config", &config, "--trace", &trace]);
    check_svg("never", &svg);
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    let v = json(&["--config", &config, "--trace", &trace]);
    let s = &v["policies"][0]["summary"];
    assert_eq!(s["requests"], 2);
    assert_eq!(s["rejected"], 2);
    assert_eq!(s["spawns"], 0);
    assert_eq!(s["peak_workers"], 0);
}

#[test]
fn a_window_with_no_requests_has_finite_rates() {
    // --from after the last request: every rate is 0 of 0.
    let trace = write("late.csv", "at,model,duration\n0,m,1\n");
    let text = ok(&["simulate", "--trace", &trace, "--from", "30s"]);
    assert!(!text.contains("NaN"), "{text}");
    let v = json(&["--trace", &trace, "--from", "30s"]);
    let s = &v["policies"][0]["summary"];
    assert_eq!(s["requests"], 0);
    for key in [
        "key_cold_start_pct_p50",
        "key_cold_start_pct_p90",
        "mean_wait_secs",
    ] {
        assert!(s[key].is_number(), "{key}: {}", s[key]);
    }
    let (_, svg) = simulate_svg("late", &["--trace", &trace, "--from", "30s"]);
    check_svg("late", &svg);
}

const EIGHT: [&str; 8] = [
    "gradual-lru",
    "keep-alive:ttl=1m",
    "keep-alive:ttl=2m",
    "keep-alive:ttl=5m",
    "noop",
    "gradual-lru:idle=2m",
    "keep-alive:ttl=10m",
    "gradual-lru:idle=5m",
];

fn eight_policy_args(trace: &str) -> Vec<&str> {
    let mut args = vec!["--trace", trace];
    for p in EIGHT {
        args.push("--policy");
        args.push(p);
    }
    args
}

#[test]
fn eight_policies_keep_distinct_styles_and_labels() {
    let trace = write(
        "eight.csv",
        "at,model,duration\n0,m,10\n1,m,10\n2,m,10\n400,m,5\n",
    );
    let args = eight_policy_args(&trace);
    let (text, svg) = simulate_svg("eight", &args);
    // The layout of 8 policies: see `five_policies_summary_table_fits_the_image` (the table
    // runs off the image); here only the styles and labels.
    roxmltree::Document::parse(&svg).unwrap();
    let styles = series_styles(&svg);
    assert_eq!(styles.len(), 8, "one style per policy: {styles:?}");
    // The summary heading tells each keep-alive apart by its ttl.
    for ttl in ["ttl=1m", "ttl=2m", "ttl=5m", "ttl=10m"] {
        assert!(text.contains(ttl), "{ttl} missing from the heading");
    }
    assert!(text.contains("idle=2m") && text.contains("idle=5m"));
    let v = json(&args);
    let labels: Vec<String> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["policy"], p["parameters"]))
        .collect();
    let mut unique = labels.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "{labels:?}");
}

#[test]
fn five_policies_summary_table_fits_the_image() {
    let trace = write(
        "five.csv",
        "at,model,duration\n0,m,10\n1,m,10\n2,m,10\n400,m,5\n",
    );
    let mut args = vec!["--trace", trace.as_str()];
    for p in &EIGHT[..5] {
        args.push("--policy");
        args.push(p);
    }
    let (_, svg) = simulate_svg("five", &args);
    check_svg("five", &svg);
}

#[test]
fn eight_policies_have_eight_colours() {
    let trace = write("eight-c.csv", "at,model,duration\n0,m,10\n400,m,5\n");
    let args = eight_policy_args(&trace);
    let (_, svg) = simulate_svg("eight-c", &args);
    let mut colours: Vec<String> = series_styles(&svg).into_iter().map(|s| s.0).collect();
    colours.sort();
    colours.dedup();
    assert_eq!(colours.len(), 8, "{colours:?}");
}

#[test]
fn a_budget_on_some_pools_only_is_drawn_where_it_applies() {
    let config = write(
        "partial.toml",
        r#"
[policy]
kind = "chain"
[[policy.policies]]
kind = "memory-pressure"
limit = "64GiB"
[[policy.policies]]
kind = "gradual-lru"
idle = "1m"
step = "1m"

[budgets.gpu]
limit = "10GiB"

[pools.a]
budget = "gpu"
memory = "4GiB"
[pools.b]
memory = "2GiB"
"#,
    );
    let trace = write(
        "partial.csv",
        "at,pool,model,duration\n0,a,x,30\n0,a,y,30\n0,a,z,30\n5,b,u,30\n",
    );
    let (text, svg) = simulate_svg(
        "partial",
        &[
            "--config",
            &config,
            "--trace",
            &trace,
            "--policy",
            "gradual-lru",
            "--policy",
            "keep-alive",
        ],
    );
    check_svg("partial", &svg);
    assert!(svg.contains("budget 10.0 GiB"), "pool a's budget line");
    assert!(svg.contains("all pools: memory held"));
    assert_eq!(
        svg.matches("budget 10.0 GiB").count(),
        1,
        "only pool a has a budget"
    );
    assert!(text.contains("requests"));
}

#[test]
fn text_json_and_csv_agree_on_one_run() {
    let trace = write(
        "agree.csv",
        "at,pool,model,duration\n0,default,a,30\n1,default,a,30\n2,default,b,10\n200,default,a,5\n900,default,b,5\n",
    );
    let csv = temp_dir().join("agree-out.csv");
    let csv_s = csv.to_str().unwrap();
    let base = [
        "--trace",
        &trace,
        "--policy",
        "gradual-lru",
        "--policy",
        "keep-alive:ttl=1m",
    ];
    let mut text_args = vec!["simulate"];
    text_args.extend_from_slice(&base);
    text_args.extend_from_slice(&["--csv", csv_s]);
    let text = ok(&text_args);
    let v = json(&base);
    let policies = v["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);

    // Text rows: `requests`, `spawns`, `evictions`, `peak workers`, one column per policy.
    let row = |name: &str| -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no row {name}: {text}"));
        line[name.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    for (name, field) in [
        ("requests", "requests"),
        ("spawns", "spawns"),
        ("evictions", "evictions"),
        ("peak workers", "peak_workers"),
    ] {
        let cells = row(name);
        assert_eq!(cells.len(), 2, "{name}: {cells:?}");
        for (cell, p) in cells.iter().zip(policies) {
            assert_eq!(cell, &p["summary"][field].to_string(), "{name}");
        }
    }
    let cold = row("cold starts");
    for (i, p) in policies.iter().enumerate() {
        let s = &p["summary"];
        // JSON: evictions equals the events and the sum by reason.
        let events = p["events"].as_array().unwrap();
        assert_eq!(s["evictions"].as_u64().unwrap() as usize, events.len());
        let by_reason: u64 = s["evictions_by_reason"]
            .as_object()
            .unwrap()
            .values()
            .map(|x| x.as_u64().unwrap())
            .sum();
        assert_eq!(by_reason, s["evictions"].as_u64().unwrap());
        assert!(
            s["idle_worker_seconds"].as_f64().unwrap() <= s["worker_seconds"].as_f64().unwrap()
        );
        let idle_h = s["idle_worker_hours"].as_f64().unwrap();
        let idle_s = s["idle_worker_seconds"].as_f64().unwrap();
        assert!(
            (idle_h * 3600.0 - idle_s).abs() < 0.5 * 36.0,
            "{idle_h} h vs {idle_s} s"
        );
        // Text cold starts: `N (r %)`.
        let n_text = cold[i * 3].clone();
        assert_eq!(n_text, s["cold_starts"].to_string());
        for key in [
            "requests",
            "rejected",
            "cold_starts",
            "admission_waits",
            "spawns",
            "prewarm_spawns",
            "evictions",
            "evictions_by_reason",
            "worker_seconds",
            "idle_worker_hours",
            "idle_worker_seconds",
            "peak_workers",
            "peak_memory_bytes",
            "mean_wait_secs",
            "p99_wait_secs",
            "max_wait_secs",
            "key_cold_start_pct_p50",
            "key_cold_start_pct_p75",
            "key_cold_start_pct_p90",
        ] {
            assert!(!s[key].is_null(), "summary lacks {key}: {s}");
        }
    }
    let pareto = v["pareto"].as_array().unwrap();
    assert_eq!(pareto.len(), 2);
    assert!(pareto.iter().all(|p| p["on_front"].is_boolean()));
    assert!(pareto.iter().any(|p| p["on_front"] == true));

    // CSV: per policy, the most workers any key held is at most the peak (peak sums keys);
    // the peak over time of the per-policy sum of keys equals the JSON peak.
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
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
    for p in policies {
        let name = p["policy"].as_str().unwrap();
        let params = p["parameters"].as_str().unwrap();
        let mine: Vec<&csv::StringRecord> = rows
            .iter()
            .filter(|r| &r[0] == name && &r[1] == params)
            .collect();
        assert!(!mine.is_empty(), "no CSV rows for {name} {params}");
        // Replay the per-key steps to find the peak of their sum.
        let mut times: Vec<f64> = mine.iter().map(|r| r[4].parse().unwrap()).collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        let mut peak = 0u64;
        for t in &times {
            let mut total = 0u64;
            for key in ["a", "b"] {
                let last = mine
                    .iter()
                    .rfind(|r| &r[3] == key && r[4].parse::<f64>().unwrap() <= *t);
                total += last.map(|r| r[5].parse::<u64>().unwrap()).unwrap_or(0);
            }
            peak = peak.max(total);
        }
        assert_eq!(
            peak,
            p["summary"]["peak_workers"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn long_names_keep_the_event_columns_aligned() {
    let long_pool = format!("pool-{}", "x".repeat(60));
    let config = write(
        "aligned.toml",
        &format!("[pools.\"{long_pool}\"]\n[pools.s]\n"),
    );
    let trace = write(
        "aligned.csv",
        &format!(
            "at,pool,model,duration\n0,{long_pool},m,1\n0,s,{},1\n",
            "ü".repeat(40)
        ),
    );
    let text = ok(&[
        "simulate", "--config", &config, "--trace", &trace, "--events", "all",
    ]);
    // The event lines: each contains `idle`; their reason column starts at one char offset.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("0:") && l.contains(" idle "))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let col = |l: &str| {
        l.chars()
            .collect::<Vec<_>>()
            .windows(6)
            .position(|w| w.iter().collect::<String>() == " idle ")
    };
    assert_eq!(
        col(lines[0]),
        col(lines[1]),
        "unaligned:\n{}\n{}",
        lines[0],
        lines[1]
    );
}

#[test]
fn the_summary_comes_first_and_times_use_one_format() {
    let trace = write("fmt.csv", "at,model,duration\n0.25,m,1.5\n3700,m,2\n");
    let text = ok(&["simulate", "--trace", &trace]);
    let first_summary = text.find("summary").expect("a summary");
    assert!(text.find("requests").unwrap() > first_summary);
    assert!(text.contains("(--events lists the evictions"), "{text}");
    // The eviction count line is after the summary; the window heading uses h:mm:ss.
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("window 0:00:00 to 1:"),
        "{text}"
    );
}

#[test]
fn odd_options_fail_cleanly_with_documented_codes() {
    let trace = write("odd.csv", "at,model,duration\n0,m,1\n");
    for (args, code) in [
        (vec!["--events", "-1"], 64),
        (vec!["--until", "-5s"], 64),
        (vec!["--tick", "0s"], 64),
        (vec!["--policy", "keep-alive:ttl=banana"], 64),
        (vec!["--policy", "keep-alive:ttl="], 64),
        (vec!["--policy", ":"], 64),
    ] {
        let mut all = vec!["simulate", "--trace", &trace];
        all.extend(args.iter());
        let out = poolwarden(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") || stderr.contains("error:"),
            "{args:?}: {stderr}"
        );
        let got = out.status.code();
        assert!(
            got == Some(code) || got == Some(78),
            "{args:?}: exit {got:?}: {stderr}"
        );
    }
    // --from after --until, --until 0s, --events 0: run or fail cleanly, never panic.
    for args in [
        vec!["--from", "10s", "--until", "5s"],
        vec!["--until", "0s"],
        vec!["--events", "0"],
        vec!["--from", "1000000000s"],
    ] {
        let mut all = vec!["simulate", "--trace", &trace, "--json"];
        all.extend(args.iter());
        let out = poolwarden(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            matches!(out.status.code(), Some(0 | 64 | 65 | 78)),
            "{args:?}: {stderr}"
        );
        if out.status.success() {
            let text = String::from_utf8(out.stdout).unwrap();
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{args:?}: invalid JSON {e}: {text}"));
        }
    }
}
