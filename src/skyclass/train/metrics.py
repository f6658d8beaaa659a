"""Classification metrics, per class and overall, as plain JSON-ready values.

All metrics are computed here with numpy from the true labels and the
probability matrix (columns in the order of ``classes``); the test suite checks
them against :mod:`sklearn.metrics` where the two overlap. Definitions:

- *accuracy*: fraction of rows whose predicted label equals the true label;
  *balanced accuracy*: mean completeness over the classes present in ``y_true``.
- *purity* of class k (precision): TP / (TP + FP), NaN when nothing is predicted
  as k; *completeness* (recall): TP / (TP + FN), NaN when k has no true rows.
- *completeness at a fixed false-positive rate* (one-vs-rest ROC slice): a row
  is called k when ``p_k >= t``; ``t`` is the smallest value among the scores
  such that the fraction of non-k rows called k is at most ``fpr`` (ties count
  as called). The completeness at that threshold, the threshold and the FPR
  actually achieved are reported. When even the highest score lets too many
  negatives through, nothing can be called: completeness 0 and the threshold is
  the next float above the highest score.
- *ROC AUC*: one-vs-rest per class (Mann-Whitney statistic with tied scores
  counted as one half), macro-averaged over the classes that have both positive
  and negative rows.
- *log loss*: ``-mean(log(max(p[i, y_i], 1e-15)))``; *Brier score*: the original
  multiclass form ``mean_i sum_k (p_ik - [y_i = k])^2`` (range 0..2, not halved,
  also for two classes).
- *expected calibration error* (top-label): the confidence of a row is its
  largest probability and it is correct when that class (the first one on ties)
  is the true class; rows go into ``n_bins`` equal-width bins of confidence, bin
  ``min(floor(conf * n_bins), n_bins - 1)`` (so bins are ``[m/M, (m+1)/M)`` and
  the last includes 1), and ``ECE = sum_m (n_m / N) |accuracy_m - mean conf_m|``.
- *confusion matrix*: rows are true classes, columns predicted classes.

Undefined values are NaN in Python; :meth:`ClassificationMetrics.to_dict`
turns them into ``None`` so the result is strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.probability import DEFAULT_FPR as DEFAULT_FPR
from skyclass.train.errors import TrainError

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped below at this value before taking the log."""

DEFAULT_ECE_BINS = 15


