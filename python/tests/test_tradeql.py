"""The Python package against the CLI: same rows, same messages, same errors.

Run by `scripts/test.sh` after `maturin develop` has put the package into
.venv. The CLI is the binary `cargo test` built (TRADEQL_BIN, else
$CARGO_TARGET_DIR/debug/tradeql). The store is built from the bundled data
through the package's own Store API, as scripts/main.sh builds it with the CLI.
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

import tradeql

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUERIES = sorted((ROOT / "queries").glob("*.tql"))


def cli_binary() -> str:
    if os.environ.get("TRADEQL_BIN"):
        return os.environ["TRADEQL_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(pathlib.Path(target) / "debug" / "tradeql")


def cli(*args, check=True):
    out = subprocess.run([cli_binary(), *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"tradeql {' '.join(map(str, args))} failed: {out.stderr}")
    return out


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """The bundled data, stored as scripts/main.sh stores it, through tradeql.Store."""
    path = tmp_path_factory.mktemp("bundled") / "store"
    s = tradeql.Store(str(path))
    d = ROOT / "data"
    assert "rates" in s.rates_add(str(d / "fx_monthly.csv"))
    s.ingest(str(d / "gacc_monthly_2023_2024.csv"), mapping=str(d / "gacc.toml"))
    s.ingest([str(d / "gacc_partners_2024.csv")], mapping=str(d / "gacc_partners.toml"))
    s.ingest(str(d / "critical_minerals_hs6_monthly.csv"), mapping=str(d / "critical_minerals.toml"))
    s.groups_add("partner_groups", str(d / "partner_groups.csv"), of="partner")
    s.groups_add("hs_sections", str(d / "hs_section_groups.csv"), of="product")
    s.groups_add("un_regions", str(d / "un_regions.csv"), of="partner")
    s.names_add(str(d / "country_codes.csv"), of="partner", code="iso3", name="name_en")
    s.names_add(str(d / "hs_codes.csv"), of="product", code="hscode", name="description")
    assert s.datasets() == ["critical_minerals", "gacc", "gacc_partners"]
    assert "every file matches its manifest" in s.verify()
    return str(path)


@pytest.mark.parametrize("query", QUERIES, ids=[q.stem for q in QUERIES])
def test_every_saved_query_gives_the_clis_parquet_output(query, store, tmp_path, monkeypatch):
    # The in-memory engine adds every sum in one order, so two runs give the
    # same bits (the default for a store this small); polars' streaming
    # engine may add a group's partial sums in another order from run to run.
    monkeypatch.setenv("TRADEQL_ENGINE", "in-memory")
    out = tmp_path / "cli.parquet"
    ran = cli("run", query, "--store", store, "--out", out)
    r = tradeql.run(str(query), store=store)
    # Same columns, types and values, bit for bit (NaN and inf included).
    assert_frame_equal(r.frame, pl.read_parquet(out), check_exact=True)
    # The same notes and warnings, in the same words.
    assert r.warnings == [line for line in ran.stderr.splitlines() if line]
    assert r.version >= 1 and r.dataset in query.read_text()
    # pyarrow and pandas read the same rows.
    assert r.to_arrow().num_rows == r.frame.height == len(r)
    assert len(r.to_pandas()) == r.frame.height


@pytest.mark.parametrize("query", QUERIES, ids=[q.stem for q in QUERIES])
def test_every_saved_query_on_the_default_engine(query, store, tmp_path):
    out = tmp_path / "cli.parquet"
    cli("run", query, "--store", store, "--out", out)
    got, want = tradeql.run(str(query), store=store).frame, pl.read_parquet(out)
    # Equal to the last bit but for a sum the streaming engine may add in
    # another order (see above): within 1e-12 relative.
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-12, abs_tol=0.0)


def test_query_text_params_and_the_table(store):
    r = tradeql.run(
        "param year = 2023\nfrom gacc\nwhere year = $year\nby year\nshow value as trillion",
        store=store,
        params={"year": 2024},
    )
    assert r.frame["year"].to_list() == [2024]
    assert r.frame["value"][0] == pytest.approx(43.85e12, rel=1e-3)
    # The table as the terminal prints it, with its unit.
    assert "value (trillion)" in r.table() and "43.85" in r.table()
    assert r.table() in repr(r)


def test_a_warning_is_the_clis_sentence(store, tmp_path):
    q = tmp_path / "partial.tql"
    q.write_text("from gacc\nwhere period <= 2024-06\nby year\nshow yoy(value)\n")
    ran = cli("run", q, "--store", store)
    r = tradeql.run(str(q), store=store)
    assert any(w.startswith("warning: ") for w in r.warnings), r.warnings
    assert any(w.startswith("note: partial period") for w in r.warnings), r.warnings
    assert r.warnings == ran.stderr.splitlines()


def test_a_query_error_carries_its_place_and_renders_as_the_cli(store):
    q = ROOT / "tests/queries/errors/unknown_column.tql"
    with pytest.raises(tradeql.QueryError) as caught:
        tradeql.run(str(q), store=store)
    e = caught.value
    ran = cli("run", q, "--store", store, check=False)
    assert ran.returncode == 65
    # str(e) is what the CLI prints after "error: ".
    assert ran.stderr == f"error: {e}\n"
    assert e.file == str(q) and isinstance(e.line, int) and isinstance(e.column, int)
    assert e.source_line.split()[0] in ("where", "by", "show", "from")
    assert e.hints and e.hints[0].startswith("did you mean")
    assert e.exit_code == 65 and e.kind == "query"
    assert isinstance(e, tradeql.TradeqlError)


def test_several_syntax_errors_are_one_exception(store):
    q = ROOT / "tests/queries/errors/several_mistakes.tql"
    with pytest.raises(tradeql.QueryError) as caught:
        tradeql.run(str(q), store=store)
    # The first error, then the two further ones, each with its marked line.
    text = str(caught.value)
    assert text.count("error: ") == 2 and text.count("^") == 5, text
    assert (caught.value.line, caught.value.column) == (3, 13)


def test_a_data_error_carries_file_line_column_and_value(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text(
        "period,reporter,partner,flow,product,value\n"
        "2024-01,CHN,USA,export,TOTAL,100\n"
        "2024-02,CHN,USA,export,TOTAL,12x\n"
    )
    s = tradeql.Store(str(tmp_path / "store"))
    with pytest.raises(tradeql.DataError) as caught:
        s.ingest(str(csv), dataset="t")
    e = caught.value
    assert (e.file, e.line, e.column, e.value) == (str(csv), 3, "value", "12x"), str(e)
    assert e.exit_code == 65
    # Nothing was written.
    assert not (tmp_path / "store" / "t").exists()


def test_a_missing_store_and_a_bad_engine(tmp_path, store):
    with pytest.raises(tradeql.StoreError) as caught:
        tradeql.run("from gacc\nby year", store=str(tmp_path / "nowhere"))
    assert "no store at" in str(caught.value)
    with pytest.raises(tradeql.UsageError):
        tradeql.run("from gacc\nby year", store=store, engine="excel")
    with pytest.raises(tradeql.StoreError):
        tradeql.run(str(tmp_path / "missing.tql"), store=store)


def test_sql_is_the_clis(store):
    q = ROOT / "queries/trade_2024.tql"
    for dialect in ["spark", "duckdb"]:
        ran = cli("sql", q, "--store", store, "--dialect", dialect)
        # The CLI's first line is a comment naming the file and version.
        assert tradeql.sql(str(q), store=store, dialect=dialect) == ran.stdout.split("\n", 1)[1]


def test_explain_names_the_plan_and_polars(store):
    text = tradeql.run(str(ROOT / "queries/trade_2024.tql"), store=store).explain()
    assert text.startswith("tradeql plan:") and "polars optimised plan:" in text


def test_the_notebook_shows_the_table_with_units_and_the_chart(store):
    r = tradeql.run(str(ROOT / "queries/monthly_flows.tql"), store=store)
    html = r._repr_html_()
    assert "<table>" in html and "<svg" in html
    # Every row of the result is a row of the table, formatted as in the terminal.
    assert html.count("<tr>") == r.frame.height + 1
    for header in r.table().splitlines()[0].split("  "):
        assert header.strip() in html
    # A query without a `chart` stage shows its table alone.
    plain = tradeql.run(str(ROOT / "queries/trade_2024.tql"), store=store)._repr_html_()
    assert "<svg" not in plain and "43.85" in plain


def test_batch_writes_the_extracts_and_returns_the_run_manifest(store, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(
        textwrap.dedent(
            f"""\
            store = "{store}"
            out_dir = "{tmp_path / 'out'}"
            [[query]]
            file = "{ROOT / 'queries/trade_2024.tql'}"
            """
        )
    )
    manifest = tradeql.batch(str(job))
    (task,) = manifest["tasks"]
    assert task["status"] == "ok"
    written = pl.read_parquet(task["output"])
    assert_frame_equal(written, tradeql.run(str(ROOT / "queries/trade_2024.tql"), store=store).frame)


def test_the_frame_is_tradeqls_buffers_not_a_copy(store):
    r = tradeql.run(str(ROOT / "queries/monthly_2024.tql"), store=store)
    via_polars = r.frame
    via_arrow = r.to_arrow()
    # tradeql's own buffer, and where polars and pyarrow read the column: one
    # address (polars hands its buffer to pyarrow without a copy). The column may
    # be a slice of a longer buffer (a filter that kept the last rows of each
    # series): Arrow then names the buffer's start and the slice's offset apart.
    col = next(c for c, t in via_polars.schema.items() if t == pl.Float64)
    ours = r.buffer_address(col)

    def first_value(array):
        return array.buffers()[1].address + array.offset * 8

    assert first_value(via_arrow.column(col).chunk(0)) == ours
    assert first_value(via_polars[col].to_arrow()) == ours


@pytest.fixture(scope="session")
def panel(tmp_path_factory) -> str:
    """A generated panel of 2.3 M rows (dataset `trade`)."""
    path = tmp_path_factory.mktemp("panel") / "store"
    cli("gen", "--into", path, "--partners", "100", "--products", "300", "--months", "48", "--density", "0.8")
    return str(path)


MEASURE = """
import json, resource, sys
import polars, pyarrow, tradeql

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
r = tradeql.run(sys.argv[1], store=sys.argv[2])
before = rss()
frame = r.frame
table = r.to_arrow()
after = rss()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(rows=frame.height, size=frame.estimated_size(), base=base, peak=peak, handed=after - before)))
"""


def test_a_large_result_reaches_python_without_a_second_copy(panel, tmp_path):
    q = tmp_path / "rows.tql"
    q.write_text("from trade\nwhere value > 0\n")
    got = subprocess.run([sys.executable, "-c", MEASURE, str(q), panel], capture_output=True, text=True, check=True)
    m = __import__("json").loads(got.stdout)
    assert m["rows"] > 2_000_000 and m["size"] > 50 * 2**20, m
    # Handing the result to polars and to pyarrow allocates next to nothing:
    # a copy would take the frame's size again (pyarrow's first conversion
    # maps a few MB of its own, 5% of the frame on one CI run).
    assert m["handed"] < 0.25 * m["size"], m
    # The peak of the whole run (less what importing polars and pyarrow took)
    # is no more than the CLI's writing the same result as Arrow.
    measure_cli = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)"
    )
    out = tmp_path / "rows.arrow"
    cli_peak = int(
        subprocess.run(
            [sys.executable, "-c", measure_cli, cli_binary(), "run", str(q), "--store", panel, "--out", str(out)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    print(f"python: {(m['peak'] - m['base']) / 2**20:.0f} MB over its imports; CLI to Arrow: {cli_peak / 2**20:.0f} MB")
    assert m["peak"] - m["base"] <= 1.1 * cli_peak, (m, cli_peak)


def test_the_gil_is_released_while_a_query_runs(store):
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    started = time.perf_counter()
    for _ in range(5):
        tradeql.run(str(ROOT / "queries/partners_blocs_2024.tql"), store=store)
    seconds = time.perf_counter() - started
    done.set()
    t.join()
    # The counting thread ran throughout: at least a tick per 5 ms of query.
    assert len(ticks) >= seconds / 0.005, (len(ticks), seconds)


def test_ctrl_c_stops_a_long_query(tmp_path, panel):
    q = tmp_path / "long.tql"
    q.write_text("from trade\nby month, partner, product\nshow value, yoy(value), rank(value), share(value)\n")
    script = textwrap.dedent(
        f"""\
        import sys, time, tradeql
        print("ready", flush=True)
        started = time.perf_counter()
        try:
            tradeql.run({str(q)!r}, store={panel!r})
            print("finished", time.perf_counter() - started, flush=True)
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter() - started, flush=True)
        """
    )
    env = dict(os.environ, TRADEQL_PUSHDOWN="off")
    # Once whole, to know how long it takes.
    whole = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert "finished" in whole.stdout, whole.stderr
    full = float(whole.stdout.split()[-1])
    assert full > 1.0, f"the query is too short to interrupt ({full:.2f} s)"
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(min(0.5, full / 4))
    p.send_signal(signal.SIGINT)
    out = p.communicate(timeout=60)[0]
    assert out.startswith("interrupted"), out
    assert float(out.split()[-1]) < full * 0.75, (out, full)


def test_errors_pickle_with_their_attributes(store):
    import pickle

    with pytest.raises(tradeql.QueryError) as caught:
        tradeql.run("from gacc\nwhere partnr = 1\nby year", store=store)
    back = pickle.loads(pickle.dumps(caught.value))
    assert type(back) is tradeql.QueryError and str(back) == str(caught.value)
    assert (back.line, back.column, back.hints) == (caught.value.line, caught.value.column, caught.value.hints)


def test_params_are_trimmed_as_the_cli_trims_them(store):
    q = str(ROOT / "queries/trade_2024.tql")
    assert_frame_equal(
        tradeql.run(q, store=store, params={"year": " 2023 "}).frame,
        tradeql.run(q, store=store, params={"year": 2023}).frame,
    )
    with pytest.raises(tradeql.UsageError):
        tradeql.run(q, store=store, params=[("year", "2023")])


def test_the_store_defaults_to_tradeql_store(store, monkeypatch):
    monkeypatch.setenv("TRADEQL_STORE", store)
    assert tradeql.run("from gacc\nby year").version >= 1
    assert tradeql.Store().datasets() == tradeql.Store(store).datasets()


def test_unit_value_in_a_filter_after_by(store):
    kept = tradeql.run("from critical_minerals\nby year\nsum value\nwhere unit_value() > 0\nshow value", store=store)
    every = tradeql.run("from critical_minerals\nby year\nsum value\nshow value, unit_value()", store=store)
    assert kept.frame["value"].to_list() == every.frame.filter(pl.col("unit_value") > 0)["value"].to_list()


def test_ingest_and_group_warnings_reach_python(tmp_path):
    csv = tmp_path / "extra.csv"
    csv.write_text("period,reporter,partner,flow,product,value,extra\n2024-01,CHN,USA,export,TOTAL,100,x\n")
    s = tradeql.Store(str(tmp_path / "store"))
    with pytest.warns(tradeql.TradeqlWarning, match="extra"):
        s.ingest(str(csv), dataset="t")
    groups = tmp_path / "groups.csv"
    groups.write_text("group,member,valid_from,valid_to\nG1,USA,,\nG1,XXQ,,\n")
    with pytest.warns(tradeql.TradeqlWarning, match="XXQ"):
        s.groups_add("gg", str(groups), of="partner")


def test_a_failed_batch_task_raises_after_the_others_are_written(store, tmp_path):
    bad = tmp_path / "bad.tql"
    bad.write_text("from gacc\nwhere partnr = 1\nby year\n")
    job = tmp_path / "job.toml"
    job.write_text(
        f'store = "{store}"\nout_dir = "{tmp_path / "out"}"\n'
        f'[[query]]\nfile = "{ROOT / "queries/trade_2024.tql"}"\n[[query]]\nfile = "{bad}"\n'
    )
    with pytest.raises(tradeql.TradeqlError) as caught:
        tradeql.batch(str(job))
    statuses = sorted(t["status"] for t in caught.value.manifest["tasks"])
    assert statuses == ["failed", "ok"] and "1 of 2 tasks failed" in str(caught.value)


def test_the_notebook_view_restyles_nothing_around_it(store):
    html = tradeql.run(str(ROOT / "queries/trade_2024.tql"), store=store)._repr_html_()
    assert html.startswith('<div class="tradeql">') and "body{" not in html


def test_rollups_from_python_advise_add_answer_as_the_rows_and_remove(tmp_path):
    path = tmp_path / "store"
    cli("gen", "--into", path, "--partners", "12", "--products", "40", "--months", "24", "--density", "0.7")
    s = tradeql.Store(str(path))
    q = tmp_path / "q2.tql"
    q.write_text("from trade\nby year, partner\nsum value\nshow value, yoy(value)\n")
    advice = s.rollup_advise(q)
    assert "tradeql rollup add trade --by partner" in advice, advice
    from_rows = tradeql.run(str(q), store=str(path))
    assert "in place of the rows" not in from_rows.explain()
    added = s.rollup_add("trade", "partner")
    assert added.startswith("rollup ") and "(by period, partner)" in added, added
    assert "the store has it" in s.rollup_advise([q])
    from_rollup = tradeql.run(str(q), store=str(path))
    assert "in place of the rows" in from_rollup.explain(), from_rollup.explain()
    assert_frame_equal(from_rollup.frame, from_rows.frame, check_exact=False, rel_tol=1e-12)
    name = added.split()[1]
    version = s.rollup_remove("trade", name)
    assert version > from_rollup.version
    assert "in place of the rows" not in tradeql.run(str(q), store=str(path)).explain()
    with pytest.raises(tradeql.UsageError, match="has no rollup"):
        s.rollup_remove("trade", name)
