//! The agent's configuration: one TOML file (see `agent/watchtrail-agent.toml`), or the
//! CloudWatch agent's own JSON file, which is translated (reference section 6.1).
//!
//! Every refusal names the field, e.g. `logs.files[1].timestamp_format: unknown directive %Q`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::timefmt::TimeFormat;

/// A configuration error, naming the field by its dotted path (`logs.files[0].path`).
pub type ConfigError = watchtrail_model::FieldError;

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC address of the Watchtrail server.
    #[serde(default = "default_server")]
    pub server: String,
    /// Where checkpoints and the buffer live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Tenant the data belongs to (servers with `--auth none`; an API key names its own).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The API key (an `ingest` key); better kept in `api_key_file` or WATCHTRAIL_API_KEY.
    #[serde(default)]
    pub api_key: Option<String>,
    /// A file holding the API key.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for an `https://` server, beside the system's roots.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for servers that require mutual TLS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The `host` dimension and `{hostname}` placeholder; the machine's name when unset.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Leave the `host` dimension off host metrics.
    #[serde(default)]
    pub omit_hostname: bool,
    /// The local HTTP listener (audit intake, `/metrics`, `/healthz`); empty turns it off.
    #[serde(default = "default_http")]
    pub http_addr: String,
    /// A Unix socket serving the same HTTP API.
    #[serde(default)]
    pub unix_socket: Option<PathBuf>,
    /// The on-disk buffer.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Sending to the server.
    #[serde(default)]
    pub shipping: ShippingConfig,
    /// Host metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Log files.
    #[serde(default)]
    pub logs: LogsConfig,
    /// Audit records.
    #[serde(default)]
    pub audit: AuditConfig,
}

fn default_server() -> String {
    "http://127.0.0.1:7601".into()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("./watchtrail-agent-state")
}
fn default_http() -> String {
    "127.0.0.1:7603".into()
}

/// The on-disk buffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Past this many bytes the oldest unsent data is dropped (counted and logged).
    #[serde(default = "default_buffer_max", deserialize_with = "de_bytes")]
    pub max_bytes: u64,
    /// Sync each record to disk (survives power loss, not only an agent crash).
    #[serde(default = "yes")]
    pub sync: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_buffer_max(),
            sync: true,
        }
    }
}

fn default_buffer_max() -> u64 {
    256 << 20
}
fn yes() -> bool {
    true
}

/// How requests travel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShippingConfig {
    /// `zstd`, `gzip` or `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(default = "default_retry_base", deserialize_with = "de_duration")]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[serde(default = "default_retry_max", deserialize_with = "de_duration")]
    pub retry_max: Duration,
    /// Deadline of one request.
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for ShippingConfig {
    fn default() -> Self {
        Self {
            compression: default_compression(),
            retry_base: default_retry_base(),
            retry_max: default_retry_max(),
            timeout: default_timeout(),
        }
    }
}

fn default_compression() -> String {
    "zstd".into()
}
fn default_retry_base() -> Duration {
    Duration::from_millis(200)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Host metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Collect host metrics at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Collection interval; below 60 s the points are high resolution.
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Namespace of the metrics.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// What to collect: plugin names (`cpu`, `mem`, `swap`, `disk`, `diskio`, `net`, `netstat`,
    /// `processes`) and metric names (`cpu_usage_idle`); everything when unset.
    #[serde(default)]
    pub measurements: Option<Vec<String>>,
    /// Per-cpu figures besides `cpu-total`.
    #[serde(default = "yes")]
    pub per_cpu: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_interval(),
            namespace: default_namespace(),
            measurements: None,
            per_cpu: true,
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_namespace() -> String {
    "CWAgent".into()
}

/// The plugins that host metrics come from.
pub const PLUGINS: [&str; 8] = [
    "cpu",
    "mem",
    "swap",
    "disk",
    "diskio",
    "net",
    "netstat",
    "processes",
];

impl MetricsConfig {
    /// Whether a metric (`cpu_usage_idle`) is to be collected.
    pub fn wants(&self, name: &str) -> bool {
        let Some(list) = &self.measurements else {
            return true;
        };
        let plugin = name.split('_').next().unwrap_or(name);
        list.iter().any(|m| m == name || m == plugin)
    }
}

/// Log files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// A batch is sent at the latest this long after its first event.
    #[serde(default = "default_flush", deserialize_with = "de_duration")]
    pub flush_interval: Duration,
    /// How often files are checked for new data.
    #[serde(default = "default_poll", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// How often globs are expanded again for new files.
    #[serde(default = "default_scan", deserialize_with = "de_duration")]
    pub scan_interval: Duration,
    /// The files.
    #[serde(default)]
    pub files: Vec<FileConfig>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            flush_interval: default_flush(),
            poll_interval: default_poll(),
            scan_interval: default_scan(),
            files: Vec::new(),
        }
    }
}

