"""Ingest throughput: ``skyclass ingest`` against raw binary COPY and pandas ``to_sql``.

Variants, run side by side (interleaved rounds, medians), each into a fresh table:

- ``ingest_fits``: :func:`skyclass.ingest.ingest_file` on a FITS file of
  ``rows`` synthetic SDSS-like objects: read, validate, Q3C pixel numbers,
  sort, encode, COPY in Q3C order, primary key, Q3C index, ``CLUSTER ON``,
  ANALYZE and registry rows, in one transaction. Its split into a load phase
  (until the primary key starts: reading, checks, sorting, encoding and COPY)
  and an index phase (primary key, Q3C index, ``CLUSTER ON``, ANALYZE,
  registry, commit) is read from ``pg_stat_activity`` by a second connection
  while it runs.
- ``ingest_fits_streamed``: the same ingest forced onto its fallback for files
  too big to sort in memory (``sort_memory=0``): COPY in file order, then
  ``CLUSTER`` rewrites the table (what every ingest did before it sorted).
- ``raw_copy``: the same rows, encoded beforehand in memory, sent with ``COPY
  FROM STDIN (FORMAT BINARY)`` into a plain table (no constraint, no index):
  the limit for getting these rows into PostgreSQL.
- ``raw_copy_indexed``: the same rows sorted in Q3C order beforehand, into a
  table with the catalog's constraints, followed by the same primary key, Q3C
  index, ``CLUSTER ON`` and ANALYZE: what the ingest does, minus reading,
  checking and sorting the file.
- ``raw_copy_cluster``: the rows in file order, then primary key, Q3C index,
  ``CLUSTER`` and ANALYZE: the like-for-like of the streamed ingest.
- ``ingest_csv``: the ingest of the same rows as CSV (for information).
- ``ingest_fits_small``, ``to_sql_default``, ``to_sql_multi``: the ingest of
  the first ``to_sql_rows`` rows and pandas ``DataFrame.to_sql`` of the same
  rows through the SQLAlchemy engine of :func:`skyclass.db.connect.engine`,
  with pandas' default method and with ``method="multi"``. ``method="multi"``
  gets fewer rows because it is too slow for a million; it creates no key
  and no index, so the comparison flatters it.
- ``to_sql_default_full``: pandas' default method on all the rows, the same
  rows as ``ingest_fits`` (the target compares these two).

Usage: ``.venv/bin/python bench/bench_ingest.py [--quick] [--rows N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BANDS,
    SyntheticCatalog,
    checkpoint,
    create_table_sql,
    drop_catalog,
    encode_copy,
    format_table,
    index_statements,
    interleaved,
    load_average,
    median,
    patch_for,
    require_absent,
    say,
    synthetic_catalog,
    wall,
    write_csv,
    write_fits,
)
from skyclass.ingest.q3c import ang2ipix

SEED = 20261122
TABLES = {
    "ingest_fits": "bench_ingest_fits",
    "ingest_fits_streamed": "bench_ingest_streamed",
    "ingest_csv": "bench_ingest_csv",
    "ingest_fits_small": "bench_ingest_small",
    "raw_copy": "bench_raw_copy",
    "raw_copy_indexed": "bench_raw_copy_indexed",
    "raw_copy_cluster": "bench_raw_copy_cluster",
    "to_sql_default": "bench_to_sql_default",
    "to_sql_multi": "bench_to_sql_multi",
    "to_sql_default_full": "bench_to_sql_default_full",
}
# Statements after the COPY of raw_copy_indexed (as the ingest runs them) and of
# raw_copy_cluster (as the streamed ingest does).
INDEX_STEPS = ("primary key", "Q3C index", "CLUSTER ON", "ANALYZE")
CLUSTER_STEPS = ("primary key", "Q3C index", "CLUSTER", "ANALYZE")
# The variants given the first to_sql_rows rows only.
SMALL_VARIANTS = ("ingest_fits_small", "to_sql_default", "to_sql_multi")
TO_SQL_CHUNKSIZE = 1000  # rows per multi-row INSERT (8 parameters per row)
TARGET_VS_RAW = 0.5
TARGET_VS_TO_SQL = 10.0


@dataclass
class IngestResult:
    """Medians (seconds), rates (rows/s) and ratios of one ingest benchmark run."""

    rows: int
    to_sql_rows: int
    repeats: int
    seconds: dict[str, float]
    rates: dict[str, float]
    phases: dict[str, dict[str, float]]
    ratios: dict[str, float]
    targets: dict[str, bool]
    index_steps: dict[str, float] = field(default_factory=dict)
    cluster_steps: dict[str, float] = field(default_factory=dict)
    load_average: dict[str, list[float]] = field(default_factory=dict)
    all_seconds: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready data."""
        return asdict(self)


