//! Every kind of bad input: a clear error naming file, line, column and value,
//! and a store left exactly as it was.

use crate::common::*;

/// Ingests `csv` (optionally with a mapping) into a store that already holds
/// data, expects failure, checks the store is untouched, returns stderr.
fn rejected(csv: &str, mapping: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = good_store(dir.path());
    let before = snapshot(&store);
    let src = write(dir.path(), "bad.csv", csv);
    let mut args = vec!["ingest", s(&src), "--store", s(&store), "--dataset", "trade", "-q"];
    let map_path;
    if let Some(m) = mapping {
        map_path = write(dir.path(), "map.toml", m);
        args.extend(["--mapping", s(&map_path)]);
    }
    let err = fails(&args);
    assert_eq!(snapshot(&store), before, "the store changed after a failed ingest:\n{err}");
    err.replace(s(&src), "bad.csv").replace(dir.path().to_str().unwrap(), "DIR")
}

#[test]
fn unparseable_number() {
    let err = rejected(
        "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,12\n2024-01,CHN,USA,import,01,x1.5\n",
        None,
    );
    assert!(err.starts_with("error: bad.csv:3: column `value`: cannot parse as a number (value \"x1.5\")"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
}

#[test]
fn thousands_separator_is_an_error_unless_declared() {
    let csv = "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,\"33,312\"\n";
    let err = rejected(csv, None);
    assert!(err.contains("bad.csv:2: column `value`: cannot parse as a number (value \"33,312\")"), "{err}");
    assert!(err.contains("help: the number has a thousands separator; declare it with thousands = \",\""), "{err}");
    // Declared, the same file ingests, and the value is 33312.
    let dir = tempfile::tempdir().unwrap();
    let src = write(dir.path(), "t.csv", csv);
    let map = write(dir.path(), "m.toml", "thousands = \",\"\n");
    let store = dir.path().join("store");
    ok(&["ingest", s(&src), "--store", s(&store), "-d", "t", "-m", s(&map), "-q"]);
    assert_eq!(totals(&store, "t"), (1, 33312.0));
}

#[test]
fn unknown_flow() {
    let err = rejected("period,reporter,partner,flow,product,value\n2024-01,CHN,USA,transit,01,12\n", None);
    assert!(
        err.contains(
            "bad.csv:2: column `flow`: unknown flow; expected export/import, X/M or 1/2, \
             re-export/re-import (RX/RM) or total (value \"transit\")"
        ),
        "{err}"
    );
    assert!(err.contains("help: map other spellings with [recode.flow]"), "{err}");
}

#[test]
fn bad_period() {
    let err = rejected("period,reporter,partner,flow,product,value\n2024-13,CHN,USA,export,01,12\n", None);
    assert!(err.contains("bad.csv:2: column `period`: bad period: there is no month 13 (value \"2024-13\")"), "{err}");
}

#[test]
fn negative_value() {
    let err = rejected("period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,-5\n", None);
    assert!(err.contains("bad.csv:2: column `value`: negative trade value (value \"-5\")"), "{err}");
}

#[test]
fn duplicate_keys() {
    let err = rejected(
        "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,1\n2024-01,CHN,DEU,export,01,2\n2024-01,CHN,USA,export,01,3\n",
        None,
    );
    assert!(
        err.contains("bad.csv:4: duplicate key: the same period, reporter, partner, flow, product and region as line 2 (value \"2024-01,CHN,USA,export,01,\")"),
        "{err}"
    );
}

#[test]
fn empty_file_and_header_only() {
    let err = rejected("", None);
    assert!(err.contains("bad.csv: the file is empty"), "{err}");
    let err = rejected("period,reporter,partner,flow,product,value\n", None);
    assert!(err.contains("bad.csv: the file has a header but no rows"), "{err}");
}

#[test]
fn missing_required_column() {
    let err = rejected("period,reporter,partner,product,value\n2024-01,CHN,USA,01,1\n", None);
    assert!(
        err.contains(
            "bad.csv: missing required column `flow`; the file has: period, reporter, partner, product, value"
        ),
        "{err}"
    );
    assert!(
        err.contains("help: map it with [columns] flow = \"...\" or set it with [constants] flow = \"...\""),
        "{err}"
    );
}

#[test]
fn mapping_names_a_missing_column() {
    let err = rejected(
        "month,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,1\n",
        Some("[columns]\nperiod = \"mnth\"\n"),
    );
    assert!(
        err.contains(
            "the mapping names column `mnth` for `period`, but the file has no such column; it has: month, reporter"
        ),
        "{err}"
    );
    assert!(err.contains("help: did you mean `month`?"), "{err}");
}

#[test]
fn wrong_field_count_and_many_errors_are_summarised() {
    let mut csv = String::from("period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01\n");
    for i in 0..15 {
        csv.push_str(&format!("2024-01,CHN,P{i},export,01,-1\n"));
    }
    let err = rejected(&csv, None);
    assert!(err.contains("bad.csv:2: the row has 5 fields but the header has 6"), "{err}");
    assert!(err.contains("bad.csv:3: column `value`: negative trade value"), "{err}");
    assert!(err.contains("... and 6 more bad rows"), "{err}");
}

#[test]
fn mixed_frequencies() {
    let err = rejected(
        "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,1\n2024-Q2,CHN,USA,export,01,1\n",
        None,
    );
    assert!(err.contains("bad.csv:3: column `period`: this period's frequency differs"), "{err}");
}

#[test]
fn rejects_file_keeps_good_rows_and_lists_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "mixed.csv",
        "period,reporter,partner,flow,product,value\n\
         2024-01,CHN,USA,export,01,10\n\
         2024-01,CHN,USA,export,02,oops\n\
         2024-01,CHN,DEU,export,01,20\n\
         2024-01,CHN,USA,export,01,30\n\
         2024-01,CHN,FRA,sideways,01,5\n",
    );
    let store = dir.path().join("store");
    let rejects = dir.path().join("rejects.csv");
    let out = ok(&["ingest", s(&src), "--store", s(&store), "-d", "t", "--rejects", s(&rejects), "-q"]);
    assert!(out.contains("ingested 2 rows") && out.contains("rejected 3 rows"), "{out}");
    assert_eq!(totals(&store, "t"), (2, 30.0)); // the first of the duplicated keys is kept
    let text = std::fs::read_to_string(&rejects).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "file,line,column,value,reason,record");
    assert!(lines[1].contains(",3,value,oops,cannot parse as a number,\"2024-01,CHN,USA,export,02,oops\""), "{text}");
    assert!(lines[2].contains(",5,,,\"duplicate key: line 2 has the same period, reporter, partner, flow, product and region\",\"2024-01,CHN,USA,export,01,\""), "{text}");
    assert!(lines[3].contains(",6,flow,sideways,\"unknown flow"), "{text}");
    ok(&["info", s(&store), "--verify"]);
}

