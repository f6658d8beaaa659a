"""Calibration maps stored as plain parameters and applied by one pure function.

The maps are fitted in :mod:`skyclass.train.calibration` and applied here, by training,
by the client-side scorer and (mirrored in C) by the extension.

Two maps, both fitted on data the model never trained on (a held-out
calibration split, or out-of-fold probabilities by cross-fitting):

- *temperature scaling*: a single ``T > 0`` minimising the log loss of
  ``softmax(log(p) / T)`` on the calibration data (``T > 1`` softens an
  overconfident model);
- *per-class isotonic regression*: for each class k, scikit-learn's
  ``IsotonicRegression`` (non-decreasing, values in [0, 1]) of the indicator
  ``[y = k]`` on ``p_k`` (one-vs-rest), stored as its knots; the K calibrated
  values are then renormalised to sum to 1.

Parameters are JSON values (floats and knot lists, never pickles).
:func:`apply_calibration` is the reference implementation that the C scorer
mirrors; for each row ``p`` of K probabilities (float64):

``identity``
    ``q_k = min(max(p_k, eps), 1)``; ``out_k = q_k / sum_j q_j``.
``temperature``
    ``q_k = min(max(p_k, eps), 1)``; ``s_k = log(q_k) / T``; ``m = max_k s_k``;
    ``out_k = exp(s_k - m) / sum_j exp(s_j - m)``.
``isotonic``
    ``c_k = interp(p_k; x_k, y_k)``, then ``c_k = min(max(c_k, eps), 1)`` and
    ``out_k = c_k / sum_j c_j``. ``interp`` is ``numpy.interp``: with knots
    ``x_k[0] < ... < x_k[n-1]`` (strictly increasing; n >= 1) and values
    ``y_k`` (non-decreasing, in [0, 1]): ``p <= x[0]`` gives ``y[0]``,
    ``p >= x[n-1]`` gives ``y[n-1]`` (out-of-range inputs are clamped to the end
    values, never extrapolated); otherwise with ``j`` such that ``x[j] <= p <
    x[j+1]``: ``y[j]`` if ``p == x[j]``, else
    ``slope * (p - x[j]) + y[j]`` with ``slope = (y[j+1] - y[j]) / (x[j+1] - x[j])``,
    evaluated in that order in double precision. Tied inputs at fit time are
    merged by scikit-learn (one knot per distinct ``p_k``, its mean label), so
    knots never tie.

``eps`` (default 1e-12, stored in the parameters) keeps every probability
strictly positive, so log loss stays finite and a row whose calibrated values
are all 0 comes out uniform. Inputs must be finite (non-finite values raise);
negative inputs are clipped to ``eps`` like zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.errors import ModelOutputError

CALIBRATION_EPS = 1e-12
FORMAT_VERSION = 1
METHODS = ("identity", "temperature", "isotonic")


@dataclass(frozen=True)
class CalibrationParams:
    """A fitted calibration map: method, number of classes, epsilon and the method's parameters."""

    method: str
    n_classes: int
    eps: float = CALIBRATION_EPS
    temperature: float = 1.0
    knots_x: tuple[tuple[float, ...], ...] = ()
    knots_y: tuple[tuple[float, ...], ...] = ()
    diagnostics: Mapping[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ModelOutputError(
                f"unknown calibration method {self.method!r}; use one of {METHODS}"
            )
        if self.n_classes < 2:
            raise ModelOutputError(f"calibration needs at least 2 classes, not {self.n_classes}")
        if not (math.isfinite(self.eps) and 0.0 < self.eps < 1.0 / self.n_classes):
            raise ModelOutputError(f"calibration eps must be in (0, 1/n_classes), not {self.eps}")
        if self.method == "temperature" and not (
            math.isfinite(self.temperature) and self.temperature > 0
        ):
            raise ModelOutputError(f"temperature must be finite and > 0, not {self.temperature}")
        if self.method == "isotonic":
            if len(self.knots_x) != self.n_classes or len(self.knots_y) != self.n_classes:
                raise ModelOutputError(
                    f"isotonic calibration needs knots for {self.n_classes} classes"
                )
            for k, (x, y) in enumerate(zip(self.knots_x, self.knots_y, strict=True)):
                xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
                if xa.size == 0 or xa.shape != ya.shape:
                    raise ModelOutputError(
                        f"class {k}: knots x and y must be non-empty, same length"
                    )
                if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
                    raise ModelOutputError(f"class {k}: knots must be finite")
                if (np.diff(xa) <= 0).any():
                    raise ModelOutputError(f"class {k}: knot x values must be strictly increasing")
                if (np.diff(ya) < 0).any() or ya.min() < 0 or ya.max() > 1:
                    raise ModelOutputError(
                        f"class {k}: knot y values must be non-decreasing in [0, 1]"
                    )

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form; :meth:`from_dict` reads it back."""
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "n_classes": self.n_classes,
            "eps": self.eps,
        }
        if self.method == "temperature":
            out["temperature"] = self.temperature
        if self.method == "isotonic":
            out["knots"] = [
                {"x": list(x), "y": list(y)}
                for x, y in zip(self.knots_x, self.knots_y, strict=True)
            ]
        out["diagnostics"] = {
            k: (v if math.isfinite(v) else None) for k, v in self.diagnostics.items()
        }
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> CalibrationParams:
        """Read (and validate) parameters written by :meth:`to_dict`."""
        version = record.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ModelOutputError(f"unsupported calibration format_version {version!r}")
        knots = record.get("knots") or []
        return cls(
            method=str(record["method"]),
            n_classes=int(record["n_classes"]),
            eps=float(record.get("eps", CALIBRATION_EPS)),
            temperature=float(record.get("temperature", 1.0)),
            knots_x=tuple(tuple(float(v) for v in kn["x"]) for kn in knots),
            knots_y=tuple(tuple(float(v) for v in kn["y"]) for kn in knots),
            diagnostics={
                k: float(v) if v is not None else math.nan
                for k, v in (record.get("diagnostics") or {}).items()
            },
        )


def as_probabilities(proba: Any, n_classes: int) -> npt.NDArray[np.float64]:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != n_classes:
        raise ModelOutputError(f"probabilities have shape {p.shape}, expected (n, {n_classes})")
    if not np.isfinite(p).all():
        raise ModelOutputError("probabilities to calibrate contain NaN or infinite values")
    return p


def temperature_softmax(
    p: npt.NDArray[np.float64], temperature: float, eps: float
) -> npt.NDArray[np.float64]:
    s = np.log(np.minimum(np.maximum(p, eps), 1.0)) / temperature
    e = np.exp(s - s.max(axis=1, keepdims=True))
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


def renormalise(c: npt.NDArray[np.float64], eps: float) -> npt.NDArray[np.float64]:
    c = np.minimum(np.maximum(c, eps), 1.0)
    out: npt.NDArray[np.float64] = c / c.sum(axis=1, keepdims=True)
    return out


def apply_calibration(
    params: CalibrationParams | Mapping[str, Any], proba: Any
) -> npt.NDArray[np.float64]:
    """Calibrated probabilities for ``proba`` (n x K) with the exact formulas of the module docs."""
    if not isinstance(params, CalibrationParams):
        params = CalibrationParams.from_dict(params)
    p = as_probabilities(proba, params.n_classes)
    if params.method == "temperature":
        return temperature_softmax(p, params.temperature, params.eps)
    if params.method == "isotonic":
        c = np.empty_like(p)
        for k in range(params.n_classes):
            c[:, k] = np.interp(
                p[:, k],
                np.asarray(params.knots_x[k], dtype=np.float64),
                np.asarray(params.knots_y[k], dtype=np.float64),
            )
        return renormalise(c, params.eps)
    return renormalise(p, params.eps)
