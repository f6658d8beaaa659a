"""``skyclass domain``: fit, weigh, estimate and store for one (model version, catalog) pair.

The per-object propensities are computed in Python with the fitted domain
classifier and written with binary COPY (the compile/score path is not used
yet for the domain classifier). Everything is written in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from skyclass.domain import source
from skyclass.domain.classifier import DEFAULT_FOLDS, DEFAULT_SEED, HGB_PARAMS, fit_domain
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
) -> DomainResult:
    """Fit the domain classifier of ``model`` against ``catalog`` and store every result."""
    version = source.resolve_version(conn, model)
    cat = source.load_catalog_info(conn, catalog)
    features = source.catalog_features(conn, version, cat)
    data = source.training_snapshot(conn, version)
    oof = source.out_of_fold(conn, version, data)
    fit = fit_domain(data.X, features.X, seed=seed, n_splits=n_splits)
    train_w = importance_weights(
        fit.train_propensity, fit.n_train, fit.n_sample, w_min=w_min, w_max=w_max
    )
    p_catalog = fit.propensity(features.X)
    catalog_w = importance_weights(p_catalog, fit.n_train, fit.n_sample, w_min=w_min, w_max=w_max)
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
    uncovered = uncovered_fraction(p_catalog)
    problems = reliability_problems(n_eff, w.size, train_w.fraction_clipped_high, uncovered)
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO skyclass.domain_shift (model_version_id, catalog_id, catalog_name, "
            "feature_set_id, n_train, n_sample, n_catalog, seed, classifier, auc, auc_std, "
            "fold_auc, w_min, w_max, train_clipped, catalog_clipped, uncovered_threshold, "
            "uncovered_fraction, n_effective, reliable, problems) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "RETURNING domain_shift_id",
            (
                version.model_version_id,
                cat.catalog_id,
                cat.name,
                features.feature_set.feature_set_id,
                fit.n_train,
                fit.n_sample,
                int(features.object_id.size),
                seed,
                Jsonb({"estimator": "HistGradientBoostingClassifier", **HGB_PARAMS}),
                fit.auc,
                fit.auc_std,
                list(fit.fold_auc),
                w_min,
                w_max,
                train_w.fraction_clipped,
                catalog_w.fraction_clipped,
                UNCOVERED_P,
                uncovered,
                n_eff,
                not problems,
                problems,
            ),
        ).fetchone()
        assert row is not None
        shift_id = int(row[0])
        with (
            conn.cursor(binary=True) as cur,
            cur.copy(
                "COPY skyclass.domain_object (domain_shift_id, object_id, propensity, weight, "
                "clipped) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int8", "int8", "float4", "float4", "bool"])
            for oid, p, wt, c in zip(
                features.object_id.tolist(),
                p_catalog.tolist(),
                catalog_w.w.tolist(),
                catalog_w.clipped.tolist(),
                strict=True,
            ):
                copy.write_row((shift_id, oid, p, wt, c))
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
        n_catalog=int(features.object_id.size),
        train_clipped=train_w.fraction_clipped,
        catalog_clipped=catalog_w.fraction_clipped,
        uncovered_fraction=uncovered,
        n_effective=n_eff,
        problems=tuple(problems),
        estimates=tuple(estimates),
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def format_result(result: DomainResult) -> str:
    """The CLI's text: AUC, coverage, reliability and the expected metrics beside CV."""
    lines = [
        f"domain shift {result.domain_shift_id}: {result.model} -> catalog {result.catalog}",
        f"  domain-classifier AUC {result.auc:.3f} ± {result.auc_std:.3f} "
        "(0.5 = no detectable shift)",
        f"  training rows {result.n_train}, catalog objects {result.n_catalog}",
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
