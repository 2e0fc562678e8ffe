//! One value model for every AWS protocol this port speaks: requests in JSON (awsJson 1.0 and
//! 1.1), CBOR (smithy rpc-v2-cbor) and form-encoded Query parameters decode into [`V`];
//! answers built as [`V`] encode back as JSON, CBOR or Query XML. Operations read their input
//! through [`Input`], whose accessors name the parameter on every refusal and accept the
//! strings the Query protocol sends for numbers and booleans.

use std::collections::BTreeMap;

use super::error::AwsError;

/// A request or answer value.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    /// Absent.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Str(String),
    /// A time, seconds since the epoch.
    Time(f64),
    /// Bytes.
    Blob(Vec<u8>),
    /// A list.
    List(Vec<V>),
    /// A structure: named members, in order.
    Struct(Vec<(String, V)>),
    /// A map: string keys to values (XML writes it as `entry`/`key`/`value`).
    Map(Vec<(String, V)>),
}

/// Deepest nesting a request may have.
const MAX_DEPTH: usize = 32;

impl V {
    /// A structure from its members, leaving out `Null` ones.
    pub fn object(members: Vec<(&str, V)>) -> V {
        V::Struct(
            members
                .into_iter()
                .filter(|(_, v)| *v != V::Null)
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// Text, or `Null` for `None`.
    pub fn opt_str(s: Option<impl Into<String>>) -> V {
        s.map_or(V::Null, |s| V::Str(s.into()))
    }

    /// The member `name` of a structure or map.
    pub fn get(&self, name: &str) -> Option<&V> {
        match self {
            V::Struct(m) | V::Map(m) => m.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Decodes a JSON body (empty means `{}`).
    ///
    /// # Errors
    /// Bytes that are not a JSON object.
    pub fn from_json(body: &[u8]) -> Result<V, AwsError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(V::Struct(Vec::new()));
        }
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| AwsError::serialization(format!("the body is not JSON: {e}")))?;
        from_json_value(v, 0)
    }

    /// Decodes a CBOR body (empty means `{}`).
    ///
    /// # Errors
    /// Bytes that are not one CBOR map.
    pub fn from_cbor(body: &[u8]) -> Result<V, AwsError> {
        if body.is_empty() {
            return Ok(V::Struct(Vec::new()));
        }
        let v: ciborium::Value = ciborium::de::from_reader_with_recursion_limit(body, MAX_DEPTH)
            .map_err(|e| AwsError::serialization(format!("the body is not CBOR: {e}")))?;
        from_cbor_value(v)
    }

    /// Decodes Query protocol parameters (`MetricData.member.1.Dimensions.member.2.Name=...`)
    /// into a tree: `member.N` become lists, `entry.N.key`/`entry.N.value` maps, the rest
    /// structures. Leaves stay text.
    ///
    /// # Errors
    /// Keys nested deeper than a request may be, or list indexes that are not numbers.
    pub fn from_query(pairs: &[(String, String)]) -> Result<V, AwsError> {
        #[derive(Default)]
        struct Node {
            leaf: Option<String>,
            children: BTreeMap<String, Node>,
        }
        let mut root = Node::default();
        for (k, v) in pairs {
            let parts: Vec<&str> = k.split('.').collect();
            if parts.len() > MAX_DEPTH {
                return Err(AwsError::invalid(k, "is nested too deeply"));
            }
            let mut node = &mut root;
            for p in parts {
                node = node.children.entry(p.to_string()).or_default();
            }
            node.leaf = Some(v.clone());
        }
        fn index(name: &str, k: &str) -> Result<u64, AwsError> {
            k.parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| AwsError::invalid(name, format!("`{k}` is not a list index")))
        }
        fn convert(name: &str, node: Node) -> Result<V, AwsError> {
            if node.children.is_empty() {
                return Ok(V::Str(node.leaf.unwrap_or_default()));
            }
            let only = |key: &str| node.children.len() == 1 && node.children.contains_key(key);
            if only("member") {
                let Some(members) = node.children.into_values().next() else {
                    return Ok(V::List(Vec::new()));
                };
                let mut items = Vec::new();
                for (k, child) in members.children {
                    items.push((
                        index(name, &k)?,
                        convert(&format!("{name}.member.{k}"), child)?,
                    ));
                }
                items.sort_by_key(|(i, _)| *i);
                return Ok(V::List(items.into_iter().map(|(_, v)| v).collect()));
            }
            if only("entry") {
                let Some(entries) = node.children.into_values().next() else {
                    return Ok(V::Map(Vec::new()));
                };
                let mut items = Vec::new();
                for (k, mut child) in entries.children {
                    let i = index(name, &k)?;
                    let key = child
                        .children
                        .remove("key")
                        .and_then(|n| n.leaf)
                        .unwrap_or_default();
                    let value = match child.children.remove("value") {
                        Some(n) => convert(&format!("{name}.entry.{k}.value"), n)?,
                        None => V::Null,
                    };
                    items.push((i, key, value));
                }
                items.sort_by_key(|(i, _, _)| *i);
                return Ok(V::Map(items.into_iter().map(|(_, k, v)| (k, v)).collect()));
            }
            let mut members = Vec::new();
            for (k, child) in node.children {
                let path = if name.is_empty() {
                    k.clone()
                } else {
                    format!("{name}.{k}")
                };
                members.push((k, convert(&path, child)?));
            }
            Ok(V::Struct(members))
        }
        convert("", root)
    }

