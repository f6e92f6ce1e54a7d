//! Measures along the series of the aggregated rows (one row per calendar
//! key `__t` and keys): the value some months before, and the year-to-date
//! sum, found by lookup and by one pass over each series in calendar order.
//!
//! Polars answers the first with a self-join on the calendar key shifted by
//! `offset_by` and the second with ordered windows: on the 9,312 rows of a
//! monthly query by chapter, three quarters of the query's time. The nodes
//! here give the same columns (the join's matches, the running sum's
//! additions in the same order, so the same bits) and fall back to polars'
//! own plan, run on the node's input, whenever their conditions do not hold:
//! a calendar key that is null or not the first day of a month, two rows for
//! one series and period, a column that is not a float.

use crate::period::civil_from_days;
use polars::prelude::*;
use std::sync::Arc;

/// How the nodes appear in polars' plans (`tradeql explain`).
pub const EARLIER_NODE: &str = "TRADEQL EARLIER: each series' value some months before, by lookup";
pub const YTD_NODE: &str = "TRADEQL YEAR TO DATE: each series' running sum within its year, in calendar order";

/// The polars plan a node stands for, applied to the node's input.
pub type Fallback = Arc<dyn Fn(LazyFrame) -> LazyFrame + Send + Sync>;

/// `lf` with `name`: the value of `column` in the row of the same `keys`
/// whose `__t` shifted `months` later is this row's `__t` (null when there
/// is none), as the left join of `fallback` gives it.
pub fn earlier(
    lf: LazyFrame,
    keys: Vec<String>,
    column: String,
    months: i32,
    name: String,
    fallback: Fallback,
) -> LazyFrame {
    let for_schema = (column.clone(), name.clone());
    let schema_fn = move |input: &Schema| -> PolarsResult<SchemaRef> {
        let (column, name) = &for_schema;
        let dtype = input.get(column.as_str()).ok_or_else(|| polars_err!(ColumnNotFound: "{column}"))?.clone();
        let mut out = input.clone();
        out.insert(name.as_str().into(), dtype);
        Ok(Arc::new(out))
    };
    lf.map(
        move |df| match by_lookup(&df, &keys, &column, months, &name)? {
            Some(out) => Ok(out),
            None => fallback(df.lazy()).collect(),
        },
        OptFlags::empty(),
        Some(Arc::new(schema_fn)),
        Some(EARLIER_NODE),
    )
}

/// `lf` with `name`, the sum of `column` over the rows of the same `keys`
/// and year from the year's first `__t` through this row's (null where the
/// value is), and `gap`, whether fewer rows are summed than the period's
/// month (or quarter, `quarterly`) of the year: what `fallback` gives.
pub fn year_to_date(
    lf: LazyFrame,
    keys: Vec<String>,
    column: String,
    (name, gap): (String, String),
    quarterly: bool,
    fallback: Fallback,
) -> LazyFrame {
    let for_schema = (column.clone(), name.clone(), gap.clone(), fallback.clone());
    let schema_fn = move |input: &Schema| -> PolarsResult<SchemaRef> {
        let (column, name, gap, fallback) = &for_schema;
        let dtype = input.get(column.as_str()).ok_or_else(|| polars_err!(ColumnNotFound: "{column}"))?;
        if *dtype != DataType::Float64 {
            // What the fallback makes of another type.
            return fallback(DataFrame::empty_with_schema(input).lazy()).collect_schema();
        }
        let mut out = input.clone();
        out.insert(name.as_str().into(), DataType::Float64);
        out.insert(gap.as_str().into(), DataType::Boolean);
        Ok(Arc::new(out))
    };
    lf.map(
        move |df| match running(&df, &keys, &column, (&name, &gap), quarterly)? {
            Some(out) => Ok(out),
            None => fallback(df.lazy()).collect(),
        },
        OptFlags::empty(),
        Some(Arc::new(schema_fn)),
        Some(YTD_NODE),
    )
}

/// The calendar key of each row as a month number (year × 12 + month - 1),
/// when every one is the first day of a month (what a roll-up's key is),
/// else None.
fn month_numbers(df: &DataFrame) -> PolarsResult<Option<Vec<i32>>> {
    let t = df.column("__t")?;
    let DataType::Date = t.dtype() else { return Ok(None) };
    let t = t.date()?.physical().rechunk();
    if t.null_count() > 0 {
        return Ok(None);
    }
    let mut months = Vec::with_capacity(t.len());
    // The rows come grouped by period: convert each run's date once.
    let mut last: Option<(i32, i32)> = None;
    for days in t.into_no_null_iter() {
        let month = match last {
            Some((d, m)) if d == days => m,
            _ => {
                let (year, month, day) = civil_from_days(days);
                if day != 1 {
                    return Ok(None);
                }
                let m = year * 12 + month as i32 - 1;
                last = Some((days, m));
                m
            }
        };
        months.push(month);
    }
    Ok(Some(months))
}

