//! Bounds on the shape of a statement, checked on the parsed text before anything plans it.
//!
//! Parsing, planning, optimizing and evaluating a query all recurse over its expression tree.
//! The SQL parser bounds how deep *it* recurses (nested parentheses, subqueries), but a
//! left-associative chain (`1+1+...+1`, `a OR b OR ...`, `x UNION y UNION ...`) parses in a loop
//! into a tree as deep as the chain is long, and every later stage walks that tree recursively.
//! So the parsed statement is measured here, and one deeper than [`MAX_EXPR_DEPTH`], larger
//! than [`MAX_EXPR_NODES`], or with more than [`MAX_SET_OPERATION_DEPTH`] chained set operations
//! or [`MAX_RELATIONS`] tables is refused with an error naming the limit. Query threads get a
//! stack of [`QUERY_THREAD_STACK_BYTES`], which a statement at every bound fits (tested in
//! `engine::tests::limits`).
//!
//! The walk itself never goes deeper than the bound it checks: the visitor stops at the first
//! expression past [`MAX_EXPR_DEPTH`], and set operations are measured without recursion.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, TableFactor, Visit, Visitor};

use crate::error::{Error, Result};

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 1 << 20;
/// Deepest nesting of expressions (each operator, function call, `CASE` or subscript is a
/// level).
pub const MAX_EXPR_DEPTH: usize = 500;
/// Most expressions in one statement.
pub const MAX_EXPR_NODES: usize = 100_000;
/// Longest chain of `UNION` / `INTERSECT` / `EXCEPT` in one query.
pub const MAX_SET_OPERATION_DEPTH: usize = 256;
/// Most tables, subqueries and table functions referenced in one statement (joins included).
pub const MAX_RELATIONS: usize = 256;
/// Stack of each query thread. A statement at every bound above plans and runs within it
/// (debug builds included, whose frames are the larger).
pub const QUERY_THREAD_STACK_BYTES: usize = 64 << 20;

/// Checks `sql`'s length before it is parsed.
///
/// # Errors
/// [`Error::Sql`] naming the limit.
pub fn check_sql_length(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::Sql(format!(
            "the SQL text is {} bytes, over the limit of {MAX_SQL_BYTES} bytes",
            sql.len()
        )));
    }
    Ok(())
}

/// Checks a parsed statement against the bounds of this module.
///
/// # Errors
/// [`Error::Sql`] naming the first bound crossed.
pub fn check_statement(statement: &Statement) -> Result<()> {
    let mut v = ShapeVisitor::default();
    let outcome = match statement {
        Statement::Statement(s) => s.visit(&mut v),
        Statement::Explain(e) => return check_statement(&e.statement),
        // Refused as not read-only before they get here; nothing to measure.
        _ => ControlFlow::Continue(()),
    };
    match outcome {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

#[derive(Debug, Default)]
struct ShapeVisitor {
    depth: usize,
    nodes: usize,
    relations: usize,
}

impl Visitor for ShapeVisitor {
    type Break = Error;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Error> {
        let depth = set_operation_depth(&query.body);
        if depth > MAX_SET_OPERATION_DEPTH {
            return ControlFlow::Break(Error::Sql(format!(
                "the query chains {depth} set operations (UNION, INTERSECT, EXCEPT), over the \
                 limit of {MAX_SET_OPERATION_DEPTH}"
            )));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<Error> {
        self.relations += 1;
        if self.relations > MAX_RELATIONS {
            return ControlFlow::Break(Error::Sql(format!(
                "the statement reads more than {MAX_RELATIONS} tables, subqueries and table \
                 functions, the limit"
            )));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<Error> {
        self.depth += 1;
        self.nodes += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(Error::Sql(format!(
                "expressions are nested more than {MAX_EXPR_DEPTH} levels deep, the limit \
                 (a long chain such as a+b+c+... or x OR y OR ... counts one level a term); \
                 use IN (...) or split the query"
            )));
        }
        if self.nodes > MAX_EXPR_NODES {
            return ControlFlow::Break(Error::Sql(format!(
                "the statement has more than {MAX_EXPR_NODES} expressions, the limit"
            )));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Error> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// The longest chain of set operations in `body`, measured with an explicit stack (the chain is
/// as deep as it is long, and this runs before anything knows how long that is). Parenthesized
/// queries are their own [`Query`] and measured when the visitor reaches them.
fn set_operation_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(body, 0usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if let SetExpr::SetOperation { left, right, .. } = node {
            // Past the bound the exact figure does not matter.
            if depth > MAX_SET_OPERATION_DEPTH {
                return depth;
            }
            stack.push((left, depth + 1));
            stack.push((right, depth + 1));
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn check(sql: &str) -> Result<()> {
        check_sql_length(sql)?;
        let statements = DFParser::parse_sql(sql).map_err(|e| Error::Sql(e.to_string()))?;
        check_statement(&statements[0])
    }

    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn a_chain_at_the_depth_bound_passes_and_one_past_it_is_refused_by_name() {
        // n terms of a left-associative chain nest n-1 operators over the last literal: depth n.
        let ok = format!("SELECT {}", chain("1", "+", MAX_EXPR_DEPTH));
        check(&ok).unwrap();
        let deep = format!("SELECT {}", chain("1", "+", MAX_EXPR_DEPTH + 1));
        let e = check(&deep).unwrap_err().to_string();
        assert!(e.contains(&format!("{MAX_EXPR_DEPTH} levels")), "{e}");
        // The shape, not the one operator: OR chains and string concatenations alike.
        let ors = format!(
            "SELECT * FROM audit WHERE {}",
            chain("eventname = 'x'", " OR ", 2_000)
        );
        assert!(check(&ors).unwrap_err().to_string().contains("levels"));
        let concat = format!("SELECT {}", chain("'a'", " || ", 2_000));
        assert!(check(&concat).unwrap_err().to_string().contains("levels"));
    }

    #[test]
    fn wide_statements_long_texts_set_operations_and_relations_are_bounded() {
        let wide = format!(
            "SELECT 1 WHERE 1 IN ({})",
            chain("1", ",", MAX_EXPR_NODES + 1)
        );
        let e = check(&wide).unwrap_err().to_string();
        assert!(e.contains(&format!("{MAX_EXPR_NODES} expressions")), "{e}");

        let long = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        let e = check(&long).unwrap_err().to_string();
        assert!(e.contains(&format!("{MAX_SQL_BYTES} bytes")), "{e}");

        let unions = chain("SELECT 1", " UNION ALL ", MAX_SET_OPERATION_DEPTH + 2);
        let e = check(&unions).unwrap_err().to_string();
        assert!(e.contains("set operations"), "{e}");
        check(&chain(
            "SELECT 1",
            " UNION ALL ",
            MAX_SET_OPERATION_DEPTH + 1,
        ))
        .unwrap();

        let joins = format!(
            "SELECT 1 FROM {}",
            chain("metrics", " CROSS JOIN ", MAX_RELATIONS + 1)
        );
        let e = check(&joins).unwrap_err().to_string();
        assert!(e.contains(&format!("{MAX_RELATIONS} tables")), "{e}");
    }

    #[test]
    fn the_parser_itself_bounds_right_nesting() {
        // Parentheses, prefix operators and subqueries recurse in the parser, which stops them.
        let parens = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(check(&parens).is_err());
        let nots = format!("SELECT {} true", "NOT ".repeat(5_000));
        assert!(check(&nots).is_err());
    }
}
