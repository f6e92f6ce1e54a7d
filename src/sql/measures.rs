//! The measures in SQL, as `compile::measures`.

use super::*;

/// A share's or contribution's argument, `within` columns and named total row.
type Shared<'a> = (&'a RExpr, &'a Vec<String>, Option<&'a TotalRow>);

/// The window frame of running sums and counts.
const RUNNING: &str = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW";

impl Sql<'_> {
    /// The rest of `compile` (mirroring the polars compiler's `compile`): the
    /// aggregated rows `f` labelled, measured, filtered.
    pub(super) fn measured(&mut self, mut f: Frame, base: Frame) -> Result<String> {
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

    /// The total of `row_col` over the base rows (each stored row once) per
    /// calendar key `__t` (shifted `months` later) and `within` columns; a
    /// `within` group alias maps the base rows through that group alone.
    pub(super) fn base_totals(
        &mut self,
        base: &Frame,
        within: &[String],
        row_col: &str,
        total: &str,
        months: i32,
    ) -> String {
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
    pub(super) fn total_rows(&mut self, base: &Frame, of: Option<&TotalRow>) -> Result<Frame> {
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

    /// Makes `x` a column of the frame (adding it when it is not a plain column).
    pub(super) fn column_of(&mut self, f: &Frame, x: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        if let RExpr::Col(c) = x {
            return Ok((f.clone(), c.clone()));
        }
        let (next, e) = self.measure_expr(f, x, base)?;
        let name = self.fresh("m");
        Ok((self.with_column(&next, &e, &name), name))
    }

    /// Compiles an expression over aggregated rows, adding the CTEs its measures need.
    pub(super) fn measure_expr(&mut self, f: &Frame, x: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        let RExpr::Measure(m) = x else {
            return self.compose(f, x, base);
        };
        match m.as_ref() {
            Measure::Yoy(_) | Measure::Pop(_) | Measure::Pp(_) | Measure::Versus { .. } => self.comparison(f, m, base),
            Measure::Share(a, within, of) => self.share(f, m, (a, within, of.as_ref()), base),
            Measure::Contribution(a, within, of) => self.contribution(f, (a, within, of.as_ref()), base),
            Measure::Ytd(a) => self.ytd(f, a, base),
            Measure::Rolling(a, n, mean) => self.rolling(f, a, *n, *mean, base),
            Measure::High(a, n) => self.high(f, a, *n, base),
            Measure::Record(a) => self.record(f, a, base),
            Measure::Streak(cond) => self.streak(f, cond, base),
            Measure::Rank(a, within) => self.rank(f, a, within, base),
            Measure::UnitValue => Ok((f.clone(), self.unit_value())),
            Measure::FirstRelease(a) => self.first_release(f, a, base),
        }
    }

    /// The months of the query's roll-up period (12 without one).
    fn t_months(&self) -> i32 {
        self.plan.time.map_or(12, |t| t.months() as i32)
    }

    /// yoy, pop, pp and the comparisons n years or one period back, as `Compiler::comparison`.
    fn comparison(&mut self, f: &Frame, m: &Measure, base: &Frame) -> Result<(Frame, String)> {
        let t_months = self.t_months();
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
        Ok((self.unequal_periods(&f, months, measure, back.text()), e))
    }

    /// `share(...)`, as `Compiler::share`.
    fn share(&mut self, f: &Frame, m: &Measure, (a, within, of): Shared<'_>, base: &Frame) -> Result<(Frame, String)> {
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
        let rows = self.total_rows(base, of)?;
        let totals = self.base_totals(&rows, within, &row_col, &total, 0);
        let f = self.join_column(f, &totals, &total, &self.on_time_within(within));
        let f = match of {
            Some(of) => {
                let kind =
                    WarningKind::NoTotalRow { measure: m_text(m, a), row: format!("{} = {:?}", of.dim, of.code) };
                self.warn(&f, &format!("({} IS NULL)", self.q(&total)), kind)
            }
            None => f,
        };
        Ok((f, self.d.divide(&qc, &self.q(&total))))
    }

    /// `contribution(...)`, as `Compiler::contribution`.
    fn contribution(&mut self, f: &Frame, (a, within, of): Shared<'_>, base: &Frame) -> Result<(Frame, String)> {
        let (agg_name, row_col) = self.plan.sum_columns(a, "contribution")?;
        let (f, prev) = self.previous(f, agg_name, 12);
        // The total of the base rows (before group mapping: never a
        // sum of overlapping groups), or of the named aggregate row.
        let total = self.fresh("total");
        let rows = self.total_rows(base, of)?;
        let totals = self.base_totals(&rows, within, &row_col, &total, 12);
        let f = self.join_column(&f, &totals, &total, &self.on_time_within(within));
        let qp = self.q(&prev);
        let f = self.missing_base(&f, &qp, 12, format!("contribution({agg_name})"), "a year before".into());
        let f = self.unequal_periods(&f, 12, format!("contribution({agg_name})"), "a year before".into());
        let growth = format!("({} - {qp})", self.q(agg_name));
        Ok((f, format!("({} * 1e2)", self.d.divide(&growth, &self.q(&total)))))
    }

    /// `ytd(x)`, as `Compiler::ytd`.
    fn ytd(&mut self, f: &Frame, a: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        let time = self.plan.time;
        let (f, cx) = self.column_of(f, a, base)?;
        let mut part = self.series_partition();
        part.push(format!("year({})", self.q("__t")));
        let qc = self.q(&cx);
        // polars' cumulative sum is null where its input is null.
        let ytd = format!("CASE WHEN {qc} IS NULL THEN NULL ELSE SUM({qc}) {} END", self.window(&part, RUNNING));
        let seen = format!("COUNT(*) {}", self.window(&part, RUNNING));
        let expected = match time {
            Some(TimeKey::Quarter) => format!("quarter({})", self.q("__t")),
            _ => format!("month({})", self.q("__t")),
        };
        let kind = WarningKind::YtdGap { measure: format!("ytd({a})") };
        let f = self.warn(&f, &format!("({seen} <> {expected})"), kind);
        Ok(self.materialise(&f, &ytd, "ytd"))
    }

    /// `rolling(x, n)`, `rolling_mean(x, n)`, as `Compiler::rolling`.
    fn rolling(&mut self, f: &Frame, a: &RExpr, n: usize, mean: bool, base: &Frame) -> Result<(Frame, String)> {
        let t_months = self.t_months();
        let (f, cx) = self.column_of(f, a, base)?;
        let (f, sum, count, _) = self.last_periods(&f, &cx, n, t_months);
        let total = if mean { format!("({sum} / {})", num(n as f64)) } else { sum };
        Ok((f, format!("(CASE WHEN {count} = {n} THEN {total} END)")))
    }

    /// `high(x, n)`, as `Compiler::high`.
    fn high(&mut self, f: &Frame, a: &RExpr, n: usize, base: &Frame) -> Result<(Frame, String)> {
        let t_months = self.t_months();
        let (f, cx) = self.column_of(f, a, base)?;
        let (f, _, count, max) = self.last_periods(&f, &cx, n, t_months);
        Ok((f, format!("(CASE WHEN {count} = {n} THEN {} >= {max} END)", self.q(&cx))))
    }

    /// `record(x)`, as `Compiler::record`.
    fn record(&mut self, f: &Frame, a: &RExpr, base: &Frame) -> Result<(Frame, String)> {
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
        Ok((f, format!("(CASE WHEN {e} IS NULL THEN NULL ELSE {qc} > {e} END)")))
    }

    /// `streak(cond)`, as `Compiler::streak`.
    fn streak(&mut self, f: &Frame, cond: &RExpr, base: &Frame) -> Result<(Frame, String)> {
        let t_months = self.t_months();
        let (f, cb) = self.column_of(f, cond, base)?;
        let holds = format!("COALESCE({}, FALSE)", self.q(&cb));
        let part = self.series_partition();
        let index = self.month_index();
        let gap = format!("({index} - LAG({index}) {})", self.window(&part, ""));
        let brk = format!("(NOT {holds} OR COALESCE({gap} <> {t_months}, TRUE))");
        let (f, brk) = self.materialise(&f, &brk, "break");
        let run = format!("SUM(CASE WHEN {brk} THEN 1 ELSE 0 END) {}", self.window(&part, RUNNING));
        let (f, run) = self.materialise(&f, &run, "run");
        let mut run_part = part;
        run_part.push(run);
        let streak =
            format!("CAST(SUM(CASE WHEN {holds} THEN 1 ELSE 0 END) {} AS DOUBLE)", self.window(&run_part, RUNNING));
        Ok(self.materialise(&f, &streak, "streak"))
    }

    /// `rank(x [within D])`, as `Compiler::rank`.
    fn rank(&mut self, f: &Frame, a: &RExpr, within: &[String], base: &Frame) -> Result<(Frame, String)> {
        let (f, cx) = self.column_of(f, a, base)?;
        let part = self.period_partition(within);
        let qc = self.q(&cx);
        // Competition ranking, as the polars backend: ties share the best rank.
        let rank = format!(
            "CASE WHEN {qc} IS NULL THEN NULL ELSE CAST(RANK() OVER ({}ORDER BY {qc} DESC NULLS LAST) AS DOUBLE) END",
            partition_by(&part),
        );
        Ok(self.materialise(&f, &rank, "rank"))
    }

    /// value / quantity over the rows that report a quantity.
    /// `a` as first published (the polars compiler's `first_release`): the
    /// row stage and aggregation over each version's first periods, joined.
    pub(super) fn first_release(&mut self, f: &Frame, a: &RExpr, base: &Frame) -> Result<(Frame, String)> {
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

    pub(super) fn unit_value(&self) -> String {
        let (v, q) = (self.q("__uv_value"), self.q("__uv_quantity"));
        format!("(CASE WHEN {q} > 0 THEN {} END)", self.d.divide(&v, &q))
    }

    /// Sum, count and max of `column` over the `n` periods up to each row,
    /// matched by calendar: a RANGE window over the month index, so a missing
    /// period is a gap in the window, not a row it slides over.
    pub(super) fn last_periods(
        &mut self,
        f: &Frame,
        column: &str,
        n: usize,
        t_months: i32,
    ) -> (Frame, String, String, String) {
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
    pub(super) fn compose(&mut self, f: &Frame, x: &RExpr, base: &Frame) -> Result<(Frame, String)> {
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
}

pub(super) fn partition_by(part: &[String]) -> String {
    if part.is_empty() { String::new() } else { format!("PARTITION BY {} ", part.join(", ")) }
}
