//! Prints one GPU memory reading through NVML, or the error that says why there is none.
//!
//! ```text
//! cargo run --example nvml_probe --features nvml -- [GPU_INDEX]
//! ```

use std::process::ExitCode;

use poolwarden::probe::NvmlProbe;
use poolwarden::MemoryProbe;

fn main() -> ExitCode {
    let index = match std::env::args().nth(1).map(|a| a.parse::<u32>()) {
        None => 0,
        Some(Ok(index)) => index,
        Some(Err(e)) => {
            eprintln!("usage: nvml_probe [GPU_INDEX]: {e}");
            return ExitCode::from(2);
        }
    };
    let mut probe = match NvmlProbe::new(index) {
        Ok(probe) => probe,
        Err(error) => {
            // The message carries NVML's own error too.
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    match probe.read() {
        Some(reading) => {
            println!(
                "GPU {} ({}): {:.2} GiB total, {:.2} GiB available, {:.2} GiB used",
                probe.index(),
                probe.device_name(),
                gib(reading.total),
                gib(reading.available),
                gib(reading.used())
            );
            match reading.process_rss {
                Some(bytes) => println!("this process: {:.2} GiB", gib(bytes)),
                None => println!("this process: not listed among the GPU's compute processes"),
            }
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("error: NVML initialised, but GPU {index} gave no memory reading");
            ExitCode::FAILURE
        }
    }
}
