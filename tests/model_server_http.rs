//! The model server's HTTP endpoints, scraped over real HTTP (loopback only) by a real client
//! (`ureq`) while the example runs as its own process: `/status` as JSON, `/metrics` in the
//! Prometheus text format, `poolwarden status URL` on the same service, and a reload on SIGHUP
//! (a good file applied, a bad one reported with its located error while the running config
//! stays).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolwarden::status::Status;

/// Two pools of small models, at most two workers each, a quick scale-down.
const CONFIG: &str = r#"
[scheduler]
tick = "50ms"

[policy]
kind = "gradual-lru"
idle = "400ms"
step = "100ms"

[pools.embed]
max_workers_per_model = 2
memory = "8MiB"
cold_start = "50ms"
[pools.embed.models.minilm]

[pools.vision]
max_workers_per_model = 2
memory = "16MiB"
[pools.vision.models.detr]
"#;

/// The example's binary, built by cargo next to this test's (`cargo test` builds the examples;
/// `cargo build --example model_server` when this test runs alone).
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let path = profile
        .join("examples")
        .join(format!("model_server{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut build = Command::new(cargo);
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", "model_server"]);
        if profile.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cannot build the model_server example");
    }
    path
}

/// The example's process; killed if the test fails.
struct Server {
    child: Child,
    url: String,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects a stream's lines.
fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Polls `check` every 50 ms until it returns `Some`, at most `within`.
fn eventually<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(config: &Path) -> Server {
    let mut child = Command::new(example())
        .args(["--listen", "127.0.0.1:0", "--duration", "60s"])
        .args(["--burst", "1s", "--stagger", "300ms"])
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let mut server = Server {
        child,
        url: String::new(),
        out,
        err,
    };
    let url = eventually(Duration::from_secs(20), || {
        server.out.lock().unwrap().iter().find_map(|line| {
            let rest = line.strip_prefix("listening on ")?;
            Some(rest.split_whitespace().next()?.to_string())
        })
    });
    server.url = url.unwrap_or_else(|| {
        panic!(
            "the example never said where it listens: {:?} {:?}",
            server.out.lock().unwrap(),
            server.err.lock().unwrap()
        )
    });
    server
}

fn get(url: &str) -> (u16, String, String) {
    let mut response = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.body_mut().read_to_string().unwrap();
    (status, content_type, body)
}

fn status(server: &Server) -> Status {
    let (code, content_type, body) = get(&format!("{}/status", server.url));
    assert_eq!(code, 200);
    assert_eq!(content_type, "application/json");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The value of the sample `name{labels}` in a Prometheus text body.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            if metric != name {
                return None;
            }
            let rest = rest.strip_suffix('}')?;
            let mut found: Vec<(String, String)> = rest
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            found.sort();
            let mut wanted: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            wanted.sort();
            (found == wanted).then(|| value.parse().ok()).flatten()
        })
}

fn signal(server: &Server, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name}");
}

