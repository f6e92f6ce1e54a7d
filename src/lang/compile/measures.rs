//! The measures on the aggregated rows: growth, shares, contributions, pp
//! changes, year-to-date, rolling windows, ranks, records, streaks, unit values
//! and first releases, each as an expression over joined or windowed columns.

use super::*;

/// A share's or contribution's argument, `within` columns and named total row.
type Shared<'a> = (&'a RExpr, &'a Vec<String>, Option<&'a TotalRow>);

impl Compiler<'_> {
    /// `a` as first published: the query's row stage and aggregation over
    /// each period's rows in the first kept version that held the period
    /// (the versions up to the one the query reads), joined on the keys.
    pub(super) fn first_release(&mut self, lf: LazyFrame, a: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let manifest = self.manifest;
        let (rows, _) = self.rows(self.source.first_releases(&self.plan.first_releases)?)?;
        // A second aggregation of other files: by polars, and what it would
        // add to the query's warnings and pushdown report is the first's.
        let kept = (self.warnings.len(), self.coverage.clone(), self.polars_rows, self.pushed_down.len());
        let sharing = self.source.set_sharing(false);
        self.by_file_year = false;
        let first = with_pushdown(false, || self.aggregate(rows, manifest));
        self.by_file_year = true;
        self.source.set_sharing(sharing);
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

    /// Makes `x` a column of `lf` (adding it when it is not a plain column).
    pub(super) fn column_of(&mut self, lf: LazyFrame, x: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, String)> {
        if let RExpr::Col(c) = x {
            return Ok((lf, c.clone()));
        }
        let (lf, e) = self.measure_expr(lf, x, base)?;
        if let Expr::Column(c) = &e {
            // A measure that is a column already (ytd).
            return Ok((lf, c.to_string()));
        }
        let name = self.fresh("m");
        Ok((lf.with_column(e.alias(name.as_str())), name))
    }

    /// The derived columns, outputs and filters after `by` over the
    /// aggregated rows `lf` (with the names they show).
    pub(super) fn measured(&mut self, lf: LazyFrame, base: &LazyFrame) -> Result<LazyFrame> {
        let plan = self.plan;
        let mut lf = self.with_names(lf, &name_dims(&post_exprs(plan)))?;
        for (name, x) in &plan.post_derives {
            let (next, e) = self.measure_expr(lf, x, base)?;
            lf = next.with_column(e.alias(name.as_str()));
        }
        for o in &plan.outputs {
            let (next, e) = self.measure_expr(lf, &o.expr, base)?;
            lf = next.with_column(e.alias(o.name.as_str()));
        }
        for x in &plan.post_filters {
            let (next, e) = self.measure_expr(lf, x, base)?;
            lf = next.filter(e);
        }
        Ok(lf)
    }

    /// Compiles an expression over aggregated rows, adding the joins and
    /// windows its measures need to `lf`: one method per measure.
    pub(super) fn measure_expr(&mut self, lf: LazyFrame, x: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let RExpr::Measure(m) = x else {
            return self.compose(lf, x, base);
        };
        let t_months = self.t_months();
        match m.as_ref() {
            Measure::Yoy(_) | Measure::Pop(_) | Measure::Pp(_) | Measure::Versus { .. } => self.comparison(lf, m, base),
            Measure::Share(a, within, of) => self.share(lf, m, (a, within, of.as_ref()), base),
            Measure::Contribution(a, within, of) => self.contribution(lf, (a, within, of.as_ref()), base),
            Measure::Ytd(a) => self.ytd(lf, a, base),
            // A window longer than the stored calendar is never complete:
            // null throughout, without spreading the rows over it.
            Measure::Rolling(_, n, _) if *n > self.stored_span(t_months) => Ok((lf, lit(NULL).cast(DataType::Float64))),
            Measure::High(_, n) if *n > self.stored_span(t_months) => Ok((lf, lit(NULL).cast(DataType::Boolean))),
            Measure::Rolling(a, n, mean) => self.rolling(lf, a, *n, *mean, base),
            Measure::High(a, n) => self.high(lf, a, *n, base),
            Measure::Record(a) => self.record(lf, a, base),
            Measure::Streak(cond) => self.streak(lf, cond, base),
            Measure::Rank(a, within) => self.rank(lf, a, within, base),
            Measure::UnitValue => Ok((lf, unit_value())),
            Measure::FirstRelease(a) => self.first_release(lf, a, base),
        }
    }

    /// The months of the query's roll-up period (12 without one).
    fn t_months(&self) -> i32 {
        self.plan.time.map_or(12, months_of)
    }

    /// yoy, pop, pp and the comparisons `yoy(x, n)`, `change`, `pop_change`,
    /// `pop_pp`: the value and the one `back` earlier, joined by calendar key.
    fn comparison(&mut self, lf: LazyFrame, m: &Measure, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let t_months = self.t_months();
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
        Ok((self.unequal_periods(lf, months, measure, back.text()), e))
    }

    /// `share(x [within D] [, D = "CODE"])`: x over the period's total of the
    /// base rows (or of the named aggregate row).
    fn share(
        &mut self,
        lf: LazyFrame,
        m: &Measure,
        (a, within, of): Shared<'_>,
        base: &LazyFrame,
    ) -> Result<(LazyFrame, Expr)> {
        let time = self.plan.time;
        let (agg_name, row_col) = self.plan.sum_columns(a, "share")?;
        let part = self.period_partition(within);
        if self.plan.groups.is_empty() && of.is_none() {
            // Without group mapping every base row is in exactly one
            // aggregated row, so their sum over the period is the
            // base rows' total (bit for bit the same sums).
            let total =
                if part.is_empty() { col(agg_name.as_str()).sum() } else { col(agg_name.as_str()).sum().over(part)? };
            return Ok((lf, col(agg_name.as_str()) / total));
        }
        // Groups may overlap: divide by the total of the base rows
        // (or of the named aggregate row).
        let total = self.fresh("total");
        let totals = self.totals(base, within, &row_col, &total, of)?;
        let mut on: Vec<Expr> = time.iter().map(|_| col("__t")).collect();
        on.extend(within.iter().map(|w| col(w.as_str())));
        let (lf, totals, on) = if on.is_empty() {
            // One total: join it to every row through a constant key.
            (lf.with_column(lit(1).alias("__one")), totals.with_column(lit(1).alias("__one")), vec![col("__one")])
        } else {
            (lf, totals, on)
        };
        let lf = lf.join(totals, on.clone(), on, join_args());
        let lf = self.total_row_present(lf, &total, m, a, of);
        Ok((lf, col(agg_name.as_str()) / col(total.as_str())))
    }

    /// `contribution(x)`: the change on a year before over the total a year
    /// before, × 100.
    fn contribution(
        &mut self,
        lf: LazyFrame,
        (a, within, of): Shared<'_>,
        base: &LazyFrame,
    ) -> Result<(LazyFrame, Expr)> {
        let (agg_name, row_col) = self.plan.sum_columns(a, "contribution")?;
        let (lf, prev) = self.previous(lf, agg_name, 12);
        // The total of the base rows (before group mapping: never a
        // sum of overlapping groups), or of the named aggregate row.
        let total = self.fresh("total");
        let totals =
            self.totals(base, within, &row_col, &total, of)?.with_column(col("__t").dt().offset_by(lit("12mo")));
        let mut on = vec![col("__t")];
        on.extend(within.iter().map(|w| col(w.as_str())));
        let lf = lf.join(totals, on.clone(), on, join_args());
        let lf = self.missing_base(lf, &prev, 12, format!("contribution({agg_name})"), "a year before".into());
        let lf = self.unequal_periods(lf, 12, format!("contribution({agg_name})"), "a year before".into());
        Ok((lf, (col(agg_name.as_str()) - col(prev.as_str())) / col(total.as_str()) * lit(100.0)))
    }

    /// `ytd(x)`: the sum from the year's first period through this one, with a
    /// warning where a period of the year is missing.
    fn ytd(&mut self, lf: LazyFrame, a: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let time = self.plan.time;
        let (lf, cx) = self.column_of(lf, a, base)?;
        let quarterly = matches!(time, Some(TimeKey::Quarter));
        let (ytd, flag) = (self.fresh("ytd"), self.fresh("wytd"));
        // One pass per series (`exec::series`); polars' ordered windows where
        // the rows are not one per series and month.
        let keys = self.plan.keys.clone();
        let mut part = self.series_partition();
        part.push(col("__t").dt().year());
        let sum = ordered_window(col(cx.as_str()).cum_sum(false), part.clone(), col("__t"), false)?;
        let seen = ordered_window(col("__t").cum_count(false), part, col("__t"), false)?;
        let expected = if quarterly { col("__t").dt().quarter() } else { col("__t").dt().month() };
        let windows = [
            sum.alias(ytd.as_str()),
            seen.cast(DataType::UInt32).neq(expected.cast(DataType::UInt32)).alias(flag.as_str()),
        ];
        let fallback: series::Fallback = Arc::new(move |lf: LazyFrame| lf.with_columns(windows.clone()));
        let lf = series::year_to_date(lf, keys, cx, (ytd.clone(), flag.clone()), quarterly, fallback);
        self.warnings.push(WarningColumn {
            column: flag,
            kind: WarningKind::YtdGap { measure: format!("ytd({})", display_arg(a)) },
        });
        Ok((lf, col(ytd.as_str())))
    }

    /// `rolling(x, n)`, `rolling_mean(x, n)`: null unless all n periods exist.
    fn rolling(
        &mut self,
        lf: LazyFrame,
        a: &RExpr,
        n: usize,
        mean: bool,
        base: &LazyFrame,
    ) -> Result<(LazyFrame, Expr)> {
        let t_months = self.t_months();
        let (lf, cx) = self.column_of(lf, a, base)?;
        let (lf, sum, count, _) = self.last_periods(lf, &cx, n, t_months);
        let total = if mean { col(sum.as_str()) / lit(n as f64) } else { col(sum.as_str()) };
        Ok((lf, when(col(count.as_str()).eq(lit(n as u32))).then(total).otherwise(lit(NULL))))
    }

    /// `high(x, n)`: x is the largest of the last n periods (null unless all exist).
    fn high(&mut self, lf: LazyFrame, a: &RExpr, n: usize, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let t_months = self.t_months();
        let (lf, cx) = self.column_of(lf, a, base)?;
        let (lf, _, count, max) = self.last_periods(lf, &cx, n, t_months);
        Ok((
            lf,
            when(col(count.as_str()).eq(lit(n as u32)))
                .then(col(cx.as_str()).gt_eq(col(max.as_str())))
                .otherwise(lit(NULL)),
        ))
    }

    /// `record(x)`: x above every earlier period of its series.
    fn record(&mut self, lf: LazyFrame, a: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let (lf, cx) = self.column_of(lf, a, base)?;
        let earlier =
            ordered_window(col(cx.as_str()).cum_max(false).shift(lit(1)), self.series_partition(), col("__t"), false)?;
        let name = self.fresh("earlier");
        let lf = lf.with_column(earlier.alias(name.as_str()));
        Ok((lf, when(col(name.as_str()).is_null()).then(lit(NULL)).otherwise(col(cx.as_str()).gt(col(name.as_str())))))
    }

    /// `streak(cond)`: consecutive periods up to this one for which cond holds.
    fn streak(&mut self, lf: LazyFrame, cond: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
        let t_months = self.t_months();
        let (lf, cb) = self.column_of(lf, cond, base)?;
        let holds = col(cb.as_str()).fill_null(lit(false));
        let index = (col("__t").dt().year().cast(DataType::Int32) * lit(12)
            + col("__t").dt().month().cast(DataType::Int32)
            - lit(1))
            / lit(t_months);
        let part = self.series_partition();
        let gap = ordered_window(index.clone() - index.shift(lit(1)), part.clone(), col("__t"), false)?;
        let brk = self.fresh("break");
        let lf = lf.with_column((holds.clone().not().or(gap.neq(lit(1)).fill_null(lit(true)))).alias(brk.as_str()));
        let run = self.fresh("run");
        let lf = lf.with_column(
            ordered_window(col(brk.as_str()).cast(DataType::Int32).cum_sum(false), part.clone(), col("__t"), false)?
                .alias(run.as_str()),
        );
        let mut run_part = part;
        run_part.push(col(run.as_str()));
        Ok((
            lf,
            ordered_window(holds.cast(DataType::Int32).cum_sum(false), run_part, col("__t"), false)?
                .cast(DataType::Float64),
        ))
    }

    /// `rank(x [within D])`: competition ranking, 1 the largest in the period.
    fn rank(&mut self, lf: LazyFrame, a: &RExpr, within: &[String], base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
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
        Ok((lf, when(col(cx.as_str()).is_null()).then(lit(NULL)).otherwise(rank).cast(DataType::Float64)))
    }

    /// The total of `row_col` over the base rows (filtered, before any group
    /// mapping, so each stored row counts once) per calendar key `__t` (when
    /// the query has one) and `within` columns, as column `total`. A `within`
    /// column that is a group alias maps the base rows through that group
    /// alone (each row once per group it belongs to).
    pub(super) fn totals(
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
    pub(super) fn sum_by_period(&self, rows: LazyFrame, within: &[String], row_col: &str, total: &str) -> LazyFrame {
        let mut keys: Vec<Expr> = self.plan.time.map(|t| time_group(t, self.plan.frequency)).into_iter().collect();
        keys.extend(within.iter().map(|w| col(w.as_str())));
        let sum = col(row_col).sum().alias(total);
        if keys.is_empty() { rows.select([sum]) } else { rows.group_by(keys).agg([sum]) }
    }

    pub(super) fn base_totals(
        &mut self,
        base: &LazyFrame,
        within: &[String],
        row_col: &str,
        total: &str,
    ) -> Result<LazyFrame> {
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

    /// An expression over aggregated rows that may contain measures anywhere.
    pub(super) fn compose(&mut self, lf: LazyFrame, x: &RExpr, base: &LazyFrame) -> Result<(LazyFrame, Expr)> {
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
}

pub(super) fn ordered_window(e: Expr, partition: Vec<Expr>, order: Expr, descending: bool) -> Result<Expr> {
    let sort = SortOptions { descending, nulls_last: true, ..Default::default() };
    let part = if partition.is_empty() { None } else { Some(partition) };
    Ok(e.over_with_options(part, Some((vec![order], sort)), WindowMapping::default())?)
}

/// value / quantity over the rows that report a quantity.
pub(super) fn unit_value() -> Expr {
    when(col("__uv_quantity").gt(lit(0.0))).then(col("__uv_value") / col("__uv_quantity")).otherwise(lit(NULL))
}
