//! Nothing lost, nothing escapes: one test per class of what an attack on
//! the store, batch and CLI found (files outside the store touched, data lost,
//! readers failing during a commit, silently wrong numbers, damage verify
//! missed, panics, hangs, unclear errors). Each failed on the tradeql before
//! the fixes; each states what a user is promised.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until the store's lock names `holder` (a paused writer took it).
fn wait_for_lock(store: &Path, holder: &str) {
    let started = Instant::now();
    while !std::fs::read_to_string(store.join(".tradeql/lock")).unwrap_or_default().contains(holder) {
        assert!(started.elapsed() < Duration::from_secs(60), "the writer never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tradeql"));
    c.args(args).env_remove("TRADEQL_STORE").env_remove("TRADEQL_CRASH_AT").env_remove("TRADEQL_PAUSE_AT");
    c
}

fn query(dir: &Path, text: &str) -> PathBuf {
    write(dir, "q.tql", text)
}

/// Runs a query on `store`; (exit code, stdout, stderr).
fn run_query(store: &Path, q: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["run", s(q), "--store", s(store)];
    args.extend(extra);
    let out = tradeql(&args);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

const SUM_BY_PERIOD: &str = "from trade\nby period\nsum value\nshow value\n";

// ---------------------------------------------------------------- class 1

#[test]
fn output_to_a_device_a_pipe_or_a_link_is_written_through_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q = query(dir.path(), SUM_BY_PERIOD);
    // A device: written to, still a device afterwards.
    ok(&["run", s(&q), "--store", s(&store), "--out", "/dev/null", "-f", "csv"]);
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    // A FIFO: its reader gets the rows; the FIFO stays a FIFO.
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    ok(&["run", s(&q), "--store", s(&store), "--out", s(&fifo), "-f", "csv"]);
    let got = reader.join().unwrap();
    assert!(got.starts_with("period,value\n") && got.contains("140.0"), "{got}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // A link: its target is replaced, the link kept.
    let target = write(dir.path(), "target.csv", "old");
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    ok(&["run", s(&q), "--store", s(&store), "--out", s(&link), "-f", "csv"]);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::read_to_string(&target).unwrap().starts_with("period,value"));
    // `--out -` is standard output, not a file named `-`.
    let out = ok(&["run", s(&q), "--store", s(&store), "--out", "-", "-f", "csv"]);
    assert!(out.starts_with("period,value"), "{out}");
    assert!(!Path::new("-").exists());
    // A folder is refused.
    let err = fails(&["run", s(&q), "--store", s(&store), "--out", s(dir.path())]);
    assert!(err.contains("is a folder"), "{err}");
}

#[test]
fn partition_values_from_the_data_never_name_folders_outside_the_extract() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "evil.csv",
        "period,reporter,partner,flow,product,value\n\
         2024-01,CHN,a/../../../escaped,export,850110,100\n\
         2024-01,CHN,..,export,850110,5\n\
         2024-01,CHN,USA,export,850110,40\n",
    );
    let store = dir.path().join("store");
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "trade", "-q"]);
    write(dir.path(), "by_partner.tql", "from trade\nby partner\nsum value\nshow value\n");
    let job = write(
        dir.path(),
        "job.toml",
        &format!(
            "store = {:?}\nout_dir = \"out\"\n[[query]]\nfile = \"by_partner.tql\"\npartition_by = \"partner\"\n",
            s(&store)
        ),
    );
    ok(&["batch", s(&job)]);
    let extract = dir.path().join("out/by_partner");
    let mut folders: Vec<String> =
        std::fs::read_dir(&extract).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    folders.sort();
    assert_eq!(folders, ["partner=%2E%2E", "partner=USA", "partner=a%2F..%2F..%2F..%2Fescaped"]);
    // Nothing was written beside the extracts folder or above it.
    let mut top: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    top.sort();
    assert_eq!(top, ["by_partner.tql", "evil.csv", "job.toml", "out", "store"]);
}

#[test]
fn a_crafted_journal_deletes_nothing_outside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let victim = write(dir.path(), "victim.txt", "keep me");
    for named in [
        s(&victim).to_string(),
        "../victim.txt".to_string(),
        ".tradeql/datasets/trade/files/../../../../../victim.txt".to_string(),
        ".tradeql/datasets/trade/../../../victim.txt".to_string(),
    ] {
        let journal = serde_json::json!({
            "manifest": ".tradeql/datasets/trade/manifest.json", "to_version": 99, "added": [named], "removed": []
        });
        std::fs::write(store.join(".tradeql/journal.json"), journal.to_string()).unwrap();
        let err = fails(&["info", s(&store), "--verify"]);
        assert!(err.contains("damaged journal"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me", "{named}");
        // Nor does a writer follow it.
        let err = fails(&["ingest", s(&dir.path().join("good.csv")), "--store", s(&store), "-d", "trade", "-q"]);
        assert!(err.contains("damaged journal"), "{err}");
        assert!(victim.exists());
    }
}

#[test]
fn rejects_never_overwrite_an_input_or_a_file_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let src = write(dir.path(), "bad.csv", &format!("{GOOD}2024-03,CHN,USA,export,850110,oops\n"));
    let before = std::fs::read(&src).unwrap();
    let manifest = store.join(".tradeql/datasets/trade/manifest.json");
    let manifest_before = std::fs::read(&manifest).unwrap();
    let err = fails(&["ingest", s(&src), "--store", s(&store), "-d", "trade", "--rejects", s(&src), "-q"]);
    assert!(err.contains("is an input of this ingest"), "{err}");
    let err = fails(&["ingest", s(&src), "--store", s(&store), "-d", "trade", "--rejects", s(&manifest), "-q"]);
    assert!(err.contains("inside the store"), "{err}");
    let err = fails(&["ingest", s(&src), "--store", s(&store), "-d", "trade", "--rejects", "/dev/null", "-q"]);
    assert!(err.contains("not a regular file"), "{err}");
    assert_eq!(std::fs::read(&src).unwrap(), before);
    assert_eq!(std::fs::read(&manifest).unwrap(), manifest_before);
}

