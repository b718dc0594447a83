//! The operator CLI (`poolwarden check`, `poolwarden simulate`, `poolwarden status`), as a
//! library entry point: a
//! service with its own policies runs it with its own [`PolicyRegistry`] through
//! [`main_with_registry`], and tests run it in-process with [`run`]. It never panics on bad
//! input; it exits with a sysexits status ([`Exit`]).

use std::error::Error;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{
    Config, ConfigError, ConfigLoader, PolicyRegistry, PolicySpec, ValueInForce, CHAIN,
};
use crate::policies::format_duration;
use crate::sim::{
    align_windows, memory_limit_of, pareto_points, render_csv, render_pareto, render_svg,
    render_text_with, simulate, ChartOptions, EventsShown, ServiceModel, SimError, SimOptions,
    SimRun, TextOptions, Trace, TraceFormat,
};
use clap::{Parser, Subcommand, ValueEnum};

mod status;

pub use status::{fetch_status, render_status, FetchError};

/// The exit statuses, from BSD's sysexits.
const EXIT_STATUS_HELP: &str = "\
Exit status:
  0   success
  64  usage: a bad option or argument
  65  bad data: a malformed trace
  66  no input: a config or trace file that cannot be read
  69  unavailable: `status` cannot reach the URL
  73  cannot write an output file (--csv, --svg) or standard output
  76  protocol: `status` got an answer that is not a status
  78  bad configuration";

/// How the command ended: 0, or a sysexits status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 0: success.
    Success,
    /// 64 (`EX_USAGE`): a bad option or argument.
    Usage,
    /// 65 (`EX_DATAERR`): a malformed trace, or a trace that does not fit the config.
    BadData,
    /// 66 (`EX_NOINPUT`): a config or trace file that does not exist or cannot be read.
    NoInput,
    /// 69 (`EX_UNAVAILABLE`): `status` cannot reach its URL.
    Unavailable,
    /// 73 (`EX_CANTCREAT`): an output file or standard output cannot be written.
    CannotWrite,
    /// 76 (`EX_PROTOCOL`): `status` got an answer that is not a `200` with a status.
    Protocol,
    /// 78 (`EX_CONFIG`): a bad configuration.
    BadConfig,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Usage => 64,
            Exit::BadData => 65,
            Exit::NoInput => 66,
            Exit::Unavailable => 69,
            Exit::CannotWrite => 73,
            Exit::Protocol => 76,
            Exit::BadConfig => 78,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// Keeps pools of expensive workers at the right size: check a config, simulate a policy.
