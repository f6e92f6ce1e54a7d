//! Real customs tables in, as published (#18): the customs' 2024 partner
//! table read as shipped through its mapping, and each ingest rule it needs
//! (conditions on rows, code tables, further measures, flows, negatives,
//! unread columns, workbooks), each with its bad input naming file, line,
//! column and value and writing nothing; and the reconciliation of members
//! with the published aggregates.

use crate::common::*;
use std::path::{Path, PathBuf};

/// A store with the real rates and the partner table ingested as shipped.
fn partner_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    ok(&["rates", "add", &data_file("fx_monthly.csv"), "--store", s(&store)]);
    ok(&[
        "ingest",
        &data_file("gacc_partners_2024.csv"),
        "-m",
        &data_file("gacc_partners.toml"),
        "--store",
        s(&store),
        "-q",
    ]);
    ok(&["groups", "add", "partner_groups", &data_file("partner_groups.csv"), "--of", "partner", "--store", s(&store)]);
    store
}

/// Runs query `text` on `store` as CSV rows.
fn rows_of(dir: &Path, store: &Path, text: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let q = write(dir, "q.tql", text);
    csv_rows(&ok(&["run", s(&q), "--store", s(store), "--format", "csv"]))
}

fn num(row: &std::collections::BTreeMap<String, String>, c: &str) -> f64 {
    row[c].parse().unwrap_or_else(|_| panic!("{c} = {:?} is no number", row[c]))
}

/// The source's own figures for one name and month, read straight from the CSV.
fn source_cells(name_zh: &str, month: u32) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(data_file("gacc_partners_2024.csv")).unwrap();
    csv_rows(&text)
        .into_iter()
        .find(|r| r["name_zh"] == name_zh && r["month"] == month.to_string())
        .unwrap_or_else(|| panic!("{name_zh} month {month} not in the table"))
}

#[test]
fn the_partner_table_as_shipped_keeps_rows_units_codes_and_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let store = partner_store(dir.path());
    let info = ok(&["info", s(&store), "--verify"]);
    // 2,870 source rows, three flows each, less the 79 flow cells left
    // blank in both the month and the year-to-date column (no trade).
    assert!(info.contains("rows        8531"), "{info}");
    assert!(info.contains("2024-01 .. 2024-12 (11 periods)") && info.contains("gaps        2024-03"), "{info}");
    assert!(info.contains("flow:       2870 aggregate rows (total)"), "{info}");
    assert!(info.contains("verify: every file matches its manifest"), "{info}");
    assert!(info.contains("value_ytd (CNY)") && info.contains("growth_ytd (ratio)"), "{info}");
    // The code table the mapping read is recorded with the ingest, by content.
    assert!(info.contains("codes  v1   ") && info.contains("gacc_partner_codes.csv sha256"), "{info}");
    // Units: 10,000 yuan; September in thousand dollars at 2024-09's 7.0760 yuan.
    let listed = rows_of(
        dir.path(),
        &store,
        "from gacc_partners\nwhere partner = \"WLD\" and flow = \"export\" and month in (1, 9)\nsort period",
    );
    assert_eq!(listed.len(), 2);
    let jan = source_cells("总值", 1);
    let sep = source_cells("总值", 9);
    let jan_value: f64 = jan["exports_month"].parse().unwrap();
    let sep_value: f64 = sep["exports_month"].parse().unwrap();
    assert!((num(&listed[0], "value") - jan_value * 1e4).abs() < 1e-3, "{listed:?}");
    assert!((num(&listed[1], "value") - sep_value * 1e3 * 7.0760).abs() < 1e-3, "{listed:?}");
    // Growth is per mille in the source, a ratio in the store; the year to
    // date in yuan at December is the source's, times 10,000.
    let growth: f64 = jan["exports_cum_yoy"].parse().unwrap();
    assert!((num(&listed[0], "growth_ytd") - growth / 1000.0).abs() < 1e-12, "{listed:?}");
    let jan_ytd: f64 = jan["exports_cum"].parse().unwrap();
    assert!((num(&listed[0], "value_ytd") - jan_ytd * 1e4).abs() < 1e-3, "{listed:?}");
    // September's year to date is in dollars (January-September) and its
    // growth of dollar values: neither is a yuan figure, both are null.
    assert_eq!((listed[1]["value_ytd"].as_str(), listed[1]["growth_ytd"].as_str()), ("", ""), "{listed:?}");
    // Codes: every partner is ASCII (no raw name stored); the three places
    // without ISO3 under their ISO 3166-2 codes; aggregates flagged.
    let partners = rows_of(
        dir.path(),
        &store,
        "from gacc_partners\nwhere aggregate or not aggregate\nby partner\nagg n = count()",
    );
    let codes: Vec<&str> = partners.iter().map(|r| r["partner"].as_str()).collect();
    assert!(codes.iter().all(|c| c.is_ascii()), "{codes:?}");
    for c in ["ES-CN", "ES-CE", "ES-ML", "WLD", "ASEAN", "EU", "OTHER_ASIA", "UNKNOWN", "USA"] {
        assert!(codes.contains(&c), "{c} missing: {codes:?}");
    }
    assert_eq!(codes.len(), 251 + 10 + 7, "countries, aggregates, residual rows: {codes:?}");
    let flagged = rows_of(
        dir.path(),
        &store,
        "from gacc_partners\nwhere aggregate and flow != \"total\"\nby partner\nagg n = count()",
    );
    let mut flagged: Vec<&str> = flagged.iter().map(|r| r["partner"].as_str()).collect();
    flagged.sort();
    assert_eq!(
        flagged,
        ["AFRICA", "APEC", "ASEAN", "ASIA", "EU", "EUROPE", "LATIN_AMERICA", "NORTH_AMERICA", "OCEANIA", "WLD"]
    );
}

