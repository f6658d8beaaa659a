"""Rescoring schedules with pg_cron (``skyclass schedule add/list/remove``).

A schedule is a pg_cron job whose command is ``CALL skyclass.rescore_with_ood(target,
catalog, only_new => ..., chunk_size => ..., schedule_name => name)`` (``rescore``,
then ``refresh_ood``: the OOD scores of a version with an OOD forest stay current), plus a
row in ``skyclass.scoring_schedule`` naming it. pg_cron keeps its jobs in the
one database named by the server setting ``cron.database_name`` (the
embedded cluster: ``skyclass``): when the skyclass database is that one, the
job and the row are created in one transaction with ``cron.schedule``;
otherwise the job is created there with ``cron.schedule_in_database`` (which
pg_cron reserves to superusers unless granted) and runs in the skyclass
database.

pg_cron neither retries nor catches up: a run that fails, or that the server
restart cut short, is visible in ``skyclass schedule list`` (pg_cron's
``cron.job_run_details`` and the job's ``skyclass.scoring_run`` rows), and the
next scheduled run, or ``skyclass score``, resumes the interrupted scoring
run. The job takes its own lock, so a manual run and a scheduled run of the
same job never overlap: the second one fails at once with "already running".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from skyclass.db.connect import connect, database_url
from skyclass.errors import UnknownTarget
from skyclass.registry.catalogs import find_catalog
from skyclass.registry.models import resolve_target
from skyclass.score.deploy import check_name
from skyclass.score.errors import ScoringError
from skyclass.score.runs import RunInfo, list_runs


@dataclass(frozen=True)
class Schedule:
    """A row of ``skyclass.scoring_schedule``."""

    name: str
    target: str
    catalog: str
    cron: str
    only_new: bool
    chunk_size: int
    cron_database: str
    cron_jobname: str
    cron_jobid: int
    command: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class CronRun:
    """One execution of a pg_cron job (``cron.job_run_details``)."""

    runid: int
    status: str
    return_message: str | None
    start_time: datetime | None
    end_time: datetime | None


@dataclass(frozen=True)
class ScheduleStatus:
    """A schedule with its pg_cron state and its latest executions and scoring runs."""

    schedule: Schedule
    active: bool | None
    cron_runs: list[CronRun] = field(default_factory=list)
    runs: list[RunInfo] = field(default_factory=list)
    cron_error: str | None = None


def _with_dbname(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


def cron_database(conn: psycopg.Connection[Any]) -> str:
    """The database pg_cron runs in (raises :class:`ScoringError` when pg_cron is not loaded)."""
    row = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()
    if row is None or not row[0]:
        raise ScoringError(
            "pg_cron is not loaded on this server: add shared_preload_libraries = 'pg_cron' and "
            "cron.database_name to postgresql.conf and restart it (the embedded cluster does)"
        )
    return str(row[0])


class _CronSession:
    """A connection to pg_cron's database: the skyclass one, or another on the same server."""

    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        self.app_db = str(conn.info.dbname)
        self.cron_db = cron_database(conn)
        self.shared = self.app_db == self.cron_db
        self.conn = conn if self.shared else connect(_with_dbname(url, self.cron_db))
        try:
            row = self.conn.execute("SELECT to_regnamespace('cron')").fetchone()
        except psycopg.Error as exc:
            raise ScoringError(
                f"cannot use pg_cron's database {self.cron_db!r}: {exc.diag.message_primary}"
            ) from None
        if row is None or row[0] is None:
            self.close()
            raise ScoringError(
                f"the pg_cron extension is not created in database {self.cron_db!r}: run "
                f'psql -d {self.cron_db} -c "CREATE EXTENSION pg_cron"'
            )

    def close(self) -> None:
        if not self.shared and not self.conn.closed:
            self.conn.close()

    def __enter__(self) -> _CronSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jobname(app_db: str, name: str) -> str:
    return f"skyclass:{app_db}:{name}"


_SCHEDULE_QUERY = """
SELECT s.name, s.target, c.name, s.cron, s.only_new, s.chunk_size, s.cron_database,
       s.cron_jobname, s.cron_jobid, s.command, s.created_at, s.created_by
  FROM skyclass.scoring_schedule AS s JOIN skyclass.catalog AS c USING (catalog_id)
"""


def _schedule(row: Any) -> Schedule:
    return Schedule(*row)


