"""Importance weights from domain-classifier propensities, clipped, with the clipping recorded.

``w = p / (1 - p) * (n_train / n_sample)`` is the density ratio
``p_application(x) / p_train(x)`` when the classifier saw ``n_train`` training
and ``n_sample`` catalog rows. Propensities are first held inside
``[eps, 1 - eps]``; weights are then clipped to ``[w_min, w_max]``.
A catalog object with ``p > uncovered_p`` lies where the training data has
(almost) no support: the fraction of such objects is reported as the part of
the catalog the training data does not cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from skyclass.domain import defaults
from skyclass.domain.errors import DomainError

EPS = 1e-6
W_MIN = defaults.W_MIN
W_MAX = defaults.W_MAX
UNCOVERED_P = 0.99
#: Below these the weighted estimates are reported as unreliable.
MIN_EFFECTIVE = 100.0
MIN_EFFECTIVE_FRACTION = 0.02
MAX_CLIPPED_FRACTION = 0.05
MAX_UNCOVERED = 0.05


@dataclass(frozen=True)
class Weights:
    """Clipped importance weights and how many were clipped."""

    w: npt.NDArray[np.float64] = field(repr=False)
    clipped: npt.NDArray[np.bool_] = field(repr=False)
    w_min: float
    w_max: float

    @property
    def fraction_clipped(self) -> float:
        """Fraction of weights that hit a clip bound."""
        return float(self.clipped.mean()) if self.clipped.size else 0.0

    @property
    def fraction_clipped_high(self) -> float:
        """Fraction of weights clipped at ``w_max`` (objects the training data barely covers)."""
        return float(np.mean(self.clipped & (self.w >= self.w_max))) if self.w.size else 0.0


def importance_weights(
    propensity: npt.ArrayLike,
    n_train: int,
    n_sample: int,
    *,
    w_min: float = W_MIN,
    w_max: float = W_MAX,
) -> Weights:
    """Weights ``p/(1-p) * n_train/n_sample`` clipped to ``[w_min, w_max]``."""
    p = np.asarray(propensity, dtype=np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise DomainError("propensities must be a 1-D array of finite values in [0, 1]")
    if n_train < 1 or n_sample < 1:
        raise DomainError(f"n_train and n_sample must be positive, not {n_train}, {n_sample}")
    if not 0 < w_min < w_max:
        raise DomainError(f"clip bounds must satisfy 0 < w_min < w_max, not {w_min}, {w_max}")
    q = np.clip(p, EPS, 1 - EPS)
    raw = q / (1 - q) * (n_train / n_sample)
    clipped = (raw < w_min) | (raw > w_max)
    return Weights(np.clip(raw, w_min, w_max), clipped, float(w_min), float(w_max))


def effective_size(w: npt.ArrayLike) -> float:
    """Kish effective sample size ``(Σw)² / Σw²``."""
    a = np.asarray(w, dtype=np.float64)
    s2 = float(np.sum(a * a))
    return float(np.sum(a)) ** 2 / s2 if s2 > 0 else 0.0


def uncovered_fraction(catalog_propensity: npt.ArrayLike, threshold: float = UNCOVERED_P) -> float:
    """Fraction of catalog objects with propensity above ``threshold`` (no training support)."""
    p = np.asarray(catalog_propensity, dtype=np.float64)
    return float(np.mean(p > threshold)) if p.size else 0.0


def reliability_problems(
    n_effective: float, n_rows: int, fraction_clipped: float, uncovered: float = 0.0
) -> list[str]:
    """Reasons the weighted estimates are unreliable (empty: they are usable).

    ``fraction_clipped`` is the fraction clipped at ``w_max``: raising tiny
    weights to ``w_min`` hardly moves an estimate, capping large ones does.
    ``uncovered`` is :func:`uncovered_fraction` of the catalog: weighting
    cannot say anything about objects the training data does not reach.
    """
    problems = []
    if n_effective < MIN_EFFECTIVE:
        problems.append(f"effective sample size {n_effective:.0f} < {MIN_EFFECTIVE:.0f}")
    if n_rows and n_effective / n_rows < MIN_EFFECTIVE_FRACTION:
        problems.append(
            f"effective sample size is {n_effective / n_rows:.1%} of {n_rows} rows "
            f"(< {MIN_EFFECTIVE_FRACTION:.0%}): weights are extreme"
        )
    if fraction_clipped > MAX_CLIPPED_FRACTION:
        problems.append(
            f"{fraction_clipped:.1%} of weights clipped at w_max (> {MAX_CLIPPED_FRACTION:.0%})"
        )
    if uncovered > MAX_UNCOVERED:
        problems.append(
            f"{uncovered:.1%} of the catalog has propensity > {UNCOVERED_P} "
            f"(> {MAX_UNCOVERED:.0%}): the training data does not cover it"
        )
    return problems
