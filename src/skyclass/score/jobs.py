"""Scoring jobs run from Python with several sessions (what ``skyclass score`` does).

The job is the one ``CALL skyclass.rescore(...)`` runs inside one session,
split over sessions so that every core works:

1. a coordinator session calls ``skyclass.start_scoring_run``: it takes the
   job's lease (a row of ``skyclass.scoring_lease`` naming this backend: one
   job per model version and catalog; a second start fails at once with
   "already running (run N, started ..., pid ...)"; only roles that may
   write the lease table can hold it), marks runs whose backend died as
   interrupted, and either
   resumes the last interrupted or failed run of the same mode (its finished
   chunks stay done) or plans a new run as chunks of contiguous object ids;
2. ``workers`` sessions claim chunks with ``FOR UPDATE SKIP LOCKED`` and score
   them, each chunk in one transaction with its completion mark: in the
   database (``CALL skyclass.score_chunks``, which uses ``skyclass.predict``)
   or, on servers without the extension, on the client
   (:mod:`skyclass.score.fallback`);
3. the coordinator calls ``skyclass.finish_scoring_run``, which swaps the new
   catalog partition in (a full re-score replaces the version's rows of that
   catalog in one transaction) and marks the run succeeded.

A job killed at any point (backend terminated, client killed, server
restarted) is resumed by starting it again: ``skyclass score`` with the
same arguments, ``CALL skyclass.rescore`` or the next scheduled run. Every
session of a job sets ``client_connection_check_interval``, so that when the
client dies its backends notice within a second and stop instead of scoring
on as orphans; a lost connection ends the job with one
:class:`ConnectionLostError` that says the run resumes when started again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any

import psycopg

from skyclass.db.connect import connect, database_url
from skyclass.errors import DatabaseError
from skyclass.score.errors import AlreadyRunningError, ConnectionLostError, ScoringError
from skyclass.score.fallback import ClientScorer, score_chunk_client
from skyclass.score.runs import RunInfo, get_run, run_plan

SCORERS = ("auto", "database", "client")
CONNECTION_CHECK_INTERVAL = "1s"
"""How often a job's backend checks, while it runs a statement, that its client is still there."""
ORPHAN_ROUNDS = 10
"""Extra rounds (0.5 s apart) for chunks that another session still held when the workers ended."""
ProgressCallback = Callable[[int, int, int], None]
"""Called with (chunks done, chunks in total, rows scored) while a job runs."""


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def has_extension(conn: psycopg.Connection[Any]) -> bool:
    """True when ``skyclass.predict`` exists in the database (the extension is created)."""
    row = conn.execute("SELECT to_regprocedure('skyclass.predict(bigint, real[])')").fetchone()
    return row is not None and row[0] is not None


def connection_lost(exc: BaseException, run_id: int | None) -> ConnectionLostError:
    """The one-line error of a job whose connection to the server broke (``exc``)."""
    reason = (str(exc).strip().splitlines() or ["connection closed"])[0]
    reason = reason.removeprefix("consuming input failed: ")
    job = "the job" if run_id is None else f"run {run_id}"
    return ConnectionLostError(
        f"the connection to the database was lost ({reason}); {job} stopped and resumes "
        "where it was when the same job is started again"
    )


