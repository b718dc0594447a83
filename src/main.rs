//! The `poolwarden` command: `check` a config, `simulate` a policy against traffic.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
