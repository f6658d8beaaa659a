"""The catalog registry: list and describe catalogs (drop: :mod:`.drop`, lock: :mod:`.locks`).

A catalog is ``catalogs.<name>`` plus its row in ``skyclass.catalog``, its
columns in ``skyclass.catalog_column`` and its history: the files loaded into
it (``skyclass.catalog_load``, rejected rows in ``skyclass.ingest_reject``)
for an *ingested* catalog, or the registration (``skyclass.catalog_registration``)
of a *registered* one, whose ``catalogs.<name>`` is a view over an existing
table (:mod:`.register`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from skyclass.db.connect import connect
from skyclass.db.schema import CATALOG_SCHEMA
from skyclass.errors import CatalogNotFoundError, IngestError
from skyclass.ingest.columns import check_name


@dataclass(frozen=True)
class CatalogSummary:
    """One registered catalog, as listed by ``skyclass catalog list``.

    ``ra_column`` and ``dec_column`` are None for a catalog without sky positions.
    """

    name: str
    table: str
    rows: int
    loads: int
    id_column: str | None
    ra_column: str | None
    dec_column: str | None
    description: str | None
    created_at: datetime
    kind: str = "ingested"
    source: str | None = None

    @property
    def positions(self) -> bool:
        """True when the catalog has sky positions (``ra``, ``dec`` and a Q3C index)."""
        return self.ra_column is not None


@dataclass(frozen=True)
class ColumnInfo:
    """A column of a catalog table and where it came from."""

    name: str
    pg_type: str
    source_name: str
    unit: str | None
    ucd: str | None
    description: str | None


@dataclass(frozen=True)
class LoadInfo:
    """One file loaded into a catalog (the provenance row)."""

    load_id: int
    mode: str
    file_name: str
    file_size: int
    file_sha256: str
    file_format: str
    rows_accepted: int
    rows_rejected: int
    nulls_per_column: dict[str, dict[str, int]]
    null_values: list[float]
    options: dict[str, Any]
    os_user: str
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class CatalogDescription:
    """A catalog with its columns and load history (``skyclass catalog show``)."""

    summary: CatalogSummary
    columns: list[ColumnInfo]
    loads: list[LoadInfo]
    registration: RegistrationInfo | None = None


@dataclass(frozen=True)
class RegistrationInfo:
    """How a registered catalog was registered (``skyclass.catalog_registration``)."""

    source: str
    source_kind: str
    row_estimate: int
    checks: list[dict[str, Any]]
    q3c_index: str | None
    index_created: bool
    os_user: str
    db_user: str
    registered_at: datetime


# -- reading ------------------------------------------------------------------------
# The row estimate sums the leaves of a partitioned table (its parent has no reltuples); a
# registered catalog's view has none either, so its source table is asked.
_SUMMARY_SQL = """
SELECT c.name, c.schema_name, c.table_name, c.id_column, c.ra_column, c.dec_column,
       c.description, c.created_at, c.catalog_id,
       (SELECT count(*) FROM skyclass.catalog_load l WHERE l.catalog_id = c.catalog_id),
       coalesce((SELECT sum(greatest(cl.reltuples, 0))::bigint
                   FROM (SELECT to_regclass(format('%%I.%%I',
                            coalesce(c.source_schema, c.schema_name),
                            coalesce(c.source_table, c.table_name))) AS r) AS src
                   JOIN pg_class cl ON cl.relkind = 'r'
                    AND (cl.oid = src.r
                         OR cl.oid IN (SELECT pt.relid FROM pg_partition_tree(src.r) AS pt))), 0),
       c.kind, c.source_schema, c.source_table
FROM skyclass.catalog c
"""


def _summary(row: tuple[Any, ...], rows: int | None = None) -> CatalogSummary:
    return CatalogSummary(
        name=row[0],
        table=f"{row[1]}.{row[2]}",
        rows=int(row[10]) if rows is None else rows,
        loads=int(row[9]),
        id_column=row[3],
        ra_column=row[4],
        dec_column=row[5],
        description=row[6],
        created_at=row[7],
        kind=row[11],
        source=None if row[13] is None else f"{row[12]}.{row[13]}",
    )


def list_catalogs(url: str | None = None) -> list[CatalogSummary]:
    """All registered catalogs, by name; ``rows`` is the planner's estimate (exact after a load)."""
    with connect(url) as conn:
        rows = conn.execute(_SUMMARY_SQL + " ORDER BY c.name", ()).fetchall()
    return [_summary(r) for r in rows]


