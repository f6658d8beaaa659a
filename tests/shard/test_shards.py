"""Three shards (three local clusters) behind a coordinator with postgres_fdw.

The coordinator is a fresh database of the session cluster; each shard is a
cluster of its own, migrated, with the same compiled model and a deployment,
holding a third of a catalog's objects: one contiguous Q3C pixel range each.
Checked: attaching builds the foreign partitions from the shards' ranges;
``skyclass.cone_search`` through the coordinator returns what the shards
hold and opens connections to the shards concerned only; a radial query on
the coordinator's classification table is pruned at plan time (EXPLAIN);
rescoring runs on every shard at once, in place; a shard whose server is
stopped in the middle of its job fails alone and resumes cleanly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner

from skyclass.cli import main
from skyclass.db.cluster import EmbeddedCluster
from skyclass.errors import ShardError
from skyclass.shard import add_shard, attach_catalog, list_shards, rescore_shards
from tests.conftest import drop_database, new_database
from tests.score.jobs_support import object_features, own_cluster, register
from tests.support.registry import feature_table

CATALOG = "test_catalog"  # the catalog tests.support.registry builds its feature set on
DEPLOYMENT = "sharded"
N_OBJECTS = 3_000
SHARDS = ("north", "middle", "south")


@dataclass
class Shard:
    name: str
    cluster: EmbeddedCluster
    version: int
    ids: np.ndarray


@dataclass
class Setup:
    coordinator: str
    shards: list[Shard]
    ra: np.ndarray
    dec: np.ndarray


@pytest.fixture(scope="session")
def extension_available(server_url: str) -> None:
    with psycopg.connect(server_url) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'skyclass'"
        ).fetchone()
    if row is None:
        pytest.fail("the test server has no skyclass extension: run `make extension`")


def _sky(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    return ra, dec


def _fill(conn: psycopg.Connection[Any], version: int, ids: np.ndarray, ra, dec, x) -> None:
    """Objects (positions, features) of one shard, with a Q3C index like an ingested catalog."""
    features = feature_table(conn, version)
    with conn.transaction():
        with conn.cursor().copy(
            "COPY catalogs.test_catalog (object_id, ra, dec) FROM STDIN"
        ) as copy:
            for i, r, d in zip(ids, ra, dec, strict=True):
                copy.write_row((int(i), float(r), float(d)))
        conn.execute("CREATE TEMPORARY TABLE new_x (object_id bigint, x real[]) ON COMMIT DROP")
        with conn.cursor().copy("COPY new_x FROM STDIN") as copy:
            for i, row in zip(ids, x, strict=True):
                copy.write_row((int(i), [float(v) for v in row]))
        conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO {} (object_id, x, v) SELECT object_id, x, "
                "CASE WHEN 'NaN'::real = ANY (x) THEN NULL ELSE x::vector END FROM new_x"
            ).format(features)
        )
    conn.execute("CREATE INDEX ON catalogs.test_catalog (q3c_ang2ipix(ra, dec))")
    conn.execute("ANALYZE catalogs.test_catalog")
    conn.execute(psycopg.sql.SQL("ANALYZE {}").format(features))


@pytest.fixture(scope="module")
def sharded(extension_available: None, server_url: str, template_url: str) -> Iterator[Setup]:
    coordinator = new_database(server_url, "skyclass_test_template")
    with ExitStack() as stack:
        stack.callback(drop_database, server_url, coordinator)
        with psycopg.connect(coordinator, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
            ra, dec = _sky(N_OBJECTS, 20261202)
            ipix = np.array(
                conn.execute(
                    "SELECT q3c_ang2ipix(r, d) FROM unnest(%s::float8[], %s::float8[]) "
                    "WITH ORDINALITY AS u(r, d, n) ORDER BY n",
                    (ra.tolist(), dec.tolist()),
                ).fetchall()
            )[:, 0]
        order = np.argsort(ipix, kind="stable")
        x = object_features(N_OBJECTS, seed=5)
        shards = []
        for name, part in zip(SHARDS, np.array_split(order, len(SHARDS)), strict=True):
            cluster = stack.enter_context(own_cluster(f"shard-{name}"))
            with psycopg.connect(cluster.url, autocommit=True) as conn:
                version = register(conn)
                conn.execute("SELECT skyclass.deploy(%s, %s)", (DEPLOYMENT, version))
                ids = (part + 1).astype(np.int64)
                _fill(conn, version, ids, ra[part], dec[part], x[part])
            shards.append(Shard(name, cluster, version, np.sort(ids)))
            add_shard(name, cluster.url, url=coordinator)
        attach_catalog(CATALOG, url=coordinator)
        yield Setup(coordinator, shards, ra, dec)


def test_attach_records_one_pixel_range_per_shard(sharded: Setup) -> None:
    with psycopg.connect(sharded.coordinator) as conn:
        rows = conn.execute(
            "SELECT shard_name, ipix_lo, ipix_hi, object_count FROM skyclass.shard_range "
            "WHERE catalog_name = %s ORDER BY ipix_lo NULLS FIRST",
            (CATALOG,),
        ).fetchall()
        assert [r[0] for r in rows] == list(SHARDS)
        assert rows[0][1] == 0 and rows[-1][2] is None
        assert rows[0][2] == rows[1][1] and rows[1][2] == rows[2][1]
        assert sum(r[3] for r in rows) == N_OBJECTS
        server = conn.execute(
            "SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'skyclass_shard_north'"
        ).fetchone()
        assert server is not None
        assert "async_capable=true" in server[0]
        assert "extensions=q3c,skyclass" in server[0]
        count = conn.execute("SELECT count(*) FROM catalogs.test_catalog").fetchone()
        assert count == (N_OBJECTS,)
    listing = [s.name for s in list_shards(url=sharded.coordinator, check=True)]
    assert listing == sorted(SHARDS)


def test_a_shard_at_another_revision_or_taken_name_is_refused(sharded: Setup) -> None:
    with pytest.raises(ShardError, match="already exists"):
        add_shard("north", sharded.shards[0].cluster.url, url=sharded.coordinator)
    with pytest.raises(ShardError, match="must start with"):
        add_shard("North; drop", sharded.shards[0].cluster.url, url=sharded.coordinator)


def _cone_centre(setup: Setup, shard: Shard, radius: float = 1.0) -> tuple[float, float]:
    """An object's position of ``shard`` whose cone's Q3C pixel ranges all lie in its range."""
    with psycopg.connect(setup.coordinator) as conn:
        lo, hi = conn.execute(
            "SELECT coalesce(ipix_lo, -1), coalesce(ipix_hi, 9223372036854775807) "
            "FROM skyclass.shard_range WHERE catalog_name = %s AND shard_name = %s",
            (CATALOG, shard.name),
        ).fetchone() or (0, 0)
        for object_id in shard.ids[len(shard.ids) // 2 :]:
            ra, dec = float(setup.ra[object_id - 1]), float(setup.dec[object_id - 1])
            inside = conn.execute(
                "SELECT bool_and(r.lo >= %s AND r.hi <= %s) FROM ("
                "  SELECT q3c_radial_query_it(%s, %s, %s, 2 * k, f) AS lo,"
                "         q3c_radial_query_it(%s, %s, %s, 2 * k + 1, f) AS hi"
                "  FROM generate_series(0, 49) AS k, (VALUES (0), (1)) AS v(f)) AS r"
                " WHERE r.lo < r.hi",
                (lo, hi, ra, dec, radius, ra, dec, radius),
            ).fetchone()
            if inside == (True,):
                return ra, dec
    raise AssertionError(f"no cone of {radius} deg inside shard {shard.name}")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_cone_search_through_the_coordinator_reads_only_the_shard_concerned(
    sharded: Setup, index: int
) -> None:
    shard = sharded.shards[index]
    radius = 1.0
    ra, dec = _cone_centre(sharded, shard, radius)
    with psycopg.connect(shard.cluster.url) as conn:
        local = conn.execute(
            "SELECT object_id, distance_arcsec FROM skyclass.cone_search(%s, %s, %s, %s)",
            (CATALOG, ra, dec, radius),
        ).fetchall()
    before = _reads(sharded)
    with psycopg.connect(sharded.coordinator) as conn:
        through = conn.execute(
            "SELECT object_id, distance_arcsec FROM skyclass.cone_search(%s, %s, %s, %s)",
            (CATALOG, ra, dec, radius),
        ).fetchall()
        opened = conn.execute(
            "SELECT server_name FROM postgres_fdw_get_connections() ORDER BY 1"
        ).fetchall()
    assert through == local and len(local) >= 1
    # Brute force over every object: the cone holds exactly these.
    d = _separation(ra, dec, sharded.ra, sharded.dec)
    assert {int(r[0]) for r in through} == {int(i) + 1 for i in np.flatnonzero(d <= radius)}
    # postgres_fdw connects to every partition's server when the plan starts, so all three
    # were opened; run-time pruning means only one was read: the shards' own statistics
    # of the catalog table (flushed when the coordinator's remote sessions end, above).
    assert [o[0] for o in opened] == [f"skyclass_shard_{s}" for s in sorted(SHARDS)]
    after = _wait_for_reads(sharded, before, shard.name)
    assert {name for name in SHARDS if after[name] != before[name]} == {shard.name}


def _reads(setup: Setup) -> dict[str, tuple[int, int]]:
    """Per shard, the sequential and index scans counted on its catalog table."""
    reads = {}
    for shard in setup.shards:
        with psycopg.connect(shard.cluster.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                "WHERE relid = 'catalogs.test_catalog'::regclass"
            ).fetchone()
        assert row is not None
        reads[shard.name] = (int(row[0]), int(row[1]))
    return reads


def _wait_for_reads(
    setup: Setup, before: dict[str, tuple[int, int]], name: str
) -> dict[str, tuple[int, int]]:
    """The counters once shard ``name``'s have moved (a remote session flushes them at exit)."""
    deadline = time.monotonic() + 15
    while True:
        after = _reads(setup)
        if after[name] != before[name] or time.monotonic() > deadline:
            time.sleep(0.5)  # let the other shards' sessions end too
            return _reads(setup)
        time.sleep(0.2)


