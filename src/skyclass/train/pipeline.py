"""Train, evaluate and register a model version from a training snapshot.

:func:`train_model` cross-validates the candidate tree ensemble and every
baseline on the snapshot's folds (fold >= 0), fits the candidate on all
training folds, fits its calibration map on the calibration split (fold -1,
never trained on), computes permutation importance there, and then registers
everything in **one transaction at the end**: ``skyclass.model`` (created on
first use), ``training_run``, one ``evaluation`` per estimator with its
``metric`` and ``evaluation_curve`` rows, the immutable ``model_version``
(Treelite checkpoint + calibration map in the columns the C extension reads)
and ``feature_importance``. An error or an interrupt before that leaves
nothing registered.

Metrics are computed by :mod:`skyclass.train.metrics` (classification) and
:mod:`skyclass.train.photoz` (photo-z PDFs) on each fold and stored as mean ±
sample std with the per-fold values. Two stages: ``raw`` (the estimator's
probabilities) and ``calibrated``: the calibrated stage is *cross-fitted*
(:func:`~skyclass.train.calibration.crossfit_calibration`: fold k's
out-of-fold probabilities are calibrated by a map fitted on the other folds'
out-of-fold probabilities), so it is an honest K-fold estimate of
"estimator + calibration method". The map stored with the model version is
fitted once more, on the calibration split, with the final model; its log
loss before and after is recorded in ``training_run.settings``.

Curves (``evaluation_curve``) are computed from the pooled out-of-fold
predictions: ROC per class (one-vs-rest, at most 200 points), reliability
bins; for photo-z the PIT histogram, interval coverage at several levels and
a sample of at most 5000 (z_spec, z_phot) pairs (z_phot = PDF median).

Threads: every fit runs under ``threadpool_limits(n_jobs)`` (OpenMP and BLAS
pools) because HistGradientBoosting's OpenMP threads spin and, on a shared
machine, oversubscription made fits up to 100x slower.

Augmentation (``augment=N``): each training fold's rows get N noisy copies
drawn from the magnitude errors (:mod:`skyclass.train.augment`); test folds
and the calibration split are never augmented. The naming rule: a feature
``X`` is a magnitude with error feature ``magerr_X``, ``X_err`` or
``err_X`` (for ``mag_X`` also ``magerr_X``), all features of the same
feature set; a feature whose expression is ``a - b`` of two such magnitudes'
columns (a colour) is recomputed from the noisy magnitudes; any other feature
reading a perturbed column makes augmentation refuse, since its noisy value
cannot be derived. The candidate is also cross-validated without
augmentation; the paired per-fold effect is stored in the training run's
settings and as an extra evaluation ``<estimator> (no augmentation)``.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.metadata
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from skyclass.db.connect import connect
from skyclass.errors import DatabaseError, SkyclassError
from skyclass.train.augment import AugmentConfig, MetricEffect, augment_photometry
from skyclass.train.calibration import (
    CalibrationParams,
    crossfit_calibration,
    fit_calibration,
)
from skyclass.train.crossval import (
    CrossValResult,
    MeanStd,
    TrainData,
    align_proba,
    cross_validate,
    evaluate_folds,
    mean_std,
)
from skyclass.train.errors import TrainError
from skyclass.train.estimators import (
    BASELINES,
    ESTIMATORS,
    Classifier,
    EstimatorConfig,
    estimator_config,
)
from skyclass.train.importance import permutation_importance
from skyclass.train.metrics import (
    OVERALL_FIELDS,
    ClassificationMetrics,
    json_float,
    label_indices,
    reliability_bins,
    roc_auc,
)
from skyclass.train.photoz import (
    RedshiftGrid,
    pdf_cdf,
    pdf_from_proba,
    photoz_metrics,
    point_estimates,
)
from skyclass.train.snapshot import (
    FeatureSetInfo,
    Snapshot,
    SnapshotData,
    load_feature_set_info,
    load_snapshot,
    snapshot_data,
)
from skyclass.train.uncertainty import Uncertainty, fit_uncertainty, insert_uncertainty

CALIBRATIONS = ("temperature", "isotonic", "none")
ROC_POINTS = 200
ZSAMPLE_POINTS = 5000
COVERAGE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95)
PIT_BINS = 20
IMPORTANCE_REPEATS = 5
IMPORTANCE_MAX_ROWS = 10_000
ABLATION_METRICS = ("accuracy", "balanced_accuracy", "log_loss")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,62}")
COLOUR_CUT_CLASSES = ("STAR", "GALAXY", "QSO")
BANDS = ("u", "g", "r", "i", "z")

Log = Callable[[str], None]


# --------------------------------------------------------------------------- results


@dataclass
class Evaluation:
    """The cross-validation of one estimator in a training run, ready to be stored."""

    name: str
    role: str
    config: EstimatorConfig
    cv: CrossValResult
    fold_scalars: dict[str, list[list[float]]] = field(default_factory=dict)
    """stage -> per fold, values in the order of :attr:`metric_keys`"""
    metric_keys: dict[str, list[str]] = field(default_factory=dict)
    curves: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    confusion: dict[str, Any] | None = None

    def fold_values(self, stage: str = "raw") -> dict[str, list[float]]:
        """Per-fold values of every metric of ``stage``."""
        folds = self.fold_scalars.get(stage, [])
        return {k: [f[j] for f in folds] for j, k in enumerate(self.metric_keys.get(stage, []))}

    def summary(self, stage: str = "raw") -> dict[str, MeanStd]:
        """Mean ± std over folds of every metric of ``stage``."""
        keys = self.metric_keys.get(stage, [])
        folds = self.fold_scalars.get(stage, [])
        return {k: mean_std([f[j] for f in folds]) for j, k in enumerate(keys)}


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` registered."""

    model: str
    version: int
    model_version_id: int
    training_run_id: int
    snapshot_id: int
    evaluations: tuple[Evaluation, ...]
    notes: tuple[str, ...]
    seconds: float


