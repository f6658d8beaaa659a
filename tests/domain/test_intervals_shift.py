"""Uncertainty per OOD quintile on real data with a known shift (issue 11, items 4 and 6).

BOSS DR10 photo-z: a model trained on the faint side (r > 20), its OOD scorer
fitted on the fit rows with the calibration rows as reference (as training
does), Mondrian conformal intervals calibrated per OOD bin on the calibration
rows. Held out from the same side, the 68% and 95% coverage is within 3 points
of nominal in every OOD quintile, while one unconditional conformal quantile
over-covers typical objects and under-covers unusual ones. The bright side
(r <= 20) is beyond the training support: every object is flagged and gets no
interval. (Under a soft selection with overlap the per-quintile coverage on
the application part is not guaranteed and is not asserted: docs/results.md
shows it.)

SDSS17 classes: per-OOD-bin temperatures on top of the global one; the top-label
ECE per quintile is bounded by what a perfectly calibrated model would show at
that sample size (a parametric bootstrap) plus 0.02.

OOD quintiles are the training-percentile bins [0, 20), ..., [80, 99): the
percentile is a percentile of held-out training scores, so its quintiles are
the OOD score's own; 99 and above is out of domain. A quintile's coverage has a
sampling error of about 1.2 points at 68% and 0.6 at 95% (1,500-1,800 objects)
and as much again from the calibration quantile, so the +-3 bound is about two
standard errors of one split; the held-out test averages three seeded splits
(the conformal guarantee is an average over calibration draws).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from skyclass.domain.ood import OodScorer, fit_ood_scorer
from skyclass.probability.calibration import CALIBRATION_EPS, temperature_softmax
from skyclass.probability.conformal import (
    FLAG_OK,
    FLAG_OUT_OF_DOMAIN,
    IntervalCalibration,
    Intervals,
    fit_interval_calibration,
    fit_probability_recalibration,
    fit_temperature,
    photoz_intervals,
    recalibrate_probabilities,
    top_label_ece,
)
from skyclass.probability.redshift import RedshiftGrid

QUINTILES = ((0.0, 20.0), (20.0, 40.0), (40.0, 60.0), (60.0, 80.0), (80.0, 99.0))
LEVELS = (0.68, 0.95)
TOLERANCE = 0.03
SPLITS = (0, 1, 2)
GRID = RedshiftGrid.uniform(0.0, 1.0, 20)
NAMES = ("u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Single-threaded OpenMP: the shared machine has two cores."""
    with threadpool_limits(limits=1):
        yield


def _features(mags: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return np.column_stack([mags, mags[:, :-1] - mags[:, 1:]]).astype(np.float32)


def _model() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, random_state=0)


