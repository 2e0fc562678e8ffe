//! Webhook destinations, notification payloads and their signatures.
//!
//! A notification is signed with HMAC-SHA256 over `"{timestamp}.{body}"`, the timestamp (Unix
//! seconds) in `X-Watchtrail-Timestamp` and the signature as `sha256=<hex>` in
//! `X-Watchtrail-Signature`; a receiver recomputes it with the shared secret and refuses old
//! timestamps to stop replays. `Idempotency-Key` carries the notification's id, the same on
//! every retry.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use watchtrail_query::alarm::rule::cloudwatch_time;
use watchtrail_query::alarm::{AlarmDefinition, AlarmState, DefinitionError};

/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "x-watchtrail-signature";
/// The header with the signing timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-watchtrail-timestamp";
/// The header with the notification's id.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The payload shape a destination receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// CloudWatch's "Alarm State Change" event (the EventBridge shape).
    #[default]
    Cloudwatch,
    /// Prometheus Alertmanager's webhook body (version 4).
    Alertmanager,
}

/// A webhook destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Destination {
    /// Unique per tenant; alarm actions name it (or end with `:<name>`, as an SNS ARN does).
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Shared secret for the signature; without one, notifications are not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Extra headers sent with every notification.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Payload shape.
    #[serde(default)]
    pub format: PayloadFormat,
}

impl Destination {
    /// Checks a destination.
    ///
    /// # Errors
    /// The first field that is wrong.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        let bad = |f: &str, r: String| {
            Err(DefinitionError {
                field: f.into(),
                reason: r,
            })
        };
        if self.name.is_empty()
            || self.name.len() > 255
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad("Name", "must be 1-255 of A-Z a-z 0-9 - _ .".into());
        }
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return bad(
                    "Url",
                    format!("scheme `{}` is not http or https", u.scheme()),
                );
            }
            Err(e) => return bad("Url", format!("`{}`: {e}", self.url)),
        }
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 1024)
        {
            return bad("Secret", "must be 1-1024 bytes".into());
        }
        for (k, v) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return bad("Headers", format!("`{k}` is not a header name"));
            }
            if reqwest::header::HeaderValue::from_str(v).is_err() {
                return bad(
                    "Headers",
                    format!("the value of `{k}` is not a header value"),
                );
            }
        }
        Ok(())
    }

    /// The destination as the API shows it: the secret is never returned, and to callers
    /// that are not admins (`admin` false) neither are header values nor the URL's path.
    pub fn redacted(&self, admin: bool) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            // The secret is write-only: nobody reads it back.
            if o.contains_key("Secret") {
                o.insert("Secret".into(), json!(REDACTED));
            }
            // Header values and the URL's path and query often carry tokens
            // (`Authorization: Bearer ...`, a chat webhook's path): only admins see them.
            if !admin {
                o.insert("Url".into(), json!(redacted_url(&self.url)));
                if let Some(Value::Object(h)) = o.get_mut("Headers") {
                    for value in h.values_mut() {
                        *value = json!(REDACTED);
                    }
                }
            }
        }
        v
    }
}

/// What a redacted value reads as.
pub const REDACTED: &str = "********";

/// `url` with nothing that can hold a credential: scheme, host and port kept; user
/// information, path and query replaced by [`REDACTED`]. A URL that does not parse is redacted
/// whole.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() == "/" && u.query().is_none() {
                "/".to_string()
            } else {
                format!("/{REDACTED}")
            };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => REDACTED.to_string(),
    }
}

/// The destination an alarm action names: the name itself, or the last `:` part of an ARN
/// (`arn:aws:sns:us-east-1:123456789012:oncall` → `oncall`).
pub fn action_destination(action: &str) -> &str {
    if action.starts_with("arn:") {
        action.rsplit(':').next().unwrap_or(action)
    } else {
        action
    }
}

/// A state change, as notifications and history tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// The state before.
    pub old_state: AlarmState,
    /// Its reason.
    pub old_reason: String,
    /// When the alarm entered the old state, epoch milliseconds.
    pub old_ms: i64,
    /// The state after.
    pub new_state: AlarmState,
    /// Its reason.
    pub reason: String,
    /// Its reason data.
    pub reason_data: Value,
    /// When, epoch milliseconds.
    pub at_ms: i64,
}

