//! Watchtrail's own logical optimizer rules, run after DataFusion's.

use datafusion::common::tree_node::Transformed;
use datafusion::error::Result;
use datafusion::logical_expr::expr::{AggregateFunction, Alias};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// Drops, from the `ORDER BY` of an ordered aggregate (`first_value(x ORDER BY ...)` and the
/// like), the leading sort keys that are grouping keys of the same aggregation: within one
/// group they are constant, so they cannot change the order of its rows, yet every row would be
/// compared on them. `SELECT DISTINCT ON (host, metric) ... ORDER BY host, metric, time DESC`
/// becomes first-value aggregates ordered by `host, metric, time DESC`; after this rule they are
/// ordered by `time DESC` alone, which takes the string comparisons out of the hot loop.
///
/// A sort key is dropped only while every key before it was dropped too, and the last key is
/// always kept, so an ordering never becomes empty.
#[derive(Debug, Default)]
pub(crate) struct GroupKeysOutOfAggregateOrder;

impl OptimizerRule for GroupKeysOutOfAggregateOrder {
    fn name(&self) -> &str {
        "watchtrail_group_keys_out_of_aggregate_order"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else {
            return Ok(Transformed::no(plan));
        };
        if aggregate
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let keys: Vec<&Expr> = aggregate.group_expr.iter().map(unaliased).collect();
        let mut changed = false;
        let aggr_expr: Vec<Expr> = aggregate
            .aggr_expr
            .iter()
            .map(|e| match trimmed(e, &keys) {
                Some(trimmed) => {
                    changed = true;
                    trimmed
                }
                None => e.clone(),
            })
            .collect();
        if !changed {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let rewritten = Aggregate::try_new(
            std::sync::Arc::clone(&aggregate.input),
            aggregate.group_expr.clone(),
            aggr_expr,
        )?;
        // The output must keep its names and types, or the plan above would no longer match.
        let same_fields = rewritten.schema.fields().len() == aggregate.schema.fields().len()
            && (rewritten.schema.iter().zip(aggregate.schema.iter())).all(|(a, b)| {
                a.0 == b.0 && a.1.name() == b.1.name() && a.1.data_type() == b.1.data_type()
            });
        if !same_fields {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        Ok(Transformed::yes(LogicalPlan::Aggregate(rewritten)))
    }
}

fn unaliased(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unaliased(&a.expr),
        e => e,
    }
}

/// `e` with the grouping keys `keys` dropped from the front of its aggregate's ordering, under
/// `e`'s own output name; `None` when there is nothing to drop.
fn trimmed(e: &Expr, keys: &[&Expr]) -> Option<Expr> {
    let (function, alias) = match e {
        Expr::AggregateFunction(f) => (f, None),
        Expr::Alias(a) => match a.expr.as_ref() {
            Expr::AggregateFunction(f) => (f, Some(a)),
            _ => return None,
        },
        _ => return None,
    };
    let order = &function.params.order_by;
    let constant = order
        .iter()
        .take_while(|s| keys.contains(&unaliased(&s.expr)))
        .count()
        .min(order.len().saturating_sub(1));
    if constant == 0 {
        return None;
    }
    let mut params = function.params.clone();
    params.order_by.drain(..constant);
    let rewritten = Expr::AggregateFunction(AggregateFunction {
        func: std::sync::Arc::clone(&function.func),
        params,
    });
    Some(match alias {
        Some(a) => Expr::Alias(Alias {
            expr: Box::new(rewritten),
            ..a.clone()
        }),
        None => rewritten.alias(e.schema_name().to_string()),
    })
}
