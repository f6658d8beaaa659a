"""Weighted expected metrics agree with the training metrics' own definitions.

With equal weights the estimates must equal the unweighted metrics that
training reports (:func:`classification_metrics`, :func:`photoz_metrics`);
with weight only on a subset they must equal that subset's metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skyclass.domain.errors import DomainError
from skyclass.domain.expected import Estimate, expected_classification, expected_photoz
from skyclass.train.metrics import classification_metrics
from skyclass.train.photoz import RedshiftGrid, photoz_metrics

GRID = RedshiftGrid.uniform(0.0, 1.0, 20)


@pytest.fixture(scope="module")
def boss_pdfs(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """3,000 BOSS DR10 redshifts with noisy Gaussian PDFs on a 20-bin grid."""
    frame = pd.read_csv(shared_data / "photoz_boss_dr10_annz" / "boss_dr10_photoz_35762.csv")
    rng = np.random.default_rng(4)
    z = frame["z_spec"].to_numpy()[rng.choice(len(frame), size=3_000, replace=False)]
    centre = z + rng.normal(0, 0.05, z.size)
    width = rng.uniform(0.03, 0.1, z.size)
    pdf = np.exp(-0.5 * ((GRID.centres[None, :] - centre[:, None]) / width[:, None]) ** 2)
    return z, pdf / pdf.sum(axis=1, keepdims=True) + 1e-12


def _values(estimates: list[Estimate], weighted: bool = True) -> dict[str, float]:
    return {
        f"{e.name}:{e.class_name}" if e.class_name else e.name: e.value
        if weighted
        else e.unweighted
        for e in estimates
    }


def test_photoz_equal_weights_match_training_metrics(boss_pdfs: tuple[np.ndarray, np.ndarray]):
    """Equal weights: sigma_NMAD, outliers, bias, coverage and PIT KS as training computes them."""
    z, pdf = boss_pdfs
    est = expected_photoz(z, pdf, GRID, np.full(z.size, 2.5), n_bootstrap=20)
    got, plain = _values(est), _values(est, weighted=False)
    want = photoz_metrics(z, pdf, GRID).scalars()
    for name in ("sigma_nmad", "outlier_fraction", "coverage_68", "coverage_95", "pit_ks"):
        assert got[name] == pytest.approx(want[name], abs=2e-3), name
        assert plain[name] == pytest.approx(got[name]), name
    assert got["bias_median"] == pytest.approx(want["bias_median"], abs=2e-3)
    assert all(np.isfinite(e.std) and e.n_effective == pytest.approx(z.size) for e in est)
    assert next(e for e in est if e.name == "coverage_68").std > 0


def test_photoz_weight_on_a_subset_is_the_subset(boss_pdfs: tuple[np.ndarray, np.ndarray]):
    """Zero weight outside the high-redshift half: the estimate is that half's metric."""
    z, pdf = boss_pdfs
    high = z > np.median(z)
    est = _values(expected_photoz(z, pdf, GRID, high.astype(float), n_bootstrap=10))
    want = photoz_metrics(z[high], pdf[high], GRID).scalars()
    for name in ("outlier_fraction", "coverage_68", "coverage_95"):
        assert est[name] == pytest.approx(want[name], abs=1e-9), name


def test_classification_equal_weights_match_training_metrics() -> None:
    """Equal weights: accuracy, balanced accuracy, purity, completeness, log loss as training."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2_000)
    proba = rng.dirichlet(np.ones(3), 2_000)
    proba[np.arange(y.size), y] += 0.6
    proba /= proba.sum(axis=1, keepdims=True)
    classes = ["GALAXY", "QSO", "STAR"]
    est = _values(expected_classification(y, proba, np.ones(y.size), classes, n_bootstrap=10))
    want = classification_metrics(np.asarray(classes)[y], proba, classes).to_dict()
    assert est["accuracy"] == pytest.approx(want["accuracy"])
    assert est["balanced_accuracy"] == pytest.approx(want["balanced_accuracy"])
    assert est["log_loss"] == pytest.approx(want["log_loss"], rel=1e-6)
    assert est["ece"] == pytest.approx(want["ece"])
    for k, name in enumerate(classes):
        assert est[f"completeness:{name}"] == pytest.approx(
            np.mean(np.argmax(proba[y == k], axis=1) == k)
        )


def test_bad_arrays_are_refused() -> None:
    """Wrong shapes and negative weights give a clear error."""
    with pytest.raises(DomainError, match="shapes disagree"):
        expected_classification([0, 1], np.ones((3, 2)) / 2, [1, 1], ["a", "b"])
    with pytest.raises(DomainError, match="weights >= 0"):
        expected_photoz([0.1, 0.2], np.ones((2, 20)) / 20, GRID, [1.0, -1.0])
