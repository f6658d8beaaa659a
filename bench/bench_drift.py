"""Cost of the drift summaries in a scoring run's finish step, against the run itself.

The catalog and model are those of ``bench/bench_scoring.py``: the bundled
SDSS17 sample replicated inside PostgreSQL to about ``rows`` objects (jittered
ugriz, real positions), its ``sdss_ugriz`` features, and a
HistGradientBoostingClassifier (100 iterations, 3 classes, isotonic
calibration) compiled and deployed. Each round runs ``skyclass score`` (the
durable job, one session per core) on the whole catalog; its finish step
records the drift (``skyclass.record_run_drift``: one pass over the run's
objects, HEALPix regions, magnitude bins, feature histograms of a 100,000
object hash sample, comparisons with the training snapshot and the previous
run) and stores the seconds it took in ``skyclass.drift_run.seconds``. The
figure is that time against the rest of the run (job wall time minus drift),
medians over the rounds; the first round builds the version's drift reference
from its training snapshot and is reported apart.

Usage: ``.venv/bin/python bench/bench_drift.py [--rows N] [--repeats N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_scoring import CATALOG, make_catalog, register, train_model
from bench.common import (
    bench_database,
    format_table,
    machine_info,
    median,
    print_machine,
    say,
    wall,
)
from skyclass.features import build_feature_set, example_spec_path, load_spec

DEPLOYMENT = "bench_drift"


def run(
    url: str, *, rows: int = 1_000_000, repeats: int = 3, iterations: int = 100
) -> dict[str, Any]:
    """Score the catalog ``repeats + 1`` times and compare the drift step with the rest."""
    from skyclass.score.deploy import deploy
    from skyclass.score.jobs import default_workers, score_catalog

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
    copies = max(1, round(rows / 99_999))
    clock = wall()
    n = make_catalog(url, copies)
    spec = replace(load_spec(example_spec_path("sdss_ugriz")), catalog=CATALOG)
    feature_set = build_feature_set(spec, url=url)
    say(f"catalog {CATALOG}: {n:,} objects with features in {wall() - clock:.1f} s")
    clock = wall()
    model, calibration, classes, _ = train_model(url, feature_set, iterations)
    version, _ = register(url, model, calibration, classes, feature_set.feature_set_id)
    deploy(DEPLOYMENT, version, url=url)
    say(f"model version {version} trained, compiled and deployed in {wall() - clock:.1f} s")
    workers = default_workers()
    rounds = []
    for k in range(repeats + 1):
        clock = wall()
        info = score_catalog(DEPLOYMENT, CATALOG, workers=workers, url=url)
        job = wall() - clock
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT d.seconds, d.sample_fraction, (SELECT count(*) FROM skyclass.drift AS x "
                "WHERE x.run_id = d.run_id), (SELECT count(*) FROM skyclass.drift_summary AS s "
                "WHERE s.run_id = d.run_id) FROM skyclass.drift_run AS d WHERE d.run_id = %s",
                (info.run_id,),
            ).fetchone()
        if row is None:
            raise RuntimeError(f"scoring run {info.run_id} recorded no drift")
        drift = float(row[0])
        rounds.append(
            {
                "run_id": info.run_id,
                "job_seconds": job,
                "drift_seconds": drift,
                "rest_seconds": job - drift,
                "ratio": drift / (job - drift),
                "sample_fraction": float(row[1]),
                "drift_rows": int(row[2]),
                "summaries": int(row[3]),
                "first": k == 0,
            }
        )
        say(
            f"  run {info.run_id}: job {job:.2f} s, drift step {drift:.2f} s "
            f"({drift / (job - drift):.1%} of the rest)"
            + (" [builds the reference]" if k == 0 else "")
        )
    steady = [r for r in rounds if not r["first"]]
    result = {
        "rows": n,
        "iterations": iterations,
        "workers": workers,
        "repeats": repeats,
        "rounds": rounds,
        "median_job_seconds": median([r["job_seconds"] for r in steady]),
        "median_drift_seconds": median([r["drift_seconds"] for r in steady]),
        "median_ratio": median([r["ratio"] for r in steady]),
        "first_round": rounds[0],
    }
    return result


def print_result(result: dict[str, Any], info: dict[str, Any]) -> None:
    """The rounds as a table and the median ratio with the CPU model beside it."""
    table = [
        (
            str(r["run_id"]),
            f"{r['job_seconds']:.2f}",
            f"{r['drift_seconds']:.2f}",
            f"{r['ratio']:.1%}",
            f"{r['sample_fraction']:.3f}",
            str(r["summaries"]),
            str(r["drift_rows"]),
            "builds reference" if r["first"] else "",
        )
        for r in result["rounds"]
    ]
    print(
        format_table(
            (
                "run",
                "job s",
                "drift step s",
                "drift / rest",
                "sample",
                "summaries",
                "drift rows",
                "",
            ),
            table,
        )
    )
    print(
        f"median over {result['repeats']} runs of {result['rows']:,} objects "
        f"({result['workers']} sessions, model of {result['iterations']} iterations): "
        f"drift step {result['median_drift_seconds']:.2f} s = "
        f"{result['median_ratio']:.1%} of the rest of the run "
        f"({result['median_job_seconds']:.2f} s job) on {info['cpu']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--iterations", type=int, default=100, help="boosting iterations of the model"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with bench_database() as url:
        info = machine_info(url)
        print_machine(info)
        result = run(url, rows=args.rows, repeats=args.repeats, iterations=args.iterations)
        info["load_average_after"] = info["load_average"]
        print_result(result, info)
        if args.json is not None:
            args.json.write_text(json.dumps({"machine": info, **result}, indent=2, default=str))


if __name__ == "__main__":
    main()
