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
//! Unknown keys are errors, and so is a per-model key that the pool's policy does not read
//! (each policy kind declares its per-model keys in the [`PolicyRegistry`]; `memory` and
//! `cold_start` are always accepted). Every error names the file, the line:column and the key
//! path. See the README for every key and its default.
//!
//! A loaded [`Config`] builds what it describes: [`Config::pool_builder`] a pool from its
//! `[pools.NAME]` section, [`Config::scheduler_builder`] the scheduler with the tick and every
//! policy. [`Config::loader`] reads poolwarden's part of a larger file
//! ([`ConfigLoader::table`]).

mod build;
mod error;
mod locate;
mod registry;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::{ByteSize, EvictionPolicy, ModelOverrides, VictimOrder};
use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

#[cfg(feature = "sim")]
pub(crate) use build::min_workers;
pub use build::{ConfiguredScheduler, ConfiguredSchedulerBuilder};
pub use error::{BuildError, ConfigError};
pub use registry::{PerModel, PolicyRegistry, CHAIN};

use locate::{key_span, line_col, path_at, render, value_at, Seg};
use registry::{BuildFailure, ModelInput, Value};

/// The embedded `config/default.toml`: tick 1s, `gradual-lru` with idle 1m and step 1m.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The name errors and reports use for [`DEFAULT_TOML`].
pub const DEFAULT_NAME: &str = "config/default.toml (embedded)";

/// The largest config poolwarden reads: 1 MiB, far more than any set of pools and models
/// needs. A larger input is refused with [`ConfigError::TooLarge`] before it is parsed.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The keys every `[pools.NAME.models.KEY]` accepts whatever the policy: the pool reads them
/// (and a policy that declares one of them as a per-model key receives it as well).
pub const POOL_MODEL_KEYS: [&str; 2] = ["memory", "cold_start"];

/// A loaded, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from (a path, `<stdin>`, or [`DEFAULT_NAME`]).
    pub source: String,
    /// `[scheduler]`.
    pub scheduler: SchedulerConfig,
    /// `[policy]`: the default policy of every pool.
    pub policy: PolicySpec,
    /// `[pools.NAME]`, by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// `[budgets.NAME]`, by name.
    pub budgets: BTreeMap<String, BudgetConfig>,
    /// The budgets made from this config, shared by every pool built from it (and its clones).
    pub(crate) budget_handles: BudgetHandles,
}

/// `[budgets.NAME]`: a memory budget that pools opt into with `budget = "NAME"` (see
/// [`crate::budget`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetConfig {
    /// The budget's limit. Required; greater than 0.
    pub limit: ByteSize,
    /// Victim order when making room: `"lru"` (default) or `"largest"`.
    pub order: VictimOrder,
    /// The device's probe: a spawn also needs its footprint available in its reading. Default:
    /// none.
    pub probe: Option<BudgetProbe>,
}

/// Which probe a budget reads (`probe = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetProbe {
    /// `"system"`: the host's RAM, as sysinfo reads it.
    System,
    /// `"cgroup"`: RAM under this process's cgroup limit (the host's when there is none).
    Cgroup,
    /// `"nvml:N"`: GPU number N through NVML (needs the `nvml` feature and a driver).
    Nvml(u32),
}

impl std::fmt::Display for BudgetProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BudgetProbe::System => f.write_str("system"),
            BudgetProbe::Cgroup => f.write_str("cgroup"),
            BudgetProbe::Nvml(index) => write!(f, "nvml:{index}"),
        }
    }
}

/// A `probe = "..."` that names no probe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown probe `{0}`; expected \"system\", \"cgroup\" or \"nvml:N\" (GPU number N)")]
pub struct UnknownProbe(pub String);

impl BudgetProbe {
    /// Whether this build can open it (`nvml:N` needs the `nvml` feature).
    pub fn available(&self) -> bool {
        !matches!(self, BudgetProbe::Nvml(_)) || cfg!(feature = "nvml")
    }
}

impl std::str::FromStr for BudgetProbe {
    type Err = UnknownProbe;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "system" => Ok(BudgetProbe::System),
            "cgroup" => Ok(BudgetProbe::Cgroup),
            _ => text
                .strip_prefix("nvml:")
                .and_then(|n| n.parse().ok())
                .map(BudgetProbe::Nvml)
                .ok_or_else(|| UnknownProbe(text.to_string())),
        }
    }
}

/// The [`crate::Budget`]s made from one config, by name (made on first use).
#[derive(Clone, Default)]
pub(crate) struct BudgetHandles(Arc<std::sync::Mutex<BTreeMap<String, crate::Budget>>>);

impl std::fmt::Debug for BudgetHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BudgetHandles")
    }
}

