//! Ad-hoc queries: `from "FILE"` reads files without a store, through the
//! same checks as an ingest, and gives what the same query gives on the
//! ingested dataset.

use crate::common::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_file_read_without_a_store_gives_what_the_stored_dataset_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, mapping) = (data_file("gacc_monthly_2023_2024.csv"), data_file("gacc.toml"));
    let nowhere = dir.path().join("no-store");
    let q = format!("from \"{csv}\" mapping \"{mapping}\" | by year, flow | sum value");
    let adhoc = ok(&["run", "-e", &q, "--store", s(&nowhere), "-f", "csv"]);
    assert!(!nowhere.exists(), "an ad-hoc query writes no store");
    let store = dir.path().join("store");
    ingest_gacc(&store);
    let stored = ok(&["run", "-e", "from gacc | by year, flow | sum value", "--store", s(&store), "-f", "csv"]);
    assert_eq!(adhoc, stored);
    // 2024 exports: 25.4546 trillion yuan (the customs' figure).
    assert!(adhoc.contains("2024,export,25454600000000.0"), "{adhoc}");
}

#[test]
fn a_saved_query_reads_its_files_beside_it_with_the_stores_reference_tables() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_bundled(&store);
    // The blocs of the partner table, read from the customs' file as published
    // (the mapping converts September at the store's rates, groups by its tables).
    let saved = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/partners_blocs_2024.tql"),
    )
    .unwrap();
    let folder = dir.path().join("work");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(data_file("gacc_partners_2024.csv"), folder.join("partners.csv")).unwrap();
    let mapping = std::fs::read_to_string(data_file("gacc_partners.toml"))
        .unwrap()
        .replace("\"gacc_partner_codes.csv\"", &format!("{:?}", data_file("gacc_partner_codes.csv")));
    write(&folder, "partners.toml", &mapping);
    let text = saved.replace("from gacc_partners", "from \"partners.csv\" mapping \"partners.toml\"");
    assert_ne!(text, saved);
    let q = write(&folder, "blocs.tql", &text);
    let adhoc = ok(&["run", s(&q), "--store", s(&store), "-f", "csv"]);
    let stored = ok(&[
        "run",
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/partners_blocs_2024.tql").to_string_lossy(),
        "--store",
        s(&store),
        "-f",
        "csv",
    ]);
    assert_eq!(adhoc, stored);
}

#[test]
fn a_pattern_reads_every_file_it_matches_and_bad_rows_are_errors_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let header = "period,reporter,partner,flow,product,value\n";
    write(dir.path(), "part-2023.csv", &format!("{header}2023-01,CHN,USA,export,TOTAL,10\n"));
    write(dir.path(), "part-2024.csv", &format!("{header}2024-01,CHN,USA,export,TOTAL,20\n"));
    write(dir.path(), "other.txt", "not data");
    let pattern = format!("{}/part-*.csv", dir.path().display());
    let nowhere = dir.path().join("no-store");
    let out = ok(&["run", "-e", &format!("from \"{pattern}\" | by year | sum value"), "-f", "csv", "-s", s(&nowhere)]);
    assert_eq!(out, "year,value\n2023,10.0\n2024,20.0\n");
    let none = format!("{}/nothing-*.csv", dir.path().display());
    let out = tradeql(&["run", "-e", &format!("from \"{none}\" | by year | sum value"), "-s", s(&nowhere)]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(stderr(&out).contains("no file matches"), "{}", stderr(&out));
    let bad = write(dir.path(), "bad.csv", &format!("{header}2024-01,CHN,USA,export,TOTAL,oops\n"));
    let out = tradeql(&["run", "-e", &format!("from \"{}\" | by year | sum value", bad.display()), "-s", s(&nowhere)]);
    assert_eq!(out.status.code(), Some(65));
    assert!(stderr(&out).contains("bad.csv:2") && stderr(&out).contains("oops"), "{}", stderr(&out));
}

#[test]
fn names_are_put_beside_codes_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_bundled(&store);
    let q = "from critical_minerals | by product, partner | sum value | sort value desc | limit 2";
    let plain = ok(&["run", "-e", q, "--store", s(&store), "-f", "csv"]);
    assert!(plain.starts_with("product,partner,value\n"), "{plain}");
    let named = ok(&["run", "-e", q, "--store", s(&store), "-f", "csv", "--names"]);
    // The names of the bundled tables: HS 380110 and ISO3 POL (country_codes.csv, hs_codes.csv).
    assert!(named.starts_with("product,product_name,partner,partner_name,value\n"), "{named}");
    assert!(named.contains("380110,Graphite; artificial,POL,Poland,"), "{named}");
    let table = ok(&["run", "-e", q, "--store", s(&store), "--names"]);
    assert!(table.lines().next().unwrap().contains("partner_name"), "{table}");
}

#[test]
fn a_scratch_store_left_by_a_killed_run_is_removed_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    // One of a process that is gone (no such pid), one of this live test.
    let dead = tmp.join("tradeql-adhoc-999999999-abc123");
    let live = tmp.join(format!("tradeql-adhoc-{}-def456", std::process::id()));
    std::fs::create_dir_all(dead.join("store")).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    let csv =
        write(dir.path(), "a.csv", "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,TOTAL,5\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["run", "-e", &format!("from \"{}\" | by year | sum value", csv.display()), "-f", "csv"])
        .args(["-s", s(&dir.path().join("none"))])
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "year,value\n2024,5.0\n");
    assert!(!dead.exists(), "the dead run's scratch store is removed");
    assert!(live.exists(), "a running process's is not");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "the run removed its own: {left:?}");
}

#[test]
fn a_file_query_runs_on_duckdb_and_version_choices_do_not_apply_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv =
        write(dir.path(), "a.csv", "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,TOTAL,5\n");
    let q = format!("from \"{}\" | by year | sum value", csv.display());
    let nowhere = dir.path().join("none");
    let err = fails(&["run", "-e", &q, "-s", s(&nowhere), "--as-of", "2020-01-01"]);
    assert!(err.contains("reads the file as it is"), "{err}");
    let err = fails(&["sql", s(&write(dir.path(), "q.tql", &q.replace(" | ", "\n"))), "--dialect", "duckdb"]);
    assert!(err.contains("ingest the file into a store first"), "{err}");
    if let Some(python) = crate::peers::peer_python() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
            .args(["run", "-e", &q, "-s", s(&nowhere), "-f", "csv", "--engine", "duckdb"])
            .env("TRADEQL_PYTHON", python)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "year,value\n2024,5.0\n");
    }
    // A bad row's help names the ingest command, not a flag run lacks.
    let bad =
        write(dir.path(), "bad.csv", "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,TOTAL,x\n");
    let err = fails(&["run", "-e", &format!("from \"{}\" | by year | sum value", bad.display()), "-s", s(&nowhere)]);
    assert!(!err.contains("pass --rejects") && err.contains("tradeql ingest"), "{err}");
}
