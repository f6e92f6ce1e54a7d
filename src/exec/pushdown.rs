//! Aggregate pushdown: group sums computed straight from the store's Parquet pages.
//!
//! The store writes every code column (reporter, partner, flow, product,
//! region) and `period` dictionary-encoded: each row group holds a small
//! dictionary page and, per row, a bit-packed index into it. A group-by on
//! such keys need not decode a string per row nor hash it: the indices of the
//! key columns combine into one small integer per row, which addresses a
//! dense array of running sums. Only the dictionaries (a few hundred entries
//! per row group) are decoded as text, and only the combined cells that
//! received rows are turned into keys and merged across row groups.
//!
//! Row filters on the calendar or on one code column are evaluated once per
//! distinct value and applied by dictionary index; calendar filters also skip
//! the files none of whose periods pass.
//!
//! Every group-by of a query (or of a whole batch) that this module can
//! answer is registered with one [`Pass`]; the pass reads each file once, in
//! parallel by row group, and answers all of them from the same decoded
//! columns. It runs inside the query's polars plan (an opaque map node, so
//! nothing runs before `collect`), and its result is cached there: every query
//! of a batch that reads it shares the one pass.
//!
//! Plain-encoded key pages (a writer's choice for columns with many distinct
//! values) are read too, their values numbered as they are first seen. What
//! the pass does not read (another encoding, a column of another physical
//! type, a nested column) is not an error: it answers every group-by through
//! its polars plan instead, which gives the same rows.

use polars::prelude::*;
use polars_buffer::Buffer;
use polars_parquet::parquet::compression::{Compression, DecompressionContext};
use polars_parquet::parquet::encoding::Encoding;
use polars_parquet::parquet::encoding::hybrid_rle::{HybridRleChunk, HybridRleDecoder};
use polars_parquet::parquet::error::{ParquetError, ParquetResult};
use polars_parquet::parquet::metadata::{ColumnChunkMetadata, FileMetadata};
use polars_parquet::parquet::page::{CompressedDataPage, CompressedPage, DataPage, DictPage, Page, split_buffer};
use polars_parquet::parquet::read::{PageReader, decompress, read_metadata};
use polars_parquet::parquet::schema::types::PhysicalType;
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Where a group key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// The Hive `year` of the file (Int32).
    FileYear,
    /// `period` (a date), truncated to the first month of a span of `months`
    /// months (1: as stored, 3: quarters).
    Period { months: u32 },
    /// A text column of the store, by name.
    Code(String),
}

/// One group key of a group-by: its output name and source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub name: String,
    pub source: KeySource,
}

/// An aggregate over a floating-point column of the store (or over rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    /// Sum of the non-null values; 0 for a group with none.
    Sum,
    /// Sum of the values of the rows whose `quantity` is positive (the
    /// numerator and denominator of unit values).
    SumWherePositiveQuantity,
    /// Non-null values, as a float.
    Count,
    /// Rows, as a float.
    Rows,
    Min,
    Max,
    Mean,
}

/// One aggregate of a group-by: output name, function and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Agg {
    pub name: String,
    pub func: AggFunc,
    /// None for [`AggFunc::Rows`].
    pub column: Option<String>,
}

/// What a row filter reads: one stored text column, or the calendar
/// (`period`, and `year`, `quarter`, `month` of it, each an Int32).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterColumn {
    Code(String),
    Calendar,
}

/// A row filter the pass evaluates once per distinct value of what it reads
/// (a few hundred per dataset), then applies to each row by its dictionary index.
#[derive(Clone)]
pub struct RowFilter {
    pub on: FilterColumn,
    /// The filter as polars evaluates it on the rows (null counts as false).
    pub predicate: Expr,
    /// The filter's text, which identifies it.
    pub text: String,
}

/// A group-by of a dataset's rows that the pass answers.
#[derive(Clone)]
pub struct Spec {
    pub keys: Vec<Key>,
    pub aggs: Vec<Agg>,
    /// Rows count only where every filter holds.
    pub filters: Vec<RowFilter>,
    /// Leave out the rows flagged `aggregate` (a null flag is left out too, as
    /// polars' `filter(not(aggregate))` does).
    pub skip_aggregate_rows: bool,
    /// The same group-by as a polars plan, used when the files cannot be read here.
    pub fallback: LazyFrame,
}

impl Spec {
    /// In words, for `tradeql explain`: `group by __year, partner: value = sum(value); rows where ...`.
    pub fn describe(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| match &k.source {
                KeySource::FileYear => "year (of the file)".to_string(),
                KeySource::Period { months: 1 } => "period".to_string(),
                KeySource::Period { months } => format!("period in spans of {months} months"),
                KeySource::Code(c) => c.clone(),
            })
            .collect();
        let aggs: Vec<String> = self
            .aggs
            .iter()
            .map(|a| {
                let f = match a.func {
                    AggFunc::Sum => "sum",
                    AggFunc::SumWherePositiveQuantity => "sum where quantity > 0",
                    AggFunc::Count => "count",
                    AggFunc::Rows => "rows",
                    AggFunc::Min => "min",
                    AggFunc::Max => "max",
                    AggFunc::Mean => "mean",
                };
                format!("{} = {f}({})", a.name, a.column.as_deref().unwrap_or(""))
            })
            .collect();
        let mut text = format!("group by {}", if keys.is_empty() { "nothing".into() } else { keys.join(", ") });
        if !aggs.is_empty() {
            text.push_str(&format!(": {}", aggs.join(", ")));
        }
        for f in &self.filters {
            let on = match &f.on {
                FilterColumn::Code(c) => c.clone(),
                FilterColumn::Calendar => "the calendar".to_string(),
            };
            text.push_str(&format!("\n      rows where {} (on the values of {on})", f.text));
        }
        if self.skip_aggregate_rows {
            text.push_str("\n      rows flagged aggregate left out");
        }
        text
    }

    fn identity(&self) -> String {
        let filters: Vec<(&FilterColumn, &str)> = self.filters.iter().map(|f| (&f.on, f.text.as_str())).collect();
        format!("{:?}|{:?}|{:?}|{}", self.keys, self.aggs, filters, self.skip_aggregate_rows)
    }

    fn schema(&self) -> Vec<(String, DataType)> {
        let mut out: Vec<(String, DataType)> = self
            .keys
            .iter()
            .map(|k| {
                let dtype = match k.source {
                    KeySource::FileYear => DataType::Int32,
                    KeySource::Period { .. } => DataType::Date,
                    KeySource::Code(_) => DataType::String,
                };
                (k.name.clone(), dtype)
            })
            .collect();
        out.extend(self.aggs.iter().map(|a| (a.name.clone(), DataType::Float64)));
        out
    }
}

/// One file the pass reads, with its Hive year and whether any of its rows is
/// flagged `aggregate` (from the manifest).
#[derive(Debug, Clone)]
pub struct PassFile {
    pub path: PathBuf,
    pub year: i32,
    pub has_aggregate_rows: bool,
    /// The periods the file holds (days of their first day), from the
    /// manifest: a file none of whose periods passes a spec's calendar
    /// filters is not read for it.
    pub periods: Vec<i32>,
}

/// The group-bys registered for one dataset's files, evaluated together.
struct Registry {
    files: Vec<PassFile>,
    specs: Mutex<Vec<Spec>>,
}

/// A set of group-bys over the same files, answered by one read of them.
///
/// [`Pass::register`] returns, for each group-by, a lazy frame with exactly its
/// columns; all of them read one cached node, which polars evaluates once per
/// `collect` (or once per `collect_all` for a batch).
pub struct Pass {
    registry: Arc<Registry>,
    fused: LazyFrame,
}

const SPEC_COLUMN: &str = "__pushdown_spec";

/// How the pass appears in polars' plans (`tradeql explain`).
pub const NODE_NAME: &str = "TRADEQL PUSHDOWN: group-bys read from the Parquet dictionary pages, one read of the files";

impl Pass {
    pub fn new(files: Vec<PassFile>) -> Pass {
        let registry = Arc::new(Registry { files, specs: Mutex::new(Vec::new()) });
        let for_schema = registry.clone();
        let for_run = registry.clone();
        let schema_fn = move |_: &Schema| -> PolarsResult<SchemaRef> { Ok(Arc::new(union_schema(&for_schema))) };
        let fused = DataFrame::empty()
            .lazy()
            .map(move |_| run(&for_run), OptFlags::empty(), Some(Arc::new(schema_fn)), Some(NODE_NAME))
            .cache();
        Pass { registry, fused }
    }

    /// The rows of `spec`: its keys then its aggregates, one row per group.
    /// Returns None when the spec's columns clash in type with those of a
    /// group-by already registered (they share one wide frame).
    pub fn register(&self, spec: Spec) -> Option<LazyFrame> {
        let mut specs = self.registry.specs.lock().expect("pushdown registry");
        let identity = spec.identity();
        let index = match specs.iter().position(|s| s.identity() == identity) {
            Some(i) => i,
            None => {
                let mut columns: HashMap<String, DataType> = HashMap::new();
                for s in specs.iter() {
                    columns.extend(s.schema());
                }
                if spec.schema().iter().any(|(n, t)| columns.get(n).is_some_and(|have| have != t)) {
                    return None;
                }
                specs.push(spec);
                specs.len() - 1
            }
        };
        let names: Vec<Expr> = specs[index].schema().iter().map(|(n, _)| col(n.as_str())).collect();
        Some(self.fused.clone().filter(col(SPEC_COLUMN).eq(lit(index as u32))).select(names))
    }
}

