//! Running a query: collect, report warnings, write the result.
//!
//! The result goes to the terminal as an aligned table (numbers right-aligned,
//! with the query's display formats: percent, pp, million, ...) or, exactly as
//! computed, to CSV, JSON, Parquet or Arrow IPC. A file output is written to a
//! temporary name and renamed, so a failure never leaves half a file.

use crate::error::{Error, ErrorKind, Result, display_width};
use crate::lang::compile::{Compiled, ResultShape, WarningKind};
use crate::lang::plan::{Format, Plan, TimeKey};
use crate::period::{Frequency, Period};
use crate::store::Store;
use polars::prelude::*;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Output formats of `tradeql run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
    Arrow,
}

impl OutputFormat {
    /// The format a file name's extension names (`x.parquet`), else the table:
    /// `--out x.parquet` without `-f` once wrote the text table into it.
    pub fn of_path(path: Option<&Path>) -> OutputFormat {
        match path.and_then(|p| p.extension()).and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => OutputFormat::Csv,
            Some("json") => OutputFormat::Json,
            Some("parquet" | "pq") => OutputFormat::Parquet,
            Some("arrow" | "ipc" | "feather") => OutputFormat::Arrow,
            _ => OutputFormat::Table,
        }
    }

    /// The format of a run: `--format` if given, else `--out`'s extension.
    /// A `--format` that contradicts the extension (`-f csv --out x.parquet`)
    /// is refused: the file would not hold what its name says.
    pub fn chosen(format: Option<OutputFormat>, out: Option<&Path>) -> Result<OutputFormat> {
        let by_name = out.filter(|p| p.extension().is_some()).map(|p| OutputFormat::of_path(Some(p)));
        match (format, by_name) {
            (Some(f), Some(n)) if n != OutputFormat::Table && f != n => Err(Error::usage(format!(
                "--format {} contradicts --out {}, whose extension says {}",
                f.name(),
                out.map(|p| p.display().to_string()).unwrap_or_default(),
                n.name()
            ))
            .hint("leave out --format (the extension decides), or name the file by its format")),
            (Some(f), _) => Ok(f),
            (None, _) => Ok(OutputFormat::of_path(out)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
            OutputFormat::Parquet => "parquet",
            OutputFormat::Arrow => "arrow",
        }
    }
}

/// A collected result and what to warn about.
pub struct Outcome {
    pub frame: DataFrame,
    pub warnings: Vec<String>,
    /// What the query left out and why (aggregate rows of a dimension).
    pub notes: Vec<String>,
}

/// The store a query reads, as `tradeql run` opens it: an existing store at
/// `path` (a query of files, `from "FILE"`, needs none), reading the kept
/// version `vintage` if one is asked for. A query that does not parse says so
/// before a missing store is reported.
pub fn store_for(query: &crate::lang::QueryFile, path: &Path, vintage: Option<crate::store::Vintage>) -> Result<Store> {
    let store = match Store::open_existing(path) {
        Err(_) if crate::lang::reads_files(query) => Store::at(path),
        Err(e) => {
            crate::lang::parse(query)?;
            return Err(e);
        }
        opened => opened?,
    };
    Ok(store.reading(vintage))
}

/// One query, as `tradeql run` runs it: loaded and collected against one
/// committed version of `store`, even while a writer replaces it; on polars,
/// or on a SQL engine.
pub fn query(
    query: &crate::lang::QueryFile,
    store: &Store,
    params: &[(String, String)],
    engine: Option<&(crate::sql::Dialect, crate::sql::engine::EngineOptions)>,
) -> Result<(crate::lang::Loaded, Outcome)> {
    store.read_consistent(|| {
        let loaded = crate::lang::load(query, store, params)?;
        let outcome = match engine {
            None => collect(&loaded.compiled)?,
            Some((d, options)) => {
                let root = loaded.store_root(store.root());
                let mut results = crate::sql::run_loaded(&[(&loaded, root)], *d, options)?;
                results.remove(0)?
            }
        };
        Ok((loaded, outcome))
    })
}

/// What `tradeql explain` prints: tradeql's plan, the group-bys the
/// aggregate pushdown answers, and polars' optimised plan.
pub fn explain(loaded: &crate::lang::Loaded) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "tradeql plan:\n{}", loaded.plan);
    let rollup = loaded.rollup.describe();
    if !rollup.is_empty() {
        let _ = writeln!(out, "{rollup}\n");
    }
    if !loaded.compiled.pushed_down.is_empty() {
        let _ = writeln!(
            out,
            "pushdown: read from the Parquet dictionary pages in one read of the files\n  \
             (TRADEQL_PUSHDOWN=off leaves them to polars):"
        );
        for spec in &loaded.compiled.pushed_down {
            let _ = writeln!(out, "  - {spec}");
        }
        out.push('\n');
    }
    let optimised = on_big_stack(|| loaded.compiled.lf.explain(true))?;
    let _ = writeln!(out, "polars optimised plan:\n{optimised}");
    Ok(out)
}

/// The notes and warnings of a run, as the sentences `tradeql run` prints
/// (`note: ...`, `warning: ...`), notes first.
pub fn messages(loaded: &crate::lang::Loaded, outcome: &Outcome) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = loaded.plan.ytd_through {
        let months = crate::lang::plan::months_label(m);
        out.push(format!("note: `by ytd`: each year is {months}, the months up to the last one the query covers"));
    }
    out.extend(outcome.notes.iter().map(|n| format!("note: {n}")));
    out.extend(outcome.warnings.iter().map(|w| format!("warning: {w}")));
    out
}

/// `frame` with a column `DIM_name` after each code column (reporter,
/// partner, product, region) that a names table of `store` names (`run
/// --names`); a code the table lacks has a null name. Reporters are named by
/// the partner table when they have none of their own.
pub fn with_code_names(frame: DataFrame, store: &crate::store::Store) -> Result<DataFrame> {
    let names = store.groups_manifest()?.names;
    let mut out = frame;
    for dim in ["reporter", "partner", "product", "region"] {
        let table = names
            .iter()
            .find(|t| t.of == dim)
            .or_else(|| names.iter().find(|t| dim == "reporter" && t.of == "partner"));
        let (Some(table), Ok(codes)) = (table, out.column(dim).and_then(|c| c.str().cloned())) else { continue };
        let name = format!("{dim}_name");
        if out.column(&name).is_ok() {
            continue;
        }
        let path = store.root().join(crate::store::GROUPS_DIR).join(&table.path);
        let read = crate::store::scan_file(&path)?.select([col("code"), col("name")]).collect()?;
        let (code, named) = (read.column("code")?.str()?, read.column("name")?.str()?);
        let lookup: std::collections::HashMap<&str, &str> =
            code.iter().zip(named.iter()).filter_map(|(c, n)| Some((c?, n?))).collect();
        let values: StringChunked = codes.iter().map(|c| c.and_then(|c| lookup.get(c).copied())).collect();
        let at = out.get_column_index(dim).expect("the column is there") + 1;
        out.insert_column(at, values.with_name(name.as_str().into()).into_column())?;
    }
    Ok(out)
}

