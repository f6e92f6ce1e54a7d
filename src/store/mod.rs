//! The trade store: Hive-partitioned Parquet files plus a manifest per dataset.
//!
//! Layout:
//! ```text
//! <store>/<dataset>/manifest.json
//! <store>/<dataset>/year=2024/part-v000003.parquet
//! <store>/_groups/manifest.json, <store>/_groups/<table>.parquet
//! <store>/.tradeql/lock            held by whoever writes
//! <store>/.tradeql/journal.json    present only while a commit is in flight
//! <store>/.tradeql/staging/<id>/   new files before they are committed
//! ```
//! A change is committed in four steps: the journal (which files come and go)
//! is written; the new files are renamed into place under names no other version
//! uses; the manifest is replaced (the commit point); the replaced files are
//! deleted and the journal removed. A process killed at any moment leaves either
//! the old or the new version, and [`Store::recover`], which every writer runs
//! under the lock first, finishes or undoes the interrupted commit using only the
//! journal, so it never deletes a file it did not create.

pub mod manifest;
pub mod pushdown;
pub mod verify;

pub use manifest::{DataFile, GroupTable, GroupsManifest, Manifest};
pub use verify::{Problem, verify};

use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const INTERNAL: &str = ".tradeql";
pub const GROUPS_DIR: &str = "_groups";

/// A store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Proof that this process holds the store's write lock; released on drop
/// (and by the OS if the process dies).
pub struct StoreLock {
    _file: File,
}

/// What a commit changes, recorded before anything is moved.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// The manifest being replaced, relative to the store root.
    manifest: String,
    /// The version the manifest has once the commit is done.
    to_version: u64,
    /// Files renamed into place, relative to the store root.
    added: Vec<String>,
    /// Files to delete once the manifest is replaced.
    removed: Vec<String>,
}

/// A change ready to commit: staged files and where they go, the manifest text.
pub struct Commit {
    /// Relative to the store root.
    pub manifest_path: String,
    pub manifest_json: String,
    pub version: u64,
    /// (staged file, destination relative to the store root).
    pub moves: Vec<(PathBuf, String)>,
    /// Files of the old version that the new one no longer lists.
    pub removed: Vec<String>,
}

/// What [`Store::recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub rolled_forward: bool,
    pub rolled_back: bool,
    pub files_removed: usize,
    pub staging_removed: usize,
}