#[derive(Parser, Debug)]
#[command(name = "poolwarden", version, about, after_help = EXIT_STATUS_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Validate a config file and print what it resolves to: each pool with its policy, and
    /// each model's values in force with where they come from.
    #[command(after_help = EXIT_STATUS_HELP)]
    Check {
        /// The TOML file, or `-` for standard input.
        file: PathBuf,
        /// Read poolwarden's config from this table of the file (`poolwarden`,
        /// `tool.poolwarden`) instead of the whole file.
        #[arg(long, value_name = "KEY")]
        table: Option<String>,
    },
    /// Replay a trace against the real scheduler, pools and policies in virtual time.
    #[command(after_help = EXIT_STATUS_HELP)]
    Simulate(SimulateArgs),
    /// Show what a running service holds: fetch its status over HTTP (`/status` unless the
    /// URL names a path) and print one row per model, like `ollama ps`.
    #[command(after_help = EXIT_STATUS_HELP)]
    Status {
        /// `http://HOST:PORT[/PATH]`, e.g. `http://127.0.0.1:9090`.
        url: String,
        /// How long to wait for the connection and for each read.
        #[arg(long, default_value = "5s", value_parser = positive_duration)]
        timeout: Duration,
        /// Print the status as JSON (decoded and written again: unknown fields are left out).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// Config file, or `-` for standard input [default: the embedded config/default.toml].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read poolwarden's config from this table of the config file (`poolwarden`,
    /// `tool.poolwarden`) instead of the whole file.
    #[arg(long, value_name = "KEY")]
    table: Option<String>,
    /// Trace file, `-` for standard input, or `scenario5`; repeat to merge several (one key
    /// per file) [default: scenario5].
    #[arg(long = "trace", value_name = "FILE|-|scenario5")]
    traces: Vec<String>,
    /// Format of the trace files.
    #[arg(long, value_enum, default_value_t = Format::Native)]
    format: Format,
    /// Key for an azure-llm trace [default: the file stem; `stdin` for standard input].
    #[arg(long, value_name = "KEY")]
    model: Option<String>,
    /// Replay once per policy kind, side by side; replaces the config's default policy (its
    /// parameters are reused when the config uses the same kind). Parameters can follow the
    /// kind: `keep-alive:ttl=10m` or `hybrid-histogram:min_samples=5,margin=0.2`.
    #[arg(long = "policy", value_name = "KIND[:KEY=VALUE,...]")]
    policies: Vec<String>,
    /// Replaces the config's tick, e.g. 60s; greater than 0.
    #[arg(long, value_name = "DUR", value_parser = positive_duration)]
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
    /// Draw the chart as SVG: per pool, workers over time per key and memory held, one line
    /// per policy, and the summary table.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Draw the Pareto chart of the policies compared as SVG: idle worker-hours against the
    /// 75th percentile of the per-key cold-start percentage, one point per policy.
    #[arg(long, value_name = "FILE")]
    pareto: Option<PathBuf>,
    /// List the eviction timeline after the summary: the first 20 evictions of each policy,
    /// the first N with `--events N`, or every one with `--events all`.
    #[arg(long, value_name = "all|N", num_args = 0..=1, default_missing_value = "20", value_parser = events)]
    events: Option<EventsShown>,
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

fn events(text: &str) -> Result<EventsShown, String> {
    match text {
        "all" => Ok(EventsShown::All),
        n => n
            .parse::<usize>()
            .map(EventsShown::First)
            .map_err(|_| format!("`{text}`: expected `all` or a number of evictions")),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}

/// `--tick` (as `tick` in the config) and `status --timeout`: a duration greater than 0.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let value = duration(text)?;
    if value.is_zero() {
        return Err(format!("`{text}`: must be greater than 0"));
    }
    Ok(value)
}

/// An error that ends the command: its status and message.
struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }

    /// `error`'s message followed by its sources, each once.
    fn from_error(exit: Exit, error: &dyn Error) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let _ = write!(message, ": {cause}");
            source = cause.source();
        }
        Failure { exit, message }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        let exit = match e {
            ConfigError::Read { .. } => Exit::NoInput,
            _ => Exit::BadConfig,
        };
        Failure::from_error(exit, &e)
    }
}

impl From<SimError> for Failure {
    fn from(e: SimError) -> Self {
        let exit = match e {
            SimError::UnknownPool { .. } => Exit::BadData,
            _ => Exit::BadConfig,
        };
        Failure::from_error(exit, &e)
    }
}

fn write_failed(e: std::io::Error) -> Failure {
    Failure::new(Exit::CannotWrite, format!("cannot write output: {e}"))
}

/// The name errors give standard input.
const STDIN_NAME: &str = "<stdin>";

/// Runs the `poolwarden` command on this process's arguments with `registry`, which knows the
/// built-in policies and any the service registered. It installs a logger first (`RUST_LOG`,
/// default `info`; during `simulate`, the pool and scheduler log only warnings unless
/// `RUST_LOG` says otherwise, since thousands of virtual ticks and evictions would flood the
/// terminal).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let mut registry = poolwarden::PolicyRegistry::new();
///     // registry.register("my-policy", ...);
///     poolwarden::cli::main_with_registry(registry)
/// }
/// ```
pub fn main_with_registry(registry: PolicyRegistry) -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let simulating = args.get(1).is_some_and(|a| a == "simulate");
    install_logger(simulating);
    let options = RunOptions {
        progress: std::io::stderr().is_terminal(),
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    run_with(
        args,
        &registry,
        &mut stdin.lock(),
        &mut stdout.lock(),
        &mut stderr.lock(),
        options,
    )
    .into()
}

