//! Configuration errors: every one names the file, and where it can, the line, column and key.
//! Building policies, pools and schedulers from a loaded config has its own error,
//! [`BuildError`].

use std::fmt;
use std::sync::Arc;

use poolwarden_policies::InvalidParameter;

/// A configuration that could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, unreadable); the I/O error is the source.
    #[error("{file}: cannot read")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The file is larger than any config needs ([`super::MAX_CONFIG_BYTES`]); it was not
    /// parsed.
    #[error("{file}: {bytes} bytes is more than a config may hold ({limit} bytes)")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size (at least; reading stopped past the limit).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The file has no table at the path poolwarden's config was asked to load from.
    #[error("{file}: no `[{table}]` table (poolwarden's configuration is read from it)")]
    MissingTable {
        /// The file.
        file: String,
        /// The table's path from the file's root (`poolwarden`, `tool.poolwarden`).
        table: String,
    },
    /// The file was read but is wrong at a known place.
    #[error("{}", Located(self))]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The key path from the file's root (`pools.text.max_workers_per_model`); empty for
        /// a syntax error outside any key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

struct Located<'a>(&'a ConfigError);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ConfigError::Invalid {
            file,
            line,
            column,
            key,
            message,
        } = self.0
        {
            write!(f, "{file}:{line}:{column}: ")?;
            if !key.is_empty() {
                write!(f, "`{key}`: ")?;
            }
            write!(f, "{message}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::TooLarge { file, .. }
            | ConfigError::MissingTable { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The key path, for a located error.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// `(line, column)`, for a located error.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }

    /// The message of a located error, without the file, position and key.
    pub fn message(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// A policy, pool or scheduler could not be built from a configuration.
///
/// It converts into `Box<dyn Error>` and `anyhow::Error` with `?`:
///
/// ```
/// use poolwarden::config::{Config, PolicyRegistry};
///
/// fn default_policy_name() -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
///     let registry = PolicyRegistry::new();
///     let config = Config::embedded_default(&registry)?;
///     let policy = config.default_policy(&registry)?;
///     Ok(policy.name().to_string())
/// }
/// assert_eq!(default_policy_name().unwrap(), "gradual-lru");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// No policy of this kind is registered.
    #[error("unknown policy kind `{kind}`; known kinds: {}", known.join(", "))]
    UnknownKind {
        /// The kind asked for.
        kind: String,
        /// The registered kinds.
        known: Vec<String>,
    },
    /// The policy's parameters did not deserialize.
    #[error("policy `{kind}`: {message}")]
    Parameters {
        /// The kind.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// A parameter is out of range; the source names it.
    #[error("policy `{kind}` has an invalid parameter")]
    InvalidParameter {
        /// The kind.
        kind: String,
        /// The parameter and what is wrong with it.
        #[source]
        source: InvalidParameter,
    },
    /// One model's per-model values did not deserialize.
    #[error("policy `{kind}`: the values of model `{model}` in pool `{pool}`: {message}")]
    ModelParameters {
        /// The kind.
        kind: String,
        /// The pool.
        pool: String,
        /// The model.
        model: String,
        /// What is wrong.
        message: String,
    },
    /// A chain without members.
    #[error("a chain needs at least one policy")]
    EmptyChain,
    /// The configuration has no `[pools.NAME]` of this name.
    #[error("{config} has no pool `{pool}` (its pools: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownPool {
        /// The pool asked for.
        pool: String,
        /// The configuration's source.
        config: String,
        /// The pools it has.
        known: Vec<String>,
    },
    /// A pool of this name was registered already.
    #[error("pool `{pool}` is registered already")]
    AlreadyRegistered {
        /// The pool.
        pool: String,
    },
    /// The configuration has no `[budgets.NAME]` of this name.
    #[error("{config} has no budget `{budget}`")]
    UnknownBudget {
        /// The budget asked for.
        budget: String,
        /// The configuration's source.
        config: String,
    },
    /// A budget's probe could not be opened (no NVIDIA driver, a build without the `nvml`
    /// feature).
    #[error("budget `{budget}`: cannot open its probe `{probe}`: {message}")]
    Probe {
        /// The budget.
        budget: String,
        /// The probe as configured.
        probe: String,
        /// Why.
        message: String,
    },
}
