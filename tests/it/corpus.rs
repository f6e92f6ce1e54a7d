//! The corpus of queries every backend must agree on: queries/ on the
//! bundled data (with exchange rates added for convert()), two more on the
//! bundled data, the five benchmark queries, and queries that use every
//! measure, aggregate and stage on a generated panel with missing months and
//! overlapping partner groups. The SQL engines (scaleout.rs) and the
//! aggregate pushdown (pushdown.rs) are each checked against it.

use crate::common::*;
use polars::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Queries on the generated panel (dataset `trade`, partner groups G_*), by name.
const PANEL_QUERIES: [(&str, &str); 29] = [
    (
        "yearly_measures",
        "from trade\nby year, partner\nsum value\nshow value, yoy(value), share(value), pp(share(value)), rank(value)",
    ),
    (
        "monthly_measures",
        "from trade\nby month, partner\nsum value\nshow pop(value), ytd(value), ytd_yoy(value), rolling(value, 3), high(value, 3), record(value), streak(yoy(value) > 0)",
    ),
    (
        "blocs",
        "from trade\ngroup partner by partner_groups as bloc\nby year, bloc\nsum value\nshow value, yoy(value), contribution(value)",
    ),
    ("contributions", "from trade\nby year, partner\nsum value\nshow contribution(value)"),
    (
        "top_unit_values",
        "from trade\nby year, partner\nagg value = sum(value), quantity = sum(quantity)\ntop 3 partner by value\nshow value, unit_value(), uv = yoy(unit_value)",
    ),
    (
        "quarters",
        "from trade\nby quarter, flow, partner\nsum value\nshow value, qoq = pop(value), rolling_mean(value, 4), high(value, 4), share(value within flow), rank(value within flow)",
    ),
    (
        "blocs_as_of",
        "from trade\ngroup partner by partner_groups as bloc as of 2023-06\nby month, bloc\nsum value\nshow ytd(value), ytd_yoy(value), contribution(value)",
    ),
    (
        "aggregates",
        "from trade\nby year, flow\nagg n = count(), partners = count_distinct(partner), avg = mean(value), lo = min(value), hi = max(value), q = sum(quantity), nq = count(quantity)",
    ),
    (
        "chapters_filtered",
        "from trade\nwhere period >= 2022-07 and flow = \"export\"\nderive chapter = chapter(product), big = if(value > 1e6, value, 0)\nby year, chapter\nagg value = sum(value), big = sum(big)\nshow value, big, share(value), growth = yoy(value)\nwhere share(value) > 0.01\nsort value desc\nlimit 8",
    ),
    (
        "listing",
        "from trade\nwhere partner in (\"PAA\", \"PAB\") and year = 2023 and month <= 3\nshow period, partner, flow, product, value, half = value / 2, q = quantity\nsort period, partner, flow, product",
    ),
    ("total", "from trade\nagg value = sum(value), rows = count()"),
    (
        "filters",
        "from trade\nwhere year >= 2023 and month in (1, 2, 3) and partner in (\"PAA\", \"PAB\", \"PAC\") and not (flow = \"import\") and chapter(product) != \"01\"\nby quarter, partner\nsum value\nshow value, yoy(value)",
    ),
    (
        "every_aggregate",
        "from trade\nby quarter, partner, region\nagg n = count(), q = sum(quantity), nq = count(quantity), avg = mean(quantity), lo = min(value), hi = max(value)\nshow n, q, nq, avg, lo, hi, pop(q)",
    ),
    (
        "streaks",
        "from trade\nwhere not (partner = \"PAC\")\nby month, flow\nsum value\nshow value, up = streak(pop(value) > 0), rec = record(value)\nwhere month(period) != 6",
    ),
    (
        "years_params",
        "param from = 2022\nparam to = 2023\nfrom trade\nwhere year in $from .. $to\nby year\nsum value\nshow yoy(value)",
    ),
    (
        "heading",
        "from trade\nderive heading = heading(product)\nby year, heading\nsum value\nshow rank(value)\nsort heading\nlimit 12",
    ),
    ("no_period", "from trade\nby partner\nsum value\ntop 4 partner by value\nshow value, share(value), rank(value)"),
    ("ytd_rollup", "from trade\nby ytd, flow\nsum value\nshow value, yoy(value), share(value), pp(share(value))"),
    (
        "shares_over_blocs",
        "from trade\ngroup partner by partner_groups as bloc\nby year, bloc, flow\nsum value\nshow value, share(value), in_bloc = share(value within bloc), in_flow = share(value within flow)",
    ),
    ("blocs_no_period", "from trade\ngroup partner by partner_groups as bloc\nby bloc\nsum value\nshow share(value)"),
    (
        "top_full_series",
        "from trade\nby year, partner\nsum value\ntop 3 partner by value\nshow value, yoy(value), share(value), rank(value), c = contribution(value), big = value > 1e6\nwhere year >= 2023",
    ),
    (
        "top_without_others",
        "from trade\nby quarter, flow, partner\nsum value\ntop 2 partner by value\nshow value, share(value within flow), pp(share(value within flow))\nwhere partner != \"others\"",
    ),
    ("base_filtered", "from trade\nwhere year >= 2023\nby year, flow\nsum value\nshow yoy(value), contribution(value)"),
    (
        "ytd_inside_and",
        "from trade\nwhere flow = \"export\" and period <= 2023-09\nby ytd, partner\nsum value\nshow yoy(value)",
    ),
    (
        "unequal_years",
        "from trade\nwhere period <= 2023-06 and flow = \"import\"\nby year\nsum value\nshow yoy(value), pop(value)",
    ),
    (
        "changes",
        "from trade\nby quarter, flow\nsum value\nshow value, change(value), pop_change(value), g = yoy(value), pop_pp(yoy(value))",
    ),
    ("halves", "from trade\nby half, flow\nsum value\nshow value, yoy(value), pop(value), share(value), change(value)"),
    ("years_back", "from trade\nby year, partner\nsum value\nshow yoy(value, 2), change(value, 2)"),
    (
        "quarter_ytd",
        "from trade\nwhere flow = \"import\"\nby quarter\nsum value\nshow ytd(value), ytd_yoy(value), record(value)",
    ),
];