    /// The value as JSON (times as epoch seconds, blobs as base64).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            V::Null => J::Null,
            V::Bool(b) => J::Bool(*b),
            V::Int(i) => J::from(*i),
            V::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            V::Str(s) => J::String(s.clone()),
            V::Time(t) => serde_json::Number::from_f64(*t).map_or(J::Null, J::Number),
            V::Blob(b) => {
                use base64::Engine as _;
                J::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            V::List(l) => J::Array(l.iter().map(V::to_json).collect()),
            V::Struct(m) | V::Map(m) => J::Object(
                m.iter()
                    .filter(|(_, v)| *v != V::Null)
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The value as CBOR (times as tag 1).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = ciborium::ser::into_writer(&self.cbor_value(), &mut out);
        out
    }

    fn cbor_value(&self) -> ciborium::Value {
        use ciborium::Value as C;
        match self {
            V::Null => C::Null,
            V::Bool(b) => C::Bool(*b),
            V::Int(i) => C::Integer((*i).into()),
            V::Float(f) => C::Float(*f),
            V::Str(s) => C::Text(s.clone()),
            V::Time(t) => C::Tag(1, Box::new(C::Float(*t))),
            V::Blob(b) => C::Bytes(b.clone()),
            V::List(l) => C::Array(l.iter().map(V::cbor_value).collect()),
            V::Struct(m) | V::Map(m) => C::Map(
                m.iter()
                    .filter(|(_, v)| *v != V::Null)
                    .map(|(k, v)| (C::Text(k.clone()), v.cbor_value()))
                    .collect(),
            ),
        }
    }

    /// Appends the value as Query protocol XML (the members of a structure as elements, lists
    /// as `member` elements, maps as `entry` elements, times in ISO 8601).
    pub fn write_xml(&self, out: &mut String) {
        match self {
            V::Null => {}
            V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            V::Int(i) => out.push_str(&i.to_string()),
            V::Float(f) => out.push_str(&format_float(*f)),
            V::Str(s) => escape_xml(s, out),
            V::Time(t) => out.push_str(&iso_time(*t)),
            V::Blob(b) => {
                use base64::Engine as _;
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(b));
            }
            V::List(l) => {
                for item in l {
                    out.push_str("<member>");
                    item.write_xml(out);
                    out.push_str("</member>");
                }
            }
            V::Struct(m) => {
                for (k, v) in m {
                    if *v == V::Null {
                        continue;
                    }
                    out.push('<');
                    out.push_str(k);
                    out.push('>');
                    v.write_xml(out);
                    out.push_str("</");
                    out.push_str(k);
                    out.push('>');
                }
            }
            V::Map(m) => {
                for (k, v) in m {
                    out.push_str("<entry><key>");
                    escape_xml(k, out);
                    out.push_str("</key><value>");
                    v.write_xml(out);
                    out.push_str("</value></entry>");
                }
            }
        }
    }
}

