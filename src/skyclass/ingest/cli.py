"""``skyclass ingest``: load catalog files (``skyclass catalog``: :mod:`skyclass.registry.cli`).

Heavy modules (astropy, numpy) are imported inside the commands so that
``skyclass --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from skyclass.errors import IngestError

if TYPE_CHECKING:
    from skyclass.ingest.load import LoadReport


def _parse_null_values(text: str | None) -> list[float] | None:
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return []
    values = []
    for part in text.split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise IngestError(
                f"--null-values must be numbers separated by commas, not {part.strip()!r}"
            ) from None
    return values


@click.command(
    "ingest",
    epilog="""\b
Formats (by extension): FITS (.fits .fit .fts .fits.gz .fit.gz .fz),
VOTable (.vot .xml .votable), CSV with a header row (.csv .csv.gz; a .csv
starting with '# %ECSV' is read as ECSV), ECSV (.ecsv).

\b
NULLs:
  - every column: masked cells, FITS TNULL values, empty cells and empty
    text become NULL; in CSV the cells NA, N/A, null, NULL, nan, NaN and --
    are NULL markers too.
  - float columns other than RA/Dec: also NaN, +-inf and the --null-values
    sentinels. Integer columns get only TNULL/masked handling: a -32768
    without TNULL stays a number.
  The counts per column and reason are printed and stored with the load.

\b
Checks (the whole file is refused, naming file, column and row, unless
--on-invalid skip): RA in [0, 360), Dec in [-90, 90], no NaN/inf/empty
coordinates or ids, unique integer ids (also against the catalog on
--append), numbers in numeric columns. Damaged files (truncated FITS,
malformed VOTable, empty file) are always refused.

\b
Catalogs without sky positions (--no-positions): training sets such as
ugriz + z_spec tables have no RA/Dec. The table then has object_id (from
--id or generated) and the file's columns, no ra/dec, no Q3C index, and is
clustered on object_id; cone searches and cross-matches refuse it.
Appends must match: --no-positions rows only go into such a catalog.

\b
Everything happens in one transaction: on any error the database is left
exactly as it was. A second ingest or drop of the same catalog while one
runs is refused at once (it does not wait).
""",
)
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--catalog",
    "-c",
    required=True,
    metavar="NAME",
    help="Catalog name: table catalogs.NAME (a-z, 0-9, _; starts with a letter).",
)
@click.option(
    "--id",
    "id_column",
    metavar="COL",
    help="Integer id column (becomes object_id). Default: the first of object_id, objid, "
    "source_id, id, objectid; without one, ids are the row numbers in the file.",
)
@click.option(
    "--ra",
    "ra_column",
    metavar="COL",
    help="Right ascension column in degrees (becomes ra). Default: the first of ra, raj2000, "
    "ra_icrs, alpha, radeg.",
)
@click.option(
    "--dec",
    "dec_column",
    metavar="COL",
    help="Declination column in degrees (becomes dec). Default: the first of dec, dej2000, "
    "decj2000, de_icrs, delta, dedeg.",
)
@click.option(
    "--no-positions",
    "no_positions",
    is_flag=True,
    help="The file has no sky positions: no ra/dec columns and no Q3C index (cannot be "
    "combined with --ra/--dec).",
)
@click.option(
    "--append",
    is_flag=True,
    help="Add the rows to an existing catalog (same columns; ids must be new). The table is "
    "not re-clustered.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Replace the catalog's rows and columns with this file; its load history is kept.",
)
@click.option(
    "--null-values",
    metavar="LIST",
    help="Float sentinels turned to NULL in float columns, comma separated (default "
    '"-9999,99,-99"; "none" for none).',
)
@click.option(
    "--on-invalid",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="fail: refuse the file at the first invalid id or coordinate. skip: leave such rows "
    "out and record them in skyclass.ingest_reject.",
)
@click.option("--description", metavar="TEXT", help="Description stored with the catalog.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar on stderr (default: when stderr is a terminal).",
)
def ingest(
    path: Path,
    catalog: str,
    id_column: str | None,
    ra_column: str | None,
    dec_column: str | None,
    no_positions: bool,
    append: bool,
    replace: bool,
    null_values: str | None,
    on_invalid: str,
    description: str | None,
    progress: bool | None,
) -> None:
    """Load a catalog file into catalog NAME: a table with a Q3C sky index.

    The file is validated, streamed into PostgreSQL with binary COPY, given
    a primary key on object_id, a Q3C index on (ra, dec), clustered on it and
    analysed; its provenance (file, sha256, counts, NULLs, versions, user) is
    recorded in skyclass.catalog_load. With --no-positions there is no ra,
    dec or Q3C index, and the table is clustered on object_id.
    """
    from skyclass.ingest.load import ingest_file

    if append and replace:
        raise IngestError("--append and --replace exclude each other: choose one")
    mode: Literal["create", "append", "replace"] = (
        "append" if append else "replace" if replace else "create"
    )
    show_progress = sys.stderr.isatty() if progress is None else progress
    report = ingest_file(
        path,
        catalog,
        id_column=id_column,
        ra_column=ra_column,
        dec_column=dec_column,
        mode=mode,
        null_values=_parse_null_values(null_values),
        on_invalid="skip" if on_invalid == "skip" else "fail",
        description=description,
        positions=not no_positions,
        progress=show_progress,
    )
    for line in summary_lines(report):
        click.echo(line)


def summary_lines(report: LoadReport) -> list[str]:
    """The summary printed after a load."""
    verb = {"create": "loaded", "append": "appended", "replace": "replaced with"}[report.mode]
    lines = [
        f"{verb} {report.rows_accepted:,} rows into catalog {report.catalog} "
        f"in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s); load {report.load_id}",
        f"file: {report.file_name} ({report.file_format}, sha256 {report.file_sha256[:16]}...)",
    ]
    if report.rows_rejected:
        lines.append(
            f"rejected: {report.rows_rejected:,} rows (listed in skyclass.ingest_reject, "
            f"load_id {report.load_id})"
        )
    if report.nulls_per_column:
        lines.append("NULLs per column:")
        for column, reasons in report.nulls_per_column.items():
            detail = ", ".join(f"{n:,} {reason}" for reason, n in sorted(reasons.items()))
            lines.append(f"  {column}: {sum(reasons.values()):,} ({detail})")
    else:
        lines.append("NULLs: none")
    lines.extend(f"note: {note}" for note in report.notes)
    return lines
