//! Rollups: aggregate tables of a dataset kept up to date at ingest, read by
//! the planner in place of the rows when they hold every column a query reads.
//!
//! A rollup sums a dataset's rows by `period` (the dataset's own periods, so
//! it answers every calendar roll-up) and a few code columns (`by`), one file
//! per year beside the year's rows. For each floating-point column `m` of the
//! rows it keeps the sum (`m`, null where no row has a value), the count of
//! values (`__n_m`), the minimum and maximum (`__min_m`, `__max_m`); besides,
//! the count of rows (`__rows`) and the sums of value and quantity over the
//! rows whose quantity is positive (`__qpos_value`, `__qpos_quantity`: unit
//! values). Every aggregate tradeql computes on rows but the mean and the
//! distinct count is one of these, re-aggregated: a sum of sums, a sum of
//! counts, a minimum of minimums. The sums are added in another order than
//! from the rows, so a figure may differ in its last bits (equal to 1e-12
//! relative; bit for bit where the values are whole numbers below 2^53).
//!
//! Declared with `tradeql rollup add` (a commit of its own, which builds the
//! rollup for every year); every ingest then rebuilds the rollups of the
//! years it writes, from the year's new file, in the same commit as the rows.
//! [`choose`] decides, per query, whether a rollup covers it; `explain` says
//! which and why; `TRADEQL_ROLLUPS=off` reads the rows always.

use crate::error::{Error, Result};
use crate::exec::pushdown::{self, AggFunc, Key, KeySource, PassFile};
use crate::lang::plan::{Agg, AggFunc as PlanAgg, Measure, Plan, RExpr};
use crate::store::manifest::{Codec, DataFile, Manifest, Rollup};
use crate::store::{Commit, Store};
use polars::prelude::*;
use std::cell::Cell;
use std::path::{Path, PathBuf};

thread_local! {
    /// Whether queries compiled on this thread may read rollups; None: the environment decides.
    static ROLLUPS: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether queries compiled on this thread may read rollups: yes, unless
/// [`with_rollups`] says otherwise or `TRADEQL_ROLLUPS` is `off` or `0`.
pub fn rollups_enabled() -> bool {
    ROLLUPS.get().unwrap_or_else(|| !matches!(std::env::var("TRADEQL_ROLLUPS").as_deref(), Ok("off" | "0")))
}

/// Runs `f` with rollups on or off for the queries it compiles on this thread.
pub fn with_rollups<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let before = ROLLUPS.replace(Some(on));
    let out = f();
    ROLLUPS.set(before);
    out
}

/// A rollup's `by` entry as stored: the code column, and how many of its
/// first characters the rollup keeps. `chapter(product)` keeps 2 (the HS
/// chapter) and `heading(product)` 4, in the column `product`: such a
/// rollup answers the queries that read `product` only through chapter()
/// (or heading()), since the chapter of a chapter code is itself.
pub fn by_column(entry: &str) -> (&str, Option<usize>) {
    for (f, n) in [("chapter(", 2), ("heading(", 4)] {
        if let Some(c) = entry.strip_prefix(f).and_then(|r| r.strip_suffix(')')) {
            return (c, Some(n));
        }
    }
    (entry, None)
}

/// For each `by` entry that cuts its codes, the expression that cuts them in place.
fn cut_exprs(by: &[String]) -> Vec<Expr> {
    by.iter()
        .filter_map(|b| match by_column(b) {
            (c, Some(kept)) => Some(col(c).str().slice(lit(0), lit(kept as u64)).alias(c)),
            _ => None,
        })
        .collect()
}

/// Whether every use the query makes of the code column `c` is `chapter(c)`
/// (or, when `kept` is 4, `heading(c)` too): the first `kept` characters of
/// each code are all it reads of them.
fn reads_only_cut(plan: &Plan, c: &str, kept: usize) -> bool {
    use crate::lang::plan::CodeFn;
    if plan.keys.iter().any(|k| k == c) || plan.groups.iter().any(|g| g.dim == c) {
        return false;
    }
    let mut dims = Vec::new();
    for x in plan.outputs.iter().map(|o| &o.expr).chain(plan.post_derives.iter().map(|(_, x)| x)) {
        total_row_dims(x, &mut dims);
    }
    for x in &plan.post_filters {
        total_row_dims(x, &mut dims);
    }
    if dims.iter().any(|d| d == c) {
        return false;
    }
    let exprs = plan
        .row_filters
        .iter()
        .chain(plan.derives.iter().map(|(_, x)| x))
        .chain(plan.outputs.iter().map(|o| &o.expr))
        .chain(plan.post_derives.iter().map(|(_, x)| x))
        .chain(plan.post_filters.iter());
    let (mut uses, mut cut) = (0usize, 0usize);
    for x in exprs {
        x.any(&mut |e| {
            match e {
                RExpr::Col(name) if name == c => uses += 1,
                RExpr::Code(f, inner)
                    if matches!(inner.as_ref(), RExpr::Col(name) if name == c)
                        && (*f == CodeFn::Chapter || (*f == CodeFn::Heading && kept >= 4)) =>
                {
                    cut += 1
                }
                _ => {}
            }
            false
        });
    }
    uses == cut
}

/// Whether the rollup `r` holds what the query reads of the code column `c`:
/// the column itself, or the part of it the query reads.
fn covers(r: &Rollup, c: &str, plan: &Plan) -> bool {
    r.by.iter().any(|b| match by_column(b) {
        (col, None) => col == c,
        (col, Some(kept)) => col == c && reads_only_cut(plan, c, kept),
    })
}

