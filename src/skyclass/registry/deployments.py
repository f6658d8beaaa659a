"""Deployments by name: which model version a stable name (``sgq_current``) points at.

Reads only; :mod:`skyclass.score.deploy` switches and removes deployments.
An unknown name raises :class:`UnknownDeployment` naming the existing ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from skyclass.db.connect import connect
from skyclass.errors import UnknownDeployment


@dataclass(frozen=True)
class Deployment:
    """A deployment and the model version it points at."""

    name: str
    model: str
    task: str
    version: int
    model_version_id: int
    compiled: bool | None
    description: str | None
    updated_at: datetime
    updated_by: str

    @property
    def label(self) -> str:
        """``MODEL:VERSION`` of the deployed version."""
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class HistoryEntry:
    """One switch of a deployment (``model_version_id`` None: it was removed)."""

    name: str
    model_version_id: int | None
    label: str | None
    previous_version_id: int | None
    switched_at: datetime
    switched_by: str


def can_read_artifacts(conn: psycopg.Connection[Any]) -> bool:
    """True when the role may read ``skyclass.model_artifact`` (whether versions are compiled)."""
    row = conn.execute(
        "SELECT has_table_privilege(to_regclass('skyclass.model_artifact'), 'SELECT')"
    ).fetchone()
    return bool(row and row[0])


_DEPLOYMENT_QUERY = """
SELECT d.name, m.name, m.task, v.version, d.model_version_id, {compiled}, d.description,
       d.updated_at, d.updated_by
  FROM skyclass.deployment AS d
  JOIN skyclass.model_version AS v ON v.model_version_id = d.model_version_id
  JOIN skyclass.model AS m ON m.model_id = d.model_id
"""


def _query(conn: psycopg.Connection[Any]) -> str:
    compiled = (
        "EXISTS (SELECT 1 FROM skyclass.model_artifact AS a "
        "WHERE a.model_version_id = d.model_version_id)"
        if can_read_artifacts(conn)
        else "NULL::boolean"
    )
    return _DEPLOYMENT_QUERY.format(compiled=compiled)


def _deployment(row: Any) -> Deployment:
    return Deployment(
        name=str(row[0]),
        model=str(row[1]),
        task=str(row[2]),
        version=int(row[3]),
        model_version_id=int(row[4]),
        compiled=None if row[5] is None else bool(row[5]),
        description=None if row[6] is None else str(row[6]),
        updated_at=row[7],
        updated_by=str(row[8]),
    )


def get_deployment(conn: psycopg.Connection[Any], name: str) -> Deployment:
    """The deployment ``name`` (raises :class:`UnknownDeployment` when there is none)."""
    row = conn.execute(_query(conn) + " WHERE d.name = %s", (name,)).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM skyclass.deployment ORDER BY name")]
        known = f"deployments: {', '.join(names)}" if names else "no deployment exists yet"
        raise UnknownDeployment(
            f"no deployment named {name!r} ({known}; see `skyclass deploy list`)"
        )
    return _deployment(row)


def list_deployments(url: str | None = None) -> list[Deployment]:
    """Every deployment, by name."""
    with connect(url) as conn:
        rows = conn.execute(_query(conn) + " ORDER BY d.name").fetchall()
    return [_deployment(row) for row in rows]


def deployment_history(name: str | None = None, url: str | None = None) -> list[HistoryEntry]:
    """The switches of deployment ``name`` (or of all), oldest first."""
    with connect(url) as conn:
        rows = conn.execute(
            """
            SELECT h.name, h.model_version_id, m.name || ':' || v.version, h.previous_version_id,
                   h.switched_at, h.switched_by
              FROM skyclass.deployment_history AS h
              LEFT JOIN skyclass.model_version AS v ON v.model_version_id = h.model_version_id
              LEFT JOIN skyclass.model AS m ON m.model_id = v.model_id
             WHERE %(name)s::text IS NULL OR h.name = %(name)s
             ORDER BY h.switched_at, h.history_id
            """,
            {"name": name},
        ).fetchall()
    return [
        HistoryEntry(
            name=str(r[0]),
            model_version_id=None if r[1] is None else int(r[1]),
            label=None if r[2] is None else str(r[2]),
            previous_version_id=None if r[3] is None else int(r[3]),
            switched_at=r[4],
            switched_by=str(r[5]),
        )
        for r in rows
    ]
