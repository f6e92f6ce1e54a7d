//! One staged Parquet file per year, written as rows arrive.
//!
//! Rows are buffered per year and written as row groups of about half a million
//! rows. The buffers of all years together hold at most [`MAX_HELD_ROWS`]; past
//! that the fullest year is written out early, so a source that jumps between
//! many years still ingests in bounded memory.

use super::convert::store_schema;
use crate::error::{Error, Result};
use polars::polars_utils::compression::ZstdLevel;
use polars::prelude::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Target rows per row group.
const ROW_GROUP_ROWS: usize = 512 * 1024;
/// Rows buffered across all years before the fullest is flushed.
const MAX_HELD_ROWS: usize = 2 * ROW_GROUP_ROWS;

/// The write options of every file in the store: zstd, min/max statistics.
pub fn write_options() -> ParquetWriteOptions {
    ParquetWriteOptions {
        compression: ParquetCompression::Zstd(Some(ZstdLevel::try_new(3).expect("valid zstd level"))),
        statistics: StatisticsOptions::default(),
        row_group_size: Some(ROW_GROUP_ROWS),
        ..Default::default()
    }
}

fn writer_for(path: &Path) -> Result<ParquetWriter<File>> {
    let file = File::create(path).map_err(|e| Error::io("cannot create", path, e))?;
    let opts = write_options();
    Ok(ParquetWriter::new(file)
        .with_compression(opts.compression)
        .with_statistics(opts.statistics)
        .with_row_group_size(opts.row_group_size))
}

/// A finished staged file.
#[derive(Debug, Clone)]
pub struct StagedYear {
    pub year: i32,
    pub rows: u64,
    pub path: PathBuf,
}

struct YearFile {
    path: PathBuf,
    writer: polars::io::parquet::write::BatchedWriter<File>,
    written: u64,
    pending: Vec<DataFrame>,
    pending_rows: usize,
}

pub struct PartitionWriter {
    dir: PathBuf,
    years: BTreeMap<i32, YearFile>,
    held: usize,
    schema: Schema,
}

impl PartitionWriter {
    pub fn new(dir: PathBuf) -> Self {
        PartitionWriter { dir, years: BTreeMap::new(), held: 0, schema: store_schema() }
    }

    /// Adds rows of `year`; returns the index in the year's file of the first one.
    pub fn add(&mut self, year: i32, frame: DataFrame) -> Result<u64> {
        if !self.years.contains_key(&year) {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create", &self.dir, e))?;
            let path = self.dir.join(format!("year={year}.parquet"));
            let writer = writer_for(&path)?.batched(&self.schema)?;
            self.years.insert(year, YearFile { path, writer, written: 0, pending: Vec::new(), pending_rows: 0 });
        }
        let y = self.years.get_mut(&year).expect("inserted above");
        let first = y.written + y.pending_rows as u64;
        let n = frame.height();
        y.pending.push(frame);
        y.pending_rows += n;
        self.held += n;
        if y.pending_rows >= ROW_GROUP_ROWS {
            self.flush(year)?;
        }
        while self.held > MAX_HELD_ROWS {
            let fullest = *self
                .years
                .iter()
                .max_by_key(|(_, y)| y.pending_rows)
                .map(|(year, _)| year)
                .expect("rows are held, so a year is open");
            self.flush(fullest)?;
        }
        Ok(first)
    }

    fn flush(&mut self, year: i32) -> Result<()> {
        let y = self.years.get_mut(&year).expect("flush of an open year");
        if y.pending.is_empty() {
            return Ok(());
        }
        let mut frames = std::mem::take(&mut y.pending).into_iter();
        let mut df = frames.next().expect("pending is not empty");
        for f in frames {
            df.vstack_mut_owned(f)?;
        }
        df.rechunk_mut_par();
        y.writer.write_batch(&df)?;
        y.written += y.pending_rows as u64;
        self.held -= y.pending_rows;
        y.pending_rows = 0;
        Ok(())
    }

    /// Writes what is buffered and closes every file.
    pub fn finish(mut self) -> Result<Vec<StagedYear>> {
        let years: Vec<i32> = self.years.keys().copied().collect();
        let mut out = Vec::new();
        for year in years {
            self.flush(year)?;
            let y = self.years.remove(&year).expect("open year");
            y.writer.finish()?;
            out.push(StagedYear { year, rows: y.written, path: y.path });
        }
        Ok(out)
    }
}

/// Writes a lazy frame to one Parquet file with the store's options.
pub fn sink_parquet(lf: LazyFrame, path: &Path) -> Result<()> {
    lf.sink(
        SinkDestination::File { target: SinkTarget::Path(PlRefPath::new(path.to_string_lossy().as_ref())) },
        FileWriteFormat::Parquet(Arc::new(write_options())),
        UnifiedSinkArgs { mkdir: true, ..Default::default() },
    )?
    .collect()?;
    Ok(())
}

/// The key of row `row` of a staged file, as `period,reporter,partner,flow,product,region`.
pub fn key_text(path: &Path, row: u64) -> Result<String> {
    let df = super::scan(path)?.slice(row as i64, 1).collect()?;
    let mut parts = Vec::new();
    for name in ["period", "reporter", "partner", "flow", "product", "region"] {
        let v = df.column(name)?.get(0)?;
        parts.push(match v {
            AnyValue::Null => String::new(),
            AnyValue::String(s) => s.to_string(),
            AnyValue::StringOwned(s) => s.to_string(),
            AnyValue::Date(d) => crate::period::Period::from_days(d, crate::period::Frequency::Month).to_string(),
            other => other.to_string(),
        });
    }
    Ok(parts.join(","))
}
