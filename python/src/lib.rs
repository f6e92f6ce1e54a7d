//! tradeql from Python: the `tradeql._tradeql` extension module.
//!
//! A thin layer over the tradeql library, in the CLI's place: each function
//! does what the command of the same name does and returns what it prints.
//! Results leave through the Arrow C stream interface (`__arrow_c_stream__`,
//! the Arrow PyCapsule protocol), so polars and pyarrow in Python read the
//! buffers tradeql computed, without a copy. The GIL is released while
//! tradeql works, and Ctrl-C stops a query through polars' own abort flag.
//! `tradeql/__init__.py` wraps this module in the Python API.

use polars::prelude::{CompatLevel, DataFrame, SchemaExt};
use polars_arrow::array::{Array, StructArray};
use polars_arrow::datatypes::{ArrowDataType, Field};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use std::path::{Path, PathBuf};
use tradeql::error::{Error, ErrorKind};
use tradeql::store::{Store, Vintage};

create_exception!(tradeql, TradeqlError, PyException, "An error of tradeql, rendered as the CLI renders it.");
create_exception!(tradeql, QueryError, TradeqlError, "A query is wrong: syntax, names, types or stages.");
create_exception!(tradeql, DataError, TradeqlError, "Input data or a mapping is wrong.");
create_exception!(tradeql, StoreError, TradeqlError, "The store is missing, damaged, locked or cannot be written.");
create_exception!(tradeql, UsageError, TradeqlError, "A call asks for something impossible.");

/// A tradeql error as a Python exception: the class by kind, `str()` as the
/// CLI prints it, and the parts as attributes (`file`, `line`, `column`,
/// `value`, `source_line`, `hints`, `message`, `kind`, `exit_code`).
fn py_error(py: Python<'_>, e: Error) -> PyErr {
    let text = e.to_string();
    let err = match e.kind {
        ErrorKind::Query => QueryError::new_err(text),
        ErrorKind::Input | ErrorKind::Mapping => DataError::new_err(text),
        ErrorKind::Store | ErrorKind::Locked | ErrorKind::Io | ErrorKind::NotFound => StoreError::new_err(text),
        ErrorKind::Usage => UsageError::new_err(text),
        _ => TradeqlError::new_err(text),
    };
    let value = err.value(py);
    let loc = &e.location;
    let (column, source_line) = match &loc.snippet {
        // A query error: the column is the marked character's.
        Some(s) => (Some(s.col.into_pyobject(py).map(|c| c.into_any().unbind())), Some(s.text.clone())),
        None => (loc.column.as_ref().map(|c| c.into_pyobject(py).map(|c| c.into_any().unbind())), None),
    };
    let set = |name: &str, v: Option<Py<PyAny>>| {
        let _ = value.setattr(name, v.unwrap_or_else(|| py.None()));
    };
    set("message", Some(e.message.clone().into_pyobject(py).unwrap().into_any().unbind()));
    set("kind", Some(format!("{:?}", e.kind).to_lowercase().into_pyobject(py).unwrap().into_any().unbind()));
    set("file", loc.file.as_ref().map(|f| f.display().to_string().into_pyobject(py).unwrap().into_any().unbind()));
    set("line", loc.line.map(|l| l.into_pyobject(py).unwrap().into_any().unbind()));
    set("column", column.and_then(Result::ok));
    set("value", loc.value.as_ref().map(|v| v.into_pyobject(py).unwrap().into_any().unbind()));
    set("source_line", source_line.map(|t| t.into_pyobject(py).unwrap().into_any().unbind()));
    set("hints", Some(e.hints.clone().into_pyobject(py).unwrap().into_any().unbind()));
    set("exit_code", Some(e.exit_code().into_pyobject(py).unwrap().into_any().unbind()));
    err
}

