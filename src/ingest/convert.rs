//! From one source record to canonical rows.
//!
//! [`Layout`] is a mapping resolved against a source's header: for every
//! canonical column, where its value comes from. [`Layout::convert`] turns one
//! record into zero or more rows (several for a wide layout), appending them to
//! per-year column buffers ([`Batch`]), or explains precisely what is wrong with
//! the record. It runs once per source row on the worker threads, so it does
//! not allocate per field.

use crate::error::{Error, Result};
use crate::mapping::{CANONICAL, Mapping, REQUIRED};
use crate::period::{Frequency, Period};
use crate::suggest::closest;
use polars::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use xxhash_rust::xxh3::xxh3_128;

/// The stored file schema, in order. `year` is the Hive directory, not a column.
pub fn store_schema() -> Schema {
    Schema::from_iter([
        Field::new("period".into(), DataType::Date),
        Field::new("reporter".into(), DataType::String),
        Field::new("partner".into(), DataType::String),
        Field::new("flow".into(), DataType::String),
        Field::new("product".into(), DataType::String),
        Field::new("region".into(), DataType::String),
        Field::new("value".into(), DataType::Float64),
        Field::new("quantity".into(), DataType::Float64),
        Field::new("quantity_unit".into(), DataType::String),
        Field::new("aggregate".into(), DataType::Boolean),
    ])
}

/// The longest code (reporter, partner, product, region) a store keeps: a
/// longer one is an error naming its line, never truncated.
pub const MAX_CODE_BYTES: usize = 256;

const PERIOD: usize = 0;
const REPORTER: usize = 1;
const PARTNER: usize = 2;
const FLOW: usize = 3;
const PRODUCT: usize = 4;
const REGION: usize = 5;
const VALUE: usize = 6;
const QUANTITY: usize = 7;
const QUANTITY_UNIT: usize = 8;

/// Where one canonical column's value comes from.
#[derive(Debug, Clone)]
enum Source {
    Column(usize),
    Constant(String),
    /// The name of the melted wide column (or what `[wide.names]` maps it to).
    WideName,
    /// The cell of the melted wide column.
    WideCell,
    Absent,
}

/// A record of source fields, by position; `None` where the record is too short.
pub trait Record {
    fn field(&self, index: usize) -> Option<&str>;
    fn field_count(&self) -> usize;
}

/// One bad source row: where, and why.
#[derive(Debug, Clone)]
pub struct RowError {
    pub line: u64,
    pub column: String,
    pub value: String,
    pub reason: String,
    pub hint: Option<String>,
    /// The whole source record, for the rejects file.
    pub record: String,
}

impl RowError {
    pub fn into_error(self, file: &std::path::Path) -> Error {
        let mut e = Error::input(self.reason).in_file(file).at_line(self.line);
        if !self.column.is_empty() {
            e = e.in_column(self.column).with_value(self.value);
        }
        if let Some(h) = self.hint {
            e = e.hint(h);
        }
        e
    }
}

/// A mapping resolved against a source header.
pub struct Layout {
    header: Vec<String>,
    sources: [Source; 9],
    /// Melted columns: (source index, the name value it stands for).
    wide: Vec<(usize, String)>,
    wide_names_to: Option<String>,
    year_column: Option<usize>,
    value_scale: f64,
    quantity_scale: f64,
    thousands: Option<u8>,
    decimal_comma: bool,
    recode: [Option<HashMap<String, String>>; 9],
    /// A handful of codes: a linear scan beats hashing every row.
    aggregate_partners: Vec<String>,
    aggregate_products: Vec<String>,
    aggregate_regions: Vec<String>,
}