/// The columns of the fused frame: the spec index, then every column of every spec.
fn union_schema(registry: &Registry) -> Schema {
    let specs = registry.specs.lock().expect("pushdown registry");
    let mut schema = Schema::default();
    schema.with_column(SPEC_COLUMN.into(), DataType::UInt32);
    for s in specs.iter() {
        for (name, dtype) in s.schema() {
            if !schema.contains(&name) {
                schema.with_column(name.into(), dtype);
            }
        }
    }
    schema
}

/// Evaluates every registered spec, as one wide frame.
fn run(registry: &Registry) -> PolarsResult<DataFrame> {
    let specs: Vec<Spec> = registry.specs.lock().expect("pushdown registry").clone();
    if let Some(passes) = RECORDED.lock().expect("pushdown record").as_mut() {
        passes.push((registry.files.clone(), specs.clone()));
    }
    let frames = evaluate(&registry.files, &specs)?;
    fuse(registry, &specs, frames)
}

/// Each spec's rows: through the pages when possible, else every spec
/// through its polars plan (`TRADEQL_PUSHDOWN=verbose` says why).
fn evaluate(files: &[PassFile], specs: &[Spec]) -> PolarsResult<Vec<DataFrame>> {
    match read_pass(files, specs) {
        Ok((groups, texts)) => groups.into_iter().zip(specs).map(|(g, s)| g.into_frame(s, &texts)).collect(),
        Err(Unsupported(why)) => {
            if std::env::var("TRADEQL_PUSHDOWN").as_deref() == Ok("verbose") {
                eprintln!("tradeql: the pushdown cannot read these files ({why}); polars reads them instead");
            }
            specs
                .iter()
                .map(|s| Ok(s.fallback.clone().collect_with_engine(Engine::InMemory)?.unwrap_single()))
                .collect()
        }
    }
}

/// The rows of one group-by, computed now (for the resolver's checks, not
/// inside a plan): through the pages when possible, else through its polars plan.
pub fn group_by_now(files: Vec<PassFile>, spec: Spec) -> PolarsResult<DataFrame> {
    Ok(evaluate(&files, std::slice::from_ref(&spec))?.remove(0))
}

/// The distinct values of a text column, read from the dictionary pages
/// alone (no data page is decompressed); None when a data page is not
/// dictionary-encoded, so the dictionaries may not hold every value.
pub fn distinct_texts(files: &[PassFile], column: &str) -> Option<Vec<String>> {
    let mut seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let (mut bytes, mut page_buffer) = (Vec::new(), Vec::new());
    for f in files {
        let mut file = std::fs::File::open(&f.path).ok()?;
        let meta = read_metadata(&mut file).ok()?;
        for rg in 0..meta.row_groups.len() {
            let chunk = column_chunk(&meta, rg, column).ok()?;
            if chunk.descriptor().descriptor.primitive_type.physical_type != PhysicalType::ByteArray {
                return None;
            }
            let all_dictionary = with_pages(&file, chunk, &mut bytes, &mut page_buffer, |pages| {
                let Some(dict) = pages.read_dict_page()? else { return Ok(false) };
                for text in byte_arrays(&dict.buffer) {
                    seen.insert(std::str::from_utf8(text?)?.to_string());
                }
                while let Some(page) = pages.next_page() {
                    if !page?.header().is_dictionary_encoded() {
                        return Ok(false);
                    }
                }
                Ok(true)
            })
            .ok()?;
            if !all_dictionary {
                return None;
            }
        }
    }
    Some(seen.into_iter().collect())
}

/// One wide frame of all specs' rows, tagged with the spec index; columns a
/// spec does not have are null in its rows.
fn fuse(registry: &Registry, specs: &[Spec], frames: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let schema = union_schema(registry);
    let mut parts: Vec<DataFrame> = Vec::new();
    for (i, (frame, spec)) in frames.into_iter().zip(specs).enumerate() {
        let n = frame.height();
        let own = spec.schema();
        let mut columns: Vec<Column> = Vec::new();
        for (name, dtype) in schema.iter() {
            if name.as_str() == SPEC_COLUMN {
                columns.push(Column::new(name.clone(), vec![i as u32; n]));
            } else if own.iter().any(|(s, _)| s == name.as_str()) {
                columns.push(frame.column(name)?.cast(dtype)?.with_name(name.clone()));
            } else {
                columns.push(Column::full_null(name.clone(), n, dtype));
            }
        }
        parts.push(DataFrame::new(n, columns)?);
    }
    let mut out = DataFrame::empty_with_schema(&schema);
    for p in parts {
        out.vstack_mut(&p)?;
    }
    Ok(out)
}

/// Why the pages could not be read here (the pass then uses polars).
#[derive(Debug)]
struct Unsupported(String);

impl<E: std::fmt::Display> From<E> for Unsupported {
    fn from(e: E) -> Self {
        Unsupported(e.to_string())
    }
}

type Res<T> = std::result::Result<T, Unsupported>;

fn unsupported<T>(what: impl Into<String>) -> Res<T> {
    Err(Unsupported(what.into()))
}

/// Text key values, numbered once per pass: each row group's dictionary is
/// mapped to these numbers, so groups are merged on small integers.
#[derive(Default)]
struct Interner {
    ids: PlHashMap<Arc<str>, u32>,
    texts: Vec<Arc<str>>,
}

impl Interner {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let text: Arc<str> = Arc::from(text);
        let id = self.texts.len() as u32;
        self.texts.push(text.clone());
        self.ids.insert(text, id);
        id
    }
}

/// The key of a null value (a period or year is never `u32::MAX` as days or years).
const NULL_ID: u32 = u32::MAX;
/// Keys per group-by, at most (the calendar key and every code column fit).
const MAX_KEYS: usize = 8;
/// A group's key: per key, a text's number, a period's days or the year, as bits.
type GroupKey = [u32; MAX_KEYS];

/// A group key in a hash map: hashed as one word mixed from its eight
/// (hashing it as 32 bytes took a fifth of a rollup read's time).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Hashed(GroupKey);

impl std::hash::Hash for Hashed {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut x: u64 = 0;
        for pair in self.0.chunks_exact(2) {
            x = (x ^ (u64::from(pair[0]) | u64::from(pair[1]) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 29;
        }
        state.write_u64(x);
    }
}

/// The groups of one spec: their keys and, flat, their running aggregates
/// (rows, then per aggregate its sum, non-null count, min and max).
struct Groups {
    aggs: usize,
    /// Each key's slot; built when first needed (a row group's groups are
    /// found without it, and most are merged by moving them).
    index: PlHashMap<Hashed, usize>,
    indexed: bool,
    /// Groups before this slot are sealed: they come from files whose
    /// calendar keys no later file has, so no later part adds to them and
    /// the index leaves them out.
    sealed: usize,
    /// The first and last file (by index in the pass) whose rows the groups hold.
    files: Option<(usize, usize)>,
    keys: Vec<GroupKey>,
    rows: Vec<u64>,
    sum: Vec<f64>,
    count: Vec<u64>,
    min: Vec<f64>,
    max: Vec<f64>,
}

impl Groups {
    fn new(aggs: usize) -> Groups {
        Groups {
            aggs,
            index: PlHashMap::default(),
            indexed: true,
            sealed: 0,
            files: None,
            keys: Vec::new(),
            rows: Vec::new(),
            sum: Vec::new(),
            count: Vec::new(),
            min: Vec::new(),
            max: Vec::new(),
        }
    }

    /// Adds `key`, known not to be among the groups, with empty aggregates.
    fn push_new(&mut self, key: GroupKey) -> usize {
        if self.indexed {
            self.index.insert(Hashed(key), self.keys.len());
        }
        self.push(key)
    }

    /// Adds `key` with empty aggregates, leaving the index as it is.
    fn push(&mut self, key: GroupKey) -> usize {
        let g = self.keys.len();
        self.keys.push(key);
        self.rows.push(0);
        self.sum.extend(std::iter::repeat_n(0.0, self.aggs));
        self.count.extend(std::iter::repeat_n(0, self.aggs));
        self.min.extend(std::iter::repeat_n(f64::INFINITY, self.aggs));
        self.max.extend(std::iter::repeat_n(f64::NEG_INFINITY, self.aggs));
        g
    }

    /// Room for `more` groups (as `Vec::reserve`: nothing when there is room).
    fn reserve(&mut self, more: usize) {
        self.keys.reserve(more);
        self.rows.reserve(more);
        for v in [&mut self.sum, &mut self.min, &mut self.max] {
            v.reserve(more * self.aggs);
        }
        self.count.reserve(more * self.aggs);
    }

    /// Adds `key`, a group not indexed, with `rows` and per aggregate (sum,
    /// count, min, max) the values of adding those to empty aggregates.
    fn push_cell(&mut self, key: GroupKey, rows: u64, aggs: impl Iterator<Item = (f64, u64, f64, f64)>) {
        self.keys.push(key);
        self.rows.push(rows);
        for (sum, count, min, max) in aggs {
            self.sum.push(0.0 + sum);
            self.count.push(count);
            self.min.push(f64::INFINITY.min(min));
            self.max.push(f64::NEG_INFINITY.max(max));
        }
    }

    /// Builds the index if the groups have none, with room for `more` keys.
    fn ensure_index(&mut self, more: usize) {
        if !self.indexed {
            let open = &self.keys[self.sealed..];
            self.index = PlHashMap::with_capacity_and_hasher(open.len() + more, Default::default());
            self.index.extend(open.iter().enumerate().map(|(g, k)| (Hashed(*k), self.sealed + g)));
            self.indexed = true;
        }
    }

    /// The slot of `key`, added with empty aggregates if new.
    fn slot(&mut self, key: GroupKey) -> usize {
        self.ensure_index(1);
        if let Some(&g) = self.index.get(&Hashed(key)) {
            return g;
        }
        self.push_new(key)
    }

