//! `put-metric` and `put-log-events`.

use std::io::BufRead as _;

use anyhow::{Context as _, bail};
use watchtrail_proto::v1::{
    Dimension, LogEvent, MetricDatum, PutLogEventsRequest, PutMetricDataRequest, StatisticSet,
    metric_datum,
};

use super::client::{Client, ConnectionArgs, report_rejections};

/// Flags of `put-metric`.
#[derive(Debug, clap::Args)]
pub struct PutMetricArgs {
    /// The namespace, e.g. `MyApp`.
    #[arg(long)]
    pub namespace: String,
    /// The metric name, e.g. `Latency`.
    #[arg(long)]
    pub metric_name: String,
    /// The value (or use --statistic-values).
    #[arg(
        long,
        allow_negative_numbers = true,
        conflicts_with = "statistic_values"
    )]
    pub value: Option<f64>,
    /// A statistic set: `SampleCount=3,Sum=11,Minimum=2,Maximum=5`.
    #[arg(long)]
    pub statistic_values: Option<String>,
    /// One of the 27 CloudWatch units (default None).
    #[arg(long, default_value = "None")]
    pub unit: String,
    /// Dimensions: `Name=Value,Name2=Value2`.
    #[arg(long)]
    pub dimensions: Option<String>,
    /// When: RFC 3339 (`2026-01-02T03:04:05Z`) or milliseconds since the epoch. Default: now.
    #[arg(long)]
    pub timestamp: Option<String>,
    /// 1 for high resolution, 60 for standard.
    #[arg(long, default_value_t = 60)]
    pub storage_resolution: i32,
}

/// Parses `Name=Value,Name2=Value2` (the `aws` CLI's short form).
///
/// # Errors
/// A pair without `=`, named with its position.
pub fn parse_pairs(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .enumerate()
        .map(|(i, pair)| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .with_context(|| format!("pair {} `{pair}` is not Name=Value", i + 1))
        })
        .collect()
}

/// Parses RFC 3339 or epoch milliseconds.
///
/// # Errors
/// Neither form.
pub fn parse_timestamp_ms(s: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .with_context(|| format!("`{s}` is neither RFC 3339 nor milliseconds since the epoch"))
}

/// Runs `put-metric`.
///
/// # Errors
/// Bad flags or a refusal from the server.
pub async fn put_metric(conn: &ConnectionArgs, a: PutMetricArgs) -> anyhow::Result<()> {
    let data = match (a.value, &a.statistic_values) {
        (Some(v), None) => metric_datum::Data::Value(v),
        (None, Some(s)) => {
            let mut set = StatisticSet::default();
            let mut seen = 0;
            for (k, v) in parse_pairs(s)? {
                let v: f64 = v
                    .parse()
                    .with_context(|| format!("--statistic-values {k}: `{v}` is not a number"))?;
                match k.as_str() {
                    "SampleCount" => set.sample_count = v,
                    "Sum" => set.sum = v,
                    "Minimum" => set.minimum = v,
                    "Maximum" => set.maximum = v,
                    other => bail!(
                        "--statistic-values: unknown statistic `{other}` (SampleCount, Sum, Minimum, Maximum)"
                    ),
                }
                seen += 1;
            }
            if seen != 4 {
                bail!("--statistic-values needs SampleCount, Sum, Minimum and Maximum");
            }
            metric_datum::Data::StatisticValues(set)
        }
        _ => bail!("give --value or --statistic-values"),
    };
    let dimensions = a
        .dimensions
        .as_deref()
        .map(parse_pairs)
        .transpose()?
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| Dimension { name, value })
        .collect();
    let timestamp_ms = a
        .timestamp
        .as_deref()
        .map(parse_timestamp_ms)
        .transpose()?
        .unwrap_or(0);
    let req = PutMetricDataRequest {
        idempotency_id: uuid::Uuid::new_v4().to_string(),
        metric_data: vec![MetricDatum {
            namespace: a.namespace,
            metric_name: a.metric_name,
            dimensions,
            timestamp_ms,
            data: Some(data),
            unit: a.unit,
            storage_resolution: a.storage_resolution,
        }],
        series: Vec::new(),
    };
    let client = Client::connect(conn)?;
    let resp = client
        .call(req, |mut c, r| async move { c.put_metric_data(r).await })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    report_rejections(&resp);
    if resp.accepted == 0 {
        bail!("the datapoint was rejected");
    }
    Ok(())
}

