"""tradeql from Python: trade press-release queries on the same engine as the CLI.

    >>> import tradeql
    >>> r = tradeql.run("queries/trade_2024.tql", store="store")
    >>> r.frame          # a polars DataFrame (tradeql's buffers, not a copy)
    >>> r.to_pandas()    # a pandas DataFrame
    >>> r.warnings       # the sentences the CLI prints
    >>> print(r.explain())

Errors are exceptions: ``QueryError`` (with ``file``, ``line``, ``column``,
``source_line`` and ``hints``), ``DataError`` (``file``, ``line``,
``column``, ``value``), ``StoreError`` and ``UsageError``, all subclasses of
``TradeqlError``; ``str(e)`` is what the CLI prints.
"""

from __future__ import annotations

import json
import os
import warnings as _warnings
from typing import Mapping, Optional, Sequence

from . import _tradeql
from ._tradeql import DataError, QueryError, StoreError, TradeqlError, UsageError

__version__ = _tradeql.__version__
__all__ = [
    "TradeqlWarning",
    "run",
    "sql",
    "batch",
    "Store",
    "Result",
    "TradeqlError",
    "QueryError",
    "DataError",
    "StoreError",
    "UsageError",
]


class TradeqlWarning(UserWarning):
    """A warning tradeql prints when it changes a store (a column not read,
    a group member that is not a code, ...)."""


def _params(params: Optional[Mapping[str, object]]) -> list:
    if params is not None and not isinstance(params, Mapping):
        raise UsageError("params is a mapping of names to values, such as {'year': 2024}")
    return [(str(k), str(v)) for k, v in (params or {}).items()]


def _store(store: Optional[str]) -> str:
    """The store a call names, else $TRADEQL_STORE, else ./store (as the CLI)."""
    return str(store) if store is not None else os.environ.get("TRADEQL_STORE", "store")


def _warned(reply):
    text, warnings = reply
    for w in warnings:
        _warnings.warn(w, TradeqlWarning, stacklevel=3)
    return text


