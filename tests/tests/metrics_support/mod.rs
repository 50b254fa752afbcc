//! Reading a running evshift's `/metrics` (plain HTTP/1.0 over TCP, the Prometheus text
//! format) and starting evshift with JSON logs, for the observability suites.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::migration_support::{MigrationSetup, TEST_MIGRATION};

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Metric names with a `# HELP` line.
    pub described: BTreeSet<String>,
    /// `# TYPE` of each metric name.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// The samples of `name` whose labels include every pair of `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with `labels`, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.find(name, labels).collect();
        match found.as_slice() {
            [one] => Some(one.value),
            [] => None,
            many => panic!("{} samples of {name} with {labels:?}: {many:?}", many.len()),
        }
    }

    /// The sum of the samples of `name` with `labels` (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }

    /// Metric family names (a histogram's `_bucket`/`_sum`/`_count` lines count as its name).
    pub fn families(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|s| family(&s.name, &self.types).to_string())
            .collect()
    }
}

/// The family a sample name belongs to, given the `# TYPE` lines.
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

/// GETs `/metrics` from `addr` and parses it; panics with the reason on any failure.
pub async fn scrape(addr: SocketAddr) -> Scrape {
    let body = tokio::time::timeout(SCRAPE_TIMEOUT, get_metrics(addr))
        .await
        .unwrap_or_else(|_| panic!("no /metrics answer from {addr} within {SCRAPE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("GET http://{addr}/metrics: {e}"));
    parse(&body).unwrap_or_else(|e| panic!("/metrics of {addr}: {e}\n{body}"))
}

/// The body of `GET /metrics` (HTTP/1.0, so the answer is neither chunked nor kept alive).
async fn get_metrics(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: evshift\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8(answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {answer:?}")))?;
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        return Err(std::io::Error::other(format!("answer {head:?}")));
    }
    Ok(body.to_string())
}

/// Parses the Prometheus text exposition format (the subset the exporter writes).
pub fn parse(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            scrape.described.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                scrape.types.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') {
            scrape.samples.push(parse_sample(line)?);
        }
    }
    Ok(scrape)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let bad = |why: &str| format!("{why} in sample line {line:?}");
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}').ok_or_else(|| bad("no closing brace"))?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close]).map_err(|e| bad(&e))?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(' ').ok_or_else(|| bad("no value"))?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| bad("no value"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| bad("a value that is not a number"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `key="value",key2="value2"` with `\"`, `\\` and `\n` escapes.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(format!("label {key:?} without a quoted value"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => return Err("an escape at the end".into()),
                },
                Some(c) => value.push(c),
                None => return Err(format!("label {key:?}: unterminated value")),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
}

/// The migration set-up of `migration_support` (shared, dedicated, control, evshift with
/// `[migration]` keys `migration`) with `[log] format = "json"` at `level`.
pub async fn start_with_json_logs(migration: &str, level: &str) -> MigrationSetup {
    let log = format!("format = \"json\"\nlevel = {level:?}\n");
    MigrationSetup::start_with_sections(migration, &[("log", &log)]).await
}

/// `TEST_MIGRATION` (quick retries, short tail interval).
pub fn test_migration() -> &'static str {
    TEST_MIGRATION
}

/// Where `setup`'s evshift serves `/metrics`.
pub fn metrics_addr(setup: &MigrationSetup) -> SocketAddr {
    setup
        .config
        .metrics_listen
        .parse()
        .expect("the harness writes a host:port metrics address")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_exporter_format() {
        let text = "# HELP migration_state Phase\n# TYPE migration_state gauge\n\
            migration_state{migration_id=\"7\",tenant_id=\"a\\\"b\"} 2\n\
            # TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1.5\nh_count 3\nplain 4\n";
        let scrape = parse(text).unwrap();
        assert_eq!(
            scrape.value("migration_state", &[("tenant_id", "a\"b")]),
            Some(2.0)
        );
        assert_eq!(scrape.value("plain", &[]), Some(4.0));
        assert!(scrape.described.contains("migration_state"));
        let families: Vec<String> = scrape.families().into_iter().collect();
        assert_eq!(families, ["h", "migration_state", "plain"]);
    }

    #[test]
    fn refuses_a_broken_line() {
        assert!(parse("x{a=\"1\" 2").is_err());
        assert!(parse("x{a=1} 2").is_err());
        assert!(parse("x notanumber").is_err());
    }
}
