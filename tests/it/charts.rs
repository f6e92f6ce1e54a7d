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

/// The text elements of an SVG, in order.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>').and_then(|(_, r)| r.split_once("</text>")).map(|(t, _)| t.trim().to_string()))
        .map(|t| t.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
        .collect()
}

/// The x-axis labels: the texts that are periods.
fn period_labels(svg: &str) -> Vec<String> {
    texts(svg).into_iter().filter(|t| tradeql::period::Period::parse(t).is_ok() && t.contains('-')).collect()
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
    // The record dot, and its legend entry named by the columns that mark it.
    assert_eq!(text.matches("<circle").count(), 2, "one record marked, one legend dot");
    assert!(texts(&text).contains(&"value_record, above_4tn".to_string()), "{:?}", texts(&text));
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

#[test]
fn the_x_axis_labels_the_results_own_periods() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("flows.svg");
    ok(&["run", &query("monthly_flows.tql"), "--store", s(bundled_store()), "--chart", s(&svg)]);
    let months: Vec<String> = (2023..=2024).flat_map(|y| (1..=12).map(move |m| format!("{y}-{m:02}"))).collect();
    // 24 months: each quarter's first month labelled, once, in order (24
    // labels would overlap).
    let firsts: Vec<String> = months.iter().filter(|m| ["01", "04", "07", "10"].contains(&&m[5..])).cloned().collect();
    assert_eq!(period_labels(&std::fs::read_to_string(&svg).unwrap()), firsts);
    // Quarters are labelled as quarters.
    let q = write(dir.path(), "q.tql", "from gacc\nby quarter\nsum value\nshow value as trillion\n");
    ok(&["run", s(&q), "--store", s(bundled_store()), "--chart", s(&svg)]);
    let quarters: Vec<String> = (2023..=2024).flat_map(|y| (1..=4).map(move |k| format!("{y}-Q{k}"))).collect();
    assert_eq!(period_labels(&std::fs::read_to_string(&svg).unwrap()), quarters);
    // 30 months of a panel: each quarter's first month, a regular subset;
    // 12 months: every month.
    let panel = dir.path().join("panel");
    gen_into(&panel, "--partners 3 --products 3 --months 30 --seed 4 --start 2022-01");
    let m = write(dir.path(), "m.tql", "from trade\nby month\nsum value\n");
    ok(&["run", s(&m), "--store", s(&panel), "--chart", s(&svg)]);
    let firsts: Vec<String> = (0..10).map(|i| format!("{}-{:02}", 2022 + i * 3 / 12, (i * 3) % 12 + 1)).collect();
    assert_eq!(period_labels(&std::fs::read_to_string(&svg).unwrap()), firsts);
    ok(&["run", &query("monthly_2024.tql"), "--store", s(bundled_store()), "--chart", s(&svg)]);
    let labels = period_labels(&std::fs::read_to_string(&svg).unwrap());
    // Both panels (monthly values, year to date) label every month of 2024.
    assert_eq!(labels, [&months[12..], &months[12..]].concat());
}

#[test]
fn a_missing_month_breaks_the_line_and_legends_name_each_series_once() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("gap.svg");
    // The partner table has no March: January-February, then April-December.
    let q = "from gacc_partners | where partner in (\"USA\", \"JPN\") and flow = \"export\" \
             | by month, partner | sum value | show value as billion";
    ok(&["run", "-e", q, "--store", s(bundled_store()), "--chart", s(&svg)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(lines_with_points(&text, 9), 2, "April-December, one line per partner");
    assert!(lines_with_points(&text, 2) >= 2, "January-February, apart from April on");
    let labels = texts(&text);
    // Names, not ISO3 codes, from the store's names table; each once.
    for name in ["US", "Japan"] {
        assert_eq!(labels.iter().filter(|t| *t == name).count(), 1, "{name}: {labels:?}");
    }
    assert!(!labels.contains(&"USA".to_string()));
    assert!(!period_labels(&text).contains(&"2024-03".to_string()));
}

#[test]
fn a_rate_is_named_as_the_query_names_it_with_ticks_below_zero() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("m.svg");
    ok(&["run", &query("monthly_2024.tql"), "--store", s(bundled_store()), "--chart", s(&svg)]);
    let labels = texts(&std::fs::read_to_string(&svg).unwrap());
    assert!(labels.contains(&"value_yoy (right axis)".to_string()), "{labels:?}");
    assert_eq!(labels.iter().filter(|t| t.contains("right axis")).count(), 1);
    // Title from the query's first comment sentence, cut at its colon.
    assert_eq!(labels[0], "Monthly total trade in 2024");
    // March 2024 fell (-1.3%): a labelled tick below zero.
    assert!(labels.iter().any(|t| t.starts_with('-') && t.parse::<f64>().is_ok()), "{labels:?}");
    // The year-to-date sum is on a panel of its own (two value axes).
    assert_eq!(labels.iter().filter(|t| *t == "value (trillion CNY)").count(), 2, "{labels:?}");
}

