//! CloudWatch's alarm operations over the alarm service: `PutMetricAlarm`, `DescribeAlarms`,
//! `DeleteAlarms`, `SetAlarmState`, `DescribeAlarmHistory`. Definitions are CloudWatch's own
//! fields, so the parameters go to the same parser as `/v1/alarms` bodies.

use serde_json::Value;
use watchtrail_query::alarm::{self, AlarmState};

use super::Ctx;
use super::error::{AwsError, Kind};
use super::value::V;
use crate::alarms::ApiError;

/// Parameters that are numbers or booleans, which the Query protocol sends as text.
const NUMBERS: &[&str] = &[
    "Period",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
];
const BOOLEANS: &[&str] = &["ActionsEnabled", "ReturnData"];
/// Most alarms one `DescribeAlarms` page holds.
const MAX_RECORDS: usize = 100;

/// An alarm-service error as an AWS error.
pub fn api_error(e: ApiError) -> AwsError {
    match e {
        ApiError::Invalid(d) => AwsError::invalid(&d.field, &d.reason),
        ApiError::NotFound(m) => AwsError::new(Kind::NotFound, m),
        ApiError::Server(e) => super::ingest_error(&e, str::to_string),
    }
}

/// A request value as JSON, with the Query protocol's text turned into the numbers and
/// booleans the definition parser expects.
fn typed_json(v: &V, query: bool) -> Value {
    fn walk(v: &V, key: &str) -> Value {
        match v {
            V::Str(s) if NUMBERS.contains(&key) => s
                .parse::<f64>()
                .ok()
                .and_then(|f| {
                    if f.fract() == 0.0 && f.abs() < 9e15 {
                        Some(Value::from(f as i64))
                    } else {
                        serde_json::Number::from_f64(f).map(Value::Number)
                    }
                })
                .unwrap_or_else(|| Value::String(s.clone())),
            V::Str(s) if BOOLEANS.contains(&key) && (s == "true" || s == "false") => {
                Value::Bool(s == "true")
            }
            V::List(l) => Value::Array(l.iter().map(|x| walk(x, "")).collect()),
            V::Struct(m) | V::Map(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), walk(x, k))).collect())
            }
            other => other.to_json(),
        }
    }
    if query { walk(v, "") } else { v.to_json() }
}

/// An answer built as JSON by the alarm service, as a value every protocol encodes: members
/// named `...Timestamp` become times.
pub fn answer_value(v: &Value, key: &str) -> V {
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| V::Float(n.as_f64().unwrap_or(0.0)), V::Int),
        Value::String(s) if key.ends_with("Timestamp") => super::value::parse_time_text(s)
            .map_or_else(|| V::Str(s.clone()), |ms| V::Time(ms as f64 / 1000.0)),
        Value::String(s) => V::Str(s.clone()),
        Value::Array(a) => V::List(a.iter().map(|x| answer_value(x, "")).collect()),
        Value::Object(o) => V::Struct(
            o.iter()
                .map(|(k, x)| (k.clone(), answer_value(x, k)))
                .collect(),
        ),
    }
}

/// `PutMetricAlarm`.
///
/// # Errors
/// A definition CloudWatch would refuse, its field named.
pub async fn put_metric_alarm(ctx: &Ctx<'_>, input: &V, query: bool) -> Result<V, AwsError> {
    let mut v = typed_json(input, query);
    // Tags belong to AWS's resource tagging, which has no counterpart here.
    if let Some(o) = v.as_object_mut() {
        o.remove("Tags");
    }
    let def = alarm::parse_definition(v).map_err(|e| AwsError::invalid(&e.field, &e.reason))?;
    ctx.state
        .alarms
        .put_alarm(&ctx.principal.tenant, def)
        .await
        .map_err(api_error)?;
    Ok(V::Struct(Vec::new()))
}