// ---------------------------------------------------------------- class 2

#[test]
fn deleting_the_lock_file_lets_no_second_writer_in_and_loses_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    ok(&["gen", "--csv", s(&a), "--partners", "4", "--products", "5", "--months", "12", "--start", "2020-01"]);
    ok(&["gen", "--csv", s(&b), "--partners", "4", "--products", "5", "--months", "12", "--start", "2022-01"]);
    let store = dir.path().join("store");
    ok(&["ingest", s(&a), "--store", s(&store), "-d", "other", "-q"]);
    // Writer A pauses before its commit, holding the lock.
    let mut first = cmd(&["ingest", s(&a), "--store", s(&store), "-d", "trade", "-q"])
        .env("TRADEQL_PAUSE_AT", "ingest:converted")
        .env("TRADEQL_PAUSE_MS", "3000")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock(&store, "ingest into trade");
    std::fs::remove_file(store.join(".tradeql/lock")).unwrap();
    // Writer B: refused at once without --wait ...
    let err = fails(&["ingest", s(&b), "--store", s(&store), "-d", "trade", "-q"]);
    assert!(err.contains("being written by another process"), "{err}");
    // ... and queued behind A with it; both writes are kept.
    ok(&["ingest", s(&b), "--store", s(&store), "-d", "trade", "-q", "--wait"]);
    assert!(first.wait().unwrap().success());
    let info = ok(&["info", s(&store), "--verify"]);
    assert!(info.contains("periods     2020-01 .. 2022-12 (24 periods)"), "{info}");
    let (rows_a, _) = totals(&store, "other");
    let (rows, _) = totals(&store, "trade");
    assert_eq!(rows, 2 * rows_a, "one ingest's rows are missing");
}

#[test]
fn a_batch_killed_between_its_renames_keeps_the_previous_extract() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    write(dir.path(), "by_partner.tql", "from trade\nby partner\nsum value\nshow value\n");
    write(dir.path(), "broken.tql", "from nowhere\n");
    let job = |name: &str, file: &str| {
        write(
            dir.path(),
            name,
            &format!(
                "store = {:?}\nout_dir = \"out\"\n[[query]]\nfile = {file:?}\noutput = \"by_partner\"\n\
                 partition_by = \"partner\"\n",
                s(&store)
            ),
        )
    };
    let good = job("good.toml", "by_partner.tql");
    ok(&["batch", s(&good)]);
    let extract = dir.path().join("out/by_partner");
    let before = snapshot(&extract);
    // Killed with the new extract staged: the previous one is at its name.
    let status = cmd(&["batch", s(&good)]).env("TRADEQL_CRASH_AT", "batch:extract-staged").status().unwrap();
    assert!(!status.success());
    assert_eq!(snapshot(&extract), before);
    // Where the file system cannot swap two folders in one step: killed after
    // the previous extract was set aside, before the new one took its place.
    let status = cmd(&["batch", s(&good)])
        .env("TRADEQL_CRASH_AT", "batch:previous-kept")
        .env("TRADEQL_NO_EXCHANGE", "1")
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(!extract.exists() && dir.path().join("out/by_partner.old").exists());
    // The next job over the folder, even one that writes nothing, puts it back.
    let broken = job("broken.toml", "broken.tql");
    let _ = tradeql(&["batch", s(&broken)]);
    assert_eq!(snapshot(&extract), before);
    assert!(!dir.path().join("out/by_partner.old").exists());
}

#[test]
fn an_extract_may_not_take_the_run_manifests_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    write(dir.path(), "run.tql", SUM_BY_PERIOD);
    let job = write(
        dir.path(),
        "job.toml",
        &format!("store = {:?}\nout_dir = \"out\"\nformat = \"json\"\n[[query]]\nfile = \"run.tql\"\n", s(&store)),
    );
    let err = fails(&["batch", s(&job)]);
    assert!(err.contains("run manifest"), "{err}");
}

#[test]
fn incremental_runs_again_when_a_dataset_is_deleted_and_created_anew() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    write(dir.path(), "total.tql", SUM_BY_PERIOD);
    let job = write(
        dir.path(),
        "job.toml",
        &format!("store = {:?}\nout_dir = \"out\"\nformat = \"csv\"\n[[query]]\nfile = \"total.tql\"\n", s(&store)),
    );
    ok(&["batch", s(&job)]);
    std::fs::remove_dir_all(store.join("trade")).unwrap();
    let other = write(dir.path(), "other.csv", &GOOD.replace(",100\n", ",1000\n"));
    ok(&["ingest", s(&other), "--store", s(&store), "-d", "trade", "-q"]);
    // Version 1 again, but another dataset: not skipped.
    let out = ok(&["batch", s(&job), "--incremental"]);
    assert!(out.starts_with("1 ok, 0 skipped"), "{out}");
    let extract = std::fs::read_to_string(dir.path().join("out/total.csv")).unwrap();
    assert!(extract.contains("1040.0"), "{extract}");
}

// ---------------------------------------------------------------- class 3

