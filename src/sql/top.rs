//! `top N DIM by COL` in SQL, as `compile::top`.

use super::*;

impl Sql<'_> {
    /// `top n DIM by COL`, as the polars backend computes it: measures on
    /// the full rows, then the members ranked below `n` in each period (ties
    /// by code) summed into "others", whose share and contribution are its
    /// members' sums and whose other measures are null.
    pub(super) fn top(&mut self, f: &Frame, n: usize, dim: &str, by: &str, base: &Frame) -> Result<Frame> {
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
    pub(super) fn hide_measures(
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
}
