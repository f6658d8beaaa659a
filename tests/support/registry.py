"""Register real fitted models in the model registry (migration 0003) for tests.

``skyclass.model_version`` needs honest provenance: a model, a training run,
an evaluation, a training snapshot and a feature set on a registered
catalog. :func:`register_test_model` inserts the minimal rows of each (the
catalog and feature set are created once per database and shared) and the
version itself with the estimator's real Treelite checkpoint and calibration
map, and can compile it. Every row says it came from ``tests.support.registry``
(``training_run.settings``, ``training_snapshot.label_source``, the catalog's
description), so nothing here pretends to be a real training run.

Used by the compile and scoring tests, and meant for the tests of the
scoring jobs and the report: keep the signatures stable.

Example::

    version = register_test_model(conn, forest, classes=forest.classes_, n_features=9,
                                  calibration=cal, compiled=True)
    add_test_objects(conn, version, x_eval)        # catalog rows + feature rows
    conn.execute("SELECT skyclass.predict(%s, x) FROM features.<table>", (version,))
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from skyclass.compile import (
    CalibrationColumns,
    CompiledArtifact,
    calibration_columns,
    compile_checkpoint,
    store_artifact,
    treelite_checkpoint,
)
from skyclass.compile.checkpoint import check_estimator

__all__ = [
    "DEFAULT_CATALOG",
    "add_test_objects",
    "feature_table",
    "register_test_model",
]

DEFAULT_CATALOG = "test_catalog"
FEATURE_SET_NAME = "test_features"
N_FOLDS = 5
SOURCE = "tests.support.registry"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Libraries compiled in this process, by the sha256 of (checkpoint, options): the build is
# reproducible, so a checkpoint registered again (another calibration, another database)
# reuses the bytes instead of spending seconds in gcc.
_compiled: dict[str, CompiledArtifact] = {}


def _check_name(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must match {_NAME.pattern}")
    return name


def _ensure_catalog(conn: psycopg.Connection[Any], name: str) -> int:
    """The catalog_id of ``name``, creating a small empty catalog table when it is new."""
    _check_name("catalog", name)
    row = conn.execute(
        "SELECT catalog_id FROM skyclass.catalog WHERE name = %s", (name,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    conn.execute(
        sql.SQL(
            "CREATE TABLE catalogs.{} (object_id bigint PRIMARY KEY, "
            "ra double precision NOT NULL, dec double precision NOT NULL, "
            "CONSTRAINT coordinates_valid CHECK (ra >= 0 AND ra < 360 AND dec BETWEEN -90 AND 90))"
        ).format(sql.Identifier(name))
    )
    row = conn.execute(
        "INSERT INTO skyclass.catalog (name, table_name, id_column, ra_column, dec_column, "
        "description) VALUES (%s, %s, 'object_id', 'ra', 'dec', %s) RETURNING catalog_id",
        (name, name, f"test catalog created by {SOURCE}"),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _ensure_feature_set(conn: psycopg.Connection[Any], catalog_id: int, n_features: int) -> int:
    """A feature set of ``n_features`` opaque features x1..xN on the catalog (shared)."""
    names = [f"x{i + 1}" for i in range(n_features)]
    spec = {"source": SOURCE, "catalog_id": catalog_id, "features": names}
    spec_text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    spec_hash = hashlib.sha256(spec_text.encode()).hexdigest()
    row = conn.execute(
        "SELECT feature_set_id FROM skyclass.feature_set WHERE name = %s AND spec_hash = %s",
        (FEATURE_SET_NAME, spec_hash),
    ).fetchone()
    if row is not None:
        return int(row[0])
    table = f"{FEATURE_SET_NAME}_{spec_hash[:12]}"
    conn.execute(
        sql.SQL(
            "CREATE TABLE features.{} (object_id bigint PRIMARY KEY, x real[] NOT NULL, "
            "v vector({}))"
        ).format(sql.Identifier(table), sql.Literal(n_features))
    )
    # The definition is the spec without its catalog: every catalog's set shares it.
    definition = {k: v for k, v in spec.items() if k != "catalog_id"}
    definition_hash = hashlib.sha256(
        json.dumps(definition, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    conn.execute(
        "INSERT INTO skyclass.feature_definition (definition_hash, name, definition, "
        "feature_names) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (definition_hash, FEATURE_SET_NAME, json.dumps(definition), names),
    )
    row = conn.execute(
        "INSERT INTO skyclass.feature_set (name, spec_hash, catalog_id, spec, spec_text, "
        "feature_names, table_name, definition_hash, catalog_name) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
        "(SELECT name FROM skyclass.catalog WHERE catalog_id = %s)) "
        "RETURNING feature_set_id",
        (
            FEATURE_SET_NAME,
            spec_hash,
            catalog_id,
            json.dumps(spec),
            spec_text,
            names,
            table,
            definition_hash,
            catalog_id,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or isinstance(value, bool | int | str):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else str(value)
        else:
            out[key] = repr(value)
    return out


def _library_versions() -> dict[str, str]:
    import sklearn
    import tl2cgen
    import treelite

    return {
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "treelite": str(treelite.__version__),
        "tl2cgen": str(tl2cgen.__version__),
    }


def _snapshot(
    conn: psycopg.Connection[Any],
    feature_set_id: int,
    *,
    task: str,
    classes: list[str],
    bin_edges: list[float] | None,
    n_features: int,
    training_data: tuple[npt.ArrayLike, npt.ArrayLike] | None,
) -> int:
    """A training_snapshot row and its snapshots.<table> (filled from ``training_data``)."""
    table = f"test_snapshot_{secrets.token_hex(6)}"
    conn.execute(
        sql.SQL(
            "CREATE TABLE snapshots.{} (object_id bigint PRIMARY KEY, label text NOT NULL, "
            "label_index smallint NOT NULL, z_true double precision, fold smallint NOT NULL, "
            "x real[] NOT NULL)"
        ).format(sql.Identifier(table))
    )
    if training_data is None:
        # No rows: the snapshot says so instead of inventing counts.
        n_rows, counts = 1, {}
        label_source: dict[str, Any] = {"source": SOURCE, "training_rows": "not recorded"}
    else:
        x = np.asarray(training_data[0], dtype=np.float32)
        labels = [str(v) for v in np.asarray(training_data[1]).ravel()]
        if x.ndim != 2 or x.shape[1] != n_features or len(labels) != len(x) or not len(x):
            raise ValueError(f"training_data must be (n x {n_features} features, n labels)")
        index = {c: k for k, c in enumerate(classes)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(f"training labels {unknown[:5]} are not among classes {classes}")
        with conn.cursor().copy(
            sql.SQL(
                "COPY snapshots.{} (object_id, label, label_index, fold, x) FROM STDIN "
                "(FORMAT BINARY)"
            ).format(sql.Identifier(table))
        ) as copy:
            copy.set_types(["int8", "text", "int2", "int2", "float4[]"])
            for i, (row, label) in enumerate(zip(x, labels, strict=True)):
                copy.write_row((i, label, index[label], i % N_FOLDS, [float(v) for v in row]))
        n_rows = len(labels)
        counts = {c: labels.count(c) for c in classes}
        label_source = {"source": SOURCE, "training_rows": "test data"}
    row = conn.execute(
        "INSERT INTO skyclass.training_snapshot (feature_set_id, table_name, task, label_source, "
        "classes, bin_edges, n_rows, n_folds, calibration_fraction, seed, class_counts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, 0, %s) RETURNING snapshot_id",
        (
            feature_set_id,
            table,
            task,
            json.dumps(label_source),
            classes,
            bin_edges,
            n_rows,
            N_FOLDS,
            json.dumps(counts),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _model_id(conn: psycopg.Connection[Any], name: str, task: str) -> int:
    _check_name("model", name)
    conn.execute(
        "INSERT INTO skyclass.model (name, task, description) VALUES (%s, %s, %s) "
        "ON CONFLICT (name) DO NOTHING",
        (name, task, f"test model registered by {SOURCE}"),
    )
    # FOR UPDATE: concurrent registrations of one model get distinct version numbers.
    row = conn.execute(
        "SELECT model_id, task FROM skyclass.model WHERE name = %s FOR UPDATE", (name,)
    ).fetchone()
    assert row is not None
    if row[1] != task:
        raise ValueError(f"model {name!r} is a {row[1]} model, not {task}")
    return int(row[0])


def _compiled_artifact(checkpoint: bytes, n_features: int) -> CompiledArtifact:
    key = hashlib.sha256(checkpoint).hexdigest()
    if key not in _compiled:
        _compiled[key] = compile_checkpoint(checkpoint, n_features=n_features)
    return _compiled[key]


def register_test_model(
    conn: psycopg.Connection[Any],
    estimator: Any,
    *,
    classes: Sequence[Any],
    n_features: int,
    calibration: Any | None = None,
    task: str = "classification",
    bin_edges: Sequence[float] | None = None,
    catalog: str = DEFAULT_CATALOG,
    feature_set: int | None = None,
    model: str | None = None,
    training_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    compiled: bool = False,
    artifact: CompiledArtifact | None = None,
) -> int:
    """Register a fitted tree ensemble as a new model version and return its model_version_id.

    ``estimator`` is a fitted HistGradientBoosting, RandomForest or
    ExtraTrees classifier on ``n_features`` features whose ``len(classes)``
    outputs are named by ``classes`` (bin labels for ``task="photoz"``,
    which needs ``bin_edges`` with one more entry). ``calibration`` is the
    trainer's ``CalibrationParams`` or a ``CalibrationColumns`` (inserted as
    is, so tests can register malformed maps the database accepts).
    ``feature_set`` is an existing feature_set_id with ``n_features``
    features; by default a shared test feature set ``test_features`` (x1..xN,
    table ``features.test_features_<hash>``) on the catalog ``catalog``
    (created empty when missing) is used. ``model`` names the model (default
    ``test_<estimator class>``; the next version number is taken);
    ``training_data=(x, labels)`` fills the snapshot table (otherwise it is
    empty and its label_source says the rows were not recorded). With
    ``compiled=True`` the version is compiled from its checkpoint (builds are
    cached per process) and with ``artifact`` that prebuilt library is
    registered; both go through :func:`skyclass.compile.store_artifact`,
    which checks the library was built from this checkpoint. Everything
    happens in one transaction on ``conn``, which needs privileges to create
    tables and insert artifacts (a superuser in the test cluster).
    """
    class_names = [str(c) for c in classes]
    n_classes = check_estimator(estimator, n_features)
    if n_classes != len(class_names):
        raise ValueError(f"the estimator has {n_classes} classes, classes names {class_names}")
    if task not in ("classification", "photoz"):
        raise ValueError(f"task must be 'classification' or 'photoz', not {task!r}")
    if (task == "photoz") != (bin_edges is not None):
        raise ValueError("bin_edges are required for task='photoz' and only for it")
    edges = None if bin_edges is None else [float(v) for v in bin_edges]
    if edges is not None and len(edges) != len(class_names) + 1:
        raise ValueError(f"{len(class_names)} bins need {len(class_names) + 1} bin_edges")
    if isinstance(calibration, CalibrationColumns):
        cal = calibration
    else:
        cal = calibration_columns(calibration, len(class_names))
    checkpoint = treelite_checkpoint(estimator, n_features=n_features)
    kind = type(estimator).__name__
    params = _json_safe(estimator.get_params())
    seed = params.get("random_state") if isinstance(params.get("random_state"), int) else None

    with conn.transaction():
        if feature_set is None:
            feature_set = _ensure_feature_set(conn, _ensure_catalog(conn, catalog), n_features)
        else:
            row = conn.execute(
                "SELECT cardinality(feature_names) FROM skyclass.feature_set "
                "WHERE feature_set_id = %s",
                (feature_set,),
            ).fetchone()
            if row is None or row[0] != n_features:
                raise ValueError(f"feature set {feature_set} does not have {n_features} features")
        snapshot_id = _snapshot(
            conn,
            feature_set,
            task=task,
            classes=class_names,
            bin_edges=edges,
            n_features=n_features,
            training_data=training_data,
        )
        model_id = _model_id(conn, model or f"test_{kind.lower()}", task)
        row = conn.execute(
            "INSERT INTO skyclass.training_run (model_id, snapshot_id, settings, "
            "library_versions, os_user, started_at) VALUES (%s, %s, %s, %s, %s, %s) "
            "RETURNING training_run_id",
            (
                model_id,
                snapshot_id,
                json.dumps({"source": SOURCE, "estimator": kind}),
                json.dumps(_library_versions()),
                getpass.getuser(),
                datetime.now(UTC),
            ),
        ).fetchone()
        assert row is not None
        training_run_id = int(row[0])
        row = conn.execute(
            "INSERT INTO skyclass.evaluation (training_run_id, estimator, role, params, seed) "
            "VALUES (%s, %s, 'candidate', %s, %s) RETURNING evaluation_id",
            (training_run_id, kind, json.dumps(params), seed),
        ).fetchone()
        assert row is not None
        evaluation_id = int(row[0])
        row = conn.execute(
            """
            INSERT INTO skyclass.model_version
                (model_id, version, training_run_id, evaluation_id, snapshot_id, feature_set_id,
                 task, estimator, params, n_features, classes, bin_edges, checkpoint,
                 calibration_kind, calibration_params, calibration_offsets, calibration_eps)
            SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                   %s, %s, %s, %s, %s
              FROM skyclass.model_version WHERE model_id = %s
            RETURNING model_version_id
            """,
            (
                model_id,
                training_run_id,
                evaluation_id,
                snapshot_id,
                feature_set,
                task,
                kind,
                json.dumps(params),
                n_features,
                class_names,
                edges,
                checkpoint,
                cal.kind,
                list(cal.params),
                list(cal.offsets),
                cal.eps,
                model_id,
            ),
        ).fetchone()
        assert row is not None
        model_version_id = int(row[0])
        if artifact is None and compiled:
            artifact = _compiled_artifact(checkpoint, n_features)
        if artifact is not None:
            store_artifact(conn, model_version_id, artifact)
    return model_version_id


def feature_table(conn: psycopg.Connection[Any], model_version_id: int) -> sql.Composed:
    """``features.<table>`` of the model version's feature set, as a quoted identifier."""
    row = conn.execute(
        "SELECT f.table_name FROM skyclass.model_version AS v "
        "JOIN skyclass.feature_set AS f USING (feature_set_id) WHERE v.model_version_id = %s",
        (model_version_id,),
    ).fetchone()
    if row is None:
        raise ValueError(f"model version {model_version_id} does not exist")
    return sql.SQL("{}").format(sql.Identifier("features", str(row[0])))


