//! Scale-out: every query of the corpus compiled to SQL and run on Spark (local
//! mode, pyspark from PyPI, Java 17) and on DuckDB, each result equal to the
//! polars backend's (1e-9 relative; same columns, types, order and warnings).
//! The corpus is queries/ on the bundled data (with exchange rates added for
//! convert()), the five benchmark queries, and queries that use every measure,
//! aggregate and stage on a generated panel with missing months and
//! overlapping partner groups. scripts/setup-peers.sh installs the engines;
//! missing, the tests skip on a developer's machine and fail under CI.

use crate::common::*;
use crate::corpus::{assert_same_outcome, corpus, same_value};
use polars::prelude::*;
use std::path::{Path, PathBuf};
use tradeql::sql::Dialect;
use tradeql::sql::engine::EngineOptions;

/// Missing, the test is skipped on a developer's machine and fails under CI.
fn skip(what: &str) -> bool {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{what} is missing under CI: run scripts/setup-peers.sh");
    eprintln!("skipped: {what} is missing (run scripts/setup-peers.sh)");
    true
}

fn spark_submit() -> Option<PathBuf> {
    let submit = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/spark-submit");
    let java = std::process::Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success());
    if submit.is_file() && java {
        return Some(submit);
    }
    skip("Spark (pyspark in .venv, and Java 17)");
    None
}

/// Runs the corpus with polars and on `dialect`; returns how many queries agreed.
fn check_engine(dialect: Dialect, options: &EngineOptions) -> usize {
    let corpus = corpus();
    let mut loaded = Vec::new();
    for (name, store, file) in &corpus.queries {
        let store = tradeql::store::Store::open_existing(store).unwrap();
        let q = tradeql::lang::QueryFile::read(file).unwrap();
        let l = tradeql::lang::load(&q, &store, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        loaded.push((name, l, store.root().to_path_buf()));
    }
    let pairs: Vec<(&tradeql::lang::Loaded, &Path)> = loaded.iter().map(|(_, l, s)| (l, s.as_path())).collect();
    let results = tradeql::sql::run_loaded(&pairs, dialect, options).unwrap();
    let mut agreed = 0;
    for ((name, l, _), result) in loaded.iter().zip(results) {
        let want = tradeql::run::collect(&l.compiled).unwrap();
        let got = result.unwrap_or_else(|e| panic!("{name} on {}: {e}", dialect.name()));
        assert_same_outcome(name, &format!("on {}", dialect.name()), &got, &want);
        agreed += 1;
    }
    agreed
}

#[test]
fn the_whole_corpus_gives_the_same_results_on_duckdb_as_on_polars() {
    let Some(python) = crate::peers::peer_python() else { return };
    let agreed = check_engine(Dialect::Duckdb, &EngineOptions { python: Some(python), ..Default::default() });
    assert_eq!(agreed, corpus().queries.len());
}

#[test]
fn the_whole_corpus_gives_the_same_results_on_spark_as_on_polars() {
    let Some(submit) = spark_submit() else { return };
    let options = EngineOptions { spark_submit: Some(submit), master: Some("local[2]".into()), ..Default::default() };
    let agreed = check_engine(Dialect::Spark, &options);
    assert_eq!(agreed, corpus().queries.len());
}

#[test]
fn run_on_spark_prints_like_a_polars_run_and_sql_reads_the_manifests_files() {
    let corpus = corpus();
    let (_, store, file) = corpus.queries.iter().find(|(n, _, _)| n == "trade_2024").unwrap();
    // The SQL names exactly the manifest's files, under the URI given.
    let text = ok(&["sql", s(file), "--dialect", "spark", "--store", s(store), "--store-uri", "s3a://bucket/store/"]);
    let from = |year: i32| {
        format!("FROM parquet.`s3a://bucket/store/.tradeql/datasets/gacc/files/year={year}/part-v000001.parquet`")
    };
    assert!(text.contains(&from(2024)) && text.contains(&from(2023)), "{text}");
    let text = ok(&["sql", s(file), "--dialect", "duckdb", "--store", s(store)]);
    assert!(text.contains("read_parquet(['/"), "{text}");

    // No spark-submit anywhere: a clear error that says how to install it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["run", s(file), "--store", s(store), "--engine", "spark"])
        .env("PATH", "/nonexistent")
        .env_remove("TRADEQL_SPARK_SUBMIT")
        .env_remove("TRADEQL_PYTHON")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Spark is not installed: no spark-submit on the PATH, and no pyspark"), "{err}");
    assert!(err.contains("pip install pyspark"), "{err}");

    let Some(submit) = spark_submit() else { return };
    let run = |engine: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
            .args(["run", s(file), "--store", s(store), "--engine", engine, "--master", "local[1]"])
            .env("TRADEQL_SPARK_SUBMIT", &submit)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let table = run("spark");
    assert!(table.contains("43.85") && table.contains("5.0%") && table.contains("7.06"), "{table}");
    let polars = ok(&["run", s(file), "--store", s(store)]);
    assert_eq!(table, polars);

    // No spark-submit on the PATH, but a Python with pyspark: it starts Spark itself.
    let python = submit.with_file_name("python");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["run", s(file), "--store", s(store), "--engine", "spark", "--master", "local[1]"])
        .env("PATH", "/usr/bin:/bin")
        .env_remove("TRADEQL_SPARK_SUBMIT")
        .env("TRADEQL_PYTHON", &python)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), polars);
}