/// Ingests `csv` with `mapping` into a fresh store; Ok(stderr) or Err(stderr).
fn try_ingest(dir: &Path, csv: &str, mapping: &str, extra: &[&str]) -> Result<String, String> {
    let src = write(dir, "t.csv", csv);
    let map = write(dir, "m.toml", mapping);
    let store = dir.join("store");
    let mut args = vec!["ingest", s(&src), "-m", s(&map), "--store", s(&store), "-d", "t", "-q"];
    args.extend(extra);
    let out = tradeql(&args);
    let err = String::from_utf8_lossy(&out.stderr).replace(s(dir), "DIR");
    if out.status.success() { Ok(err) } else { Err(err) }
}

/// The store of `dir` holds no dataset `t`.
fn nothing_written(dir: &Path) {
    assert!(!dir.join("store/.tradeql/datasets/t/manifest.json").exists(), "a failed ingest wrote the dataset");
}

const WIDE: &str = "year,month,name,x_m,x_c,m_m,m_c,note\n";
const WIDE_MAP: &str = "currency = \"CNY\"\nvalue_scale = 1e4\n[constants]\nreporter = \"CHN\"\nproduct = \"TOTAL\"\n\
     [columns]\nyear = \"year\"\nmonth = \"month\"\npartner = \"name\"\n\
     [measures]\nvalue_ytd = { unit = \"CNY\", scale = 1e4 }\n\
     [wide]\nnames_to = \"flow\"\n[wide.columns.export]\nvalue = \"x_m\"\nvalue_ytd = \"x_c\"\n\
     [wide.columns.import]\nvalue = \"m_m\"\nvalue_ytd = \"m_c\"\n";

#[test]
fn rows_picked_by_a_condition_are_left_out_or_read_in_another_unit() {
    let csv = format!("{WIDE}2024,1,USA,10,10,5,5,a\n2024,2,USA,20,30,6,11,b\n2024,3,USA,7,37,1,12,c\n");
    // A rule's number matches however the file writes it (02 is 2); a rule
    // that picks no row is named in a warning.
    let dir = tempfile::tempdir().unwrap();
    let padded = csv.replace("2024,2,", "2024,02,");
    let map = format!(
        "drop = [\"note\"]\n{WIDE_MAP}[[rows]]\nwhen = {{ month = \"2\" }}\nskip = true\n[[rows]]\nwhen = {{ month = \"13\" }}\nskip = true\n"
    );
    let report = try_ingest(dir.path(), &padded, &map, &[]).unwrap();
    assert!(report.contains("[[rows]] rule 2 (when month = \"13\") picked no source row"), "{report}");
    assert!(!report.contains("rule 1"), "{report}");
    assert_eq!(totals(&dir.path().join("store"), "t").0, 4);
    // Left out: February's rows.
    let dir = tempfile::tempdir().unwrap();
    let map = format!("drop = [\"note\"]\n{WIDE_MAP}[[rows]]\nwhen = {{ month = \"2\" }}\nskip = true\n");
    let report = try_ingest(dir.path(), &csv, &map, &[]).unwrap();
    assert!(report.is_empty(), "no warning expected: {report}");
    assert_eq!(totals(&dir.path().join("store"), "t"), (4, (10.0 + 5.0 + 7.0 + 1.0) * 1e4));
    // Read in thousand dollars, converted at the store's rate of the month.
    let dir = tempfile::tempdir().unwrap();
    let rates = write(dir.path(), "r.csv", "period,currency,per_usd\n2024-02,CNY,7.5\n");
    ok(&["rates", "add", s(&rates), "--store", s(&dir.path().join("store"))]);
    let map = format!(
        "drop = [\"note\"]\n{WIDE_MAP}[[rows]]\nwhen = {{ month = \"2\" }}\ncurrency = \"USD\"\nvalue_scale = 1e3\n"
    );
    try_ingest(dir.path(), &csv, &map, &[]).unwrap();
    let want = (10.0 + 5.0 + 7.0 + 1.0) * 1e4 + (20.0 + 6.0) * 1e3 * 7.5;
    let (rows, sum) = totals(&dir.path().join("store"), "t");
    assert_eq!(rows, 6);
    assert!((sum - want).abs() < 1e-6, "{sum} != {want}");
    // A month without a rate is an error naming the row; nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let rates = write(dir.path(), "r.csv", "period,currency,per_usd\n2024-01,CNY,7.5\n");
    ok(&["rates", "add", s(&rates), "--store", s(&dir.path().join("store"))]);
    let err = try_ingest(dir.path(), &csv, &map, &[]).unwrap_err();
    assert!(err.contains("DIR/t.csv:3: column `x_m`: the store has no CNY rate for 2024-02"), "{err}");
    nothing_written(dir.path());
    // Without any rates, the mapping is refused before a row is read.
    let dir = tempfile::tempdir().unwrap();
    let err = try_ingest(dir.path(), &csv, &map, &[]).unwrap_err();
    assert!(
        err.contains("[[rows]] rule 1 reads rows in USD to store them in CNY, but the store has no CNY rates"),
        "{err}"
    );
    // A condition on a column the file lacks names the columns it has.
    let bad = format!("{WIDE_MAP}[[rows]]\nwhen = {{ mnth = \"2\" }}\nskip = true\n");
    let err = try_ingest(dir.path(), &csv, &bad, &[]).unwrap_err();
    assert!(err.contains("names column `mnth` for [[rows]] rule 1") && err.contains("did you mean `month`?"), "{err}");
    nothing_written(dir.path());
}

