//! tradeql: a columnar analytics engine for trade time series.
//!
//! Trade data (value and quantity by period, reporter, partner, flow, product
//! and region) is ingested into a store of Hive-partitioned Parquet files with a
//! manifest per dataset ([`ingest`], [`store`]). ARCHITECTURE.md has the table of
//! stages and the module that owns each.

pub mod adhoc;
pub mod batch;
pub mod bench;
pub mod chart;
pub mod cli;
pub mod error;
pub mod exec;

pub mod groups;
pub mod info;
pub mod ingest;
pub mod lang;
pub mod mapping;
pub mod panel;
pub mod period;
pub mod rates;
pub mod reconcile;
pub mod report;
pub mod rollup;
pub mod run;
pub mod sql;
pub mod store;
pub mod suggest;

pub use error::{Error, ErrorKind, Result};

/// Crash injection for the durability tests: when the environment variable
/// `TRADEQL_CRASH_AT` names this point, the process aborts on the spot, as a
/// `kill -9` would (no destructors, no cleanup). Costs one environment lookup.
/// `TRADEQL_PAUSE_AT` naming this point makes the process sleep there for
/// `TRADEQL_PAUSE_MS` milliseconds (default 2000): the concurrency tests use
/// it to act while a writer is in the middle of its work.
pub(crate) fn failpoint(name: &str) {
    if std::env::var_os("TRADEQL_CRASH_AT").is_some_and(|v| v == name) {
        eprintln!("tradeql: crash injected at {name}");
        std::process::abort();
    }
    if std::env::var_os("TRADEQL_PAUSE_AT").is_some_and(|v| v == name) {
        let ms = std::env::var("TRADEQL_PAUSE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        eprintln!("tradeql: paused at {name} for {ms} ms");
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