fn default_flush() -> Duration {
    Duration::from_secs(5)
}
fn default_poll() -> Duration {
    Duration::from_millis(250)
}
fn default_scan() -> Duration {
    Duration::from_secs(5)
}

/// Where to start in a file found at the agent's first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// Read the whole file.
    Beginning,
    /// Only lines written from now on.
    End,
}

/// What happens to a line longer than `max_event_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LongLines {
    /// Keep the first `max_event_bytes`, marked `[Truncated...]`.
    Truncate,
    /// Send it as several events of at most `max_event_bytes`.
    Split,
}

/// Timezone of timestamps without an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Timezone {
    /// The machine's local time.
    #[serde(alias = "local", alias = "LOCAL")]
    Local,
    /// UTC.
    #[serde(rename = "UTC", alias = "utc")]
    Utc,
}

/// A line filter: a line must pass every one, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineFilter {
    /// `include` or `exclude`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A regular expression.
    pub expression: String,
}

/// One `[[logs.files]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A glob (`*`, `?`, `[...]`, `**` for any depth).
    pub path: String,
    /// Log group; `{hostname}` and `{file_name}` are replaced. Default: the path up to its last
    /// dot, as the CloudWatch agent does.
    #[serde(default)]
    pub log_group: Option<String>,
    /// Log stream; same placeholders. Default `{hostname}`.
    #[serde(default)]
    pub log_stream: Option<String>,
    /// Where to start in files found at the agent's first scan (no saved state at all): `end`
    /// (the default in TOML) skips what they hold at that scan, including lines written between
    /// the agent's start and its first scan; `beginning` reads them whole, as the CloudWatch
    /// agent does (and the default for its JSON). Files that appear later are always read from
    /// their beginning.
    #[serde(default = "default_start")]
    pub start_position: StartPosition,
    /// strftime-like format of the timestamp inside each event; read time when unset.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// Timezone of timestamps that carry no offset.
    #[serde(default = "default_tz")]
    pub timezone: Timezone,
    /// A regular expression matching the first line of an event (or `{timestamp_format}`);
    /// without it, lines that start with whitespace continue the previous event.
    #[serde(default)]
    pub multi_line_start_pattern: Option<String>,
    /// Longest event, in bytes.
    #[serde(default = "default_max_event", deserialize_with = "de_bytes_usize")]
    pub max_event_bytes: usize,
    /// What to do with longer lines.
    #[serde(default = "default_long_lines")]
    pub long_lines: LongLines,
    /// Include/exclude filters.
    #[serde(default)]
    pub filters: Vec<LineFilter>,
    /// Whether a symbolic link the glob matches is read (what it points to). Off by default:
    /// the agent often runs as root, and whoever can write to a watched directory could
    /// otherwise point a link at any file on the host and have it shipped.
    #[serde(default)]
    pub follow_symlinks: bool,
}

