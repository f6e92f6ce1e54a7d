//! `info --verify`: does the store hold exactly what its manifests say?
//!
//! Every listed file must exist with the recorded size, SHA-256 and row count;
//! the rows must add up to the manifest's total; the published tree must hold
//! exactly the current version's files (no other file may sit there, since
//! DuckDB or Spark scanning the folder would read it); and every kept version
//! must still have its files.

use super::{GROUPS_DIR, Store, sha256_file};
use crate::error::Result;
use polars::prelude::*;
use std::fs::File;
use std::path::Path;

/// One inconsistency, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

/// Checks every dataset and group table of the store.
pub fn verify(store: &Store) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    if store.has_pending_journal() {
        problems.push(Problem("an interrupted commit has not been recovered".into()));
    }
    for folder in folders_without_manifest(store) {
        problems.push(Problem(format!(
            "{}: a dataset folder without a manifest in .tradeql/datasets/ (tradeql does not see its data; glob readers do)",
            folder.display()
        )));
    }
    // Files a commit replaced while a reader was reading: deleted once it is done.
    let retired = store.retired_paths();
    for dataset in store.datasets()? {
        let manifest = match store.manifest(&dataset) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                problems.push(Problem(format!("{dataset}: {e}")));
                continue;
            }
        };
        let dir = store.files_dir(&dataset);
        let tree = store.dataset_dir(&dataset);
        if manifest.dataset != dataset {
            problems.push(Problem(format!("{dataset}: its manifest names the dataset {:?}", manifest.dataset)));
        }
        if manifest.version == 0 {
            problems.push(Problem(format!("{dataset}: version 0 in the manifest (versions start at 1)")));
        }
        if manifest.periods.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(Problem(format!("{dataset}: the manifest's periods are not sorted and distinct")));
        }
        let mut aggregate_total = 0u64;
        let mut listed = std::collections::HashSet::new();
        let mut total = 0u64;
        let mut all_periods = std::collections::BTreeSet::new();
        for file in &manifest.files {
            if !listed.insert(dir.join(&file.path)) {
                problems.push(Problem(format!("{dataset}: {} is listed twice in the manifest", file.path)));
                continue;
            }
            total += file.rows;
            all_periods.extend(file.periods.iter().cloned());
            let path = dir.join(&file.path);
            if !file.path.starts_with(&format!("year={}/", file.year)) {
                problems.push(Problem(format!("{}: listed as year {} in the manifest", path.display(), file.year)));
            }
            aggregate_total += file.aggregate_rows;
            if check_file(&path, file.bytes, &file.sha256, Some(file.rows), &mut problems) {
                match file_facts(&path, manifest.frequency) {
                    Ok(facts) => {
                        if facts.aggregates != file.aggregate_rows {
                            problems.push(Problem(format!(
                                "{}: {} aggregate rows, the manifest says {}",
                                path.display(),
                                facts.aggregates,
                                file.aggregate_rows
                            )));
                        }
                        let said: Vec<&str> =
                            manifest.schema.iter().map(|c| c.name.as_str()).filter(|n| *n != "year").collect();
                        if facts.columns.iter().map(String::as_str).collect::<Vec<_>>() != said {
                            problems.push(Problem(format!(
                                "{}: columns {}, the manifest's schema says {}",
                                path.display(),
                                facts.columns.join(", "),
                                said.join(", ")
                            )));
                        }
                        if facts.periods != file.periods {
                            problems.push(Problem(format!(
                                "{}: holds the periods {}, the manifest says {}",
                                path.display(),
                                facts.periods.join(", "),
                                file.periods.join(", ")
                            )));
                        }
                    }
                    Err(e) => problems.push(Problem(format!("{}: not readable: {e}", path.display()))),
                }
            }
        }
        check_rollups(&manifest, &dir, &mut listed, &mut problems);
        if total != manifest.rows {
            problems.push(Problem(format!(
                "{dataset}: the files hold {total} rows but the manifest says {}",
                manifest.rows
            )));
        }
        if aggregate_total != manifest.aggregate_rows {
            problems.push(Problem(format!(
                "{dataset}: the files hold {aggregate_total} aggregate rows but the manifest says {}",
                manifest.aggregate_rows
            )));
        }
        let said: std::collections::BTreeSet<String> = manifest.periods.iter().cloned().collect();
        if said != all_periods {
            problems.push(Problem(format!(
                "{dataset}: the manifest's periods ({}) are not those of its files ({})",
                summary(&said),
                summary(&all_periods)
            )));
        }
        // The published tree: the current version's files, as links, and nothing else.
        let published_files = super::published_files(&manifest);
        for (published, stored) in &published_files {
            let published = tree.join(published);
            if !super::same_file(&published, &dir.join(stored)) {
                problems.push(Problem(format!(
                    "{}: not published (plain readers of {} do not see it)",
                    published.display(),
                    tree.display()
                )));
            }
        }
        let current: std::collections::HashSet<std::path::PathBuf> =
            published_files.iter().map(|(p, _)| tree.join(p)).collect();
        for path in files_under(&tree) {
            if !current.contains(&path) {
                problems.push(Problem(format!(
                    "{}: not a file of the current version of {dataset} (plain readers of the folder read it)",
                    path.display()
                )));
            }
        }
        // Every kept version still has its files; no file belongs to none.
        for version in store.versions(&dataset)? {
            match store.manifest_version(&dataset, version) {
                Ok(m) => {
                    for f in m.stored_files() {
                        if listed.insert(dir.join(&f.path)) && !dir.join(&f.path).is_file() {
                            problems.push(Problem(format!(
                                "{}: missing, and version {version} of {dataset} lists it",
                                dir.join(&f.path).display()
                            )));
                        }
                    }
                }
                Err(e) => problems.push(Problem(format!("{dataset}: version {version}: {e}"))),
            }
        }
        for path in files_under(&dir) {
            if !listed.contains(&path) && !retired.contains(&path) {
                problems.push(Problem(format!("{}: not listed by any kept version of {dataset}", path.display())));
            }
        }
    }
    let groups = match store.groups_manifest() {
        Ok(g) => g,
        Err(e) => {
            problems.push(Problem(format!("{GROUPS_DIR}: {e}")));
            return Ok(problems);
        }
    };
    let dir = store.root().join(GROUPS_DIR);
    let mut listed = std::collections::HashSet::new();
    for table in &groups.tables {
        if !listed.insert(table.path.clone()) {
            problems.push(Problem(format!("{GROUPS_DIR}: {} is listed twice", table.path)));
            continue;
        }
        check_file(&dir.join(&table.path), table.bytes, &table.sha256, Some(table.rows), &mut problems);
    }
    if let Some(rates) = &groups.rates {
        listed.insert(rates.path.clone());
        check_file(&dir.join(&rates.path), rates.bytes, &rates.sha256, Some(rates.rows), &mut problems);
    }
    for names in &groups.names {
        listed.insert(names.path.clone());
        check_file(&dir.join(&names.path), names.bytes, &names.sha256, Some(names.rows), &mut problems);
    }
    for path in parquet_files_under(&dir) {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if !listed.contains(&name) && !retired.contains(&path) {
            problems.push(Problem(format!("{}: not listed in the groups manifest", path.display())));
        }
    }
    Ok(problems)
}

