//! `from "FILE"`: a query over files that are in no store.
//!
//! The files (one path, or a `*`/`?` pattern in its last part) are ingested
//! into a scratch store through exactly the checks of `tradeql ingest` (a
//! mapping can be named: `from "book.xlsx" mapping "book.toml"`), with the
//! group tables, names and rates of the query's store when it has them; the
//! query then reads that store. The scratch store is removed with the query.

use crate::error::{Error, ErrorKind, Result};
use crate::store::{GROUPS_DIR, Store};
use std::path::{Path, PathBuf};

/// A scratch store holding one dataset read from files.
pub struct AdHoc {
    _dir: tempfile::TempDir,
    pub store: Store,
    pub dataset: String,
    /// What the ingest warned of, for the query's warnings.
    pub warnings: Vec<String>,
}

/// Reads the files `pattern` names (relative paths from `base`), through
/// `mapping` if given, with the reference tables of `store`.
pub fn read(pattern: &str, mapping: Option<&str>, base: &Path, store: &Store) -> Result<AdHoc> {
    let sources = expand(&base.join(pattern))?;
    sweep_abandoned();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Error::io("cannot create a scratch store in", &std::env::temp_dir(), e))?;
    let root = dir.path().join("store");
    let groups = store.root().join(GROUPS_DIR);
    if groups.is_dir() {
        let to = root.join(GROUPS_DIR);
        std::fs::create_dir_all(&to).map_err(|e| Error::io("cannot create", &to, e))?;
        for entry in std::fs::read_dir(&groups).map_err(|e| Error::io("cannot list", &groups, e))?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let target = to.join(entry.file_name());
                std::fs::copy(entry.path(), &target).map_err(|e| Error::io("cannot copy", &entry.path(), e))?;
            }
        }
    }
    let dataset = dataset_name(pattern);
    let opts = crate::ingest::IngestOptions {
        store: root.clone(),
        dataset: Some(dataset.clone()),
        sources,
        mapping: mapping.map(|m| base.join(m)),
        currency: None,
        quantity_unit: None,
        rejects: None,
        dry_run: false,
        wait: false,
        workers: None,
        progress: false,
        timings: false,
        input_format: None,
        compression: None,
    };
    let report = crate::ingest::ingest(&opts).map_err(|mut e| {
        // A query keeps no rows: what an ingest would suggest for them does not apply.
        e.hints.retain(|h| !h.contains("--rejects"));
        if e.kind == ErrorKind::Input {
            e.hints.push(format!(
                "`tradeql ingest {} --rejects BAD.csv` keeps the good rows and lists the bad ones",
                pattern
            ));
        }
        match mapping {
            None if e.kind == ErrorKind::Input => e.hint(format!(
                "a file in another layout is read through a mapping: from {pattern:?} mapping \"M.toml\""
            )),
            _ => e,
        }
    })?;
    Ok(AdHoc { _dir: dir, store: Store::at(root), dataset, warnings: report.warnings })
}

/// Scratch stores are `<temp>/tradeql-adhoc-<pid>-XXXXXX`.
const PREFIX: &str = "tradeql-adhoc-";

/// Removes the scratch stores of processes that are gone (killed, or
/// stopped by a signal before they could remove their own).
fn sweep_abandoned() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The files a path names: itself, or those its last part's `*`/`?` pattern
/// matches, sorted; none is an error.
fn expand(path: &Path) -> Result<Vec<PathBuf>> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("cannot list", dir, e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| matches(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::new(ErrorKind::NotFound, format!("no file matches {}", path.display())));
    }
    Ok(found)
}

/// Whether `name` matches `pattern` (`*` any run of characters, `?` one).
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut from) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            from = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            from += 1;
            j = from;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The dataset a file is read as: its name without extension or pattern,
/// letters, digits and `_` only (`trade 2024.csv` is `trade_2024`).
fn dataset_name(pattern: &str) -> String {
    let file = Path::new(pattern).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let stem = file.split('.').next().unwrap_or_default();
    let mut name: String = stem
        .chars()
        .filter(|c| !matches!(c, '*' | '?'))
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    name = name.trim_matches('_').to_string();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name = format!("file_{name}").trim_end_matches('_').to_string();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_a_shell_does() {
        assert!(matches("*.parquet", "part-1.parquet"));
        assert!(matches("part-?.csv", "part-1.csv"));
        assert!(!matches("part-?.csv", "part-10.csv"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("*.csv", "x.csv.gz"));
    }

    #[test]
    fn a_file_name_becomes_a_dataset_name() {
        assert_eq!(dataset_name("data/Trade 2024.csv"), "trade_2024");
        assert_eq!(dataset_name("dir/*.parquet"), "file");
        assert_eq!(dataset_name("2024.csv"), "file_2024");
        assert_eq!(dataset_name("gacc_monthly_2023_2024.csv"), "gacc_monthly_2023_2024");
    }
}
