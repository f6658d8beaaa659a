"""The overhead of ``skyclass.cone_search`` over the bare range query, measured with pgbench.

Loads a synthetic catalog (``bench_cone_overhead``, ``rows`` objects, bench/common.py),
then runs one pgbench client for ``seconds`` with three scripts interleaved at random in
one session, prepared protocol, random 10 arcsec cones inside the patch:

- ``cone_search``: ``SELECT * FROM skyclass.cone_search(...)``;
- ``q3c_ranges``: the same pixel ranges probed by hand (``q3c_ranges`` of
  bench/bench_cone.py), a prepared statement;
- ``empty_srf``: an empty PL/pgSQL set-returning function with the same arguments (the
  floor of any PL/pgSQL function; created in a scratch schema and dropped after).

pgbench measures on the server's doorstep without Python's scheduling in between, which
on a shared machine is what decides a 0.1 ms comparison; p50 and p90 are computed from
its per-transaction log. Usage: ``.venv/bin/python bench/bench_cone_overhead.py
[--rows N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    bench_database,
    drop_catalog,
    load_catalog,
    machine_info,
    patch_for,
    print_machine,
    say,
    synthetic_chunks,
)
from skyclass.db.cluster import find_pg_bindir

NAME = "bench_cone_overhead"
RADIUS = 10.0 / 3600
EMPTY = """
CREATE SCHEMA IF NOT EXISTS bench_scratch;
CREATE OR REPLACE FUNCTION bench_scratch.empty_srf(text, float8, float8, float8)
RETURNS TABLE(object_id bigint, ra float8, "dec" float8, distance_arcsec float8)
LANGUAGE plpgsql AS $$ BEGIN RETURN; END $$;
"""


def _scripts(directory: Path, ra: tuple[float, float], dec: tuple[float, float]) -> list[Path]:
    head = (
        f"\\set ra {ra[0]} + random(0, 1000000) / 1000000.0 * {ra[1] - ra[0]}\n"
        f"\\set dec {dec[0]} + random(0, 1000000) / 1000000.0 * {dec[1] - dec[0]}\n"
    )
    bodies = {
        "cone_search": f"SELECT * FROM skyclass.cone_search('{NAME}', :ra, :dec, {RADIUS!r});",
        "q3c_ranges": (
            "SELECT c.object_id, c.ra, c.dec, q3c_dist(c.ra, c.dec, :ra, :dec) * 3600 AS d "
            f"FROM (SELECT q3c_radial_query_it(:ra, :dec, {RADIUS!r}, 2 * k, f) AS lo, "
            f"q3c_radial_query_it(:ra, :dec, {RADIUS!r}, 2 * k + 1, f) AS hi "
            "FROM generate_series(0, 49) AS k, (VALUES (0), (1)) AS v(f)) AS r "
            f"CROSS JOIN LATERAL (SELECT t.object_id, t.ra, t.dec FROM catalogs.{NAME} AS t "
            "WHERE q3c_ang2ipix(t.ra, t.dec) >= r.lo AND q3c_ang2ipix(t.ra, t.dec) < r.hi "
            "OFFSET 0) AS c WHERE r.lo < r.hi "
            f"AND q3c_dist(c.ra, c.dec, :ra, :dec) <= {RADIUS!r} ORDER BY d, object_id;"
        ),
        "empty_srf": f"SELECT * FROM bench_scratch.empty_srf('{NAME}', :ra, :dec, {RADIUS!r});",
    }
    paths = []
    for name, body in bodies.items():
        path = directory / f"{name}.sql"
        path.write_text(head + body + "\n")
        path.chmod(0o644)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Load the catalog, run pgbench, print p50/p90 per statement and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="skyclass-pgbench-"))
    directory.chmod(0o755)
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        patch = patch_for(args.rows).shrunk(RADIUS)
        load_catalog(url, NAME, synthetic_chunks(args.rows, patch_for(args.rows), 20261202))
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(EMPTY)
            scripts = _scripts(
                directory, (patch.ra_min, patch.ra_max), (patch.dec_min, patch.dec_max)
            )
            command = [
                str(find_pg_bindir() / "pgbench"), "-n", "-M", "prepared", "-c", "1",
                "-T", str(args.seconds), "-l", f"--log-prefix={directory}/log",
                *[f"-f{p}@1" for p in scripts], url,
            ]  # fmt: skip
            subprocess.run(
                command, check=True, capture_output=True, env={"PGOPTIONS": "-c jit=off"}
            )
            latencies: dict[int, list[int]] = {}
            for log in directory.glob("log*"):
                for line in log.read_text().splitlines():
                    fields = line.split()
                    latencies.setdefault(int(fields[3]), []).append(int(fields[2]))
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS bench_scratch CASCADE")
            drop_catalog(url, NAME)
            shutil.rmtree(directory, ignore_errors=True)
    p50 = {}
    for number, path in enumerate(scripts):
        values = sorted(latencies.get(number, [0]))
        p50[path.stem] = values[len(values) // 2] / 1000
        p90 = values[len(values) * 9 // 10] / 1000
        say(f"{path.stem:12s} {len(values):7d} runs  p50 {p50[path.stem]:.3f} ms  p90 {p90:.3f} ms")
    say(
        f"cone_search / q3c_ranges (p50): {p50['cone_search'] / p50['q3c_ranges']:.2f}x "
        f"({info['cpu']}; target <= 1.2x)"
    )


if __name__ == "__main__":
    main()
