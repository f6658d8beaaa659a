"""Anomaly models of a feature set: the oddest objects of a catalog, scored in the database.

The OOD forest of a model version (:mod:`skyclass.domain.ood_store`) needs a
classifier and its training snapshot. An *anomaly model* needs neither: an
IsolationForest (:func:`skyclass.domain.ood.fit_ood_scorer`, the same one)
fitted on an unlabelled sample of any feature build, registered and compiled
with the same registry rows, then scored by the same chunked OOD job
(:func:`skyclass.domain.ood_job.run_ood_job`, ``skyclass.refresh_ood``):

- the sample is frozen as a training snapshot of task ``anomaly``
  (:func:`skyclass.train.snapshot.create_sample_snapshot`): fold 0 fits the
  forest, fold -1 (20%) is held out as the reference a score's percentile is
  read against;
- a training run and an evaluation (estimator ``isolation_forest``) record the
  settings and the fitting time;
- the forest becomes version N of model NAME (task ``anomaly``), and its
  ``skyclass.ood_model`` row links the version to itself, so every OOD
  function takes NAME (or NAME:N) where it takes a classifier version.

``skyclass.anomaly_rank(target, catalog)`` ranks the scored objects 1..N,
strangest first; :func:`anomaly_top` reads its head with the features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from skyclass.domain import defaults
from skyclass.domain.compiled import record_fit
from skyclass.domain.errors import DomainError
from skyclass.domain.ood import FOREST_PARAMS, OodScorer, fit_ood_scorer
from skyclass.domain.ood_store import (
    OOD_MODEL_SUFFIX,
    OodModel,
    compile_ood_forest,
    insert_forest_version,
    insert_ood_row,
    ood_model_of,
)
from skyclass.errors import SkyclassError
from skyclass.registry.catalogs import find_catalog
from skyclass.registry.features import find_feature_build
from skyclass.registry.models import ensure_model, parse_model_ref
from skyclass.train.snapshot import create_sample_snapshot, load_feature_set_info, snapshot_data

#: Objects drawn from the feature build when --sample is not given.
DEFAULT_SAMPLE = 50_000
#: Share of the sample held out as the percentile reference (fold -1).
REFERENCE_FRACTION = 0.2
ESTIMATOR = "isolation_forest"


@dataclass(frozen=True)
class AnomalyFit:
    """What :func:`fit_anomaly_model` did: the version, its forest row, timings."""

    label: str
    model: OodModel
    scorer: OodScorer = field(repr=False)
    snapshot_id: int
    feature_set: str
    fit_seconds: float
    compile_seconds: float | None
    compile_error: str | None


def _check_name(name: str) -> None:
    parsed = parse_model_ref(name) if isinstance(name, str) else name
    if not isinstance(parsed, tuple) or parsed[1] is not None:
        raise DomainError(
            f"an anomaly model is named by a lower-case name (a-z, 0-9, _), not {name!r}"
        )
    if name.endswith(OOD_MODEL_SUFFIX):
        raise DomainError(
            f"model names ending in {OOD_MODEL_SUFFIX!r} hold the OOD forests of classifiers "
            f"(skyclass ood fit); choose another name than {name!r}"
        )


def fit_anomaly_model(
    conn: psycopg.Connection[Any],
    name: str,
    feature_set: str | int,
    catalog: str | None = None,
    *,
    sample: int | None = DEFAULT_SAMPLE,
    seed: int = defaults.SEED,
    compile_forest: bool = True,
    opt_level: str = "-O2",
    progress: bool = False,
) -> AnomalyFit:
    """Fit, register and compile a new version of anomaly model ``name`` on a feature build.

    ``feature_set`` is a feature set name (its build on ``catalog``),
    ``NAME:HASHPREFIX`` or an id; ``sample`` objects of the build (all when
    None) are drawn with ``seed``. The snapshot, training run, evaluation,
    version and ``skyclass.ood_model`` row are written in one transaction;
    compiling (needs the role that may register native code) follows, and a
    role that may not gets ``compile_error`` instead of an exception.
    """
    _check_name(name)
    started = datetime.now(UTC)
    with conn.transaction():
        try:
            info = load_feature_set_info(
                conn, find_feature_build(conn, feature_set, catalog=catalog)
            )
        except SkyclassError as exc:
            raise DomainError(f"anomaly model {name!r}: {exc}") from None
        if catalog is not None and info.catalog.name != catalog:
            raise DomainError(
                f"feature set {feature_set!r} is built on catalog {info.catalog.name!r}, "
                f"not {catalog!r}: build it there first (skyclass features build)"
            )
        try:
            snapshot = create_sample_snapshot(
                conn, info, sample=sample, reference_fraction=REFERENCE_FRACTION, seed=seed
            )
        except SkyclassError as exc:
            raise DomainError(f"anomaly model {name!r}: {exc}") from None
        data = snapshot_data(conn, snapshot)
        fit_rows = np.flatnonzero(data.fold == 0)
        ref_rows = np.flatnonzero(data.fold == -1)
        t0 = time.perf_counter()
        X = np.asarray(data.X, dtype=np.float64)
        scorer = fit_ood_scorer(X[fit_rows], info.feature_names, reference=X[ref_rows], seed=seed)
        fit_seconds = time.perf_counter() - t0
        model_id = ensure_model(
            conn, name, "anomaly", f"Anomaly model (IsolationForest) of feature set {info.name}"
        )
        settings = {
            "anomaly_of": info.label,
            "catalog": info.catalog.name,
            "sample": int(data.object_id.size),
            "seed": seed,
        }
        run, evaluation = record_fit(
            conn,
            model_id,
            snapshot.snapshot_id,
            settings,
            started,
            (ESTIMATOR, dict(FOREST_PARAMS), seed, fit_seconds),
        )
        provenance = (run, evaluation, snapshot.snapshot_id, info.feature_set_id)
        version_id = insert_forest_version(conn, model_id, provenance, scorer)
        insert_ood_row(
            conn,
            version_id,
            version_id,
            scorer,
            (int(fit_rows.size), int(ref_rows.size), "held-out sample (fold -1)"),
            fit_seconds,
        )
        number = conn.execute(
            "SELECT version FROM skyclass.model_version WHERE model_version_id = %s",
            (version_id,),
        ).fetchone()
        assert number is not None
    if not conn.autocommit:
        conn.commit()
    compile_seconds: float | None = None
    compile_error: str | None = None
    if compile_forest:
        compile_seconds, compile_error = compile_ood_forest(conn, version_id, opt_level, progress)
    model = ood_model_of(conn, version_id)
    assert model is not None
    return AnomalyFit(
        label=f"{name}:{number[0]}",
        model=model,
        scorer=scorer,
        snapshot_id=snapshot.snapshot_id,
        feature_set=info.label,
        fit_seconds=fit_seconds,
        compile_seconds=compile_seconds,
        compile_error=compile_error,
    )


@dataclass(frozen=True)
class AnomalyTop:
    """The head of ``skyclass.anomaly_rank`` with each object's features."""

    model_version_id: int | None
    feature_names: tuple[str, ...]
    rows: list[tuple[Any, ...]]  # rank, object_id, raw_score, percentile, in_domain, x


