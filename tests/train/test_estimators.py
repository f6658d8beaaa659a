"""The estimator registry: declared parameters, seeds, NaN inputs, the colour-cut baseline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from skyclass.train.errors import TrainError
from skyclass.train.estimators import (
    BASELINES,
    ColourCutClassifier,
    EstimatorConfig,
    available_estimators,
    estimator_config,
    make_estimator,
)
from tests.train.data import Labelled

SMALL = {
    "hist_gradient_boosting": {"max_iter": 20},
    "random_forest": {"n_estimators": 20},
    "extra_trees": {"n_estimators": 20},
}


def test_registry_has_baselines_and_tree_ensembles() -> None:
    names = available_estimators()
    assert names[:3] == list(BASELINES) == ["dummy", "colour_cut", "logistic"]
    assert {"hist_gradient_boosting", "random_forest", "extra_trees"} <= set(names)


def test_config_resolves_defaults_and_records_seed() -> None:
    config = estimator_config("random_forest", {"n_estimators": 50, "max_features": 0.5}, seed=7)
    record = config.to_dict()
    assert record["params"]["n_estimators"] == 50
    assert record["params"]["max_depth"] is None
    assert record["seed"] == 7 and record["sklearn_version"]
    json.dumps(record, allow_nan=False)
    assert EstimatorConfig.from_dict(json.loads(json.dumps(record))) == config
    model = config.build(["a", "b"])
    assert model.get_params()["random_state"] == 7
    # A float parameter given as an int is stored as a float.
    assert estimator_config("logistic", {"C": 2}).params["C"] == 2.0


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("xgboost", {}, "unknown estimator 'xgboost'; available: dummy"),
        ("random_forest", {"n_trees": 5}, r"unknown parameter\(s\) \['n_trees'\]"),
        ("random_forest", {"n_estimators": 0}, "must be >= 1"),
        ("random_forest", {"n_estimators": 2.5}, "must be int"),
        ("random_forest", {"bootstrap": 1}, "must be bool"),
        ("hist_gradient_boosting", {"max_iter": True}, "must be int"),
        ("dummy", {"strategy": "uniform"}, "must be one of"),
        ("logistic", {"C": float("nan")}, "must be float"),
    ],
)
def test_bad_configs_are_refused(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(TrainError, match=message):
        estimator_config(name, params)


def test_bad_seed_is_refused() -> None:
    with pytest.raises(TrainError, match="seed"):
        estimator_config("dummy", seed=-1)


@pytest.mark.parametrize("name", ["dummy", "colour_cut", "logistic", *SMALL])
def test_every_estimator_accepts_nan_float32_features(sdss17: Labelled, name: str) -> None:
    X = sdss17.X[:3000].copy()
    y = sdss17.y[:3000]
    X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    assert X.dtype == np.float32
    model, _ = make_estimator(name, SMALL.get(name), seed=3, feature_names=sdss17.names)
    model.fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (3000, 3) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert list(model.classes_) == ["GALAXY", "QSO", "STAR"]


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_same_model(sdss17: Labelled, name: str) -> None:
    X, y = sdss17.X[:2000], sdss17.y[:2000]
    probas = []
    for _ in range(2):
        model, _ = make_estimator(name, SMALL[name], seed=11, feature_names=sdss17.names)
        probas.append(model.fit(X, y).predict_proba(X))
    np.testing.assert_array_equal(probas[0], probas[1])


def test_colour_cut_follows_the_estimator_contract(sdss17: Labelled) -> None:
    model = ColourCutClassifier(feature_names=sdss17.names, qso_max_u_g=0.5)
    # __init__ only stores; clone round-trips the parameters.
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(NotFittedError):
        model.predict(sdss17.X[:5])
    assert model.fit(sdss17.X, sdss17.y) is model
    assert list(model.feature_names_in_) == list(sdss17.names)
    assert model.n_features_in_ == 9
    assert model.cell_proba_.shape == (4, 3)
    np.testing.assert_allclose(model.cell_proba_.sum(axis=1), 1.0)


def test_colour_cut_rules_by_hand() -> None:
    names = ["g", "u", "r", "i", "z"]  # band columns found by name, in any order
    rows = np.array(
        [
            [19.1, 19.3, 18.9, 18.8, 18.7],  # u-g = 0.2, g-r = 0.2 -> UV excess -> QSO
            [18.0, 19.3, 17.52, 17.35, 17.3],  # u-g 1.3, g-r 0.48, r-i 0.17 on the locus -> STAR
            [21.0, 22.6, 19.5, 18.8, 18.4],  # g-r 1.5 at r-i 0.7: far off the locus -> GALAXY
            [19.0, np.nan, 18.5, 18.3, 18.2],  # missing u -> undetermined
        ]
    )
    y = np.array(["QSO", "STAR", "GALAXY", "GALAXY"])
    model = ColourCutClassifier(feature_names=names).fit(rows, y)
    assert list(model.predict(rows)) == ["QSO", "STAR", "GALAXY", "GALAXY"]
    # DataFrame input names the columns itself.
    frame = pd.DataFrame(rows, columns=names)
    assert list(ColourCutClassifier().fit(frame, y).predict(frame)) == list(model.predict(rows))


def test_colour_cut_errors_name_the_problem() -> None:
    X = np.zeros((3, 2))
    y = np.array(["QSO", "STAR", "GALAXY"])
    with pytest.raises(TrainError, match="needs the feature names"):
        ColourCutClassifier().fit(X, y)
    with pytest.raises(TrainError, match=r"u='u'.*not among the features"):
        ColourCutClassifier(feature_names=["g", "r"]).fit(X, y)
    with pytest.raises(TrainError, match="do not occur in y"):
        ColourCutClassifier(feature_names=list("ugriz")).fit(np.zeros((2, 5)), ["A", "B"])


def test_colour_cut_beats_the_prior_but_not_logistic(sdss17: Labelled) -> None:
    train, test = slice(0, 8000), slice(8000, None)
    scores = {}
    for name in BASELINES:
        model, _ = make_estimator(name, feature_names=sdss17.names)
        model.fit(sdss17.X[train], sdss17.y[train])
        scores[name] = float(np.mean(model.predict(sdss17.X[test]) == sdss17.y[test]))
    assert 0.55 < scores["dummy"] < 0.63
    assert scores["dummy"] + 0.05 < scores["colour_cut"] < scores["logistic"]
