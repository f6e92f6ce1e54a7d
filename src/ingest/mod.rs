//! `tradeql ingest`: source files into the store, whole or not at all.
//!
//! The stage runs in three steps. Convert: each source is read in parallel
//! blocks ([`source`]), every record checked and turned into canonical rows
//! ([`convert`]), rows written to one staged Parquet file per year while their
//! keys go to the duplicate check ([`dedup`]). Merge: a year that keeps some
//! stored periods (a revision of part of a year) is rewritten as the kept rows
//! plus the new ones. Commit: the staged files and the new manifest are swapped
//! in through the store's journal. Until the commit point, the store is exactly
//! as it was; a failure anywhere leaves only a staging directory, which the next
//! writer removes.

pub mod convert;
pub mod dedup;
pub mod source;
pub(crate) mod writer;

use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::period::{Frequency, Period};
use crate::store::manifest::{Codec, ColumnSpec, DataFile, IngestRecord, SourceFile, describe_periods};
/// One stored data file, as written (no Hive `year` column added).
pub(crate) use crate::store::scan_file as scan;
use crate::store::{self, Commit, Manifest, Recovery, Store, StoreLock};
use convert::{Batch, Context, Layout, RowError, store_schema};
use dedup::{DuplicateCheck, Place};
use polars::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use writer::{PartitionWriter, StagedYear};

/// Bad rows shown in an error before "and N more".
const ERRORS_SHOWN: usize = 10;
/// Memory for the duplicate check before it spills to disk.
const DEDUP_BUDGET: usize = 128 << 20;

/// What to ingest, and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub store: PathBuf,
    pub dataset: Option<String>,
    pub sources: Vec<PathBuf>,
    pub mapping: Option<PathBuf>,
    pub currency: Option<String>,
    pub quantity_unit: Option<String>,
    /// Write good rows, and bad rows with their reason to this CSV file.
    pub rejects: Option<PathBuf>,
    pub dry_run: bool,
    /// Wait for another writer instead of failing.
    pub wait: bool,
    /// Converting threads (default: the machine's cores).
    pub workers: Option<usize>,
    pub progress: bool,
    /// Print how long each phase took to stderr.
    pub timings: bool,
    /// The format of a source read from standard input (`-`): csv or parquet.
    pub input_format: Option<String>,
    /// The codec of the files this ingest writes, and the dataset's from now
    /// on (default: the dataset's, zstd for a new one).
    pub compression: Option<Codec>,
}

/// The name standard input goes by in errors and in the manifest.
const STDIN_NAME: &str = "stdin";

/// Copies standard input to a temporary file of `format` (csv or parquet):
/// a source is read twice (header, then blocks) and hashed.
fn spool_stdin(format: Option<&str>) -> Result<tempfile::NamedTempFile> {
    let suffix = match format {
        Some("csv") | None => ".csv",
        Some("parquet") => ".parquet",
        Some(other) => {
            return Err(Error::usage(format!("--input-format is csv or parquet, not {other:?}")));
        }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix("tradeql-stdin-")
        .suffix(suffix)
        .tempfile()
        .map_err(|e| Error::io("cannot spool standard input to", &std::env::temp_dir(), e))?;
    std::io::copy(&mut std::io::stdin().lock(), tmp.as_file_mut())
        .map_err(|e| Error::io("cannot read standard input into", tmp.path(), e))?;
    Ok(tmp)
}

/// What an ingest did (or, with `dry_run`, would do).
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub dataset: String,
    pub version: u64,
    pub dry_run: bool,
    pub rows: u64,
    pub rejected: u64,
    pub frequency: Frequency,
    pub periods_added: Vec<Period>,
    pub periods_replaced: Vec<Period>,
    pub years_rewritten: Vec<i32>,
    pub recovery: Recovery,
    /// Source records a `[[rows]]` rule of the mapping left out.
    pub skipped: u64,
    /// What the user should know (source columns nothing reads).
    pub warnings: Vec<String>,
}

impl std::fmt::Display for IngestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would ingest" } else { "ingested" };
        writeln!(
            f,
            "{verb} {} rows into {} (version {}{})",
            self.rows,
            self.dataset,
            self.version,
            if self.dry_run { ", not written" } else { "" }
        )?;
        if self.rejected > 0 {
            writeln!(f, "  rejected {} rows (see the rejects file)", self.rejected)?;
        }
        if self.skipped > 0 {
            writeln!(f, "  left out {} source rows by the mapping's [[rows]] rules", self.skipped)?;
        }
        let show = |ps: &[Period]| if ps.is_empty() { "none".to_string() } else { describe_periods(ps) };
        writeln!(f, "  periods added:    {}", show(&self.periods_added))?;
        writeln!(f, "  periods replaced: {}", show(&self.periods_replaced))?;
        let years: Vec<String> = self.years_rewritten.iter().map(|y| format!("year={y}")).collect();
        write!(f, "  partitions {}: {}", if self.dry_run { "to write" } else { "written" }, years.join(", "))
    }
}

