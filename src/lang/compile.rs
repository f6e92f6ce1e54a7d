//! Compile: a [`Plan`] → a polars `LazyFrame`.
//!
//! One helper per part of the plan, as polars-sql does: the scan (the files
//! the manifest lists, with the Hive `year` so filters on it prune files), the
//! row stages, the aggregation keyed by a calendar column `__t` (the first day
//! of each period of the roll-up), then each measure. Every comparison across
//! time is a join on the calendar key shifted by one year (or one period), never
//! a row offset, so a missing period gives null. Columns that start with `__`
//! are internal; those that start with `__w` carry warnings out of the plan and
//! are read (then dropped) after collect. Polars does the optimising.

use super::ast::BinOp;
use super::plan::*;
use crate::error::{Error, Result};
use crate::period::Frequency;
use crate::store::Manifest;
use crate::store::pushdown::{self, Pass, PassFile};
use polars::prelude::*;
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
}

/// What a result frame carries besides its visible columns: the warning
/// columns and the columns that label a row in a warning. The polars and SQL
/// backends both describe their results this way.
#[derive(Debug, Clone, Default)]
pub struct ResultShape {
    pub warnings: Vec<WarningColumn>,
    /// The column that names each row's period, for warnings.
    pub time_label: Option<String>,
    /// The key columns that name a row's series, for warnings.
    pub key_labels: Vec<String>,
    /// Warnings known before the query ran (see [`Plan::warnings`]).
    pub known_warnings: Vec<String>,
    /// Notes known before the query ran (see [`Plan::notes`]).
    pub known_notes: Vec<String>,
    /// The key columns that are group aliases (`bloc`): a group missing
    /// from some periods is named.
    pub group_keys: Vec<String>,
    /// Aggregate rows the query left out, per dimension (see [`Plan::left_out`]).
    pub left_out: Vec<(String, Vec<String>)>,
    /// Aggregate rows the query's filters select beside their members (see
    /// [`Plan::summed_together`]).
    pub summed_together: Vec<(String, Vec<String>)>,
}

impl ResultShape {
    /// The shape of `plan`'s result, with its warning columns `warnings`
    /// (the same for the polars and the SQL backends).
    pub fn of(plan: &Plan, warnings: Vec<WarningColumn>) -> ResultShape {
        ResultShape {
            warnings,
            time_label: plan.time.map(|t| t.column().to_string()),
            key_labels: plan.keys.clone(),
            known_warnings: plan.warnings.clone(),
            known_notes: plan.notes.clone(),
            group_keys: plan.groups.iter().map(|g| g.alias.clone()).filter(|a| plan.keys.contains(a)).collect(),
            left_out: plan.left_out.clone(),
            summed_together: plan.summed_together.clone(),
        }
    }
}

/// A boolean (or count) column that flags rows to warn about.
#[derive(Debug, Clone)]
pub struct WarningColumn {
    pub column: String,
    pub kind: WarningKind,
}

#[derive(Debug, Clone)]
pub enum WarningKind {
    /// The comparison period of a measure is missing.
    MissingBase { measure: String, offset: String },
    /// The comparison period is stored, but the query's calendar filter
    /// (`filter`) leaves it out.
    BaseFiltered { measure: String, offset: String, filter: String },
    /// A roll-up period holds fewer sub-periods than a full one (a note).
    Partial { expected: u32, unit: &'static str },
    /// A measure compares two roll-up periods that hold different numbers
    /// of the dataset's periods (a partial year against a full one).
    Unequal { measure: String, offset: String, unit: &'static str },
    /// Year-to-date that skips a missing month.
    YtdGap { measure: String },
    /// "others" of a `top`, whose non-additive measures are null.
    Others { measures: String },
    /// The named total row of a share (`share(value, region = "CN")`) has no
    /// row in the period.
    NoTotalRow { measure: String, row: String },
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
    shared: Option<&mut SharedAggregates>,
) -> Result<Compiled> {
    let mut c = Compiler::new(plan, manifest, store);
    c.shared = shared;
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
            pushdown::group_by_now(pass_files(store, manifest), spec)?
        }
        _ => fallback.collect()?,
    };
    let columns: Vec<StringChunked> =
        dims.iter().map(|d| Ok(frame.column(d)?.str()?.clone())).collect::<Result<_>>()?;
    Ok((0..frame.height()).map(|i| columns.iter().map(|c| c.get(i).map(str::to_string)).collect()).collect())
}

/// What the query's calendar filters make of the dataset's stored periods,
/// read once per query: the filters' text (None without any), and the stored
/// periods (days) that pass them.
pub struct CalendarReach {
    pub filter: Option<String>,
    pub kept: Vec<i32>,
}

/// The [`CalendarReach`] of `plan` on `manifest`'s periods.
pub fn calendar_reach(plan: &Plan, manifest: &Manifest, store: &Path) -> Result<CalendarReach> {
    let bounds: Vec<String> = plan.row_filters.iter().filter_map(calendar_bound).map(|b| b.to_string()).collect();
    if bounds.is_empty() {
        let kept = manifest.period_values().iter().map(|p| p.days()).collect();
        return Ok(CalendarReach { filter: None, kept });
    }
    let window = Compiler::new(plan, manifest, store).calendar_window(manifest)?.select([col("period")]).collect()?;
    let kept = window.column("period")?.date()?.physical().iter().flatten().collect();
    Ok(CalendarReach { filter: Some(bounds.join(" and ")), kept })
}

/// The roll-up periods (their first days) that the dataset holds but the
/// query's calendar filters leave out entirely, and the filters' text: what
/// names a comparison base a filter removed. None when no stored period is
/// left out.
pub fn cut_periods(plan: &Plan, manifest: &Manifest, reach: &CalendarReach) -> Option<(String, Vec<i32>)> {
    let (Some(t), Some(filter)) = (plan.time, &reach.filter) else { return None };
    let kept: std::collections::BTreeSet<i32> = reach.kept.iter().map(|d| start_of(*d, t)).collect();
    let cut: std::collections::BTreeSet<i32> =
        manifest.period_values().iter().map(|p| start_of(p.days(), t)).filter(|d| !kept.contains(d)).collect();
    (!cut.is_empty()).then(|| (filter.clone(), cut.into_iter().collect()))
}

/// A warning when the query's calendar filters pass none of the dataset's
/// stored periods (a month inside a gap, a year out of range): the result is
/// then empty because of the calendar, not because of the data.
pub fn empty_calendar(manifest: &Manifest, reach: &CalendarReach) -> Option<String> {
    let filter = reach.filter.as_ref()?;
    if manifest.periods.is_empty() || !reach.kept.is_empty() {
        return None;
    }
    let gaps = manifest.gaps();
    let held = format!(
        "{} .. {}{}",
        manifest.periods[0],
        manifest.periods[manifest.periods.len() - 1],
        if gaps.is_empty() {
            String::new()
        } else {
            format!(", with gaps {}", crate::store::manifest::describe_periods(&gaps))
        }
    );
    Some(format!(
        "no stored period passes the filter `{filter}`: {} holds {held}, so the result is empty",
        manifest.dataset
    ))
}

/// A note naming the dataset's gaps (periods it does not hold) among the
/// periods the query reads: a monthly listing skips them, a roll-up holds
/// fewer months.
pub fn gaps_read(plan: &Plan, manifest: &Manifest, reach: &CalendarReach) -> Option<String> {
    let gaps = manifest.gaps();
    let (Some(lo), Some(hi)) = (reach.kept.iter().min(), reach.kept.iter().max()) else { return None };
    if gaps.is_empty() || plan.time.is_none() {
        return None;
    }
    let inside: Vec<crate::period::Period> = gaps.into_iter().filter(|p| (*lo..=*hi).contains(&p.days())).collect();
    (!inside.is_empty()).then(|| {
        format!(
            "{} does not hold {} (gaps): no row for them, and the periods that contain them hold fewer months",
            manifest.dataset,
            crate::store::manifest::describe_periods(&inside)
        )
    })
}

/// The first day of the roll-up period `t` that holds day `days`.
fn start_of(days: i32, t: TimeKey) -> i32 {
    let (y, m, _) = crate::period::civil_from_days(days);
    let first = match t {
        TimeKey::Year => 1,
        TimeKey::Half => (m - 1) / 6 * 6 + 1,
        TimeKey::Quarter => (m - 1) / 3 * 3 + 1,
        TimeKey::Month => m,
    };
    crate::period::days_from_civil(y, first, 1)
}

/// The distinct (group, member) pairs of a stored group table.
pub fn group_members(store: &Path, path: &str) -> Result<Vec<(String, String)>> {
    let file = store.join(crate::store::GROUPS_DIR).join(path);
    let frame = LazyFrame::scan_parquet(PlRefPath::new(file.to_string_lossy().as_ref()), ScanArgsParquet::default())?
        .select([col("group"), col("member")])
        .unique_stable(None, UniqueKeepStrategy::First)
        .collect()?;
    let (groups, members) = (frame.column("group")?.str()?.clone(), frame.column("member")?.str()?.clone());
    Ok(groups.iter().zip(members.iter()).filter_map(|(g, m)| Some((g?.to_string(), m?.to_string()))).collect())
}

/// The currencies convert() targets, other than the dataset's own, sorted.
pub(crate) fn convert_targets(plan: &Plan, source: &str) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for x in plan.derives.iter().map(|(_, x)| x).chain(&plan.row_filters) {
        x.any(&mut |e| {
            if let RExpr::Convert(_, t) = e {
                targets.push(t.clone());
            }
            false
        });
    }
    targets.retain(|t| t != source);
    targets.sort();
    targets.dedup();
    targets
}

/// The warning on roll-up periods that hold fewer of the dataset's periods
/// than a full one (12 months in a year; in a year to date, the months through
/// `ytd_through`), read from `column` (the count of stored periods).
pub(crate) fn partial_warning(plan: &Plan, t: TimeKey, column: String) -> WarningColumn {
    let expected = match plan.ytd_through {
        Some(m) => m / plan.frequency.months(),
        None => t.months() / plan.frequency.months(),
    };
    WarningColumn { column, kind: WarningKind::Partial { expected, unit: sub_periods(plan) } }
}

/// What the dataset's periods are called in warnings: months, quarters, years.
pub(crate) fn sub_periods(plan: &Plan) -> &'static str {
    match plan.frequency {
        Frequency::Month => "months",
        Frequency::Quarter => "quarters",
        Frequency::Year => "years",
    }
}

