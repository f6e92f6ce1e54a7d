//! `tradeql reconcile`: do the members add up to the published aggregates?
//!
//! A customs table publishes its blocs and its total beside the countries
//! (ASEAN, the EU, the world row). A statistician's first check is that the
//! members, taken as of each period from a group table, sum to the bloc's
//! published row, and that all member rows sum to the world row. For each
//! aggregate, period, flow (and reporter, product, region), this stage
//! reports the members' sum, the published value, their difference and the
//! relative difference, and flags those beyond a tolerance.

use crate::error::{Error, Result};
use crate::exec::scan_dataset;
use crate::lang::compile::join_groups;
use crate::store::{GROUPS_DIR, Store};
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The default tolerance on the relative difference (rounding of published
/// figures stays well within it).
pub const DEFAULT_TOLERANCE: f64 = 1e-6;

/// What to reconcile.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    pub store: PathBuf,
    pub dataset: String,
    /// The partner group table whose groups are compared with the dataset's
    /// rows of the same name (all partner tables when None).
    pub groups: Option<String>,
    /// Only these aggregate codes (all that can be compared when empty).
    pub only: Vec<String>,
    /// The measure summed: value, or a further measure of the dataset.
    pub measure: String,
    pub tolerance: f64,
}

/// The comparisons, one row each, and how many are beyond the tolerance.
pub struct Reconciliation {
    /// The version of the dataset the comparisons read.
    pub version: u64,
    pub frame: DataFrame,
    pub compared: usize,
    pub flagged: usize,
    pub tolerance: f64,
    /// Aggregates that could not be compared, with the reason.
    pub notes: Vec<String>,
}

/// One comparison's key: period (days), reporter, flow, product, region.
type Key = (i32, String, String, String, Option<String>);

#[derive(Default)]
struct Side {
    /// None: no member reported a value.
    sum: Option<f64>,
    members: u32,
}

/// Runs the reconciliation of `opts.dataset`.
pub fn reconcile(opts: &ReconcileOptions) -> Result<Reconciliation> {
    if !(opts.tolerance.is_finite() && opts.tolerance >= 0.0) {
        return Err(Error::usage(format!("--tolerance must be a number >= 0, not {}", opts.tolerance)));
    }
    let store = Store::at(&opts.store);
    store.read_consistent(|| reconcile_now(&store, &opts.store, opts))
}

