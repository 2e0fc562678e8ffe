//! What an audit event is, for a digest: a SHA-256 over a canonical encoding of its whole stored
//! row (every column, in the schema's order), so that a change to any column (the flattened
//! fields as much as `eventjson`) changes the hash, and re-encoding the file does not.
//!
//! Encoding (version 1), per value:
//! - null: `0x00`
//! - string: `0x01`, length (u32 LE), UTF-8 bytes
//! - boolean: `0x02`, `0x00` or `0x01`
//! - timestamp: `0x03`, microseconds (i64 LE)
//! - struct: `0x04`, then each field in order
//! - list: `0x05`, count (u32 LE), then each element
//! - any other integer or float column: `0x06`, its value as i64 / f64 bits (LE)
//!
//! A row is its columns in order, each encoded as above; a column the row's file does not have
//! (written before the column was added) encodes as null.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use ring::digest::{Context, SHA256};

use crate::error::{Error, Result};

/// One event as a digest covers it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventHash {
    /// SHA-256 of the canonical row.
    pub hash: [u8; 32],
    /// `eventid`.
    pub event_id: String,
    /// `eventtime`, microseconds.
    pub time_us: i64,
}

fn put_len(ctx: &mut Context, n: usize) {
    ctx.update(&(n as u32).to_le_bytes());
}

fn encode(ctx: &mut Context, a: &dyn Array, i: usize) -> Result<()> {
    if a.is_null(i) {
        ctx.update(&[0]);
        return Ok(());
    }
    match a.data_type() {
        DataType::Utf8 => {
            let s = a.as_string::<i32>().value(i);
            ctx.update(&[1]);
            put_len(ctx, s.len());
            ctx.update(s.as_bytes());
        }
        DataType::LargeUtf8 => {
            let s = a.as_string::<i64>().value(i);
            ctx.update(&[1]);
            put_len(ctx, s.len());
            ctx.update(s.as_bytes());
        }
        DataType::Utf8View => {
            let s = a.as_string_view().value(i);
            ctx.update(&[1]);
            put_len(ctx, s.len());
            ctx.update(s.as_bytes());
        }
        DataType::Boolean => {
            ctx.update(&[2, u8::from(a.as_boolean().value(i))]);
        }
        DataType::Timestamp(unit, _) => {
            let v = a
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(i);
            debug_assert_eq!(*unit, TimeUnit::Microsecond);
            ctx.update(&[3]);
            ctx.update(&v.to_le_bytes());
        }
        DataType::Struct(_) => {
            let s = a.as_struct();
            ctx.update(&[4]);
            for c in s.columns() {
                encode(ctx, c.as_ref(), i)?;
            }
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let v = l.value(i);
            ctx.update(&[5]);
            put_len(ctx, v.len());
            for j in 0..v.len() {
                encode(ctx, v.as_ref(), j)?;
            }
        }
        DataType::Int64 => {
            ctx.update(&[6]);
            ctx.update(
                &a.as_primitive::<arrow::datatypes::Int64Type>()
                    .value(i)
                    .to_le_bytes(),
            );
        }
        DataType::Int32 => {
            ctx.update(&[6]);
            let v = i64::from(a.as_primitive::<arrow::datatypes::Int32Type>().value(i));
            ctx.update(&v.to_le_bytes());
        }
        DataType::Float64 => {
            ctx.update(&[6]);
            ctx.update(
                &a.as_primitive::<arrow::datatypes::Float64Type>()
                    .value(i)
                    .to_bits()
                    .to_le_bytes(),
            );
        }
        other => {
            return Err(Error::Internal(format!(
                "an audit column of type {other} has no canonical encoding"
            )));
        }
    }
    Ok(())
}