/// Runs `work` without the GIL, stopped by Ctrl-C: polars' abort flag is
/// raised by SIGINT while the work runs, and polars (and the aggregate
/// pushdown) check it in their loops. Then Python's own signal check raises
/// the KeyboardInterrupt.
fn detached<T: Send>(py: Python<'_>, work: impl FnOnce() -> tradeql::Result<T> + Send) -> PyResult<T> {
    let out = py.detach(|| polars_error::abort::catch_polars_abort(std::panic::AssertUnwindSafe(work)));
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(py_error(py, e)),
        Err(polars_error::abort::QueryAborted::KeyboardInterrupt) => {
            py.check_signals()?;
            Err(PyKeyboardInterrupt::new_err("the query was stopped"))
        }
        Err(polars_error::abort::QueryAborted::OocOutOfDisk) => {
            Err(StoreError::new_err("the disk is full: polars could not spill the query's data"))
        }
    }
}

/// A query as the CLI reads it: a file (an existing path, or a name ending
/// in `.tql`), else query text.
fn query_file(query: &str) -> tradeql::Result<tradeql::lang::QueryFile> {
    let path = Path::new(query);
    if path.is_file() || (query.trim_end().ends_with(".tql") && !query.contains('\n')) {
        tradeql::lang::QueryFile::read(path)
    } else {
        tradeql::lang::QueryFile::from_command_line(query)
    }
}

/// `params` as `--param NAME=VALUE` takes them (names and values trimmed).
fn cli_params(params: &[(String, String)]) -> tradeql::Result<Vec<(String, String)>> {
    let raw: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tradeql::lang::parse_params(&raw)
}

/// The result of one query, and what it needs to show itself: the table,
/// page section and plan are made when asked for, from the first rows only
/// where a notebook shows them.
#[pyclass(module = "tradeql._tradeql", frozen)]
struct QueryResult {
    frame: DataFrame,
    /// The notes and warnings, as the CLI prints them.
    messages: Vec<String>,
    loaded: tradeql::lang::Loaded,
    /// The store read, for the names of codes.
    store: Store,
    query: tradeql::lang::QueryFile,
    params: Vec<(String, String)>,
    warnings: Vec<String>,
    notes: Vec<String>,
    /// Seconds tradeql took, from reading the query to the collected frame.
    seconds: f64,
}

/// The rows a table or a notebook shows of a long result (as the terminal).
const SHOWN_ROWS: usize = tradeql::run::TERMINAL_ROWS / 2;

impl QueryResult {
    /// The first rows shown, and a line for the rest.
    fn shown(&self) -> (DataFrame, Option<String>) {
        let n = self.frame.height();
        if n <= tradeql::run::TERMINAL_ROWS {
            return (self.frame.clone(), None);
        }
        (self.frame.head(Some(SHOWN_ROWS)), Some(format!("... {} more rows not shown ({n} in all)", n - SHOWN_ROWS)))
    }
}

#[pymethods]
impl QueryResult {
    /// The result as an Arrow C stream (the Arrow PyCapsule protocol): one
    /// record batch per chunk of the frame, its buffers shared, not copied.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // The schema tradeql gives is the only one offered.
        let _ = requested_schema;
        let stream = arrow_stream(&self.frame);
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    /// The notes and warnings of the run, as the CLI prints them.
    #[getter]
    fn messages(&self) -> Vec<String> {
        self.messages.clone()
    }

    #[getter]
    fn dataset(&self) -> String {
        self.loaded.manifest.dataset.clone()
    }

    /// The version of the dataset the query read.
    #[getter]
    fn version(&self) -> u64 {
        self.loaded.manifest.version
    }

    /// Seconds tradeql took, from reading the query to the collected frame.
    #[getter]
    fn seconds(&self) -> f64 {
        self.seconds
    }

    /// The result as the terminal shows it (names, units, formats; the first
    /// rows of a long one).
    fn table(&self, py: Python<'_>) -> PyResult<String> {
        let (rows, more) = self.shown();
        detached(py, || {
            let mut text = tradeql::run::table(&rows, &self.loaded.plan)?;
            if let Some(more) = more {
                text.push_str(&more);
                text.push('\n');
            }
            Ok(text)
        })
    }