/// `DescribeAlarms`: by names, prefix and state, `MaxRecords` a page with `NextToken`.
///
/// # Errors
/// A bad state, page size or token.
pub async fn describe_alarms(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let names = input.str_list("AlarmNames")?;
    if names.len() > 100 {
        return Err(AwsError::invalid("AlarmNames", "at most 100 names"));
    }
    let prefix = input.str("AlarmNamePrefix")?;
    if prefix.is_some() && !names.is_empty() {
        return Err(AwsError::coded(
            Kind::Invalid,
            400,
            "InvalidParameterCombination",
            "AlarmNames and AlarmNamePrefix cannot be given together",
        ));
    }
    let state = match input.str("StateValue")? {
        None => None,
        Some(s) => Some(AlarmState::parse(s).ok_or_else(|| {
            AwsError::invalid(
                "StateValue",
                format!("`{s}` is not OK, ALARM or INSUFFICIENT_DATA"),
            )
        })?),
    };
    let types = input.str_list("AlarmTypes")?;
    let max = match input.i64("MaxRecords")? {
        None => MAX_RECORDS,
        Some(m) if (1..=MAX_RECORDS as i64).contains(&m) => m as usize,
        Some(m) => {
            return Err(AwsError::invalid(
                "MaxRecords",
                format!("{m} is not from 1 to {MAX_RECORDS}"),
            ));
        }
    };
    let offset = super::page_offset(input, "NextToken")?;
    let all = ctx
        .state
        .alarms
        .describe_alarms(&ctx.principal.tenant, prefix, state)
        .await
        .map_err(api_error)?;
    let metric_alarms = types.is_empty() || types.contains(&"MetricAlarm");
    let selected: Vec<&Value> = all
        .iter()
        .filter(|a| {
            metric_alarms
                && (names.is_empty()
                    || a.get("AlarmName")
                        .and_then(Value::as_str)
                        .is_some_and(|n| names.contains(&n)))
        })
        .collect();
    let page: Vec<V> = selected
        .iter()
        .skip(offset)
        .take(max)
        .map(|a| answer_value(a, ""))
        .collect();
    let next = super::next_token(selected.len() > offset + max, offset + max);
    Ok(V::object(vec![
        ("MetricAlarms", V::List(page)),
        ("CompositeAlarms", V::List(Vec::new())),
        ("NextToken", next),
    ]))
}

/// `AlarmNames`: 1 to 100 names.
fn alarm_names<'a>(input: &super::value::Input<'a>) -> Result<Vec<&'a str>, AwsError> {
    let names = input.str_list("AlarmNames")?;
    if names.is_empty() {
        return Err(AwsError::missing("AlarmNames"));
    }
    if names.len() > 100 {
        return Err(AwsError::invalid("AlarmNames", "at most 100 names"));
    }
    Ok(names)
}

/// `DeleteAlarms`: every name must exist (CloudWatch refuses the call otherwise).
///
/// # Errors
/// An unknown name.
pub async fn delete_alarms(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let names = alarm_names(&ctx.input)?;
    for n in &names {
        ctx.state
            .alarms
            .describe_alarm(&ctx.principal.tenant, n)
            .await
            .map_err(api_error)?;
    }
    for n in names {
        ctx.state
            .alarms
            .delete_alarm(&ctx.principal.tenant, n)
            .await
            .map_err(api_error)?;
    }
    Ok(V::Struct(Vec::new()))
}

/// `SetAlarmState`.
///
/// # Errors
/// An unknown alarm, a bad state, reason or reason data.
pub async fn set_alarm_state(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let name = input.req_str("AlarmName")?;
    let s = input.req_str("StateValue")?;
    let state = AlarmState::parse(s).ok_or_else(|| {
        AwsError::invalid(
            "StateValue",
            format!("`{s}` is not OK, ALARM or INSUFFICIENT_DATA"),
        )
    })?;
    let reason = input.req_str("StateReason")?;
    if reason.chars().count() > 1023 {
        return Err(AwsError::invalid("StateReason", "at most 1023 characters"));
    }
    let data = match input.str("StateReasonData")? {
        None => Value::Null,
        Some(d) if d.len() > 4000 => {
            return Err(AwsError::coded(
                Kind::Invalid,
                400,
                "InvalidFormat",
                "StateReasonData: at most 4000 characters",
            ));
        }
        Some(d) => serde_json::from_str(d).map_err(|e| {
            AwsError::coded(
                Kind::Invalid,
                400,
                "InvalidFormat",
                format!("StateReasonData is not JSON: {e}"),
            )
        })?,
    };
    ctx.state
        .alarms
        .set_state(&ctx.principal.tenant, name, state, reason.to_string(), data)
        .await
        .map_err(api_error)?;
    Ok(V::Struct(Vec::new()))
}

