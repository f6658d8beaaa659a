"""Domain-classifier scoring: compiled in the database against scikit-learn in the client.

The catalog is the bundled SDSS17 sample replicated to about ``rows`` objects
with jittered photometry (as ``bench_scoring``), with its ``sdss_ugriz``
features built in the database. The domain classifier is the one ``skyclass
domain`` fits (HistGradientBoosting, 60 iterations, 15 leaves, binary): it
tells the faint part of the original rows (r > 18.5, the "training snapshot")
from a sample of the catalog; it is registered as a model version with
classes ``(training, catalog)`` and compiled (-O2, the compile step's
default). Per round, side by side:

- ``database``: what ``skyclass domain`` runs for the catalog's objects:
  ``skyclass.domain_propensity`` and ``skyclass.importance_weight`` into a
  temporary table, the aggregates (clipped and uncovered fractions) and
  ``INSERT INTO skyclass.domain_object SELECT ...``, one transaction;
- ``client``: the path ``--client-scoring`` takes: the feature rows read with
  binary COPY-format fetch, ``predict_proba`` of the fitted scikit-learn model
  (all cores), the weights in numpy and a binary COPY into
  ``skyclass.domain_object``, one transaction.

Both write the same rows (checked: propensities within 1e-5). Usage:
``.venv/bin/python bench/bench_domain.py [--quick] [--rows N] [--repeats N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_scoring import CATALOG, ID_STRIDE, make_catalog
from bench.common import format_table, interleaved, median, say
from skyclass.domain.classifier import HGB_PARAMS, fit_domain
from skyclass.domain.compiled import CLASSES, score_sql
from skyclass.domain.weights import UNCOVERED_P, W_MAX, W_MIN, importance_weights

MODEL = "bench_domain"


def _features(url: str, table: str) -> tuple[np.ndarray, np.ndarray]:
    with psycopg.connect(url) as conn, conn.cursor(binary=True) as cur:
        cur.execute(
            sql.SQL("SELECT object_id, x FROM {} ORDER BY object_id").format(
                sql.Identifier("features", table)
            )
        )
        rows = cur.fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    X = np.asarray([r[1] for r in rows], dtype=np.float32).reshape(len(rows), -1)
    return ids, X


def setup(url: str, rows: int) -> dict[str, Any]:
    """Catalog, features, the fitted domain classifier, its compiled version and a fit row."""
    from tests.support.registry import register_test_model

    from skyclass.features import build_feature_set, example_spec_path

    copies = max(1, round(rows / 99_999))
    t0 = time.perf_counter()
    n = make_catalog(url, copies)
    fs = build_feature_set(example_spec_path("sdss_ugriz"), catalog=CATALOG, url=url)
    say(f"catalog {CATALOG}: {n:,} objects with features ({time.perf_counter() - t0:.0f} s)")
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT table_name FROM skyclass.feature_set WHERE feature_set_id = %s",
            (fs.feature_set_id,),
        ).fetchone()
    assert found is not None
    table = str(found[0])
    ids, X = _features(url, table)
    original = ids < ID_STRIDE
    train = X[original & (X[:, 2] > 18.5)]
    t0 = time.perf_counter()
    fit = fit_domain(train, X, seed=11)
    say(
        f"domain classifier: {fit.n_train:,} training against {fit.n_sample:,} catalog rows, "
        f"AUC {fit.auc:.3f} ({time.perf_counter() - t0:.0f} s)"
    )
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        version = register_test_model(
            conn,
            fit.model,
            classes=list(CLASSES),
            n_features=X.shape[1],
            feature_set=fs.feature_set_id,
            model=MODEL,
            compiled=True,
        )
        compile_seconds = conn.execute(
            "SELECT compile_seconds FROM skyclass.model_artifact WHERE model_version_id = %s",
            (version,),
        ).fetchone()
    say(f"registered and compiled as model version {version} ({time.perf_counter() - t0:.0f} s)")
    return {
        "ids": ids,
        "X": X,
        "fit": fit,
        "version": version,
        "feature_set_id": fs.feature_set_id,
        "table": table,
        "compile_seconds": float(compile_seconds[0]) if compile_seconds else None,
    }


def _shift_row(conn: psycopg.Connection[Any], s: dict[str, Any], scorer: str) -> int:
    fit = s["fit"]
    row = conn.execute(
        "INSERT INTO skyclass.domain_shift (model_version_id, catalog_id, catalog_name, "
        "feature_set_id, n_train, n_sample, n_catalog, seed, classifier, auc, auc_std, fold_auc, "
        "w_min, w_max, train_clipped, catalog_clipped, uncovered_threshold, uncovered_fraction, "
        "n_effective, reliable, problems, domain_version_id, scorer) SELECT %s, catalog_id, "
        "name, %s, %s, %s, %s, 11, %s, %s, %s, %s, %s, %s, 0, 0, %s, 0, 1, true, '{}', %s, %s "
        "FROM skyclass.catalog WHERE name = %s RETURNING domain_shift_id",
        (
            s["version"],
            s["feature_set_id"],
            fit.n_train,
            fit.n_sample,
            s["ids"].size,
            Jsonb(dict(HGB_PARAMS)),
            fit.auc,
            fit.auc_std,
            list(fit.fold_auc),
            W_MIN,
            W_MAX,
            UNCOVERED_P,
            s["version"],
            scorer,
            CATALOG,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def database_path(url: str, s: dict[str, Any]) -> int:
    """``skyclass domain``'s in-database scoring and write of the catalog's objects."""
    fit = s["fit"]
    clip = (fit.n_train, fit.n_sample, W_MIN, W_MAX)
    with psycopg.connect(url) as conn, conn.transaction():
        score_sql(conn, s["version"], CATALOG, clip)
        conn.execute(
            "SELECT count(*), avg(clipped::int), avg((propensity > %s)::int) FROM domain_scored",
            (UNCOVERED_P,),
        ).fetchone()
        shift = _shift_row(conn, s, "database")
        conn.execute(
            "INSERT INTO skyclass.domain_object (domain_shift_id, object_id, propensity, weight, "
            "clipped) SELECT %s, object_id, propensity, weight, clipped FROM domain_scored",
            (shift,),
        )
    return shift


def client_path(url: str, s: dict[str, Any], table: str) -> int:
    """``--client-scoring``: read the features, scikit-learn, numpy weights, binary COPY."""
    fit = s["fit"]
    ids, X = _features(url, table)
    p = fit.propensity(X)
    w = importance_weights(p, fit.n_train, fit.n_sample)
    with psycopg.connect(url) as conn, conn.transaction():
        shift = _shift_row(conn, s, "python")
        with (
            conn.cursor(binary=True) as cur,
            cur.copy(
                "COPY skyclass.domain_object (domain_shift_id, object_id, propensity, weight, "
                "clipped) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["int8", "int8", "float4", "float4", "bool"])
            for oid, pi, wi, ci in zip(
                ids.tolist(), p.tolist(), w.w.tolist(), w.clipped.tolist(), strict=True
            ):
                copy.write_row((shift, oid, pi, wi, ci))
    return shift


def run(url: str, rows: int, repeats: int) -> dict[str, Any]:
    """Set up, then time both paths ``repeats`` times side by side; check they agree."""
    s = setup(url, rows)
    shifts: dict[str, list[int]] = {"database": [], "client": []}

    def variant(name: str) -> Any:
        def go() -> float:
            start = time.perf_counter()
            if name == "database":
                shifts[name].append(database_path(url, s))
            else:
                shifts[name].append(client_path(url, s, s["table"]))
            return time.perf_counter() - start

        return go

    times = interleaved({n: variant(n) for n in shifts}, repeats)
    with psycopg.connect(url) as conn:
        diff = conn.execute(
            "SELECT count(*), max(abs(a.propensity - b.propensity)) FROM skyclass.domain_object "
            "AS a JOIN skyclass.domain_object AS b USING (object_id) "
            "WHERE a.domain_shift_id = %s AND b.domain_shift_id = %s",
            (shifts["database"][0], shifts["client"][0]),
        ).fetchone()
    assert diff is not None and diff[0] == s["ids"].size and diff[1] <= 1e-5, diff
    return {
        "rows": int(s["ids"].size),
        "seconds": {n: median(v) for n, v in times.items()},
        "all_seconds": times,
        "max_propensity_difference": float(diff[1]),
        "compile_seconds": s["compile_seconds"],
    }


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    from bench.common import bench_database, machine_info, print_machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 100k rows, 1 round")
    parser.add_argument("--rows", type=int, default=None, help="about this many objects (1M)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or (1 if args.quick else 2)
    started = time.time()
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(url, rows, repeats)
    n = result["rows"]
    db, client = result["seconds"]["database"], result["seconds"]["client"]
    say(
        format_table(
            ["path", "seconds (median)", "µs per object", "objects/s"],
            [
                [name, f"{sec:.2f}", f"{sec / n * 1e6:.2f}", f"{n / sec:,.0f}"]
                for name, sec in result["seconds"].items()
            ],
        )
    )
    say(
        f"client / database time: {client / db:.2f}x on {n:,} objects "
        f"(CPU: {info['cpu']}); max propensity difference "
        f"{result['max_propensity_difference']:.1e}; compile {result['compile_seconds']:.1f} s"
    )
    say(f"total {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **result}, indent=2, default=str))
        say(f"wrote {args.json}")


if __name__ == "__main__":
    main()