#[test]
fn names_are_recoded_through_a_code_table_and_an_unknown_name_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "codes.csv",
        "name,code,kind\nAmerica,USA,country\nWorld,WLD,aggregate\nBloc,BLC,aggregate\nNowhere,,none\n",
    );
    let map = "currency = \"CNY\"\n[constants]\nreporter = \"CHN\"\nproduct = \"TOTAL\"\n\
               [codes.partner]\nfile = \"codes.csv\"\nfrom = \"name\"\nto = \"code\"\nkind = \"kind\"\n";
    let head = "period,partner,flow,value\n";
    try_ingest(
        dir.path(),
        &format!("{head}2024-01,America,export,5\n2024-01,Bloc,export,5\n2024-01,World,export,5\n"),
        map,
        &[],
    )
    .unwrap();
    let store = dir.path().join("store");
    let info = ok(&["info", s(&store)]);
    assert!(info.contains("partner:    2 aggregate rows (BLC, WLD) beside 1 member rows"), "{info}");
    // A name that neither the table nor [recode.partner] covers.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "codes.csv", "name,code,kind\nAmerica,USA,country\nNowhere,,none\n");
    let err = try_ingest(dir.path(), &format!("{head}2024-01,America,export,5\n2024-01,Amerika,export,5\n"), map, &[])
        .unwrap_err();
    assert!(
        err.contains("DIR/t.csv:3: column `partner`: not in the mapping's [recode.partner] nor its code table (value \"Amerika\")"),
        "{err}"
    );
    nothing_written(dir.path());
    // A name the table lists without a code, unless [recode.partner] gives one.
    let err = try_ingest(dir.path(), &format!("{head}2024-01,Nowhere,export,5\n"), map, &[]).unwrap_err();
    assert!(err.contains("column `partner`: the code table gives no code for it"), "{err}");
    let with_inline = format!("{map}[recode.partner]\nNowhere = \"XNW\"\n");
    try_ingest(dir.path(), &format!("{head}2024-01,Nowhere,export,5\n"), &with_inline, &[]).unwrap();
    // A table without the named column is a mapping error naming the table.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "codes.csv", "nom,code\nAmerica,USA\n");
    let err = try_ingest(dir.path(), &format!("{head}2024-01,America,export,5\n"), map, &[]).unwrap_err();
    assert!(err.contains("DIR/codes.csv:1: the code table has no column `name` (from)"), "{err}");
    nothing_written(dir.path());
}

