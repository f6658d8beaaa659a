"""Mondrian conformal intervals and per-bin temperatures: the rules, on small exact cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skyclass.errors import ModelOutputError
from skyclass.probability.calibration import CALIBRATION_EPS, temperature_softmax
from skyclass.probability.conformal import (
    FLAG_NO_SCORE,
    FLAG_OK,
    FLAG_OUT_OF_DOMAIN,
    FLAG_TOO_FEW,
    check_edges,
    conformal_quantile,
    conformity_scores,
    fit_interval_calibration,
    fit_probability_recalibration,
    fit_temperature,
    ood_bin,
    photoz_intervals,
    recalibrate_probabilities,
)
from skyclass.probability.redshift import RedshiftGrid

GRID = RedshiftGrid.uniform(0.0, 1.0, 10)


def test_the_conformal_quantile_is_the_ceil_n_plus_1_level_th_score_or_none() -> None:
    scores = np.arange(1.0, 20.0)  # 19 scores
    assert conformal_quantile(scores, 0.5) == 10.0  # ceil(20 * 0.5) = 10th
    assert conformal_quantile(scores, 0.95) == 19.0  # ceil(20 * 0.95) = 19th
    assert conformal_quantile(scores[:18], 0.95) is None  # ceil(19 * 0.95) = 19 > 18
    assert conformal_quantile([], 0.68) is None
    with pytest.raises(ModelOutputError):
        conformal_quantile(scores, 1.0)


def test_bins_flags_and_edges() -> None:
    index, flag = ood_bin(
        [0.0, 19.9, 20.0, 98.9, 99.0, 100.0, math.nan, 50.0], (0, 20, 99), [False] * 7 + [True]
    )
    assert index.tolist() == [0, 0, 1, 1, -1, -1, -1, -1]
    assert flag.tolist() == [FLAG_OK] * 4 + [FLAG_OUT_OF_DOMAIN] * 2 + [
        FLAG_NO_SCORE,
        FLAG_OUT_OF_DOMAIN,
    ]
    for bad in ((0.0,), (0, 50, 50), (5, 50), (0, 101), (0, math.nan)):
        with pytest.raises(ModelOutputError):
            check_edges(bad)


def test_scores_are_negative_inside_the_interval_and_count_half_widths_outside() -> None:
    pdf = np.zeros((3, 10))
    pdf[:, 4] = 1.0  # all mass in [0.4, 0.5): L, M, U = 0.416, 0.45, 0.484 at 68%
    s = conformity_scores(pdf, GRID, np.array([0.45, 0.484 + 0.035, 0.416 - 0.07]), 0.68)
    assert s[0] < 0
    assert math.isclose(s[1], 1.0, rel_tol=1e-9) and math.isclose(s[2], 2.0, rel_tol=1e-9)


def test_intervals_widen_by_the_bins_quantile_and_none_is_invented() -> None:
    rng = np.random.default_rng(0)
    n = 400
    pdf = np.zeros((n, 10))
    pdf[:, 4] = 1.0
    pct = np.concatenate([rng.uniform(0, 50, n // 2), rng.uniform(50, 99, n // 2)])
    # Truth spread twice as wide for the unusual half.
    z = 0.45 + np.where(pct < 50, 0.02, 0.08) * rng.standard_normal(n)
    cal = fit_interval_calibration(pdf, GRID, z, pct, edges=(0, 50, 99), min_bin_size=100)
    q = cal.conformal[0.68]
    assert q[0] is not None and q[1] is not None and q[1] > q[0]
    test_pct = np.array([10.0, 70.0, 99.5, math.nan])
    out = photoz_intervals(pdf[:4], GRID, test_pct, cal)
    width = out.hi[0.68] - out.lo[0.68]
    assert width[1] > width[0] > 0
    assert out.flag.tolist() == [FLAG_OK, FLAG_OK, FLAG_OUT_OF_DOMAIN, FLAG_NO_SCORE]
    assert np.isnan(out.lo[0.95][2:]).all() and np.isnan(out.hi[0.68][2:]).all()
    assert (out.lo[0.95][:2] <= out.lo[0.68][:2]).all()
    assert (out.hi[0.95][:2] >= out.hi[0.68][:2]).all()
    # A bin under min_bin_size gets no interval.
    sparse = fit_interval_calibration(pdf, GRID, z, pct, edges=(0, 50, 99), min_bin_size=300)
    assert sparse.conformal[0.95] == (None, None)
    assert set(photoz_intervals(pdf[:2], GRID, test_pct[:2], sparse).flag) == {FLAG_TOO_FEW}


def test_the_temperature_fit_recovers_a_known_temperature_per_bin() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(6000, 3))
    truth = temperature_softmax(np.exp(logits), 1.0, CALIBRATION_EPS)
    y = (rng.random((6000, 1)) > np.cumsum(truth, axis=1)).sum(axis=1)
    overconfident = temperature_softmax(truth, 0.5, CALIBRATION_EPS)  # p^2, renormalised
    assert abs(fit_temperature(overconfident, y) - 2.0) < 0.15
    pct = np.where(np.arange(6000) < 3000, 10.0, 60.0)
    mixed = np.where((pct < 50)[:, None], truth, overconfident)
    recal = fit_probability_recalibration(mixed, y, pct, edges=(0, 50, 99))
    t0, t1 = recal.temperature
    assert t0 is not None and t1 is not None and abs(t0 - 1.0) < 0.1 and abs(t1 - 2.0) < 0.2
    out, flag = recalibrate_probabilities(mixed[:2], [10.0, 99.0], recal)
    assert flag.tolist() == [FLAG_OK, FLAG_OUT_OF_DOMAIN]
    assert np.isclose(out[0].sum(), 1.0) and np.isnan(out[1]).all()