class StatementTracer:
    """Watch another session's statements through ``pg_stat_activity``.

    Polls every ``interval`` seconds from its own connection and records the
    start time (server clock, epoch seconds) and text of every statement seen
    in sessions whose ``application_name`` is ``application``.
    """

    def __init__(self, url: str, application: str = "skyclass", interval: float = 0.01) -> None:
        self.url = url
        self.application = application
        self.interval = interval
        self.statements: dict[float, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> StatementTracer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _poll(self) -> None:
        try:
            with psycopg.connect(
                self.url, autocommit=True, application_name="skyclass-bench-tracer"
            ) as conn:
                query = (
                    "SELECT extract(epoch FROM query_start)::float8, left(query, 200) "
                    "FROM pg_stat_activity WHERE application_name = %s "
                    "AND datname = current_database() AND pid <> pg_backend_pid() "
                    "AND query_start IS NOT NULL"
                )
                self._ready.set()
                while not self._stop.is_set():
                    for started, text in conn.execute(query, (self.application,), prepare=True):
                        self.statements.setdefault(float(started), str(text))
                    time.sleep(self.interval)
        except BaseException as exc:  # reported by __exit__ in the caller's thread
            self._error = exc
            self._ready.set()

    def first_start(self, predicate: Callable[[str], bool]) -> float | None:
        """Start (epoch seconds) of the earliest statement whose text satisfies ``predicate``."""
        starts = [t for t, text in self.statements.items() if predicate(text)]
        return min(starts) if starts else None


def _is_index_phase(text: str) -> bool:
    head = text.lstrip().upper()
    return (
        (head.startswith("ALTER TABLE") and "PRIMARY KEY" in head)
        or head.startswith("CREATE INDEX")
        or (head.startswith("ALTER TABLE") and "CLUSTER ON" in head)
        or head.startswith("CLUSTER")
        or head.startswith("ANALYZE")
    )


class IngestBench:
    """The variants of the ingest benchmark on one database (see the module docstring)."""

    def __init__(
        self, url: str, catalog: SyntheticCatalog, small: SyntheticCatalog, directory: Path
    ) -> None:
        self.url = url
        self.catalog = catalog
        self.small = small
        self.fits = write_fits(catalog, directory / "bench.fits")
        self.csv = write_csv(catalog, directory / "bench.csv")
        self.small_fits = write_fits(small, directory / "bench_small.fits")
        self.payload = encode_copy(catalog)
        self.sorted_payload = encode_copy(
            catalog.take(np.argsort(ang2ipix(catalog.ra, catalog.dec), kind="stable"))
        )
        self.phases: dict[str, list[tuple[float, float]]] = {}
        # Seconds of each statement after the COPY of raw_copy_indexed/_cluster, per round.
        self.steps: dict[str, list[float]] = {name: [] for name in INDEX_STEPS}
        self.cluster_steps: dict[str, list[float]] = {name: [] for name in CLUSTER_STEPS}

    def variants(self) -> dict[str, Callable[[], float]]:
        """Name -> callable that runs the variant once and returns its seconds."""
        return {
            "ingest_fits": lambda: self._ingest("ingest_fits", self.fits),
            "ingest_fits_streamed": lambda: self._ingest(
                "ingest_fits_streamed", self.fits, sort_memory=0
            ),
            "raw_copy": lambda: self._raw_copy("raw_copy"),
            "raw_copy_indexed": lambda: self._raw_copy("raw_copy_indexed"),
            "raw_copy_cluster": lambda: self._raw_copy("raw_copy_cluster"),
            "ingest_csv": lambda: self._ingest("ingest_csv", self.csv),
            "ingest_fits_small": lambda: self._ingest("ingest_fits_small", self.small_fits),
            "to_sql_default": lambda: self._to_sql("to_sql_default", method=None),
            "to_sql_multi": lambda: self._to_sql("to_sql_multi", method="multi"),
            "to_sql_default_full": lambda: self._to_sql(
                "to_sql_default_full", method=None, rows=self.catalog
            ),
        }

    def _ingest(self, variant: str, path: Path, *, sort_memory: int | None = None) -> float:
        from skyclass.ingest import ingest_file
        from skyclass.ingest.load import SORT_MEMORY

        name = TABLES[variant]
        checkpoint(self.url)
        with StatementTracer(self.url) as tracer:
            started = time.time()
            clock = wall()
            report = ingest_file(
                path,
                name,
                url=self.url,
                sort_memory=SORT_MEMORY if sort_memory is None else sort_memory,
            )
            elapsed = wall() - clock
            finished = started + elapsed
        index_start = tracer.first_start(_is_index_phase)
        if index_start is not None:
            index_start = min(max(index_start, started), finished)
            self.phases.setdefault(variant, []).append(
                (index_start - started, finished - index_start)
            )
        drop_catalog(self.url, name)
        if report.rows_accepted != self._rows(variant):
            raise RuntimeError(f"{variant}: loaded {report.rows_accepted} rows")
        return elapsed

    def _rows(self, variant: str) -> int:
        return len(self.small) if variant in SMALL_VARIANTS else len(self.catalog)

    def _raw_copy(self, variant: str) -> float:
        name = TABLES[variant]
        indexed = variant != "raw_copy"
        steps = self.cluster_steps if variant == "raw_copy_cluster" else self.steps
        payload = self.sorted_payload if variant == "raw_copy_indexed" else self.payload
        checkpoint(self.url)
        with psycopg.connect(self.url) as conn:
            clock = wall()
            with conn.transaction():
                conn.execute(create_table_sql(name, constraints=indexed))
                statement = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier("catalogs", name)
                )
                with conn.cursor() as cur, cur.copy(statement) as copy:
                    copy.write(payload)
                copied = wall()
                if indexed:
                    statements = index_statements(conn, name)
                    if variant == "raw_copy_indexed":
                        # The rows are in Q3C order already: mark, do not rewrite.
                        statements[2] = sql.SQL("ALTER TABLE {} CLUSTER ON {}").format(
                            sql.Identifier("catalogs", name), sql.Identifier(f"_{name}_q3c")
                        )
                    for step, index_sql in zip(steps, statements, strict=True):
                        started = wall()
                        conn.execute(index_sql)
                        steps[step].append(wall() - started)
            elapsed = wall() - clock
        if indexed:
            self.phases.setdefault(variant, []).append((copied - clock, elapsed - copied + clock))
        drop_catalog(self.url, name)
        return elapsed

    def _to_sql(
        self, variant: str, *, method: str | None, rows: SyntheticCatalog | None = None
    ) -> float:
        import pandas as pd

        from skyclass.db.connect import engine

        name = TABLES[variant]
        data = self.small if rows is None else rows
        frame = pd.DataFrame(
            {"object_id": data.object_id, "ra": data.ra, "dec": data.dec}
            | {band: data.mags[:, j] for j, band in enumerate(BANDS)}
        )
        checkpoint(self.url)
        eng = engine(self.url)
        try:
            clock = wall()
            frame.to_sql(
                name,
                eng,
                schema="catalogs",
                if_exists="fail",
                index=False,
                method=method,
                chunksize=TO_SQL_CHUNKSIZE if method == "multi" else None,
            )
            elapsed = wall() - clock
        finally:
            eng.dispose()
        # to_sql's own row count is -1 for executemany: count what arrived.
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("catalogs", name))
            ).fetchone()
        drop_catalog(self.url, name)
        if row is None or row[0] != len(data):
            raise RuntimeError(f"{variant}: to_sql wrote {row} rows, not {len(data)}")
        return elapsed


