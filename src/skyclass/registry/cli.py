"""``skyclass catalog``: list, show, register and drop catalogs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click


@click.group("catalog")
def catalog() -> None:
    """Catalogs: loaded with `skyclass ingest`, or existing tables registered in place."""


@catalog.command("list")
def catalog_list() -> None:
    """List the catalogs: name, kind, rows (estimate), loads, id/RA/Dec source columns."""
    from skyclass.registry.catalogs import list_catalogs

    catalogs = list_catalogs()
    if not catalogs:
        click.echo(
            "no catalogs (load one with `skyclass ingest FILE --catalog NAME`, or register a "
            "table with `skyclass catalog register TABLE --name NAME ...`)"
        )
        return
    rows: list[tuple[str, ...]] = [
        ("name", "kind", "rows", "loads", "id", "ra", "dec", "description")
    ]
    for c in catalogs:
        rows.append(
            (
                c.name,
                c.kind if c.source is None else f"{c.kind} ({c.source})",
                f"{c.rows:,}",
                str(c.loads),
                c.id_column or "(generated)",
                c.ra_column or "(none)",
                c.dec_column or "(none)",
                c.description or "",
            )
        )
    _print_table(rows)


@catalog.command("show")
@click.argument("name")
def catalog_show(name: str) -> None:
    """Show catalog NAME: exact row count, columns with units, its loads or registration."""
    from skyclass.registry.catalogs import describe_catalog

    d = describe_catalog(name)
    s = d.summary
    click.echo(
        f"catalog {s.name}: table {s.table}, {s.rows:,} rows, created {s.created_at:%Y-%m-%d %H:%M}"
    )
    if s.source is not None:
        click.echo(f"registered in place: {s.table} is a view over {s.source} (nothing copied)")
    reg = d.registration
    if reg is not None:
        click.echo(
            f"registered {reg.registered_at:%Y-%m-%d %H:%M} by {reg.os_user} (database role "
            f"{reg.db_user}): {reg.source_kind}, {reg.row_estimate:,} rows then; Q3C index "
            f"{reg.q3c_index or '(none)'}" + (" (built by skyclass)" if reg.index_created else "")
        )
        for check in reg.checks:
            click.echo(
                f"  check {check['check']}: {check['offending_rows']:,} offending rows "
                f"({check['method']})"
            )
    if s.description:
        click.echo(f"description: {s.description}")
    if s.positions:
        click.echo(f"sky positions: ra from column {s.ra_column}, dec from column {s.dec_column}")
    else:
        click.echo(
            "no sky positions: no ra/dec columns and no Q3C index (cone search and "
            "cross-match refuse this catalog)"
        )
    click.echo("")
    rows: list[tuple[str, ...]] = [("column", "type", "unit", "ucd", "source", "description")]
    rows += [
        (c.name, c.pg_type, c.unit or "", c.ucd or "", c.source_name, c.description or "")
        for c in d.columns
    ]
    _print_table(rows)
    if not d.loads:
        return
    click.echo("")
    loads: list[tuple[str, ...]] = [
        ("load", "mode", "finished", "rows", "rejected", "user", "file")
    ]
    loads += [
        (
            str(load.load_id),
            load.mode,
            f"{load.finished_at:%Y-%m-%d %H:%M:%S}",
            f"{load.rows_accepted:,}",
            f"{load.rows_rejected:,}",
            load.os_user,
            load.file_name,
        )
        for load in d.loads
    ]
    _print_table(loads)


@catalog.command("register")
@click.argument("table")
@click.option("--name", required=True, help="The catalog name (a-z, 0-9, _).")
@click.option("--id", "id_column", required=True, metavar="COL", help="Unique integer id column.")
@click.option("--ra", "ra_column", metavar="COL", help="Right ascension column (degrees).")
@click.option("--dec", "dec_column", metavar="COL", help="Declination column (degrees).")
@click.option(
    "--no-positions", is_flag=True, help="The table has no sky positions (no --ra/--dec)."
)
@click.option(
    "--create-index",
    is_flag=True,
    help="Build the missing Q3C index (CREATE INDEX CONCURRENTLY, per leaf partition).",
)
@click.option("--description", help="A description stored with the catalog.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Report the steps on stderr (default: when stderr is a terminal).",
)
def catalog_register(
    table: str,
    name: str,
    id_column: str,
    ra_column: str | None,
    dec_column: str | None,
    no_positions: bool,
    create_index: bool,
    description: str | None,
    progress: bool | None,
) -> None:
    """Register the existing TABLE (SCHEMA.TABLE, partitioned or not) as a catalog.

    Nothing is copied: catalogs.NAME becomes a view over TABLE that renames
    the --id, --ra and --dec columns to object_id, ra and dec (other columns
    keep their names), and everything downstream (features, labels, training,
    scoring, cone and xmatch, the published views) reads it like an ingested
    catalog. The table is checked once: the id unique (through a unique index,
    or one scan) and not NULL, RA in [0, 360) and Dec in [-90, 90], each with a
    count of offending rows. A Q3C index on q3c_ang2ipix(RA, DEC) of the table
    must exist, or is built with --create-index. Who registered what and the
    checks run are recorded in skyclass.catalog_registration. `skyclass catalog
    drop` unregisters it and never drops TABLE.
    """
    from skyclass.registry.register import register_catalog

    show = sys.stderr.isatty() if progress is None else progress
    reg = register_catalog(
        table,
        name=name,
        id_column=id_column,
        ra_column=ra_column,
        dec_column=dec_column,
        positions=not no_positions,
        create_index=create_index,
        description=description,
        progress=show,
    )
    click.echo(
        f"registered {reg.source_kind} {reg.source} as catalog {reg.name} "
        f"({reg.row_estimate:,} rows, nothing copied; {reg.seconds:.1f} s)"
    )
    for check in reg.checks:
        click.echo(
            f"  check {check.name}: {check.offending_rows:,} offending rows ({check.method})"
        )
    if reg.q3c_index:
        click.echo(f"  Q3C index: {reg.q3c_index}" + (" (built now)" if reg.index_created else ""))
    if reg.hidden_columns:
        click.echo(
            f"  not shown in catalogs.{reg.name} (they would shadow object_id/ra/dec): "
            + ", ".join(reg.hidden_columns)
        )


@catalog.command("drop")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm the drop.")
@click.option(
    "--cascade",
    is_flag=True,
    help="Also drop its feature builds, scoring runs, predictions and schedules.",
)
def catalog_drop(name: str, yes: bool, cascade: bool) -> None:
    """Drop catalog NAME (an ingested catalog's table; a registered one's view only).

    What depends on the catalog (feature builds, scoring runs, prediction
    tables, schedules) is listed, and the drop refused unless --cascade, which
    removes them with the catalog in one transaction. Model versions, their
    training snapshots and the feature builds they were trained on stay
    (provenance outlives the catalog). The table a catalog was registered from
    is never dropped.
    """
    from skyclass.errors import RegistryError
    from skyclass.registry.drop import catalog_dependents, drop_catalog

    if not yes:
        deps = catalog_dependents(name)
        listing = "".join(f"\n  {line}" for line in deps.describe())
        what = "its view (not the registered table)" if deps.kind == "registered" else "its table"
        raise RegistryError(
            f"dropping catalog {name!r} deletes {what} and its registry rows"
            + (f"; depending on it:{listing}\n" if listing else "; ")
            + ("add --yes --cascade to confirm" if listing else "add --yes to confirm")
        )
    report = drop_catalog(name, cascade=cascade)
    for line in report.dependents.describe():
        click.echo(f"dropped {line}" if not line.startswith(("  ", "deployments")) else line)
    kept = f"; table {report.source_kept} kept" if report.source_kept else ""
    click.echo(f"dropped catalog {name} ({report.dropped_relation}{kept})")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
