//! `tradeql bench`: how fast aggregation runs, side by side with peers.
//!
//! Each query is compiled (timed: tradeql's own planning), run once to warm
//! up, then run `runs` times, alternating with each peer (DuckDB through the
//! reference SQL, and the same questions hand-written in polars), so that a
//! noisy machine affects every engine alike. For each query the report gives
//! rows scanned, result rows, min and median wall time, rows per second, peak
//! memory, the ratio to each peer, and whether the peer returned the same rows
//! (values equal to 1e-9 relative).

pub mod handwritten;

use crate::error::{Error, Result};
use crate::lang::{self, QueryFile};
use crate::store::Store;
use polars::prelude::*;
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// The five queries of the benchmark, as shipped in `benches/queries/`.
pub const DEFAULT_QUERIES: [(&str, &str); 5] = [
    ("Q1", include_str!("../../benches/queries/q1_flow_growth.tql")),
    ("Q2", include_str!("../../benches/queries/q2_partner_growth.tql")),
    ("Q3", include_str!("../../benches/queries/q3_partner_share.tql")),
    ("Q4", include_str!("../../benches/queries/q4_chapter_ytd.tql")),
    ("Q5", include_str!("../../benches/queries/q5_group_contribution.tql")),
];
const PEER_SQL: &str = include_str!("../../benches/peer_queries.sql");
const PEER_SCRIPT: &str = include_str!("../../benches/peer_duckdb.py");

/// A column of tradeql's result and the peers' name for it.
type ColumnPair = (&'static str, &'static str);

