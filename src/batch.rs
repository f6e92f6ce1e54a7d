//! `tradeql batch JOB.toml`: many saved queries, run together, into extracts.
//!
//! Every month, when customs publish, a job re-runs a folder of queries and
//! writes extracts that dashboards, pandas, DuckDB or Spark read. A job file
//! names the store, the queries (files or globs, each with one or more
//! parameter sets) and how each extract is written. The queries are compiled
//! one by one (a query that does not compile fails alone), then run together
//! with polars' `collect_all`, which shares the scans of the same files across
//! queries. Each extract is written to a temporary name and renamed, so a
//! failure or a kill never leaves a truncated or half-new file; a run manifest
//! (`run.json`) beside the extracts records what each query read and wrote, and
//! `--incremental` skips the queries whose text, parameters and input are
//! unchanged since that run.

use crate::error::{Error, Result};
use crate::lang::{self, QueryFile};
use crate::run::OutputFormat;
use crate::store::{self, Store};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A job file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The store, relative to the job file.
    pub store: PathBuf,
    /// Where extracts go, relative to the job file.
    pub out_dir: PathBuf,
    /// Default format of the extracts: parquet (default), csv, json or arrow.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub parquet: ParquetOptions,
    #[serde(rename = "query", default)]
    pub queries: Vec<JobQuery>,
    #[serde(rename = "reconcile", default)]
    pub reconciles: Vec<JobReconcile>,
}

/// `[[reconcile]]`: members against the published aggregates of a dataset
/// (`tradeql reconcile`), written as an extract; with `strict` (the default)
/// a comparison beyond the tolerance fails the task, and so the job.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobReconcile {
    pub dataset: String,
    /// The partner group table (default: every one).
    pub groups: Option<String>,
    /// Only these aggregate codes.
    #[serde(default)]
    pub only: Vec<String>,
    /// The measure summed (default: value).
    pub measure: Option<String>,
    pub tolerance: Option<f64>,
    #[serde(default = "strict_default")]
    pub strict: bool,
    /// Extract name (default: reconcile_DATASET).
    pub output: Option<String>,
    pub format: Option<String>,
}

fn strict_default() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParquetOptions {
    /// zstd (default), snappy, lz4 or uncompressed.
    pub compression: Option<String>,
    pub row_group_size: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// A query file or a glob (`*.tql`), relative to the job file.
    pub file: String,
    /// Parameter sets: the query runs once per set.
    #[serde(default)]
    pub params: Vec<BTreeMap<String, toml::Value>>,
    /// Extract name (without extension); `{name}` placeholders take parameter
    /// values, `{stem}` the query file's name. Default: the stem, then
    /// `-name=value` for each parameter.
    pub output: Option<String>,
    pub format: Option<String>,
    /// Write a Parquet extract as a folder partitioned by this column (Hive layout).
    pub partition_by: Option<String>,
}

/// One query run of the job, after globs and parameter sets are expanded.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub query: PathBuf,
    pub params: Vec<(String, String)>,
    pub format: OutputFormat,
    pub partition_by: Option<String>,
    pub output: PathBuf,
}

/// The record of one task in `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub name: String,
    pub query: String,
    pub query_sha256: String,
    pub params: BTreeMap<String, String>,
    pub dataset: Option<String>,
    pub dataset_version: Option<u64>,
    pub status: String,
    pub error: Option<String>,
    pub rows: Option<u64>,
    pub seconds: f64,
    pub output: String,
    pub output_sha256: Option<String>,
    /// The query's warnings (missing comparison periods, partial periods).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// What the query left out and why (aggregate rows of a dimension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What decides whether `--incremental` may skip the task next time.
    pub key: String,
}

/// `run.json`: what the last run of the job did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunManifest {
    pub job: String,
    pub started_at: String,
    pub seconds: f64,
    pub store: String,
    /// Where the queries ran: polars, spark or duckdb.
    #[serde(default)]
    pub engine: String,
    pub tasks: Vec<TaskRecord>,
}