/// `a, b, c` or `a .. z (N periods)`.
fn summary(periods: &std::collections::BTreeSet<String>) -> String {
    match (periods.first(), periods.last()) {
        (Some(a), Some(b)) if periods.len() > 3 => format!("{a} .. {b}, {} periods", periods.len()),
        _ => periods.iter().cloned().collect::<Vec<_>>().join(", "),
    }
}

/// Folders of the store that hold files but no manifest: a dataset whose
/// manifest was deleted (`.`- and `_`-prefixed folders are tradeql's own).
fn folders_without_manifest(store: &Store) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(store.root()) else { return Vec::new() };
    let mut out: Vec<std::path::PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            !name.starts_with(['.', '_']) && e.path().is_dir() && !store.datasets().unwrap_or_default().contains(&name)
        })
        .map(|e| e.path())
        .filter(|p| !parquet_files_under(p).is_empty())
        .collect();
    out.sort();
    out
}

/// Checks one file against its manifest entry; true when it matches.
fn check_file(path: &Path, bytes: u64, sha256: &str, rows: Option<u64>, problems: &mut Vec<Problem>) -> bool {
    let shown = path.display();
    let before = problems.len();
    match sha256_file(path) {
        Err(_) => problems.push(Problem(format!("{shown}: missing or unreadable"))),
        Ok((hash, size)) => {
            if size != bytes {
                problems.push(Problem(format!("{shown}: {size} bytes, manifest says {bytes}")));
            } else if hash != sha256 {
                problems.push(Problem(format!("{shown}: content differs from the manifest (SHA-256)")));
            } else if let Some(rows) = rows {
                match parquet_rows(path) {
                    Ok(n) if n == rows => {}
                    Ok(n) => problems.push(Problem(format!("{shown}: {n} rows, manifest says {rows}"))),
                    Err(e) => problems.push(Problem(format!("{shown}: not readable as Parquet: {e}"))),
                }
            }
        }
    }
    problems.len() == before
}

