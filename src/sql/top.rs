//! `top N DIM by COL` in SQL, as `compile::top`.

use super::*;

impl Sql<'_> {
    /// `top n DIM by COL`, as the polars backend computes it: measures on
    /// the full rows, then the members ranked below `n` in each period (ties
    /// by code) summed into "others", whose share and contribution are its
    /// members' sums and whose other measures are null.
    pub(super) fn top(&mut self, f: &Frame, n: usize, dim: &str, by: &str, base: &Frame) -> Result<Frame> {
        check_top_aggregates(self.plan)?;
        let named = name_dims(&post_exprs(self.plan));
        let f = self.with_names(f, &named);
        let (f, hidden) = self.measures_before_fold(f, base)?;
        let (ranked, keys, carried) = self.rank_members(&f, dim, by, &hidden.folded);
        let f = self.fold_others(&ranked, n, dim, &keys, &carried, &hidden.folded);
        let is_others = format!("({} = {})", self.q(dim), self.d.string("others"));
        let f = self.with_column(&f, &is_others, "__is_others");
        let mut f = self.with_names(&f, &named);
        for (name, rx) in &hidden.post_derives {
            let e = self.expr(rx)?;
            f = self.with_column(&f, &e, name);
        }
        for (name, rx) in &hidden.outputs {
            let e = self.expr(rx)?;
            f = self.with_column(&f, &e, name);
        }
        for rx in &hidden.filters {
            let e = self.expr(rx)?;
            f = self.filter(&f, &e);
        }
        Ok(f)
    }

    /// As `Compiler::measures_before_fold`.
    fn measures_before_fold(&mut self, f: Frame, base: &Frame) -> Result<(Frame, TopHidden)> {
        let plan = self.plan;
        let mut f = f;
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
        Ok((f, TopHidden { folded, post_derives, outputs, filters }))
    }

    /// As `Compiler::rank_members`: `__top_rank` by `by` in each period, ties
    /// by the code of `dim`; with the key columns and the columns carried.
    fn rank_members(
        &mut self,
        f: &Frame,
        dim: &str,
        by: &str,
        folded: &FoldedMeasures,
    ) -> (Frame, Vec<String>, Vec<String>) {
        let plan = self.plan;
        let mut keys: Vec<String> = Vec::new();
        if let Some(t) = plan.time {
            keys.extend(["__t".to_string(), t.column().to_string()]);
        }
        keys.extend(plan.keys.iter().cloned());
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
        (ranked, keys, carried)
    }

    /// As `Compiler::fold_others`: the members ranked within `n`, then one
    /// row "others" per period (`UNION ALL`).
    fn fold_others(
        &mut self,
        ranked: &Frame,
        n: usize,
        dim: &str,
        keys: &[String],
        carried: &[String],
        folded: &FoldedMeasures,
    ) -> Frame {
        let others_keys: Vec<String> = keys.iter().filter(|k| *k != dim).cloned().collect();
        let members: Vec<String> = carried.iter().map(|c| self.q(c)).collect();
        let others = self.others_columns(dim, &others_keys, carried, folded);
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
        let mut cols = carried.to_vec();
        cols.push(flag.clone());
        let f = self.cte(body, cols);
        if !folded.dropped_names.is_empty() {
            self.warnings.push(WarningColumn {
                column: flag,
                kind: WarningKind::Others { measures: folded.dropped_names.join(", ") },
            });
        }
        f
    }

    /// As `Compiler::others_sums`: each carried column of the row "others".
    fn others_columns(
        &self,
        dim: &str,
        others_keys: &[String],
        carried: &[String],
        folded: &FoldedMeasures,
    ) -> Vec<String> {
        let plan = self.plan;
        let mut others: Vec<String> = Vec::new();
        for c in carried {
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
        others
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
