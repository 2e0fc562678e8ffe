//! The hand-written part of the metrics encoder: a string column chunk's dictionary page and
//! its data pages of dictionary indices (RLE/bit-packed hybrid, as the Parquet format
//! specification defines it), built from series runs instead of per-row strings. Kept by hand
//! because the measured flush cost of the Arrow writer on these columns was most of a flush
//! (docs/decisions.md, "The metrics flush writes the series string columns itself").

use super::*;

/// Encodes one string leaf of a row group from its series: a dictionary page of the distinct
/// strings, then data pages of about `data_page_row_count_limit` rows (cut at row boundaries,
/// so the offset index is exact) holding each row's dictionary indices.
pub(super) fn encode_series_column(
    descr: &ColumnDescPtr,
    leaf: SeriesLeaf,
    props: &WriterProperties,
    series: &[Arc<SeriesKey>],
    runs: &[(u32, u32)],
) -> Result<(Bytes, ColumnCloseResult)> {
    // The dictionary, and each series' indices into it, worked out once per series.
    let mut dict: Vec<&str> = Vec::new();
    let mut lookup: HashMap<&str, u32> = HashMap::new();
    let mut pool: Vec<u32> = Vec::new();
    let mut spans: HashMap<u32, (usize, usize)> = HashMap::new();
    let mut run_spans = Vec::with_capacity(runs.len());
    let mut scratch = Vec::new();
    for &(s, _) in runs {
        let span = match spans.get(&s) {
            Some(&span) => span,
            None => {
                let key = series.get(s as usize).ok_or_else(|| {
                    Error::Internal(format!("a run names series {s} of {}", series.len()))
                })?;
                scratch.clear();
                leaf.strings(key, &mut scratch);
                let start = pool.len();
                for &v in &scratch {
                    let next = dict.len() as u32;
                    let id = *lookup.entry(v).or_insert_with(|| {
                        dict.push(v);
                        next
                    });
                    pool.push(id);
                }
                spans.insert(s, (start, pool.len()));
                (start, pool.len())
            }
        };
        run_spans.push(span);
    }

    let mut chunk = ChunkPages::new(leaf.in_map(), descr.max_def_level() as u32, dict.len())?;
    let mut plain = Vec::with_capacity(dict.iter().map(|s| s.len() + 4).sum());
    for s in &dict {
        plain.extend_from_slice(&(s.len() as u32).to_le_bytes());
        plain.extend_from_slice(s.as_bytes());
    }
    chunk.dictionary(&plain, dict.len())?;
    let page_rows = props
        .data_page_row_count_limit()
        .clamp(1, u32::MAX as usize) as u32;
    let mut in_page = 0u32;
    for (&(_, n), &(a, b)) in runs.iter().zip(&run_spans) {
        let ids = &pool[a..b];
        let mut left = n;
        while left > 0 {
            let take = left.min(page_rows - in_page);
            chunk.push_rows(ids, take);
            in_page += take;
            left -= take;
            if in_page == page_rows {
                chunk.page(in_page)?;
                in_page = 0;
            }
        }
    }
    if in_page > 0 {
        chunk.page(in_page)?;
    }

    let rows: u64 = runs.iter().map(|&(_, n)| u64::from(n)).sum();
    let mut meta = ColumnChunkMetaData::builder(Arc::clone(descr))
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        .set_encodings(vec![
            Encoding::PLAIN,
            Encoding::RLE,
            Encoding::RLE_DICTIONARY,
        ])
        .set_num_values(chunk.values)
        .set_total_compressed_size(chunk.compressed as i64)
        .set_total_uncompressed_size(chunk.uncompressed as i64)
        .set_data_page_offset(chunk.first_data_page.unwrap_or(0))
        .set_dictionary_page_offset(Some(0));
    if props.statistics_enabled(descr.path()) != EnabledStatistics::None
        && let (Some(lo), Some(hi)) = (dict.iter().min(), dict.iter().max())
    {
        meta = meta.set_statistics(Statistics::new(
            Some(ByteArray::from(lo.as_bytes().to_vec())),
            Some(ByteArray::from(hi.as_bytes().to_vec())),
            None,
            Some(0),
            false,
        ));
    }
    let (bytes, offset_index) = chunk.finish()?;
    let close = ColumnCloseResult {
        bytes_written: bytes.len() as u64,
        rows_written: rows,
        metadata: meta.build()?,
        bloom_filter: None,
        column_index: None,
        offset_index: Some(offset_index),
    };
    Ok((bytes, close))
}

/// The pages of one column chunk as they are written: levels and dictionary indices of the
/// page being filled, and what the chunk's metadata will need.
struct ChunkPages {
    in_map: bool,
    max_def: u32,
    index_width: u8,
    sink: TrackedWrite<Vec<u8>>,
    compressor: zstd::bulk::Compressor<'static>,
    rep: Vec<u32>,
    def: Vec<u32>,
    ids: Vec<u32>,
    raw: Vec<u8>,
    offsets: OffsetIndexBuilder,
    values: i64,
    compressed: usize,
    uncompressed: usize,
    first_data_page: Option<i64>,
}

impl ChunkPages {
    fn new(in_map: bool, max_def: u32, dict_len: usize) -> Result<Self> {
        Ok(Self {
            in_map,
            max_def,
            index_width: bit_width(dict_len.saturating_sub(1) as u32).max(1),
            sink: TrackedWrite::new(Vec::new()),
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .map_err(|e| Error::Internal(format!("zstd: {e}")))?,
            rep: Vec::new(),
            def: Vec::new(),
            ids: Vec::new(),
            raw: Vec::new(),
            offsets: OffsetIndexBuilder::new(),
            values: 0,
            compressed: 0,
            uncompressed: 0,
            first_data_page: None,
        })
    }

