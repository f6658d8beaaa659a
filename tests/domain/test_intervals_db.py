"""Per-OOD-bin uncertainty stored at training time and applied in SQL, equal to the Python path.

A photo-z version (BOSS slice) and a star/galaxy/QSO version (SDSS17 slice) are
trained through the pipeline: each stores its rows (interval quantiles or
temperatures per OOD bin) and the OOD scorer's definition. The SQL functions
``skyclass.photoz_intervals`` and ``skyclass.recalibrated_probabilities`` give
the same intervals, flags and probabilities as :mod:`skyclass.probability.conformal`
with the rows read back by :mod:`skyclass.score.intervals`, and refuse bad
arguments with SQLSTATE 22023 (unknown version 42704, no rows 55000).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from skyclass.probability.conformal import (
    FLAG_NO_SCORE,
    FLAG_OK,
    FLAG_OUT_OF_DOMAIN,
    FLAG_TOO_FEW,
    MIN_BIN_SIZE,
    OOD_EDGES,
    photoz_intervals,
    recalibrate_probabilities,
)
from skyclass.probability.redshift import RedshiftGrid
from skyclass.score.intervals import (
    load_interval_calibration,
    load_probability_recalibration,
    version_intervals,
    version_probabilities,
)
from skyclass.train.pipeline import TrainResult, train_model
from skyclass.train.snapshot import create_snapshot
from tests.conftest import drop_database, new_database
from tests.support.registry import register_test_model
from tests.train.pipeline_data import (
    BOSS_SPEC,
    SDSS_SPEC,
    boss_slice,
    build_features,
    ingest_boss,
    ingest_sdss,
    sdss_slice,
)

EDGES = "0:1:0.05"
PERCENTILES = (0.0, 5.0, 19.99, 20.0, 45.0, 79.0, 85.0, 92.0, 96.0, 98.9, 99.0, 99.5, 100.0, None)


@pytest.fixture(scope="module")
def db(
    server_url: str, template_url: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """BOSS (6,000 rows) and SDSS17 (5,000 rows) catalogs with their feature sets."""
    url = new_database(server_url)
    tmp = tmp_path_factory.mktemp("intervals")
    try:
        ingest_boss(boss_slice(shared_data, tmp / "b.csv", 6000), url)
        build_features(BOSS_SPEC, url)
        ingest_sdss(sdss_slice(shared_data, tmp / "s.csv", 5000), url)
        build_features(SDSS_SPEC.read_text(), url)
        yield url
    finally:
        drop_database(server_url, url)


def _train(name: str, snapshot: int, url: str) -> TrainResult:
    return train_model(
        name,
        snapshot,
        estimator="hist_gradient_boosting",
        params={"max_iter": 30, "max_leaf_nodes": 15},
        baselines=(),
        importance=False,
        url=url,
    )


@pytest.fixture(scope="module")
def photoz(db: str) -> TrainResult:
    snap = create_snapshot(
        "boss_ugriz", "z_spec", task="photoz", bin_edges=EDGES, calibration_fraction=0.15, url=db
    )
    return _train("pz", snap.snapshot_id, db)


@pytest.fixture(scope="module")
def classes(db: str) -> TrainResult:
    snap = create_snapshot("sdss_ugriz", "class", calibration_fraction=0.3, url=db)
    return _train("sgq", snap.snapshot_id, db)


def test_training_stores_conformal_quantiles_per_ood_bin_and_the_scorer(
    db: str, photoz: TrainResult
) -> None:
    with psycopg.connect(db) as conn:
        stored = load_interval_calibration(conn, photoz.model_version_id)
        settings = conn.execute(
            "SELECT settings->'uncertainty' FROM skyclass.training_run WHERE training_run_id = %s",
            (photoz.training_run_id,),
        ).fetchone()
    assert stored is not None and settings is not None
    assert stored.edges == OOD_EDGES and stored.levels == (0.68, 0.95)
    # 15% of 6,000 rows calibrate; their percentiles are uniform (they are the reference),
    # so the top bin [95, 99) holds about 36 of them: too few for an interval.
    assert 800 < sum(stored.n) < 900
    assert stored.n[0] > 150 and stored.n[-1] < MIN_BIN_SIZE
    for level in stored.levels:
        for n, q in zip(stored.n, stored.conformal[level], strict=True):
            assert (q is None) == (n < MIN_BIN_SIZE)
        known = [q for q in stored.conformal[level] if q is not None]
        assert len(known) >= 5
    record = settings[0]
    assert record["method"] == "mondrian_conformal_half_widths"
    assert record["ood_scorer"]["reference"] == "calibration split (fold -1)"


def _pdfs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Broad and peaked PDFs on the 20-bin grid, as real (float4) masses."""
    alpha = np.where(rng.random((n, 1)) < 0.5, 0.3, 3.0)
    p = rng.dirichlet(np.ones(20), size=n) ** (1.0 / alpha)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def test_sql_intervals_equal_the_python_path_with_the_same_flags(
    db: str, photoz: TrainResult
) -> None:
    grid = RedshiftGrid.uniform(0.0, 1.0, 20)
    rng = np.random.default_rng(7)
    pdfs = _pdfs(rng, 3 * len(PERCENTILES))
    pct = np.array([math.nan if v is None else v for v in PERCENTILES] * 3)
    oor = np.zeros(pct.size, dtype=bool)
    oor[5] = True
    with psycopg.connect(db) as conn:
        stored = load_interval_calibration(conn, photoz.model_version_id)
        assert stored is not None
        got = [
            conn.execute(
                "SELECT * FROM skyclass.photoz_intervals(%s, %s::real[], %s, %s)",
                (
                    photoz.model_version_id,
                    p.tolist(),
                    None if math.isnan(v) else float(v),
                    bool(o),
                ),
            ).fetchone()
            for p, v, o in zip(pdfs, pct, oor, strict=True)
        ]
        via_version = version_intervals(conn, photoz.model_version_id, pdfs, pct, oor)
    want = photoz_intervals(pdfs.astype(np.float64), grid, pct, stored, oor)
    assert via_version.flag.tolist() == want.flag.tolist()
    # The stored edges are the parsed "0:1:0.05", not np.linspace: equal to rounding.
    assert np.allclose(via_version.lo[0.95], want.lo[0.95], atol=1e-12, equal_nan=True)
    flags = [row[4] for row in got if row is not None]
    assert flags == want.flag.tolist()
    assert {FLAG_OK, FLAG_OUT_OF_DOMAIN, FLAG_NO_SCORE, FLAG_TOO_FEW} == set(flags)
    for i, row in enumerate(got):
        assert row is not None
        for k, (level, side) in enumerate(((0.68, "lo"), (0.68, "hi"), (0.95, "lo"), (0.95, "hi"))):
            expected = (want.lo if side == "lo" else want.hi)[level][i]
            if math.isnan(expected):
                assert row[k] is None
            else:
                assert row[k] is not None and abs(row[k] - expected) < 2e-5, (i, k)
        if row[4] == FLAG_OK:
            assert 0.0 <= row[2] <= row[0] <= row[1] <= row[3] <= 1.0


