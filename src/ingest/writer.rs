//! One staged Parquet file per year, written as rows arrive.
//!
//! Each converted block's rows of a year are written at once as a row group
//! (about 150,000 rows for an 8 MB block of CSV): nothing is buffered or copied
//! here, so memory does not depend on how many years a source spans.

use super::convert::store_schema;
use crate::error::{Error, Result};
use crate::store::manifest::Codec;
use polars::polars_utils::compression::ZstdLevel;
use polars::prelude::*;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Target rows per row group of files written in one piece (merges, groups).
const ROW_GROUP_ROWS: usize = 512 * 1024;

/// The write options of every file of a dataset: its codec, min/max statistics.
pub fn write_options(codec: Codec) -> ParquetWriteOptions {
    let compression = match codec {
        Codec::Zstd => ParquetCompression::Zstd(Some(ZstdLevel::try_new(3).expect("valid zstd level"))),
        Codec::Lz4 => ParquetCompression::Lz4Raw,
        Codec::None => ParquetCompression::Uncompressed,
    };
    ParquetWriteOptions {
        compression,
        statistics: StatisticsOptions::default(),
        row_group_size: Some(ROW_GROUP_ROWS),
        ..Default::default()
    }
}

fn writer_for(path: &Path, codec: Codec) -> Result<ParquetWriter<File>> {
    let file = File::create(path).map_err(|e| Error::io("cannot create", path, e))?;
    let opts = write_options(codec);
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
    /// Rows flagged `aggregate`.
    pub aggregate_rows: u64,
    pub path: PathBuf,
}

struct YearFile {
    path: PathBuf,
    writer: polars::io::parquet::write::BatchedWriter<File>,
    written: u64,
    aggregates: u64,
}

pub struct PartitionWriter {
    dir: PathBuf,
    years: BTreeMap<i32, YearFile>,
    schema: Schema,
    codec: Codec,
}

impl PartitionWriter {
    pub fn new(dir: PathBuf, measures: &[String], codec: Codec) -> Self {
        PartitionWriter { dir, years: BTreeMap::new(), schema: store_schema(measures), codec }
    }

    /// Writes rows of `year`; returns the index in the year's file of the first one.
    pub fn add(&mut self, year: i32, frame: DataFrame) -> Result<u64> {
        if !self.years.contains_key(&year) {
            std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("cannot create", &self.dir, e))?;
            let path = self.dir.join(format!("year={year}.parquet"));
            let writer = writer_for(&path, self.codec)?
                .with_key_value_metadata(Some(crate::store::portable_metadata(&self.schema)))
                .batched(&self.schema)?;
            self.years.insert(year, YearFile { path, writer, written: 0, aggregates: 0 });
        }
        let y = self.years.get_mut(&year).expect("inserted above");
        let first = y.written;
        y.writer.write_batch(&frame).map_err(|e| crate::error::writing(&y.path, e))?;
        y.written += frame.height() as u64;
        y.aggregates += frame.column("aggregate")?.bool()?.sum().unwrap_or(0) as u64;
        Ok(first)
    }

    /// Closes every file.
    pub fn finish(self) -> Result<Vec<StagedYear>> {
        let mut out = Vec::new();
        for (year, y) in self.years {
            y.writer.finish().map_err(|e| crate::error::writing(&y.path, e))?;
            out.push(StagedYear { year, rows: y.written, aggregate_rows: y.aggregates, path: y.path });
        }
        Ok(out)
    }
}

/// Writes a lazy frame to one Parquet file with the store's options and `codec`.
pub fn sink_parquet(mut lf: LazyFrame, path: &Path, codec: Codec) -> Result<()> {
    let schema = lf.collect_schema()?;
    let options = ParquetWriteOptions {
        key_value_metadata: Some(crate::store::portable_metadata(&schema)),
        ..write_options(codec)
    };
    lf.sink(
        SinkDestination::File { target: SinkTarget::Path(PlRefPath::new(path.to_string_lossy().as_ref())) },
        FileWriteFormat::Parquet(Arc::new(options)),
        UnifiedSinkArgs { mkdir: true, ..Default::default() },
    )?
    .collect()
    .map_err(|e| crate::error::writing(path, e))?;
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
