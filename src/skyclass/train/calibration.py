"""Fitting probability calibration maps (applied by :mod:`skyclass.probability.calibration`).

Two maps, both fitted on data the model never trained on (a held-out
calibration split, or out-of-fold probabilities by cross-fitting):

- *temperature scaling*: a single ``T > 0`` minimising the log loss of
  ``softmax(log(p) / T)`` on the calibration data (``T > 1`` softens an
  overconfident model);
- *per-class isotonic regression*: for each class k, scikit-learn's
  ``IsotonicRegression`` (non-decreasing, values in [0, 1]) of the indicator
  ``[y = k]`` on ``p_k`` (one-vs-rest), stored as its knots; the K calibrated
  values are then renormalised to sum to 1.

The exact formulas that apply a fitted map (and that the C scorer mirrors) are
documented with :func:`skyclass.probability.calibration.apply_calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression

from skyclass.probability.calibration import (
    CALIBRATION_EPS,
    FORMAT_VERSION,
    METHODS,
    CalibrationParams,
    apply_calibration,
    renormalise,
    temperature_softmax,
)
from skyclass.train.errors import TrainError
from skyclass.train.metrics import check_proba, label_indices

__all__ = [
    "CALIBRATION_EPS",
    "FORMAT_VERSION",
    "METHODS",
    "TEMPERATURE_BOUNDS",
    "CalibrationParams",
    "apply_calibration",
    "crossfit_calibration",
    "fit_calibration",
    "fit_isotonic",
    "fit_temperature",
]

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""Search range of the fitted temperature; an optimum at a bound is reported as is."""


def _mean_log_loss(p: npt.NDArray[np.float64], yi: npt.NDArray[np.intp]) -> float:
    return float(-np.mean(np.log(p[np.arange(yi.size), yi])))


def _prepare(
    proba: Any, y: Any, classes: Sequence[Any] | npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    yi = label_indices(y, classes)
    if yi.size == 0:
        raise TrainError("no calibration rows")
    # Calibration inputs are a model's probabilities: validate them like any metric input.
    return check_proba(proba, yi.size, len(classes)), yi


def fit_temperature(
    proba: Any,
    y: Any,
    classes: Sequence[Any] | npt.NDArray[Any],
    *,
    eps: float = CALIBRATION_EPS,
) -> CalibrationParams:
    """Fit the temperature T minimising the log loss of ``softmax(log(p)/T)`` on held-out rows.

    The log loss is convex in ``1/T``, so a bounded scalar search over ``1/T``
    (T in :data:`TEMPERATURE_BOUNDS`) finds the unique optimum; the
    diagnostics record the log loss before (T = 1) and after.
    """
    p, yi = _prepare(proba, y, classes)
    k = len(classes)

    def loss(beta: float) -> float:
        return _mean_log_loss(temperature_softmax(p, 1.0 / beta, eps), yi)

    low, high = TEMPERATURE_BOUNDS
    result = minimize_scalar(
        loss, bounds=(1.0 / high, 1.0 / low), method="bounded", options={"xatol": 1e-10}
    )
    temperature = 1.0 / float(result.x)
    return CalibrationParams(
        "temperature",
        k,
        eps=eps,
        temperature=temperature,
        diagnostics={
            "n_fit": float(yi.size),
            "log_loss_before": loss(1.0),
            "log_loss_after": float(result.fun),
        },
    )


def fit_isotonic(
    proba: Any,
    y: Any,
    classes: Sequence[Any] | npt.NDArray[Any],
    *,
    eps: float = CALIBRATION_EPS,
) -> CalibrationParams:
    """Fit one isotonic map per class (one-vs-rest) on held-out rows and keep its knots."""
    p, yi = _prepare(proba, y, classes)
    k = len(classes)
    xs, ys = [], []
    for j in range(k):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(p[:, j], (yi == j).astype(np.float64))
        xs.append(tuple(float(v) for v in iso.X_thresholds_))
        ys.append(tuple(float(v) for v in iso.y_thresholds_))
    params = CalibrationParams("isotonic", k, eps=eps, knots_x=tuple(xs), knots_y=tuple(ys))
    after = _mean_log_loss(apply_calibration(params, p), yi)
    before = _mean_log_loss(renormalise(p, eps), yi)
    return CalibrationParams(
        "isotonic",
        k,
        eps=eps,
        knots_x=params.knots_x,
        knots_y=params.knots_y,
        diagnostics={"n_fit": float(yi.size), "log_loss_before": before, "log_loss_after": after},
    )


def fit_calibration(
    method: str,
    proba: Any,
    y: Any,
    classes: Sequence[Any] | npt.NDArray[Any],
    *,
    eps: float = CALIBRATION_EPS,
) -> CalibrationParams:
    """Fit ``method`` (identity, temperature or isotonic) on held-out probabilities and labels."""
    if method == "temperature":
        return fit_temperature(proba, y, classes, eps=eps)
    if method == "isotonic":
        return fit_isotonic(proba, y, classes, eps=eps)
    if method == "identity":
        _prepare(proba, y, classes)
        return CalibrationParams("identity", len(classes), eps=eps)
    raise TrainError(f"unknown calibration method {method!r}; use one of {METHODS}")


def crossfit_calibration(
    method: str,
    oof_proba: Any,
    y: Any,
    fold: Any,
    classes: Sequence[Any] | npt.NDArray[Any],
    *,
    eps: float = CALIBRATION_EPS,
) -> npt.NDArray[np.float64]:
    """Calibrated out-of-fold probabilities where fold k's map is fitted on the other folds only.

    The probabilities of fold k come from a model that never saw fold k, and the
    map applied to them is fitted on the other folds' rows, so metrics of the
    result (e.g. with :func:`skyclass.train.crossval.evaluate_folds`) are honest
    K-fold estimates of the calibrated model. Rows with fold ``-1`` stay NaN.
    """
    p = np.asarray(oof_proba, dtype=np.float64)
    labels = np.asarray(y)
    f = np.asarray(fold)
    out = np.full_like(p, np.nan)
    for k in np.unique(f[f >= 0]):
        fit_rows = (f >= 0) & (f != k)
        params = fit_calibration(method, p[fit_rows], labels[fit_rows], classes, eps=eps)
        rows = f == k
        out[rows] = apply_calibration(params, p[rows])
    return out
