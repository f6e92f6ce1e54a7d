//! The calendar in SQL, as `compile::calendar`: coverage of roll-up periods
//! and the self-joins on the calendar key that find a comparison period.

use super::*;

impl Sql<'_> {
    /// Joins to each roll-up period how many of the dataset's stored periods
    /// fall in it and pass the filters that only look at the calendar (a
    /// partial year, or a year cut by the query's own period filter).
    pub(super) fn coverage(&mut self, f: &Frame, manifest: &Manifest, t: TimeKey, column: &str) -> Result<Frame> {
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

    /// The period (when there is one) and the `within` columns: what a share
    /// or a rank is taken among.
    pub(super) fn period_partition(&self, within: &[String]) -> Vec<String> {
        let mut part: Vec<String> = self.plan.time.iter().map(|_| self.q("__t")).collect();
        part.extend(within.iter().map(|w| self.q(w)));
        part
    }

    pub(super) fn series_partition(&self) -> Vec<String> {
        self.plan.keys.iter().map(|k| self.q(k)).collect()
    }

    /// The ON condition that matches rows of `a` and `b` by `__t` and the keys.
    pub(super) fn on_row_keys(&self, a: &str, b: &str) -> String {
        let mut on = vec![format!("{a}.{t} = {b}.{t}", t = self.q("__t"))];
        for k in &self.plan.keys {
            let k = self.q(k);
            on.push(self.d.same(&format!("{a}.{k}"), &format!("{b}.{k}")));
        }
        on.join(" AND ")
    }

    /// The ON condition of a join with [`Sql::base_totals`]: `__t` and the `within` columns.
    pub(super) fn on_time_within(&self, within: &[String]) -> String {
        let mut on: Vec<String> = self.plan.time.iter().map(|_| format!("a.{t} = b.{t}", t = self.q("__t"))).collect();
        for w in within {
            let w = self.q(w);
            on.push(self.d.same(&format!("a.{w}"), &format!("b.{w}")));
        }
        if on.is_empty() { "1 = 1".to_string() } else { on.join(" AND ") }
    }

    /// Joins the value of `column` from `months` earlier onto each row.
    /// Once per column and offset, as the polars backend does.
    pub(super) fn previous(&mut self, f: &Frame, column: &str, months: i32) -> (Frame, String) {
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
    pub(super) fn missing_base(&mut self, f: &Frame, qp: &str, months: i32, measure: String, offset: String) -> Frame {
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
    pub(super) fn unequal_periods(&mut self, f: &Frame, months: i32, measure: String, offset: String) -> Frame {
        let Some(coverage) = self.coverage.clone() else { return f.clone() };
        let (f, before) = self.previous(f, &coverage, months);
        let (now, then) = (self.q(&coverage), self.q(&before));
        let cond = format!("COALESCE({now} <> {then}, FALSE)");
        self.warn(&f, &cond, WarningKind::Unequal { measure, offset, unit: sub_periods(self.plan) })
    }

    /// Months since year 0 of a period start: consecutive periods of a
    /// roll-up differ by its length in months.
    pub(super) fn month_index(&self) -> String {
        let t = self.q("__t");
        format!("(year({t}) * 12 + month({t}) - 1)")
    }

    pub(super) fn window(&self, partition: &[String], frame: &str) -> String {
        format!("OVER ({}ORDER BY {} ASC {frame})", partition_by(partition), self.q("__t"))
    }
}