/// Collects a compiled query; turns the warning columns into sentences.
pub fn collect(compiled: &Compiled) -> Result<Outcome> {
    let engine = engine_for([compiled]);
    let frame = on_big_stack(|| compiled.lf.clone().collect_with_engine(engine))?;
    finish(&compiled.shape, frame.unwrap_single())
}

/// Runs `f` on a thread with a 256 MB stack (reserved, not committed):
/// polars optimises a plan by recursing over it, and the plans of queries
/// with many measures (each a join or window) are deep, deeper still in a
/// debug build; a thread's default stack can overflow on them.
pub fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("tradeql-collect".into())
            .stack_size(256 << 20)
            .spawn_scoped(scope, f)
            .expect("start a thread");
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Stored rows up to which polars reads a plan's rows with its in-memory
/// engine: it adds every sum in one order (the same bytes on every run),
/// where the streaming engine adds a group's parts in the order its threads
/// finish; past this, the streaming engine's lower memory counts more.
pub const IN_MEMORY_ROWS: u64 = 1 << 20;

/// The polars engine for `plans`: `TRADEQL_ENGINE` if set; else the in-memory
/// engine when the aggregate pushdown reads every stored row (what is left
/// are aggregated rows, where the streaming engine's set-up costs more than
/// it saves) or the rows read are at most [`IN_MEMORY_ROWS`]; else the
/// streaming engine.
pub fn engine_for<'a>(plans: impl IntoIterator<Item = &'a Compiled>) -> Engine {
    let small = |c: &Compiled| c.rows_pushed_down || c.rows_stored <= IN_MEMORY_ROWS;
    if std::env::var_os("TRADEQL_ENGINE").is_none() && plans.into_iter().all(small) {
        return Engine::InMemory;
    }
    engine()
}