@dataclass
class PhotoZ:
    """A photo-z model on a training side, its OOD scorer and both interval calibrations."""

    X: npt.NDArray[np.float32]
    z: npt.NDArray[np.float64]
    test: npt.NDArray[np.intp]
    application: npt.NDArray[np.intp]
    model: HistGradientBoostingClassifier
    scorer: OodScorer
    mondrian: IntervalCalibration
    unconditional: IntervalCalibration

    def pdf(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        p = np.zeros((rows.size, GRID.n_bins))
        p[:, self.model.classes_] = self.model.predict_proba(self.X[rows])
        return p

    def intervals(
        self, rows: npt.NDArray[np.intp], calibration: IntervalCalibration, flags: bool = True
    ) -> tuple[Intervals, npt.NDArray[np.float64]]:
        pct = self.scorer.percentile(self.X[rows])
        oor = self.scorer.out_of_range(self.X[rows]).any(axis=1) if flags else None
        # Without flags: every object gets the unconditional interval, as if no OOD score existed.
        shown = pct if flags else np.minimum(pct, 98.999)
        return photoz_intervals(self.pdf(rows), GRID, shown, calibration, oor), pct


@pytest.fixture(scope="module")
def boss(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "photoz_boss_dr10_annz" / "boss_dr10_photoz_35762.csv")


def _photoz(boss: pd.DataFrame, train_side: npt.NDArray[np.bool_], seed: int) -> PhotoZ:
    """Fit 40% / calibrate 30% / hold out 30% of the training side; the rest is the application."""
    X = _features(boss[[f"mag_{b}" for b in "ugriz"]].to_numpy(dtype=np.float64))
    z = boss["z_spec"].to_numpy(dtype=np.float64)
    labels = np.clip(np.searchsorted(GRID.edge_array, z, side="right") - 1, 0, GRID.n_bins - 1)
    side = np.random.default_rng(seed).permutation(np.flatnonzero(train_side))
    n = side.size
    fit, cal, test = side[: 4 * n // 10], side[4 * n // 10 : 7 * n // 10], side[7 * n // 10 :]
    model = _model().fit(X[fit], labels[fit])
    scorer = fit_ood_scorer(X[fit], NAMES, reference=X[cal], seed=seed)
    made = PhotoZ(
        X,
        z,
        test,
        np.flatnonzero(~train_side),
        model,
        scorer,
        None,
        None,  # type: ignore[arg-type]
    )
    pdf_cal, pct_cal = made.pdf(cal), scorer.percentile(X[cal])
    made.mondrian = fit_interval_calibration(pdf_cal, GRID, z[cal], pct_cal)
    made.unconditional = fit_interval_calibration(pdf_cal, GRID, z[cal], pct_cal, edges=(0.0, 99.0))
    return made


def _coverage(
    intervals: Intervals, pct: npt.NDArray[np.float64], z: npt.NDArray[np.float64], level: float
) -> list[float]:
    """Coverage per OOD quintile among the objects that got an interval."""
    covered = intervals.covered(z, level)
    ok = intervals.flag == FLAG_OK
    return [float(covered[ok & (pct >= lo) & (pct < hi)].mean()) for lo, hi in QUINTILES]


@pytest.fixture(scope="module")
def faint(boss: pd.DataFrame) -> list[PhotoZ]:
    """Trained on r > 20, applied to r <= 20: three random fit/calibration/test splits."""
    return [_photoz(boss, boss["mag_r"].to_numpy() > 20.0, seed=s) for s in SPLITS]


def _mean_coverage(runs: list[PhotoZ], which: str, level: float) -> list[float]:
    """Coverage per quintile on the held-out rows, averaged over the splits."""
    per_split = []
    for run in runs:
        intervals, pct = run.intervals(run.test, getattr(run, which))
        per_split.append(_coverage(intervals, pct, run.z[run.test], level))
    return [float(v) for v in np.mean(per_split, axis=0)]


def test_mondrian_intervals_hold_in_every_ood_quintile_where_one_quantile_does_not(
    faint: list[PhotoZ],
) -> None:
    for run in faint:
        mondrian, _ = run.intervals(run.test, run.mondrian)
        assert np.mean(mondrian.flag == FLAG_OK) > 0.98
        # No interval exactly where the OOD scorer says "not in domain".
        outside = mondrian.flag == FLAG_OUT_OF_DOMAIN
        assert np.array_equal(outside, ~run.scorer.in_domain(run.X[run.test]))
    for level in LEVELS:
        held = _mean_coverage(faint, "mondrian", level)
        assert all(abs(c - level) <= TOLERANCE for c in held), (level, held)
        one = _mean_coverage(faint, "unconditional", level)
        # One quantile for all: the most unusual fifth is under-covered by far more than 3 points.
        assert one[-1] < level - 2 * TOLERANCE, (level, one)
    low = _mean_coverage(faint, "unconditional", 0.68)
    assert low[0] > 0.68 + 2 * TOLERANCE, low  # and typical objects over-covered


def test_objects_beyond_the_training_support_get_no_interval_and_a_flag(
    faint: list[PhotoZ],
) -> None:
    faint = faint[0]
    app = faint.application
    mondrian, _ = faint.intervals(app, faint.mondrian)
    assert app.size > 6000
    assert (mondrian.flag == FLAG_OUT_OF_DOMAIN).all()
    assert all(np.isnan(mondrian.lo[a]).all() and np.isnan(mondrian.hi[a]).all() for a in LEVELS)
    # What an interval given anyway would have been worth there: far from nominal.
    invented, _ = faint.intervals(app, faint.unconditional, flags=False)
    worth = invented.covered(faint.z[app], 0.68).mean()
    assert abs(worth - 0.68) > 2 * TOLERANCE, worth


# ------------------------------------------------------------------------------ classes


def _perfect_ece_q95(proba: npt.NDArray[np.float64], seed: int, n_sim: int = 60) -> float:
    """95th percentile of the ECE of labels drawn from ``proba`` itself (perfect calibration)."""
    rng = np.random.default_rng(seed)
    cum = np.cumsum(proba, axis=1)
    values = []
    for _ in range(n_sim):
        draw = (rng.random((proba.shape[0], 1)) > cum).sum(axis=1)
        values.append(top_label_ece(proba, np.minimum(draw, proba.shape[1] - 1)))
    return float(np.quantile(values, 0.95))


def test_class_probabilities_stay_calibrated_in_every_ood_quintile(shared_data: Path) -> None:
    path = shared_data / "sdss17_stellar_classification" / "sdss17_star_classification_99999.csv.gz"
    frame = pd.read_csv(path)
    bands = list("ugriz")
    frame = frame[((frame[bands] > 0) & (frame[bands] < 40)).all(axis=1)]
    X = _features(frame[bands].to_numpy(dtype=np.float64))
    classes = sorted(frame["class"].unique())
    y = np.searchsorted(classes, frame["class"].to_numpy())
    u = frame["u"].to_numpy()
    rng = np.random.default_rng(1)
    side = rng.permutation(np.flatnonzero(u > 20.5))[:30_000]
    n = side.size
    fit, cal, test = side[: 4 * n // 10], side[4 * n // 10 : 7 * n // 10], side[7 * n // 10 :]
    model = _model().fit(X[fit], y[fit])
    scorer = fit_ood_scorer(X[fit], NAMES, reference=X[cal], seed=1)
    proba_cal = model.predict_proba(X[cal])
    temperature = fit_temperature(proba_cal, y[cal])
    calibrated_cal = temperature_softmax(proba_cal, temperature, CALIBRATION_EPS)
    recal = fit_probability_recalibration(calibrated_cal, y[cal], scorer.percentile(X[cal]))
    assert all(t is not None and 0.7 < t < 1.5 for t in recal.temperature), recal.temperature

    pct = scorer.percentile(X[test])
    oor = scorer.out_of_range(X[test]).any(axis=1)
    calibrated = temperature_softmax(model.predict_proba(X[test]), temperature, CALIBRATION_EPS)
    out, flag = recalibrate_probabilities(calibrated, pct, recal, oor)
    assert np.mean(flag == FLAG_OK) > 0.98
    assert np.isnan(out[flag != FLAG_OK]).all()
    for k, (lo, hi) in enumerate(QUINTILES):
        rows = (flag == FLAG_OK) & (pct >= lo) & (pct < hi)
        ece = top_label_ece(out[rows], y[test][rows])
        bound = _perfect_ece_q95(out[rows], seed=k) + 0.02
        assert ece <= bound, (lo, hi, ece, bound)
    # Beyond the support (u <= 20.5 is below every training u): nothing recalibrated.
    bright = np.flatnonzero(u <= 20.5)[:5000]
    _, bright_flag = recalibrate_probabilities(
        model.predict_proba(X[bright]),
        scorer.percentile(X[bright]),
        recal,
        scorer.out_of_range(X[bright]).any(axis=1),
    )
    assert (bright_flag == FLAG_OUT_OF_DOMAIN).all()
