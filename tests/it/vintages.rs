//! Vintages: a revision keeps the version it replaces, out of the plain
//! readers' way; a query reads any kept version; `first_release` compares each
//! period as first published with its latest revision (on polars and SQL);
//! `vacuum` removes old versions. The figures are those of the small sources below, worked by hand.

use crate::common::*;
use std::path::Path;

const HEADER: &str = "period,reporter,partner,flow,product,value\n";

/// Three ingests into dataset `t`: v1 January 100 and February 200; v2 revises
/// February to 250 and adds March 300; v3 revises January to 90 and March to 330.
fn three_versions(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    for (name, rows) in [
        ("v1.csv", "2024-01,CHN,USA,export,TOTAL,100\n2024-02,CHN,USA,export,TOTAL,200\n"),
        ("v2.csv", "2024-02,CHN,USA,export,TOTAL,250\n2024-03,CHN,USA,export,TOTAL,300\n"),
        ("v3.csv", "2024-03,CHN,USA,export,TOTAL,330\n2024-01,CHN,USA,export,TOTAL,90\n"),
    ] {
        let file = write(dir, name, &format!("{HEADER}{rows}"));
        ok(&["ingest", s(&file), "--store", s(&store), "-d", "t", "-q"]);
    }
    store
}

/// `run -e QUERY -f csv` on `store` with `extra` arguments: the CSV's lines after the header.
fn csv(store: &Path, query: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["run", "-e", query, "--store", s(store), "-f", "csv"];
    args.extend(extra);
    ok(&args).lines().skip(1).map(str::to_string).collect()
}

#[test]
fn each_kept_version_is_read_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let by_period = "from t | by period | sum value";
    assert_eq!(csv(&store, by_period, &[]), ["2024-01-01,90.0", "2024-02-01,250.0", "2024-03-01,330.0"]);
    assert_eq!(csv(&store, "from t@1 | by period | sum value", &[]), ["2024-01-01,100.0", "2024-02-01,200.0"]);
    let v2 = ["2024-01-01,100.0", "2024-02-01,250.0", "2024-03-01,300.0"];
    assert_eq!(csv(&store, "from t@2 | by period | sum value", &[]), v2);
    assert_eq!(csv(&store, by_period, &["--as-of-version", "2"]), v2);
    // The end of today is after every commit: the current version.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(csv(&store, by_period, &["--as-of", &today]).len(), 3);
    let out = tradeql(&["run", "-e", by_period, "--store", s(&store), "--as-of", "2000-01-01"]);
    assert_eq!(out.status.code(), Some(66), "no version by then: not found");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no kept version of t was committed by the end of 2000-01-01")
    );
    let out = tradeql(&["run", "-e", "from t@9 | by period | sum value", "--store", s(&store)]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("version 9 of t is not kept (kept: 1, 2, 3)") && err.contains("from t@9"), "{err}");
    // info lists every version with its date, source and what it changed.
    let info = ok(&["info", s(&store)]);
    assert!(info.contains("versions    3 kept"), "{info}");
    assert!(info.contains("v1.csv: added 2024-01 .. 2024-02\n"), "{info}");
    assert!(info.contains("v2.csv: added 2024-03; revised 2024-02\n"), "{info}");
    assert!(info.contains("v3.csv: revised 2024-01, 2024-03\n"), "{info}");
}

#[test]
fn first_release_compares_each_month_as_first_published_with_its_latest_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let q = "from t | by period | sum value | show first = first_release(value), value, \
             revision = value - first_release(value)";
    // January first published in v1 (100), February in v1 (200), March in v2 (300).
    assert_eq!(
        csv(&store, q, &[]),
        ["2024-01-01,100.0,90.0,-10.0", "2024-02-01,200.0,250.0,50.0", "2024-03-01,300.0,330.0,30.0"]
    );
    // A year roll-up adds the first releases: 600 against 670.
    let year = csv(&store, "from t | by year | sum value | show first_release(value), value", &[]);
    assert_eq!(year, ["2024,600.0,670.0"]);
    // Read as of v2, the revisions are those made by then.
    assert_eq!(
        csv(&store, "from t@2 | by period | sum value | show first_release(value), value", &[]),
        ["2024-01-01,100.0,100.0", "2024-02-01,200.0,250.0", "2024-03-01,300.0,300.0"]
    );
    // The same without the aggregate pushdown.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["run", "-e", q, "--store", s(&store), "-f", "csv"])
        .env("TRADEQL_PUSHDOWN", "off")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("2024-02-01,200.0,250.0,50.0"));
    // The SQL backends read the same versions' files (DuckDB here; Spark in the corpus).
    if let Some(python) = crate::peers::peer_python() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
            .args(["run", "-e", q, "--store", s(&store), "-f", "csv", "--engine", "duckdb"])
            .env("TRADEQL_PYTHON", python)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("2024-01-01,100.0,90.0,-10.0\n2024-02-01,200.0,250.0,50.0"), "{text}");
    }
    let out = tradeql(&["run", "-e", "from t | where first_release(value) > 0", "--store", s(&store)]);
    assert_eq!(out.status.code(), Some(65), "first_release before aggregation is a query error");
}

