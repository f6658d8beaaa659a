"""Cost per object of the per-OOD-bin uncertainty functions, in SQL and in the client.

Trains a small photo-z model on the bundled BOSS sample (its training stores the
interval quantiles per OOD bin), then times over N objects (random PDFs on the
version's 20 bins, random OOD percentiles):

- ``SELECT count(*) FROM t`` (the scan alone),
- ``skyclass.pdf_summary(pdf, edges)`` (the existing per-row PDF summary),
- ``skyclass.photoz_intervals(version, pdf, ood_percentile)``,
- ``skyclass.recalibrated_probabilities(version, pdf, ood_percentile)`` on the same 20
  outputs (temperature rows inserted for the benchmark),
- and the client path (:func:`skyclass.score.intervals.version_intervals`) on the same arrays.

Figures are medians of interleaved rounds, in microseconds per object; the CPU model is
printed beside them. Usage: ``.venv/bin/python -m bench.bench_intervals [--rows 100000]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import psycopg

from bench.common import (
    bench_database,
    format_table,
    interleaved,
    machine_info,
    median,
    print_machine,
    say,
)
from skyclass.features.build import build_feature_set
from skyclass.ingest.load import ingest_file
from skyclass.score.intervals import version_intervals
from skyclass.train.pipeline import train_model
from skyclass.train.snapshot import create_snapshot

DATA = Path(__file__).resolve().parents[1] / "src" / "skyclass" / "demo" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with bench_database() as url:
        print_machine(machine_info(url))
        say("training a small photo-z model on BOSS (stores its interval quantiles)")
        ingest_file(
            DATA / "boss_dr10_photoz_35762.csv",
            "boss_dr10",
            positions=False,
            null_values=[],
            url=url,
        )
        build_feature_set(DATA / "boss_ugriz.toml", url=url)
        snap = create_snapshot("boss_ugriz", "z_spec", task="photoz", bin_edges="0:1:0.05", url=url)
        version = train_model(
            "pz",
            snap.snapshot_id,
            params={"max_iter": 20},
            baselines=(),
            importance=False,
            calibration="none",
            url=url,
        ).model_version_id
        rng = np.random.default_rng(0)
        pdf = rng.dirichlet(np.full(20, 0.5), size=args.rows).astype(np.float32)
        pct = rng.uniform(0.0, 100.0, args.rows)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO skyclass.probability_recalibration "
                "SELECT %s, b, e[b + 1], e[b + 2], 1.1, 100 FROM generate_series(0, 6) AS b, "
                "(SELECT ARRAY[0, 20, 40, 60, 80, 90, 95, 99]::float8[] AS e) AS x",
                (version,),
            )
            conn.execute("CREATE UNLOGGED TABLE bench_pdf (i int, pdf real[], pct float8)")
            with conn.cursor().copy("COPY bench_pdf FROM STDIN") as copy:
                for i in range(args.rows):
                    copy.write_row((i, pdf[i].tolist(), float(pct[i])))
            conn.execute("VACUUM ANALYZE bench_pdf")
            edges = conn.execute(
                "SELECT bin_edges FROM skyclass.model_version WHERE model_version_id = %s",
                (version,),
            ).fetchone()
            assert edges is not None
            queries = {
                "scan": "SELECT count(*) FROM bench_pdf",
                "pdf_summary": (
                    "SELECT count(s.z_median) FROM bench_pdf, "
                    f"LATERAL skyclass.pdf_summary(pdf, '{{{','.join(map(str, edges[0]))}}}') AS s"
                ),
                "photoz_intervals": (
                    "SELECT count(s.z_lo68) FROM bench_pdf, "
                    f"LATERAL skyclass.photoz_intervals({version}, pdf, pct) AS s"
                ),
                "recalibrated_probabilities": (
                    "SELECT count(skyclass.recalibrated_probabilities("
                    f"{version}, pdf, pct)) FROM bench_pdf"
                ),
            }

            def timed(query: str) -> float:
                start = time.perf_counter()
                conn.execute(query).fetchone()
                return time.perf_counter() - start

            def client() -> float:
                start = time.perf_counter()
                version_intervals(conn, version, pdf, pct)
                return time.perf_counter() - start

            variants = {name: (lambda q=q: timed(q)) for name, q in queries.items()}
            variants["client version_intervals"] = client
            times = interleaved(variants, args.rounds)
        scan = median(times["scan"])
        rows = []
        for name, t in times.items():
            base = 0.0 if name.startswith("client") else scan
            rows.append((name, f"{median(t):.3f}", f"{1e6 * (median(t) - base) / args.rows:.1f}"))
        print(format_table(("variant", "median s", "µs per object (minus the scan)"), rows))
        say(f"{args.rows:,} objects, {args.rounds} interleaved rounds")


if __name__ == "__main__":
    main()
