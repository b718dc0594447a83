//! Fuzzing the parsers: the config loader and both trace formats.
//!
//! - The corpus (`tests/fuzz_corpus/`): every malformed input found so far, each with the line
//!   its error must name and part of the message (`tests/fuzz_corpus/EXPECTED`).
//! - Property tests: arbitrary bytes, and the corpus and valid samples mutated (bytes cut,
//!   CSV and TOML punctuation inserted, lines doubled, swapped or cut). Every input either
//!   parses or gives an error located at `file:line` (`file:line:col` for a config); none
//!   panics, and none takes longer than [`BOUND`].
//! - Round trips: random valid traces, written with the `csv` crate (quoting included) or as
//!   Azure timestamps from an independent calendar, parse back to exactly what was written.
//!
//! The case counts are fixed, so the whole file runs in seconds in CI;
//! `POOLWARDEN_FUZZ_CASES=100000 cargo test --release --test fuzz` fuzzes longer.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::sim::{ServiceModel, Trace, TraceError, TraceFormat};
use proptest::prelude::*;

/// `default` cases, or `POOLWARDEN_FUZZ_CASES` (to fuzz longer by hand).
fn cases(default: u32) -> u32 {
    std::env::var("POOLWARDEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The longest one parse of a fuzz input (a few KiB) may take before it counts as a hang.
const BOUND: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread and waits at most [`BOUND`] for it; a panic or a hang fails.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(BOUND) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer within {BOUND:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the parser panicked"),
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Parses `bytes` as a trace of `format` the way `Trace::load` does, named `file`.
fn parse_trace(bytes: Vec<u8>, format: TraceFormat, file: &str) -> Result<Trace, TraceError> {
    let file = file.to_string();
    within(&format!("{file} ({format:?})"), move || {
        let dir = std::env::temp_dir().join(format!("poolwarden-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{}-{:?}.csv",
            std::thread::current()
                .name()
                .unwrap_or("t")
                .replace("::", "-"),
            std::thread::current().id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let result = Trace::load(&path, format, None, ServiceModel::default());
        let _ = std::fs::remove_file(&path);
        // Name errors by the input, not by the temporary file.
        result.map_err(|mut e| {
            e.file = file;
            e
        })
    })
}

/// Parses `text` directly (no file), both formats.
fn parse_text(text: String) -> [Result<Trace, TraceError>; 2] {
    within("a mutated trace", move || {
        [
            Trace::parse_native(&text, "fuzz.csv", "fuzz"),
            Trace::parse_azure(&text, "fuzz.csv", "fuzz", "m", ServiceModel::default()),
        ]
    })
}

/// The error is located at a line of `text` (or the one after its last).
fn assert_located(error: &TraceError, text: &str) -> Result<(), TestCaseError> {
    let lines = text.split('\n').count() + 1;
    let line = error
        .line
        .ok_or_else(|| TestCaseError::fail(format!("no line: {error}")))?;
    prop_assert!(
        (1..=lines).contains(&line),
        "line {} of {}: {}",
        line,
        lines,
        error
    );
    let prefix = format!("{}:{}: ", error.file, line);
    prop_assert!(error.to_string().starts_with(&prefix), "{}", error);
    Ok(())
}

fn load_config(bytes: Vec<u8>) -> Result<(), String> {
    within("a config", move || {
        let registry = PolicyRegistry::new();
        match Config::from_bytes(&bytes, "fuzz.toml", &registry) {
            Ok(config) => {
                config
                    .default_policy(&registry)
                    .map_err(|e| format!("a valid config's policy does not build: {e}"))?;
                for pool in config.pools.values() {
                    if let Some(spec) = &pool.policy {
                        spec.build(&registry)
                            .map_err(|e| format!("a valid pool policy does not build: {e}"))?;
                    }
                }
                Ok(())
            }
            Err(e) => match e.position() {
                Some((line, column)) if line >= 1 && column >= 1 => {
                    let prefix = format!("fuzz.toml:{line}:{column}: ");
                    if e.to_string().starts_with(&prefix) {
                        Ok(())
                    } else {
                        Err(format!("badly located: {e}"))
                    }
                }
                _ => Err(format!("not located: {e}")),
            },
        }
    })
}

#[test]
fn every_corpus_input_gives_its_located_error() {
    let expected = std::fs::read_to_string(corpus_dir().join("EXPECTED")).unwrap();
    let mut listed = Vec::new();
    for entry in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut parts = entry.split('\t');
        let (Some(path), Some(line), Some(part)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("EXPECTED: bad entry `{entry}`");
        };
        let line: usize = line.parse().unwrap();
        listed.push(path.to_string());
        let bytes = std::fs::read(corpus_dir().join(path)).unwrap();
        if path.starts_with("config/") {
            let registry = PolicyRegistry::new();
            let error = Config::from_bytes(&bytes, path, &registry)
                .expect_err(&format!("{path} must be rejected"));
            assert_eq!(error.position().map(|p| p.0), Some(line), "{path}: {error}");
            let message = error.to_string();
            assert!(message.starts_with(&format!("{path}:{line}:")), "{message}");
            assert!(message.contains(part), "{path}: `{part}` not in: {message}");
        } else {
            let format = if path.starts_with("azure/") {
                TraceFormat::AzureLlm
            } else {
                TraceFormat::Native
            };
            let error =
                parse_trace(bytes, format, path).expect_err(&format!("{path} must be rejected"));
            assert_eq!(error.line, Some(line), "{path}: {error}");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{path}:{line}: ")),
                "{message}"
            );
            assert!(message.contains(part), "{path}: `{part}` not in: {message}");
        }
    }
    for dir in ["native", "azure", "config"] {
        for file in files_in(&corpus_dir().join(dir)) {
            let name = format!("{dir}/{}", file.file_name().unwrap().to_string_lossy());
            assert!(listed.contains(&name), "{name} has no entry in EXPECTED");
        }
    }
}

/// Valid inputs to mutate, besides the corpus.
fn valid_samples() -> Vec<String> {
    let mut samples = vec![
        "# a trace\nat,model,duration,pool\n0,a,1,\n0.5,\"we,ird\",2,vision # late\n1.7e9,b,0.25,vision\n".to_string(),
        "model,duration,at\nx,1,0\ny,2,1\n".to_string(),
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n2024-02-29 23:59:59,0,1\n".to_string(),
    ];
    for dir in ["config"] {
        for file in files_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)) {
            samples.push(std::fs::read_to_string(file).unwrap());
        }
    }
    samples
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = valid_samples()
        .into_iter()
        .map(String::into_bytes)
        .collect();
    for dir in ["native", "azure", "config"] {
        for file in files_in(&corpus_dir().join(dir)) {
            seeds.push(std::fs::read(file).unwrap());
        }
    }
    let malformed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    for file in files_in(&malformed) {
        seeds.push(std::fs::read(file).unwrap());
    }
    seeds
}

/// Characters that matter to CSV, timestamps and TOML, and a few that do not.
const ALPHABET: &[u8] = b",\"#\n\r-+:.0123456789eEZT =[]{}'\\ax\t";

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Truncate { at: usize },
    Replace { at: usize, byte: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = proptest::sample::select(ALPHABET.to_vec());
    prop_oneof![
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (
            any::<usize>(),
            proptest::collection::vec(byte.clone(), 1..12)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), byte).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
    ]
}

