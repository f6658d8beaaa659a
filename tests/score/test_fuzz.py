"""Random calls of every function in schema skyclass: a value or an error, never a crash.

Every function and procedure of schema ``skyclass`` (read from ``pg_proc``, so
a new one cannot escape: the test fails when one has no spec here) is called
with random arguments: NULL, NaN, +-inf, signed zeros, subnormals, float4
overflow, empty, wrong-length, 2-D, NULL-holding and non-1 lower bound arrays,
unknown, negative and extreme ids, hostile names, and real ones (compiled
model versions, one registered without an artifact, a catalog with objects,
deployments and scoring runs the calls themselves start). Each call returns a
value that satisfies its function's invariants (probabilities in [0, 1]
summing to 1, ``lo95 <= lo68 <= median <= hi68 <= hi95``, distances within
the radius, ...) or raises an error with one of the SQLSTATEs its spec lists:
never a syntax error (42601) or an internal error (XX000). Afterwards the
postmaster has not restarted and its log shows no backend killed by a signal.

The default run makes ``N_CALLS`` calls; ``SKYCLASS_RELIABILITY=full`` (``make
reliability``) makes ``N_CALLS_FULL`` and prints the outcomes per SQLSTATE.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from skyclass.db.cluster import EmbeddedCluster
from tests.reliability.tier import FULL, count
from tests.score.conftest import Registered, postmaster_log, register_cases
from tests.score.models import N_FEATURES, case
from tests.support.registry import DEFAULT_CATALOG, add_test_objects, register_test_model

pytestmark = pytest.mark.reliability

N_CALLS = 4000
N_CALLS_FULL = 22000
SEED = 4242
NEVER = {"42601", "XX000", "XX001", "XX002"}  # syntax error, internal errors, corruption
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
HOSTILE_TEXT = (
    None,
    "",
    "x'; DROP TABLE skyclass.catalog; --",
    '"',
    "$$",
    "a" * 200,
    "../etc",
    "$(touch /tmp/skyclass-fuzz)",
    "NULL",
    "sgq:1",
    "Upper",
)
BIG = 2**63 - 1


@dataclass
class World:
    """What the database holds for the calls to name: real ids next to made-up ones."""

    versions: list[int]  # compiled model versions
    uncompiled: int
    classes: dict[int, tuple[str, ...]]
    models: list[str]
    catalog: str = DEFAULT_CATALOG
    catalog_table: str = f"catalogs.{DEFAULT_CATALOG}"
    feature_table: str = ""
    runs: list[int] = field(default_factory=list)
    deployments: list[str] = field(default_factory=lambda: ["fuzz_a", "fuzz_b"])
    photoz: int = 0  # a photo-z version with interval calibration rows (20 bins on [0, 1])


Call = tuple[str, list[Any]]


@dataclass(frozen=True)
class Spec:
    """How to call one function at random, what it may raise, and what its result must be."""

    call: Callable[[random.Random, World], Call]
    states: frozenset[str] = frozenset()
    check: Callable[[list[tuple[Any, ...]], list[Any], World], None] | None = None


# -- argument generators ---------------------------------------------------------------------
def _real(rng: random.Random) -> float | None:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(SPECIAL_VALUES)
    if roll < 0.33:
        return None
    return rng.uniform(-40.0, 40.0)


def _features(rng: random.Random) -> tuple[str, list[Any]]:
    """A features argument: (SQL with cast, parameters)."""
    roll = rng.random()
    if roll < 0.05:
        return "%s::real[]", [None]
    if roll < 0.10:
        return "%s::real[]", [[]]
    if roll < 0.20:
        n = rng.choice([1, N_FEATURES - 1, N_FEATURES + 1, 2 * N_FEATURES, 100])
        return "%s::real[]", [[_real(rng) for _ in range(n)]]
    if roll < 0.25:
        rows, cols = rng.choice([1, 3, N_FEATURES]), rng.choice([1, 3, N_FEATURES])
        return "%s::real[]", [[[_real(rng) for _ in range(cols)] for _ in range(rows)]]
    if roll < 0.28:
        low = rng.choice([-5, 0, 2, 1000])
        body = ",".join(rng.choice(["1", "NaN", "-Infinity", "2.5e3"]) for _ in range(N_FEATURES))
        return f"'[{low}:{low + N_FEATURES - 1}]={{{body}}}'::real[]", []
    if roll < 0.29:
        return "array_fill('NaN'::real, ARRAY[%s])", [rng.choice([10**5, 10**6])]
    values: list[float | None] = [rng.uniform(10.0, 30.0) for _ in range(N_FEATURES)]
    for _ in range(rng.randint(0, 4)):
        values[rng.randrange(N_FEATURES)] = _real(rng)
    return "%s::real[]", [values]


def _version(rng: random.Random, w: World) -> int | None:
    roll = rng.random()
    if roll < 0.7:
        return rng.choice(w.versions)
    if roll < 0.75:
        return w.uncompiled
    return rng.choice(
        [None, -1, 0, -(2**63), BIG, w.uncompiled + 1000, rng.randint(-(10**9), 10**9)]
    )


def _int(rng: random.Random, real: Sequence[int] = ()) -> int | None:
    if real and rng.random() < 0.6:
        return rng.choice(list(real))
    return rng.choice([None, -1, 0, 1, 2, 3, -(2**31), 2**31 - 1, rng.randint(-100, 10**6)])


def _bigint(rng: random.Random, real: Sequence[int] = ()) -> int | None:
    if real and rng.random() < 0.6:
        return rng.choice(list(real))
    return rng.choice([None, -1, 0, 1, -(2**63), BIG, rng.randint(-(10**12), 10**12)])


def _text(rng: random.Random, real: Sequence[str] = ()) -> str | None:
    if real and rng.random() < 0.6:
        return rng.choice(list(real))
    return rng.choice(HOSTILE_TEXT)


def _float(rng: random.Random, low: float, high: float) -> float | None:
    if rng.random() < 0.3:
        return rng.choice([math.nan, math.inf, -math.inf, None, -0.0, 1e300, -1.0, low, high])
    return rng.uniform(low, high)


def _bool(rng: random.Random) -> bool | None:
    return rng.choice([True, False, None])


def _pdf(rng: random.Random) -> Call:
    """A PDF: often valid (Dirichlet masses on increasing edges), else broken one way."""
    n = rng.choice([0, 1, 2, 3, 5, 20, 60])
    masses: list[Any] = list(
        np.random.default_rng(rng.randrange(2**32)).dirichlet(np.ones(max(n, 1)))
    )
    masses = [float(np.float32(m)) for m in masses[:n]]
    edges: list[Any] = sorted(rng.uniform(-5, 10) for _ in range(n + 1))
    roll = rng.random()
    if roll < 0.1:
        edges = edges[::-1]  # decreasing
    elif roll < 0.15 and n > 1:
        edges[1] = edges[0]  # equal edges
    elif roll < 0.25 and edges:
        edges[rng.randrange(len(edges))] = rng.choice((*SPECIAL_VALUES, None))
    elif roll < 0.35 and masses:
        masses[rng.randrange(len(masses))] = _real(rng)
    elif roll < 0.4 and masses:
        masses = [m * rng.choice([0.0, 0.5, 2.0, 1.01]) for m in masses]
    elif roll < 0.45:
        edges = edges[:-1]
    elif roll < 0.48:
        return "SELECT (skyclass.pdf_summary(%s::real[], %s::float8[])).*", [[masses], edges]
    elif roll < 0.5:
        return "SELECT (skyclass.pdf_summary(%s::real[], %s::float8[])).*", [None, edges]
    elif roll < 0.53 and n >= 2:
        low = rng.randint(-3, 3)
        body = ",".join(repr(m) for m in masses)
        return (
            f"SELECT (skyclass.pdf_summary('[{low}:{low + n - 1}]={{{body}}}'::real[],"
            " %s::float8[])).*",
            [edges],
        )
    return "SELECT (skyclass.pdf_summary(%s::real[], %s::float8[])).*", [masses, edges]


def _masses(rng: random.Random, n: int) -> list[Any]:
    """``n`` masses: often a valid probability vector, else broken one way."""
    size = n if rng.random() < 0.85 else rng.choice([0, 1, n - 1, n + 1, 40])
    masses: list[Any] = [
        float(np.float32(m))
        for m in np.random.default_rng(rng.randrange(2**32)).dirichlet(np.ones(max(size, 1)))
    ][:size]
    roll = rng.random()
    if roll < 0.15 and masses:
        masses[rng.randrange(len(masses))] = _real(rng)
    elif roll < 0.2 and masses:
        masses = [m * rng.choice([0.0, 0.5, 2.0]) for m in masses]
    elif roll < 0.23:
        return [masses, list(masses)]  # 2-D
    return masses


def _photoz_intervals(rng: random.Random, w: World) -> Call:
    version = w.photoz if rng.random() < 0.7 else _version(rng, w)
    return (
        "SELECT * FROM skyclass.photoz_intervals(%s, %s::real[], %s::float8, %s)",
        [version, _masses(rng, 20), _float(rng, 0.0, 100.0), _bool(rng)],
    )


def _recalibrated(rng: random.Random, w: World) -> Call:
    version = _version(rng, w)
    n = len(w.classes.get(version, ("a", "b", "c"))) if version is not None else 3
    return (
        "SELECT skyclass.recalibrated_probabilities(%s, %s::real[], %s::float8, %s)",
        [version, _masses(rng, n), _float(rng, 0.0, 100.0), _bool(rng)],
    )


# -- invariants ------------------------------------------------------------------------------
def _check_predict(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    p = rows[0][0]
    if p is None:
        return
    assert len(p) == len(w.classes[params[0]])
    assert all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in p), p
    assert abs(sum(p) - 1.0) < 1e-5, p


def _check_top_label(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    assert rows[0][0] is None or rows[0][0] in w.classes[params[0]]


def _check_top_probability(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    p = rows[0][0]
    assert p is None or 1.0 / len(w.classes[params[0]]) - 1e-6 <= p <= 1.0, p


def _check_model_info(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    n_features, n_classes, classes = rows[0][:3]
    if n_features is not None:
        assert n_features == N_FEATURES
        assert n_classes == len(classes) == len(w.classes[params[0]])


def _check_pdf(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    mean, median, mode, lo68, hi68, lo95, hi95 = rows[0]
    if mean is None:
        assert rows[0] == (None,) * 7
        return
    edges = params[-1]
    low, high = np.float32(edges[0]), np.float32(edges[-1])
    assert low <= lo95 <= lo68 <= median <= hi68 <= hi95 <= high, (rows[0], params)
    assert low <= mean <= high and low <= mode <= high, (rows[0], params)


def _check_intervals(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    lo68, hi68, lo95, hi95, flag = rows[0]
    if flag == "ok":
        assert 0.0 <= lo95 <= lo68 <= hi68 <= hi95 <= 1.0, (rows[0], params)
    else:
        assert (lo68, hi68, lo95, hi95) == (None,) * 4, (rows[0], params)
        assert flag in (None, "out_of_domain", "too_few_calibration", "no_ood_score"), flag


def _check_recalibrated(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    p = rows[0][0]
    if p is None:
        return
    assert len(p) == len(w.classes[params[0]]), (p, params)
    assert all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in p), p
    assert abs(sum(p) - 1.0) < 1e-5, p


def _check_distance(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    d = rows[0][0]
    if any(p is None for p in params):
        assert d is None
    elif all(math.isfinite(p) for p in params):
        assert 0.0 <= d <= 180.0, (d, params)


def _check_cone(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    radius = params[3]
    distances = [r[3] for r in rows]
    assert distances == sorted(distances)
    assert len({r[0] for r in rows}) == len(rows)
    assert all(0 <= d <= radius * 3600 * (1 + 1e-9) for d in distances)


def _check_match(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    radius, best_only = params[2], params[3]
    assert all(0 <= r[2] <= radius * (1 + 1e-9) for r in rows), params
    if best_only:
        assert len({r[0] for r in rows}) == len(rows) and all(r[3] == 1 for r in rows)
    ranks: dict[int, list[int]] = {}
    for r in rows:
        ranks.setdefault(r[0], []).append(r[3])
    assert all(sorted(v) == list(range(1, len(v) + 1)) for v in ranks.values())


def _check_codec(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    columns, encode, decode, labels = rows[0]
    assert columns.startswith("object_id bigint NOT NULL, top smallint NOT NULL")
    assert encode.startswith("s.object_id, ") and "AS top_probability" in decode
    assert labels.endswith("AS probabilities")


def _check_lock_key(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    assert (rows[0][0] is None) == (None in params)


def _check_class_changes(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    assert all(r[2] != r[4] for r in rows)


def _check_holder(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    # NULL, or the pid of a live backend (the fuzz's own session holds the runs it starts).
    (pid,) = rows[0]
    assert len(rows) == 1 and (pid is None or pid > 0), rows
    if None in params:
        assert pid is None


def _check_not_alive(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    # Random pids and start times name no live backend (NULL in, NULL out: STRICT-like).
    assert rows in ([(False,)], [(None,)]), rows
    if params[0] is None:
        assert rows[0][0] in (False, None)


def _spec_json(rng: random.Random) -> str | None:
    """A canonical-looking feature spec as JSON, or something hostile."""
    names = ["u_g", "g_r", "r", "x'; DROP TABLE t; --", ""]
    features = [
        {"name": rng.choice(names), "expr": rng.choice(["u - g", "g - r", "r", "$$"])}
        for _ in range(rng.randint(0, 4))
    ]
    return rng.choice(
        [
            None,
            json.dumps({"features": features}),
            json.dumps({"features": features}),
            json.dumps({"features": "u_g"}),
            json.dumps([1, 2]),
            "null",
            "{}",
            "not json",
        ]
    )


def _check_differences(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    (text,) = rows[0]
    if None in params:
        assert text is None
        return
    assert isinstance(text, str) and text
    if params[0] == params[1]:
        assert text == "same features", text


def _check_prefix(prefix: str) -> Callable[[list[tuple[Any, ...]], list[Any], World], None]:
    def check(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
        assert rows[0][0] is None or str(rows[0][0]).startswith(prefix), rows

    return check


def _check_existing_version(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    v = rows[0][0]
    assert v is None or v in w.versions or v == w.uncompiled, v


def _check_weight(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    weight, clipped = rows[0]
    assert params[3] <= weight <= params[4] and math.isfinite(weight), (rows, params)
    assert isinstance(clipped, bool)


def _check_propensity(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    assert all(0.0 <= r[1] <= 1.0 for r in rows), rows[:3]


def _counts(rng: random.Random) -> list[Any] | None:
    """A histogram: mostly non-negative counts, sometimes empty, negative or NULL-holding."""
    roll = rng.random()
    if roll < 0.05:
        return None
    n = rng.choice([0, 1, 3, 11, 11, 11])
    values: list[Any] = [rng.randint(0, 1000) for _ in range(n)]
    if roll < 0.15 and values:
        values[rng.randrange(n)] = rng.choice([None, -1, -(2**62), 2**62])
    return values


def _edges(rng: random.Random) -> list[Any] | None:
    """Bin edges: mostly 12 ascending values, sometimes descending, short or non-finite."""
    if rng.random() < 0.05:
        return None
    edges: list[Any] = sorted(rng.uniform(-5, 30) for _ in range(rng.choice([0, 2, 4, 12, 12])))
    roll = rng.random()
    if roll < 0.1:
        edges.reverse()
    elif roll < 0.2 and edges:
        edges[rng.randrange(len(edges))] = rng.choice([math.nan, math.inf, None, 1e308])
    return edges


def _check_healpix(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    pixel = rows[0][0]
    nside = params[0]
    assert pixel is None or 0 <= pixel < 12 * nside * nside, (pixel, params)


def _check_non_negative(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    value = rows[0][0]
    assert value is None or (math.isfinite(value) and value >= 0), (value, params)


def _check_level(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    assert rows[0][0] in ("ok", "warn", "alert", "low_count"), rows


def _check_alerts(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    minimum = {"ok": 0, "warn": 1, "alert": 2}[params[3]]
    rank = {"ok": 0, "warn": 1, "alert": 2, "low_count": 0}
    assert all(rank[r[7]] >= minimum for r in rows), rows[:3]
    assert len({r[0] for r in rows}) <= 1, "rows of one run"


# -- the specs, one per function of schema skyclass ------------------------------------------
def _predict(name: str) -> Callable[[random.Random, World], Call]:
    def call(rng: random.Random, w: World) -> Call:
        sql, params = _features(rng)
        return f"SELECT skyclass.{name}(%s::bigint, {sql})", [_version(rng, w), *params]

    return call


def _check_raw(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    raw = rows[0][0]
    assert raw is None or (len(raw) >= 1 and all(math.isfinite(x) for x in raw)), raw


def _reference(rng: random.Random) -> list[Any] | None:
    """A reference for score_percentile: often valid (sorted), else broken one way."""
    n = rng.choice([0, 1, 2, 3, 11, 1001])
    ref: list[Any] = sorted(rng.uniform(0.3, 0.8) for _ in range(n))
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.15 and n > 1:
        ref = ref[::-1]
    elif roll < 0.25 and ref:
        ref[rng.randrange(len(ref))] = rng.choice((*SPECIAL_VALUES, None))
    elif roll < 0.3 and n > 2:
        ref[1] = ref[2] = ref[0]  # ties are valid
    return ref


def _percentile_call(rng: random.Random, w: World) -> Call:
    return (
        "SELECT skyclass.score_percentile(%s::float8, %s::float8[])",
        [_float(rng, 0.0, 1.0), _reference(rng)],
    )


def _check_percentile(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    p = rows[0][0]
    if p is None or params[0] is None:
        return
    if math.isnan(params[0]):
        assert math.isnan(p)
        return
    assert 0.0 <= p <= 100.0, p
    ref = params[1]
    if params[0] < ref[0]:
        assert p == 0.0
    if params[0] >= ref[-1]:
        assert p == 100.0


def _vectors(rng: random.Random, k: int) -> Call:
    """k real[] arguments, mostly of one length, sometimes not."""
    sqls, params = [], []
    for _ in range(k):
        sql_text, p = _features(rng)
        sqls.append(sql_text)
        params.extend(p)
    return ", ".join(sqls), params


def _range_call(rng: random.Random, w: World) -> Call:
    args, params = _vectors(rng, 3)
    return f"SELECT skyclass.out_of_range({args})", params


def _check_range(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    flags = rows[0][0]
    assert flags is None or all(isinstance(f, bool) for f in flags), flags


def _fill_call(rng: random.Random, w: World) -> Call:
    args, params = _vectors(rng, 2)
    return f"SELECT skyclass.fill_missing({args})", params


def _check_fill(rows: list[tuple[Any, ...]], params: list[Any], w: World) -> None:
    out = rows[0][0]
    assert out is None or isinstance(out, list), out


def _ood_percentile_call(rng: random.Random, w: World) -> Call:
    sql_text, params = _features(rng)
    return f"SELECT skyclass.ood_percentile(%s::bigint, {sql_text})", [_version(rng, w), *params]


def _check_queue_iteration(rows: list[tuple[Any, ...]], args: list[Any], w: World) -> None:
    """A call that succeeds returns an iteration number >= 1."""
    assert len(rows) == 1 and isinstance(rows[0][0], int) and rows[0][0] >= 1, rows


def _check_dependence_run(rows: list[tuple[Any, ...]], args: list[Any], w: World) -> None:
    """A call that succeeds returns one dependence_run_id."""
    assert len(rows) == 1 and isinstance(rows[0][0], int), rows


C_STATES = frozenset({"22023", "22004", "42704", "55000", "22003", "2202E", "22P02", "54000"})
RUN_STATES = frozenset({"22023", "42704", "55000", "42P01", "42P07", "23505", "55P03"})
TRIGGER = frozenset({"0A000"})  # trigger functions can only be called as triggers


def _check_purity_threshold(rows: list[tuple[Any, ...]], args: list[Any], w: World) -> None:
    """At most one row: a probability threshold whose selection reaches the purity asked."""
    assert len(rows) <= 1
    for threshold, selected, purity, completeness, n in rows:
        assert 0 <= threshold <= 1 and 1 <= selected <= n
        assert purity >= args[2] - 1e-12 and 0 < completeness <= 1


SPECS: dict[str, Spec] = {
    "skyclass.predict(bigint,real[])": Spec(_predict("predict"), C_STATES, _check_predict),
    "skyclass.predict_top_label(bigint,real[])": Spec(
        _predict("predict_top_label"), C_STATES, _check_top_label
    ),
    "skyclass.predict_top_probability(bigint,real[])": Spec(
        _predict("predict_top_probability"), C_STATES, _check_top_probability
    ),
    "skyclass.predict_raw(bigint,real[])": Spec(_predict("predict_raw"), C_STATES, _check_raw),
    "skyclass.score_percentile(double precision,double precision[])": Spec(
        _percentile_call, frozenset({"22023", "22004", "22P02"}), _check_percentile
    ),
    "skyclass.out_of_range(real[],real[],real[])": Spec(
        _range_call, frozenset({"22023", "22003", "22004", "22P02", "54000"}), _check_range
    ),
    "skyclass.fill_missing(real[],real[])": Spec(
        _fill_call, frozenset({"22023", "22003", "22004", "22P02", "54000"}), _check_fill
    ),
    # No version of the fuzz world has an OOD forest: always refused (22023; casts 22003).
    "skyclass.ood_percentile(bigint,real[])": Spec(
        _ood_percentile_call, frozenset({"22023", "22003", "22P02", "54000"}), None
    ),
    # The OOD job engine: the fuzz world has no OOD forest, so these refuse with 22023
    # (refresh_ood only notes it), or 42704 for an unknown target.
    "skyclass.ood_start_run(bigint,integer,integer,text)": Spec(
        lambda rng, w: (
            "SELECT skyclass.ood_start_run(%s::bigint, %s::integer, %s::integer, %s)",
            [_version(rng, w), _int(rng, [1]), _int(rng, [50, 1000]), _text(rng, ["manual"])],
        ),
        frozenset({"22023", "55000", "42704"}),
        None,
    ),
    "skyclass.ood_score_chunk(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.ood_score_chunk(%s::bigint, %s::integer)",
            [_bigint(rng), _int(rng)],
        ),
        frozenset({"22023", "55000"}),
        None,
    ),
    "skyclass.ood_finish_run(bigint)": Spec(
        lambda rng, w: ("SELECT skyclass.ood_finish_run(%s::bigint)", [_bigint(rng)]),
        frozenset({"22023", "55000"}),
        None,
    ),
    "skyclass.refresh_ood(text,text,integer)": Spec(
        lambda rng, w: (
            "CALL skyclass.refresh_ood(%s, %s, %s::integer)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _int(rng, [50, 1000]),
            ],
        ),
        frozenset({"22023", "42704", "55000", "55P03"}),
        None,
    ),
    # The fuzz world has no OOD forest nor anomaly model: every ranking is refused, 22023
    # (unknown name or catalog, no forest; 55000 only once a forest exists, never here).
    "skyclass.anomaly_rank(text,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.anomaly_rank(%s, %s)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions] + ["sgq"]),
                _text(rng, [w.catalog]),
            ],
        ),
        frozenset({"22023"}),
        None,
    ),
    "skyclass.model_info(bigint)": Spec(
        lambda rng, w: ("SELECT (skyclass.model_info(%s::bigint)).*", [_version(rng, w)]),
        C_STATES,
        _check_model_info,
    ),
    "skyclass.photoz_intervals(bigint,real[],double precision,boolean)": Spec(
        _photoz_intervals,
        frozenset({"22023", "42704", "55000", "22003", "2202E", "22P02"}),
        _check_intervals,
    ),
    # 22003: a probability beyond real's range overflows in the ::real[] cast, before the call.
    "skyclass.recalibrated_probabilities(bigint,real[],double precision,boolean)": Spec(
        _recalibrated,
        frozenset({"22023", "42704", "55000", "2202E", "22P02", "22003"}),
        _check_recalibrated,
    ),
    "skyclass.pdf_summary(real[],double precision[])": Spec(
        lambda rng, w: _pdf(rng), frozenset({"22023", "22003", "2202E", "22P02"}), _check_pdf
    ),
    "skyclass.angular_distance(double precision,double precision,double precision,double precision)": Spec(  # noqa: E501
        lambda rng, w: (
            "SELECT skyclass.angular_distance(%s::float8, %s::float8, %s::float8, %s::float8)",
            [_float(rng, -400, 400) for _ in range(4)],
        ),
        # PostgreSQL's sin() and cos() refuse infinite angles: 22003; NaN gives NaN.
        frozenset({"22003"}),
        _check_distance,
    ),
    "skyclass.cone_search(text,double precision,double precision,double precision)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.cone_search(%s, %s::float8, %s::float8, %s::float8)",
            [
                _text(rng, [w.catalog]),
                _float(rng, 0, 360),
                _float(rng, -90, 90),
                _float(rng, 0, 10),
            ],
        ),
        frozenset({"22023", "42P01"}),
        _check_cone,
    ),
    "skyclass.crossmatch(text,text,double precision,boolean,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.crossmatch(%s, %s, %s::float8, %s, %s)",
            [
                _text(rng, [w.catalog]),
                _text(rng, [w.catalog]),
                _float(rng, 0, 3600),
                _bool(rng),
                _text(rng, ["auto", "cells", "index", "sweep"]),
            ],
        ),
        frozenset({"22023", "42P01"}),
        _check_match,
    ),
    "skyclass._crossmatch_sql(text,text,double precision,boolean,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass._crossmatch_sql(%s, %s, %s::float8, %s, %s)",
            [
                _text(rng, [w.catalog]),
                _text(rng, [w.catalog]),
                _float(rng, 0, 3600),
                _bool(rng),
                _text(rng, ["auto", "cells", "index"]),
            ],
        ),
        frozenset({"22023", "42P01"}),
        _check_match,
    ),
    "skyclass.crossmatch_sweep(regclass,regclass,double precision,boolean)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.crossmatch_sweep(%s::regclass, %s::regclass, %s::float8, %s)",
            [
                _text(
                    rng,
                    [
                        w.catalog_table,
                        w.catalog_table,
                        w.feature_table,
                        "pg_class",
                        "skyclass.prediction",
                    ],
                ),
                _text(rng, [w.catalog_table, "skyclass.catalog"]),
                _float(rng, 0, 3600),
                _bool(rng),
            ],
        ),
        frozenset({"22023", "42P01", "42703", "42804", "22P02", "42602", "42501", "53000"}),
        _check_match,
    ),
    "skyclass._catalog_table(text)": Spec(
        lambda rng, w: ("SELECT skyclass._catalog_table(%s)", [_text(rng, [w.catalog])]),
        frozenset({"22023", "42P01"}),
        _check_prefix("catalogs."),
    ),
    "skyclass._q3c_schema()": Spec(
        lambda rng, w: ("SELECT skyclass._q3c_schema()", []), frozenset(), None
    ),
    "skyclass.deploy(text,bigint,text)": Spec(
        lambda rng, w: (
            "SELECT skyclass.deploy(%s, %s::bigint, %s)",
            [_text(rng, w.deployments), _version(rng, w), _text(rng)],
        ),
        frozenset({"22023", "23503", "23514"}),
        None,
    ),
    "skyclass.purity_threshold(bigint,text,double precision)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.purity_threshold(%s::bigint, %s, %s::float8)",
            [
                (v := _version(rng, w)),
                _text(rng, w.classes.get(v, ()) if isinstance(v, int) else ()),
                _float(rng, 0, 1),
            ],
        ),
        frozenset({"22023"}),
        _check_purity_threshold,
    ),
    "skyclass.deployed_version(text,timestamp with time zone)": Spec(
        lambda rng, w: (
            "SELECT skyclass.deployed_version(%s, %s::timestamptz)",
            [
                _text(rng, w.deployments),
                rng.choice([None, "now", "-infinity", "infinity", "2026-01-01"]),
            ],
        ),
        frozenset(),
        _check_existing_version,
    ),
    "skyclass.resolve_scoring_target(text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.resolve_scoring_target(%s)",
            [
                _text(
                    rng, w.deployments + [str(v) for v in w.versions] + [f"{m}:1" for m in w.models]
                )
            ],
        ),
        frozenset({"42704"}),
        _check_existing_version,
    ),
    "skyclass.explain_object(text,text,bigint)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.explain_object(%s, %s, %s::bigint)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _bigint(rng, [0, 1, 2]),
            ],
        ),
        # Nothing is explained in the fuzz database: no_data_found names what to run.
        frozenset({"22023", "42704", "P0002"}),
        None,
    ),
    "skyclass.partial_dependence(text,text,text,integer,integer,text,double precision,integer)": Spec(  # noqa: E501
        lambda rng, w: (
            "SELECT skyclass.partial_dependence(%s, %s, %s, %s, %s, %s, %s::float8, %s)",
            [
                _text(rng, [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _text(rng, ["x1", "x2", "x3"]),
                _int(rng, [2, 5]),
                _int(rng, [0, 3]),
                _text(rng, ["x2", "x4"]) if rng.random() < 0.3 else None,
                _float(rng, 0, 1) if rng.random() < 0.3 else None,
                _int(rng, [10, 100]),
            ],
        ),
        # 02000-class: an empty feature table; 22000: a feature without spread.
        frozenset({"22023", "42704", "P0002", "22000", "55000"}),
        _check_dependence_run,
    ),
    "skyclass.create_label_queue(text,text,text,integer,boolean,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.create_label_queue(%s, %s, %s, %s, %s, %s)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _text(rng, ["entropy", "margin", "least_confident", "random"]),
                _int(rng, [1, 5, 50]),
                _bool(rng),
                _int(rng, [0, 1]),
            ],
        ),
        # 55000: no predictions or no domain analysis yet; P0002: nothing left to propose.
        frozenset({"22023", "42704", "55000", "P0002"}),
        _check_queue_iteration,
    ),
    "skyclass.scoring_feature_set(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.scoring_feature_set(%s::bigint, %s::integer)",
            [_version(rng, w), _int(rng, [1, 2])],
        ),
        frozenset({"42704"}),
        None,
    ),
    "skyclass.prediction_codec(bigint)": Spec(
        lambda rng, w: ("SELECT * FROM skyclass.prediction_codec(%s::bigint)", [_version(rng, w)]),
        frozenset({"22023", "42704"}),
        _check_codec,
    ),
    "skyclass.publish_predictions()": Spec(
        lambda rng, w: ("SELECT skyclass.publish_predictions()", []),
        frozenset(),
        None,
    ),
    "skyclass.unpublish_predictions(integer)": Spec(
        # Only catalogs that do not exist: withdrawing the real one would only be undone by
        # the next full run.
        lambda rng, w: (
            "SELECT * FROM skyclass.unpublish_predictions(%s::integer)",
            [rng.choice([None, -1, 0, 2**31 - 1, rng.randint(10**5, 10**6)])],
        ),
        frozenset({"22023"}),
        None,
    ),
    "skyclass.prediction_partition(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.prediction_partition(%s::bigint, %s::integer)",
            [_version(rng, w), _int(rng, [1])],
        ),
        frozenset(),
        _check_prefix("predictions."),
    ),
    "skyclass.scoring_lock_key(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.scoring_lock_key(%s::bigint, %s::integer)",
            [_bigint(rng, w.versions), _int(rng, [1])],
        ),
        frozenset(),
        _check_lock_key,
    ),
    "skyclass.scoring_lock_holder(bigint)": Spec(
        lambda rng, w: ("SELECT skyclass.scoring_lock_holder(%s::bigint)", [_bigint(rng)]),
        frozenset(),
        None,
    ),
    "skyclass.start_scoring_run(text,text,boolean,integer,text,text,text,boolean,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.start_scoring_run(%s, %s, %s, %s::integer, %s, %s, %s, %s, "
            "%s::integer)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _bool(rng),
                _int(rng, [1, 50, 1000]),
                _text(rng, ["database", "client"]),
                _text(rng, ["manual", "schedule"]),
                _text(rng),
                _bool(rng),
                _int(rng, [1, 2]),
            ],
        ),
        RUN_STATES | {"23502", "23514", "42P17"},
        None,
    ),
    "skyclass.plan_scoring_run(bigint)": Spec(
        lambda rng, w: ("SELECT skyclass.plan_scoring_run(%s::bigint)", [_bigint(rng, w.runs)]),
        RUN_STATES,
        None,
    ),
    "skyclass.plan_scoring_chunks(bigint)": Spec(
        lambda rng, w: ("SELECT skyclass.plan_scoring_chunks(%s::bigint)", [_bigint(rng, w.runs)]),
        RUN_STATES,
        None,
    ),
    "skyclass.claim_scoring_chunk(bigint)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.claim_scoring_chunk(%s::bigint)",
            [_bigint(rng, w.runs)],
        ),
        frozenset(),
        None,
    ),
    "skyclass.chunk_check(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.chunk_check(%s::bigint, %s::integer)",
            [_bigint(rng, w.runs), _int(rng, [0, 1])],
        ),
        frozenset(),
        _check_prefix("CHECK ("),
    ),
    "skyclass.scoring_chunk_query(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.scoring_chunk_query(%s::bigint, %s::integer)",
            [_bigint(rng, w.runs), _int(rng, [0, 1])],
        ),
        RUN_STATES,
        _check_prefix("SELECT "),
    ),
    "skyclass.create_chunk_table(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.create_chunk_table(%s::bigint, %s::integer)",
            [_bigint(rng, w.runs), _int(rng, [0, 1])],
        ),
        RUN_STATES,
        _check_prefix("predictions."),
    ),
    "skyclass.complete_scoring_chunk(bigint,integer,bigint)": Spec(
        lambda rng, w: (
            "SELECT skyclass.complete_scoring_chunk(%s::bigint, %s::integer, %s::bigint)",
            [_bigint(rng, w.runs), _int(rng, [0, 1]), _bigint(rng)],
        ),
        RUN_STATES | {"22003"},
        None,
    ),
    "skyclass.score_chunk(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.score_chunk(%s::bigint, %s::integer)",
            [_bigint(rng, w.runs), _int(rng, [0, 1])],
        ),
        RUN_STATES | C_STATES | {"23514"},
        None,
    ),
    "skyclass.score_chunk_into(bigint,regclass,bigint,bigint,regclass)": Spec(
        lambda rng, w: (
            "SELECT skyclass.score_chunk_into(%s::bigint, %s::regclass, %s::bigint, %s::bigint, "
            "%s::regclass)",
            [
                _version(rng, w),
                _text(rng, [w.feature_table, w.catalog_table, "skyclass.prediction"]),
                _bigint(rng),
                _bigint(rng),
                _text(
                    rng,
                    [
                        w.catalog_table,
                        w.feature_table,
                        "skyclass.prediction",
                        "skyclass.prediction_table",
                        "pg_class",
                    ],
                ),
            ],
        ),
        C_STATES | {"42P01", "42602", "42P16", "42809", "0A000", "42501", "3F000"},
        None,
    ),
    "skyclass.release_scoring_lock(bigint)": Spec(
        lambda rng, w: ("SELECT skyclass.release_scoring_lock(%s::bigint)", [_bigint(rng, w.runs)]),
        frozenset({"22023"}),
        None,
    ),
    "skyclass.fail_scoring_run(bigint,text,text)": Spec(
        lambda rng, w: (
            "SELECT skyclass.fail_scoring_run(%s::bigint, %s, %s)",
            [_bigint(rng, w.runs), _text(rng), _text(rng, ["failed", "interrupted"])],
        ),
        frozenset({"22023"}),
        None,
    ),
    "skyclass.finish_scoring_run(bigint)": Spec(
        lambda rng, w: (
            "SELECT (skyclass.finish_scoring_run(%s::bigint)).status",
            [_bigint(rng, w.runs)],
        ),
        RUN_STATES,
        None,
    ),
    "skyclass.score_chunks(bigint)": Spec(
        lambda rng, w: ("CALL skyclass.score_chunks(%s::bigint)", [_bigint(rng, w.runs)]),
        RUN_STATES | C_STATES | {"23514"},
        None,
    ),
    "skyclass.rescore(text,text,boolean,integer,text)": Spec(
        lambda rng, w: (
            "CALL skyclass.rescore(%s, %s, %s, %s::integer, %s)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _bool(rng),
                _int(rng, [50, 1000]),
                _text(rng),
            ],
        ),
        RUN_STATES | C_STATES | {"23502", "23514", "42P17"},
        None,
    ),
    "skyclass.rescore_with_ood(text,text,boolean,integer,text)": Spec(
        lambda rng, w: (
            "CALL skyclass.rescore_with_ood(%s, %s, %s, %s::integer, %s)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _bool(rng),
                _int(rng, [50, 1000]),
                _text(rng),
            ],
        ),
        RUN_STATES | C_STATES | {"23502", "23514", "42P17", "55P03"},
        None,
    ),
    "skyclass.class_changes(bigint,bigint,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.class_changes(%s::bigint, %s::bigint, %s)",
            [_version(rng, w), _version(rng, w), _text(rng, [w.catalog])],
        ),
        frozenset(),
        _check_class_changes,
    ),
    "skyclass.scoring_job_holder(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.scoring_job_holder(%s::bigint, %s::integer)",
            [_bigint(rng, w.versions), _int(rng, [1])],
        ),
        frozenset(),
        _check_holder,
    ),
    "skyclass.scoring_backend_alive(integer,timestamp with time zone)": Spec(
        lambda rng, w: (
            "SELECT skyclass.scoring_backend_alive(%s::integer, %s::timestamptz)",
            [_int(rng, [0, 1]), rng.choice([None, "2026-01-01", "infinity", "-infinity"])],
        ),
        frozenset(),
        _check_not_alive,
    ),
    "skyclass.feature_differences(jsonb,jsonb)": Spec(
        lambda rng, w: (
            "SELECT skyclass.feature_differences(%s::jsonb, %s::jsonb)",
            [_spec_json(rng), _spec_json(rng)],
        ),
        frozenset({"22023", "22P02"}),
        _check_differences,
    ),
    "skyclass.importance_weight(double precision,bigint,bigint,double precision,double precision)": Spec(  # noqa: E501
        lambda rng, w: (
            "SELECT * FROM skyclass.importance_weight(%s::float8, %s::bigint, %s::bigint, "
            "%s::float8, %s::float8)",
            [
                _float(rng, 0.0, 1.0),
                _bigint(rng, [1, 10, 1000]),
                _bigint(rng, [1, 10, 1000]),
                _float(rng, 0.001, 1.0),
                _float(rng, 1.0, 1000.0),
            ],
        ),
        frozenset({"22023"}),
        _check_weight,
    ),
    "skyclass.domain_propensity(bigint,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.domain_propensity(%s::bigint, %s)",
            [_version(rng, w), _text(rng, [w.catalog])],
        ),
        frozenset({"22023", "42704", "42P01"}) | C_STATES,
        _check_propensity,
    ),
    "skyclass.domain_score(bigint,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.domain_score(%s::bigint, %s)",
            [_bigint(rng, [1, 2]), _text(rng, [w.catalog])],
        ),
        frozenset({"22023", "42704", "42P01", "55000"}) | C_STATES,
        _check_propensity,
    ),
    "skyclass.expected_metrics(text,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.expected_metrics(%s, %s)",
            [
                _text(rng, w.deployments + w.models + [f"{m}:1" for m in w.models]),
                _text(rng, [w.catalog]),
            ],
        ),
        frozenset({"22023", "42704", "42P01", "55000"}),
        None,
    ),
    # Drift (revision 0016). The runs the calls start finish through finish_scoring_run, which
    # records their drift; these call the pieces directly with real and made-up runs.
    "skyclass._drift_argument_error(text)": Spec(
        lambda rng, w: ("SELECT skyclass._drift_argument_error(%s)", [_text(rng)]),
        frozenset({"22023"}),
        None,
    ),
    "skyclass.healpix_ring(integer,double precision,double precision)": Spec(
        lambda rng, w: (
            "SELECT skyclass.healpix_ring(%s::integer, %s::float8, %s::float8)",
            [
                _int(rng, [1, 4, 64, 8192]),
                _float(rng, -720.0, 720.0),
                _float(rng, -100.0, 100.0),
            ],
        ),
        frozenset({"22023"}),
        _check_healpix,
    ),
    "skyclass.drift_psi(bigint[],bigint[])": Spec(
        lambda rng, w: (
            "SELECT skyclass.drift_psi(%s::bigint[], %s::bigint[])",
            [_counts(rng), _counts(rng)],
        ),
        frozenset({"22023"}),
        _check_non_negative,
    ),
    "skyclass.drift_wasserstein(bigint[],bigint[],double precision[])": Spec(
        lambda rng, w: (
            "SELECT skyclass.drift_wasserstein(%s::bigint[], %s::bigint[], %s::float8[])",
            [_counts(rng), _counts(rng), _edges(rng)],
        ),
        frozenset({"22023"}),
        _check_non_negative,
    ),
    "skyclass.drift_level(text,double precision,bigint,bigint)": Spec(
        lambda rng, w: (
            "SELECT skyclass.drift_level(%s, %s::float8, %s::bigint, %s::bigint)",
            [
                _text(rng, ["psi", "wasserstein_sigma", "abs_change", "relative_change"]),
                _float(rng, 0.0, 1.0),
                _bigint(rng, [10, 500, 10**6]),
                _bigint(rng, [10, 500, 10**6]),
            ],
        ),
        frozenset({"22023"}),
        _check_level,
    ),
    "skyclass.drift_reference_of(bigint)": Spec(
        lambda rng, w: (
            "SELECT (skyclass.drift_reference_of(%s::bigint)).model_version_id",
            [_bigint(rng, w.runs)],
        ),
        frozenset({"22023", "42704"}),
        None,
    ),
    "skyclass._drift_bins_sql(skyclass.drift_reference,text)": Spec(
        lambda rng, w: (
            "SELECT skyclass._drift_bins_sql(r, %s) FROM skyclass.drift_reference AS r "
            "WHERE r.model_version_id = %s::bigint",
            [_text(rng, ["o.x", "f.x"]), _bigint(rng, w.versions)],
        ),
        frozenset(),
        None,
    ),
    "skyclass._drift_magnitude_sql(skyclass.drift_reference,text)": Spec(
        lambda rng, w: (
            "SELECT skyclass._drift_magnitude_sql(r, %s) FROM skyclass.drift_reference AS r "
            "WHERE r.model_version_id = %s::bigint",
            [_text(rng, ["o.x", "f.x"]), _bigint(rng, w.versions)],
        ),
        frozenset(),
        None,
    ),
    "skyclass._drift_grouping_sql(integer,text,text)": Spec(
        lambda rng, w: (
            "SELECT skyclass._drift_grouping_sql(%s::integer, %s, %s)",
            [_int(rng, [0, 1, 9]), _text(rng, ["sets", "j", "b"]), _text(rng, ["region, magbin"])],
        ),
        frozenset({"22023"}),
        None,
    ),
    "skyclass.record_run_drift(bigint,integer)": Spec(
        lambda rng, w: (
            "SELECT skyclass.record_run_drift(%s::bigint, %s::integer)",
            [_bigint(rng, w.runs), _int(rng, [1000, 100000])],
        ),
        frozenset({"22023", "42704", "55000"}),
        _check_non_negative,
    ),
    "skyclass.compare_run_drift(bigint)": Spec(
        lambda rng, w: ("SELECT skyclass.compare_run_drift(%s::bigint)", [_bigint(rng, w.runs)]),
        frozenset({"22023", "42704"}),
        _check_non_negative,
    ),
    "skyclass.drift_alerts(text,text,bigint,text)": Spec(
        lambda rng, w: (
            "SELECT * FROM skyclass.drift_alerts(%s, %s, %s::bigint, %s)",
            [
                _text(rng, w.deployments + [str(v) for v in w.versions]),
                _text(rng, [w.catalog]),
                _bigint(rng, w.runs),
                _text(rng, ["ok", "warn", "alert"]),
            ],
        ),
        frozenset({"22023", "42704"}),
        _check_alerts,
    ),
}
for _trigger in (
    "refuse_update",
    "refuse_change",
    "deployment_guard",
    "deployment_log",
    "model_artifact_register",
    "feature_set_guard",
    "label_queue_guard",
):
    SPECS[f"skyclass.{_trigger}()"] = Spec(
        lambda rng, w, name=_trigger: (f"SELECT skyclass.{name}()", []), TRIGGER, None
    )


# -- the run ------------------------------------------------------------------------------------
def _functions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p "
        "WHERE p.pronamespace = 'skyclass'::regnamespace"
    ).fetchall()
    return {str(r[0]).replace(", ", ",") for r in rows}


@pytest.fixture(scope="module")
def world(scoring_url: str) -> World:
    """Compiled versions of two models, an uncompiled one, and 300 objects to score."""
    fuzz_versions: Registered = register_cases(scoring_url, ("hgb_binary", "rf_multiclass"))
    versions = [v for methods in fuzz_versions.versions.values() for v in methods.values()]
    c = case("rf_multiclass")
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        uncompiled = register_test_model(
            conn, c.estimator, classes=c.classes, n_features=N_FEATURES, model="rf_multiclass"
        )
        x = np.random.default_rng(3).uniform(10, 30, (300, N_FEATURES)).astype(np.float32)
        add_test_objects(conn, versions[0], x)
        photoz = _with_uncertainty_rows(conn, versions)
        classes = {
            int(r[0]): tuple(r[1])
            for r in conn.execute("SELECT model_version_id, classes FROM skyclass.model_version")
        }
        row = conn.execute(
            "SELECT 'features.' || f.table_name FROM skyclass.model_version AS v "
            "JOIN skyclass.feature_set AS f USING (feature_set_id) WHERE v.model_version_id = %s",
            (versions[0],),
        ).fetchone()
        assert row is not None
    return World(
        versions=versions,
        uncompiled=uncompiled,
        classes=classes,
        models=sorted(fuzz_versions.versions),
        feature_table=str(row[0]),
        photoz=photoz,
    )


def _with_uncertainty_rows(conn: psycopg.Connection[Any], versions: list[int]) -> int:
    """Temperatures per OOD bin for ``versions``; a photo-z version with interval rows."""
    edges = (0.0, 20.0, 40.0, 60.0, 80.0, 90.0, 95.0, 99.0)
    bins = list(zip(range(7), edges, edges[1:], strict=False))
    for v in versions:
        conn.cursor().executemany(
            "INSERT INTO skyclass.probability_recalibration VALUES (%s, %s, %s, %s, %s, %s)",
            [(v, b, lo, hi, None if b == 6 else 0.8 + 0.1 * b, 100) for b, lo, hi in bins],
        )
    rng = np.random.default_rng(5)
    grid = np.linspace(0.0, 1.0, 21)
    labels = np.repeat(np.arange(20), 10)
    model = HistGradientBoostingClassifier(max_iter=3).fit(rng.normal(size=(200, 3)), labels)
    photoz = register_test_model(
        conn,
        model,
        classes=[f"{a:.2f}-{b:.2f}" for a, b in itertools.pairwise(grid)],
        n_features=3,
        task="photoz",
        bin_edges=grid.tolist(),
    )
    conn.cursor().executemany(
        "INSERT INTO skyclass.interval_calibration VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [
            (photoz, level, b, lo, hi, None if b == 6 else q, 100)
            for level, q in ((0.68, -0.2), (0.95, 1.5))
            for b, lo, hi in bins
        ],
    )
    return photoz


def test_every_function_of_schema_skyclass_has_a_fuzz_spec(scoring_url: str) -> None:
    with psycopg.connect(scoring_url) as conn:
        functions = _functions(conn)
    assert functions - set(SPECS) == set(), "functions without a fuzz spec"
    assert set(SPECS) - functions == set(), "fuzz specs of functions that do not exist"


def _one_call(
    conn: psycopg.Connection, rng: random.Random, w: World, name: str, spec: Spec
) -> tuple[str, str | None]:
    """One random call of ``name``: its outcome ('ok' or the SQLSTATE) and what was wrong."""
    query, params = spec.call(rng, w)
    try:
        cursor = conn.execute(query, params)
        rows = cursor.fetchall() if cursor.description is not None else []
    except psycopg.Error as exc:
        state = exc.sqlstate or "no SQLSTATE"
        if state in NEVER or state not in spec.states:
            return state, f"{name}: {query} {params!r}: unexpected {state}: {exc}"
        return state, None
    if spec.check is not None and rows:
        try:
            spec.check(rows, params, w)
        except AssertionError as exc:
            return "invariant violated", f"{name}: {query} {params!r} -> {rows[:3]}: {exc}"
    return "ok", None


def _start_time(url: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def test_random_calls_of_every_function_return_or_raise_with_sqlstate(
    scoring_url: str, world: World, pg_cluster: EmbeddedCluster | None
) -> None:
    n_calls = count(N_CALLS, N_CALLS_FULL)
    started = _start_time(scoring_url)
    log_before = len(postmaster_log(pg_cluster))
    rng = random.Random(SEED)
    names = sorted(SPECS)
    outcomes: Counter[str] = Counter()
    per_function: dict[str, Counter[str]] = {name: Counter() for name in names}
    problems: list[str] = []
    clock = time.perf_counter()
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '20s'")
        for i in range(n_calls):
            # Every function in turn, then at random: each one gets its share.
            name = names[i] if i < len(names) else rng.choice(names)
            outcome, problem = _one_call(conn, rng, world, name, SPECS[name])
            if problem is not None:
                problems.append(problem)
            outcomes[outcome] += 1
            per_function[name][outcome] += 1
            if name.startswith("skyclass.start_scoring_run") and outcome == "ok":
                world.runs = [
                    int(r[0]) for r in conn.execute("SELECT run_id FROM skyclass.scoring_run")
                ]
    seconds = time.perf_counter() - clock
    if FULL:
        print(f"\n{n_calls} calls in {seconds:.0f} s: {dict(outcomes.most_common())}")
        for name in names:
            print(f"  {name}: {dict(per_function[name].most_common())}")
    assert not problems, f"{len(problems)} wrong outcomes:\n" + "\n".join(problems[:15])
    # The fuzzer reached the real paths, not just the refusals.
    assert outcomes["ok"] > n_calls // 4, outcomes
    for state in ("22023", "42704", "55000", "22004"):
        assert outcomes[state] > 0, outcomes
    assert all(sum(c.values()) > 0 for c in per_function.values())
    assert world.runs, "no scoring run was started"

    assert _start_time(scoring_url) == started, "the postmaster restarted"
    new_log = postmaster_log(pg_cluster)[log_before:]
    assert "terminated by signal" not in new_log
    assert "server process" not in new_log or "was terminated" not in new_log


def test_huge_feature_arrays_are_refused_by_length(scoring_url: str, world: World) -> None:
    version = world.versions[0]
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        for function in ("predict", "predict_top_label", "predict_top_probability"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="not 1000000"):
                conn.execute(
                    f"SELECT skyclass.{function}(%s, array_fill('NaN'::real, ARRAY[1000000]))",
                    (version,),
                )
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="2-dimensional"):
            conn.execute(
                "SELECT skyclass.predict(%s, array_fill(1::real, ARRAY[1000, 1000]))", (version,)
            )


def test_an_unplanned_run_is_neither_scored_nor_finished(scoring_url: str, world: World) -> None:
    """Found by the fuzz: such runs built ``ATTACH PARTITION  FOR VALUES`` (42601)."""
    with psycopg.connect(scoring_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT skyclass.start_scoring_run(%s, %s, resume => false)",
            (str(world.versions[0]), world.catalog),
        ).fetchone()
        assert row is not None
        run = row[0]
        try:
            for call in (
                "SELECT skyclass.finish_scoring_run(%s)",
                "SELECT skyclass.plan_scoring_chunks(%s)",
            ):
                with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
                    conn.execute(call, (run,))
            # Chunks planned without plan_scoring_run still leave no target table to write.
            conn.execute(
                "INSERT INTO skyclass.scoring_chunk (run_id, chunk_no, first_object_id, "
                "last_object_id, planned_rows) VALUES (%s, 0, 1, 10, 10)",
                (run,),
            )
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
                conn.execute("SELECT skyclass.score_chunk(%s, 0)", (run,))
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
                conn.execute("SELECT skyclass.complete_scoring_chunk(%s, 0, 0)", (run,))
            assert conn.execute("SELECT to_regclass('_0')").fetchone() == (None,)
        finally:
            conn.execute("SELECT skyclass.fail_scoring_run(%s, 'test over')", (run,))
