"""The five benchmark queries from Python: tradeql's package against the CLI
and against the same questions hand-written in polars' Python API.

    python benches/python_bench.py STORE [RUNS] [TRADEQL_BIN]

STORE is a `tradeql gen --into` store (dataset `trade`, group table
`partner_groups`). For each query, alternating run by run in one process:
`tradeql.run(q).frame` (the package, the result as a polars frame), the CLI
as a whole process writing Arrow to a pipe, and polars' lazy API
hand-written (as src/bench/handwritten.rs writes it in Rust). Then the
in-process time tradeql's own `tradeql bench` measures (a separate run, for
reference). The binding's overhead is measured in each run: the call's wall
time less the seconds tradeql itself reports (`Result.seconds`, from reading
the query to the collected frame), so it is what Python adds: arguments,
the GIL, and handing the frame to polars. Every engine's row count is
checked against the package's.
"""

import json
import pathlib
import statistics
import subprocess
import sys
import time

import polars as pl

import tradeql

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUERIES = sorted((ROOT / "benches/queries").glob("*.tql"))


def files(store: pathlib.Path) -> list:
    manifest = json.loads((store / ".tradeql/datasets/trade/manifest.json").read_text())
    return [str(store / ".tradeql/datasets/trade/files" / f["path"]) for f in manifest["files"]]


def handwritten(qid: str, store: pathlib.Path) -> pl.LazyFrame:
    t = pl.scan_parquet(files(store), hive_partitioning=True, hive_schema={"year": pl.Int32})

    def with_prev(a, keys, time, shift, column):
        prev = a.select(*keys, shift.alias(time), pl.col(column).alias(f"{column}_prev"))
        return a.join(prev, on=[*keys, time], how="left")

    if qid in ("Q1", "Q2"):
        key = "flow" if qid == "Q1" else "partner"
        a = t.group_by("year", key).agg(pl.col("value").sum().alias("total"))
        return with_prev(a, [key], "year", pl.col("year") + 1, "total").select(
            key, "year", "total", (pl.col("total") / pl.col("total_prev") - 1).alias("yoy")
        )
    if qid == "Q3":
        a = (
            t.group_by("year", "partner")
            .agg(pl.col("value").sum().alias("total"))
            .with_columns((pl.col("total") / pl.col("total").sum().over("year")).alias("share"))
        )
        return with_prev(a, ["partner"], "year", pl.col("year") + 1, "share").select(
            "partner", "year", "total", "share", ((pl.col("share") - pl.col("share_prev")) * 100).alias("share_pp")
        )
    if qid == "Q4":
        a = (
            t.group_by(pl.col("product").str.slice(0, 2).alias("chapter"), "period")
            .agg(pl.col("value").sum().alias("total"))
            .sort("period")
            .with_columns(pl.col("total").cum_sum().over("chapter", pl.col("period").dt.year()).alias("ytd"))
        )
        shift = pl.col("period").dt.offset_by("1y")
        b = with_prev(with_prev(a, ["chapter"], "period", shift, "total"), ["chapter"], "period", shift, "ytd")
        return b.select(
            "chapter",
            "period",
            "total",
            (pl.col("total") / pl.col("total_prev") - 1).alias("yoy"),
            "ytd",
            (pl.col("ytd") / pl.col("ytd_prev") - 1).alias("ytd_yoy"),
        )
    if qid == "Q5":
        groups = next((store / "_groups").glob("partner_groups*.parquet"))
        g = pl.scan_parquet(groups).select("group", pl.col("member").alias("partner"))
        national = t.group_by("year").agg(pl.col("value").sum().alias("national"))
        a = t.join(g, on="partner").group_by("group", "year").agg(pl.col("value").sum().alias("total"))
        n_prev = national.select((pl.col("year") + 1).alias("year"), pl.col("national").alias("national_prev"))
        return (
            with_prev(a, ["group"], "year", pl.col("year") + 1, "total")
            .join(n_prev, on="year", how="left")
            .select(
                "group",
                "year",
                "total",
                (pl.col("total") / pl.col("total_prev") - 1).alias("yoy"),
                ((pl.col("total") - pl.col("total_prev")) / pl.col("national_prev") * 100).alias("contribution_pp"),
            )
        )
    raise ValueError(qid)


def timed(f):
    start = time.perf_counter()
    out = f()
    return time.perf_counter() - start, out


def main():
    store = pathlib.Path(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 9
    binary = sys.argv[3] if len(sys.argv) > 3 else str(ROOT / "target/release/tradeql")
    inproc = json.loads(
        subprocess.run(
            [binary, "bench", "--store", str(store), "--runs", str(runs), "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    inproc = {q["id"]: q for q in inproc["queries"]}
    print(f"store {store}, {runs} runs per engine after a warm-up, alternating; medians in ms")
    print(
        f"{'q':<4} {'rows':>6} {'python':>8} {'binding':>8} {'in-process':>10} {'CLI':>8} {'polars py':>9}"
    )
    for path in QUERIES:
        qid = "Q" + path.stem[1]
        times = {"python": [], "cli": [], "polars": [], "binding": []}
        rows = None
        for i in range(runs + 1):
            t_py, r = timed(lambda: (lambda r: (r, r.frame))(tradeql.run(str(path), store=str(store))))
            r, frame = r
            t_cli, _ = timed(
                lambda: subprocess.run(
                    [binary, "run", str(path), "--store", str(store), "-f", "arrow"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=True,
                )
            )
            t_pl, hand = timed(lambda: handwritten(qid, store).collect())
            if i == 0:
                rows = frame.height
                assert hand.height == rows, (qid, hand.height, rows)
                continue
            times["python"].append(t_py)
            times["binding"].append(t_py - r.seconds)
            times["cli"].append(t_cli)
            times["polars"].append(t_pl)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        ours = inproc[qid]["tradeql"]["median_s"] * 1e3
        print(
            f"{qid:<4} {rows:>6} {med['python']:>8.1f} {med['binding']:>8.2f} {ours:>10.1f} "
            f"{med['cli']:>8.1f} {med['polars']:>9.1f}"
        )


if __name__ == "__main__":
    main()
