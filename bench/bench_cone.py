"""Cone-search latency on synthetic SDSS-like catalogs of 1M and 10M rows.

Each catalog is loaded straight into the database (binary COPY, primary key,
Q3C index, CLUSTER, ANALYZE, registry rows). Queries go through one psycopg
connection in autocommit mode with prepared statements; the latency of a query
is the client's wall time from sending it to holding all its rows. Two
variants answer every cone, side by side (their order alternates from query
to query, and the catalogs are interleaved too):

- ``cone_search``: ``SELECT * FROM skyclass.cone_search(catalog, ra, dec, r)``,
  the product's function (argument checks, registry lookup, exact distance
  cut, ordering by distance);
- ``raw_q3c``: the hand-written ``q3c_radial_query`` SQL on the table, with
  ``q3c_dist`` for the distance and the same ordering;
- ``q3c_ranges``: the same Q3C pixel ranges (``q3c_radial_query_it``), probed
  one range at a time through a ``LATERAL`` join, with the exact distance cut.
  ``q3c_radial_query`` is inlined as an OR of 100 range conditions that the
  planner plans anew for every query (a generic plan cannot use the index);
  this formulation has a small plan, so it shows what the planning costs.

Centres are uniform inside the catalog's patch, shrunk by the radius so that
every cone lies inside it. All variants must return the same objects for
every cone (checked). The catalogs fit in the OS page cache after the
warm-up, which is how a dedicated server would run them. The session runs with
``jit = off`` (see :func:`_no_jit`).

Usage: ``.venv/bin/python bench/bench_cone.py [--quick] [--sizes 1000000,10000000] [--json F]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DENSITY_PER_DEG2,
    Patch,
    drop_catalog,
    format_table,
    load_average,
    load_catalog,
    median,
    patch_for,
    percentile,
    q3c_schema,
    require_absent,
    say,
    size_suffix,
    synthetic_chunks,
    wall,
)

SEED = 20261123
VARIANTS = ("cone_search", "raw_q3c", "q3c_ranges")
TARGET_P50_MS = 2.0
PLAN_SAMPLES = 50
TARGET_ROWS = 10_000_000
TARGET_RADIUS_ARCSEC = 10.0


@dataclass
class ConeResult:
    """Latency percentiles (ms) per catalog size, radius and variant."""

    sizes: list[int]
    radii_arcsec: list[float]
    queries: int
    warmup: int
    # "<rows>/<radius>/<variant>" -> p50_ms, p90_ms, p99_ms, mean_ms, mean_rows
    latency: dict[str, dict[str, float]]
    mismatched_cones: int
    load_seconds: dict[str, float]
    targets: dict[str, bool]
    # "<rows>/<radius>/<variant>" -> median planning_ms and execution_ms (EXPLAIN ANALYZE)
    planning: dict[str, dict[str, float]] = field(default_factory=dict)
    load_average: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-ready data."""
        return asdict(self)


def catalog_name(rows: int) -> str:
    """The benchmark catalog name for a size (bench_cone_1m, bench_cone_10m, bench_cone_20k)."""
    return f"bench_cone_{size_suffix(rows)}"


