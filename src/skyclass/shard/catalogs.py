"""Attach a catalog that each shard holds a sky region of: foreign partitions by Q3C pixel range.

Each shard holds catalog ``NAME`` (ingested or registered there) covering a
contiguous Q3C pixel range (rows are placed by ``q3c_ang2ipix(ra, dec)``; the
ranges must not overlap). Attaching reads each shard's range and creates on
the coordinator:

- ``shards.NAME``: partitioned by ``RANGE (q3c_ang2ipix(ra, dec))``, one foreign
  partition per shard on the shard's ``catalogs.NAME``; registered as catalog
  ``NAME`` (a view, as any registered table), so ``skyclass.cone_search`` and
  the CLI work through it and only the shards whose range meets the cone are
  read (run-time partition pruning);
- ``shards.NAME_classification``: the shards' ``skyclass.current_classification``
  rows of the catalog with the object's position (a view created on each shard,
  ``skyclass_shard.NAME_classification``), partitioned the same way, so a query
  with ``q3c_radial_query(ra, dec, ...)`` is pruned at plan time to the shards
  concerned.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from skyclass.db.connect import database_url
from skyclass.errors import CatalogNotFoundError, ShardError
from skyclass.registry.catalogs import find_catalog
from skyclass.shard.servers import ShardInfo, list_shards, shard_url

# The view each shard gets: its current classifications of the catalog, with positions.
REMOTE_SCHEMA = "skyclass_shard"
CLASSIFICATION_COLUMNS = (
    "deployment",
    "model_version_id",
    "top_label",
    "top_probability",
    "probabilities",
)


@dataclass(frozen=True)
class ShardPart:
    """What one shard holds of an attached catalog: pixel range [lo, hi) (None: open) and count."""

    shard: str
    ipix_min: int
    ipix_max: int
    objects: int
    lo: int | None = None
    hi: int | None = None


@dataclass(frozen=True)
class AttachedCatalog:
    """A catalog attached over shards: its coordinator tables and the parts."""

    name: str
    table: str
    classification: str
    parts: tuple[ShardPart, ...]


def _q3c(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'q3c'"
    ).fetchone()
    if row is None:
        raise ShardError("the coordinator has no q3c extension: run `skyclass db migrate`")
    return str(row[0])


def _columns(conn: psycopg.Connection[Any], relation: str) -> list[tuple[str, str]]:
    return [
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (relation,),
        )
    ]


def _inspect(shard: ShardInfo, name: str) -> tuple[ShardPart, list[tuple[str, str]], str]:
    """The shard's part of catalog ``name``, the catalog's columns and its relation."""
    try:
        with psycopg.connect(shard_url(shard.conninfo), connect_timeout=10) as conn:
            try:
                ref = find_catalog(conn, name)
            except CatalogNotFoundError:
                raise ShardError(f"shard {shard.name} has no catalog {name}") from None
            if ref.ra_column is None:
                raise ShardError(f"catalog {name} on shard {shard.name} has no sky positions")
            relation = sql.Identifier(ref.schema, ref.table).as_string(conn)
            q3c = sql.Identifier(_q3c(conn))
            row = conn.execute(
                sql.SQL(
                    "SELECT min({q}.q3c_ang2ipix(ra, dec)), max({q}.q3c_ang2ipix(ra, dec)), "
                    "count(*) FROM {t}"
                ).format(q=q3c, t=sql.SQL(relation))
            ).fetchone()
            assert row is not None
            if not row[2]:
                raise ShardError(f"catalog {name} on shard {shard.name} is empty")
            part = ShardPart(shard.name, int(row[0]), int(row[1]), int(row[2]))
            return part, _columns(conn, relation), relation
    except psycopg.OperationalError as exc:
        raise ShardError(f"shard {shard.name}: cannot connect: {str(exc).strip()}") from None


def _bounds(parts: list[ShardPart]) -> list[ShardPart]:
    """Parts in pixel order with partition bounds; :class:`ShardError` when ranges overlap."""
    ordered = sorted(parts, key=lambda p: p.ipix_min)
    for a, b in itertools.pairwise(ordered):
        if a.ipix_max >= b.ipix_min:
            raise ShardError(
                f"shards {a.shard} (Q3C pixels {a.ipix_min}..{a.ipix_max}) and {b.shard} "
                f"({b.ipix_min}..{b.ipix_max}) overlap: each shard must hold one contiguous "
                "pixel range"
            )
    out = []
    for i, p in enumerate(ordered):
        lo = 0 if i == 0 else p.ipix_min
        hi = None if i == len(ordered) - 1 else ordered[i + 1].ipix_min
        out.append(ShardPart(p.shard, p.ipix_min, p.ipix_max, p.objects, lo, hi))
    return out


def _bound(value: int | None, open_end: str) -> sql.Composable:
    return sql.SQL(open_end) if value is None else sql.Literal(value)


def _remote_view(shard: ShardInfo, name: str, relation: str) -> list[tuple[str, str]]:
    """Create (or replace) the shard's classification view of ``name``; returns its columns."""
    view = sql.Identifier(REMOTE_SCHEMA, f"{name}_classification")
    with psycopg.connect(shard_url(shard.conninfo)) as conn:
        schema = sql.Identifier(REMOTE_SCHEMA)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE VIEW {view} AS "
                "SELECT t.object_id, t.ra, t.dec, {cols} FROM {t} AS t "
                "JOIN skyclass.current_classification AS p "
                "ON p.object_id = t.object_id AND p.catalog = {name}"
            ).format(
                view=view,
                cols=sql.SQL(", ").join(sql.Identifier("p", c) for c in CLASSIFICATION_COLUMNS),
                t=sql.SQL(relation),
                name=sql.Literal(name),
            )
        )
        conn.execute(
            sql.SQL("COMMENT ON VIEW {} IS {}").format(
                view,
                sql.Literal(
                    f"Current classifications of catalog {name} with positions, read by the "
                    "coordinator's shards." + f"{name}_classification (skyclass shard attach)."
                ),
            )
        )
        return _columns(conn, view.as_string(conn))


