"""The domain classifier: tells a training snapshot from a sample of an application catalog.

A small HistGradientBoosting model learns ``p(application | x)`` from the
model's own features. The application side is an equal-size random sample of
the catalog (fixed seed), so the classifier's prior is 1/2 whatever the sizes.
Stratified K-fold gives out-of-fold propensities for every training and
sampled catalog row and a per-fold AUC (0.5: no detectable shift); the model
refitted on all rows then gives the propensity of every catalog object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from skyclass.domain import defaults
from skyclass.domain.errors import DomainError
from skyclass.train.metrics import roc_auc

DEFAULT_FOLDS = defaults.FOLDS
DEFAULT_SEED = defaults.SEED
#: Small and fast: the classifier only has to find where the two sets differ.
HGB_PARAMS: dict[str, Any] = {"max_iter": 60, "learning_rate": 0.1, "max_leaf_nodes": 15}


@dataclass(frozen=True)
class DomainFit:
    """A fitted domain classifier and its cross-validated separation of the two sets.

    ``train_propensity`` is the out-of-fold ``p(application | x)`` of every
    training row; ``sample_index`` the catalog rows drawn for the fit.
    """

    fold_auc: tuple[float, ...]
    train_propensity: npt.NDArray[np.float64] = field(repr=False)
    sample_index: npt.NDArray[np.intp] = field(repr=False)
    model: Any = field(repr=False)
    seed: int

    @property
    def auc(self) -> float:
        """Mean AUC over the folds."""
        return float(np.mean(self.fold_auc))

    @property
    def auc_std(self) -> float:
        """Standard deviation of the fold AUCs (ddof=1): the error bar of :attr:`auc`."""
        return float(np.std(self.fold_auc, ddof=1))

    @property
    def n_train(self) -> int:
        """Training rows used."""
        return int(self.train_propensity.size)

    @property
    def n_sample(self) -> int:
        """Catalog rows sampled for the fit."""
        return int(self.sample_index.size)

    def propensity(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``p(application | x)`` of rows ``X`` from the refitted model."""
        return np.asarray(self.model.predict_proba(_matrix(X, "X"))[:, 1], dtype=np.float64)


def _matrix(X: npt.ArrayLike, what: str) -> npt.NDArray[np.float32]:
    a = np.asarray(X, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise DomainError(f"{what} must be a non-empty 2-D feature matrix, not shape {a.shape}")
    return a


def _model(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(**HGB_PARAMS, random_state=seed)


def fit_domain(
    X_train: npt.ArrayLike,
    X_catalog: npt.ArrayLike,
    *,
    seed: int = DEFAULT_SEED,
    n_splits: int = DEFAULT_FOLDS,
) -> DomainFit:
    """Fit the domain classifier of ``X_train`` against an equal-size sample of ``X_catalog``.

    The sample has ``min(len(X_train), len(X_catalog))`` rows drawn without
    replacement with ``seed``; when the catalog is the larger side, the
    training side is used whole. Returns a :class:`DomainFit`.
    """
    train = _matrix(X_train, "training features")
    catalog = _matrix(X_catalog, "catalog features")
    if train.shape[1] != catalog.shape[1]:
        raise DomainError(
            f"training rows have {train.shape[1]} features but catalog rows {catalog.shape[1]}: "
            "build the version's feature definition on the catalog"
        )
    if n_splits < 2:
        raise DomainError(f"n_splits must be at least 2, not {n_splits}")
    rng = np.random.default_rng(seed)
    n_sample = min(train.shape[0], catalog.shape[0])
    if n_sample < n_splits:
        raise DomainError(f"need at least {n_splits} rows on each side, have {n_sample}")
    sample = np.sort(rng.choice(catalog.shape[0], size=n_sample, replace=False))
    X = np.concatenate([train, catalog[sample]])
    y = np.r_[np.zeros(train.shape[0], dtype=np.int8), np.ones(n_sample, dtype=np.int8)]
    oof = np.full(y.size, np.nan)
    aucs = []
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # one OpenMP thread: a spinning pool on a shared machine makes small fits far slower
    with threadpool_limits(limits=1):
        for fit_rows, test_rows in splitter.split(X, y):
            model = _model(seed).fit(X[fit_rows], y[fit_rows])
            oof[test_rows] = model.predict_proba(X[test_rows])[:, 1]
            aucs.append(roc_auc(y[test_rows] == 1, oof[test_rows]))
        final = _model(seed).fit(X, y)
    return DomainFit(
        fold_auc=tuple(float(a) for a in aucs),
        train_propensity=oof[: train.shape[0]],
        sample_index=sample.astype(np.intp),
        model=final,
        seed=seed,
    )
