//! The trace parsers: both formats, every error located at its file and line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::sim::{
    render_csv, simulate, ServiceModel, SimOptions, Trace, TraceErrorKind, CSV_HEADER,
};

const AZURE: &str = "TIMESTAMP,ContextTokens,GeneratedTokens\n";

fn native(text: &str) -> Result<Trace, poolwarden::sim::TraceError> {
    Trace::parse_native(text, "t.csv", "t")
}

fn azure(text: &str) -> Result<Trace, poolwarden::sim::TraceError> {
    Trace::parse_azure(text, "c.csv", "c", "c", ServiceModel::default())
}

/// The error of `result`, with its line and message.
fn error_of(result: Result<Trace, poolwarden::sim::TraceError>) -> (Option<usize>, String) {
    let e = result.expect_err("an error");
    (e.line, e.to_string())
}

#[test]
fn native_rows_in_any_order_with_comments_quotes_and_pools() {
    let text = "# a trace\nmodel,at,duration,pool\nb, 2.5, 1, # late\n\"we,ird\",0,0.25,\n\na,1,3,vision\n\"x#y\",4,1,\n";
    let trace = native(text).unwrap();
    let rows: Vec<(f64, &str, &str, f64)> = trace
        .requests
        .iter()
        .map(|r| {
            (
                r.at.as_secs_f64(),
                &*r.pool,
                &*r.model,
                r.duration.as_secs_f64(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (0.0, "default", "we,ird", 0.25),
            (1.0, "vision", "a", 3.0),
            (2.5, "default", "b", 1.0),
            (4.0, "default", "x#y", 1.0),
        ]
    );
    assert_eq!(trace.pool_origin("vision").as_deref(), Some("t.csv:6"));
    assert_eq!(trace.pool_origin("default").as_deref(), Some("t.csv:3"));
}

#[test]
fn native_errors_name_the_right_line_after_blank_lines_and_crlf() {
    let (line, message) = error_of(native("at,model,duration\r\n\r\n\r\n1,a,2\r\n3,b,-1\r\n"));
    assert_eq!(line, Some(5), "{message}");
    assert!(message.starts_with("t.csv:5: `duration`"), "{message}");
    let (line, _) = error_of(native("at,model,duration\n1,a\n"));
    assert_eq!(line, Some(2));
    let (line, message) = error_of(native("# c\n\nwhen,model,duration\n"));
    assert_eq!(line, Some(3));
    assert!(message.contains("unknown column `when`"), "{message}");
    let (line, message) = error_of(native("at,model,duration\n1,\"open,2\n"));
    assert_eq!(line, Some(2));
    assert!(message.contains("quoted field"), "{message}");
}

#[test]
fn a_duplicate_column_is_an_error() {
    let (line, message) = error_of(native("at,model,duration,at\n1,a,2,3\n"));
    assert_eq!(line, Some(1));
    assert!(message.contains("column `at` appears twice"), "{message}");
}

#[test]
fn a_trace_without_rows_is_an_error() {
    let e = native("at,model,duration\n# nothing yet\n").unwrap_err();
    assert_eq!(e.kind, TraceErrorKind::NoRows);
    assert_eq!(e.line, Some(1));
    let e = azure(AZURE).unwrap_err();
    assert_eq!(e.kind, TraceErrorKind::NoRows);
    let e = native("").unwrap_err();
    assert!(matches!(e.kind, TraceErrorKind::Empty { .. }), "{e}");
    assert_eq!(e.line, Some(1));
}

#[test]
fn a_header_of_the_other_format_gets_a_hint() {
    let (line, message) = error_of(native(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\n",
    ));
    assert_eq!(line, Some(1));
    assert!(message.contains("--format azure-llm"), "{message}");
    let (line, message) = error_of(azure("at,model,duration\n0,m,1\n"));
    assert_eq!(line, Some(1));
    assert!(message.contains("--format native"), "{message}");
    // Any other header: what was expected.
    let (_, message) = error_of(azure("when,what\n"));
    assert!(
        message.contains("expected header `TIMESTAMP,ContextTokens,GeneratedTokens`"),
        "{message}"
    );
}

#[test]
fn a_native_trace_at_unix_time_still_parses_and_absurd_values_do_not() {
    let trace = native("at,model,duration\n1.7e9,m,1\n1700000001.5,m,2\n").unwrap();
    assert_eq!(trace.requests[0].at, Duration::from_secs(1_700_000_000));
    assert_eq!(
        trace.requests[1].at,
        Duration::from_millis(1_700_000_001_500)
    );
    let (line, message) = error_of(native("at,model,duration\n0,m,1\n1e11,m,1\n"));
    assert_eq!(line, Some(3));
    assert!(message.contains("out of range"), "{message}");
    for bad in ["nan", "inf", "-1", "1s", ""] {
        let (line, message) = error_of(native(&format!("at,model,duration\n{bad},m,1\n")));
        assert_eq!(line, Some(2), "{bad}: {message}");
    }
}

#[test]
fn eighty_thousand_model_names_parse_fast_and_share_their_names() {
    let mut text = String::from("at,model,duration\n");
    for i in 0..80_000 {
        text.push_str(&format!("{i},model-{i},1\n"));
    }
    for i in 0..1000 {
        text.push_str(&format!("{},model-{i},1\n", 80_000 + i));
    }
    let started = Instant::now();
    let trace = native(&text).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(trace.requests.len(), 81_000);
    // A generous bound: a linear scan per row took 9.5 s for this in release.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // The second request of model-7 shares the first one's name.
    let sevens: Vec<&Arc<str>> = trace
        .requests
        .iter()
        .filter(|r| &*r.model == "model-7")
        .map(|r| &r.model)
        .collect();
    assert_eq!(sevens.len(), 2);
    assert!(Arc::ptr_eq(sevens[0], sevens[1]));
}

#[test]
fn azure_rows_become_relative_arrivals_with_service_times() {
    let text = format!(
        "{AZURE}2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n2023-11-17 00:00:00,0,1"
    );
    let trace = azure(&text).unwrap();
    assert_eq!(trace.requests.len(), 3);
    assert_eq!(trace.requests[0].at, Duration::ZERO);
    assert_eq!(trace.requests[1].at, Duration::from_nanos(4_314_579_000));
    let midnight = (24 * 3600 - (18 * 3600 + 15 * 60 + 46)) as f64 - 0.68059;
    assert!((trace.requests[2].at.as_secs_f64() - midnight).abs() < 1e-6);
    // 374 × 0.1 ms + 44 × 20 ms
    assert_eq!(
        trace.requests[0].duration,
        Duration::from_micros(37_400 + 880_000)
    );
    assert_eq!(&*trace.requests[0].model, "c");
}

#[test]
fn azure_timestamps_far_apart_do_not_wrap() {
    // 584 years and a minute apart: as u64 nanoseconds this wrapped to about a minute.
    let text = format!("{AZURE}1970-01-01 00:00:00,1,1\n2554-07-21 23:35:00,1,1\n");
    let (line, message) = error_of(azure(&text));
    assert_eq!(line, Some(3), "{message}");
    assert!(message.contains("584 years"), "{message}");
    // 500 years apart fits.
    let text = format!("{AZURE}1970-01-01 00:00:00,1,1\n2470-01-01 00:00:00,1,1\n");
    let trace = azure(&text).unwrap();
    assert!(trace.requests[1].at > Duration::from_secs(500 * 365 * 86_400));
}

#[test]
fn impossible_dates_negative_times_and_offsets_are_rejected() {
    for (bad, why) in [
        ("2023-02-31 00:00:00", "February 2023 has 28 days"),
        ("2023-02-29 00:00:00", "February 2023 has 28 days"),
        ("2023-04-31 00:00:00", "April 2023 has 30 days"),
        ("2023-11-16 18:-1:46", "minute `-1`"),
        ("2023-11-16 -1:15:46", "hour `-1`"),
        ("2023-11-16 18:15:-5", "second `-5`"),
        ("2023-11-16 18:15:46+11", "`+11` is a UTC offset"),
        ("2023-11-16 18:15:46.5-03:00", "`-03:00` is a UTC offset"),
        ("2023-13-16 18:15:46", "month `13`"),
        ("2023-11-16 24:00:00", "hour `24`"),
        ("2023-11-16 18:15:46.1234567890", "fraction"),
        ("2023-11-16", "expected `YYYY-MM-DD HH:MM:SS"),
        ("+2023-11-16 18:15:46", "year `+2023`"),
    ] {
        let text = format!("{AZURE}2023-11-16 18:15:46,1,1\n{bad},1,1\n");
        let (line, message) = error_of(azure(&text));
        assert_eq!(line, Some(3), "{bad}: {message}");
        assert!(message.contains(why), "{bad}: {message}");
        assert!(message.starts_with("c.csv:3: `TIMESTAMP`"), "{message}");
    }
    // A leap day, a `T`, a `Z` and a zero offset are fine.
    let text = format!(
        "{AZURE}2024-02-29 00:00:00,1,1\n2024-02-29T00:00:01Z,1,1\n2024-02-29 00:00:02+00:00,1,1\n"
    );
    let trace = azure(&text).unwrap();
    let at: Vec<u64> = trace.requests.iter().map(|r| r.at.as_secs()).collect();
    assert_eq!(at, vec![0, 1, 2]);
}

#[test]
fn azure_token_counts_must_be_whole_numbers() {
    for bad in ["x", "-1", "1.5", ""] {
        let text = format!("{AZURE}2023-11-16 18:15:46,{bad},44\n");
        let (line, message) = error_of(azure(&text));
        assert_eq!(line, Some(2), "{bad}");
        assert!(message.contains("`ContextTokens`"), "{message}");
    }
}

#[test]
fn an_unknown_pool_is_reported_at_its_first_row() {
    let registry = PolicyRegistry::new();
    let config = Config::embedded_default(&registry).unwrap();
    let trace = native("at,model,duration,pool\n0,m,1,\n1,m,1,vision\n2,m,1,vision\n").unwrap();
    let error = simulate(
        &config,
        &registry,
        &config.policy,
        &trace,
        &SimOptions::default(),
        None,
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("t.csv:3: the trace sends requests to pool `vision`"),
        "{message}"
    );
    // Merged traces keep where each pool came from.
    let other = Trace::parse_native("at,model,duration,pool\n0,x,1,image\n", "u.csv", "u").unwrap();
    let merged = Trace::merge(vec![trace, other]);
    assert_eq!(merged.pool_origin("image").as_deref(), Some("u.csv:2"));
    assert_eq!(merged.pool_origin("vision").as_deref(), Some("t.csv:3"));
}

#[test]
fn the_csv_output_quotes_names_with_commas_and_quotes() {
    let registry = PolicyRegistry::new();
    let config = Config::from_toml(
        "[pools.\"we,ird\"]\nmemory = \"1GiB\"\n",
        "c.toml",
        &registry,
    )
    .unwrap();
    let trace =
        native("at,model,duration,pool\n0,\"a \"\"quoted\"\", model\",1,\"we,ird\"\n").unwrap();
    let run = simulate(
        &config,
        &registry,
        &config.policy,
        &trace,
        &SimOptions::default(),
        None,
    )
    .unwrap();
    let text = render_csv(&[run]);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        &csv::StringRecord::from(CSV_HEADER.to_vec())
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert!(!rows.is_empty());
    for row in &rows {
        assert_eq!(row.len(), CSV_HEADER.len(), "{row:?}");
        assert_eq!(&row[2], "we,ird");
        assert_eq!(&row[3], "a \"quoted\", model");
    }
    assert_eq!(&rows[0][0], "gradual-lru");
    assert_eq!(&rows[0][1], "idle=1m step=1m min_workers=0");
}
