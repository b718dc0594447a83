//! TOML configuration: the scheduler's tick, the default policy, and the pools with their
//! per-model overrides.
//!
//! ```toml
//! [scheduler]
//! tick = "1s"                  # how often the maintenance thread looks
//!
//! [policy]                     # the default policy of every pool
//! kind = "gradual-lru"
//! idle = "1m"
//! step = "1m"
//!
//! [pools.text]
//! max_workers_per_model = 4
//! memory = "4GiB"              # footprint of one worker (simulator)
//!
//! [pools.text.models.llama-7b]
//! idle = "5m"
//! min_workers = 1
//! ```
//!
//! Unknown keys are errors, and every error names the file, the line:column and the key path.
//! See the README for every key and its default.

mod error;
mod locate;
mod registry;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use poolwarden_policies::{ByteSize, EvictionPolicy, ModelOverrides};
use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use error::ConfigError;
pub use registry::{PolicyRegistry, CHAIN};

use locate::{key_span, line_col, path_at, render, value_at, Seg};
use registry::{BuildFailure, Params};

/// The embedded `config/default.toml`: tick 1s, `gradual-lru` with idle 1m and step 1m.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The name errors and reports use for [`DEFAULT_TOML`].
pub const DEFAULT_NAME: &str = "config/default.toml (embedded)";

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from (a path, or [`DEFAULT_NAME`]).
    pub source: String,
    /// `[scheduler]`.
    pub scheduler: SchedulerConfig,
    /// `[policy]`: the default policy of every pool.
    pub policy: PolicySpec,
    /// `[pools.NAME]`, by name.
    pub pools: BTreeMap<String, PoolConfig>,
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// How often the maintenance thread ticks. Default `"1s"`; must be > 0.
    pub tick: Duration,
}

/// `[pools.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Most workers per model. Default `4`; at least 1.
    pub max_workers_per_model: usize,
    /// Requests one worker serves at once. Default `1`; at least 1.
    pub max_in_flight_per_worker: u32,
    /// How long an acquire waits for a busy key. Default `"30s"`.
    pub acquire_timeout: Duration,
    /// Footprint of one worker, for models without their own. Default `"0B"` (the factory
    /// reports the real footprint; the simulator uses this).
    pub memory: ByteSize,
    /// Time a spawn takes, for models without their own (simulator). Default `"0s"`.
    pub cold_start: Duration,
    /// This pool's own policy, replacing the default for its keys. Default: none.
    pub policy: Option<PolicySpec>,
    /// `[pools.NAME.models.KEY]`, by key.
    pub models: BTreeMap<String, ModelConfig>,
}

/// `[pools.NAME.models.KEY]`: per-model overrides. Every key is optional; unset means the
/// pool's or the policy's value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelConfig {
    /// `idle`, `step`, `ttl` and `min_workers`, as policies see them.
    pub overrides: ModelOverrides,
    /// Footprint of one worker of this model.
    pub memory: Option<ByteSize>,
    /// Time a spawn of this model takes (simulator).
    pub cold_start: Option<Duration>,
}

impl PoolConfig {
    /// The footprint of one worker of `model`.
    pub fn memory_of(&self, model: &str) -> u64 {
        self.models
            .get(model)
            .and_then(|m| m.memory)
            .unwrap_or(self.memory)
            .bytes()
    }

    /// The spawn time of `model`.
    pub fn cold_start_of(&self, model: &str) -> Duration {
        self.models
            .get(model)
            .and_then(|m| m.cold_start)
            .unwrap_or(self.cold_start)
    }
}

/// A policy as configured: its kind and parameters (a chain: its members). Build instances
/// with [`PolicySpec::build`]; every run gets fresh ones, since policies keep state.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// The kind (`"gradual-lru"`, `"chain"`, a registered custom kind).
    pub kind: String,
    /// Every parameter but `kind` (empty for a chain).
    pub params: toml::Table,
    /// A chain's members, in order.
    pub members: Vec<PolicySpec>,
}

impl PolicySpec {
    /// A spec of `kind` with no parameters (the policy's defaults).
    pub fn of_kind(kind: &str) -> Self {
        PolicySpec {
            kind: kind.to_string(),
            params: toml::Table::new(),
            members: Vec::new(),
        }
    }

