"""Photometric-redshift PDFs on a redshift grid: binning, summaries and honest metrics.

A photo-z PDF model is an ordinary classifier of the estimator registry trained
on redshift-bin labels (:func:`bin_redshifts`); its ``predict_proba`` columns are
the probability masses of the bins (:func:`pdf_from_proba`). A PDF here is the
array of bin masses, one row per object, summing to 1; it is read as a
piecewise-constant density, so the CDF is linear inside each bin. Everything
below (quantiles, intervals, PIT, CRPS) uses that one CDF.

Metrics (``dz = (z_phot - z_spec) / (1 + z_spec)``):
``sigma_nmad = 1.4826 * median(|dz - median(dz)|)``; outlier fraction
``mean(|dz| > 0.15)``; bias as ``median(dz)`` and ``mean(dz)``; PIT values
``CDF_i(z_spec_i)`` with their histogram and Kolmogorov-Smirnov distance from
the uniform distribution (uniform PIT means calibrated PDFs; U-shaped means too
narrow, hump-shaped too wide); coverage of the central 68% and 95% intervals;
and the CRPS ``integral (CDF(z) - [z >= z_spec])^2 dz``, computed exactly for
the piecewise-linear CDF (over the whole real line: outside the grid the CDF is
0 below and 1 above).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.probability.redshift import (
    INTERVALS,
    FloatArray,
    PointEstimates,
    RedshiftGrid,
    normalised_pdf,
    pdf_cdf,
    pdf_quantile,
    point_estimates,
)
from skyclass.train.errors import TrainError

__all__ = [
    "INTERVALS",
    "NMAD_SCALE",
    "OUTLIER_DZ",
    "PhotozMetrics",
    "PointEstimates",
    "RedshiftGrid",
    "bin_redshifts",
    "crps",
    "ks_uniform",
    "pdf_cdf",
    "pdf_from_proba",
    "pdf_quantile",
    "photoz_metrics",
    "point_estimates",
    "point_metrics",
]

NMAD_SCALE = 1.4826
OUTLIER_DZ = 0.15


def bin_redshifts(
    z: Any, grid: RedshiftGrid, *, out_of_range: str = "clip"
) -> npt.NDArray[np.intp]:
    """Bin index of each redshift (the last bin includes the top edge).

    Redshifts outside the grid go to the first or last bin with
    ``out_of_range="clip"`` (BOSS has a few slightly negative spectroscopic
    redshifts), or raise with ``"error"``. NaN always raises.
    """
    values = np.asarray(z, dtype=np.float64)
    if not np.isfinite(values).all():
        raise TrainError("redshifts to bin contain NaN or infinite values")
    e = grid.edge_array
    outside = int(((values < e[0]) | (values > e[-1])).sum())
    if outside and out_of_range == "error":
        raise TrainError(f"{outside} redshifts lie outside the grid [{e[0]}, {e[-1]}]")
    if out_of_range not in ("clip", "error"):
        raise TrainError(f"out_of_range must be 'clip' or 'error', not {out_of_range!r}")
    index = np.searchsorted(e, values, side="right") - 1
    return np.asarray(np.clip(index, 0, grid.n_bins - 1), dtype=np.intp)


def pdf_from_proba(
    proba: Any, classes: Sequence[Any] | npt.NDArray[Any], grid: RedshiftGrid
) -> FloatArray:
    """Bin masses on ``grid`` from a classifier's probabilities over the bins it saw.

    ``classes`` are the classifier's ``classes_`` (bin indices); bins absent
    from training get mass 0. Rows are renormalised to sum to 1.
    """
    p = np.asarray(proba, dtype=np.float64)
    index = np.asarray(classes).astype(np.int64)
    if p.ndim != 2 or p.shape[1] != index.size:
        raise TrainError(f"probabilities have shape {p.shape}, expected (n, {index.size})")
    if index.size and (index.min() < 0 or index.max() >= grid.n_bins):
        raise TrainError(f"class labels must be bin indices 0..{grid.n_bins - 1}")
    pdf = np.zeros((p.shape[0], grid.n_bins))
    pdf[:, index] = p
    return normalised_pdf(pdf)


def crps(pdf: Any, grid: RedshiftGrid, z_spec: Any) -> FloatArray:
    """Continuous ranked probability score of each binned PDF at its true redshift (exact)."""
    p = normalised_pdf(pdf)
    z = np.asarray(z_spec, dtype=np.float64)
    if z.shape != (p.shape[0],):
        raise TrainError(f"need one redshift per PDF row ({p.shape[0]}), got {z.shape}")
    e = grid.edge_array
    cum = np.cumsum(p, axis=1)
    f_lo = cum - p  # CDF at each bin's lower edge
    f_hi = cum
    a, b = e[:-1][None, :], e[1:][None, :]
    cut = np.clip(z[:, None], a, b)
    f_cut = f_lo + (f_hi - f_lo) * (cut - a) / (b - a)
    # Below z_spec the integrand is CDF^2, above it (1 - CDF)^2; both linear pieces.
    left = (cut - a) * (f_lo**2 + f_lo * f_cut + f_cut**2) / 3.0
    g_cut, g_hi = 1.0 - f_cut, 1.0 - f_hi
    right = (b - cut) * (g_cut**2 + g_cut * g_hi + g_hi**2) / 3.0
    outside = np.maximum(e[0] - z, 0.0) + np.maximum(z - e[-1], 0.0)
    return np.asarray((left + right).sum(axis=1) + outside)


def ks_uniform(values: Any) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of ``values`` and U(0, 1)."""
    u = np.sort(np.asarray(values, dtype=np.float64))
    n = u.size
    if n == 0:
        return math.nan
    i = np.arange(1, n + 1)
    return float(max((i / n - u).max(), (u - (i - 1) / n).max()))


