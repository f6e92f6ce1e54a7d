//! The row stage in SQL, as `compile::rows`: the scan of the Parquet files,
//! names, group mappings, exchange rates, row expressions.

use super::*;

impl Sql<'_> {
    /// The row stage over `f` (the polars compiler's `rows`): names, HS
    /// sections, exchange rates, derived columns, filters and group mappings.
    /// Returns the rows and the base rows before any group mapping.
    pub(super) fn rows(&mut self, mut f: Frame) -> Result<(Frame, Frame)> {
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

    /// The dataset's rows: exactly the files the manifest lists (a consistent
    /// snapshot even while an ingest writes new files), with the Hive `year`
    /// and the calendar columns; with `only`, the rows of those periods (days).
    pub(super) fn scan(&mut self, manifest: &Manifest, only: Option<&[i32]>) -> Result<Frame> {
        if manifest.files.is_empty() {
            return Err(Error::store(format!("the dataset {} has no files", manifest.dataset)));
        }
        let stored: Vec<String> = match &manifest.view {
            // A rollup's columns (its `year` is the file's, as the rows').
            Some(_) => manifest.schema.iter().map(|c| c.name.clone()).filter(|c| c != "year").collect(),
            None => {
                STORED.iter().map(|c| c.to_string()).chain(manifest.measures.iter().map(|m| m.name.clone())).collect()
            }
        };
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
    pub(super) fn with_names(&mut self, f: &Frame, dims: &[String]) -> Frame {
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

    pub(super) fn group_file(&self, path: &str) -> String {
        let file = format!("{}/{}/{path}", self.uri, crate::store::GROUPS_DIR);
        match self.d {
            Dialect::Spark => format!("parquet.{}", self.q(&file)),
            Dialect::Duckdb => format!("read_parquet({})", self.d.string(&file)),
        }
    }

    /// Each row joined to every group its member belongs to (groups overlap),
    /// membership as of the row's period or a fixed date.
    pub(super) fn map_groups(&mut self, f: &Frame, g: &GroupMap) -> Frame {
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
    pub(super) fn join_rates(&mut self, f: Frame) -> Result<Frame> {
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

    /// A row-level expression (no measures).
    pub(super) fn expr(&self, x: &RExpr) -> Result<String> {
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

    pub(super) fn binary(&self, op: BinOp, a: &str, b: &str) -> String {
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

pub(super) fn calendar(f: CalendarFn, e: &str) -> String {
    let name = match f {
        CalendarFn::Year => "year",
        CalendarFn::Quarter => "quarter",
        CalendarFn::Month => "month",
    };
    format!("CAST({name}({e}) AS INT)")
}

pub(super) fn date_text(days: i32) -> String {
    let (y, m, d) = crate::period::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}
