"""TAP sync latency: an ADQL cone over HTTP against the same SQL sent directly.

One synthetic catalog (1M rows by default, loaded like ``bench_cone``); the
TAP application (``skyclass.serve.tap``) runs in uvicorn in a thread of this
process, connected as ``skyclass_portal``. For each cone (10 arcsec and
1 arcmin, centres uniform in the patch) three things are timed, interleaved:

- ``translate``: the ADQL -> PostgreSQL translation alone (sqlglot parse,
  allow-list, Q3C rewrite, generation), no database;
- ``sql``: the translated SQL through one psycopg connection (what a user of
  SQL would run: ``q3c_radial_query`` plus ``q3c_dist``);
- ``tap_sync``: ``POST /tap/sync`` with the ADQL, through one keep-alive
  ``httpx`` client, until the VOTable is read (HTTP, parameters, metadata,
  read-only transaction, server-side cursor, VOTable writing).

Both database paths must return the same number of rows for every cone
(checked). The CPU model is printed beside the ratios.

Usage: ``.venv/bin/python bench/bench_tap.py [--rows 1000000] [--queries 300] [--json F]``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    bench_database,
    format_table,
    load_average,
    load_catalog,
    machine_info,
    patch_for,
    percentile,
    print_machine,
    say,
    synthetic_chunks,
    wall,
)

SEED = 20261202
VARIANTS = ("translate", "sql", "tap_sync")
ADQL = (
    "SELECT object_id, ra, dec, DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', {ra}, {dec})) "
    "AS dist FROM catalogs.{table} "
    "WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra}, {dec}, {radius})) = 1 "
    "ORDER BY dist"
)


def _portal(url: str) -> str:
    password = secrets.token_urlsafe(16)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER ROLE skyclass_portal PASSWORD {}").format(
                psycopg.sql.Literal(password)
            )
        )
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("passfile", None)
    info.update(user="skyclass_portal", password=password)
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def _serve(conninfo: str) -> tuple[str, Any, Any]:
    import uvicorn

    from skyclass.serve.tap import create_tap_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    base = f"http://127.0.0.1:{port}/tap"
    app = create_tap_app(conninfo, base_url=base, max_rows=100_000, statement_timeout=30)
    from starlette.applications import Starlette
    from starlette.routing import Mount

    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Mount("/tap", app=app)]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return base, server, app


def run(url: str, *, rows: int = 1_000_000, queries: int = 300, warmup: int = 30) -> dict[str, Any]:
    """Load the catalog, time the three variants per cone, print and return the figures."""
    import httpx

    from skyclass.serve.tap.adql import PublishedTable, translate

    table = f"bench_tap_{rows}"
    patch = patch_for(rows)
    clock = wall()
    load_catalog(url, table, synthetic_chunks(rows, patch, SEED))
    say(f"loaded {rows:,} rows in {wall() - clock:.1f} s")
    base, server, app = _serve(_portal(url))
    published = {("catalogs", table): PublishedTable("catalogs", table, "catalogs", table)}
    rng = np.random.default_rng(SEED)
    latency: dict[str, dict[str, float]] = {}
    mismatches = 0
    before = load_average()
    try:
        with psycopg.connect(url, autocommit=True) as conn, httpx.Client(timeout=60) as client:
            q3c = str(
                conn.execute(
                    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                    "ON n.oid = e.extnamespace WHERE e.extname = 'q3c'"
                ).fetchone()[0]
            )  # type: ignore[index]
            conn.execute("SET search_path = pg_catalog, " + q3c)
            for radius_arcsec in (10.0, 60.0):
                radius = radius_arcsec / 3600
                ra, dec = patch.shrunk(radius * 2).random_positions(queries + warmup, rng)
                times: dict[str, list[float]] = {v: [] for v in VARIANTS}
                for i in range(queries + warmup):
                    adql = ADQL.format(
                        table=table, ra=f"{ra[i]:.7f}", dec=f"{dec[i]:.7f}", radius=f"{radius:.9f}"
                    )
                    t0 = time.perf_counter()
                    text = translate(adql, published, q3c)
                    t1 = time.perf_counter()
                    n_sql = len(conn.execute(text).fetchall())
                    t2 = time.perf_counter()
                    reply = client.post(f"{base}/sync", data={"LANG": "ADQL", "QUERY": adql})
                    body = reply.content
                    t3 = time.perf_counter()
                    if reply.status_code != 200 or body.count(b"<TR>") != n_sql:
                        mismatches += 1
                    if i >= warmup:
                        times["translate"].append((t1 - t0) * 1000)
                        times["sql"].append((t2 - t1) * 1000)
                        times["tap_sync"].append((t3 - t2) * 1000)
                for variant, values in times.items():
                    latency[f"{radius_arcsec:g}/{variant}"] = {
                        "p50_ms": percentile(values, 50),
                        "p90_ms": percentile(values, 90),
                        "p99_ms": percentile(values, 99),
                    }
    finally:
        server.should_exit = True
        app.state.tap_close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM skyclass.catalog WHERE name = %s", (table,))
            conn.execute(
                psycopg.sql.SQL("DROP TABLE catalogs.{}").format(psycopg.sql.Identifier(table))
            )
    table_rows = [
        [
            f"{key.split('/')[0]}″",
            key.split("/")[1],
            f"{v['p50_ms']:.3f}",
            f"{v['p90_ms']:.3f}",
            f"{v['p99_ms']:.3f}",
        ]
        for key, v in latency.items()
    ]
    say(format_table(["radius", "variant", "p50 ms", "p90 ms", "p99 ms"], table_rows))
    for radius_arcsec in (10, 60):
        ratio = (
            latency[f"{radius_arcsec}/tap_sync"]["p50_ms"]
            / latency[f"{radius_arcsec}/sql"]["p50_ms"]
        )
        say(f"tap_sync / sql p50 at {radius_arcsec}″: {ratio:.2f}x")
    say(f"cones whose TAP and SQL row counts differ: {mismatches} (must be 0)")
    return {
        "rows": rows,
        "queries": queries,
        "warmup": warmup,
        "latency": latency,
        "mismatches": mismatches,
        "load_average": [before, load_average()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(url, rows=args.rows, queries=args.queries)
        say(f"CPU: {info['cpu']}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "tap": result}, indent=2))


if __name__ == "__main__":
    main()
