//! The production probe: sysinfo for RAM, the process's cgroup for its limit.

use sysinfo::{MemoryRefreshKind, System};

use super::cgroup::CgroupLocator;
use super::{sane, CgroupMemory, MemoryProbe, MemoryReading};

/// Reads physical memory through one long-lived sysinfo [`System`] that refreshes RAM only
/// (never `System::new_all()`, which scans every process), and applies the process's cgroup
/// limit when one is set: sysinfo's totals are the host's even inside a container. The
/// process's RSS comes from `/proc/self/status`.
pub struct SysinfoProbe {
    system: System,
    cgroup: Option<CgroupLocator>,
}

impl SysinfoProbe {
    /// A probe for this process. Finds its cgroup once.
    pub fn new() -> Self {
        SysinfoProbe {
            system: System::new(),
            cgroup: CgroupLocator::discover(),
        }
    }

    /// A probe of the host's RAM, ignoring any cgroup limit (a budget's `probe = "system"`).
    pub fn host() -> Self {
        SysinfoProbe {
            system: System::new(),
            cgroup: None,
        }
    }

    /// The cgroup limit and usage as of now, if the process has a limit.
    pub fn cgroup(&self) -> Option<CgroupMemory> {
        self.cgroup.as_ref().and_then(CgroupLocator::read)
    }
}

impl Default for SysinfoProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryProbe for SysinfoProbe {
    fn read(&mut self) -> Option<MemoryReading> {
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let host_total = self.system.total_memory();
        let host_available = self.system.available_memory();
        let process_rss = process_rss();
        let reading = match self.cgroup() {
            Some(cg) if cg.limit < host_total => MemoryReading {
                total: cg.limit,
                available: cg.limit.saturating_sub(cg.used).min(host_available),
                process_rss,
            },
            _ => MemoryReading {
                total: host_total,
                available: host_available,
                process_rss,
            },
        };
        sane(Some(reading))
    }
}

/// The process's resident set size from `/proc/self/status` (`VmRSS`), in bytes.
pub fn process_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sane_memory_on_this_machine() {
        let mut probe = SysinfoProbe::new();
        let reading = probe.read().expect("a Linux machine has a memory reading");
        assert!(reading.total > 0);
        assert!(reading.available <= reading.total);
        assert!(reading.process_rss.unwrap_or(0) > 0);
    }
}
