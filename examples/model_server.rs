//! A live model server: five pools of model workers on real threads, holding real memory, kept
//! at the right size by one scheduler.
//!
//! ```text
//! cargo run --release --example model_server -- [--config FILE] [--duration DUR] [--memory-limit SIZE]
//!                                               [--listen 127.0.0.1:PORT]
//! ```
//!
//! Each worker is a thread that loads a "model" (allocates and writes its footprint, 64 to
//! 256 MiB) and answers requests from its channel. A driver sends bursts of requests to the
//! pools one after the other, then goes quiet, so every pool scales 0 → N → 0. Once a second
//! a status line shows the workers of each pool, the memory the pools account for, and the
//! process's RSS and the system's available memory as the memory probe reads them; every
//! eviction prints as it happens, with its reason.
//!
//! With `--memory-limit` below what the bursts need, memory-pressure evicts idle workers of
//! the other pools, least recently used first, while a new burst loads its models.
//!
//! With `--listen ADDR` it serves `GET /status` (the scheduler's status as JSON) and
//! `GET /metrics` (every poolwarden metric in the Prometheus text format) on that address;
//! port 0 picks a free port, and the line `listening on http://ADDR` says which.
//!
//! SIGHUP reloads the config file: the new file is validated first (a bad one is reported
//! with its located error and the running config stays); then the policies and each pool's
//! `max_workers_per_model` and `acquire_timeout` change between two ticks, and what needs a
//! restart is listed.
//!
//! Ctrl-C or the end of `--duration` stops cleanly: the scheduler stops, every worker thread
//! is shut down and joined, and a summary prints.

#[path = "support/models.rs"]
mod models;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poolwarden::config::{BudgetConfig, Config, ConfiguredScheduler, PolicyRegistry, PolicySpec};
use poolwarden::events::RecvTimeoutError;
use poolwarden::policies::{ByteSize, VictimOrder};
use poolwarden::{
    Clock, EvictionEvent, MemoryProbe, MemoryReading, PoolEvent, SysinfoProbe, TscClock,
};

use models::{mib, process_rss, thread_count, Counters, Driver, NamedPool};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Five model pools on real threads and real memory, under one scheduler")]
struct Args {
    /// The configuration: pools, models, policies.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/config/model-server.toml"))]
    config: PathBuf,
    /// How long to run before stopping on its own (Ctrl-C stops sooner).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Measure the process's RSS against this limit (e.g. `1GiB`) instead of the machine's
    /// memory, so that memory pressure shows on any machine.
    #[arg(long)]
    memory_limit: Option<ByteSize>,
    /// Put the five pools on one memory budget of this size (e.g. `512MiB`): a model loads
    /// only once its footprint fits, and admission evicts idle workers of other models (reason
    /// `admission`) to make room before it loads.
    #[arg(long)]
    budget: Option<ByteSize>,
    /// How long each pool's burst of requests lasts.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    burst: Duration,
    /// Delay between the starts of two pools' bursts.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    stagger: Duration,
    /// Serve `/status` (JSON) and `/metrics` (Prometheus) on this address, e.g.
    /// `127.0.0.1:9090` (port 0: any free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// `--budget SIZE`: one `[budgets.model-server]` of `limit` for every pool of `config`.
fn use_budget(config: &mut Config, limit: ByteSize) {
    config.budgets.insert(
        BUDGET.to_string(),
        BudgetConfig {
            limit,
            order: VictimOrder::Lru,
            probe: None,
        },
    );
    for pool in config.pools.values_mut() {
        pool.budget = Some(BUDGET.to_string());
    }
}

/// The budget's name under `--budget`.
const BUDGET: &str = "model-server";

/// The probe behind `--memory-limit`: `total` is the limit and `used` is this process's RSS.
///
/// Why RSS rather than the pools' accounted bytes: RSS is what a container limit or the OOM
/// killer counts. It includes a model that is still loading (not yet in any pool's
/// accounting) and whatever else the process holds, so pressure shows while a new burst loads
/// its models, which is exactly when the idle workers of other pools must go. Because the
/// workers' weights are single large allocations, freeing them unmaps them and the RSS drops
/// at the eviction itself, so memory-pressure's `settle` sees the freed bytes at the next tick.
/// The accounted bytes would be steadier (no allocator noise) but blind to loads in progress.
struct RssBudgetProbe {
    limit: u64,
}

impl MemoryProbe for RssBudgetProbe {
    fn read(&mut self) -> Option<MemoryReading> {
        let rss = process_rss()?;
        Some(MemoryReading {
            total: self.limit,
            available: self.limit.saturating_sub(rss),
            process_rss: Some(rss),
        })
    }
}

/// Sets `limit` on every memory-pressure policy in `spec` (chain members included); returns
/// how many it set. The policy then measures usage against the limit too, whatever the probe.
fn set_memory_limit(spec: &mut PolicySpec, limit: ByteSize) -> usize {
    let mut set = 0;
    if spec.kind == "memory-pressure" {
        let bytes = i64::try_from(limit.bytes()).unwrap_or(i64::MAX);
        spec.params
            .insert("limit".to_string(), toml::Value::Integer(bytes));
        set += 1;
    }
    for member in &mut spec.members {
        set += set_memory_limit(member, limit);
    }
    set
}

/// Ctrl-C (SIGINT) and SIGTERM without a dependency: the C library's `signal` sets a flag that
/// the main loop polls. A second signal aborts, for a stop that hangs.
#[cfg(any(unix, windows))]
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    static REQUESTED: AtomicBool = AtomicBool::new(false);
    static RELOAD: AtomicBool = AtomicBool::new(false);