def attach_catalog(
    name: str, *, shards: list[str] | None = None, url: str | None = None
) -> AttachedCatalog:
    """Attach catalog ``name``, held by ``shards`` (default: every shard), on the coordinator.

    Every shard must hold a non-empty catalog ``name`` with the same columns,
    and the shards' Q3C pixel ranges must not overlap. Creates the coordinator
    tables described in the module docstring, records each shard's range in
    ``skyclass.shard_range`` and registers ``shards.NAME`` as catalog ``name``
    (which checks unique ids and positions across every shard). Raises
    :class:`ShardError`; nothing stays created then.
    """
    coordinator = url or database_url()
    infos = list_shards(url=coordinator, names=shards)
    if not infos:
        raise ShardError("no shards: add them with `skyclass shard add NAME URL`")
    inspected = [_inspect(s, name) for s in infos]
    columns = inspected[0][1]
    for (part, cols, _), _info in zip(inspected, infos, strict=True):
        if cols != columns:
            raise ShardError(
                f"catalog {name} has other columns on shard {part.shard} than on "
                f"{inspected[0][0].shard}: {cols} vs {columns}"
            )
    parts = _bounds([p for p, _, _ in inspected])
    by_name = {s.name: s for s in infos}
    relations = {p.shard: rel for p, _, rel in inspected}
    class_columns = [_remote_view(by_name[p.shard], name, relations[p.shard]) for p in parts]
    table = sql.Identifier("shards", name)
    classification = sql.Identifier("shards", f"{name}_classification")
    with psycopg.connect(coordinator) as conn:
        q3c = sql.Identifier(_q3c(conn))
        key = sql.SQL("{}.q3c_ang2ipix(ra, dec)").format(q3c)
        taken = conn.execute(
            "SELECT to_regclass(%s), to_regclass(%s)",
            (table.as_string(conn), classification.as_string(conn)),
        ).fetchone()
        if taken is not None and any(taken):
            raise ShardError(f"catalog {name} is attached already (skyclass shard detach {name})")
        for target, cols, remote in (
            (table, columns, None),
            (classification, class_columns[0], f"{name}_classification"),
        ):
            conn.execute(
                sql.SQL("CREATE TABLE {} ({}) PARTITION BY RANGE ({})").format(
                    target,
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in cols
                    ),
                    key,
                )
            )
            # Q3C pixels are never negative. An empty local partition below 0 (NAME__0: no
            # shard name starts with a digit) lets the planner prune q3c_radial_query's
            # unused pixel ranges (>= 1 AND < -1), which otherwise select the first shard's
            # partition for every cone.
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (MINVALUE) TO (0)").format(
                    sql.Identifier("shards", _leaf(target.as_string(conn), "0")), target
                )
            )
            for p in parts:
                schema, rel = (
                    (REMOTE_SCHEMA, remote) if remote else tuple(_unquote(relations[p.shard]))
                )
                leaf = sql.Identifier("shards", _leaf(target.as_string(conn), p.shard))
                conn.execute(
                    sql.SQL(
                        "CREATE FOREIGN TABLE {leaf} PARTITION OF {parent} "
                        "FOR VALUES FROM ({lo}) TO ({hi}) SERVER {server} "
                        "OPTIONS (schema_name {schema}, table_name {rel})"
                    ).format(
                        leaf=leaf,
                        parent=target,
                        lo=_bound(p.lo, "MINVALUE"),
                        hi=_bound(p.hi, "MAXVALUE"),
                        server=sql.Identifier(by_name[p.shard].server_name),
                        schema=sql.Literal(schema),
                        rel=sql.Literal(rel),
                    )
                )
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                table,
                sql.Literal(
                    f"Catalog {name} sharded by Q3C pixel range over "
                    f"{', '.join(p.shard for p in parts)} (skyclass shard attach)."
                ),
            )
        )
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(
                classification,
                sql.Literal(
                    f"skyclass.current_classification of catalog {name} on its shards, with "
                    "ra and dec: filter with q3c_radial_query(ra, dec, ...) to read only the "
                    "shards concerned."
                ),
            )
        )
        conn.execute(
            sql.SQL("GRANT SELECT ON {}, {} TO skyclass_reader").format(table, classification)
        )
        for p in parts:
            conn.execute(
                "INSERT INTO skyclass.shard_range (catalog_name, shard_name, ipix_lo, ipix_hi, "
                "object_count) VALUES (%s, %s, %s, %s, %s)",
                (name, p.shard, p.lo, p.hi, p.objects),
            )
    try:
        from skyclass.registry.register import register_catalog

        register_catalog(
            f"shards.{name}",
            name=name,
            id_column="object_id",
            ra_column="ra",
            dec_column="dec",
            description=f"sharded over {', '.join(p.shard for p in parts)}",
            url=coordinator,
        )
    except Exception:
        _drop(coordinator, name)
        raise
    return AttachedCatalog(name, f"shards.{name}", f"shards.{name}_classification", tuple(parts))


