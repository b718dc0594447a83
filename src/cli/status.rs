//! `poolwarden status URL`: fetches a service's `/status` over plain HTTP (a `GET` on a
//! `TcpStream`, no HTTP client crate) and prints it as a table, one row per model.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::policies::format_duration;
use crate::sim::bytes_text;
use crate::status::Status;

/// Why the status could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `http://HOST:PORT[/PATH]` (or `HOST:PORT[/PATH]`).
    #[error("`{url}` is not an http URL: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No connection, or no answer in time.
    #[error("cannot reach {target}")]
    Unreachable {
        /// `HOST:PORT`.
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An answer that is not a `200` with a status in JSON.
    #[error("{target}{path} answered {what}")]
    BadAnswer {
        /// `HOST:PORT`.
        target: String,
        /// The path asked for.
        path: String,
        /// What came back.
        what: String,
    },
}

/// A parsed `http://HOST:PORT/PATH`.
struct Url {
    /// `HOST:PORT`.
    authority: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Url, FetchError> {
    let bad = |why| FetchError::BadUrl {
        url: url.to_string(),
        why,
    };
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => return Err(bad("https is not supported; use http")),
        Some(_) => return Err(bad("only http:// is supported")),
        None => url,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    // HOST, HOST:PORT, [IPv6] or [IPv6]:PORT; the port a number in 1..=65535.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port))
            if !authority.ends_with(']') && (!host.contains(':') || host.ends_with(']')) =>
        {
            match port.parse::<u16>() {
                Ok(port) if port > 0 => (host, port),
                _ => return Err(bad("bad port: expected a number from 1 to 65535")),
            }
        }
        Some(_) if !authority.starts_with('[') => return Err(bad("bad port")),
        _ => (authority, 80),
    };
    let bracketed = host.starts_with('[') || host.ends_with(']');
    if host.is_empty()
        || (bracketed && !(host.starts_with('[') && host.ends_with(']') && host.len() > 2))
    {
        return Err(bad("bad host"));
    }
    let authority = format!("{host}:{port}");
    let path = match path {
        "" | "/" => "/status".to_string(),
        path => path.to_string(),
    };
    Ok(Url { authority, path })
}

/// Fetches and decodes the status at `url` (`http://127.0.0.1:9090` asks for `/status`;
/// another path is used as given), waiting at most `timeout` for each step.
pub fn fetch_status(url: &str, timeout: Duration) -> Result<Status, FetchError> {
    let url = parse_url(url)?;
    let target = url.authority.clone();
    let unreachable = |source| FetchError::Unreachable {
        target: target.clone(),
        source,
    };
    let addr = url
        .authority
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host has no address",
            ))
        })?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(unreachable)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: poolwarden/{}\r\n\r\n",
        url.path,
        url.authority,
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let bad = |what: String| FetchError::BadAnswer {
        target: url.authority.clone(),
        path: url.path.clone(),
        what,
    };
    let answer = read_answer(&mut stream).map_err(|e| match e {
        AnswerError::Io(e) => unreachable(e),
        AnswerError::TooLarge => bad("an answer over 64 MiB".to_string()),
    })?;
    let split = head_end(&answer).ok_or_else(|| bad("no HTTP response".to_string()))?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut body = answer[split + 4..].to_vec();
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if !status_line.starts_with("HTTP/1.") || code != "200" {
        return Err(bad(format!("`{status_line}`")));
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(|| bad("a malformed chunked body".to_string()))?;
    }
    serde_json::from_slice(&body).map_err(|e| bad(format!("a body that is not a status: {e}")))
}

/// Why an answer could not be read.
enum AnswerError {
    Io(std::io::Error),
    TooLarge,
}

