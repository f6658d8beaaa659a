"""``skyclass domain``: fit, weigh, estimate and store for one (model version, catalog) pair.

The domain classifier is registered as a model version of its own and
compiled; the catalog's propensities and weights are then computed in the
database (``skyclass.domain_propensity``, ``skyclass.importance_weight``) and
written with ``INSERT ... SELECT``. A role that may not register native code
gets the same rows computed by scikit-learn and written with binary COPY.
The pair, objects and metrics are written in one transaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

from skyclass.domain import source
from skyclass.domain.classifier import DEFAULT_FOLDS, DEFAULT_SEED, HGB_PARAMS, fit_domain
from skyclass.domain.compiled import (
    DatabaseScoring,
    checkpoint_of,
    compile_domain_version,
    database_scoring,
    register_domain_version,
    score_sql,
)
from skyclass.domain.errors import DomainError
from skyclass.domain.expected import (
    DEFAULT_BOOTSTRAP,
    Estimate,
    expected_classification,
    expected_photoz,
)
from skyclass.domain.weights import (
    UNCOVERED_P,
    W_MAX,
    W_MIN,
    Weights,
    effective_size,
    importance_weights,
    reliability_problems,
    uncovered_fraction,
)


@dataclass(frozen=True)
class DomainResult:
    """What one ``skyclass domain`` run found and stored."""

    domain_shift_id: int
    model: str
    catalog: str
    auc: float
    auc_std: float
    n_train: int
    n_catalog: int
    train_clipped: float
    catalog_clipped: float
    uncovered_fraction: float
    n_effective: float
    problems: tuple[str, ...]
    estimates: tuple[Estimate, ...]
    domain_version_id: int
    scorer: str
    scorer_note: str = ""


def run_domain(
    conn: psycopg.Connection[Any],
    model: str,
    catalog: str,
    *,
    seed: int = DEFAULT_SEED,
    n_splits: int = DEFAULT_FOLDS,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    w_min: float = W_MIN,
    w_max: float = W_MAX,
    in_database: bool = True,
) -> DomainResult:
    """Fit the domain classifier of ``model`` against ``catalog`` and store every result.

    The classifier is registered as a version of ``<model>_domain``; with
    ``in_database`` (the default) and a role that may register artifacts it
    is compiled and the catalog is scored by ``skyclass.predict`` in the
    server (``scorer`` database), otherwise by scikit-learn here (python).
    """
    if not 0 < w_min < w_max < math.inf:
        raise DomainError(f"clip bounds must satisfy 0 < w_min < w_max < inf, not {w_min}, {w_max}")
    version = source.resolve_version(conn, model)
    cat = source.load_catalog_info(conn, catalog)
    features = source.catalog_features(conn, version, cat)
    data = source.training_snapshot(conn, version)
    oof = source.out_of_fold(conn, version, data)
    fit = fit_domain(data.X, features.X, seed=seed, n_splits=n_splits)
    train_w = importance_weights(
        fit.train_propensity, fit.n_train, fit.n_sample, w_min=w_min, w_max=w_max
    )
    w = train_w.w[oof.rows]
    y = data.label_index[oof.rows]
    if oof.grid is None:
        estimates = expected_classification(
            y, oof.proba, w, oof.classes, n_bootstrap=n_bootstrap, seed=seed
        )
    else:
        estimates = expected_photoz(
            oof.z_true, oof.proba, oof.grid, w, n_bootstrap=n_bootstrap, seed=seed
        )
    n_eff = effective_size(w)
    # The domain classifier becomes a model version, compiled when this role may register
    # native code; the catalog is then scored by skyclass.predict inside the server.
    scoring = database_scoring(conn) if in_database else DatabaseScoring(False, "not asked")
    domain_version_id = register_domain_version(
        conn, version, cat.name, fit, checkpoint_of(fit, version.n_features)
    )
    if scoring.possible:
        compile_domain_version(conn, domain_version_id)
    scorer = "database" if scoring.possible else "python"
    clip = (fit.n_train, fit.n_sample, w_min, w_max)
    with conn.transaction():
        if scoring.possible:
            score_sql(conn, domain_version_id, cat.name, clip)
            agg = conn.execute(
                "SELECT count(*), coalesce(avg(clipped::int), 0)::float8, "
                "coalesce(avg((propensity > %s)::int), 0)::float8 FROM domain_scored",
                (UNCOVERED_P,),
            ).fetchone()
            assert agg is not None
            n_catalog, catalog_clipped, uncovered = int(agg[0]), float(agg[1]), float(agg[2])
        else:
            p_catalog = fit.propensity(features.X)
            catalog_w = importance_weights(
                p_catalog, fit.n_train, fit.n_sample, w_min=w_min, w_max=w_max
            )
            n_catalog = int(features.object_id.size)
            catalog_clipped = catalog_w.fraction_clipped
            uncovered = uncovered_fraction(p_catalog)
        problems = reliability_problems(n_eff, w.size, train_w.fraction_clipped_high, uncovered)
        row = conn.execute(
            "INSERT INTO skyclass.domain_shift (model_version_id, catalog_id, catalog_name, "
            "feature_set_id, n_train, n_sample, n_catalog, seed, classifier, auc, auc_std, "
            "fold_auc, w_min, w_max, train_clipped, catalog_clipped, uncovered_threshold, "
            "uncovered_fraction, n_effective, reliable, problems, domain_version_id, scorer) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s) RETURNING domain_shift_id",
            (
                version.model_version_id,
                cat.catalog_id,
                cat.name,
                features.feature_set.feature_set_id,
                fit.n_train,
                fit.n_sample,
                n_catalog,
                seed,
                Jsonb({"estimator": "HistGradientBoostingClassifier", **HGB_PARAMS}),
                fit.auc,
                fit.auc_std,
                list(fit.fold_auc),
                w_min,
                w_max,
                train_w.fraction_clipped,
                catalog_clipped,
                UNCOVERED_P,
                uncovered,
                n_eff,
                not problems,
                problems,
                domain_version_id,
                scorer,
            ),
        ).fetchone()
        assert row is not None
        shift_id = int(row[0])
        if scoring.possible:
            conn.execute(
                "INSERT INTO skyclass.domain_object (domain_shift_id, object_id, propensity, "
                "weight, clipped) SELECT %s, object_id, propensity, weight, clipped "
                "FROM domain_scored",
                (shift_id,),
            )
        else:
            _copy_objects(conn, shift_id, features.object_id, p_catalog, catalog_w)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO skyclass.domain_metric (domain_shift_id, name, class_name, value, "
                "std, unweighted, n_effective) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        shift_id,
                        e.name,
                        e.class_name,
                        _finite(e.value),
                        _finite(e.std),
                        _finite(e.unweighted),
                        e.n_effective,
                    )
                    for e in estimates
                ],
            )
    return DomainResult(
        domain_shift_id=shift_id,
        model=version.label,
        catalog=cat.name,
        auc=fit.auc,
        auc_std=fit.auc_std,
        n_train=fit.n_train,
        n_catalog=n_catalog,
        train_clipped=train_w.fraction_clipped,
        catalog_clipped=catalog_clipped,
        uncovered_fraction=uncovered,
        n_effective=n_eff,
        problems=tuple(problems),
        estimates=tuple(estimates),
        domain_version_id=domain_version_id,
        scorer=scorer,
        scorer_note=scoring.reason,
    )


def _copy_objects(
    conn: psycopg.Connection[Any],
    shift_id: int,
    object_id: npt.NDArray[np.int64],
    propensity: npt.NDArray[np.float64],
    weights: Weights,
) -> None:
    """Write the client-computed propensities and weights with binary COPY."""
    with (
        conn.cursor(binary=True) as cur,
        cur.copy(
            "COPY skyclass.domain_object (domain_shift_id, object_id, propensity, weight, "
            "clipped) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["int8", "int8", "float4", "float4", "bool"])
        for oid, p, wt, c in zip(
            object_id.tolist(),
            propensity.tolist(),
            weights.w.tolist(),
            weights.clipped.tolist(),
            strict=True,
        ):
            copy.write_row((shift_id, oid, p, wt, c))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def format_result(result: DomainResult) -> str:
    """The CLI's text: AUC, coverage, reliability and the expected metrics beside CV."""
    lines = [
        f"domain shift {result.domain_shift_id}: {result.model} -> catalog {result.catalog}",
        f"  domain-classifier AUC {result.auc:.3f} ± {result.auc_std:.3f} "
        "(0.5 = no detectable shift)",
        f"  training rows {result.n_train}, catalog objects {result.n_catalog}",
        f"  domain classifier: model version {result.domain_version_id}, catalog scored "
        + (
            "in the database (skyclass.predict)"
            if result.scorer == "database"
            else "by scikit-learn in the client"
            + (f" ({result.scorer_note})" if result.scorer_note else "")
        ),
        f"  weights clipped: {result.train_clipped:.1%} of training rows, "
        f"{result.catalog_clipped:.1%} of catalog objects",
        f"  catalog not covered by the training data (p > {UNCOVERED_P}): "
        f"{result.uncovered_fraction:.1%}",
        f"  effective sample size {result.n_effective:.0f}",
    ]
    if result.problems:
        lines.append("  UNRELIABLE expected metrics: " + "; ".join(result.problems))
    lines.append(f"  {'metric':<24} {'expected':>18} {'CV (unweighted)':>16}")
    for e in result.estimates:
        name = f"{e.name}[{e.class_name}]" if e.class_name else e.name
        lines.append(f"  {name:<24} {e.value:>9.4f} ± {e.std:<6.4f} {e.unweighted:>16.4f}")
    return "\n".join(lines)
