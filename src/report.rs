//! The release as one web page (`tradeql batch JOB.toml --report FILE.html`).
//!
//! For each extract of the job: its title (the query's `chart title`, else the
//! first sentence of its leading comment), its table with the terminal's names,
//! units and formats, its chart (inline SVG, drawn as `run --chart` draws it),
//! and the query's warnings and notes beside it; a footer with each dataset's
//! version and the run's time. One self-contained file: no script, no font,
//! style or image from outside it, so it opens offline.

use crate::chart;
use crate::error::{Error, Result};
use crate::lang::plan::Plan;
use polars::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// One extract as the page shows it.
pub struct Entry {
    pub name: String,
    pub title: String,
    pub query: String,
    /// The table's headers, cells and alignment, or why there is none.
    table: crate::run::Cells,
    /// The chart as SVG, or why there is none.
    chart: std::result::Result<String, String>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub dataset: String,
    pub version: u64,
}

/// The page's entry for one result: `frame` of `plan`, from the query file
/// `query` run with `params` (its text gives the title), with names beside
/// codes from `store`.
pub fn entry(
    name: &str,
    query: &Path,
    params: &[(String, String)],
    plan: &Plan,
    version: u64,
    frame: &DataFrame,
    store: &crate::store::Store,
) -> Result<Entry> {
    let text = std::fs::read_to_string(query).unwrap_or_default();
    entry_of(name, (&query.display().to_string(), &text), params, plan, version, frame, store, true)
}

/// [`entry`] for a query given as (its label, its text), with its chart
/// drawn or not (`draw`).
#[allow(clippy::too_many_arguments)]
pub fn entry_of(
    name: &str,
    (label, text): (&str, &str),
    params: &[(String, String)],
    plan: &Plan,
    version: u64,
    frame: &DataFrame,
    store: &crate::store::Store,
    draw: bool,
) -> Result<Entry> {
    let mut options = plan.chart.clone().unwrap_or_default();
    let mut title = options.title.clone().or_else(|| chart::title_of(text)).unwrap_or_else(|| name.to_string());
    // A query run with parameters says which: its comment speaks of the defaults.
    if !params.is_empty() {
        let given: Vec<String> = params.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        title = format!("{title} ({})", given.join(", "));
    }
    options.title = Some(title.clone());
    let named = crate::run::with_code_names(frame.clone(), store)?;
    let table = crate::run::table_cells(&named, plan)?;
    let chart = if draw { svg(&named, plan, &options) } else { Err("the query has no `chart` stage".to_string()) };
    Ok(Entry {
        name: name.to_string(),
        title,
        query: label.to_string(),
        table,
        chart,
        warnings: Vec::new(),
        notes: Vec::new(),
        dataset: plan.dataset.clone(),
        version,
    })
}

/// The result drawn as an SVG (the text of the file), or why it cannot be.
fn svg(frame: &DataFrame, plan: &Plan, options: &chart::ChartOptions) -> std::result::Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("chart.svg");
    let drawn = chart::draw(frame, plan, plan.currency.as_deref(), options, &path).map_err(|e| e.message.clone())?;
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let mut svg = text.trim_start_matches(|c| c != '<').to_string();
    if svg.starts_with("<?xml")
        && let Some(end) = svg.find("?>")
    {
        svg = svg[end + 2..].trim_start().to_string();
    }
    for s in drawn.skipped {
        svg.push_str(&format!("<p class=\"note\">chart: left out {}</p>", escape(&s)));
    }
    Ok(svg)
}