/// Ingests `opts.sources` into one dataset of the store.
pub fn ingest(opts: &IngestOptions) -> Result<IngestReport> {
    // `-` is standard input, spooled to a temporary file for the run.
    let mut spooled = None;
    let mut owned = opts.clone();
    for source in owned.sources.iter_mut().filter(|s| s.as_os_str() == "-") {
        if spooled.is_some() {
            return Err(Error::usage("standard input (-) can be given once"));
        }
        let tmp = spool_stdin(opts.input_format.as_deref())?;
        *source = tmp.path().to_path_buf();
        spooled = Some(tmp);
    }
    if spooled.is_none() && opts.input_format.is_some() {
        return Err(Error::usage("--input-format is for a source read from standard input (-)"));
    }
    let stdin_path = spooled.as_ref().map(|t| t.path().to_path_buf());
    let opts = &owned;
    let result = ingest_sources(opts, stdin_path.as_deref());
    drop(spooled);
    result
}

fn ingest_sources(opts: &IngestOptions, stdin_path: Option<&Path>) -> Result<IngestReport> {
    let mapping = match &opts.mapping {
        Some(path) => Mapping::load(path)?,
        None => Mapping::default(),
    };
    let dataset = opts
        .dataset
        .clone()
        .or_else(|| mapping.dataset.clone())
        .ok_or_else(|| Error::usage("name the dataset with --dataset (or dataset = \"...\" in the mapping)"))?;
    check_dataset_name(&dataset)?;
    if opts.sources.is_empty() {
        return Err(Error::usage("no source files given"));
    }
    if let Some(rejects) = &opts.rejects {
        check_rejects_path(rejects, opts)?;
    }
    // A source that cannot be read as a known format fails before the store
    // folder is made.
    for path in &opts.sources {
        source::Format::of(path)?;
        std::fs::metadata(path).map_err(|e| Error::io("cannot read", path, e))?;
    }
    // A store folder this ingest makes is removed again when nothing is
    // committed (a failure, a dry run).
    let made_store = !opts.store.exists();
    std::fs::create_dir_all(&opts.store).map_err(|e| Error::io("cannot create store", &opts.store, e))?;
    let result = ingest_into(opts, &mapping, &dataset, stdin_path);
    if made_store && (result.is_err() || opts.dry_run) {
        remove_unused_store(&opts.store);
    }
    result
}

/// Removes a store folder that holds nothing but tradeql's own bookkeeping.
fn remove_unused_store(root: &Path) {
    let only_internal = std::fs::read_dir(root)
        .map(|entries| entries.flatten().all(|e| e.file_name() == store::INTERNAL))
        .unwrap_or(false);
    if only_internal {
        let _ = std::fs::remove_dir_all(root);
    }
}

fn ingest_into(opts: &IngestOptions, mapping: &Mapping, dataset: &str, stdin: Option<&Path>) -> Result<IngestReport> {
    let store = Store::at(&opts.store);
    let lock = store.lock(opts.wait, &format!("ingest into {dataset}"))?;
    let recovery = store.recover(&lock)?;
    let old = store.manifest(dataset)?;
    let staging = store.staging_dir(&lock)?;
    let result = ingest_locked(opts, mapping, dataset, &store, &lock, old.as_ref(), &staging, stdin);
    // Staged files left behind (dry run, failure) go now; committed ones were moved.
    let _ = std::fs::remove_dir_all(&staging);
    let mut report = result?;
    report.recovery = recovery;
    Ok(report)
}

/// The rejects file is written over whatever is at its path: it must not be
/// a source, the mapping, anything inside the store, or a device or folder.
fn check_rejects_path(rejects: &Path, opts: &IngestOptions) -> Result<()> {
    if let Ok(m) = std::fs::metadata(rejects)
        && !m.is_file()
    {
        return Err(Error::usage(format!("--rejects {} is not a regular file", rejects.display())));
    }
    if opts.sources.iter().chain(opts.mapping.iter()).any(|input| store::same_file(rejects, input)) {
        return Err(Error::usage(format!(
            "--rejects {} is an input of this ingest: it would be overwritten",
            rejects.display()
        )));
    }
    Store::at(&opts.store).refuse_output_inside(rejects, "--rejects")
}

fn check_dataset_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with(['.', '_'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("bad dataset name {name:?}: use letters, digits, '_' and '-', not starting with '_'")))
    }
}

