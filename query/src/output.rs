//! Writing query answers: an aligned table, CSV, JSON, newline-delimited JSON or Arrow IPC.
//!
//! CSV has no nested values, so maps, structs and lists are written as their display text
//! (`{InstanceId: i-1}`); the JSON forms keep them as JSON objects and arrays.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Error, Result};

/// An answer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// An Arrow IPC stream.
    Arrow,
}

impl Format {
    /// The media type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// The format an HTTP `Accept` header asks for: the first media type it names that is
    /// known, else JSON.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Json;
        };
        for part in accept.split(',') {
            let media = part.split(';').next().unwrap_or_default().trim();
            match media.to_ascii_lowercase().as_str() {
                "text/csv" => return Format::Csv,
                "application/json" => return Format::Json,
                "application/x-ndjson" | "application/jsonl" => return Format::Ndjson,
                "application/vnd.apache.arrow.stream" => return Format::Arrow,
                "text/plain" => return Format::Table,
                _ => {}
            }
        }
        Format::Json
    }
}

/// Writes `batches` in `format`.
///
/// # Errors
/// Arrow errors, or the writer's I/O errors.
pub fn write(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        Format::Table => {
            let flat = flatten_all(batches)?;
            let text = arrow::util::pretty::pretty_format_batches(&flat)?;
            writeln!(out, "{text}").map_err(io)?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                // A header even when there are no rows.
                w.write(&RecordBatch::new_empty(Arc::clone(&flat_schema(schema))))?;
            }
            for b in batches {
                w.write(&flatten(b)?)?;
            }
        }
        Format::Json => out.write_all(&json_rows(batches)?).map_err(io)?,
        Format::Ndjson => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(out, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

/// The rows as one JSON array of objects (nulls written out).
///
/// # Errors
/// Arrow errors.
pub fn json_rows(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    write_json_rows(batches, &mut buf)?;
    Ok(buf)
}

/// Writes the rows as a JSON array of objects (`[]` when there are none) to `out`.
///
/// # Errors
/// A value that cannot be encoded, or `out` refusing the bytes.
pub fn write_json_rows(batches: &[RecordBatch], out: &mut dyn Write) -> Result<()> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return out.write_all(b"[]").map_err(io);
    }
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(out);
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(())
}

fn io(e: std::io::Error) -> Error {
    Error::Internal(format!("writing the answer: {e}"))
}

fn nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Map(..)
            | DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Union(..)
    )
}

fn flat_schema(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if nested(f.data_type()) {
                    Arc::new(Field::new(f.name(), DataType::Utf8, true))
                } else {
                    Arc::clone(f)
                }
            })
            .collect::<Vec<_>>(),
    ))
}

fn flatten_all(batches: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    batches.iter().map(flatten).collect()
}

/// Replaces nested columns by their display text.
fn flatten(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| nested(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default().with_null("");
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| {
            if !nested(c.data_type()) {
                return Ok(Arc::clone(c));
            }
            let f = ArrayFormatter::try_new(c.as_ref(), &options)?;
            let mut b = StringBuilder::with_capacity(c.len(), c.len() * 16);
            for i in 0..c.len() {
                if c.is_null(i) {
                    b.append_null();
                } else {
                    b.append_value(f.value(i).to_string());
                }
            }
            Ok(Arc::new(b.finish()) as ArrayRef)
        })
        .collect::<Result<_>>()?;
    Ok(RecordBatch::try_new(flat_schema(&batch.schema()), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array as _, Int64Array, MapBuilder, StringArray};

    fn batch() -> RecordBatch {
        let mut m = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        m.keys().append_value("InstanceId");
        m.values().append_value("i-1");
        m.append(true).unwrap();
        m.append(false).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("dims", m.finish().data_type().clone(), true),
        ]));
        let mut m2 = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        m2.keys().append_value("InstanceId");
        m2.values().append_value("i-1");
        m2.append(true).unwrap();
        m2.append(false).unwrap();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(m2.finish()),
            ],
        )
        .unwrap()
    }

    fn render(format: Format) -> String {
        let b = batch();
        let mut out = Vec::new();
        write(format, &b.schema(), &[b], &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_format_writes_nested_columns() {
        assert_eq!(
            render(Format::Csv),
            "n,s,dims\n1,\"a,b\",{InstanceId: i-1}\n2,,\n"
        );
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json)).unwrap();
        assert_eq!(json[0]["dims"]["InstanceId"], "i-1");
        assert_eq!(json[1]["s"], serde_json::Value::Null);
        assert_eq!(render(Format::Ndjson).lines().count(), 2);
        assert!(render(Format::Table).contains("| 1 | a,b |"));
    }

    #[test]
    fn accept_headers_pick_a_format() {
        assert_eq!(Format::from_accept(None), Format::Json);
        assert_eq!(Format::from_accept(Some("text/csv")), Format::Csv);
        assert_eq!(
            Format::from_accept(Some("image/png, application/vnd.apache.arrow.stream;q=0.9")),
            Format::Arrow
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Json);
    }
}
