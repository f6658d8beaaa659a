"""The OOD job: OOD scores of every object of a catalog for a model version, in the database.

The engine is SQL (``skyclass.ood_start_run``, ``ood_score_chunk``,
``ood_finish_run``; ``CALL skyclass.refresh_ood`` runs them from psql or
pg_cron); this module drives the same functions with a progress bar.
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

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from skyclass.domain.errors import DomainError
from skyclass.domain.ood_store import ood_model_of
from skyclass.domain.source import load_catalog_info, resolve_version

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


def _score_in_sessions(
    conn: psycopg.Connection[Any],
    chunks: list[int],
    n_sessions: int,
    score: Callable[[psycopg.Connection[Any], list[int]], None],
) -> None:
    """Chunks dealt round-robin to ``n_sessions`` sessions (``conn`` and new ones)."""
    password = conn.info.password
    url = psycopg.conninfo.make_conninfo(
        conn.info.dsn, **({"password": password} if password else {})
    )
    extra = [psycopg.connect(url, autocommit=True) for _ in range(n_sessions - 1)]
    try:
        sessions = [conn, *extra]
        with ThreadPoolExecutor(max_workers=n_sessions) as pool:
            futures = [
                pool.submit(score, session, chunks[i::n_sessions])
                for i, session in enumerate(sessions)
            ]
            for future in futures:
                future.result()
    finally:
        for session in extra:
            session.close()


def _lock_key(model_version_id: int, catalog_id: int) -> str:
    return f"skyclass.ood:{model_version_id}:{catalog_id}"


def run_ood_job(
    conn: psycopg.Connection[Any],
    ref: str | int,
    catalog: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    trigger: str = "manual",
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
    workers: int = 1,
) -> OodRunResult:
    """Score ``catalog`` with the OOD forest of model version ``ref``; resume or start a run.

    ``conn`` must be in autocommit mode (each chunk commits on its own).
    ``workers`` sessions (``conn`` plus ``workers - 1`` new connections to
    the same database) score the chunks side by side.
    ``progress(chunks_done, chunks_total)`` is called after each chunk.
    ``stop_after_chunks`` (tests) raises :class:`OodJobInterrupted` after
    that many chunks of this call, leaving the run resumable.
    """
    if not conn.autocommit:
        raise DomainError("the OOD job commits per chunk: give it an autocommit connection")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DomainError(f"chunk_size must be a positive integer, not {chunk_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise DomainError(f"workers must be an integer from 1 to 64, not {workers!r}")
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
        conn.execute(
            "SELECT skyclass.scoring_feature_set(%s, %s)",
            (version.model_version_id, info.catalog_id),
        )
    except psycopg.errors.UndefinedObject as exc:
        hint = exc.diag.message_hint or "build it with `skyclass features build`"
        raise DomainError(
            f"{version.label} on catalog {info.name!r}: {exc.diag.message_primary}; {hint}"
        ) from None

    key = _lock_key(version.model_version_id, info.catalog_id)
    got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    if got is None or not got[0]:
        raise DomainError(
            f"the OOD job of {version.label} on catalog {info.name!r} is running in another "
            "session; wait for it (skyclass.ood_run shows its progress)"
        )
    try:
        return _run_locked(
            conn,
            version.model_version_id,
            info.catalog_id,
            info.name,
            chunk_size,
            trigger,
            progress,
            stop_after_chunks,
            t0,
            workers,
        )
    finally:
        conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def _run_locked(
    conn: psycopg.Connection[Any],
    model_version_id: int,
    catalog_id: int,
    catalog_name: str,
    chunk_size: int,
    trigger: str,
    progress: Callable[[int, int], None] | None,
    stop_after_chunks: int | None,
    t0: float,
    workers: int = 1,
) -> OodRunResult:
    row = conn.execute(
        "SELECT skyclass.ood_start_run(%s, %s, %s, %s)",
        (model_version_id, catalog_id, chunk_size, trigger),
    ).fetchone()
    assert row is not None
    run_id = int(row[0])
    chunks = [
        int(r[0])
        for r in conn.execute(
            "SELECT chunk_no FROM skyclass.ood_chunk WHERE ood_run_id = %s AND done_at IS NULL "
            "ORDER BY chunk_no",
            (run_id,),
        )
    ]
    total_row = conn.execute(
        "SELECT chunks_total, chunks_done FROM skyclass.ood_run WHERE ood_run_id = %s", (run_id,)
    ).fetchone()
    assert total_row is not None
    total, done = int(total_row[0]), int(total_row[1])
    if stop_after_chunks is not None:
        chunks = chunks[:stop_after_chunks] if stop_after_chunks < len(chunks) else chunks
        interrupted = len(chunks) < total - done
    else:
        interrupted = False
    lock = threading.Lock()

    def score(session: psycopg.Connection[Any], mine: list[int]) -> None:
        nonlocal done
        for chunk_no in mine:
            # One statement in autocommit: the chunk's rows and its done mark commit together.
            session.execute("SELECT skyclass.ood_score_chunk(%s, %s)", (run_id, chunk_no))
            with lock:
                done += 1
                if progress is not None:
                    progress(done, total)

    try:
        n_sessions = max(1, min(workers, len(chunks)))
        if n_sessions == 1:
            score(conn, chunks)
        else:
            _score_in_sessions(conn, chunks, n_sessions, score)
        if interrupted:
            raise OodJobInterrupted(f"stopped after {stop_after_chunks} chunks (run {run_id})")
        conn.execute("SELECT skyclass.ood_finish_run(%s)", (run_id,))
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
