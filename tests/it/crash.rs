//! A process killed at any moment leaves a consistent store with the previous
//! (or, past the commit point, the new) data: `info --verify` passes, and the
//! totals are exactly one version's.

use crate::common::*;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

struct Setup {
    _dir: tempfile::TempDir,
    store: std::path::PathBuf,
    big: std::path::PathBuf,
    old: (u64, f64),
    new: (u64, f64),
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
    Setup { _dir: dir, store, big, old, new }
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

/// kill -9 at each rename, unlink and fsync an ingest makes (strace injects
/// the signal at the Nth call of one system call): every time, the store is
/// one version's, and verify passes.
#[test]
fn kill_9_at_every_rename_unlink_and_fsync_of_an_ingest() {
    if !tool_present("strace") {
        return;
    }
    let setup = setup("10");
    let small = setup.store.parent().unwrap().join("small.csv");
    let mut trials = 0;
    for syscall in ["rename", "unlink", "fsync"] {
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
