"""The loss of the compact PDF storage (revision 0017) on real photo-z PDFs.

A photo-z classifier over 20 redshift bins on [0, 1] (scikit-learn's
HistGradientBoostingClassifier, 100 iterations) is trained on 70% of the BOSS DR10
photo-z set (ugriz, their errors and four colours) and predicts PDFs for the other
30%. The PDFs are then stored as the database stores them
(:func:`skyclass.score.codec.quantise_pdf`: the CDF at the 19 inner edges in 8 bits,
which ``tests/score/test_codec.py`` checks equal to the SQL codec), and every metric
of :func:`skyclass.train.photoz.photoz_metrics` is compared: sigma_NMAD, coverage of
the 68% and 95% intervals, the PIT (KS distance from uniform) and the CRPS, once
recomputed from the stored PDF (what a user who reads ``probabilities`` gets) and once
with the stored point estimates (16 bits over the grid: what ``z_median``,
``z_lo68`` ... give). Targets (issue 12): |delta sigma_NMAD| <= 0.001, |delta
coverage| <= 0.5 points. Usage: ``.venv/bin/python bench/bench_pdf_codec.py [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_model, format_table, say
from skyclass.probability.redshift import RedshiftGrid, point_estimates
from skyclass.score.codec import quantise_pdf
from skyclass.train.photoz import bin_redshifts, pdf_from_proba, photoz_metrics, point_metrics

DATA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "photoz_boss_dr10_annz"
    / "boss_dr10_photoz_35762.csv"
)
SEED = 20261202
BINS = 20


def _data_file() -> Path:
    if not DATA.exists():
        raise SystemExit(f"BOSS photo-z data not found at {DATA}")
    return DATA


def quantise_estimates(values: np.ndarray, grid: RedshiftGrid) -> np.ndarray:
    """Point estimates as the database stores them: 16 bits over the grid's range."""
    e = grid.edge_array
    q = np.rint((np.clip(values, e[0], e[-1]) - e[0]) * (65535 / (e[-1] - e[0])) - 32768)
    return ((q + 32768) * ((e[-1] - e[0]) / 65535) + e[0]).astype(np.float32).astype(np.float64)


def run() -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame = pd.read_csv(_data_file())
    bands = ["u", "g", "r", "i", "z"]
    mags = frame[[f"mag_{b}" for b in bands]].to_numpy(np.float32)
    errs = frame[[f"magerr_{b}" for b in bands]].to_numpy(np.float32)
    colours = mags[:, :-1] - mags[:, 1:]
    x = np.column_stack([mags, errs, colours]).astype(np.float32)
    z = frame["z_spec"].to_numpy(np.float64)
    grid = RedshiftGrid.uniform(0.0, 1.0, BINS)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(z))
    cut = int(0.7 * len(z))
    train, test = order[:cut], order[cut:]
    model = HistGradientBoostingClassifier(max_iter=100, random_state=SEED)
    model.fit(x[train], bin_redshifts(z[train], grid))
    pdf = pdf_from_proba(model.predict_proba(x[test]), model.classes_, grid)
    stored = quantise_pdf(pdf)
    zt = np.clip(z[test], 0.0, 1.0)
    original = photoz_metrics(zt, pdf, grid)
    recomputed = photoz_metrics(zt, stored, grid)
    est = point_estimates(pdf, grid)
    median_q = quantise_estimates(est.median, grid)
    lo68, hi68 = (quantise_estimates(v, grid) for v in est.intervals[0.68])
    lo95, hi95 = (quantise_estimates(v, grid) for v in est.intervals[0.95])
    stored_points = {
        "sigma_nmad": point_metrics(zt, median_q)["sigma_nmad"],
        "coverage_68": float(np.mean((zt >= lo68) & (zt <= hi68))),
        "coverage_95": float(np.mean((zt >= lo95) & (zt <= hi95))),
    }
    rows = {
        "sigma_nmad": (original.sigma_nmad, recomputed.sigma_nmad, stored_points["sigma_nmad"]),
        "coverage_68": (
            original.coverage[0.68],
            recomputed.coverage[0.68],
            stored_points["coverage_68"],
        ),
        "coverage_95": (
            original.coverage[0.95],
            recomputed.coverage[0.95],
            stored_points["coverage_95"],
        ),
        "pit_ks": (original.pit_ks, recomputed.pit_ks, None),
        "crps_mean": (original.crps_mean, recomputed.crps_mean, None),
    }
    mass_error = float(np.abs(stored - pdf).max())
    return {
        "objects": len(test),
        "bins": BINS,
        "metrics": rows,
        "max_mass_error": mass_error,
        "max_cdf_error": float(np.abs(np.cumsum(stored, axis=1) - np.cumsum(pdf, axis=1)).max()),
        "cpu": cpu_model(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run()
    say(
        f"compact PDF storage on {result['objects']:,} BOSS DR10 test objects, "
        f"{result['bins']} bins (CPU: {result['cpu']})"
    )
    table = []
    for name, (a, b, c) in result["metrics"].items():
        scale = 100.0 if name.startswith("coverage") else 1.0
        unit = " (points)" if scale == 100.0 else ""
        table.append(
            (
                name + unit,
                f"{a * scale:.5f}",
                f"{b * scale:.5f}",
                f"{(b - a) * scale:+.5f}",
                "" if c is None else f"{c * scale:.5f}",
                "" if c is None else f"{(c - a) * scale:+.5f}",
            )
        )
    say(
        format_table(
            (
                "metric",
                "model's PDF",
                "stored PDF",
                "change",
                "stored estimates",
                "change",
            ),
            table,
        )
    )
    say(
        f"largest change of a bin mass {result['max_mass_error']:.5f}, "
        f"of the CDF {result['max_cdf_error']:.5f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
