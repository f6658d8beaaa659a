"""Stratified K-fold cross-validation on real SDSS17 photometry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from skyclass.train.crossval import (
    FoldProgress,
    cross_validate,
    evaluate_folds,
    make_splits,
    mean_std,
)
from skyclass.train.errors import TrainError
from skyclass.train.estimators import estimator_config
from tests.train.data import Labelled


def test_splits_are_stratified_seeded_and_keep_calibration_out(sdss17: Labelled) -> None:
    splits = make_splits(sdss17.y, n_splits=5, seed=3, calibration_fraction=0.2)
    again = make_splits(sdss17.y, n_splits=5, seed=3, calibration_fraction=0.2)
    other = make_splits(sdss17.y, n_splits=5, seed=4, calibration_fraction=0.2)
    assert np.array_equal(splits.fold, again.fold)
    assert np.array_equal(splits.calibration, again.calibration)
    assert not np.array_equal(splits.fold, other.fold)
    assert splits.fold.dtype == np.int16 and splits.calibration.dtype == np.bool_
    assert (splits.fold[splits.calibration] == -1).all()
    assert (splits.fold[~splits.calibration] >= 0).all()
    assert splits.calibration.mean() == pytest.approx(0.2, abs=1e-3)
    overall = {c: np.mean(sdss17.y == c) for c in np.unique(sdss17.y)}
    for k in range(5):
        rows = splits.fold == k
        assert rows.sum() == pytest.approx(12_000 * 0.8 / 5, abs=2)
        for c, share in overall.items():
            assert np.mean(sdss17.y[rows] == c) == pytest.approx(share, abs=0.005)
    record = splits.to_dict()
    assert record["calibration_size"] == int(splits.calibration.sum())
    json.dumps(record)


def test_split_errors() -> None:
    with pytest.raises(TrainError, match="fewer than n_splits=5"):
        make_splits(np.array(["a"] * 10 + ["b"] * 3))
    with pytest.raises(TrainError, match="n_splits"):
        make_splits(np.array(["a", "b"] * 10), n_splits=1)
    with pytest.raises(TrainError, match="calibration_fraction"):
        make_splits(np.array(["a", "b"] * 10), calibration_fraction=1.0)


def test_mean_std_skips_undefined_folds() -> None:
    summary = mean_std([0.8, math.nan, 0.9])
    assert summary.n == 2 and summary.mean == pytest.approx(0.85)
    assert summary.std == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert str(summary) == "0.850 ± 0.071"
    assert mean_std([math.nan]).to_dict() == {"mean": None, "std": None, "n": 0}
    assert str(mean_std([math.nan])) == "undefined" and str(mean_std([0.5])) == "0.500"


def test_cross_validation_of_baselines_and_a_tree_ensemble(sdss17: Labelled) -> None:
    events: list[FoldProgress] = []
    results = {}
    for name, params in [
        ("dummy", None),
        ("colour_cut", None),
        ("logistic", None),
        ("hist_gradient_boosting", {"max_iter": 50}),
    ]:
        results[name] = cross_validate(
            name,
            sdss17.X,
            sdss17.y,
            feature_names=sdss17.names,
            params=params,
            seed=5,
            progress=events.append if name == "dummy" else None,
            n_jobs=1,
        )
    acc = {name: r.summary["accuracy"] for name, r in results.items()}
    # The dummy predicts the majority class: accuracy = its share (0.594 in SDSS17).
    assert acc["dummy"].mean == pytest.approx(np.mean(sdss17.y == "GALAXY"), abs=1e-3)
    assert acc["dummy"].mean < acc["colour_cut"].mean < acc["logistic"].mean
    assert acc["logistic"].mean < acc["hist_gradient_boosting"].mean
    assert 0.86 < acc["hist_gradient_boosting"].mean < 0.91
    assert 0 < acc["hist_gradient_boosting"].std < 0.02
    hgb = results["hist_gradient_boosting"]
    assert hgb.n_splits == 5 and len(hgb.fit_seconds) == 5
    assert hgb.estimator is not None and hgb.estimator["params"]["max_iter"] == 50
    assert hgb.classes == ("GALAXY", "QSO", "STAR")
    # Every row was predicted once, by a model that did not train on it.
    assert np.isfinite(hgb.oof_proba).all()
    np.testing.assert_allclose(hgb.oof_proba.sum(axis=1), 1.0, atol=1e-9)
    assert (hgb.oof_pred >= 0).all()
    for key in ("purity[QSO]", "completeness[STAR]", "completeness_at_fpr[QSO]", "log_loss"):
        assert hgb.summary[key].n == 5 and math.isfinite(hgb.summary[key].std)
    # The dummy never predicts QSO: its purity is undefined in every fold.
    assert results["dummy"].summary["purity[QSO]"].n == 0
    assert [e.fold for e in events] == [0, 1, 2, 3, 4]
    assert all(e.n_folds == 5 for e in events)
    json.dumps(hgb.to_dict(), allow_nan=False)
    # Re-scoring the kept out-of-fold probabilities reproduces the probability metrics.
    folds, summary = evaluate_folds(sdss17.y, hgb.oof_proba, hgb.fold, hgb.labels)
    assert len(folds) == 5
    assert summary["log_loss"].mean == pytest.approx(hgb.summary["log_loss"].mean, abs=1e-12)


def test_precomputed_folds_leave_calibration_rows_out(sdss17: Labelled) -> None:
    X, y = sdss17.X[:3000], sdss17.y[:3000]
    splits = make_splits(y, n_splits=3, seed=1, calibration_fraction=0.25)
    config = estimator_config("random_forest", {"n_estimators": 10}, seed=2)
    result = cross_validate(config, X, y, feature_names=sdss17.names, folds=splits.fold, n_jobs=1)
    assert result.n_splits == 3
    assert np.isnan(result.oof_proba[splits.calibration]).all()
    assert np.isfinite(result.oof_proba[~splits.calibration]).all()
    assert result.estimator is not None and result.estimator["seed"] == 2
    assert result.split_seed is None  # the folds were given, not drawn
    # Same folds and seed: the same numbers.
    again = cross_validate(config, X, y, feature_names=sdss17.names, folds=splits.fold, n_jobs=1)
    np.testing.assert_array_equal(result.oof_proba, again.oof_proba)


def test_tqdm_progress(sdss17: Labelled, capsys: pytest.CaptureFixture[str]) -> None:
    cross_validate(
        "dummy",
        sdss17.X[:500],
        sdss17.y[:500],
        feature_names=sdss17.names,
        n_splits=2,
        progress=True,
    )
    assert "2/2" in capsys.readouterr().err


def test_cross_validate_argument_errors(sdss17: Labelled) -> None:
    with pytest.raises(TrainError, match="feature names"):
        cross_validate("dummy", sdss17.X, sdss17.y, feature_names=["u"])
    with pytest.raises(TrainError, match="folds has shape"):
        cross_validate("dummy", sdss17.X, sdss17.y, feature_names=sdss17.names, folds=[0, 1])
