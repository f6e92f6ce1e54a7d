//! Mapping files: how a source layout becomes the canonical trade table.
//!
//! Customs offices, Comtrade extracts and spreadsheets all lay trade data out
//! differently. A mapping (TOML) says, for one source layout, which source column
//! holds each canonical column, which columns are constant, how values are scaled
//! ("100 million yuan"), how codes are recoded, and how a wide layout (one column
//! per month or per flow) is melted into rows. It is checked against the source's
//! header before a single row is read, so a mapping that names a missing column
//! fails at once with the columns the file does have.

use crate::error::{Error, Result};
use crate::suggest::closest;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The columns of the canonical trade table (README, Ingest), in store order.
pub const CANONICAL: [&str; 9] =
    ["period", "reporter", "partner", "flow", "product", "region", "value", "quantity", "quantity_unit"];

/// Canonical columns every row must have.
pub const REQUIRED: [&str; 6] = ["period", "reporter", "partner", "flow", "product", "value"];

/// Most further measures one dataset holds.
pub const MAX_MEASURES: usize = 8;

/// Names a further measure may not take: stored and calendar columns, and
/// the words of the query language that read like columns.
const RESERVED: [&str; 12] =
    ["aggregate", "year", "quarter", "month", "half", "sheet", "name", "others", "total", "share", "rank", "value_usd"];

/// A mapping file as written by the user.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Dataset name in the store (the command line's `--dataset` wins).
    pub dataset: Option<String>,
    /// ISO 4217 code of the value column after scaling (CNY, USD, ...).
    pub currency: Option<String>,
    /// Unit of the quantity column (kg, units, ...) when the file has no unit column.
    pub quantity_unit: Option<String>,
    /// Field separator of a CSV source, one character (default `,`).
    pub delimiter: Option<String>,
    /// Thousands separator inside numbers (`33,312`); without it such numbers are errors.
    pub thousands: Option<String>,
    /// Decimal mark, `.` (default) or `,`.
    pub decimal: Option<String>,
    /// Multiplier from the file's value unit to full units (1e8 for "100 million yuan").
    pub value_scale: Option<f64>,
    /// Multiplier from the file's quantity unit to the stored unit.
    pub quantity_scale: Option<f64>,
    /// Partner codes that are totals or blocs, not countries (WLD is always one).
    #[serde(default)]
    pub aggregate_partners: Vec<String>,
    /// Product codes that are totals (TOTAL is always one).
    #[serde(default)]
    pub aggregate_products: Vec<String>,
    /// Region codes that are totals of other regions (a national row).
    #[serde(default)]
    pub aggregate_regions: Vec<String>,
    /// Canonical column = the name of its column in the source.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Canonical column = a value that every row gets.
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    /// Canonical column -> (source code -> stored code), e.g. partner names to ISO3.
    #[serde(default)]
    pub recode: BTreeMap<String, BTreeMap<String, String>>,
    /// A wide layout to melt into rows.
    pub wide: Option<Wide>,
    /// Further numeric measures beside value and quantity (a published
    /// year-to-date value, a published growth rate), each with its unit.
    #[serde(default)]
    pub measures: BTreeMap<String, MeasureDecl>,
    /// Code tables by canonical column: source names to codes read from a file.
    #[serde(default)]
    pub codes: BTreeMap<String, CodeTableDecl>,
    /// Rules for rows picked by a condition on source fields: leave them out,
    /// or read their money cells in another unit.
    #[serde(default)]
    pub rows: Vec<RowRule>,
    /// Source columns left out on purpose (any other unread column is warned about).
    #[serde(default)]
    pub drop: Vec<String>,
    /// Accept negative values (revisions); by default a negative value is an error.
    #[serde(default)]
    pub allow_negative: bool,
    /// The sheet of a workbook to read; `"*"` reads every sheet, with the
    /// sheet's name as the column `sheet`. Default: the first sheet.
    pub sheet: Option<String>,
    /// The sheet row (1-based) of a workbook's header; rows above it (titles,
    /// notes) are skipped. Default: the first row that holds anything.
    pub header_row: Option<u32>,
    /// The mapping file's folder, against which code table files are found.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    /// The code tables, read (by canonical column).
    #[serde(skip)]
    pub code_tables: BTreeMap<String, CodeTable>,
}

/// A further measure: its unit, and the multiplier from the file's unit.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeasureDecl {
    /// The unit after scaling: a currency (CNY), `ratio`, `kg`, ...
    pub unit: String,
    /// Multiplier from the file's unit (1e4 for 10,000 yuan, 0.001 for per mille).
    pub scale: Option<f64>,
}