    /// Adds `other`'s aggregates to these groups'. `calendar_apart`: the
    /// spec's calendar key takes values in each file that no other file
    /// holds, so groups of different files never share a key.
    fn merge(&mut self, mut other: Groups, calendar_apart: bool) {
        let after = matches!((self.files, other.files), (Some((_, last)), Some((first, _))) if first > last);
        let files = match (self.files, other.files) {
            (Some((first, _)), Some((_, last))) => Some((first, last)),
            (one, None) | (None, one) => one,
        };
        if self.keys.is_empty() && self.keys.capacity() < other.keys.len() {
            // The same values as adding `other` to empty groups (0.0 + -0.0
            // is 0.0; a min against +inf, a max against -inf), in one move.
            other.sum.iter_mut().for_each(|x| *x += 0.0);
            other.min.iter_mut().for_each(|x| *x = f64::INFINITY.min(*x));
            other.max.iter_mut().for_each(|x| *x = f64::NEG_INFINITY.max(*x));
            *self = other;
            self.files = files;
            return;
        }
        self.files = files;
        if self.keys.is_empty() || (calendar_apart && after) {
            // Every group so far is final (or there is none, and room
            // reserved for more): seal them and append `other`'s, each as
            // if added to empty aggregates.
            self.sealed = self.keys.len();
            self.index.clear();
            self.indexed = false;
            self.reserve(other.keys.len());
            self.keys.extend_from_slice(&other.keys);
            self.rows.extend_from_slice(&other.rows);
            self.sum.extend(other.sum.iter().map(|x| x + 0.0));
            self.count.extend_from_slice(&other.count);
            self.min.extend(other.min.iter().map(|x| f64::INFINITY.min(*x)));
            self.max.extend(other.max.iter().map(|x| f64::NEG_INFINITY.max(*x)));
            return;
        }
        self.ensure_index(other.keys.len());
        self.index.reserve(other.keys.len());
        let k = self.aggs;
        for (h, key) in other.keys.iter().enumerate() {
            let next = self.keys.len();
            let g = *self.index.entry(Hashed(*key)).or_insert(next);
            if g == next {
                self.push(*key);
            }
            self.rows[g] += other.rows[h];
            for j in 0..k {
                self.sum[g * k + j] += other.sum[h * k + j];
                self.count[g * k + j] += other.count[h * k + j];
                self.min[g * k + j] = self.min[g * k + j].min(other.min[h * k + j]);
                self.max[g * k + j] = self.max[g * k + j].max(other.max[h * k + j]);
            }
        }
    }

