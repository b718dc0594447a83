//! A probe that returns whatever it was last told, for tests and the simulator.

use std::sync::{Arc, Mutex};

use super::{MemoryProbe, MemoryReading};

/// Returns a reading set by hand. Clones share the value, so a test can keep one clone and
/// change the reading while the scheduler owns another.
#[derive(Debug, Clone, Default)]
pub struct FixedProbe {
    reading: Arc<Mutex<Option<MemoryReading>>>,
}

impl FixedProbe {
    /// A probe that returns `reading` (`None`: unknown).
    pub fn new(reading: Option<MemoryReading>) -> Self {
        FixedProbe {
            reading: Arc::new(Mutex::new(reading)),
        }
    }

    /// A probe reporting `used` bytes out of `total`.
    pub fn used_of(used: u64, total: u64) -> Self {
        Self::new(Some(MemoryReading {
            total,
            available: total.saturating_sub(used),
            process_rss: None,
        }))
    }

    /// Changes the reading.
    pub fn set(&self, reading: Option<MemoryReading>) {
        *self.reading.lock().unwrap_or_else(|e| e.into_inner()) = reading;
    }
}

impl MemoryProbe for FixedProbe {
    fn read(&mut self) -> Option<MemoryReading> {
        *self.reading.lock().unwrap_or_else(|e| e.into_inner())
    }
}
