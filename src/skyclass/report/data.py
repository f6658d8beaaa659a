"""Everything a model report shows, read from the registry rows of migration 0003.

:func:`load_report_data` resolves ``MODEL[:VERSION]`` (with
:func:`skyclass.registry.models.resolve_version`) to a row of
``skyclass.model_version`` and reads, in one repeatable-read transaction, the
evaluations of its training run (the candidate that became the version, the
other candidates and every baseline) with their metrics, curves and feature
importances, the run's ablations, and the provenance chain: training run,
training snapshot, feature set, catalog and the catalog's load history.

The JSON the report reads, as :mod:`skyclass.train.pipeline` writes it (a
report section is left out, with a note, when its rows are missing; the
alternative key names listed are read too):

``evaluation.confusion``
    ``{"classes": [...], "matrix": [[...], ...], ...}``: counts of the
    out-of-fold predictions summed over the K folds, rows true classes, columns
    predicted classes (a bare list of lists in ``model_version.classes`` order
    is read too; photo-z bins named by index are mapped to the version's bin labels).
``metric`` rows
    ``name`` is a field of :data:`skyclass.train.metrics.OVERALL_FIELDS` or a
    photo-z scalar (``sigma_nmad``, ``coverage_68``...) with ``class_name =
    ''``, or a field of :data:`skyclass.train.metrics.PER_CLASS_FIELDS` with
    ``class_name`` the class; ``mean``/``std`` over ``fold_values``. The fixed
    false-positive rate is ``extra -> 'fpr_target'`` when present, else
    ``training_run.settings -> 'fpr_target'``, else
    :data:`skyclass.probability.DEFAULT_FPR`.
``evaluation_curve`` rows, keyed ``(name, class_name, stage)``
    - ``("roc", CLASS, stage)``: ``{"fpr": [...], "tpr": [...], "threshold": [...]}``,
      the one-vs-rest ROC of the pooled out-of-fold probabilities (+inf
      threshold stored as ``null``); only ``fpr`` and ``tpr`` are read.
    - ``("reliability", "", stage)``: ``{"edges": [M+1], "count": [M],
      "confidence": [M], "accuracy": [M]}``, the top-label bins of
      :func:`skyclass.train.metrics.reliability_bins` (``null`` for empty
      bins); also ``bin_edges``/``counts``/``mean_predicted``/``fraction_positive``.
    - ``("pit_histogram", "", stage)``: ``{"edges": [...], "count": [...]}`` (or ``counts``).
    - ``("zphot_zspec", "", stage)``: ``{"z_spec": [...], "z_phot": [...]}``,
      optionally ``"point"`` (the PDF summary used) and ``"n_total"`` (objects
      the sample was drawn from).
    - ``("coverage", "", stage)``: ``{"nominal": [...], "observed": [...]}``
      (or ``empirical``), pooled over the folds; the ``coverage_NN`` metric
      rows add their K-fold error bars.
``training_run.settings``
    ``notes`` (list of text), ``calibration_fit -> 'diagnostics'`` (``n_fit``,
    ``log_loss_before``, ``log_loss_after``) and ``importance_metric`` are
    shown when present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from skyclass.db.connect import connect
from skyclass.errors import SkyclassError
from skyclass.probability import DEFAULT_FPR
from skyclass.registry.models import resolve_version
from skyclass.report.domain import DomainView, read_domain_views

Key = tuple[str, str, str]
"""(name, class_name, stage) of a metric or curve row."""


class ReportError(SkyclassError, ValueError):
    """A report cannot be made: bad model reference, missing rows, unwritable output."""


@dataclass(frozen=True)
class MetricValue:
    """One metric row: mean and sample std over the folds, the fold values, extras."""

    mean: float | None
    std: float | None
    fold_values: tuple[float | None, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Importance:
    """Importance of one feature by one method (mean ± std of the degradation)."""

    feature: str
    method: str
    mean: float
    std: float


@dataclass(frozen=True)
class Evaluation:
    """One estimator's cross-validation in the training run, with its metrics and curves."""

    evaluation_id: int
    estimator: str
    role: str
    params: Mapping[str, Any]
    seed: int | None
    fit_seconds: float | None
    confusion: Any
    metrics: Mapping[Key, MetricValue]
    curves: Mapping[Key, Mapping[str, Any]]
    importance: tuple[Importance, ...]

    def metric(self, name: str, class_name: str = "", stage: str = "raw") -> MetricValue | None:
        """The metric row ``(name, class_name, stage)``, or None."""
        return self.metrics.get((name, class_name, stage))

    def curve(
        self, name: str, class_name: str = "", stage: str = "raw"
    ) -> Mapping[str, Any] | None:
        """The curve data ``(name, class_name, stage)``, or None."""
        return self.curves.get((name, class_name, stage))

    def stages(self) -> list[str]:
        """Stages with metric rows, ``raw`` first."""
        found = {key[2] for key in self.metrics}
        return [s for s in ("raw", "calibrated") if s in found]


