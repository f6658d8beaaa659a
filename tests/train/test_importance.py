"""Permutation importance and feature-group ablation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skyclass.train.errors import TrainError
from skyclass.train.estimators import make_estimator
from skyclass.train.importance import group_ablation, permutation_importance
from tests.train.data import Labelled


def test_permutation_importance_finds_the_signal() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    X = rng.normal(size=(n, 3)).astype(np.float32)
    # Class depends strongly on f0, weakly on f1, not at all on f2.
    y = np.where(2.0 * X[:, 0] + 0.5 * X[:, 1] + rng.logistic(size=n) > 0, "a", "b")
    names = ["signal", "weak", "noise"]
    model, _ = make_estimator("logistic", feature_names=names)
    model.fit(X[:2000], y[:2000])
    result = permutation_importance(model, X[2000:], y[2000:], names, n_repeats=4, seed=1)
    by_name = {r.feature: r for r in result}
    assert [r.feature for r in result] == names
    assert by_name["signal"].mean > by_name["weak"].mean > 0.01
    assert abs(by_name["noise"].mean) < 0.005
    assert len(by_name["signal"].values) == 4 and by_name["signal"].std > 0
    again = permutation_importance(model, X[2000:], y[2000:], names, n_repeats=4, seed=1)
    assert [r.values for r in again] == [r.values for r in result]
    acc = permutation_importance(model, X[2000:], y[2000:], names, metric="accuracy", seed=1)
    assert acc[0].mean > 0.1  # accuracy drops when the signal is shuffled
    json.dumps([r.to_dict() for r in result])
    with pytest.raises(TrainError, match="unknown metric"):
        permutation_importance(model, X, y, names, metric="f1")


def test_group_ablation_on_sdss17(sdss17: Labelled) -> None:
    X, y = sdss17.X[:4000], sdss17.y[:4000]
    groups = {"u band": ["u", "u_g"], "z band": ["z", "i_z"]}
    result = group_ablation(
        "logistic", X, y, sdss17.names, groups, n_splits=3, metrics=("accuracy", "log_loss")
    )
    by_group = {r.group: r for r in result}
    u_band = by_group["u band"]
    # Without u there is no UV excess: QSOs and stars are harder to tell apart.
    assert u_band.delta["accuracy"].mean < -0.01
    assert u_band.delta["log_loss"].mean > 0
    assert u_band.delta["accuracy"].n == 3 and np.isfinite(u_band.delta["accuracy"].std)
    assert u_band.full["accuracy"].mean == by_group["z band"].full["accuracy"].mean
    assert u_band.delta["accuracy"].mean < by_group["z band"].delta["accuracy"].mean
    json.dumps([r.to_dict() for r in result], allow_nan=False)
    with pytest.raises(TrainError, match="not among"):
        group_ablation("logistic", X, y, sdss17.names, {"x": ["y_band"]})
    with pytest.raises(TrainError, match="every feature"):
        group_ablation("logistic", X, y, sdss17.names, {"all": list(sdss17.names)})
