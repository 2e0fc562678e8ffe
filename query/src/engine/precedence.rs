//! A fix of our own for one precedence bug of the SQL parser in the tree (sqlparser 0.62, the
//! version DataFusion 55 pins): the right side of `IS [NOT] DISTINCT FROM` is parsed as a whole
//! expression instead of an operand, so
//! `readonly IS DISTINCT FROM true AND eventname = 'DeleteBucket'` reads as
//! `readonly IS DISTINCT FROM (true AND eventname = 'DeleteBucket')`, a wrong answer with no
//! error. Drop this module once the parser binds `IS` as tightly as its own precedence table says
//! (docs/decisions.md, "The parser's IS DISTINCT FROM precedence, fixed after parsing").
//!
//! Parentheses survive parsing as `Expr::Nested`, and every operator that binds looser than
//! `IS` (AND, OR, prefix NOT) or as tightly (the `IS` tests) keeps the source order of its
//! operands in the tree. So a boolean tree can be written back as the token sequence it was
//! parsed from (atoms, which hold everything that binds tighter, and those operators) and
//! parsed again with the precedences the grammar gives them: OR 5, AND 10, NOT 15, IS 17. For a
//! tree the parser got right that is the same tree; for one with the bug, it is the tree every
//! other SQL engine reads. Statements without `DISTINCT FROM` are left alone.

use std::iter::Peekable;
use std::ops::ControlFlow;

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, UnaryOperator, Visit, VisitMut, Visitor, VisitorMut,
};

/// Re-reads every boolean expression of the statement that holds an `IS [NOT] DISTINCT FROM`,
/// with the grammar's precedences.
pub(crate) fn fix_is_distinct_from(statement: &mut Statement) {
    match statement {
        Statement::Statement(s) => {
            if Visit::visit(s.as_ref(), &mut FindsDistinctFrom).is_break() {
                let _ = VisitMut::visit(s.as_mut(), &mut Reparse { stack: Vec::new() });
            }
        }
        Statement::Explain(e) => fix_is_distinct_from(&mut e.statement),
        // The other statements are refused as writes before they are planned.
        Statement::CreateExternalTable(_) | Statement::CopyTo(_) | Statement::Reset(_) => {}
    }
}

struct FindsDistinctFrom;

impl Visitor for FindsDistinctFrom {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        match e {
            Expr::IsDistinctFrom(..) | Expr::IsNotDistinctFrom(..) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// Re-parses each maximal boolean tree once, at its root (a boolean node whose parent is not
/// one); the atoms inside are visited afterwards and have their own roots.
struct Reparse {
    /// For each expression on the path from the statement: whether it is a boolean node.
    stack: Vec<bool>,
}

impl VisitorMut for Reparse {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        let boolean = is_boolean(e);
        if boolean && !self.stack.last().copied().unwrap_or(false) {
            let taken = std::mem::replace(e, Expr::value(null()));
            let mut tokens = Vec::new();
            into_tokens(taken, &mut tokens);
            let mut iter = tokens.into_iter().peekable();
            *e = parse(&mut iter, 0);
        }
        self.stack.push(boolean);
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _e: &mut Expr) -> ControlFlow<()> {
        self.stack.pop();
        ControlFlow::Continue(())
    }
}

fn null() -> datafusion::sql::sqlparser::ast::Value {
    datafusion::sql::sqlparser::ast::Value::Null
}

/// The `IS` tests written after their operand.
#[derive(Debug, Clone, Copy)]
enum Postfix {
    Null,
    NotNull,
    True,
    NotTrue,
    False,
    NotFalse,
    Unknown,
    NotUnknown,
}

impl Postfix {
    fn of(e: &Expr) -> Option<Postfix> {
        Some(match e {
            Expr::IsNull(_) => Postfix::Null,
            Expr::IsNotNull(_) => Postfix::NotNull,
            Expr::IsTrue(_) => Postfix::True,
            Expr::IsNotTrue(_) => Postfix::NotTrue,
            Expr::IsFalse(_) => Postfix::False,
            Expr::IsNotFalse(_) => Postfix::NotFalse,
            Expr::IsUnknown(_) => Postfix::Unknown,
            Expr::IsNotUnknown(_) => Postfix::NotUnknown,
            _ => return None,
        })
    }

