//! Compile: a [`Plan`] → a polars `LazyFrame`.
//!
//! One file per concern, in the order `Compiler::compile` applies them, and
//! the SQL compiler (`sql/`) has the same files with the same names:
//! [`rows`] (the row stage and row expressions), [`group`] (the aggregation,
//! through `exec`'s pushdown where it can), [`calendar`] (which periods a
//! query reaches; comparison periods found by date), [`measures`] (growth,
//! shares, windows, ...), [`top`] (folding into "others"), and [`shape`] (the
//! warning columns and rules both backends share). Every comparison across
//! time finds the row whose calendar key is one year (or one period)
//! earlier (`exec::series`: by lookup, else a join on the shifted key),
//! never a row offset, so a missing period gives null. Columns that start
//! with `__` are internal; those that start with `__w` carry warnings out of
//! the plan and are read (then dropped) after collect. Polars does the
//! optimising; the files are read by `exec`.

mod calendar;
mod group;
mod measures;
mod rows;
mod shape;
mod top;

pub use calendar::*;
use group::*;
use measures::*;
pub(crate) use rows::*;
pub use shape::*;

use super::ast::BinOp;
use super::plan::*;
use crate::error::{Error, Result};
use crate::exec::{self, Source, pushdown, pushdown_enabled, scan_dataset, series, with_pushdown};
use crate::period::Frequency;
use crate::store::Manifest;
use polars::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// The lazy frame of a plan, and how to read the warnings it carries.
pub struct Compiled {
    pub lf: LazyFrame,
    pub shape: ResultShape,
    /// Whether every read of the stored rows is done by the aggregate
    /// pushdown: the plan then handles only aggregated rows, which polars'
    /// in-memory engine does with less overhead than its streaming engine.
    pub rows_pushed_down: bool,
    /// The group-bys the pushdown answers, described for `tradeql explain`.
    pub pushed_down: Vec<String>,
    /// The stored rows of the dataset version the plan reads.
    pub rows_stored: u64,
}

/// Compiles `plan` against the store at `store`.
pub fn plan_to_lazy(plan: &Plan, manifest: &Manifest, store: &Path) -> Result<Compiled> {
    plan_to_lazy_from(plan, manifest, store, scan_dataset(store, manifest)?, None)
}

/// Like [`plan_to_lazy`], reading the dataset's rows from `scan` (for example a
/// scan shared, cached, by the queries of a batch), and taking its grouped rows
/// from `shared` when another query of the batch groups the same rows the same way.
pub fn plan_to_lazy_from(
    plan: &Plan,
    manifest: &Manifest,
    store: &Path,
    scan: LazyFrame,
    shared: Option<&mut exec::SharedAggregates>,
) -> Result<Compiled> {
    let mut c = Compiler::new(plan, manifest, store);
    c.source = Source::new(store, shared);
    c.compile(manifest, scan)
}

/// For `by ytd`: the last month (1-12) of the latest stored period that
/// passes the query's calendar filters; the year-to-date roll-up runs through it.
pub fn ytd_through(plan: &Plan, manifest: &Manifest, store: &Path) -> Result<u32> {
    let c = Compiler::new(plan, manifest, store);
    let df = c.calendar_window(manifest)?.select([col("period").max()]).collect()?;
    let last = df.column("period")?.date()?.physical().get(0).ok_or_else(|| {
        Error::input(format!("`by ytd`: no stored period of {} passes the query's filters", manifest.dataset))
    })?;
    let (_, month, _) = crate::period::civil_from_days(last);
    Ok(month + plan.frequency.months() - 1)
}