/// `DescribeAlarmHistory`: newest first, `MaxRecords` up to 100.
///
/// # Errors
/// A bad item type or page size.
pub async fn describe_alarm_history(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let item_type = input.str("HistoryItemType")?;
    if let Some(t) = item_type
        && !["StateUpdate", "ConfigurationUpdate", "Action"].contains(&t)
    {
        return Err(AwsError::invalid(
            "HistoryItemType",
            format!("`{t}` is not StateUpdate, ConfigurationUpdate or Action"),
        ));
    }
    let max = match input.i64("MaxRecords")? {
        None => 100,
        Some(m) if (1..=100).contains(&m) => m as usize,
        Some(m) => {
            return Err(AwsError::invalid(
                "MaxRecords",
                format!("{m} is not from 1 to 100"),
            ));
        }
    };
    let start = input.time_ms("StartDate")?;
    let end = input.time_ms("EndDate")?;
    let items = ctx
        .state
        .alarms
        .history(
            &ctx.principal.tenant,
            input.str("AlarmName")?,
            item_type,
            1000,
        )
        .await
        .map_err(api_error)?;
    let items: Vec<V> = items
        .iter()
        .map(|i| answer_value(i, ""))
        .filter(|i| {
            let t = match i.get("Timestamp") {
                Some(V::Time(t)) => (*t * 1000.0) as i64,
                _ => return true,
            };
            start.is_none_or(|s| t >= s) && end.is_none_or(|e| t < e)
        })
        .take(max)
        .collect();
    Ok(V::object(vec![("AlarmHistoryItems", V::List(items))]))
}

/// `EnableAlarmActions` and `DisableAlarmActions`.
///
/// # Errors
/// An unknown name (nothing changed).
pub async fn set_actions(ctx: &Ctx<'_>, enabled: bool) -> Result<V, AwsError> {
    let names = alarm_names(&ctx.input)?;
    ctx.state
        .alarms
        .set_actions_enabled(&ctx.principal.tenant, &names, enabled)
        .await
        .map_err(api_error)?;
    Ok(V::Struct(Vec::new()))
}

/// `DescribeAlarmsForMetric`: the metric alarms on one metric (namespace, name and exactly its
/// dimensions), narrowed by statistic, period and unit when given.
///
/// # Errors
/// A missing namespace or metric name.
pub async fn describe_alarms_for_metric(ctx: &Ctx<'_>) -> Result<V, AwsError> {
    let input = &ctx.input;
    let namespace = input.req_str("Namespace")?;
    let metric = input.req_str("MetricName")?;
    let mut dims: Vec<(String, String)> = Vec::new();
    for item in input.list("Dimensions")? {
        let d = item.object()?;
        dims.push((
            d.req_str("Name")?.to_string(),
            d.req_str("Value")?.to_string(),
        ));
    }
    dims.sort();
    let statistic = input.str("Statistic")?;
    let extended = input.str("ExtendedStatistic")?;
    let period = input.i64("Period")?;
    let unit = input.str("Unit")?;
    let all = ctx
        .state
        .alarms
        .describe_alarms(&ctx.principal.tenant, None, None)
        .await
        .map_err(api_error)?;
    let text = |a: &Value, k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
    let alarms = all
        .iter()
        .filter(|a| {
            let mut have: Vec<(String, String)> = a
                .get("Dimensions")
                .and_then(Value::as_array)
                .map(|ds| {
                    ds.iter()
                        .filter_map(|d| Some((text(d, "Name")?, text(d, "Value")?)))
                        .collect()
                })
                .unwrap_or_default();
            have.sort();
            text(a, "Namespace").as_deref() == Some(namespace)
                && text(a, "MetricName").as_deref() == Some(metric)
                && have == dims
                && statistic.is_none_or(|s| text(a, "Statistic").as_deref() == Some(s))
                && extended.is_none_or(|s| text(a, "ExtendedStatistic").as_deref() == Some(s))
                && period.is_none_or(|p| a.get("Period").and_then(Value::as_i64) == Some(p))
                && unit.is_none_or(|u| text(a, "Unit").as_deref() == Some(u))
        })
        .map(|a| answer_value(a, ""))
        .collect();
    Ok(V::object(vec![("MetricAlarms", V::List(alarms))]))
}
