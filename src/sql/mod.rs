//! Scale-out: a [`Plan`] → one SQL statement for Spark or DuckDB.
//!
//! The statement is a chain of CTEs, one per step of the polars backend
//! ([`crate::lang::compile`]), with the same semantics: the rows are the files
//! the manifest lists, read with their Hive `year`; every comparison across time
//! is a self-join on the calendar key shifted by a year (or one period), never
//! a row offset; shares are window sums; year-to-date and streaks are ordered
//! window sums; rolling windows and highs are RANGE windows over a month index,
//! so a missing month shortens the window as it does in polars; group
//! membership is a join through the groups table with its validity dates; the
//! warning columns (`__w…`) are computed too, so a run on another engine warns
//! exactly as a polars run does.
//!
//! Every CTE lists its columns explicitly (the compiler tracks them), so no
//! dialect-specific `SELECT * EXCEPT` is needed. What differs between dialects
//! (quoting, month arithmetic, reading Parquet, division by zero) is in
//! [`Dialect`]. [`engine`] runs the statements.

pub mod engine;

use crate::error::{Error, Result};
use crate::lang::ast::BinOp;
use crate::lang::compile::{
    FoldedMeasures, ResultShape, WarningColumn, WarningKind, calendar_bound, check_top_aggregates, convert_targets,
    fx_column, m_text, name_column, name_dims, partial_warning, post_exprs, sub_periods, sums_to_null, uses_section,
    without_terms_on,
};
use crate::lang::plan::*;
use crate::store::Manifest;
use std::fmt::Write as _;
use std::path::Path;

/// The SQL engines tradeql compiles to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Spark,
    Duckdb,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Spark => "spark",
            Dialect::Duckdb => "duckdb",
        }
    }

    fn ident(self, name: &str) -> String {
        match self {
            Dialect::Spark => format!("`{}`", name.replace('`', "``")),
            Dialect::Duckdb => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    fn string(self, text: &str) -> String {
        match self {
            // Spark reads backslash escapes inside string literals.
            Dialect::Spark => format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'")),
            Dialect::Duckdb => format!("'{}'", text.replace('\'', "''")),
        }
    }

    /// A date `months` after `date` (dates here are always first days of months).
    fn add_months(self, date: &str, months: i32) -> String {
        match self {
            Dialect::Spark => format!("add_months({date}, {months})"),
            Dialect::Duckdb => format!("CAST({date} + INTERVAL ({months}) MONTH AS DATE)"),
        }
    }

    /// Null-safe equality, as polars joins keys (a null region matches a null region).
    fn same(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Spark => format!("{a} <=> {b}"),
            Dialect::Duckdb => format!("{a} IS NOT DISTINCT FROM {b}"),
        }
    }

    /// Floating division as polars does it: x / 0 is ±inf or NaN. DuckDB
    /// follows IEEE; Spark (ANSI mode) raises on zero, so the zero case is spelled out.
    fn divide(self, a: &str, b: &str) -> String {
        let (a, b) = (format!("CAST({a} AS DOUBLE)"), format!("CAST({b} AS DOUBLE)"));
        match self {
            Dialect::Duckdb => format!("({a} / {b})"),
            Dialect::Spark => {
                format!("(CASE WHEN {b} = 0 THEN {a} * CAST('Infinity' AS DOUBLE) ELSE {a} / {b} END)")
            }
        }
    }

    fn text_type(self) -> &'static str {
        match self {
            Dialect::Spark => "STRING",
            Dialect::Duckdb => "VARCHAR",
        }
    }
}

/// A query as SQL, and how to read its result (warning columns, labels).
#[derive(Debug, Clone)]
pub struct SqlQuery {
    pub text: String,
    pub shape: ResultShape,
}

/// Compiles `plan` to one SQL statement reading the store at `uri` (a local
/// path or an object-store location such as `s3a://bucket/store`), which must
/// hold the files `manifest` lists.
pub fn plan_to_sql(plan: &Plan, manifest: &Manifest, dialect: Dialect, uri: &str) -> Result<SqlQuery> {
    let mut c = Sql {
        plan,
        d: dialect,
        uri: uri.trim_end_matches('/').to_string(),
        ctes: Vec::new(),
        n: 0,
        warnings: Vec::new(),
        coverage: None,
        joined: Default::default(),
        unfiltered: None,
    };
    let text = c.compile(manifest)?;
    let shape = ResultShape::of(plan, c.warnings);
    Ok(SqlQuery { text, shape })
}

/// Compiles a loaded query to SQL for `dialect`, reading the store at `uri`
/// (by default the local store's absolute path).
pub fn compile_loaded(
    loaded: &crate::lang::Loaded,
    store: &Path,
    dialect: Dialect,
    uri: Option<&str>,
) -> Result<SqlQuery> {
    let uri = match uri {
        Some(u) => u.to_string(),
        None => std::path::absolute(store).map_err(|e| Error::io("cannot resolve", store, e))?.display().to_string(),
    };
    plan_to_sql(&loaded.plan, &loaded.manifest, dialect, &uri)
}

/// Runs loaded queries (each with its store) on the engine of `dialect` in
/// one session, each result read like a polars run's (same types, warnings,
/// hidden columns dropped).
pub fn run_loaded(
    loaded: &[(&crate::lang::Loaded, &Path)],
    dialect: Dialect,
    options: &engine::EngineOptions,
) -> Result<Vec<Result<crate::run::Outcome>>> {
    let mut queries = Vec::new();
    let mut statements = Vec::new();
    for (l, store) in loaded {
        let q = compile_loaded(l, store, dialect, None)?;
        let schema = l.compiled.lf.clone().collect_schema()?.as_ref().clone();
        statements.push(engine::Statement { sql: q.text.clone(), schema });
        queries.push(q);
    }
    let run = engine::run(dialect, &statements, options)?;
    Ok(run
        .results
        .into_iter()
        .zip(&queries)
        .map(|(r, q)| r.and_then(|r| crate::run::finish(&q.shape, r.frame)))
        .collect())
}

/// A relation of the CTE chain and its columns, in order.
#[derive(Clone)]
struct Frame {
    name: String,
    cols: Vec<String>,
}

/// The stored columns of every dataset (the canonical schema); the scan adds
/// the Hive `year` and the calendar columns `quarter` and `month`.
const STORED: [&str; 10] =
    ["period", "reporter", "partner", "flow", "product", "region", "value", "quantity", "quantity_unit", "aggregate"];
/// What a listing (no `by`, no `show`) returns, as the polars backend does.
const LISTED: [&str; 9] =
    ["period", "reporter", "partner", "flow", "product", "region", "value", "quantity", "quantity_unit"];

struct Sql<'a> {
    plan: &'a Plan,
    d: Dialect,
    uri: String,
    ctes: Vec<String>,
    n: usize,
    warnings: Vec<WarningColumn>,
    /// The column counting the dataset's periods in each roll-up period.
    coverage: Option<String>,
    /// The rows before the row filters, for the total of a named aggregate row.
    unfiltered: Option<Frame>,
    /// The columns `previous` joined, by (column, months back).
    joined: std::collections::HashMap<(String, i32), String>,
}

