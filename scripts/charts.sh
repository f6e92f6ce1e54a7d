#!/usr/bin/env bash
# Redraws the README's charts and the report screenshot (docs/charts/) from the
# bundled data: run
# scripts/main.sh first (it builds tradeql and the store).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
tq=${CARGO_TARGET_DIR:-target}/debug/tradeql
$tq run queries/monthly_flows.tql --store store --chart docs/charts/monthly_flows.svg > /dev/null
$tq run queries/minerals_partners.tql --store store --chart docs/charts/minerals_partners.svg > /dev/null
# The release job as one web page, and its screenshot for the README (needs
# Debian's chromium, which scripts/setup-peers.sh installs).
$tq batch queries/release.toml --report extracts/report.html > /dev/null 2>&1
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --window-size=1280,2000 --screenshot="$PWD/docs/charts/report.png" "file://$PWD/extracts/report.html" 2> /dev/null
