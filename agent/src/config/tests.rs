use super::*;

#[test]
fn the_example_in_the_repository_is_valid() {
    let text = include_str!("../../watchtrail-agent.toml");
    let c = Config::from_toml(text).expect("example parses");
    assert_eq!(c.server, "http://127.0.0.1:7601");
    assert!(!c.logs.files.is_empty());
}

#[test]
fn defaults_are_the_cloudwatch_agent_ones() {
    let c = Config::default();
    assert_eq!(c.metrics.interval, Duration::from_secs(60));
    assert_eq!(c.metrics.namespace, "CWAgent");
    assert_eq!(c.logs.flush_interval, Duration::from_secs(5));
    assert_eq!(c.buffer.max_bytes, 256 << 20);
    assert!(c.metrics.wants("cpu_usage_idle"));
}

#[test]
fn errors_name_the_field() {
    let e = Config::from_toml("[metrics]\ninterval = \"0s\"").expect_err("too short");
    assert_eq!(e.field, "metrics.interval");
    let e = Config::from_toml("[[logs.files]]\npath = \"/x\"\ntimestamp_format = \"%Y %Q\"")
        .expect_err("bad format");
    assert_eq!(e.field, "logs.files[0].timestamp_format");
    assert!(e.reason.contains("%Q"), "{e}");
    let e = Config::from_toml("[[logs.files]]\npath = \"/x\"\n[[logs.files]]\npath = \"/y\"\nmulti_line_start_pattern = \"(\"")
        .expect_err("bad regex");
    assert_eq!(e.field, "logs.files[1].multi_line_start_pattern");
    let e = Config::from_toml("[[logs.files]]\npath = \"/x\"\nlog_group = \"{nope}\"")
        .expect_err("placeholder");
    assert_eq!(e.field, "logs.files[0].log_group");
    let e =
        Config::from_toml("[metrics]\nmeasurements = [\"cpu\", \"gpu_temp\"]").expect_err("plugin");
    assert_eq!(e.field, "metrics.measurements[1]");
    let e = Config::from_toml("serverr = \"x\"").expect_err("unknown key");
    assert!(e.field.contains("line 1"), "{e}");
    assert!(e.reason.contains("serverr"), "{e}");
    let e = Config::from_toml("[buffer]\nmax_bytes = \"12Q\"").expect_err("size");
    assert!(e.to_string().contains("12Q"), "{e}");
}

#[test]
fn sizes_and_durations_take_the_grammar_the_server_takes() {
    let c =
        Config::from_toml("[buffer]\nmax_bytes = \"256MiB\"\n[logs]\nflush_interval = \"1.5s\"")
            .expect("valid");
    assert_eq!(c.buffer.max_bytes, 256 << 20);
    assert_eq!(c.logs.flush_interval, Duration::from_millis(1500));
    let e = Config::from_toml("[logs]\nflush_interval = \"5 parsecs\"").expect_err("bad");
    assert!(e.to_string().contains("5 parsecs"), "{e}");
}

const CLOUDWATCH: &str = r#"{
  "agent": { "metrics_collection_interval": 10, "logfile": "/opt/aws/amazon-cloudwatch-agent/logs/amazon-cloudwatch-agent.log" },
  "metrics": {
    "namespace": "Fleet",
    "metrics_collected": {
      "cpu": { "resources": ["*"], "measurement": ["cpu_usage_idle", "usage_user"], "totalcpu": true },
      "mem": { "measurement": ["mem_used_percent"] },
      "disk": { "resources": ["/"], "measurement": [{"name": "used_percent", "rename": "DiskUsed", "unit": "Percent"}] },
      "statsd": {}
    }
  },
  "logs": {
    "logs_collected": { "files": { "collect_list": [
      { "file_path": "/var/log/nginx/access.log", "log_group_name": "nginx-{instance_id}", "log_stream_name": "{hostname}",
        "timestamp_format": "%d/%b/%Y:%H:%M:%S %z", "timezone": "UTC" },
      { "file_path": "/var/log/app/**.log", "multi_line_start_pattern": "{timestamp_format}", "timestamp_format": "%Y-%m-%d %H:%M:%S",
        "filters": [ { "type": "exclude", "expression": "DEBUG" } ] }
    ] } },
    "log_stream_name": "default-stream",
    "force_flush_interval": 15
  }
}"#;

#[test]
fn the_cloudwatch_agent_json_is_translated() {
    let c = from_cloudwatch_json(CLOUDWATCH).expect("translates");
    assert_eq!(c.metrics.interval, Duration::from_secs(10));
    assert_eq!(c.metrics.namespace, "Fleet");
    assert!(c.metrics.per_cpu);
    assert!(c.metrics.wants("cpu_usage_idle") && c.metrics.wants("cpu_usage_user"));
    assert!(c.metrics.wants("mem_used_percent") && c.metrics.wants("disk_used_percent"));
    assert!(!c.metrics.wants("mem_free") && !c.metrics.wants("net_bytes_sent"));
    assert_eq!(c.logs.flush_interval, Duration::from_secs(15));
    let f = &c.logs.files;
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].path, "/var/log/nginx/access.log");
    assert_eq!(f[0].log_group.as_deref(), Some("nginx-{instance_id}"));
    assert_eq!(f[0].timezone, Timezone::Utc);
    assert_eq!(
        f[1].log_stream.as_deref(),
        Some("default-stream"),
        "the global stream name is the default"
    );
    assert_eq!(
        f[1].multi_line_start_pattern.as_deref(),
        Some("{timestamp_format}")
    );
    assert_eq!(f[1].filters[0].kind, "exclude");
    // No saved state: from the beginning, as the CloudWatch agent reads it.
    assert!(
        f.iter()
            .all(|f| f.start_position == StartPosition::Beginning)
    );
}

#[test]
fn cloudwatch_json_errors_name_the_json_field() {
    let bad = CLOUDWATCH.replace("%d/%b/%Y:%H:%M:%S %z", "%d/%q");
    let e = from_cloudwatch_json(&bad).expect_err("bad format");
    assert_eq!(
        e.field,
        "logs.logs_collected.files.collect_list[0].timestamp_format"
    );
    let e = from_cloudwatch_json("{\"metrics\": {}}").expect_err("no metrics_collected");
    assert_eq!(e.field, "metrics.metrics_collected");
    let e = from_cloudwatch_json("{\"agent\": {\"metrics_collection_interval\": \"x\"}}")
        .expect_err("interval");
    assert_eq!(e.field, "agent.metrics_collection_interval");
    let e = from_cloudwatch_json("{\"agent\": ").expect_err("malformed");
    assert!(e.field.contains("line 1"), "{e}");
}

#[test]
fn a_super_asterisk_becomes_a_recursive_glob() {
    assert_eq!(normalize_glob("/var/log/**.log"), "/var/log/**/*.log");
    assert_eq!(normalize_glob("/var/log/**/x.log"), "/var/log/**/x.log");
    assert_eq!(normalize_glob("/var/log/*.log"), "/var/log/*.log");
}