def _separation(ra: float, dec: float, ras: np.ndarray, decs: np.ndarray) -> np.ndarray:
    a, b = np.radians(dec), np.radians(decs)
    cos = np.sin(a) * np.sin(b) + np.cos(a) * np.cos(b) * np.cos(np.radians(ras - ra))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _foreign_scans(plan: dict[str, Any]) -> list[str]:
    found = [plan["Relation Name"]] if plan.get("Node Type") == "Foreign Scan" else []
    for child in plan.get("Plans", []):
        found += _foreign_scans(child)
    return found


def test_rescoring_runs_on_every_shard_in_place_and_the_coordinator_reads_it(
    sharded: Setup,
) -> None:
    seen: dict[str, int] = {}

    def progress(name: str, done: int, total: int, rows: int) -> None:
        seen[name] = rows

    results = rescore_shards(
        DEPLOYMENT,
        CATALOG,
        chunk_size=400,
        workers_per_shard=1,
        url=sharded.coordinator,
        progress=progress,
    )
    assert [r.shard for r in results] == list(SHARDS)
    assert all(r.error is None and r.run is not None for r in results), results
    for shard, result in zip(sharded.shards, results, strict=True):
        assert result.run is not None and result.run.status == "succeeded"
        assert result.run.rows_scored == len(shard.ids)
        with psycopg.connect(shard.cluster.url) as conn:
            ids = conn.execute(
                "SELECT object_id FROM skyclass.prediction WHERE model_version_id = %s ORDER BY 1",
                (shard.version,),
            ).fetchall()
        # In place: each shard holds the predictions of its own objects, no others.
        assert [int(i[0]) for i in ids] == shard.ids.tolist()
    assert seen == {s.name: len(s.ids) for s in sharded.shards}

    shard = sharded.shards[1]
    ra, dec = _cone_centre(sharded, shard)
    query = (
        "SELECT object_id, top_label, top_probability FROM shards.test_catalog_classification "
        "WHERE deployment = %s AND q3c_radial_query(ra, dec, %s, %s, 1.0) ORDER BY object_id"
    )
    with psycopg.connect(sharded.coordinator) as conn:
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + query, (DEPLOYMENT, ra, dec)).fetchone()
        through = conn.execute(query, (DEPLOYMENT, ra, dec)).fetchall()
        total = conn.execute(
            "SELECT count(*) FROM shards.test_catalog_classification WHERE deployment = %s",
            (DEPLOYMENT,),
        ).fetchone()
    assert plan is not None
    # Plan-time pruning: one foreign scan, on the shard whose range holds the cone.
    assert _foreign_scans(plan[0][0]["Plan"]) == [f"test_catalog_classification__{shard.name}"]
    with psycopg.connect(shard.cluster.url) as conn:
        local = conn.execute(
            "SELECT p.object_id, p.top_label, p.top_probability "
            "FROM skyclass.current_classification AS p JOIN catalogs.test_catalog AS t "
            "USING (object_id) WHERE p.deployment = %s AND p.catalog = %s "
            "AND q3c_radial_query(t.ra, t.dec, %s, %s, 1.0) ORDER BY object_id",
            (DEPLOYMENT, CATALOG, ra, dec),
        ).fetchall()
    assert through == local and len(local) >= 1
    assert total == (N_OBJECTS,)