def _job_session(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A connection of a job whose backend stops soon after its client is gone."""
    conn = connect(url, autocommit=autocommit)
    try:
        conn.execute(
            "SELECT set_config('client_connection_check_interval', %s, false)",
            (CONNECTION_CHECK_INTERVAL,),
        )
        if not autocommit:
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def is_connection_lost(exc: BaseException) -> bool:
    """True for the error of a session that ended: terminated backend, server stop, crash."""
    if isinstance(exc, DatabaseError):  # could not connect (again)
        return True
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith(("57P", "08"))
    )


def scoring_error(exc: psycopg.Error, what: str, run_id: int | None = None) -> ScoringError:
    """A :class:`ScoringError` carrying the server's message and hint of ``exc``.

    A session that ended gives :func:`connection_lost` instead.
    """
    if is_connection_lost(exc):
        return connection_lost(exc, run_id)
    diag = exc.diag
    message = diag.message_primary or str(exc).strip()
    if diag.message_hint:
        message += f" ({diag.message_hint})"
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return AlreadyRunningError(message)
    return ScoringError(f"{what}: {message}")


def _start(
    conn: psycopg.Connection[Any],
    target: str,
    catalog: str,
    *,
    only_new: bool,
    chunk_size: int,
    scorer: str,
    resume: bool,
    workers: int,
) -> int:
    try:
        row = conn.execute(
            "SELECT skyclass.start_scoring_run(%s, %s, %s, %s, %s, 'cli', NULL, %s, %s)",
            (target, catalog, only_new, chunk_size, scorer, resume, workers),
        ).fetchone()
    except psycopg.errors.UndefinedFunction as exc:
        raise ScoringError(
            f"the database has no scoring jobs ({exc.diag.message_primary}): "
            "run `skyclass db migrate`"
        ) from None
    except psycopg.Error as exc:
        raise scoring_error(exc, f"cannot start scoring {target} on {catalog}") from None
    assert row is not None
    run_id = int(row[0])
    # The run row is committed: starters from now on name it in "already running". Planning
    # (chunk boundaries over the whole feature table) is the second transaction.
    try:
        conn.execute("SELECT skyclass.plan_scoring_run(%s)", (run_id,))
    except psycopg.Error as exc:
        error = scoring_error(exc, f"planning scoring run {run_id}")
        _fail(conn, run_id, str(error), "failed")
        raise error from None
    return run_id


class _Workers:
    """The worker sessions of one run, so that the coordinator can cancel them."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[psycopg.Connection[Any]] = []

    def connect(self, url: str, run_id: int, *, autocommit: bool) -> psycopg.Connection[Any]:
        try:
            conn = _job_session(url, autocommit=autocommit)
        except (psycopg.Error, DatabaseError) as exc:
            if is_connection_lost(exc):
                raise connection_lost(exc, run_id) from None
            raise
        with self._lock:
            self._connections.append(conn)
        return conn

    def cancel(self) -> None:
        self.stop.set()
        with self._lock:
            for conn in self._connections:
                if not conn.closed:
                    conn.cancel_safe()


def _database_worker(url: str, run_id: int, parallel_query: bool, workers: _Workers) -> None:
    with workers.connect(url, run_id, autocommit=True) as conn:
        try:
            if not parallel_query:
                # Sessions already fill the cores; parallel workers would only add start-up
                # and library loading per chunk.
                conn.execute("SET max_parallel_workers_per_gather = 0")
            conn.execute("CALL skyclass.score_chunks(%s)", (run_id,))
        except psycopg.Error as exc:
            raise scoring_error(exc, f"scoring run {run_id}", run_id) from None


def _client_worker(url: str, run_id: int, workers: _Workers) -> None:
    with workers.connect(url, run_id, autocommit=False) as conn:
        try:
            plan = run_plan(conn, run_id)
            scorer = ClientScorer.load(conn, plan.model_version_id)
            conn.commit()
        except psycopg.Error as exc:
            raise scoring_error(exc, f"scoring run {run_id}", run_id) from None
        try:
            while not workers.stop.is_set():
                with conn.transaction():
                    # As in skyclass.score_chunk: a lost chunk commit loses its mark too.
                    conn.execute("SET LOCAL synchronous_commit = off")
                    row = conn.execute(
                        "SELECT chunk_no, first_object_id, last_object_id "
                        "FROM skyclass.claim_scoring_chunk(%s)",
                        (run_id,),
                    ).fetchone()
                    if row is None:
                        return
                    score_chunk_client(conn, plan, scorer, int(row[0]), int(row[1]), int(row[2]))
        except psycopg.Error as exc:
            raise scoring_error(exc, f"scoring run {run_id}", run_id) from None
        finally:
            scorer.close()


def _progress(conn: psycopg.Connection[Any], run_id: int) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT chunks_done, chunks_total, rows_scored FROM skyclass.scoring_run WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    return (0, 0, 0) if row is None else (int(row[0]), int(row[1]), int(row[2]))


def _unfinished_chunks(conn: psycopg.Connection[Any], run_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM skyclass.scoring_chunk WHERE run_id = %s AND done_at IS NULL",
        (run_id,),
    ).fetchone()
    return 0 if row is None else int(row[0])


def _fail(conn: psycopg.Connection[Any], run_id: int, message: str, status: str) -> None:
    """Mark the run failed or interrupted (a no-op when a worker already did) and unlock."""
    if conn.closed:
        return
    # If this fails too, the lock goes with the session anyway and the next start marks the run.
    with contextlib.suppress(psycopg.Error):
        conn.execute("SELECT skyclass.fail_scoring_run(%s, %s, %s)", (run_id, message, status))


def score_catalog(
    target: str,
    catalog: str,
    *,
    only_new: bool = False,
    chunk_size: int = 50_000,
    workers: int | None = None,
    scorer: str = "auto",
    resume: bool = True,
    parallel_query: bool | None = None,
    url: str | None = None,
    progress: ProgressCallback | None = None,
) -> RunInfo:
    """Score ``catalog`` with ``target`` (a deployment, ``MODEL:VERSION`` or a model_version_id).

    ``workers`` sessions (default: the number of cores) score chunks of
    ``chunk_size`` objects. ``scorer`` is ``database`` (``skyclass.predict``),
    ``client`` (:mod:`skyclass.score.fallback`) or ``auto`` (the database when
    the extension exists there). ``only_new`` scores only objects without a
    prediction of the version; otherwise every object is scored and the
    version's predictions of the catalog are replaced when the run succeeds.
    An interrupted or failed run of the same job and mode is resumed unless
    ``resume`` is False. ``parallel_query`` lets each chunk's ``CREATE TABLE
    AS`` use parallel workers (default: only with one session). Returns the
    finished run; raises :class:`AlreadyRunningError` when the job runs
    elsewhere, :class:`ConnectionLostError` when a session of the job lost the
    server (terminated backend, server stop; the run is marked interrupted when
    possible) and :class:`ScoringError` when it fails (the run is then marked
    failed); the next start resumes the run either way.
    """
    if scorer not in SCORERS:
        raise ScoringError(f"scorer must be one of {SCORERS}, not {scorer!r}")
    n_workers = default_workers() if workers is None else workers
    if n_workers < 1:
        raise ScoringError(f"workers must be at least 1, not {n_workers}")
    if chunk_size < 1:
        raise ScoringError(f"chunk_size must be at least 1, not {chunk_size}")
    target_url = url or database_url()
    run_id: int | None = None
    try:
        with _job_session(target_url, autocommit=True) as conn:
            in_database = has_extension(conn)
            if scorer == "database" and not in_database:
                raise ScoringError(
                    "the skyclass extension is not installed in this database: use --scorer "
                    "client (or auto), or install it (docs/extension.md)"
                )
            chosen = "database" if scorer == "auto" and in_database else scorer
            if chosen == "auto":
                chosen = "client"
            run_id = _start(
                conn,
                target,
                catalog,
                only_new=only_new,
                chunk_size=chunk_size,
                scorer=chosen,
                resume=resume,
                workers=n_workers,
            )
            parallel = n_workers == 1 if parallel_query is None else parallel_query
            _run_workers(conn, target_url, run_id, chosen, n_workers, parallel, progress)
            for _ in range(ORPHAN_ROUNDS):
                # Chunks skipped because another session held them: the orphans of a killed
                # client, which stop within a second (client_connection_check_interval).
                if not _unfinished_chunks(conn, run_id):
                    break
                time.sleep(0.5)
                _run_workers(conn, target_url, run_id, chosen, n_workers, parallel, progress)
            try:
                conn.execute("SELECT skyclass.finish_scoring_run(%s)", (run_id,))
            except psycopg.Error as exc:
                error = scoring_error(exc, f"finishing scoring run {run_id}", run_id)
                _fail(conn, run_id, str(error), "failed")
                raise error from None
            if progress is not None:
                progress(*_progress(conn, run_id))
            return get_run(conn, run_id)
    except DatabaseError as exc:
        if run_id is None:  # could not connect at all: that error says what to check
            raise
        raise connection_lost(exc, run_id) from None
    except psycopg.Error as exc:
        raise scoring_error(exc, f"scoring {target} on {catalog}", run_id) from None


def _run_workers(
    conn: psycopg.Connection[Any],
    url: str,
    run_id: int,
    scorer: str,
    n_workers: int,
    parallel: bool,
    progress: ProgressCallback | None,
) -> None:
    """Score every chunk of run ``run_id`` with ``n_workers`` sessions; raise the first error.

    The run is marked failed on a failing chunk, interrupted on a lost
    connection or Ctrl-C (the sessions are cancelled then, not left to finish
    their chunks); either way the next start resumes it.
    """
    pool_workers = _Workers()
    futures: list[Future[None]] = []
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="skyclass-score")
    try:
        for _ in range(n_workers):
            if scorer == "database":
                futures.append(pool.submit(_database_worker, url, run_id, parallel, pool_workers))
            else:
                futures.append(pool.submit(_client_worker, url, run_id, pool_workers))
        pending: set[Future[None]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            if progress is not None:
                progress(*_progress(conn, run_id))
            if any(f.exception() is not None for f in done):
                # The other sessions stop after their current chunk.
                pool_workers.stop.set()
    except BaseException:
        # Ctrl-C, a lost coordinator session or a failing progress callback: stop the
        # sessions now, not after the chunks they are in; their transactions roll back and
        # the run stays resumable.
        pool_workers.cancel()
        pool.shutdown(wait=True)
        _fail(conn, run_id, "interrupted by the client", "interrupted")
        raise
    pool.shutdown(wait=True)
    errors = [e for e in (f.exception() for f in futures) if e is not None]
    if not errors:
        return
    lost = [e for e in errors if isinstance(e, ConnectionLostError)]
    first = lost[0] if lost else errors[0]
    if isinstance(first, ConnectionLostError):
        _fail(conn, run_id, str(first), "interrupted")
        raise first
    _fail(conn, run_id, str(first), "failed")
    raise ScoringError(
        f"{first}; run {run_id} is marked failed: start the same job again to resume it"
    ) from first


def wait_for_lock_release(url: str, run_id: int, timeout: float = 30.0) -> bool:
    """Wait until no live backend holds run ``run_id``'s job (used by tests and tools)."""
    deadline = time.monotonic() + timeout
    with connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT skyclass.scoring_job_holder(model_version_id, catalog_id) "
                "FROM skyclass.scoring_run WHERE run_id = %s",
                (run_id,),
            ).fetchone()
            if row is None or row[0] is None:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
