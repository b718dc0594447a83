//! The operator CLI (`poolwarden check`, `poolwarden simulate`), as a library entry point: a
//! service with its own policies runs it with its own [`PolicyRegistry`] through
//! [`main_with_registry`]. Exit status: 0 on success, 2 on any error (bad arguments, a bad
//! config, a bad trace); never a panic on bad input.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{Config, ConfigError, PolicyRegistry, PolicySpec, CHAIN};
use crate::policies::format_duration;
use crate::sim::{
    align_windows, render_csv, render_svg, render_text, simulate, ServiceModel, SimOptions, SimRun,
    Trace, TraceFormat,
};
use clap::{Parser, Subcommand, ValueEnum};

/// Keeps pools of expensive workers at the right size: check a config, simulate a policy.
#[derive(Parser, Debug)]
#[command(name = "poolwarden", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Validate a config file and print what it resolves to.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Replay a trace against the real scheduler, pools and policies in virtual time.
    Simulate(SimulateArgs),
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// Config file [default: the embedded config/default.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Trace file, or `scenario5`; repeat to merge several (one key per file) [default: scenario5].
    #[arg(long = "trace", value_name = "FILE|scenario5")]
    traces: Vec<String>,
    /// Format of the trace files.
    #[arg(long, value_enum, default_value_t = Format::Native)]
    format: Format,
    /// Key for an azure-llm trace [default: the file stem].
    #[arg(long, value_name = "KEY")]
    model: Option<String>,
    /// Replay once per policy kind, side by side; replaces the config's default policy (its
    /// parameters are reused when the config uses the same kind). Parameters can follow the
    /// kind: `keep-alive:ttl=10m` or `hybrid-histogram:min_samples=5,margin=0.2`.
    #[arg(long = "policy", value_name = "KIND[:KEY=VALUE,...]")]
    policies: Vec<String>,
    /// Replaces the config's tick, e.g. 60s.
    #[arg(long, value_name = "DUR", value_parser = duration)]
    tick: Option<Duration>,
    /// Stop the simulation at this virtual time, e.g. 2h.
    #[arg(long, value_name = "DUR", value_parser = duration)]
    until: Option<Duration>,
    /// Measure only from this virtual time on, e.g. 12h; the policies run (and learn) from 0.
    #[arg(long, value_name = "DUR", value_parser = duration)]
    from: Option<Duration>,
    /// azure-llm: prefill time per context token.
    #[arg(long, value_name = "DUR", value_parser = duration, default_value = "100us")]
    prefill_per_token: Duration,
    /// azure-llm: decode time per generated token.
    #[arg(long, value_name = "DUR", value_parser = duration, default_value = "20ms")]
    decode_per_token: Duration,
    /// Write the worker-count and memory timeline per key and policy as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Draw workers over time per key, one line per policy, as SVG.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// CSV `at,model,duration[,pool]`, seconds.
    Native,
    /// The Azure LLM inference trace `TIMESTAMP,ContextTokens,GeneratedTokens`.
    AzureLlm,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}

/// An error that ends the command with status 2.
struct Failure(String);

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure(e.to_string())
    }
}

/// Runs the `poolwarden` command on this process's arguments with `registry`, which knows the
/// built-in policies and any the service registered.
pub fn main_with_registry(registry: PolicyRegistry) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Check { file } => check(&file, &registry, &mut out),
        Command::Simulate(args) => run_simulate(args, &registry, &mut out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            let _ = out.flush();
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn write_failed(e: std::io::Error) -> Failure {
    Failure(format!("cannot write output: {e}"))
}

fn check(file: &Path, registry: &PolicyRegistry, out: &mut impl Write) -> Result<(), Failure> {
    let config = Config::load(file, registry)?;
    write!(out, "{}", describe_config(&config, registry)).map_err(write_failed)
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

fn describe_config(config: &Config, registry: &PolicyRegistry) -> String {
    let mut text = format!("{}: ok\n", config.source);
    text.push_str(&format!(
        "scheduler: tick={}\n",
        format_duration(config.scheduler.tick)
    ));
    text.push_str("default policy:\n");
    text.push_str(&indent(&config.policy.describe(registry), "  "));
    if config.pools.is_empty() {
        text.push_str("pools: none\n");
    }
    for (name, pool) in &config.pools {
        text.push_str(&format!(
            "pool {name}: max_workers_per_model={} max_in_flight_per_worker={} acquire_timeout={} memory={} cold_start={}\n",
            pool.max_workers_per_model,
            pool.max_in_flight_per_worker,
            format_duration(pool.acquire_timeout),
            pool.memory,
            format_duration(pool.cold_start),
        ));
        match &pool.policy {
            Some(spec) => {
                text.push_str("  policy (own):\n");
                text.push_str(&indent(&spec.describe(registry), "    "));
            }
            None => {
                text.push_str("  policy (default):\n");
                text.push_str(&indent(&config.policy.describe(registry), "    "));
            }
        }
        for (key, model) in &pool.models {
            let mut parts = Vec::new();
            let o = &model.overrides;
            for (label, value) in [("idle", o.idle), ("step", o.step), ("ttl", o.ttl)] {
                if let Some(v) = value {
                    parts.push(format!("{label}={}", format_duration(v)));
                }
            }
            if let Some(n) = o.min_workers {
                parts.push(format!("min_workers={n}"));
            }
            parts.push(format!("memory={}", model.memory.unwrap_or(pool.memory)));
            parts.push(format!(
                "cold_start={}",
                format_duration(model.cold_start.unwrap_or(pool.cold_start))
            ));
            text.push_str(&format!("  model {key}: {}\n", parts.join(" ")));
        }
    }
    text
}

/// The spec for `--policy KIND`: the config's own parameters when it uses that kind (as its
/// default policy or in its chain), else the kind's defaults.
fn policy_for_kind(
    config: &Config,
    arg: &str,
    registry: &PolicyRegistry,
) -> Result<PolicySpec, Failure> {
    let (kind, parameters) = match arg.split_once(':') {
        Some((kind, parameters)) => (kind, Some(parameters)),
        None => (arg, None),
    };
    fn find<'a>(spec: &'a PolicySpec, kind: &str) -> Option<&'a PolicySpec> {
        if spec.kind == kind {
            return Some(spec);
        }
        spec.members.iter().find_map(|m| find(m, kind))
    }
    let mut spec =
        match find(&config.policy, kind) {
            Some(spec) => spec.clone(),
            None if kind == CHAIN => return Err(Failure(
                "--policy chain needs members: define the chain in the config's [policy] instead"
                    .into(),
            )),
            None => PolicySpec::of_kind(kind),
        };
    if !registry.kinds().any(|k| k == kind) {
        let known: Vec<&str> = registry.kinds().collect();
        return Err(Failure(format!(
            "unknown policy kind `{kind}`; known kinds: {}",
            known.join(", ")
        )));
    }
    for pair in parameters.into_iter().flat_map(|p| p.split(',')) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure(format!(
                "--policy {arg}: expected KEY=VALUE after the kind, got `{pair}`"
            )));
        };
        spec.params
            .insert(key.trim().to_string(), parameter_value(value.trim()));
    }
    spec.build(registry)
        .map_err(|e| Failure(format!("policy `{arg}`: {e}")))?;
    Ok(spec)
}

