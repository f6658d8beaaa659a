"""Which features matter: permutation importance and ablation of feature groups.

*Permutation importance* shuffles one feature column of a held-out set
(``n_repeats`` seeded permutations) and reports how much the metric degrades;
it needs only the fitted model. *Group ablation* retrains without each group of
features (e.g. all colours, or all u-band quantities) on the same K folds as
the full model and reports the paired per-fold change with its K-fold error
bar; it is slower but answers "would the model be as good without them", which
permutation importance cannot when features are correlated (colours and
magnitudes are).

Importance is always a *degradation*: for scores (accuracy, balanced
accuracy, ROC AUC) ``baseline - permuted``, for losses (log loss, Brier, ECE)
``permuted - baseline``, so positive means the feature helps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.train.crossval import (
    DEFAULT_SPLITS,
    CrossValResult,
    EstimatorFactory,
    MeanStd,
    ProgressCallback,
    align_proba,
    cross_validate,
    make_splits,
    mean_std,
)
from skyclass.train.errors import TrainError
from skyclass.train.estimators import Classifier, EstimatorConfig, as_features
from skyclass.train.metrics import OVERALL_FIELDS, classification_metrics

LOSSES = frozenset({"log_loss", "brier", "ece"})
MetricFn = Callable[[Any, npt.NDArray[np.float64], npt.NDArray[Any]], float]


def _metric(name: str) -> MetricFn:
    if name not in OVERALL_FIELDS:
        raise TrainError(f"unknown metric {name!r}; use one of {OVERALL_FIELDS}")

    def score(y: Any, proba: npt.NDArray[np.float64], classes: npt.NDArray[Any]) -> float:
        return float(getattr(classification_metrics(y, proba, classes), name))

    return score


@dataclass(frozen=True)
class FeatureImportance:
    """Degradation of the metric when one feature is permuted: mean, std, every repeat."""

    feature: str
    mean: float
    std: float
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "feature": self.feature,
            "mean": self.mean,
            "std": self.std,
            "values": list(self.values),
        }


def permutation_importance(
    model: Classifier,
    X: Any,
    y: Any,
    feature_names: Sequence[str],
    *,
    metric: str = "log_loss",
    n_repeats: int = 5,
    seed: int = 0,
) -> list[FeatureImportance]:
    """Permutation importance of every feature of a fitted model on held-out rows ``X, y``.

    For each feature and repeat the column is shuffled with a generator seeded
    by ``seed`` (same seed, same permutations) and the metric recomputed from
    ``predict_proba`` (hard labels are the most probable class). ``std`` is the
    sample std over repeats. Results are in feature order.
    """
    if n_repeats < 1:
        raise TrainError(f"n_repeats must be >= 1, not {n_repeats}")
    features = as_features(X)
    names = list(feature_names)
    if features.shape[1] != len(names):
        raise TrainError(f"X has {features.shape[1]} columns but {len(names)} feature names")
    labels = np.asarray(y)
    classes = np.asarray(model.classes_)
    score = _metric(metric)
    sign = 1.0 if metric in LOSSES else -1.0

    def evaluate(matrix: npt.NDArray[np.float32]) -> float:
        proba = align_proba(model.predict_proba(matrix), model.classes_, classes)
        return score(labels, proba, classes)

    baseline = evaluate(features)
    rng = np.random.default_rng(seed)
    out = []
    for j, name in enumerate(names):
        values = []
        for _ in range(n_repeats):
            shuffled = features.copy()
            shuffled[:, j] = features[rng.permutation(features.shape[0]), j]
            values.append(sign * (evaluate(shuffled) - baseline))
        arr = np.asarray(values)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out.append(FeatureImportance(name, float(arr.mean()), std, tuple(values)))
    return out


@dataclass(frozen=True)
class GroupAblation:
    """Change of each metric when one feature group is dropped (ablated minus full, per fold)."""

    group: str
    dropped: tuple[str, ...]
    full: Mapping[str, MeanStd]
    ablated: Mapping[str, MeanStd]
    delta: Mapping[str, MeanStd]

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form."""
        return {
            "group": self.group,
            "dropped": list(self.dropped),
            "full": {k: v.to_dict() for k, v in self.full.items()},
            "ablated": {k: v.to_dict() for k, v in self.ablated.items()},
            "delta": {k: v.to_dict() for k, v in self.delta.items()},
        }


def group_ablation(
    estimator: EstimatorConfig | str | EstimatorFactory,
    X: Any,
    y: Any,
    feature_names: Sequence[str],
    groups: Mapping[str, Sequence[str]],
    *,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    n_splits: int = DEFAULT_SPLITS,
    folds: Any = None,
    metrics: Sequence[str] = ("accuracy", "balanced_accuracy", "log_loss"),
    n_jobs: int | None = None,
    progress: ProgressCallback | bool | None = None,
) -> list[GroupAblation]:
    """Retrain without each feature group on the same folds; metric change with K-fold error bars.

    The full model and every ablated model are cross-validated on identical
    folds (``folds``, or :func:`make_splits` with ``seed``), so the per-fold
    differences are paired; ``delta`` is ``ablated - full`` as mean ± sample
    std over folds (a negative accuracy delta means the group helps).
    """
    names = list(feature_names)
    features = as_features(X)
    labels = np.asarray(y)
    for metric in metrics:
        if metric not in OVERALL_FIELDS:
            raise TrainError(f"unknown metric {metric!r}; use one of {OVERALL_FIELDS}")
    for group, members in groups.items():
        missing = sorted(set(members) - set(names))
        if missing:
            raise TrainError(f"group {group!r}: features {missing} are not among {names}")
        if set(members) >= set(names):
            raise TrainError(f"group {group!r} would drop every feature")
    if folds is None:
        folds = make_splits(labels, n_splits=n_splits, seed=seed).fold
    common: dict[str, Any] = {
        "params": params,
        "seed": seed,
        "folds": folds,
        "n_jobs": n_jobs,
        "progress": progress,
    }

    def per_fold(result: CrossValResult) -> dict[str, list[float]]:
        return {m: [float(getattr(f, m)) for f in result.folds] for m in metrics}

    full = per_fold(cross_validate(estimator, features, labels, feature_names=names, **common))
    out = []
    for group, members in groups.items():
        keep = [j for j, n in enumerate(names) if n not in set(members)]
        result = cross_validate(
            estimator,
            features[:, keep],
            labels,
            feature_names=[names[j] for j in keep],
            **common,
        )
        ablated = per_fold(result)
        out.append(
            GroupAblation(
                group=group,
                dropped=tuple(members),
                full={m: mean_std(full[m]) for m in metrics},
                ablated={m: mean_std(ablated[m]) for m in metrics},
                delta={
                    m: mean_std([a - b for a, b in zip(ablated[m], full[m], strict=True)])
                    for m in metrics
                },
            )
        )
    return out
