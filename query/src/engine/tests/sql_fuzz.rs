//! SQL text fuzzing: a grammar-aware generator of statements over the tables' own schemas
//! (sqlsmith's idea at a small scale): projections, filters, aggregations, joins, set
//! operations, subqueries and CTEs, with functions that take caller-chosen sizes and chains past
//! the depth bound mixed in. Every statement must answer or fail with an error; the engine must
//! answer a plain query afterwards. `WATCHTRAIL_SQL_FUZZ_CASES` sets the count (default 300),
//! `WATCHTRAIL_FUZZ_SEED` replays a run (its seed is printed).

use arrow::datatypes::DataType;

use super::*;
use crate::error::ErrorClass;
use watchtrail_test_util::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Num,
    Str,
    Bool,
    Time,
}

struct Gen {
    rng: Rng,
    /// The columns of the table in scope, by type.
    columns: Vec<(String, Ty)>,
}

impl Gen {
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.rng.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.rng.below(100) < percent
    }

    fn column(&mut self, ty: Ty) -> Option<String> {
        let of: Vec<&String> = self
            .columns
            .iter()
            .filter(|(_, t)| *t == ty)
            .map(|(n, _)| n)
            .collect();
        (!of.is_empty()).then(|| of[self.rng.below(of.len())].clone())
    }

    /// A number a caller might choose: small, edge, or enormous.
    fn count(&mut self) -> String {
        self.pick(&[
            "0",
            "1",
            "3",
            "-1",
            "1000",
            "100000000",
            "100000000000",
            "9223372036854775807",
        ])
        .to_string()
    }

    fn expr(&mut self, ty: Ty, depth: usize) -> String {
        if depth == 0 || self.chance(25) {
            return self.leaf(ty);
        }
        let d = depth - 1;
        match ty {
            Ty::Num => match self.rng.below(12) {
                0 => format!("({} + {})", self.expr(Ty::Num, d), self.expr(Ty::Num, d)),
                1 => format!("({} * {})", self.expr(Ty::Num, d), self.expr(Ty::Num, d)),
                2 => format!("({} / {})", self.expr(Ty::Num, d), self.expr(Ty::Num, d)),
                3 => format!("abs({})", self.expr(Ty::Num, d)),
                4 => format!("length({})", self.expr(Ty::Str, d)),
                5 => format!(
                    "levenshtein({}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d)
                ),
                6 => format!("cardinality(range({}, {}))", self.count(), self.count()),
                7 => format!(
                    "cardinality(array_repeat({}, {}))",
                    self.expr(Ty::Num, d),
                    self.count()
                ),
                8 => format!(
                    "CASE WHEN {} THEN {} ELSE {} END",
                    self.expr(Ty::Bool, d),
                    self.expr(Ty::Num, d),
                    self.expr(Ty::Num, d)
                ),
                9 => format!("TRY_CAST({} AS BIGINT)", self.expr(Ty::Str, d)),
                10 => format!("power({}, {})", self.expr(Ty::Num, d), self.count()),
                _ => format!("({} % {})", self.expr(Ty::Num, d), self.expr(Ty::Num, d)),
            },
            Ty::Str => match self.rng.below(11) {
                0 => format!("repeat({}, {})", self.expr(Ty::Str, d), self.count()),
                1 => format!("lpad({}, {}, 'xy')", self.expr(Ty::Str, d), self.count()),
                2 => format!("rpad({}, {})", self.expr(Ty::Str, d), self.count()),
                3 => format!(
                    "concat({}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d)
                ),
                4 => format!("({} || {})", self.expr(Ty::Str, d), self.expr(Ty::Str, d)),
                5 => format!(
                    "replace({}, {}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d)
                ),
                6 => format!(
                    "regexp_replace({}, '(a|b)+', {}, 'g')",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d)
                ),
                7 => format!("upper({})", self.expr(Ty::Str, d)),
                8 => format!(
                    "substr({}, {}, {})",
                    self.expr(Ty::Str, d),
                    self.count(),
                    self.count()
                ),
                9 => format!("CAST({} AS VARCHAR)", self.expr(Ty::Num, d)),
                _ => format!("arrow_cast({}, 'LargeUtf8')", self.expr(Ty::Str, d)),
            },
            Ty::Bool => match self.rng.below(10) {
                0 => format!("({} < {})", self.expr(Ty::Num, d), self.expr(Ty::Num, d)),
                1 => format!("({} = {})", self.expr(Ty::Str, d), self.expr(Ty::Str, d)),
                2 => format!("({} LIKE '%a_%')", self.expr(Ty::Str, d)),
                3 => format!(
                    "({} AND {})",
                    self.expr(Ty::Bool, d),
                    self.expr(Ty::Bool, d)
                ),
                4 => format!("({} OR {})", self.expr(Ty::Bool, d), self.expr(Ty::Bool, d)),
                5 => format!("(NOT {})", self.expr(Ty::Bool, d)),
                6 => format!("({} IS NULL)", self.expr(Ty::Str, d)),
                7 => format!(
                    "({} IS DISTINCT FROM {})",
                    self.expr(Ty::Num, d),
                    self.expr(Ty::Num, d)
                ),
                8 => format!(
                    "({} BETWEEN {} AND {})",
                    self.expr(Ty::Num, d),
                    self.expr(Ty::Num, d),
                    self.expr(Ty::Num, d)
                ),
                _ => format!("filter_pattern_match('ERROR', {})", self.expr(Ty::Str, d)),
            },
            Ty::Time => match self.rng.below(4) {
                0 => format!("date_trunc('hour', {})", self.expr(Ty::Time, d)),
                1 => format!("date_bin(INTERVAL '5 minutes', {})", self.expr(Ty::Time, d)),
                2 => format!("({} + INTERVAL '1 day')", self.expr(Ty::Time, d)),
                _ => "now()".to_string(),
            },
        }
    }

    fn leaf(&mut self, ty: Ty) -> String {
        if self.chance(60)
            && let Some(c) = self.column(ty)
        {
            return c;
        }
        match ty {
            Ty::Num => self.count(),
            Ty::Str => self
                .pick(&["'a'", "''", "'ERROR disk'", "NULL", "'ab%_'"])
                .to_string(),
            Ty::Bool => self.pick(&["true", "false", "NULL"]).to_string(),
            Ty::Time => "TIMESTAMP '2023-11-14 22:00:00'".to_string(),
        }
    }

    fn any_ty(&mut self) -> Ty {
        [Ty::Num, Ty::Str, Ty::Bool, Ty::Time][self.rng.below(4)]
    }

    /// A chain past (or near) the depth bound.
    fn chain(&mut self) -> String {
        let n = [10, 499, 500, 501, 3_000][self.rng.below(5)];
        let (term, op) =
            [("1", "+"), ("'a'", "||"), ("true", " AND "), ("value", "*")][self.rng.below(4)];
        vec![term; n].join(op)
    }

    fn select(&mut self, table: &str, depth: usize) -> String {
        let where_ = if self.chance(60) {
            format!(" WHERE {}", self.expr(Ty::Bool, depth))
        } else {
            String::new()
        };
        let limit = self.pick(&["", " LIMIT 0", " LIMIT 5", " LIMIT 100000000"]);
        match self.rng.below(6) {
            0 => {
                let g = self.expr(Ty::Str, 1);
                let agg = self.pick(&["count(*)", "sum(1)", "max(0)", "approx_distinct(1)"]);
                let agg2 = format!(
                    "{}({})",
                    self.pick(&["min", "max", "count", "string_agg"]),
                    if self.chance(50) {
                        self.expr(Ty::Str, depth)
                    } else {
                        self.expr(Ty::Num, depth)
                    }
                );
                let agg2 = if agg2.starts_with("string_agg(") {
                    format!("{}, ',')", agg2.trim_end_matches(')'))
                } else {
                    agg2
                };
                format!(
                    "SELECT {g} AS g, {agg}, {agg2} FROM {table}{where_} GROUP BY 1 ORDER BY 1{limit}"
                )
            }
            1 => format!("SELECT {} AS c FROM {table}{where_}{limit}", self.chain()),
            2 => {
                let other = self.pick(&["metrics", "logs", "audit"]);
                format!("SELECT count(*) FROM {table} a CROSS JOIN {other} b{limit}")
            }
            3 => format!(
                "SELECT c FROM (SELECT {} AS c FROM {table}{where_}) s UNION ALL SELECT {} AS c{limit}",
                self.expr(Ty::Num, depth),
                self.expr(Ty::Num, depth)
            ),
            4 => format!(
                "WITH w AS (SELECT {} AS c FROM {table}{where_}) SELECT count(*), max(c) FROM w",
                self.expr(Ty::Str, depth)
            ),
            _ => {
                let n = 1 + self.rng.below(4);
                let cols: Vec<String> = (0..n)
                    .map(|i| {
                        let ty = self.any_ty();
                        format!("{} AS c{i}", self.expr(ty, depth))
                    })
                    .collect();
                format!("SELECT {} FROM {table}{where_}{limit}", cols.join(", "))
            }
        }
    }
}