    /// The result as a notebook shows it: the release page's section (title,
    /// warnings, the table with units, the chart when the query has a
    /// `chart` stage), of the first rows of a long result.
    fn html(&self, py: Python<'_>) -> PyResult<String> {
        let (rows, more) = self.shown();
        detached(py, || {
            let plan = &self.loaded.plan;
            let label = self.query.path.display().to_string();
            let version = self.loaded.manifest.version;
            let mut entry = tradeql::report::entry_of(
                "result",
                (&label, &self.query.text),
                &self.params,
                plan,
                version,
                &rows,
                &self.store,
                plan.chart.is_some(),
            )?;
            entry.warnings = self.warnings.clone();
            entry.notes = self.notes.clone();
            entry.notes.extend(more);
            Ok(tradeql::report::fragment(&entry))
        })
    }

    /// tradeql's plan and polars' optimised plan, as `tradeql explain` prints them.
    fn explain(&self, py: Python<'_>) -> PyResult<String> {
        detached(py, || tradeql::run::explain(&self.loaded))
    }

    fn __len__(&self) -> usize {
        self.frame.height()
    }

    /// The address of the values of a Float64 column's first chunk, as
    /// tradeql holds it: what shows that Python reads these very buffers.
    fn buffer_address(&self, column: &str) -> PyResult<usize> {
        let values = self
            .frame
            .column(column)
            .and_then(|c| c.as_materialized_series().f64().cloned())
            .map_err(|e| UsageError::new_err(format!("{column}: {e}")))?;
        let chunk = values.downcast_iter().next().ok_or_else(|| UsageError::new_err("no rows"))?;
        Ok(chunk.values().as_ptr() as usize)
    }
}

/// The frame as an Arrow C stream of struct arrays (one per chunk).
fn arrow_stream(frame: &DataFrame) -> polars_arrow::ffi::ArrowArrayStream {
    let mut frame = frame.clone();
    frame.align_chunks_par();
    let schema = frame.schema().to_arrow(CompatLevel::newest());
    let fields: Vec<Field> = schema.iter_values().cloned().collect();
    let dtype = ArrowDataType::Struct(fields.clone());
    let height = frame.height();
    let batches: Vec<Box<dyn Array>> = frame
        .iter_chunks(CompatLevel::newest(), false)
        .map(|batch| {
            let len = batch.len();
            let (_, arrays) = batch.into_schema_and_arrays();
            Box::new(StructArray::new(dtype.clone(), len, arrays, None)) as Box<dyn Array>
        })
        .collect();
    // A result with no rows still has its columns.
    let batches = if batches.is_empty() && height == 0 {
        let empty: Vec<Box<dyn Array>> =
            fields.iter().map(|f| polars_arrow::array::new_empty_array(f.dtype.clone())).collect();
        vec![Box::new(StructArray::new(dtype.clone(), 0, empty, None)) as Box<dyn Array>]
    } else {
        batches
    };
    let field = Field::new("".into(), dtype, false);
    polars_arrow::ffi::export_iterator(Box::new(batches.into_iter().map(Ok)), field)
}

/// Runs one query, as `tradeql run` does.
#[pyfunction]
#[pyo3(signature = (query, store="store".to_string(), params=Vec::new(), engine=None, as_of_version=None, as_of=None))]
fn run(
    py: Python<'_>,
    query: String,
    store: String,
    params: Vec<(String, String)>,
    engine: Option<String>,
    as_of_version: Option<u64>,
    as_of: Option<String>,
) -> PyResult<QueryResult> {
    detached(py, move || {
        let started = std::time::Instant::now();
        let file = query_file(&query)?;
        let store =
            tradeql::run::store_for(&file, Path::new(&store), Vintage::chosen(as_of_version, as_of.as_deref())?)?;
        let engine = match engine.as_deref() {
            None | Some("polars") => None,
            Some("duckdb") => Some((tradeql::sql::Dialect::Duckdb, Default::default())),
            Some("spark") => Some((tradeql::sql::Dialect::Spark, Default::default())),
            Some(other) => return Err(Error::usage(format!("engine is polars, duckdb or spark, not {other:?}"))),
        };
        let params = cli_params(&params)?;
        let (loaded, outcome) = tradeql::run::query(&file, &store, &params, engine.as_ref())?;
        Ok(QueryResult {
            messages: tradeql::run::messages(&loaded, &outcome),
            warnings: outcome.warnings,
            notes: outcome.notes,
            frame: outcome.frame,
            loaded,
            store,
            query: file,
            params,
            seconds: started.elapsed().as_secs_f64(),
        })
    })
}