/// Installs `env_logger` on standard error: `RUST_LOG` when it is set, else `info`, with the
/// pool and scheduler at `warn` during a simulation. Does nothing if a logger is installed.
fn install_logger(simulating: bool) {
    let mut builder = if std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty()) {
        env_logger::Builder::from_env("RUST_LOG")
    } else {
        let mut builder = env_logger::Builder::new();
        builder.filter_level(log::LevelFilter::Info);
        if simulating {
            builder
                .filter_module("poolwarden::pool", log::LevelFilter::Warn)
                .filter_module("poolwarden::scheduler", log::LevelFilter::Warn);
        }
        builder
    };
    let _ = builder.target(env_logger::Target::Stderr).try_init();
}

#[derive(Debug, Clone, Copy, Default)]
struct RunOptions {
    /// Draw a progress bar on the real standard error for long simulations.
    progress: bool,
}

/// Runs the `poolwarden` command in-process: `args` as the process would get them (the
/// program's name first), standard input, output and error given as readers and writers.
/// Installs no logger and draws no progress bar.
///
/// ```
/// use poolwarden::cli::{run, Exit};
/// use poolwarden::PolicyRegistry;
///
/// let config = b"[pools.text]\nmax_workers_per_model = 0\n";
/// let (mut out, mut err) = (Vec::new(), Vec::new());
/// let exit = run(
///     ["poolwarden", "check", "-"],
///     &PolicyRegistry::new(),
///     &mut &config[..],
///     &mut out,
///     &mut err,
/// );
/// assert_eq!(exit, Exit::BadConfig);
/// assert_eq!(exit.code(), 78);
/// assert_eq!(
///     String::from_utf8(err).unwrap(),
///     "error: <stdin>:2:1: `pools.text.max_workers_per_model`: must be at least 1\n"
/// );
/// ```
pub fn run<I, T>(
    args: I,
    registry: &PolicyRegistry,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with(args, registry, stdin, out, err, RunOptions::default())
}

fn run_with<I, T>(
    args: I,
    registry: &PolicyRegistry,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
    options: RunOptions,
) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                        Ok(()) => Exit::Success,
                        Err(_) => Exit::CannotWrite,
                    }
                }
                _ => {
                    let _ = err.write_all(text.as_bytes());
                    Exit::Usage
                }
            };
        }
    };
    let result = match cli.command {
        Command::Check { file, table } => check(&file, table.as_deref(), registry, stdin, out),
        Command::Simulate(args) => run_simulate(args, registry, stdin, out, options),
        Command::Status { url, timeout, json } => show_status(&url, timeout, json, out),
    };
    let flushed = out.flush();
    match result.and_then(|()| flushed.map_err(write_failed)) {
        Ok(()) => Exit::Success,
        Err(failure) => {
            let _ = writeln!(err, "error: {}", failure.message);
            failure.exit
        }
    }
}

/// `poolwarden status URL`.
fn show_status(
    url: &str,
    timeout: Duration,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let status = fetch_status(url, timeout).map_err(|e| {
        let exit = match e {
            FetchError::BadUrl { .. } => Exit::Usage,
            FetchError::Unreachable { .. } => Exit::Unavailable,
            FetchError::BadAnswer { .. } => Exit::Protocol,
        };
        Failure::from_error(exit, &e)
    })?;
    let text = if json {
        let mut text = serde_json::to_string_pretty(&status)
            .map_err(|e| Failure::new(Exit::Protocol, format!("cannot write the status: {e}")))?;
        text.push('\n');
        text
    } else {
        render_status(&status, url)
    };
    out.write_all(text.as_bytes()).map_err(write_failed)
}

/// Loads the config at `path` (`-`: standard input).
fn load_config(
    path: &Path,
    table: Option<&str>,
    registry: &PolicyRegistry,
    stdin: &mut dyn Read,
) -> Result<Config, Failure> {
    let mut loader: ConfigLoader<'_> = Config::loader(registry);
    if let Some(table) = table {
        loader = loader.table(table);
    }
    let config = if path == Path::new("-") {
        loader.from_reader(stdin, STDIN_NAME)?
    } else {
        loader.load(path)?
    };
    Ok(config)
}