#[test]
fn readers_see_one_version_while_revisions_and_group_tables_commit() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1.csv");
    let v2 = dir.path().join("v2.csv");
    ok(&["gen", "--csv", s(&v1), "--partners", "8", "--products", "30", "--months", "24", "--seed", "1"]);
    ok(&["gen", "--csv", s(&v2), "--partners", "8", "--products", "30", "--months", "24", "--seed", "2"]);
    let groups_a = write(dir.path(), "ga.csv", "group,member,valid_from,valid_to\nBLOC,PAA,,\nBLOC,PAB,,\n");
    let groups_b = write(dir.path(), "gb.csv", "group,member,valid_from,valid_to\nBLOC,PAA,,\nBLOC,PAC,,\n");
    let store = dir.path().join("store");
    ok(&["ingest", s(&v1), "--store", s(&store), "-d", "trade", "-q"]);
    ok(&["groups", "add", "blocs", s(&groups_a), "--of", "partner", "--store", s(&store)]);
    let q = write(
        dir.path(),
        "q.tql",
        "from trade\ngroup partner by blocs as bloc\nwhere bloc = \"BLOC\"\nby year\nsum value\nshow value\n",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        let files = [v2, v1, groups_b, groups_a];
        std::thread::spawn(move || {
            let mut commits = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && commits < 40 {
                let f = &files[commits % 4];
                if commits % 4 < 2 {
                    ok(&["ingest", s(f), "--store", s(&store), "-d", "trade", "-q", "--wait"]);
                } else {
                    ok(&["groups", "add", "blocs", s(f), "--of", "partner", "--store", s(&store), "--wait"]);
                }
                commits += 1;
            }
            commits
        })
    };
    let started = Instant::now();
    let mut reads = 0;
    while !writer.is_finished() {
        let (code, _, err) = run_query(&store, &q, &["-f", "csv"]);
        assert_eq!(code, Some(0), "a read during a commit failed: {err}");
        reads += 1;
        assert!(started.elapsed() < Duration::from_secs(600), "the commits did not end");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(commits >= 8 && reads >= 8, "{commits} commits, {reads} reads");
    eprintln!("{reads} reads during {commits} commits, none failed, in {:?}", started.elapsed());
}

// ---------------------------------------------------------------- class 4

#[test]
fn numbers_are_checked_not_bent() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "t.csv", &GOOD.replace(",100\n", ",33312000000\n"));
    let huge = write(dir.path(), "huge.toml", "value_scale = 1e300\n");
    let err = fails(&["ingest", s(&src), "-m", s(&huge), "--store", s(&dir.path().join("s1")), "-d", "t", "-q"]);
    assert!(err.contains("too large"), "{err}");
    // A thousands separator that is also the decimal mark is refused ...
    let both = write(dir.path(), "both.toml", "thousands = \".\"\n");
    let err = fails(&["ingest", s(&src), "-m", s(&both), "--store", s(&dir.path().join("s2")), "-d", "t", "-q"]);
    assert!(err.contains("thousands and decimal are both"), "{err}");
    // ... and with thousands = "." and decimal = ",", 1.234 is 1234 like 1.234.567 is 1234567.
    let euro = write(dir.path(), "euro.toml", "thousands = \".\"\ndecimal = \",\"\ndelimiter = \";\"\n");
    let text = "period;reporter;partner;flow;product;value\n\
                2024-01;CHN;USA;export;850110;1.234\n\
                2024-01;CHN;DEU;export;850110;1.234.567\n\
                2024-01;CHN;FRA;export;850110;12,5\n";
    let eu = write(dir.path(), "eu.csv", text);
    let store = dir.path().join("s3");
    ok(&["ingest", s(&eu), "-m", s(&euro), "--store", s(&store), "-d", "trade", "-q"]);
    assert_eq!(totals(&store, "trade"), (3, 1234.0 + 1234567.0 + 12.5));
    let bad = write(dir.path(), "bad.csv", &text.replace("1.234.567", "12.34"));
    let err = fails(&["ingest", s(&bad), "-m", s(&euro), "--store", s(&store), "-d", "trade", "-q"]);
    assert!(err.contains("bad.csv:3") && err.contains("groups of three digits"), "{err}");
    // A window longer than any series is an error, not a window of another length.
    let good = good_store(dir.path());
    let q = query(dir.path(), "from trade\nby month\nsum value\nshow rolling(value, 4294967298)\n");
    let (code, _, err) = run_query(&good, &q, &[]);
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("longer than any series"), "{err}");
    // A full standard output is an error.
    let q = query(dir.path(), SUM_BY_PERIOD);
    for format in ["json", "csv", "table"] {
        let status = cmd(&["run", s(&q), "--store", s(&good), "-f", format])
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(74), "{format} to /dev/full");
    }
}

// ---------------------------------------------------------------- class 5

#[test]
fn verify_finds_every_damage_the_manifest_could_hide() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let src = dir.path().join("good.csv");
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "second", "-q"]);
    let manifest_path = store.join(".tradeql/datasets/trade/manifest.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        f(&mut m);
        std::fs::write(&manifest_path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let out = tradeql(&["info", s(&store), "--verify"]);
        assert!(!out.status.success(), "verify passed a damaged store");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let report = edit(&|m| {
        let first = m["files"][0].clone();
        m["files"].as_array_mut().unwrap().push(first);
    });
    assert!(report.contains("listed twice"), "{report}");
    let report = edit(&|m| m["files"][0]["path"] = "../second/year=2024/x.parquet".into());
    assert!(report.contains("not a data file of the dataset"), "{report}");
    let report = edit(&|m| m["files"][0]["periods"] = serde_json::json!(["2024-01"]));
    assert!(report.contains("holds the periods 2024-01, 2024-02"), "{report}");
    let report = edit(&|m| m["periods"] = serde_json::json!(["2024-01", "2024-02", "2024-03"]));
    assert!(report.contains("periods"), "{report}");
    // A path outside the dataset is refused by readers too.
    edit(&|m| m["files"][0]["path"] = "/etc/passwd".into());
    let q = query(dir.path(), SUM_BY_PERIOD);
    let (code, _, err) = run_query(&store, &q, &[]);
    assert_eq!(code, Some(65));
    assert!(err.contains("damaged manifest"), "{err}");
    std::fs::write(&manifest_path, &original).unwrap();
    ok(&["info", s(&store), "--verify"]);
    // A dataset whose manifest was deleted.
    std::fs::remove_dir_all(store.join(".tradeql/datasets/second")).unwrap();
    let out = tradeql(&["info", s(&store), "--verify"]);
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("second: a dataset folder without a manifest in .tradeql/datasets/"), "{report}");
}