/// The SQL of a query for Spark or DuckDB, as `tradeql sql` prints it.
#[pyfunction]
#[pyo3(signature = (query, store="store".to_string(), dialect="spark".to_string(), params=Vec::new(), store_uri=None))]
fn sql(
    py: Python<'_>,
    query: String,
    store: String,
    dialect: String,
    params: Vec<(String, String)>,
    store_uri: Option<String>,
) -> PyResult<String> {
    detached(py, move || {
        let dialect = match dialect.as_str() {
            "spark" => tradeql::sql::Dialect::Spark,
            "duckdb" => tradeql::sql::Dialect::Duckdb,
            other => return Err(Error::usage(format!("dialect is spark or duckdb, not {other:?}"))),
        };
        let file = query_file(&query)?;
        let store = tradeql::run::store_for(&file, Path::new(&store), None)?;
        let loaded = tradeql::lang::load(&file, &store, &cli_params(&params)?)?;
        if loaded.adhoc.is_some() {
            return Err(Error::usage("SQL for `from \"FILE\"` would name no file: ingest the file into a store first"));
        }
        Ok(tradeql::sql::compile_loaded(&loaded, store.root(), dialect, store_uri.as_deref())?.text)
    })
}

/// Runs a batch job, as `tradeql batch` does; returns the run manifest
/// (`run.json`) as JSON text.
#[pyfunction]
#[pyo3(signature = (job, incremental=false, report=None))]
fn batch(py: Python<'_>, job: String, incremental: bool, report: Option<String>) -> PyResult<String> {
    detached(py, move || {
        let path = PathBuf::from(&job);
        let file = tradeql::batch::JobFile::load(&path)?;
        let opts =
            tradeql::batch::BatchOptions { incremental, report: report.map(PathBuf::from), ..Default::default() };
        let manifest = tradeql::batch::run_job(&path, &file, &opts, &mut |_| {})?;
        Ok(serde_json::to_string_pretty(&manifest)?)
    })
}

/// A store: its datasets, what it holds, and the commands that change it.
#[pyclass(module = "tradeql._tradeql", frozen)]
struct Store_ {
    path: PathBuf,
}

#[pymethods]
impl Store_ {
    #[new]
    fn new(path: String) -> Self {
        Store_ { path: PathBuf::from(path) }
    }

    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// The names of the datasets, sorted.
    fn datasets(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let path = self.path.clone();
        detached(py, move || Store::open_existing(path)?.datasets())
    }

    /// What `tradeql info` prints (with `verify`, after checking every file;
    /// a problem found is a StoreError).
    #[pyo3(signature = (verify=false))]
    fn info(&self, py: Python<'_>, verify: bool) -> PyResult<String> {
        let path = self.path.clone();
        detached(py, move || {
            let report = tradeql::info::info(&Store::open_existing(path)?, verify, false)?;
            match &report.problems {
                Some(problems) if !problems.is_empty() => {
                    Err(Error::store(format!("{}{} problems found", report.text, problems.len())))
                }
                _ => Ok(report.text),
            }
        })
    }

    /// Checks every file against the manifests (`tradeql info --verify`).
    fn verify(&self, py: Python<'_>) -> PyResult<String> {
        self.info(py, true)
    }

    /// Ingests files into a dataset, as `tradeql ingest` does; returns its
    /// report and its warnings.
    #[pyo3(signature = (files, dataset=None, mapping=None, currency=None, quantity_unit=None, rejects=None, dry_run=false, wait=false))]
    #[allow(clippy::too_many_arguments)]
    fn ingest(
        &self,
        py: Python<'_>,
        files: Vec<String>,
        dataset: Option<String>,
        mapping: Option<String>,
        currency: Option<String>,
        quantity_unit: Option<String>,
        rejects: Option<String>,
        dry_run: bool,
        wait: bool,
    ) -> PyResult<(String, Vec<String>)> {
        let opts = tradeql::ingest::IngestOptions {
            store: self.path.clone(),
            dataset,
            sources: files.into_iter().map(PathBuf::from).collect(),
            mapping: mapping.map(PathBuf::from),
            currency,
            quantity_unit,
            rejects: rejects.map(PathBuf::from),
            dry_run,
            wait,
            workers: None,
            progress: false,
            timings: false,
            input_format: None,
            compression: None,
        };
        detached(py, move || {
            let report = tradeql::ingest::ingest(&opts)?;
            Ok((report.to_string(), report.warnings.clone()))
        })
    }

