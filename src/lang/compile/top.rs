//! `top N DIM by COL`: the members ranked below N in each period folded into
//! one row "others", after every measure is computed on the full series.

use super::*;

impl Compiler<'_> {
    /// `top n DIM by COL`: every measure is computed on the full rows (each
    /// member's own series, whether or not it was in the top the year
    /// before), then the members ranked below `n` in each period (ties by
    /// code) are summed into one row "others". In that row the aggregates and
    /// the measures that add up (share, contribution) are the sums of its
    /// members'; expressions without measures are computed on the sums; the
    /// other measures (growth, rank, records, ...) are null, with a warning:
    /// its members change from period to period. Post-filters are applied
    /// after the fold.
    pub(super) fn top(&mut self, lf: LazyFrame, n: usize, dim: &str, by: &str, base: &LazyFrame) -> Result<LazyFrame> {
        check_top_aggregates(self.plan)?;
        let named = name_dims(&post_exprs(self.plan));
        // Measures on the full rows, each into a hidden column.
        let lf = self.with_names(lf, &named)?;
        let (lf, hidden) = self.measures_before_fold(lf, base)?;
        let (ranked, keys, carried) = self.rank_members(lf, dim, by, &hidden.folded)?;
        let lf = self.fold_others(ranked, n, dim, &keys, &carried, &hidden.folded)?;
        let mut lf = self.with_names(lf.with_column(col(dim).eq(lit("others")).alias("__is_others")), &named)?;
        // The shown columns, from the folded rows.
        for (name, rx) in &hidden.post_derives {
            lf = lf.with_column(self.expr(rx)?.alias(name.as_str()));
        }
        for (name, rx) in &hidden.outputs {
            lf = lf.with_column(self.expr(rx)?.alias(name.as_str()));
        }
        for rx in &hidden.filters {
            lf = lf.filter(self.expr(rx)?);
        }
        Ok(lf)
    }

    /// Every measure of the derived columns, outputs and filters after `by`,
    /// computed on the full rows into hidden columns of `lf`; what is left of
    /// each is an expression on aggregates and hidden columns.
    fn measures_before_fold(&mut self, lf: LazyFrame, base: &LazyFrame) -> Result<(LazyFrame, TopHidden)> {
        let plan = self.plan;
        let mut lf = lf;
        let mut folded = FoldedMeasures::default();
        let mut post_derives = Vec::new();
        for (name, x) in &plan.post_derives {
            let (next, rx) = self.hide_measures(lf, x, base, &mut folded)?;
            lf = next.with_column(self.expr(&rx)?.alias(name.as_str()));
            post_derives.push((name.clone(), rx));
        }
        let mut outputs = Vec::new();
        for o in &plan.outputs {
            // Shown columns too, for the measures of later ones (yoy(unit_value)).
            let (next, rx) = self.hide_measures(lf, &o.expr, base, &mut folded)?;
            lf = next.with_column(self.expr(&rx)?.alias(o.name.as_str()));
            outputs.push((o.name.clone(), rx));
        }
        let mut filters = Vec::new();
        for x in &plan.post_filters {
            let (next, rx) = self.hide_measures(lf, x, base, &mut folded)?;
            lf = next;
            filters.push(rx);
        }
        Ok((lf, TopHidden { folded, post_derives, outputs, filters }))
    }

    /// The rows ranked in each period by `by`, ties by the code of `dim`
    /// (`__top_rank`), with the columns a fold carries; and the key columns.
    fn rank_members(
        &mut self,
        lf: LazyFrame,
        dim: &str,
        by: &str,
        folded: &FoldedMeasures,
    ) -> Result<(LazyFrame, Vec<String>, Vec<String>)> {
        let plan = self.plan;
        let mut partition: Vec<Expr> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        if let Some(t) = plan.time {
            partition.push(col("__t"));
            keys.extend(["__t".to_string(), t.column().to_string()]);
        }
        partition.extend(plan.keys.iter().filter(|k| *k != dim).map(|k| col(k.as_str())));
        keys.extend(plan.keys.iter().cloned());
        let mut carried: Vec<String> = keys.clone();
        carried.extend(plan.aggs.iter().map(|a| a.name.clone()));
        carried.extend(self.warnings.iter().map(|w| w.column.clone()));
        carried.extend(folded.summed.iter().cloned());
        carried.extend(folded.dropped.iter().cloned());
        let lf = lf.select(carried.iter().map(|c| col(c.as_str())).collect::<Vec<_>>());
        let mut order: Vec<PlSmallStr> =
            keys.iter().filter(|k| *k != dim).map(|k| PlSmallStr::from(k.as_str())).collect();
        order.push(by.into());
        order.push(dim.into());
        let mut descending = vec![false; order.len()];
        descending[order.len() - 2] = true;
        let sorted = lf.sort(
            order,
            SortMultipleOptions::default()
                .with_order_descending_multi(descending)
                .with_nulls_last(true)
                .with_maintain_order(true),
        );
        let ordinal =
            if partition.is_empty() { col(by).cum_count(false) } else { col(by).cum_count(false).over(partition)? };
        let ranked = sorted.with_column(ordinal.alias("__top_rank")).cache();
        Ok((ranked, keys, carried))
    }

    /// The members ranked within `n`, and one row "others" per period summing
    /// the rest (its non-additive measures null, with a warning).
    fn fold_others(
        &mut self,
        ranked: LazyFrame,
        n: usize,
        dim: &str,
        keys: &[String],
        carried: &[String],
        folded: &FoldedMeasures,
    ) -> Result<LazyFrame> {
        let members = ranked.clone().filter(col("__top_rank").lt_eq(lit(n as u32)));
        let schema = members.clone().collect_schema()?;
        let group_keys: Vec<Expr> = keys.iter().filter(|k| *k != dim).map(|k| col(k.as_str())).collect();
        let sums = self.others_sums(folded);
        let rest = ranked.filter(col("__top_rank").gt(lit(n as u32)));
        let others = if group_keys.is_empty() {
            rest.select(sums).filter(col("__top_members").gt(lit(0)))
        } else {
            rest.group_by(group_keys).agg(sums)
        };
        let mut fill: Vec<Expr> = vec![lit("others").alias(dim)];
        fill.extend(folded.silenced.iter().map(|c| lit(false).alias(c.as_str())));
        for c in &folded.dropped {
            let dtype = schema.get(c.as_str()).cloned().unwrap_or(DataType::Float64);
            fill.push(lit(NULL).cast(dtype).alias(c.as_str()));
        }
        let others = others.with_columns(fill);
        let shape: Vec<Expr> = carried.iter().map(|c| col(c.as_str())).collect();
        let flag = self.fresh("wothers");
        let members = members.select(shape.clone()).with_column(lit(false).alias(flag.as_str()));
        let others = others.select(shape).with_column(lit(!folded.dropped_names.is_empty()).alias(flag.as_str()));
        let lf = concat([members, others], UnionArgs::default())?;
        if !folded.dropped_names.is_empty() {
            self.warnings.push(WarningColumn {
                column: flag,
                kind: WarningKind::Others { measures: folded.dropped_names.join(", ") },
            });
        }
        Ok(lf)
    }

    /// The aggregates of "others": sums of its members' aggregates and summed
    /// measures, the largest of their warning flags, and how many there are.
    fn others_sums(&self, folded: &FoldedMeasures) -> Vec<Expr> {
        let mut sums: Vec<Expr> = self
            .plan
            .aggs
            .iter()
            .map(|a| {
                let x = col(a.name.as_str());
                if sums_to_null(a) { null_when_empty(x).alias(a.name.as_str()) } else { x.sum() }
            })
            .collect();
        sums.extend(
            self.warnings.iter().filter(|w| !folded.silenced.contains(&w.column)).map(|w| col(w.column.as_str()).max()),
        );
        // A sum of no values is null here (no member has the measure), not 0.
        sums.extend(folded.summed.iter().map(|c| {
            when(col(c.as_str()).count().gt(lit(0))).then(col(c.as_str()).sum()).otherwise(lit(NULL)).alias(c.as_str())
        }));
        sums.push(len().alias("__top_members"));
        sums
    }

    /// `x` with each measure in it (but unit_value, which the aggregates
    /// give) computed into a hidden column of `lf`, and replaced by it.
    pub(super) fn hide_measures(
        &mut self,
        lf: LazyFrame,
        x: &RExpr,
        base: &LazyFrame,
        folded: &mut FoldedMeasures,
    ) -> Result<(LazyFrame, RExpr)> {
        let mut lf = lf;
        let rx = x.replace_measures(&mut |node, m| {
            let before = self.warnings.len();
            let (next, e) = self.measure_expr(lf.clone(), node, base)?;
            let name = self.fresh("m");
            lf = next.with_column(e.alias(name.as_str()));
            let dim = self.plan.top.as_ref().map_or("", |(_, d, _)| d.as_str());
            folded.add(m, &name, node, self.warnings[before..].iter().map(|w| w.column.clone()), dim);
            Ok::<RExpr, Error>(RExpr::Col(name))
        })?;
        Ok((lf, rx))
    }
}