/// A number for each row's combination of `keys` (nulls equal, as the joins
/// take them), from 0: rows of one series share it; and how many there are.
fn series_ids(df: &DataFrame, keys: &[String]) -> PolarsResult<(Vec<u32>, usize)> {
    let mut ids: Vec<u32> = vec![0; df.height()];
    if keys.is_empty() {
        return Ok((ids, 1));
    }
    let by = df.group_by(keys.iter().map(|k| k.as_str()))?;
    let groups = by.get_groups();
    for (id, group) in groups.iter().enumerate() {
        match group {
            GroupsIndicator::Idx((_, rows)) => rows.iter().for_each(|r| ids[*r as usize] = id as u32),
            GroupsIndicator::Slice([first, len]) => (first..first + len).for_each(|r| ids[r as usize] = id as u32),
        }
    }
    Ok((ids, groups.len()))
}

/// Finds a row by series and month number: a dense grid where the series
/// times the months spanned are few against the rows, else a hash map.
enum RowAt {
    Grid { first: i32, span: usize, rows: Vec<u32> },
    Map(PlHashMap<(u32, i32), u32>),
}

const NO_ROW: u32 = u32::MAX;

impl RowAt {
    /// For `n` rows of `series` series over months `first..first + span`.
    fn new(n: usize, series: usize, first: i32, span: usize) -> RowAt {
        if series.saturating_mul(span) <= 4 * n + 1024 {
            RowAt::Grid { first, span, rows: vec![NO_ROW; series * span] }
        } else {
            RowAt::Map(PlHashMap::with_capacity(n))
        }
    }

    /// Enters `row` at (`id`, `month`); false when a row is there already.
    fn insert(&mut self, id: u32, month: i32, row: u32) -> bool {
        match self {
            RowAt::Grid { first, span, rows } => {
                let at = &mut rows[id as usize * *span + (month - *first) as usize];
                std::mem::replace(at, row) == NO_ROW
            }
            RowAt::Map(map) => map.insert((id, month), row).is_none(),
        }
    }

    fn get(&self, id: u32, month: i32) -> Option<u32> {
        match self {
            RowAt::Grid { first, span, rows } => {
                let offset = month.checked_sub(*first).filter(|m| (0..*span as i32).contains(m))?;
                Some(rows[id as usize * *span + offset as usize]).filter(|r| *r != NO_ROW)
            }
            RowAt::Map(map) => map.get(&(id, month)).copied(),
        }
    }
}

fn by_lookup(
    df: &DataFrame,
    keys: &[String],
    column: &str,
    months: i32,
    name: &str,
) -> PolarsResult<Option<DataFrame>> {
    let Some(t) = month_numbers(df)? else { return Ok(None) };
    let (ids, series) = series_ids(df, keys)?;
    let (Some(lo), Some(hi)) = (t.iter().min(), t.iter().max()) else { return Ok(Some(with_nulls(df, column, name)?)) };
    let mut at = RowAt::new(t.len(), series, lo + months, (hi - lo) as usize + 1);
    for (row, (id, month)) in ids.iter().zip(&t).enumerate() {
        if !at.insert(*id, month + months, row as u32) {
            // Two rows for one series and period: the join repeats rows.
            return Ok(None);
        }
    }
    let rows: IdxCa = ids.iter().zip(&t).map(|(id, month)| at.get(*id, *month).map(|r| r as IdxSize)).collect();
    let values = df.column(column)?.take(&rows)?.with_name(name.into());
    let mut out = df.clone();
    out.with_column(values)?;
    Ok(Some(out))
}

/// `df` (no rows) with `name`, of `column`'s type.
fn with_nulls(df: &DataFrame, column: &str, name: &str) -> PolarsResult<DataFrame> {
    let mut out = df.clone();
    out.with_column(df.column(column)?.clone().with_name(name.into()))?;
    Ok(out)
}