    /// The groups as a frame, ordered by their key values: texts are numbered
    /// in the order threads first meet them, so an order by numbers would
    /// change from run to run (and with it the order later sums add up in).
    fn into_frame(self, spec: &Spec, texts: &[Arc<str>]) -> PolarsResult<DataFrame> {
        let n = self.keys.len();
        // Each key value as a number that sorts like the value, nulls first:
        // texts by their rank among all texts, periods and years by value.
        let mut by_text: Vec<u32> = (0..texts.len() as u32).collect();
        by_text.sort_unstable_by(|&a, &b| texts[a as usize].cmp(&texts[b as usize]));
        let mut rank = vec![0u64; texts.len()];
        for (r, &id) in by_text.iter().enumerate() {
            rank[id as usize] = r as u64 + 1;
        }
        let sort_key = |g: usize| -> [u64; MAX_KEYS] {
            let mut out = [0u64; MAX_KEYS];
            for (k, (o, key)) in out.iter_mut().zip(&spec.keys).enumerate() {
                let id = self.keys[g][k];
                *o = match (&key.source, id) {
                    (_, NULL_ID) => 0,
                    (KeySource::Code(_), id) => rank[id as usize],
                    (_, id) => u64::from((id as i32 as u32) ^ 0x8000_0000) + 1,
                };
            }
            out
        };
        // Sorted as one number when the keys fit (each is under 2^33), with
        // its group: sorting 23,280 groups by index into eight-word keys took 3 ms.
        let order: Vec<usize> = if spec.keys.len() <= 3 {
            let packed = |g: usize| sort_key(g).iter().take(3).fold(0u128, |acc, &v| acc << 33 | u128::from(v));
            sorted_groups((0..n).map(|g| (packed(g), g)).collect())?
        } else {
            sorted_groups((0..n).map(|g| (sort_key(g), g)).collect())?
        };
        let mut columns: Vec<Column> = Vec::new();
        for (k, key) in spec.keys.iter().enumerate() {
            let name = PlSmallStr::from(key.name.as_str());
            let ids = order.iter().map(|&g| self.keys[g][k]);
            let column = match key.source {
                KeySource::Code(_) => {
                    let values: Vec<Option<&str>> =
                        ids.map(|id| (id != NULL_ID).then(|| texts[id as usize].as_ref())).collect();
                    Column::new(name, values)
                }
                KeySource::FileYear | KeySource::Period { .. } => {
                    let values: Vec<Option<i32>> = ids.map(|id| (id != NULL_ID).then_some(id as i32)).collect();
                    let c = Column::new(name, values);
                    if matches!(key.source, KeySource::Period { .. }) { c.cast(&DataType::Date)? } else { c }
                }
            };
            columns.push(column);
        }
        let k = self.aggs;
        for (j, agg) in spec.aggs.iter().enumerate() {
            let values: Vec<Option<f64>> = order
                .iter()
                .map(|&g| {
                    let (sum, count) = (self.sum[g * k + j], self.count[g * k + j]);
                    match agg.func {
                        AggFunc::Sum | AggFunc::SumWherePositiveQuantity => Some(sum),
                        AggFunc::Count => Some(count as f64),
                        AggFunc::Rows => Some(self.rows[g] as f64),
                        AggFunc::Min => (count > 0).then_some(self.min[g * k + j]),
                        AggFunc::Max => (count > 0).then_some(self.max[g * k + j]),
                        AggFunc::Mean => (count > 0).then(|| sum / count as f64),
                    }
                })
                .collect();
            columns.push(Column::new(agg.name.as_str().into(), values));
        }
        DataFrame::new(n, columns)
    }
}

/// The groups in the order of their sort keys; an error if two have the
/// same key (groups kept apart by the manifest's periods that were not).
fn sorted_groups<K: Ord>(mut keyed: Vec<(K, usize)>) -> PolarsResult<Vec<usize>> {
    if keyed.is_sorted_by(|a, b| a.0 < b.0) {
        // In order already, no key twice (a rollup's groups, read in order).
        return Ok(keyed.into_iter().map(|(_, g)| g).collect());
    }
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if keyed.windows(2).any(|w| w[0].0 == w[1].0) {
        polars_bail!(ComputeError: "the pushdown found one group twice: a file holds periods its manifest entry does not list (run `tradeql verify`)");
    }
    Ok(keyed.into_iter().map(|(_, g)| g).collect())
}

/// What the pass decodes of each row group: the key and filter columns (by
/// dictionary index), the value columns, and the `aggregate` flag if any spec
/// leaves flagged rows out.
struct Needs {
    codes: Vec<String>,
    values: Vec<String>,
    skip_aggregates: bool,
}

/// Where each key and aggregate of a spec finds its decoded column.
struct SpecColumns {
    /// Per key: its index in `Needs::codes` (None: the file's year).
    keys: Vec<Option<usize>>,
    /// Per aggregate: its index in `Needs::values` (None: rows).
    aggs: Vec<Option<usize>>,
    /// `quantity` in `Needs::values`, for [`AggFunc::SumWherePositiveQuantity`].
    quantity: Option<usize>,
    /// Per filter: the index in `Needs::codes` of the column it reads.
    filters: Vec<usize>,
}

impl Needs {
    fn of(specs: &[Spec]) -> (Needs, Vec<SpecColumns>) {
        let mut needs = Needs { codes: Vec::new(), values: Vec::new(), skip_aggregates: false };
        fn index(list: &mut Vec<String>, name: &str) -> usize {
            match list.iter().position(|c| c == name) {
                Some(i) => i,
                None => {
                    list.push(name.to_string());
                    list.len() - 1
                }
            }
        }
        let mut columns = Vec::new();
        for s in specs {
            let keys = s
                .keys
                .iter()
                .map(|k| match &k.source {
                    KeySource::FileYear => None,
                    KeySource::Period { .. } => Some(index(&mut needs.codes, "period")),
                    KeySource::Code(c) => Some(index(&mut needs.codes, c)),
                })
                .collect();
            let aggs = s.aggs.iter().map(|a| a.column.as_deref().map(|c| index(&mut needs.values, c))).collect();
            let quantity = s
                .aggs
                .iter()
                .any(|a| a.func == AggFunc::SumWherePositiveQuantity)
                .then(|| index(&mut needs.values, "quantity"));
            let filters = s
                .filters
                .iter()
                .map(|f| match &f.on {
                    FilterColumn::Code(c) => index(&mut needs.codes, c),
                    FilterColumn::Calendar => index(&mut needs.codes, "period"),
                })
                .collect();
            columns.push(SpecColumns { keys, aggs, quantity, filters });
        }
        needs.skip_aggregates = specs.iter().any(|s| s.skip_aggregate_rows);
        (needs, columns)
    }
}

/// The decoded columns of one row group, in buffers that each pool thread
/// keeps from one row group to the next: fresh buffers per row group cost
/// more in page faults than the decoding itself.
#[derive(Default)]
struct Work {
    /// A column chunk's bytes, as read from the file.
    bytes: Vec<u8>,
    /// The decompressor's page buffer.
    page: Vec<u8>,
    /// Definition levels of a page with nulls.
    flags: Vec<bool>,
    rows: usize,
    /// Per key column: each row's dictionary index (nulls: the dictionary's length).
    codes: Vec<Vec<u32>>,
    /// Per key column: the key of each dictionary entry (a text's number or
    /// a period's days), then [`NULL_ID`] for nulls.
    dicts: Vec<Vec<u32>>,
    /// Per value column: each row's value (0 where null), and whether it is
    /// non-null (empty when every row is).
    values: Vec<Vec<f64>>,
    valid: Vec<Vec<bool>>,
    /// Rows not flagged `aggregate` (empty: all, or not read).
    unflagged: Vec<bool>,
    /// The rows one spec counts (empty: all).
    keep: Vec<bool>,
    /// The combined key index of each row.
    cell: Vec<u32>,
}

thread_local! {
    static WORK: std::cell::RefCell<Work> = std::cell::RefCell::new(Work::default());
}

/// Per spec, per filter: what it gave for each value already seen (by text
/// number, or by period days).
type FilterCaches = Vec<Vec<Mutex<PlHashMap<u32, bool>>>>;

/// Reads every file once and answers every spec; also returns the texts the keys number.
fn read_pass(files: &[PassFile], specs: &[Spec]) -> Res<(Vec<Groups>, Vec<Arc<str>>)> {
    let (needs, columns) = Needs::of(specs);
    if specs.iter().any(|s| s.keys.len() > MAX_KEYS) {
        return unsupported("too many keys");
    }
    let interner = Mutex::new(Interner::default());
    let caches: FilterCaches =
        specs.iter().map(|s| s.filters.iter().map(|_| Mutex::new(PlHashMap::default())).collect()).collect();
    let (wanted, tasks) = row_groups_wanted(files, specs, &caches, &interner)?;
    // Row groups are read and aggregated in parallel, in fixed runs of
    // consecutive row groups whose groups are merged in order; then the runs
    // are merged in order. The sums are added in the same order whatever the
    // number of threads, so every run of a query gives the same bits.
    let one = |(i, file, meta, rg): &Task| -> Res<Vec<Groups>> {
        let f = &files[*i];
        // Ctrl-C in a Python session raises polars' abort flag: stop here too.
        polars_error::abort::try_raise_polars_abort();
        WORK.with_borrow_mut(|work| {
            read_row_group(work, file, meta, *rg, &needs, f.has_aggregate_rows, &interner)?;
            let mut out = Vec::with_capacity(specs.len());
            for (s, (spec, c)) in specs.iter().zip(&columns).enumerate() {
                if !wanted[s][*i] {
                    out.push(Groups::new(spec.aggs.len()));
                    continue;
                }
                rows_counted(work, spec, c, &caches[s], &interner)?;
                let mut groups = aggregate(work, spec, c, f.year, DENSE_CELLS)?;
                groups.files = Some((*i, *i));
                out.push(groups);
            }
            Ok(out)
        })
    };
    let empty = || -> Vec<Groups> { specs.iter().map(|s| Groups::new(s.aggs.len())).collect() };
    let apart: Vec<bool> = specs.iter().map(|s| calendar_apart(s, files)).collect();
    let merge_into = |total: &mut Vec<Groups>, parts: &mut dyn Iterator<Item = Res<Vec<Groups>>>| -> Res<()> {
        // The parts first, then room for all of them: groups appended (files
        // apart) are copied once, not again each time their vectors grow.
        let parts: Vec<Vec<Groups>> = parts.collect::<Res<_>>()?;
        for (s, t) in total.iter_mut().enumerate() {
            if apart[s] {
                t.reserve(parts.iter().map(|p| p[s].keys.len()).sum());
            }
        }
        for part in parts {
            for ((t, p), apart) in total.iter_mut().zip(part).zip(&apart) {
                t.merge(p, *apart);
            }
        }
        Ok(())
    };
    // The runs are computed a window at a time and merged into the total in
    // order: the same additions as merging them all at the end, with a few
    // runs' groups held at once instead of all of them (Q4 from the rows of
    // a billion: 1,640 runs of 4 row groups, 4.5 GB held until the end).
    let pool = &polars_core::runtime::THREAD_POOL;
    let window = ROW_GROUPS_PER_RUN * RUNS_IN_FLIGHT * pool.current_num_threads().max(1);
    let mut out = empty();
    for tasks in tasks.chunks(window) {
        let runs: Vec<Res<Vec<Groups>>> = pool.install(|| {
            tasks
                .par_chunks(ROW_GROUPS_PER_RUN)
                .map(|run| {
                    let mut total = empty();
                    merge_into(&mut total, &mut run.iter().map(one))?;
                    Ok(total)
                })
                .collect()
        });
        merge_into(&mut out, &mut runs.into_iter())?;
    }
    let texts = interner.into_inner().expect("pushdown interner").texts;
    Ok((out, texts))
}

/// Whether `spec` has a calendar key (the file's year, or the period, cut
/// or not) whose values in each file no other file has: then groups of
/// different files never share a key (each year's file holds its own
/// periods, by the manifest; [`Groups::into_frame`] refuses a key found twice).
fn calendar_apart(spec: &Spec, files: &[PassFile]) -> bool {
    let Some(source) = spec.keys.iter().map(|k| &k.source).find(|s| !matches!(s, KeySource::Code(_))) else {
        return false;
    };
    let mut owner: PlHashMap<i32, usize> = PlHashMap::default();
    for (i, f) in files.iter().enumerate() {
        let values: Vec<i32> = match source {
            KeySource::FileYear => vec![f.year],
            KeySource::Period { .. } if f.periods.is_empty() => return false,
            KeySource::Period { months } if *months > 1 => {
                f.periods.iter().map(|&d| truncate_months(d, *months)).collect()
            }
            KeySource::Period { .. } => f.periods.clone(),
            KeySource::Code(_) => return false,
        };
        for v in values {
            if *owner.entry(v).or_insert(i) != i {
                return false;
            }
        }
    }
    true
}

/// One row group to read: its file (index, handle, metadata) and number.
type Task = (usize, Arc<std::fs::File>, Arc<FileMetadata>, usize);

/// Per spec, per file, whether any of the file's periods passes the spec's
/// calendar filters; and the row groups of the files some spec wants.
fn row_groups_wanted(
    files: &[PassFile],
    specs: &[Spec],
    caches: &FilterCaches,
    interner: &Mutex<Interner>,
) -> Res<(Vec<Vec<bool>>, Vec<Task>)> {
    let mut wanted: Vec<Vec<bool>> = Vec::new();
    for (s, spec) in specs.iter().enumerate() {
        let mut per_file = Vec::new();
        for f in files {
            let mut any = vec![true; f.periods.len()];
            for (k, filter) in spec.filters.iter().enumerate() {
                if filter.on == FilterColumn::Calendar {
                    let days: Vec<u32> = f.periods.iter().map(|&d| d as u32).collect();
                    let mask = filter_mask(filter, &caches[s][k], &days, interner)?;
                    any.iter_mut().zip(mask).for_each(|(a, m)| *a &= m);
                }
            }
            per_file.push(f.periods.is_empty() || any.contains(&true));
        }
        wanted.push(per_file);
    }
    let mut tasks: Vec<Task> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if !wanted.iter().any(|w| w[i]) {
            continue;
        }
        let mut file = std::fs::File::open(&f.path)?;
        let meta = footer(&mut file)?;
        let file = Arc::new(file);
        for rg in 0..meta.row_groups.len() {
            tasks.push((i, file.clone(), meta.clone(), rg));
        }
    }
    Ok((wanted, tasks))
}

/// The identity of an opened file: device, inode, length, modification time.
type FileIdentity = (u64, u64, u64, i64, i64);

/// Footers already read, by the identity of the file they were read from: a
/// query asked again (the bench, a Python session, a batch) reads no footer
/// twice, and a file written again (a new inode, length or time) is read
/// anew. At most [`FOOTERS_KEPT`] are kept.
static FOOTERS: std::sync::LazyLock<Mutex<PlHashMap<FileIdentity, Arc<FileMetadata>>>> =
    std::sync::LazyLock::new(|| Mutex::new(PlHashMap::default()));

const FOOTERS_KEPT: usize = 1024;

/// The footer of the opened `file`, read once per file identity.
fn footer(file: &mut std::fs::File) -> Res<Arc<FileMetadata>> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    let id = (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec());
    if let Some(meta) = FOOTERS.lock().expect("pushdown footers").get(&id) {
        return Ok(meta.clone());
    }
    let meta = Arc::new(read_metadata(file)?);
    let mut kept = FOOTERS.lock().expect("pushdown footers");
    if kept.len() >= FOOTERS_KEPT {
        kept.clear();
    }
    kept.insert(id, meta.clone());
    Ok(meta)
}

/// The passes evaluated while [`record_passes`] runs, when it runs.
static RECORDED: Mutex<Option<Vec<Recorded>>> = Mutex::new(None);

/// One pass evaluated while [`record_passes`] ran: its files and group-bys.
pub type Recorded = (Vec<PassFile>, Vec<Spec>);

/// Runs `f`, and returns with its result the files and group-bys of every
/// pass it evaluated (for the benchmark's scan floor).
pub fn record_passes<T>(f: impl FnOnce() -> T) -> (T, Vec<Recorded>) {
    *RECORDED.lock().expect("pushdown record") = Some(Vec::new());
    let out = f();
    let passes = RECORDED.lock().expect("pushdown record").take().unwrap_or_default();
    (out, passes)
}

/// How much of a pass's reading the scan floor does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorStage {
    /// Copy the column chunks the pass needs from the files into memory.
    Read,
    /// ... and decompress their pages.
    Decompress,
    /// ... and decode each row's dictionary index and value, as the pass does
    /// before it aggregates.
    Decode,
}

