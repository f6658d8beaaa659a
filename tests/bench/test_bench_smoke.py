"""Smoke tests of the benchmarks: tiny sizes on the test database, correctness only.

Each benchmark runs end to end in its quick form against a fresh test
database; the checks are that it produces sane figures (positive, finite
ratios), that the compared variants agree (same cone members, same
cross-match pairs as astropy) and that it leaves no catalog behind. Speed is
never asserted: these sizes say nothing about it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import psycopg
import pytest
from bench.common import DENSITY_PER_DEG2, patch_for, synthetic_catalog

from bench import bench_cone, bench_ingest, bench_serve, bench_tap, bench_xmatch

ROWS = 20_000


def _no_bench_tables(url: str) -> None:
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'catalogs' AND c.relkind = 'r'"
        ).fetchall()
        registered = conn.execute("SELECT name FROM skyclass.catalog").fetchall()
    assert tables == [] and registered == []


def _positive(values: dict[str, float]) -> None:
    for name, value in values.items():
        assert math.isfinite(value) and value > 0, f"{name} = {value}"


def test_synthetic_catalog_has_the_stated_density() -> None:
    patch = patch_for(ROWS)
    assert patch.area_deg2 == pytest.approx(ROWS / DENSITY_PER_DEG2, rel=1e-9)
    catalog = synthetic_catalog(ROWS, patch, seed=1)
    assert len(np.unique(catalog.object_id)) == ROWS
    assert catalog.object_id.dtype == np.int64 and catalog.mags.dtype == np.float32
    assert catalog.mags.shape == (ROWS, 5)
    assert (catalog.ra >= patch.ra_min).all() and (catalog.ra < patch.ra_max).all()
    assert (catalog.dec >= patch.dec_min).all() and (catalog.dec <= patch.dec_max).all()
    again = synthetic_catalog(ROWS, patch, seed=1)
    assert np.array_equal(catalog.ra, again.ra)  # reproducible from the seed


def test_ingest_bench(db_url: str, tmp_path: Path) -> None:
    result = bench_ingest.run(db_url, rows=ROWS, to_sql_rows=2_000, repeats=1, workdir=tmp_path)
    assert set(result.seconds) == set(bench_ingest.TABLES)
    _positive(result.seconds)
    _positive(result.rates)
    _positive(result.ratios)
    # The phase split of the ingest and of raw COPY + indexes adds up to the whole.
    for name in ("ingest_fits", "raw_copy_indexed"):
        phases = result.phases[name]
        assert phases["load_seconds"] >= 0 and phases["index_seconds"] >= 0
        # The split point is a server timestamp (microseconds, float epoch seconds): allow
        # its rounding, not more.
        assert phases["load_seconds"] + phases["index_seconds"] == pytest.approx(
            result.seconds[name], rel=1e-6, abs=1e-5
        )
    assert list(result.index_steps) == list(bench_ingest.INDEX_STEPS)
    _positive(result.index_steps)
    assert all(isinstance(met, bool) for met in result.targets.values())
    _no_bench_tables(db_url)


def test_cone_bench(db_url: str) -> None:
    result = bench_cone.run(db_url, sizes=(ROWS,), radii_arcsec=(10.0, 60.0), queries=30, warmup=5)
    assert result.mismatched_cones == 0
    for figures in result.latency.values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    # At 36,000 objects/deg2 a 1-arcmin cone holds pi/3.6 ~ 31 objects on average.
    mean = result.latency[f"{ROWS}/60/cone_search"]["mean_rows"]
    assert 20 < mean < 45
    assert set(result.planning) == {f"{ROWS}/10/raw_q3c", f"{ROWS}/10/q3c_ranges"}
    for split in result.planning.values():
        assert split["planning_ms"] > 0 and split["execution_ms"] > 0
    _no_bench_tables(db_url)


def test_xmatch_bench(db_url: str) -> None:
    result = bench_xmatch.run(db_url, rows=ROWS, repeats=1, explain=True)
    assert result.checks_passed, result.checks
    for check in result.checks.values():
        assert check["matches_db"] == check["matches_astropy"] > 0.5 * ROWS
    # 90% have a counterpart and 86% of those lie within 1" at 0.5" per axis.
    assert 0.7 < result.true_counterparts < 0.85
    _positive(result.seconds)
    _positive(result.ratios)
    assert result.plan
    _no_bench_tables(db_url)


def test_tap_bench(db_url: str) -> None:
    result = bench_tap.run(db_url, rows=ROWS, queries=10, warmup=2)
    assert result["mismatches"] == 0
    assert len(result["latency"]) == 6
    for figures in result["latency"].values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    _no_bench_tables(db_url)


def test_serve_bench(db_url: str) -> None:
    from tests.serve.conftest import _free_port

    figures = bench_serve.run(
        db_url, seconds=1.5, clients=4, max_requests=300, rows=2000, port=_free_port()
    )
    assert figures["rows"] == 2000
    idle, busy = figures["phases"]
    assert (idle["name"], busy["name"]) == ("idle", "rescoring")
    for phase in (idle, busy):
        assert phase["requests"] > 0 and phase["errors"] == 0, phase
        assert set(phase["per_kind"]) == {"cone", "object", "candidates"}
        _positive({k: phase[k] for k in ("throughput", "p50_ms", "p99_ms")})
    assert busy["rescoring_runs"] >= 1