#[test]
fn an_error_after_the_commit_point_says_that_the_data_committed() {
    if !tool_present("strace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let revised = write(dir.path(), "revised.csv", &GOOD.replace(",100\n", ",500\n"));
    // The second unlink (the first clears a stale temporary manifest) deletes
    // the replaced file, after the commit point: make it fail.
    let out = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=unlink", "-e", "inject=unlink:error=EIO:when=2"])
        .arg(env!("CARGO_BIN_EXE_tradeql"))
        .args(["ingest", s(&revised), "--store", s(&store), "-d", "trade", "-q"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("version 2 of trade is committed"), "{err}");
    // It did commit: the next verify finishes the clean-up.
    ok(&["info", s(&store), "--verify"]);
    assert_eq!(totals(&store, "trade"), (3, 610.0));
}

#[test]
fn a_full_disk_during_an_ingest_is_said_and_leaves_the_store_as_it_was() {
    // A small tmpfs is a full disk; mounting one needs the privilege to, which
    // no setup script can grant: without it the test says so and skips.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs", s(&mnt)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
        return;
    }
    let big = dir.path().join("big.csv");
    ok(&["gen", "--csv", s(&big), "--partners", "20", "--products", "200", "--months", "24"]);
    let store = mnt.join("store");
    let small = write(&mnt, "small.csv", GOOD);
    ok(&["ingest", s(&small), "--store", s(&store), "-d", "trade", "-q"]);
    let before = totals(&store, "trade");
    let out = tradeql(&["ingest", s(&big), "--store", s(&store), "-d", "trade", "-q"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    // Read before the disk goes: a plain reader and tradeql see the old version.
    let after = totals(&store, "trade");
    let verified = tradeql(&["info", s(&store), "--verify"]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains("the disk is full"), "{err}");
    assert!(!err.contains("thrift"), "{err}");
    assert_eq!(after, before);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
}

// ---------------------------------------------------------------- classes 6 and 7

/// The query `text` on a small store: refused (exit 2) within seconds, with
/// `message` in the error and no panic.
fn refused_quickly(text: &str, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q = query(dir.path(), text);
    let start = Instant::now();
    for command in ["check", "run"] {
        let out = tradeql(&[command, s(&q), "--store", s(&store)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(65), "{command}: {}", &err[..err.len().min(2000)]);
        assert!(err.contains(message), "{command}: {}", &err[..err.len().min(2000)]);
        assert!(err.len() < 4000, "{command}: the error echoes the input ({} bytes)", err.len());
    }
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
}

#[test]
fn deep_long_and_huge_queries_are_refused_with_a_reason() {
    let head = "from trade\nby month\nsum value\nshow ";
    refused_quickly(&format!("{head}rolling(value, 2147483648)\n"), "longer than any series");
    refused_quickly(&format!("{head}rolling(value, 1000000)\n"), "longer than any series");
    refused_quickly(&format!("{head}{}value{}\n", "(".repeat(2600), ")".repeat(2600)), "nests more than 64");
    refused_quickly(&format!("{head}{}value\n", "-".repeat(1600)), "nests more than 64");
    refused_quickly(&format!("{head}{}\n", vec!["value"; 1638].join(" + ")), "more than 256 terms");
    refused_quickly(&format!("{head}x = {}\n", vec!["(value + 1)"; 300].join(" * ")), "more than 256 terms");
    refused_quickly(&format!("{head}value as {}\n", "a".repeat(1_000_000)), "at most 256 KiB");
    refused_quickly(&format!("{head}{} = value\n", "a".repeat(200)), "a name has at most 128");
    let yoy17 = (0..17).fold("value".to_string(), |e, _| format!("yoy({e})"));
    refused_quickly(&format!("{head}{yoy17}\n"), "measures nest at most 4 deep");
    let wheres: String = (0..20_000).map(|i| format!("where value != {i}\n")).collect();
    refused_quickly(&format!("from trade\n{wheres}by month\nsum value\nshow value\n"), "at most 256 KiB");
    let wheres: String = (0..300).map(|i| format!("where value != {i}\n")).collect();
    refused_quickly(&format!("from trade\n{wheres}by month\nsum value\nshow value\n"), "at most 256 stages");
}

#[test]
fn a_long_list_of_codes_or_numbers_is_one_set_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let numbers: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
    let q = query(
        dir.path(),
        &format!("from trade\nwhere value in ({})\nby period\nsum value\nshow value\n", numbers.join(", ")),
    );
    let start = Instant::now();
    let (code, out, err) = run_query(&store, &q, &["-f", "csv"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "period,value\n2024-01-01,140.0\n2024-02-01,70.0\n");
    assert!(start.elapsed() < Duration::from_secs(20), "took {:?}", start.elapsed());
}

#[test]
fn a_full_standard_output_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q = query(dir.path(), SUM_BY_PERIOD);
    for args in [vec!["info", s(&store)], vec!["explain", s(&q), "--store", s(&store)]] {
        let out = cmd(&args).stdout(std::fs::File::create("/dev/full").unwrap()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(74), "{args:?}: {err}");
    }
    let out = cmd(&["info", s(&store)]).stdout(std::fs::File::create("/dev/full").unwrap()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("the disk is full"));
}

#[test]
fn long_group_names_print_and_overlong_ones_are_refused() {
    // A 65,536-character code once made the table's format width panic: codes
    // and group names are now at most 256 bytes, and the table pads by hand.
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let name = "G".repeat(256);
    let groups = write(dir.path(), "g.csv", &format!("group,member,valid_from,valid_to\n{name},USA,,\nX,DEU,,\n"));
    ok(&["groups", "add", "blocs", s(&groups), "--of", "partner", "--store", s(&store)]);
    let q = query(dir.path(), "from trade\ngroup partner by blocs as bloc\nby bloc\nsum value\nshow value\n");
    let out = ok(&["run", s(&q), "--store", s(&store)]);
    assert!(out.lines().any(|l| l.starts_with(&name) && l.ends_with("140")), "{out}");
    let long = write(dir.path(), "long.csv", &format!("group,member,valid_from,valid_to\n{}x,USA,,\n", name));
    let err = fails(&["groups", "add", "blocs", s(&long), "--of", "partner", "--store", s(&store)]);
    assert!(err.contains("a code has at most 256"), "{err}");
}

#[test]
fn an_overlong_code_is_refused_at_ingest_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let long = "X".repeat(65_536);
    let src = write(dir.path(), "long.csv", &format!("{GOOD}2024-03,CHN,{long},export,850110,7\n"));
    let err = fails(&["ingest", s(&src), "--store", s(&dir.path().join("store")), "-d", "trade", "-q"]);
    assert!(err.contains("long.csv:5") && err.contains("a code has at most 256"), "{}", &err[..err.len().min(2000)]);
    assert!(err.len() < 2000, "the error echoes the whole code ({} bytes)", err.len());
}

// ---------------------------------------------------------------- class 8

#[test]
fn what_run_would_fail_on_check_refuses_first() {
    for (text, message) in [
        ("from trade\nby year\nsum value\nshow value, value\n", "`value` is shown twice"),
        ("from trade\nby month\nsum value, quantity\nshow ytd(unit_value())\n", "would add up unit values"),
        ("from trade\nby month\nsum value, quantity\nshow rolling(unit_value(), 3)\n", "would add up unit values"),
    ] {
        refused_quickly(text, message);
    }
    // unit_value() inside the measures that do make sense runs.
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    for m in ["rolling_mean(unit_value(), 2)", "high(unit_value(), 2)", "streak(unit_value() > 0)", "yoy(unit_value())"]
    {
        let q = query(dir.path(), &format!("from trade\nby month\nsum value, quantity\nshow x = {m}\n"));
        let (code, _, err) = run_query(&store, &q, &[]);
        assert_eq!(code, Some(0), "{m}: {err}");
    }
}

#[test]
fn errors_show_where_and_never_echo_a_huge_value() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "9".repeat(100).to_string() + &"x".repeat(10 << 20);
    let src = write(dir.path(), "huge.csv", &format!("{GOOD}2024-03,CHN,USA,export,850110,{huge}\n"));
    let err = fails(&["ingest", s(&src), "--store", s(&dir.path().join("store")), "-d", "trade", "-q"]);
    assert!(err.contains("huge.csv:5") && err.contains("bytes in all"), "{}", &err[..err.len().min(2000)]);
    assert!(err.len() < 2000, "{} bytes of error", err.len());
    // A query that is not UTF-8: the line and column of the first bad byte.
    let store = good_store(dir.path());
    let q = dir.path().join("latin1.tql");
    std::fs::write(&q, b"from trade\nwhere partner = \"C\xf4te\"\n").unwrap();
    let err = fails(&["check", s(&q), "--store", s(&store)]);
    assert!(err.contains("latin1.tql:2: column 19: the query is not UTF-8"), "{err}");
    // `by ytd` with no stored period passing the filters: at the `ytd` key.
    let q = query(dir.path(), "from trade\nwhere year = 1999\nby ytd\nsum value\nshow value\n");
    let err = fails(&["check", s(&q), "--store", s(&store)]);
    assert!(err.contains("q.tql:3:4: `by ytd`: no stored period of trade passes the query's filters"), "{err}");
    // A long line is cut around the mark.
    let wide = format!("from trade\nby year\nsum value\nshow {} + nope\n", vec!["value"; 100].join(" + "));
    let q = query(dir.path(), &wide);
    let err = fails(&["check", s(&q), "--store", s(&store)]);
    let marked = err.lines().find(|l| l.starts_with("4 | ")).unwrap();
    assert!(marked.chars().count() < 140 && marked.contains("nope") && marked.contains('…'), "{err}");
    let caret = err.lines().find(|l| l.contains('^')).unwrap();
    let column = |line: &str, part: &str| line[..line.find(part).unwrap()].chars().count();
    assert_eq!(column(caret, "^"), column(marked, "nope"), "{err}");
    // A full disk is said as such (here /dev/full as the output).
    let q = query(dir.path(), SUM_BY_PERIOD);
    let err = fails(&["run", s(&q), "--store", s(&store), "--out", "/dev/full", "-f", "parquet"]);
    assert!(err.contains("the disk is full"), "{err}");
}

// ------------------------------------------- found by a second attack, cold

#[test]
fn outputs_never_land_inside_the_store_or_on_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q = query(dir.path(), SUM_BY_PERIOD);
    let before = snapshot(&store);
    for out in [
        ".tradeql/datasets/trade/manifest.json",
        ".tradeql/datasets/trade/files/year=2024/part-v000001.parquet",
        "trade/year=2024/part-0.parquet",
        "_groups/x.csv",
        "new.csv",
    ] {
        let err = fails(&["run", s(&q), "--store", s(&store), "--out", s(&store.join(out))]);
        assert!(err.contains("inside the store"), "{out}: {err}");
    }
    let err = fails(&["run", s(&q), "--store", s(&store), "--chart", s(&store.join("trade/x.svg"))]);
    assert!(err.contains("inside the store"), "{err}");
    let err = fails(&["run", s(&q), "--store", s(&store), "--out-dir", s(&store.join("trade"))]);
    assert!(err.contains("inside the store"), "{err}");
    let job = write(
        dir.path(),
        "job.toml",
        &format!("store = {:?}\nout_dir = {:?}\n[[query]]\nfile = \"q.tql\"\n", s(&store), s(&store)),
    );
    let err = fails(&["batch", s(&job)]);
    assert!(err.contains("inside the store"), "{err}");
    let err = fails(&["run", s(&q), "--store", s(&store), "-f", "csv", "--out", s(&q)]);
    assert!(err.contains("is the query file"), "{err}");
    assert_eq!(snapshot(&store), before);
    assert_eq!(std::fs::read_to_string(&q).unwrap(), SUM_BY_PERIOD);
    // `/dev/stdout` on a pipe is written through.
    let out = ok(&["run", s(&q), "--store", s(&store), "-f", "csv", "--out", "/dev/stdout"]);
    assert!(out.starts_with("period,value"), "{out}");
}

