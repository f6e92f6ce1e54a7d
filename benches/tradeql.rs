//! Criterion benches, so a regression shows: `cargo bench`.
//!
//! - `compile/corpus`: lex, parse, resolve and build the polars plan of every
//!   saved query in `queries/` against a store of the bundled data.
//! - `measure/NAME`: one query per measure of docs/measures.md, run on a small
//!   generated panel (missing cells, overlapping groups).
//!
//! The figures of the README come from `tradeql bench` (alternating peers on
//! large panels); these are for spotting changes between commits.

use criterion::{Criterion, criterion_group, criterion_main};
use std::path::{Path, PathBuf};
use std::process::Command;
use tradeql::lang::{self, QueryFile};
use tradeql::store::Store;

fn tradeql_cmd(args: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_tradeql")).args(args).status().expect("run tradeql");
    assert!(status.success(), "tradeql {args:?} failed");
}

/// A store with the bundled data, as scripts/main.sh makes it.
fn bundled_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let d = |f: &str| data.join(f).to_string_lossy().to_string();
    let s = store.to_string_lossy().to_string();
    tradeql_cmd(&["ingest", &d("gacc_monthly_2023_2024.csv"), "-m", &d("gacc.toml"), "--store", &s, "-q"]);
    tradeql_cmd(&[
        "ingest",
        &d("critical_minerals_hs6_monthly.csv"),
        "-m",
        &d("critical_minerals.toml"),
        "--store",
        &s,
        "-q",
    ]);
    tradeql_cmd(&["groups", "add", "partner_groups", &d("partner_groups.csv"), "--store", &s]);
    tradeql_cmd(&["groups", "add", "hs_sections", &d("hs_section_groups.csv"), "--of", "product", "--store", &s]);
    tradeql_cmd(&["groups", "add", "un_regions", &d("un_regions.csv"), "--of", "partner", "--store", &s]);
    tradeql_cmd(&["rates", "add", &d("fx_monthly.csv"), "--store", &s]);
    let partners = ["ingest", &d("gacc_partners_2024.csv"), "-m", &d("gacc_partners.toml"), "--store", &s, "-q"];
    tradeql_cmd(&partners);
    tradeql_cmd(&[
        "names",
        "add",
        &d("country_codes.csv"),
        "--of",
        "partner",
        "--code",
        "iso3",
        "--name",
        "name_en",
        "--store",
        &s,
    ]);
    store
}

fn compile_corpus(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(bundled_store(dir.path()));
    let queries: Vec<QueryFile> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("queries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tql"))
        .map(|p| QueryFile::read(&p).unwrap())
        .collect();
    c.bench_function("compile/corpus", |b| {
        b.iter(|| {
            for q in &queries {
                std::hint::black_box(lang::load(q, &store, &[]).unwrap());
            }
        })
    });
}

const MEASURES: [(&str, &str); 12] = [
    ("yoy", "by year, partner\nshow yoy(value)"),
    ("pop", "by month, partner\nshow pop(value)"),
    ("share", "by year, partner\nshow share(value)"),
    ("pp", "by year, partner\nshow pp(share(value))"),
    ("contribution", "group partner by partner_groups as grp\nby year, grp\nshow contribution(value)"),
    ("ytd_yoy", "by month, partner\nshow ytd_yoy(value)"),
    ("rolling", "by month, partner\nshow rolling(value, 12)"),
    ("rank", "by year, partner\nshow rank(value)"),
    ("top", "by year, partner\ntop 5 partner by value\nshow value"),
    ("high_record", "by month, partner\nshow high(value, 12), record(value)"),
    ("streak", "by month, partner\nshow streak(yoy(value) > 0)"),
    ("unit_value", "by year, product\nsum value, quantity\nshow unit_value()"),
];

fn measures(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("panel");
    let s = store_dir.to_string_lossy().to_string();
    tradeql_cmd(&["gen", "--into", &s, "--partners", "40", "--products", "50", "--months", "48", "--density", "0.4"]);
    let store = Store::at(&store_dir);
    let mut group = c.benchmark_group("measure");
    for (name, body) in MEASURES {
        let file = QueryFile { path: PathBuf::from(format!("{name}.tql")), text: format!("from trade\n{body}\n") };
        let loaded = lang::load(&file, &store, &[]).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| std::hint::black_box(tradeql::run::collect(&loaded.compiled).unwrap()))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = compile_corpus, measures
}
criterion_main!(benches);
