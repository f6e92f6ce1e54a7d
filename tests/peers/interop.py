"""Reads tradeql's store and extracts with the plain readers a user would pick.

Usage: interop.py SPEC.json [--spark]

SPEC lists targets: {"name": {"path": "...", "columns": ["value", ...]}}; a
path is a dataset folder of the store (Hive-partitioned) or an extract (a
.parquet file, or a folder of partitions). For each target and each reader it
prints the rows read and the sum of each named column, or the error the reader
raised, as one JSON object on stdout. The caller compares them with what
tradeql itself reads.
"""

import json
import math
import os
import sys


def sums(columns, get):
    out = {}
    for c in columns:
        total = 0.0
        for v in get(c):
            if v is not None and not (isinstance(v, float) and not math.isfinite(v)):
                total += float(v)
        out[c] = total
    return out


def main():
    spec = json.load(open(sys.argv[1]))
    with_spark = "--spark" in sys.argv[2:]
    results = {name: {} for name in spec}

    def attempt(name, reader, read):
        try:
            results[name][reader] = read(spec[name]["path"], spec[name]["columns"])
        except Exception as e:  # what the reader said is the finding
            results[name][reader] = {"error": f"{type(e).__name__}: {e}"[:400]}

    import pyarrow

    def arrow_table(t, columns):
        return {"rows": t.num_rows, "sums": sums(columns, lambda c: t.column(c).to_pylist())}

    import pyarrow.parquet as pq

    for name in spec:
        attempt(name, f"pyarrow {pyarrow.__version__} read_table", lambda p, c: arrow_table(pq.read_table(p), c))
    if pyarrow.__version__.split(".")[0] == "14":
        # The old reader: only pyarrow is installed beside it.
        print(json.dumps(results))
        return

    import pyarrow.dataset as ds

    for name in spec:
        attempt(
            name,
            "pyarrow dataset(hive)",
            lambda p, c: arrow_table(ds.dataset(p, format="parquet", partitioning="hive").to_table(), c),
        )

    import pandas as pd

    def pandas_read(p, c):
        df = pd.read_parquet(p)
        return {"rows": len(df), "sums": sums(c, lambda col: df[col].tolist())}

    import polars as pl

    def polars_read(p, c):
        df = pl.read_parquet(p, hive_partitioning=os.path.isdir(p))
        return {"rows": df.height, "sums": sums(c, lambda col: df[col].to_list())}

    def polars_scan(p, c):
        df = pl.scan_parquet(p, hive_partitioning=os.path.isdir(p)).collect()
        return {"rows": df.height, "sums": sums(c, lambda col: df[col].to_list())}

    import duckdb

    def duckdb_read(p, c):
        source = f"'{p}/**'" if os.path.isdir(p) else f"'{p}'"
        con = duckdb.connect()
        rel = con.sql(f"SELECT * FROM read_parquet({source}, hive_partitioning = true)")
        rows = rel.fetchall()
        names = rel.columns
        return {"rows": len(rows), "sums": sums(c, lambda col: [r[names.index(col)] for r in rows])}

    for name in spec:
        attempt(name, f"pandas {pd.__version__}", pandas_read)
        attempt(name, f"polars {pl.__version__} read_parquet", polars_read)
        attempt(name, "polars scan_parquet", polars_scan)
        attempt(name, f"duckdb {duckdb.__version__} read_parquet(dir/**)", duckdb_read)

    if with_spark:
        from pyspark.sql import SparkSession

        spark = (
            SparkSession.builder.master("local[1]")
            .appName("tradeql-interop")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "1")
            .getOrCreate()
        )
        spark.sparkContext.setLogLevel("ERROR")

        def spark_read(p, c):
            rows = spark.read.parquet(p).collect()
            return {"rows": len(rows), "sums": sums(c, lambda col: [r[col] for r in rows])}

        import pyspark

        for name in spec:
            attempt(name, f"spark {pyspark.__version__} read.parquet", spark_read)
        spark.stop()
    print(json.dumps(results))


main()
