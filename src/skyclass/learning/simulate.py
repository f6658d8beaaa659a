"""Replay the labelling loop on objects whose labels are known, and measure whether it helps.

For each seed a stratified test set is held out and the same random start
set is drawn from the rest (the pool). Each strategy then repeats: fit the
model on the labelled objects, evaluate it on the test set (accuracy, and
the target class's completeness at the purity target), score the unlabelled
pool and label its ``step`` most uncertain objects (``random``: any
``step``). Curves are stored in ``skyclass.learning_curve``; strategies are
compared with random labelling seed by seed (paired differences).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from skyclass.learning.errors import QueueError
from skyclass.learning.strategies import STRATEGIES, completeness_at_purity, uncertainty

#: The gradient boosting skyclass trains by default (issue-sized: 100 iterations).
MODEL_PARAMS: dict[str, Any] = {
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "l2_regularization": 1.0,
}


@dataclass(frozen=True)
class SimulationSettings:
    """Sizes of the replayed loop."""

    start: int = 500
    step: int = 500
    rounds: int = 10
    seeds: int = 5
    test_fraction: float = 0.2
    purity: float = 0.95
    strategies: tuple[str, ...] = STRATEGIES
    model_params: dict[str, Any] = field(default_factory=lambda: dict(MODEL_PARAMS))


@dataclass(frozen=True)
class CurvePoint:
    """One round of one strategy and seed."""

    strategy: str
    seed: int
    round: int
    n_labels: int
    accuracy: float
    completeness: float


@dataclass(frozen=True)
class SimulationResult:
    """A stored simulation and its curves."""

    simulation_id: int
    target_class: str
    purity: float
    points: tuple[CurvePoint, ...]
    seconds: float

    def curve(self, strategy: str, metric: str) -> npt.NDArray[np.float64]:
        """Rounds x seeds array of ``accuracy`` or ``completeness`` for ``strategy``."""
        pts = [p for p in self.points if p.strategy == strategy]
        rounds = max(p.round for p in pts) + 1
        seeds = sorted({p.seed for p in pts})
        out = np.full((rounds, len(seeds)), np.nan)
        for p in pts:
            out[p.round, seeds.index(p.seed)] = getattr(p, metric)
        return out

    def n_labels(self) -> list[int]:
        """Labels used at each round."""
        return sorted({p.n_labels for p in self.points})


def _stratified_test(labels: npt.NDArray[Any], fraction: float, rng: np.random.Generator) -> Any:
    test = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = round(fraction * members.size)
        test.extend(rng.choice(members, size=take, replace=False).tolist())
    return np.sort(np.asarray(test, dtype=np.intp))


def run_loop(
    x: npt.NDArray[np.float32],
    labels: npt.NDArray[Any],
    target_class: str,
    settings: SimulationSettings,
    progress: Callable[[int, int], None] | None = None,
) -> list[CurvePoint]:
    """The simulated loops of every seed and strategy (no database)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    classes = np.unique(labels)
    if target_class not in classes:
        raise QueueError(f"target class {target_class!r} is not among the labels {list(classes)}")
    total = settings.seeds * len(settings.strategies) * (settings.rounds + 1)
    done = 0
    points: list[CurvePoint] = []
    for seed in range(settings.seeds):
        rng = np.random.default_rng(seed)
        test = _stratified_test(labels, settings.test_fraction, rng)
        pool = np.setdiff1d(np.arange(labels.size), test)
        needed = settings.start + settings.step * settings.rounds
        if needed > pool.size:
            raise QueueError(
                f"the loop needs {needed} pool objects but only {pool.size} are left after the "
                "test set: lower --start, --step or --rounds"
            )
        start = rng.choice(pool, size=settings.start, replace=False)
        positive = labels[test] == target_class
        for s_index, strategy in enumerate(settings.strategies):
            pick_rng = np.random.default_rng((seed, s_index))
            labelled = np.zeros(labels.size, dtype=bool)
            labelled[start] = True
            for round_no in range(settings.rounds + 1):
                model = HistGradientBoostingClassifier(
                    early_stopping=False, random_state=seed, **settings.model_params
                )
                with threadpool_limits(limits=2):
                    model.fit(x[labelled], labels[labelled])
                    test_proba = model.predict_proba(x[test])
                predicted = model.classes_[test_proba.argmax(axis=1)]
                if target_class in model.classes_:
                    score = test_proba[:, list(model.classes_).index(target_class)]
                    completeness = completeness_at_purity(positive, score, settings.purity)
                else:
                    completeness = 0.0
                points.append(
                    CurvePoint(
                        strategy,
                        seed,
                        round_no,
                        int(labelled.sum()),
                        float(np.mean(predicted == labels[test])),
                        completeness,
                    )
                )
                done += 1
                if progress is not None:
                    progress(done, total)
                if round_no == settings.rounds:
                    break
                candidates = pool[~labelled[pool]]
                with threadpool_limits(limits=2):
                    proba = model.predict_proba(x[candidates]) if strategy != "random" else None
                scores = uncertainty(
                    proba if proba is not None else np.zeros((candidates.size, 1)),
                    strategy,
                    pick_rng,
                )
                chosen = candidates[np.argsort(-scores, kind="stable")[: settings.step]]
                labelled[chosen] = True
    return points


