//! Differential SQL: generated predicates and aggregates over the three tables must get the same
//! answer from Watchtrail's engine as from DuckDB over the same files (read by the Python
//! `deltalake` package). A disagreement is shrunk to a smallest predicate that still disagrees
//! and printed with the seed that replays the run (`WATCHTRAIL_DIFF_SEED`);
//! `WATCHTRAIL_DIFF_CASES` sets how many statements a run tries (2,000 by default).

use std::fmt::Write as _;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use watchtrail_e2e::{ServerOptions, TestServer, python};
use watchtrail_proto::v1::{
    Dimension, LogEvent, MetricSeries, PutLogEventsRequest, PutMetricDataRequest,
};
use watchtrail_query::engine::{Engine, EngineConfig};
use watchtrail_storage::deltalake::arrow;
use watchtrail_storage::deltalake::arrow::array::{Array, AsArray as _, RecordBatch};
use watchtrail_storage::deltalake::arrow::datatypes::{DataType, Float64Type, Int64Type};
use watchtrail_storage::store::Storage;
use watchtrail_test_util::Rng;

use super::chrono_now_ms;

/// How a column is written in SQL, per engine.
#[derive(Debug, Clone, Copy)]
enum Col {
    /// A plain column.
    Plain(&'static str),
    /// A value of a `map<string, string>` column.
    MapKey(&'static str, &'static str),
    /// A field of a struct column.
    Field(&'static str, &'static str),
    /// A scalar inside a JSON text column (Athena's function here, DuckDB's there).
    Json(&'static str, &'static str),
}

impl Col {
    fn sql(self, duck: bool) -> String {
        match self {
            Col::Plain(c) => c.to_string(),
            Col::MapKey(c, k) => format!("{c}['{k}']"),
            Col::Field(c, f) => format!("{c}.{f}"),
            Col::Json(c, k) if duck => format!("json_extract_string({c}, '$.{k}')"),
            Col::Json(c, k) => format!("json_extract_scalar({c}, '$.{k}')"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    Time,
}

#[derive(Debug, Clone)]
struct Column {
    col: Col,
    kind: Kind,
    /// Values found in the data (rendered as SQL literals), plus one that is not there.
    literals: Vec<String>,
}

#[derive(Debug)]
struct Table {
    name: &'static str,
    columns: Vec<Column>,
}

fn schema() -> Vec<Table> {
    use Col::*;
    use Kind::*;
    let c = |col, kind| Column {
        col,
        kind,
        literals: Vec::new(),
    };
    vec![
        Table {
            name: "metrics",
            columns: vec![
                c(Plain("namespace"), Str),
                c(Plain("metric_name"), Str),
                c(Plain("unit"), Str),
                c(MapKey("dimensions", "host"), Str),
                c(MapKey("dimensions", "az"), Str),
                c(Plain("value"), Float),
                c(Plain("sample_count"), Float),
                c(Plain("sum"), Float),
                c(Plain("storage_resolution"), Int),
                c(Plain("time"), Time),
            ],
        },
        Table {
            name: "logs",
            columns: vec![
                c(Plain("log_group"), Str),
                c(Plain("log_stream"), Str),
                c(Plain("message"), Str),
                c(Plain("time"), Time),
            ],
        },
        Table {
            name: "audit",
            columns: vec![
                c(Plain("eventname"), Str),
                c(Plain("eventsource"), Str),
                c(Plain("awsregion"), Str),
                c(Plain("sourceipaddress"), Str),
                c(Plain("errorcode"), Str),
                c(Plain("eventtype"), Str),
                c(Plain("readonly"), Bool),
                c(Plain("managementevent"), Bool),
                c(Field("useridentity", "type"), Str),
                c(Field("useridentity", "arn"), Str),
                c(Json("requestparameters", "bucketName"), Str),
                c(Plain("eventtime"), Time),
            ],
        },
    ]
}

/// A predicate as a tree, so that a disagreement can be shrunk.
#[derive(Debug, Clone)]
enum Pred {
    /// One test, written for Watchtrail and for DuckDB.
    Atom(String, String),
    Not(Box<Pred>),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    /// Parentheses around a predicate.
    Paren(Box<Pred>),
}

impl Pred {
    /// The text, with no parentheses but those the tree has: both engines must read the same
    /// text by the same precedence rules.
    fn sql(&self, duck: bool) -> String {
        match self {
            Pred::Atom(w, d) => if duck { d } else { w }.clone(),
            Pred::Not(p) => format!("NOT {}", p.sql(duck)),
            Pred::And(a, b) => format!("{} AND {}", a.sql(duck), b.sql(duck)),
            Pred::Or(a, b) => format!("{} OR {}", a.sql(duck), b.sql(duck)),
            Pred::Paren(p) => format!("({})", p.sql(duck)),
        }
    }

    /// Smaller predicates to try in its place.
    fn shrinks(&self) -> Vec<Pred> {
        let mut out = Vec::new();
        match self {
            Pred::Atom(..) => {}
            Pred::Not(p) | Pred::Paren(p) => {
                out.push((**p).clone());
                for s in p.shrinks() {
                    out.push(match self {
                        Pred::Not(_) => Pred::Not(Box::new(s)),
                        _ => Pred::Paren(Box::new(s)),
                    });
                }
            }
            Pred::And(a, b) | Pred::Or(a, b) => {
                out.push((**a).clone());
                out.push((**b).clone());
                let and = matches!(self, Pred::And(..));
                let join = |x: Pred, y: Pred| {
                    if and {
                        Pred::And(Box::new(x), Box::new(y))
                    } else {
                        Pred::Or(Box::new(x), Box::new(y))
                    }
                };
                for s in a.shrinks() {
                    out.push(join(s, (**b).clone()));
                }
                for s in b.shrinks() {
                    out.push(join((**a).clone(), s));
                }
            }
        }
        out
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

/// One test on one column, in both dialects.
fn atom(rng: &mut Rng, column: &Column) -> Pred {
    let w = column.col.sql(false);
    let d = column.col.sql(true);
    let lit = |rng: &mut Rng| pick(rng, &column.literals).clone();
    let (l1, l2, l3) = (lit(rng), lit(rng), lit(rng));
    let forms: Vec<String> = match column.kind {
        Kind::Str => {
            let raw = l1.trim_matches('\'');
            let prefix: String = raw.chars().take(3).collect::<String>().replace('%', "");
            vec![
                format!("{{c}} = {l1}"),
                format!("{{c}} <> {l1}"),
                format!("{{c}} < {l1}"),
                format!("{{c}} >= {l1}"),
                format!("{{c}} IN ({l1}, {l2}, {l3})"),
                format!("{{c}} NOT IN ({l1}, {l2})"),
                format!("{{c}} LIKE '{prefix}%'"),
                format!("{{c}} NOT LIKE '%{prefix}%'"),
                format!("{{c}} ILIKE '%{}%'", prefix.to_uppercase()),
                "{c} IS NULL".into(),
                "{c} IS NOT NULL".into(),
                format!("{{c}} IS DISTINCT FROM {l1}"),
                format!("{{c}} IS NOT DISTINCT FROM {l1}"),
                "{c} IS DISTINCT FROM NULL".into(),
                format!("{{c}} BETWEEN {l1} AND {l2}"),
                format!("length({{c}}) > {}", rng.below(20)),
                format!("lower({{c}}) = lower({l1})"),
                "coalesce({c}, 'none') = 'none'".into(),
                format!(
                    "CASE WHEN {{c}} = {l1} THEN 1 WHEN {{c}} IS NULL THEN 2 ELSE 3 END = {}",
                    1 + rng.below(3)
                ),
            ]
        }
        Kind::Int | Kind::Float => vec![
            format!("{{c}} = {l1}"),
            format!("{{c}} <> {l1}"),
            format!("{{c}} < {l1}"),
            format!("{{c}} >= {l1}"),
            format!("{{c}} BETWEEN {l1} AND {l2}"),
            format!("{{c}} IN ({l1}, {l2})"),
            format!("{{c}} + 1 > {l1}"),
            format!("{{c}} * 2 <= {l1}"),
            "{c} IS NULL".into(),
            "{c} IS NOT NULL".into(),
            format!("{{c}} IS DISTINCT FROM {l1}"),
            format!("coalesce({{c}}, 0) > {l1}"),
        ],
        Kind::Bool => vec![
            "{c}".into(),
            "NOT {c}".into(),
            "{c} IS TRUE".into(),
            "{c} IS NOT TRUE".into(),
            "{c} IS FALSE".into(),
            "{c} IS NOT FALSE".into(),
            "{c} = true".into(),
            "{c} IS DISTINCT FROM true".into(),
            "{c} IS NOT DISTINCT FROM false".into(),
            "{c} IS NULL".into(),
        ],
        Kind::Time => vec![
            format!("{{c}} >= {l1}"),
            format!("{{c}} < {l1}"),
            format!("{{c}} < {l1} + INTERVAL '{} minutes'", rng.below(90)),
            format!("{{c}} BETWEEN {l1} AND {l2}"),
            format!("{{c}} IS DISTINCT FROM {l1}"),
        ],
    };
    let form = pick(rng, &forms);
    Pred::Atom(form.replace("{c}", &w), form.replace("{c}", &d))
}

fn predicate(rng: &mut Rng, table: &Table, depth: usize) -> Pred {
    if depth == 0 || rng.below(3) == 0 {
        let column = pick(rng, &table.columns);
        return atom(rng, column);
    }
    let choice = rng.below(6);
    let mut sub = || Box::new(predicate(rng, table, depth - 1));
    match choice {
        0 => Pred::Not(sub()),
        1 | 2 => Pred::And(sub(), sub()),
        3 | 4 => Pred::Or(sub(), sub()),
        _ => Pred::Paren(sub()),
    }
}

/// A statement: its shape around a predicate, per dialect.
#[derive(Debug, Clone)]
struct Case {
    table: &'static str,
    select: (String, String),
    pred: Pred,
    tail: (String, String),
}

impl Case {
    fn sql(&self, pred: &Pred, duck: bool) -> String {
        let (select, tail) = if duck {
            (&self.select.1, &self.tail.1)
        } else {
            (&self.select.0, &self.tail.0)
        };
        if select.contains("{p}") {
            // The predicate is inside the projection (a CASE over every row).
            let p = pred.sql(duck);
            format!(
                "SELECT {} FROM {}{tail}",
                select.replace("{p}", &p),
                self.table
            )
        } else {
            format!(
                "SELECT {select} FROM {} WHERE {}{tail}",
                self.table,
                pred.sql(duck)
            )
        }
    }
}

fn case(rng: &mut Rng, tables: &[Table]) -> Case {
    let table = pick(rng, tables);
    let pred = predicate(rng, table, 3);
    let col = pick(rng, &table.columns);
    let (w, d) = (col.col.sql(false), col.col.sql(true));
    let none = (String::new(), String::new());
    let (select, tail) = match rng.below(6) {
        0 => (("count(*)".into(), "count(*)".into()), none),
        1 if col.kind != Kind::Time => (
            (
                format!("count({w}), count(DISTINCT {w})"),
                format!("count({d}), count(DISTINCT {d})"),
            ),
            none,
        ),
        2 if col.kind != Kind::Time && col.kind != Kind::Float => (
            (format!("{w}, count(*)"), format!("{d}, count(*)")),
            (
                " GROUP BY 1 ORDER BY 1 NULLS FIRST".into(),
                " GROUP BY 1 ORDER BY 1 NULLS FIRST".into(),
            ),
        ),
        3 => (
            (
                "sum(CASE WHEN {p} THEN 1 ELSE 0 END), count(*)".into(),
                "sum(CASE WHEN {p} THEN 1 ELSE 0 END), count(*)".into(),
            ),
            none,
        ),
        4 if matches!(col.kind, Kind::Int | Kind::Float) => (
            (
                format!("min({w}), max({w}), sum({w})"),
                format!("min({d}), max({d}), sum({d})"),
            ),
            none,
        ),
        5 if col.kind == Kind::Str => (
            (format!("min({w}), max({w})"), format!("min({d}), max({d})")),
            none,
        ),
        _ => (("count(*)".into(), "count(*)".into()), none),
    };
    Case {
        table: table.name,
        select,
        pred,
        tail,
    }
}

/// One cell of an answer, compared across engines.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Int(i128),
    Float(f64),
    Str(String),
    Bool(bool),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        let num = |c: &Cell| match c {
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(f) => Some(*f),
            _ => None,
        };
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Str(a), Cell::Str(b)) => a == b,
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            _ => match (num(self), num(other)) {
                (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                _ => false,
            },
        }
    }
}

type Answer = Result<Vec<Vec<Cell>>, String>;

fn cells_of(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    for b in batches {
        let columns: Vec<Vec<Cell>> = b.columns().iter().map(column_cells).collect();
        for i in 0..b.num_rows() {
            rows.push(columns.iter().map(|c| c[i].clone()).collect());
        }
    }
    rows
}

fn column_cells(a: &arrow::array::ArrayRef) -> Vec<Cell> {
    use arrow::compute::cast;
    let t = a.data_type();
    // Integers and times as i64, floats and decimals as f64, booleans, everything else as text.
    let casted;
    let value: Box<dyn Fn(usize) -> Cell + '_> =
        if t.is_integer() || matches!(t, DataType::Timestamp(..)) {
            casted = cast(a, &DataType::Int64).expect("cast to Int64");
            let c = casted.as_primitive::<Int64Type>();
            Box::new(move |i| Cell::Int(i128::from(c.value(i))))
        } else if t.is_floating() || matches!(t, DataType::Decimal128(..)) {
            casted = cast(a, &DataType::Float64).expect("cast to Float64");
            let c = casted.as_primitive::<Float64Type>();
            Box::new(move |i| Cell::Float(c.value(i)))
        } else if matches!(t, DataType::Boolean) {
            let c = a.as_boolean();
            Box::new(move |i| Cell::Bool(c.value(i)))
        } else {
            casted = cast(a, &DataType::Utf8).expect("cast to Utf8");
            let c = casted.as_string::<i32>();
            Box::new(move |i| Cell::Str(c.value(i).to_string()))
        };
    (0..a.len())
        .map(|i| if a.is_null(i) { Cell::Null } else { value(i) })
        .collect()
}

fn cell_of_json(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::Bool(b) => Cell::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cell::Int(i128::from(i)),
            None => match n.as_u64() {
                Some(u) => Cell::Int(i128::from(u)),
                None => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        Value::String(s) => Cell::Str(s.clone()),
        other => Cell::Str(other.to_string()),
    }
}

/// DuckDB in a Python process over the same files.
struct Duck {
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    _child: tokio::process::Child,
    next: u64,
}

impl Duck {
    async fn start(root: &str) -> Self {
        let mut child = Command::new(python())
            .arg(watchtrail_e2e::manifest_dir().join("python/duckdb_answers.py"))
            .args([root, "default"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the DuckDB helper");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = stdout.next_line().await.expect("read").expect("ready line");
        assert!(ready.contains("ready"), "{ready}");
        Self {
            stdin,
            stdout,
            _child: child,
            next: 0,
        }
    }

    async fn answer(&mut self, sql: &str) -> Answer {
        self.next += 1;
        let line = serde_json::json!({"id": self.next, "sql": sql}).to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.expect("write");
        let out = self
            .stdout
            .next_line()
            .await
            .expect("read")
            .expect("a line");
        let v: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["id"], self.next, "answers in order");
        if let Some(e) = v["error"].as_str() {
            return Err(e.to_string());
        }
        Ok(v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(cell_of_json)
                    .collect()
            })
            .collect())
    }
}

async fn ours(engine: &Engine, sql: &str) -> Answer {
    engine
        .collect("default", sql)
        .await
        .map(|r| cells_of(&r.batches))
        .map_err(|e| e.to_string())
}

/// Different rows, or rows from one and an error from the other (both refusing agrees).
fn disagree(a: &Answer, b: &Answer) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x != y,
        (Err(_), Err(_)) => false,
        _ => true,
    }
}

