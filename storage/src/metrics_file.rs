//! The `metrics` table's Parquet files, written from interned series instead of Arrow strings.
//!
//! A metrics row carries its series' identity: namespace, metric name, unit and up to 30
//! dimension names and values, the same strings on every point of the series. Handed to the
//! Arrow writer, those strings are copied into every row and then hashed, compared and looked up
//! in a dictionary one value at a time: on TSBS's 10 dimensions that is 23 strings a point, and
//! it was most of what a flush cost.
//!
//! [`MetricsFileWriter`] writes those five string columns itself. It knows which series each run
//! of rows belongs to, so it builds each column chunk's dictionary from the series (once per
//! series, not once per row) and writes every row as the series' dictionary indices: the data
//! page is the same dictionary encoding the Arrow writer produces, at the cost of copying a few
//! integers a row. The other columns (time, values, statistic sets, resolution) still go through
//! the Arrow column writers with the table's [`writer_properties`], and the file carries the same
//! Arrow schema, so a reader cannot tell the two writers apart (the tests compare them row by row).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray as _};
use arrow::datatypes::TimestampMicrosecondType;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter as _};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{ColumnChunkMetaData, OffsetIndexBuilder};
use parquet::file::page_index::offset_index::OffsetIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedFileWriter, SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use crate::error::{Error, Result};
use crate::files::writer_properties;
use crate::store::FileStats;
use watchtrail_model::tables::TableKind;

mod dict_pages;
#[cfg(test)]
use dict_pages::encode_hybrid;
use dict_pages::encode_series_column;

/// The ZSTD level of every page (the same as [`writer_properties`]).
const ZSTD_LEVEL: i32 = 3;

/// The identity of a metric series: what each of its rows stores besides time and value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// The namespace.
    pub namespace: String,
    /// The metric name.
    pub metric_name: String,
    /// Dimension names and values, sorted by name.
    pub dimensions: Vec<(String, String)>,
    /// The unit.
    pub unit: String,
    /// 1 or 60.
    pub storage_resolution: i32,
}

/// The per-row columns of a run of metrics rows, each as long as the run, in the `metrics`
/// schema's types.
#[derive(Debug, Clone)]
pub struct PointColumns {
    /// `time`: timestamps in microseconds, UTC.
    pub time: ArrayRef,
    /// `value`: null on statistic-set rows.
    pub value: ArrayRef,
    /// `sample_count`: null on raw samples.
    pub sample_count: ArrayRef,
    /// `sum`.
    pub sum: ArrayRef,
    /// `min`.
    pub min: ArrayRef,
    /// `max`.
    pub max: ArrayRef,
    /// `storage_resolution`.
    pub storage_resolution: ArrayRef,
}

/// The string columns this writer encodes from the series, by leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeriesLeaf {
    Namespace,
    MetricName,
    DimensionName,
    DimensionValue,
    Unit,
}

impl SeriesLeaf {
    /// The leaf's strings for one row of `series`: one, or one per dimension.
    fn strings<'a>(self, series: &'a SeriesKey, out: &mut Vec<&'a str>) {
        match self {
            SeriesLeaf::Namespace => out.push(&series.namespace),
            SeriesLeaf::MetricName => out.push(&series.metric_name),
            SeriesLeaf::Unit => out.push(&series.unit),
            SeriesLeaf::DimensionName => {
                out.extend(series.dimensions.iter().map(|(k, _)| k.as_str()))
            }
            SeriesLeaf::DimensionValue => {
                out.extend(series.dimensions.iter().map(|(_, v)| v.as_str()));
            }
        }
    }

    /// Whether the leaf sits inside the `dimensions` map (and so has levels).
    fn in_map(self) -> bool {
        matches!(self, SeriesLeaf::DimensionName | SeriesLeaf::DimensionValue)
    }
}