impl Store {
    /// A store at `root`; nothing is read or created yet.
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Errors unless `root` is a directory that looks like a store.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store::at(root);
        if !store.root.is_dir() {
            return Err(Error::store(format!("no store at {}", store.root.display()))
                .hint("create one with `tradeql ingest FILE --store DIR --dataset NAME`"));
        }
        Ok(store)
    }

    fn internal(&self) -> PathBuf {
        self.root.join(INTERNAL)
    }

    pub fn dataset_dir(&self, dataset: &str) -> PathBuf {
        self.root.join(dataset)
    }

    fn manifest_path(&self, dataset: &str) -> PathBuf {
        self.dataset_dir(dataset).join("manifest.json")
    }

    /// Takes the write lock. With `wait`, blocks until the holder is done;
    /// otherwise fails at once, naming the holder.
    pub fn lock(&self, wait: bool, what: &str) -> Result<StoreLock> {
        let dir = self.internal();
        fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("cannot open lock file", &path, e))?;
        let locked = if wait {
            file.lock().map(|_| true).map_err(|e| Error::io("cannot lock", &path, e))?
        } else {
            match file.try_lock() {
                Ok(()) => true,
                Err(fs::TryLockError::WouldBlock) => false,
                Err(fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock", &path, e)),
            }
        };
        if !locked {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "the store {} is being written by another process{}",
                    self.root.display(),
                    if holder.is_empty() { String::new() } else { format!(" ({holder})") }
                ),
            )
            .hint("wait for it to finish, or pass --wait to queue behind it"));
        }
        file.set_len(0).map_err(|e| Error::io("cannot write", &path, e))?;
        let _ = write!(file, "pid {} {} since {}", std::process::id(), what, now());
        Ok(StoreLock { _file: file })
    }

    /// The manifest of `dataset`, or `None` if the dataset does not exist.
    pub fn manifest(&self, dataset: &str) -> Result<Option<Manifest>> {
        read_json(&self.manifest_path(dataset))
    }

    /// The groups manifest, or an empty one.
    pub fn groups_manifest(&self) -> Result<GroupsManifest> {
        Ok(read_json(&self.root.join(GROUPS_DIR).join("manifest.json"))?.unwrap_or_default())
    }

    /// Names of all datasets (directories with a manifest), sorted.
    pub fn datasets(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io("cannot list", &self.root, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if entry.path().join("manifest.json").is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// A fresh staging directory for one ingest.
    pub fn staging_dir(&self, _lock: &StoreLock) -> Result<PathBuf> {
        let dir = self.internal().join("staging").join(format!(
            "{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        ));
        fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        Ok(dir)
    }

    /// True if a commit was interrupted and not yet recovered.
    pub fn has_pending_journal(&self) -> bool {
        self.internal().join("journal.json").exists()
    }

    /// Commits a change: journal, moves, manifest (the commit point), deletes.
    pub fn commit(&self, _lock: &StoreLock, change: Commit) -> Result<()> {
        let journal = Journal {
            manifest: change.manifest_path.clone(),
            to_version: change.version,
            added: change.moves.iter().map(|(_, to)| to.clone()).collect(),
            removed: change.removed.clone(),
        };
        for (from, _) in &change.moves {
            sync_file(from)?;
        }
        write_atomic(&self.internal().join("journal.json"), serde_json::to_string_pretty(&journal)?.as_bytes())?;
        crate::failpoint("commit:journal-written");
        for (i, (from, to)) in change.moves.iter().enumerate() {
            let dest = self.root.join(to);
            let parent = dest.parent().expect("destination has a parent");
            fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
            fs::rename(from, &dest).map_err(|e| Error::io("cannot move into place", &dest, e))?;
            sync_dir(parent)?;
            if i == 0 {
                crate::failpoint("commit:first-file-moved");
            }
        }
        crate::failpoint("commit:files-moved");
        write_atomic(&self.root.join(&change.manifest_path), change.manifest_json.as_bytes())?;
        crate::failpoint("commit:manifest-replaced");
        self.finish_journal(&journal)?;
        Ok(())
    }

    /// Deletes what the new version no longer needs, then the journal.
    fn finish_journal(&self, journal: &Journal) -> Result<usize> {
        let mut removed = 0;
        for rel in &journal.removed {
            removed += usize::from(remove_if_exists(&self.root.join(rel))?);
            remove_empty_parent(&self.root.join(rel));
        }
        remove_if_exists(&self.internal().join("journal.json"))?;
        Ok(removed)
    }

    /// Finishes or undoes an interrupted commit, and clears abandoned staging
    /// directories. Needs the lock: nobody else may be committing.
    pub fn recover(&self, _lock: &StoreLock) -> Result<Recovery> {
        let mut report = Recovery::default();
        let journal_path = self.internal().join("journal.json");
        if let Some(journal) = read_json::<Journal>(&journal_path)? {
            let version = read_json::<serde_json::Value>(&self.root.join(&journal.manifest))?
                .and_then(|m| m.get("version").and_then(serde_json::Value::as_u64));
            if version == Some(journal.to_version) {
                report.rolled_forward = true;
                report.files_removed = self.finish_journal(&journal)?;
            } else {
                report.rolled_back = true;
                for rel in &journal.added {
                    report.files_removed += usize::from(remove_if_exists(&self.root.join(rel))?);
                    remove_empty_parent(&self.root.join(rel));
                }
                remove_if_exists(&journal_path)?;
            }
        }
        let staging = self.internal().join("staging");
        if let Ok(entries) = fs::read_dir(&staging) {
            for entry in entries.flatten() {
                fs::remove_dir_all(entry.path()).map_err(|e| Error::io("cannot remove", &entry.path(), e))?;
                report.staging_removed += 1;
            }
        }
        // A manifest written to its temporary name but never renamed.
        for dataset in self.datasets().unwrap_or_default() {
            let _ = remove_if_exists(&self.manifest_path(&dataset).with_extension("json.tmp"));
        }
        Ok(report)
    }
}

/// The current time, UTC, to the second, RFC 3339.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// SHA-256 of a file's content, hex.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut file = File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hex(&hasher.finalize()), bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::store(format!("damaged manifest: {e}")).in_file(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("file has a parent directory");
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let mut tmp_name = path.file_name().expect("file name").to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io("cannot write", &tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io("cannot write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("cannot sync", &tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| Error::io("cannot replace", path, e))?;
    sync_dir(dir)
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io("cannot sync", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io("cannot sync", dir, e))
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// Removes a `year=...` directory left empty; never fails.
fn remove_empty_parent(path: &Path) {
    if let Some(parent) = path.parent()
        && parent.file_name().is_some_and(|n| n.to_string_lossy().starts_with("year="))
    {
        let _ = fs::remove_dir(parent);
    }
}
