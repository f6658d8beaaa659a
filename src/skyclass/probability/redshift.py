"""Photometric-redshift PDFs on a redshift grid: the grid, CDF, quantiles and point summaries.

A PDF is the array of bin masses, one row per object, summing to 1; it is read
as a piecewise-constant density, so the CDF is linear inside each bin. Training
(:mod:`skyclass.train.photoz`), the client-side scorer and the SQL function
``skyclass.pdf_summary`` use these same definitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.errors import ModelOutputError

INTERVALS = (0.68, 0.95)
"""Central interval probabilities whose bounds and coverage are reported."""

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RedshiftGrid:
    """Redshift bin edges (strictly increasing); bin b is ``[edges[b], edges[b+1])``."""

    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        e = np.asarray(self.edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 3:
            raise ModelOutputError("a redshift grid needs at least 3 edges (2 bins)")
        if not np.isfinite(e).all() or (np.diff(e) <= 0).any():
            raise ModelOutputError("redshift grid edges must be finite and strictly increasing")

    @classmethod
    def uniform(cls, z_min: float, z_max: float, n_bins: int) -> RedshiftGrid:
        """``n_bins`` equal-width bins from ``z_min`` to ``z_max``."""
        if n_bins < 2 or not z_max > z_min:
            raise ModelOutputError("need n_bins >= 2 and z_max > z_min")
        return cls(tuple(float(v) for v in np.linspace(z_min, z_max, n_bins + 1)))

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return len(self.edges) - 1

    @property
    def edge_array(self) -> FloatArray:
        """Edges as a float64 array."""
        return np.asarray(self.edges, dtype=np.float64)

    @property
    def centres(self) -> FloatArray:
        """Bin centres."""
        e = self.edge_array
        return np.asarray(0.5 * (e[:-1] + e[1:]))

    @property
    def widths(self) -> FloatArray:
        """Bin widths."""
        return np.asarray(np.diff(self.edge_array))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"edges": list(self.edges)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RedshiftGrid:
        """Read :meth:`to_dict` output."""
        return cls(tuple(float(v) for v in record["edges"]))


def normalised_pdf(pdf: Any) -> FloatArray:
    p = np.asarray(pdf, dtype=np.float64)
    if p.ndim != 2:
        raise ModelOutputError(f"PDFs must be a 2-D array (objects x bins), not {p.ndim}-D")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ModelOutputError("PDF masses must be finite and non-negative")
    total = p.sum(axis=1, keepdims=True)
    if (total <= 0).any():
        raise ModelOutputError("every PDF needs a positive total mass")
    return np.asarray(p / total)


def pdf_cdf(pdf: Any, grid: RedshiftGrid, z: Any) -> FloatArray:
    """CDF of each row's PDF at its own ``z`` (linear inside bins, 0 below and 1 above the grid)."""
    p = normalised_pdf(pdf)
    values = np.asarray(z, dtype=np.float64)
    if values.shape != (p.shape[0],):
        raise ModelOutputError(f"need one redshift per PDF row ({p.shape[0]}), got {values.shape}")
    e = grid.edge_array
    b = np.clip(np.searchsorted(e, values, side="right") - 1, 0, grid.n_bins - 1)
    rows = np.arange(p.shape[0])
    before = np.cumsum(p, axis=1)[rows, b] - p[rows, b]
    frac = np.clip((values - e[b]) / grid.widths[b], 0.0, 1.0)
    # Rounding in the cumulative sum can overshoot 1 by a few ulps; a CDF stays in [0, 1].
    cdf = np.clip(before + p[rows, b] * frac, 0.0, 1.0)
    return np.asarray(np.where(values < e[0], 0.0, np.where(values >= e[-1], 1.0, cdf)))


def pdf_quantile(pdf: Any, grid: RedshiftGrid, q: float | npt.ArrayLike) -> FloatArray:
    """The redshift where each row's CDF reaches ``q``, linear inside the bin.

    ``q`` is one probability for all rows or one per row, each in (0, 1). The
    bin is the first whose cumulative mass reaches ``q`` (so it has mass > 0).
    """
    p = normalised_pdf(pdf)
    qs = np.broadcast_to(np.asarray(q, dtype=np.float64), (p.shape[0],))
    if not ((qs > 0.0) & (qs < 1.0)).all():
        raise ModelOutputError("quantile probabilities must be in (0, 1)")
    cum = np.cumsum(p, axis=1)
    j = np.minimum((cum < qs[:, None]).sum(axis=1), grid.n_bins - 1)
    rows = np.arange(p.shape[0])
    mass = p[rows, j]
    below = cum[rows, j] - mass
    frac = np.clip((qs - below) / np.where(mass > 0, mass, 1.0), 0.0, 1.0)
    return np.asarray(grid.edge_array[j] + frac * grid.widths[j])


@dataclass(frozen=True)
class PointEstimates:
    """Point summaries of binned PDFs: mean, median, mode and central intervals."""

    mean: FloatArray
    median: FloatArray
    mode: FloatArray
    intervals: Mapping[float, tuple[FloatArray, FloatArray]]


def point_estimates(
    pdf: Any, grid: RedshiftGrid, intervals: Sequence[float] = INTERVALS
) -> PointEstimates:
    """Mean (of bin centres), median, mode (centre of the densest bin) and central intervals.

    The central interval of probability c is ``[Q((1-c)/2), Q((1+c)/2)]`` with
    the quantiles of :func:`pdf_quantile`.
    """
    p = normalised_pdf(pdf)
    density = p / grid.widths
    bounds = {}
    for c in intervals:
        if not 0.0 < c < 1.0:
            raise ModelOutputError(f"interval probability must be in (0, 1), not {c}")
        bounds[float(c)] = (
            pdf_quantile(p, grid, (1.0 - c) / 2.0),
            pdf_quantile(p, grid, (1.0 + c) / 2.0),
        )
    return PointEstimates(
        mean=np.asarray(p @ grid.centres),
        median=pdf_quantile(p, grid, 0.5),
        mode=np.asarray(grid.centres[np.argmax(density, axis=1)]),
        intervals=bounds,
    )
