"""The TAP service's database side: the published set, running a query, the metadata.

Every ADQL query runs in a ``READ ONLY`` transaction with ``search_path``
``pg_catalog`` and Q3C's schema (its SQL functions call its C functions
unqualified), a ``statement_timeout`` and, on top of the translation's
allow-list, the privileges of the role the service connects as (a
``skyclass_reader`` member such as ``skyclass_portal``). The translation limits
the query to MAXREC + 1 rows (the extra row tells OVERFLOW), so no more are
ever read.
The published tables and their column metadata come from ``TAP_SCHEMA`` and
are cached for a few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from skyclass.serve.tap.adql import AdqlError, PublishedTable, translate
from skyclass.serve.tap.results import Field, field_for

METADATA_SECONDS = 5.0

PUBLISHED_SQL = """
SELECT t.schema_name, t.table_name, n.nspname, c.relname, c.oid::bigint
  FROM tap_schema.tables AS t
  JOIN pg_class AS c ON c.oid = to_regclass(t.table_name)
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
"""
COLUMNS_SQL = """
SELECT to_regclass(table_name)::oid::bigint, column_index, unit, ucd, description
  FROM tap_schema.columns
"""
Q3C_SQL = """
SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
 WHERE e.extname = 'q3c'
"""


class QueryError(Exception):
    """The database refused or could not finish a query: the user's problem (400)."""


class UnavailableError(Exception):
    """The database cannot be reached (503)."""


@dataclass(frozen=True)
class QueryResult:
    """Rows of a query, at most MAXREC of them, and whether there were more."""

    fields: list[Field]
    rows: list[tuple[Any, ...]]
    overflow: bool
    sql: str


@dataclass(frozen=True)
class _Metadata:
    tables: dict[tuple[str, str], PublishedTable]
    columns: dict[tuple[int, int], dict[str, str | None]]
    q3c_schema: str
    loaded: float


