"""UWS 1.1 jobs of ``/tap/async``, kept in ``skyclass.tap_job``.

Any worker process of the service sees every job: the phase, times,
parameters, error and the serialized result are rows. A job runs in a thread
of the process that received ``PHASE=RUN`` (at most :data:`RUNNING` at once
per process; the others wait QUEUED). Phases move
PENDING -> QUEUED -> EXECUTING -> COMPLETED | ERROR, or ABORTED from any of the
first three; the final update of a job only applies while it is still
EXECUTING, so an ABORT wins over a finishing query (whose backend is also
cancelled). Jobs past their destruction time are deleted whenever the job list
is used; a job EXECUTING whose database session no longer exists (its process
stopped) is put in ERROR when jobs are read. A job's execution duration, which
may only be lowered, is its query's statement timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from skyclass.serve.tap.db import TapDatabase

RUNNING = 2
RETENTION = dt.timedelta(days=7)
PHASES = (
    "PENDING",
    "QUEUED",
    "EXECUTING",
    "COMPLETED",
    "ERROR",
    "ABORTED",
    "UNKNOWN",
    "HELD",
    "SUSPENDED",
    "ARCHIVED",
)
ACTIVE = ("PENDING", "QUEUED", "EXECUTING")

JOB_COLUMNS = (
    "job_id, phase, run_id, parameters, created_at, started_at, finished_at, destruction, "
    "execution_duration, error_message, result_type, result_rows, overflow, backend_pid"
)


@dataclass(frozen=True)
class Job:
    """One row of ``skyclass.tap_job`` without the result bytes."""

    job_id: str
    phase: str
    run_id: str | None
    parameters: dict[str, str]
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    destruction: dt.datetime
    execution_duration: int
    error_message: str | None
    result_type: str | None
    result_rows: int | None
    overflow: bool | None
    backend_pid: int | None


class JobStore:
    """Create, read, change and run the UWS jobs."""

    def __init__(self, database: TapDatabase, runner: Any) -> None:
        self.database = database
        self.runner = runner  # runner(job) -> (bytes, mime type, rows, overflow)
        self.executor = ThreadPoolExecutor(max_workers=RUNNING, thread_name_prefix="tap-job")

    def close(self) -> None:
        """Stop taking jobs; running ones finish in their threads."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _execute(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.database.connection() as conn, conn.transaction():
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def purge(self) -> None:
        """Delete the jobs past their destruction time."""
        self._execute("DELETE FROM skyclass.tap_job WHERE destruction < now()")

    def create(self, parameters: dict[str, str], run_id: str | None) -> str:
        """A new PENDING job; returns its id."""
        job_id = secrets.token_hex(8)
        self._execute(
            "INSERT INTO skyclass.tap_job (job_id, run_id, parameters, destruction, "
            "execution_duration) VALUES (%s, %s, %s, now() + %s, %s)",
            (
                job_id,
                run_id,
                Jsonb(parameters),
                RETENTION,
                round(self.database.statement_timeout),
            ),
        )
        return job_id

    def reap(self) -> None:
        """Jobs EXECUTING whose database session is gone (their process stopped) are ERROR."""
        self._execute(
            "UPDATE skyclass.tap_job SET phase = 'ERROR', finished_at = now(), "
            "error_message = 'the service process running the job stopped; submit it again', "
            "backend_pid = NULL WHERE phase = 'EXECUTING' AND backend_pid IS NOT NULL "
            "AND NOT EXISTS (SELECT FROM pg_stat_activity AS a WHERE a.pid = backend_pid)"
        )

    def get(self, job_id: str) -> Job | None:
        """The job, or None when there is no such job."""
        self.reap()
        rows = self._execute(
            f"SELECT {JOB_COLUMNS} FROM skyclass.tap_job WHERE job_id = %s", (job_id,)
        )
        return Job(*rows[0]) if rows else None

    def list(self, phases: list[str], after: dt.datetime | None, last: int | None) -> list[Job]:
        """Jobs, newest first, in ``phases`` (default: not ARCHIVED), created after ``after``."""
        self.purge()
        self.reap()
        conditions = ["phase <> 'ARCHIVED'"] if not phases else ["phase = ANY(%s)"]
        params: list[Any] = [phases] if phases else []
        if after is not None:
            conditions.append("created_at > %s")
            params.append(after)
        query = (
            f"SELECT {JOB_COLUMNS} FROM skyclass.tap_job WHERE {' AND '.join(conditions)} "
            "ORDER BY created_at DESC, job_id"
        )
        if last is not None:
            query += " LIMIT %s"
            params.append(last)
        return [Job(*row) for row in self._execute(query, params)]

    def result(self, job_id: str) -> tuple[bytes, str] | None:
        """The result bytes and MIME type of a COMPLETED job."""
        rows = self._execute(
            "SELECT result, result_type FROM skyclass.tap_job "
            "WHERE job_id = %s AND phase = 'COMPLETED'",
            (job_id,),
        )
        return (bytes(rows[0][0]), str(rows[0][1])) if rows else None

    def delete(self, job_id: str) -> bool:
        """Abort the job if it runs and delete it; False when there was no such job."""
        job = self.get(job_id)
        if job is None:
            return False
        self.abort(job_id)
        self._execute("DELETE FROM skyclass.tap_job WHERE job_id = %s", (job_id,))
        return True

    def set_parameters(self, job_id: str, parameters: dict[str, str]) -> bool:
        """Merge ``parameters`` into a PENDING job's; False when it is not PENDING."""
        rows = self._execute(
            "UPDATE skyclass.tap_job SET parameters = parameters || %s "
            "WHERE job_id = %s AND phase = 'PENDING' RETURNING 1",
            (Jsonb(parameters), job_id),
        )
        return bool(rows)

    def set_destruction(self, job_id: str, when: dt.datetime) -> None:
        """Move the destruction time (never beyond the retention period from now)."""
        self._execute(
            "UPDATE skyclass.tap_job SET destruction = least(%s, now() + %s) WHERE job_id = %s",
            (when, RETENTION, job_id),
        )

    def set_execution_duration(self, job_id: str, seconds: int) -> None:
        """Lower the execution duration (the service's statement timeout is the most)."""
        limit = round(self.database.statement_timeout)
        value = limit if seconds <= 0 else min(seconds, limit)
        self._execute(
            "UPDATE skyclass.tap_job SET execution_duration = %s "
            "WHERE job_id = %s AND phase = 'PENDING'",
            (value, job_id),
        )

    def run(self, job_id: str) -> None:
        """PENDING -> QUEUED, and start the job in a thread (nothing when not PENDING)."""
        rows = self._execute(
            "UPDATE skyclass.tap_job SET phase = 'QUEUED' "
            "WHERE job_id = %s AND phase = 'PENDING' RETURNING 1",
            (job_id,),
        )
        if rows:
            self.executor.submit(self._work, job_id)

    def abort(self, job_id: str) -> None:
        """Abort a job that has not finished, cancelling its query if it runs."""
        rows = self._execute(
            "UPDATE skyclass.tap_job AS j SET phase = 'ABORTED', finished_at = now() "
            "FROM skyclass.tap_job AS old WHERE old.job_id = j.job_id AND j.job_id = %s "
            "AND j.phase = ANY(%s) RETURNING old.phase, old.backend_pid",
            (job_id, list(ACTIVE)),
        )
        if rows and rows[0][0] == "EXECUTING" and rows[0][1] is not None:
            # the query may have finished meanwhile; its result is not kept (not EXECUTING)
            with contextlib.suppress(psycopg.Error):
                self._execute("SELECT pg_cancel_backend(%s)", (rows[0][1],))

    def _work(self, job_id: str) -> None:
        rows = self._execute(
            "UPDATE skyclass.tap_job SET phase = 'EXECUTING', started_at = now() "
            "WHERE job_id = %s AND phase = 'QUEUED' RETURNING 1",
            (job_id,),
        )
        job = self.get(job_id)
        if not rows or job is None:
            return  # aborted or deleted while queued

        def record_backend(pid: int) -> None:
            self._execute(
                "UPDATE skyclass.tap_job SET backend_pid = %s WHERE job_id = %s", (pid, job_id)
            )

        try:
            body, mime, n_rows, overflow = self.runner(job, record_backend)
        except Exception as exc:  # every failure of the job is the job's ERROR
            self._execute(
                "UPDATE skyclass.tap_job SET phase = 'ERROR', error_message = %s, "
                "finished_at = now(), backend_pid = NULL "
                "WHERE job_id = %s AND phase = 'EXECUTING'",
                (str(exc) or type(exc).__name__, job_id),
            )
            return
        self._execute(
            "UPDATE skyclass.tap_job SET phase = 'COMPLETED', result = %s, result_type = %s, "
            "result_rows = %s, overflow = %s, finished_at = now(), backend_pid = NULL "
            "WHERE job_id = %s AND phase = 'EXECUTING'",
            (body, mime, n_rows, overflow, job_id),
        )