#[test]
fn a_journal_never_deletes_live_data_nor_follows_a_linked_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    ok(&["ingest", s(&dir.path().join("good.csv")), "--store", s(&store), "-d", "second", "-q"]);
    let live = ".tradeql/datasets/trade/files/year=2024/part-v000001.parquet";
    let other = ".tradeql/datasets/second/files/year=2024/part-v000001.parquet";
    let version = ".tradeql/datasets/trade/versions/v000001.json";
    let manifest = ".tradeql/datasets/trade/manifest.json";
    for journal in [
        // Another dataset's committed file.
        serde_json::json!({"manifest": manifest, "to_version": 2, "added": [other], "removed": []}),
        // A file the committed manifest still lists, to roll forward.
        serde_json::json!({"manifest": manifest, "to_version": 1, "added": [], "removed": [live, version]}),
        // The same, to roll back.
        serde_json::json!({"manifest": manifest, "to_version": 2, "added": [live, version], "removed": []}),
    ] {
        std::fs::write(store.join(".tradeql/journal.json"), journal.to_string()).unwrap();
        let _ = tradeql(&["info", s(&store), "--verify"]);
        assert!(store.join(live).exists() && store.join(other).exists() && store.join(version).exists());
        let _ = std::fs::remove_file(store.join(".tradeql/journal.json"));
    }
    ok(&["info", s(&store), "--verify"]);
    // A partition folder that is a link to somewhere else.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let precious = write(&outside, "part-v000009.parquet", "precious");
    std::os::unix::fs::symlink(&outside, store.join(".tradeql/datasets/trade/files/year=2030")).unwrap();
    let journal = serde_json::json!({"manifest": ".tradeql/datasets/trade/manifest.json", "to_version": 9,
        "added": [".tradeql/datasets/trade/files/year=2030/part-v000009.parquet"], "removed": []});
    std::fs::write(store.join(".tradeql/journal.json"), journal.to_string()).unwrap();
    let _ = tradeql(&["info", s(&store), "--verify"]);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious");
}

