//! The five benchmark queries written by hand in polars' lazy API: the
//! yardstick for tradeql's overhead. Each is what a polars user would write for
//! the question, with the same calendar-keyed semantics as the reference SQL.

use crate::error::Result;
use polars::prelude::*;

/// The trade rows of a store's dataset (the manifest's files, Hive `year`).
fn trade(paths: &[String]) -> Result<LazyFrame> {
    let paths: Vec<PlRefPath> = paths.iter().map(|p| PlRefPath::new(p.as_str())).collect();
    let hive = HiveOptions {
        enabled: Some(true),
        hive_start_idx: 0,
        schema: Some(Arc::new(Schema::from_iter([Field::new("year".into(), DataType::Int32)]))),
        try_parse_dates: false,
    };
    Ok(LazyFrame::scan_parquet_sources(
        ScanSources::Paths(paths.into()),
        ScanArgsParquet { hive_options: hive, ..Default::default() },
    )?)
}

fn left() -> JoinArgs {
    JoinArgs::new(JoinType::Left)
}

/// Adds `yoy` (and keeps `prev`) by joining the same table one year back.
fn with_yoy(t: LazyFrame, keys: &[&str], time: &str, shift: Expr, column: &str) -> LazyFrame {
    let mut prev_cols: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    prev_cols.push(shift.alias(time));
    prev_cols.push(col(column).alias(format!("{column}_prev").as_str()));
    let prev = t.clone().select(prev_cols);
    let mut on: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
    on.push(col(time));
    t.join(prev, on.clone(), on, left())
}

/// Q1..Q5 as lazy frames; `groups` is the partner-groups Parquet file.
pub fn query(id: &str, paths: &[String], groups: &str) -> Result<LazyFrame> {
    let t = trade(paths)?;
    Ok(match id {
        "Q1" | "Q2" => {
            let key = if id == "Q1" { "flow" } else { "partner" };
            let a = t.group_by([col("year"), col(key)]).agg([col("value").sum().alias("total")]);
            with_yoy(a, &[key], "year", col("year") + lit(1), "total")
                .with_column((col("total") / col("total_prev") - lit(1.0)).alias("yoy"))
                .select([col(key), col("year"), col("total"), col("yoy")])
        }
        "Q3" => {
            let a = t
                .group_by([col("year"), col("partner")])
                .agg([col("value").sum().alias("total")])
                .with_column((col("total") / col("total").sum().over([col("year")])?).alias("share"));
            with_yoy(a, &["partner"], "year", col("year") + lit(1), "share")
                .with_column(((col("share") - col("share_prev")) * lit(100.0)).alias("share_pp"))
                .select([col("partner"), col("year"), col("total"), col("share"), col("share_pp")])
        }
        "Q4" => {
            let a = t
                .group_by([col("product").str().slice(lit(0), lit(2)).alias("chapter"), col("period")])
                .agg([col("value").sum().alias("total")])
                .with_column(
                    col("total")
                        .cum_sum(false)
                        .over_with_options(
                            Some(vec![col("chapter"), col("period").dt().year()]),
                            Some((vec![col("period")], SortOptions::default())),
                            WindowMapping::default(),
                        )?
                        .alias("ytd"),
                );
            let shift = col("period").dt().offset_by(lit("1y"));
            let b = with_yoy(a, &["chapter"], "period", shift.clone(), "total");
            // ytd_prev needs its own join column: reuse the helper on ytd.
            let b = with_yoy(b, &["chapter"], "period", shift, "ytd");
            b.select([
                col("chapter"),
                col("period"),
                col("total"),
                (col("total") / col("total_prev") - lit(1.0)).alias("yoy"),
                col("ytd"),
                (col("ytd") / col("ytd_prev") - lit(1.0)).alias("ytd_yoy"),
            ])
        }
        "Q5" => {
            let g = LazyFrame::scan_parquet(PlRefPath::new(groups), ScanArgsParquet::default())?
                .select([col("group"), col("member").alias("partner")]);
            let national = t.clone().group_by([col("year")]).agg([col("value").sum().alias("national")]);
            let a = t
                .join(g, [col("partner")], [col("partner")], JoinArgs::new(JoinType::Inner))
                .group_by([col("group"), col("year")])
                .agg([col("value").sum().alias("total")]);
            let n_prev =
                national.select([(col("year") + lit(1)).alias("year"), col("national").alias("national_prev")]);
            with_yoy(a, &["group"], "year", col("year") + lit(1), "total")
                .join(n_prev, [col("year")], [col("year")], left())
                .select([
                    col("group"),
                    col("year"),
                    col("total"),
                    (col("total") / col("total_prev") - lit(1.0)).alias("yoy"),
                    ((col("total") - col("total_prev")) / col("national_prev") * lit(100.0)).alias("contribution_pp"),
                ])
        }
        other => return Err(crate::Error::usage(format!("no hand-written query {other}"))),
    })
}
