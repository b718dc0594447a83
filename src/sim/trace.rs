//! Request traces: the native CSV format, the Azure LLM inference trace, and Scenario 5.
//!
//! Both formats are read with the `csv` crate (a quoted field may hold a comma or a quote), and
//! every error names the file and the line.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The pool a native trace row goes to when it has no `pool` column.
pub const DEFAULT_POOL: &str = "default";

/// The header of the Azure LLM inference trace.
const AZURE_HEADER: [&str; 3] = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"];

/// The latest arrival (and the longest duration) a trace may hold: what fits in a `u64` of
/// nanoseconds, about 584 years.
const MAX_SECS: f64 = u64::MAX as f64 / 1e9;

/// One request: when it arrives, where it goes, how long it keeps a worker busy.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Arrival, from the trace's start.
    pub at: Duration,
    /// The pool.
    pub pool: Arc<str>,
    /// The key (model).
    pub model: Arc<str>,
    /// Service time once it has a worker.
    pub duration: Duration,
}

/// A trace: requests sorted by arrival (stable for equal times).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Its name (a file stem, or `scenario5`).
    pub name: String,
    /// Its requests, by arrival.
    pub requests: Vec<Request>,
    /// Where each pool is first named: `file:line` of the first row that sends a request to
    /// it (empty for a built-in trace). Errors about a pool point there.
    pub pool_origins: BTreeMap<String, String>,
}

/// The trace file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceFormat {
    /// CSV with header `at,model,duration` and an optional `pool` column; seconds.
    #[default]
    Native,
    /// The Azure LLM inference trace: `TIMESTAMP,ContextTokens,GeneratedTokens`.
    AzureLlm,
}

/// How long an Azure-trace request keeps a worker busy: prefill time per context token plus
/// decode time per generated token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceModel {
    /// Prefill time per context (prompt) token. Default 0.1 ms: about 10,000 prompt tokens per
    /// second, a 7B model in fp16 on one data-centre GPU.
    pub prefill_per_token: Duration,
    /// Decode time per generated token. Default 20 ms: about 50 tokens per second for a
    /// single stream on the same GPU.
    pub decode_per_token: Duration,
}

impl Default for ServiceModel {
    fn default() -> Self {
        ServiceModel {
            prefill_per_token: Duration::from_micros(100),
            decode_per_token: Duration::from_millis(20),
        }
    }
}

/// A trace that could not be read or parsed: the file, the line when the problem is in the
/// text, and what is wrong. Displayed as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TraceError {
    /// The file.
    pub file: String,
    /// 1-based line, when the problem is in the text (every error but [`TraceErrorKind::Read`]).
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: TraceErrorKind,
}