/// One leaf of the file schema: either one of the series' string columns or a point column.
#[derive(Debug, Clone, Copy)]
enum Leaf {
    Series(SeriesLeaf),
    /// Index into [`POINT_FIELDS`].
    Point(usize),
}

/// The point columns, in schema order.
const POINT_FIELDS: [&str; 7] = [
    "time",
    "value",
    "sample_count",
    "sum",
    "min",
    "max",
    "storage_resolution",
];

/// The metrics schema's leaves, in order. Checked against the schema when a writer starts.
const LEAVES: [(&str, Leaf); 12] = [
    ("namespace", Leaf::Series(SeriesLeaf::Namespace)),
    ("metric_name", Leaf::Series(SeriesLeaf::MetricName)),
    (
        "dimensions.key_value.key",
        Leaf::Series(SeriesLeaf::DimensionName),
    ),
    (
        "dimensions.key_value.value",
        Leaf::Series(SeriesLeaf::DimensionValue),
    ),
    ("time", Leaf::Point(0)),
    ("value", Leaf::Point(1)),
    ("unit", Leaf::Series(SeriesLeaf::Unit)),
    ("sample_count", Leaf::Point(2)),
    ("sum", Leaf::Point(3)),
    ("min", Leaf::Point(4)),
    ("max", Leaf::Point(5)),
    ("storage_resolution", Leaf::Point(6)),
];

/// Definition levels inside the `dimensions` map: the map present but empty, and an entry
/// present (a name, or a non-null value).
const EMPTY_MAP_DEF: u32 = 1;

/// Writes one `metrics` Parquet file a row group at a time.
pub struct MetricsFileWriter {
    writer: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    props: WriterProperties,
    columns: Vec<ColumnDescPtr>,
    stats: FileStats,
}

impl std::fmt::Debug for MetricsFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsFileWriter")
            .field("rows", &self.stats.num_records)
            .finish_non_exhaustive()
    }
}

impl MetricsFileWriter {
    /// Starts a file.
    ///
    /// # Errors
    /// Parquet errors, or a metrics schema whose leaves are not the ones this writer knows (a
    /// broken invariant, caught by the tests).
    pub fn new() -> Result<Self> {
        let props = writer_properties(TableKind::Metrics);
        let arrow =
            ArrowWriter::try_new(Vec::new(), TableKind::Metrics.schema(), Some(props.clone()))?;
        let (writer, factory) = arrow.into_serialized_writer()?;
        let columns = writer.schema_descr().columns().to_vec();
        if columns.len() != LEAVES.len() {
            return Err(Error::Internal(format!(
                "the metrics schema has {} leaves; the series writer knows {}",
                columns.len(),
                LEAVES.len()
            )));
        }
        for (descr, (path, leaf)) in columns.iter().zip(LEAVES) {
            let expected_levels = match leaf {
                Leaf::Series(SeriesLeaf::DimensionName) => Some((2, 1)),
                Leaf::Series(SeriesLeaf::DimensionValue) => Some((3, 1)),
                Leaf::Series(_) => Some((0, 0)),
                Leaf::Point(_) => None,
            };
            let levels = (descr.max_def_level(), descr.max_rep_level());
            if descr.path().string() != path || expected_levels.is_some_and(|l| l != levels) {
                return Err(Error::Internal(format!(
                    "metrics leaf {} (levels {levels:?}) is not the series writer's {path}",
                    descr.path().string()
                )));
            }
        }
        Ok(Self {
            writer,
            factory,
            props,
            columns,
            stats: FileStats::default(),
        })
    }