fn running(
    df: &DataFrame,
    keys: &[String],
    column: &str,
    (name, gap): (&str, &str),
    quarterly: bool,
) -> PolarsResult<Option<DataFrame>> {
    let values = df.column(column)?;
    if *values.dtype() != DataType::Float64 {
        return Ok(None);
    }
    let Some(t) = month_numbers(df)? else { return Ok(None) };
    let values = values.f64()?.rechunk();
    let values = values.downcast_as_array();
    let (ids, series) = series_ids(df, keys)?;
    // The rows in series order, each series' in calendar order: when the
    // rows come in calendar order, by counting (stable), else by sorting.
    let order: Vec<usize> = if t.is_sorted() {
        let mut starts = vec![0usize; series + 1];
        ids.iter().for_each(|id| starts[*id as usize + 1] += 1);
        (1..=series).for_each(|i| starts[i] += starts[i - 1]);
        let mut order = vec![0; t.len()];
        for (row, id) in ids.iter().enumerate() {
            order[starts[*id as usize]] = row;
            starts[*id as usize] += 1;
        }
        order
    } else {
        let mut order: Vec<usize> = (0..t.len()).collect();
        order.sort_unstable_by_key(|&r| (ids[r], t[r]));
        order
    };
    let mut sums: Vec<Option<f64>> = vec![None; t.len()];
    let mut gaps: Vec<bool> = vec![false; t.len()];
    let mut last: Option<(u32, i32)> = None;
    let (mut acc, mut seen) = (0.0, 0u32);
    for &r in &order {
        let (year, month) = (t[r].div_euclid(12), t[r].rem_euclid(12) as u32 + 1);
        match last {
            Some((id, m)) if id == ids[r] && m == t[r] => return Ok(None), // a tie: no order
            Some((id, m)) if id == ids[r] && m.div_euclid(12) == year => {}
            _ => (acc, seen) = (0.0, 0),
        }
        last = Some((ids[r], t[r]));
        seen += 1;
        if let Some(v) = values.get(r) {
            acc += v;
            sums[r] = Some(acc);
        }
        let expected = if quarterly { (month - 1) / 3 + 1 } else { month };
        gaps[r] = seen != expected;
    }
    let mut out = df.clone();
    out.with_column(Column::new(name.into(), sums))?;
    out.with_column(Column::new(gap.into(), gaps))?;
    Ok(Some(out))
}

/// How the ordering node appears in polars' plans.
pub const ORDER_NODE: &str = "TRADEQL IN ORDER: sorted by polars unless the rows come in that order already";

/// `lf` sorted by `by` (column, descending), nulls last, as polars' stable
/// sort of it: the rows as they come when they are in that order already
/// (the aggregate pushdown gives its groups in key order, and the measures
/// here keep the rows' order), else polars' sort.
pub fn in_order(lf: LazyFrame, by: Vec<(String, bool)>) -> LazyFrame {
    let schema_fn = |input: &Schema| -> PolarsResult<SchemaRef> { Ok(Arc::new(input.clone())) };
    lf.map(
        move |df| {
            if is_in_order(&df, &by)? {
                return Ok(df);
            }
            let names: Vec<PlSmallStr> = by.iter().map(|(c, _)| PlSmallStr::from(c.as_str())).collect();
            let options = SortMultipleOptions::default()
                .with_order_descending_multi(by.iter().map(|(_, d)| *d))
                .with_nulls_last(true)
                .with_maintain_order(true);
            df.sort(names, options)
        },
        OptFlags::empty(),
        Some(Arc::new(schema_fn)),
        Some(ORDER_NODE),
    )
}

/// Whether each row of `df` comes at or after the one before in the order
/// `by`, nulls last (false for a column type not compared here).
fn is_in_order(df: &DataFrame, by: &[(String, bool)]) -> PolarsResult<bool> {
    // The pairs of neighbours not yet told apart by an earlier column.
    let mut tied = vec![true; df.height().saturating_sub(1)];
    for (name, descending) in by {
        let c = df.column(name)?;
        let fits = match c.dtype() {
            DataType::String => neighbours_in_order(c.str()?.iter(), *descending, &mut tied),
            DataType::Date | DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::Boolean => {
                let c = c.cast(&DataType::Int64)?;
                neighbours_in_order(c.i64()?.iter(), *descending, &mut tied)
            }
            _ => false,
        };
        if !fits {
            return Ok(false);
        }
        if !tied.contains(&true) {
            break;
        }
    }
    Ok(true)
}

