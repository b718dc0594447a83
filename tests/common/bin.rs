//! Running the `poolwarden` CLI from a test: the binary, or in-process with a registry. For
//! test targets that require the `cli` feature (include it with
//! `#[path = "common/bin.rs"] mod bin;`).
#![allow(dead_code)]

use std::process::{Command, Output};

use poolwarden::cli::Exit;
use poolwarden::PolicyRegistry;

/// Runs the binary with `args` from the crate's root.
pub fn poolwarden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run poolwarden")
}

/// Runs the CLI in-process with `registry` and `input` on its standard input: (exit, stdout,
/// stderr).
pub fn run_in_process(
    args: &[&str],
    registry: &PolicyRegistry,
    input: &[u8],
) -> (Exit, String, String) {
    let mut argv = vec!["poolwarden"];
    argv.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = poolwarden::cli::run(argv, registry, &mut &input[..], &mut out, &mut err);
    (
        exit,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}