#[derive(Default)]
pub struct BatchOptions {
    pub incremental: bool,
    /// Run the queries one after another instead of together (for comparison).
    pub sequential: bool,
    pub wait: bool,
    /// Run the queries' SQL on this engine (Spark or DuckDB, one session for
    /// the whole job) instead of polars; extracts are written the same way,
    /// and run.json names the engine.
    pub engine: Option<(crate::sql::Dialect, crate::sql::engine::EngineOptions)>,
    /// Also write the release as one self-contained web page here.
    pub report: Option<PathBuf>,
}

fn parse_format(text: &str) -> Result<OutputFormat> {
    Ok(match text {
        "parquet" => OutputFormat::Parquet,
        "csv" => OutputFormat::Csv,
        "json" => OutputFormat::Json,
        "arrow" => OutputFormat::Arrow,
        other => return Err(Error::usage(format!("unknown extract format {other:?}: parquet, csv, json or arrow"))),
    })
}

fn extension(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Parquet => "parquet",
        OutputFormat::Csv => "csv",
        OutputFormat::Json => "json",
        OutputFormat::Arrow => "arrow",
        OutputFormat::Table => "txt",
    }
}

fn param_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

impl JobFile {
    pub fn load(path: &Path) -> Result<JobFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read job", path, e))?;
        toml::from_str(&text).map_err(|e| {
            let mut err = Error::usage(format!("invalid job file: {}", e.message())).in_file(path);
            if let Some(span) = e.span() {
                err = err.at_line(text[..span.start].matches('\n').count() as u64 + 1);
            }
            err
        })
    }

    /// Every task of the job: globs and parameter sets expanded, names unique.
    pub fn tasks(&self, base: &Path) -> Result<Vec<Task>> {
        let out_dir = clean(&base.join(&self.out_dir));
        let default_format = parse_format(self.format.as_deref().unwrap_or("parquet"))?;
        let mut tasks: Vec<Task> = Vec::new();
        for q in &self.queries {
            let files = expand(base, &q.file)?;
            let format = match &q.format {
                Some(f) => parse_format(f)?,
                None => default_format,
            };
            if q.partition_by.is_some() && format != OutputFormat::Parquet {
                return Err(Error::usage(format!("{}: partition_by needs the parquet format", q.file)));
            }
            let sets: Vec<BTreeMap<String, toml::Value>> =
                if q.params.is_empty() { vec![BTreeMap::new()] } else { q.params.clone() };
            for file in &files {
                let stem = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
                for set in &sets {
                    let params: Vec<(String, String)> = set.iter().map(|(k, v)| (k.clone(), param_text(v))).collect();
                    let name = match &q.output {
                        Some(template) => {
                            let mut name = template.replace("{stem}", &stem);
                            for (k, v) in &params {
                                name = name.replace(&format!("{{{k}}}"), v);
                            }
                            name
                        }
                        None => std::iter::once(stem.clone())
                            .chain(params.iter().map(|(k, v)| format!("{k}={v}")))
                            .collect::<Vec<_>>()
                            .join("-"),
                    };
                    if !is_extract_name(&name) {
                        return Err(Error::usage(format!(
                            "bad extract name {:?} for {}: a name is one file name, not starting with a dot \
                             nor ending in .tmp or .old",
                            crate::error::shown(&name),
                            file.display()
                        )));
                    }
                    let output = if q.partition_by.is_some() {
                        out_dir.join(&name)
                    } else {
                        out_dir.join(format!("{name}.{}", extension(format)))
                    };
                    if output.file_name().is_some_and(|n| n == RUN_MANIFEST) {
                        return Err(Error::usage(format!(
                            "the extract of {} would be {RUN_MANIFEST}, the name of the job's run manifest; \
                             give it another `output` name",
                            file.display()
                        )));
                    }
                    if tasks.iter().any(|t| t.output == output) {
                        return Err(Error::usage(format!(
                            "two tasks would write {}; give each its own `output` name (with {{param}} placeholders)",
                            output.display()
                        )));
                    }
                    tasks.push(Task {
                        name,
                        query: file.clone(),
                        params,
                        format,
                        partition_by: q.partition_by.clone(),
                        output,
                    });
                }
            }
        }
        if tasks.is_empty() {
            return Err(Error::usage("the job has no queries: add [[query]] file = \"...\" entries"));
        }
        Ok(tasks)
    }
}