fn apply(mut input: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = input.len();
        match m {
            Mutation::Delete { at, len: n } if len > 0 => {
                let at = at % len;
                let end = (at + n).min(len);
                input.drain(at..end);
            }
            Mutation::Insert { at, bytes } => {
                let at = at % (len + 1);
                input.splice(at..at, bytes.iter().copied());
            }
            Mutation::DuplicateLine { line } => {
                let mut lines: Vec<Vec<u8>> =
                    input.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let i = line % lines.len();
                let copy = lines[i].clone();
                lines.insert(i, copy);
                input = lines.join(&b'\n');
            }
            Mutation::SwapLines { a, b } => {
                let mut lines: Vec<Vec<u8>> =
                    input.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                lines.swap(a % n, b % n);
                input = lines.join(&b'\n');
            }
            Mutation::Truncate { at } => {
                input.truncate(at % (len + 1));
            }
            Mutation::Replace { at, byte } if len > 0 => {
                input[at % len] = *byte;
            }
            _ => {}
        }
    }
    input
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        proptest::sample::select(seeds),
        proptest::collection::vec(mutation(), 1..6),
    )
        .prop_map(|(seed, mutations)| apply(seed, &mutations))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_parse_or_give_a_located_trace_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for format in [TraceFormat::Native, TraceFormat::AzureLlm] {
            if let Err(e) = parse_trace(bytes.clone(), format, "fuzz.csv") {
                prop_assert!(e.line.is_some(), "{}", e);
            }
        }
    }

    #[test]
    fn mutated_traces_parse_or_give_a_located_error(bytes in mutated()) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for result in parse_text(text.clone()) {
            match result {
                Ok(trace) => {
                    prop_assert!(!trace.requests.is_empty());
                    prop_assert!(trace.requests.windows(2).all(|w| w[0].at <= w[1].at));
                }
                Err(e) => assert_located(&e, &text)?,
            }
        }
    }

    #[test]
    fn mutated_configs_load_or_give_a_located_error(bytes in mutated()) {
        let result = load_config(bytes);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }

    #[test]
    fn arbitrary_bytes_never_break_the_config_loader(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let result = load_config(bytes);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// A model or pool name: printable, with commas, quotes and `#` (the CSV writer quotes what
/// needs it), no surrounding spaces (fields are trimmed).
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9,\"#;:._-]([a-zA-Z0-9,\"#;:. _-]{0,10}[a-zA-Z0-9,\"#;:._-])?"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(200), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn native_traces_written_with_the_csv_crate_read_back_exactly(
        rows in proptest::collection::vec((0u32..100_000, name(), 0u32..10_000, proptest::option::of(name())), 1..40)
    ) {
        let mut writer = csv::WriterBuilder::new()
            .quote_style(csv::QuoteStyle::Always)
            .from_writer(Vec::new());
        writer.write_record(["at", "model", "duration", "pool"]).unwrap();
        for (at, model, duration, pool) in &rows {
            let at = format!("{}.{:03}", at / 1000, at % 1000);
            let duration = format!("{}", f64::from(*duration) / 100.0);
            writer.write_record([at.as_str(), model, &duration, pool.as_deref().unwrap_or("")]).unwrap();
        }
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        let trace = Trace::parse_native(&text, "rt.csv", "rt").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let mut expected: Vec<(u128, String, String, u128)> = rows
            .iter()
            .map(|(at, model, duration, pool)| {
                (
                    u128::from(*at) * 1_000_000,
                    pool.clone().unwrap_or_else(|| "default".into()),
                    model.clone(),
                    u128::from(*duration) * 10_000_000,
                )
            })
            .collect();
        let mut got: Vec<(u128, String, String, u128)> = trace
            .requests
            .iter()
            .map(|r| (r.at.as_nanos(), r.pool.to_string(), r.model.to_string(), r.duration.as_nanos()))
            .collect();
        expected.sort();
        got.sort();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn azure_timestamps_read_back_exactly(
        stamps in proptest::collection::vec((0i64..(430 * 365 * 86_400), 0u32..1_000_000_000), 1..20)
    ) {
        // Seconds since 1971-01-01, written with a calendar independent of the parser's.
        let base = 365 * 86_400i64;
        let mut text = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
        for (secs, nanos) in &stamps {
            let t = base + secs;
            let (y, m, d) = civil_from_days(t.div_euclid(86_400));
            let s = t.rem_euclid(86_400);
            text.push_str(&format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{nanos:09},1,1\n",
                s / 3600,
                s % 3600 / 60,
                s % 60
            ));
        }
        let trace = Trace::parse_azure(&text, "rt.csv", "rt", "m", ServiceModel::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let instants: Vec<i128> = stamps
            .iter()
            .map(|(s, n)| i128::from(*s) * 1_000_000_000 + i128::from(*n))
            .collect();
        let start = instants.iter().copied().min().unwrap();
        let mut expected: Vec<u128> = instants.iter().map(|t| (t - start) as u128).collect();
        expected.sort_unstable();
        let got: Vec<u128> = trace.requests.iter().map(|r| r.at.as_nanos()).collect();
        prop_assert_eq!(got, expected);
    }
}

/// The civil date of a day count since 1970-01-01 (after Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[test]
fn the_calendar_of_the_round_trip_is_right() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_677), (2023, 11, 16));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}