/// The hashes of every row of `batch`, whose columns are matched by name to `schema` (the
/// audit table's); the batch's timestamps must be microseconds.
///
/// # Errors
/// A column of a type the encoding does not know, or a missing `eventid`/`eventtime`.
pub fn hash_rows(schema: &SchemaRef, batch: &RecordBatch) -> Result<Vec<EventHash>> {
    let columns: Vec<Option<ArrayRef>> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name())?;
            // Timestamps are hashed as microseconds whatever unit a reader produced.
            match (f.data_type(), c.data_type()) {
                (DataType::Timestamp(..), DataType::Timestamp(u, _))
                    if *u != TimeUnit::Microsecond =>
                {
                    arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None)).ok()
                }
                _ => Some(std::sync::Arc::clone(c)),
            }
        })
        .collect();
    let idx = |name: &str| {
        schema
            .index_of(name)
            .ok()
            .and_then(|i| columns[i].clone())
            .ok_or_else(|| Error::Internal(format!("audit rows without `{name}`")))
    };
    let ids = idx("eventid")?;
    let ids = arrow::compute::cast(&ids, &DataType::Utf8)?;
    let ids = ids.as_string::<i32>();
    let times = idx("eventtime")?;
    let times = times.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut ctx = Context::new(&SHA256);
        for c in &columns {
            match c {
                Some(c) => encode(&mut ctx, c.as_ref(), row)?,
                None => ctx.update(&[0]),
            }
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(ctx.finish().as_ref());
        out.push(EventHash {
            hash,
            event_id: ids.value(row).to_string(),
            time_us: times.value(row),
        });
    }
    Ok(out)
}

/// The Merkle root of a set of event hashes (sorted by hash first): leaves are
/// `SHA-256(0x00 || hash)`, inner nodes `SHA-256(0x01 || left || right)`, an odd node is carried
/// up as it is; the root of no events is `SHA-256("")`.
pub fn merkle_root(sorted: &[[u8; 32]]) -> [u8; 32] {
    let h = |parts: &[&[u8]]| {
        let mut c = Context::new(&SHA256);
        for p in parts {
            c.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(c.finish().as_ref());
        out
    };
    if sorted.is_empty() {
        return h(&[]);
    }
    let mut level: Vec<[u8; 32]> = sorted.iter().map(|x| h(&[&[0], x])).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [l, r] => h(&[&[1], l, r]),
                [one] => *one,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{BooleanArray, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(ids: &[&str], names: &[Option<&str>]) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("eventid", DataType::Utf8, false),
            Field::new(
                "eventtime",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("eventname", DataType::Utf8, true),
            Field::new("readonly", DataType::Boolean, true),
        ]));
        let n = ids.len();
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(TimestampMicrosecondArray::from(vec![5; n])),
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(BooleanArray::from(vec![Some(true); n])),
            ],
        )
        .expect("batch");
        (schema, b)
    }

    #[test]
    fn any_column_changes_the_hash_and_nothing_else_does() {
        let (schema, a) = batch(&["1", "2"], &[Some("Get"), None]);
        let h = hash_rows(&schema, &a).expect("hash");
        let (_, same) = batch(&["1", "2"], &[Some("Get"), None]);
        assert_eq!(h, hash_rows(&schema, &same).expect("hash"));
        let (_, changed) = batch(&["1", "2"], &[Some("Got"), None]);
        let c = hash_rows(&schema, &changed).expect("hash");
        assert_ne!(h[0].hash, c[0].hash);
        assert_eq!(h[1].hash, c[1].hash);
        // Null and the empty string differ.
        let (_, empty) = batch(&["1", "2"], &[Some("Get"), Some("")]);
        assert_ne!(h[1].hash, hash_rows(&schema, &empty).expect("hash")[1].hash);
        assert_eq!(h[0].event_id, "1");
        assert_eq!(h[0].time_us, 5);
    }

    #[test]
    fn the_root_depends_on_every_leaf() {
        let leaves: Vec<[u8; 32]> = (0..5u8).map(|i| [i; 32]).collect();
        let root = merkle_root(&leaves);
        for i in 0..5 {
            let mut other = leaves.clone();
            other[i][0] ^= 1;
            assert_ne!(merkle_root(&other), root, "leaf {i}");
        }
        assert_ne!(merkle_root(&leaves[..4]), root);
        assert_ne!(merkle_root(&[]), merkle_root(&leaves[..1]));
    }
}
