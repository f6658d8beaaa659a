"""Training-set augmentation with Gaussian draws from the magnitude errors.

Each training row gets ``n_copies`` noisy copies, ``m' = m + sigma_eff * N(0, 1)``
per band, drawn from a seeded generator, so the model sees how far the
photometry of the same object could scatter. Errors need care: BOSS DR10 has
``magerr_u`` up to 3.5e4 mag, i.e. no detection at all, and a Gaussian draw
with that width would produce magnitudes of -70000. Two policies, both with a
threshold ``max_error`` (default 1 mag, i.e. signal-to-noise of about 1):

``cap`` (default)
    ``sigma_eff = min(sigma, max_error)``: a non-detection is perturbed like a
    barely detected source.
``nondetection``
    a band whose error exceeds ``max_error`` becomes NaN in the copies (the
    tree ensembles treat NaN as missing), teaching the model to cope without it;
    the original row keeps its value.

Errors that are NaN, infinite, zero or negative mean "unknown": the band is not
perturbed (a NaN magnitude stays NaN). Copies of a row must stay in that row's
cross-validation fold, otherwise the copies of a test object leak into its
training set: :func:`augmentation_effect` augments inside each fold's training
rows only and compares with the un-augmented run on the same folds.
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
    cross_validate,
    make_splits,
    mean_std,
)
from skyclass.train.errors import TrainError
from skyclass.train.estimators import EstimatorConfig

POLICIES = ("cap", "nondetection")
DEFAULT_MAX_ERROR = 1.0


@dataclass(frozen=True)
class AugmentConfig:
    """How a training set was augmented (recorded with the model)."""

    n_copies: int
    seed: int
    max_error: float = DEFAULT_MAX_ERROR
    policy: str = "cap"

    def __post_init__(self) -> None:
        if isinstance(self.n_copies, bool) or not isinstance(self.n_copies, int):
            raise TrainError(f"n_copies must be an integer, not {self.n_copies!r}")
        if self.n_copies < 0:
            raise TrainError(f"n_copies must be >= 0, not {self.n_copies}")
        if not self.max_error > 0:
            raise TrainError(f"max_error must be > 0, not {self.max_error}")
        if self.policy not in POLICIES:
            raise TrainError(f"augmentation policy must be one of {POLICIES}, not {self.policy!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "n_copies": self.n_copies,
            "seed": self.seed,
            "max_error": self.max_error,
            "policy": self.policy,
        }


def augment_photometry(
    magnitudes: Any, errors: Any, config: AugmentConfig
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Originals followed by ``n_copies`` noisy copies; also the source row of every output row.

    Returns ``(mags, source)`` with ``n * (1 + n_copies)`` rows: rows ``0..n-1``
    are the originals, then copy 1 of every row, copy 2, and so on; ``source[i]``
    is the input row that output row ``i`` came from (use it to repeat labels
    and other columns). The same config and inputs always give the same output.
    """
    m = np.asarray(magnitudes, dtype=np.float64)
    s = np.asarray(errors, dtype=np.float64)
    if m.ndim != 2 or m.shape != s.shape:
        raise TrainError(f"magnitudes {m.shape} and errors {s.shape} must be equal 2-D shapes")
    n = m.shape[0]
    known = np.isfinite(s) & (s > 0)
    sigma = np.where(known, s, 0.0)
    drop = np.zeros(m.shape, dtype=np.bool_)
    if config.policy == "cap":
        sigma = np.minimum(sigma, config.max_error)
    else:
        drop = sigma > config.max_error
        sigma = np.where(drop, 0.0, sigma)
    rng = np.random.default_rng(config.seed)
    noise = rng.standard_normal((config.n_copies, *m.shape))
    copies = m[None, :, :] + sigma[None, :, :] * noise
    copies = np.where(drop[None, :, :], np.nan, copies)
    out = np.concatenate([m, copies.reshape(-1, m.shape[1])], axis=0)
    source = np.tile(np.arange(n, dtype=np.intp), config.n_copies + 1)
    return out, source