#[test]
fn duplicate_across_two_source_files_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.csv", "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,1\n");
    let b = write(
        dir.path(),
        "b.csv",
        "period,reporter,partner,flow,product,value\n2024-02,CHN,USA,export,01,1\n2024-01,CHN,USA,export,01,2\n",
    );
    let store = dir.path().join("store");
    let err = fails(&["ingest", s(&a), s(&b), "--store", s(&store), "-d", "t", "-q"]);
    assert!(
        err.contains(&format!(
            "{}:3: duplicate key: the same period, reporter, partner, flow, product and region as {}:2",
            s(&b),
            s(&a)
        )),
        "{err}"
    );
    assert!(!store.join("t").exists(), "nothing was written");
}

#[test]
fn lines_are_counted_alike_in_crlf_files_and_across_blank_lines_and_quoted_newlines() {
    let crlf =
        "period,reporter,partner,flow,product,value\r\n2024-01,CHN,USA,export,01,1\r\n2024-02,CHN,USA,export,01,x\r\n";
    let err = rejected(crlf, None);
    assert!(err.starts_with("error: bad.csv:3: column `value`: cannot parse as a number (value \"x\")"), "{err}");
    let lf = "period,reporter,partner,flow,product,value\n2024-01,CHN,USA,export,01,1\n\n\
              2024-02,CHN,\"US\nA\",export,01,2\n2024-03,CHN,USA,export,01,y\n";
    let err = rejected(lf, None);
    assert!(err.starts_with("error: bad.csv:6: column `value`: cannot parse as a number (value \"y\")"), "{err}");
}

#[test]
fn standard_input_is_a_source_named_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let feed = |text: &str, extra: &[&str]| {
        let mut args = vec!["ingest", "-", "--store", s(&store), "-d", "t", "-q"];
        args.extend(extra);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = feed("period,reporter,partner,flow,product,value\n2024-01,CHN,USA,X,01,5\n", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(totals(&store, "t"), (1, 5.0));
    assert!(ok(&["info", s(&store)]).contains("source v1   stdin sha256"));
    let out = feed("period,reporter,partner,flow,product,value\n2024-02,CHN,USA,X,01,x\n", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: stdin:2: column `value`: cannot parse as a number (value \"x\")"), "{err}");
    let out = feed("", &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: stdin: the file is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = feed("", &["--input-format", "xlsx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input-format is csv or parquet"));
}
