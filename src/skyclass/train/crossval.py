"""Stratified K-fold cross-validation with per-fold metrics and mean ± std.

Every metric skyclass reports carries a K-fold error bar: the model is refitted
K times, each fold is scored by a model that never saw it, and each metric is
summarised as the mean and the sample standard deviation (``ddof=1``) over the
folds. The out-of-fold probabilities are kept (for calibration fitted by
cross-fitting, and for reliability plots). :func:`make_splits` materialises the
fold assignment and a held-out calibration split as plain arrays, which is what
a training snapshot stores, so that a CV run can be repeated exactly.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from skyclass.train.errors import TrainError
from skyclass.train.estimators import Classifier, EstimatorConfig, as_features, estimator_config
from skyclass.train.metrics import (
    DEFAULT_ECE_BINS,
    DEFAULT_FPR,
    ClassificationMetrics,
    classification_metrics,
    label_indices,
)

DEFAULT_SPLITS = 5


@dataclass(frozen=True)
class Splits:
    """Fold number of every row (``-1`` for calibration rows) and the calibration mask."""

    fold: npt.NDArray[np.int16]
    calibration: npt.NDArray[np.bool_]
    n_splits: int
    seed: int
    calibration_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """JSON record of how the split was made, with the per-fold and calibration sizes."""
        return {
            "n_splits": self.n_splits,
            "seed": self.seed,
            "calibration_fraction": self.calibration_fraction,
            "fold_sizes": [int((self.fold == k).sum()) for k in range(self.n_splits)],
            "calibration_size": int(self.calibration.sum()),
        }


def make_splits(
    y: Any,
    *,
    n_splits: int = DEFAULT_SPLITS,
    seed: int = 0,
    calibration_fraction: float = 0.0,
) -> Splits:
    """Assign every row to a stratified fold, after setting aside a stratified calibration split.

    With ``calibration_fraction > 0`` that fraction of the rows (stratified by
    ``y``, seeded) is marked ``calibration`` and gets fold ``-1``: no model of
    the CV or the final fit trains on it, so calibration maps fitted there are
    honest. The other rows get folds ``0..n_splits-1`` from scikit-learn's
    ``StratifiedKFold(shuffle=True, random_state=seed)``. ``y`` is whatever the
    split should be stratified on (class labels, or redshift bins). Every class
    needs at least ``n_splits`` rows outside the calibration split.
    """
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.size == 0:
        raise TrainError(f"y must be a non-empty 1-D array, not of shape {labels.shape}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise TrainError(f"n_splits must be an integer >= 2, not {n_splits!r}")
    if not 0.0 <= calibration_fraction < 1.0:
        raise TrainError(f"calibration_fraction must be in [0, 1), not {calibration_fraction}")
    n = labels.size
    _, codes = np.unique(labels, return_inverse=True)
    calibration = np.zeros(n, dtype=np.bool_)
    if calibration_fraction > 0.0:
        splitter = StratifiedShuffleSplit(
            n_splits=1, test_size=calibration_fraction, random_state=seed
        )
        _, cal_index = next(splitter.split(np.zeros((n, 1)), codes))
        calibration[cal_index] = True
    rest = np.flatnonzero(~calibration)
    counts = np.bincount(codes[rest])
    if counts.min() < n_splits:
        rare = np.unique(labels)[np.flatnonzero(counts < n_splits)].tolist()
        raise TrainError(
            f"classes {rare[:10]} have fewer than n_splits={n_splits} rows to split; "
            "merge rare classes (or redshift bins) or use fewer folds"
        )
    fold = np.full(n, -1, dtype=np.int16)
    kfold = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(kfold.split(np.zeros((rest.size, 1)), codes[rest])):
        fold[rest[test]] = k
    return Splits(fold, calibration, n_splits, int(seed), float(calibration_fraction))


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof=1) of one metric over the folds."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "undefined"
        if self.n == 1:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.std:.3f}"

    def to_dict(self) -> dict[str, float | int | None]:
        """Strict-JSON form (NaN becomes ``None``)."""
        return {
            "mean": self.mean if math.isfinite(self.mean) else None,
            "std": self.std if math.isfinite(self.std) else None,
            "n": self.n,
        }


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean ± sample std of the finite ``values`` (NaN folds, e.g. undefined purity, skipped)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return MeanStd(math.nan, math.nan, 0)
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return MeanStd(float(finite.mean()), std, int(finite.size))


def aggregate(folds: Sequence[ClassificationMetrics]) -> dict[str, MeanStd]:
    """Mean ± std over folds of each scalar metric (see :meth:`ClassificationMetrics.scalars`)."""
    scalars = [f.scalars() for f in folds]
    names = list(scalars[0]) if scalars else []
    return {name: mean_std([s[name] for s in scalars]) for name in names}


@dataclass(frozen=True)
class FoldProgress:
    """What the progress callback receives after each fold."""

    fold: int
    n_folds: int
    metrics: ClassificationMetrics
    fit_seconds: float


ProgressCallback = Callable[[FoldProgress], None]
EstimatorFactory = Callable[[Sequence[str]], Classifier]
TrainData = Callable[[npt.NDArray[np.intp]], tuple[Any, Any]]


@dataclass(frozen=True)
class CrossValResult:
    """Per-fold metrics, their mean ± std, and the out-of-fold predictions of one CV run."""

    estimator: Mapping[str, Any] | None
    classes: tuple[str, ...]
    labels: npt.NDArray[Any] = field(repr=False)
    folds: tuple[ClassificationMetrics, ...]
    summary: dict[str, MeanStd]
    oof_proba: npt.NDArray[np.float64] = field(repr=False)
    oof_pred: npt.NDArray[np.intp] = field(repr=False)
    fold: npt.NDArray[np.int16] = field(repr=False)
    split_seed: int | None
    fit_seconds: tuple[float, ...]

    @property
    def n_splits(self) -> int:
        """Number of folds."""
        return len(self.folds)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON record: estimator, classes, per-fold metrics, summary, timings."""
        return {
            "estimator": dict(self.estimator) if self.estimator is not None else None,
            "classes": list(self.classes),
            "n_splits": self.n_splits,
            "split_seed": self.split_seed,
            "folds": [f.to_dict() for f in self.folds],
            "summary": {k: v.to_dict() for k, v in self.summary.items()},
            "fit_seconds": list(self.fit_seconds),
        }