Scorer = Callable[
    [npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[Any]], Mapping[str, float]
]
"""Per-fold scorer: (the fold's row indices, their probabilities, classes) -> name -> value."""


@dataclass(frozen=True)
class MetricEffect:
    """One metric without and with augmentation, and the paired per-fold difference."""

    baseline: MeanStd
    augmented: MeanStd
    difference: MeanStd
    per_fold_difference: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form."""
        return {
            "baseline": self.baseline.to_dict(),
            "augmented": self.augmented.to_dict(),
            "difference": self.difference.to_dict(),
            "per_fold_difference": [
                v if np.isfinite(v) else None for v in self.per_fold_difference
            ],
        }


@dataclass(frozen=True)
class AugmentationEffect:
    """Effect of augmentation on every metric, as augmented minus baseline over the same folds."""

    config: AugmentConfig
    metrics: Mapping[str, MetricEffect]
    baseline: CrossValResult
    augmented: CrossValResult

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form (without the out-of-fold arrays)."""
        return {
            "augment": self.config.to_dict(),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
        }


def _fold_scores(result: CrossValResult, scorer: Scorer | None) -> list[Mapping[str, float]]:
    if scorer is None:
        return [f.scalars() for f in result.folds]
    scores = []
    for k in sorted(int(v) for v in np.unique(result.fold[result.fold >= 0])):
        rows = np.flatnonzero(result.fold == k)
        scores.append(scorer(rows, result.oof_proba[rows], result.labels))
    return scores


def augmentation_effect(
    estimator: EstimatorConfig | str | EstimatorFactory,
    magnitudes: Any,
    errors: Any,
    y: Any,
    *,
    features: Callable[[npt.NDArray[np.float64]], Any],
    feature_names: Sequence[str],
    config: AugmentConfig,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    n_splits: int = DEFAULT_SPLITS,
    folds: Any = None,
    stratify: Any = None,
    scorer: Scorer | None = None,
    n_jobs: int | None = None,
) -> AugmentationEffect:
    """Cross-validate with and without augmentation on the same folds and compare every metric.

    ``features`` turns a magnitude matrix into the feature matrix (e.g. adds
    colours), so copies get consistent derived features. Test folds are never
    augmented. The difference of a metric is computed per fold (augmented minus
    baseline, paired) and summarised as mean ± sample std over folds. ``scorer``
    replaces the classification metrics: it gets a fold's row indices and
    probabilities (e.g. to score photo-z PDFs against ``z_spec[rows]``). Folds
    come from ``folds`` or :func:`make_splits` on ``stratify`` (default ``y``)
    with ``seed``.
    """
    mags = np.asarray(magnitudes, dtype=np.float64)
    errs = np.asarray(errors, dtype=np.float64)
    labels = np.asarray(y)
    if mags.shape != errs.shape or labels.shape != (mags.shape[0],):
        raise TrainError("magnitudes, errors and y must have the same number of rows")
    if folds is None:
        folds = make_splits(
            labels if stratify is None else stratify, n_splits=n_splits, seed=seed
        ).fold
    common: dict[str, Any] = {
        "feature_names": feature_names,
        "params": params,
        "seed": seed,
        "folds": folds,
        "n_jobs": n_jobs,
    }

    def train_data(rows: npt.NDArray[np.intp]) -> tuple[Any, Any]:
        augmented, source = augment_photometry(mags[rows], errs[rows], config)
        return features(augmented), labels[rows][source]

    X = features(mags)
    base = cross_validate(estimator, X, labels, **common)
    aug = cross_validate(estimator, X, labels, train_data=train_data, **common)
    base_scores = _fold_scores(base, scorer)
    aug_scores = _fold_scores(aug, scorer)
    effects = {}
    for name in base_scores[0]:
        b = [float(s[name]) for s in base_scores]
        a = [float(s[name]) for s in aug_scores]
        diff = [x - y0 for x, y0 in zip(a, b, strict=True)]
        effects[name] = MetricEffect(mean_std(b), mean_std(a), mean_std(diff), tuple(diff))
    return AugmentationEffect(config, effects, base, aug)