/// Everything the converted blocks tell us, gathered in file order.
struct Gathered {
    periods: HashSet<i32>,
    frequency: Option<(Frequency, PathBuf, u64)>,
    rows: u64,
    rejects: Vec<(PathBuf, RowError)>,
    sources: Vec<SourceFile>,
    /// The name of each source read, by index (a workbook gives one per sheet).
    names: Vec<PathBuf>,
    /// Source records each `[[rows]]` rule picked.
    rule_hits: Vec<u64>,
    warnings: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn ingest_locked(
    opts: &IngestOptions,
    mapping: &Mapping,
    dataset: &str,
    store: &Store,
    lock: &StoreLock,
    old: Option<&Manifest>,
    staging: &Path,
    stdin: Option<&Path>,
) -> Result<IngestReport> {
    let group_names: Vec<String> = store
        .groups_manifest()?
        .tables
        .iter()
        .filter(|t| t.of == "partner")
        .flat_map(|t| t.groups.iter().map(|(g, _)| g.clone()))
        .collect();
    let delimiter = mapping.delimiter.as_ref().map_or(b',', |d| d.as_bytes()[0]);
    let workers = opts.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let currency = dataset_currency(opts, mapping, old);
    let rates =
        if mapping.rows.iter().any(|r| r.currency.is_some()) { crate::rates::read_all(&opts.store)? } else { None };
    let context = Context { group_names: &group_names, currency: currency.as_deref(), rates: rates.as_ref() };
    let measure_names = mapping.measure_names();
    if let Some(old) = old
        && old.measures != mapping.measure_specs()
    {
        let list = |l: &[store::manifest::MeasureSpec]| {
            let shown: Vec<String> = l.iter().map(|m| format!("{} ({})", m.name, m.unit)).collect();
            if shown.is_empty() { "none".to_string() } else { shown.join(", ") }
        };
        return Err(Error::input(format!(
            "the dataset {dataset} holds the further measures {}, but this mapping declares {}",
            list(&old.measures),
            list(&mapping.measure_specs())
        ))
        .hint(
            "a dataset keeps the measures and units of its first ingest; ingest into another dataset with --dataset",
        ));
    }
    let codec = dataset_codec(opts, old);
    let mut writer = PartitionWriter::new(staging.join("new"), &measure_names, codec);
    let mut dups = DuplicateCheck::new(staging.join("keys"), DEDUP_BUDGET);
    let mut got = Gathered {
        periods: HashSet::new(),
        frequency: None,
        rows: 0,
        rejects: Vec::new(),
        sources: Vec::new(),
        names: Vec::new(),
        rule_hits: Vec::new(),
        warnings: Vec::new(),
    };
    let total_bytes: u64 = opts.sources.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = progress_bar(opts.progress, total_bytes);
    let clock = Phases::start(opts.timings);
    let sheets = source::SheetChoice { sheet: mapping.sheet.clone(), header_row: mapping.header_row };
    for path in &opts.sources {
        // Standard input, spooled to a temporary file, is named `stdin`.
        let is_stdin = stdin == Some(path.as_path());
        let shown = if is_stdin { PathBuf::from(STDIN_NAME) } else { path.clone() };
        let opened = source::open_all(path, delimiter, &sheets).map_err(|mut e| {
            if is_stdin {
                e.message = e.message.replace(&path.display().to_string(), STDIN_NAME);
                if e.location.file.as_deref() == Some(path.as_path()) {
                    e.location.file = Some(shown.clone());
                }
            }
            e
        })?;
        let bytes = opened.first().map_or(0, |s| s.bytes);
        let mut sha256 = String::new();
        for mut src in opened {
            if is_stdin {
                src.name = shown.clone();
            }
            let src_index = got.names.len();
            got.names.push(src.name.clone());
            let name = src.name.clone();
            let layout = Layout::resolve(mapping, &src.header, &context)
                .map_err(|e| if e.location.file.is_none() { e.in_file(&name) } else { e })?;
            for column in &layout.unread {
                let w = format!(
                    "{}: column `{column}` is not read: its values are not stored \
                     (map it, or list it under drop = [...] in the mapping to leave it out)",
                    shown.display()
                );
                if !got.warnings.contains(&w) {
                    got.warnings.push(w);
                }
            }
            let mut failed: Option<Error> = None;
            let mut deliver = |c: source::Converted| -> Result<bool> {
                if !c.errors.is_empty() && opts.rejects.is_none() {
                    failed = Some(rows_error(&name, c.errors));
                    return Ok(false);
                }
                got.rejects.extend(c.errors.into_iter().map(|e| (name.clone(), e)));
                absorb(&name, src_index, c.batch, &measure_names, &mut got, &mut writer, &mut dups)?;
                Ok(true)
            };
            let progress = |n: u64| bar.inc(n);
            sha256 = source::convert_all(&src, &layout, workers, &progress, &mut deliver)?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        got.sources.push(SourceFile { path: shown.display().to_string(), bytes, sha256 });
    }
    bar.finish_and_clear();
    for (k, rule) in mapping.rows.iter().enumerate() {
        if got.rule_hits.get(k).copied().unwrap_or(0) == 0 {
            let when: Vec<String> = rule.when.iter().map(|(c, v)| format!("{c} = {v:?}")).collect();
            got.warnings.push(format!(
                "the mapping's [[rows]] rule {} (when {}) picked no source row: is its condition written as the file writes it?",
                k + 1,
                when.join(", ")
            ));
        }
    }
    clock.mark("read, check and write rows");
    crate::failpoint("ingest:converted");
    let mut staged = writer.finish()?;
    let duplicates = dups.finish()?;
    clock.mark("duplicate-key check");
    if !duplicates.is_empty() {
        if opts.rejects.is_none() {
            return Err(duplicates_error(&got.names, &duplicates, &staged));
        }
        let keys: Vec<String> = duplicates
            .iter()
            .map(|d| {
                staged
                    .iter()
                    .find(|s| s.year == d.place.year)
                    .map_or(Ok(String::new()), |s| writer::key_text(&s.path, d.place.row))
            })
            .collect::<Result<_>>()?;
        staged = drop_rows(staged, &duplicates, staging, codec)?;
        for (d, key) in duplicates.iter().zip(keys) {
            let (file, line) = source_line(&got.names, d.line);
            let (first_file, first_line) = source_line(&got.names, d.first_line);
            let first = if first_file == file {
                format!("line {first_line}")
            } else {
                format!("{}:{first_line}", first_file.display())
            };
            got.rejects.push((
                file,
                RowError {
                    line,
                    column: String::new(),
                    value: String::new(),
                    reason: format!(
                        "duplicate key: {first} has the same period, reporter, partner, flow, product and region"
                    ),
                    hint: None,
                    record: key,
                },
            ));
        }
        got.rows -= duplicates.len() as u64;
    }
    let Some((frequency, _, _)) = got.frequency.clone() else {
        return Err(Error::input("no rows to ingest: every row was rejected").in_file(&opts.sources[0]));
    };
    if let Some(old) = old
        && old.frequency != frequency
    {
        return Err(Error::input(format!(
            "the dataset {dataset} is {}ly but this source is {}ly",
            old.frequency, frequency
        ))
        .in_file(&opts.sources[0])
        .hint("ingest it into another dataset with --dataset"));
    }
    let (manifest, moves, periods_added, periods_replaced) =
        build_manifest(opts, mapping, dataset, old, &got, frequency, staged, staging)?;
    clock.mark("merge revisions, hash files");
    // Each year once: its rows' file and its rollups' files move into it.
    let years_rewritten: Vec<i32> =
        moves.iter().filter_map(|(_, to)| year_of_path(to)).collect::<BTreeSet<i32>>().into_iter().collect();
    let report = IngestReport {
        dataset: dataset.to_string(),
        version: manifest.version,
        dry_run: opts.dry_run,
        rows: got.rows,
        rejected: got.rejects.len() as u64,
        frequency,
        periods_added,
        periods_replaced,
        years_rewritten,
        recovery: Recovery::default(),
        // The records the skipping rules picked.
        skipped: mapping.rows.iter().zip(&got.rule_hits).filter(|(r, _)| r.skip).map(|(_, n)| n).sum(),
        warnings: got.warnings.clone(),
    };
    let rejects_tmp = match &opts.rejects {
        Some(path) => Some(write_rejects(path, &got.rejects)?),
        None => None,
    };
    if opts.dry_run {
        // Nothing is stored; the rejects file, outside the store, is what a
        // dry run is for.
        if let (Some(tmp), Some(path)) = (rejects_tmp, &opts.rejects) {
            std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write rejects", path, e))?;
        }
        return Ok(report);
    }
    store.commit(
        lock,
        Commit {
            manifest_path: store::Store::dataset_rel(dataset, "manifest.json"),
            manifest_json: serde_json::to_string_pretty(&manifest)?,
            version: manifest.version,
            moves,
            removed: Vec::new(),
        },
    )?;
    if let (Some(tmp), Some(path)) = (rejects_tmp, &opts.rejects) {
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(
                &format!("version {} of {dataset} is committed, but cannot write rejects", manifest.version),
                path,
                e,
            )
        })?;
    }
    clock.mark("commit (fsync, rename)");
    Ok(report)
}

