//! Exchange rates by period, for `convert(x, CUR)`.
//!
//! A press release in yuan and a Comtrade extract in dollars can only be
//! compared through the rate of each month. The rates table, `period,currency,
//! per_usd` (units of the currency for one US dollar), is stored with the store
//! like the group tables; a query converts each row at its own period's rate,
//! so a yearly total in another currency sums each month at that month's rate.

use crate::error::{Error, Result};
use crate::groups::commit_reference;
use crate::period::{Frequency, Period};
use crate::store::manifest::RateTable;
use polars::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What `rates add` stored.
pub struct RatesReport {
    pub rows: u64,
    pub currencies: Vec<String>,
    pub first: String,
    pub last: String,
}

impl std::fmt::Display for RatesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored {} exchange rates for {} from {} to {}",
            self.rows,
            self.currencies.join(", "),
            self.first,
            self.last
        )
    }
}

/// Reads, checks and stores a rates CSV, replacing the store's rates.
pub fn add(store_root: &Path, path: &Path, wait: bool) -> Result<RatesReport> {
    let mut rdr = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| Error::input(format!("cannot read: {e}")).in_file(path))?;
    let index = crate::groups::required_columns(&mut rdr, path, &["period", "currency", "per_usd"], "a rates table")?;
    let mut seen: BTreeMap<(i32, String), u64> = BTreeMap::new();
    let (mut days, mut currencies, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::input(format!("cannot read the row: {e}")).in_file(path))?;
        let line = rec.position().map_or(0, |p| p.line());
        let field = |i: usize| rec.get(index[i]).unwrap_or("").trim();
        let bad = |col: &str, value: &str, why: String| {
            Error::input(why).in_file(path).at_line(line).in_column(col).with_value(value)
        };
        let period = match Period::parse(field(0)) {
            Ok(p) if p.frequency == Frequency::Month => p,
            Ok(_) => return Err(bad("period", field(0), "rates are monthly: write the period as 2024-01".into())),
            Err(e) => return Err(bad("period", field(0), format!("bad period: {}", e.0))),
        };
        let currency = field(1);
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad("currency", currency, "a currency is an ISO 4217 code such as CNY".into()));
        }
        let rate: f64 = match field(2).parse() {
            Ok(r) if r > 0.0 && f64::is_finite(r) => r,
            _ => return Err(bad("per_usd", field(2), "per_usd must be a positive number".into())),
        };
        if currency == "USD" && rate != 1.0 {
            return Err(bad("per_usd", field(2), "one US dollar is 1 USD; leave USD out or write 1".into()));
        }
        if !(1e-9..=1e12).contains(&rate) {
            return Err(bad(
                "per_usd",
                field(2),
                "no currency trades at this rate (1e-9 to 1e12 units per dollar)".into(),
            ));
        }
        if let Some(first) = seen.insert((period.days(), currency.to_string()), line) {
            return Err(bad(
                "period",
                field(0),
                format!("a second {currency} rate for {period} (first at line {first})"),
            ));
        }
        days.push(period.days());
        currencies.push(currency.to_string());
        rates.push(rate);
    }
    if days.is_empty() {
        return Err(Error::input("the rates table has no rows").in_file(path));
    }
    let names: Vec<String> = currencies.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let periods: Vec<String> = days
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|d| Period::from_days(d, Frequency::Month).to_string())
        .collect();
    let rows = days.len() as u64;
    let frame = DataFrame::new(
        days.len(),
        vec![
            Int32Chunked::from_vec("period".into(), days).into_date().into_column(),
            Column::new("currency".into(), currencies),
            Column::new("per_usd".into(), rates),
        ],
    )?;
    let report = RatesReport {
        rows,
        currencies: names.clone(),
        first: periods.first().cloned().unwrap_or_default(),
        last: periods.last().cloned().unwrap_or_default(),
    };
    commit_reference(store_root, "rates", frame, path, wait, |manifest, staged| {
        let removed = manifest.rates.take().map(|r| vec![r.path]).unwrap_or_default();
        manifest.rates = Some(RateTable {
            path: staged.path,
            rows,
            bytes: staged.bytes,
            sha256: staged.sha256,
            currencies: names,
            periods,
            source: staged.source,
        });
        removed
    })?;
    Ok(report)
}

/// The store's rates as ingest reads them (None: the store has none).
pub fn read_all(store_root: &Path) -> Result<Option<crate::ingest::convert::Rates>> {
    let groups = crate::store::Store::at(store_root).groups_manifest()?;
    let Some(table) = groups.rates else { return Ok(None) };
    let file = store_root.join(crate::store::GROUPS_DIR).join(&table.path);
    let frame = crate::store::scan_file(&file)?.collect()?;
    let days = frame.column("period")?.cast(&DataType::Int32)?;
    let days = days.i32()?;
    let currencies = frame.column("currency")?.str()?;
    let per_usd = frame.column("per_usd")?.f64()?;
    let mut out: crate::ingest::convert::Rates = Default::default();
    for i in 0..frame.height() {
        if let (Some(d), Some(c), Some(r)) = (days.get(i), currencies.get(i), per_usd.get(i)) {
            out.entry(c.to_string()).or_default().insert(d, r);
        }
    }
    Ok(Some(out))
}
