#!/usr/bin/env bash
# Installs maturin and pytest (the Python package's build and tests), and
# the independent readers and peer engines that the tests and
# benchmarks compare tradeql against into ./.venv, from PyPI: DuckDB, pyarrow,
# pandas, polars and pyspark (Spark in local mode, for the scale-out tests);
# and pyarrow 14 alone into ./.venv-pyarrow14 (the oldest reader the store's
# files are promised to). Spark needs Java
# 17 or newer: when no java is on the PATH, it is installed from Debian's
# packages (openjdk-17-jre-headless), and strace and chromium likewise. Idempotent: a second run with everything
# present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import duckdb, pyarrow, pyspark, pandas, polars, pytest' 2>/dev/null \
    || [ ! -x "$venv/bin/maturin" ]; then
    # maturin builds the Python package (python/); pytest runs its tests.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        'duckdb==1.5.*' 'pyarrow==26.*' 'pyspark==4.3.*' 'pandas==3.*' 'polars==2.*' \
        'maturin==1.15.*' 'pytest==8.*'
fi
old=.venv-pyarrow14
if ! "$old/bin/python" -c 'import pyarrow; assert pyarrow.__version__.startswith("14.")' 2>/dev/null; then
    python3 -m venv "$old"
    "$old/bin/python" -m pip install --quiet --disable-pip-version-check 'pyarrow==14.*' 'numpy<2'
fi
if ! command -v java >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
# strace injects faults (a kill or an I/O error at one system call) in the
# durability tests.
if ! command -v strace >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq strace >/dev/null
fi
# Headless Chromium loads the release page in the report test.
if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
"$venv/bin/python" -c 'import duckdb, pyarrow, pyspark, pandas, polars; print("peers: duckdb", duckdb.__version__, "pyarrow", pyarrow.__version__, "pyspark", pyspark.__version__, "pandas", pandas.__version__, "polars", polars.__version__)'
"$old/bin/python" -c 'import pyarrow; print("old reader: pyarrow", pyarrow.__version__)'
java -version 2>&1 | head -1