#[test]
fn further_measures_are_stored_listed_and_queried() {
    let dir = tempfile::tempdir().unwrap();
    let csv = format!("{WIDE}2024,1,USA,10,10,5,5,a\n2024,2,USA,20,30,,11,b\n");
    try_ingest(dir.path(), &csv, &format!("drop = [\"note\"]\n{WIDE_MAP}"), &[]).unwrap();
    let store = dir.path().join("store");
    let info = ok(&["info", s(&store)]);
    assert!(info.contains("measures    value_ytd (CNY)"), "{info}");
    // A blank month cell beside a filled year-to-date cell is a month without trade.
    let got = rows_of(
        dir.path(),
        &store,
        "from t\nby period, flow\nagg v = sum(value), ytd = sum(value_ytd)\nsort period, flow",
    );
    let flat: Vec<(String, String, f64, f64)> =
        got.iter().map(|r| (r["period"][..7].to_string(), r["flow"].clone(), num(r, "v"), num(r, "ytd"))).collect();
    assert_eq!(
        flat,
        [
            ("2024-01".into(), "export".into(), 10e4, 10e4),
            ("2024-01".into(), "import".into(), 5e4, 5e4),
            ("2024-02".into(), "export".into(), 20e4, 30e4),
            ("2024-02".into(), "import".into(), 0.0, 11e4),
        ]
    );
    // A measure the mapping declares but nothing fills.
    let dir = tempfile::tempdir().unwrap();
    let map = "currency = \"CNY\"\n[measures]\nvalue_ytd = { unit = \"CNY\" }\n";
    let err =
        try_ingest(dir.path(), "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,X,TOTAL,1\n", map, &[])
            .unwrap_err();
    assert!(err.contains("[measures] declares `value_ytd`, but nothing fills it"), "{err}");
    // A bad cell of a measure names its column and value.
    let dir = tempfile::tempdir().unwrap();
    let csv = format!("{WIDE}2024,1,USA,10,1o,5,5,a\n");
    let err = try_ingest(dir.path(), &csv, &format!("drop = [\"note\"]\n{WIDE_MAP}"), &[]).unwrap_err();
    assert!(err.contains("DIR/t.csv:2: column `x_c`: cannot parse as a number (value \"1o\")"), "{err}");
    nothing_written(dir.path());
    // A later ingest must declare the same measures.
    let dir = tempfile::tempdir().unwrap();
    try_ingest(dir.path(), &format!("{WIDE}2024,1,USA,10,10,5,5,a\n"), &format!("drop = [\"note\"]\n{WIDE_MAP}"), &[])
        .unwrap();
    let plain = "currency = \"CNY\"\n";
    let err =
        try_ingest(dir.path(), "period,reporter,partner,flow,product,value\n2024-02,CHN,USA,X,TOTAL,1\n", plain, &[])
            .unwrap_err();
    assert!(err.contains("holds the further measures value_ytd (CNY), but this mapping declares none"), "{err}");
}

#[test]
fn re_exports_re_imports_and_the_total_flow_are_flows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,X,01,10\n2024-01,CHN,USA,M,01,4\n\
               2024-01,CHN,USA,RX,01,3\n2024-01,CHN,USA,RM,01,1\n2024-01,CHN,USA,total,01,14\n";
    try_ingest(dir.path(), csv, "", &[]).unwrap();
    let store = dir.path().join("store");
    let by_flow = rows_of(
        dir.path(),
        &store,
        "from t\nwhere flow in (\"export\", \"import\", \"re-export\", \"re-import\", \"total\")\nby flow\nsum value\nsort flow",
    );
    let got: Vec<(String, f64)> = by_flow.iter().map(|r| (r["flow"].clone(), num(r, "value"))).collect();
    assert_eq!(
        got,
        [
            ("export".into(), 10.0),
            ("import".into(), 4.0),
            ("re-export".into(), 3.0),
            ("re-import".into(), 1.0),
            ("total".into(), 14.0)
        ]
    );
    // Summed over flows, the total row is an aggregate: left out, never added to its members.
    let q = write(
        dir.path(),
        "all.tql",
        "from t\nwhere flow in (\"export\", \"import\") or flow = \"total\" or true\nby period\nsum value",
    );
    let out = tradeql(&["run", s(&q), "--store", s(&store), "--format", "csv"]);
    assert!(out.status.success());
    let plain = write(dir.path(), "plain.tql", "from t\nby period\nsum value");
    let out = tradeql(&["run", s(&plain), "--store", s(&store), "--format", "csv"]);
    let rows = csv_rows(&String::from_utf8_lossy(&out.stdout));
    // Re-exports are part of exports, re-imports of imports, total their sum:
    // summed over flows, only exports and imports count.
    assert_eq!(num(&rows[0], "value"), 14.0, "export + import, each counted once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("left out the rows of flow (re-export, re-import, total), which are parts of other flows"),
        "{stderr}"
    );
    // Named together, they are summed as asked, with a note.
    let both = write(dir.path(), "both.tql", "from t\nwhere flow in (\"export\", \"re-export\")\nby period\nsum value");
    let out = tradeql(&["run", s(&both), "--store", s(&store), "--format", "csv"]);
    assert_eq!(num(&csv_rows(&String::from_utf8_lossy(&out.stdout))[0], "value"), 13.0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the filters select flows that overlap (re-export"));
}

#[test]
fn negative_values_are_an_error_unless_the_mapping_allows_them() {
    let csv = "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,X,01,10\n2024-02,CHN,USA,X,01,-2.5\n";
    let dir = tempfile::tempdir().unwrap();
    let err = try_ingest(dir.path(), csv, "", &[]).unwrap_err();
    assert!(err.contains("DIR/t.csv:3: column `value`: negative trade value (value \"-2.5\")"), "{err}");
    assert!(err.contains("allow_negative = true"), "{err}");
    nothing_written(dir.path());
    try_ingest(dir.path(), csv, "allow_negative = true\n", &[]).unwrap();
    assert_eq!(totals(&dir.path().join("store"), "t"), (2, 7.5));
}

#[test]
fn a_source_column_nothing_reads_is_named_in_a_warning() {
    let csv = "period,reporter,partner,flow,product,value,year,notes\n2024-01,CHN,USA,X,01,10,2024,x\n";
    let dir = tempfile::tempdir().unwrap();
    let warned = try_ingest(dir.path(), csv, "", &[]).unwrap();
    assert!(warned.contains("warning: DIR/t.csv: column `year` is not read"), "{warned}");
    assert!(warned.contains("warning: DIR/t.csv: column `notes` is not read"), "{warned}");
    let dir = tempfile::tempdir().unwrap();
    let quiet = try_ingest(dir.path(), csv, "drop = [\"year\", \"notes\"]\n", &[]).unwrap();
    assert!(quiet.is_empty(), "{quiet}");
    let err = try_ingest(dir.path(), csv, "drop = [\"nots\"]\n", &[]).unwrap_err();
    assert!(
        err.contains("drop names column `nots`, but the file has no such column") && err.contains("`notes`"),
        "{err}"
    );
}

#[test]
fn a_dry_run_with_rejects_writes_the_rejects_file_and_no_data() {
    let csv = "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,X,01,10\n2024-02,CHN,USA,X,01,ten\n";
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.csv");
    let out = try_ingest(dir.path(), csv, "", &["--dry-run", "--rejects", s(&rejects)]).unwrap();
    assert!(out.is_empty(), "{out}");
    let text = std::fs::read_to_string(&rejects).unwrap();
    let rows = csv_rows(&text);
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(
        (rows[0]["line"].as_str(), rows[0]["column"].as_str(), rows[0]["value"].as_str()),
        ("3", "value", "ten")
    );
    nothing_written(dir.path());
}

/// Writes a workbook: sheets of rows of cells (numbers where they parse).
fn workbook(path: &Path, sheets: &[(&str, &[&[&str]])]) {
    let mut book = rust_xlsxwriter::Workbook::new();
    for (name, rows) in sheets {
        let sheet = book.add_worksheet();
        sheet.set_name(*name).unwrap();
        for (r, row) in rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                match cell.parse::<f64>() {
                    Ok(n) => sheet.write_number(r as u32, c as u16, n).map(|_| ()).unwrap(),
                    Err(_) if cell.is_empty() => {}
                    Err(_) => sheet.write_string(r as u32, c as u16, *cell).map(|_| ()).unwrap(),
                }
            }
        }
    }
    book.save(path).unwrap();
}

