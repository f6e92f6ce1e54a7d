//! The aggregate pushdown (src/store/pushdown.rs) against polars alone: every
//! query of the corpus gives the same rows with and without it (1e-9
//! relative; same columns, types, order and warnings), and the queries it can
//! answer (filters included) do use it. Files written by another tool: plain-encoded pages (and
//! version 2 data pages) are read by the pushdown; an encoding it does not
//! read makes it hand the files to polars, with the same rows.

use crate::common::*;
use crate::corpus::{assert_same_outcome, corpus};
use std::path::Path;
use tradeql::exec::with_pushdown;

use tradeql::exec::pushdown::NODE_NAME as NODE;

#[test]
fn every_corpus_query_gives_the_same_rows_with_and_without_the_pushdown() {
    let mut pushed: Vec<String> = Vec::new();
    for (name, store, file) in &corpus().queries {
        let store = tradeql::store::Store::open_existing(store).unwrap();
        let q = tradeql::lang::QueryFile::read(file).unwrap();
        let load = |on: bool| with_pushdown(on, || tradeql::lang::load(&q, &store, &[])).unwrap();
        let (on, off) = (load(true), load(false));
        assert!(!off.compiled.lf.describe_plan().unwrap().contains(NODE), "{name}: pushdown while off");
        if on.compiled.lf.describe_plan().unwrap().contains(NODE) {
            pushed.push(name.clone());
        }
        let got = tradeql::run::collect(&on.compiled).unwrap();
        let want = tradeql::run::collect(&off.compiled).unwrap();
        assert_same_outcome(name, "with the pushdown", &got, &want);
    }
    // Every query whose row stage is at most filters on the calendar or on
    // one code column each, and whose aggregates read stored columns, is
    // answered from the pages, in part (blocs: the national totals) or whole.
    for name in [
        "flows_by_year",
        "minerals_blocs",
        "minerals_highs_streaks",
        "minerals_partners",
        "minerals_top_partners",
        "minerals_unit_values",
        "monthly_2024",
        "monthly_flows",
        "quarters_2024",
        "ytd_flows",
        "q1_flow_growth",
        "q2_partner_growth",
        "q3_partner_share",
        "q4_chapter_ytd",
        "q5_group_contribution",
        "yearly_measures",
        "monthly_measures",
        "blocs",
        "contributions",
        "top_unit_values",
        "quarters",
        "blocs_as_of",
        "heading",
        "no_period",
        "every_aggregate",
        "filters",
        "streaks",
        "years_params",
        "ytd_rollup",
        "quarter_ytd",
    ] {
        assert!(pushed.iter().any(|p| p == name), "{name} does not use the pushdown; these do: {pushed:?}");
    }
    // Sums of derived columns, exchange rates, sections, listings and a
    // total without keys stay on polars alone.
    for name in ["trade_2024", "chapters_filtered", "convert", "sections", "listing", "total"] {
        assert!(!pushed.iter().any(|p| p == name), "{name} uses the pushdown");
    }
}

/// `tradeql run QUERY --store STORE --format csv` with TRADEQL_PUSHDOWN set: (stdout, stderr).
fn run_csv(query: &Path, store: &Path, pushdown: &str) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["run", s(query), "--store", s(store), "--format", "csv"])
        .env("TRADEQL_PUSHDOWN", pushdown)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn assert_same_csv(got: &str, want: &str, what: &str) {
    let (got, want) = (csv_rows(got), csv_rows(want));
    assert_eq!(got.len(), want.len(), "{what}: rows");
    assert!(!want.is_empty(), "{what}: empty result, checks nothing");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>(), "{what}: columns");
        for (k, wv) in w {
            let gv = &g[k];
            let close = match (gv.parse::<f64>(), wv.parse::<f64>()) {
                (Ok(a), Ok(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                _ => gv == wv,
            };
            assert!(close, "{what}: row {i} {k}: {gv} with the pushdown, {wv} without");
        }
    }
}