def _statements(conn: psycopg.Connection[Any], table: str) -> dict[str, sql.Composed | sql.SQL]:
    q3c = q3c_schema(conn)
    raw = sql.SQL(
        "SELECT object_id, ra, dec, {dist}(ra, dec, %(ra)s, %(dec)s) * 3600 AS distance_arcsec "
        "FROM {table} WHERE {radial}(ra, dec, %(ra)s, %(dec)s, %(r)s) "
        "ORDER BY distance_arcsec, object_id"
    ).format(
        dist=sql.Identifier(q3c, "q3c_dist"),
        radial=sql.Identifier(q3c, "q3c_radial_query"),
        table=sql.Identifier("catalogs", table),
    )
    # Ranges 2k..2k+1 of both kinds (fully inside, partly inside) as rows; each
    # non-empty range is one index range scan. OFFSET 0 keeps the subquery from
    # being flattened into a join that a generic plan (prepared statements switch
    # to one after five runs) may run without the per-range index scans.
    ranges = sql.SQL(
        "SELECT c.object_id, c.ra, c.dec, {dist}(c.ra, c.dec, %(ra)s, %(dec)s) * 3600 "
        "AS distance_arcsec "
        "FROM (SELECT {it}(%(ra)s, %(dec)s, %(r)s, 2 * k, f) AS lo, "
        "             {it}(%(ra)s, %(dec)s, %(r)s, 2 * k + 1, f) AS hi "
        "      FROM generate_series(0, 49) AS k, (VALUES (0), (1)) AS v(f)) AS r "
        "CROSS JOIN LATERAL (SELECT t.object_id, t.ra, t.dec FROM {table} AS t "
        "  WHERE {ipix}(t.ra, t.dec) >= r.lo AND {ipix}(t.ra, t.dec) < r.hi OFFSET 0) AS c "
        "WHERE r.lo < r.hi AND {dist}(c.ra, c.dec, %(ra)s, %(dec)s) <= %(r)s "
        "ORDER BY distance_arcsec, object_id"
    ).format(
        dist=sql.Identifier(q3c, "q3c_dist"),
        it=sql.Identifier(q3c, "q3c_radial_query_it"),
        ipix=sql.Identifier(q3c, "q3c_ang2ipix"),
        table=sql.Identifier("catalogs", table),
    )
    function = sql.SQL(
        "SELECT object_id, ra, dec, distance_arcsec "
        "FROM skyclass.cone_search(%(name)s, %(ra)s, %(dec)s, %(r)s)"
    )
    return {"cone_search": function, "raw_q3c": raw, "q3c_ranges": ranges}


def run(
    url: str,
    *,
    sizes: tuple[int, ...] = (1_000_000, 10_000_000),
    radii_arcsec: tuple[float, ...] = (10.0, 60.0),
    queries: int = 2000,
    warmup: int = 200,
) -> ConeResult:
    """Run the cone-search benchmark on database ``url`` and print its figures.

    Loads one synthetic catalog per size (dropped afterwards), then for each
    radius runs ``warmup`` unrecorded and ``queries`` recorded cones per
    catalog and variant, interleaved. Returns percentiles, the number of cones
    whose two variants disagreed (should be 0) and the target verdict.
    """
    names = {rows: catalog_name(rows) for rows in sizes}
    require_absent(url, names.values())
    before = load_average()
    say(
        f"cone benchmark: catalogs of {', '.join(f'{n:,}' for n in sizes)} rows at "
        f"{DENSITY_PER_DEG2:,.0f} objects/deg2; radii {radii_arcsec} arcsec; "
        f"{queries} queries (+{warmup} warm-up) per catalog, radius and variant"
    )
    patches: dict[int, Patch] = {}
    load_seconds: dict[str, float] = {}
    try:
        for rows in sizes:
            patches[rows] = patch_for(rows)
            clock = wall()
            load_catalog(url, names[rows], synthetic_chunks(rows, patches[rows], SEED + rows))
            load_seconds[names[rows]] = wall() - clock
            say(
                f"  loaded {names[rows]} ({patches[rows].area_deg2:.1f} deg2) in "
                f"{load_seconds[names[rows]]:.1f} s"
            )
        latency, mismatches = measure(url, names, patches, radii_arcsec, queries, warmup)
        planning = _planning_split(url, names, patches, radii_arcsec[0], PLAN_SAMPLES)
    finally:
        for name in names.values():
            drop_catalog(url, name)
    targets: dict[str, bool] = {}
    key = f"{TARGET_ROWS}/{TARGET_RADIUS_ARCSEC:g}/cone_search"
    if key in latency:
        targets[f"cone_search p50 <= {TARGET_P50_MS:g} ms at 10M rows, 10 arcsec"] = (
            latency[key]["p50_ms"] <= TARGET_P50_MS
        )
    result = ConeResult(
        sizes=list(sizes),
        radii_arcsec=list(radii_arcsec),
        queries=queries,
        warmup=warmup,
        latency=latency,
        mismatched_cones=mismatches,
        planning=planning,
        load_seconds=load_seconds,
        targets=targets,
        load_average={"before": before, "after": load_average()},
    )
    print_result(result)
    return result