def describe_catalog(name: str, url: str | None = None) -> CatalogDescription:
    """Catalog ``name`` with its exact row count, columns and load history."""
    check_name(name)
    with connect(url) as conn:
        row = conn.execute(_SUMMARY_SQL + " WHERE c.name = %s", (name,)).fetchone()
        if row is None:
            raise not_found(conn, name)
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(row[1]), sql.Identifier(row[2])
            )
        ).fetchone()
        columns = conn.execute(
            "SELECT column_name, pg_type, source_name, unit, ucd, description "
            "FROM skyclass.catalog_column WHERE catalog_id = %s ORDER BY position",
            (row[8],),
        ).fetchall()
        loads = conn.execute(
            "SELECT load_id, mode, file_name, file_size, file_sha256, file_format, "
            "rows_accepted, rows_rejected, nulls_per_column, null_values, options, os_user, "
            "started_at, finished_at FROM skyclass.catalog_load WHERE catalog_id = %s "
            "ORDER BY load_id",
            (row[8],),
        ).fetchall()
        registration = conn.execute(
            "SELECT source_schema || '.' || source_table, source_kind, row_estimate, checks, "
            "q3c_index, index_created, os_user, db_user, registered_at "
            "FROM skyclass.catalog_registration WHERE catalog_id = %s "
            "ORDER BY registration_id DESC LIMIT 1",
            (row[8],),
        ).fetchone()
    return CatalogDescription(
        summary=_summary(row, int(count[0]) if count else 0),
        columns=[ColumnInfo(*c) for c in columns],
        loads=[LoadInfo(*load) for load in loads],
        registration=None if registration is None else RegistrationInfo(*registration),
    )


@dataclass(frozen=True)
class CatalogRef:
    """A catalog's registry row: where its table is and its id and position columns."""

    catalog_id: int
    name: str
    schema: str
    table: str
    id_column: str | None
    ra_column: str | None
    dec_column: str | None
    kind: str


def find_catalog(conn: psycopg.Connection[Any], name: str) -> CatalogRef:
    """The registry row of catalog ``name``; :class:`CatalogNotFoundError` lists the known ones."""
    row = conn.execute(
        "SELECT catalog_id, name, schema_name, table_name, id_column, ra_column, dec_column, "
        "kind FROM skyclass.catalog WHERE name = %s",
        (name,),
    ).fetchone()
    if row is None:
        raise not_found(conn, name)
    return CatalogRef(int(row[0]), *row[1:])


def not_found(conn: psycopg.Connection[Any], name: str) -> CatalogNotFoundError:
    """The error for an unregistered catalog ``name``, naming the registered ones."""
    names = [r[0] for r in conn.execute("SELECT name FROM skyclass.catalog ORDER BY name")]
    known = f"; known catalogs: {', '.join(names)}" if names else "; no catalogs are registered"
    return CatalogNotFoundError(f"catalog {name!r} is not registered{known}")


# -- dropping -------------------------------------------------------------------------
def drop_table(
    conn: psycopg.Connection[Any], schema: str, table: str, *, what: str, view: bool = False
) -> None:
    """``DROP TABLE`` (``DROP VIEW``) that explains dependent objects instead of cascading."""
    kind = "view" if view else "table"
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("DROP {} IF EXISTS {}.{}").format(
                    sql.SQL(kind.upper()), sql.Identifier(schema), sql.Identifier(table)
                )
            )
    except psycopg.errors.DependentObjectsStillExist as exc:
        detail = (exc.diag.message_detail or "").replace("\n", "; ")
        raise IngestError(
            f"{what} cannot be dropped or replaced while other objects depend on {kind} "
            f"{schema}.{table} ({detail}); drop or redefine them first"
        ) from None


def table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    """True when ``catalogs.<table>`` exists (registered or not)."""
    row = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (CATALOG_SCHEMA, table)
    ).fetchone()
    return bool(row and row[0] is not None)
