//! The policy registry: `kind = "..."` → a policy built from its serde config struct, and the
//! per-model keys each kind reads from `[pools.NAME.models.KEY]`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use poolwarden_policies::{
    ChainPolicy, EvictionPolicy, GradualLru, GradualLruConfig, HybridHistogram,
    HybridHistogramConfig, InvalidParameter, KeepAlive, KeepAliveConfig, MaxLifetime,
    MaxLifetimeConfig, MemoryPressure, MemoryPressureConfig, Noop, NoopConfig,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// The kind of the built-in combinator that unions several policies.
pub const CHAIN: &str = "chain";

/// A table of parameters: the spanned source (errors carry positions), or an already validated
/// table (building a policy for a run).
pub(crate) enum Value<'a> {
    Spanned(Spanned<DeValue<'a>>),
    Table(toml::Table),
}

impl Value<'_> {
    fn deserialize<T: DeserializeOwned>(&self) -> Result<T, toml::de::Error> {
        match self {
            Value::Spanned(value) => T::deserialize(ValueDeserializer::from(value.clone())),
            Value::Table(table) => toml::Value::Table(table.clone()).try_into(),
        }
    }

    /// Only the entries whose key is in `keys`; `None` when there is none.
    fn only(&self, keys: &[&str]) -> Option<Value<'_>> {
        match self {
            Value::Spanned(value) => {
                let DeValue::Table(table) = value.get_ref() else {
                    return None;
                };
                let mut kept = DeTable::new();
                for (key, item) in table.iter() {
                    if keys.contains(&key.get_ref().as_ref()) {
                        kept.insert(key.clone(), item.clone());
                    }
                }
                (!kept.is_empty())
                    .then(|| Value::Spanned(Spanned::new(value.span(), DeValue::Table(kept))))
            }
            Value::Table(table) => {
                let kept: toml::Table = table
                    .iter()
                    .filter(|(key, _)| keys.contains(&key.as_str()))
                    .map(|(key, item)| (key.clone(), item.clone()))
                    .collect();
                (!kept.is_empty()).then_some(Value::Table(kept))
            }
        }
    }
}

/// One model's per-model values, as the factory of a kind receives them.
pub(crate) struct ModelInput<'v, 'a> {
    pub(crate) pool: &'v str,
    pub(crate) model: &'v str,
    pub(crate) value: &'v Value<'a>,
}

/// Why a registered factory failed.
#[derive(Debug)]
pub(crate) enum BuildFailure {
    /// The parameters did not deserialize (`toml` error, with a span when it has one).
    Deserialize(toml::de::Error),
    /// One model's per-model values did not deserialize.
    Model {
        pool: String,
        model: String,
        error: Box<toml::de::Error>,
    },
    /// A parameter was out of range.
    Invalid(InvalidParameter),
}

type Factory = Arc<
    dyn Fn(
            &Value<'_>,
            Vec<(String, String, Value<'_>)>,
        ) -> Result<Box<dyn EvictionPolicy>, BuildFailure>
        + Send
        + Sync,
>;

type Effective = Arc<dyn Fn(&toml::Table) -> Option<toml::Table> + Send + Sync>;

#[derive(Clone)]
struct Kind {
    factory: Factory,
    /// The keys this kind reads under `[pools.NAME.models.KEY]`.
    model_keys: Vec<&'static str>,
    /// Per-model keys that override a parameter of another name: (key, parameter).
    renamed: Vec<(&'static str, &'static str)>,
    /// The parameters in force (defaults filled in) for a parameter table; kinds registered
    /// with [`PolicyRegistry::register_with_models`] only.
    effective: Option<Effective>,
}

/// The per-model values of one policy kind, by pool and model: what a factory registered with
/// [`PolicyRegistry::register_with_models`] receives. It holds an entry for each model of a
/// pool the policy governs whose `[pools.POOL.models.MODEL]` table sets at least one of the
/// kind's per-model keys, deserialized into the kind's own per-model struct `M`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerModel<M> {
    by_pool: BTreeMap<String, BTreeMap<String, M>>,
}

impl<M> Default for PerModel<M> {
    fn default() -> Self {
        PerModel {
            by_pool: BTreeMap::new(),
        }
    }
}

impl<M> PerModel<M> {
    /// No per-model values.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the values of `model` in `pool`.
    pub fn insert(&mut self, pool: &str, model: &str, values: M) {
        self.by_pool
            .entry(pool.to_string())
            .or_default()
            .insert(model.to_string(), values);
    }

