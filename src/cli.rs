//! The command line: flags in, one library call per subcommand, errors out.
//!
//! Parsing stays close to the flags (clap derive); each subcommand calls one
//! library function and prints its report. Errors are rendered here, once:
//! `error: <file>:<line>: column `c`: message (value "v")` and `help:` lines, and
//! the exit code says whether the user (2) or tradeql (3) is at fault.

use crate::error::Result;
use crate::ingest::{IngestOptions, ingest};
use crate::store::Store;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `println!` that fails with an error (exit 2) instead of a panic when
/// standard output cannot be written: a full disk (`> /dev/full`), an I/O error.
macro_rules! outln {
    () => {
        stdout_write("\n")?
    };
    ($($t:tt)*) => {
        stdout_write(&format!("{}\n", format_args!($($t)*)))?
    };
}

/// `print!` with the same error handling as `outln!`.
macro_rules! out {
    ($($t:tt)*) => {
        stdout_write(&format!($($t)*))?
    };
}

/// Prints the report of a committed change: a failure to print says that
/// the change was committed all the same.
fn after_commit(text: &str, committed: Option<&str>) -> Result<()> {
    stdout_write(text).map_err(|e| match committed {
        Some(what) => crate::Error::new(e.kind, format!("{what}, but its report was not printed: {}", e.message)),
        None => e,
    })
}

/// Writes `text` to standard output and flushes it, so that a failure is
/// seen here and not lost when the process exits.
fn stdout_write(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(crate::run::stdout_error)
}

#[derive(Parser, Debug)]
#[command(
    name = "tradeql",
    version,
    about = "A columnar analytics engine for trade time series",
    long_about = "tradeql keeps trade data (value and quantity by period, reporter, partner, \
flow, product and region) in a store of Hive-partitioned Parquet files with a manifest per \
dataset, readable as it is by DuckDB, pyarrow and Spark.",
    after_long_help = "Exit status: 0 done; 1 a finding (verify found damage, a batch task failed, \
reconcile --strict found a difference); 2 bad command line; 65 bad data, mapping, query or a \
damaged store; 66 a named file or store does not exist; 70 a failure inside tradeql; 74 a read \
or write failed (disk full); 75 another writer holds the store: try again later."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The engines `tradeql run` can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    Polars,
    Spark,
    Duckdb,
}

/// Which kept version a query reads (the current one by default).
#[derive(clap::Args, Debug, Default)]
struct AsOf {
    /// Read version N of the dataset (`tradeql info` lists the kept versions);
    /// in the query itself: `from gacc@N`.
    #[arg(long, value_name = "N", conflicts_with = "as_of")]
    as_of_version: Option<u64>,
    /// Read the version that was current at the end of DATE (YYYY-MM-DD, UTC).
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
}

