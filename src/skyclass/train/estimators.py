"""Named estimator factories with declared, recorded parameters and seeds.

Every model skyclass trains comes from this registry, so that a model version
can say exactly what it is: the estimator name, every parameter (defaults
resolved) and the seed. Three baselines are always available next to the real
models, as the honest-science guidelines ask: ``dummy`` (the class prior),
``colour_cut`` (a historical colour-cut classifier) and ``logistic`` (linear).
The tree ensembles ``hist_gradient_boosting``, ``random_forest`` and
``extra_trees`` are the ones Treelite can compile; all three accept NaN
features natively in scikit-learn >= 1.6 (random forests since 1.4, extra trees
since 1.6, histogram gradient boosting always), so missing photometry needs no
imputation. Features are float32: scikit-learn's trees compare float32 values,
which is what the in-database scorer reproduces. Photo-z PDF models are the same
tree classifiers trained on redshift-bin labels (see :mod:`skyclass.train.photoz`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted

from skyclass.train.errors import TrainError

ParamValue = bool | int | float | str | None
"""A JSON scalar: the only kind of value an estimator parameter may take."""


class Classifier(Protocol):
    """What the training core needs from a classifier (any scikit-learn classifier)."""

    classes_: Any

    def fit(self, X: Any, y: Any) -> Any: ...

    def predict(self, X: Any) -> Any: ...

    def predict_proba(self, X: Any) -> Any: ...


def as_features(X: Any) -> npt.NDArray[np.float32]:
    """Return ``X`` as a C-contiguous 2-D float32 array, the feature type of every model.

    Features are stored as PostgreSQL ``real`` and scikit-learn's trees compare
    float32 values, so training on float32 keeps the in-database scorer
    bit-compatible with ``predict_proba``. NaN (missing) values are kept.
    """
    array = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    if array.ndim != 2:
        raise TrainError(f"features must be a 2-D array (rows x features), not {array.ndim}-D")
    return array


# --------------------------------------------------------------------------- colour cut


def stellar_locus_g_r(r_i: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The g-r colour of the main-sequence stellar locus at a given r-i (Juric et al. 2008, eq. 1).

    ``g-r = 1.39 (1 - exp(-4.9 x^3 - 2.45 x^2 - 1.68 x - 0.050))`` with ``x = r-i``;
    ``x`` is clipped to [-0.2, 2.0] (the locus is fitted for roughly 0.1 < r-i < 1.8
    and the cubic overflows for very blue or very red values).
    """
    x = np.clip(r_i, -0.2, 2.0)
    return np.asarray(1.39 * (1.0 - np.exp(-4.9 * x**3 - 2.45 * x**2 - 1.68 * x - 0.050)))


class ColourCutClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A historical colour-cut star/galaxy/QSO classifier on SDSS ugriz magnitudes.

    The rules, applied in order to each object: (1) *UV excess*: ``u-g <
    qso_max_u_g`` and ``g-r < qso_max_g_r`` gives QSO (the classic UVX selection
    of low-redshift quasars, Schmidt & Green 1983, Richards et al. 2002); (2)
    *stellar locus*: ``|g-r - locus(r-i)| < star_locus_width`` gives STAR, with
    the locus of :func:`stellar_locus_g_r`; (3) everything else is GALAXY; an
    object with a missing (NaN) band falls in a fourth "undetermined" cell that
    predicts the most frequent training class. The rules have no fitted
    parameters; ``fit`` only validates and learns, for each of the four cells,
    the class frequencies of the training objects that fall in it (with
    ``smoothing`` pseudo-counts), which ``predict_proba`` returns so that log
    loss and calibration are defined. ``predict`` returns the rule's label. The
    band columns are found by name: pass ``feature_names`` (or fit on a
    DataFrame) and name the u, g, r, i, z columns with the parameters of the
    same names. This baseline uses model magnitudes only (no PSF-minus-model
    morphology), so it is deliberately modest: about 0.72 accuracy on SDSS17.
    """

    def __init__(
        self,
        *,
        feature_names: Sequence[str] | None = None,
        u: str = "u",
        g: str = "g",
        r: str = "r",
        i: str = "i",
        z: str = "z",
        star_label: str = "STAR",
        galaxy_label: str = "GALAXY",
        qso_label: str = "QSO",
        qso_max_u_g: float = 0.6,
        qso_max_g_r: float = 0.6,
        star_locus_width: float = 0.1,
        smoothing: float = 1.0,
    ) -> None:
        self.feature_names = feature_names
        self.u = u
        self.g = g
        self.r = r
        self.i = i
        self.z = z
        self.star_label = star_label
        self.galaxy_label = galaxy_label
        self.qso_label = qso_label
        self.qso_max_u_g = qso_max_u_g
        self.qso_max_g_r = qso_max_g_r
        self.star_locus_width = star_locus_width
        self.smoothing = smoothing

    def _names_of(self, X: Any) -> list[str]:
        columns = getattr(X, "columns", None)
        if columns is not None:
            return [str(c) for c in columns]
        if self.feature_names is None:
            raise TrainError(
                "colour_cut needs the feature names to find the u, g, r, i, z columns: "
                "pass feature_names=[...] or fit on a DataFrame"
            )
        return [str(n) for n in self.feature_names]

    def fit(self, X: Any, y: Any) -> ColourCutClassifier:
        """Validate the inputs and learn the class frequencies of each colour-cut cell."""
        names = self._names_of(X)
        array = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        if array.shape[1] != len(names):
            raise TrainError(f"X has {array.shape[1]} columns but {len(names)} feature names")
        bands = {"u": self.u, "g": self.g, "r": self.r, "i": self.i, "z": self.z}
        missing = [f"{band}={col!r}" for band, col in bands.items() if col not in names]
        if missing:
            raise TrainError(
                f"colour_cut: band column(s) {', '.join(missing)} not among the features "
                f"{names}; name them with the u/g/r/i/z parameters"
            )
        if not (self.smoothing >= 0 and self.star_locus_width > 0):
            raise TrainError("colour_cut: smoothing must be >= 0 and star_locus_width > 0")
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != array.shape[0]:
            raise TrainError(f"y must be 1-D with {array.shape[0]} labels, not {labels.shape}")
        classes = np.unique(labels)
        rule_labels = [self.qso_label, self.star_label, self.galaxy_label]
        absent = [lab for lab in rule_labels if lab not in set(classes.tolist())]
        if absent:
            raise TrainError(
                f"colour_cut: label(s) {absent} do not occur in y (classes {classes.tolist()}); "
                "set star_label/galaxy_label/qso_label to the class names used"
            )
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = array.shape[1]
        self.band_index_ = np.asarray([names.index(c) for c in bands.values()], dtype=np.intp)
        self.classes_ = classes
        cells = self._cells(array)
        y_index = np.searchsorted(classes, labels)
        counts = np.zeros((4, classes.size), dtype=np.float64)
        np.add.at(counts, (cells, y_index), 1.0)
        self.cell_counts_ = counts
        pseudo = counts + float(self.smoothing)
        totals = pseudo.sum(axis=1, keepdims=True)
        prior = np.bincount(y_index, minlength=classes.size) / labels.size
        # A cell with no training objects and no smoothing falls back to the prior.
        self.cell_proba_ = np.where(totals > 0, pseudo / np.where(totals > 0, totals, 1.0), prior)
        majority = classes[int(np.argmax(prior))]
        self.cell_label_ = np.asarray([*rule_labels, majority], dtype=classes.dtype)
        return self

    def _cells(self, array: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """Cell of each row: 0 UV excess (QSO), 1 stellar locus (STAR), 2 rest, 3 NaN band."""
        idx = self.band_index_
        u, g, r, i = (array[:, idx[k]] for k in range(4))
        u_g, g_r, r_i = u - g, g - r, r - i
        with np.errstate(invalid="ignore"):
            qso = (u_g < self.qso_max_u_g) & (g_r < self.qso_max_g_r)
            star = np.abs(g_r - stellar_locus_g_r(r_i)) < self.star_locus_width
        cells = np.where(qso, 0, np.where(star, 1, 2))
        undetermined = ~np.isfinite(array[:, idx]).all(axis=1)
        return np.asarray(np.where(undetermined, 3, cells), dtype=np.intp)

    def _check(self, X: Any) -> npt.NDArray[np.float64]:
        check_is_fitted(self, "cell_proba_")
        columns = getattr(X, "columns", None)
        if columns is not None and [str(c) for c in columns] != list(self.feature_names_in_):
            raise TrainError(
                f"feature names {list(columns)} differ from those seen in fit "
                f"{list(self.feature_names_in_)}"
            )
        array = check_array(X, dtype=np.float64, ensure_all_finite="allow-nan")
        if array.shape[1] != self.n_features_in_:
            raise TrainError(
                f"X has {array.shape[1]} features, expected {self.n_features_in_} as in fit"
            )
        return np.asarray(array)

    def predict(self, X: Any) -> npt.NDArray[Any]:
        """Label of the colour-cut rule each row satisfies."""
        cells = self._cells(self._check(X))
        return np.asarray(self.cell_label_[cells])

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Training class frequencies of each row's colour-cut cell (columns as ``classes_``)."""
        cells = self._cells(self._check(X))
        return np.asarray(self.cell_proba_[cells])


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter: default, accepted types, allowed strings, lower bound."""

    default: ParamValue
    types: tuple[type, ...]
    choices: tuple[str, ...] = ()
    minimum: float | None = None


Builder = Callable[[Mapping[str, ParamValue], int, tuple[str, ...], int | None], Classifier]


@dataclass(frozen=True)
class EstimatorSpec:
    """A registry entry: what the estimator is, its declared parameters and its builder."""

    name: str
    family: str
    description: str
    params: Mapping[str, ParamSpec]
    builder: Builder = field(repr=False)
    treelite: bool = False


def _build_dummy(
    p: Mapping[str, ParamValue], seed: int, names: tuple[str, ...], n_jobs: int | None
) -> Classifier:
    est: Classifier = DummyClassifier(strategy=p["strategy"], random_state=seed)
    return est


def _build_colour_cut(
    p: Mapping[str, ParamValue], seed: int, names: tuple[str, ...], n_jobs: int | None
) -> Classifier:
    return ColourCutClassifier(feature_names=names, **p)  # type: ignore[arg-type]


def _to_float64(X: Any) -> npt.NDArray[np.float64]:
    return np.asarray(X, dtype=np.float64)


def _build_logistic(
    p: Mapping[str, ParamValue], seed: int, names: tuple[str, ...], n_jobs: int | None
) -> Classifier:
    # float64 because the linear model's solver and probabilities need more than
    # float32's 7 digits; median imputation keeps rows with a missing band usable;
    # standardising makes the L2 penalty treat magnitudes and colours alike.
    est: Classifier = Pipeline(
        [
            ("float64", FunctionTransformer(_to_float64)),
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            (
                "logistic",
                LogisticRegression(
                    C=p["C"],
                    max_iter=p["max_iter"],
                    class_weight=p["class_weight"],
                    random_state=seed,
                ),
            ),
        ]
    )
    return est


def _build_hgb(
    p: Mapping[str, ParamValue], seed: int, names: tuple[str, ...], n_jobs: int | None
) -> Classifier:
    # early_stopping is off: 'auto' would switch it on above 10k rows and carve a
    # random validation split out of the training data, so the number of trees
    # would depend on data size and the model would not see all its training rows.
    est: Classifier = HistGradientBoostingClassifier(early_stopping=False, random_state=seed, **p)
    return est


def _build_forest(
    cls: Any,
) -> Builder:
    def build(
        p: Mapping[str, ParamValue], seed: int, names: tuple[str, ...], n_jobs: int | None
    ) -> Classifier:
        est: Classifier = cls(random_state=seed, n_jobs=n_jobs, **p)
        return est

    return build


_CLASS_WEIGHT = ParamSpec(None, (type(None), str), choices=("balanced",))
_MAX_DEPTH = ParamSpec(None, (type(None), int), minimum=1)
_FOREST_PARAMS: dict[str, ParamSpec] = {
    "n_estimators": ParamSpec(200, (int,), minimum=1),
    "max_depth": _MAX_DEPTH,
    "min_samples_leaf": ParamSpec(1, (int,), minimum=1),
    "max_features": ParamSpec("sqrt", (str, float, int, type(None)), choices=("sqrt", "log2")),
    "class_weight": _CLASS_WEIGHT,
}

ESTIMATORS: dict[str, EstimatorSpec] = {
    spec.name: spec
    for spec in (
        EstimatorSpec(
            "dummy",
            "baseline",
            "class prior (scikit-learn DummyClassifier; 'prior' predicts the majority class "
            "with the training class frequencies, 'stratified' draws labels at random)",
            {"strategy": ParamSpec("prior", (str,), choices=("prior", "stratified"))},
            _build_dummy,
        ),
        EstimatorSpec(
            "colour_cut",
            "baseline",
            "historical ugriz colour cuts: UV excess for QSOs, stellar locus for stars",
            {
                "u": ParamSpec("u", (str,)),
                "g": ParamSpec("g", (str,)),
                "r": ParamSpec("r", (str,)),
                "i": ParamSpec("i", (str,)),
                "z": ParamSpec("z", (str,)),
                "star_label": ParamSpec("STAR", (str,)),
                "galaxy_label": ParamSpec("GALAXY", (str,)),
                "qso_label": ParamSpec("QSO", (str,)),
                "qso_max_u_g": ParamSpec(0.6, (float,)),
                "qso_max_g_r": ParamSpec(0.6, (float,)),
                "star_locus_width": ParamSpec(0.1, (float,), minimum=0.0),
                "smoothing": ParamSpec(1.0, (float,), minimum=0.0),
            },
            _build_colour_cut,
        ),
        EstimatorSpec(
            "logistic",
            "baseline",
            "median imputation + standardisation + multinomial logistic regression",
            {
                "C": ParamSpec(1.0, (float,), minimum=0.0),
                "max_iter": ParamSpec(1000, (int,), minimum=1),
                "class_weight": _CLASS_WEIGHT,
            },
            _build_logistic,
        ),
        EstimatorSpec(
            "hist_gradient_boosting",
            "tree_ensemble",
            "histogram gradient boosting (native NaN support, no early stopping)",
            {
                "max_iter": ParamSpec(100, (int,), minimum=1),
                "learning_rate": ParamSpec(0.1, (float,), minimum=0.0),
                "max_leaf_nodes": ParamSpec(31, (int, type(None)), minimum=2),
                "max_depth": _MAX_DEPTH,
                "min_samples_leaf": ParamSpec(20, (int,), minimum=1),
                # Not scikit-learn's 0: with rare classes (redshift bins) a leaf's
                # Newton step -G/H explodes as H -> 0 and boosting diverged (BOSS,
                # 25 bins: in-sample confidence 0.99999 at 13% accuracy); 1.0 fixed
                # it and changed SDSS17 accuracy by < 0.002.
                "l2_regularization": ParamSpec(1.0, (float,), minimum=0.0),
                "max_bins": ParamSpec(255, (int,), minimum=2),
                "class_weight": _CLASS_WEIGHT,
            },
            _build_hgb,
            treelite=True,
        ),
        EstimatorSpec(
            "random_forest",
            "tree_ensemble",
            "random forest (bootstrap samples, native NaN support)",
            {**_FOREST_PARAMS, "bootstrap": ParamSpec(True, (bool,))},
            _build_forest(RandomForestClassifier),
            treelite=True,
        ),
        EstimatorSpec(
            "extra_trees",
            "tree_ensemble",
            "extremely randomised trees (native NaN support since scikit-learn 1.6)",
            {**_FOREST_PARAMS, "bootstrap": ParamSpec(False, (bool,))},
            _build_forest(ExtraTreesClassifier),
            treelite=True,
        ),
    )
}

BASELINES = ("dummy", "colour_cut", "logistic")
"""Baselines every model is registered next to."""


def available_estimators() -> list[str]:
    """Names of the registered estimators, baselines first."""
    return list(ESTIMATORS)


def _check_param(name: str, key: str, spec: ParamSpec, value: Any) -> ParamValue:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        # bool is an int subclass: accept it only where bool is declared.
        ok = bool in spec.types
    elif isinstance(value, int) and int not in spec.types and float in spec.types:
        value, ok = float(value), True
    else:
        ok = isinstance(value, spec.types)
    if isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        kinds = "/".join("null" if t is type(None) else t.__name__ for t in spec.types)
        raise TrainError(f"{name}: parameter {key}={value!r} must be {kinds}")
    if isinstance(value, str) and spec.choices and value not in spec.choices:
        raise TrainError(f"{name}: parameter {key}={value!r} must be one of {spec.choices}")
    if (
        spec.minimum is not None
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and value < spec.minimum
    ):
        raise TrainError(f"{name}: parameter {key}={value!r} must be >= {spec.minimum}")
    checked: ParamValue = value
    return checked


@dataclass(frozen=True)
class EstimatorConfig:
    """A fully resolved estimator choice: registry name, every parameter, and the seed."""

    name: str
    params: Mapping[str, ParamValue]
    seed: int

    @property
    def spec(self) -> EstimatorSpec:
        """The registry entry of this estimator."""
        return ESTIMATORS[self.name]

    def build(self, feature_names: Sequence[str], *, n_jobs: int | None = None) -> Classifier:
        """A new unfitted estimator for these feature names (``n_jobs`` is not recorded)."""
        return self.spec.builder(self.params, self.seed, tuple(feature_names), n_jobs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record: name, family, parameters, seed, scikit-learn version."""
        return {
            "estimator": self.name,
            "family": self.spec.family,
            "params": dict(self.params),
            "seed": self.seed,
            "sklearn_version": sklearn.__version__,
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> EstimatorConfig:
        """Rebuild (and re-validate) a configuration from :meth:`to_dict` output."""
        return estimator_config(record["estimator"], record["params"], seed=record["seed"])


def estimator_config(
    name: str, params: Mapping[str, Any] | None = None, *, seed: int = 0
) -> EstimatorConfig:
    """Validate ``params`` against the declared parameters of ``name`` and resolve defaults.

    Unknown estimator names and parameters, wrong types, bad choices and values
    below a declared minimum raise :class:`TrainError` naming the allowed ones.
    The seed must be a non-negative integer; it seeds every random choice the
    estimator makes, so the same configuration on the same data gives the same model.
    """
    if name not in ESTIMATORS:
        raise TrainError(
            f"unknown estimator {name!r}; available: {', '.join(available_estimators())}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise TrainError(f"seed must be an integer in 0..2**32-1, not {seed!r}")
    spec = ESTIMATORS[name]
    given = dict(params or {})
    unknown = sorted(set(given) - set(spec.params))
    if unknown:
        raise TrainError(f"{name}: unknown parameter(s) {unknown}; declared: {sorted(spec.params)}")
    resolved = {
        key: _check_param(name, key, p, given[key]) if key in given else p.default
        for key, p in spec.params.items()
    }
    return EstimatorConfig(name, resolved, int(seed))


def make_estimator(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    feature_names: Sequence[str],
    n_jobs: int | None = None,
) -> tuple[Classifier, EstimatorConfig]:
    """Build an unfitted estimator from the registry and return it with its recorded config.

    ``feature_names`` is the column order of the feature matrix (the colour-cut
    baseline uses it to find the ugriz bands); ``n_jobs`` sets the threads of the
    forests and, not changing the model, is not recorded.
    """
    config = estimator_config(name, params, seed=seed)
    return config.build(feature_names, n_jobs=n_jobs), config
