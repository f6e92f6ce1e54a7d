//! Execution: the physical operators that read a dataset's stored rows.
//!
//! The compiler (`lang::compile`) builds the logical plan; what reads files
//! lives here: the scans of a dataset's Parquet files (with the Hive `year`),
//! the aggregate pushdown ([`pushdown`]) that answers group-bys from the
//! dictionary pages, the reads of the store's reference tables, and what a
//! batch shares between its queries (one cached scan per year, one pushdown
//! pass per dataset, one evaluation of identical group-bys). The compiler asks
//! a [`Source`] one question per need; `store` below keeps the files, the
//! manifests and the commit protocol, and knows nothing of queries.

pub mod combine;
pub mod pushdown;
pub mod series;

use crate::error::{Error, Result};
use crate::store::Manifest;
use polars::prelude::*;
use pushdown::{Pass, PassFile, Spec};
use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

thread_local! {
    /// Whether group-bys may be answered from the Parquet pages ([`pushdown`]),
    /// for queries compiled on this thread; None: the environment decides.
    static PUSHDOWN: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether this thread compiles group-bys to the aggregate pushdown: yes,
/// unless [`with_pushdown`] says otherwise or `TRADEQL_PUSHDOWN` is `off` or `0`.
pub fn pushdown_enabled() -> bool {
    PUSHDOWN.get().unwrap_or_else(|| !matches!(std::env::var("TRADEQL_PUSHDOWN").as_deref(), Ok("off" | "0")))
}

/// Runs `f` with the aggregate pushdown on or off for the queries it compiles
/// on this thread (to compare the two paths, or to time polars alone).
pub fn with_pushdown<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let before = PUSHDOWN.replace(Some(on));
    let out = f();
    PUSHDOWN.set(before);
    out
}

/// Where one query reads its rows: the store, and in a batch the scans,
/// pushdown passes and group-bys it shares with the batch's other queries.
pub struct Source<'a> {
    store: &'a Path,
    shared: Option<&'a mut SharedAggregates>,
    /// Whether `shared` is used now (not while a query aggregates the rows
    /// of other versions for `first_release`).
    sharing: bool,
    /// The query's own pushdown pass, when it is not compiled as part of a batch.
    pass: Option<Arc<Pass>>,
}

impl<'a> Source<'a> {
    pub fn new(store: &'a Path, shared: Option<&'a mut SharedAggregates>) -> Source<'a> {
        Source { store, shared, sharing: true, pass: None }
    }

    fn shared(&mut self) -> Option<&mut SharedAggregates> {
        if self.sharing { self.shared.as_deref_mut() } else { None }
    }

    /// The rows of one year's files of a dataset.
    pub fn year(&mut self, manifest: &Manifest, year: i32) -> Result<LazyFrame> {
        let store = self.store;
        match self.shared() {
            Some(s) => s.year_scan(store, manifest, year),
            None => scan_files(store, manifest, |f| f.year == year),
        }
    }

    /// `spec` answered from the Parquet pages by the dataset's pushdown pass
    /// (the batch's, or the query's own); None when the pass cannot take it.
    pub fn pushed_down(&mut self, manifest: &Manifest, spec: Spec) -> Option<LazyFrame> {
        let store = self.store;
        let pass = match self.shared() {
            Some(s) => s.pass(store, manifest),
            None => self.pass.get_or_insert_with(|| Arc::new(new_pass(store, manifest))).clone(),
        };
        pass.register(spec)
    }

    /// A group-by of rows, evaluated once for every query of the batch that
    /// makes the same one.
    pub fn grouped(&mut self, grouped: LazyFrame) -> LazyFrame {
        match self.shared() {
            Some(s) => s.share(grouped),
            None => grouped,
        }
    }

    /// One of the store's reference tables (groups, names, rates), by its
    /// path under `_groups/`.
    pub fn table(&self, path: &str) -> Result<LazyFrame> {
        reference_table(self.store, path)
    }

    /// The rows of each period as first published: each kept version's
    /// rows of the periods it held first (see [`first_releases`]).
    pub fn first_releases(&self, releases: &[(Manifest, Vec<i32>)]) -> Result<LazyFrame> {
        let mut parts = Vec::new();
        for (m, days) in releases {
            let first = Int32Chunked::from_vec("period".into(), days.clone()).into_date().into_series();
            parts.push(scan_dataset(self.store, m)?.filter(col("period").is_in(lit(first).implode(false), false)));
        }
        Ok(concat(parts, UnionArgs::default())?)
    }

    /// Whether the batch's shared scans and group-bys are used (`on`), as
    /// before; an aggregation of other versions' files (`first_release`)
    /// must not be shared as this version's. Returns the previous setting.
    pub fn set_sharing(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.sharing, on)
    }
}

