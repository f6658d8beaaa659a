"""Uncertainty scores and completeness at a purity target."""

from __future__ import annotations

import numpy as np
import pytest

from skyclass.learning.strategies import completeness_at_purity, uncertainty

P = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.4, 0.0]])


def test_each_strategy_ranks_the_uniform_row_first_and_the_certain_row_last() -> None:
    rng = np.random.default_rng(0)
    entropy = uncertainty(P, "entropy", rng)
    assert entropy[0] == 0 and entropy[2] == pytest.approx(np.log(3))
    assert uncertainty(P, "least_confident", rng).tolist() == pytest.approx([0, 0.5, 2 / 3, 0.4])
    assert uncertainty(P, "margin", rng).tolist() == pytest.approx([0, 0.8, 1.0, 0.8])
    r = uncertainty(P, "random", rng)
    assert r.shape == (4,) and ((r >= 0) & (r < 1)).all()
    with pytest.raises(ValueError, match="strategy must be one of"):
        uncertainty(P, "oracle", rng)


def test_completeness_at_purity_takes_the_loosest_cut_that_keeps_the_purity() -> None:
    positive = np.array([True, True, False, True, False, False, True])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1])
    # cuts: 1/1, 2/2, 2/3, 3/4 (0.75), 3/5, 3/6, 4/7
    assert completeness_at_purity(positive, score, 0.95) == pytest.approx(0.5)
    assert completeness_at_purity(positive, score, 0.75) == pytest.approx(0.75)
    assert completeness_at_purity(positive, score, 0.5) == pytest.approx(1.0)
    # a tie is cut as a whole: the tied pair (one positive, one negative) gives purity 1/2
    assert completeness_at_purity(np.array([True, False]), np.array([0.5, 0.5]), 0.9) == 0.0
    assert np.isnan(completeness_at_purity(np.zeros(3, bool), np.ones(3), 0.9))
