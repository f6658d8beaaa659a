"""Uncertainty that holds across the domain: Mondrian conformal photo-z intervals and
class-probability recalibration, both conditioned on the object's OOD percentile.

The OOD percentile (:mod:`skyclass.domain.ood`) says how unusual an object is
against the version's training data (0..100, a percentile of held-out training
scores). Errors grow with it: a single conformal quantile for all objects
over-covers typical objects and under-covers unusual ones (docs/results.md). So
the calibration split is cut into OOD bins (:data:`OOD_EDGES`, finer at the top,
where the errors change fastest) and each bin gets its own correction — *Mondrian*
split conformal prediction, whose coverage guarantee holds inside each bin.

Photo-z intervals. For a nominal level ``a`` let ``[L, U]`` be the central ``a``
interval of the object's PDF and ``M`` its median. The conformity score of an
object with true redshift ``z`` is how far ``z`` lies outside ``[L, U]`` in units
of the interval's half-widths,
``s = max((L - z) / (M - L + d), (z - U) / (U - M + d))`` (``d = WIDTH_FLOOR``;
negative inside). For each OOD bin the *conformal quantile* ``q`` is the
``ceil((n + 1) a)``-th smallest of the bin's ``n`` calibration scores (none when
``(n + 1) a > n``), and the interval of an object in that bin is
``[L - q (M - L + d), U + q (U - M + d)]``, held to contain ``M`` (and the 95%
interval to contain the 68% one) and clipped to the grid. It widens or narrows
each object's own PDF interval (so it adapts to the PDF's width and asymmetry),
needs only the stored PDF, and is one SQL lookup
(``skyclass.photoz_intervals``). A score based on the PDF's own levels
(``|2 F(z) - 1|``) was tried first: it saturates at 1 when a PDF puts no mass
where the truth is, which the most unusual objects often do, and a level of 1
gives the PDF's support, not a calibrated interval.

Class probabilities. Per bin, one temperature ``T`` minimising the log loss of
``softmax(log p / T)`` on the bin's calibration rows (the version's calibrated
probabilities go in, so this refines the global map). Applied by
``skyclass.recalibrated_probabilities`` with the same formula.

No interval and no recalibrated probability is ever invented. An object gets
NULL (NaN here) and a flag when its percentile is at or above the top edge
(``IN_DOMAIN_PERCENTILE``, 99: beyond the training support the OOD scorer
calls out of domain), when a feature is out of the training range, when its
percentile is unknown, or when its bin holds fewer than :data:`MIN_BIN_SIZE`
calibration objects.

Everything here is pure numpy; training fits the maps and stores them per model
version (``skyclass.interval_calibration``, ``skyclass.probability_recalibration``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.errors import ModelOutputError
from skyclass.probability.calibration import CALIBRATION_EPS, temperature_softmax
from skyclass.probability.redshift import INTERVALS, RedshiftGrid, pdf_quantile

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: OOD-percentile bin edges; the last edge is the in-domain threshold of the OOD scorer.
OOD_EDGES: tuple[float, ...] = (0.0, 20.0, 40.0, 60.0, 80.0, 90.0, 95.0, 99.0)
#: Fewer calibration objects than this in a bin: that bin gets no interval.
MIN_BIN_SIZE = 50
#: Added to the half-widths of a PDF's interval so that a one-bin PDF still scales (redshift).
WIDTH_FLOOR = 1e-3
#: Flags of an object's interval (or recalibrated probabilities).
FLAG_OK = "ok"
FLAG_OUT_OF_DOMAIN = "out_of_domain"
FLAG_TOO_FEW = "too_few_calibration"
FLAG_NO_SCORE = "no_ood_score"
FLAGS = (FLAG_OK, FLAG_OUT_OF_DOMAIN, FLAG_TOO_FEW, FLAG_NO_SCORE)
#: Temperatures are searched in [exp(-LOG_T_LIMIT), exp(LOG_T_LIMIT)].
LOG_T_LIMIT = 4.0


def check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    """Validated OOD bin edges: at least 2, strictly increasing in [0, 100], the first 0."""
    e = tuple(float(v) for v in edges)
    if len(e) < 2:
        raise ModelOutputError("OOD bin edges need at least 2 values (1 bin)")
    if not all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in e):
        raise ModelOutputError(f"OOD bin edges must be finite percentiles in [0, 100], not {e}")
    if any(b <= a for a, b in itertools.pairwise(e)):
        raise ModelOutputError(f"OOD bin edges must be strictly increasing, not {e}")
    if e[0] != 0.0:
        raise ModelOutputError(
            f"the first OOD bin edge must be 0 (every percentile has a bin), not {e[0]}"
        )
    return e


def ood_bin(
    percentile: npt.ArrayLike,
    edges: Sequence[float],
    out_of_range: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.str_]]:
    """Bin index of each percentile (-1 when none) and the flag of the objects without one.

    Bin ``b`` is ``[edges[b], edges[b+1])``. At or above the last edge, or out of
    range: ``out_of_domain``; NaN: ``no_ood_score``.
    """
    e = np.asarray(check_edges(edges))
    pct = np.asarray(percentile, dtype=np.float64).reshape(-1)
    oor = (
        np.zeros(pct.shape, dtype=bool)
        if out_of_range is None
        else np.asarray(out_of_range, dtype=bool).reshape(-1)
    )
    if oor.shape != pct.shape:
        raise ModelOutputError(
            f"need one out-of-range flag per object ({pct.size}), got {oor.size}"
        )
    index = np.clip(np.searchsorted(e, pct, side="right") - 1, 0, e.size - 2)
    flag = np.full(pct.shape, FLAG_OK, dtype=object)
    unknown = np.isnan(pct)
    outside = ~unknown & ((pct >= e[-1]) | oor)
    flag[outside] = FLAG_OUT_OF_DOMAIN
    flag[unknown] = FLAG_NO_SCORE
    index = np.where(unknown | outside, -1, index)
    return np.asarray(index, dtype=np.intp), np.asarray(flag, dtype=np.str_)


def conformity_scores(pdf: Any, grid: RedshiftGrid, z: Any, level: float) -> FloatArray:
    """How far ``z`` lies outside the PDF's central ``level`` interval, in units of its half-widths.

    With ``[L, U]`` the central interval and ``M`` the median:
    ``max((L - z) / (M - L + d), (z - U) / (U - M + d))`` with ``d = WIDTH_FLOOR``;
    negative inside the interval.
    """
    p = np.asarray(pdf, dtype=np.float64)
    values = np.asarray(z, dtype=np.float64)
    lo, med, hi = _central(p, grid, level)
    below = (lo - values) / (med - lo + WIDTH_FLOOR)
    above = (values - hi) / (hi - med + WIDTH_FLOOR)
    return np.asarray(np.maximum(below, above))


def _central(
    pdf: FloatArray, grid: RedshiftGrid, level: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    if not 0.0 < level < 1.0:
        raise ModelOutputError(f"interval level must be in (0, 1), not {level}")
    return (
        pdf_quantile(pdf, grid, (1.0 - level) / 2.0),
        pdf_quantile(pdf, grid, 0.5),
        pdf_quantile(pdf, grid, (1.0 + level) / 2.0),
    )


def conformal_quantile(scores: npt.ArrayLike, level: float) -> float | None:
    """The ``ceil((n+1) level)``-th smallest score, or None when ``(n+1) level > n``."""
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    if not 0.0 < level < 1.0:
        raise ModelOutputError(f"interval level must be in (0, 1), not {level}")
    k = math.ceil((s.size + 1) * level - 1e-9)
    if s.size == 0 or k > s.size:
        return None
    return float(s[k - 1])


@dataclass(frozen=True)
class IntervalCalibration:
    """Conformal quantiles per OOD bin and nominal level (None: too few calibration objects)."""

    edges: tuple[float, ...]
    levels: tuple[float, ...]
    n: tuple[int, ...]
    conformal: Mapping[float, tuple[float | None, ...]]

    def to_rows(self) -> list[tuple[int, float, float, float, float | None, int]]:
        """``(bin, ood_lo, ood_hi, level, conformal_quantile, n)`` rows for the registry table."""
        return [
            (b, self.edges[b], self.edges[b + 1], a, self.conformal[a][b], self.n[b])
            for a in self.levels
            for b in range(len(self.n))
        ]


def fit_interval_calibration(
    pdf: Any,
    grid: RedshiftGrid,
    z: Any,
    percentile: npt.ArrayLike,
    *,
    levels: Sequence[float] = INTERVALS,
    edges: Sequence[float] = OOD_EDGES,
    min_bin_size: int = MIN_BIN_SIZE,
) -> IntervalCalibration:
    """Mondrian conformal quantiles from calibration PDFs, true redshifts and OOD percentiles.

    Calibration objects at or above the top edge are left out (they get no interval later).
    """
    e = check_edges(edges)
    p = np.asarray(pdf, dtype=np.float64)
    pct = np.asarray(percentile, dtype=np.float64).reshape(-1)
    if pct.shape != (p.shape[0],):
        raise ModelOutputError(f"need one OOD percentile per PDF ({p.shape[0]}), got {pct.size}")
    index, _ = ood_bin(pct, e)
    n = tuple(int((index == b).sum()) for b in range(len(e) - 1))
    conformal: dict[float, tuple[float | None, ...]] = {}
    for a in levels:
        scores = conformity_scores(p, grid, z, float(a))
        conformal[float(a)] = tuple(
            conformal_quantile(scores[index == b], float(a)) if n[b] >= min_bin_size else None
            for b in range(len(n))
        )
    return IntervalCalibration(
        edges=e, levels=tuple(float(a) for a in levels), n=n, conformal=conformal
    )


@dataclass(frozen=True)
class Intervals:
    """Interval bounds per level (NaN where there is none) and the flag of each object."""

    lo: Mapping[float, FloatArray]
    hi: Mapping[float, FloatArray]
    flag: npt.NDArray[np.str_]

    def covered(self, z: npt.ArrayLike, level: float) -> BoolArray:
        """Whether ``z`` lies in the interval (False where there is none)."""
        values = np.asarray(z, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return np.asarray((self.lo[level] <= values) & (values <= self.hi[level]))


def photoz_intervals(
    pdf: Any,
    grid: RedshiftGrid,
    percentile: npt.ArrayLike,
    calibration: IntervalCalibration,
    out_of_range: npt.ArrayLike | None = None,
) -> Intervals:
    """Each PDF's central intervals rescaled by its OOD bin's conformal quantiles (as in SQL)."""
    p = np.asarray(pdf, dtype=np.float64)
    index, flag = ood_bin(percentile, calibration.edges, out_of_range)
    if index.size != p.shape[0]:
        raise ModelOutputError(f"need one OOD percentile per PDF ({p.shape[0]}), got {index.size}")
    flag = flag.astype(object)
    tables = {
        a: np.array([math.nan if c is None else c for c in calibration.conformal[a]])
        for a in calibration.levels
    }
    for table in tables.values():
        flag[(index >= 0) & np.isnan(table[np.maximum(index, 0)])] = FLAG_TOO_FEW
    ok = flag == FLAG_OK
    e = grid.edge_array
    lo: dict[float, FloatArray] = {}
    hi: dict[float, FloatArray] = {}
    for a, table in tables.items():
        lo[a] = np.full(index.shape, math.nan)
        hi[a] = np.full(index.shape, math.nan)
        if ok.any():
            q = table[index[ok]]
            low, med, high = _central(p[ok], grid, a)
            # The median stays inside; the grid bounds every interval.
            lo[a][ok] = np.clip(np.minimum(low - q * (med - low + WIDTH_FLOOR), med), e[0], e[-1])
            hi[a][ok] = np.clip(np.maximum(high + q * (high - med + WIDTH_FLOOR), med), e[0], e[-1])
    # Levels are calibrated one by one; a wider level's interval is held to contain a narrower's.
    ordered = sorted(tables)
    for small, big in itertools.pairwise(ordered):
        lo[big] = np.fmin(lo[big], lo[small])
        hi[big] = np.fmax(hi[big], hi[small])
    return Intervals(lo=lo, hi=hi, flag=np.asarray(flag, dtype=np.str_))


# ----------------------------------------------------------------------- class probabilities


def fit_temperature(proba: npt.ArrayLike, y_index: npt.ArrayLike) -> float:
    """The ``T`` minimising the log loss of ``softmax(log p / T)`` (golden section on log T)."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_index, dtype=np.intp)
    rows = np.arange(y.size)

    def loss(log_t: float) -> float:
        q = temperature_softmax(p, math.exp(log_t), CALIBRATION_EPS)
        return float(-np.mean(np.log(np.maximum(q[rows, y], CALIBRATION_EPS))))

    lo, hi = -LOG_T_LIMIT, LOG_T_LIMIT
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return math.exp(0.5 * (lo + hi))