class Result:
    """The result of one query.

    ``frame`` is a polars DataFrame, ``to_arrow()`` a pyarrow Table and
    ``to_pandas()`` a pandas DataFrame; all three read the buffers tradeql
    computed through the Arrow C stream interface (``__arrow_c_stream__``),
    so any library that speaks it can take the result itself.
    """

    def __init__(self, raw: "_tradeql.QueryResult"):
        self._raw = raw
        self._frame = None

    def __arrow_c_stream__(self, requested_schema=None):
        return self._raw.__arrow_c_stream__(requested_schema)

    @property
    def frame(self):
        """The result as a polars DataFrame (made once, then the same object)."""
        if self._frame is None:
            import polars as pl

            self._frame = pl.DataFrame(self._raw)
        return self._frame

    def to_arrow(self):
        """The result as a pyarrow Table."""
        import pyarrow as pa

        # Read as a stream: pa.table() would cast the string views to strings.
        return pa.RecordBatchReader.from_stream(self._raw).read_all()

    def to_pandas(self):
        """The result as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    @property
    def warnings(self) -> list:
        """The notes and warnings of the run, as the CLI prints them
        (``note: ...``, ``warning: ...``)."""
        return self._raw.messages

    @property
    def dataset(self) -> str:
        return self._raw.dataset

    @property
    def version(self) -> int:
        """The version of the dataset the query read."""
        return self._raw.version

    @property
    def seconds(self) -> float:
        """Seconds tradeql took, from reading the query to the collected result
        (the rest of a ``run()`` call is the binding's own time)."""
        return self._raw.seconds

    def explain(self) -> str:
        """tradeql's plan and polars' optimised plan, as ``tradeql explain`` prints them."""
        return self._raw.explain()

    def table(self) -> str:
        """The result formatted as the terminal shows it (units, formats; the
        first 100 rows of a result over 200, as the CLI on a terminal)."""
        return self._raw.table()

    def __len__(self) -> int:
        return len(self._raw)

    def buffer_address(self, column: str) -> int:
        """Where tradeql holds a Float64 column's values (its first chunk):
        ``frame`` and ``to_arrow()`` read the same address."""
        return self._raw.buffer_address(column)

    def __repr__(self) -> str:
        return self.table() + "".join("\n" + w for w in self.warnings)

    def _repr_html_(self) -> str:
        # The table as the terminal formats it, with units; the chart if the
        # query has a `chart` stage (or one can be drawn); warnings above it.
        return self._raw.html()


def run(
    query: str,
    store: Optional[str] = None,
    params: Optional[Mapping[str, object]] = None,
    engine: Optional[str] = None,
    as_of_version: Optional[int] = None,
    as_of: Optional[str] = None,
) -> Result:
    """Runs one query, as ``tradeql run`` does.

    ``query`` is a path to a ``.tql`` file, or the query's text (several
    lines, or one starting with ``from``). ``params`` override the query's
    ``param`` defaults. ``engine`` is ``"polars"`` (default), ``"duckdb"`` or
    ``"spark"``. ``as_of_version`` or ``as_of`` (``YYYY-MM-DD``) read a kept
    version of the store. The GIL is released while it runs; Ctrl-C stops it.
    """
    return Result(
        _tradeql.run(
            str(query),
            store=_store(store),
            params=_params(params),
            engine=engine,
            as_of_version=as_of_version,
            as_of=as_of,
        )
    )


def sql(
    query: str,
    store: Optional[str] = None,
    dialect: str = "spark",
    params: Optional[Mapping[str, object]] = None,
    store_uri: Optional[str] = None,
) -> str:
    """The query as one SQL statement for Spark or DuckDB: what ``tradeql sql``
    prints after its first line (a comment naming the file and the data
    version). Its result has tradeql's internal warning columns (``__w...``)
    too, which ``run(..., engine=...)`` reads and drops."""
    return _tradeql.sql(str(query), store=_store(store), dialect=dialect, params=_params(params), store_uri=store_uri)


def batch(job: str, incremental: bool = False, report: Optional[str] = None) -> dict:
    """Runs a batch job (a ``.toml`` file), as ``tradeql batch`` does; returns
    its run manifest (what ``run.json`` holds). ``report`` writes the release
    page there. A task that failed raises ``TradeqlError`` (as the CLI exits
    1) once the others are written; the manifest is its ``manifest``."""
    manifest = json.loads(_tradeql.batch(str(job), incremental=incremental, report=report))
    failed = [t for t in manifest.get("tasks", []) if t.get("status") == "failed"]
    if failed:
        e = TradeqlError(
            f"{len(failed)} of {len(manifest['tasks'])} tasks failed: "
            + "; ".join(f"{t['name']}: {t.get('error')}" for t in failed)
        )
        e.manifest = manifest
        raise e
    return manifest


class Store:
    """A tradeql store: its datasets, and the commands that change it."""

    def __init__(self, path: Optional[str] = None):
        self._raw = _tradeql.Store_(_store(path))

    @property
    def path(self) -> str:
        return self._raw.path

    def datasets(self) -> list:
        return self._raw.datasets()

    def info(self, verify: bool = False) -> str:
        """What ``tradeql info`` prints; with ``verify``, every file is checked
        and a problem is a ``StoreError``."""
        return self._raw.info(verify)

    def verify(self) -> str:
        return self._raw.verify()

    def ingest(
        self,
        files,
        dataset: Optional[str] = None,
        mapping: Optional[str] = None,
        currency: Optional[str] = None,
        quantity_unit: Optional[str] = None,
        rejects: Optional[str] = None,
        dry_run: bool = False,
        wait: bool = False,
    ) -> str:
        """Ingests CSV, Parquet or workbook files into a dataset, as ``tradeql
        ingest`` does; returns its report, and issues its warnings as
        ``TradeqlWarning``. ``wait`` waits for another writer instead of failing."""
        if isinstance(files, (str, bytes)) or not isinstance(files, Sequence):
            files = [files]
        return _warned(self._raw.ingest(
            [str(f) for f in files],
            dataset=dataset,
            mapping=None if mapping is None else str(mapping),
            currency=currency,
            quantity_unit=quantity_unit,
            rejects=None if rejects is None else str(rejects),
            dry_run=dry_run,
            wait=wait,
        ))

    def groups_add(self, name: str, file: str, of: str, strict: bool = False, wait: bool = False) -> str:
        """Stores a group table (``group,member,valid_from,valid_to``), as
        ``tradeql groups add`` does; its warnings as ``TradeqlWarning``."""
        return _warned(self._raw.groups_add(name, str(file), of, strict, wait))

    def names_add(self, file: str, of: str, code: str, name: str, wait: bool = False) -> str:
        """Stores the names of codes, as ``tradeql names add`` does."""
        return self._raw.names_add(str(file), of, code, name, wait)

    def rates_add(self, file: str, wait: bool = False) -> str:
        """Stores monthly exchange rates (``period,currency,per_usd``), as
        ``tradeql rates add`` does: the file replaces the store's rates table."""
        return self._raw.rates_add(str(file), wait)

    def rollup_add(self, dataset: str, by, name: Optional[str] = None, wait: bool = False) -> str:
        """Keeps a rollup of ``dataset`` by period and the codes ``by`` (a list,
        or a comma-separated string), as ``tradeql rollup add`` does: built now
        for every year, then kept up to date by every ingest."""
        if isinstance(by, str):
            by = [b.strip() for b in by.split(",") if b.strip()]
        return self._raw.rollup_add(dataset, list(by), name, wait)

    def rollup_remove(self, dataset: str, name: str, wait: bool = False) -> int:
        """Drops the rollup ``name`` of ``dataset``; returns the new version."""
        return self._raw.rollup_remove(dataset, name, wait)

    def rollup_advise(self, queries, params: Optional[Mapping[str, object]] = None) -> str:
        """The few rollups that would answer these saved queries (a path or a
        list of paths, files or folders), with their estimated sizes."""
        if isinstance(queries, (str, bytes)) or hasattr(queries, "__fspath__"):
            queries = [queries]
        return self._raw.rollup_advise([str(q) for q in queries], _params(params))

    def __repr__(self) -> str:
        return f"tradeql.Store({self.path!r})"
