"""The compact prediction codec: SQL and its Python mirror agree, within the documented bounds.

``skyclass.prediction_codec`` gives the SQL that encodes rows into a run table and
decodes them for the view; ``skyclass.score.codec`` mirrors it in numpy (the PDF loss
benchmark uses the mirror). Random probability vectors and PDFs, edge values included
(0, 1, ties, a PDF with all its mass in one bin, a zero PDF), go through the real SQL:
the decoded values must equal the mirror's and lie within the bounds the docs quote.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from skyclass.score.codec import (
    MAX_CDF_ERROR,
    MAX_MASS_ERROR,
    MAX_PROBABILITY_ERROR,
    point_estimate_error,
    quantise_pdf,
    quantise_probabilities,
)
from tests.conftest import TEMPLATE, drop_database, new_database
from tests.score.models import N_FEATURES, case
from tests.support.registry import register_test_model

EDGES = [0.0, 0.1, 0.25, 0.3, 0.5, 0.55, 0.6, 0.8, 0.9, 1.0, 1.2, 1.3, 1.5, 1.6, 1.8, 1.9, 2.0]


@pytest.fixture(scope="module")
def url(server_url: str, template_url: str) -> Iterator[str]:
    database = new_database(server_url, TEMPLATE)
    try:
        yield database
    finally:
        drop_database(server_url, database)


def _version(conn: psycopg.Connection[Any], classes: list[str], edges: list[float] | None) -> int:
    """A model version with these classes (the codec reads only classes, task and bin edges).

    The registered estimator is a 3-class test model; its row is then given other classes
    (the registry's immutability trigger is off for that one update).
    """
    c = case("hgb_multiclass")
    version = register_test_model(conn, c.estimator, classes=c.classes, n_features=N_FEATURES)
    conn.execute("ALTER TABLE skyclass.model_version DISABLE TRIGGER USER")
    conn.execute(
        "UPDATE skyclass.model_version SET classes = %s, bin_edges = %s, task = %s "
        "WHERE model_version_id = %s",
        (classes, edges, "photoz" if edges else "classification", version),
    )
    conn.execute("ALTER TABLE skyclass.model_version ENABLE TRIGGER USER")
    return version


def _roundtrip(
    conn: psycopg.Connection[Any], version: int, p: np.ndarray, z: np.ndarray | None
) -> list[tuple[Any, ...]]:
    codec = conn.execute(
        "SELECT columns, encode, decode, decode_labels FROM skyclass.prediction_codec(%s)",
        (version,),
    ).fetchone()
    assert codec is not None
    columns, encode, decode, labels = codec
    conn.execute(sql.SQL("CREATE TEMPORARY TABLE stored ({})").format(sql.SQL(columns)))
    zcols = ["z_mean", "z_median", "z_mode", "z_lo68", "z_hi68", "z_lo95", "z_hi95"]
    conn.execute(
        "CREATE TEMPORARY TABLE source (object_id bigint, p real[], "
        + ", ".join(f"{c} real" for c in zcols)
        + ")"
    )
    for i, row in enumerate(p):
        values = [None] * 7 if z is None else [float(v) for v in z[i]]
        conn.execute(
            "INSERT INTO source VALUES (%s, %s::real[], %s, %s, %s, %s, %s, %s, %s)",
            (i, [float(v) for v in row], *values),
        )
    conn.execute(sql.SQL("INSERT INTO stored SELECT {} FROM source AS s").format(sql.SQL(encode)))
    return conn.execute(
        sql.SQL("SELECT {}, {} FROM stored AS t ORDER BY t.object_id").format(
            sql.SQL(decode), sql.SQL(labels)
        )
    ).fetchall()


def test_probabilities_round_trip_within_the_bound(url: str) -> None:
    rng = np.random.default_rng(1)
    p = rng.dirichlet([0.3, 0.3, 0.3], size=400).astype(np.float32)
    p[:4] = [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]]
    with psycopg.connect(url) as conn:
        version = _version(conn, ["GALAXY", "QSO", "STAR"], None)
        rows = _roundtrip(conn, version, p, None)
        conn.rollback()
    got = np.array([r[9] for r in rows], dtype=np.float64)
    # real values: equal as float4 (the text form is the shortest that reads back as it)
    assert np.array_equal(got.astype(np.float32), quantise_probabilities(p).astype(np.float32))
    assert np.abs(got - p).max() <= MAX_PROBABILITY_ERROR
    # Top label: the first of the model's (not the stored) largest probabilities.
    top = np.argmax(p, axis=1)
    assert [r[8] for r in rows] == [["GALAXY", "QSO", "STAR"][k] for k in top]
    assert [r[8] for r in rows[:4]] == ["GALAXY", "QSO", "GALAXY", "GALAXY"]
    assert np.allclose([r[0] for r in rows], got[np.arange(len(p)), top])
    assert all(r[1:8] == (None,) * 7 for r in rows)


def test_pdfs_round_trip_within_the_bounds(url: str) -> None:
    rng = np.random.default_rng(2)
    n_bins = len(EDGES) - 1
    p = rng.dirichlet(np.full(n_bins, 0.2), size=300).astype(np.float32)
    p[0] = 0
    p[0, 5] = 1
    z = np.sort(rng.uniform(-0.1, 2.1, size=(300, 7)), axis=1).astype(np.float32)
    with psycopg.connect(url) as conn:
        version = _version(conn, [f"b{k}" for k in range(n_bins)], EDGES)
        rows = _roundtrip(conn, version, p, z)
        conn.rollback()
    got = np.array([r[9] for r in rows], dtype=np.float64)
    assert np.array_equal(got.astype(np.float32), quantise_pdf(p).astype(np.float32))
    assert np.abs(got - p).max() <= MAX_MASS_ERROR
    cdf_error = np.abs(np.cumsum(got, axis=1) - np.cumsum(p, axis=1)).max()
    assert cdf_error <= MAX_CDF_ERROR + 1e-6
    assert np.abs(got.sum(axis=1) - 1).max() <= 1e-6
    assert rows[0][9][5] == 1.0 and rows[0][0] == 1.0
    stored_z = np.array([r[1:8] for r in rows], dtype=np.float64)
    expected = np.clip(z.astype(np.float64), EDGES[0], EDGES[-1])
    assert np.abs(stored_z - expected).max() <= point_estimate_error(EDGES)