def anomaly_top(
    conn: psycopg.Connection[Any], target: str, catalog: str, limit: int = 20
) -> AnomalyTop:
    """The ``limit`` strangest objects of ``catalog`` for ``target`` with their features.

    ``target``: an anomaly model (newest version), MODEL:VERSION, a
    model_version_id or a deployment. The features are those the newest
    finished OOD run scored. Raises :class:`DomainError` with the database's
    message (no such model or catalog, no forest, not scored yet).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise DomainError(f"limit must be a positive integer, not {limit!r}")
    try:
        with conn.transaction():
            ranked = conn.execute(
                "SELECT rank, object_id, raw_score, percentile, in_domain, model_version_id "
                "FROM skyclass.anomaly_rank(%s, %s) WHERE rank <= %s ORDER BY rank",
                (target, catalog, limit),
            ).fetchall()
            if not ranked:
                return AnomalyTop(None, (), [])
            version = int(ranked[0][5])
            run = conn.execute(
                "SELECT r.feature_table, o.feature_names FROM skyclass.ood_run AS r "
                "JOIN skyclass.ood_model AS o USING (model_version_id) "
                "WHERE r.model_version_id = %s AND r.catalog_id = %s AND r.status = 'done' "
                "ORDER BY r.ood_run_id DESC LIMIT 1",
                (version, find_catalog(conn, catalog).catalog_id),
            ).fetchone()
            assert run is not None  # anomaly_rank refuses a pair without a finished run
            schema, _, table = str(run[0]).partition(".")
            features = dict(
                conn.execute(
                    sql.SQL("SELECT object_id, x FROM {} WHERE object_id = ANY(%s)").format(
                        sql.Identifier(schema, table.strip('"'))
                    ),
                    ([r[1] for r in ranked],),
                ).fetchall()
            )
    except psycopg.Error as exc:
        diag = exc.diag
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        raise DomainError(f"{diag.message_primary or str(exc).strip()}{hint}") from None
    rows = [(*r[:5], features.get(r[1])) for r in ranked]
    return AnomalyTop(version, tuple(str(n) for n in run[1]), rows)
