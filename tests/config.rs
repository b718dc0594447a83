//! The configuration: presets load, malformed configs give located errors, every key applies
//! or is rejected, and a config builds the pools and the scheduler it describes.

#[path = "../examples/support/learned_keep_alive.rs"]
mod learned_keep_alive;

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use poolwarden::config::{
    BuildError, Config, ConfigError, PerModel, PolicyRegistry, PolicySpec, ValueSource,
    DEFAULT_TOML, MAX_CONFIG_BYTES,
};
use poolwarden::policies::{ByteSize, EvictionPolicy, Noop};
use poolwarden::sim::{simulate, SimOptions, Trace};
use poolwarden::{AcquireError, ManualClock, SpawnError, Worker};

struct Model;

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        1 << 20
    }
}

fn model(_key: &str) -> Result<Model, SpawnError> {
    Ok(Model)
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", &PolicyRegistry::new())
}

/// The located message of a config that must not load.
fn rejected(text: &str, registry: &PolicyRegistry) -> (String, String) {
    match Config::from_toml(text, "test.toml", registry) {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => (
            e.key()
                .unwrap_or_else(|| panic!("not located: {e}"))
                .to_string(),
            e.to_string(),
        ),
    }
}

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
    assert!(files.len() >= 50);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected_key = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect-key:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{} has no expect-key line", file.display()));
        let expected_message = text
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("# expect-message:"))
            .map(str::trim);
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
        if let Some(expected) = expected_message {
            assert!(
                message.contains(expected),
                "{}: expected `{expected}` in: {error}",
                file.display()
            );
        }
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

// ---- From config to a running system ----

#[test]
fn pool_builder_applies_every_key_of_the_pool_section() {
    let config = load(
        r#"
[pools.text]
max_workers_per_model = 2
max_in_flight_per_worker = 3
acquire_timeout = "50ms"
"#,
    )
    .unwrap();
    let pool = config.pool_builder("text", model).unwrap().build();
    // Three requests share one worker, the fourth spawns the second, six fill both.
    let mut leases: Vec<_> = (0..3).map(|_| pool.acquire("m").unwrap()).collect();
    assert_eq!(pool.workers("m"), 1);
    leases.extend((0..3).map(|_| pool.acquire("m").unwrap()));
    assert_eq!(pool.workers("m"), 2);
    // The seventh waits for the configured 50 ms, not the default 30 s.
    match pool.acquire("m") {
        Err(AcquireError::Timeout { waited, .. }) => {
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
            assert!(waited < Duration::from_secs(20), "{waited:?}");
        }
        other => panic!("expected a timeout, got {:?}", other.map(|_| ())),
    }
    drop(leases);
}

#[test]
fn a_pool_missing_from_the_config_is_a_clear_error() {
    let config = load("[pools.text]\n[pools.vision]\n").unwrap();
    let error = config.pool_builder("audio", model).err().unwrap();
    assert_eq!(
        error,
        BuildError::UnknownPool {
            pool: "audio".into(),
            config: "test.toml".into(),
            known: vec!["text".into(), "vision".into()],
        }
    );
    assert_eq!(
        error.to_string(),
        "test.toml has no pool `audio` (its pools: text, vision)"
    );
    assert!(config.pool_policy("audio", &PolicyRegistry::new()).is_err());
}

/// Ticks `scheduler` once a second from `from` to `to` (inclusive) and returns each eviction
/// as (second, pool, key).
fn tick_through(
    clock: &ManualClock,
    scheduler: &poolwarden::Scheduler,
    from: u64,
    to: u64,
) -> Vec<(u64, String, String)> {
    let mut seen = Vec::new();
    for second in from..=to {
        clock.set(Duration::from_secs(second));
        for event in scheduler.tick_once().evictions {
            seen.push((second, event.pool.to_string(), event.key.to_string()));
        }
    }
    seen
}

#[test]
fn the_scheduler_from_config_has_the_tick_the_default_and_each_pools_own_policy() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        r#"
[scheduler]
tick = "2s"

[policy]
kind = "gradual-lru"
idle = "1m"
step = "1m"

[pools.text]
[pools.text.models.slow]
idle = "5m"