#[test]
fn partition_folders_are_exact_and_distinct_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "close.csv",
        &format!(
            "period,reporter,partner,flow,product,region,value\n\
             2024-01,CHN,AAA,export,P1,__HIVE_DEFAULT_PARTITION__,1234567.891\n\
             2024-01,CHN,BBB,export,P1,,1234567.892\n\
             2024-01,CHN,{},export,P1,R,5\n",
            "/".repeat(200)
        ),
    );
    let store = dir.path().join("store");
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "close", "-q"]);
    write(dir.path(), "by_partner.tql", "from close\nby partner, region\nsum value\nshow value\n");
    let job = |column: &str| {
        write(
            dir.path(),
            "job.toml",
            &format!(
                "store = {:?}\nout_dir = \"out\"\n[[query]]\nfile = \"by_partner.tql\"\npartition_by = {column:?}\n",
                s(&store)
            ),
        )
    };
    let out = tradeql(&["batch", s(&job("value"))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("numbers with decimals"), "{out:?}");
    let out = tradeql(&["batch", s(&job("region"))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("would share the folder"), "{out:?}");
    let out = tradeql(&["batch", s(&job("partner"))]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("longer than 255 bytes"), "{out:?}");
    let left: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(left, ["run.json"], "a failed extract left files behind");
}

#[test]
fn incremental_sees_a_partitioned_extract_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    write(dir.path(), "p.tql", "from trade\nby partner\nsum value\nshow value\n");
    let job = write(
        dir.path(),
        "job.toml",
        &format!(
            "store = {:?}\nout_dir = \"out\"\n[[query]]\nfile = \"p.tql\"\npartition_by = \"partner\"\n",
            s(&store)
        ),
    );
    ok(&["batch", s(&job)]);
    assert!(ok(&["batch", s(&job), "--incremental"]).starts_with("0 ok, 1 skipped"));
    std::fs::remove_file(dir.path().join("out/p/partner=USA/part-0.parquet")).unwrap();
    let out = ok(&["batch", s(&job), "--incremental"]);
    assert!(out.starts_with("1 ok, 0 skipped"), "{out}");
    assert!(dir.path().join("out/p/partner=USA/part-0.parquet").exists());
}

#[test]
fn separators_and_literals_that_would_bend_numbers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = "period;reporter;partner;flow;product;value\n2024-01;CHN;USA;export;850110;1.234\n";
    let src = write(dir.path(), "eu.csv", text);
    let comma = write(dir.path(), "comma.toml", "decimal = \",\"\ndelimiter = \";\"\n");
    let err = fails(&["ingest", s(&src), "-m", s(&comma), "--store", s(&dir.path().join("s")), "-d", "t", "-q"]);
    assert!(err.contains("decimal mark is ','") && err.contains("thousands = \".\""), "{err}");
    for sep in ["e", "-", "1", "\""] {
        let m = write(dir.path(), "sep.toml", &format!("thousands = {sep:?}\ndelimiter = \";\"\n"));
        let err = fails(&["ingest", s(&src), "-m", s(&m), "--store", s(&dir.path().join("s")), "-d", "t", "-q"]);
        assert!(err.contains("thousands must be one of"), "{sep}: {err}");
    }
    // The wrong delimiter is named.
    let err = fails(&["ingest", s(&src), "--store", s(&dir.path().join("s")), "-d", "t", "-q"]);
    assert!(err.contains("declare delimiter = \";\""), "{err}");
    // A literal past the largest number.
    refused_quickly("from trade\nby month\nsum value\nshow x = value * 1e999\n", "too large");
    // One dollar is one dollar.
    let store = good_store(dir.path());
    let rates = write(dir.path(), "rates.csv", "period,currency,per_usd\n2024-01,USD,2\n");
    let err = fails(&["rates", "add", s(&rates), "--store", s(&store)]);
    assert!(err.contains("one US dollar is 1 USD"), "{err}");
}

