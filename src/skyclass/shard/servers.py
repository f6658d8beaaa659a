"""Shards: PostgreSQL databases registered on the coordinator as postgres_fdw foreign servers.

Each shard is a row of ``skyclass.shard`` and a foreign server
``skyclass_shard_<name>`` with ``async_capable`` (the coordinator's Append scans
the shards concurrently) and ``extensions`` listing the extensions both sides
have (q3c, and skyclass when installed on both), so their immutable functions
and operators are evaluated on the shard. The connection string is stored
without password; a password given in the URL goes into the user mapping of
the current role only (readable by superusers and the mapping's owner).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from skyclass.db.connect import database_url
from skyclass.errors import ShardError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Extensions whose immutable functions should run on the shards, when both sides have them.
SHIPPED_EXTENSIONS = ("q3c", "skyclass")
# Connection keywords that belong to the user mapping, not to the foreign server.
_USER_KEYS = ("user", "password")
# Keywords postgres_fdw refuses (or that make no sense) as server options.
_DROPPED_KEYS = ("passfile", "service")


@dataclass(frozen=True)
class ShardInfo:
    """One registered shard; ``reachable``/``revision``/``error`` when checked."""

    name: str
    server_name: str
    conninfo: str
    added_by: str
    added_at: datetime
    reachable: bool | None = None
    revision: str | None = None
    error: str | None = None


def check_shard_name(name: str) -> str:
    """``name`` when it is a valid shard name, else :class:`ShardError`."""
    if not NAME.match(name):
        raise ShardError(
            f"shard name {name!r} must start with a lower-case letter and hold only a-z, 0-9 "
            "and _ (at most 40 characters)"
        )
    return name


def server_name(name: str) -> str:
    """The postgres_fdw foreign server of shard ``name``."""
    return f"skyclass_shard_{name}"


def shard_url(conninfo: str) -> str:
    """The URL the CLI connects to a shard with (its stored conninfo; libpq finds passwords)."""
    return conninfo


def _extensions(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {
        str(r[0]): str(r[1])
        for r in conn.execute("SELECT extname, extversion FROM pg_catalog.pg_extension")
    }


def _revision(conn: psycopg.Connection[Any]) -> str | None:
    if conn.execute("SELECT to_regclass('skyclass.alembic_version')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT version_num FROM skyclass.alembic_version").fetchone()
    return None if row is None else str(row[0])


def add_shard(name: str, url_of_shard: str, *, url: str | None = None) -> ShardInfo:
    """Register the database at ``url_of_shard`` as shard ``name`` of the coordinator ``url``.

    Checks that the shard is migrated to the coordinator's revision and has
    q3c (and the same extension versions as the coordinator for those shipped),
    creates postgres_fdw on the coordinator when missing, the foreign server
    and the current role's user mapping, and proves that the coordinator's
    server process reaches the shard (a foreign table read in the same
    transaction). Raises :class:`ShardError` naming what is wrong; nothing is
    created then.
    """
    check_shard_name(name)
    coordinator = url or database_url()
    try:
        params = psycopg.conninfo.conninfo_to_dict(url_of_shard)
    except psycopg.ProgrammingError as exc:
        raise ShardError(f"shard {name}: invalid connection string: {exc}") from None
    try:
        with psycopg.connect(url_of_shard, connect_timeout=10) as remote:
            remote_ext = _extensions(remote)
            remote_rev = _revision(remote)
            remote_db = remote.info.dbname
    except psycopg.OperationalError as exc:
        raise ShardError(f"shard {name}: cannot connect: {str(exc).strip()}") from None
    with psycopg.connect(coordinator) as conn:
        local_ext = _extensions(conn)
        local_rev = _revision(conn)
        if remote_rev != local_rev:
            raise ShardError(
                f"shard {name} is at schema revision {remote_rev or '(not migrated)'}, the "
                f"coordinator at {local_rev}: run `skyclass db migrate` against it "
                "(SKYCLASS_DATABASE_URL=...)"
            )
        if "q3c" not in remote_ext:
            raise ShardError(f"shard {name} has no q3c extension: run `skyclass db migrate` there")
        shipped = []
        for ext in SHIPPED_EXTENSIONS:
            if ext in remote_ext and ext in local_ext:
                if remote_ext[ext] != local_ext[ext]:
                    raise ShardError(
                        f"shard {name} has {ext} {remote_ext[ext]}, the coordinator "
                        f"{local_ext[ext]}: functions ship only between equal versions"
                    )
                shipped.append(ext)
        row = conn.execute("SELECT 1 FROM skyclass.shard WHERE name = %s", (name,)).fetchone()
        if row is not None:
            raise ShardError(f"shard {name} already exists (skyclass shard list)")
        server = server_name(name)
        options = {
            k: str(v)
            for k, v in params.items()
            if k not in _USER_KEYS and k not in _DROPPED_KEYS and v is not None
        }
        options.setdefault("dbname", remote_db)
        options.update(
            {
                "extensions": ",".join(shipped),
                "async_capable": "true",
                "fetch_size": "10000",
                "batch_size": "1000",
            }
        )
        user_options = {k: str(params[k]) for k in _USER_KEYS if params.get(k)}
        stored = psycopg.conninfo.make_conninfo(
            "", **{k: v for k, v in params.items() if k != "password" and v is not None}
        )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
            conn.execute(
                sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
                    sql.Identifier(server), _options(options)
                )
            )
            mapping = sql.SQL("CREATE USER MAPPING FOR CURRENT_USER SERVER {}").format(
                sql.Identifier(server)
            )
            if user_options:
                mapping = sql.SQL("{} OPTIONS ({})").format(mapping, _options(user_options))
            conn.execute(mapping)
            probe = sql.Identifier("shards", f"_probe_{name}")
            conn.execute(
                sql.SQL(
                    "CREATE FOREIGN TABLE {} (version_num text) SERVER {} "
                    "OPTIONS (schema_name 'skyclass', table_name 'alembic_version')"
                ).format(probe, sql.Identifier(server))
            )
            conn.execute(sql.SQL("SELECT version_num FROM {}").format(probe)).fetchall()
            conn.execute(sql.SQL("DROP FOREIGN TABLE {}").format(probe))
            conn.execute(
                "INSERT INTO skyclass.shard (name, server_name, conninfo) VALUES (%s, %s, %s)",
                (name, server, stored),
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ShardError(
                f"shard {name}: {exc.diag.message_primary} (creating foreign servers needs "
                "USAGE on postgres_fdw, creating the extension a superuser)"
            ) from None
        except psycopg.Error as exc:
            raise ShardError(
                f"shard {name}: the coordinator's server cannot use it: "
                f"{exc.diag.message_primary or exc}"
            ) from None
    return list_shards(url=coordinator, names=[name])[0]


def _options(options: dict[str, str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options.items()
    )


def list_shards(
    *, url: str | None = None, names: list[str] | None = None, check: bool = False
) -> list[ShardInfo]:
    """The registered shards (all, or ``names``), each checked for reachability when ``check``."""
    with psycopg.connect(url or database_url()) as conn:
        rows = conn.execute(
            "SELECT name, server_name, conninfo, added_by, added_at FROM skyclass.shard "
            "WHERE %s::text[] IS NULL OR name = ANY (%s) ORDER BY name",
            (names, names),
        ).fetchall()
    found = {str(r[0]) for r in rows}
    missing = sorted(set(names or ()) - found)
    if missing:
        raise ShardError(f"no shard named {', '.join(missing)} (skyclass shard list)")
    shards = [ShardInfo(*r) for r in rows]
    if not check:
        return shards
    checked = []
    for s in shards:
        try:
            with psycopg.connect(shard_url(s.conninfo), connect_timeout=5) as remote:
                rev = _revision(remote)
            checked.append(ShardInfo(*_fields(s), reachable=True, revision=rev))
        except psycopg.Error as exc:
            checked.append(ShardInfo(*_fields(s), reachable=False, error=str(exc).strip()))
    return checked


def _fields(s: ShardInfo) -> tuple[str, str, str, str, datetime]:
    return (s.name, s.server_name, s.conninfo, s.added_by, s.added_at)


def remove_shard(name: str, *, url: str | None = None) -> None:
    """Unregister shard ``name`` and drop its foreign server (refused while it holds a catalog)."""
    with psycopg.connect(url or database_url()) as conn:
        row = conn.execute(
            "SELECT server_name FROM skyclass.shard WHERE name = %s FOR UPDATE", (name,)
        ).fetchone()
        if row is None:
            raise ShardError(f"no shard named {name} (skyclass shard list)")
        held = [
            str(r[0])
            for r in conn.execute(
                "SELECT catalog_name FROM skyclass.shard_range WHERE shard_name = %s ORDER BY 1",
                (name,),
            )
        ]
        if held:
            raise ShardError(
                f"shard {name} holds part of {', '.join(held)}: detach first "
                "(skyclass shard detach CATALOG)"
            )
        conn.execute("DELETE FROM skyclass.shard WHERE name = %s", (name,))
        conn.execute(sql.SQL("DROP SERVER {} CASCADE").format(sql.Identifier(str(row[0]))))