[pools.vision.policy]
kind = "keep-alive"
ttl = "30s"
"#,
        "two.toml",
        &registry,
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new());
    let text = config
        .pool_builder("text", model)
        .unwrap()
        .clock(clock.clone())
        .build();
    let vision = config
        .pool_builder("vision", model)
        .unwrap()
        .clock(clock.clone())
        .build();
    let scheduler = config
        .scheduler_builder(&registry)
        .unwrap()
        .clock(clock.clone())
        .build();
    assert_eq!(scheduler.tick_interval(), Duration::from_secs(2));
    scheduler.register(&text).unwrap();
    scheduler.register(&vision).unwrap();
    assert_eq!(
        scheduler.register(&text),
        Err(BuildError::AlreadyRegistered {
            pool: "text".into()
        })
    );
    let stranger = poolwarden::Pool::builder("audio", model).build();
    assert!(matches!(
        scheduler.register(&stranger),
        Err(BuildError::UnknownPool { .. })
    ));

    for (pool, key) in [(&text, "fast"), (&text, "slow"), (&vision, "v")] {
        drop(pool.acquire(key).unwrap());
    }
    let evictions = tick_through(&clock, &scheduler, 0, 400);
    let expected = [
        // vision: its own keep-alive, 30 s.
        (30, "vision".to_string(), "v".to_string()),
        // text: the default gradual-lru, 1 m; `slow` has its own idle of 5 m.
        (60, "text".to_string(), "fast".to_string()),
        (300, "text".to_string(), "slow".to_string()),
    ];
    assert_eq!(evictions, expected);
}

// ---- Every key applies or is rejected ----

#[test]
fn a_per_model_key_the_pools_policy_does_not_read_is_rejected_with_what_it_reads() {
    let registry = PolicyRegistry::new();
    let (key, shown) = rejected(
        "[pools.text.policy]\nkind = \"keep-alive\"\n[pools.text.models.llama]\nidle = \"30s\"\n",
        &registry,
    );
    assert_eq!(key, "pools.text.models.llama.idle");
    assert!(
        shown.starts_with("test.toml:4:1: `pools.text.models.llama.idle`: pool `text` uses keep-alive, which reads `ttl`"),
        "{shown}"
    );

    let (key, shown) = rejected("[pools.text.models.m]\nttl = \"10m\"\n", &registry);
    assert_eq!(key, "pools.text.models.m.ttl");
    assert!(
        shown.contains("pool `text` uses gradual-lru (the default policy), which reads `idle`, `step` and `min_workers`"),
        "{shown}"
    );
    // Another pool under keep-alive takes `ttl`: the rule is per pool.
    load(
        r#"
[pools.text.models.m]
idle = "10m"
[pools.chat.policy]
kind = "keep-alive"
[pools.chat.models.m]
ttl = "10m"
"#,
    )
    .unwrap();
}

#[test]
fn in_a_chain_a_key_counts_as_read_when_any_member_reads_it() {
    let config = load(
        r#"
[policy]
kind = "chain"
[[policy.policies]]
kind = "keep-alive"
ttl = "10m"
[[policy.policies]]
kind = "gradual-lru"
[pools.text.models.m]
ttl = "1m"
idle = "2m"
"#,
    )
    .unwrap();
    let overrides = config.pools["text"].models["m"].overrides;
    assert_eq!(overrides.ttl, Some(Duration::from_secs(60)));
    assert_eq!(overrides.idle, Some(Duration::from_secs(120)));

    let (key, shown) = rejected(
        "[policy]\nkind = \"chain\"\npolicies = [{ kind = \"memory-pressure\" }, { kind = \"max-lifetime\" }]\n[pools.text.models.m]\nmin_workers = 1\n",
        &PolicyRegistry::new(),
    );
    assert_eq!(key, "pools.text.models.m.min_workers");
    assert!(shown.contains("which reads no per-model key"), "{shown}");
}