/// What is wrong with a trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceErrorKind {
    /// The file could not be read.
    #[error("{0}")]
    Read(String),
    /// The file is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// No header at all.
    #[error("empty trace: expected a header `{expected}`")]
    Empty {
        /// The header the format expects.
        expected: &'static str,
    },
    /// A header but no request.
    #[error("no requests: the trace has a header but no rows")]
    NoRows,
    /// The header is not the format's.
    #[error("{0}")]
    Header(String),
    /// The header is the other format's.
    #[error("this is {found}'s header; {hint}")]
    OtherFormat {
        /// The format the header belongs to.
        found: &'static str,
        /// How to read it.
        hint: &'static str,
    },
    /// A column the format does not know.
    #[error(
        "unknown column `{0}`; the columns are `at`, `model`, `duration` and optionally `pool`"
    )]
    UnknownColumn(String),
    /// A column named twice.
    #[error("column `{0}` appears twice in the header")]
    DuplicateColumn(String),
    /// A row with the wrong number of fields.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// The header's.
        expected: usize,
        /// The row's.
        found: usize,
    },
    /// A row the CSV reader could not read.
    #[error("cannot read the row: {0}")]
    Row(String),
    /// A quoted field not closed on its line.
    #[error("a quoted field is not closed on this line")]
    UnclosedQuote,
    /// A field with a bad value.
    #[error("`{column}`: {message}")]
    Field {
        /// The column.
        column: &'static str,
        /// What is wrong with the value.
        message: String,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

impl TraceError {
    fn at(file: &str, line: usize, kind: TraceErrorKind) -> TraceError {
        TraceError {
            file: file.to_string(),
            line: Some(line),
            kind,
        }
    }

    fn field(file: &str, line: usize, column: &'static str, message: String) -> TraceError {
        TraceError::at(file, line, TraceErrorKind::Field { column, message })
    }
}

impl Trace {
    /// Scenario 5: four requests of 5 minutes at 0:00, then one of 60 s at 7:30, all on key
    /// `m` of pool `default`.
    pub fn scenario5() -> Trace {
        let pool: Arc<str> = Arc::from(DEFAULT_POOL);
        let model: Arc<str> = Arc::from("m");
        let request = |at: u64, duration: u64| Request {
            at: Duration::from_secs(at),
            pool: pool.clone(),
            model: model.clone(),
            duration: Duration::from_secs(duration),
        };
        Trace {
            name: "scenario5".to_string(),
            requests: vec![
                request(0, 300),
                request(0, 300),
                request(0, 300),
                request(0, 300),
                request(450, 60),
            ],
            pool_origins: BTreeMap::new(),
        }
    }

    /// Reads a trace file. For the Azure format the key is `model`, else the file stem.
    pub fn load(
        path: &Path,
        format: TraceFormat,
        model: Option<&str>,
        service: ServiceModel,
    ) -> Result<Trace, TraceError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| TraceError {
            file: file.clone(),
            line: None,
            kind: TraceErrorKind::Read(e.to_string()),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = line_of(&e.as_bytes()[..e.utf8_error().valid_up_to()]);
            TraceError::at(&file, line, TraceErrorKind::NotUtf8)
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        match format {
            TraceFormat::Native => Trace::parse_native(&text, &file, &stem),
            TraceFormat::AzureLlm => {
                Trace::parse_azure(&text, &file, &stem, model.unwrap_or(&stem), service)
            }
        }
    }

    /// Parses the native CSV format: a header naming `at`, `model`, `duration` and optionally
    /// `pool`, in any order; seconds, decimals allowed. `#` starts a comment (outside quotes);
    /// rows may come in any order.
    pub fn parse_native(text: &str, file: &str, name: &str) -> Result<Trace, TraceError> {
        const EXPECTED: &str = "at,model,duration";
        let mut rows = Rows::new(text, file, true)?;
        let Some((header_line, header)) = rows.next_row()? else {
            return Err(TraceError::at(
                file,
                1,
                TraceErrorKind::Empty { expected: EXPECTED },
            ));
        };
        let columns: Vec<String> = header.iter().map(str::to_string).collect();
        if is_azure_header(&columns) {
            return Err(TraceError::at(
                file,
                header_line,
                TraceErrorKind::OtherFormat {
                    found: "the Azure LLM inference trace",
                    hint: "read it with `--format azure-llm` (TraceFormat::AzureLlm)",
                },
            ));
        }
        let mut seen = HashSet::new();
        for column in &columns {
            if !["at", "model", "duration", "pool"].contains(&column.as_str()) {
                return Err(TraceError::at(
                    file,
                    header_line,
                    TraceErrorKind::UnknownColumn(column.clone()),
                ));
            }
            if !seen.insert(column.as_str()) {
                return Err(TraceError::at(
                    file,
                    header_line,
                    TraceErrorKind::DuplicateColumn(column.clone()),
                ));
            }
        }
        let find = |name: &str| columns.iter().position(|c| c == name);
        let (Some(at_col), Some(model_col), Some(duration_col)) =
            (find("at"), find("model"), find("duration"))
        else {
            return Err(TraceError::at(
                file,
                header_line,
                TraceErrorKind::Header(format!(
                    "header must name `at`, `model` and `duration` (and optionally `pool`), got `{}`",
                    columns.join(",")
                )),
            ));
        };
        let pool_col = find("pool");
        let default_pool: Arc<str> = Arc::from(DEFAULT_POOL);
        let mut interned = Interner::default();
        let mut requests = Vec::new();
        let mut pool_origins = BTreeMap::new();
        while let Some((line, fields)) = rows.next_row()? {
            if fields.len() != columns.len() {
                return Err(TraceError::at(
                    file,
                    line,
                    TraceErrorKind::FieldCount {
                        expected: columns.len(),
                        found: fields.len(),
                    },
                ));
            }
            let at =
                seconds(&fields[at_col]).map_err(|m| TraceError::field(file, line, "at", m))?;
            let duration = seconds(&fields[duration_col])
                .map_err(|m| TraceError::field(file, line, "duration", m))?;
            let model = &fields[model_col];
            if model.is_empty() {
                return Err(TraceError::field(file, line, "model", "is empty".into()));
            }
            let pool = match pool_col {
                Some(c) if !fields[c].is_empty() => interned.get(&fields[c]),
                _ => default_pool.clone(),
            };
            if !pool_origins.contains_key(&*pool) {
                pool_origins.insert(pool.to_string(), format!("{file}:{line}"));
            }
            requests.push(Request {
                at,
                pool,
                model: interned.get(model),
                duration,
            });
        }
        if requests.is_empty() {
            return Err(TraceError::at(file, header_line, TraceErrorKind::NoRows));
        }
        requests.sort_by_key(|r| r.at);
        Ok(Trace {
            name: name.to_string(),
            requests,
            pool_origins,
        })
    }

    /// Parses the Azure LLM inference trace; every request goes to `model` in pool `default`,
    /// arrivals relative to the earliest timestamp. Timestamps are UTC,
    /// `YYYY-MM-DD HH:MM:SS[.fffffffff]` (a `T` for the space, and a `Z` or zero offset, are
    /// accepted); an impossible date or time, or another offset, is an error.
    pub fn parse_azure(
        text: &str,
        file: &str,
        name: &str,
        model: &str,
        service: ServiceModel,
    ) -> Result<Trace, TraceError> {
        const EXPECTED: &str = "TIMESTAMP,ContextTokens,GeneratedTokens";
        let mut rows = Rows::new(text, file, false)?;
        let Some((header_line, header)) = rows.next_row()? else {
            return Err(TraceError::at(
                file,
                1,
                TraceErrorKind::Empty { expected: EXPECTED },
            ));
        };
        let columns: Vec<String> = header.iter().map(|c| c.replace(' ', "")).collect();
        if !is_azure_header(&columns) {
            let native = ["at", "model", "duration"]
                .iter()
                .all(|n| columns.iter().any(|c| c == n));
            let kind = if native {
                TraceErrorKind::OtherFormat {
                    found: "the native format",
                    hint: "read it with `--format native` (TraceFormat::Native), the default",
                }
            } else {
                TraceErrorKind::Header(format!(
                    "expected header `{EXPECTED}`, got `{}`",
                    header.iter().collect::<Vec<_>>().join(",")
                ))
            };
            return Err(TraceError::at(file, header_line, kind));
        }
        let pool: Arc<str> = Arc::from(DEFAULT_POOL);
        let model: Arc<str> = Arc::from(model);
        let mut stamped: Vec<(i128, Duration, usize)> = Vec::new();
        while let Some((line, fields)) = rows.next_row()? {
            if fields.len() != 3 {
                return Err(TraceError::at(
                    file,
                    line,
                    TraceErrorKind::FieldCount {
                        expected: 3,
                        found: fields.len(),
                    },
                ));
            }
            let at = timestamp_nanos(&fields[0])
                .map_err(|m| TraceError::field(file, line, "TIMESTAMP", m))?;
            let context = tokens(&fields[1])
                .map_err(|m| TraceError::field(file, line, "ContextTokens", m))?;
            let generated = tokens(&fields[2])
                .map_err(|m| TraceError::field(file, line, "GeneratedTokens", m))?;
            let duration = service
                .prefill_per_token
                .saturating_mul(u32::try_from(context).unwrap_or(u32::MAX))
                .saturating_add(
                    service
                        .decode_per_token
                        .saturating_mul(u32::try_from(generated).unwrap_or(u32::MAX)),
                );
            stamped.push((at, duration, line));
        }
        let Some(&(start, _, start_line)) = stamped.iter().min_by_key(|(at, _, _)| *at) else {
            return Err(TraceError::at(file, header_line, TraceErrorKind::NoRows));
        };
        let mut requests = Vec::with_capacity(stamped.len());
        for (at, duration, line) in stamped {
            let offset = u64::try_from(at - start).map_err(|_| {
                TraceError::field(
                    file,
                    line,
                    "TIMESTAMP",
                    format!(
                        "more than 584 years after the earliest timestamp (line {start_line}); \
                         the simulator's clock cannot reach it"
                    ),
                )
            })?;
            requests.push(Request {
                at: Duration::from_nanos(offset),
                pool: pool.clone(),
                model: model.clone(),
                duration,
            });
        }
        requests.sort_by_key(|r| r.at);
        let mut pool_origins = BTreeMap::new();
        pool_origins.insert(DEFAULT_POOL.to_string(), format!("{file}:{start_line}"));
        Ok(Trace {
            name: name.to_string(),
            requests,
            pool_origins,
        })
    }

    /// Merges several traces into one (each keeps its keys), by arrival.
    pub fn merge(traces: Vec<Trace>) -> Trace {
        if traces.len() == 1 {
            return traces.into_iter().next().unwrap_or_default();
        }
        let name = traces
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let mut pool_origins = BTreeMap::new();
        let mut requests = Vec::new();
        for trace in traces {
            for (pool, origin) in trace.pool_origins {
                pool_origins.entry(pool).or_insert(origin);
            }
            requests.extend(trace.requests);
        }
        requests.sort_by_key(|r| r.at);
        Trace {
            name,
            requests,
            pool_origins,
        }
    }

    /// The latest arrival plus its service time.
    pub fn span(&self) -> Duration {
        self.requests
            .iter()
            .map(|r| r.at.saturating_add(r.duration))
            .max()
            .unwrap_or_default()
    }

    /// `file:line` of the first row that sends a request to `pool`, when the trace came from
    /// a file.
    pub fn pool_origin(&self, pool: &str) -> Option<String> {
        self.pool_origins.get(pool).cloned()
    }
}

fn is_azure_header(columns: &[String]) -> bool {
    columns.len() == AZURE_HEADER.len()
        && columns
            .iter()
            .zip(AZURE_HEADER)
            .all(|(c, a)| c.replace(' ', "").eq_ignore_ascii_case(a))
}

/// The rows of a CSV text, each with its 1-based line: blank and comment-only lines skipped,
/// fields trimmed, quotes handled by the `csv` crate. A quoted field must close on its line, so
/// that every row is one line and every error names the right one.
struct Rows<'f> {
    file: &'f str,
    reader: csv::Reader<std::io::Cursor<Vec<u8>>>,
    lines: std::vec::IntoIter<usize>,
    record: csv::StringRecord,
}