#[test]
fn workbooks_are_read_sheet_by_sheet_through_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("trade.xlsx");
    let head: &[&str] = &["month", "partner", "exports", "imports"];
    workbook(
        &book,
        &[
            ("2023", &[head, &["1", "USA", "10", "4"], &["2", "USA", "11", ""]]),
            ("2024", &[head, &["1", "USA", "12", "5"], &["2", "USA", "13.5", "6"]]),
        ],
    );
    let map = "currency = \"CNY\"\nsheet = \"*\"\n[constants]\nreporter = \"CHN\"\nproduct = \"TOTAL\"\n\
               [columns]\nyear = \"sheet\"\nmonth = \"month\"\n\
               [wide]\nnames_to = \"flow\"\ncolumns = [\"exports\", \"imports\"]\nnames = { exports = \"export\", imports = \"import\" }\n";
    let m = write(dir.path(), "m.toml", map);
    let store = dir.path().join("store");
    ok(&["ingest", s(&book), "-m", s(&m), "--store", s(&store), "-d", "t", "-q"]);
    assert_eq!(totals(&store, "t"), (7, 10.0 + 4.0 + 11.0 + 12.0 + 5.0 + 13.5 + 6.0));
    let info = ok(&["info", s(&store)]);
    assert!(info.contains("2023-01 .. 2024-02"), "{info}");
    // One sheet by name; a bad cell names the file, the sheet, the row and the column.
    let bad = dir.path().join("bad.xlsx");
    let yhead: &[&str] = &["year", "month", "partner", "exports", "imports"];
    workbook(
        &bad,
        &[
            ("notes", &[&["x"]]),
            ("data", &[yhead, &["2024", "1", "USA", "10", "4"], &["2024", "2", "USA", "n/a", "4"]]),
        ],
    );
    let one = write(
        dir.path(),
        "one.toml",
        &map.replace("sheet = \"*\"", "sheet = \"data\"").replace("year = \"sheet\"", "year = \"year\""),
    );
    let fresh = dir.path().join("fresh");
    let err = fails(&["ingest", s(&bad), "-m", s(&one), "--store", s(&fresh), "-d", "t", "-q"]);
    let err = err.replace(s(dir.path()), "DIR");
    assert!(err.contains("DIR/bad.xlsx:data:3: column `exports`: cannot parse as a number (value \"n/a\")"), "{err}");
    assert!(!fresh.join("t").exists());
    // A sheet that is not there is named with the sheets that are.
    let missing = write(dir.path(), "missing.toml", &map.replace("sheet = \"*\"", "sheet = \"dta\""));
    let err = fails(&["ingest", s(&bad), "-m", s(&missing), "--store", s(&fresh), "-d", "t", "-q"]);
    assert!(
        err.contains("the workbook has no sheet \"dta\"; its sheets: notes, data")
            && err.contains("did you mean sheet = \"data\"?"),
        "{err}"
    );
    // An unknown extension fails before the store folder is made.
    let odd = write(dir.path(), "t.numbers", "x");
    let never = dir.path().join("never");
    let err = fails(&["ingest", s(&odd), "--store", s(&never), "-d", "t"]);
    assert!(err.contains("expected a .csv, .parquet or workbook"), "{err}");
    assert!(!never.exists(), "the store folder was left behind");
}

