#!/usr/bin/env bash
# Rebuilds data/ from the shared reference data (../shared/data by default).
# The copies are byte-for-byte; hs_section_groups.csv is derived (see data/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data}
for f in gacc_monthly_2023_2024.csv critical_minerals_hs6_monthly.csv partner_groups.csv \
         hs_codes.csv hs_sections.csv country_codes.csv gacc_partners_2024.csv gacc_partner_codes.csv; do
    cp "$src/$f" "data/$f"
done
# HS sections as a reference-group table: group = section (I..XXI), member = HS chapter.
{
    echo "group,member,valid_from,valid_to"
    awk -F, 'NR > 1 && $NF == 2 { print $1 "," $2 ",," }' "$src/hs_codes.csv"
} > data/hs_section_groups.csv
echo "data/ rebuilt from $src"
