//! Charts: a query's result drawn as a picture (`tradeql run FILE --chart PATH`).
//!
//! Trade figures are read as charts: a monthly series with its growth, partner
//! shares as bars, a record month marked on the line. The chart is read off the
//! result and its plan: the period column is the x axis, the key columns make
//! one series per group (the largest few, the rest summed as "others"), number
//! columns are amounts on the left axis (in the query's display unit, such as
//! trillion yuan), `pct` columns are rates on a second axis (for at most three
//! series, beyond which the chart would be unreadable), and yes/no columns
//! (a record, a 12-month high) mark the points where they hold. A result with a
//! single period is drawn as bars across groups. SVG or PNG, drawn with plotters
//! and an embedded font (DejaVu Sans), so no browser, Python or system font is
//! needed.

use crate::error::{Error, Result};
use crate::lang::plan::{Format, Plan, TimeKey};
use crate::period::{Frequency, Period};
use plotters::prelude::*;
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Largest number of series drawn; the rest are summed as "others".
pub const MAX_SERIES: usize = 7;
/// Largest number of series whose rate is drawn too (on the second axis).
pub const MAX_RATE_SERIES: usize = 3;
pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// DejaVu Sans cut to Latin and punctuation (25 KB): what an SVG carries.
const FONT_LATIN: &[u8] = include_bytes!("../assets/DejaVuSans-latin.ttf");
/// WenQuanYi Micro Hei cut to GB 2312 (1.2 MB; scripts/cjk-font.sh): Chinese text.
const FONT_CJK: &[u8] = include_bytes!("../assets/WenQuanYiMicroHei-gb2312.ttf");
const LATIN: &str = "DejaVu Sans";
const CJK: &str = "WenQuanYi Micro Hei";

/// Whether `text` holds Chinese (or other CJK) characters.
fn has_cjk(text: &str) -> bool {
    text.chars().any(|c| matches!(c as u32, 0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0xFF00..=0xFFEF))
}

/// The font a text is drawn with: the CJK one where it has CJK characters
/// (it has Latin letters too), else DejaVu Sans.
fn family_of(text: &str) -> &'static str {
    if has_cjk(text) { CJK } else { LATIN }
}

// What a query says of its chart belongs to the language; the chart reads it.
pub use crate::lang::plan::{ChartKind, ChartOptions};

/// What was drawn: the kind and each series with its number of points;
/// what was left out, in words (values that are not finite numbers).
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub kind: ChartKind,
    pub series: Vec<(String, usize)>,
    pub skipped: Vec<String>,
}

#[derive(Clone)]
struct Series {
    name: String,
    /// (x, amount) in display units.
    points: Vec<(f64, f64)>,
    rate: Vec<(f64, f64)>,
    marks: Vec<(f64, f64)>,
}

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(LATIN, FontStyle::Normal, FONT).is_ok()
            && plotters::style::register_font(CJK, FontStyle::Normal, FONT_CJK).is_ok()
    });
    if ok { Ok(()) } else { Err(Error::internal("the embedded chart font did not load")) }
}

fn number(column: &Column, i: usize) -> Option<f64> {
    column.get(i).ok().and_then(|v| v.extract::<f64>())
}

/// The values of `column` that can be drawn: finite numbers. Infinite and NaN
/// values (growth from a zero base) are counted into `skipped`, never drawn.
fn finite(column: &Column, i: usize, skipped: &mut BTreeMap<String, usize>) -> Option<f64> {
    let v = number(column, i)?;
    if v.is_finite() {
        return Some(v);
    }
    *skipped.entry(column.name().to_string()).or_default() += 1;
    None
}

