"""Photo-z PDFs: grid, summaries, PIT, coverage, CRPS; synthetic truths and real BOSS DR10."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import ndtr

from skyclass.errors import ModelOutputError
from skyclass.train.crossval import cross_validate, make_splits
from skyclass.train.errors import TrainError
from skyclass.train.photoz import (
    RedshiftGrid,
    bin_redshifts,
    crps,
    ks_uniform,
    pdf_cdf,
    pdf_from_proba,
    pdf_quantile,
    photoz_metrics,
    point_estimates,
    point_metrics,
)
from tests.train.data import Photoz, sdss_features

GRID = RedshiftGrid((0.0, 0.1, 0.2, 0.3))


def test_grid_and_binning() -> None:
    grid = RedshiftGrid.uniform(0.0, 1.0, 4)
    assert grid.edges == (0.0, 0.25, 0.5, 0.75, 1.0)
    np.testing.assert_allclose(grid.centres, [0.125, 0.375, 0.625, 0.875])
    assert RedshiftGrid.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    z = np.array([-0.01, 0.0, 0.2499, 0.25, 0.99, 1.0, 1.2])
    assert bin_redshifts(z, grid).tolist() == [0, 0, 0, 1, 3, 3, 3]
    with pytest.raises(TrainError, match="2 redshifts lie outside"):
        bin_redshifts(z, grid, out_of_range="error")
    with pytest.raises(TrainError, match="NaN"):
        bin_redshifts([np.nan], grid)
    with pytest.raises(ModelOutputError, match="strictly increasing"):
        RedshiftGrid((0.0, 0.5, 0.5))


def test_pdf_from_classifier_probabilities_fills_unseen_bins() -> None:
    pdf = pdf_from_proba(np.array([[0.25, 0.75]]), np.array([0, 2]), GRID)
    np.testing.assert_allclose(pdf, [[0.25, 0.0, 0.75]])
    with pytest.raises(TrainError, match="bin indices"):
        pdf_from_proba(np.array([[1.0]]), np.array([3]), GRID)


def test_summaries_by_hand() -> None:
    one_bin = np.array([[0.0, 1.0, 0.0]])
    s = point_estimates(one_bin, GRID)
    assert s.mean[0] == pytest.approx(0.15)
    assert s.median[0] == pytest.approx(0.15)
    assert s.mode[0] == pytest.approx(0.15)
    lo, hi = s.intervals[0.68]
    assert (lo[0], hi[0]) == pytest.approx((0.116, 0.184))
    lo95, hi95 = s.intervals[0.95]
    assert (lo95[0], hi95[0]) == pytest.approx((0.1025, 0.1975))
    two = np.array([[0.5, 0.5, 0.0]])
    assert pdf_quantile(two, GRID, 0.5)[0] == pytest.approx(0.1)
    assert pdf_quantile(two, GRID, 0.25)[0] == pytest.approx(0.05)
    # An empty bin in the middle: the CDF is flat across it.
    gap = np.array([[0.5, 0.0, 0.5]])
    assert pdf_quantile(gap, GRID, 0.6)[0] == pytest.approx(0.22)
    np.testing.assert_allclose(pdf_cdf(gap, GRID, np.array([0.15])), [0.5])
    np.testing.assert_allclose(pdf_cdf(np.repeat(gap, 3, 0), GRID, [-1.0, 0.05, 9.0]), [0, 0.25, 1])


def test_point_metrics_by_hand() -> None:
    z_spec = np.zeros(5)
    z_phot = np.array([-0.1, 0.0, 0.05, 0.2, 0.01])
    m = point_metrics(z_spec, z_phot)
    assert m["sigma_nmad"] == pytest.approx(1.4826 * 0.04)
    assert m["outlier_fraction"] == pytest.approx(0.2)
    assert m["bias_median"] == pytest.approx(0.01)
    assert m["bias_mean"] == pytest.approx(0.032)
    # dz is scaled by 1 + z_spec.
    assert point_metrics(np.array([1.0]), np.array([1.4]))["bias_mean"] == pytest.approx(0.2)


def test_crps_matches_numerical_integration() -> None:
    rng = np.random.default_rng(0)
    grid = RedshiftGrid.uniform(0.0, 1.0, 10)
    pdf = rng.random((6, 10)) ** 3
    z = np.array([0.33, 0.0, 0.5, 0.999, -0.2, 1.3])
    fine = np.linspace(-0.5, 1.5, 400_001)
    for row in range(6):
        cdf = pdf_cdf(np.repeat(pdf[row : row + 1], fine.size, 0), grid, fine)
        integrand = (cdf - (fine >= z[row])) ** 2
        expected = np.trapezoid(integrand, fine)
        assert crps(pdf[row : row + 1], grid, z[row : row + 1])[0] == pytest.approx(
            expected, abs=1e-5
        )
    # All mass in the top bin, truth far below: the gap plus a third of the bin width.
    narrow = np.zeros((1, 10))
    narrow[0, 9] = 1.0
    assert crps(narrow, grid, np.array([0.05]))[0] == pytest.approx(0.85 + 0.1 / 3)


def gaussian_pdfs(mu: np.ndarray, sigma: np.ndarray, grid: RedshiftGrid) -> np.ndarray:
    """Bin masses of N(mu, sigma) on the grid (mass outside the grid is dropped)."""
    cdf = ndtr((grid.edge_array[None, :] - mu[:, None]) / sigma[:, None])
    return np.diff(cdf, axis=1)


def test_pit_is_uniform_and_coverage_nominal_for_correct_pdfs() -> None:
    rng = np.random.default_rng(42)
    n = 20_000
    grid = RedshiftGrid.uniform(0.0, 2.0, 200)
    mu = rng.uniform(0.5, 1.5, n)
    sigma = rng.uniform(0.05, 0.15, n)
    z_true = mu + sigma * rng.standard_normal(n)
    m = photoz_metrics(z_true, gaussian_pdfs(mu, sigma, grid), grid)
    assert m.pit_ks < 0.02  # ~0.0096 is the 95% point of the KS statistic at n = 20000
    assert m.coverage[0.68] == pytest.approx(0.68, abs=0.015)
    assert m.coverage[0.95] == pytest.approx(0.95, abs=0.01)
    assert max(m.pit_histogram) < 1.1 * n / 10 and min(m.pit_histogram) > 0.9 * n / 10
    # Sampling the binned PDF itself gives PIT = the sampled probability exactly.
    u = rng.uniform(0.001, 0.999, n)
    pdf = gaussian_pdfs(mu, sigma, grid)
    np.testing.assert_allclose(pdf_cdf(pdf, grid, pdf_quantile(pdf, grid, u)), u, atol=1e-9)
    assert ks_uniform(u) < 0.02


def test_too_narrow_pdfs_are_caught() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    grid = RedshiftGrid.uniform(0.0, 2.0, 200)
    mu = rng.uniform(0.5, 1.5, n)
    sigma = rng.uniform(0.05, 0.15, n)
    z_true = mu + sigma * rng.standard_normal(n)
    m = photoz_metrics(z_true, gaussian_pdfs(mu, sigma / 2, grid), grid)
    assert m.coverage[0.68] < 0.45 and m.coverage[0.95] < 0.75
    hist = np.asarray(m.pit_histogram)
    assert hist[0] > 2 * hist[5] and hist[-1] > 2 * hist[5]  # U-shaped
    assert m.pit_ks > 0.1


def test_boss_photoz_pdfs_from_a_tree_classifier_over_bins(boss: Photoz) -> None:
    grid = RedshiftGrid.uniform(0.0, 1.0, 25)
    labels = bin_redshifts(boss.z, grid)
    X = sdss_features(boss.mags)
    names = ["mag_u", "mag_g", "mag_r", "mag_i", "mag_z", "u_g", "g_r", "r_i", "i_z"]
    # Stratify on coarse bins: the top fine bins hold only a handful of objects.
    folds = make_splits(bin_redshifts(boss.z, RedshiftGrid.uniform(0, 1, 5)), n_splits=3).fold
    cv = cross_validate(
        "random_forest",
        X,
        labels,
        feature_names=names,
        params={"n_estimators": 30, "min_samples_leaf": 5},
        folds=folds,
        n_jobs=1,
    )
    pdf = pdf_from_proba(cv.oof_proba, cv.labels, grid)
    m = photoz_metrics(boss.z, pdf, grid)
    assert m.n == 8000
    assert m.sigma_nmad < 0.035
    assert m.outlier_fraction < 0.05
    assert abs(m.bias_median) < 0.01
    # Random-forest PDFs are somewhat too wide: coverage at or above nominal.
    assert 0.6 < m.coverage[0.68] < 0.9 and m.coverage[0.95] > 0.9
    assert 0.0 < m.crps_mean < 0.05
    record = m.to_dict()
    assert set(record) >= {"sigma_nmad", "coverage_68", "coverage_95", "pit_ks", "pit_histogram"}
    json.dumps(record, allow_nan=False)