/// One of the store's reference tables, by its path under `_groups/`.
pub fn reference_table(store: &Path, path: &str) -> Result<LazyFrame> {
    let file = store.join(crate::store::GROUPS_DIR).join(path);
    Ok(LazyFrame::scan_parquet(PlRefPath::new(file.to_string_lossy().as_ref()), ScanArgsParquet::default())?)
}

/// `spec` evaluated now over the dataset's files (for the compiler's
/// questions answered before the query runs: which code combinations exist).
pub fn group_by_now(store: &Path, manifest: &Manifest, spec: Spec) -> Result<DataFrame> {
    Ok(pushdown::group_by_now(pass_files(store, manifest), spec)?)
}

/// The distinct (group, member) pairs of a stored group table.
pub fn group_members(store: &Path, path: &str) -> Result<Vec<(String, String)>> {
    let frame = reference_table(store, path)?
        .select([col("group"), col("member")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .collect()?;
    let (groups, members) = (frame.column("group")?.str()?.clone(), frame.column("member")?.str()?.clone());
    Ok(groups.iter().zip(members.iter()).filter_map(|(g, m)| Some((g?.to_string(), m?.to_string()))).collect())
}

/// The grouped rows of the queries of a batch, by the plan that makes them:
/// queries that group the same rows by the same keys with the same aggregates
/// (Q2 and Q3 of the benchmark, and Q5's sums by member) share one cached
/// group-by, which polars then evaluates once for all of them.
#[derive(Default)]
pub struct SharedAggregates {
    frames: std::collections::HashMap<String, LazyFrame>,
    /// One cached scan per (dataset, year): every query of the batch reads a
    /// year's files through it, so each file is decoded once.
    scans: std::collections::HashMap<(String, i32), LazyFrame>,
    /// One pushdown pass per dataset: every query's group-bys that it can
    /// answer are answered by one read of the dataset's files.
    passes: std::collections::HashMap<String, Arc<Pass>>,
}

impl SharedAggregates {
    /// The rows of a dataset as the concatenation of its shared per-year scans.
    pub fn dataset_scan(&mut self, store: &Path, manifest: &Manifest) -> Result<LazyFrame> {
        let mut years: Vec<i32> = manifest.files.iter().map(|f| f.year).collect();
        years.sort_unstable();
        years.dedup();
        let parts = years.iter().map(|&y| self.year_scan(store, manifest, y)).collect::<Result<Vec<_>>>()?;
        if parts.is_empty() {
            return Err(Error::store(format!("the dataset {} has no files", manifest.dataset)));
        }
        Ok(concat(parts, UnionArgs::default())?)
    }

    fn year_scan(&mut self, store: &Path, manifest: &Manifest, year: i32) -> Result<LazyFrame> {
        let key = (read_key(manifest), year);
        if let Some(lf) = self.scans.get(&key) {
            return Ok(lf.clone());
        }
        let lf = scan_files(store, manifest, |f| f.year == year)?.cache();
        self.scans.insert(key, lf.clone());
        Ok(lf)
    }

    fn pass(&mut self, store: &Path, manifest: &Manifest) -> Arc<Pass> {
        self.passes.entry(read_key(manifest)).or_insert_with(|| Arc::new(new_pass(store, manifest))).clone()
    }

    fn share(&mut self, grouped: LazyFrame) -> LazyFrame {
        let key = format!("{:?}", grouped.logical_plan);
        self.frames.entry(key).or_insert_with(|| grouped.cache()).clone()
    }
}

/// What a manifest reads, for the scans and passes a batch shares: the
/// dataset's rows, or one of its rollups (`dataset/rollup`).
fn read_key(manifest: &Manifest) -> String {
    match &manifest.view {
        Some(r) => format!("{}/{r}", manifest.dataset),
        None => manifest.dataset.clone(),
    }
}

/// A pushdown pass over the files the manifest lists.
fn new_pass(store: &Path, manifest: &Manifest) -> Pass {
    Pass::new(pass_files(store, manifest))
}

/// The distinct values of a stored text column of a dataset (nulls left out):
/// when the pushdown is on, from the files' dictionary pages, or else their
/// dictionary indices; otherwise through polars.
pub fn distinct_values(store: &Path, manifest: &Manifest, column: &str) -> Result<Vec<String>> {
    if pushdown_enabled()
        && let Some(values) = pushdown::distinct_texts(&pass_files(store, manifest), column)
    {
        return Ok(values);
    }
    let fallback = scan_dataset(store, manifest)?.select([col(column).unique()]);
    let frame = if pushdown_enabled() {
        let key = pushdown::Key { name: column.to_string(), source: pushdown::KeySource::Code(column.to_string()) };
        let spec = pushdown::Spec {
            keys: vec![key],
            aggs: Vec::new(),
            filters: Vec::new(),
            skip_aggregate_rows: false,
            fallback,
        };
        pushdown::group_by_now(pass_files(store, manifest), spec)?
    } else {
        fallback.collect()?
    };
    let values = frame.column(column)?.str()?.clone();
    Ok((0..values.len()).filter_map(|i| values.get(i).map(str::to_string)).collect())
}

/// The rows of each code of a stored text column (`column`, `__rows` as a
/// float): through the pushdown when it is on, a row group at a time, so a
/// billion rows take the memory of one; otherwise through polars.
pub fn rows_by_code(store: &Path, manifest: &Manifest, column: &str) -> Result<DataFrame> {
    let fallback =
        scan_dataset(store, manifest)?.group_by([col(column)]).agg([len().cast(DataType::Float64).alias("__rows")]);
    if !pushdown_enabled() {
        return Ok(fallback.collect()?);
    }
    let spec = pushdown::Spec {
        keys: vec![pushdown::Key { name: column.to_string(), source: pushdown::KeySource::Code(column.to_string()) }],
        aggs: vec![pushdown::Agg { name: "__rows".into(), func: pushdown::AggFunc::Rows, column: None }],
        filters: Vec::new(),
        skip_aggregate_rows: false,
        fallback,
    };
    Ok(pushdown::group_by_now(pass_files(store, manifest), spec)?)
}

/// The files of a dataset as a pushdown pass reads them.
fn pass_files(store: &Path, manifest: &Manifest) -> Vec<PassFile> {
    let dir = crate::store::files_dir(store, &manifest.dataset);
    manifest
        .files
        .iter()
        .map(|f| PassFile {
            path: dir.join(&f.path),
            year: f.year,
            has_aggregate_rows: f.aggregate_rows > 0,
            periods: f.periods.iter().filter_map(|p| crate::period::Period::parse(p).ok()).map(|p| p.days()).collect(),
        })
        .collect()
}

/// Where each period of `manifest`'s dataset was first published: each kept
/// version (up to `manifest`'s) with the periods (days) it held first.
pub fn first_releases(store: &crate::store::Store, manifest: &Manifest) -> Result<Vec<(Manifest, Vec<i32>)>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for v in store.versions(&manifest.dataset)?.into_iter().filter(|v| *v <= manifest.version) {
        let m = store.manifest_version(&manifest.dataset, v)?;
        let days: Vec<i32> = m.period_values().into_iter().filter(|p| seen.insert(*p)).map(|p| p.days()).collect();
        if !days.is_empty() {
            out.push((m, days));
        }
    }
    Ok(out)
}

/// The rows of a dataset: the files its manifest lists, with the Hive `year`.
pub fn scan_dataset(store: &Path, manifest: &Manifest) -> Result<LazyFrame> {
    scan_files(store, manifest, |_| true)
}

/// The rows of the files of a dataset that `keep` keeps, with the Hive `year`.
fn scan_files(
    store: &Path,
    manifest: &Manifest,
    keep: impl Fn(&crate::store::manifest::DataFile) -> bool,
) -> Result<LazyFrame> {
    let dir = crate::store::files_dir(store, &manifest.dataset);
    let paths: Vec<PlRefPath> = manifest
        .files
        .iter()
        .filter(|f| keep(f))
        .map(|f| PlRefPath::new(dir.join(&f.path).to_string_lossy().as_ref()))
        .collect();
    if paths.is_empty() {
        return Err(Error::store(format!("the dataset {} has no files", manifest.dataset)));
    }
    let hive = HiveOptions {
        enabled: Some(true),
        hive_start_idx: 0,
        schema: Some(Arc::new(Schema::from_iter([Field::new("year".into(), DataType::Int32)]))),
        try_parse_dates: false,
    };
    let args = ScanArgsParquet { hive_options: hive, ..Default::default() };
    Ok(LazyFrame::scan_parquet_sources(ScanSources::Paths(paths.into()), args)?)
}