    /// The values of `model` in `pool`, if its table sets any of the kind's keys. In
    /// [`EvictionPolicy::propose`], look a key up with `snapshot.pool_of(key).name` and
    /// `key.key`.
    pub fn get(&self, pool: &str, model: &str) -> Option<&M> {
        self.by_pool.get(pool)?.get(model)
    }

    /// Every `(pool, model, values)`, by pool then model.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &M)> {
        self.by_pool.iter().flat_map(|(pool, models)| {
            models
                .iter()
                .map(move |(model, values)| (pool.as_str(), model.as_str(), values))
        })
    }

    /// How many models have values.
    pub fn len(&self) -> usize {
        self.by_pool.values().map(BTreeMap::len).sum()
    }

    /// Whether no model has values.
    pub fn is_empty(&self) -> bool {
        self.by_pool.values().all(BTreeMap::is_empty)
    }

    /// The values as nested maps: pool → model → values.
    pub fn into_map(self) -> BTreeMap<String, BTreeMap<String, M>> {
        self.by_pool
    }
}

/// Maps policy kinds to factories, and records which per-model keys each kind reads.
/// [`PolicyRegistry::new`] knows the built-ins (`gradual-lru`, `memory-pressure`,
/// `keep-alive`, `max-lifetime`, `hybrid-histogram`, `noop`, and `chain`); a downstream crate adds its own kind with
/// [`PolicyRegistry::register`] (no per-model keys) or [`PolicyRegistry::register_with_models`]
/// (per-model keys), and operators select it in TOML.
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
/// assert_eq!(registry.model_keys("quiet"), Some(&[][..]));
/// assert_eq!(registry.model_keys("keep-alive"), Some(&["ttl", "min_workers"][..]));
/// ```
#[derive(Clone)]
pub struct PolicyRegistry {
    kinds: BTreeMap<String, Kind>,
}

impl Default for PolicyRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-model keys of `gradual-lru`; the pool hands them to the policy in the snapshot
/// ([`poolwarden_policies::ModelOverrides`]), so the factory only validates them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct GradualLruModel {
    #[serde(default, with = "humantime_serde::option")]
    idle: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    step: Option<Duration>,
    #[serde(default)]
    min_workers: Option<usize>,
}

/// The per-model keys of `keep-alive` and `hybrid-histogram` (the fixed keep-alive it falls
/// back to, and the floor; see [`GradualLruModel`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KeepAliveModel {
    #[serde(default, with = "humantime_serde::option")]
    ttl: Option<Duration>,
    #[serde(default)]
    min_workers: Option<usize>,
}

impl PolicyRegistry {
    /// A registry with the built-in policies.
    pub fn new() -> Self {
        let mut registry = Self::empty();
        registry.register_with_models(
            "gradual-lru",
            |c: GradualLruConfig, _: PerModel<GradualLruModel>| boxed(GradualLru::new(c)),
        );
        registry.register("memory-pressure", |c: MemoryPressureConfig| {
            boxed(MemoryPressure::new(c))
        });
        registry.register_with_models(
            "keep-alive",
            |c: KeepAliveConfig, _: PerModel<KeepAliveModel>| boxed(KeepAlive::new(c)),
        );
        registry.register("max-lifetime", |c: MaxLifetimeConfig| {
            boxed(MaxLifetime::new(c))
        });
        registry.register_with_models(
            "hybrid-histogram",
            |c: HybridHistogramConfig, _: PerModel<KeepAliveModel>| boxed(HybridHistogram::new(c)),
        );
        // Its per-model `ttl` overrides the fixed keep-alive it falls back to.
        if let Some(kind) = registry.kinds.get_mut("hybrid-histogram") {
            kind.renamed.push(("ttl", "fallback_keep_alive"));
        }
        registry.register("noop", |_: NoopConfig| {
            Ok(Box::new(Noop) as Box<dyn EvictionPolicy>)
        });
        registry
    }

    /// A registry that knows only `chain`.
    pub fn empty() -> Self {
        PolicyRegistry {
            kinds: BTreeMap::new(),
        }
    }