def json_float(value: float) -> float | None:
    """``value`` as a float, or ``None`` when it is NaN or infinite (strict JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def label_indices(y: Any, classes: Sequence[Any] | npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Column index of each label of ``y`` in ``classes``; unknown labels raise TrainError."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise TrainError(f"labels must be 1-D, not of shape {labels.shape}")
    lookup = {c: k for k, c in enumerate(np.asarray(classes).tolist())}
    if len(lookup) != len(classes):
        raise TrainError(f"classes contain duplicates: {list(classes)}")
    values = labels.tolist()
    unknown = sorted({str(v) for v in values if v not in lookup})
    if unknown:
        raise TrainError(f"labels {unknown[:10]} are not among the classes {list(classes)}")
    return np.fromiter((lookup[v] for v in values), dtype=np.intp, count=len(values))


def check_proba(proba: Any, n_rows: int, n_classes: int) -> npt.NDArray[np.float64]:
    """Validate a probability matrix: shape (n_rows, n_classes), finite, rows summing to 1."""
    p = np.asarray(proba, dtype=np.float64)
    if p.shape != (n_rows, n_classes):
        raise TrainError(f"probabilities have shape {p.shape}, expected {(n_rows, n_classes)}")
    if not np.isfinite(p).all():
        raise TrainError("probabilities contain NaN or infinite values")
    if p.size and (p.min() < -1e-9 or p.max() > 1 + 1e-9):
        raise TrainError("probabilities must lie in [0, 1]")
    if n_rows and np.abs(p.sum(axis=1) - 1.0).max() > 1e-5:
        raise TrainError("probability rows must sum to 1 (within 1e-5)")
    return p


def average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks of ``values`` with tied values sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def roc_auc(positive: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` rows (NaN if a side is empty)."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = float(average_ranks(score)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@dataclass(frozen=True)
class FprSlice:
    """Completeness at a fixed false-positive rate, the threshold, and the FPR achieved."""

    completeness: float
    threshold: float
    achieved_fpr: float


def completeness_at_fpr(
    positive: npt.NDArray[np.bool_], score: npt.NDArray[np.float64], fpr: float = DEFAULT_FPR
) -> FprSlice:
    """Largest completeness with false-positive rate <= ``fpr`` when calling ``score >= t``.

    ``t`` is the smallest score value that keeps the fraction of negatives with
    ``score >= t`` at or below ``fpr``; with no such value nothing is called
    (completeness 0, threshold just above the top score). NaN values when there
    are no positive or no negative rows.
    """
    if not 0.0 <= fpr <= 1.0:
        raise TrainError(f"false-positive rate must be in [0, 1], not {fpr}")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return FprSlice(math.nan, math.nan, math.nan)
    negatives = np.sort(score[~positive])
    positives = np.sort(score[positive])
    candidates = np.unique(score)
    false_pos = n_neg - np.searchsorted(negatives, candidates, side="left")
    # Compare counts, not rates, so k/n == fpr is not lost to rounding.
    feasible = false_pos <= fpr * n_neg + 1e-9
    if not feasible.any():
        top = float(candidates[-1])
        return FprSlice(0.0, float(np.nextafter(top, np.inf)), 0.0)
    j = int(np.argmax(feasible))
    threshold = float(candidates[j])
    true_pos = n_pos - int(np.searchsorted(positives, threshold, side="left"))
    return FprSlice(true_pos / n_pos, threshold, int(false_pos[j]) / n_neg)


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label reliability diagram: per confidence bin, count, mean confidence, accuracy."""

    edges: tuple[float, ...]
    count: tuple[int, ...]
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |accuracy - confidence|."""
        n = sum(self.count)
        if n == 0:
            return math.nan
        return sum(
            c / n * abs(a - f)
            for c, a, f in zip(self.count, self.accuracy, self.confidence, strict=True)
            if c
        )


def reliability_bins(
    y_index: npt.NDArray[np.intp], proba: npt.NDArray[np.float64], n_bins: int = DEFAULT_ECE_BINS
) -> ReliabilityBins:
    """Bin rows by top-label confidence into ``n_bins`` equal-width bins (see module docs)."""
    if n_bins < 1:
        raise TrainError(f"number of calibration bins must be >= 1, not {n_bins}")
    confidence = proba.max(axis=1)
    correct = (np.argmax(proba, axis=1) == y_index).astype(np.float64)
    bins = np.minimum(np.floor(confidence * n_bins).astype(np.intp), n_bins - 1)
    bins = np.maximum(bins, 0)
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    safe = np.maximum(count, 1)
    return ReliabilityBins(
        edges=tuple(float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)),
        count=tuple(int(c) for c in count),
        confidence=tuple(np.where(count > 0, conf_sum / safe, math.nan).tolist()),
        accuracy=tuple(np.where(count > 0, acc_sum / safe, math.nan).tolist()),
    )


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class (one-vs-rest where it matters)."""

    label: str
    support: int
    purity: float
    completeness: float
    roc_auc: float
    completeness_at_fpr: float
    threshold_at_fpr: float
    achieved_fpr: float


PER_CLASS_FIELDS = (
    "purity",
    "completeness",
    "roc_auc",
    "completeness_at_fpr",
    "threshold_at_fpr",
    "achieved_fpr",
)
OVERALL_FIELDS = ("accuracy", "balanced_accuracy", "roc_auc_macro", "log_loss", "brier", "ece")