/// `top` sums the rest into "others", so every aggregate must be a sum or a count.
pub(crate) fn check_top_aggregates(plan: &Plan) -> Result<()> {
    for a in &plan.aggs {
        if !matches!(a.func, AggFunc::Sum | AggFunc::Count) {
            return Err(Error::usage(format!(
                "`top` sums the rest into \"others\", which {}({}) cannot be; use sum or count",
                a.func.name(),
                a.arg.as_deref().unwrap_or("")
            )));
        }
    }
    Ok(())
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
        let key = (manifest.dataset.clone(), year);
        if let Some(lf) = self.scans.get(&key) {
            return Ok(lf.clone());
        }
        let lf = scan_files(store, manifest, |f| f.year == year)?.cache();
        self.scans.insert(key, lf.clone());
        Ok(lf)
    }

    fn pass(&mut self, store: &Path, manifest: &Manifest) -> Arc<Pass> {
        self.passes.entry(manifest.dataset.clone()).or_insert_with(|| Arc::new(new_pass(store, manifest))).clone()
    }

    fn share(&mut self, grouped: LazyFrame) -> LazyFrame {
        let key = format!("{:?}", grouped.logical_plan);
        self.frames.entry(key).or_insert_with(|| grouped.cache()).clone()
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

/// The rows of a dataset: the files its manifest lists, with the Hive `year`.
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

/// The rows of each period as first published ([`Plan::first_releases`]).
fn first_release_scan(store: &Path, plan: &Plan) -> Result<LazyFrame> {
    let mut parts = Vec::new();
    for (m, days) in &plan.first_releases {
        let first = Int32Chunked::from_vec("period".into(), days.clone()).into_date().into_series();
        parts.push(scan_dataset(store, m)?.filter(col("period").is_in(lit(first).implode(false), false)));
    }
    Ok(concat(parts, UnionArgs::default())?)
}

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

struct Compiler<'a> {
    plan: &'a Plan,
    manifest: &'a Manifest,
    n: usize,
    warnings: Vec<WarningColumn>,
    store: &'a Path,
    shared: Option<&'a mut SharedAggregates>,
    /// For each currency convert() targets: its `__fx_` column and the factors by period.
    fx: Vec<(String, LazyFrame)>,
    /// The query's own pushdown pass, when it is not compiled as part of a batch.
    pass: Option<Arc<Pass>>,
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
            store,
            shared: None,
            fx: Vec::new(),
            pass: None,
            polars_rows: false,
            pushed_down: Vec::new(),
            coverage: None,
            joined: Default::default(),
            scan: None,
            by_file_year: true,
        }
    }
}

fn date_lit(days: i32) -> Expr {
    lit(days).cast(DataType::Date)
}

fn months_of(t: TimeKey) -> i32 {
    t.months() as i32
}

fn offset(months: i32) -> String {
    format!("{months}mo")
}

