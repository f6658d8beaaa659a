"""The OOD job: OOD scores of every object of a catalog for a model version, in the database.

A job is a (model version, catalog) pair; each run of it scores the
catalog's build of the version's feature definition with the version's
compiled OOD forest (``skyclass.predict_raw`` of the anomaly version) and
writes ``skyclass.ood_score`` rows: raw score, percentile among held-out
training scores (``skyclass.score_percentile``), per-feature range flags
(``skyclass.out_of_range``) and ``in_domain``.

Durable like a scoring job (docs/reliability.md), on a smaller scale:

- a run plans object-id chunks of about ``chunk_size`` rows
  (``skyclass.ood_chunk``) in the transaction that creates it;
- each chunk replaces the scores of its id range and marks itself done in
  one transaction, so a killed job resumes where it stopped, without gaps
  or duplicates (the next start of the same job resumes the newest
  unfinished run, ``attempts + 1``);
- one run of a job at a time: a session-level advisory lock on the pair,
  released when the session ends (also when it is killed);
- at the end, scores of objects no longer in the feature table (rows of
  earlier runs) are deleted and the run is ``done``.

Readers see old and new scores side by side while a rerun proceeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from skyclass.domain.errors import DomainError
from skyclass.domain.ood_store import OodModel, ood_model_of
from skyclass.domain.source import load_catalog_info, resolve_version
from skyclass.train.snapshot import load_feature_set_info

DEFAULT_CHUNK_SIZE = 100_000


@dataclass(frozen=True)
class OodRunResult:
    """One run of the OOD job: its id, outcome and counts."""

    ood_run_id: int
    model_version_id: int
    catalog: str
    status: str
    chunks_total: int
    chunks_done: int
    rows_scored: int
    attempts: int
    seconds: float
    in_domain_fraction: float | None


class OodJobInterrupted(Exception):
    """Raised by the test hook ``stop_after_chunks``: the run stays resumable."""


def _check_extension(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT to_regprocedure('skyclass.predict_raw(bigint,real[])') IS NOT NULL"
    ).fetchone()
    if row is None or not row[0]:
        raise DomainError(
            "the skyclass extension 0.3.0 is not installed in this database: OOD scores are "
            "computed by it (run `make extension` on the server, then `skyclass db migrate` "
            "or ALTER EXTENSION skyclass UPDATE as a superuser)"
        )


def _lock_key(model_version_id: int, catalog_id: int) -> str:
    return f"skyclass.ood:{model_version_id}:{catalog_id}"


def _plan(
    conn: psycopg.Connection[Any],
    model: OodModel,
    catalog_id: int,
    table: sql.Composable,
    table_text: str,
    chunk_size: int,
    trigger: str,
) -> int:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO skyclass.ood_run (model_version_id, catalog_id, feature_table, "
            "chunk_size, trigger) VALUES (%s, %s, %s, %s, %s) RETURNING ood_run_id",
            (model.model_version_id, catalog_id, table_text, chunk_size, trigger),
        ).fetchone()
        assert row is not None
        run_id = int(row[0])
        conn.execute(
            sql.SQL(
                "INSERT INTO skyclass.ood_chunk (ood_run_id, chunk_no, first_object_id, "
                "last_object_id) "
                "SELECT %s, k, min(object_id), max(object_id) FROM ("
                "  SELECT object_id, ((row_number() OVER (ORDER BY object_id) - 1) / %s)::int AS k"
                "    FROM {}) AS n GROUP BY k"
            ).format(table),
            (run_id, chunk_size),
        )
        conn.execute(
            "UPDATE skyclass.ood_run SET chunks_total = (SELECT count(*) FROM skyclass.ood_chunk "
            "WHERE ood_run_id = %s) WHERE ood_run_id = %s",
            (run_id, run_id),
        )
    return run_id


def _chunk_sql(table: sql.Composable) -> sql.Composed:
    # OFFSET 0 keeps each expression evaluated once per row.
    return sql.SQL(
        """
        INSERT INTO skyclass.ood_score (model_version_id, catalog_id, object_id, raw_score,
                                        percentile, out_of_range, in_domain, ood_run_id)
        SELECT %(v)s, %(c)s, s.object_id, s.raw, s.p, s.oor,
               s.p < %(threshold)s AND NOT (true = ANY (s.oor)), %(run)s
          FROM (SELECT r.object_id, r.raw, r.oor,
                       skyclass.score_percentile(r.raw, %(reference)s::float8[]) AS p
                  FROM (SELECT f.object_id,
                               (skyclass.predict_raw(%(ood)s,
                                    skyclass.fill_missing(f.x, %(fill)s::real[])))[1] AS raw,
                               skyclass.out_of_range(f.x, %(low)s::real[], %(high)s::real[])
                                   AS oor
                          FROM {} AS f
                         WHERE f.object_id BETWEEN %(first)s AND %(last)s
                        OFFSET 0) AS r
                OFFSET 0) AS s
        """
    ).format(table)


def run_ood_job(
    conn: psycopg.Connection[Any],
    ref: str | int,
    catalog: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    trigger: str = "manual",
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
) -> OodRunResult:
    """Score ``catalog`` with the OOD forest of model version ``ref``; resume or start a run.

    ``conn`` must be in autocommit mode (each chunk commits on its own).
    ``progress(chunks_done, chunks_total)`` is called after each chunk.
    ``stop_after_chunks`` (tests) raises :class:`OodJobInterrupted` after
    that many chunks of this call, leaving the run resumable.
    """
    if not conn.autocommit:
        raise DomainError("the OOD job commits per chunk: give it an autocommit connection")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DomainError(f"chunk_size must be a positive integer, not {chunk_size!r}")
    t0 = time.perf_counter()
    version = resolve_version(conn, ref)
    info = load_catalog_info(conn, catalog)
    model = ood_model_of(conn, version.model_version_id)
    if model is None:
        raise DomainError(
            f"{version.label} has no OOD forest: run `skyclass ood fit {version.label}` "
            "(or `skyclass domain`)"
        )
    if not model.compiled:
        raise DomainError(
            f"the OOD forest of {version.label} (model version {model.ood_version_id}) is not "
            f"compiled: run `skyclass compile {model.ood_version_id}` as a superuser"
        )
    _check_extension(conn)
    try:
        row = conn.execute(
            "SELECT skyclass.scoring_feature_set(%s, %s)",
            (version.model_version_id, info.catalog_id),
        ).fetchone()
    except psycopg.errors.UndefinedObject as exc:
        hint = exc.diag.message_hint or "build it with `skyclass features build`"
        raise DomainError(
            f"{version.label} on catalog {info.name!r}: {exc.diag.message_primary}; {hint}"
        ) from None
    assert row is not None
    features = load_feature_set_info(conn, int(row[0]))
    table_text = f"features.{features.table_name}"

    key = _lock_key(version.model_version_id, info.catalog_id)
    got = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
    ).fetchone()
    if got is None or not got[0]:
        raise DomainError(
            f"the OOD job of {version.label} on catalog {info.name!r} is running in another "
            "session; wait for it (skyclass.ood_run shows its progress)"
        )
    try:
        return _run_locked(
            conn, model, version.model_version_id, info.catalog_id, info.name, features.table,
            table_text, chunk_size, trigger, progress, stop_after_chunks, t0,
        )
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def _run_locked(
    conn: psycopg.Connection[Any],
    model: OodModel,
    model_version_id: int,
    catalog_id: int,
    catalog_name: str,
    table: sql.Composable,
    table_text: str,
    chunk_size: int,
    trigger: str,
    progress: Callable[[int, int], None] | None,
    stop_after_chunks: int | None,
    t0: float,
) -> OodRunResult:
    row = conn.execute(
        "SELECT ood_run_id FROM skyclass.ood_run WHERE model_version_id = %s AND catalog_id = %s "
        "AND status IN ('running', 'failed') AND feature_table = %s "
        "ORDER BY ood_run_id DESC LIMIT 1",
        (model_version_id, catalog_id, table_text),
    ).fetchone()
    if row is not None:
        run_id = int(row[0])
        conn.execute(
            "UPDATE skyclass.ood_run SET attempts = attempts + 1, resumed_at = clock_timestamp(), "
            "status = 'running', error = NULL WHERE ood_run_id = %s",
            (run_id,),
        )
    else:
        run_id = _plan(conn, model, catalog_id, table, table_text, chunk_size, trigger)
    chunks = conn.execute(
        "SELECT chunk_no, first_object_id, last_object_id FROM skyclass.ood_chunk "
        "WHERE ood_run_id = %s AND done_at IS NULL ORDER BY chunk_no",
        (run_id,),
    ).fetchall()
    total_row = conn.execute(
        "SELECT chunks_total, chunks_done FROM skyclass.ood_run WHERE ood_run_id = %s", (run_id,)
    ).fetchone()
    assert total_row is not None
    total, done = int(total_row[0]), int(total_row[1])
    statement = _chunk_sql(table)
    params: dict[str, Any] = {
        "v": model_version_id,
        "c": catalog_id,
        "run": run_id,
        "ood": model.ood_version_id,
        "threshold": model.threshold,
        "reference": list(model.reference),
        "fill": list(model.fill),
        "low": list(model.low),
        "high": list(model.high),
    }
    try:
        for n, (chunk_no, first, last) in enumerate(chunks):
            if stop_after_chunks is not None and n >= stop_after_chunks:
                raise OodJobInterrupted(f"stopped after {n} chunks (run {run_id})")
            with conn.transaction():
                conn.execute(
                    "DELETE FROM skyclass.ood_score WHERE model_version_id = %s "
                    "AND catalog_id = %s AND object_id BETWEEN %s AND %s",
                    (model_version_id, catalog_id, first, last),
                )
                cur = conn.execute(statement, {**params, "first": first, "last": last})
                rows = cur.rowcount
                conn.execute(
                    "UPDATE skyclass.ood_chunk SET done_at = clock_timestamp(), rows_scored = %s "
                    "WHERE ood_run_id = %s AND chunk_no = %s",
                    (rows, run_id, chunk_no),
                )
                conn.execute(
                    "UPDATE skyclass.ood_run SET chunks_done = chunks_done + 1, "
                    "rows_scored = rows_scored + %s WHERE ood_run_id = %s",
                    (rows, run_id),
                )
            done += 1
            if progress is not None:
                progress(done, total)
        with conn.transaction():
            # Objects gone from the feature table since an earlier run.
            conn.execute(
                "DELETE FROM skyclass.ood_score WHERE model_version_id = %s AND catalog_id = %s "
                "AND ood_run_id <> %s",
                (model_version_id, catalog_id, run_id),
            )
            conn.execute(
                "UPDATE skyclass.ood_run SET status = 'done', finished_at = clock_timestamp() "
                "WHERE ood_run_id = %s",
                (run_id,),
            )
    except OodJobInterrupted:
        raise
    except psycopg.Error as exc:
        conn.execute(
            "UPDATE skyclass.ood_run SET status = 'failed', error = %s WHERE ood_run_id = %s",
            (str(exc).strip(), run_id),
        )
        raise DomainError(f"the OOD job failed (run {run_id}): {str(exc).strip()}") from exc
    final = conn.execute(
        "SELECT r.status, r.chunks_total, r.chunks_done, r.rows_scored, r.attempts, "
        "(SELECT avg(in_domain::int) FROM skyclass.ood_score AS s "
        "  WHERE s.model_version_id = r.model_version_id AND s.catalog_id = r.catalog_id) "
        "FROM skyclass.ood_run AS r WHERE r.ood_run_id = %s",
        (run_id,),
    ).fetchone()
    assert final is not None
    return OodRunResult(
        ood_run_id=run_id,
        model_version_id=model_version_id,
        catalog=catalog_name,
        status=str(final[0]),
        chunks_total=int(final[1]),
        chunks_done=int(final[2]),
        rows_scored=int(final[3]),
        attempts=int(final[4]),
        seconds=time.perf_counter() - t0,
        in_domain_fraction=None if final[5] is None else float(final[5]),
    )
