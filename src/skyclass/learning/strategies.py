"""Uncertainty scores of class probabilities (higher: more worth labelling)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

STRATEGIES = ("entropy", "margin", "least_confident", "random")

FloatArray = npt.NDArray[np.float64]


def uncertainty(proba: npt.ArrayLike, strategy: str, rng: np.random.Generator) -> FloatArray:
    """Per row of ``proba`` (objects x classes): entropy, margin, least confidence or random.

    - entropy: -sum p ln p;
    - margin: 1 - (p_first - p_second);
    - least_confident: 1 - max p;
    - random: uniform on [0, 1) from ``rng``.
    """
    p = np.asarray(proba, dtype=np.float64)
    if strategy == "random":
        return np.asarray(rng.random(p.shape[0]), dtype=np.float64)
    if strategy == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p), 0.0)
        return np.asarray(-terms.sum(axis=1))
    if strategy == "least_confident":
        return np.asarray(1.0 - p.max(axis=1))
    if strategy == "margin":
        top2 = -np.sort(-p, axis=1)[:, :2]
        second = top2[:, 1] if p.shape[1] > 1 else np.zeros(p.shape[0])
        return np.asarray(1.0 - (top2[:, 0] - second))
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")


def completeness_at_purity(
    positive: npt.NDArray[np.bool_], score: FloatArray, purity: float
) -> float:
    """Largest fraction of the positives selected by a cut on ``score`` with purity >= ``purity``.

    Objects are taken in decreasing score (ties together); NaN when there are no
    positives, 0 when no cut reaches the purity.
    """
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="stable")
    s = score[order]
    tp = np.cumsum(positive[order])
    selected = np.arange(1, s.size + 1)
    # only cut between distinct scores
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    ok = last_of_tie & (tp / selected >= purity)
    return float(tp[ok].max() / n_pos) if ok.any() else 0.0