/// The distinct combinations of the code columns `dims` among the stored
/// rows that pass the query's row filters (those that read stored columns
/// and the calendar alone; the others are not applied, so more rows count).
pub fn code_combinations(
    plan: &Plan,
    manifest: &Manifest,
    store: &Path,
    dims: &[String],
) -> Result<Vec<Vec<Option<String>>>> {
    let c = Compiler::new(plan, manifest, store);
    let stored = |name: &str| CALENDAR_COLUMNS.contains(&name) || manifest.schema.iter().any(|s| s.name == name);
    let derived = |name: &str| plan.derives.iter().any(|(n, _)| n == name);
    let mut lf = scan_dataset(store, manifest)?.with_columns([
        col("period").dt().quarter().cast(DataType::Int32).alias("quarter"),
        col("period").dt().month().cast(DataType::Int32).alias("month"),
    ]);
    // Each conjunct on its own: `flow = "total" and value > 0` still applies
    // its code filter.
    let mut all: Vec<&RExpr> = Vec::new();
    for x in &plan.row_filters {
        split_and(x, &mut all);
    }
    let mut readable: Vec<&RExpr> = Vec::new();
    for x in all {
        let reads_rows = !x.any(&mut |e| match e {
            RExpr::Col(name) => !stored(name) || derived(name),
            RExpr::Convert(..) | RExpr::Code(CodeFn::Section | CodeFn::Name, _) | RExpr::Measure(_) => true,
            _ => false,
        });
        if reads_rows {
            lf = lf.filter(c.expr(x)?);
            readable.push(x);
        }
    }
    let names: Vec<Expr> = dims.iter().map(|d| col(d.as_str())).collect();
    let fallback = lf.select(names).unique(None, UniqueKeepStrategy::Any);
    // Read off the dictionary pages when every filter is one the pushdown evaluates.
    let filters: Option<Vec<pushdown::RowFilter>> =
        readable.into_iter().map(|x| c.pushdown_filter(x, manifest)).collect();
    let frame = match filters {
        Some(filters) if pushdown_enabled() => {
            let keys = dims
                .iter()
                .map(|d| pushdown::Key { name: d.clone(), source: pushdown::KeySource::Code(d.clone()) })
                .collect();
            let spec = pushdown::Spec { keys, aggs: Vec::new(), filters, skip_aggregate_rows: false, fallback };
            exec::group_by_now(store, manifest, spec)?
        }
        _ => fallback.collect()?,
    };
    let columns: Vec<StringChunked> =
        dims.iter().map(|d| Ok(frame.column(d)?.str()?.clone())).collect::<Result<_>>()?;
    Ok((0..frame.height()).map(|i| columns.iter().map(|c| c.get(i).map(str::to_string)).collect()).collect())
}

struct Compiler<'a> {
    plan: &'a Plan,
    manifest: &'a Manifest,
    n: usize,
    warnings: Vec<WarningColumn>,
    /// Where the query reads rows and reference tables.
    source: Source<'a>,
    /// For each currency convert() targets: its `__fx_` column and the factors by period.
    fx: Vec<(String, LazyFrame)>,
    /// Whether the plan reads stored rows through polars (not only through the pushdown).
    polars_rows: bool,
    /// What [`Compiled::pushed_down`] says.
    pushed_down: Vec<String>,
    /// The column that counts the dataset's periods in each roll-up period
    /// (when the roll-up is coarser than the data).
    coverage: Option<String>,
    /// The columns [`Compiler::previous`] joined, by (column, months back).
    joined: std::collections::HashMap<(String, i32), String>,
    /// The dataset's rows as the query reads them, for the total of a named
    /// aggregate row (`share(value, region = "CN")`).
    scan: Option<LazyFrame>,
    /// Whether a year roll-up may read each year's files itself (false while
    /// aggregating rows of other versions: `first_release`).
    by_file_year: bool,
}

impl<'a> Compiler<'a> {
    fn new(plan: &'a Plan, manifest: &'a Manifest, store: &'a Path) -> Compiler<'a> {
        Compiler {
            plan,
            manifest,
            n: 0,
            warnings: Vec::new(),
            source: Source::new(store, None),
            fx: Vec::new(),
            polars_rows: false,
            pushed_down: Vec::new(),
            coverage: None,
            joined: Default::default(),
            scan: None,
            by_file_year: true,
        }
    }
}

fn join_args() -> JoinArgs {
    let mut args = JoinArgs::new(JoinType::Left);
    args.nulls_equal = true; // keys such as region may be null
    args.maintain_order = MaintainOrderJoin::Left;
    args
}

impl Compiler<'_> {
    fn fresh(&mut self, what: &str) -> String {
        self.n += 1;
        format!("__{what}{}", self.n)
    }

