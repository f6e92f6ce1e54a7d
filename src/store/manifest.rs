//! The manifest of a dataset: the single source of truth about what is stored.
//!
//! Readers that know tradeql read the manifest; readers that don't (DuckDB,
//! pyarrow, Spark) read the Hive directories, which hold exactly the files the
//! manifest lists once any interrupted ingest has been recovered. Replacing the
//! manifest file (write, fsync, rename) is the commit point of an ingest.

use crate::period::{Frequency, Period};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most distinct codes of a column a file's manifest entry lists.
pub const CODES_KEPT: usize = 2000;

/// The most distinct codes of a column the dataset-wide index lists
/// ([`Manifest::wide_codes`]), for the columns too wide for a file's entry.
pub const WIDE_CODES_KEPT: usize = 100_000;

/// Format version of manifests written by this tradeql.
pub const MANIFEST_FORMAT: u32 = 1;

/// How a dataset's Parquet pages are compressed. Readers take every codec
/// (each file says its own); the dataset's codec is what its writes use.
/// Measured on 16.1 M generated rows (benches/RESULTS.md, run J): zstd
/// 178 MB, the five bench queries 0.12-0.21 s from the rows; lz4 229 MB
/// (+29%), 0.06-0.13 s; none 270 MB (+52%), 0.04-0.09 s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// zstd level 3: the smallest files.
    #[default]
    Zstd,
    /// LZ4: about 3x faster to decompress than zstd, files about 30% larger.
    Lz4,
    /// Uncompressed: nothing to decompress, files about 50% larger.
    None,
}

impl Codec {
    pub fn is_zstd(&self) -> bool {
        *self == Codec::Zstd
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::None => "none",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub dataset: String,
    /// Drawn when the dataset is created and kept by every revision: a
    /// dataset deleted and created again (its version back at 1) is another
    /// dataset to whoever remembers what it read (`batch --incremental`).
    #[serde(default)]
    pub id: String,
    /// Grows by one with every committed change.
    pub version: u64,
    pub updated_at: String,
    pub frequency: Frequency,
    pub currency: Option<String>,
    pub quantity_unit: Option<String>,
    /// Column names and types as stored (plus the Hive key `year`).
    pub schema: Vec<ColumnSpec>,
    pub rows: u64,
    /// Rows flagged `aggregate` (world, total, bloc rows), included in `rows`.
    pub aggregate_rows: u64,
    /// Every period present, as labels (`2024-12`), sorted.
    pub periods: Vec<String>,
    /// Codes declared aggregates by the ingests' mappings, per dimension
    /// (`aggregate_partners`, ...), besides WLD, TOTAL and group names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aggregate_codes: BTreeMap<String, Vec<String>>,
    /// The distinct codes of each code column some file holds more than
    /// [`CODES_KEPT`] of (up to [`WIDE_CODES_KEPT`]), sorted: the index the
    /// files' `wide` ranges point into. A query finds a column's codes here
    /// instead of reading every file's dictionaries (10 s at a billion rows).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wide_codes: BTreeMap<String, Vec<String>>,
    pub files: Vec<DataFile>,
    /// Every ingest that changed this dataset, oldest first.
    pub ingests: Vec<IngestRecord>,
    /// Further numeric measures beside value and quantity, in store order
    /// (their columns follow `aggregate` in every file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<MeasureSpec>,
    /// Aggregate tables kept beside the rows (`tradeql rollup add`), each
    /// with one file per year, written by the same commits as the rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollups: Vec<Rollup>,
    /// The codec of the files this dataset's writes make (rows and rollups).
    #[serde(default, skip_serializing_if = "Codec::is_zstd")]
    pub compression: Codec,
    /// Set on a copy of the manifest that reads a rollup's files in place of
    /// the rows ([`Manifest::rollup_view`]); never stored.
    #[serde(skip)]
    pub view: Option<String>,
    /// On such a copy: the code columns the rollup keeps cut, with the
    /// characters it keeps (`product`, 2 for `chapter(product)`).
    #[serde(skip)]
    pub view_cuts: Vec<(String, usize)>,
}

/// An aggregate table of a dataset: its rows summed by `period` and the
/// code columns `by`, with the counts, minimums and maximums that compose
/// (see `rollup::COLUMNS`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rollup {
    pub name: String,
    /// Stored text columns, in the store's order (the dataset's own periods are always kept).
    pub by: Vec<String>,
    /// One file per year, beside the year's rows: `year=2024/rollup-NAME-v000003.parquet`.
    pub files: Vec<DataFile>,
}

/// A further measure of a dataset and its unit (CNY, ratio, kg, ...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeasureSpec {
    pub name: String,
    pub unit: String,
}