/// How tradeql's columns line up with the peers' (keys, then values).
fn columns(id: &str) -> Option<(Vec<ColumnPair>, Vec<ColumnPair>)> {
    Some(match id {
        "Q1" => (vec![("year", "year"), ("flow", "flow")], vec![("value", "total"), ("value_yoy", "yoy")]),
        "Q2" => (vec![("year", "year"), ("partner", "partner")], vec![("value", "total"), ("value_yoy", "yoy")]),
        "Q3" => (
            vec![("year", "year"), ("partner", "partner")],
            vec![("value", "total"), ("value_share", "share"), ("value_share_pp", "share_pp")],
        ),
        "Q4" => (
            vec![("period", "period"), ("chapter", "chapter")],
            vec![("value", "total"), ("value_yoy", "yoy"), ("value_ytd", "ytd"), ("value_ytd_yoy", "ytd_yoy")],
        ),
        "Q5" => (
            vec![("year", "year"), ("grp", "group")],
            vec![("value", "total"), ("value_yoy", "yoy"), ("value_contribution", "contribution_pp")],
        ),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    Duckdb,
    Polars,
    /// tradeql's own SQL for the query on Spark (local mode): all runs in one
    /// session after tradeql's, JVM start-up excluded from the times.
    Spark,
}

pub struct BenchOptions {
    pub store: PathBuf,
    /// A folder of .tql files instead of the five default queries.
    pub queries: Option<PathBuf>,
    pub runs: usize,
    pub peers: Vec<Peer>,
    pub python: Option<PathBuf>,
    /// Also time each query's scan floor (rollups off): its column chunks
    /// read, decompressed and decoded with nothing aggregated.
    pub floor: bool,
}

/// A query's scan floor with rollups off: median seconds to read the column
/// chunks its pushdown passes need (as they read them), to read and
/// decompress them, and to read, decompress and decode them; the compressed
/// bytes they hold; and the query from the rows, timed alternately.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub read_s: f64,
    pub decompress_s: f64,
    pub decode_s: f64,
    pub bytes: u64,
    pub query_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub min_s: f64,
    pub median_s: f64,
    pub peak_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    pub peer: Peer,
    pub timing: Timing,
    /// tradeql median / peer median: below 1 means tradeql is faster.
    pub ratio: f64,
    pub same_rows: bool,
    pub difference: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub id: String,
    pub rows_scanned: u64,
    pub result_rows: usize,
    /// Lex, parse, resolve and compile to a polars plan, mean of 20.
    pub plan_ms: f64,
    pub tradeql: Timing,
    pub rows_per_s: f64,
    pub peers: Vec<PeerResult>,
    /// The rollup the query read, and the same query timed reading the rows
    /// (rollups off), alternated with the other runs.
    pub rollup: Option<String>,
    pub from_rows: Option<Timing>,
    pub floor: Option<Floor>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub store: String,
    pub runs: usize,
    pub threads: usize,
    pub queries: Vec<QueryResult>,
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Resets a process's peak-RSS mark (Linux), so each query's peak is its own.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The peak memory of this process while `f` runs, after the memory freed
/// by what ran before is handed back to the system: glibc keeps freed pages
/// resident, and the mark starts from what is resident (a 23,000-row rollup
/// read showed the 2 GB the rows had used). Not done before a timed run:
/// the pages handed back are faulted in again, which the time would count.
fn peak_of(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory; no live allocation moves.
    unsafe {
        libc::malloc_trim(0);
    }
    let me = std::process::id();
    reset_peak(me);
    f()?;
    Ok(peak_mb(me))
}

fn peak_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A running DuckDB peer process.
struct DuckPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    out_dir: tempfile::TempDir,
}

impl DuckPeer {
    fn start(python: &Path, store: &Store, groups_csv: &Path) -> Result<DuckPeer> {
        let out_dir =
            tempfile::tempdir().map_err(|e| Error::internal(format!("cannot make a temporary folder: {e}")))?;
        let script = out_dir.path().join("peer_duckdb.py");
        let sql = out_dir.path().join("peer_queries.sql");
        std::fs::write(&script, PEER_SCRIPT).map_err(|e| Error::io("cannot write", &script, e))?;
        std::fs::write(&sql, PEER_SQL).map_err(|e| Error::io("cannot write", &sql, e))?;
        let mut child = Command::new(python)
            .arg(&script)
            .arg(store.dataset_dir("trade"))
            .arg(groups_csv)
            .arg(&sql)
            .arg(out_dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::usage(format!("cannot start {}: {e}", python.display()))
                    .hint("install the peers with scripts/setup-peers.sh, or name a Python with duckdb via --python")
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(DuckPeer { child, stdin, stdout, out_dir })
    }

    /// Runs one query; returns its wall time in seconds.
    fn run(&mut self, id: &str) -> Result<f64> {
        writeln!(self.stdin, "{id}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| Error::internal(format!("duckdb peer: {e}")))?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| Error::internal(format!("duckdb peer: {e}")))?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next().and_then(|s| s.parse::<f64>().ok())) {
            (Some("ok"), Some(secs)) => Ok(secs),
            _ => Err(Error::internal(format!("the duckdb peer failed on {id} (see its message above)"))),
        }
    }

    fn result(&self, id: &str) -> Result<DataFrame> {
        let path = self.out_dir.path().join(format!("{id}.parquet"));
        let file = std::fs::File::open(&path).map_err(|e| Error::io("cannot read", &path, e))?;
        Ok(ParquetReader::new(file).finish()?)
    }
}

impl Drop for DuckPeer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// Compares tradeql's result with a peer's: same keys, values to 1e-9 relative.
/// `theirs_named_as_ours`: the peer ran tradeql's own SQL, so its columns have tradeql's names.
fn compare(id: &str, ours: &DataFrame, theirs: &DataFrame, theirs_named_as_ours: bool) -> Result<Option<String>> {
    let Some((keys, values)) = columns(id) else { return Ok(Some("no column mapping for this query".into())) };
    let canon = |df: &DataFrame, side: usize| -> Result<DataFrame> {
        let mut exprs: Vec<Expr> = Vec::new();
        for (i, (a, b)) in keys.iter().enumerate() {
            let name = if side == 0 || theirs_named_as_ours { *a } else { *b };
            exprs.push(col(name).cast(DataType::String).alias(format!("k{i}").as_str()));
        }
        for (i, (a, b)) in values.iter().enumerate() {
            let name = if side == 0 || theirs_named_as_ours { *a } else { *b };
            exprs.push(col(name).cast(DataType::Float64).alias(format!("v{i}").as_str()));
        }
        let sort: Vec<PlSmallStr> = (0..keys.len()).map(|i| PlSmallStr::from(format!("k{i}"))).collect();
        Ok(df.clone().lazy().select(exprs).sort(sort, Default::default()).collect()?)
    };
    let (a, b) = (canon(ours, 0)?, canon(theirs, 1)?);
    if a.height() != b.height() {
        return Ok(Some(format!("{} rows against {}", a.height(), b.height())));
    }
    for i in 0..keys.len() {
        let (ca, cb) = (a.column(&format!("k{i}"))?.str()?.clone(), b.column(&format!("k{i}"))?.str()?.clone());
        for r in 0..a.height() {
            if ca.get(r) != cb.get(r) {
                return Ok(Some(format!("row {r}: key {:?} against {:?}", ca.get(r), cb.get(r))));
            }
        }
    }
    for (i, (name, _)) in values.iter().enumerate() {
        let (ca, cb) = (a.column(&format!("v{i}"))?.f64()?.clone(), b.column(&format!("v{i}"))?.f64()?.clone());
        // A growth, share or pp change is a ratio of sums: added in another
        // order, the sums differ in their last bits, and so does the ratio,
        // by that much of 1 (not of itself: a growth of 1e-7 is 1 - 1.0000001).
        let unit = if *name == "value" || *name == "value_ytd" { 0.0 } else { 1.0 };
        for r in 0..a.height() {
            let same = match (ca.get(r), cb.get(r)) {
                (None, None) => true,
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(unit),
                _ => false,
            };
            if !same {
                return Ok(Some(format!("row {r}: {name} {:?} against {:?}", ca.get(r), cb.get(r))));
            }
        }
    }
    Ok(None)
}

fn find_python(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("TRADEQL_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(".venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

/// Runs the benchmark.
pub fn bench(opts: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<BenchReport> {
    let store = Store::open_existing(&opts.store)?;
    let runs = opts.runs.max(1);
    let queries: Vec<(String, QueryFile)> = match &opts.queries {
        None => DEFAULT_QUERIES
            .iter()
            .map(|(id, text)| {
                (id.to_string(), QueryFile { path: PathBuf::from(format!("{id}.tql")), text: text.to_string() })
            })
            .collect(),
        Some(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::io("cannot list", dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "tql"))
                .collect();
            files.sort();
            files
                .iter()
                .map(|p| {
                    let stem = p.file_stem().map(|s| s.to_string_lossy().to_uppercase()).unwrap_or_default();
                    let id = if stem.len() >= 2 && stem.starts_with('Q') { stem[..2].to_string() } else { stem };
                    Ok((id, QueryFile::read(p)?))
                })
                .collect::<Result<_>>()?
        }
    };
    let needs_groups = !opts.peers.is_empty();
    let groups = store.groups_manifest()?;
    let groups_parquet = groups
        .tables
        .iter()
        .find(|t| t.name == "partner_groups")
        .map(|t| store.root().join(crate::store::GROUPS_DIR).join(&t.path));
    let scratch = tempfile::tempdir().map_err(|e| Error::internal(format!("cannot make a temporary folder: {e}")))?;
    let groups_csv = scratch.path().join("partner_groups.csv");
    if needs_groups {
        let Some(gp) = &groups_parquet else {
            return Err(Error::usage(
                "the peers need the store's `partner_groups` table (tradeql gen --into makes one)",
            ));
        };
        let mut g = LazyFrame::scan_parquet(PlRefPath::new(gp.to_string_lossy().as_ref()), ScanArgsParquet::default())?
            .select([col("group"), col("member")])
            .collect()?;
        let mut f = std::fs::File::create(&groups_csv).map_err(|e| Error::io("cannot write", &groups_csv, e))?;
        CsvWriter::new(&mut f).finish(&mut g)?;
    }
    let mut duck = if opts.peers.contains(&Peer::Duckdb) {
        Some(DuckPeer::start(&find_python(opts.python.as_deref()), &store, &groups_csv)?)
    } else {
        None
    };
    let manifest = store.manifest("trade")?;
    let paths: Vec<String> = manifest
        .as_ref()
        .map(|m| {
            // The published files, as a user's own polars would read them.
            crate::store::published_files(m)
                .iter()
                .map(|(p, _)| store.dataset_dir("trade").join(p).to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    let spark = if opts.peers.contains(&Peer::Spark) {
        progress("spark: all queries, one session");
        Some(spark_runs(&store, &queries, runs)?)
    } else {
        None
    };
    let me = std::process::id();
    let mut report = BenchReport {
        store: store.root().display().to_string(),
        runs,
        threads: polars_core::runtime::THREAD_POOL.current_num_threads(),
        queries: Vec::new(),
    };
    for (id, file) in &queries {
        progress(&format!("{id}: planning"));
        let start = Instant::now();
        let mut loaded = lang::load(file, &store, &[])?;
        for _ in 1..20 {
            loaded = lang::load(file, &store, &[])?;
        }
        let plan_ms = start.elapsed().as_secs_f64() * 1000.0 / 20.0;
        let rows_scanned = loaded.read.as_ref().unwrap_or(&loaded.manifest).rows;
        let from_rows = match &loaded.read {
            Some(_) => Some(crate::rollup::with_rollups(false, || lang::load(file, &store, &[]))?),
            None => None,
        };
        // Warm-up: every engine once (file cache, allocator, peer start-up).
        let ours = crate::run::collect(&loaded.compiled)?.frame;
        // The floor reads what the query reads from the rows: its passes, recorded.
        let rows_plan = match (&from_rows, opts.floor) {
            (_, false) => None,
            (Some(rows), true) => Some(&rows.compiled),
            (None, true) => Some(&loaded.compiled),
        };
        let passes = match &rows_plan {
            Some(plan) => {
                let (out, passes) = crate::exec::pushdown::record_passes(|| crate::run::collect(plan));
                out?;
                if passes.is_empty() {
                    return Err(Error::usage(format!("{id}: --floor: the query reads no rows through the pushdown")));
                }
                passes
            }
            None => Vec::new(),
        };
        let mut floor_t: [Vec<f64>; 4] = Default::default();
        let mut floor_bytes = 0;
        if let Some(rows) = &from_rows
            && columns(id).is_some()
            && let Some(why) = compare(id, &ours, &crate::run::collect(&rows.compiled)?.frame, true)?
        {
            return Err(Error::internal(format!("{id}: the rollup's result is not the rows': {why}")));
        }
        let mut rows_t = Vec::new();
        let mut rows_peak: f64 = 0.0;
        let peer_ids: Vec<Peer> = opts.peers.iter().copied().filter(|_| columns(id).is_some()).collect();
        let mut peer_frames: Vec<DataFrame> = Vec::new();
        for p in &peer_ids {
            peer_frames.push(match p {
                Peer::Duckdb => {
                    let d = duck.as_mut().expect("started above");
                    d.run(id)?;
                    d.result(id)?
                }
                Peer::Polars => handwritten::query(
                    id,
                    &paths,
                    &groups_parquet.as_ref().map(|p| p.to_string_lossy().to_string()).unwrap_or_default(),
                )?
                .collect_with_engine(crate::run::engine())?
                .unwrap_single(),
                Peer::Spark => spark.as_ref().and_then(|s| s.get(id)).map(|r| r.0.clone()).expect("run above"),
            });
        }
        let mut ours_t = Vec::new();
        let mut peer_t: Vec<Vec<f64>> = vec![Vec::new(); peer_ids.len()];
        let mut peer_peak: Vec<f64> = vec![0.0; peer_ids.len()];
        for run in 0..runs {
            progress(&format!("{id}: run {} of {runs}", run + 1));
            let t = Instant::now();
            let out = crate::run::collect(&loaded.compiled)?;
            ours_t.push(t.elapsed().as_secs_f64());
            drop(out);
            if let Some(rows) = &from_rows {
                let t = Instant::now();
                drop(crate::run::collect(&rows.compiled)?);
                rows_t.push(t.elapsed().as_secs_f64());
            }
            if let Some(plan) = &rows_plan {
                use crate::exec::pushdown::{FloorStage, scan_floor};
                for (k, stage) in [FloorStage::Read, FloorStage::Decompress, FloorStage::Decode].into_iter().enumerate()
                {
                    let t = Instant::now();
                    floor_bytes = 0;
                    for (files, specs) in &passes {
                        floor_bytes += scan_floor(files, specs, stage)?;
                    }
                    floor_t[k].push(t.elapsed().as_secs_f64());
                }
                let t = Instant::now();
                drop(crate::run::collect(plan)?);
                floor_t[3].push(t.elapsed().as_secs_f64());
            }
            for (k, p) in peer_ids.iter().enumerate() {
                match p {
                    Peer::Duckdb => {
                        let d = duck.as_mut().expect("started above");
                        let pid = d.child.id();
                        reset_peak(pid);
                        peer_t[k].push(d.run(id)?);
                        peer_peak[k] = peer_peak[k].max(peak_mb(pid));
                    }
                    Peer::Polars => {
                        reset_peak(me);
                        let gp = groups_parquet.as_ref().map(|p| p.to_string_lossy().to_string()).unwrap_or_default();
                        let t = Instant::now();
                        let _ = handwritten::query(id, &paths, &gp)?.collect_with_engine(crate::run::engine())?;
                        peer_t[k].push(t.elapsed().as_secs_f64());
                        peer_peak[k] = peer_peak[k].max(peak_mb(me));
                    }
                    Peer::Spark => {
                        let (_, times, peak) = spark.as_ref().and_then(|s| s.get(id)).expect("run above");
                        peer_t[k].push(times[run + 1]);
                        peer_peak[k] = *peak;
                    }
                }
            }
        }
        // The peaks: one more run of each, untimed (see `peak_of`).
        progress(&format!("{id}: peak memory"));
        let ours_peak = peak_of(|| crate::run::collect(&loaded.compiled).map(drop))?;
        if let Some(rows) = &from_rows {
            rows_peak = peak_of(|| crate::run::collect(&rows.compiled).map(drop))?;
        }
        let timing = |xs: &[f64], peak: f64| Timing {
            min_s: xs.iter().copied().fold(f64::INFINITY, f64::min),
            median_s: median(xs),
            peak_mb: peak,
        };
        let tradeql = timing(&ours_t, ours_peak);
        let mut peers = Vec::new();
        for (k, p) in peer_ids.iter().enumerate() {
            let t = timing(&peer_t[k], peer_peak[k]);
            let difference = compare(id, &ours, &peer_frames[k], *p == Peer::Spark)?;
            peers.push(PeerResult {
                peer: *p,
                ratio: tradeql.median_s / t.median_s,
                timing: t,
                same_rows: difference.is_none(),
                difference,
            });
        }
        let floor = rows_plan.map(|_| Floor {
            read_s: median(&floor_t[0]),
            decompress_s: median(&floor_t[1]),
            decode_s: median(&floor_t[2]),
            bytes: floor_bytes,
            query_s: median(&floor_t[3]),
        });
        report.queries.push(QueryResult {
            id: id.clone(),
            rows_scanned,
            result_rows: ours.height(),
            plan_ms,
            rows_per_s: rows_scanned as f64 / tradeql.median_s,
            tradeql,
            peers,
            rollup: loaded.rollup.rollup.clone(),
            from_rows: from_rows.map(|_| timing(&rows_t, rows_peak)),
            floor,
        });
    }
    Ok(report)
}

/// Result, times (warm-up first) and session peak memory of each query on Spark.
type SparkRuns = std::collections::HashMap<String, (DataFrame, Vec<f64>, f64)>;

/// Runs every query's SQL on Spark local mode in one session: a warm-up and `runs` timed runs each.
fn spark_runs(store: &Store, queries: &[(String, QueryFile)], runs: usize) -> Result<SparkRuns> {
    use crate::sql::{Dialect, engine};
    let mut statements = Vec::new();
    for (_, file) in queries {
        let loaded = lang::load(file, store, &[])?;
        let q = crate::sql::compile_loaded(&loaded, store.root(), Dialect::Spark, None)?;
        let schema = loaded.compiled.lf.clone().collect_schema()?.as_ref().clone();
        statements.push(engine::Statement { sql: q.text, schema });
    }
    let options = engine::EngineOptions { repeat: runs, ..Default::default() };
    let run = engine::run(Dialect::Spark, &statements, &options)?;
    let peak = run.peak_mb.unwrap_or(f64::NAN);
    queries
        .iter()
        .zip(run.results)
        .map(|((id, _), r)| {
            let r = r?;
            if r.times.len() != runs + 1 {
                return Err(Error::internal(format!("spark ran {id} {} times, not {}", r.times.len(), runs + 1)));
            }
            Ok((id.clone(), (r.frame, r.times, peak)))
        })
        .collect()
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "store {}, {} timed runs per engine after a warm-up, {} polars threads",
            self.store, self.runs, self.threads
        )?;
        writeln!(
            f,
            "{:<4} {:>12} {:>8} {:>8} {:>9} {:>9} {:>10} {:>8}   peers (median s, tradeql/peer, same rows)",
            "q", "rows", "result", "plan ms", "min s", "median s", "Mrows/s", "peak MB"
        )?;
        for q in &self.queries {
            let peers: Vec<String> = q
                .peers
                .iter()
                .map(|p| {
                    format!(
                        "{:?} {:.3} s x{:.2} {}",
                        p.peer,
                        p.timing.median_s,
                        p.ratio,
                        if p.same_rows {
                            "same".to_string()
                        } else {
                            format!("DIFFERENT: {}", p.difference.clone().unwrap_or_default())
                        }
                    )
                    .to_lowercase()
                })
                .collect();
            let mut peers = peers;
            if let (Some(r), Some(t)) = (&q.rollup, &q.from_rows) {
                peers.insert(
                    0,
                    format!(
                        "rollup {r}; from the rows {:.4} s x{:.3} ({:.0} MB)",
                        t.median_s,
                        q.tradeql.median_s / t.median_s,
                        t.peak_mb
                    ),
                );
            }
            writeln!(
                f,
                "{:<4} {:>12} {:>8} {:>8.3} {:>9.4} {:>9.4} {:>10.1} {:>8.0}   {}",
                q.id,
                q.rows_scanned,
                q.result_rows,
                q.plan_ms,
                q.tradeql.min_s,
                q.tradeql.median_s,
                q.rows_per_s / 1e6,
                q.tradeql.peak_mb,
                peers.join(" | ")
            )?;
        }
        if self.queries.iter().any(|q| q.floor.is_some()) {
            writeln!(f, "\nscan floor, rollups off (medians; each stage includes the ones before it):")?;
            writeln!(f, "q        MB read    read s  +decompress s  +decode s   query s   decode/query")?;
            for q in &self.queries {
                if let Some(fl) = &q.floor {
                    writeln!(
                        f,
                        "{:<4} {:>11.1} {:>9.4} {:>14.4} {:>10.4} {:>9.4} {:>13.0}%",
                        q.id,
                        fl.bytes as f64 / 1e6,
                        fl.read_s,
                        fl.decompress_s,
                        fl.decode_s,
                        fl.query_s,
                        100.0 * fl.decode_s / fl.query_s
                    )?;
                }
            }
        }
        Ok(())
    }
}
