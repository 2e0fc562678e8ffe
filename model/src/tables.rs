//! Arrow schemas of the user-visible tables and the object-store layout: the on-disk contract.
//!
//! The writer (server) and the readers (SQL engine, CLI, other Delta readers) all take their
//! schemas and paths from here, so they cannot drift apart. Nested field names follow Delta's
//! own Arrow mapping (`key_value`/`key`/`value` for maps, `element` for lists) so that files we
//! write read back with exactly the schema Delta derives from the table metadata.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Time zone of every timestamp column (Delta `timestamp` is microseconds, UTC).
pub const UTC: &str = "UTC";

/// The kinds of table every tenant has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableKind {
    /// CloudWatch-model metric datapoints.
    Metrics,
    /// Log events.
    Logs,
    /// CloudTrail-shaped audit events.
    Audit,
    /// Alarm state changes and configuration updates, written by the alarm evaluator.
    AlarmHistory,
    /// Webhook delivery attempts, written by the notification outbox.
    WebhookDeliveries,
}

impl TableKind {
    /// All kinds, in a fixed order.
    pub const ALL: [TableKind; 5] = [
        TableKind::Metrics,
        TableKind::Logs,
        TableKind::Audit,
        TableKind::AlarmHistory,
        TableKind::WebhookDeliveries,
    ];

    /// The kinds ingest writes (through the write-ahead log).
    pub const INGESTED: [TableKind; 3] = [TableKind::Metrics, TableKind::Logs, TableKind::Audit];

    /// The table's name in SQL and its directory under the tenant prefix.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Metrics => "metrics",
            TableKind::Logs => "logs",
            TableKind::Audit => "audit",
            TableKind::AlarmHistory => "alarm_history",
            TableKind::WebhookDeliveries => "webhook_deliveries",
        }
    }

    /// The Arrow schema of the table.
    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Metrics => Arc::clone(&METRICS_SCHEMA),
            TableKind::Logs => Arc::clone(&LOGS_SCHEMA),
            TableKind::Audit => Arc::clone(&AUDIT_SCHEMA),
            TableKind::AlarmHistory => Arc::clone(&ALARM_HISTORY_SCHEMA),
            TableKind::WebhookDeliveries => Arc::clone(&WEBHOOK_DELIVERIES_SCHEMA),
        }
    }

    /// The Arrow schema SQL reads the table's files with: the stored schema, except that the
    /// metrics `dimensions` map has dictionary-encoded keys and values. Its Parquet pages are
    /// dictionary pages of a few distinct names and values per file, so reading them as Arrow
    /// dictionaries copies only indices, where plain strings would copy twenty strings a row.
    /// Results leave the engine with plain types again.
    pub fn read_schema(self) -> SchemaRef {
        match self {
            TableKind::Metrics => Arc::clone(&METRICS_READ_SCHEMA),
            kind => kind.schema(),
        }
    }

    /// The column that orders rows in time (used for file statistics and pruning).
    pub fn time_column(self) -> &'static str {
        match self {
            TableKind::Metrics
            | TableKind::Logs
            | TableKind::AlarmHistory
            | TableKind::WebhookDeliveries => "time",
            TableKind::Audit => "eventtime",
        }
    }

    /// A stable one-byte tag, used in the write-ahead log.
    pub fn tag(self) -> u8 {
        match self {
            TableKind::Metrics => 1,
            TableKind::Logs => 2,
            TableKind::Audit => 3,
            TableKind::AlarmHistory => 4,
            TableKind::WebhookDeliveries => 5,
        }
    }

    /// The ingested kind with the given [`TableKind::tag`] (the write-ahead log holds no other).
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::INGESTED.into_iter().find(|k| k.tag() == tag)
    }
}

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TableKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown table `{s}` (expected metrics, logs or audit)"))
    }
}

/// The `audit` column that marks the server's own events (see the schema).
pub const SERVER_EVENT_COLUMN: &str = "serverevent";

/// The Arrow type of every timestamp column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

/// The Arrow type of a string→string map, named as Delta names it.
pub fn string_map_type() -> DataType {
    map_type(DataType::Utf8)
}

/// [`string_map_type`] with dictionary-encoded keys and values, as SQL reads it.
pub fn dictionary_map_type() -> DataType {
    map_type(DataType::Dictionary(
        Box::new(DataType::Int32),
        Box::new(DataType::Utf8),
    ))
}

/// A map whose keys and values are both `strings`, with Delta's field names.
fn map_type(strings: DataType) -> DataType {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", strings.clone(), false),
            Field::new("value", strings, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn structure(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

static METRICS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("namespace", DataType::Utf8, false),
        Field::new("metric_name", DataType::Utf8, false),
        Field::new("dimensions", string_map_type(), true),
        Field::new("time", timestamp_type(), false),
        // A raw sample's value. Null on statistic-set rows.
        Field::new("value", DataType::Float64, true),
        Field::new("unit", DataType::Utf8, false),
        // Statistic-set columns: null on raw samples (a raw sample v counts as 1, v, v, v).
        Field::new("sample_count", DataType::Float64, true),
        Field::new("sum", DataType::Float64, true),
        Field::new("min", DataType::Float64, true),
        Field::new("max", DataType::Float64, true),
        Field::new("storage_resolution", DataType::Int32, false),
    ]))
});

static METRICS_READ_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let fields: Vec<Field> = METRICS_SCHEMA
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Map(..) => f.as_ref().clone().with_data_type(dictionary_map_type()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
});