/// A notification waiting in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Stable id: the same for every attempt, and for a transition found again after a crash.
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The action as the alarm names it.
    pub action: String,
    /// The alarm's configuration when it changed state.
    pub alarm: AlarmDefinition,
    /// The change.
    pub transition: Transition,
    /// When the entry was made, epoch milliseconds.
    pub created_ms: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this, epoch milliseconds.
    pub next_attempt_ms: i64,
}

/// The alarm's ARN-like identifier.
pub fn alarm_arn(tenant: &str, name: &str) -> String {
    format!("arn:watchtrail:cloudwatch:local:{tenant}:alarm:{name}")
}

fn configuration(def: &AlarmDefinition) -> Value {
    let mut c = json!({
        "description": def.alarm_description,
        "threshold": def.threshold,
        "comparisonOperator": def.comparison_operator,
        "evaluationPeriods": def.evaluation_periods,
        "datapointsToAlarm": def.datapoints_to_alarm(),
        "treatMissingData": def.treat_missing_data,
    });
    let metric = match &def.query {
        Some(q) => json!({"id": "q1", "expression": q, "period": def.period, "returnData": true}),
        None => {
            let dims: serde_json::Map<String, Value> = def
                .dimensions
                .iter()
                .map(|d| (d.name.clone(), Value::String(d.value.clone())))
                .collect();
            json!({
                "id": "m1",
                "metricStat": {
                    "metric": {"namespace": def.namespace, "name": def.metric_name, "dimensions": dims},
                    "period": def.period,
                    "stat": def.statistic_name(),
                },
                "returnData": true,
            })
        }
    };
    c["metrics"] = json!([metric]);
    c
}

/// The body sent for `entry` in `format`.
pub fn payload(entry: &OutboxEntry, format: PayloadFormat, receiver: &str) -> Value {
    let t = &entry.transition;
    let def = &entry.alarm;
    let arn = alarm_arn(&entry.tenant, &def.alarm_name);
    match format {
        PayloadFormat::Cloudwatch => json!({
            "version": "0",
            "id": entry.id,
            "detail-type": "CloudWatch Alarm State Change",
            "source": "watchtrail.alarms",
            "account": entry.tenant,
            "time": cloudwatch_time(t.at_ms),
            "region": "local",
            "resources": [arn],
            "detail": {
                "alarmName": def.alarm_name,
                "state": {
                    "value": t.new_state,
                    "reason": t.reason,
                    "reasonData": t.reason_data.to_string(),
                    "timestamp": cloudwatch_time(t.at_ms),
                },
                "previousState": {
                    "value": t.old_state,
                    "reason": t.old_reason,
                    "timestamp": cloudwatch_time(t.old_ms),
                },
                "configuration": configuration(def),
            },
        }),
        PayloadFormat::Alertmanager => {
            let firing = t.new_state == AlarmState::Alarm;
            let status = if firing { "firing" } else { "resolved" };
            let labels = json!({
                "alertname": def.alarm_name,
                "tenant": entry.tenant,
                "state": t.new_state,
            });
            let fingerprint = &hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                format!("{}/{}", entry.tenant, def.alarm_name).as_bytes(),
            ))[..16];
            json!({
                "version": "4",
                "groupKey": format!("{{}}:{{alertname=\"{}\"}}", def.alarm_name),
                "truncatedAlerts": 0,
                "status": status,
                "receiver": receiver,
                "groupLabels": {"alertname": def.alarm_name},
                "commonLabels": labels,
                "commonAnnotations": {"summary": t.reason},
                "externalURL": "",
                "alerts": [{
                    "status": status,
                    "labels": labels,
                    "annotations": {
                        "summary": t.reason,
                        "description": def.alarm_description.clone().unwrap_or_default(),
                    },
                    "startsAt": chrono::DateTime::from_timestamp_millis(t.at_ms).map(|d| d.to_rfc3339()),
                    "endsAt": if firing {
                        "0001-01-01T00:00:00Z".to_string()
                    } else {
                        chrono::DateTime::from_timestamp_millis(t.at_ms).map(|d| d.to_rfc3339()).unwrap_or_default()
                    },
                    "generatorURL": "",
                    "fingerprint": fingerprint,
                }],
            })
        }
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, `"{timestamp}.{body}"`).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered(u16),
    /// 5xx, 429, or no answer: try again later.
    Retry(Option<u16>, String),
    /// Any other answer: the receiver refuses it; never retried.
    Rejected(u16, String),
}