fn default_start() -> StartPosition {
    StartPosition::End
}
fn default_tz() -> Timezone {
    Timezone::Local
}
/// CloudWatch Logs' event limit (1 MiB) minus its 26-byte overhead and room for the marker.
pub const MAX_EVENT_BYTES: usize = watchtrail_model::limits::MAX_LOG_EVENT_BYTES
    - watchtrail_model::limits::LOG_EVENT_OVERHEAD
    - 64;
fn default_max_event() -> usize {
    256 << 10
}
fn default_long_lines() -> LongLines {
    LongLines::Truncate
}

/// Audit records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A directory of CloudTrail delivery files (`.json`, `.json.gz`), watched recursively.
    #[serde(default)]
    pub cloudtrail_dir: Option<PathBuf>,
}

// Sizes and durations take the grammar every Watchtrail flag and file takes.
pub use watchtrail_model::units::{parse_bytes, parse_duration};

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(Duration::from_secs(n)),
        NumOrText::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
    }
}

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(n),
        NumOrText::Text(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
    }
}

fn de_bytes_usize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = de_bytes(d)?;
    usize::try_from(n).map_err(serde::de::Error::custom)
}

impl Default for Config {
    fn default() -> Self {
        // An empty document takes every default.
        toml::from_str("").unwrap_or_else(|_| unreachable!("the defaults parse"))
    }
}

impl Config {
    /// Reads a configuration file: CloudWatch agent JSON when it ends in `.json` or starts with
    /// `{`, TOML otherwise.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        let json =
            path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
        if json {
            from_cloudwatch_json(&text)
        } else {
            Self::from_toml(&text)
        }
    }

    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            err(format!("config{at}"), e.message().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: patterns, formats, names and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.server.starts_with("http://") || self.server.starts_with("https://")) {
            return Err(err(
                "server",
                format!("`{}` must be an http:// or https:// URL", self.server),
            ));
        }
        if !["zstd", "gzip", "none"].contains(&self.shipping.compression.as_str()) {
            return Err(err("shipping.compression", "must be zstd, gzip or none"));
        }
        if self.buffer.max_bytes < 1 << 20 {
            return Err(err("buffer.max_bytes", "must be at least 1M"));
        }
        let iv = self.metrics.interval;
        if iv < Duration::from_secs(1) || iv > Duration::from_secs(172_000) {
            return Err(err("metrics.interval", "must be between 1s and 172000s"));
        }
        if self.metrics.namespace.is_empty() || self.metrics.namespace.len() > 255 {
            return Err(err("metrics.namespace", "must be 1 to 255 characters"));
        }
        if self.metrics.namespace.starts_with("AWS/") {
            return Err(err(
                "metrics.namespace",
                "the `AWS/` prefix is reserved for AWS services",
            ));
        }
        if let Some(list) = &self.metrics.measurements {
            for (i, m) in list.iter().enumerate() {
                let plugin = m.split('_').next().unwrap_or(m);
                if !PLUGINS.contains(&plugin) {
                    return Err(err(
                        format!("metrics.measurements[{i}]"),
                        format!(
                            "`{m}` is not one of the plugins {PLUGINS:?} or one of their metrics"
                        ),
                    ));
                }
            }
        }
        if self.logs.poll_interval < Duration::from_millis(10) {
            return Err(err("logs.poll_interval", "must be at least 10ms"));
        }
        for (i, f) in self.logs.files.iter().enumerate() {
            let at = |name: &str| format!("logs.files[{i}].{name}");
            if f.path.is_empty() {
                return Err(err(at("path"), "must not be empty"));
            }
            glob::Pattern::new(&normalize_glob(&f.path))
                .map_err(|e| err(at("path"), e.to_string()))?;
            if f.max_event_bytes < 64 || f.max_event_bytes > MAX_EVENT_BYTES {
                return Err(err(
                    at("max_event_bytes"),
                    format!("must be between 64 and {MAX_EVENT_BYTES}"),
                ));
            }
            let format = match &f.timestamp_format {
                Some(fmt) => Some(
                    TimeFormat::parse(fmt, f.timezone == Timezone::Utc)
                        .map_err(|e| err(at("timestamp_format"), e))?,
                ),
                None => None,
            };
            if let Some(p) = &f.multi_line_start_pattern {
                if p == "{timestamp_format}" {
                    if format.is_none() {
                        return Err(err(
                            at("multi_line_start_pattern"),
                            "{timestamp_format} needs timestamp_format",
                        ));
                    }
                } else {
                    regex::Regex::new(p)
                        .map_err(|e| err(at("multi_line_start_pattern"), e.to_string()))?;
                }
            }
            for (j, flt) in f.filters.iter().enumerate() {
                if flt.kind != "include" && flt.kind != "exclude" {
                    return Err(err(
                        format!("{}[{j}].type", at("filters")),
                        "must be include or exclude",
                    ));
                }
                regex::Regex::new(&flt.expression).map_err(|e| {
                    err(format!("{}[{j}].expression", at("filters")), e.to_string())
                })?;
            }
            for (name, value) in [("log_group", &f.log_group), ("log_stream", &f.log_stream)] {
                if let Some(v) = value {
                    check_placeholders(v).map_err(|e| err(at(name), e))?;
                }
            }
        }
        Ok(())
    }
}

