"""What ranks highest: the anomaly model of the SDSS17 sample, fitted and scored in the database.

Ingests the bundled SDSS17 sample (99,999 objects) into a throwaway database
(or ``SKYCLASS_DATABASE_URL``), builds the ``sdss_ugriz`` features (ugriz and
the four adjacent colours), fits the anomaly model ``oddities`` (IsolationForest,
100 trees of 256 samples, on a 50,000-object sample, no labels; what `skyclass
anomaly fit` does), compiles it and scores every object inside PostgreSQL (the
OOD job). Then, from ``skyclass.anomaly_rank`` joined with the catalog, it
prints for the top 100 and the top 1% against the whole catalog: the class mix,
median magnitudes and colours, the share of objects with a magnitude outside
the 0.1-99.9 percentile range of the catalog, and the redshifts of the QSOs.
Also the sklearn check: Spearman correlation of the stored scores with
``-IsolationForest.score_samples`` over every object.

Usage: ``.venv/bin/python -m bench.eval_anomaly [--sample 50000]`` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from scipy.stats import spearmanr

from bench.common import bench_database, cpu_model, load_average, say, wall
from bench.eval_sdss17 import DATA
from skyclass.domain.anomaly import fit_anomaly_model
from skyclass.domain.ood_job import run_ood_job
from skyclass.features.build import build_feature_set
from skyclass.features.spec import example_spec_path
from skyclass.ingest import ingest_file

BANDS = ("u", "g", "r", "i", "z")
COLOURS = ("u_g", "g_r", "r_i", "i_z")


def describe(
    rows: list[tuple[Any, ...]],
    name: str,
    base: dict[str, float],
    edges: np.ndarray,
    cedges: np.ndarray,
) -> None:
    """Class mix, medians and extreme-magnitude share of ``rows`` (class, mags, z)."""
    classes = [r[0] for r in rows]
    mags = np.array([r[1:6] for r in rows], dtype=np.float64)
    colours = mags[:, :-1] - mags[:, 1:]
    mix = ", ".join(
        f"{c} {100 * share:.0f}% (x{share / base[c]:.1f})"
        for c, share in ((c, classes.count(c) / len(rows)) for c in sorted(base))
    )
    say(f"{name} ({len(rows):,} objects): {mix}")
    medians = ", ".join(
        f"{b} {v:.2f}"
        for b, v in zip(BANDS + COLOURS, np.median(np.hstack([mags, colours]), 0), strict=True)
    )
    say(f"  medians: {medians}")
    bright = (mags[:, 2] < 16).mean()
    faint = (mags > 25).any(axis=1).mean()
    red = (colours > cedges[1]).any(axis=1).mean()
    blue = (colours < cedges[0]).any(axis=1).mean()
    say(
        f"  bright (r < 16) {100 * bright:.0f}%, a band fainter than 25 {100 * faint:.0f}%; a "
        f"colour beyond the catalog's 99.9th percentile {100 * red:.0f}%, below its 0.1th "
        f"{100 * blue:.0f}%"
    )
    outside = ((mags < edges[0]) | (mags > edges[1])).any(axis=1)
    say(
        "  a magnitude outside the catalog's 0.1-99.9 percentile range: "
        f"{100 * outside.mean():.0f}%"
    )
    z = np.array([r[6] for r in rows if r[0] == "QSO"], dtype=np.float64)
    if z.size:
        say(
            f"  QSO redshift: median {np.median(z):.2f}, share above z = 2.5: "
            f"{100 * (z > 2.5).mean():.0f}%"
        )


def main() -> None:
    """Fit, score, rank and describe."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sample", type=int, default=50_000)
    args = parser.parse_args()
    say(f"CPU: {cpu_model()} ({os.cpu_count()} cores); load average {load_average()}")
    with bench_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        ingest_file(
            args.data,
            "sdss17",
            id_column="orig_row",
            ra_column="alpha",
            dec_column="delta",
            url=url,
        )
        build_feature_set(example_spec_path("sdss_ugriz"), url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            t0 = wall()
            fit = fit_anomaly_model(conn, "oddities", "sdss_ugriz", "sdss17", sample=args.sample)
            say(
                f"fit {fit.label}: {fit.fit_seconds:.2f} s on {fit.model.n_fit:,} objects "
                f"(reference {fit.model.n_reference:,}); compiled in {fit.compile_seconds:.1f} s; "
                f"{wall() - t0:.1f} s with the snapshot"
            )
            assert fit.compile_error is None, fit.compile_error
            run = run_ood_job(conn, "oddities", "sdss17", workers=1)
            say(
                f"scored {run.rows_scored:,} objects in the database in {run.seconds:.1f} s "
                f"(one session; load average {load_average()})"
            )
            rows = conn.execute(
                "SELECT a.rank, a.raw_score, c.class, c.u, c.g, c.r, c.i, c.z, c.redshift, f.x "
                "FROM skyclass.anomaly_rank('oddities', 'sdss17') AS a "
                "JOIN catalogs.sdss17 AS c USING (object_id) "
                "JOIN features." + _feature_table(conn) + " AS f USING (object_id) "
                "ORDER BY a.rank"
            ).fetchall()
    n = len(rows)
    assert [r[0] for r in rows] == list(range(1, n + 1))
    X = np.array([[np.nan if v is None else v for v in r[9]] for r in rows], dtype=np.float64)
    X = np.where(np.isnan(X), fit.scorer.fill, X)
    expected = -fit.scorer.forest.score_samples(X)
    got = np.array([r[1] for r in rows])
    say(
        f"database vs sklearn score_samples over {n:,} objects: Spearman "
        f"{spearmanr(got, expected).statistic:.6f}, "
        f"max |difference| {np.abs(got - expected).max():.1e}"
    )
    described = [(r[2], *r[3:8], r[8]) for r in rows]
    classes = [r[0] for r in described]
    base = {c: classes.count(c) / n for c in sorted(set(classes))}
    say("catalog: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in base.items()))
    mags = np.array([r[1:6] for r in described], dtype=np.float64)
    edges = np.percentile(mags, [0.1, 99.9], axis=0)
    cedges = np.percentile(mags[:, :-1] - mags[:, 1:], [0.1, 99.9], axis=0)
    describe(described[:100], "top 100", base, edges, cedges)
    describe(described[: n // 100], "top 1%", base, edges, cedges)
    describe(described, "catalog", base, edges, cedges)


def _feature_table(conn: psycopg.Connection) -> str:
    row = conn.execute(
        "SELECT table_name FROM skyclass.feature_set WHERE name = 'sdss_ugriz'"
    ).fetchone()
    assert row is not None
    return str(row[0])


if __name__ == "__main__":
    main()