impl AsOf {
    fn vintage(&self) -> crate::Result<Option<crate::store::Vintage>> {
        crate::store::Vintage::chosen(self.as_of_version, self.as_of.as_deref())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ingest CSV or Parquet files into a dataset of the store.
    ///
    /// Rows are checked (periods, flows, numbers, negative values, duplicate
    /// keys); by default any bad row aborts the ingest and nothing is written.
    /// Periods already stored are replaced (revisions); other periods are kept.
    /// The store is changed all at once or not at all.
    Ingest {
        /// Source files (.csv, .parquet or workbooks), ingested together as one
        /// change; `-` reads standard input (see --input-format).
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// How the files this ingest writes are compressed, and the
        /// dataset's codec from now on: zstd (smallest, the default for a new
        /// dataset), lz4 (queries from the rows 1.6-1.8x faster, files about
        /// 30% larger) or none (1.9-2.9x, about 50% larger). Default: the dataset's.
        #[arg(long, value_enum)]
        compression: Option<crate::store::manifest::Codec>,
        /// The format of standard input (`-`): csv (default) or parquet.
        #[arg(long, value_name = "csv|parquet")]
        input_format: Option<String>,
        /// The store directory (created if missing).
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// Dataset name in the store (default: `dataset` in the mapping).
        #[arg(long, short)]
        dataset: Option<String>,
        /// Mapping file (TOML) for layouts other than the canonical one.
        #[arg(long, short)]
        mapping: Option<PathBuf>,
        /// Currency of the values after scaling (ISO 4217: CNY, USD, ...).
        #[arg(long)]
        currency: Option<String>,
        /// Unit of the quantity column (kg, units, ...).
        #[arg(long)]
        quantity_unit: Option<String>,
        /// Keep the good rows and write every bad row with its reason to this CSV.
        #[arg(long, value_name = "FILE")]
        rejects: Option<PathBuf>,
        /// Check everything and say what would change, without changing the store.
        #[arg(long)]
        dry_run: bool,
        /// If another process is writing the store, wait for it instead of failing.
        #[arg(long)]
        wait: bool,
        /// Converting threads (default: all cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        /// Print how long each phase took (to stderr).
        #[arg(long)]
        timings: bool,
    },
    /// Run a saved query (.tql) and print or write its result.
    ///
    /// Warnings (a missing comparison period, a partial year) go to stderr.
    Run {
        /// The query file (several, with --out-dir: a batch, see `tradeql batch`).
        #[arg(required_unless_present = "expr", conflicts_with = "expr")]
        files: Vec<PathBuf>,
        /// A query given on the command line instead of a file; stages are
        /// separated by newlines or `|`: -e 'from gacc | by year | sum value'.
        #[arg(long = "expr", short = 'e', value_name = "QUERY")]
        expr: Option<String>,
        /// Print every row and column of a table on a terminal (otherwise a
        /// table is cut after 200 rows, and a wide one fitted to the
        /// terminal's width: names cut with `…`, columns that still do not fit
        /// named below it; numbers are never cut; files and pipes always get
        /// everything).
        #[arg(long)]
        all: bool,
        /// Write each query's result to DIR/NAME.parquet (or --format) as one
        /// batch: queries run together, extracts are written atomically, and
        /// DIR/run.json records the run.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// Override a `param` of the query: --param year=2023 (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// table (aligned, formatted for reading) or an exact machine format.
        /// Without it: the format `--out`'s extension names (.csv, .json,
        /// .parquet, .arrow/.ipc), else the table.
        #[arg(long, short, value_enum)]
        format: Option<crate::run::OutputFormat>,
        /// Write to this file (atomically) instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Also draw the result as a chart, to PATH.svg or PATH.png: a line per
        /// group over the periods (a rate on a second axis, records marked), or
        /// bars for a single period. The query's `chart` stage sets kind and title.
        #[arg(long, value_name = "PATH")]
        chart: Option<PathBuf>,
        /// Where to run: polars, in this process (the default), or the query
        /// compiled to SQL (see `tradeql sql`) and run on Spark (spark-submit on
        /// the PATH, local mode unless --master) or DuckDB (its Python package).
        #[arg(long, value_enum, default_value = "polars")]
        engine: Engine,
        /// Spark master URL for --engine spark (default local[*]): spark://HOST:7077, yarn, ...
        #[arg(long, value_name = "URL")]
        master: Option<String>,
        #[command(flatten)]
        as_of: AsOf,
        /// Put each code's name beside it (`partner_name` after `partner`),
        /// from the store's names tables (`tradeql names add`).
        #[arg(long)]
        names: bool,
    },
    /// Print a query compiled to one SQL statement for Spark or DuckDB.
    ///
    /// The statement has the polars backend's semantics (comparisons by
    /// calendar, shares by window sums, groups with validity dates) and reads
    /// exactly the Parquet files the dataset's manifest lists, at --store-uri.
    Sql {
        /// The query file (.tql).
        file: PathBuf,
        /// spark (Spark SQL; tested with Spark 4.3) or duckdb (tested with DuckDB 1.5).
        #[arg(long, value_enum)]
        dialect: crate::sql::Dialect,
        /// Where the engine reads the store: a path or URI such as
        /// s3a://bucket/store or hdfs://nn/store (default: this store's absolute path).
        #[arg(long, value_name = "URI")]
        store_uri: Option<String>,
        /// The local store (its manifests decide which files the SQL reads).
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// Override a `param` of the query: --param year=2023 (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Run a batch job: many saved queries, together, into extracts.
    ///
    /// The job file (TOML) names the store, the queries (files or globs, each
    /// with parameter sets), and the format of each extract. Queries run
    /// together so scans of the same files are shared; each extract is written
    /// atomically; run.json beside the extracts records every query's input
    /// version, rows, time and output hash. Exits 1 if any query failed.
    Batch {
        /// The job file.
        job: PathBuf,
        /// Skip the queries whose text, parameters and input store version are
        /// unchanged since the last run (and whose extract is intact).
        #[arg(long)]
        incremental: bool,
        /// Run the queries one after another instead of together.
        #[arg(long)]
        sequential: bool,
        /// Threads for the whole job (polars' pool; default: all cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// If an ingest is writing the store, wait for it instead of failing.
        #[arg(long)]
        wait: bool,
        /// Where to run: polars (the default), or every query's SQL in one
        /// Spark or DuckDB session (see `tradeql run --engine`).
        #[arg(long, value_enum, default_value = "polars")]
        engine: Engine,
        /// Spark master URL for --engine spark (default local[*]).
        #[arg(long, value_name = "URL")]
        master: Option<String>,
        /// Also write the release as one web page: each extract's title, table
        /// (as the terminal shows it) and chart (inline SVG), its warnings,
        /// and the data versions; self-contained, it opens offline.
        #[arg(long, value_name = "FILE.html")]
        report: Option<PathBuf>,
    },
    /// Check query files against the store without running them.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Show tradeql's plan of a query, then polars' optimised plan.
    Explain {
        file: PathBuf,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        as_of: AsOf,
    },
    /// Remove a dataset's old versions: all but the last --keep (the current
    /// one is always kept), and the files no kept version lists.
    ///
    /// Every revision keeps the version it replaces (`info` lists them; a query
    /// reads one with `from gacc@3` or `--as-of-version`), until this removes
    /// it. A file a running query may be reading is removed by the next writer.
    Vacuum {
        /// The dataset (every dataset when left out).
        #[arg(long)]
        dataset: Option<String>,
        /// How many of the latest versions to keep, the current one included.
        #[arg(long, value_name = "N")]
        keep: usize,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// Wait for a running writer instead of failing (exit 75).
        #[arg(long)]
        wait: bool,
    },
    /// Measure aggregation speed: the five benchmark queries (or a folder of
    /// queries) on a store's `trade` dataset, side by side with peers.
    ///
    /// Make a store with `tradeql gen --into DIR`. Each query is planned (timed),
    /// run once to warm up, then run --runs times, alternating with each peer;
    /// peers' rows are checked equal to tradeql's (1e-9 relative). A query
    /// that reads a rollup is also timed reading the rows (rollups off),
    /// alternated with the other runs, and its result checked equal.
    Bench {
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// A folder of .tql files to run instead of the five default queries.
        #[arg(long)]
        queries: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Run the same questions in a peer too: duckdb (reference SQL, needs a
        /// Python with duckdb), polars (hand-written lazy plans) or spark
        /// (tradeql's own SQL on Spark local mode, spark-submit on the PATH; its
        /// runs happen in one session, its peak is the JVM's). Repeatable.
        #[arg(long, value_enum)]
        peer: Vec<crate::bench::Peer>,
        /// The Python that has duckdb (default: $TRADEQL_PYTHON, ./.venv/bin/python, python3).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Also time each query's scan floor with rollups off: the column
        /// chunks it reads, read alone, then decompressed, then decoded, with
        /// nothing aggregated, against the query itself.
        #[arg(long)]
        floor: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Describe a store: datasets, rows, periods and gaps, currency, groups.
    Info {
        /// The store directory.
        #[arg(env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// Check every file against its manifest (size, SHA-256, rows), after
        /// recovering any interrupted ingest. Exits 1 if anything is wrong.
        #[arg(long)]
        verify: bool,
        /// With --verify, wait for a running ingest instead of failing.
        #[arg(long)]
        wait: bool,
    },
    /// Generate a deterministic synthetic trade panel (CSV, or straight into a store).
    ///
    /// Partners and products have log-normal sizes, values a trend and a
    /// seasonal cycle, cells are missing at random (--density), HS6 codes are
    /// spread over chapters, and overlapping partner groups come with it.
    /// Rows = partners x products x months x 2 flows x density.
    Gen {
        /// Write the panel to this CSV file.
        #[arg(long, value_name = "FILE", conflicts_with = "into")]
        csv: Option<PathBuf>,
        /// Ingest the panel (and its partner groups) into this store.
        #[arg(long, value_name = "STORE")]
        into: Option<PathBuf>,
        /// Dataset name, with --into.
        #[arg(long, default_value = "trade")]
        dataset: String,
        #[arg(long, default_value_t = 100)]
        partners: usize,
        #[arg(long, default_value_t = 500)]
        products: usize,
        #[arg(long, default_value_t = 60)]
        months: usize,
        /// Share of cells that hold a row (0..1).
        #[arg(long, default_value_t = 0.5)]
        density: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First month of the panel.
        #[arg(long, default_value = "2020-01")]
        start: String,
        /// With --into: the dataset's codec (see `tradeql ingest --compression`).
        #[arg(long, value_enum, requires = "into")]
        compression: Option<crate::store::manifest::Codec>,
    },
    /// Exchange rates by month, for convert(x, CUR) in queries.
    Rates {
        #[command(subcommand)]
        action: RatesAction,
    },
    /// Reference groups (partner blocs, HS sections, regions) stored with the store.
    Groups {
        #[command(subcommand)]
        action: GroupsAction,
    },
    /// Rollups: aggregate tables of a dataset kept at every ingest, read in
    /// place of the rows by the queries they answer.
    ///
    /// A rollup sums the rows by period (the dataset's own, so every calendar
    /// roll-up) and a few code columns, with counts, minimums and maximums.
    /// A query reads it when it holds every column the query's rows are
    /// filtered, grouped or mapped by, and every aggregate is a sum, count,
    /// min or max; the figures are those of the rows (sums added in another
    /// order: equal to 1e-12 relative). `explain` says which rollup a query
    /// reads and why; TRADEQL_ROLLUPS=off reads the rows.
    Rollup {
        #[command(subcommand)]
        action: RollupAction,
    },
    /// Names of codes (countries, HS codes), for name(partner) in queries.
    Names {
        #[command(subcommand)]
        action: NamesAction,
    },
    /// Check that members add up to the published aggregates.
    ///
    /// For a dataset that holds member rows beside aggregate rows (a customs
    /// table with its ASEAN, EU and total rows), compares, per period and
    /// flow (and reporter, product, region where they vary): the sum of the
    /// members (as of each period, from a partner group table whose group
    /// names are the dataset's aggregate codes; every member row for WLD)
    /// with the published row, and flags relative differences beyond the
    /// tolerance. Missing rows on either side are flagged too.
    Reconcile {
        dataset: String,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// The partner group table to take members from (default: every one).
        #[arg(long)]
        groups: Option<String>,
        /// Compare only these aggregate codes (repeat, or separate by commas).
        #[arg(long = "only", value_delimiter = ',')]
        only: Vec<String>,
        /// The measure to sum: value, or a further measure of the dataset.
        #[arg(long, default_value = "value")]
        measure: String,
        /// Largest relative difference |members - published| / published accepted.
        #[arg(long, default_value_t = crate::reconcile::DEFAULT_TOLERANCE)]
        tolerance: f64,
        /// Exit with status 1 when any comparison is beyond the tolerance (for batch jobs).
        #[arg(long)]
        strict: bool,
        /// Print only the comparisons beyond the tolerance.
        #[arg(long)]
        flagged: bool,
        /// Output format: table (default on a terminal), csv, json, parquet, arrow.
        #[arg(long, value_enum)]
        format: Option<crate::run::OutputFormat>,
        /// Write the comparisons to FILE instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum RollupAction {
    /// Declare a rollup of DATASET by some of its code columns and build it
    /// for every year (one commit); every later ingest keeps it up to date.
    ///
    /// `tradeql rollup add trade --by partner,flow`. The dataset's periods
    /// are always kept (`year`, `month`, `period` in --by are accepted and
    /// change nothing).
    Add {
        dataset: String,
        /// The code columns (repeat, or separate by commas).
        #[arg(long, required = true, value_delimiter = ',')]
        by: Vec<String>,
        /// Its name (default: the columns joined by `_`).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        /// Wait for a running writer instead of failing (exit 75).
        #[arg(long)]
        wait: bool,
    },
    /// Remove a rollup (a new version without it; its files go with `vacuum`).
    Remove {
        dataset: String,
        name: String,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        #[arg(long)]
        wait: bool,
    },
    /// Propose the few rollups that answer a set of saved queries (a release
    /// job's), with their sizes counted on the store; adds nothing.
    Advise {
        /// Query files (.tql) or folders of them.
        #[arg(required = true)]
        queries: Vec<PathBuf>,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RatesAction {
    /// Store a `period,currency,per_usd` CSV (monthly; units of the currency
    /// for one US dollar), replacing the store's rates. Used by convert().
    Add {
        file: PathBuf,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand, Debug)]
enum NamesAction {
    /// Store a CSV table of code names for one dimension, replacing its names
    /// table: `tradeql names add data/country_codes.csv --of partner --code
    /// iso3 --name name_en`, or `data/hs_codes.csv --of product --code hscode
    /// --name description`. Reporters are named by the partner table unless
    /// they have their own.
    Add {
        file: PathBuf,
        /// The dimension: reporter, partner, product or region.
        #[arg(long)]
        of: String,
        /// The column holding the codes.
        #[arg(long, default_value = "code")]
        code: String,
        /// The column holding the names.
        #[arg(long, default_value = "name")]
        name: String,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GroupsAction {
    /// Store a `group,member,valid_from,valid_to` CSV table under NAME.
    ///
    /// valid_from and valid_to are months (2020-01), both inclusive; empty
    /// means open. A table of the same name is replaced.
    Add {
        /// Name of the table (partner_groups, hs_sections, ...).
        name: String,
        /// The CSV file.
        file: PathBuf,
        /// The dimension whose codes the members are: partner, product or region.
        /// Rows of a dataset whose partner is a partner group's name (a bloc
        /// total) are flagged as aggregates when ingested.
        #[arg(long, default_value = "partner")]
        of: String,
        #[arg(long, short, env = "TRADEQL_STORE", default_value = "store")]
        store: PathBuf,
        #[arg(long)]
        wait: bool,
        /// Refuse the table when a member is a code of no dataset of the
        /// store (for partners: nor an ISO 3166 alpha-3 code); without it,
        /// such members are warnings with a "did you mean".
        #[arg(long)]
        strict: bool,
    },
}

/// Runs the command line; the binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // On a 256 MB stack (reserved, not committed): resolving and compiling
    // recurse over a query's expressions, which the parser bounds
    // (`parser::MAX_DEPTH`) but a debug build's frames are large.
    match crate::run::on_big_stack(|| run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Ingest {
            sources,
            input_format,
            compression,
            store,
            dataset,
            mapping,
            currency,
            quantity_unit,
            rejects,
            dry_run,
            wait,
            jobs,
            quiet,
            timings,
        } => {
            let report = ingest(&IngestOptions {
                store,
                dataset,
                sources,
                mapping,
                currency,
                quantity_unit,
                rejects,
                dry_run,
                wait,
                workers: jobs,
                progress: !quiet,
                timings,
                input_format,
                compression,
            })?;
            if report.recovery.rolled_back || report.recovery.rolled_forward {
                eprintln!("note: recovered an interrupted commit before ingesting");
            }
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            let done = format!("version {} of {} is committed", report.version, report.dataset);
            after_commit(&format!("{report}\n"), if report.dry_run { None } else { Some(&done) })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { files, expr, all, out_dir, store, params, format, out, chart, engine, master, as_of, names } => {
            crate::run::print_all(all);
            let format = crate::run::OutputFormat::chosen(format, out.as_deref())?;
            let on_engine = engine_options(engine, master)?;
            if files.len() > 1 || out_dir.is_some() {
                let Some(out_dir) = out_dir else {
                    return Err(crate::Error::usage("several queries need --out-dir DIR for their extracts"));
                };
                if !params.is_empty() || out.is_some() || chart.is_some() || as_of.vintage()?.is_some() || names {
                    return Err(crate::Error::usage(
                        "with --out-dir, give parameters and names in a job file (tradeql batch)",
                    ));
                }
                let format = match format {
                    crate::run::OutputFormat::Table => "parquet",
                    crate::run::OutputFormat::Csv => "csv",
                    crate::run::OutputFormat::Json => "json",
                    crate::run::OutputFormat::Parquet => "parquet",
                    crate::run::OutputFormat::Arrow => "arrow",
                };
                let job = crate::batch::JobFile {
                    store,
                    out_dir,
                    format: Some(format.to_string()),
                    parquet: Default::default(),
                    queries: files
                        .iter()
                        .map(|f| crate::batch::JobQuery {
                            file: f.display().to_string(),
                            params: Vec::new(),
                            output: None,
                            format: None,
                            partition_by: None,
                        })
                        .collect(),
                    reconciles: Vec::new(),
                };
                let opts = crate::batch::BatchOptions { engine: on_engine, ..Default::default() };
                return run_batch(std::path::Path::new("./job"), &job, &opts);
            }
            let query = match &expr {
                Some(text) => crate::lang::QueryFile::from_command_line(text)?,
                None => crate::lang::QueryFile::read(&files[0])?,
            };
            let file = query.path.clone();
            let store = crate::run::store_for(&query, &store, as_of.vintage()?)?;
            if let Some(out) = out.as_deref().filter(|o| o.as_os_str() != "-") {
                store.refuse_output_inside(out, "--out")?;
                crate::run::refuse_overwriting(out, &file)?;
            }
            if let Some(chart) = &chart {
                store.refuse_output_inside(chart, "--chart")?;
                crate::run::refuse_overwriting(chart, &file)?;
            }
            let params = crate::lang::parse_params(&params)?;
            let (loaded, mut outcome) = crate::run::query(&query, &store, &params, on_engine.as_ref())?;
            if let Some(path) = &chart {
                let mut options = loaded.plan.chart.clone().unwrap_or_default();
                // Without `chart title "..."`, the query's first comment line.
                if options.title.is_none() {
                    options.title = crate::chart::title_of(&query.text);
                }
                // Legends name codes where the store has their names.
                let named = crate::run::with_code_names(outcome.frame.clone(), &store)?;
                let drawn =
                    crate::chart::draw(&named, &loaded.plan, loaded.manifest.currency.as_deref(), &options, path)?;
                eprintln!("chart: {} ({:?}, {} series)", path.display(), drawn.kind, drawn.series.len());
                for s in &drawn.skipped {
                    eprintln!("chart: left out {s}");
                }
            }
            if names {
                outcome.frame = crate::run::with_code_names(outcome.frame, &store)?;
            }
            crate::run::write(&mut outcome.frame, &loaded.plan, format, out.as_deref())?;
            for m in crate::run::messages(&loaded, &outcome) {
                eprintln!("{m}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Vacuum { dataset, keep, store, wait } => {
            if keep == 0 {
                return Err(crate::Error::usage("--keep 0 would remove the current version: keep 1 or more"));
            }
            let store = Store::open_existing(store)?;
            let lock = store.lock(wait, "vacuum")?;
            store.recover(&lock)?;
            let datasets = match dataset {
                Some(d) => vec![d],
                None => store.datasets()?,
            };
            for d in datasets {
                let done = store.vacuum(&lock, &d, keep)?;
                let versions: Vec<String> = done.versions_removed.iter().map(|v| format!("v{v}")).collect();
                outln!(
                    "{d}: removed {} ({} files, {} bytes){}",
                    if versions.is_empty() { "no version".to_string() } else { versions.join(", ") },
                    done.files_removed,
                    done.bytes_freed,
                    if done.files_retired > 0 {
                        format!("; {} files a reader holds are removed by the next writer", done.files_retired)
                    } else {
                        String::new()
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Batch { job, incremental, sequential, jobs, wait, engine, master, report } => {
            let engine = engine_options(engine, master)?;
            if let Some(n) = jobs {
                // Before polars starts its thread pools (they read this once).
                // SAFETY: no other thread exists yet.
                unsafe { std::env::set_var("POLARS_MAX_THREADS", n.max(1).to_string()) };
            }
            let file = crate::batch::JobFile::load(&job)?;
            run_batch(&job, &file, &crate::batch::BatchOptions { incremental, sequential, wait, engine, report })
        }
        Command::Check { files, store, params } => {
            let store = Store::open_existing(store)?;
            let params = crate::lang::parse_params(&params)?;
            let mut failed = 0;
            for file in &files {
                let loaded = crate::lang::QueryFile::read(file)
                    .and_then(|q| store.read_consistent(|| crate::lang::load(&q, &store, &params)));
                match loaded {
                    Ok(_) => outln!("ok  {}", file.display()),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            if failed > 0 {
                eprintln!("{failed} of {} queries have errors", files.len());
                return Ok(ExitCode::from(crate::error::EXIT_DATA));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql { file, dialect, store_uri, store, params } => {
            let query = crate::lang::QueryFile::read(&file)?;
            let store = match Store::open_existing(&store) {
                Err(_) if crate::lang::reads_files(&query) => Store::at(store),
                opened => opened?,
            };
            let params = crate::lang::parse_params(&params)?;
            let loaded = crate::lang::load(&query, &store, &params)?;
            if loaded.adhoc.is_some() {
                return Err(crate::Error::usage(
                    "`from \"FILE\"` reads a scratch store that is gone once the query is done, so SQL for it \
                     would name no file: ingest the file into a store first",
                ));
            }
            let q = crate::sql::compile_loaded(&loaded, store.root(), dialect, store_uri.as_deref())?;
            outln!(
                "-- {} compiled by tradeql {} for {} (dataset {} version {})",
                file.display(),
                env!("CARGO_PKG_VERSION"),
                dialect.name(),
                loaded.manifest.dataset,
                loaded.manifest.version
            );
            out!("{}", q.text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { file, store, params, as_of } => {
            let store = Store::open_existing(store)?.reading(as_of.vintage()?);
            let params = crate::lang::parse_params(&params)?;
            let query = crate::lang::QueryFile::read(&file)?;
            let loaded = store.read_consistent(|| crate::lang::load(&query, &store, &params))?;
            out!("{}", crate::run::explain(&loaded)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { store, queries, runs, peer, python, floor, json } => {
            let opts = crate::bench::BenchOptions { store, queries, runs, peers: peer, python, floor };
            let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut progress = |msg: &str| {
                if terminal {
                    eprint!("\r{msg:<40}");
                }
            };
            let report = crate::bench::bench(&opts, &mut progress)?;
            if terminal {
                eprint!("\r{:<40}\r", "");
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                out!("{report}");
            }
            let differ = report.queries.iter().any(|q| q.peers.iter().any(|p| !p.same_rows));
            Ok(if differ { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Info { store, verify, wait } => {
            let store = Store::open_existing(store)?;
            let report = crate::info::info(&store, verify, wait)?;
            out!("{}", report.text);
            let bad = report.problems.is_some_and(|p| !p.is_empty());
            Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Gen { csv, into, dataset, partners, products, months, density, seed, start, compression } => {
            let first = crate::period::Period::parse(&start)
                .ok()
                .filter(|p| p.frequency == crate::period::Frequency::Month)
                .ok_or_else(|| {
                    crate::Error::usage(format!("--start must be a month such as 2020-01, not {start:?}"))
                })?;
            let spec =
                crate::panel::PanelSpec { partners, products, months, density, seed, start: (first.year, first.month) };
            let into = into.as_deref().map(|p| (p, dataset.as_str()));
            outln!("{}", crate::panel::generate(&spec, csv.as_deref(), into, compression)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile { dataset, store, groups, only, measure, tolerance, strict, flagged, format, out } => {
            // Where and how the comparisons go is checked before they are made.
            if let Some(o) = &out {
                crate::store::Store::at(&store).refuse_output_inside(o, "--out")?;
            }
            let format = crate::run::OutputFormat::chosen(format, out.as_deref())?;
            let mut r = crate::reconcile::reconcile(&crate::reconcile::ReconcileOptions {
                store: store.clone(),
                dataset,
                groups,
                only,
                measure,
                tolerance,
            })?;
            let plan = r.plan();
            let summary = r.summary();
            let mut frame = if flagged { r.beyond()? } else { std::mem::take(&mut r.frame) };
            crate::run::write(&mut frame, &plan, format, out.as_deref())?;
            for n in &r.notes {
                eprintln!("note: {n}");
            }
            eprintln!("{summary}");
            Ok(if strict && r.flagged > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Names { action: NamesAction::Add { file, of, code, name, store, wait } } => {
            let report = crate::groups::add_names(&store, &of, &file, &code, &name, wait)?;
            after_commit(&format!("{report}\n"), Some("the names table is committed"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rates { action: RatesAction::Add { file, store, wait } } => {
            let report = crate::rates::add(&store, &file, wait)?;
            after_commit(&format!("{report}\n"), Some("the rates table is committed"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollup { action: RollupAction::Add { dataset, by, name, store, wait } } => {
            let report = crate::rollup::add(&store, &dataset, &by, name.as_deref(), wait)?;
            after_commit(&format!("{report}\n"), Some(&format!("the rollup {} is committed", report.name)))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollup { action: RollupAction::Remove { dataset, name, store, wait } } => {
            let version = crate::rollup::remove(&store, &dataset, &name, wait)?;
            after_commit(
                &format!("removed the rollup {name} of {dataset}: version {version}\n"),
                Some(&format!("the removal of {name} is committed")),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollup { action: RollupAction::Advise { queries, store, params } } => {
            let store = Store::open_existing(store)?;
            let params = crate::lang::parse_params(&params)?;
            let advice = crate::rollup::advise(&store, &queries, &params)?;
            outln!("{advice}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Groups { action: GroupsAction::Add { name, file, of, store, wait, strict } } => {
            let report = crate::groups::add(&store, &name, &of, &file, wait, strict)?;
            after_commit(&format!("{report}\n"), Some(&format!("group table {name} is committed")))?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The SQL engine (and its options) that --engine names, or None for polars.
fn engine_options(
    engine: Engine,
    master: Option<String>,
) -> Result<Option<(crate::sql::Dialect, crate::sql::engine::EngineOptions)>> {
    if master.is_some() && engine != Engine::Spark {
        return Err(crate::Error::usage("--master is for --engine spark"));
    }
    let dialect = match engine {
        Engine::Polars => return Ok(None),
        Engine::Spark => crate::sql::Dialect::Spark,
        Engine::Duckdb => crate::sql::Dialect::Duckdb,
    };
    Ok(Some((dialect, crate::sql::engine::EngineOptions { master, ..Default::default() })))
}

fn run_batch(
    path: &std::path::Path,
    job: &crate::batch::JobFile,
    opts: &crate::batch::BatchOptions,
) -> Result<ExitCode> {
    let mut report = |r: &crate::batch::TaskRecord| match r.status.as_str() {
        "ok" => {
            eprintln!("ok      {:<32} {:>10} rows  {:>7.3} s  {}", r.name, r.rows.unwrap_or(0), r.seconds, r.output);
            for n in &r.notes {
                eprintln!("        note: {n}");
            }
            for w in &r.warnings {
                eprintln!("        warning: {w}");
            }
        }
        "skipped" => eprintln!("skipped {:<32} unchanged since the last run", r.name),
        _ => eprintln!("FAILED  {:<32} {}", r.name, r.error.as_deref().unwrap_or("").replace('\n', "\n        ")),
    };
    let manifest = crate::batch::run_job(path, job, opts, &mut report)?;
    let count = |s: &str| manifest.tasks.iter().filter(|t| t.status == s).count();
    let failed = count("failed");
    outln!(
        "{} ok, {} skipped, {} failed in {:.2} s; run manifest {}",
        count("ok"),
        count("skipped"),
        failed,
        manifest.seconds,
        manifest
            .tasks
            .first()
            .and_then(|t| std::path::Path::new(&t.output).parent())
            .map_or("run.json".into(), |d| d.join("run.json"))
            .display()
    );
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