def run(
    url: str,
    *,
    rows: int = 1_000_000,
    to_sql_rows: int = 100_000,
    repeats: int = 3,
    workdir: Path | None = None,
) -> IngestResult:
    """Run the ingest benchmark on database ``url`` and print its figures.

    ``rows`` objects go through the ingest (FITS and CSV) and the raw COPY
    variants, the first ``to_sql_rows`` through the small ingest and both
    ``to_sql`` methods; each variant runs ``repeats`` times, interleaved.
    Files are written under ``workdir`` (default: a temporary directory).
    Returns the medians, rates, phase split, ratios and target verdicts.
    """
    to_sql_rows = min(to_sql_rows, rows)
    require_absent(url, TABLES.values())
    say(f"ingest benchmark: {rows:,} rows (to_sql: {to_sql_rows:,}), {repeats} rounds")
    before = load_average()
    catalog = synthetic_catalog(rows, patch_for(rows), SEED)
    small = catalog.slice(0, to_sql_rows)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="skyclass-bench-ingest-") as tmp:
        bench = IngestBench(url, catalog, small, Path(tmp))
        say(
            f"  files: FITS {bench.fits.stat().st_size / 1e6:.1f} MB, "
            f"CSV {bench.csv.stat().st_size / 1e6:.1f} MB; "
            f"pre-encoded COPY stream {len(bench.payload) / 1e6:.1f} MB"
        )
        try:
            seconds = interleaved(bench.variants(), repeats)
        finally:
            for name in TABLES.values():
                drop_catalog(url, name)
    result = _summarise(rows, to_sql_rows, repeats, seconds, bench.phases)
    result.index_steps = {step: median(values) for step, values in bench.steps.items() if values}
    result.cluster_steps = {
        step: median(values) for step, values in bench.cluster_steps.items() if values
    }
    result.load_average = {"before": before, "after": load_average()}
    print_result(result)
    return result


