//! Charts: the files are valid SVG or PNG of the expected size, and what is
//! drawn matches the query's result (one line per group, a point per period).

use crate::common::*;
use crate::queries::bundled_store;
use std::path::Path;

fn query(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("queries").join(name).to_string_lossy().to_string()
}

/// Polylines of the SVG with exactly `n` points (the data lines; legend
/// samples and dashes have two).
fn lines_with_points(svg: &str, n: usize) -> usize {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| {
            let points = p.split("points=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
            points.split_whitespace().count() == n
        })
        .count()
}

#[test]
fn monthly_flows_draw_two_lines_of_24_months_with_rates() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("flows.svg");
    let out = tradeql(&["run", &query("monthly_flows.tql"), "--store", s(bundled_store()), "--chart", s(&svg)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("(Line, 2 series)"));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"), "not an SVG document");
    assert!(text.contains("width=\"960\"") && text.contains("height=\"540\""));
    // The result has 48 rows: 24 months for each of 2 flows.
    let rows = csv_rows(&ok(&["run", &query("monthly_flows.tql"), "--store", s(bundled_store()), "--format", "csv"]));
    assert_eq!(rows.len(), 48);
    assert_eq!(lines_with_points(&text, 24), 2, "one line of 24 months per flow");
    for label in ["export", "import", "value (trillion CNY)", "value_yoy (%)", "2024-01", "with year-on-year growth"] {
        assert!(text.contains(label), "the chart lacks {label:?}");
    }
}

#[test]
fn many_groups_become_the_largest_and_others() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("partners.svg");
    ok(&["run", &query("minerals_partners.tql"), "--store", s(bundled_store()), "--chart", s(&svg)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    // 39 partners over 8 years: the 6 largest and "others", each with 8 points.
    assert_eq!(lines_with_points(&text, 8), tradeql::chart::MAX_SERIES);
    assert!(text.contains("others"));
    assert!(!text.contains("value_share (%)"), "no rate axis for so many series");
}

#[test]
fn png_charts_have_the_png_signature_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("flows.png");
    ok(&["run", &query("monthly_flows.tql"), "--store", s(bundled_store()), "--chart", s(&png)]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (tradeql::chart::WIDTH, tradeql::chart::HEIGHT));
}

#[test]
fn one_period_is_drawn_as_bars_and_records_are_marked() {
    let dir = tempfile::tempdir().unwrap();
    let q = write(
        dir.path(),
        "bars.tql",
        "from gacc\nwhere year = 2024\nby year, flow\nsum value\nshow value as trillion\n",
    );
    let svg = dir.path().join("bars.svg");
    let out = tradeql(&["run", s(&q), "--store", s(bundled_store()), "--chart", s(&svg)]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(Bar, 2 series)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("export") && text.contains("import"));
    // December 2024 is the record month of monthly_2024.tql: one mark.
    let svg = dir.path().join("monthly.svg");
    ok(&["run", &query("monthly_2024.tql"), "--store", s(bundled_store()), "--chart", s(&svg)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(text.matches("<circle").count(), 1, "one record marked");
}

#[test]
fn results_that_cannot_be_charted_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("x.svg");
    let q = write(dir.path(), "rate.tql", "from gacc\nby year\nshow growth = yoy(value) as pct\n");
    let err = fails(&["run", s(&q), "--store", s(bundled_store()), "--chart", s(&svg)]);
    assert!(err.contains("nothing to chart: the result has no amount to draw (columns: year, growth)"), "{err}");
    let q = write(dir.path(), "total.tql", "from gacc\nagg value = sum(value)\n");
    let err = fails(&["run", s(&q), "--store", s(bundled_store()), "--chart", s(&svg)]);
    assert!(err.contains("nothing to chart against: the result has no period and no group column"), "{err}");
    let err = fails(&[
        "run",
        &query("monthly_flows.tql"),
        "--store",
        s(bundled_store()),
        "--chart",
        s(&dir.path().join("x.jpg")),
    ]);
    assert!(err.contains("a chart is a .svg or a .png file"), "{err}");
    let q = write(dir.path(), "pie.tql", "from gacc\nby year\nchart pie\n");
    let err = fails(&["run", s(&q), "--store", s(bundled_store())]);
    assert!(err.contains("unknown chart `pie`") && err.contains("charts are `line` or `bar`"), "{err}");
    assert!(!svg.exists(), "no chart file after a failure");
}