#[test]
fn members_add_up_to_the_customs_asean_eu_and_total_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = partner_store(dir.path());
    let out = tradeql(&[
        "reconcile",
        "gacc_partners",
        "--store",
        s(&store),
        "--only",
        "ASEAN,EU",
        "--tolerance",
        "2e-7",
        "--strict",
        "--format",
        "csv",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = csv_rows(&String::from_utf8_lossy(&out.stdout));
    // Two blocs, eleven months, three flows.
    assert_eq!(rows.len(), 2 * 11 * 3);
    for r in &rows {
        assert_eq!(r["within"], "true", "{r:?}");
        let members: u32 = r["members"].parse().unwrap();
        assert_eq!(members, if r["aggregate"] == "EU" { 27 } else { 10 }, "every member trades each flow: {r:?}");
        let (sum, published) = (num(r, "members_sum"), num(r, "published"));
        assert!(((sum - published) / published).abs() <= 2e-7, "{r:?}");
    }
    assert!(stderr.contains("0 of 66 comparisons beyond the tolerance 2e-7"), "{stderr}");
    // The total row: all member rows, within the 3.4e-7 the data README states.
    let out = tradeql(&[
        "reconcile",
        "gacc_partners",
        "--store",
        s(&store),
        "--only",
        "WLD",
        "--tolerance",
        "2e-7",
        "--strict",
    ]);
    assert_eq!(out.status.code(), Some(1), "one month of the total row is off by 3.4e-7: strict fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 of 33 comparisons beyond the tolerance 2e-7 (largest relative difference 3.44e-7)"),
        "{stderr}"
    );
}

#[test]
fn convert_without_any_rates_in_the_store_says_how_to_add_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_gacc(&store);
    let q = write(dir.path(), "usd.tql", "from gacc\nderive usd = convert(value, \"USD\")\nby year\nsum usd\n");
    let err = fails(&["check", s(&q), "--store", s(&store)]);
    assert!(err.contains(":2:14: convert() needs the store's exchange rates"), "{err}");
    assert!(err.contains("help: add them: tradeql rates add RATES.csv"), "{err}");
}

#[test]
fn a_planted_discrepancy_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let groups = write(dir.path(), "g.csv", "group,member,valid_from,valid_to\nBLOC,AAA,,\nBLOC,BBB,2024-02,\n");
    let mut csv = String::from("period,reporter,partner,flow,product,value\n");
    for m in 1..=3 {
        let (a, b) = (100.0 * f64::from(m), if m >= 2 { 50.0 } else { 0.0 });
        csv.push_str(&format!("2024-{m:02},CHN,AAA,export,TOTAL,{a}\n2024-{m:02},CHN,CCC,export,TOTAL,7\n"));
        if m >= 2 {
            csv.push_str(&format!("2024-{m:02},CHN,BBB,export,TOTAL,{b}\n"));
        }
        // The bloc row: right in January and February, 1% too high in March.
        let bloc = if m == 3 { (a + b) * 1.01 } else { a + b };
        csv.push_str(&format!(
            "2024-{m:02},CHN,BLOC,export,TOTAL,{bloc}\n2024-{m:02},CHN,WLD,export,TOTAL,{}\n",
            a + b + 7.0
        ));
    }
    let src = write(dir.path(), "t.csv", &csv);
    let store = dir.path().join("store");
    ok(&["groups", "add", "blocs", s(&groups), "--of", "partner", "--store", s(&store)]);
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "t", "-q"]);
    let out = tradeql(&["reconcile", "t", "--store", s(&store), "--strict", "--flagged", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["aggregate"].as_str(), rows[0]["period"].as_str()), ("BLOC", "2024-03-01"));
    assert_eq!(rows[0]["members"], "2", "BBB is a member from 2024-02");
    assert!((num(&rows[0], "relative") + 0.01 / 1.01).abs() < 1e-12, "{rows:?}");
    // Without --strict the same finding exits 0; the world row adds up.
    let out = tradeql(&["reconcile", "t", "--store", s(&store), "--only", "WLD", "--format", "csv"]);
    assert!(out.status.success());
    assert!(csv_rows(&String::from_utf8_lossy(&out.stdout)).iter().all(|r| r["within"] == "true"));
}