/// A collected result of `compiled`: the warnings read, the internal columns dropped.
pub fn finish(shape: &ResultShape, frame: DataFrame) -> Result<Outcome> {
    let mut frame = frame;
    let text = |v: AnyValue| match v {
        AnyValue::Date(d) => Period::from_days(d, Frequency::Month).to_string(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Null => "null".to_string(),
        other => other.to_string(),
    };
    // The label columns found once, each read through its type (a rollup
    // query flags thousands of rows; asking a column for the wrong type
    // builds an error each time).
    let labelled: Vec<(bool, Column)> = shape
        .time_label
        .iter()
        .map(|c| (true, c))
        .chain(shape.key_labels.iter().map(|c| (false, c)))
        .filter_map(|(is_time, c)| frame.column(c).ok().map(|c| (is_time, c.clone())))
        .collect();
    let cells: Vec<(bool, LabelCells)> = labelled.iter().map(|(is_time, c)| (*is_time, LabelCells::of(c))).collect();
    // The rows come by period: the last period's text is kept.
    let last_period: std::cell::RefCell<Option<(i32, String)>> = Default::default();
    let period_text = |d: i32| -> String {
        let mut last = last_period.borrow_mut();
        match &*last {
            Some((at, text)) if *at == d => text.clone(),
            _ => {
                let t = text(AnyValue::Date(d));
                *last = Some((d, t.clone()));
                t
            }
        }
    };
    let label_of = |i: usize, with_keys: bool| -> String {
        let mut label = String::new();
        for (is_time, c) in &cells {
            if !is_time && !with_keys {
                continue;
            }
            let part = match c {
                LabelCells::Text(s) => std::borrow::Cow::Borrowed(s.get(i).unwrap_or("null")),
                LabelCells::Days(d) => d.get(i).map_or("null".into(), |d| period_text(d).into()),
                LabelCells::Other(c) => c.get(i).map(text).unwrap_or_default().into(),
            };
            if !part.is_empty() {
                if !label.is_empty() {
                    label.push(' ');
                }
                label.push_str(&part);
            }
        }
        label
    };
    let mut warnings = shape.known_warnings.clone();
    let mut notes = shape.known_notes.clone();
    for w in &shape.warnings {
        let column = frame.column(&w.column)?.clone();
        // The first labels (as many as a summary names) and how many differ.
        let mut periods: Vec<String> = Vec::new();
        let mut seen: PlHashSet<String> = PlHashSet::default();
        // The flagged rows, read from the typed column (a value at a time
        // through `get` was a few ms of a rollup query's 23,000 rows).
        let flagged: Vec<(usize, String)> = match (&w.kind, column.dtype()) {
            (WarningKind::Partial { expected, unit }, DataType::UInt32) => column
                .u32()?
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.filter(|n| n < expected).map(|n| (i, format!(" ({n} of {expected} {unit})"))))
                .collect(),
            (WarningKind::Partial { .. }, _) => Vec::new(),
            (_, DataType::Boolean) => column
                .bool()?
                .iter()
                .enumerate()
                .filter(|(_, b)| *b == Some(true))
                .map(|(i, _)| (i, String::new()))
                .collect(),
            _ => Vec::new(),
        };
        for (i, detail) in flagged {
            let with_keys = !matches!(w.kind, WarningKind::Partial { .. });
            let label = label_of(i, with_keys) + &detail;
            let first = (periods.len() < SUMMARY_NAMES).then(|| label.clone());
            if seen.insert(label)
                && let Some(first) = first
            {
                periods.push(first);
            }
        }
        if periods.is_empty() {
            continue;
        }
        let list = summarise_first(&periods, seen.len());
        match &w.kind {
            WarningKind::MissingBase { measure, offset } => {
                warnings.push(format!("{measure} is null for {list}: the period {offset} is missing"))
            }
            WarningKind::BaseFiltered { measure, offset, filter } => warnings.push(format!(
                "{measure} is null for {list}: the period {offset} is stored, but the filter `{filter}` \
                 leaves it out (measures compare only the periods the filters keep; widen the filter \
                 before `by` and filter the shown periods after it)"
            )),
            WarningKind::Partial { .. } => notes.push(format!("partial period: {list}")),
            WarningKind::Unequal { measure, offset, unit } => warnings.push(format!(
                "{measure} for {list} compares periods that hold different numbers of {unit}: \
                 the period {offset} is longer or shorter (a partial period)"
            )),
            WarningKind::NoTotalRow { measure, row } => {
                warnings.push(format!("{measure} is null for {list}: no stored row has {row} in that period"))
            }
            WarningKind::Others { measures } => warnings.push(format!(
                "for \"others\" ({list}), {measures}: null, as its members change from period to period; \
                 each member's own figures are computed on its full series"
            )),
            WarningKind::YtdGap { measure } => {
                warnings.push(format!("{measure} for {list} sums a year with a missing period"))
            }
        }
    }
    let hidden: Vec<String> =
        frame.get_column_names().iter().filter(|n| n.starts_with("__")).map(|n| n.to_string()).collect();
    for h in hidden {
        frame = frame.drop(&h)?;
    }
    for (dim, codes) in &shape.left_out {
        if dim == "flow" {
            notes.push(format!(
                "left out the rows of flow ({}), which are parts of other flows (re-exports of exports, \
                 re-imports of imports) or their total, so that no sum counts a flow twice; a `where` \
                 before `by` naming flow codes selects them (where flow = \"{}\")",
                listed(codes),
                codes[0]
            ));
            continue;
        }
        notes.push(format!(
            "left out the aggregate rows of {dim} ({}), so that no sum adds them to their members; \
             a `where` before `by` naming {dim} codes selects them (where {dim} = \"{}\")",
            listed(codes),
            codes.iter().find(|c| *c == "WLD" || *c == "TOTAL").unwrap_or(&codes[0])
        ));
    }
    if let Some(time) = &shape.time_label {
        for alias in &shape.group_keys {
            notes.extend(groups_missing(&frame, time, alias, &text)?);
        }
    }
    for (dim, codes) in &shape.summed_together {
        if dim == "flow" {
            notes.push(format!(
                "the filters select flows that overlap ({}: re-exports are part of exports, re-imports of \
                 imports, total is exports plus imports): a sum over flow adds them together",
                summarise(codes)
            ));
            continue;
        }
        notes.push(format!(
            "the filters select aggregate rows of {dim} ({}) beside their members or beside each other (one \
             may contain another): a sum over {dim}, or a share's total, adds them together",
            summarise(codes)
        ));
    }
    if frame.height() == 0 && !shape.left_out.is_empty() {
        let dims: Vec<&str> = shape.left_out.iter().map(|(d, _)| d.as_str()).collect();
        warnings.push(format!(
            "the result is empty: every row that passed the query's filters is an aggregate row of {}, \
             which the query left out; name the codes in a `where` before `by` to select them",
            dims.join(" or ")
        ));
    }
    // The same measure computed twice (inside another) warns once.
    let mut seen = std::collections::HashSet::new();
    warnings.retain(|w| seen.insert(w.clone()));
    let mut seen = std::collections::HashSet::new();
    notes.retain(|n| seen.insert(n.clone()));
    Ok(Outcome { frame, warnings, notes })
}

