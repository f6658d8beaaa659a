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

import psycopg

from skyclass.db.connect import connect
from skyclass.registry.deployments import Deployment as Deployment
from skyclass.registry.deployments import HistoryEntry as HistoryEntry
from skyclass.registry.deployments import can_read_artifacts
from skyclass.registry.deployments import deployment_history as deployment_history
from skyclass.registry.deployments import get_deployment as get_deployment
from skyclass.registry.deployments import list_deployments as list_deployments
from skyclass.registry.models import find_version
from skyclass.score.errors import ScoringError

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


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
        if require_compiled and can_read_artifacts(conn):
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


def remove_deployment(name: str, url: str | None = None) -> Deployment:
    """Delete deployment ``name`` (its history stays, with a removal entry); returns it."""
    with connect(url) as conn:
        existing = get_deployment(conn, name)
        conn.execute("DELETE FROM skyclass.deployment WHERE name = %s", (name,))
        conn.commit()
    return existing