/// The dimensions that can hold aggregate rows (a total of other rows of the
/// same dimension): the world, a continent or bloc, TOTAL, a national row,
/// the total flow.
pub const AGGREGATE_DIMENSIONS: [&str; 4] = ["partner", "flow", "product", "region"];

/// A new dataset identity: 16 hex digits from the clock, the process and a
/// counter; unique across the creations of a dataset in practice.
pub fn new_dataset_id(dataset: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let seed = format!("{dataset}|{nanos}|{}|{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes()))
}

impl Manifest {
    /// Every stored file this version lists: the rows', then its rollups'.
    pub fn stored_files(&self) -> impl Iterator<Item = &DataFile> {
        self.files.iter().chain(self.rollups.iter().flat_map(|r| r.files.iter()))
    }

    /// A copy of this manifest that reads the rollup `name` in place of the
    /// rows: its files are the rollup's and its schema the rollup table's.
    pub fn rollup_view(&self, name: &str) -> Option<Manifest> {
        let r = self.rollups.iter().find(|r| r.name == name)?;
        let mut schema = vec![ColumnSpec { name: "period".into(), dtype: "date".into() }];
        schema.extend(
            r.by.iter().map(|b| ColumnSpec { name: crate::rollup::by_column(b).0.to_string(), dtype: "str".into() }),
        );
        let measures: Vec<String> = self.measure_columns();
        schema.extend(
            crate::rollup::table_columns(&measures).into_iter().map(|name| ColumnSpec { name, dtype: "f64".into() }),
        );
        schema.push(ColumnSpec { name: "year".into(), dtype: "i32".into() });
        Some(Manifest {
            rows: r.files.iter().map(|f| f.rows).sum(),
            aggregate_rows: 0,
            files: r.files.clone(),
            schema,
            rollups: Vec::new(),
            view: Some(name.to_string()),
            view_cuts: r
                .by
                .iter()
                .filter_map(|b| match crate::rollup::by_column(b) {
                    (c, Some(kept)) => Some((c.to_string(), kept)),
                    _ => None,
                })
                .collect(),
            ..self.clone()
        })
    }

    /// The floating-point columns of the rows: value, quantity and the further measures.
    pub fn measure_columns(&self) -> Vec<String> {
        let mut out = vec!["value".to_string(), "quantity".to_string()];
        out.extend(self.measures.iter().map(|m| m.name.clone()));
        out
    }

    /// The distinct codes of `column` over the dataset, when every file's
    /// entry lists them (None: read them from the files).
    pub fn listed_codes(&self, column: &str) -> Option<Vec<String>> {
        if let Some(index) = self.wide_codes.get(column)
            && self.files.iter().all(|f| f.wide.contains_key(column))
        {
            return Some(index.clone());
        }
        let mut all = std::collections::BTreeSet::new();
        for f in &self.files {
            all.extend(f.codes.get(column)?.iter().cloned());
        }
        Some(all.into_iter().collect())
    }

    /// The codes that are aggregates of `dim` in this dataset: those its
    /// ingests' mappings declared, WLD (partner) or TOTAL (product), and the
    /// names of the store's group tables of `dim`.
    pub fn aggregate_candidates(&self, dim: &str, groups: &GroupsManifest) -> Vec<String> {
        let mut codes: Vec<String> = self.aggregate_codes.get(dim).cloned().unwrap_or_default();
        match dim {
            "partner" => codes.push("WLD".into()),
            "product" => codes.push("TOTAL".into()),
            // Re-exports are part of exports, re-imports of imports, and the
            // total flow is their sum: none is added to the flows it overlaps.
            "flow" => codes.extend(["total".into(), "re-export".into(), "re-import".into()]),
            _ => {}
        }
        for t in groups.tables.iter().filter(|t| t.of == dim) {
            codes.extend(t.groups.iter().map(|(g, _)| g.clone()));
        }
        codes.sort();
        codes.dedup();
        codes
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub dtype: String,
}

/// One Parquet file of the dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataFile {
    /// Relative to the dataset directory: `year=2024/part-v000003.parquet`.
    pub path: String,
    pub year: i32,
    pub rows: u64,
    /// Rows flagged `aggregate` (world, total or bloc rows).
    pub aggregate_rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Periods this file holds, as labels.
    pub periods: Vec<String>,
    /// The distinct codes of each code column the file holds, sorted, for
    /// columns with at most [`CODES_KEPT`] of them: a query checks its code
    /// literals and finds the aggregate rows without reading the file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub codes: BTreeMap<String, Vec<String>>,
    /// The codes of each column of [`Manifest::wide_codes`] the file holds,
    /// as inclusive ranges of positions in that sorted list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wide: BTreeMap<String, Vec<[u32; 2]>>,
}

impl DataFile {
    /// The codes of a wide column the file holds, read off the dataset's
    /// index (None when the entry has no ranges for it or they point past it).
    pub fn wide_codes<'a>(&self, index: &'a [String], column: &str) -> Option<Vec<&'a String>> {
        let mut out = Vec::new();
        for [from, to] in self.wide.get(column)? {
            out.extend(index.get(*from as usize..=*to as usize)?);
        }
        Some(out)
    }
}