/// Fills each column's literals from the data (DuckDB's view of it), plus one value that is not
/// in the data.
async fn sample_literals(duck: &mut Duck, tables: &mut [Table]) {
    for t in tables.iter_mut() {
        for c in &mut t.columns {
            let expr = c.col.sql(true);
            let sql = match c.kind {
                Kind::Time => format!(
                    "SELECT DISTINCT epoch_us({expr}) FROM {} WHERE {expr} IS NOT NULL ORDER BY 1 LIMIT 8",
                    t.name
                ),
                _ => format!(
                    "SELECT DISTINCT {expr} FROM {} WHERE {expr} IS NOT NULL ORDER BY 1 LIMIT 8",
                    t.name
                ),
            };
            let rows = duck.answer(&sql).await.expect("sample literals");
            let mut lits: Vec<String> = rows
                .iter()
                .filter_map(|r| r.first())
                .map(|v| match (c.kind, v) {
                    (Kind::Time, Cell::Int(us)) => time_literal(*us as i64),
                    (_, Cell::Str(s)) => format!("'{}'", s.replace('\'', "''")),
                    (_, Cell::Int(i)) => i.to_string(),
                    (_, Cell::Float(f)) => format!("{f:?}"),
                    (_, Cell::Bool(b)) => b.to_string(),
                    _ => "NULL".into(),
                })
                .collect();
            lits.push(match c.kind {
                Kind::Str => "'not-in-the-data'".into(),
                Kind::Int | Kind::Float => "-1".into(),
                Kind::Bool => "true".into(),
                Kind::Time => time_literal(0),
            });
            c.literals = lits;
        }
    }
}