#[test]
fn plain_readers_see_the_current_version_only_and_vacuum_removes_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    // The published folder: the current version's one file, read by any Parquet reader.
    let published: Vec<_> = std::fs::read_dir(store.join("t/year=2024")).unwrap().flatten().collect();
    assert_eq!(published.len(), 1);
    assert_eq!(totals(&store, "t"), (3, 670.0));
    assert!(!store.join("t/manifest.json").exists(), "nothing but data in the dataset's folder");
    let pool = store.join(".tradeql/datasets/t/files/year=2024");
    assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 3, "each version's file kept");

    let out = tradeql(&["vacuum", "--keep", "0", "--store", s(&store)]);
    assert_eq!(out.status.code(), Some(2));
    let said = ok(&["vacuum", "--keep", "2", "--store", s(&store)]);
    assert!(said.starts_with("t: removed v1 (1 files,"), "{said}");
    assert_eq!(std::fs::read_dir(&pool).unwrap().count(), 2);
    let out = tradeql(&["run", "-e", "from t@1 | by period | sum value", "--store", s(&store)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 1 of t is not kept (kept: 2, 3)"));
    assert_eq!(csv(&store, "from t@2 | by period | sum value", &[]).len(), 3);
    // first_release now starts from the earliest kept version: v2 for January and February.
    assert_eq!(
        csv(&store, "from t | by period | sum value | show first_release(value)", &[]),
        ["2024-01-01,100.0", "2024-02-01,250.0", "2024-03-01,300.0"]
    );
    let info = ok(&["info", s(&store), "--verify"]);
    assert!(info.contains("verify: every file matches its manifest"), "{info}");
    assert!(info.contains("versions    2 kept"), "{info}");
    assert_eq!(ok(&["vacuum", "--keep", "2", "--store", s(&store)]).trim(), "t: removed no version (0 files, 0 bytes)");
}

#[test]
fn a_store_of_the_earlier_layout_is_moved_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    // The earlier layout: the manifest among the data, the files in the year folders only.
    let manifest = std::fs::read_to_string(store.join(".tradeql/datasets/t/manifest.json")).unwrap();
    std::fs::remove_dir_all(store.join(".tradeql")).unwrap();
    std::fs::write(store.join("t/manifest.json"), &manifest).unwrap();
    let listed: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let path = listed["files"][0]["path"].as_str().unwrap();
    std::fs::rename(store.join("t/year=2024/part-0.parquet"), store.join("t").join(path)).unwrap();
    let out = tradeql(&["run", "-e", "from t | by period | sum value", "--store", s(&store)]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in the layout of an earlier tradeql"));
    let info = ok(&["info", s(&store), "--verify"]);
    assert!(info.contains("verify: every file matches its manifest"), "{info}");
    assert!(!store.join("t/manifest.json").exists());
    // Published under the name that stays: the earlier name is gone.
    assert!(store.join("t/year=2024/part-0.parquet").is_file() && !store.join("t").join(path).exists());
    assert_eq!(csv(&store, "from t | by period | sum value", &[]).len(), 3);
}

#[test]
fn a_version_named_twice_is_refused_and_verify_says_what_it_republished() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let err = fails(&["run", "-e", "from t@2 | by period | sum value", "--store", s(&store), "--as-of-version", "1"]);
    assert!(err.contains("the query reads version 2, and --as-of asks for another"), "{err}");
    // The same version twice is no conflict.
    ok(&["run", "-e", "from t@2 | by period | sum value", "--store", s(&store), "--as-of-version", "2"]);
    // A published year removed by hand: verify brings it back and says so.
    std::fs::remove_dir_all(store.join("t/year=2024")).unwrap();
    let info = ok(&["info", s(&store), "--verify"]);
    assert!(info.contains("published 1 year folder again"), "{info}");
    assert_eq!(totals(&store, "t"), (3, 670.0));
}

/// Revisions back to back while a plain reader lists the published folder and
/// opens what it listed, as a glob reader does: never a file missing, never two
/// files in a year.
#[test]
fn a_plain_reader_never_misses_a_file_it_listed_while_revisions_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_versions(dir.path());
    let (a, b) = (
        write(
            dir.path(),
            "a.csv",
            &format!("{HEADER}2024-01,CHN,USA,export,TOTAL,1\n2023-05,CHN,USA,export,TOTAL,2\n"),
        ),
        write(
            dir.path(),
            "b.csv",
            &format!("{HEADER}2024-01,CHN,USA,export,TOTAL,3\n2023-05,CHN,USA,export,TOTAL,4\n"),
        ),
    );
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (done, tree) = (done.clone(), store.join("t"));
        std::thread::spawn(move || {
            let (mut reads, mut problems) = (0, Vec::new());
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for year in std::fs::read_dir(&tree).unwrap().flatten() {
                    let files: Vec<_> = std::fs::read_dir(year.path())
                        .map(|d| d.flatten().map(|e| e.path()).collect())
                        .unwrap_or_default();
                    if files.len() != 1 {
                        problems.push(format!("{} holds {files:?}", year.path().display()));
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    for f in files {
                        if let Err(e) = std::fs::read(&f) {
                            problems.push(format!("{}: {e}", f.display()));
                        }
                        reads += 1;
                    }
                }
            }
            (reads, problems)
        })
    };
    for i in 0..40 {
        let file = if i % 2 == 0 { &a } else { &b };
        ok(&["ingest", s(file), "--store", s(&store), "-d", "t", "-q"]);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, problems) = reader.join().unwrap();
    assert!(reads > 100, "only {reads} reads");
    assert!(problems.is_empty(), "{} of {reads} reads: {:?}", problems.len(), &problems[..problems.len().min(5)]);
}
