#!/usr/bin/env bash
# Redraws the README's charts (docs/charts/) from the bundled data: run
# scripts/main.sh first (it builds tradeql and the store).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
tq=${CARGO_TARGET_DIR:-target}/debug/tradeql
$tq run queries/monthly_flows.tql --store store --chart docs/charts/monthly_flows.svg > /dev/null
$tq run queries/minerals_partners.tql --store store --chart docs/charts/minerals_partners.svg > /dev/null
