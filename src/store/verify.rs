//! `info --verify`: does the store hold exactly what its manifests say?
//!
//! Every listed file must exist with the recorded size, SHA-256 and row count;
//! the rows must add up to the manifest's total; and no Parquet file may sit in
//! a dataset directory without being listed, since DuckDB or Spark scanning the
//! directory would read it.

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
    for dataset in store.datasets()? {
        let Some(manifest) = store.manifest(&dataset)? else { continue };
        let dir = store.dataset_dir(&dataset);
        let mut listed = std::collections::HashSet::new();
        let mut total = 0u64;
        for file in &manifest.files {
            listed.insert(dir.join(&file.path));
            total += file.rows;
            check_file(&dir.join(&file.path), file.bytes, &file.sha256, Some(file.rows), &mut problems);
        }
        if total != manifest.rows {
            problems.push(Problem(format!(
                "{dataset}: the files hold {total} rows but the manifest says {}",
                manifest.rows
            )));
        }
        for path in parquet_files_under(&dir) {
            if !listed.contains(&path) {
                problems.push(Problem(format!("{}: not listed in the manifest of {dataset}", path.display())));
            }
        }
    }
    let groups = store.groups_manifest()?;
    let dir = store.root().join(GROUPS_DIR);
    for table in &groups.tables {
        check_file(&dir.join(&table.path), table.bytes, &table.sha256, Some(table.rows), &mut problems);
    }
    if let Some(rates) = &groups.rates {
        check_file(&dir.join(&rates.path), rates.bytes, &rates.sha256, Some(rates.rows), &mut problems);
    }
    Ok(problems)
}

fn check_file(path: &Path, bytes: u64, sha256: &str, rows: Option<u64>, problems: &mut Vec<Problem>) {
    let shown = path.display();
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
}

/// Rows of a Parquet file, from its footer.
pub fn parquet_rows(path: &Path) -> PolarsResult<u64> {
    let file = File::open(path)?;
    let mut reader = ParquetReader::new(file);
    Ok(reader.get_metadata()?.num_rows as u64)
}

fn parquet_files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(parquet_files_under(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}
