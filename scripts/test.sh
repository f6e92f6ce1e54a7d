#!/usr/bin/env bash
# The test command: installs the peer tools (DuckDB, pyarrow) the tests compare
# against, then runs every test: the Rust ones, then the Python package's
# (built into .venv by maturin, tested against the CLI). Works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-peers.sh
cargo test --all-targets
target=${CARGO_TARGET_DIR:-target}
VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --quiet -m python/Cargo.toml
TRADEQL_BIN="$target/debug/tradeql" .venv/bin/python -m pytest -q python/tests
