"""Load one catalog file into PostgreSQL, all or nothing.

Everything happens in one transaction, under the catalog's lock (see
:mod:`skyclass.registry.locks`):
create the table (or, for ``replace``, a new table beside the old one; for
``append``, a temporary staging table), stream the file into it with binary
``COPY``, check ids, add the primary key and the Q3C index, mark the table
clustered on that index and ``ANALYZE`` it, then write the registry rows. Any
error rolls all of it back, so the database is exactly as before.

The table is written in its final physical order, Q3C pixel order (so a cone
search touches few pages), without a ``CLUSTER`` rewrite: while the file is
read, validated and encoded, each row's Q3C pixel number is computed with
:mod:`skyclass.ingest.q3c` (equal to SQL ``q3c_ang2ipix``); the rows are kept in
memory, sorted, and sent by ``COPY`` in that order; the Q3C index is then
built from already sorted input and ``ALTER TABLE ... CLUSTER ON`` records it
as the clustering index. Memory is bounded by ``sort_memory`` (default
:data:`SORT_MEMORY`, 1 GiB, about 11 million rows of ten 8-byte columns): a
bigger file, or a CSV file whose column types change after its first rows, is
streamed in file order in bounded memory and ``CLUSTER`` sorts it in the
server, as it always did.

A catalog without sky positions (``positions=False``: training sets of
magnitudes and redshifts) has no ``ra``/``dec`` columns, no coordinate check
and no Q3C index; it is written in ``object_id`` order and clustered on its
primary key, so its physical order is id order like a Q3C-clustered catalog's
is sky order.

Duplicate ids are found by the primary key (or, on append, by the catalog's
key) and only then explained: a table filled by ``COPY`` in one transaction
keeps the order in which the rows were sent in its physical order (``ctid``),
and the loader knows that order (file order, or the permutation it sorted the
rows by), which maps a duplicate back to its rows in the file without storing
row numbers.
"""

from __future__ import annotations

import getpass
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from skyclass import __version__
from skyclass.db.connect import connect
from skyclass.db.schema import CATALOG_SCHEMA
from skyclass.errors import CatalogNotFoundError, DatabaseError, IngestError
from skyclass.ingest.columns import ColumnPlan, TablePlan, check_name, plan_table
from skyclass.ingest.copy_binary import (
    COPY_SIGNATURE,
    COPY_TRAILER,
    Field,
    PgType,
    encode_rows,
    type_from_sql,
)
from skyclass.ingest.prepare import DEFAULT_NULL_VALUES, ChunkPreparer, PreparedChunk, Reject
from skyclass.ingest.q3c import ang2ipix
from skyclass.ingest.registry import drop_table, lock_catalog, table_exists
from skyclass.ingest.sources import Source, detect_format, open_source

Mode = Literal["create", "append", "replace"]
OnInvalid = Literal["fail", "skip"]
MAX_NAME = 63
# Memory (bytes) for holding a file's prepared rows to sort them in the catalog's
# physical order before the COPY; a bigger file is streamed and clustered by CLUSTER.
SORT_MEMORY = 1 << 30
# Rows per COPY message when sending sorted rows: small enough that encoding the next
# block overlaps the server's work on this one, big enough that overheads vanish.
_SORTED_BLOCK_BYTES = 4 * 1024 * 1024

# Appends may widen a column type (file -> catalog) but not narrow one. bigint -> double
# is allowed because CSV reads an integral-looking float column as integers; it rounds
# only beyond 2^53. Integers become text exactly.
_SAFE_CASTS = {
    ("smallint", "integer"),
    ("smallint", "bigint"),
    ("integer", "bigint"),
    ("smallint", "numeric(20,0)"),
    ("integer", "numeric(20,0)"),
    ("bigint", "numeric(20,0)"),
    ("smallint", "real"),
    ("smallint", "double precision"),
    ("integer", "double precision"),
    ("bigint", "double precision"),
    ("real", "double precision"),
    ("smallint", "text"),
    ("integer", "text"),
    ("bigint", "text"),
}


@dataclass(frozen=True)
class LoadReport:
    """What one ingest did.

    ``nulls_per_column`` maps a catalog column to the number of values turned
    to NULL by reason (``masked``, ``tnull``, ``empty``, ``nan``, ``inf``,
    ``sentinel``), over the rows that passed the per-row checks (with
    ``on_invalid="skip"``, rows later left out as duplicate ids still count);
    ``notes`` says what else the user should know (generated ids,
    no re-clustering after an append, widened CSV columns, reader warnings).
    """

    catalog: str
    load_id: int
    mode: str
    file_name: str
    file_sha256: str
    rows_accepted: int
    rows_rejected: int
    nulls_per_column: dict[str, dict[str, int]]
    seconds: float
    file_format: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def rows_per_second(self) -> float:
        """Rows accepted per second of wall time."""
        return self.rows_accepted / self.seconds if self.seconds > 0 else 0.0


