"""Compile registered model versions and register their libraries as model artifacts.

A model version (``skyclass.model_version``, migration 0003) exists before it
is compiled: it holds the Treelite checkpoint and the calibration map. The
compile step reads the checkpoint, rebuilds the library with
:func:`skyclass.compile.compile_checkpoint` and inserts one row into
``skyclass.model_artifact`` (``model_version_id`` is UNIQUE: one artifact per
version, immutable). Inserting an artifact needs a superuser (migration
0008) because the library is native code that every scoring backend loads
(the extension refuses to load rows that a superuser did not register);
the insert runs as the connecting role, and any other role gets an error
saying so before any build. Members of ``skyclass_model_admin`` may read
model versions and artifacts.

Compiling a version twice does not build twice: if the version already has an
artifact built with the same options, that artifact is returned
(``ArtifactInfo.created`` is False), so scripts can run ``skyclass compile``
idempotently; if it was built with other options the call is refused, since
an artifact never changes (register a new model version instead).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from skyclass.compile.artifact import CompiledArtifact
from skyclass.compile.build import compile_checkpoint, compiler_flags
from skyclass.errors import CompileError
from skyclass.registry.models import can_read_models, find_version
from skyclass.registry.models import parse_model_ref as parse_model_ref

DEFAULT_EPS = 1e-12
ADMIN_ROLE = "skyclass_model_admin"


@dataclass(frozen=True)
class CalibrationColumns:
    """A calibration map in the column layout of ``skyclass.model_version``."""

    kind: str = "none"
    params: tuple[float, ...] = ()
    offsets: tuple[int, ...] = ()
    eps: float = DEFAULT_EPS


def calibration_columns(calibration: Any | None, n_classes: int) -> CalibrationColumns:
    """Columns for a :class:`skyclass.probability.calibration.CalibrationParams` (None: none).

    The trainer's ``identity`` method is stored as ``none`` (the scorer then
    only clips to ``[eps, 1]`` and renormalises, as ``apply_calibration``
    does); ``temperature`` as ``{T}``; ``isotonic`` as each class's x knots
    followed by its y values, concatenated in class order, with the start
    offset of every class and the total length in ``offsets``.
    """
    if calibration is None:
        return CalibrationColumns()
    method = str(calibration.method)
    if int(calibration.n_classes) != n_classes:
        raise CompileError(
            f"the calibration is for {calibration.n_classes} classes, the model has {n_classes}"
        )
    eps = float(calibration.eps)
    if method == "identity":
        return CalibrationColumns("none", eps=eps)
    if method == "temperature":
        return CalibrationColumns("temperature", (float(calibration.temperature),), eps=eps)
    if method == "isotonic":
        params: list[float] = []
        offsets = [0]
        for xs, ys in zip(calibration.knots_x, calibration.knots_y, strict=True):
            if len(xs) != len(ys) or not xs:
                raise CompileError("isotonic knots need the same, non-zero number of x and y")
            params.extend(float(v) for v in xs)
            params.extend(float(v) for v in ys)
            offsets.append(len(params))
        if not all(math.isfinite(v) for v in params):
            raise CompileError("isotonic knots must be finite")
        return CalibrationColumns("isotonic", tuple(params), tuple(offsets), eps)
    raise CompileError(f"unknown calibration method {method!r}")


@dataclass(frozen=True)
class VersionRef:
    """A registered model version as the compile step sees it (``model`` None: name unreadable)."""

    model_version_id: int
    model: str | None
    version: int
    task: str
    n_features: int
    classes: tuple[str, ...]

    @property
    def label(self) -> str:
        """``MODEL:VERSION`` when the name is known, else the model_version_id."""
        if self.model is None:
            return f"model version {self.model_version_id}"
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class ArtifactInfo:
    """A row of ``skyclass.model_artifact`` (without the library bytes) and its version.

    ``created`` is True when this call inserted the row, False when the
    version was already compiled with the same options and that row is
    returned instead. ``model`` is None when the caller may not read
    ``skyclass.model``.
    """

    artifact_id: int
    model_version_id: int
    model: str | None
    version: int
    sha256_hex: str
    library_bytes: int
    n_features: int
    n_outputs: int
    output_transform: str
    treelite_version: str
    tl2cgen_version: str
    compiler: str
    compiler_flags: str
    compile_seconds: float | None
    created_at: datetime
    created_by: str
    created: bool = False

    @property
    def label(self) -> str:
        """``MODEL:VERSION`` when the name is known, else the model_version_id."""
        if self.model is None:
            return f"model version {self.model_version_id}"
        return f"{self.model}:{self.version}"


def _role(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    return str(row[0]) if row else "?"


def _grant_hint(conn: psycopg.Connection[Any], role: str) -> str:
    return f"GRANT {ADMIN_ROLE} TO {sql.Identifier(role).as_string(conn)};"


@contextmanager
def _registry_errors(conn: psycopg.Connection[Any], what: str) -> Iterator[None]:
    """Turn privilege and missing-schema errors of registry access into :class:`CompileError`.

    The role is read first: after an error the transaction may be aborted.
    """
    role = _role(conn)
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CompileError(
            f"role {role!r} may not {what}: {exc.diag.message_primary or exc}. Model artifacts "
            f"are native code loaded by every scoring backend: members of {ADMIN_ROLE} may "
            f"read them, only superusers register them; to read, an administrator can run: "
            f"{_grant_hint(conn, role)}"
        ) from None
    except psycopg.errors.UndefinedTable as exc:
        raise CompileError(
            f"the model registry is missing ({exc.diag.message_primary or exc}): "
            "run `skyclass db migrate`"
        ) from None


def resolve_model_version(conn: psycopg.Connection[Any], ref: int | str) -> VersionRef:
    """The registered model version ``ref`` names, as the compile step needs it.

    Names are resolved by :func:`skyclass.registry.models.find_version` (and
    fail with its errors); a role that may not read ``skyclass.model`` can
    still pass a model_version_id (``model`` is None then).
    """
    with _registry_errors(conn, "read the model registry"):
        found = find_version(conn, ref)
        row = conn.execute(
            "SELECT task, n_features, classes FROM skyclass.model_version "
            "WHERE model_version_id = %s",
            (found.model_version_id,),
        ).fetchone()
    if row is None:
        raise CompileError(f"{found.label} was deleted while being read")
    return VersionRef(
        model_version_id=found.model_version_id,
        model=found.model,
        version=found.version,
        task=str(row[0]),
        n_features=int(row[1]),
        classes=tuple(str(c) for c in row[2]),
    )


_ARTIFACT_COLUMNS = sql.SQL(
    "a.artifact_id, a.model_version_id, {name}, v.version, encode(a.sha256, 'hex'), "
    "length(a.library), a.n_features, a.n_outputs, a.output_transform, a.treelite_version, "
    "a.tl2cgen_version, a.compiler, a.compiler_flags, a.compile_seconds, a.created_at, "
    "a.created_by"
)


def _artifact_query(conn: psycopg.Connection[Any], where: sql.Composable) -> sql.Composed:
    readable = can_read_models(conn)
    columns = _ARTIFACT_COLUMNS.format(name=sql.SQL("m.name" if readable else "NULL::text"))
    join = sql.SQL("JOIN skyclass.model AS m ON m.model_id = v.model_id" if readable else "")
    return sql.SQL(
        "SELECT {} FROM skyclass.model_artifact AS a "
        "JOIN skyclass.model_version AS v ON v.model_version_id = a.model_version_id {} "
        "WHERE {} ORDER BY a.artifact_id"
    ).format(columns, join, where)


def _artifact_info(row: Any, *, created: bool = False) -> ArtifactInfo:
    return ArtifactInfo(
        artifact_id=int(row[0]),
        model_version_id=int(row[1]),
        model=None if row[2] is None else str(row[2]),
        version=int(row[3]),
        sha256_hex=str(row[4]),
        library_bytes=int(row[5]),
        n_features=int(row[6]),
        n_outputs=int(row[7]),
        output_transform=str(row[8]),
        treelite_version=str(row[9]),
        tl2cgen_version=str(row[10]),
        compiler=str(row[11]),
        compiler_flags=str(row[12]),
        compile_seconds=None if row[13] is None else float(row[13]),
        created_at=row[14],
        created_by=str(row[15]),
        created=created,
    )


def artifact_of(conn: psycopg.Connection[Any], model_version_id: int) -> ArtifactInfo | None:
    """The artifact of a model version, or None when it is not compiled."""
    with _registry_errors(conn, "read model artifacts"):
        row = conn.execute(
            _artifact_query(conn, sql.SQL("a.model_version_id = %s")), (model_version_id,)
        ).fetchone()
    return None if row is None else _artifact_info(row)


def list_artifacts(conn: psycopg.Connection[Any]) -> list[ArtifactInfo]:
    """Every registered artifact (without library bytes), oldest first."""
    with _registry_errors(conn, "read model artifacts"):
        rows = conn.execute(_artifact_query(conn, sql.SQL("true"))).fetchall()
    return [_artifact_info(row) for row in rows]


def uncompiled_versions(conn: psycopg.Connection[Any]) -> list[VersionRef]:
    """Model versions that have no artifact yet (``skyclass.predict`` refuses them, 55000)."""
    readable = can_read_models(conn)
    with _registry_errors(conn, "read model artifacts"):
        rows = conn.execute(
            sql.SQL(
                "SELECT v.model_version_id, {}, v.version, v.task, v.n_features, v.classes "
                "FROM skyclass.model_version AS v {} WHERE NOT EXISTS (SELECT FROM "
                "skyclass.model_artifact AS a WHERE a.model_version_id = v.model_version_id) "
                "ORDER BY v.model_version_id"
            ).format(
                sql.SQL("m.name" if readable else "NULL::text"),
                sql.SQL("JOIN skyclass.model AS m USING (model_id)" if readable else ""),
            )
        ).fetchall()
    return [VersionRef(int(r[0]), r[1], int(r[2]), str(r[3]), int(r[4]), tuple(r[5])) for r in rows]


def check_can_register(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`CompileError` unless this role is a superuser (who alone registers artifacts).

    The same rule as the registration trigger of migration 0008, checked first
    so that a build is not wasted.
    """
    row = conn.execute(
        "SELECT current_user, coalesce((SELECT rolsuper FROM pg_roles "
        "WHERE rolname = current_user), false), "
        "to_regclass('skyclass.model_artifact') IS NOT NULL"
    ).fetchone()
    assert row is not None
    role, allowed, exists = str(row[0]), bool(row[1]), bool(row[2])
    if not exists:
        raise CompileError("the model registry is missing: run `skyclass db migrate`")
    if not allowed:
        raise CompileError(
            f"role {role!r} may not register model artifacts: a compiled model is native code "
            "that every scoring backend loads, so only a superuser may register it; run "
            "`skyclass compile` as a superuser (docs/operations.md, who can load native code)"
        )


