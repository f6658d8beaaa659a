"""Which OOD score: IsolationForest, kNN distance, or the domain propensity, on real shifts.

Two known shifts from the bundled data: SDSS17 trained on u > 20.5 and applied
to u <= 20.5; BOSS DR10 photo-z trained on r > 20 and applied to r <= 20. For
each score the training side is split into fit rows (80%) and held-out
in-distribution rows (20%); half of the held-out rows are the reference the
score is read against (a percentile of their scores), the other half are the
in-distribution test. An object is flagged when its percentile is >= 99
(the documented ``in_domain`` threshold); ``in_domain`` also needs every
feature inside the fit rows' [min, max]. Printed per score: the flag rate of
shifted objects and of held-out in-distribution objects, the AUC of the score
separating the two, and the cost per object (one thread, Python, in memory).

Run: ``.venv/bin/python -m bench.bench_ood_choice`` (about a minute).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from bench.common import cpu_model
from skyclass.domain.classifier import fit_domain
from skyclass.domain.ood import IN_DOMAIN_PERCENTILE, fit_ood_scorer, score_percentile
from skyclass.train.metrics import roc_auc

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SEED = 11
KNN_K = 10


def _colours(mags: np.ndarray) -> np.ndarray:
    return np.column_stack([mags, mags[:, :-1] - mags[:, 1:]]).astype(np.float32)


def sdss(data: Path) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(
        data / "sdss17_stellar_classification" / "sdss17_star_classification_99999.csv.gz"
    )
    mags = frame[["u", "g", "r", "i", "z"]].to_numpy(np.float64)
    mags = mags[(mags > 0).all(axis=1)]
    return _colours(mags), mags[:, 0] > 20.5


def boss(data: Path) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(data / "photoz_boss_dr10_annz" / "boss_dr10_photoz_35762.csv")
    mags = frame[[f"mag_{b}" for b in "ugriz"]].to_numpy(np.float64)
    mags = mags[np.isfinite(mags).all(axis=1) & (mags > 0).all(axis=1) & (mags < 40).all(axis=1)]
    return _colours(mags), mags[:, 2] > 20.0


def _quantiles(scores: np.ndarray) -> np.ndarray:
    q = np.quantile(scores, np.linspace(0.0, 1.0, 1001))
    return np.maximum.accumulate(q)


def _timed(fn: Any, x: np.ndarray) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = np.asarray(fn(x))
    return out, (time.perf_counter() - t0) / len(x) * 1e6


def compare(name: str, X: np.ndarray, train_side: np.ndarray) -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED)
    train_idx = np.flatnonzero(train_side)
    rng.shuffle(train_idx)
    n_fit = int(0.8 * train_idx.size)
    fit, held = train_idx[:n_fit], train_idx[n_fit:]
    ref, test = held[: held.size // 2], held[held.size // 2 :]
    shifted = np.flatnonzero(~train_side)
    shifted = rng.choice(shifted, size=min(shifted.size, 10_000), replace=False)
    Xf, Xr, Xt, Xs = X[fit], X[ref], X[test], X[shifted]
    low, high = Xf.min(axis=0), Xf.max(axis=0)
    range_test = ((Xt < low) | (Xt > high)).any(axis=1)
    range_shift = ((Xs < low) | (Xs > high)).any(axis=1)
    rows = []

    def _row(
        score: str, p_test: np.ndarray, p_shift: np.ndarray, cost: float, fit_s: float
    ) -> dict[str, Any]:
        y = np.r_[np.zeros(p_test.size, bool), np.ones(p_shift.size, bool)]
        return {
            "data": name,
            "score": score,
            "flag_shifted": float(np.mean(p_shift >= IN_DOMAIN_PERCENTILE)),
            "flag_held_out": float(np.mean(p_test >= IN_DOMAIN_PERCENTILE)),
            "out_shifted": float(np.mean((p_shift >= IN_DOMAIN_PERCENTILE) | range_shift)),
            "out_held_out": float(np.mean((p_test >= IN_DOMAIN_PERCENTILE) | range_test)),
            "auc": roc_auc(y, np.r_[p_test, p_shift]),
            "us_per_object": cost,
            "fit_s": fit_s,
        }

    t0 = time.perf_counter()
    forest = fit_ood_scorer(Xf, tuple(f"f{i}" for i in range(X.shape[1])), reference=Xr, seed=SEED)
    fit_s = time.perf_counter() - t0
    p_test, _ = _timed(forest.percentile, Xt)
    p_shift, cost = _timed(forest.percentile, Xs)
    rows.append(_row("isolation forest (100 trees)", p_test, p_shift, cost, fit_s))

    mean, std = Xf.mean(axis=0), Xf.std(axis=0)
    t0 = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=KNN_K).fit((Xf - mean) / std)
    fit_s = time.perf_counter() - t0

    def knn(x: np.ndarray) -> np.ndarray:
        d, _ = nn.kneighbors((x - mean) / std)
        return d.mean(axis=1)

    ref_q = _quantiles(knn(Xr))
    p_test = score_percentile(knn(Xt), ref_q)
    s_shift, cost = _timed(knn, Xs)
    rows.append(
        _row(
            f"kNN mean distance (k={KNN_K})", p_test, score_percentile(s_shift, ref_q), cost, fit_s
        )
    )

    # The domain classifier needs the application catalog: all objects of the set
    # except the fit rows' own copies (as a survey would be scored).
    catalog = np.setdiff1d(np.arange(len(X)), fit)
    t0 = time.perf_counter()
    dom = fit_domain(Xf, X[catalog], seed=SEED)
    fit_s = time.perf_counter() - t0
    ref_q = _quantiles(dom.propensity(Xr))
    p_test = score_percentile(dom.propensity(Xt), ref_q)
    s_shift, cost = _timed(dom.propensity, Xs)
    rows.append(
        _row(
            "domain propensity (HGB 60 it.)", p_test, score_percentile(s_shift, ref_q), cost, fit_s
        )
    )
    return rows


def main() -> None:
    print(f"CPU: {cpu_model()}")
    print(
        "| data | score | p >= 99: shifted | p >= 99: held-out | not in_domain: shifted "
        "| not in_domain: held-out | AUC | µs/object (Python) | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=1):
        for name, (X, side) in (
            ("SDSS17 train u > 20.5, apply u <= 20.5", sdss(DATA)),
            ("BOSS train r > 20, apply r <= 20", boss(DATA)),
        ):
            for r in compare(name, X, side):
                print(
                    f"| {r['data']} | {r['score']} | {r['flag_shifted']:.3f} | "
                    f"{r['flag_held_out']:.3f} | {r['out_shifted']:.3f} | "
                    f"{r['out_held_out']:.3f} | {r['auc']:.3f} | {r['us_per_object']:.1f} | "
                    f"{r['fit_s']:.1f} |"
                )


if __name__ == "__main__":
    main()
