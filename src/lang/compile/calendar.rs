//! The calendar: which stored periods a query reaches, how many of the
//! dataset's periods each roll-up period holds, and the joins on the calendar
//! key that find a comparison period by its date (a missing one is a null and
//! a warning, never a neighbour).

use super::*;

impl Compiler<'_> {
    /// The dataset's stored periods (with year, quarter and month) that pass
    /// the query's calendar-only filters: what the query can touch.
    pub(super) fn calendar_window(&self, manifest: &Manifest) -> Result<LazyFrame> {
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
    pub(super) fn coverage(&self, manifest: &Manifest, t: TimeKey, column: &str) -> Result<LazyFrame> {
        let lf = self.calendar_window(manifest)?;
        let counted =
            lf.group_by([time_group(t, self.plan.frequency)]).agg([len().cast(DataType::UInt32).alias(column)]);
        Ok(with_calendar_key(counted, Some(t), self.plan.frequency))
    }

    /// `__t` plus the keys: what identifies a row of the aggregated frame.
    pub(super) fn row_keys(&self) -> Vec<Expr> {
        let mut keys = vec![col("__t")];
        keys.extend(self.plan.keys.iter().map(|k| col(k.as_str())));
        keys
    }

    /// The period (when there is one) and the `within` columns: what a share
    /// or a rank is taken among.
    pub(super) fn period_partition(&self, within: &[String]) -> Vec<Expr> {
        let mut part: Vec<Expr> = self.plan.time.iter().map(|_| col("__t")).collect();
        part.extend(within.iter().map(|w| col(w.as_str())));
        part
    }

    pub(super) fn series_partition(&self) -> Vec<Expr> {
        self.plan.keys.iter().map(|k| col(k.as_str())).collect()
    }

    /// Joins the value of `column` from `months` earlier onto each row, as `__prevN`.
    ///
    /// Once per column and offset: `yoy(total)` and `change(total)`, or the
    /// coverage counts of several measures, share one join (each join makes
    /// the plan deeper).
    pub(super) fn previous(&mut self, lf: LazyFrame, column: &str, months: i32) -> (LazyFrame, String) {
        let key = (column.to_string(), months);
        if let Some(prev) = self.joined.get(&key) {
            return (lf, prev.clone());
        }
        let prev = self.fresh("prev");
        self.joined.insert(key, prev.clone());
        // Found by lookup (`exec::series`); polars' self-join where the rows
        // are not one per series and month.
        let keys = self.plan.keys.clone();
        let fallback: series::Fallback = {
            let (partition, on) = (self.series_partition(), self.row_keys());
            let (column, prev) = (column.to_string(), prev.clone());
            Arc::new(move |lf: LazyFrame| {
                let mut select = vec![col("__t").dt().offset_by(lit(offset(months))).alias("__t")];
                select.extend(partition.iter().cloned());
                select.push(col(column.as_str()).alias(prev.as_str()));
                let shifted = lf.clone().select(select);
                lf.join(shifted, on.clone(), on.clone(), join_args())
            })
        };
        (series::earlier(lf, keys, column.to_string(), months, prev.clone(), fallback), prev)
    }

    /// Flags the rows whose comparison value `prev` (from `months` earlier)
    /// is null: the period is missing, or it is stored but the query's
    /// calendar filter leaves it out (then the warning names the filter).
    pub(super) fn missing_base(
        &mut self,
        lf: LazyFrame,
        prev: &str,
        months: i32,
        measure: String,
        offset: String,
    ) -> LazyFrame {
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
    pub(super) fn total_row_present(
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
    pub(super) fn unequal_periods(&mut self, lf: LazyFrame, months: i32, measure: String, offset: String) -> LazyFrame {
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

    /// Sum, count and max of `column` over the `n` periods up to each row,
    /// matched by calendar: each row is spread to the `n` periods it belongs to.
    /// How many periods of `t_months` months the stored calendar spans,
    /// first to last stored period (at least 1).
    pub(super) fn stored_span(&self, t_months: i32) -> usize {
        let periods = self.manifest.period_values();
        let (Some(first), Some(last)) = (periods.first(), periods.last()) else { return 1 };
        let month = |p: &crate::period::Period| i64::from(p.year) * 12 + i64::from(p.month) - 1;
        let months = month(last) - month(first) + i64::from(self.manifest.frequency.months());
        (months / i64::from(t_months.max(1)) + 1).max(1) as usize
    }

    pub(super) fn last_periods(
        &mut self,
        lf: LazyFrame,
        column: &str,
        n: usize,
        t_months: i32,
    ) -> (LazyFrame, String, String, String) {
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
pub(super) fn start_of(days: i32, t: TimeKey) -> i32 {
    let (y, m, _) = crate::period::civil_from_days(days);
    let first = match t {
        TimeKey::Year => 1,
        TimeKey::Half => (m - 1) / 6 * 6 + 1,
        TimeKey::Quarter => (m - 1) / 3 * 3 + 1,
        TimeKey::Month => m,
    };
    crate::period::days_from_civil(y, first, 1)
}

pub(super) fn date_lit(days: i32) -> Expr {
    lit(days).cast(DataType::Date)
}

pub(super) fn months_of(t: TimeKey) -> i32 {
    t.months() as i32
}

pub(super) fn offset(months: i32) -> String {
    format!("{months}mo")
}

/// The column that labels each row's roll-up period `t`, from the calendar
/// key `__t`: `year` (a number), `half` (`2024-H1`), `quarter` (`2024-Q4`),
/// `period` (the date).
pub(super) fn period_label(t: TimeKey) -> Expr {
    match t {
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
    }
}