/// Line numbers in the duplicate check carry their source's index above bit 40.
const SOURCE_SHIFT: u32 = 40;

fn source_line(sources: &[PathBuf], code: u64) -> (PathBuf, u64) {
    (sources[(code >> SOURCE_SHIFT) as usize].clone(), code & ((1 << SOURCE_SHIFT) - 1))
}

/// Takes one converted block's rows into the writer and the duplicate check.
fn absorb(
    path: &Path,
    src_index: usize,
    batch: Batch,
    measures: &[String],
    got: &mut Gathered,
    writer: &mut PartitionWriter,
    dups: &mut DuplicateCheck,
) -> Result<()> {
    if let Some((line, label)) = &batch.mixed {
        return Err(mixed_error(path, *line, label, batch.frequency.map(|f| f.0)));
    }
    if let Some((f, line)) = batch.frequency {
        match &got.frequency {
            None => got.frequency = Some((f, path.to_path_buf(), line)),
            Some((first, _, _)) if *first != f => {
                let label =
                    batch.periods.iter().next().map(|d| Period::from_days(*d, f).to_string()).unwrap_or_default();
                return Err(mixed_error(path, line, &label, Some(*first)));
            }
            _ => {}
        }
    }
    got.periods.extend(batch.periods.iter().copied());
    if got.rule_hits.len() < batch.rule_hits.len() {
        got.rule_hits.resize(batch.rule_hits.len(), 0);
    }
    for (k, n) in batch.rule_hits.iter().enumerate() {
        got.rule_hits[k] += n;
    }
    for (year, rows) in batch.years {
        let (frame, lines, keys) = rows.into_frame(measures)?;
        got.rows += frame.height() as u64;
        let first_row = writer.add(year, frame)?;
        for (i, (key, line)) in keys.into_iter().zip(lines).enumerate() {
            dups.add(key, ((src_index as u64) << SOURCE_SHIFT) | line, Place { year, row: first_row + i as u64 })?;
        }
    }
    Ok(())
}

