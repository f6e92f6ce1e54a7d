//! Rollups (src/rollup.rs): every query of the corpus gives the same rows with
//! rollups as from the rows (1e-12 relative; same columns, types, order and
//! warnings), on polars and on DuckDB; the queries a rollup covers do read it,
//! the others read the rows; an ingest rebuilds the rollups of the years it
//! writes, in the same commit; `explain`, `info`, `verify`, `vacuum` and
//! `rollup advise` know them.

use crate::common::*;
use crate::corpus::corpus;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tradeql::rollup::with_rollups;

/// The corpus's stores copied, with rollups added: (name, store, query file).
struct Rolled {
    _dir: tempfile::TempDir,
    queries: Vec<(String, PathBuf, PathBuf)>,
}

/// The rollups added to each dataset of the corpus's stores: small ones that
/// answer a few queries, and one by every code column that answers every
/// query whose row stage reads codes and the calendar only.
const ROLLUPS: [(&str, &[&str]); 4] = [
    ("gacc", &["flow", "reporter,partner,flow,product,region"]),
    ("gacc_partners", &["partner,flow", "reporter,partner,flow,product,region"]),
    ("critical_minerals", &["product", "partner,product", "reporter,partner,flow,product,region"]),
    (
        "trade",
        &[
            "flow",
            "partner",
            "product",
            "chapter(product)",
            "heading(product),flow",
            "partner,flow",
            "reporter,partner,flow,product,region",
        ],
    ),
];

fn rolled() -> &'static Rolled {
    static ROLLED: OnceLock<Rolled> = OnceLock::new();
    ROLLED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut copies: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut queries = Vec::new();
        for (name, store, file) in &corpus().queries {
            let copy = match copies.iter().find(|(from, _)| from == store) {
                Some((_, to)) => to.clone(),
                None => {
                    let to = dir.path().join(format!("store{}", copies.len()));
                    let status = std::process::Command::new("cp").arg("-a").arg(store).arg(&to).status().unwrap();
                    assert!(status.success());
                    let datasets = tradeql::store::Store::open_existing(&to).unwrap().datasets().unwrap();
                    for (dataset, sets) in ROLLUPS.iter().filter(|(d, _)| datasets.iter().any(|x| x == d)) {
                        for by in *sets {
                            ok(&["rollup", "add", dataset, "--by", by, "--store", s(&to)]);
                        }
                    }
                    copies.push((store.clone(), to.clone()));
                    to
                }
            };
            queries.push((name.clone(), copy, file.clone()));
        }
        Rolled { _dir: dir, queries }
    })
}

/// Polars from a rollup against polars from the rows: 1e-12 relative.
fn assert_same(name: &str, how: &str, got: &tradeql::run::Outcome, want: &tradeql::run::Outcome) {
    assert_close(name, how, got, want, 1e-12);
}

/// `got` equals `want` to `tolerance` relative: same columns, types, rows, warnings and notes.
fn assert_close(name: &str, how: &str, got: &tradeql::run::Outcome, want: &tradeql::run::Outcome, tolerance: f64) {
    crate::corpus::assert_outcome_to(name, how, got, want, tolerance);
    assert_eq!(got.notes, want.notes, "{name} {how}: notes");
}

