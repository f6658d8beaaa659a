"""The OOD forest of a model version as registry rows: fitted, registered, compiled.

:func:`fit_version_ood` fits :func:`skyclass.domain.ood.fit_ood_scorer` on the
version's frozen training snapshot and stores it so the database can score
it like any model:

- the forest becomes a model version of task ``anomaly`` (no classes, its
  Treelite checkpoint; compiled output kind ``raw_score``) of the companion
  model ``<model>_ood``, sharing the parent's training run, evaluation,
  snapshot and feature build;
- ``skyclass.ood_model`` links it to the parent version with what turns a
  score into the published columns: per-feature training low/high and NaN
  fill, the reference quantiles of held-out training scores and the
  ``in_domain`` threshold;
- compiling it (:func:`skyclass.compile.compile_model_version`) needs the
  role that may register native code; without it the forest stays
  uncompiled and ``skyclass compile <model>_ood:N`` finishes the job.

Rows: the calibration split (fold -1) is the held-out reference when it has
at least :data:`MIN_REFERENCE` rows, else fold 0; the forest is fitted on all
other rows.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from skyclass.domain import defaults
from skyclass.domain.errors import DomainError
from skyclass.domain.ood import FOREST_PARAMS, IN_DOMAIN_PERCENTILE, OodScorer, fit_ood_scorer
from skyclass.domain.source import VersionRef, resolve_version, training_snapshot
from skyclass.registry.models import ensure_model

#: Fewest calibration-split rows used as the reference; below it fold 0 is used.
MIN_REFERENCE = 200
#: Suffix of the companion model holding a model's OOD forests.
OOD_MODEL_SUFFIX = "_ood"


@dataclass(frozen=True)
class OodModel:
    """One row of ``skyclass.ood_model``: the OOD forest of a model version."""

    model_version_id: int
    ood_version_id: int
    feature_names: tuple[str, ...]
    low: tuple[float, ...] = field(repr=False)
    high: tuple[float, ...] = field(repr=False)
    fill: tuple[float, ...] = field(repr=False)
    reference: tuple[float, ...] = field(repr=False)
    threshold: float
    n_fit: int
    n_reference: int
    reference_rows: str
    compiled: bool


@dataclass(frozen=True)
class OodFit:
    """What :func:`fit_version_ood` did: the stored row, the scorer, timings."""

    model: OodModel
    scorer: OodScorer | None = field(repr=False)
    created: bool
    fit_seconds: float
    compile_seconds: float | None
    compile_error: str | None


_OOD_MODEL_SQL = """
SELECT o.model_version_id, o.ood_version_id, o.feature_names, o.low, o.high, o.fill,
       o.reference, o.threshold, o.n_fit, o.n_reference, o.reference_rows,
       EXISTS (SELECT FROM skyclass.model_artifact AS a
                WHERE a.model_version_id = o.ood_version_id) AS compiled
  FROM skyclass.ood_model AS o
 WHERE o.model_version_id = %s
