"""Temperature scaling and per-class isotonic calibration: fitting, exact formulas, honesty."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from skyclass.errors import ModelOutputError
from skyclass.train.calibration import (
    CalibrationParams,
    apply_calibration,
    crossfit_calibration,
    fit_calibration,
    fit_isotonic,
    fit_temperature,
)
from skyclass.train.crossval import cross_validate, evaluate_folds
from skyclass.train.estimators import make_estimator
from skyclass.train.metrics import classification_metrics
from tests.train.data import Labelled

# Deliberately overfitted boosting (large steps, tiny leaves): confident and often wrong.
OVERCONFIDENT = {"max_iter": 40, "learning_rate": 0.3, "min_samples_leaf": 3}


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def synthetic(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), and a model reporting softmax(z * temperature)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, 4))
    truth = softmax(z)
    y = (rng.random((n, 1)) > np.cumsum(truth, axis=1)).sum(axis=1)
    return y, softmax(z * temperature)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_temperature_is_recovered(true_t: float) -> None:
    y, model_p = synthetic(20_000, true_t, seed=int(true_t * 10))
    params = fit_temperature(model_p, y, [0, 1, 2, 3])
    assert params.temperature == pytest.approx(true_t, rel=0.05)
    assert params.diagnostics["log_loss_after"] <= params.diagnostics["log_loss_before"]
    # Calibrating recovers the true probabilities.
    truth = softmax(np.log(model_p) / true_t)
    assert np.abs(apply_calibration(params, model_p) - truth).max() < 0.05


def test_temperature_formula_exactly() -> None:
    p = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    params = CalibrationParams("temperature", 4, temperature=2.0)
    q = np.clip(p, 1e-12, 1.0)
    s = np.log(q) / 2.0
    expected = np.exp(s - s.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_array_equal(apply_calibration(params, p), expected)
    # T = 1 only clips and renormalises; nothing is exactly 0 afterwards.
    same = apply_calibration(CalibrationParams("temperature", 4, temperature=1.0), p)
    np.testing.assert_allclose(same, q / q.sum(axis=1, keepdims=True), rtol=1e-12)
    assert same.min() > 0


def test_isotonic_knots_reproduce_sklearn_and_clamp_out_of_range() -> None:
    y, model_p = synthetic(5000, 2.0, seed=3)
    params = fit_isotonic(model_p, y, [0, 1, 2, 3])
    for k in range(4):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(model_p[:, k], (y == k).astype(float))
        grid = np.linspace(-0.5, 1.5, 2001)
        ours = np.interp(grid, params.knots_x[k], params.knots_y[k])
        np.testing.assert_allclose(ours, iso.predict(grid), atol=1e-12)
        assert ours[0] == params.knots_y[k][0] and ours[-1] == params.knots_y[k][-1]
    out = apply_calibration(params, model_p[:100])
    c = np.column_stack(
        [np.interp(model_p[:100, k], params.knots_x[k], params.knots_y[k]) for k in range(4)]
    )
    c = np.clip(c, 1e-12, 1.0)
    np.testing.assert_array_equal(out, c / c.sum(axis=1, keepdims=True))


def test_isotonic_all_zero_row_becomes_uniform() -> None:
    params = CalibrationParams("isotonic", 3, knots_x=((0.5, 1.0),) * 3, knots_y=((0.0, 1.0),) * 3)
    out = apply_calibration(params, np.array([[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]))
    np.testing.assert_allclose(out[1], [1 / 3] * 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_parameters_are_json_not_pickles() -> None:
    y, model_p = synthetic(3000, 2.0, seed=4)
    for method in ("identity", "temperature", "isotonic"):
        params = fit_calibration(method, model_p, y, [0, 1, 2, 3])
        text = json.dumps(params.to_dict(), allow_nan=False)
        record = json.loads(text)
        assert record["method"] == method and record["format_version"] == 1
        np.testing.assert_array_equal(
            apply_calibration(record, model_p), apply_calibration(params, model_p)
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "platt", "n_classes": 3}, "unknown calibration method"),
        ({"method": "temperature", "n_classes": 3, "temperature": 0.0}, "temperature must"),
        (
            {"method": "isotonic", "n_classes": 2, "knots_x": ((0.0,),), "knots_y": ((0.0,),)},
            "knots for 2",
        ),
        (
            {
                "method": "isotonic",
                "n_classes": 2,
                "knots_x": ((0.5, 0.5),) * 2,
                "knots_y": ((0.0, 1.0),) * 2,
            },
            "strictly increasing",
        ),
        (
            {
                "method": "isotonic",
                "n_classes": 2,
                "knots_x": ((0.1, 0.5),) * 2,
                "knots_y": ((0.9, 0.1),) * 2,
            },
            "non-decreasing",
        ),
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelOutputError, match=message):
        CalibrationParams(**kwargs)  # type: ignore[arg-type]


def test_non_finite_inputs_are_refused() -> None:
    params = CalibrationParams("temperature", 2, temperature=1.5)
    with pytest.raises(ModelOutputError, match="NaN"):
        apply_calibration(params, np.array([[np.nan, 1.0]]))
    with pytest.raises(ModelOutputError, match="shape"):
        apply_calibration(params, np.array([[0.2, 0.3, 0.5]]))


def test_calibration_lowers_ece_of_an_overconfident_model_on_held_out_data(
    sdss17: Labelled,
) -> None:
    train, cal, test = slice(0, 4000), slice(4000, 8000), slice(8000, None)
    model, _ = make_estimator(
        "hist_gradient_boosting", OVERCONFIDENT, seed=0, feature_names=sdss17.names
    )
    model.fit(sdss17.X[train], sdss17.y[train])
    p_cal = model.predict_proba(sdss17.X[cal])
    p_test = model.predict_proba(sdss17.X[test])
    before = classification_metrics(sdss17.y[test], p_test, model.classes_)
    assert before.ece > 0.05  # it really is overconfident
    for method in ("temperature", "isotonic"):
        params = fit_calibration(method, p_cal, sdss17.y[cal], model.classes_)
        after = classification_metrics(
            sdss17.y[test], apply_calibration(params, p_test), model.classes_
        )
        assert after.ece < before.ece / 2, method
        assert after.log_loss < before.log_loss, method
        if method == "temperature":
            assert params.temperature > 1.2  # softened
            assert after.accuracy == before.accuracy  # a monotone map keeps the argmax


def test_crossfitted_calibration_gives_honest_calibrated_cv_metrics(sdss17: Labelled) -> None:
    X, y = sdss17.X[:6000], sdss17.y[:6000]
    cv = cross_validate(
        "hist_gradient_boosting",
        X,
        y,
        feature_names=sdss17.names,
        params=OVERCONFIDENT,
        n_splits=3,
        n_jobs=1,
    )
    calibrated = crossfit_calibration("temperature", cv.oof_proba, y, cv.fold, cv.labels)
    _, summary = evaluate_folds(y, calibrated, cv.fold, cv.labels)
    assert summary["ece"].mean < cv.summary["ece"].mean / 2
    assert summary["ece"].n == 3 and summary["ece"].std > 0
