"""Scoring runs as Python objects: what ``skyclass.scoring_run`` records, and listings of it.

A run whose row still says ``running`` although no live backend holds its
job (``skyclass.scoring_lease``) has lost its backend (terminated,
cancelled, server restart); it is marked ``interrupted`` by the next start of
the same job, and listings already show it as such (:attr:`RunInfo.effective_status`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from skyclass.score.errors import ScoringError

# Tables the jobs write are named by the database (format('%I.%I')); Python re-reads their
# schema and name from pg_class and composes them with sql.Identifier, never by pasting.
_TARGET = re.compile(r"^predictions\.mv_\d+_c\d+_r\d+$")

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
    """The run ``run_id`` (raises :class:`ScoringError` when it does not exist)."""
    row = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM {RUN_FROM} WHERE r.run_id = %s",
        (run_id,),
    ).fetchone()
    if row is None:
        raise ScoringError(f"scoring run {run_id} does not exist")
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


@dataclass(frozen=True)
class RunPlan:
    """What a worker needs to score the chunks of a run (tables as composable identifiers)."""

    run_id: int
    model_version_id: int
    catalog_id: int
    write_kind: str
    feature_table: sql.Identifier
    target_schema: str
    target_name: str

    @property
    def target_table(self) -> sql.Identifier:
        """The run's catalog partition (partition runs) or the partition it inserts into."""
        return sql.Identifier(self.target_schema, self.target_name)

    def chunk_table(self, chunk_no: int) -> sql.Identifier:
        """The table holding chunk ``chunk_no`` of a partition run."""
        return sql.Identifier(self.target_schema, f"{self.target_name}_{chunk_no}")


def _relation(conn: psycopg.Connection[Any], qualified: str, what: str) -> tuple[str, str]:
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class AS c "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (qualified,),
    ).fetchone()
    if row is None:
        raise ScoringError(f"the {what} {qualified} of the scoring run does not exist")
    return str(row[0]), str(row[1])


def run_plan(conn: psycopg.Connection[Any], run_id: int) -> RunPlan:
    """The :class:`RunPlan` of run ``run_id`` (its tables re-read from the catalog)."""
    row = conn.execute(
        "SELECT model_version_id, catalog_id, write_kind, feature_table, target_table "
        "FROM skyclass.scoring_run WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    if row is None:
        raise ScoringError(f"scoring run {run_id} does not exist")
    target = str(row[4])
    if row[2] == "partition" and not _TARGET.match(target):
        raise ScoringError(f"scoring run {run_id} has an unexpected target table {target!r}")
    feature_schema, feature_name = _relation(conn, str(row[3]), "feature table")
    target_schema, target_name = _relation(conn, target, "prediction table")
    return RunPlan(
        run_id=run_id,
        model_version_id=int(row[0]),
        catalog_id=int(row[1]),
        write_kind=str(row[2]),
        feature_table=sql.Identifier(feature_schema, feature_name),
        target_schema=target_schema,
        target_name=target_name,
    )