@dataclass(frozen=True)
class Ablation:
    """Metric change (ablated minus full, paired over folds) when a feature group is dropped."""

    estimator: str
    group: str
    features: tuple[str, ...]
    metric: str
    delta_mean: float
    delta_std: float
    fold_deltas: tuple[float, ...]


@dataclass(frozen=True)
class CatalogLoad:
    """One file loaded into the catalog the feature set was computed from."""

    load_id: int
    mode: str
    file_name: str
    file_sha256: str
    rows_accepted: int
    finished_at: datetime


@dataclass(frozen=True)
class DriftBin:
    """One region or magnitude bin of a scoring run's drift summary (``skyclass.drift_summary``).

    ``training`` and ``previous`` are the worst feature PSI against the training
    snapshot and the previous run (None when not compared or too few objects),
    ``class_psi`` the PSI of the predicted classes against the training labels.
    """

    bin: int
    n_objects: int
    ra: float | None
    dec: float | None
    low: float | None
    high: float | None
    top_probability: float
    training: float | None
    previous: float | None
    class_psi: float | None


@dataclass(frozen=True)
class DriftData:
    """The drift summary of the newest scoring run of a model version with one."""

    run_id: int
    catalog: str
    deployment: str | None
    previous_run_id: int | None
    magnitude_feature: str | None
    regions: tuple[DriftBin, ...]
    magnitudes: tuple[DriftBin, ...]
    counts: Mapping[str, int]


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows, for one model version."""

    model_name: str
    model_description: str | None
    version: int
    model_version_id: int
    task: str
    classes: tuple[str, ...]
    bin_edges: tuple[float, ...] | None
    estimator: str
    params: Mapping[str, Any]
    n_features: int
    calibration_kind: str
    calibration_params: tuple[float, ...]
    calibration_offsets: tuple[int, ...]
    calibration_eps: float
    version_created_at: datetime
    version_created_by: str
    candidate: Evaluation
    others: tuple[Evaluation, ...]
    ablations: tuple[Ablation, ...]
    run: Mapping[str, Any]
    snapshot: Mapping[str, Any]
    feature_set: Mapping[str, Any]
    catalog: Mapping[str, Any]
    loads: tuple[CatalogLoad, ...]
    #: Per OOD bin (migration 0014): (ood_lo, ood_hi, n, q68, q95) for photo-z versions,
    #: (ood_lo, ood_hi, n, temperature) for classifiers; empty for older versions.
    uncertainty: tuple[tuple[float | int | None, ...], ...] = ()
    #: The newest domain fit per catalog the version was applied to (``skyclass domain``).
    domain: tuple[DomainView, ...] = ()
    drift: DriftData | None = None

    @property
    def evaluations(self) -> tuple[Evaluation, ...]:
        """The candidate first, then the other candidates, then the baselines."""
        return (self.candidate, *self.others)

    @property
    def baselines(self) -> tuple[Evaluation, ...]:
        """The baseline evaluations of the run."""
        return tuple(e for e in self.others if e.role == "baseline")

    @property
    def fpr_target(self) -> float:
        """The fixed false-positive rate of the ``completeness_at_fpr`` metrics."""
        for key, value in self.candidate.metrics.items():
            if key[0] == "completeness_at_fpr":
                target = value.extra.get("fpr_target", value.extra.get("fpr"))
                if isinstance(target, int | float) and 0 < target < 1:
                    return float(target)
        settings = self.run.get("settings") or {}
        target = (
            settings.get("fpr_target", settings.get("fpr")) if isinstance(settings, dict) else None
        )
        if isinstance(target, int | float) and 0 < target < 1:
            return float(target)
        return DEFAULT_FPR

    @property
    def deployed_stage(self) -> str:
        """``calibrated`` when the version carries a calibration map with calibrated rows."""
        if self.calibration_kind != "none" and "calibrated" in self.candidate.stages():
            return "calibrated"
        return "raw"


def _float(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _version_row(conn: psycopg.Connection[Any], ref: str | int) -> dict[str, Any]:
    # The registry's resolver, so every command names versions (and fails) the same way.
    found = resolve_version(conn, ref)
    row = (
        conn.cursor(row_factory=psycopg.rows.dict_row)
        .execute(
            """
            SELECT mv.*, m.name AS model_name, m.description AS model_description
            FROM skyclass.model_version mv JOIN skyclass.model m USING (model_id)
            WHERE mv.model_version_id = %s
            """,
            (found.model_version_id,),
        )
        .fetchone()
    )
    if row is None:
        raise ReportError(f"model version {found.label} disappeared while being read")
    return row


def _evaluations(conn: psycopg.Connection[Any], training_run_id: int) -> list[Evaluation]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    rows = cur.execute(
        """
        SELECT evaluation_id, estimator, role, params, seed, fit_seconds, confusion
        FROM skyclass.evaluation WHERE training_run_id = %s ORDER BY evaluation_id
        """,
        (training_run_id,),
    ).fetchall()
    ids = [r["evaluation_id"] for r in rows]
    metrics: dict[int, dict[Key, MetricValue]] = {i: {} for i in ids}
    for m in cur.execute(
        """
        SELECT evaluation_id, name, class_name, stage, mean, std, fold_values, extra
        FROM skyclass.metric WHERE evaluation_id = ANY(%s)
        """,
        (ids,),
    ):
        metrics[m["evaluation_id"]][(m["name"], m["class_name"], m["stage"])] = MetricValue(
            _float(m["mean"]),
            _float(m["std"]),
            tuple(_float(v) for v in m["fold_values"]),
            m["extra"] or {},
        )
    curves: dict[int, dict[Key, Mapping[str, Any]]] = {i: {} for i in ids}
    for c in cur.execute(
        """
        SELECT evaluation_id, name, class_name, stage, data
        FROM skyclass.evaluation_curve WHERE evaluation_id = ANY(%s)
        """,
        (ids,),
    ):
        if isinstance(c["data"], dict):
            curves[c["evaluation_id"]][(c["name"], c["class_name"], c["stage"])] = c["data"]
    importance: dict[int, list[Importance]] = {i: [] for i in ids}
    for f in cur.execute(
        """
        SELECT evaluation_id, feature, method, mean, std
        FROM skyclass.feature_importance WHERE evaluation_id = ANY(%s)
        ORDER BY evaluation_id, method, mean DESC, feature
        """,
        (ids,),
    ):
        importance[f["evaluation_id"]].append(
            Importance(f["feature"], f["method"], float(f["mean"]), float(f["std"]))
        )
    return [
        Evaluation(
            evaluation_id=int(r["evaluation_id"]),
            estimator=r["estimator"],
            role=r["role"],
            params=r["params"] if isinstance(r["params"], dict) else {},
            seed=r["seed"],
            fit_seconds=_float(r["fit_seconds"]),
            confusion=r["confusion"],
            metrics=metrics[r["evaluation_id"]],
            curves=curves[r["evaluation_id"]],
            importance=tuple(importance[r["evaluation_id"]]),
        )
        for r in rows
    ]


def _one(conn: psycopg.Connection[Any], query: str, key: Any, what: str) -> dict[str, Any]:
    row = conn.cursor(row_factory=psycopg.rows.dict_row).execute(query, (key,)).fetchone()
    if row is None:
        raise ReportError(f"the registry is inconsistent: {what} {key} is missing")
    return row


def read_report_data(conn: psycopg.Connection[Any], ref: str | int) -> ReportData:
    """Read every row the report of ``ref`` (``MODEL[:VERSION]`` or a model_version_id) shows."""
    mv = _version_row(conn, ref)
    name = mv["model_name"]
    evaluations = _evaluations(conn, mv["training_run_id"])
    chosen = [e for e in evaluations if e.evaluation_id == mv["evaluation_id"]]
    if not chosen:
        raise ReportError(
            f"evaluation {mv['evaluation_id']} of {name} v{mv['version']} does not belong to "
            f"its training run {mv['training_run_id']}"
        )
    others = [e for e in evaluations if e is not chosen[0]]
    # Other candidates before baselines: the reader compares like with like first.
    others.sort(key=lambda e: (e.role != "candidate", e.evaluation_id))
    ablations = tuple(
        Ablation(
            estimator=a[0],
            group=a[1],
            features=tuple(a[2]),
            metric=a[3],
            delta_mean=float(a[4]),
            delta_std=float(a[5]),
            fold_deltas=tuple(float(v) for v in a[6]),
        )
        for a in conn.execute(
            """
            SELECT estimator, dropped_group, dropped_features, metric, delta_mean, delta_std,
                   fold_deltas
            FROM skyclass.ablation WHERE training_run_id = %s
            ORDER BY estimator, metric, dropped_group
            """,
            (mv["training_run_id"],),
        )
    )
    run = _one(
        conn,
        "SELECT * FROM skyclass.training_run WHERE training_run_id = %s",
        mv["training_run_id"],
        "training run",
    )
    snapshot = _one(
        conn,
        "SELECT * FROM skyclass.training_snapshot WHERE snapshot_id = %s",
        mv["snapshot_id"],
        "training snapshot",
    )
    feature_set = _one(
        conn,
        """
        SELECT feature_set_id, name, spec_hash, catalog_id, catalog_name, spec, feature_names,
               table_name, created_at, created_by
        FROM skyclass.feature_set WHERE feature_set_id = %s
        """,
        mv["feature_set_id"],
        "feature set",
    )
    if feature_set["catalog_id"] is None:
        # The catalog was dropped after training: the version keeps its name as provenance.
        catalog: Mapping[str, Any] = {
            "name": f"{feature_set['catalog_name']} (dropped)",
            "schema_name": "-",
            "table_name": "-",
        }
    else:
        catalog = _one(
            conn,
            "SELECT * FROM skyclass.catalog WHERE catalog_id = %s",
            feature_set["catalog_id"],
            "catalog",
        )
    loads = tuple(
        CatalogLoad(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5])
        for r in conn.execute(
            """
            SELECT load_id, mode, file_name, file_sha256, rows_accepted, finished_at
            FROM skyclass.catalog_load WHERE catalog_id = %s ORDER BY load_id
            """,
            (feature_set["catalog_id"],),
        )
    )
    if mv["task"] == "photoz":
        uncertainty = tuple(
            tuple(r)
            for r in conn.execute(
                """
                SELECT ood_lo, ood_hi, max(n),
                       max(conformal_quantile) FILTER (WHERE level = 0.68::float8),
                       max(conformal_quantile) FILTER (WHERE level = 0.95::float8)
                FROM skyclass.interval_calibration WHERE model_version_id = %s
                GROUP BY bin, ood_lo, ood_hi ORDER BY bin
                """,
                (mv["model_version_id"],),
            )
        )
    else:
        uncertainty = tuple(
            tuple(r)
            for r in conn.execute(
                "SELECT ood_lo, ood_hi, n, temperature FROM skyclass.probability_recalibration "
                "WHERE model_version_id = %s ORDER BY bin",
                (mv["model_version_id"],),
            )
        )
    return ReportData(
        model_name=mv["model_name"],
        model_description=mv["model_description"],
        version=int(mv["version"]),
        model_version_id=int(mv["model_version_id"]),
        task=mv["task"],
        classes=tuple(mv["classes"]),
        bin_edges=tuple(float(v) for v in mv["bin_edges"]) if mv["bin_edges"] else None,
        estimator=mv["estimator"],
        params=mv["params"] if isinstance(mv["params"], dict) else {},
        n_features=int(mv["n_features"]),
        calibration_kind=mv["calibration_kind"],
        calibration_params=tuple(float(v) for v in mv["calibration_params"]),
        calibration_offsets=tuple(int(v) for v in mv["calibration_offsets"]),
        calibration_eps=float(mv["calibration_eps"]),
        version_created_at=mv["created_at"],
        version_created_by=mv["created_by"],
        candidate=chosen[0],
        others=tuple(others),
        ablations=ablations,
        run=run,
        snapshot=snapshot,
        feature_set=feature_set,
        catalog=catalog,
        loads=loads,
        uncertainty=uncertainty,
        domain=tuple(read_domain_views(conn, int(mv["model_version_id"]))),
        drift=read_drift(conn, int(mv["model_version_id"])),
    )


_DRIFT_BINS = """
SELECT s.bin, s.n_objects, s.ra_mean, s.dec_mean,
       CASE WHEN s.scope = 'magnitude' AND s.bin > 0 THEN f.magnitude_edges[s.bin] END,
       CASE WHEN s.scope = 'magnitude' AND s.bin >= 0 THEN f.magnitude_edges[s.bin + 1] END,
       s.top_probability_mean,
       (SELECT max(d.value) FROM skyclass.drift AS d
         WHERE d.run_id = s.run_id AND d.scope = s.scope AND d.bin = s.bin
           AND d.reference = 'training' AND d.metric = 'psi' AND d.quantity <> 'class'
           AND d.level <> 'low_count'),
       (SELECT max(d.value) FROM skyclass.drift AS d
         WHERE d.run_id = s.run_id AND d.scope = s.scope AND d.bin = s.bin
           AND d.reference = 'previous_run' AND d.metric = 'psi' AND d.quantity <> 'class'
           AND d.level <> 'low_count'),
       (SELECT max(d.value) FROM skyclass.drift AS d
         WHERE d.run_id = s.run_id AND d.scope = s.scope AND d.bin = s.bin
           AND d.reference = 'training' AND d.quantity = 'class' AND d.level <> 'low_count')
  FROM skyclass.drift_summary AS s
  JOIN skyclass.drift_run AS r USING (run_id)
  JOIN skyclass.drift_reference AS f USING (model_version_id)
 WHERE s.run_id = %s AND s.scope = %s
 ORDER BY s.bin