def _rows_of(variant: str, rows: int, to_sql_rows: int) -> int:
    """Rows a variant loads: all of them, or the first ``to_sql_rows`` for the small ones."""
    return to_sql_rows if variant in SMALL_VARIANTS else rows


def _summarise(
    rows: int,
    to_sql_rows: int,
    repeats: int,
    seconds: dict[str, list[float]],
    phases: dict[str, list[tuple[float, float]]],
) -> IngestResult:
    medians = {name: median(values) for name, values in seconds.items()}
    sizes = {name: _rows_of(name, rows, to_sql_rows) for name in medians}
    rates = {name: sizes[name] / medians[name] for name in medians}
    phase_medians: dict[str, dict[str, float]] = {}
    for name, pairs in phases.items():
        load = median([p[0] for p in pairs])
        index = median([p[1] for p in pairs])
        phase_medians[name] = {
            "load_seconds": load,
            "index_seconds": index,
            "load_rows_per_second": sizes[name] / load if load > 0 else 0.0,
        }
    best_to_sql = max(rates["to_sql_default"], rates["to_sql_multi"])
    ratios = {
        "ingest/raw_copy": rates["ingest_fits"] / rates["raw_copy"],
        "ingest/raw_copy_indexed": rates["ingest_fits"] / rates["raw_copy_indexed"],
        "ingest/raw_copy_cluster": rates["ingest_fits"] / rates["raw_copy_cluster"],
        "ingest/ingest_streamed (CLUSTER path)": rates["ingest_fits"]
        / rates["ingest_fits_streamed"],
        "raw_copy_indexed/raw_copy": rates["raw_copy_indexed"] / rates["raw_copy"],
        "ingest/to_sql_default (same rows)": rates["ingest_fits_small"] / rates["to_sql_default"],
        "ingest/to_sql_multi (same rows)": rates["ingest_fits_small"] / rates["to_sql_multi"],
        "ingest/to_sql_default (full-size ingest)": rates["ingest_fits"] / rates["to_sql_default"],
        "ingest/to_sql_multi (full-size ingest)": rates["ingest_fits"] / rates["to_sql_multi"],
        "ingest/to_sql_default (same full-size rows)": rates["ingest_fits"]
        / rates["to_sql_default_full"],
        "ingest_csv/ingest_fits": rates["ingest_csv"] / rates["ingest_fits"],
    }
    if "ingest_fits" in phase_medians:
        ratios["ingest load phase/raw_copy"] = (
            phase_medians["ingest_fits"]["load_rows_per_second"] / rates["raw_copy"]
        )
    if "ingest_fits_small" in phase_medians:
        # to_sql builds no key and no index: its like-for-like is the ingest's load phase.
        ratios["ingest load phase/to_sql_default (same rows)"] = (
            phase_medians["ingest_fits_small"]["load_rows_per_second"] / rates["to_sql_default"]
        )
    targets = {
        f"ingest >= {TARGET_VS_RAW}x raw COPY": ratios["ingest/raw_copy"] >= TARGET_VS_RAW,
        f"ingest >= {TARGET_VS_RAW}x raw COPY + same indexes": ratios["ingest/raw_copy_indexed"]
        >= TARGET_VS_RAW,
        f"ingest >= {TARGET_VS_TO_SQL:g}x the faster to_sql (same {to_sql_rows:,} rows)": (
            rates["ingest_fits_small"] / best_to_sql >= TARGET_VS_TO_SQL
        ),
        f"ingest >= {TARGET_VS_TO_SQL:g}x to_sql default (same {rows:,} rows)": (
            ratios["ingest/to_sql_default (same full-size rows)"] >= TARGET_VS_TO_SQL
        ),
    }
    return IngestResult(
        rows=rows,
        to_sql_rows=to_sql_rows,
        repeats=repeats,
        seconds=medians,
        rates=rates,
        phases=phase_medians,
        ratios=ratios,
        targets=targets,
        all_seconds=seconds,
    )


