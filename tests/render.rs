//! Every chart the examples and the README produce, rendered with resvg: the SVG must parse
//! and render, no legend, title, heading or table may overlap a plot area (comparing the boxes
//! the renderer reports for each element's id), and on the charts of several policies every
//! policy's line stays visible.
//!
//! `POOLWARDEN_WRITE_DOCS=1 cargo test --test render` also writes the README's PNGs
//! (`docs/scenario5.png`, `docs/conv.png`) from these very renderings, and
//! `POOLWARDEN_RENDER_DIR=DIR` writes every rendering to DIR, to look at.

#[path = "common/svg_layout.rs"]
mod svg_layout;

use std::path::{Path, PathBuf};
use std::process::Command;

use poolwarden::sim::{pareto_svg, ParetoPoint};
use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg;
use svg_layout::{options, Box2};

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("poolwarden-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `poolwarden simulate ARGS --svg FILE` and returns the SVG.
fn simulate_svg(name: &str, args: &[&str]) -> String {
    let svg = temp_dir().join(format!("{name}.svg"));
    let output = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .arg("simulate")
        .args(args)
        .arg("--svg")
        .arg(&svg)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run poolwarden");
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(&svg).unwrap()
}

fn box_of(tree: &usvg::Tree, id: &str) -> Option<Box2> {
    Some(Box2::from(tree.node_by_id(id)?.abs_bounding_box()))
}

/// The ids of the elements that must not overlap a plot: titles, legend, headings, notes,
/// the table.
fn label_ids(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).expect("well-formed SVG");
    document
        .descendants()
        .filter_map(|n| n.attribute("id"))
        .filter(|id| !id.starts_with("plot-"))
        .map(str::to_string)
        .collect()
}

fn plot_ids(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).expect("well-formed SVG");
    document
        .descendants()
        .filter_map(|n| n.attribute("id"))
        .filter(|id| id.starts_with("plot-"))
        .map(str::to_string)
        .collect()
}

/// Parses and renders `svg`, checks the layout, and returns the rendering.
fn render_and_check(name: &str, svg: &str) -> (usvg::Tree, Pixmap) {
    let tree = usvg::Tree::from_str(svg, &options())
        .unwrap_or_else(|e| panic!("{name}: invalid SVG: {e}"));
    let size = tree.size().to_int_size();
    let mut pixmap = Pixmap::new(size.width(), size.height()).expect("a canvas");
    resvg::render(&tree, Transform::default(), &mut pixmap.as_mut());
    if let Some(dir) = std::env::var_os("POOLWARDEN_RENDER_DIR") {
        pixmap
            .save_png(Path::new(&dir).join(format!("{name}.png")))
            .unwrap();
    }

    let title = box_of(&tree, "title").unwrap_or_else(|| {
        panic!("{name}: the title was not rendered: no font found (install DejaVu Sans, e.g. Debian's fonts-dejavu-core)")
    });
    assert!(title.right > title.left, "{name}: an empty title");

    let plots: Vec<(String, Box2)> = plot_ids(svg)
        .into_iter()
        .map(|id| {
            let b = box_of(&tree, &id).unwrap_or_else(|| panic!("{name}: no box for {id}"));
            (id, b)
        })
        .collect();
    assert!(!plots.is_empty(), "{name}: no plot area");
    let labels: Vec<(String, Box2)> = label_ids(svg)
        .into_iter()
        .filter_map(|id| box_of(&tree, &id).map(|b| (id, b)))
        .collect();
    assert!(
        labels.iter().any(|(id, _)| id == "legend") || !svg.contains("id=\"legend\""),
        "{name}: the legend was dropped"
    );
    let canvas = Box2 {
        left: 0.0,
        top: 0.0,
        right: size.width() as f32,
        bottom: size.height() as f32,
    };
    for (id, label) in &labels {
        for (plot_id, plot) in &plots {
            assert!(
                !label.overlaps(plot),
                "{name}: {id} {label:?} overlaps {plot_id} {plot:?}"
            );
        }
        assert!(
            label.left >= canvas.left
                && label.top >= canvas.top
                && label.right <= canvas.right
                && label.bottom <= canvas.bottom,
            "{name}: {id} {label:?} leaves the canvas {canvas:?}"
        );
    }
    for (i, (a, box_a)) in labels.iter().enumerate() {
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
    (tree, pixmap)
}

/// Pixels inside `area` within a small distance of `colour` (`#RRGGBB`).
fn pixels_of(pixmap: &Pixmap, area: Box2, colour: &str) -> usize {
    let hex = |i: usize| u8::from_str_radix(&colour[i..i + 2], 16).unwrap();
    let (r, g, b) = (hex(1), hex(3), hex(5));
    let mut count = 0;
    for y in area.top.max(0.0) as u32..(area.bottom as u32).min(pixmap.height()) {
        for x in area.left.max(0.0) as u32..(area.right as u32).min(pixmap.width()) {
            if let Some(p) = pixmap.pixel(x, y) {
                let d = (i32::from(p.red()) - i32::from(r)).abs()
                    + (i32::from(p.green()) - i32::from(g)).abs()
                    + (i32::from(p.blue()) - i32::from(b)).abs();
                if d < 40 {
                    count += 1;
                }
            }
        }
    }
    count
}

/// The stroke colours of the polylines in plot `index`'s panel, in drawing order.
fn series_colours(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).unwrap();
    let mut colours: Vec<String> = Vec::new();
    for node in document
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
    {
        let c = node.attribute("stroke").unwrap().to_string();
        if !colours.contains(&c) {
            colours.push(c);
        }
    }
    colours
}

