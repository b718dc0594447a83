//! Admission against a GPU's real memory: a budget whose probe is an NVML device refuses a
//! model that fits the budget's own accounting but not what the GPU has left, because other
//! processes hold it.
//!
//! ```text
//! cargo run --release --example nvml_budget --features nvml -- [--gpu N] [--limit GIB] [--footprint GIB]
//! ```
//!
//! It prints the GPU's reading, then what admission decided for one worker of `--footprint`
//! GiB on a budget of `--limit` GiB (default: the GPU's total): `admitted` or
//! `refused (no memory)`, with the probe's available bytes. Exit status 0 either way; 1 when
//! NVML cannot be read.

use std::process::ExitCode;

use poolwarden::probe::NvmlProbe;
use poolwarden::{Budget, MemoryProbe, Pool, ReserveRefusal, SpawnError, Worker};

struct Model {
    bytes: u64,
}

impl Worker for Model {
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }
}

const GIB: u64 = 1 << 30;

fn flag(args: &[String], name: &str) -> Option<f64> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1)?.parse().ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let gpu = flag(&args, "--gpu").unwrap_or(0.0) as u32;
    let footprint = (flag(&args, "--footprint").unwrap_or(40.0) * GIB as f64) as u64;
    let mut probe = match NvmlProbe::new(gpu) {
        Ok(probe) => probe,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let Some(reading) = probe.read() else {
        eprintln!("error: GPU {gpu} gave no memory reading");
        return ExitCode::FAILURE;
    };
    let gib = |bytes: u64| bytes as f64 / GIB as f64;
    println!(
        "GPU {gpu} ({}): {:.2} GiB total, {:.2} GiB available",
        probe.device_name(),
        gib(reading.total),
        gib(reading.available)
    );
    let limit = flag(&args, "--limit").map_or(reading.total, |g| (g * GIB as f64) as u64);
    let budget = Budget::builder(&format!("gpu{gpu}"), limit)
        .probe(probe)
        .build();
    let pool = Pool::builder("models", move |_key: &str| {
        Ok::<_, SpawnError>(Model { bytes: footprint })
    })
    .budget(&budget)
    .memory(footprint)
    .build();
    let decision = match pool.try_reserve("model-a") {
        Ok(reservation) => {
            drop(reservation.complete(Model { bytes: footprint }));
            "admitted".to_string()
        }
        Err(ReserveRefusal::NoMemory { .. }) => "refused (no memory)".to_string(),
        Err(other) => format!("refused ({other:?})"),
    };
    let stats = budget.stats();
    let available = stats.last_reading.map(|r| r.available_bytes);
    println!(
        "budget {}: limit {:.2} GiB, {:.2} GiB free by its accounting; the probe reads {} available",
        stats.name,
        gib(stats.limit_bytes),
        gib(stats.free_bytes + if decision == "admitted" { footprint } else { 0 }),
        available.map_or("nothing".to_string(), |a| format!("{:.2} GiB", gib(a)))
    );
    println!("a worker of {:.2} GiB: {decision}", gib(footprint));
    ExitCode::SUCCESS
}