fn time_literal(us: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us).expect("a time");
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// Three tables with nulls, missing map keys, unicode and repeated values.
async fn load(server: &TestServer) {
    let mut client = server.client().await;
    let now = chrono_now_ms() - 3_600_000;
    let hosts = ["web-1", "web-2", "db-1", "Web-1"];
    for (s, host) in hosts.iter().enumerate() {
        let mut dimensions = vec![Dimension {
            name: "host".into(),
            value: (*host).into(),
        }];
        if s % 2 == 0 {
            dimensions.push(Dimension {
                name: "az".into(),
                value: format!("az-{s}"),
            });
        }
        client
            .put_metric_data(PutMetricDataRequest {
                idempotency_id: format!("diff-m{s}"),
                metric_data: vec![],
                series: vec![MetricSeries {
                    namespace: if s < 2 { "App" } else { "Db" }.into(),
                    metric_name: ["Latency", "Errors"][s % 2].into(),
                    dimensions,
                    unit: ["Milliseconds", "Count"][s % 2].into(),
                    storage_resolution: if s == 3 { 1 } else { 60 },
                    timestamps_ms: (0..120).map(|i| now + i * 30_000).collect(),
                    values: (0..120)
                        .map(|i| f64::from(i % 17) * 0.25 - f64::from(s as u32))
                        .collect(),
                    statistic_points: vec![],
                }],
            })
            .await
            .expect("put metrics");
    }
    for (g, group) in ["/app/web", "/app/db", "/app/Cache"].iter().enumerate() {
        client
            .put_log_events(PutLogEventsRequest {
                idempotency_id: format!("diff-l{g}"),
                log_group_name: (*group).into(),
                log_stream_name: format!("stream-{}", g % 2),
                log_events: (0..150)
                    .map(|i| LogEvent {
                        timestamp_ms: now + i * 20_000,
                        message: match i % 5 {
                            0 => format!("ERROR {i} failed"),
                            1 => format!("{{\"status\": {}, \"path\": \"/p{i}\"}}", 200 + i % 4),
                            2 => format!("warn: slow request {i}% done"),
                            3 => "x".into(),
                            _ => format!("info Ünïcode line {i}"),
                        },
                    })
                    .collect(),
                origin: None,
            })
            .await
            .expect("put logs");
    }
    super::import_fixtures(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_sql_answers_as_duckdb_does() {
    let seed = watchtrail_test_util::seed_from_env("WATCHTRAIL_DIFF_SEED");
    let cases: usize = std::env::var("WATCHTRAIL_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = ServerOptions::local(dir.path()).with_args(&["--no-self-audit"]);
    let mut server = TestServer::start(opts.clone()).await;
    load(&server).await;
    server.stop().await;

    let root = opts.store.trim_start_matches("file://").to_string();
    let storage = Storage::from_url(&opts.store).expect("store");
    let engine = Engine::for_store(&storage, EngineConfig::default());
    let mut duck = Duck::start(&root).await;
    let mut tables = schema();
    sample_literals(&mut duck, &mut tables).await;

    let mut rng = Rng::new(seed);
    let mut failures = String::new();
    let (mut answered, mut refused) = (0usize, 0usize);
    for n in 0..cases {
        let c = case(&mut rng, &tables);
        let (w, d) = (c.sql(&c.pred, false), c.sql(&c.pred, true));
        let (a, b) = (ours(&engine, &w).await, duck.answer(&d).await);
        if !disagree(&a, &b) {
            if a.is_ok() {
                answered += 1;
            } else {
                refused += 1;
            }
            continue;
        }
        // Shrink: keep the smallest predicate that still disagrees.
        let mut pred = c.pred.clone();
        let mut tries = 0;
        'shrink: while tries < 300 {
            for smaller in pred.shrinks() {
                tries += 1;
                let a = ours(&engine, &c.sql(&smaller, false)).await;
                let b = duck.answer(&c.sql(&smaller, true)).await;
                if disagree(&a, &b) {
                    pred = smaller;
                    continue 'shrink;
                }
            }
            break;
        }
        let (w, d) = (c.sql(&pred, false), c.sql(&pred, true));
        let (a, b) = (ours(&engine, &w).await, duck.answer(&d).await);
        let _ = writeln!(
            failures,
            "case {n} (seed {seed}):\n  watchtrail: {w}\n    -> {a:?}\n  duckdb:     {d}\n    -> {b:?}"
        );
        if failures.len() > 8_000 {
            break;
        }
    }
    println!("{answered} statements agreed, {refused} refused by both, of {cases} (seed {seed})");
    assert!(
        failures.is_empty(),
        "Watchtrail and DuckDB disagree (replay with WATCHTRAIL_DIFF_SEED={seed}):\n{failures}"
    );
    assert!(
        answered > cases * 9 / 10,
        "too few statements were answered by both: {answered} of {cases}"
    );
}