/// Flags of `put-log-events`.
#[derive(Debug, clap::Args)]
pub struct PutLogEventsArgs {
    /// The log group.
    #[arg(long)]
    pub log_group_name: String,
    /// The log stream.
    #[arg(long)]
    pub log_stream_name: String,
    /// Files to read lines from; standard input when none is given.
    pub files: Vec<std::path::PathBuf>,
}

/// Runs `put-log-events`: every non-empty line becomes an event stamped with the read time;
/// batches respect the 10,000-event and 1 MiB limits.
///
/// # Errors
/// Unreadable input or a refusal from the server.
pub async fn put_log_events(conn: &ConnectionArgs, a: PutLogEventsArgs) -> anyhow::Result<()> {
    let client = Client::connect(conn)?;
    let mut readers: Vec<(String, Box<dyn std::io::BufRead>)> = Vec::new();
    if a.files.is_empty() {
        readers.push((
            "<stdin>".into(),
            Box::new(std::io::BufReader::new(std::io::stdin())),
        ));
    }
    for f in &a.files {
        let file =
            std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
        readers.push((
            f.display().to_string(),
            Box::new(std::io::BufReader::new(file)),
        ));
    }
    let mut batch = Batch::default();
    let mut sent = 0u64;
    for (name, reader) in readers {
        for (n, line) in reader.split(b'\n').enumerate() {
            let line = line.with_context(|| format!("{name}: read error at line {}", n + 1))?;
            // Invalid UTF-8 is replaced, never dropped.
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\r');
            if text.is_empty() {
                continue;
            }
            if !batch.fits(text.len()) {
                sent += batch.send(&client, &a).await?;
            }
            batch.push(text);
        }
    }
    sent += batch.send(&client, &a).await?;
    eprintln!("sent {sent} events");
    Ok(())
}

#[derive(Debug, Default)]
struct Batch {
    events: Vec<LogEvent>,
    bytes: usize,
}

/// Keeps each batch inside PutLogEvents' limits: 10,000 events, 1 MiB with 26 bytes per event.
const MAX_EVENTS: usize = 10_000;
const MAX_BYTES: usize = 1_048_576;
const OVERHEAD: usize = 26;
/// Longest message kept whole; longer lines are cut at a character boundary.
const MAX_MESSAGE: usize = MAX_BYTES - OVERHEAD;

impl Batch {
    fn fits(&self, len: usize) -> bool {
        self.events.len() < MAX_EVENTS && self.bytes + len.min(MAX_MESSAGE) + OVERHEAD <= MAX_BYTES
    }

    fn push(&mut self, text: &str) {
        let mut end = text.len().min(MAX_MESSAGE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.bytes += end + OVERHEAD;
        self.events.push(LogEvent {
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            message: text[..end].to_string(),
        });
    }

    async fn send(&mut self, client: &Client, a: &PutLogEventsArgs) -> anyhow::Result<u64> {
        if self.events.is_empty() {
            return Ok(0);
        }
        let req = PutLogEventsRequest {
            idempotency_id: uuid::Uuid::new_v4().to_string(),
            log_group_name: a.log_group_name.clone(),
            log_stream_name: a.log_stream_name.clone(),
            log_events: std::mem::take(&mut self.events),
            origin: None,
        };
        self.bytes = 0;
        let resp = client
            .call(req, |mut c, r| async move { c.put_log_events(r).await })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        report_rejections(&resp);
        Ok(resp.accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_timestamps_parse() {
        let p = parse_pairs("InstanceId=i-1, Env=prod").expect("valid");
        assert_eq!(
            p,
            vec![
                ("InstanceId".into(), "i-1".into()),
                ("Env".into(), "prod".into())
            ]
        );
        let e = parse_pairs("A=1,B").expect_err("missing =");
        assert!(e.to_string().contains("pair 2"), "{e}");
        assert_eq!(
            parse_timestamp_ms("1700000000000").expect("ms"),
            1_700_000_000_000
        );
        assert_eq!(
            parse_timestamp_ms("2023-11-14T22:13:20Z").expect("rfc3339"),
            1_700_000_000_000
        );
        assert!(parse_timestamp_ms("yesterday").is_err());
    }

    #[test]
    fn batches_stay_inside_the_limits() {
        let mut b = Batch::default();
        let big = "é".repeat(700_000);
        b.push(&big);
        assert!(b.events[0].message.len() <= MAX_MESSAGE);
        assert!(!b.fits(1_000));
    }
}