/// `[codes.partner]`: a CSV table from source names to codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeTableDecl {
    /// The table, relative to the mapping file.
    pub file: String,
    /// Its column holding the names as the source writes them.
    pub from: String,
    /// Its column holding the code to store.
    pub to: String,
    /// Its column telling the kind of each row (optional).
    pub kind: Option<String>,
    /// Kinds whose rows are aggregates (totals, continents, blocs).
    #[serde(default = "default_aggregate_kinds")]
    pub aggregate_kinds: Vec<String>,
}

fn default_aggregate_kinds() -> Vec<String> {
    vec!["aggregate".to_string()]
}

/// A code table as read: name -> (code, line); the codes of aggregate kind.
#[derive(Debug, Clone, Default)]
pub struct CodeTable {
    pub path: PathBuf,
    pub codes: HashMap<String, (String, u64)>,
    pub aggregates: Vec<String>,
}

/// `[[rows]]`: what to do with the rows whose source fields equal `when`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowRule {
    /// Source column = the value it must hold (as written, spaces trimmed).
    pub when: BTreeMap<String, String>,
    /// Leave these rows out.
    #[serde(default)]
    pub skip: bool,
    /// These rows' money cells are in this currency, converted to the
    /// dataset's at the store's rate of each row's period.
    pub currency: Option<String>,
    /// Multiplier of these rows' money cells, instead of value_scale.
    pub value_scale: Option<f64>,
    /// Further measures these rows do not hold as the others do (a
    /// year-to-date total in another currency is no year-to-date total at
    /// one month's rate): stored as null on these rows.
    #[serde(default)]
    pub null_measures: Vec<String>,
}

/// The columns of a wide layout: a list melted into one measure, or, for
/// each melted name, the source column of each measure.
#[derive(Debug, Clone)]
pub enum WideColumns {
    List(Vec<String>),
    Sets(BTreeMap<String, BTreeMap<String, String>>),
}

impl<'de> Deserialize<'de> for WideColumns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = |v: &toml::Value, what: &str| -> std::result::Result<String, D::Error> {
            v.as_str().map(str::to_string).ok_or_else(|| {
                D::Error::custom(format!("{what} must be a source column name in quotes, not a {}", v.type_str()))
            })
        };
        match toml::Value::deserialize(d)? {
            toml::Value::Array(items) => Ok(WideColumns::List(
                items.iter().map(|v| text(v, "[wide] columns")).collect::<std::result::Result<_, _>>()?,
            )),
            toml::Value::Table(sets) => {
                let mut out = BTreeMap::new();
                for (name, cells) in sets {
                    let Some(cells) = cells.as_table() else {
                        return Err(D::Error::custom(format!(
                            "[wide.columns] `{name}` is not a table of measure = \"column\" (in TOML, a \
                             setting written after a [wide.columns.X] header belongs to that table: \
                             move top-level settings above the first [table])"
                        )));
                    };
                    let mut set = BTreeMap::new();
                    for (target, column) in cells {
                        set.insert(target.clone(), text(column, &format!("[wide.columns.{name}] {target}"))?);
                    }
                    out.insert(name, set);
                }
                Ok(WideColumns::Sets(out))
            }
            other => Err(D::Error::custom(format!(
                "[wide] columns is a list of columns or one [wide.columns.NAME] table per melted name, not a {}",
                other.type_str()
            ))),
        }
    }
}

/// One column per month (or per flow) melted into rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wide {
    /// Source columns to melt, in order (`["jan", "feb"]`), or one table per
    /// melted name giving each measure's column
    /// (`[wide.columns.export] value = "exports_month"`).
    pub columns: WideColumns,
    /// What a melted column's name becomes: `period`, `month` (with a `year`
    /// column) or `flow`.
    pub names_to: String,
    /// The canonical column the cells fill: `value` (default) or `quantity`.
    #[serde(default = "default_values_to")]
    pub values_to: String,
    /// Source column name -> the value it stands for (`exports = "export"`).
    #[serde(default)]
    pub names: BTreeMap<String, String>,
}

fn default_values_to() -> String {
    "value".to_string()
}

impl Mapping {
    /// The declared field delimiter, as a byte (`,` when none is declared).
    pub fn delimiter_byte(&self) -> Option<u8> {
        Some(self.delimiter.as_deref().map_or(b',', |d| d.as_bytes()[0]))
    }

