"""Feature computation: in the database (``skyclass features build``) against numpy on an export.

The catalog is the bundled SDSS17 sample (99,999 objects, ingested with
:func:`skyclass.ingest.ingest_file`) replicated inside PostgreSQL with
shifted ids to about ``rows`` objects; the spec is the shipped
``sdss_ugriz`` example (5 magnitudes and 4 colours). Variants, run side by
side (interleaved rounds, medians):

- ``db_build_ctas``: :func:`skyclass.features.build_feature_set`, first build
  of a new version with ``CREATE TABLE AS``, primary key, ANALYZE and the
  registry row, in one transaction (what ``skyclass features build`` does);
- ``db_build_insert``: the same with ``CREATE TABLE`` (with its primary key)
  then ``INSERT ... SELECT``, the alternative the build could use;
- ``db_compute``: the build's ``SELECT`` aggregated in the server
  (``sum(cardinality(x))``, ``count(v)``): the computation without writing;
- ``numpy_export``: binary ``COPY`` of ``object_id, u, g, r, i, z`` to the
  client, decoded and turned into the same float32 matrix with numpy: what a
  client-side feature step costs before it has stored anything;
- ``numpy_roundtrip``: ``numpy_export`` plus the binary ``COPY`` of the result
  (ids, real[] and pgvector ``vector``) into a new table and its primary key:
  a client-side equivalent of the build.

The ratios printed compare rows per second. Usage: ``.venv/bin/python
bench/bench_features.py [--quick] [--rows N] [--repeats N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    format_table,
    interleaved,
    load_average,
    median,
    require_absent,
    say,
    wall,
)
from skyclass.features import (
    FeatureSpec,
    build_feature_set,
    example_spec_path,
    feature_sql,
    load_spec,
)
from skyclass.ingest import ingest_file

CATALOG = "bench_features_sdss17"
SDSS_FILE = (
    Path(__file__).resolve().parents[1]
    / "src/skyclass/demo/data/sdss17_star_classification_99999.csv.gz"
)
ID_STRIDE = 1_000_000  # copy k of object id n gets id n + k * ID_STRIDE (ids are < 100,001)
BANDS = ("u", "g", "r", "i", "z")
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
COPY_TRAILER = b"\xff\xff"


@dataclass
class FeaturesResult:
    """Medians, rates and ratios of one run."""

    rows: int
    repeats: int
    seconds: dict[str, float]
    rates: dict[str, float]
    ratios: dict[str, float]
    all_seconds: dict[str, list[float]] = field(default_factory=dict)
    load_average: dict[str, list[float]] = field(default_factory=dict)


def make_catalog(url: str, copies: int) -> int:
    """Ingest SDSS17 as :data:`CATALOG` and replicate it ``copies`` times; returns rows."""
    ingest_file(
        SDSS_FILE,
        CATALOG,
        id_column="orig_row",
        ra_column="alpha",
        dec_column="delta",
        description="bench_features: SDSS17 replicated",
        url=url,
    )
    table = sql.Identifier("catalogs", CATALOG)
    with psycopg.connect(url, autocommit=True) as conn:
        if copies > 1:
            columns = [
                r[0]
                for r in conn.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 1 AND NOT attisdropped ORDER BY attnum",
                    (f"catalogs.{CATALOG}",),
                )
            ]
            conn.execute(
                sql.SQL(
                    "INSERT INTO {t} SELECT c.object_id + k * {stride}, {cols} FROM {t} AS c, "
                    "generate_series(1, {last}) AS k"
                ).format(
                    t=table,
                    stride=sql.Literal(ID_STRIDE),
                    cols=sql.SQL(", ").join(
                        sql.SQL("c.{}").format(sql.Identifier(c)) for c in columns
                    ),
                    last=sql.Literal(copies - 1),
                )
            )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else 0


class FeaturesBench:
    """The variants, each measured on its own fresh feature set or table."""

    def __init__(self, url: str, spec: FeatureSpec, rows: int) -> None:
        self.url = url
        self.spec = spec
        self.rows = rows
        self.round = 0
        self.select_sql = feature_sql(spec, url=url)

    def variants(self) -> dict[str, Any]:
        return {
            "db_build_ctas": lambda: self._build("create_table_as"),
            "db_build_insert": lambda: self._build("insert_select"),
            "db_compute": self._compute,
            "numpy_export": lambda: self._numpy(store=False),
            "numpy_roundtrip": lambda: self._numpy(store=True),
        }

    def _build(self, method: str) -> float:
        self.round += 1
        # A new name per run: a first build every time, never the no-op rebuild.
        spec = replace(self.spec, name=f"bench_{method[:6]}_{self.round}", origin=None)
        clock = wall()
        fs = build_feature_set(spec, url=self.url, first_build=method)  # type: ignore[arg-type]
        elapsed = wall() - clock
        assert fs.build is not None and fs.build.rows_added == self.rows
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE {}").format(fs.table_identifier()))
            conn.execute(
                "DELETE FROM skyclass.feature_set WHERE feature_set_id = %s", (fs.feature_set_id,)
            )
            conn.execute("CHECKPOINT")
        return elapsed

    def _compute(self) -> float:
        query = f"SELECT sum(cardinality(s.x)), count(s.v) FROM ({self.select_sql}) AS s"
        with psycopg.connect(self.url) as conn:
            clock = wall()
            row = conn.execute(query).fetchone()  # type: ignore[arg-type]
            elapsed = wall() - clock
        assert row is not None and row[0] == self.rows * len(self.spec.feature_names)
        return elapsed

    def _numpy(self, *, store: bool) -> float:
        dtype = np.dtype(
            [("n", ">i2"), ("l0", ">i4"), ("id", ">i8")]
            + [item for b in BANDS for item in ((f"l{b}", ">i4"), (b, ">f8"))]
        )
        query = sql.SQL("COPY (SELECT object_id, {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
            sql.SQL(", ").join(sql.Identifier(b) for b in BANDS),
            sql.Identifier("catalogs", CATALOG),
        )
        table = sql.Identifier("features", "bench_numpy")
        with psycopg.connect(self.url) as conn:
            clock = wall()
            buffer = bytearray()
            with conn.cursor().copy(query) as copy:
                for chunk in copy:
                    buffer += chunk
            rows = np.frombuffer(memoryview(buffer)[19:-2], dtype=dtype)
            if np.any(rows["lu"] < 0):  # a NULL magnitude would need masking
                raise RuntimeError("the benchmark catalog has NULL magnitudes")
            ids = rows["id"].astype(np.int64)
            m = {b: rows[b].astype(np.float64) for b in BANDS}
            x = np.column_stack(
                [m[b] for b in BANDS] + [m[a] - m[b] for a, b in itertools.pairwise(BANDS)]
            ).astype(np.float32)
            if store:
                conn.execute(
                    sql.SQL("CREATE TABLE {} (object_id bigint, x real[], v vector({}))").format(
                        table, sql.Literal(x.shape[1])
                    )
                )
                with conn.cursor().copy(
                    sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(table)
                ) as copy:
                    copy.write(COPY_HEADER)
                    for start in range(0, len(ids), 200_000):
                        copy.write(
                            _encode_features(
                                ids[start : start + 200_000], x[start : start + 200_000]
                            )
                        )
                    copy.write(COPY_TRAILER)
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ADD PRIMARY KEY (object_id), ALTER COLUMN x SET NOT NULL"
                    ).format(table)
                )
                conn.commit()
            elapsed = wall() - clock
            if store:
                conn.execute(sql.SQL("DROP TABLE {}").format(table))
                conn.commit()
                conn.execute("CHECKPOINT")
        assert x.shape == (self.rows, len(self.spec.feature_names))
        return elapsed


def _encode_features(ids: np.ndarray, x: np.ndarray) -> bytes:
    """Binary COPY rows (bigint, real[], vector) for ``ids`` and the float32 matrix ``x``."""
    n, k = x.shape
    dtype = np.dtype(
        [
            ("nfields", ">i2"),
            ("l_id", ">i4"),
            ("id", ">i8"),
            ("l_x", ">i4"),
            ("ndim", ">i4"),
            ("has_null", ">i4"),
            ("oid", ">u4"),
            ("dim", ">i4"),
            ("lbound", ">i4"),
            ("x", [("len", ">i4"), ("value", ">f4")], (k,)),
            ("l_v", ">i4"),
            ("v_dim", ">i2"),
            ("v_unused", ">i2"),
            ("v", ">f4", (k,)),
        ]
    )
    rows = np.zeros(n, dtype=dtype)
    rows["nfields"] = 3
    rows["l_id"] = 8
    rows["id"] = ids
    rows["l_x"] = 20 + 8 * k
    rows["ndim"] = 1
    rows["oid"] = 700  # float4
    rows["dim"] = k
    rows["lbound"] = 1
    rows["x"]["len"] = 4
    rows["x"]["value"] = x
    rows["l_v"] = 4 + 4 * k
    rows["v_dim"] = k
    rows["v"] = x
    return rows.tobytes()


def run(url: str, *, rows: int = 1_000_000, repeats: int = 3) -> FeaturesResult:
    """Run the feature benchmark on database ``url`` (about ``rows`` objects) and print it."""
    require_absent(url, [CATALOG])
    copies = max(1, round(rows / 99_999))
    say(f"features benchmark: SDSS17 x {copies}, {repeats} rounds")
    before = load_average()
    try:
        clock = wall()
        n = make_catalog(url, copies)
        say(f"  catalog {CATALOG}: {n:,} rows ready in {wall() - clock:.1f} s")
        spec = replace(load_spec(example_spec_path("sdss_ugriz")), catalog=CATALOG)
        bench = FeaturesBench(url, spec, n)
        seconds = interleaved(bench.variants(), repeats)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM skyclass.feature_set WHERE name LIKE 'bench\\_%%'")
            conn.execute("DROP TABLE IF EXISTS features.bench_numpy")
            conn.execute("DELETE FROM skyclass.catalog WHERE name = %s", (CATALOG,))
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("catalogs", CATALOG))
            )
    medians = {name: median(values) for name, values in seconds.items()}
    rates = {name: n / s for name, s in medians.items()}
    ratios = {
        "db_compute / numpy_export": rates["db_compute"] / rates["numpy_export"],
        "db_build_ctas / numpy_roundtrip": rates["db_build_ctas"] / rates["numpy_roundtrip"],
        "db_build_ctas / numpy_export": rates["db_build_ctas"] / rates["numpy_export"],
        "db_build_ctas / db_build_insert": rates["db_build_ctas"] / rates["db_build_insert"],
    }
    result = FeaturesResult(n, repeats, medians, rates, ratios, seconds)
    result.load_average = {"before": before, "after": load_average()}
    print_result(result)
    return result


def print_result(result: FeaturesResult) -> None:
    """Print the figures of ``result`` as tables."""
    say(f"\nfeatures (sdss_ugriz, 9 features): medians of {result.repeats} interleaved rounds")
    say(
        format_table(
            ("variant", "rows", "seconds", "rows/s"),
            [
                (name, f"{result.rows:,}", f"{s:.3f}", f"{result.rates[name]:,.0f}")
                for name, s in result.seconds.items()
            ],
        )
    )
    say("\nratios (rows/s over rows/s)")
    say(format_table(("ratio", "value"), [(k, f"{v:.2f}") for k, v in result.ratios.items()]))


def main(argv: list[str] | None = None) -> None:
    """Command line: run the feature benchmark on its own."""
    from bench.common import bench_database, machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 200k rows, 1 round")
    parser.add_argument("--rows", type=int, default=None, help="about this many objects (1M)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 3)
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(url, rows=rows, repeats=repeats)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **asdict(result)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
