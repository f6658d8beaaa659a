"""Augmentation from magnitude errors on real BOSS DR10 photometry (u errors up to 3.5e4 mag)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skyclass.train.augment import AugmentConfig, augment_photometry, augmentation_effect
from skyclass.train.errors import TrainError
from skyclass.train.photoz import RedshiftGrid, bin_redshifts, pdf_from_proba, photoz_metrics
from tests.train.data import Photoz, sdss_features


def test_copies_are_seeded_and_follow_the_errors(boss: Photoz) -> None:
    config = AugmentConfig(n_copies=3, seed=1)
    mags, source = augment_photometry(boss.mags, boss.errs, config)
    n = boss.mags.shape[0]
    assert mags.shape == (4 * n, 5)
    assert source.tolist() == list(range(n)) * 4
    np.testing.assert_array_equal(mags[:n], boss.mags)  # originals first, untouched
    again, _ = augment_photometry(boss.mags, boss.errs, config)
    np.testing.assert_array_equal(mags, again)
    other, _ = augment_photometry(boss.mags, boss.errs, AugmentConfig(n_copies=3, seed=2))
    assert not np.array_equal(mags, other)
    # Well-measured r band: the scatter in units of the error is standard normal.
    pulls = (mags[n:, 2] - boss.mags[source[n:], 2]) / boss.errs[source[n:], 2]
    assert np.mean(pulls) == pytest.approx(0.0, abs=0.03)
    assert np.std(pulls) == pytest.approx(1.0, abs=0.03)


def test_huge_errors_are_capped(boss: Photoz) -> None:
    assert boss.errs[:, 0].max() > 1000  # the u band has effective non-detections
    mags, source = augment_photometry(boss.mags, boss.errs, AugmentConfig(n_copies=2, seed=0))
    n = boss.mags.shape[0]
    shift = np.abs(mags[n:] - boss.mags[source[n:]])
    assert shift.max() < 6.0  # six sigma of the 1-mag cap, never thousands of magnitudes
    huge = boss.errs[source[n:], 0] > 10
    assert shift[huge, 0].std() == pytest.approx(np.sqrt(1 - 2 / np.pi), rel=0.1)  # |N(0, 1)|


def test_nondetection_policy_blanks_only_the_copies(boss: Photoz) -> None:
    config = AugmentConfig(n_copies=1, seed=0, max_error=1.0, policy="nondetection")
    mags, _ = augment_photometry(boss.mags, boss.errs, config)
    n = boss.mags.shape[0]
    blanked = np.isnan(mags[n:])
    np.testing.assert_array_equal(blanked, boss.errs > 1.0)
    assert not np.isnan(mags[:n]).any()
    json.dumps(config.to_dict())


def test_unknown_errors_leave_the_band_alone() -> None:
    mags = np.array([[20.0, np.nan, 21.0, 22.0]])
    errs = np.array([[np.nan, 0.1, -1.0, 0.0]])
    out, _ = augment_photometry(mags, errs, AugmentConfig(n_copies=2, seed=0))
    np.testing.assert_array_equal(out[1:, [0, 2, 3]], [[20.0, 21.0, 22.0]] * 2)
    assert np.isnan(out[:, 1]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_copies": -1, "seed": 0}, "n_copies"),
        ({"n_copies": 1, "seed": 0, "max_error": 0.0}, "max_error"),
        ({"n_copies": 1, "seed": 0, "policy": "drop"}, "policy"),
    ],
)
def test_bad_configs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TrainError, match=message):
        AugmentConfig(**kwargs)  # type: ignore[arg-type]


def test_augmentation_effect_reports_paired_differences(boss: Photoz) -> None:
    rows = slice(0, 3000)
    mags, errs, z = boss.mags[rows], boss.errs[rows], boss.z[rows]
    grid = RedshiftGrid.uniform(0.0, 1.0, 10)
    labels = bin_redshifts(z, grid)

    def photoz_scorer(
        fold_rows: np.ndarray, proba: np.ndarray, classes: np.ndarray
    ) -> dict[str, float]:
        pdf = pdf_from_proba(proba, classes, grid)
        return photoz_metrics(z[fold_rows], pdf, grid).scalars()

    effect = augmentation_effect(
        "random_forest",
        mags,
        errs,
        labels,
        features=sdss_features,
        feature_names=["u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z"],
        config=AugmentConfig(n_copies=2, seed=3),
        params={"n_estimators": 20, "min_samples_leaf": 5},
        n_splits=3,
        stratify=bin_redshifts(z, RedshiftGrid.uniform(0.0, 1.0, 4)),
        scorer=photoz_scorer,
        n_jobs=1,
    )
    nmad = effect.metrics["sigma_nmad"]
    assert nmad.baseline.n == nmad.augmented.n == nmad.difference.n == 3
    assert nmad.difference.mean == pytest.approx(nmad.augmented.mean - nmad.baseline.mean)
    assert np.isfinite(nmad.difference.std)
    assert "coverage_68" in effect.metrics
    # Both runs used the same folds; only training rows were augmented.
    np.testing.assert_array_equal(effect.baseline.fold, effect.augmented.fold)
    assert not np.array_equal(effect.baseline.oof_proba, effect.augmented.oof_proba)
    json.dumps(effect.to_dict(), allow_nan=False)