    const SIGHUP: i32 = 1;
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn on_signal(_signum: i32) {
        // Only async-signal-safe work here: an atomic swap, and abort on the second signal.
        if REQUESTED.swap(true, Ordering::SeqCst) {
            std::process::abort();
        }
    }

    extern "C" fn on_hangup(_signum: i32) {
        RELOAD.store(true, Ordering::SeqCst);
    }

    /// Installs the handler for SIGINT and SIGTERM, and for SIGHUP where there is one.
    pub fn install() {
        // SAFETY: `signal` is the C standard library's; the handlers have the C ABI and only do
        // async-signal-safe work (atomics, abort).
        unsafe {
            signal(SIGINT, on_signal);
            signal(SIGTERM, on_signal);
            if cfg!(unix) {
                signal(SIGHUP, on_hangup);
            }
        }
    }

    /// Whether a reload was asked for (SIGHUP) since the last call.
    pub fn reload_requested() -> bool {
        RELOAD.swap(false, Ordering::SeqCst)
    }

    /// Whether a stop was asked for.
    pub fn requested() -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}

/// Elsewhere, Ctrl-C ends the process the default way; `--duration` still stops cleanly.
#[cfg(not(any(unix, windows)))]
mod interrupt {
    /// Nothing to install.
    pub fn install() {}

    /// Never.
    pub fn requested() -> bool {
        false
    }

    /// Never.
    pub fn reload_requested() -> bool {
        false
    }
}

/// The HTTP endpoints: `/status` and `/metrics`, on a thread of their own.
struct HttpServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and serves until dropped.
    fn start(
        addr: SocketAddr,
        scheduler: Arc<ConfiguredScheduler>,
        prometheus: PrometheusHandle,
    ) -> Result<(Self, SocketAddr), String> {
        let server =
            tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("http".to_string())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let path = request.url().split('?').next().unwrap_or("").to_string();
                    let get = *request.method() == tiny_http::Method::Get;
                    let (status, body, content_type) = match (get, path.as_str()) {
                        (true, "/status") => {
                            match serde_json::to_string_pretty(&scheduler.status()) {
                                Ok(json) => (200, json, "application/json"),
                                Err(e) => (
                                    500,
                                    format!("cannot serialize the status: {e}\n"),
                                    "text/plain",
                                ),
                            }
                        }
                        (true, "/metrics") => {
                            (200, prometheus.render(), "text/plain; version=0.0.4")
                        }
                        (false, "/status" | "/metrics") => {
                            (405, "GET only\n".to_string(), "text/plain")
                        }
                        _ => (
                            404,
                            "not found: try /status or /metrics\n".to_string(),
                            "text/plain",
                        ),
                    };
                    let header = tiny_http::Header::from_bytes("Content-Type", content_type)
                        .expect("a valid header");
                    let response = tiny_http::Response::from_string(body)
                        .with_status_code(status)
                        .with_header(header);
                    if let Err(e) = request.respond(response) {
                        log::debug!("http: cannot answer: {e}");
                    }
                }
            })
            .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
        Ok((
            HttpServer {
                server,
                thread: Some(thread),
            },
            bound,
        ))
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Installs the Prometheus recorder: every poolwarden metric from now on, with buckets for
/// the histograms (seconds), so that quantiles can be computed across replicas.
fn install_prometheus() -> Result<PrometheusHandle, String> {
    const BUCKETS: &[f64] = &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))
}

