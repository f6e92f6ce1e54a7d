//! The aggregation in SQL, as `compile::group`: `GROUP BY` the calendar key
//! `__t` and the keys.

use super::*;

impl Sql<'_> {
    /// The grouping expression of a calendar roll-up, as the first day of
    /// each period (`__t`), over a relation with period and year columns.
    pub(super) fn time_key(&self, t: TimeKey, r: &str) -> String {
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

    pub(super) fn aggregate(&mut self, f: &Frame, manifest: &Manifest) -> Result<Frame> {
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
            let over_rollup = if manifest.view.is_some() { crate::rollup::over_rollup(a) } else { None };
            // Over a rollup's rows: sums of sums, sums of counts, minimums of minimums.
            if let Some((func, c)) = over_rollup {
                let c = self.q(&c);
                let e = match func {
                    crate::exec::pushdown::AggFunc::Min => format!("MIN({c})"),
                    crate::exec::pushdown::AggFunc::Max => format!("MAX({c})"),
                    _ if sums_to_null(a) => format!("SUM({c})"),
                    _ => format!("COALESCE(SUM({c}), 0e0)"),
                };
                select.push(format!("{e} AS {}", self.q(&a.name)));
                cols.push(a.name.clone());
                continue;
            }
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
}
