//! The lean library: `poolwarden` with `default-features = false` (pool, scheduler, probes,
//! config) builds on at most 25 crates, itself included, and none of the CLI's.
//!
//! The count comes from `cargo tree -e normal --no-default-features`, run by the cargo that
//! runs this test, on the locked dependency graph.

use std::collections::BTreeSet;
use std::process::Command;

/// The README's promise.
const MOST_CRATES: usize = 25;

/// The crates a lean build compiles, by name.
fn lean_crates() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--locked",
            "-e",
            "normal",
            "--no-default-features",
            "-p",
            "poolwarden",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_lean_library_builds_on_at_most_25_crates_and_none_of_the_clis() {
    let crates = lean_crates();
    assert!(crates.contains("poolwarden"), "{crates:?}");
    assert!(crates.contains("poolwarden-policies"), "{crates:?}");
    assert!(
        crates.len() <= MOST_CRATES,
        "{} crates in the lean build, at most {MOST_CRATES}: {crates:?}",
        crates.len()
    );
    for heavy in [
        "clap",
        "indicatif",
        "plotters",
        "serde_json",
        "env_logger",
        "crossbeam-channel",
        "dashmap",
        "quanta",
        "metrics",
        "csv",
    ] {
        assert!(!crates.contains(heavy), "{heavy} is in the lean build");
    }
}

/// The README lists the lean build's crates: the list must be the real one.
#[test]
fn the_readme_lists_the_lean_crates() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- lean crates -->")
        .expect("the README has the lean crate list");
    let end = readme[start..]
        .find("<!-- /lean crates -->")
        .expect("the list ends")
        + start;
    let listed: BTreeSet<String> = readme[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert_eq!(listed, lean_crates());
}