    /// Reads and checks a mapping file, and the code tables it names.
    pub fn load(path: &Path) -> Result<Mapping> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read mapping", path, e))?;
        let mut mapping = Self::parse(&text).map_err(|e| e.in_file(path))?;
        mapping.base_dir = Some(path.parent().map(Path::to_path_buf).unwrap_or_default());
        mapping.read_code_tables().map_err(|e| if e.location.file.is_none() { e.in_file(path) } else { e })?;
        Ok(mapping)
    }

    /// Reads every `[codes.X]` table.
    fn read_code_tables(&mut self) -> Result<()> {
        let base = self.base_dir.clone().unwrap_or_default();
        for (column, decl) in &self.codes {
            let path = base.join(&decl.file);
            let table = read_code_table(&path, decl)?;
            self.code_tables.insert(column.clone(), table);
        }
        Ok(())
    }

    /// The measures of `[measures]`, in declaration order of their names.
    pub fn measure_names(&self) -> Vec<String> {
        self.measures.keys().cloned().collect()
    }

    /// The measures with their units, as a dataset's manifest keeps them.
    pub fn measure_specs(&self) -> Vec<crate::store::manifest::MeasureSpec> {
        self.measures
            .iter()
            .map(|(name, m)| crate::store::manifest::MeasureSpec { name: name.clone(), unit: m.unit.clone() })
            .collect()
    }

    /// The partner (product, region) codes this mapping makes aggregates:
    /// those it lists, and those its code table marks of an aggregate kind.
    pub fn aggregates_of(&self, column: &str) -> Vec<String> {
        let mut out = match column {
            "partner" => self.aggregate_partners.clone(),
            "product" => self.aggregate_products.clone(),
            "region" => self.aggregate_regions.clone(),
            _ => Vec::new(),
        };
        if let Some(t) = self.code_tables.get(column) {
            // An inline recode of a table name wins over the table's code.
            let inline = self.recode.get(column);
            for (name, (code, _)) in &t.codes {
                if t.aggregates.contains(code) {
                    out.push(inline.and_then(|m| m.get(name)).cloned().unwrap_or_else(|| code.clone()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Parses mapping text and checks the names it uses.
    pub fn parse(text: &str) -> Result<Mapping> {
        let mapping: Mapping = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let mut err = Error::mapping(format!("invalid mapping: {msg}"));
            if let Some(span) = e.span() {
                let line = text[..span.start].matches('\n').count() as u64 + 1;
                err = err.at_line(line);
            }
            err
        })?;
        mapping.check_names()?;
        Ok(mapping)
    }

    fn check_names(&self) -> Result<()> {
        let known = |section: &str, name: &str, extra: &[&str]| -> Result<()> {
            if CANONICAL.contains(&name) || extra.contains(&name) {
                return Ok(());
            }
            let mut err = Error::mapping(format!(
                "[{section}] names `{name}`, which is not a canonical column ({})",
                CANONICAL.join(", ")
            ));
            if let Some(s) = closest(name, CANONICAL.iter().copied().chain(extra.iter().copied())) {
                err = err.hint(format!("did you mean `{s}`?"));
            }
            Err(err)
        };
        let measures: Vec<&str> = self.measures.keys().map(String::as_str).collect();
        let mut column_names = vec!["year", "month"];
        column_names.extend(measures.iter().copied());
        for name in self.columns.keys() {
            known("columns", name, &column_names)?;
        }
        if self.measures.len() > MAX_MEASURES {
            return Err(Error::mapping(format!(
                "[measures] declares {} measures; a dataset holds at most {MAX_MEASURES} beside value and quantity",
                self.measures.len()
            )));
        }
        for (name, m) in &self.measures {
            let ident = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && name.len() <= 64;
            if !ident || CANONICAL.contains(&name.as_str()) || RESERVED.contains(&name.as_str()) {
                return Err(Error::mapping(format!(
                    "[measures] `{name}`: a measure is named in lower case letters, digits and '_', \
                     and not as a stored column or a word of the query language"
                )));
            }
            if m.unit.trim().is_empty() || m.unit.len() > 32 {
                return Err(Error::mapping(format!("[measures] `{name}` needs a unit (CNY, ratio, kg, ...)")));
            }
            if let Some(s) = m.scale
                && !(s.is_finite() && s > 0.0)
            {
                return Err(Error::mapping(format!("[measures] `{name}`: scale must be a positive number, not {s}")));
            }
        }
        for name in self.codes.keys() {
            if !["reporter", "partner", "product", "region"].contains(&name.as_str()) {
                return Err(Error::mapping(format!(
                    "[codes.{name}]: a code table recodes reporter, partner, product or region"
                )));
            }
        }
        for (i, rule) in self.rows.iter().enumerate() {
            let n = i + 1;
            if rule.when.is_empty() {
                return Err(Error::mapping(format!("[[rows]] rule {n} has no `when` condition")));
            }
            let reads = rule.currency.is_some() || rule.value_scale.is_some() || !rule.null_measures.is_empty();
            let acts = rule.skip as u8 + reads as u8;
            if acts != 1 {
                return Err(Error::mapping(format!(
                    "[[rows]] rule {n} must either skip the rows (skip = true) or read them another way \
                     (currency = \"USD\", value_scale = 1e3, null_measures = [...]), not {}",
                    if acts == 0 { "neither" } else { "both" }
                )));
            }
            for m in &rule.null_measures {
                if !self.measures.contains_key(m) {
                    return Err(Error::mapping(format!(
                        "[[rows]] rule {n}: null_measures names `{m}`, which is no measure of [measures]"
                    )));
                }
            }
            if let Some(c) = &rule.currency
                && (c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(Error::mapping(format!(
                    "[[rows]] rule {n}: currency is an ISO 4217 code such as USD, not {c:?}"
                )));
            }
            if let Some(s) = rule.value_scale
                && !(s.is_finite() && s > 0.0)
            {
                return Err(Error::mapping(format!(
                    "[[rows]] rule {n}: value_scale must be a positive number, not {s}"
                )));
            }
        }
        for name in self.constants.keys() {
            known("constants", name, &[])?;
        }
        for name in self.recode.keys() {
            known("recode", name, &[])?;
        }
        for (what, sep) in [("delimiter", &self.delimiter), ("thousands", &self.thousands)] {
            if let Some(s) = sep
                && s.len() != 1
            {
                return Err(Error::mapping(format!("{what} must be one ASCII character, not {s:?}")));
            }
        }
        if let Some(d) = &self.decimal
            && d != "."
            && d != ","
        {
            return Err(Error::mapping(format!("decimal must be \".\" or \",\", not {d:?}")));
        }
        if let Some(t) = &self.thousands
            && ![",", ".", "'", " ", "_"].contains(&t.as_str())
        {
            return Err(Error::mapping(format!(
                "thousands must be one of , . ' _ or a space, not {t:?} (a digit, letter or sign is part of numbers)"
            )));
        }
        let decimal = self.decimal.as_deref().unwrap_or(".");
        if self.thousands.as_deref() == Some(decimal) {
            return Err(Error::mapping(format!(
                "thousands and decimal are both {decimal:?}: a number like 1{decimal}234 would be read two ways"
            ))
            .hint(if decimal == "." {
                "for 1.234.567,89 write thousands = \".\" and decimal = \",\""
            } else {
                "for 1,234,567.89 write thousands = \",\" (the decimal mark is \".\" by default)"
            }));
        }
        if let Some(w) = &self.wide {
            if !["period", "month", "flow"].contains(&w.names_to.as_str()) {
                return Err(Error::mapping(format!(
                    "[wide] names_to must be `period`, `month` or `flow`, not `{}`",
                    w.names_to
                )));
            }
            if !["value", "quantity"].contains(&w.values_to.as_str()) {
                return Err(Error::mapping(format!(
                    "[wide] values_to must be `value` or `quantity`, not `{}`",
                    w.values_to
                )));
            }
            match &w.columns {
                WideColumns::List(l) if l.is_empty() => return Err(Error::mapping("[wide] columns is empty")),
                WideColumns::Sets(sets) if sets.is_empty() => {
                    return Err(Error::mapping("[wide] columns is empty"));
                }
                WideColumns::Sets(sets) => {
                    for (name, cells) in sets {
                        if !cells.contains_key("value") {
                            return Err(Error::mapping(format!(
                                "[wide.columns.{name}] has no `value` column: every melted row needs its value"
                            )));
                        }
                        for target in cells.keys() {
                            if target != "value" && target != "quantity" && !measures.contains(&target.as_str()) {
                                let mut e = Error::mapping(format!(
                                    "[wide.columns.{name}] fills `{target}`, which is neither value, quantity \
                                     nor a measure of [measures]"
                                ));
                                if let Some(s) =
                                    closest(target, ["value", "quantity"].into_iter().chain(measures.iter().copied()))
                                {
                                    e = e.hint(format!("did you mean `{s}`?"));
                                } else {
                                    e = e.hint(
                                        "in TOML a setting written after a [table] header belongs to that table: \
                                         move top-level settings above the first [table]",
                                    );
                                }
                                return Err(e);
                            }
                        }
                    }
                }
                WideColumns::List(_) => {}
            }
            if w.names_to == "month" && !self.columns.contains_key("year") {
                return Err(Error::mapping(
                    "[wide] names_to = \"month\" needs the year column: add year = \"...\" under [columns]",
                ));
            }
        }
        for (what, scale) in [("value_scale", self.value_scale), ("quantity_scale", self.quantity_scale)] {
            if let Some(s) = scale
                && !(s.is_finite() && s > 0.0)
            {
                return Err(Error::mapping(format!("{what} must be a positive number, not {s}")));
            }
        }
        Ok(())
    }

    /// The wide layout's melted names with, for each, target -> source column.
    pub fn wide_sets(&self) -> Vec<(String, Vec<(String, String)>)> {
        let Some(w) = &self.wide else { return Vec::new() };
        match &w.columns {
            WideColumns::List(cols) => cols
                .iter()
                .map(|c| (w.names.get(c).cloned().unwrap_or_else(|| c.clone()), vec![(w.values_to.clone(), c.clone())]))
                .collect(),
            WideColumns::Sets(sets) => sets
                .iter()
                .map(|(name, cells)| (name.clone(), cells.iter().map(|(t, c)| (t.clone(), c.clone())).collect()))
                .collect(),
        }
    }

    /// The source column that feeds canonical column `name`, if the mapping renames it.
    pub fn source_of(&self, name: &str) -> Option<&str> {
        self.columns.get(name).map(String::as_str)
    }
}

/// Reads a code table CSV: every name once, with its code and kind.
fn read_code_table(path: &Path, decl: &CodeTableDecl) -> Result<CodeTable> {
    let mut rdr = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| Error::input(format!("cannot read the code table: {e}")).in_file(path))?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::input(format!("cannot read the header: {e}")).in_file(path).at_line(1))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    let find = |name: &str, role: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| {
            let mut e = Error::mapping(format!(
                "the code table has no column `{name}` ({role}); it has: {}",
                header.join(", ")
            ))
            .in_file(path)
            .at_line(1);
            if let Some(s) = closest(name, header.iter().map(String::as_str)) {
                e = e.hint(format!("did you mean `{s}`?"));
            }
            e
        })
    };
    let from = find(&decl.from, "from")?;
    let to = find(&decl.to, "to")?;
    let kind = decl.kind.as_deref().map(|k| find(k, "kind")).transpose()?;
    let mut table = CodeTable { path: path.to_path_buf(), ..Default::default() };
    let mut aggregates = HashSet::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::input(format!("cannot read the row: {e}")).in_file(path))?;
        let line = rec.position().map_or(0, |p| p.line());
        let name = rec.get(from).unwrap_or("").trim().to_string();
        let code = rec.get(to).unwrap_or("").trim().to_string();
        if name.is_empty() {
            return Err(Error::input("a code table row with no name")
                .in_file(path)
                .at_line(line)
                .in_column(decl.from.clone()));
        }
        if let Some(k) = kind
            && decl.aggregate_kinds.iter().any(|a| a == rec.get(k).unwrap_or("").trim())
            && !code.is_empty()
        {
            aggregates.insert(code.clone());
        }
        if let Some((_, first)) = table.codes.insert(name.clone(), (code, line)) {
            return Err(Error::input(format!("the name is listed twice (first at line {first})"))
                .in_file(path)
                .at_line(line)
                .in_column(decl.from.clone())
                .with_value(name));
        }
    }
    table.aggregates = aggregates.into_iter().collect();
    table.aggregates.sort();
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_mapping() {
        let m = Mapping::parse(
            r#"
            currency = "CNY"
            value_scale = 1e8
            thousands = ","
            [columns]
            period = "month"
            [constants]
            reporter = "CHN"
            [recode.partner]
            Australia = "AUS"
            [wide]
            columns = ["exports", "imports"]
            names_to = "flow"
            names = { exports = "export", imports = "import" }
            "#,
        )
        .unwrap();
        assert_eq!(m.value_scale, Some(1e8));
        assert_eq!(m.source_of("period"), Some("month"));
        assert_eq!(m.wide.unwrap().values_to, "value");
    }

    #[test]
    fn unknown_canonical_name_gets_a_hint() {
        let err = Mapping::parse("[columns]\npartnr = \"p\"\n").unwrap_err();
        assert!(err.to_string().contains("did you mean `partner`?"), "{err}");
    }

    #[test]
    fn toml_errors_carry_a_line() {
        let err = Mapping::parse("currency = \"CNY\"\nvalue_scale = \n").unwrap_err();
        assert_eq!(err.location.line, Some(2), "{err}");
    }
}
