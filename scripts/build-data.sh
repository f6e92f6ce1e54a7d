#!/usr/bin/env bash
# Rebuilds data/ from the shared reference data (../shared/data by default).
# The copies are byte-for-byte; hs_section_groups.csv is derived (see data/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data}
for f in gacc_monthly_2023_2024.csv critical_minerals_hs6_monthly.csv partner_groups.csv \
         hs_codes.csv hs_sections.csv country_codes.csv gacc_partners_2024.csv gacc_partner_codes.csv \
         fx_monthly.csv; do
    cp "$src/$f" "data/$f"
done
# HS sections as a reference-group table: group = section (I..XXI), member = HS chapter.
{
    echo "group,member,valid_from,valid_to"
    awk -F, 'NR > 1 && $NF == 2 { print $1 "," $2 ",," }' "$src/hs_codes.csv"
} > data/hs_section_groups.csv
# UN regions and sub-regions as a reference-group table: group = the UN region
# or sub-region name of country_codes.csv, member = ISO3 (open-ended).
{
    echo "group,member,valid_from,valid_to"
    python3 - "$src/country_codes.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
out = set()
for r in rows:
    for g in (r["region"], r["sub_region"]):
        if g:
            out.add((g, r["iso3"]))
for g, m in sorted(out):
    print(f'"{g}",{m},,' if "," in g else f"{g},{m},,")
PY
} > data/un_regions.csv
echo "data/ rebuilt from $src"
