//! A fix of our own for one precedence bug of the SQL parser in the tree (sqlparser 0.62, the
//! version DataFusion 55 pins): the right side of `IS [NOT] DISTINCT FROM` is parsed as a whole
//! expression instead of an operand, so
//! `readonly IS DISTINCT FROM true AND eventname = 'DeleteBucket'` reads as
//! `readonly IS DISTINCT FROM (true AND eventname = 'DeleteBucket')`, a wrong answer with no
//! error. Drop this module once the parser binds `IS` as tightly as its own precedence table says
//! (docs/decisions.md, "The parser's IS DISTINCT FROM precedence, fixed after parsing").
//!
//! Parentheses survive parsing as `Expr::Nested`, so a right side that is a bare `AND` or `OR`
//! (whose precedence is below `IS`) or another `IS` test (the same precedence, left-associative)
//! can only come from the bug. Each such tree is re-associated the way the grammar reads it:
//! the test takes the leftmost operand, and the rest applies to its result.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, visit_expressions_mut};

/// Re-associates every `IS [NOT] DISTINCT FROM` of the statement whose right side swallowed a
/// lower-precedence operator.
pub(crate) fn fix_is_distinct_from(statement: &mut Statement) {
    match statement {
        Statement::Statement(s) => {
            let _ = visit_expressions_mut(s.as_mut(), |e| {
                reassociate(e);
                ControlFlow::<()>::Continue(())
            });
        }
        Statement::Explain(e) => fix_is_distinct_from(&mut e.statement),
        // The other statements are refused as writes before they are planned.
        Statement::CreateExternalTable(_) | Statement::CopyTo(_) | Statement::Reset(_) => {}
    }
}

/// Called bottom-up: the right side is already in its fixed form.
fn reassociate(e: &mut Expr) {
    let (Expr::IsDistinctFrom(_, right) | Expr::IsNotDistinctFrom(_, right)) = e else {
        return;
    };
    if !swallowed(right) {
        return;
    }
    let taken = std::mem::replace(e, Expr::value(datafusion::sql::sqlparser::ast::Value::Null));
    *e = match taken {
        Expr::IsDistinctFrom(left, right) => attach(*left, *right, false),
        Expr::IsNotDistinctFrom(left, right) => attach(*left, *right, true),
        other => other,
    };
}

/// Whether `right` is an operator the parser should have stopped before.
fn swallowed(right: &Expr) -> bool {
    matches!(
        right,
        Expr::BinaryOp {
            op: BinaryOperator::And | BinaryOperator::Or,
            ..
        } | Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsNotTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotFalse(_)
            | Expr::IsUnknown(_)
            | Expr::IsNotUnknown(_)
            | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
    )
}

/// `left IS [NOT] DISTINCT FROM` applied to the leftmost operand of `right`, the rest of
/// `right` applied to its result.
fn attach(left: Expr, right: Expr, negated: bool) -> Expr {
    let down = |e: Box<Expr>, left: Expr| Box::new(attach(left, *e, negated));
    match right {
        Expr::BinaryOp {
            left: l,
            op: op @ (BinaryOperator::And | BinaryOperator::Or),
            right: r,
        } => Expr::BinaryOp {
            left: down(l, left),
            op,
            right: r,
        },
        Expr::IsNull(e) => Expr::IsNull(down(e, left)),
        Expr::IsNotNull(e) => Expr::IsNotNull(down(e, left)),
        Expr::IsTrue(e) => Expr::IsTrue(down(e, left)),
        Expr::IsNotTrue(e) => Expr::IsNotTrue(down(e, left)),
        Expr::IsFalse(e) => Expr::IsFalse(down(e, left)),
        Expr::IsNotFalse(e) => Expr::IsNotFalse(down(e, left)),
        Expr::IsUnknown(e) => Expr::IsUnknown(down(e, left)),
        Expr::IsNotUnknown(e) => Expr::IsNotUnknown(down(e, left)),
        Expr::IsDistinctFrom(a, b) => Expr::IsDistinctFrom(down(a, left), b),
        Expr::IsNotDistinctFrom(a, b) => Expr::IsNotDistinctFrom(down(a, left), b),
        operand if negated => Expr::IsNotDistinctFrom(Box::new(left), Box::new(operand)),
        operand => Expr::IsDistinctFrom(Box::new(left), Box::new(operand)),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    #[test]
    fn chains_associate_to_the_left_and_parentheses_are_kept() {
        let tree = |sql: &str| {
            let mut statements = DFParser::parse_sql(sql).expect("parses");
            let mut s = statements.pop_front().expect("one statement");
            fix_is_distinct_from(&mut s);
            let Statement::Statement(inner) = s else {
                panic!("a query")
            };
            let datafusion::sql::sqlparser::ast::Statement::Query(q) = *inner else {
                panic!("a query")
            };
            let datafusion::sql::sqlparser::ast::SetExpr::Select(sel) = *q.body else {
                panic!("a select")
            };
            sel.selection.expect("a WHERE")
        };
        // (a IS DISTINCT FROM true) AND b: the AND is at the top.
        let e = tree("SELECT 1 FROM t WHERE a IS DISTINCT FROM true AND b");
        assert!(
            matches!(&e, Expr::BinaryOp { op: BinaryOperator::And, left, .. }
                if matches!(**left, Expr::IsDistinctFrom(..))),
            "{e:?}"
        );
        // (a IS NOT DISTINCT FROM b) OR (c AND d): the OR is at the top.
        let e = tree("SELECT 1 FROM t WHERE a IS NOT DISTINCT FROM b OR c AND d");
        assert!(
            matches!(&e, Expr::BinaryOp { op: BinaryOperator::Or, left, .. }
                if matches!(**left, Expr::IsNotDistinctFrom(..))),
            "{e:?}"
        );
        // (a IS DISTINCT FROM b) IS NULL.
        let e = tree("SELECT 1 FROM t WHERE a IS DISTINCT FROM b IS NULL");
        assert!(
            matches!(&e, Expr::IsNull(inner) if matches!(**inner, Expr::IsDistinctFrom(..))),
            "{e:?}"
        );
        // Parenthesised, the right side stays whole.
        let e = tree("SELECT 1 FROM t WHERE a IS DISTINCT FROM (b AND c)");
        assert!(
            matches!(&e, Expr::IsDistinctFrom(_, r) if matches!(**r, Expr::Nested(_))),
            "{e:?}"
        );
        // A comparison binds tighter than IS, as the parser's table says.
        let e = tree("SELECT 1 FROM t WHERE a IS DISTINCT FROM b = c");
        assert!(
            matches!(&e, Expr::IsDistinctFrom(_, r)
                if matches!(**r, Expr::BinaryOp { op: BinaryOperator::Eq, .. })),
            "{e:?}"
        );
    }
}
