//! Running compiled SQL on another engine: Spark (through `spark-submit`,
//! local mode or a cluster) or DuckDB (through its Python package).
//!
//! tradeql writes the statements and a small runner script
//! (`assets/sql_runner.py`) to a temporary directory and starts the engine once
//! for all of them, so a batch of statements pays for one JVM start. Each result
//! comes back as JSON lines and is turned into a polars frame with the types the
//! polars backend gives the same query (dates, integers and counts included),
//! so a result prints, writes and warns exactly like a polars run.

use super::Dialect;
use crate::error::{Error, Result};
use polars::prelude::*;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const RUNNER: &str = include_str!("../../assets/sql_runner.py");

/// Where and how to run.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Spark master URL (`local[*]` when not given): `spark://host:7077`, `yarn`, ...
    pub master: Option<String>,
    /// The spark-submit to run (default: $TRADEQL_SPARK_SUBMIT, else the PATH's).
    pub spark_submit: Option<PathBuf>,
    /// The Python with duckdb (default: $TRADEQL_PYTHON, else python3).
    pub python: Option<PathBuf>,
    /// Run each statement this many more times after the first (for benchmarks).
    pub repeat: usize,
}

/// One statement to run and the schema its result must have.
pub struct Statement {
    pub sql: String,
    pub schema: Schema,
}

/// A statement's result on the engine.
pub struct EngineResult {
    pub frame: DataFrame,
    /// Time the engine spent on each run of the statement (collect included),
    /// without its start-up: the first run, then the repeats.
    pub times: Vec<f64>,
}

/// The results of one engine session.
pub struct EngineRun {
    pub results: Vec<Result<EngineResult>>,
    /// Wall time of the whole session, engine start-up included.
    pub seconds: f64,
    /// Peak resident memory of the engine's process (Spark's JVM), when known.
    pub peak_mb: Option<f64>,
}

/// Runs `statements` on the engine of `dialect`, in one session.
pub fn run(dialect: Dialect, statements: &[Statement], options: &EngineOptions) -> Result<EngineRun> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temporary directory", Path::new("."), e))?;
    let runner = dir.path().join("tradeql_sql_runner.py");
    std::fs::write(&runner, RUNNER).map_err(|e| Error::io("cannot write", &runner, e))?;
    let outputs: Vec<PathBuf> = (0..statements.len()).map(|i| dir.path().join(format!("result{i}.jsonl"))).collect();
    let report = dir.path().join("report.json");
    let (mut command, master) = match dialect {
        Dialect::Spark => spark_command(options)?,
        Dialect::Duckdb => (duckdb_command(options)?, None),
    };
    let job = serde_json::json!({
        "engine": dialect.name(),
        "master": master,
        "report": report,
        "repeat": options.repeat,
        "queries": statements.iter().zip(&outputs).map(|(s, out)| serde_json::json!({"sql": s.sql, "out": out})).collect::<Vec<_>>(),
    });
    let job_file = dir.path().join("job.json");
    std::fs::write(&job_file, serde_json::to_vec(&job)?).map_err(|e| Error::io("cannot write", &job_file, e))?;
    command.arg(&runner).arg(&job_file);
    let start = Instant::now();
    let out = command.output().map_err(|e| Error::io("cannot start", Path::new(command.get_program()), e))?;
    let seconds = start.elapsed().as_secs_f64();
    if !out.status.success() || !report.exists() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(12)..].join("\n");
        let mut e = Error::usage(format!("{} failed ({}):\n{tail}", dialect.name(), out.status));
        if tail.contains("JAVA_HOME") || tail.contains("java: not found") || tail.contains("No such file") {
            e = e.hint("Spark needs Java 17 or newer: install a JDK and set JAVA_HOME");
        }
        return Err(e);
    }
    let text = std::fs::read(&report).map_err(|e| Error::io("cannot read", &report, e))?;
    let report: serde_json::Value = serde_json::from_slice(&text)?;
    let statuses = report["queries"].as_array().cloned().unwrap_or_default();
    let results = statements
        .iter()
        .zip(&outputs)
        .zip(statuses)
        .map(|((s, path), status)| {
            if status["ok"] != true {
                return Err(Error::internal(format!(
                    "{} refused the SQL tradeql compiled: {}",
                    dialect.name(),
                    status["error"].as_str().unwrap_or("no message")
                )));
            }
            let frame = read_result(path, &s.schema)?;
            let times = status["times"].as_array().map(|t| t.iter().filter_map(|x| x.as_f64()).collect());
            Ok(EngineResult { frame, times: times.unwrap_or_default() })
        })
        .collect();
    Ok(EngineRun { results, seconds, peak_mb: report["peak_mb"].as_f64() })
}