#[test]
fn an_infinite_growth_is_left_out_and_said_and_the_chart_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let q = write(
        dir.path(),
        "inf.tql",
        "from gacc\nderive e = if(flow = \"export\" and year = 2024, value, 0)\nby month\nagg e = sum(e)\n\
         show e as trillion, g = yoy(e) as pct\n",
    );
    let svg = dir.path().join("inf.svg");
    let started = std::time::Instant::now();
    let out = tradeql(&["run", s(&q), "--store", s(bundled_store()), "--chart", s(&svg)]);
    // It used to loop for over ten minutes; the bound is loose for a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("chart: left out 12 values of g not finite (infinite or NaN)"), "{err}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
}

#[test]
fn the_querys_others_and_the_charts_others_are_one() {
    let dir = tempfile::tempdir().unwrap();
    let q = write(
        dir.path(),
        "top.tql",
        "from critical_minerals\nby year, partner\nsum value\ntop 9 partner by value\nshow value as million\n",
    );
    let svg = dir.path().join("top.svg");
    ok(&["run", s(&q), "--store", s(bundled_store()), "--chart", s(&svg)]);
    let labels = texts(&std::fs::read_to_string(&svg).unwrap());
    assert_eq!(labels.iter().filter(|t| *t == "others").count(), 1, "{labels:?}");
}

#[test]
fn chinese_names_draw_glyphs_and_the_svg_carries_its_fonts() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let csv = write(
        dir.path(),
        "t.csv",
        "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,TOTAL,5\n2024-01,CHN,JPN,export,TOTAL,3\n",
    );
    ok(&["ingest", s(&csv), "--store", s(&store), "-d", "t", "-q"]);
    let q = write(dir.path(), "q.tql", "from t\nby partner\nsum value\n");
    // The same chart with two different Chinese names: drawn glyphs differ,
    // missing-glyph boxes would not.
    let mut pngs = Vec::new();
    for (i, names) in ["code,name\nUSA,美国\nJPN,日本\n", "code,name\nUSA,中国\nJPN,韩国\n"].iter().enumerate()
    {
        let table = write(dir.path(), &format!("names{i}.csv"), names);
        ok(&["names", "add", s(&table), "--of", "partner", "--store", s(&store)]);
        let png = dir.path().join(format!("c{i}.png"));
        ok(&["run", s(&q), "--store", s(&store), "--chart", s(&png)]);
        pngs.push(std::fs::read(&png).unwrap());
    }
    assert_ne!(pngs[0], pngs[1], "the Chinese names drew as the same boxes");
    let svg = dir.path().join("c.svg");
    ok(&["run", s(&q), "--store", s(&store), "--chart", s(&svg)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(texts(&text).contains(&"中国".to_string()), "{:?}", texts(&text));
    assert!(text.contains("@font-face{font-family:\"WenQuanYi Micro Hei\";src:url(data:font/ttf;base64,"));
    assert!(text.contains("font-family=\"WenQuanYi Micro Hei\""));
    // A chart without Chinese carries the Latin font only.
    let latin = dir.path().join("l.svg");
    let plain = write(dir.path(), "p.tql", "from t\nby period\nsum value\n");
    ok(&["run", s(&plain), "--store", s(&store), "--chart", s(&latin)]);
    let text = std::fs::read_to_string(&latin).unwrap();
    assert!(text.contains("@font-face{font-family:\"DejaVu Sans\"") && !text.contains("WenQuanYi"));
}