/// The positions of `codes` (sorted, each in `index`) in the sorted `index`,
/// as inclusive ranges.
pub fn code_ranges(index: &[String], codes: &[String]) -> Vec<[u32; 2]> {
    let mut ranges: Vec<[u32; 2]> = Vec::new();
    for c in codes {
        let Ok(at) = index.binary_search(c) else { continue };
        let at = at as u32;
        match ranges.last_mut() {
            Some(r) if r[1] + 1 == at => r[1] = at,
            _ => ranges.push([at, at]),
        }
    }
    ranges
}

/// What one ingest did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestRecord {
    pub version: u64,
    pub at: String,
    pub sources: Vec<SourceFile>,
    pub mapping: Option<SourceFile>,
    /// The code tables the mapping read (`[codes.X]`), by content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub code_tables: Vec<SourceFile>,
    pub rows: u64,
    pub rejected: u64,
    pub periods_added: Vec<String>,
    pub periods_replaced: Vec<String>,
}

/// A file that was read, identified by its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl Manifest {
    /// Periods as values, in order.
    pub fn period_values(&self) -> Vec<Period> {
        self.periods
            .iter()
            .filter_map(|p| Period::parse(p).ok())
            .map(|p| Period { frequency: self.frequency, ..p })
            .collect()
    }

    /// Periods inside the covered range that hold no data.
    pub fn gaps(&self) -> Vec<Period> {
        let present = self.period_values();
        let (Some(first), Some(last)) = (present.first(), present.last()) else {
            return Vec::new();
        };
        Period::range(*first, *last).filter(|p| !present.contains(p)).collect()
    }
}

/// The manifest of a groups table set: `_groups/manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct GroupsManifest {
    pub format: u32,
    pub version: u64,
    pub updated_at: String,
    pub tables: Vec<GroupTable>,
    /// Exchange rates by period, for convert().
    #[serde(default)]
    pub rates: Option<RateTable>,
    /// Names of codes, one table per dimension, for name() in queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<NameTable>,
}

/// A table of code names (`code,name`) for one dimension.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NameTable {
    /// The dimension whose codes it names: reporter, partner, product or region.
    pub of: String,
    /// Relative to `_groups/`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub source: SourceFile,
}

impl GroupsManifest {
    /// The names table that names codes of `dim` (reporters by the partner
    /// table when there is no reporter table: both are ISO 3166 codes).
    pub fn names_of(&self, dim: &str) -> Option<&NameTable> {
        self.names
            .iter()
            .find(|t| t.of == dim)
            .or_else(|| if dim == "reporter" { self.names.iter().find(|t| t.of == "partner") } else { None })
    }
}

/// The exchange-rate table: `period,currency,per_usd` (units of the currency
/// for one US dollar, by period).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RateTable {
    /// Relative to `_groups/`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub currencies: Vec<String>,
    pub periods: Vec<String>,
    pub source: SourceFile,
}

/// One reference-group table (`group,member,valid_from,valid_to`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupTable {
    pub name: String,
    /// The dimension whose codes the members are: `partner`, `product` or `region`.
    pub of: String,
    /// Relative to `_groups/`.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Group names with their member counts (all members ever listed).
    pub groups: Vec<(String, u64)>,
    pub source: SourceFile,
}

/// Compresses consecutive periods into `a .. b` runs for display.
pub fn describe_periods(periods: &[Period]) -> String {
    let mut runs: Vec<(Period, Period)> = Vec::new();
    for p in periods {
        match runs.last_mut() {
            Some((_, end)) if end.next() == *p => *end = *p,
            _ => runs.push((*p, *p)),
        }
    }
    runs.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a} .. {b}") }).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_described_as_runs() {
        let ps: Vec<Period> = ["2024-01", "2024-02", "2024-03", "2024-05", "2024-07", "2024-08"]
            .iter()
            .map(|s| Period::parse(s).unwrap())
            .collect();
        assert_eq!(describe_periods(&ps), "2024-01 .. 2024-03, 2024-05, 2024-07 .. 2024-08");
    }
}