#[test]
fn status_and_metrics_over_http_then_a_reload_on_sighup() {
    let dir = std::env::temp_dir().join(format!("poolwarden-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("model-server.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut server = start(&config);

    // Under load: workers show in both views.
    let loaded = eventually(Duration::from_secs(20), || {
        let status = status(&server);
        (status.total_workers() > 0).then_some(status)
    })
    .expect("workers appear under load");
    let names: Vec<&str> = loaded.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["embed", "vision"]);
    assert!(loaded.running);
    assert_eq!(loaded.tick, Duration::from_millis(50));
    assert_eq!(loaded.pools[0].max_workers_per_model, 2);
    assert_eq!(
        loaded.pools[0].policy,
        "gradual-lru idle=400ms step=100ms min_workers=0"
    );
    for model in loaded.pools.iter().flat_map(|p| &p.models) {
        assert!(model.workers <= 2, "{model:?}");
        for worker in &model.instances {
            assert!(worker.memory_bytes == 8 << 20 || worker.memory_bytes == 16 << 20);
        }
    }

    // `poolwarden status URL` prints the same service as a table.
    let table = Command::new(env!("CARGO_BIN_EXE_poolwarden"))
        .args(["status", &server.url])
        .output()
        .unwrap();
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("POOL"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("embed") && l.contains("minilm")),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("pool vision: ")),
        "{table}"
    );

    // Once quiet, everything scales back to zero; the metrics agree with what happened.
    let quiet = eventually(Duration::from_secs(30), || {
        let status = status(&server);
        let (_, _, metrics) = get(&format!("{}/metrics", server.url));
        let spawns: f64 = [("embed", "minilm"), ("vision", "detr")]
            .iter()
            .map(|(p, m)| {
                sample(
                    &metrics,
                    "poolwarden_spawns_total",
                    &[("pool", p), ("model", m)],
                )
                .unwrap_or(0.0)
            })
            .sum();
        let evictions: f64 = ["embed", "vision"]
            .iter()
            .map(|p| {
                sample(
                    &metrics,
                    "poolwarden_evictions_total",
                    &[("pool", p), ("reason", "idle")],
                )
                .unwrap_or(0.0)
            })
            .sum();
        (status.total_workers() == 0 && spawns > 0.0 && spawns == evictions)
            .then_some((status, metrics, spawns))
    });
    let (status_now, metrics, spawns) = quiet.expect("scaled back to zero, every spawn evicted");
    let (code, content_type, _) = get(&format!("{}/metrics", server.url));
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(spawns >= 2.0, "each pool spawned");
    for (pool, model) in [("embed", "minilm"), ("vision", "detr")] {
        let labels = [("pool", pool), ("model", model)];
        assert_eq!(sample(&metrics, "poolwarden_workers", &labels), Some(0.0));
        assert_eq!(sample(&metrics, "poolwarden_in_flight", &labels), Some(0.0));
        assert_eq!(sample(&metrics, "poolwarden_waiting", &labels), Some(0.0));
        assert_eq!(
            sample(&metrics, "poolwarden_spawn_failures_total", &labels),
            Some(0.0)
        );
        assert_eq!(
            sample(&metrics, "poolwarden_accounted_bytes", &[("pool", pool)]),
            Some(0.0)
        );
        let loads = sample(&metrics, "poolwarden_spawn_seconds_count", &labels).unwrap();
        let spawned = sample(&metrics, "poolwarden_spawns_total", &labels).unwrap();
        assert_eq!(loads, spawned, "one load time per spawn of {pool}/{model}");
    }
    assert!(
        metrics.contains("# HELP poolwarden_waiting "),
        "descriptions are exported"
    );
    assert!(sample(&metrics, "poolwarden_requests_total", &[("pool", "embed")]).unwrap() > 0.0);
    assert!(sample(&metrics, "poolwarden_tick_seconds_count", &[]).unwrap() > 0.0);
    assert_eq!(
        status_now.evictions.get("idle").copied().map(|n| n as f64),
        Some(spawns)
    );

    // SIGHUP with a corrected file: the policy and the limits change, no restart.
    let reloaded = CONFIG
        .replace("idle = \"400ms\"", "idle = \"2s\"")
        .replacen("max_workers_per_model = 2", "max_workers_per_model = 3", 1)
        + "\n[pools.vision.policy]\nkind = \"keep-alive\"\nttl = \"90s\"\n";
    std::fs::write(&config, reloaded).unwrap();
    signal(&server, "HUP");
    let after = eventually(Duration::from_secs(10), || {
        let status = status(&server);
        (status.pools[0].max_workers_per_model == 3).then_some(status)
    })
    .expect("the reload applied");
    assert_eq!(
        after.pools[0].policy,
        "gradual-lru idle=2s step=100ms min_workers=0"
    );
    assert_eq!(after.pools[1].policy, "keep-alive ttl=1m 30s min_workers=0");
    assert_eq!(after.pools[1].max_workers_per_model, 2);

    // SIGHUP with a bad file: reported with its location; the running config stays.
    std::fs::write(
        &config,
        CONFIG.replacen("max_workers_per_model = 2", "max_workers_per_model = 0", 1),
    )
    .unwrap();
    signal(&server, "HUP");
    let reported = eventually(Duration::from_secs(10), || {
        server
            .err
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("reload failed"))
            .cloned()
    })
    .expect("the bad file is reported");
    assert!(
        reported.contains(
            "model-server.toml:11:1: `pools.embed.max_workers_per_model`: must be at least 1"
        ),
        "{reported}"
    );
    let kept = status(&server);
    assert_eq!(kept.pools[0].max_workers_per_model, 3);
    assert_eq!(kept.pools[1].policy, after.pools[1].policy);

    // Ctrl-C: a clean stop.
    signal(&server, "INT");
    let exit = eventually(Duration::from_secs(20), || server.child.try_wait().unwrap());
    assert_eq!(
        exit.map(|e| e.success()),
        Some(true),
        "{:?}",
        server.err.lock().unwrap()
    );
    let out = server.out.lock().unwrap().join("\n");
    assert!(out.contains("reloaded"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
