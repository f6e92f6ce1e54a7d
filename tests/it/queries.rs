//! The saved query corpus, run as golden files: each `queries/NAME.tql` is run
//! on a store of the bundled data, and its table (with warnings) must equal
//! `queries/NAME.expected`. `TRADEQL_BLESS=1` rewrites the expected files; a
//! rewritten file is a change to review, like any other.
//! The reference figures of the customs press release are also checked
//! numerically, on the exact CSV output.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A store holding the bundled data, built once for all tests.
pub fn bundled_store() -> &'static Path {
    static STORE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = STORE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        ingest_bundled(&store);
        (dir, store)
    });
    path
}

fn run_table(query: &Path) -> String {
    let out = tradeql(&["run", s(query), "--store", s(bundled_store())]);
    assert!(out.status.success(), "{}: {}", query.display(), String::from_utf8_lossy(&out.stderr));
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.is_empty() {
        text.push_str(&stderr);
    }
    text
}

#[test]
fn every_saved_query_gives_its_expected_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    let queries = tql_files(&dir);
    assert!(queries.len() >= 8, "the corpus shrank: {queries:?}");
    let bless = std::env::var_os("TRADEQL_BLESS").is_some();
    let mut failures = Vec::new();
    for q in &queries {
        let got = run_table(q);
        let expected_path = q.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} has no expected output; run with TRADEQL_BLESS=1", q.display()));
        if got != expected {
            failures.push(format!("{}:\n--- expected\n{expected}\n--- got\n{got}", q.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs a query to CSV and returns its rows as maps of column -> text.
pub fn run_csv(query: &Path, params: &[&str]) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut args = vec!["run", s(query), "--store", s(bundled_store()), "--format", "csv"];
    for p in params {
        args.extend(["--param", p]);
    }
    csv_rows(&ok(&args))
}

fn num(row: &std::collections::BTreeMap<String, String>, col: &str) -> f64 {
    row[col].parse().unwrap_or_else(|_| panic!("{col} = {:?}", row[col]))
}

fn query(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("queries").join(name)
}

#[test]
fn reference_figures_of_2024() {
    let rows = run_csv(&query("trade_2024.tql"), &[]);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    // Published: total 43.85 trillion yuan, +5.0%; exports 25.45, +7.1%; imports 18.39, +2.3%; surplus ~7.06.
    assert_eq!(format!("{:.2}", num(r, "total") / 1e12), "43.85");
    assert_eq!(format!("{:.1}", num(r, "total_growth") * 100.0), "5.0");
    assert_eq!(format!("{:.2}", num(r, "exports") / 1e12), "25.45");
    assert_eq!(format!("{:.1}", num(r, "exports_growth") * 100.0), "7.1");
    assert_eq!(format!("{:.2}", num(r, "imports") / 1e12), "18.39");
    assert_eq!(format!("{:.1}", num(r, "imports_growth") * 100.0), "2.3");
    assert_eq!(format!("{:.2}", num(r, "surplus") / 1e12), "7.06");
    // "Foreign trade grew by 2.1 trillion yuan": 43.85 - 41.75.
    assert_eq!(format!("{:.1}", num(r, "total_increase") / 1e12), "2.1");
    // The same query for the year before, through --param.
    let r23 = &run_csv(&query("trade_2024.tql"), &["year=2023"])[0];
    assert_eq!(r23["year"], "2023");
    assert_eq!(format!("{:.4}", num(r23, "total") / 1e12), "41.7510");
}

#[test]
fn reference_figures_of_q4_and_december() {
    let q = run_csv(&query("quarters_2024.tql"), &[]);
    let q4 = q.iter().find(|r| r["quarter"] == "2024-Q4").unwrap();
    assert_eq!(format!("{:.2}", num(q4, "value") / 1e12), "11.51");
    let m = run_csv(&query("monthly_2024.tql"), &[]);
    assert_eq!(m.len(), 12);
    let dec = &m[11];
    assert_eq!(dec["period"], "2024-12-01");
    assert!(num(dec, "value") > 4e12);
    assert_eq!(format!("{:.1}", num(dec, "value_yoy") * 100.0), "6.8");
    assert_eq!(dec["value_record"], "true", "December 2024 is the first month above 4 trillion");
    assert!(m[..11].iter().all(|r| r["above_4tn"] == "false"));
    // Year-to-date growth month by month ends at the annual growth.
    assert_eq!(format!("{:.1}", num(dec, "value_ytd_yoy") * 100.0), "5.0");
    assert_eq!(format!("{:.1}", num(&m[0], "value_ytd_yoy") * 100.0), "12.8");
}

#[test]
fn year_to_date_roll_up_matches_the_monthly_year_to_date() {
    let m = run_csv(&query("monthly_2024.tql"), &[]);
    for through in ["2024-03", "2024-11", "2024-12"] {
        let month: usize = through[5..].parse().unwrap();
        let rows = run_csv(&query("ytd_flows.tql"), &[&format!("through={through}")]);
        let y24: Vec<_> = rows.iter().filter(|r| r["year"] == "2024").collect();
        assert_eq!(y24.len(), 2, "{through}: exports and imports");
        let total: f64 = y24.iter().map(|r| num(r, "value")).sum();
        let ytd = &m[month - 1];
        assert!((total / num(ytd, "value_ytd") - 1.0).abs() < 1e-12, "{through}: {total} against {}", ytd["value_ytd"]);
        // Growth of the total from the flows' growths, weighted by last year's values.
        let before: f64 = y24.iter().map(|r| num(r, "value") / (1.0 + num(r, "value_yoy"))).sum();
        assert!((total / before - 1.0 - num(ytd, "value_ytd_yoy")).abs() < 1e-12, "{through}");
    }
    // January to November 2024, as published: exports +6.7%, imports +2.4% (yuan).
    let rows = run_csv(&query("ytd_flows.tql"), &[]);
    let growth = |flow: &str| {
        let r = rows.iter().find(|r| r["year"] == "2024" && r["flow"] == flow).unwrap();
        format!("{:.1}", num(r, "value_yoy") * 100.0)
    };
    assert_eq!(growth("export"), "6.7");
    assert_eq!(growth("import"), "2.4");
    // A window that runs past the data ends at the last stored month (December): whole years.
    let past = run_csv(&query("ytd_flows.tql"), &["through=2025-03"]);
    assert_eq!(past, run_csv(&query("ytd_flows.tql"), &["through=2024-12"]));
    let dir = tempfile::tempdir().unwrap();
    let year = run_csv(&write(dir.path(), "year_flows.tql", "from gacc\nby year, flow\nsum value"), &[]);
    assert_eq!(
        past.iter().map(|r| &r["value"]).collect::<Vec<_>>(),
        year.iter().map(|r| &r["value"]).collect::<Vec<_>>()
    );
}

/// The partner figures of the customs briefing of 13 January 2025, from the
/// partner table as published (data/README.md computes them independently).
#[test]
fn partner_figures_of_the_briefing_of_13_january_2025() {
    let pct =
        |r: &std::collections::BTreeMap<String, String>, c: &str, d: usize| format!("{:.*}", d, num(r, c) * 100.0);
    let blocs = run_csv(&query("partners_blocs_2024.tql"), &[]);
    let bloc = |name: &str| blocs.iter().find(|r| r["bloc"] == name).unwrap_or_else(|| panic!("{name}: {blocs:?}"));
    assert_eq!(pct(bloc("ASEAN"), "share", 2), "15.94");
    assert_eq!(format!("{:.3}", num(bloc("ASEAN"), "trade") / 1e12), "6.990");
    for (name, growth, members) in
        [("ASEAN", "9.0", "10"), ("EU", "1.6", "27"), ("CENTRAL_ASIA", "7.2", "5"), ("CHINA_CEEC", "7.5", "14")]
    {
        assert_eq!(pct(bloc(name), "growth", 1), growth, "{name}");
        assert_eq!(bloc(name)["members"], members, "{name}");
    }
    let eu = run_csv(&query("partners_eu_flows_2024.tql"), &[]);
    let flow = |f: &str| eu.iter().find(|r| r["flow"] == f).unwrap();
    assert_eq!((pct(flow("export"), "growth", 1), pct(flow("import"), "growth", 1)), ("4.3".into(), "-3.3".into()));
    let countries = run_csv(&query("partners_countries_2024.tql"), &[]);
    let got: Vec<(String, String)> = countries.iter().map(|r| (r["partner"].clone(), pct(r, "growth", 1))).collect();
    let want = [("USA", "4.9"), ("FRA", "2.0"), ("ESP", "4.5"), ("HUN", "12.9")];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    let regions = run_csv(&query("partners_un_regions_2024.tql"), &[]);
    let region = |n: &str| regions.iter().find(|r| r["un_region"] == n).unwrap();
    assert_eq!(
        (
            pct(region("Latin America and the Caribbean"), "growth", 1),
            region("Latin America and the Caribbean")["partners"].as_str()
        ),
        ("7.2".into(), "50")
    );
    assert_eq!((pct(region("Africa"), "growth", 1), region("Africa")["partners"].as_str()), ("6.1".into(), "59"));
    let top = run_csv(&query("partners_top10_2024.tql"), &[]);
    let order: Vec<&str> = top.iter().map(|r| r["partner"].as_str()).collect();
    assert_eq!(order, ["USA", "KOR", "HKG", "JPN", "TWN", "VNM", "RUS", "MYS", "AUS", "DEU", "others"]);
    assert_eq!(top[0]["name"], "US");
    let usd = &run_csv(&query("trade_2024_usd.tql"), &[])[0];
    let t = |c: &str| format!("{:.2}", num(usd, c) / 1e12);
    assert_eq!((t("total"), t("exports"), t("imports")), ("6.09".into(), "3.54".into(), "2.56".into()));
}

#[test]
fn a_one_line_query_runs_with_e_and_its_errors_name_the_stage() {
    let got = csv_rows(&ok(&[
        "run",
        "-e",
        "from gacc | where year = 2024 | by year | sum value",
        "--store",
        s(bundled_store()),
        "--format",
        "csv",
    ]));
    assert_eq!(got.len(), 1);
    assert_eq!(format!("{:.2}", num(&got[0], "value") / 1e12), "43.85");
    // A `|` inside quotes is text, not a stage break.
    let out = tradeql(&[
        "run",
        "-e",
        "from gacc | where partner = \"a|b\" | by year | sum value",
        "--store",
        s(bundled_store()),
    ]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-e:2:"), "{}", String::from_utf8_lossy(&out.stderr));
    let err = fails(&["run", "-e", "from gacc | by year | show groth(value)", "--store", s(bundled_store())]);
    assert!(err.starts_with("error: -e:3:6: unknown function `groth`"), "{err}");
    let err = fails(&["run", "-e", "from gacc", "queries/trade_2024.tql"]);
    assert!(err.contains("cannot be used with"), "{err}");
}