#[test]
fn a_report_that_cannot_be_printed_says_the_change_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let revised = write(dir.path(), "revised.csv", &GOOD.replace(",100\n", ",500\n"));
    let out = cmd(&["ingest", s(&revised), "--store", s(&store), "-d", "trade"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains("version 2 of trade is committed, but its report was not printed"), "{err}");
    assert_eq!(totals(&store, "trade"), (3, 610.0));
}

#[test]
fn verify_checks_the_manifests_own_facts_and_stray_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let path = store.join(".tradeql/datasets/trade/manifest.json");
    let original = std::fs::read_to_string(&path).unwrap();
    for (edit, said) in [
        (("aggregate_rows", serde_json::json!(7)), "aggregate rows"),
        (("dataset", serde_json::json!("other")), "names the dataset"),
        (("version", serde_json::json!(0)), "version 0"),
        (("periods", serde_json::json!(["2024-01", "2024-01", "2024-02"])), "not sorted and distinct"),
    ] {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        m[edit.0] = edit.1;
        std::fs::write(&path, m.to_string()).unwrap();
        let out = tradeql(&["info", s(&store), "--verify"]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && report.contains(said), "{}: {report}", edit.0);
    }
    std::fs::write(&path, &original).unwrap();
    write(&store.join("trade/year=2024"), "notes.txt", "stray");
    let out = tradeql(&["info", s(&store), "--verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("notes.txt: not a file of the current version of trade"), "{said}");
    // A user's file in the published tree moves with its year, never deleted.
    let revised = write(dir.path(), "revised.csv", &GOOD.replace(",100\n", ",500\n"));
    ok(&["ingest", s(&revised), "--store", s(&store), "-d", "trade", "-q"]);
    assert_eq!(std::fs::read_to_string(store.join("trade/year=2024/notes.txt")).unwrap(), "stray");
    std::fs::remove_file(store.join("trade/year=2024/notes.txt")).unwrap();
    // A file in the kept versions' folder that no version lists.
    write(&store.join(".tradeql/datasets/trade/files/year=2024"), "part-v000077.parquet", "stray");
    let out = tradeql(&["info", s(&store), "--verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && said.contains("part-v000077.parquet: not listed by any kept version"), "{said}");
}

#[test]
fn long_sums_after_by_and_a_byte_order_mark_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q =
        query(dir.path(), &format!("from trade\nby year\nsum value\nshow x = {}\n", vec!["value"; 250].join(" + ")));
    let out = ok(&["run", s(&q), "--store", s(&store), "-f", "csv"]);
    assert_eq!(out, format!("year,x\n2024,{:.1}\n", 210.0 * 250.0));
    let bom = dir.path().join("bom.tql");
    std::fs::write(&bom, format!("\u{feff}{SUM_BY_PERIOD}")).unwrap();
    ok(&["check", s(&bom), "--store", s(&store)]);
}

#[test]
fn a_dry_run_writes_its_rejects_file_and_nothing_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let before = snapshot(&store);
    let src = write(dir.path(), "bad.csv", &format!("{GOOD}2024-03,CHN,USA,export,850110,oops\n"));
    let rejects = dir.path().join("rejects.csv");
    let out = ok(&["ingest", s(&src), "--store", s(&store), "-d", "trade", "--dry-run", "--rejects", s(&rejects)]);
    assert!(out.contains("rejected 1 rows"), "{out}");
    let text = std::fs::read_to_string(&rejects).unwrap();
    assert!(text.contains("oops") && text.contains("cannot parse as a number"), "{text}");
    assert_eq!(snapshot(&store), before);
}

#[test]
fn a_name_the_recode_table_does_not_cover_is_an_error_not_a_partner() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "names.csv",
        "period,reporter,partner,flow,product,value\n\
         2024-01,CHN,Germany,export,850110,100\n\
         2024-01,CHN,USA,export,850110,40\n\
         2024-01,CHN,Frnace,export,850110,70\n",
    );
    let map = write(
        dir.path(),
        "m.toml",
        "[recode.partner]\nGermany = \"DEU\"\nFrance = \"FRA\"\n\"United States\" = \"USA\"\n",
    );
    let store = dir.path().join("store");
    let err = fails(&["ingest", s(&src), "-m", s(&map), "--store", s(&store), "-d", "t", "-q"]);
    assert!(
        err.contains("names.csv:4: column `partner`: not in the mapping's [recode.partner] (value \"Frnace\")"),
        "{err}"
    );
    assert!(!store.join("t").exists());
    // With --rejects the good rows are kept: Germany recoded, USA already a code of the table.
    let rejects = dir.path().join("rejects.csv");
    ok(&["ingest", s(&src), "-m", s(&map), "--store", s(&store), "-d", "t", "-q", "--rejects", s(&rejects)]);
    assert_eq!(totals(&store, "t"), (2, 140.0));
    assert!(std::fs::read_to_string(&rejects).unwrap().contains("Frnace"));
}