    /// Starts a row group of the rows `runs` describes: `(series, rows)` pairs in storage
    /// order, each series an index into `series`. Its string columns are encoded now; the
    /// point columns follow through [`RowGroup::write_points`].
    ///
    /// # Errors
    /// A run naming a series that `series` does not have, or Parquet errors.
    pub fn row_group(
        &mut self,
        series: &[Arc<SeriesKey>],
        runs: &[(u32, u32)],
    ) -> Result<RowGroup> {
        let index = self.writer.flushed_row_groups().len();
        let rows: u64 = runs.iter().map(|&(_, n)| u64::from(n)).sum();
        let mut strings = Vec::new();
        for (descr, (_, leaf)) in self.columns.iter().zip(LEAVES) {
            if let Leaf::Series(leaf) = leaf {
                strings.push(encode_series_column(
                    descr,
                    leaf,
                    &self.props,
                    series,
                    runs,
                )?);
            }
        }
        Ok(RowGroup {
            rows,
            written: 0,
            strings,
            writers: self.factory.create_column_writers(index)?,
            times: FileStats::default(),
        })
    }

    /// Closes a row group and writes it to the file.
    ///
    /// # Errors
    /// Point columns that do not add up to the group's rows, or Parquet errors.
    pub fn write_row_group(&mut self, group: RowGroup) -> Result<()> {
        if group.written != group.rows {
            return Err(Error::Internal(format!(
                "a metrics row group of {} rows was given {} points",
                group.rows, group.written
            )));
        }
        let mut strings = group.strings.into_iter();
        let mut rg = self.writer.next_row_group()?;
        for ((_, leaf), writer) in LEAVES.into_iter().zip(group.writers) {
            match leaf {
                Leaf::Series(_) => {
                    let (bytes, close) = strings
                        .next()
                        .ok_or_else(|| Error::Internal("a series column went missing".into()))?;
                    rg.append_column(&bytes, close)?;
                }
                Leaf::Point(_) => writer.close()?.append_to_row_group(&mut rg)?,
            }
        }
        rg.close()?;
        self.stats.num_records += group.rows as i64;
        if let Some((lo, hi)) = group.times.time_range {
            self.stats.include_times(lo, hi);
        }
        Ok(())
    }

    /// Finishes the file: its bytes and statistics.
    ///
    /// # Errors
    /// Parquet errors.
    pub fn finish(self) -> Result<(Bytes, FileStats)> {
        let bytes = self.writer.into_inner()?;
        Ok((Bytes::from(bytes), self.stats))
    }
}

/// A row group under construction: its string columns encoded, its point columns being written.
pub struct RowGroup {
    rows: u64,
    written: u64,
    strings: Vec<(Bytes, ColumnCloseResult)>,
    /// One Arrow column writer per leaf (those of the series leaves go unused).
    writers: Vec<ArrowColumnWriter>,
    /// The time range of the points written so far.
    times: FileStats,
}