impl Layout {
    /// Resolves `mapping` against `header`; errors name the missing column and
    /// list the ones the file has.
    pub fn resolve(mapping: &Mapping, header: &[String], group_names: &[String]) -> Result<Layout> {
        let find = |name: &str| header.iter().position(|h| h == name);
        let missing_column = |name: &str, role: &str| {
            let mut e = Error::mapping(format!(
                "the mapping names column `{name}` for {role}, but the file has no such column; \
                 it has: {}",
                header.join(", ")
            ));
            if let Some(s) = closest(name, header.iter().map(String::as_str)) {
                e = e.hint(format!("did you mean `{s}`?"));
            }
            e
        };
        let wide = mapping.wide.as_ref();
        let mut sources: [Source; 9] = std::array::from_fn(|_| Source::Absent);
        for (i, name) in CANONICAL.iter().enumerate() {
            sources[i] = if wide.is_some_and(|w| w.names_to == *name || (w.names_to == "month" && *name == "period")) {
                Source::WideName
            } else if wide.is_some_and(|w| w.values_to == *name) {
                Source::WideCell
            } else if let Some(c) = mapping.constants.get(*name) {
                Source::Constant(c.clone())
            } else if let Some(src) = mapping.source_of(name) {
                Source::Column(find(src).ok_or_else(|| missing_column(src, &format!("`{name}`")))?)
            } else if let Some(i) = find(name) {
                Source::Column(i)
            } else {
                Source::Absent
            };
        }
        for (i, name) in CANONICAL.iter().enumerate() {
            if REQUIRED.contains(name) && matches!(sources[i], Source::Absent) {
                let mut e =
                    Error::input(format!("missing required column `{name}`; the file has: {}", header.join(", ")));
                let other_delimiter = [';', '\t', '|', ','].into_iter().find(|d| {
                    header.len() == 1 && header[0].contains(*d) && Some(*d as u8) != mapping.delimiter_byte()
                });
                if let Some(d) = other_delimiter {
                    e = e.hint(format!(
                        "the header looks separated by {d:?}: declare delimiter = {:?} in the mapping",
                        d.to_string()
                    ));
                } else if let Some(s) = closest(name, header.iter().map(String::as_str)) {
                    e = e.hint(format!("rename it in a mapping: [columns] {name} = \"{s}\""));
                } else {
                    e = e.hint(format!(
                        "map it with [columns] {name} = \"...\" or set it with [constants] {name} = \"...\""
                    ));
                }
                return Err(e);
            }
        }
        let mut melted = Vec::new();
        if let Some(w) = wide {
            for c in &w.columns {
                let idx = find(c).ok_or_else(|| missing_column(c, "[wide] columns"))?;
                melted.push((idx, w.names.get(c).cloned().unwrap_or_else(|| c.clone())));
            }
        }
        let year_column = match mapping.source_of("year") {
            Some(y) => Some(find(y).ok_or_else(|| missing_column(y, "`year`"))?),
            None => None,
        };
        // Each table also maps its codes to themselves: a source that already
        // writes a target code (`USA`) is covered by the table.
        let recode = std::array::from_fn(|i| {
            mapping.recode.get(CANONICAL[i]).map(|m| {
                let mut table: HashMap<String, String> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for v in m.values() {
                    table.entry(v.clone()).or_insert_with(|| v.clone());
                }
                table
            })
        });
        let mut aggregate_partners: Vec<String> = mapping.aggregate_partners.clone();
        aggregate_partners.push("WLD".to_string());
        aggregate_partners.extend(group_names.iter().cloned());
        let mut aggregate_products: Vec<String> = mapping.aggregate_products.clone();
        aggregate_products.push("TOTAL".to_string());
        Ok(Layout {
            header: header.to_vec(),
            sources,
            wide: melted,
            wide_names_to: wide.map(|w| w.names_to.clone()),
            year_column,
            value_scale: mapping.value_scale.unwrap_or(1.0),
            quantity_scale: mapping.quantity_scale.unwrap_or(1.0),
            thousands: mapping.thousands.as_ref().map(|s| s.as_bytes()[0]),
            decimal_comma: mapping.decimal.as_deref() == Some(","),
            recode,
            aggregate_partners,
            aggregate_products,
            aggregate_regions: mapping.aggregate_regions.clone(),
        })
    }

    /// The source column name behind canonical column `i`, for error messages.
    fn column_name(&self, i: usize, wide_col: Option<usize>) -> String {
        match &self.sources[i] {
            Source::Column(c) => self.header[*c].clone(),
            Source::WideCell | Source::WideName => {
                wide_col.map(|c| self.header[c].clone()).unwrap_or_else(|| CANONICAL[i].to_string())
            }
            _ => CANONICAL[i].to_string(),
        }
    }

