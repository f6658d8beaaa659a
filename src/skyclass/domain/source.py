"""Every call the domain package makes into the registry and training packages.

Kept in one module so the registry refactor can re-point them in one place:
resolving ``MODEL[:VERSION]``, the catalog row, the version's training
snapshot, the catalog's build of the version's feature definition, and the
version's out-of-fold predictions or PDFs (re-computed: training stores per-fold
metrics, not per-object predictions, so the version's recorded estimator
configuration is cross-validated again on the snapshot's own folds, which
reproduces the training run's out-of-fold predictions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.domain.errors import DomainError
from skyclass.train.crossval import cross_validate
from skyclass.train.estimators import EstimatorConfig
from skyclass.train.photoz import RedshiftGrid
from skyclass.train.registry import VersionRef, resolve_version
from skyclass.train.snapshot import (
    CatalogInfo,
    FeatureSetInfo,
    SnapshotData,
    load_catalog_info,
    load_feature_set_info,
    load_snapshot,
    snapshot_data,
)

__all__ = [
    "CatalogFeatures",
    "CatalogInfo",
    "OutOfFold",
    "VersionRef",
    "catalog_features",
    "load_catalog_info",
    "out_of_fold",
    "resolve_version",
    "training_snapshot",
]


def training_snapshot(conn: psycopg.Connection[Any], version: VersionRef) -> SnapshotData:
    """The rows of the version's training snapshot."""
    return snapshot_data(conn, load_snapshot(conn, version.snapshot_id))


@dataclass(frozen=True)
class CatalogFeatures:
    """The catalog's build of the version's feature definition, as arrays."""

    feature_set: FeatureSetInfo
    object_id: npt.NDArray[np.int64] = field(repr=False)
    X: npt.NDArray[np.float32] = field(repr=False)


def catalog_features(
    conn: psycopg.Connection[Any], version: VersionRef, catalog: CatalogInfo
) -> CatalogFeatures:
    """Read the feature rows of ``catalog`` built from the version's feature definition."""
    try:
        row = conn.execute(
            "SELECT skyclass.scoring_feature_set(%s, %s)",
            (version.model_version_id, catalog.catalog_id),
        ).fetchone()
    except psycopg.errors.UndefinedObject as exc:
        conn.rollback()
        hint = exc.diag.message_hint or "build it with `skyclass features build`"
        raise DomainError(
            f"{version.label} on catalog {catalog.name!r}: {exc.diag.message_primary}; {hint}"
        ) from None
    assert row is not None
    info = load_feature_set_info(conn, int(row[0]))
    with conn.cursor(binary=True) as cur:
        cur.execute(sql.SQL("SELECT object_id, x FROM {} ORDER BY object_id").format(info.table))
        rows = cur.fetchall()
    if not rows:
        raise DomainError(f"feature table {info.table_name} of catalog {catalog.name!r} is empty")
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    X = np.asarray([r[1] for r in rows], dtype=np.float32).reshape(len(rows), -1)
    return CatalogFeatures(info, ids, X)


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold probabilities (classes, or redshift bins of ``grid``) of the snapshot rows
    in a CV fold (``rows``), with their true redshifts for photo-z."""

    rows: npt.NDArray[np.intp] = field(repr=False)
    proba: npt.NDArray[np.float64] = field(repr=False)
    classes: tuple[str, ...]
    z_true: npt.NDArray[np.float64] = field(repr=False)
    grid: RedshiftGrid | None


def out_of_fold(
    conn: psycopg.Connection[Any], version: VersionRef, data: SnapshotData
) -> OutOfFold:
    """Re-run the version's cross-validation on its snapshot folds.

    Augmented copies are not re-made: for a version trained with augmentation
    the predictions are those of the same estimator trained without them.
    """
    row = conn.execute(
        "SELECT params FROM skyclass.evaluation WHERE evaluation_id = %s",
        (version.evaluation_id,),
    ).fetchone()
    assert row is not None
    config = EstimatorConfig.from_dict(row[0])
    info = load_feature_set_info(conn, version.feature_set_id)
    photoz = version.bin_edges is not None
    labels = (
        data.label_index if photoz else np.asarray(version.classes, dtype=object)[data.label_index]
    )
    cv = cross_validate(
        config, data.X, labels, feature_names=info.feature_names, folds=data.fold, n_jobs=1
    )
    rows = np.flatnonzero(data.fold >= 0)
    proba = np.zeros((rows.size, len(version.classes)))
    order = [int(c) if photoz else version.classes.index(c) for c in cv.labels.tolist()]
    proba[:, order] = cv.oof_proba[rows]
    grid = RedshiftGrid(version.bin_edges) if version.bin_edges is not None else None
    return OutOfFold(rows, proba, version.classes, data.z_true[rows], grid)