"""


def ood_model_of(conn: psycopg.Connection[Any], model_version_id: int) -> OodModel | None:
    """The OOD forest row of a model version, or None when it has none."""
    row = conn.execute(_OOD_MODEL_SQL, (model_version_id,)).fetchone()
    if row is None:
        return None
    return OodModel(
        model_version_id=int(row[0]),
        ood_version_id=int(row[1]),
        feature_names=tuple(str(n) for n in row[2]),
        low=tuple(float(v) for v in row[3]),
        high=tuple(float(v) for v in row[4]),
        fill=tuple(float(v) for v in row[5]),
        reference=tuple(float(v) for v in row[6]),
        threshold=float(row[7]),
        n_fit=int(row[8]),
        n_reference=int(row[9]),
        reference_rows=str(row[10]),
        compiled=bool(row[11]),
    )


def _split_rows(fold: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    calibration = np.flatnonzero(fold == -1)
    if calibration.size >= MIN_REFERENCE:
        return np.flatnonzero(fold != -1), calibration, "calibration split (fold -1)"
    return np.flatnonzero(fold != 0), np.flatnonzero(fold == 0), "fold 0"


def _checkpoint(forest: Any) -> bytes:
    import treelite.sklearn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = treelite.sklearn.import_model(forest)
    data: bytes = model.serialize_bytes()
    return data


def _feature_names(conn: psycopg.Connection[Any], feature_set_id: int) -> tuple[str, ...]:
    row = conn.execute(
        "SELECT feature_names FROM skyclass.feature_set WHERE feature_set_id = %s",
        (feature_set_id,),
    ).fetchone()
    if row is None:
        raise DomainError(f"feature set {feature_set_id} does not exist")
    return tuple(str(n) for n in row[0])


def insert_forest_version(
    conn: psycopg.Connection[Any],
    model_id: int,
    provenance: tuple[int, int, int, int],
    scorer: OodScorer,
) -> int:
    """Insert a fitted forest as the next version (task ``anomaly``) of model ``model_id``.

    ``provenance`` is (training_run_id, evaluation_id, snapshot_id,
    feature_set_id). Returns the new model_version_id; does not commit.
    """
    params = {**FOREST_PARAMS, "max_samples": int(scorer.forest.max_samples_)}
    row = conn.execute(
        "INSERT INTO skyclass.model_version (model_id, version, training_run_id, "
        "evaluation_id, snapshot_id, feature_set_id, task, estimator, params, n_features, "
        "classes, checkpoint) "
        "SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, 'anomaly', "
        "'IsolationForest', %s, %s, '{}', %s FROM skyclass.model_version WHERE model_id = %s "
        "RETURNING model_version_id",
        (
            model_id,
            *provenance,
            Jsonb({**params, "random_state": scorer.seed}),
            len(scorer.feature_names),
            _checkpoint(scorer.forest),
            model_id,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_ood_row(
    conn: psycopg.Connection[Any],
    model_version_id: int,
    ood_version_id: int,
    scorer: OodScorer,
    rows: tuple[int, int, str],
    fit_seconds: float,
) -> None:
    """Link forest ``ood_version_id`` to ``model_version_id`` in ``skyclass.ood_model``.

    ``rows`` is (n_fit, n_reference, reference_rows): the rows the forest was
    fitted on and read against. A feature-set anomaly model links its
    version to itself. Does not commit.
    """
    params = {**FOREST_PARAMS, "max_samples": int(scorer.forest.max_samples_)}
    conn.execute(
        "INSERT INTO skyclass.ood_model (model_version_id, ood_version_id, method, params, "
        "seed, feature_names, low, high, fill, reference, threshold, n_fit, n_reference, "
        "reference_rows, fit_seconds) VALUES (%s, %s, 'isolation_forest', %s, %s, %s, "
        "%s::real[], %s::real[], %s::real[], %s, %s, %s, %s, %s, %s)",
        (
            model_version_id,
            ood_version_id,
            Jsonb(params),
            scorer.seed,
            list(scorer.feature_names),
            _finite_or_nan(scorer.low),
            _finite_or_nan(scorer.high),
            [float(v) for v in scorer.fill],
            [float(v) for v in scorer.reference],
            IN_DOMAIN_PERCENTILE,
            *rows,
            fit_seconds,
        ),
    )


def register_ood_forest(
    conn: psycopg.Connection[Any],
    version: VersionRef,
    scorer: OodScorer,
    n_fit: int,
    n_reference: int,
    reference_rows: str,
    fit_seconds: float,
) -> int:
    """Register a fitted OOD scorer as the OOD forest of ``version``; its anomaly version id.

    Inserts the anomaly version (companion model ``<model>_ood``) and the
    ``skyclass.ood_model`` row in one transaction; does not compile.
    ``n_fit``/``n_reference``/``reference_rows`` describe the rows it was
    fitted and read against. A version that has a forest already is refused.
    """
    with conn.transaction():
        model_id = ensure_model(
            conn,
            f"{version.model}{OOD_MODEL_SUFFIX}",
            "anomaly",
            f"OOD forests of the versions of model {version.model} (skyclass.ood_model)",
        )
        # Serialise concurrent fits of the same parent (the PK below refuses the second).
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('skyclass.ood_model', %s))",
            (version.model_version_id,),
        )
        if ood_model_of(conn, version.model_version_id) is not None:
            raise _AlreadyFitted(f"{version.label} has an OOD forest already")
        provenance = (
            version.training_run_id,
            version.evaluation_id,
            version.snapshot_id,
            version.feature_set_id,
        )
        ood_version_id = insert_forest_version(conn, model_id, provenance, scorer)
        insert_ood_row(
            conn,
            version.model_version_id,
            ood_version_id,
            scorer,
            (n_fit, n_reference, reference_rows),
            fit_seconds,
        )
    return ood_version_id


def compile_ood_forest(
    conn: psycopg.Connection[Any], ood_version_id: int, opt_level: str, progress: bool
) -> tuple[float, str | None]:
    """Compile a registered forest; (seconds, None) or (seconds, why it could not be)."""
    from skyclass.compile import compile_model_version
    from skyclass.errors import CompileError

    t0 = time.perf_counter()
    try:
        compile_model_version(ood_version_id, conn=conn, opt_level=opt_level, progress=progress)
    except (CompileError, PermissionError) as exc:
        return time.perf_counter() - t0, str(exc)
    return time.perf_counter() - t0, None


def _finite_or_nan(values: np.ndarray) -> list[float]:
    """Training ranges as stored: a feature with no finite value gets NaN (never flags)."""
    return [float(v) if np.isfinite(v) else float("nan") for v in values]


class _AlreadyFitted(DomainError):
    """The version got its forest from another session meanwhile."""


def fit_version_ood(
    conn: psycopg.Connection[Any],
    ref: str | int,
    *,
    seed: int = defaults.SEED,
    compile_forest: bool = True,
    opt_level: str = "-O2",
    progress: bool = False,
) -> OodFit:
    """Fit, register and compile the OOD forest of model version ``ref`` unless it has one.

    Returns the stored row; ``created`` is False (and ``scorer`` None) when
    the version already had a forest, which is never refitted: versions and
    their forests are immutable. Compiling is attempted when
    ``compile_forest`` and the forest has no artifact yet; a role that may not
    register native code gets ``compile_error`` instead of an exception.
    ``opt_level`` is gcc's (``-O2``: about 10-20 s for the 100 trees here).
    """
    version = resolve_version(conn, ref)
    if version.task == "anomaly":
        raise DomainError(f"{version.label} is itself an OOD forest (task anomaly)")
    existing = ood_model_of(conn, version.model_version_id)
    scorer: OodScorer | None = None
    fit_seconds = 0.0
    created = False
    if existing is None:
        data = training_snapshot(conn, version)
        names = _feature_names(conn, version.feature_set_id)
        fit_rows, ref_rows, ref_kind = _split_rows(np.asarray(data.fold))
        if fit_rows.size < 2 or ref_rows.size < 1:
            raise DomainError(
                f"the training snapshot of {version.label} has too few rows for an OOD forest "
                f"({fit_rows.size} to fit, {ref_rows.size} held out)"
            )
        t0 = time.perf_counter()
        X = np.asarray(data.X, dtype=np.float64)
        scorer = fit_ood_scorer(X[fit_rows], names, reference=X[ref_rows], seed=seed)
        fit_seconds = time.perf_counter() - t0
        try:
            register_ood_forest(
                conn, version, scorer, fit_rows.size, ref_rows.size, ref_kind, fit_seconds
            )
            created = True
        except _AlreadyFitted:
            scorer = None
        if not conn.autocommit:
            conn.commit()
    model = ood_model_of(conn, version.model_version_id)
    assert model is not None
    compile_seconds: float | None = None
    compile_error: str | None = None
    if compile_forest and not model.compiled:
        compile_seconds, compile_error = compile_ood_forest(
            conn, model.ood_version_id, opt_level, progress
        )
        model = ood_model_of(conn, version.model_version_id)
        assert model is not None
    return OodFit(model, scorer, created, fit_seconds, compile_seconds, compile_error)
