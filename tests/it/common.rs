//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn tradeql(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tradeql"))
        .args(args)
        .env_remove("TRADEQL_STORE")
        .env_remove("TRADEQL_CRASH_AT")
        .env_remove("TRADEQL_PAUSE_AT")
        .output()
        .expect("run tradeql")
}

pub fn ok(args: &[&str]) -> String {
    let out = tradeql(args);
    assert!(
        out.status.success(),
        "tradeql {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs tradeql expecting failure; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = tradeql(args);
    assert!(!out.status.success(), "tradeql {args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).to_string()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file of the store (but the lock) with its content: the state a failed
/// command must leave unchanged.
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &p, out);
            } else if rel != ".tradeql/lock" {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

pub const GOOD: &str = "period,reporter,partner,flow,product,value\n\
2024-01,CHN,USA,export,850110,100\n\
2024-01,CHN,USA,import,850110,40\n\
2024-02,CHN,DEU,export,850110,70\n";

/// A store with dataset `trade` holding [`GOOD`].
pub fn good_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let src = write(dir, "good.csv", GOOD);
    ok(&["ingest", s(&src), "--store", s(&store), "--dataset", "trade", "-q"]);
    store
}

/// (rows, sum of value) of a dataset, read with polars through the Hive layout.
pub fn totals(store: &Path, dataset: &str) -> (u64, f64) {
    use polars::prelude::*;
    let glob = format!("{}/{dataset}/**/*.parquet", store.display());
    let df = LazyFrame::scan_parquet(PlRefPath::new(&glob), ScanArgsParquet::default())
        .unwrap()
        .select([len().alias("n"), col("value").sum().alias("v")])
        .collect()
        .unwrap();
    let n = df.column("n").unwrap().u32().unwrap().get(0).unwrap() as u64;
    let v = df.column("v").unwrap().f64().unwrap().get(0).unwrap_or(0.0);
    (n, v)
}

/// `tradeql gen --into STORE ARGS` (ARGS split at spaces).
pub fn gen_into(store: &Path, args: &str) {
    let mut all = vec!["gen", "--into", s(store)];
    all.extend(args.split_whitespace());
    ok(&all);
}

/// Rows of a CSV result, each as column -> text.
pub fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    rdr.records()
        .map(|r| headers.iter().zip(r.unwrap().iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect())
        .collect()
}

/// The `.tql` files of a folder, sorted.
pub fn tql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tql"))
        .collect();
    files.sort();
    files
}

pub fn data_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name).to_string_lossy().to_string()
}

/// Ingests the bundled China customs totals (dataset `gacc`) into `store`.
pub fn ingest_gacc(store: &Path) {
    ok(&["ingest", &data_file("gacc_monthly_2023_2024.csv"), "-m", &data_file("gacc.toml"), "--store", s(store), "-q"]);
}

/// The bundled data as scripts/main.sh stores it: the rates, the three datasets and the group tables.
pub fn ingest_bundled(store: &Path) {
    ok(&["rates", "add", &data_file("fx_monthly.csv"), "--store", s(store)]);
    ingest_gacc(store);
    let partners = data_file("gacc_partners_2024.csv");
    ok(&["ingest", &partners, "-m", &data_file("gacc_partners.toml"), "--store", s(store), "-q"]);
    let minerals = data_file("critical_minerals_hs6_monthly.csv");
    ok(&["ingest", &minerals, "-m", &data_file("critical_minerals.toml"), "--store", s(store), "-q"]);
    ok(&["groups", "add", "partner_groups", &data_file("partner_groups.csv"), "--of", "partner", "--store", s(store)]);
    ok(&["groups", "add", "hs_sections", &data_file("hs_section_groups.csv"), "--of", "product", "--store", s(store)]);
    ok(&["groups", "add", "un_regions", &data_file("un_regions.csv"), "--of", "partner", "--store", s(store)]);
    let countries = data_file("country_codes.csv");
    ok(&["names", "add", &countries, "--of", "partner", "--code", "iso3", "--name", "name_en", "--store", s(store)]);
    let hs = data_file("hs_codes.csv");
    ok(&["names", "add", &hs, "--of", "product", "--code", "hscode", "--name", "description", "--store", s(store)]);
}

/// Whether the command-line tool `name` (strace, mkfifo) is installed; a test
/// that needs it skips without it, except under CI, where it must be there.
pub fn tool_present(name: &str) -> bool {
    let found = std::process::Command::new(name).arg("--version").output().is_ok();
    assert!(
        found || std::env::var("CI").as_deref() != Ok("true"),
        "{name} is missing under CI: run scripts/setup-peers.sh"
    );
    if !found {
        eprintln!("skipped: {name} is not installed (run scripts/setup-peers.sh)");
    }
    found
}
