"""Treelite checkpoints: a fitted tree ensemble as plain data instead of a pickle.

A checkpoint is ``treelite.Model.serialize_bytes()``: Treelite's binary
format of the trees (thresholds, leaf values, layout), parsed by Treelite
without running any Python code, so it is safe to keep in the database and to
load from it, unlike a pickle or joblib file. The library of a model version
is rebuilt from it with :func:`skyclass.compile.compile_checkpoint`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyclass.errors import CompileError

SUPPORTED_ESTIMATORS = (
    "HistGradientBoostingClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
)


@dataclass(frozen=True)
class ModelLayout:
    """What a Treelite model declares: features, raw outputs and how they become probabilities."""

    n_features: int
    n_outputs: int
    n_classes: int
    output_transform: str
    postprocessor: str


def check_estimator(estimator: Any, n_features: int) -> int:
    """Validate a fitted classifier for compilation and return its number of classes.

    Only single-output scikit-learn HistGradientBoostingClassifier,
    RandomForestClassifier and ExtraTreesClassifier with numeric features are
    supported, because those are the ones whose Treelite import is covered by
    the parity tests.
    """
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    kinds = (HistGradientBoostingClassifier, RandomForestClassifier, ExtraTreesClassifier)
    if not isinstance(estimator, kinds):
        raise CompileError(
            f"cannot compile a {type(estimator).__name__}: supported estimators are "
            + ", ".join(SUPPORTED_ESTIMATORS)
        )
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        raise CompileError(f"the {type(estimator).__name__} is not fitted") from None
    if getattr(estimator, "n_outputs_", 1) != 1:
        raise CompileError("multi-output classifiers are not supported")
    categorical = getattr(estimator, "is_categorical_", None)
    if categorical is not None and bool(np.any(categorical)):
        raise CompileError("categorical features are not supported; encode them as numbers")
    fitted_features = int(estimator.n_features_in_)
    if n_features != fitted_features:
        raise CompileError(
            f"n_features={n_features} but the {type(estimator).__name__} was fitted on "
            f"{fitted_features} features"
        )
    n_classes = len(estimator.classes_)
    if n_classes < 2:
        raise CompileError(f"a classifier needs at least 2 classes, not {n_classes}")
    return n_classes


def import_estimator(estimator: Any) -> Any:
    """The ``treelite.Model`` of a fitted scikit-learn tree ensemble."""
    import treelite.sklearn

    with warnings.catch_warnings():
        # Treelite announces format details as warnings; they are not user errors.
        warnings.simplefilter("ignore")
        return treelite.sklearn.import_model(estimator)


def treelite_checkpoint(estimator: Any, *, n_features: int) -> bytes:
    """The Treelite checkpoint (``Model.serialize_bytes()``) of a fitted supported classifier."""
    check_estimator(estimator, n_features)
    model = import_estimator(estimator)
    data: bytes = model.serialize_bytes()
    return data


def load_checkpoint(checkpoint: bytes) -> Any:
    """A ``treelite.Model`` from checkpoint bytes; raises :class:`CompileError` on bad input."""
    import treelite

    if not isinstance(checkpoint, bytes | bytearray | memoryview) or len(checkpoint) == 0:
        raise CompileError("a Treelite checkpoint must be non-empty bytes")
    try:
        return treelite.Model.deserialize_bytes(bytes(checkpoint))
    except treelite.TreeliteError as exc:
        raise CompileError(f"not a valid Treelite checkpoint: {exc}") from None


def _field(model: Any, name: str) -> Any:
    return model.get_header_accessor().get_field(name)


def model_layout(model: Any) -> ModelLayout:
    """Read the output layout of a ``treelite.Model`` and decide its output transform.

    Binary gradient boosting has one sigmoid output (``binary_expand``);
    multiclass boosting (softmax) and forests (averaged class frequencies,
    one output per class even when binary) give the probabilities directly
    (``identity``); an IsolationForest gives one anomaly score and no classes
    (``raw_score``). Anything else is refused rather than guessed.
    """
    n_features = int(np.asarray(_field(model, "num_feature")).ravel()[0])
    n_targets = int(np.asarray(_field(model, "num_target")).ravel()[0])
    num_class = [int(v) for v in np.asarray(_field(model, "num_class")).ravel()]
    postprocessor = str(_field(model, "postprocessor"))
    if n_targets != 1 or len(num_class) != 1:
        raise CompileError(f"the model has {n_targets} targets; only single-target classifiers")
    n_outputs = num_class[0]
    if n_outputs == 1 and postprocessor == "exponential_standard_ratio":
        # An IsolationForest: one anomaly score (task 'anomaly'), no classes.
        return ModelLayout(n_features, 1, 0, "raw_score", postprocessor)
    if n_outputs == 1 and postprocessor == "sigmoid":
        return ModelLayout(n_features, 1, 2, "binary_expand", postprocessor)
    if n_outputs >= 2 and postprocessor in ("softmax", "identity_multiclass"):
        return ModelLayout(n_features, n_outputs, n_outputs, "identity", postprocessor)
    raise CompileError(
        f"unsupported model output: {n_outputs} outputs with post-processor {postprocessor!r} "
        "do not give class probabilities"
    )
