//! Reference groups: which members belong to which group, and when.
//!
//! Partner blocs (the EU, ASEAN, BRICS), HS sections and domestic regions are
//! all tables `group,member,valid_from,valid_to`, since membership changes over
//! time (the UK left the EU in 2020-02; BRICS grew in 2024-01). They are stored
//! with the store (`_groups/`) under the same commit protocol as trade data, so
//! a query that maps partners to blocs reads the same version every time.

use crate::error::{Error, Result};
use crate::period::{Frequency, Period};
use crate::store::manifest::SourceFile;
use crate::store::{self, Commit, GroupTable, GroupsManifest, Store};
use polars::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// The dimensions a group table can group.
pub const DIMENSIONS: [&str; 3] = ["partner", "product", "region"];

const COLUMNS: [&str; 4] = ["group", "member", "valid_from", "valid_to"];

/// What `groups add` stored.
#[derive(Debug, Clone)]
pub struct GroupsReport {
    pub name: String,
    pub rows: u64,
    pub groups: Vec<(String, u64)>,
    pub version: u64,
    /// Members that are codes of no dataset of the store (and, for partners,
    /// no ISO 3166 code): likely typos, each with the file line and a hint.
    pub warnings: Vec<String>,
}

impl std::fmt::Display for GroupsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self.groups.iter().map(|(g, n)| format!("{g} ({n})")).collect();
        write!(
            f,
            "stored group table {} ({} rows): {} (groups version {})",
            self.name,
            self.rows,
            groups.join(", "),
            self.version
        )
    }
}

struct Membership {
    group: String,
    member: String,
    from: Option<Period>,
    to: Option<Period>,
    line: u64,
}

/// Reads and checks a group table from CSV.
fn read_table(path: &Path) -> Result<Vec<Membership>> {
    let mut rdr = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| Error::input(format!("cannot read: {e}")).in_file(path))?;
    let index = required_columns(&mut rdr, path, &COLUMNS, "a group table")?;
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::input(format!("cannot read the row: {e}")).in_file(path))?;
        let line = rec.position().map_or(0, |p| p.line());
        let get = |i: usize| rec.get(index[i]).unwrap_or("").trim();
        let bad = |col: &str, value: &str, why: &str| {
            Error::input(why.to_string()).in_file(path).at_line(line).in_column(col).with_value(value)
        };
        let period = |i: usize| -> Result<Option<Period>> {
            let text = get(i);
            if text.is_empty() {
                return Ok(None);
            }
            match Period::parse(text) {
                Ok(p) if p.frequency == Frequency::Month => Ok(Some(p)),
                Ok(_) => Err(bad(COLUMNS[i], text, "validity dates are months, written 2024-01")),
                Err(e) => Err(bad(COLUMNS[i], text, &format!("bad period: {}", e.0))),
            }
        };
        let (group, member) = (get(0), get(1));
        if group.is_empty() {
            return Err(bad("group", group, "`group` is empty"));
        }
        if member.is_empty() {
            return Err(bad("member", member, "`member` is empty"));
        }
        use crate::ingest::convert::MAX_CODE_BYTES;
        for (name, text) in [("group", group), ("member", member)] {
            if text.len() > MAX_CODE_BYTES {
                return Err(bad(name, text, &format!("{} bytes; a code has at most {MAX_CODE_BYTES}", text.len())));
            }
        }
        let (from, to) = (period(2)?, period(3)?);
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(bad("valid_to", get(3), "valid_to is before valid_from"));
        }
        rows.push(Membership { group: group.to_string(), member: member.to_string(), from, to, line });
    }
    if rows.is_empty() {
        return Err(Error::input("the group table has no rows").in_file(path));
    }
    // The same member listed twice in a group for overlapping months would be counted twice.
    let mut by_key: BTreeMap<(&str, &str), Vec<&Membership>> = BTreeMap::new();
    for m in &rows {
        by_key.entry((&m.group, &m.member)).or_default().push(m);
    }
    for spans in by_key.values() {
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                let overlap = a.from.max(b.from)
                    <= match (a.to, b.to) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, None) => x.or(Some(Period::month(9999, 12))),
                        (None, y) => y,
                    }
                    || (a.from.is_none() && b.from.is_none());
                if overlap {
                    return Err(Error::input(format!(
                        "{} is listed in {} twice for overlapping months (also line {})",
                        b.member, b.group, a.line
                    ))
                    .in_file(path)
                    .at_line(b.line));
                }
            }
        }
    }
    Ok(rows)
}