/// Every extract of `dir` (Parquet) against the one of the same name in `want`.
fn same_extracts(dir: &Path, want: &Path, engine: &str) -> usize {
    let read = |p: &Path| {
        LazyFrame::scan_parquet(PlRefPath::new(p.to_str().unwrap()), ScanArgsParquet::default())
            .unwrap()
            .collect()
            .unwrap()
    };
    let mut compared = 0;
    for f in std::fs::read_dir(want).unwrap().map(|e| e.unwrap().path()) {
        if f.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let name = f.file_name().unwrap();
        let (got, expected) = (read(&dir.join(name)), read(&f));
        assert_eq!(got.schema(), expected.schema(), "{engine}: {name:?}");
        assert_eq!(got.height(), expected.height(), "{engine}: {name:?}");
        for (g, w) in got.columns().iter().zip(expected.columns()) {
            for i in 0..w.len() {
                let (a, b) = (g.get(i).unwrap(), w.get(i).unwrap());
                assert!(same_value(&a, &b), "{engine}: {name:?} {} row {i}: {a} against {b}", w.name());
            }
        }
        compared += 1;
    }
    compared
}

#[test]
fn a_batch_on_spark_and_duckdb_writes_the_extracts_polars_writes() {
    let corpus = corpus();
    let (_, store, _) = corpus.queries.iter().find(|(n, _, _)| n == "trade_2024").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let queries: Vec<PathBuf> = tql_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"));
    let batch = |engine: &str, env: &[(&str, &Path)]| -> PathBuf {
        let out = dir.path().join(engine);
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"));
        command.arg("run").args(&queries).args(["--out-dir", s(&out), "--store", s(store), "--engine", engine]);
        for (k, v) in env {
            command.env(k, v);
        }
        let result = command.output().unwrap();
        assert!(result.status.success(), "{engine}: {}", String::from_utf8_lossy(&result.stderr));
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
        assert_eq!(run["engine"], engine);
        assert_eq!(run["tasks"].as_array().unwrap().len(), queries.len());
        out
    };
    let polars = batch("polars", &[]);
    if let Some(python) = crate::peers::peer_python() {
        let duckdb = batch("duckdb", &[("TRADEQL_PYTHON", &python)]);
        assert_eq!(same_extracts(&duckdb, &polars, "duckdb"), queries.len());
    }
    if let Some(submit) = spark_submit() {
        let spark = batch("spark", &[("TRADEQL_SPARK_SUBMIT", &submit)]);
        assert_eq!(same_extracts(&spark, &polars, "spark"), queries.len());
    }
}
