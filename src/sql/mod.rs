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
//!
//! The files mirror `lang::compile`'s, with the same names and the same
//! methods: `rows`, `group`, `calendar`, `measures`, `top`; `Sql::compile`
//! and `Compiler::compile` take the same steps in the same order.

mod calendar;
pub mod engine;
mod group;
mod measures;
mod rows;
mod top;

use measures::*;
use rows::*;

use crate::error::{Error, Result};
use crate::lang::ast::BinOp;
use crate::lang::compile::{
    FoldedMeasures, ResultShape, TopHidden, WarningColumn, WarningKind, calendar_bound, check_top_aggregates,
    convert_targets, fx_column, m_text, name_column, name_dims, partial_warning, post_exprs, sub_periods, sums_to_null,
    uses_section, without_terms_on,
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
    plan_to_sql(&loaded.plan, loaded.read.as_ref().unwrap_or(&loaded.manifest), dialect, &uri)
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
