"""Reading the model registry: list models, show their metrics.

Model versions are found by :mod:`skyclass.registry.models` (``MODEL``,
``MODEL:VERSION`` or a ``model_version_id``). :func:`describe_version` gathers what a
scientist needs to trust it (the evaluations of the candidate and the
baselines with mean ± std over folds, per-class purity and completeness,
permutation importance, ablation) and :func:`format_version` prints it as
the table ``skyclass models show`` and ``skyclass train`` display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skyclass.db.connect import connect
from skyclass.errors import ModelNotFoundError as ModelNotFoundError
from skyclass.registry.models import VersionRef as VersionRef
from skyclass.registry.models import resolve_version as resolve_version

CLASSIFICATION_HEADLINE = ("accuracy", "balanced_accuracy", "log_loss", "roc_auc_macro", "ece")
PHOTOZ_HEADLINE = (
    "sigma_nmad",
    "outlier_fraction",
    "log_loss",
    "pit_ks",
    "coverage_68",
    "coverage_95",
)
PER_CLASS = ("purity", "completeness", "completeness_at_fpr", "roc_auc")


@dataclass(frozen=True)
class ModelSummary:
    """One row of ``skyclass models list``."""

    name: str
    task: str
    versions: int
    latest_version: int | None
    estimator: str | None
    headline: str
    value: float | None
    std: float | None
    created_at: datetime | None


def list_models(url: str | None = None) -> list[ModelSummary]:
    """Every model with its newest version and that version's headline CV metric.

    The headline is the raw accuracy for classifiers and the raw sigma_NMAD
    for photo-z models.
    """
    with connect(url) as conn:
        rows = conn.execute(
            """
            SELECT m.name, m.task, count(v.model_version_id), max(v.version),
                   (SELECT v2.estimator FROM skyclass.model_version v2
                     WHERE v2.model_id = m.model_id ORDER BY v2.version DESC LIMIT 1),
                   (SELECT mt.mean FROM skyclass.model_version v2
                      JOIN skyclass.metric mt ON mt.evaluation_id = v2.evaluation_id
                     WHERE v2.model_id = m.model_id AND mt.stage = 'raw' AND mt.class_name = ''
                       AND mt.name = CASE m.task WHEN 'photoz' THEN 'sigma_nmad'
                                                 ELSE 'accuracy' END
                     ORDER BY v2.version DESC LIMIT 1),
                   (SELECT mt.std FROM skyclass.model_version v2
                      JOIN skyclass.metric mt ON mt.evaluation_id = v2.evaluation_id
                     WHERE v2.model_id = m.model_id AND mt.stage = 'raw' AND mt.class_name = ''
                       AND mt.name = CASE m.task WHEN 'photoz' THEN 'sigma_nmad'
                                                 ELSE 'accuracy' END
                     ORDER BY v2.version DESC LIMIT 1),
                   max(v.created_at)
            FROM skyclass.model m LEFT JOIN skyclass.model_version v USING (model_id)
            GROUP BY m.model_id ORDER BY m.name
            """
        ).fetchall()
    return [
        ModelSummary(
            name=r[0],
            task=r[1],
            versions=int(r[2]),
            latest_version=r[3],
            estimator=r[4],
            headline="sigma_nmad" if r[1] == "photoz" else "accuracy",
            value=r[5],
            std=r[6],
            created_at=r[7],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class MetricValue:
    """One ``skyclass.metric`` row."""

    mean: float | None
    std: float | None
    fold_values: tuple[float | None, ...]

    def __str__(self) -> str:
        if self.mean is None:
            return "undefined"
        if self.std is None or not math.isfinite(self.std):
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.std:.3f}"


@dataclass(frozen=True)
class EvaluationInfo:
    """An evaluation with its metrics keyed by (name, class, stage)."""

    evaluation_id: int
    estimator: str
    role: str
    fit_seconds: float | None
    metrics: Mapping[tuple[str, str, str], MetricValue]

    def get(self, name: str, class_name: str = "", stage: str = "raw") -> MetricValue | None:
        """The metric, or None when it was not computed."""
        return self.metrics.get((name, class_name, stage))


@dataclass(frozen=True)
class VersionDescription:
    """Everything ``skyclass models show`` prints about one model version."""

    ref: VersionRef
    feature_set: str
    feature_names: tuple[str, ...]
    snapshot: Mapping[str, Any]
    settings: Mapping[str, Any]
    library_versions: Mapping[str, str]
    git_commit: str | None
    os_user: str
    started_at: datetime
    finished_at: datetime
    evaluations: tuple[EvaluationInfo, ...]
    importance: tuple[tuple[str, float, float], ...]
    ablation: tuple[tuple[str, str, float, float], ...]


def describe_version(ref: str | int, url: str | None = None) -> VersionDescription:
    """Gather a model version's provenance, evaluations, importance and ablation rows."""
    with connect(url) as conn:
        version = resolve_version(conn, ref)
        run = conn.execute(
            "SELECT r.settings, r.library_versions, r.git_commit, r.os_user, r.started_at, "
            "r.finished_at, fs.name || ':' || left(fs.spec_hash, 12), fs.feature_names, "
            "s.n_rows, s.n_folds, s.calibration_fraction, s.label_source, s.leakage_forced, "
            "s.table_name "
            "FROM skyclass.training_run r "
            "JOIN skyclass.training_snapshot s USING (snapshot_id) "
            "JOIN skyclass.feature_set fs ON fs.feature_set_id = s.feature_set_id "
            "WHERE r.training_run_id = %s",
            (version.training_run_id,),
        ).fetchone()
        assert run is not None
        evaluations = []
        for ev in conn.execute(
            "SELECT evaluation_id, estimator, role, fit_seconds FROM skyclass.evaluation "
            "WHERE training_run_id = %s ORDER BY role DESC, evaluation_id",
            (version.training_run_id,),
        ).fetchall():
            metrics = {
                (m[0], m[1], m[2]): MetricValue(m[3], m[4], tuple(m[5]))
                for m in conn.execute(
                    "SELECT name, class_name, stage, mean, std, fold_values FROM skyclass.metric "
                    "WHERE evaluation_id = %s",
                    (ev[0],),
                )
            }
            evaluations.append(EvaluationInfo(int(ev[0]), ev[1], ev[2], ev[3], metrics))
        importance = conn.execute(
            "SELECT feature, mean, std FROM skyclass.feature_importance "
            "WHERE evaluation_id = %s ORDER BY mean DESC",
            (version.evaluation_id,),
        ).fetchall()
        ablation = conn.execute(
            "SELECT dropped_group, metric, delta_mean, delta_std FROM skyclass.ablation "
            "WHERE training_run_id = %s AND estimator = %s ORDER BY dropped_group, metric",
            (version.training_run_id, version.estimator),
        ).fetchall()
    return VersionDescription(
        ref=version,
        feature_set=str(run[6]),
        feature_names=tuple(run[7]),
        snapshot={
            "snapshot_id": version.snapshot_id,
            "table": f"snapshots.{run[13]}",
            "n_rows": run[8],
            "n_folds": run[9],
            "calibration_fraction": run[10],
            "label_source": run[11],
            "leakage_forced": run[12],
        },
        settings=run[0],
        library_versions=run[1],
        git_commit=run[2],
        os_user=run[3],
        started_at=run[4],
        finished_at=run[5],
        evaluations=tuple(evaluations),
        importance=tuple((r[0], float(r[1]), float(r[2])) for r in importance),
        ablation=tuple((r[0], r[1], float(r[2]), float(r[3])) for r in ablation),
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def _label(name: str) -> str:
    return {
        "balanced_accuracy": "balanced acc.",
        "roc_auc_macro": "ROC AUC",
        "log_loss": "log loss",
        "ece": "ECE",
        "sigma_nmad": "sigma_NMAD",
        "outlier_fraction": "outliers",
        "pit_ks": "PIT KS",
        "coverage_68": "cov. 68%",
        "coverage_95": "cov. 95%",
        "completeness_at_fpr": "compl.@1%FPR",
        "roc_auc": "ROC AUC",
    }.get(name, name)


def format_version(desc: VersionDescription) -> str:
    """The text report of a model version: evaluations table, per-class table, importance."""
    ref = desc.ref
    lines = [
        f"model {ref.label} (model_version_id {ref.model_version_id}): {ref.estimator}, "
        f"{ref.task}, {len(ref.classes)} {'bins' if ref.task == 'photoz' else 'classes'}, "
        f"{ref.n_features} features",
        f"feature set {desc.feature_set}; snapshot {ref.snapshot_id} ({desc.snapshot['table']}, "
        f"{desc.snapshot['n_rows']} rows, {desc.snapshot['n_folds']} folds, calibration split "
        f"{desc.snapshot['calibration_fraction']:g})",
        f"calibration {ref.calibration_kind}"
        + (
            f" (T = {ref.calibration_params[0]:.3f})"
            if ref.calibration_kind == "temperature"
            else ""
        )
        + "; compiled: "
        + ("yes" if ref.compiled else f"no (run `skyclass compile {ref.label}`)"),
    ]
    forced = desc.snapshot.get("leakage_forced") or []
    if forced:
        lines.append("LEAKAGE FORCED: " + ", ".join(f"{f['name']} ({f['reason']})" for f in forced))
    headline = PHOTOZ_HEADLINE if ref.task == "photoz" else CLASSIFICATION_HEADLINE
    for stage, title in (
        ("raw", "cross-validation, mean ± std over folds"),
        ("calibrated", "calibrated (cross-fitted on out-of-fold probabilities)"),
    ):
        rows = [
            [ev.estimator, ev.role, *(str(ev.get(m, "", stage) or "-") for m in headline)]
            for ev in desc.evaluations
            if any(ev.get(m, "", stage) is not None for m in headline)
        ]
        if rows:
            lines += ["", f"{title}:"]
            lines += _table(["estimator", "role", *map(_label, headline)], rows)
    if ref.task == "classification":
        lines += ["", "per class (raw, mean ± std over folds):"]
        rows = []
        for ev in desc.evaluations:
            for c in ref.classes:
                values = [ev.get(m, c) for m in PER_CLASS]
                if any(v is not None for v in values):
                    rows.append([ev.estimator, c, *(str(v or "-") for v in values)])
        lines += _table(["estimator", "class", *map(_label, PER_CLASS)], rows)
    notes = desc.settings.get("notes") or []
    if notes:
        lines += ["", *(f"note: {n}" for n in notes)]
    augment = desc.settings.get("augment")
    if augment:
        effect = (augment.get("effect") or {}).get(
            "sigma_nmad" if ref.task == "photoz" else "accuracy"
        )
        text = f"augmentation: {augment['n_copies']} copies ({augment['policy']})"
        if effect and effect["difference"]["mean"] is not None:
            diff = effect["difference"]
            std = diff["std"] if diff["std"] is not None else math.nan
            text += f", effect on {'sigma_NMAD' if ref.task == 'photoz' else 'accuracy'} "
            text += f"{diff['mean']:+.4f} ± {std:.4f}"
        lines += ["", text]
    if desc.importance:
        lines += ["", "permutation importance (increase of log loss on the calibration split):"]
        lines += _table(
            ["feature", "mean", "std"],
            [[f, f"{m:.4f}", f"{s:.4f}"] for f, m, s in desc.importance],
        )
    if desc.ablation:
        lines += ["", "ablation (metric change when a group is dropped, ablated - full):"]
        lines += _table(
            ["group", "metric", "delta"],
            [[g, m, f"{d:+.4f} ± {s:.4f}"] for g, m, d, s in desc.ablation],
        )
    return "\n".join(lines)
