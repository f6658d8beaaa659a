"""Revision 0017: predictions stored compactly, converted from the layout before it.

A database is migrated to 0012, scored there (a full run and an only_new run, by the
0012 SQL of ``CALL skyclass.rescore``), then migrated to head: every prediction must
read back the same through ``skyclass.prediction`` and the published views (ids, runs,
labels exactly, probabilities within the 16-bit bound), take at most 48 bytes of
heap, and a new run must replace the converted tables. The downgrade brings the
rows back into the partitioned table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from skyclass.db.migrate import downgrade, upgrade
from skyclass.score.codec import MAX_PROBABILITY_ERROR
from tests.conftest import drop_database, new_database
from tests.score.jobs_support import add_objects, object_features, predictions, register

CATALOG = "test_catalog"


@pytest.fixture
def db_0012(server_url: str) -> Iterator[str]:
    url = new_database(server_url, template="template0")
    try:
        upgrade(url, "0012")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS skyclass")
        yield url
    finally:
        drop_database(server_url, url)


def _same(before: dict[int, tuple[Any, ...]], after: dict[int, tuple[Any, ...]]) -> None:
    assert sorted(after) == sorted(before)
    worst = 0.0
    for object_id, old in before.items():
        new = after[object_id]
        assert new[0] == old[0], f"object {object_id}: run {new[0]} vs {old[0]}"
        assert new[1] == old[1], f"object {object_id}: label {new[1]} vs {old[1]}"
        worst = max(worst, abs(new[2] - old[2]))
        worst = max(worst, *(abs(a - b) for a, b in zip(new[3], old[3], strict=True)))
        assert new[4:] == old[4:] == (None,) * 7
    assert worst <= MAX_PROBABILITY_ERROR


def test_0017_converts_existing_predictions(db_0012: str) -> None:
    with psycopg.connect(db_0012, autocommit=True) as conn:
        version = register(conn)
        ids = add_objects(conn, version, object_features(3000, seed=5))
        conn.execute("SELECT skyclass.deploy('sgq_current', %s)", (version,))
        conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 1000)", (CATALOG,))
        add_objects(conn, version, object_features(400, seed=6))
        conn.execute("CALL skyclass.rescore('sgq_current', %s, true, 300)", (CATALOG,))
        before = predictions(conn, version)
        runs = {v[0] for v in before.values()}
        current = conn.execute(
            "SELECT count(*), count(DISTINCT top_label) FROM skyclass.current_classification"
        ).fetchone()
    assert len(before) == 3400 and len(runs) == 2

    upgrade(db_0012)
    with psycopg.connect(db_0012, autocommit=True) as conn:
        after = predictions(conn, version)
        _same(before, after)
        assert (
            conn.execute(
                "SELECT count(*), count(DISTINCT top_label) FROM skyclass.current_classification"
            ).fetchone()
            == current
        )
        long_rows = conn.execute("SELECT count(*) FROM skyclass.prediction_long").fetchone()
        assert long_rows == (3400 * 3,)
        published = conn.execute(
            "SELECT run_id, table_name FROM skyclass.prediction_table ORDER BY run_id"
        ).fetchall()
        assert {r[0] for r in published} == runs
        # No table of the old layout is left, and the converted ones are compact.
        assert conn.execute("SELECT to_regnamespace('predictions_0012')").fetchone() == (None,)
        heap = conn.execute(
            "SELECT sum(pg_relation_size(t.relid)) FROM skyclass.prediction_table AS p, "
            "pg_partition_tree(p.table_name::regclass) AS t WHERE t.isleaf"
        ).fetchone()
        assert heap is not None
        # 44 bytes of heap per 3-class prediction (and the partial last page of each table);
        # the index (BRIN: pages of fixed size here) is measured at scale by the benchmark.
        assert int(heap[0]) <= 44.3 * 3400 + 8192 * len(published)

        # A full run at head replaces both converted tables.
        conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 1000)", (CATALOG,))
        rescored = predictions(conn, version)
        assert sorted(rescored) == sorted(before) and len({v[0] for v in rescored.values()}) == 1
        for _, table in published:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
        assert all(rescored[i][1] == before[i][1] for i in ids.tolist())

    downgrade(db_0012, "0012")
    with psycopg.connect(db_0012, autocommit=True) as conn:
        kind = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = 'skyclass.prediction'::regclass"
        ).fetchone()
        assert kind == ("p",)
        back = predictions(conn, version)
        assert sorted(back) == sorted(rescored)
        assert (
            max(abs(a - b) for i in back for a, b in zip(back[i][3], rescored[i][3], strict=True))
            <= 1e-7
        )
        conn.execute("CALL skyclass.rescore('sgq_current', %s, chunk_size => 1000)", (CATALOG,))
        final = predictions(conn, version)
    assert len(final) == 3400
    probabilities = np.array([final[i][3] for i in ids.tolist()])
    assert np.abs(probabilities.sum(axis=1) - 1).max() < 1e-5