/// The column counting the values of `m` in a rollup row.
pub fn count_column(m: &str) -> String {
    format!("__n_{m}")
}

fn min_column(m: &str) -> String {
    format!("__min_{m}")
}

fn max_column(m: &str) -> String {
    format!("__max_{m}")
}

fn positive_quantity_column(m: &str) -> String {
    format!("__qpos_{m}")
}

/// The column counting the rows summed into a rollup row.
pub const ROWS_COLUMN: &str = "__rows";

/// The floating-point columns of a rollup table after its keys, for a
/// dataset whose rows have the floating-point columns `measures`.
pub fn table_columns(measures: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for m in measures {
        out.extend([m.clone(), count_column(m), min_column(m), max_column(m)]);
    }
    out.push(ROWS_COLUMN.to_string());
    out.extend(["value", "quantity"].map(positive_quantity_column));
    out
}

/// What an aggregate of the rows is over a rollup's rows: the function and
/// the rollup column it reads (the sum of `__n_value` for `count(value)`).
/// None for the aggregates a rollup cannot answer (mean, distinct counts).
pub fn over_rollup(a: &Agg) -> Option<(AggFunc, String)> {
    Some(match (a.func, a.arg.as_deref()) {
        (PlanAgg::Sum, Some(x)) if a.name.starts_with("__uv_") => (AggFunc::Sum, positive_quantity_column(x)),
        (PlanAgg::Sum, Some(x)) => (AggFunc::Sum, x.to_string()),
        (PlanAgg::Count, Some(x)) => (AggFunc::Sum, count_column(x)),
        (PlanAgg::Count, None) => (AggFunc::Sum, ROWS_COLUMN.to_string()),
        (PlanAgg::Min, Some(x)) => (AggFunc::Min, min_column(x)),
        (PlanAgg::Max, Some(x)) => (AggFunc::Max, max_column(x)),
        _ => return None,
    })
}

/// The planner's decision for one query: the rollup it reads (if any), and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Choice {
    pub rollup: Option<String>,
    /// One line per rollup of the dataset: read, or why not.
    pub reasons: Vec<String>,
}

impl Choice {
    /// For `tradeql explain`: empty when the dataset has no rollup.
    pub fn describe(&self) -> String {
        if self.reasons.is_empty() {
            return String::new();
        }
        let head = match &self.rollup {
            Some(r) => format!("rollup: {r} is read in place of the rows (TRADEQL_ROLLUPS=off reads the rows):"),
            None => "rollup: none is read; the query reads the rows:".to_string(),
        };
        let mut out = head;
        for r in &self.reasons {
            out.push_str(&format!("\n  - {r}"));
        }
        out
    }
}

/// The rollup of `manifest` that answers `plan` with the fewest rows, if
/// one holds every column the query's row stage reads and every aggregate
/// composes from the rollup's columns.
pub fn choose(plan: &Plan, manifest: &Manifest) -> Choice {
    let mut choice = Choice::default();
    if manifest.rollups.is_empty() || manifest.view.is_some() {
        return choice;
    }
    let whole = match query_needs(plan, manifest) {
        Ok(needs) => needs,
        Err(why) => {
            choice.reasons.push(format!("no rollup can answer this query: {why}"));
            return choice;
        }
    };
    if !rollups_enabled() {
        choice.reasons.push("TRADEQL_ROLLUPS is off".into());
        return choice;
    }
    let mut best: Option<(&Rollup, u64)> = None;
    for r in &manifest.rollups {
        let missing: Vec<&String> = whole.iter().filter(|c| !covers(r, c, plan)).collect();
        let rows: u64 = r.files.iter().map(|f| f.rows).sum();
        if missing.is_empty() {
            if best.is_none_or(|(_, n)| rows < n) {
                best = Some((r, rows));
            }
        } else {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            choice.reasons.push(format!("{} (by {}) does not hold {}", r.name, r.by.join(", "), names.join(", ")));
        }
    }
    if let Some((r, rows)) = best {
        let reads = if whole.is_empty() { "no code column".to_string() } else { whole.join(", ") };
        choice.reasons.insert(
            0,
            format!(
                "{} (by period, {}; {rows} rows in {} files, against {} stored rows): the query reads {reads}, \
                 and its aggregates compose",
                r.name,
                r.by.join(", "),
                r.files.len(),
                manifest.rows
            ),
        );
        choice.rollup = Some(r.name.clone());
    }
    choice
}