/// Whether the values come in order (nulls last) between the neighbours
/// still `tied`, which stay tied where the two values are equal.
fn neighbours_in_order<T: Ord>(values: impl Iterator<Item = Option<T>>, descending: bool, tied: &mut [bool]) -> bool {
    let mut before: Option<Option<T>> = None;
    for (i, v) in values.enumerate() {
        if let Some(b) = before.take()
            && tied[i - 1]
        {
            let order = match (&b, &v) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => return false,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) if descending => y.cmp(x),
                (Some(x), Some(y)) => x.cmp(y),
            };
            match order {
                std::cmp::Ordering::Greater => return false,
                std::cmp::Ordering::Less => tied[i - 1] = false,
                std::cmp::Ordering::Equal => {}
            }
        }
        before = Some(v);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::days_from_civil;

    fn date(y: i32, m: u32) -> i32 {
        days_from_civil(y, m, 1)
    }

    /// Rows of two series (one with a null key), out of order, with gaps,
    /// a null value and values whose sums depend on the order of addition.
    fn frame() -> DataFrame {
        let t = [
            date(2023, 2),
            date(2022, 1),
            date(2023, 1),
            date(2022, 2),
            date(2023, 3),
            date(2022, 1),
            date(2023, 1),
            date(2022, 3),
            date(2023, 2),
            date(2021, 12),
        ];
        let k = [Some("a"), Some("a"), Some("a"), Some("a"), Some("a"), None, None, None, None, Some("a")];
        let v = [
            Some(1e16),
            Some(3.0),
            Some(1.0),
            Some(-0.0),
            Some(-1e16),
            Some(0.1),
            None,
            Some(0.2),
            Some(0.7),
            Some(9.0),
        ];
        let t = Int32Chunked::from_vec("__t".into(), t.to_vec()).into_date().into_column();
        DataFrame::new(10, vec![t, Column::new("k".into(), k), Column::new("v".into(), v)]).unwrap()
    }

    fn bits(c: &Column) -> Vec<Option<u64>> {
        c.as_materialized_series().f64().unwrap().iter().map(|x| x.map(f64::to_bits)).collect()
    }

    fn join_fallback() -> Fallback {
        Arc::new(|lf: LazyFrame| {
            let shifted = lf.clone().select([
                col("__t").dt().offset_by(lit("12mo")).alias("__t"),
                col("k"),
                col("v").alias("prev"),
            ]);
            let mut args = JoinArgs::new(JoinType::Left);
            args.nulls_equal = true;
            args.maintain_order = MaintainOrderJoin::Left;
            lf.join(shifted, [col("__t"), col("k")], [col("__t"), col("k")], args)
        })
    }

    fn ytd_fallback() -> Fallback {
        Arc::new(|lf: LazyFrame| {
            let sort = SortOptions { nulls_last: true, ..Default::default() };
            let part = Some(vec![col("k"), col("__t").dt().year()]);
            let w =
                |e: Expr| e.over_with_options(part.clone(), Some((vec![col("__t")], sort)), WindowMapping::default());
            lf.with_columns([
                w(col("v").cum_sum(false)).unwrap().alias("ytd"),
                w(col("__t").cum_count(false))
                    .unwrap()
                    .cast(DataType::UInt32)
                    .neq(col("__t").dt().month().cast(DataType::UInt32))
                    .alias("gap"),
            ])
        })
    }

    #[test]
    fn the_value_a_year_before_is_the_joins() {
        let lf = frame().lazy();
        let ours =
            earlier(lf.clone(), vec!["k".into()], "v".into(), 12, "prev".into(), join_fallback()).collect().unwrap();
        let theirs = join_fallback()(lf).collect().unwrap();
        assert_eq!(ours.get_column_names(), theirs.get_column_names());
        assert_eq!(bits(ours.column("prev").unwrap()), bits(theirs.column("prev").unwrap()));
        // 2023-01 of "a" finds 2022-01 (3.0); 2022-02 of "a" has no 2021-02.
        let prev = ours.column("prev").unwrap().f64().unwrap();
        assert_eq!((prev.get(2), prev.get(3), prev.get(6)), (Some(3.0), None, Some(0.1)));
    }

    #[test]
    fn year_to_date_is_the_ordered_windows() {
        let lf = frame().lazy();
        let names = ("ytd".to_string(), "gap".to_string());
        let ours =
            year_to_date(lf.clone(), vec!["k".into()], "v".into(), names, false, ytd_fallback()).collect().unwrap();
        let theirs = ytd_fallback()(lf).collect().unwrap();
        assert_eq!(ours.get_column_names(), theirs.get_column_names());
        assert_eq!(bits(ours.column("ytd").unwrap()), bits(theirs.column("ytd").unwrap()));
        assert!(ours.column("gap").unwrap().equals_missing(theirs.column("gap").unwrap()));
        // "a" in 2023: 1, then 1 + 1e16, then that - 1e16 = 0 (1 is lost).
        let ytd = ours.column("ytd").unwrap().f64().unwrap();
        assert_eq!((ytd.get(2), ytd.get(4)), (Some(1.0), Some(0.0)));
        // None 2022-03 follows 2022-01 without 2022-02: a gap.
        assert_eq!(ours.column("gap").unwrap().bool().unwrap().get(7), Some(true));
    }

    #[test]
    fn two_rows_for_one_period_fall_back_to_polars() {
        let df = frame();
        let twice = df.vstack(&df.slice(0, 1)).unwrap();
        let lf = twice.clone().lazy();
        let ours =
            earlier(lf.clone(), vec!["k".into()], "v".into(), 12, "prev".into(), join_fallback()).collect().unwrap();
        let theirs = join_fallback()(lf).collect().unwrap();
        assert_eq!(ours.height(), theirs.height());
        assert_eq!(bits(ours.column("prev").unwrap()), bits(theirs.column("prev").unwrap()));
        assert!(by_lookup(&twice, &["k".into()], "v", 12, "prev").unwrap().is_none());
    }

    #[test]
    fn series_far_apart_are_found_through_the_map() {
        // Two series, a century apart: a grid of months would be mostly empty.
        let t = [date(1925, 1), date(1926, 1), date(2025, 1), date(2026, 1), date(1926, 1)];
        let k = [Some("a"), Some("a"), Some("b"), Some("b"), Some("b")];
        let v = [Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0)];
        let t = Int32Chunked::from_vec("__t".into(), t.to_vec()).into_date().into_column();
        let df = DataFrame::new(5, vec![t, Column::new("k".into(), k), Column::new("v".into(), v)]).unwrap();
        let lf = df.clone().lazy();
        let ours =
            earlier(lf.clone(), vec!["k".into()], "v".into(), 12, "prev".into(), join_fallback()).collect().unwrap();
        let theirs = join_fallback()(lf).collect().unwrap();
        assert_eq!(bits(ours.column("prev").unwrap()), bits(theirs.column("prev").unwrap()));
        let prev = ours.column("prev").unwrap().f64().unwrap();
        assert_eq!(prev.iter().collect::<Vec<_>>(), vec![None, Some(1.0), None, Some(3.0), None]);
        let (_, series) = series_ids(&df, &["k".into()]).unwrap();
        assert!(matches!(RowAt::new(5, series, 1925 * 12, 101 * 12 + 1), RowAt::Map(_)));
    }

    #[test]
    fn a_day_other_than_the_first_falls_back_to_polars() {
        let t = Int32Chunked::from_vec("__t".into(), vec![date(2024, 1) + 14]).into_date().into_column();
        let df = DataFrame::new(1, vec![t]).unwrap();
        assert!(month_numbers(&df).unwrap().is_none());
        let t = Int32Chunked::from_vec("__t".into(), vec![date(1969, 12), date(2024, 3)]).into_date().into_column();
        let df = DataFrame::new(2, vec![t]).unwrap();
        assert_eq!(month_numbers(&df).unwrap(), Some(vec![1969 * 12 + 11, 2024 * 12 + 2]));
    }

    #[test]
    fn rows_in_order_are_kept_and_others_sorted_as_polars_does() {
        let t = [date(2023, 1), date(2023, 1), date(2023, 1), date(2023, 2), date(2023, 2)];
        let k = [Some("a"), Some("b"), None, Some("a"), None];
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        let t = Int32Chunked::from_vec("__t".into(), t.to_vec()).into_date().into_column();
        let df = DataFrame::new(5, vec![t, Column::new("k".into(), k), Column::new("v".into(), v)]).unwrap();
        let by = vec![("__t".to_string(), false), ("k".to_string(), false)];
        assert!(is_in_order(&df, &by).unwrap());
        // Descending on k: "b" before "a", nulls still last; not in order.
        let desc = vec![("__t".to_string(), false), ("k".to_string(), true)];
        assert!(!is_in_order(&df, &desc).unwrap());
        for by in [by, desc, vec![("v".to_string(), true)]] {
            let ours = in_order(df.clone().lazy(), by.clone()).collect().unwrap();
            let names: Vec<PlSmallStr> = by.iter().map(|(c, _)| PlSmallStr::from(c.as_str())).collect();
            let options = SortMultipleOptions::default()
                .with_order_descending_multi(by.iter().map(|(_, d)| *d))
                .with_nulls_last(true)
                .with_maintain_order(true);
            let theirs = df.clone().lazy().sort(names, options).collect().unwrap();
            assert!(ours.equals_missing(&theirs), "{by:?}: {ours} against {theirs}");
        }
    }
}
