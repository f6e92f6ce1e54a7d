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

/// What the query's `chart` stage asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChartOptions {
    pub kind: Option<ChartKind>,
    pub title: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Line,
    Bar,
}

/// What was drawn: the kind and each series with its number of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub kind: ChartKind,
    pub series: Vec<(String, usize)>,
}

struct Series {
    name: String,
    /// (x, amount) in display units.
    points: Vec<(f64, f64)>,
    rate: Vec<(f64, f64)>,
    marks: Vec<(f64, f64)>,
}

fn register_font() -> Result<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(Error::internal("the embedded chart font did not load")) }
}

fn number(column: &Column, i: usize) -> Option<f64> {
    column.get(i).ok().and_then(|v| v.extract::<f64>())
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
    let mut series: Vec<Series> = Vec::new();
    if keys.is_empty() {
        for a in &amounts {
            let col = frame.column(a)?;
            let mut s = Series { name: a.clone(), points: Vec::new(), rate: Vec::new(), marks: Vec::new() };
            for (i, (x, _)) in xs.iter().enumerate() {
                if let Some(v) = number(col, i) {
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
            let name =
                keys.iter().map(|k| frame.column(k).map(|c| text(c, i))).collect::<PolarsResult<Vec<_>>>()?.join(" / ");
            let s = groups.entry(name.clone()).or_insert(Series {
                name,
                points: Vec::new(),
                rate: Vec::new(),
                marks: Vec::new(),
            });
            if let Some(v) = number(amount, i) {
                s.points.push((*x, v * scale));
                if marked(i)? {
                    s.marks.push((*x, v * scale));
                }
            }
            if let Some(r) = rate.and_then(|c| number(c, i)) {
                s.rate.push((*x, r * rate_scale));
            }
        }
        let mut all: Vec<Series> = groups.into_values().collect();
        all.sort_by(|a, b| {
            let total = |s: &Series| s.points.iter().map(|p| p.1).sum::<f64>();
            total(b).total_cmp(&total(a)).then(a.name.cmp(&b.name))
        });
        if all.len() > MAX_SERIES {
            let rest = all.split_off(MAX_SERIES - 1);
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
        s.rate = xs.iter().enumerate().filter_map(|(i, (x, _))| number(col, i).map(|v| (*x, v * rate_scale))).collect();
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
    };
    let result = (|| -> Result<()> {
        if ext == "svg" {
            let root = SVGBackend::new(&tmp, (WIDTH, HEIGHT)).into_drawing_area();
            render(&root, kind, &series, &labels, &title, &y_label, rate_label.as_deref(), time)?;
            root.present().map_err(|e| Error::internal(format!("cannot draw the chart: {e}")))?;
        } else {
            let root = BitMapBackend::new(&tmp, (WIDTH, HEIGHT)).into_drawing_area();
            render(&root, kind, &series, &labels, &title, &y_label, rate_label.as_deref(), time)?;
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
    (lo, hi + pad)
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
    time: Option<TimeKey>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let font = |size: i32| ("sans-serif", size).into_font();
    if kind == ChartKind::Bar {
        let values: Vec<(String, f64)> =
            series.iter().map(|s| (s.name.clone(), s.points.last().map_or(0.0, |p| p.1))).collect();
        let (lo, hi) = bounds(values.iter().map(|v| v.1));
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(20))
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
            .label_style(font(13))
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
    let step = if time == Some(TimeKey::Year) { 1.0 } else { 1.0 / 12.0 };
    let (lo, hi) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let rates: Vec<&Series> = series.iter().filter(|s| !s.rate.is_empty()).collect();
    let (rlo, rhi) = bounds(rates.iter().flat_map(|s| s.rate.iter().map(|p| p.1)));
    let rlo = rlo.min(-rhi * 0.05);
    let mut chart = ChartBuilder::on(root)
        .caption(title, font(20))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .right_y_label_area_size(if rates.is_empty() { 10 } else { 70 })
        .build_cartesian_2d((x0 - step * 0.5)..(x1 + step * 0.5), lo..hi)
        .map_err(plot_err)?
        .set_secondary_coord((x0 - step * 0.5)..(x1 + step * 0.5), rlo..rhi);
    let label_of = |x: &f64| -> String {
        labels
            .range(..)
            .min_by(|a, b| (f64::from_bits(*a.0) - x).abs().total_cmp(&(f64::from_bits(*b.0) - x).abs()))
            .filter(|(b, _)| (f64::from_bits(**b) - x).abs() < step * 0.5)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(labels.len().min(13))
        .x_label_formatter(&label_of)
        .y_desc(y_label)
        .label_style(font(13))
        .draw()
        .map_err(plot_err)?;
    if let Some(rl) = rate_label {
        chart.configure_secondary_axes().y_desc(rl).label_style(font(13)).draw().map_err(plot_err)?;
    }
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        if !s.marks.is_empty() {
            chart.draw_series(s.marks.iter().map(|p| Circle::new(*p, 5, c.filled()))).map_err(plot_err)?;
        }
        if !s.rate.is_empty() {
            let name = format!("{} (rate, right axis)", s.name);
            chart
                .draw_secondary_series(DashedLineSeries::new(s.rate.iter().copied(), 6, 4, c.stroke_width(1)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(font(12))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}
