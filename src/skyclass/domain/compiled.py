"""The domain classifier as a model version: registered, compiled and scored in the database.

A fitted domain classifier (a binary HistGradientBoosting) is registered as a
version of the model ``<model>_domain`` with classes ``(training, catalog)``,
the base version's snapshot (its training side) and feature definition, and
a training run and evaluation holding its fold AUCs. It is then compiled by
the compile step like any model (Treelite checkpoint, TL2cgen, gcc,
``skyclass.model_artifact``), so ``skyclass.predict`` scores it and
``skyclass.domain_propensity`` gives the propensity of every catalog object
without the rows leaving the server.

Registering an artifact needs a superuser (native code, revision 0008) and
the ``skyclass`` extension; without either the version is still registered
and the run falls back to scikit-learn in the client (``scorer = 'python'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from skyclass.domain.classifier import HGB_PARAMS, DomainFit
from skyclass.domain.errors import DomainError
from skyclass.registry.models import VersionRef

#: The two classes of every domain classifier, in the order of its outputs.
CLASSES = ("training", "catalog")
ESTIMATOR = "hist_gradient_boosting"
SUFFIX = "_domain"
MARKER = "Domain classifier of model "


def domain_model_name(model: str) -> str:
    """``<model>_domain``, cut so that it stays a valid 63-character model name."""
    return model[: 63 - len(SUFFIX)] + SUFFIX


@dataclass(frozen=True)
class DatabaseScoring:
    """Whether this connection can compile and score a domain classifier in the database."""

    possible: bool
    reason: str


def database_scoring(conn: psycopg.Connection[Any]) -> DatabaseScoring:
    """Compiling needs a superuser (artifacts are native code) and the skyclass extension."""
    row = conn.execute(
        "SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false), "
        "to_regprocedure('skyclass.predict(bigint, real[])') IS NOT NULL"
    ).fetchone()
    assert row is not None
    if not row[1]:
        return DatabaseScoring(False, "the skyclass extension is not installed")
    if not row[0]:
        return DatabaseScoring(
            False, "only a superuser may register the compiled domain classifier (native code)"
        )
    return DatabaseScoring(True, "")


def register_domain_version(
    conn: psycopg.Connection[Any],
    version: VersionRef,
    catalog: str,
    fit: DomainFit,
    checkpoint: bytes,
) -> int:
    """Register ``fit`` as a new version of ``<model>_domain``; returns its model_version_id.

    Commits. The training run records the pair and the sizes; the evaluation
    holds the fold AUCs as metric ``auc`` (stage raw).
    """
    name = domain_model_name(version.model)
    started = datetime.now(UTC)
    with conn.transaction():
        conn.execute(
            "INSERT INTO skyclass.model (name, task, description) "
            "VALUES (%s, 'classification', %s) ON CONFLICT (name) DO NOTHING",
            (name, f"{MARKER}{version.model}: training snapshot against application catalogs"),
        )
        row = conn.execute(
            "SELECT model_id, coalesce(description, '') FROM skyclass.model WHERE name = %s "
            "FOR UPDATE",
            (name,),
        ).fetchone()
        assert row is not None
        if not str(row[1]).startswith(MARKER):
            raise DomainError(
                f"model {name!r} exists and is not the domain classifier of {version.model!r}: "
                "rename it to run skyclass domain on this model"
            )
        model_id = int(row[0])
        settings = {
            "domain_of": version.label,
            "model_version_id": version.model_version_id,
            "catalog": catalog,
            "n_train": fit.n_train,
            "n_sample": fit.n_sample,
            "seed": fit.seed,
        }
        run, evaluation = record_fit(
            conn,
            model_id,
            version.snapshot_id,
            settings,
            started,
            (ESTIMATOR, dict(HGB_PARAMS), fit.seed, None),
        )
        conn.execute(
            "INSERT INTO skyclass.metric (evaluation_id, name, stage, mean, std, fold_values) "
            "VALUES (%s, 'auc', 'raw', %s, %s, %s)",
            (evaluation, fit.auc, fit.auc_std, list(fit.fold_auc)),
        )
        created = conn.execute(
            "INSERT INTO skyclass.model_version (model_id, version, training_run_id, "
            "evaluation_id, snapshot_id, feature_set_id, task, estimator, params, n_features, "
            "classes, checkpoint) SELECT %s, coalesce(max(version), 0) + 1, %s, %s, %s, %s, "
            "'classification', %s, %s, %s, %s, %s FROM skyclass.model_version "
            "WHERE model_id = %s RETURNING model_version_id",
            (
                model_id,
                run,
                evaluation,
                version.snapshot_id,
                version.feature_set_id,
                ESTIMATOR,
                Jsonb(dict(HGB_PARAMS)),
                version.n_features,
                list(CLASSES),
                checkpoint,
                model_id,
            ),
        ).fetchone()
        assert created is not None
    return int(created[0])


def record_fit(
    conn: psycopg.Connection[Any],
    model_id: int,
    snapshot_id: int,
    settings: dict[str, Any],
    started: datetime,
    estimator: tuple[str, dict[str, Any], int, float | None],
) -> tuple[int, int]:
    """Insert the training run and the candidate evaluation of a model fitted outside
    ``skyclass train`` (a domain classifier, an anomaly forest); their ids.

    ``estimator`` is (name, params, seed, fit_seconds). Library versions, git
    commit and OS user are recorded as ``skyclass train`` records them. Does
    not commit.
    """
    from skyclass.train.pipeline import insert_training_run

    run = insert_training_run(conn, model_id, snapshot_id, settings, started)
    name, params, seed, fit_seconds = estimator
    evaluation = conn.execute(
        "INSERT INTO skyclass.evaluation (training_run_id, estimator, role, params, seed, "
        "fit_seconds) VALUES (%s, %s, 'candidate', %s, %s, %s) RETURNING evaluation_id",
        (run, name, Jsonb(params), seed, fit_seconds),
    ).fetchone()
    assert evaluation is not None
    return run, int(evaluation[0])


def checkpoint_of(fit: DomainFit, n_features: int) -> bytes:
    """The Treelite checkpoint of the refitted domain classifier."""
    from skyclass.compile.checkpoint import treelite_checkpoint

    return treelite_checkpoint(fit.model, n_features=n_features)


def compile_domain_version(conn: psycopg.Connection[Any], domain_version_id: int) -> None:
    """Compile the registered domain classifier and register its artifact (commits)."""
    from skyclass.compile.store import compile_model_version

    compile_model_version(domain_version_id, conn=conn)


def score_sql(
    conn: psycopg.Connection[Any],
    domain_version_id: int,
    catalog: str,
    clip: tuple[int, int, float, float],
) -> None:
    """Score ``catalog`` in the database into the temporary table ``domain_scored``.

    Columns ``object_id``, ``propensity``, ``weight``, ``clipped``: the
    propensity from ``skyclass.domain_propensity`` and the weight from
    ``skyclass.importance_weight`` with ``clip`` = (n_train, n_sample, w_min,
    w_max). The table lives until the transaction ends.
    """
    conn.execute(
        "CREATE TEMPORARY TABLE domain_scored ON COMMIT DROP AS "
        "SELECT p.object_id, p.propensity, w.weight::real AS weight, w.clipped "
        "FROM skyclass.domain_propensity(%s, %s) AS p CROSS JOIN LATERAL "
        "skyclass.importance_weight(p.propensity, %s, %s, %s, %s) AS w",
        (domain_version_id, catalog, *clip),
    )
