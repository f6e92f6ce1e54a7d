"""Reads a tradeql store with DuckDB alone (no tradeql code) and compares it
with the source CSV files, also read by DuckDB. Prints one JSON object.

usage: readback.py STORE DATA_DIR
"""
import json
import sys

import duckdb

store, data = sys.argv[1], sys.argv[2]
con = duckdb.connect()


def stored(dataset):
    return (f"read_parquet('{store}/{dataset}/**/*.parquet', hive_partitioning = true)")


out = {}
# China customs totals: the stored rows are exactly the source rows.
src = (f"(select strptime(period, '%Y-%m')::date as period, reporter, partner, flow, product, "
       f"value::double as value from read_csv('{data}/gacc_monthly_2023_2024.csv', all_varchar = true))")
sto = f"(select period, reporter, partner, flow, product, value from {stored('gacc')})"
out["gacc_missing"] = con.sql(f"select count(*) from ({src} except all {sto})").fetchone()[0]
out["gacc_extra"] = con.sql(f"select count(*) from ({sto} except all {src})").fetchone()[0]
out["gacc_rows"] = con.sql(f"select count(*) from {stored('gacc')}").fetchone()[0]
out["gacc_by_year_flow"] = [
    list(r) for r in con.sql(
        f"select year, flow, sum(value) from {stored('gacc')} group by all order by all").fetchall()
]
out["gacc_year_matches_period"] = con.sql(
    f"select bool_and(year = year(period)) from {stored('gacc')}").fetchone()[0]
# Critical minerals: partners are recoded, so compare counts and sums by product and year.
q = ("select product, year(period) y, count(*) n, sum(value) v, sum(quantity) q from {} "
     "group by all order by all")
src_cm = (f"(select strptime(period, '%Y-%m')::date as period, product, value::double as value, "
          f"quantity::double as quantity from read_csv('{data}/critical_minerals_hs6_monthly.csv', "
          f"all_varchar = true))")
out["cm_source"] = [list(r) for r in con.sql(q.format(src_cm)).fetchall()]
out["cm_stored"] = [list(r) for r in con.sql(q.format(stored("critical_minerals"))).fetchall()]
out["cm_partners"] = con.sql(
    f"select count(distinct partner) from {stored('critical_minerals')}").fetchone()[0]
out["cm_partner_codes_iso3"] = con.sql(
    f"select bool_and(regexp_matches(partner, '^[A-Z]{{3}}$')) from {stored('critical_minerals')}").fetchone()[0]
print(json.dumps(out))