/// The scan floor of a pass: its files' needed column chunks read (as the
/// pass reads them, in parallel by row group, skipping the same files) up
/// to `stage`, and nothing aggregated. Returns the compressed bytes read.
/// Fails where the pass itself would fall back to polars.
pub fn scan_floor(files: &[PassFile], specs: &[Spec], stage: FloorStage) -> PolarsResult<u64> {
    let floor = || -> Res<u64> {
        let (needs, _) = Needs::of(specs);
        let interner = Mutex::new(Interner::default());
        let caches: FilterCaches =
            specs.iter().map(|s| s.filters.iter().map(|_| Mutex::new(PlHashMap::default())).collect()).collect();
        let (_, tasks) = row_groups_wanted(files, specs, &caches, &interner)?;
        let one = |(i, file, meta, rg): &Task| -> Res<u64> {
            let mut names: Vec<&str> = needs.codes.iter().chain(&needs.values).map(String::as_str).collect();
            if needs.skip_aggregates && files[*i].has_aggregate_rows {
                names.push("aggregate");
            }
            WORK.with_borrow_mut(|work| {
                let mut bytes = 0;
                for name in &names {
                    bytes += column_chunk(meta, *rg, name)?.compressed_size() as u64;
                }
                match stage {
                    FloorStage::Read => {
                        use std::os::unix::fs::FileExt;
                        for name in &names {
                            let range = column_chunk(meta, *rg, name)?.byte_range();
                            let len = (range.end - range.start) as usize;
                            if work.bytes.len() < len {
                                work.bytes.resize(len, 0);
                            }
                            file.read_exact_at(&mut work.bytes[..len], range.start)?;
                        }
                    }
                    FloorStage::Decompress => {
                        let Work { bytes, page, .. } = work;
                        for name in &names {
                            read_chunk(file, column_chunk(meta, *rg, name)?, bytes, page, |_| Ok(()))?;
                        }
                    }
                    FloorStage::Decode => {
                        read_row_group(work, file, meta, *rg, &needs, files[*i].has_aggregate_rows, &interner)?
                    }
                }
                Ok(bytes)
            })
        };
        polars_core::runtime::THREAD_POOL.install(|| tasks.par_iter().map(one).sum())
    };
    floor().map_err(|Unsupported(why)| polars_err!(ComputeError: "the scan floor cannot read these files: {why}"))
}

/// Sets `work.keep` to the rows `spec` counts: not flagged `aggregate` (if it
/// leaves those out) and passing every filter (empty: every row).
fn rows_counted(
    work: &mut Work,
    spec: &Spec,
    columns: &SpecColumns,
    caches: &[Mutex<PlHashMap<u32, bool>>],
    interner: &Mutex<Interner>,
) -> Res<()> {
    let Work { codes, dicts, unflagged, keep, rows, .. } = work;
    keep.clear();
    let flagged = spec.skip_aggregate_rows && !unflagged.is_empty();
    if !flagged && spec.filters.is_empty() {
        return Ok(());
    }
    if flagged {
        keep.extend_from_slice(unflagged);
    } else {
        keep.resize(*rows, true);
    }
    for ((filter, &c), cache) in spec.filters.iter().zip(&columns.filters).zip(caches) {
        let mask = filter_mask(filter, cache, &dicts[c], interner)?;
        for (k, &code) in keep.iter_mut().zip(codes[c].iter()) {
            *k &= mask[code as usize];
        }
    }
    Ok(())
}

/// Whether `filter` holds for each of `ids` (text numbers or period days),
/// then for null, evaluated once per value ever seen.
fn filter_mask(
    filter: &RowFilter,
    cache: &Mutex<PlHashMap<u32, bool>>,
    ids: &[u32],
    interner: &Mutex<Interner>,
) -> Res<Vec<bool>> {
    let mut known = cache.lock().expect("pushdown filter cache");
    let mut missing: Vec<u32> = ids.iter().copied().chain([NULL_ID]).filter(|id| !known.contains_key(id)).collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        let frame = match &filter.on {
            FilterColumn::Code(name) => {
                let texts = interner.lock().expect("pushdown interner");
                let values: Vec<Option<&str>> =
                    missing.iter().map(|&id| (id != NULL_ID).then(|| texts.texts[id as usize].as_ref())).collect();
                DataFrame::new(missing.len(), vec![Column::new(name.as_str().into(), values)])?.lazy()
            }
            FilterColumn::Calendar => {
                let days: Vec<Option<i32>> = missing.iter().map(|&id| (id != NULL_ID).then_some(id as i32)).collect();
                DataFrame::new(missing.len(), vec![Column::new("period".into(), days)])?.lazy().with_columns([
                    col("period").cast(DataType::Date),
                    col("period").cast(DataType::Date).dt().year().cast(DataType::Int32).alias("year"),
                    col("period").cast(DataType::Date).dt().quarter().cast(DataType::Int32).alias("quarter"),
                    col("period").cast(DataType::Date).dt().month().cast(DataType::Int32).alias("month"),
                ])
            }
        };
        let out = frame
            .select([filter.predicate.clone().alias("__holds")])
            .collect_with_engine(Engine::InMemory)?
            .unwrap_single();
        let holds = out.column("__holds")?.bool()?.clone();
        for (i, id) in missing.iter().enumerate() {
            let at = if holds.len() == 1 { 0 } else { i };
            known.insert(*id, holds.get(at).unwrap_or(false));
        }
    }
    Ok(ids.iter().chain([&NULL_ID]).map(|id| known[id]).collect())
}

/// Row groups read and merged in order by one task (see [`read_pass`]).
const ROW_GROUPS_PER_RUN: usize = 4;

/// How many runs per thread are read before their groups are merged.
const RUNS_IN_FLIGHT: usize = 4;

/// Per cell of a row group: sums, non-null counts, mins and maxes.
type CellAggregates = (Vec<f64>, Vec<u64>, Vec<f64>, Vec<f64>);

/// The cells of a dense array of running aggregates, at most (more
/// combinations of key values are numbered as they are seen).
const DENSE_CELLS: usize = 1 << 22;

/// One spec's groups of one row group: the key columns' dictionary indices,
/// combined in mixed radix, address dense arrays of running aggregates.
fn aggregate(work: &mut Work, spec: &Spec, columns: &SpecColumns, year: i32, dense_cells: usize) -> Res<Groups> {
    let Work { codes, dicts, values, valid, keep, cell, rows: n, .. } = work;
    let n = *n;
    // (column, stride) per key read from a column. The last key varies
    // fastest, so the cells come in the order of the keys' dictionary
    // indices, first key first: in a file written in key order (a rollup),
    // the order the groups are sorted in at the end.
    let mut radix: Vec<(usize, u64)> = Vec::new();
    let mut combinations: u64 = 1;
    for c in columns.keys.iter().flatten().rev() {
        radix.push((*c, combinations));
        combinations = combinations
            .checked_mul(dicts[*c].len() as u64 + 1)
            .ok_or_else(|| Unsupported("too many key combinations in a row group".into()))?;
    }
    radix.reverse();
    // Each row's cell: its combined key index when the combinations fit a
    // dense array; else the number of its combination among those seen (a
    // hash of one integer per row), with `cell_keys` holding the combination.
    let dense = combinations <= dense_cells as u64;
    let mut cell_keys: Vec<u64> = Vec::new();
    let cell: &[u32] = match radix.as_slice() {
        [(c, _)] if dense => &codes[*c],
        _ if dense => {
            cell.clear();
            cell.resize(n, 0);
            for (c, stride) in &radix {
                let stride = *stride as u32;
                for (x, &code) in cell.iter_mut().zip(codes[*c].iter()) {
                    *x += code * stride;
                }
            }
            cell
        }
        _ => {
            let mut combined: Vec<u64> = vec![0; n];
            for (c, stride) in &radix {
                for (x, &code) in combined.iter_mut().zip(codes[*c].iter()) {
                    *x += code as u64 * stride;
                }
            }
            let mut seen: PlHashMap<u64, u32> = PlHashMap::default();
            cell.clear();
            for combined in combined {
                let next = cell_keys.len() as u32;
                let slot = *seen.entry(combined).or_insert_with(|| {
                    cell_keys.push(combined);
                    next
                });
                cell.push(slot);
            }
            cell
        }
    };
    let cells = if dense { combinations as usize } else { cell_keys.len() };
    let keep: Option<&[bool]> = if keep.is_empty() { None } else { Some(keep) };
    let kept = |i: usize| keep.is_none_or(|k| k[i]);
    let mut rows: Vec<u64> = vec![0; cells];
    match keep {
        None => cell.iter().for_each(|&c| rows[c as usize] += 1),
        Some(k) => cell.iter().zip(k).filter(|(_, k)| **k).for_each(|(&c, _)| rows[c as usize] += 1),
    }
    let naggs = spec.aggs.len();
    // Per aggregate, per cell: sum, non-null count, min and max (min and max only if asked).
    let mut accs: Vec<CellAggregates> = Vec::with_capacity(naggs);
    for (a, column) in spec.aggs.iter().zip(&columns.aggs) {
        let mut sum = vec![0.0; cells];
        let mut count = vec![0u64; cells];
        let (mut min, mut max) = (Vec::new(), Vec::new());
        if let Some(v) = column {
            let (x, ok) = (&values[*v], &valid[*v]);
            let all_valid = ok.is_empty();
            let is_valid = |i: usize| all_valid || ok[i];
            match a.func {
                AggFunc::Min | AggFunc::Max => {
                    min = vec![f64::INFINITY; cells];
                    max = vec![f64::NEG_INFINITY; cells];
                    for i in (0..n).filter(|&i| kept(i) && is_valid(i)) {
                        let c = cell[i] as usize;
                        count[c] += 1;
                        min[c] = min[c].min(x[i]);
                        max[c] = max[c].max(x[i]);
                    }
                }
                AggFunc::SumWherePositiveQuantity => {
                    let q = columns.quantity.expect("set with the aggregate");
                    let (qx, qok) = (&values[q], &valid[q]);
                    for i in (0..n).filter(|&i| kept(i) && is_valid(i)) {
                        if (qok.is_empty() || qok[i]) && qx[i] > 0.0 {
                            let c = cell[i] as usize;
                            sum[c] += x[i];
                            count[c] += 1;
                        }
                    }
                }
                _ if keep.is_none() && all_valid => {
                    // The common case, kept tight: every row counts.
                    for (&c, &v) in cell.iter().zip(x.iter()) {
                        sum[c as usize] += v;
                    }
                    count.copy_from_slice(&rows);
                }
                _ => {
                    for i in (0..n).filter(|&i| kept(i) && is_valid(i)) {
                        let c = cell[i] as usize;
                        sum[c] += x[i];
                        count[c] += 1;
                    }
                }
            }
        }
        accs.push((sum, count, min, max));
    }
    let mut out = Groups::new(naggs);
    // Each cell is one combination of key values, so one group, unless
    // periods are cut to quarters or years: then several cells share one.
    let truncated = spec.keys.iter().any(|k| matches!(k.source, KeySource::Period { months } if months > 1));
    out.indexed = truncated;
    if !truncated {
        out.reserve(rows.iter().filter(|r| **r > 0).count());
    }
    for (c, &r) in rows.iter().enumerate() {
        if r == 0 {
            continue;
        }
        let mut key: GroupKey = [NULL_ID; MAX_KEYS];
        let mut at = 0;
        for (slot, k) in key.iter_mut().zip(&spec.keys) {
            if k.source == KeySource::FileYear {
                *slot = year as u32;
                continue;
            }
            let (column, stride) = radix[at];
            at += 1;
            let dict = &dicts[column];
            let combined = if dense { c as u64 } else { cell_keys[c] };
            let index = (combined / stride) % (dict.len() as u64 + 1);
            let id = dict.get(index as usize).copied().unwrap_or(NULL_ID);
            *slot = match k.source {
                KeySource::Period { months } if months > 1 && id != NULL_ID => {
                    truncate_months(id as i32, months) as u32
                }
                _ => id,
            };
        }
        if !truncated {
            // A new group: its aggregates as adding the cell's to empty ones.
            out.push_cell(
                key,
                r,
                accs.iter().map(|(sum, count, min, max)| {
                    let (lo, hi) = if min.is_empty() { (f64::INFINITY, f64::NEG_INFINITY) } else { (min[c], max[c]) };
                    (sum[c], count[c], lo, hi)
                }),
            );
            continue;
        }
        let g = out.slot(key);
        out.rows[g] += r;
        for (j, (sum, count, min, max)) in accs.iter().enumerate() {
            let at = g * naggs + j;
            out.sum[at] += sum[c];
            out.count[at] += count[c];
            if !min.is_empty() {
                out.min[at] = out.min[at].min(min[c]);
                out.max[at] = out.max[at].max(max[c]);
            }
        }
    }
    Ok(out)
}