fn ordered_window(e: Expr, partition: Vec<Expr>, order: Expr, descending: bool) -> Result<Expr> {
    let sort = SortOptions { descending, nulls_last: true, ..Default::default() };
    let part = if partition.is_empty() { None } else { Some(partition) };
    Ok(e.over_with_options(part, Some((vec![order], sort)), WindowMapping::default())?)
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
            let label = match t {
                TimeKey::Year => col("__t").dt().year().alias("year"),
                TimeKey::Half => concat_str(
                    [
                        col("__t").dt().year().cast(DataType::String),
                        lit("-H"),
                        when(col("__t").dt().month().lt_eq(lit(6))).then(lit("1")).otherwise(lit("2")),
                    ],
                    "",
                    true,
                )
                .alias("half"),
                TimeKey::Quarter => concat_str(
                    [
                        col("__t").dt().year().cast(DataType::String),
                        lit("-Q"),
                        col("__t").dt().quarter().cast(DataType::String),
                    ],
                    "",
                    true,
                )
                .alias("quarter"),
                TimeKey::Month => col("__t").alias("period"),
            };
            lf = lf.with_column(label);
        }
        if let Some((n, dim, by)) = &plan.top {
            lf = self.top(lf, *n, dim, by, &base)?;
        } else {
            lf = self.with_names(lf, &name_dims(&post_exprs(plan)))?;
            for (name, x) in &plan.post_derives {
                let (next, e) = self.measure_expr(lf, x, &base)?;
                lf = next.with_column(e.alias(name.as_str()));
            }
            for o in &plan.outputs {
                let (next, e) = self.measure_expr(lf, &o.expr, &base)?;
                lf = next.with_column(e.alias(o.name.as_str()));
            }
            for x in &plan.post_filters {
                let (next, e) = self.measure_expr(lf, x, &base)?;
                lf = next.filter(e);
            }
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
            rows_pushed_down: !self.polars_rows,
            pushed_down: self.pushed_down.clone(),
            lf: lf.select(select),
            shape: ResultShape::of(plan, self.warnings.clone()),
        })
    }

    /// The row stage over `scan`: calendar columns, aggregate rows left out,
    /// HS sections, exchange rates, derived columns and filters, then the
    /// group mappings (unless the rows are aggregated by member first).
    /// Returns the rows, and the base rows before any group mapping (what
    /// contributions divide by).
    fn rows(&self, scan: LazyFrame) -> Result<(LazyFrame, LazyFrame)> {
        self.rows_where(scan, &|x| Some(x.clone()))
    }

    /// [`Compiler::rows`] with each row filter replaced by what `filter`
    /// makes of it (None: left out).
    fn rows_where(&self, scan: LazyFrame, filter: &dyn Fn(&RExpr) -> Option<RExpr>) -> Result<(LazyFrame, LazyFrame)> {
        let plan = self.plan;
        let mut lf = scan.with_columns([
            col("period").dt().quarter().cast(DataType::Int32).alias("quarter"),
            col("period").dt().month().cast(DataType::Int32).alias("month"),
        ]);
        let row_exprs: Vec<&RExpr> = plan.derives.iter().map(|(_, x)| x).chain(plan.row_filters.iter()).collect();
        lf = self.with_names(lf, &name_dims(&row_exprs))?;
        if let Some(path) = &plan.hs_sections
            && uses_section(plan)
        {
            let table = self
                .group_table(path)?
                .select([col("member").alias("__chapter"), col("group").alias("__section_product")]);
            lf = lf.with_column(col("product").str().slice(lit(0), lit(2)).alias("__chapter")).join(
                table,
                [col("__chapter")],
                [col("__chapter")],
                join_args(),
            );
        }
        for (_, factors) in &self.fx {
            lf = lf.join(factors.clone(), [col("period")], [col("period")], join_args());
        }
        let aliases: Vec<&str> = plan.groups.iter().map(|g| g.alias.as_str()).collect();
        let uses_alias = |x: &RExpr| aliases.iter().any(|a| x.mentions(a));
        for (name, x) in plan.derives.iter().filter(|(_, x)| !uses_alias(x)) {
            lf = lf.with_column(self.expr(x)?.alias(name.as_str()));
        }
        // Every `where` of one side of the group mapping as one filter.
        let filtered = |lf: LazyFrame, on_groups: bool| -> Result<LazyFrame> {
            let exprs: Vec<Expr> = plan
                .row_filters
                .iter()
                .filter(|x| uses_alias(x) == on_groups)
                .filter_map(filter)
                .map(|x| self.expr(&x))
                .collect::<Result<_>>()?;
            Ok(match all_of(exprs) {
                Some(all) => lf.filter(all),
                None => lf,
            })
        };
        lf = filtered(lf, false)?;
        let base = lf.clone();
        if !pre_aggregates(plan) {
            for g in &plan.groups {
                lf = self.map_groups(lf, g)?;
            }
        }
        for (name, x) in plan.derives.iter().filter(|(_, x)| uses_alias(x)) {
            lf = lf.with_column(self.expr(x)?.alias(name.as_str()));
        }
        Ok((filtered(lf, true)?, base))
    }

    /// `lf` grouped by `keys` (the first of them the calendar key, if any).
    ///
    /// A year roll-up of monthly or quarterly data groups by the Hive `year`,
    /// which is constant within each file: each year's files are read by their
    /// own scan, grouped by the other keys only, and the year is put back as a
    /// literal. Grouping by one key instead of two spares polars the row
    /// encoding of composite keys (a quarter of Q1's time in a profile), and
    /// a year roll-up alone needs no hashing at all. In a batch the per-year
    /// scans are the shared, cached ones, and identical group-bys are shared.
    ///
    /// When the row stage is at most filters on the calendar or on one code
    /// column each, and the keys are the calendar and stored text columns, the
    /// group-by is answered from the Parquet pages instead ([`pushdown`]),
    /// with this plan as its fallback.
    /// `time` is the calendar key of `keys` (the query's, or the dataset's
    /// own periods when groups are mapped by period after this group-by).
    fn group_rows(
        &mut self,
        lf: LazyFrame,
        keys: Vec<Expr>,
        row_keys: &[String],
        aggs: Vec<Expr>,
        manifest: &Manifest,
        time: Option<TimeKey>,
    ) -> Result<LazyFrame> {
        let polars = self.group_rows_polars(lf, keys, aggs, manifest, time)?;
        if self.plan.groups.is_empty() || pre_aggregates(self.plan) {
            let aggs: Option<Vec<pushdown::Agg>> = self.plan.aggs.iter().map(pushdown_agg).collect();
            if let Some(aggs) = aggs
                && let Some(lf) = self.pushed_down(manifest, time, row_keys, aggs, polars.clone())
            {
                return Ok(lf);
            }
        }
        self.polars_rows = true;
        Ok(polars)
    }

    /// The group-by of the dataset's rows by the calendar key `time` and the
    /// stored text columns `row_keys`, answered from the Parquet pages, with
    /// `fallback` (the same group-by in polars) for files it cannot read.
    /// None when the query needs a row stage the pushdown does not evaluate
    /// (a filter on values or derived columns, exchange rates, sections) or a
    /// key or aggregate it lacks.
    fn pushed_down(
        &mut self,
        manifest: &Manifest,
        time: Option<TimeKey>,
        row_keys: &[String],
        aggs: Vec<pushdown::Agg>,
        fallback: LazyFrame,
    ) -> Option<LazyFrame> {
        use pushdown::{Key, KeySource};
        let plan = self.plan;
        if !pushdown_enabled() || !self.fx.is_empty() || (plan.hs_sections.is_some() && uses_section(plan)) {
            return None;
        }
        let dtype = |name: &str| manifest.schema.iter().find(|c| c.name == name).map(|c| c.dtype.clone());
        if plan.derives.iter().any(|(n, _)| dtype(n).is_some() || CALENDAR_COLUMNS.contains(&n.as_str())) {
            return None;
        }
        let mut conjuncts: Vec<&RExpr> = Vec::new();
        for x in &plan.row_filters {
            split_and(x, &mut conjuncts);
        }
        let filters: Vec<pushdown::RowFilter> =
            conjuncts.into_iter().map(|x| self.pushdown_filter(x, manifest)).collect::<Option<_>>()?;
        let mut keys: Vec<Key> = Vec::new();
        if let Some(t) = time {
            let (name, source) = if t.is(plan.frequency) {
                ("__t", KeySource::Period { months: 1 })
            } else if t == TimeKey::Year {
                ("__year", KeySource::FileYear)
            } else if matches!(t, TimeKey::Quarter | TimeKey::Half) && plan.frequency == Frequency::Month {
                ("__t", KeySource::Period { months: t.months() })
            } else {
                return None;
            };
            keys.push(Key { name: name.to_string(), source });
        }
        for k in row_keys {
            if dtype(k).as_deref() != Some("str") {
                return None;
            }
            keys.push(Key { name: k.clone(), source: KeySource::Code(k.clone()) });
        }
        if aggs.iter().any(|a| a.column.as_ref().is_some_and(|c| dtype(c).as_deref() != Some("f64"))) {
            return None;
        }
        let spec = pushdown::Spec { keys, aggs, filters, skip_aggregate_rows: false, fallback };
        let pass = match self.shared.as_deref_mut() {
            Some(s) => s.pass(self.store, manifest),
            None => self.pass.get_or_insert_with(|| Arc::new(new_pass(self.store, manifest))).clone(),
        };
        let text = spec.describe();
        let lf = pass.register(spec)?;
        if !self.pushed_down.contains(&text) {
            self.pushed_down.push(text);
        }
        Some(lf)
    }

    /// A row filter as the pushdown evaluates it: on the values of one stored
    /// text column, or on the calendar (period, year, quarter, month). None
    /// for a filter that reads anything else (values, derived columns, two
    /// code columns at once, exchange rates, sections).
    fn pushdown_filter(&self, x: &RExpr, manifest: &Manifest) -> Option<pushdown::RowFilter> {
        if x.any(&mut |e| {
            matches!(e, RExpr::Convert(..) | RExpr::Code(CodeFn::Section | CodeFn::Name, _) | RExpr::Measure(_))
        }) {
            return None;
        }
        let mut columns: Vec<String> = Vec::new();
        x.any(&mut |e| {
            if let RExpr::Col(c) = e
                && !columns.contains(c)
            {
                columns.push(c.clone());
            }
            false
        });
        let on = if columns.iter().all(|c| CALENDAR_COLUMNS.contains(&c.as_str())) {
            pushdown::FilterColumn::Calendar
        } else {
            match columns.as_slice() {
                [c] if manifest.schema.iter().any(|s| s.name == *c && s.dtype == "str") => {
                    pushdown::FilterColumn::Code(c.clone())
                }
                _ => return None,
            }
        };
        Some(pushdown::RowFilter { on, predicate: self.expr(x).ok()?, text: x.to_string() })
    }

    /// [`Compiler::group_rows`] in polars.
    fn group_rows_polars(
        &mut self,
        lf: LazyFrame,
        keys: Vec<Expr>,
        aggs: Vec<Expr>,
        manifest: &Manifest,
        time: Option<TimeKey>,
    ) -> Result<LazyFrame> {
        let by_file_year = self.by_file_year && time == Some(TimeKey::Year) && self.plan.frequency != Frequency::Year;
        if !by_file_year {
            let grouped = lf.group_by(keys).agg(aggs);
            return Ok(match self.shared.as_deref_mut() {
                Some(s) => s.share(grouped),
                None => grouped,
            });
        }
        let mut years: Vec<i32> = manifest.files.iter().map(|f| f.year).collect();
        years.sort_unstable();
        years.dedup();
        let rest: Vec<Expr> = keys[1..].to_vec();
        let mut parts: Vec<LazyFrame> = Vec::new();
        for &y in &years {
            let scan = match self.shared.as_deref_mut() {
                Some(s) => s.year_scan(self.store, manifest, y)?,
                None => scan_files(self.store, manifest, |f| f.year == y)?,
            };
            let (rows, _) = self.rows(scan)?;
            let grouped = if rest.is_empty() {
                // A year whose rows are all filtered out has no group.
                let mut with_count = aggs.clone();
                with_count.push(len().alias("__rows"));
                rows.select(with_count).filter(col("__rows").gt(lit(0))).drop(cols(["__rows"]))
            } else {
                rows.group_by(rest.clone()).agg(aggs.clone())
            };
            let grouped = match self.shared.as_deref_mut() {
                Some(s) => s.share(grouped),
                None => grouped,
            };
            parts.push(grouped.with_column(lit(y).alias("__year")));
        }
        Ok(concat(parts, UnionArgs::default())?)
    }

    fn sort(&self, lf: LazyFrame) -> LazyFrame {
        let by = self.plan.result_order();
        if by.is_empty() {
            return lf;
        }
        let cols: Vec<PlSmallStr> = by.iter().map(|(c, _)| PlSmallStr::from(c.as_str())).collect();
        let desc: Vec<bool> = by.iter().map(|(_, d)| *d).collect();
        lf.sort(
            cols,
            SortMultipleOptions::default()
                .with_order_descending_multi(desc)
                .with_nulls_last(true)
                .with_maintain_order(true),
        )
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
        Ok(Compiled { lf, shape, rows_pushed_down: false, pushed_down: Vec::new() })
    }

    /// `lf` with a column `__name_DIM` for each of `dims`: the names table's
    /// name of the row's code (null for a code it does not name).
    fn with_names(&self, lf: LazyFrame, dims: &[String]) -> Result<LazyFrame> {
        let mut lf = lf;
        for dim in dims {
            let Some((_, path)) = self.plan.names.iter().find(|(d, _)| d == dim) else { continue };
            let table = self
                .group_table(path)?
                .select([col("code").alias(dim.as_str()), col("name").alias(name_column(dim).as_str())]);
            lf = lf.join(table, [col(dim.as_str())], [col(dim.as_str())], join_args());
        }
        Ok(lf)
    }

    fn group_table(&self, path: &str) -> Result<LazyFrame> {
        let file = self.store.join(crate::store::GROUPS_DIR).join(path);
        Ok(LazyFrame::scan_parquet(PlRefPath::new(file.to_string_lossy().as_ref()), ScanArgsParquet::default())?)
    }

    /// Each row joined to every group its member belongs to (groups overlap),
    /// membership as of the row's period or a fixed date.
    fn map_groups(&self, lf: LazyFrame, g: &GroupMap) -> Result<LazyFrame> {
        Ok(join_groups(lf, self.group_table(&g.path)?, &g.dim, &g.alias, g.as_of))
    }

    fn aggregate(&mut self, lf: LazyFrame, manifest: &Manifest) -> Result<LazyFrame> {
        let plan = self.plan;
        let mut keys: Vec<Expr> = Vec::new();
        if let Some(t) = plan.time {
            keys.push(time_group(t, plan.frequency));
        }
        keys.extend(plan.keys.iter().map(|k| col(k.as_str())));
        let aggs: Vec<Expr> = plan
            .aggs
            .iter()
            .map(|a| {
                let arg = a.arg.as_deref().map(col);
                let e = match (a.func, arg) {
                    (AggFunc::Sum, Some(x)) if a.name.starts_with("__uv_") => {
                        x.filter(col("quantity").gt(lit(0.0))).sum()
                    }
                    (AggFunc::Sum, Some(x)) if sums_to_null(a) => null_when_empty(x),
                    (AggFunc::Sum, Some(x)) => x.sum(),
                    (AggFunc::Mean, Some(x)) => x.mean(),
                    (AggFunc::Min, Some(x)) => x.min(),
                    (AggFunc::Max, Some(x)) => x.max(),
                    (AggFunc::Count, Some(x)) => x.count().cast(DataType::Float64),
                    (AggFunc::Count, None) => len().cast(DataType::Float64),
                    (AggFunc::CountDistinct, Some(x)) => x.n_unique().cast(DataType::Float64),
                    _ => lit(NULL),
                };
                e.alias(a.name.as_str())
            })
            .collect();
        if keys.is_empty() {
            self.polars_rows = true;
            return Ok(lf.select(aggs));
        }
        let code_keys = code_keys(plan);
        let grouped = if pre_aggregates(plan) || !code_keys.is_empty() {
            // Group by finer row columns first, then derive the coarser keys on
            // the (far fewer) grouped rows and combine: members are mapped to
            // their groups (membership at a fixed date), and a key such as
            // chapter(product) is cut from the product of each grouped row
            // instead of from every row. Aggregates compose, so the figures
            // are the same.
            // Membership as of each row's period: the finer rows keep the
            // dataset's own periods, mapped to groups by period, then rolled
            // up to the query's calendar key.
            let by_period = pre_aggregates(plan) && plan.groups.iter().any(|g| g.as_of.is_none());
            let fine_time = if by_period { Some(own_key(plan.frequency)) } else { plan.time };
            let time_name = plan.time.map(|t| time_column(t, plan.frequency));
            let mut pre_keys: Vec<Expr> = fine_time.map(|t| time_group(t, plan.frequency)).into_iter().collect();
            let row_keys = row_group_keys(plan);
            pre_keys.extend(row_keys.iter().map(|n| col(n.as_str())));
            let mut fine = self.group_rows(lf, pre_keys, &row_keys, aggs, manifest, fine_time)?;
            // Sorted by the finer rows' own period (kept as `period` when the
            // groups are mapped by period: the roll-up key replaces `__t`).
            let mut fine_order: Vec<String> =
                if by_period { vec!["period".into()] } else { time_name.iter().map(|n| n.to_string()).collect() };
            fine_order.extend(row_keys.iter().cloned());
            if pre_aggregates(plan) {
                fine_order.extend(plan.groups.iter().map(|g| g.alias.clone()));
            }
            if by_period {
                fine = fine.with_columns([
                    col("__t").alias("period"),
                    col("__t").dt().year().cast(DataType::Int32).alias("year"),
                ]);
            }
            if pre_aggregates(plan) {
                for g in &plan.groups {
                    fine = self.map_groups(fine, g)?;
                }
            }
            if by_period && let Some(t) = plan.time {
                fine = fine.with_column(time_group(t, plan.frequency));
            }
            for (key, x) in &code_keys {
                fine = fine.with_column(self.expr(x)?.alias(key.as_str()));
            }
            let mut final_keys: Vec<Expr> = time_name.iter().map(|n| col(*n)).collect();
            final_keys.extend(plan.keys.iter().map(|k| col(k.as_str())));
            let combine: Vec<Expr> = plan
                .aggs
                .iter()
                .map(|a| {
                    let c = col(a.name.as_str());
                    match a.func {
                        AggFunc::Min => c.min(),
                        AggFunc::Max => c.max(),
                        // A running sum, in the rows' order, and its last value:
                        // polars' sum of a group splits it over threads and adds
                        // the parts in the order they finish. Nulls count as 0,
                        // as in a sum.
                        // A further measure no member reports stays null.
                        _ if sums_to_null(a) => when(c.clone().count().gt(lit(0)))
                            .then(c.fill_null(lit(0.0)).cum_sum(false).last())
                            .otherwise(lit(NULL).cast(DataType::Float64)),
                        _ => c.fill_null(lit(0.0)).cum_sum(false).last(),
                    }
                })
                .collect();
            // The finer rows in one order (that of their keys), so that the
            // sums add them in the same order on every run: the same bytes.
            let order: Vec<PlSmallStr> = fine_order.iter().map(|k| PlSmallStr::from(k.as_str())).collect();
            fine.sort(order, SortMultipleOptions::default().with_nulls_last(true))
                .group_by_stable(final_keys)
                .agg(combine)
        } else {
            self.group_rows(lf, keys, &plan.keys, aggs, manifest, plan.time)?
        };
        let mut out = with_calendar_key(grouped, plan.time, plan.frequency);
        if let Some(t) = plan.time
            && !t.is(plan.frequency)
        {
            // A partial period is one the dataset does not fully cover
            // within the query's calendar window: count the stored periods
            // (the manifest's) that pass the calendar-only filters.
            let column = self.fresh("wpartial");
            let counts = self.coverage(manifest, t, &column)?;
            out = out.join(counts, [col("__t")], [col("__t")], join_args());
            self.coverage = Some(column.clone());
            self.warnings.push(partial_warning(plan, t, column));
        }
        Ok(out)
    }

    /// For each currency that convert() targets, a column `__fx_<CUR>`: the
    /// factor from the dataset's currency at each row's period. A period the
    /// query can touch that has no rate is an error here, before any data is
    /// read: a missing rate would otherwise be a silent null in a sum.
    fn rate_factors(&self, manifest: &Manifest) -> Result<Vec<(String, LazyFrame)>> {
        let Some((path, source)) = &self.plan.rates else { return Ok(Vec::new()) };
        let targets = convert_targets(self.plan, source);
        let file = self.store.join(crate::store::GROUPS_DIR).join(path);
        let rates =
            LazyFrame::scan_parquet(PlRefPath::new(file.to_string_lossy().as_ref()), ScanArgsParquet::default())?;
        let per_usd = |code: &str, name: &str| -> LazyFrame {
            if code == "USD" {
                rates
                    .clone()
                    .select([col("period")])
                    .unique(None, UniqueKeepStrategy::First)
                    .with_column(lit(1.0).alias(name))
            } else {
                rates.clone().filter(col("currency").eq(lit(code))).select([col("period"), col("per_usd").alias(name)])
            }
        };
        // The periods this query can touch: the dataset's, within its calendar filters.
        let touched = self.calendar_window(manifest)?;
        let mut all = Vec::new();
        for target in targets {
            let fx = fx_column(&target);
            let factors = per_usd(source, "__from")
                .join(per_usd(&target, "__to"), [col("period")], [col("period")], JoinArgs::new(JoinType::Inner))
                .select([col("period"), (col("__to") / col("__from")).alias(fx.as_str())]);
            let missing = touched
                .clone()
                .join(factors.clone(), [col("period")], [col("period")], JoinArgs::new(JoinType::Anti))
                .select([col("period")])
                .sort(["period"], Default::default())
                .collect()?;
            if missing.height() > 0 {
                let days = missing.column("period")?.date()?.physical().clone();
                let labels: Vec<String> = (0..days.len())
                    .filter_map(|i| days.get(i))
                    .map(|d| crate::period::Period::from_days(d, Frequency::Month).to_string())
                    .collect();
                let shown = if labels.len() > 6 {
                    format!("{} and {} more", labels[..5].join(", "), labels.len() - 5)
                } else {
                    labels.join(", ")
                };
                return Err(Error::input(format!(
                    "convert(..., \"{target}\"): no {source} to {target} rate for {shown}"
                ))
                .hint("add the missing months with `tradeql rates add`, or narrow the query's periods"));
            }
            all.push((fx, factors));
        }
        Ok(all)
    }

    /// The dataset's stored periods (with year, quarter and month) that pass
    /// the query's calendar-only filters: what the query can touch.
    fn calendar_window(&self, manifest: &Manifest) -> Result<LazyFrame> {
        let periods: Vec<i32> = manifest.period_values().iter().map(|p| p.days()).collect();
        let frame = DataFrame::new(
            periods.len(),
            vec![Int32Chunked::from_vec("period".into(), periods).into_date().into_column()],
        )?;
        let mut lf = frame.lazy().with_columns([
            col("period").dt().year().cast(DataType::Int32).alias("year"),
            col("period").dt().quarter().cast(DataType::Int32).alias("quarter"),
            col("period").dt().month().cast(DataType::Int32).alias("month"),
        ]);
        for x in &self.plan.row_filters {
            if let Some(bound) = calendar_bound(x) {
                lf = lf.filter(self.expr(&bound)?);
            }
        }
        Ok(lf)
    }

    /// For each roll-up period, how many of the dataset's stored periods fall
    /// in it and pass the filters that only look at the calendar.
    fn coverage(&self, manifest: &Manifest, t: TimeKey, column: &str) -> Result<LazyFrame> {
        let lf = self.calendar_window(manifest)?;
        let counted =
            lf.group_by([time_group(t, self.plan.frequency)]).agg([len().cast(DataType::UInt32).alias(column)]);
        Ok(with_calendar_key(counted, Some(t), self.plan.frequency))
    }

    /// `top n DIM by COL`: every measure is computed on the full rows (each
    /// member's own series, whether or not it was in the top the year
    /// before), then the members ranked below `n` in each period (ties by
    /// code) are summed into one row "others". In that row the aggregates and
    /// the measures that add up (share, contribution) are the sums of its
    /// members'; expressions without measures are computed on the sums; the
    /// other measures (growth, rank, records, ...) are null, with a warning:
    /// its members change from period to period. Post-filters are applied
    /// after the fold.
    fn top(&mut self, lf: LazyFrame, n: usize, dim: &str, by: &str, base: &LazyFrame) -> Result<LazyFrame> {
        let plan = self.plan;
        check_top_aggregates(plan)?;
        let named = name_dims(&post_exprs(plan));
        // Measures on the full rows, each into a hidden column.
        let mut lf = self.with_names(lf, &named)?;
        let mut folded = FoldedMeasures::default();
        let mut post_derives = Vec::new();
        for (name, x) in &plan.post_derives {
            let (next, rx) = self.hide_measures(lf, x, base, &mut folded)?;
            lf = next.with_column(self.expr(&rx)?.alias(name.as_str()));
            post_derives.push((name.clone(), rx));
        }
        let mut outputs = Vec::new();
        for o in &plan.outputs {
            // Shown columns too, for the measures of later ones (yoy(unit_value)).
            let (next, rx) = self.hide_measures(lf, &o.expr, base, &mut folded)?;
            lf = next.with_column(self.expr(&rx)?.alias(o.name.as_str()));
            outputs.push((o.name.clone(), rx));
        }
        let mut filters = Vec::new();
        for x in &plan.post_filters {
            let (next, rx) = self.hide_measures(lf, x, base, &mut folded)?;
            lf = next;
            filters.push(rx);
        }
        // Rank the members in each period: by `by`, ties by code.
        let mut partition: Vec<Expr> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        if let Some(t) = plan.time {
            partition.push(col("__t"));
            keys.extend(["__t".to_string(), t.column().to_string()]);
        }
        partition.extend(plan.keys.iter().filter(|k| *k != dim).map(|k| col(k.as_str())));
        keys.extend(plan.keys.iter().cloned());
        let mut carried: Vec<String> = keys.clone();
        carried.extend(plan.aggs.iter().map(|a| a.name.clone()));
        carried.extend(self.warnings.iter().map(|w| w.column.clone()));
        carried.extend(folded.summed.iter().cloned());
        carried.extend(folded.dropped.iter().cloned());
        let lf = lf.select(carried.iter().map(|c| col(c.as_str())).collect::<Vec<_>>());
        let mut order: Vec<PlSmallStr> =
            keys.iter().filter(|k| *k != dim).map(|k| PlSmallStr::from(k.as_str())).collect();
        order.push(by.into());
        order.push(dim.into());
        let mut descending = vec![false; order.len()];
        descending[order.len() - 2] = true;
        let sorted = lf.sort(
            order,
            SortMultipleOptions::default()
                .with_order_descending_multi(descending)
                .with_nulls_last(true)
                .with_maintain_order(true),
        );
        let ordinal =
            if partition.is_empty() { col(by).cum_count(false) } else { col(by).cum_count(false).over(partition)? };
        let ranked = sorted.with_column(ordinal.alias("__top_rank")).cache();
        let members = ranked.clone().filter(col("__top_rank").lt_eq(lit(n as u32)));
        let schema = members.clone().collect_schema()?;
        let group_keys: Vec<Expr> = keys.iter().filter(|k| *k != dim).map(|k| col(k.as_str())).collect();
        let mut sums: Vec<Expr> = plan
            .aggs
            .iter()
            .map(|a| {
                let x = col(a.name.as_str());
                if sums_to_null(a) { null_when_empty(x).alias(a.name.as_str()) } else { x.sum() }
            })
            .collect();
        sums.extend(
            self.warnings.iter().filter(|w| !folded.silenced.contains(&w.column)).map(|w| col(w.column.as_str()).max()),
        );
        // A sum of no values is null here (no member has the measure), not 0.
        sums.extend(folded.summed.iter().map(|c| {
            when(col(c.as_str()).count().gt(lit(0))).then(col(c.as_str()).sum()).otherwise(lit(NULL)).alias(c.as_str())
        }));
        sums.push(len().alias("__top_members"));
        let rest = ranked.filter(col("__top_rank").gt(lit(n as u32)));
        let others = if group_keys.is_empty() {
            rest.select(sums).filter(col("__top_members").gt(lit(0)))
        } else {
            rest.group_by(group_keys).agg(sums)
        };
        let mut fill: Vec<Expr> = vec![lit("others").alias(dim)];
        fill.extend(folded.silenced.iter().map(|c| lit(false).alias(c.as_str())));
        for c in &folded.dropped {
            let dtype = schema.get(c.as_str()).cloned().unwrap_or(DataType::Float64);
            fill.push(lit(NULL).cast(dtype).alias(c.as_str()));
        }
        let others = others.with_columns(fill);
        let mut shape: Vec<Expr> = carried.iter().map(|c| col(c.as_str())).collect();
        let flag = self.fresh("wothers");
        let members = members.select(shape.clone()).with_column(lit(false).alias(flag.as_str()));
        let others =
            others.select(shape.clone()).with_column(lit(!folded.dropped_names.is_empty()).alias(flag.as_str()));
        shape.push(col(flag.as_str()));
        let mut lf = concat([members, others], UnionArgs::default())?;
        if !folded.dropped_names.is_empty() {
            self.warnings.push(WarningColumn {
                column: flag,
                kind: WarningKind::Others { measures: folded.dropped_names.join(", ") },
            });
        }
        lf = lf.with_column(col(dim).eq(lit("others")).alias("__is_others"));
        lf = self.with_names(lf, &named)?;
        // The shown columns, from the folded rows.
        for (name, rx) in &post_derives {
            lf = lf.with_column(self.expr(rx)?.alias(name.as_str()));
        }
        for (name, rx) in &outputs {
            lf = lf.with_column(self.expr(rx)?.alias(name.as_str()));
        }
        for rx in &filters {
            lf = lf.filter(self.expr(rx)?);
        }
        Ok(lf)
    }

    /// `x` with each measure in it (but unit_value, which the aggregates
    /// give) computed into a hidden column of `lf`, and replaced by it.
    fn hide_measures(
        &mut self,
        lf: LazyFrame,
        x: &RExpr,
        base: &LazyFrame,
        folded: &mut FoldedMeasures,
    ) -> Result<(LazyFrame, RExpr)> {
        let mut lf = lf;
        let rx = x.replace_measures(&mut |node, m| {
            let before = self.warnings.len();
            let (next, e) = self.measure_expr(lf.clone(), node, base)?;
            let name = self.fresh("m");
            lf = next.with_column(e.alias(name.as_str()));
            let dim = self.plan.top.as_ref().map_or("", |(_, d, _)| d.as_str());
            folded.add(m, &name, node, self.warnings[before..].iter().map(|w| w.column.clone()), dim);
            Ok::<RExpr, Error>(RExpr::Col(name))
        })?;
        Ok((lf, rx))
    }

    /// `__t` plus the keys: what identifies a row of the aggregated frame.
    fn row_keys(&self) -> Vec<Expr> {
        let mut keys = vec![col("__t")];
        keys.extend(self.plan.keys.iter().map(|k| col(k.as_str())));
        keys
    }

    /// The period (when there is one) and the `within` columns: what a share
    /// or a rank is taken among.
    fn period_partition(&self, within: &[String]) -> Vec<Expr> {
        let mut part: Vec<Expr> = self.plan.time.iter().map(|_| col("__t")).collect();
        part.extend(within.iter().map(|w| col(w.as_str())));
        part
    }

    fn series_partition(&self) -> Vec<Expr> {
        self.plan.keys.iter().map(|k| col(k.as_str())).collect()
    }

    /// `a` as first published: the query's row stage and aggregation over
    /// each period's rows in the first kept version that held the period
    /// (the versions up to the one the query reads), joined on the keys.
    fn first_release(&mut self, lf: LazyFrame, a: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let manifest = self.manifest;
        let (rows, _) = self.rows(first_release_scan(self.store, self.plan)?)?;
        // A second aggregation of other files: by polars, and what it would
        // add to the query's warnings and pushdown report is the first's.
        let kept = (self.warnings.len(), self.coverage.clone(), self.polars_rows, self.pushed_down.len());
        let shared = self.shared.take();
        self.by_file_year = false;
        let first = with_pushdown(false, || self.aggregate(rows, manifest));
        self.by_file_year = true;
        self.shared = shared;
        self.warnings.truncate(kept.0);
        self.coverage = kept.1;
        self.polars_rows = kept.2;
        self.pushed_down.truncate(kept.3);
        let (first, cx) = self.column_of(first?, a, base)?;
        let name = self.fresh("first");
        let keys = self.row_keys();
        let mut select = keys.clone();
        select.push(col(cx.as_str()).alias(name.as_str()));
        Ok((lf.join(first.select(select), keys.clone(), keys, join_args()), col(name.as_str())))
    }

    /// Joins the value of `column` from `months` earlier onto each row, as `__prevN`.
    ///
    /// Once per column and offset: `yoy(total)` and `change(total)`, or the
    /// coverage counts of several measures, share one join (each join makes
    /// the plan deeper).
    fn previous(&mut self, lf: LazyFrame, column: &str, months: i32) -> (LazyFrame, String) {
        let key = (column.to_string(), months);
        if let Some(prev) = self.joined.get(&key) {
            return (lf, prev.clone());
        }
        let prev = self.fresh("prev");
        self.joined.insert(key, prev.clone());
        let mut select = vec![col("__t").dt().offset_by(lit(offset(months))).alias("__t")];
        select.extend(self.series_partition());
        select.push(col(column).alias(prev.as_str()));
        let shifted = lf.clone().select(select);
        let keys = self.row_keys();
        (lf.join(shifted, keys.clone(), keys, join_args()), prev)
    }

    /// Flags the rows whose comparison value `prev` (from `months` earlier)
    /// is null: the period is missing, or it is stored but the query's
    /// calendar filter leaves it out (then the warning names the filter).
    fn missing_base(&mut self, lf: LazyFrame, prev: &str, months: i32, measure: String, offset: String) -> LazyFrame {
        let missing = col(prev).is_null();
        let flag = self.fresh("wmiss");
        let Some((filter, cut)) = self.plan.cut.clone() else {
            self.warnings
                .push(WarningColumn { column: flag.clone(), kind: WarningKind::MissingBase { measure, offset } });
            return lf.with_column(missing.alias(flag.as_str()));
        };
        let base = col("__t").dt().offset_by(lit(format!("{}mo", -months)));
        let is_cut = cut.iter().fold(lit(false), |any, d| any.or(base.clone().eq(date_lit(*d))));
        let cut_flag = self.fresh("wcut");
        self.warnings.push(WarningColumn {
            column: flag.clone(),
            kind: WarningKind::MissingBase { measure: measure.clone(), offset: offset.clone() },
        });
        self.warnings.push(WarningColumn {
            column: cut_flag.clone(),
            kind: WarningKind::BaseFiltered { measure, offset, filter },
        });
        lf.with_columns([
            missing.clone().and(is_cut.clone().not()).alias(flag.as_str()),
            missing.and(is_cut).alias(cut_flag.as_str()),
        ])
    }

    /// Flags the rows of a share with a named total row that has no row in
    /// their period (the share is null there).
    fn total_row_present(
        &mut self,
        lf: LazyFrame,
        total: &str,
        m: &Measure,
        a: &RExpr,
        of: Option<&TotalRow>,
    ) -> LazyFrame {
        let Some(of) = of else { return lf };
        let flag = self.fresh("wnototal");
        self.warnings.push(WarningColumn {
            column: flag.clone(),
            kind: WarningKind::NoTotalRow { measure: m_text(m, a), row: format!("{} = {:?}", of.dim, of.code) },
        });
        lf.with_column(col(total).is_null().alias(flag.as_str()))
    }

    /// Flags the rows whose roll-up period holds a different number of the
    /// dataset's periods than the one `months` earlier that `measure`
    /// compares it with (a partial year against a full one).
    fn unequal_periods(&mut self, lf: LazyFrame, months: i32, measure: String, offset: String) -> LazyFrame {
        let Some(coverage) = self.coverage.clone() else { return lf };
        let (lf, before) = self.previous(lf, &coverage, months);
        let flag = self.fresh("wunequal");
        let lf =
            lf.with_column(col(coverage.as_str()).neq(col(before.as_str())).fill_null(lit(false)).alias(flag.as_str()));
        self.warnings.push(WarningColumn {
            column: flag,
            kind: WarningKind::Unequal { measure, offset, unit: sub_periods(self.plan) },
        });
        lf
    }

    /// Makes `x` a column of `lf` (adding it when it is not a plain column).
    fn column_of(&mut self, lf: LazyFrame, x: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, String)> {
        if let RExpr::Col(c) = x {
            return Ok((lf, c.clone()));
        }
        let (lf, e) = self.measure_expr(lf, x, base)?;
        let name = self.fresh("m");
        Ok((lf.with_column(e.alias(name.as_str())), name))
    }

    /// Compiles an expression over aggregated rows, adding the joins and
    /// windows its measures need to `lf`.
    fn measure_expr(&mut self, lf: LazyFrame, x: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let RExpr::Measure(m) = x else {
            return self.compose(lf, x, base);
        };
        let time = self.plan.time;
        let t_months = time.map_or(12, months_of);
        Ok(match m.as_ref() {
            Measure::Yoy(_) | Measure::Pop(_) | Measure::Pp(_) | Measure::Versus { .. } => {
                let (a, back, how) = m.comparison().ok_or_else(|| Error::internal("not a comparison"))?;
                let (lf, cx) = self.column_of(lf, a, base)?;
                let months = back.months(t_months);
                let (lf, prev) = self.previous(lf, &cx, months);
                let measure = m_text(m, a);
                let lf = self.missing_base(lf, &prev, months, measure.clone(), back.text());
                let e = match how {
                    Compare::Points => (col(cx.as_str()) - col(prev.as_str())) * lit(100.0),
                    Compare::Change => col(cx.as_str()) - col(prev.as_str()),
                    Compare::Growth => col(cx.as_str()) / col(prev.as_str()) - lit(1.0),
                };
                (self.unequal_periods(lf, months, measure, back.text()), e)
            }
            Measure::Share(a, within, of) => {
                let (agg_name, row_col) = self.plan.sum_columns(a, "share")?;
                let part = self.period_partition(within);
                if self.plan.groups.is_empty() && of.is_none() {
                    // Without group mapping every base row is in exactly one
                    // aggregated row, so their sum over the period is the
                    // base rows' total (bit for bit the same sums).
                    let total = if part.is_empty() {
                        col(agg_name.as_str()).sum()
                    } else {
                        col(agg_name.as_str()).sum().over(part)?
                    };
                    return Ok((lf, col(agg_name.as_str()) / total));
                }
                // Groups may overlap: divide by the total of the base rows
                // (or of the named aggregate row).
                let total = self.fresh("total");
                let totals = self.totals(base, within, &row_col, &total, of.as_ref())?;
                let mut on: Vec<Expr> = time.iter().map(|_| col("__t")).collect();
                on.extend(within.iter().map(|w| col(w.as_str())));
                let (lf, totals, on) = if on.is_empty() {
                    // One total: join it to every row through a constant key.
                    (
                        lf.with_column(lit(1).alias("__one")),
                        totals.with_column(lit(1).alias("__one")),
                        vec![col("__one")],
                    )
                } else {
                    (lf, totals, on)
                };
                let lf = lf.join(totals, on.clone(), on, join_args());
                let lf = self.total_row_present(lf, &total, m, a, of.as_ref());
                (lf, col(agg_name.as_str()) / col(total.as_str()))
            }
            Measure::Contribution(a, within, of) => {
                let (agg_name, row_col) = self.plan.sum_columns(a, "contribution")?;
                let (lf, prev) = self.previous(lf, agg_name, 12);
                // The total of the base rows (before group mapping: never a
                // sum of overlapping groups), or of the named aggregate row.
                let total = self.fresh("total");
                let totals = self
                    .totals(base, within, &row_col, &total, of.as_ref())?
                    .with_column(col("__t").dt().offset_by(lit("12mo")));
                let mut on = vec![col("__t")];
                on.extend(within.iter().map(|w| col(w.as_str())));
                let lf = lf.join(totals, on.clone(), on, join_args());
                let lf = self.missing_base(lf, &prev, 12, format!("contribution({agg_name})"), "a year before".into());
                let lf = self.unequal_periods(lf, 12, format!("contribution({agg_name})"), "a year before".into());
                (lf, (col(agg_name.as_str()) - col(prev.as_str())) / col(total.as_str()) * lit(100.0))
            }
            Measure::Ytd(a) => {
                let (lf, cx) = self.column_of(lf, a, base)?;
                let mut part = self.series_partition();
                part.push(col("__t").dt().year());
                let ytd = ordered_window(col(cx.as_str()).cum_sum(false), part.clone(), col("__t"), false)?;
                let seen = ordered_window(col("__t").cum_count(false), part, col("__t"), false)?;
                let expected = match time {
                    Some(TimeKey::Quarter) => col("__t").dt().quarter().cast(DataType::UInt32),
                    _ => col("__t").dt().month().cast(DataType::UInt32),
                };
                let flag = self.fresh("wytd");
                let lf = lf.with_column(seen.cast(DataType::UInt32).neq(expected).alias(flag.as_str()));
                self.warnings.push(WarningColumn {
                    column: flag,
                    kind: WarningKind::YtdGap { measure: format!("ytd({})", display_arg(a)) },
                });
                (lf, ytd)
            }
            // A window longer than the stored calendar is never complete:
            // null throughout, without spreading the rows over it.
            Measure::Rolling(_, n, _) if *n > self.stored_span(t_months) => (lf, lit(NULL).cast(DataType::Float64)),
            Measure::High(_, n) if *n > self.stored_span(t_months) => (lf, lit(NULL).cast(DataType::Boolean)),
            Measure::Rolling(a, n, mean) => {
                let (lf, cx) = self.column_of(lf, a, base)?;
                let (lf, sum, count, _) = self.window(lf, &cx, *n, t_months);
                let total = if *mean { col(sum.as_str()) / lit(*n as f64) } else { col(sum.as_str()) };
                (lf, when(col(count.as_str()).eq(lit(*n as u32))).then(total).otherwise(lit(NULL)))
            }
            Measure::High(a, n) => {
                let (lf, cx) = self.column_of(lf, a, base)?;
                let (lf, _, count, max) = self.window(lf, &cx, *n, t_months);
                (
                    lf,
                    when(col(count.as_str()).eq(lit(*n as u32)))
                        .then(col(cx.as_str()).gt_eq(col(max.as_str())))
                        .otherwise(lit(NULL)),
                )
            }
            Measure::Record(a) => {
                let (lf, cx) = self.column_of(lf, a, base)?;
                let earlier = ordered_window(
                    col(cx.as_str()).cum_max(false).shift(lit(1)),
                    self.series_partition(),
                    col("__t"),
                    false,
                )?;
                let name = self.fresh("earlier");
                let lf = lf.with_column(earlier.alias(name.as_str()));
                (
                    lf,
                    when(col(name.as_str()).is_null())
                        .then(lit(NULL))
                        .otherwise(col(cx.as_str()).gt(col(name.as_str()))),
                )
            }
            Measure::Streak(cond) => {
                let (lf, cb) = self.column_of(lf, cond, base)?;
                let holds = col(cb.as_str()).fill_null(lit(false));
                let index = (col("__t").dt().year().cast(DataType::Int32) * lit(12)
                    + col("__t").dt().month().cast(DataType::Int32)
                    - lit(1))
                    / lit(t_months);
                let part = self.series_partition();
                let gap = ordered_window(index.clone() - index.shift(lit(1)), part.clone(), col("__t"), false)?;
                let brk = self.fresh("break");
                let lf =
                    lf.with_column((holds.clone().not().or(gap.neq(lit(1)).fill_null(lit(true)))).alias(brk.as_str()));
                let run = self.fresh("run");
                let lf = lf.with_column(
                    ordered_window(
                        col(brk.as_str()).cast(DataType::Int32).cum_sum(false),
                        part.clone(),
                        col("__t"),
                        false,
                    )?
                    .alias(run.as_str()),
                );
                let mut run_part = part;
                run_part.push(col(run.as_str()));
                (
                    lf,
                    ordered_window(holds.cast(DataType::Int32).cum_sum(false), run_part, col("__t"), false)?
                        .cast(DataType::Float64),
                )
            }
            Measure::Rank(a, within) => {
                let (lf, cx) = self.column_of(lf, a, base)?;
                // Competition ranking: equal values share the best rank
                // (1, 2, 2, 4), whatever order the rows come in.
                let part = self.period_partition(within);
                let ordinal = ordered_window(col(cx.as_str()).cum_count(false), part.clone(), col(cx.as_str()), true)?;
                let nth = self.fresh("ordinal");
                let lf = lf.with_column(ordinal.alias(nth.as_str()));
                let mut ties = part;
                ties.push(col(cx.as_str()));
                let rank = col(nth.as_str()).min().over(ties)?;
                (lf, when(col(cx.as_str()).is_null()).then(lit(NULL)).otherwise(rank).cast(DataType::Float64))
            }
            Measure::UnitValue => (lf, unit_value()),
            Measure::FirstRelease(a) => self.first_release(lf, a, base)?,
        })
    }

    /// The total of `row_col` over the base rows (filtered, before any group
    /// mapping, so each stored row counts once) per calendar key `__t` (when
    /// the query has one) and `within` columns, as column `total`. A `within`
    /// column that is a group alias maps the base rows through that group
    /// alone (each row once per group it belongs to).
    fn totals(
        &mut self,
        base: &LazyFrame,
        within: &[String],
        row_col: &str,
        total: &str,
        of: Option<&TotalRow>,
    ) -> Result<LazyFrame> {
        let Some(of) = of else { return self.base_totals(base, within, row_col, total) };
        // The named aggregate row, read with the query's filters but those on
        // its dimension (which pick the members shown).
        let scan = self.scan.clone().ok_or_else(|| Error::internal("no scan for a total row"))?;
        let (_, rows) = self.rows_where(scan, &|x: &RExpr| without_terms_on(x, &of.dim))?;
        let rows = rows.filter(col(of.dim.as_str()).eq(lit(of.code.as_str())));
        self.polars_rows = true;
        Ok(with_calendar_key(self.sum_by_period(rows, within, row_col, total), self.plan.time, self.plan.frequency))
    }

    /// `row_col` of `rows` summed into `total` per roll-up period (when the
    /// query has one) and `within` columns.
    fn sum_by_period(&self, rows: LazyFrame, within: &[String], row_col: &str, total: &str) -> LazyFrame {
        let mut keys: Vec<Expr> = self.plan.time.map(|t| time_group(t, self.plan.frequency)).into_iter().collect();
        keys.extend(within.iter().map(|w| col(w.as_str())));
        let sum = col(row_col).sum().alias(total);
        if keys.is_empty() { rows.select([sum]) } else { rows.group_by(keys).agg([sum]) }
    }

    fn base_totals(&mut self, base: &LazyFrame, within: &[String], row_col: &str, total: &str) -> Result<LazyFrame> {
        let time = self.plan.time;
        let mut rows = base.clone();
        let mut mapped = false;
        for g in self.plan.groups.iter().filter(|g| within.contains(&g.alias)) {
            rows = self.map_groups(rows, g)?;
            mapped = true;
        }
        let in_polars = self.sum_by_period(rows, within, row_col, total);
        let pushed = if mapped {
            None
        } else {
            let agg = pushdown::Agg {
                name: total.to_string(),
                func: pushdown::AggFunc::Sum,
                column: Some(row_col.to_string()),
            };
            self.pushed_down(self.manifest, time, within, vec![agg], in_polars.clone())
        };
        let grouped = match pushed {
            Some(lf) => lf,
            None => {
                self.polars_rows = true;
                in_polars
            }
        };
        Ok(with_calendar_key(grouped, time, self.plan.frequency))
    }

    /// Sum, count and max of `column` over the `n` periods up to each row,
    /// matched by calendar: each row is spread to the `n` periods it belongs to.
    /// How many periods of `t_months` months the stored calendar spans,
    /// first to last stored period (at least 1).
    fn stored_span(&self, t_months: i32) -> usize {
        let periods = self.manifest.period_values();
        let (Some(first), Some(last)) = (periods.first(), periods.last()) else { return 1 };
        let month = |p: &crate::period::Period| i64::from(p.year) * 12 + i64::from(p.month) - 1;
        let months = month(last) - month(first) + i64::from(self.manifest.frequency.months());
        (months / i64::from(t_months.max(1)) + 1).max(1) as usize
    }

    fn window(&mut self, lf: LazyFrame, column: &str, n: usize, t_months: i32) -> (LazyFrame, String, String, String) {
        let (sum, count, max) = (self.fresh("wsum"), self.fresh("wcount"), self.fresh("wmax"));
        let parts: Vec<LazyFrame> = (0..n as i32)
            .map(|j| {
                let mut select = vec![col("__t").dt().offset_by(lit(offset(j * t_months))).alias("__t")];
                select.extend(self.series_partition());
                select.push(col(column).alias("__v"));
                lf.clone().select(select)
            })
            .collect();
        let spread = concat(parts, UnionArgs::default()).expect("same schema");
        let windows = spread.group_by(self.row_keys()).agg([
            col("__v").sum().alias(sum.as_str()),
            col("__v").count().cast(DataType::UInt32).alias(count.as_str()),
            col("__v").max().alias(max.as_str()),
        ]);
        let keys = self.row_keys();
        (lf.join(windows, keys.clone(), keys, join_args()), sum, count, max)
    }

    /// An expression over aggregated rows that may contain measures anywhere.
    fn compose(&mut self, lf: LazyFrame, x: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        Ok(match x {
            RExpr::Measure(_) => self.measure_expr(lf, x, base)?,
            RExpr::Neg(a) => {
                let (lf, e) = self.compose(lf, a, base)?;
                (lf, lit(0.0) - e)
            }
            RExpr::Not(a) => {
                let (lf, e) = self.compose(lf, a, base)?;
                (lf, e.not())
            }
            RExpr::Bin(op, a, b) => {
                let (lf, ea) = self.compose(lf, a, base)?;
                let (lf, eb) = self.compose(lf, b, base)?;
                (lf, binary(*op, ea, eb))
            }
            RExpr::In(a, list) => {
                let (mut lf, ea) = self.compose(lf, a, base)?;
                if let Some(set) = set_lookup(&ea, list) {
                    return Ok((lf, set));
                }
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let (next, e) = self.compose(lf, item, base)?;
                    lf = next;
                    items.push(e);
                }
                (lf, any_equal(ea, items))
            }
            RExpr::Between(a, lo, hi, excl) => {
                let (lf, ea) = self.compose(lf, a, base)?;
                let (lf, el) = self.compose(lf, lo, base)?;
                let (lf, eh) = self.compose(lf, hi, base)?;
                let upper = if *excl { ea.clone().lt(eh) } else { ea.clone().lt_eq(eh) };
                (lf, ea.gt_eq(el).and(upper))
            }
            RExpr::Calendar(f, a) => {
                let (lf, e) = self.compose(lf, a, base)?;
                (lf, calendar(*f, e))
            }
            RExpr::If(c, a, b) => {
                let (lf, ec) = self.compose(lf, c, base)?;
                let (lf, ea) = self.compose(lf, a, base)?;
                let (lf, eb) = self.compose(lf, b, base)?;
                (lf, when(ec).then(ea).otherwise(eb))
            }
            other => (lf, self.expr(other)?),
        })
    }

    /// A row-level expression (no measures).
    fn expr(&self, x: &RExpr) -> Result<Expr> {
        Ok(match x {
            RExpr::Num(n) => lit(*n),
            RExpr::Str(s) => lit(s.as_str()),
            RExpr::Date(d) => date_lit(*d),
            RExpr::Bool(b) => lit(*b),
            RExpr::Col(c) => col(c.as_str()),
            RExpr::Neg(a) => lit(0.0) - self.expr(a)?,
            RExpr::Not(a) => self.expr(a)?.not(),
            RExpr::Bin(op, a, b) => binary(*op, self.expr(a)?, self.expr(b)?),
            RExpr::In(a, list) => {
                let ea = self.expr(a)?;
                match set_lookup(&ea, list) {
                    Some(set) => set,
                    None => any_equal(ea, list.iter().map(|x| self.expr(x)).collect::<Result<Vec<_>>>()?),
                }
            }
            RExpr::IsCode(c, codes) => {
                let set = Series::new("".into(), codes.iter().map(String::as_str).collect::<Vec<_>>());
                col(c.as_str()).is_in(lit(set).implode(false), false).fill_null(lit(false))
            }
            RExpr::Between(a, lo, hi, excl) => {
                let ea = self.expr(a)?;
                let upper = if *excl { ea.clone().lt(self.expr(hi)?) } else { ea.clone().lt_eq(self.expr(hi)?) };
                ea.gt_eq(self.expr(lo)?).and(upper)
            }
            RExpr::Code(CodeFn::Chapter, a) => self.expr(a)?.str().slice(lit(0), lit(2)),
            RExpr::Code(CodeFn::Heading, a) => self.expr(a)?.str().slice(lit(0), lit(4)),
            RExpr::Code(CodeFn::Section, _) => col("__section_product"),
            RExpr::Code(CodeFn::Name, a) => match a.as_ref() {
                RExpr::Col(dim) => col(name_column(dim).as_str()),
                _ => return Err(Error::internal("name() of no code column")),
            },
            RExpr::If(c, a, b) => when(self.expr(c)?).then(self.expr(a)?).otherwise(self.expr(b)?),
            RExpr::Calendar(f, a) => calendar(*f, self.expr(a)?),
            RExpr::Convert(a, target) => match &self.plan.rates {
                Some((_, source)) if source == target => self.expr(a)?,
                _ => self.expr(a)? * col(fx_column(target).as_str()),
            },
            // unit_value is a ratio of two aggregates (after `top`, of "others"' sums too).
            RExpr::Measure(m) if matches!(m.as_ref(), Measure::UnitValue) => unit_value(),
            RExpr::Measure(_) => return Err(Error::internal("a measure in a row expression")),
        })
    }
}

