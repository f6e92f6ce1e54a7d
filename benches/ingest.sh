#!/usr/bin/env bash
# Ingest benchmark: tradeql ingest vs DuckDB's COPY ... TO parquet on the same
# generated CSV. Runs alternate (tradeql, duckdb, tradeql, ...); prints each
# run's wall time and peak RSS, then the medians. Results: benches/RESULTS.md.
#
# usage: benches/ingest.sh [RUNS] [PARTNERS PRODUCTS MONTHS DENSITY]
# default 3 runs of 200 x 500 x 60 x 2 flows x 0.84 = 10.08 million rows.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
partners=${2:-200}; products=${3:-500}; months=${4:-60}; density=${5:-0.84}
work=${BENCH_DIR:-/tmp/tradeql-bench}
mkdir -p "$work"
bash scripts/setup-peers.sh >/dev/null
cargo build --release --quiet
tq=${CARGO_TARGET_DIR:-target}/release/tradeql
py=.venv/bin/python
csv="$work/panel-$partners-$products-$months-$density.csv"
[ -f "$csv" ] || $tq gen --csv "$csv" --partners "$partners" --products "$products" --months "$months" --density "$density"
rows=$(($(wc -l < "$csv") - 1))
echo "csv: $csv, $rows rows, $(du -h "$csv" | cut -f1)"
measure() { # label, command...: prints "label seconds peak_kb"
    local label=$1; shift
    local t; t=$(mktemp)
    if ! /usr/bin/time -f "%e %M" -o "$t" "$@" >/dev/null 2>"$t.err"; then
        echo "$label failed:" >&2; cat "$t.err" >&2; exit 1
    fi
    echo "$label $(tail -1 "$t")"
    rm -f "$t" "$t.err"
}
results=$(mktemp)
for i in $(seq "$runs"); do
    rm -rf "$work/store"
    measure tradeql $tq ingest "$csv" --store "$work/store" --dataset trade --quiet | tee -a "$results"
    rm -f "$work/duck.parquet"
    measure duckdb $py -c "import duckdb; duckdb.sql(\"COPY (SELECT * FROM read_csv('$csv', types={'product': 'VARCHAR'})) TO '$work/duck.parquet' (FORMAT parquet, COMPRESSION zstd)\")" | tee -a "$results"
done
python3 - "$results" "$rows" <<'PY'
import statistics, sys
rows = int(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    label, sec, kb = line.split()
    runs.setdefault(label, []).append((float(sec), int(kb)))
med = {}
for label, xs in runs.items():
    t = statistics.median(x[0] for x in xs)
    m = max(x[1] for x in xs) / 1024
    med[label] = t
    print(f"{label:8} median {t:6.2f} s  {rows / t / 1e6:5.2f} M rows/s  peak RSS {m:6.0f} MB  (runs: {', '.join(f'{x[0]:.2f}' for x in xs)})")
print(f"tradeql / duckdb wall-time ratio: {med['tradeql'] / med['duckdb']:.2f}")
PY
