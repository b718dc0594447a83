//! Memory probes: where the scheduler's one memory reading per tick comes from. Units are bytes
//! throughout.

mod cgroup;
mod fixed;
#[cfg(feature = "nvml")]
mod nvml;
mod sysinfo_probe;

pub use cgroup::{CgroupMemory, CgroupVersion};
pub use fixed::FixedProbe;
#[cfg(feature = "nvml")]
pub use nvml::{NvmlProbe, NvmlProbeError};
pub use poolwarden_policies::MemoryReading;
pub use sysinfo_probe::{process_rss, SysinfoProbe};

/// A source of memory readings. `None` means "unknown": the probe failed or read nonsense, and
/// memory-pressure then evicts nothing.
pub trait MemoryProbe: Send + 'static {
    /// One reading.
    fn read(&mut self) -> Option<MemoryReading>;
}

impl<P: MemoryProbe + ?Sized> MemoryProbe for Box<P> {
    fn read(&mut self) -> Option<MemoryReading> {
        (**self).read()
    }
}

/// A reading that makes sense: a non-zero total, and no more available than the total.
pub fn sane(reading: Option<MemoryReading>) -> Option<MemoryReading> {
    reading.filter(|r| r.total > 0 && r.available <= r.total)
}