/// The files a job's `file` names: one path, or a glob with `*` in its last part.
fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let path = clean(&base.join(pattern));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if !name.contains('*') {
        if !path.is_file() {
            return Err(Error::usage(format!("the job names {}, which does not exist", path.display())));
        }
        return Ok(vec![path]);
    }
    let (prefix, suffix) = name.split_once('*').expect("contains *");
    // `partners_*.tql` of a job in the current folder: its folder is `.`.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("cannot list", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= prefix.len() + suffix.len() && p.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::usage(format!("the job's pattern {pattern} matches no file")));
    }
    Ok(files)
}

/// `queries/../store` → `store`: paths relative to the job file, shown plainly.
fn clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() { PathBuf::from(".") } else { out.iter().collect() }
}

/// One SHA-256 over a partitioned extract: every file's path and content
/// hash, in order, so that `--incremental` sees a file changed, added or gone.
fn folder_sha256(dir: &Path) -> Result<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))? {
            let path = entry.map_err(|e| Error::io("cannot list", dir, e))?.path();
            if path.is_dir() {
                walk(&path, root, out)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().to_string();
                out.push((rel, store::sha256_file(&path)?.0));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let listing: String = files.iter().map(|(p, h)| format!("{p} {h}\n")).collect();
    Ok(sha256_text(&listing))
}

/// The run manifest's file name in the extracts folder.
const RUN_MANIFEST: &str = "run.json";

/// `path` with `suffix` appended to its name (`a.b` → `a.b.tmp`).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// A value as a Hive partition folder names it (`partner=<value>`): the
/// characters Hive escapes, and control characters, as `%XX`, so that no
/// value (`a/../../x`) names a folder outside the extract; readers with Hive
/// partitioning (pyarrow, polars, Spark) decode it back. A null is Hive's
/// default partition.
fn hive_value(value: Option<&str>) -> String {
    let Some(value) = value.filter(|v| !v.is_empty()) else { return "__HIVE_DEFAULT_PARTITION__".into() };
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        if ch.is_control() || "\"#%'*/:=?\\{[]^".contains(ch) {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    if out == "." || out == ".." { out.replace('.', "%2E") } else { out }
}

fn sha256_text(text: &str) -> String {
    use sha2::{Digest, Sha256};
    store::hex(&Sha256::digest(text.as_bytes()))
}

/// Writes one extract atomically: temporary name, then rename.
fn write_extract(
    task: &Task,
    frame: &mut DataFrame,
    parquet: &ParquetOptions,
    plan: &lang::plan::Plan,
) -> Result<Option<String>> {
    if let Some(column) = &task.partition_by {
        // A folder of Hive partitions, built aside and swapped in.
        if frame.column(column).is_err() {
            return Err(Error::usage(format!("partition_by {column:?}: the result has no such column")));
        }
        let dtype = frame.column(column)?.dtype().clone();
        if dtype.is_float() {
            return Err(Error::usage(format!(
                "partition_by {column:?}: a column of numbers with decimals makes no folder names \
                 (values that differ in the 17th digit would share one); partition by a code, a year or a period"
            )));
        }
        let tmp = beside(&task.output, ".tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let staged = (|| -> Result<()> {
            let mut folders = std::collections::HashMap::new();
            for part in frame.partition_by([column.as_str()], true)? {
                let value = match part.column(column)?.get(0)? {
                    AnyValue::Null => None,
                    AnyValue::String(s) => Some(s.to_string()),
                    AnyValue::StringOwned(s) => Some(s.to_string()),
                    other => Some(other.to_string()),
                };
                let folder = format!("{column}={}", hive_value(value.as_deref()));
                if folder.len() > 255 {
                    return Err(Error::usage(format!(
                        "partition_by {column:?}: the value {:?} makes a folder name longer than 255 bytes",
                        crate::error::shown(value.as_deref().unwrap_or_default())
                    )));
                }
                if let Some(other) = folders.insert(folder.clone(), value.clone()) {
                    return Err(Error::usage(format!(
                        "partition_by {column:?}: the values {:?} and {:?} would share the folder {folder}",
                        other.as_deref().unwrap_or("null"),
                        value.as_deref().unwrap_or("null")
                    )));
                }
                let dir = tmp.join(&folder);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
                let mut part = part.drop(column)?;
                let file = dir.join("part-0.parquet");
                let f = std::fs::File::create(&file).map_err(|e| Error::io("cannot create", &file, e))?;
                parquet_writer(f, parquet, plan, part.schema())?
                    .finish(&mut part)
                    .map_err(|e| crate::error::writing(&file, e))?;
            }
            Ok(())
        })();
        if let Err(e) = staged {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        crate::failpoint("batch:extract-staged");
        // Swapped in one step where the system can (the name always holds
        // an extract); else set aside, then renamed in.
        if task.output.is_dir() && store::exchange(&tmp, &task.output) {
            let _ = std::fs::remove_dir_all(&tmp);
            return folder_sha256(&task.output).map(Some);
        }
        let old = beside(&task.output, ".old");
        if task.output.exists() {
            std::fs::rename(&task.output, &old).map_err(|e| Error::io("cannot replace", &task.output, e))?;
            crate::failpoint("batch:previous-kept");
        }
        std::fs::rename(&tmp, &task.output).map_err(|e| Error::io("cannot replace", &task.output, e))?;
        let _ = std::fs::remove_dir_all(&old);
        return folder_sha256(&task.output).map(Some);
    }
    let tmp = beside(&task.output, ".tmp");
    let result = (|| -> Result<()> {
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
        match task.format {
            OutputFormat::Parquet => {
                parquet_writer(&mut file, parquet, plan, frame.schema())?.finish(frame)?;
            }
            other => crate::run::write_frame(frame, plan, other, &mut file)?,
        }
        file.sync_all().map_err(|e| Error::io("cannot write", &tmp, e))?;
        crate::failpoint("batch:extract-staged");
        std::fs::rename(&tmp, &task.output).map_err(|e| Error::io("cannot write", &task.output, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(Some(store::sha256_file(&task.output)?.0))
}

/// Whether `name` may name an extract: one file name, not hidden, and not
/// one of the names the swap of an extract uses (`.tmp`, `.old`).
fn is_extract_name(name: &str) -> bool {
    store::is_plain_name(name) && !name.starts_with('.') && !name.ends_with(".tmp") && !name.ends_with(".old")
}

/// Runs one `[[reconcile]]` entry into its extract; its record says what it found.
fn reconcile_task(
    rec: &JobReconcile,
    job: &JobFile,
    job_path: &Path,
    out_dir: &Path,
    store: &Store,
    tasks: &[Task],
) -> TaskRecord {
    let start = Instant::now();
    let name = rec.output.clone().unwrap_or_else(|| format!("reconcile_{}", rec.dataset));
    let spec = serde_json::to_string(rec).unwrap_or_default();
    let mut record = TaskRecord {
        name: name.clone(),
        query: format!("reconcile {} ({})", rec.dataset, job_path.display()),
        query_sha256: sha256_text(&spec),
        params: BTreeMap::new(),
        dataset: Some(rec.dataset.clone()),
        dataset_version: None,
        status: "failed".into(),
        error: None,
        rows: None,
        seconds: 0.0,
        output: String::new(),
        output_sha256: None,
        warnings: Vec::new(),
        notes: Vec::new(),
        key: String::new(),
    };
    let outcome = (|| -> Result<()> {
        let format = parse_format(rec.format.as_deref().or(job.format.as_deref()).unwrap_or("parquet"))?;
        if !is_extract_name(&name) {
            return Err(Error::usage(format!(
                "bad extract name {:?} for [[reconcile]]: a name is one file name, not starting with a dot \
                 nor ending in .tmp or .old",
                crate::error::shown(&name)
            )));
        }
        let output = out_dir.join(format!("{name}.{}", extension(format)));
        record.output = output.display().to_string();
        if tasks.iter().any(|t| t.output == output) || output.file_name().is_some_and(|n| n == RUN_MANIFEST) {
            return Err(Error::usage(format!(
                "[[reconcile]] would write {}, which another task writes; give it its own `output` name",
                output.display()
            )));
        }
        let opts = crate::reconcile::ReconcileOptions {
            store: store.root().to_path_buf(),
            dataset: rec.dataset.clone(),
            groups: rec.groups.clone(),
            only: rec.only.clone(),
            measure: rec.measure.clone().unwrap_or_else(|| "value".into()),
            tolerance: rec.tolerance.unwrap_or(crate::reconcile::DEFAULT_TOLERANCE),
        };
        let mut found = crate::reconcile::reconcile(&opts)?;
        record.dataset_version = Some(found.version);
        record.notes = found.notes.clone();
        let summary = found.summary();
        let plan = found.plan();
        let task = Task {
            name: name.clone(),
            query: job_path.to_path_buf(),
            params: Vec::new(),
            format,
            partition_by: None,
            output,
        };
        record.rows = Some(found.frame.height() as u64);
        record.output_sha256 = write_extract(&task, &mut found.frame, &job.parquet, &plan)?;
        if rec.strict && found.flagged > 0 {
            return Err(Error::input(format!("{}: {summary}", rec.dataset)));
        }
        record.notes.push(summary);
        Ok(())
    })();
    match outcome {
        Ok(()) => record.status = "ok".into(),
        Err(e) => record.error = Some(e.to_string()),
    }
    record.seconds = start.elapsed().as_secs_f64();
    record
}

fn parquet_writer<W: std::io::Write>(
    w: W,
    opts: &ParquetOptions,
    plan: &lang::plan::Plan,
    schema: &Schema,
) -> Result<ParquetWriter<W>> {
    let compression = match opts.compression.as_deref().unwrap_or("zstd") {
        "zstd" => ParquetCompression::Zstd(None),
        "snappy" => ParquetCompression::Snappy,
        "lz4" => ParquetCompression::Lz4Raw,
        "uncompressed" => ParquetCompression::Uncompressed,
        other => {
            return Err(Error::usage(format!(
                "unknown parquet compression {other:?}: zstd, snappy, lz4 or uncompressed"
            )));
        }
    };
    Ok(ParquetWriter::new(w)
        .with_compression(compression)
        .with_row_group_size(opts.row_group_size)
        .with_key_value_metadata(Some(crate::run::result_metadata(plan, schema))))
}

/// A progress line on a terminal while queries run (nothing otherwise; the
/// per-query lines follow either way).
fn progress(running: usize, failed: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(running as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} queries done, {msg} [{elapsed}]")
            .expect("valid template"),
    );
    bar.set_message(format!("{} running, {failed} failed to compile", running));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Finishes what a killed run left in the extracts folder (the caller holds
/// the folder's lock): a temporary extract is removed; a kept previous
/// extract (`X.old`) is put back where its replacement never arrived, and
/// removed where it did.
fn clean_stale(out_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(out_dir) else { return Ok(()) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let p = e.path();
        let remove = |p: &Path| if p.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
        if name.ends_with(".tmp") {
            remove(&p).map_err(|err| Error::io("cannot remove", &p, err))?;
        } else if let Some(kept) = name.strip_suffix(".old") {
            let current = out_dir.join(kept);
            if current.exists() {
                remove(&p).map_err(|err| Error::io("cannot remove", &p, err))?;
            } else {
                std::fs::rename(&p, &current).map_err(|err| Error::io("cannot restore", &current, err))?;
            }
        }
    }
    Ok(())
}

/// Holds the extracts folder for one job at a time (an `flock` on the
/// folder itself): two jobs writing one folder would replace each other's
/// extracts and run manifest.
fn lock_out_dir(out_dir: &Path, wait: bool) -> Result<std::fs::File> {
    store::lock_folder(out_dir, wait)?.ok_or_else(|| {
        Error::new(crate::ErrorKind::Locked, format!("another batch is writing extracts into {}", out_dir.display()))
            .hint("wait for it to finish, or pass --wait to queue behind it")
    })
}

/// Runs a job; returns its run manifest (also written as `run.json`).
pub fn run_job(
    job_path: &Path,
    job: &JobFile,
    opts: &BatchOptions,
    report: &mut dyn FnMut(&TaskRecord),
) -> Result<RunManifest> {
    let base = job_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let tasks = job.tasks(&base)?;
    let out_dir = clean(&base.join(&job.out_dir));
    Store::at(clean(&base.join(&job.store))).refuse_output_inside(&out_dir, "the extracts folder")?;
    if let Some(page) = &opts.report {
        Store::at(clean(&base.join(&job.store))).refuse_output_inside(page, "--report")?;
        if page.is_dir() {
            return Err(Error::usage(format!(
                "--report {} is a folder: give a file such as report.html",
                page.display()
            )));
        }
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io("cannot create", &out_dir, e))?;
    let _out_lock = lock_out_dir(&out_dir, opts.wait)?;
    clean_stale(&out_dir)?;
    let store = Store::open_existing(clean(&base.join(&job.store)))?;
    // Writers wait for the batch (and the batch for a running ingest): the
    // files a query reads stay in place until it is done.
    let _lock = store.lock(opts.wait, &format!("batch {}", job_path.display()))?;
    store.recover(&_lock)?;
    let previous: Option<RunManifest> =
        std::fs::read_to_string(out_dir.join(RUN_MANIFEST)).ok().and_then(|t| serde_json::from_str(&t).ok());
    let started = Instant::now();
    let started_at = store::now();
    let mut records: Vec<Option<TaskRecord>> = vec![None; tasks.len()];
    let mut runnable: Vec<(usize, lang::Loaded, String)> = Vec::new();
    let parquet_key = serde_json::to_string(&job.parquet)?;
    // Group tables and rates are read by queries too: a new version of them
    // (or a store made anew) makes every extract stale.
    let groups = store.groups_manifest()?;
    let groups_key = format!("groups {} {}", groups.version, groups.updated_at);
    let mut shared_groups = crate::exec::SharedAggregates::default();
    for (i, task) in tasks.iter().enumerate() {
        let start = Instant::now();
        let base_record = |query_sha256: String, key: String| TaskRecord {
            name: task.name.clone(),
            query: task.query.display().to_string(),
            query_sha256,
            params: task.params.iter().cloned().collect(),
            dataset: None,
            dataset_version: None,
            status: String::new(),
            error: None,
            rows: None,
            seconds: 0.0,
            output: task.output.display().to_string(),
            output_sha256: None,
            warnings: Vec::new(),
            notes: Vec::new(),
            key,
        };
        let file = match QueryFile::read(&task.query) {
            Ok(f) => f,
            Err(e) => {
                let mut r = base_record(String::new(), String::new());
                r.status = "failed".into();
                r.error = Some(e.to_string());
                records[i] = Some(r);
                continue;
            }
        };
        let query_sha = sha256_text(&file.text);
        // Together, queries on the same dataset read each of its files once,
        // through shared cached scans, and share identical group-bys.
        let mut scan_for = |m: &store::Manifest| crate::exec::scan_dataset(store.root(), m);
        let share = if opts.sequential || opts.engine.is_some() { None } else { Some(&mut shared_groups) };
        match lang::load_with_scan(&file, &store, &task.params, &mut scan_for, share) {
            Err(e) => {
                let mut r = base_record(query_sha, String::new());
                r.status = "failed".into();
                r.error = Some(e.to_string());
                r.seconds = start.elapsed().as_secs_f64();
                records[i] = Some(r);
            }
            Ok(loaded) => {
                let key = sha256_text(&format!(
                    "{query_sha}|{:?}|{}|{}|{}|{:?}|{:?}|{parquet_key}|{groups_key}",
                    task.params,
                    loaded.manifest.dataset,
                    loaded.manifest.id,
                    loaded.manifest.version,
                    task.format,
                    task.partition_by
                ));
                let unchanged = previous
                    .as_ref()
                    .and_then(|p| p.tasks.iter().find(|t| t.output == task.output.display().to_string()))
                    .filter(|t| {
                        t.status != "failed"
                            && t.key == key
                            && task.output.exists()
                            && t.output_sha256.as_ref().is_some_and(|h| {
                                let now = if task.output.is_dir() {
                                    folder_sha256(&task.output)
                                } else {
                                    store::sha256_file(&task.output).map(|(h, _)| h)
                                };
                                now.is_ok_and(|now| now == *h)
                            })
                    });
                if let (true, Some(prev)) = (opts.incremental, unchanged) {
                    let mut r = prev.clone();
                    r.status = "skipped".into();
                    r.seconds = 0.0;
                    records[i] = Some(r);
                } else {
                    let mut r = base_record(query_sha, key.clone());
                    r.dataset = Some(loaded.manifest.dataset.clone());
                    r.dataset_version = Some(loaded.manifest.version);
                    records[i] = Some(r);
                    runnable.push((i, loaded, key));
                }
            }
        }
    }
    for r in records.iter().flatten().filter(|r| r.status == "failed" || r.status == "skipped") {
        report(r);
    }
    // Run together (shared scans), or one by one; a failure together is
    // retried one by one so that it costs only its own task.
    let failed_early = records.iter().flatten().filter(|r| r.status == "failed").count();
    let spinner = progress(runnable.len(), failed_early);
    let one_by_one = || {
        runnable
            .iter()
            .map(|(_, l, _)| {
                let out = crate::run::collect(&l.compiled);
                spinner.inc(1);
                out
            })
            .collect::<Vec<_>>()
    };
    let outcomes: Vec<Result<crate::run::Outcome>> = if let Some((dialect, options)) = &opts.engine {
        let pairs: Vec<(&lang::Loaded, &std::path::Path)> =
            runnable.iter().map(|(_, l, _)| (l, l.store_root(store.root()))).collect();
        match crate::sql::run_loaded(&pairs, *dialect, options) {
            Ok(results) => results,
            // The engine did not start (not installed, no Java): every task fails with why.
            Err(e) => runnable.iter().map(|_| Err(e.clone())).collect(),
        }
    } else if opts.sequential || runnable.len() < 2 {
        one_by_one()
    } else {
        let plans: Vec<DslPlan> = runnable.iter().map(|(_, l, _)| l.compiled.lf.logical_plan.clone()).collect();
        let flags = runnable[0].1.compiled.lf.get_current_optimizations();
        let engine = crate::run::engine_for(runnable.iter().map(|(_, l, _)| &l.compiled));
        match crate::run::on_big_stack(|| LazyFrame::collect_all_with_engine(plans, engine, flags)) {
            Ok(frames) => {
                runnable.iter().zip(frames).map(|((_, l, _), f)| crate::run::finish(&l.compiled.shape, f)).collect()
            }
            Err(_) => one_by_one(),
        }
    };
    spinner.finish_and_clear();
    let together = started.elapsed().as_secs_f64();
    let n = runnable.len().max(1) as f64;
    let mut entries = Vec::new();
    for ((i, loaded, _), outcome) in runnable.iter().zip(outcomes) {
        let task = &tasks[*i];
        let record = records[*i].as_mut().expect("set above");
        let write_start = Instant::now();
        let outcome = outcome.and_then(|mut o| {
            record.warnings = std::mem::take(&mut o.warnings);
            record.notes = std::mem::take(&mut o.notes);
            let rows = o.frame.height() as u64;
            let written = write_extract(task, &mut o.frame, &job.parquet, &loaded.plan).map(|sha| (rows, sha))?;
            if opts.report.is_some() {
                let version = loaded.manifest.version;
                let mut e = crate::report::entry(
                    &task.name,
                    &task.query,
                    &task.params,
                    &loaded.plan,
                    version,
                    &o.frame,
                    &store,
                )?;
                e.warnings = record.warnings.clone();
                e.notes = record.notes.clone();
                entries.push(e);
            }
            Ok(written)
        });
        match outcome {
            Ok((rows, sha)) => {
                record.status = "ok".into();
                record.rows = Some(rows);
                record.output_sha256 = sha;
            }
            Err(e) => {
                record.status = "failed".into();
                record.error = Some(e.to_string());
            }
        }
        // Queries run together share their time: each is credited an equal part.
        record.seconds = together / n + write_start.elapsed().as_secs_f64();
        report(record);
    }
    for rec in &job.reconciles {
        let r = reconcile_task(rec, job, job_path, &out_dir, &store, &tasks);
        report(&r);
        records.push(Some(r));
    }
    let manifest = RunManifest {
        job: job_path.display().to_string(),
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        store: store.root().display().to_string(),
        engine: opts.engine.as_ref().map_or("polars", |(d, _)| d.name()).to_string(),
        tasks: records.into_iter().flatten().collect(),
    };
    store::write_atomic(&out_dir.join(RUN_MANIFEST), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    if let Some(path) = &opts.report {
        let left: Vec<String> = manifest.tasks.iter().filter(|t| t.status != "ok").map(|t| t.name.clone()).collect();
        let name = job_path.file_stem().map_or_else(|| "job".into(), |s| s.to_string_lossy().to_string());
        let html = crate::report::page(&name, &entries, &manifest.started_at, manifest.seconds, &left);
        crate::report::write(path, &html)?;
    }
    Ok(manifest)
}