    fn apply(self, e: Expr) -> Expr {
        let e = Box::new(e);
        match self {
            Postfix::Null => Expr::IsNull(e),
            Postfix::NotNull => Expr::IsNotNull(e),
            Postfix::True => Expr::IsTrue(e),
            Postfix::NotTrue => Expr::IsNotTrue(e),
            Postfix::False => Expr::IsFalse(e),
            Postfix::NotFalse => Expr::IsNotFalse(e),
            Postfix::Unknown => Expr::IsUnknown(e),
            Postfix::NotUnknown => Expr::IsNotUnknown(e),
        }
    }
}

#[derive(Debug)]
enum Token {
    Atom(Box<Expr>),
    And,
    Or,
    Not,
    DistinctFrom,
    NotDistinctFrom,
    Is(Postfix),
}

const OR: u8 = 5;
const AND: u8 = 10;
const NOT: u8 = 15;
const IS: u8 = 17;

fn is_boolean(e: &Expr) -> bool {
    matches!(
        e,
        Expr::BinaryOp {
            op: BinaryOperator::And | BinaryOperator::Or,
            ..
        } | Expr::UnaryOp {
            op: UnaryOperator::Not,
            ..
        } | Expr::IsDistinctFrom(..)
            | Expr::IsNotDistinctFrom(..)
    ) || Postfix::of(e).is_some()
}

/// The tokens of a boolean tree in source order. (Recursive on a stack that grows on demand,
/// as the parser and planner are: a tree may be as deep as the statement bounds allow.)
#[recursive::recursive]
fn into_tokens(e: Expr, out: &mut Vec<Token>) {
    if let Some(p) = Postfix::of(&e) {
        let (Expr::IsNull(inner)
        | Expr::IsNotNull(inner)
        | Expr::IsTrue(inner)
        | Expr::IsNotTrue(inner)
        | Expr::IsFalse(inner)
        | Expr::IsNotFalse(inner)
        | Expr::IsUnknown(inner)
        | Expr::IsNotUnknown(inner)) = e
        else {
            return out.push(Token::Atom(Box::new(e)));
        };
        into_tokens(*inner, out);
        return out.push(Token::Is(p));
    }
    match e {
        Expr::BinaryOp {
            left,
            op: op @ (BinaryOperator::And | BinaryOperator::Or),
            right,
        } => {
            into_tokens(*left, out);
            out.push(if op == BinaryOperator::And {
                Token::And
            } else {
                Token::Or
            });
            into_tokens(*right, out);
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => {
            out.push(Token::Not);
            into_tokens(*expr, out);
        }
        Expr::IsDistinctFrom(a, b) => {
            into_tokens(*a, out);
            out.push(Token::DistinctFrom);
            into_tokens(*b, out);
        }
        Expr::IsNotDistinctFrom(a, b) => {
            into_tokens(*a, out);
            out.push(Token::NotDistinctFrom);
            into_tokens(*b, out);
        }
        atom => out.push(Token::Atom(Box::new(atom))),
    }
}

/// Precedence climbing over the tokens: an operand, then every operator that binds tighter
/// than `min`. Tokens from a parsed tree are always well formed; a missing operand (which
/// cannot happen) reads as NULL rather than panicking.
#[recursive::recursive]
fn parse(tokens: &mut Peekable<std::vec::IntoIter<Token>>, min: u8) -> Expr {
    let mut lhs = match tokens.next() {
        Some(Token::Not) => Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: Box::new(parse(tokens, NOT)),
        },
        Some(Token::Atom(e)) => *e,
        _ => Expr::value(null()),
    };
    loop {
        let prec = match tokens.peek() {
            Some(Token::Or) => OR,
            Some(Token::And) => AND,
            Some(Token::DistinctFrom | Token::NotDistinctFrom | Token::Is(_)) => IS,
            _ => break,
        };
        if prec <= min {
            break;
        }
        lhs = match tokens.next() {
            Some(Token::Or) => Expr::BinaryOp {
                left: Box::new(lhs),
                op: BinaryOperator::Or,
                right: Box::new(parse(tokens, OR)),
            },
            Some(Token::And) => Expr::BinaryOp {
                left: Box::new(lhs),
                op: BinaryOperator::And,
                right: Box::new(parse(tokens, AND)),
            },
            Some(Token::DistinctFrom) => {
                Expr::IsDistinctFrom(Box::new(lhs), Box::new(parse(tokens, IS)))
            }
            Some(Token::NotDistinctFrom) => {
                Expr::IsNotDistinctFrom(Box::new(lhs), Box::new(parse(tokens, IS)))
            }
            Some(Token::Is(p)) => p.apply(lhs),
            _ => break,
        };
    }
    lhs
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    /// As deep as the statement bounds allow, on a small stack: the re-parse grows its stack
    /// as the parser does.
    #[test]
    fn deep_trees_do_not_overflow_a_small_stack() {
        let sql = format!(
            "SELECT 1 FROM t WHERE {}a IS DISTINCT FROM b AND c",
            "NOT ".repeat(450)
        );
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let mut statements = datafusion::sql::parser::DFParserBuilder::new(sql.as_str())
                    .with_recursion_limit(1_000)
                    .build()
                    .and_then(|mut p| p.parse_statements())
                    .expect("parses");
                let mut s = statements.pop_front().expect("one statement");
                fix_is_distinct_from(&mut s);
                // (NOT ... NOT (a IS DISTINCT FROM b)) AND c.
                assert!(s.to_string().ends_with("a IS DISTINCT FROM b AND c"));
            })
            .expect("thread")
            .join()
            .expect("no overflow");
    }

    /// A statement the bug does not touch reads back as it was.
    #[test]
    fn trees_without_the_bug_are_unchanged() {
        let sql = "SELECT NOT a AND (b OR c IS NULL) OR NOT d IS NOT TRUE FROM t \
                   WHERE (x IS DISTINCT FROM (y AND z)) AND (p OR q)";
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        let mut s = statements.pop_front().expect("one statement");
        let before = format!("{s:?}");
        fix_is_distinct_from(&mut s);
        assert_eq!(format!("{s:?}"), before);
    }

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
        // NOT binds tighter than OR: (NOT (a IS DISTINCT FROM NULL)) OR b.
        let e = tree("SELECT 1 FROM t WHERE NOT a IS DISTINCT FROM NULL OR b");
        assert!(
            matches!(&e, Expr::BinaryOp { op: BinaryOperator::Or, left, .. }
                if matches!(&**left, Expr::UnaryOp { op: UnaryOperator::Not, expr }
                    if matches!(**expr, Expr::IsDistinctFrom(..)))),
            "{e:?}"
        );
        // An AND before the test: (p AND (a IS DISTINCT FROM b)) OR c.
        let e = tree("SELECT 1 FROM t WHERE p AND a IS DISTINCT FROM b OR c");
        assert!(
            matches!(&e, Expr::BinaryOp { op: BinaryOperator::Or, left, .. }
                if matches!(&**left, Expr::BinaryOp { op: BinaryOperator::And, right, .. }
                    if matches!(**right, Expr::IsDistinctFrom(..)))),
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