def ingest_file(
    path: str | Path,
    catalog: str,
    *,
    id_column: str | None = None,
    ra_column: str | None = None,
    dec_column: str | None = None,
    mode: Mode = "create",
    null_values: Sequence[float] | None = None,
    on_invalid: OnInvalid = "fail",
    description: str | None = None,
    positions: bool = True,
    url: str | None = None,
    progress: bool = False,
    sort_memory: int = SORT_MEMORY,
) -> LoadReport:
    """Load a FITS, VOTable, CSV or ECSV file into catalog ``catalog``, atomically.

    ``mode`` is ``create`` (the catalog must not exist), ``append`` (add rows
    to it; ids must be new) or ``replace`` (swap its content, keeping its load
    history). Id, RA and Dec columns are detected when not named; without an id
    column ids are the file's row numbers. With ``positions=False`` the catalog
    has no sky positions (no ``ra``/``dec``, no Q3C index, clustered on
    ``object_id``; naming RA or Dec is an error), and an append must match the
    catalog's kind. In float columns NaN, infinities and ``null_values``
    (default -9999, 99, -99; ``[]`` for none) become NULL; masked, TNULL and
    empty cells become NULL in every column. Invalid ids or coordinates fail
    the load, or with ``on_invalid="skip"`` are left out and recorded in
    ``skyclass.ingest_reject``. Up to ``sort_memory`` bytes of prepared rows are
    sorted in memory and written in the catalog's physical order; a bigger file
    is streamed and clustered by ``CLUSTER`` (see the module docstring). Raises
    :class:`IngestError` (file, column and row named) and leaves the database
    unchanged on any problem.
    """
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    check_name(catalog)
    if not isinstance(positions, bool):
        raise IngestError(f"positions must be True or False, not {positions!r}")
    if mode not in ("create", "append", "replace"):
        raise IngestError(f"mode must be create, append or replace, not {mode!r}")
    if on_invalid not in ("fail", "skip"):
        raise IngestError(f"on_invalid must be fail or skip, not {on_invalid!r}")
    file = Path(path)
    if not file.is_file():
        raise IngestError("no such file", path=str(path))
    size = file.stat().st_size
    if size == 0:
        raise IngestError("the file is empty (0 bytes)", path=str(path))
    fmt = detect_format(file)
    sentinels = DEFAULT_NULL_VALUES if null_values is None else tuple(map(float, null_values))

    # The checksum is computed while the file is loaded: hashlib releases the GIL.
    with ThreadPoolExecutor(1) as hasher, open_source(file, fmt) as source:
        digest = hasher.submit(_sha256, file)
        plan = plan_table(
            source,
            id_column=id_column,
            ra_column=ra_column,
            dec_column=dec_column,
            positions=positions,
        )
        if source.n_rows == 0:
            raise source.error("the file holds no data rows")
        job = _Load(
            source=source,
            plan=plan,
            catalog=catalog,
            mode=mode,
            skip_invalid=on_invalid == "skip",
            sentinels=sentinels,
            description=description,
            progress=progress,
            sort_memory=sort_memory,
        )
        try:
            with connect(url) as conn, conn.transaction():
                load_id = job.run(conn, size=size, digest=digest, started_at=started_at)
        except psycopg.errors.QueryCanceled as exc:
            raise IngestError(f"the load was cancelled ({exc})", path=str(path)) from None
        except psycopg.errors.DataError as exc:
            raise IngestError(f"PostgreSQL refused a value: {exc}", path=str(path)) from None
        except psycopg.Error as exc:
            # Permissions, lost connections, full disks: nothing was loaded.
            raise DatabaseError(
                f"the database refused the load of {path} ({type(exc).__name__}: {exc}); "
                "nothing was changed"
            ) from exc
    assert job.preparer is not None
    return LoadReport(
        catalog=catalog,
        load_id=load_id,
        mode=mode,
        file_name=str(file.resolve()),
        file_sha256=digest.result(),
        rows_accepted=job.rows_accepted,
        rows_rejected=len(job.rejects),
        nulls_per_column=job.preparer.null_counts,
        seconds=time.perf_counter() - clock,
        file_format=fmt,
        notes=tuple(job.notes),
    )


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def object_name(base: str, suffix: str) -> str:
    """``base + suffix`` as a PostgreSQL name: shortened with a hash beyond 63 bytes."""
    name = base + suffix
    if len(name.encode()) <= MAX_NAME:
        return name
    tag = hashlib.sha1(base.encode()).hexdigest()[:8]
    return f"{base[: MAX_NAME - len(suffix) - 9]}_{tag}{suffix}"


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