fn num(n: f64) -> String {
    // Exponent notation is a DOUBLE literal in both Spark and DuckDB (a plain
    // `1.5` is a DECIMAL), and Rust prints the shortest exact form.
    let short = format!("{n:e}");
    if n.fract() == 0.0 && n.abs() < 1e15 {
        let whole = format!("{}e0", n as i64);
        if whole.len() <= short.len() + 2 {
            return whole;
        }
    }
    short
}

impl Sql<'_> {
    fn q(&self, name: &str) -> String {
        self.d.ident(name)
    }

    fn fresh(&mut self, what: &str) -> String {
        self.n += 1;
        format!("__{what}{}", self.n)
    }

    fn list(&self, cols: &[String]) -> String {
        cols.iter().map(|c| self.q(c)).collect::<Vec<_>>().join(", ")
    }

    fn prefixed(&self, alias: &str, cols: &[String]) -> String {
        cols.iter().map(|c| format!("{alias}.{}", self.q(c))).collect::<Vec<_>>().join(", ")
    }

    /// Adds a CTE; `body` selects exactly `cols`.
    fn cte(&mut self, body: String, cols: Vec<String>) -> Frame {
        let name = format!("s{}", self.ctes.len() + 1);
        self.ctes.push(format!("{name} AS (\n  {}\n)", body.replace('\n', "\n  ")));
        Frame { name, cols }
    }

    /// `f` with column `name` set to `expr` (added, or replaced in place).
    fn with_column(&mut self, f: &Frame, expr: &str, name: &str) -> Frame {
        if expr == self.q(name) && f.cols.iter().any(|c| c == name) {
            return f.clone();
        }
        let mut select: Vec<String> = Vec::new();
        let mut cols = Vec::new();
        let mut replaced = false;
        for c in &f.cols {
            if c == name {
                select.push(format!("{expr} AS {}", self.q(name)));
                replaced = true;
            } else {
                select.push(self.q(c));
            }
            cols.push(c.clone());
        }
        if !replaced {
            select.push(format!("{expr} AS {}", self.q(name)));
            cols.push(name.to_string());
        }
        self.cte(format!("SELECT {} FROM {}", select.join(", "), f.name), cols)
    }

    /// `f` with `column` of `relation` (aliased `b`; `f` is `a`) joined on `on`:
    /// a left join, so rows without a match keep a null.
    fn join_column(&mut self, f: &Frame, relation: &str, column: &str, on: &str) -> Frame {
        let mut cols = f.cols.clone();
        cols.push(column.to_string());
        let body = format!(
            "SELECT {}, b.{} FROM {} a LEFT JOIN ({relation}) b ON {on}",
            self.prefixed("a", &f.cols),
            self.q(column),
            f.name
        );
        self.cte(body, cols)
    }

    fn filter(&mut self, f: &Frame, cond: &str) -> Frame {
        let body = format!("SELECT {} FROM {} WHERE {cond}", self.list(&f.cols), f.name);
        self.cte(body, f.cols.clone())
    }

    fn compile(&mut self, manifest: &Manifest) -> Result<String> {
        let plan = self.plan;
        let scan = self.scan(manifest, None)?;
        let (f, base) = self.rows(scan)?;
        let aggregated = plan.time.is_some() || !plan.keys.is_empty() || !plan.aggs.is_empty();
        if !aggregated {
            return self.listing(&f);
        }
        let f = self.aggregate(&f, manifest)?;
        self.measured(f, base)
    }

    /// The row stage over `f` (the polars compiler's `rows`): names, HS
    /// sections, exchange rates, derived columns, filters and group mappings.
    /// Returns the rows and the base rows before any group mapping.
    fn rows(&mut self, mut f: Frame) -> Result<(Frame, Frame)> {
        let plan = self.plan;
        let row_exprs: Vec<&RExpr> = plan.derives.iter().map(|(_, x)| x).chain(plan.row_filters.iter()).collect();
        f = self.with_names(&f, &name_dims(&row_exprs));
        if let Some(path) = &plan.hs_sections
            && uses_section(plan)
        {
            let table = self.group_file(path);
            let mut cols = f.cols.clone();
            cols.push("__section_product".into());
            let body = format!(
                "SELECT {}, g.{} AS {} FROM {} r LEFT JOIN {table} g ON substr(r.{}, 1, 2) = g.{}",
                self.prefixed("r", &f.cols),
                self.q("group"),
                self.q("__section_product"),
                f.name,
                self.q("product"),
                self.q("member")
            );
            f = self.cte(body, cols);
        }
        f = self.join_rates(f)?;
        let aliases: Vec<&str> = plan.groups.iter().map(|g| g.alias.as_str()).collect();
        let uses_alias = |x: &RExpr| aliases.iter().any(|a| x.mentions(a));
        for (name, x) in plan.derives.iter().filter(|(_, x)| !uses_alias(x)) {
            let e = self.expr(x)?;
            f = self.with_column(&f, &e, name);
        }
        self.unfiltered = Some(f.clone());
        for x in plan.row_filters.iter().filter(|x| !uses_alias(x)) {
            let e = self.expr(x)?;
            f = self.filter(&f, &e);
        }
        let base = f.clone();
        for g in &plan.groups {
            f = self.map_groups(&f, g);
        }
        for (name, x) in plan.derives.iter().filter(|(_, x)| uses_alias(x)) {
            let e = self.expr(x)?;
            f = self.with_column(&f, &e, name);
        }
        for x in plan.row_filters.iter().filter(|x| uses_alias(x)) {
            let e = self.expr(x)?;
            f = self.filter(&f, &e);
        }
        Ok((f, base))
    }

    /// The rest of `compile` (mirroring the polars compiler's `compile`): the
    /// aggregated rows `f` labelled, measured, filtered.
    fn measured(&mut self, mut f: Frame, base: Frame) -> Result<String> {
        let plan = self.plan;
        if let Some(t) = plan.time {
            let tq = self.q("__t");
            let label = match t {
                TimeKey::Year => format!("CAST(year({tq}) AS INT)"),
                TimeKey::Half => format!(
                    "concat(CAST(year({tq}) AS {s}), '-H', CASE WHEN month({tq}) <= 6 THEN '1' ELSE '2' END)",
                    s = self.d.text_type()
                ),
                TimeKey::Quarter => {
                    format!("concat(CAST(year({tq}) AS {s}), '-Q', CAST(quarter({tq}) AS {s}))", s = self.d.text_type())
                }
                TimeKey::Month => tq.clone(),
            };
            f = self.with_column(&f, &label, t.column());
        }
        if let Some((n, dim, by)) = &plan.top {
            f = self.top(&f, *n, dim, by, &base)?;
        } else {
            f = self.with_names(&f, &name_dims(&post_exprs(plan)));
            for (name, x) in &plan.post_derives {
                let (next, e) = self.measure_expr(&f, x, &base)?;
                f = self.with_column(&next, &e, name);
            }
            for o in &plan.outputs {
                let (next, e) = self.measure_expr(&f, &o.expr, &base)?;
                f = self.with_column(&next, &e, &o.name);
            }
            for x in &plan.post_filters {
                // Measures may be window functions: make the condition a column first.
                let (next, e) = self.measure_expr(&f, x, &base)?;
                let name = self.fresh("keep");
                let next = self.with_column(&next, &e, &name);
                let keep = self.q(&name);
                f = self.filter(&next, &keep);
            }
        }
        let mut names = plan.result_columns();
        names.extend(self.warnings.iter().map(|w| w.column.clone()));
        let by = plan.result_order();
        Ok(self.finish(&f, &names, &by))
    }

    /// The final SELECT: `names` of `f`, ordered by `by`, limited.
    fn finish(&mut self, f: &Frame, names: &[String], by: &[(String, bool)]) -> String {
        let mut text = String::new();
        if !self.ctes.is_empty() {
            let _ = writeln!(text, "WITH\n{}", self.ctes.join(",\n"));
        }
        let integers = self.plan.integer_columns();
        let select: Vec<String> = names
            .iter()
            .map(|n| {
                let q = self.q(n);
                if integers.contains(n) { format!("CAST({q} AS BIGINT) AS {q}") } else { q }
            })
            .collect();
        let _ = write!(text, "SELECT {}\nFROM {}", select.join(", "), f.name);
        if !by.is_empty() {
            let keys: Vec<String> = by
                .iter()
                .map(|(c, desc)| format!("{} {} NULLS LAST", self.q(c), if *desc { "DESC" } else { "ASC" }))
                .collect();
            let _ = write!(text, "\nORDER BY {}", keys.join(", "));
        }
        if let Some(n) = self.plan.limit {
            let _ = write!(text, "\nLIMIT {n}");
        }
        text.push('\n');
        text
    }

    /// The dataset's rows: exactly the files the manifest lists (a consistent
    /// snapshot even while an ingest writes new files), with the Hive `year`
    /// and the calendar columns; with `only`, the rows of those periods (days).
    fn scan(&mut self, manifest: &Manifest, only: Option<&[i32]>) -> Result<Frame> {
        if manifest.files.is_empty() {
            return Err(Error::store(format!("the dataset {} has no files", manifest.dataset)));
        }
        let stored: Vec<String> =
            STORED.iter().map(|c| c.to_string()).chain(manifest.measures.iter().map(|m| m.name.clone())).collect();
        let file = |p: &str| {
            format!("{}/{}", self.uri, crate::store::Store::dataset_rel(&manifest.dataset, &format!("files/{p}")))
        };
        let rows = match self.d {
            // One branch per file, its partition value a literal: Spark reads a
            // list of files without partition discovery, and folds a filter on
            // `year` to drop whole branches.
            Dialect::Spark => manifest
                .files
                .iter()
                .map(|f| {
                    format!(
                        "SELECT {}, {} AS {} FROM parquet.{}",
                        self.list(&stored),
                        f.year,
                        self.q("year"),
                        self.q(&file(&f.path))
                    )
                })
                .collect::<Vec<_>>()
                .join("\nUNION ALL "),
            Dialect::Duckdb => {
                let files: Vec<String> = manifest.files.iter().map(|f| self.d.string(&file(&f.path))).collect();
                format!(
                    "SELECT {}, CAST({y} AS INTEGER) AS {y} FROM read_parquet([{}], hive_partitioning = true)",
                    self.list(&stored),
                    files.join(", "),
                    y = self.q("year")
                )
            }
        };
        let rows = match only {
            Some(days) => {
                let dates: Vec<String> = days.iter().map(|d| format!("DATE '{}'", date_text(*d))).collect();
                format!("SELECT * FROM ({rows}) WHERE {} IN ({})", self.q("period"), dates.join(", "))
            }
            None => rows,
        };
        let mut cols = stored;
        cols.push("year".into());
        let rows = self.cte(rows, cols.clone());
        let p = self.q("period");
        let body = format!(
            "SELECT {}, CAST(quarter({p}) AS INT) AS {}, CAST(month({p}) AS INT) AS {} FROM {}",
            self.list(&cols),
            self.q("quarter"),
            self.q("month"),
            rows.name
        );
        cols.extend(["quarter".to_string(), "month".to_string()]);
        Ok(self.cte(body, cols))
    }

    /// `f` with a column `__name_DIM` for each of `dims`, from the names tables.
    fn with_names(&mut self, f: &Frame, dims: &[String]) -> Frame {
        let mut f = f.clone();
        for dim in dims {
            let Some((_, path)) = self.plan.names.iter().find(|(d, _)| d == dim) else { continue };
            let table = self.group_file(path);
            let column = name_column(dim);
            let mut cols = f.cols.clone();
            cols.push(column.clone());
            let body = format!(
                "SELECT {}, g.{} AS {} FROM {} r LEFT JOIN {table} g ON r.{} = g.{}",
                self.prefixed("r", &f.cols),
                self.q("name"),
                self.q(&column),
                f.name,
                self.q(dim),
                self.q("code")
            );
            f = self.cte(body, cols);
        }
        f
    }

    fn group_file(&self, path: &str) -> String {
        let file = format!("{}/{}/{path}", self.uri, crate::store::GROUPS_DIR);
        match self.d {
            Dialect::Spark => format!("parquet.{}", self.q(&file)),
            Dialect::Duckdb => format!("read_parquet({})", self.d.string(&file)),
        }
    }

    /// Each row joined to every group its member belongs to (groups overlap),
    /// membership as of the row's period or a fixed date.
    fn map_groups(&mut self, f: &Frame, g: &GroupMap) -> Frame {
        let table = self.group_file(&g.path);
        let when = match g.as_of {
            Some(d) => format!("DATE '{}'", date_text(d)),
            None => format!("r.{}", self.q("period")),
        };
        let (from, to) = (format!("m.{}", self.q("valid_from")), format!("m.{}", self.q("valid_to")));
        let mut cols = f.cols.clone();
        cols.push(g.alias.clone());
        let body = format!(
            "SELECT {}, m.{} AS {} FROM {} r JOIN {table} m ON r.{} = m.{}\n\
             WHERE ({from} IS NULL OR {from} <= {when}) AND ({to} IS NULL OR {to} >= {when})",
            self.prefixed("r", &f.cols),
            self.q("group"),
            self.q(&g.alias),
            f.name,
            self.q(&g.dim),
            self.q("member"),
        );
        self.cte(body, cols)
    }

    /// For each currency convert() targets, a column `__fx_<CUR>` (the factor
    /// from the dataset's currency at each row's period). The polars backend
    /// has already refused periods without a rate.
    fn join_rates(&mut self, f: Frame) -> Result<Frame> {
        let Some((path, source)) = &self.plan.rates else { return Ok(f) };
        let targets = convert_targets(self.plan, source);
        let table = self.group_file(path);
        let (period, currency, per_usd) = (self.q("period"), self.q("currency"), self.q("per_usd"));
        let d = self.d;
        let per_usd_of = |code: &str| -> String {
            if code == "USD" {
                format!("SELECT DISTINCT {period}, 1e0 AS v FROM {table}")
            } else {
                format!("SELECT {period}, {per_usd} AS v FROM {table} WHERE {currency} = {}", d.string(code))
            }
        };
        let mut f = f;
        for target in targets {
            let fx = fx_column(&target);
            let factors = format!(
                "SELECT a.{period}, {} AS {} FROM ({}) a JOIN ({}) b ON a.{period} = b.{period}",
                self.d.divide("b.v", "a.v"),
                self.q(&fx),
                per_usd_of(source),
                per_usd_of(&target)
            );
            f = self.join_column(&f, &factors, &fx, &format!("a.{period} = b.{period}"));
        }
        Ok(f)
    }

    fn listing(&mut self, f: &Frame) -> Result<String> {
        let plan = self.plan;
        let names: Vec<String> = if plan.outputs.is_empty() {
            let mut n: Vec<String> = LISTED.iter().map(|c| c.to_string()).collect();
            n.extend(plan.measures.iter().cloned());
            n.extend(plan.derives.iter().map(|(n, _)| n.clone()));
            n
        } else {
            let mut g = f.clone();
            for o in &plan.outputs {
                let e = self.expr(&o.expr)?;
                g = self.with_column(&g, &e, &o.name);
            }
            let names: Vec<String> = plan.outputs.iter().map(|o| o.name.clone()).collect();
            return Ok(self.finish(&g, &names, &plan.sort.clone()));
        };
        Ok(self.finish(f, &names, &plan.sort.clone()))
    }

    /// The grouping expression of a calendar roll-up, as the first day of
    /// each period (`__t`), over a relation with period and year columns.
    fn time_key(&self, t: TimeKey, r: &str) -> String {
        let p = format!("{r}{}", self.q("period"));
        if t.is(self.plan.frequency) {
            return p;
        }
        match t {
            TimeKey::Year => format!("make_date({r}{}, 1, 1)", self.q("year")),
            TimeKey::Half => format!("make_date(year({p}), CASE WHEN month({p}) <= 6 THEN 1 ELSE 7 END, 1)"),
            TimeKey::Quarter => format!("make_date(year({p}), (quarter({p}) - 1) * 3 + 1, 1)"),
            TimeKey::Month => format!("make_date(year({p}), month({p}), 1)"),
        }
    }

    fn aggregate(&mut self, f: &Frame, manifest: &Manifest) -> Result<Frame> {
        let plan = self.plan;
        let mut keys: Vec<String> = Vec::new();
        let mut cols: Vec<String> = Vec::new();
        if let Some(t) = plan.time {
            keys.push(self.time_key(t, ""));
            cols.push("__t".into());
        }
        keys.extend(plan.keys.iter().map(|k| self.q(k)));
        cols.extend(plan.keys.iter().cloned());
        let mut select: Vec<String> = keys.iter().zip(&cols).map(|(k, c)| format!("{k} AS {}", self.q(c))).collect();
        for a in &plan.aggs {
            let x = a.arg.as_deref().map(|c| self.q(c));
            let e = match (a.func, x) {
                (AggFunc::Sum, Some(x)) if a.name.starts_with("__uv_") => {
                    format!("COALESCE(SUM(CASE WHEN {} > 0 THEN {x} END), 0e0)", self.q("quantity"))
                }
                // A further measure's sum of no values is null, as SQL has it;
                // value and quantity sum none to 0, as polars does.
                (AggFunc::Sum, Some(x)) if sums_to_null(a) => format!("SUM({x})"),
                (AggFunc::Sum, Some(x)) => format!("COALESCE(SUM({x}), 0e0)"),
                (AggFunc::Mean, Some(x)) => format!("AVG({x})"),
                (AggFunc::Min, Some(x)) => format!("MIN({x})"),
                (AggFunc::Max, Some(x)) => format!("MAX({x})"),
                (AggFunc::Count, Some(x)) => format!("CAST(COUNT({x}) AS DOUBLE)"),
                (AggFunc::Count, None) => "CAST(COUNT(*) AS DOUBLE)".to_string(),
                // polars counts a null as one more distinct value; SQL skips it.
                (AggFunc::CountDistinct, Some(x)) => {
                    format!("CAST(COUNT(DISTINCT {x}) + MAX(CASE WHEN {x} IS NULL THEN 1 ELSE 0 END) AS DOUBLE)")
                }
                _ => return Err(Error::internal(format!("aggregate {} without a column", a.func.name()))),
            };
            select.push(format!("{e} AS {}", self.q(&a.name)));
            cols.push(a.name.clone());
        }
        let group_by = if keys.is_empty() { String::new() } else { format!(" GROUP BY {}", keys.join(", ")) };
        let mut out = self.cte(format!("SELECT {} FROM {}{group_by}", select.join(", "), f.name), cols);
        if let Some(t) = plan.time
            && !t.is(plan.frequency)
        {
            let column = self.fresh("wpartial");
            out = self.coverage(&out, manifest, t, &column)?;
            self.coverage = Some(column.clone());
            self.warnings.push(partial_warning(plan, t, column));
        }
        Ok(out)
    }

    /// Joins to each roll-up period how many of the dataset's stored periods
    /// fall in it and pass the filters that only look at the calendar (a
    /// partial year, or a year cut by the query's own period filter).
    fn coverage(&mut self, f: &Frame, manifest: &Manifest, t: TimeKey, column: &str) -> Result<Frame> {
        let periods: Vec<String> =
            manifest.period_values().iter().map(|p| format!("(DATE '{}')", date_text(p.days()))).collect();
        let p = self.q("period");
        let mut window = format!(
            "SELECT {p}, CAST(year({p}) AS INT) AS {}, CAST(quarter({p}) AS INT) AS {}, CAST(month({p}) AS INT) AS {} \
             FROM (VALUES {}) AS w({p})",
            self.q("year"),
            self.q("quarter"),
            self.q("month"),
            periods.join(", ")
        );
        let filters: Vec<String> =
            self.plan.row_filters.iter().filter_map(calendar_bound).map(|x| self.expr(&x)).collect::<Result<_>>()?;
        if !filters.is_empty() {
            window = format!("SELECT * FROM ({window}) w WHERE {}", filters.join(" AND "));
        }
        let key = self.time_key(t, "c.");
        let counts = format!(
            "SELECT {key} AS {}, CAST(COUNT(*) AS INT) AS {} FROM ({window}) c GROUP BY {key}",
            self.q("__t"),
            self.q(column)
        );
        let tq = self.q("__t");
        Ok(self.join_column(f, &counts, column, &format!("a.{tq} = b.{tq}")))
    }

    /// `top n DIM by COL`, as the polars backend computes it: measures on
    /// the full rows, then the members ranked below `n` in each period (ties
    /// by code) summed into "others", whose share and contribution are its
    /// members' sums and whose other measures are null.
    fn top(&mut self, f: &Frame, n: usize, dim: &str, by: &str, base: &Frame) -> Result<Frame> {
        let plan = self.plan;
        check_top_aggregates(plan)?;
        let named = name_dims(&post_exprs(plan));
        let mut f = self.with_names(f, &named);
        let mut folded = FoldedMeasures::default();
        let mut post_derives = Vec::new();
        for (name, x) in &plan.post_derives {
            let (next, rx) = self.hide_measures(&f, x, base, &mut folded)?;
            let e = self.expr(&rx)?;
            f = self.with_column(&next, &e, name);
            post_derives.push((name.clone(), rx));
        }
        let mut outputs = Vec::new();
        for o in &plan.outputs {
            // Shown columns too, for the measures of later ones (yoy(unit_value)).
            let (next, rx) = self.hide_measures(&f, &o.expr, base, &mut folded)?;
            let e = self.expr(&rx)?;
            f = self.with_column(&next, &e, &o.name);
            outputs.push((o.name.clone(), rx));
        }
        let mut filters = Vec::new();
        for x in &plan.post_filters {
            let (next, rx) = self.hide_measures(&f, x, base, &mut folded)?;
            f = next;
            filters.push(rx);
        }
        let mut keys: Vec<String> = Vec::new();
        if let Some(t) = plan.time {
            keys.extend(["__t".to_string(), t.column().to_string()]);
        }
        keys.extend(plan.keys.iter().cloned());
        let others_keys: Vec<String> = keys.iter().filter(|k| *k != dim).cloned().collect();
        let mut carried = keys.clone();
        carried.extend(plan.aggs.iter().map(|a| a.name.clone()));
        carried.extend(self.warnings.iter().map(|w| w.column.clone()));
        carried.extend(folded.summed.iter().cloned());
        carried.extend(folded.dropped.iter().cloned());
        let mut partition: Vec<String> = plan.time.iter().map(|_| self.q("__t")).collect();
        partition.extend(plan.keys.iter().filter(|k| *k != dim).map(|k| self.q(k)));
        let rank = format!(
            "ROW_NUMBER() OVER ({}ORDER BY {} DESC NULLS LAST, {} ASC)",
            partition_by(&partition),
            self.q(by),
            self.q(dim)
        );
        let ranked = self.with_column(&Frame { name: f.name.clone(), cols: carried.clone() }, &rank, "__top_rank");
        let members: Vec<String> = carried.iter().map(|c| self.q(c)).collect();
        let mut others: Vec<String> = Vec::new();
        for c in &carried {
            let q = self.q(c);
            let e = if c == dim {
                format!("{} AS {q}", self.d.string("others"))
            } else if others_keys.contains(c) {
                q
            } else if plan.aggs.iter().any(|a| a.name == *c && sums_to_null(a)) {
                format!("SUM({q}) AS {q}")
            } else if plan.aggs.iter().any(|a| a.name == *c) {
                format!("COALESCE(SUM({q}), 0e0) AS {q}")
            } else if folded.summed.contains(c) {
                // No member with the measure: null, as in polars.
                format!("SUM({q}) AS {q}")
            } else if folded.silenced.contains(c) {
                format!("FALSE AS {q}")
            } else if folded.dropped.contains(c) {
                format!("NULL AS {q}")
            } else {
                format!("MAX({q}) AS {q}")
            };
            others.push(e);
        }
        let flag = self.fresh("wothers");
        let dropped = if folded.dropped_names.is_empty() { "FALSE" } else { "TRUE" };
        let group_by =
            if others_keys.is_empty() { String::new() } else { format!(" GROUP BY {}", self.list(&others_keys)) };
        let (r, fq) = (self.q("__top_rank"), self.q(&flag));
        let body = format!(
            "SELECT {}, FALSE AS {fq} FROM {t} WHERE {r} <= {n}\n\
             UNION ALL\n\
             SELECT {}, {dropped} AS {fq} FROM {t} WHERE {r} > {n}{group_by}",
            members.join(", "),
            others.join(", "),
            t = ranked.name,
        );
        let mut cols = carried.clone();
        cols.push(flag.clone());
        let mut f = self.cte(body, cols);
        if !folded.dropped_names.is_empty() {
            self.warnings.push(WarningColumn {
                column: flag,
                kind: WarningKind::Others { measures: folded.dropped_names.join(", ") },
            });
        }
        let is_others = format!("({} = {})", self.q(dim), self.d.string("others"));
        f = self.with_column(&f, &is_others, "__is_others");
        f = self.with_names(&f, &named);
        for (name, rx) in &post_derives {
            let e = self.expr(rx)?;
            f = self.with_column(&f, &e, name);
        }
        for (name, rx) in &outputs {
            let e = self.expr(rx)?;
            f = self.with_column(&f, &e, name);
        }
        for rx in &filters {
            let e = self.expr(rx)?;
            f = self.filter(&f, &e);
        }
        Ok(f)
    }

    /// `x` with each measure in it (but unit_value) computed into a hidden
    /// column of `f`, and replaced by it (see the polars backend's).
    fn hide_measures(
        &mut self,
        f: &Frame,
        x: &RExpr,
        base: &Frame,
        folded: &mut FoldedMeasures,
    ) -> Result<(Frame, RExpr)> {
        let mut f = f.clone();
        let rx = x.replace_measures(&mut |node, m| {
            let before = self.warnings.len();
            let (next, e) = self.measure_expr(&f, node, base)?;
            let name = self.fresh("m");
            f = self.with_column(&next, &e, &name);
            let dim = self.plan.top.as_ref().map_or("", |(_, d, _)| d.as_str());
            folded.add(m, &name, node, self.warnings[before..].iter().map(|w| w.column.clone()), dim);
            Ok::<RExpr, Error>(RExpr::Col(name))
        })?;
        Ok((f, rx))
    }

    /// The period (when there is one) and the `within` columns: what a share
    /// or a rank is taken among.
    fn period_partition(&self, within: &[String]) -> Vec<String> {
        let mut part: Vec<String> = self.plan.time.iter().map(|_| self.q("__t")).collect();
        part.extend(within.iter().map(|w| self.q(w)));
        part
    }

    fn series_partition(&self) -> Vec<String> {
        self.plan.keys.iter().map(|k| self.q(k)).collect()
    }

    /// The ON condition that matches rows of `a` and `b` by `__t` and the keys.
    fn on_row_keys(&self, a: &str, b: &str) -> String {
        let mut on = vec![format!("{a}.{t} = {b}.{t}", t = self.q("__t"))];
        for k in &self.plan.keys {
            let k = self.q(k);
            on.push(self.d.same(&format!("{a}.{k}"), &format!("{b}.{k}")));
        }
        on.join(" AND ")
    }

    /// The total of `row_col` over the base rows (each stored row once) per
    /// calendar key `__t` (shifted `months` later) and `within` columns; a
    /// `within` group alias maps the base rows through that group alone.
    fn base_totals(&mut self, base: &Frame, within: &[String], row_col: &str, total: &str, months: i32) -> String {
        let mut rows = base.clone();
        for g in self.plan.groups.iter().filter(|g| within.contains(&g.alias)) {
            rows = self.map_groups(&rows, g);
        }
        let mut select = Vec::new();
        let mut group = Vec::new();
        if let Some(t) = self.plan.time {
            let key = self.time_key(t, "");
            let shifted = if months == 0 { key.clone() } else { self.d.add_months(&key, months) };
            select.push(format!("{shifted} AS {}", self.q("__t")));
            group.push(key);
        }
        for w in within {
            select.push(self.q(w));
            group.push(self.q(w));
        }
        select.push(format!("SUM({}) AS {}", self.q(row_col), self.q(total)));
        let group_by = if group.is_empty() { String::new() } else { format!(" GROUP BY {}", group.join(", ")) };
        format!("SELECT {} FROM {}{group_by}", select.join(", "), rows.name)
    }

    /// The rows a share or contribution divides by: the base rows, or the
    /// named aggregate row read with the query's filters but those on its
    /// dimension (as the polars backend does).
    fn total_rows(&mut self, base: &Frame, of: Option<&TotalRow>) -> Result<Frame> {
        let Some(of) = of else { return Ok(base.clone()) };
        let mut f = self.unfiltered.clone().ok_or_else(|| Error::internal("no rows for a total row"))?;
        let aliases: Vec<&str> = self.plan.groups.iter().map(|g| g.alias.as_str()).collect();
        for x in &self.plan.row_filters {
            if aliases.iter().any(|a| x.mentions(a)) {
                continue;
            }
            let Some(kept) = without_terms_on(x, &of.dim) else { continue };
            let e = self.expr(&kept)?;
            f = self.filter(&f, &e);
        }
        let cond = format!("{} = {}", self.q(&of.dim), self.d.string(&of.code));
        Ok(self.filter(&f, &cond))
    }

    /// The ON condition of a join with [`Sql::base_totals`]: `__t` and the `within` columns.
    fn on_time_within(&self, within: &[String]) -> String {
        let mut on: Vec<String> = self.plan.time.iter().map(|_| format!("a.{t} = b.{t}", t = self.q("__t"))).collect();
        for w in within {
            let w = self.q(w);
            on.push(self.d.same(&format!("a.{w}"), &format!("b.{w}")));
        }
        if on.is_empty() { "1 = 1".to_string() } else { on.join(" AND ") }
    }

    /// Joins the value of `column` from `months` earlier onto each row.
    /// Once per column and offset, as the polars backend does.
    fn previous(&mut self, f: &Frame, column: &str, months: i32) -> (Frame, String) {
        let key = (column.to_string(), months);
        if let Some(prev) = self.joined.get(&key)
            && f.cols.contains(prev)
        {
            return (f.clone(), prev.clone());
        }
        let prev = self.fresh("prev");
        self.joined.insert(key, prev.clone());
        let mut shifted = vec![format!("{} AS {}", self.d.add_months(&self.q("__t"), months), self.q("__t"))];
        shifted.extend(self.series_partition());
        shifted.push(format!("{} AS {}", self.q(column), self.q(&prev)));
        let shifted = format!("SELECT {} FROM {}", shifted.join(", "), f.name);
        let on = self.on_row_keys("a", "b");
        (self.join_column(f, &shifted, &prev, &on), prev)
    }

    /// Flags the rows whose comparison value `qp` (from `months` earlier) is
    /// null: missing, or stored but left out by the calendar filter (as the
    /// polars backend does).
    fn missing_base(&mut self, f: &Frame, qp: &str, months: i32, measure: String, offset: String) -> Frame {
        let Some((filter, cut)) = self.plan.cut.clone() else {
            return self.warn(f, &format!("({qp} IS NULL)"), WarningKind::MissingBase { measure, offset });
        };
        let base = self.d.add_months(&self.q("__t"), -months);
        let dates: Vec<String> = cut.iter().map(|d| format!("DATE '{}'", date_text(*d))).collect();
        let is_cut = format!("({base} IN ({}))", dates.join(", "));
        let kind = WarningKind::MissingBase { measure: measure.clone(), offset: offset.clone() };
        let f = self.warn(f, &format!("({qp} IS NULL AND NOT {is_cut})"), kind);
        self.warn(&f, &format!("({qp} IS NULL AND {is_cut})"), WarningKind::BaseFiltered { measure, offset, filter })
    }

    /// Flags the rows whose roll-up period holds a different number of the
    /// dataset's periods than the one `months` earlier that `measure`
    /// compares it with (as the polars backend does).
    fn unequal_periods(&mut self, f: &Frame, months: i32, measure: String, offset: String) -> Frame {
        let Some(coverage) = self.coverage.clone() else { return f.clone() };
        let (f, before) = self.previous(f, &coverage, months);
        let (now, then) = (self.q(&coverage), self.q(&before));
        let cond = format!("COALESCE({now} <> {then}, FALSE)");
        self.warn(&f, &cond, WarningKind::Unequal { measure, offset, unit: sub_periods(self.plan) })
    }

    /// Makes `x` a column of the frame (adding it when it is not a plain column).
    fn column_of(&mut self, f: &Frame, x: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        if let RExpr::Col(c) = x {
            return Ok((f.clone(), c.clone()));
        }
        let (next, e) = self.measure_expr(f, x, base)?;
        let name = self.fresh("m");
        Ok((self.with_column(&next, &e, &name), name))
    }

    /// Adds `expr` as a fresh column and returns it quoted: window functions
    /// then never nest, whatever expression later uses the measure.
    fn materialise(&mut self, f: &Frame, expr: &str, what: &str) -> (Frame, String) {
        let name = self.fresh(what);
        let next = self.with_column(f, expr, &name);
        let q = self.q(&name);
        (next, q)
    }

    fn warn(&mut self, f: &Frame, cond: &str, kind: WarningKind) -> Frame {
        let column = self.fresh(match kind {
            WarningKind::MissingBase { .. } => "wmiss",
            WarningKind::BaseFiltered { .. } => "wcut",
            WarningKind::YtdGap { .. } => "wytd",
            WarningKind::Partial { .. } => "wpartial",
            WarningKind::Unequal { .. } => "wunequal",
            WarningKind::Others { .. } => "wothers",
            WarningKind::NoTotalRow { .. } => "wnototal",
        });
        let next = self.with_column(f, cond, &column);
        self.warnings.push(WarningColumn { column, kind });
        next
    }

    /// Months since year 0 of a period start: consecutive periods of a
    /// roll-up differ by its length in months.
    fn month_index(&self) -> String {
        let t = self.q("__t");
        format!("(year({t}) * 12 + month({t}) - 1)")
    }

    fn window(&self, partition: &[String], frame: &str) -> String {
        format!("OVER ({}ORDER BY {} ASC {frame})", partition_by(partition), self.q("__t"))
    }

    /// Compiles an expression over aggregated rows, adding the CTEs its measures need.
    fn measure_expr(&mut self, f: &Frame, x: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        let RExpr::Measure(m) = x else {
            return self.compose(f, x, base);
        };
        let time = self.plan.time;
        let t_months = time.map_or(12, |t| t.months() as i32);
        let running = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW";
        Ok(match m.as_ref() {
            Measure::Yoy(_) | Measure::Pop(_) | Measure::Pp(_) | Measure::Versus { .. } => {
                let (a, back, how) = m.comparison().ok_or_else(|| Error::internal("not a comparison"))?;
                let (f, cx) = self.column_of(f, a, base)?;
                let months = back.months(t_months);
                let (f, prev) = self.previous(&f, &cx, months);
                let (qc, qp) = (self.q(&cx), self.q(&prev));
                let measure = m_text(m, a);
                let f = self.missing_base(&f, &qp, months, measure.clone(), back.text());
                let e = match how {
                    Compare::Points => format!("(({qc} - {qp}) * 1e2)"),
                    Compare::Change => format!("({qc} - {qp})"),
                    Compare::Growth => format!("({} - 1e0)", self.d.divide(&qc, &qp)),
                };
                (self.unequal_periods(&f, months, measure, back.text()), e)
            }
            Measure::Share(a, within, of) => {
                let (agg_name, row_col) = self.plan.sum_columns(a, "share")?;
                let qc = self.q(agg_name);
                if self.plan.groups.is_empty() && of.is_none() {
                    // Each base row is in one aggregated row: their sum is the base total.
                    let part = self.period_partition(within);
                    let (f, total) =
                        self.materialise(f, &format!("SUM({qc}) OVER ({})", partition_by(&part).trim_end()), "total");
                    return Ok((f, self.d.divide(&qc, &total)));
                }
                // Groups may overlap: divide by the total of the base rows.
                let total = self.fresh("total");
                let rows = self.total_rows(base, of.as_ref())?;
                let totals = self.base_totals(&rows, within, &row_col, &total, 0);
                let f = self.join_column(f, &totals, &total, &self.on_time_within(within));
                let f = match of {
                    Some(of) => {
                        let kind = WarningKind::NoTotalRow {
                            measure: m_text(m, a),
                            row: format!("{} = {:?}", of.dim, of.code),
                        };
                        self.warn(&f, &format!("({} IS NULL)", self.q(&total)), kind)
                    }
                    None => f,
                };
                (f, self.d.divide(&qc, &self.q(&total)))
            }
            Measure::Contribution(a, within, of) => {
                let (agg_name, row_col) = self.plan.sum_columns(a, "contribution")?;
                let (f, prev) = self.previous(f, agg_name, 12);
                // The total of the base rows (before group mapping: never a
                // sum of overlapping groups), or of the named aggregate row.
                let total = self.fresh("total");
                let rows = self.total_rows(base, of.as_ref())?;
                let totals = self.base_totals(&rows, within, &row_col, &total, 12);
                let f = self.join_column(&f, &totals, &total, &self.on_time_within(within));
                let qp = self.q(&prev);
                let f = self.missing_base(&f, &qp, 12, format!("contribution({agg_name})"), "a year before".into());
                let f = self.unequal_periods(&f, 12, format!("contribution({agg_name})"), "a year before".into());
                let growth = format!("({} - {qp})", self.q(agg_name));
                (f, format!("({} * 1e2)", self.d.divide(&growth, &self.q(&total))))
            }
            Measure::Ytd(a) => {
                let (f, cx) = self.column_of(f, a, base)?;
                let mut part = self.series_partition();
                part.push(format!("year({})", self.q("__t")));
                let qc = self.q(&cx);
                // polars' cumulative sum is null where its input is null.
                let ytd =
                    format!("CASE WHEN {qc} IS NULL THEN NULL ELSE SUM({qc}) {} END", self.window(&part, running));
                let seen = format!("COUNT(*) {}", self.window(&part, running));
                let expected = match time {
                    Some(TimeKey::Quarter) => format!("quarter({})", self.q("__t")),
                    _ => format!("month({})", self.q("__t")),
                };
                let kind = WarningKind::YtdGap { measure: format!("ytd({a})") };
                let f = self.warn(&f, &format!("({seen} <> {expected})"), kind);
                self.materialise(&f, &ytd, "ytd")
            }
            Measure::Rolling(a, n, mean) => {
                let (f, cx) = self.column_of(f, a, base)?;
                let (f, sum, count, _) = self.rolling(&f, &cx, *n, t_months);
                let total = if *mean { format!("({sum} / {})", num(*n as f64)) } else { sum };
                (f, format!("(CASE WHEN {count} = {n} THEN {total} END)"))
            }
            Measure::High(a, n) => {
                let (f, cx) = self.column_of(f, a, base)?;
                let (f, _, count, max) = self.rolling(&f, &cx, *n, t_months);
                (f, format!("(CASE WHEN {count} = {n} THEN {} >= {max} END)", self.q(&cx)))
            }
            Measure::Record(a) => {
                let (f, cx) = self.column_of(f, a, base)?;
                let qc = self.q(&cx);
                let part = self.series_partition();
                // polars: the running max shifted one row, null after a null.
                let earlier = format!(
                    "CASE WHEN LAG({qc}) {w} IS NULL THEN NULL ELSE MAX({qc}) {} END",
                    self.window(&part, "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"),
                    w = self.window(&part, "")
                );
                let (f, e) = self.materialise(&f, &earlier, "earlier");
                (f, format!("(CASE WHEN {e} IS NULL THEN NULL ELSE {qc} > {e} END)"))
            }
            Measure::Streak(cond) => {
                let (f, cb) = self.column_of(f, cond, base)?;
                let holds = format!("COALESCE({}, FALSE)", self.q(&cb));
                let part = self.series_partition();
                let index = self.month_index();
                let gap = format!("({index} - LAG({index}) {})", self.window(&part, ""));
                let brk = format!("(NOT {holds} OR COALESCE({gap} <> {t_months}, TRUE))");
                let (f, brk) = self.materialise(&f, &brk, "break");
                let run = format!("SUM(CASE WHEN {brk} THEN 1 ELSE 0 END) {}", self.window(&part, running));
                let (f, run) = self.materialise(&f, &run, "run");
                let mut run_part = part;
                run_part.push(run);
                let streak = format!(
                    "CAST(SUM(CASE WHEN {holds} THEN 1 ELSE 0 END) {} AS DOUBLE)",
                    self.window(&run_part, running)
                );
                self.materialise(&f, &streak, "streak")
            }
            Measure::Rank(a, within) => {
                let (f, cx) = self.column_of(f, a, base)?;
                let part = self.period_partition(within);
                let qc = self.q(&cx);
                // Competition ranking, as the polars backend: ties share the best rank.
                let rank = format!(
                    "CASE WHEN {qc} IS NULL THEN NULL ELSE CAST(RANK() OVER ({}ORDER BY {qc} DESC NULLS LAST) AS DOUBLE) END",
                    partition_by(&part),
                );
                self.materialise(&f, &rank, "rank")
            }
            Measure::UnitValue => (f.clone(), self.unit_value()),
            Measure::FirstRelease(a) => self.first_release(f, a, base)?,
        })
    }

    /// value / quantity over the rows that report a quantity.
    /// `a` as first published (the polars compiler's `first_release`): the
    /// row stage and aggregation over each version's first periods, joined.
    fn first_release(&mut self, f: &Frame, a: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        let mut parts = Vec::new();
        for (m, days) in &self.plan.first_releases {
            parts.push(self.scan(m, Some(days))?);
        }
        let Some(first) = parts.first().cloned() else {
            return Err(Error::internal("first_release() without the versions that first held each period"));
        };
        let union: Vec<String> =
            parts.iter().map(|p| format!("SELECT {} FROM {}", self.list(&first.cols), p.name)).collect();
        let scan = self.cte(union.join("\nUNION ALL "), first.cols.clone());
        // What a second row stage and aggregation would add is the first's.
        let kept = (self.warnings.len(), self.coverage.clone(), self.unfiltered.clone());
        let rows = self.rows(scan);
        let manifest = &self.plan.first_releases[0].0;
        let agg = rows.and_then(|(rows, _)| self.aggregate(&rows, manifest));
        self.warnings.truncate(kept.0);
        self.coverage = kept.1;
        self.unfiltered = kept.2;
        let (agg, cx) = self.column_of(&agg?, a, base)?;
        let name = self.fresh("first");
        let mut select = vec![self.q("__t")];
        select.extend(self.series_partition());
        select.push(format!("{} AS {}", self.q(&cx), self.q(&name)));
        let first = format!("SELECT {} FROM {}", select.join(", "), agg.name);
        let on = self.on_row_keys("a", "b");
        let f = self.join_column(f, &first, &name, &on);
        let q = self.q(&name);
        Ok((f, q))
    }

    fn unit_value(&self) -> String {
        let (v, q) = (self.q("__uv_value"), self.q("__uv_quantity"));
        format!("(CASE WHEN {q} > 0 THEN {} END)", self.d.divide(&v, &q))
    }

    /// Sum, count and max of `column` over the `n` periods up to each row,
    /// matched by calendar: a RANGE window over the month index, so a missing
    /// period is a gap in the window, not a row it slides over.
    fn rolling(&mut self, f: &Frame, column: &str, n: usize, t_months: i32) -> (Frame, String, String, String) {
        let qc = self.q(column);
        let part = self.series_partition();
        let over = format!(
            "OVER ({}ORDER BY {} RANGE BETWEEN {} PRECEDING AND CURRENT ROW)",
            partition_by(&part),
            self.month_index(),
            (n as i32 - 1) * t_months
        );
        let (f, sum) = self.materialise(f, &format!("SUM({qc}) {over}"), "wsum");
        let (f, count) = self.materialise(&f, &format!("COUNT({qc}) {over}"), "wcount");
        let (f, max) = self.materialise(&f, &format!("MAX({qc}) {over}"), "wmax");
        (f, sum, count, max)
    }

    /// An expression over aggregated rows that may contain measures anywhere.
    fn compose(&mut self, f: &Frame, x: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        Ok(match x {
            RExpr::Measure(_) => self.measure_expr(f, x, base)?,
            RExpr::Neg(a) => {
                let (f, e) = self.compose(f, a, base)?;
                (f, format!("(0e0 - {e})"))
            }
            RExpr::Not(a) => {
                let (f, e) = self.compose(f, a, base)?;
                (f, format!("(NOT {e})"))
            }
            RExpr::Bin(op, a, b) => {
                let (f, ea) = self.compose(f, a, base)?;
                let (f, eb) = self.compose(&f, b, base)?;
                (f, self.binary(*op, &ea, &eb))
            }
            RExpr::In(a, list) => {
                let (mut f, ea) = self.compose(f, a, base)?;
                let mut items = Vec::new();
                for item in list {
                    let (next, e) = self.compose(&f, item, base)?;
                    f = next;
                    items.push(e);
                }
                (f, format!("({ea} IN ({}))", items.join(", ")))
            }
            RExpr::Between(a, lo, hi, excl) => {
                let (f, ea) = self.compose(f, a, base)?;
                let (f, el) = self.compose(&f, lo, base)?;
                let (f, eh) = self.compose(&f, hi, base)?;
                (f, format!("({ea} >= {el} AND {ea} {} {eh})", if *excl { "<" } else { "<=" }))
            }
            RExpr::Calendar(c, a) => {
                let (f, e) = self.compose(f, a, base)?;
                (f, calendar(*c, &e))
            }
            RExpr::If(c, a, b) => {
                let (f, ec) = self.compose(f, c, base)?;
                let (f, ea) = self.compose(&f, a, base)?;
                let (f, eb) = self.compose(&f, b, base)?;
                (f, format!("(CASE WHEN {ec} THEN {ea} ELSE {eb} END)"))
            }
            other => (f.clone(), self.expr(other)?),
        })
    }

    /// A row-level expression (no measures).
    fn expr(&self, x: &RExpr) -> Result<String> {
        Ok(match x {
            RExpr::Num(n) => num(*n),
            RExpr::Str(s) => self.d.string(s),
            RExpr::Date(d) => format!("DATE '{}'", date_text(*d)),
            RExpr::Bool(b) => (if *b { "TRUE" } else { "FALSE" }).to_string(),
            RExpr::Col(c) => self.q(c),
            RExpr::Neg(a) => format!("(0e0 - {})", self.expr(a)?),
            RExpr::Not(a) => format!("(NOT {})", self.expr(a)?),
            RExpr::Bin(op, a, b) => self.binary(*op, &self.expr(a)?, &self.expr(b)?),
            RExpr::In(a, list) => {
                let items: Vec<String> = list.iter().map(|i| self.expr(i)).collect::<Result<_>>()?;
                format!("({} IN ({}))", self.expr(a)?, items.join(", "))
            }
            RExpr::IsCode(c, codes) => {
                let items: Vec<String> = codes.iter().map(|x| self.d.string(x)).collect();
                format!("COALESCE({} IN ({}), FALSE)", self.q(c), items.join(", "))
            }
            RExpr::Between(a, lo, hi, excl) => {
                let ea = self.expr(a)?;
                format!("({ea} >= {} AND {ea} {} {})", self.expr(lo)?, if *excl { "<" } else { "<=" }, self.expr(hi)?)
            }
            RExpr::Code(CodeFn::Chapter, a) => format!("substr({}, 1, 2)", self.expr(a)?),
            RExpr::Code(CodeFn::Heading, a) => format!("substr({}, 1, 4)", self.expr(a)?),
            RExpr::Code(CodeFn::Section, _) => self.q("__section_product"),
            RExpr::Code(CodeFn::Name, a) => match a.as_ref() {
                RExpr::Col(dim) => self.q(&name_column(dim)),
                _ => return Err(Error::internal("name() of no code column")),
            },
            RExpr::If(c, a, b) => {
                format!("(CASE WHEN {} THEN {} ELSE {} END)", self.expr(c)?, self.expr(a)?, self.expr(b)?)
            }
            RExpr::Calendar(c, a) => calendar(*c, &self.expr(a)?),
            RExpr::Convert(a, target) => match &self.plan.rates {
                Some((_, source)) if source == target => self.expr(a)?,
                _ => format!("({} * {})", self.expr(a)?, self.q(&fx_column(target))),
            },
            // A ratio of two aggregates (after `top`, of "others"' sums too).
            RExpr::Measure(m) if matches!(m.as_ref(), Measure::UnitValue) => self.unit_value(),
            RExpr::Measure(_) => return Err(Error::internal("a measure in a row expression")),
        })
    }

    fn binary(&self, op: BinOp, a: &str, b: &str) -> String {
        let sym = match op {
            BinOp::Div => return self.d.divide(a, b),
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Eq => "=",
            BinOp::Ne => "<>",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "AND",
            BinOp::Or => "OR",
        };
        format!("({a} {sym} {b})")
    }
}

