"""Scoring runs by id: what ``skyclass.scoring_run`` records, and listings of it.

A run whose row still says ``running`` although no live backend holds its
job (``skyclass.scoring_lease``) has lost its backend (terminated,
cancelled, server restart); it is marked ``interrupted`` by the next start of
the same job, and listings already show it as such (:attr:`RunInfo.effective_status`).
An unknown id raises :class:`UnknownRun`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from skyclass.errors import UnknownRun

RUN_COLUMNS = (
    "r.run_id, r.model_version_id, m.name, v.version, c.name, r.deployment, r.mode, "
    "r.write_kind, r.scorer, r.status, r.chunk_size, r.chunks_total, r.chunks_done, "
    "r.rows_scored, r.objects_without_features, r.attempts, r.workers, r.started_at, "
    "r.resumed_at, r.finished_at, r.error, r.db_user, r.backend_pid, r.triggered_by, "
    "r.schedule_name, "
    "r.status = 'running' AND skyclass.scoring_job_holder(r.model_version_id, r.catalog_id) "
    "IS NULL"
)
RUN_FROM = (
    "skyclass.scoring_run AS r "
    "JOIN skyclass.model_version AS v USING (model_version_id) "
    "JOIN skyclass.model AS m ON m.model_id = v.model_id "
    "JOIN skyclass.catalog AS c ON c.catalog_id = r.catalog_id"
)


@dataclass(frozen=True)
class RunInfo:
    """One row of ``skyclass.scoring_run`` with its model and catalog names."""

    run_id: int
    model_version_id: int
    model: str
    version: int
    catalog: str
    deployment: str | None
    mode: str
    write_kind: str
    scorer: str
    status: str
    chunk_size: int
    chunks_total: int
    chunks_done: int
    rows_scored: int
    objects_without_features: int | None
    attempts: int
    workers: int
    started_at: datetime
    resumed_at: datetime | None
    finished_at: datetime | None
    error: str | None
    db_user: str
    backend_pid: int
    triggered_by: str
    schedule_name: str | None
    backend_gone: bool = False

    @property
    def effective_status(self) -> str:
        """``status``, except ``interrupted`` for a ``running`` run whose backend is gone."""
        return "interrupted" if self.backend_gone else self.status

    @property
    def label(self) -> str:
        """``MODEL:VERSION`` of the scored version."""
        return f"{self.model}:{self.version}"

    @property
    def seconds(self) -> float | None:
        """Wall time from the last (re)start to the end, None while running."""
        if self.finished_at is None:
            return None
        return (self.finished_at - (self.resumed_at or self.started_at)).total_seconds()


def _run(row: Any) -> RunInfo:
    values = list(row)
    values[25] = bool(values[25])
    return RunInfo(*values)


def get_run(conn: psycopg.Connection[Any], run_id: int) -> RunInfo:
    """The run ``run_id`` (raises :class:`UnknownRun` when it does not exist)."""
    row = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.run_id = %s",
        (run_id,),
    ).fetchone()
    if row is None:
        raise UnknownRun(f"scoring run {run_id} does not exist (see `skyclass runs`)")
    return _run(row)


def list_runs(
    conn: psycopg.Connection[Any],
    *,
    limit: int = 20,
    catalog: str | None = None,
    model_version_id: int | None = None,
    schedule_name: str | None = None,
) -> list[RunInfo]:
    """The newest runs first, optionally of one catalog, model version or schedule."""
    where = [sql.SQL("true")]
    params: list[Any] = []
    if catalog is not None:
        where.append(sql.SQL("c.name = %s"))
        params.append(catalog)
    if model_version_id is not None:
        where.append(sql.SQL("r.model_version_id = %s"))
        params.append(model_version_id)
    if schedule_name is not None:
        where.append(sql.SQL("r.schedule_name = %s"))
        params.append(schedule_name)
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY r.run_id DESC LIMIT %s").format(
        sql.SQL(RUN_COLUMNS), sql.SQL(RUN_FROM), sql.SQL(" AND ").join(where)
    )
    return [_run(row) for row in conn.execute(query, [*params, limit]).fetchall()]