/// The code columns of the rows a query reads, when a rollup could answer it
/// at all; else why not.
fn query_needs(plan: &Plan, manifest: &Manifest) -> std::result::Result<Vec<String>, String> {
    if plan.time.is_none() && plan.keys.is_empty() && plan.aggs.is_empty() {
        return Err("it lists rows".into());
    }
    if plan.reads_first_release {
        return Err("first_release() reads the rows of earlier versions".into());
    }
    let measures = manifest.measure_columns();
    for a in &plan.aggs {
        if over_rollup(a).is_none() {
            return Err(format!("{}() needs the rows", a.func.name()));
        }
        if let Some(x) = &a.arg
            && !measures.contains(x)
            && !(a.func == PlanAgg::Sum && linear(&RExpr::Col(x.clone()), plan, &measures).is_some())
        {
            return Err(format!(
                "{}({x}) aggregates a derived column that is not a sum of stored values",
                a.func.name()
            ));
        }
    }
    let mut read: Vec<String> = Vec::new();
    for x in &plan.row_filters {
        if x.any(&mut |e| matches!(e, RExpr::Convert(..) | RExpr::Measure(_))) {
            return Err("its row filters convert currencies or read a measure".into());
        }
        columns_of(x, &mut read);
    }
    for (_, x) in &plan.derives {
        match linear(x, plan, &measures) {
            Some(conditions) => read.extend(conditions),
            None if x.any(&mut |e| matches!(e, RExpr::Convert(..) | RExpr::Measure(_))) => {
                return Err(format!("its derived column {x} is not a sum of stored values"));
            }
            None => columns_of(x, &mut read),
        }
    }
    read.extend(plan.keys.iter().cloned());
    read.extend(plan.groups.iter().map(|g| g.dim.clone()));
    for x in plan.outputs.iter().map(|o| &o.expr).chain(plan.post_derives.iter().map(|(_, x)| x)) {
        total_row_dims(x, &mut read);
    }
    for x in &plan.post_filters {
        total_row_dims(x, &mut read);
    }
    let calendar = ["period", "year", "quarter", "month"];
    let aliases: Vec<&str> = plan.groups.iter().map(|g| g.alias.as_str()).collect();
    let mut needs: Vec<String> = Vec::new();
    for c in &read {
        let c = c.as_str();
        if calendar.contains(&c) || aliases.contains(&c) {
            continue;
        }
        if let Some((_, x)) = plan.derives.iter().find(|(n, _)| n == c) {
            // Read by a filter or a key: computed per row from codes, not values.
            if reaches(x, plan, &measures, 0) {
                return Err(format!("its rows are filtered or grouped by {c}, computed from the values"));
            }
            continue;
        }
        if !manifest.schema.iter().any(|s| s.name == c && s.dtype == "str") {
            return Err(format!("its row stage reads {c}, which is not a code column"));
        }
        if !needs.iter().any(|n| n == c) {
            needs.push(c.to_string());
        }
    }
    Ok(needs)
}

/// Whether `x` reads a stored value, itself or through derived columns.
fn reaches(x: &RExpr, plan: &Plan, measures: &[String], depth: usize) -> bool {
    depth > plan.derives.len()
        || x.any(&mut |e| match e {
            RExpr::Col(c) if measures.contains(c) => true,
            RExpr::Col(c) => plan.derives.iter().any(|(n, d)| n == c && reaches(d, plan, measures, depth + 1)),
            RExpr::Convert(..) | RExpr::Measure(_) => true,
            _ => false,
        })
}

/// When `x` is linear in the stored values, with coefficients that depend
/// on code and calendar columns only (`value`, `if(flow = "export", value,
/// 0)`, `convert(value, "USD")`, `value / 1e9`), the columns its conditions
/// read: its sum over a rollup's rows is then its sum over the rows (the
/// coefficient is the same for every row a rollup row sums). None otherwise.
fn linear(x: &RExpr, plan: &Plan, measures: &[String]) -> Option<Vec<String>> {
    let plain = |e: &RExpr| !e.any(&mut |y| matches!(y, RExpr::Convert(..) | RExpr::Measure(_)));
    let no_measure = |e: &RExpr| measures.iter().all(|m| !e.mentions(m)) && plain(e);
    match x {
        RExpr::Col(c) if measures.contains(c) => Some(Vec::new()),
        RExpr::Col(c) => {
            let (_, d) = plan.derives.iter().find(|(n, _)| n == c)?;
            linear(d, plan, measures)
        }
        RExpr::Num(n) if *n == 0.0 => Some(Vec::new()),
        RExpr::Neg(a) | RExpr::Convert(a, _) => linear(a, plan, measures),
        RExpr::Bin(op, a, b) => match (op, a.as_ref(), b.as_ref()) {
            (crate::lang::ast::BinOp::Mul, RExpr::Num(_), e) | (crate::lang::ast::BinOp::Mul, e, RExpr::Num(_)) => {
                linear(e, plan, measures)
            }
            (crate::lang::ast::BinOp::Div, e, RExpr::Num(k)) if *k != 0.0 => linear(e, plan, measures),
            _ => None,
        },
        RExpr::If(c, a, b) if no_measure(c) => {
            let mut out = Vec::new();
            columns_of(c, &mut out);
            out.extend(linear(a, plan, measures)?);
            out.extend(linear(b, plan, measures)?);
            Some(out)
        }
        _ => None,
    }
}

/// The columns an expression reads.
fn columns_of(x: &RExpr, out: &mut Vec<String>) {
    x.any(&mut |e| {
        if let RExpr::Col(c) = e {
            out.push(c.clone());
        }
        false
    });
}

/// The dimensions of the total rows (`share(value, region = "CN")`) the
/// measures of `x` divide by: read from the rows with the query's filters.
fn total_row_dims(x: &RExpr, out: &mut Vec<String>) {
    x.any(&mut |e| {
        if let RExpr::Measure(m) = e {
            match m.as_ref() {
                Measure::Share(a, _, of) | Measure::Contribution(a, _, of) => {
                    out.extend(of.iter().map(|t| t.dim.clone()));
                    total_row_dims(a, out);
                }
                Measure::Versus { x: a, .. }
                | Measure::Yoy(a)
                | Measure::Pop(a)
                | Measure::Pp(a)
                | Measure::Ytd(a)
                | Measure::Rolling(a, ..)
                | Measure::Rank(a, _)
                | Measure::High(a, _)
                | Measure::Record(a)
                | Measure::Streak(a)
                | Measure::FirstRelease(a) => total_row_dims(a, out),
                Measure::UnitValue => {}
            }
        }
        false
    });
}

