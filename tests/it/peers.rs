//! The store read back by an independent reader (DuckDB, installed by
//! scripts/setup-peers.sh): the same rows and the same sums as the sources.

use crate::common::*;
use std::path::{Path, PathBuf};

/// The Python that has DuckDB: $TRADEQL_PYTHON, else the project's .venv.
/// Missing, the test is skipped on a developer's machine and fails under CI.
pub fn peer_python() -> Option<PathBuf> {
    let candidate = std::env::var_os("TRADEQL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let works =
        std::process::Command::new(&candidate).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "DuckDB is missing under CI: run scripts/setup-peers.sh (tried {})",
        candidate.display()
    );
    eprintln!("skipped: no Python with duckdb (run scripts/setup-peers.sh)");
    None
}

#[test]
fn duckdb_reads_the_bundled_store_with_the_same_rows_and_sums() {
    let Some(python) = peer_python() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("data");
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_bundled(&store);
    let out = std::process::Command::new(python)
        .arg(root.join("tests/peers/readback.py"))
        .args([s(&store), s(&data)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["gacc_rows"], 48);
    assert_eq!(r["gacc_missing"], 0, "rows of the source missing from the store");
    assert_eq!(r["gacc_extra"], 0, "rows in the store that the source lacks");
    assert_eq!(r["gacc_year_matches_period"], true);
    // The reference figure: 2024 exports 25.4546 trillion yuan.
    let by = r["gacc_by_year_flow"].as_array().unwrap();
    let exports_2024 = by.iter().find(|row| row[0] == 2024 && row[1] == "export").unwrap()[2].as_f64().unwrap();
    assert!((exports_2024 / 1e12 - 25.4546).abs() < 5e-5, "{exports_2024}");
    assert_eq!(r["cm_source"], r["cm_stored"], "critical minerals differ by product and year");
    assert_eq!(r["cm_source"].as_array().unwrap().len(), 3 * 8, "3 products x 8 years");
    assert_eq!(r["cm_partners"], 39);
    assert_eq!(r["cm_partner_codes_iso3"], true);
}

#[test]
fn the_five_benchmark_queries_give_the_same_rows_as_duckdb_and_hand_written_polars() {
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Missing cells make missing months; the generated groups overlap.
    gen_into(&store, "--partners 25 --products 40 --months 30 --density 0.3");
    let out = tradeql(&[
        "bench",
        "--store",
        s(&store),
        "--runs",
        "1",
        "--peer",
        "duckdb",
        "--peer",
        "polars",
        "--python",
        s(&python),
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let queries = report["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 5);
    for q in queries {
        let peers = q["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "{q}");
        for p in peers {
            assert_eq!(p["same_rows"], true, "{} differs from {}: {}", q["id"], p["peer"], p["difference"]);
        }
        assert!(q["result_rows"].as_u64().unwrap() > 0);
    }
}