    /// A fresh policy instance.
    pub fn build(&self, registry: &PolicyRegistry) -> Result<Box<dyn EvictionPolicy>, String> {
        if self.kind == CHAIN {
            let members = self
                .members
                .iter()
                .map(|m| m.build(registry))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(PolicyRegistry::chain(members));
        }
        let factory = registry
            .factory(&self.kind)
            .ok_or_else(|| unknown_kind(&self.kind, registry))?;
        factory(Params::Table(self.params.clone())).map_err(|failure| match failure {
            BuildFailure::Deserialize(e) => e.message().to_string(),
            BuildFailure::Invalid(p) => p.to_string(),
        })
    }

    /// Multi-line description: the policy with every parameter (defaults included), a chain's
    /// members indented below it.
    pub fn describe(&self, registry: &PolicyRegistry) -> String {
        match self.build(registry) {
            Ok(policy) => describe_policy(policy.as_ref(), &self.params, 0),
            Err(e) => format!("{} (cannot build: {e})", self.kind),
        }
    }
}

fn describe_policy(policy: &dyn EvictionPolicy, params: &toml::Table, depth: usize) -> String {
    let mut line = policy.describe();
    if line == policy.name() && !params.is_empty() {
        let rendered: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line = format!("{line} {}", rendered.join(" "));
    }
    let mut out = format!("{}{line}", "  ".repeat(depth));
    for child in policy.children() {
        out.push('\n');
        out.push_str(&describe_policy(child, &toml::Table::new(), depth + 1));
    }
    out
}

fn unknown_kind(kind: &str, registry: &PolicyRegistry) -> String {
    let known: Vec<&str> = registry.kinds().collect();
    format!(
        "unknown policy kind `{kind}`; known kinds: {}",
        known.join(", ")
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    scheduler: RawScheduler,
    #[allow(dead_code)]
    policy: Option<IgnoredAny>,
    #[serde(default)]
    pools: BTreeMap<String, RawPool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawScheduler {
    #[serde(with = "humantime_serde")]
    tick: Duration,
}

impl Default for RawScheduler {
    fn default() -> Self {
        RawScheduler {
            tick: Duration::from_secs(1),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPool {
    max_workers_per_model: usize,
    max_in_flight_per_worker: u32,
    #[serde(with = "humantime_serde")]
    acquire_timeout: Duration,
    memory: ByteSize,
    #[serde(with = "humantime_serde")]
    cold_start: Duration,
    #[allow(dead_code)]
    policy: Option<IgnoredAny>,
    models: BTreeMap<String, RawModel>,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            max_workers_per_model: 4,
            max_in_flight_per_worker: 1,
            acquire_timeout: Duration::from_secs(30),
            memory: ByteSize(0),
            cold_start: Duration::ZERO,
            policy: None,
            models: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default, with = "humantime_serde::option")]
    idle: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    step: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    ttl: Option<Duration>,
    #[serde(default)]
    min_workers: Option<usize>,
    #[serde(default)]
    memory: Option<ByteSize>,
    #[serde(default, with = "humantime_serde::option")]
    cold_start: Option<Duration>,
}

/// Loads and validates a config from `text`; `source` names it in errors.
struct Loader<'t> {
    source: &'t str,
    text: &'t str,
    registry: &'t PolicyRegistry,
}

impl Config {
    /// The embedded default config.
    pub fn embedded_default(registry: &PolicyRegistry) -> Result<Config, ConfigError> {
        Config::from_toml(DEFAULT_TOML, DEFAULT_NAME, registry)
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>, registry: &PolicyRegistry) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ConfigError::Read {
            file: source.clone(),
            message: e.to_string(),
        })?;
        Config::from_bytes(&bytes, &source, registry)
    }

    /// Validates raw bytes, which must be UTF-8 TOML.
    pub fn from_bytes(
        bytes: &[u8],
        source: &str,
        registry: &PolicyRegistry,
    ) -> Result<Config, ConfigError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Config::from_toml(text, source, registry),
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                let (line, column) = line_col(valid, valid.len());
                Err(ConfigError::Invalid {
                    file: source.to_string(),
                    line,
                    column,
                    key: String::new(),
                    message: format!("not UTF-8: invalid byte at offset {}", e.valid_up_to()),
                })
            }
        }
    }

    /// Validates TOML text; `source` names it in errors.
    pub fn from_toml(
        text: &str,
        source: &str,
        registry: &PolicyRegistry,
    ) -> Result<Config, ConfigError> {
        Loader {
            source,
            text,
            registry,
        }
        .load()
    }

    /// A fresh instance of the default policy.
    pub fn default_policy(
        &self,
        registry: &PolicyRegistry,
    ) -> Result<Box<dyn EvictionPolicy>, String> {
        self.policy.build(registry)
    }
}