/// Days since 1970-01-01 of the first day of the span of `months` months that holds `days`.
fn truncate_months(days: i32, months: u32) -> i32 {
    use chrono::{Datelike, NaiveDate};
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let date = epoch + chrono::Duration::days(days as i64);
    let month0 = (date.month0() / months) * months;
    let first = NaiveDate::from_ymd_opt(date.year(), month0 + 1, 1).expect("valid date");
    (first - epoch).num_days() as i32
}

fn column_chunk<'a>(meta: &'a FileMetadata, rg: usize, name: &str) -> Res<&'a ColumnChunkMetadata> {
    let mut it =
        meta.row_groups[rg].columns_under_root_iter(name).ok_or_else(|| Unsupported(format!("no column {name}")))?;
    let chunk = it.next().ok_or_else(|| Unsupported(format!("no column {name}")))?;
    if it.next().is_some() {
        return unsupported(format!("nested column {name}"));
    }
    let d = &chunk.descriptor().descriptor;
    if d.max_rep_level != 0 || d.max_def_level > 1 {
        return unsupported(format!("nested column {name}"));
    }
    Ok(chunk)
}

fn read_row_group(
    work: &mut Work,
    file: &std::fs::File,
    meta: &FileMetadata,
    rg: usize,
    needs: &Needs,
    has_aggregate_rows: bool,
    interner: &Mutex<Interner>,
) -> Res<()> {
    let rows = meta.row_groups[rg].num_rows();
    work.rows = rows;
    work.codes.resize_with(needs.codes.len(), Vec::new);
    work.dicts.resize_with(needs.codes.len(), Vec::new);
    work.values.resize_with(needs.values.len(), Vec::new);
    work.valid.resize_with(needs.values.len(), Vec::new);
    for (i, name) in needs.codes.iter().enumerate() {
        let chunk = column_chunk(meta, rg, name)?;
        read_codes(work, i, file, chunk, interner)?;
    }
    for (i, name) in needs.values.iter().enumerate() {
        let chunk = column_chunk(meta, rg, name)?;
        read_doubles(work, i, file, chunk)?;
    }
    work.unflagged.clear();
    if needs.skip_aggregates && has_aggregate_rows {
        let chunk = column_chunk(meta, rg, "aggregate")?;
        read_not_flagged(work, file, chunk)?;
    }
    Ok(())
}

/// A page of a column chunk, handed to the reader of its values.
enum PageRef<'a> {
    Dict(&'a [u8]),
    Data(&'a DataPage),
}

thread_local! {
    /// This thread's zstd decompression context, kept from chunk to chunk.
    static DECOMPRESSION: std::cell::RefCell<DecompressionContext> =
        const { std::cell::RefCell::new(DecompressionContext::Unset) };
}

/// A column chunk's pages, decompressed with this thread's context: polars'
/// `BasicDecompressor` makes a zstd context for each chunk, and making it
/// (and faulting in its memory) showed in the profile of a query that reads
/// a rollup's few rows a chunk at a time.
struct Pages<'a> {
    reader: PageReader,
    buffer: Vec<u8>,
    context: &'a mut DecompressionContext,
}

impl Pages<'_> {
    fn read_dict_page(&mut self) -> ParquetResult<Option<DictPage>> {
        let Some(page) = self.reader.read_dict()? else { return Ok(None) };
        match decompress(CompressedPage::Dict(page), &mut Vec::new(), self.context)? {
            Page::Dict(d) => Ok(Some(d)),
            Page::Data(_) => Err(ParquetError::OutOfSpec("a dictionary page read as a data page".into())),
        }
    }

    /// The next data page, compressed.
    fn next_page(&mut self) -> Option<ParquetResult<CompressedDataPage>> {
        Some(match self.reader.next()? {
            Ok(CompressedPage::Data(page)) => Ok(page),
            Ok(CompressedPage::Dict(_)) => {
                Err(ParquetError::OutOfSpec("a dictionary page after the first page of a chunk".into()))
            }
            Err(e) => Err(e),
        })
    }

    /// `page` decompressed into the chunk's buffer; [`Pages::reuse`] takes it back.
    fn decompress(&mut self, page: CompressedDataPage) -> ParquetResult<DataPage> {
        match decompress(CompressedPage::Data(page), &mut self.buffer, self.context)? {
            Page::Data(p) => Ok(p),
            Page::Dict(_) => Err(ParquetError::OutOfSpec("a data page read as a dictionary page".into())),
        }
    }

    /// The buffer `page` was decompressed into, kept for the next page.
    fn reuse(&mut self, mut page: DataPage, compressed: bool) {
        // An uncompressed page borrows the chunk's bytes: nothing to take.
        if compressed {
            let buffer = std::mem::take(page.buffer_mut());
            if buffer.capacity() >= self.buffer.capacity() {
                self.buffer = buffer;
            }
        }
    }
}

/// Reads a column chunk's bytes into `bytes` and hands `f` its pages, which
/// decompress into `page_buffer` (both buffers are kept for the next chunk).
fn with_pages<R>(
    file: &std::fs::File,
    chunk: &ColumnChunkMetadata,
    bytes: &mut Vec<u8>,
    page_buffer: &mut Vec<u8>,
    f: impl FnOnce(&mut Pages) -> Res<R>,
) -> Res<R> {
    use std::os::unix::fs::FileExt;
    let range = chunk.byte_range();
    let len = (range.end - range.start) as usize;
    if bytes.len() < len {
        bytes.resize(len, 0);
    }
    file.read_exact_at(&mut bytes[..len], range.start)?;
    DECOMPRESSION.with_borrow_mut(|context| {
        Buffer::with_slice(&bytes[..len], |buffer| {
            let reader = PageReader::new(Cursor::new(buffer), chunk, Vec::new(), usize::MAX);
            let mut pages = Pages { reader, buffer: std::mem::take(page_buffer), context };
            let result = f(&mut pages);
            *page_buffer = pages.buffer;
            result
        })
    })
}

