//! CloudWatch Logs filter patterns: the syntax of metric filters, parsed once and matched against
//! log messages and CloudTrail records.
//!
//! Three forms, chosen by the first character (reference section 3.5):
//! - terms: `ERROR`, `?ERROR ?WARN`, `ERROR -ARGUMENTS`, `"exact phrase"`, `%regex%`;
//! - JSON: `{ ($.errorCode = "AccessDenied*") || ($.user.id > 5) && $.x NOT EXISTS }`;
//! - space-delimited: `[ip, user, ..., status = 4* || status = 5*, bytes]`.
//!
//! Matching is case-sensitive, as CloudWatch's is. A JSON selector that points at an object or an
//! array, or at nothing, never satisfies a comparison (only `NOT EXISTS` matches a missing field).

use std::fmt;

use regex::Regex;
use serde_json::Value;

/// The longest pattern CloudWatch accepts.
pub const MAX_PATTERN_LEN: usize = 1024;

/// At most this many `%regex%` terms in one pattern.
const MAX_REGEXES: usize = 2;

/// A pattern that does not parse: what is wrong and where (1-based character position).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// 1-based position of the offending character in the pattern.
    pub position: usize,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for PatternError {}

/// A parsed filter pattern.
#[derive(Debug, Clone)]
pub struct FilterPattern {
    source: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// The empty pattern, or `" "`: every event.
    All,
    Terms(Terms),
    Json(JsonExpr),
    Spaced(Spaced),
}

