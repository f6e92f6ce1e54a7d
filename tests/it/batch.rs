//! Batch jobs: extracts as `tradeql run` gives them (read back by DuckDB),
//! failures that cost only their own query, no partial file after a crash, and
//! `--incremental` skipping exactly what is unchanged.

use crate::common::*;
use crate::peers::peer_python;
use crate::queries::bundled_store;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the bundled store (batch takes the store's lock; tests run in parallel).
fn store_copy(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    ingest_bundled(&store);
    store
}

fn job(dir: &Path, store: &Path, queries: &str) -> PathBuf {
    write(dir, "job.toml", &format!("store = {:?}\nout_dir = \"out\"\n{queries}", s(store)))
}

fn run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/run.json")).unwrap()).unwrap()
}

#[test]
fn the_release_job_writes_every_extract_as_run_gives_it() {
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The shipped job, pointed at a store of the bundled data and a scratch folder.
    let text = std::fs::read_to_string(repo().join("queries/release.toml"))
        .unwrap()
        .replace("store = \"../store\"", &format!("store = {:?}", s(bundled_store())))
        .replace("out_dir = \"../extracts\"", &format!("out_dir = {:?}", s(&dir.path().join("extracts"))));
    let job = repo().join("queries").join(format!(".test-job-{}.toml", std::process::id()));
    std::fs::write(&job, text).unwrap();
    let out = tradeql(&["batch", s(&job)]);
    let _ = std::fs::remove_file(&job);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("21 ok, 0 skipped, 0 failed"), "{stdout}");
    let extracts = dir.path().join("extracts");
    for (extract, query, params) in [
        ("trade_2023.parquet", "trade_2024.tql", Some("year=2023")),
        ("trade_2024.parquet", "trade_2024.tql", None),
        ("monthly_2024.parquet", "monthly_2024.tql", None),
        ("ytd_flows.parquet", "ytd_flows.tql", None),
        ("minerals_top_partners.parquet", "minerals_top_partners.tql", None),
        ("minerals_blocs.parquet", "minerals_blocs.tql", None),
        ("revisions_2024.parquet", "revisions_2024.tql", None),
    ] {
        let mut args = vec![
            "run".to_string(),
            s(&repo().join("queries").join(query)).to_string(),
            "--store".into(),
            s(bundled_store()).into(),
            "--format".into(),
            "csv".into(),
        ];
        if let Some(p) = params {
            args.extend(["--param".into(), p.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let csv = write(dir.path(), "expected.csv", &ok(&args));
        let cmp = std::process::Command::new(&python)
            .arg(repo().join("tests/peers/compare_extract.py"))
            .args([s(&extracts.join(extract)), s(&csv)])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&cmp.stdout).trim(),
            "same",
            "{extract}: {}",
            String::from_utf8_lossy(&cmp.stderr)
        );
    }
    // The partitioned extract is a Hive folder, and the CSV extract is plain CSV.
    assert!(extracts.join("minerals_blocs_by_year/year=2024/part-0.parquet").is_file());
    assert!(std::fs::read_to_string(extracts.join("monthly_2024.csv")).unwrap().starts_with("period,value,value_yoy"));
    // The reconciliation: ASEAN and EU, 11 months, 3 flows, every one within 2e-7.
    use polars::prelude::SerReader;
    let file = std::fs::File::open(extracts.join("reconcile_gacc_partners.parquet")).unwrap();
    let found = polars::prelude::ParquetReader::new(file).finish().unwrap();
    assert_eq!(found.height(), 66);
    assert_eq!(found.column("within").unwrap().bool().unwrap().sum(), Some(66));
}

#[test]
fn a_reconciliation_beyond_its_tolerance_fails_the_job_and_keeps_its_extract() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let groups = write(dir.path(), "g.csv", "group,member,valid_from,valid_to\nBLOC,AAA,,\n");
    let src = write(
        dir.path(),
        "t.csv",
        "period,reporter,partner,flow,product,value\n2024-01,CHN,AAA,export,TOTAL,100\n2024-01,CHN,BLOC,export,TOTAL,101\n",
    );
    ok(&["groups", "add", "blocs", s(&groups), "--of", "partner", "--store", s(&store)]);
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "t", "-q"]);
    write(dir.path(), "q.tql", "from t\nby year\nsum value\n");
    let j = job(dir.path(), &store, "[[query]]\nfile = \"q.tql\"\n[[reconcile]]\ndataset = \"t\"\nformat = \"csv\"\n");
    let out = tradeql(&["batch", s(&j)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 of 1 comparisons beyond the tolerance 1e-6"), "{stderr}");
    let text = std::fs::read_to_string(dir.path().join("out/reconcile_t.csv")).unwrap();
    assert!(text.contains("BLOC,2024-01-01,export,1,100.0,101.0"), "{text}");
    // Not strict: the same finding is a note, and the job succeeds.
    let j = job(dir.path(), &store, "[[query]]\nfile = \"q.tql\"\n[[reconcile]]\ndataset = \"t\"\nstrict = false\n");
    assert!(tradeql(&["batch", s(&j)]).status.success());
}

#[test]
fn a_failing_query_leaves_the_others_extracts_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(dir.path());
    write(dir.path(), "good.tql", "from gacc\nby year\nsum value\n");
    write(dir.path(), "bad.tql", "from gacc\nby year\nshow groth(value)\n");
    let j = job(dir.path(), &store, "[[query]]\nfile = \"good.tql\"\n[[query]]\nfile = \"bad.tql\"\n");
    let out = tradeql(&["batch", s(&j)]);
    assert_eq!(out.status.code(), Some(1), "a failed query makes the batch fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FAILED  bad") && stderr.contains("unknown function `groth`"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("1 ok, 0 skipped, 1 failed"));
    let good = dir.path().join("out/good.parquet");
    let df = polars::prelude::ParquetReader::new(std::fs::File::open(&good).unwrap());
    use polars::prelude::SerReader;
    assert_eq!(df.finish().unwrap().height(), 2);
    let run = run_json(dir.path());
    let tasks = run["tasks"].as_array().unwrap();
    let bad = tasks.iter().find(|t| t["name"] == "bad").unwrap();
    assert_eq!(bad["status"], "failed");
    assert!(!dir.path().join("out/bad.parquet").exists());
    let good_rec = tasks.iter().find(|t| t["name"] == "good").unwrap();
    assert_eq!(good_rec["rows"], 2);
    assert_eq!(good_rec["dataset"], "gacc");
    assert_eq!(good_rec["dataset_version"], 1);
    assert_eq!(good_rec["output_sha256"].as_str().unwrap().len(), 64);
}

