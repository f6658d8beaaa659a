"""Metrics against scikit-learn where they overlap, and against hand-computed small cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sklearn.metrics as skm

from skyclass.train.errors import TrainError
from skyclass.train.metrics import (
    classification_metrics,
    completeness_at_fpr,
    reliability_bins,
    roc_auc,
)

CLASSES = np.array(["GALAXY", "QSO", "STAR"], dtype=object)


def random_case(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative, tie-rich probabilities (rounded to 2 decimals)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, size=n, p=[0.6, 0.2, 0.2])
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), np.searchsorted(CLASSES, y)] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    p = np.round(p, 2)
    p[:, 0] = np.maximum(1.0 - p[:, 1] - p[:, 2], 0.0)
    return y, p


def test_overall_metrics_match_sklearn() -> None:
    y, p = random_case()
    m = classification_metrics(y, p, CLASSES)
    pred = CLASSES[np.argmax(p, axis=1)]
    assert m.n == len(y)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert m.log_loss == pytest.approx(skm.log_loss(y, p, labels=CLASSES), abs=1e-9)
    assert m.brier == pytest.approx(
        skm.brier_score_loss(y, p, labels=CLASSES, scale_by_half=False), abs=1e-12
    )
    assert m.roc_auc_macro == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=CLASSES), abs=1e-12
    )
    assert np.array_equal(np.asarray(m.confusion), skm.confusion_matrix(y, pred, labels=CLASSES))


def test_per_class_metrics_match_sklearn() -> None:
    y, p = random_case(seed=1)
    m = classification_metrics(y, p, CLASSES)
    pred = CLASSES[np.argmax(p, axis=1)]
    purity = skm.precision_score(y, pred, labels=CLASSES, average=None)
    completeness = skm.recall_score(y, pred, labels=CLASSES, average=None)
    for k, cm in enumerate(m.per_class):
        assert cm.label == CLASSES[k]
        assert cm.support == int((y == CLASSES[k]).sum())
        assert cm.purity == pytest.approx(purity[k], abs=1e-12)
        assert cm.completeness == pytest.approx(completeness[k], abs=1e-12)
        assert cm.roc_auc == pytest.approx(skm.roc_auc_score(y == CLASSES[k], p[:, k]), abs=1e-12)


@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.2])
def test_completeness_at_fpr_is_the_roc_curve_slice(fpr: float) -> None:
    y, p = random_case(seed=2)
    for k in range(3):
        positive = y == CLASSES[k]
        cut = completeness_at_fpr(positive, p[:, k], fpr)
        roc_fpr, roc_tpr, thresholds = skm.roc_curve(positive, p[:, k], drop_intermediate=False)
        ok = roc_fpr <= fpr + 1e-12
        best = int(np.flatnonzero(ok)[np.argmax(roc_tpr[ok])])
        assert cut.completeness == pytest.approx(roc_tpr[best], abs=1e-12)
        assert cut.achieved_fpr <= fpr + 1e-12
        if np.isfinite(thresholds[best]):
            assert cut.threshold == pytest.approx(thresholds[best], abs=1e-12)
        # The threshold really achieves the reported numbers.
        called = p[:, k] >= cut.threshold
        assert called[positive].mean() == pytest.approx(cut.completeness, abs=1e-12)
        assert called[~positive].mean() == pytest.approx(cut.achieved_fpr, abs=1e-12)


def test_completeness_at_fpr_hand_case() -> None:
    # 10 negatives, 4 positives; at FPR <= 10% one negative may pass.
    score = np.array([0.9, 0.8, 0.7, 0.2, 0.85, 0.6, 0.5, 0.4, 0.3, 0.3, 0.1, 0.1, 0.05, 0.0])
    positive = np.array([True] * 4 + [False] * 10)
    cut = completeness_at_fpr(positive, score, 0.1)
    assert (cut.completeness, cut.threshold, cut.achieved_fpr) == (0.75, 0.7, 0.1)
    # At FPR 0 only the scores above the best negative (0.85) may be called.
    cut0 = completeness_at_fpr(positive, score, 0.0)
    assert (cut0.completeness, cut0.threshold, cut0.achieved_fpr) == (0.25, 0.9, 0.0)
    # A negative tied with the top score: nothing can be called at FPR 0.
    tied = completeness_at_fpr(np.array([True, False]), np.array([0.5, 0.5]), 0.0)
    assert tied.completeness == 0.0 and tied.threshold > 0.5
    assert math.isnan(completeness_at_fpr(np.array([True, True]), np.array([0.1, 0.2])).threshold)


def test_roc_auc_ties_count_half() -> None:
    assert roc_auc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([True, False, False]), np.array([0.9, 0.1, 0.9])) == 0.75


def test_ece_hand_case() -> None:
    # Confidences 0.9 (bin 13), 0.9, 0.6 (bin 9), 0.5 (bin 7); two classes.
    p = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.5, 0.5]])
    y = np.array(["a", "a", "a", "b"])
    m = classification_metrics(y, p, ["a", "b"])
    # bin 13: conf 0.9, acc 0.5; bin 9: conf 0.6, acc 1; bin 7: conf 0.5, acc 0 (tie -> "a").
    expected = 0.5 * abs(0.5 - 0.9) + 0.25 * abs(1 - 0.6) + 0.25 * abs(0 - 0.5)
    assert m.ece == pytest.approx(expected, abs=1e-12)
    bins = reliability_bins(np.array([0, 0, 0, 1]), p, 15)
    assert sum(bins.count) == 4 and bins.count[13] == 2 and bins.count[9] == 1
    # Confidence exactly 1 falls in the last bin.
    assert reliability_bins(np.array([0]), np.array([[1.0, 0.0]]), 15).count[14] == 1


def test_undefined_values_are_nan_and_json_null() -> None:
    # Nothing predicted as QSO: its purity is undefined, not 0.
    y = np.array(["GALAXY", "QSO", "STAR", "GALAXY"], dtype=object)
    p = np.array([[0.8, 0.1, 0.1], [0.5, 0.2, 0.3], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1]])
    m = classification_metrics(y, p, CLASSES)
    qso = m.per_class[1]
    assert math.isnan(qso.purity) and qso.completeness == 0.0
    record = m.to_dict()
    assert record["per_class"]["QSO"]["purity"] is None
    json.dumps(record, allow_nan=False)
    assert "purity[QSO]" in m.scalars()


def test_hard_labels_from_predict_are_used() -> None:
    y = np.array(["GALAXY", "STAR"], dtype=object)
    p = np.array([[0.6, 0.2, 0.2], [0.6, 0.2, 0.2]])
    m = classification_metrics(y, p, CLASSES, y_pred=np.array(["GALAXY", "STAR"]))
    assert m.accuracy == 1.0
    assert classification_metrics(y, p, CLASSES).accuracy == 0.5


def test_invalid_inputs_are_refused() -> None:
    y = np.array(["GALAXY", "STAR"], dtype=object)
    good = np.array([[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])
    with pytest.raises(TrainError, match="not among the classes"):
        classification_metrics(np.array(["GALAXY", "PULSAR"]), good, CLASSES)
    with pytest.raises(TrainError, match="sum to 1"):
        classification_metrics(y, good * 0.5, CLASSES)
    with pytest.raises(TrainError, match="NaN"):
        classification_metrics(y, np.full((2, 3), np.nan), CLASSES)
    with pytest.raises(TrainError, match="shape"):
        classification_metrics(y, good[:, :2], CLASSES)