# --------------------------------------------------------------------------- helpers


def check_model_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise TrainError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise TrainError(
            f"model name {name!r} is not allowed: use 1 to 63 characters a-z, 0-9 and _, "
            "starting with a letter"
        )
    return name


def clean_json(value: Any) -> Any:
    """``value`` with NaN/infinite floats as ``None`` and numpy scalars as Python ones."""
    if isinstance(value, Mapping):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _split_metric(key: str) -> tuple[str, str]:
    """``purity[STAR]`` -> (``purity``, ``STAR``); ``accuracy`` -> (``accuracy``, '')."""
    match = re.fullmatch(r"([a-z0-9_]+)\[(.*)\]", key, flags=re.DOTALL)
    return (match.group(1), match.group(2)) if match else (key, "")


def _downsample(n: int, limit: int) -> npt.NDArray[np.intp]:
    if n <= limit:
        return np.arange(n, dtype=np.intp)
    return np.unique(np.round(np.linspace(0, n - 1, limit)).astype(np.intp))


def _roc_points(positive: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> dict[str, Any]:
    """ROC curve of pooled scores: thresholds at every distinct score, at most ROC_POINTS."""
    order = np.argsort(-score, kind="mergesort")
    s, pos = score[order], positive[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tp = np.cumsum(pos)[last]
    fp = (last + 1) - tp
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    tpr = np.r_[0.0, tp / max(n_pos, 1)]
    fpr = np.r_[0.0, fp / max(n_neg, 1)]
    threshold = np.r_[math.inf, s[last]]
    keep = _downsample(tpr.size, ROC_POINTS)
    return {
        "fpr": np.round(fpr[keep], 6),
        "tpr": np.round(tpr[keep], 6),
        "threshold": np.round(threshold[keep], 6),
        "auc": roc_auc(positive, score),
        "n_positive": n_pos,
        "n_negative": n_neg,
    }


def _reliability(y_index: npt.NDArray[np.intp], proba: npt.NDArray[np.float64]) -> dict[str, Any]:
    bins = reliability_bins(y_index, proba)
    return {
        "edges": list(bins.edges),
        "count": list(bins.count),
        "confidence": list(bins.confidence),
        "accuracy": list(bins.accuracy),
        "ece": bins.ece,
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries a trained model depends on (recorded with the run)."""
    out = {"python": platform.python_version()}
    for dist in (
        "skyclass",
        "scikit-learn",
        "numpy",
        "scipy",
        "treelite",
        "tl2cgen",
        "astropy",
        "psycopg",
        "threadpoolctl",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def git_commit() -> str | None:
    """The commit of the skyclass source tree (``-dirty`` when modified), or None."""
    here = Path(__file__).resolve().parent
    # Read-only git calls; GIT_OPTIONAL_LOCKS=0 keeps `git status` from refreshing the index.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not re.fullmatch(r"[0-9a-f]{40,64}", head):
        return None
    return f"{head}-dirty" if dirty else head


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@contextlib.contextmanager
def _estimator_errors(what: str) -> Iterator[None]:
    """Report an estimator's own failure (e.g. a parameter it rejects at fit) as TrainError."""
    try:
        yield
    except SkyclassError:
        raise
    except (ValueError, TypeError, ArithmeticError, MemoryError) as exc:
        raise TrainError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- colour cut


def colour_cut_params(
    feature_names: Sequence[str], classes: Sequence[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """Parameters of the colour-cut baseline for these features, or why it cannot run.

    The bands are found by name: ``u`` or ``mag_u`` (and so on); the classes
    must include STAR, GALAXY and QSO.
    """
    names = set(feature_names)
    params: dict[str, Any] = {}
    for band in BANDS:
        found = next((n for n in (band, f"mag_{band}") if n in names), None)
        if found is None:
            return None, (
                "colour_cut skipped: the features do not include the ugriz magnitudes "
                "(named u..z or mag_u..mag_z)"
            )
        params[band] = found
    missing = [c for c in COLOUR_CUT_CLASSES if c not in classes]
    if missing:
        return None, f"colour_cut skipped: it predicts STAR/GALAXY/QSO, classes lack {missing}"
    return params, None


# --------------------------------------------------------------------------- augmentation


_ERROR_NAMES = ("magerr_{}", "{}_err", "err_{}")


def _column_name(tree: Any) -> str | None:
    """The column name when an expression tree is a bare column reference."""
    from skyclass.features.spec import Column

    return tree.name if isinstance(tree, Column) else None


def _difference(tree: Any) -> tuple[str, str] | None:
    """``(a, b)`` when an expression tree is ``a - b`` of two columns (a colour)."""
    from skyclass.features.spec import BinaryOp, Column

    if (
        isinstance(tree, BinaryOp)
        and tree.op == "-"
        and isinstance(tree.left, Column)
        and isinstance(tree.right, Column)
    ):
        return tree.left.name, tree.right.name
    return None


def _augmenter(
    feature_set: FeatureSetInfo,
    X: npt.NDArray[np.float32],
    y: npt.NDArray[Any],
    config: AugmentConfig,
) -> tuple[TrainData, dict[str, Any]]:
    """The ``train_data`` hook adding noisy copies, and a record of what it perturbs."""
    names = list(feature_set.feature_names)
    index = {n: j for j, n in enumerate(names)}
    pairs: list[tuple[int, int]] = []
    for name in names:
        candidates = [p.format(name) for p in _ERROR_NAMES]
        if name.startswith("mag_"):
            candidates.append(f"magerr_{name[4:]}")
        err = next((c for c in candidates if c in index and c != name), None)
        if err is not None:
            pairs.append((index[name], index[err]))
    if not pairs:
        raise TrainError(
            f"augmentation needs magnitude errors among the features of {feature_set.label}: "
            "name the error of feature X 'magerr_X', 'X_err' or 'err_X' (for 'mag_X' also "
            "'magerr_X')"
        )
    mag_cols = {j for j, _ in pairs}
    err_cols = {e for _, e in pairs}
    # The catalog column each magnitude feature is (when it is a bare column).
    column_of = {
        column: j for j in mag_cols if (column := _column_name(feature_set.trees.get(names[j])))
    }
    perturbed = {c for j in mag_cols for c in feature_set.sources.get(names[j], ())}
    colours: list[tuple[int, int, int]] = []
    for j, name in enumerate(names):
        if j in mag_cols or j in err_cols:
            continue
        sources = set(feature_set.sources.get(name, ()))
        if not sources & perturbed:
            continue
        tree = feature_set.trees.get(name)
        pair = _difference(tree)
        if pair is not None and pair[0] in column_of and pair[1] in column_of:
            colours.append((j, column_of[pair[0]], column_of[pair[1]]))
        elif not (name.endswith("_missing") and config.policy == "cap"):
            raise TrainError(
                f"augmentation cannot recompute feature {name!r} from noisy magnitudes: "
                "only magnitudes with error features and their differences (colours) are "
                "supported; drop it from the feature set or train "
                "without --augment"
            )
    mag_idx = np.asarray([j for j, _ in pairs], dtype=np.intp)
    err_idx = np.asarray([e for _, e in pairs], dtype=np.intp)

    def train_data(rows: npt.NDArray[np.intp]) -> tuple[Any, Any]:
        base = X[rows]
        mags, source = augment_photometry(
            base[:, mag_idx].astype(np.float64), base[:, err_idx].astype(np.float64), config
        )
        out = base[source].astype(np.float64)
        out[:, mag_idx] = mags
        for c, a, b in colours:
            out[:, c] = out[:, a] - out[:, b]
        result = out.astype(np.float32)
        result[: rows.size] = base  # the originals stay bit-identical
        return result, y[rows][source]

    record = {
        **config.to_dict(),
        "magnitudes": [names[j] for j, _ in pairs],
        "errors": [names[e] for _, e in pairs],
        "colours_recomputed": [names[c] for c, _, _ in colours],
    }
    return train_data, record


# --------------------------------------------------------------------------- evaluation


class _Task:
    """What differs between classification and photo-z: labels, metrics, curves."""

    def __init__(self, snapshot: Snapshot, data: SnapshotData, seed: int) -> None:
        self.snapshot = snapshot
        self.data = data
        self.seed = seed
        self.grid: RedshiftGrid | None = snapshot.grid
        self.used = data.fold >= 0
        if self.grid is None:
            classes = np.asarray(snapshot.classes, dtype=object)
            self.y: npt.NDArray[Any] = classes[data.label_index]
        else:
            self.y = data.label_index.astype(np.intp)

    @property
    def photoz(self) -> bool:
        return self.grid is not None

    def fold_metrics(
        self, cv: CrossValResult, folds: Sequence[ClassificationMetrics], proba: Any
    ) -> tuple[list[str], list[list[float]]]:
        """Metric names and per-fold values (photo-z adds the PDF metrics)."""
        keys: list[str] = []
        if not self.photoz:
            keys = list(folds[0].scalars())
            return keys, [[f.scalars()[k] for k in keys] for f in folds]
        assert self.grid is not None
        values: list[list[float]] = []
        fold = self.data.fold
        for position, k in enumerate(sorted(int(v) for v in np.unique(fold[self.used]))):
            rows = fold == k
            pdf = pdf_from_proba(proba[rows], cv.labels, self.grid)
            pz = photoz_metrics(self.data.z_true[rows], pdf, self.grid).scalars()
            overall = {n: float(getattr(folds[position], n)) for n in OVERALL_FIELDS}
            merged = {**pz, **overall}
            keys = list(merged)
            values.append([merged[n] for n in keys])
        return keys, values

    def curves(self, cv: CrossValResult, proba: Any, stage: str) -> list[tuple[str, str, str, Any]]:
        """Curve rows (name, class, stage, data) from pooled out-of-fold predictions."""
        used = self.used
        p = np.asarray(proba[used], dtype=np.float64)
        yi = label_indices(self.y[used], cv.labels)
        out: list[tuple[str, str, str, Any]] = [("reliability", "", stage, _reliability(yi, p))]
        if not self.photoz:
            for j, label in enumerate(cv.classes):
                out.append(("roc", label, stage, _roc_points(yi == j, p[:, j])))
            return out
        assert self.grid is not None
        z = self.data.z_true[used]
        pdf = pdf_from_proba(p, cv.labels, self.grid)
        pooled = photoz_metrics(z, pdf, self.grid, pit_bins=PIT_BINS)
        # CDF values can exceed 1 by rounding (1 + 4e-16), which np.histogram would
        # drop from the top bin; clipped, every object is counted.
        pit = np.clip(pdf_cdf(pdf, self.grid, z), 0.0, 1.0)
        out.append(
            (
                "pit_histogram",
                "",
                stage,
                {
                    "edges": np.linspace(0.0, 1.0, PIT_BINS + 1).round(6),
                    "count": np.histogram(pit, bins=PIT_BINS, range=(0.0, 1.0))[0],
                    "ks": pooled.pit_ks,
                },
            )
        )
        estimates = point_estimates(pdf, self.grid, COVERAGE_LEVELS)
        coverage = [
            float(np.mean((z >= lo) & (z <= hi))) for lo, hi in estimates.intervals.values()
        ]
        out.append(
            ("coverage", "", stage, {"nominal": list(COVERAGE_LEVELS), "observed": coverage})
        )
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(z.size, size=min(z.size, ZSAMPLE_POINTS), replace=False))
        out.append(
            (
                "zphot_zspec",
                "",
                stage,
                {
                    "point": "median",
                    "object_id": self.data.object_id[used][pick],
                    "z_spec": np.round(z[pick], 5),
                    "z_phot": np.round(estimates.median[pick], 5),
                    "n_total": int(z.size),
                },
            )
        )
        return out


def _evaluate(
    task: _Task,
    name: str,
    role: str,
    config: EstimatorConfig,
    X: npt.NDArray[np.float32],
    feature_names: Sequence[str],
    calibration: str,
    *,
    n_jobs: int,
    progress: bool,
    train_data: TrainData | None = None,
) -> Evaluation:
    """Cross-validate one estimator on the snapshot's folds and compute both stages."""
    with _estimator_errors(f"cross-validation of {name}"):
        cv = cross_validate(
            config,
            X,
            task.y,
            feature_names=feature_names,
            folds=task.data.fold,
            n_jobs=n_jobs,
            progress=progress,
            train_data=train_data,
        )
    evaluation = Evaluation(name=name, role=role, config=config, cv=cv)
    keys, values = task.fold_metrics(cv, cv.folds, cv.oof_proba)
    evaluation.metric_keys["raw"], evaluation.fold_scalars["raw"] = keys, values
    evaluation.curves.extend(task.curves(cv, cv.oof_proba, "raw"))
    matrix = np.sum([np.asarray(f.confusion) for f in cv.folds], axis=0)
    evaluation.confusion = {
        "classes": list(cv.classes),
        "rows": "true class",
        "columns": "predicted class",
        "matrix": matrix,
        "per_fold": [[list(r) for r in f.confusion] for f in cv.folds],
    }
    if calibration != "none":
        used = task.used
        calibrated = np.full_like(cv.oof_proba, np.nan)
        with _estimator_errors(f"{calibration} calibration of {name}"):
            calibrated[used] = crossfit_calibration(
                calibration, cv.oof_proba[used], task.y[used], task.data.fold[used], cv.labels
            )
        folds, _ = evaluate_folds(task.y[used], calibrated[used], task.data.fold[used], cv.labels)
        keys, values = task.fold_metrics(cv, folds, calibrated)
        evaluation.metric_keys["calibrated"] = keys
        evaluation.fold_scalars["calibrated"] = values
        evaluation.curves.extend(task.curves(cv, calibrated, "calibrated"))
    return evaluation


def _effect(with_aug: Evaluation, without: Evaluation) -> dict[str, Any]:
    """Paired per-fold effect of augmentation on every overall metric (raw stage)."""
    out: dict[str, Any] = {}
    keys = with_aug.metric_keys["raw"]
    for j, key in enumerate(keys):
        if "[" in key:
            continue
        a = [f[j] for f in with_aug.fold_scalars["raw"]]
        b = [f[j] for f in without.fold_scalars["raw"]]
        diff = [x - y for x, y in zip(a, b, strict=True)]
        out[key] = MetricEffect(mean_std(b), mean_std(a), mean_std(diff), tuple(diff)).to_dict()
    return out


# --------------------------------------------------------------------------- training


def _resolve_snapshot(conn: psycopg.Connection[Any], snapshot: int | Snapshot) -> Snapshot:
    if isinstance(snapshot, Snapshot):
        return snapshot
    if isinstance(snapshot, bool) or not isinstance(snapshot, int):
        raise TrainError(f"snapshot must be a snapshot id or a Snapshot, not {snapshot!r}")
    return load_snapshot(conn, snapshot)


def _check_model_task(conn: psycopg.Connection[Any], name: str, task: str) -> None:
    row = conn.execute("SELECT task FROM skyclass.model WHERE name = %s", (name,)).fetchone()
    if row is not None and row[0] != task:
        raise TrainError(
            f"model {name!r} is a {row[0]} model; a {task} snapshot cannot give it a new "
            "version (choose another model name)"
        )


def train_model(
    model_name: str,
    snapshot: int | Snapshot,
    *,
    estimator: str = "hist_gradient_boosting",
    params: Mapping[str, Any] | None = None,
    baselines: Sequence[str] = BASELINES,
    calibration: str = "temperature",
    augment: int | AugmentConfig | None = None,
    importance: bool = True,
    ablate: bool = False,
    seed: int | None = None,
    description: str | None = None,
    n_jobs: int = 1,
    url: str | None = None,
    progress: bool = False,
    log: Log | None = None,
) -> TrainResult:
    """Cross-validate, fit, calibrate and register a new version of model ``model_name``.

    ``snapshot`` is a snapshot id (see :func:`skyclass.train.snapshot.create_snapshot`).
    The candidate ``estimator`` (a tree ensemble of the registry, with
    ``params``; seed default: the snapshot's) and each of ``baselines`` are
    cross-validated on the snapshot's folds; ``colour_cut`` is skipped with a
    note when the features lack ugriz magnitudes or the classes lack
    STAR/GALAXY/QSO. ``calibration`` (``temperature``, ``isotonic`` or
    ``none``) is fitted on the calibration split; ``augment`` adds that many
    noisy copies per training row (see the module docs); ``importance``
    computes permutation importance on the calibration split (at most
    10,000 random rows of it, 5 repeats, increase of log loss); ``ablate``
    also retrains without each feature group. ``n_jobs`` caps the threads.
    Everything is registered in one transaction at the end; returns a
    :class:`TrainResult`.
    """
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    say: Log = log or (lambda _message: None)
    check_model_name(model_name)
    if estimator not in ESTIMATORS:
        estimator_config(estimator)  # raises, listing the available estimators
    if not ESTIMATORS[estimator].treelite:
        trees = [n for n, s in ESTIMATORS.items() if s.treelite]
        raise TrainError(
            f"{estimator!r} cannot be registered as a model version: only tree ensembles "
            f"compile for in-database scoring ({', '.join(trees)}); baselines are "
            "evaluated next to them automatically"
        )
    if calibration not in CALIBRATIONS:
        raise TrainError(
            f"calibration must be one of {', '.join(CALIBRATIONS)}, not {calibration!r}"
        )
    baseline_names = list(dict.fromkeys(baselines))
    for name in baseline_names:
        if name not in ESTIMATORS or name == estimator:
            raise TrainError(
                f"baseline {name!r} is not a registered estimator other than the candidate "
                f"(available: {', '.join(ESTIMATORS)})"
            )
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise TrainError(f"n_jobs must be an integer >= 1, not {n_jobs!r}")

    with connect(url) as conn:
        snap = _resolve_snapshot(conn, snapshot)
        _check_model_task(conn, model_name, snap.task)
        feature_set = load_feature_set_info(conn, snap.feature_set_id)
        say(f"snapshot {snap.snapshot_id}: {snap.n_rows} rows, feature set {feature_set.label}")
        data = snapshot_data(conn, snap)
    seed = snap.seed if seed is None else seed
    candidate = estimator_config(estimator, params, seed=seed)
    names = list(feature_set.feature_names)
    if data.X.shape[1] != len(names):
        raise TrainError(
            f"snapshot {snap.snapshot_id} has {data.X.shape[1]} features, its feature set "
            f"{len(names)}"
        )
    task = _Task(snap, data, seed)
    calibration_rows = data.fold == -1
    if calibration != "none" and not calibration_rows.any():
        raise TrainError(
            f"snapshot {snap.snapshot_id} has no calibration split (calibration_fraction 0): "
            "use calibration='none' or a snapshot with a calibration split"
        )
    notes: list[str] = []
    configs: list[tuple[str, str, EstimatorConfig]] = []
    for name in baseline_names:
        p: Mapping[str, Any] | None = None
        if name == "colour_cut":
            if task.photoz:
                notes.append("colour_cut skipped: it is a star/galaxy/QSO classifier")
                continue
            p, why = colour_cut_params(names, snap.classes)
            if p is None:
                notes.append(str(why))
                continue
        configs.append((name, "baseline", estimator_config(name, p, seed=seed)))
    augment_config: AugmentConfig | None = None
    if isinstance(augment, AugmentConfig):
        augment_config = augment
    elif augment:
        augment_config = AugmentConfig(int(augment), seed=seed)
    train_data: TrainData | None = None
    settings: dict[str, Any] = {
        "estimator": candidate.to_dict(),
        "baselines": [c.to_dict() for _, _, c in configs],
        "calibration": calibration,
        "calibration_stage": (
            "metrics stage 'calibrated' are cross-fitted on out-of-fold probabilities; "
            "the registered map is fitted on the calibration split (fold -1)"
        ),
        "seed": seed,
        "n_jobs": n_jobs,
        "importance": importance,
        "ablate": ablate,
        "feature_set": feature_set.label,
        "feature_names": names,
        "fold_sizes": [int((data.fold == k).sum()) for k in range(snap.n_folds)],
        "calibration_size": int(calibration_rows.sum()),
    }

    evaluations: list[Evaluation] = []
    with threadpool_limits(limits=n_jobs):
        if augment_config is not None and augment_config.n_copies > 0:
            train_data, record = _augmenter(feature_set, data.X, task.y, augment_config)
            settings["augment"] = record
        for name, role, config in configs:
            say(f"cross-validating baseline {name}")
            evaluations.append(
                _evaluate(
                    task,
                    name,
                    role,
                    config,
                    data.X,
                    names,
                    calibration,
                    n_jobs=n_jobs,
                    progress=progress,
                )
            )
        say(f"cross-validating candidate {estimator}")
        cand = _evaluate(
            task,
            estimator,
            "candidate",
            candidate,
            data.X,
            names,
            calibration,
            n_jobs=n_jobs,
            progress=progress,
            train_data=train_data,
        )
        evaluations.append(cand)
        plain: Evaluation | None = None
        if train_data is not None:
            say(f"cross-validating {estimator} without augmentation (the effect)")
            plain = _evaluate(
                task,
                f"{estimator} (no augmentation)",
                "baseline",
                candidate,
                data.X,
                names,
                calibration,
                n_jobs=n_jobs,
                progress=progress,
            )
            evaluations.append(plain)
            settings["augment"]["effect"] = _effect(cand, plain)

        say(f"fitting {estimator} on all {int(task.used.sum())} training rows")
        rows = np.flatnonzero(task.used)
        X_fit, y_fit = (data.X[rows], task.y[rows]) if train_data is None else train_data(rows)
        model: Classifier = candidate.build(names, n_jobs=n_jobs)
        fit_clock = time.perf_counter()
        with _estimator_errors(f"the final fit of {estimator}"):
            model.fit(np.asarray(X_fit, dtype=np.float32), np.asarray(y_fit))
        settings["final_fit_seconds"] = time.perf_counter() - fit_clock
        model_classes = np.asarray(model.classes_)
        if task.photoz:
            if model_classes.tolist() != list(range(len(snap.classes))):
                raise TrainError("the final model did not see every redshift bin")
            version_classes = list(snap.classes)
        else:
            version_classes = [str(c) for c in model_classes.tolist()]
        cal_params: CalibrationParams | None = None
        X_cal, y_cal = data.X[calibration_rows], task.y[calibration_rows]
        if calibration != "none":
            proba_cal = align_proba(model.predict_proba(X_cal), model_classes, model_classes)
            with _estimator_errors(f"{calibration} calibration"):
                cal_params = fit_calibration(calibration, proba_cal, y_cal, model_classes)
            settings["calibration_fit"] = cal_params.to_dict()
        uncertainty: Uncertainty | None = None
        if calibration_rows.any():
            say("uncertainty per OOD bin on the calibration split")
            uncertainty = _uncertainty(task, model, model_classes, cal_params, seed, names)
            settings["uncertainty"] = uncertainty.record
        else:
            notes.append("uncertainty per OOD bin skipped: the snapshot has no calibration split")
        importances = []
        if importance and calibration_rows.any():
            say("permutation importance on the calibration split")
            # Each repeat re-predicts the rows; HistGradientBoosting predicts about
            # 40k rows/s per thread, so a random subset bounds the cost.
            pick = np.arange(y_cal.size)
            if pick.size > IMPORTANCE_MAX_ROWS:
                pick = np.sort(
                    np.random.default_rng(seed).choice(pick, IMPORTANCE_MAX_ROWS, replace=False)
                )
            settings["importance_rows"] = int(pick.size)
            importances = permutation_importance(
                model,
                X_cal[pick],
                y_cal[pick],
                names,
                metric="log_loss",
                n_repeats=IMPORTANCE_REPEATS,
                seed=seed,
            )
        elif importance:
            notes.append("importance skipped: the snapshot has no calibration split")
        ablations: list[GroupDelta] = []
        if ablate:
            # The ablated models are trained without augmentation: compare with the
            # un-augmented cross-validation of the candidate.
            full = (cand if plain is None else plain).fold_values("raw")
            ablations = _ablations(
                task,
                candidate,
                data.X,
                names,
                feature_set,
                n_jobs=n_jobs,
                say=say,
                progress=progress,
                full=full,
            )

    from skyclass.compile.checkpoint import treelite_checkpoint
    from skyclass.compile.store import calibration_columns

    checkpoint = treelite_checkpoint(model, n_features=len(names))
    columns = calibration_columns(cal_params, len(version_classes))
    settings["notes"] = notes
    say("registering")
    try:
        with connect(url) as conn, conn.transaction():
            model_id = _model_row(conn, model_name, snap.task, description)
            run_id = insert_training_run(conn, model_id, snap.snapshot_id, settings, started_at)
            eval_ids = {ev.name: _insert_evaluation(conn, run_id, ev) for ev in evaluations}
            version, version_id = _insert_version(
                conn,
                model_id=model_id,
                run_id=run_id,
                evaluation_id=eval_ids[estimator],
                snapshot=snap,
                config=candidate,
                n_features=len(names),
                classes=version_classes,
                checkpoint=checkpoint,
                calibration=columns,
            )
            if uncertainty is not None:
                insert_uncertainty(conn, version_id, uncertainty)
            if importances:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO skyclass.feature_importance (evaluation_id, feature, "
                        "method, mean, std) VALUES (%s, %s, 'permutation', %s, %s)",
                        [(eval_ids[estimator], f.feature, f.mean, f.std) for f in importances],
                    )
            if ablations:
                insert_ablations(conn, run_id, estimator, ablations)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"registering model {model_name!r} failed ({type(exc).__name__}: {exc}); "
            "nothing was registered"
        ) from exc
    return TrainResult(
        model=model_name,
        version=version,
        model_version_id=version_id,
        training_run_id=run_id,
        snapshot_id=snap.snapshot_id,
        evaluations=tuple(evaluations),
        notes=tuple(notes),
        seconds=time.perf_counter() - clock,
    )


def _uncertainty(
    task: _Task,
    model: Classifier,
    model_classes: npt.NDArray[Any],
    cal_params: CalibrationParams | None,
    seed: int,
    names: Sequence[str],
) -> Uncertainty:
    """Per-OOD-bin intervals or temperatures of the final model on the calibration split."""
    data = task.data
    cal = data.fold == -1
    proba = align_proba(model.predict_proba(data.X[cal]), model_classes, model_classes)
    index = {c: i for i, c in enumerate(model_classes.tolist())}
    y_cal = np.asarray([index.get(v, -1) for v in task.y[cal].tolist()], dtype=np.intp)
    with _estimator_errors("the uncertainty per OOD bin"):
        return fit_uncertainty(
            data.X[task.used],
            data.X[cal],
            y_cal,
            proba,
            tuple(names),
            calibration=cal_params,
            grid=task.grid,
            z_cal=data.z_true[cal] if task.grid is not None else None,
            seed=seed,
        )


# --------------------------------------------------------------------------- ablation


@dataclass(frozen=True)
class GroupDelta:
    """One metric's paired per-fold change when a feature group is dropped (ablated - full)."""

    group: str
    dropped: tuple[str, ...]
    metric: str
    fold_deltas: tuple[float, ...]
    full: MeanStd
    ablated: MeanStd

    @property
    def delta(self) -> MeanStd:
        """Mean ± sample std of the per-fold deltas."""
        return mean_std(self.fold_deltas)

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON form."""
        out: dict[str, Any] = clean_json(
            {
                "group": self.group,
                "dropped": list(self.dropped),
                "metric": self.metric,
                "delta": self.delta.to_dict(),
                "fold_deltas": list(self.fold_deltas),
                "full": self.full.to_dict(),
                "ablated": self.ablated.to_dict(),
            }
        )
        return out


def _ablations(
    task: _Task,
    config: EstimatorConfig,
    X: npt.NDArray[np.float32],
    names: Sequence[str],
    feature_set: FeatureSetInfo,
    *,
    n_jobs: int,
    say: Log,
    progress: bool = False,
    full: Mapping[str, Sequence[float]] | None = None,
) -> list[GroupDelta]:
    """Cross-validate without each feature group on the same folds; paired per-fold deltas.

    This is :func:`skyclass.train.importance.group_ablation`'s method, done here
    on :func:`_evaluate` because the registry stores the per-fold deltas and,
    for photo-z, the PDF metrics too. ``full`` (metric -> per-fold values)
    reuses an existing un-augmented cross-validation of the same configuration
    on the same folds.
    """
    usable = {g: list(m) for g, m in feature_set.groups.items() if set(m) < set(names)}
    if not usable:
        raise TrainError(
            f"feature set {feature_set.label} has no feature groups to ablate (give its "
            "features groups in the spec, at least two)"
        )
    metrics = list(ABLATION_METRICS)
    if task.photoz:
        metrics += ["sigma_nmad", "outlier_fraction", "crps_mean"]
    if full is None or any(m not in full for m in metrics):
        say(f"ablation: cross-validating {config.name} with every feature")
        full = _evaluate(
            task,
            config.name,
            "candidate",
            config,
            X,
            names,
            "none",
            n_jobs=n_jobs,
            progress=progress,
        ).fold_values("raw")
    out = []
    for group, members in usable.items():
        say(f"ablation: cross-validating {config.name} without group {group!r}")
        keep = [j for j, n in enumerate(names) if n not in set(members)]
        ablated = _evaluate(
            task,
            config.name,
            "candidate",
            config,
            np.ascontiguousarray(X[:, keep]),
            [names[j] for j in keep],
            "none",
            n_jobs=n_jobs,
            progress=progress,
        )
        keys = ablated.metric_keys["raw"]
        for metric in metrics:
            a = [f[keys.index(metric)] for f in ablated.fold_scalars["raw"]]
            b = [float(v) for v in full[metric]]
            out.append(
                GroupDelta(
                    group=group,
                    dropped=tuple(members),
                    metric=metric,
                    fold_deltas=tuple(x - y for x, y in zip(a, b, strict=True)),
                    full=mean_std(b),
                    ablated=mean_std(a),
                )
            )
    return out


def insert_ablations(
    conn: psycopg.Connection[Any], run_id: int, estimator: str, deltas: Sequence[GroupDelta]
) -> None:
    """Store group-ablation rows (one per group and metric; a re-run replaces them)."""
    rows = []
    for d in deltas:
        summary = d.delta
        rows.append(
            (
                run_id,
                estimator,
                d.group,
                list(d.dropped),
                d.metric,
                summary.mean,
                summary.std if math.isfinite(summary.std) else 0.0,
                [json_float(v) for v in d.fold_deltas],
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO skyclass.ablation (training_run_id, estimator, dropped_group, "
            "dropped_features, metric, delta_mean, delta_std, fold_deltas) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (training_run_id, estimator, dropped_group, metric) DO UPDATE SET "
            "dropped_features = EXCLUDED.dropped_features, delta_mean = EXCLUDED.delta_mean, "
            "delta_std = EXCLUDED.delta_std, fold_deltas = EXCLUDED.fold_deltas",
            rows,
        )


def ablate_model(
    model_version: str | int,
    *,
    n_jobs: int = 1,
    url: str | None = None,
    progress: bool = False,
    log: Log | None = None,
) -> list[dict[str, Any]]:
    """Retrain a registered version's estimator without each feature group, on its snapshot.

    ``model_version`` is ``MODEL[:VERSION]`` (newest version by default) or a
    ``model_version_id``. The estimator, parameters and seed of the version's
    evaluation are reused on the same folds, so the deltas (ablated minus
    full, paired over folds) isolate the feature group. Rows go to
    ``skyclass.ablation`` under the version's training run (replacing an
    earlier ablation of it); returns them as dictionaries.
    """
    from skyclass.registry.models import resolve_version

    say: Log = log or (lambda _message: None)
    with connect(url) as conn:
        ref = resolve_version(conn, model_version)
        snap = load_snapshot(conn, ref.snapshot_id)
        feature_set = load_feature_set_info(conn, snap.feature_set_id)
        row = conn.execute(
            "SELECT e.seed, r.settings ? 'augment' FROM skyclass.evaluation e "
            "JOIN skyclass.training_run r USING (training_run_id) WHERE e.evaluation_id = %s",
            (ref.evaluation_id,),
        ).fetchone()
        # The version's own cross-validation is the "full" side of every delta,
        # unless it was trained on augmented rows (ablation retrains without).
        full: dict[str, list[float]] | None = None
        if row is not None and not row[1]:
            full = {
                name: [math.nan if v is None else float(v) for v in values]
                for name, values in conn.execute(
                    "SELECT name, fold_values FROM skyclass.metric WHERE evaluation_id = %s "
                    "AND stage = 'raw' AND class_name = ''",
                    (ref.evaluation_id,),
                )
            }
        data = snapshot_data(conn, snap)
    seed = int(row[0]) if row and row[0] is not None else snap.seed
    config = estimator_config(ref.estimator, ref.params, seed=seed)
    task = _Task(snap, data, seed)
    with threadpool_limits(limits=n_jobs):
        results = _ablations(
            task,
            config,
            data.X,
            list(feature_set.feature_names),
            feature_set,
            n_jobs=n_jobs,
            say=say,
            progress=progress,
            full=full,
        )
    with connect(url) as conn, conn.transaction():
        insert_ablations(conn, ref.training_run_id, ref.estimator, results)
    return [r.to_dict() for r in results]


# --------------------------------------------------------------------------- registration


def _model_row(conn: psycopg.Connection[Any], name: str, task: str, description: str | None) -> int:
    conn.execute(
        "INSERT INTO skyclass.model (name, task, description) VALUES (%s, %s, %s) "
        "ON CONFLICT (name) DO NOTHING",
        (name, task, description),
    )
    # Locking the model row serialises concurrent trainings of one model, so
    # version numbers are assigned without gaps or clashes.
    row = conn.execute(
        "SELECT model_id, task FROM skyclass.model WHERE name = %s FOR UPDATE", (name,)
    ).fetchone()
    assert row is not None
    if row[1] != task:
        raise TrainError(
            f"model {name!r} is a {row[1]} model; a {task} snapshot cannot give it a new version"
        )
    return int(row[0])


def insert_training_run(
    conn: psycopg.Connection[Any],
    model_id: int,
    snapshot_id: int,
    settings: Mapping[str, Any],
    started_at: datetime,
) -> int:
    """Insert a ``skyclass.training_run`` row (library versions, git commit, OS user); its id."""
    row = conn.execute(
        "INSERT INTO skyclass.training_run (model_id, snapshot_id, settings, library_versions, "
        "git_commit, os_user, started_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "RETURNING training_run_id",
        (
            model_id,
            snapshot_id,
            Jsonb(clean_json(settings)),
            Jsonb(library_versions()),
            git_commit(),
            _os_user(),
            started_at,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _insert_evaluation(conn: psycopg.Connection[Any], run_id: int, ev: Evaluation) -> int:
    row = conn.execute(
        "INSERT INTO skyclass.evaluation (training_run_id, estimator, role, params, seed, "
        "fit_seconds, confusion) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING evaluation_id",
        (
            run_id,
            ev.name,
            ev.role,
            Jsonb(clean_json(ev.config.to_dict())),
            ev.config.seed,
            float(sum(ev.cv.fit_seconds)),
            Jsonb(clean_json(ev.confusion)) if ev.confusion is not None else None,
        ),
    ).fetchone()
    assert row is not None
    evaluation_id = int(row[0])
    metric_rows = []
    for stage, keys in ev.metric_keys.items():
        folds = ev.fold_scalars[stage]
        for j, key in enumerate(keys):
            values = [f[j] for f in folds]
            summary = mean_std(values)
            name, class_name = _split_metric(key)
            metric_rows.append(
                (
                    evaluation_id,
                    name,
                    class_name,
                    stage,
                    json_float(summary.mean),
                    json_float(summary.std),
                    [json_float(v) for v in values],
                    Jsonb({"n_folds_defined": summary.n}),
                )
            )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO skyclass.metric (evaluation_id, name, class_name, stage, mean, std, "
            "fold_values, extra) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            metric_rows,
        )
        cur.executemany(
            "INSERT INTO skyclass.evaluation_curve (evaluation_id, name, class_name, stage, data) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(evaluation_id, n, c, s, Jsonb(clean_json(d))) for n, c, s, d in ev.curves],
        )
    return evaluation_id


def _insert_version(
    conn: psycopg.Connection[Any],
    *,
    model_id: int,
    run_id: int,
    evaluation_id: int,
    snapshot: Snapshot,
    config: EstimatorConfig,
    n_features: int,
    classes: Sequence[str],
    checkpoint: bytes,
    calibration: Any,
) -> tuple[int, int]:
    row = conn.execute(
        "INSERT INTO skyclass.model_version (model_id, version, training_run_id, evaluation_id, "
        "snapshot_id, feature_set_id, task, estimator, params, n_features, classes, bin_edges, "
        "checkpoint, calibration_kind, calibration_params, calibration_offsets, calibration_eps) "
        "SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
        "%s, %s, %s, %s FROM skyclass.model_version WHERE model_id = %s "
        "RETURNING version, model_version_id",
        (
            model_id,
            run_id,
            evaluation_id,
            snapshot.snapshot_id,
            snapshot.feature_set_id,
            snapshot.task,
            config.name,
            Jsonb(clean_json(dict(config.params))),
            n_features,
            list(classes),
            list(snapshot.bin_edges) if snapshot.bin_edges is not None else None,
            checkpoint,
            calibration.kind,
            list(calibration.params),
            list(calibration.offsets),
            calibration.eps,
            model_id,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