    /// Appends `rows` rows of a series whose indices for this leaf are `ids`.
    fn push_rows(&mut self, ids: &[u32], rows: u32) {
        let rows = rows as usize;
        if !self.in_map {
            // A top-level required column: one value a row, no levels.
            if let Some(&id) = ids.first() {
                self.ids.extend(std::iter::repeat_n(id, rows));
            }
            return;
        }
        if ids.is_empty() {
            self.rep.extend(std::iter::repeat_n(0, rows));
            self.def.extend(std::iter::repeat_n(EMPTY_MAP_DEF, rows));
            return;
        }
        for _ in 0..rows {
            self.rep.push(0);
            self.rep.extend(std::iter::repeat_n(1, ids.len() - 1));
            self.ids.extend_from_slice(ids);
        }
        self.def
            .extend(std::iter::repeat_n(self.max_def, rows * ids.len()));
    }

    /// Writes the dictionary page (PLAIN-encoded strings).
    fn dictionary(&mut self, plain: &[u8], entries: usize) -> Result<()> {
        let page = Page::DictionaryPage {
            buf: self.compress(plain)?,
            num_values: entries as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        self.write(page, plain.len())?;
        Ok(())
    }

    /// Writes the rows pushed since the last page as a data page (format v1: repetition and
    /// definition levels, each behind its byte length, then the dictionary indices behind
    /// their bit width; all of it compressed).
    fn page(&mut self, rows: u32) -> Result<()> {
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let num_values = if self.in_map {
            level_section(&self.rep, 1, &mut raw);
            level_section(&self.def, bit_width(self.max_def), &mut raw);
            self.rep.len()
        } else {
            self.ids.len()
        };
        raw.push(self.index_width);
        encode_hybrid(&self.ids, self.index_width, &mut raw);
        let page = Page::DataPage {
            buf: self.compress(&raw)?,
            num_values: num_values as u32,
            encoding: Encoding::RLE_DICTIONARY,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let (offset, size) = self.write(page, raw.len())?;
        self.first_data_page.get_or_insert(offset);
        self.offsets.append_offset_and_size(offset, size);
        self.offsets.append_row_count(i64::from(rows));
        self.values += num_values as i64;
        self.raw = raw;
        self.rep.clear();
        self.def.clear();
        self.ids.clear();
        Ok(())
    }

    fn compress(&mut self, raw: &[u8]) -> Result<Bytes> {
        self.compressor
            .compress(raw)
            .map(Bytes::from)
            .map_err(|e| Error::Internal(format!("zstd: {e}")))
    }

    /// Writes a page; returns its offset in the chunk and its size with the header.
    fn write(&mut self, page: Page, uncompressed: usize) -> Result<(i64, i32)> {
        let spec = SerializedPageWriter::new(&mut self.sink)
            .write_page(CompressedPage::new(page, uncompressed))?;
        self.compressed += spec.compressed_size;
        self.uncompressed += spec.uncompressed_size;
        Ok((spec.offset as i64, spec.compressed_size as i32))
    }

    fn finish(self) -> Result<(Bytes, OffsetIndexMetaData)> {
        Ok((Bytes::from(self.sink.into_inner()?), self.offsets.build()))
    }
}

/// Bits needed for values up to `max`.
pub(super) fn bit_width(max: u32) -> u8 {
    (32 - max.leading_zeros()) as u8
}

/// A v1 data page's level section: the encoded levels behind their length in 4 bytes.
pub(super) fn level_section(levels: &[u32], width: u8, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    encode_hybrid(levels, width, out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Groups of 8 values in one bit-packed run at most: its header then fits one byte, as with
/// the Parquet writers readers know best.
const MAX_PACKED_GROUPS: usize = 63;

/// Appends `values` (each below `2^width`) in Parquet's RLE / bit-packing hybrid encoding:
/// a run of 8 or more equal values as one repeated value, everything else bit-packed in
/// groups of 8 (the last group padded with zeros).
pub(super) fn encode_hybrid(values: &[u32], width: u8, out: &mut Vec<u8>) {
    let n = values.len();
    let mut i = 0;
    while i < n {
        let run = run_length(values, i);
        if run >= 8 {
            put_varint(out, (run as u64) << 1);
            let bytes = values[i].to_le_bytes();
            out.extend_from_slice(&bytes[..usize::from(width).div_ceil(8)]);
            i += run;
            continue;
        }
        let start = i;
        let mut groups = 0;
        loop {
            i = (i + 8).min(n);
            groups += 1;
            if i >= n || groups == MAX_PACKED_GROUPS || run_length(values, i) >= 8 {
                break;
            }
        }
        put_varint(out, ((groups as u64) << 1) | 1);
        bit_pack(&values[start..i], groups * 8, width, out);
    }
}

/// How many values from `i` on equal `values[i]`.
pub(super) fn run_length(values: &[u32], i: usize) -> usize {
    let v = values[i];
    values[i..].iter().take_while(|&&x| x == v).count()
}

/// Packs `count` values (`values` then zeros), `width` bits each, least significant bit first.
/// `count` is a multiple of 8, so the output ends on a byte boundary.
pub(super) fn bit_pack(values: &[u32], count: usize, width: u8, out: &mut Vec<u8>) {
    let width = u32::from(width);
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for k in 0..count {
        let v = u64::from(values.get(k).copied().unwrap_or(0));
        acc |= v << bits;
        bits += width;
        if bits >= 32 {
            out.extend_from_slice(&(acc as u32).to_le_bytes());
            acc >>= 32;
            bits -= 32;
        }
    }
    out.extend_from_slice(&acc.to_le_bytes()[..(bits / 8) as usize]);
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
