//! Functions that Athena users write in CloudTrail queries, so those queries run unchanged:
//! `json_extract_scalar(json, '$.path')`, `json_extract(json, '$.path')` and
//! `from_iso8601_timestamp(text)`. Paths may hold wildcards (`$.items[*].name`, `$.o.*`), which
//! reach a list: `json_extract` answers it as a JSON array and `json_extract_scalar` as NULL (an
//! array is not a scalar). A JSON `null` is the JSON value `null` to `json_extract` and SQL NULL
//! to `json_extract_scalar`, as in Trino. The `json_get*` family comes from
//! `datafusion-functions-json`.
//! Also CloudWatch's filter patterns: `filter_pattern_match(pattern, text)` and
//! `filter_pattern_value(pattern, text, selector)`, which metric filters compile to.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray as _, BooleanBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use serde_json::Value;

use crate::pattern::FilterPattern;
use crate::tables::{UTC, timestamp_type};

/// The Athena compatibility functions.
pub(crate) fn athena_functions() -> Vec<ScalarUDF> {
    vec![
        create_udf(
            "json_extract_scalar",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(|args| json_extract(args, true)),
        ),
        create_udf(
            "json_extract",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(|args| json_extract(args, false)),
        ),
        create_udf(
            "from_iso8601_timestamp",
            vec![DataType::Utf8],
            timestamp_type(),
            Volatility::Immutable,
            Arc::new(from_iso8601),
        ),
        create_udf(
            "filter_pattern_match",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(filter_pattern_match),
        ),
        create_udf(
            "filter_pattern_value",
            vec![DataType::Utf8, DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(filter_pattern_value),
        ),
    ]
}

/// Parses the filter patterns of a column, reusing the last one while the text repeats (the
/// pattern is nearly always one literal).
struct Patterns {
    last: Option<(String, Arc<FilterPattern>)>,
}

impl Patterns {
    fn get(&mut self, text: &str) -> Result<Arc<FilterPattern>> {
        if let Some((t, p)) = &self.last
            && t == text
        {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(FilterPattern::parse(text).map_err(|e| {
            DataFusionError::Execution(format!("invalid filter pattern `{text}`: {e}"))
        })?);
        self.last = Some((text.to_string(), Arc::clone(&p)));
        Ok(p)
    }
}

/// `filter_pattern_match(pattern, text)`: whether a CloudWatch filter pattern matches a log
/// message or a CloudTrail record (`eventjson`).
fn filter_pattern_match(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let [pattern, text] = arrays.as_slice() else {
        return Err(DataFusionError::Plan(
            "filter_pattern_match takes two arguments: (pattern, text)".into(),
        ));
    };
    let (pattern, text) = (pattern.as_string::<i32>(), text.as_string::<i32>());
    let mut patterns = Patterns { last: None };
    let mut out = BooleanBuilder::with_capacity(text.len());
    for i in 0..text.len() {
        if pattern.is_null(i) || text.is_null(i) {
            out.append_null();
        } else {
            out.append_value(patterns.get(pattern.value(i))?.matches(text.value(i)));
        }
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
}

/// `filter_pattern_value(pattern, text, selector)`: the value a metric transformation's selector
/// (`$.latency`, `$bytes`) names in a matching event; null when it does not match.
fn filter_pattern_value(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let [pattern, text, selector] = arrays.as_slice() else {
        return Err(DataFusionError::Plan(
            "filter_pattern_value takes three arguments: (pattern, text, selector)".into(),
        ));
    };
    let (pattern, text, selector) = (
        pattern.as_string::<i32>(),
        text.as_string::<i32>(),
        selector.as_string::<i32>(),
    );
    let mut patterns = Patterns { last: None };
    let mut out = StringBuilder::new();
    for i in 0..text.len() {
        if pattern.is_null(i) || text.is_null(i) || selector.is_null(i) {
            out.append_null();
            continue;
        }
        let p = patterns.get(pattern.value(i))?;
        out.append_option(p.extract(text.value(i), selector.value(i)));
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
}

/// One step of a JSONPath such as `$.a.b[0]` or `$["a b"]`.
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    /// `[*]` or `.*`: every element of an array, every value of an object.
    Wildcard,
}

/// Parses the subset of JSONPath that Presto's `json_extract` accepts.
fn parse_path(path: &str) -> Result<Vec<Step>> {
    let bad = |why: &str| DataFusionError::Execution(format!("invalid JSON path `{path}`: {why}"));
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| bad("must start with `$`"))?;
    let mut steps = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c == '.' || c == '[' {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                if key.is_empty() {
                    return Err(bad("empty key after `.`"));
                }
                steps.push(if key == "*" {
                    Step::Wildcard
                } else {
                    Step::Key(key)
                });
            }
            '[' => {
                let mut inner = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(bad("missing `]`"));
                }
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::Wildcard);
                } else if let Some(q) = inner
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                {
                    steps.push(Step::Key(q.to_string()));
                } else {
                    let i = inner
                        .parse::<usize>()
                        .map_err(|_| bad("expected an index or a quoted key inside `[]`"))?;
                    steps.push(Step::Index(i));
                }
            }
            _ => return Err(bad("expected `.` or `[`")),
        }
    }
    Ok(steps)
}