/// Rewrites every data file of the store's `trade` with pyarrow, `options`
/// passed to `pq.write_table`.
fn rewrite_with_pyarrow(python: &Path, store: &Path, options: &str) {
    let script = format!(
        "import glob, pyarrow.parquet as pq\n\
         for f in glob.glob('{}/trade/year=*/*.parquet'):\n    \
             pq.write_table(pq.ParquetFile(f).read(), f, {options})\n",
        store.display()
    );
    let out = std::process::Command::new(python).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn files_written_by_another_tool_are_read_or_handed_to_polars_with_the_same_rows() {
    let Some(python) = crate::peers::peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    gen_into(&store, "--partners 12 --products 30 --months 24 --density 0.3 --seed 9 --start 2023-01");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut queries: Vec<std::path::PathBuf> = tql_files(&root.join("benches/queries"));
    queries.push(write(
        dir.path(),
        "aggregates.tql",
        "from trade\nby quarter, partner, flow\nagg n = count(), q = sum(quantity), nq = count(quantity), m = mean(value), lo = min(value), hi = max(value)",
    ));
    let want: Vec<String> = queries.iter().map(|q| run_csv(q, &store, "off").0).collect();
    let cases = [
        // No dictionaries at all, version 2 data pages, several row groups
        // per file: the pushdown reads the plain values.
        ("row_group_size=1000, use_dictionary=False, data_page_version='2.0', compression='snappy'", false),
        // Values in BYTE_STREAM_SPLIT, which the pushdown does not decode:
        // polars reads the files instead, and says so when asked.
        (
            "row_group_size=1000, use_dictionary=['partner', 'flow', 'product'], \
             column_encoding={'value': 'BYTE_STREAM_SPLIT'}",
            true,
        ),
    ];
    for (options, handed_to_polars) in cases {
        rewrite_with_pyarrow(&python, &store, options);
        for (q, want) in queries.iter().zip(&want) {
            let (got, stderr) = run_csv(q, &store, "verbose");
            let said = stderr.contains("pushdown cannot read these files");
            assert_eq!(said, handed_to_polars, "{} ({options}): {stderr}", q.display());
            assert_same_csv(&got, want, &format!("{} ({options})", q.display()));
        }
    }
}

#[test]
fn a_query_gives_the_same_bits_whatever_the_number_of_threads() {
    // Row groups are merged in fixed runs and in order, and groups come out
    // ordered by their keys, so sums are added in the same order on 1 thread
    // as on 3. Files of many small row groups (rewritten by pyarrow) make many
    // partial sums to merge. (Q5 is left out: it sums member sums into
    // overlapping groups after a join, in polars, whose order of addition
    // varies with the threads.)
    let Some(python) = crate::peers::peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    gen_into(&store, "--partners 20 --products 40 --months 24 --density 0.5");
    rewrite_with_pyarrow(&python, &store, "row_group_size=97");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in tql_files(&root.join("benches/queries")).iter().filter(|f| !s(f).contains("q5_")) {
        let run = |threads: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
                .args(["run", s(file), "--store", s(&store), "--format", "csv"])
                .env("POLARS_MAX_THREADS", threads)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        let one = run("1");
        assert!(one.len() > 100, "{}: no rows", file.display());
        assert_eq!(one, run("3"), "{}: 1 and 3 threads differ", file.display());
    }
}

#[test]
fn explain_lists_what_the_pushdown_reads() {
    let (_, store, file) = corpus().queries.iter().find(|(n, _, _)| n == "filters").unwrap();
    let text = ok(&["explain", s(file), "--store", s(store)]);
    assert!(text.contains("pushdown: read from the Parquet dictionary pages"), "{text}");
    assert!(text.contains("  - group by period in spans of 3 months, partner: value = sum(value)"), "{text}");
    assert!(text.contains("rows where partner in (\"PAA\", \"PAB\", \"PAC\") (on the values of partner)"), "{text}");
    assert!(text.contains(NODE), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["explain", s(file), "--store", s(store)])
        .env("TRADEQL_PUSHDOWN", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("pushdown:") && !text.contains(NODE), "{text}");
}