def _leaf(parent: str, shard: str) -> str:
    base = parent.split(".", 1)[1].strip('"')
    leaf = f"{base}__{shard}"
    if len(leaf.encode()) > 63:
        raise ShardError(f"{leaf!r} is longer than 63 bytes: use a shorter catalog or shard name")
    return leaf


def _unquote(relation: str) -> list[str]:
    """["schema", "table"] of a relation name quoted by psycopg (names hold no dots or quotes)."""
    return [part.strip('"') for part in relation.split(".", 1)]


def _drop(coordinator: str, name: str) -> None:
    with psycopg.connect(coordinator) as conn:
        conn.execute("DELETE FROM skyclass.shard_range WHERE catalog_name = %s", (name,))
        for suffix in ("", "_classification"):
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(
                    sql.Identifier("shards", f"{name}{suffix}")
                )
            )


def detach_catalog(name: str, *, url: str | None = None) -> None:
    """Drop the coordinator's tables of sharded catalog ``name`` and unregister it there.

    The shards keep their catalogs, predictions and classification views.
    """
    coordinator = url or database_url()
    with psycopg.connect(coordinator) as conn:
        row = conn.execute(
            "SELECT count(*) FROM skyclass.shard_range WHERE catalog_name = %s", (name,)
        ).fetchone()
    if not row or not row[0]:
        raise ShardError(f"catalog {name} is not attached over shards (skyclass shard list)")
    from skyclass.registry.drop import drop_catalog

    drop_catalog(name, cascade=True, url=coordinator)
    _drop(coordinator, name)
