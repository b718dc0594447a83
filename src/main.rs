//! The `poolwarden` command: `check` a config, `simulate` a policy against traffic. The whole
//! command lives in the library ([`poolwarden::cli`]), so that a service can run it with its own
//! policy registry.

fn main() -> std::process::ExitCode {
    poolwarden::cli::main_with_registry(poolwarden::PolicyRegistry::new())
}