    /// Converts one record into rows appended to `batch`. A record with any bad
    /// field adds no row at all and returns the first problem.
    pub fn convert<R: Record>(&self, rec: &R, line: u64, batch: &mut Batch) -> Result<(), Box<RowError>> {
        if rec.field_count() != self.header.len() {
            return Err(Box::new(RowError {
                line,
                column: String::new(),
                value: String::new(),
                reason: format!("the row has {} fields but the header has {}", rec.field_count(), self.header.len()),
                hint: Some("check for an unquoted delimiter inside a field".into()),
                record: join_record(rec),
            }));
        }
        let with_record = |mut e: Box<RowError>| {
            e.record = join_record(rec);
            e
        };
        if self.wide.is_empty() {
            let row = self.row(rec, line, None).map_err(with_record)?;
            batch.push(&row, line);
            return Ok(());
        }
        // Check every cell first: a record is taken whole or not at all.
        let mut rows = Vec::with_capacity(self.wide.len());
        for (k, (idx, _)) in self.wide.iter().enumerate() {
            let cell = rec.field(*idx).unwrap_or("").trim();
            if cell.is_empty() {
                continue; // an empty cell in a wide layout is "no trade reported"
            }
            rows.push(self.row(rec, line, Some(k)).map_err(with_record)?);
        }
        for row in &rows {
            batch.push(row, line);
        }
        Ok(())
    }

    /// A code of column `i` as the source writes it, when the mapping's
    /// `[recode.X]` table for the column neither maps it nor yields it: such
    /// a value would otherwise be stored under its raw name, a partner of
    /// its own. (A flow already spelled as tradeql reads flows passes.)
    fn unrecoded<'a, R: Record>(&'a self, rec: &'a R, i: usize, wide: Option<usize>) -> Option<&'a str> {
        let map = self.recode[i].as_ref()?;
        let raw = self.raw_text(rec, i, wide).filter(|t| !t.is_empty())?;
        let known = map.contains_key(raw) || i == FLOW && parse_flow(raw).is_some();
        (!known).then_some(raw)
    }

    /// Column `i` of a record as the source writes it.
    fn raw_text<'a, R: Record>(&'a self, rec: &'a R, i: usize, wide: Option<usize>) -> Option<&'a str> {
        match &self.sources[i] {
            Source::Column(c) => rec.field(*c).map(str::trim),
            Source::Constant(c) => Some(c.as_str()),
            Source::WideName => wide.map(|k| self.wide[k].1.as_str()),
            Source::WideCell => wide.and_then(|k| rec.field(self.wide[k].0)).map(str::trim),
            Source::Absent => None,
        }
    }

    /// Column `i` of a record, recoded through its `[recode.X]` table.
    fn text<'a, R: Record>(&'a self, rec: &'a R, i: usize, wide: Option<usize>) -> Option<&'a str> {
        let raw = self.raw_text(rec, i, wide)?;
        if let Some(map) = &self.recode[i]
            && let Some(to) = map.get(raw)
        {
            return Some(to.as_str());
        }
        Some(raw)
    }