/// The value at a path without wildcards.
fn walk<'a>(mut v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    for s in steps {
        v = match s {
            Step::Key(k) => v.get(k.as_str())?,
            Step::Index(i) => v.get(*i)?,
            Step::Wildcard => return None,
        };
    }
    Some(v)
}

/// Every value a path with wildcards reaches, in document order.
fn walk_all<'a>(v: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
    let Some((first, rest)) = steps.split_first() else {
        out.push(v);
        return;
    };
    match first {
        Step::Key(k) => {
            if let Some(next) = v.get(k.as_str()) {
                walk_all(next, rest, out);
            }
        }
        Step::Index(i) => {
            if let Some(next) = v.get(*i) {
                walk_all(next, rest, out);
            }
        }
        Step::Wildcard => match v {
            Value::Array(items) => items.iter().for_each(|x| walk_all(x, rest, out)),
            Value::Object(map) => map.values().for_each(|x| walk_all(x, rest, out)),
            _ => {}
        },
    }
}

fn json_extract(args: &[ColumnarValue], scalar: bool) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let [json, path] = arrays.as_slice() else {
        return Err(DataFusionError::Plan(
            "json_extract takes two arguments: (json, path)".into(),
        ));
    };
    let json = json.as_string::<i32>();
    let paths = path.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(json.len(), json.len() * 8);
    // Paths are almost always one constant: parse it once.
    let mut cached: Option<(String, Vec<Step>)> = None;
    for i in 0..json.len() {
        if json.is_null(i) || paths.is_null(i) {
            out.append_null();
            continue;
        }
        let p = paths.value(i);
        if cached.as_ref().is_none_or(|(c, _)| c != p) {
            cached = Some((p.to_string(), parse_path(p)?));
        }
        let steps = cached
            .as_ref()
            .map(|(_, s)| s.as_slice())
            .unwrap_or_default();
        let Ok(doc) = serde_json::from_str::<Value>(json.value(i)) else {
            out.append_null();
            continue;
        };
        if steps.contains(&Step::Wildcard) {
            // A path with wildcards reaches a list of values: JSON's array of them for
            // json_extract, and (an array not being a scalar) NULL for json_extract_scalar.
            if scalar {
                out.append_null();
            } else {
                let mut found = Vec::new();
                walk_all(&doc, steps, &mut found);
                out.append_value(Value::Array(found.into_iter().cloned().collect()).to_string());
            }
            continue;
        }
        match walk(&doc, steps) {
            None => out.append_null(),
            // JSON null: json_extract gives the JSON value `null`, json_extract_scalar SQL NULL.
            Some(Value::Null) if scalar => out.append_null(),
            Some(Value::String(s)) if scalar => out.append_value(s),
            Some(v @ (Value::Bool(_) | Value::Number(_))) if scalar => {
                out.append_value(v.to_string())
            }
            // Presto's json_extract_scalar gives null for arrays and objects.
            Some(_) if scalar => out.append_null(),
            Some(v) => out.append_value(v.to_string()),
        }
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
}

