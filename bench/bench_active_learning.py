"""Does active learning beat random labelling on SDSS17? The simulation of record.

Loads the bundled SDSS17 sample (99,999 objects) into a throwaway database
(or ``SKYCLASS_DATABASE_URL``), builds the ugriz feature set and runs
``skyclass queue simulate``: per seed a stratified 20% test set, 500 random
start labels, then 500 more per round for 10 rounds chosen by entropy,
margin, least confidence or at random; 5 seeds. Prints the learning curves
(mean ± std over seeds) and each strategy minus random at every round.

Usage: ``.venv/bin/python bench/bench_active_learning.py [--seeds 5] [--rounds 10]``
(about 10-20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import psycopg

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_database, cpu_model, format_table, say

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "src/skyclass/features/examples/sdss_ugriz.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--start", type=int, default=500)
    parser.add_argument("--step", type=int, default=500)
    args = parser.parse_args()
    from skyclass.features.build import build_feature_set
    from skyclass.ingest import ingest_file
    from skyclass.learning.simulate import SimulationSettings, compare_with_random, simulate

    data = next((ROOT / "src/skyclass/demo/data").glob("sdss17_star_classification_*.csv.gz"))
    say(f"CPU: {cpu_model()}")
    with bench_database() as url:
        with psycopg.connect(url) as conn:
            present = conn.execute(
                "SELECT 1 FROM skyclass.catalog WHERE name = 'sdss17'"
            ).fetchone()
        if present is None:
            ingest_file(
                data, "sdss17", id_column="orig_row", ra_column="alpha", dec_column="delta", url=url
            )
        build_feature_set(SPEC, url=url)
        settings = SimulationSettings(
            start=args.start, step=args.step, rounds=args.rounds, seeds=args.seeds
        )
        with psycopg.connect(url) as conn:
            result = simulate(conn, "sdss_ugriz", "class", "QSO", settings)
    say(f"simulation {result.simulation_id}: {result.seconds:.0f} s")
    labels = result.n_labels()
    for metric, title in (
        ("accuracy", "accuracy"),
        ("completeness", "QSO completeness at 95% purity"),
    ):
        rows = []
        for r, n in enumerate(labels):
            row: list[object] = [n]
            base = result.curve("random", metric)[r]
            for strategy in settings.strategies:
                values = result.curve(strategy, metric)[r]
                cell = f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
                if strategy != "random":
                    diff = values - base
                    cell += f" ({diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(diff.size):.4f})"
                row.append(cell)
            rows.append(row)
        say(f"\n{title} (mean ± std over seeds; in brackets: minus random, ± standard error)")
        say(format_table(("labels", *settings.strategies), rows))
        say(f"last round minus random: {compare_with_random(result, metric)}")


if __name__ == "__main__":
    main()
