//! From a loaded config to a running system: a [`PoolBuilder`] per `[pools.NAME]`, and a
//! scheduler with the tick, the default policy and each pool's own policy.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use poolwarden_policies::EvictionPolicy;

use super::{BuildError, Config, PolicyRegistry, PolicyScope, PolicySpec};
use crate::clock::Clock;
use crate::pool::{Pool, PoolBuilder, Worker, WorkerFactory};
use crate::probe::MemoryProbe;
use crate::scheduler::{Scheduler, SchedulerBuilder};

impl Config {
    /// A builder for the pool `[pools.NAME]` with every key of its section applied:
    /// `max_workers_per_model`, `max_in_flight_per_worker`, `acquire_timeout`,
    /// `spawn_timeout`, `budget` (the [`crate::Budget`] this config made for that name, shared
    /// by every pool that names it), `memory` (the footprint admission reserves before a load,
    /// per model or for the pool), `cold_start` (the load time a pre-warm starts ahead by),
    /// and each model's overrides from `[pools.NAME.models.KEY]`; the policy's `min_workers`
    /// is the floor admission leaves a key at. Add the clock (the scheduler's) and anything
    /// else, then `build()`. A name the config does not have is [`BuildError::UnknownPool`].
    ///
    /// ```
    /// use poolwarden::config::{Config, PolicyRegistry};
    /// use poolwarden::{SpawnError, Worker};
    ///
    /// struct Model;
    /// impl Worker for Model {
    ///     fn memory_bytes(&self) -> u64 { 1 << 30 }
    /// }
    ///
    /// let registry = PolicyRegistry::new();
    /// let config = Config::from_toml("[pools.text]\nmax_workers_per_model = 2\n", "p.toml", &registry).unwrap();
    /// let pool = config
    ///     .pool_builder("text", |_key: &str| Ok::<_, SpawnError>(Model))
    ///     .unwrap()
    ///     .build();
    /// assert_eq!(pool.name(), "text");
    /// let missing = config.pool_builder("vision", |_key: &str| Ok::<_, SpawnError>(Model));
    /// assert_eq!(
    ///     missing.err().unwrap().to_string(),
    ///     "p.toml has no pool `vision` (its pools: text)"
    /// );
    /// ```
    pub fn pool_builder<W: Worker>(
        &self,
        name: &str,
        factory: impl WorkerFactory<W>,
    ) -> Result<PoolBuilder<W>, BuildError> {
        let pool = self.pool(name)?;
        let builder = Pool::builder(name, factory);
        self.apply_pool(name, pool, builder)
    }

    /// [`Config::pool_builder`] for an async factory ([`Pool::builder_async`]).
    pub fn pool_builder_async<W: Worker>(
        &self,
        name: &str,
        factory: impl crate::pool::AsyncWorkerFactory<W>,
    ) -> Result<PoolBuilder<W>, BuildError> {
        let pool = self.pool(name)?;
        let builder = Pool::builder_async(name, factory);
        self.apply_pool(name, pool, builder)
    }

    fn apply_pool<W: Worker>(
        &self,
        name: &str,
        pool: &super::PoolConfig,
        builder: PoolBuilder<W>,
    ) -> Result<PoolBuilder<W>, BuildError> {
        let mut builder = builder
            .max_workers_per_model(pool.max_workers_per_model)
            .max_in_flight_per_worker(pool.max_in_flight_per_worker)
            .acquire_timeout(pool.acquire_timeout)
            .spawn_timeout(pool.spawn_timeout)
            .memory(pool.memory.bytes())
            .cold_start(pool.cold_start)
            .min_workers(min_workers(self.effective_policy(name)?));
        if let Some(budget) = &pool.budget {
            builder = builder.budget(&self.budget(budget)?);
        }
        for (model, model_config) in &pool.models {
            builder = builder.model_overrides(model, model_config.overrides);
            if let Some(memory) = model_config.memory {
                builder = builder.model_memory(model, memory.bytes());
            }
            if let Some(load) = model_config.cold_start {
                builder = builder.model_cold_start(model, load);
            }
        }
        Ok(builder)
    }

    /// A scheduler builder with `[scheduler]`'s tick, the default policy, and every pool's
    /// own policy, each built with its per-model values. Add the clock (the pools') and a
    /// memory probe if a policy needs one, `build()`, then register each pool with
    /// [`ConfiguredScheduler::register`], which gives a pool its own policy when it has one.
    ///
    /// ```
    /// use poolwarden::config::{Config, PolicyRegistry};
    /// use poolwarden::{FixedProbe, SpawnError, Worker};
    ///
    /// struct Model;
    /// impl Worker for Model {
    ///     fn memory_bytes(&self) -> u64 { 1 << 30 }
    /// }
    ///
    /// let toml = r#"
    /// [scheduler]
    /// tick = "250ms"
    /// [pools.text]
    /// [pools.vision.policy]
    /// kind = "keep-alive"
    /// ttl = "30s"
    /// "#;
    /// let registry = PolicyRegistry::new();
    /// let config = Config::from_toml(toml, "two.toml", &registry).unwrap();
    /// let scheduler = config.scheduler_builder(&registry).unwrap().build();
    /// for name in ["text", "vision"] {
    ///     let pool = config.pool_builder(name, |_key: &str| Ok::<_, SpawnError>(Model)).unwrap().build();
    ///     scheduler.register(&pool).unwrap();
    /// }
    /// assert_eq!(scheduler.tick_interval(), std::time::Duration::from_millis(250));
    /// ```
    pub fn scheduler_builder(
        &self,
        registry: &PolicyRegistry,
    ) -> Result<ConfiguredSchedulerBuilder, BuildError> {
        self.scheduler_builder_with(&self.policy, registry)
    }