/// A float as the wire writes it: integral values with `.0`, others as Rust prints them.
fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// Epoch seconds as ISO 8601 with milliseconds (`2024-05-01T00:00:00.000Z`).
pub fn iso_time(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Escapes text for XML.
pub fn escape_xml(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn from_json_value(v: serde_json::Value, depth: usize) -> Result<V, AwsError> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(AwsError::serialization("the body is nested too deeply"));
    }
    Ok(match v {
        J::Null => V::Null,
        J::Bool(b) => V::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => V::Int(i),
            None => V::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => V::Str(s),
        J::Array(a) => V::List(
            a.into_iter()
                .map(|x| from_json_value(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => V::Struct(
            o.into_iter()
                .map(|(k, x)| Ok((k, from_json_value(x, depth + 1)?)))
                .collect::<Result<_, AwsError>>()?,
        ),
    })
}

fn from_cbor_value(v: ciborium::Value) -> Result<V, AwsError> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => V::Null,
        C::Bool(b) => V::Bool(b),
        C::Integer(i) => match i64::try_from(i128::from(i)) {
            Ok(i) => V::Int(i),
            Err(_) => V::Float(i128::from(i) as f64),
        },
        C::Float(f) => V::Float(f),
        C::Text(s) => V::Str(s),
        C::Bytes(b) => V::Blob(b),
        C::Tag(1, inner) => match *inner {
            C::Integer(i) => V::Time(i128::from(i) as f64),
            C::Float(f) => V::Time(f),
            _ => {
                return Err(AwsError::serialization(
                    "a CBOR time (tag 1) must be a number",
                ));
            }
        },
        C::Tag(_, inner) => from_cbor_value(*inner)?,
        C::Array(a) => V::List(
            a.into_iter()
                .map(from_cbor_value)
                .collect::<Result<_, _>>()?,
        ),
        C::Map(m) => {
            let mut out = Vec::with_capacity(m.len());
            for (k, x) in m {
                let C::Text(k) = k else {
                    return Err(AwsError::serialization("CBOR map keys must be text"));
                };
                out.push((k, from_cbor_value(x)?));
            }
            V::Struct(out)
        }
        _ => V::Null,
    })
}

/// A request's parameters, read by name with refusals that name the parameter's full path
/// (`MetricData.member.3.Value`).
#[derive(Debug, Clone)]
pub struct Input<'a> {
    value: &'a V,
    path: String,
    /// The Query protocol: lists are `Name.member.N`.
    query: bool,
}

impl<'a> Input<'a> {
    /// The parameters of a request.
    pub fn root(value: &'a V, query: bool) -> Self {
        Self {
            value,
            path: String::new(),
            query,
        }
    }

    fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn member(&self, name: &str) -> Option<&'a V> {
        self.value.get(name).filter(|v| **v != V::Null)
    }

    /// Text member `name`, if given.
    ///
    /// # Errors
    /// A value that is not text.
    pub fn str(&self, name: &str) -> Result<Option<&'a str>, AwsError> {
        match self.member(name) {
            None => Ok(None),
            Some(V::Str(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(AwsError::invalid(self.field(name), "must be a string")),
        }
    }

    /// Text member `name`, required.
    ///
    /// # Errors
    /// Missing, or not text.
    pub fn req_str(&self, name: &str) -> Result<&'a str, AwsError> {
        self.str(name)?
            .ok_or_else(|| AwsError::missing(self.field(name)))
    }

    /// Number member `name`, if given.
    ///
    /// # Errors
    /// A value that is not a number (or, in the Query protocol, text that is not one).
    pub fn f64(&self, name: &str) -> Result<Option<f64>, AwsError> {
        match self.member(name) {
            None => Ok(None),
            Some(V::Int(i)) => Ok(Some(*i as f64)),
            Some(V::Float(f)) => Ok(Some(*f)),
            Some(V::Str(s)) if self.query => s
                .parse::<f64>()
                .map(Some)
                .map_err(|_| AwsError::invalid(self.field(name), format!("`{s}` is not a number"))),
            Some(_) => Err(AwsError::invalid(self.field(name), "must be a number")),
        }
    }

    /// Integer member `name`, if given.
    ///
    /// # Errors
    /// A value that is not an integer.
    pub fn i64(&self, name: &str) -> Result<Option<i64>, AwsError> {
        let bad = || AwsError::invalid(self.field(name), "must be an integer");
        match self.member(name) {
            None => Ok(None),
            Some(V::Int(i)) => Ok(Some(*i)),
            Some(V::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(*f as i64)),
            Some(V::Str(s)) if self.query => s.parse::<i64>().map(Some).map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }

    /// Boolean member `name`, if given.
    ///
    /// # Errors
    /// A value that is not a boolean.
    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.member(name) {
            None => Ok(None),
            Some(V::Bool(b)) => Ok(Some(*b)),
            Some(V::Str(s)) if self.query && s == "true" => Ok(Some(true)),
            Some(V::Str(s)) if self.query && s == "false" => Ok(Some(false)),
            Some(_) => Err(AwsError::invalid(self.field(name), "must be true or false")),
        }
    }

    /// Time member `name` as epoch milliseconds: a CBOR time, epoch seconds (JSON) or an
    /// ISO 8601 text (Query, or JSON from hand-written clients).
    ///
    /// # Errors
    /// Anything else.
    pub fn time_ms(&self, name: &str) -> Result<Option<i64>, AwsError> {
        let secs = |s: f64| (s * 1000.0).round() as i64;
        match self.member(name) {
            None => Ok(None),
            Some(V::Time(t) | V::Float(t)) if t.is_finite() => Ok(Some(secs(*t))),
            Some(V::Int(i)) => Ok(Some(i.saturating_mul(1000))),
            Some(V::Str(s)) => parse_time_text(s).map(Some).ok_or_else(|| {
                AwsError::invalid(
                    self.field(name),
                    format!("`{s}` is not a time (ISO 8601 or epoch seconds)"),
                )
            }),
            Some(_) => Err(AwsError::invalid(self.field(name), "must be a time")),
        }
    }

    /// Structure member `name`, if given.
    ///
    /// # Errors
    /// A value that is not a structure.
    pub fn object(&self, name: &str) -> Result<Option<Input<'a>>, AwsError> {
        match self.member(name) {
            None => Ok(None),
            Some(v @ (V::Struct(_) | V::Map(_))) => Ok(Some(Input {
                value: v,
                path: self.field(name),
                query: self.query,
            })),
            Some(_) => Err(AwsError::invalid(self.field(name), "must be a structure")),
        }
    }

    /// List member `name` (empty when not given), each item with its path.
    ///
    /// # Errors
    /// A value that is not a list.
    pub fn list(&self, name: &str) -> Result<Vec<Item<'a>>, AwsError> {
        match self.member(name) {
            None => Ok(Vec::new()),
            Some(V::List(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| Item {
                    value: v,
                    field: if self.query {
                        format!("{}.member.{}", self.field(name), i + 1)
                    } else {
                        format!("{}[{i}]", self.field(name))
                    },
                    query: self.query,
                })
                .collect()),
            // The Query protocol sends an empty list as `Name=` (no members).
            Some(V::Str(s)) if self.query && s.is_empty() => Ok(Vec::new()),
            Some(_) => Err(AwsError::invalid(self.field(name), "must be a list")),
        }
    }

    /// Text list member `name`.
    ///
    /// # Errors
    /// A value that is not a list of text.
    pub fn str_list(&self, name: &str) -> Result<Vec<&'a str>, AwsError> {
        self.list(name)?
            .iter()
            .map(|i| match i.value {
                V::Str(s) => Ok(s.as_str()),
                _ => Err(AwsError::invalid(&i.field, "must be a string")),
            })
            .collect()
    }

    /// Number list member `name`.
    ///
    /// # Errors
    /// A value that is not a list of numbers.
    pub fn f64_list(&self, name: &str) -> Result<Vec<f64>, AwsError> {
        self.list(name)?
            .iter()
            .map(|i| match i.value {
                V::Int(n) => Ok(*n as f64),
                V::Float(f) => Ok(*f),
                V::Str(s) if self.query => s
                    .parse()
                    .map_err(|_| AwsError::invalid(&i.field, format!("`{s}` is not a number"))),
                _ => Err(AwsError::invalid(&i.field, "must be a number")),
            })
            .collect()
    }

    /// Whether member `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.member(name).is_some()
    }
}

/// One item of a list parameter.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    value: &'a V,
    /// Its path (`MetricData.member.2` or `logEvents[1]`).
    pub field: String,
    query: bool,
}

