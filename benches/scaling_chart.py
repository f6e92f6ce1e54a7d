"""Draws benches/scaling.svg from the JSON reports of `tradeql bench` in
benches/results/scale-<rows>-<threads>t.json (see benches/RESULTS.md for the
commands). Standard library only: the chart is plain SVG.

usage: python3 benches/scaling_chart.py
"""
import glob
import json
import math
import os
import re

here = os.path.dirname(os.path.abspath(__file__))
runs = {}  # (threads, query) -> [(rows, tradeql_s, duckdb_s)]
for path in glob.glob(os.path.join(here, "results", "scale-*.json")):
    threads = int(re.search(r"-(\d+)t\.json$", path).group(1))
    report = json.load(open(path))
    for q in report["queries"]:
        duck = next(p for p in q["peers"] if p["peer"] == "duckdb")
        runs.setdefault((threads, q["id"]), []).append(
            (q["rows_scanned"], q["tradeql"]["median_s"], duck["timing"]["median_s"]))

W, H, PAD = 460, 340, 56
colours = {"Q1": "#1f77b4", "Q2": "#ff7f0e", "Q3": "#2ca02c", "Q4": "#d62728", "Q5": "#9467bd"}
all_rows = [r for v in runs.values() for r, _, _ in v]
all_times = [t for v in runs.values() for _, a, b in v for t in (a, b)]
x0, x1 = math.log10(min(all_rows)) - 0.1, math.log10(max(all_rows)) + 0.1
y0, y1 = math.log10(min(all_times)) - 0.1, math.log10(max(all_times)) + 0.1


def panel(threads, ox):
    def px(rows):
        return ox + PAD + (math.log10(rows) - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(sec):
        return H - PAD - (math.log10(sec) - y0) / (y1 - y0) * (H - 2 * PAD)

    out = [f'<text x="{ox + W / 2}" y="24" text-anchor="middle" font-size="15">{threads} thread{"s" if threads > 1 else ""}</text>']
    out.append(f'<rect x="{ox + PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#888"/>')
    for rows in (1e6, 4e6, 16e6, 64e6):
        x = px(rows)
        out.append(f'<line x1="{x}" y1="{H - PAD}" x2="{x}" y2="{H - PAD + 5}" stroke="#888"/>')
        out.append(f'<text x="{x}" y="{H - PAD + 18}" text-anchor="middle" font-size="11">{int(rows / 1e6)}M</text>')
    for sec in (0.01, 0.03, 0.1, 0.3, 1, 3):
        if y0 <= math.log10(sec) <= y1:
            y = py(sec)
            out.append(f'<line x1="{ox + PAD - 5}" y1="{y}" x2="{ox + W - PAD}" y2="{y}" stroke="#eee"/>')
            out.append(f'<text x="{ox + PAD - 8}" y="{y + 4}" text-anchor="end" font-size="11">{sec:g}</text>')
    out.append(f'<text x="{ox + W / 2}" y="{H - 14}" text-anchor="middle" font-size="12">rows scanned</text>')
    out.append(f'<text x="{ox + 16}" y="{H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 {ox + 16} {H / 2})">median seconds</text>')
    for q, colour in colours.items():
        pts = sorted(runs.get((threads, q), []))
        for idx, dash in ((1, ""), (2, ' stroke-dasharray="5,4"')):
            path = " ".join(f"{px(p[0]):.1f},{py(p[idx]):.1f}" for p in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
    return out


body = panel(1, 0) + panel(2, W)
legend_y = H + 8
for i, (q, colour) in enumerate(colours.items()):
    x = 70 + i * 90
    body.append(f'<line x1="{x}" y1="{legend_y}" x2="{x + 24}" y2="{legend_y}" stroke="{colour}" stroke-width="3"/>')
    body.append(f'<text x="{x + 30}" y="{legend_y + 4}" font-size="12">{q}</text>')
body.append(f'<text x="{560}" y="{legend_y + 4}" font-size="12">solid: tradeql    dashed: DuckDB</text>')
svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 24}" font-family="DejaVu Sans, sans-serif">'
       f'<rect width="100%" height="100%" fill="white"/>' + "".join(body) + "</svg>\n")
open(os.path.join(here, "scaling.svg"), "w").write(svg)
print("wrote", os.path.join(here, "scaling.svg"))