/// Prints status lines and evictions.
struct Console {
    started: Instant,
    widths: Vec<usize>,
    limit: Option<u64>,
    probe: SysinfoProbe,
    peak_accounted: u64,
    peak_rss: u64,
}

impl Console {
    fn new(pools: &[NamedPool], limit: Option<u64>) -> Self {
        Console {
            started: Instant::now(),
            widths: pools.iter().map(|(name, _)| name.len().max(3)).collect(),
            limit,
            probe: SysinfoProbe::new(),
            peak_accounted: 0,
            peak_rss: 0,
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn header(&self, pools: &[NamedPool]) {
        let mut line = format!("{:>7}", "time");
        for ((name, _), width) in pools.iter().zip(&self.widths) {
            line.push_str(&format!("  {name:>width$}"));
        }
        line.push_str(&format!(
            "  {:>9}  {:>9}  {:>9}",
            "accounted", "rss", "avail"
        ));
        if self.limit.is_some() {
            line.push_str(&format!("  {:>8}", "rss/limit"));
        }
        println!("{line}");
    }

    fn status(&mut self, pools: &[NamedPool]) {
        let mut line = format!("{:>6.1}s", self.elapsed());
        let mut accounted = 0;
        for ((_, pool), width) in pools.iter().zip(&self.widths) {
            let stats = pool.stats();
            accounted += stats.accounted_bytes;
            line.push_str(&format!("  {:>width$}", stats.total_workers()));
        }
        // The machine's reading through the production probe (cgroup-aware): the process's RSS
        // and the memory available to it.
        let reading = self.probe.read();
        let rss = reading.and_then(|r| r.process_rss).or_else(process_rss);
        self.peak_accounted = self.peak_accounted.max(accounted);
        self.peak_rss = self.peak_rss.max(rss.unwrap_or(0));
        let show = |bytes: Option<u64>| {
            bytes.map_or_else(|| "?".to_string(), |b| format!("{:.0} MiB", mib(b)))
        };
        line.push_str(&format!(
            "  {:>9}  {:>9}  {:>9}",
            show(Some(accounted)),
            show(rss),
            reading.map_or_else(
                || "?".to_string(),
                |r| format!("{:.1} GiB", r.available as f64 / (1u64 << 30) as f64)
            )
        ));
        if let (Some(limit), Some(rss)) = (self.limit, rss) {
            line.push_str(&format!("  {:>8.0}%", 100.0 * rss as f64 / limit as f64));
        }
        println!("{line}");
    }

    fn eviction(&self, event: &EvictionEvent) {
        println!(
            "{:>6.1}s  evicted {}/{} worker {} ({}): {:.0} MiB freed, {} left",
            self.elapsed(),
            event.pool,
            event.key,
            event.worker,
            event.reason,
            mib(event.freed_bytes),
            event.workers_left
        );
    }
}

/// `idle 3, memory-pressure 2`, or `none`.
fn by_reason(evictions: &BTreeMap<String, u64>) -> String {
    if evictions.is_empty() {
        return "none".to_string();
    }
    let parts: Vec<String> = evictions.iter().map(|(r, n)| format!("{r} {n}")).collect();
    parts.join(", ")
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reloads `args.config` on SIGHUP: validates it, then applies what can change at run time.
/// A bad file is reported with its located error, and the running config stays.
fn reload(
    args: &Args,
    registry: &PolicyRegistry,
    running: &mut Config,
    scheduler: &ConfiguredScheduler,
    pools: &[NamedPool],
    console: &Console,
) {
    let at = console.elapsed();
    let mut new = match Config::load(&args.config, registry) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{at:>6.1}s  reload failed, the running config stays: error: {e}");
            return;
        }
    };
    if let Some(limit) = args.memory_limit {
        set_memory_limit(&mut new.policy, limit);
        for pool in new.pools.values_mut() {
            if let Some(spec) = &mut pool.policy {
                set_memory_limit(spec, limit);
            }
        }
    }
    match models::apply_reload(running, &new, registry, scheduler, pools) {
        Ok(report) => {
            println!(
                "{at:>6.1}s  reloaded {}: {}",
                new.source,
                if report.applied.is_empty() {
                    "nothing to change at run time".to_string()
                } else {
                    report.applied.join("; ")
                }
            );
            if !report.needs_restart.is_empty() {
                println!(
                    "{at:>6.1}s  needs a restart to apply: {}",
                    report.needs_restart.join("; ")
                );
            }
            *running = new;
        }
        Err(e) => {
            eprintln!("{at:>6.1}s  reload failed, the running config stays: error: {e}");
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let registry = PolicyRegistry::new();
    let mut config = Config::load(&args.config, &registry).map_err(|e| e.to_string())?;
    if config.pools.is_empty() {
        return Err(format!("{}: no [pools.NAME] to serve", config.source));
    }

    // The memory probe. Without a limit: the production probe, whose total is the process's
    // cgroup limit or the machine's RAM. With one: the RSS budget probe, and memory-pressure's
    // `limit` parameter set to the same figure, so the policy's fraction is RSS / limit.
    let probe: Box<dyn MemoryProbe> = match args.memory_limit {
        Some(limit) => {
            let mut set = set_memory_limit(&mut config.policy, limit);
            for pool in config.pools.values_mut() {
                if let Some(spec) = &mut pool.policy {
                    set += set_memory_limit(spec, limit);
                }
            }
            if set == 0 {
                eprintln!(
                    "warning: {} has no memory-pressure policy; --memory-limit only changes the probe",
                    config.source
                );
            }
            Box::new(RssBudgetProbe {
                limit: limit.bytes(),
            })
        }
        None => Box::new(SysinfoProbe::new()),
    };

    if let Some(limit) = args.budget {
        use_budget(&mut config, limit);
    }

    interrupt::install();
    let threads_before = thread_count();
    let rss_before = process_rss();
    let counters = Arc::new(Counters::default());
    let clock: Arc<dyn Clock> = Arc::new(TscClock::new());
    let pools = models::build_pools(&config, &clock, &counters);
    let prometheus = args.listen.map(|_| install_prometheus()).transpose()?;
    let scheduler = Arc::new(
        models::build_scheduler(&config, &registry, probe, &clock, &pools)
            .map_err(|e| e.to_string())?,
    );
    let events = scheduler.subscribe();

    println!("config: {}", config.source);
    println!(
        "policy: {}",
        config
            .policy
            .describe(&registry)
            .replace('\n', "\n        ")
    );
    for (name, pool) in &config.pools {
        let models: Vec<String> = pool
            .models
            .keys()
            .map(|m| format!("{m} {}", ByteSize(pool.memory_of(m))))
            .collect();
        println!(
            "pool {name}: up to {} workers per model; {}",
            pool.max_workers_per_model,
            models.join(", ")
        );
    }
    if let Some(limit) = args.memory_limit {
        println!("memory limit: {limit} (memory-pressure measures this process's RSS against it)");
    }
    if let Some(limit) = args.budget {
        println!(
            "memory budget: {limit} for the five pools (admission makes room before each load)"
        );
    }
    println!(
        "running for {} (Ctrl-C stops sooner)\n",
        humantime::format_duration(args.duration)
    );

    scheduler
        .start()
        .map_err(|e| format!("cannot start the scheduler: {e}"))?;
    let http = match (args.listen, &prometheus) {
        (Some(addr), Some(prometheus)) => {
            let (http, bound) =
                HttpServer::start(addr, Arc::clone(&scheduler), prometheus.clone())?;
            println!("listening on http://{bound} (GET /status, GET /metrics)");
            Some(http)
        }
        _ => None,
    };
    let bursts = models::plan(
        &config,
        &pools,
        args.burst,
        args.stagger,
        Duration::from_millis(10),
    );
    let mut driver = Driver::start(&pools, &bursts, &counters)
        .map_err(|e| format!("cannot start the load driver: {e}"))?;

    let mut console = Console::new(&pools, args.memory_limit.map(ByteSize::bytes));
    console.header(&pools);
    let deadline = Instant::now() + args.duration;
    let mut next_status = Instant::now() + Duration::from_secs(1);
    let mut quiet_reported = false;
    let stopped_by = loop {
        let wait = next_status
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match events.recv_timeout(wait) {
            Ok(PoolEvent::Eviction(event)) => console.eviction(&event),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Closed) => std::thread::sleep(wait),
        }
        if Instant::now() >= next_status {
            console.status(&pools);
            if let Some(prometheus) = &prometheus {
                prometheus.run_upkeep();
            }
            next_status += Duration::from_secs(1);
        }
        if interrupt::reload_requested() {
            reload(args, &registry, &mut config, &scheduler, &pools, &console);
        }
        if !quiet_reported && driver.is_done() {
            quiet_reported = true;
            println!(
                "{:>6.1}s  load driver done: all pools quiet",
                console.elapsed()
            );
        }
        if interrupt::requested() {
            break "Ctrl-C";
        }
        if Instant::now() >= deadline {
            break "--duration";
        }
    };

    // Clean stop: the clients finish their request in flight, the maintenance thread stops,
    // then the pools go, and with them every worker still loaded: dropping a worker sends it
    // the shutdown message and joins its thread, which frees the weights.
    println!("\n{:>6.1}s  stopping ({stopped_by})", console.elapsed());
    let stopping = Instant::now();
    driver.stop();
    drop(http);
    scheduler.stop();
    for event in events.try_iter() {
        if let PoolEvent::Eviction(event) = event {
            console.eviction(&event);
        }
    }
    let scheduler_stats = scheduler.stats();
    let still_loaded: usize = pools.iter().map(|(_, p)| p.stats().total_workers()).sum();
    let mut spawns = 0;
    let mut spawn_failures = 0;
    let mut per_pool = Vec::new();
    for (name, pool) in &pools {
        let stats = pool.stats();
        spawns += stats.spawns;
        spawn_failures += stats.spawn_failures;
        per_pool.push((name.clone(), stats));
    }
    drop(scheduler);
    drop(pools);
    let stop_took = stopping.elapsed();
    let threads_after = thread_count();
    let alive = counters.threads_alive.load(Ordering::SeqCst);

    println!("\nsummary");
    println!(
        "  requests:  {} served, {} failed",
        counters.requests.load(Ordering::Relaxed),
        counters.failures.load(Ordering::Relaxed)
    );
    println!(
        "  spawns:    {spawns} ({} cold starts, {spawn_failures} failed)",
        counters.cold_starts.load(Ordering::Relaxed)
    );
    println!(
        "  evictions: {} by the scheduler ({})",
        scheduler_stats.evictions.values().sum::<u64>(),
        by_reason(&scheduler_stats.evictions)
    );
    for (name, stats) in &per_pool {
        println!(
            "    {name:<16} {} spawns, evictions: {}",
            stats.spawns,
            by_reason(&stats.evictions)
        );
    }
    println!(
        "  at stop:   {still_loaded} workers still loaded, shut down and joined in {} ms; model threads: {} started, {alive} still running",
        stop_took.as_millis(),
        counters.threads_started.load(Ordering::Relaxed)
    );
    if let (Some(before), Some(after)) = (threads_before, threads_after) {
        println!("  threads:   {before} in the process before the pools, {after} after");
    }
    println!(
        "  memory:    peak {:.0} MiB accounted, peak RSS {:.0} MiB; RSS {} before, {} after",
        mib(console.peak_accounted),
        mib(console.peak_rss),
        rss_before.map_or("?".to_string(), |b| format!("{:.0} MiB", mib(b))),
        process_rss().map_or("?".to_string(), |b| format!("{:.0} MiB", mib(b)))
    );
    println!("  ticks:     {}", scheduler_stats.ticks);
    if alive != 0 {
        return Err(format!("{alive} model threads did not exit"));
    }
    Ok(())
}
