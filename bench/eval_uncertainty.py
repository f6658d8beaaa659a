"""Coverage and ECE per OOD quintile under known shifts, on the bundled BOSS and SDSS17 data.

The figures of docs/results.md ("Uncertainty that holds across the domain"). Photo-z:
HistGradientBoosting (60 iterations, 15 leaves) over 20 redshift bins on [0, 1],
features ugriz and four colours; the training side is split 40% fit / 30%
calibration / 30% held out; the OOD scorer is fitted on the fit rows with the
calibration rows as reference, as training does. Compared: the PDF's own central
intervals ("raw PDF"), one conformal quantile for all objects ("unconditional")
and Mondrian conformal by OOD bin ("Mondrian", what skyclass stores). Classes:
SDSS17 on u > 20.5, global temperature against per-OOD-bin temperatures.

Usage: ``.venv/bin/python bench/eval_uncertainty.py [--plot coverage.png]``
(about 1 minute, one thread).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from skyclass.domain.ood import OodScorer, fit_ood_scorer
from skyclass.probability.calibration import CALIBRATION_EPS, temperature_softmax
from skyclass.probability.conformal import (
    FLAG_OK,
    IntervalCalibration,
    Intervals,
    fit_interval_calibration,
    fit_probability_recalibration,
    fit_temperature,
    photoz_intervals,
    recalibrate_probabilities,
)
from skyclass.probability.redshift import RedshiftGrid, point_estimates
from skyclass.report.intervals import (
    QuintileRow,
    coverage_by_quintile,
    coverage_plot,
    ece_by_quintile,
    markdown_table,
)

DATA = Path(__file__).resolve().parents[1] / "src" / "skyclass" / "demo" / "data"
GRID = RedshiftGrid.uniform(0.0, 1.0, 20)
NAMES = ("u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z")
LEVELS = (0.68, 0.95)


def _features(mags: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return np.column_stack([mags, mags[:, :-1] - mags[:, 1:]]).astype(np.float32)


def _model() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, random_state=0)


@dataclass
class PhotoZ:
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

    def rows(self, rows: npt.NDArray[np.intp]) -> list[QuintileRow]:
        pct = self.scorer.percentile(self.X[rows])
        oor = self.scorer.out_of_range(self.X[rows]).any(axis=1)
        pdf = self.pdf(rows)
        est = point_estimates(pdf, GRID, LEVELS)
        mondrian = photoz_intervals(pdf, GRID, pct, self.mondrian, oor)
        raw = Intervals(
            lo={a: est.intervals[a][0] for a in LEVELS},
            hi={a: est.intervals[a][1] for a in LEVELS},
            flag=mondrian.flag,
        )
        out = coverage_by_quintile("raw PDF", raw, pct, self.z[rows])
        unconditional = photoz_intervals(pdf, GRID, pct, self.unconditional, oor)
        out += coverage_by_quintile("unconditional", unconditional, pct, self.z[rows])
        out += coverage_by_quintile("Mondrian", mondrian, pct, self.z[rows])
        return out


def photoz(boss: pd.DataFrame, side: npt.NDArray[np.bool_], seed: int) -> PhotoZ:
    X = _features(boss[[f"mag_{b}" for b in "ugriz"]].to_numpy(dtype=np.float64))
    z = boss["z_spec"].to_numpy(dtype=np.float64)
    labels = np.clip(np.searchsorted(GRID.edge_array, z, side="right") - 1, 0, GRID.n_bins - 1)
    rows = np.random.default_rng(seed).permutation(np.flatnonzero(side))
    n = rows.size
    fit, cal, test = rows[: 4 * n // 10], rows[4 * n // 10 : 7 * n // 10], rows[7 * n // 10 :]
    model = _model().fit(X[fit], labels[fit])
    scorer = fit_ood_scorer(X[fit], NAMES, reference=X[cal], seed=seed)
    p = np.zeros((cal.size, GRID.n_bins))
    p[:, model.classes_] = model.predict_proba(X[cal])
    pct = scorer.percentile(X[cal])
    return PhotoZ(
        X,
        z,
        test,
        np.flatnonzero(~side),
        model,
        scorer,
        fit_interval_calibration(p, GRID, z[cal], pct),
        fit_interval_calibration(p, GRID, z[cal], pct, edges=(0.0, 99.0)),
    )


def mean_rows(runs: list[list[QuintileRow]]) -> list[QuintileRow]:
    return [
        QuintileRow(
            r.method,
            r.what,
            tuple(float(v) for v in np.nanmean([run[k].values for run in runs], axis=0)),
            tuple(int(v) for v in np.sum([run[k].counts for run in runs], axis=0)),
        )
        for k, r in enumerate(runs[0])
    ]


def flagged(run: PhotoZ) -> str:
    app = run.application
    pct = run.scorer.percentile(run.X[app])
    oor = run.scorer.out_of_range(run.X[app]).any(axis=1)
    got = photoz_intervals(run.pdf(app), GRID, pct, run.mondrian, oor)
    return f"{np.mean(got.flag != FLAG_OK):.3f} of {app.size:,}"


def classes(sdss: pd.DataFrame, soft: bool) -> list[QuintileRow]:
    bands = list("ugriz")
    X = _features(sdss[bands].to_numpy(dtype=np.float64))
    names = sorted(sdss["class"].unique())
    y = np.searchsorted(names, sdss["class"].to_numpy())
    u = sdss["u"].to_numpy()
    rng = np.random.default_rng(1)
    side = rng.random(u.size) < 1 / (1 + np.exp(-(u - 20.5) / 0.5)) if soft else u > 20.5
    rows = rng.permutation(np.flatnonzero(side))[:30_000]
    n = rows.size
    fit, cal, test = rows[: 4 * n // 10], rows[4 * n // 10 : 7 * n // 10], rows[7 * n // 10 :]
    target = np.flatnonzero(~side)[:20_000] if soft else test
    model = _model().fit(X[fit], y[fit])
    scorer = fit_ood_scorer(X[fit], NAMES, reference=X[cal], seed=1)
    t = fit_temperature(model.predict_proba(X[cal]), y[cal])
    cal_p = temperature_softmax(model.predict_proba(X[cal]), t, CALIBRATION_EPS)
    recal = fit_probability_recalibration(cal_p, y[cal], scorer.percentile(X[cal]))
    pct = scorer.percentile(X[target])
    oor = scorer.out_of_range(X[target]).any(axis=1)
    glob = temperature_softmax(model.predict_proba(X[target]), t, CALIBRATION_EPS)
    per_bin, flag = recalibrate_probabilities(glob, pct, recal, oor)
    ok = flag == FLAG_OK
    return [
        ece_by_quintile("global temperature", glob, y[target], pct, ok),
        ece_by_quintile("per-bin temperature", per_bin, y[target], pct, ok),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, help="write the held-out coverage figure (PNG)")
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"CPU: {cpu}")
    clock = time.perf_counter()
    boss = pd.read_csv(DATA / "boss_dr10_photoz_35762.csv")
    sdss = pd.read_csv(DATA / "sdss17_star_classification_99999.csv.gz")
    sdss = sdss[((sdss[list("ugriz")] > 0) & (sdss[list("ugriz")] < 40)).all(axis=1)]
    r = boss["mag_r"].to_numpy()
    with threadpool_limits(limits=1):
        faint = [photoz(boss, r > 20.0, seed) for seed in (0, 1, 2)]
        held = mean_rows([run.rows(run.test) for run in faint])
        print("\n### BOSS photo-z trained on r > 20: held-out r > 20 (mean of 3 splits)\n")
        print(markdown_table(held))
        print(f"\nApplication r <= 20 without an interval (flagged): {flagged(faint[0])}")
        soft_runs = []
        for seed in (0, 1, 2):
            pick = np.random.default_rng(seed).random(r.size) < 1 / (1 + np.exp(-(r - 20.5) / 0.4))
            run = photoz(boss, pick, seed=0)
            soft_runs.append(run.rows(run.application))
            print(f"\nSoft selection {seed}: application without an interval {flagged(run)}")
            print(markdown_table(soft_runs[-1][2:]))
        zcut = photoz(boss, boss["z_spec"].to_numpy() > 0.3, seed=0)
        print("\n### BOSS trained on z > 0.3, applied to z <= 0.3 (selection on the label)\n")
        print(f"Without an interval: {flagged(zcut)}")
        print(markdown_table(zcut.rows(zcut.application)[2:]))
        print("\n### SDSS17 classes trained on u > 20.5: held-out u > 20.5, top-label ECE\n")
        print(markdown_table(classes(sdss, soft=False)))
        print("\n### SDSS17 soft selection on u: application part, top-label ECE\n")
        print(markdown_table(classes(sdss, soft=True)))
    print(f"\n{time.perf_counter() - clock:.0f} s")
    if args.plot is not None:
        nominal = {"coverage 68%": 0.68, "coverage 95%": 0.95}
        keep = [row for row in held if row.method != "raw PDF"]
        args.plot.write_bytes(
            coverage_plot(keep, nominal, "BOSS photo-z, trained r > 20, held-out r > 20")
        )
        print(f"figure: {args.plot}")


if __name__ == "__main__":
    main()
