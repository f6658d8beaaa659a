"""``ingest --replace`` is atomic for every reader, under a looped concurrent test.

One thread replaces a catalog with identical data again and again while the
test loops over the readers: ``skyclass.cone_search``, a cone search joined
with the published view ``skyclass.current_classification``, that view joined
with the catalog table, and a plain ``count(*)``. Every call must return
the full, exact result: a reader waits for a replace to commit and then sees
the new table, never an empty or half-built one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from astropy.table import Table
from sklearn.ensemble import RandomForestClassifier

from skyclass.ingest import ingest_file
from tests.query.conftest import enable_sweep
from tests.reliability.tier import FULL, count
from tests.support.registry import register_test_model

pytestmark = pytest.mark.reliability

N_ROWS = count(40_000, 200_000)
N_REPLACES = count(8, 40)
CONE = (100.0, 10.0, 5.0)  # centre RA, Dec and radius in degrees
DEC_BAND = (5.0, 12.0)  # degrees
DEPLOYMENT = "atomic"

# Each reader and its exact result: the number of objects in the cone (or Dec band, or all).
READERS: dict[str, tuple[str, tuple[float, ...]]] = {
    "cone_search": ("SELECT count(*) FROM skyclass.cone_search('rd', %s, %s, %s)", CONE),
    "cone_search joined with current_classification": (
        "SELECT count(*) FROM skyclass.cone_search('rd', %s, %s, %s) AS s "
        "JOIN skyclass.current_classification AS p USING (object_id) "
        "WHERE p.deployment = 'atomic' AND p.catalog = 'rd'",
        CONE,
    ),
    "current_classification joined with the catalog": (
        "SELECT count(*) FROM skyclass.current_classification AS p "
        "JOIN catalogs.rd AS t USING (object_id) "
        "WHERE p.deployment = 'atomic' AND p.catalog = 'rd' AND t.dec BETWEEN %s AND %s",
        DEC_BAND,
    ),
    "count(*)": ("SELECT count(*) FROM catalogs.rd", ()),
}
# Cross-match of a few objects (copies of rd's first ones) with rd by each method: every
# copy finds its original.
for _method in ("index", "cells", "sweep"):
    READERS[f"crossmatch {_method}"] = (
        f"SELECT count(*) FROM skyclass.crossmatch('probe', 'rd', 0.1, true, '{_method}') "
        "WHERE object_id_b = object_id_a",
        (),
    )
N_PROBES = 50


def _catalog_file(directory: Path) -> Path:
    """A catalog of ``N_ROWS`` objects, a few thousand of them inside the cone."""
    rng = np.random.default_rng(20261202)
    ra = rng.uniform(80.0, 120.0, N_ROWS)
    dec = rng.uniform(-10.0, 30.0, N_ROWS)
    table = Table({"object_id": np.arange(1, N_ROWS + 1), "ra": ra, "dec": dec})
    path = directory / "rd.ecsv"
    table.write(path, format="ascii.ecsv")
    table[:N_PROBES].write(directory / "probe.ecsv", format="ascii.ecsv")
    return path


def _publish_predictions(conn: psycopg.Connection) -> None:
    """Deploy a registered model version with one prediction per object of catalog rd."""
    x = np.random.default_rng(1).normal(size=(60, 3))
    forest = RandomForestClassifier(n_estimators=2, max_depth=2, random_state=0)
    forest.fit(x, np.arange(60) % 2)
    version = register_test_model(conn, forest, classes=["a", "b"], n_features=3)
    row = conn.execute("SELECT catalog_id FROM skyclass.catalog WHERE name = 'rd'").fetchone()
    assert row is not None
    # A published run in the compact layout of revision 0017: its row, its table, the view.
    run = conn.execute(
        "INSERT INTO skyclass.scoring_run (model_version_id, catalog_id, feature_set_id, mode, "
        "write_kind, scorer, chunk_size, catalog_table, feature_table, target_table, "
        "triggered_by, status, finished_at) SELECT %s, %s, v.feature_set_id, 'full', "
        "'partition', 'database', 1, 'catalogs.rd', '', '', 'cli', 'succeeded', now() "
        "FROM skyclass.model_version AS v WHERE v.model_version_id = %s RETURNING run_id",
        (version, row[0], version),
    ).fetchone()
    assert run is not None
    table = f"predictions.mv_{version}_c{row[0]}_r{run[0]}"
    codec = conn.execute(
        "SELECT columns, encode FROM skyclass.prediction_codec(%s)", (version,)
    ).fetchone()
    assert codec is not None
    conn.execute(f"CREATE TABLE {table} ({codec[0]})")
    conn.execute(
        f"INSERT INTO {table} SELECT {codec[1]} FROM (SELECT object_id, ARRAY[1, 0]::real[] "
        "AS p FROM catalogs.rd ORDER BY object_id) AS s"
    )
    conn.execute(
        "UPDATE skyclass.scoring_run SET target_table = %s WHERE run_id = %s", (table, run[0])
    )
    conn.execute(
        "INSERT INTO skyclass.prediction_table (run_id, model_version_id, catalog_id, table_name) "
        "VALUES (%s, %s, %s, %s)",
        (run[0], version, row[0], table),
    )
    conn.execute("SELECT skyclass.publish_predictions()")
    conn.execute("SELECT skyclass.deploy(%s, %s)", (DEPLOYMENT, version))


def _replace(path: Path, url: str) -> None:
    ingest_file(
        path, "rd", id_column="object_id", ra_column="ra", dec_column="dec", mode="replace", url=url
    )


def _wait_for_lock_waiters(conn: psycopg.Connection, n: int) -> None:
    """Wait until ``n`` sessions of this database wait for a lock (120 s at most: the
    writer first reads and checks the whole file, 200,000 ECSV rows in the full run)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None and row[0] >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {n} sessions waited for a lock")