#[test]
fn codes_are_named_from_the_stores_names_tables() {
    let dir = tempfile::tempdir().unwrap();
    let store = partner_store(dir.path());
    let q = write(
        dir.path(),
        "n.tql",
        "from gacc_partners\nwhere period = 2024-12 and flow = \"total\" and partner in (\"HUN\", \"ES-CN\")\nby partner\nsum value_ytd\nshow n = name(partner)\n",
    );
    // Without a names table: an error that says how to add one.
    let err = fails(&["check", s(&q), "--store", s(&store)]);
    assert!(err.contains("name(partner) needs the store's names of partner codes"), "{err}");
    assert!(err.contains("tradeql names add data/country_codes.csv --of partner --code iso3 --name name_en"), "{err}");
    let names = write(dir.path(), "names.csv", "iso3,name_en\nHUN,Hungary\nCHN,China\n");
    ok(&["names", "add", s(&names), "--of", "partner", "--code", "iso3", "--name", "name_en", "--store", s(&store)]);
    let got = csv_rows(&ok(&["run", s(&q), "--store", s(&store), "--format", "csv"]));
    let pairs: Vec<(&str, &str)> = got.iter().map(|r| (r["partner"].as_str(), r["n"].as_str())).collect();
    // A code the table does not name has no name (null: empty in CSV).
    assert_eq!(pairs, [("ES-CN", ""), ("HUN", "Hungary")]);
    // In the row stage too, and reporters by the partner table.
    let q = write(
        dir.path(),
        "r.tql",
        "from gacc_partners\nwhere period = 2024-12 and flow = \"total\" and name(partner) = \"Hungary\"\nderive r = name(reporter)\nby partner, r\nsum value_ytd\n",
    );
    let got = csv_rows(&ok(&["run", s(&q), "--store", s(&store), "--format", "csv"]));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["partner"].as_str(), got[0]["r"].as_str()), ("HUN", "China"));
    // A code named twice is refused with both lines.
    let twice = write(dir.path(), "twice.csv", "code,name\nHUN,Hungary\nHUN,Magyarorszag\n");
    let err = fails(&["names", "add", s(&twice), "--of", "partner", "--store", s(&store)]);
    assert!(
        err.contains("twice.csv:3: column `code`: the code is named twice (first at line 2) (value \"HUN\")"),
        "{err}"
    );
    let info = ok(&["info", s(&store), "--verify"]);
    assert!(info.contains("names  of partner: 2 codes named") && info.contains("verify: every file matches"), "{info}");
}