/// Reads an HTTP answer: to the end of its body when the head gives a `Content-Length` (a
/// server may keep the connection open after it), else until the server closes. At most 64
/// MiB: a status is far smaller.
fn read_answer(stream: &mut impl Read) -> Result<Vec<u8>, AnswerError> {
    const MAX: usize = 64 << 20;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let mut expected: Option<usize> = None;
    loop {
        if let Some(total) = expected {
            if answer.len() >= total {
                answer.truncate(total);
                return Ok(answer);
            }
        }
        let n = match stream.read(&mut buffer) {
            Ok(0) => return Ok(answer),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AnswerError::Io(e)),
        };
        answer.extend_from_slice(&buffer[..n]);
        if answer.len() > MAX {
            return Err(AnswerError::TooLarge);
        }
        if expected.is_none() {
            if let Some(split) = head_end(&answer) {
                let head = String::from_utf8_lossy(&answer[..split]);
                expected = header(&head, "content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .map(|length| split + 4 + length);
            }
        }
    }
}

/// Where an answer's head ends (the offset of its blank line), once it has arrived.
fn head_end(answer: &[u8]) -> Option<usize> {
    answer.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The value of the header `name` (any case) in an answer's `head`, trimmed.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&data[..end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        data = &data[end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// The status as a table: a summary line, then one row per model (every worker's idle time,
/// `busy` for one serving a request), then the budgets.
pub fn render_status(status: &Status, source: &str) -> String {
    let mut out = String::new();
    let memory = match &status.memory {
        Some(m) => format!(
            ", memory {} used of {}{}",
            bytes_text(m.used_bytes),
            bytes_text(m.total_bytes),
            m.process_rss_bytes
                .map(|rss| format!(" (process {})", bytes_text(rss)))
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "{source}: {} pool(s), {} worker(s), {} tick(s) of {}{}",
        status.pools.len(),
        status.total_workers(),
        status.ticks,
        format_duration(status.tick),
        memory
    );
    let header = [
        "POOL",
        "MODEL",
        "WORKERS",
        "IN FLIGHT",
        "WAITING",
        "STARTING",
        "MEMORY",
        "IDLE",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for pool in &status.pools {
        for model in &pool.models {
            let idle: Vec<String> = model
                .instances
                .iter()
                .map(|w| match w.idle {
                    None => "busy".to_string(),
                    Some(idle) => format_duration(Duration::from_secs(idle.as_secs())),
                })
                .collect();
            rows.push([
                pool.name.clone(),
                model.model.clone(),
                model.workers.to_string(),
                model.in_flight.to_string(),
                model.waiting.to_string(),
                model.starting.to_string(),
                bytes_text(model.memory_bytes).to_string(),
                if idle.is_empty() {
                    "-".to_string()
                } else {
                    idle.join(", ")
                },
            ]);
        }
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut line = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        line.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header.map(String::from)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no model has a worker, a spawn or a waiting request)");
    }
    for pool in &status.pools {
        let _ = writeln!(
            out,
            "pool {}: {} accounted, max_workers_per_model={}, policy {}",
            pool.name,
            bytes_text(pool.accounted_bytes),
            pool.max_workers_per_model,
            pool.policy
        );
    }
    for budget in &status.budgets {
        let _ = writeln!(
            out,
            "budget {}: {} free of {} ({} used, {} spawn(s) waiting)",
            budget.name,
            bytes_text(budget.free_bytes),
            bytes_text(budget.limit_bytes),
            bytes_text(budget.used_bytes),
            budget.waiting_spawns
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_default_to_the_status_path_and_port_80() {
        let url = parse_url("http://127.0.0.1:9090").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("127.0.0.1:9090", "/status")
        );
        let url = parse_url("localhost/x/status").unwrap();
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("localhost:80", "/x/status")
        );
        let url = parse_url("http://[::1]:8080/").unwrap();
        assert_eq!(url.authority, "[::1]:8080");
        assert!(parse_url("https://example.invalid").is_err());
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http://host:port").is_err());
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").as_deref(),
            Some(&b"Wikipedia"[..])
        );
        assert_eq!(dechunk(b"ff\r\nshort"), None);
    }
}