fn load(store: &Path, file: &Path, rollups: bool) -> tradeql::lang::Loaded {
    let store = tradeql::store::Store::open_existing(store).unwrap();
    let q = tradeql::lang::QueryFile::read(file).unwrap();
    with_rollups(rollups, || tradeql::lang::load(&q, &store, &[])).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Queries a rollup answers, and queries that must read the rows.
const READ_A_ROLLUP: [&str; 22] = [
    "flows_by_year",
    "monthly_flows",
    "ytd_flows",
    "trade_2024",
    "trade_2024_usd",
    "minerals_blocs",
    "minerals_unit_values",
    "minerals_top_partners",
    "partners_top10_2024",
    "q1_flow_growth",
    "q2_partner_growth",
    "q3_partner_share",
    "q4_chapter_ytd",
    "q5_group_contribution",
    "yearly_measures",
    "monthly_measures",
    "blocs",
    "blocs_as_of",
    "top_unit_values",
    "quarters",
    "no_period",
    "aggregates_left_out",
];
const READ_THE_ROWS: [&str; 6] =
    ["revisions_2024", "partners_blocs_2024", "listing", "aggregates", "every_aggregate", "chapters_filtered"];

#[test]
fn every_corpus_query_gives_the_same_rows_from_its_rollup_as_from_the_rows() {
    let mut read: Vec<String> = Vec::new();
    for (name, store, file) in &rolled().queries {
        let (on, off) = (load(store, file, true), load(store, file, false));
        assert!(off.rollup.rollup.is_none(), "{name}: a rollup read while rollups are off");
        assert!(off.read.is_none(), "{name}: a rollup read while rollups are off");
        if let Some(r) = &on.rollup.rollup {
            read.push(name.clone());
            // The smallest covering rollup: never the one by every column when a smaller one does.
            let rows = |m: &tradeql::store::Manifest, n: &str| {
                m.rollups.iter().find(|x| x.name == n).unwrap().files.iter().map(|f| f.rows).sum::<u64>()
            };
            for other in on.manifest.rollups.iter().filter(|x| x.name != *r) {
                if !on.rollup.reasons.iter().any(|why| why.starts_with(&format!("{} (by", other.name))) {
                    assert!(
                        rows(&on.manifest, r) <= rows(&on.manifest, &other.name),
                        "{name}: {r} over {}",
                        other.name
                    );
                }
            }
        }
        let got = tradeql::run::collect(&on.compiled).unwrap();
        let want = tradeql::run::collect(&off.compiled).unwrap();
        assert_same(name, "from a rollup", &got, &want);
    }
    for name in READ_A_ROLLUP {
        assert!(read.iter().any(|r| r == name), "{name} reads no rollup; these do: {read:?}");
    }
    for name in READ_THE_ROWS {
        assert!(!read.iter().any(|r| r == name), "{name} reads a rollup");
    }
}

#[test]
fn the_whole_corpus_gives_the_same_results_on_duckdb_from_rollups_as_polars_from_the_rows() {
    let Some(python) = crate::peers::peer_python() else { return };
    let options = tradeql::sql::engine::EngineOptions { python: Some(python), ..Default::default() };
    let loaded: Vec<(String, tradeql::lang::Loaded, tradeql::lang::Loaded, PathBuf)> = rolled()
        .queries
        .iter()
        .map(|(name, store, file)| (name.clone(), load(store, file, true), load(store, file, false), store.clone()))
        .collect();
    let pairs: Vec<(&tradeql::lang::Loaded, &Path)> = loaded.iter().map(|(_, on, _, s)| (on, s.as_path())).collect();
    let results = tradeql::sql::run_loaded(&pairs, tradeql::sql::Dialect::Duckdb, &options).unwrap();
    let mut from_rollups = 0;
    for ((name, on, off, store), result) in loaded.iter().zip(results) {
        let got = result.unwrap_or_else(|e| panic!("{name} on DuckDB: {e}"));
        let want = tradeql::run::collect(&off.compiled).unwrap();
        // DuckDB adds in its own order on the rows too: 1e-9, as scaleout.rs has it.
        assert_close(name, "on DuckDB from a rollup", &got, &want, 1e-9);
        if on.read.is_some() {
            from_rollups += 1;
            let sql = tradeql::sql::compile_loaded(on, store, tradeql::sql::Dialect::Duckdb, None).unwrap().text;
            assert!(sql.contains("/rollup-"), "{name}: the SQL does not read the rollup's files:\n{sql}");
        }
    }
    assert!(from_rollups >= READ_A_ROLLUP.len(), "only {from_rollups} queries read a rollup on DuckDB");
}

/// A panel store with the rollup `partner` (by period, partner).
fn panel_with_rollup(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    gen_into(&store, "--partners 20 --products 40 --months 36 --density 0.3 --seed 9 --start 2021-01");
    ok(&["rollup", "add", "trade", "--by", "partner", "--store", s(&store)]);
    store
}

fn manifest(store: &Path) -> tradeql::store::Manifest {
    tradeql::store::Store::open_existing(store).unwrap().manifest("trade").unwrap().unwrap()
}

#[test]
fn an_ingest_rebuilds_the_rollups_of_the_years_it_writes_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = panel_with_rollup(dir.path());
    let before = manifest(&store);
    let q = write(dir.path(), "q.tql", "from trade\nby year, partner\nsum value\nshow value, yoy(value)\n");
    let q1 = load(&store, &q, true);
    assert_eq!(q1.rollup.rollup.as_deref(), Some("partner"));
    // A revision of one month of 2022, with other values.
    let csv = dir.path().join("rev.csv");
    ok(&[
        "gen",
        "--csv",
        s(&csv),
        "--partners",
        "20",
        "--products",
        "40",
        "--months",
        "1",
        "--density",
        "0.5",
        "--seed",
        "3",
        "--start",
        "2022-06",
    ]);
    let report = ok(&["ingest", s(&csv), "--store", s(&store), "--dataset", "trade", "-q"]);
    assert!(
        report.contains("partitions written: year=2022\n") || report.ends_with("partitions written: year=2022"),
        "each year once: {report}"
    );
    let after = manifest(&store);
    assert_eq!(after.version, before.version + 1);
    let file_of =
        |m: &tradeql::store::Manifest, y: i32| m.rollups[0].files.iter().find(|f| f.year == y).unwrap().path.clone();
    assert_ne!(file_of(&after, 2022), file_of(&before, 2022), "the year revised keeps its old rollup");
    assert_eq!(file_of(&after, 2021), file_of(&before, 2021), "a year not touched is rebuilt");
    assert_eq!(file_of(&after, 2023), file_of(&before, 2023), "a year not touched is rebuilt");
    assert!(file_of(&after, 2022).contains(&format!("v{:06}", after.version)));
    // The new figures, the same from the rollup as from the rows; and not those before.
    let (on, off) = (load(&store, &q, true), load(&store, &q, false));
    assert_eq!(on.rollup.rollup.as_deref(), Some("partner"));
    let (got, want) = (tradeql::run::collect(&on.compiled).unwrap(), tradeql::run::collect(&off.compiled).unwrap());
    assert_same("revised", "from a rollup", &got, &want);
    let old = tradeql::run::collect(&q1.compiled);
    assert!(old.is_ok(), "the version read before the revision is still readable");
    assert_ne!(old.unwrap().frame, got.frame, "the revision changed nothing");
    assert!(ok(&["info", s(&store), "--verify"]).contains("every file matches its manifest"));
    // The version before still reads its own rollup files; vacuum keeps what a kept version lists.
    let v = before.version.to_string();
    let q_before = write(dir.path(), "qb.tql", &format!("from trade@{v}\nby year, partner\nsum value\n"));
    let (b_on, b_off) = (load(&store, &q_before, true), load(&store, &q_before, false));
    assert_eq!(b_on.rollup.rollup.as_deref(), Some("partner"));
    assert_same(
        "version before",
        "from its rollup",
        &tradeql::run::collect(&b_on.compiled).unwrap(),
        &tradeql::run::collect(&b_off.compiled).unwrap(),
    );
    ok(&["vacuum", "--keep", "1", "--store", s(&store)]);
    assert!(ok(&["info", s(&store), "--verify"]).contains("every file matches its manifest"));
    let pool = store.join(".tradeql/datasets/trade/files");
    for f in &after.rollups[0].files {
        assert!(pool.join(&f.path).is_file(), "vacuum removed {}", f.path);
    }
    assert!(!pool.join(file_of(&before, 2022)).exists(), "vacuum kept the replaced rollup file");
}