@dataclass(frozen=True)
class ProbabilityRecalibration:
    """One temperature per OOD bin (None: too few calibration objects)."""

    edges: tuple[float, ...]
    n: tuple[int, ...]
    temperature: tuple[float | None, ...]

    def to_rows(self) -> list[tuple[int, float, float, float | None, int]]:
        """``(bin, ood_lo, ood_hi, temperature, n)`` rows for the registry table."""
        return [
            (b, self.edges[b], self.edges[b + 1], self.temperature[b], self.n[b])
            for b in range(len(self.n))
        ]


def fit_probability_recalibration(
    proba: npt.ArrayLike,
    y_index: npt.ArrayLike,
    percentile: npt.ArrayLike,
    *,
    edges: Sequence[float] = OOD_EDGES,
    min_bin_size: int = MIN_BIN_SIZE,
) -> ProbabilityRecalibration:
    """A temperature per OOD bin from the calibration rows' probabilities and labels."""
    e = check_edges(edges)
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_index, dtype=np.intp)
    index, _ = ood_bin(percentile, e)
    if index.size != p.shape[0] or y.size != p.shape[0]:
        raise ModelOutputError("need one label and one OOD percentile per probability row")
    n = tuple(int((index == b).sum()) for b in range(len(e) - 1))
    temps = tuple(
        fit_temperature(p[index == b], y[index == b]) if n[b] >= min_bin_size else None
        for b in range(len(n))
    )
    return ProbabilityRecalibration(edges=e, n=n, temperature=temps)


def recalibrate_probabilities(
    proba: npt.ArrayLike,
    percentile: npt.ArrayLike,
    recalibration: ProbabilityRecalibration,
    out_of_range: npt.ArrayLike | None = None,
) -> tuple[FloatArray, npt.NDArray[np.str_]]:
    """``softmax(log p / T_bin)`` per row (NaN rows where there is no bin) and the flags."""
    p = np.asarray(proba, dtype=np.float64)
    index, flag = ood_bin(percentile, recalibration.edges, out_of_range)
    if index.size != p.shape[0]:
        raise ModelOutputError(f"need one OOD percentile per row ({p.shape[0]}), got {index.size}")
    flag = flag.astype(object)
    table = np.array(
        [math.nan if t is None else t for t in recalibration.temperature], dtype=np.float64
    )
    temps = np.where(index >= 0, table[np.maximum(index, 0)], math.nan)
    flag[(index >= 0) & np.isnan(temps)] = FLAG_TOO_FEW
    out = np.full(p.shape, math.nan)
    for b, t in enumerate(table):
        rows = (index == b) & (flag == FLAG_OK)
        if rows.any() and not math.isnan(t):
            out[rows] = temperature_softmax(p[rows], float(t), CALIBRATION_EPS)
    return out, np.asarray(flag, dtype=np.str_)


def top_label_ece(proba: npt.ArrayLike, y_index: npt.ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error of the top label (equal-width confidence bins)."""
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_index, dtype=np.intp)
    if p.shape[0] == 0:
        return math.nan
    top = p.max(axis=1)
    correct = (np.argmax(p, axis=1) == y).astype(np.float64)
    bins = np.clip((top * n_bins).astype(np.intp), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=correct, minlength=n_bins)
        - np.bincount(bins, weights=top, minlength=n_bins)
    )
    return float(gap.sum() / max(int(count.sum()), 1))


def calibration_dict(calibration: IntervalCalibration | ProbabilityRecalibration) -> dict[str, Any]:
    """JSON form (for the training run's settings)."""
    if isinstance(calibration, IntervalCalibration):
        return {
            "method": "mondrian_conformal_half_widths",
            "edges": list(calibration.edges),
            "n": list(calibration.n),
            "levels": {str(a): list(v) for a, v in calibration.conformal.items()},
        }
    return {
        "method": "temperature_per_ood_bin",
        "edges": list(calibration.edges),
        "n": list(calibration.n),
        "temperature": list(calibration.temperature),
    }
