//! Request traces: the native CSV format, the Azure LLM inference trace, and Scenario 5.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The pool a native trace row goes to when it has no `pool` column.
pub const DEFAULT_POOL: &str = "default";

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

/// A trace that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TraceError {
    /// The file.
    pub file: String,
    /// 1-based line, when the problem is in a row.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
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
            message: e.to_string(),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| TraceError {
            file: file.clone(),
            line: Some(line_of(&e.as_bytes()[..e.utf8_error().valid_up_to()])),
            message: "not UTF-8".to_string(),
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

    /// Parses the native CSV format. `#` starts a comment; rows may come in any order.
    pub fn parse_native(text: &str, file: &str, name: &str) -> Result<Trace, TraceError> {
        let error = |line: usize, message: String| TraceError {
            file: file.to_string(),
            line: Some(line),
            message,
        };
        let mut rows = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim()))
            .filter(|(_, l)| !l.is_empty());
        let Some((header_line, header)) = rows.next() else {
            return Err(error(
                1,
                "empty trace: expected a header `at,model,duration`".into(),
            ));
        };
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let find = |name: &str| columns.iter().position(|c| *c == name);
        let (Some(at_col), Some(model_col), Some(duration_col)) =
            (find("at"), find("model"), find("duration"))
        else {
            return Err(error(
                header_line,
                format!("header must name `at`, `model` and `duration` (and optionally `pool`), got `{header}`"),
            ));
        };
        let pool_col = find("pool");
        if let Some(unknown) = columns
            .iter()
            .find(|c| !["at", "model", "duration", "pool"].contains(c))
        {
            return Err(error(header_line, format!("unknown column `{unknown}`")));
        }
        let default_pool: Arc<str> = Arc::from(DEFAULT_POOL);
        let mut interned = Interner::default();
        let mut requests = Vec::new();
        for (line, row) in rows {
            let fields: Vec<&str> = row.split(',').map(str::trim).collect();
            if fields.len() != columns.len() {
                return Err(error(
                    line,
                    format!("expected {} fields, found {}", columns.len(), fields.len()),
                ));
            }
            let at = seconds(fields[at_col]).map_err(|m| error(line, format!("`at`: {m}")))?;
            let duration = seconds(fields[duration_col])
                .map_err(|m| error(line, format!("`duration`: {m}")))?;
            let model = fields[model_col];
            if model.is_empty() {
                return Err(error(line, "`model` is empty".into()));
            }
            let pool = match pool_col {
                Some(c) if !fields[c].is_empty() => interned.get(fields[c]),
                _ => default_pool.clone(),
            };
            requests.push(Request {
                at,
                pool,
                model: interned.get(model),
                duration,
            });
        }
        requests.sort_by_key(|r| r.at);
        Ok(Trace {
            name: name.to_string(),
            requests,
        })
    }

    /// Parses the Azure LLM inference trace; every request goes to `model` in pool `default`,
    /// arrivals relative to the earliest timestamp.
    pub fn parse_azure(
        text: &str,
        file: &str,
        name: &str,
        model: &str,
        service: ServiceModel,
    ) -> Result<Trace, TraceError> {
        let error = |line: usize, message: String| TraceError {
            file: file.to_string(),
            line: Some(line),
            message,
        };
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
        match lines.next() {
            Some((_, header))
                if header.replace(' ', "") == "TIMESTAMP,ContextTokens,GeneratedTokens" => {}
            Some((line, header)) => {
                return Err(error(
                    line,
                    format!(
                        "expected header `TIMESTAMP,ContextTokens,GeneratedTokens`, got `{header}`"
                    ),
                ))
            }
            None => return Err(error(1, "empty trace".into())),
        }
        let pool: Arc<str> = Arc::from(DEFAULT_POOL);
        let model: Arc<str> = Arc::from(model);
        let mut stamped = Vec::new();
        for (line, row) in lines {
            if row.is_empty() {
                continue;
            }
            let fields: Vec<&str> = row.split(',').map(str::trim).collect();
            if fields.len() != 3 {
                return Err(error(
                    line,
                    format!("expected 3 fields, found {}", fields.len()),
                ));
            }
            let at = timestamp_nanos(fields[0])
                .ok_or_else(|| error(line, format!("bad TIMESTAMP `{}`", fields[0])))?;
            let context: u64 = fields[1]
                .parse()
                .map_err(|_| error(line, format!("bad ContextTokens `{}`", fields[1])))?;
            let generated: u64 = fields[2]
                .parse()
                .map_err(|_| error(line, format!("bad GeneratedTokens `{}`", fields[2])))?;
            let duration = service
                .prefill_per_token
                .saturating_mul(u32::try_from(context).unwrap_or(u32::MAX))
                .saturating_add(
                    service
                        .decode_per_token
                        .saturating_mul(u32::try_from(generated).unwrap_or(u32::MAX)),
                );
            stamped.push((at, duration));
        }
        let start = stamped.iter().map(|(at, _)| *at).min().unwrap_or(0);
        let mut requests: Vec<Request> = stamped
            .into_iter()
            .map(|(at, duration)| Request {
                at: Duration::from_nanos((at - start) as u64),
                pool: pool.clone(),
                model: model.clone(),
                duration,
            })
            .collect();
        requests.sort_by_key(|r| r.at);
        Ok(Trace {
            name: name.to_string(),
            requests,
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
        let mut requests: Vec<Request> = traces.into_iter().flat_map(|t| t.requests).collect();
        requests.sort_by_key(|r| r.at);
        Trace { name, requests }
    }

    /// The latest arrival plus its service time.
    pub fn span(&self) -> Duration {
        self.requests
            .iter()
            .map(|r| r.at.saturating_add(r.duration))
            .max()
            .unwrap_or_default()
    }
}

/// Shares one `Arc<str>` per distinct name.
#[derive(Default)]
struct Interner {
    names: Vec<Arc<str>>,
}

impl Interner {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(found) = self.names.iter().find(|n| &***n == name) {
            return found.clone();
        }
        let arc: Arc<str> = Arc::from(name);
        self.names.push(arc.clone());
        arc
    }
}

