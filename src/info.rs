//! `tradeql info`: what a store holds, and whether it is intact.
//!
//! For each dataset: rows (and how many are aggregate rows), the periods
//! covered and the gaps inside that range, currency and units, the manifest
//! version and the sources it came from; then the reference-group tables. With
//! `--verify`, every file is checked against its manifest (see
//! [`crate::store::verify`]).

use crate::error::Result;
use crate::store::manifest::describe_periods;
use crate::store::manifest::{AGGREGATE_DIMENSIONS, GroupsManifest, Manifest};
use crate::store::{self, Problem, Recovery, Store};
use polars::prelude::*;
use std::fmt::Write as _;

/// The text `info` prints, and what verification found.
pub struct InfoReport {
    pub text: String,
    /// `Some` when verification was asked for.
    pub problems: Option<Vec<Problem>>,
}

/// Describes the store; with `verify`, takes the lock, recovers any interrupted
/// commit, and checks every file.
pub fn info(store: &Store, verify: bool, wait: bool) -> Result<InfoReport> {
    let mut text = String::new();
    let mut recovery = Recovery::default();
    let lock = if verify { Some(store.lock(wait, "info --verify")?) } else { None };
    if let Some(lock) = &lock {
        recovery = store.recover(lock)?;
    }
    let _ = writeln!(text, "store {}", store.root().display());
    if recovery.rolled_back || recovery.rolled_forward {
        let _ = writeln!(
            text,
            "  recovered an interrupted commit ({}, {} files removed)",
            if recovery.rolled_forward { "completed it" } else { "undid it" },
            recovery.files_removed
        );
    }
    if recovery.years_published > 0 {
        let _ = writeln!(
            text,
            "  published {} year folder{} again: the published tree did not hold the current version \
             (an interrupted commit, or files changed by hand)",
            recovery.years_published,
            if recovery.years_published == 1 { "" } else { "s" }
        );
    }
    if recovery.datasets_moved > 0 {
        let _ = writeln!(text, "  moved {} dataset(s) from the earlier layout", recovery.datasets_moved);
    }
    if lock.is_none() && store.has_pending_journal() {
        let _ = writeln!(text, "  an interrupted commit is pending; the next ingest or `info --verify` recovers it");
    }
    let datasets = store.datasets()?;
    let groups = store.groups_manifest().unwrap_or_default();
    if datasets.is_empty() {
        let _ = writeln!(text, "  no datasets");
    }
    for name in &datasets {
        let m = match store.manifest(name) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                let _ = writeln!(text, "\ndataset {name}: {e}");
                continue;
            }
        };
        let periods = m.period_values();
        let gaps = m.gaps();
        let bytes: u64 = m.files.iter().map(|f| f.bytes).sum();
        let _ =
            writeln!(text, "\ndataset {name}  (version {}, {}ly, updated {})", m.version, m.frequency, m.updated_at);
        let _ = writeln!(text, "  rows        {}", m.rows);
        match aggregate_lines(store, &m, &groups) {
            Ok(lines) => lines.iter().for_each(|line| {
                let _ = writeln!(text, "  {line}");
            }),
            // A damaged file is `--verify`'s to report; the rest still prints.
            Err(e) => {
                let _ = writeln!(text, "  aggregates  not counted: {}", e.to_string().lines().next().unwrap_or(""));
            }
        }
        let range = match (periods.first(), periods.last()) {
            (Some(a), Some(b)) => format!("{a} .. {b} ({} periods)", periods.len()),
            _ => "none".into(),
        };
        let _ = writeln!(text, "  periods     {range}");
        let _ =
            writeln!(text, "  gaps        {}", if gaps.is_empty() { "none".into() } else { describe_periods(&gaps) });
        let _ = writeln!(
            text,
            "  currency    {}{}",
            m.currency.as_deref().unwrap_or("unknown"),
            m.quantity_unit.as_ref().map(|u| format!(", quantity in {u}")).unwrap_or_default()
        );
        if !m.measures.is_empty() {
            let list: Vec<String> = m.measures.iter().map(|x| format!("{} ({})", x.name, x.unit)).collect();
            let _ = writeln!(text, "  measures    {} (beside value and quantity)", list.join(", "));
        }
        let codec = if m.compression.is_zstd() { String::new() } else { format!(", written {}", m.compression) };
        let _ = writeln!(text, "  files       {} ({} bytes{codec})", m.files.len(), bytes);
        for r in &m.rollups {
            let (rows, size): (u64, u64) =
                (r.files.iter().map(|f| f.rows).sum(), r.files.iter().map(|f| f.bytes).sum());
            let _ = writeln!(
                text,
                "  rollup      {} (by period, {}): {rows} rows, {size} bytes in {} files ({:.2}% of the rows' bytes)",
                r.name,
                r.by.join(", "),
                r.files.len(),
                100.0 * size as f64 / bytes.max(1) as f64
            );
        }
        let kept = store.versions(name)?;
        let _ = writeln!(
            text,
            "  versions    {} kept{}",
            kept.len(),
            if kept.len() > 1 { " (`from NAME@N` reads one; `tradeql vacuum --keep N` removes old ones)" } else { "" }
        );
        for ing in m.ingests.iter().filter(|i| kept.contains(&i.version)) {
            let sources: Vec<&str> = ing.sources.iter().map(|s| s.path.as_str()).collect();
            let mut what = Vec::new();
            if !ing.periods_added.is_empty() {
                what.push(format!("added {}", span_of(&ing.periods_added, m.frequency)));
            }
            if !ing.periods_replaced.is_empty() {
                what.push(format!("revised {}", span_of(&ing.periods_replaced, m.frequency)));
            }
            let _ = writeln!(
                text,
                "    v{:<4} {}  {} rows from {}{}",
                ing.version,
                ing.at,
                ing.rows,
                sources.join(", "),
                if what.is_empty() { String::new() } else { format!(": {}", what.join("; ")) }
            );
        }
        for ing in &m.ingests {
            for s in &ing.sources {
                let _ = writeln!(text, "  source v{:<3} {} sha256 {}", ing.version, s.path, &s.sha256[..16]);
            }
            for t in &ing.code_tables {
                let _ = writeln!(text, "  codes  v{:<3} {} sha256 {}", ing.version, t.path, &t.sha256[..16]);
            }
        }
    }
    if !groups.tables.is_empty() {
        let _ = writeln!(text, "\ngroups  (version {})", groups.version);
        for t in &groups.tables {
            let names: Vec<String> = t.groups.iter().map(|(g, n)| format!("{g} ({n})")).collect();
            let _ = writeln!(text, "  {:<16} {} rows, groups of {} codes: {}", t.name, t.rows, t.of, names.join(", "));
        }
    }
    for t in &groups.names {
        let _ = writeln!(text, "\nnames  of {}: {} codes named (from {})", t.of, t.rows, t.source.path);
    }
    if let Some(r) = &groups.rates {
        let _ = writeln!(
            text,
            "\nrates  {} rows: {} per US dollar, {} .. {}",
            r.rows,
            r.currencies.join(", "),
            r.periods.first().map_or("", String::as_str),
            r.periods.last().map_or("", String::as_str)
        );
    }
    let problems = if verify { Some(store::verify(store)?) } else { None };
    if let Some(problems) = &problems {
        if problems.is_empty() {
            let _ = writeln!(text, "\nverify: every file matches its manifest");
        } else {
            let _ = writeln!(text, "\nverify: {} problems", problems.len());
            for p in problems {
                let _ = writeln!(text, "  {}", p.0);
            }
        }
    }
    Ok(InfoReport { text, problems })
}

