//! From one source record to canonical rows.
//!
//! [`Layout`] is a mapping resolved against a source's header: for every
//! canonical column, where its value comes from. [`Layout::convert`] turns one
//! record into zero or more rows (several for a wide layout), appending them to
//! per-year column buffers ([`Batch`]), or explains precisely what is wrong with
//! the record. It runs once per source row on the worker threads, so it does
//! not allocate per field.

use crate::error::{Error, Result};
use crate::mapping::{CANONICAL, MAX_MEASURES, Mapping, REQUIRED};
use crate::period::{Frequency, Period};
use crate::suggest::closest;
use polars::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use xxhash_rust::xxh3::xxh3_128;

/// The stored file schema, in order, with the dataset's further measures
/// last. `year` is the Hive directory, not a column.
pub fn store_schema(measures: &[String]) -> Schema {
    let mut schema = base_schema();
    for m in measures {
        schema.with_column(m.as_str().into(), DataType::Float64);
    }
    schema
}

fn base_schema() -> Schema {
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
/// Targets are the canonical columns, then the further measures: measure `j`
/// is target `FIRST_MEASURE + j`.
const FIRST_MEASURE: usize = CANONICAL.len();
const NEGATIVE_HINT: &str = "if the source publishes negative revisions, declare allow_negative = true in the mapping";

/// Where one canonical column's value comes from.
#[derive(Debug, Clone)]
enum Source {
    Column(usize),
    Constant(String),
    /// The name of the melted wide column (or what `[wide.names]` maps it to).
    WideName,
    /// The cell of the melted wide column (for this target).
    WideCell,
    Absent,
}

/// Exchange rates as ingest reads them: currency -> (period start day -> units per dollar).
pub type Rates = HashMap<String, HashMap<i32, f64>>;

/// What a layout needs from the store and the command line besides the mapping.
pub struct Context<'a> {
    /// Partner group names (aggregates when they appear as partners).
    pub group_names: &'a [String],
    /// The dataset's currency.
    pub currency: Option<&'a str>,
    /// The store's rates, for rules that read rows in another currency.
    pub rates: Option<&'a Rates>,
}

/// One melted name of a wide layout and, per target (the canonical columns,
/// then the further measures), the source column of its cell.
struct WideSet {
    name: String,
    cells: Vec<Option<usize>>,
}

/// A further measure: where it comes from, its scale, whether it is money.
struct MeasureSlot {
    source: Source,
    scale: f64,
    money: bool,
}

/// What a `[[rows]]` rule does to the rows it picks.
#[derive(Debug, Clone)]
enum RuleAction {
    Skip,
    /// Money cells at this scale and in this currency; these measures null.
    Read {
        scale: Option<f64>,
        currency: Option<String>,
        nulls: Vec<usize>,
    },
}

/// Whether a source field holds the value a rule's `when` asks for: the same
/// text, or the same number (`09` is month 9). A wanted value written with a
/// leading zero (`"01"`, an HS chapter) is a code: its text must match.
fn field_is(field: &str, wanted: &str) -> bool {
    let field = field.trim();
    if field == wanted {
        return true;
    }
    if wanted.len() > 1 && wanted.starts_with('0') && !wanted.starts_with("0.") {
        return false;
    }
    matches!((field.parse::<f64>(), wanted.parse::<f64>()), (Ok(a), Ok(b)) if a == b && a.is_finite())
}

#[cfg(test)]
mod tests {
    use super::field_is;

    #[test]
    fn a_rule_matches_numbers_however_written_and_codes_as_written() {
        assert!(field_is("09", "9") && field_is(" 9 ", "9") && field_is("9.0", "9"));
        assert!(!field_is("10", "9") && !field_is("Sep", "9"));
        assert!(field_is("01", "01") && !field_is("1", "01") && !field_is("001", "01"));
    }
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
    measures: Vec<MeasureSlot>,
    measure_names: Vec<String>,
    /// Melted names with their cells.
    wide: Vec<WideSet>,
    wide_names_to: Option<String>,
    year_column: Option<usize>,
    /// `[columns] month = "..."`: the period is built from the year and month columns.
    month_column: Option<usize>,
    rules: Vec<(Vec<(usize, String)>, RuleAction)>,
    currency: Option<String>,
    rates: Option<Rates>,
    allow_negative: bool,
    /// Source columns that nothing reads and the mapping does not drop.
    pub unread: Vec<String>,
    value_scale: f64,
    quantity_scale: f64,
    thousands: Option<u8>,
    decimal_comma: bool,
    recode: [Option<HashMap<String, String>>; 9],
    /// Whether a code table feeds the column's recode.
    code_table: [bool; 9],
    /// A handful of codes: a linear scan beats hashing every row.
    aggregate_partners: Vec<String>,
    aggregate_products: Vec<String>,
    aggregate_regions: Vec<String>,
}

