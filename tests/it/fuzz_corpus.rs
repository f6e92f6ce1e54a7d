//! The kept fuzz corpus: inputs that once looked dangerous. Each runs through
//! `tradeql run` on the bundled store and must either succeed or fail with a
//! user error (exit 2 or 65): never a panic or an internal error (70).

use crate::common::*;
use crate::queries::bundled_store;
use std::path::Path;

#[test]
fn corpus_inputs_succeed_or_fail_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let out = tradeql(&["run", s(&path), "--store", s(bundled_store())]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 2 | 65)),
            "{}: exit {:?}\n{stderr}",
            path.display(),
            out.status.code()
        );
        assert!(!stderr.contains("panicked"), "{}: {stderr}", path.display());
        n += 1;
    }
    assert!(n >= 10);
}