#[test]
fn explain_says_which_rollup_is_read_and_why_the_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = panel_with_rollup(dir.path());
    ok(&["rollup", "add", "trade", "--by", "flow,product", "--store", s(&store)]);
    let q = write(dir.path(), "q.tql", "from trade\nwhere flow = \"export\"\nby year, partner\nsum value\n");
    let text = ok(&["explain", s(&q), "--store", s(&store)]);
    assert!(text.contains("rollup: none is read"), "{text}");
    assert!(text.contains("partner (by partner) does not hold flow"), "{text}");
    assert!(text.contains("flow_product (by flow, product) does not hold partner"), "{text}");
    ok(&["rollup", "add", "trade", "--by", "partner,flow", "--store", s(&store)]);
    let text = ok(&["explain", s(&q), "--store", s(&store)]);
    assert!(text.contains("rollup: partner_flow is read in place of the rows"), "{text}");
    assert!(text.contains("the query reads flow, partner"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(["explain", s(&q), "--store", s(&store)])
        .env("TRADEQL_ROLLUPS", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rollup: none is read") && text.contains("TRADEQL_ROLLUPS is off"), "{text}");
    let listing = write(dir.path(), "l.tql", "from trade\nwhere value > 1e6\nby year\nsum value\n");
    let text = ok(&["explain", s(&listing), "--store", s(&store)]);
    assert!(text.contains("its row stage reads value, which is not a code column"), "{text}");
    let info = ok(&["info", s(&store)]);
    assert!(info.contains("rollup      partner_flow (by period, partner, flow):"), "{info}");
}

#[test]
fn rollup_add_refuses_what_the_dataset_lacks_and_remove_takes_a_rollup_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = panel_with_rollup(dir.path());
    let err = fails(&["rollup", "add", "trade", "--by", "partnr", "--store", s(&store)]);
    assert!(err.contains("no code column \"partnr\"") && err.contains("did you mean \"partner\"?"), "{err}");
    let err = fails(&["rollup", "add", "trade", "--by", "year,partner", "--store", s(&store)]);
    assert!(err.contains("already has the rollup partner"), "{err}");
    let err = fails(&["rollup", "add", "nope", "--by", "partner", "--store", s(&store)]);
    assert!(err.contains("no dataset nope"), "{err}");
    let v = manifest(&store).version;
    ok(&["rollup", "remove", "trade", "partner", "--store", s(&store)]);
    let m = manifest(&store);
    assert!(m.rollups.is_empty());
    assert_eq!(m.version, v + 1);
    assert!(ok(&["info", s(&store), "--verify"]).contains("every file matches its manifest"));
    let err = fails(&["rollup", "remove", "trade", "partner", "--store", s(&store)]);
    assert!(err.contains("has no rollup \"partner\""), "{err}");
}

#[test]
fn advise_proposes_rollups_that_answer_the_benchmark_queries() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    gen_into(&store, "--partners 30 --products 60 --months 36 --density 0.5 --seed 4 --start 2021-01");
    let queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/queries");
    let advice = ok(&["rollup", "advise", s(&queries), "--store", s(&store)]);
    let commands: Vec<&str> = advice.lines().map(str::trim).filter(|l| l.starts_with("tradeql rollup add")).collect();
    assert!(!commands.is_empty() && commands.len() <= 3, "{advice}");
    for c in &commands {
        let by = c.split("--by ").nth(1).unwrap();
        ok(&["rollup", "add", "trade", "--by", by, "--store", s(&store)]);
    }
    for q in tql_files(&queries) {
        let l = load(&store, &q, true);
        assert!(l.rollup.rollup.is_some(), "{}: no rollup read after the advice:\n{advice}", q.display());
        let off = load(&store, &q, false);
        assert_same(
            &q.display().to_string(),
            "from a rollup",
            &tradeql::run::collect(&l.compiled).unwrap(),
            &tradeql::run::collect(&off.compiled).unwrap(),
        );
    }
    let again = ok(&["rollup", "advise", s(&queries), "--store", s(&store)]);
    assert!(again.contains("the store has it") && !again.contains("tradeql rollup add"), "{again}");
    // Q4 reads product only through chapter(): the advice keeps chapters.
    assert!(commands.contains(&"tradeql rollup add trade --by chapter(product)"), "{advice}");
}