/// `spark-submit` from $TRADEQL_SPARK_SUBMIT or the PATH. A pip-installed
/// pyspark finds its Spark home with the Python beside it, so that directory
/// goes first on the child's PATH. Without spark-submit, a Python that has
/// pyspark runs the script itself (pyspark starts its own JVM); the master then
/// goes to the script (the second value).
fn spark_command(options: &EngineOptions) -> Result<(Command, Option<String>)> {
    let master = options.master.clone().unwrap_or_else(|| "local[*]".to_string());
    let submit = options
        .spark_submit
        .clone()
        .or_else(|| std::env::var_os("TRADEQL_SPARK_SUBMIT").map(PathBuf::from))
        .or_else(|| on_path("spark-submit"));
    let Some(submit) = submit else {
        let python = options
            .python
            .clone()
            .or_else(|| std::env::var_os("TRADEQL_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("python3"));
        if Command::new(&python).args(["-c", "import pyspark"]).output().is_ok_and(|o| o.status.success()) {
            return Ok((Command::new(python), Some(master)));
        }
        return Err(Error::usage("Spark is not installed: no spark-submit on the PATH, and no pyspark for python3")
            .hint("install it with `python3 -m pip install pyspark` (it needs Java 17 or newer), or set TRADEQL_SPARK_SUBMIT to a spark-submit")
            .hint("scripts/setup-peers.sh installs it into .venv: then put .venv/bin on the PATH"));
    };
    let mut command = Command::new(&submit);
    if let Some(dir) = submit.parent() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs).unwrap_or(path));
        let python = dir.join("python3");
        if python.exists() && std::env::var_os("PYSPARK_PYTHON").is_none() {
            command.env("PYSPARK_PYTHON", &python);
        }
    }
    command.args(["--master", &master]);
    command.args(["--conf", "spark.ui.enabled=false", "--conf", "spark.sql.session.timeZone=UTC"]);
    command.args(["--conf", "spark.log.level=ERROR"]);
    Ok((command, None))
}

/// A Python with the duckdb package: $TRADEQL_PYTHON, else python3 on the PATH.
fn duckdb_command(options: &EngineOptions) -> Result<Command> {
    let python = options
        .python
        .clone()
        .or_else(|| std::env::var_os("TRADEQL_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let works = Command::new(&python).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if !works {
        return Err(Error::usage(format!("DuckDB is not installed for {}", python.display()))
            .hint("install it with `python3 -m pip install duckdb`, or set TRADEQL_PYTHON to a Python that has it"));
    }
    Ok(Command::new(python))
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(program)).find(|p| p.is_file())
}

/// A result file (JSON lines: the column names, then one array per row) as a
/// frame with the types of `schema`, column by column in order.
fn read_result(path: &Path, schema: &Schema) -> Result<DataFrame> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot read", path, e))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header = lines.next().transpose().map_err(|e| Error::io("cannot read", path, e))?.unwrap_or_default();
    let names: Vec<String> = serde_json::from_str(&header)?;
    if names.len() != schema.len() {
        return Err(Error::internal(format!(
            "the engine returned {} columns ({}), the polars backend {}",
            names.len(),
            names.join(", "),
            schema.len()
        )));
    }
    let mut cells: Vec<Vec<AnyValue<'static>>> = vec![Vec::new(); names.len()];
    let dtypes: Vec<&DataType> = schema.iter_values().collect();
    for line in lines {
        let line = line.map_err(|e| Error::io("cannot read", path, e))?;
        let row: Vec<serde_json::Value> = serde_json::from_str(&line)?;
        for (i, v) in row.iter().enumerate() {
            cells[i].push(any_value(v, dtypes[i])?);
        }
    }
    let columns: Vec<Column> = names
        .iter()
        .zip(cells)
        .zip(dtypes)
        .map(|((n, v), dt)| Series::from_any_values_and_dtype(n.into(), &v, dt, true).map(Column::from))
        .collect::<PolarsResult<_>>()?;
    let height = columns.first().map_or(0, |c| c.len());
    Ok(DataFrame::new(height, columns)?)
}

fn any_value(v: &serde_json::Value, dtype: &DataType) -> Result<AnyValue<'static>> {
    use serde_json::Value as J;
    let bad = || Error::internal(format!("the engine returned {v} for a {dtype} column"));
    Ok(match (v, dtype) {
        (J::Null, _) => AnyValue::Null,
        (J::String(s), DataType::Float64 | DataType::Float32) => AnyValue::Float64(match s.as_str() {
            "NaN" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            _ => return Err(bad()),
        }),
        (J::Number(n), DataType::Float64 | DataType::Float32) => AnyValue::Float64(n.as_f64().ok_or_else(bad)?),
        (J::Number(n), dt) if dt.is_integer() => {
            let i = n.as_i64().ok_or_else(bad)?;
            match dt {
                DataType::Int8 => AnyValue::Int8(i.try_into().map_err(|_| bad())?),
                DataType::Int16 => AnyValue::Int16(i.try_into().map_err(|_| bad())?),
                DataType::Int32 => AnyValue::Int32(i.try_into().map_err(|_| bad())?),
                DataType::UInt8 => AnyValue::UInt8(i.try_into().map_err(|_| bad())?),
                DataType::UInt16 => AnyValue::UInt16(i.try_into().map_err(|_| bad())?),
                DataType::UInt32 => AnyValue::UInt32(i.try_into().map_err(|_| bad())?),
                DataType::UInt64 => AnyValue::UInt64(i.try_into().map_err(|_| bad())?),
                _ => AnyValue::Int64(i),
            }
        }
        (J::Bool(b), DataType::Boolean) => AnyValue::Boolean(*b),
        (J::String(s), DataType::String) => AnyValue::StringOwned(s.as_str().into()),
        (J::String(s), DataType::Date) => {
            let p = s.split('-').map(|x| x.parse::<i32>()).collect::<std::result::Result<Vec<_>, _>>();
            match p.as_deref() {
                Ok([y, m, d]) => AnyValue::Date(crate::period::days_from_civil(*y, *m as u32, *d as u32)),
                _ => return Err(bad()),
            }
        }
        _ => return Err(bad()),
    })
}
