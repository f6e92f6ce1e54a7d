//! The trade store: Hive-partitioned Parquet files plus a manifest per dataset,
//! every version kept until `vacuum`.
//!
//! Layout:
//! ```text
//! <store>/<dataset>/year=2024/part-v000003.parquet    the published tree: the current
//!                                                     version's files and nothing else
//! <store>/.tradeql/datasets/<dataset>/manifest.json   the current version
//! <store>/.tradeql/datasets/<dataset>/versions/v000003.json   every kept version
//! <store>/.tradeql/datasets/<dataset>/files/year=2024/part-v000003.parquet
//!                                                     every kept version's files
//! <store>/_groups/manifest.json, <store>/_groups/<table>.parquet
//! <store>/.tradeql/lock            held by whoever writes
//! <store>/.tradeql/journal.json    present only while a commit is in flight
//! <store>/.tradeql/staging/<id>/   new files before they are committed
//! ```
//! tradeql reads the files of `.tradeql/datasets/<dataset>/files/`, which no
//! commit moves or deletes (only `vacuum` does, and not while a reader reads).
//! The published tree holds hard links to the current version's files, so a
//! plain reader (pyarrow, DuckDB, Spark, polars) pointed at `<store>/<dataset>`
//! reads it as Hive-partitioned Parquet.
//!
//! A change is committed in five steps: the journal (which files come) is
//! written; the new files are renamed into `files/` under names no other version
//! uses, and the version's manifest is written to `versions/`; the manifest is
//! replaced (the commit point); each year the change touched is published by
//! swapping its folder whole (`renameat2(RENAME_EXCHANGE)`) for one of links to
//! the new files; the journal is removed. A process killed at any moment leaves
//! either the old or the new version, and [`Store::recover`], which every writer
//! runs under the lock first, finishes or undoes the interrupted commit using
//! only the journal, so it never deletes a file it did not create.

pub mod manifest;
pub mod verify;

pub use manifest::{DataFile, GroupTable, GroupsManifest, Manifest};
pub use verify::{Problem, verify};

use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub(crate) const INTERNAL: &str = ".tradeql";
pub const GROUPS_DIR: &str = "_groups";
/// `.tradeql/datasets/`: each dataset's manifests and files.
const DATASETS: &str = "datasets";

/// A store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    /// Which version queries read when they name none (`--as-of-version`,
    /// `--as-of`); the current one when None. Writers ignore it.
    as_of: Option<Vintage>,
}

/// A kept version, by number or as it stood at the end of a day (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vintage {
    Version(u64),
    /// `YYYY-MM-DD`.
    Date(String),
}

impl Vintage {
    /// The kept version `--as-of-version N` or `--as-of YYYY-MM-DD` asks for
    /// (None: the current one); both at once is an error.
    pub fn chosen(version: Option<u64>, date: Option<&str>) -> Result<Option<Vintage>> {
        match (version, date) {
            (Some(_), Some(_)) => Err(Error::usage("give a version or a date to read as of, not both")),
            (Some(v), None) => Ok(Some(Vintage::Version(v))),
            (None, Some(d)) if chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err() => {
                Err(Error::usage(format!("--as-of {d:?}: give a date as YYYY-MM-DD")))
            }
            (None, Some(d)) => Ok(Some(Vintage::Date(d.to_string()))),
            (None, None) => Ok(None),
        }
    }
}

/// Proof that this process holds the store's write lock; released on drop
/// (and by the OS if the process dies).
pub struct StoreLock {
    _file: File,
}

/// `.tradeql/readers`: held shared by each reader while it reads.
const READERS: &str = "readers";
/// `.tradeql/retired.json`: replaced files left in place for readers.
const RETIRED: &str = "retired.json";

/// A reader's shared hold on `.tradeql/readers`, released on drop.
pub struct ReadGuard {
    _file: Option<File>,
}

/// A file a commit replaced while a reader was reading.
#[derive(Debug, Serialize, Deserialize)]
struct Retired {
    manifest: String,
    path: String,
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

impl Journal {
    /// Every path a journal names is a file of the store: a manifest of a
    /// dataset or of `_groups/`, or a data file inside one. Recovery deletes
    /// the files a journal lists, so a journal that names anything else
    /// (`../x`, an absolute path) is refused, not followed.
    fn check(&self) -> Result<()> {
        let bad = match journal_folder(&self.manifest) {
            None => Some(&self.manifest),
            // A commit changes one dataset (or the group tables): files of its own folder only.
            Some(Folder::Groups) => {
                self.added.iter().chain(&self.removed).find(|p| !p.strip_prefix("_groups/").is_some_and(is_groups_file))
            }
            Some(Folder::Dataset(dataset)) => {
                let own = Store::dataset_rel(dataset, "");
                self.added.iter().chain(&self.removed).find(|p| match p.strip_prefix(&own) {
                    Some(rest) => match rest.strip_prefix("files/") {
                        Some(data) => !is_data_path(data),
                        None => !rest.strip_prefix("versions/").is_some_and(is_version_file),
                    },
                    None => true,
                })
            }
        };
        match bad {
            None => Ok(()),
            Some(p) => Err(Error::store(format!(
                "damaged journal: it names {:?}, which is not a file of the store; nothing was deleted",
                crate::error::shown(p)
            ))
            .hint("look at .tradeql/journal.json, and remove it by hand once the store is as it should be")),
        }
    }
}

/// Whose files a journal's manifest (relative to the store root) governs.
enum Folder<'a> {
    Groups,
    Dataset(&'a str),
}

fn journal_folder(manifest: &str) -> Option<Folder<'_>> {
    if manifest == "_groups/manifest.json" {
        return Some(Folder::Groups);
    }
    let dataset = manifest.strip_prefix(".tradeql/datasets/")?.strip_suffix("/manifest.json")?;
    (is_plain_name(dataset) && !dataset.starts_with(['.', '_'])).then_some(Folder::Dataset(dataset))
}

