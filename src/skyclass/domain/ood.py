"""Out-of-distribution score of a model version: how far an object lies from its training data.

An IsolationForest fitted on the version's training features gives each object
an anomaly score; the score is reported as a *percentile of the training set's
own scores* (held-out reference rows when given), so 50 means "as typical as
the median training object" and 99.5 "stranger than 99.5% of the training
set", whatever the model. Trees are scale-free, so raw features go in; the
forest compiles with Treelite like the classifiers.

Per-feature out-of-range flags compare each feature with the training
minimum and maximum. ``in_domain`` holds when the percentile is below
:data:`IN_DOMAIN_PERCENTILE` and no feature is out of range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import IsolationForest

from skyclass.domain import defaults
from skyclass.domain.errors import DomainError

#: Objects scoring at or above this training percentile are out of domain.
IN_DOMAIN_PERCENTILE = 99.0
#: Points of the reference distribution kept to turn scores into percentiles.
REFERENCE_QUANTILES = 1001
#: A forest small enough to cost a few microseconds per object once compiled.
FOREST_PARAMS: dict[str, Any] = {"n_estimators": 100, "max_samples": 256}

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class OodScorer:
    """A fitted OOD scorer: the forest, the training ranges and the reference quantiles."""

    forest: Any = field(repr=False)
    feature_names: tuple[str, ...]
    low: FloatArray = field(repr=False)
    high: FloatArray = field(repr=False)
    fill: FloatArray = field(repr=False)
    reference: FloatArray = field(repr=False)
    seed: int

    def raw_score(self, features: npt.ArrayLike) -> FloatArray:
        """Anomaly score per row (higher: stranger); NaN features take the training median."""
        x = self._matrix(features)
        x = np.where(np.isnan(x), self.fill, x)
        return np.asarray(-self.forest.score_samples(x), dtype=np.float64)

    def percentile(self, features: npt.ArrayLike) -> FloatArray:
        """Percentile (0 to 100) of each row's score among the reference training scores."""
        return score_percentile(self.raw_score(features), self.reference)

    def out_of_range(self, features: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Per row and feature: outside the training [min, max] (NaN is never out of range)."""
        x = self._matrix(features)
        with np.errstate(invalid="ignore"):
            return np.asarray((x < self.low) | (x > self.high))

    def in_domain(self, features: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Below the percentile threshold and inside every training range."""
        return np.asarray(
            (self.percentile(features) < IN_DOMAIN_PERCENTILE)
            & ~self.out_of_range(features).any(axis=1)
        )

    def _matrix(self, features: npt.ArrayLike) -> FloatArray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise DomainError(
                f"OOD scorer expects {len(self.feature_names)} features "
                f"({', '.join(self.feature_names)}), got shape {x.shape}"
            )
        return x


def score_percentile(scores: FloatArray, reference: FloatArray) -> FloatArray:
    """Percentile of each score within the sorted reference quantiles (linear between them)."""
    grid = np.linspace(0.0, 100.0, reference.size)
    return np.asarray(np.interp(scores, reference, grid, left=0.0, right=100.0))


def fit_ood_scorer(
    train: npt.ArrayLike,
    feature_names: tuple[str, ...],
    reference: npt.ArrayLike | None = None,
    seed: int = defaults.SEED,
) -> OodScorer:
    """Fit the forest on ``train``; percentiles refer to ``reference`` (held-out) or ``train``."""
    x = np.asarray(train, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] != len(feature_names):
        raise DomainError(
            f"OOD scorer needs at least 2 training rows of {len(feature_names)} features"
        )
    fill = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    params = {**FOREST_PARAMS, "max_samples": min(FOREST_PARAMS["max_samples"], x.shape[0])}
    forest = IsolationForest(random_state=seed, **params)
    forest.fit(np.where(np.isnan(x), fill, x))
    with np.errstate(all="ignore"):
        low = np.nanmin(x, axis=0)
        high = np.nanmax(x, axis=0)
    scorer = OodScorer(
        forest=forest,
        feature_names=tuple(feature_names),
        low=low,
        high=high,
        fill=fill,
        reference=np.zeros(REFERENCE_QUANTILES),
        seed=seed,
    )
    ref_rows = x if reference is None else np.asarray(reference, dtype=np.float64)
    ref_scores = scorer.raw_score(ref_rows)
    quantiles = np.quantile(ref_scores, np.linspace(0.0, 1.0, REFERENCE_QUANTILES))
    return OodScorer(
        forest=forest,
        feature_names=scorer.feature_names,
        low=low,
        high=high,
        fill=fill,
        reference=np.maximum.accumulate(quantiles),
        seed=seed,
    )
