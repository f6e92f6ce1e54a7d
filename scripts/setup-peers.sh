#!/usr/bin/env bash
# Installs the independent readers and peer engines that the tests and
# benchmarks compare tradeql against (DuckDB, pyarrow) into ./.venv, from PyPI.
# Idempotent: a second run with everything present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import duckdb, pyarrow' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        'duckdb==1.5.*' 'pyarrow==26.*'
fi
"$venv/bin/python" -c 'import duckdb, pyarrow; print("peers: duckdb", duckdb.__version__, "pyarrow", pyarrow.__version__)'