fn ty_of(t: &DataType) -> Option<Ty> {
    match t {
        DataType::Float64 | DataType::Int32 | DataType::Int64 => Some(Ty::Num),
        DataType::Utf8 => Some(Ty::Str),
        DataType::Boolean => Some(Ty::Bool),
        DataType::Timestamp(..) => Some(Ty::Time),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_statements_answer_or_fail_and_the_engine_stays_up() {
    let storage = storage_with_hours(1).await;
    storage
        .append_batch(
            "t1",
            TableKind::Logs,
            &logs_batch(&["ERROR disk full", "ok", "a"]),
        )
        .await
        .unwrap();
    let engine = limited_engine(&storage, 64 << 20, Duration::from_secs(5));
    let cases: usize = std::env::var("WATCHTRAIL_SQL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng::from_env();
    let (mut answered, mut refused, mut internal) = (0, 0, Vec::new());
    for _ in 0..cases {
        let kind = [TableKind::Metrics, TableKind::Logs, TableKind::Audit][rng.below(3)];
        let columns = kind
            .schema()
            .fields()
            .iter()
            .filter_map(|f| ty_of(f.data_type()).map(|t| (f.name().clone(), t)))
            .collect();
        let mut g = Gen { rng, columns };
        let depth = 1 + g.rng.below(4);
        let sql = g.select(kind.name(), depth);
        rng = g.rng;
        match engine.collect("t1", &sql).await {
            Ok(_) => answered += 1,
            Err(e) if e.class() == ErrorClass::Internal => {
                internal.push(format!("{sql}\n  -> {e}"))
            }
            Err(_) => refused += 1,
        }
    }
    println!(
        "{answered} answered, {refused} refused, {} internal errors",
        internal.len()
    );
    for i in internal.iter().take(5) {
        println!("internal: {i}");
    }
    // The generator makes statements that mostly mean something, or this test proves little.
    assert!(answered * 4 >= cases, "only {answered} of {cases} answered");
    // And the engine answers on.
    let r = engine
        .collect("t1", "SELECT count(*) FROM metrics")
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 1);
}