fn from_iso8601(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let [text] = arrays.as_slice() else {
        return Err(DataFusionError::Plan(
            "from_iso8601_timestamp takes one argument".into(),
        ));
    };
    let text = text.as_string::<i32>();
    let mut out = TimestampMicrosecondBuilder::with_capacity(text.len()).with_timezone(UTC);
    for v in text.iter() {
        match v {
            None => out.append_null(),
            Some(s) => {
                let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
                    DataFusionError::Execution(format!(
                        "from_iso8601_timestamp: `{s}` is not an ISO 8601 timestamp: {e}"
                    ))
                })?;
                out.append_value(t.timestamp_micros());
            }
        }
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    fn extract(json: &str, path: &str, scalar: bool) -> Option<String> {
        let args = [
            ColumnarValue::Array(Arc::new(StringArray::from(vec![json]))),
            ColumnarValue::Array(Arc::new(StringArray::from(vec![path]))),
        ];
        let ColumnarValue::Array(a) = json_extract(&args, scalar).ok()? else {
            return None;
        };
        let a = a.as_string::<i32>();
        (!a.is_null(0)).then(|| a.value(0).to_string())
    }

    #[test]
    fn paths_reach_keys_and_indexes() {
        let doc = r#"{"bucketName":"b","a":{"list":[1,{"x":"y"}],"n":3,"t":true},"odd key":"z"}"#;
        assert_eq!(extract(doc, "$.bucketName", true).as_deref(), Some("b"));
        assert_eq!(extract(doc, "$.a.list[1].x", true).as_deref(), Some("y"));
        assert_eq!(extract(doc, "$.a.n", true).as_deref(), Some("3"));
        assert_eq!(extract(doc, "$.a.t", true).as_deref(), Some("true"));
        assert_eq!(extract(doc, "$[\"odd key\"]", true).as_deref(), Some("z"));
        assert_eq!(extract(doc, "$.a.list", true), None);
        assert_eq!(
            extract(doc, "$.a.list", false).as_deref(),
            Some(r#"[1,{"x":"y"}]"#)
        );
        assert_eq!(extract(doc, "$.missing", true), None);
        assert_eq!(extract("not json", "$.a", true), None);
    }

    #[test]
    fn wildcards_and_json_null_answer_as_athena_does() {
        let doc = r#"{"items":[{"name":"a","n":1},{"name":"b"},{"other":2}],"gone":null,"o":{"x":1,"y":"z"}}"#;
        assert_eq!(
            extract(doc, "$.items[*].name", false).as_deref(),
            Some(r#"["a","b"]"#)
        );
        assert_eq!(extract(doc, "$.items[*].name", true), None);
        assert_eq!(extract(doc, "$.o.*", false).as_deref(), Some(r#"[1,"z"]"#));
        assert_eq!(extract(doc, "$.missing[*]", false).as_deref(), Some("[]"));
        // JSON null: the JSON value for json_extract, SQL NULL for json_extract_scalar.
        assert_eq!(extract(doc, "$.gone", false).as_deref(), Some("null"));
        assert_eq!(extract(doc, "$.gone", true), None);
        assert_eq!(extract(doc, "$.absent", false), None);
    }

    #[test]
    fn bad_paths_are_errors() {
        assert!(parse_path("a.b").is_err());
        assert!(parse_path("$.").is_err());
        assert!(parse_path("$[1").is_err());
        assert_eq!(
            parse_path("$.a[2]").ok(),
            Some(vec![Step::Key("a".into()), Step::Index(2)])
        );
    }
}
