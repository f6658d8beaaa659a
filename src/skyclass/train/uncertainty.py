"""Uncertainty per OOD bin, fitted at training time on the calibration split.

The version's OOD scorer is fitted on the training rows (folds >= 0, without
augmentation copies) with the calibration split (fold -1) as its reference, so
the calibration rows' percentiles are uniform on [0, 100] and the bins of
:data:`skyclass.probability.conformal.OOD_EDGES` hold about the same share of
them (the top ones less: they are finer). The final model's (calibrated)
outputs on the calibration rows then give, per OOD bin, the Mondrian conformal
quantiles of photo-z intervals or the temperature of class probabilities
(:mod:`skyclass.probability.conformal`). The rows are stored with the version
(``skyclass.interval_calibration``, ``skyclass.probability_recalibration``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from skyclass.probability.calibration import CalibrationParams, apply_calibration
from skyclass.probability.conformal import (
    IntervalCalibration,
    ProbabilityRecalibration,
    calibration_dict,
    fit_interval_calibration,
    fit_probability_recalibration,
)
from skyclass.probability.redshift import RedshiftGrid, normalised_pdf


@dataclass(frozen=True)
class Uncertainty:
    """What training stores: intervals (photo-z) or recalibration (classes), and its record."""

    intervals: IntervalCalibration | None
    recalibration: ProbabilityRecalibration | None
    record: dict[str, Any]


def fit_uncertainty(
    X_fit: npt.NDArray[Any],
    X_cal: npt.NDArray[Any],
    y_cal: npt.NDArray[np.intp],
    proba_cal: npt.NDArray[np.float64],
    feature_names: tuple[str, ...],
    *,
    calibration: CalibrationParams | None,
    grid: RedshiftGrid | None,
    z_cal: npt.NDArray[np.float64] | None,
    seed: int,
) -> Uncertainty:
    """Fit the OOD scorer and the per-bin maps; ``proba_cal`` are the final model's raw outputs."""
    from skyclass.domain.ood import FOREST_PARAMS, fit_ood_scorer

    scorer = fit_ood_scorer(X_fit, feature_names, reference=X_cal, seed=seed)
    pct = scorer.percentile(X_cal)
    p = (
        apply_calibration(calibration, proba_cal)
        if calibration is not None
        else normalised_pdf(proba_cal)
    )
    record: dict[str, Any] = {
        "ood_scorer": {
            "kind": "isolation_forest",
            "params": FOREST_PARAMS,
            "fit": "training folds (fold >= 0), no augmentation copies",
            "reference": "calibration split (fold -1)",
            "seed": seed,
        },
        "outputs": "calibrated" if calibration is not None else "raw",
    }
    if grid is not None:
        if z_cal is None:
            raise ValueError("photo-z intervals need the calibration rows' redshifts")
        intervals = fit_interval_calibration(p, grid, z_cal, pct)
        record.update(calibration_dict(intervals))
        return Uncertainty(intervals=intervals, recalibration=None, record=record)
    recal = fit_probability_recalibration(p, y_cal, pct)
    record.update(calibration_dict(recal))
    return Uncertainty(intervals=None, recalibration=recal, record=record)


def insert_uncertainty(
    conn: psycopg.Connection[Any], model_version_id: int, uncertainty: Uncertainty
) -> None:
    """Store the per-bin rows of a new version (in the caller's transaction)."""
    with conn.cursor() as cur:
        if uncertainty.intervals is not None:
            cur.executemany(
                "INSERT INTO skyclass.interval_calibration (model_version_id, bin, ood_lo, "
                "ood_hi, level, conformal_quantile, n) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (model_version_id, b, lo, hi, level, q, n)
                    for b, lo, hi, level, q, n in uncertainty.intervals.to_rows()
                ],
            )
        if uncertainty.recalibration is not None:
            cur.executemany(
                "INSERT INTO skyclass.probability_recalibration (model_version_id, bin, ood_lo, "
                "ood_hi, temperature, n) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (model_version_id, b, lo, hi, t, n)
                    for b, lo, hi, t, n in uncertainty.recalibration.to_rows()
                ],
            )