static LOGS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("ingest_time", timestamp_type(), false),
        Field::new("log_group", DataType::Utf8, false),
        Field::new("log_stream", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
        utf8("host"),
        utf8("file_path"),
    ]))
});

/// Fields of `useridentity.sessioncontext.sessionissuer`.
fn session_issuer_fields() -> Vec<Field> {
    ["type", "principalid", "arn", "accountid", "username"]
        .into_iter()
        .map(utf8)
        .collect()
}

static AUDIT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let session_context = structure(
        "sessioncontext",
        vec![
            structure(
                "attributes",
                vec![utf8("mfaauthenticated"), utf8("creationdate")],
            ),
            structure("sessionissuer", session_issuer_fields()),
            utf8("sourceidentity"),
            utf8("ec2roledelivery"),
        ],
    );
    let user_identity = structure(
        "useridentity",
        vec![
            utf8("type"),
            utf8("principalid"),
            utf8("arn"),
            utf8("accountid"),
            utf8("invokedby"),
            utf8("accesskeyid"),
            utf8("username"),
            session_context,
            utf8("identityprovider"),
        ],
    );
    let resource = Field::new(
        "element",
        DataType::Struct(Fields::from(vec![
            utf8("arn"),
            utf8("accountid"),
            utf8("type"),
        ])),
        true,
    );
    Arc::new(Schema::new(vec![
        utf8("eventversion"),
        user_identity,
        Field::new("eventtime", timestamp_type(), false),
        utf8("eventsource"),
        utf8("eventname"),
        utf8("awsregion"),
        utf8("sourceipaddress"),
        utf8("useragent"),
        utf8("errorcode"),
        utf8("errormessage"),
        // JSON text, as Athena's CloudTrail table has them.
        utf8("requestparameters"),
        utf8("responseelements"),
        utf8("additionaleventdata"),
        utf8("requestid"),
        Field::new("eventid", DataType::Utf8, false),
        Field::new("readonly", DataType::Boolean, true),
        Field::new("resources", DataType::List(Arc::new(resource)), true),
        utf8("eventtype"),
        utf8("apiversion"),
        Field::new("managementevent", DataType::Boolean, true),
        utf8("recipientaccountid"),
        utf8("sharedeventid"),
        utf8("vpcendpointid"),
        utf8("eventcategory"),
        utf8("serviceeventdetails"),
        structure(
            "tlsdetails",
            vec![
                utf8("tlsversion"),
                utf8("ciphersuite"),
                utf8("clientprovidedhostheader"),
            ],
        ),
        utf8("sessioncredentialfromconsole"),
        utf8("insightdetails"),
        utf8("addendum"),
        utf8("edgedevicedetails"),
        // The original record, untouched.
        Field::new("eventjson", DataType::Utf8, false),
        // True for Watchtrail's own events, false for every ingested one: set by the server's
        // write path, never read from an event's JSON, so no ingest door can claim it. Null in
        // rows written before the column existed.
        Field::new(SERVER_EVENT_COLUMN, DataType::Boolean, true),
    ]))
});

static ALARM_HISTORY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("alarm_name", DataType::Utf8, false),
        // StateUpdate, ConfigurationUpdate or Action, as DescribeAlarmHistory names them.
        Field::new("history_item_type", DataType::Utf8, false),
        Field::new("summary", DataType::Utf8, false),
        utf8("old_state"),
        utf8("new_state"),
        utf8("reason"),
        // JSON text: StateReasonData.
        utf8("reason_data"),
        // JSON text: DescribeAlarmHistory's HistoryData.
        utf8("history_data"),
    ]))
});

static WEBHOOK_DELIVERIES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("delivery_id", DataType::Utf8, false),
        Field::new("alarm_name", DataType::Utf8, false),
        Field::new("destination", DataType::Utf8, false),
        utf8("url"),
        utf8("new_state"),
        Field::new("attempt", DataType::Int32, false),
        // delivered, retrying, rejected (4xx), expired (gave up) or undeliverable.
        Field::new("outcome", DataType::Utf8, false),
        Field::new("status_code", DataType::Int32, true),
        utf8("error"),
        Field::new("duration_ms", DataType::Int64, false),
    ]))
});

/// Checks a tenant name: 1-64 of `a-z 0-9 _ -`, starting with a letter or digit.
///
/// Tenant names become object-store path segments, so nothing else is allowed in them.
///
/// # Errors
/// Returns the reason when the name is not allowed.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok_len = (1..=64).contains(&tenant.len());
    let ok_chars = tenant
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let ok_start = tenant
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok_len && ok_chars && ok_start {
        Ok(())
    } else {
        Err(format!(
            "tenant `{tenant}` must be 1-64 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for kind in TableKind::INGESTED {
            assert_eq!(TableKind::from_tag(kind.tag()), Some(kind));
        }
        assert_eq!(TableKind::from_tag(TableKind::AlarmHistory.tag()), None);
        for kind in TableKind::ALL {
            assert_eq!(kind.name().parse::<TableKind>(), Ok(kind));
            assert!(kind.schema().field_with_name(kind.time_column()).is_ok());
        }
        assert_eq!(TableKind::from_tag(0), None);
    }

    #[test]
    fn tenant_names_are_path_safe() {
        assert!(validate_tenant("default").is_ok());
        assert!(validate_tenant("team-7_x").is_ok());
        for bad in ["", "..", "../x", "a/b", "A", "-x", &"x".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad:?} accepted");
        }
    }
}