@dataclass(frozen=True)
class ClassificationMetrics:
    """Every metric of one evaluation (one fold, or a held-out set)."""

    classes: tuple[str, ...]
    n: int
    accuracy: float
    balanced_accuracy: float
    roc_auc_macro: float
    log_loss: float
    brier: float
    ece: float
    fpr_target: float
    ece_bins: int
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]

    def scalars(self) -> dict[str, float]:
        """Flat name -> value map (per-class values as ``purity[STAR]``), NaN kept."""
        out = {name: float(getattr(self, name)) for name in OVERALL_FIELDS}
        for cm in self.per_class:
            for name in PER_CLASS_FIELDS:
                out[f"{name}[{cm.label}]"] = float(getattr(cm, name))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dictionary of everything (NaN and infinities become ``None``)."""
        return {
            "classes": list(self.classes),
            "n": self.n,
            **{name: json_float(getattr(self, name)) for name in OVERALL_FIELDS},
            "fpr_target": self.fpr_target,
            "ece_bins": self.ece_bins,
            "per_class": {
                cm.label: {
                    "support": cm.support,
                    **{name: json_float(getattr(cm, name)) for name in PER_CLASS_FIELDS},
                }
                for cm in self.per_class
            },
            "confusion": [list(row) for row in self.confusion],
        }


def classification_metrics(
    y_true: Any,
    proba: Any,
    classes: Sequence[Any] | npt.NDArray[Any],
    *,
    y_pred: Any = None,
    fpr: float = DEFAULT_FPR,
    ece_bins: int = DEFAULT_ECE_BINS,
) -> ClassificationMetrics:
    """Compute every classification metric of the module docs for one set of predictions.

    ``proba`` has one column per entry of ``classes`` (an estimator's
    ``classes_``); ``y_pred`` are the hard labels to score accuracy, purity,
    completeness and the confusion matrix with (default: the most probable class;
    pass ``estimator.predict(X)`` for rule-based baselines). Probability-based
    metrics (ROC, log loss, Brier, ECE, the FPR slice) always use ``proba``.
    """
    class_list = list(np.asarray(classes).tolist())
    k = len(class_list)
    if k < 2:
        raise TrainError(f"need at least two classes, got {class_list}")
    yi = label_indices(y_true, class_list)
    n = yi.size
    if n == 0:
        raise TrainError("no rows to evaluate")
    p = check_proba(proba, n, k)
    pi = np.argmax(p, axis=1) if y_pred is None else label_indices(y_pred, class_list)
    if pi.size != n:
        raise TrainError(f"y_pred has {pi.size} labels, y_true {n}")
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (yi, pi), 1)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        purity = np.where(predicted > 0, tp / predicted, math.nan)
        completeness = np.where(support > 0, tp / support, math.nan)
    onehot = np.zeros_like(p)
    onehot[np.arange(n), yi] = 1.0
    per_class = []
    aucs = []
    for j, label in enumerate(class_list):
        positive = yi == j
        auc = roc_auc(positive, p[:, j])
        aucs.append(auc)
        cut = completeness_at_fpr(positive, p[:, j], fpr)
        per_class.append(
            ClassMetrics(
                label=str(label),
                support=int(support[j]),
                purity=float(purity[j]),
                completeness=float(completeness[j]),
                roc_auc=auc,
                completeness_at_fpr=cut.completeness,
                threshold_at_fpr=cut.threshold,
                achieved_fpr=cut.achieved_fpr,
            )
        )
    defined_auc = [a for a in aucs if not math.isnan(a)]
    return ClassificationMetrics(
        classes=tuple(str(c) for c in class_list),
        n=n,
        accuracy=float(tp.sum() / n),
        balanced_accuracy=float(np.nanmean(completeness[support > 0])),
        roc_auc_macro=float(np.mean(defined_auc)) if defined_auc else math.nan,
        log_loss=float(-np.mean(np.log(np.maximum(p[np.arange(n), yi], LOG_LOSS_EPS)))),
        brier=float(np.mean(np.sum((p - onehot) ** 2, axis=1))),
        ece=reliability_bins(yi, p, ece_bins).ece,
        fpr_target=float(fpr),
        ece_bins=int(ece_bins),
        per_class=tuple(per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )
