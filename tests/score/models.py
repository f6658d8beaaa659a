"""Small real models for the compile and scoring tests, built once per test session.

Data: SDSS17 photometry (ugriz and four colours, float32) with 10% of the
values replaced by NaN (seeded), split into training, calibration and
evaluation rows. Models are small (20 trees, depth 6; the 10-bin PDF
forest 10 trees) so each compiles in a second or two.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from skyclass.compile import CompiledArtifact, compile_estimator
from skyclass.train.calibration import CalibrationParams, fit_calibration

SDSS17 = "sdss17_stellar_classification/sdss17_star_classification_99999.csv.gz"
FEATURES = ("u", "g", "r", "i", "z", "u_g", "g_r", "r_i", "i_z")
N_FEATURES = len(FEATURES)
SEED = 20260
N_TRAIN, N_CALIB, N_EVAL = 6000, 3000, 2000
MISSING_FRACTION = 0.10
PDF_BINS = 10


@dataclass(frozen=True)
class Sdss17:
    """Features, classes and redshifts of the training, calibration and evaluation rows."""

    x_train: npt.NDArray[np.float32]
    x_calib: npt.NDArray[np.float32]
    x_eval: npt.NDArray[np.float32]
    y_train: npt.NDArray[Any]
    y_calib: npt.NDArray[Any]
    z_train: npt.NDArray[np.float64]
    z_calib: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Case:
    """A fitted estimator, its compiled artifact, class names and calibration fits.

    ``bin_edges`` (PDF cases only) are the redshift bin edges of the classes.
    """

    name: str
    estimator: Any
    artifact: CompiledArtifact
    classes: tuple[str, ...]
    calibrations: dict[str, CalibrationParams]
    bin_edges: tuple[float, ...] | None = None

    def reference(self, x: npt.NDArray[np.float32], method: str) -> npt.NDArray[np.float64]:
        """scikit-learn's probabilities after the named calibration (pure numpy)."""
        from skyclass.train.calibration import apply_calibration

        with threadpool_limits(1):
            proba = self.estimator.predict_proba(x)
        return apply_calibration(self.calibrations[method], proba)


def data_dir() -> Path:
    """The shared data directory (the same lookup as tests/conftest.py)."""
    from tests.conftest import SHARED_DATA

    return SHARED_DATA


@lru_cache(maxsize=1)
def sdss17() -> Sdss17:
    """The SDSS17 split used by every scoring test (seeded, float32, 10% NaN)."""
    path = data_dir() / SDSS17
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        rows = [line.rstrip("\n").split(",") for line in fh]
    col = {name: i for i, name in enumerate(header)}
    rng = np.random.default_rng(SEED)
    pick = rng.choice(len(rows), size=N_TRAIN + N_CALIB + N_EVAL, replace=False)
    mags = np.array([[float(rows[i][col[b]]) for b in "ugriz"] for i in pick], dtype=np.float32)
    x = np.column_stack([mags, mags[:, :-1] - mags[:, 1:]]).astype(np.float32)
    x[rng.random(x.shape) < MISSING_FRACTION] = np.nan
    y = np.array([rows[i][col["class"]] for i in pick])
    z = np.array([float(rows[i][col["redshift"]]) for i in pick])
    a, b = N_TRAIN, N_TRAIN + N_CALIB
    return Sdss17(x[:a], x[a:b], x[b:], y[:a], y[a:b], z[:a], z[a:b])


def _pdf_edges(data: Sdss17) -> npt.NDArray[np.float64]:
    """10 redshift bins with edges at training-set quantiles, open at both ends."""
    edges = np.quantile(data.z_train, np.linspace(0, 1, PDF_BINS + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def _labels(kind: str, data: Sdss17) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    if kind == "binary":
        return (
            np.where(data.y_train == "QSO", "QSO", "not_QSO"),
            np.where(data.y_calib == "QSO", "QSO", "not_QSO"),
        )
    if kind == "multiclass":
        return data.y_train, data.y_calib
    # PDF: redshift bins labelled by range.
    edges = _pdf_edges(data)
    labels = np.array([f"z{k:02d}" for k in range(PDF_BINS)])
    return (
        labels[np.clip(np.searchsorted(edges, data.z_train, side="right") - 1, 0, PDF_BINS - 1)],
        labels[np.clip(np.searchsorted(edges, data.z_calib, side="right") - 1, 0, PDF_BINS - 1)],
    )


def _estimator(family: str, kind: str) -> Any:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )

    if family == "hgb":
        return HistGradientBoostingClassifier(
            max_iter=20, max_depth=6, early_stopping=False, random_state=SEED
        )
    if family == "rf":
        # Ten-class leaves make ten times the code: fewer trees keep the PDF build short.
        trees = 10 if kind == "pdf" else 20
        return RandomForestClassifier(n_estimators=trees, max_depth=6, n_jobs=1, random_state=SEED)
    return ExtraTreesClassifier(n_estimators=20, max_depth=6, n_jobs=1, random_state=SEED)


CASES = (
    "hgb_binary",
    "hgb_multiclass",
    "rf_binary",
    "rf_multiclass",
    "et_binary",
    "et_multiclass",
    "rf_pdf",
)


@cache
def case(name: str) -> Case:
    """Fit, compile and calibrate one of :data:`CASES` (cached for the session)."""
    family, kind = name.split("_", 1)
    data = sdss17()
    y_train, y_calib = _labels(kind, data)
    with threadpool_limits(1):
        estimator = _estimator(family, kind).fit(data.x_train, y_train)
        calib_proba = estimator.predict_proba(data.x_calib)
    classes = tuple(str(c) for c in estimator.classes_)
    artifact = compile_estimator(estimator, n_features=N_FEATURES, parallel_comp=2)
    calibrations = {
        method: fit_calibration(method, calib_proba, y_calib, estimator.classes_)
        for method in ("identity", "temperature", "isotonic")
    }
    edges = tuple(float(e) for e in _pdf_edges(data)) if kind == "pdf" else None
    return Case(name, estimator, artifact, classes, calibrations, edges)
