"""The OOD scorer: percentiles of the training scores, range flags, the in-domain flag."""

from __future__ import annotations

import numpy as np
import pytest

from skyclass.domain.errors import DomainError
from skyclass.domain.ood import IN_DOMAIN_PERCENTILE, fit_ood_scorer

NAMES = ("a", "b", "c", "d")


def test_held_out_rows_read_as_uniform_percentiles_and_shifted_rows_as_strange() -> None:
    rng = np.random.default_rng(3)
    scorer = fit_ood_scorer(rng.normal(size=(4000, 4)), NAMES, reference=rng.normal(size=(2000, 4)))
    held_out = scorer.percentile(rng.normal(size=(4000, 4)))
    # Same distribution as the reference: percentiles are uniform on [0, 100].
    assert abs(held_out.mean() - 50.0) < 3.0
    assert abs(np.mean(held_out >= IN_DOMAIN_PERCENTILE) - 0.01) < 0.01
    shifted = rng.normal(size=(4000, 4)) + 2.0
    assert scorer.percentile(shifted).mean() > 85.0
    assert (
        scorer.in_domain(shifted).mean() < 0.6 < scorer.in_domain(rng.normal(size=(4000, 4))).mean()
    )


def test_out_of_range_flags_name_the_feature_and_nan_is_neither_range_nor_error() -> None:
    rng = np.random.default_rng(4)
    train = rng.uniform(0.0, 1.0, size=(500, 4))
    scorer = fit_ood_scorer(train, NAMES)
    rows = np.array([[0.5, 0.5, 0.5, 0.5], [0.5, 7.0, 0.5, 0.5], [np.nan, 0.5, -1.0, 0.5]])
    flags = scorer.out_of_range(rows)
    assert flags.tolist() == [
        [False, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
    ]
    assert scorer.in_domain(rows).tolist()[1:] == [False, False]
    assert np.isfinite(scorer.percentile(rows)).all()


def test_a_wrong_shape_is_refused_with_the_feature_names() -> None:
    scorer = fit_ood_scorer(np.random.default_rng(5).normal(size=(50, 4)), NAMES)
    with pytest.raises(DomainError, match="a, b, c, d"):
        scorer.percentile(np.zeros((3, 2)))