#[test]
fn a_per_model_override_changes_what_the_policy_does() {
    // Scenario 5 under gradual-lru: the first eviction at 6:00 (idle 1m after 5:00); with a
    // per-model idle of 2m, at 7:00.
    let registry = PolicyRegistry::new();
    let first_eviction = |text: &str| {
        let config = Config::from_toml(text, "s5.toml", &registry).unwrap();
        let run = simulate(
            &config,
            &registry,
            &config.policy,
            &Trace::scenario5(),
            &SimOptions::default(),
            None,
        )
        .unwrap();
        run.events[0].at_secs
    };
    let base = "[policy]\nkind = \"gradual-lru\"\n[pools.default]\n";
    assert_eq!(first_eviction(base), 360.0);
    assert_eq!(
        first_eviction(&format!("{base}[pools.default.models.m]\nidle = \"2m\"\n")),
        420.0
    );
}

#[test]
fn pool_level_memory_pressure_is_rejected_with_where_to_put_it() {
    let registry = PolicyRegistry::new();
    let (key, shown) = rejected(
        "[pools.vision.policy]\nkind = \"memory-pressure\"\nlimit = \"8GiB\"\n",
        &registry,
    );
    assert_eq!(key, "pools.vision.policy.kind");
    assert!(
        shown.contains("put it in the default `[policy]`"),
        "{shown}"
    );
    // In the default policy it is fine, and so is every other kind as a pool's own.
    load("[policy]\nkind = \"memory-pressure\"\n[pools.vision.policy]\nkind = \"noop\"\n").unwrap();
}

#[test]
fn values_in_force_say_where_each_comes_from() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        r#"
[policy]
kind = "chain"
[[policy.policies]]
kind = "keep-alive"
min_workers = 1
[[policy.policies]]
kind = "gradual-lru"
idle = "2m"
[pools.text]
memory = "4gb"
[pools.text.models.m]
ttl = "1m"
memory = "2Gi"
"#,
        "v.toml",
        &registry,
    )
    .unwrap();
    let values = config
        .values_in_force("text", Some("m"), &registry)
        .unwrap();
    let find = |key: &str| {
        values
            .iter()
            .find(|v| v.key == key)
            .unwrap_or_else(|| panic!("no {key} in {values:?}"))
            .values
            .clone()
    };
    let policy = |kind: &str| ValueSource::Policy(kind.into());
    let default = |kind: &str| ValueSource::PolicyDefault(kind.into());
    assert_eq!(
        find("ttl"),
        vec![(Some("1m".into()), vec![ValueSource::Model])]
    );
    assert_eq!(
        find("idle"),
        vec![(Some("2m".into()), vec![policy("gradual-lru")])]
    );
    assert_eq!(
        find("step"),
        vec![(Some("1m".into()), vec![default("gradual-lru")])]
    );
    // The members hold different floors: both are shown.
    assert_eq!(
        find("min_workers"),
        vec![
            (Some("1".into()), vec![policy("keep-alive")]),
            (Some("0".into()), vec![default("gradual-lru")]),
        ]
    );
    assert_eq!(
        find("memory"),
        vec![(Some("2GiB".into()), vec![ValueSource::Model])]
    );
    let other = config.values_in_force("text", None, &registry).unwrap();
    let memory = other.iter().find(|v| v.key == "memory").unwrap();
    assert_eq!(
        memory.values,
        vec![(Some("4GB".into()), vec![ValueSource::Pool])]
    );
    let ttl = other.iter().find(|v| v.key == "ttl").unwrap();
    assert_eq!(
        ttl.values,
        vec![(Some("5m".into()), vec![default("keep-alive")])]
    );
}

#[test]
fn sizes_follow_kubernetes_and_show_as_written() {
    let config = load(
        r#"
[pools.a]
memory = "4gb"
[pools.b]
memory = "4Gi"
[pools.c]
memory = "4G"
[pools.d]
memory = "1.5GiB"
"#,
    )
    .unwrap();
    let memory = |pool: &str| config.pools[pool].memory;
    assert_eq!(memory("a"), ByteSize(4_000_000_000));
    assert_eq!(memory("a").to_string(), "4GB");
    assert_eq!(memory("b"), ByteSize(4 << 30));
    assert_eq!(memory("b").to_string(), "4GiB");
    assert_eq!(memory("c"), ByteSize(4_000_000_000));
    assert_eq!(memory("d").to_string(), "1536MiB");
}

// ---- Custom policies with per-model keys ----