class _Load:
    """One ingest inside its transaction (see the module docstring)."""

    def __init__(
        self,
        *,
        source: Source,
        plan: TablePlan,
        catalog: str,
        mode: Mode,
        skip_invalid: bool,
        sentinels: Sequence[float],
        description: str | None,
        progress: bool,
        sort_memory: int = SORT_MEMORY,
    ) -> None:
        self.source = source
        self.plan = plan
        self.catalog = catalog
        self.mode = mode
        self.skip_invalid = skip_invalid
        self.sentinels = list(sentinels)
        self.description = description
        self.progress = progress
        self.notes: list[str] = list(plan.notes)
        self.rejects: list[Reject] = []
        self.rows_accepted = 0
        self.rows_copied = 0  # as PostgreSQL counted them (COPY's command tags)
        self.preparer: ChunkPreparer | None = None
        self.q3c_schema = "public"
        self.sort_memory = sort_memory
        # Set by _copy: whether the rows were sent in the catalog's physical order, and
        # the order they were sent in (indices of accepted rows; None: file order).
        self.presorted = False
        self.sent_order: npt.NDArray[np.intp] | None = None
        # How the table got its physical order, recorded in catalog_load.options.
        self.physical_order = ""

    # -- the whole load --------------------------------------------------------------
    def run(
        self,
        conn: psycopg.Connection[Any],
        *,
        size: int,
        digest: Future[str],
        started_at: datetime,
    ) -> int:
        lock_catalog(conn, self.catalog)
        if self.plan.positions:
            self.q3c_schema = self._q3c_schema(conn)
        existing = conn.execute(
            "SELECT catalog_id, id_column, table_name, description, ra_column, dec_column, "
            "kind FROM skyclass.catalog WHERE name = %s FOR UPDATE",
            (self.catalog,),
        ).fetchone()
        if existing is not None and existing[6] == "registered":
            raise IngestError(
                f"catalog {self.catalog!r} is a table registered in place: skyclass does not "
                "write to it; load the file into a new catalog (another --catalog)"
            )
        mode = self.mode
        if existing is None and mode == "append":
            raise CatalogNotFoundError(
                f"catalog {self.catalog!r} does not exist, so nothing can be appended to it; "
                "ingest without --append to create it"
            )
        if existing is not None and mode == "create":
            raise IngestError(
                f"catalog {self.catalog!r} already exists: use --append to add these rows "
                "or --replace to replace its content"
            )
        if existing is None and mode == "replace":
            self.notes.append(f"catalog {self.catalog!r} did not exist: created")
        if existing is not None:
            self._check_kind(mode, existing[4], existing[5])
        if existing is None and table_exists(conn, self.catalog):
            raise IngestError(
                f"table {CATALOG_SCHEMA}.{self.catalog} exists but is not a registered catalog; "
                "drop it or choose another catalog name"
            )

        if mode == "append":
            assert existing is not None
            catalog_id = int(existing[0])
            self._load_append(conn, catalog_id, existing)
        else:
            catalog_id = self._load_new_table(conn, existing)
        load_id = self._record_load(conn, catalog_id, size, digest.result(), started_at)
        self._record_rejects(conn, load_id)
        for note in self.source.notes:
            self.notes.append(note)
        return load_id

    def _check_kind(self, mode: Mode, ra_column: str | None, dec_column: str | None) -> None:
        """Refuse an append that mixes rows with and without sky positions; note a kind change."""
        had_positions = ra_column is not None
        if had_positions == self.plan.positions:
            return
        if mode == "append" and had_positions:
            raise self.source.error(
                f"catalog {self.catalog!r} has sky positions (RA from column {ra_column!r}, "
                f"Dec from {dec_column!r}), so rows without them cannot be appended to it; "
                "append without --no-positions, or use --replace to reload the catalog "
                "without positions"
            )
        if mode == "append":
            raise self.source.error(
                f"catalog {self.catalog!r} has no sky positions (it was loaded with "
                "--no-positions), so rows with RA and Dec cannot be appended to it; append "
                "with --no-positions, or use --replace to reload the catalog with positions"
            )
        self.notes.append(
            f"catalog {self.catalog!r} had sky positions and now has none"
            if had_positions
            else f"catalog {self.catalog!r} had no sky positions and now has them"
        )

    @property
    def _ra_source(self) -> str | None:
        return self.plan.ra.source if self.plan.ra is not None else None

    @property
    def _dec_source(self) -> str | None:
        return self.plan.dec.source if self.plan.dec is not None else None

    @staticmethod
    def _q3c_schema(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
            "WHERE e.extname = 'q3c'"
        ).fetchone()
        if row is None:
            raise IngestError(
                "the q3c extension is not installed in this database: run `skyclass db migrate`"
            )
        return str(row[0])

    # -- create and replace ---------------------------------------------------------------
    def _load_new_table(
        self, conn: psycopg.Connection[Any], existing: tuple[Any, ...] | None
    ) -> int:
        replacing = existing is not None
        # While building, a replacement needs names that clash with nothing: upper case
        # never appears in catalog names.
        table = object_name(f"_Replace_{self.catalog}", "") if replacing else self.catalog
        pkey = object_name(f"_{table}", "_pkey")
        q3c = object_name(f"_{table}", "_q3c")
        target = _ident(CATALOG_SCHEMA, table)
        self._create_table(conn, target, temporary=False)
        # Generated ids without positions: file order is already the physical order.
        file_order_is_physical = self.plan.generated_ids and not self.plan.positions
        self._copy(conn, target, presort=not file_order_is_physical)
        self._primary_key(conn, target, pkey)
        cluster_index = pkey
        if self.plan.positions:
            cluster_index = q3c
            conn.execute(
                sql.SQL("CREATE INDEX {} ON {} ({}(ra, dec))").format(
                    _ident(q3c), target, _ident(self.q3c_schema, "q3c_ang2ipix")
                )
            )
        if self.presorted or file_order_is_physical:
            # The rows are in index order already: record the clustering index (for a
            # later CLUSTER) without rewriting the table.
            conn.execute(
                sql.SQL("ALTER TABLE {} CLUSTER ON {}").format(target, _ident(cluster_index))
            )
            self.physical_order = "sorted before COPY" if self.presorted else "file order"
        else:
            conn.execute(sql.SQL("CLUSTER {} USING {}").format(target, _ident(cluster_index)))
            self.physical_order = "CLUSTER"
        conn.execute(sql.SQL("ANALYZE {}").format(target))
        self._comments(conn, target)
        if replacing:
            assert existing is not None
            drop_table(conn, CATALOG_SCHEMA, self.catalog, what=f"catalog {self.catalog!r}")
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(target, _ident(self.catalog))
            )
            renames = [(pkey, "_pkey"), (q3c, "_q3c")] if self.plan.positions else [(pkey, "_pkey")]
            for old, suffix in renames:
                conn.execute(
                    sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                        _ident(CATALOG_SCHEMA, old), _ident(object_name(f"_{self.catalog}", suffix))
                    )
                )
            catalog_id = int(existing[0])
            conn.execute(
                "UPDATE skyclass.catalog SET table_name = %s, id_column = %s, ra_column = %s, "
                "dec_column = %s, description = coalesce(%s, description) WHERE catalog_id = %s",
                (
                    self.catalog,
                    self.plan.id.source,
                    self._ra_source,
                    self._dec_source,
                    self.description,
                    catalog_id,
                ),
            )
            conn.execute("DELETE FROM skyclass.catalog_column WHERE catalog_id = %s", (catalog_id,))
        else:
            row = conn.execute(
                "INSERT INTO skyclass.catalog (name, schema_name, table_name, id_column, "
                "ra_column, dec_column, description) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "RETURNING catalog_id",
                (
                    self.catalog,
                    CATALOG_SCHEMA,
                    self.catalog,
                    self.plan.id.source,
                    self._ra_source,
                    self._dec_source,
                    self.description,
                ),
            ).fetchone()
            assert row is not None
            catalog_id = int(row[0])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO skyclass.catalog_column (catalog_id, column_name, position, "
                "source_name, pg_type, unit, ucd, description) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        catalog_id,
                        col.name,
                        position,
                        col.source if col.source is not None else "(generated)",
                        col.pgtype.sql,
                        col.unit,
                        col.ucd,
                        col.description,
                    )
                    for position, col in enumerate(self.plan.columns, start=1)
                ],
            )
        return catalog_id

    def _create_table(
        self, conn: psycopg.Connection[Any], target: sql.Composable, *, temporary: bool
    ) -> None:
        columns: list[sql.Composable] = [
            sql.SQL("{} {}{}").format(
                _ident(col.name),
                sql.SQL(col.pgtype.sql),
                sql.SQL(" NOT NULL" if col.role != "data" else ""),
            )
            for col in self.plan.columns
        ]
        if temporary:
            conn.execute(
                sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(
                    target, sql.SQL(", ").join(columns)
                )
            )
            return
        if self.plan.positions:
            columns.append(
                sql.SQL(
                    "CONSTRAINT coordinates_valid "
                    "CHECK (ra >= 0 AND ra < 360 AND dec BETWEEN -90 AND 90)"
                )
            )
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(target, sql.SQL(", ").join(columns)))

    def _comments(self, conn: psycopg.Connection[Any], target: sql.Composable) -> None:
        description = self.description or f"catalog {self.catalog} loaded by skyclass"
        conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(target, sql.Literal(description)))
        for col in self.plan.columns:
            conn.execute(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    target, _ident(col.name), sql.Literal(col.comment())
                )
            )

    # -- streaming ---------------------------------------------------------------------------
    def _copy(
        self,
        conn: psycopg.Connection[Any],
        target: sql.Composable,
        id_offset: int = 0,
        *,
        presort: bool = False,
    ) -> None:
        """Send the file's rows to ``target``: sorted in physical order if ``presort`` and
        they fit in :attr:`sort_memory`, else in file order (sets :attr:`presorted`)."""
        preparer = ChunkPreparer(
            self.plan,
            self.source,
            null_values=self.sentinels,
            skip_invalid=self.skip_invalid,
            id_offset=id_offset,
        )
        self.preparer = preparer
        self.presorted = False
        self.sent_order = None
        self.rows_copied = 0
        columns = sql.SQL(", ").join(_ident(c.name) for c in self.plan.columns)
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, columns)
        bar = _progress_bar(self.progress, self.source.n_rows)
        try:
            prepared = self._prepared(preparer, iter(self.source.chunks()), bar)
            if presort:
                held, rest = self._hold(prepared)
                if rest is None:
                    self._send_sorted(conn, statement, held)
                else:
                    # Too big to sort here, or column types changed: stream in file order.
                    self._stream(conn, target, statement, itertools.chain(held, [rest], prepared))
            else:
                self._stream(conn, target, statement, prepared)
        finally:
            if bar is not None:
                bar.close()
        self.rejects = list(preparer.rejects)
        self.rows_accepted = preparer.rows_accepted
        self._check_counts(preparer)
        if self.rows_accepted == 0:
            if preparer.rows_read == 0:
                raise self.source.error("the file holds no data rows")
            raise self.source.error(
                f"all {preparer.rows_read} rows are invalid (see the first: row "
                f"{self.rejects[0].row}, {self.rejects[0].column}: {self.rejects[0].reason})"
            )

    def _check_counts(self, preparer: ChunkPreparer) -> None:
        """Refuse unless the rows read, prepared and copied agree (none lost or repeated)."""
        counted = self.source.n_rows
        if counted is not None and preparer.rows_read != counted:
            raise self.source.error(
                f"the reader counted {counted:,} data rows but {preparer.rows_read:,} were "
                "prepared; nothing was loaded (please report this with the file)"
            )
        if self.rows_copied != preparer.rows_accepted:
            raise self.source.error(
                f"PostgreSQL stored {self.rows_copied:,} rows of the {preparer.rows_accepted:,} "
                "sent; nothing was loaded (please report this with the file)"
            )

    @staticmethod
    def _prepared(
        preparer: ChunkPreparer, chunks: Iterator[Any], bar: Any
    ) -> Iterator[PreparedChunk]:
        for chunk in chunks:
            prepared = preparer.prepare(chunk)
            if bar is not None:
                bar.update(chunk.length)
            yield prepared

    def _stream(
        self,
        conn: psycopg.Connection[Any],
        target: sql.Composable,
        statement: sql.Composed,
        prepared: Iterator[PreparedChunk],
    ) -> None:
        """COPY chunks in the order given; a column widening ends one COPY and starts another."""
        pending: PreparedChunk | None = None
        with conn.cursor() as cur:
            while True:
                with cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
                    copy.write(COPY_SIGNATURE)
                    first = [pending] if pending is not None else []
                    for chunk in itertools.chain(first, prepared):
                        if chunk.widenings:
                            pending = chunk
                            break
                        copy.write(encode_rows(chunk.fields, chunk.n_rows).data)
                    else:
                        pending = None
                    copy.write(COPY_TRAILER)
                self.rows_copied += max(0, cur.rowcount)
                if pending is None:
                    return
                for change in pending.widenings:
                    self._widen(conn, target, change.column, change.old, change.new)
                pending.widenings = []

    def _hold(
        self, prepared: Iterator[PreparedChunk]
    ) -> tuple[list[PreparedChunk], PreparedChunk | None]:
        """Keep chunks in memory while they fit :attr:`sort_memory` and keep their types.

        Returns the chunks held and ``None`` when the whole file was held, or the
        chunks held so far and the first chunk that did not fit (the caller
        streams the rest); each held chunk gets its sort keys in ``sort_key``.
        """
        held: list[PreparedChunk] = []
        rows = 0
        widths = [0] * len(self.plan.columns)
        key_of = self._sort_key()
        for chunk in prepared:
            if chunk.widenings:
                return held, chunk
            for i, f in enumerate(chunk.fields):
                widths[i] = max(widths[i], _row_bytes(f))
            rows += chunk.n_rows
            # Per row: the values (padded to the widest text so far), the sort key and
            # the permutation.
            if rows * (sum(widths) + 16) > self.sort_memory:
                return held, chunk
            chunk.sort_key = key_of(chunk)
            held.append(chunk)
        return held, None

    def _sort_key(self) -> Callable[[PreparedChunk], npt.NDArray[np.int64]]:
        """The physical order of a chunk's rows: Q3C pixel, or ``object_id`` without positions."""
        names = [c.name for c in self.plan.columns]
        if self.plan.positions:
            ra, dec = names.index("ra"), names.index("dec")
            return lambda chunk: ang2ipix(chunk.fields[ra].data, chunk.fields[dec].data)
        ident = names.index("object_id")
        return lambda chunk: np.asarray(chunk.fields[ident].data, dtype=np.int64)

    def _send_sorted(
        self,
        conn: psycopg.Connection[Any],
        statement: sql.Composed,
        held: list[PreparedChunk],
    ) -> None:
        """COPY the held rows in sort-key order (ties in file order)."""
        if not held:
            return  # no data rows: the caller says so
        keys = np.concatenate([c.sort_key for c in held if c.sort_key is not None])
        order = np.argsort(keys)  # SIMD quicksort: a third of the time of a stable sort
        ordered = keys[order]
        if (ordered[1:] == ordered[:-1]).any():
            order = np.argsort(keys, kind="stable")  # equal keys: keep them in file order
        del keys, ordered
        n = len(order)
        fields: list[Field] = []
        for i in range(len(self.plan.columns)):
            fields.append(_concat_fields([c.fields[i] for c in held]))
            for c in held:
                c.fields[i] = _EMPTY_FIELD  # free each column once it is joined
        row_bytes = max(1, sum(_row_bytes(f) for f in fields) + 4 * len(fields) + 2)
        block = max(1, _SORTED_BLOCK_BYTES // row_bytes)
        with conn.cursor() as cur:
            with cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
                copy.write(COPY_SIGNATURE)
                for start in range(0, n, block):
                    rows = order[start : start + block]
                    copy.write(encode_rows([f.take(rows) for f in fields], len(rows)).data)
                copy.write(COPY_TRAILER)
            self.rows_copied += max(0, cur.rowcount)
        self.presorted = True
        self.sent_order = order

    def _widen(
        self,
        conn: psycopg.Connection[Any],
        target: sql.Composable,
        column: ColumnPlan,
        old: PgType,
        new: PgType,
    ) -> None:
        conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
                target, _ident(column.name), sql.SQL(new.sql), _ident(column.name), sql.SQL(new.sql)
            )
        )
        self.notes.append(
            f"column {column.name}: {old.sql} in the first rows, {new.sql} later; "
            f"stored as {new.sql}"
        )

    # -- ids -------------------------------------------------------------------------------
    def _file_rows(self, ordinals: Sequence[int]) -> list[int]:
        """File row numbers of the 1-based ordinals of accepted rows (skipped rows removed)."""
        if not self.rejects:
            return [int(o) for o in ordinals]
        rejected = np.array(sorted(r.row for r in self.rejects), dtype=np.int64)
        accepted_before = rejected - np.arange(1, len(rejected) + 1)
        ords = np.asarray(ordinals, dtype=np.int64)
        return [int(v) for v in ords + np.searchsorted(accepted_before, ords, side="left")]

    def _primary_key(
        self, conn: psycopg.Connection[Any], target: sql.Composable, name: str
    ) -> None:
        add = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (object_id)").format(
            target, _ident(name)
        )
        try:
            with conn.transaction():
                conn.execute(add)
            return
        except psycopg.errors.UniqueViolation:
            pass
        self._handle_duplicates(conn, target)
        conn.execute(add)

    def _handle_duplicates(self, conn: psycopg.Connection[Any], target: sql.Composable) -> None:
        """Explain (fail) or drop and record (skip) rows whose id repeats an earlier row's.

        "Earlier" is file order, which is not the physical order of sorted rows:
        every row of a repeated id is fetched with its physical position, mapped
        to its file row, and all but the first in the file are the duplicates.
        """
        query = sql.SQL(
            "SELECT tid::text, object_id, ord FROM (SELECT tid, object_id, ord, "
            "count(*) OVER (PARTITION BY object_id) AS n FROM (SELECT ctid AS tid, object_id, "
            "row_number() OVER (ORDER BY ctid) AS ord FROM {}) o) d WHERE n > 1"
        ).format(target)
        rows = conn.execute(query).fetchall()
        if not rows:
            return
        file_rows = self._file_rows(self._accepted_ordinals([r[2] for r in rows]))
        first: dict[int, int] = {}
        for (_, object_id, _), row in zip(rows, file_rows, strict=True):
            first[object_id] = min(first.get(object_id, row), row)
        repeats = sorted(
            (row, tid, object_id)
            for (tid, object_id, _), row in zip(rows, file_rows, strict=True)
            if row != first[object_id]
        )
        column = self.plan.id.source or "object_id"
        if not self.skip_invalid:
            row, _, object_id = repeats[0]
            raise self.source.error(
                f"duplicate id {object_id}: rows {first[object_id]} and {row} have the same id",
                column=column,
                row=row,
            )
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE ctid = ANY(%s::tid[])").format(target),
            ([tid for _, tid, _ in repeats],),
        )
        self._skip(
            [
                Reject(row, column, f"duplicate id (first in row {first[oid]})", str(oid))
                for row, _, oid in repeats
            ]
        )

    def _accepted_ordinals(self, physical: Sequence[int]) -> list[int]:
        """1-based ordinals among the accepted rows of 1-based physical positions (ctid order)."""
        if self.sent_order is None:
            return [int(o) for o in physical]
        positions = np.asarray(physical, dtype=np.int64) - 1
        return [int(v) + 1 for v in self.sent_order[positions]]

    def _skip(self, rejects: list[Reject]) -> None:
        self.rejects.extend(rejects)
        self.rows_accepted -= len(rejects)
        if self.rows_accepted == 0:
            raise self.source.error(f"all rows are invalid (the last: {rejects[-1].reason})")

    # -- append ------------------------------------------------------------------------------
    def _load_append(
        self, conn: psycopg.Connection[Any], catalog_id: int, existing: tuple[Any, ...]
    ) -> None:
        target = _ident(CATALOG_SCHEMA, str(existing[2]))
        catalog_types = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT column_name, pg_type FROM skyclass.catalog_column WHERE catalog_id = %s",
                (catalog_id,),
            )
        }
        generated = existing[1] is None
        if generated and not self.plan.generated_ids:
            raise self.source.error(
                f"catalog {self.catalog!r} has generated ids but this file has an id column "
                f"({self.plan.id.source!r}); load it into a new catalog or with --replace"
            )
        if not generated and self.plan.generated_ids:
            raise self.source.error(
                f"catalog {self.catalog!r} takes its ids from column {existing[1]!r}, which this "
                "file lacks; name the id column with --id"
            )
        self._check_append_columns(catalog_types)
        id_offset = 0
        if generated:
            row = conn.execute(
                sql.SQL("SELECT coalesce(max(object_id), 0) FROM {}").format(target)
            ).fetchone()
            id_offset = int(row[0]) if row else 0
            self.notes.append(
                f"ids generated from {id_offset + 1} on (after the catalog's largest)"
            )
        stage = _ident("skyclass_ingest_stage")
        self._create_table(conn, stage, temporary=True)
        self._copy(conn, stage, id_offset)
        self._check_append_columns(catalog_types)  # CSV types may have changed while reading
        column = self.plan.id.source or "object_id"
        if not generated:
            self._handle_duplicates(conn, stage)
            existing_ids = sql.SQL(
                "SELECT tid::text, object_id, ord FROM (SELECT ctid AS tid, object_id, "
                "row_number() OVER (ORDER BY ctid) AS ord FROM {}) s WHERE EXISTS "
                "(SELECT 1 FROM {} c WHERE c.object_id = s.object_id) ORDER BY ord"
            ).format(stage, target)
            if not self.skip_invalid:
                existing_ids = sql.SQL("{} LIMIT 1").format(existing_ids)
            clashes = conn.execute(existing_ids).fetchall()
            if clashes and not self.skip_invalid:
                (row,) = self._file_rows([clashes[0][2]])
                raise self.source.error(
                    f"id {clashes[0][1]} is already in catalog {self.catalog!r}; "
                    "--append only adds new ids (use --replace to reload the catalog)",
                    column=column,
                    row=row,
                )
            if clashes:
                rows = self._file_rows([c[2] for c in clashes])
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE ctid = ANY(%s::tid[])").format(stage),
                    ([c[0] for c in clashes],),
                )
                self._skip(
                    [
                        Reject(row, column, "id already in the catalog", str(c[1]))
                        for c, row in zip(clashes, rows, strict=True)
                    ]
                )
        names = [c.name for c in self.plan.columns]
        selects = [
            sql.SQL("CAST({} AS {})").format(_ident(c.name), sql.SQL(catalog_types[c.name]))
            for c in self.plan.columns
        ]
        conn.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY {}").format(
                target,
                sql.SQL(", ").join(_ident(n) for n in names),
                sql.SQL(", ").join(selects),
                stage,
                sql.SQL("{}(ra, dec)").format(_ident(self.q3c_schema, "q3c_ang2ipix"))
                if self.plan.positions
                else _ident("object_id"),
            )
        )
        # The new rows follow the old ones, in index order among themselves.
        self.physical_order = "appended in index order"
        conn.execute(sql.SQL("ANALYZE {}").format(target))
        index = "Q3C index" if self.plan.positions else "primary key"
        self.notes.append(
            f"append: the table was not re-clustered on its {index}; run "
            f"CLUSTER {CATALOG_SCHEMA}.{self.catalog} (or load with --replace) when convenient"
        )
        if self.description:
            conn.execute(
                "UPDATE skyclass.catalog SET description = %s WHERE catalog_id = %s",
                (self.description, catalog_id),
            )

    def _check_append_columns(self, catalog_types: dict[str, str]) -> None:
        file_columns = {c.name: c for c in self.plan.columns}
        missing = sorted(set(catalog_types) - set(file_columns))
        extra = sorted(set(file_columns) - set(catalog_types))
        problems = []
        if missing:
            problems.append(f"columns of the catalog missing from the file: {', '.join(missing)}")
        if extra:
            problems.append(f"columns not in the catalog: {', '.join(extra)}")
        for name, col in file_columns.items():
            want = catalog_types.get(name)
            have = col.pgtype.sql
            if want is None or want == have or (have, want) in _SAFE_CASTS:
                continue
            if col.pgtype.is_array and type_from_sql(want) == col.pgtype:
                continue
            problems.append(f"column {name} is {have} in the file but {want} in the catalog")
        if problems:
            raise self.source.error(
                f"this file does not fit catalog {self.catalog!r}: {'; '.join(problems)} "
                "(use --replace to reload the catalog with this file's columns)"
            )

    # -- registry ------------------------------------------------------------------------------
    def _record_load(
        self,
        conn: psycopg.Connection[Any],
        catalog_id: int,
        size: int,
        digest: str,
        started_at: datetime,
    ) -> int:
        import astropy

        assert self.preparer is not None
        options = {
            "id_column": self.plan.id.source,
            "ra_column": self._ra_source,
            "dec_column": self._dec_source,
            "positions": self.plan.positions,
            "generated_ids": self.plan.generated_ids,
            "on_invalid": "skip" if self.skip_invalid else "fail",
            "rows_read": self.preparer.rows_read,
            "physical_order": self.physical_order,
            "notes": self.notes + self.source.notes,
        }
        row = conn.execute(
            "INSERT INTO skyclass.catalog_load (catalog_id, mode, file_name, file_size, "
            "file_sha256, file_format, rows_accepted, rows_rejected, nulls_per_column, "
            "null_values, options, astropy_version, skyclass_version, os_user, started_at, "
            "finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "clock_timestamp()) RETURNING load_id",
            (
                catalog_id,
                self.mode,
                str(self.source.path.resolve()),
                size,
                digest,
                self.source.format,
                self.rows_accepted,
                len(self.rejects),
                json.dumps(self.preparer.null_counts),
                json.dumps(self.sentinels),
                json.dumps(options),
                astropy.__version__,
                __version__,
                _os_user(),
                started_at,
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _record_rejects(self, conn: psycopg.Connection[Any], load_id: int) -> None:
        if not self.rejects:
            return
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY skyclass.ingest_reject (load_id, row_number, column_name, reason, value) "
                "FROM STDIN"
            ) as copy,
        ):
            for reject in sorted(self.rejects, key=lambda r: r.row):
                copy.write_row((load_id, reject.row, reject.column, reject.reason, reject.value))