/// A comparison measure as the query wrote it, for warnings: `yoy(value)`,
/// `change(total, 4)`, `pop(value)`.
pub(crate) fn m_text(m: &Measure, arg: &RExpr) -> String {
    match m {
        Measure::Versus { back: Back::Years(n), .. } if *n > 1 => format!("{}({}, {n})", m.name(), display_arg(arg)),
        _ => format!("{}({})", m.name(), display_arg(arg)),
    }
}

/// value / quantity over the rows that report a quantity.
fn unit_value() -> Expr {
    when(col("__uv_quantity").gt(lit(0.0))).then(col("__uv_value") / col("__uv_quantity")).otherwise(lit(NULL))
}

/// The hidden measure columns of a `top` query: those whose "others" value
/// is the sum of its members' (`summed`), and those left null for "others"
/// (`dropped`, with the measures as the query wrote them).
#[derive(Default)]
pub(crate) struct FoldedMeasures {
    pub(crate) summed: Vec<String>,
    /// Warning columns of the dropped measures: false for "others".
    pub(crate) silenced: Vec<String>,
    pub(crate) dropped: Vec<String>,
    pub(crate) dropped_names: Vec<String>,
}

impl FoldedMeasures {
    /// Records measure `m` (written `x`), computed into column `name` with
    /// the warning columns `warnings`.
    pub(crate) fn add(
        &mut self,
        m: &Measure,
        name: &str,
        x: &RExpr,
        warnings: impl Iterator<Item = String>,
        dim: &str,
    ) {
        // A share within the folded dimension is each member's own (1): not additive.
        let additive = match m {
            Measure::Share(_, within, _) | Measure::Contribution(_, within, _) => !within.iter().any(|w| w == dim),
            _ => false,
        };
        if additive {
            self.summed.push(name.to_string());
            return;
        }
        // Its warnings do not apply to "others", where it is null.
        self.silenced.extend(warnings);
        self.dropped.push(name.to_string());
        let text = x.to_string();
        if !self.dropped_names.contains(&text) {
            self.dropped_names.push(text);
        }
    }
}