impl std::fmt::Debug for RowGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowGroup")
            .field("rows", &self.rows)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl RowGroup {
    /// Appends the point columns of the group's next rows (in the order of its runs).
    ///
    /// # Errors
    /// Columns of different lengths or the wrong types, more rows than the group's runs have,
    /// or Parquet errors.
    pub fn write_points(&mut self, points: &PointColumns) -> Result<()> {
        let arrays = [
            &points.time,
            &points.value,
            &points.sample_count,
            &points.sum,
            &points.min,
            &points.max,
            &points.storage_resolution,
        ];
        let n = points.time.len();
        if arrays.iter().any(|a| a.len() != n) || self.written + n as u64 > self.rows {
            return Err(Error::Internal(format!(
                "metrics point columns of lengths {:?} for a row group with {} of {} rows left",
                arrays.iter().map(|a| a.len()).collect::<Vec<_>>(),
                self.rows - self.written,
                self.rows
            )));
        }
        let schema = TableKind::Metrics.schema();
        for ((_, leaf), writer) in LEAVES.iter().zip(&mut self.writers) {
            let Leaf::Point(p) = *leaf else { continue };
            let field = schema.field_with_name(POINT_FIELDS[p])?;
            if arrays[p].data_type() != field.data_type() {
                return Err(Error::Internal(format!(
                    "metrics column {} is {}, not {}",
                    POINT_FIELDS[p],
                    arrays[p].data_type(),
                    field.data_type()
                )));
            }
            for column in compute_leaves(field, arrays[p])? {
                writer.write(&column)?;
            }
        }
        if let Some(ts) = points.time.as_primitive_opt::<TimestampMicrosecondType>()
            && let (Some(lo), Some(hi)) = (arrow::compute::min(ts), arrow::compute::max(ts))
        {
            self.times.include_times(lo, hi);
        }
        self.written += n as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{
        Float64Array, Int32Array, MapBuilder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
    };
    use arrow::compute::concat_batches;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader as _, SerializedFileReader};

    use super::*;
    use crate::files::ParquetEncoder;
    use watchtrail_model::tables::UTC;

    fn hybrid(values: &[u32], width: u8) -> Vec<u8> {
        let mut out = Vec::new();
        encode_hybrid(values, width, &mut out);
        out
    }

    #[test]
    fn hybrid_encoding_matches_the_format_specification() {
        // The specification's example: 0..=7 bit-packed at width 3.
        assert_eq!(
            hybrid(&[0, 1, 2, 3, 4, 5, 6, 7], 3),
            [0x03, 0x88, 0xC6, 0xFA]
        );
        // Ten 1s are one run: header 10 << 1, then the value in one byte.
        assert_eq!(hybrid(&[1; 10], 1), [0x14, 0x01]);
        // A run of 300 needs a two-byte varint; a 9-bit value two bytes.
        assert_eq!(hybrid(&vec![258; 300], 9), [0xD8, 0x04, 0x02, 0x01]);
        // Three values are one padded group.
        assert_eq!(hybrid(&[1, 0, 1], 1), [0x03, 0b101]);
        // Bit-packed groups, then a run once 8 equal values start a group.
        let mut v = vec![0, 1, 0, 1, 0, 1, 0, 1];
        v.extend([3; 9]);
        assert_eq!(hybrid(&v, 2), [0x03, 0x44, 0x44, 0x12, 0x03]);
        // 64 groups of alternating values: one run of 63 groups, then one of 1.
        let alternating: Vec<u32> = (0..512).map(|i| i % 2).collect();
        let out = hybrid(&alternating, 1);
        assert_eq!(out[0], (63 << 1) | 1);
        assert_eq!(out[64], 0x03);
        assert_eq!(out.len(), 66);
    }

    /// Series with 0 to 12 dimensions whose values come from pools of different sizes, so that
    /// the dictionaries cross several bit widths.
    fn series_set(count: usize) -> Vec<Arc<SeriesKey>> {
        (0..count)
            .map(|i| {
                let dims = (0..i % 13)
                    .map(|d| {
                        (
                            format!("Dim{d:02}"),
                            format!("v{}", (i * 7 + d) % (3 + 40 * d)),
                        )
                    })
                    .collect();
                Arc::new(SeriesKey {
                    namespace: format!("NS/{}", i % 3),
                    metric_name: format!("metric_{}", i % 17),
                    dimensions: dims,
                    unit: ["Percent", "Count", "Bytes"][i % 3].to_string(),
                    storage_resolution: if i % 5 == 0 { 1 } else { 60 },
                })
            })
            .collect()
    }

    /// The point columns of `rows` rows starting at `first` (statistic sets on every 7th).
    fn points(
        runs: &[(u32, u32)],
        series: &[Arc<SeriesKey>],
        first: usize,
        rows: usize,
    ) -> PointColumns {
        let mut time = Vec::new();
        let mut value = Vec::new();
        let mut stat = Vec::new();
        let mut resolution = Vec::new();
        let mut k = 0;
        for &(s, n) in runs {
            for j in 0..n as usize {
                if k >= first && k < first + rows {
                    time.push(1_700_000_000_000_000 + (j as i64) * 10_000_000);
                    let stats = k % 7 == 3;
                    value.push((!stats).then_some(k as f64 * 0.25));
                    stat.push(stats.then_some(k as f64));
                    resolution.push(series[s as usize].storage_resolution);
                }
                k += 1;
            }
        }
        let f = |v: &Vec<Option<f64>>| -> ArrayRef { Arc::new(Float64Array::from(v.clone())) };
        PointColumns {
            time: Arc::new(TimestampMicrosecondArray::from(time).with_timezone(UTC)),
            value: f(&value),
            sample_count: f(&stat),
            sum: f(&stat),
            min: f(&stat),
            max: f(&stat),
            storage_resolution: Arc::new(Int32Array::from(resolution)),
        }
    }

    /// The same rows as an Arrow batch, built with Arrow's own builders.
    fn arrow_batch(runs: &[(u32, u32)], series: &[Arc<SeriesKey>]) -> RecordBatch {
        let rows: usize = runs.iter().map(|&(_, n)| n as usize).sum();
        let p = points(runs, series, 0, rows);
        let (mut ns, mut name, mut unit) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut dims = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for &(s, n) in runs {
            let key = &series[s as usize];
            for _ in 0..n {
                ns.append_value(&key.namespace);
                name.append_value(&key.metric_name);
                unit.append_value(&key.unit);
                for (k, v) in &key.dimensions {
                    dims.keys().append_value(k);
                    dims.values().append_value(v);
                }
                dims.append(true).expect("map entries balance");
            }
        }
        let schema = TableKind::Metrics.schema();
        let dims: ArrayRef = Arc::new(dims.finish());
        // MapBuilder names its fields its own way; the table's map type is what both write.
        let dims = arrow::compute::cast(
            &dims,
            schema
                .field_with_name("dimensions")
                .expect("field")
                .data_type(),
        )
        .expect("same map shape");
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(ns.finish()),
                Arc::new(name.finish()),
                dims,
                p.time,
                p.value,
                Arc::new(unit.finish()),
                p.sample_count,
                p.sum,
                p.min,
                p.max,
                p.storage_resolution,
            ],
        )
        .expect("batch matches the schema")
    }

    fn read_back(bytes: Bytes) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("footer")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader
            .collect::<std::result::Result<_, _>>()
            .expect("pages decode");
        concat_batches(&TableKind::Metrics.schema(), &batches).expect("same schema")
    }

    /// Writes `runs` in row groups of at most `group_rows`, feeding point columns in slices of
    /// `slice` rows.
    fn write_series(
        series: &[Arc<SeriesKey>],
        runs: &[(u32, u32)],
        group_rows: u32,
        slice: usize,
    ) -> (Bytes, FileStats) {
        let mut w = MetricsFileWriter::new().expect("writer");
        // Cut the runs into row groups.
        let mut groups: Vec<Vec<(u32, u32)>> = vec![Vec::new()];
        let mut in_group = 0;
        for &(s, mut n) in runs {
            while n > 0 {
                let take = n.min(group_rows - in_group);
                groups.last_mut().expect("one group").push((s, take));
                in_group += take;
                n -= take;
                if in_group == group_rows {
                    groups.push(Vec::new());
                    in_group = 0;
                }
            }
        }
        let mut first = 0;
        let all = points(runs, series, 0, runs.iter().map(|&(_, n)| n as usize).sum());
        for g in groups.iter().filter(|g| !g.is_empty()) {
            let rows: usize = g.iter().map(|&(_, n)| n as usize).sum();
            let mut rg = w.row_group(series, g).expect("string columns");
            let mut at = 0;
            while at < rows {
                let len = slice.min(rows - at);
                let cut = |a: &ArrayRef| a.slice(first + at, len);
                rg.write_points(&PointColumns {
                    time: cut(&all.time),
                    value: cut(&all.value),
                    sample_count: cut(&all.sample_count),
                    sum: cut(&all.sum),
                    min: cut(&all.min),
                    max: cut(&all.max),
                    storage_resolution: cut(&all.storage_resolution),
                })
                .expect("points");
                at += len;
            }
            w.write_row_group(rg).expect("row group");
            first += rows;
        }
        w.finish().expect("file")
    }

    #[test]
    fn files_from_series_read_back_the_same_as_files_from_arrow_batches() {
        let series = series_set(400);
        // Storage order: runs of 1 to 45,000 rows (past a page), one series twice.
        let mut runs: Vec<(u32, u32)> = (0..400u32).map(|s| (s, 1 + (s * 37) % 900)).collect();
        runs[10].1 = 45_000;
        runs.push((5, 3));
        let (bytes, stats) = write_series(&series, &runs, 100_000, 30_000);
        let rows: usize = runs.iter().map(|&(_, n)| n as usize).sum();
        assert_eq!(stats.num_records as usize, rows);

        let expected = arrow_batch(&runs, &series);
        let mut enc = ParquetEncoder::new(TableKind::Metrics).expect("encoder");
        enc.write(&expected).expect("write");
        let (arrow_bytes, arrow_stats) = enc.finish().expect("finish");
        assert_eq!(stats.time_range, arrow_stats.time_range);

        let ours = read_back(bytes.clone());
        assert_eq!(ours.num_rows(), rows);
        assert_eq!(ours, read_back(arrow_bytes));
        assert_eq!(ours, expected);

        // Row groups as asked, chunk statistics on the top-level strings, pages cut at rows.
        let file = SerializedFileReader::new(bytes).expect("file");
        let meta = file.metadata();
        assert_eq!(meta.num_row_groups(), rows.div_ceil(100_000));
        let rg = meta.row_group(0);
        let names = rg.column(1).statistics().expect("metric_name statistics");
        assert_eq!(names.null_count_opt(), Some(0));
        let Statistics::ByteArray(names) = names else {
            panic!("metric_name is a byte array")
        };
        assert_eq!(
            names.min_opt().and_then(|v| v.as_utf8().ok()),
            Some("metric_0")
        );
        assert_eq!(
            names.max_opt().and_then(|v| v.as_utf8().ok()),
            Some("metric_9")
        );
        assert!(
            rg.column(3).statistics().is_none(),
            "map values carry no statistics"
        );
    }

    #[test]
    fn dictionaries_of_every_bit_width_read_back() {
        // One series per distinct dimension value: dictionaries of 1 to 1,500 entries.
        for distinct in [1usize, 2, 3, 4, 5, 8, 9, 255, 256, 257, 1_500] {
            let series: Vec<Arc<SeriesKey>> = (0..distinct)
                .map(|i| {
                    Arc::new(SeriesKey {
                        namespace: "NS".into(),
                        metric_name: "m".into(),
                        dimensions: vec![("Host".into(), format!("h{i}"))],
                        unit: "None".into(),
                        storage_resolution: 60,
                    })
                })
                .collect();
            let runs: Vec<(u32, u32)> = (0..distinct as u32).map(|s| (s, 1 + s % 11)).collect();
            let (bytes, _) = write_series(&series, &runs, 1 << 20, 1 << 16);
            assert_eq!(
                read_back(bytes),
                arrow_batch(&runs, &series),
                "{distinct} distinct values"
            );
        }
    }

    #[test]
    fn point_columns_that_do_not_fit_the_row_group_are_refused() {
        let series = series_set(2);
        let runs = [(0, 3), (1, 2)];
        let mut w = MetricsFileWriter::new().expect("writer");
        let mut rg = w.row_group(&series, &runs).expect("strings");
        let six = points(&[(0, 6)], &series, 0, 6);
        assert!(rg.write_points(&six).is_err(), "6 points for 5 rows");
        let four = points(&[(0, 4)], &series, 0, 4);
        rg.write_points(&four).expect("4 of 5");
        assert!(w.write_row_group(rg).is_err(), "a row short");
        assert!(w.row_group(&series, &[(2, 1)]).is_err(), "series 2 of 2");
    }
}
