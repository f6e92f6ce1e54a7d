//! The panel generator behind `tradeql gen`: deterministic synthetic trade panels of any size.
//!
//! Benchmarks and tests need data with the shape of real customs data, at sizes
//! no public file has: partners and products of log-normal size (a few large,
//! many small), a trend and a seasonal cycle, cells that are missing (not every
//! partner trades every product every month), HS6 codes spread over chapters,
//! and partner groups that overlap. The same seed gives the same bytes. Rows are
//! written as they are made, so memory does not grow with the panel; into a
//! store, the panel is ingested one calendar year at a time, so the disk it
//! needs beside the store is one year's CSV.

use crate::error::{Error, Result};
use std::io::{BufWriter, Write};
use std::path::Path;

/// The shape of a panel.
#[derive(Debug, Clone)]
pub struct PanelSpec {
    pub partners: usize,
    pub products: usize,
    pub months: usize,
    /// Share of (partner, product, month, flow) cells that hold a row, 0..=1.
    pub density: f64,
    pub seed: u64,
    /// First month, as (year, month).
    pub start: (i32, u32),
}

/// splitmix64: tiny, fast, and the same on every platform and version
/// (also the fuzz tests' source of choices).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Partner code of index `i`: three letters, `PAA`, `PAB`, ... (never a real ISO code
/// clash with WLD, since all start with `P` or later letters).
pub fn partner_code(i: usize) -> String {
    let a = b'P' + (i / 676 % 11) as u8;
    let b = b'A' + (i / 26 % 26) as u8;
    let c = b'A' + (i % 26) as u8;
    String::from_utf8(vec![a, b, c]).expect("ASCII")
}

/// HS6 code of product `i`: chapters 01..97 in turn, then subheadings and
/// headings within each chapter (distinct for up to 864,270 products).
pub fn product_code(i: usize) -> String {
    let chapter = 1 + i % 97;
    let within = i / 97;
    let heading = 1 + (within / 90) % 99;
    let sub = 10 + within % 90;
    format!("{chapter:02}{heading:02}{sub:02}")
}

/// A panel being made, month by month: the sizes drawn from the seed, and the
/// random stream where the last month written left it. Writing all months at
/// once or a few at a time gives the same rows.
struct Panel<'a> {
    spec: &'a PanelSpec,
    rng: Rng,
    partner_size: Vec<f64>,
    product_size: Vec<f64>,
    unit_price: Vec<f64>,
    growth: Vec<f64>,
    partners: Vec<String>,
    products: Vec<String>,
    /// The next month to write, from 0.
    next: usize,
}