/// The positions of `names` in the header of a reference-table CSV; a missing
/// column is an error that lists what the table needs and what the file has.
pub(crate) fn required_columns<R: std::io::Read>(
    rdr: &mut csv::Reader<R>,
    path: &Path,
    names: &[&str],
    what: &str,
) -> Result<Vec<usize>> {
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::input(format!("cannot read the header: {e}")).in_file(path))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').trim().to_string())
        .collect();
    names
        .iter()
        .map(|c| {
            header.iter().position(|h| h == c).ok_or_else(|| {
                Error::input(format!(
                    "missing column `{c}`: {what} has columns {}; the file has {}",
                    names.join(","),
                    header.join(",")
                ))
                .in_file(path)
                .at_line(1)
            })
        })
        .collect()
}

/// A reference table staged and hashed, ready to be listed in the manifest.
pub(crate) struct StagedReference {
    /// Relative to `_groups/`.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub source: SourceFile,
}

/// Writes `frame` as the reference table `name` (`_groups/<name>-vN.parquet`)
/// and commits it through the store's journal, with the manifest change that
/// `update` makes; `update` returns the files (relative to `_groups/`) the new
/// version no longer lists.
pub(crate) fn commit_reference(
    store_root: &Path,
    name: &str,
    mut frame: DataFrame,
    source: &Path,
    wait: bool,
    update: impl FnOnce(&mut GroupsManifest, StagedReference) -> Vec<String>,
) -> Result<u64> {
    std::fs::create_dir_all(store_root).map_err(|e| Error::io("cannot create store", store_root, e))?;
    let store = Store::at(store_root);
    let lock = store.lock(wait, &format!("add reference table {name}"))?;
    store.recover(&lock)?;
    let mut manifest = store.groups_manifest()?;
    let version = manifest.version + 1;
    let staging = store.staging_dir(&lock)?;
    let result = (|| -> Result<u64> {
        let staged = staging.join(format!("{name}.parquet"));
        let file = std::fs::File::create(&staged).map_err(|e| Error::io("cannot create", &staged, e))?;
        ParquetWriter::new(file)
            .with_key_value_metadata(Some(store::portable_metadata(frame.schema())))
            .finish(&mut frame)?;
        let (sha256, bytes) = store::sha256_file(&staged)?;
        let (src_sha, src_bytes) = store::sha256_file(source)?;
        let rel = format!("{name}-v{version:06}.parquet");
        let reference = StagedReference {
            path: rel.clone(),
            bytes,
            sha256,
            source: SourceFile { path: source.display().to_string(), bytes: src_bytes, sha256: src_sha },
        };
        let removed =
            update(&mut manifest, reference).into_iter().map(|p| format!("{}/{p}", store::GROUPS_DIR)).collect();
        manifest.format = store::manifest::MANIFEST_FORMAT;
        manifest.version = version;
        manifest.updated_at = store::now();
        store.commit(
            &lock,
            Commit {
                manifest_path: format!("{}/manifest.json", store::GROUPS_DIR),
                manifest_json: serde_json::to_string_pretty(&manifest)?,
                version,
                moves: vec![(staged, format!("{}/{rel}", store::GROUPS_DIR))],
                removed,
            },
        )?;
        Ok(version)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Stores the group table at `path` under `name`, replacing a table of that name.
///
/// Each member is checked against the codes the store's datasets hold (and,
/// for partners, the ISO 3166 alpha-3 codes): an unknown member is a warning
/// with a "did you mean", or with `strict` an error and nothing is stored.
pub fn add(store_root: &Path, name: &str, of: &str, path: &Path, wait: bool, strict: bool) -> Result<GroupsReport> {
    if !DIMENSIONS.contains(&of) {
        return Err(Error::usage(format!("groups are of partner, product or region codes, not {of:?}")));
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(Error::usage(format!("bad group table name {name:?}: use letters, digits, '_' and '-'")));
    }
    let rows = read_table(path)?;
    let known = KnownCodes::of_store(&Store::at(store_root), of)?;
    let mut warnings = Vec::new();
    let mut reported = std::collections::BTreeSet::new();
    for m in &rows {
        if reported.insert(m.member.as_str())
            && let Some(why) = known.unknown(&m.member)
        {
            warnings.push(format!("{}:{}: member {:?} of {}: {why}", path.display(), m.line, m.member, m.group));
        }
    }
    if strict && !warnings.is_empty() {
        return Err(Error::input(format!(
            "{} unknown member codes; nothing was stored:\n  {}",
            warnings.len(),
            warnings.join("\n  ")
        ))
        .hint("correct the codes, or leave out --strict to store the table with a warning"));
    }
    let date = |p: Option<Period>| p.map(Period::days);
    let frame = DataFrame::new(
        rows.len(),
        vec![
            Column::new("group".into(), rows.iter().map(|m| m.group.as_str()).collect::<Vec<_>>()),
            Column::new("member".into(), rows.iter().map(|m| m.member.as_str()).collect::<Vec<_>>()),
            Int32Chunked::from_iter_options("valid_from".into(), rows.iter().map(|m| date(m.from)))
                .into_date()
                .into_column(),
            Int32Chunked::from_iter_options("valid_to".into(), rows.iter().map(|m| date(m.to)))
                .into_date()
                .into_column(),
        ],
    )?;
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for m in &rows {
        *counts.entry(m.group.clone()).or_default() += 1;
    }
    let groups: Vec<(String, u64)> = counts.into_iter().collect();
    let listed = groups.clone();
    let version = commit_reference(store_root, name, frame, path, wait, |manifest, staged| {
        let mut removed = Vec::new();
        manifest.tables.retain(|t| {
            if t.name == name {
                removed.push(t.path.clone());
                false
            } else {
                true
            }
        });
        manifest.tables.push(GroupTable {
            name: name.to_string(),
            of: of.to_string(),
            path: staged.path,
            rows: rows.len() as u64,
            bytes: staged.bytes,
            sha256: staged.sha256,
            groups: listed,
            source: staged.source,
        });
        manifest.tables.sort_by(|a, b| a.name.cmp(&b.name));
        removed
    })?;
    Ok(GroupsReport { name: name.to_string(), rows: rows.len() as u64, groups, version, warnings })
}

/// ISO 3166 alpha-3 codes with their English names (the bundled
/// `data/country_codes.csv`), the reference a partner code is checked against.
const COUNTRY_CODES: &str = include_str!("../data/country_codes.csv");

/// Whether `code` is an ISO 3166 alpha-3 code.
pub fn is_iso3(code: &str) -> bool {
    iso3_names().any(|(c, _)| c == code)
}

fn iso3_names() -> impl Iterator<Item = (&'static str, &'static str)> {
    COUNTRY_CODES.lines().skip(1).filter_map(|line| {
        let mut fields = line.split(',');
        let iso3 = fields.next()?;
        let name = fields.nth(2)?.trim_matches('"');
        Some((iso3, name))
    })
}

/// The codes a member of a group table of one dimension may be: those the
/// store's datasets hold, and for partners the ISO 3166 alpha-3 codes.
pub struct KnownCodes {
    of: String,
    codes: std::collections::BTreeSet<String>,
}

impl KnownCodes {
    /// The codes of `of` in every dataset of `store`.
    pub fn of_store(store: &Store, of: &str) -> Result<KnownCodes> {
        let mut codes = std::collections::BTreeSet::new();
        // A new store holds nothing to compare with yet.
        let datasets = if store.root().is_dir() { store.datasets()? } else { Vec::new() };
        for name in datasets {
            let Some(m) = store.manifest(&name)? else { continue };
            codes.extend(dataset_codes(store.root(), &m, of)?);
        }
        Ok(KnownCodes { of: of.to_string(), codes })
    }

    /// The codes of `of` in one dataset.
    pub fn of_dataset(codes: Vec<String>, of: &str) -> KnownCodes {
        KnownCodes { of: of.to_string(), codes: codes.into_iter().collect() }
    }

    /// Why `member` looks like a typo, or None when it is a known code (or,
    /// for products and regions, when the store holds no codes to compare
    /// with, or it is a plausible HS code).
    pub fn unknown(&self, member: &str) -> Option<String> {
        if self.codes.contains(member) {
            return None;
        }
        match self.of.as_str() {
            "partner" => {
                if iso3_names().any(|(c, _)| c == member) {
                    return None;
                }
                let mut candidates: Vec<String> = self.codes.iter().cloned().collect();
                candidates.extend(iso3_names().map(|(c, _)| c.to_string()));
                let near: Vec<String> = candidates
                    .iter()
                    .filter(|c| crate::suggest::edit_distance(&member.to_uppercase(), c) <= 1)
                    .map(|c| match iso3_names().find(|(i, _)| i == c) {
                        Some((_, name)) => format!("{c} ({name})"),
                        None => c.clone(),
                    })
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .take(4)
                    .collect();
                let hint = if near.is_empty() { String::new() } else { format!("; did you mean {}?", near.join(", ")) };
                Some(format!("not a partner code of any dataset of the store, nor an ISO 3166 alpha-3 code{hint}"))
            }
            "product" => {
                let hs = member.len().is_multiple_of(2)
                    && (2..=10).contains(&member.len())
                    && member.bytes().all(|b| b.is_ascii_digit());
                if hs || self.codes.iter().any(|c| c.starts_with(member)) {
                    return None;
                }
                let hint = match crate::suggest::closest(member, self.codes.iter().map(String::as_str)) {
                    Some(c) => format!("; did you mean {c}?"),
                    None => String::new(),
                };
                Some(format!("not an HS code (2 to 10 digits) nor a product code of the store{hint}"))
            }
            _ => {
                if self.codes.is_empty() {
                    return None;
                }
                let hint = match crate::suggest::closest(member, self.codes.iter().map(String::as_str)) {
                    Some(c) => format!("; did you mean {c}?"),
                    None => String::new(),
                };
                Some(format!("not a {} code of any dataset of the store{hint}", self.of))
            }
        }
    }
}

/// The distinct codes of column `of` in a dataset (none when it lacks the column).
fn dataset_codes(store: &Path, m: &crate::store::Manifest, of: &str) -> Result<Vec<String>> {
    if !m.schema.iter().any(|c| c.name == of) || m.files.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(listed) = m.listed_codes(of) {
        return Ok(listed);
    }
    let frame = crate::exec::scan_dataset(store, m)?.select([col(of).unique()]).collect()?;
    let values = frame.column(of)?.str()?.clone();
    Ok(values.iter().flatten().map(str::to_string).collect())
}

/// What `names add` stored.
pub struct NamesReport {
    pub of: String,
    pub rows: u64,
    pub version: u64,
}

impl std::fmt::Display for NamesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stored names of {} {} codes (groups version {})", self.rows, self.of, self.version)
    }
}

/// Stores the names of the codes of `of` from the CSV at `path` (columns
/// `code_column` and `name_column`), replacing the dimension's names table.
pub fn add_names(
    store_root: &Path,
    of: &str,
    path: &Path,
    code_column: &str,
    name_column: &str,
    wait: bool,
) -> Result<NamesReport> {
    if !["reporter", "partner", "product", "region"].contains(&of) {
        return Err(Error::usage(format!("names are of reporter, partner, product or region codes, not {of:?}")));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .from_path(path)
        .map_err(|e| Error::input(format!("cannot read: {e}")).in_file(path))?;
    let index = required_columns(&mut rdr, path, &[code_column, name_column], "a names table")?;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let (mut codes, mut names) = (Vec::new(), Vec::new());
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::input(format!("cannot read the row: {e}")).in_file(path))?;
        let line = rec.position().map_or(0, |p| p.line());
        let code = rec.get(index[0]).unwrap_or("").trim();
        let name = rec.get(index[1]).unwrap_or("").trim();
        if code.is_empty() {
            continue; // a row with no code names nothing (a place without an ISO code)
        }
        if let Some(first) = seen.insert(code.to_string(), line) {
            return Err(Error::input(format!("the code is named twice (first at line {first})"))
                .in_file(path)
                .at_line(line)
                .in_column(code_column)
                .with_value(code));
        }
        codes.push(code.to_string());
        names.push(name.to_string());
    }
    if codes.is_empty() {
        return Err(Error::input("the names table has no rows with a code").in_file(path));
    }
    let rows = codes.len() as u64;
    let frame =
        DataFrame::new(codes.len(), vec![Column::new("code".into(), codes), Column::new("name".into(), names)])?;
    let of_owned = of.to_string();
    let version = commit_reference(store_root, &format!("names-{of}"), frame, path, wait, |manifest, staged| {
        let removed = manifest.names.iter().filter(|t| t.of == of_owned).map(|t| t.path.clone()).collect();
        manifest.names.retain(|t| t.of != of_owned);
        manifest.names.push(crate::store::manifest::NameTable {
            of: of_owned.clone(),
            path: staged.path,
            rows,
            bytes: staged.bytes,
            sha256: staged.sha256,
            source: staged.source,
        });
        removed
    })?;
    Ok(NamesReport { of: of.to_string(), rows, version })
}
