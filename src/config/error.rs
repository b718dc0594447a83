//! Configuration errors: every one names the file, and where it can, the line, column and key.

use std::fmt;

/// A configuration that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: {message}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        message: String,
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
        /// The key path (`pools.text.max_workers_per_model`); empty for a syntax error outside
        /// any key.
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
            ConfigError::Read { file, .. } | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The key path, for a located error.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }

    /// `(line, column)`, for a located error.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Invalid { line, column, .. } => Some((*line, *column)),
            ConfigError::Read { .. } => None,
        }
    }
}