/// A chart's title from a query's text: the first sentence of its leading
/// comment (`# ...` lines before the first stage); when that is long, the
/// part before its first colon, else cut at a word with `…`.
pub fn title_of(query: &str) -> Option<String> {
    let comment: Vec<&str> = query
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .map_while(|l| l.strip_prefix('#'))
        .map(str::trim)
        .collect();
    let text = comment.join(" ");
    let sentence = text.split(". ").next().unwrap_or_default().trim().trim_end_matches('.');
    if sentence.is_empty() {
        return None;
    }
    const LONGEST: usize = 80;
    if sentence.chars().count() <= LONGEST {
        return Some(sentence.to_string());
    }
    if let Some((head, _)) = sentence.split_once(": ").filter(|(h, _)| h.chars().count() <= LONGEST) {
        return Some(head.to_string());
    }
    let mut out = String::new();
    for word in sentence.split(' ') {
        if out.chars().count() + word.chars().count() + 1 > LONGEST - 1 {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.push('…');
    Some(out)
}

/// The distance between two neighbouring periods of the x axis.
fn step_of(time: Option<TimeKey>, data: Frequency) -> f64 {
    match time {
        Some(TimeKey::Year) | None => 1.0,
        Some(TimeKey::Half) => 0.5,
        Some(TimeKey::Quarter) => 0.25,
        Some(TimeKey::Month) => f64::from(data.months()) / 12.0,
    }
}

/// The runs of `points` (sorted by x) without a gap: a missing period or a
/// null breaks the line.
pub(crate) fn segments(points: &[(f64, f64)], step: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(run) if run.last().is_some_and(|q| p.0 - q.0 <= step * 1.5) => run.push(*p),
            _ => out.push(vec![*p]),
        }
    }
    out
}

/// The most period labels the x axis holds before they would overlap.
const MOST_LABELS: usize = 12;

/// Which periods of the x axis are labelled: every one up to 12; beyond,
/// each quarter's first month (monthly data), else each year's first period,
/// else every 2nd, 5th or 10th year: always a regular subset of the result's
/// own periods.
pub(crate) fn labelled(xs: &[f64], step: f64) -> Vec<f64> {
    if xs.len() <= MOST_LABELS {
        return xs.to_vec();
    }
    let month = |x: &f64| ((x * 12.0).round() as i64).rem_euclid(12);
    let year = |x: &f64| (x * 12.0).round() as i64 / 12;
    let quarters: Vec<f64> = xs.iter().copied().filter(|x| month(x) % 3 == 0).collect();
    if step < 0.25 && !quarters.is_empty() && quarters.len() <= MOST_LABELS {
        return quarters;
    }
    for every in [1, 2, 5, 10, 20, 50] {
        let years: Vec<f64> = xs.iter().copied().filter(|x| month(x) == 0 && year(x) % every == 0).collect();
        if !years.is_empty() && years.len() <= MOST_LABELS {
            return years;
        }
    }
    xs.iter().copied().step_by(xs.len().div_ceil(MOST_LABELS)).collect()
}