/// The grouping expression of a calendar roll-up. A roll-up to the data's own
/// frequency groups by `period` as it is; a roll-up to years groups by the Hive
/// `year` of the files (an integer, no date arithmetic on every row); other
/// roll-ups truncate `period`. [`with_calendar_key`] turns the result into `__t`.
fn time_group(t: TimeKey, data: Frequency) -> Expr {
    if t.is(data) {
        return col("period").alias("__t");
    }
    match t {
        TimeKey::Year => col("year").alias("__year"),
        TimeKey::Half => col("period").dt().truncate(lit("6mo")).alias("__t"),
        TimeKey::Quarter => col("period").dt().truncate(lit("1q")).alias("__t"),
        TimeKey::Month => col("period").dt().truncate(lit("1mo")).alias("__t"),
    }
}

/// Filter `x` without its `and` terms that read column `dim` (None when
/// nothing is left): the filters of a total row (`share(value, region =
/// "CN")`) are the query's but those that pick the members of `dim` shown.
pub(crate) fn without_terms_on(x: &RExpr, dim: &str) -> Option<RExpr> {
    let mut terms = Vec::new();
    split_and(x, &mut terms);
    terms
        .into_iter()
        .filter(|t| !t.mentions(dim))
        .cloned()
        .reduce(|a, b| RExpr::Bin(BinOp::And, Box::new(a), Box::new(b)))
}