/// Calls `f` on a column chunk's dictionary page, then on each data page in order.
fn read_chunk(
    file: &std::fs::File,
    chunk: &ColumnChunkMetadata,
    bytes: &mut Vec<u8>,
    page_buffer: &mut Vec<u8>,
    mut f: impl FnMut(PageRef<'_>) -> Res<()>,
) -> Res<()> {
    with_pages(file, chunk, bytes, page_buffer, |pages| {
        if let Some(d) = pages.read_dict_page()? {
            f(PageRef::Dict(&d.buffer))?;
        }
        while let Some(page) = pages.next_page() {
            let page = page?;
            let compressed = page.compression() != Compression::Uncompressed;
            let page = pages.decompress(page)?;
            f(PageRef::Data(&page))?;
            pages.reuse(page, compressed);
        }
        Ok(())
    })
}

/// A page's definition levels: whether any value is null, and if so each
/// row's validity in `flags`.
fn has_nulls(page: &DataPage, def: &[u8], flags: &mut Vec<bool>) -> Res<bool> {
    flags.clear();
    if page.descriptor.max_def_level == 0 {
        return Ok(false);
    }
    let n = page.num_values();
    let decoder = HybridRleDecoder::new(def, 1, n);
    let mut defined = 0;
    for chunk in decoder.clone().into_chunk_iter() {
        match chunk? {
            HybridRleChunk::Rle(1, len) => defined += len,
            _ => {
                defined = usize::MAX;
                break;
            }
        }
    }
    if defined == n {
        return Ok(false);
    }
    let levels = decoder.collect()?;
    if levels.len() != n {
        return unsupported("short definition levels");
    }
    flags.extend(levels.iter().map(|&l| l == 1));
    Ok(true)
}

/// Decodes dictionary indices (the values of a dictionary-encoded page) into `out`.
fn dict_indices(values: &[u8], present: usize, dict_len: usize, out: &mut Vec<u32>) -> Res<()> {
    if present == 0 {
        return Ok(());
    }
    let Some((&width, indices)) = values.split_first() else { return unsupported("empty dictionary indices") };
    let start = out.len();
    for chunk in HybridRleDecoder::new(indices, width as u32, present).into_chunk_iter() {
        match chunk? {
            HybridRleChunk::Rle(v, len) => out.resize(out.len() + len, v),
            HybridRleChunk::Bitpacked(d) => d.collect_into(out),
        }
    }
    if out.len() - start != present || out[start..].iter().any(|&i| i as usize >= dict_len) {
        return unsupported("dictionary indices out of range");
    }
    Ok(())
}

/// Key column `i`: each row's dictionary index (nulls get the dictionary's length) and the dictionary.
fn read_codes(
    work: &mut Work,
    i: usize,
    file: &std::fs::File,
    chunk: &ColumnChunkMetadata,
    interner: &Mutex<Interner>,
) -> Res<()> {
    let physical = chunk.descriptor().descriptor.primitive_type.physical_type;
    let Work { bytes, page, flags, codes, dicts, rows, .. } = work;
    let (codes, dict) = (&mut codes[i], &mut dicts[i]);
    codes.clear();
    dict.clear();
    let mut present_codes: Vec<u32> = Vec::new();
    // Values of plain-encoded pages (a writer's fallback for columns with
    // many distinct values) get codes as they are first seen.
    let mut plain_texts: PlHashMap<Box<[u8]>, u32> = PlHashMap::default();
    let mut plain_ints: PlHashMap<i32, u32> = PlHashMap::default();
    const NULL: u32 = u32::MAX;
    let mut nulls = false;
    read_chunk(file, chunk, bytes, page, |p| {
        let page = match p {
            PageRef::Dict(buffer) => {
                match physical {
                    PhysicalType::ByteArray => {
                        let mut texts = interner.lock().expect("pushdown interner");
                        for text in byte_arrays(buffer) {
                            dict.push(texts.id(std::str::from_utf8(text?)?));
                        }
                    }
                    PhysicalType::Int32 => dict.extend(
                        buffer.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as u32),
                    ),
                    other => return unsupported(format!("dictionary of {other:?}")),
                }
                return Ok(());
            }
            PageRef::Data(page) => page,
        };
        let split = split_buffer(page)?;
        let page_nulls = has_nulls(page, split.def, flags)?;
        let present = if page_nulls { flags.iter().filter(|&&b| b).count() } else { page.num_values() };
        present_codes.clear();
        match (page.encoding(), physical) {
            (Encoding::RleDictionary | Encoding::PlainDictionary, _) => {
                dict_indices(split.values, present, dict.len(), &mut present_codes)?
            }
            (Encoding::Plain, PhysicalType::ByteArray) => {
                let mut texts = interner.lock().expect("pushdown interner");
                for text in byte_arrays(split.values).take(present) {
                    let text = text?;
                    let code = match plain_texts.get(text) {
                        Some(&code) => code,
                        None => {
                            let code = dict.len() as u32;
                            dict.push(texts.id(std::str::from_utf8(text)?));
                            plain_texts.insert(text.into(), code);
                            code
                        }
                    };
                    present_codes.push(code);
                }
            }
            (Encoding::Plain, PhysicalType::Int32) => {
                let raw = split.values.get(..present * 4).ok_or_else(|| Unsupported("short page".into()))?;
                for b in raw.chunks_exact(4) {
                    let v = i32::from_le_bytes(b.try_into().expect("4 bytes"));
                    let code = *plain_ints.entry(v).or_insert_with(|| {
                        dict.push(v as u32);
                        dict.len() as u32 - 1
                    });
                    present_codes.push(code);
                }
            }
            (other, _) => return unsupported(format!("a key column page encoded {other:?}")),
        }
        if present_codes.len() != present {
            return unsupported("short page");
        }
        if !page_nulls {
            codes.extend_from_slice(&present_codes);
            return Ok(());
        }
        nulls = true;
        let mut it = present_codes.iter();
        codes.extend(flags.iter().map(|&ok| if ok { *it.next().unwrap_or(&NULL) } else { NULL }));
        Ok(())
    })?;
    if codes.len() != *rows {
        return unsupported("row count differs from the row group's");
    }
    if nulls {
        // Nulls take the slot after the dictionary, known only now.
        let null = dict.len() as u32;
        codes.iter_mut().filter(|c| **c == NULL).for_each(|c| *c = null);
    }
    Ok(())
}

/// The values of a PLAIN-encoded BYTE_ARRAY buffer: each a 4-byte length, then the bytes.
fn byte_arrays(mut rest: &[u8]) -> impl Iterator<Item = Res<&[u8]>> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(len) = rest.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize) else {
            return Some(unsupported("short byte array"));
        };
        let Some(text) = rest.get(4..4 + len) else { return Some(unsupported("short byte array")) };
        rest = &rest[4 + len..];
        Some(Ok(text))
    })
}

/// DOUBLE column `i`: each row's value (0 where null) and validity.
fn read_doubles(work: &mut Work, i: usize, file: &std::fs::File, chunk: &ColumnChunkMetadata) -> Res<()> {
    if chunk.descriptor().descriptor.primitive_type.physical_type != PhysicalType::Double {
        return unsupported("not a DOUBLE column");
    }
    let Work { bytes, page, flags, values, valid, rows, .. } = work;
    let (values, valid) = (&mut values[i], &mut valid[i]);
    values.clear();
    valid.clear();
    let mut dict: Vec<f64> = Vec::new();
    let mut indices: Vec<u32> = Vec::new();
    let mut present_values: Vec<f64> = Vec::new();
    let f64_of = |b: &[u8]| f64::from_le_bytes(b.try_into().expect("8 bytes"));
    read_chunk(file, chunk, bytes, page, |p| {
        let page = match p {
            PageRef::Dict(buffer) => {
                dict.extend(buffer.chunks_exact(8).map(f64_of));
                return Ok(());
            }
            PageRef::Data(page) => page,
        };
        let split = split_buffer(page)?;
        let nulls = has_nulls(page, split.def, flags)?;
        let present = if nulls { flags.iter().filter(|&&b| b).count() } else { page.num_values() };
        let target: &mut Vec<f64> = if nulls { &mut present_values } else { values };
        if nulls {
            target.clear();
        }
        match page.encoding() {
            Encoding::Plain => {
                let raw = split.values.get(..present * 8).ok_or_else(|| Unsupported("short page".into()))?;
                target.extend(raw.chunks_exact(8).map(f64_of));
            }
            Encoding::RleDictionary | Encoding::PlainDictionary if !dict.is_empty() => {
                indices.clear();
                dict_indices(split.values, present, dict.len(), &mut indices)?;
                target.extend(indices.iter().map(|&k| dict[k as usize]));
            }
            other => return unsupported(format!("DOUBLE page encoded {other:?}")),
        }
        if !nulls {
            if !valid.is_empty() {
                valid.resize(values.len(), true);
            }
            return Ok(());
        }
        if valid.is_empty() {
            valid.resize(values.len(), true);
        }
        let mut it = present_values.iter();
        for &ok in flags.iter() {
            values.push(if ok { *it.next().unwrap_or(&0.0) } else { 0.0 });
            valid.push(ok);
        }
        Ok(())
    })?;
    if values.len() != *rows {
        return unsupported("row count differs from the row group's");
    }
    Ok(())
}