impl<'a> Item<'a> {
    /// The item as a structure.
    ///
    /// # Errors
    /// An item that is not one.
    pub fn object(&self) -> Result<Input<'a>, AwsError> {
        match self.value {
            V::Struct(_) | V::Map(_) => Ok(Input {
                value: self.value,
                path: self.field.clone(),
                query: self.query,
            }),
            _ => Err(AwsError::invalid(&self.field, "must be a structure")),
        }
    }
}

/// Epoch milliseconds from ISO 8601 text or epoch seconds as text.
pub fn parse_time_text(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%MZ",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(|f| (f * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_parameters_become_lists_maps_and_structures() {
        let v = V::from_query(&pairs(&[
            ("Namespace", "App"),
            ("MetricData.member.2.MetricName", "b"),
            ("MetricData.member.1.MetricName", "a"),
            ("MetricData.member.1.Dimensions.member.1.Name", "Host"),
            ("MetricData.member.10.MetricName", "j"),
            ("Tags.entry.1.key", "k"),
            ("Tags.entry.1.value", "v"),
        ]))
        .unwrap();
        let input = Input::root(&v, true);
        assert_eq!(input.req_str("Namespace").unwrap(), "App");
        let items = input.list("MetricData").unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|i| i.object().unwrap().req_str("MetricName").unwrap())
            .collect();
        // Numeric order, not text order: 1, 2, 10.
        assert_eq!(names, ["a", "b", "j"]);
        assert_eq!(items[2].field, "MetricData.member.3");
        let dims = items[0].object().unwrap().list("Dimensions").unwrap();
        assert_eq!(dims[0].object().unwrap().req_str("Name").unwrap(), "Host");
        assert_eq!(
            v.get("Tags"),
            Some(&V::Map(vec![("k".into(), V::Str("v".into()))]))
        );
        // Missing and mistyped parameters are named with their path.
        let e = items[1].object().unwrap().req_str("Unit").unwrap_err();
        assert_eq!(e.kind, super::super::error::Kind::Missing);
        assert!(e.message.contains("MetricData.member.2.Unit"), "{e}");
        let bad = V::from_query(&pairs(&[("Period", "sixty")])).unwrap();
        let e = Input::root(&bad, true).i64("Period").unwrap_err();
        assert!(e.message.starts_with("Period"), "{e}");
        assert!(V::from_query(&pairs(&[("List.member.x", "1")])).is_err());
    }

    #[test]
    fn the_deepest_bodies_are_refused_not_followed() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(V::from_json(deep.as_bytes()).is_err());
        let key = vec!["a"; 1000].join(".");
        assert!(V::from_query(&pairs(&[(&key, "1")])).is_err());
        // 10,000 nested CBOR arrays (0x81 each) around a 0.
        let mut cbor = vec![0x81u8; 10_000];
        cbor.push(0);
        assert!(V::from_cbor(&cbor).is_err());
        assert!(V::from_cbor(&[0xff, 0x00]).is_err());
        assert!(V::from_json(b"{\"a\": ").is_err());
    }

    #[test]
    fn answers_encode_in_every_protocol() {
        let v = V::object(vec![
            ("Label", V::Str("a<b".into())),
            (
                "Datapoints",
                V::List(vec![V::object(vec![
                    ("Timestamp", V::Time(1.5)),
                    ("Sum", V::Float(2.0)),
                ])]),
            ),
            ("NextToken", V::Null),
            ("Ext", V::Map(vec![("p99".into(), V::Float(0.25))])),
        ]);
        let mut xml = String::new();
        v.write_xml(&mut xml);
        assert_eq!(
            xml,
            "<Label>a&lt;b</Label><Datapoints><member><Timestamp>1970-01-01T00:00:01.500Z</Timestamp>\
             <Sum>2.0</Sum></member></Datapoints><Ext><entry><key>p99</key><value>0.25</value></entry></Ext>"
        );
        assert_eq!(
            v.to_json(),
            serde_json::json!({"Label": "a<b", "Datapoints": [{"Timestamp": 1.5, "Sum": 2.0}], "Ext": {"p99": 0.25}})
        );
        let back = V::from_cbor(&v.to_cbor()).unwrap();
        let input = Input::root(&back, false);
        assert_eq!(input.req_str("Label").unwrap(), "a<b");
        let points = input.list("Datapoints").unwrap();
        assert_eq!(
            points[0].object().unwrap().time_ms("Timestamp").unwrap(),
            Some(1500)
        );
    }
}