impl Layout {
    /// Resolves `mapping` against `header`; errors name the missing column and
    /// list the ones the file has.
    pub fn resolve(mapping: &Mapping, header: &[String], ctx: &Context<'_>) -> Result<Layout> {
        let group_names = ctx.group_names;
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
        let sets = mapping.wide_sets();
        let filled = |target: &str| sets.iter().any(|(_, cells)| cells.iter().any(|(t, _)| t == target));
        let month_column = match mapping.source_of("month") {
            Some(m) if !mapping.columns.contains_key("period") => {
                Some(find(m).ok_or_else(|| missing_column(m, "`month`"))?)
            }
            _ => None,
        };
        let mut sources: [Source; 9] = std::array::from_fn(|_| Source::Absent);
        for (i, name) in CANONICAL.iter().enumerate() {
            sources[i] = if wide.is_some_and(|w| w.names_to == *name || (w.names_to == "month" && *name == "period")) {
                Source::WideName
            } else if filled(name) {
                Source::WideCell
            } else if *name == "period"
                && let Some(c) = month_column
            {
                Source::Column(c)
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
        let measure_names = mapping.measure_names();
        let mut measures = Vec::new();
        for name in &measure_names {
            let decl = &mapping.measures[name];
            let source = if filled(name) {
                Source::WideCell
            } else if let Some(src) = mapping.source_of(name) {
                Source::Column(find(src).ok_or_else(|| missing_column(src, &format!("the measure `{name}`")))?)
            } else if let Some(i) = find(name) {
                Source::Column(i)
            } else {
                return Err(Error::mapping(format!(
                    "[measures] declares `{name}`, but nothing fills it; the file has: {}",
                    header.join(", ")
                ))
                .hint(format!("name its column with [columns] {name} = \"...\" or in a [wide.columns.X] table")));
            };
            let money = ctx.currency.is_some_and(|c| c == decl.unit);
            measures.push(MeasureSlot { source, scale: decl.scale.unwrap_or(1.0), money });
        }
        let target_index = |t: &str| {
            CANONICAL
                .iter()
                .position(|c| *c == t)
                .or_else(|| measure_names.iter().position(|m| m == t).map(|j| FIRST_MEASURE + j))
        };
        let mut melted = Vec::new();
        for (name, cells) in &sets {
            let mut slots = vec![None; FIRST_MEASURE + measure_names.len()];
            for (target, column) in cells {
                let idx = find(column).ok_or_else(|| missing_column(column, "[wide] columns"))?;
                if let Some(t) = target_index(target) {
                    slots[t] = Some(idx);
                }
            }
            melted.push(WideSet { name: name.clone(), cells: slots });
        }
        let year_column = match mapping.source_of("year") {
            Some(y) => Some(find(y).ok_or_else(|| missing_column(y, "`year`"))?),
            None => None,
        };
        if month_column.is_some() && year_column.is_none() {
            return Err(Error::mapping(
                "[columns] month needs the year column too: add year = \"...\" under [columns]",
            ));
        }
        // Each table also maps its codes to themselves: a source that already
        // writes a target code (`USA`) is covered by the table. A code
        // table's names come first; the inline [recode.X] entries win.
        let recode = std::array::from_fn(|i| {
            let inline = mapping.recode.get(CANONICAL[i]);
            let file = mapping.code_tables.get(CANONICAL[i]);
            if inline.is_none() && file.is_none() {
                return None;
            }
            let mut table: HashMap<String, String> = HashMap::new();
            if let Some(t) = file {
                table.extend(t.codes.iter().map(|(k, (v, _))| (k.clone(), v.clone())));
            }
            if let Some(m) = inline {
                table.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let targets: Vec<String> = table.values().filter(|v| !v.is_empty()).cloned().collect();
            for v in targets {
                table.entry(v.clone()).or_insert(v);
            }
            Some(table)
        });
        let mut rules = Vec::new();
        for (n, rule) in mapping.rows.iter().enumerate() {
            let mut when = Vec::new();
            for (column, value) in &rule.when {
                let idx = find(column).ok_or_else(|| missing_column(column, &format!("[[rows]] rule {}", n + 1)))?;
                when.push((idx, value.trim().to_string()));
            }
            let action = if rule.skip {
                RuleAction::Skip
            } else {
                if let Some(c) = &rule.currency {
                    if ctx.currency.is_none() {
                        return Err(Error::mapping(format!(
                            "[[rows]] rule {} reads rows in {c}, but the dataset has no currency to convert them to",
                            n + 1
                        ))
                        .hint("declare currency = \"...\" in the mapping"));
                    }
                    let to = ctx.currency.unwrap_or_default();
                    if to != c.as_str() {
                        for need in [c.as_str(), to].into_iter().filter(|x| *x != "USD") {
                            if !ctx.rates.is_some_and(|r| r.contains_key(need)) {
                                return Err(Error::mapping(format!(
                                    "[[rows]] rule {} reads rows in {c} to store them in {to}, \
                                     but the store has no {need} rates (units per US dollar)",
                                    n + 1
                                ))
                                .hint("store them first with `tradeql rates add FILE` (period,currency,per_usd)"));
                            }
                        }
                    }
                }
                let nulls =
                    rule.null_measures.iter().filter_map(|m| measure_names.iter().position(|x| x == m)).collect();
                RuleAction::Read { scale: rule.value_scale, currency: rule.currency.clone(), nulls }
            };
            rules.push((when, action));
        }
        let mut aggregate_partners: Vec<String> = mapping.aggregates_of("partner");
        aggregate_partners.push("WLD".to_string());
        aggregate_partners.extend(group_names.iter().cloned());
        let mut aggregate_products: Vec<String> = mapping.aggregates_of("product");
        aggregate_products.push("TOTAL".to_string());
        // Every source column must be read or dropped by name.
        let mut read: HashSet<usize> = HashSet::new();
        for s in &sources {
            if let Source::Column(c) = s {
                read.insert(*c);
            }
        }
        for m in &measures {
            if let Source::Column(c) = m.source {
                read.insert(c);
            }
        }
        read.extend(melted.iter().flat_map(|w| w.cells.iter().flatten().copied()));
        read.extend(year_column);
        read.extend(rules.iter().flat_map(|(w, _)| w.iter().map(|(c, _)| *c)));
        for d in &mapping.drop {
            match find(d) {
                None => {
                    let mut e = Error::mapping(format!(
                        "drop names column `{d}`, but the file has no such column; it has: {}",
                        header.join(", ")
                    ));
                    if let Some(s) = closest(d, header.iter().map(String::as_str)) {
                        e = e.hint(format!("did you mean `{s}`?"));
                    }
                    return Err(e);
                }
                Some(i) if read.contains(&i) => {
                    return Err(Error::mapping(format!(
                        "drop lists column `{d}`, which the mapping reads: drop only the columns it leaves unread"
                    )));
                }
                Some(_) => {}
            }
        }
        // The melted names of a layout by flow must be flows (after [recode.flow]).
        if wide.is_some_and(|w| w.names_to == "flow") {
            for set in &melted {
                let name = mapping.recode.get("flow").and_then(|m| m.get(&set.name)).unwrap_or(&set.name);
                if parse_flow(name).is_none() {
                    return Err(Error::mapping(format!(
                        "[wide] melts into flows, but `{}` is no flow: export, import, re-export, re-import or total",
                        set.name
                    ))
                    .hint("name the [wide.columns.X] table by its flow, or map the name with [recode.flow]"));
                }
            }
        }
        let unread = header
            .iter()
            .enumerate()
            .filter(|(i, h)| !read.contains(i) && !mapping.drop.contains(h))
            .map(|(_, h)| h.clone())
            .collect();
        Ok(Layout {
            header: header.to_vec(),
            sources,
            measures,
            measure_names,
            wide: melted,
            wide_names_to: wide.map(|w| w.names_to.clone()),
            year_column,
            month_column,
            rules,
            currency: ctx.currency.map(str::to_string),
            rates: if mapping.rows.iter().any(|r| r.currency.is_some()) { ctx.rates.cloned() } else { None },
            allow_negative: mapping.allow_negative,
            unread,
            value_scale: mapping.value_scale.unwrap_or(1.0),
            quantity_scale: mapping.quantity_scale.unwrap_or(1.0),
            thousands: mapping.thousands.as_ref().map(|s| s.as_bytes()[0]),
            decimal_comma: mapping.decimal.as_deref() == Some(","),
            recode,
            code_table: std::array::from_fn(|i| mapping.code_tables.contains_key(CANONICAL[i])),
            aggregate_partners,
            aggregate_products,
            aggregate_regions: mapping.aggregates_of("region"),
        })
    }

    /// The further measures' names, in store order.
    pub fn measure_names(&self) -> &[String] {
        &self.measure_names
    }

    fn source_of(&self, target: usize) -> &Source {
        if target < FIRST_MEASURE { &self.sources[target] } else { &self.measures[target - FIRST_MEASURE].source }
    }

    fn target_name(&self, target: usize) -> &str {
        if target < FIRST_MEASURE { CANONICAL[target] } else { &self.measure_names[target - FIRST_MEASURE] }
    }

    /// The source column name behind target `i` (a canonical column or a
    /// further measure), for error messages.
    fn column_name(&self, i: usize, wide: Option<usize>) -> String {
        match self.source_of(i) {
            Source::Column(c) => self.header[*c].clone(),
            Source::WideCell => wide
                .and_then(|k| self.wide[k].cells[i])
                .map(|c| self.header[c].clone())
                .unwrap_or_else(|| self.target_name(i).to_string()),
            Source::WideName => wide
                .and_then(|k| self.wide[k].cells.iter().flatten().next().copied())
                .map(|c| self.header[c].clone())
                .unwrap_or_else(|| self.target_name(i).to_string()),
            _ => self.target_name(i).to_string(),
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
        let hit = self
            .rules
            .iter()
            .position(|(when, _)| when.iter().all(|(c, v)| rec.field(*c).is_some_and(|f| field_is(f, v))));
        if let Some(k) = hit {
            if batch.rule_hits.len() <= k {
                batch.rule_hits.resize(k + 1, 0);
            }
            batch.rule_hits[k] += 1;
        }
        let rule = hit.map(|k| &self.rules[k].1);
        if matches!(rule, Some(RuleAction::Skip)) {
            return Ok(()); // counted in rule_hits
        }
        if self.wide.is_empty() {
            let row = self.row(rec, line, None, rule).map_err(with_record)?;
            batch.push(&row, line);
            return Ok(());
        }
        // Check every cell first: a record is taken whole or not at all.
        let mut rows = Vec::with_capacity(self.wide.len());
        for (k, set) in self.wide.iter().enumerate() {
            let blank = set.cells.iter().flatten().all(|c| rec.field(*c).unwrap_or("").trim().is_empty());
            if blank {
                continue; // empty cells in a wide layout are "no trade reported"
            }
            rows.push(self.row(rec, line, Some(k), rule).map_err(with_record)?);
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
        let known = map.get(raw).is_some_and(|c| !c.is_empty()) || i == FLOW && parse_flow(raw).is_some();
        (!known).then_some(raw)
    }

    /// Target `i` of a record as the source writes it.
    fn raw_text<'a, R: Record>(&'a self, rec: &'a R, i: usize, wide: Option<usize>) -> Option<&'a str> {
        match self.source_of(i) {
            Source::Column(c) => rec.field(*c).map(str::trim),
            Source::Constant(c) => Some(c.as_str()),
            Source::WideName => wide.map(|k| self.wide[k].name.as_str()),
            Source::WideCell => wide.and_then(|k| self.wide[k].cells[i]).and_then(|c| rec.field(c)).map(str::trim),
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

    /// A rule's scale for money cells, or `default` (the mapping's own).
    fn money_scale(rule: Option<&RuleAction>, default: f64) -> f64 {
        match rule {
            Some(RuleAction::Read { scale: Some(s), .. }) => *s,
            _ => default,
        }
    }

    /// The exchange factor of a row's money cells into the dataset's
    /// currency: 1, or for a rule in another currency the rate of the row's
    /// period (once per row, for the value and every money measure).
    fn exchange(&self, rule: Option<&RuleAction>, period: Period) -> Result<f64, String> {
        let Some(RuleAction::Read { currency: Some(from), .. }) = rule else { return Ok(1.0) };
        let Some(to) = &self.currency else { return Ok(1.0) };
        if from == to {
            return Ok(1.0);
        }
        if period.frequency != Frequency::Month {
            return Err(format!("rates are monthly; a {}ly row cannot be converted", period.frequency));
        }
        let per_usd = |c: &str| -> Result<f64, String> {
            if c == "USD" {
                return Ok(1.0);
            }
            self.rates
                .as_ref()
                .and_then(|r| r.get(c))
                .and_then(|by| by.get(&period.days()))
                .copied()
                .ok_or_else(|| format!("the store has no {c} rate for {period}"))
        };
        Ok(per_usd(to)? / per_usd(from)?)
    }

    fn row<'a, R: Record>(
        &'a self,
        rec: &'a R,
        line: u64,
        wide: Option<usize>,
        rule: Option<&RuleAction>,
    ) -> Result<Row<'a>, Box<RowError>> {
        let fail = |i: usize, value: &str, reason: String, hint: Option<String>| -> Box<RowError> {
            Box::new(RowError {
                line,
                column: self.column_name(i, wide),
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
                let reason = match self.recode[i].as_ref().and_then(|m| m.get(raw)) {
                    Some(_) if !self.code_table[i] => format!("the mapping's {table} maps it to an empty code"),
                    Some(_) => format!("the code table gives no code for it: map it in the mapping's {table}"),
                    None if self.code_table[i] => format!("not in the mapping's {table} nor its code table"),
                    None => format!("not in the mapping's {table}"),
                };
                return Err(fail(
                    i,
                    raw,
                    reason,
                    Some(format!("add it to {table}: \"{raw}\" = \"CODE\" (or = \"{raw}\" to keep it as it is)")),
                ));
            }
        }
        let period_text = required(PERIOD)?;
        let period = if self.wide_names_to.as_deref() == Some("month") || self.month_column.is_some() {
            let year = self.year_column.and_then(|c| rec.field(c)).map(str::trim).unwrap_or("");
            let month = month_number(period_text)
                .ok_or_else(|| fail(PERIOD, period_text, "not a month (1..12, 01..12 or Jan..Dec)".into(), None))?;
            Period::parse(&format!("{year}-{month:02}")).map_err(|e| {
                let column = self.year_column.map(|c| self.header[c].clone()).unwrap_or_else(|| "year".into());
                let mut err = fail(PERIOD, year, format!("bad year: {}", e.0), None);
                err.column = column;
                err
            })?
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
                "unknown flow; expected export/import, X/M or 1/2, re-export/re-import (RX/RM) or total".into(),
                Some("map other spellings with [recode.flow] in a mapping".into()),
            )
        })?;
        let product = code(PRODUCT, required(PRODUCT)?)?;
        let region = self.text(rec, REGION, wide).filter(|t| !t.is_empty());
        if let Some(r) = region {
            code(REGION, r)?;
        }
        let fx = self.exchange(rule, period).map_err(|why| {
            fail(
                VALUE,
                &period.to_string(),
                why,
                Some("add the rates with `tradeql rates add FILE` before this ingest".into()),
            )
        })?;
        // In a wide layout with several cells per name, a blank value beside
        // filled cells is a month without trade (customs leave zeros blank).
        let value_text = match (wide, self.text(rec, VALUE, wide)) {
            (Some(_), None | Some("")) => "0",
            _ => required(VALUE)?,
        };
        let money = Self::money_scale(rule, self.value_scale) * fx;
        let value = self.number(value_text).map_err(|(reason, hint)| fail(VALUE, value_text, reason, hint))? * money;
        if !value.is_finite() {
            return Err(fail(VALUE, value_text, "the value times value_scale is too large for a number".into(), None));
        }
        if value < 0.0 && !self.allow_negative {
            return Err(fail(VALUE, value_text, "negative trade value".into(), Some(NEGATIVE_HINT.into())));
        }
        let quantity = match self.text(rec, QUANTITY, wide).filter(|t| !t.is_empty()) {
            None => None,
            Some(q) => {
                let n = self.number(q).map_err(|(reason, hint)| fail(QUANTITY, q, reason, hint))?;
                if n < 0.0 && !self.allow_negative {
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
        let mut measures = [None; MAX_MEASURES];
        for (j, m) in self.measures.iter().enumerate() {
            if matches!(rule, Some(RuleAction::Read { nulls, .. }) if nulls.contains(&j)) {
                continue;
            }
            let target = FIRST_MEASURE + j;
            let Some(t) = self.raw_text(rec, target, wide).filter(|t| !t.is_empty()) else { continue };
            let factor = if m.money { Self::money_scale(rule, m.scale) * fx } else { m.scale };
            let n = self.number(t).map_err(|(reason, hint)| fail(target, t, reason, hint))? * factor;
            if !n.is_finite() {
                return Err(fail(target, t, "the number times its scale is too large".into(), None));
            }
            if n < 0.0 && m.money && !self.allow_negative {
                return Err(fail(target, t, "negative trade value".into(), Some(NEGATIVE_HINT.into())));
            }
            measures[j] = Some(n);
        }
        let aggregate = self.aggregate_partners.iter().any(|a| a == partner)
            || self.aggregate_products.iter().any(|a| a == product)
            || region.is_some_and(|r| self.aggregate_regions.iter().any(|a| a == r))
            || flow == "total";
        Ok(Row {
            period,
            reporter,
            partner,
            flow,
            product,
            region,
            value,
            quantity,
            quantity_unit,
            measures,
            aggregate,
        })
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

/// The flows a store holds: exports and imports, re-exports and re-imports
/// (UN Comtrade's RX and RM, parts of exports and imports), and the total of
/// exports and imports (an aggregate of the flow dimension).
pub const FLOWS: [&str; 5] = ["export", "import", "re-export", "re-import", "total"];

pub fn parse_flow(text: &str) -> Option<&'static str> {
    const SPELLINGS: [(&str, &str); 20] = [
        ("export", "export"),
        ("import", "import"),
        ("exports", "export"),
        ("imports", "import"),
        ("x", "export"),
        ("m", "import"),
        ("1", "export"),
        ("2", "import"),
        ("re-export", "re-export"),
        ("re-exports", "re-export"),
        ("reexport", "re-export"),
        ("rx", "re-export"),
        ("3", "re-export"),
        ("re-import", "re-import"),
        ("re-imports", "re-import"),
        ("reimport", "re-import"),
        ("rm", "re-import"),
        ("4", "re-import"),
        ("total", "total"),
        ("trade", "total"),
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
    measures: [Option<f64>; MAX_MEASURES],
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
    measures: Vec<Vec<Option<f64>>>,
    pub lines: Vec<u64>,
    pub keys: Vec<u128>,
}

impl YearRows {
    fn new(capacity: usize, measures: usize) -> Self {
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
            measures: (0..measures).map(|_| Vec::with_capacity(capacity)).collect(),
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
    pub fn into_frame(self, measures: &[String]) -> Result<(DataFrame, Vec<u64>, Vec<u128>)> {
        let n = self.period.len();
        let mut columns: Vec<Column> = vec![
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
        for (name, values) in measures.iter().zip(self.measures) {
            columns.push(Float64Chunked::from_iter_options(name.as_str().into(), values.into_iter()).into_column());
        }
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
    /// Source records each `[[rows]]` rule picked, by rule.
    pub rule_hits: Vec<u64>,
    capacity: usize,
    measures: usize,
    key_buf: Vec<u8>,
    last_period: Option<Period>,
}

impl Batch {
    pub fn new(capacity: usize, measures: usize) -> Self {
        Batch {
            years: BTreeMap::new(),
            periods: HashSet::new(),
            frequency: None,
            mixed: None,
            rule_hits: Vec::new(),
            capacity,
            measures,
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
        let (capacity, measures) = (self.capacity, self.measures);
        let y = self.years.entry(p.year).or_insert_with(|| YearRows::new(capacity, measures));
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
        for (column, v) in y.measures.iter_mut().zip(row.measures) {
            column.push(v);
        }
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