/// The `aggregate` flag as rows to keep: those flagged false (a null flag is
/// not kept, as polars' `filter(not(aggregate))` does not keep it).
fn read_not_flagged(work: &mut Work, file: &std::fs::File, chunk: &ColumnChunkMetadata) -> Res<()> {
    if chunk.descriptor().descriptor.primitive_type.physical_type != PhysicalType::Boolean {
        return unsupported("aggregate is not BOOLEAN");
    }
    let Work { bytes, page, flags, unflagged: keep, rows, .. } = work;
    keep.clear();
    let mut present_flags: Vec<bool> = Vec::new();
    read_chunk(file, chunk, bytes, page, |p| {
        let PageRef::Data(page) = p else { return unsupported("a dictionary of flags") };
        let split = split_buffer(page)?;
        let nulls = has_nulls(page, split.def, flags)?;
        let present = if nulls { flags.iter().filter(|&&b| b).count() } else { page.num_values() };
        present_flags.clear();
        match page.encoding() {
            Encoding::Plain => {
                if split.values.len() * 8 < present {
                    return unsupported("short page");
                }
                present_flags.extend((0..present).map(|i| split.values[i / 8] >> (i % 8) & 1 == 1));
            }
            Encoding::Rle => {
                let data = split.values.get(4..).ok_or_else(|| Unsupported("short page".into()))?;
                present_flags.extend(HybridRleDecoder::new(data, 1, present).collect()?.into_iter().map(|v| v == 1));
            }
            other => return unsupported(format!("BOOLEAN page encoded {other:?}")),
        }
        if present_flags.len() != present {
            return unsupported("short page");
        }
        if nulls {
            let mut it = present_flags.iter();
            keep.extend(flags.iter().map(|&ok| ok && !*it.next().unwrap_or(&true)));
        } else {
            keep.extend(present_flags.iter().map(|f| !f));
        }
        Ok(())
    })?;
    if keep.len() != *rows {
        return unsupported("row count differs from the row group's");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters_start_in_january_april_july_october() {
        let day = |y, m, d| {
            (chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap() - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                .num_days() as i32
        };
        assert_eq!(truncate_months(day(2024, 5, 1), 3), day(2024, 4, 1));
        assert_eq!(truncate_months(day(2024, 12, 1), 3), day(2024, 10, 1));
        assert_eq!(truncate_months(day(1969, 2, 1), 3), day(1969, 1, 1));
    }

    #[test]
    fn a_file_written_again_at_its_path_gets_its_own_footer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.parquet");
        let write = |rows: i32| {
            let mut df = df!("v" => (0..rows).collect::<Vec<i32>>()).unwrap();
            let next = dir.path().join("next.parquet");
            ParquetWriter::new(std::fs::File::create(&next).unwrap()).finish(&mut df).unwrap();
            std::fs::rename(&next, &path).unwrap();
        };
        let rows = || footer(&mut std::fs::File::open(&path).unwrap()).unwrap().num_rows;
        write(3);
        assert_eq!(rows(), 3);
        assert_eq!(rows(), 3, "read again from the kept footer");
        write(5);
        assert_eq!(rows(), 5, "a new file at the same path is read anew");
    }

    fn part(file: usize, rows: &[(u32, f64)]) -> Groups {
        let mut g = Groups::new(1);
        g.indexed = false;
        for &(key, v) in rows {
            let mut k = [NULL_ID; MAX_KEYS];
            k[0] = key;
            let at = g.push_new(k);
            g.rows[at] = 1;
            g.sum[at] = v;
            g.count[at] = 1;
            g.min[at] = v;
            g.max[at] = v;
        }
        g.files = Some((file, file));
        g
    }

    /// Parts of files whose calendar keys differ are appended, the parts of
    /// one file still merged by key: the same groups and the same bits as
    /// merging every part by key (-0.0 becomes 0.0 either way).
    #[test]
    fn groups_of_files_apart_are_appended_with_the_bits_of_a_merge() {
        let spec = Spec {
            keys: vec![Key { name: "__year".into(), source: KeySource::FileYear }],
            aggs: vec![Agg { name: "v".into(), func: AggFunc::Sum, column: Some("value".into()) }],
            filters: Vec::new(),
            skip_aggregate_rows: false,
            fallback: DataFrame::empty().lazy(),
        };
        let parts = || {
            vec![
                part(0, &[(2020, 1e16), (2019, -0.0)]),
                part(0, &[(2020, 1.0)]),
                part(1, &[(2021, -0.0), (2022, 0.1)]),
                part(1, &[(2022, 0.2), (2021, 3.0)]),
                part(2, &[(2023, -0.0)]),
            ]
        };
        let total = |apart: bool| {
            let mut t = Groups::new(1);
            for p in parts() {
                t.merge(p, apart);
            }
            assert_eq!(t.files, Some((0, 2)));
            t.into_frame(&spec, &[]).unwrap()
        };
        let (appended, merged) = (total(true), total(false));
        assert!(
            appended.equals_missing(&merged),
            "{appended}
{merged}"
        );
        let bits: Vec<u64> =
            appended.column("v").unwrap().f64().unwrap().into_no_null_iter().map(f64::to_bits).collect();
        let want: Vec<u64> = [0.0, 1e16 + 1.0, 3.0, 0.1 + 0.2, 0.0].iter().map(|x: &f64| x.to_bits()).collect();
        assert_eq!(bits, want);
    }

    #[test]
    fn files_are_apart_when_no_two_hold_the_same_calendar_key() {
        let day = |y, m| {
            (chrono::NaiveDate::from_ymd_opt(y, m, 1).unwrap() - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                .num_days() as i32
        };
        let file =
            |year, periods: Vec<i32>| PassFile { path: PathBuf::new(), year, has_aggregate_rows: false, periods };
        let spec = |source: Option<KeySource>| Spec {
            keys: source
                .into_iter()
                .map(|source| Key { name: "__t".into(), source })
                .chain([Key { name: "partner".into(), source: KeySource::Code("partner".into()) }])
                .collect(),
            aggs: Vec::new(),
            filters: Vec::new(),
            skip_aggregate_rows: false,
            fallback: DataFrame::empty().lazy(),
        };
        let years = [file(2020, vec![day(2020, 1), day(2020, 12)]), file(2021, vec![day(2021, 6)])];
        assert!(calendar_apart(&spec(Some(KeySource::FileYear)), &years));
        assert!(calendar_apart(&spec(Some(KeySource::Period { months: 1 })), &years));
        assert!(calendar_apart(&spec(Some(KeySource::Period { months: 12 })), &years));
        assert!(!calendar_apart(&spec(None), &years));
        // Two files of one year (a revision's layout), or a file without its periods.
        let shared = [file(2020, vec![day(2020, 1)]), file(2020, vec![day(2020, 2)])];
        assert!(!calendar_apart(&spec(Some(KeySource::FileYear)), &shared));
        assert!(calendar_apart(&spec(Some(KeySource::Period { months: 1 })), &shared));
        assert!(!calendar_apart(&spec(Some(KeySource::Period { months: 3 })), &shared));
        let unknown = [file(2020, Vec::new()), file(2021, vec![day(2021, 1)])];
        assert!(!calendar_apart(&spec(Some(KeySource::Period { months: 1 })), &unknown));
        // A key found twice is an error, never two rows of one group.
        assert!(sorted_groups(vec![(2u64, 0), (1, 1), (2, 2)]).is_err());
        assert_eq!(sorted_groups(vec![(2u64, 0), (1, 1)]).unwrap(), vec![1, 0]);
    }

    /// Six rows, two key columns (the second with a null), a value column with
    /// a null, one row flagged aggregate: every aggregate, by dense array and
    /// by numbered combinations.
    #[test]
    fn dense_and_numbered_cells_give_the_same_groups() {
        let spec = Spec {
            keys: vec![
                Key { name: "__year".into(), source: KeySource::FileYear },
                Key { name: "partner".into(), source: KeySource::Code("partner".into()) },
                Key { name: "flow".into(), source: KeySource::Code("flow".into()) },
            ],
            aggs: [AggFunc::Sum, AggFunc::Count, AggFunc::Rows, AggFunc::Min, AggFunc::Max, AggFunc::Mean]
                .iter()
                .enumerate()
                .map(|(i, f)| Agg {
                    name: format!("a{i}"),
                    func: *f,
                    column: (*f != AggFunc::Rows).then(|| "value".into()),
                })
                .collect(),
            filters: Vec::new(),
            skip_aggregate_rows: true,
            fallback: DataFrame::empty().lazy(),
        };
        let (_, columns) = Needs::of(std::slice::from_ref(&spec));
        let texts: Vec<Arc<str>> = ["P1", "P2", "export", "import"].iter().map(|t| Arc::from(*t)).collect();
        let work = || Work {
            rows: 6,
            // partner: P1 P1 P2 P2 P1 P2; flow: export import export null export export
            codes: vec![vec![0, 0, 1, 1, 0, 1], vec![0, 1, 0, 2, 0, 0]],
            dicts: vec![vec![0, 1], vec![2, 3]],
            values: vec![vec![1.0, 2.0, 4.0, 8.0, 16.0, 0.0]],
            valid: vec![vec![true, true, true, true, true, false]],
            unflagged: vec![true, true, true, true, false, true],
            ..Work::default()
        };
        let frame = |dense_cells| {
            let mut work = work();
            rows_counted(&mut work, &spec, &columns[0], &[], &Mutex::new(Interner::default())).unwrap();
            let groups = aggregate(&mut work, &spec, &columns[0], 2024, dense_cells).unwrap();
            groups
                .into_frame(&spec, &texts)
                .unwrap()
                .sort(["partner", "flow"], SortMultipleOptions::default().with_nulls_last(true))
                .unwrap()
        };
        let dense = frame(DENSE_CELLS);
        let numbered = frame(1);
        assert!(dense.equals_missing(&numbered), "{dense}\n{numbered}");
        let want = df![
            "__year" => [2024, 2024, 2024, 2024],
            "partner" => ["P1", "P1", "P2", "P2"],
            "flow" => [Some("export"), Some("import"), Some("export"), None],
            "a0" => [1.0, 2.0, 4.0, 8.0],
            "a1" => [1.0, 1.0, 1.0, 1.0],
            "a2" => [1.0, 1.0, 2.0, 1.0],
            "a3" => [Some(1.0), Some(2.0), Some(4.0), Some(8.0)],
            "a4" => [Some(1.0), Some(2.0), Some(4.0), Some(8.0)],
            "a5" => [Some(1.0), Some(2.0), Some(4.0), Some(8.0)],
        ]
        .unwrap();
        assert!(dense.equals_missing(&want), "{dense}\n{want}");
    }
}