/// The rollup of one year: the year's rows (the file at `rows`, holding
/// `periods`) summed by period and `by` into a staged file at `out`.
/// Read through the aggregate pushdown, so the time is that of reading the
/// year's key and value pages once.
pub fn build_year(
    rows: &Path,
    data: &DataFile,
    by: &[String],
    measures: &[String],
    out: &Path,
    codec: Codec,
) -> Result<DataFile> {
    let mut keys = vec![Key { name: "period".into(), source: KeySource::Period { months: 1 } }];
    keys.extend(by.iter().map(|b| {
        let c = by_column(b).0;
        Key { name: c.to_string(), source: KeySource::Code(c.to_string()) }
    }));
    let mut aggs = Vec::new();
    let agg = |name: String, func: AggFunc, column: Option<&str>| pushdown::Agg {
        name,
        func,
        column: column.map(str::to_string),
    };
    for m in measures {
        aggs.push(agg(m.clone(), AggFunc::Sum, Some(m)));
        aggs.push(agg(count_column(m), AggFunc::Count, Some(m)));
        aggs.push(agg(min_column(m), AggFunc::Min, Some(m)));
        aggs.push(agg(max_column(m), AggFunc::Max, Some(m)));
    }
    aggs.push(agg(ROWS_COLUMN.into(), AggFunc::Rows, None));
    for m in ["value", "quantity"] {
        aggs.push(agg(positive_quantity_column(m), AggFunc::SumWherePositiveQuantity, Some(m)));
    }
    let key_names: Vec<Expr> = keys.iter().map(|k| col(k.name.as_str())).collect();
    let fallback = crate::store::scan_file(rows)?.group_by(key_names.clone()).agg(polars_aggs(&aggs));
    let spec = pushdown::Spec { keys, aggs, filters: Vec::new(), skip_aggregate_rows: false, fallback };
    let file = PassFile {
        path: rows.to_path_buf(),
        year: data.year,
        has_aggregate_rows: data.aggregate_rows > 0,
        periods: Vec::new(),
    };
    let mut grouped = pushdown::group_by_now(vec![file], spec.clone())?;
    if by.iter().any(|b| by_column(b).1.is_some()) {
        grouped = cut_codes(grouped, by, &spec.aggs)?;
    }
    // A sum with no value is null, as the rows' sum of a further measure is.
    let nulls: Vec<Expr> = measures
        .iter()
        .map(|m| {
            when(col(count_column(m).as_str()).gt(lit(0.0)))
                .then(col(m.as_str()))
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias(m.as_str())
        })
        .collect();
    let order: Vec<PlSmallStr> =
        std::iter::once("period").chain(by.iter().map(|b| by_column(b).0)).map(Into::into).collect();
    let table = grouped
        .lazy()
        .with_columns(nulls)
        .sort(order, SortMultipleOptions::default().with_nulls_last(true).with_maintain_order(true));
    crate::ingest::writer::sink_parquet(table, out, codec)?;
    let (sha256, bytes) = crate::store::sha256_file(out)?;
    Ok(DataFile {
        path: String::new(),
        year: data.year,
        rows: crate::store::verify::parquet_rows(out)?,
        aggregate_rows: 0,
        bytes,
        sha256,
        periods: data.periods.clone(),
        codes: data.codes.iter().filter(|(c, _)| by.contains(c)).map(|(c, v)| (c.clone(), v.clone())).collect(),
        wide: data.wide.iter().filter(|(c, _)| by.contains(c)).map(|(c, v)| (c.clone(), v.clone())).collect(),
    })
}

/// The groups of a rollup by whole codes regrouped by the first characters
/// of the codes its `by` entries cut (`chapter(product)`): sums added in
/// the order of the whole codes, as the planner adds a query's sums by
/// product into chapters, so the figures are those of the rows to the bit.
fn cut_codes(grouped: DataFrame, by: &[String], aggs: &[pushdown::Agg]) -> Result<DataFrame> {
    let columns: Vec<&str> = std::iter::once("period").chain(by.iter().map(|b| by_column(b).0)).collect();
    let order: Vec<PlSmallStr> = columns.iter().map(|c| (*c).into()).collect();
    let cuts = cut_exprs(by);
    let regrouped: Vec<Expr> = aggs
        .iter()
        .map(|a| {
            let x = col(a.name.as_str());
            match a.func {
                AggFunc::Min => x.min(),
                AggFunc::Max => x.max(),
                _ => x.fill_null(lit(0.0)).cum_sum(false).last(),
            }
            .alias(a.name.as_str())
        })
        .collect();
    let keys: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    Ok(grouped
        .lazy()
        .sort(order, SortMultipleOptions::default().with_nulls_last(true).with_maintain_order(true))
        .with_columns(cuts)
        .group_by_stable(keys)
        .agg(regrouped)
        .collect_with_engine(Engine::InMemory)?
        .unwrap_single())
}

