#!/usr/bin/env bash
# The test command: installs the peer tools (DuckDB, pyarrow) the tests compare
# against, then runs every test. Works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-peers.sh
cargo test --all-targets