def _checkpoint_of(conn: psycopg.Connection[Any], model_version_id: int) -> bytes:
    with _registry_errors(conn, "read model versions"):
        row = conn.execute(
            "SELECT checkpoint FROM skyclass.model_version WHERE model_version_id = %s",
            (model_version_id,),
        ).fetchone()
    if row is None:
        raise CompileError(f"model version {model_version_id} does not exist")
    return bytes(row[0])


def store_artifact(
    conn: psycopg.Connection[Any], model_version_id: int, artifact: CompiledArtifact
) -> ArtifactInfo:
    """Register ``artifact`` as the compiled library of model version ``model_version_id``.

    The artifact must have been built from the version's own checkpoint (the
    bytes are compared) with its feature and class counts; the row is
    inserted as the connecting role, which must be allowed to (see
    :func:`check_can_register`). If the version already has an artifact with
    the same sha256 that row is returned (``created`` False); a different
    one raises :class:`CompileError`, since artifacts are immutable.
    """
    ref = resolve_model_version(conn, model_version_id)
    if _checkpoint_of(conn, ref.model_version_id) != artifact.checkpoint:
        raise CompileError(
            f"this library was not built from the checkpoint of {ref.label}: "
            f"compile it with `skyclass compile {ref.model_version_id}`"
        )
    if artifact.n_features != ref.n_features or artifact.n_classes != len(ref.classes):
        raise CompileError(
            f"{ref.label} has {ref.n_features} features and {len(ref.classes)} classes, the "
            f"library {artifact.n_features} features and {artifact.n_classes} classes"
        )
    existing = artifact_of(conn, ref.model_version_id)
    if existing is not None:
        return _same_or_refuse(ref, existing, artifact.sha256_hex, artifact.compiler_flags)
    check_can_register(conn)
    try:
        with _registry_errors(conn, "register model artifacts"), conn.transaction():
            conn.execute(
                """
                INSERT INTO skyclass.model_artifact
                    (model_version_id, sha256, library, n_features, n_outputs, output_transform,
                     treelite_version, tl2cgen_version, compiler, compiler_flags, compile_seconds)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (
                    ref.model_version_id,
                    artifact.sha256,
                    artifact.library,
                    artifact.n_features,
                    artifact.n_outputs,
                    artifact.output_transform,
                    artifact.treelite_version,
                    artifact.tl2cgen_version,
                    artifact.compiler,
                    artifact.compiler_flags,
                    artifact.compile_seconds,
                ),
            )
    except psycopg.errors.UniqueViolation:
        # Another session compiled the same version meanwhile: same rule as above.
        existing = artifact_of(conn, ref.model_version_id)
        if existing is None:
            raise
        return _same_or_refuse(ref, existing, artifact.sha256_hex, artifact.compiler_flags)
    info = artifact_of(conn, ref.model_version_id)
    if info is None:
        raise CompileError(f"the artifact of {ref.label} was inserted but cannot be read back")
    return dataclasses.replace(info, created=True)


def _same_or_refuse(
    ref: VersionRef, existing: ArtifactInfo, sha256_hex: str | None, flags: str
) -> ArtifactInfo:
    if existing.compiler_flags == flags and sha256_hex in (None, existing.sha256_hex):
        return existing
    raise CompileError(
        f"{ref.label} is already compiled (artifact {existing.artifact_id}, "
        f"{existing.compiler_flags}); an artifact never changes, so it is not rebuilt with "
        f"other options or bytes: register a new model version to compile it differently"
    )


def compile_model_version(
    ref: int | str,
    *,
    url: str | None = None,
    conn: psycopg.Connection[Any] | None = None,
    opt_level: str = "-O2",
    parallel_comp: int = 2,
    quantize: bool = True,
    progress: bool = False,
) -> ArtifactInfo:
    """Compile model version ``ref`` (an id or ``MODEL[:VERSION]``) and register its artifact.

    Reads the Treelite checkpoint of the version, rebuilds the library with
    :func:`~skyclass.compile.compile_checkpoint` (``opt_level``,
    ``parallel_comp`` translation units, TL2cgen's threshold quantisation
    unless ``quantize`` is false, an optional progress bar on stderr),
    checks it against the version's feature and class counts and inserts it
    into ``skyclass.model_artifact`` as the connecting role, recording the
    toolchain, flags, library versions and compile seconds. The role is
    checked before anything else. A version already compiled with the same
    options is returned as is (``created`` False); with other options it is
    refused. Connects to ``url`` (default: the configured database) unless
    ``conn`` is given.
    """
    if conn is None:
        from skyclass.db.connect import connect

        with connect(url, autocommit=True) as own:
            return compile_model_version(
                ref,
                conn=own,
                opt_level=opt_level,
                parallel_comp=parallel_comp,
                quantize=quantize,
                progress=progress,
            )
    version = resolve_model_version(conn, ref)
    check_can_register(conn)
    flags = compiler_flags(opt_level, parallel_comp, quantize=quantize)
    existing = artifact_of(conn, version.model_version_id)
    if existing is not None:
        return _same_or_refuse(version, existing, None, flags)
    checkpoint = _checkpoint_of(conn, version.model_version_id)
    if not conn.autocommit:
        # The build can take minutes: do not hold a snapshot (and locks) open during it.
        conn.commit()
    artifact = compile_checkpoint(
        checkpoint,
        n_features=version.n_features,
        n_classes=len(version.classes),
        opt_level=opt_level,
        parallel_comp=parallel_comp,
        quantize=quantize,
        progress=progress,
    )
    return store_artifact(conn, version.model_version_id, artifact)