/// The terms of `x` joined by `and`, in order (each filter alone is
/// evaluated on the values of one column).
fn split_and<'a>(x: &'a RExpr, out: &mut Vec<&'a RExpr>) {
    match x {
        RExpr::Bin(BinOp::And, a, b) => {
            split_and(a, out);
            split_and(b, out);
        }
        _ => out.push(x),
    }
}

/// The calendar columns of the row stage: the stored `period`, the Hive
/// `year`, and `quarter` and `month` of the period.
const CALENDAR_COLUMNS: [&str; 4] = ["period", "year", "quarter", "month"];

/// An aggregate of the plan as the pushdown computes it, if it can.
/// Whether a sum of `a` is null when no row of the group has a value (a
/// further measure, or a column derived from one: September's year to date
/// is not reported, not zero). Value and quantity keep their sum of none as 0.
pub(crate) fn sums_to_null(a: &Agg) -> bool {
    a.func == AggFunc::Sum
        && !a.name.starts_with("__uv_")
        && a.arg.as_deref().is_some_and(|c| c != "value" && c != "quantity")
}

/// The sum of `x`, null when `x` has no value in the group.
fn null_when_empty(x: Expr) -> Expr {
    when(x.clone().count().gt(lit(0))).then(x.sum()).otherwise(lit(NULL).cast(DataType::Float64))
}