/// A registry with `learned-keep-alive` (per-model `percentile`, `floor`, `ceiling`).
fn custom_registry() -> PolicyRegistry {
    let mut registry = PolicyRegistry::new();
    learned_keep_alive::register(&mut registry);
    registry
}

#[test]
fn a_custom_policy_declares_its_per_model_keys_and_receives_their_values() {
    let registry = custom_registry();
    assert_eq!(
        registry.model_keys("learned-keep-alive"),
        Some(&["percentile", "floor", "ceiling"][..])
    );
    let text = r#"
[policy]
kind = "learned-keep-alive"
ceiling = "10m"
[pools.default.models.m]
ceiling = "2m"
"#;
    let config = Config::from_toml(text, "custom.toml", &registry).unwrap();
    assert_eq!(
        config.pools["default"].models["m"].params["ceiling"].as_str(),
        Some("2m")
    );
    // Scenario 5: the workers go quiet at 5:00; nothing learnt yet, so the key keeps them for
    // its ceiling: the model's 2m, not the policy's 10m.
    let run = simulate(
        &config,
        &registry,
        &config.policy,
        &Trace::scenario5(),
        &SimOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(run.events[0].at_secs, 420.0, "{:?}", run.events);

    // The same through the library calls a service uses.
    let clock = Arc::new(ManualClock::new());
    let pool = config
        .pool_builder("default", model)
        .unwrap()
        .clock(clock.clone())
        .build();
    let scheduler = config
        .scheduler_builder(&registry)
        .unwrap()
        .clock(clock.clone())
        .build();
    scheduler.register(&pool).unwrap();
    drop(pool.acquire("m").unwrap());
    drop(pool.acquire("other").unwrap());
    let evictions = tick_through(&clock, &scheduler, 0, 700);
    let at = |key: &str| evictions.iter().find(|e| e.2 == key).map(|e| e.0);
    assert_eq!(at("m"), Some(120));
    assert_eq!(at("other"), Some(600));
}

#[test]
fn per_model_keys_of_a_custom_policy_are_checked_and_located() {
    let registry = custom_registry();
    let base = "[policy]\nkind = \"learned-keep-alive\"\n[pools.default.models.m]\n";
    // A value of the wrong type, at its key.
    let (key, shown) = rejected(&format!("{base}floor = 5\n"), &registry);
    assert_eq!(key, "pools.default.models.m.floor");
    assert!(shown.starts_with("test.toml:4:9: "), "{shown}");
    // The policy's own validation of the merged values, at the model's key.
    let (key, shown) = rejected(&format!("{base}percentile = 1.5\n"), &registry);
    assert_eq!(key, "pools.default.models.m.percentile");
    assert!(shown.contains("must be in (0, 1], got 1.5"), "{shown}");
    // Any other unknown key is still an error, naming the keys the policy reads.
    let (key, shown) = rejected(&format!("{base}ttl = \"1m\"\n"), &registry);
    assert_eq!(key, "pools.default.models.m.ttl");
    assert!(
        shown.contains("uses learned-keep-alive (the default policy), which reads `percentile`, `floor` and `ceiling`"),
        "{shown}"
    );
    // Its keys are accepted only where it governs.
    let (key, _) = rejected(
        "[policy]\nkind = \"learned-keep-alive\"\n[pools.x.policy]\nkind = \"keep-alive\"\n[pools.x.models.m]\nceiling = \"1m\"\n",
        &registry,
    );
    assert_eq!(key, "pools.x.models.m.ceiling");
}

#[test]
fn per_model_values_are_keyed_by_pool_and_model_and_only_for_governed_pools() {
    use std::sync::Mutex;

    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct WeightConfig {
        #[serde(default)]
        weight: u32,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct WeightModel {
        weight: u32,
    }
    let seen: Arc<Mutex<Vec<(String, String, u32)>>> = Arc::default();
    let mut registry = PolicyRegistry::new();
    let log = seen.clone();
    registry.register_with_models(
        "weighted",
        move |_: WeightConfig, models: PerModel<WeightModel>| {
            let mut log = log.lock().unwrap();
            log.clear();
            for (pool, model, values) in models.iter() {
                log.push((pool.to_string(), model.to_string(), values.weight));
            }
            Ok(Box::new(Noop) as Box<dyn EvictionPolicy>)
        },
    );
    let config = Config::from_toml(
        r#"
[policy]
kind = "weighted"
[pools.a.models.x]
weight = 1
[pools.a.models.y]
memory = "1GiB"
[pools.b.models.x]
weight = 2
[pools.c.policy]
kind = "weighted"
[pools.c.models.z]
weight = 3
"#,
        "w.toml",
        &registry,
    )
    .unwrap();
    config.default_policy(&registry).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("a".into(), "x".into(), 1), ("b".into(), "x".into(), 2)]
    );
    config.pool_policy("c", &registry).unwrap().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![("c".into(), "z".into(), 3)]);
    assert!(config.pool_policy("a", &registry).unwrap().is_none());
}