impl PartialEq for BudgetHandles {
    /// Two configs are equal by their contents, whichever budgets were made from them.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
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
    /// The memory budget (`[budgets.NAME]`) the pool's spawns are admitted against. Default:
    /// none (not limited).
    pub budget: Option<String>,
    /// How long a load may take before it counts as failed. Default `"10m"`; > 0.
    pub spawn_timeout: Duration,
}

/// `[pools.NAME.models.KEY]`: per-model settings. Every key is optional; unset means the
/// pool's or the policy's value. Which keys are accepted depends on the pool's policy: each
/// policy kind declares the per-model keys it reads ([`PolicyRegistry::model_keys`]), and
/// `memory` and `cold_start` are always accepted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelConfig {
    /// `idle`, `step`, `ttl` and `min_workers`, as the built-in policies see them in the
    /// snapshot (set only when the pool's policy reads the key).
    pub overrides: ModelOverrides,
    /// Footprint of one worker of this model.
    pub memory: Option<ByteSize>,
    /// Time a spawn of this model takes (simulator).
    pub cold_start: Option<Duration>,
    /// Every per-model key the pool's policy reads, as written (built-in and custom keys);
    /// [`Config::default_policy`] and [`Config::pool_policy`] hand them to the policy.
    pub params: toml::Table,
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
/// with [`PolicySpec::build`], or with [`Config::default_policy`] and [`Config::pool_policy`],
/// which also hand the policy its per-model values; every run gets fresh ones, since policies
/// keep state.
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

    /// A fresh policy instance, without per-model values.
    pub fn build(&self, registry: &PolicyRegistry) -> Result<Box<dyn EvictionPolicy>, BuildError> {
        self.build_with(registry, &[])
    }

    /// A fresh policy instance; `models` are the per-model tables of the models it governs.
    pub(crate) fn build_with(
        &self,
        registry: &PolicyRegistry,
        models: &[ModelInput<'_, '_>],
    ) -> Result<Box<dyn EvictionPolicy>, BuildError> {
        if self.kind == CHAIN {
            if self.members.is_empty() {
                return Err(BuildError::EmptyChain);
            }
            let members = self
                .members
                .iter()
                .map(|m| m.build_with(registry, models))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(PolicyRegistry::chain(members));
        }
        let params = Value::Table(self.params.clone());
        let Some(built) = registry.build_kind(&self.kind, &params, models) else {
            return Err(BuildError::UnknownKind {
                kind: self.kind.clone(),
                known: registry.kinds().map(str::to_string).collect(),
            });
        };
        built.map_err(|failure| match failure {
            BuildFailure::Deserialize(e) => BuildError::Parameters {
                kind: self.kind.clone(),
                message: e.message().to_string(),
            },
            BuildFailure::Invalid(source) => BuildError::InvalidParameter {
                kind: self.kind.clone(),
                source,
            },
            BuildFailure::Model { pool, model, error } => BuildError::ModelParameters {
                kind: self.kind.clone(),
                pool,
                model,
                message: error.message().to_string(),
            },
        })
    }

    /// The per-model keys this policy reads (for a chain: what any member reads), in the
    /// order the members declare them; `memory` and `cold_start` are not included.
    pub fn model_keys(&self, registry: &PolicyRegistry) -> Vec<&'static str> {
        let mut keys = Vec::new();
        for leaf in self.leaves() {
            for key in registry.model_keys(&leaf.kind).unwrap_or_default() {
                if !keys.contains(key) {
                    keys.push(*key);
                }
            }
        }
        keys
    }

    /// The policies it is made of: itself, or a chain's members (nested chains flattened).
    pub fn leaves(&self) -> Vec<&PolicySpec> {
        if self.kind == CHAIN {
            self.members.iter().flat_map(PolicySpec::leaves).collect()
        } else {
            vec![self]
        }
    }

    /// Its kind, or `chain [a, b]` for a chain.
    pub fn label(&self) -> String {
        if self.kind == CHAIN {
            let members: Vec<String> = self.members.iter().map(PolicySpec::label).collect();
            format!("chain [{}]", members.join(", "))
        } else {
            self.kind.clone()
        }
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

/// Where a value in force for a model comes from (`poolwarden check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// Set in the model's own `[pools.NAME.models.KEY]` table.
    Model,
    /// The pool's value (`memory`, `cold_start`), set in `[pools.NAME]` or its default.
    Pool,
    /// Set in the table of the policy of this kind.
    Policy(String),
    /// Not set anywhere: the default of the policy of this kind.
    PolicyDefault(String),
}

impl std::fmt::Display for ValueSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueSource::Model => f.write_str("model"),
            ValueSource::Pool => f.write_str("pool"),
            ValueSource::Policy(kind) => f.write_str(kind),
            ValueSource::PolicyDefault(kind) => write!(f, "{kind} default"),
        }
    }
}

