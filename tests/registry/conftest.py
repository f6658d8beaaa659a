"""Fixtures of the registry tests: archive tables made in plain SQL, as an operator holds them."""

from __future__ import annotations

import psycopg
from click.testing import CliRunner

from skyclass.cli import main
from tests.score.conftest import skyclass_extension as skyclass_extension


def run(url: str, *args: str) -> tuple[int, str]:
    """``skyclass ARGS`` against ``url``: exit code and output (stdout and stderr)."""
    result = CliRunner().invoke(main, list(args), env={"SKYCLASS_DATABASE_URL": url})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def relations(url: str) -> set[str]:
    """Every table, partitioned table, view and materialized view outside the system schemas."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class AS c "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'cron')"
        ).fetchall()
    return {r[0] for r in rows}


# Objects of three kinds with distinct colours, at positions spread evenly over the sky
# (a Fibonacci lattice); fluxes in nanomaggies (AB zero point 22.5). Row i is of kind i % 3.
# Arithmetic in float8 (numeric power() would take minutes for 1M rows).
def survey_rows(table: str, ids: str, first: int, count: int, *, columns: tuple[str, ...]) -> str:
    """One ``INSERT ... SELECT generate_series`` filling ``table`` (``columns``: id, ra, dec,
    flux g, r, z, then optionally a class label)."""
    label = ", (ARRAY['star', 'galaxy', 'qso'])[i % 3 + 1]" if len(columns) == 7 else ""
    x = "i::float8"
    noise = "(((i * 7919) % 1000)::float8 / 1000.0 - 0.5)"
    frac = f"({x} * 0.6180339887 - floor({x} * 0.6180339887))"
    mag_r = f"(18.0 + {frac} * 3.0)"
    g_r = f"(0.2 + 0.7 * (i % 3)::float8 + 0.15 * {noise})"
    r_z = f"(0.1 + 0.5 * ((i + 1) % 3)::float8 + 0.15 * {noise})"
    ra = f"({x} * 137.50776405 - floor({x} * 137.50776405 / 360.0) * 360.0)"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT {ids} + i, {ra}, "
        f"degrees(asin(2.0 * ((i - {first})::float8 + 0.5) / {count}.0 - 1.0)), "
        f"power(10.0::float8, (22.5 - ({mag_r} + {g_r})) / 2.5), "
        f"power(10.0::float8, (22.5 - {mag_r}) / 2.5), "
        f"power(10.0::float8, (22.5 - ({mag_r} - {r_z})) / 2.5){label} "
        f"FROM generate_series({first}::bigint, {first + count - 1}) AS i"
    )