#[test]
fn a_discrepancy_planted_in_a_generated_panel_is_found_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&[
        "gen",
        "--into",
        s(&store),
        "--dataset",
        "panel",
        "--partners",
        "12",
        "--products",
        "6",
        "--months",
        "8",
        "--density",
        "0.7",
        "--seed",
        "11",
    ]);
    // The members' rows, and each group's row as a customs table would
    // publish it (summed by tradeql, membership as of each month; G_LATE's
    // members join halfway through).
    let listing = write(dir.path(), "rows.tql", "from panel\nsort period, partner, flow, product\n");
    let members = csv_rows(&ok(&["run", s(&listing), "--store", s(&store), "--format", "csv"]));
    let blocs = write(
        dir.path(),
        "blocs.tql",
        "from panel\ngroup partner by partner_groups as bloc\nby period, reporter, flow, product, bloc\nsum value\n",
    );
    let blocs = csv_rows(&ok(&["run", s(&blocs), "--store", s(&store), "--format", "csv"]));
    assert!(blocs.len() > 50, "{}", blocs.len());
    let mut csv = String::from("period,reporter,partner,flow,product,value\n");
    for r in &members {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            &r["period"][..7],
            r["reporter"],
            r["partner"],
            r["flow"],
            r["product"],
            r["value"]
        ));
    }
    // The planted discrepancy: one bloc row 0.1% too high.
    let planted = blocs.len() / 2;
    for (i, r) in blocs.iter().enumerate() {
        let v: f64 = r["value"].parse().unwrap();
        let v = if i == planted { v * 1.001 } else { v };
        csv.push_str(&format!(
            "{},{},{},{},{},{v}\n",
            &r["period"][..7],
            r["reporter"],
            r["bloc"],
            r["flow"],
            r["product"]
        ));
    }
    let src = write(dir.path(), "published.csv", &csv);
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "published", "-q"]);
    let out = tradeql(&["reconcile", "published", "--store", s(&store), "--strict", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = csv_rows(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(rows.len(), blocs.len(), "one comparison per published bloc row");
    let flagged: Vec<_> = rows.iter().filter(|r| r["within"] == "false").collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    let p = &blocs[planted];
    let f = flagged[0];
    assert_eq!(
        (f["aggregate"].as_str(), &f["period"][..7], f["flow"].as_str(), f["product"].as_str()),
        (p["bloc"].as_str(), &p["period"][..7], p["flow"].as_str(), p["product"].as_str())
    );
    assert!((num(f, "relative") + 0.001 / 1.001).abs() < 1e-9, "{f:?}");
}

#[test]
fn tables_and_carets_align_chinese_names_by_display_width() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "period,reporter,partner,flow,product,value\n2024-01,CHN,美国,X,01,5\n2024-01,CHN,USA,X,01,7\n";
    try_ingest(dir.path(), csv, "", &[]).unwrap();
    let store = dir.path().join("store");
    let q = write(dir.path(), "p.tql", "from t\nby partner\nsum value\nsort partner");
    let table = ok(&["run", s(&q), "--store", s(&store)]);
    let lines: Vec<&str> = table.lines().collect();
    // Every line puts the value column at the same display column: 美国 takes four.
    let width = |t: &str| t.chars().map(|c| if (c as u32) >= 0x1100 { 2 } else { 1 }).sum::<usize>();
    let ends: Vec<usize> = lines.iter().map(|l| width(l)).collect();
    assert!(ends.iter().all(|e| *e == ends[0]), "{table}");
    let q = write(dir.path(), "bad.tql", "from t\nwhere partner = \"美国\" and valu > 1\nby year\nsum value");
    let err = fails(&["check", s(&q), "--store", s(&store)]);
    let shown: Vec<&str> = err.lines().collect();
    let (code_line, caret_line) = (shown[2], shown[3]);
    let at = code_line.find("valu").unwrap();
    assert_eq!(width(&code_line[..at]), caret_line.find('^').unwrap(), "{err}");
}

#[test]
fn a_measure_no_row_reports_sums_to_null_not_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = partner_store(dir.path());
    // September's year to date is null on every row: its sum is no figure.
    let got = rows_of(
        dir.path(),
        &store,
        "from gacc_partners\nwhere period in 2024-08 .. 2024-10 and flow = \"total\" and partner = \"WLD\"\nby period\nagg v = sum(value), ytd = sum(value_ytd)\nsort period",
    );
    let ytd: Vec<&str> = got.iter().map(|r| r["ytd"].as_str()).collect();
    assert_eq!(ytd[1], "", "{got:?}");
    assert!(!ytd[0].is_empty() && !ytd[2].is_empty(), "{got:?}");
    // The same on a bloc: null trade and growth, never 0 and NaN.
    let text =
        std::fs::read_to_string(repo_file("queries/partners_blocs_2024.tql")).unwrap().replace("2024-12", "2024-09");
    let blocs = rows_of(dir.path(), &store, &text);
    assert!(blocs.iter().all(|r| r["trade"].is_empty() && r["growth"].is_empty()), "{blocs:?}");
    // Reconcile compares nothing there, and says so.
    let out =
        tradeql(&["reconcile", "gacc_partners", "--store", s(&store), "--measure", "value_ytd", "--only", "ASEAN"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 periods and flows where neither members nor aggregate report a value are not compared"),
        "{stderr}"
    );
    assert!(stderr.contains("0 of 30 comparisons"), "{stderr}");
    // A dataset without member rows, and an aggregate no table lists.
    let gacc = dir.path().join("gacc");
    ingest_gacc(&gacc);
    let err = fails(&["reconcile", "gacc", "--store", s(&gacc)]);
    assert!(err.contains("gacc has no member rows to add up to its world row"), "{err}");
    let err = fails(&["reconcile", "gacc_partners", "--store", s(&store), "--only", "AFRICA"]);
    assert!(err.contains("no group table lists the members of AFRICA"), "{err}");
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn parquet_and_arrow_results_carry_their_currency_units_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let store = partner_store(dir.path());
    let q = write(
        dir.path(),
        "b.tql",
        "from gacc_partners\nwhere period = 2024-12 and flow = \"total\" and partner = \"WLD\"\nby partner\nagg ytd = sum(value_ytd)\nshow ytd as trillion\n",
    );
    let out = dir.path().join("b.parquet");
    ok(&["run", s(&q), "--store", s(&store), "--out", s(&out)]);
    use polars::prelude::SerReader;
    let mut reader = polars::prelude::ParquetReader::new(std::fs::File::open(&out).unwrap());
    let meta = reader.get_metadata().unwrap();
    let kv = meta.key_value_metadata.as_ref().unwrap();
    let text = kv.iter().find(|k| k.key == "tradeql").and_then(|k| k.value.clone()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["dataset"], "gacc_partners");
    assert_eq!(json["currency"], "CNY");
    assert_eq!(json["measure_units"]["growth_ytd"], "ratio");
    assert_eq!(json["formats"]["ytd"], "trillion", "{json}");
    // The numbers are never scaled: the ytd is in yuan.
    let frame = reader.finish().unwrap();
    let ytd = frame.column("ytd").unwrap().f64().unwrap().get(0).unwrap();
    assert!((ytd / 1e12 - 43.85).abs() < 0.01, "{ytd}");
    // Arrow IPC results carry the same JSON in their schema metadata.
    let arrow = dir.path().join("b.arrow");
    ok(&["run", s(&q), "--store", s(&store), "--out", s(&arrow)]);
    let mut ipc = polars::prelude::IpcReader::new(std::fs::File::open(&arrow).unwrap());
    let schema_meta = ipc.custom_metadata().unwrap().unwrap();
    assert!(schema_meta.get("tradeql").is_some_and(|t| t.contains("\"currency\":\"CNY\"")), "{schema_meta:?}");
}
