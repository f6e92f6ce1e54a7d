//! Integration tests: the `tradeql` binary run as a user runs it.
//! All modules build into this one test binary (each binary that links polars
//! is large, so there is only one).

mod adhoc;
mod anyones_data;
mod batch;
mod charts;
mod common;
mod corpus;
mod crash;
mod customs_tables;
mod faults;
mod fuzz;
mod fuzz_corpus;
mod ingest_errors;
mod interop;
mod measures;
mod peers;
mod pushdown;
mod queries;
mod query_errors;
mod report;
mod rollups;
mod scaleout;
mod store;
mod vintages;