impl<'f> Rows<'f> {
    fn new(text: &str, file: &'f str, comments: bool) -> Result<Rows<'f>, TraceError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut kept = String::with_capacity(text.len());
        let mut lines = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            let content = strip_comment(line, comments)
                .ok_or_else(|| TraceError::at(file, index + 1, TraceErrorKind::UnclosedQuote))?;
            let content = content.trim();
            if content.is_empty() {
                continue;
            }
            kept.push_str(content);
            kept.push('\n');
            lines.push(index + 1);
        }
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(std::io::Cursor::new(kept.into_bytes()));
        Ok(Rows {
            file,
            reader,
            lines: lines.into_iter(),
            record: csv::StringRecord::new(),
        })
    }

    /// The next row: its line and its fields.
    fn next_row(&mut self) -> Result<Option<(usize, &csv::StringRecord)>, TraceError> {
        let Some(line) = self.lines.next() else {
            return Ok(None);
        };
        match self.reader.read_record(&mut self.record) {
            Ok(true) => Ok(Some((line, &self.record))),
            Ok(false) => Ok(None),
            Err(e) => Err(TraceError::at(
                self.file,
                line,
                TraceErrorKind::Row(e.to_string()),
            )),
        }
    }
}

/// `line` up to a `#` outside quotes (the whole line when `comments` is off); `None` when a
/// quoted field does not close on the line. Quotes follow the CSV rules the `csv` crate
/// reads: a quote opens a quoted field only at the field's start, and `""` inside is a quote.
fn strip_comment(line: &str, comments: bool) -> Option<&str> {
    let bytes = line.as_bytes();
    let mut field_start = true;
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else {
            match b {
                b'"' if field_start => in_quotes = true,
                b',' => {
                    field_start = true;
                    i += 1;
                    continue;
                }
                b'#' if comments => return Some(&line[..i]),
                _ => {}
            }
            field_start = false;
        }
        i += 1;
    }
    (!in_quotes).then_some(line)
}

