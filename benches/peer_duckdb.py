"""DuckDB peer for `tradeql bench --peer duckdb`.

Runs the reference SQL of the five benchmark queries (benches/peer_queries.sql)
over the same Hive-partitioned store, one query per request, so that tradeql
can alternate its own runs with DuckDB's in one session and compare the rows.

usage: peer_duckdb.py STORE_DATASET_DIR GROUPS_CSV SQL_FILE OUT_DIR
stdin:  one query id per line (Q1..Q5), or "quit"
stdout: "ok SECONDS PEAK_KB" per query; the first run of each query also writes
        OUT_DIR/Qn.parquet with its result.
"""
import os
import re
import sys
import time

import duckdb

dataset_dir, groups_csv, sql_file, out_dir = sys.argv[1:5]
text = open(sql_file).read()
queries = {}
for block in re.split(r"\n(?=-- Q\d)", text):
    m = re.match(r"-- (Q\d)", block)
    if m:
        queries[m.group(1)] = block
scan = f"read_parquet('{dataset_dir}/**/*.parquet', hive_partitioning = true)"
for k, q in queries.items():
    q = q.replace("'{d}/trade.parquet'", scan).replace("'{d}/partner_groups.csv'", f"'{groups_csv}'")
    queries[k] = q.strip().rstrip(";")
con = duckdb.connect()
threads = os.environ.get("TRADEQL_BENCH_THREADS")
if threads:
    con.execute(f"SET threads = {int(threads)}")
written = set()


def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


for line in sys.stdin:
    qid = line.strip()
    if qid == "quit":
        break
    start = time.perf_counter()
    table = con.sql(queries[qid]).arrow()
    if hasattr(table, "read_all"):  # duckdb >= 1.4 returns a RecordBatchReader
        table = table.read_all()
    elapsed = time.perf_counter() - start
    if qid not in written:
        import pyarrow.parquet as pq
        pq.write_table(table, os.path.join(out_dir, f"{qid}.parquet"))
        written.add(qid)
    print(f"ok {elapsed:.6f} {peak_kb()}", flush=True)