def print_result(result: IngestResult) -> None:
    """Print the figures of ``result`` as tables."""
    size = {name: _rows_of(name, result.rows, result.to_sql_rows) for name in result.seconds}
    rows = [
        (name, f"{size[name]:,}", f"{result.seconds[name]:.3f}", f"{result.rates[name]:,.0f}")
        for name in result.seconds
    ]
    say(f"\ningest: medians of {result.repeats} interleaved rounds")
    say(format_table(("variant", "rows", "seconds", "rows/s"), rows))
    if result.phases:
        say(
            "\nphase split (load = read+check+sort+encode+COPY; "
            "index = PK, Q3C index, CLUSTER [ON], ANALYZE)"
        )
        say(
            format_table(
                ("variant", "load s", "index s", "load rows/s"),
                [
                    (
                        name,
                        f"{p['load_seconds']:.3f}",
                        f"{p['index_seconds']:.3f}",
                        f"{p['load_rows_per_second']:,.0f}",
                    )
                    for name, p in result.phases.items()
                ],
            )
        )
    if result.index_steps:
        say(
            "index phase of raw_copy_indexed by statement: "
            + ", ".join(f"{step} {s:.3f} s" for step, s in result.index_steps.items())
        )
    if result.cluster_steps:
        say(
            "index phase of raw_copy_cluster by statement: "
            + ", ".join(f"{step} {s:.3f} s" for step, s in result.cluster_steps.items())
        )
    say("\nratios (rows/s over rows/s)")
    say(format_table(("ratio", "value"), [(k, f"{v:.2f}") for k, v in result.ratios.items()]))
    say("\ntargets")
    for name, met in result.targets.items():
        say(f"  {'MET    ' if met else 'NOT MET'}  {name}")


def main(argv: list[str] | None = None) -> None:
    """Command line: run the ingest benchmark on its own."""
    from bench.common import bench_database, machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 10k for to_sql, 1 round")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--to-sql-rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    to_sql_rows = args.to_sql_rows or (10_000 if args.quick else 100_000)
    repeats = args.repeats or (1 if args.quick else 3)
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(url, rows=rows, to_sql_rows=to_sql_rows, repeats=repeats)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "ingest": result.as_dict()}, indent=2))


if __name__ == "__main__":
    main()
