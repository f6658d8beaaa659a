"""Single flight of ingests, drops, registrations and feature builds.

Each operation that must run alone locks its row of ``skyclass.operation_lock``
(``catalog:<name>`` or ``feature_set:<name>:<spec_hash>``) with ``SELECT ... FOR
UPDATE`` inside its transaction; the lock ends with the transaction (commit,
rollback, killed backend). Locking a row needs UPDATE on the table, which
PUBLIC lacks, so a role without grants cannot block an operation (it could with
the advisory keys used before migration 0011).
"""

from __future__ import annotations

from typing import Any

import psycopg

from skyclass.errors import IngestError

# How long inserting a resource's first row may wait for another transaction that inserted
# the same row and is still running (that transaction is the holder).
_INSERT_WAIT = "200ms"

_HOLDER_SQL = """
SELECT l.pid FROM skyclass.operation_lock AS o
  JOIN pg_catalog.pg_locks AS l
    ON l.locktype = 'transactionid' AND l.transactionid = o.xmax AND l.granted
   AND l.mode = 'ExclusiveLock'
 WHERE o.resource = %s AND l.pid <> pg_catalog.pg_backend_pid()
"""

# A row being inserted is invisible to others: its inserter is one of the backends
# writing to the table.
_INSERTERS_SQL = """
SELECT DISTINCT pid FROM pg_catalog.pg_locks
 WHERE locktype = 'relation' AND granted AND mode = 'RowExclusiveLock'
   AND relation = 'skyclass.operation_lock'::regclass AND pid <> pg_catalog.pg_backend_pid()
 ORDER BY pid
"""


def catalog_resource(name: str) -> str:
    """The ``skyclass.operation_lock`` resource of catalog ``name``."""
    return f"catalog:{name}"


def feature_set_resource(name: str, spec_hash: str) -> str:
    """The ``skyclass.operation_lock`` resource of feature set ``name`` version ``spec_hash``."""
    return f"feature_set:{name}:{spec_hash}"


def _ensure_row(conn: psycopg.Connection[Any], resource: str, *, wait: bool) -> bool:
    """Insert ``resource``'s row if missing; False when another running transaction is."""
    insert = "INSERT INTO skyclass.operation_lock (resource) VALUES (%s) ON CONFLICT DO NOTHING"
    if wait:
        conn.execute(insert, (resource,))
        return True
    row = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    previous = str(row[0]) if row else "0"
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (_INSERT_WAIT,))
    try:
        with conn.transaction():
            conn.execute(insert, (resource,))
    except psycopg.errors.LockNotAvailable:
        return False
    finally:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
    return True


def try_lock(conn: psycopg.Connection[Any], resource: str) -> list[int] | None:
    """Lock ``resource`` for the rest of the transaction; None, or the holders' pids if taken.

    The pid list is empty when the holder ended between the attempt and the look-up.
    """
    if not _ensure_row(conn, resource, wait=False):
        return [int(r[0]) for r in conn.execute(_INSERTERS_SQL)]
    # SKIP LOCKED rather than NOWAIT: no savepoint, so the row's xmax is this transaction's
    # own id, by which a refused operation finds this one's pid.
    row = conn.execute(
        "SELECT 1 FROM skyclass.operation_lock WHERE resource = %s FOR UPDATE SKIP LOCKED",
        (resource,),
    ).fetchone()
    if row is not None:
        return None
    return [int(r[0]) for r in conn.execute(_HOLDER_SQL, (resource,))]


def lock(conn: psycopg.Connection[Any], resource: str) -> None:
    """Lock ``resource`` for the rest of the transaction, waiting for its holder."""
    _ensure_row(conn, resource, wait=True)
    conn.execute(
        "SELECT 1 FROM skyclass.operation_lock WHERE resource = %s FOR UPDATE", (resource,)
    )


def lock_catalog(conn: psycopg.Connection[Any], name: str) -> None:
    """Take the transaction-level lock of catalog ``name`` or raise at once.

    Two ingests (or an ingest and a drop or registration) of one catalog would
    otherwise race; the second one is refused immediately rather than queued
    behind a load that may take minutes, and the message names the backend
    holding the lock. Call it first in a transaction of its own, not in a
    savepoint: a savepoint's lock cannot be traced to its backend's pid.
    """
    holders = try_lock(conn, catalog_resource(name))
    if holders is None:
        return
    pids = ", ".join(str(p) for p in holders)
    who = f" (database backend pid {pids})" if holders else ""
    raise IngestError(
        f"another skyclass ingest, registration or drop of catalog {name!r} is running{who}; "
        "wait for it to finish and try again"
    )