/// Notes on the groups of column `alias` that have no row in some periods of
/// the result that other groups have: none of their members has data then
/// (or none was a member yet).
fn groups_missing(
    frame: &DataFrame,
    time: &str,
    alias: &str,
    text: &dyn Fn(AnyValue) -> String,
) -> Result<Vec<String>> {
    let (periods, groups) = (frame.column(time)?, frame.column(alias)?);
    let mut all: std::collections::BTreeSet<String> = Default::default();
    let mut by_group: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for i in 0..frame.height() {
        let (p, g) = (text(periods.get(i)?), text(groups.get(i)?));
        all.insert(p.clone());
        by_group.entry(g).or_default().insert(p);
    }
    Ok(by_group
        .iter()
        .filter(|(g, seen)| seen.len() < all.len() && g.as_str() != "others")
        .map(|(g, seen)| {
            let missing: Vec<String> = all.difference(seen).cloned().collect();
            format!(
                "group {g} ({alias}) has no row for {}: none of its members has data then, or none was a member",
                summarise(&missing)
            )
        })
        .collect())
}

/// Codes in a note: all of them up to a dozen, the world and total first.
fn listed(codes: &[String]) -> String {
    let mut sorted: Vec<&String> = codes.iter().filter(|c| *c == "WLD" || *c == "TOTAL").collect();
    sorted.extend(codes.iter().filter(|c| *c != "WLD" && *c != "TOTAL"));
    let shown: Vec<&str> = sorted.iter().take(12).map(|c| c.as_str()).collect();
    if sorted.len() > 12 { format!("{} and {} more", shown.join(", "), sorted.len() - 12) } else { shown.join(", ") }
}

/// A label column, typed once.
enum LabelCells<'c> {
    Text(&'c StringChunked),
    Days(&'c Int32Chunked),
    Other(&'c Column),
}

impl<'c> LabelCells<'c> {
    fn of(c: &'c Column) -> LabelCells<'c> {
        match c.dtype() {
            DataType::String => c.str().map_or(LabelCells::Other(c), LabelCells::Text),
            DataType::Date => c.date().map_or(LabelCells::Other(c), |d| LabelCells::Days(d.physical())),
            _ => LabelCells::Other(c),
        }
    }
}

/// How many labels a summary of flagged rows names at most.
const SUMMARY_NAMES: usize = 6;

/// Labels as a list: all of them up to [`SUMMARY_NAMES`], else the first
/// five and how many more.
fn summarise(items: &[String]) -> String {
    summarise_first(items, items.len())
}

/// [`summarise`] of `count` distinct labels, of which only the `first` are at hand.
fn summarise_first(first: &[String], count: usize) -> String {
    if count <= SUMMARY_NAMES {
        first.join(", ")
    } else {
        format!("{} and {} more", first[..SUMMARY_NAMES - 1].join(", "), count - (SUMMARY_NAMES - 1))
    }
}

/// A failure to write standard output, as an error (a broken pipe ends the
/// process quietly before this: SIGPIPE keeps its default action).
pub fn stdout_error(e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        Error::new(ErrorKind::Io, "cannot write to standard output: the disk is full")
    } else {
        Error::new(ErrorKind::Io, format!("cannot write to standard output: {e}"))
    }
}

/// Refuses to write the result over `input` (the query file itself).
pub fn refuse_overwriting(out: &Path, input: &Path) -> Result<()> {
    if crate::store::same_file(out, input) {
        return Err(Error::usage(format!("{} is the query file: the result would overwrite it", out.display())));
    }
    Ok(())
}

/// Where `--out` writes, once its path is looked at.
enum Destination {
    /// A regular file (or none yet): written beside it, then renamed over it.
    File(std::path::PathBuf),
    /// A device, pipe or socket (`/dev/null`, a FIFO): written to as it is,
    /// never replaced.
    Stream(std::path::PathBuf),
}

/// Looks at `path` without changing it: a link is followed to its target (the
/// target is replaced, not the link); a folder is refused.
fn destination(path: &Path) -> Result<Destination> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(Error::usage(format!("--out {}: the link points to nothing", path.display())));
            }
            Ok(Destination::File(path.to_path_buf()))
        }
        Err(e) => Err(Error::io("cannot write", path, e)),
        // A regular file, or a link to one: the target is replaced, not the link.
        Ok(m) if m.is_file() => {
            Ok(Destination::File(std::fs::canonicalize(path).map_err(|e| Error::io("cannot write", path, e))?))
        }
        Ok(m) if m.is_dir() => Err(Error::usage(format!("--out {} is a folder: give a file name", path.display()))),
        // `/dev/null`, a FIFO, `/dev/stdout` on a pipe: written through as it is.
        Ok(m) if m.file_type().is_char_device() || m.file_type().is_fifo() || m.file_type().is_socket() => {
            Ok(Destination::Stream(path.to_path_buf()))
        }
        Ok(_) => Err(Error::usage(format!("--out {} is neither a file nor a stream", path.display()))),
    }
}