#[test]
fn back_to_back_commits_starve_no_reader_and_leave_no_file_behind() {
    // Commits faster than a read (group tables, rates) once made every retry
    // of a reader meet a deleted file: a reader now holds the store's readers
    // file, and replaced files wait for it.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    gen_into(&store, "--partners 5 --products 20 --months 24");
    let g1 = write(dir.path(), "g1.csv", "group,member,valid_from,valid_to\nBIG,PAA,,\nBIG,PAB,,\n");
    let g2 = write(dir.path(), "g2.csv", "group,member,valid_from,valid_to\nBIG,PAC,,\nBIG,PAD,,\nBIG,PAE,,\n");
    let rates = |per_usd: f64| {
        let rows: String =
            (2020..2022).flat_map(|y| (1..=12).map(move |m| format!("{y}-{m:02},CNY,{per_usd}\n"))).collect();
        write(dir.path(), &format!("r{per_usd}.csv"), &format!("period,currency,per_usd\n{rows}"))
    };
    let (r1, r2) = (rates(7.0), rates(6.5));
    ok(&["groups", "add", "pg", s(&g1), "--of", "partner", "--store", s(&store)]);
    ok(&["rates", "add", s(&r1), "--store", s(&store)]);
    let q = write(
        dir.path(),
        "q.tql",
        "from trade\ngroup partner by pg as bloc\nderive usd = convert(value, \"CNY\")\nby year, bloc\nsum usd\n",
    );
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..60 {
                let w = |args: &[&str]| ok(args);
                let g = if i % 2 == 0 { &g2 } else { &g1 };
                let r = if i % 2 == 0 { &r2 } else { &r1 };
                w(&["groups", "add", "pg", s(g), "--of", "partner", "--store", s(&store), "--wait"]);
                w(&["rates", "add", s(r), "--store", s(&store), "--wait"]);
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let (code, _, err) = run_query(&store, &q, &["-f", "csv"]);
        assert_eq!(code, Some(0), "read {reads} failed during back-to-back commits: {err}");
        reads += 1;
    }
    writer.join().unwrap();
    assert!(reads >= 5, "{reads} reads");
    // One more read sweeps what the last commits retired; verify finds nothing.
    run_query(&store, &q, &[]);
    ok(&["info", s(&store), "--verify"]);
    let groups: Vec<String> = std::fs::read_dir(store.join("_groups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("pg-") || n.starts_with("rates-"))
        .collect();
    assert_eq!(groups.len(), 2, "{groups:?}");
    eprintln!("{reads} reads during 120 back-to-back commits, none failed");
}

#[test]
fn an_output_file_is_written_in_the_format_its_extension_names() {
    // `--out x.parquet` without `-f` once wrote the text table into x.parquet.
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q = query(dir.path(), SUM_BY_PERIOD);
    let out = |name: &str| {
        let path = dir.path().join(name);
        ok(&["run", s(&q), "--store", s(&store), "--out", s(&path)]);
        std::fs::read(&path).unwrap()
    };
    assert!(out("x.parquet").starts_with(b"PAR1"));
    assert!(out("x.arrow").starts_with(b"ARROW1"));
    assert!(out("x.csv").starts_with(b"period,value\n"));
    assert!(out("x.json").starts_with(b"["));
    assert!(out("x.txt").starts_with(b"period"));
    assert!(String::from_utf8(out("x.txt")).unwrap().contains("-------"));
    // `-f` decides for a name without a known extension (a mismatch is refused,
    // see a_format_that_contradicts_the_out_extension_is_refused).
    let path = dir.path().join("y.dat");
    ok(&["run", s(&q), "--store", s(&store), "--out", s(&path), "-f", "csv"]);
    assert!(std::fs::read(&path).unwrap().starts_with(b"period,value"));
}

/// Exit statuses a scheduler can act on (sysexits): fix the command, fix the
/// data, find the file, retry later.
#[test]
fn exit_statuses_tell_a_typo_bad_data_a_missing_file_and_a_busy_store_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let code = |args: &[&str]| tradeql(args).status.code();
    assert_eq!(code(&["run", "--no-such-flag"]), Some(2), "usage");
    let bad = write(dir.path(), "bad.csv", "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,X,01,x\n");
    assert_eq!(code(&["ingest", s(&bad), "--store", s(&store), "-d", "trade", "-q"]), Some(65), "bad data");
    let q = write(dir.path(), "q.tql", "from trade\nby year\nshow groth(value)\n");
    assert_eq!(code(&["run", s(&q), "--store", s(&store)]), Some(65), "bad query");
    let missing = dir.path().join("missing.csv");
    assert_eq!(code(&["ingest", s(&missing), "--store", s(&store), "-d", "trade", "-q"]), Some(66), "missing file");
    assert_eq!(code(&["info", s(&dir.path().join("nostore"))]), Some(66), "missing store");
    // A busy store: another writer holds the lock (a paused ingest).
    let slow = write(dir.path(), "slow.csv", "period,reporter,partner,flow,product,value\n2030-01,CHN,USA,X,01,1\n");
    let _ = std::fs::remove_file(store.join(".tradeql/lock")); // it names the last holder
    let mut writer = cmd(&["ingest", s(&slow), "--store", s(&store), "-d", "trade", "-q"])
        .env("TRADEQL_PAUSE_AT", "ingest:converted")
        .env("TRADEQL_PAUSE_MS", "3000")
        .spawn()
        .unwrap();
    wait_for_lock(&store, "ingest into trade");
    let out = tradeql(&["ingest", s(&slow), "--store", s(&store), "-d", "trade", "-q"]);
    let _ = writer.wait();
    assert_eq!(out.status.code(), Some(75), "busy: {}", String::from_utf8_lossy(&out.stderr));
    let help = ok(&["--help"]);
    assert!(help.replace('\n', " ").contains("75 another writer holds the store"), "{help}");
}

#[test]
fn a_format_that_contradicts_the_out_extension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let q = query(dir.path(), SUM_BY_PERIOD);
    let out = dir.path().join("x.parquet");
    let res = tradeql(&["run", s(&q), "--store", s(&store), "-f", "csv", "--out", s(&out)]);
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("--format csv contradicts --out") && err.contains("whose extension says parquet"), "{err}");
    assert!(!out.exists());
    // Agreeing, or a name without a known extension, is fine.
    ok(&["run", s(&q), "--store", s(&store), "-f", "parquet", "--out", s(&out)]);
    ok(&["run", s(&q), "--store", s(&store), "-f", "csv", "--out", s(&dir.path().join("x.dat"))]);
}
