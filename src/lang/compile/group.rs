//! The aggregation: rows grouped by the calendar key `__t` and the keys, by
//! member first when groups are mapped as of a date; answered by the aggregate
//! pushdown (`exec::pushdown`) where it can, else by polars, a year's files at a
//! time for a year roll-up.

use super::*;
use crate::exec::combine::{OrderedSum, ordered_sums};

impl Compiler<'_> {
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
    pub(super) fn group_rows(
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
            let rollup = manifest.view.is_some();
            let aggs: Option<Vec<pushdown::Agg>> = self.plan.aggs.iter().map(|a| pushdown_agg(a, rollup)).collect();
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
    pub(super) fn pushed_down(
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
        let text = spec.describe();
        let lf = self.source.pushed_down(manifest, spec)?;
        if !self.pushed_down.contains(&text) {
            self.pushed_down.push(text);
        }
        Some(lf)
    }

    /// A row filter as the pushdown evaluates it: on the values of one stored
    /// text column, or on the calendar (period, year, quarter, month). None
    /// for a filter that reads anything else (values, derived columns, two
    /// code columns at once, exchange rates, sections).
    pub(super) fn pushdown_filter(&self, x: &RExpr, manifest: &Manifest) -> Option<pushdown::RowFilter> {
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
    pub(super) fn group_rows_polars(
        &mut self,
        lf: LazyFrame,
        keys: Vec<Expr>,
        aggs: Vec<Expr>,
        manifest: &Manifest,
        time: Option<TimeKey>,
    ) -> Result<LazyFrame> {
        let by_file_year = self.by_file_year && time == Some(TimeKey::Year) && self.plan.frequency != Frequency::Year;
        if !by_file_year {
            return Ok(self.source.grouped(lf.group_by(keys).agg(aggs)));
        }
        let mut years: Vec<i32> = manifest.files.iter().map(|f| f.year).collect();
        years.sort_unstable();
        years.dedup();
        let rest: Vec<Expr> = keys[1..].to_vec();
        let mut parts: Vec<LazyFrame> = Vec::new();
        for &y in &years {
            let scan = self.source.year(manifest, y)?;
            let (rows, _) = self.rows(scan)?;
            let grouped = if rest.is_empty() {
                // A year whose rows are all filtered out has no group.
                let mut with_count = aggs.clone();
                with_count.push(len().alias("__rows"));
                rows.select(with_count).filter(col("__rows").gt(lit(0))).drop(cols(["__rows"]))
            } else {
                rows.group_by(rest.clone()).agg(aggs.clone())
            };
            let grouped = self.source.grouped(grouped);
            parts.push(grouped.with_column(lit(y).alias("__year")));
        }
        Ok(concat(parts, UnionArgs::default())?)
    }

    pub(super) fn aggregate(&mut self, lf: LazyFrame, manifest: &Manifest) -> Result<LazyFrame> {
        let plan = self.plan;
        let mut keys: Vec<Expr> = Vec::new();
        if let Some(t) = plan.time {
            keys.push(time_group(t, plan.frequency));
        }
        keys.extend(plan.keys.iter().map(|k| col(k.as_str())));
        let aggs = agg_exprs(plan, manifest.view.is_some());
        if keys.is_empty() {
            self.polars_rows = true;
            return Ok(lf.select(aggs));
        }
        let grouped = if pre_aggregates(plan) || !code_keys(plan).is_empty() {
            self.group_fine_then_combine(lf, aggs, manifest)?
        } else {
            self.group_rows(lf, keys, &plan.keys, aggs, manifest, plan.time)?
        };
        let out = with_calendar_key(grouped, plan.time, plan.frequency);
        match plan.time {
            Some(t) if !t.is(plan.frequency) => self.with_coverage(out, manifest, t),
            _ => Ok(out),
        }
    }

    /// The aggregation by finer keys first, then combined.
    fn group_fine_then_combine(&mut self, lf: LazyFrame, aggs: Vec<Expr>, manifest: &Manifest) -> Result<LazyFrame> {
        let plan = self.plan;
        let code_keys = code_keys(plan);
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
            fine = fine
                .with_columns([col("__t").alias("period"), col("__t").dt().year().cast(DataType::Int32).alias("year")]);
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
        let combine = combine_exprs(plan);
        // The finer rows in one order (that of their keys), so that the
        // sums add them in the same order on every run: the same bytes.
        // (Already in it when the pushdown grouped them without nulls:
        // then not sorted again.)
        let fine = exec::series::in_order(fine, fine_order.iter().map(|k| (k.clone(), false)).collect());
        let mut keys: Vec<String> = time_name.iter().map(|n| n.to_string()).collect();
        keys.extend(plan.keys.iter().cloned());
        let sums_only = plan.aggs.iter().all(|a| !matches!(a.func, AggFunc::Min | AggFunc::Max));
        if !keys.is_empty() && sums_only && cut_as_read(plan, &code_keys, manifest) {
            // Each finer row is a group already (a rollup by chapter(product)
            // read by chapter): each sum is its one row added to 0, as the
            // combine would add it.
            let mut select: Vec<Expr> = keys.iter().map(|k| col(k.as_str())).collect();
            select.extend(plan.aggs.iter().map(|a| {
                let x = col(a.name.as_str()).cast(DataType::Float64);
                let none = if sums_to_null(a) { lit(NULL).cast(DataType::Float64) } else { lit(0.0) };
                when(x.clone().is_null()).then(none).otherwise(lit(0.0) + x).alias(a.name.as_str())
            }));
            return Ok(fine.select(select));
        }
        if !keys.is_empty() && sums_only {
            // Sums only: added in that order by the combine node, the same
            // bits as `combine_exprs` in a fraction of the time.
            let sums = plan
                .aggs
                .iter()
                .map(|a| OrderedSum { column: a.name.clone(), null_when_empty: sums_to_null(a) })
                .collect();
            return Ok(ordered_sums(fine, keys, sums));
        }
        Ok(fine.group_by_stable(final_keys).agg(combine))
    }

    /// `out` with the count of stored periods in each roll-up period `t`, and
    /// the warning on partial periods that reads it.
    fn with_coverage(&mut self, out: LazyFrame, manifest: &Manifest, t: TimeKey) -> Result<LazyFrame> {
        let plan = self.plan;
        // A partial period is one the dataset does not fully cover
        // within the query's calendar window: count the stored periods
        // (the manifest's) that pass the calendar-only filters.
        let column = self.fresh("wpartial");
        let counts = self.coverage(manifest, t, &column)?;
        let out = out.join(counts, [col("__t")], [col("__t")], join_args());
        self.coverage = Some(column.clone());
        self.warnings.push(partial_warning(plan, t, column));
        Ok(out)
    }
}

/// The aggregates of the plan as polars expressions over the rows (or,
/// with `rollup`, over a rollup's rows: sums of sums, sums of counts, ...).
fn agg_exprs(plan: &Plan, rollup: bool) -> Vec<Expr> {
    plan.aggs
        .iter()
        .map(|a| {
            if rollup && let Some((func, c)) = crate::rollup::over_rollup(a) {
                let c = col(c.as_str());
                let e = match func {
                    pushdown::AggFunc::Min => c.min(),
                    pushdown::AggFunc::Max => c.max(),
                    _ if sums_to_null(a) => null_when_empty(c),
                    _ => c.sum(),
                };
                return e.alias(a.name.as_str());
            }
            let arg = a.arg.as_deref().map(col);
            let e = match (a.func, arg) {
                (AggFunc::Sum, Some(x)) if a.name.starts_with("__uv_") => x.filter(col("quantity").gt(lit(0.0))).sum(),
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
        .collect()
}

/// How the aggregates of finer grouped rows combine into the plan's.
fn combine_exprs(plan: &Plan) -> Vec<Expr> {
    plan.aggs
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
        .collect()
}

/// The grouping expression of a calendar roll-up. A roll-up to the data's own
/// frequency groups by `period` as it is; a roll-up to years groups by the Hive
/// `year` of the files (an integer, no date arithmetic on every row); other
/// roll-ups truncate `period`. [`with_calendar_key`] turns the result into `__t`.
pub(super) fn time_group(t: TimeKey, data: Frequency) -> Expr {
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

/// The sum of `x`, null when `x` has no value in the group.
pub(super) fn null_when_empty(x: Expr) -> Expr {
    when(x.clone().count().gt(lit(0))).then(x.sum()).otherwise(lit(NULL).cast(DataType::Float64))
}

/// `a` as the pushdown computes it (over a rollup's rows with `rollup`).
pub(super) fn pushdown_agg(a: &Agg, rollup: bool) -> Option<pushdown::Agg> {
    use pushdown::AggFunc as P;
    if sums_to_null(a) {
        return None; // the pass sums no values to 0
    }
    if rollup {
        let (func, column) = crate::rollup::over_rollup(a)?;
        return Some(pushdown::Agg { name: a.name.clone(), func, column: Some(column) });
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

/// Whether the query reads a rollup that keeps each column of `code_keys`
/// cut to what the key cuts (`chapter(product)` from a rollup by
/// `chapter(product)`), and maps no groups: then each of the rollup's
/// groups by period and codes is one of the query's.
fn cut_as_read(plan: &Plan, code_keys: &[(String, RExpr)], manifest: &Manifest) -> bool {
    let kept = |f: &CodeFn| match f {
        CodeFn::Chapter => Some(2),
        CodeFn::Heading => Some(4),
        _ => None,
    };
    plan.groups.is_empty()
        && !code_keys.is_empty()
        && code_keys.iter().all(|(_, x)| match x {
            RExpr::Code(f, inner) => match inner.as_ref() {
                RExpr::Col(c) => manifest.view_cuts.iter().any(|(v, n)| v == c && Some(*n) == kept(f)),
                _ => false,
            },
            _ => false,
        })
}

/// Whether every aggregate composes: a sum of sums, a sum of counts, a min of mins.
pub(super) fn aggregates_compose(plan: &Plan) -> bool {
    plan.aggs.iter().all(|a| matches!(a.func, AggFunc::Sum | AggFunc::Count | AggFunc::Min | AggFunc::Max))
}

/// The keys derived as chapter() or heading() of a single column, with their
/// expressions: when the aggregates compose, the rows are grouped by that
/// column and the key is cut from the grouped rows (no group mapping involved).
pub(super) fn code_keys(plan: &Plan) -> Vec<(String, RExpr)> {
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
pub(super) fn row_group_keys(plan: &Plan) -> Vec<String> {
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
pub(super) fn time_column(t: TimeKey, data: Frequency) -> &'static str {
    if t == TimeKey::Year && data != Frequency::Year { "__year" } else { "__t" }
}

/// Whether the rows can be aggregated by member before they are mapped to
/// groups (by period, for memberships as of each row's period): no row stage reads a group,
/// and every aggregate composes (a sum of sums, a sum of counts, a min of mins).
pub(super) fn pre_aggregates(plan: &Plan) -> bool {
    let aliases: Vec<&str> = plan.groups.iter().map(|g| g.alias.as_str()).collect();
    let reads_group = |x: &RExpr| aliases.iter().any(|a| x.mentions(a));
    !plan.groups.is_empty()
        && !plan.derives.iter().any(|(_, x)| reads_group(x))
        && !plan.row_filters.iter().any(reads_group)
        && (plan.time.is_some() || !plan.keys.is_empty())
        && aggregates_compose(plan)
}

/// The calendar key of the dataset's own periods.
pub(super) fn own_key(data: Frequency) -> TimeKey {
    match data {
        Frequency::Month => TimeKey::Month,
        Frequency::Quarter => TimeKey::Quarter,
        Frequency::Year => TimeKey::Year,
    }
}

/// After grouping by [`time_group`]: the first day of each roll-up period as `__t`.
pub(super) fn with_calendar_key(lf: LazyFrame, t: Option<TimeKey>, data: Frequency) -> LazyFrame {
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