/// Non-negative, finite seconds (decimals allowed) into a duration.
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` must be a finite number >= 0"));
    }
    Duration::try_from_secs_f64(value).map_err(|_| format!("`{text}` is out of range"))
}

/// `YYYY-MM-DD HH:MM:SS[.fffffff]` (UTC) into nanoseconds since the Unix epoch.
fn timestamp_nanos(text: &str) -> Option<i128> {
    let (date, time) = text.split_once(' ')?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, fraction) = match time.split_once('.') {
        Some((hms, fraction)) => (hms, fraction),
        None => (time, ""),
    };
    let mut time_parts = hms.split(':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: i64 = time_parts.next()?.parse().ok()?;
    if time_parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<i128>().ok()? * 10i128.pow(9 - fraction.len() as u32)
    };
    let days = days_from_civil(year, month, day);
    let secs = days as i128 * 86_400 + (hour * 3600 + minute * 60 + second) as i128;
    Some(secs * 1_000_000_000 + nanos)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_rows_in_any_order_with_comments_and_pools() {
        let text =
            "# a trace\nmodel,at,duration,pool\nb, 2.5, 1, # late\na,0,0.25,\n\na,1,3,vision\n";
        let trace = Trace::parse_native(text, "t.csv", "t").unwrap();
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
                (0.0, "default", "a", 0.25),
                (1.0, "vision", "a", 3.0),
                (2.5, "default", "b", 1.0)
            ]
        );
    }

    #[test]
    fn native_errors_name_the_line() {
        let bad =
            Trace::parse_native("at,model,duration\n1,a,2\n3,b,-1\n", "t.csv", "t").unwrap_err();
        assert_eq!(bad.line, Some(3));
        assert!(bad.to_string().starts_with("t.csv:3: `duration`"), "{bad}");
        let short = Trace::parse_native("at,model,duration\n1,a\n", "t.csv", "t").unwrap_err();
        assert_eq!(short.line, Some(2));
        let header = Trace::parse_native("when,model,duration\n", "t.csv", "t").unwrap_err();
        assert_eq!(header.line, Some(1));
    }

    #[test]
    fn azure_rows_become_relative_arrivals_with_service_times() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n2023-11-17 00:00:00,0,1";
        let trace =
            Trace::parse_azure(text, "conv.csv", "conv", "conv", ServiceModel::default()).unwrap();
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
        assert_eq!(&*trace.requests[0].model, "conv");
    }

    #[test]
    fn azure_errors_name_the_line() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-13-16 18:15:46,1,1\n";
        let bad = Trace::parse_azure(text, "c.csv", "c", "c", ServiceModel::default()).unwrap_err();
        assert_eq!(bad.line, Some(3));
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,x,44\n";
        let bad = Trace::parse_azure(text, "c.csv", "c", "c", ServiceModel::default()).unwrap_err();
        assert_eq!(bad.line, Some(2));
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2023, 11, 16), 19_677);
    }
}
