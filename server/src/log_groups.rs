//! Log groups as CloudWatch Logs has them: the groups seen in `logs`, those made by
//! `CreateLogGroup` and those with a retention policy, with their first event, stored events and
//! retention. The HTTP routes (`/v1/log-groups`) and the AWS API both read them here.

use std::collections::BTreeMap;

use arrow::array::{Array as _, AsArray as _};
use serde::{Deserialize, Serialize};
use watchtrail_query::engine::Engine;
use watchtrail_storage::control::{ControlStore, Doc};

use crate::error::{Error, Result};
use crate::lifecycle::RetentionPolicy;

/// A group made by `CreateLogGroup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDoc {
    /// The group.
    pub log_group_name: String,
    /// When it was made, epoch milliseconds.
    pub creation_time: i64,
}

/// One group as `DescribeLogGroups` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogGroup {
    /// The group.
    pub name: String,
    /// When `CreateLogGroup` made it, else its first event.
    pub creation_time_ms: Option<i64>,
    /// Its first event.
    pub first_event_ms: Option<i64>,
    /// Its events.
    pub stored_events: Option<i64>,
    /// Its own retention.
    pub retention_in_days: Option<u32>,
}

/// Every group of `tenant` whose name starts with `prefix`, by name.
///
/// # Errors
/// Query or storage errors.
pub async fn describe(
    control: &ControlStore,
    engine: &Engine,
    tenant: &str,
    prefix: &str,
) -> Result<Vec<LogGroup>> {
    let mut groups: BTreeMap<String, LogGroup> = BTreeMap::new();
    let sql = "SELECT log_group, CAST(min(time) AS BIGINT) AS first_us, count(*) AS events \
               FROM logs GROUP BY log_group";
    let result = engine.collect(tenant, sql).await?;
    for b in &result.batches {
        let (Some(g), Some(t), Some(n)) = (
            b.column(0).as_string_opt::<i32>(),
            b.column(1)
                .as_primitive_opt::<arrow::datatypes::Int64Type>(),
            b.column(2)
                .as_primitive_opt::<arrow::datatypes::Int64Type>(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            if g.is_null(i) || !g.value(i).starts_with(prefix) {
                continue;
            }
            let e = groups.entry(g.value(i).to_string()).or_default();
            e.first_event_ms = (!t.is_null(i)).then(|| t.value(i) / 1000);
            e.stored_events = Some(n.value(i));
        }
    }
    let made: Vec<GroupDoc> = control.list(tenant, Doc::LogGroup).await?;
    for d in made {
        if d.log_group_name.starts_with(prefix) {
            groups.entry(d.log_group_name).or_default().creation_time_ms = Some(d.creation_time);
        }
    }
    let policies: Vec<RetentionPolicy> = control.list(tenant, Doc::LogRetention).await?;
    for p in policies {
        if p.log_group_name.starts_with(prefix) {
            groups
                .entry(p.log_group_name)
                .or_default()
                .retention_in_days = Some(p.retention_in_days);
        }
    }
    Ok(groups
        .into_iter()
        .map(|(name, mut g)| {
            g.creation_time_ms = g.creation_time_ms.or(g.first_event_ms);
            g.name = name;
            g
        })
        .collect())
}

/// Makes a group; `false` when it exists already (made, or holding events).
///
/// # Errors
/// A bad name; query or storage errors.
pub async fn create(
    control: &ControlStore,
    engine: &Engine,
    tenant: &str,
    name: &str,
    now_ms: i64,
) -> Result<bool> {
    crate::ingest::validate::check_log_group("logGroupName", name)?;
    let exists = describe(control, engine, tenant, name)
        .await?
        .iter()
        .any(|g| g.name == name);
    if exists {
        return Ok(false);
    }
    let doc = GroupDoc {
        log_group_name: name.to_string(),
        creation_time: now_ms,
    };
    control.put(tenant, Doc::LogGroup, name, &doc).await?;
    Ok(true)
}

/// Checks a retention as CloudWatch Logs does.
///
/// # Errors
/// A number of days that is not one of CloudWatch's.
pub fn check_retention(days: i64) -> std::result::Result<u32, Error> {
    u32::try_from(days)
        .ok()
        .filter(|d| watchtrail_storage::lifecycle::RETENTION_DAYS.contains(d))
        .ok_or_else(|| Error::InvalidArgument {
            field: "retentionInDays".into(),
            reason: format!(
                "{days} is not one of {:?}",
                watchtrail_storage::lifecycle::RETENTION_DAYS
            ),
        })
}