/// The aggregates of [`build_year`] in polars, for files the pushdown cannot read.
fn polars_aggs(aggs: &[pushdown::Agg]) -> Vec<Expr> {
    aggs.iter()
        .map(|a| {
            let c = a.column.as_deref().map(col);
            let e = match (a.func, c) {
                (AggFunc::Sum, Some(x)) => x.sum(),
                (AggFunc::Count, Some(x)) => x.count().cast(DataType::Float64),
                (AggFunc::Min, Some(x)) => x.min(),
                (AggFunc::Max, Some(x)) => x.max(),
                (AggFunc::SumWherePositiveQuantity, Some(x)) => x.filter(col("quantity").gt(lit(0.0))).sum(),
                _ => len().cast(DataType::Float64),
            };
            e.alias(a.name.as_str())
        })
        .collect()
}

/// Where a rollup's file of a year is stored, relative to the dataset's files.
pub fn file_path(name: &str, year: i32, version: u64) -> String {
    format!("year={year}/rollup-{name}-v{version:06}.parquet")
}

/// Builds the rollups of `manifest` (the new version) for the years whose
/// rows are the staged files `years` ((data file entry, staged path)): the
/// other years keep their rollup files. Returns the moves of the new files.
pub fn rebuild(
    manifest: &mut Manifest,
    years: &[(DataFile, PathBuf)],
    staging: &Path,
    dataset: &str,
) -> Result<Vec<(PathBuf, String)>> {
    let measures = manifest.measure_columns();
    let version = manifest.version;
    let codec = manifest.compression;
    let mut moves = Vec::new();
    for r in &mut manifest.rollups {
        for (data, rows) in years {
            let staged = staging.join(format!("rollup-{}-year={}.parquet", r.name, data.year));
            let mut file = build_year(rows, data, &r.by, &measures, &staged, codec)?;
            file.path = file_path(&r.name, data.year, version);
            moves.push((staged, Store::dataset_rel(dataset, &format!("files/{}", file.path))));
            r.files.retain(|f| f.year != data.year);
            r.files.push(file);
        }
        let years: Vec<i32> = manifest.files.iter().map(|f| f.year).collect();
        r.files.retain(|f| years.contains(&f.year));
        r.files.sort_by_key(|f| f.year);
        // The wide-code index may have moved under the years kept: their
        // ranges are those of the rows' file of the year, which were redrawn.
        for f in &mut r.files {
            if let Some(data) = manifest.files.iter().find(|d| d.year == f.year) {
                f.wide =
                    data.wide.iter().filter(|(c, _)| r.by.contains(c)).map(|(c, v)| (c.clone(), v.clone())).collect();
            }
        }
    }
    Ok(moves)
}

/// The columns a rollup can be declared by: the dataset's stored text columns.
fn declarable(manifest: &Manifest) -> Vec<String> {
    manifest.schema.iter().filter(|c| c.dtype == "str").map(|c| c.name.clone()).collect()
}

/// `tradeql rollup add`: what was built.
#[derive(Debug, Clone)]
pub struct AddReport {
    pub dataset: String,
    pub name: String,
    pub by: Vec<String>,
    pub version: u64,
    pub rows: u64,
    pub bytes: u64,
    pub data_rows: u64,
    pub data_bytes: u64,
    pub seconds: f64,
}

impl std::fmt::Display for AddReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rollup {} of {} (by period, {}): {} rows, {} bytes ({:.2}% of the rows' {} bytes), built in {:.2} s; \
             version {}",
            self.name,
            self.dataset,
            self.by.join(", "),
            self.rows,
            self.bytes,
            100.0 * self.bytes as f64 / self.data_bytes.max(1) as f64,
            self.data_bytes,
            self.seconds,
            self.version
        )
    }
}

/// The columns of `by` checked against the dataset, in the store's order,
/// and the rollup's name (given, or the columns joined by `_`).
fn checked_by(manifest: &Manifest, by: &[String], name: Option<&str>) -> Result<(Vec<String>, String)> {
    let allowed = declarable(manifest);
    let mut cols: Vec<String> = Vec::new();
    for b in by.iter().flat_map(|b| b.split(',')).map(str::trim).filter(|b| !b.is_empty()) {
        if ["period", "year", "quarter", "month"].contains(&b) {
            continue; // the dataset's own periods are always kept
        }
        let column = by_column(b).0;
        if let Some(other) = cols.iter().find(|c| by_column(c).0 == column && c.as_str() != b) {
            return Err(Error::usage(format!("a rollup holds {column} once: {other} and {b} both name it"))
                .hint("keep the whole codes (product), which answer chapter(product) too, or one cut of them"));
        }
        if !allowed.iter().any(|a| a == column) {
            let mut e =
                Error::usage(format!("the dataset {} has no code column {b:?}", manifest.dataset)).hint(format!(
                    "a rollup is by the dataset's code columns ({}), or by chapter(c) or heading(c) of one",
                    allowed.join(", ")
                ));
            if let Some(s) = crate::suggest::closest(b, allowed.iter().map(String::as_str)) {
                e = e.hint(format!("did you mean {s:?}?"));
            }
            return Err(e);
        }
        if !cols.iter().any(|c| c == b) {
            cols.push(b.to_string());
        }
    }
    cols.sort_by_key(|c| allowed.iter().position(|a| a == by_column(c).0));
    let name = match name {
        Some(n) => n.to_string(),
        None if cols.is_empty() => "period".to_string(),
        None => cols.iter().map(|c| c.replace('(', "_").replace(')', "")).collect::<Vec<_>>().join("_"),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::usage(format!("bad rollup name {name:?}: use letters, digits and '_'")));
    }
    Ok((cols, name))
}

