"""Exact TreeSHAP feature contributions of a stored model version.

A model version keeps its trees as a Treelite checkpoint (never a pickle).
Treelite's tree accessors give every node's split, leaf values and training
cover (``sum_hess`` for forests, ``data_count`` for boosting), which is all that
exact TreeSHAP (Lundberg et al. 2020) needs: the trees are handed to the
``shap`` package's C++ TreeExplainer as a custom tree ensemble.

Contributions explain the *raw margin* the compiled model computes before
its post-processor: the softmax (or sigmoid) logits of gradient boosting, the
averaged class frequencies of forests. For every object and output,
``base + sum(contributions) == margin`` (to rounding), and the margin equals
Treelite's own prediction with ``pred_margin=True``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from skyclass.explain.errors import ExplainError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Explanation:
    """Contributions of each feature to each raw output, for a batch of objects.

    ``contributions`` has shape (objects, features, outputs); ``base`` (outputs)
    is the model's expected margin over its training cover; ``margin``
    (objects, outputs) the raw output explained.
    """

    base: FloatArray
    contributions: FloatArray = field(repr=False)
    margin: FloatArray = field(repr=False)

    @property
    def n_outputs(self) -> int:
        """Raw outputs explained (classes; 1 for binary boosting)."""
        return int(self.base.size)


@dataclass(frozen=True)
class TreeEnsemble:
    """A Treelite model rearranged as flat arrays per tree, the layout TreeSHAP reads."""

    trees: list[dict[str, Any]] = field(repr=False)
    base_offset: FloatArray
    n_features: int
    n_outputs: int


def ensemble_from_treelite(model: Any) -> TreeEnsemble:
    """Flatten a ``treelite.Model`` of a supported classifier into per-tree node arrays.

    Boosting trees each add to one class (``class_id``); forest trees carry a
    leaf vector over all classes and are averaged. Internal node values are
    the cover-weighted means of their children, as TreeSHAP expects.
    """
    header = model.get_header_accessor()
    n_features = int(np.asarray(header.get_field("num_feature")).ravel()[0])
    n_outputs = int(np.asarray(header.get_field("num_class")).ravel()[0])
    n_trees = int(model.num_tree)
    averaged = bool(np.asarray(header.get_field("average_tree_output")).ravel()[0])
    class_ids = np.asarray(header.get_field("class_id"), dtype=np.int64).ravel()
    base = np.asarray(header.get_field("base_scores"), dtype=np.float64).ravel()[:n_outputs]
    scale = 1.0 / n_trees if averaged else 1.0
    trees = [
        _flat_tree(model.get_tree_accessor(i), n_outputs, int(class_ids[i]), scale)
        for i in range(n_trees)
    ]
    return TreeEnsemble(trees, base.copy(), n_features, n_outputs)


#: Treelite's enums: node type 0 = leaf, 1 = numerical test; operator 3 = "<=".
_LEAF, _NUMERICAL, _LESS_EQUAL = 0, 1, 3


def _field(tree: Any, name: str, dtype: Any) -> Any:
    return np.asarray(tree.get_field(name), dtype=dtype).ravel()


def _flat_tree(tree: Any, n_outputs: int, class_id: int, scale: float) -> dict[str, Any]:
    node_type = _field(tree, "node_type", np.int64)
    n = node_type.size
    leaf = node_type == _LEAF
    if np.any(~leaf & (node_type != _NUMERICAL)) or np.any(
        ~leaf & (_field(tree, "cmp", np.int64) != _LESS_EQUAL)
    ):
        raise ExplainError("only numerical '<=' splits can be explained")
    left = np.where(leaf, -1, _field(tree, "cleft", np.int64))
    right = np.where(leaf, -1, _field(tree, "cright", np.int64))
    default = np.where(_field(tree, "default_left", np.int64) == 1, left, right)
    feature = np.where(leaf, -2, _field(tree, "split_index", np.int64))
    cover = _field(tree, "sum_hess", np.float64)
    if cover.size != n:
        cover = _field(tree, "data_count", np.float64)
    if cover.size != n or not np.all(cover > 0):
        raise ExplainError("the model's trees carry no training cover: it cannot be explained")
    values = np.zeros((n, n_outputs), dtype=np.float64)
    begin = _field(tree, "leaf_vector_begin", np.int64)
    end = _field(tree, "leaf_vector_end", np.int64)
    vectors = _field(tree, "leaf_vector", np.float64)
    scalars = _field(tree, "leaf_value", np.float64)
    for i in np.flatnonzero(leaf).tolist():
        if begin.size == n and end[i] > begin[i]:
            vector = vectors[begin[i] : end[i]]
            if vector.size != n_outputs:
                raise ExplainError(f"a leaf holds {vector.size} values for {n_outputs} outputs")
            values[i] = vector * scale
        elif class_id >= 0:
            values[i, class_id] = scalars[i] * scale
        else:
            values[i, :] = scalars[i] * scale
    # Children have larger ids than their parents in Treelite's layout; fill upwards.
    for i in range(n - 1, -1, -1):
        if not leaf[i]:
            a, b = left[i], right[i]
            values[i] = (cover[a] * values[a] + cover[b] * values[b]) / (cover[a] + cover[b])
    return {
        "children_left": left,
        "children_right": right,
        "children_default": default,
        "features": feature,
        "thresholds": _field(tree, "threshold", np.float64),
        "values": values,
        "node_sample_weight": cover,
    }


def explain(ensemble: TreeEnsemble, features: npt.ArrayLike) -> Explanation:
    """Exact TreeSHAP contributions of ``features`` (objects x features; NaN = missing)."""
    with warnings.catch_warnings():
        # shap's import touches matplotlib APIs that announce deprecations.
        warnings.simplefilter("ignore")
        import shap  # type: ignore[import-untyped]

    x = np.ascontiguousarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != ensemble.n_features:
        raise ExplainError(f"the model takes {ensemble.n_features} features, got shape {x.shape}")
    explainer = shap.TreeExplainer(
        {
            "trees": ensemble.trees,
            "base_offset": ensemble.base_offset,
            "tree_output": "raw_value",
            "objective": "squared_error",
            "input_dtype": np.float64,
            "internal_dtype": np.float64,
        },
        model_output="raw",
    )
    values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype=np.float64)
    contributions = values.reshape(x.shape[0], ensemble.n_features, ensemble.n_outputs)
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64)).ravel()
    if base.size == 1 and ensemble.n_outputs > 1:
        base = np.repeat(base, ensemble.n_outputs)
    margin = base[None, :] + contributions.sum(axis=1)
    return Explanation(base=base, contributions=contributions, margin=margin)