    /// Registers `kind`, which reads no per-model key: its parameters (every key of the
    /// policy's table but `kind`) deserialize into `C`, and `build` makes the policy. Give `C`
    /// `#[serde(deny_unknown_fields)]` so that a typo is an error, never a silent default.
    /// Registering a kind again replaces it; `chain` cannot be replaced.
    pub fn register<C, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned + 'static,
        F: Fn(C) -> Result<Box<dyn EvictionPolicy>, InvalidParameter> + Send + Sync + 'static,
    {
        let factory: Factory = Arc::new(move |params: &Value<'_>, _models| {
            let config: C = params.deserialize().map_err(BuildFailure::Deserialize)?;
            build(config).map_err(BuildFailure::Invalid)
        });
        self.insert(
            kind,
            Kind {
                factory,
                model_keys: Vec::new(),
                renamed: Vec::new(),
                effective: None,
            },
        )
    }

    /// Registers `kind` with per-model keys: the fields of `M` are the keys it reads under
    /// `[pools.NAME.models.KEY]`, which the config then accepts for the pools it governs (any
    /// other unknown key is still an error). `build` receives the parameters as `C`, and each
    /// model's values as `M`, keyed by pool and model ([`PerModel`]). `M` must be a plain
    /// struct deriving `Deserialize` (its field names are read from the derive; no
    /// `flatten`), usually with every field an `Option` so that a model sets only what it
    /// overrides. `C` is serialized back to show the values in force in `poolwarden check`.
    ///
    /// The factory is called at load to validate the parameters (without per-model values,
    /// then with each model's values alone, so that an error is located at its key), and
    /// again for every instance built.
    ///
    /// ```
    /// use std::time::Duration;
    /// use poolwarden::config::{Config, PerModel, PolicyRegistry};
    /// use poolwarden::policies::{format_duration, EvictionPolicy, Proposal, Snapshot};
    ///
    /// #[derive(serde::Deserialize, serde::Serialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct PatientConfig {
    ///     #[serde(with = "humantime_serde")]
    ///     patience: Duration,
    /// }
    ///
    /// #[derive(serde::Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct PatientModel {
    ///     #[serde(default, with = "humantime_serde::option")]
    ///     patience: Option<Duration>,
    /// }
    ///
    /// struct Patient { llama: Option<Duration> }
    ///
    /// impl EvictionPolicy for Patient {
    ///     fn name(&self) -> &str { "patient" }
    ///     fn propose(&mut self, _: &Snapshot<'_>, _: &mut Vec<Proposal>) {}
    ///     fn describe(&self) -> String {
    ///         format!("patient llama={}", self.llama.map_or("-".into(), format_duration))
    ///     }
    /// }
    ///
    /// let mut registry = PolicyRegistry::new();
    /// registry.register_with_models("patient", |_: PatientConfig, models: PerModel<PatientModel>| {
    ///     let llama = models.get("text", "llama").and_then(|m| m.patience);
    ///     Ok(Box::new(Patient { llama }) as Box<dyn EvictionPolicy>)
    /// });
    /// assert_eq!(registry.model_keys("patient"), Some(&["patience"][..]));
    ///
    /// let toml = r#"
    /// [policy]
    /// kind = "patient"
    /// patience = "1m"
    /// [pools.text.models.llama]
    /// patience = "90s"
    /// "#;
    /// let config = Config::from_toml(toml, "patient.toml", &registry).unwrap();
    /// let policy = config.default_policy(&registry).unwrap();
    /// assert_eq!(policy.describe(), "patient llama=1m 30s");
    /// ```
    pub fn register_with_models<C, M, F>(&mut self, kind: &str, build: F) -> &mut Self
    where
        C: DeserializeOwned + Serialize + 'static,
        M: DeserializeOwned + 'static,
        F: Fn(C, PerModel<M>) -> Result<Box<dyn EvictionPolicy>, InvalidParameter>
            + Send
            + Sync
            + 'static,
    {
        let model_keys = struct_fields::<M>();
        if model_keys.is_empty() {
            log::warn!(
                "policy kind `{kind}`: its per-model type is not a plain struct, so it reads no per-model key"
            );
        }
        let factory: Factory = Arc::new(move |params: &Value<'_>, models| {
            let config: C = params.deserialize().map_err(BuildFailure::Deserialize)?;
            let mut per_model = PerModel::new();
            for (pool, model, value) in models {
                let values: M = value.deserialize().map_err(|error| BuildFailure::Model {
                    pool: pool.clone(),
                    model: model.clone(),
                    error: Box::new(error),
                })?;
                per_model.insert(&pool, &model, values);
            }
            build(config, per_model).map_err(BuildFailure::Invalid)
        });
        let effective: Effective = Arc::new(|params: &toml::Table| {
            let config: C = toml::Value::Table(params.clone()).try_into().ok()?;
            match toml::Value::try_from(config).ok()? {
                toml::Value::Table(table) => Some(table),
                _ => None,
            }
        });
        self.insert(
            kind,
            Kind {
                factory,
                model_keys: model_keys.to_vec(),
                renamed: Vec::new(),
                effective: Some(effective),
            },
        )
    }

    fn insert(&mut self, kind: &str, entry: Kind) -> &mut Self {
        if kind == CHAIN {
            log::warn!("the policy kind `chain` is built in and cannot be replaced");
            return self;
        }
        self.kinds.insert(kind.to_string(), entry);
        self
    }

    /// Every known kind, `chain` included, in alphabetical order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        let mut kinds: Vec<&str> = self.kinds.keys().map(String::as_str).collect();
        kinds.push(CHAIN);
        kinds.sort_unstable();
        kinds.into_iter()
    }

    /// Whether `kind` is known (`chain` always is).
    pub fn contains(&self, kind: &str) -> bool {
        kind == CHAIN || self.kinds.contains_key(kind)
    }

    /// The per-model keys `kind` reads under `[pools.NAME.models.KEY]` (besides `memory` and
    /// `cold_start`, which the pool reads); `None` for an unknown kind. A chain reads what its
    /// members read: see [`crate::config::PolicySpec::model_keys`].
    pub fn model_keys(&self, kind: &str) -> Option<&[&'static str]> {
        if kind == CHAIN {
            return Some(&[]);
        }
        self.kinds.get(kind).map(|k| k.model_keys.as_slice())
    }

    /// The policy parameter that a per-model `key` of `kind` overrides: the key's own name,
    /// unless the kind was registered with another (see [`PolicyRegistry::new`]).
    pub(crate) fn param_of<'k>(&self, kind: &str, key: &'k str) -> &'k str {
        self.kinds
            .get(kind)
            .and_then(|k| k.renamed.iter().find(|(model_key, _)| *model_key == key))
            .map_or(key, |(_, param)| param)
    }

    /// The parameters in force for `params` of `kind`, defaults filled in; `None` for a kind
    /// registered without per-model keys.
    pub(crate) fn effective_params(&self, kind: &str, params: &toml::Table) -> Option<toml::Table> {
        (self.kinds.get(kind)?.effective.as_ref()?)(params)
    }

    /// Builds one (non-chain) policy of `kind`. `models` are the per-model tables of the
    /// models it governs; each is narrowed to the keys `kind` reads, and models that set none
    /// of them are left out. `None`: unknown kind.
    pub(crate) fn build_kind(
        &self,
        kind: &str,
        params: &Value<'_>,
        models: &[ModelInput<'_, '_>],
    ) -> Option<Result<Box<dyn EvictionPolicy>, BuildFailure>> {
        let entry = self.kinds.get(kind)?;
        let narrowed = if entry.model_keys.is_empty() {
            Vec::new()
        } else {
            models
                .iter()
                .filter_map(|m| {
                    let value = m.value.only(&entry.model_keys)?;
                    Some((m.pool.to_string(), m.model.to_string(), value))
                })
                .collect()
        };
        Some((entry.factory)(params, narrowed))
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

/// The field names of a struct that derives `Deserialize`, read from the derive: a
/// deserializer that records what `deserialize_struct` is asked for, then gives up.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Probe<'r> {
        fields: &'r mut &'static [&'static str],
    }

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.fields = fields;
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe {
        fields: &mut fields,
    });
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_field_names_of_a_derived_struct() {
        assert_eq!(
            struct_fields::<GradualLruModel>(),
            ["idle", "step", "min_workers"]
        );
        assert_eq!(struct_fields::<KeepAliveModel>(), ["ttl", "min_workers"]);
        assert!(struct_fields::<u32>().is_empty());
        assert!(struct_fields::<BTreeMap<String, u32>>().is_empty());
    }

    #[test]
    fn the_built_ins_declare_the_model_keys_they_read() {
        let registry = PolicyRegistry::new();
        assert_eq!(
            registry.model_keys("gradual-lru"),
            Some(&["idle", "step", "min_workers"][..])
        );
        assert_eq!(
            registry.model_keys("keep-alive"),
            Some(&["ttl", "min_workers"][..])
        );
        for kind in ["memory-pressure", "max-lifetime", "noop", "chain"] {
            assert_eq!(registry.model_keys(kind), Some(&[][..]), "{kind}");
        }
        assert_eq!(registry.model_keys("lfu"), None);
    }

    #[test]
    fn effective_params_fill_in_the_defaults() {
        let registry = PolicyRegistry::new();
        let mut params = toml::Table::new();
        params.insert("ttl".into(), toml::Value::String("90s".into()));
        let effective = registry.effective_params("keep-alive", &params).unwrap();
        assert_eq!(effective["ttl"].as_str(), Some("1m 30s"));
        assert_eq!(effective["min_workers"].as_integer(), Some(0));
        assert!(registry.effective_params("noop", &params).is_none());
    }
}