fn check(
    file: &Path,
    table: Option<&str>,
    registry: &PolicyRegistry,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let config = load_config(file, table, registry, stdin)?;
    write!(out, "{}", describe_config(&config, registry)).map_err(write_failed)
}

fn indent(text: &str, by: &str) -> String {
    text.lines().map(|l| format!("{by}{l}\n")).collect()
}

/// `ttl=30s (model), min_workers=0 (keep-alive default), memory=4GiB (pool)`.
fn describe_values(values: &[ValueInForce]) -> String {
    let parts: Vec<String> = values
        .iter()
        .map(|setting| {
            let shown: Vec<String> = setting
                .values
                .iter()
                .map(|(value, sources)| {
                    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
                    match value {
                        Some(value) => format!("{value} ({})", sources.join(", ")),
                        None => format!("unset ({})", sources.join(", ")),
                    }
                })
                .collect();
            format!("{}={}", setting.key, shown.join(" / "))
        })
        .collect();
    parts.join(", ")
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
            "pool {name}: max_workers_per_model={} max_in_flight_per_worker={} acquire_timeout={} spawn_timeout={} memory={} cold_start={} budget={}\n",
            pool.max_workers_per_model,
            pool.max_in_flight_per_worker,
            format_duration(pool.acquire_timeout),
            format_duration(pool.spawn_timeout),
            pool.memory,
            format_duration(pool.cold_start),
            pool.budget.as_deref().unwrap_or("none"),
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
        // Every model here is in the config, so its values are known.
        for key in pool.models.keys() {
            if let Ok(values) = config.values_in_force(name, Some(key), registry) {
                text.push_str(&format!("  model {key}: {}\n", describe_values(&values)));
            }
        }
        let other = if pool.models.is_empty() {
            "every model"
        } else {
            "any other model"
        };
        if let Ok(values) = config.values_in_force(name, None, registry) {
            text.push_str(&format!("  {other}: {}\n", describe_values(&values)));
        }
    }
    for (name, budget) in &config.budgets {
        let pools: Vec<&str> = config
            .pools
            .iter()
            .filter(|(_, p)| p.budget.as_deref() == Some(name.as_str()))
            .map(|(p, _)| p.as_str())
            .collect();
        text.push_str(&format!(
            "budget {name}: limit={} order={} probe={} pools: {}\n",
            budget.limit,
            match budget.order {
                crate::policies::VictimOrder::Lru => "lru",
                crate::policies::VictimOrder::Largest => "largest",
            },
            budget
                .probe
                .map_or_else(|| "none".to_string(), |p| p.to_string()),
            if pools.is_empty() {
                "none".to_string()
            } else {
                pools.join(", ")
            }
        ));
    }
    // A probe this build cannot open: the config is valid (and `simulate` reads no probe), but
    // a pool on that budget will not build here.
    for (name, budget) in &config.budgets {
        if let Some(probe) = budget.probe.filter(|p| !p.available()) {
            text.push_str(&format!(
                "warning: budgets.{name}: probe {probe} needs the `nvml` feature, which this build of poolwarden lacks: a pool on this budget will fail to build here (`simulate` reads no probe)\n"
            ));
        }
    }
    // A model whose footprint exceeds its budget can never load: say so (the config is valid).
    for (name, pool) in &config.pools {
        let models = pool.models.keys().map(|m| Some(m.as_str())).chain([None]);
        for model in models {
            let shown = model.unwrap_or("(any other model)");
            if let Some((needed, budget, limit)) = config.never_fits(name, model.unwrap_or("")) {
                if model.is_none() && pool.memory.bytes() != needed {
                    continue;
                }
                text.push_str(&format!(
                    "warning: pools.{name}: a worker of {shown} needs {}, more than budget `{budget}` holds ({}): it can never load\n",
                    crate::policies::ByteSize(needed),
                    crate::policies::ByteSize(limit)
                ));
            }
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
    let usage = |message: String| Failure::new(Exit::Usage, message);
    let mut spec =
        match find(&config.policy, kind) {
            Some(spec) => spec.clone(),
            None if kind == CHAIN => return Err(usage(
                "--policy chain needs members: define the chain in the config's [policy] instead"
                    .into(),
            )),
            None => PolicySpec::of_kind(kind),
        };
    if !registry.contains(kind) {
        let known: Vec<&str> = registry.kinds().collect();
        return Err(usage(format!(
            "--policy {kind}: unknown policy kind `{kind}`; known kinds: {}",
            known.join(", ")
        )));
    }
    let mut given = std::collections::BTreeSet::new();
    for pair in parameters.into_iter().flat_map(|p| p.split(',')) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(usage(format!(
                "--policy {arg}: expected KEY=VALUE after the kind, got `{pair}`"
            )));
        };
        let key = key.trim();
        if !given.insert(key) {
            return Err(usage(format!("--policy {arg}: `{key}` is given twice")));
        }
        spec.params
            .insert(key.to_string(), parameter_value(value.trim()));
    }
    spec.build(registry).map_err(|e| {
        let mut failure = Failure::from_error(Exit::Usage, &e);
        failure.message = format!(
            "--policy {kind}: {}; give it parameters in the config's [policy]",
            failure.message
        );
        failure
    })?;
    Ok(spec)
}