    fn row<'a, R: Record>(&'a self, rec: &'a R, line: u64, wide: Option<usize>) -> Result<Row<'a>, Box<RowError>> {
        let wide_col = wide.map(|k| self.wide[k].0);
        let fail = |i: usize, value: &str, reason: String, hint: Option<String>| -> Box<RowError> {
            Box::new(RowError {
                line,
                column: self.column_name(i, wide_col),
                value: value.to_string(),
                reason,
                hint,
                record: String::new(),
            })
        };
        let required = |i: usize| -> Result<&'a str, Box<RowError>> {
            match self.text(rec, i, wide) {
                Some(t) if !t.is_empty() => Ok(t),
                _ => Err(fail(i, "", format!("`{}` is empty", CANONICAL[i]), None)),
            }
        };
        for i in [REPORTER, PARTNER, FLOW, PRODUCT, REGION] {
            if let Some(raw) = self.unrecoded(rec, i, wide) {
                let table = format!("[recode.{}]", CANONICAL[i]);
                return Err(fail(
                    i,
                    raw,
                    format!("not in the mapping's {table}"),
                    Some(format!("add it to {table}: \"{raw}\" = \"CODE\" (or = \"{raw}\" to keep it as it is)")),
                ));
            }
        }
        let period_text = required(PERIOD)?;
        let period = if self.wide_names_to.as_deref() == Some("month") {
            let year = self.year_column.and_then(|c| rec.field(c)).map(str::trim).unwrap_or("");
            let month = month_number(period_text)
                .ok_or_else(|| fail(PERIOD, period_text, "not a month (1..12, 01..12 or Jan..Dec)".into(), None))?;
            Period::parse(&format!("{year}-{month:02}"))
                .map_err(|e| fail(PERIOD, year, format!("bad year: {}", e.0), None))?
        } else {
            Period::parse(period_text).map_err(|e| fail(PERIOD, period_text, format!("bad period: {}", e.0), None))?
        };
        let code = |i: usize, t: &'a str| -> Result<&'a str, Box<RowError>> {
            if t.len() > MAX_CODE_BYTES {
                return Err(fail(
                    i,
                    t,
                    format!("a code of {} bytes; a code has at most {MAX_CODE_BYTES}", t.len()),
                    Some("is the column right? codes are short (ISO3, HS codes, region names)".into()),
                ));
            }
            Ok(t)
        };
        let reporter = code(REPORTER, required(REPORTER)?)?;
        let partner = code(PARTNER, required(PARTNER)?)?;
        let flow_text = required(FLOW)?;
        let flow = parse_flow(flow_text).ok_or_else(|| {
            fail(
                FLOW,
                flow_text,
                "unknown flow; expected export/import, X/M or 1/2".into(),
                Some("map other spellings with [recode.flow] in a mapping".into()),
            )
        })?;
        let product = code(PRODUCT, required(PRODUCT)?)?;
        let region = self.text(rec, REGION, wide).filter(|t| !t.is_empty());
        if let Some(r) = region {
            code(REGION, r)?;
        }
        let value_text = required(VALUE)?;
        let value =
            self.number(value_text).map_err(|(reason, hint)| fail(VALUE, value_text, reason, hint))? * self.value_scale;
        if !value.is_finite() {
            return Err(fail(VALUE, value_text, "the value times value_scale is too large for a number".into(), None));
        }
        if value < 0.0 {
            return Err(fail(VALUE, value_text, "negative trade value".into(), None));
        }
        let quantity = match self.text(rec, QUANTITY, wide).filter(|t| !t.is_empty()) {
            None => None,
            Some(q) => {
                let n = self.number(q).map_err(|(reason, hint)| fail(QUANTITY, q, reason, hint))?;
                if n < 0.0 {
                    return Err(fail(QUANTITY, q, "negative quantity".into(), None));
                }
                let scaled = n * self.quantity_scale;
                if !scaled.is_finite() {
                    return Err(fail(
                        QUANTITY,
                        q,
                        "the quantity times quantity_scale is too large for a number".into(),
                        None,
                    ));
                }
                Some(scaled)
            }
        };
        let quantity_unit = self.text(rec, QUANTITY_UNIT, wide).filter(|t| !t.is_empty());
        if let Some(u) = quantity_unit {
            code(QUANTITY_UNIT, u)?;
        }
        let aggregate = self.aggregate_partners.iter().any(|a| a == partner)
            || self.aggregate_products.iter().any(|a| a == product)
            || region.is_some_and(|r| self.aggregate_regions.iter().any(|a| a == r));
        Ok(Row { period, reporter, partner, flow, product, region, value, quantity, quantity_unit, aggregate })
    }

    /// Parses a number, honouring the declared thousands separator and decimal
    /// mark. A thousands separator must sit between groups of three digits
    /// (`1.234.567`, `1.234`), so that no number of a file is read one way and
    /// its neighbour another.
    fn number(&self, text: &str) -> Result<f64, (String, Option<String>)> {
        let has_separator = self.thousands.is_some_and(|t| text.as_bytes().contains(&t));
        if self.decimal_comma && !has_separator && text.contains('.') {
            // 1.234 in a file whose decimal mark is the comma is most likely 1234.
            return Err((
                "a '.' in a number of a file whose decimal mark is ','".into(),
                Some("if '.' separates thousands, declare thousands = \".\" in the mapping".into()),
            ));
        }
        if !self.decimal_comma
            && !has_separator
            && let Ok(n) = text.parse::<f64>()
            && n.is_finite()
        {
            return Ok(n);
        }
        if has_separator && !grouped_by_three(text, self.thousands.unwrap_or(b','), self.decimal_comma) {
            let sep = self.thousands.map(char::from).unwrap_or(',');
            return Err((
                format!("the thousands separator {sep:?} is not between groups of three digits"),
                Some("check the mapping's thousands and decimal settings against the file".into()),
            ));
        }
        let mut cleaned = String::with_capacity(text.len());
        for b in text.bytes() {
            if Some(b) == self.thousands {
                continue;
            }
            cleaned.push(if self.decimal_comma && b == b',' { '.' } else { b as char });
        }
        match cleaned.parse::<f64>() {
            Ok(n) if n.is_finite() && text.is_ascii() => Ok(n),
            Ok(n) if !n.is_finite() && text.is_ascii() => Err(("the number is too large".into(), None)),
            _ => {
                let hint = (self.thousands.is_none()
                    && text.contains(',')
                    && text.replace(',', "").parse::<f64>().is_ok())
                .then(|| {
                    "the number has a thousands separator; declare it with thousands = \",\" in a mapping".to_string()
                });
                Err(("cannot parse as a number".into(), hint))
            }
        }
    }
}