"""


def read_drift(conn: psycopg.Connection[Any], model_version_id: int) -> DriftData | None:
    """The drift of the newest scoring run of the version that has drift summaries, or None.

    None also when the drift tables are not readable by the connecting role
    (the report then leaves the section out).
    """
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT r.run_id, c.name, r.deployment, r.previous_run_id, f.magnitude_feature "
                "FROM skyclass.drift_run AS r JOIN skyclass.catalog AS c USING (catalog_id) "
                "JOIN skyclass.drift_reference AS f USING (model_version_id) "
                "WHERE r.model_version_id = %s ORDER BY r.run_id DESC LIMIT 1",
                (model_version_id,),
            ).fetchone()
            if row is None:
                return None
            bins = {
                scope: tuple(
                    DriftBin(
                        bin=int(b[0]),
                        n_objects=int(b[1]),
                        ra=_float(b[2]),
                        dec=_float(b[3]),
                        low=_float(b[4]),
                        high=_float(b[5]),
                        top_probability=float(b[6]),
                        training=_float(b[7]),
                        previous=_float(b[8]),
                        class_psi=_float(b[9]),
                    )
                    for b in conn.execute(_DRIFT_BINS, (row[0], scope))
                )
                for scope in ("region", "magnitude")
            }
            counts = {
                str(level): int(n)
                for level, n in conn.execute(
                    "SELECT level, count(*) FROM skyclass.drift WHERE run_id = %s GROUP BY level",
                    (row[0],),
                )
            }
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable):
        return None
    return DriftData(
        run_id=int(row[0]),
        catalog=str(row[1]),
        deployment=row[2],
        previous_run_id=None if row[3] is None else int(row[3]),
        magnitude_feature=row[4],
        regions=bins["region"],
        magnitudes=bins["magnitude"],
        counts=counts,
    )


def load_report_data(ref: str | int, url: str | None = None) -> ReportData:
    """Read the report data of ``ref`` (``MODEL[:VERSION]``, newest by default, or an id).

    One repeatable-read, read-only transaction, so a training run registered
    meanwhile cannot mix into the report. An unknown model or version raises
    :class:`skyclass.errors.ModelNotFoundError` naming those that exist.
    """
    with connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            return read_report_data(conn, ref)


# -- reading the JSON shapes ---------------------------------------------------


def pick(data: Mapping[str, Any], *keys: str) -> list[Any] | None:
    """The first of ``keys`` present in ``data`` as a list (None when none is)."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, list):
            return value
    return None


def confusion_matrix(
    evaluation: Evaluation, classes: Sequence[str]
) -> tuple[list[str], list[list[int]]] | None:
    """The evaluation's class labels and confusion counts (in ``classes`` order when they match).

    None when the evaluation stores no confusion matrix or one of the wrong shape.
    """
    raw = evaluation.confusion
    labels: list[str] = list(classes)
    if isinstance(raw, dict):
        labels = [str(c) for c in raw.get("classes") or classes]
        raw = raw.get("matrix", raw.get("counts"))
    if not isinstance(raw, list) or len(raw) != len(labels):
        return None
    if not all(isinstance(row, list) and len(row) == len(labels) for row in raw):
        return None
    matrix = [[int(v) for v in row] for row in raw]
    if labels == list(classes):
        return labels, matrix
    # Photo-z evaluations label the bins by index; the version names them.
    if sorted(labels) == sorted(str(k) for k in range(len(classes))):
        labels = [classes[int(k)] for k in labels]
    if sorted(labels) != sorted(classes):
        return labels, matrix
    order = [labels.index(c) for c in classes]
    return list(classes), [[matrix[i][j] for j in order] for i in order]
