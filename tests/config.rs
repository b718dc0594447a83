//! Definition of done 6 of the core issue: presets load, malformed configs give located errors.

use std::path::Path;

use poolwarden::config::{Config, ConfigError, PolicyRegistry, DEFAULT_TOML};

fn presets() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn malformed() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
    files.sort();
    files
}

#[test]
fn every_preset_loads_and_builds_its_policies() {
    let registry = PolicyRegistry::new();
    let files = presets();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let config =
            Config::load(&file, &registry).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        config.default_policy(&registry).unwrap();
        for pool in config.pools.values() {
            if let Some(policy) = &pool.policy {
                policy.build(&registry).unwrap();
            }
        }
    }
}

#[test]
fn the_embedded_default_is_gradual_lru_with_one_minute_idle_and_step() {
    let registry = PolicyRegistry::new();
    let config = Config::embedded_default(&registry).unwrap();
    assert_eq!(config.scheduler.tick, std::time::Duration::from_secs(1));
    assert_eq!(config.policy.kind, "gradual-lru");
    assert_eq!(
        config.policy.describe(&registry),
        "gradual-lru idle=1m step=1m min_workers=0"
    );
    assert!(DEFAULT_TOML.contains("gradual-lru"));
}

#[test]
fn every_malformed_config_gives_a_located_error_naming_its_key() {
    let registry = PolicyRegistry::new();
    let files = malformed();
    assert!(files.len() >= 15);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected_key = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect-key:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{} has no expect-key line", file.display()));
        let error = Config::load(&file, &registry)
            .err()
            .unwrap_or_else(|| panic!("{} loaded but is malformed", file.display()));
        let ConfigError::Invalid {
            file: f,
            line,
            column,
            key,
            message,
        } = &error
        else {
            panic!("{}: not located: {error}", file.display());
        };
        assert_eq!(f, &file.display().to_string());
        assert!(*line >= 2 && *column >= 1, "{}: {error}", file.display());
        assert!(*line <= text.lines().count(), "{}: {error}", file.display());
        assert_eq!(key, expected_key, "{}: {error}", file.display());
        assert!(!message.is_empty());
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("{}:{line}:{column}: ", file.display())),
            "{shown}"
        );
    }
}

#[test]
fn an_unknown_kind_lists_the_known_kinds() {
    let registry = PolicyRegistry::new();
    let error = Config::from_toml("[policy]\nkind = \"lfu\"\n", "x.toml", &registry).unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.starts_with("x.toml:2:8: `policy.kind`: unknown policy kind `lfu`"),
        "{shown}"
    );
    for kind in [
        "chain",
        "gradual-lru",
        "keep-alive",
        "max-lifetime",
        "memory-pressure",
        "noop",
    ] {
        assert!(shown.contains(kind), "{shown}");
    }
}

#[test]
fn unreadable_files_and_binary_garbage_are_errors_not_panics() {
    let registry = PolicyRegistry::new();
    let missing = Config::load("/nonexistent/poolwarden.toml", &registry).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
    assert!(missing
        .to_string()
        .starts_with("/nonexistent/poolwarden.toml: "));
    let garbage = Config::from_bytes(
        b"[scheduler]\ntick = \"1s\"\n\xff\xfe\x00",
        "g.toml",
        &registry,
    )
    .unwrap_err();
    assert_eq!(garbage.position(), Some((3, 1)));
    assert!(Config::from_toml("", "empty.toml", &registry).is_ok());
}

#[test]
fn per_model_overrides_and_pool_policies_resolve() {
    let registry = PolicyRegistry::new();
    let text = r#"
[pools.text]
max_workers_per_model = 3
memory = "2GiB"
[pools.text.policy]
kind = "keep-alive"
ttl = "90s"
[pools.text.models.small]
ttl = "1h 30m"
min_workers = 1
memory = "512MiB"
cold_start = "3s"
"#;
    let config = Config::from_toml(text, "o.toml", &registry).unwrap();
    let pool = &config.pools["text"];
    assert_eq!(pool.max_workers_per_model, 3);
    assert_eq!(pool.memory_of("small"), 512 << 20);
    assert_eq!(pool.memory_of("other"), 2 << 30);
    assert_eq!(
        pool.cold_start_of("small"),
        std::time::Duration::from_secs(3)
    );
    let small = &pool.models["small"];
    assert_eq!(
        small.overrides.ttl,
        Some(std::time::Duration::from_secs(5400))
    );
    assert_eq!(small.overrides.idle, None);
    assert_eq!(small.overrides.min_workers, Some(1));
    assert_eq!(
        pool.policy.as_ref().unwrap().describe(&registry),
        "keep-alive ttl=1m 30s min_workers=0"
    );
    // No [policy]: the default is gradual-lru with its defaults.
    assert_eq!(config.policy.kind, "gradual-lru");
}
