#!/usr/bin/env bash
# The main job on the bundled data: builds tradeql, stores the monthly yuan/dollar
# rates, ingests the China customs totals, the customs' 2024 partner table (as
# published) and the critical-minerals panel into ./store, stores the reference
# groups, verifies the store, prints the 2024 headline figures, and runs the
# release job (every saved query) into ./extracts. Safe to re-run: a re-ingest
# replaces the same periods (a revision) and bumps the manifest version.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${TRADEQL_STORE:-store}
cargo build --quiet
tq=${CARGO_TARGET_DIR:-target}/debug/tradeql
$tq rates add data/fx_monthly.csv --store "$store"
$tq ingest data/gacc_monthly_2023_2024.csv --mapping data/gacc.toml --store "$store" --quiet
$tq ingest data/gacc_partners_2024.csv --mapping data/gacc_partners.toml --store "$store" --quiet
$tq ingest data/critical_minerals_hs6_monthly.csv --mapping data/critical_minerals.toml --store "$store" --quiet
$tq groups add partner_groups data/partner_groups.csv --of partner --store "$store"
$tq groups add hs_sections data/hs_section_groups.csv --of product --store "$store"
$tq groups add un_regions data/un_regions.csv --of partner --store "$store"
$tq names add data/country_codes.csv --of partner --code iso3 --name name_en --store "$store"
$tq names add data/hs_codes.csv --of product --code hscode --name description --store "$store"
$tq info "$store" --verify
echo
$tq run queries/trade_2024.tql --store "$store"
echo
if [ "$store" = store ]; then
    $tq batch queries/release.toml
fi
