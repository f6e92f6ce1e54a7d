//! The row stage: calendar columns, names, HS sections, exchange rates, derived
//! columns, row filters and group mappings, and row expressions.

use super::*;

impl Compiler<'_> {
    /// The row stage over `scan`: calendar columns, aggregate rows left out,
    /// HS sections, exchange rates, derived columns and filters, then the
    /// group mappings (unless the rows are aggregated by member first).
    /// Returns the rows, and the base rows before any group mapping (what
    /// contributions divide by).
    pub(super) fn rows(&self, scan: LazyFrame) -> Result<(LazyFrame, LazyFrame)> {
        self.rows_where(scan, &|x| Some(x.clone()))
    }

    /// [`Compiler::rows`] with each row filter replaced by what `filter`
    /// makes of it (None: left out).
    pub(super) fn rows_where(
        &self,
        scan: LazyFrame,
        filter: &dyn Fn(&RExpr) -> Option<RExpr>,
    ) -> Result<(LazyFrame, LazyFrame)> {
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

    /// `lf` with a column `__name_DIM` for each of `dims`: the names table's
    /// name of the row's code (null for a code it does not name).
    pub(super) fn with_names(&self, lf: LazyFrame, dims: &[String]) -> Result<LazyFrame> {
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

    pub(super) fn group_table(&self, path: &str) -> Result<LazyFrame> {
        self.source.table(path)
    }

    /// Each row joined to every group its member belongs to (groups overlap),
    /// membership as of the row's period or a fixed date.
    pub(super) fn map_groups(&self, lf: LazyFrame, g: &GroupMap) -> Result<LazyFrame> {
        Ok(join_groups(lf, self.group_table(&g.path)?, &g.dim, &g.alias, g.as_of))
    }

    /// For each currency that convert() targets, a column `__fx_<CUR>`: the
    /// factor from the dataset's currency at each row's period. A period the
    /// query can touch that has no rate is an error here, before any data is
    /// read: a missing rate would otherwise be a silent null in a sum.
    pub(super) fn rate_factors(&self, manifest: &Manifest) -> Result<Vec<(String, LazyFrame)>> {
        let Some((path, source)) = &self.plan.rates else { return Ok(Vec::new()) };
        let targets = convert_targets(self.plan, source);
        let rates = self.source.table(path)?;
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

    /// A row-level expression (no measures).
    pub(super) fn expr(&self, x: &RExpr) -> Result<Expr> {
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

pub(super) fn binary(op: BinOp, a: Expr, b: Expr) -> Expr {
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

pub(super) fn calendar(f: CalendarFn, e: Expr) -> Expr {
    match f {
        CalendarFn::Year => e.dt().year(),
        CalendarFn::Quarter => e.dt().quarter(),
        CalendarFn::Month => e.dt().month(),
    }
    .cast(DataType::Int32)
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

/// The conjunction of `exprs` as one balanced tree (None for none): one
/// filter node however many `where` lines a query has, and an expression
/// whose depth grows with the logarithm of their number, not the number.
pub(super) fn all_of(exprs: Vec<Expr>) -> Option<Expr> {
    balanced(exprs, Expr::and)
}

/// `exprs` joined pairwise by `join`, level by level: a tree of depth
/// log2(n) where a fold would be n deep (polars recurses over expressions).
pub(super) fn balanced(mut exprs: Vec<Expr>, join: fn(Expr, Expr) -> Expr) -> Option<Expr> {
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
pub(super) fn set_lookup(x: &Expr, list: &[RExpr]) -> Option<Expr> {
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
pub(super) fn any_equal(x: Expr, items: Vec<Expr>) -> Expr {
    balanced(items.into_iter().map(|e| x.clone().eq(e)).collect(), Expr::or).unwrap_or(lit(false))
}