/// What a Parquet result carries beside its columns (key `tradeql`, JSON):
/// the dataset, its currency and units, and how each shown column is meant
/// (`pct` is a ratio shown as a percentage, `trillion` a value shown in
/// trillions): the numbers themselves are never scaled.
/// With the portable `ARROW:schema` of `schema` (see
/// [`crate::store::portable_arrow_schema`]).
pub fn result_metadata(plan: &Plan, schema: &Schema) -> KeyValueMetadata {
    KeyValueMetadata::from_static(vec![
        crate::store::portable_arrow_schema(schema),
        ("tradeql".to_string(), result_metadata_text(plan)),
    ])
}

/// The JSON of [`result_metadata`] (also an Arrow result's schema metadata).
pub fn result_metadata_text(plan: &Plan) -> String {
    let formats: serde_json::Map<String, serde_json::Value> = plan
        .outputs
        .iter()
        .filter_map(|o| {
            let name = match o.format? {
                Format::Pct => "pct",
                Format::Pct2 => "pct",
                Format::Sci => "sci",
                Format::Pp => "pp",
                Format::Int => "int",
                Format::Scale(_, unit) => unit,
            };
            Some((o.name.clone(), serde_json::Value::from(name)))
        })
        .collect();
    let units: serde_json::Map<String, serde_json::Value> =
        plan.measure_units.iter().map(|(m, u)| (m.clone(), serde_json::Value::from(u.as_str()))).collect();
    let meta = serde_json::json!({
        "dataset": plan.dataset,
        "currency": plan.currency,
        "quantity_unit": plan.quantity_unit,
        "measure_units": units,
        "formats": formats,
    });
    meta.to_string()
}

/// Rows past which a table on a terminal is cut (`--all` prints them all;
/// files and pipes always get every row).
pub const TERMINAL_ROWS: usize = 200;

static PRINT_ALL: AtomicBool = AtomicBool::new(false);

/// `--all`: tables on a terminal are printed whole.
pub fn print_all(on: bool) {
    PRINT_ALL.store(on, Ordering::Relaxed);
}

/// Writes `frame` to `out` (or stdout, also for `--out -`) in `format`.
/// A regular file is written to a temporary name and renamed; a device or
/// pipe is written to directly. Every write is flushed and checked.
pub fn write(frame: &mut DataFrame, plan: &Plan, format: OutputFormat, out: Option<&Path>) -> Result<()> {
    use std::io::IsTerminal;
    match out {
        None => write_stdout(frame, plan, format, std::io::stdout().is_terminal()),
        Some(p) if p.as_os_str() == "-" => write_stdout(frame, plan, format, std::io::stdout().is_terminal()),
        Some(path) => match destination(path)? {
            Destination::Stream(target) => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(|e| Error::io("cannot open", &target, e))?;
                write_to(frame, plan, format, &mut file, false).map_err(|e| write_failed(e, &target))?;
                file.flush().map_err(|e| crate::error::writing(&target, e))
            }
            Destination::File(target) => {
                let mut tmp_name = target.file_name().unwrap_or_default().to_os_string();
                tmp_name.push(".tmp");
                let tmp = target.with_file_name(tmp_name);
                let result = (|| -> Result<()> {
                    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
                    write_to(frame, plan, format, &mut file, false).map_err(|e| write_failed(e, &target))?;
                    file.sync_all().map_err(|e| crate::error::writing(&target, e))?;
                    std::fs::rename(&tmp, &target).map_err(|e| Error::io("cannot write", &target, e))
                })();
                if result.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                result
            }
        },
    }
}