def load_labelled(
    conn: psycopg.Connection[Any], feature_set: int | str, label_column: str
) -> tuple[int, str, npt.NDArray[np.float32], npt.NDArray[Any]]:
    """(feature_set_id, catalog name, features, labels) of the objects with a label."""
    from skyclass.registry.features import find_feature_build

    fs_id = find_feature_build(conn, feature_set)
    row = conn.execute(
        "SELECT f.table_name, c.name, c.schema_name, c.table_name FROM skyclass.feature_set AS f "
        "JOIN skyclass.catalog AS c USING (catalog_id) WHERE f.feature_set_id = %s",
        (fs_id,),
    ).fetchone()
    assert row is not None
    columns = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'catalogs' AND table_name = %s",
            (row[1],),
        )
    }
    if label_column not in columns or label_column in ("object_id", "ra", "dec"):
        raise QueueError(
            f"catalog {row[1]!r} has no label column {label_column!r}; "
            f"its columns: {', '.join(sorted(columns))}"
        )
    rows = conn.execute(
        sql.SQL(
            "SELECT f.x, c.{}::text FROM {} AS f JOIN {} AS c USING (object_id) "
            "WHERE c.{} IS NOT NULL ORDER BY f.object_id"
        ).format(
            sql.Identifier(label_column),
            sql.Identifier("features", row[0]),
            sql.Identifier("catalogs", row[1]),
            sql.Identifier(label_column),
        )
    ).fetchall()
    if not rows:
        raise QueueError(f"no object of catalog {row[1]!r} has a {label_column!r} label")
    x = np.asarray([r[0] for r in rows], dtype=np.float32).reshape(len(rows), -1)
    return fs_id, str(row[1]), x, np.asarray([r[1] for r in rows], dtype=object)


def simulate(
    conn: psycopg.Connection[Any],
    feature_set: int | str,
    label_column: str,
    target_class: str,
    settings: SimulationSettings,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run :func:`run_loop` on the labelled objects of a feature build and store the curves."""
    for strategy in settings.strategies:
        if strategy not in STRATEGIES:
            raise QueueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if not 0 < settings.purity < 1:
        raise QueueError(f"the purity target must lie in (0, 1), not {settings.purity}")
    fs_id, catalog, x, labels = load_labelled(conn, feature_set, label_column)
    started = time.perf_counter()
    points = run_loop(x, labels, target_class, settings, progress)
    seconds = time.perf_counter() - started
    params = {
        "start": settings.start,
        "step": settings.step,
        "rounds": settings.rounds,
        "seeds": settings.seeds,
        "test_fraction": settings.test_fraction,
        "strategies": list(settings.strategies),
        "model": {"estimator": "hist_gradient_boosting", **settings.model_params},
        "n_objects": int(labels.size),
    }
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO skyclass.learning_simulation (catalog_name, feature_set_id, "
            "label_column, target_class, purity, params, seconds) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING simulation_id",
            (catalog, fs_id, label_column, target_class, settings.purity, Jsonb(params), seconds),
        ).fetchone()
        assert row is not None
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO skyclass.learning_curve (simulation_id, strategy, seed, round, "
                "n_labels, accuracy, completeness_at_purity) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        row[0],
                        p.strategy,
                        p.seed,
                        p.round,
                        p.n_labels,
                        p.accuracy,
                        None if np.isnan(p.completeness) else p.completeness,
                    )
                    for p in points
                ],
            )
    return SimulationResult(int(row[0]), target_class, settings.purity, tuple(points), seconds)


def compare_with_random(
    result: SimulationResult, metric: str, strategies: Sequence[str] | None = None
) -> dict[str, tuple[float, float]]:
    """Per strategy: mean and standard error over seeds of (strategy - random) at the last round."""
    base = result.curve("random", metric)[-1]
    out = {}
    for strategy in strategies or sorted({p.strategy for p in result.points} - {"random"}):
        diff = result.curve(strategy, metric)[-1] - base
        se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
        out[strategy] = (float(np.mean(diff)), se)
    return out
