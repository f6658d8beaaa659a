"""Model versions by name: the one resolver of ``MODEL[:VERSION]`` and version ids.

Every step that takes a model version from a user (train's report, report,
compile, score) resolves it here. Failures: :class:`InvalidModelRef` (not
``MODEL[:VERSION]`` or an id), :class:`UnknownModel`, :class:`UnknownVersion`
(both :class:`ModelNotFoundError`, a :class:`LookupError`) and
:class:`RegistryAccessError` (a name the role may not look up).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from skyclass.errors import (
    InvalidModelRef,
    RegistryAccessError,
    UnknownModel,
    UnknownTarget,
    UnknownVersion,
)


@dataclass(frozen=True)
class VersionRef:
    """The identity and provenance columns of one ``skyclass.model_version`` row."""

    model_version_id: int
    model: str
    model_id: int
    version: int
    task: str
    estimator: str
    params: Mapping[str, Any]
    training_run_id: int
    evaluation_id: int
    snapshot_id: int
    feature_set_id: int
    n_features: int
    classes: tuple[str, ...]
    bin_edges: tuple[float, ...] | None
    calibration_kind: str
    calibration_params: tuple[float, ...]
    created_at: datetime
    compiled: bool

    @property
    def label(self) -> str:
        """``MODEL:VERSION``."""
        return f"{self.model}:{self.version}"


_REF = re.compile(r"(?P<name>[a-z][a-z0-9_]{0,62})(?::(?P<version>[0-9]{1,9}))?")
_ID = re.compile(r"[0-9]{1,18}")


def parse_model_ref(ref: int | str) -> int | tuple[str, int | None]:
    """Parse ``MODEL``, ``MODEL:VERSION`` or a model_version_id (int or digits).

    Returns the id, or ``(name, version)`` with version None for "the newest
    version". Model names start with a letter, so digits are never a name.
    Raises :class:`InvalidModelRef` for anything else.
    """
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise InvalidModelRef(f"not a model reference: {ref!r}")
    if isinstance(ref, int):
        if ref < 1:
            raise InvalidModelRef(f"model_version_id must be positive, not {ref}")
        return ref
    text = ref.strip()
    if _ID.fullmatch(text):
        return parse_model_ref(int(text))
    match = _REF.fullmatch(text)
    if match is None or int(match.group("version") or 1) < 1:
        raise InvalidModelRef(
            f"{ref!r} is not MODEL, MODEL:VERSION or a model_version_id (a model name of "
            "a-z, 0-9 and _ starting with a letter, then a version number >= 1)"
        )
    version = match.group("version")
    return match.group("name"), None if version is None else int(version)


def can_read_models(conn: psycopg.Connection[Any]) -> bool:
    """True when the role may read ``skyclass.model`` (model names)."""
    row = conn.execute(
        "SELECT has_table_privilege(to_regclass('skyclass.model'), 'SELECT')"
    ).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class VersionName:
    """A model version's id, model name (None when the role may not read it) and number."""

    model_version_id: int
    model: str | None
    version: int

    @property
    def label(self) -> str:
        """``MODEL:VERSION`` when the name is known, else ``model version <id>``."""
        if self.model is None:
            return f"model version {self.model_version_id}"
        return f"{self.model}:{self.version}"


def find_version(conn: psycopg.Connection[Any], ref: int | str) -> VersionName:
    """The model version ``ref`` names: its id, number and model name (None: not readable).

    ``MODEL`` alone means its newest version. A role that may not read
    ``skyclass.model`` can still pass a model_version_id. Raises
    :class:`InvalidModelRef`, :class:`UnknownModel`, :class:`UnknownVersion`,
    or :class:`RegistryAccessError` for a name the role may not look up.
    """
    parsed = parse_model_ref(ref)
    readable = can_read_models(conn)
    if isinstance(parsed, int):
        row = conn.execute(
            "SELECT model_id, version FROM skyclass.model_version WHERE model_version_id = %s",
            (parsed,),
        ).fetchone()
        if row is None:
            raise UnknownVersion(f"model version id {parsed} does not exist")
        name_row = (
            conn.execute(
                "SELECT name FROM skyclass.model WHERE model_id = %s", (row[0],)
            ).fetchone()
            if readable
            else None
        )
        return VersionName(parsed, None if name_row is None else str(name_row[0]), int(row[1]))
    name, version = parsed
    if not readable:
        role = conn.execute("SELECT current_user").fetchone()
        raise RegistryAccessError(
            f"role {role[0] if role else '?'!r} may not read skyclass.model to look up "
            f"{name!r}: pass the model_version_id instead, or grant SELECT on skyclass.model"
        )
    model = conn.execute("SELECT model_id FROM skyclass.model WHERE name = %s", (name,)).fetchone()
    if model is None:
        models = [r[0] for r in conn.execute("SELECT name FROM skyclass.model ORDER BY name")]
        known = f"known models: {', '.join(models)}" if models else "no model is registered yet"
        raise UnknownModel(f"unknown model {name!r} ({known}; train one with `skyclass train`)")
    versions = {
        int(r[1]): int(r[0])
        for r in conn.execute(
            "SELECT model_version_id, version FROM skyclass.model_version WHERE model_id = %s",
            (model[0],),
        )
    }
    if not versions:
        raise UnknownVersion(f"model {name!r} has no versions yet: train it first")
    wanted = max(versions) if version is None else version
    if wanted not in versions:
        raise UnknownVersion(
            f"model {name!r} has no version {wanted}; its versions are "
            f"{', '.join(map(str, sorted(versions)))}"
        )
    return VersionName(versions[wanted], name, wanted)