/// A failed write of the result to `target`: the user's mistakes as they
/// are, the rest as a write failure (a full disk said so).
fn write_failed(e: Error, target: &Path) -> Error {
    match e.kind {
        ErrorKind::Usage | ErrorKind::Query => e,
        _ => crate::error::writing(target, e),
    }
}

fn write_stdout(frame: &mut DataFrame, plan: &Plan, format: OutputFormat, terminal: bool) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    write_to(frame, plan, format, &mut stdout, terminal).map_err(|e| match e.kind {
        ErrorKind::Usage | ErrorKind::Query => e,
        _ => Error::new(ErrorKind::Io, format!("cannot write to standard output: {}", e.message)),
    })?;
    stdout.flush().map_err(stdout_error)
}

/// Writes `frame` in a machine format (or the table) to `w`.
pub fn write_frame<W: Write>(frame: &mut DataFrame, plan: &Plan, format: OutputFormat, w: &mut W) -> Result<()> {
    write_to(frame, plan, format, w, false)
}

fn write_to<W: Write>(
    frame: &mut DataFrame,
    plan: &Plan,
    format: OutputFormat,
    w: &mut W,
    terminal: bool,
) -> Result<()> {
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("cannot write the result: {e}"));
    match format {
        OutputFormat::Table if terminal && frame.height() > TERMINAL_ROWS && !PRINT_ALL.load(Ordering::Relaxed) => {
            let shown = TERMINAL_ROWS / 2;
            let mut text = table_within(&frame.head(Some(shown)), plan, terminal_width())?;
            text.push_str(&format!(
                "... {} more rows not shown ({} in all): --all prints them; a file or a pipe gets every row\n",
                frame.height() - shown,
                frame.height()
            ));
            w.write_all(text.as_bytes()).map_err(io)?;
        }
        OutputFormat::Table => {
            let fit = if terminal && !PRINT_ALL.load(Ordering::Relaxed) { terminal_width() } else { None };
            let text = table_within(frame, plan, fit)?;
            w.write_all(text.as_bytes()).map_err(io)?;
        }
        OutputFormat::Csv => CsvWriter::new(w).include_header(true).finish(&mut finite_only(frame)?)?,
        OutputFormat::Json => JsonWriter::new(w).with_json_format(JsonFormat::Json).finish(&mut finite_only(frame)?)?,
        OutputFormat::Parquet | OutputFormat::Arrow if terminal => {
            return Err(Error::usage(
                "parquet and arrow output is binary: give a file with --out, or pipe standard output",
            ));
        }
        OutputFormat::Parquet => {
            ParquetWriter::new(w).with_key_value_metadata(Some(result_metadata(plan, frame.schema()))).finish(frame)?;
        }
        OutputFormat::Arrow => {
            // Plain strings, not views: readable by pyarrow 14 too.
            let mut writer = IpcWriter::new(w).with_compat_level(CompatLevel::oldest());
            let meta: std::collections::BTreeMap<PlSmallStr, PlSmallStr> =
                [("tradeql".into(), result_metadata_text(plan).into())].into_iter().collect();
            writer.set_custom_schema_metadata(Arc::new(meta));
            writer.finish(frame)?
        }
    }
    Ok(())
}

/// `frame` with infinite and NaN numbers (a division by zero: growth from a
/// zero base) made null, so that CSV and JSON write them alike (JSON has no
/// infinity; polars' CSV would write `inf`); a note on stderr names the
/// columns. Parquet, Arrow and the table keep them.
fn finite_only(frame: &DataFrame) -> Result<DataFrame> {
    let mut out = frame.clone();
    let mut replaced: Vec<String> = Vec::new();
    for c in frame.columns() {
        let Ok(values) = c.f64() else { continue };
        let bad = values.iter().filter(|v| v.is_some_and(|x| !x.is_finite())).count();
        if bad == 0 {
            continue;
        }
        let finite =
            Float64Chunked::from_iter_options(c.name().clone(), values.iter().map(|v| v.filter(|x| x.is_finite())));
        out.with_column(finite.into_column())?;
        replaced.push(format!("{} ({bad})", c.name()));
    }
    if !replaced.is_empty() {
        eprintln!(
            "note: infinite or NaN values (a division by zero, or a number past 1.8e308) written as null in CSV \
             and JSON: {}",
            replaced.join(", ")
        );
    }
    Ok(out)
}

/// The display format of each output column.
fn format_of(plan: &Plan, name: &str) -> Option<Format> {
    plan.outputs.iter().find(|o| o.name == name).and_then(|o| o.format)
}