#[test]
fn a_policy_that_declares_memory_receives_it_and_the_pool_still_reads_it() {
    use std::sync::Mutex;

    #[derive(serde::Deserialize, serde::Serialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Empty {}
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Footprint {
        memory: ByteSize,
    }
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let log = seen.clone();
    let mut registry = PolicyRegistry::new();
    registry.register_with_models("by-size", move |_: Empty, models: PerModel<Footprint>| {
        *log.lock().unwrap() = models.iter().map(|(_, _, m)| m.memory.bytes()).collect();
        Ok(Box::new(Noop) as Box<dyn EvictionPolicy>)
    });
    let config = Config::from_toml(
        "[policy]\nkind = \"by-size\"\n[pools.p.models.m]\nmemory = \"2GiB\"\n",
        "size.toml",
        &registry,
    )
    .unwrap();
    config.default_policy(&registry).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![2 << 30]);
    assert_eq!(config.pools["p"].memory_of("m"), 2 << 30);
    let memory: Vec<_> = config
        .values_in_force("p", Some("m"), &registry)
        .unwrap()
        .into_iter()
        .filter(|v| v.key == "memory")
        .collect();
    assert_eq!(memory.len(), 1);
}

// ---- The service's own file ----

const SERVICE_TOML: &str = r#"# The service's own settings.
[server]
port = 8080
workers = "many"

[poolwarden.scheduler]
tick = "500ms"

[poolwarden.pools.text]
max_workers_per_model = 2
"#;

#[test]
fn the_config_loads_from_a_table_of_the_services_own_file() {
    let registry = PolicyRegistry::new();
    let config = Config::loader(&registry)
        .table("poolwarden")
        .from_toml(SERVICE_TOML, "service.toml")
        .unwrap();
    assert_eq!(config.scheduler.tick, Duration::from_millis(500));
    assert_eq!(config.pools["text"].max_workers_per_model, 2);
    // Without the table, the service's keys are not poolwarden's.
    let error = Config::from_toml(SERVICE_TOML, "service.toml", &registry).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `poolwarden`"),
        "{error}"
    );

    let nested = format!(
        "[tool.poolwarden.pools.text.models.m]\nttl = \"1m\"\n{}",
        "[tool.other]\nx = 1\n"
    );
    let error = Config::loader(&registry)
        .table("tool.poolwarden")
        .from_toml(&nested, "pyproject.toml")
        .unwrap_err();
    assert_eq!(error.key(), Some("tool.poolwarden.pools.text.models.m.ttl"));
    assert_eq!(error.position(), Some((2, 1)));
}

#[test]
fn errors_in_a_table_are_located_in_the_file_with_the_path_from_its_root() {
    let registry = PolicyRegistry::new();
    let text = SERVICE_TOML.replace("tick = \"500ms\"", "tick = \"0s\"");
    let error = Config::loader(&registry)
        .table("poolwarden")
        .from_toml(&text, "service.toml")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "service.toml:7:1: `poolwarden.scheduler.tick`: must be greater than 0"
    );
    let text = format!("{SERVICE_TOML}[poolwarden.polcy]\nkind = \"noop\"\n");
    let error = Config::loader(&registry)
        .table("poolwarden")
        .from_toml(&text, "service.toml")
        .unwrap_err();
    assert_eq!(error.key(), Some("poolwarden.polcy"));
    assert_eq!(error.position().map(|p| p.0), Some(11));

    let missing = Config::loader(&registry)
        .table("warden")
        .from_toml(SERVICE_TOML, "service.toml")
        .unwrap_err();
    assert!(matches!(missing, ConfigError::MissingTable { .. }));
    assert_eq!(
        missing.to_string(),
        "service.toml: no `[warden]` table (poolwarden's configuration is read from it)"
    );
    let not_a_table = Config::loader(&registry)
        .table("server.port")
        .from_toml(SERVICE_TOML, "service.toml")
        .unwrap_err();
    assert_eq!(not_a_table.key(), Some("server.port"));
    assert_eq!(not_a_table.position(), Some((3, 8)));
}

