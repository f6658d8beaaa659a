"""What a scoring worker needs of a run (:class:`RunPlan`).

Run rows and listings live in :mod:`skyclass.registry.runs` (re-exported here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from skyclass.registry.runs import RUN_COLUMNS as RUN_COLUMNS
from skyclass.registry.runs import RUN_FROM as RUN_FROM
from skyclass.registry.runs import RunInfo as RunInfo
from skyclass.registry.runs import get_run as get_run
from skyclass.registry.runs import list_runs as list_runs
from skyclass.score.errors import ScoringError

# Tables the jobs write are named by the database (format('%I.%I')); Python re-reads their
# schema and name from pg_class and composes them with sql.Identifier, never by pasting.
_TARGET = re.compile(r"^predictions\.mv_\d+_c\d+_r\d+$")


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
        """The run's own table (partitioned by object_id range into its chunk tables)."""
        return sql.Identifier(self.target_schema, self.target_name)

    def chunk_table(self, chunk_no: int) -> sql.Identifier:
        """The table holding chunk ``chunk_no`` of the run."""
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
    if not _TARGET.match(target):
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