fn mixed_error(path: &Path, line: u64, label: &str, first: Option<Frequency>) -> Error {
    Error::input(format!(
        "this period's frequency differs from the rows before it{}",
        first.map(|f| format!(" ({f}ly)")).unwrap_or_default()
    ))
    .in_file(path)
    .at_line(line)
    .in_column("period")
    .with_value(label)
    .hint("a dataset holds one frequency; put monthly, quarterly and yearly rows in separate datasets")
}

fn rows_error(path: &Path, mut errors: Vec<RowError>) -> Error {
    errors.sort_by_key(|e| e.line);
    let count = errors.len();
    let mut iter = errors.into_iter();
    let mut first = iter.next().expect("at least one error").into_error(path);
    for e in iter.by_ref().take(ERRORS_SHOWN - 1) {
        first.more.push(e.into_error(path).to_string());
    }
    if count > ERRORS_SHOWN {
        first.more.push(format!("... and {} more bad rows in this part of the file", count - ERRORS_SHOWN));
    }
    first.hints.push("nothing was written; to keep the good rows and list the bad ones, pass --rejects FILE".into());
    first
}

fn duplicates_error(sources: &[PathBuf], dups: &[dedup::Duplicate], staged: &[StagedYear]) -> Error {
    let describe = |d: &dedup::Duplicate| -> String {
        staged
            .iter()
            .find(|s| s.year == d.place.year)
            .and_then(|s| writer::key_text(&s.path, d.place.row).ok())
            .unwrap_or_default()
    };
    let first_of = |d: &dedup::Duplicate| {
        let (file, line) = source_line(sources, d.line);
        let (first_file, first_line) = source_line(sources, d.first_line);
        let first = if first_file == file {
            format!("line {first_line}")
        } else {
            format!("{}:{first_line}", first_file.display())
        };
        (file, line, first)
    };
    let (file, line, first) = first_of(&dups[0]);
    let mut e =
        Error::input(format!("duplicate key: the same period, reporter, partner, flow, product and region as {first}"))
            .in_file(file)
            .at_line(line)
            .with_value(describe(&dups[0]));
    for d in dups.iter().skip(1).take(ERRORS_SHOWN - 1) {
        let (file, line, first) = first_of(d);
        e.more.push(format!("{}:{line}: duplicate of {first} (value {:?})", file.display(), describe(d)));
    }
    if dups.len() > ERRORS_SHOWN {
        e.more.push(format!("... and {} more duplicate rows", dups.len() - ERRORS_SHOWN));
    }
    e.hint("nothing was written; to keep the first of each and list the rest, pass --rejects FILE")
}

/// Rewrites the staged years that hold duplicate rows, without them.
fn drop_rows(
    staged: Vec<StagedYear>,
    dups: &[dedup::Duplicate],
    staging: &Path,
    codec: Codec,
) -> Result<Vec<StagedYear>> {
    let mut by_year: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    for d in dups {
        by_year.entry(d.place.year).or_default().push(d.place.row);
    }
    staged
        .into_iter()
        .map(|s| match by_year.get(&s.year) {
            None => Ok(s),
            Some(rows) => {
                let out = staging.join(format!("dedup-year={}.parquet", s.year));
                let drop = Series::new("rows".into(), rows.iter().map(|r| *r as IdxSize).collect::<Vec<_>>());
                let lf = scan(&s.path)?
                    .with_row_index("__row", None)
                    .filter(col("__row").is_in(lit(drop).implode(false), false).not())
                    .drop(cols(["__row"]));
                writer::sink_parquet(lf, &out, codec)?;
                let aggregate_rows = count_aggregates(&out)?;
                Ok(StagedYear { year: s.year, rows: s.rows - rows.len() as u64, aggregate_rows, path: out })
            }
        })
        .collect()
}

