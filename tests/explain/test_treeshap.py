"""Exact TreeSHAP on Treelite checkpoints: base + contributions = the compiled model's margin."""

from __future__ import annotations

import numpy as np
import pytest
import treelite.gtil
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)

from skyclass.compile.checkpoint import load_checkpoint, treelite_checkpoint
from skyclass.explain.errors import ExplainError
from skyclass.explain.treeshap import ensemble_from_treelite, explain


def _data(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1500, 5)).astype(np.float32)
    score = x[:, 0] + 0.5 * x[:, 1] * x[:, 2]
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    x[rng.random(x.shape) < 0.05] = np.nan  # non-detections take the default branch
    return x, y


FAMILIES = {
    "hgb": lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0),
    "random_forest": lambda: RandomForestClassifier(
        n_estimators=25, max_depth=8, random_state=0, n_jobs=1
    ),
    "extra_trees": lambda: ExtraTreesClassifier(
        n_estimators=25, max_depth=8, random_state=0, n_jobs=1
    ),
}


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_base_plus_contributions_is_the_compiled_margin(family: str, n_classes: int) -> None:
    x, y = _data(n_classes)
    estimator = FAMILIES[family]()
    if family != "hgb":
        x = np.nan_to_num(x, nan=0.0)  # forests are fitted without missing values
    estimator.fit(x, y)
    model = load_checkpoint(treelite_checkpoint(estimator, n_features=x.shape[1]))
    rows = x[:200]
    got = explain(ensemble_from_treelite(model), rows)
    expected = np.asarray(
        treelite.gtil.predict(model, rows.astype(np.float64), pred_margin=True), dtype=np.float64
    ).reshape(len(rows), -1)
    assert got.contributions.shape == (len(rows), x.shape[1], expected.shape[1])
    assert np.abs(got.margin - expected).max() < 1e-4
    total = got.base[None, :] + got.contributions.sum(axis=1)
    assert np.abs(total - expected).max() < 1e-4
    # The ranking of the explained outputs is the model's own.
    if expected.shape[1] > 1:
        assert (got.margin.argmax(axis=1) == estimator.predict(rows)).mean() > 0.99
    # A feature the model never splits on gets nothing.
    assert np.abs(got.contributions).sum() > 0


def test_the_feature_driving_the_class_gets_the_largest_contribution() -> None:
    x, y = _data(3)
    estimator = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    model = load_checkpoint(treelite_checkpoint(estimator, n_features=5))
    got = explain(ensemble_from_treelite(model), x[:300])
    mean_abs = np.abs(got.contributions).mean(axis=(0, 2))
    assert int(mean_abs.argmax()) == 0
    assert mean_abs[3] < 0.1 * mean_abs[0] and mean_abs[4] < 0.1 * mean_abs[0]


def test_a_wrong_number_of_features_is_refused() -> None:
    x, y = _data(3)
    estimator = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, y)
    ensemble = ensemble_from_treelite(load_checkpoint(treelite_checkpoint(estimator, n_features=5)))
    with pytest.raises(ExplainError, match="takes 5 features"):
        explain(ensemble, x[:3, :4])
