#!/usr/bin/env bash
# Batch benchmark: the five benchmark queries (benches/queries/) as one batch
# (run together, scans shared) against the same batch run one query after
# another (--sequential), alternating; prints wall time and peak RSS of each run
# and the medians. Results: benches/RESULTS.md.
#
# usage: benches/batch.sh STORE [RUNS]   (a store made by `tradeql gen --into STORE`)
set -euo pipefail
cd "$(dirname "$0")/.."
store=$(realpath "$1"); runs=${2:-5}
work=$(mktemp -d)
cargo build --release --quiet
tq=${CARGO_TARGET_DIR:-target}/release/tradeql
cat > "$work/job.toml" <<JOB
store = "$store"
out_dir = "$work/out"
[[query]]
file = "$(pwd)/benches/queries/q*.tql"
JOB
results=$(mktemp)
for i in $(seq "$runs"); do
    for mode in together sequential; do
        flag=""; [ "$mode" = sequential ] && flag="--sequential"
        /usr/bin/time -f "$mode %e %M" -o "$work/t" $tq batch "$work/job.toml" $flag >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
        tail -1 "$work/t" | tee -a "$results"
    done
done
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    mode, sec, kb = line.split()
    runs.setdefault(mode, []).append((float(sec), int(kb)))
for mode, xs in runs.items():
    print(f"{mode:10} median {statistics.median(x[0] for x in xs):6.2f} s  peak RSS {max(x[1] for x in xs) / 1024:6.0f} MB  (runs: {', '.join(f'{x[0]:.2f}' for x in xs)})")
t, s = (statistics.median(x[0] for x in runs[m]) for m in ("together", "sequential"))
print(f"sequential / together: {s / t:.2f}")
PY
rm -rf "$work"