/// `&`, `<`, `>` and quotes as HTML entities.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The whole page for a job.
pub fn page(job: &str, entries: &[Entry], started_at: &str, seconds: f64, skipped: &[String]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<nav><ol>",
        escape(&format!("Release: {job}")),
        escape(&format!("Release: {job}"))
    );
    for e in entries {
        let _ = write!(html, "<li><a href=\"#{}\">{}</a></li>", escape(&e.name), escape(&e.title));
    }
    html.push_str("</ol></nav>\n");
    for e in entries {
        html.push_str(&section(e));
    }
    let mut versions: Vec<String> = entries.iter().map(|e| format!("{} version {}", e.dataset, e.version)).collect();
    versions.sort();
    versions.dedup();
    let _ = write!(
        html,
        "<footer>\n<p>Data: {}.</p>\n<p>Run {} ({:.2} s) by tradeql {}.{}</p>\n</footer>\n</body>\n</html>\n",
        escape(&versions.join(", ")),
        escape(started_at),
        seconds,
        env!("CARGO_PKG_VERSION"),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" Not shown (failed or unchanged): {}.", escape(&skipped.join(", ")))
        }
    );
    html
}

/// One extract's section of the page: heading, source line, warnings and
/// notes, the table and the chart (also what a notebook shows of a result).
pub fn section(e: &Entry) -> String {
    let mut html = String::new();
    let _ = write!(html, "<section id=\"{}\">\n<h2>{}</h2>\n", escape(&e.name), escape(&e.title));
    let _ = writeln!(
        html,
        "<p class=\"source\">{} · {} version {} · {}</p>",
        escape(&e.name),
        escape(&e.dataset),
        e.version,
        escape(&e.query)
    );
    for w in &e.warnings {
        let _ = writeln!(html, "<p class=\"warning\">warning: {}</p>", escape(w));
    }
    for n in &e.notes {
        let _ = writeln!(html, "<p class=\"note\">note: {}</p>", escape(n));
    }
    html.push_str("<div class=\"figure\">\n");
    let (headers, cells, right) = &e.table;
    html.push_str("<table>\n<thead><tr>");
    for (h, r) in headers.iter().zip(right) {
        let _ = write!(html, "<th{}>{}</th>", if *r { " class=\"n\"" } else { "" }, escape(h));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    let rows = cells.first().map_or(0, Vec::len);
    for i in 0..rows {
        html.push_str("<tr>");
        for (c, r) in cells.iter().zip(right) {
            let _ = write!(html, "<td{}>{}</td>", if *r { " class=\"n\"" } else { "" }, escape(&c[i]));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
    match &e.chart {
        Ok(svg) => {
            let _ = writeln!(html, "<figure class=\"chart\">{svg}</figure>");
        }
        Err(why) => {
            let _ = writeln!(html, "<p class=\"note\">no chart: {}</p>", escape(why));
        }
    }
    html.push_str("</div>\n</section>\n");
    html
}

/// One extract's section on its own (a notebook's view of a result): in a
/// `<div class="tradeql">`, with the page's style scoped to it, so that it
/// restyles nothing around it.
pub fn fragment(e: &Entry) -> String {
    let scoped: String = STYLE
        .split_inclusive('}')
        .filter(|rule| !rule.starts_with("body{"))
        .map(|rule| {
            let (selectors, body) = rule.split_once('{').unwrap_or((rule, ""));
            let scoped: Vec<String> = selectors.split(',').map(|s| format!(".tradeql {s}")).collect();
            format!("{}{{{body}", scoped.join(","))
        })
        .collect();
    let base = ".tradeql{font-family:'DejaVu Sans',Verdana,sans-serif;color:#222}";
    format!("<div class=\"tradeql\"><style>{base}{scoped}</style>{}</div>", section(e))
}

/// Writes the page to `path` atomically.
pub fn write(path: &Path, html: &str) -> Result<()> {
    if path.is_dir() {
        return Err(Error::usage(format!("--report {} is a folder: give a file such as report.html", path.display())));
    }
    crate::store::write_atomic(path, html.as_bytes())
}

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:2em auto;max-width:1200px;color:#222}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:.85em;margin:1em 0}th,td{padding:.2em .6em;border-bottom:1px solid #eee}\
th{text-align:left;background:#f4f4f4}.n{text-align:right;font-variant-numeric:tabular-nums}\
.warning{color:#8a4b00;background:#fff4e0;padding:.3em .6em}.note,.source{color:#666;font-size:.85em}\
figure.chart{margin:0}figure.chart svg{max-width:100%;height:auto}footer{margin-top:3em;color:#666;font-size:.85em}";