#[test]
fn a_rollup_by_chapter_answers_the_queries_that_read_products_only_through_chapter() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    gen_into(&store, "--partners 12 --products 300 --months 24 --density 0.4 --seed 5 --start 2022-01");
    let added = ok(&["rollup", "add", "trade", "--by", "chapter(product),flow", "--store", s(&store)]);
    assert!(added.starts_with("rollup flow_chapter_product ") || added.starts_with("rollup chapter_product_flow "));
    let m = manifest(&store);
    let r = &m.rollups[0];
    // 300 products fall in 97 chapters: the rollup has a row per month, chapter and flow.
    let rows: u64 = r.files.iter().map(|f| f.rows).sum();
    assert_eq!(rows, 24 * 97 * 2, "{added}");
    let answered = [
        "from trade\nderive chapter = chapter(product)\nby month, chapter\nsum value\nshow value, yoy(value), ytd(value)\n",
        "from trade\nwhere chapter(product) = \"27\" and flow = \"import\"\nby year\nagg v = sum(value), n = count(), lo = min(value)\n",
        "from trade\nderive ch = chapter(product)\nwhere ch in (\"01\", \"02\")\nby quarter, ch, flow\nsum value, quantity\n",
    ];
    let from_rows = [
        "from trade\nby year, product\nsum value\n",
        "from trade\nderive h = heading(product)\nby year, h\nsum value\n",
        "from trade\nwhere product = \"010110\"\nby year\nsum value\n",
        "from trade\nderive chapter = chapter(product)\nby year, chapter, partner\nsum value\n",
    ];
    for (i, text) in answered.iter().chain(&from_rows).enumerate() {
        let q = write(dir.path(), &format!("q{i}.tql"), text);
        let (on, off) = (load(&store, &q, true), load(&store, &q, false));
        let reads = on.rollup.rollup.is_some();
        assert_eq!(reads, i < answered.len(), "{text}\n{}", on.rollup.describe());
        let (a, b) = (tradeql::run::collect(&on.compiled).unwrap(), tradeql::run::collect(&off.compiled).unwrap());
        assert!(b.frame.height() > 0, "{text}");
        assert_same(text, "from a rollup by chapter", &a, &b);
    }
    assert!(ok(&["info", s(&store), "--verify"]).contains("every file matches its manifest"));
    let err = fails(&["rollup", "add", "trade", "--by", "product,chapter(product)", "--store", s(&store)]);
    assert!(err.contains("holds product once"), "{err}");
    let err = fails(&["rollup", "add", "trade", "--by", "section(product)", "--store", s(&store)]);
    assert!(err.contains("chapter(c) or heading(c)"), "{err}");
}