/// Declares a rollup of `dataset` and builds it for every year, in one commit.
pub fn add(store_root: &Path, dataset: &str, by: &[String], name: Option<&str>, wait: bool) -> Result<AddReport> {
    let started = std::time::Instant::now();
    let store = Store::open_existing(store_root)?;
    let lock = store.lock(wait, &format!("add a rollup of {dataset}"))?;
    store.recover(&lock)?;
    let old = store.manifest(dataset)?.ok_or_else(|| no_dataset(&store, dataset))?;
    let (by, name) = checked_by(&old, by, name)?;
    if let Some(r) = old.rollups.iter().find(|r| r.name == name || r.by == by) {
        return Err(Error::usage(format!(
            "{dataset} already has the rollup {} (by period, {})",
            r.name,
            r.by.join(", ")
        ))
        .hint("`tradeql rollup remove` removes it"));
    }
    let mut manifest = old.clone();
    manifest.version += 1;
    manifest.updated_at = crate::store::now();
    manifest.rollups.push(Rollup { name: name.clone(), by: by.clone(), files: Vec::new() });
    let dir = store.files_dir(dataset);
    let years: Vec<(DataFile, PathBuf)> = old.files.iter().map(|f| (f.clone(), dir.join(&f.path))).collect();
    let staging = store.staging_dir(&lock)?;
    let result = (|| -> Result<AddReport> {
        let mut only = manifest.clone();
        only.rollups.retain(|r| r.name == name);
        let moves = rebuild(&mut only, &years, &staging, dataset)?;
        let built = only.rollups.pop().expect("the rollup just added");
        let (rows, bytes) = (built.files.iter().map(|f| f.rows).sum(), built.files.iter().map(|f| f.bytes).sum());
        *manifest.rollups.last_mut().expect("the rollup just added") = built;
        commit(&store, &lock, dataset, &manifest, moves)?;
        Ok(AddReport {
            dataset: dataset.to_string(),
            name: name.clone(),
            by: by.clone(),
            version: manifest.version,
            rows,
            bytes,
            data_rows: old.rows,
            data_bytes: old.files.iter().map(|f| f.bytes).sum(),
            seconds: started.elapsed().as_secs_f64(),
        })
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Removes the rollup `name` of `dataset` (a new version without it; its
/// files stay for the versions that list them, until `vacuum`).
pub fn remove(store_root: &Path, dataset: &str, name: &str, wait: bool) -> Result<u64> {
    let store = Store::open_existing(store_root)?;
    let lock = store.lock(wait, &format!("remove a rollup of {dataset}"))?;
    store.recover(&lock)?;
    let old = store.manifest(dataset)?.ok_or_else(|| no_dataset(&store, dataset))?;
    if !old.rollups.iter().any(|r| r.name == name) {
        let names: Vec<&str> = old.rollups.iter().map(|r| r.name.as_str()).collect();
        let hint = if names.is_empty() {
            format!("{dataset} has no rollup")
        } else {
            format!("its rollups: {}", names.join(", "))
        };
        return Err(Error::usage(format!("{dataset} has no rollup {name:?}")).hint(hint));
    }
    let mut manifest = old;
    manifest.version += 1;
    manifest.updated_at = crate::store::now();
    manifest.rollups.retain(|r| r.name != name);
    commit(&store, &lock, dataset, &manifest, Vec::new())?;
    Ok(manifest.version)
}

fn commit(
    store: &Store,
    lock: &crate::store::StoreLock,
    dataset: &str,
    manifest: &Manifest,
    moves: Vec<(PathBuf, String)>,
) -> Result<()> {
    store.commit(
        lock,
        Commit {
            manifest_path: Store::dataset_rel(dataset, "manifest.json"),
            manifest_json: serde_json::to_string_pretty(manifest)?,
            version: manifest.version,
            moves,
            removed: Vec::new(),
        },
    )
}

fn no_dataset(store: &Store, dataset: &str) -> Error {
    let datasets = store.datasets().unwrap_or_default();
    let mut e = Error::new(crate::error::ErrorKind::NotFound, format!("no dataset {dataset} in the store"));
    if let Some(s) = crate::suggest::closest(dataset, datasets.iter().map(String::as_str)) {
        e = e.hint(format!("did you mean {s:?}?"));
    }
    e
}

/// A rollup `tradeql rollup advise` proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub dataset: String,
    pub by: Vec<String>,
    /// The query files it answers.
    pub queries: Vec<String>,
    /// Its rows, counted on the store (distinct periods and codes); when not
    /// `exact`, a bound (every period with every code): too many to count.
    pub rows: u64,
    pub exact: bool,
    /// Its size before compression: rows × columns × 8 bytes (an upper bound
    /// of the Parquet file's; `rollup add` prints the real size).
    pub bytes_uncompressed: u64,
    /// The dataset's rows, and whether it has this rollup already.
    pub data_rows: u64,
    pub exists: Option<String>,
}

/// What `tradeql rollup advise` found.
#[derive(Debug, Clone, Default)]
pub struct Advice {
    pub proposals: Vec<Proposal>,
    /// The queries no rollup can answer, with why.
    pub unanswered: Vec<(String, String)>,
}

impl std::fmt::Display for Advice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.proposals.is_empty() {
            writeln!(f, "no rollup answers these queries")?;
        }
        for p in &self.proposals {
            let by = if p.by.is_empty() { "period".to_string() } else { format!("period, {}", p.by.join(", ")) };
            writeln!(
                f,
                "{} by {by}: {}{} rows ({:.3}% of {}), about {} bytes before compression{}",
                p.dataset,
                if p.exact { "" } else { "up to " },
                p.rows,
                100.0 * p.rows as f64 / p.data_rows.max(1) as f64,
                p.data_rows,
                p.bytes_uncompressed,
                match &p.exists {
                    Some(name) => format!("; the store has it ({name})"),
                    None => String::new(),
                }
            )?;
            writeln!(f, "  answers {}", p.queries.join(", "))?;
            if p.exists.is_none() {
                writeln!(
                    f,
                    "  tradeql rollup add {} --by {}",
                    p.dataset,
                    if p.by.is_empty() { "period".into() } else { p.by.join(",") }
                )?;
            }
        }
        for (q, why) in &self.unanswered {
            writeln!(f, "{q}: read from the rows ({why})")?;
        }
        Ok(())
    }
}

/// The code columns some queries read, and those query files.
type Wanted = (Vec<String>, Vec<String>);

/// Two proposals become one when the rollup by both sets of columns has at
/// most this many times the rows of the two together.
const MERGE_FACTOR: f64 = 1.5;

/// A rollup with more than this share of the dataset's rows is not proposed:
/// reading it would cost about what the pushdown costs on the rows.
const MAX_SHARE: f64 = 0.1;

/// Proposes the rollups that answer the queries in `paths` (files, or
/// folders of `.tql` files): one per set of code columns the queries read,
/// merged while the merged rollup has no more than [`MERGE_FACTOR`] times the
/// rows of the two it replaces.
pub fn advise(store: &Store, paths: &[PathBuf], params: &[(String, String)]) -> Result<Advice> {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Error::io("cannot list", p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "tql"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut advice = Advice::default();
    // Per dataset: (columns, queries) of each query a rollup can answer.
    let mut wanted: std::collections::BTreeMap<String, Vec<Wanted>> = Default::default();
    let mut manifests: std::collections::BTreeMap<String, Manifest> = Default::default();
    for path in &files {
        let file = crate::lang::QueryFile::read(path)?;
        let shown = path.display().to_string();
        let loaded = match with_rollups(false, || crate::lang::load(&file, store, params)) {
            Ok(l) => l,
            Err(e) => {
                advice.unanswered.push((shown, format!("it does not load: {}", e.message)));
                continue;
            }
        };
        if loaded.adhoc.is_some() {
            advice.unanswered.push((shown, "it reads files, not a dataset of the store".into()));
            continue;
        }
        match query_needs(&loaded.plan, &loaded.manifest) {
            Ok(cols) => {
                let allowed = declarable(&loaded.manifest);
                // A column read only through chapter() or heading() is kept cut.
                let mut cols: Vec<String> = cols
                    .into_iter()
                    .map(|c| {
                        if reads_only_cut(&loaded.plan, &c, 2) {
                            format!("chapter({c})")
                        } else if reads_only_cut(&loaded.plan, &c, 4) {
                            format!("heading({c})")
                        } else {
                            c
                        }
                    })
                    .collect();
                cols.sort_by_key(|c| allowed.iter().position(|a| a == by_column(c).0));
                let d = loaded.manifest.dataset.clone();
                let sets = wanted.entry(d.clone()).or_default();
                match sets.iter_mut().find(|(c, _)| *c == cols) {
                    Some((_, qs)) => qs.push(shown),
                    None => sets.push((cols, vec![shown])),
                }
                manifests.insert(d, loaded.manifest);
            }
            Err(why) => advice.unanswered.push((shown, why)),
        }
    }
    for (dataset, sets) in wanted {
        let m = &manifests[&dataset];
        let mut counted: std::collections::HashMap<Vec<String>, Count> = Default::default();
        let mut rows_of = |cols: &Vec<String>| -> Result<Count> {
            if let Some(n) = counted.get(cols) {
                return Ok(*n);
            }
            let n = combinations(store, m, cols)?;
            counted.insert(cols.clone(), n);
            Ok(n)
        };
        let mut props: Vec<(Vec<String>, Vec<String>, Count)> = Vec::new();
        for (cols, qs) in sets {
            let n = rows_of(&cols)?;
            props.push((cols, qs, n));
        }
        merge_proposals(&mut props, &mut rows_of, m)?;
        let columns = 1 + table_columns(&m.measure_columns()).len();
        for (by, queries, count) in props {
            let rows = count.rows;
            let at_most = if count.exact { "" } else { "up to " };
            if rows as f64 > MAX_SHARE * m.rows as f64 {
                for q in queries {
                    advice.unanswered.push((
                        q,
                        format!(
                            "a rollup by period, {} would hold {at_most}{rows} of the {} rows: not worth keeping",
                            by.join(", "),
                            m.rows
                        ),
                    ));
                }
                continue;
            }
            let exists = m.rollups.iter().find(|r| by.iter().all(|c| holds(r, c))).map(|r| r.name.clone());
            advice.proposals.push(Proposal {
                dataset: dataset.clone(),
                bytes_uncompressed: rows * (columns + by.len()) as u64 * 8,
                by,
                queries,
                rows,
                exact: count.exact,
                data_rows: m.rows,
                exists,
            });
        }
    }
    Ok(advice)
}

/// Merges, while it pays, the two proposals whose merged rollup has the
/// fewest rows compared with theirs.
fn merge_proposals(
    props: &mut Vec<(Vec<String>, Vec<String>, Count)>,
    rows_of: &mut dyn FnMut(&Vec<String>) -> Result<Count>,
    m: &Manifest,
) -> Result<()> {
    let order = declarable(m);
    loop {
        let mut best: Option<(usize, usize, Vec<String>, Count, f64)> = None;
        for i in 0..props.len() {
            for j in i + 1..props.len() {
                let union = union_of(&props[i].0, &props[j].0, &order);
                let n = rows_of(&union)?;
                // Only counted sizes are compared: a bound says too little.
                if !(n.exact && props[i].2.exact && props[j].2.exact) {
                    continue;
                }
                let ratio = n.rows as f64 / (props[i].2.rows + props[j].2.rows).max(1) as f64;
                if ratio <= MERGE_FACTOR && best.as_ref().is_none_or(|b| ratio < b.4) {
                    best = Some((i, j, union, n, ratio));
                }
            }
        }
        let Some((i, j, union, n, _)) = best else { return Ok(()) };
        let (_, qj, _) = props.remove(j);
        let (_, qi, _) = std::mem::take(&mut props[i]);
        let mut queries = qi;
        queries.extend(qj);
        props[i] = (union, queries, n);
    }
}

/// Whether the rollup `r` holds the `by` entry `e`: the entry itself, the
/// whole codes it cuts, or a longer cut of them.
fn holds(r: &Rollup, e: &str) -> bool {
    let (c, kept) = by_column(e);
    r.by.iter().any(|b| match by_column(b) {
        (bc, None) => bc == c,
        (bc, Some(k)) => bc == c && kept.is_some_and(|kept| k >= kept),
    })
}

/// The `by` entries of a rollup that holds both `a` and `b`, in the
/// dataset's column order: whole codes where either has them, else the
/// longer cut.
fn union_of(a: &[String], b: &[String], order: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in a.iter().chain(b) {
        let (c, kept) = by_column(e);
        match out.iter().position(|o| by_column(o).0 == c) {
            None => out.push(e.clone()),
            Some(i) => {
                let have = by_column(&out[i]).1;
                if kept.is_none() || have.is_some_and(|h| kept.is_some_and(|k| k > h)) {
                    out[i] = e.clone();
                }
            }
        }
    }
    out.sort_by_key(|e| order.iter().position(|a| a == by_column(e).0));
    out
}

/// The distinct (period, `cols`) combinations of a dataset's rows: the rows
/// of a rollup by `cols` (read off the dictionary pages where it can; codes
/// cut by chapter() or heading() are cut after).
fn combinations(store: &Store, m: &Manifest, cols: &[String]) -> Result<Count> {
    // The most rows the rollup can have: every period with every code. The
    // count holds as many groups in memory as the codes combine to; past
    // COUNT_CAP (a rollup by partner and product of a billion rows would be
    // hundreds of millions), the bound from the cut codes is the estimate.
    let (mut whole_bound, mut cut_bound) = (m.periods.len().max(1) as u64, m.periods.len().max(1) as u64);
    for e in cols {
        let (c, kept) = by_column(e);
        let codes = crate::exec::distinct_values(store.root(), m, c)?;
        let cut: std::collections::BTreeSet<&str> =
            codes.iter().map(|x| kept.map_or(x.as_str(), |k| x.get(..k).unwrap_or(x))).collect();
        whole_bound = whole_bound.saturating_mul(codes.len().max(1) as u64);
        cut_bound = cut_bound.saturating_mul(cut.len().max(1) as u64);
    }
    if whole_bound > COUNT_CAP {
        return Ok(Count { rows: cut_bound, exact: false });
    }
    let mut keys = vec![Key { name: "period".into(), source: KeySource::Period { months: 1 } }];
    keys.extend(cols.iter().map(|e| {
        let c = by_column(e).0;
        Key { name: c.to_string(), source: KeySource::Code(c.to_string()) }
    }));
    let names: Vec<Expr> = keys.iter().map(|k| col(k.name.as_str())).collect();
    let fallback =
        crate::exec::scan_dataset(store.root(), m)?.select(names.clone()).unique(None, UniqueKeepStrategy::Any);
    let spec = pushdown::Spec { keys, aggs: Vec::new(), filters: Vec::new(), skip_aggregate_rows: false, fallback };
    let whole = crate::exec::group_by_now(store.root(), m, spec)?;
    let cuts = cut_exprs(cols);
    if cuts.is_empty() {
        return Ok(Count { rows: whole.height() as u64, exact: true });
    }
    let cut = whole.lazy().with_columns(cuts).select(names).unique(None, UniqueKeepStrategy::Any);
    Ok(Count { rows: cut.collect_with_engine(Engine::InMemory)?.unwrap_single().height() as u64, exact: true })
}

/// A rollup's rows: counted on the store, or (not `exact`) at most `rows`.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    rows: u64,
    exact: bool,
}

/// Rollups whose periods and codes could combine into more rows than this
/// are not counted (the count would hold every combination in memory): their
/// size is bounded instead.
const COUNT_CAP: u64 = 1_000_000;