fn group_thousands(int_part: &str) -> String {
    let (sign, digits) = int_part.strip_prefix('-').map_or(("", int_part), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn number(v: f64, format: Option<Format>) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let fixed = |x: f64, decimals: usize| {
        let s = format!("{x:.decimals$}");
        match s.split_once('.') {
            Some((i, f)) => format!("{}.{f}", group_thousands(i)),
            None => group_thousands(&s),
        }
    };
    match format {
        Some(Format::Pct) => format!("{}%", fixed(v * 100.0, 1)),
        Some(Format::Pct2) => format!("{}%", fixed(v * 100.0, 2)),
        Some(Format::Sci) => format!("{v:.2e}"),
        Some(Format::Pp) => format!("{:+.2}", v),
        Some(Format::Scale(s, _)) => fixed(v / s, 2),
        Some(Format::Int) => fixed(v, 0),
        None => fixed(v, 2),
    }
}

/// The format of a number column the query gives none: whole numbers when
/// every value is one (counts, sums of whole values), else two decimals for
/// every value. Decided for the column, not for each value: a sum that is
/// whole from the rows and a last bit off from a rollup (or the other way)
/// prints as its neighbours do, and as the other path prints it.
fn whole_numbers(column: &Column) -> Option<Format> {
    if column.dtype().is_integer() {
        return Some(Format::Int);
    }
    let values = column.f64().ok()?;
    values.iter().flatten().filter(|x| x.is_finite()).all(|x| x.fract() == 0.0 && x.abs() < 1e15).then_some(Format::Int)
}

/// The result as an aligned text table.
pub fn table(frame: &DataFrame, plan: &Plan) -> Result<String> {
    table_within(frame, plan, None)
}

/// [`table`] no wider than `fit` display columns (see [`render`]).
pub fn table_within(frame: &DataFrame, plan: &Plan, fit: Option<usize>) -> Result<String> {
    let (headers, cells, right) = table_cells(frame, plan)?;
    Ok(render(&headers, &cells, &right, fit))
}

/// The cells of a result as the terminal table shows them: headers with
/// their units, each column's formatted cells, and whether it is a number
/// (aligned right).
pub type Cells = (Vec<String>, Vec<Vec<String>>, Vec<bool>);

/// The headers, cells and alignment of [`table`].
pub fn table_cells(frame: &DataFrame, plan: &Plan) -> Result<Cells> {
    let freq = match plan.time {
        Some(TimeKey::Month) => Frequency::Month,
        _ => plan.frequency,
    };
    let mut headers: Vec<String> = Vec::new();
    let mut cells: Vec<Vec<String>> = Vec::new();
    let mut right: Vec<bool> = Vec::new();
    for column in frame.columns() {
        let name = column.name().to_string();
        let format = format_of(plan, &name).or_else(|| whole_numbers(column));
        headers.push(match format {
            Some(Format::Pct | Format::Pct2) => format!("{name} %"),
            Some(Format::Pp) => format!("{name} pp"),
            Some(Format::Scale(_, unit)) => format!("{name} ({unit})"),
            _ => name.clone(),
        });
        let numeric = column.dtype().is_primitive_numeric();
        right.push(numeric);
        let mut col_cells = Vec::with_capacity(frame.height());
        for i in 0..frame.height() {
            let v = column.get(i)?;
            col_cells.push(match v {
                AnyValue::Null => "null".to_string(),
                AnyValue::Date(d) => Period::from_days(d, freq).to_string(),
                AnyValue::String(s) => s.to_string(),
                AnyValue::StringOwned(s) => s.to_string(),
                AnyValue::Boolean(b) => {
                    if b {
                        "yes".into()
                    } else {
                        "no".into()
                    }
                }
                AnyValue::Int32(n) if name == "year" => n.to_string(),
                other => match other.extract::<f64>() {
                    Some(x) => number(x, format),
                    None => other.to_string(),
                },
            });
        }
        cells.push(col_cells);
    }
    Ok((headers, cells, right))
}

/// The narrowest a text column is cut to when a table is fitted to a terminal.
const NARROWEST_TEXT: usize = 10;

/// The table as text; with `fit`, no wider than `fit` display columns: text
/// columns (names, codes) are cut, widest first, down to [`NARROWEST_TEXT`],
/// each cut cell ending in `…`; numbers are never cut; columns that still do
/// not fit are left out from the right, and a last line names them.
fn render(headers: &[String], cells: &[Vec<String>], right: &[bool], fit: Option<usize>) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .zip(cells)
        .map(|(h, c)| c.iter().map(|s| display_width(s)).chain([display_width(h)]).max().unwrap_or(0))
        .collect();
    let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
    let mut shown = headers.len();
    if let Some(limit) = fit {
        while total(&widths) > limit {
            let widest =
                (0..widths.len()).filter(|i| !right[*i] && widths[*i] > NARROWEST_TEXT).max_by_key(|i| widths[*i]);
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
        while shown > 1 && total(&widths[..shown]) > limit {
            shown -= 1;
        }
    }
    let cut = |s: &str, w: usize| -> String {
        if display_width(s) <= w {
            return s.to_string();
        }
        let mut out = String::new();
        for c in s.chars() {
            if display_width(&out) + display_width(&c.to_string()) + 1 > w {
                break;
            }
            out.push(c);
        }
        out.push('…');
        out
    };
    let widths = &widths[..shown];
    let mut out = String::new();
    let line = |out: &mut String, items: &[String]| {
        let parts: Vec<String> = items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // Padded by hand: a format width past 65,535 panics, and a cell may be that long.
                let s = &cut(s, widths[i]);
                let pad = " ".repeat(widths[i].saturating_sub(display_width(s)));
                if right[i] { format!("{pad}{s}") } else { format!("{s}{pad}") }
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &headers[..shown]);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    let rows = cells.first().map_or(0, Vec::len);
    for i in 0..rows {
        let row: Vec<String> = cells[..shown].iter().map(|c| c[i].clone()).collect();
        line(&mut out, &row);
    }
    if shown < headers.len() {
        out.push_str(&format!(
            "... {} not shown ({}): a wider terminal or --all shows them; a file or a pipe gets every column\n",
            match headers.len() - shown {
                1 => "1 column".to_string(),
                n => format!("{n} columns"),
            },
            headers[shown..].join(", ")
        ));
    }
    out
}

/// The display width of the terminal on standard output: `$COLUMNS`, else
/// what the terminal says; None when neither says.
fn terminal_width() -> Option<usize> {
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|n| *n > 0) {
        return Some(n);
    }
    // SAFETY: TIOCGWINSZ fills a winsize struct for a terminal; the result is checked.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// The polars engine queries run on: the streaming engine unless
/// `TRADEQL_ENGINE=in-memory` (kept for comparison).
pub fn engine() -> Engine {
    match std::env::var("TRADEQL_ENGINE").as_deref() {
        Ok("in-memory") => Engine::InMemory,
        _ => Engine::Streaming,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> (Vec<String>, Vec<Vec<String>>, Vec<bool>) {
        let headers = vec!["partner_name".to_string(), "value (billion)".into(), "share %".into()];
        let cells = vec![
            vec!["Lao People's Democratic Republic".to_string(), "中华人民共和国香港特别行政区".into()],
            vec!["1,234.50".to_string(), "98.10".into()],
            vec!["12.30%".to_string(), "0.80%".into()],
        ];
        (headers, cells, vec![false, true, true])
    }

    #[test]
    fn a_wide_table_is_fitted_by_cutting_names_never_numbers() {
        let (h, c, r) = grid();
        let whole = render(&h, &c, &r, None);
        assert!(whole.contains("Lao People's Democratic Republic"));
        let fitted = render(&h, &c, &r, Some(40));
        for line in fitted.lines() {
            assert!(display_width(line) <= 40, "{line:?} is {} wide", display_width(line));
        }
        assert!(fitted.contains("1,234.50") && fitted.contains("12.30%") && fitted.contains("0.80%"), "{fitted}");
        assert!(fitted.contains('…'), "{fitted}");
        // A CJK name is cut by display width (two columns a character).
        let cjk = fitted.lines().nth(3).unwrap();
        assert!(cjk.starts_with("中华人民") && !cjk.contains("香港特别"), "{cjk}");
    }

    #[test]
    fn cjk_names_keep_every_column_aligned() {
        let (h, c, r) = grid();
        let whole = render(&h, &c, &r, None);
        // Every line (header, rule, rows) ends at the same terminal column:
        // by characters, the lines with Chinese names would be shorter.
        let widths: Vec<usize> = whole.lines().map(display_width).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "{widths:?}\n{whole}");
        let chars: Vec<usize> = whole.lines().map(|l| l.chars().count()).collect();
        assert!(chars.windows(2).any(|w| w[0] != w[1]), "the grid has no wide character: {whole}");
    }

    #[test]
    fn columns_that_cannot_fit_are_left_out_and_named() {
        let (h, c, r) = grid();
        let fitted = render(&h, &c, &r, Some(24));
        assert!(fitted.contains("... 2 columns not shown (value (billion), share %)"), "{fitted}");
        for line in fitted.lines().take(4) {
            assert!(display_width(line) <= 24, "{line:?}");
        }
    }

    #[test]
    fn a_number_column_prints_its_values_with_the_same_decimals() {
        let shown = |c: Column| -> Vec<String> {
            let f = whole_numbers(&c);
            c.f64().unwrap().iter().map(|v| number(v.unwrap(), f)).collect()
        };
        // A sum that came out whole prints as its neighbours do: from a
        // rollup the same sum can be a last bit off a whole number.
        let mixed = Column::new("value".into(), [537_078_975_732.0, 265_866_432_560.69]);
        assert_eq!(shown(mixed), ["537,078,975,732.00", "265,866,432,560.69"]);
        let off = Column::new("value".into(), [537_078_975_732.000_06, 265_866_432_560.69]);
        assert_eq!(shown(off), ["537,078,975,732.00", "265,866,432,560.69"]);
        // Whole numbers throughout (counts, sums of whole values): no decimals.
        let whole = Column::new("rows".into(), [3.0, 1_200.0]);
        assert_eq!(shown(whole), ["3", "1,200"]);
        assert_eq!(whole_numbers(&Column::new("n".into(), [3i64, 4])), Some(Format::Int));
    }
}