impl<'a> Panel<'a> {
    fn new(spec: &'a PanelSpec) -> Result<Panel<'a>> {
        if !(0.0..=1.0).contains(&spec.density) || spec.partners == 0 || spec.products == 0 || spec.months == 0 {
            return Err(Error::usage("gen needs partners, products and months above 0 and a density in 0..1"));
        }
        let last_year = i64::from(spec.start.0) + (i64::from(spec.start.1) - 1 + spec.months as i64 - 1) / 12;
        if last_year > 2200 {
            return Err(Error::usage(format!(
                "gen: {} months from {}-{:02} run to {last_year}; periods end in 2200",
                spec.months, spec.start.0, spec.start.1
            )));
        }
        if spec.products > 97 * 99 * 90 {
            return Err(Error::usage(format!("gen makes at most {} products", 97 * 99 * 90)));
        }
        if spec.partners > 11 * 676 {
            return Err(Error::usage(format!("gen makes at most {} partners", 11 * 676)));
        }
        let mut rng = Rng(spec.seed);
        let partner_size: Vec<f64> = (0..spec.partners).map(|_| (1.5 * rng.normal()).exp()).collect();
        let product_size: Vec<f64> = (0..spec.products).map(|_| (1.5 * rng.normal()).exp()).collect();
        let unit_price: Vec<f64> = (0..spec.products).map(|_| (1.0 * rng.normal() + 1.0).exp()).collect();
        let growth: Vec<f64> = (0..spec.partners).map(|_| 0.05 * rng.normal() + 0.03).collect();
        Ok(Panel {
            spec,
            rng,
            partner_size,
            product_size,
            unit_price,
            growth,
            partners: (0..spec.partners).map(partner_code).collect(),
            products: (0..spec.products).map(product_code).collect(),
            next: 0,
        })
    }

    /// (year, month) of month `t` of the panel.
    fn month(&self, t: usize) -> (i32, usize) {
        let (y0, m0) = self.spec.start;
        ((y0 + ((m0 as usize - 1 + t) / 12) as i32), (m0 as usize - 1 + t) % 12 + 1)
    }

    /// Writes the CSV header to `w`.
    fn header<W: Write>(w: &mut W) -> Result<()> {
        writeln!(w, "period,reporter,partner,flow,product,value,quantity,quantity_unit").map_err(write_error)
    }

    /// Writes the rows of the months before `until` not yet written; returns their count.
    fn write_until<W: Write>(&mut self, until: usize, w: &mut W) -> Result<u64> {
        let mut rows = 0u64;
        while self.next < until.min(self.spec.months) {
            let t = self.next;
            let (y, m) = self.month(t);
            let season = 1.0 + 0.12 * (std::f64::consts::TAU * (m as f64 - 3.0) / 12.0).sin();
            for (p, partner) in self.partners.iter().enumerate() {
                let trend = (1.0 + self.growth[p]).powf(t as f64 / 12.0);
                for (k, product) in self.products.iter().enumerate() {
                    for flow in ["export", "import"] {
                        if self.rng.unit() >= self.spec.density {
                            continue;
                        }
                        let value = 1e6
                            * self.partner_size[p]
                            * self.product_size[k]
                            * trend
                            * season
                            * (0.2 * self.rng.normal()).exp();
                        let quantity = value / self.unit_price[k];
                        writeln!(w, "{y}-{m:02},CHN,{partner},{flow},{product},{value:.2},{quantity:.3},kg")
                            .map_err(write_error)?;
                        rows += 1;
                    }
                }
            }
            self.next += 1;
        }
        Ok(rows)
    }

    /// The first month, from 0, of the calendar year after month `t`'s.
    fn next_year_start(&self, t: usize) -> usize {
        let m0 = self.spec.start.1 as usize - 1;
        (m0 + t) / 12 * 12 + 12 - m0
    }
}

fn write_error(e: std::io::Error) -> Error {
    Error::internal(format!("cannot write the panel: {e}"))
}

/// Writes the panel as canonical CSV to `out`; returns the rows written.
pub fn write_csv<W: Write>(spec: &PanelSpec, out: W) -> Result<u64> {
    let mut panel = Panel::new(spec)?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    Panel::header(&mut w)?;
    let rows = panel.write_until(spec.months, &mut w)?;
    w.flush().map_err(write_error)?;
    Ok(rows)
}

/// Writes overlapping partner groups for a panel of `partners` partners:
/// G_HALF (the first half), G_THIRD (every third), G_BIG (the first ten), and
/// G_LATE (every fifth, joining halfway through the panel).
pub fn write_groups(spec: &PanelSpec, path: &Path) -> Result<()> {
    let mut text = String::from("group,member,valid_from,valid_to\n");
    let (y0, m0) = spec.start;
    let mid = m0 as usize - 1 + spec.months / 2;
    let joined = format!("{}-{:02}", y0 + (mid / 12) as i32, mid % 12 + 1);
    for i in 0..spec.partners {
        let code = partner_code(i);
        if i < spec.partners.div_ceil(2) {
            text.push_str(&format!("G_HALF,{code},,\n"));
        }
        if i % 3 == 0 {
            text.push_str(&format!("G_THIRD,{code},,\n"));
        }
        if i < 10 {
            text.push_str(&format!("G_BIG,{code},,\n"));
        }
        if i % 5 == 0 {
            text.push_str(&format!("G_LATE,{code},{joined},\n"));
        }
    }
    std::fs::write(path, text).map_err(|e| Error::io("cannot write", path, e))
}

/// Generates a panel into `csv` (a CSV file), or into dataset `dataset` of the
/// store at `into` together with its partner groups (`partner_groups`).
pub fn generate(
    spec: &PanelSpec,
    csv: Option<&Path>,
    into: Option<(&Path, &str)>,
    compression: Option<crate::store::manifest::Codec>,
) -> Result<String> {
    match (csv, into) {
        (Some(path), None) => {
            let file = std::fs::File::create(path).map_err(|e| Error::io("cannot create", path, e))?;
            let rows = write_csv(spec, file)?;
            Ok(format!("wrote {rows} rows to {}", path.display()))
        }
        (None, Some((store, dataset))) => {
            let scratch = store.join(".tradeql").join(format!("gen-{}", std::process::id()));
            std::fs::create_dir_all(&scratch).map_err(|e| Error::io("cannot create", &scratch, e))?;
            // One calendar year at a time, each its own ingest: the scratch CSV
            // never holds more than a year, so a billion-row panel needs no
            // more free disk than one year's text beside the store.
            let result = (|| -> Result<String> {
                let groups = scratch.join("partner_groups.csv");
                write_groups(spec, &groups)?;
                let g = crate::groups::add(store, "partner_groups", "partner", &groups, true, false)?;
                let mut panel = Panel::new(spec)?;
                let (mut rows, mut ingests, mut last) = (0u64, 0usize, None);
                while panel.next < spec.months {
                    let year = panel.month(panel.next).0;
                    let csv = scratch.join(format!("panel-{year}.csv"));
                    let file = std::fs::File::create(&csv).map_err(|e| Error::io("cannot create", &csv, e))?;
                    let mut w = BufWriter::with_capacity(1 << 20, file);
                    Panel::header(&mut w)?;
                    panel.write_until(panel.next_year_start(panel.next), &mut w)?;
                    w.flush().map_err(write_error)?;
                    drop(w);
                    let report = crate::ingest::ingest(&crate::ingest::IngestOptions {
                        store: store.to_path_buf(),
                        dataset: Some(dataset.to_string()),
                        sources: vec![csv.clone()],
                        mapping: None,
                        currency: Some("USD".into()),
                        quantity_unit: Some("kg".into()),
                        rejects: None,
                        dry_run: false,
                        wait: true,
                        workers: None,
                        progress: false,
                        timings: false,
                        input_format: None,
                        compression,
                    })?;
                    std::fs::remove_file(&csv).map_err(|e| Error::io("cannot remove", &csv, e))?;
                    rows += report.rows;
                    ingests += 1;
                    if spec.months > 12 {
                        eprintln!("gen: {year}: {} rows (version {})", report.rows, report.version);
                    }
                    last = Some(report);
                }
                let last = last.expect("a panel has at least one month");
                if ingests == 1 {
                    return Ok(format!("{last}\n{g}"));
                }
                Ok(format!(
                    "ingested {rows} rows into {dataset} in {ingests} ingests, one per calendar year (versions {} to {})\n{g}",
                    last.version + 1 - ingests as u64,
                    last.version
                ))
            })();
            let _ = std::fs::remove_dir_all(&scratch);
            result
        }
        _ => Err(Error::usage("give exactly one of --csv FILE and --into STORE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_density_holds() {
        let spec = PanelSpec { partners: 20, products: 30, months: 12, density: 0.5, seed: 7, start: (2023, 1) };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let rows = write_csv(&spec, &mut a).unwrap();
        write_csv(&spec, &mut b).unwrap();
        assert_eq!(a, b);
        let cells = 20 * 30 * 12 * 2;
        assert!((rows as f64 / cells as f64 - 0.5).abs() < 0.05, "{rows} of {cells}");
        let other = PanelSpec { seed: 8, ..spec };
        let mut c = Vec::new();
        write_csv(&other, &mut c).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn a_panel_written_a_year_at_a_time_has_the_rows_of_one_written_whole() {
        let spec = PanelSpec { partners: 7, products: 11, months: 30, density: 0.6, seed: 3, start: (2021, 5) };
        let mut whole = Vec::new();
        write_csv(&spec, &mut whole).unwrap();
        let mut panel = Panel::new(&spec).unwrap();
        let mut pieces = Vec::new();
        Panel::header(&mut pieces).unwrap();
        let mut firsts = Vec::new();
        while panel.next < spec.months {
            firsts.push(panel.month(panel.next));
            panel.write_until(panel.next_year_start(panel.next), &mut pieces).unwrap();
        }
        assert_eq!(firsts, [(2021, 5), (2022, 1), (2023, 1)]);
        assert_eq!(String::from_utf8(pieces).unwrap(), String::from_utf8(whole).unwrap());
    }

    #[test]
    fn codes_are_well_formed() {
        assert_eq!(partner_code(0), "PAA");
        assert_eq!(partner_code(27), "PBB");
        let codes: Vec<String> = (0..500).map(product_code).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        let distinct: std::collections::HashSet<&String> = codes.iter().collect();
        assert_eq!(distinct.len(), 500);
    }
}
