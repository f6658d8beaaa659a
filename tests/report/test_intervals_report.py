"""The per-OOD-quintile table and figure: counts, values and a real PNG."""

from __future__ import annotations

import math

import numpy as np

from skyclass.probability.conformal import FLAG_OK, FLAG_OUT_OF_DOMAIN, Intervals
from skyclass.report.intervals import (
    coverage_by_quintile,
    coverage_plot,
    ece_by_quintile,
    markdown_table,
)


def _intervals() -> tuple[Intervals, np.ndarray, np.ndarray]:
    pct = np.array([5.0, 10.0, 30.0, 50.0, 70.0, 85.0, 99.5])
    z = np.array([0.5, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5])
    lo = np.array([0.4, 0.4, 0.4, 0.4, 0.6, 0.4, math.nan])
    hi = np.array([0.6, 0.6, 0.6, 0.6, 0.7, 0.6, math.nan])
    flag = np.array([FLAG_OK] * 6 + [FLAG_OUT_OF_DOMAIN])
    return Intervals(lo={0.68: lo}, hi={0.68: hi}, flag=flag), pct, z


def test_coverage_counts_only_objects_with_an_interval_per_quintile() -> None:
    intervals, pct, z = _intervals()
    (row,) = coverage_by_quintile("m", intervals, pct, z, levels=(0.68,))
    assert row.counts == (2, 1, 1, 1, 1)
    assert row.values == (0.5, 1.0, 1.0, 0.0, 1.0)
    table = markdown_table([row])
    assert "[0, 20) (n=2)" in table and "| m | coverage 68% | 0.500 | 1.000 |" in table


def test_ece_skips_rows_without_probabilities_and_the_plot_is_a_png() -> None:
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [math.nan, math.nan], [0.6, 0.4]])
    row = ece_by_quintile("t", proba, np.array([0, 1, 0, 0]), np.array([1.0, 2.0, 3.0, 90.0]))
    assert row.counts == (2, 0, 0, 0, 1)
    assert math.isclose(row.values[0], 0.4) and math.isnan(row.values[1])
    intervals, pct, z = _intervals()
    rows = coverage_by_quintile("m", intervals, pct, z, levels=(0.68,))
    png = coverage_plot(rows, {"coverage 68%": 0.68}, "test")
    assert png.startswith(b"\x89PNG") and len(png) > 5000
