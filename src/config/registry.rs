//! The policy registry: `kind = "..."` → a policy built from its serde config struct.

use std::collections::BTreeMap;
use std::sync::Arc;

use poolwarden_policies::{
    ChainPolicy, EvictionPolicy, GradualLru, GradualLruConfig, HybridHistogram,
    HybridHistogramConfig, InvalidParameter, KeepAlive, KeepAliveConfig, MaxLifetime,
    MaxLifetimeConfig, MemoryPressure, MemoryPressureConfig, Noop, NoopConfig,
};
use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

/// The kind of the built-in combinator that unions several policies.
pub const CHAIN: &str = "chain";

/// Where a policy's parameters come from: the spanned source (errors carry positions), or an
/// already validated table (rebuilding a policy for another run).
pub(crate) enum Params<'a> {
    Spanned(Spanned<DeValue<'a>>),
    Table(toml::Table),
}

/// Why a registered factory failed.
#[derive(Debug)]
pub(crate) enum BuildFailure {
    /// The parameters did not deserialize (`toml` error, with a span when it has one).
    Deserialize(toml::de::Error),
    /// A parameter was out of range.
    Invalid(InvalidParameter),
}

type Factory =
    Arc<dyn Fn(Params<'_>) -> Result<Box<dyn EvictionPolicy>, BuildFailure> + Send + Sync>;

/// Maps policy kinds to factories. [`PolicyRegistry::new`] knows the built-ins (`gradual-lru`,
/// `memory-pressure`, `keep-alive`, `max-lifetime`, `hybrid-histogram`, `noop`, and `chain`); a
/// downstream crate adds its own kind with [`PolicyRegistry::register`], and operators select it
/// in TOML.
///
/// ```
/// use poolwarden::config::PolicyRegistry;
/// use poolwarden::policies::{EvictionPolicy, Noop};
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct QuietConfig {
///     #[allow(dead_code)]
///     level: u32,
/// }
///
/// let mut registry = PolicyRegistry::new();
/// registry.register("quiet", |_config: QuietConfig| Ok(Box::new(Noop) as Box<dyn EvictionPolicy>));
/// assert!(registry.kinds().any(|k| k == "quiet"));
/// ```
#[derive(Clone)]
pub struct PolicyRegistry {
    factories: BTreeMap<String, Factory>,
}

impl Default for PolicyRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyRegistry {
    /// A registry with the built-in policies.
    pub fn new() -> Self {
        let mut registry = Self::empty();
        registry.register("gradual-lru", |c: GradualLruConfig| {
            boxed(GradualLru::new(c))
        });
        registry.register("memory-pressure", |c: MemoryPressureConfig| {
            boxed(MemoryPressure::new(c))
        });
        registry.register("keep-alive", |c: KeepAliveConfig| boxed(KeepAlive::new(c)));
        registry.register("max-lifetime", |c: MaxLifetimeConfig| {
            boxed(MaxLifetime::new(c))
        });
        registry.register("hybrid-histogram", |c: HybridHistogramConfig| {
            boxed(HybridHistogram::new(c))
        });
        registry.register("noop", |_: NoopConfig| {
            Ok(Box::new(Noop) as Box<dyn EvictionPolicy>)
        });
        registry
    }

    /// A registry that knows only `chain`.
    pub fn empty() -> Self {
        PolicyRegistry {
            factories: BTreeMap::new(),
        }
    }

    /// Registers `kind`: its parameters (every key of the policy's table but `kind`)
    /// deserialize into `C`, and `build` makes the policy. Give `C`
    /// `#[serde(deny_unknown_fields)]` so that a typo is an error, never a silent default.
    /// Registering a kind again replaces it; `chain` cannot be replaced.
    pub fn register<C, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned + 'static,
        F: Fn(C) -> Result<Box<dyn EvictionPolicy>, InvalidParameter> + Send + Sync + 'static,
    {
        if kind == CHAIN {
            log::warn!("the policy kind `chain` is built in and cannot be replaced");
            return self;
        }
        let factory: Factory = Arc::new(move |params: Params<'_>| {
            let config: C = match params {
                Params::Spanned(value) => C::deserialize(ValueDeserializer::from(value))
                    .map_err(BuildFailure::Deserialize)?,
                Params::Table(table) => toml::Value::Table(table)
                    .try_into()
                    .map_err(BuildFailure::Deserialize)?,
            };
            build(config).map_err(BuildFailure::Invalid)
        });
        self.factories.insert(kind.to_string(), factory);
        self
    }

    /// Every known kind, `chain` included, in alphabetical order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        let mut kinds: Vec<&str> = self.factories.keys().map(String::as_str).collect();
        kinds.push(CHAIN);
        kinds.sort_unstable();
        kinds.into_iter()
    }

    pub(crate) fn factory(&self, kind: &str) -> Option<&Factory> {
        self.factories.get(kind)
    }

    /// Builds a chain of already-built members.
    pub(crate) fn chain(members: Vec<Box<dyn EvictionPolicy>>) -> Box<dyn EvictionPolicy> {
        Box::new(ChainPolicy::new(members))
    }
}

fn boxed<P: EvictionPolicy + 'static>(
    policy: Result<P, InvalidParameter>,
) -> Result<Box<dyn EvictionPolicy>, InvalidParameter> {
    policy.map(|p| Box::new(p) as Box<dyn EvictionPolicy>)
}