    fn compile(&mut self, manifest: &Manifest, scan: LazyFrame) -> Result<Compiled> {
        let plan = self.plan;
        self.fx = self.rate_factors(manifest)?;
        self.scan = Some(scan.clone());
        let (lf, base) = self.rows(scan)?;
        let aggregated = plan.time.is_some() || !plan.keys.is_empty() || !plan.aggs.is_empty();
        if !aggregated {
            return self.listing(lf);
        }
        let mut lf = self.aggregate(lf, manifest)?;
        // Evaluate the aggregated rows once: measures join and window over them
        // several times, and a parallel sum evaluated twice may differ in its
        // last bit, which would make `high` or `record` compare unequal copies.
        lf = lf.cache();
        if let Some(t) = plan.time {
            lf = lf.with_column(period_label(t));
        }
        if let Some((n, dim, by)) = &plan.top {
            lf = self.top(lf, *n, dim, by, &base)?;
        } else {
            lf = self.measured(lf, &base)?;
        }
        // Output: period, keys, then what `show` asks for (or the aggregates).
        let mut select: Vec<Expr> = Vec::new();
        let names = plan.result_columns();
        let integers = plan.integer_columns();
        select.extend(
            names
                .iter()
                .map(|n| if integers.contains(n) { col(n.as_str()).cast(DataType::Int64) } else { col(n.as_str()) }),
        );
        select.extend(self.warnings.iter().map(|w| col(w.column.as_str())));
        lf = self.sort(lf);
        if let Some(n) = plan.limit {
            lf = lf.limit(n as IdxSize);
        }
        Ok(Compiled {
            rows_stored: self.manifest.files.iter().map(|f| f.rows).sum(),
            rows_pushed_down: !self.polars_rows,
            pushed_down: self.pushed_down.clone(),
            lf: lf.select(select),
            shape: ResultShape::of(plan, self.warnings.clone()),
        })
    }

    fn sort(&self, lf: LazyFrame) -> LazyFrame {
        let by = self.plan.result_order();
        if by.is_empty() {
            return lf;
        }
        // Polars' stable sort, skipped where the rows are in order already.
        series::in_order(lf, by.iter().map(|(c, d)| (c.to_string(), *d)).collect())
    }

    fn listing(&mut self, lf: LazyFrame) -> Result<Compiled> {
        let plan = self.plan;
        let mut select: Vec<Expr> = Vec::new();
        if plan.outputs.is_empty() {
            for c in
                ["period", "reporter", "partner", "flow", "product", "region", "value", "quantity", "quantity_unit"]
            {
                select.push(col(c));
            }
            select.extend(plan.measures.iter().map(|m| col(m.as_str())));
            select.extend(plan.derives.iter().map(|(n, _)| col(n.as_str())));
        } else {
            for o in &plan.outputs {
                select.push(self.expr(&o.expr)?.alias(o.name.as_str()));
            }
        }
        let mut lf = lf.select(select);
        if !plan.sort.is_empty() {
            let cols: Vec<PlSmallStr> = plan.sort.iter().map(|(c, _)| PlSmallStr::from(c.as_str())).collect();
            let desc: Vec<bool> = plan.sort.iter().map(|(_, d)| *d).collect();
            lf = lf.sort(
                cols,
                SortMultipleOptions::default()
                    .with_order_descending_multi(desc)
                    .with_nulls_last(true)
                    .with_maintain_order(true),
            );
        }
        if let Some(n) = plan.limit {
            lf = lf.limit(n as IdxSize);
        }
        let shape = ResultShape::of(plan, Vec::new());
        let rows_stored = self.manifest.files.iter().map(|f| f.rows).sum();
        Ok(Compiled { lf, shape, rows_pushed_down: false, pushed_down: Vec::new(), rows_stored })
    }
}

/// The calendar columns of the row stage: the stored `period`, the Hive
/// `year`, and `quarter` and `month` of the period.
const CALENDAR_COLUMNS: [&str; 4] = ["period", "year", "quarter", "month"];
