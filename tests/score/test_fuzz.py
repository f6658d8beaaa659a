"""Thousands of random calls of every skyclass SQL function: a value or an error, never a crash.

Arguments: NULL, NaN, +-inf, signed zeros, subnormals, float4 overflow, empty,
wrong-length, 2-D, NULL-holding, non-1 lower bound and 10^6-element arrays,
unknown, negative and extreme model versions, and a registered version that
is not compiled. Afterwards the postmaster has
not restarted and its log shows no backend killed by a signal.
"""

from __future__ import annotations

import math
import random
from typing import Any

import psycopg
import pytest

from skyclass.db.cluster import EmbeddedCluster
from tests.score.conftest import Registered, postmaster_log, register_cases
from tests.score.models import N_FEATURES, case
from tests.support.registry import register_test_model

N_CALLS = 3000
SEED = 4242
FUNCTIONS = ("predict", "predict_top_label", "predict_top_probability", "model_info")
# SQLSTATEs the functions (and the argument casts) may raise for bad arguments.
EXPECTED_STATES = {
    "22023",  # invalid_parameter_value: wrong length, 2-D
    "22004",  # null_value_not_allowed: NULL element
    "42704",  # undefined_object: unknown model version
    "55000",  # object_not_in_prerequisite_state: model version not compiled
    "22003",  # numeric_value_out_of_range: float8 -> real overflow in the cast
    "2202E",  # array_subscript_error: malformed array literal bounds
    "22P02",  # invalid_text_representation: malformed array literal
}
SPECIAL_VALUES = (
    math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    3.4028234663852886e38,
    -3.4028234663852886e38,
    1e39,
    -1e300,
    22.5,
    -9999.0,
)


def _value(rng: random.Random) -> float | None:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(SPECIAL_VALUES)
    if roll < 0.33:
        return None
    return rng.uniform(-40.0, 40.0)


def _features(rng: random.Random) -> tuple[str, Any]:
    """A features argument: (SQL placeholder with cast, value)."""
    roll = rng.random()
    if roll < 0.05:
        return "%s::real[]", None
    if roll < 0.10:
        return "%s::real[]", []
    if roll < 0.20:
        n = rng.choice([1, N_FEATURES - 1, N_FEATURES + 1, 2 * N_FEATURES, 100])
        return "%s::real[]", [_value(rng) for _ in range(n)]
    if roll < 0.27:
        rows = rng.choice([1, 3, N_FEATURES])
        cols = rng.choice([1, 3, N_FEATURES])
        return "%s::real[]", [[_value(rng) for _ in range(cols)] for _ in range(rows)]
    if roll < 0.30:
        low = rng.choice([-5, 0, 2, 1000])
        body = ",".join(rng.choice(["1", "NaN", "-Infinity", "2.5e3"]) for _ in range(N_FEATURES))
        return f"'[{low}:{low + N_FEATURES - 1}]={{{body}}}'::real[]", None
    # The right length, with a few odd values (NULLs included sometimes).
    values: list[float | None] = [rng.uniform(10.0, 30.0) for _ in range(N_FEATURES)]
    for _ in range(rng.randint(0, 4)):
        values[rng.randrange(N_FEATURES)] = _value(rng)
    return "%s::real[]", values


def _version(rng: random.Random, good: list[int], uncompiled: int) -> Any:
    roll = rng.random()
    if roll < 0.7:
        return rng.choice(good)
    if roll < 0.75:
        return uncompiled
    unknown = [None, -1, 0, -(2**63), 2**63 - 1, uncompiled + 1, rng.randint(-(10**9), 10**9)]
    return rng.choice(unknown)


def _call(
    conn: psycopg.Connection[Any], rng: random.Random, good: list[int], uncompiled: int
) -> str:
    """One random call; returns 'ok', 'null' or the SQLSTATE it raised."""
    function = rng.choice(FUNCTIONS)
    version = _version(rng, good, uncompiled)
    if function == "model_info":
        query, params = "SELECT (skyclass.model_info(%s::bigint)).*", [version]
    else:
        placeholder, features = _features(rng)
        # A literal array (odd lower bounds) has no placeholder of its own.
        params = [version, features] if "%s" in placeholder else [version]
        query = f"SELECT skyclass.{function}(%s::bigint, {placeholder})"
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.Error as exc:
        assert exc.sqlstate is not None, f"{query} {params!r}: error without SQLSTATE: {exc}"
        assert exc.sqlstate in EXPECTED_STATES, f"{query}: unexpected {exc.sqlstate}: {exc}"
        return exc.sqlstate
    assert row is not None
    if row[0] is None:
        return "null"
    if function == "predict":
        assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in row[0])
        assert abs(sum(row[0]) - 1.0) < 1e-5
    elif function == "predict_top_probability":
        assert 0.0 < row[0] <= 1.0
    return "ok"


@pytest.fixture(scope="module")
def fuzz_versions(scoring_url: str) -> Registered:
    return register_cases(scoring_url, ("hgb_binary", "rf_multiclass", "et_multiclass"))


@pytest.fixture(scope="module")
def uncompiled(scoring_url: str, fuzz_versions: Registered) -> int:
    """The newest model version of the database, registered without an artifact."""
    c = case("rf_multiclass")
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        return register_test_model(
            conn, c.estimator, classes=c.classes, n_features=N_FEATURES, model="rf_multiclass"
        )


def _start_time(url: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def test_random_calls_return_or_raise_with_sqlstate(
    scoring_url: str,
    fuzz_versions: Registered,
    uncompiled: int,
    pg_cluster: EmbeddedCluster | None,
) -> None:
    good = [v for methods in fuzz_versions.versions.values() for v in methods.values()]
    started = _start_time(scoring_url)
    log_before = len(postmaster_log(pg_cluster))
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {}
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        for _ in range(N_CALLS):
            outcome = _call(conn, rng, good, uncompiled)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # Huge arrays: a million elements must be refused by length, quickly and safely.
        for function in FUNCTIONS[:3]:
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="not 1000000"):
                conn.execute(
                    f"SELECT skyclass.{function}(%s, array_fill('NaN'::real, ARRAY[1000000]))",
                    (good[0],),
                )
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="2-dimensional"):
            conn.execute(
                "SELECT skyclass.predict(%s, array_fill(1::real, ARRAY[1000, 1000]))", (good[0],)
            )
    # Every kind of outcome happened, so the fuzzer reached each path.
    assert outcomes["ok"] > 500
    for state in ("22023", "22004", "42704", "55000"):
        assert outcomes.get(state, 0) > 20, outcomes
    assert outcomes.get("null", 0) > 20

    assert _start_time(scoring_url) == started, "the postmaster restarted"
    new_log = postmaster_log(pg_cluster)[log_before:]
    assert "terminated by signal" not in new_log
    assert "server process" not in new_log or "was terminated" not in new_log