impl Loader<'_> {
    fn error_at(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: String,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_col(self.text, span.map_or(0, |s| s.start));
        ConfigError::Invalid {
            file: self.source.to_string(),
            line,
            column,
            key,
            message: message.into(),
        }
    }

    fn load(&self) -> Result<Config, ConfigError> {
        let root = DeTable::parse(self.text).map_err(|e| {
            // Name the key around a syntax error from what did parse.
            let (partial, _) = DeTable::parse_recoverable(self.text);
            let key = e
                .span()
                .map(|s| path_at(partial.get_ref(), s.start))
                .unwrap_or_default();
            self.error_at(e.span(), key, e.message().to_string())
        })?;
        let root = root.get_ref();
        let raw: RawConfig = toml::from_str(self.text).map_err(|e| {
            let key = e.span().map(|s| path_at(root, s.start)).unwrap_or_default();
            self.error_at(e.span(), key, e.message().to_string())
        })?;

        let tick = raw.scheduler.tick;
        if tick.is_zero() {
            let path = [Seg::Key("scheduler")];
            return Err(self.error_at(
                key_span(root, &path, "tick"),
                "scheduler.tick".into(),
                "must be greater than 0",
            ));
        }

        let policy = match value_at(root, &[Seg::Key("policy")]) {
            Some(value) => self.policy_spec(root, &[Seg::Key("policy")], value)?,
            None => PolicySpec::of_kind("gradual-lru"),
        };

        let mut pools = BTreeMap::new();
        for (name, raw_pool) in raw.pools {
            let base = [Seg::Key("pools"), Seg::Key(&name)];
            let fail = |key: &str, message: String| {
                let mut path = render(&base);
                path.push('.');
                path.push_str(key);
                self.error_at(key_span(root, &base, key), path, message)
            };
            if raw_pool.max_workers_per_model == 0 {
                return Err(fail("max_workers_per_model", "must be at least 1".into()));
            }
            if raw_pool.max_in_flight_per_worker == 0 {
                return Err(fail(
                    "max_in_flight_per_worker",
                    "must be at least 1".into(),
                ));
            }
            let policy_path = [Seg::Key("pools"), Seg::Key(&name), Seg::Key("policy")];
            let policy = match value_at(root, &policy_path) {
                Some(value) => Some(self.policy_spec(root, &policy_path, value)?),
                None => None,
            };
            let mut models = BTreeMap::new();
            for (key, raw_model) in raw_pool.models {
                let model_path = [
                    Seg::Key("pools"),
                    Seg::Key(&name),
                    Seg::Key("models"),
                    Seg::Key(&key),
                ];
                if let Some(min) = raw_model.min_workers {
                    if min > raw_pool.max_workers_per_model {
                        return Err(self.error_at(
                            key_span(root, &model_path, "min_workers"),
                            format!("{}.min_workers", render(&model_path)),
                            format!(
                                "must not exceed the pool's max_workers_per_model ({}), got {min}",
                                raw_pool.max_workers_per_model
                            ),
                        ));
                    }
                }
                models.insert(
                    key,
                    ModelConfig {
                        overrides: ModelOverrides {
                            idle: raw_model.idle,
                            step: raw_model.step,
                            ttl: raw_model.ttl,
                            min_workers: raw_model.min_workers,
                        },
                        memory: raw_model.memory,
                        cold_start: raw_model.cold_start,
                    },
                );
            }
            pools.insert(
                name,
                PoolConfig {
                    max_workers_per_model: raw_pool.max_workers_per_model,
                    max_in_flight_per_worker: raw_pool.max_in_flight_per_worker,
                    acquire_timeout: raw_pool.acquire_timeout,
                    memory: raw_pool.memory,
                    cold_start: raw_pool.cold_start,
                    policy,
                    models,
                },
            );
        }

        Ok(Config {
            source: self.source.to_string(),
            scheduler: SchedulerConfig { tick },
            policy,
            pools,
        })
    }

    /// Resolves and validates the policy table at `path`.
    fn policy_spec(
        &self,
        root: &DeTable<'_>,
        path: &[Seg<'_>],
        value: &Spanned<DeValue<'_>>,
    ) -> Result<PolicySpec, ConfigError> {
        let here = render(path);
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.error_at(
                Some(value.span()),
                here,
                format!(
                    "a policy must be a table with a `kind`, found {}",
                    value.get_ref().type_str()
                ),
            ));
        };
        let kind_entry = table.iter().find(|(k, _)| k.get_ref() == "kind");
        let Some((_, kind_value)) = kind_entry else {
            return Err(self.error_at(
                Some(value.span()),
                here,
                format!(
                    "missing `kind`; known kinds: {}",
                    self.registry.kinds().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        let Some(kind) = kind_value.get_ref().as_str() else {
            return Err(self.error_at(
                Some(kind_value.span()),
                format!("{here}.kind"),
                format!(
                    "must be a string, found {}",
                    kind_value.get_ref().type_str()
                ),
            ));
        };
        if kind == CHAIN {
            let mut members = Vec::new();
            let mut saw_policies = false;
            for (key, item) in table.iter() {
                match key.get_ref().as_ref() {
                    "kind" => {}
                    "policies" => {
                        saw_policies = true;
                        let Some(array) = item.get_ref().as_array() else {
                            return Err(self.error_at(
                                Some(item.span()),
                                format!("{here}.policies"),
                                format!(
                                    "must be an array of policy tables, found {}",
                                    item.get_ref().type_str()
                                ),
                            ));
                        };
                        if array.is_empty() {
                            return Err(self.error_at(
                                Some(item.span()),
                                format!("{here}.policies"),
                                "a chain needs at least one policy",
                            ));
                        }
                        for (i, member) in array.iter().enumerate() {
                            let mut member_path = path.to_vec();
                            member_path.push(Seg::Key("policies"));
                            member_path.push(Seg::Index(i));
                            members.push(self.policy_spec(root, &member_path, member)?);
                        }
                    }
                    other => {
                        return Err(self.error_at(
                            Some(key.span()),
                            format!("{here}.{other}"),
                            format!("unknown field `{other}`, expected `kind` or `policies`"),
                        ))
                    }
                }
            }
            if !saw_policies {
                return Err(self.error_at(
                    Some(value.span()),
                    here,
                    "a chain needs `policies = [...]`",
                ));
            }
            return Ok(PolicySpec {
                kind: CHAIN.to_string(),
                params: toml::Table::new(),
                members,
            });
        }

        let Some(factory) = self.registry.factory(kind) else {
            return Err(self.error_at(
                Some(kind_value.span()),
                format!("{here}.kind"),
                unknown_kind(kind, self.registry),
            ));
        };
        let mut params: DeTable<'_> = DeTable::new();
        for (key, item) in table.iter().filter(|(k, _)| k.get_ref() != "kind") {
            params.insert(key.clone(), item.clone());
        }
        let params_value = Spanned::new(value.span(), DeValue::Table(params));
        let stored: toml::Table =
            toml::Table::deserialize(toml::de::ValueDeserializer::from(params_value.clone()))
                .map_err(|e| {
                    self.error_at(
                        e.span().or(Some(value.span())),
                        here.clone(),
                        e.message().to_string(),
                    )
                })?;
        match factory(Params::Spanned(params_value)) {
            Ok(_) => Ok(PolicySpec {
                kind: kind.to_string(),
                params: stored,
                members: Vec::new(),
            }),
            Err(BuildFailure::Deserialize(e)) => {
                let key = match e.span() {
                    Some(span) if span != value.span() => path_at(root, span.start),
                    _ => here,
                };
                Err(self.error_at(
                    e.span().or(Some(value.span())),
                    key,
                    e.message().to_string(),
                ))
            }
            Err(BuildFailure::Invalid(p)) => Err(self.error_at(
                key_span(root, path, p.key),
                format!("{here}.{}", p.key),
                p.message,
            )),
        }
    }
}