fn pushdown_agg(a: &Agg) -> Option<pushdown::Agg> {
    use pushdown::AggFunc as P;
    if sums_to_null(a) {
        return None; // the pass sums no values to 0
    }
    let func = match (a.func, &a.arg) {
        (AggFunc::Sum, Some(_)) if a.name.starts_with("__uv_") => P::SumWherePositiveQuantity,
        (AggFunc::Sum, Some(_)) => P::Sum,
        (AggFunc::Mean, Some(_)) => P::Mean,
        (AggFunc::Min, Some(_)) => P::Min,
        (AggFunc::Max, Some(_)) => P::Max,
        (AggFunc::Count, Some(_)) => P::Count,
        (AggFunc::Count, None) => P::Rows,
        _ => return None,
    };
    Some(pushdown::Agg { name: a.name.clone(), func, column: a.arg.clone() })
}

/// Whether every aggregate composes: a sum of sums, a sum of counts, a min of mins.
fn aggregates_compose(plan: &Plan) -> bool {
    plan.aggs.iter().all(|a| matches!(a.func, AggFunc::Sum | AggFunc::Count | AggFunc::Min | AggFunc::Max))
}

/// The keys derived as chapter() or heading() of a single column, with their
/// expressions: when the aggregates compose, the rows are grouped by that
/// column and the key is cut from the grouped rows (no group mapping involved).
fn code_keys(plan: &Plan) -> Vec<(String, RExpr)> {
    if !plan.groups.is_empty() || !aggregates_compose(plan) || plan.aggs.is_empty() {
        return Vec::new();
    }
    plan.keys
        .iter()
        .filter_map(|k| {
            let (_, x) = plan.derives.iter().find(|(n, _)| n == k)?;
            match x {
                RExpr::Code(CodeFn::Chapter | CodeFn::Heading, inner) if matches!(inner.as_ref(), RExpr::Col(_)) => {
                    Some((k.clone(), x.clone()))
                }
                _ => None,
            }
        })
        .collect()
}