/// Runs the job with a crash injected after an extract is staged, before its rename.
fn crash_between_staging_and_rename(job: &Path) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["batch", s(job)])
        .env("TRADEQL_CRASH_AT", "batch:extract-staged")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the injected crash did not happen");
}

#[test]
fn a_crash_between_writing_and_renaming_leaves_no_partial_extract() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(dir.path());
    write(dir.path(), "q.tql", "from gacc\nby year\nsum value\n");
    let j = job(dir.path(), &store, "[[query]]\nfile = \"q.tql\"\n");
    // First run crashes: no extract at all, only a temporary file.
    crash_between_staging_and_rename(&j);
    assert!(!dir.path().join("out/q.parquet").exists(), "no extract under its real name");
    // A clean run replaces it; the next crash leaves that extract as it was.
    ok(&["batch", s(&j)]);
    let before = std::fs::read(dir.path().join("out/q.parquet")).unwrap();
    write(dir.path(), "q.tql", "from gacc\nby year, flow\nsum value\n");
    crash_between_staging_and_rename(&j);
    assert_eq!(std::fs::read(dir.path().join("out/q.parquet")).unwrap(), before, "the old extract is intact");
    // The next run clears the leftover temporary file.
    ok(&["batch", s(&j)]);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn incremental_skips_exactly_the_unchanged_queries() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(dir.path());
    write(dir.path(), "totals.tql", "from gacc\nby year\nsum value\n");
    write(dir.path(), "minerals.tql", "from critical_minerals\nby year\nsum value\n");
    write(dir.path(), "flows.tql", "param year = 2024\nfrom gacc\nwhere year = $year\nby flow\nsum value\n");
    let j = job(
        dir.path(),
        &store,
        "[[query]]\nfile = \"totals.tql\"\n[[query]]\nfile = \"minerals.tql\"\n[[query]]\nfile = \"flows.tql\"\nparams = [{ year = 2023 }, { year = 2024 }]\noutput = \"flows_{year}\"\n",
    );
    let statuses = |dir: &Path| -> Vec<(String, String)> {
        let run = run_json(dir);
        run["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_string(), t["status"].as_str().unwrap().to_string()))
            .collect()
    };
    ok(&["batch", s(&j), "--incremental"]);
    assert!(statuses(dir.path()).iter().all(|(_, st)| st == "ok"));
    ok(&["batch", s(&j), "--incremental"]);
    assert!(statuses(dir.path()).iter().all(|(_, st)| st == "skipped"), "{:?}", statuses(dir.path()));
    // A revision of the gacc dataset re-runs the gacc queries, not the minerals one.
    ingest_gacc(&store);
    ok(&["batch", s(&j), "--incremental"]);
    let st = statuses(dir.path());
    for (name, status) in &st {
        let want = if name == "minerals" { "skipped" } else { "ok" };
        assert_eq!(status, want, "{name}: {st:?}");
    }
    // A changed query text re-runs that query alone.
    write(dir.path(), "totals.tql", "from gacc\nby year\nsum value\nshow value\n");
    ok(&["batch", s(&j), "--incremental"]);
    for (name, status) in statuses(dir.path()) {
        assert_eq!(status, if name == "totals" { "ok" } else { "skipped" }, "{name}");
    }
    // A damaged extract is written again even though nothing else changed.
    std::fs::write(dir.path().join("out/minerals.parquet"), b"damaged").unwrap();
    ok(&["batch", s(&j), "--incremental"]);
    for (name, status) in statuses(dir.path()) {
        assert_eq!(status, if name == "minerals" { "ok" } else { "skipped" }, "{name}");
    }
}

#[test]
fn bad_job_files_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let j = write(dir.path(), "j.toml", "store = \"s\"\nout_dir = \"o\"\n[[query]]\nfiel = \"x.tql\"\n");
    let err = fails(&["batch", s(&j)]);
    assert!(err.contains("j.toml:4: invalid job file: unknown field `fiel`"), "{err}");
    let j = write(dir.path(), "j2.toml", "store = \"s\"\nout_dir = \"o\"\n[[query]]\nfile = \"none-*.tql\"\n");
    let err = fails(&["batch", s(&j)]);
    assert!(err.contains("the job's pattern none-*.tql matches no file"), "{err}");
}

#[test]
fn a_job_in_the_current_folder_expands_its_globs_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_copy(dir.path());
    write(dir.path(), "a_one.tql", "from gacc\nby year\nsum value\n");
    write(dir.path(), "a_two.tql", "from gacc\nby flow\nsum value\n");
    job(dir.path(), &store, "[[query]]\nfile = \"a_*.tql\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .current_dir(dir.path())
        .args(["batch", "job.toml"])
        .env_remove("TRADEQL_STORE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("2 ok, 0 skipped, 0 failed"));
}