/// A `--policy` parameter as TOML would read it (`4`, `0.5`, `true`), else as a string (`10m`).
fn parameter_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

/// Checks, before a run, that `path` can be written: it is not a directory and can be opened
/// for writing (a file that did not exist is removed again).
fn check_writable(flag: &str, path: &Path) -> Result<(), Failure> {
    let fail = |why: String| {
        Failure::new(
            Exit::CannotWrite,
            format!("{flag} {}: cannot write: {why}", path.display()),
        )
    };
    if path.is_dir() {
        return Err(fail("is a directory".into()));
    }
    let existed = path.exists();
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Each pool on a memory budget, with the budget's limit (drawn on the pool's memory panel).
fn pool_budgets(config: &Config) -> std::collections::BTreeMap<String, u64> {
    config
        .pools
        .iter()
        .filter_map(|(name, pool)| {
            let budget = config.budgets.get(pool.budget.as_deref()?)?;
            Some((name.clone(), budget.limit.bytes()))
        })
        .collect()
}

/// Reads one trace: `scenario5`, `-` (standard input), or a file.
fn load_trace(
    name: &str,
    format: TraceFormat,
    model: Option<&str>,
    service: ServiceModel,
    stdin: &mut dyn Read,
) -> Result<Trace, Failure> {
    if name == "scenario5" {
        return Ok(Trace::scenario5());
    }
    // A file that cannot be read (missing, a directory, no permission) is missing input; what
    // it holds is the trace's business.
    let bad_data = |e: crate::sim::TraceError| {
        let exit = match e.kind {
            crate::sim::TraceErrorKind::Read(_) => Exit::NoInput,
            _ => Exit::BadData,
        };
        Failure::from_error(exit, &e)
    };
    if name == "-" {
        let mut bytes = Vec::new();
        stdin
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::new(Exit::NoInput, format!("{STDIN_NAME}: cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            Failure::new(
                Exit::BadData,
                format!(
                    "{STDIN_NAME}: not UTF-8: invalid byte at offset {}",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        let stem = "stdin";
        return match format {
            TraceFormat::Native => Trace::parse_native(&text, STDIN_NAME, stem),
            TraceFormat::AzureLlm => {
                Trace::parse_azure(&text, STDIN_NAME, stem, model.unwrap_or(stem), service)
            }
        }
        .map_err(bad_data);
    }
    let path = Path::new(name);
    std::fs::File::open(path)
        .map_err(|e| Failure::new(Exit::NoInput, format!("{name}: cannot read: {e}")))?;
    Trace::load(path, format, model, service).map_err(bad_data)
}

fn run_simulate(
    args: SimulateArgs,
    registry: &PolicyRegistry,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    options: RunOptions,
) -> Result<(), Failure> {
    let usage = |message: &str| Err(Failure::new(Exit::Usage, message));
    let trace_args = if args.traces.is_empty() {
        vec!["scenario5".to_string()]
    } else {
        args.traces.clone()
    };
    let stdin_uses = trace_args.iter().filter(|t| *t == "-").count()
        + usize::from(args.config.as_deref() == Some(Path::new("-")));
    if stdin_uses > 1 {
        return usage("standard input (`-`) can be read once: give it to one --config or --trace");
    }
    if args.model.is_some() && trace_args.iter().filter(|t| *t != "scenario5").count() > 1 {
        return usage("--model names the key of a single azure-llm trace; with several traces each file's stem is its key");
    }
    if args.table.is_some() && args.config.is_none() {
        return usage("--table needs --config: it names a table of the config file");
    }
    // Output paths are checked before the run, which can take minutes.
    if let Some(path) = &args.csv {
        check_writable("--csv", path)?;
    }
    if let Some(path) = &args.svg {
        check_writable("--svg", path)?;
    }
    if let Some(path) = &args.pareto {
        check_writable("--pareto", path)?;
    }

    let config = match &args.config {
        Some(path) => load_config(path, args.table.as_deref(), registry, stdin)?,
        None => Config::embedded_default(registry)?,
    };
    let specs: Vec<PolicySpec> = if args.policies.is_empty() {
        vec![config.policy.clone()]
    } else {
        args.policies
            .iter()
            .map(|kind| policy_for_kind(&config, kind, registry))
            .collect::<Result<_, _>>()?
    };
    let format = match args.format {
        Format::Native => TraceFormat::Native,
        Format::AzureLlm => TraceFormat::AzureLlm,
    };
    let service = ServiceModel {
        prefill_per_token: args.prefill_per_token,
        decode_per_token: args.decode_per_token,
    };
    let mut traces = Vec::new();
    for name in &trace_args {
        traces.push(load_trace(
            name,
            format,
            args.model.as_deref(),
            service,
            stdin,
        )?);
    }
    let trace = Trace::merge(traces);

    if let (Some(from), Some(until)) = (args.from, args.until) {
        if from >= until {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "--from ({}) must be before --until ({})",
                    format_duration(from),
                    format_duration(until)
                ),
            ));
        }
    }
    let options_sim = SimOptions {
        tick: args.tick,
        until: args.until,
        horizon: None,
        from: args.from,
    };

    let bar = (options.progress && trace.requests.len() >= 1000).then(|| {
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
        let run = simulate(
            &config,
            registry,
            spec,
            &trace,
            &options_sim,
            Some(&mut report),
        )?;
        runs.push(run);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    align_windows(&mut runs);

    if let Some(path) = &args.csv {
        std::fs::write(path, render_csv(&runs)).map_err(|e| {
            Failure::new(
                Exit::CannotWrite,
                format!("--csv {}: cannot write: {e}", path.display()),
            )
        })?;
    }
    if let Some(path) = &args.svg {
        render_svg(
            path,
            &trace.name,
            &config.source,
            &runs,
            &ChartOptions {
                memory_limit: memory_limit_of(&config.policy),
                pool_budgets: pool_budgets(&config),
                ..ChartOptions::default()
            },
        )
        .map_err(|e| Failure::from_error(Exit::CannotWrite, &e))?;
    }
    if let Some(path) = &args.pareto {
        let title = format!(
            "{} with {}: idle worker-hours against per-key cold starts",
            trace.name, config.source
        );
        render_pareto(path, &title, &pareto_points(&runs))
            .map_err(|e| Failure::from_error(Exit::CannotWrite, &e))?;
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
        let options = TextOptions {
            config: Some(config.source.clone()),
            events: args.events.unwrap_or_default(),
        };
        write!(out, "{}", render_text_with(&trace.name, &runs, &options)).map_err(write_failed)
    }
}
