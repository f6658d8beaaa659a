"""How fast are exact TreeSHAP explanations of the models skyclass trains?

Fits the default star/galaxy/QSO gradient boosting (100 iterations x 3
classes, 31 leaves) and a random forest on the bundled SDSS17 sample (ugriz
and colours), imports each into Treelite as a model version stores it, and
times per object, side by side in one run:

- TreeSHAP of the stored checkpoint (:mod:`skyclass.explain.treeshap`,
  shap's C++ explainer), including turning the checkpoint into trees;
- the same model's margin with Treelite GTIL (what one prediction costs
  without the compiled library), for scale.

Usage: ``.venv/bin/python bench/bench_explain.py [--objects 2000] [--train 20000]``.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_model, format_table, say
from skyclass.compile.checkpoint import import_estimator
from skyclass.explain.treeshap import ensemble_from_treelite, explain

DATA = Path(__file__).resolve().parents[1] / "src/skyclass/demo/data"


def sdss_features(n: int) -> tuple[np.ndarray, np.ndarray]:
    """ugriz and the four colours, and the class, of the first ``n`` clean SDSS17 rows."""
    path = next(DATA.glob("sdss17_star_classification_*.csv.gz"))
    with gzip.open(path, "rt") as handle:
        header = handle.readline().strip().split(",")
        rows = [line.strip().split(",") for _, line in zip(range(n * 2), handle, strict=False)]
    col = {name: i for i, name in enumerate(header)}
    mags = np.asarray([[float(r[col[b]]) for b in "ugriz"] for r in rows])
    labels = np.asarray([r[col["class"]] for r in rows])
    keep = (mags > 0).all(axis=1)
    mags, labels = mags[keep][:n], labels[keep][:n]
    colours = mags[:, :-1] - mags[:, 1:]
    return np.hstack([mags, colours]).astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--train", type=int, default=20000)
    args = parser.parse_args()
    import treelite.gtil
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    x, y = sdss_features(args.train + args.objects)
    train_x, train_y, test_x = x[: args.train], y[: args.train], x[args.train :]
    say(f"CPU: {cpu_model()}; {args.train} training rows, {len(test_x)} objects explained")
    models = {
        "hgb (100 iter x 3 classes)": HistGradientBoostingClassifier(
            max_iter=100, early_stopping=False, l2_regularization=1.0, random_state=0
        ),
        "random forest (100 trees)": RandomForestClassifier(
            n_estimators=100, min_samples_leaf=5, random_state=0, n_jobs=1
        ),
    }
    rows = []
    names = ("u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z")
    for name, estimator in models.items():
        estimator.fit(train_x, train_y)
        model = import_estimator(estimator)
        started = time.perf_counter()
        result = explain(ensemble_from_treelite(model), test_x)
        shap_s = time.perf_counter() - started
        started = time.perf_counter()
        margin = np.asarray(
            treelite.gtil.predict(model, test_x.astype(np.float64), nthread=1, pred_margin=True)
        ).reshape(len(test_x), -1)
        gtil_s = time.perf_counter() - started
        gap = float(np.abs(result.margin - margin).max())
        mean_abs = np.abs(result.contributions).mean(axis=0)
        for k, cls in enumerate(estimator.classes_):
            top = np.argsort(-mean_abs[:, k])[:4]
            say(
                f"{name}, {cls}: "
                + ", ".join(f"{names[f]} {mean_abs[f, k]:.3f}" for f in top)
                + f" (mean |contribution|; output: {'logit' if 'hgb' in name else 'frequency'})"
            )
        rows.append(
            (
                name,
                f"{1e3 * shap_s / len(test_x):.3f}",
                f"{1e6 * gtil_s / len(test_x):.1f}",
                f"{shap_s / gtil_s:.0f}x",
                f"{gap:.1e}",
            )
        )
    say(
        format_table(
            ("model", "TreeSHAP ms/object", "GTIL margin us/object", "ratio", "max |sum - margin|"),
            rows,
        )
    )


if __name__ == "__main__":
    main()