/// Rows of a Parquet file, from its footer.
pub fn parquet_rows(path: &Path) -> PolarsResult<u64> {
    let file = File::open(path)?;
    let mut reader = ParquetReader::new(file);
    Ok(reader.get_metadata()?.num_rows as u64)
}

/// What a data file holds, read in one pass: its columns, its count of
/// aggregate rows and its period labels (sorted).
struct FileFacts {
    columns: Vec<String>,
    aggregates: u64,
    periods: Vec<String>,
}

fn file_facts(path: &Path, frequency: crate::period::Frequency) -> Result<FileFacts> {
    let mut scan = crate::store::scan_file(path)?;
    let columns = scan.collect_schema()?.iter_names().map(|n| n.to_string()).collect();
    let by_period = scan.group_by([col("period")]).agg([col("aggregate").sum().cast(DataType::UInt64)]).collect()?;
    let aggregates = by_period.column("aggregate")?.u64()?.sum().unwrap_or(0);
    let days = by_period.column("period")?.cast(&DataType::Int32)?;
    let mut periods: Vec<String> =
        days.i32()?.iter().flatten().map(|d| crate::period::Period::from_days(d, frequency).to_string()).collect();
    periods.sort();
    periods.dedup();
    Ok(FileFacts { columns, aggregates, periods })
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn parquet_files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect()
}

/// The rollups of the current version: one file per year of the rows, each
/// with the size, hash, rows and columns the manifest says.
fn check_rollups(
    manifest: &super::Manifest,
    dir: &Path,
    listed: &mut std::collections::HashSet<std::path::PathBuf>,
    problems: &mut Vec<Problem>,
) {
    let years: std::collections::BTreeSet<i32> = manifest.files.iter().map(|f| f.year).collect();
    for r in &manifest.rollups {
        let held: std::collections::BTreeSet<i32> = r.files.iter().map(|f| f.year).collect();
        if held != years {
            problems.push(Problem(format!(
                "{}: the rollup {} has files for the years {:?}, the rows for {:?}",
                manifest.dataset, r.name, held, years
            )));
        }
        let view = manifest.rollup_view(&r.name).expect("a rollup of the manifest");
        let said: Vec<&str> = view.schema.iter().map(|c| c.name.as_str()).filter(|n| *n != "year").collect();
        for file in &r.files {
            let path = dir.join(&file.path);
            if !listed.insert(path.clone()) {
                problems.push(Problem(format!("{}: listed twice in the manifest", path.display())));
                continue;
            }
            if !check_file(&path, file.bytes, &file.sha256, Some(file.rows), problems) {
                continue;
            }
            match super::scan_file(&path).and_then(|mut lf| Ok(lf.collect_schema()?)) {
                Ok(schema) => {
                    let columns: Vec<&str> = schema.iter_names().map(|n| n.as_str()).collect();
                    if columns != said {
                        problems.push(Problem(format!(
                            "{}: columns {}, the rollup {} has {}",
                            path.display(),
                            columns.join(", "),
                            r.name,
                            said.join(", ")
                        )));
                    }
                }
                Err(e) => problems.push(Problem(format!("{}: not readable: {e}", path.display()))),
            }
        }
    }
}