impl FilterPattern {
    /// Parses `pattern`.
    ///
    /// # Errors
    /// [`PatternError`] naming the position of the first problem.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.chars().count() > MAX_PATTERN_LEN {
            return Err(PatternError {
                position: MAX_PATTERN_LEN + 1,
                message: format!("a filter pattern is at most {MAX_PATTERN_LEN} characters"),
            });
        }
        let mut p = Parser::new(pattern);
        p.skip_ws();
        let kind = match p.peek() {
            None => Kind::All,
            Some('{') => Kind::Json(p.json_pattern()?),
            Some('[') => Kind::Spaced(p.spaced_pattern()?),
            Some(_) => p.term_pattern()?,
        };
        Ok(Self {
            source: pattern.to_string(),
            kind,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern is a JSON pattern (`{ ... }`), which reads events as JSON.
    pub fn is_json(&self) -> bool {
        matches!(self.kind, Kind::Json(_))
    }

    /// Whether `message` matches.
    pub fn matches(&self, message: &str) -> bool {
        match &self.kind {
            Kind::All => true,
            Kind::Terms(t) => t.matches(message),
            Kind::Json(e) => match serde_json::from_str::<Value>(message) {
                Ok(v) => e.eval(&v),
                Err(_) => false,
            },
            Kind::Spaced(s) => s.bind(message).is_some(),
        }
    }

    /// Whether an already parsed JSON document matches (JSON patterns; other kinds match its text).
    pub fn matches_value(&self, doc: &Value) -> bool {
        match &self.kind {
            Kind::Json(e) => e.eval(doc),
            _ => self.matches(&doc.to_string()),
        }
    }

    /// Whether an event matches, given its text and its JSON when it parsed as JSON (callers
    /// that run many patterns over one event parse it once).
    pub fn matches_parsed(&self, text: &str, doc: Option<&Value>) -> bool {
        match &self.kind {
            Kind::Json(e) => doc.is_some_and(|d| e.eval(d)),
            _ => self.matches(text),
        }
    }

    /// The value a metric transformation names in a matching `message`: `$.a.b` for JSON
    /// patterns, `$field` for space-delimited ones. `None` when the message does not match or the
    /// field is absent or not a scalar.
    pub fn extract(&self, message: &str, selector: &str) -> Option<String> {
        match &self.kind {
            Kind::Json(_) => {
                let doc: Value = serde_json::from_str(message).ok()?;
                self.extract_parsed(message, Some(&doc), selector)
            }
            _ => self.extract_parsed(message, None, selector),
        }
    }

    /// [`FilterPattern::extract`] of an event whose JSON is already parsed (`doc`).
    pub fn extract_parsed(
        &self,
        text: &str,
        doc: Option<&Value>,
        selector: &str,
    ) -> Option<String> {
        match &self.kind {
            Kind::Json(e) => {
                let doc = doc?;
                if !e.eval(doc) {
                    return None;
                }
                let path = parse_selector_text(selector)?;
                scalar_text(resolve(doc, &path)?)
            }
            Kind::Spaced(s) => {
                let name = selector.strip_prefix('$')?;
                let fields = s.bind(text)?;
                fields
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
            Kind::All | Kind::Terms(_) => None,
        }
    }
}

impl fmt::Display for FilterPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Whether `selector` is a well-formed metric-value or dimension selector (`$.a.b[0]` or
/// `$name`).
pub fn is_selector(selector: &str) -> bool {
    if selector.starts_with("$.") {
        parse_selector_text(selector).is_some()
    } else if let Some(name) = selector.strip_prefix('$') {
        !name.is_empty() && name.chars().all(is_field_char)
    } else {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Term patterns

#[derive(Debug, Clone)]
struct Terms {
    required: Vec<Term>,
    any: Vec<Term>,
    excluded: Vec<Term>,
}

#[derive(Debug, Clone)]
enum Term {
    Text(String),
    Regex(Regex),
}

impl Term {
    fn found_in(&self, message: &str) -> bool {
        match self {
            Term::Text(t) => message.contains(t.as_str()),
            Term::Regex(r) => r.is_match(message),
        }
    }
}

impl Terms {
    fn matches(&self, message: &str) -> bool {
        self.required.iter().all(|t| t.found_in(message))
            && !self.excluded.iter().any(|t| t.found_in(message))
            && (self.any.is_empty() || self.any.iter().any(|t| t.found_in(message)))
    }
}

// ---------------------------------------------------------------------------------------------
// JSON patterns

#[derive(Debug, Clone)]
enum JsonExpr {
    Or(Vec<JsonExpr>),
    And(Vec<JsonExpr>),
    Test(Selector, Test),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

type Selector = Vec<Step>;

#[derive(Debug, Clone)]
enum Test {
    Compare(Op, Operand),
    IsNull,
    IsTrue,
    IsFalse,
    NotExists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Operand {
    /// A string, possibly with `*` wildcards. `bare` when written without quotes.
    Text(Glob),
    /// A number literal (also kept as text for comparison with string fields).
    Number(f64, String),
}

impl JsonExpr {
    fn eval(&self, doc: &Value) -> bool {
        match self {
            JsonExpr::Or(xs) => xs.iter().any(|x| x.eval(doc)),
            JsonExpr::And(xs) => xs.iter().all(|x| x.eval(doc)),
            JsonExpr::Test(sel, test) => {
                let found = resolve(doc, sel);
                match test {
                    Test::NotExists => found.is_none(),
                    Test::IsNull => matches!(found, Some(Value::Null)),
                    Test::IsTrue => matches!(found, Some(Value::Bool(true))),
                    Test::IsFalse => matches!(found, Some(Value::Bool(false))),
                    Test::Compare(op, operand) => match found {
                        Some(v) => compare_value(v, *op, operand),
                        None => false,
                    },
                }
            }
        }
    }
}

fn resolve<'a>(doc: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = doc;
    for step in path {
        cur = match (step, cur) {
            (Step::Key(k), Value::Object(m)) => m.get(k)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Object(_) | Value::Array(_) => None,
    }
}

fn compare_value(v: &Value, op: Op, operand: &Operand) -> bool {
    match v {
        Value::Object(_) | Value::Array(_) => false,
        Value::Number(n) => match operand {
            Operand::Number(x, _) => n.as_f64().is_some_and(|f| compare_num(f, op, *x)),
            Operand::Text(g) => compare_text(&n.to_string(), op, g),
        },
        Value::String(s) => match operand {
            Operand::Text(g) => compare_text(s, op, g),
            Operand::Number(x, text) => compare_text_number(s, op, *x, text),
        },
        Value::Bool(b) => match operand {
            Operand::Text(g) => compare_text(if *b { "true" } else { "false" }, op, g),
            Operand::Number(..) => false,
        },
        // A present value that equals no string and no number: only the bare wildcard (the
        // field is present) is equal to it.
        Value::Null => {
            let equal = matches!(operand, Operand::Text(g) if g.is_any());
            match op {
                Op::Eq => equal,
                Op::Ne => !equal,
                _ => false,
            }
        }
    }
}

/// Text against a number literal: equal when the text is the literal or parses to its value;
/// ordered comparisons need text that parses as a number.
fn compare_text_number(s: &str, op: Op, x: f64, literal: &str) -> bool {
    let equal = || s == literal || s.parse::<f64>().is_ok_and(|f| f == x);
    match op {
        Op::Eq => equal(),
        Op::Ne => !equal(),
        _ => s.parse::<f64>().is_ok_and(|f| compare_num(f, op, x)),
    }
}

fn compare_num(a: f64, op: Op, b: f64) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
    }
}

fn compare_text(s: &str, op: Op, g: &Glob) -> bool {
    match op {
        Op::Eq => g.matches(s),
        Op::Ne => !g.matches(s),
        // Refused at parse time; a text operand only takes = and !=.
        _ => false,
    }
}

/// A string with `*` wildcards.
#[derive(Debug, Clone)]
struct Glob {
    parts: Vec<String>,
}

impl Glob {
    fn new(text: &str) -> Self {
        Self {
            parts: text.split('*').map(str::to_string).collect(),
        }
    }

    /// Whether this is `*` alone, which any value matches.
    fn is_any(&self) -> bool {
        self.parts.len() > 1 && self.parts.iter().all(String::is_empty)
    }

    fn matches(&self, s: &str) -> bool {
        let [first, middle @ .., last] = self.parts.as_slice() else {
            return self.parts.first().is_some_and(|p| p == s);
        };
        if s.len() < first.len() + last.len() || !s.starts_with(first.as_str()) {
            return false;
        }
        let Some(mut rest) = s.get(first.len()..s.len() - last.len()) else {
            return false;
        };
        if !s.ends_with(last.as_str()) {
            return false;
        }
        for part in middle {
            match rest.find(part.as_str()) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Space-delimited patterns

#[derive(Debug, Clone)]
struct Spaced {
    fields: Vec<SpacedField>,
}

#[derive(Debug, Clone)]
enum SpacedField {
    /// `...`: any number of fields.
    Ellipsis,
    /// A named field, with a condition on its value (`None`: anything).
    Named(String, Option<FieldCond>),
}

#[derive(Debug, Clone)]
enum FieldCond {
    Or(Vec<FieldCond>),
    And(Vec<FieldCond>),
    Compare(Op, Operand),
}

impl FieldCond {
    fn eval(&self, value: &str) -> bool {
        match self {
            FieldCond::Or(xs) => xs.iter().any(|x| x.eval(value)),
            FieldCond::And(xs) => xs.iter().all(|x| x.eval(value)),
            FieldCond::Compare(op, operand) => match operand {
                Operand::Text(g) => compare_text(value, *op, g),
                Operand::Number(x, text) => compare_text_number(value, *op, *x, text),
            },
        }
    }
}

impl Spaced {
    /// Binds the pattern's fields to the line's fields; `None` when it does not match.
    fn bind<'a>(&'a self, line: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
        let tokens = split_fields(line);
        let mut out = Vec::new();
        if self.bind_from(&self.fields, &tokens, line, &mut out) {
            Some(out)
        } else {
            None
        }
    }

    fn bind_from<'a>(
        &'a self,
        fields: &'a [SpacedField],
        tokens: &[(usize, &'a str)],
        line: &'a str,
        out: &mut Vec<(&'a str, &'a str)>,
    ) -> bool {
        let Some((field, rest)) = fields.split_first() else {
            return tokens.is_empty();
        };
        match field {
            SpacedField::Ellipsis => {
                // Greedy: the fields after `...` are the line's last ones.
                for skip in (0..=tokens.len()).rev() {
                    let mark = out.len();
                    if self.bind_from(rest, &tokens[skip..], line, out) {
                        return true;
                    }
                    out.truncate(mark);
                }
                false
            }
            SpacedField::Named(name, cond) => {
                let Some(&(start, token)) = tokens.first() else {
                    return false;
                };
                // The last field takes the rest of the line when the line has more fields.
                let value = if rest.is_empty() && tokens.len() > 1 {
                    line[start..].trim_end()
                } else {
                    token
                };
                if let Some(c) = cond
                    && !c.eval(value)
                {
                    return false;
                }
                out.push((name.as_str(), value));
                let remaining = if rest.is_empty() {
                    &[][..]
                } else {
                    &tokens[1..]
                };
                if self.bind_from(rest, remaining, line, out) {
                    true
                } else {
                    out.pop();
                    false
                }
            }
        }
    }
}

/// Splits a line into fields at spaces; text in `[...]` or `"..."` is one field, without its
/// brackets or quotes. Each field comes with its byte offset in the line.
fn split_fields(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' => i += 1,
            open @ (b'[' | b'"') => {
                let close = if open == b'[' { b']' } else { b'"' };
                let start = i + 1;
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == close)
                    .map_or(bytes.len(), |p| start + p);
                out.push((i, &line[start..end]));
                i = end + 1;
            }
            _ => {
                let start = i;
                while i < bytes.len() && bytes[i] != b' ' && bytes[i] != b'\t' {
                    i += 1;
                }
                out.push((start, &line[start..i]));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The parser

struct Parser {
    chars: Vec<char>,
    pos: usize,
    regexes: usize,
}

type PResult<T> = Result<T, PatternError>;

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_field_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn is_key_char(c: char) -> bool {
    !(c.is_whitespace() || ".[]=!<>()&|{}\"".contains(c))
}

impl Parser {
    fn new(src: &str) -> Self {
        Self {
            chars: src.chars().collect(),
            pos: 0,
            regexes: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> PResult<T> {
        Err(self.error_at(self.pos, message))
    }

    fn error_at(&self, pos: usize, message: impl Into<String>) -> PatternError {
        PatternError {
            position: pos + 1,
            message: message.into(),
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .take(n)
            .copied()
            .eq(s.chars())
        {
            self.pos += n;
            true
        } else {
            false
        }
    }

    /// An upper-case keyword followed by a non-word character.
    fn eat_keyword(&mut self, kw: &str) -> bool {
        let save = self.pos;
        if self.eat(kw) && !self.peek().is_some_and(is_word_char) {
            true
        } else {
            self.pos = save;
            false
        }
    }

    fn quoted(&mut self) -> PResult<String> {
        let start = self.pos;
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error_at(start, "unterminated quoted string")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') if self.peek_at(1).is_some() => {
                    out.push(self.peek_at(1).unwrap_or('\\'));
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    // -- terms ----------------------------------------------------------------------------

    fn term_pattern(&mut self) -> PResult<Kind> {
        let mut terms = Terms {
            required: Vec::new(),
            any: Vec::new(),
            excluded: Vec::new(),
        };
        let mut match_all = false;
        loop {
            self.skip_ws();
            let Some(c) = self.peek() else { break };
            let target = match c {
                '?' => {
                    self.pos += 1;
                    &mut terms.any
                }
                '-' if self.peek_at(1).is_some_and(|c| !c.is_whitespace()) => {
                    self.pos += 1;
                    &mut terms.excluded
                }
                _ => &mut terms.required,
            };
            let start = self.pos;
            let term = match self.peek() {
                Some('"') => {
                    let text = self.quoted()?;
                    if text.trim().is_empty() {
                        match_all = true;
                        continue;
                    }
                    Term::Text(text)
                }
                Some('%') => {
                    self.regexes += 1;
                    if self.regexes > MAX_REGEXES {
                        return self.err(format!(
                            "at most {MAX_REGEXES} regular expressions per pattern"
                        ));
                    }
                    Term::Regex(self.regex()?)
                }
                Some(c) if c.is_whitespace() => {
                    return Err(self.error_at(start, "a term is missing after `?` or `-`"));
                }
                None => return Err(self.error_at(start, "a term is missing after `?` or `-`")),
                Some(_) => {
                    let mut text = String::new();
                    while let Some(c) = self.peek().filter(|c| !c.is_whitespace()) {
                        if c == '"' {
                            return self.err("a quote inside a term; quote the whole term");
                        }
                        text.push(c);
                        self.pos += 1;
                    }
                    Term::Text(text)
                }
            };
            target.push(term);
        }
        let empty = terms.required.is_empty() && terms.any.is_empty() && terms.excluded.is_empty();
        if match_all && empty {
            Ok(Kind::All)
        } else {
            Ok(Kind::Terms(terms))
        }
    }

    fn regex(&mut self) -> PResult<Regex> {
        let start = self.pos;
        self.pos += 1; // the opening %
        let body_start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.error_at(start, "unterminated regular expression")),
                Some('%') => break,
                Some(c) if c.is_ascii_alphanumeric() || "_#=@/;,-^$?[]{}|\\*+. ".contains(c) => {
                    self.pos += 1;
                }
                Some(c) => {
                    return self.err(format!("`{c}` is not allowed in a regular expression"));
                }
            }
        }
        let body: String = self.chars[body_start..self.pos].iter().collect();
        self.pos += 1; // the closing %
        Regex::new(&body)
            .map_err(|e| self.error_at(body_start, format!("bad regular expression: {e}")))
    }

    // -- JSON -----------------------------------------------------------------------------

    fn json_pattern(&mut self) -> PResult<JsonExpr> {
        self.pos += 1; // {
        let expr = self.json_or()?;
        self.skip_ws();
        match self.peek() {
            Some('}') => self.pos += 1,
            Some(c) => return self.err(format!("expected `&&`, `||` or `}}`, found `{c}`")),
            None => return self.err("expected `}` to close the JSON pattern"),
        }
        self.skip_ws();
        if let Some(c) = self.peek() {
            return self.err(format!("unexpected `{c}` after the closing `}}`"));
        }
        Ok(expr)
    }

    /// Items separated by `sep` (`&&` or `||`); one item stays itself, more are combined.
    fn separated<T>(
        &mut self,
        sep: &str,
        mut item: impl FnMut(&mut Self, bool) -> PResult<T>,
        combine: fn(Vec<T>) -> T,
    ) -> PResult<T> {
        let mut xs = vec![item(self, true)?];
        loop {
            self.skip_ws();
            if !self.eat(sep) {
                break;
            }
            xs.push(item(self, false)?);
        }
        Ok(if xs.len() == 1 {
            xs.remove(0)
        } else {
            combine(xs)
        })
    }

    fn json_or(&mut self) -> PResult<JsonExpr> {
        self.separated("||", |p, _| p.json_and(), JsonExpr::Or)
    }

    fn json_and(&mut self) -> PResult<JsonExpr> {
        self.separated("&&", |p, _| p.json_unary(), JsonExpr::And)
    }

    fn json_unary(&mut self) -> PResult<JsonExpr> {
        self.skip_ws();
        match self.peek() {
            Some('(') => {
                let open = self.pos;
                self.pos += 1;
                let inner = self.json_or()?;
                self.skip_ws();
                if self.peek() == Some(')') {
                    self.pos += 1;
                    Ok(inner)
                } else {
                    Err(self.error_at(open, "this `(` is never closed"))
                }
            }
            Some('$') => {
                let sel = self.selector()?;
                self.skip_ws();
                let test = self.json_test()?;
                Ok(JsonExpr::Test(sel, test))
            }
            Some(c) => self.err(format!(
                "expected a selector such as `$.eventName`, found `{c}`"
            )),
            None => self.err("expected a selector such as `$.eventName`"),
        }
    }

    fn selector(&mut self) -> PResult<Selector> {
        let start = self.pos;
        self.pos += 1; // $
        let mut path = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    let key_start = self.pos;
                    while self.peek().is_some_and(is_key_char) {
                        self.pos += 1;
                    }
                    if self.pos == key_start {
                        return self.err("expected a field name after `.`");
                    }
                    path.push(Step::Key(self.chars[key_start..self.pos].iter().collect()));
                }
                Some('[') => {
                    self.pos += 1;
                    let num_start = self.pos;
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    let digits: String = self.chars[num_start..self.pos].iter().collect();
                    let Ok(i) = digits.parse::<usize>() else {
                        return self.err("expected an array index such as `[0]`");
                    };
                    if self.peek() != Some(']') {
                        return self.err("expected `]` after the array index");
                    }
                    self.pos += 1;
                    path.push(Step::Index(i));
                }
                _ => break,
            }
        }
        if path.is_empty() {
            return Err(self.error_at(start, "a selector starts with `$.`, as in `$.eventName`"));
        }
        Ok(path)
    }

    fn json_test(&mut self) -> PResult<Test> {
        if self.eat_keyword("IS") {
            self.skip_ws();
            return if self.eat_keyword("NULL") {
                Ok(Test::IsNull)
            } else if self.eat_keyword("TRUE") {
                Ok(Test::IsTrue)
            } else if self.eat_keyword("FALSE") {
                Ok(Test::IsFalse)
            } else {
                self.err("expected NULL, TRUE or FALSE after IS (IS NOT is not supported)")
            };
        }
        if self.eat_keyword("NOT") {
            self.skip_ws();
            return if self.eat_keyword("EXISTS") {
                Ok(Test::NotExists)
            } else {
                self.err("expected EXISTS after NOT")
            };
        }
        if self.eat_keyword("EXISTS") {
            return Err(self.error_at(
                self.pos - "EXISTS".len(),
                "EXISTS is not supported; use `= \"*\"` to test that a field is present",
            ));
        }
        let op = self.op()?;
        self.skip_ws();
        let operand = self.operand(op, &['}', ')'])?;
        Ok(Test::Compare(op, operand))
    }

    fn op(&mut self) -> PResult<Op> {
        for (text, op) in [
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if self.eat(text) {
                return Ok(op);
            }
        }
        match self.peek() {
            Some(c) => self.err(format!(
                "expected a comparison (= != < > <= >=), IS or NOT EXISTS, found `{c}`"
            )),
            None => self.err("expected a comparison (= != < > <= >=), IS or NOT EXISTS"),
        }
    }

    /// A comparison's right side: a quoted string, a number or a bare word (which may carry
    /// `*` and dots, as in `kms.amazonaws.com` or `123.123.*`).
    fn operand(&mut self, op: Op, stops: &[char]) -> PResult<Operand> {
        let start = self.pos;
        let (text, quoted) = match self.peek() {
            Some('"') => (self.quoted()?, true),
            Some(_) => {
                let mut text = String::new();
                while let Some(c) = self.peek() {
                    if c.is_whitespace()
                        || stops.contains(&c)
                        || c == '('
                        || (c == '&' && self.peek_at(1) == Some('&'))
                        || (c == '|' && self.peek_at(1) == Some('|'))
                    {
                        break;
                    }
                    text.push(c);
                    self.pos += 1;
                }
                if text.is_empty() {
                    return self.err("expected a value after the comparison");
                }
                (text, false)
            }
            None => return self.err("expected a value after the comparison"),
        };
        let number = if quoted {
            None
        } else {
            text.parse::<f64>().ok().filter(|f| f.is_finite())
        };
        match (number, op) {
            (Some(f), _) => Ok(Operand::Number(f, text)),
            (None, Op::Eq | Op::Ne) => Ok(Operand::Text(Glob::new(&text))),
            (None, _) => Err(self.error_at(
                start,
                format!("`{text}` is not a number; < > <= >= compare numbers only"),
            )),
        }
    }

    // -- space-delimited --------------------------------------------------------------------

    fn spaced_pattern(&mut self) -> PResult<Spaced> {
        self.pos += 1; // [
        let mut fields = Vec::new();
        loop {
            self.skip_ws();
            if self.eat("...") {
                fields.push(SpacedField::Ellipsis);
            } else {
                let start = self.pos;
                while self.peek().is_some_and(is_field_char) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return match self.peek() {
                        Some(c) => self.err(format!("expected a field name, found `{c}`")),
                        None => self.err("expected a field name"),
                    };
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                self.skip_ws();
                let cond = if matches!(self.peek(), Some(',' | ']')) {
                    None
                } else {
                    Some(self.field_or(&name)?)
                };
                if fields
                    .iter()
                    .any(|f| matches!(f, SpacedField::Named(n, _) if *n == name))
                {
                    return Err(self.error_at(start, format!("field `{name}` is named twice")));
                }
                fields.push(SpacedField::Named(name, cond));
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    break;
                }
                Some(c) => return self.err(format!("expected `,` or `]`, found `{c}`")),
                None => return self.err("expected `]` to close the pattern"),
            }
        }
        self.skip_ws();
        if let Some(c) = self.peek() {
            return self.err(format!("unexpected `{c}` after the closing `]`"));
        }
        Ok(Spaced { fields })
    }

    fn field_or(&mut self, name: &str) -> PResult<FieldCond> {
        self.separated("||", |p, first| p.field_and(name, first), FieldCond::Or)
    }

    fn field_and(&mut self, name: &str, first: bool) -> PResult<FieldCond> {
        self.separated(
            "&&",
            |p, i_first| p.field_compare(name, first && i_first),
            FieldCond::And,
        )
    }

    /// One comparison of a field. After `&&`/`||` the field is named again (`status = 404 ||
    /// status = 410`); the first comparison follows the name directly.
    fn field_compare(&mut self, name: &str, first: bool) -> PResult<FieldCond> {
        self.skip_ws();
        if !first {
            let start = self.pos;
            if !self.eat(name) || self.peek().is_some_and(is_field_char) {
                return Err(self.error_at(
                    start,
                    format!("expected `{name}`: each condition names its field again"),
                ));
            }
            self.skip_ws();
        }
        let op = self.op()?;
        self.skip_ws();
        let operand = self.operand(op, &[',', ']'])?;
        Ok(FieldCond::Compare(op, operand))
    }
}

/// Parses the text of a `$.a.b[0]` selector (used for metric values and dimensions).
fn parse_selector_text(selector: &str) -> Option<Selector> {
    let mut p = Parser::new(selector);
    if p.peek() != Some('$') {
        return None;
    }
    let path = p.selector().ok()?;
    (p.pos == p.chars.len()).then_some(path)
}

#[cfg(test)]
mod tests;