    /// Like [`Config::scheduler_builder`], with `default` as the default policy instead of
    /// `[policy]` (the simulator compares policies this way). Pools with their own policy
    /// keep it.
    pub fn scheduler_builder_with(
        &self,
        default: &PolicySpec,
        registry: &PolicyRegistry,
    ) -> Result<ConfiguredSchedulerBuilder, BuildError> {
        let default = self.policy_instance(default, PolicyScope::Default, registry)?;
        let mut pools = BTreeMap::new();
        for name in self.pools.keys() {
            pools.insert(name.clone(), self.pool_policy(name, registry)?);
        }
        Ok(ConfiguredSchedulerBuilder {
            builder: Scheduler::builder()
                .tick(self.scheduler.tick)
                .policy(default),
            pools,
            source: self.source.clone(),
        })
    }
}

/// A [`SchedulerBuilder`] with a config's tick and policies, from [`Config::scheduler_builder`].
pub struct ConfiguredSchedulerBuilder {
    builder: SchedulerBuilder,
    pools: BTreeMap<String, Option<Box<dyn EvictionPolicy>>>,
    source: String,
}

impl ConfiguredSchedulerBuilder {
    /// The clock; it must be the pools' clock. Default: the process-wide TSC clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.builder = self.builder.clock(clock);
        self
    }

    /// The memory probe. Default: none (memory readings unknown, so memory-pressure does
    /// nothing).
    pub fn probe(mut self, probe: impl MemoryProbe) -> Self {
        self.builder = self.builder.probe(probe);
        self
    }

    /// Any other setting of the underlying [`SchedulerBuilder`].
    pub fn with(mut self, f: impl FnOnce(SchedulerBuilder) -> SchedulerBuilder) -> Self {
        self.builder = f(self.builder);
        self
    }

    /// The scheduler, not yet ticking and with no pool registered.
    pub fn build(self) -> ConfiguredScheduler {
        ConfiguredScheduler {
            scheduler: self.builder.build(),
            state: Mutex::new(Registration {
                waiting: self.pools,
                registered: BTreeSet::new(),
            }),
            source: self.source,
        }
    }
}

/// A [`Scheduler`] that knows its config's pools: [`ConfiguredScheduler::register`] registers
/// a pool under its own policy when the config gives it one, else under the default policy.
/// Everything else is the scheduler's ([`Deref`]).
pub struct ConfiguredScheduler {
    scheduler: Scheduler,
    state: Mutex<Registration>,
    source: String,
}

struct Registration {
    /// Each configured pool not yet registered, with its own policy if it has one.
    waiting: BTreeMap<String, Option<Box<dyn EvictionPolicy>>>,
    /// The pools registered so far.
    registered: BTreeSet<String>,
}

impl ConfiguredScheduler {
    /// Registers `pool` under the policy the config gives it (found by [`Pool::name`]). A pool
    /// the config does not have is [`BuildError::UnknownPool`]; registering the same name
    /// twice is [`BuildError::AlreadyRegistered`].
    pub fn register<W: Worker>(&self, pool: &Pool<W>) -> Result<(), BuildError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let name = pool.name();
        if state.registered.contains(name) {
            return Err(BuildError::AlreadyRegistered {
                pool: name.to_string(),
            });
        }
        let Some(own) = state.waiting.remove(name) else {
            let mut known: Vec<String> = state.waiting.keys().cloned().collect();
            known.extend(state.registered.iter().cloned());
            known.sort();
            return Err(BuildError::UnknownPool {
                pool: name.to_string(),
                config: self.source.clone(),
                known,
            });
        };
        match own {
            Some(policy) => self.scheduler.register_with_policy(pool, policy),
            None => self.scheduler.register(pool),
        }
        state.registered.insert(name.to_string());
        Ok(())
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }
}

impl Deref for ConfiguredScheduler {
    type Target = Scheduler;

    fn deref(&self) -> &Scheduler {
        &self.scheduler
    }
}

/// The `min_workers` a policy keeps every key at (a chain: the highest of its members').
pub(crate) fn min_workers(spec: &PolicySpec) -> usize {
    let own = spec
        .params
        .get("min_workers")
        .and_then(toml::Value::as_integer)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    spec.members.iter().map(min_workers).fold(own, usize::max)
}