/// Shares one `Arc<str>` per distinct name (a hash set: 80k distinct names cost 80k lookups,
/// not a scan each).
#[derive(Default)]
struct Interner {
    names: HashSet<Arc<str>>,
}

impl Interner {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(found) = self.names.get(name) {
            return found.clone();
        }
        let arc: Arc<str> = Arc::from(name);
        self.names.insert(arc.clone());
        arc
    }
}

/// Non-negative, finite seconds (decimals allowed) into a duration, at most what the
/// simulator's clock can hold.
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` must be a finite number >= 0"));
    }
    if value > MAX_SECS {
        return Err(format!(
            "`{text}` is out of range: at most {} s (584 years)",
            MAX_SECS.floor()
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|_| format!("`{text}` is out of range"))
}

/// A token count: digits only.
fn tokens(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a whole number of tokens"));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is too large a number of tokens"))
}

/// A number made of ASCII digits only (no sign), within `range`.
fn digits(text: &str, what: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, String> {
    let value = (!text.is_empty() && text.len() <= 9 && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u32>().ok())
        .flatten();
    match value {
        Some(v) if range.contains(&v) => Ok(v),
        _ => Err(format!(
            "{what} `{text}` is not a number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fffffffff][Z|+00:00]` (UTC) into nanoseconds since the Unix epoch.
