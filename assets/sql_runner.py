"""Runs tradeql's SQL statements on Spark or DuckDB.

Written to a temporary directory and started by `tradeql run --engine ...`
(under spark-submit for Spark, under Python for DuckDB). The job file lists the
statements; each result is written as JSON lines (column names, then one array
per row, in the statement's order) to a temporary name and renamed, and the
report gives each statement's status and time on the engine.
"""
import datetime
import decimal
import json
import math
import os
import sys
import time


def cell(v):
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, datetime.datetime):
        return v.date().isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    return v


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    if job["engine"] == "spark":
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.appName("tradeql")
        if job.get("master"):  # run by Python, not spark-submit: configure here
            builder = (
                builder.master(job["master"])
                .config("spark.ui.enabled", "false")
                .config("spark.sql.session.timeZone", "UTC")
            )
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")

        def run(sql):
            df = spark.sql(sql)
            return df.columns, df.collect()
    else:
        import duckdb

        con = duckdb.connect()

        def run(sql):
            rel = con.sql(sql)
            return rel.columns, rel.fetchall()

    repeat = job.get("repeat", 0)
    report = []
    for q in job["queries"]:
        try:
            times = []
            for _ in range(1 + repeat):  # the first run is also the warm-up
                start = time.perf_counter()
                columns, rows = run(q["sql"])
                times.append(time.perf_counter() - start)
            tmp = q["out"] + ".tmp"
            with open(tmp, "w") as out:
                out.write(json.dumps(columns) + "\n")
                for row in rows:
                    out.write(json.dumps([cell(v) for v in row], allow_nan=False) + "\n")
            os.replace(tmp, q["out"])
            report.append({"ok": True, "times": times, "rows": len(rows)})
        except Exception as e:  # reported per statement; the others still run
            report.append({"ok": False, "error": "\n".join(str(e).strip().split("\n")[:6])[:2000]})
    with open(job["report"], "w") as f:
        json.dump({"queries": report, "peak_mb": peak_mb(job["engine"])}, f)


def peak_mb(engine):
    """Peak resident memory of the engine: Spark's JVM is this runner's parent
    (spark-submit starts it, and it starts the runner); DuckDB runs in-process."""
    pid = os.getppid() if engine == "spark" else os.getpid()
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