/// Period labels as runs (`2024-01 .. 2024-03, 2024-05`).
fn span_of(labels: &[String], frequency: crate::period::Frequency) -> String {
    let mut periods: Vec<crate::period::Period> = labels
        .iter()
        .filter_map(|p| crate::period::Period::parse(p).ok())
        .map(|p| crate::period::Period { frequency, ..p })
        .collect();
    periods.sort();
    describe_periods(&periods)
}

/// For each dimension that holds aggregate codes: how many rows are
/// aggregates of it, which codes, and what a query does with them.
fn aggregate_lines(store: &Store, m: &Manifest, groups: &GroupsManifest) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for dim in AGGREGATE_DIMENSIONS {
        if !m.schema.iter().any(|c| c.name == dim) || m.files.is_empty() {
            continue;
        }
        let candidates = m.aggregate_candidates(dim, groups);
        let counts = crate::exec::rows_by_code(store.root(), m, dim)?;
        let codes = counts.column(dim)?.str()?.clone();
        let rows = counts.column("__rows")?.cast(&DataType::UInt64)?.u64()?.clone();
        let (mut aggregate_rows, mut member_rows) = (0u64, 0u64);
        let mut present: Vec<String> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for i in 0..counts.height() {
            let n = rows.get(i).unwrap_or(0);
            match codes.get(i) {
                Some(c) if candidates.iter().any(|a| a == c) => {
                    aggregate_rows += n;
                    present.push(c.to_string());
                }
                Some(c) => {
                    member_rows += n;
                    if dim == "partner" && !crate::groups::is_iso3(c) {
                        unknown.push(c.to_string());
                    }
                }
                None => {}
            }
        }
        if !unknown.is_empty() {
            // A total or continent row not declared as an aggregate would be
            // added to its members: say which codes are not countries.
            unknown.sort();
            let shown = if unknown.len() > 10 {
                format!("{} and {} more", unknown[..10].join(", "), unknown.len() - 10)
            } else {
                unknown.join(", ")
            };
            lines.push(format!(
                "{:<11} {} partner codes are not ISO 3166 alpha-3 codes ({shown}): if any is a total, a continent \
                 or a bloc, declare it in the mapping's aggregate_partners and ingest again",
                "note:",
                unknown.len()
            ));
        }
        if present.is_empty() {
            continue;
        }
        present.sort();
        let shown = if present.len() > 8 {
            format!("{} and {} more", present[..7].join(", "), present.len() - 7)
        } else {
            present.join(", ")
        };
        let label = format!("{dim}:");
        lines.push(if member_rows == 0 {
            format!("{label:<11} {aggregate_rows} aggregate rows ({shown}), no member rows: nothing is added twice")
        } else {
            format!(
                "{label:<11} {aggregate_rows} aggregate rows ({shown}) beside {member_rows} member rows: \
                 left out of sums unless a `where` names {dim} codes"
            )
        });
    }
    Ok(lines)
}