    /// Stores a reference group table, as `tradeql groups add` does.
    #[pyo3(signature = (name, file, of, strict=false, wait=false))]
    fn groups_add(
        &self,
        py: Python<'_>,
        name: String,
        file: String,
        of: String,
        strict: bool,
        wait: bool,
    ) -> PyResult<(String, Vec<String>)> {
        let path = self.path.clone();
        detached(py, move || {
            let report = tradeql::groups::add(&path, &name, &of, Path::new(&file), wait, strict)?;
            Ok((report.to_string(), report.warnings.clone()))
        })
    }

    /// Stores the names of codes, as `tradeql names add` does.
    #[pyo3(signature = (file, of, code, name, wait=false))]
    fn names_add(
        &self,
        py: Python<'_>,
        file: String,
        of: String,
        code: String,
        name: String,
        wait: bool,
    ) -> PyResult<String> {
        let path = self.path.clone();
        detached(py, move || {
            Ok(tradeql::groups::add_names(&path, &of, Path::new(&file), &code, &name, wait)?.to_string())
        })
    }

    /// Keeps a rollup of a dataset, as `tradeql rollup add` does.
    #[pyo3(signature = (dataset, by, name=None, wait=false))]
    fn rollup_add(
        &self,
        py: Python<'_>,
        dataset: String,
        by: Vec<String>,
        name: Option<String>,
        wait: bool,
    ) -> PyResult<String> {
        let path = self.path.clone();
        detached(py, move || Ok(tradeql::rollup::add(&path, &dataset, &by, name.as_deref(), wait)?.to_string()))
    }

    /// Drops a rollup, as `tradeql rollup remove` does; returns the new version.
    #[pyo3(signature = (dataset, name, wait=false))]
    fn rollup_remove(&self, py: Python<'_>, dataset: String, name: String, wait: bool) -> PyResult<u64> {
        let path = self.path.clone();
        detached(py, move || tradeql::rollup::remove(&path, &dataset, &name, wait))
    }

    /// The rollups that would answer these saved queries (files or folders),
    /// as `tradeql rollup advise` prints them.
    #[pyo3(signature = (queries, params=Vec::new()))]
    fn rollup_advise(&self, py: Python<'_>, queries: Vec<String>, params: Vec<(String, String)>) -> PyResult<String> {
        let path = self.path.clone();
        detached(py, move || {
            let store = tradeql::store::Store::open_existing(&path)?;
            let paths: Vec<PathBuf> = queries.iter().map(PathBuf::from).collect();
            Ok(tradeql::rollup::advise(&store, &paths, &cli_params(&params)?)?.to_string())
        })
    }

    /// Stores monthly exchange rates, as `tradeql rates add` does (the file
    /// replaces the store's rates table).
    #[pyo3(signature = (file, wait=false))]
    fn rates_add(&self, py: Python<'_>, file: String, wait: bool) -> PyResult<String> {
        let path = self.path.clone();
        detached(py, move || Ok(tradeql::rates::add(&path, Path::new(&file), wait)?.to_string()))
    }
}

#[pymodule]
fn _tradeql(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // SIGINT raises polars' abort flag while a query runs, then Python's handler.
    polars_error::abort::register_polars_abort_mechanism();
    let py = m.py();
    m.add("TradeqlError", py.get_type::<TradeqlError>())?;
    m.add("QueryError", py.get_type::<QueryError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("UsageError", py.get_type::<UsageError>())?;
    m.add_class::<QueryResult>()?;
    m.add_class::<Store_>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(sql, m)?)?;
    m.add_function(wrap_pyfunction!(batch, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
