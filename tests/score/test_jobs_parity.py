"""The two scorers of a scoring job give the same rows: in the database and on the client.

One parity test for both implementations of the job (STYLE.md, practice 9):
the same run machinery scores the same catalog with ``skyclass.predict``
(database) and with the client-side fallback (Treelite GTIL on the
same artifact, the trainer's calibration, numpy point estimates), and every
column of every row must agree: probabilities, top probability and photo-z
point estimates within 1e-6 before storage, so within one quantum of the compact
storage (skyclass.score.codec) after it, top labels exactly. Both also agree with
scikit-learn's ``predict_proba`` after the same calibration. Models: 3-class
HistGradientBoosting with isotonic calibration, binary HistGradientBoosting
with temperature scaling (one sigmoid output), and an 8-bin photo-z
random forest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg import sql
from threadpoolctl import threadpool_limits

from skyclass.score.codec import (
    CDF_STEP,
    MAX_MASS_ERROR,
    MAX_PROBABILITY_ERROR,
    PROBABILITY_STEP,
    point_estimate_error,
)
from skyclass.score.jobs import score_catalog
from skyclass.train.photoz import RedshiftGrid, point_estimates
from tests.conftest import drop_database
from tests.score.jobs_support import add_objects, jobs_database, object_features, register
from tests.score.models import N_FEATURES, SEED, case, sdss17
from tests.support.registry import feature_table, register_test_model

CATALOG = "test_catalog"
TOLERANCE = 1e-6
PDF_BINS = 8


@dataclass(frozen=True)
class Setup:
    url: str
    versions: dict[str, int]
    ids: npt.NDArray[np.int64]
    x: npt.NDArray[np.float32]
    pdf_model: Any
    edges: tuple[float, ...]


def _photoz_model() -> tuple[Any, tuple[float, ...], list[str]]:
    from sklearn.ensemble import RandomForestClassifier

    data = sdss17()
    z = data.z_train
    edges = np.quantile(z, np.linspace(0, 1, PDF_BINS + 1))
    edges[-1] += 1e-6
    bins = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, PDF_BINS - 1)
    labels = np.array([f"b{k}" for k in range(PDF_BINS)])[bins]
    with threadpool_limits(1):
        model = RandomForestClassifier(
            n_estimators=10, max_depth=6, n_jobs=1, random_state=SEED
        ).fit(data.x_train, labels)
    return model, tuple(float(e) for e in edges), [str(c) for c in model.classes_]


@pytest.fixture(scope="module")
def setup(skyclass_extension: None, server_url: str, template_url: str) -> Iterator[Setup]:
    url = jobs_database(server_url)
    pdf_model, edges, pdf_classes = _photoz_model()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            versions = {
                "multiclass": register(conn, "hgb_multiclass", "isotonic"),
                "binary": register(conn, "hgb_binary", "temperature"),
                "photoz": register_test_model(
                    conn,
                    pdf_model,
                    classes=pdf_classes,
                    n_features=N_FEATURES,
                    task="photoz",
                    bin_edges=edges,
                    model="photoz_rf",
                    compiled=True,
                ),
            }
            x = object_features(3000, seed=11)
            ids = add_objects(conn, versions["multiclass"], x)
        yield Setup(url, versions, ids, x, pdf_model, edges)
    finally:
        drop_database(server_url, url)


def _rows(url: str, version: int) -> dict[int, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT object_id, top_label, top_probability, probabilities, z_mean, z_median, "
            "z_mode, z_lo68, z_hi68, z_lo95, z_hi95, run_id FROM skyclass.prediction "
            "WHERE model_version_id = %s ORDER BY object_id",
            (version,),
        ).fetchall()
    return {int(r[0]): tuple(r[1:]) for r in rows}


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(abs(float(a) - float(b)) <= tolerance * max(1.0, abs(float(a))))


@pytest.mark.parametrize("kind", ["multiclass", "binary", "photoz"])
def test_database_and_client_scorers_write_the_same_rows(setup: Setup, kind: str) -> None:
    version = setup.versions[kind]
    db_run = score_catalog(str(version), CATALOG, scorer="database", workers=2, url=setup.url)
    in_db = _rows(setup.url, version)
    client_run = score_catalog(
        str(version), CATALOG, scorer="client", workers=2, chunk_size=700, url=setup.url
    )
    on_client = _rows(setup.url, version)
    assert (db_run.scorer, client_run.scorer) == ("database", "client")
    assert db_run.status == client_run.status == "succeeded"
    assert sorted(in_db) == sorted(on_client) == setup.ids.tolist()
    # Within 1e-6 before storage: the same stored quantum or the next one.
    step = 2 * CDF_STEP if kind == "photoz" else PROBABILITY_STEP
    z_step = 2 * point_estimate_error(setup.edges) + TOLERANCE
    worst = 0.0
    for object_id, a in in_db.items():
        b = on_client[object_id]
        assert a[0] == b[0], f"object {object_id}: top label {a[0]} vs {b[0]}"
        assert _close(a[1], b[1], step + TOLERANCE)
        assert len(a[2]) == len(b[2])
        worst = max(worst, max(abs(p - q) for p, q in zip(a[2], b[2], strict=True)))
        for za, zb in zip(a[3:10], b[3:10], strict=True):
            assert _close(za, zb, z_step), f"object {object_id}: photo-z {a[3:10]} vs {b[3:10]}"
        assert (a[10], b[10]) == (db_run.run_id, client_run.run_id)
    assert worst <= step + TOLERANCE

    # And both are scikit-learn's probabilities after the same calibration.
    proba = np.array([in_db[i][2] for i in setup.ids.tolist()], dtype=np.float64)
    if kind == "photoz":
        with threadpool_limits(1):
            reference = setup.pdf_model.predict_proba(setup.x)
        assert np.abs(proba - reference).max() <= MAX_MASS_ERROR + TOLERANCE
        estimates = point_estimates(reference, RedshiftGrid(setup.edges))
        z_median = np.array([in_db[i][4] for i in setup.ids.tolist()], dtype=np.float64)
        assert np.abs(z_median - estimates.median).max() <= 1e-4
        assert all(r[3] is not None for r in in_db.values())
    else:
        name, method = (
            ("hgb_multiclass", "isotonic")
            if kind == "multiclass"
            else (
                "hgb_binary",
                "temperature",
            )
        )
        reference = case(name).reference(setup.x, method)
        assert np.abs(proba - reference).max() <= MAX_PROBABILITY_ERROR + TOLERANCE
        assert all(r[3] is None for r in in_db.values())
    n_classes = proba.shape[1]
    assert np.abs(proba.sum(axis=1) - 1.0).max() <= n_classes * (MAX_PROBABILITY_ERROR + TOLERANCE)


def test_client_scorer_only_new_objects(setup: Setup) -> None:
    version = setup.versions["binary"]
    score_catalog(str(version), CATALOG, scorer="database", workers=1, url=setup.url)
    before = _rows(setup.url, version)
    with psycopg.connect(setup.url, autocommit=True) as conn:
        new_x = object_features(250, seed=12)
        new_ids = add_objects(conn, version, new_x)
        run = score_catalog(
            str(version), CATALOG, only_new=True, scorer="client", chunk_size=100, url=setup.url
        )
        assert (run.write_kind, run.rows_scored, run.chunks_total) == ("insert", 250, 3)
        after = _rows(setup.url, version)
        assert {k: v for k, v in after.items() if k in before} == before
        expected = conn.execute(
            sql.SQL(
                "SELECT object_id, skyclass.predict(%s, x) FROM {} WHERE object_id = ANY(%s)"
            ).format(feature_table(conn, version)),
            (version, new_ids.tolist()),
        ).fetchall()
    assert len(expected) == 250
    for object_id, proba in expected:
        got = after[int(object_id)]
        assert got[-1] == run.run_id
        assert max(abs(p - q) for p, q in zip(got[2], proba, strict=True)) <= (
            MAX_PROBABILITY_ERROR + TOLERANCE
        )
