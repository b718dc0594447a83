//! The `poolwarden` command: `check` a config, `simulate` a policy against traffic. The whole
//! command lives in the library ([`poolwarden::cli`]), so that a service can run it with its own
//! policy registry; it installs a logger (`RUST_LOG`, default `info`) and exits with a sysexits
//! status (`poolwarden --help` lists them).

fn main() -> std::process::ExitCode {
    poolwarden::cli::main_with_registry(poolwarden::PolicyRegistry::new())
}