def test_a_shard_stopped_mid_job_fails_alone_and_resumes(sharded: Setup) -> None:
    victim = sharded.shards[2]
    stopped = threading.Event()

    def progress(name: str, done: int, total: int, rows: int) -> None:
        if name == victim.name and done >= 2 and not stopped.is_set():
            stopped.set()
            victim.cluster.stop("immediate")

    first = rescore_shards(
        DEPLOYMENT,
        CATALOG,
        chunk_size=100,
        workers_per_shard=1,
        url=sharded.coordinator,
        progress=progress,
    )
    by_shard = {r.shard: r for r in first}
    assert stopped.is_set()
    assert by_shard[victim.name].error is not None and by_shard[victim.name].run is None
    for other in sharded.shards[:2]:
        run = by_shard[other.name].run
        assert run is not None and run.status == "succeeded"

    victim.cluster.start()
    result = runner_invoke(
        [
            "shard",
            "rescore",
            DEPLOYMENT,
            "--catalog",
            CATALOG,
            "--chunk-size",
            "100",
            "--workers",
            "1",
            "--no-progress",
        ],
        sharded.coordinator,
    )
    assert result.exit_code == 0, result.output
    assert "attempt 2" in result.output.split(f"{victim.name}:")[1].splitlines()[0]
    with psycopg.connect(victim.cluster.url) as conn:
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT object_id), min(object_id), max(object_id), "
            "count(DISTINCT run_id) FROM skyclass.prediction WHERE model_version_id = %s",
            (victim.version,),
        ).fetchone()
        runs = conn.execute(
            "SELECT status, attempts FROM skyclass.scoring_run ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
    n = len(victim.ids)
    assert rows == (n, n, int(victim.ids[0]), int(victim.ids[-1]), 1)
    assert runs == ("succeeded", 2)


def runner_invoke(args: list[str], url: str) -> Any:
    return CliRunner().invoke(main, args, env={"SKYCLASS_DATABASE_URL": url})


def test_list_remove_detach_and_attach_again(sharded: Setup) -> None:
    listing = runner_invoke(["shard", "list"], sharded.coordinator)
    assert listing.exit_code == 0, listing.output
    for name in SHARDS:
        line = next(x for x in listing.output.splitlines() if x.startswith(name + " "))
        assert " yes " in line and "test_catalog (1,000)" in line
    refused = runner_invoke(["shard", "remove", "north"], sharded.coordinator)
    assert refused.exit_code != 0 and "holds part of test_catalog" in refused.output
    detached = runner_invoke(["shard", "detach", CATALOG], sharded.coordinator)
    assert detached.exit_code == 0, detached.output
    with psycopg.connect(sharded.coordinator) as conn:
        assert conn.execute("SELECT to_regclass('shards.test_catalog')").fetchone() == (None,)
        assert conn.execute(
            "SELECT count(*) FROM skyclass.catalog WHERE name = %s", (CATALOG,)
        ).fetchone() == (0,)
    for shard in sharded.shards:  # the shards keep their rows and predictions
        with psycopg.connect(shard.cluster.url) as conn:
            assert conn.execute("SELECT count(*) FROM catalogs.test_catalog").fetchone() == (
                len(shard.ids),
            )
    attached = runner_invoke(["shard", "attach", CATALOG], sharded.coordinator)
    assert attached.exit_code == 0, attached.output
    assert "north: 1,000 objects, Q3C pixels [0, " in attached.output
    with psycopg.connect(sharded.coordinator) as conn:
        assert conn.execute("SELECT count(*) FROM catalogs.test_catalog").fetchone() == (N_OBJECTS,)