/// The CloudWatch agent's `**` may end a name (`/var/log/**.log`); the glob crate wants it as a
/// whole path component, so that becomes `/var/log/**/*.log`.
pub fn normalize_glob(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    let mut rest = path;
    while let Some(i) = rest.find("**") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        out.push_str("**");
        if !after.is_empty() && !after.starts_with('/') {
            out.push_str("/*");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

const PLACEHOLDERS: [&str; 5] = [
    "{hostname}",
    "{local_hostname}",
    "{instance_id}",
    "{file_name}",
    "{ip_address}",
];

fn check_placeholders(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
        let p = &rest[start..start + end + 1];
        if !PLACEHOLDERS.contains(&p) {
            return Err(format!(
                "unknown placeholder `{p}`; known: {PLACEHOLDERS:?}"
            ));
        }
        rest = &rest[start + end + 1..];
    }
    Ok(())
}

fn json_str<'a>(v: &'a Value, field: &str) -> Result<Option<&'a str>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(err(field, "must be a string")),
    }
}

/// Translates the CloudWatch agent's JSON configuration.
pub fn from_cloudwatch_json(text: &str) -> Result<Config, ConfigError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        err(
            format!("config (line {}, column {})", e.line(), e.column()),
            e.to_string(),
        )
    })?;
    let mut config = Config::default();
    let agent = &doc["agent"];
    if let Some(iv) = agent.get("metrics_collection_interval") {
        let secs = iv.as_u64().ok_or_else(|| {
            err(
                "agent.metrics_collection_interval",
                "must be a whole number of seconds",
            )
        })?;
        config.metrics.interval = Duration::from_secs(secs);
    }
    if let Some(v) = agent.get("omit_hostname") {
        config.omit_hostname = v
            .as_bool()
            .ok_or_else(|| err("agent.omit_hostname", "must be true or false"))?;
    }
    let metrics = &doc["metrics"];
    if metrics.is_null() {
        config.metrics.enabled = false;
    } else {
        if let Some(ns) = json_str(&metrics["namespace"], "metrics.namespace")? {
            config.metrics.namespace = ns.to_string();
        }
        let collected = metrics["metrics_collected"].as_object().ok_or_else(|| {
            err(
                "metrics.metrics_collected",
                "is required and must be an object",
            )
        })?;
        let mut wanted = Vec::new();
        config.metrics.per_cpu = false;
        for (plugin, body) in collected {
            let field = format!("metrics.metrics_collected.{plugin}");
            if !PLUGINS.contains(&plugin.as_str()) {
                tracing::warn!(field, "not collected by watchtrail-agent; ignored");
                continue;
            }
            if plugin == "cpu"
                && let Some(res) = body.get("resources").and_then(Value::as_array)
            {
                config.metrics.per_cpu = res.iter().any(|r| r == "*");
            }
            match body.get("measurement").and_then(Value::as_array) {
                None => wanted.push(plugin.clone()),
                Some(list) => {
                    for (i, m) in list.iter().enumerate() {
                        let name = match m {
                            Value::String(s) => s.as_str(),
                            Value::Object(o) => {
                                o.get("name").and_then(Value::as_str).ok_or_else(|| {
                                    err(format!("{field}.measurement[{i}].name"), "is required")
                                })?
                            }
                            _ => {
                                return Err(err(
                                    format!("{field}.measurement[{i}]"),
                                    "must be a name or an object",
                                ));
                            }
                        };
                        wanted.push(if name.starts_with(&format!("{plugin}_")) {
                            name.to_string()
                        } else {
                            format!("{plugin}_{name}")
                        });
                    }
                }
            }
        }
        config.metrics.measurements = Some(wanted);
    }
    let logs = &doc["logs"];
    let default_stream = json_str(&logs["log_stream_name"], "logs.log_stream_name")?;
    if let Some(list) = logs["logs_collected"]["files"]["collect_list"].as_array() {
        for (i, f) in list.iter().enumerate() {
            let at = |name: &str| format!("logs.logs_collected.files.collect_list[{i}].{name}");
            let path = json_str(&f["file_path"], &at("file_path"))?
                .ok_or_else(|| err(at("file_path"), "is required"))?;
            let timezone = match json_str(&f["timezone"], &at("timezone"))? {
                None | Some("Local") => Timezone::Local,
                Some("UTC") => Timezone::Utc,
                Some(other) => {
                    return Err(err(
                        at("timezone"),
                        format!("`{other}` must be UTC or Local"),
                    ));
                }
            };
            let mut filters = Vec::new();
            if let Some(fs) = f.get("filters").and_then(Value::as_array) {
                for (j, flt) in fs.iter().enumerate() {
                    filters.push(LineFilter {
                        kind: json_str(&flt["type"], &format!("{}[{j}].type", at("filters")))?
                            .unwrap_or_default()
                            .to_string(),
                        expression: json_str(
                            &flt["expression"],
                            &format!("{}[{j}].expression", at("filters")),
                        )?
                        .unwrap_or_default()
                        .to_string(),
                    });
                }
            }
            config.logs.files.push(FileConfig {
                path: path.to_string(),
                log_group: json_str(&f["log_group_name"], &at("log_group_name"))?
                    .map(str::to_string),
                log_stream: json_str(&f["log_stream_name"], &at("log_stream_name"))?
                    .or(default_stream)
                    .map(str::to_string),
                // The CloudWatch agent reads a file it has no saved state for from its
                // beginning; so does a configuration written for it.
                start_position: StartPosition::Beginning,
                timestamp_format: json_str(&f["timestamp_format"], &at("timestamp_format"))?
                    .map(str::to_string),
                timezone,
                multi_line_start_pattern: json_str(
                    &f["multi_line_start_pattern"],
                    &at("multi_line_start_pattern"),
                )?
                .map(str::to_string),
                max_event_bytes: default_max_event(),
                long_lines: LongLines::Truncate,
                filters,
                follow_symlinks: false,
            });
        }
    }
    if let Some(s) = logs.get("force_flush_interval").and_then(Value::as_u64) {
        config.logs.flush_interval = Duration::from_secs(s.max(1));
    }
    config.validate().map_err(|e| {
        // Name the JSON field the TOML one came from.
        let field = e
            .field
            .replace("logs.files[", "logs.logs_collected.files.collect_list[")
            .replace("].path", "].file_path")
            .replace("].log_group", "].log_group_name")
            .replace("].log_stream", "].log_stream_name")
            .replace("metrics.interval", "agent.metrics_collection_interval");
        ConfigError { field, ..e }
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests;