class TapDatabase:
    """Queries and metadata of one TAP service over ``pool``."""

    def __init__(self, pool: ConnectionPool, *, statement_timeout: float) -> None:
        self.pool = pool
        self.statement_timeout = statement_timeout
        self._metadata: _Metadata | None = None
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; :class:`UnavailableError` when the server is unreachable."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise UnavailableError(f"the database is unavailable: {_message(exc)}") from None
        except (TimeoutError, psycopg.errors.ConnectionTimeout) as exc:
            raise UnavailableError(f"no database connection free: {exc}") from None

    def metadata(self) -> _Metadata:
        """The published tables, their columns' metadata and Q3C's schema (cached)."""
        with self._lock:
            current = self._metadata
            if current is not None and time.monotonic() - current.loaded < METADATA_SECONDS:
                return current
        with self.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            tables = {
                (str(s).lower(), str(t).split(".", 1)[1].lower()): PublishedTable(
                    schema=str(s), name=str(t).split(".", 1)[1], pg_schema=ns, pg_name=rel
                )
                for s, t, ns, rel, _ in conn.execute(PUBLISHED_SQL)
            }
            columns = {
                (int(oid), int(index)): {"unit": unit, "ucd": ucd, "description": text}
                for oid, index, unit, ucd, text in conn.execute(COLUMNS_SQL)
                if oid is not None
            }
            row = conn.execute(Q3C_SQL).fetchone()
        if row is None:
            raise UnavailableError("the q3c extension is not installed in the database")
        fresh = _Metadata(tables, columns, str(row[0]), time.monotonic())
        with self._lock:
            self._metadata = fresh
        return fresh

    def translate(self, adql: str) -> str:
        """PostgreSQL text of ``adql`` over the published set (:class:`AdqlError`)."""
        meta = self.metadata()
        return translate(adql, meta.tables, meta.q3c_schema)

    def run(
        self, adql: str, maxrec: int, *, on_backend: Any = None, timeout: float | None = None
    ) -> QueryResult:
        """Run ``adql``, returning at most ``maxrec`` rows.

        ``on_backend(pid)`` is called with the backend's process id before the
        query starts (the async jobs record it to cancel the query on ABORT);
        ``timeout`` (seconds, a job's execution duration) lowers the service's
        statement timeout.
        Raises :class:`AdqlError` for a refused query and :class:`QueryError`
        when PostgreSQL refuses it or it runs out of time.
        """
        meta = self.metadata()
        text = translate(adql, meta.tables, meta.q3c_schema, row_limit=maxrec + 1)
        seconds = (
            self.statement_timeout if timeout is None else min(timeout, self.statement_timeout)
        )
        timeout_ms = str(max(1, round(seconds * 1000)))
        with self.connection() as conn:
            if on_backend is not None:
                on_backend(conn.info.backend_pid)
            try:
                with conn.transaction():
                    # one round trip: our own literals only (a number and a schema name)
                    conn.execute(
                        "SET TRANSACTION READ ONLY; "
                        f"SET LOCAL statement_timeout = {int(timeout_ms)}; "
                        "SET LOCAL standard_conforming_strings = on; "
                        # Q3C's SQL functions call its C functions unqualified
                        f"SET LOCAL search_path = pg_catalog, {_quote_ident(meta.q3c_schema)}"
                    )
                    cur = conn.execute(text)  # generated from the checked syntax tree
                    fields = self._fields(cur, meta)
                    rows = cur.fetchall()
            except psycopg.errors.QueryCanceled:
                raise QueryError(
                    f"the query was cancelled: it ran longer than the statement timeout "
                    f"({seconds:g} s) or was aborted"
                ) from None
            except psycopg.OperationalError as exc:
                raise UnavailableError(f"the database is unavailable: {_message(exc)}") from None
            except psycopg.Error as exc:
                raise QueryError(f"the query failed: {_message(exc)}") from None
        overflow = len(rows) > maxrec
        return QueryResult(fields, list(rows[:maxrec]), overflow, text)

    @staticmethod
    def _fields(cur: psycopg.Cursor[Any], meta: _Metadata) -> list[Field]:
        description = cur.description or []
        result = cur.pgresult
        fields = []
        for i, column in enumerate(description):
            info = None
            if result is not None and i < result.nfields:
                info = meta.columns.get((int(result.ftable(i)), int(result.ftablecol(i))))
            fields.append(field_for(column.name, column.type_code, info))
        return fields

    def tables_metadata(self) -> tuple[list[Sequence[Any]], list[Sequence[Any]], list[Any]]:
        """Rows of TAP_SCHEMA.tables, .columns and the keys with their columns (for /tables)."""
        with self.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            tables = conn.execute(
                "SELECT t.schema_name, t.table_name, t.table_type, t.description, "
                "s.description FROM tap_schema.tables AS t "
                "LEFT JOIN tap_schema.schemas AS s USING (schema_name) "
                "ORDER BY s.schema_index, t.table_index, t.table_name"
            ).fetchall()
            columns = conn.execute(
                "SELECT table_name, column_name, description, unit, ucd, utype, xtype, "
                "datatype, arraysize, principal, indexed, std FROM tap_schema.columns "
                "ORDER BY table_name, column_index"
            ).fetchall()
            keys = conn.execute(
                "SELECT k.key_id, k.from_table, k.target_table, k.description, "
                "array_agg(c.from_column ORDER BY c.from_column), "
                "array_agg(c.target_column ORDER BY c.from_column) "
                "FROM tap_schema.keys AS k JOIN tap_schema.key_columns AS c USING (key_id) "
                "GROUP BY k.key_id, k.from_table, k.target_table, k.description "
                "ORDER BY k.key_id"
            ).fetchall()
        return list(tables), list(columns), list(keys)

    def ping(self) -> None:
        """``SELECT 1``: raises :class:`UnavailableError` when the database does not answer."""
        with self.connection() as conn:
            try:
                conn.execute("SELECT 1").fetchone()
                conn.rollback()
            except psycopg.Error as exc:
                raise UnavailableError(f"the database is unavailable: {_message(exc)}") from None


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return " ".join(str(primary or exc).split())[:500]


__all__ = ["AdqlError", "QueryError", "QueryResult", "TapDatabase", "UnavailableError"]