fn partition_by(part: &[String]) -> String {
    if part.is_empty() { String::new() } else { format!("PARTITION BY {} ", part.join(", ")) }
}

fn calendar(f: CalendarFn, e: &str) -> String {
    let name = match f {
        CalendarFn::Year => "year",
        CalendarFn::Quarter => "quarter",
        CalendarFn::Month => "month",
    };
    format!("CAST({name}({e}) AS INT)")
}

fn date_text(days: i32) -> String {
    let (y, m, d) = crate::period::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_double_literals_in_both_dialects() {
        assert_eq!(num(2024.0), "2024e0");
        assert_eq!(num(4e12), "4e12");
        assert_eq!(num(0.5), "5e-1");
        assert_eq!(num(-1.25), "-1.25e0");
        assert_eq!(num(0.1), "1e-1");
    }

    #[test]
    fn strings_and_names_are_quoted_per_dialect() {
        assert_eq!(Dialect::Spark.string(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(Dialect::Duckdb.string(r"a'b\c"), r"'a''b\c'");
        assert_eq!(Dialect::Spark.ident("x`y"), "`x``y`");
        assert_eq!(Dialect::Duckdb.ident("x\"y"), "\"x\"\"y\"");
        assert_eq!(Dialect::Spark.same("a", "b"), "a <=> b");
        assert_eq!(Dialect::Duckdb.same("a", "b"), "a IS NOT DISTINCT FROM b");
    }
}
