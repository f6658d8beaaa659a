"""The stored per-OOD-bin uncertainty of a model version, for the client side.

``skyclass.photoz_intervals`` and ``skyclass.recalibrated_probabilities`` apply
these rows in the database; :func:`load_interval_calibration` and
:func:`load_probability_recalibration` read them back so that the client-side
scorer and the report apply the same maps with
:func:`skyclass.probability.conformal.photoz_intervals` and
:func:`~skyclass.probability.conformal.recalibrate_probabilities`. None when the
version has no rows (trained before migration 0014, or without a calibration split).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from skyclass.errors import ModelOutputError
from skyclass.probability.conformal import (
    IntervalCalibration,
    Intervals,
    ProbabilityRecalibration,
    photoz_intervals,
    recalibrate_probabilities,
)
from skyclass.probability.redshift import RedshiftGrid


def load_interval_calibration(
    conn: psycopg.Connection[Any], model_version_id: int
) -> IntervalCalibration | None:
    """The version's conformal quantiles per OOD bin and level."""
    rows = conn.execute(
        "SELECT level, bin, ood_lo, ood_hi, conformal_quantile, n "
        "FROM skyclass.interval_calibration WHERE model_version_id = %s ORDER BY level, bin",
        (model_version_id,),
    ).fetchall()
    if not rows:
        return None
    levels = tuple(sorted({float(r[0]) for r in rows}))
    first = [r for r in rows if float(r[0]) == levels[0]]
    edges = (*(float(r[2]) for r in first), float(first[-1][3]))
    conformal = {
        a: tuple(None if r[4] is None else float(r[4]) for r in rows if float(r[0]) == a)
        for a in levels
    }
    return IntervalCalibration(
        edges=edges, levels=levels, n=tuple(int(r[5]) for r in first), conformal=conformal
    )


def load_probability_recalibration(
    conn: psycopg.Connection[Any], model_version_id: int
) -> ProbabilityRecalibration | None:
    """The version's temperature per OOD bin."""
    rows = conn.execute(
        "SELECT bin, ood_lo, ood_hi, temperature, n FROM skyclass.probability_recalibration "
        "WHERE model_version_id = %s ORDER BY bin",
        (model_version_id,),
    ).fetchall()
    if not rows:
        return None
    return ProbabilityRecalibration(
        edges=(*(float(r[1]) for r in rows), float(rows[-1][2])),
        n=tuple(int(r[4]) for r in rows),
        temperature=tuple(None if r[3] is None else float(r[3]) for r in rows),
    )


def version_intervals(
    conn: psycopg.Connection[Any],
    model_version_id: int,
    pdf: npt.ArrayLike,
    percentile: npt.ArrayLike,
    out_of_range: npt.ArrayLike | None = None,
) -> Intervals:
    """What ``skyclass.photoz_intervals`` gives, for many objects at once, in the client.

    Raises :class:`~skyclass.errors.ModelOutputError` when the version is not a photo-z
    model or has no interval calibration.
    """
    row = conn.execute(
        "SELECT task, bin_edges FROM skyclass.model_version WHERE model_version_id = %s",
        (model_version_id,),
    ).fetchone()
    if row is None or row[0] != "photoz":
        raise ModelOutputError(f"model version {model_version_id} is not a photo-z model")
    calibration = load_interval_calibration(conn, model_version_id)
    if calibration is None:
        raise ModelOutputError(
            f"model version {model_version_id} has no interval calibration "
            "(trained before migration 0014): train a new version"
        )
    grid = RedshiftGrid(tuple(float(e) for e in row[1]))
    return photoz_intervals(pdf, grid, percentile, calibration, out_of_range)


def version_probabilities(
    conn: psycopg.Connection[Any],
    model_version_id: int,
    proba: npt.ArrayLike,
    percentile: npt.ArrayLike,
    out_of_range: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.str_]]:
    """What ``skyclass.recalibrated_probabilities`` gives (NaN rows for NULL), with the flags."""
    recalibration = load_probability_recalibration(conn, model_version_id)
    if recalibration is None:
        raise ModelOutputError(
            f"model version {model_version_id} has no probability recalibration "
            "(trained before migration 0014, or not a classifier): train a new version"
        )
    return recalibrate_probabilities(proba, percentile, recalibration, out_of_range)