/// One per-model setting in force: its key, and each value with where it comes from (several
/// when chain members that read the key hold different values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInForce {
    /// The key (`ttl`, `memory`).
    pub key: String,
    /// The values, each with its sources; `None` when no one sets it (a per-model key that
    /// the policy has no parameter for).
    pub values: Vec<(Option<String>, Vec<ValueSource>)>,
}

/// Renders a TOML value as a config would show it: strings without quotes.
fn show_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of poolwarden's configuration"
)]
struct RawConfig {
    #[serde(default)]
    scheduler: RawScheduler,
    #[allow(dead_code)]
    policy: Option<IgnoredAny>,
    #[serde(default)]
    pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    budgets: BTreeMap<String, RawBudget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    limit: ByteSize,
    #[serde(default)]
    order: VictimOrder,
    #[serde(default)]
    probe: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a `[scheduler]` table")]
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
#[serde(deny_unknown_fields, default, expecting = "a `[pools.NAME]` table")]
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
    models: BTreeMap<String, BTreeMap<String, IgnoredAny>>,
    budget: Option<String>,
    #[serde(with = "humantime_serde")]
    spawn_timeout: Duration,
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
            budget: None,
            spawn_timeout: Duration::from_secs(600),
        }
    }
}

/// Loads configs, from the whole file or from one table inside a larger file.
///
/// A service that keeps its own settings in the same file puts poolwarden's under a table of
/// its choice and loads that table; errors are still located in the file, with the key path
/// from the file's root:
///
/// ```
/// use poolwarden::config::{Config, PolicyRegistry};
///
/// let service_toml = r#"
/// [server]
/// port = 8080
///
/// [poolwarden.scheduler]
/// tick = "500ms"
///
/// [poolwarden.pools.text]
/// max_workers_per_model = 0
/// "#;
/// let registry = PolicyRegistry::new();
/// let error = Config::loader(&registry)
///     .table("poolwarden")
///     .from_toml(service_toml, "service.toml")
///     .unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "service.toml:9:1: `poolwarden.pools.text.max_workers_per_model`: must be at least 1"
/// );
/// ```
#[derive(Clone)]
pub struct ConfigLoader<'r> {
    registry: &'r PolicyRegistry,
    table: Vec<String>,
}

impl<'r> ConfigLoader<'r> {
    /// Reads poolwarden's config from the table at `path` (dotted: `poolwarden`,
    /// `tool.poolwarden`) instead of the whole file; the rest of the file is not poolwarden's
    /// business and is not checked. An empty path means the whole file.
    pub fn table(mut self, path: &str) -> Self {
        self.table = path
            .split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self
    }

    /// Reads and validates the file at `path`.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let read_error = |e: std::io::Error| ConfigError::Read {
            file: source.clone(),
            source: Arc::new(e),
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        self.from_reader(file, &source)
    }

    /// Reads everything from `reader` (standard input, a file) and validates it; at most
    /// [`MAX_CONFIG_BYTES`] are read.
    pub fn from_reader(&self, reader: impl Read, source: &str) -> Result<Config, ConfigError> {
        let mut bytes = Vec::new();
        reader
            .take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ConfigError::Read {
                file: source.to_string(),
                source: Arc::new(e),
            })?;
        self.from_bytes(&bytes, source)
    }

    /// Validates raw bytes, which must be UTF-8 TOML.
    pub fn from_bytes(&self, bytes: &[u8], source: &str) -> Result<Config, ConfigError> {
        check_size(bytes.len(), source)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => self.from_toml(text, source),
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
    pub fn from_toml(&self, text: &str, source: &str) -> Result<Config, ConfigError> {
        check_size(text.len(), source)?;
        Loader {
            source,
            text,
            registry: self.registry,
            table: &self.table,
        }
        .load()
    }
}

fn check_size(len: usize, source: &str) -> Result<(), ConfigError> {
    let bytes = len as u64;
    if bytes > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: source.to_string(),
            bytes,
            limit: MAX_CONFIG_BYTES,
        });
    }
    Ok(())
}

/// Which pools a policy instance governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyScope<'a> {
    /// The default policy: every pool without its own.
    Default,
    /// The policy of this pool only.
    Pool(&'a str),
}

