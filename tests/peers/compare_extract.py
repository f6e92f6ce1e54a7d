"""Compares a Parquet extract with the CSV that `tradeql run --format csv`
printed for the same query, both read by DuckDB (no tradeql code): same
columns, same rows, values equal to 1e-9 relative. Prints "same" or the first
difference.

usage: compare_extract.py EXTRACT.parquet RESULT.csv
"""
import math
import sys

import duckdb

parquet, csv = sys.argv[1], sys.argv[2]
con = duckdb.connect()
a = con.sql(f"select * from read_parquet('{parquet}')")
b = con.sql(f"select * from read_csv('{csv}', header = true)")
if a.columns != b.columns:
    print(f"columns {a.columns} against {b.columns}")
    sys.exit(0)
ra, rb = a.fetchall(), b.fetchall()
if len(ra) != len(rb):
    print(f"{len(ra)} rows against {len(rb)}")
    sys.exit(0)


def same(x, y):
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, float) or isinstance(y, float):
        x, y = float(x), float(y)
        return x == y or math.isclose(x, y, rel_tol=1e-9)
    return str(x) == str(y)


for i, (x, y) in enumerate(zip(ra, rb)):
    for c, u, v in zip(a.columns, x, y):
        if not same(u, v):
            print(f"row {i} column {c}: {u!r} against {v!r}")
            sys.exit(0)
print("same")