/// What a journal's manifest is of, in words: `gacc`, or `the group tables`.
fn shown_manifest(manifest: &str) -> String {
    match journal_folder(manifest) {
        Some(Folder::Dataset(d)) => d.to_string(),
        Some(Folder::Groups) => "the group tables".into(),
        None => manifest.to_string(),
    }
}

/// A kept version's manifest: `vNNNNNN.json`.
fn is_version_file(name: &str) -> bool {
    name.strip_prefix('v')
        .and_then(|n| n.strip_suffix(".json"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One plain file or folder name: no separator, not `.`/`..`, not empty.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// A file of `_groups/`: one plain `<name>.parquet`.
pub(crate) fn is_groups_file(name: &str) -> bool {
    is_plain_name(name) && name.ends_with(".parquet")
}

/// A data file's path inside its dataset: `year=YYYY/<name>.parquet`.
pub(crate) fn is_data_path(path: &str) -> bool {
    match path.split_once('/') {
        Some((year, file)) => {
            year.strip_prefix("year=")
                .is_some_and(|y| !y.is_empty() && y.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
                && is_plain_name(file)
                && file.ends_with(".parquet")
        }
        None => false,
    }
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
    /// Year folders of the published trees brought up to their current version.
    pub years_published: usize,
    /// Datasets moved from the earlier layout (manifest among the data).
    pub datasets_moved: usize,
}

/// What [`Store::vacuum`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vacuum {
    pub versions_removed: Vec<u64>,
    pub files_removed: usize,
    /// Files left for the readers reading them (deleted by the next writer).
    pub files_retired: usize,
    pub bytes_freed: u64,
}

impl Store {
    /// A store at `root`; nothing is read or created yet.
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into(), as_of: None }
    }

    /// The same store, its queries reading `vintage` instead of the current version.
    pub fn reading(mut self, vintage: Option<Vintage>) -> Store {
        self.as_of = vintage;
        self
    }

    pub fn as_of(&self) -> Option<&Vintage> {
        self.as_of.as_ref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Errors unless `root` is a directory that looks like a store.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store::at(root);
        if !store.root.is_dir() {
            return Err(Error::new(crate::ErrorKind::NotFound, format!("no store at {}", store.root.display()))
                .hint("create one with `tradeql ingest FILE --store DIR --dataset NAME`"));
        }
        Ok(store)
    }

    /// Whether `path` (which may not exist yet) lies inside the store, links
    /// followed: tradeql's outputs (`--out`, `--chart`, batch extracts) may
    /// not, since writing there replaces data or leaves unlisted files.
    pub fn holds(&self, path: &Path) -> bool {
        let Ok(root) = fs::canonicalize(&self.root) else { return false };
        // The deepest part of `path` that exists, resolved, then the rest.
        let mut existing = path.to_path_buf();
        let mut rest = Vec::new();
        while fs::symlink_metadata(&existing).is_err() {
            match (existing.file_name(), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name.to_os_string());
                    existing = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() };
                }
                _ => return false,
            }
        }
        let Ok(mut full) = fs::canonicalize(&existing) else { return false };
        full.extend(rest.iter().rev());
        full.starts_with(&root)
    }

    /// Refuses an output path inside the store (see [`Store::holds`]).
    pub fn refuse_output_inside(&self, path: &Path, what: &str) -> Result<()> {
        if self.holds(path) {
            return Err(Error::usage(format!(
                "{what} {} is inside the store {}: write it elsewhere",
                path.display(),
                self.root.display()
            )));
        }
        Ok(())
    }

    fn internal(&self) -> PathBuf {
        self.root.join(INTERNAL)
    }

    /// The published tree of `dataset`: what a plain Parquet reader reads.
    pub fn dataset_dir(&self, dataset: &str) -> PathBuf {
        self.root.join(dataset)
    }

    /// `.tradeql/datasets/<dataset>/<rest>`, relative to the store root.
    pub fn dataset_rel(dataset: &str, rest: &str) -> String {
        format!("{INTERNAL}/{DATASETS}/{dataset}/{rest}")
    }

    /// The folder of a dataset's manifests and files.
    fn meta_dir(&self, dataset: &str) -> PathBuf {
        self.internal().join(DATASETS).join(dataset)
    }

    /// Where tradeql reads a dataset's files (every kept version's).
    pub fn files_dir(&self, dataset: &str) -> PathBuf {
        files_dir(&self.root, dataset)
    }

    fn manifest_path(&self, dataset: &str) -> PathBuf {
        self.meta_dir(dataset).join("manifest.json")
    }

    fn version_path(&self, dataset: &str, version: u64) -> PathBuf {
        self.meta_dir(dataset).join("versions").join(version_file(version))
    }

    /// Takes the write lock. With `wait`, blocks until the holder is done;
    /// otherwise fails at once, naming the holder.
    ///
    /// The lock is an `flock` on the store's own directory, which cannot be
    /// deleted away while the store has files (a lock *file* can: a second
    /// writer would then lock a new file beside the first). `.tradeql/lock`
    /// only tells who holds it. Commits also check that the manifest they
    /// replace is still the one they read ([`Store::commit`]).
    pub fn lock(&self, wait: bool, what: &str) -> Result<StoreLock> {
        let dir = self.internal();
        fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
        let path = dir.join("lock");
        let Some(root) = lock_folder(&self.root, wait)? else {
            let holder = fs::read_to_string(&path).unwrap_or_default();
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
        };
        // Who holds it, for the message above; losing this file loses nothing.
        let _ = fs::write(&path, format!("pid {} {} since {}", std::process::id(), what, now()));
        // Readers lock this one shared; it must exist for them to.
        let _ = fs::OpenOptions::new().create(true).append(true).open(dir.join(READERS));
        Ok(StoreLock { _file: root })
    }

    /// The manifest of `dataset`, or `None` if the dataset does not exist.
    /// Errors if the manifest lists a file outside the dataset's folder.
    pub fn manifest(&self, dataset: &str) -> Result<Option<Manifest>> {
        if !is_plain_name(dataset) || dataset.starts_with(['.', '_']) {
            return Ok(None);
        }
        let path = self.manifest_path(dataset);
        let manifest: Option<Manifest> = read_json(&path)?;
        if manifest.is_none() && self.root.join(dataset).join("manifest.json").is_file() {
            return Err(Error::store(format!(
                "the dataset {dataset} is in the layout of an earlier tradeql (its manifest.json among the data)"
            ))
            .hint("any write to the store, or `tradeql info --verify`, moves it to the current layout"));
        }
        checked_files(&path, manifest)
    }

    /// Version `version` of `dataset` (the current one, or one kept in
    /// `versions/`). Errors naming the kept versions when it is not kept.
    pub fn manifest_version(&self, dataset: &str, version: u64) -> Result<Manifest> {
        // Every commit writes its version's copy, so one read answers (a store
        // moved from the earlier layout has its current version's copy too).
        let path = self.version_path(dataset, version);
        if let Some(m) = checked_files(&path, read_json(&path)?)? {
            return Ok(m);
        }
        let Some(current) = self.manifest(dataset)? else {
            return Err(Error::new(ErrorKind::NotFound, format!("no dataset {dataset} in the store")));
        };
        if version == current.version {
            return Ok(current);
        }
        let kept: Vec<String> = self.versions(dataset)?.iter().map(|v| v.to_string()).collect();
        Err(Error::new(
            ErrorKind::NotFound,
            format!("version {version} of {dataset} is not kept (kept: {})", kept.join(", ")),
        ))
    }

    /// The version of `dataset` that `vintage` names: a kept version, or the
    /// last one committed by the end of a day.
    pub fn manifest_as_of(&self, dataset: &str, vintage: &Vintage) -> Result<Manifest> {
        let date = match vintage {
            Vintage::Version(v) => return self.manifest_version(dataset, *v),
            Vintage::Date(d) => d,
        };
        let mut found = None;
        for v in self.versions(dataset)? {
            let m = self.manifest_version(dataset, v)?;
            if m.updated_at.get(..10).is_some_and(|day| day <= date.as_str()) {
                found = Some(m);
            }
        }
        found.ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("no kept version of {dataset} was committed by the end of {date}"))
                .hint("`tradeql info` lists the kept versions with their dates")
        })
    }

    /// The kept versions of `dataset`, oldest first (the current one last).
    pub fn versions(&self, dataset: &str) -> Result<Vec<u64>> {
        let dir = self.meta_dir(dataset).join("versions");
        let mut out: Vec<u64> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    if !is_version_file(&name) {
                        return None;
                    }
                    name[1..name.len() - 5].parse().ok()
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("cannot list", &dir, e)),
        };
        if let Some(m) = self.manifest(dataset)? {
            out.retain(|v| *v <= m.version);
            out.push(m.version);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// A manifest read from `path`, refused when it lists a file outside its dataset.
fn checked_files(path: &Path, manifest: Option<Manifest>) -> Result<Option<Manifest>> {
    {
        if let Some(m) = &manifest {
            for f in m.stored_files() {
                if !is_data_path(&f.path) {
                    return Err(Error::store(format!(
                        "damaged manifest: it lists {:?}, which is not a data file of the dataset \
                         (year=YYYY/part-vNNNNNN.parquet)",
                        crate::error::shown(&f.path)
                    ))
                    .in_file(path));
                }
            }
        }
        Ok(manifest)
    }
}

impl Store {
    /// The groups manifest, or an empty one. Errors if it lists a file
    /// outside `_groups/`.
    pub fn groups_manifest(&self) -> Result<GroupsManifest> {
        let path = self.root.join(GROUPS_DIR).join("manifest.json");
        let manifest: GroupsManifest = read_json(&path)?.unwrap_or_default();
        let paths = manifest
            .tables
            .iter()
            .map(|t| &t.path)
            .chain(manifest.rates.iter().map(|r| &r.path))
            .chain(manifest.names.iter().map(|n| &n.path));
        for p in paths {
            if !is_groups_file(p) {
                return Err(Error::store(format!(
                    "damaged groups manifest: it lists {:?}, which is not a file of _groups/",
                    crate::error::shown(p)
                ))
                .in_file(&path));
            }
        }
        Ok(manifest)
    }

    /// What a reader's view of the store depends on: each manifest file's
    /// identity (a commit replaces it by a new file). A reader that failed
    /// while this changed read files a writer was replacing, and tries again.
    pub fn snapshot(&self) -> Vec<(String, u64, i64)> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        let mut note = |name: String, path: PathBuf| {
            if let Ok(m) = fs::metadata(&path) {
                out.push((name, m.ino(), m.mtime_nsec()));
            }
        };
        note(GROUPS_DIR.into(), self.root.join(GROUPS_DIR).join("manifest.json"));
        for dataset in self.datasets().unwrap_or_default() {
            let path = self.manifest_path(&dataset);
            note(dataset, path);
        }
        out
    }

    /// Runs a read (`f`) so that it sees one committed version: a read that
    /// fails while a writer commits (the files it listed were replaced under
    /// it) is run again on the new version, up to 50 times.
    ///
    /// Each attempt holds the readers file shared ([`Store::begin_read`]), so
    /// writers leave the files it may read in place; the retry covers stores
    /// where that file cannot be opened. The last reader out deletes what
    /// commits retired meanwhile, when it can take the write lock at once.
    pub fn read_consistent<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut tries = 0;
        let out = loop {
            let before = self.snapshot();
            let guard = self.begin_read();
            let got = f();
            drop(guard);
            match got {
                Ok(v) => break Ok(v),
                Err(_) if tries < 50 && self.snapshot() != before => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5 * tries));
                }
                Err(e) => break Err(e),
            }
        };
        if self.internal().join(RETIRED).exists()
            && let Ok(lock) = self.lock(false, "clean-up after a read")
        {
            let _ = self.sweep_retired(&lock);
        }
        out
    }

    /// Names of all datasets (those with a manifest), sorted.
    pub fn datasets(&self) -> Result<Vec<String>> {
        if !self.root.is_dir() {
            return Err(Error::new(ErrorKind::NotFound, format!("no store at {}", self.root.display())));
        }
        let mut names = Vec::new();
        let dir = self.internal().join(DATASETS);
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if is_plain_name(&name) && !name.starts_with(['.', '_']) && entry.path().join("manifest.json").is_file()
                {
                    names.push(name);
                }
            }
        }
        // A dataset of the earlier layout: listed, so that reading it says what to do.
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if !name.starts_with(['.', '_'])
                    && entry.path().join("manifest.json").is_file()
                    && !names.contains(&name)
                {
                    names.push(name);
                }
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
    ///
    /// Refuses (before anything moves) when the manifest on disk is not the
    /// version this change was built on: another writer committed meanwhile.
    /// An error after the commit point says that the new version committed.
    pub fn commit(&self, _lock: &StoreLock, change: Commit) -> Result<()> {
        let manifest_path = self.root.join(&change.manifest_path);
        let on_disk = self.version_on_disk(&change.manifest_path)?.unwrap_or(0);
        if on_disk + 1 != change.version {
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "{} changed while this change was prepared (version {on_disk} on disk, {} expected): \
                     nothing was written",
                    shown_manifest(&change.manifest_path),
                    change.version - 1
                ),
            )
            .hint("run the command again"));
        }
        let dataset = match journal_folder(&change.manifest_path) {
            Some(Folder::Dataset(d)) => Some(d.to_string()),
            _ => None,
        };
        let mut added: Vec<String> = change.moves.iter().map(|(_, to)| to.clone()).collect();
        if let Some(d) = &dataset {
            added.push(Store::dataset_rel(d, &format!("versions/{}", version_file(change.version))));
        }
        let journal = Journal {
            manifest: change.manifest_path.clone(),
            to_version: change.version,
            added,
            removed: change.removed.clone(),
        };
        journal.check()?;
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
        if let Some(d) = &dataset {
            write_atomic(&self.version_path(d, change.version), change.manifest_json.as_bytes())?;
        }
        let tmp = write_temporary(&manifest_path, change.manifest_json.as_bytes())?;
        fs::rename(&tmp, &manifest_path).map_err(|e| Error::io("cannot replace", &manifest_path, e))?;
        // The commit point is behind us: what fails now fails after the commit.
        let committed = |e: Error| {
            Error::new(
                e.kind,
                format!(
                    "version {} of {} is committed, but what follows the commit failed: {e}",
                    change.version,
                    shown_manifest(&change.manifest_path)
                ),
            )
            .hint("the data is stored; the next writer (or `tradeql info --verify`) finishes the clean-up")
        };
        sync_dir(manifest_path.parent().expect("manifest has a folder")).map_err(committed)?;
        crate::failpoint("commit:manifest-replaced");
        if let Some(d) = &dataset
            && let Some(m) = self.manifest(d).map_err(committed)?
        {
            self.publish(d, &m).map_err(committed)?;
        }
        self.finish_journal(&journal).map_err(committed)?;
        Ok(())
    }

    /// Brings the published tree of `dataset` to its current version, year
    /// by year, so that a plain reader of the folder sees each year's old
    /// files or its new ones, never both, and never loses a file it listed.
    ///
    /// A year's file is published under a name that does not change with the
    /// version (`part-0.parquet`, see [`published_files`]): a revision
    /// renames a link to the new file over it, one atomic step, so a reader
    /// that listed the folder before opens the old file or the new one. A
    /// year that is new, holds several files, or holds files under other
    /// names is built anew as a folder of links beside it and swapped in whole
    /// (`renameat2(RENAME_EXCHANGE)`). Entries the version does not know (a
    /// user's files) stay. Returns how many years it changed.
    fn publish(&self, dataset: &str, m: &Manifest) -> Result<usize> {
        let tree = self.dataset_dir(dataset);
        if fs::symlink_metadata(&tree).is_ok_and(|t| t.file_type().is_symlink()) {
            return Err(Error::store(format!(
                "{} is a link: tradeql publishes a dataset's files into a folder of the store only",
                tree.display()
            )));
        }
        fs::create_dir_all(&tree).map_err(|e| Error::io("cannot create", &tree, e))?;
        let pool = self.files_dir(dataset);
        let mut years: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
        for (published, stored) in published_files(m) {
            let (year, name) = published.split_once('/').expect("a year folder");
            years.entry(year.to_string()).or_default().push((name.to_string(), stored));
        }
        let staging = self.internal().join("staging");
        fs::create_dir_all(&staging).map_err(|e| Error::io("cannot create", &staging, e))?;
        let mut changed = 0;
        for (year, files) in &years {
            let live = tree.join(year);
            let entries = list_names(&live);
            // Names tradeql published there: the fixed ones, or an earlier
            // layout's (a stored file's own name).
            let ours = |n: &String| n.starts_with("part-") && n.ends_with(".parquet");
            let current = files.iter().all(|(name, stored)| same_file(&live.join(name), &pool.join(stored)))
                && entries.iter().filter(|n| ours(n)).count() == files.len();
            if current {
                continue;
            }
            let in_place = files.len() == 1
                && live.is_dir()
                && entries.iter().filter(|n| ours(n)).all(|n| *n == files[0].0)
                && !fs::symlink_metadata(&live).is_ok_and(|t| t.file_type().is_symlink());
            if in_place {
                // One file, replaced by a rename: no moment without it.
                let (name, stored) = &files[0];
                let link = staging.join(format!("publish-{}-{year}.parquet", std::process::id()));
                if fs::symlink_metadata(&link).is_ok() {
                    let _ = fs::remove_file(&link);
                }
                fs::hard_link(pool.join(stored), &link).map_err(|e| Error::io("cannot link", &link, e))?;
                fs::rename(&link, live.join(name)).map_err(|e| Error::io("cannot publish", &live.join(name), e))?;
                sync_dir(&live)?;
            } else {
                let next = staging.join(format!("publish-{}-{year}", std::process::id()));
                let _ = fs::remove_dir_all(&next);
                fs::create_dir_all(&next).map_err(|e| Error::io("cannot create", &next, e))?;
                for (name, stored) in files {
                    let to = next.join(name);
                    fs::hard_link(pool.join(stored), &to).map_err(|e| Error::io("cannot link", &to, e))?;
                }
                for stray in entries.iter().filter(|n| !ours(n)) {
                    let _ = fs::rename(live.join(stray), next.join(stray));
                }
                sync_dir(&next)?;
                if fs::symlink_metadata(&live).is_ok() {
                    exchange_or_replace(&next, &live)?;
                } else {
                    fs::rename(&next, &live).map_err(|e| Error::io("cannot publish", &live, e))?;
                }
                sync_dir(&tree)?;
                // The old folder held links only: the files stay in `files/`.
                let _ = fs::remove_dir_all(&next);
            }
            if changed == 0 {
                crate::failpoint("publish:first-year-swapped");
            }
            changed += 1;
        }
        // A year folder the version has no file of.
        for name in list_names(&tree) {
            let path = tree.join(&name);
            if name.starts_with("year=") && !years.contains_key(&name) && path.is_dir() {
                let gone = staging.join(format!("unpublish-{}-{name}", std::process::id()));
                fs::rename(&path, &gone).map_err(|e| Error::io("cannot remove", &path, e))?;
                let _ = fs::remove_dir_all(&gone);
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Moves a dataset of the earlier layout (`<dataset>/manifest.json` among
    /// its files) to this one: its files linked into `files/`, its manifest
    /// kept as the current version. Earlier versions were not kept then.
    fn move_to_current_layout(&self, dataset: &str) -> Result<bool> {
        let old = self.root.join(dataset).join("manifest.json");
        if !old.is_file() || self.manifest_path(dataset).exists() {
            return Ok(false);
        }
        let text = fs::read_to_string(&old).map_err(|e| Error::io("cannot read", &old, e))?;
        let m = checked_files(&old, read_json::<Manifest>(&old)?)?.expect("read above");
        for f in &m.files {
            let (from, to) = (self.root.join(dataset).join(&f.path), self.files_dir(dataset).join(&f.path));
            if !same_file(&from, &to) {
                let dir = to.parent().expect("a data path has a folder");
                fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
                let _ = fs::remove_file(&to);
                fs::hard_link(&from, &to).map_err(|e| Error::io("cannot link", &to, e))?;
            }
        }
        write_atomic(&self.version_path(dataset, m.version), text.as_bytes())?;
        write_atomic(&self.manifest_path(dataset), text.as_bytes())?;
        remove_if_exists(&old)?;
        Ok(true)
    }

    /// Removes the versions of `dataset` older than its last `keep` (the
    /// current version is always kept), and the files no kept version lists.
    /// A file a reader may be reading is left until the next writer.
    pub fn vacuum(&self, _lock: &StoreLock, dataset: &str, keep: usize) -> Result<Vacuum> {
        let Some(current) = self.manifest(dataset)? else {
            return Err(Error::new(ErrorKind::NotFound, format!("no dataset {dataset} in the store")));
        };
        let versions = self.versions(dataset)?;
        let keep = keep.max(1);
        let (gone, kept) = versions.split_at(versions.len().saturating_sub(keep));
        let mut needed = std::collections::HashSet::new();
        for v in kept {
            needed.extend(self.manifest_version(dataset, *v)?.stored_files().map(|f| f.path.clone()));
        }
        let pool = self.files_dir(dataset);
        let mut removed = Vec::new();
        let mut sizes = Vec::new();
        for path in files_under(&pool) {
            let rel = path.strip_prefix(&pool).expect("under the pool").to_string_lossy().to_string();
            if !needed.contains(&rel) && is_data_path(&rel) {
                sizes.push((path.clone(), fs::metadata(&path).map(|m| m.len()).unwrap_or(0)));
                removed.push(Store::dataset_rel(dataset, &format!("files/{rel}")));
            }
        }
        let files = removed.len();
        removed.extend(gone.iter().map(|v| Store::dataset_rel(dataset, &format!("versions/{}", version_file(*v)))));
        let journal = Journal {
            manifest: Store::dataset_rel(dataset, "manifest.json"),
            to_version: current.version,
            added: Vec::new(),
            removed,
        };
        journal.check()?;
        write_atomic(&self.internal().join("journal.json"), serde_json::to_string_pretty(&journal)?.as_bytes())?;
        self.finish_journal(&journal)?;
        // What a reader still holds stays (retired) until the next writer.
        let files_retired = sizes.iter().filter(|(p, _)| p.exists()).count();
        let bytes_freed = sizes.iter().filter(|(p, _)| !p.exists()).map(|(_, n)| n).sum();
        Ok(Vacuum { versions_removed: gone.to_vec(), files_removed: files - files_retired, files_retired, bytes_freed })
    }

    /// Deletes what the new version no longer needs, then the journal.
    ///
    /// While a tradeql reader is reading (it holds `.tradeql/readers` shared),
    /// the replaced files stay where they are, listed in `.tradeql/retired.json`:
    /// the reader may be reading them. The next writer, `info --verify`, or
    /// the last reader out deletes them once no reader holds the file.
    fn finish_journal(&self, journal: &Journal) -> Result<usize> {
        let removed = match self.no_reader() {
            Some(_exclusive) => self.delete_unlisted(journal, &journal.removed)? + self.sweep_retired_held()?,
            None => {
                self.retire(journal)?;
                0
            }
        };
        remove_if_exists(&self.internal().join("journal.json"))?;
        Ok(removed)
    }

    /// Taken by a reader for the whole of one read: a shared `flock` on
    /// `.tradeql/readers`, which writers test before deleting replaced files.
    pub fn begin_read(&self) -> ReadGuard {
        let file = File::open(self.internal().join(READERS)).ok().filter(|f| f.lock_shared().is_ok());
        ReadGuard { _file: file }
    }

    /// An exclusive hold on `.tradeql/readers` when no reader holds it (None
    /// while one does). Without the file (a store no reader can lock) there
    /// are no readers to wait for.
    fn no_reader(&self) -> Option<Option<File>> {
        let path = self.internal().join(READERS);
        let Ok(file) = fs::OpenOptions::new().create(true).append(true).open(&path) else { return Some(None) };
        match file.try_lock() {
            Ok(()) => Some(Some(file)),
            Err(fs::TryLockError::WouldBlock) => None,
            Err(fs::TryLockError::Error(_)) => Some(None),
        }
    }

    /// Files replaced while a reader was reading, still in place.
    fn retired(&self) -> Result<Vec<Retired>> {
        Ok(read_json(&self.internal().join(RETIRED))?.unwrap_or_default())
    }

    /// Paths of replaced files waiting for readers to finish (verify does
    /// not count them as strays).
    pub fn retired_paths(&self) -> std::collections::HashSet<PathBuf> {
        self.retired().unwrap_or_default().iter().map(|r| self.root.join(&r.path)).collect()
    }

    fn retire(&self, journal: &Journal) -> Result<()> {
        let mut list = self.retired()?;
        list.extend(journal.removed.iter().map(|p| Retired { manifest: journal.manifest.clone(), path: p.clone() }));
        write_atomic(&self.internal().join(RETIRED), serde_json::to_string_pretty(&list)?.as_bytes())
    }

    /// Deletes the retired files; the caller holds the readers file exclusively.
    fn sweep_retired_held(&self) -> Result<usize> {
        let list = self.retired()?;
        if list.is_empty() {
            return Ok(0);
        }
        // One journal per manifest, checked as a commit's is: one read of
        // each manifest for what it lists.
        let mut by_manifest: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in list {
            by_manifest.entry(r.manifest).or_default().push(r.path);
        }
        let mut removed = 0;
        for (manifest, paths) in by_manifest {
            let retired = Journal { manifest, to_version: 0, added: Vec::new(), removed: paths };
            if retired.check().is_ok() {
                removed += self.delete_unlisted(&retired, &retired.removed)?;
            }
        }
        remove_if_exists(&self.internal().join(RETIRED))?;
        Ok(removed)
    }

    /// Deletes the retired files if no reader is reading; needs the write lock.
    fn sweep_retired(&self, _lock: &StoreLock) -> Result<usize> {
        match self.no_reader() {
            Some(_exclusive) => self.sweep_retired_held(),
            None => Ok(0),
        }
    }

    /// The version of the manifest at `manifest` (relative), None without one.
    fn version_on_disk(&self, manifest: &str) -> Result<Option<u64>> {
        Ok(read_json::<serde_json::Value>(&self.root.join(manifest))?
            .and_then(|m| m.get("version").and_then(serde_json::Value::as_u64)))
    }

    /// Deletes the files `rels` of a journal, but never one that the manifest
    /// on disk lists (that is live data, whatever the journal says) nor one
    /// reached through a linked folder (that may be anywhere).
    fn delete_unlisted(&self, journal: &Journal, rels: &[String]) -> Result<usize> {
        let listed = self.listed_by(&journal.manifest)?;
        let mut removed = 0;
        for rel in rels {
            if listed.contains(rel) || self.through_link(rel) {
                continue;
            }
            removed += usize::from(remove_if_exists(&self.root.join(rel))?);
            remove_empty_parent(&self.root.join(rel));
        }
        Ok(removed)
    }

    /// The files (relative to the store root) the manifest at `manifest`
    /// (relative) lists: a dataset's data files and its current version's
    /// copy, or the group tables and rates.
    fn listed_by(&self, manifest: &str) -> Result<std::collections::HashSet<String>> {
        let folder = match journal_folder(manifest) {
            Some(Folder::Dataset(d)) => Store::dataset_rel(d, "files"),
            _ => GROUPS_DIR.to_string(),
        };
        let mut out = std::collections::HashSet::new();
        if let (Some(Folder::Dataset(d)), Some(v)) = (journal_folder(manifest), self.version_on_disk(manifest)?) {
            out.insert(Store::dataset_rel(d, &format!("versions/{}", version_file(v))));
        }
        let Some(m) = read_json::<serde_json::Value>(&self.root.join(manifest))? else { return Ok(out) };
        let paths = |key: &str| -> Vec<String> {
            m.get(key)
                .and_then(serde_json::Value::as_array)
                .map(|a| a.iter().filter_map(|f| f.get("path")?.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let mut all = paths("files");
        if let Some(rollups) = m.get("rollups").and_then(serde_json::Value::as_array) {
            for r in rollups {
                all.extend(
                    r.get("files")
                        .and_then(serde_json::Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.get("path")?.as_str().map(str::to_string)),
                );
            }
        }
        all.extend(paths("tables"));
        all.extend(paths("names"));
        all.extend(m.get("rates").and_then(|r| r.get("path")?.as_str().map(str::to_string)));
        out.extend(all.into_iter().map(|p| format!("{folder}/{p}")));
        Ok(out)
    }

    /// Whether a folder on the way from the store root to `rel` is a link.
    fn through_link(&self, rel: &str) -> bool {
        let mut at = self.root.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        parts[..parts.len().saturating_sub(1)].iter().any(|part| {
            at.push(part);
            fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
        })
    }

    /// Finishes or undoes an interrupted commit, and clears abandoned staging
    /// directories. Needs the lock: nobody else may be committing.
    pub fn recover(&self, _lock: &StoreLock) -> Result<Recovery> {
        let mut report = Recovery::default();
        let journal_path = self.internal().join("journal.json");
        if let Some(journal) = read_json::<Journal>(&journal_path)? {
            journal.check().map_err(|e| e.in_file(&journal_path))?;
            if self.version_on_disk(&journal.manifest)? == Some(journal.to_version) {
                report.rolled_forward = true;
                report.files_removed = self.finish_journal(&journal)?;
            } else {
                report.rolled_back = true;
                report.files_removed = self.delete_unlisted(&journal, &journal.added)?;
                remove_if_exists(&journal_path)?;
            }
        }
        report.files_removed += self.sweep_retired(_lock)?;
        // A journal written to its temporary name but never renamed.
        let tmp = self.internal().join("journal.json.tmp");
        if tmp.exists() {
            let _ = remove_if_exists(&tmp);
        }
        for dataset in self.datasets().unwrap_or_default() {
            report.datasets_moved += usize::from(self.move_to_current_layout(&dataset)?);
            // A damaged manifest is verify's to report, and a reader's to refuse.
            if let Ok(Some(m)) = self.manifest(&dataset) {
                report.years_published += self.publish(&dataset, &m)?;
            }
        }
        let staging = self.internal().join("staging");
        if let Ok(entries) = fs::read_dir(&staging) {
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(|e| Error::io("cannot remove", &path, e))?;
                report.staging_removed += 1;
            }
        }
        // A manifest written to its temporary name but never renamed.
        for dataset in self.datasets().unwrap_or_default() {
            let _ = remove_if_exists(&self.manifest_path(&dataset).with_extension("json.tmp"));
            let versions = self.meta_dir(&dataset).join("versions");
            for name in list_names(&versions).iter().filter(|n| n.ends_with(".json.tmp")) {
                let _ = remove_if_exists(&versions.join(name));
            }
        }
        Ok(report)
    }
}

/// Where each file of `m` is published, relative to the dataset's folder,
/// with its stored path: `year=2024/part-0.parquet` for the year's first
/// file (in the manifest's order), `part-1.parquet` for a second, and so on.
/// The names do not change with the version, so a revision replaces a file
/// in place.
pub fn published_files(m: &Manifest) -> Vec<(String, String)> {
    let mut seen: std::collections::BTreeMap<i32, usize> = Default::default();
    let mut listed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for f in &m.files {
        if !listed.insert(&f.path) {
            continue;
        }
        let year = f.path.split_once('/').map_or("", |(y, _)| y);
        let n = seen.entry(f.year).or_default();
        out.push((format!("{year}/part-{n}.parquet"), f.path.clone()));
        *n += 1;
    }
    out
}

/// `v000003.json`.
fn version_file(version: u64) -> String {
    format!("v{version:06}.json")
}

/// Where tradeql reads the files of `dataset` in the store at `root`.
pub fn files_dir(root: &Path, dataset: &str) -> PathBuf {
    root.join(INTERNAL).join(DATASETS).join(dataset).join("files")
}

/// The names in folder `dir` (none when it cannot be listed).
fn list_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default()
}

/// Every plain file under `dir`, recursively, links not followed.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(entry.path()),
                Ok(t) if t.is_file() => out.push(entry.path()),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Swaps two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`); false
/// where the file system cannot (or `TRADEQL_NO_EXCHANGE` is set, for the
/// tests of the two-rename fallback).
pub(crate) fn exchange(a: &Path, b: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if std::env::var_os("TRADEQL_NO_EXCHANGE").is_some() {
        return false;
    }
    let (Ok(a), Ok(b)) =
        (std::ffi::CString::new(a.as_os_str().as_bytes()), std::ffi::CString::new(b.as_os_str().as_bytes()))
    else {
        return false;
    };
    // SAFETY: both are valid C strings; AT_FDCWD makes them relative to the working folder.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    rc == 0
}

/// Puts folder `new` at `live` and the old `live` at `new`: at once where the
/// file system swaps, else by two renames (for a moment a reader finds no
/// folder at `live`, never a mix of the two).
fn exchange_or_replace(new: &Path, live: &Path) -> Result<()> {
    if exchange(new, live) {
        return Ok(());
    }
    let aside = new.with_extension("old");
    fs::rename(live, &aside).map_err(|e| Error::io("cannot move aside", live, e))?;
    fs::rename(new, live).map_err(|e| Error::io("cannot publish", live, e))?;
    fs::rename(&aside, new).map_err(|e| Error::io("cannot move", &aside, e))
}

/// An exclusive `flock` on the folder `dir` itself (a lock that cannot be
/// deleted away): with `wait`, once the holder is done; else at once, or None
/// while another process holds it.
pub(crate) fn lock_folder(dir: &Path, wait: bool) -> Result<Option<File>> {
    let folder = File::open(dir).map_err(|e| Error::io("cannot open", dir, e))?;
    if wait {
        folder.lock().map_err(|e| Error::io("cannot lock", dir, e))?;
        return Ok(Some(folder));
    }
    match folder.try_lock() {
        Ok(()) => Ok(Some(folder)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("cannot lock", dir, e)),
    }
}

/// Whether `a` and `b` are the same existing file (links followed).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    id(a).is_some() && id(a) == id(b)
}

/// One data file as stored, its folder's `year=` not added as a column.
pub(crate) fn scan_file(path: &Path) -> Result<polars::prelude::LazyFrame> {
    use polars::prelude::*;
    let args = ScanArgsParquet { hive_options: HiveOptions::new_disabled(), ..Default::default() };
    Ok(LazyFrame::scan_parquet(PlRefPath::new(path.to_string_lossy().as_ref()), args)?)
}

/// The `ARROW:schema` entry of a Parquet file written from `schema`, with
/// plain (large) strings where polars holds string views: readers before
/// pyarrow 15 cannot read a file whose schema names a view. The column data
/// is the same either way (UTF-8 byte arrays); every Parquet file tradeql
/// writes carries this entry.
pub fn portable_arrow_schema(schema: &polars::prelude::Schema) -> (String, String) {
    use polars::prelude::SchemaExt;
    let arrow = schema.to_arrow(polars::prelude::CompatLevel::oldest());
    let kv = polars_parquet::arrow::write::schema_to_metadata_key(&arrow);
    (kv.key, kv.value.unwrap_or_default())
}

/// [`portable_arrow_schema`] as the key-value metadata of a Parquet writer.
pub fn portable_metadata(schema: &polars::prelude::Schema) -> polars::prelude::KeyValueMetadata {
    polars::prelude::KeyValueMetadata::from_static(vec![portable_arrow_schema(schema)])
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
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            let what = if path.file_name().is_some_and(|n| n == "journal.json") { "journal" } else { "manifest" };
            Error::store(format!("damaged {what}: {e}")).in_file(path)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read", path, e)),
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a mix: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temporary(path, bytes)?;
    fs::rename(&tmp, path).map_err(|e| Error::io("cannot replace", path, e))?;
    sync_dir(path.parent().expect("file has a parent directory"))
}

/// Writes and syncs `bytes` to `<path>.tmp`, beside `path`; returns that name.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let dir = path.parent().expect("file has a parent directory");
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let mut tmp_name = path.file_name().expect("file name").to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io("cannot write", &tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io("cannot write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("cannot sync", &tmp, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| tmp)
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