def measure(
    url: str,
    names: dict[int, str],
    patches: dict[int, Patch],
    radii_arcsec: tuple[float, ...],
    queries: int,
    warmup: int,
) -> tuple[dict[str, dict[str, float]], int]:
    """Latency of every variant on catalogs ``names`` (size -> name) over ``patches``.

    For each radius, ``warmup`` unrecorded then ``queries`` recorded cones per
    catalog and variant, interleaved; returns the percentiles by
    ``"<rows>/<radius>/<variant>"`` and the number of cones whose variants
    returned different objects (should be 0).
    """
    rng = np.random.default_rng(SEED)
    latency: dict[str, dict[str, float]] = {}
    mismatches = 0
    with psycopg.connect(url, autocommit=True, application_name="skyclass-bench") as conn:
        _no_jit(conn)
        statements = {rows: _statements(conn, name) for rows, name in names.items()}
        for radius in radii_arcsec:
            r_deg = radius / 3600
            centres = {}
            for rows, patch in patches.items():
                inner = patch.shrunk(r_deg)
                ra, dec = inner.random_positions(warmup + queries, rng)
                centres[rows] = (ra, dec)
            times: dict[tuple[int, str], list[float]] = {
                (rows, v): [] for rows in names for v in VARIANTS
            }
            counts: dict[tuple[int, str], list[int]] = {
                (rows, v): [] for rows in names for v in VARIANTS
            }
            for i in range(warmup + queries):
                shift = i % len(VARIANTS)
                order = VARIANTS[shift:] + VARIANTS[:shift]
                for rows in names:
                    params = {
                        "name": names[rows],
                        "ra": float(centres[rows][0][i]),
                        "dec": float(centres[rows][1][i]),
                        "r": r_deg,
                    }
                    found: dict[str, set[int]] = {}
                    for variant in order:
                        clock = wall()
                        result = conn.execute(
                            statements[rows][variant], params, prepare=True
                        ).fetchall()
                        elapsed = wall() - clock
                        found[variant] = {int(r[0]) for r in result}
                        if i >= warmup:
                            times[(rows, variant)].append(elapsed)
                            counts[(rows, variant)].append(len(result))
                    if any(found[v] != found["cone_search"] for v in VARIANTS):
                        mismatches += 1
            for (rows, variant), values in times.items():
                ms = [v * 1000 for v in values]
                latency[f"{rows}/{radius:g}/{variant}"] = {
                    "p50_ms": percentile(ms, 50),
                    "p90_ms": percentile(ms, 90),
                    "p99_ms": percentile(ms, 99),
                    "mean_ms": float(np.mean(ms)),
                    "median_ms": median(ms),
                    "mean_rows": float(np.mean(counts[(rows, variant)])),
                }
            say(f"  radius {radius:g} arcsec done")
    return latency, mismatches


def _no_jit(conn: psycopg.Connection[Any]) -> None:
    """Turn JIT off for the session.

    The planner expects about 5,000 rows per Q3C range per million rows, so at
    10M rows the q3c_ranges plan costs more than ``jit_above_cost`` and JIT
    compilation (12-15 ms, measured) would dwarf its 0.1 ms of work. The plans
    of the other variants cost far less than that threshold, so this changes
    nothing for them; the product's functions set ``jit`` themselves where it
    matters (``skyclass.crossmatch`` does).
    """
    conn.execute("SET jit = off")