/// True when every `sep` in the integer part of `text` closes a group of one
/// to three digits and opens groups of exactly three: `-1,234,567.5`.
fn grouped_by_three(text: &str, sep: u8, decimal_comma: bool) -> bool {
    let decimal = if decimal_comma { b',' } else { b'.' };
    let body = text.strip_prefix(['-', '+']).unwrap_or(text).as_bytes();
    let int_part = match body.iter().position(|&b| b == decimal && b != sep) {
        Some(i) => &body[..i],
        None => body,
    };
    let groups: Vec<&[u8]> = int_part.split(|&b| b == sep).collect();
    groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|g| g.len() == 3)
        && groups.iter().all(|g| g.iter().all(u8::is_ascii_digit))
        && body[int_part.len()..].iter().all(|&b| b != sep)
}

fn join_record<R: Record>(rec: &R) -> String {
    (0..rec.field_count()).map(|i| rec.field(i).unwrap_or("")).collect::<Vec<_>>().join(",")
}

fn parse_flow(text: &str) -> Option<&'static str> {
    const SPELLINGS: [(&str, &str); 8] = [
        ("export", "export"),
        ("import", "import"),
        ("exports", "export"),
        ("imports", "import"),
        ("x", "export"),
        ("m", "import"),
        ("1", "export"),
        ("2", "import"),
    ];
    SPELLINGS.iter().find(|(s, _)| s.eq_ignore_ascii_case(text)).map(|(_, f)| *f)
}

fn month_number(text: &str) -> Option<u32> {
    const NAMES: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    if let Ok(m) = text.parse::<u32>() {
        return (1..=12).contains(&m).then_some(m);
    }
    let lower = text.to_ascii_lowercase();
    NAMES.iter().position(|n| lower.starts_with(n)).map(|i| i as u32 + 1)
}

struct Row<'a> {
    period: Period,
    reporter: &'a str,
    partner: &'a str,
    flow: &'static str,
    product: &'a str,
    region: Option<&'a str>,
    value: f64,
    quantity: Option<f64>,
    quantity_unit: Option<&'a str>,
    aggregate: bool,
}

/// Canonical rows of one year, as column buffers, with each row's source line
/// and key hash (for the duplicate check).
pub struct YearRows {
    period: Vec<i32>,
    reporter: StringChunkedBuilder,
    partner: StringChunkedBuilder,
    flow: StringChunkedBuilder,
    product: StringChunkedBuilder,
    region: StringChunkedBuilder,
    value: Vec<f64>,
    quantity: Vec<Option<f64>>,
    quantity_unit: StringChunkedBuilder,
    aggregate: Vec<bool>,
    pub lines: Vec<u64>,
    pub keys: Vec<u128>,
}