fn reconcile_now(store: &Store, root: &Path, opts: &ReconcileOptions) -> Result<Reconciliation> {
    let manifest = store.manifest(&opts.dataset)?.ok_or_else(|| {
        Error::new(crate::ErrorKind::NotFound, format!("the store {} has no dataset {}", root.display(), opts.dataset))
            .hint("list the datasets with `tradeql info STORE`")
    })?;
    let groups = store.groups_manifest()?;
    let measure = opts.measure.as_str();
    let unit = manifest.measures.iter().find(|m| m.name == measure).map(|m| m.unit.as_str());
    if measure != "value" && measure != "quantity" && unit.is_none() {
        let mut names = vec!["value".to_string(), "quantity".to_string()];
        names.extend(manifest.measures.iter().map(|m| m.name.clone()));
        return Err(Error::usage(format!("the dataset {} has no measure `{measure}`", opts.dataset))
            .hint(format!("its measures: {}", names.join(", "))));
    }
    if let Some(u) = unit
        && ["ratio", "pct", "percent", "%", "per mille", "per_mille", "index"]
            .contains(&u.to_ascii_lowercase().as_str())
    {
        return Err(Error::usage(format!(
            "`{measure}` is a {u}: members' {u}s do not add up to their aggregate's, so there is nothing to reconcile"
        ))
        .hint("reconcile a value or a quantity (--measure value, or a money measure)"));
    }
    let tables: Vec<_> = groups
        .tables
        .iter()
        .filter(|t| t.of == "partner" && opts.groups.as_ref().is_none_or(|g| *g == t.name))
        .collect();
    if let Some(g) = &opts.groups
        && tables.is_empty()
    {
        return Err(Error::usage(format!("the store has no partner group table {g}"))
            .hint("store one with `tradeql groups add NAME FILE --of partner`"));
    }
    let rows = scan_dataset(root, &manifest)?;
    let present: Vec<String> = {
        let df = rows.clone().select([col("partner").unique()]).collect()?;
        let mut codes: Vec<String> = df.column("partner")?.str()?.iter().flatten().map(str::to_string).collect();
        codes.sort(); // messages list them in one order on every run
        codes
    };
    let aggregates = manifest.aggregate_candidates("partner", &groups);
    let wanted = |code: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == code);
    for o in &opts.only {
        if present.contains(o) && !aggregates.contains(o) {
            return Err(Error::usage(format!(
                "{o} is a member row of {}, not an aggregate: nothing adds up to it",
                opts.dataset
            ))
            .hint(format!("its aggregate rows: {}", list(present.iter().filter(|p| aggregates.contains(p))))));
        }
        if !present.contains(o) {
            return Err(Error::usage(format!("the dataset {} has no partner row {o} to compare with", opts.dataset))
                .hint(format!("its aggregate rows: {}", list(present.iter().filter(|p| aggregates.contains(p))))));
        }
    }
    let keys = [col("period"), col("reporter"), col("flow"), col("product"), col("region")];
    let value = col(measure).cast(DataType::Float64);
    // A sum of no reported values is no value (September's year to date), not 0.
    let summed =
        when(value.clone().count().gt(lit(0))).then(value.clone().sum()).otherwise(lit(NULL).cast(DataType::Float64));
    let member_rows = rows
        .clone()
        .filter(col("partner").is_in(lit(Series::new("".into(), aggregates.clone())).implode(false), false).not());
    let mut published: BTreeMap<(String, Key), Option<f64>> = BTreeMap::new();
    let mut members: BTreeMap<(String, Key), Side> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut compared_codes: Vec<String> = Vec::new();
    // The world row: every member row.
    if present.iter().any(|p| p == "WLD") && wanted("WLD") {
        compared_codes.push("WLD".into());
        let sums = member_rows
            .clone()
            .group_by(keys.clone())
            .agg([summed.clone().alias("sum"), col("partner").n_unique().alias("members")])
            .collect()?;
        if sums.height() == 0 {
            return Err(Error::usage(format!("{} has no member rows to add up to its world row", opts.dataset)));
        }
        add_sides(&sums, "WLD", &mut members)?;
    }
    // Each group that the dataset also publishes as a row.
    for t in &tables {
        let names: Vec<String> = t
            .groups
            .iter()
            .map(|(g, _)| g.clone())
            .filter(|g| present.contains(g) && wanted(g) && !compared_codes.contains(g))
            .collect();
        if names.is_empty() {
            continue;
        }
        let file = root.join(GROUPS_DIR).join(&t.path);
        let table = crate::store::scan_file(&file)?
            .filter(col("group").is_in(lit(Series::new("".into(), names.clone())).implode(false), false));
        // Members as of each period, as a query's group mapping takes them.
        let joined = join_groups(member_rows.clone(), table, "partner", "group", None);
        let mut by = vec![col("group")];
        by.extend(keys.iter().cloned());
        let sums = joined
            .group_by(by)
            .agg([summed.clone().alias("sum"), col("partner").n_unique().alias("members")])
            .collect()?;
        let groups_col = sums.column("group")?.str()?.clone();
        for name in &names {
            let mask = groups_col.equal(name.as_str());
            add_sides(&sums.filter(&mask)?, name, &mut members)?;
        }
        compared_codes.extend(names);
    }
    for code in aggregates.iter().filter(|a| present.contains(a) && !compared_codes.contains(a) && wanted(a)) {
        notes.push(format!("{code}: no group table lists its members, so it is not compared"));
    }
    if compared_codes.is_empty() && !opts.only.is_empty() {
        return Err(Error::usage(format!(
            "{}: no group table lists the members of {}, so it cannot be compared",
            opts.dataset,
            opts.only.join(", ")
        ))
        .hint("store one whose group is named as the aggregate row: tradeql groups add NAME FILE --of partner"));
    }
    if compared_codes.is_empty() {
        return Err(Error::usage(format!(
            "nothing to reconcile in {}: it has no world row (WLD) and no row named as a group of a partner group table",
            opts.dataset
        ))
        .hint("store the group table with `tradeql groups add`, naming its groups as the dataset's aggregate rows"));
    }
    let rows_of = rows
        .filter(col("partner").is_in(lit(Series::new("".into(), compared_codes.clone())).implode(false), false))
        .group_by([col("partner"), col("period"), col("reporter"), col("flow"), col("product"), col("region")])
        .agg([summed.alias("sum")])
        .collect()?;
    {
        let partner = rows_of.column("partner")?.str()?;
        let sums = rows_of.column("sum")?.f64()?;
        let keys = read_keys(&rows_of)?;
        for (i, key) in keys.into_iter().enumerate() {
            if let Some(p) = partner.get(i) {
                published.insert((p.to_string(), key), sums.get(i));
            }
        }
    }
    build(members, published, opts.tolerance, notes, manifest.version)
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = items.map(String::as_str).collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

fn read_keys(df: &DataFrame) -> Result<Vec<Key>> {
    let period = df.column("period")?.cast(&DataType::Int32)?;
    let period = period.i32()?;
    let text = |name: &str| -> Result<StringChunked> { Ok(df.column(name)?.str()?.clone()) };
    let (reporter, flow, product, region) = (text("reporter")?, text("flow")?, text("product")?, text("region")?);
    Ok((0..df.height())
        .map(|i| {
            (
                period.get(i).unwrap_or_default(),
                reporter.get(i).unwrap_or_default().to_string(),
                flow.get(i).unwrap_or_default().to_string(),
                product.get(i).unwrap_or_default().to_string(),
                region.get(i).map(str::to_string),
            )
        })
        .collect())
}