/// A `--policy` parameter as TOML would read it (`4`, `0.5`, `true`), else as a string (`10m`).
fn parameter_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn run_simulate(
    args: SimulateArgs,
    registry: &PolicyRegistry,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let config = match &args.config {
        Some(path) => Config::load(path, registry)?,
        None => Config::embedded_default(registry)?,
    };
    let format = match args.format {
        Format::Native => TraceFormat::Native,
        Format::AzureLlm => TraceFormat::AzureLlm,
    };
    let service = ServiceModel {
        prefill_per_token: args.prefill_per_token,
        decode_per_token: args.decode_per_token,
    };
    let trace_args = if args.traces.is_empty() {
        vec!["scenario5".to_string()]
    } else {
        args.traces.clone()
    };
    if args.model.is_some() && trace_args.iter().filter(|t| *t != "scenario5").count() > 1 {
        return Err(Failure(
            "--model names the key of a single azure-llm trace; with several traces each file's stem is its key".into(),
        ));
    }
    let mut traces = Vec::new();
    for name in &trace_args {
        if name == "scenario5" {
            traces.push(Trace::scenario5());
        } else {
            let trace = Trace::load(Path::new(name), format, args.model.as_deref(), service)
                .map_err(|e| Failure(e.to_string()))?;
            traces.push(trace);
        }
    }
    let trace = Trace::merge(traces);

    let specs: Vec<PolicySpec> = if args.policies.is_empty() {
        vec![config.policy.clone()]
    } else {
        args.policies
            .iter()
            .map(|kind| policy_for_kind(&config, kind, registry))
            .collect::<Result<_, _>>()?
    };
    if let (Some(from), Some(until)) = (args.from, args.until) {
        if from >= until {
            return Err(Failure(format!(
                "--from ({}) must be before --until ({})",
                format_duration(from),
                format_duration(until)
            )));
        }
    }
    let options = SimOptions {
        tick: args.tick,
        until: args.until,
        horizon: None,
        from: args.from,
    };

    let bar = (std::io::stderr().is_terminal() && trace.requests.len() >= 1000).then(|| {
        let bar = indicatif::ProgressBar::new((trace.requests.len() * specs.len()) as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:>16} [{bar:40}] {pos}/{len} requests")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut runs: Vec<SimRun> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let base = (index * trace.requests.len()) as u64;
        let mut report = |done: usize, _total: usize| {
            if let Some(bar) = &bar {
                bar.set_position(base + done as u64);
            }
        };
        if let Some(bar) = &bar {
            bar.set_message(spec.kind.clone());
        }
        let mut run = simulate(&config, registry, spec, &trace, &options, Some(&mut report))
            .map_err(|e| Failure(e.to_string()))?;
        if let Some(label) = args.policies.get(index).filter(|p| p.contains(':')) {
            run.policy = label.clone();
        }
        runs.push(run);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    align_windows(&mut runs);

    if let Some(path) = &args.csv {
        std::fs::write(path, render_csv(&runs))
            .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &args.svg {
        render_svg(path, &runs).map_err(|e| Failure(e.to_string()))?;
    }
    if args.json {
        let value = serde_json::json!({
            "trace": trace.name,
            "config": config.source,
            "policies": runs,
            "pareto": crate::sim::pareto_points(&runs),
        });
        writeln!(out, "{value}").map_err(write_failed)
    } else {
        write!(out, "{}", render_text(&trace.name, &runs)).map_err(write_failed)
    }
}
