//! A process killed at any moment leaves a consistent store with the previous
//! (or, past the commit point, the new) data: `info --verify` passes, and the
//! totals are exactly one version's. Before any recovery, a plain reader of the
//! published folder (a polars glob and DuckDB's `read_parquet('dir/**')`) reads
//! each year as the old version or the new one has it, never a mix.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

struct Setup {
    _dir: tempfile::TempDir,
    store: std::path::PathBuf,
    big: std::path::PathBuf,
    old: (u64, f64),
    new: (u64, f64),
    old_years: Years,
    new_years: Years,
    duckdb: Option<std::path::PathBuf>,
}

/// Rows and sum of value per year of the period.
type Years = BTreeMap<i32, (u64, f64)>;

/// What a polars glob read of the published folder finds, per year.
fn plain_years(store: &Path) -> Years {
    use polars::prelude::*;
    let glob = format!("{}/trade/**/*.parquet", store.display());
    let df = LazyFrame::scan_parquet(PlRefPath::new(&glob), ScanArgsParquet::default())
        .unwrap()
        .group_by([col("period").dt().year().alias("y")])
        .agg([len().alias("n"), col("value").sum().alias("v")])
        .collect()
        .unwrap();
    let (y, n, v) = (df.column("y").unwrap().i32().unwrap(), df.column("n").unwrap(), df.column("v").unwrap());
    (0..df.height())
        .map(|i| (y.get(i).unwrap(), (n.u32().unwrap().get(i).unwrap() as u64, v.f64().unwrap().get(i).unwrap())))
        .collect()
}