impl Config {
    /// A loader that can read poolwarden's config from a table inside a larger file
    /// ([`ConfigLoader::table`]).
    pub fn loader(registry: &PolicyRegistry) -> ConfigLoader<'_> {
        ConfigLoader {
            registry,
            table: Vec::new(),
        }
    }

    /// The embedded default config.
    pub fn embedded_default(registry: &PolicyRegistry) -> Result<Config, ConfigError> {
        Config::from_toml(DEFAULT_TOML, DEFAULT_NAME, registry)
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>, registry: &PolicyRegistry) -> Result<Config, ConfigError> {
        Config::loader(registry).load(path)
    }

    /// Validates raw bytes, which must be UTF-8 TOML.
    pub fn from_bytes(
        bytes: &[u8],
        source: &str,
        registry: &PolicyRegistry,
    ) -> Result<Config, ConfigError> {
        Config::loader(registry).from_bytes(bytes, source)
    }

    /// Validates TOML text; `source` names it in errors.
    pub fn from_toml(
        text: &str,
        source: &str,
        registry: &PolicyRegistry,
    ) -> Result<Config, ConfigError> {
        Config::loader(registry).from_toml(text, source)
    }

    /// A fresh instance of the default policy, with the per-model values of every pool it
    /// governs (the pools without their own policy).
    pub fn default_policy(
        &self,
        registry: &PolicyRegistry,
    ) -> Result<Box<dyn EvictionPolicy>, BuildError> {
        self.policy_instance(&self.policy, PolicyScope::Default, registry)
    }

    /// A fresh instance of `pool`'s own policy, with the pool's per-model values; `None` when
    /// the pool has none (the default policy governs it).
    pub fn pool_policy(
        &self,
        pool: &str,
        registry: &PolicyRegistry,
    ) -> Result<Option<Box<dyn EvictionPolicy>>, BuildError> {
        let config = self.pool(pool)?;
        config
            .policy
            .as_ref()
            .map(|spec| self.policy_instance(spec, PolicyScope::Pool(pool), registry))
            .transpose()
    }

    /// A fresh instance of `spec` governing `scope`, with the per-model values of the pools in
    /// that scope (the simulator uses it to replace the default policy by another kind).
    pub fn policy_instance(
        &self,
        spec: &PolicySpec,
        scope: PolicyScope<'_>,
        registry: &PolicyRegistry,
    ) -> Result<Box<dyn EvictionPolicy>, BuildError> {
        if let PolicyScope::Pool(pool) = scope {
            self.pool(pool)?;
        }
        let values: Vec<(&str, &str, Value<'static>)> = self
            .pools
            .iter()
            .filter(|(name, pool)| match scope {
                PolicyScope::Default => pool.policy.is_none(),
                PolicyScope::Pool(only) => name.as_str() == only,
            })
            .flat_map(|(name, pool)| {
                pool.models
                    .iter()
                    .filter(|(_, m)| !m.params.is_empty())
                    .map(move |(model, m)| {
                        (
                            name.as_str(),
                            model.as_str(),
                            Value::Table(m.params.clone()),
                        )
                    })
            })
            .collect();
        let inputs: Vec<ModelInput<'_, '_>> = values
            .iter()
            .map(|(pool, model, value)| ModelInput { pool, model, value })
            .collect();
        spec.build_with(registry, &inputs)
    }

    /// The `[pools.NAME]` section, or [`BuildError::UnknownPool`].
    pub fn pool(&self, name: &str) -> Result<&PoolConfig, BuildError> {
        self.pools.get(name).ok_or_else(|| BuildError::UnknownPool {
            pool: name.to_string(),
            config: self.source.clone(),
            known: self.pools.keys().cloned().collect(),
        })
    }

    /// The [`crate::Budget`] named `name`, made on first use and shared by every pool built
    /// from this config (and its clones), with its probe opened.
    pub fn budget(&self, name: &str) -> Result<crate::Budget, BuildError> {
        let mut made = self
            .budget_handles
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(budget) = made.get(name) {
            return Ok(budget.clone());
        }
        let config = self
            .budgets
            .get(name)
            .ok_or_else(|| BuildError::UnknownBudget {
                budget: name.to_string(),
                config: self.source.clone(),
            })?;
        let mut builder = crate::Budget::builder(name, config.limit.bytes()).order(config.order);
        match config.probe {
            None => {}
            Some(BudgetProbe::System) => builder = builder.probe(crate::SysinfoProbe::host()),
            Some(BudgetProbe::Cgroup) => builder = builder.probe(crate::SysinfoProbe::new()),
            #[cfg(feature = "nvml")]
            Some(BudgetProbe::Nvml(index)) => {
                let probe = crate::probe::NvmlProbe::new(index).map_err(|e| BuildError::Probe {
                    budget: name.to_string(),
                    probe: format!("nvml:{index}"),
                    message: e.to_string(),
                })?;
                builder = builder.probe(probe);
            }
            #[cfg(not(feature = "nvml"))]
            Some(BudgetProbe::Nvml(index)) => {
                return Err(BuildError::Probe {
                    budget: name.to_string(),
                    probe: format!("nvml:{index}"),
                    message: "this build has no NVML support (build with `--features nvml`)"
                        .to_string(),
                })
            }
        }
        let budget = builder.build();
        made.insert(name.to_string(), budget.clone());
        Ok(budget)
    }

    /// The footprint of one worker of `model` in `pool` before it loads (per-model `memory`,
    /// else the pool's), and whether it exceeds the limit of the pool's budget (then it can
    /// never load).
    pub fn never_fits(&self, pool: &str, model: &str) -> Option<(u64, &str, u64)> {
        let config = self.pools.get(pool)?;
        let budget = config.budget.as_deref()?;
        let limit = self.budgets.get(budget)?.limit.bytes();
        let needed = config.memory_of(model);
        (needed > limit).then_some((needed, budget, limit))
    }

    /// The policy that governs `pool`: its own, else the default.
    pub fn effective_policy(&self, pool: &str) -> Result<&PolicySpec, BuildError> {
        Ok(self.pool(pool)?.policy.as_ref().unwrap_or(&self.policy))
    }

    /// The per-model settings in force for `model` of `pool`, each with where it comes from:
    /// every per-model key the pool's policy reads, then `memory` and `cold_start`. `None`, or
    /// a model without a table of its own, gets the pool's and the policy's values.
    pub fn values_in_force(
        &self,
        pool: &str,
        model: Option<&str>,
        registry: &PolicyRegistry,
    ) -> Result<Vec<ValueInForce>, BuildError> {
        let config = self.pool(pool)?;
        let spec = self.effective_policy(pool)?;
        let model_config = model.and_then(|m| config.models.get(m));
        let mut out = Vec::new();
        for key in spec.model_keys(registry) {
            if POOL_MODEL_KEYS.contains(&key) {
                continue; // shown below, as the pool reads it
            }
            if let Some(value) = model_config.and_then(|m| m.params.get(key)) {
                out.push(ValueInForce {
                    key: key.to_string(),
                    values: vec![(Some(show_value(value)), vec![ValueSource::Model])],
                });
                continue;
            }
            let mut values: Vec<(Option<String>, Vec<ValueSource>)> = Vec::new();
            for leaf in spec.leaves() {
                if !registry
                    .model_keys(&leaf.kind)
                    .is_some_and(|keys| keys.contains(&key))
                {
                    continue;
                }
                let param = registry.param_of(&leaf.kind, key);
                let (value, source) = match leaf.params.get(param) {
                    Some(value) => (
                        Some(show_value(value)),
                        ValueSource::Policy(leaf.kind.clone()),
                    ),
                    None => (
                        registry
                            .effective_params(&leaf.kind, &leaf.params)
                            .and_then(|t| t.get(param).map(show_value)),
                        ValueSource::PolicyDefault(leaf.kind.clone()),
                    ),
                };
                match values.iter_mut().find(|(v, _)| *v == value) {
                    Some((_, sources)) => sources.push(source),
                    None => values.push((value, vec![source])),
                }
            }
            out.push(ValueInForce {
                key: key.to_string(),
                values,
            });
        }
        let memory = model_config.and_then(|m| m.memory);
        out.push(ValueInForce {
            key: "memory".into(),
            values: vec![(
                Some(memory.unwrap_or(config.memory).to_string()),
                vec![if memory.is_some() {
                    ValueSource::Model
                } else {
                    ValueSource::Pool
                }],
            )],
        });
        let cold_start = model_config.and_then(|m| m.cold_start);
        out.push(ValueInForce {
            key: "cold_start".into(),
            values: vec![(
                Some(poolwarden_policies::format_duration(
                    cold_start.unwrap_or(config.cold_start),
                )),
                vec![if cold_start.is_some() {
                    ValueSource::Model
                } else {
                    ValueSource::Pool
                }],
            )],
        });
        Ok(out)
    }
}

