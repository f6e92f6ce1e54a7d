//! Error messages as the user sees them: each `tests/queries/errors/NAME.tql`
//! is checked against the bundled store and its stderr must equal
//! `NAME.stderr` (file, line, column, the source line with the span marked,
//! and a hint). `TRADEQL_BLESS=1` rewrites them.

use crate::common::*;
use crate::queries::bundled_store;
use std::path::Path;

#[test]
fn every_error_query_gives_its_expected_message() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/queries/errors");
    let queries = tql_files(&dir);
    assert!(queries.len() >= 15);
    let bless = std::env::var_os("TRADEQL_BLESS").is_some();
    let mut failures = Vec::new();
    for q in &queries {
        // Relative path, so messages do not depend on where the repository is.
        let rel = q.strip_prefix(root).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tradeql"))
            .current_dir(root)
            .args(["check", s(rel), "--store", s(bundled_store())])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(65), "{}: check should fail", q.display());
        let got = String::from_utf8_lossy(&out.stderr).replace(s(bundled_store()), "STORE");
        let expected_path = q.with_extension("stderr");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!("{}:\n--- expected\n{expected}--- got\n{got}", q.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_bad_param_on_the_command_line_is_named() {
    let q = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/trade_2024.tql");
    let err = fails(&["run", s(&q), "--store", s(bundled_store()), "--param", "yeer=2023"]);
    assert!(err.contains("--param yeer: this query has no parameter `yeer`"), "{err}");
    assert!(err.contains("help: did you mean `year`?"), "{err}");
}