def add_schedule(
    name: str,
    target: str,
    catalog: str,
    cron: str,
    *,
    only_new: bool = False,
    chunk_size: int = 50_000,
    url: str | None = None,
) -> Schedule:
    """Schedule ``CALL skyclass.rescore_with_ood(target, catalog, ...)`` with pg_cron as ``name``.

    ``cron`` is a cron expression in the server's time zone (``0 3 * * *``:
    every day at 03:00; pg_cron checks it). The target and catalog are
    checked now; a deployment is resolved at every run, so the schedule
    follows the deployment when it is switched.
    """
    check_name(name)
    if chunk_size < 1:
        raise ScoringError(f"chunk_size must be at least 1, not {chunk_size}")
    target_url = url or database_url()
    with connect(target_url) as conn:
        catalog_id = find_catalog(conn, catalog).catalog_id
        try:
            version = resolve_target(conn, target).model_version_id
            conn.execute("SELECT skyclass.scoring_feature_set(%s, %s)", (version, catalog_id))
        except UnknownTarget as exc:
            raise ScoringError(f"cannot schedule {target!r} on {catalog!r}: {exc}") from None
        except psycopg.Error as exc:
            raise ScoringError(
                f"cannot schedule {target!r} on {catalog!r}: {exc.diag.message_primary}"
            ) from None
        exists = conn.execute(
            "SELECT 1 FROM skyclass.scoring_schedule WHERE name = %s", (name,)
        ).fetchone()
        if exists is not None:
            raise ScoringError(f"a schedule named {name!r} exists: remove it first")
        command = (
            sql.SQL(
                "CALL skyclass.rescore_with_ood({}, {}, only_new => {}, chunk_size => {}, "
                "schedule_name => {})"
            )
            .format(
                sql.Literal(target),
                sql.Literal(catalog),
                sql.Literal(only_new),
                sql.Literal(chunk_size),
                sql.Literal(name),
            )
            .as_string(conn)
        )
        with _CronSession(conn, target_url) as cron_session:
            jobname = _jobname(cron_session.app_db, name)
            try:
                if cron_session.shared:
                    job = conn.execute(
                        "SELECT cron.schedule(%s, %s, %s)", (jobname, cron, command)
                    ).fetchone()
                else:
                    job = cron_session.conn.execute(
                        "SELECT cron.schedule_in_database(%s, %s, %s, %s)",
                        (jobname, cron, command, cron_session.app_db),
                    ).fetchone()
            except psycopg.Error as exc:
                raise ScoringError(
                    f"pg_cron refused the schedule {cron!r}: {exc.diag.message_primary or exc}"
                ) from None
            assert job is not None
            jobid = int(job[0])
            try:
                conn.execute(
                    "INSERT INTO skyclass.scoring_schedule (name, target, catalog_id, cron, "
                    "only_new, chunk_size, cron_database, cron_jobname, cron_jobid, command) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        name,
                        target,
                        catalog_id,
                        cron,
                        only_new,
                        chunk_size,
                        cron_session.cron_db,
                        jobname,
                        jobid,
                        command,
                    ),
                )
                conn.commit()
            except BaseException:
                conn.rollback()
                if not cron_session.shared:
                    cron_session.conn.execute("SELECT cron.unschedule(%s)", (jobid,))
                    cron_session.conn.commit()
                raise
            if not cron_session.shared:
                cron_session.conn.commit()
        row = conn.execute(_SCHEDULE_QUERY + " WHERE s.name = %s", (name,)).fetchone()
        assert row is not None
        return _schedule(row)


def list_schedules(url: str | None = None, *, last: int = 3) -> list[ScheduleStatus]:
    """Every schedule with pg_cron's state and the ``last`` executions and scoring runs."""
    target_url = url or database_url()
    out: list[ScheduleStatus] = []
    with connect(target_url, autocommit=True) as conn:
        schedules = [
            _schedule(r) for r in conn.execute(_SCHEDULE_QUERY + " ORDER BY s.name").fetchall()
        ]
        if not schedules:
            return out
        cron_error: str | None = None
        cron_session: _CronSession | None = None
        try:
            cron_session = _CronSession(conn, target_url)
        except ScoringError as exc:
            cron_error = str(exc)
        try:
            for s in schedules:
                runs = list_runs(conn, limit=last, schedule_name=s.name)
                if cron_session is None:
                    out.append(ScheduleStatus(s, None, [], runs, cron_error))
                    continue
                try:
                    job = cron_session.conn.execute(
                        "SELECT active FROM cron.job WHERE jobid = %s", (s.cron_jobid,)
                    ).fetchone()
                    details = cron_session.conn.execute(
                        "SELECT runid, status, return_message, start_time, end_time "
                        "FROM cron.job_run_details WHERE jobid = %s ORDER BY runid DESC LIMIT %s",
                        (s.cron_jobid, last),
                    ).fetchall()
                    if not cron_session.shared:
                        cron_session.conn.commit()
                except psycopg.Error as exc:
                    if not cron_session.shared:
                        cron_session.conn.rollback()
                    out.append(
                        ScheduleStatus(s, None, [], runs, exc.diag.message_primary or str(exc))
                    )
                    continue
                out.append(
                    ScheduleStatus(
                        s,
                        None if job is None else bool(job[0]),
                        [CronRun(int(d[0]), str(d[1]), d[2], d[3], d[4]) for d in details],
                        runs,
                        None if job is not None else "the pg_cron job no longer exists",
                    )
                )
        finally:
            if cron_session is not None:
                cron_session.close()
    return out


def remove_schedule(name: str, url: str | None = None) -> Schedule:
    """Unschedule the pg_cron job of ``name`` and delete the schedule; returns it."""
    target_url = url or database_url()
    with connect(target_url) as conn:
        row = conn.execute(_SCHEDULE_QUERY + " WHERE s.name = %s", (name,)).fetchone()
        if row is None:
            raise ScoringError(f"no schedule named {name!r} (see `skyclass schedule list`)")
        schedule = _schedule(row)
        with _CronSession(conn, target_url) as cron_session:
            cron_conn = cron_session.conn
            exists = cron_conn.execute(
                "SELECT 1 FROM cron.job WHERE jobid = %s", (schedule.cron_jobid,)
            ).fetchone()
            if exists is not None:
                try:
                    cron_conn.execute("SELECT cron.unschedule(%s)", (schedule.cron_jobid,))
                except psycopg.Error as exc:
                    raise ScoringError(
                        f"pg_cron refused to unschedule job {schedule.cron_jobid}: "
                        f"{exc.diag.message_primary or exc}"
                    ) from None
            # The job goes first: a schedule row without its job is shown as such and can be
            # removed again, a job without its row would keep running unseen.
            if not cron_session.shared:
                cron_conn.commit()
            conn.execute("DELETE FROM skyclass.scoring_schedule WHERE name = %s", (name,))
            conn.commit()
    return schedule