/// Validates one config from its text.
struct Loader<'t> {
    source: &'t str,
    text: &'t str,
    registry: &'t PolicyRegistry,
    /// The path of the table that holds poolwarden's config; empty: the whole file.
    table: &'t [String],
}

/// How a pool uses a policy, for messages: "pool `text` uses keep-alive".
fn uses(pool: &str, spec: &PolicySpec, own: bool) -> String {
    let whose = if own { "" } else { " (the default policy)" };
    format!("pool `{pool}` uses {}{whose}", spec.label())
}

/// `a`, `a` and `b`, `a`, `b` and `c`.
fn english_list(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

impl<'t> Loader<'t> {
    /// The path `rel` from the file's root.
    fn full<'s>(&'s self, rel: &[Seg<'s>]) -> Vec<Seg<'s>> {
        let mut path: Vec<Seg<'s>> = self.table.iter().map(|k| Seg::Key(k)).collect();
        path.extend_from_slice(rel);
        path
    }

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

    /// The error `e` from deserializing part of the file, located by its span.
    fn serde_error(
        &self,
        root: &DeTable<'_>,
        e: &toml::de::Error,
        fallback: std::ops::Range<usize>,
        fallback_key: String,
    ) -> ConfigError {
        let key = match e.span() {
            Some(span) if span != fallback => path_at(root, span.start),
            _ => fallback_key,
        };
        self.error_at(e.span().or(Some(fallback)), key, e.message().to_string())
    }

    fn load(&self) -> Result<Config, ConfigError> {
        let parsed = DeTable::parse(self.text).map_err(|e| {
            // Name the key around a syntax error from what did parse.
            let (partial, _) = DeTable::parse_recoverable(self.text);
            let key = e
                .span()
                .map(|s| path_at(partial.get_ref(), s.start))
                .unwrap_or_default();
            self.error_at(e.span(), key, e.message().to_string())
        })?;
        let root = parsed.get_ref();
        let prefix = self.full(&[]);
        let section = if prefix.is_empty() {
            Spanned::new(0..self.text.len(), DeValue::Table(root.clone()))
        } else {
            match value_at(root, &prefix) {
                Some(value) if matches!(value.get_ref(), DeValue::Table(_)) => value.clone(),
                Some(value) => {
                    return Err(self.error_at(
                        Some(value.span()),
                        render(&prefix),
                        format!(
                            "must be a table holding poolwarden's configuration, found {}",
                            value.get_ref().type_str()
                        ),
                    ))
                }
                None => {
                    return Err(ConfigError::MissingTable {
                        file: self.source.to_string(),
                        table: render(&prefix),
                    })
                }
            }
        };
        let section_span = section.span();
        let raw = RawConfig::deserialize(ValueDeserializer::from(section))
            .map_err(|e| self.serde_error(root, &e, section_span, render(&prefix)))?;

        let tick = raw.scheduler.tick;
        if tick.is_zero() {
            let path = self.full(&[Seg::Key("scheduler")]);
            return Err(self.error_at(
                key_span(root, &path, "tick"),
                format!("{}.tick", render(&path)),
                "must be greater than 0",
            ));
        }

        let default_path = self.full(&[Seg::Key("policy")]);
        let policy = match value_at(root, &default_path) {
            Some(value) => self.policy_spec(root, &default_path, value, None)?,
            None => PolicySpec::of_kind("gradual-lru"),
        };

        let mut budgets = BTreeMap::new();
        for (name, raw_budget) in raw.budgets {
            let base = self.full(&[Seg::Key("budgets"), Seg::Key(&name)]);
            let fail = |key: &str, message: String| {
                let mut path = render(&base);
                path.push('.');
                path.push_str(key);
                self.error_at(key_span(root, &base, key), path, message)
            };
            if raw_budget.limit.bytes() == 0 {
                return Err(fail("limit", "must be greater than 0".into()));
            }
            let probe = match raw_budget.probe {
                Some(text) => Some(
                    text.parse::<BudgetProbe>()
                        .map_err(|e| fail("probe", e.to_string()))?,
                ),
                None => None,
            };
            budgets.insert(
                name,
                BudgetConfig {
                    limit: raw_budget.limit,
                    order: raw_budget.order,
                    probe,
                },
            );
        }

        let mut pools = BTreeMap::new();
        for (name, raw_pool) in raw.pools {
            let base = self.full(&[Seg::Key("pools"), Seg::Key(&name)]);
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
            if raw_pool.max_in_flight_per_worker > crate::pool::MAX_IN_FLIGHT_PER_WORKER {
                return Err(fail(
                    "max_in_flight_per_worker",
                    format!(
                        "must be at most {}, got {}",
                        crate::pool::MAX_IN_FLIGHT_PER_WORKER,
                        raw_pool.max_in_flight_per_worker
                    ),
                ));
            }
            if raw_pool.spawn_timeout.is_zero() {
                return Err(fail("spawn_timeout", "must be greater than 0".into()));
            }
            if let Some(budget) = &raw_pool.budget {
                if !budgets.contains_key(budget) {
                    let known: Vec<&str> = budgets.keys().map(String::as_str).collect();
                    return Err(fail(
                        "budget",
                        if known.is_empty() {
                            format!(
                                "unknown budget `{budget}`: the config has no [budgets.{budget}]"
                            )
                        } else {
                            format!(
                                "unknown budget `{budget}`; known budgets: {}",
                                known.join(", ")
                            )
                        },
                    ));
                }
            }
            let own_path = self.full(&[Seg::Key("pools"), Seg::Key(&name), Seg::Key("policy")]);
            let own = match value_at(root, &own_path) {
                Some(value) => Some(self.policy_spec(root, &own_path, value, Some(&name))?),
                None => None,
            };
            let (effective, effective_path) = match &own {
                Some(spec) => (spec, own_path.clone()),
                None => (&policy, default_path.clone()),
            };
            let mut models = BTreeMap::new();
            for model in raw_pool.models.keys() {
                let model_config = self.model(
                    root,
                    &name,
                    model,
                    raw_pool.max_workers_per_model,
                    effective,
                    &effective_path,
                    own.is_some(),
                )?;
                models.insert(model.clone(), model_config);
            }
            pools.insert(
                name,
                PoolConfig {
                    max_workers_per_model: raw_pool.max_workers_per_model,
                    max_in_flight_per_worker: raw_pool.max_in_flight_per_worker,
                    acquire_timeout: raw_pool.acquire_timeout,
                    memory: raw_pool.memory,
                    cold_start: raw_pool.cold_start,
                    policy: own,
                    models,
                    budget: raw_pool.budget,
                    spawn_timeout: raw_pool.spawn_timeout,
                },
            );
        }

        Ok(Config {
            source: self.source.to_string(),
            scheduler: SchedulerConfig { tick },
            policy,
            pools,
            budgets,
            budget_handles: BudgetHandles::default(),
        })
    }

    /// Validates `[pools.POOL.models.MODEL]`: `memory`, `cold_start`, and the keys `policy`
    /// (configured at `policy_path`) reads; any other key is an error that says what the
    /// policy reads.
    #[allow(clippy::too_many_arguments)]
    fn model(
        &self,
        root: &DeTable<'_>,
        pool: &str,
        model: &str,
        max_workers: usize,
        policy: &PolicySpec,
        policy_path: &[Seg<'_>],
        own: bool,
    ) -> Result<ModelConfig, ConfigError> {
        let path = self.full(&[
            Seg::Key("pools"),
            Seg::Key(pool),
            Seg::Key("models"),
            Seg::Key(model),
        ]);
        let here = render(&path);
        let Some(spanned) = value_at(root, &path) else {
            return Ok(ModelConfig::default());
        };
        let DeValue::Table(table) = spanned.get_ref() else {
            return Err(self.error_at(
                Some(spanned.span()),
                here,
                format!("must be a table, found {}", spanned.get_ref().type_str()),
            ));
        };
        let reads = policy.model_keys(self.registry);
        let mut config = ModelConfig::default();
        for (key, item) in table.iter() {
            let name = key.get_ref().as_ref();
            let key_path = format!("{here}.{}", render(&[Seg::Key(name)]));
            let located = |e: toml::de::Error| {
                self.error_at(
                    e.span().or(Some(item.span())),
                    key_path.clone(),
                    e.message().to_string(),
                )
            };
            match name {
                "memory" => {
                    config.memory = Some(
                        ByteSize::deserialize(ValueDeserializer::from(item.clone()))
                            .map_err(located)?,
                    );
                }
                "cold_start" => {
                    let value: humantime_serde::Serde<Duration> =
                        Deserialize::deserialize(ValueDeserializer::from(item.clone()))
                            .map_err(located)?;
                    config.cold_start = Some(value.into_inner());
                }
                _ => {}
            }
            match name {
                // The pool's keys; a policy that declares them gets them too.
                _ if POOL_MODEL_KEYS.contains(&name) && !reads.contains(&name) => {}
                _ if reads.contains(&name) => {
                    let value = toml::Value::deserialize(ValueDeserializer::from(item.clone()))
                        .map_err(located)?;
                    config.params.insert(name.to_string(), value);
                }
                _ => {
                    let what = if reads.is_empty() {
                        "which reads no per-model key".to_string()
                    } else {
                        format!("which reads {}", english_list(&reads))
                    };
                    return Err(self.error_at(
                        Some(key.span()),
                        key_path,
                        format!(
                            "{}, {what}; `memory` and `cold_start` apply to every pool",
                            uses(pool, policy, own)
                        ),
                    ));
                }
            }
        }
        self.validate_model_values(root, pool, model, &path, spanned, policy, policy_path)?;
        if let Some(min) = config
            .params
            .get("min_workers")
            .and_then(toml::Value::as_integer)
        {
            if min > i64::try_from(max_workers).unwrap_or(i64::MAX) {
                return Err(self.error_at(
                    key_span(root, &path, "min_workers"),
                    format!("{here}.min_workers"),
                    format!(
                        "must not exceed the pool's max_workers_per_model ({max_workers}), got {min}"
                    ),
                ));
            }
        }
        config.overrides = overrides_of(&config.params);
        Ok(config)
    }

    /// Builds each policy of `policy` that reads some of this model's keys with just this
    /// model's values, so that a wrong value is located at its key.
    #[allow(clippy::too_many_arguments)]
    fn validate_model_values(
        &self,
        root: &DeTable<'_>,
        pool: &str,
        model: &str,
        model_path: &[Seg<'_>],
        table: &Spanned<DeValue<'_>>,
        policy: &PolicySpec,
        policy_path: &[Seg<'_>],
    ) -> Result<(), ConfigError> {
        if policy.kind == CHAIN {
            for (i, member) in policy.members.iter().enumerate() {
                let mut member_path = policy_path.to_vec();
                member_path.push(Seg::Key("policies"));
                member_path.push(Seg::Index(i));
                self.validate_model_values(
                    root,
                    pool,
                    model,
                    model_path,
                    table,
                    member,
                    &member_path,
                )?;
            }
            return Ok(());
        }
        let keys = self.registry.model_keys(&policy.kind).unwrap_or_default();
        let DeValue::Table(entries) = table.get_ref() else {
            return Ok(());
        };
        if !entries
            .iter()
            .any(|(k, _)| keys.contains(&k.get_ref().as_ref()))
        {
            return Ok(());
        }
        let value = Value::Spanned(table.clone());
        let input = ModelInput {
            pool,
            model,
            value: &value,
        };
        let params = Value::Table(policy.params.clone());
        match self.registry.build_kind(&policy.kind, &params, &[input]) {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(BuildFailure::Model { error, .. })) => {
                Err(self.serde_error(root, &error, table.span(), render(model_path)))
            }
            Some(Err(BuildFailure::Invalid(p))) => {
                let in_model = entries.iter().any(|(k, _)| k.get_ref() == p.key);
                let path = if in_model { model_path } else { policy_path };
                Err(self.error_at(
                    key_span(root, path, p.key),
                    format!("{}.{}", render(path), p.key),
                    p.message,
                ))
            }
            Some(Err(BuildFailure::Deserialize(e))) => Err(self.error_at(
                value_at(root, policy_path).map(|v| v.span()),
                render(policy_path),
                e.message().to_string(),
            )),
        }
    }

    /// Resolves and validates the policy table at `path`; `pool` is the pool whose own policy
    /// it is (`None`: the default policy).
    fn policy_spec(
        &self,
        root: &DeTable<'_>,
        path: &[Seg<'_>],
        value: &Spanned<DeValue<'_>>,
        pool: Option<&str>,
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
        if let (Some(pool), "memory-pressure") = (pool, kind) {
            let default = render(&self.full(&[Seg::Key("policy")]));
            return Err(self.error_at(
                Some(kind_value.span()),
                format!("{here}.kind"),
                format!(
                    "memory-pressure evicts idle workers of every pool, so it cannot be the policy of pool `{pool}` alone; put it in the default `[{default}]` (in a chain with other policies if needed)"
                ),
            ));
        }
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
                            members.push(self.policy_spec(root, &member_path, member, pool)?);
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

        if !self.registry.contains(kind) {
            return Err(self.error_at(
                Some(kind_value.span()),
                format!("{here}.kind"),
                unknown_kind(kind, self.registry),
            ));
        }
        let mut params: DeTable<'_> = DeTable::new();
        for (key, item) in table.iter().filter(|(k, _)| k.get_ref() != "kind") {
            params.insert(key.clone(), item.clone());
        }
        let params_value = Spanned::new(value.span(), DeValue::Table(params));
        let stored: toml::Table = toml::Table::deserialize(ValueDeserializer::from(
            params_value.clone(),
        ))
        .map_err(|e| {
            self.error_at(
                e.span().or(Some(value.span())),
                here.clone(),
                e.message().to_string(),
            )
        })?;
        let built = self
            .registry
            .build_kind(kind, &Value::Spanned(params_value), &[]);
        match built {
            None | Some(Ok(_)) => Ok(PolicySpec {
                kind: kind.to_string(),
                params: stored,
                members: Vec::new(),
            }),
            Some(Err(BuildFailure::Deserialize(e))) => {
                Err(self.serde_error(root, &e, value.span(), here))
            }
            Some(Err(BuildFailure::Invalid(p))) => Err(self.error_at(
                key_span(root, path, p.key),
                format!("{here}.{}", p.key),
                p.message,
            )),
            Some(Err(BuildFailure::Model { error, .. })) => {
                Err(self.serde_error(root, &error, value.span(), here))
            }
        }
    }
}

/// The built-in policies' per-model keys, for the snapshot: each one set when the table holds
/// it with the built-in type (the kind that reads it has validated it).
fn overrides_of(params: &toml::Table) -> ModelOverrides {
    let duration = |key: &str| {
        params
            .get(key)
            .and_then(toml::Value::as_str)
            .and_then(|s| humantime::parse_duration(s).ok())
    };
    ModelOverrides {
        idle: duration("idle"),
        step: duration("step"),
        ttl: duration("ttl"),
        min_workers: params
            .get("min_workers")
            .and_then(toml::Value::as_integer)
            .and_then(|n| usize::try_from(n).ok()),
    }
}