/// Queries on a generated panel with aggregate rows on two dimensions (WLD per
/// product, TOTAL per partner, WLD x TOTAL): the rules on aggregate rows hold
/// on every backend.
const AGGREGATE_QUERIES: [(&str, &str); 4] = [
    ("aggregates_left_out", "from trade\nby year, flow\nsum value\nshow value, yoy(value), share(value)"),
    (
        "world_by_product",
        "from trade\nwhere partner = \"WLD\"\nby year, product\nsum value\nshow value, share(value), rank(value)",
    ),
    (
        "partner_totals",
        "from trade\nwhere product = \"TOTAL\"\nby year, partner\nsum value\nshow share(value), contribution(value)",
    ),
    (
        "share_of_world_row",
        "from trade\nby year, partner\nsum value\nshow share(value, partner = \"WLD\"), c = contribution(value, partner = \"WLD\")",
    ),
];

/// Queries on the bundled data beside queries/ (dataset gacc with rates; minerals).
const BUNDLED_QUERIES: [(&str, &str); 3] = [
    (
        "convert",
        "from gacc\nwhere year = 2024\nderive usd = convert(value, \"USD\"), eur = convert(value, \"EUR\")\nby month, flow\nagg usd = sum(usd), eur = sum(eur)\nshow usd, eur, yoy(usd)",
    ),
    (
        "share_of_world",
        "from gacc\nby year, flow\nsum value\nshow share(value, partner = \"WLD\"), contribution(value, partner = \"WLD\")",
    ),
    (
        "sections",
        "from critical_minerals\nderive section = section(product)\nby year, section\nsum value\nshow value, yoy(value)",
    ),
];