fn add_sides(sums: &DataFrame, code: &str, into: &mut BTreeMap<(String, Key), Side>) -> Result<()> {
    let s = sums.column("sum")?.f64()?;
    let n = sums.column("members")?.cast(&DataType::UInt32)?;
    let n = n.u32()?;
    for (i, key) in read_keys(sums)?.into_iter().enumerate() {
        into.insert((code.to_string(), key), Side { sum: s.get(i), members: n.get(i).unwrap_or(0) });
    }
    Ok(())
}

fn build(
    members: BTreeMap<(String, Key), Side>,
    published: BTreeMap<(String, Key), Option<f64>>,
    tolerance: f64,
    mut notes: Vec<String>,
    version: u64,
) -> Result<Reconciliation> {
    let mut all: Vec<(String, Key)> = members.keys().chain(published.keys()).cloned().collect();
    all.sort();
    all.dedup();
    let (mut agg, mut period, mut reporter, mut flow, mut product, mut region) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut n, mut sum, mut publ, mut diff, mut rel, mut within) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut flagged = 0;
    let mut unreported = 0;
    for k in &all {
        let m = members.get(k);
        let p = published.get(k).copied().flatten();
        let m_sum = m.and_then(|m| m.sum);
        if m_sum.is_none() && p.is_none() {
            unreported += 1; // neither side reports the measure here: nothing to compare
            continue;
        }
        let d = match (m_sum, p) {
            (Some(m), Some(p)) => Some(m - p),
            _ => None,
        };
        let r = match (d, p) {
            (Some(d), Some(p)) if p != 0.0 => Some(d / p),
            (Some(0.0), Some(_)) => Some(0.0),
            _ => None,
        };
        let ok = r.is_some_and(|r| r.abs() <= tolerance);
        if !ok {
            flagged += 1;
        }
        let (code, (d0, rep, fl, pr, rg)) = k;
        agg.push(code.clone());
        period.push(*d0);
        reporter.push(rep.clone());
        flow.push(fl.clone());
        product.push(pr.clone());
        region.push(rg.clone());
        n.push(m.map_or(0, |m| m.members));
        sum.push(m_sum);
        publ.push(p);
        diff.push(d);
        rel.push(r);
        within.push(ok);
    }
    if unreported > 0 {
        notes.push(format!(
            "{unreported} periods and flows where neither members nor aggregate report a value are not compared"
        ));
    }
    let len = agg.len();
    let mut columns = vec![
        Column::new("aggregate".into(), agg),
        Int32Chunked::from_vec("period".into(), period).into_date().into_column(),
    ];
    // Keys that take one value throughout say nothing: left out.
    let varies = |v: &[String]| v.iter().any(|x| *x != v[0]);
    if varies(&reporter) {
        columns.push(Column::new("reporter".into(), reporter));
    }
    columns.push(Column::new("flow".into(), flow));
    if varies(&product) {
        columns.push(Column::new("product".into(), product));
    }
    if region.iter().any(|r| r.is_some()) {
        columns.push(Column::new("region".into(), region));
    }
    columns.extend([
        Column::new("members".into(), n),
        Column::new("members_sum".into(), sum),
        Column::new("published".into(), publ),
        Column::new("difference".into(), diff),
        Column::new("relative".into(), rel),
        Column::new("within".into(), within),
    ]);
    Ok(Reconciliation { version, frame: DataFrame::new(len, columns)?, compared: len, flagged, tolerance, notes })
}

impl Reconciliation {
    /// The summary line printed after the table.
    pub fn summary(&self) -> String {
        let worst = self
            .frame
            .column("relative")
            .ok()
            .and_then(|c| c.f64().ok().map(|r| r.iter().flatten().map(f64::abs).fold(0.0, f64::max)))
            .unwrap_or(0.0);
        format!(
            "{} of {} comparisons beyond the tolerance {:e} (largest relative difference {:.2e})",
            self.flagged, self.compared, self.tolerance, worst
        )
    }

    /// The comparisons beyond the tolerance.
    pub fn beyond(&self) -> Result<DataFrame> {
        let within = self.frame.column("within")?.bool()?;
        Ok(self.frame.filter(&!within)?)
    }

    /// The display plan of the table: sums in the data's unit, the relative
    /// difference in scientific notation.
    pub fn plan(&self) -> crate::lang::plan::Plan {
        use crate::lang::plan::Format;
        crate::lang::plan::Plan::for_display(&[("relative", Some(Format::Sci))])
    }
}