/// The codec of every column chunk of every Parquet file under `dir`.
fn codecs_under(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let mut f = std::fs::File::open(&p).unwrap();
                let meta = polars_parquet::parquet::read::read_metadata(&mut f).unwrap();
                for rg in &meta.row_groups {
                    for c in rg.parquet_columns() {
                        out.insert(format!("{:?}", c.compression()));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn a_dataset_written_lz4_keeps_its_codec_through_revisions_and_rollups_and_gives_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("panel.csv");
    let rev = dir.path().join("rev.csv");
    ok(&["gen", "--csv", s(&csv), "--partners", "15", "--products", "30", "--months", "24", "--start", "2022-01"]);
    ok(&["gen", "--csv", s(&rev), "--partners", "15", "--products", "30", "--months", "1", "--start", "2023-06"]);
    let q = write(
        dir.path(),
        "q.tql",
        "from trade\nby year, partner\nagg value = sum(value), n = count()\nshow value, yoy(value), n\n",
    );
    let mut outputs = Vec::new();
    for codec in ["zstd", "lz4", "none"] {
        let store = dir.path().join(codec);
        let mut first = vec!["ingest", s(&csv), "--store", s(&store), "--dataset", "trade", "-q"];
        if codec != "zstd" {
            first.extend(["--compression", codec]);
        }
        ok(&first);
        ok(&["rollup", "add", "trade", "--by", "partner", "--store", s(&store)]);
        // A revision without --compression keeps the dataset's codec, for rows and rollups.
        ok(&["ingest", s(&rev), "--store", s(&store), "--dataset", "trade", "-q"]);
        let want = match codec {
            "zstd" => "Zstd",
            "lz4" => "Lz4Raw",
            _ => "Uncompressed",
        };
        let files = store.join(".tradeql/datasets/trade/files");
        assert_eq!(codecs_under(&files), [want.to_string()].into(), "{codec}");
        assert_eq!(manifest(&store).compression.to_string(), codec);
        let info = ok(&["info", s(&store), "--verify"]);
        assert!(info.contains("every file matches its manifest"), "{info}");
        assert_eq!(info.contains(&format!("written {codec}")), codec != "zstd", "{info}");
        let (on, off) = (load(&store, &q, true), load(&store, &q, false));
        assert_eq!(on.rollup.rollup.as_deref(), Some("partner"));
        let (a, b) = (tradeql::run::collect(&on.compiled).unwrap(), tradeql::run::collect(&off.compiled).unwrap());
        assert_same(codec, "from its rollup", &a, &b);
        outputs.push((codec, b.frame));
    }
    // The codec changes the bytes on disk, never a figure: bit for bit the same rows.
    for (codec, frame) in &outputs[1..] {
        assert!(frame.equals_missing(&outputs[0].1), "{codec} gives other figures than zstd");
    }
}

/// The compressed bytes of the column chunks `columns` over every data file of the dataset.
fn chunk_bytes(store: &Path, columns: &[&str]) -> u64 {
    let m = manifest(store);
    let pool = store.join(".tradeql/datasets/trade/files");
    let mut total = 0;
    for f in &m.files {
        let mut file = std::fs::File::open(pool.join(&f.path)).unwrap();
        let meta = polars_parquet::parquet::read::read_metadata(&mut file).unwrap();
        for rg in &meta.row_groups {
            for c in rg.parquet_columns() {
                if columns.contains(&c.descriptor().path_in_schema[0].as_str()) {
                    total += c.compressed_size() as u64;
                }
            }
        }
    }
    total
}

#[test]
fn the_scan_floor_reads_the_column_chunks_each_query_needs_from_the_rows_even_with_a_rollup() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    gen_into(&store, "--partners 20 --products 60 --months 24 --density 0.5");
    let floors = |store: &Path| -> Vec<(String, u64, f64)> {
        let text = ok(&["bench", "--store", s(store), "--runs", "1", "--floor", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        report["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| {
                let f = &q["floor"];
                for stage in ["read_s", "decompress_s", "decode_s", "query_s"] {
                    assert!(f[stage].as_f64().unwrap() > 0.0, "{}: {stage} {f}", q["id"]);
                }
                (q["id"].as_str().unwrap().to_string(), f["bytes"].as_u64().unwrap(), f["query_s"].as_f64().unwrap())
            })
            .collect()
    };
    let want = [
        ("Q1", chunk_bytes(&store, &["flow", "value"])),
        ("Q2", chunk_bytes(&store, &["partner", "value"])),
        ("Q3", chunk_bytes(&store, &["partner", "value"])),
        ("Q4", chunk_bytes(&store, &["period", "product", "value"])),
        ("Q5", chunk_bytes(&store, &["partner", "value"])),
    ];
    let before = floors(&store);
    for ((id, bytes, _), (want_id, want_bytes)) in before.iter().zip(want) {
        assert_eq!((id.as_str(), *bytes), (want_id, want_bytes));
    }
    ok(&["rollup", "add", "trade", "--by", "partner", "--store", s(&store)]);
    let after = floors(&store);
    let bytes = |v: &[(String, u64, f64)]| v.iter().map(|(id, b, _)| (id.clone(), *b)).collect::<Vec<_>>();
    assert_eq!(bytes(&after), bytes(&before), "with a rollup, the floor is still that of the rows");
}