fn timestamp_nanos(text: &str) -> Result<i128, String> {
    let bad = |why: String| format!("`{text}`: {why}");
    let (date, time) = text
        .split_once([' ', 'T'])
        .ok_or_else(|| bad("expected `YYYY-MM-DD HH:MM:SS[.fffffff]` (UTC)".into()))?;
    let mut date_parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
    ) else {
        return Err(bad("the date must be `YYYY-MM-DD`".into()));
    };
    let year = digits(y, "year", 1..=9999).map_err(bad)?;
    let month = digits(m, "month", 1..=12).map_err(bad)?;
    let day = digits(d, "day", 1..=31).map_err(bad)?;
    let last = days_in_month(year, month);
    if day > last {
        return Err(bad(format!(
            "{} {year} has {last} days, not {day}",
            MONTHS[month as usize - 1]
        )));
    }
    // The offset, if any: only UTC is accepted.
    // The offset, if any, follows the seconds (at least one character after the second `:`).
    let seconds_at = time
        .match_indices(':')
        .nth(1)
        .map_or(time.len(), |(i, _)| i + 2);
    let (clock, offset) = match time
        .get(seconds_at.min(time.len())..)
        .and_then(|rest| rest.find(['Z', 'z', '+', '-']))
    {
        Some(i) => time.split_at(seconds_at + i),
        None => (time, ""),
    };
    if !offset.is_empty() && !matches!(offset, "Z" | "z" | "+00" | "+00:00" | "+0000" | "-00:00") {
        return Err(bad(format!(
            "`{offset}` is a UTC offset (or a negative time); the trace's timestamps must be UTC"
        )));
    }
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, fraction),
        None => (clock, ""),
    };
    let mut time_parts = hms.split(':');
    let (Some(h), Some(mi), Some(s), None) = (
        time_parts.next(),
        time_parts.next(),
        time_parts.next(),
        time_parts.next(),
    ) else {
        return Err(bad("the time must be `HH:MM:SS`".into()));
    };
    let hour = digits(h, "hour", 0..=23).map_err(bad)?;
    let minute = digits(mi, "minute", 0..=59).map_err(bad)?;
    let second = digits(s, "second", 0..=60).map_err(bad)?;
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("fraction `.{fraction}` must be 1 to 9 digits")));
    }
    let nanos: i128 = if fraction.is_empty() {
        0
    } else {
        let value: i128 = fraction.parse().map_err(|_| bad("bad fraction".into()))?;
        value * 10i128.pow(9 - fraction.len() as u32)
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = i128::from(days) * 86_400 + i128::from(hour * 3600 + minute * 60 + second);
    Ok(secs * 1_000_000_000 + nanos)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn line_of(prefix: &[u8]) -> usize {
    prefix.iter().filter(|b| **b == b'\n').count() + 1
}
