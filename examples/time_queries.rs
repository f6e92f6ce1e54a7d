//! Times saved queries in one process, as `tradeql bench` times them (the
//! planned query collected again and again), for comparing two builds on
//! the same store: `cargo run --release --example time_queries -- STORE
//! QUERY.tql...`; `RUNS` (default 21) timed runs after one warm-up.
//! Prints the minimum and median of each query, in milliseconds.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((store, queries)) = args.split_first() else {
        return Err("usage: time_queries STORE QUERY.tql...".into());
    };
    let runs: usize = std::env::var("RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(21).max(1);
    let store = tradeql::store::Store::open_existing(store)?;
    for path in queries {
        let file = tradeql::lang::QueryFile::read(std::path::Path::new(path))?;
        let loaded = tradeql::lang::load(&file, &store, &[])?;
        drop(tradeql::run::collect(&loaded.compiled)?);
        let mut ms: Vec<f64> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let out = tradeql::run::collect(&loaded.compiled)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            drop(out);
        }
        ms.sort_by(f64::total_cmp);
        println!("{path}: min {:.1} ms median {:.1} ms", ms[0], ms[ms.len() / 2]);
    }
    Ok(())
}