pub struct Corpus {
    _dir: tempfile::TempDir,
    /// (name, store, query file)
    pub queries: Vec<(String, PathBuf, PathBuf)>,
}

pub fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let bundled = dir.path().join("bundled");
        ingest_bundled(&bundled);
        // Synthetic monthly rates (test data, not real ones) so convert() runs.
        let mut csv = String::from("period,currency,per_usd\n");
        for y in [2023, 2024] {
            for m in 1..=12u32 {
                csv.push_str(&format!("{y}-{m:02},CNY,{}\n{y}-{m:02},EUR,{}\n", 7.0 + f64::from(m) * 0.01, 0.9));
            }
        }
        let rates = write(dir.path(), "rates.csv", &csv);
        ok(&["rates", "add", s(&rates), "--store", s(&bundled)]);
        let panel = dir.path().join("panel");
        gen_into(&panel, "--partners 12 --products 30 --months 30 --density 0.2 --seed 5 --start 2022-01");
        let mut queries = Vec::new();
        for f in tql_files(&root.join("queries")) {
            queries.push((f.file_stem().unwrap().to_string_lossy().to_string(), bundled.clone(), f));
        }
        for (name, text) in BUNDLED_QUERIES {
            queries.push((name.to_string(), bundled.clone(), write(dir.path(), &format!("{name}.tql"), text)));
        }
        for f in tql_files(&root.join("benches/queries")) {
            queries.push((f.file_stem().unwrap().to_string_lossy().to_string(), panel.clone(), f));
        }
        for (name, text) in PANEL_QUERIES {
            queries.push((name.to_string(), panel.clone(), write(dir.path(), &format!("{name}.tql"), text)));
        }
        let aggregates = crate::anyones_data::panel_with_aggregates(&dir.path().join("aggregates")).0;
        for (name, text) in AGGREGATE_QUERIES {
            queries.push((name.to_string(), aggregates.clone(), write(dir.path(), &format!("{name}.tql"), text)));
        }
        Corpus { _dir: dir, queries }
    })
}

/// Equal, or floats equal to 1e-9 relative.
pub fn same_value(a: &AnyValue, b: &AnyValue) -> bool {
    same_to(a, b, 1e-9)
}

/// Equal, or floats equal to `tolerance` relative.
pub fn same_to(a: &AnyValue, b: &AnyValue, tolerance: f64) -> bool {
    match (a, b) {
        (AnyValue::Float64(x), AnyValue::Float64(y)) => {
            x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= tolerance * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// `got` equals `want` (a polars run of the same query): same columns, types,
/// rows (values to 1e-9 relative) and warnings; `how` names `got`'s side.
pub fn assert_same_outcome(name: &str, how: &str, got: &tradeql::run::Outcome, want: &tradeql::run::Outcome) {
    assert_outcome_to(name, how, got, want, 1e-9);
}

/// [`assert_same_outcome`] with values equal to `tolerance` relative.
pub fn assert_outcome_to(
    name: &str,
    how: &str,
    got: &tradeql::run::Outcome,
    want: &tradeql::run::Outcome,
    tolerance: f64,
) {
    assert_eq!(got.frame.get_column_names(), want.frame.get_column_names(), "{name} {how}: columns");
    assert_eq!(got.frame.height(), want.frame.height(), "{name} {how}: rows");
    assert!(want.frame.height() > 0, "{name}: the polars result is empty, so it checks nothing");
    for (g, w) in got.frame.columns().iter().zip(want.frame.columns()) {
        assert_eq!(g.dtype(), w.dtype(), "{name} {how}: type of {}", w.name());
        for i in 0..w.len() {
            let (a, b) = (g.get(i).unwrap(), w.get(i).unwrap());
            assert!(same_to(&a, &b, tolerance), "{name} {how}: {} row {i}: {a} against polars {b}", w.name());
        }
    }
    assert_eq!(got.warnings, want.warnings, "{name} {how}: warnings");
}