def _planning_split(
    url: str, names: dict[int, str], patches: dict[int, Patch], radius: float, samples: int
) -> dict[str, dict[str, float]]:
    """Median planning and execution time (server side) of the two plain-SQL variants.

    ``EXPLAIN (ANALYZE, SUMMARY)`` with the values inlined, as the custom plans
    the prepared statements get; ``cone_search`` runs its query through
    ``EXECUTE`` inside PL/pgSQL, which EXPLAIN does not show, so it is left out.
    """
    rng = np.random.default_rng(SEED + 1)
    split: dict[str, dict[str, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        _no_jit(conn)
        for rows, name in names.items():
            statements = _statements(conn, name)
            ra, dec = patches[rows].shrunk(radius / 3600).random_positions(samples, rng)
            for variant in ("raw_q3c", "q3c_ranges"):
                planning, execution = [], []
                explain = sql.SQL("EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) {}").format(
                    statements[variant]
                )
                for i in range(samples):
                    params = {"ra": float(ra[i]), "dec": float(dec[i]), "r": radius / 3600}
                    # Bound on the client: the server plans the query with the values
                    # in it, as it does for each execution of the prepared statement.
                    with psycopg.ClientCursor(conn) as cur:
                        row = cur.execute(explain, params).fetchone()
                    assert row is not None
                    plan = row[0][0]
                    planning.append(float(plan["Planning Time"]))
                    execution.append(float(plan["Execution Time"]))
                split[f"{rows}/{radius:g}/{variant}"] = {
                    "planning_ms": median(planning),
                    "execution_ms": median(execution),
                }
    return split


def print_result(result: ConeResult) -> None:
    """Print the latency table, the agreement check and the target verdict."""
    rows = []
    for key, figures in result.latency.items():
        size, radius, variant = key.split("/")
        rows.append(
            (
                f"{int(size):,}",
                f'{radius}"',
                variant,
                f"{figures['p50_ms']:.3f}",
                f"{figures['p90_ms']:.3f}",
                f"{figures['p99_ms']:.3f}",
                f"{figures['mean_rows']:.2f}",
            )
        )
    say(f"\ncone search latency, {result.queries} queries each after {result.warmup} warm-up")
    say(format_table(("rows", "radius", "variant", "p50 ms", "p90 ms", "p99 ms", "objects"), rows))
    say("\np50 ratios: cone_search / raw_q3c (function overhead), raw_q3c / q3c_ranges (planning)")
    for n in result.sizes:
        for r in result.radii_arcsec:
            f = result.latency[f"{n}/{r:g}/cone_search"]["p50_ms"]
            q = result.latency[f"{n}/{r:g}/raw_q3c"]["p50_ms"]
            g = result.latency[f"{n}/{r:g}/q3c_ranges"]["p50_ms"]
            say(f'  {n:,} rows, {r:g}": {f / q:.2f}x ({f - q:+.3f} ms), {q / g:.2f}x')
    if result.planning:
        say("\nserver-side planning vs execution (EXPLAIN ANALYZE medians, custom plans)")
        say(
            format_table(
                ("rows/radius/variant", "planning ms", "execution ms"),
                [
                    (key, f"{v['planning_ms']:.3f}", f"{v['execution_ms']:.3f}")
                    for key, v in result.planning.items()
                ],
            )
        )
    say(f"\ncones where the variants disagree: {result.mismatched_cones}")
    say("targets")
    for name, met in result.targets.items():
        say(f"  {'MET    ' if met else 'NOT MET'}  {name}")


def main(argv: list[str] | None = None) -> None:
    """Command line: run the cone-search benchmark on its own."""
    from bench.common import bench_database, machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 300 queries")
    parser.add_argument("--sizes", default=None, help="comma-separated catalog sizes")
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    default_sizes = "100000" if args.quick else "1000000,10000000"
    sizes = tuple(int(s) for s in (args.sizes or default_sizes).split(","))
    queries = args.queries or (300 if args.quick else 2000)
    warmup = args.warmup or (50 if args.quick else 200)
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(url, sizes=sizes, queries=queries, warmup=warmup)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "cone": result.as_dict()}, indent=2))


if __name__ == "__main__":
    main()