_EMPTY_FIELD = Field(np.zeros(0, dtype=np.uint8))


def _row_bytes(f: Field) -> int:
    """Bytes per row of a field in memory (values, lengths, NULL flags)."""
    n = len(f.data)
    width = f.data.nbytes // n if n else f.data.dtype.itemsize
    if f.lengths is not None:
        width += 4
    if f.nulls is not None:
        width += 1
    return width


def _concat_fields(fields: Sequence[Field]) -> Field:
    """One field of the rows of ``fields`` in turn (variable-width values padded to the widest)."""
    nulls = None
    if any(f.nulls is not None for f in fields):
        nulls = np.concatenate(
            [f.nulls if f.nulls is not None else np.zeros(len(f.data), dtype=bool) for f in fields]
        )
    n = sum(len(f.data) for f in fields)
    if all(f.lengths is None for f in fields):
        # Not np.concatenate: it would turn the big-endian wire dtype into native order.
        data = np.empty(n, dtype=fields[0].data.dtype)
        start = 0
        for f in fields:
            data[start : start + len(f.data)] = f.data
            start += len(f.data)
        return Field(data, None, nulls)
    width = max(f.data.shape[1] for f in fields)
    data = np.zeros((n, width), dtype=np.uint8)
    start = 0
    for f in fields:
        data[start : start + len(f.data), : f.data.shape[1]] = f.data
        start += len(f.data)
    lengths = np.concatenate([f.lengths for f in fields if f.lengths is not None])
    return Field(data, lengths, nulls)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _progress_bar(enabled: bool, total: int | None) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=" rows", unit_scale=True, file=sys.stderr, desc="ingest")