fn text(column: &Column, i: usize) -> String {
    match column.get(i) {
        Ok(AnyValue::String(s)) => s.to_string(),
        Ok(AnyValue::StringOwned(s)) => s.to_string(),
        Ok(AnyValue::Null) => "null".into(),
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The x position and label of each row's period.
fn period_axis(frame: &DataFrame, t: TimeKey, data: Frequency) -> Result<Vec<(f64, String)>> {
    let column = frame.column(t.column())?;
    (0..frame.height())
        .map(|i| {
            Ok(match (t, column.get(i)?) {
                (TimeKey::Year, v) => {
                    let y = v.extract::<i32>().unwrap_or(0);
                    (f64::from(y), y.to_string())
                }
                (TimeKey::Half, v) => {
                    let label = v.to_string().trim_matches('"').to_string();
                    let (year, half) = label.split_once("-H").unwrap_or((&label, "1"));
                    let y: f64 = year.parse().unwrap_or(0.0);
                    (y + if half == "2" { 0.5 } else { 0.0 }, label)
                }
                (TimeKey::Quarter, v) => {
                    let label = match v {
                        AnyValue::String(s) => s.to_string(),
                        AnyValue::StringOwned(s) => s.to_string(),
                        other => other.to_string(),
                    };
                    let p = Period::parse(&label)
                        .map_err(|e| Error::internal(format!("quarter label {label}: {}", e.0)))?;
                    (f64::from(p.year) + f64::from(p.month - 1) / 12.0, label)
                }
                (TimeKey::Month, AnyValue::Date(d)) => {
                    let p = Period::from_days(d, if data == Frequency::Month { Frequency::Month } else { data });
                    (f64::from(p.year) + f64::from(p.month - 1) / 12.0, p.to_string())
                }
                (_, other) => return Err(Error::internal(format!("unexpected period value {other}"))),
            })
        })
        .collect()
}

fn unit_label(name: &str, format: Option<Format>, currency: Option<&str>) -> String {
    match format {
        Some(Format::Scale(_, unit)) => {
            format!("{name} ({unit}{})", currency.map(|c| format!(" {c}")).unwrap_or_default())
        }
        Some(Format::Pct | Format::Pct2) => format!("{name} (%)"),
        Some(Format::Pp) => format!("{name} (pp)"),
        _ => format!("{name}{}", currency.map(|c| format!(" ({c})")).unwrap_or_default()),
    }
}

fn scale_of(format: Option<Format>) -> f64 {
    match format {
        Some(Format::Scale(s, _)) => 1.0 / s,
        Some(Format::Pct | Format::Pct2) => 100.0,
        _ => 1.0,
    }
}

/// Draws `frame` (the result of `plan`) to `path` (.svg or .png), atomically.
pub fn draw(
    frame: &DataFrame,
    plan: &Plan,
    currency: Option<&str>,
    options: &ChartOptions,
    path: &Path,
) -> Result<Drawn> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    if ext != "svg" && ext != "png" {
        return Err(Error::usage(format!("cannot draw {}: a chart is a .svg or a .png file", path.display())));
    }
    if frame.height() == 0 {
        return Err(Error::usage("nothing to chart: the query returned no rows"));
    }
    let format_of = |name: &str| plan.outputs.iter().find(|o| o.name == name).and_then(|o| o.format);
    let time = plan.time.filter(|t| frame.column(t.column()).is_ok());
    let keys: Vec<String> = plan.keys.iter().filter(|k| frame.column(k).is_ok()).cloned().collect();
    let mut amounts: Vec<String> = Vec::new();
    let mut rates: Vec<String> = Vec::new();
    let mut marks: Vec<String> = Vec::new();
    for c in frame.columns() {
        let name = c.name().to_string();
        if keys.contains(&name) || time.is_some_and(|t| t.column() == name) {
            continue;
        }
        match c.dtype() {
            DataType::Boolean => marks.push(name),
            d if d.is_primitive_numeric() => {
                if matches!(format_of(&name), Some(Format::Pct | Format::Pct2 | Format::Pp)) {
                    rates.push(name)
                } else {
                    amounts.push(name)
                }
            }
            _ => {}
        }
    }
    let columns = || frame.get_column_names().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
    if amounts.is_empty() {
        return Err(Error::usage(format!(
            "nothing to chart: the result has no amount to draw (columns: {}); a chart needs a number column that is not a rate",
            columns()
        )));
    }
    if time.is_none() && keys.is_empty() {
        return Err(Error::usage(format!(
            "nothing to chart against: the result has no period and no group column (columns: {})",
            columns()
        ))
        .hint("group the query with `by year` (or month, quarter) or by a dimension"));
    }
    let first = amounts[0].clone();
    let first_format = format_of(&first);
    // Amount columns drawn together share the first one's unit.
    let amounts: Vec<String> = if keys.is_empty() {
        amounts.into_iter().filter(|a| format_of(a) == first_format).collect()
    } else {
        vec![first.clone()]
    };
    let xs: Vec<(f64, String)> = match time {
        Some(t) => period_axis(frame, t, plan.frequency)?,
        None => (0..frame.height()).map(|i| (i as f64, String::new())).collect(),
    };
    let distinct_periods = xs.iter().map(|(x, _)| x.to_bits()).collect::<std::collections::BTreeSet<_>>().len();
    let kind =
        options.kind.unwrap_or(if time.is_some() && distinct_periods > 1 { ChartKind::Line } else { ChartKind::Bar });
    if kind == ChartKind::Line && time.is_none() {
        return Err(Error::usage("a line chart needs a period column: add year, quarter, month or period to `by`"));
    }
    let scale = scale_of(first_format);
    let rate_col = rates.first().cloned();
    let rate_scale = scale_of(rate_col.as_deref().and_then(&format_of));
    // A point is marked once when any yes/no column (record, high) holds there.
    let marked = |i: usize| -> Result<bool> {
        for m in &marks {
            if frame.column(m)?.get(i)? == AnyValue::Boolean(true) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    // Build the series: one per group (or per amount column when ungrouped).
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut series: Vec<Series> = Vec::new();
    if keys.is_empty() {
        for a in &amounts {
            let col = frame.column(a)?;
            let mut s = Series { name: a.clone(), points: Vec::new(), rate: Vec::new(), marks: Vec::new() };
            for (i, (x, _)) in xs.iter().enumerate() {
                if let Some(v) = finite(col, i, &mut skipped) {
                    s.points.push((*x, v * scale));
                }
            }
            series.push(s);
        }
    } else {
        let mut groups: BTreeMap<String, Series> = BTreeMap::new();
        let amount = frame.column(&first)?;
        let rate = rate_col.as_ref().map(|r| frame.column(r)).transpose()?;
        for (i, (x, _)) in xs.iter().enumerate() {
            // A code's name where the result has it (`run --names`, or a
            // `partner_name` column), else the code.
            let name = keys
                .iter()
                .map(|k| {
                    let named = frame.column(&format!("{k}_name")).ok().map(|c| text(c, i)).filter(|n| n != "null");
                    Ok(named.unwrap_or(text(frame.column(k)?, i)))
                })
                .collect::<PolarsResult<Vec<_>>>()?
                .join(" / ");
            let s = groups.entry(name.clone()).or_insert(Series {
                name,
                points: Vec::new(),
                rate: Vec::new(),
                marks: Vec::new(),
            });
            if let Some(v) = finite(amount, i, &mut skipped) {
                s.points.push((*x, v * scale));
                if marked(i)? {
                    s.marks.push((*x, v * scale));
                }
            }
            if let Some(r) = rate.and_then(|c| finite(c, i, &mut skipped)) {
                s.rate.push((*x, r * rate_scale));
            }
        }
        let mut all: Vec<Series> = groups.into_values().collect();
        all.sort_by(|a, b| {
            let total = |s: &Series| s.points.iter().map(|p| p.1).sum::<f64>();
            total(b).total_cmp(&total(a)).then(a.name.cmp(&b.name))
        });
        if all.len() > MAX_SERIES {
            let mut rest = all.split_off(MAX_SERIES - 1);
            // The query's own "others" (`top`) joins the chart's: one "others".
            if let Some(i) = all.iter().position(|s| s.name == "others") {
                rest.push(all.remove(i));
                all.push(rest.remove(0));
            }
            let mut others: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
            for s in rest {
                for (x, v) in s.points {
                    others.entry(x.to_bits()).or_insert((x, 0.0)).1 += v;
                }
            }
            all.push(Series {
                name: "others".into(),
                points: others.into_values().collect(),
                rate: Vec::new(),
                marks: Vec::new(),
            });
        }
        // A rate per group is readable for a few groups only.
        if all.len() > MAX_RATE_SERIES {
            for s in &mut all {
                s.rate.clear();
            }
        }
        series = all;
    }
    if keys.is_empty()
        && let (Some(r), Some(s)) = (&rate_col, series.first_mut())
    {
        let col = frame.column(r)?;
        s.rate = xs
            .iter()
            .enumerate()
            .filter_map(|(i, (x, _))| finite(col, i, &mut skipped).map(|v| (*x, v * rate_scale)))
            .collect();
        let amount = frame.column(&first)?;
        for (i, (x, _)) in xs.iter().enumerate() {
            if let (true, Some(v)) = (marked(i)?, number(amount, i)) {
                s.marks.push((*x, v * scale));
            }
        }
    }
    let labels: BTreeMap<u64, String> = xs.iter().map(|(x, l)| (x.to_bits(), l.clone())).collect();
    let title = options.title.clone().unwrap_or_else(|| {
        let what = plan.dataset.clone();
        format!("{what}: {}", amounts.join(", "))
    });
    let step = step_of(time, plan.frequency);
    let axes = Axes {
        step,
        grouped: !keys.is_empty(),
        right_room: false,
        rate_name: rate_col.clone(),
        marks: marks.iter().filter(|_| series.iter().any(|s| !s.marks.is_empty())).cloned().collect(),
    };
    let y_label = unit_label(&first, first_format, currency);
    let rate_label = rate_col
        .as_deref()
        .filter(|_| series.iter().any(|s| !s.rate.is_empty()))
        .map(|r| unit_label(r, format_of(r), None));
    register_font()?;
    let tmp = path.with_extension(format!("tmp.{ext}"));
    let drawn = Drawn {
        kind,
        series: series
            .iter()
            .map(|s| (s.name.clone(), if kind == ChartKind::Line { s.points.len() } else { 1 }))
            .collect(),
        skipped: skipped
            .iter()
            .map(|(c, n)| format!("{n} value{} of {c} not finite (infinite or NaN)", if *n == 1 { "" } else { "s" }))
            .collect(),
    };
    let result = (|| -> Result<()> {
        if ext == "svg" {
            let root = SVGBackend::new(&tmp, (WIDTH, HEIGHT)).into_drawing_area();
            panels(&root, kind, &series, &labels, &title, &y_label, rate_label.as_deref(), &axes)?;
            root.present().map_err(|e| Error::internal(format!("cannot draw the chart: {e}")))?;
            drop(root);
            embed_fonts(&tmp)?;
        } else {
            let root = BitMapBackend::new(&tmp, (WIDTH, HEIGHT)).into_drawing_area();
            panels(&root, kind, &series, &labels, &title, &y_label, rate_label.as_deref(), &axes)?;
            root.present().map_err(|e| Error::internal(format!("cannot draw the chart: {e}")))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot write", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(drawn)
}

/// Puts the fonts an SVG names inside it (`@font-face` with the font's
/// bytes), so that it looks as the PNG does on a machine without them:
/// DejaVu Sans cut to Latin (25 KB, 34 KB as base64), and the CJK font (1.2
/// MB) only when the chart has Chinese text.
fn embed_fonts(path: &Path) -> Result<()> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    let Some(open) = text.find("<svg").and_then(|at| text[at..].find('>').map(|end| at + end + 1)) else {
        return Ok(());
    };
    let face = |family: &str, bytes: &[u8]| {
        format!(
            "@font-face{{font-family:\"{family}\";src:url(data:font/ttf;base64,{})}}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    let mut style = face(LATIN, FONT_LATIN);
    if has_cjk(&text) {
        style.push_str(&face(CJK, FONT_CJK));
    }
    let out = format!("{}\n<defs><style>{style}</style></defs>{}", &text[..open], &text[open..]);
    std::fs::write(path, out).map_err(|e| Error::io("cannot write", path, e))
}

fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::internal(format!("cannot draw the chart: {e}"))
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let lo = lo.min(0.0);
    let pad = ((hi - lo) * 0.08).max(1e-9);
    // Below zero (a fall), room for a labelled tick under the lowest point.
    (if lo < 0.0 { lo - pad } else { lo }, hi + pad)
}

/// Draws the chart, in two panels when the columns of an ungrouped line chart
/// differ in size by more than 4 times (a year-to-date sum beside monthly
/// values): the first column and those near its size above, with the rate;
/// the larger ones below, on their own axis.
#[allow(clippy::too_many_arguments)]
fn panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    kind: ChartKind,
    series: &[Series],
    labels: &BTreeMap<u64, String>,
    title: &str,
    y_label: &str,
    rate_label: Option<&str>,
    axes: &Axes,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let size = |s: &Series| s.points.iter().map(|p| p.1.abs()).fold(0.0, f64::max);
    let reference = series.first().map_or(0.0, size);
    let (near, large): (Vec<Series>, Vec<Series>) =
        series.iter().cloned().partition(|s| axes.grouped || reference == 0.0 || size(s) <= 4.0 * reference);
    if kind != ChartKind::Line || large.is_empty() {
        return render(root, kind, series, labels, title, y_label, rate_label, axes);
    }
    let (upper, lower) = root.split_vertically(HEIGHT as i32 * 58 / 100);
    render(&upper, kind, &near, labels, title, y_label, rate_label, axes)?;
    let below =
        Axes { step: axes.step, grouped: false, right_room: rate_label.is_some(), rate_name: None, marks: Vec::new() };
    let offset: Vec<Series> = large.into_iter().map(|s| Series { rate: Vec::new(), marks: Vec::new(), ..s }).collect();
    // Colours follow the series' order across both panels.
    let mut all =
        vec![Series { name: String::new(), points: Vec::new(), rate: Vec::new(), marks: Vec::new() }; near.len()];
    all.extend(offset);
    render(&lower, kind, &all, labels, "", y_label, None, &below)
}

/// How the line chart's axes and legend are drawn.
struct Axes {
    /// The distance between two neighbouring periods.
    step: f64,
    /// Whether the series are groups (else columns of one result).
    grouped: bool,
    /// Whether room is kept for a right axis without one (a lower panel
    /// aligned with an upper one that has it).
    right_room: bool,
    /// The rate column drawn on the right axis, if any.
    rate_name: Option<String>,
    /// The yes/no columns that mark points (one legend entry for them).
    marks: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn render<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    kind: ChartKind,
    series: &[Series],
    labels: &BTreeMap<u64, String>,
    title: &str,
    y_label: &str,
    rate_label: Option<&str>,
    axes: &Axes,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let font = |size: i32| (LATIN, size).into_font();
    let font_for = |text: &str, size: i32| (family_of(text), size).into_font();
    let any_cjk = series.iter().any(|s| has_cjk(&s.name));
    let names_font = |size: i32| if any_cjk { (CJK, size).into_font() } else { font(size) };
    if kind == ChartKind::Bar {
        let values: Vec<(String, f64)> =
            series.iter().map(|s| (s.name.clone(), s.points.last().map_or(0.0, |p| p.1))).collect();
        let (lo, hi) = bounds(values.iter().map(|v| v.1));
        let mut chart = ChartBuilder::on(root)
            .caption(title, font_for(title, 20))
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..values.len() as f64, lo..hi)
            .map_err(plot_err)?;
        let names: Vec<String> = values.iter().map(|v| v.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .y_desc(y_label)
            .x_labels(values.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.26 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .label_style(names_font(13))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(
                values.iter().enumerate().map(|(i, (_, v))| {
                    Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], colour(i).filled())
                }),
            )
            .map_err(plot_err)?;
        return Ok(());
    }
    let xs: Vec<f64> = labels.keys().map(|b| f64::from_bits(*b)).collect();
    let (x0, x1) = (xs.first().copied().unwrap_or(0.0), xs.last().copied().unwrap_or(1.0));
    let step = axes.step;
    let (lo, hi) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let rates: Vec<&Series> = series.iter().filter(|s| !s.rate.is_empty()).collect();
    let (rlo, rhi) = bounds(rates.iter().flat_map(|s| s.rate.iter().map(|p| p.1)));
    let rlo = rlo.min(-rhi * 0.05);
    let mut chart = ChartBuilder::on(root)
        .caption(title, font_for(title, 20))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .right_y_label_area_size(if rates.is_empty() && !axes.right_room { 10 } else { 70 })
        .build_cartesian_2d((x0 - step * 0.5)..(x1 + step * 0.5), lo..hi)
        .map_err(plot_err)?
        .set_secondary_coord((x0 - step * 0.5)..(x1 + step * 0.5), rlo..rhi);
    // The x axis is the result's own periods: a tick and a label at each
    // labelled period (plotters' own ticks fall between them).
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .label_style(font(13))
        .draw()
        .map_err(plot_err)?;
    let (bx, by) = root.get_base_pixel();
    for x in labelled(&xs, step) {
        let (px, py) = chart.backend_coord(&(x, lo));
        let (px, py) = (px - bx, py - by);
        let label = labels.get(&x.to_bits()).cloned().unwrap_or_default();
        root.draw(&PathElement::new(vec![(px, py), (px, py + 5)], BLACK)).map_err(plot_err)?;
        let style = font(13).into_text_style(root).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Center,
            plotters::style::text_anchor::VPos::Top,
        ));
        root.draw(&Text::new(label, (px, py + 8), style)).map_err(plot_err)?;
    }
    if let Some(rl) = rate_label {
        chart.configure_secondary_axes().y_desc(rl).label_style(font(13)).draw().map_err(plot_err)?;
        // Rates below zero read against a zero line.
        if rlo < 0.0 && rhi > 0.0 {
            let zero = vec![(x0 - step * 0.5, 0.0), (x1 + step * 0.5, 0.0)];
            chart.draw_secondary_series(LineSeries::new(zero, BLACK.mix(0.5).stroke_width(1))).map_err(plot_err)?;
        }
    }
    let ungrouped = !axes.grouped;
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        // One legend entry per series, on its first run; a gap starts a new run.
        for (j, run) in segments(&s.points, step).into_iter().enumerate() {
            let drawn = chart.draw_series(LineSeries::new(run, c.stroke_width(2))).map_err(plot_err)?;
            if j == 0 {
                drawn
                    .label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            }
        }
        if !s.marks.is_empty() {
            chart.draw_series(s.marks.iter().map(|p| Circle::new(*p, 5, c.filled()))).map_err(plot_err)?;
        }
        if !s.rate.is_empty() {
            let rate = axes.rate_name.clone().unwrap_or_else(|| "rate".into());
            let name =
                if ungrouped { format!("{rate} (right axis)") } else { format!("{}: {rate} (right axis)", s.name) };
            for (j, run) in segments(&s.rate, step).into_iter().enumerate() {
                let drawn = chart
                    .draw_secondary_series(DashedLineSeries::new(run, 6, 4, c.stroke_width(1)))
                    .map_err(plot_err)?;
                if j == 0 {
                    drawn
                        .label(name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1)));
                }
            }
        }
    }
    if !axes.marks.is_empty() {
        // The marked points' own legend entry: a dot, named by what marks them.
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(plot_err)?
            .label(axes.marks.join(", "))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLACK.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(names_font(12))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}