// ---- Size of the input ----

#[test]
fn an_oversized_config_is_refused_before_it_is_parsed() {
    let registry = PolicyRegistry::new();
    let mut text = String::from("[pools.p]\n");
    while text.len() as u64 <= 10 * MAX_CONFIG_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let error = Config::from_toml(&text, "big.toml", &registry).unwrap_err();
    assert!(matches!(error, ConfigError::TooLarge { .. }), "{error}");
    assert!(error.to_string().starts_with("big.toml: "), "{error}");
    // From a reader, at most the limit (and one byte) is read.
    let error = Config::loader(&registry)
        .from_reader(std::io::repeat(b'#'), "endless")
        .unwrap_err();
    match error {
        ConfigError::TooLarge { bytes, limit, .. } => assert_eq!(bytes, limit + 1),
        other => panic!("{other}"),
    }
    // Just under the limit, thousands of pools load.
    let mut text = String::new();
    let mut pools = 0;
    loop {
        let pool = format!("[pools.p{pools}]\nmax_workers_per_model = 2\n[pools.p{pools}.models.m]\nidle = \"5m\"\n");
        if (text.len() + pool.len()) as u64 > MAX_CONFIG_BYTES {
            break;
        }
        text.push_str(&pool);
        pools += 1;
    }
    let config = Config::from_toml(&text, "many.toml", &registry).unwrap();
    assert_eq!(config.pools.len(), pools);
    assert!(pools > 10_000, "{pools}");
}

// ---- Typed errors ----

#[test]
fn build_errors_go_into_box_dyn_error_with_question_mark() {
    fn build(kind: &str) -> Result<Box<dyn EvictionPolicy>, Box<dyn Error + Send + Sync>> {
        let registry = PolicyRegistry::new();
        let policy = PolicySpec::of_kind(kind).build(&registry)?;
        let config = Config::embedded_default(&registry)?;
        config.default_policy(&registry)?;
        Ok(policy)
    }
    assert_eq!(build("noop").unwrap().name(), "noop");
    let error = build("lfu").err().unwrap();
    assert!(
        error.to_string().starts_with("unknown policy kind `lfu`"),
        "{error}"
    );
    assert!(matches!(
        error.downcast_ref::<BuildError>(),
        Some(BuildError::UnknownKind { .. })
    ));
}

/// `error` and its sources, joined as `{:#}` in anyhow does.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn errors_print_their_source_once() {
    // A failed spawn: the factory's error is the source, not part of the message.
    let pool = poolwarden::Pool::builder("text", |_key: &str| {
        Err::<Model, SpawnError>("weights not found".into())
    })
    .build();
    let error = pool.acquire("llama").err().unwrap();
    assert_eq!(
        chain(&error),
        "spawning a worker for `llama` failed: weights not found"
    );
    // An invalid parameter.
    let mut spec = PolicySpec::of_kind("max-lifetime");
    spec.params.insert("jitter".into(), toml::Value::Float(2.0));
    let error = spec.build(&PolicyRegistry::new()).err().unwrap();
    assert_eq!(
        chain(&error),
        "policy `max-lifetime` has an invalid parameter: jitter: must be in [0, 1), got 2"
    );
    // A file that cannot be read.
    let error = Config::load("/nonexistent/poolwarden.toml", &PolicyRegistry::new()).unwrap_err();
    let shown = chain(&error);
    assert!(
        shown.starts_with("/nonexistent/poolwarden.toml: cannot read: "),
        "{shown}"
    );
    assert_eq!(shown.matches("No such file").count(), 1, "{shown}");
}
