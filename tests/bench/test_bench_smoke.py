"""Smoke tests of the benchmarks: tiny sizes on the test database, correctness only.

Each benchmark runs end to end in its quick form against a fresh test
database; the checks are that it produces sane figures (positive, finite
ratios), that the compared variants agree (same cone members, same
cross-match pairs as astropy) and that it leaves no catalog behind. Speed is
never asserted: these sizes say nothing about it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import psycopg
import pytest
from bench.common import (
    DENSITY_PER_DEG2,
    SyntheticCatalog,
    patch_for,
    synthetic_catalog,
    synthetic_chunks,
    write_fits,
    write_fits_chunks,
)

from bench import bench_cone, bench_growth, bench_ingest, bench_serve, bench_tap, bench_xmatch

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


def test_chunked_fits_is_the_whole_file(tmp_path: Path) -> None:
    from astropy.table import Table

    patch = patch_for(5_000)
    parts = list(synthetic_chunks(5_000, patch, seed=3, chunk_rows=1_500))
    catalog = SyntheticCatalog(
        *(
            np.concatenate([getattr(p, f) for p in parts])
            for f in ("object_id", "ra", "dec", "mags")
        )
    )
    whole = write_fits(catalog, tmp_path / "whole.fits")
    chunked = write_fits_chunks(
        synthetic_chunks(5_000, patch, seed=3, chunk_rows=1_500), 5_000, tmp_path / "chunks.fits"
    )
    a, b = Table.read(whole), Table.read(chunked)
    assert len(b) == 5_000 and a.colnames == b.colnames
    for name in a.colnames:
        assert np.array_equal(a[name], b[name]) and a[name].unit == b[name].unit
    assert chunked.stat().st_size % 2880 == 0
    with pytest.raises(ValueError, match="4999"):
        write_fits_chunks(synthetic_chunks(4_999, patch, seed=3), 5_000, tmp_path / "short.fits")
    assert not (tmp_path / "short.fits").exists()


def test_growth_bench_refuses_a_size_the_disk_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(bench_growth.DiskShortError, match="not enough free disk for ingest"):
        bench_growth.check_disk("ingest", 10**15, tmp_path, {})
    # A measured size scales the estimate: 200 B/row kept, plus the transient copies.
    measured = bench_growth.StepResult("features", 1000, 1.0, 1.0, 0.0, 0, 200_000, [], [])
    assert (
        bench_growth.bytes_needed("features", 10**6, {"features": measured})
        == int(10**6 * 200 * 2 * bench_growth.MARGIN) + bench_growth.FIXED_BYTES
    )


def test_growth_bench(db_url: str, tmp_path: Path) -> None:
    rows = bench_growth.SMOKE_ROWS
    state = bench_growth.run(
        db_url,
        (rows,),
        state=bench_growth.GrowthState(path=tmp_path / "g.json"),
        workdir=tmp_path,
        queries=30,
        warmup=5,
        iterations=5,
    )
    for step in bench_growth.STEPS:
        result = state.get(rows, step)
        assert result is not None and result.rows == rows
        assert result.seconds > 0 and math.isfinite(result.cpu) and result.cpu >= 0
        assert result.load_before and result.load_after
        assert set(result.server_stats) >= {"temp_bytes", "blocks_read", "checkpoints"}
        assert all(value >= 0 for value in result.server_stats.values())
    for step in ("ingest", "features", "score"):
        result = state.get(rows, step)
        assert result is not None
        # Every object went through the step, and it left bytes and WAL behind.
        assert result.details["rows_counted"] == rows
        assert result.bytes > 0 and result.wal_bytes > 0
        assert result.details["heap_bytes"] + result.details["index_bytes"] == result.bytes
    ingest = state.get(rows, "ingest")
    assert ingest is not None and set(ingest.details["btree_levels"]) == {"primary_key", "q3c"}
    score = state.get(rows, "score")
    assert score is not None and score.details["rows_scored"] == rows
    cone = state.get(rows, "cone")
    assert cone is not None and cone.details["mismatched_cones"] == 0
    assert set(cone.details["latency"]) == set(bench_cone.VARIANTS)
    for figures in cone.details["latency"].values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    xmatch = state.get(rows, "xmatch")
    assert xmatch is not None and xmatch.details["partner_rows"] == rows
    # 86% of the moved objects lie within 1" at 0.5" per axis; chance pairs are rare.
    assert 0.8 < xmatch.details["pairs"] / xmatch.details["related_rows"] < 0.95
    # The results were saved as they came, and the table prints from them.
    saved = json.loads((tmp_path / "g.json").read_text())
    assert set(saved["results"][str(rows)]) == set(bench_growth.STEPS)
    bench_growth.print_table(state)
    _no_bench_tables(db_url)