def _read(
    url: str,
    name: str,
    query: str,
    params: tuple[float, ...],
    results: dict[str, int],
    failures: list[BaseException],
) -> None:
    """Run one reader in its own session; its result goes to ``results[name]``."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            results[name] = int(row[0])
    except BaseException as exc:  # reported by the test thread
        failures.append(exc)


@pytest.fixture
def catalog(db_url: str, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """Catalog rd loaded and published, its file, and each reader's exact result."""
    path = _catalog_file(tmp_path)
    assert enable_sweep(db_url), "the test server has no skyclass extension 0.2.0 (sweep)"
    for name in ("rd", "probe"):
        ingest_file(
            path.with_name(f"{name}.ecsv"),
            name,
            id_column="object_id",
            ra_column="ra",
            dec_column="dec",
            url=db_url,
        )
    with psycopg.connect(db_url, autocommit=True) as conn:
        _publish_predictions(conn)
        expected = {}
        for name, (query, params) in READERS.items():
            row = conn.execute(query, params).fetchone()
            assert row is not None
            expected[name] = int(row[0])
    assert expected["count(*)"] == N_ROWS
    inside = expected["cone_search"]
    assert 1000 < inside < N_ROWS
    assert expected["cone_search joined with current_classification"] == inside
    assert 1000 < expected["current_classification joined with the catalog"] < N_ROWS
    for method in ("index", "cells", "sweep"):
        assert expected[f"crossmatch {method}"] == N_PROBES
    return path, expected


def test_readers_queued_behind_a_replace_see_the_full_new_catalog(
    db_url: str, catalog: tuple[Path, dict[str, int]]
) -> None:
    """Every reader starts while a replace waits to swap the tables, so all of them wait
    across its commit: the window a free-running loop only hits now and then."""
    path, expected = catalog
    for _ in range(count(2, 10)):
        results: dict[str, int] = {}
        failures: list[BaseException] = []

        with (
            psycopg.connect(db_url, autocommit=True) as watcher,
            psycopg.connect(db_url) as blocker,
        ):
            # An open reader transaction makes the replace wait for its lock before the swap.
            blocker.execute("SELECT count(*) FROM catalogs.rd").fetchone()
            writer = threading.Thread(target=_replace, args=(path, db_url))
            writer.start()
            _wait_for_lock_waiters(watcher, 1)
            readers = [
                threading.Thread(
                    target=_read, args=(db_url, name, query, params, results, failures)
                )
                for name, (query, params) in READERS.items()
            ]
            for reader in readers:
                reader.start()
            _wait_for_lock_waiters(watcher, 1 + len(readers))
            blocker.commit()
            writer.join()
            for reader in readers:
                reader.join()
        assert not failures, failures
        assert results == expected


def test_replace_is_atomic_for_every_reader(
    db_url: str, catalog: tuple[Path, dict[str, int]]
) -> None:
    """Replaces in a loop in one thread, every reader in a loop in another."""
    path, expected = catalog
    failures: list[BaseException] = []
    done = threading.Event()

    def replace_again() -> None:
        try:
            for _ in range(N_REPLACES):
                _replace(path, db_url)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            done.set()

    calls = {name: 0 for name in READERS}
    wrong: list[tuple[str, int]] = []
    writer = threading.Thread(target=replace_again)
    with psycopg.connect(db_url, autocommit=True) as conn:
        writer.start()
        while not done.is_set():
            for name, (query, params) in READERS.items():
                row = conn.execute(query, params).fetchone()
                assert row is not None
                calls[name] += 1
                if row[0] != expected[name]:
                    wrong.append((name, row[0]))
        writer.join()
    assert not failures, failures
    if FULL:
        print(f"\n{N_REPLACES} replaces of {N_ROWS} rows, reader calls: {calls}")
    # The readers ran all along the replaces, not just before or after them.
    assert min(calls.values()) >= N_REPLACES // 2, calls
    assert not wrong, f"wrong results in {sum(calls.values())} calls: {wrong[:10]}"