def align_proba(
    proba: Any, model_classes: Any, classes: Sequence[Any] | npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """Reorder ``proba`` (columns ``model_classes``) to ``classes``; absent classes get 0."""
    p = np.asarray(proba, dtype=np.float64)
    out = np.zeros((p.shape[0], len(classes)), dtype=np.float64)
    out[:, label_indices(np.asarray(model_classes), classes)] = p
    return out


def _config_factory(config: EstimatorConfig, n_jobs: int | None) -> EstimatorFactory:
    def factory(names: Sequence[str]) -> Classifier:
        return config.build(names, n_jobs=n_jobs)

    return factory


def _tqdm_callback(n_folds: int, desc: str) -> tuple[ProgressCallback, Callable[[], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=n_folds, desc=desc, unit="fold")

    def update(event: FoldProgress) -> None:
        bar.set_postfix(accuracy=f"{event.metrics.accuracy:.3f}")
        bar.update(1)

    return update, bar.close


def cross_validate(
    estimator: EstimatorConfig | str | EstimatorFactory,
    X: Any,
    y: Any,
    *,
    feature_names: Sequence[str],
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    n_splits: int = DEFAULT_SPLITS,
    folds: Any = None,
    fpr: float = DEFAULT_FPR,
    ece_bins: int = DEFAULT_ECE_BINS,
    progress: ProgressCallback | bool | None = None,
    n_jobs: int | None = None,
    train_data: TrainData | None = None,
) -> CrossValResult:
    """Stratified K-fold cross-validation of one estimator, with every metric per fold.

    ``estimator`` is a registry name (with ``params`` and ``seed``), an
    :class:`EstimatorConfig`, or a factory called with ``feature_names`` that
    returns a fresh unfitted classifier. ``folds`` is a precomputed fold array
    (``-1`` rows, e.g. the calibration split, are left out); otherwise
    :func:`make_splits` with ``seed`` is used (recorded as ``split_seed``; the
    estimator's own seed is in its record). ``X`` is converted to float32.
    Hard labels come from the model's ``predict``; ``progress`` is a callback
    receiving a :class:`FoldProgress` after each fold, or ``True`` for a tqdm
    bar. ``train_data`` optionally replaces the training rows of a fold (given
    the training row indices it returns ``(X_train, y_train)``; used for
    augmentation, whose copies must stay in their original's fold). ``n_jobs``
    caps the threads used (forest workers and the OpenMP/BLAS pools of
    HistGradientBoosting); it does not change the model and is not recorded.
    """
    if isinstance(estimator, str):
        estimator = estimator_config(estimator, params, seed=seed)
    elif params is not None:
        raise TrainError("params are only used with an estimator name")
    features = as_features(X)
    labels = np.asarray(y)
    names = list(feature_names)
    if features.shape[1] != len(names):
        raise TrainError(f"X has {features.shape[1]} columns but {len(names)} feature names")
    if labels.shape != (features.shape[0],):
        raise TrainError(f"y has shape {labels.shape}, expected ({features.shape[0]},)")
    if folds is None:
        fold = make_splits(labels, n_splits=n_splits, seed=seed).fold
    else:
        fold = np.asarray(folds, dtype=np.int16)
        if fold.shape != labels.shape:
            raise TrainError(f"folds has shape {fold.shape}, expected {labels.shape}")
    fold_ids = sorted(int(k) for k in np.unique(fold[fold >= 0]))
    if len(fold_ids) < 2:
        raise TrainError("cross-validation needs at least two folds")
    used = fold >= 0
    classes = np.unique(labels[used])
    config: EstimatorConfig | None = None
    record: dict[str, Any] | None = None
    if isinstance(estimator, EstimatorConfig):
        config, record = estimator, estimator.to_dict()
        factory = _config_factory(estimator, n_jobs)
    else:
        factory = estimator
    close: Callable[[], None] | None = None
    if progress is True:
        desc = config.name if config is not None else "cross-validation"
        callback, close = _tqdm_callback(len(fold_ids), desc)
    elif callable(progress):
        callback = progress
    else:
        callback = None
    oof_proba = np.full((labels.size, classes.size), np.nan)
    oof_pred = np.full(labels.size, -1, dtype=np.intp)
    results = []
    fit_seconds = []
    # HistGradientBoosting uses an OpenMP pool as large as the machine; on a
    # shared, busy machine its spinning threads can make a fit 100x slower, so
    # n_jobs caps the OpenMP and BLAS pools too, not only the forests' workers.
    with contextlib.ExitStack() as stack:
        if n_jobs is not None:
            stack.enter_context(threadpool_limits(limits=n_jobs))
        if close is not None:
            stack.callback(close)
        for position, k in enumerate(fold_ids):
            test = np.flatnonzero(fold == k)
            train = np.flatnonzero(used & (fold != k))
            X_train, y_train = (
                (features[train], labels[train]) if train_data is None else train_data(train)
            )
            model = factory(names)
            start = time.perf_counter()
            model.fit(as_features(X_train), np.asarray(y_train))
            seconds = time.perf_counter() - start
            proba = align_proba(model.predict_proba(features[test]), model.classes_, classes)
            pred = np.asarray(model.predict(features[test]))
            metrics = classification_metrics(
                labels[test], proba, classes, y_pred=pred, fpr=fpr, ece_bins=ece_bins
            )
            oof_proba[test] = proba
            oof_pred[test] = label_indices(pred, classes)
            results.append(metrics)
            fit_seconds.append(seconds)
            if callback is not None:
                callback(FoldProgress(position, len(fold_ids), metrics, seconds))
    return CrossValResult(
        estimator=record,
        classes=tuple(str(c) for c in classes.tolist()),
        labels=classes,
        folds=tuple(results),
        summary=aggregate(results),
        oof_proba=oof_proba,
        oof_pred=oof_pred,
        fold=fold,
        split_seed=None if folds is not None else int(seed),
        fit_seconds=tuple(fit_seconds),
    )


def evaluate_folds(
    y: Any,
    proba: Any,
    fold: Any,
    classes: Sequence[Any] | npt.NDArray[Any],
    *,
    fpr: float = DEFAULT_FPR,
    ece_bins: int = DEFAULT_ECE_BINS,
) -> tuple[tuple[ClassificationMetrics, ...], dict[str, MeanStd]]:
    """Per-fold metrics and their mean ± std for given out-of-fold probabilities.

    Used to score probabilities produced outside :func:`cross_validate`, for
    example cross-fitted calibrated probabilities; rows with fold ``-1`` are skipped.
    """
    labels = np.asarray(y)
    p = np.asarray(proba, dtype=np.float64)
    f = np.asarray(fold)
    results = []
    for k in sorted(int(v) for v in np.unique(f[f >= 0])):
        rows = f == k
        results.append(
            classification_metrics(labels[rows], p[rows], classes, fpr=fpr, ece_bins=ece_bins)
        )
    return tuple(results), aggregate(results)
