"""In-database scoring equals scikit-learn: every estimator, binary, 3-class and a 10-bin PDF.

``skyclass.predict`` must give ``predict_proba`` of the fitted estimator after
the same calibration (``skyclass.train.calibration.apply_calibration``, the
numpy reference) within 1e-6, the same argmax everywhere, and probabilities
summing to 1 within 1e-6, on SDSS17 photometry (float32) with 10% NaN.
"""

from __future__ import annotations

import ctypes
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from skyclass.compile import CompiledArtifact, compile_estimator
from tests.score.conftest import Registered
from tests.score.models import CASES, N_FEATURES, case, sdss17
from tests.support.registry import register_test_model

METHODS = ("identity", "temperature", "isotonic")
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def eval_rows(scoring_url: str) -> np.ndarray:
    """The evaluation rows, also loaded into table parity_rows(row_id, features real[])."""
    x = sdss17().x_eval
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE parity_rows (row_id int PRIMARY KEY, features real[] NOT NULL)")
        with conn.cursor().copy(
            "COPY parity_rows (row_id, features) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int4", "float4[]"])
            for i, row in enumerate(x):
                copy.write_row((i, [float(v) for v in row]))
    return x


def _scores(url: str, version: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT skyclass.predict(%(v)s, features),
                   skyclass.predict_top_label(%(v)s, features),
                   skyclass.predict_top_probability(%(v)s, features)
              FROM parity_rows ORDER BY row_id
            """,
            {"v": version},
        ).fetchall()
    proba = np.array([r[0] for r in rows], dtype=np.float64)
    return proba, [r[1] for r in rows], np.array([r[2] for r in rows], dtype=np.float64)


def test_evaluation_rows_have_missing_values(eval_rows: np.ndarray) -> None:
    missing = np.isnan(eval_rows).mean()
    assert 0.08 < missing < 0.12
    assert np.isnan(eval_rows).any(axis=1).mean() > 0.5


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CASES)
def test_predict_matches_scikit_learn(
    scoring_url: str, registered: Registered, eval_rows: np.ndarray, name: str, method: str
) -> None:
    c = case(name)
    proba, labels, top = _scores(scoring_url, registered.versions[name][method])
    reference = c.reference(eval_rows, method)

    assert proba.shape == reference.shape == (len(eval_rows), len(c.classes))
    assert np.abs(proba - reference).max() <= TOLERANCE
    assert np.abs(proba.sum(axis=1) - 1.0).max() <= TOLERANCE
    expected_labels = [c.classes[k] for k in reference.argmax(axis=1)]
    assert labels == expected_labels
    assert np.abs(top - reference.max(axis=1)).max() <= TOLERANCE


def test_model_info_reports_layout_and_loading(scoring_url: str, registered: Registered) -> None:
    version = registered.versions["hgb_binary"]["isotonic"]
    artifact = case("hgb_binary").artifact
    with psycopg.connect(scoring_url) as conn:
        before = conn.execute("SELECT * FROM skyclass.model_info(%s)", (version,)).fetchone()
        conn.execute("SELECT skyclass.predict(%s, %s::real[])", (version, [0.0] * N_FEATURES))
        after = conn.execute("SELECT loaded FROM skyclass.model_info(%s)", (version,)).fetchone()
    assert before == (
        N_FEATURES,
        2,
        ["QSO", "not_QSO"],
        1,
        "binary_expand",
        "isotonic",
        artifact.sha256_hex,
        False,
    )
    assert after == (True,)


def test_parallel_workers_score_like_the_leader(
    scoring_url: str, registered: Registered, eval_rows: np.ndarray
) -> None:
    """Parallel workers look the model up and load the library themselves: same results."""
    version = registered.versions["rf_multiclass"]["temperature"]
    query = "SELECT row_id, skyclass.predict(%s, features) AS p FROM parity_many ORDER BY row_id"
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE parity_many AS SELECT g * 10000 + row_id AS row_id, features "
            "FROM parity_rows, generate_series(0, 9) AS g"
        )
        conn.execute("ANALYZE parity_many")
        conn.execute("SET max_parallel_workers_per_gather = 0")
        serial = conn.execute(query, (version,)).fetchall()
        for setting in (
            "max_parallel_workers_per_gather = 2",
            "parallel_setup_cost = 0",
            "parallel_tuple_cost = 0",
            "min_parallel_table_scan_size = 0",
            "parallel_leader_participation = off",
        ):
            conn.execute(f"SET {setting}")
        plan = conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, FORMAT JSON) "
            "SELECT sum((skyclass.predict(%s, features))[1]) FROM parity_many",
            (version,),
        ).fetchone()
        parallel = conn.execute(query, (version,)).fetchall()
    assert plan is not None
    assert _workers_launched(plan[0][0]["Plan"]) >= 1
    assert parallel == serial
    assert len(serial) == 10 * len(eval_rows)


def _workers_launched(node: dict[str, Any]) -> int:
    own = int(node.get("Workers Launched", 0))
    return own + sum(_workers_launched(child) for child in node.get("Plans", []))


# -- the TL2cgen 1.0.0 union bug ---------------------------------------------------------
# union Entry { int missing; double fvalue; } tests `missing == -1`: a double whose low 32
# bits are all ones is read as missing. skyclass.predict takes real[]: every float widened
# to double has its low 29 bits zero, so no input can alias the missing marker.

ALIAS = struct.unpack("<d", struct.pack("<Q", 0x3FF80000_FFFFFFFF))[0]  # 1.5000000009...


class _Entry(ctypes.Union):
    _fields_ = [("missing", ctypes.c_int), ("fvalue", ctypes.c_double)]


@pytest.fixture(scope="module")
def step_model() -> Iterator[tuple[Any, CompiledArtifact]]:
    """One feature, one split near 1.0; missing values go left (the bigger side), 1.5 right."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(0, 1, 700), rng.uniform(1.2, 3, 300)]).astype(np.float32)
    y = (x > 1.1).astype(int)
    forest = RandomForestClassifier(
        n_estimators=1, max_depth=1, bootstrap=False, random_state=0
    ).fit(x[:, None], y)
    yield forest, compile_estimator(forest, n_features=1, parallel_comp=1)


def test_union_bug_exists_for_doubles_but_not_for_float4(
    scoring_url: str, step_model: tuple[Any, CompiledArtifact]
) -> None:
    forest, artifact = step_model
    assert struct.pack("<d", ALIAS)[:4] == b"\xff\xff\xff\xff"  # little-endian low word
    missing_proba = forest.predict_proba(np.array([[np.nan]], dtype=np.float32))[0]
    value_proba = forest.predict_proba(np.array([[ALIAS]], dtype=np.float32))[0]
    assert missing_proba.argmax() == 0 and value_proba.argmax() == 1

    # The generated code itself, fed the double: the value is taken as missing (the bug).
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.so"
        path.write_bytes(artifact.library)
        lib = ctypes.CDLL(str(path))
        result = (ctypes.c_double * 2)()
        entry = (_Entry * 1)()
        entry[0].fvalue = ALIAS
        lib.predict(entry, 0, result)
        assert list(result) == pytest.approx(list(missing_proba))

    # The extension, given the same number as real: the value is a value.
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        version = register_test_model(
            conn, forest, classes=["low", "high"], n_features=1, model="step", artifact=artifact
        )
        got = conn.execute(
            "SELECT skyclass.predict(%s, ARRAY[%s::float8]::real[])", (version, ALIAS)
        ).fetchone()
    assert got is not None
    assert got[0] == pytest.approx(list(value_proba), abs=TOLERANCE)


def test_no_float4_widens_to_the_missing_marker() -> None:
    """Every float32 bit pattern class: widened, its low 32 bits are never 0xFFFFFFFF."""
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    specials = np.array(
        [0, 0x80000000, 0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x7F800000, 0xFF800000, 0x7FFFFFFF],
        dtype=np.uint32,
    )
    floats = np.concatenate([bits, specials]).view(np.float32)
    with np.errstate(invalid="ignore"):  # signalling NaN patterns are part of the sample
        widened = floats.astype(np.float64).view(np.uint64)
    low = widened & np.uint64(0xFFFFFFFF)
    assert not (low == np.uint64(0xFFFFFFFF)).any()
    finite = np.isfinite(floats)
    assert ((widened[finite] & np.uint64(0x1FFFFFFF)) == 0).all()
