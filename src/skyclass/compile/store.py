"""Register compiled artifacts and model versions in the tables the extension reads.

The tables are ``skyclass.model_artifact`` and ``skyclass.model_version``
(their contract is ``tests/score/contract.sql``, see docs/extension.md).
Inserting an artifact needs the ``skyclass_model_admin`` role (or a
superuser): the library is native code every scoring backend will load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from skyclass.compile.artifact import CompiledArtifact
from skyclass.compile.errors import CompileError

DEFAULT_EPS = 1e-12


@dataclass(frozen=True)
class CalibrationColumns:
    """A calibration map in the column layout of ``skyclass.model_version``."""

    kind: str = "none"
    params: tuple[float, ...] = ()
    offsets: tuple[int, ...] = ()
    eps: float = DEFAULT_EPS


def calibration_columns(calibration: Any | None, n_classes: int) -> CalibrationColumns:
    """Columns for a ``skyclass.train.calibration.CalibrationParams`` (or None: no calibration).

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


def store_artifact(conn: psycopg.Connection[Any], artifact: CompiledArtifact) -> int:
    """Insert ``artifact`` unless its sha256 is already registered; return its ``artifact_id``."""
    row = conn.execute(
        """
        INSERT INTO skyclass.model_artifact
            (sha256, library, n_features, n_outputs, output_transform, checkpoint,
             treelite_version, tl2cgen_version, compiler, compiler_flags, compile_seconds)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (sha256) DO NOTHING
        RETURNING artifact_id
        """,
        (
            artifact.sha256,
            artifact.library,
            artifact.n_features,
            artifact.n_outputs,
            artifact.output_transform,
            artifact.checkpoint,
            artifact.treelite_version,
            artifact.tl2cgen_version,
            artifact.compiler,
            artifact.compiler_flags,
            artifact.compile_seconds,
        ),
    ).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT artifact_id FROM skyclass.model_artifact WHERE sha256 = %s",
            (artifact.sha256,),
        ).fetchone()
    if row is None:
        raise CompileError(f"artifact {artifact.sha256_hex} was neither inserted nor found")
    return int(row[0])


def store_model_version(
    conn: psycopg.Connection[Any],
    artifact_id: int,
    classes: Sequence[str],
    calibration: CalibrationColumns | None = None,
) -> int:
    """Insert a version of ``artifact_id`` with ``classes`` and a calibration; return its id."""
    cal = calibration or CalibrationColumns()
    row = conn.execute(
        """
        INSERT INTO skyclass.model_version
            (artifact_id, classes, calibration_kind, calibration_params, calibration_offsets,
             calibration_eps)
        VALUES (%s, %s, %s, %s, %s, %s)
        RETURNING model_version_id
        """,
        (
            artifact_id,
            [str(c) for c in classes],
            cal.kind,
            list(cal.params),
            list(cal.offsets),
            cal.eps,
        ),
    ).fetchone()
    if row is None:
        raise CompileError("inserting the model version returned no id")
    return int(row[0])