impl YearRows {
    fn new(capacity: usize) -> Self {
        let b = |n: &str| StringChunkedBuilder::new(n.into(), capacity);
        YearRows {
            period: Vec::with_capacity(capacity),
            reporter: b("reporter"),
            partner: b("partner"),
            flow: b("flow"),
            product: b("product"),
            region: b("region"),
            value: Vec::with_capacity(capacity),
            quantity: Vec::with_capacity(capacity),
            quantity_unit: b("quantity_unit"),
            aggregate: Vec::with_capacity(capacity),
            lines: Vec::with_capacity(capacity),
            keys: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.period.len()
    }

    pub fn is_empty(&self) -> bool {
        self.period.is_empty()
    }

    /// The rows as a frame with the store schema; lines and keys are left behind.
    pub fn into_frame(self) -> Result<(DataFrame, Vec<u64>, Vec<u128>)> {
        let n = self.period.len();
        let columns: Vec<Column> = vec![
            Int32Chunked::from_vec("period".into(), self.period).into_date().into_column(),
            self.reporter.finish().into_column(),
            self.partner.finish().into_column(),
            self.flow.finish().into_column(),
            self.product.finish().into_column(),
            self.region.finish().into_column(),
            Float64Chunked::from_vec("value".into(), self.value).into_column(),
            Float64Chunked::from_iter_options("quantity".into(), self.quantity.into_iter()).into_column(),
            self.quantity_unit.finish().into_column(),
            BooleanChunked::from_iter_values("aggregate".into(), self.aggregate.into_iter()).into_column(),
        ];
        Ok((DataFrame::new(n, columns)?, self.lines, self.keys))
    }
}

/// Rows converted from one block of the source, split by year, plus what the
/// store needs to know about them.
pub struct Batch {
    pub years: BTreeMap<i32, YearRows>,
    /// Start days of the periods seen.
    pub periods: HashSet<i32>,
    /// The first frequency seen, and the line it was seen on.
    pub frequency: Option<(Frequency, u64)>,
    /// A row whose frequency differs from the first one.
    pub mixed: Option<(u64, String)>,
    capacity: usize,
    key_buf: Vec<u8>,
    last_period: Option<Period>,
}

impl Batch {
    pub fn new(capacity: usize) -> Self {
        Batch {
            years: BTreeMap::new(),
            periods: HashSet::new(),
            frequency: None,
            mixed: None,
            capacity,
            key_buf: Vec::with_capacity(128),
            last_period: None,
        }
    }

    pub fn rows(&self) -> usize {
        self.years.values().map(YearRows::len).sum()
    }

    fn push(&mut self, row: &Row<'_>, line: u64) {
        let p = row.period;
        if self.last_period != Some(p) {
            self.last_period = Some(p);
            self.periods.insert(p.days());
            match self.frequency {
                None => self.frequency = Some((p.frequency, line)),
                Some((f, _)) if f != p.frequency && self.mixed.is_none() => {
                    self.mixed = Some((line, p.to_string()));
                }
                _ => {}
            }
        }
        let days = p.days();
        let capacity = self.capacity;
        let y = self.years.entry(p.year).or_insert_with(|| YearRows::new(capacity));
        y.period.push(days);
        y.reporter.append_value(row.reporter);
        y.partner.append_value(row.partner);
        y.flow.append_value(row.flow);
        y.product.append_value(row.product);
        y.region.append_option(row.region);
        y.value.push(row.value);
        y.quantity.push(row.quantity);
        y.quantity_unit.append_option(row.quantity_unit);
        y.aggregate.push(row.aggregate);
        y.lines.push(line);
        // The duplicate key: period, reporter, partner, flow, product, region.
        let k = &mut self.key_buf;
        k.clear();
        k.extend_from_slice(&days.to_le_bytes());
        for part in [row.reporter, row.partner, row.flow, row.product, row.region.unwrap_or("")] {
            k.extend_from_slice(part.as_bytes());
            k.push(0xff); // not valid UTF-8, so no field can contain it
        }
        y.keys.push(xxh3_128(k));
    }
}