def add_test_objects(
    conn: psycopg.Connection[Any],
    model_version_id: int,
    x: npt.ArrayLike,
    *,
    object_ids: Sequence[int] | None = None,
) -> list[int]:
    """Add objects with features ``x`` (n x n_features, NaN = missing) for a model version.

    Each object gets a catalog row (deterministic valid coordinates derived
    from its id) and a feature row (``x`` as real[]; ``v`` NULL when a
    feature is missing, as the feature-table contract says). Object ids
    default to the next free ones. Works for the test catalog and feature set
    that :func:`register_test_model` creates; returns the object ids.
    """
    values = np.asarray(x, dtype=np.float32)
    row = conn.execute(
        "SELECT c.table_name, f.table_name, cardinality(f.feature_names) "
        "FROM skyclass.model_version AS v JOIN skyclass.feature_set AS f USING (feature_set_id) "
        "JOIN skyclass.catalog AS c USING (catalog_id) WHERE v.model_version_id = %s",
        (model_version_id,),
    ).fetchone()
    if row is None:
        raise ValueError(f"model version {model_version_id} does not exist")
    catalog_table = sql.Identifier("catalogs", str(row[0]))
    features = sql.Identifier("features", str(row[1]))
    if values.ndim != 2 or values.shape[1] != int(row[2]):
        raise ValueError(f"x must have shape (n, {row[2]}), not {values.shape}")
    with conn.transaction():
        if object_ids is None:
            first = conn.execute(
                sql.SQL("SELECT coalesce(max(object_id), 0) + 1 FROM {}").format(catalog_table)
            ).fetchone()
            assert first is not None
            ids = list(range(int(first[0]), int(first[0]) + len(values)))
        else:
            ids = [int(i) for i in object_ids]
            if len(ids) != len(values):
                raise ValueError(f"{len(ids)} object_ids for {len(values)} rows")
        with conn.cursor().copy(
            sql.SQL("COPY {} (object_id, ra, dec) FROM STDIN (FORMAT BINARY)").format(catalog_table)
        ) as copy:
            copy.set_types(["int8", "float8", "float8"])
            for i in ids:
                copy.write_row((i, (i * 0.37) % 360.0, (i * 0.011) % 180.0 - 90.0))
        with conn.cursor().copy(
            sql.SQL("COPY {} (object_id, x, v) FROM STDIN").format(features)
        ) as copy:
            for i, r in zip(ids, values, strict=True):
                as_list = [float(v) for v in r]
                vector = None if np.isnan(r).any() else "[" + ",".join(map(repr, as_list)) + "]"
                copy.write_row((i, as_list, vector))
    return ids