_VERSION_SQL = """
SELECT v.model_version_id, m.name, m.model_id, v.version, v.task, v.estimator, v.params,
       v.training_run_id, v.evaluation_id, v.snapshot_id, v.feature_set_id, v.n_features,
       v.classes, v.bin_edges, v.calibration_kind, v.calibration_params, v.created_at,
       EXISTS (SELECT FROM skyclass.model_artifact a
               WHERE a.model_version_id = v.model_version_id)
FROM skyclass.model_version v JOIN skyclass.model m USING (model_id)
"""


def _ref(row: Sequence[Any]) -> VersionRef:
    return VersionRef(
        model_version_id=int(row[0]),
        model=str(row[1]),
        model_id=int(row[2]),
        version=int(row[3]),
        task=str(row[4]),
        estimator=str(row[5]),
        params=dict(row[6]),
        training_run_id=int(row[7]),
        evaluation_id=int(row[8]),
        snapshot_id=int(row[9]),
        feature_set_id=int(row[10]),
        n_features=int(row[11]),
        classes=tuple(str(c) for c in row[12]),
        bin_edges=tuple(float(e) for e in row[13]) if row[13] is not None else None,
        calibration_kind=str(row[14]),
        calibration_params=tuple(float(p) for p in row[15]),
        created_at=row[16],
        compiled=bool(row[17]),
    )


def resolve_version(conn: psycopg.Connection[Any], ref: str | int) -> VersionRef:
    """The model version named ``MODEL``, ``MODEL:VERSION`` or by ``model_version_id``.

    Raises what :func:`find_version` raises.
    """
    found = find_version(conn, ref)
    row = conn.execute(
        _VERSION_SQL + "WHERE v.model_version_id = %s", (found.model_version_id,)
    ).fetchone()
    if row is None:
        raise UnknownVersion(f"{found.label} was deleted while being read")
    return _ref(row)


@dataclass(frozen=True)
class ScoringTarget:
    """The model version a scoring target names, its ``MODEL:VERSION`` and the deployment."""

    model_version_id: int
    label: str
    deployment: str | None


def resolve_target(conn: psycopg.Connection[Any], target: str) -> ScoringTarget:
    """The model version ``target`` names: a deployment, ``MODEL:VERSION`` or a model_version_id.

    The one Python entry to ``skyclass.resolve_scoring_target`` (the resolver
    the SQL jobs use, so both read a target the same way). Runs in a
    savepoint: a failure leaves the caller's transaction usable. Raises
    :class:`UnknownTarget` with the database's message and hint.
    """
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT t.model_version_id, m.name || ':' || v.version, t.deployment "
                "FROM skyclass.resolve_scoring_target(%s) AS t "
                "JOIN skyclass.model_version AS v USING (model_version_id) "
                "JOIN skyclass.model AS m USING (model_id)",
                (target,),
            ).fetchone()
    except psycopg.errors.UndefinedObject as exc:
        hint = f"; {exc.diag.message_hint}" if exc.diag.message_hint else ""
        raise UnknownTarget(f"{exc.diag.message_primary}{hint}") from None
    assert row is not None
    return ScoringTarget(int(row[0]), str(row[1]), None if row[2] is None else str(row[2]))


def ensure_model(conn: psycopg.Connection[Any], name: str, task: str, description: str) -> int:
    """The ``model_id`` of model ``name``, created with ``task`` when it does not exist.

    Raises :class:`InvalidModelRef` when the model exists with another task
    (a name never silently changes what its versions are).
    """
    conn.execute(
        "INSERT INTO skyclass.model (name, task, description) VALUES (%s, %s, %s) "
        "ON CONFLICT (name) DO NOTHING",
        (name, task, description),
    )
    row = conn.execute(
        "SELECT model_id, task FROM skyclass.model WHERE name = %s", (name,)
    ).fetchone()
    assert row is not None
    if str(row[1]) != task:
        raise InvalidModelRef(f"model {name!r} exists with task {row[1]!r}, not {task!r}")
    return int(row[0])