fn year_of_path(rel: &str) -> Option<i32> {
    rel.split('/').find_map(|part| part.strip_prefix("year=")).and_then(|y| y.parse().ok())
}

type Built = (Manifest, Vec<(PathBuf, String)>, Vec<Period>, Vec<Period>);

/// The new manifest, the moves that make it true, and which
/// periods are new or replaced. Years that keep stored periods are merged here.
#[allow(clippy::too_many_arguments)]
fn build_manifest(
    opts: &IngestOptions,
    mapping: &Mapping,
    dataset: &str,
    old: Option<&Manifest>,
    got: &Gathered,
    frequency: Frequency,
    staged: Vec<StagedYear>,
    staging: &Path,
) -> Result<Built> {
    let version = old.map_or(1, |m| m.version + 1);
    let new_days: BTreeSet<i32> = got.periods.iter().copied().collect();
    let label = |d: i32| Period::from_days(d, frequency).to_string();
    let old_labels: BTreeSet<String> = old.map(|m| m.periods.iter().cloned().collect()).unwrap_or_default();
    let mut added = Vec::new();
    let mut replaced = Vec::new();
    for d in &new_days {
        let p = Period::from_days(*d, frequency);
        if old_labels.contains(&p.to_string()) { replaced.push(p) } else { added.push(p) }
    }
    let new_years: BTreeSet<i32> = staged.iter().map(|s| s.year).collect();
    let mut files: Vec<DataFile> = Vec::new();
    let mut moves = Vec::new();
    // The new file of each year written, for its rollups.
    let mut rewritten: Vec<(DataFile, PathBuf)> = Vec::new();
    let old_files = old.map(|m| m.files.clone()).unwrap_or_default();
    // The codes of the wide columns of each file written, by its path.
    let mut staged_wide: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    // The files of the years rewritten stay in the store, for the version
    // they belong to (until `vacuum`).
    files.extend(old_files.iter().filter(|f| !new_years.contains(&f.year)).cloned());
    let new_period_series =
        || Int32Chunked::from_vec("period".into(), new_days.iter().copied().collect()).into_date().into_series();
    for s in staged {
        let year_days: Vec<i32> =
            new_days.iter().copied().filter(|d| Period::from_days(*d, frequency).year == s.year).collect();
        let mut periods: BTreeSet<String> = year_days.iter().map(|d| label(*d)).collect();
        let kept: Vec<&DataFile> =
            old_files.iter().filter(|f| f.year == s.year && f.periods.iter().any(|p| !periods.contains(p))).collect();
        let (path, rows, aggregate_rows) = if kept.is_empty() {
            (s.path, s.rows, s.aggregate_rows)
        } else {
            // A revision of part of a year: keep the stored periods it does not replace.
            let dir = store::Store::at(&opts.store).files_dir(dataset);
            let mut parts = Vec::new();
            for f in &kept {
                parts.push(
                    scan(&dir.join(&f.path))?
                        .filter(col("period").is_in(lit(new_period_series()).implode(false), false).not()),
                );
                periods.extend(f.periods.iter().filter(|p| !periods.contains(*p)).cloned().collect::<Vec<_>>());
            }
            parts.push(scan(&s.path)?);
            let merged = staging.join(format!("merged-year={}.parquet", s.year));
            writer::sink_parquet(concat(parts, UnionArgs::default())?, &merged, dataset_codec(opts, old))?;
            let rows = store::verify::parquet_rows(&merged)?;
            let aggregates = count_aggregates(&merged)?;
            (merged, rows, aggregates)
        };
        let (sha256, bytes) = store::sha256_file(&path)?;
        let rel = format!("year={}/part-v{version:06}.parquet", s.year);
        let (codes, wide) = file_codes(&path)?;
        staged_wide.insert(rel.clone(), wide);
        files.push(DataFile {
            path: rel.clone(),
            year: s.year,
            rows,
            aggregate_rows,
            bytes,
            sha256,
            periods: periods.into_iter().collect(),
            codes,
            wide: BTreeMap::new(),
        });
        rewritten.push((files.last().expect("just pushed").clone(), path.clone()));
        moves.push((path, store::Store::dataset_rel(dataset, &format!("files/{rel}"))));
    }
    files.sort_by_key(|f| f.year);
    let wide_codes =
        index_wide_codes(&mut files, old, &staged_wide, &store::Store::at(&opts.store).files_dir(dataset))?;
    for (written, _) in &mut rewritten {
        if let Some(indexed) = files.iter().find(|f| f.path == written.path) {
            *written = indexed.clone();
        }
    }
    let mut all_periods: Vec<Period> = files
        .iter()
        .flat_map(|f| f.periods.iter())
        .filter_map(|p| Period::parse(p).ok())
        .map(|p| Period { frequency, ..p })
        .collect();
    all_periods.sort();
    all_periods.dedup();
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let aggregate_rows = files.iter().map(|f| f.aggregate_rows).sum();
    let mapping_file = match &opts.mapping {
        Some(p) => {
            let (sha256, bytes) = store::sha256_file(p)?;
            Some(SourceFile { path: p.display().to_string(), bytes, sha256 })
        }
        None => None,
    };
    let code_tables = mapping
        .code_tables
        .values()
        .map(|t| {
            let (sha256, bytes) = store::sha256_file(&t.path)?;
            Ok(SourceFile { path: t.path.display().to_string(), bytes, sha256 })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ingests = old.map(|m| m.ingests.clone()).unwrap_or_default();
    ingests.push(IngestRecord {
        version,
        at: store::now(),
        sources: got.sources.clone(),
        mapping: mapping_file,
        code_tables,
        rows: got.rows,
        rejected: got.rejects.len() as u64,
        periods_added: added.iter().map(Period::to_string).collect(),
        periods_replaced: replaced.iter().map(Period::to_string).collect(),
    });
    let currency = dataset_currency(opts, mapping, old);
    if let (Some(old_cur), Some(new_cur)) = (old.and_then(|m| m.currency.as_ref()), &currency)
        && old_cur != new_cur
    {
        return Err(Error::input(format!("the dataset {dataset} is in {old_cur}, not {new_cur}"))
            .hint("ingest it into another dataset, or convert the values first"));
    }
    let mut manifest = Manifest {
        format: store::manifest::MANIFEST_FORMAT,
        dataset: dataset.to_string(),
        id: old
            .map(|m| m.id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| store::manifest::new_dataset_id(dataset)),
        version,
        updated_at: store::now(),
        frequency,
        currency,
        quantity_unit: opts
            .quantity_unit
            .clone()
            .or_else(|| mapping.quantity_unit.clone())
            .or_else(|| old.and_then(|m| m.quantity_unit.clone())),
        schema: schema_specs(&mapping.measure_names()),
        rows,
        aggregate_rows,
        periods: all_periods.iter().map(Period::to_string).collect(),
        aggregate_codes: aggregate_codes(old, mapping),
        wide_codes,
        files,
        ingests,
        measures: mapping.measure_specs(),
        rollups: old.map(|m| m.rollups.clone()).unwrap_or_default(),
        compression: dataset_codec(opts, old),
        view: None,
        view_cuts: Vec::new(),
    };
    // The rollups of the years written, in the same commit as their rows.
    moves.extend(crate::rollup::rebuild(&mut manifest, &rewritten, staging, dataset)?);
    Ok((manifest, moves, added, replaced))
}

/// The codec of the files an ingest writes: the command line's, else the dataset's.
fn dataset_codec(opts: &IngestOptions, old: Option<&Manifest>) -> Codec {
    opts.compression.or(old.map(|m| m.compression)).unwrap_or_default()
}

/// The dataset's currency: the command line's, the mapping's, or the stored one.
fn dataset_currency(opts: &IngestOptions, mapping: &Mapping, old: Option<&Manifest>) -> Option<String> {
    opts.currency.clone().or_else(|| mapping.currency.clone()).or_else(|| old.and_then(|m| m.currency.clone()))
}

/// The distinct codes of each code column of a staged file, sorted: those
/// with at most `CODES_KEPT` of them for the file's entry, the wider ones
/// (up to `WIDE_CODES_KEPT`) for the dataset's index of wide columns.
type FileCodes = BTreeMap<String, Vec<String>>;

fn file_codes(path: &Path) -> Result<(FileCodes, FileCodes)> {
    let (mut codes, mut wide) = (BTreeMap::new(), BTreeMap::new());
    for column in ["reporter", "partner", "flow", "product", "region"] {
        let values = column_codes(path, column)?;
        if values.len() <= store::manifest::CODES_KEPT {
            codes.insert(column.to_string(), values);
        } else if values.len() <= store::manifest::WIDE_CODES_KEPT {
            wide.insert(column.to_string(), values);
        }
    }
    Ok((codes, wide))
}

/// The distinct codes of a column of one file, sorted (off its dictionary
/// pages when every page is dictionary-encoded).
fn column_codes(path: &Path, column: &str) -> Result<Vec<String>> {
    let file = crate::exec::pushdown::PassFile {
        path: path.to_path_buf(),
        year: 0,
        has_aggregate_rows: false,
        periods: Vec::new(),
    };
    let mut values = match crate::exec::pushdown::distinct_texts(std::slice::from_ref(&file), column) {
        Some(v) => v,
        None => {
            let frame = scan(path)?.select([col(column).unique()]).collect()?;
            frame.column(column)?.str()?.iter().flatten().map(str::to_string).collect()
        }
    };
    values.sort();
    Ok(values)
}

/// The dataset-wide index of each wide code column and every file's ranges
/// in it: the codes of the files written as staged, of the files kept off
/// the old index (or, for files written before it was kept, off their
/// dictionaries, once). A column whose codes number more than
/// `WIDE_CODES_KEPT` is left out: queries read its codes from the files.
fn index_wide_codes(
    files: &mut [DataFile],
    old: Option<&Manifest>,
    staged: &BTreeMap<String, FileCodes>,
    dir: &Path,
) -> Result<FileCodes> {
    let columns: BTreeSet<String> = staged
        .values()
        .flat_map(|w| w.keys().cloned())
        .chain(old.into_iter().flat_map(|m| m.wide_codes.keys().cloned()))
        .collect();
    let mut index = BTreeMap::new();
    for column in columns {
        let mut per_file: Vec<Vec<String>> = Vec::new();
        for f in files.iter() {
            let known = match staged.get(&f.path) {
                Some(w) => w.get(&column).or_else(|| f.codes.get(&column)).cloned(),
                None => f.codes.get(&column).cloned().or_else(|| {
                    let list = old?.wide_codes.get(&column)?;
                    Some(f.wide_codes(list, &column)?.into_iter().cloned().collect())
                }),
            };
            per_file.push(match known {
                Some(codes) => codes,
                None => column_codes(&dir.join(&f.path), &column)?,
            });
        }
        let all: BTreeSet<&String> = per_file.iter().flatten().collect();
        if all.len() > store::manifest::WIDE_CODES_KEPT {
            continue;
        }
        let list: Vec<String> = all.into_iter().cloned().collect();
        for (f, codes) in files.iter_mut().zip(&per_file) {
            f.wide.insert(column.clone(), store::manifest::code_ranges(&list, codes));
        }
        index.insert(column, list);
    }
    for f in files.iter_mut() {
        f.wide.retain(|c, _| index.contains_key(c));
    }
    Ok(index)
}

/// The aggregate codes the mappings of every ingest declared, per dimension.
fn aggregate_codes(old: Option<&Manifest>, mapping: &Mapping) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut codes = old.map(|m| m.aggregate_codes.clone()).unwrap_or_default();
    for dim in ["partner", "product", "region"] {
        let declared = mapping.aggregates_of(dim);
        if declared.is_empty() {
            continue;
        }
        let list = codes.entry(dim.to_string()).or_default();
        list.extend(declared);
        list.sort();
        list.dedup();
    }
    codes
}

/// Rows flagged `aggregate` in one Parquet file.
fn count_aggregates(path: &Path) -> Result<u64> {
    let df = scan(path)?.select([col("aggregate").sum()]).collect()?;
    Ok(df.column("aggregate")?.cast(&DataType::UInt64)?.u64()?.get(0).unwrap_or(0))
}

fn schema_specs(measures: &[String]) -> Vec<ColumnSpec> {
    let mut specs: Vec<ColumnSpec> = store_schema(measures)
        .iter()
        .map(|(name, dtype)| ColumnSpec { name: name.to_string(), dtype: dtype.to_string() })
        .collect();
    specs.push(ColumnSpec { name: "year".into(), dtype: "i32 (Hive directory)".into() });
    specs
}

/// Writes the rejects CSV to a temporary name beside `path`; the caller renames it.
fn write_rejects(path: &Path, rejects: &[(PathBuf, RowError)]) -> Result<PathBuf> {
    let tmp = path.with_extension("csv.tmp");
    let mut w =
        csv::Writer::from_path(&tmp).map_err(|e| Error::internal(format!("cannot write {}: {e}", tmp.display())))?;
    let io = |e: csv::Error| Error::internal(format!("cannot write {}: {e}", tmp.display()));
    w.write_record(["file", "line", "column", "value", "reason", "record"]).map_err(io)?;
    let mut sorted: Vec<&(PathBuf, RowError)> = rejects.iter().collect();
    sorted.sort_by_key(|(p, e)| (p.clone(), e.line));
    for (file, e) in sorted {
        w.write_record([
            file.display().to_string(),
            e.line.to_string(),
            e.column.clone(),
            e.value.clone(),
            e.reason.clone(),
            e.record.clone(),
        ])
        .map_err(io)?;
    }
    w.flush().map_err(|e| Error::io("cannot write", &tmp, e))?;
    Ok(tmp)
}

/// Wall time of each phase, printed to stderr with `--timings`.
struct Phases {
    on: bool,
    last: std::cell::Cell<std::time::Instant>,
}

impl Phases {
    fn start(on: bool) -> Phases {
        Phases { on, last: std::cell::Cell::new(std::time::Instant::now()) }
    }

    fn mark(&self, what: &str) {
        if self.on {
            let now = std::time::Instant::now();
            eprintln!("timing: {what:<30} {:>8.3} s", (now - self.last.get()).as_secs_f64());
            self.last.set(now);
        }
    }
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} ingest [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
