"""Importance-weighted estimates of a model's metrics on an application catalog.

Each training row's out-of-fold prediction is weighted by its importance
weight, so the metric is the one expected under the catalog's feature
distribution. Every estimate carries a bootstrap error bar (rows resampled
with their weights) and the Kish effective sample size of the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from skyclass.domain import defaults
from skyclass.domain.errors import DomainError
from skyclass.domain.weights import effective_size
from skyclass.train.metrics import DEFAULT_ECE_BINS
from skyclass.train.photoz import (
    INTERVALS,
    NMAD_SCALE,
    OUTLIER_DZ,
    RedshiftGrid,
    pdf_cdf,
    point_estimates,
)

DEFAULT_BOOTSTRAP = defaults.BOOTSTRAP

LOG_EPS = 1e-15

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Estimate:
    """One metric: weighted value, bootstrap std, unweighted value, effective sample size."""

    name: str
    class_name: str
    value: float
    std: float
    unweighted: float
    n_effective: float


def _weighted_metrics(
    y: npt.NDArray[np.intp], proba: FloatArray, w: FloatArray, classes: Sequence[str]
) -> dict[tuple[str, str], float]:
    """Weighted metric values keyed by ``(name, class_name)`` (NaN when undefined)."""
    total = float(w.sum())
    pred = np.argmax(proba, axis=1)
    hit = pred == y
    out: dict[tuple[str, str], float] = {("accuracy", ""): float(w[hit].sum()) / total}
    completeness = []
    for k, name in enumerate(classes):
        true_k = float(w[y == k].sum())
        pred_k = float(w[pred == k].sum())
        both = float(w[(y == k) & hit].sum())
        c = both / true_k if true_k > 0 else math.nan
        out[("completeness", name)] = c
        out[("purity", name)] = both / pred_k if pred_k > 0 else math.nan
        completeness.append(c)
    out[("balanced_accuracy", "")] = float(np.nanmean(completeness))
    p_true = np.clip(proba[np.arange(y.size), y], LOG_EPS, 1.0)
    out[("log_loss", "")] = float(-(w * np.log(p_true)).sum() / total)
    top = proba.max(axis=1)
    bins = np.minimum((top * DEFAULT_ECE_BINS).astype(np.intp), DEFAULT_ECE_BINS - 1)
    acc = np.bincount(bins, weights=w * hit, minlength=DEFAULT_ECE_BINS)
    conf = np.bincount(bins, weights=w * top, minlength=DEFAULT_ECE_BINS)
    out[("ece", "")] = float(np.abs(acc - conf).sum() / total)
    return out


def expected_classification(
    y_index: npt.ArrayLike,
    proba: npt.ArrayLike,
    weights: npt.ArrayLike,
    classes: Sequence[str],
    *,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> list[Estimate]:
    """Weighted accuracy, balanced accuracy, per-class purity/completeness, log loss and ECE.

    ``y_index`` are true class indices into ``classes``, ``proba`` the
    out-of-fold probabilities (rows x classes), ``weights`` the importance
    weights. The error bar is the std of ``n_bootstrap`` resampled estimates.
    """
    y = np.asarray(y_index, dtype=np.intp)
    p = np.asarray(proba, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.size, len(classes)) or w.shape != y.shape:
        raise DomainError(
            f"shapes disagree: y {y.shape}, proba {p.shape}, weights {w.shape}, "
            f"{len(classes)} classes"
        )
    if y.size == 0 or np.any((y < 0) | (y >= len(classes))):
        raise DomainError("y_index must be non-empty class indices into classes")
    if not np.all(np.isfinite(p)) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise DomainError("probabilities and weights must be finite, weights >= 0 and not all 0")
    return _estimates(
        lambda rows, weights: _weighted_metrics(y[rows], p[rows], weights, classes),
        w,
        n_bootstrap,
        seed,
    )


Stat = Callable[[npt.NDArray[np.intp], FloatArray], dict[tuple[str, str], float]]


def _estimates(stat: Stat, w: FloatArray, n_bootstrap: int, seed: int) -> list[Estimate]:
    """Weighted and unweighted values of ``stat`` with a bootstrap std of the weighted one."""
    every = np.arange(w.size)
    value = stat(every, w)
    plain = stat(every, np.ones_like(w))
    rng = np.random.default_rng(seed)
    draws: dict[tuple[str, str], list[float]] = {key: [] for key in value}
    for _ in range(n_bootstrap):
        rows = rng.integers(0, w.size, size=w.size)
        if w[rows].sum() <= 0:
            continue
        for key, v in stat(rows, w[rows]).items():
            draws[key].append(v)
    n_eff = effective_size(w)
    result = []
    for key, v in value.items():
        sample = np.asarray(draws[key], dtype=np.float64)
        sample = sample[np.isfinite(sample)]
        std = float(np.std(sample, ddof=1)) if sample.size > 1 else math.nan
        result.append(Estimate(key[0], key[1], v, std, plain[key], n_eff))
    return result


def _weighted_median(x: FloatArray, w: FloatArray) -> float:
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _weighted_ks_uniform(u: FloatArray, w: FloatArray) -> float:
    """KS distance between the weighted empirical distribution of ``u`` and U(0, 1)."""
    order = np.argsort(u, kind="stable")
    x, cum = u[order], np.cumsum(w[order]) / w.sum()
    before = np.r_[0.0, cum[:-1]]
    return float(max((cum - x).max(), (x - before).max()))


def expected_photoz(
    z_true: npt.ArrayLike,
    pdf: npt.ArrayLike,
    grid: RedshiftGrid,
    weights: npt.ArrayLike,
    *,
    n_bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> list[Estimate]:
    """Weighted sigma_NMAD, outlier fraction, median bias, 68/95% coverage and PIT KS distance.

    ``pdf`` are out-of-fold binned PDFs on ``grid``; point estimates are PDF
    medians and intervals central, as :func:`skyclass.train.photoz.photoz_metrics`.
    """
    zs = np.asarray(z_true, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    p = np.asarray(pdf, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != zs.size or w.shape != zs.shape or zs.size == 0:
        raise DomainError(f"shapes disagree: z {zs.shape}, pdf {p.shape}, weights {w.shape}")
    if not np.all(np.isfinite(zs)) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise DomainError("redshifts and weights must be finite, weights >= 0")
    summary = point_estimates(p, grid, INTERVALS)
    dz = (summary.median - zs) / (1.0 + zs)
    outlier = (np.abs(dz) > OUTLIER_DZ).astype(np.float64)
    covered = {
        c: ((zs >= lo) & (zs <= hi)).astype(np.float64) for c, (lo, hi) in summary.intervals.items()
    }
    pit = pdf_cdf(p, grid, zs)

    def stat(rows: npt.NDArray[np.intp], wt: FloatArray) -> dict[tuple[str, str], float]:
        total = float(wt.sum())
        d = dz[rows]
        bias = _weighted_median(d, wt)
        out = {
            ("sigma_nmad", ""): NMAD_SCALE * _weighted_median(np.abs(d - bias), wt),
            ("outlier_fraction", ""): float(wt @ outlier[rows]) / total,
            ("bias_median", ""): bias,
            ("pit_ks", ""): _weighted_ks_uniform(pit[rows], wt),
        }
        for c, hit in covered.items():
            out[(f"coverage_{round(c * 100)}", "")] = float(wt @ hit[rows]) / total
        return out

    return _estimates(stat, w, n_bootstrap, seed)