def point_metrics(z_spec: Any, z_phot: Any, *, outlier_dz: float = OUTLIER_DZ) -> dict[str, float]:
    """sigma_NMAD, outlier fraction and median/mean bias of point photo-z estimates."""
    zs = np.asarray(z_spec, dtype=np.float64)
    zp = np.asarray(z_phot, dtype=np.float64)
    if zs.shape != zp.shape or zs.ndim != 1 or zs.size == 0:
        raise TrainError(f"z_spec {zs.shape} and z_phot {zp.shape} must be equal non-empty 1-D")
    if not (np.isfinite(zs).all() and np.isfinite(zp).all()) or (zs <= -1).any():
        raise TrainError("redshifts must be finite and > -1")
    dz = (zp - zs) / (1.0 + zs)
    median = float(np.median(dz))
    return {
        "sigma_nmad": float(NMAD_SCALE * np.median(np.abs(dz - median))),
        "outlier_fraction": float(np.mean(np.abs(dz) > outlier_dz)),
        "bias_median": median,
        "bias_mean": float(np.mean(dz)),
    }


@dataclass(frozen=True)
class PhotozMetrics:
    """Point and PDF metrics of one photo-z evaluation (one fold or a held-out set)."""

    n: int
    point: str
    sigma_nmad: float
    outlier_fraction: float
    bias_median: float
    bias_mean: float
    pit_ks: float
    pit_histogram: tuple[int, ...]
    coverage: Mapping[float, float]
    crps_mean: float

    def scalars(self) -> dict[str, float]:
        """Flat name -> value map (coverage as ``coverage_68``), for mean ± std over folds."""
        out = {
            "sigma_nmad": self.sigma_nmad,
            "outlier_fraction": self.outlier_fraction,
            "bias_median": self.bias_median,
            "bias_mean": self.bias_mean,
            "pit_ks": self.pit_ks,
            "crps_mean": self.crps_mean,
        }
        for c, value in self.coverage.items():
            out[f"coverage_{round(c * 100)}"] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form."""
        return {
            "n": self.n,
            "point": self.point,
            **{k: (v if math.isfinite(v) else None) for k, v in self.scalars().items()},
            "pit_histogram": list(self.pit_histogram),
        }


def photoz_metrics(
    z_spec: Any,
    pdf: Any,
    grid: RedshiftGrid,
    *,
    point: str = "median",
    pit_bins: int = 10,
    intervals: Sequence[float] = INTERVALS,
    outlier_dz: float = OUTLIER_DZ,
) -> PhotozMetrics:
    """Every photo-z metric of the module docs for binned PDFs and true redshifts.

    ``point`` chooses the point estimate scored by the point metrics (``mean``,
    ``median`` or ``mode``); the PIT histogram has ``pit_bins`` equal bins on [0, 1].
    """
    p = normalised_pdf(pdf)
    zs = np.asarray(z_spec, dtype=np.float64)
    summary = point_estimates(p, grid, intervals)
    if point not in ("mean", "median", "mode"):
        raise TrainError(f"point must be mean, median or mode, not {point!r}")
    scores = point_metrics(zs, getattr(summary, point), outlier_dz=outlier_dz)
    pit = pdf_cdf(p, grid, zs)
    hist, _ = np.histogram(pit, bins=pit_bins, range=(0.0, 1.0))
    coverage = {
        c: float(np.mean((zs >= lo) & (zs <= hi))) for c, (lo, hi) in summary.intervals.items()
    }
    return PhotozMetrics(
        n=int(zs.size),
        point=point,
        sigma_nmad=scores["sigma_nmad"],
        outlier_fraction=scores["outlier_fraction"],
        bias_median=scores["bias_median"],
        bias_mean=scores["bias_mean"],
        pit_ks=ks_uniform(pit),
        pit_histogram=tuple(int(v) for v in hist),
        coverage=coverage,
        crps_mean=float(np.mean(crps(p, grid, zs))),
    )
