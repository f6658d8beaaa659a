"""``skyclass cone`` and ``skyclass xmatch``: spatial queries from the command line.

Heavy modules (astropy, numpy) are imported inside the commands so that
``skyclass --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from skyclass.query.output import FORMATS

_FORMAT_HELP = (
    "table: aligned text for reading; csv; json (columns with units, rows as objects); "
    "votable (VOTable 1.4, units on the fields)."
)


def _emit(data: bytes, output: Path | None, rows: int) -> None:
    if output is None:
        click.echo(data, nl=False)
    else:
        output.write_bytes(data)
        click.echo(f"wrote {rows} row{'' if rows == 1 else 's'} to {output}", err=True)


def _output_options(command: Callable[..., None]) -> Callable[..., None]:
    """The --format and --output options that cone and xmatch share."""
    command = click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        help="Write to this file instead of standard output.",
    )(command)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help=_FORMAT_HELP,
    )(command)


@click.command(
    "cone",
    context_settings={"ignore_unknown_options": True},
    epilog="""\b
Examples:
  skyclass cone sdss17 185.0 0.5 30arcsec
  skyclass cone sdss17 12:20:00 +00:30:00 1.5arcmin --columns u,g,r,class
  skyclass cone sdss17 185.0 -0.5 0.1deg --limit 10 --format csv -o near.csv
  skyclass cone sdss17 150.0 2.2 10\\" --format votable > cone.vot
""",
)
@click.argument("catalog")
@click.argument("ra")
@click.argument("dec")
@click.argument("radius")
@click.option("--columns", "-c", help="Extra catalog columns, comma separated (e.g. u,g,class).")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Return at most N nearest rows.")
@_output_options
def cone(
    catalog: str,
    ra: str,
    dec: str,
    radius: str,
    columns: str | None,
    limit: int | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Objects of CATALOG within RADIUS of (RA, DEC), nearest first.

    RA and DEC are degrees (185.25, -0.5) or sexagesimal: RA in hours
    (12:21:00 or 12h21m00s), DEC in degrees (+00:30:00 or -5d30m). A negative
    DEC can be typed as is. RADIUS needs a unit: 10arcsec, 10\\", 1.5arcmin,
    2', 0.1deg; from 0 (objects at exactly that position) to 10 degrees.
    Output: object_id, ra, dec (deg), distance_arcsec and the --columns asked
    for, ordered by distance then object_id.
    """
    from skyclass.query.output import render
    from skyclass.query.spatial import cone_search, parse_radius

    parsed = parse_radius(radius)  # a string: it must carry a unit
    table = cone_search(catalog, ra, dec, parsed, columns=columns, limit=limit)
    _emit(render(table, fmt), output, len(table))


@click.command(
    "xmatch",
    epilog="""\b
Examples:
  skyclass xmatch sdss17 gaia_sample --radius 1arcsec
  skyclass xmatch sdss17 gaia_sample --radius 2\\" --all --format csv -o pairs.csv
  skyclass xmatch sdss17 sdss17 --radius 1arcsec        # pairs of distinct objects
""",
)
@click.argument("catalog_a")
@click.argument("catalog_b")
@click.option(
    "--radius",
    "-r",
    required=True,
    help='Match radius with a unit: 1arcsec, 1.5", 0.5arcmin (above 0, at most 1 deg).',
)
@click.option(
    "--all",
    "all_matches",
    is_flag=True,
    help="Every match within the radius, ranked by distance, not only the nearest.",
)
@click.option(
    "--method",
    type=click.Choice(("auto", "cells", "index", "sweep")),
    default="auto",
    show_default=True,
    help="How the database finds pairs (same result): sweep = zone sweep in memory "
    "(skyclass extension 0.2.0); cells = parallel hash join on sky cells; index = Q3C "
    "index probes into CATALOG_B, fast when CATALOG_A is small; auto = index for a small "
    "CATALOG_A, else sweep when available and both fit in 20M rows, else cells.",
)
@_output_options
def xmatch(
    catalog_a: str,
    catalog_b: str,
    radius: str,
    all_matches: bool,
    method: str,
    fmt: str,
    output: Path | None,
) -> None:
    """Cross-match CATALOG_A with CATALOG_B within --radius.

    For each object of CATALOG_A: its nearest object of CATALOG_B within the
    radius (ties go to the smaller object_id_b), or with --all every one of
    them, ranked. Objects without a match are left out. Matching a catalog
    with itself pairs distinct objects only (duplicates, close pairs).
    Output: object_id_a, object_id_b, distance_arcsec, match_rank, ordered by
    object_id_a then rank.
    """
    from skyclass.query.output import render
    from skyclass.query.spatial import crossmatch, parse_radius

    parsed = parse_radius(radius)
    table = crossmatch(catalog_a, catalog_b, parsed, best_only=not all_matches, method=method)
    _emit(render(table, fmt), output, len(table))