/// The row columns the rows are first grouped by besides the calendar: the
/// keys, with members instead of their groups when rows are aggregated by
/// member first, and the code column instead of a key cut from it.
fn row_group_keys(plan: &Plan) -> Vec<String> {
    let aliases: Vec<&str> =
        if pre_aggregates(plan) { plan.groups.iter().map(|g| g.alias.as_str()).collect() } else { Vec::new() };
    let code_keys = code_keys(plan);
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    };
    for k in &plan.keys {
        if aliases.contains(&k.as_str()) {
            continue;
        }
        match code_keys.iter().find(|(n, _)| n == k) {
            Some((_, RExpr::Code(_, inner))) => {
                if let RExpr::Col(c) = inner.as_ref() {
                    add(c);
                }
            }
            _ => add(k),
        }
    }
    if pre_aggregates(plan) {
        for g in &plan.groups {
            add(&g.dim);
        }
    }
    names
}

/// The name of the column [`time_group`] makes.
fn time_column(t: TimeKey, data: Frequency) -> &'static str {
    if t == TimeKey::Year && data != Frequency::Year { "__year" } else { "__t" }
}

/// Whether the rows can be aggregated by member before they are mapped to
/// groups (by period, for memberships as of each row's period): no row stage reads a group,
/// and every aggregate composes (a sum of sums, a sum of counts, a min of mins).
fn pre_aggregates(plan: &Plan) -> bool {
    let aliases: Vec<&str> = plan.groups.iter().map(|g| g.alias.as_str()).collect();
    let reads_group = |x: &RExpr| aliases.iter().any(|a| x.mentions(a));
    !plan.groups.is_empty()
        && !plan.derives.iter().any(|(_, x)| reads_group(x))
        && !plan.row_filters.iter().any(reads_group)
        && (plan.time.is_some() || !plan.keys.is_empty())
        && aggregates_compose(plan)
}

/// The calendar key of the dataset's own periods.
fn own_key(data: Frequency) -> TimeKey {
    match data {
        Frequency::Month => TimeKey::Month,
        Frequency::Quarter => TimeKey::Quarter,
        Frequency::Year => TimeKey::Year,
    }
}

/// After grouping by [`time_group`]: the first day of each roll-up period as `__t`.
fn with_calendar_key(lf: LazyFrame, t: Option<TimeKey>, data: Frequency) -> LazyFrame {
    match t {
        Some(TimeKey::Year) if data != Frequency::Year => {
            // Days from 1970-01-01 to January 1st of `year` (Gregorian, years 1..).
            let y = col("__year").cast(DataType::Int32);
            let before = y.clone() - lit(1);
            let days = lit(365) * (y - lit(1970)) + before.clone().floor_div(lit(4))
                - before.clone().floor_div(lit(100))
                + before.floor_div(lit(400))
                - lit(477);
            lf.with_column(days.cast(DataType::Int32).cast(DataType::Date).alias("__t")).drop(cols(["__year"]))
        }
        _ => lf,
    }
}

pub(crate) fn fx_column(target: &str) -> String {
    format!("__fx_{target}")
}

fn binary(op: BinOp, a: Expr, b: Expr) -> Expr {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a.cast(DataType::Float64) / b.cast(DataType::Float64),
        BinOp::Eq => a.eq(b),
        BinOp::Ne => a.neq(b),
        BinOp::Lt => a.lt(b),
        BinOp::Le => a.lt_eq(b),
        BinOp::Gt => a.gt(b),
        BinOp::Ge => a.gt_eq(b),
        BinOp::And => a.and(b),
        BinOp::Or => a.or(b),
    }
}

fn calendar(f: CalendarFn, e: Expr) -> Expr {
    match f {
        CalendarFn::Year => e.dt().year(),
        CalendarFn::Quarter => e.dt().quarter(),
        CalendarFn::Month => e.dt().month(),
    }
    .cast(DataType::Int32)
}

fn display_arg(x: &RExpr) -> String {
    x.to_string()
}

/// What a row filter says about the calendar: the filter itself when it
/// reads only the calendar; for `a and b`, the bounds of both sides (`region
/// = "X" and period <= 2024-06` is bounded by `period <= 2024-06`); for `a or
/// b`, either side's bound, when both have one; None when it does not bound
/// the calendar. The periods it passes include every period the filter can
/// pass, whatever the rows' other columns hold.
pub(crate) fn calendar_bound(x: &RExpr) -> Option<RExpr> {
    if calendar_only(x) {
        return Some(x.clone());
    }
    match x {
        RExpr::Bin(BinOp::And, a, b) => match (calendar_bound(a), calendar_bound(b)) {
            (Some(a), Some(b)) => Some(RExpr::Bin(BinOp::And, Box::new(a), Box::new(b))),
            (Some(one), None) | (None, Some(one)) => Some(one),
            (None, None) => None,
        },
        RExpr::Bin(BinOp::Or, a, b) => {
            Some(RExpr::Bin(BinOp::Or, Box::new(calendar_bound(a)?), Box::new(calendar_bound(b)?)))
        }
        _ => None,
    }
}

/// Whether an expression reads nothing but the calendar (period, year, quarter, month).
pub(crate) fn calendar_only(x: &RExpr) -> bool {
    !x.any(&mut |e| match e {
        RExpr::Col(c) => !["period", "year", "quarter", "month"].contains(&c.as_str()),
        RExpr::Code(..) | RExpr::Measure(_) => true,
        _ => false,
    })
}

fn uses_code(x: &RExpr, f: CodeFn) -> bool {
    x.any(&mut |e| matches!(e, RExpr::Code(g, _) if *g == f))
}

/// `rows` joined to every group of a group table (`group,member,valid_from,
/// valid_to`) that the row's `dim` code belongs to, the group's name as
/// `alias`: membership at the fixed date `as_of` (days), or as of each row's
/// period. A row in no group is left out; groups overlap, so a row may be
/// joined to several.
pub(crate) fn join_groups(rows: LazyFrame, table: LazyFrame, dim: &str, alias: &str, as_of: Option<i32>) -> LazyFrame {
    let table = table.select([
        col("member").alias(dim),
        col("group").alias(alias),
        col("valid_from").alias("__valid_from"),
        col("valid_to").alias("__valid_to"),
    ]);
    let valid = |when: Expr| {
        (col("__valid_from").is_null().or(col("__valid_from").lt_eq(when.clone())))
            .and(col("__valid_to").is_null().or(col("__valid_to").gt_eq(when)))
    };
    let mut args = JoinArgs::new(JoinType::Inner);
    args.maintain_order = MaintainOrderJoin::Left;
    match as_of {
        // Membership at a fixed date: filter the small table, then join.
        Some(d) => rows.join(
            table.filter(valid(date_lit(d))).drop(cols(["__valid_from", "__valid_to"])),
            [col(dim)],
            [col(dim)],
            args,
        ),
        // Membership as of each row's period: filter the joined rows.
        None => rows
            .join(table, [col(dim)], [col(dim)], args)
            .filter(valid(col("period")))
            .drop(cols(["__valid_from", "__valid_to"])),
    }
}

/// The column a names join adds for `dim`.
pub(crate) fn name_column(dim: &str) -> String {
    format!("__name_{dim}")
}

/// The dimensions whose names (`name(DIM)`) `exprs` read, once each.
pub(crate) fn name_dims(exprs: &[&RExpr]) -> Vec<String> {
    let mut dims = Vec::new();
    for x in exprs {
        x.any(&mut |e| {
            if let RExpr::Code(CodeFn::Name, a) = e
                && let RExpr::Col(d) = a.as_ref()
                && !dims.contains(d)
            {
                dims.push(d.clone());
            }
            false
        });
    }
    dims
}

/// The expressions evaluated on aggregated rows: post-derives, outputs, post-filters.
pub(crate) fn post_exprs(plan: &Plan) -> Vec<&RExpr> {
    plan.post_derives
        .iter()
        .map(|(_, x)| x)
        .chain(plan.outputs.iter().map(|o| &o.expr))
        .chain(plan.post_filters.iter())
        .collect()
}

pub(crate) fn uses_section(plan: &Plan) -> bool {
    plan.derives.iter().any(|(_, x)| uses_code(x, CodeFn::Section))
        || plan.row_filters.iter().any(|x| uses_code(x, CodeFn::Section))
}

/// The conjunction of `exprs` as one balanced tree (None for none): one
/// filter node however many `where` lines a query has, and an expression
/// whose depth grows with the logarithm of their number, not the number.
fn all_of(exprs: Vec<Expr>) -> Option<Expr> {
    balanced(exprs, Expr::and)
}

/// `exprs` joined pairwise by `join`, level by level: a tree of depth
/// log2(n) where a fold would be n deep (polars recurses over expressions).
fn balanced(mut exprs: Vec<Expr>, join: fn(Expr, Expr) -> Expr) -> Option<Expr> {
    while exprs.len() > 1 {
        let mut next = Vec::with_capacity(exprs.len().div_ceil(2));
        let mut it = exprs.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => join(a, b),
                None => a,
            });
        }
        exprs = next;
    }
    exprs.pop()
}

/// `x in (list)` as one set lookup, when the list is all text literals
/// (codes) or all numbers; None otherwise.
fn set_lookup(x: &Expr, list: &[RExpr]) -> Option<Expr> {
    let texts: Option<Vec<&str>> =
        list.iter().map(|e| if let RExpr::Str(s) = e { Some(s.as_str()) } else { None }).collect();
    let numbers: Option<Vec<f64>> = list.iter().map(|e| if let RExpr::Num(n) = e { Some(*n) } else { None }).collect();
    match (texts, numbers) {
        _ if list.is_empty() => None,
        (Some(texts), _) => Some(x.clone().is_in(lit(Series::new("".into(), texts)).implode(false), false)),
        (_, Some(numbers)) => {
            Some(x.clone().cast(DataType::Float64).is_in(lit(Series::new("".into(), numbers)).implode(false), false))
        }
        _ => None,
    }
}

/// `x` equal to any of `items`, as one balanced `or`.
fn any_equal(x: Expr, items: Vec<Expr>) -> Expr {
    balanced(items.into_iter().map(|e| x.clone().eq(e)).collect(), Expr::or).unwrap_or(lit(false))
}
