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
use std::collections::BTreeMap;
use std::path::Path;

/// The columns of the canonical trade table (DESIGN.md), in store order.
pub const CANONICAL: [&str; 9] =
    ["period", "reporter", "partner", "flow", "product", "region", "value", "quantity", "quantity_unit"];

/// Canonical columns every row must have.
pub const REQUIRED: [&str; 6] = ["period", "reporter", "partner", "flow", "product", "value"];

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
}

/// One column per month (or per flow) melted into rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wide {
    /// Source columns to melt, in order.
    pub columns: Vec<String>,
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

    /// Reads and checks a mapping file.
    pub fn load(path: &Path) -> Result<Mapping> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read mapping", path, e))?;
        Self::parse(&text).map_err(|e| e.in_file(path))
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
        for name in self.columns.keys() {
            known("columns", name, &["year"])?;
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
            if w.columns.is_empty() {
                return Err(Error::mapping("[wide] columns is empty"));
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

    /// The source column that feeds canonical column `name`, if the mapping renames it.
    pub fn source_of(&self, name: &str) -> Option<&str> {
        self.columns.get(name).map(String::as_str)
    }
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
