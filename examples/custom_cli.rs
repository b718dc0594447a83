//! A service's own `poolwarden` command: the operator CLI (`check`, `simulate`) with the
//! service's policies registered next to the built-ins, so that operators can validate and
//! simulate configs that use them.
//!
//! ```sh
//! cargo run --example custom_cli -- check examples/custom_cli.toml
//! cargo run --example custom_cli -- simulate --config examples/custom_cli.toml \
//!     --policy learned-keep-alive --policy gradual-lru
//! ```

#[path = "support/learned_keep_alive.rs"]
mod learned_keep_alive;

use std::process::ExitCode;

use poolwarden::PolicyRegistry;

fn main() -> ExitCode {
    let mut registry = PolicyRegistry::new();
    learned_keep_alive::register(&mut registry);
    poolwarden::cli::main_with_registry(registry)
}
