//! CloudTrail events into batches of the `audit` table; the parser itself is
//! [`watchtrail_query::cloudtrail`], re-exported here.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use serde_json::Value;
pub use watchtrail_query::cloudtrail::{AuditEvent, ParseError, parse_event};
use watchtrail_query::tables::TableKind;

/// Decodes projected rows into one batch of the `audit` schema.
///
/// # Errors
/// Only on a broken invariant: projected rows always fit the schema.
pub fn rows_to_batch(rows: &[&Value]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema: SchemaRef = TableKind::Audit.schema();
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};

    use super::*;

    const EVENT: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","principalId":"AIDA1","arn":"arn:aws:iam::1:user/bob","accountId":"1","accessKeyId":"AKIA1","userName":"bob","sessionContext":{"attributes":{"creationDate":"2023-07-10T11:00:00Z","mfaAuthenticated":"false"}}},"eventTime":"2023-07-10T11:40:13Z","eventSource":"s3.amazonaws.com","eventName":"DeleteBucketPolicy","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.9","userAgent":"aws-cli/2","errorCode":"AccessDenied","requestParameters":{"bucketName":"b","policy":[1,2]},"responseElements":null,"requestID":"R1","eventID":"e-1","readOnly":false,"resources":[{"ARN":"arn:aws:s3:::b","accountId":"1","type":"AWS::S3::Bucket"}],"eventType":"AwsApiCall","managementEvent":"true","recipientAccountId":"1","eventCategory":"Management","tlsDetails":{"tlsVersion":"TLSv1.2","cipherSuite":"X","clientProvidedHostHeader":"s3.amazonaws.com"}}"#;

    #[test]
    fn projects_a_cloudtrail_event_onto_the_schema() {
        let ev = parse_event(EVENT).expect("valid event");
        assert_eq!(ev.event_id, "e-1");
        assert_eq!(ev.event_time_us, 1_688_989_213_000_000);
        let batch = rows_to_batch(&[&ev.row]).expect("decodes");
        assert_eq!(batch.num_rows(), 1);
        let col = |name: &str| Arc::clone(batch.column_by_name(name).expect("column exists"));
        let uid = col("useridentity");
        let uid = uid.as_struct();
        let username = uid
            .column_by_name("username")
            .expect("field")
            .as_string::<i32>();
        assert_eq!(username.value(0), "bob");
        let params = col("requestparameters");
        let params: Value =
            serde_json::from_str(params.as_string::<i32>().value(0)).expect("json text");
        assert_eq!(params["bucketName"], "b");
        assert!(col("responseelements").is_null(0));
        assert!(!col("readonly").as_boolean().value(0));
        assert!(
            col("managementevent").as_boolean().value(0),
            "string `true` becomes a boolean"
        );
        let resources = col("resources");
        let first = resources.as_list::<i32>().value(0);
        let arn = first
            .as_struct()
            .column_by_name("arn")
            .expect("field")
            .as_string::<i32>()
            .value(0)
            .to_string();
        assert_eq!(arn, "arn:aws:s3:::b");
        assert_eq!(col("eventjson").as_string::<i32>().value(0), EVENT);
    }

    #[test]
    fn odd_types_never_break_decoding() {
        let ev = parse_event(r#"{"eventID":"x","eventTime":"2023-07-10T11:40:13Z","userIdentity":"weird","readOnly":7,"resources":{"a":1},"eventVersion":1.08}"#).expect("valid");
        let batch = rows_to_batch(&[&ev.row]).expect("decodes");
        assert!(
            batch
                .column_by_name("useridentity")
                .expect("col")
                .is_null(0)
        );
        assert_eq!(
            batch
                .column_by_name("eventversion")
                .expect("col")
                .as_string::<i32>()
                .value(0),
            "1.08"
        );
    }
}
