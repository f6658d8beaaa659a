"""Deployments: stable names (``sgq_current``) for the model version scoring jobs and views use.

A deployment belongs to one model; switching it to another version of that
model is one UPDATE in one transaction (``skyclass.deploy``), so readers of
``skyclass.current_classification`` see the old version's predictions or the
new one's, never a mix. Every switch is appended to
``skyclass.deployment_history`` (who, when, from which version), and a
deployment can never be switched to a version of another model (a photo-z
model cannot replace a star/galaxy/QSO classifier under the same name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from skyclass.db.connect import connect
from skyclass.registry.models import find_version
from skyclass.score.errors import ScoringError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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


@dataclass(frozen=True)
class DeployResult:
    """What :func:`deploy` changed."""

    deployment: Deployment
    previous_version_id: int | None

    @property
    def changed(self) -> bool:
        """False when the deployment already pointed at this version."""
        return self.previous_version_id != self.deployment.model_version_id


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid deployment or schedule name, else raise."""
    if not NAME.match(name):
        raise ScoringError(
            f"invalid name {name!r}: use a-z, 0-9 and _, starting with a letter, at most 63 "
            "characters"
        )
    return name


def _can_read_artifacts(conn: psycopg.Connection[Any]) -> bool:
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
        if _can_read_artifacts(conn)
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
    """The deployment ``name`` (raises :class:`ScoringError` when there is none)."""
    row = conn.execute(_query(conn) + " WHERE d.name = %s", (name,)).fetchone()
    if row is None:
        raise ScoringError(f"no deployment named {name!r} (see `skyclass deploy list`)")
    return _deployment(row)


def deploy(
    name: str,
    model_ref: str | int,
    *,
    description: str | None = None,
    require_compiled: bool = True,
    url: str | None = None,
) -> DeployResult:
    """Point deployment ``name`` at ``model_ref`` (``MODEL``, ``MODEL:VERSION`` or an id).

    Creates the deployment when it is new. Refused (with
    :class:`ScoringError`) when the version belongs to another model than the
    deployment's, and, with ``require_compiled``, when the version has no
    compiled artifact yet (both scorers need it).
    """
    check_name(name)
    with connect(url) as conn:
        version = find_version(conn, model_ref)
        if require_compiled and _can_read_artifacts(conn):
            row = conn.execute(
                "SELECT 1 FROM skyclass.model_artifact WHERE model_version_id = %s",
                (version.model_version_id,),
            ).fetchone()
            if row is None:
                raise ScoringError(
                    f"{version.label} is not compiled: run `skyclass compile {version.label}` "
                    "before deploying it"
                )
        try:
            row = conn.execute(
                "SELECT skyclass.deploy(%s, %s, %s)",
                (name, version.model_version_id, description),
            ).fetchone()
        except psycopg.errors.CheckViolation as exc:
            raise ScoringError(
                f"{exc.diag.message_primary}; {exc.diag.message_hint or ''}".rstrip("; ")
            ) from None
        except psycopg.Error as exc:
            raise ScoringError(
                f"cannot deploy {version.label} as {name!r}: {exc.diag.message_primary or exc}"
            ) from None
        previous = None if row is None or row[0] is None else int(row[0])
        conn.commit()
        return DeployResult(get_deployment(conn, name), previous)


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


def remove_deployment(name: str, url: str | None = None) -> Deployment:
    """Delete deployment ``name`` (its history stays, with a removal entry); returns it."""
    with connect(url) as conn:
        existing = get_deployment(conn, name)
        conn.execute("DELETE FROM skyclass.deployment WHERE name = %s", (name,))
        conn.commit()
    return existing