/// Every series' colour shows in the first plot: no line hides another.
fn assert_every_line_visible(name: &str, svg: &str, tree: &usvg::Tree, pixmap: &Pixmap) {
    let plot = box_of(tree, "plot-0").unwrap();
    let colours = series_colours(svg);
    assert!(colours.len() >= 2, "{name}: {colours:?}");
    for colour in colours {
        let seen = pixels_of(pixmap, plot, &colour);
        assert!(
            seen > 40,
            "{name}: the {colour} line shows in {seen} pixels only"
        );
    }
}

fn write_doc(name: &str, pixmap: &Pixmap) {
    if std::env::var_os("POOLWARDEN_WRITE_DOCS").is_some() {
        let path = manifest(&format!("docs/{name}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        pixmap.save_png(&path).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

fn conv() -> Option<String> {
    let path = manifest("../shared/traces/azure-llm-2023/conv.csv");
    path.exists().then(|| path.to_str().unwrap().to_string())
}

#[test]
fn scenario5_with_three_policies_renders_and_keeps_every_line_visible() {
    let svg = simulate_svg(
        "scenario5",
        &[
            "--config",
            "config/scenario5.toml",
            "--policy",
            "gradual-lru",
            "--policy",
            "keep-alive",
            "--policy",
            "noop",
        ],
    );
    let (tree, pixmap) = render_and_check("scenario5", &svg);
    assert_every_line_visible("scenario5", &svg, &tree, &pixmap);
    assert!(svg.contains("trace scenario5, config config/scenario5.toml"));
    assert!(tree.node_by_id("table").is_some(), "a summary table");
    // The memory panel (4 GiB per worker) comes after the workers panel.
    assert!(tree.node_by_id("plot-1").is_some());
    write_doc("scenario5", &pixmap);
}

#[test]
fn the_default_run_renders() {
    let svg = simulate_svg("default", &[]);
    let (tree, _) = render_and_check("default", &svg);
    // One policy: no table; no memory configured: no memory panel, and a note saying so.
    assert!(tree.node_by_id("table").is_none());
    assert!(tree.node_by_id("plot-1").is_none());
    assert!(tree.node_by_id("memory-note").is_some());
}

#[test]
fn the_conv_comparison_renders_and_shows_the_scale_down() {
    let Some(conv) = conv() else {
        eprintln!("skipped: ../shared/traces is not present");
        return;
    };
    let svg = simulate_svg(
        "conv",
        &[
            "--config",
            "config/llm-serving.toml",
            "--trace",
            &conv,
            "--format",
            "azure-llm",
            "--policy",
            "gradual-lru",
            "--policy",
            "keep-alive",
            "--policy",
            "noop",
        ],
    );
    let (tree, pixmap) = render_and_check("conv", &svg);
    assert_every_line_visible("conv", &svg, &tree, &pixmap);
    // The scale-down (0:59:30 to 1:03:30 of a 1:03:30 window) lies in the last tenth of the
    // plot: there, the gradual-lru line (the first colour) reaches the bottom while noop stays.
    let plot = box_of(&tree, "plot-0").unwrap();
    let end = Box2 {
        left: plot.left + (plot.right - plot.left) * 0.9,
        ..plot
    };
    let colours = series_colours(&svg);
    for colour in &colours {
        assert!(
            pixels_of(&pixmap, end, colour) > 10,
            "{colour} is not visible during the scale-down"
        );
    }
    // The memory panel draws the 80 GiB limit.
    assert!(svg.contains("limit 80.0 GiB"), "no limit line");
    write_doc("conv", &pixmap);
}

#[test]
fn several_pools_many_keys_and_a_long_window_render() {
    // Three pools, one of them with nine keys; bursts over eight hours.
    let mut trace = String::from("at,model,duration,pool\n");
    for hour in 0..8u32 {
        for k in 0..9u32 {
            for i in 0..(k + 1) {
                let at = hour * 3600 + k * 60 + i;
                trace.push_str(&format!("{at},model-{k},{},text\n", 30 + i));
            }
        }
        trace.push_str(&format!("{},clip,20,image\n", hour * 3600 + 100));
        trace.push_str(&format!(
            "{},\"we,ird\",20,\"we,ird pool\"\n",
            hour * 3600 + 200
        ));
    }
    let dir = temp_dir();
    let trace_path = dir.join("pools.csv");
    std::fs::write(&trace_path, trace).unwrap();
    let config = dir.join("pools.toml");
    std::fs::write(
        &config,
        r#"
[policy]
kind = "chain"
[[policy.policies]]
kind = "memory-pressure"
limit = "64GiB"
[[policy.policies]]
kind = "gradual-lru"
idle = "2m"
step = "1m"

[pools.text]
memory = "2GiB"
[pools.image]
memory = "3GiB"
[pools."we,ird pool"]
memory = "1GiB"
"#,
    )
    .unwrap();
    let svg = simulate_svg(
        "pools",
        &[
            "--config",
            config.to_str().unwrap(),
            "--trace",
            trace_path.to_str().unwrap(),
            "--policy",
            "gradual-lru",
            "--policy",
            "keep-alive",
        ],
    );
    let (tree, pixmap) = render_and_check("pools", &svg);
    assert!(svg.contains("the other 5 keys, summed"), "others panel");
    assert!(svg.contains("all pools: memory held"), "total memory panel");
    assert!(svg.contains("max per"), "a long window is drawn as maxima");
    assert!(svg.contains("we,ird pool / we,ird"));
    assert_every_line_visible("pools", &svg, &tree, &pixmap);
}

#[test]
fn the_pareto_chart_renders() {
    let points: Vec<ParetoPoint> = [
        ("noop", 12.0, 0.0),
        ("keep-alive ttl=1m min_workers=0", 1.5, 22.0),
        ("keep-alive ttl=5m min_workers=0", 3.2, 6.5),
        ("keep-alive ttl=10m min_workers=0", 4.1, 6.9),
        ("gradual-lru idle=1m step=1m min_workers=0", 2.0, 14.0),
        ("gradual-lru idle=5m step=1m min_workers=0", 3.0, 5.0),
        ("adaptive <target=p75 & \"more\">", 2.6, 4.0),
        ("broken <&>", f64::NAN, 1.0),
    ]
    .into_iter()
    .map(|(label, x, y)| ParetoPoint {
        label: label.to_string(),
        idle_worker_hours: x,
        key_cold_start_pct_p75: y,
        on_front: false,
    })
    .collect();
    let svg = pareto_svg("Policies on conv: idle memory against cold starts", &points);
    render_and_check("pareto", &svg);
    assert!(svg.contains("1 point(s) without a value left out"));
    assert!(svg.contains("adaptive &lt;target=p75 &amp; &quot;more&quot;&gt;"));
    let empty = pareto_svg("nothing", &[]);
    render_and_check("pareto-empty", &empty);
}