/// Most bytes of a receiver's error answer read (the rest is never downloaded).
pub const MAX_ERROR_BODY_BYTES: usize = 4 * 1024;

/// The first [`MAX_ERROR_BODY_BYTES`] of an answer's body, read chunk by chunk and no further,
/// as text of at most 200 characters: a receiver cannot make the server hold its whole body.
async fn error_body_prefix(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX_ERROR_BODY_BYTES);
    String::from_utf8_lossy(&bytes).chars().take(200).collect()
}

/// POSTs one notification.
pub async fn send(
    client: &reqwest::Client,
    dest: &Destination,
    entry: &OutboxEntry,
    timeout: Duration,
) -> Attempt {
    let body = payload(entry, dest.format, &dest.name)
        .to_string()
        .into_bytes();
    let now = chrono::Utc::now().timestamp();
    let mut req = client
        .post(&dest.url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            reqwest::header::USER_AGENT,
            concat!("watchtrail/", env!("CARGO_PKG_VERSION")),
        )
        .header(IDEMPOTENCY_HEADER, &entry.id)
        .header(TIMESTAMP_HEADER, now.to_string());
    if let Some(secret) = &dest.secret {
        req = req.header(SIGNATURE_HEADER, signature(secret, now, &body));
    }
    for (k, v) in &dest.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status();
            let code = status.as_u16();
            if status.is_success() {
                Attempt::Delivered(code)
            } else {
                let text = error_body_prefix(resp).await;
                let why = format!("HTTP {code}: {text}");
                if status.is_server_error() || code == 429 {
                    Attempt::Retry(Some(code), why)
                } else {
                    Attempt::Rejected(code, why)
                }
            }
        }
        // A name the egress policy refuses is final: retrying cannot change where it points.
        Err(e) => match super::egress::Refused::find(&e) {
            Some(why) => Attempt::Rejected(0, why),
            None => Attempt::Retry(None, e.to_string()),
        },
    }
}