def test_sql_recalibrated_probabilities_equal_the_python_path(
    db: str, classes: TrainResult
) -> None:
    rng = np.random.default_rng(8)
    proba = rng.dirichlet(np.ones(3) * 0.7, size=3 * len(PERCENTILES)).astype(np.float32)
    pct = np.array([math.nan if v is None else v for v in PERCENTILES] * 3)
    with psycopg.connect(db) as conn:
        stored = load_probability_recalibration(conn, classes.model_version_id)
        assert stored is not None and stored.edges == OOD_EDGES
        assert all(t is None or 0.3 < t < 3.0 for t in stored.temperature)
        got = [
            conn.execute(
                "SELECT skyclass.recalibrated_probabilities(%s, %s::real[], %s)",
                (classes.model_version_id, p.tolist(), None if math.isnan(v) else float(v)),
            ).fetchone()
            for p, v in zip(proba, pct, strict=True)
        ]
        via_version, _ = version_probabilities(conn, classes.model_version_id, proba, pct)
    want, flag = recalibrate_probabilities(proba.astype(np.float64), pct, stored)
    assert np.array_equal(via_version, want, equal_nan=True)
    for i, row in enumerate(got):
        assert row is not None
        if flag[i] != FLAG_OK:
            assert row[0] is None and np.isnan(want[i]).all()
        else:
            assert np.allclose(row[0], want[i], atol=1e-6) and abs(sum(row[0]) - 1) < 1e-5


def _sqlstate(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...]) -> str:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement, params)
    except psycopg.Error as exc:
        return str(exc.sqlstate)
    return "ok"


def test_bad_arguments_are_refused_with_a_sqlstate(
    db: str, photoz: TrainResult, classes: TrainResult
) -> None:
    pz, sgq = photoz.model_version_id, classes.model_version_id
    pdf = [0.05] * 20
    intervals = "SELECT * FROM skyclass.photoz_intervals(%s, %s::real[], %s)"
    recal = "SELECT skyclass.recalibrated_probabilities(%s, %s::real[], %s)"
    rng = np.random.default_rng(0)
    with psycopg.connect(db, autocommit=True) as conn:
        assert _sqlstate(conn, intervals, (pz, pdf, 50.0)) == "ok"
        assert _sqlstate(conn, intervals, (10**9, pdf, 50.0)) == "42704"
        assert _sqlstate(conn, intervals, (sgq, pdf, 50.0)) == "22023"
        assert _sqlstate(conn, intervals, (pz, pdf, 100.5)) == "22023"
        assert _sqlstate(conn, intervals, (pz, pdf, float("nan"))) == "22023"
        assert _sqlstate(conn, intervals, (pz, pdf[:-1], 50.0)) == "22023"
        assert _sqlstate(conn, intervals, (pz, [0.5] * 20, 50.0)) == "22023"
        assert _sqlstate(conn, recal, (sgq, [0.2, 0.3, 0.5], 50.0)) == "ok"
        assert _sqlstate(conn, recal, (10**9, [0.2, 0.3, 0.5], 50.0)) == "42704"
        assert _sqlstate(conn, recal, (sgq, [0.5, 0.5], 50.0)) == "22023"
        assert _sqlstate(conn, recal, (sgq, [0.2, 1.3, 0.5], 50.0)) == "22023"
        assert _sqlstate(conn, recal, (sgq, [0.2, None, 0.5], 50.0)) == "22023"
        assert _sqlstate(conn, recal, (sgq, [0.2, 0.3, 0.5], -1.0)) == "22023"
        # A version registered without the rows (as before migration 0014).
        model = HistGradientBoostingClassifier(max_iter=3).fit(
            rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
        )
        bare = register_test_model(conn, model, classes=["A", "B", "C"], n_features=3)
        assert _sqlstate(conn, recal, (bare, [0.2, 0.3, 0.5], 50.0)) == "55000"
        # NULL version or array: NULL, nothing read.
        assert conn.execute(recal, (None, [0.2, 0.3, 0.5], 50.0)).fetchone() == (None,)
        row = conn.execute(intervals, (pz, None, 50.0)).fetchone()
        assert row == (None, None, None, None, None)
