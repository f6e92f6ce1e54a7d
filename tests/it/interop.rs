//! The store and every output open as they are in every reader: each dataset
//! folder of the bundled store and each extract of the release job, read by
//! pyarrow (read_table, dataset with Hive partitioning, and pyarrow 14), pandas,
//! polars (read_parquet, scan_parquet), DuckDB (`read_parquet('dir/**')`) and
//! Spark (`spark.read.parquet(dir)`), give the rows and sums tradeql reads.
//! The readers are installed by scripts/setup-peers.sh; missing, the test
//! skips on a developer's machine and fails under CI.

use crate::common::*;
use crate::peers::peer_python;
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rows, and the sum of each Float64 column's finite values, of what tradeql reads.
type Figures = (u64, BTreeMap<String, f64>);

fn figures(lf: LazyFrame) -> Figures {
    let mut lf = lf;
    let schema = lf.collect_schema().unwrap();
    let columns: Vec<String> =
        schema.iter().filter(|(_, t)| **t == DataType::Float64).map(|(n, _)| n.to_string()).collect();
    let mut exprs = vec![len().alias("__n")];
    exprs.extend(columns.iter().map(|c| col(c.as_str()).filter(col(c.as_str()).is_finite()).sum().alias(c.as_str())));
    let df = lf.select(exprs).collect().unwrap();
    let rows = df.column("__n").unwrap().u32().unwrap().get(0).unwrap() as u64;
    let sums =
        columns.iter().map(|c| (c.clone(), df.column(c).unwrap().f64().unwrap().get(0).unwrap_or(0.0))).collect();
    (rows, sums)
}

/// An extract as tradeql wrote it: a file, or a folder of Hive partitions.
fn extract_figures(path: &Path) -> Figures {
    let lf = if path.is_dir() {
        let glob = format!("{}/**/*.parquet", path.display());
        LazyFrame::scan_parquet(PlRefPath::new(&glob), ScanArgsParquet::default()).unwrap()
    } else {
        LazyFrame::scan_parquet(PlRefPath::new(path.to_string_lossy().as_ref()), ScanArgsParquet::default()).unwrap()
    };
    figures(lf)
}

/// The Python of the pyarrow 14 venv that scripts/setup-peers.sh makes.
fn old_pyarrow() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-pyarrow14/bin/python");
    let works = std::process::Command::new(&python)
        .args(["-c", "import pyarrow; assert pyarrow.__version__.startswith('14.')"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works || std::env::var("CI").as_deref() != Ok("true"),
        "pyarrow 14 is missing under CI: run scripts/setup-peers.sh"
    );
    works.then_some(python)
}

fn spark_present() -> bool {
    let java = std::process::Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success());
    let pyspark = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/spark-submit").is_file();
    assert!(
        (java && pyspark) || std::env::var("CI").as_deref() != Ok("true"),
        "Spark is missing under CI: run scripts/setup-peers.sh"
    );
    java && pyspark
}

/// Runs tests/peers/interop.py with `python` on the targets; what each reader got.
fn read_with(python: &Path, spec: &serde_json::Value, dir: &Path, spark: bool) -> serde_json::Value {
    let spec_path = dir.join(format!("spec-{}.json", spark));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/interop.py")).arg(&spec_path);
    if spark {
        cmd.arg("--spark");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn every_reader_opens_the_store_and_every_extract_with_tradeqls_rows_and_sums() {
    let Some(python) = peer_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("release");
    std::fs::create_dir_all(root.join("queries")).unwrap();
    let store = root.join("store");
    ingest_bundled(&store);
    // A revision, so that the store keeps a replaced version out of the readers' way.
    ingest_gacc(&store);
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries");
    for entry in std::fs::read_dir(&queries).unwrap().flatten() {
        std::fs::copy(entry.path(), root.join("queries").join(entry.file_name())).unwrap();
    }
    ok(&["batch", s(&root.join("queries/release.toml"))]);

    let mut expected: BTreeMap<String, Figures> = BTreeMap::new();
    let mut spec = serde_json::Map::new();
    let tq = tradeql::store::Store::at(&store);
    for dataset in tq.datasets().unwrap() {
        let m = tq.manifest(&dataset).unwrap().unwrap();
        let (rows, mut sums) = figures(tradeql::exec::scan_dataset(&store, &m).unwrap());
        assert_eq!(rows, m.rows);
        sums.retain(|c, _| c == "value" || c == "quantity");
        let name = format!("store/{dataset}");
        spec.insert(
            name.clone(),
            serde_json::json!({"path": s(&store.join(&dataset)), "columns": sums.keys().collect::<Vec<_>>()}),
        );
        expected.insert(name, (rows, sums));
    }
    let extracts = root.join("extracts");
    let mut n_extracts = 0;
    for entry in std::fs::read_dir(&extracts).unwrap().flatten() {
        let path = entry.path();
        let is_parquet = path.extension().is_some_and(|e| e == "parquet");
        if !(is_parquet || path.is_dir()) {
            continue;
        }
        n_extracts += 1;
        let (rows, sums) = extract_figures(&path);
        let name = format!("extract/{}", entry.file_name().to_string_lossy());
        spec.insert(name.clone(), serde_json::json!({"path": s(&path), "columns": sums.keys().collect::<Vec<_>>()}));
        expected.insert(name, (rows, sums));
    }
    assert!(n_extracts >= 15, "only {n_extracts} Parquet extracts");
    let spec = serde_json::Value::Object(spec);

    let mut got = vec![read_with(&python, &spec, dir.path(), spark_present())];
    if let Some(old) = old_pyarrow() {
        got.push(read_with(&old, &spec, dir.path(), false));
        // An Arrow (IPC) result too: plain strings, no views.
        let arrow = dir.path().join("monthly.arrow");
        let q = root.join("queries/monthly_flows.tql");
        ok(&["run", s(&q), "--store", s(&store), "--out", s(&arrow)]);
        let script = "import pyarrow.ipc as i, sys; t = i.open_file(sys.argv[1]).read_all(); print(t.num_rows)";
        let out = std::process::Command::new(&old).args(["-c", script, s(&arrow)]).output().unwrap();
        assert!(out.status.success(), "pyarrow 14 on an Arrow result: {}", String::from_utf8_lossy(&out.stderr));
        let rows = ok(&["run", s(&q), "--store", s(&store), "-f", "csv"]).lines().count() - 1;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), rows.to_string());
    }
    let mut readers = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for results in &got {
        for (target, (rows, sums)) in &expected {
            for (reader, r) in results[target].as_object().unwrap() {
                readers.insert(reader.clone());
                if let Some(e) = r.get("error") {
                    failures.push(format!("{target}: {reader}: {e}"));
                    continue;
                }
                if r["rows"].as_u64() != Some(*rows) {
                    failures.push(format!("{target}: {reader}: {} rows, tradeql reads {rows}", r["rows"]));
                }
                for (c, want) in sums {
                    let sum = r["sums"][c].as_f64().unwrap();
                    if !close(sum, *want) {
                        failures.push(format!("{target}: {reader}: sum of {c} {sum}, tradeql reads {want}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    let wanted = if spark_present() { 7 } else { 6 } + usize::from(old_pyarrow().is_some());
    assert!(readers.len() >= wanted, "readers tried: {readers:?}");
    eprintln!("{} readers agree on {} targets: {readers:?}", readers.len(), expected.len());
}