/// The delay before attempt `attempts + 1`: doubling from `base` up to `max`, with a jitter of
/// up to a quarter derived from the id (so retries of many notifications spread out).
pub fn backoff(id: &str, attempts: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let d = exp.min(max);
    let h = ring::digest::digest(&ring::digest::SHA256, format!("{id}/{attempts}").as_bytes());
    let frac = f64::from(h.as_ref()[0]) / 255.0 / 4.0;
    d.mul_f64(1.0 - frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        // RFC 4231 test case 2 key and data, split as timestamp "what do ya want " + "." is not
        // the same message, so check against an independent computation of the same bytes.
        let sig = signature("Jefe", 1_700_000_000, b"{\"a\":1}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let expected = ring::hmac::sign(&key, b"1700000000.{\"a\":1}");
        assert_eq!(sig, format!("sha256={}", hex::encode(expected.as_ref())));
        assert_ne!(sig, signature("Jefe", 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(sig, signature("jefe", 1_700_000_000, b"{\"a\":1}"));
    }

    #[test]
    fn actions_name_destinations_or_end_with_them() {
        assert_eq!(action_destination("oncall"), "oncall");
        assert_eq!(
            action_destination("arn:aws:sns:us-east-1:123456789012:oncall"),
            "oncall"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let d1 = backoff("x", 1, base, max);
        let d3 = backoff("x", 3, base, max);
        let d20 = backoff("x", 20, base, max);
        assert!(d1 <= base && d1 >= base.mul_f64(0.75), "{d1:?}");
        assert!(d3 <= base * 4 && d3 >= (base * 4).mul_f64(0.75), "{d3:?}");
        assert!(d20 <= max && d20 >= max.mul_f64(0.75), "{d20:?}");
    }

    #[test]
    fn destinations_are_checked() {
        let mut d = Destination {
            name: "oncall".into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: Some("s".into()),
            headers: BTreeMap::new(),
            format: PayloadFormat::Cloudwatch,
        };
        assert!(d.validate().is_ok());
        assert_eq!(d.redacted(true)["Secret"], "********");
        assert_eq!(d.redacted(true)["Url"], "http://127.0.0.1:9/hook");
        assert_eq!(d.redacted(false)["Url"], "http://127.0.0.1:9/********");
        d.url = "ftp://x".into();
        assert_eq!(d.validate().map_err(|e| e.field), Err("Url".to_string()));
        d.url = "http://127.0.0.1:9/".into();
        d.name = "a/b".into();
        assert_eq!(d.validate().map_err(|e| e.field), Err("Name".to_string()));
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn readers_see_no_header_value_and_no_url_path_query_or_user() {
        let d = Destination {
            name: "chat".into(),
            url: "https://bot:pw@hooks.example.com:8443/services/T0/B0/tok3n?key=s3cret".into(),
            secret: Some("hmac".into()),
            headers: BTreeMap::from([("Authorization".into(), "Bearer abc123".into())]),
            format: PayloadFormat::Cloudwatch,
        };
        let reader = d.redacted(false).to_string();
        for secret in ["tok3n", "s3cret", "abc123", "pw", "hmac", "services"] {
            assert!(!reader.contains(secret), "{secret} in {reader}");
        }
        assert!(
            reader.contains("https://hooks.example.com:8443/********"),
            "{reader}"
        );
        assert!(
            reader.contains("Authorization"),
            "header names stay: {reader}"
        );
        let admin = d.redacted(true).to_string();
        assert!(admin.contains("abc123") && admin.contains("tok3n") && !admin.contains("hmac"));
        assert_eq!(redacted_url("not a url"), REDACTED);
        assert_eq!(redacted_url("http://h/"), "http://h/");
    }
}

#[cfg(test)]
mod payload_tests {
    use serde_json::json;

    use super::*;

    fn entry(new_state: AlarmState) -> OutboxEntry {
        let alarm = AlarmDefinition::from_value(json!({
            "AlarmName": "cpu-high", "AlarmDescription": "CPU above 80%",
            "Namespace": "CWAgent", "MetricName": "cpu_usage_active",
            "Dimensions": [{"Name": "host", "Value": "web-1"}],
            "Statistic": "Average", "Period": 60, "EvaluationPeriods": 3, "DatapointsToAlarm": 2,
            "Threshold": 80, "ComparisonOperator": "GreaterThanThreshold"
        }))
        .expect("valid");
        OutboxEntry {
            id: "abc".into(),
            tenant: "default".into(),
            action: "oncall".into(),
            alarm,
            transition: Transition {
                old_state: AlarmState::Ok,
                old_reason: "fine".into(),
                old_ms: 1_700_000_000_000,
                new_state,
                reason: "Threshold Crossed".into(),
                reason_data: json!({"version": "1.0"}),
                at_ms: 1_700_000_060_000,
            },
            created_ms: 1_700_000_060_000,
            attempts: 0,
            next_attempt_ms: 0,
        }
    }

    #[test]
    fn the_cloudwatch_payload_is_the_state_change_event() {
        let p = payload(
            &entry(AlarmState::Alarm),
            PayloadFormat::Cloudwatch,
            "oncall",
        );
        assert_eq!(p["detail-type"], "CloudWatch Alarm State Change");
        assert_eq!(
            p["resources"][0],
            "arn:watchtrail:cloudwatch:local:default:alarm:cpu-high"
        );
        assert_eq!(p["detail"]["state"]["value"], "ALARM");
        assert_eq!(
            p["detail"]["state"]["timestamp"],
            "2023-11-14T22:14:20.000+0000"
        );
        assert_eq!(p["detail"]["state"]["reasonData"], "{\"version\":\"1.0\"}");
        assert_eq!(p["detail"]["previousState"]["value"], "OK");
        let m = &p["detail"]["configuration"]["metrics"][0]["metricStat"];
        assert_eq!(m["metric"]["dimensions"]["host"], "web-1");
        assert_eq!(m["stat"], "Average");
        assert_eq!(m["period"], 60);
        assert_eq!(p["detail"]["configuration"]["datapointsToAlarm"], 2);
    }

    #[test]
    fn the_alertmanager_payload_fires_and_resolves() {
        let firing = payload(
            &entry(AlarmState::Alarm),
            PayloadFormat::Alertmanager,
            "oncall",
        );
        assert_eq!(firing["version"], "4");
        assert_eq!(firing["status"], "firing");
        assert_eq!(firing["receiver"], "oncall");
        assert_eq!(firing["alerts"][0]["labels"]["alertname"], "cpu-high");
        assert_eq!(firing["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            firing["alerts"][0]["annotations"]["description"],
            "CPU above 80%"
        );
        let resolved = payload(
            &entry(AlarmState::Ok),
            PayloadFormat::Alertmanager,
            "oncall",
        );
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(
            resolved["alerts"][0]["fingerprint"],
            firing["alerts"][0]["fingerprint"]
        );
        assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    }
}
