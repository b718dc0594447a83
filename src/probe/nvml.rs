//! A GPU memory (VRAM) probe through NVML, so that memory-pressure can watch a GPU (cargo
//! feature `nvml`).
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`, `nvml.dll`): the feature builds on machines
//! without an NVIDIA driver, and [`NvmlProbe::new`] then returns an error instead of panicking.

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use super::{sane, MemoryProbe, MemoryReading};

/// Why an [`NvmlProbe`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NvmlProbeError {
    /// NVML could not be loaded or initialised: no NVIDIA driver, no NVML library on the
    /// library path, or no permission to talk to the driver.
    #[error(
        "cannot initialise NVML (is an NVIDIA driver installed, and libnvidia-ml loadable?): {source}"
    )]
    Init {
        /// NVML's error.
        #[source]
        source: NvmlError,
    },
    /// NVML works, but the GPU could not be opened or its memory read.
    #[error("cannot read the memory of GPU {index} through NVML: {source}")]
    Device {
        /// The GPU's index.
        index: u32,
        /// NVML's error.
        #[source]
        source: NvmlError,
    },
}

/// Reads one GPU's memory through NVML: `total` is the GPU's memory, `available` what is free
/// on it, and `process_rss` this process's own GPU memory when NVML lists it among the GPU's
/// compute processes (it cannot inside a container with its own PID namespace, and then it is
/// `None`). Give it to [`crate::SchedulerBuilder::probe`] and memory-pressure watches the GPU.
///
/// A failed read is logged (the first, then at every power of two) and reads as unknown, so
/// memory-pressure evicts nothing on it.
pub struct NvmlProbe {
    nvml: Nvml,
    index: u32,
    name: String,
    pid: u32,
    failures: u64,
}

impl NvmlProbe {
    /// A probe of the GPU at `index` (0 for the first). Initialises NVML, opens the GPU and
    /// reads its memory once; any failure is an error, never a panic.
    pub fn new(index: u32) -> Result<Self, NvmlProbeError> {
        let nvml = Nvml::init().map_err(|source| NvmlProbeError::Init { source })?;
        let device_error = |source| NvmlProbeError::Device { index, source };
        let name = {
            let device = nvml.device_by_index(index).map_err(device_error)?;
            device.memory_info().map_err(device_error)?;
            device.name().unwrap_or_else(|_| format!("GPU {index}"))
        };
        Ok(NvmlProbe {
            nvml,
            index,
            name,
            pid: std::process::id(),
            failures: 0,
        })
    }

    /// The number of GPUs NVML sees.
    pub fn device_count() -> Result<u32, NvmlProbeError> {
        let nvml = Nvml::init().map_err(|source| NvmlProbeError::Init { source })?;
        nvml.device_count()
            .map_err(|source| NvmlProbeError::Device { index: 0, source })
    }

    /// The GPU's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The GPU's name, as NVML gives it (`"NVIDIA H100 80GB HBM3"`).
    pub fn device_name(&self) -> &str {
        &self.name
    }

    fn try_read(&self) -> Result<MemoryReading, NvmlError> {
        let device = self.nvml.device_by_index(self.index)?;
        let memory = device.memory_info()?;
        // Our own use, when the driver lets us see it; its absence is no failure.
        let process_rss = device
            .running_compute_processes()
            .ok()
            .and_then(|processes| {
                processes
                    .into_iter()
                    .find(|p| p.pid == self.pid)
                    .and_then(|p| match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes),
                        UsedGpuMemory::Unavailable => None,
                    })
            });
        Ok(MemoryReading {
            total: memory.total,
            available: memory.free.min(memory.total),
            process_rss,
        })
    }
}

impl MemoryProbe for NvmlProbe {
    fn read(&mut self) -> Option<MemoryReading> {
        match self.try_read() {
            Ok(reading) => sane(Some(reading)),
            Err(e) => {
                self.failures += 1;
                if self.failures.is_power_of_two() {
                    log::warn!(
                        "NVML: reading the memory of GPU {} ({}) failed ({} time(s)): {e}; memory is unknown this tick",
                        self.index,
                        self.name,
                        self.failures
                    );
                }
                None
            }
        }
    }
}

impl std::fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlProbe")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a GPU this checks the error path (a clear error, no panic); on one
    /// with a GPU, that the reading makes sense.
    #[test]
    fn new_gives_a_reading_or_a_clear_error() {
        match NvmlProbe::new(0) {
            Ok(mut probe) => {
                let reading = probe.read().expect("a reading from a working GPU");
                assert!(reading.total > 0);
                assert!(reading.available <= reading.total);
            }
            Err(error) => {
                let message = error.to_string();
                assert!(message.contains("NVML"), "{message}");
            }
        }
    }
}