/// What DuckDB's `read_parquet('DIR/**')` of the published folder finds, per year.
fn duckdb_years(python: &Path, store: &Path) -> Years {
    let sql = "SELECT year(period), count(*), sum(value) FROM read_parquet(?) GROUP BY 1";
    let script =
        format!("import duckdb, json, sys; print(json.dumps(duckdb.execute({sql:?}, [sys.argv[1]]).fetchall()))");
    let out = Command::new(python).args(["-c", &script, &format!("{}/trade/**", store.display())]).output().unwrap();
    assert!(out.status.success(), "DuckDB: {}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<(i32, u64, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter().map(|(y, n, v)| (y, (n, v))).collect()
}

/// Each year a reader found is the old version's or the new one's.
fn assert_each_year_one_version(reader: &str, got: &Years, setup: &Setup) {
    let same = |a: &(u64, f64), b: Option<&(u64, f64)>| {
        b.is_some_and(|b| a.0 == b.0 && (a.1 - b.1).abs() <= 1e-9 * a.1.abs().max(1.0))
    };
    for (year, figures) in got {
        assert!(
            same(figures, setup.old_years.get(year)) || same(figures, setup.new_years.get(year)),
            "{reader} read year {year} as {figures:?}: neither the old {:?} nor the new {:?}",
            setup.old_years.get(year),
            setup.new_years.get(year)
        );
    }
    let years: Vec<&i32> = got.keys().collect();
    assert!(
        years == setup.old_years.keys().collect::<Vec<_>>() || years == setup.new_years.keys().collect::<Vec<_>>(),
        "{reader} read the years {years:?}"
    );
}

/// A store whose dataset `trade` holds a small panel, a large panel over the
/// same months (so ingesting it replaces every period), and the totals of each.
fn setup(partners: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.csv");
    let big = dir.path().join("big.csv");
    ok(&["gen", "--csv", s(&small), "--partners", "5", "--products", "20", "--months", "24", "--seed", "1"]);
    ok(&["gen", "--csv", s(&big), "--partners", partners, "--products", "400", "--months", "24", "--seed", "2"]);
    let store = dir.path().join("store");
    ok(&["ingest", s(&small), "--store", s(&store), "-d", "trade", "-q"]);
    let old = totals(&store, "trade");
    let reference = dir.path().join("reference");
    ok(&["ingest", s(&big), "--store", s(&reference), "-d", "trade", "-q"]);
    let new = totals(&reference, "trade");
    assert_ne!(old.0, new.0);
    let (old_years, new_years) = (plain_years(&store), plain_years(&reference));
    assert_eq!(old_years.len(), 2, "two years, so that a commit publishes two folders");
    Setup { _dir: dir, store, big, old, new, old_years, new_years, duckdb: crate::peers::peer_python() }
}

fn ingest_cmd(store: &Path, big: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tradeql"));
    cmd.args(["ingest", s(big), "--store", s(store), "-d", "trade", "-q"])
        .env_remove("TRADEQL_CRASH_AT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// After a crash: verify (which recovers) passes and the data is one version's.
fn assert_consistent(setup: &Setup, expect_new: Option<bool>) -> bool {
    assert_each_year_one_version("a polars glob", &plain_years(&setup.store), setup);
    if let Some(python) = &setup.duckdb {
        assert_each_year_one_version("DuckDB read_parquet('trade/**')", &duckdb_years(python, &setup.store), setup);
    }
    let info = ok(&["info", s(&setup.store), "--verify"]);
    assert!(info.contains("verify: every file matches its manifest"), "{info}");
    let now = totals(&setup.store, "trade");
    let is_new = now == setup.new;
    assert!(
        is_new || now == setup.old,
        "after a crash the store holds {now:?}, neither old {:?} nor new {:?}",
        setup.old,
        setup.new
    );
    if let Some(want) = expect_new {
        assert_eq!(is_new, want, "expected the {} version", if want { "new" } else { "old" });
    }
    assert!(!setup.store.join(".tradeql/journal.json").exists());
    assert_eq!(std::fs::read_dir(setup.store.join(".tradeql/staging")).map(|d| d.count()).unwrap_or(0), 0);
    is_new
}

#[test]
fn crash_at_each_step_of_the_commit() {
    let setup = setup("40");
    for (point, new) in [
        ("ingest:converted", false),
        ("commit:journal-written", false),
        ("commit:first-file-moved", false),
        ("commit:files-moved", false),
        ("commit:manifest-replaced", true),
        ("publish:first-year-swapped", true),
    ] {
        let status = ingest_cmd(&setup.store, &setup.big).env("TRADEQL_CRASH_AT", point).status().unwrap();
        assert!(!status.success(), "{point}: the injected crash did not happen");
        assert_consistent(&setup, Some(new));
        if new {
            // Put the old version back for the next point.
            let small = setup.store.parent().unwrap().join("small.csv");
            ok(&["ingest", s(&small), "--store", s(&setup.store), "-d", "trade", "-q"]);
        }
    }
}

#[test]
fn kill_9_in_the_middle_of_a_large_ingest() {
    let setup = setup("150");
    // How long a whole ingest takes here, to spread the kills over it.
    let start = Instant::now();
    assert!(ingest_cmd(&setup.store, &setup.big).status().unwrap().success());
    let full = start.elapsed();
    let small = setup.store.parent().unwrap().join("small.csv");
    ok(&["ingest", s(&small), "--store", s(&setup.store), "-d", "trade", "-q"]);
    let mut killed_before_commit = 0;
    for tenth in [1u32, 3, 5, 7, 9] {
        let mut child = ingest_cmd(&setup.store, &setup.big).spawn().unwrap();
        std::thread::sleep(full * tenth / 10);
        // SIGKILL: no handler, no cleanup, as a power cut or the OOM killer.
        let _ = child.kill();
        let status = child.wait().unwrap();
        let is_new = assert_consistent(&setup, None);
        if !status.success() && !is_new {
            killed_before_commit += 1;
        }
        if is_new {
            ok(&["ingest", s(&small), "--store", s(&setup.store), "-d", "trade", "-q"]);
        }
    }
    assert!(killed_before_commit > 0, "no kill landed before the commit point (a full ingest took {full:?})");
}

/// kill -9 at each rename, link, unlink and fsync an ingest makes (strace injects the signal at the Nth call of one system
/// call): every time, the store is one version's, and verify passes.
#[test]
fn kill_9_at_every_rename_unlink_and_fsync_of_an_ingest() {
    if !tool_present("strace") {
        return;
    }
    let setup = setup("10");
    let small = setup.store.parent().unwrap().join("small.csv");
    let mut trials = 0;
    // (renameat2 swaps only a year published under other names: no revision here makes one.)
    for syscall in ["rename", "linkat", "unlink", "fsync"] {
        for n in 1.. {
            assert!(n < 64, "{syscall}: the ingest was still killed at call {n}");
            let status = Command::new("strace")
                .args(["-f", "-o", "/dev/null", "-e", &format!("trace={syscall}")])
                .arg("-e")
                .arg(format!("inject={syscall}:signal=KILL:when={n}"))
                .arg(env!("CARGO_BIN_EXE_tradeql"))
                .args(["ingest", s(&setup.big), "--store", s(&setup.store), "-d", "trade", "-q"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            let is_new = assert_consistent(&setup, None);
            if status.success() {
                // Fewer than n such calls: every one of them was tried.
                assert!(is_new);
                assert!(n > 1, "{syscall}: the ingest makes no such call");
                ok(&["ingest", s(&small), "--store", s(&setup.store), "-d", "trade", "-q"]);
                break;
            }
            trials += 1;
            if is_new {
                ok(&["ingest", s(&small), "--store", s(&setup.store), "-d", "trade", "-q"]);
            }
        }
    }
    assert!(trials >= 10, "only {trials} kills");
}

/// A full disk (strace makes every call from the Nth on of `fsync`, `linkat`,
/// `mkdir` or `rename` fail with ENOSPC, as a disk that stays full): the ingest says so
/// (exit 74) or succeeds, and before any recovery a plain reader reads each
/// year as one version; after it, verify passes and the data is one version's.
#[test]
fn a_disk_that_fills_at_any_write_leaves_one_version_to_every_reader() {
    if !tool_present("strace") {
        return;
    }
    let setup = setup("10");
    let small = setup.store.parent().unwrap().join("small.csv");
    let mut full = 0;
    // Not `write` itself: strace cannot spare standard error, so the ingest
    // could not say what happened (the tmpfs test in faults.rs fills a real disk).
    let points: [(&str, &[u32]); 4] =
        [("fsync", &[1, 2, 3, 5, 8]), ("linkat", &[1, 2, 3]), ("mkdir", &[1, 2, 3, 4]), ("rename", &[1, 2, 3, 5])];
    for (syscall, from) in points {
        for n in from {
            let out = Command::new("strace")
                .args(["-f", "-o", "/dev/null", "-e", &format!("trace={syscall}")])
                .arg("-e")
                .arg(format!("inject={syscall}:error=ENOSPC:when={n}+"))
                .arg(env!("CARGO_BIN_EXE_tradeql"))
                .args(["ingest", s(&setup.big), "--store", s(&setup.store), "-d", "trade", "-q"])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                full += 1;
                assert_eq!(out.status.code(), Some(74), "{syscall} from call {n}: {err}");
                assert!(err.contains("the disk is full") || err.contains("No space left"), "{err}");
            }
            if assert_consistent(&setup, None) {
                ok(&["ingest", s(&small), "--store", s(&setup.store), "-d", "trade", "-q"]);
            }
        }
    }
    assert!(full >= 8, "the disk was full for only {full} ingests");
}
